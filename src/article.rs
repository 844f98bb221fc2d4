//! Articles: the story a web page tells, never the site around it (menus, "trending"
//! bars, related-story lists, comments, share bars, footers). A summary-only feed's items
//! are matched on their feed text plus the article their link points to (issue 15).
//!
//! Extraction is Mozilla's Readability algorithm (`dom_smoothie`), or, for a site where
//! it picks wrong, the admin's CSS selector (`content_selector = "div.entry-content"`).
//! A page that yields too little text (a paywall, a page drawn by JavaScript, an error
//! page served with 200) is "no article", never taken for the story. Pure: text in, text
//! out, no I/O.

use dom_smoothie::{Config, Readability, ReadabilityError, TextMode};
use encoding_rs::{Encoding, UTF_8, WINDOWS_1252};

/// What a page held.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Extraction {
    Article(Article),
    /// The page has no story to match on; the reason says why (for `feeds status`).
    NoArticle(String),
}

/// The story of a page, as plain text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Article {
    /// The page's headline, as the page gives it (may be empty).
    pub title: String,
    /// Paragraphs separated by a blank line; spaces within a line collapsed.
    pub text: String,
}

/// Less text than this (in characters) is no article: a paywall's teaser, a shell page
/// filled in by scripts, a "page not found" served with 200.
pub const MIN_ARTICLE_CHARS: usize = 200;

/// Pages with more elements than this are not taken apart (time and memory grow with
/// them; a real article page has a few thousand).
const MAX_ELEMENTS: usize = 50_000;

/// The article in `html`, the page at `url` (absolute; relative links resolve against
/// it). With `content_selector`, the text of the elements it selects, in page order,
/// instead of Readability's guess.
pub fn extract(html: &str, url: &str, content_selector: Option<&str>) -> Extraction {
    // Building a page's tree costs the square of its depth (4,000 nested `<div>`s: a
    // minute); no article page nests more than a few dozen.
    if crate::parse::nesting_depth(html, crate::page::MAX_DEPTH) > crate::page::MAX_DEPTH {
        return Extraction::NoArticle(format!(
            "the page nests elements more than {} deep: not read",
            crate::page::MAX_DEPTH
        ));
    }
    match content_selector {
        Some(selector) => by_selector(html, selector),
        None => by_readability(html, url),
    }
}

fn by_readability(html: &str, url: &str) -> Extraction {
    let config = Config {
        max_elements_to_parse: MAX_ELEMENTS,
        text_mode: TextMode::Formatted,
        ..Config::default()
    };
    let parsed = Readability::new(html, Some(url), Some(config)).and_then(|mut r| r.parse());
    match parsed {
        Ok(article) => checked(article.title, &article.text_content),
        Err(ReadabilityError::TooManyElements(found, max)) => Extraction::NoArticle(format!(
            "the page has {found} elements, more than the {max} an article page is read with"
        )),
        Err(e) => Extraction::NoArticle(format!("no article found: {e}")),
    }
}

fn by_selector(html: &str, selector: &str) -> Extraction {
    let document = dom_query::Document::from(html);
    let selected = match document.try_select(selector) {
        Some(selected) => selected,
        None => {
            return Extraction::NoArticle(format!(
                "content_selector {selector:?} selects nothing on the page"
            ));
        }
    };
    // The outermost selected elements only: one inside another is in its text already.
    let ids: std::collections::HashSet<_> = selected.nodes().iter().map(|n| n.id).collect();
    let mut parts: Vec<String> = Vec::new();
    let mut length = 0;
    for node in selected.nodes() {
        let mut ancestor = node.parent();
        let mut nested = false;
        while let Some(a) = ancestor {
            if ids.contains(&a.id) {
                nested = true;
                break;
            }
            ancestor = a.parent();
        }
        if nested {
            continue;
        }
        let text = node.formatted_text().to_string();
        length += text.len();
        parts.push(text);
        // Never more text than the page had.
        if length > html.len() {
            break;
        }
    }
    let title = document.select("title").text().trim().to_string();
    checked(title, &parts.join("\n\n"))
}

/// Decodes a web page to text the way browsers pick its encoding: a byte-order mark, then
/// the HTTP `charset`, then a `<meta charset>` (or `http-equiv`) in its first 1,024
/// bytes, then UTF-8 if the bytes are valid UTF-8, else windows-1252 (what a page
/// declaring ISO-8859-1 or nothing at all is in practice).
pub fn decode_html(body: &[u8], content_type: Option<&str>) -> String {
    if let Some((encoding, bom_len)) = Encoding::for_bom(body) {
        return encoding
            .decode_without_bom_handling(&body[bom_len..])
            .0
            .into_owned();
    }
    let from_meta = || {
        // As browsers do: a page cannot declare itself UTF-16 in ASCII (its bytes would
        // not be ASCII), so a meta saying so means UTF-8; x-user-defined, windows-1252.
        meta_charset(&body[..body.len().min(1024)]).map(|e| {
            if e == encoding_rs::UTF_16LE || e == encoding_rs::UTF_16BE {
                UTF_8
            } else if e == encoding_rs::X_USER_DEFINED {
                WINDOWS_1252
            } else {
                e
            }
        })
    };
    let declared = content_type
        .and_then(|ct| charset_in(ct.as_bytes()))
        .or_else(from_meta);
    let encoding = match declared {
        // A page that says UTF-8 but is not (a CMS that pasted windows-1252 in): as
        // browsers do, its bytes are still read as UTF-8, with replacements.
        Some(encoding) => encoding,
        None if mostly_utf8(body) => UTF_8,
        None => WINDOWS_1252,
    };
    encoding.decode_without_bom_handling(body).0.into_owned()
}

/// Whether undeclared bytes are UTF-8: valid, or with more well-formed multi-byte
/// characters than malformed sequences (one stray windows-1252 byte in a UTF-8 page
/// must not turn every accented word of it into mojibake). windows-1252 text almost
/// never forms a valid multi-byte UTF-8 sequence.
fn mostly_utf8(body: &[u8]) -> bool {
    if std::str::from_utf8(body).is_ok() {
        return true;
    }
    let text = String::from_utf8_lossy(body);
    let (mut good, mut bad) = (0usize, 0usize);
    for c in text.chars().filter(|c| !c.is_ascii()) {
        if c == char::REPLACEMENT_CHARACTER {
            bad += 1;
        } else {
            good += 1;
        }
    }
    good > bad
}

/// The encoding a `<meta charset="…">` or `<meta http-equiv="Content-Type"
/// content="…; charset=…">` in `head` names.
fn meta_charset(head: &[u8]) -> Option<&'static Encoding> {
    let lower = head.to_ascii_lowercase();
    let mut rest = &lower[..];
    while let Some(at) = find(rest, b"<meta") {
        let tag = &rest[at..];
        let end = tag.iter().position(|&b| b == b'>').unwrap_or(tag.len());
        if let Some(found) = charset_in(&tag[..end]) {
            return Some(found);
        }
        rest = &tag[end..];
    }
    None
}

/// The encoding named by the first `charset=` in `text` (quoted or not).
fn charset_in(text: &[u8]) -> Option<&'static Encoding> {
    let lower = text.to_ascii_lowercase();
    let at = find(&lower, b"charset")?;
    let rest = &text[at + b"charset".len()..];
    let rest = rest
        .trim_ascii_start()
        .strip_prefix(b"=")?
        .trim_ascii_start();
    let rest = rest
        .strip_prefix(b"\"")
        .or_else(|| rest.strip_prefix(b"'"))
        .unwrap_or(rest);
    let end = rest
        .iter()
        .position(|&b| matches!(b, b'"' | b'\'' | b';' | b'>' | b'/') || b.is_ascii_whitespace())
        .unwrap_or(rest.len());
    Encoding::for_label(&rest[..end])
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// `text` as an article, tidied, if there is enough of it.
fn checked(title: String, text: &str) -> Extraction {
    let text = tidy(text);
    let chars = text.chars().count();
    if chars < MIN_ARTICLE_CHARS {
        return Extraction::NoArticle(format!(
            "no article found: {chars} characters of text (a paywall, a page drawn by \
             scripts, or an error page)"
        ));
    }
    Extraction::Article(Article {
        title: tidy(&title),
        text,
    })
}

/// Spaces within each line collapsed, blank lines between paragraphs kept (one), the
/// ends trimmed; control characters (a NUL) dropped.
fn tidy(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut blank = false;
    for line in text.lines() {
        let words: Vec<&str> = line
            .split(|c: char| c.is_whitespace() || c.is_control())
            .filter(|w| !w.is_empty())
            .collect();
        if words.is_empty() {
            blank = !out.is_empty();
            continue;
        }
        if !out.is_empty() {
            out.push_str(if blank { "\n\n" } else { "\n" });
        }
        blank = false;
        out.push_str(&words.join(" "));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAGE: &str = include_str!("../tests/fixtures/article-wordpress.html");
    const URL: &str = "https://news.example/2026/11/30/uscis-extends-ead/";

    fn article(extraction: Extraction) -> Article {
        match extraction {
            Extraction::Article(a) => a,
            Extraction::NoArticle(why) => panic!("no article: {why}"),
        }
    }

    /// The story's words are in; the words that appear only in the site's menu, trending
    /// bar, share bar, related stories, comments, sidebar and footer are not.
    #[test]
    fn the_story_without_the_site_around_it() {
        let a = article(extract(PAGE, URL, None));
        assert!(
            a.title.contains("USCIS Extends Employment Authorization"),
            "{}",
            a.title
        );
        for word in ["Bodyonlyword", "540 days", "Federal Register", "(c)(8)"] {
            assert!(a.text.contains(word), "{word} missing from:\n{}", a.text);
        }
        for word in [
            "Menuonlyword",
            "Sidebarword",
            "Shareonlyword",
            "Relatedonlyword",
            "Commentonlyword",
            "Newsletteronlyword",
            "Footeronlyword",
        ] {
            assert!(!a.text.contains(word), "{word} is site chrome:\n{}", a.text);
        }
        assert!(a.text.contains("\n\n"), "paragraphs kept apart: {}", a.text);
    }

    /// The admin's selector decides instead of Readability: exactly the selected part.
    #[test]
    fn a_content_selector_takes_exactly_what_it_selects() {
        let a = article(extract(PAGE, URL, Some("div.entry-content")));
        assert!(
            a.text
                .starts_with("U.S. Citizenship and Immigration Services announced")
        );
        assert!(
            a.text
                .ends_with("rather than paying for unofficial services.")
        );
        assert!(
            !a.text.contains("Maria Lopez"),
            "the byline is outside the selector"
        );
        match extract(PAGE, URL, Some("div.no-such-class")) {
            Extraction::NoArticle(why) => assert!(why.contains("selects nothing"), "{why}"),
            other => panic!("{other:?}"),
        }
        match extract(PAGE, URL, Some("div[")) {
            Extraction::NoArticle(why) => assert!(why.contains("div["), "{why}"),
            other => panic!("{other:?}"),
        }
    }

    /// A page drawn by scripts, a paywall's teaser, an error page served with 200: never
    /// their text as the story.
    #[test]
    fn pages_without_a_story_are_no_article() {
        let shell = r#"<html><head><title>News</title></head><body><div id="root"></div>
            <script src="/app.js"></script><noscript>Enable JavaScript to read this.</noscript></body></html>"#;
        let paywall = r#"<html><body><article><h1>Asylum ruling</h1><p>The court ruled on
            Monday that</p><div class="paywall">Subscribe to keep reading.</div></article></body></html>"#;
        let error = r#"<html><head><title>Page not found</title></head><body><h1>404</h1>
            <p>Sorry, the page you are looking for does not exist.</p><a href="/">Home</a></body></html>"#;
        for (name, html) in [("shell", shell), ("paywall", paywall), ("error", error)] {
            match extract(html, URL, None) {
                Extraction::NoArticle(why) => assert!(why.contains("no article"), "{name}: {why}"),
                Extraction::Article(a) => panic!("{name} taken for a story: {a:?}"),
            }
        }
    }

    /// The HTTP charset first, then `<meta>`, then UTF-8 or windows-1252 by the bytes.
    #[test]
    fn pages_are_decoded_by_their_declared_charset() {
        let latin1 = b"<html><head><meta charset=\"iso-8859-1\"></head><body>Se\xf1ora, \xbfasilo?</body></html>";
        assert!(decode_html(latin1, Some("text/html")).contains("Señora, ¿asilo?"));
        let http_equiv = b"<meta http-equiv='Content-Type' content='text/html; charset=windows-1252'>\x93quoted\x94";
        assert!(decode_html(http_equiv, None).contains("\u{201c}quoted\u{201d}"));
        // The header wins over the page.
        let header = "<meta charset=\"utf-8\">deportaci\u{f3}n".as_bytes();
        assert!(decode_html(header, Some("text/html; charset=UTF-8")).contains("deportación"));
        let koi8 = [b"<p>".as_slice(), &[0xd7, 0xc9, 0xda, 0xc1]].concat();
        assert!(decode_html(&koi8, Some("text/html; charset=\"koi8-r\"")).contains("виза"));
        // Nothing declared: UTF-8 when valid, else windows-1252.
        assert_eq!(decode_html("a\u{f1}o".as_bytes(), None), "año");
        assert_eq!(decode_html(b"a\xf1o", None), "año");
        let bom = [&[0xef, 0xbb, 0xbf][..], "visa".as_bytes()].concat();
        assert_eq!(
            decode_html(&bom, Some("text/html; charset=iso-8859-1")),
            "visa"
        );
    }

    #[test]
    fn text_is_tidied_into_paragraphs() {
        assert_eq!(
            tidy("  one \t two\n\n\n  three\u{0}four \nfive  "),
            "one two\n\nthree four\nfive"
        );
        assert_eq!(tidy("\n\n  \n"), "");
    }
}
