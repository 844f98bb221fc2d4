//! Digests: which subscriber is due when, and pending matches → one rendered message
//! (subject, plain text, HTML).
//!
//! Pure: no I/O. The store hands over the matches inside the transaction that takes
//! them, and writes what [`render_digest`] returns to the outbox.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::str::FromStr;

use chrono::{DateTime, Days, NaiveTime, TimeZone, Utc};
use chrono_tz::Tz;

/// How often a subscriber hears from us.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Frequency {
    /// After every poll cycle that found something.
    Immediate,
    /// Once a day at `[digest].daily_at`.
    Daily,
}

impl Frequency {
    pub fn as_str(self) -> &'static str {
        match self {
            Frequency::Immediate => "immediate",
            Frequency::Daily => "daily",
        }
    }
}

impl FromStr for Frequency {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "immediate" => Ok(Frequency::Immediate),
            "daily" => Ok(Frequency::Daily),
            other => Err(format!(
                "unknown frequency {other:?} (expected immediate or daily)"
            )),
        }
    }
}

/// When a subscriber's next digest is due: `None` for immediate delivery, else the next
/// `daily_at` in `tz` strictly after `now`. On a DST gap day the digest goes out at the
/// first valid local time after `daily_at`.
pub fn next_digest_at(
    frequency: Frequency,
    now: DateTime<Utc>,
    daily_at: NaiveTime,
    tz: Tz,
) -> Option<DateTime<Utc>> {
    match frequency {
        Frequency::Immediate => None,
        Frequency::Daily => {
            let today = now.with_timezone(&tz).date_naive();
            (0..=2u64).find_map(|d| {
                let day = today.checked_add_days(Days::new(d))?;
                let local = day.and_time(daily_at);
                let at = tz
                    .from_local_datetime(&local)
                    .earliest()
                    .or_else(|| {
                        tz.from_local_datetime(&(local + chrono::Duration::hours(1)))
                            .earliest()
                    })?
                    .with_timezone(&Utc);
                (at > now).then_some(at)
            })
        }
    }
}

/// One pending match, as the store hands it over.
#[derive(Debug, Clone, PartialEq)]
pub struct DigestEntry {
    pub subscription_id: i64,
    pub query: String,
    pub item_id: i64,
    pub feed_id: String,
    pub feed_name: String,
    pub title: String,
    pub link: Option<String>,
    pub summary: String,
    pub content: String,
    pub published: Option<DateTime<Utc>>,
    pub first_seen: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    pub subject: String,
    pub text: String,
    pub html: String,
}

/// Longest snippet, in characters.
const SNIPPET_CHARS: usize = 280;

/// Renders one digest. Entries arrive grouped by subscription; a story (same canonical
/// link, or same item) appears once, under the first subscription that matched it, with
/// the other feeds that carried it listed as "also in".
pub fn render_digest(entries: &[DigestEntry], tz: Tz) -> Rendered {
    struct Story<'a> {
        entry: &'a DigestEntry,
        also_in: Vec<&'a str>,
    }
    let mut groups: Vec<(&str, Vec<Story>)> = Vec::new();
    let mut seen: HashMap<String, (usize, usize)> = HashMap::new();
    for entry in entries {
        let key = entry
            .link
            .clone()
            .unwrap_or_else(|| format!("item:{}", entry.item_id));
        if let Some(&(g, s)) = seen.get(&key) {
            let story = &mut groups[g].1[s];
            if story.entry.feed_id != entry.feed_id
                && !story.also_in.contains(&entry.feed_name.as_str())
            {
                story.also_in.push(&entry.feed_name);
            }
            continue;
        }
        if groups.last().is_none_or(|(q, _)| *q != entry.query) {
            groups.push((&entry.query, Vec::new()));
        }
        let g = groups.len() - 1;
        seen.insert(key, (g, groups[g].1.len()));
        groups[g].1.push(Story {
            entry,
            also_in: Vec::new(),
        });
    }

    let total: usize = groups.iter().map(|(_, s)| s.len()).sum();
    let breakdown = groups
        .iter()
        .map(|(q, s)| format!("{} ({})", one_line(q), s.len()))
        .collect::<Vec<_>>();
    let subject = format!("Tidings: {total} new — {}", breakdown.join(", "));

    let mut text = String::new();
    let mut html = String::from(
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width\"></head>\n\
         <body style=\"margin:0;padding:16px;background:#f6f6f6;font-family:Arial,Helvetica,sans-serif;color:#222\">\n\
         <div style=\"max-width:640px;margin:0 auto;background:#ffffff;padding:16px 20px\">\n",
    );
    let _ = writeln!(
        html,
        "<p style=\"font-size:14px;color:#555;margin:0 0 12px\">{total} new {} matching your Tidings subscriptions.</p>",
        if total == 1 { "item" } else { "items" }
    );
    let _ = writeln!(
        text,
        "{total} new {} matching your Tidings subscriptions.",
        if total == 1 { "item" } else { "items" }
    );
    for (query, stories) in &groups {
        let _ = writeln!(text, "\n== {} ({}) ==\n", one_line(query), stories.len());
        let _ = writeln!(
            html,
            "<h2 style=\"font-size:16px;margin:20px 0 8px;padding-bottom:4px;border-bottom:1px solid #ddd\">{} <span style=\"color:#777;font-weight:normal\">({})</span></h2>",
            escape(query),
            stories.len()
        );
        for story in stories {
            let e = story.entry;
            let title = if e.title.is_empty() {
                "(untitled)"
            } else {
                &e.title
            };
            let date = e
                .published
                .unwrap_or(e.first_seen)
                .with_timezone(&tz)
                .format("%b %-d, %Y %H:%M %Z")
                .to_string();
            let snippet = snippet(if e.summary.is_empty() {
                &e.content
            } else {
                &e.summary
            });
            let also = if story.also_in.is_empty() {
                String::new()
            } else {
                format!(" · also in: {}", story.also_in.join(", "))
            };

            let _ = writeln!(text, "* {}", one_line(title));
            let _ = writeln!(text, "  {} · {date}{also}", e.feed_name);
            if !snippet.is_empty() {
                let _ = writeln!(text, "  {snippet}");
            }
            if let Some(link) = &e.link {
                let _ = writeln!(text, "  {link}");
            }
            text.push('\n');

            html.push_str("<div style=\"margin:0 0 16px\">\n");
            match &e.link {
                Some(link) => {
                    let _ = writeln!(
                        html,
                        "<a href=\"{}\" style=\"font-size:15px;font-weight:bold;color:#1a4f9c;text-decoration:none\">{}</a>",
                        escape(link),
                        escape(title)
                    );
                }
                None => {
                    let _ = writeln!(
                        html,
                        "<span style=\"font-size:15px;font-weight:bold\">{}</span>",
                        escape(title)
                    );
                }
            }
            let _ = writeln!(
                html,
                "<div style=\"font-size:12px;color:#777;margin:2px 0 4px\">{} · {}{}</div>",
                escape(&e.feed_name),
                escape(&date),
                escape(&also)
            );
            if !snippet.is_empty() {
                let _ = writeln!(
                    html,
                    "<div style=\"font-size:14px;line-height:1.4\">{}</div>",
                    escape(&snippet)
                );
            }
            html.push_str("</div>\n");
        }
    }
    text.push_str("-- \nYou get this because you subscribed to Tidings alerts.\n");
    html.push_str(
        "<p style=\"font-size:12px;color:#999;border-top:1px solid #ddd;padding-top:8px;margin-top:24px\">You get this because you subscribed to Tidings alerts.</p>\n</div></body></html>\n",
    );
    Rendered {
        subject,
        text,
        html,
    }
}

/// A window of at most about `max_chars` characters of `text` around its first highlighted
/// range, cut at word boundaries and marked with "…" where cut. `ranges` are byte ranges
/// into `text` (sorted, non-overlapping); those inside the window come back re-based onto
/// the excerpt.
pub fn excerpt(
    text: &str,
    ranges: &[std::ops::Range<usize>],
    max_chars: usize,
) -> (String, Vec<std::ops::Range<usize>>) {
    let valid = |r: &&std::ops::Range<usize>| {
        r.start < r.end
            && r.end <= text.len()
            && text.is_char_boundary(r.start)
            && text.is_char_boundary(r.end)
    };
    let mut ranges: Vec<_> = ranges.iter().filter(valid).cloned().collect();
    ranges.sort_by_key(|r| r.start);
    let mut last_end = 0;
    ranges.retain(|r| {
        let keep = r.start >= last_end;
        if keep {
            last_end = r.end;
        }
        keep
    });
    if text.chars().count() <= max_chars {
        return (text.to_string(), ranges);
    }
    // Start a little before the first hit, at a word start.
    let first = ranges.first().map_or(0, |r| r.start);
    let lead = max_chars / 4;
    let mut start = text[..first]
        .char_indices()
        .rev()
        .nth(lead)
        .map_or(0, |(i, _)| i);
    if start > 0 {
        start = text[start..]
            .find(' ')
            .map_or(start, |sp| start + sp + 1)
            .min(first);
    }
    let mut end = text[start..]
        .char_indices()
        .nth(max_chars)
        .map_or(text.len(), |(i, _)| start + i);
    if end < text.len() {
        end = text[start..end]
            .rfind(' ')
            .map_or(end, |sp| start + sp)
            .max(first.min(end));
        // Never cut a highlighted word in half.
        if let Some(r) = ranges.iter().find(|r| r.start < end && r.end > end) {
            end = r.end;
        }
    }
    let prefix = if start > 0 { "…" } else { "" };
    let suffix = if end < text.len() { "…" } else { "" };
    let shift = prefix.len();
    let out = format!("{prefix}{}{suffix}", text[start..end].trim_end());
    let kept = ranges
        .iter()
        .filter(|r| r.start >= start && r.end <= end)
        .map(|r| r.start - start + shift..r.end - start + shift)
        .filter(|r| r.end <= out.len())
        .collect();
    (out, kept)
}

/// The first `SNIPPET_CHARS` characters, cut at a word boundary.
fn snippet(text: &str) -> String {
    let text = one_line(text);
    if text.chars().count() <= SNIPPET_CHARS {
        return text;
    }
    let cut: String = text.chars().take(SNIPPET_CHARS).collect();
    let cut = cut.rsplit_once(' ').map_or(cut.as_str(), |(head, _)| head);
    format!("{}…", cut.trim_end_matches([',', '.', ';', ':', ' ']))
}

/// Text safe for one line of a header or list: control characters become spaces.
fn one_line(s: &str) -> String {
    s.split(|c: char| c.is_control() || c.is_whitespace())
        .filter(|w| !w.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn entry(
        sub: i64,
        query: &str,
        item: i64,
        feed: &str,
        title: &str,
        link: Option<&str>,
    ) -> DigestEntry {
        DigestEntry {
            subscription_id: sub,
            query: query.into(),
            item_id: item,
            feed_id: feed.into(),
            feed_name: format!("{feed} news"),
            title: title.into(),
            link: link.map(Into::into),
            summary: format!("Summary of {title}"),
            content: String::new(),
            published: Some(at("2026-11-27T15:00:00Z")),
            first_seen: at("2026-11-28T12:00:00Z"),
        }
    }

    #[test]
    fn subject_counts_stories_per_subscription() {
        let entries = vec![
            entry(
                1,
                "asylum",
                10,
                "a",
                "Asylum one",
                Some("https://x.example/1"),
            ),
            entry(
                1,
                "asylum",
                11,
                "a",
                "Asylum two",
                Some("https://x.example/2"),
            ),
            entry(
                2,
                "\"H-1B\"",
                12,
                "b",
                "H-1B cap",
                Some("https://x.example/3"),
            ),
        ];
        let r = render_digest(&entries, Tz::UTC);
        assert_eq!(r.subject, "Tidings: 3 new — asylum (2), \"H-1B\" (1)");
    }

    #[test]
    fn same_story_appears_once_with_also_in() {
        let entries = vec![
            entry(
                1,
                "asylum",
                10,
                "a",
                "Same story",
                Some("https://x.example/s"),
            ),
            entry(
                1,
                "asylum",
                11,
                "b",
                "Same story",
                Some("https://x.example/s"),
            ),
            entry(
                2,
                "parole",
                10,
                "a",
                "Same story",
                Some("https://x.example/s"),
            ),
        ];
        let r = render_digest(&entries, Tz::UTC);
        assert_eq!(r.text.matches("* Same story").count(), 1, "{}", r.text);
        assert!(r.text.contains("also in: b news"), "{}", r.text);
        assert_eq!(r.subject, "Tidings: 1 new — asylum (1)");
    }

    #[test]
    fn both_parts_carry_title_source_date_link_and_snippet() {
        let entries = vec![entry(
            1,
            "TPS",
            10,
            "uscis",
            "TPS for Venezuela",
            Some("https://u.example/tps?a=1&b=2"),
        )];
        let r = render_digest(&entries, chrono_tz::America::New_York);
        for part in [&r.text, &r.html] {
            assert!(part.contains("TPS for Venezuela"));
            assert!(part.contains("uscis news"));
            assert!(
                part.contains("Nov 27, 2026 10:00 EST"),
                "date in the configured zone: {part}"
            );
            assert!(part.contains("Summary of TPS for Venezuela"));
        }
        assert!(r.text.contains("https://u.example/tps?a=1&b=2"));
        assert!(
            r.html
                .contains("href=\"https://u.example/tps?a=1&amp;b=2\"")
        );
    }

    #[test]
    fn feed_text_cannot_inject_markup_or_headers() {
        let mut e = entry(
            1,
            "asylum",
            10,
            "a",
            "<script>alert(1)</script>\r\nBcc: victim@x.example",
            Some("https://x.example/\"><script>"),
        );
        e.summary = "<img src=x onerror=alert(1)>".into();
        let r = render_digest(&[e], Tz::UTC);
        assert!(!r.html.contains("<script>"), "{}", r.html);
        assert!(!r.html.contains("<img"), "{}", r.html);
        assert!(!r.subject.contains('\n') && !r.subject.contains('\r'));
        assert!(!r.text.contains("\r\nBcc"), "title flattened to one line");
    }

    #[test]
    fn excerpts_keep_the_highlights() {
        let text = format!(
            "{} the H-1B lottery opens {}",
            "word ".repeat(100),
            "tail ".repeat(100)
        );
        let at = text.find("H-1B").unwrap();
        let (out, ranges) = excerpt(&text, std::slice::from_ref(&(at..at + 4)), 60);
        assert!(out.starts_with('…') && out.ends_with('…'), "{out}");
        assert_eq!(ranges.len(), 1);
        assert_eq!(&out[ranges[0].clone()], "H-1B");
        assert!(out.chars().count() <= 64, "{out}");

        // Short text: unchanged; bad ranges are dropped, never panic.
        let (out, ranges) = excerpt("José pide asilo", &[0..5, 6..99, 1..2], 100);
        assert_eq!(out, "José pide asilo");
        assert_eq!(ranges.len(), 1);
        assert_eq!(ranges[0], 0..5);
    }

    #[test]
    fn long_text_is_cut_at_a_word() {
        let long = "word ".repeat(200);
        let s = snippet(&long);
        assert!(s.chars().count() <= SNIPPET_CHARS + 1);
        assert!(s.ends_with("word…"), "{s}");
    }

    #[test]
    fn next_digest_times() {
        let eight = NaiveTime::from_hms_opt(8, 0, 0).unwrap();
        let ny = chrono_tz::America::New_York;
        // (name, frequency, now, expected)
        let cases = [
            (
                "immediate has no schedule",
                Frequency::Immediate,
                "2026-11-28T12:00:00Z",
                None,
            ),
            (
                "later today",
                Frequency::Daily,
                "2026-11-28T12:00:00Z",
                Some("2026-11-28T13:00:00Z"),
            ),
            (
                "already passed today",
                Frequency::Daily,
                "2026-11-28T14:00:00Z",
                Some("2026-11-29T13:00:00Z"),
            ),
            (
                "exactly at the time moves on",
                Frequency::Daily,
                "2026-11-28T13:00:00Z",
                Some("2026-11-29T13:00:00Z"),
            ),
            (
                "across the DST change",
                Frequency::Daily,
                "2026-03-07T14:00:00Z",
                Some("2026-03-08T12:00:00Z"),
            ),
        ];
        for (name, freq, now, expected) in cases {
            assert_eq!(
                next_digest_at(freq, at(now), eight, ny),
                expected.map(at),
                "{name}"
            );
        }
        // 02:30 does not exist in New York on 2026-03-08: sent at 03:30 EDT.
        let gap = NaiveTime::from_hms_opt(2, 30, 0).unwrap();
        assert_eq!(
            next_digest_at(Frequency::Daily, at("2026-03-07T12:00:00Z"), gap, ny),
            Some(at("2026-03-08T07:30:00Z"))
        );
    }
}
