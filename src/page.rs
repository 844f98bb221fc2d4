//! Pages without feeds (issue 15). A **listing page** (`kind = "html"`) becomes a feed:
//! each element its `item_selector` selects is an item, with a stable key made from its
//! resolved link. A **watched page** (`kind = "watch"`) is remembered as the text of what
//! its `selector` selects; when that text changes (word by word: spacing, line breaks and
//! markup never count), the change is an item whose text says what was added and removed.
//! Pure: HTML in, items out.

use chrono::{DateTime, Utc};
use dom_query::{Document, Selection};
use serde::{Deserialize, Serialize};
use similar::{Algorithm, DiffOp, capture_diff_slices};
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

/// Items read from one page at most: a page that selects more is cut here.
pub const MAX_PAGE_ITEMS: usize = 500;
/// Characters of an item's own text kept as its summary.
const MAX_SUMMARY_CHARS: usize = 4_000;

/// The items of a listing page at `base`, in page order, each once (by key). An error
/// when the selector selects nothing: the site changed, and the admin should know,
/// rather than hear nothing ever again.
pub fn listing(
    html: &str,
    base: &Url,
    rules: &ListingRules,
    now: DateTime<Utc>,
) -> Result<Vec<Item>, String> {
    let document = Document::from(html);
    let selected = document.try_select(&rules.item_selector).ok_or_else(|| {
        format!(
            "item_selector {:?} selects nothing on the page (has the site changed?)",
            rules.item_selector
        )
    })?;
    let mut items = Vec::new();
    let mut keys = std::collections::HashSet::new();
    for element in selected.iter() {
        let link = item_link(&element, rules.link_selector.as_deref(), base);
        let own_text = one_line(&element.text());
        let title = match &rules.title_selector {
            Some(selector) => element
                .try_select(selector)
                .map(|t| one_line(&t.text()))
                .unwrap_or_default(),
            None => default_title(&element, &own_text),
        };
        if title.is_empty() && own_text.is_empty() {
            continue;
        }
        let published = item_date(&element, rules.date_selector.as_deref()).filter(|d| *d <= now);
        let key = match &link {
            Some(link) => format!("link:{}", crate::parse::hash(&["page-link", link])),
            None => format!(
                "text:{}",
                crate::parse::hash(&["page-text", &title, &own_text])
            ),
        };
        if !keys.insert(key.clone()) {
            continue;
        }
        items.push(Item {
            key,
            guid: None,
            link,
            title: visible(title),
            summary: visible(own_text.chars().take(MAX_SUMMARY_CHARS).collect()),
            content: String::new(),
            published,
        });
        if items.len() == MAX_PAGE_ITEMS {
            break;
        }
    }
    if items.is_empty() {
        return Err(format!(
            "item_selector {:?} selects only empty elements",
            rules.item_selector
        ));
    }
    Ok(items)
}

fn item_link(element: &Selection<'_>, selector: Option<&str>, base: &Url) -> Option<String> {
    let anchor = match selector {
        Some(selector) => element.try_select(selector)?,
        None if element.is("a[href]") => element.clone(),
        None => element.try_select("a[href]")?,
    };
    let href = anchor.first().attr("href")?;
    let url = base.join(href.trim()).ok()?;
    matches!(url.scheme(), "http" | "https")
        .then(|| canonical_link(url.as_str()))
        .flatten()
}

fn default_title(element: &Selection<'_>, own_text: &str) -> String {
    for selector in ["h1, h2, h3, h4, h5, h6", "a[href]"] {
        if let Some(found) = element.try_select(selector) {
            let text = one_line(&found.first().text());
            if !text.is_empty() {
                return text;
            }
        }
    }
    if element.is("a[href]") {
        return own_text.to_string();
    }
    own_text.chars().take(200).collect()
}

fn item_date(element: &Selection<'_>, selector: Option<&str>) -> Option<DateTime<Utc>> {
    let found = element.try_select(selector.unwrap_or("time[datetime]"))?;
    let node = found.first();
    let raw = node
        .attr("datetime")
        .or_else(|| node.attr("content"))
        .map(|a| a.to_string())
        .unwrap_or_else(|| one_line(&node.text()));
    parse_timestamp(&raw)
}

/// Spaces (line breaks too) collapsed, ends trimmed.
fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
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
pub fn suggest_listing(html: &str, base: &Url) -> Option<Suggestion> {
    use std::collections::HashMap;
    let document = Document::from(html);
    // (parent, signature) → the distinct elements, in page order, with their first link.
    let mut groups: HashMap<GroupKey, Vec<Entry>> = HashMap::new();
    let mut order: Vec<GroupKey> = Vec::new();
    for anchor in document.select("a[href]").nodes() {
        let title = one_line(&anchor.text());
        if title.chars().count() < MIN_STORY_LINK_CHARS {
            continue;
        }
        let Some(link) = anchor
            .attr("href")
            .and_then(|href| base.join(href.trim()).ok())
            .filter(|u| matches!(u.scheme(), "http" | "https"))
            .and_then(|u| canonical_link(u.as_str()))
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
    let document = Document::from(html);
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
    let ops = capture_diff_slices(Algorithm::Myers, &old_words, &new_words);
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

/// The change of a watched page as an item: titled after the page ("Visa Bulletin for
/// January 2027 — page changed"), its text the change, its link the page, dated `now`.
/// Its key is new for each change.
pub fn change_item(
    html: &str,
    page: &Url,
    fallback_title: &str,
    old: &str,
    new: &str,
    now: DateTime<Utc>,
) -> Option<Item> {
    let change = describe_change(old, new)?;
    let document = Document::from(html);
    let title = one_line(&document.select("title").text());
    let title = if title.is_empty() {
        fallback_title.to_string()
    } else {
        title
    };
    let key = format!(
        "change:{}",
        crate::parse::hash(&["page-change", old, new, &now.timestamp().to_string()])
    );
    Some(Item {
        key,
        guid: None,
        link: canonical_link(page.as_str()),
        title: visible(format!("{title} — page changed")),
        summary: change,
        content: String::new(),
        published: Some(now),
    })
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
        let items = listing(NEWSROOM, &base, &rules, now()).unwrap();
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
        .unwrap();
        assert_eq!(again[1].key, items[1].key);

        let picky = ListingRules {
            item_selector: "li.news-item".into(),
            title_selector: Some("p".into()),
            link_selector: Some("h3 a".into()),
            date_selector: Some("time".into()),
        };
        let items = listing(NEWSROOM, &base, &picky, now()).unwrap();
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
        let items = listing(&page, &base, &found.rules, now()).unwrap();
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
        let item = change_item(&moved, &base, "bulletin", &old, &new, now()).unwrap();
        assert_eq!(item.title, "Visa Bulletin for January 2027 — page changed");
        assert_eq!(
            item.link.as_deref(),
            Some("https://travel.state.gov/bulletin.html")
        );
        assert!(change_item(&cosmetic, &base, "bulletin", &old, &same, now()).is_none());
        assert!(
            watched_text(BULLETIN, "#missing")
                .unwrap_err()
                .contains("selects nothing")
        );
    }
}
