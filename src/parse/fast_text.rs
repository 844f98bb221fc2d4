//! The text of an HTML fragment in one pass over its bytes, as html5ever's tokenizer reads
//! it, for the markup feeds carry: text, tags with attributes, character references,
//! comments, and elements whose content is raw text (`script`, `style`, `iframe`…).
//! Anything else (a doctype, CDATA, a processing instruction, `<plaintext>`, a NUL, a
//! comment closed the odd ways, escapes inside a script, a tag over the attribute limit)
//! makes it give up, and [`super::html_to_text`] reads the fragment with html5ever: the
//! same text either way, which a property test checks on random markup.
//!
//! It follows the tokenizer states of the HTML standard ("13.2.5 Tokenization") for what
//! decides the text: where a tag ends (attribute values may hold `>` in quotes), a tag's
//! name, how a character reference is read (html5ever's own table of named references,
//! longest match, the numeric rules), and where raw text ends (the element's own end tag).

use html5ever::data::{C1_REPLACEMENTS, NAMED_ENTITIES};

use super::{INLINE_ELEMENTS, MAX_ATTRIBUTES, MAX_TEXT_BYTES, SKIPPED_ELEMENTS, TextBudget};

/// How an element's content is read once its start tag is seen.
enum Content {
    /// Tags, text and references.
    Data,
    /// Text up to the element's end tag, no references (`style`, `iframe`…).
    Rawtext,
    /// Like [`Content::Rawtext`], for `script` (whose escapes this path does not read).
    Script,
    /// Text and references up to the end tag (`title`, `textarea`).
    Rcdata,
}

fn content_of(name: &str) -> Option<Content> {
    match name {
        "script" => Some(Content::Script),
        "style" | "xmp" | "iframe" | "noembed" | "noframes" | "noscript" => Some(Content::Rawtext),
        "title" | "textarea" => Some(Content::Rcdata),
        // Everything after it is text: rare enough to leave to html5ever.
        "plaintext" => None,
        _ => Some(Content::Data),
    }
}

/// The text of `html` as [`super::html_to_text`] gives it, or `None` where this path
/// gives up (see the module doc).
pub(super) fn text(html: &str) -> Option<String> {
    let bytes = html.as_bytes();
    // html5ever drops a leading byte order mark and every NUL (with rules of its own).
    if html.starts_with('\u{FEFF}') || memchr::memchr(0, bytes).is_some() {
        return None;
    }
    // html5ever's path first cuts tags of too many attributes, as a plain scan of the
    // whole fragment sees tags: across raw text and quotes, where it may cut text this
    // reader would show. Whatever it cuts is left to that path.
    if matches!(
        super::limit_attributes(html, MAX_ATTRIBUTES),
        std::borrow::Cow::Owned(_)
    ) {
        return None;
    }
    let mut reader = Reader {
        html,
        bytes,
        text: TextBudget::new(MAX_TEXT_BYTES),
        skipping: 0,
    };
    reader.run()?;
    Some(reader.text.into_string())
}

struct Reader<'a> {
    html: &'a str,
    bytes: &'a [u8],
    text: TextBudget,
    /// Open skipped elements (see [`super::html_to_text`]).
    skipping: usize,
}

impl Reader<'_> {
    fn run(&mut self) -> Option<()> {
        let mut i = 0;
        while i < self.bytes.len() && !self.text.is_full() {
            let Some(at) = memchr::memchr2(b'<', b'&', &self.bytes[i..]) else {
                self.push_text(i, self.bytes.len());
                break;
            };
            let at = i + at;
            self.push_text(i, at);
            i = if self.bytes[at] == b'&' {
                self.reference(at)
            } else {
                self.markup(at)?
            };
        }
        Some(())
    }

    /// Text of the fragment, shown unless inside a skipped element.
    fn push_text(&mut self, from: usize, to: usize) {
        if self.skipping == 0 && from < to {
            self.text.push(&self.html[from..to]);
        }
    }

    fn push_str(&mut self, s: &str) {
        if self.skipping == 0 {
            self.text.push(s);
        }
    }

    /// A character reference at `at` (an `&`) in text: its characters are shown. Returns
    /// where the text goes on.
    fn reference(&mut self, at: usize) -> usize {
        let (decoded, end) = reference(self.html, at);
        match decoded {
            Some(chars) => {
                let mut buf = [0u8; 8];
                let mut len = 0;
                for c in chars.into_iter().flatten() {
                    len += c.encode_utf8(&mut buf[len..]).len();
                }
                if let Ok(s) = std::str::from_utf8(&buf[..len]) {
                    self.push_str(s);
                }
            }
            None => self.push_text(at, end),
        }
        end
    }

    /// Markup at `at` (a `<`) in data: a tag, a comment, or a `<` that is text. Returns
    /// where reading goes on, or `None` to give up.
    fn markup(&mut self, at: usize) -> Option<usize> {
        let bytes = self.bytes;
        match bytes.get(at + 1) {
            Some(b) if b.is_ascii_alphabetic() => self.tag(at + 1, true),
            Some(b'/') => match bytes.get(at + 2) {
                Some(b) if b.is_ascii_alphabetic() => self.tag(at + 2, false),
                // `</>` is nothing at all.
                Some(b'>') => Some(at + 3),
                // A bogus comment, or `</` at the end.
                _ => None,
            },
            Some(b'!') if bytes[at..].starts_with(b"<!--") => comment_end(self.html, at + 4),
            // A doctype, CDATA, a bogus comment.
            Some(b'!' | b'?') => None,
            // A `<` that starts nothing is text.
            _ => {
                self.push_str("<");
                Some(at + 1)
            }
        }
    }

    /// A tag whose name starts at `name_at`: what it does to the text, then (after a
    /// start tag of a raw-text element) its content. Returns where reading goes on.
    fn tag(&mut self, name_at: usize, start: bool) -> Option<usize> {
        let Some((name_end, end)) = tag_end(self.bytes, name_at)? else {
            // The input ends inside the tag: html5ever drops the tag, and that is all.
            return Some(self.bytes.len());
        };
        let raw_name = &self.html[name_at..name_end];
        let lower;
        let name = if raw_name.bytes().any(|b| b.is_ascii_uppercase()) {
            lower = raw_name.to_ascii_lowercase();
            lower.as_str()
        } else {
            raw_name
        };
        // What html_to_text's visitor does with each tag.
        if SKIPPED_ELEMENTS.contains(&name) {
            self.skipping = if start {
                self.skipping.saturating_add(1)
            } else {
                self.skipping.saturating_sub(1)
            };
        }
        if !INLINE_ELEMENTS.contains(&name) {
            self.text.space();
        }
        if !start {
            return Some(end);
        }
        match content_of(name)? {
            Content::Data => Some(end),
            Content::Script => self.raw_text(name, end, true, false),
            Content::Rawtext => self.raw_text(name, end, false, false),
            Content::Rcdata => self.raw_text(name, end, false, true),
        }
    }

    /// The content of a raw-text element `name` from `from`: text up to its end tag
    /// (references decoded in `rcdata`), then the end tag itself.
    fn raw_text(&mut self, name: &str, from: usize, script: bool, rcdata: bool) -> Option<usize> {
        let (content_end, tag_at) = match raw_text_end(self.bytes, from, name) {
            Some(at) => (at, Some(at)),
            None => (self.bytes.len(), None),
        };
        if script && memchr::memmem::find(&self.bytes[from..content_end], b"<!--").is_some() {
            // Script data escapes change where a script ends.
            return None;
        }
        if rcdata {
            let mut i = from;
            while let Some(amp) = memchr::memchr(b'&', &self.bytes[i..content_end]) {
                self.push_text(i, i + amp);
                i = self.reference(i + amp).min(content_end);
            }
            self.push_text(i, content_end);
        } else {
            self.push_text(from, content_end);
        }
        match tag_at {
            // The end tag, read like any other: `</` and the name.
            Some(at) => self.tag(at + 2, false),
            None => Some(self.bytes.len()),
        }
    }
}

/// Where a start or end tag whose name starts at `name_at` ends: `Some(Some((end of the
/// name, just past the closing >)))`; `Some(None)` when the input ends inside it; `None`
/// to give up (a tag of many attributes).
#[allow(clippy::type_complexity)]
fn tag_end(bytes: &[u8], name_at: usize) -> Option<Option<(usize, usize)>> {
    #[derive(Clone, Copy, PartialEq)]
    enum State {
        Name,
        BeforeAttributeName,
        AttributeName,
        AfterAttributeName,
        BeforeAttributeValue,
        DoubleQuoted,
        SingleQuoted,
        Unquoted,
        AfterQuotedValue,
        SelfClosing,
    }
    use State::*;
    let space = |b: u8| matches!(b, b'\t' | b'\n' | 0x0c | b'\r' | b' ');
    let mut state = Name;
    let mut name_end = bytes.len();
    let mut attributes = 0usize;
    let mut i = name_at;
    while i < bytes.len() {
        let b = bytes[i];
        // A state that reconsumes the byte in another leaves `i` as it is.
        match state {
            Name => {
                if space(b) || b == b'/' || b == b'>' {
                    name_end = i;
                    state = BeforeAttributeName;
                    continue;
                }
            }
            BeforeAttributeName => {
                if space(b) {
                } else if b == b'/' || b == b'>' {
                    state = AfterAttributeName;
                    continue;
                } else {
                    // `=` here starts a name too.
                    attributes += 1;
                    state = AttributeName;
                }
            }
            AttributeName => {
                if space(b) || b == b'/' || b == b'>' {
                    state = AfterAttributeName;
                    continue;
                } else if b == b'=' {
                    state = BeforeAttributeValue;
                }
            }
            AfterAttributeName => {
                if space(b) {
                } else if b == b'/' {
                    state = SelfClosing;
                } else if b == b'=' {
                    state = BeforeAttributeValue;
                } else if b == b'>' {
                    return Some(Some((name_end, i + 1)));
                } else {
                    attributes += 1;
                    state = AttributeName;
                    continue;
                }
            }
            BeforeAttributeValue => {
                if space(b) {
                } else if b == b'"' {
                    state = DoubleQuoted;
                } else if b == b'\'' {
                    state = SingleQuoted;
                } else if b == b'>' {
                    return Some(Some((name_end, i + 1)));
                } else {
                    state = Unquoted;
                    continue;
                }
            }
            DoubleQuoted | SingleQuoted => {
                let quote = if state == DoubleQuoted { b'"' } else { b'\'' };
                match memchr::memchr(quote, &bytes[i..]) {
                    Some(q) => {
                        i += q;
                        state = AfterQuotedValue;
                    }
                    None => return Some(None),
                }
            }
            Unquoted => {
                if space(b) {
                    state = BeforeAttributeName;
                } else if b == b'>' {
                    return Some(Some((name_end, i + 1)));
                }
            }
            AfterQuotedValue => {
                if space(b) {
                    state = BeforeAttributeName;
                } else if b == b'/' {
                    state = SelfClosing;
                } else if b == b'>' {
                    return Some(Some((name_end, i + 1)));
                } else {
                    state = BeforeAttributeName;
                    continue;
                }
            }
            SelfClosing => {
                if b == b'>' {
                    return Some(Some((name_end, i + 1)));
                }
                state = BeforeAttributeName;
                continue;
            }
        }
        // Well under html5ever's path's limit, where the two could count differently.
        if attributes > MAX_ATTRIBUTES / 2 {
            return None;
        }
        i += 1;
    }
    Some(None)
}

/// Where the comment whose text starts at `from` (after `<!--`) ends, just past its
/// `-->`; `None` for the forms this path leaves to html5ever (`<!-->`, `<!--->`, `--!>`,
/// no end).
fn comment_end(html: &str, from: usize) -> Option<usize> {
    let rest = &html[from..];
    if rest.starts_with('>') || rest.starts_with("->") {
        return None;
    }
    let close = rest.find("-->")?;
    if rest[..close + 3].contains("--!>") {
        return None;
    }
    Some(from + close + 3)
}

/// Where the end tag of raw-text element `name` starts (its `<`), looking from `from`:
/// `</`, the name in any case, then a space, `/` or `>`.
fn raw_text_end(bytes: &[u8], from: usize, name: &str) -> Option<usize> {
    let mut i = from;
    while let Some(at) = memchr::memmem::find(&bytes[i..], b"</") {
        let at = i + at;
        let name_at = at + 2;
        let after = name_at + name.len();
        if bytes
            .get(name_at..after)
            .is_some_and(|n| n.eq_ignore_ascii_case(name.as_bytes()))
            && bytes
                .get(after)
                .is_some_and(|&b| matches!(b, b'\t' | b'\n' | 0x0c | b'\r' | b' ' | b'/' | b'>'))
        {
            return Some(at);
        }
        i = at + 2;
    }
    None
}

/// The character reference at `at` (an `&`) in text, as html5ever reads it in data:
/// `(Some(characters), end)` when it stands for characters, `(None, end)` when the
/// text from `at` to `end` is shown as written (just the `&` when nothing follows that
/// makes a reference).
pub(super) fn reference(html: &str, at: usize) -> (Option<[Option<char>; 2]>, usize) {
    let bytes = html.as_bytes();
    match bytes.get(at + 1) {
        Some(b'#') => numeric_reference(bytes, at),
        Some(b) if b.is_ascii_alphanumeric() => named_reference(html, at),
        _ => (None, at + 1),
    }
}

fn numeric_reference(bytes: &[u8], at: usize) -> (Option<[Option<char>; 2]>, usize) {
    let (base, digits_at) = match bytes.get(at + 2) {
        Some(b'x' | b'X') => (16, at + 3),
        _ => (10, at + 2),
    };
    let mut value: u32 = 0;
    let mut i = digits_at;
    while let Some(digit) = bytes.get(i).and_then(|&b| (b as char).to_digit(base)) {
        // Past the last code point it stays past it.
        value = value
            .saturating_mul(base)
            .saturating_add(digit)
            .min(0x11_0000);
        i += 1;
    }
    if i == digits_at {
        // `&#` or `&#x` without digits is text.
        return (None, digits_at);
    }
    if bytes.get(i) == Some(&b';') {
        i += 1;
    }
    let c = match value {
        0 | 0xD800..=0xDFFF | 0x11_0000.. => '\u{FFFD}',
        0x80..=0x9F => C1_REPLACEMENTS[(value - 0x80) as usize]
            .unwrap_or(char::from_u32(value).unwrap_or('\u{FFFD}')),
        _ => char::from_u32(value).unwrap_or('\u{FFFD}'),
    };
    (Some([Some(c), None]), i)
}

fn named_reference(html: &str, at: usize) -> (Option<[Option<char>; 2]>, usize) {
    let start = at + 1;
    // The longest name (or prefix) of html5ever's table the text starts with.
    let mut matched: Option<(usize, (u32, u32))> = None;
    for (offset, c) in html[start..].char_indices() {
        let end = start + offset + c.len_utf8();
        match NAMED_ENTITIES.get(&html[start..end]) {
            Some(&(0, _)) => {}
            Some(&found) => matched = Some((end, found)),
            None => break,
        }
    }
    match matched {
        Some((end, (c1, c2))) => (
            Some([char::from_u32(c1), char::from_u32(c2).filter(|_| c2 != 0)]),
            end,
        ),
        None => (None, at + 1),
    }
}
