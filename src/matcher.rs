//! The subscription query language: parsing subscribers' queries and matching
//! items (news articles) against them.
//!
//! This module is pure: plain data in, plain data out, no I/O and no async.
//! It is responsible for
//!
//! * parsing a query string into a [`Query`], or explaining with a
//!   [`QueryError`] (1-based column, counted in characters) why it is rejected;
//! * preparing an item's title and body once as a [`Document`];
//! * deciding whether a query matches a document, and, through [`Matcher`],
//!   which of many subscriptions match one document.
//!
//! # Grammar
//!
//! ```text
//! query   := or
//! or      := and ( ("OR" | "|") and )*
//! and     := unary unary*                  adjacent expressions are ANDed
//! unary   := ("NOT" | "-") unary | primary
//! primary := word | phrase | "(" or ")"
//! phrase  := '"' anything but a quote '"'  curly quotes “ ” „ work too
//! word    := a run of characters other than whitespace, control characters,
//!            quotes, "(", ")" and "|"
//! ```
//!
//! Precedence, tightest first: `NOT`/`-`, then implicit AND, then `OR`; so
//! `a b OR c` means `(a AND b) OR c`. `OR` and `NOT` are keywords only in
//! uppercase (`or` is an ordinary word). `-` excludes only at the start of a
//! word and must be directly followed by what it excludes (`-tourist`,
//! `-"visa lottery"`, `-(a OR b)`); inside a word it is a separator (`H-1B`).
//!
//! A word ending in `*` is a prefix (`deport*` matches "deportation"); `*`
//! anywhere else is an error. A word that contains separators, like `H-1B`,
//! is a phrase of its parts (`h`, `1b`).
//!
//! Queries are rejected when they are empty, longer than [`MAX_QUERY_CHARS`],
//! nested deeper than [`MAX_NESTING`], malformed (unclosed quote or
//! parenthesis, dangling `OR`/`NOT`/`-`, empty phrase, misplaced `*`), or
//! would match almost every item because nothing in them is required
//! (`-foo` alone).
//!
//! # Matching
//!
//! Text is compared after folding each character: compatibility
//! decomposition (NFKD, so "ＩＣＥ" is "ice"), Unicode lowercase, and
//! dropping combining marks that are not letters themselves (accents go, so
//! `jose` matches "José"; the vowel signs of Indic scripts stay). A token is a
//! maximal run of alphanumeric characters of the folded text, so `ICE` does
//! not match "police" and `OPT` does not match "option". Title and body are
//! both searched, but a phrase must lie entirely within one of them.
//!
//! Scripts written without spaces (Chinese, Japanese, Thai) form one token
//! per run of letters, so they only match whole runs for now.

use std::collections::BTreeMap;
use std::fmt;
use std::mem;
use std::ops::Range;
use std::str::FromStr;

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
fn fold_char(c: char, mut emit: impl FnMut(char)) {
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

/// Splits `text` into folded tokens (maximal runs of alphanumeric characters).
fn tokenize(text: &str, mut emit: impl FnMut(String)) {
    let mut current = String::new();
    for c in text.chars() {
        fold_char(c, |f| {
            if f.is_alphanumeric() {
                current.push(f);
            } else if !current.is_empty() {
                emit(mem::take(&mut current));
            }
        });
    }
    if !current.is_empty() {
        emit(current);
    }
}

// ---------------------------------------------------------------------------
// Documents
// ---------------------------------------------------------------------------

/// An item's text prepared once for matching against many queries.
///
/// Tokens keep their positions (title first, then body), so phrases are
/// checked by position and later features (joining `H1B` with `H-1B`,
/// proximity) can work on the same data.
#[derive(Debug, Clone, Default)]
pub struct Document {
    /// Every distinct token, sorted, so all tokens sharing a prefix form one
    /// contiguous range.
    vocab: Vec<String>,
    /// `postings[i]`: the positions of `vocab[i]`, ascending.
    postings: Vec<Vec<usize>>,
    /// `tokens[p]`: the index into `vocab` of the token at position `p`.
    tokens: Vec<usize>,
    /// Position of the first body token; positions before it are the title.
    body_start: usize,
}

impl Document {
    /// `title` and `body` are already plain text (HTML stripped by the caller).
    pub fn new(title: &str, body: &str) -> Document {
        let mut words = Vec::new();
        tokenize(title, |t| words.push(t));
        let body_start = words.len();
        tokenize(body, |t| words.push(t));

        let mut tokens = vec![0; words.len()];
        let mut by_word: BTreeMap<String, Vec<usize>> = BTreeMap::new();
        for (position, word) in words.into_iter().enumerate() {
            by_word.entry(word).or_default().push(position);
        }
        let mut vocab = Vec::with_capacity(by_word.len());
        let mut postings = Vec::with_capacity(by_word.len());
        for (id, (word, positions)) in by_word.into_iter().enumerate() {
            for &position in &positions {
                tokens[position] = id;
            }
            vocab.push(word);
            postings.push(positions);
        }
        Document {
            vocab,
            postings,
            tokens,
            body_start,
        }
    }

    /// The vocabulary ids of the tokens that `word` matches.
    fn candidates(&self, word: &Word) -> Range<usize> {
        let start = self
            .vocab
            .partition_point(|t| t.as_str() < word.text.as_str());
        let len = if word.prefix {
            self.vocab[start..].partition_point(|t| t.starts_with(&word.text))
        } else {
            usize::from(self.vocab.get(start) == Some(&word.text))
        };
        start..start + len
    }

    /// Whether `words` occur consecutively within the title or within the body.
    fn contains(&self, words: &[Word]) -> bool {
        let Some((first, rest)) = words.split_first() else {
            return false;
        };
        self.candidates(first)
            .flat_map(|id| &self.postings[id])
            .any(|&start| self.continues_at(start, rest))
    }

    /// Whether `rest` matches the tokens right after `start`, in the same field.
    fn continues_at(&self, start: usize, rest: &[Word]) -> bool {
        let field_end = if start < self.body_start {
            self.body_start
        } else {
            self.tokens.len()
        };
        let Some(following) = self.tokens.get(start + 1..field_end) else {
            return false;
        };
        following.len() >= rest.len()
            && rest
                .iter()
                .zip(following)
                .all(|(word, &id)| word.matches(&self.vocab[id]))
    }
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
    Not(Box<Node>),
    /// At least two children, none of them an `And` (nested ones are flattened).
    And(Vec<Node>),
    /// At least two children, none of them an `Or`.
    Or(Vec<Node>),
}

/// A word or quoted phrase: folded words that must appear consecutively.
#[derive(Debug, Clone, PartialEq)]
struct Term {
    /// As written, lowercased; whitespace runs in a phrase become one space.
    source: String,
    quoted: bool,
    /// Never empty.
    words: Vec<Word>,
}

#[derive(Debug, Clone, PartialEq)]
struct Word {
    /// Folded; never empty.
    text: String,
    /// Written with a trailing `*`: matches any token starting with `text`.
    prefix: bool,
}

impl Word {
    fn matches(&self, token: &str) -> bool {
        if self.prefix {
            token.starts_with(&self.text)
        } else {
            token == self.text
        }
    }
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

        // A query that matches a document without any words matches every
        // item lacking its excluded words, which is nearly all of them.
        let empty = Document::default();
        if root.eval(&empty) {
            let reason = match &root {
                Node::Or(alternatives) if alternatives.iter().any(|a| !a.eval(&empty)) => {
                    "each side of OR needs a term that is not excluded"
                }
                _ => "a query needs at least one term that is not excluded",
            };
            // Only a negation can make a query match an empty document.
            return Err(QueryError::new(parser.first_not.unwrap_or(1), reason));
        }
        Ok(Query { root })
    }

    /// Whether the document satisfies the query.
    pub fn matches(&self, doc: &Document) -> bool {
        self.root.eval(doc)
    }

    /// The distinct positive terms/phrases as the user wrote them, lowercased
    /// (for highlighting later), in order of first appearance. Excluded terms
    /// are left out; a prefix keeps its `*` and a phrase loses its quotes.
    pub fn terms(&self) -> Vec<String> {
        let mut terms = Vec::new();
        self.root.collect_terms(true, &mut terms);
        terms
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
    fn eval(&self, doc: &Document) -> bool {
        match self {
            Node::Term(term) => doc.contains(&term.words),
            Node::Not(inner) => !inner.eval(doc),
            Node::And(parts) => parts.iter().all(|p| p.eval(doc)),
            Node::Or(parts) => parts.iter().any(|p| p.eval(doc)),
        }
    }

    fn collect_terms(&self, positive: bool, out: &mut Vec<String>) {
        match self {
            Node::Term(term) => {
                if positive && !out.contains(&term.source) {
                    out.push(term.source.clone());
                }
            }
            Node::Not(inner) => inner.collect_terms(!positive, out),
            Node::And(parts) | Node::Or(parts) => {
                for part in parts {
                    part.collect_terms(positive, out);
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

impl fmt::Display for Node {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Node::Term(term) if term.quoted => write!(f, "\"{}\"", term.source),
            Node::Term(term) => f.write_str(&term.source),
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
// Lexer
// ---------------------------------------------------------------------------

#[derive(Debug)]
enum TokenKind {
    Term(Term),
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
                let content = &chars[i + 1..];
                let Some(content_len) = content.iter().position(|&q| is_quote(q)) else {
                    return Err(QueryError::new(column, "unclosed quote"));
                };
                let content = &content[..content_len];
                let words = split_words(content, column + 1)?;
                if words.is_empty() {
                    return Err(QueryError::new(column, "empty phrase"));
                }
                let raw: String = content.iter().collect::<String>().to_lowercase();
                let source = raw.split_whitespace().collect::<Vec<_>>().join(" ");
                let term = Term {
                    source,
                    quoted: true,
                    words,
                };
                (TokenKind::Term(term), content_len + 2)
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
            _ => {
                let rest = &chars[i..];
                let len = rest
                    .iter()
                    .position(|&c| ends_word(c))
                    .unwrap_or(rest.len());
                let raw = &rest[..len];
                let text: String = raw.iter().collect();
                let kind = match text.as_str() {
                    "OR" => TokenKind::Or,
                    "NOT" => TokenKind::Not { dash: false },
                    _ => {
                        let words = split_words(raw, column)?;
                        if words.is_empty() {
                            return Err(QueryError::new(
                                column,
                                format!("{text:?} has no letters or digits to match"),
                            ));
                        }
                        let source = text.to_lowercase();
                        TokenKind::Term(Term {
                            source,
                            quoted: false,
                            words,
                        })
                    }
                };
                (kind, len)
            }
        };
        tokens.push(Token { kind, column });
        i += len;
    }
    Ok(tokens)
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
                kind: TokenKind::Term(_) | TokenKind::Not { .. } | TokenKind::Open,
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
            TokenKind::Term(term) => Ok(Node::Term(term)),
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

/// All subscriptions compiled together.
#[derive(Debug, Clone, Default)]
pub struct Matcher {
    /// Sorted by id; an id may appear more than once.
    subscriptions: Vec<(i64, Query)>,
}

impl Matcher {
    /// Compiles the subscriptions. An id given several times matches when any
    /// of its queries does.
    pub fn new(mut subscriptions: Vec<(i64, Query)>) -> Matcher {
        subscriptions.sort_by_key(|(id, _)| *id);
        Matcher { subscriptions }
    }

    /// Ids of the subscriptions whose query matches, ascending, each once.
    pub fn find_matches(&self, doc: &Document) -> Vec<i64> {
        // Naive for now: every query is evaluated against the document.
        let mut ids: Vec<i64> = Vec::new();
        for (id, query) in &self.subscriptions {
            if ids.last() != Some(id) && query.matches(doc) {
                ids.push(*id);
            }
        }
        ids
    }

    /// The number of subscriptions given to [`Matcher::new`].
    pub fn len(&self) -> usize {
        self.subscriptions.len()
    }

    pub fn is_empty(&self) -> bool {
        self.subscriptions.is_empty()
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
    fn matching_table() {
        // (name, query, title, body, expected)
        #[rustfmt::skip]
        let cases: &[(&str, &str, &str, &str, bool)] = &[
            // Terms and implicit AND.
            ("term in title", "asylum", "Asylum claims rise", "", true),
            ("term in body", "asylum", "News", "New asylum rules", true),
            ("term absent", "asylum", "News", "Nothing to see", false),
            ("and: both present", "asylum Texas", "Asylum cases in Texas", "", true),
            ("and: one missing", "asylum Texas", "Asylum cases in Ohio", "", false),
            ("and: across title and body", "asylum Texas", "Asylum", "in Texas", true),
            ("case-insensitive", "ASYLUM", "asylum", "", true),
            // Whole words only.
            ("ICE not in police", "ICE", "", "police said", false),
            ("ICE not in ICEcream", "ICE", "ICEcream sales", "", false),
            ("ICE in ICE's", "ICE", "ICE's raids", "", true),
            ("ICE as a word", "ICE", "", "agents from ICE arrived", true),
            ("OPT not in option", "OPT", "", "another option", false),
            ("OPT as a word", "OPT", "", "the OPT extension", true),
            ("EAD not in head", "EAD", "", "head of the agency", false),
            ("EAD as a word", "EAD", "", "EAD renewals", true),
            // Accents and Unicode folding.
            ("accent in text", "jose", "José Díaz", "", true),
            ("accent in query", "José", "JOSE", "", true),
            ("decomposed accent in text", "jose", "Jose\u{301}", "", true),
            ("unicode uppercase", "ÉCOLE", "", "une école", true),
            ("greek final sigma", "ΟΔΟΣ", "", "οδος", true),
            ("fullwidth letters", "ICE", "ＩＣＥ raids", "", true),
            ("accented decoy", "jose", "", "josé-maria", true),
            // Phrases.
            ("phrase", "\"green card\"", "", "How to get a green card", true),
            ("phrase wrong order", "\"green card\"", "", "the card is green", false),
            ("phrase words apart", "\"green card\"", "", "green and card", false),
            ("phrase ignores punctuation", "\"green card\"", "", "green, card", true),
            ("phrase across title and body", "\"green card\"", "Get your green", "card now", false),
            ("phrase at end of title", "\"green card\"", "A green card", "later", true),
            ("curly quotes", "“green card”", "", "green card holders", true),
            ("curly quotes order", "“green card”", "", "card green", false),
            ("prefix in phrase", "\"deport* order\"", "", "a deportation order", true),
            // Hyphenated query words are phrases of their parts.
            ("H-1B matches H-1B", "H-1B", "", "new H-1B rules", true),
            ("H-1B matches h 1b", "H-1B", "", "new h 1b rules", true),
            ("H-1B parts out of order", "H-1B", "", "1b h", false),
            ("H-1B does not yet match H1B", "H-1B", "", "H1B visas", false),
            ("I-485", "I-485", "", "filed form I-485 today", true),
            // OR.
            ("or: left", "H1B OR H-1B", "", "H1B lottery", true),
            ("or: right", "H1B OR H-1B", "", "H-1B lottery", true),
            ("or: neither", "H1B OR H-1B", "", "L-1 visas", false),
            ("pipe as OR", "TPS | parole", "", "humanitarian parole", true),
            ("pipe without spaces", "TPS|parole", "", "TPS extended", true),
            ("lowercase or is a word", "visa or", "", "visa", false),
            ("lowercase or is a word, present", "visa or", "", "visa or not", true),
            // Precedence: a b OR c = (a AND b) OR c.
            ("precedence: only c", "asylum Texas OR parole", "", "parole", true),
            ("precedence: a and b", "asylum Texas OR parole", "", "asylum in Texas", true),
            ("precedence: only a", "asylum Texas OR parole", "", "asylum", false),
            ("precedence: NOT tighter than AND", "visa -tourist student", "", "student visa", true),
            // Exclusion.
            ("dash excludes", "visa -tourist", "", "tourist visa", false),
            ("dash: excluded word absent", "visa -tourist", "", "student visa", true),
            ("NOT excludes", "visa NOT tourist", "", "tourist visa", false),
            ("NOT: excluded word absent", "visa NOT tourist", "", "student visa", true),
            ("exclude in title too", "visa -tourist", "Tourist", "visa", false),
            ("exclude phrase", "visa -\"visa lottery\"", "", "the visa lottery", false),
            ("exclude phrase, words apart", "visa -\"visa lottery\"", "", "visa and lottery", true),
            ("NOT group", "visa NOT (lottery OR tourist)", "", "tourist visa", false),
            ("NOT group, none present", "visa NOT (lottery OR tourist)", "", "student visa", true),
            ("dash group", "visa -(lottery OR tourist)", "", "visa lottery", false),
            ("double negation", "visa --tourist", "", "tourist visa", true),
            ("inner dash is not NOT", "H-1B", "", "h", false),
            // Prefix.
            ("prefix: longer word", "deport*", "", "deportation flights", true),
            ("prefix: past tense", "deport*", "Deported", "", true),
            ("prefix: the word itself", "deport*", "", "they deport people", true),
            ("prefix: not infix", "deport*", "", "redeported", false),
            ("prefix: accent", "jos*", "", "Josélito", true),
            ("prefix after hyphen", "I-48*", "", "form I-485", true),
            // Nested parentheses.
            ("nested parens", "((TPS OR parole) (Venezuela OR Haiti)) -Cuba", "", "TPS for Haiti", true),
            ("nested parens: excluded", "((TPS OR parole) (Venezuela OR Haiti)) -Cuba", "", "TPS for Haiti and Cuba", false),
            ("nested parens: missing country", "((TPS OR parole) (Venezuela OR Haiti)) -Cuba", "", "TPS extended", false),
            ("group then term", "(TPS OR parole) Venezuela", "Parole", "for Venezuela", true),
            ("group then term, missing", "(TPS OR parole) Venezuela", "", "Venezuela", false),
            // Odd text.
            ("empty document", "asylum", "", "", false),
            ("digits", "2024", "", "in 2024,", true),
            ("control chars in text", "asylum", "", "\u{0}asylum\u{7}", true),
        ];
        for &(name, query, title, body, expected) in cases {
            let doc = Document::new(title, body);
            assert_eq!(
                parse(query).matches(&doc),
                expected,
                "case {name:?}: query {query:?}, title {title:?}, body {body:?}"
            );
        }
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
    }

    #[test]
    fn terms_are_positive_and_distinct() {
        let q = parse("H-1B OR \"Green  Card\" -tourist NOT (lottery OR fee) deport* h-1b --Visa");
        assert_eq!(q.terms(), ["h-1b", "green card", "deport*", "visa"]);
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
        ] {
            let parsed = parse(query);
            let shown = parsed.to_string();
            assert_eq!(parse(&shown), parsed, "{query:?} displayed as {shown:?}");
        }
        assert_eq!(parse("(a OR b) c").to_string(), "(a OR b) c");
        assert_eq!(parse("A -\"B  c\"").to_string(), "a -\"b c\"");
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
        ];
        let matcher = Matcher::new(
            subscriptions
                .iter()
                .map(|&(id, q)| (id, parse(q)))
                .collect(),
        );
        assert_eq!(matcher.len(), subscriptions.len());
        assert!(!matcher.is_empty());

        let doc = Document::new(
            "Asylum seekers in Texas",
            "Police said deportations would resume.",
        );
        assert_eq!(matcher.find_matches(&doc), [-2, 3, 5, 7]);
        assert_eq!(
            matcher.find_matches(&Document::new("", "Green card news from Ohio")),
            [3, 12]
        );
        assert!(matcher.find_matches(&Document::new("", "")).is_empty());

        let empty = Matcher::new(Vec::new());
        assert!(empty.is_empty());
        assert_eq!(empty.len(), 0);
        assert!(empty.find_matches(&doc).is_empty());
    }

    /// Parses `query` and exercises everything that can be done with the result.
    fn exercise(query: &str, doc: &Document) {
        match Query::parse(query) {
            Ok(q) => {
                q.matches(doc);
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
        );
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
        ] {
            exercise(&query, &doc);
        }

        // Random sequences of troublesome fragments (deterministic LCG), so
        // that many are valid and exercise matching and `Display` too.
        let fragments = [
            "a", "Zé", "e\u{301}", "H-1B", "ς", "1", "🦀", "*", "-", "--", " ", " ", "\t", "\u{0}",
            "\"", "“", "”", "(", ")", "|", "OR", "NOT", " OR ", " NOT ", ".",
        ];
        let mut state: u64 = 0x2545_f491_4f6c_dd1d;
        let mut next = move || {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (state >> 33) as usize
        };
        let mut valid = 0;
        for _ in 0..20_000 {
            let query: String = (0..next() % 12)
                .map(|_| fragments[next() % fragments.len()])
                .collect();
            exercise(&query, &doc);
            valid += usize::from(Query::parse(&query).is_ok());
        }
        assert!(valid > 2_000, "only {valid} random queries were valid");
    }

    #[test]
    fn document_positions_respect_fields() {
        let doc = Document::new("a b", "c d");
        assert_eq!(doc.tokens.len(), 4);
        assert_eq!(doc.body_start, 2);
        assert!(doc.contains(&[word("b", false)]));
        assert!(!doc.contains(&[word("b", false), word("c", false)]));
        assert!(doc.contains(&[word("c", false), word("d", false)]));
        assert!(!doc.contains(&[word("d", false), word("e", false)]));
        assert!(!doc.contains(&[]));
    }

    fn word(text: &str, prefix: bool) -> Word {
        Word {
            text: text.to_string(),
            prefix,
        }
    }
}
