//! Pages without feeds (issue 15). A **listing page** (`kind = "html"`) becomes a feed:
//! each element its `item_selector` selects is an item, with a stable key made from its
//! resolved link. A **watched page** (`kind = "watch"`) is remembered as the text of what
//! its `selector` selects; when that text changes (word by word: spacing, line breaks and
//! markup never count), the change is an item whose text says what was added and removed.
//! Pure: HTML in, items out.

use chrono::{DateTime, Utc};
use dom_query::{Document, Selection};
use serde::{Deserialize, Serialize};
use similar::{Algorithm, DiffOp, capture_diff_slices_deadline};
use url::Url;

use crate::parse::{Item, canonical_link, parse_timestamp, visible};

/// How the items of a listing page are found (`kind = "html"`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListingRules {
    /// Each element it selects is one item.
    pub item_selector: String,
    /// Within an item: its title (default: the text of its link, else of its first
    /// heading, else its own text).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title_selector: Option<String>,
    /// Within an item: the element whose `href` is its link (default: the item itself if
    /// it is a link, else its first link).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link_selector: Option<String>,
    /// Within an item: its date, from a `datetime` or `content` attribute or the text
    /// (default: its first `<time datetime>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub date_selector: Option<String>,
}

/// Items read from one page at most: a page that selects more is cut here, and says so.
pub const MAX_PAGE_ITEMS: usize = 2_000;
/// Characters of an item's own text kept as its summary.
const MAX_SUMMARY_CHARS: usize = 4_000;
/// Pages nesting elements deeper than this are not taken apart: building their tree costs
/// time growing with the square of the depth (30,000 unclosed `<div>`s: seconds), and no
/// real page nests more than a few dozen.
pub const MAX_DEPTH: usize = 1_000;

/// The items of a listing page at `page`, in page order, each once (by key), and a note
/// when the page had more than [`MAX_PAGE_ITEMS`]. An error when the selector selects
/// nothing: the site changed, and the admin should know, rather than hear nothing ever
/// again.
pub fn listing(
    html: &str,
    page: &Url,
    rules: &ListingRules,
    now: DateTime<Utc>,
) -> Result<(Vec<Item>, Option<String>), String> {
    let document = parsed(html)?;
    let base = base_of(&document, page);
    let selected = document.try_select(&rules.item_selector).ok_or_else(|| {
        format!(
            "item_selector {:?} selects nothing on the page (has the site changed?)",
            rules.item_selector
        )
    })?;
    let mut items = Vec::new();
    let mut keys = std::collections::HashSet::new();
    let mut selected_count = 0;
    for element in selected.iter() {
        selected_count += 1;
        if items.len() == MAX_PAGE_ITEMS {
            continue;
        }
        let title = match &rules.title_selector {
            Some(selector) => element
                .try_select(selector)
                .map(|t| text_of(&t))
                .unwrap_or_default(),
            None => default_title(&element),
        };
        let link = item_link(&element, rules, &base);
        let own_text = text_of(&element);
        if title.is_empty() && own_text.is_empty() {
            continue;
        }
        let published = item_date(&element, rules.date_selector.as_deref()).filter(|d| *d <= now);
        // The link names the entry; without one, its title does (the rest of its text
        // may say "3 hours ago").
        let key = match &link {
            Some(link) => format!("link:{}", crate::parse::hash(&["page-link", link])),
            None => format!("text:{}", crate::parse::hash(&["page-text", &title])),
        };
        if !keys.insert(key.clone()) {
            continue;
        }
        items.push(Item {
            key,
            guid: None,
            link,
            title,
            summary: own_text.chars().take(MAX_SUMMARY_CHARS).collect(),
            content: String::new(),
            published,
            declared_lang: None,
        });
    }
    if items.is_empty() {
        return Err(format!(
            "item_selector {:?} selects only empty elements",
            rules.item_selector
        ));
    }
    let cut = (selected_count > MAX_PAGE_ITEMS).then(|| {
        format!("the page lists {selected_count} entries; only the first {MAX_PAGE_ITEMS} are read")
    });
    Ok((items, cut))
}

/// `html` as a tree, unless it nests deeper than [`MAX_DEPTH`]; without the parts that
/// are never shown (scripts, styles, `noscript`, templates), whose text changes with
/// every render (nonces, tokens).
fn parsed(html: &str) -> Result<Document, String> {
    if crate::parse::nesting_depth(html, MAX_DEPTH) > MAX_DEPTH {
        return Err(format!(
            "the page nests elements more than {MAX_DEPTH} deep: not read"
        ));
    }
    let document = Document::from(html);
    document
        .select("script, style, noscript, template")
        .remove();
    Ok(document)
}

/// What relative links resolve against: the page's `<base href>` (as browsers do), else
/// the page's own address.
fn base_of(document: &Document, page: &Url) -> Url {
    document
        .select("base[href]")
        .attr("href")
        .and_then(|href| page.join(href.trim()).ok())
        .filter(|u| matches!(u.scheme(), "http" | "https"))
        .unwrap_or_else(|| page.clone())
}

/// The text of an element as a reader sees it: words of block elements apart, entities
/// decoded, whitespace and control characters collapsed to single spaces.
fn text_of(element: &Selection<'_>) -> String {
    visible(crate::parse::html_to_text(&element.html()))
}

/// An entry's link: what `link_selector` selects, else the entry itself if it is a
/// link, else the link in its headline (or title), else its first link whose text reads
/// like a headline, else its first web link. Never a `javascript:` or `mailto:` one.
fn item_link(element: &Selection<'_>, rules: &ListingRules, base: &Url) -> Option<String> {
    let resolve = |anchor: &Selection<'_>| {
        anchor.iter().find_map(|a| {
            let href = a.attr("href")?;
            let url = base.join(href.trim()).ok()?;
            listing_link(&url)
        })
    };
    if let Some(selector) = &rules.link_selector {
        return resolve(&element.try_select(selector)?);
    }
    if element.is("a[href]") {
        return resolve(element);
    }
    let headline = rules
        .title_selector
        .iter()
        .map(|t| format!("{t} a[href], a[href]{t}"))
        .chain(["h1 a[href], h2 a[href], h3 a[href], h4 a[href], h5 a[href], h6 a[href]".into()]);
    for selector in headline {
        if let Some(link) = element.try_select(&selector).and_then(|a| resolve(&a)) {
            return Some(link);
        }
    }
    let anchors = element.try_select("a[href]")?;
    let story = anchors
        .iter()
        .filter(|a| text_of(a).chars().count() >= MIN_STORY_LINK_CHARS)
        .find_map(|a| resolve(&a));
    story.or_else(|| resolve(&anchors))
}

/// Query parameters that name a visit or a click, not a page: a site that rewrites them
/// into every link on each render must not make every entry new. (Not `sid`: news CMSs
/// use it as the story id.)
const VISIT_PARAMETERS: &[&str] = &[
    "phpsessid",
    "jsessionid",
    "sessionid",
    "session_id",
    "fbclid",
    "gclid",
    "dclid",
    "msclkid",
    "yclid",
    "mc_cid",
    "mc_eid",
    "_ga",
    "_gl",
    "_hsenc",
    "_hsmi",
    "igshid",
    "ref_src",
];

/// A listing entry's link as it is keyed and shown: [`canonical_link`], and without the
/// session and click parameters of [`VISIT_PARAMETERS`] (`;jsessionid=…` too).
fn listing_link(url: &Url) -> Option<String> {
    let mut url = url.clone();
    if !matches!(url.scheme(), "http" | "https") {
        return None;
    }
    let path = url.path().to_string();
    if let Some(at) = path.to_ascii_lowercase().find(";jsessionid=") {
        url.set_path(&path[..at]);
    }
    let kept: Vec<(String, String)> = url
        .query_pairs()
        .filter(|(k, _)| !VISIT_PARAMETERS.contains(&k.to_ascii_lowercase().as_str()))
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    if kept.is_empty() {
        url.set_query(None);
    } else if url.query_pairs().count() != kept.len() {
        url.query_pairs_mut().clear().extend_pairs(kept);
    }
    canonical_link(url.as_str())
}

fn default_title(element: &Selection<'_>) -> String {
    for selector in ["h1, h2, h3, h4, h5, h6", "a[href]"] {
        if let Some(found) = element.try_select(selector) {
            let text = text_of(&found.first());
            if !text.is_empty() {
                return text;
            }
        }
    }
    text_of(element).chars().take(200).collect()
}

fn item_date(element: &Selection<'_>, selector: Option<&str>) -> Option<DateTime<Utc>> {
    let found = element.try_select(selector.unwrap_or("time[datetime]"))?;
    let node = found.first();
    let raw = node
        .attr("datetime")
        .or_else(|| node.attr("content"))
        .map(|a| a.to_string())
        .unwrap_or_else(|| text_of(&node));
    parse_timestamp(&raw)
}

/// Spaces (line breaks too) and control characters collapsed, ends trimmed.
fn one_line(text: &str) -> String {
    text.split(|c: char| c.is_whitespace() || c.is_control())
        .filter(|w| !w.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

// ---- suggesting a listing ----------------------------------------------------------------

/// What `tidings feeds discover` proposes for a page without a feed: the rules that read
/// its repeated list of article links, how many entries they find and the first few.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Suggestion {
    pub rules: ListingRules,
    pub entries: usize,
    /// (title, link) of the first entries, in page order.
    pub sample: Vec<(String, String)>,
}

/// Like elements under one parent: the parent and the elements' [`signature`].
type GroupKey = (dom_query::NodeId, String);
/// One element of a group, with the title and link of its first story link.
type Entry = (dom_query::NodeId, String, String);

/// Links whose text is shorter than this are menus and buttons, not stories.
const MIN_STORY_LINK_CHARS: usize = 15;
/// A list needs this many entries to be one.
const MIN_ENTRIES: usize = 3;

/// Finds the page's repeated list of article links: the elements of one kind (tag and
/// classes) under one parent that each hold a link with a story-like text, outside the
/// navigation, header, footer and sidebars; the largest such group wins. `None` when
/// there is no list of at least three.
pub fn suggest_listing(html: &str, page: &Url) -> Option<Suggestion> {
    use std::collections::HashMap;
    let document = parsed(html).ok()?;
    let base = base_of(&document, page);
    // (parent, signature) → the distinct elements, in page order, with their first link.
    let mut groups: HashMap<GroupKey, Vec<Entry>> = HashMap::new();
    let mut order: Vec<GroupKey> = Vec::new();
    for anchor in document.select("a[href]").nodes() {
        let title = visible(crate::parse::html_to_text(&anchor.html()));
        if title.chars().count() < MIN_STORY_LINK_CHARS {
            continue;
        }
        let Some(link) = anchor
            .attr("href")
            .and_then(|href| base.join(href.trim()).ok())
            .and_then(|u| listing_link(&u))
        else {
            continue;
        };
        let mut chain = vec![*anchor];
        let mut chrome = false;
        let mut node = *anchor;
        while let Some(parent) = node.parent().filter(|p| p.is_element()) {
            let name = parent
                .node_name()
                .map(|n| n.to_ascii_lowercase())
                .unwrap_or_default();
            if matches!(name.as_str(), "nav" | "header" | "footer" | "aside") {
                chrome = true;
                break;
            }
            if matches!(name.as_str(), "body" | "html") {
                break;
            }
            chain.push(parent);
            node = parent;
        }
        if chrome {
            continue;
        }
        for element in chain.iter().take(5) {
            let Some(parent) = element.parent() else {
                continue;
            };
            let key = (parent.id, signature(element));
            let members = groups.entry(key.clone()).or_insert_with(|| {
                order.push(key.clone());
                Vec::new()
            });
            if !members.iter().any(|(id, _, _)| *id == element.id) {
                members.push((element.id, title.clone(), link.clone()));
            }
        }
    }
    // The largest group; on a tie, the one found first (the outermost entry element
    // comes after the link in `order`, so prefer the later key of equal size: it holds
    // the whole entry, date and teaser included).
    let mut best: Option<&GroupKey> = None;
    for key in &order {
        let size = groups[key].len();
        if size >= MIN_ENTRIES && best.is_none_or(|b| size >= groups[b].len()) {
            best = Some(key);
        }
    }
    let key = best?;
    let members = &groups[key];
    let parent = document
        .select("*")
        .nodes()
        .iter()
        .find(|n| n.id == key.0)
        .cloned()?;
    let plain = key.1.clone();
    let qualified = format!("{} > {plain}", signature(&parent));
    let fits = |selector: &str| {
        dom_query::Matcher::new(selector).is_ok()
            && document.try_select(selector).map_or(0, |s| s.length()) == members.len()
    };
    let item_selector = [plain, qualified].into_iter().find(|s| fits(s))?;
    Some(Suggestion {
        rules: ListingRules {
            item_selector,
            ..ListingRules::default()
        },
        entries: members.len(),
        sample: members
            .iter()
            .take(3)
            .map(|(_, title, link)| (title.clone(), link.clone()))
            .collect(),
    })
}

/// `tag.class1.class2` (or `tag#id` when it has an id and no class): how an element
/// is selected among its siblings.
fn signature(element: &dom_query::NodeRef<'_>) -> String {
    let tag = element
        .node_name()
        .map(|n| n.to_ascii_lowercase())
        .unwrap_or_default();
    let classes: Vec<String> = element
        .attr("class")
        .map(|c| {
            c.split_whitespace()
                .filter(|c| {
                    c.chars()
                        .all(|ch| ch.is_ascii_alphanumeric() || ch == '-' || ch == '_')
                })
                .map(|c| format!(".{c}"))
                .collect()
        })
        .unwrap_or_default();
    if classes.is_empty()
        && let Some(id) = element.attr("id").filter(|id| {
            !id.is_empty()
                && id
                    .chars()
                    .all(|ch| ch.is_ascii_alphanumeric() || ch == '-' || ch == '_')
        })
    {
        return format!("{tag}#{id}");
    }
    format!("{tag}{}", classes.concat())
}

// ---- watched pages ---------------------------------------------------------------------

/// The remembered text of a watched page: what `selector` selects, each element's text
/// with its lines kept (a table row stays a line) and spacing collapsed. An error when it
/// selects nothing (or only empty elements).
pub fn watched_text(html: &str, selector: &str) -> Result<String, String> {
    let document = parsed(html)?;
    let selected = document.try_select(selector).ok_or_else(|| {
        format!("selector {selector:?} selects nothing on the page (has the site changed?)")
    })?;
    let mut lines = Vec::new();
    for element in selected.iter() {
        for line in element.formatted_text().lines() {
            let line = one_line(line);
            if !line.is_empty() {
                lines.push(line);
            }
        }
    }
    if lines.is_empty() {
        return Err(format!("selector {selector:?} selects only empty elements"));
    }
    Ok(visible(lines.join("\n")))
}

/// Changes listed in one item at most; the rest are summed up in a last line.
const MAX_CHANGES: usize = 40;
/// Words of unchanged text shown before a change, from the same line.
const CONTEXT_WORDS: usize = 8;

/// The longest a diff may take: past it, what is left is reported as one replacement
/// (the diff's cost grows with the product of the sizes when everything changed).
const DIFF_DEADLINE: std::time::Duration = std::time::Duration::from_millis(300);
/// A watched part of at least this many words that turns into text under half its size,
/// sharing less than a fifth of its words with it, is taken for an error or
/// maintenance page, not a change (until it stays: see [`UNRELATED_ACCEPTED_AFTER`]).
const UNRELATED_MIN_WORDS: usize = 20;
/// Polls in a row that found the same part "unrelated" before it is taken as the page
/// now (a change like any other): a maintenance page does not last that long.
pub const UNRELATED_ACCEPTED_AFTER: u32 = 3;

/// How a watched page's text compares with what was remembered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Compared {
    /// The same words (only spacing or line breaks moved).
    Same,
    /// A change, described as [`describe_change`] does.
    Changed(String),
    /// Something else entirely now stands where the part was (a maintenance or error
    /// page served with 200 that the selector still fits): not a change; the reason.
    Unrelated(String),
}

/// Compares the remembered text of a watched page with its text now.
pub fn compare(old: &str, new: &str) -> Compared {
    let (old_words, new_words) = (tokens(old), tokens(new));
    if old_words == new_words {
        return Compared::Same;
    }
    if let Some(why) = unrelated(&old_words, &new_words) {
        return Compared::Unrelated(why);
    }
    match describe_change(old, new) {
        Some(change) => Compared::Changed(change),
        None => Compared::Same,
    }
}

/// Why `new` is not a version of `old` at all, if it is not: `old` is substantial and
/// they share under a fifth of their words either way.
fn unrelated(old: &[&str], new: &[&str]) -> Option<String> {
    use std::collections::HashSet;
    let words = |t: &[&str]| -> HashSet<String> {
        t.iter()
            .filter(|w| **w != "\n")
            .map(|w| w.to_lowercase())
            .collect()
    };
    let (old_set, new_set) = (words(old), words(new));
    if old_set.len() < UNRELATED_MIN_WORDS || new_set.is_empty() {
        return None;
    }
    let shared = old_set.intersection(&new_set).count();
    // Much shorter, and hardly a word in common: a rewrite of the same size (the next
    // notice replacing the last) is a change.
    if new_set.len() * 2 >= old_set.len()
        || shared * 5 >= new_set.len()
        || shared * 5 >= old_set.len()
    {
        return None;
    }
    let opening: Vec<&str> = new
        .iter()
        .filter(|w| **w != "\n")
        .take(12)
        .copied()
        .collect();
    Some(format!(
        "the watched part now reads as something else entirely (\"{}…\", {shared} of its \
         words were there before): taken for an error or maintenance page, not a change; \
         the last version is kept (if it stays so for {UNRELATED_ACCEPTED_AFTER} polls in a \
         row, it is taken as the page now)",
        opening.join(" ")
    ))
}

/// What changed from `old` to `new`, word by word, as lines a reader can follow (and a
/// search can match): `… context: removed → added`, `… context: + added`,
/// `… context: − removed`. `None` when the words are the same (only spacing or line
/// breaks moved).
pub fn describe_change(old: &str, new: &str) -> Option<String> {
    let old_words = tokens(old);
    let new_words = tokens(new);
    if old_words == new_words {
        return None;
    }
    let deadline = std::time::Instant::now() + DIFF_DEADLINE;
    let ops =
        capture_diff_slices_deadline(Algorithm::Myers, &old_words, &new_words, Some(deadline));
    let mut lines = Vec::new();
    let mut changes = 0;
    let words = |range: std::ops::Range<usize>, from: &[&str]| -> String {
        from[range]
            .iter()
            .filter(|w| **w != "\n")
            .copied()
            .collect::<Vec<_>>()
            .join(" ")
    };
    for (i, op) in ops.iter().enumerate() {
        let (removed, added) = match *op {
            DiffOp::Equal { .. } => continue,
            DiffOp::Delete {
                old_index, old_len, ..
            } => (
                words(old_index..old_index + old_len, &old_words),
                String::new(),
            ),
            DiffOp::Insert {
                new_index, new_len, ..
            } => (
                String::new(),
                words(new_index..new_index + new_len, &new_words),
            ),
            DiffOp::Replace {
                old_index,
                old_len,
                new_index,
                new_len,
            } => (
                words(old_index..old_index + old_len, &old_words),
                words(new_index..new_index + new_len, &new_words),
            ),
        };
        if removed.is_empty() && added.is_empty() {
            continue; // only a line break moved
        }
        changes += 1;
        if changes > MAX_CHANGES {
            continue;
        }
        // The unchanged words just before, on the same line of the new text.
        let context = match i.checked_sub(1).map(|p| &ops[p]) {
            Some(DiffOp::Equal { new_index, len, .. }) => {
                let before = &new_words[*new_index..new_index + len];
                let line_start = before.iter().rposition(|w| *w == "\n").map_or(0, |p| p + 1);
                let line = &before[line_start..];
                let from = line.len().saturating_sub(CONTEXT_WORDS);
                let mut context = line[from..].join(" ");
                if from > 0 {
                    context.insert_str(0, "… ");
                }
                context
            }
            _ => String::new(),
        };
        let change = match (removed.is_empty(), added.is_empty()) {
            (false, false) => format!("{removed} → {added}"),
            (true, false) => format!("+ {added}"),
            _ => format!("− {removed}"),
        };
        lines.push(if context.is_empty() {
            change
        } else {
            format!("{context}: {change}")
        });
    }
    if changes == 0 {
        return None;
    }
    if changes > MAX_CHANGES {
        lines.push(format!("… and {} more changes", changes - MAX_CHANGES));
    }
    Some(lines.join("\n"))
}

/// Words, with each line break a token of its own (so context stays on its line).
fn tokens(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if i > 0 {
            out.push("\n");
        }
        out.extend(line.split_whitespace());
    }
    while out.last() == Some(&"\n") {
        out.pop();
    }
    out
}

/// A change of a watched page (from [`compare`]) as an item: titled after the page
/// ("Visa Bulletin for January 2027 — page changed"), its text the change, its link the
/// page, dated `now`. Its key is new for each change.
pub fn change_item(
    html: &str,
    page: &Url,
    fallback_title: &str,
    change: String,
    now: DateTime<Utc>,
) -> Item {
    let title = parsed(html)
        .map(|d| one_line(&d.select("title").text()))
        .unwrap_or_default();
    let title = if title.is_empty() {
        fallback_title.to_string()
    } else {
        title
    };
    let key = format!(
        "change:{}",
        crate::parse::hash(&["page-change", &change, &now.timestamp().to_string()])
    );
    Item {
        key,
        guid: None,
        link: canonical_link(page.as_str()),
        title: visible(format!("{title} — page changed")),
        summary: change,
        content: String::new(),
        published: Some(now),
        declared_lang: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> DateTime<Utc> {
        "2026-12-01T12:00:00Z".parse().unwrap()
    }

    const NEWSROOM: &str = r#"<html><head><title>Newsroom</title></head><body>
        <nav><a href="/">Home</a><a href="/about">About</a></nav>
        <ul class="news">
          <li class="news-item"><h3><a href="/news/tps-haiti?utm_source=x">TPS for Haiti extended</a></h3>
              <time datetime="2026-11-30T09:00:00Z">Nov 30</time><p>The Secretary extended TPS.</p></li>
          <li class="news-item"><h3><a href="https://www.uscis.gov/news/fee-rule">Fee rule</a></h3>
              <p>Final rule on fees.</p></li>
          <li class="news-item"><h3><a href="/news/tps-haiti">TPS for Haiti extended (dup)</a></h3></li>
          <li class="news-item">   </li>
        </ul><footer><a href="/privacy">Privacy</a></footer></body></html>"#;

    #[test]
    fn a_listing_page_is_a_feed_of_its_repeated_elements() {
        let base = Url::parse("https://www.uscis.gov/newsroom/all-news").unwrap();
        let rules = ListingRules {
            item_selector: "li.news-item".into(),
            ..ListingRules::default()
        };
        let items = listing(NEWSROOM, &base, &rules, now()).unwrap().0;
        let got: Vec<(&str, Option<&str>)> = items
            .iter()
            .map(|i| (i.title.as_str(), i.link.as_deref()))
            .collect();
        assert_eq!(
            got,
            [
                (
                    "TPS for Haiti extended",
                    Some("https://www.uscis.gov/news/tps-haiti")
                ),
                ("Fee rule", Some("https://www.uscis.gov/news/fee-rule")),
            ],
            "resolved, canonical (no utm_), each link once, empty elements skipped"
        );
        assert_eq!(
            items[0].published,
            Some("2026-11-30T09:00:00Z".parse().unwrap())
        );
        assert!(items[0].summary.contains("The Secretary extended TPS."));
        assert_eq!(items[1].published, None);
        // The key is the link's: the same entry on the next poll is the same item.
        let again = listing(
            &NEWSROOM.replace("Fee rule", "Fee rule (updated)"),
            &base,
            &rules,
            now(),
        )
        .unwrap()
        .0;
        assert_eq!(again[1].key, items[1].key);

        let picky = ListingRules {
            item_selector: "li.news-item".into(),
            title_selector: Some("p".into()),
            link_selector: Some("h3 a".into()),
            date_selector: Some("time".into()),
        };
        let items = listing(NEWSROOM, &base, &picky, now()).unwrap().0;
        assert_eq!(items[0].title, "The Secretary extended TPS.");

        let gone = ListingRules {
            item_selector: "div.article-card".into(),
            ..ListingRules::default()
        };
        let error = listing(NEWSROOM, &base, &gone, now()).unwrap_err();
        assert!(error.contains("selects nothing"), "{error}");
    }

    /// The newsroom's list is found; its navigation and footer links are not entries.
    #[test]
    fn a_repeated_list_of_story_links_is_suggested() {
        let base = Url::parse("https://www.uscis.gov/newsroom/all-news").unwrap();
        let page = format!(
            "<html><body><nav><ul>{nav}</ul></nav><div id=\"main\"><ul class=\"news\">{items}</ul>\
             <div class=\"pager\"><a href=\"?page=2\">Next page of results</a></div></div>\
             <footer><ul>{nav}</ul></footer></body></html>",
            nav = (0..8)
                .map(|i| format!("<li><a href=\"/topic/{i}\">A long navigation topic number {i}</a></li>"))
                .collect::<String>(),
            items = (0..5)
                .map(|i| format!(
                    "<li class=\"news-item\"><h3><a href=\"/news/story-{i}\">Story number {i} about TPS</a></h3>\
                     <time datetime=\"2026-11-2{i}\">Nov 2{i}</time></li>"
                ))
                .collect::<String>(),
        );
        let found = suggest_listing(&page, &base).unwrap();
        assert_eq!(found.rules.item_selector, "li.news-item");
        assert_eq!(found.entries, 5);
        assert_eq!(
            found.sample[0],
            (
                "Story number 0 about TPS".to_string(),
                "https://www.uscis.gov/news/story-0".to_string()
            )
        );
        // The suggestion reads the page.
        let items = listing(&page, &base, &found.rules, now()).unwrap().0;
        assert_eq!(items.len(), 5);
        assert_eq!(
            items[2].published,
            Some("2026-11-22T00:00:00Z".parse().unwrap())
        );
        // Plain list items need their parent to tell them from others.
        let bare = page.replace(" class=\"news-item\"", "");
        assert_eq!(
            suggest_listing(&bare, &base).unwrap().rules.item_selector,
            "ul.news > li"
        );
        assert_eq!(
            suggest_listing("<html><body><p>No links</p></body></html>", &base),
            None
        );
    }

    const BULLETIN: &str = r#"<html><head><title>Visa Bulletin for January 2027</title></head><body>
        <div class="ad" data-track="123">Ad text</div>
        <table id="dates"><tr><td>EB-2</td><td>India</td><td>15DEC22</td></tr>
        <tr><td>EB-3</td><td>China</td><td>01MAR21</td></tr></table>
        <footer>Updated 2026-12-01 10:00</footer></body></html>"#;

    #[test]
    fn a_watched_page_changes_only_when_its_words_do() {
        let old = watched_text(BULLETIN, "#dates").unwrap();
        assert!(!old.contains("Updated"), "outside the selector: {old}");
        let cosmetic = BULLETIN
            .replace("data-track=\"123\"", "data-track=\"456\"")
            .replace("10:00", "11:00")
            .replace("<td>India</td>", "<td>\n   India  </td>");
        let same = watched_text(&cosmetic, "#dates").unwrap();
        assert_eq!(describe_change(&old, &same), None, "{old:?} vs {same:?}");

        let moved = BULLETIN.replace("15DEC22", "01JAN23");
        let new = watched_text(&moved, "#dates").unwrap();
        let change = describe_change(&old, &new).unwrap();
        assert_eq!(change, "EB-2 India: 15DEC22 → 01JAN23", "{change}");
        let added = BULLETIN.replace(
            "</table>",
            "<tr><td>EB-5</td><td>Mexico</td><td>C</td></tr></table>",
        );
        let change = describe_change(&old, &watched_text(&added, "#dates").unwrap()).unwrap();
        assert!(change.ends_with("+ EB-5 Mexico C"), "{change}");

        let base = Url::parse("https://travel.state.gov/bulletin.html").unwrap();
        let Compared::Changed(change) = compare(&old, &new) else {
            panic!("no change")
        };
        let item = change_item(&moved, &base, "bulletin", change, now());
        assert_eq!(item.title, "Visa Bulletin for January 2027 — page changed");
        assert_eq!(
            item.link.as_deref(),
            Some("https://travel.state.gov/bulletin.html")
        );
        assert_eq!(compare(&old, &same), Compared::Same);
        assert!(
            watched_text(BULLETIN, "#missing")
                .unwrap_err()
                .contains("selects nothing")
        );
    }
}
