//! The subscription query language: parsing subscribers' queries, preparing
//! items (news articles) as documents, and matching many subscriptions against
//! each item.
//!
//! This module is pure: plain data in, plain data out, no I/O and no async.
//! It is responsible for
//!
//! * parsing a query string into a [`Query`], or explaining with a
//!   [`QueryError`] (1-based column, counted in characters) why it is rejected;
//! * reading synonym groups from the config into [`Synonyms`];
//! * preparing an item's title, body and source (feed id, tags) once as a
//!   [`Document`];
//! * deciding which of many subscriptions match a document ([`Matcher`]), and
//!   why: which terms matched where, as byte ranges for highlighting ([`Hit`]);
//! * naming the `feed:` and `tag:` of a query that no given feed has
//!   ([`Query::unknown_scopes`]).
//!
//! # Grammar
//!
//! ```text
//! query   := or
//! or      := and ( ("OR" | "|") and )*
//! and     := unary unary*                  adjacent expressions are ANDed
//! unary   := ("NOT" | "-") unary | primary
//! primary := field | word | phrase | "(" or ")"
//! field   := ("title" | "feed" | "tag") ":" (word | phrase)   no space after ':'
//! phrase  := '"' anything but a quote '"'  curly quotes “ ” „ work too
//! word    := a run of characters other than whitespace, control characters,
//!            quotes, "(", ")" and "|"
//! ```
//!
//! Precedence, tightest first: `NOT`/`-`, then implicit AND, then `OR`; so
//! `a b OR c` means `(a AND b) OR c`. `OR` and `NOT` are keywords only in
//! uppercase (`or` is an ordinary word). `-` excludes only at the start of a
//! word and must be directly followed by what it excludes (`-tourist`,
//! `-"visa lottery"`, `-(a OR b)`, `-feed:visaverge`); inside a word it is a
//! separator (`H-1B`).
//!
//! A word ending in `*` is a prefix (`deport*` matches "deportation"); `*`
//! anywhere else is an error.
//!
//! # Fields
//!
//! A word made of ASCII letters followed by a colon names a field:
//!
//! * `title:USCIS`, `title:"green card"`, `title:deport*`: the term must occur
//!   in the item's title;
//! * `feed:uscis-news`: the item comes from the feed with that id;
//! * `tag:official`: the item's feed has that tag.
//!
//! Field names are case-insensitive, and so are feed ids and tags. Any other
//! letters before a colon are an error (`foo:bar`: "unknown field `foo`"),
//! so a mistyped field never silently turns into text. A colon after anything
//! else is an ordinary separator: `10:30` is the text "10 30" (and, by the
//! compound rule below, also matches "1030"). Inside quotes there are no
//! fields: `"re:invent"` is the text "re invent".
//!
//! `feed:` and `tag:` count as positive terms, so `feed:uscis-news` alone is a
//! query (every item of that feed), while `-feed:visaverge` alone is not.
//!
//! Queries are rejected when they are empty, longer than [`MAX_QUERY_CHARS`],
//! nested deeper than [`MAX_NESTING`], malformed (unclosed quote or
//! parenthesis, dangling `OR`/`NOT`/`-`, empty phrase, misplaced `*`, unknown
//! or empty field), or would match almost every item because nothing in them
//! is required (`-foo` alone).
//!
//! # Matching
//!
//! Text is compared after folding each character: compatibility
//! decomposition (NFKD, so "ＩＣＥ" is "ice"), Unicode lowercase, and
//! dropping combining marks that are not letters themselves (accents go, so
//! `jose` matches "José"; the vowel signs of Indic scripts stay). A *token* is
//! a maximal run of alphanumeric characters of the folded text; everything
//! else separates tokens.
//!
//! **The compound rule.** A term (a word or a phrase) matches when the
//! concatenation of its folded tokens, separators dropped, equals the
//! concatenation of one or more *consecutive whole* tokens of the title or of
//! the body. So `H1B`, `H-1B`, `h1b` and the text "H 1B" are all "h1b";
//! `I-485` is `I485`; `"green card"`, `green-card` and `greencard` are the
//! same term and each matches "green card", "Green-Card" and "greencard".
//! Whole tokens keep whole-word matching: `ICE` does not match "police", `OPT`
//! not "option", `EAD` not "head". A prefix (`deport*`, `I-48*`) starts at a
//! token boundary and may end inside a token; in a phrase, the words after a
//! prefix start at the next token (`"deport* order"` matches "deportation
//! order"). A match never spans the title and the body.
//!
//! Known edge cases of the rule: runs of single letters or digits join up, so
//! `ICE` also matches "I.C.E." (wanted) and "sections I, C, E" (not), and
//! `1030` matches "10:30"; a term never matches *part* of a token except
//! through `*`, so `H1B` does not match "H1Bs" (`H1B*` does).
//!
//! Scripts written without spaces (Chinese, Japanese, Thai) form one token
//! per run of letters, so they only match whole runs for now.
//!
//! # Synonyms
//!
//! [`Synonyms`] are groups of terms written like query terms (`["green card",
//! "permanent resident", "LPR"]`). A query term that equals a member of a
//! group, after the normalization above (`green-card` equals `"green card"`),
//! matches where any member of that group matches. A term in several groups
//! matches the members of all of them; groups are not chained further.
//!
//! # Many subscriptions
//!
//! [`Matcher::new`] compiles all subscriptions together:
//!
//! * identical queries once, whoever wrote them;
//! * every distinct text term (synonyms included) into one Aho-Corasick
//!   automaton over the concatenated tokens (`Document::squashed`), so one
//!   pass over an item finds every term it contains, compounds included;
//! * every query under *keys*, one or two terms (or `feed:`/`tag:`) that an
//!   item must contain for the query to match: `asylum Texas -Cuba` under
//!   {asylum, Texas}, `(TPS OR parole) Haiti` under {TPS, Haiti} and
//!   {parole, Haiti}. Keys are derived from the expression (`cover`), so a
//!   query can only match an item that has one of its keys.
//!
//! Per item, the automaton's pass gives the terms present; the keys made of
//! them give the candidate queries, which are evaluated, or not even that
//! when the key alone settles it (`asylum Texas` under {asylum, Texas}). A
//! key's queries are stored one after the other, so reading them is a sweep
//! through memory. The work per item depends on the item, its matches and
//! its candidates (in practice about as many as its matches), not on the
//! number of subscriptions.

use std::cmp::Reverse;
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::hash::{BuildHasherDefault, Hasher};
use std::mem;
use std::ops::Range;
use std::str::FromStr;

use aho_corasick::{AhoCorasick, AhoCorasickKind, MatchKind};
use unicode_normalization::char::{decompose_compatible, is_combining_mark};

/// Queries longer than this many characters are rejected.
pub const MAX_QUERY_CHARS: usize = 1000;

/// How deeply parentheses and `NOT`/`-` may nest. Bounding it keeps parsing,
/// matching and dropping a query from overflowing the stack.
pub const MAX_NESTING: usize = 32;

// ---------------------------------------------------------------------------
// Text folding
// ---------------------------------------------------------------------------

/// Folds one character for comparison and passes the result (zero or more
/// characters) to `emit`. Documents and queries go through the same folding.
pub(crate) fn fold_char(c: char, mut emit: impl FnMut(char)) {
    if c.is_ascii() {
        emit(c.to_ascii_lowercase());
        return;
    }
    decompose_compatible(c, |decomposed| {
        for lower in decomposed.to_lowercase() {
            // Accents are non-alphabetic marks and are dropped. Marks that are
            // alphabetic (Indic vowel signs, ...) are part of words: keep them.
            if is_combining_mark(lower) && !lower.is_alphanumeric() {
                continue;
            }
            // Σ lowercases to σ, but text may also contain the word-final ς.
            emit(if lower == 'ς' { 'σ' } else { lower });
        }
    });
}

/// Whether `c` contributes at least one alphanumeric character once folded.
fn folds_to_word_char(c: char) -> bool {
    let mut any = false;
    fold_char(c, |f| any |= f.is_alphanumeric());
    any
}

// ---------------------------------------------------------------------------
// Documents
// ---------------------------------------------------------------------------

/// The two searchable parts of an item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    Title,
    Body,
}

/// One term occurrence in a document, for highlighting: `range` is a byte
/// range of the title or body string given to [`Document::new`], on char
/// boundaries, covering the whole tokens that matched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hit {
    /// The query term, as [`Query::terms`] writes it (also when a synonym of
    /// it is what the text contains).
    pub term: String,
    pub field: Field,
    pub range: Range<usize>,
}

/// An item's text and source prepared once for matching against many queries.
#[derive(Debug, Clone, Default)]
pub struct Document {
    /// The folded tokens of the title, one space, then those of the body, with
    /// nothing between the tokens of one field: the text the compound rule
    /// and the automaton work on.
    squashed: String,
    /// In order: the title's tokens, then the body's.
    tokens: Vec<TextToken>,
    /// Index of the first body token.
    body_start: usize,
    /// Length of the title's part of `squashed`.
    title_len: usize,
    /// Lowercased; `None` for a document without a source.
    feed: Option<String>,
    /// Lowercased.
    tags: Vec<String>,
    /// The item's language, a primary subtag (`es`); `None` when unknown.
    lang: Option<String>,
}

#[derive(Debug, Clone)]
struct TextToken {
    /// Byte range of the folded token in `Document::squashed`.
    folded: Range<usize>,
    /// Byte range of the characters it came from, in the title or the body.
    source: Range<usize>,
}

impl Document {
    /// `title` and `body` are already plain text (HTML stripped by the caller).
    /// Without [`Document::with_source`], `feed:` and `tag:` never match.
    pub fn new(title: &str, body: &str) -> Document {
        let mut tokenizer = Tokenizer {
            squashed: String::with_capacity(title.len() + body.len() + 1),
            // English averages about one word per six bytes.
            tokens: Vec::with_capacity((title.len() + body.len()) / 6 + 1),
            open: false,
        };
        tokenizer.run(title);
        let body_start = tokenizer.tokens.len();
        let title_len = tokenizer.squashed.len();
        // Never part of a term, so no match runs from the title into the body.
        tokenizer.squashed.push(' ');
        tokenizer.run(body);
        Document {
            squashed: tokenizer.squashed,
            tokens: tokenizer.tokens,
            body_start,
            title_len,
            feed: None,
            tags: Vec::new(),
            lang: None,
        }
    }

    /// The document of an item of feed `feed_id`, whose feed has `tags`.
    pub fn with_source(mut self, feed_id: &str, tags: &[String]) -> Document {
        self.feed = Some(source_name(feed_id));
        self.tags = tags.iter().map(|t| source_name(t)).collect();
        self
    }

    /// The document of an item in language `lang` (a tag such as `es` or `es-MX`);
    /// without it, `lang:` never matches.
    pub fn with_lang(mut self, lang: Option<&str>) -> Document {
        self.lang = lang.and_then(primary_subtag);
        self
    }

    fn field_of(&self, token: usize) -> Field {
        if token < self.body_start {
            Field::Title
        } else {
            Field::Body
        }
    }

    /// The index of the token whose folded text starts at byte `offset`.
    fn token_starting_at(&self, offset: usize) -> Option<usize> {
        self.tokens
            .binary_search_by_key(&offset, |t| t.folded.start)
            .ok()
    }

    /// Whether `pattern` matches from token `first` on (the compound rule),
    /// and if so the index of the last token it covers.
    fn match_at(&self, first: usize, pattern: &[Segment]) -> Option<usize> {
        let field_end = if first < self.body_start {
            self.body_start
        } else {
            self.tokens.len()
        };
        let mut next = first;
        let mut last = None;
        for segment in pattern {
            if next >= field_end {
                return None;
            }
            let start = self.tokens.get(next)?.folded.start;
            let end = start + segment.text.len();
            // Tokens of one field are contiguous in `squashed`, and a segment
            // has no space, so an equal slice lies within the field.
            if self.squashed.get(start..end)? != segment.text {
                return None;
            }
            let mut covering = next;
            while self.tokens.get(covering)?.folded.end < end {
                covering += 1;
            }
            if covering >= field_end
                || (!segment.prefix && self.tokens.get(covering)?.folded.end != end)
            {
                return None;
            }
            last = Some(covering);
            next = covering + 1;
        }
        last
    }

    /// Every occurrence of `pattern` as (first token, last token), searching
    /// the title only or everywhere. The straightforward way, one pattern at
    /// a time; [`Matcher`] finds all its patterns at once instead.
    fn occurrences(&self, pattern: &[Segment], title_only: bool) -> Vec<(usize, usize)> {
        let mut found = Vec::new();
        let Some(first) = pattern.first() else {
            return found;
        };
        let end = if title_only {
            self.title_len
        } else {
            self.squashed.len()
        };
        let haystack = self.squashed.get(..end).unwrap_or_default();
        let step = first.text.chars().next().map_or(1, char::len_utf8);
        let mut from = 0;
        while let Some(at) = haystack
            .get(from..)
            .and_then(|rest| rest.find(first.text.as_str()))
        {
            let at = from + at;
            if let Some(token) = self.token_starting_at(at)
                && let Some(last) = self.match_at(token, pattern)
            {
                found.push((token, last));
            }
            from = at + step;
        }
        found
    }

    /// Whether the document satisfies one leaf of a query.
    fn satisfies(&self, leaf: &Node, synonyms: &Synonyms) -> bool {
        match leaf {
            Node::Term(term) => synonyms
                .alternatives(&term.pattern)
                .iter()
                .any(|p| !self.occurrences(p, term.title_only).is_empty()),
            Node::Feed(id) => self.feed.as_ref() == Some(id),
            Node::Tag(tag) => self.tags.contains(tag),
            Node::Lang(code) => self.lang.as_ref() == Some(code),
            Node::Not(_) | Node::And(_) | Node::Or(_) => false,
        }
    }

    fn hit(&self, term: &str, first: usize, last: usize) -> Option<Hit> {
        let start = self.tokens.get(first)?.source.start;
        let end = self.tokens.get(last)?.source.end;
        Some(Hit {
            term: term.to_string(),
            field: self.field_of(first),
            range: start..end,
        })
    }
}

/// Splits text into folded tokens, appending them to `squashed`.
struct Tokenizer {
    squashed: String,
    tokens: Vec<TextToken>,
    /// Whether the last token may still grow.
    open: bool,
}

impl Tokenizer {
    fn run(&mut self, text: &str) {
        let mut offset = 0;
        while let Some(rest) = text.get(offset..) {
            // Runs of ASCII letters and digits, most of English text, in one go.
            let run = rest
                .bytes()
                .position(|b| !b.is_ascii_alphanumeric())
                .unwrap_or(rest.len());
            if run > 0 {
                let end = offset + run;
                self.push_ascii(rest.get(..run).unwrap_or_default(), offset, end);
                offset = end;
                continue;
            }
            let Some(c) = rest.chars().next() else {
                break;
            };
            let end = offset + c.len_utf8();
            if c.is_ascii() {
                self.open = false;
                offset = end;
                continue;
            }
            let mut emitted = false;
            fold_char(c, |f| {
                emitted = true;
                if f.is_alphanumeric() {
                    self.push(f, offset, end);
                } else {
                    self.open = false;
                }
            });
            // A dropped accent belongs to the word it sits on, so that a
            // highlight covers "José" and not "Jos" plus half a character.
            if !emitted
                && self.open
                && let Some(last) = self.tokens.last_mut()
            {
                last.source.end = end;
            }
            offset = end;
        }
        self.open = false;
    }

    /// Appends `run`, ASCII letters and digits from `text[start..end]`.
    fn push_ascii(&mut self, run: &str, start: usize, end: usize) {
        let at = self.squashed.len();
        if !self.open {
            self.tokens.push(TextToken {
                folded: at..at,
                source: start..end,
            });
            self.open = true;
        }
        self.squashed.push_str(run);
        if let Some(added) = self.squashed.get_mut(at..) {
            added.make_ascii_lowercase();
        }
        if let Some(last) = self.tokens.last_mut() {
            last.folded.end = self.squashed.len();
            last.source.end = end;
        }
    }

    fn push(&mut self, folded: char, start: usize, end: usize) {
        let at = self.squashed.len();
        if !self.open {
            self.tokens.push(TextToken {
                folded: at..at,
                source: start..end,
            });
            self.open = true;
        }
        self.squashed.push(folded);
        if let Some(last) = self.tokens.last_mut() {
            last.folded.end = self.squashed.len();
            last.source.end = end;
        }
    }
}

/// Sorts hits (title first, then by position) and drops those overlapping
/// an earlier one in the same field; at the same start the longer one stays.
fn arrange_hits(mut hits: Vec<Hit>) -> Vec<Hit> {
    hits.sort_by_key(|h| (h.field == Field::Body, h.range.start, Reverse(h.range.end)));
    let mut kept: Vec<Hit> = Vec::with_capacity(hits.len());
    for hit in hits {
        if let Some(previous) = kept.last()
            && previous.field == hit.field
            && hit.range.start < previous.range.end
        {
            continue;
        }
        kept.push(hit);
    }
    kept
}

// ---------------------------------------------------------------------------
// Queries
// ---------------------------------------------------------------------------

/// Why a query was rejected; `column` is 1-based, counted in characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueryError {
    pub column: usize,
    pub reason: String,
}

impl QueryError {
    fn new(column: usize, reason: impl Into<String>) -> QueryError {
        QueryError {
            column,
            reason: reason.into(),
        }
    }
}

impl fmt::Display for QueryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} at column {}", self.reason, self.column)
    }
}

impl std::error::Error for QueryError {}

/// A parsed query. Stored as written elsewhere; compiled with [`Query::parse`].
///
/// `Display` writes a canonical form that parses back to an equal query.
#[derive(Debug, Clone, PartialEq)]
pub struct Query {
    root: Node,
}

#[derive(Debug, Clone, PartialEq)]
enum Node {
    Term(Term),
    /// `feed:id`, lowercased.
    Feed(String),
    /// `tag:name`, lowercased.
    Tag(String),
    /// `lang:code`: a primary language subtag, lowercased (`es`).
    Lang(String),
    Not(Box<Node>),
    /// At least two children, none of them an `And` (nested ones are flattened).
    And(Vec<Node>),
    /// At least two children, none of them an `Or`.
    Or(Vec<Node>),
}

/// A word or quoted phrase, possibly limited to the title.
#[derive(Debug, Clone, PartialEq)]
struct Term {
    /// As written (without `title:` and quotes), lowercased; whitespace runs
    /// in a phrase become one space.
    text: String,
    quoted: bool,
    title_only: bool,
    /// What it matches; never empty.
    pattern: Pattern,
}

impl Term {
    /// How [`Query::terms`] and [`Hit::term`] name it.
    fn name(&self) -> String {
        if self.title_only {
            format!("title:{}", self.text)
        } else {
            self.text.clone()
        }
    }
}

/// A term's folded words, glued together as the compound rule compares them:
/// one segment per run of words up to and including a prefix word.
type Pattern = Vec<Segment>;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Segment {
    /// Folded, without separators; never empty.
    text: String,
    /// Ends with a word written with `*`: may end inside a token.
    prefix: bool,
}

/// A folded word of a term, as written between separators.
#[derive(Debug)]
struct Word {
    /// Folded; never empty.
    text: String,
    /// Written with a trailing `*`.
    prefix: bool,
}

fn pattern_of(words: Vec<Word>) -> Pattern {
    let mut segments = Vec::new();
    let mut current = String::new();
    for word in words {
        current.push_str(&word.text);
        if word.prefix {
            segments.push(Segment {
                text: mem::take(&mut current),
                prefix: true,
            });
        }
    }
    if !current.is_empty() {
        segments.push(Segment {
            text: current,
            prefix: false,
        });
    }
    segments
}

impl Query {
    /// Parses `input`, or says why (and where) it is not a valid query.
    pub fn parse(input: &str) -> Result<Query, QueryError> {
        let chars: Vec<char> = input.chars().collect();
        if chars.len() > MAX_QUERY_CHARS {
            return Err(QueryError::new(
                MAX_QUERY_CHARS + 1,
                format!("query is longer than {MAX_QUERY_CHARS} characters"),
            ));
        }
        // A search is text a person typed; a control character in it has no meaning
        // and would reach terminals and mail headers where it does harm. Tabs are spaces.
        if let Some(i) = chars.iter().position(|&c| c.is_control() && c != '\t') {
            return Err(QueryError::new(
                i + 1,
                format!(
                    "control character U+{:04X} is not allowed in a search",
                    u32::from(chars[i])
                ),
            ));
        }
        let tokens = lex(&chars)?;
        if tokens.is_empty() {
            return Err(QueryError::new(1, "empty query"));
        }
        let mut parser = Parser {
            tokens: tokens.into_iter().peekable(),
            end_column: chars.len() + 1,
            depth: 0,
            first_not: None,
        };
        let root = parser.parse_or()?;
        if let Some(extra) = parser.tokens.next() {
            // `parse_or` stops only at the end or at a `)` it did not open.
            return Err(QueryError::new(
                extra.column,
                "unexpected ')' without a matching '('",
            ));
        }

        // A query that matches a document without any terms matches every
        // item lacking its excluded terms, which is nearly all of them.
        let matches_empty = |node: &Node| node.eval(&mut |_| false);
        if matches_empty(&root) {
            let reason = match &root {
                Node::Or(alternatives) if alternatives.iter().any(|a| !matches_empty(a)) => {
                    "each side of OR needs a term that is not excluded"
                }
                _ => "a query needs at least one term that is not excluded",
            };
            // Only a negation can make a query match an empty document.
            return Err(QueryError::new(parser.first_not.unwrap_or(1), reason));
        }
        Ok(Query { root })
    }

    /// The query that also finds, in items of other languages, the terms the
    /// sets across languages of `synonyms` give for its terms (see the module
    /// docs). Its `Display` shows what it matches: `asylum` becomes
    /// `asylum OR (asilo lang:es) OR …`.
    pub fn across_languages(&self, synonyms: &Synonyms) -> Query {
        Query {
            root: cross(&self.root, synonyms),
        }
    }

    /// Whether the document satisfies the query, without synonyms.
    pub fn matches(&self, doc: &Document) -> bool {
        let none = Synonyms::default();
        self.root.eval(&mut |leaf| doc.satisfies(leaf, &none))
    }

    /// `Some(hits)` when the document satisfies the query with `synonyms`:
    /// every occurrence of the query's positive terms (those of
    /// [`Query::terms`]), title hits first, each field's in order and without
    /// overlaps (where occurrences overlap, the one starting first, then the
    /// longer, is kept). A query matching by `feed:`/`tag:` alone has no hits.
    pub fn explain(&self, doc: &Document, synonyms: &Synonyms) -> Option<Vec<Hit>> {
        if !self.root.eval(&mut |leaf| doc.satisfies(leaf, synonyms)) {
            return None;
        }
        let mut hits = Vec::new();
        self.root
            .visit_gated_terms(true, &mut Vec::new(), &mut |term, positive, gates| {
                if !positive || gates.iter().any(|g| !doc.satisfies(g, synonyms)) {
                    return;
                }
                let name = term.name();
                for pattern in synonyms.alternatives(&term.pattern) {
                    for (first, last) in doc.occurrences(pattern, term.title_only) {
                        hits.extend(doc.hit(&name, first, last));
                    }
                }
            });
        Some(arrange_hits(hits))
    }

    /// The distinct positive text terms as the user wrote them, lowercased
    /// (for highlighting), in order of first appearance. Excluded terms and
    /// `feed:`/`tag:` are left out; a prefix keeps its `*`, a phrase loses its
    /// quotes, and a title term keeps its `title:`.
    pub fn terms(&self) -> Vec<String> {
        let mut terms = Vec::new();
        self.root.visit_terms(true, &mut |term, positive| {
            let name = term.name();
            if positive && !terms.contains(&name) {
                terms.push(name);
            }
        });
        terms
    }
}

/// A feed id or tag as `feed:` and `tag:` compare it.
fn source_name(name: &str) -> String {
    name.trim().to_lowercase()
}

/// A `feed:` or `tag:` of a query, with its name as written, lowercased.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Scope {
    Feed(String),
    Tag(String),
}

/// `feed:name` or `tag:name`, as a query would write it.
impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scope::Feed(id) => write_source(f, "feed", id),
            Scope::Tag(tag) => write_source(f, "tag", tag),
        }
    }
}

impl Query {
    /// The `feed:` and `tag:` of the query that name no feed or tag of `known`, each
    /// once, in order of appearance: the ones no item of those feeds can satisfy. An
    /// excluded one (`-feed:gone`) counts too: it excludes nothing.
    pub fn unknown_scopes(&self, known: &KnownScopes) -> Vec<Scope> {
        let mut unknown = Vec::new();
        self.root.visit_scopes(&mut |scope| {
            let found = match &scope {
                Scope::Feed(id) => known.feed_ids.contains(id),
                Scope::Tag(tag) => known.tags.contains(tag),
            };
            if !found && !unknown.contains(&scope) {
                unknown.push(scope);
            }
        });
        unknown
    }
}

/// The feed ids and tags there are, compared as an item's are when matching
/// ([`Document::with_source`]); built once per config, so checking a query's scopes
/// costs the query, not the number of feeds.
#[derive(Debug, Clone, Default)]
pub struct KnownScopes {
    feed_ids: HashSet<String>,
    tags: HashSet<String>,
}

impl KnownScopes {
    pub fn new<'a>(
        feed_ids: impl IntoIterator<Item = &'a str>,
        tags: impl IntoIterator<Item = &'a str>,
    ) -> KnownScopes {
        KnownScopes {
            feed_ids: feed_ids.into_iter().map(source_name).collect(),
            tags: tags.into_iter().map(source_name).collect(),
        }
    }
}

impl FromStr for Query {
    type Err = QueryError;

    fn from_str(s: &str) -> Result<Query, QueryError> {
        Query::parse(s)
    }
}

impl fmt::Display for Query {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.root.fmt(f)
    }
}

impl Node {
    /// Evaluates the expression, asking `leaf` about terms and fields.
    fn eval(&self, leaf: &mut impl FnMut(&Node) -> bool) -> bool {
        match self {
            Node::Not(inner) => !inner.eval(leaf),
            Node::And(parts) => parts.iter().all(|p| p.eval(leaf)),
            Node::Or(parts) => parts.iter().any(|p| p.eval(leaf)),
            Node::Term(_) | Node::Feed(_) | Node::Tag(_) | Node::Lang(_) => leaf(self),
        }
    }

    /// Calls `visit` on every text term with whether it is positive and its
    /// gates: the `feed:`, `tag:` and `lang:` standing beside it in a positive
    /// AND on its way from the root. A document lacking a gate cannot have
    /// matched through that AND, so the term is no reason it matched (a
    /// crossing member `asilo lang:es` in an English item).
    fn visit_gated_terms<'a>(
        &'a self,
        positive: bool,
        gates: &mut Vec<&'a Node>,
        visit: &mut impl FnMut(&'a Term, bool, &[&'a Node]),
    ) {
        match self {
            Node::Term(term) => visit(term, positive, gates),
            Node::Feed(_) | Node::Tag(_) | Node::Lang(_) => {}
            Node::Not(inner) => inner.visit_gated_terms(!positive, gates, visit),
            Node::Or(parts) => {
                for part in parts {
                    part.visit_gated_terms(positive, gates, visit);
                }
            }
            Node::And(parts) => {
                let outer = gates.len();
                if positive {
                    gates.extend(
                        parts
                            .iter()
                            .filter(|p| matches!(p, Node::Feed(_) | Node::Tag(_) | Node::Lang(_))),
                    );
                }
                for part in parts {
                    part.visit_gated_terms(positive, gates, visit);
                }
                gates.truncate(outer);
            }
        }
    }

    /// Calls `visit` on every text term, saying whether it is positive (under
    /// an even number of negations).
    fn visit_terms(&self, positive: bool, visit: &mut impl FnMut(&Term, bool)) {
        match self {
            Node::Term(term) => visit(term, positive),
            Node::Feed(_) | Node::Tag(_) | Node::Lang(_) => {}
            Node::Not(inner) => inner.visit_terms(!positive, visit),
            Node::And(parts) | Node::Or(parts) => {
                for part in parts {
                    part.visit_terms(positive, visit);
                }
            }
        }
    }

    /// Calls `visit` on every `feed:` and `tag:`, excluded or not.
    fn visit_scopes(&self, visit: &mut impl FnMut(Scope)) {
        match self {
            Node::Term(_) | Node::Lang(_) => {}
            Node::Feed(id) => visit(Scope::Feed(id.clone())),
            Node::Tag(tag) => visit(Scope::Tag(tag.clone())),
            Node::Not(inner) => inner.visit_scopes(visit),
            Node::And(parts) | Node::Or(parts) => {
                for part in parts {
                    part.visit_scopes(visit);
                }
            }
        }
    }

    /// Builds an AND of `parts`, flattening nested ANDs.
    fn and(parts: Vec<Node>) -> Node {
        let mut flat = Vec::with_capacity(parts.len());
        for part in parts {
            match part {
                Node::And(inner) => flat.extend(inner),
                other => flat.push(other),
            }
        }
        match <[Node; 1]>::try_from(flat) {
            Ok([only]) => only,
            Err(flat) => Node::And(flat),
        }
    }

    /// Builds an OR of `parts`, flattening nested ORs.
    fn or(parts: Vec<Node>) -> Node {
        let mut flat = Vec::with_capacity(parts.len());
        for part in parts {
            match part {
                Node::Or(inner) => flat.extend(inner),
                other => flat.push(other),
            }
        }
        match <[Node; 1]>::try_from(flat) {
            Ok([only]) => only,
            Err(flat) => Node::Or(flat),
        }
    }
}

/// Writes `feed:name` or `tag:name`, quoting names the lexer would split.
fn write_source(f: &mut fmt::Formatter<'_>, field: &str, name: &str) -> fmt::Result {
    if name.chars().any(ends_word) {
        write!(f, "{field}:\"{name}\"")
    } else {
        write!(f, "{field}:{name}")
    }
}

impl fmt::Display for Node {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Node::Term(term) => {
                if term.title_only {
                    f.write_str("title:")?;
                }
                if term.quoted {
                    write!(f, "\"{}\"", term.text)
                } else {
                    f.write_str(&term.text)
                }
            }
            Node::Feed(id) => write_source(f, "feed", id),
            Node::Tag(tag) => write_source(f, "tag", tag),
            Node::Lang(code) => write!(f, "lang:{code}"),
            Node::Not(inner) => match **inner {
                Node::And(_) | Node::Or(_) => write!(f, "-({inner})"),
                _ => write!(f, "-{inner}"),
            },
            Node::And(parts) => {
                for (i, part) in parts.iter().enumerate() {
                    let sep = if i == 0 { "" } else { " " };
                    match part {
                        Node::Or(_) => write!(f, "{sep}({part})")?,
                        _ => write!(f, "{sep}{part}")?,
                    }
                }
                Ok(())
            }
            Node::Or(parts) => {
                for (i, part) in parts.iter().enumerate() {
                    let sep = if i == 0 { "" } else { " OR " };
                    write!(f, "{sep}{part}")?;
                }
                Ok(())
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Synonyms
// ---------------------------------------------------------------------------

/// Groups of terms that match each other (see the module docs), and the
/// sets of terms across languages that searches crossing languages use.
/// `Synonyms::default()` has none.
#[derive(Debug, Clone, Default)]
pub struct Synonyms {
    /// Each group's distinct members.
    groups: Vec<Vec<Pattern>>,
    /// Member → the groups it belongs to.
    groups_of: HashMap<Pattern, Vec<usize>>,
    /// Each set's distinct (language, member) pairs.
    crossings: Vec<Vec<(String, Term)>>,
    /// Member (in any language) → the sets it belongs to.
    crossings_of: HashMap<Pattern, Vec<usize>>,
}

impl Synonyms {
    /// Each string is a term or phrase as a subscriber would write it, without
    /// quotes (`"green card"`, `"H-1B"`, `"deport*"`). Fails on an empty group
    /// and on a member with no letters or digits or a misplaced `*`.
    pub fn new(groups: Vec<Vec<String>>) -> Result<Synonyms, String> {
        let mut synonyms = Synonyms::default();
        for (number, group) in groups.iter().enumerate() {
            if group.is_empty() {
                return Err(format!("synonym group {} is empty", number + 1));
            }
            let mut members: Vec<Pattern> = Vec::with_capacity(group.len());
            for member in group {
                let pattern = member_pattern(member)?;
                if !members.contains(&pattern) {
                    members.push(pattern);
                }
            }
            let index = synonyms.groups.len();
            for member in &members {
                synonyms
                    .groups_of
                    .entry(member.clone())
                    .or_default()
                    .push(index);
            }
            synonyms.groups.push(members);
        }
        Ok(synonyms)
    }

    /// Whether there are no groups.
    pub fn is_empty(&self) -> bool {
        self.groups.is_empty()
    }

    /// These synonyms with `sets` of terms across languages, each a list of
    /// (language code, term or phrase as a subscriber would write it). Fails
    /// on an empty set, a bad language code and on members as [`Synonyms::new`].
    pub fn with_crossings(mut self, sets: Vec<Vec<(String, String)>>) -> Result<Synonyms, String> {
        for (number, set) in sets.iter().enumerate() {
            if set.is_empty() {
                return Err(format!("language set {} is empty", number + 1));
            }
            let mut members: Vec<(String, Term)> = Vec::with_capacity(set.len());
            for (lang, member) in set {
                let code = primary_subtag(lang)
                    .ok_or_else(|| format!("{lang:?} is not a language code (es, en, fr…)"))?;
                if member.chars().any(is_quote) {
                    return Err(format!(
                        "write {member:?} without quotes: each member is a word or a phrase \
                         as it is"
                    ));
                }
                let pattern = member_pattern(member)?;
                let text = member.split_whitespace().collect::<Vec<_>>().join(" ");
                // A phrase, or anything a query would read as more than a word (a
                // field, a group, an exclusion), is written quoted: the crossed query's
                // text then reads back as the same query.
                let plain = !text.chars().any(|c| {
                    c.is_whitespace() || is_quote(c) || matches!(c, '(' | ')' | '|' | ':')
                }) && !text.starts_with(['-', '−', '–', '—']);
                let term = Term {
                    quoted: !plain,
                    text: text.to_lowercase(),
                    title_only: false,
                    pattern,
                };
                if !members
                    .iter()
                    .any(|(l, t)| *l == code && t.pattern == term.pattern)
                {
                    members.push((code, term));
                }
            }
            let index = self.crossings.len();
            for (_, term) in &members {
                let sets = self.crossings_of.entry(term.pattern.clone()).or_default();
                if !sets.contains(&index) {
                    sets.push(index);
                }
            }
            self.crossings.push(members);
        }
        Ok(self)
    }

    /// The number of sets across languages.
    pub fn crossing_sets(&self) -> usize {
        self.crossings.len()
    }

    /// `pattern` itself, then the other members of every group it is in.
    fn alternatives<'a>(&'a self, pattern: &'a Pattern) -> Vec<&'a Pattern> {
        let mut all = vec![pattern];
        for &group in self.groups_of.get(pattern).into_iter().flatten() {
            for member in self.groups.get(group).into_iter().flatten() {
                if !all.contains(&member) {
                    all.push(member);
                }
            }
        }
        all
    }
}

/// The pattern of a synonym written as a subscriber would write a term.
fn member_pattern(member: &str) -> Result<Pattern, String> {
    let chars: Vec<char> = member.chars().collect();
    if chars.len() > MAX_QUERY_CHARS {
        return Err(format!(
            "synonym {:?}… is longer than {MAX_QUERY_CHARS} characters",
            chars.iter().take(20).collect::<String>()
        ));
    }
    let words = split_words(&chars, 1).map_err(|e| format!("synonym {member:?}: {}", e.reason))?;
    if words.is_empty() {
        return Err(format!("synonym {member:?} has no letters or digits"));
    }
    Ok(pattern_of(words))
}

/// `node` with each text term that is a member of a set across languages
/// replaced by: the term itself (anywhere, as always) OR each other member
/// of its sets in an item of that member's language.
fn cross(node: &Node, synonyms: &Synonyms) -> Node {
    match node {
        Node::Term(term) => {
            let mut alternatives = vec![Node::Term(term.clone())];
            for &set in synonyms
                .crossings_of
                .get(&term.pattern)
                .into_iter()
                .flatten()
            {
                for (lang, member) in synonyms.crossings.get(set).into_iter().flatten() {
                    if member.pattern == term.pattern {
                        continue;
                    }
                    let member = Term {
                        title_only: term.title_only,
                        ..member.clone()
                    };
                    let alternative = Node::And(vec![Node::Term(member), Node::Lang(lang.clone())]);
                    if !alternatives.contains(&alternative) {
                        alternatives.push(alternative);
                    }
                }
            }
            if alternatives.len() == 1 {
                node.clone()
            } else {
                Node::Or(alternatives)
            }
        }
        Node::Not(inner) => Node::Not(Box::new(cross(inner, synonyms))),
        Node::And(parts) => Node::And(parts.iter().map(|p| cross(p, synonyms)).collect()),
        Node::Or(parts) => {
            // Members of one set named side by side bring the set once.
            let mut flat: Vec<Node> = Vec::with_capacity(parts.len());
            for part in parts {
                let alternatives = match cross(part, synonyms) {
                    Node::Or(inner) => inner,
                    other => vec![other],
                };
                for alternative in alternatives {
                    if !flat.contains(&alternative) {
                        flat.push(alternative);
                    }
                }
            }
            if flat.len() == 1 {
                flat.remove(0)
            } else {
                Node::Or(flat)
            }
        }
        Node::Feed(_) | Node::Tag(_) | Node::Lang(_) => node.clone(),
    }
}

// ---------------------------------------------------------------------------
// Lexer
// ---------------------------------------------------------------------------

#[derive(Debug)]
enum TokenKind {
    /// A term, `feed:` or `tag:`.
    Leaf(Node),
    Or,
    /// `dash` tells `-` from `NOT`, for error messages.
    Not {
        dash: bool,
    },
    Open,
    Close,
}

#[derive(Debug)]
struct Token {
    kind: TokenKind,
    /// 1-based column of the token's first character.
    column: usize,
}

fn is_space(c: char) -> bool {
    c.is_whitespace() || c.is_control()
}

/// Straight and curly double quotes; phone keyboards often insert the latter.
fn is_quote(c: char) -> bool {
    matches!(c, '"' | '“' | '”' | '„')
}

fn ends_word(c: char) -> bool {
    is_space(c) || is_quote(c) || matches!(c, '(' | ')' | '|')
}

fn lex(chars: &[char]) -> Result<Vec<Token>, QueryError> {
    let mut tokens = Vec::new();
    let mut i = 0;
    while let Some(&c) = chars.get(i) {
        let column = i + 1;
        let (kind, len) = match c {
            _ if is_space(c) => {
                i += 1;
                continue;
            }
            '(' => (TokenKind::Open, 1),
            ')' => (TokenKind::Close, 1),
            '|' => (TokenKind::Or, 1),
            _ if is_quote(c) => {
                let (content, len) = quoted(chars, i)?;
                (TokenKind::Leaf(phrase(content, column, false)?), len)
            }
            // Words swallow their inner dashes, so this one starts a token.
            '-' => match chars.get(i + 1) {
                Some(&next) if !ends_word(next) || next == '(' || is_quote(next) => {
                    (TokenKind::Not { dash: true }, 1)
                }
                _ => {
                    return Err(QueryError::new(
                        column,
                        "'-' needs a term right after it, as in -tourist",
                    ));
                }
            },
            // The minus sign, en and em dash that phones and word processors make of a
            // typed "-" exclude as it does; standing alone (a headline's "USCIS – H-1B")
            // they are no term.
            '\u{2212}' | '\u{2013}' | '\u{2014}'
                if chars
                    .get(i + 1)
                    .is_some_and(|&next| !ends_word(next) || next == '(' || is_quote(next)) =>
            {
                (TokenKind::Not { dash: true }, 1)
            }
            _ => {
                let rest = &chars[i..];
                let len = rest
                    .iter()
                    .position(|&c| ends_word(c))
                    .unwrap_or(rest.len());
                let raw = &rest[..len];
                match raw {
                    ['O', 'R'] => (TokenKind::Or, len),
                    ['N', 'O', 'T'] => (TokenKind::Not { dash: false }, len),
                    _ => match field_colon(raw) {
                        Some(colon) => {
                            let (leaf, len) = field(chars, i, colon, len)?;
                            (TokenKind::Leaf(leaf), len)
                        }
                        None => (TokenKind::Leaf(word(raw, column, false)?), len),
                    },
                }
            }
        };
        tokens.push(Token { kind, column });
        i += len;
    }
    Ok(tokens)
}

/// The content of the quoted phrase opening at `chars[open]`, and its length
/// with both quotes.
fn quoted(chars: &[char], open: usize) -> Result<(&[char], usize), QueryError> {
    let content = chars.get(open + 1..).unwrap_or_default();
    match content.iter().position(|&q| is_quote(q)) {
        Some(len) => Ok((&content[..len], len + 2)),
        None => Err(QueryError::new(open + 1, "unclosed quote")),
    }
}

/// A quoted phrase whose opening quote is at `quote_column`.
fn phrase(content: &[char], quote_column: usize, title_only: bool) -> Result<Node, QueryError> {
    let words = split_words(content, quote_column + 1)?;
    if words.is_empty() {
        return Err(QueryError::new(quote_column, "empty phrase"));
    }
    let raw = content.iter().collect::<String>().to_lowercase();
    Ok(Node::Term(Term {
        text: raw.split_whitespace().collect::<Vec<_>>().join(" "),
        quoted: true,
        title_only,
        pattern: pattern_of(words),
    }))
}

/// An unquoted word starting at `column`.
fn word(raw: &[char], column: usize, title_only: bool) -> Result<Node, QueryError> {
    let text: String = raw.iter().collect();
    let words = split_words(raw, column)?;
    if words.is_empty() {
        return Err(QueryError::new(
            column,
            format!("{text:?} has no letters or digits to match"),
        ));
    }
    Ok(Node::Term(Term {
        text: text.to_lowercase(),
        quoted: false,
        title_only,
        pattern: pattern_of(words),
    }))
}

/// Where the colon is, when the word `raw` starts with a field name: ASCII
/// letters, then `:`.
fn field_colon(raw: &[char]) -> Option<usize> {
    let colon = raw.iter().position(|&c| c == ':')?;
    (colon > 0 && raw[..colon].iter().all(char::is_ascii_alphabetic)).then_some(colon)
}

#[derive(Clone, Copy)]
enum FieldName {
    Title,
    Feed,
    Tag,
    Lang,
}

/// Lexes `name:value` or `name:"value"` for the word `chars[start..start +
/// word_len]`, whose colon is at `start + colon`. Returns the leaf and the
/// number of characters it takes.
fn field(
    chars: &[char],
    start: usize,
    colon: usize,
    word_len: usize,
) -> Result<(Node, usize), QueryError> {
    let column = start + 1;
    let name: String = chars[start..start + colon].iter().collect();
    let (field, example) = match name.to_ascii_lowercase().as_str() {
        "title" => (FieldName::Title, "title:USCIS"),
        "feed" => (FieldName::Feed, "feed:uscis-news"),
        "tag" => (FieldName::Tag, "tag:official"),
        "lang" => (FieldName::Lang, "lang:es"),
        _ => {
            return Err(QueryError::new(
                column,
                format!("unknown field `{name}` (use title:, feed:, tag: or lang:)"),
            ));
        }
    };
    let value = &chars[start + colon + 1..start + word_len];
    let value_column = column + colon + 1;
    if !value.is_empty() {
        let leaf = match field {
            FieldName::Title => word(value, value_column, true)?,
            FieldName::Feed => source(value, value_column, column, true)?,
            FieldName::Tag => source(value, value_column, column, false)?,
            FieldName::Lang => language(value, value_column)?,
        };
        return Ok((leaf, word_len));
    }
    let open = start + word_len;
    if !chars.get(open).is_some_and(|&c| is_quote(c)) {
        return Err(QueryError::new(
            column,
            format!(
                "`{}:` needs a word or a quoted phrase right after it, as in {example}",
                name.to_ascii_lowercase()
            ),
        ));
    }
    let (content, quoted_len) = quoted(chars, open)?;
    let leaf = match field {
        FieldName::Title => phrase(content, open + 1, true)?,
        FieldName::Feed => source(content, open + 2, column, true)?,
        FieldName::Tag => source(content, open + 2, column, false)?,
        FieldName::Lang => language(content, open + 2)?,
    };
    Ok((leaf, word_len + quoted_len))
}

/// The primary subtag of a language tag, lowercased: `es` for `es-MX`, `EN_us` or
/// `es`; `None` unless it is two or three ASCII letters. Items' languages and `lang:`
/// are compared in this form.
pub fn primary_subtag(tag: &str) -> Option<String> {
    let primary = tag.trim().split(['-', '_']).next()?;
    ((2..=3).contains(&primary.len()) && primary.bytes().all(|b| b.is_ascii_alphabetic()))
        .then(|| primary.to_ascii_lowercase())
}

/// The leaf for `lang:` with the code `value`, whose first character is at
/// `value_column`.
fn language(value: &[char], value_column: usize) -> Result<Node, QueryError> {
    let raw: String = value.iter().collect();
    primary_subtag(raw.trim()).map(Node::Lang).ok_or_else(|| {
        QueryError::new(
            value_column,
            format!(
                "`lang:` takes a language code such as es, en, fr or pt, not {:?}",
                raw.chars().take(20).collect::<String>()
            ),
        )
    })
}

/// The leaf for `feed:` (or else `tag:`) with the name `value`, whose first
/// character is at `value_column`; `column` is where the field starts.
fn source(
    value: &[char],
    value_column: usize,
    column: usize,
    feed: bool,
) -> Result<Node, QueryError> {
    let label = if feed { "feed" } else { "tag" };
    if let Some(star) = value.iter().position(|&c| c == '*') {
        return Err(QueryError::new(
            value_column + star,
            format!("`{label}:` takes a whole name; '*' cannot be used in it"),
        ));
    }
    let raw = value.iter().collect::<String>().to_lowercase();
    let name = raw.split_whitespace().collect::<Vec<_>>().join(" ");
    if name.is_empty() {
        return Err(QueryError::new(column, format!("`{label}:` needs a name")));
    }
    Ok(if feed {
        Node::Feed(name)
    } else {
        Node::Tag(name)
    })
}

/// Folds the characters of a word or phrase into the words to match
/// consecutively, handling a trailing `*` on each word. `first_column` is the
/// column of `chars[0]`.
fn split_words(chars: &[char], first_column: usize) -> Result<Vec<Word>, QueryError> {
    let mut words = Vec::new();
    let mut current = String::new();
    for (i, &c) in chars.iter().enumerate() {
        if c == '*' {
            let column = first_column + i;
            if current.is_empty() {
                return Err(QueryError::new(
                    column,
                    "'*' needs a word before it, as in deport*",
                ));
            }
            if chars
                .get(i + 1)
                .is_some_and(|&next| next == '*' || folds_to_word_char(next))
            {
                return Err(QueryError::new(
                    column,
                    "'*' can only end a word, as in deport*",
                ));
            }
            words.push(Word {
                text: mem::take(&mut current),
                prefix: true,
            });
        } else {
            fold_char(c, |f| {
                if f.is_alphanumeric() {
                    current.push(f);
                } else if !current.is_empty() {
                    words.push(Word {
                        text: mem::take(&mut current),
                        prefix: false,
                    });
                }
            });
        }
    }
    if !current.is_empty() {
        words.push(Word {
            text: current,
            prefix: false,
        });
    }
    Ok(words)
}

// ---------------------------------------------------------------------------
// Parser
// ---------------------------------------------------------------------------

/// Recursive descent over the tokens; one method per grammar rule.
struct Parser {
    tokens: std::iter::Peekable<std::vec::IntoIter<Token>>,
    /// Column just past the input, for errors at its end.
    end_column: usize,
    /// Current nesting of parentheses and negations.
    depth: usize,
    /// Column of the first `NOT`/`-`, to blame for queries that match everything.
    first_not: Option<usize>,
}

impl Parser {
    /// Whether the next token can begin an operand of AND/OR.
    fn at_operand(&mut self) -> bool {
        matches!(
            self.tokens.peek(),
            Some(Token {
                kind: TokenKind::Leaf(_) | TokenKind::Not { .. } | TokenKind::Open,
                ..
            })
        )
    }

    fn parse_or(&mut self) -> Result<Node, QueryError> {
        let mut alternatives = vec![self.parse_and()?];
        while let Some(token) = self.tokens.next_if(|t| matches!(t.kind, TokenKind::Or)) {
            if !self.at_operand() {
                return Err(QueryError::new(
                    token.column,
                    "OR needs a term on both sides",
                ));
            }
            alternatives.push(self.parse_and()?);
        }
        Ok(Node::or(alternatives))
    }

    fn parse_and(&mut self) -> Result<Node, QueryError> {
        let mut parts = vec![self.parse_unary()?];
        while self.at_operand() {
            parts.push(self.parse_unary()?);
        }
        Ok(Node::and(parts))
    }

    fn parse_unary(&mut self) -> Result<Node, QueryError> {
        let Some(token) = self.tokens.next() else {
            // Callers check for an operand first; this is only a safety net.
            return Err(QueryError::new(self.end_column, "unexpected end of query"));
        };
        let column = token.column;
        match token.kind {
            TokenKind::Leaf(leaf) => Ok(leaf),
            TokenKind::Not { dash } => {
                self.first_not.get_or_insert(column);
                if !self.at_operand() {
                    let reason = if dash {
                        "'-' needs a term right after it, as in -tourist"
                    } else {
                        "NOT needs a term after it"
                    };
                    return Err(QueryError::new(column, reason));
                }
                self.enter(column)?;
                let inner = self.parse_unary()?;
                self.depth -= 1;
                Ok(Node::Not(Box::new(inner)))
            }
            TokenKind::Open => {
                self.enter(column)?;
                match self.tokens.peek() {
                    None => return Err(QueryError::new(column, "unclosed '('")),
                    Some(Token {
                        kind: TokenKind::Close,
                        ..
                    }) => return Err(QueryError::new(column, "empty parentheses")),
                    Some(_) => {}
                }
                let inner = self.parse_or()?;
                if self
                    .tokens
                    .next_if(|t| matches!(t.kind, TokenKind::Close))
                    .is_none()
                {
                    return Err(QueryError::new(column, "unclosed '('"));
                }
                self.depth -= 1;
                Ok(inner)
            }
            TokenKind::Or => Err(QueryError::new(column, "OR needs a term on both sides")),
            TokenKind::Close => Err(QueryError::new(
                column,
                "unexpected ')' without a matching '('",
            )),
        }
    }

    /// Enters one more level of nesting, refusing to go past [`MAX_NESTING`].
    fn enter(&mut self, column: usize) -> Result<(), QueryError> {
        self.depth += 1;
        if self.depth > MAX_NESTING {
            return Err(QueryError::new(
                column,
                format!("too deeply nested (more than {MAX_NESTING} levels of parentheses or NOT)"),
            ));
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------
// Matcher
// ---------------------------------------------------------------------------

/// All subscriptions compiled together (see "Many subscriptions" in the
/// module docs).
#[derive(Debug, Clone, Default)]
pub struct Matcher {
    /// The number of subscriptions given to [`Matcher::new`].
    len: usize,
    /// The compiled queries (see [`Op`]), grouped by key: each key's range
    /// holds, one after the other, every query filed under that key. A query
    /// with several keys (an OR) is copied under each: reading a key's
    /// candidates then is one sweep through memory, with no jumping around.
    postings: Vec<Op>,
    /// Atom → the range of `postings` with the queries that cannot match
    /// unless it is present.
    singles: Vec<(u32, u32)>,
    /// [`pair_key`] → the range of `postings` with the queries that cannot
    /// match unless both atoms are present.
    pairs: HashMap<u64, (u32, u32), BuildHasherDefault<PairHasher>>,
    /// Atom → whether it is the smaller atom of a key in `pairs`.
    paired: Vec<bool>,
    /// The range of `postings` with the queries without a key; always
    /// evaluated. Valid queries always have one.
    unkeyed: (u32, u32),
    /// `terms[q]`: the positive text terms of query `q`, for explaining.
    terms: Vec<Vec<CompiledTerm>>,
    /// `shared[q]`: the range of `ids` with the subscriptions of query `q`,
    /// when several share it.
    shared: Vec<(u32, u32)>,
    ids: Vec<i64>,
    /// The atoms of text terms that have several (a pattern and its synonyms).
    term_atoms: Vec<u32>,
    /// Everything a query can ask of a document; indexes are atom ids.
    atoms: Vec<Atom>,
    /// Over the first segments of the text atoms (`firsts`), in order.
    automaton: Option<AhoCorasick>,
    /// A first segment and the text atoms starting with it.
    firsts: Vec<(String, Vec<u32>)>,
    /// Feed id → atom.
    feeds: HashMap<String, u32>,
    /// Tag → atom.
    tags: HashMap<String, u32>,
    /// Language code → atom.
    langs: HashMap<String, u32>,
}

/// Something a query asks of a document.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Atom {
    Text(Pattern),
    Feed(String),
    Tag(String),
    Lang(String),
}

/// A query on its way into the matcher.
struct Draft {
    /// Its expression, positions counted from its start.
    ops: Vec<Op>,
    terms: Vec<CompiledTerm>,
    ids: Vec<i64>,
}

#[derive(Debug, Clone)]
struct CompiledTerm {
    name: String,
    title_only: bool,
    /// The term's pattern and its synonyms.
    atoms: Box<[u32]>,
    /// Source atoms a document needs for the term to explain a match (see
    /// `Node::visit_gated_terms`).
    gates: Box<[u32]>,
}

/// The atom of a gate: a `feed:`, `tag:` or `lang:` leaf.
fn gate_atom(gate: &Node) -> Atom {
    match gate {
        Node::Feed(id) => Atom::Feed(id.clone()),
        Node::Tag(tag) => Atom::Tag(tag.clone()),
        Node::Lang(code) => Atom::Lang(code.clone()),
        // Only those three are gates.
        _ => Atom::Lang(String::new()),
    }
}

/// One node of a compiled query. A query is an [`OpKind::Query`] followed by
/// its expression in prefix order, each node followed by its operands, so
/// that evaluating a query and finding its subscription reads one short run
/// of memory: with many subscriptions, cache misses and not comparisons are
/// what matching costs.
#[derive(Debug, Clone, Copy)]
struct Op {
    kind: OpKind,
    /// The number of ops of this node and its operands.
    len: u32,
}

#[derive(Debug, Clone, Copy)]
enum OpKind {
    /// Starts query number `q`. Its subscription is `id`, or if `shared`,
    /// those listed in `Matcher::shared[q]`. (Two halves keep `Op` small: an
    /// `i64` would double its alignment.) Its expression follows, unless the
    /// key it is filed under is `enough` for it to match.
    Query {
        q: u32,
        shared: bool,
        enough: bool,
        id: [u32; 2],
    },
    /// A text term with a single atom.
    Text {
        atom: u32,
        title_only: bool,
    },
    /// A text term with synonyms: any of `Matcher::term_atoms[start..end]`.
    TextAny {
        start: u32,
        end: u32,
        title_only: bool,
    },
    /// A feed or tag atom.
    Source(u32),
    Not,
    And,
    Or,
}

/// Where an atom is present in a document: bits of `Presence.1`.
const IN_TITLE: u8 = 1;
const IN_BODY: u8 = 2;
const IN_SOURCE: u8 = 4;

/// The atoms present in a document and where, sorted by atom, each once.
type Presence = Vec<(u32, u8)>;

/// One occurrence of a text atom: tokens `first..=last`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Found {
    atom: u32,
    first: usize,
    last: usize,
}

fn where_present(present: &Presence, atom: u32) -> u8 {
    present
        .binary_search_by_key(&atom, |&(a, _)| a)
        .map_or(0, |i| present[i].1)
}

/// Above this many distinct first segments the automaton is an NFA: a DFA
/// would be faster still, but its memory grows with states × byte classes
/// (about 15 MB at 20,000 words, against 1 MB for the NFA).
const MAX_DFA_PATTERNS: usize = 20_000;

impl Matcher {
    /// Compiles the subscriptions, with `synonyms` applied to their terms. An
    /// id given several times matches when any of its queries does.
    pub fn new(subscriptions: Vec<(i64, Query)>, synonyms: &Synonyms) -> Matcher {
        let mut matcher = Matcher {
            len: subscriptions.len(),
            ..Matcher::default()
        };
        let mut atom_ids: HashMap<Atom, u32> = HashMap::new();
        let mut by_text: HashMap<String, usize> = HashMap::new();
        let mut drafts: Vec<Draft> = Vec::new();
        for (id, query) in subscriptions {
            // Display is canonical: equal text, equal query.
            let text = query.to_string();
            if let Some(&known) = by_text.get(&text)
                && let Some(draft) = drafts.get_mut(known)
            {
                draft.ids.push(id);
                continue;
            }
            let mut intern = |atom: Atom| -> u32 {
                *atom_ids.entry(atom).or_insert_with_key(|atom| {
                    matcher.atoms.push(atom.clone());
                    (matcher.atoms.len() - 1) as u32
                })
            };
            let mut ops = Vec::new();
            compile(
                &query.root,
                synonyms,
                &mut intern,
                &mut ops,
                &mut matcher.term_atoms,
            );
            let mut terms: Vec<CompiledTerm> = Vec::new();
            query
                .root
                .visit_gated_terms(true, &mut Vec::new(), &mut |term, positive, gates| {
                    let name = term.name();
                    let gates: Box<[u32]> = gates.iter().map(|g| intern(gate_atom(g))).collect();
                    if positive && !terms.iter().any(|t| t.name == name && t.gates == gates) {
                        terms.push(CompiledTerm {
                            name,
                            title_only: term.title_only,
                            atoms: text_atoms(term, synonyms, &mut intern).into(),
                            gates,
                        });
                    }
                });
            by_text.insert(text, drafts.len());
            drafts.push(Draft {
                ops,
                terms,
                ids: vec![id],
            });
        }
        matcher.build_search();
        matcher.build(drafts);
        matcher
    }

    /// Prepares the per-document search: the automaton and the source maps.
    fn build_search(&mut self) {
        let mut first_ids: HashMap<&str, usize> = HashMap::new();
        let mut firsts: Vec<(String, Vec<u32>)> = Vec::new();
        for (id, atom) in self.atoms.iter().enumerate() {
            let id = id as u32;
            match atom {
                Atom::Text(pattern) => {
                    let Some(first) = pattern.first() else {
                        continue;
                    };
                    let slot = *first_ids.entry(&first.text).or_insert_with(|| {
                        firsts.push((first.text.clone(), Vec::new()));
                        firsts.len() - 1
                    });
                    if let Some((_, atoms)) = firsts.get_mut(slot) {
                        atoms.push(id);
                    }
                }
                Atom::Feed(name) => {
                    self.feeds.insert(name.clone(), id);
                }
                Atom::Tag(name) => {
                    self.tags.insert(name.clone(), id);
                }
                Atom::Lang(code) => {
                    self.langs.insert(code.clone(), id);
                }
            }
        }
        // Every match is wanted, overlapping ones included: the tokens decide.
        // Should the automaton fail to build, `scan` searches term by term.
        let kind = (firsts.len() <= MAX_DFA_PATTERNS).then_some(AhoCorasickKind::DFA);
        self.automaton = AhoCorasick::builder()
            .match_kind(MatchKind::Standard)
            .kind(kind)
            // Patterns are short words and this many of them would keep a
            // prefilter busy with false starts; the DFA alone is faster.
            .prefilter(false)
            .build(firsts.iter().map(|(text, _)| text))
            .ok();
        self.firsts = firsts;
    }

    /// Files every query under keys: atoms that a document must contain for
    /// the query to match.
    fn build(&mut self, drafts: Vec<Draft>) {
        let shares: Vec<f64> = self.atoms.iter().map(rarity).collect();
        let rarity = |atom: u32| shares.get(atom as usize).copied().unwrap_or(1.0);
        let mut singles: Vec<Vec<Op>> = vec![Vec::new(); self.atoms.len()];
        let mut pairs: HashMap<u64, Vec<Op>> = HashMap::new();
        let mut unkeyed: Vec<Op> = Vec::new();
        self.paired = vec![false; self.atoms.len()];
        for (q, draft) in drafts.into_iter().enumerate() {
            let expr = Expr {
                ops: &draft.ops,
                term_atoms: &self.term_atoms,
            };
            let keys = cover(expr, 0, true, &rarity);
            let id = match draft.ids[..] {
                [id] => id,
                _ => 0,
            };
            let start = self.ids.len() as u32;
            if draft.ids.len() > 1 {
                self.ids.extend(&draft.ids);
            }
            self.shared.push((start, self.ids.len() as u32));
            self.terms.push(draft.terms);
            // Without negations, more atoms never turn a match into a miss:
            // a key that matches on its own is enough.
            let monotone = !draft.ops.iter().any(|op| matches!(op.kind, OpKind::Not));
            let enough = |(a, b): Key| {
                let mut present = vec![(a, IN_BODY | IN_SOURCE), (b, IN_BODY | IN_SOURCE)];
                present.dedup();
                monotone && expr.eval(0, &present)
            };
            let file = |list: &mut Vec<Op>, enough: bool| {
                list.push(Op {
                    kind: OpKind::Query {
                        q: q as u32,
                        shared: draft.ids.len() > 1,
                        enough,
                        // The two halves of the id, bit for bit.
                        id: [id as u32, (id >> 32) as u32],
                    },
                    len: if enough {
                        1
                    } else {
                        draft.ops.len() as u32 + 1
                    },
                });
                if !enough {
                    list.extend(&draft.ops);
                }
            };
            let Some(keys) = keys else {
                file(&mut unkeyed, false);
                continue;
            };
            for key in keys {
                let (a, b) = key;
                if a == b {
                    if let Some(list) = singles.get_mut(a as usize) {
                        file(list, enough(key));
                    }
                } else {
                    file(pairs.entry(pair_key(a, b)).or_default(), enough(key));
                    if let Some(paired) = self.paired.get_mut(a as usize) {
                        *paired = true;
                    }
                }
            }
        }
        let mut post = |list: Vec<Op>| {
            let start = self.postings.len() as u32;
            self.postings.extend(list);
            (start, self.postings.len() as u32)
        };
        self.unkeyed = post(unkeyed);
        self.singles = singles.into_iter().map(&mut post).collect();
        self.pairs = pairs
            .into_iter()
            .map(|(key, list)| (key, post(list)))
            .collect();
    }

    /// Every occurrence of every text atom in the document, sorted.
    fn scan(&self, doc: &Document) -> Vec<Found> {
        let mut found = Vec::with_capacity(32);
        let mut try_atoms = |token: usize, atoms: &[u32]| {
            for &atom in atoms {
                if let Some(Atom::Text(pattern)) = self.atoms.get(atom as usize)
                    && let Some(last) = doc.match_at(token, pattern)
                {
                    found.push(Found {
                        atom,
                        first: token,
                        last,
                    });
                }
            }
        };
        let matches = self
            .automaton
            .as_ref()
            .and_then(|ac| ac.try_find_overlapping_iter(doc.squashed.as_str()).ok());
        match matches {
            Some(matches) => {
                for m in matches {
                    if let Some(token) = doc.token_starting_at(m.start())
                        && let Some((_, atoms)) = self.firsts.get(m.pattern().as_usize())
                    {
                        try_atoms(token, atoms);
                    }
                }
            }
            None => {
                for (first, atoms) in &self.firsts {
                    let pattern = [Segment {
                        text: first.clone(),
                        prefix: true,
                    }];
                    for (token, _) in doc.occurrences(&pattern, false) {
                        try_atoms(token, atoms);
                    }
                }
            }
        }
        found.sort_unstable();
        found
    }

    /// Where each atom the document has is present.
    fn presence(&self, doc: &Document, found: &[Found]) -> Presence {
        let mut present: Presence = found
            .iter()
            .map(|f| {
                let place = match doc.field_of(f.first) {
                    Field::Title => IN_TITLE,
                    Field::Body => IN_BODY,
                };
                (f.atom, place)
            })
            .collect();
        if let Some(feed) = &doc.feed
            && let Some(&atom) = self.feeds.get(feed)
        {
            present.push((atom, IN_SOURCE));
        }
        for tag in &doc.tags {
            if let Some(&atom) = self.tags.get(tag) {
                present.push((atom, IN_SOURCE));
            }
        }
        if let Some(lang) = &doc.lang
            && let Some(&atom) = self.langs.get(lang)
        {
            present.push((atom, IN_SOURCE));
        }
        present.sort_unstable();
        // One entry per atom, with all the places it is in.
        present.dedup_by(|(atom, place), (kept, places)| {
            let same = atom == kept;
            if same {
                *places |= *place;
            }
            same
        });
        present
    }

    /// The ranges of `postings` with the queries that may match a document
    /// with these atoms. A query may be in several.
    fn candidates(&self, present: &Presence) -> Vec<(u32, u32)> {
        let mut ranges = Vec::with_capacity(present.len() * 2 + 1);
        ranges.push(self.unkeyed);
        for (i, &(a, _)) in present.iter().enumerate() {
            ranges.extend(self.singles.get(a as usize));
            if self.paired.get(a as usize).copied().unwrap_or(false) {
                for &(b, _) in present.get(i + 1..).unwrap_or_default() {
                    ranges.extend(self.pairs.get(&pair_key(a, b)));
                }
            }
        }
        ranges
    }

    /// Calls `matched` with the header of every matching query, once per key
    /// it was found under.
    fn for_each_match(&self, present: &Presence, mut matched: impl FnMut(u32, bool, i64)) {
        for (start, end) in self.candidates(present) {
            let Some(ops) = self.postings.get(start as usize..end as usize) else {
                continue;
            };
            let expr = Expr {
                ops,
                term_atoms: &self.term_atoms,
            };
            let mut at = 0;
            while let Some(op) = ops.get(at) {
                if let OpKind::Query {
                    q,
                    shared,
                    enough,
                    id,
                } = op.kind
                    && (enough || expr.eval(at + 1, present))
                {
                    matched(q, shared, i64::from(id[0]) | (i64::from(id[1]) << 32));
                }
                at += op.len.max(1) as usize;
            }
        }
    }

    /// The subscriptions of query `q`, when several share it.
    fn shared_ids(&self, q: u32) -> &[i64] {
        self.shared
            .get(q as usize)
            .and_then(|&(start, end)| self.ids.get(start as usize..end as usize))
            .unwrap_or_default()
    }

    /// Ids of the subscriptions whose query matches, ascending, each once.
    pub fn find_matches(&self, doc: &Document) -> Vec<i64> {
        let found = self.scan(doc);
        let present = self.presence(doc, &found);
        let mut ids: Vec<i64> = Vec::with_capacity(256);
        self.for_each_match(&present, |q, shared, id| {
            if shared {
                ids.extend(self.shared_ids(q));
            } else {
                ids.push(id);
            }
        });
        ids.sort_unstable();
        ids.dedup();
        ids
    }

    /// The matching subscriptions, ascending, each once, with their hits as
    /// [`Query::explain`] gives them (of all its matching queries, for an id
    /// given several).
    pub fn explain(&self, doc: &Document) -> Vec<(i64, Vec<Hit>)> {
        let found = self.scan(doc);
        let present = self.presence(doc, &found);
        let mut queries: Vec<(u32, bool, i64)> = Vec::new();
        self.for_each_match(&present, |q, shared, id| queries.push((q, shared, id)));
        queries.sort_unstable();
        queries.dedup();
        let mut explained: Vec<(i64, Vec<Hit>)> = Vec::new();
        for (q, shared, id) in queries {
            let mut hits = Vec::new();
            for term in self.terms.get(q as usize).into_iter().flatten() {
                let gated = term
                    .gates
                    .iter()
                    .any(|&gate| where_present(&present, gate) & IN_SOURCE == 0);
                if gated {
                    continue;
                }
                for &atom in &term.atoms {
                    let start = found.partition_point(|f| f.atom < atom);
                    let end = found.partition_point(|f| f.atom <= atom);
                    for f in found.get(start..end).unwrap_or_default() {
                        if !term.title_only || doc.field_of(f.first) == Field::Title {
                            hits.extend(doc.hit(&term.name, f.first, f.last));
                        }
                    }
                }
            }
            if shared {
                for &id in self.shared_ids(q) {
                    explained.push((id, hits.clone()));
                }
            } else {
                explained.push((id, hits));
            }
        }
        explained.sort_by_key(|(id, _)| *id);
        let mut merged: Vec<(i64, Vec<Hit>)> = Vec::with_capacity(explained.len());
        for (id, hits) in explained {
            match merged.last_mut() {
                Some((last, all)) if *last == id => all.extend(hits),
                _ => merged.push((id, hits)),
            }
        }
        for (_, hits) in &mut merged {
            *hits = arrange_hits(mem::take(hits));
        }
        merged
    }

    /// The number of subscriptions given to [`Matcher::new`].
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// The atoms of a text term: its pattern and its synonyms'.
fn text_atoms(term: &Term, synonyms: &Synonyms, intern: &mut impl FnMut(Atom) -> u32) -> Vec<u32> {
    synonyms
        .alternatives(&term.pattern)
        .into_iter()
        .map(|pattern| intern(Atom::Text(pattern.clone())))
        .collect()
}

/// Appends `node` to `ops` in prefix order.
fn compile(
    node: &Node,
    synonyms: &Synonyms,
    intern: &mut impl FnMut(Atom) -> u32,
    ops: &mut Vec<Op>,
    term_atoms: &mut Vec<u32>,
) {
    let at = ops.len();
    ops.push(Op {
        kind: OpKind::Not,
        len: 1,
    });
    let kind = match node {
        Node::Term(term) => match text_atoms(term, synonyms, intern)[..] {
            [atom] => OpKind::Text {
                atom,
                title_only: term.title_only,
            },
            ref atoms => {
                let start = term_atoms.len() as u32;
                term_atoms.extend(atoms);
                OpKind::TextAny {
                    start,
                    end: term_atoms.len() as u32,
                    title_only: term.title_only,
                }
            }
        },
        Node::Feed(id) => OpKind::Source(intern(Atom::Feed(id.clone()))),
        Node::Tag(tag) => OpKind::Source(intern(Atom::Tag(tag.clone()))),
        Node::Lang(code) => OpKind::Source(intern(Atom::Lang(code.clone()))),
        Node::Not(inner) => {
            compile(inner, synonyms, intern, ops, term_atoms);
            OpKind::Not
        }
        Node::And(parts) | Node::Or(parts) => {
            for part in parts {
                compile(part, synonyms, intern, ops, term_atoms);
            }
            if matches!(node, Node::And(_)) {
                OpKind::And
            } else {
                OpKind::Or
            }
        }
    };
    let len = (ops.len() - at) as u32;
    if let Some(op) = ops.get_mut(at) {
        *op = Op { kind, len };
    }
}

/// A guess at the share of items that contain an atom, to file queries under
/// their rarest atoms: short words are common, tags cover whole feeds.
fn rarity(atom: &Atom) -> f64 {
    match atom {
        Atom::Text(pattern) => {
            let len: usize = pattern.iter().map(|s| s.text.chars().count()).sum();
            let share = match len {
                0..=2 => 0.3,
                3..=4 => 0.15,
                _ => 0.08,
            };
            if pattern.iter().any(|s| s.prefix) {
                share * 1.5
            } else {
                share
            }
        }
        Atom::Feed(_) => 0.1,
        Atom::Tag(_) => 0.4,
        // Most items are in one or two languages.
        Atom::Lang(_) => 0.5,
    }
}

/// One or two atoms that must all be present; `(a, a)` is the single atom
/// `a`, and otherwise `a < b`.
type Key = (u32, u32);

/// Compiled queries, with what their ops refer to.
#[derive(Clone, Copy)]
struct Expr<'a> {
    ops: &'a [Op],
    term_atoms: &'a [u32],
}

impl Expr<'_> {
    /// Where the operands of `ops[at]` start.
    fn operands(self, at: usize) -> impl Iterator<Item = usize> {
        let end = at + self.ops.get(at).map_or(0, |op| op.len as usize);
        std::iter::successors(Some(at + 1), move |&child| {
            self.ops.get(child).map(|op| child + op.len.max(1) as usize)
        })
        .take_while(move |&child| child < end)
    }

    /// Evaluates the node at `ops[at]` for a document with these atoms.
    fn eval(self, at: usize, present: &Presence) -> bool {
        let Some(op) = self.ops.get(at) else {
            return false;
        };
        let wanted = |title_only: bool| {
            if title_only {
                IN_TITLE
            } else {
                IN_TITLE | IN_BODY
            }
        };
        match op.kind {
            OpKind::Query { .. } => self.eval(at + 1, present),
            OpKind::Text { atom, title_only } => {
                where_present(present, atom) & wanted(title_only) != 0
            }
            OpKind::TextAny {
                start,
                end,
                title_only,
            } => self
                .term_atoms
                .get(start as usize..end as usize)
                .unwrap_or_default()
                .iter()
                .any(|&a| where_present(present, a) & wanted(title_only) != 0),
            OpKind::Source(atom) => where_present(present, atom) != 0,
            OpKind::Not => !self.eval(at + 1, present),
            OpKind::And => self.operands(at).all(|child| self.eval(child, present)),
            OpKind::Or => self.operands(at).any(|child| self.eval(child, present)),
        }
    }
}

/// Keys such that whenever the expression at `ops[at]` evaluates to `want`,
/// the document has all atoms of at least one key; `None` if there are none.
/// A query that passes [`Query::parse`] does not match a document without
/// atoms, so it has keys.
fn cover(expr: Expr, at: usize, want: bool, rarity: &impl Fn(u32) -> f64) -> Option<Vec<Key>> {
    let op = expr.ops.get(at)?;
    let operands: Vec<usize> = expr.operands(at).collect();
    match op.kind {
        OpKind::Query { .. } => cover(expr, at + 1, want, rarity),
        OpKind::Text { atom, .. } | OpKind::Source(atom) => want.then(|| vec![(atom, atom)]),
        OpKind::TextAny { start, end, .. } => want.then(|| {
            let atoms = expr.term_atoms.get(start as usize..end as usize);
            atoms.unwrap_or_default().iter().map(|&a| (a, a)).collect()
        }),
        OpKind::Not => cover(expr, at + 1, !want, rarity),
        // Every operand must be `want`: any operand's keys will do; take the best.
        OpKind::And if want => cover_all(expr, &operands, want, rarity),
        OpKind::Or if !want => cover_all(expr, &operands, want, rarity),
        // Some operand is `want`: every one needs keys, and all of them count.
        OpKind::And | OpKind::Or => {
            let mut keys = Vec::new();
            for operand in operands {
                keys.extend(cover(expr, operand, want, rarity)?);
            }
            keys.sort_unstable();
            keys.dedup();
            Some(keys)
        }
    }
}

/// Keys for "every one of the `operands` is `want`": the cheapest of one
/// operand's keys or the pairwise combinations of two operands' keys.
fn cover_all(
    expr: Expr,
    operands: &[usize],
    want: bool,
    rarity: &impl Fn(u32) -> f64,
) -> Option<Vec<Key>> {
    /// Combining more keys than this is not worth its lookups.
    const MAX_KEYS: usize = 16;
    let cost = |keys: &[Key]| -> f64 {
        keys.iter()
            .map(|&(a, b)| {
                if a == b {
                    rarity(a)
                } else {
                    rarity(a) * rarity(b)
                }
            })
            .sum()
    };
    let mut covers: Vec<(f64, Vec<Key>)> = operands
        .iter()
        .filter_map(|&operand| cover(expr, operand, want, rarity))
        .map(|keys| (cost(&keys), keys))
        .collect();
    covers.sort_by(|x, y| x.0.total_cmp(&y.0));
    covers.truncate(6);
    let mut best = covers.first()?.clone();
    for (i, (_, left)) in covers.iter().enumerate() {
        for (_, right) in covers.iter().skip(i + 1) {
            if left.len() * right.len() > MAX_KEYS {
                continue;
            }
            let mut keys: Vec<Key> = Vec::with_capacity(left.len() * right.len());
            for &(a, b) in left {
                for &(c, d) in right {
                    // Keep the two rarest distinct atoms of the four.
                    let mut atoms = vec![a, b, c, d];
                    atoms.sort_unstable();
                    atoms.dedup();
                    atoms.sort_by(|&x, &y| rarity(x).total_cmp(&rarity(y)).then(x.cmp(&y)));
                    keys.push(match atoms[..] {
                        [x, y, ..] => (x.min(y), x.max(y)),
                        [x] => (x, x),
                        [] => continue,
                    });
                }
            }
            keys.sort_unstable();
            keys.dedup();
            let combined = cost(&keys);
            if combined < best.0 {
                best = (combined, keys);
            }
        }
    }
    Some(best.1)
}

fn pair_key(a: u32, b: u32) -> u64 {
    (u64::from(a) << 32) | u64::from(b)
}

/// Hashes the `u64` pair keys (SplitMix64's finalizer): much cheaper than the
/// default SipHash, and these keys come from our own numbering, not outside.
#[derive(Default)]
struct PairHasher(u64);

impl Hasher for PairHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(self.0 ^ u64::from(b));
        }
    }

    fn write_u64(&mut self, n: u64) {
        let mut x = n ^ self.0.rotate_left(17);
        x ^= x >> 30;
        x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
        x ^= x >> 27;
        x = x.wrapping_mul(0x94d0_49bb_1331_11eb);
        x ^= x >> 31;
        self.0 = x;
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(query: &str) -> Query {
        match Query::parse(query) {
            Ok(q) => q,
            Err(e) => panic!("{query:?} should parse, got: {e}"),
        }
    }

    #[test]
    fn unknown_scopes_are_those_no_configured_feed_can_satisfy() {
        // (name, query, feed ids, tags, unknown scopes as written back)
        type Names<'a> = &'a [&'a str];
        #[rustfmt::skip]
        let cases: &[(&str, &str, Names, Names, Names)] = &[
            ("no scopes", "asylum", &[], &[], &[]),
            ("known feed", "feed:uscis-news asylum", &["uscis-news"], &[], &[]),
            ("unknown feed", "feed:nope", &["uscis-news"], &[], &["feed:nope"]),
            ("known tag", "tag:official", &["a"], &["official"], &[]),
            ("unknown tag", "tag:nosuchtag", &["a"], &["official"], &["tag:nosuchtag"]),
            ("any case in the query", "feed:USCIS-News tag:Official", &["uscis-news"], &["official"], &[]),
            ("any case in the config", "feed:a tag:us", &[" A "], &["US"], &[]),
            ("a feed id is not a tag", "tag:a", &["a"], &[], &["tag:a"]),
            ("a tag is not a feed id", "feed:us", &["a"], &["us"], &["feed:us"]),
            ("excluded", "asylum -feed:gone", &["a"], &[], &["feed:gone"]),
            ("under OR", "feed:a OR tag:x", &["a"], &[], &["tag:x"]),
            ("each once, in order", "(tag:x OR feed:y) visa (tag:x OR feed:z)", &[], &[], &["tag:x", "feed:y", "feed:z"]),
            ("quoted name", "feed:\"odd name\" x", &["a"], &[], &["feed:\"odd name\""]),
        ];
        for (name, query, feeds, tags, expected) in cases {
            let unknown: Vec<String> = parse(query)
                .unknown_scopes(&KnownScopes::new(
                    feeds.iter().copied(),
                    tags.iter().copied(),
                ))
                .iter()
                .map(Scope::to_string)
                .collect();
            assert_eq!(unknown, *expected, "{name}");
        }
    }

    fn document(title: &str, body: &str, feed: &str, tags: &[&str]) -> Document {
        let doc = Document::new(title, body);
        if feed.is_empty() {
            doc
        } else {
            let tags: Vec<String> = tags.iter().map(|t| t.to_string()).collect();
            doc.with_source(feed, &tags)
        }
    }

    /// `title | body` with every hit written `[text](term)`.
    fn render(title: &str, body: &str, hits: &[Hit]) -> String {
        let mark = |text: &str, field: Field| {
            let mut out = String::new();
            let mut at = 0;
            for hit in hits.iter().filter(|h| h.field == field) {
                let (Some(before), Some(inside)) =
                    (text.get(at..hit.range.start), text.get(hit.range.clone()))
                else {
                    panic!("bad hit {hit:?} in {text:?}");
                };
                out.push_str(before);
                out.push_str(&format!("[{inside}]({})", hit.term));
                at = hit.range.end;
            }
            out.push_str(&text[at..]);
            out
        };
        format!(
            "{} | {}",
            mark(title, Field::Title),
            mark(body, Field::Body)
        )
    }

    /// (name, query, title, body, feed ("" for a document without source),
    /// tags, expected, the document with its hits marked as by `render`).
    type Case<'a> = (
        &'a str,
        &'a str,
        &'a str,
        &'a str,
        &'a str,
        &'a [&'a str],
        bool,
        &'a str,
    );

    /// Checks each case through `Query::explain` and through a `Matcher`,
    /// and through `Query::matches` when there are no synonyms.
    fn check_cases(cases: &[Case], synonyms: &Synonyms) {
        for &(name, query, title, body, feed, tags, expected, marked) in cases {
            let doc = document(title, body, feed, tags);
            let q = parse(query);
            let context = format!("case {name:?}: query {query:?}, title {title:?}, body {body:?}");
            if synonyms.is_empty() {
                assert_eq!(q.matches(&doc), expected, "{context}: matches");
            }
            let explained = q.explain(&doc, synonyms);
            assert_eq!(explained.is_some(), expected, "{context}: explain");
            let matcher = Matcher::new(vec![(1, q)], synonyms);
            let found = matcher.find_matches(&doc);
            assert_eq!(found == [1], expected, "{context}: matcher found {found:?}");
            let from_matcher = matcher.explain(&doc);
            if let Some(hits) = explained {
                assert_eq!(render(title, body, &hits), marked, "{context}: hits");
                assert_eq!(from_matcher, [(1, hits)], "{context}: matcher's hits");
            } else {
                assert!(from_matcher.is_empty(), "{context}: {from_matcher:?}");
            }
        }
    }

    #[test]
    fn matching_table() {
        #[rustfmt::skip]
        let cases: &[Case] = &[
            // Terms and implicit AND.
            ("term in title", "asylum", "Asylum claims rise", "", "", &[], true, "[Asylum](asylum) claims rise | "),
            ("term in body", "asylum", "News", "New asylum rules", "", &[], true, "News | New [asylum](asylum) rules"),
            ("term absent", "asylum", "News", "Nothing to see", "", &[], false, ""),
            ("and: both present", "asylum Texas", "Asylum cases in Texas", "", "", &[], true, "[Asylum](asylum) cases in [Texas](texas) | "),
            ("and: one missing", "asylum Texas", "Asylum cases in Ohio", "", "", &[], false, ""),
            ("and: across title and body", "asylum Texas", "Asylum", "in Texas", "", &[], true, "[Asylum](asylum) | in [Texas](texas)"),
            ("case-insensitive", "ASYLUM", "asylum", "", "", &[], true, "[asylum](asylum) | "),
            ("every occurrence", "visa", "Visa news", "a visa, another VISA", "", &[], true, "[Visa](visa) news | a [visa](visa), another [VISA](visa)"),
            // Whole words only.
            ("ICE not in police", "ICE", "", "police said", "", &[], false, ""),
            ("ICE not in ICEcream", "ICE", "ICEcream sales", "", "", &[], false, ""),
            ("ICE in ICE's", "ICE", "ICE's raids", "", "", &[], true, "[ICE](ice)'s raids | "),
            ("ICE as a word", "ICE", "", "agents from ICE arrived", "", &[], true, " | agents from [ICE](ice) arrived"),
            ("ICE as initials", "ICE", "", "I.C.E. agents", "", &[], true, " | [I.C.E](ice). agents"),
            ("OPT not in option", "OPT", "", "another option", "", &[], false, ""),
            ("OPT as a word", "OPT", "", "the OPT extension", "", &[], true, " | the [OPT](opt) extension"),
            ("EAD not in head", "EAD", "", "head of the agency", "", &[], false, ""),
            ("EAD as a word", "EAD", "", "EAD renewals", "", &[], true, " | [EAD](ead) renewals"),
            // Accents and Unicode folding.
            ("accent in text", "jose", "José Díaz", "", "", &[], true, "[José](jose) Díaz | "),
            ("accent in query", "José", "JOSE", "", "", &[], true, "[JOSE](josé) | "),
            ("decomposed accent in text", "jose", "Jose\u{301}", "", "", &[], true, "[Jose\u{301}](jose) | "),
            ("unicode uppercase", "ÉCOLE", "", "une école", "", &[], true, " | une [école](école)"),
            ("greek final sigma", "ΟΔΟΣ", "", "οδος", "", &[], true, " | [οδος](οδος)"),
            ("fullwidth letters", "ICE", "ＩＣＥ raids", "", "", &[], true, "[ＩＣＥ](ice) raids | "),
            ("ligature", "file", "", "ﬁle it", "", &[], true, " | [ﬁle](file) it"),
            ("accented decoy", "jose", "", "josé-maria", "", &[], true, " | [josé](jose)-maria"),
            ("one character, two tokens", "1 2", "", "½ cup", "", &[], true, " | [½](1) cup"),
            // Phrases.
            ("phrase", "\"green card\"", "", "How to get a green card", "", &[], true, " | How to get a [green card](green card)"),
            ("phrase wrong order", "\"green card\"", "", "the card is green", "", &[], false, ""),
            ("phrase words apart", "\"green card\"", "", "green and card", "", &[], false, ""),
            ("phrase ignores punctuation", "\"green card\"", "", "green, card", "", &[], true, " | [green, card](green card)"),
            ("phrase across title and body", "\"green card\"", "Get your green", "card now", "", &[], false, ""),
            ("phrase at end of title", "\"green card\"", "A green card", "later", "", &[], true, "A [green card](green card) | later"),
            ("curly quotes", "“green card”", "", "green card holders", "", &[], true, " | [green card](green card) holders"),
            ("curly quotes order", "“green card”", "", "card green", "", &[], false, ""),
            ("prefix in phrase", "\"deport* order\"", "", "a deportation order", "", &[], true, " | a [deportation order](deport* order)"),
            ("overlapping terms: longer kept", "\"green card\" card", "", "green card", "", &[], true, " | [green card](green card)"),
            // Compounds: hyphen and space insensitive, whole tokens only.
            ("H-1B matches H-1B", "H-1B", "", "new H-1B rules", "", &[], true, " | new [H-1B](h-1b) rules"),
            ("H-1B matches h 1b", "H-1B", "", "new h 1b rules", "", &[], true, " | new [h 1b](h-1b) rules"),
            ("H-1B matches H1B", "H-1B", "", "H1B visas", "", &[], true, " | [H1B](h-1b) visas"),
            ("H1B matches H-1B", "H1B", "", "new H-1B rules", "", &[], true, " | new [H-1B](h1b) rules"),
            ("h1b matches H 1B", "h1b", "H 1B cap", "", "", &[], true, "[H 1B](h1b) cap | "),
            ("H 1B unquoted is two terms", "H 1B", "", "h-1b", "", &[], true, " | [h](h)-[1b](1b)"),
            ("H-1B parts out of order", "H-1B", "", "1b h", "", &[], false, ""),
            ("H1B not in H1Bs", "H1B", "", "H1Bs", "", &[], false, ""),
            ("H1B* in H1Bs", "H1B*", "", "H1Bs", "", &[], true, " | [H1Bs](h1b*)"),
            ("inner dash is not NOT", "H-1B", "", "h", "", &[], false, ""),
            ("I-485", "I-485", "", "filed form I-485 today", "", &[], true, " | filed form [I-485](i-485) today"),
            ("I-485 matches I485", "I-485", "", "form I485", "", &[], true, " | form [I485](i-485)"),
            ("I485 matches I-485", "I485", "", "Form I-485.", "", &[], true, " | Form [I-485](i485)."),
            ("phrase matches hyphenated", "\"green card\"", "", "green-card holders", "", &[], true, " | [green-card](green card) holders"),
            ("phrase matches closed compound", "\"green card\"", "", "Greencard lottery", "", &[], true, " | [Greencard](green card) lottery"),
            ("closed compound matches phrase", "greencard", "", "a Green Card", "", &[], true, " | a [Green Card](greencard)"),
            ("hyphenated matches phrase", "green-card", "A green card", "", "", &[], true, "A [green card](green-card) | "),
            ("compound: whole tokens only", "greencard", "", "evergreen cards", "", &[], false, ""),
            ("compound: token must start", "\"green card\"", "", "agreen card", "", &[], false, ""),
            ("compound: not across fields", "greencard", "green", "card", "", &[], false, ""),
            ("colon in a word is text", "10:30", "", "at 10:30 today", "", &[], true, " | at [10:30](10:30) today"),
            ("colon word as compound", "10:30", "", "at 1030", "", &[], true, " | at [1030](10:30)"),
            ("colon word, apart", "10:30", "", "10 or 30", "", &[], false, ""),
            // OR.
            ("or: left", "H1B OR H-1B", "", "H1B lottery", "", &[], true, " | [H1B](h1b) lottery"),
            ("or: right", "H1B OR H-1B", "", "H-1B lottery", "", &[], true, " | [H-1B](h1b) lottery"),
            ("or: neither", "H1B OR H-1B", "", "L-1 visas", "", &[], false, ""),
            ("pipe as OR", "TPS | parole", "", "humanitarian parole", "", &[], true, " | humanitarian [parole](parole)"),
            ("pipe without spaces", "TPS|parole", "", "TPS extended", "", &[], true, " | [TPS](tps) extended"),
            ("lowercase or is a word", "visa or", "", "visa", "", &[], false, ""),
            ("lowercase or is a word, present", "visa or", "", "visa or not", "", &[], true, " | [visa](visa) [or](or) not"),
            // Precedence: a b OR c = (a AND b) OR c.
            ("precedence: only c", "asylum Texas OR parole", "", "parole", "", &[], true, " | [parole](parole)"),
            ("precedence: a and b", "asylum Texas OR parole", "", "asylum in Texas", "", &[], true, " | [asylum](asylum) in [Texas](texas)"),
            ("precedence: only a", "asylum Texas OR parole", "", "asylum", "", &[], false, ""),
            ("precedence: NOT tighter than AND", "visa -tourist student", "", "student visa", "", &[], true, " | [student](student) [visa](visa)"),
            // Exclusion.
            ("dash excludes", "visa -tourist", "", "tourist visa", "", &[], false, ""),
            ("dash: excluded word absent", "visa -tourist", "", "student visa", "", &[], true, " | student [visa](visa)"),
            ("NOT excludes", "visa NOT tourist", "", "tourist visa", "", &[], false, ""),
            ("NOT: excluded word absent", "visa NOT tourist", "", "student visa", "", &[], true, " | student [visa](visa)"),
            ("exclude in title too", "visa -tourist", "Tourist", "visa", "", &[], false, ""),
            ("exclude phrase", "visa -\"visa lottery\"", "", "the visa lottery", "", &[], false, ""),
            ("exclude phrase, words apart", "visa -\"visa lottery\"", "", "visa and lottery", "", &[], true, " | [visa](visa) and lottery"),
            ("exclude compound", "visa -H-1B", "", "H1B visa", "", &[], false, ""),
            ("NOT group", "visa NOT (lottery OR tourist)", "", "tourist visa", "", &[], false, ""),
            ("NOT group, none present", "visa NOT (lottery OR tourist)", "", "student visa", "", &[], true, " | student [visa](visa)"),
            ("dash group", "visa -(lottery OR tourist)", "", "visa lottery", "", &[], false, ""),
            ("double negation", "visa --tourist", "", "tourist visa", "", &[], true, " | [tourist](tourist) [visa](visa)"),
            // Prefix.
            ("prefix: longer word", "deport*", "", "deportation flights", "", &[], true, " | [deportation](deport*) flights"),
            ("prefix: past tense", "deport*", "Deported", "", "", &[], true, "[Deported](deport*) | "),
            ("prefix: the word itself", "deport*", "", "they deport people", "", &[], true, " | they [deport](deport*) people"),
            ("prefix: not infix", "deport*", "", "redeported", "", &[], false, ""),
            ("prefix: accent", "jos*", "", "Josélito", "", &[], true, " | [Josélito](jos*)"),
            ("prefix after hyphen", "I-48*", "", "form I-485", "", &[], true, " | form [I-485](i-48*)"),
            ("prefix of closed compound", "I-48*", "", "form I485", "", &[], true, " | form [I485](i-48*)"),
            ("prefix across tokens", "greenc*", "", "green cards", "", &[], true, " | [green cards](greenc*)"),
            ("prefix must start a token", "I-48*", "", "FI-485", "", &[], false, ""),
            // Nested parentheses.
            ("nested parens", "((TPS OR parole) (Venezuela OR Haiti)) -Cuba", "", "TPS for Haiti", "", &[], true, " | [TPS](tps) for [Haiti](haiti)"),
            ("nested parens: excluded", "((TPS OR parole) (Venezuela OR Haiti)) -Cuba", "", "TPS for Haiti and Cuba", "", &[], false, ""),
            ("nested parens: missing country", "((TPS OR parole) (Venezuela OR Haiti)) -Cuba", "", "TPS extended", "", &[], false, ""),
            ("group then term", "(TPS OR parole) Venezuela", "Parole", "for Venezuela", "", &[], true, "[Parole](parole) | for [Venezuela](venezuela)"),
            ("group then term, missing", "(TPS OR parole) Venezuela", "", "Venezuela", "", &[], false, ""),
            // title:
            ("title: in title", "title:USCIS", "USCIS updates fees", "", "", &[], true, "[USCIS](title:uscis) updates fees | "),
            ("title: only in body", "title:USCIS", "Fees", "USCIS updates fees", "", &[], false, ""),
            ("title: body not highlighted", "title:USCIS", "USCIS news", "from USCIS", "", &[], true, "[USCIS](title:uscis) news | from USCIS"),
            ("title: phrase", "title:\"green card\"", "Green-card backlog", "", "", &[], true, "[Green-card](title:green card) backlog | "),
            ("title: prefix", "title:deport*", "Deportations rise", "", "", &[], true, "[Deportations](title:deport*) rise | "),
            ("title: field name any case", "TITLE:uscis", "USCIS", "", "", &[], true, "[USCIS](title:uscis) | "),
            ("title: excluded", "visa -title:lottery", "Visa lottery", "", "", &[], false, ""),
            ("title: excluded, in body", "visa -title:lottery", "Visa news", "lottery", "", &[], true, "[Visa](visa) news | lottery"),
            // feed: and tag:
            ("feed: its items", "feed:uscis-news", "Anything", "", "uscis-news", &[], true, "Anything | "),
            ("feed: other feed", "feed:uscis-news", "Anything", "", "visaverge", &[], false, ""),
            ("feed: no source", "feed:uscis-news", "Anything", "", "", &[], false, ""),
            ("feed: any case", "feed:USCIS-News", "x", "", "uscis-news", &[], true, "x | "),
            ("feed: quoted", "feed:\"uscis-news\"", "x", "", "uscis-news", &[], true, "x | "),
            ("feed: is not text", "feed:uscis", "uscis", "", "", &[], false, ""),
            ("feed: with a term", "feed:uscis-news asylum", "Asylum", "", "uscis-news", &[], true, "[Asylum](asylum) | "),
            ("feed: with a missing term", "feed:uscis-news asylum", "Parole", "", "uscis-news", &[], false, ""),
            ("feed: excluded", "asylum -feed:visaverge", "Asylum", "", "visaverge", &[], false, ""),
            ("feed: excluded, other feed", "asylum -feed:visaverge", "Asylum", "", "uscis-news", &[], true, "[Asylum](asylum) | "),
            ("feed: excluded, no source", "asylum -feed:visaverge", "Asylum", "", "", &[], true, "[Asylum](asylum) | "),
            ("tag: present", "tag:official", "x", "", "uscis-news", &["official", "us"], true, "x | "),
            ("tag: absent", "tag:official", "x", "", "visaverge", &["news"], false, ""),
            ("tag: any case", "tag:Official", "x", "", "uscis-news", &["OFFICIAL"], true, "x | "),
            ("tag: OR", "(tag:uk OR tag:us) asylum", "", "asylum claims", "gov-uk", &["uk", "official"], true, " | [asylum](asylum) claims"),
            ("tag: OR, neither", "(tag:uk OR tag:us) asylum", "", "asylum claims", "x", &["ca"], false, ""),
            ("tag: OR, term missing", "(tag:uk OR tag:us) asylum", "", "visa", "x", &["us"], false, ""),
            ("scopes under OR", "title:visa OR feed:uscis-news", "", "visa", "uscis-news", &[], true, " | visa"),
            // Odd text.
            ("empty document", "asylum", "", "", "", &[], false, ""),
            ("digits", "2024", "", "in 2024,", "", &[], true, " | in [2024](2024),"),
            ("control chars in text", "asylum", "", "\u{0}asylum\u{7}", "", &[], true, " | \u{0}[asylum](asylum)\u{7}"),
        ];
        check_cases(cases, &Synonyms::default());
    }

    fn immigration_synonyms() -> Synonyms {
        let groups = [
            vec!["green card", "permanent resident", "LPR"],
            vec!["H-1B", "specialty occupation"],
            vec!["TPS", "temporary protected status"],
            vec!["deport*", "removal"],
        ];
        let groups = groups
            .iter()
            .map(|g| g.iter().map(|m| m.to_string()).collect())
            .collect();
        match Synonyms::new(groups) {
            Ok(s) => s,
            Err(e) => panic!("synonyms: {e}"),
        }
    }

    #[test]
    fn synonyms_table() {
        #[rustfmt::skip]
        let cases: &[Case] = &[
            ("member matches", "\"green card\"", "", "permanent resident status", "", &[], true, " | [permanent resident](green card) status"),
            ("term written as a compound", "greencard", "", "LPR status", "", &[], true, " | [LPR](greencard) status"),
            ("from another member", "LPR", "", "a green-card holder", "", &[], true, " | a [green-card](lpr) holder"),
            ("compound rule on members", "H1B", "", "specialty-occupation workers", "", &[], true, " | [specialty-occupation](h1b) workers"),
            ("the term itself", "TPS", "TPS extended", "", "", &[], true, "[TPS](tps) extended | "),
            ("all of them", "TPS", "TPS", "temporary protected status", "", &[], true, "[TPS](tps) | [temporary protected status](tps)"),
            ("excluded with its synonyms", "visa -TPS", "", "visa and temporary protected status", "", &[], false, ""),
            ("title scope kept", "title:\"green card\"", "LPR rules", "green card", "", &[], true, "[LPR](title:green card) rules | green card"),
            ("title scope, body only", "title:LPR", "News", "green card", "", &[], false, ""),
            ("prefix member", "removal", "", "deported", "", &[], true, " | [deported](removal)"),
            ("only whole terms", "card", "", "permanent resident", "", &[], false, ""),
            ("no group", "resident", "", "LPR", "", &[], false, ""),
        ];
        check_cases(cases, &immigration_synonyms());
        // Query::matches ignores synonyms.
        let doc = Document::new("", "LPR status");
        assert!(!parse("\"green card\"").matches(&doc));
    }

    #[test]
    fn bad_synonyms_are_rejected() {
        // (groups, part of the error)
        let cases: &[(&[&[&str]], &str)] = &[
            (&[&[]], "synonym group 1 is empty"),
            (&[&["a"], &[]], "synonym group 2 is empty"),
            (
                &[&["green card", "--"]],
                "synonym \"--\" has no letters or digits",
            ),
            (
                &[&["de*port"]],
                "synonym \"de*port\": '*' can only end a word",
            ),
            (&[&["*"]], "'*' needs a word before it"),
        ];
        for &(groups, expected) in cases {
            let groups = groups
                .iter()
                .map(|g| g.iter().map(|m| m.to_string()).collect())
                .collect();
            match Synonyms::new(groups) {
                Ok(s) => panic!("{expected:?}: accepted as {s:?}"),
                Err(e) => assert!(e.contains(expected), "expected {expected:?} in {e:?}"),
            }
        }
        assert!(Synonyms::default().is_empty());
        assert!(Synonyms::new(vec![vec!["x".into()]]).is_ok_and(|s| !s.is_empty()));
    }

    #[test]
    fn bad_queries_table() {
        let long = "x".repeat(MAX_QUERY_CHARS + 1);
        let deep_parens = format!("{}a", "(".repeat(500));
        let deep_dashes = format!("{}a", "-".repeat(500));
        let deep_nots = format!("{}a", "NOT ".repeat(40));
        // (query, column, part of the reason)
        #[rustfmt::skip]
        let cases: &[(&str, usize, &str)] = &[
            ("", 1, "empty query"),
            ("   \t ", 1, "empty query"),
            ("TPS \u{1b}]0;owned\u{7}", 5, "control character U+001B"),
            ("asylum\nmallory@x.example", 7, "control character U+000A"),
            ("visa \"green card", 6, "unclosed quote"),
            ("\"", 1, "unclosed quote"),
            ("a \"b\" \"c", 7, "unclosed quote"),
            ("(a OR b", 1, "unclosed '('"),
            ("a (b (c)", 3, "unclosed '('"),
            ("(", 1, "unclosed '('"),
            ("a)", 2, "unexpected ')'"),
            ("(a))", 4, "unexpected ')'"),
            (")", 1, "unexpected ')'"),
            ("()", 1, "empty parentheses"),
            ("OR a", 1, "OR needs a term on both sides"),
            ("a OR", 3, "OR needs a term on both sides"),
            ("a OR OR b", 3, "OR needs a term on both sides"),
            ("a | ", 3, "OR needs a term on both sides"),
            ("|", 1, "OR needs a term on both sides"),
            ("(OR a)", 2, "OR needs a term on both sides"),
            ("(a OR) b", 4, "OR needs a term on both sides"),
            ("-", 1, "'-' needs a term"),
            ("a -", 3, "'-' needs a term"),
            ("a - b", 3, "'-' needs a term"),
            ("a (b -)", 6, "'-' needs a term"),
            ("NOT", 1, "NOT needs a term"),
            ("a NOT", 3, "NOT needs a term"),
            ("a NOT OR b", 3, "NOT needs a term"),
            ("a -OR b", 3, "'-' needs a term"),
            ("\"\"", 1, "empty phrase"),
            ("a \"  \"", 3, "empty phrase"),
            ("\"...\"", 1, "empty phrase"),
            ("-foo", 1, "at least one term that is not excluded"),
            ("NOT foo", 1, "at least one term that is not excluded"),
            ("-foo -\"bar baz\"", 1, "at least one term that is not excluded"),
            ("NOT (a b)", 1, "at least one term that is not excluded"),
            ("---foo", 1, "at least one term that is not excluded"),
            ("a OR -b", 6, "each side of OR needs a term that is not excluded"),
            ("*", 1, "'*' needs a word before it"),
            ("a *", 3, "'*' needs a word before it"),
            ("*foo", 1, "'*' needs a word before it"),
            ("de*port", 3, "'*' can only end a word"),
            ("deport**", 7, "'*' can only end a word"),
            ("\"green car*d\"", 11, "'*' can only end a word"),
            ("a && b", 3, "no letters or digits"),
            ("a — b", 3, "no letters or digits"),
            (&long, MAX_QUERY_CHARS + 1, "longer than 1000 characters"),
            (&deep_parens, MAX_NESTING + 1, "too deeply nested"),
            (&deep_dashes, MAX_NESTING + 1, "too deeply nested"),
            (&deep_nots, MAX_NESTING * 4 + 1, "too deeply nested"),
            // Fields.
            ("foo:bar", 1, "unknown field `foo` (use title:, feed:, tag: or lang:)"),
            ("visa Foo:bar", 6, "unknown field `Foo` (use title:, feed:, tag: or lang:)"),
            ("-foo:bar", 2, "unknown field `foo`"),
            ("https://uscis.gov", 1, "unknown field `https`"),
            ("title:", 1, "`title:` needs a word or a quoted phrase right after it, as in title:USCIS"),
            ("a title: visa", 3, "`title:` needs a word or a quoted phrase"),
            ("title:(a OR b)", 1, "`title:` needs a word or a quoted phrase"),
            ("feed:", 1, "`feed:` needs a word or a quoted phrase right after it, as in feed:uscis-news"),
            ("TAG: x", 1, "`tag:` needs a word or a quoted phrase right after it, as in tag:official"),
            ("title:\"green", 7, "unclosed quote"),
            ("title:\"\"", 7, "empty phrase"),
            ("title:...", 7, "\"...\" has no letters or digits"),
            ("title:de*port", 9, "'*' can only end a word"),
            ("feed:uscis*", 11, "`feed:` takes a whole name; '*' cannot be used in it"),
            ("tag:\"a*\"", 7, "`tag:` takes a whole name"),
            ("feed:\"  \"", 1, "`feed:` needs a name"),
            ("-feed:visaverge", 1, "at least one term that is not excluded"),
            ("feed:a OR -tag:b", 11, "each side of OR needs a term that is not excluded"),
        ];
        for &(query, column, reason) in cases {
            match Query::parse(query) {
                Ok(q) => panic!("{query:?} should be rejected, parsed as {q:?}"),
                Err(e) => {
                    assert_eq!(e.column, column, "column for {query:?}: {e}");
                    assert!(
                        e.reason.contains(reason),
                        "reason for {query:?}: expected {reason:?} in {e}"
                    );
                }
            }
        }
    }

    #[test]
    fn error_display() {
        let err = Query::parse("asylum OR \"green").unwrap_err();
        assert_eq!(err.to_string(), "unclosed quote at column 11");
        let boxed: Box<dyn std::error::Error> = Box::new(err);
        assert!(boxed.to_string().contains("column 11"));
        assert_eq!(
            Query::parse("x foo:bar").unwrap_err().to_string(),
            "unknown field `foo` (use title:, feed:, tag: or lang:) at column 3"
        );
    }

    #[test]
    fn nesting_within_the_limit_parses() {
        let query = format!("{}a{}", "(".repeat(MAX_NESTING), ")".repeat(MAX_NESTING));
        assert!(parse(&query).matches(&Document::new("a", "")));
    }

    #[test]
    fn precedence_shapes() {
        assert_eq!(parse("a b OR c"), parse("(a b) OR c"));
        assert_ne!(parse("a b OR c"), parse("a (b OR c)"));
        assert_eq!(parse("a -b c"), parse("a (-b) c"));
        assert_eq!(parse("a OR b | c"), parse("a OR (b OR c)"));
        assert_eq!(parse("((a))"), parse("a"));
        assert_eq!(parse("NOT a b"), parse("-a b"));
        assert_eq!(parse("Title:A Feed:B"), parse("title:a feed:b"));
    }

    #[test]
    fn terms_are_positive_and_distinct() {
        let q = parse(
            "H-1B OR \"Green  Card\" -tourist NOT (lottery OR fee) deport* h-1b --Visa \
             title:USCIS title:\"Green card\" feed:x -title:fee tag:y",
        );
        assert_eq!(
            q.terms(),
            [
                "h-1b",
                "green card",
                "deport*",
                "visa",
                "title:uscis",
                "title:green card"
            ]
        );
        assert!(parse("feed:uscis-news").terms().is_empty());
    }

    #[test]
    fn display_round_trips() {
        for query in [
            "asylum",
            "a b OR c",
            "a (b OR c) -d",
            "-(a b) c",
            "NOT (a OR b) c",
            "visa --tourist",
            "\"Green Card\" OR H-1B deport*",
            "“curly quotes” x",
            "((TPS OR parole) (Venezuela OR Haiti)) -Cuba",
            "a -(b OR -(c d))",
            "title:USCIS -feed:visaverge",
            "title:\"green card\" OR tag:official",
            "(tag:uk OR tag:us) asylum",
            "feed:\"odd name\" x",
            "feed:\"a(b)\" x",
            "10:30 title:10:30",
            "\"re:invent\"",
        ] {
            let parsed = parse(query);
            let shown = parsed.to_string();
            assert_eq!(parse(&shown), parsed, "{query:?} displayed as {shown:?}");
        }
        assert_eq!(parse("(a OR b) c").to_string(), "(a OR b) c");
        assert_eq!(parse("A -\"B  c\"").to_string(), "a -\"b c\"");
        assert_eq!(
            parse("Title:\"Green  Card\" FEED:Uscis tag:\" a  b \"").to_string(),
            "title:\"green card\" feed:uscis tag:\"a b\""
        );
    }

    #[test]
    fn matcher_finds_ids_in_order() {
        let subscriptions = [
            (7, "asylum"),
            (3, "texas OR ohio"),
            (12, "\"green card\""),
            (1, "asylum -texas"),
            (3, "never mentioned"),
            (5, "deport*"),
            (-2, "seekers"),
            (40, "ICE"),
            (41, "feed:uscis-news"),
            (42, "tag:official -asylum"),
            (43, "asylum"),
        ];
        let matcher = Matcher::new(
            subscriptions
                .iter()
                .map(|&(id, q)| (id, parse(q)))
                .collect(),
            &Synonyms::default(),
        );
        assert_eq!(matcher.len(), subscriptions.len());
        assert!(!matcher.is_empty());

        let doc = Document::new(
            "Asylum seekers in Texas",
            "Police said deportations would resume.",
        );
        assert_eq!(matcher.find_matches(&doc), [-2, 3, 5, 7, 43]);
        assert_eq!(
            matcher.find_matches(&Document::new("", "Green card news from Ohio")),
            [3, 12]
        );
        let official = ["official".to_string()];
        assert_eq!(
            matcher.find_matches(
                &Document::new("", "Green-card fees").with_source("uscis-news", &official)
            ),
            [12, 41, 42]
        );
        assert!(matcher.find_matches(&Document::new("", "")).is_empty());

        let empty = Matcher::new(Vec::new(), &Synonyms::default());
        assert!(empty.is_empty());
        assert_eq!(empty.len(), 0);
        assert!(empty.find_matches(&doc).is_empty());
        assert!(empty.explain(&doc).is_empty());
    }

    #[test]
    fn matcher_explains_an_id_with_several_queries() {
        let matcher = Matcher::new(
            vec![
                (1, parse("visa")),
                (2, parse("asylum")),
                (1, parse("asylum OR parole")),
                (1, parse("never")),
            ],
            &Synonyms::default(),
        );
        let (title, body) = ("Asylum and visa news", "parole");
        let explained = matcher.explain(&Document::new(title, body));
        let shown: Vec<(i64, String)> = explained
            .iter()
            .map(|(id, hits)| (*id, render(title, body, hits)))
            .collect();
        assert_eq!(
            shown,
            [
                (
                    1,
                    "[Asylum](asylum) and [visa](visa) news | [parole](parole)".to_string()
                ),
                (2, "[Asylum](asylum) and visa news | parole".to_string()),
            ]
        );
    }

    fn crossing() -> Synonyms {
        let set = |members: &[(&str, &str)]| {
            members
                .iter()
                .map(|(l, t)| (l.to_string(), t.to_string()))
                .collect()
        };
        Synonyms::default()
            .with_crossings(vec![
                set(&[
                    ("en", "asylum"),
                    ("es", "asilo"),
                    ("es", "asilo político"),
                    ("fr", "asile"),
                    ("pt", "asilo"),
                ]),
                set(&[
                    ("en", "deportation"),
                    ("es", "deportación"),
                    ("fr", "expulsion"),
                ]),
            ])
            .expect("sets")
    }

    #[test]
    fn lang_scopes_match_the_items_language() {
        let spanish =
            Document::new("¿Qué pasa con el asilo?", "Niños, año, señal").with_lang(Some("es-MX"));
        let english = Document::new("Asylum news", "").with_lang(Some("en"));
        let unknown = Document::new("asilo", "");
        for (query, doc, want) in [
            ("asilo lang:es", &spanish, true),
            ("asilo lang:ES", &spanish, true),
            ("asilo lang:\"es-419\"", &spanish, true),
            ("asilo lang:en", &spanish, false),
            ("asilo -lang:es", &spanish, false),
            ("lang:es", &spanish, true),
            ("(lang:es OR lang:en) asylum", &english, true),
            ("asilo lang:es", &unknown, false),
            ("asilo -lang:en", &unknown, true),
            ("niños año", &spanish, true),
        ] {
            let q = parse(query);
            assert_eq!(q.matches(doc), want, "{query}");
            let matcher = Matcher::new(vec![(1, q.clone())], &Synonyms::default());
            assert_eq!(
                !matcher.find_matches(doc).is_empty(),
                want,
                "matcher {query}"
            );
            // Canonical text parses back to the same query.
            assert_eq!(parse(&q.to_string()), q, "{query}");
        }
        for bad in [
            "asilo lang:",
            "lang:español",
            "lang:e",
            "lang:1",
            "lang:\"\"",
        ] {
            let err = Query::parse(bad).expect_err(bad);
            assert!(err.reason.contains("lang:"), "{bad}: {err}");
        }
    }

    #[test]
    fn searches_cross_languages_only_when_asked_and_only_into_each_members_language() {
        let synonyms = crossing();
        let doc = |title: &str, lang: Option<&str>| Document::new(title, "").with_lang(lang);
        let cases = [
            // (query, title, item language, plain, crossing)
            (
                "asylum",
                "Nueva regla de asilo político",
                Some("es"),
                false,
                true,
            ),
            (
                "asylum",
                "Demandeurs d'asile à Calais",
                Some("fr"),
                false,
                true,
            ),
            ("asylum", "Pedido de asilo negado", Some("pt"), false, true),
            // The member only counts in its own language; unknown is none.
            ("asylum", "asilo", None, false, false),
            ("asylum", "asile", Some("en"), false, false),
            ("asilo", "Asylum backlog grows", Some("en"), false, true),
            // The search's own word matches in any language, as always.
            ("asylum", "Asylum en español", Some("es"), true, true),
            // English "expulsion" is no deportation; French is.
            (
                "deportation",
                "Student expulsion appeal",
                Some("en"),
                false,
                false,
            ),
            (
                "deportation",
                "Expulsion vers Haïti",
                Some("fr"),
                false,
                true,
            ),
            (
                "title:deportation",
                "Expulsion vers Haïti",
                Some("fr"),
                false,
                true,
            ),
            (
                "deportation -asylum",
                "Deportación y asilo",
                Some("es"),
                false,
                false,
            ),
            (
                "deportation OR visa",
                "Deportación masiva",
                Some("es"),
                false,
                true,
            ),
            ("H-1B", "Visa H-1B", Some("es"), true, true),
        ];
        for (query, title, lang, plain, crossing) in cases {
            let q = parse(query);
            let crossed = q.across_languages(&synonyms);
            let d = doc(title, lang);
            assert_eq!(
                q.explain(&d, &synonyms).is_some(),
                plain,
                "plain {query} / {title}"
            );
            assert_eq!(
                crossed.explain(&d, &synonyms).is_some(),
                crossing,
                "crossing {query} / {title}"
            );
            let matcher = Matcher::new(vec![(1, q.clone()), (2, crossed.clone())], &synonyms);
            let want: Vec<i64> = [(1, plain), (2, crossing)]
                .into_iter()
                .filter_map(|(id, m)| m.then_some(id))
                .collect();
            assert_eq!(matcher.find_matches(&d), want, "{query} / {title}");
            assert_eq!(parse(&crossed.to_string()), crossed, "{crossed}");
        }
        // What a crossing search shows it matches, and highlights where.
        let crossed = parse("asylum").across_languages(&synonyms);
        assert_eq!(
            crossed.to_string(),
            "asylum OR asilo lang:es OR \"asilo político\" lang:es OR asile lang:fr OR asilo lang:pt"
        );
        let hits = crossed
            .explain(&doc("Solicitud de asilo", Some("es")), &synonyms)
            .expect("matches");
        assert_eq!(hits.len(), 1);
        assert_eq!(hits[0].term, "asilo");
        assert_eq!(hits[0].range, 13..18);
        // Without sets, crossing changes nothing.
        let plain = parse("asylum");
        assert_eq!(plain.across_languages(&Synonyms::default()), plain);
    }

    #[test]
    fn language_sets_refuse_bad_members() {
        let one = |lang: &str, term: &str| vec![vec![(lang.to_string(), term.to_string())]];
        for (sets, want) in [
            (one("español", "asilo"), "not a language code"),
            (one("es", "*"), "synonym"),
            (one("es", "--"), "no letters"),
            (vec![Vec::new()], "empty"),
        ] {
            let err = Synonyms::default().with_crossings(sets).expect_err(want);
            assert!(err.contains(want), "{err}");
        }
    }

    #[test]
    fn documents_keep_fields_and_source_ranges() {
        let doc = Document::new("José H-1B", "ﬁle e\u{301}");
        let folded: Vec<&str> = doc
            .tokens
            .iter()
            .map(|t| &doc.squashed[t.folded.clone()])
            .collect();
        assert_eq!(folded, ["jose", "h", "1b", "file", "e"]);
        let sources: Vec<Range<usize>> = doc.tokens.iter().map(|t| t.source.clone()).collect();
        assert_eq!(sources, [0..5, 6..7, 8..10, 0..5, 6..9]);
        assert_eq!(doc.body_start, 3);
        assert_eq!(doc.squashed, "joseh1b filee");
        assert_eq!(doc.field_of(2), Field::Title);
        assert_eq!(doc.field_of(3), Field::Body);
        assert!(doc.feed.is_none());
        let pattern = |text: &str| {
            vec![Segment {
                text: text.to_string(),
                prefix: false,
            }]
        };
        assert_eq!(doc.occurrences(&pattern("h1b"), false), [(1, 2)]);
        assert_eq!(doc.occurrences(&pattern("h1b"), true), [(1, 2)]);
        assert!(doc.occurrences(&pattern("file"), true).is_empty());
        assert!(doc.occurrences(&pattern("1bfile"), false).is_empty());
        assert!(doc.occurrences(&[], false).is_empty());
    }

    /// Parses `query` and exercises everything that can be done with the result.
    fn exercise(query: &str, doc: &Document) {
        match Query::parse(query) {
            Ok(q) => {
                let matched = q.matches(doc);
                assert_eq!(q.explain(doc, &Synonyms::default()).is_some(), matched);
                q.terms();
                let shown = q.to_string();
                assert_eq!(parse(&shown), q, "{query:?} displayed as {shown:?}");
            }
            Err(e) => {
                let len = query.chars().count();
                assert!(
                    (1..=len.max(MAX_QUERY_CHARS) + 1).contains(&e.column),
                    "{query:?}: column out of range: {e}"
                );
                assert!(!e.reason.is_empty());
            }
        }
    }

    #[test]
    fn odd_queries_never_panic() {
        let doc = Document::new(
            "José's H-1B ICE\u{0}",
            "déportation \"order\" ΟΔΟΣ ﬁle 移民",
        )
        .with_source("feed", &["tag".to_string()]);
        let fixed = [
            "\"",
            "\"\"\"",
            "“",
            "”a„",
            "'",
            "\u{0}",
            "\u{7}a\u{1b}[31m",
            "\u{feff}a",
            "\u{200b}",
            "\u{301}",
            "a\u{301}*",
            "İ*",
            "ß ẞ",
            "🦀",
            "🦀*",
            "移民",
            "-\"\"",
            "-(",
            "(-",
            ")(",
            "a|",
            "||",
            "a||b",
            "- -",
            "--",
            "NOT NOT",
            "OR OR",
            "(((((((((",
            ")))))))))",
            "\"unclosed (",
            "*\"",
            "a*\"b*\"",
            "\u{10ffff}",
            "\u{fffd}\u{fffd}",
            ":",
            "::",
            "a:",
            ":a",
            "title:title:x",
            "feed:feed:",
            "title:\"",
            "title:*",
            "tag:(",
            "feed:\"\u{0}\"",
            "title:🦀",
            "é:x",
        ];
        for query in fixed {
            exercise(query, &doc);
        }
        for query in [
            "(".repeat(500),
            format!("{}a{}", "(".repeat(500), ")".repeat(500)),
            ")".repeat(500),
            "-".repeat(999),
            "\"".repeat(999),
            "NOT ".repeat(250),
            "a ".repeat(500),
            "é".repeat(1000),
            "é".repeat(1001),
            "title:".repeat(100),
        ] {
            exercise(&query, &doc);
        }

        // Random sequences of troublesome fragments (deterministic LCG), so
        // that many are valid and exercise matching and `Display` too.
        let fragments = [
            "a", "Zé", "e\u{301}", "H-1B", "ς", "1", "🦀", "*", "-", "--", " ", " ", "\t", "\u{0}",
            "\"", "“", "”", "(", ")", "|", "OR", "NOT", " OR ", " NOT ", ".", ":", "title:",
            "feed:", "tag:", "x:",
        ];
        let mut state: u64 = 0x2545_f491_4f6c_dd1d;
        let mut next = move || {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (state >> 33) as usize
        };
        let mut valid = Vec::new();
        for _ in 0..20_000 {
            let query: String = (0..next() % 12)
                .map(|_| fragments[next() % fragments.len()])
                .collect();
            exercise(&query, &doc);
            if let Ok(q) = Query::parse(&query) {
                valid.push(q);
            }
        }
        assert!(
            valid.len() > 2_000,
            "only {} random queries were valid",
            valid.len()
        );

        // All of them at once agree with each on its own.
        let expected: Vec<i64> = (0..)
            .zip(&valid)
            .filter(|(_, q)| q.matches(&doc))
            .map(|(id, _)| id)
            .collect();
        let matcher = Matcher::new((0..).zip(valid).collect(), &Synonyms::default());
        assert_eq!(matcher.find_matches(&doc), expected);
    }

    /// `Matcher` (automaton, index, candidates) against a reference that
    /// applies the rules of the module docs directly to each query's syntax
    /// tree and the documents' token lists.
    mod reference {
        use super::super::*;
        use super::{document, parse};
        use proptest::prelude::*;
        use proptest::sample::{select, subsequence};

        fn tokens(text: &str) -> Vec<String> {
            let mut tokens = Vec::new();
            let mut current = String::new();
            for c in text.chars() {
                fold_char(c, |f| {
                    if f.is_alphanumeric() {
                        current.push(f);
                    } else if !current.is_empty() {
                        tokens.push(mem::take(&mut current));
                    }
                });
            }
            if !current.is_empty() {
                tokens.push(current);
            }
            tokens
        }

        /// Whether `pattern` matches at the start of `tokens`: each segment
        /// equals whole consecutive tokens joined, or for a prefix, the start
        /// of them (ending inside the last one).
        fn matches_from(tokens: &[String], pattern: &[Segment]) -> bool {
            let Some((segment, rest)) = pattern.split_first() else {
                return true;
            };
            let mut joined = String::new();
            for (i, token) in tokens.iter().enumerate() {
                let before = joined.len();
                joined.push_str(token);
                let done = if segment.prefix {
                    before < segment.text.len() && joined.starts_with(&segment.text)
                } else {
                    joined == segment.text
                };
                if done {
                    return matches_from(&tokens[i + 1..], rest);
                }
                if !segment.text.starts_with(&joined) {
                    return false;
                }
            }
            false
        }

        fn occurs(tokens: &[String], pattern: &[Segment]) -> bool {
            (0..tokens.len()).any(|start| matches_from(&tokens[start..], pattern))
        }

        struct Item {
            title: Vec<String>,
            body: Vec<String>,
            feed: Option<String>,
            tags: Vec<String>,
            lang: Option<String>,
        }

        fn evaluate(node: &Node, item: &Item, groups: &[Vec<Pattern>]) -> bool {
            match node {
                Node::Term(term) => {
                    let mut alternatives = vec![term.pattern.clone()];
                    for group in groups.iter().filter(|g| g.contains(&term.pattern)) {
                        alternatives.extend(group.iter().cloned());
                    }
                    alternatives.iter().any(|p| {
                        occurs(&item.title, p) || (!term.title_only && occurs(&item.body, p))
                    })
                }
                Node::Feed(feed) => item.feed.as_ref() == Some(feed),
                Node::Tag(tag) => item.tags.contains(tag),
                Node::Lang(code) => item.lang.as_ref() == Some(code),
                Node::Not(inner) => !evaluate(inner, item, groups),
                Node::And(parts) => parts.iter().all(|p| evaluate(p, item, groups)),
                Node::Or(parts) => parts.iter().any(|p| evaluate(p, item, groups)),
            }
        }

        const SYNONYMS: &[&[&str]] = &[
            &["green card", "permanent resident", "LPR"],
            &["H-1B", "specialty occupation"],
            &["deport*", "removal order"],
        ];

        /// The synonym groups as patterns, each member read as a phrase query.
        fn reference_groups() -> Vec<Vec<Pattern>> {
            SYNONYMS
                .iter()
                .map(|group| {
                    group
                        .iter()
                        .map(|member| match parse(&format!("\"{member}\"")).root {
                            Node::Term(term) => term.pattern,
                            other => panic!("{member:?} read as {other:?}"),
                        })
                        .collect()
                })
                .collect()
        }

        const QUERY_TERMS: &[&str] = &[
            "asylum",
            "visa",
            "H-1B",
            "h1b",
            "\"H 1B\"",
            "\"green card\"",
            "greencard",
            "green-card",
            "green",
            "card",
            "I-485",
            "i485",
            "I-48*",
            "deport*",
            "dep*",
            "\"deport* order\"",
            "order",
            "ICE",
            "OPT",
            "EAD",
            "josé",
            "JOSE",
            "10:30",
            "LPR",
            "\"permanent resident\"",
            "removal",
            "title:visa",
            "title:\"green card\"",
            "title:deport*",
            "title:ICE",
            "feed:a",
            "feed:b",
            "tag:x",
            "tag:y",
            "lang:es",
            "lang:en",
            "é",
            "1b",
        ];

        fn query() -> impl Strategy<Value = String> {
            let term = select(QUERY_TERMS).prop_map(String::from);
            term.clone().prop_recursive(3, 12, 2, move |inner| {
                prop_oneof![
                    (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("{a} {b}")),
                    (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("({a} OR {b})")),
                    (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("{a} -({b})")),
                    (inner.clone(), term.clone()).prop_map(|(a, b)| format!("{a} -{b}")),
                    inner.clone().prop_map(|a| format!("NOT ({a})")),
                ]
            })
        }

        const TEXT_WORDS: &[&str] = &[
            "asylum",
            "Asylum",
            "visa",
            "VISA",
            "green",
            "Green",
            "card",
            "greencard",
            "H",
            "1B",
            "h1b",
            "H1Bs",
            "I",
            "485",
            "I485",
            "48",
            "5",
            "ice",
            "ICE",
            "police",
            "opt",
            "option",
            "ead",
            "head",
            "deport",
            "deportation",
            "order",
            "removal",
            "josé",
            "Jose\u{301}",
            "JOSE",
            "10",
            "30",
            "lpr",
            "permanent",
            "resident",
            "specialty",
            "occupation",
            "é",
            "e",
            "½",
            "ﬁle",
            "ＩＣＥ",
        ];
        const SEPARATORS: &[&str] = &[" ", " ", " ", "-", "", ", ", ". ", "\n", "'", "/", ":"];

        fn text() -> impl Strategy<Value = String> {
            prop::collection::vec((select(TEXT_WORDS), select(SEPARATORS)), 0..10)
                .prop_map(|parts| parts.into_iter().map(|(w, s)| format!("{w}{s}")).collect())
        }

        /// Hits must be usable for highlighting as they are.
        fn check_hits(hits: &[Hit], title: &str, body: &str) -> Result<(), TestCaseError> {
            let mut previous: Option<&Hit> = None;
            for hit in hits {
                let text = match hit.field {
                    Field::Title => title,
                    Field::Body => body,
                };
                prop_assert!(hit.range.start < hit.range.end, "{hit:?}");
                prop_assert!(text.get(hit.range.clone()).is_some(), "{hit:?} in {text:?}");
                if let Some(p) = previous {
                    let ordered = match (p.field, hit.field) {
                        (Field::Title, Field::Body) => true,
                        (Field::Body, Field::Title) => false,
                        _ => p.range.end <= hit.range.start,
                    };
                    prop_assert!(ordered, "{p:?} then {hit:?}");
                }
                previous = Some(hit);
            }
            Ok(())
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(300))]

            #[test]
            fn matcher_agrees_with_reference(
                queries in prop::collection::vec(query(), 1..8),
                title in text(),
                body in text(),
                feed in prop::option::of(select(&["a", "b", "c"][..])),
                tags in subsequence(&["x", "y", "z"][..], 0..=3),
                with_synonyms in any::<bool>(),
                lang in prop::option::of(select(&["es", "en", "fr"][..])),
            ) {
                // Ids collide now and then: an id with several queries.
                let subscriptions: Vec<(i64, Query)> = (0..)
                    .zip(&queries)
                    .filter_map(|(i, q)| Some((i % 5, Query::parse(q).ok()?)))
                    .collect();
                let (synonyms, groups) = if with_synonyms {
                    let groups = SYNONYMS
                        .iter()
                        .map(|g| g.iter().map(|m| m.to_string()).collect())
                        .collect();
                    (Synonyms::new(groups).map_err(TestCaseError::fail)?, reference_groups())
                } else {
                    (Synonyms::default(), Vec::new())
                };
                let doc = document(&title, &body, feed.unwrap_or(""), &tags).with_lang(lang);
                let item = Item {
                    lang: lang.map(String::from),
                    title: tokens(&title),
                    body: tokens(&body),
                    feed: feed.map(String::from),
                    tags: if feed.is_some() { tags.iter().map(|t| t.to_string()).collect() } else { Vec::new() },
                };

                let mut expected = Vec::new();
                for (id, query) in &subscriptions {
                    let matched = evaluate(&query.root, &item, &groups);
                    let explained = query.explain(&doc, &synonyms);
                    prop_assert_eq!(explained.is_some(), matched, "explain {}", query);
                    if let Some(hits) = &explained {
                        check_hits(hits, &title, &body)?;
                    }
                    prop_assert_eq!(query.matches(&doc), evaluate(&query.root, &item, &[]), "matches {}", query);
                    if matched {
                        expected.push(*id);
                    }
                }
                expected.sort_unstable();
                expected.dedup();

                let matcher = Matcher::new(subscriptions.clone(), &synonyms);
                prop_assert_eq!(matcher.find_matches(&doc), expected.clone());
                let explained = matcher.explain(&doc);
                let ids: Vec<i64> = explained.iter().map(|(id, _)| *id).collect();
                prop_assert_eq!(ids, expected);
                for (id, hits) in &explained {
                    check_hits(hits, &title, &body)?;
                    let mine: Vec<&Query> = subscriptions.iter().filter(|(i, _)| i == id).map(|(_, q)| q).collect();
                    if let [only] = mine[..] {
                        prop_assert_eq!(Some(hits.clone()), only.explain(&doc, &synonyms));
                    }
                }
            }

            #[test]
            fn any_text_gives_usable_hits(title in ".{0,40}", body in ".{0,80}") {
                let queries = ["a", "e", "1", "ice OR visa", "\"a b\"", "a*", "title:e*", "i*"];
                let subscriptions: Vec<(i64, Query)> = (0..).zip(queries.iter().map(|q| parse(q))).collect();
                let matcher = Matcher::new(subscriptions.clone(), &Synonyms::default());
                let doc = Document::new(&title, &body);
                let expected: Vec<i64> = subscriptions.iter().filter(|(_, q)| q.matches(&doc)).map(|(id, _)| *id).collect();
                prop_assert_eq!(matcher.find_matches(&doc), expected);
                for (_, hits) in matcher.explain(&doc) {
                    check_hits(&hits, &title, &body)?;
                }
            }
        }
    }
}
