//! Feeds in and out as OPML, the subscription-list format every feed reader exports.
//!
//! [`import`] appends the feeds of an OPML file to the text of `config.toml` as
//! `[[feeds]]` tables (toml_edit), leaving every existing byte where it was; [`export`]
//! writes the configured feeds as OPML 2.0. Both are plain functions over text: reading
//! and writing files is the caller's job.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use anyhow::{Context, Result, anyhow, bail};
use chrono::{DateTime, Utc};
use opml::{OPML, Outline};
use toml_edit::{Array, ArrayOfTables, DocumentMut, Item, Table, value};
use unicode_normalization::UnicodeNormalization;
use unicode_normalization::char::is_combining_mark;
use url::Url;

use crate::config::{Config, FeedConfig, is_identifier};

/// Ids made from titles are cut to at most this many characters, at a word boundary.
const ID_CHARS: usize = 32;

/// [`export`] records each feed's id as the category `/tidings/id/ID`, so that importing
/// the file into another Tidings keeps the ids that subscribers' `feed:` queries use.
const ID_CATEGORY: &str = "/tidings/id/";

/// What [`import`] made of an OPML file.
#[derive(Debug)]
pub struct Import {
    /// The config text with the new `[[feeds]]` tables; the old text if none were added.
    pub config_text: String,
    /// One entry per feed outline of the OPML file, in document order.
    pub entries: Vec<Entry>,
}

impl Import {
    /// Feeds appended to the config.
    pub fn added(&self) -> usize {
        self.entries.iter().filter(|e| e.is_added()).count()
    }

    /// Feed outlines left out, each with its reason in [`Entry::outcome`].
    pub fn skipped(&self) -> usize {
        self.entries.len() - self.added()
    }
}

/// One feed outline of the OPML file and what the import did with it.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// The outline's `title`, else its `text`, trimmed; may be empty.
    pub name: String,
    /// The outline's `xmlUrl`, as written.
    pub url: String,
    pub outcome: Outcome,
}

impl Entry {
    /// Whether the feed was appended to the config.
    pub fn is_added(&self) -> bool {
        matches!(self.outcome, Outcome::Added { .. })
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Appended as a `[[feeds]]` table with this id, URL (normalized) and tags.
    Added {
        id: String,
        url: Url,
        tags: Vec<String>,
    },
    /// Skipped: the config already has this URL, as the feed with this id.
    InConfig { id: String },
    /// Skipped: the file lists this URL further up, added as the feed with this id
    /// (which also gets this outline's tags: readers list a feed once per folder).
    Duplicate { id: String },
    /// Skipped: `xmlUrl` is not an absolute http(s) URL; says why.
    BadUrl(String),
    /// Skipped: `feeds import --check` fetched it and it failed; says why.
    Unreachable(String),
}

/// Adds the feeds of `opml_text` to `config_text`, the file at `config_path`.
///
/// Every outline with an `xmlUrl` is a feed, at any depth; the titles of the folders
/// around it, then its `category` values, become its tags (as slugs: "US Official" →
/// `us-official`). Its id is a slug of its title (or host), made unique with `-2`, `-3`….
/// Feeds whose URL the config already has, repeats within the file and bad URLs are
/// skipped and reported. The new tables go after the last `[[feeds]]` table, or at the
/// end; nothing else in the text changes. The result is validated like any config:
/// an error means nothing should be written.
pub fn import(config_text: &str, config_path: &Path, opml_text: &str) -> Result<Import> {
    let entries = plan(config_text, config_path, opml_text)?;
    let config_text = apply(config_text, config_path, &entries)?;
    Ok(Import {
        config_text,
        entries,
    })
}

/// The first half of [`import`]: what would happen to each feed outline, without
/// touching the config text. A caller may turn `Added` entries into `Unreachable` ones
/// (after fetching them) before [`apply`].
pub fn plan(config_text: &str, config_path: &Path, opml_text: &str) -> Result<Vec<Entry>> {
    let config = Config::parse(config_text, config_path)?;
    let outlines = read_outlines(opml_text)?;
    let mut found = Vec::new();
    find_feeds(&outlines, &mut Vec::new(), &mut found);

    let mut taken: HashSet<String> = config.feeds.iter().map(|f| f.id.clone()).collect();
    let in_config: HashMap<String, &str> = config
        .feeds
        .iter()
        .map(|f| (url_key(&f.url), f.id.as_str()))
        .collect();
    // Normalized URL → index in `entries` of the feed added for it.
    let mut in_file: HashMap<String, usize> = HashMap::new();
    let mut entries: Vec<Entry> = Vec::with_capacity(found.len());
    for feed in found {
        let outcome = match feed_url(&feed.url) {
            Err(why) => Outcome::BadUrl(why),
            Ok(url) => {
                let key = url_key(&url);
                if let Some(id) = in_config.get(&key) {
                    Outcome::InConfig { id: id.to_string() }
                } else if let Some(&first) = in_file.get(&key) {
                    let Outcome::Added { id, tags, .. } = &mut entries[first].outcome else {
                        unreachable!("in_file only holds added feeds")
                    };
                    for tag in feed.tags {
                        if !tags.contains(&tag) {
                            tags.push(tag);
                        }
                    }
                    Outcome::Duplicate { id: id.clone() }
                } else {
                    let base = feed
                        .id
                        .filter(|id| is_identifier(id))
                        .unwrap_or_else(|| id_for(&feed.name, &url));
                    let id = unique_id(&base, &taken);
                    taken.insert(id.clone());
                    in_file.insert(key, entries.len());
                    Outcome::Added {
                        id,
                        url,
                        tags: feed.tags,
                    }
                }
            }
        };
        entries.push(Entry {
            name: feed.name,
            url: feed.url,
            outcome,
        });
    }

    Ok(entries)
}

/// The second half of [`import`]: `config_text` with the `Added` entries appended,
/// checked to be a valid config.
pub fn apply(config_text: &str, config_path: &Path, entries: &[Entry]) -> Result<String> {
    let config_text = append_feeds(config_text, entries)?;
    Config::parse(&config_text, config_path).map_err(|e| {
        anyhow!("with the new feeds the config would not be valid, so nothing was written:\n{e}")
    })?;
    Ok(config_text)
}

/// The configured feeds as an OPML 2.0 document, for another reader or another Tidings.
///
/// Feeds are grouped in folders named after their first tag (in the order the tags first
/// appear), followed by the feeds without tags. Each outline has `text` and `title` (the
/// name), `type="rss"`, `xmlUrl`, and a `category` listing the tags and the id (see
/// [`import`]).
pub fn export(config: &Config, now: DateTime<Utc>) -> String {
    let mut folders: Vec<(&str, Vec<&FeedConfig>)> = Vec::new();
    let mut loose = Vec::new();
    for feed in &config.feeds {
        match feed.tags.first() {
            None => loose.push(feed),
            Some(tag) => match folders.iter_mut().find(|(t, _)| t == tag) {
                Some((_, feeds)) => feeds.push(feed),
                None => folders.push((tag, vec![feed])),
            },
        }
    }

    let mut xml =
        String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<opml version=\"2.0\">\n");
    xml.push_str("  <head>\n    <title>Tidings feeds</title>\n");
    xml.push_str(&format!(
        "    <dateCreated>{}</dateCreated>\n",
        now.to_rfc2822()
    ));
    xml.push_str("  </head>\n  <body>\n");
    for (tag, feeds) in folders {
        let tag = escape(tag);
        xml.push_str(&format!("    <outline text=\"{tag}\" title=\"{tag}\">\n"));
        for feed in feeds {
            xml.push_str(&feed_outline(feed, "      "));
        }
        xml.push_str("    </outline>\n");
    }
    for feed in loose {
        xml.push_str(&feed_outline(feed, "    "));
    }
    xml.push_str("  </body>\n</opml>\n");
    xml
}

// ---- import ---------------------------------------------------------------------------

/// A feed outline as found, before it is checked against the config.
struct FoundFeed {
    name: String,
    url: String,
    tags: Vec<String>,
    /// The id recorded by [`export`], if the file came from Tidings.
    id: Option<String>,
}

fn read_outlines(text: &str) -> Result<Vec<Outline>> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    if !text.contains("<opml") {
        // The parser would only say "unexpected end of file".
        bail!("not valid OPML: no <opml> element (is this an OPML file?)");
    }
    match OPML::from_str(text) {
        Ok(document) => Ok(document.body.outlines),
        Err(opml::Error::BodyHasNoOutlines) => Ok(Vec::new()),
        // The XML parser's message (with line:column, when it has one) is the source.
        Err(e) => match std::error::Error::source(&e) {
            Some(cause) => bail!("not valid OPML: {cause}"),
            None => bail!("not valid OPML: {e}"),
        },
    }
}

/// Collects the outlines with an `xmlUrl` under `outlines`; `folders` holds the tags of
/// the folders around them.
fn find_feeds(outlines: &[Outline], folders: &mut Vec<String>, found: &mut Vec<FoundFeed>) {
    for outline in outlines {
        let url = outline.xml_url.as_deref().unwrap_or("").trim();
        if url.is_empty() {
            let tag = slug(title(outline), 64);
            let is_new = !tag.is_empty() && !folders.contains(&tag);
            if is_new {
                folders.push(tag);
            }
            find_feeds(&outline.outlines, folders, found);
            if is_new {
                folders.pop();
            }
            continue;
        }
        let mut tags = folders.clone();
        let mut id = None;
        // "A string of comma-separated slash-delimited category strings" (OPML 2.0).
        for category in outline.category.iter().flat_map(|c| c.split(',')) {
            let category = category.trim();
            if let Some(recorded) = category.strip_prefix(ID_CATEGORY) {
                id = Some(recorded.to_string());
                continue;
            }
            // A path like "/Agencies/Enforcement" gives the tag of its last part.
            let last = category.rsplit('/').map(str::trim).find(|s| !s.is_empty());
            let tag = slug(last.unwrap_or_default(), 64);
            if !tag.is_empty() && !tags.contains(&tag) {
                tags.push(tag);
            }
        }
        found.push(FoundFeed {
            // Text: control characters (a `&#13;`) become spaces; tabs and line breaks stay.
            name: title(outline)
                .chars()
                .map(|c| match c {
                    '\t' | '\n' => c,
                    c if c.is_control() => ' ',
                    c => c,
                })
                .collect(),
            url: url.to_string(),
            tags,
            id,
        });
    }
}

/// An outline's `title`, else its `text`, trimmed.
fn title(outline: &Outline) -> &str {
    outline
        .title
        .as_deref()
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .unwrap_or(outline.text.trim())
}

fn feed_url(text: &str) -> Result<Url, String> {
    match Url::parse(text) {
        Ok(url) if matches!(url.scheme(), "http" | "https") && url.host().is_some() => Ok(url),
        Ok(_) => Err("not an http(s) URL".to_string()),
        Err(e) => Err(format!("not a URL ({e})")),
    }
}

/// What two URLs are compared by: `Url`'s normal form (scheme and host lowercased,
/// default port dropped, …) without the fragment, which never reaches the server.
fn url_key(url: &Url) -> String {
    let mut url = url.clone();
    url.set_fragment(None);
    url.into()
}

/// A short id from the feed's name, else from its host ("www.uscis.gov" → `uscis-gov`).
fn id_for(name: &str, url: &Url) -> String {
    let from_name = slug(name, ID_CHARS);
    if !from_name.is_empty() {
        return from_name;
    }
    let host = url.host_str().unwrap_or("");
    let from_host = slug(host.strip_prefix("www.").unwrap_or(host), ID_CHARS);
    if from_host.is_empty() {
        "feed".to_string()
    } else {
        from_host
    }
}

/// `base`, or `base-2`, `base-3`… whichever is not taken yet.
fn unique_id(base: &str, taken: &HashSet<String>) -> String {
    if !taken.contains(base) {
        return base.to_string();
    }
    let mut n = 2;
    loop {
        let suffix = format!("-{n}");
        // Ids are ASCII, so any byte is a char boundary; stay within 64 characters.
        let id = format!("{}{suffix}", &base[..base.len().min(64 - suffix.len())]);
        if !taken.contains(&id) {
            return id;
        }
        n += 1;
    }
}

/// Lowercase ASCII letters and digits, each run of anything else one `-`, accents
/// dropped ("Noticias de inmigración" → `noticias-de-inmigracion`); at most `max`
/// characters, cut at a `-` where there is one.
fn slug(text: &str, max: usize) -> String {
    let mut slug = String::new();
    for c in text.nfkd() {
        if c.is_ascii_alphanumeric() {
            slug.push(c.to_ascii_lowercase());
        } else if is_combining_mark(c) || matches!(c, '\'' | '’') {
            // "inmigración" → "inmigracion", "Ana's" → "anas".
        } else if !slug.is_empty() && !slug.ends_with('-') {
            slug.push('-');
        }
    }
    let slug = slug.trim_end_matches('-');
    if slug.len() <= max {
        return slug.to_string();
    }
    let cut = &slug[..max];
    if slug.as_bytes()[max] == b'-' {
        return cut.to_string();
    }
    match cut.rfind('-') {
        Some(end) if end > 0 => cut[..end].to_string(),
        _ => cut.to_string(),
    }
}

/// `config_text` with a `[[feeds]]` table for each added entry after the last
/// `[[feeds]]` table (or at the end); every other byte stays as it was.
fn append_feeds(config_text: &str, entries: &[Entry]) -> Result<String> {
    let added: Vec<_> = entries
        .iter()
        .filter_map(|e| match &e.outcome {
            Outcome::Added { id, url, tags } => Some((&e.name, id, url, tags)),
            _ => None,
        })
        .collect();
    if added.is_empty() {
        return Ok(config_text.to_string());
    }
    let mut doc: DocumentMut = config_text.parse().context("reading the config as TOML")?;

    // The new tables go right after the last [[feeds]] table and the comment lines just
    // below it (a commented-out key belongs to the table above), or else at the very end.
    // What lies between two tables is the prefix of the second; split it there.
    let last_feed = doc
        .get("feeds")
        .and_then(Item::as_array_of_tables)
        .and_then(|feeds| feeds.iter().last())
        .and_then(Table::position);
    let next = last_feed.and_then(|at| first_table_after(doc.as_table(), at));
    let lead = match next.and_then(|at| table_at(doc.as_table_mut(), at)) {
        Some(next) => {
            let gap = next.decor().prefix().and_then(|p| p.as_str()).unwrap_or("");
            let (above, below) = split_gap(gap);
            let lead = format!("{above}\n");
            let below = below.to_string();
            next.decor_mut().set_prefix(below);
            lead
        }
        None => {
            let mut lead = doc.trailing().as_str().unwrap_or("").to_string();
            doc.set_trailing("");
            if !lead.is_empty() && !lead.ends_with('\n') {
                lead.push('\n');
            }
            if !config_text.trim().is_empty() {
                lead.push('\n');
            }
            lead
        }
    };

    let feeds = doc
        .entry("feeds")
        .or_insert(Item::ArrayOfTables(ArrayOfTables::new()));
    let Some(feeds) = feeds.as_array_of_tables_mut() else {
        bail!(
            "the config writes `feeds` as an inline array; import appends [[feeds]] tables, \
             so rewrite the feeds as [[feeds]] tables first"
        );
    };
    for (i, (name, id, url, tags)) in added.into_iter().enumerate() {
        let mut table = Table::new();
        // A blank line before each table, as in the shipped config.
        table
            .decor_mut()
            .set_prefix(if i == 0 { lead.as_str() } else { "\n" });
        // A table without a position follows the table before it (the last [[feeds]]);
        // the first [[feeds]] of a file go after everything.
        if last_feed.is_none() {
            table.set_position(Some(isize::MAX));
        }
        table["id"] = value(id.as_str());
        if !name.is_empty() {
            table["name"] = value(name.as_str());
        }
        table["url"] = value(url.as_str());
        if !tags.is_empty() {
            table["tags"] = value(tags.iter().map(String::as_str).collect::<Array>());
        }
        feeds.push(table);
    }
    let text = doc.to_string();
    if !is_insertion(config_text, &text) {
        bail!(
            "adding the feeds would change other parts of the config, so nothing was written \
             (add them by hand, and please report this)"
        );
    }
    Ok(text)
}

/// The comments and blank lines between two tables, split into those that belong to the
/// table above (the comment lines right below it, up to a blank line) and the rest. A
/// comment block that runs into the next header belongs to that header.
fn split_gap(gap: &str) -> (&str, &str) {
    let mut end = 0;
    for line in gap.split_inclusive('\n') {
        if !line.trim_start().starts_with('#') {
            break;
        }
        end += line.len();
    }
    if end == gap.len() {
        ("", gap)
    } else {
        gap.split_at(end)
    }
}

/// The position of the first table with a header after position `after`.
fn first_table_after(table: &Table, after: isize) -> Option<isize> {
    let own = table
        .position()
        .filter(|&at| at > after && !table.is_implicit() && !table.is_dotted());
    let nested = table.iter().filter_map(|(_, item)| match item {
        Item::Table(t) => first_table_after(t, after),
        Item::ArrayOfTables(a) => a.iter().filter_map(|t| first_table_after(t, after)).min(),
        _ => None,
    });
    own.into_iter().chain(nested).min()
}

/// The table at position `at`, at any depth.
fn table_at(table: &mut Table, at: isize) -> Option<&mut Table> {
    if table.position() == Some(at) {
        return Some(table);
    }
    table.iter_mut().find_map(|(_, item)| match item {
        Item::Table(t) => table_at(t, at),
        Item::ArrayOfTables(a) => a.iter_mut().find_map(|t| table_at(t, at)),
        _ => None,
    })
}

/// Whether `new` is `old` with one run of text inserted somewhere.
fn is_insertion(old: &str, new: &str) -> bool {
    let (old, new) = (old.as_bytes(), new.as_bytes());
    let prefix = old.iter().zip(new).take_while(|(a, b)| a == b).count();
    let (old, new) = (&old[prefix..], &new[prefix..]);
    let suffix = old
        .iter()
        .rev()
        .zip(new.iter().rev())
        .take_while(|(a, b)| a == b)
        .count();
    suffix == old.len()
}

// ---- export ---------------------------------------------------------------------------

fn feed_outline(feed: &FeedConfig, indent: &str) -> String {
    let name = escape(&feed.name);
    let mut categories = feed.tags.clone();
    categories.push(format!("{ID_CATEGORY}{}", feed.id));
    format!(
        "{indent}<outline type=\"rss\" text=\"{name}\" title=\"{name}\" xmlUrl=\"{}\" category=\"{}\"/>\n",
        escape(feed.url.as_str()),
        escape(&categories.join(","))
    )
}

/// `text` for an XML attribute or element: markup characters as entities, tabs and line
/// breaks as character references (so attribute values keep them), and the control
/// characters XML 1.0 cannot carry at all left out.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\t' => out.push_str("&#9;"),
            '\n' => out.push_str("&#10;"),
            '\r' => out.push_str("&#13;"),
            c if c < ' ' || c == '\u{fffe}' || c == '\u{ffff}' => {}
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const PATH: &str = "/etc/tidings/config.toml";

    fn run(config_text: &str, opml_text: &str) -> Import {
        import(config_text, Path::new(PATH), opml_text)
            .unwrap_or_else(|e| panic!("import failed: {e:#}"))
    }

    fn config(text: &str) -> Config {
        Config::parse(text, Path::new(PATH)).unwrap_or_else(|e| panic!("{e}\n{text}"))
    }

    fn opml(body: &str) -> String {
        format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<opml version=\"1.0\"><head><title>t</title></head><body>{body}</body></opml>"
        )
    }

    /// (id, name, url, tags) of every feed, for comparing feed sets.
    fn feeds(config: &Config) -> Vec<(String, String, String, Vec<String>)> {
        config
            .feeds
            .iter()
            .map(|f| {
                (
                    f.id.clone(),
                    f.name.clone(),
                    f.url.to_string(),
                    f.tags.clone(),
                )
            })
            .collect()
    }

    fn outcomes(import: &Import) -> Vec<(&str, &Outcome)> {
        import
            .entries
            .iter()
            .map(|e| (e.name.as_str(), &e.outcome))
            .collect()
    }

    #[test]
    fn nested_folders_and_categories_become_tags() {
        let text = opml(
            r#"<outline text="Immigration" title="Immigration">
                 <outline text="US Official">
                   <outline type="rss" text="DHS News" xmlUrl="https://www.dhs.gov/news.xml"/>
                   <outline text="Rules" title="Rules">
                     <outline type="rss" text="ICE" title="ICE News" xmlUrl="https://www.ice.gov/rss" category="/Agencies/Enforcement,official"/>
                   </outline>
                 </outline>
               </outline>
               <outline text="Noticias en Español"><outline text="Inmigración" xmlUrl="https://example.es/feed"/></outline>
               <outline text="Top" xmlUrl="https://top.example/feed"/>"#,
        );
        let import = run("", &text);
        let got = feeds(&config(&import.config_text));
        let tags = |s: &[&str]| s.iter().map(|t| t.to_string()).collect::<Vec<_>>();
        assert_eq!(
            got,
            vec![
                (
                    "dhs-news".into(),
                    "DHS News".into(),
                    "https://www.dhs.gov/news.xml".into(),
                    tags(&["immigration", "us-official"])
                ),
                (
                    "ice-news".into(),
                    "ICE News".into(),
                    "https://www.ice.gov/rss".into(),
                    tags(&[
                        "immigration",
                        "us-official",
                        "rules",
                        "enforcement",
                        "official"
                    ])
                ),
                (
                    "inmigracion".into(),
                    "Inmigración".into(),
                    "https://example.es/feed".into(),
                    tags(&["noticias-en-espanol"])
                ),
                (
                    "top".into(),
                    "Top".into(),
                    "https://top.example/feed".into(),
                    vec![]
                ),
            ]
        );
        assert_eq!((import.added(), import.skipped()), (4, 0));
    }

    #[test]
    fn known_and_repeated_urls_are_skipped() {
        let config_text =
            "[[feeds]]\nid = \"uscis\"\nurl = \"https://www.uscis.gov/news/rss-feed/59144\"\n";
        let text = opml(
            r#"<outline text="US">
                 <outline text="USCIS again" xmlUrl="HTTPS://WWW.USCIS.GOV:443/news/rss-feed/59144#top"/>
                 <outline text="DHS" xmlUrl="https://www.dhs.gov/news.xml"/>
               </outline>
               <outline text="Official">
                 <outline text="DHS (2)" xmlUrl="https://www.dhs.gov/news.xml"/>
               </outline>"#,
        );
        let import = run(config_text, &text);
        let added = Outcome::Added {
            id: "dhs".into(),
            url: Url::parse("https://www.dhs.gov/news.xml").unwrap(),
            tags: vec!["us".into(), "official".into()],
        };
        assert_eq!(
            outcomes(&import),
            vec![
                ("USCIS again", &Outcome::InConfig { id: "uscis".into() }),
                ("DHS", &added),
                ("DHS (2)", &Outcome::Duplicate { id: "dhs".into() }),
            ],
            "the repeat's folder is merged into the first as a tag"
        );
        assert_eq!(config(&import.config_text).feeds.len(), 2);
    }

    #[test]
    fn bad_urls_are_reported_and_skipped() {
        // (name, xmlUrl, words the reason must contain)
        let cases = [
            ("relative", "/feed.xml", "not a URL"),
            ("garbage", "not a url", "not a URL"),
            ("ftp", "ftp://example.org/feed", "not an http(s) URL"),
            (
                "feed scheme",
                "feed://example.org/rss",
                "not an http(s) URL",
            ),
            ("javascript", "javascript:alert(1)", "not an http(s) URL"),
        ];
        for (name, url, words) in cases {
            let text = opml(&format!(
                r#"<outline text="{name}" xmlUrl="{url}"/><outline text="fine" xmlUrl="https://fine.example/"/>"#
            ));
            let import = run("", &text);
            match &import.entries[0].outcome {
                Outcome::BadUrl(why) => assert!(why.contains(words), "{name}: {why}"),
                other => panic!("{name}: {other:?}"),
            }
            assert_eq!(import.entries[0].url, url, "{name}");
            assert_eq!((import.added(), import.skipped()), (1, 1), "{name}");
        }
    }

    /// A name is text: a carriage return (`&#13;` is valid XML) or any other control
    /// character an OPML file carries becomes a space, so the config the import writes
    /// loads (a feed name holds no control characters).
    #[test]
    fn control_characters_in_names_become_spaces() {
        let text = opml(
            r#"<outline text="Agency&#13;News" xmlUrl="https://a.example/feed"/>
               <outline text="Two&#10;lines&#9;tab" xmlUrl="https://b.example/feed"/>"#,
        );
        let import = run("", &text);
        let loaded = config(&import.config_text);
        let names: Vec<&str> = loaded.feeds.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, ["Agency News", "Two\nlines\ttab"]);
    }

    #[test]
    fn ids_are_short_slugs_made_unique() {
        let config_text =
            "[[feeds]]\nid = \"visaverge\"\nurl = \"https://www.visaverge.com/feed/\"\n";
        let text = opml(
            r#"<outline text="VisaVerge" xmlUrl="https://www.visaverge.com/news/feed/"/>
               <outline text="VisaVerge" xmlUrl="https://www.visaverge.com/tag/h1b/feed/"/>
               <outline text="Federal Register: Immigration &amp; Customs Enforcement documents" xmlUrl="https://www.federalregister.gov/ice.rss"/>
               <outline text="" xmlUrl="https://www.gov.uk/ukvi.atom"/>
               <outline text="日本" xmlUrl="https://example.jp/"/>
               <outline text="Exported" xmlUrl="https://x.example/" category="us,/tidings/id/uscis_news"/>
               <outline text="Exported, id taken" xmlUrl="https://y.example/" category="/tidings/id/visaverge"/>"#,
        );
        let import = run(config_text, &text);
        let ids: Vec<_> = import
            .entries
            .iter()
            .map(|e| match &e.outcome {
                Outcome::Added { id, .. } => id.as_str(),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(
            ids,
            [
                "visaverge-2",
                "visaverge-3",
                "federal-register-immigration",
                "gov-uk",
                "example-jp",
                "uscis_news",
                "visaverge-4"
            ]
        );
        assert_eq!(
            unique_id(&"x".repeat(64), &HashSet::from(["x".repeat(64)])).len(),
            64
        );
    }

    #[test]
    fn new_tables_follow_the_last_feed_and_nothing_else_moves() {
        let commented = "# Tidings\n\ndatabase = \"t.db\"   # beside me\n\n[poll]\n# often\ninterval = \"15m\"\n\n\
            # First feed\n[[feeds]]\nid = \"a\"\nurl = \"https://a.example/feed\"  # the main one\ntags = [ \"us\" ]\n\n\
            # Second feed, with a comment block\n#   that spans lines\n[[feeds]]\nid   =   \"b\"\nurl = \"https://b.example/feed\"\n\
            # interval = \"1h\"\n\n\n\
            # Synonyms come after the feeds\n[synonyms]\n\"green card\" = [\"LPR\"]\n\n# The end.\n";
        let feed_a = "[[feeds]]\nid = \"a\"\nurl = \"https://a.example/\"\n";
        let into_header =
            format!("{feed_a}# Synonyms\n[synonyms]\n\"TPS\" = [\"temporary protected status\"]\n");
        let header_below =
            format!("{feed_a}[synonyms]\n\"TPS\" = [\"temporary protected status\"]\n");
        let nested_after = format!("{feed_a}\n# Mail\n[mail.smtp]\nhost = \"smtp.example.org\"\n");
        // (name, config, the text the new tables go right after; "" for the end)
        let cases: &[(&str, &str, &str)] = &[
            (
                "comments between tables, a commented-out key under the last feed",
                commented,
                "# interval = \"1h\"\n",
            ),
            (
                "a comment block that runs into the next header",
                &into_header,
                feed_a,
            ),
            ("the next header right below", &header_below, feed_a),
            ("a nested table after the feeds", &nested_after, feed_a),
            ("the shipped config: feeds last", crate::config::EXAMPLE, ""),
            (
                "no feeds yet, a trailing comment",
                "[poll]\ninterval = \"5m\"\n# trailing comment\n",
                "",
            ),
            ("no final newline", "database = \"t.db\"", ""),
        ];
        let text = opml(
            r#"<outline text="C" xmlUrl="https://c.example/"/><outline text="D" xmlUrl="https://d.example/"/>"#,
        );
        let block = "\n[[feeds]]\nid = \"c\"\nname = \"C\"\nurl = \"https://c.example/\"\n\
                     \n[[feeds]]\nid = \"d\"\nname = \"D\"\nurl = \"https://d.example/\"\n";
        for &(name, config_text, after) in cases {
            let new = run(config_text, &text).config_text;
            let at = match after {
                "" => config_text.len(),
                after => config_text.find(after).expect(name) + after.len(),
            };
            let newline = if config_text[..at].ends_with('\n') {
                ""
            } else {
                "\n"
            };
            let (before, rest) = config_text.split_at(at);
            // Every byte before and after exactly as it was.
            assert_eq!(
                new,
                format!("{before}{newline}{block}{rest}"),
                "{name}:\n{new}"
            );
            assert_eq!(
                config(&new).feeds.len(),
                config(config_text).feeds.len() + 2,
                "{name}"
            );
        }
        assert_eq!(run("", &text).config_text, block[1..], "an empty file");
    }

    #[test]
    fn nothing_to_add_returns_the_same_text() {
        let config_text = "# only a comment\n[[feeds]]\nid = \"a\"\nurl = \"https://a.example/\"\n";
        let text = opml(r#"<outline text="A" xmlUrl="https://a.example/"/>"#);
        assert_eq!(run(config_text, &text).config_text, config_text);
        let empty_body = "<opml version=\"2.0\"><head/><body/></opml>";
        let import = run(config_text, empty_body);
        assert_eq!(
            (import.entries.len(), import.config_text.as_str()),
            (0, config_text)
        );
    }

    #[test]
    fn malformed_opml_is_an_error_with_the_position() {
        // (name, OPML text, words the message must contain)
        let cases = [
            (
                "unclosed tag",
                "<opml version=\"2.0\"><head/><body>\n  <outline text=\"a\" xmlUrl=\"https://a.example/\"\n</body></opml>",
                "at 2:48",
            ),
            (
                "raw ampersand",
                "<opml version=\"2.0\"><head/><body>\n<outline text=\"a & b\" xmlUrl=\"https://a.example/?x=1&y=2\"/></body></opml>",
                "entity: & b",
            ),
            ("not XML", "<opml {not xml", "at 1:6"),
            (
                "fixture",
                include_str!("../tests/fixtures/malformed.opml"),
                "10:",
            ),
            (
                "an RSS feed",
                "<rss version=\"2.0\"><channel/></rss>",
                "no <opml> element",
            ),
            (
                "bad version",
                "<opml version=\"9\"><head/><body><outline text=\"a\"/></body></opml>",
                "version",
            ),
        ];
        for (name, text, words) in cases {
            let err = import("", Path::new(PATH), text).expect_err(name);
            let message = format!("{err:#}");
            assert!(message.starts_with("not valid OPML: "), "{name}: {message}");
            assert!(message.contains(words), "{name}: {message}");
        }
    }

    #[test]
    fn an_invalid_config_is_refused() {
        let err = import(
            "[[feeds]]\nid = \"A B\"\nurl = \"x\"\n",
            Path::new(PATH),
            &opml(""),
        )
        .unwrap_err();
        assert!(err.to_string().contains("config.toml:2:6"), "{err}");
        let inline = "feeds = [{ id = \"a\", url = \"https://a.example/\" }]\n";
        let err = import(
            inline,
            Path::new(PATH),
            &opml(r#"<outline text="B" xmlUrl="https://b.example/"/>"#),
        )
        .unwrap_err();
        assert!(err.to_string().contains("inline array"), "{err}");
    }

    #[test]
    fn hostile_names_survive_export_then_import() {
        let names = [
            "Fish & Chips <b>News</b>",
            "She said \"hi\" and 'bye'",
            "Two\nlines\tand a tab",
            "]]> --> <!-- &amp; &#10;",
            "\"\"\" ''' triple quotes",
        ];
        let mut text = String::new();
        for (i, name) in names.iter().enumerate() {
            let tags = if i % 2 == 0 {
                "tags = [\"news\", \"us\"]\n"
            } else {
                ""
            };
            text.push_str(&format!(
                "[[feeds]]\nid = \"f{i}\"\nname = {}\nurl = \"https://example.org/{i}?a=1&b=<2>\"\n{tags}\n",
                toml_edit::Value::from(*name),
            ));
        }
        let original = config(&text);
        let now = DateTime::parse_from_rfc3339("2025-06-02T10:00:00Z")
            .unwrap()
            .to_utc();
        let xml = export(&original, now);
        // Line breaks and tabs as references: a conforming parser turns literal ones in
        // attributes into spaces.
        assert!(
            xml.contains("text=\"Two&#10;lines&#9;and a tab\"")
                && xml.contains("text=\"Fish &amp; Chips &lt;b&gt;News&lt;/b&gt;\"")
                && xml.contains("text=\"She said &quot;hi&quot; and &apos;bye&apos;\""),
            "{xml}"
        );
        assert_eq!(
            escape("bell\u{7} nul\0 \u{fffe}end"),
            "bell nul end",
            "not XML 1.0 characters"
        );
        let parsed = OPML::from_str(&xml).unwrap_or_else(|e| panic!("{e:?}\n{xml}"));
        assert_eq!(parsed.version, "2.0");
        let head = parsed.head.unwrap();
        assert_eq!(head.title.as_deref(), Some("Tidings feeds"));
        assert_eq!(
            head.date_created.as_deref(),
            Some("Mon, 2 Jun 2025 10:00:00 +0000")
        );

        let imported = config(&run("", &xml).config_text);
        let mut expected = feeds(&original);
        let mut got = feeds(&imported);
        expected.sort();
        got.sort();
        assert_eq!(got, expected, "{xml}");
    }

    #[test]
    fn export_groups_by_first_tag() {
        let config = config(crate::config::EXAMPLE);
        let xml = export(&config, Utc::now());
        let parsed = OPML::from_str(&xml).unwrap();
        let top: Vec<(&str, Vec<&str>)> = parsed
            .body
            .outlines
            .iter()
            .map(|o| {
                let children = o.outlines.iter().map(|c| c.text.as_str()).collect();
                (o.text.as_str(), children)
            })
            .collect();
        assert_eq!(
            top,
            vec![
                (
                    "us",
                    vec![
                        "USCIS News Releases",
                        "Federal Register: USCIS documents",
                        "Immigration Impact"
                    ]
                ),
                ("news", vec!["VisaVerge"]),
                ("uk", vec!["GOV.UK: UK Visas and Immigration"]),
            ]
        );
        let uscis = &parsed.body.outlines[0].outlines[0];
        assert_eq!(uscis.r#type.as_deref(), Some("rss"));
        assert_eq!(uscis.title.as_deref(), Some("USCIS News Releases"));
        assert_eq!(
            uscis.xml_url.as_deref(),
            Some("https://www.uscis.gov/news/rss-feed/59144")
        );
        assert_eq!(
            uscis.category.as_deref(),
            Some("us,official,/tidings/id/uscis-news")
        );

        let untagged = Config::parse(
            "[[feeds]]\nid = \"a\"\nurl = \"https://a.example/\"\n",
            Path::new(PATH),
        )
        .unwrap();
        let parsed = OPML::from_str(&export(&untagged, Utc::now())).unwrap();
        assert_eq!(
            parsed.body.outlines[0].xml_url.as_deref(),
            Some("https://a.example/")
        );
    }

    #[test]
    fn slugs() {
        // (text, max, slug)
        let cases = [
            ("USCIS News Releases", 32, "uscis-news-releases"),
            (
                "  GOV.UK: Visas & Immigration!  ",
                32,
                "gov-uk-visas-immigration",
            ),
            ("Noticias de inmigración", 32, "noticias-de-inmigracion"),
            ("Ana's “Feed”", 32, "anas-feed"),
            (
                "Federal Register: Immigration and Customs",
                32,
                "federal-register-immigration-and",
            ),
            (
                "Federal Register: U.S. Immigration and Customs",
                32,
                "federal-register-u-s-immigration",
            ),
            (
                "abcdefghijklmnopqrstuvwxyz0123456789",
                32,
                "abcdefghijklmnopqrstuvwxyz012345",
            ),
            ("ＦＵＬＬ width", 32, "full-width"),
            ("日本語", 32, ""),
        ];
        for (text, max, want) in cases {
            assert_eq!(slug(text, max), want, "{text:?}");
        }
    }

    #[test]
    fn insertions() {
        // (old, new, is an insertion)
        let cases = [
            ("abc", "abc", true),
            ("abc", "abcX", true),
            ("abc", "Xabc", true),
            ("abc", "aXYbc", true),
            ("abc", "ab", false),
            ("abc", "aXc", false),
            ("abcabc", "abcXabc", true),
            ("", "X", true),
        ];
        for (old, new, want) in cases {
            assert_eq!(is_insertion(old, new), want, "{old:?} → {new:?}");
        }
    }
}
