//! Feed bytes → normalized [`Item`]s.
//!
//! Pure: no I/O. The body is decoded to UTF-8 first (feed-rs trusts only the XML
//! declaration), sniffed (JSON Feed, RSS/RDF/Atom, or an HTML page that is not a feed),
//! parsed by feed-rs under `catch_unwind`, and every entry gets a stable key of our own:
//! guid → canonical link → hash of title, date and content. feed-rs's random fallback id
//! is never used, so an item is never "new" twice.

use std::collections::HashMap;
use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind};

use chrono::{DateTime, Utc};
use encoding_rs::{Encoding, UTF_8, WINDOWS_1252};
use feed_rs::model::{Entry, Text};
use scraper::{Html, Node};
use sha2::{Digest, Sha256};
use url::Url;

/// One feed entry, reduced to what Tidings stores and matches. All text is plain text:
/// markup stripped, entities decoded, whitespace collapsed.
#[derive(Debug, Clone, PartialEq)]
pub struct Item {
    /// Stable identity within its feed (see the module doc).
    pub key: String,
    pub guid: Option<String>,
    /// Canonical link: lowercase host, no fragment, no `utm_*` parameters.
    pub link: Option<String>,
    pub title: String,
    pub summary: String,
    pub content: String,
    /// Publication (or update) date; `None` when missing or in the future.
    pub published: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ParsedFeed {
    pub title: Option<String>,
    pub items: Vec<Item>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParseError {
    /// The body is an HTML page rather than a feed.
    NotAFeed,
    /// Nothing in the body looks like RSS, Atom or JSON Feed.
    Unrecognized,
    /// It looked like a feed but feed-rs rejected it.
    Invalid(String),
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParseError::NotAFeed => write!(f, "not a feed: the server sent an HTML page"),
            ParseError::Unrecognized => {
                write!(f, "not a feed: no RSS, Atom or JSON Feed document found")
            }
            ParseError::Invalid(why) => write!(f, "invalid feed: {why}"),
        }
    }
}

impl std::error::Error for ParseError {}

/// Parses a fetched body. `content_type` is the HTTP header (for its charset),
/// `base` the final URL after redirects (relative links resolve against it), and `now`
/// the clock (dates in the future are dropped).
pub fn parse_feed(
    body: &[u8],
    content_type: Option<&str>,
    base: &Url,
    now: DateTime<Utc>,
) -> Result<ParsedFeed, ParseError> {
    let text = decode(body, content_type);
    let head: String = text
        .trim_start()
        .chars()
        .take(2048)
        .collect::<String>()
        .to_lowercase();
    let looks_like_feed = head.starts_with('{')
        || ["<rss", "<feed", "<rdf:rdf", "<rdf"]
            .iter()
            .any(|root| head.contains(root));
    if !looks_like_feed {
        return Err(
            if head.contains("<html") || head.contains("<!doctype html") {
                ParseError::NotAFeed
            } else {
                ParseError::Unrecognized
            },
        );
    }

    let parser = feed_rs::parser::Builder::new()
        .base_uri(Some(base.as_str()))
        // An empty id tells us "the feed gave none"; we then derive our own key.
        .id_generator(|_, _, _| String::new())
        .build();
    let feed = catch_unwind(AssertUnwindSafe(|| parser.parse(text.as_bytes())))
        .map_err(|_| ParseError::Invalid("the feed parser crashed on this document".into()))?
        .map_err(|e| ParseError::Invalid(e.to_string()))?;

    let mut seen: HashMap<String, usize> = HashMap::new();
    let items = feed
        .entries
        .iter()
        .map(|entry| {
            let mut item = convert(entry, now);
            // A guid repeated within one document must still give distinct keys.
            let n = seen.entry(item.key.clone()).or_insert(0);
            *n += 1;
            if *n > 1 {
                item.key = hash(&[
                    &item.key,
                    item.link.as_deref().unwrap_or(""),
                    &n.to_string(),
                ]);
            }
            item
        })
        .collect();
    Ok(ParsedFeed {
        title: feed.title.as_ref().map(text_of).filter(|t| !t.is_empty()),
        items,
    })
}

fn convert(entry: &Entry, now: DateTime<Utc>) -> Item {
    let title = entry.title.as_ref().map(text_of).unwrap_or_default();
    let summary = entry.summary.as_ref().map(text_of).unwrap_or_default();
    let content = entry
        .content
        .as_ref()
        .and_then(|c| c.body.as_deref())
        .map(html_to_text)
        .unwrap_or_default();
    let link = entry
        .links
        .iter()
        .find(|l| l.rel.as_deref().is_none_or(|r| r == "alternate"))
        .or_else(|| entry.links.first())
        .and_then(|l| canonical_link(&l.href));
    let published = entry.published.or(entry.updated).filter(|d| *d <= now);
    let guid = Some(entry.id.trim().to_string()).filter(|g| !g.is_empty());

    let key = match (&guid, &link) {
        (Some(guid), _) => hash(&["guid", guid]),
        (None, Some(link)) => hash(&["link", link]),
        (None, None) => hash(&[
            "content",
            &title,
            &published.map(|d| d.to_rfc3339()).unwrap_or_default(),
            &summary,
            &content,
        ]),
    };
    Item {
        key,
        guid,
        link,
        title,
        summary,
        content,
        published,
    }
}

fn hash(parts: &[&str]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p.as_bytes());
        h.update([0u8]);
    }
    h.finalize()
        .iter()
        .take(16)
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn text_of(text: &Text) -> String {
    html_to_text(&text.content)
}

/// Canonical form of a link, so one story reached through two feeds is one story:
/// lowercase scheme and host, no default port, no fragment, no `utm_*` parameters.
pub fn canonical_link(href: &str) -> Option<String> {
    let mut url = Url::parse(href.trim()).ok()?;
    if !matches!(url.scheme(), "http" | "https") {
        return None;
    }
    url.set_fragment(None);
    let kept: Vec<(String, String)> = url
        .query_pairs()
        .filter(|(k, _)| !k.to_ascii_lowercase().starts_with("utm_"))
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    if kept.is_empty() {
        url.set_query(None);
    } else if url.query_pairs().count() != kept.len() {
        url.query_pairs_mut().clear().extend_pairs(kept);
    }
    Some(url.to_string())
}

/// Plain text of an HTML fragment (plain text passes through unchanged, with entities
/// decoded): block elements become spaces so words never run together, script and
/// style content is dropped, whitespace and control characters collapse to one space.
pub fn html_to_text(html: &str) -> String {
    const SKIP: &[&str] = &["script", "style", "noscript", "template", "head", "title"];
    const INLINE: &[&str] = &[
        "a", "abbr", "b", "bdi", "bdo", "cite", "code", "data", "dfn", "em", "i", "kbd", "mark",
        "q", "s", "samp", "small", "span", "strong", "sub", "sup", "time", "u", "var", "font",
    ];
    let fragment = Html::parse_fragment(html);
    let mut out = String::with_capacity(html.len());
    let mut skipping = 0usize;
    for edge in fragment.tree.root().traverse() {
        match edge {
            ego_tree::iter::Edge::Open(node) => match node.value() {
                Node::Text(t) if skipping == 0 => out.push_str(t),
                Node::Element(e) => {
                    if SKIP.contains(&e.name()) {
                        skipping += 1;
                        out.push(' ');
                    } else if !INLINE.contains(&e.name()) {
                        out.push(' ');
                    }
                }
                _ => {}
            },
            ego_tree::iter::Edge::Close(node) => {
                if let Node::Element(e) = node.value() {
                    if SKIP.contains(&e.name()) {
                        skipping = skipping.saturating_sub(1);
                        out.push(' ');
                    } else if !INLINE.contains(&e.name()) {
                        out.push(' ');
                    }
                }
            }
        }
    }
    collapse_whitespace(&out)
}

fn collapse_whitespace(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for word in s.split(|c: char| c.is_whitespace() || c.is_control()) {
        if !word.is_empty() {
            if !out.is_empty() {
                out.push(' ');
            }
            out.push_str(word);
        }
    }
    out
}

/// Decodes a feed body to UTF-8 text, as Miniflux does: valid UTF-8 is trusted; otherwise
/// the XML declaration's label, then the HTTP charset, then windows-1252 (a superset of
/// ISO-8859-1). The XML declaration is rewritten to say UTF-8 (feed-rs obeys it), and
/// characters XML forbids are removed.
pub fn decode(body: &[u8], content_type: Option<&str>) -> String {
    let text = if let Some((encoding, bom_len)) = Encoding::for_bom(body) {
        encoding
            .decode_without_bom_handling(&body[bom_len..])
            .0
            .into_owned()
    } else if let Ok(s) = std::str::from_utf8(body) {
        s.to_string()
    } else {
        let encoding = declared_encoding(body)
            .or_else(|| content_type.and_then(charset_of))
            .filter(|e| *e != UTF_8)
            .unwrap_or(WINDOWS_1252);
        encoding.decode_without_bom_handling(body).0.into_owned()
    };
    let text = rewrite_declaration(&text);
    text.chars()
        .filter(|&c| {
            matches!(c, '\t' | '\n' | '\r') || (c >= ' ' && c != '\u{FFFE}' && c != '\u{FFFF}')
        })
        .collect()
}

fn declared_encoding(body: &[u8]) -> Option<&'static Encoding> {
    let head = &body[..body.len().min(512)];
    let head = String::from_utf8_lossy(head);
    let decl_end = head.find("?>")?;
    let decl = head.get(..decl_end)?.trim_start();
    if !decl.starts_with("<?xml") {
        return None;
    }
    let rest = &decl[decl.find("encoding")? + "encoding".len()..];
    let rest = rest.trim_start().strip_prefix('=')?.trim_start();
    let quote = rest.chars().next().filter(|c| *c == '"' || *c == '\'')?;
    let label = rest[1..].split(quote).next()?;
    Encoding::for_label(label.trim().as_bytes())
}

fn charset_of(content_type: &str) -> Option<&'static Encoding> {
    content_type.split(';').skip(1).find_map(|param| {
        let (name, value) = param.split_once('=')?;
        (name.trim().eq_ignore_ascii_case("charset"))
            .then(|| Encoding::for_label(value.trim().trim_matches('"').as_bytes()))
            .flatten()
    })
}

fn rewrite_declaration(text: &str) -> String {
    let trimmed = text.trim_start_matches('\u{FEFF}');
    if let Some(rest) = trimmed.strip_prefix("<?xml")
        && let Some(end) = rest.find("?>")
    {
        return format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>{}",
            &rest[end + 2..]
        );
    }
    trimmed.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 28, 12, 0, 0).unwrap()
    }

    fn base() -> Url {
        Url::parse("https://news.example/feed.xml").unwrap()
    }

    fn parse(body: &[u8]) -> Result<ParsedFeed, ParseError> {
        parse_feed(body, None, &base(), now())
    }

    const RSS: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<rss version="2.0"><channel><title>News</title>
<item><title>USCIS updates &lt;b&gt;H-1B&lt;/b&gt; rules</title><link>https://News.Example/a?utm_source=x&amp;id=7#top</link>
<guid>tag:a</guid><pubDate>Fri, 27 Nov 2026 10:00:00 GMT</pubDate>
<description>&lt;p&gt;First&lt;/p&gt;&lt;p&gt;second &amp;amp; third&lt;/p&gt;&lt;script&gt;alert(1)&lt;/script&gt;</description></item>
<item><title>No guid</title><link>/relative/b</link></item>
<item><title>Nothing at all</title><description>just text</description></item>
<item><title>From the future</title><guid>tag:f</guid><pubDate>Fri, 27 Nov 2099 10:00:00 GMT</pubDate></item>
</channel></rss>"#;

    #[test]
    fn rss_items_are_normalized() {
        let feed = parse(RSS.as_bytes()).unwrap();
        assert_eq!(feed.title.as_deref(), Some("News"));
        assert_eq!(feed.items.len(), 4);
        let a = &feed.items[0];
        assert_eq!(a.title, "USCIS updates H-1B rules");
        assert_eq!(a.summary, "First second & third");
        assert_eq!(a.link.as_deref(), Some("https://news.example/a?id=7"));
        assert_eq!(a.guid.as_deref(), Some("tag:a"));
        assert_eq!(
            a.published,
            Some(Utc.with_ymd_and_hms(2026, 11, 27, 10, 0, 0).unwrap())
        );
        assert_eq!(
            feed.items[1].link.as_deref(),
            Some("https://news.example/relative/b")
        );
        assert_eq!(feed.items[3].published, None, "future dates are dropped");
    }

    #[test]
    fn keys_are_stable_and_never_random() {
        let first = parse(RSS.as_bytes()).unwrap();
        let second = parse(RSS.as_bytes()).unwrap();
        let keys: Vec<_> = first.items.iter().map(|i| &i.key).collect();
        assert_eq!(
            keys,
            second.items.iter().map(|i| &i.key).collect::<Vec<_>>()
        );
        // guid, link and content keys are all distinct
        let mut unique = keys.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), keys.len());
        // the link-keyed item keeps its key when its title is edited
        let edited = RSS.replace("No guid", "No guid (updated)");
        assert_eq!(
            parse(edited.as_bytes()).unwrap().items[1].key,
            first.items[1].key
        );
    }

    #[test]
    fn duplicate_guids_in_one_document_get_distinct_keys() {
        let xml = r#"<rss version="2.0"><channel><title>t</title>
            <item><title>one</title><guid>same</guid><link>https://x.example/1</link></item>
            <item><title>two</title><guid>same</guid><link>https://x.example/2</link></item>
            </channel></rss>"#;
        let feed = parse(xml.as_bytes()).unwrap();
        assert_ne!(feed.items[0].key, feed.items[1].key);
    }

    #[test]
    fn atom_and_json_feed() {
        let atom = r#"<?xml version="1.0"?><feed xmlns="http://www.w3.org/2005/Atom"><title>A</title><id>urn:a</id>
            <entry><id>urn:e1</id><title type="html">Asylum &amp;amp; parole</title><updated>2026-11-27T08:00:00Z</updated>
            <link rel="alternate" href="https://a.example/e1"/><content type="html">&lt;p&gt;Body&lt;/p&gt;</content></entry></feed>"#;
        let feed = parse(atom.as_bytes()).unwrap();
        assert_eq!(feed.items[0].title, "Asylum & parole");
        assert_eq!(feed.items[0].content, "Body");
        assert_eq!(feed.items[0].link.as_deref(), Some("https://a.example/e1"));

        let json = r#"{"version":"https://jsonfeed.org/version/1.1","title":"J","items":[
            {"id":"j1","url":"https://j.example/1","title":"TPS extended","content_html":"<b>Venezuela</b> TPS","date_published":"2026-11-27T09:00:00Z"}]}"#;
        let feed = parse(json.as_bytes()).unwrap();
        assert_eq!(feed.items[0].title, "TPS extended");
        assert_eq!(feed.items[0].content, "Venezuela TPS");
        assert_eq!(feed.items[0].guid.as_deref(), Some("j1"));
    }

    #[test]
    fn rss_1_0_and_0_91() {
        let rdf = r#"<?xml version="1.0"?>
<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#" xmlns="http://purl.org/rss/1.0/">
  <channel rdf:about="https://r.example/"><title>R</title><link>https://r.example/</link><description>d</description></channel>
  <item rdf:about="https://r.example/1"><title>Parole program ends</title><link>https://r.example/1</link><description>Details</description></item>
</rdf:RDF>"#;
        let feed = parse(rdf.as_bytes()).unwrap();
        assert_eq!(feed.items[0].title, "Parole program ends");
        assert_eq!(feed.items[0].link.as_deref(), Some("https://r.example/1"));

        let rss091 = r#"<rss version="0.91"><channel><title>Old</title><link>https://o.example/</link><description>d</description>
  <item><title>Visa bulletin for December</title><link>https://o.example/vb</link><description>Dates</description></item></channel></rss>"#;
        let feed = parse(rss091.as_bytes()).unwrap();
        assert_eq!(feed.items[0].title, "Visa bulletin for December");
        assert_eq!(feed.items[0].summary, "Dates");
    }

    #[test]
    fn legacy_encodings_come_out_right() {
        // (name, bytes, content type, expected title)
        let latin1_declared: Vec<u8> = [
            b"<?xml version=\"1.0\" encoding=\"ISO-8859-1\"?><rss version=\"2.0\"><channel><title>t</title><item><title>Jos".as_slice(),
            &[0xE9],
            b" pide asilo</title><guid>1</guid></item></channel></rss>",
        ]
        .concat();
        let undeclared_1252: Vec<u8> = [
            b"<rss version=\"2.0\"><channel><title>t</title><item><title>".as_slice(),
            &[0x93],
            b"green card".as_slice(),
            &[0x94],
            b"</title><guid>1</guid></item></channel></rss>",
        ]
        .concat();
        let http_charset: Vec<u8> = [
            b"<rss version=\"2.0\"><channel><title>t</title><item><title>Mar".as_slice(),
            &[0xED],
            b"a</title><guid>1</guid></item></channel></rss>",
        ]
        .concat();
        let utf8_mislabeled = "<?xml version=\"1.0\" encoding=\"ISO-8859-1\"?><rss version=\"2.0\"><channel><title>t</title><item><title>José</title><guid>1</guid></item></channel></rss>";
        let cases: Vec<(&str, &[u8], Option<&str>, &str)> = vec![
            (
                "ISO-8859-1 declared",
                &latin1_declared,
                None,
                "José pide asilo",
            ),
            (
                "undeclared windows-1252",
                &undeclared_1252,
                None,
                "\u{201C}green card\u{201D}",
            ),
            (
                "charset from HTTP",
                &http_charset,
                Some("text/xml; charset=iso-8859-1"),
                "María",
            ),
            (
                "UTF-8 with a wrong declaration",
                utf8_mislabeled.as_bytes(),
                None,
                "José",
            ),
        ];
        for (name, bytes, ct, expected) in cases {
            let feed =
                parse_feed(bytes, ct, &base(), now()).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(feed.items[0].title, expected, "{name}");
        }
    }

    #[test]
    fn bad_bodies_are_named() {
        let cases: &[(&str, &[u8], ParseError)] = &[
            (
                "html page",
                b"<!DOCTYPE html><html><head><title>Home</title></head><body>hi</body></html>",
                ParseError::NotAFeed,
            ),
            (
                "garbage",
                b"\x00\x01 this is not xml at all",
                ParseError::Unrecognized,
            ),
            ("empty", b"", ParseError::Unrecognized),
        ];
        for (name, body, expected) in cases {
            assert_eq!(&parse(body).unwrap_err(), expected, "{name}");
        }
        let truncated = &RSS.as_bytes()[..RSS.len() / 2];
        assert!(
            matches!(parse(truncated), Err(ParseError::Invalid(_))),
            "truncated"
        );
    }

    #[test]
    fn html_to_text_cases() {
        let cases = [
            ("entities", "AT&amp;T &nbsp;news&hellip;", "AT&T news…"),
            (
                "blocks separate words",
                "<p>one</p><p>two</p><br>three",
                "one two three",
            ),
            ("inline joins", "H-<b>1B</b>", "H-1B"),
            (
                "script dropped",
                "a<script>evil()</script>b<style>.x{}</style>",
                "a b",
            ),
            (
                "attributes never become text",
                "<div class=\"center-wrap\">news</div>",
                "news",
            ),
            (
                "plain text passes",
                "Green card lottery",
                "Green card lottery",
            ),
            ("control characters", "a\u{0007}b\tc", "a b c"),
        ];
        for (name, input, expected) in cases {
            assert_eq!(html_to_text(input), expected, "{name}");
        }
    }

    #[test]
    fn canonical_links() {
        let cases = [
            (
                "host case and fragment",
                "HTTPS://WWW.Example.ORG/Path#frag",
                Some("https://www.example.org/Path"),
            ),
            (
                "utm only",
                "https://x.example/a?utm_source=rss&utm_medium=feed",
                Some("https://x.example/a"),
            ),
            (
                "utm mixed",
                "https://x.example/a?p=1&utm_campaign=c",
                Some("https://x.example/a?p=1"),
            ),
            (
                "default port",
                "http://x.example:80/a",
                Some("http://x.example/a"),
            ),
            ("not http", "mailto:someone@x.example", None),
        ];
        for (name, input, expected) in cases {
            assert_eq!(canonical_link(input).as_deref(), expected, "{name}");
        }
    }
}
