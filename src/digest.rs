//! Digests: when each subscriber is due ([`Schedule`]), and pending matches → one
//! rendered message (subject, plain text, HTML) from the templates in `templates/`.
//!
//! Pure: no I/O. The store hands over the matches inside the transaction that takes
//! them, and writes what [`render_digest`] returns to the outbox.
//!
//! Everything that came from a feed reaches the HTML only through the template's
//! autoescaping or, for the highlighted title and snippet, through an ammonia pass that
//! lets nothing but `<mark>` survive.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::ops::Range;
use std::sync::{Arc, LazyLock};

use chrono::{
    DateTime, Datelike, Days, DurationRound, LocalResult, NaiveDate, NaiveTime, TimeZone, Timelike,
    Utc, Weekday,
};
use chrono_tz::Tz;
use minijinja::{AutoEscape, Environment, Value, context};

use crate::ids::{ChannelId, ItemId, SubscriptionId};
use crate::language::native_name;
use crate::locale::Locale;
use crate::matcher::{Document, Field, Query, Synonyms};
use crate::parse::body_text;

// ---- schedules ------------------------------------------------------------------------------

/// When a subscriber hears from us. Times are local to the subscriber's time zone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Schedule {
    /// After every poll cycle that found something, batched into one message.
    Immediate,
    /// At the top of every local hour that has something.
    Hourly,
    /// Once a day at `at`.
    Daily { at: NaiveTime },
    /// Once a week on `day` at `at`.
    Weekly { day: Weekday, at: NaiveTime },
}

const WEEKDAYS: [&str; 7] = [
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
    "Sunday",
];

/// What [`Schedule::parse`] reads, for its errors.
const ACCEPTED_SCHEDULES: &str = "expected immediate, hourly, daily [HH:MM] or weekly [DAY] [HH:MM], \
     e.g. \"daily 07:30\", \"weekly fri 17:00\", \"every tuesday\"";

/// The IANA time zone called `name`, in any case: "Europe/London", "europe/london",
/// "UTC", "utc". `None` for a name the time zone database does not have.
pub fn parse_time_zone(name: &str) -> Option<Tz> {
    let name = name.trim();
    name.parse::<Tz>().ok().or_else(|| {
        chrono_tz::TZ_VARIANTS
            .iter()
            .copied()
            .find(|tz| tz.name().eq_ignore_ascii_case(name))
    })
}

impl Schedule {
    /// The stored frequency: `immediate`, `hourly`, `daily` or `weekly`.
    pub fn frequency(self) -> &'static str {
        match self {
            Schedule::Immediate => "immediate",
            Schedule::Hourly => "hourly",
            Schedule::Daily { .. } => "daily",
            Schedule::Weekly { .. } => "weekly",
        }
    }

    /// The local time of day of a daily or weekly digest.
    pub fn time(self) -> Option<NaiveTime> {
        match self {
            Schedule::Daily { at } | Schedule::Weekly { at, .. } => Some(at),
            Schedule::Immediate | Schedule::Hourly => None,
        }
    }

    /// The day of a weekly digest.
    pub fn weekday(self) -> Option<Weekday> {
        match self {
            Schedule::Weekly { day, .. } => Some(day),
            _ => None,
        }
    }

    /// Reads a schedule as people write it: `immediate`, `hourly`, `daily`,
    /// `daily 07:30`, `weekly`, `weekly fri`, `weekly on Friday at 17:00`, and in words:
    /// `every hour`, `every day 07:30`, `every week`, `every tuesday 17:00`. A daily or
    /// weekly schedule without a time gets `default_at`; a weekly one without a day, Monday.
    pub fn parse(text: &str, default_at: NaiveTime) -> Result<Schedule, String> {
        let mut words: Vec<String> = text
            .split_whitespace()
            .map(str::to_lowercase)
            .filter(|w| !matches!(w.as_str(), "at" | "on" | "every"))
            .collect();
        // "every day", "every tuesday": the period, or the day of a weekly digest.
        match words.first().map(String::as_str) {
            Some("hour") => words[0] = "hourly".into(),
            Some("day") => words[0] = "daily".into(),
            Some("week") => words[0] = "weekly".into(),
            Some(day) if day.parse::<Weekday>().is_ok() => words.insert(0, "weekly".into()),
            _ => {}
        }
        let Some((frequency, rest)) = words.split_first() else {
            if text.trim().is_empty() {
                return Err(format!("empty schedule ({ACCEPTED_SCHEDULES})"));
            }
            return Err(format!(
                "no frequency given, only \"every\", \"at\" or \"on\" ({ACCEPTED_SCHEDULES})"
            ));
        };
        let mut at = None;
        let mut day = None;
        for word in rest {
            if word.contains(':') {
                let time = NaiveTime::parse_from_str(word, "%H:%M")
                    .map_err(|_| format!("{word:?} is not a time like 07:30"))?;
                if at.replace(time).is_some() {
                    return Err("more than one time given".into());
                }
            } else {
                let weekday = word.parse::<Weekday>().map_err(|_| {
                    format!("{word:?} is neither a time like 07:30 nor a weekday like mon")
                })?;
                if day.replace(weekday).is_some() {
                    return Err("more than one weekday given".into());
                }
            }
        }
        let at_or_default = at.unwrap_or(default_at);
        match frequency.as_str() {
            "immediate" | "hourly" if at.is_some() || day.is_some() => Err(format!(
                "{frequency} digests take no time or weekday (only daily and weekly do)"
            )),
            "immediate" => Ok(Schedule::Immediate),
            "hourly" => Ok(Schedule::Hourly),
            "daily" if day.is_some() => {
                Err("daily digests take no weekday (use `weekly mon 08:00` for one a week)".into())
            }
            "daily" => Ok(Schedule::Daily { at: at_or_default }),
            "weekly" => Ok(Schedule::Weekly {
                day: day.unwrap_or(Weekday::Mon),
                at: at_or_default,
            }),
            other => Err(format!(
                "unknown frequency {other:?} ({ACCEPTED_SCHEDULES})"
            )),
        }
    }

    /// Rebuilds a schedule from its stored columns: frequency, `HH:MM` time and weekday
    /// (0 = Monday).
    pub fn from_parts(
        frequency: &str,
        time: Option<&str>,
        weekday: Option<u32>,
    ) -> Result<Schedule, String> {
        let at = || {
            let time = time.ok_or_else(|| format!("{frequency} schedule without a time"))?;
            NaiveTime::parse_from_str(time, "%H:%M").map_err(|e| format!("time {time:?}: {e}"))
        };
        match frequency {
            "immediate" => Ok(Schedule::Immediate),
            "hourly" => Ok(Schedule::Hourly),
            "daily" => Ok(Schedule::Daily { at: at()? }),
            "weekly" => {
                let day = weekday
                    .and_then(|d| Weekday::try_from(u8::try_from(d).ok()?).ok())
                    .ok_or_else(|| format!("weekly schedule with weekday {weekday:?}"))?;
                Ok(Schedule::Weekly { day, at: at()? })
            }
            other => Err(format!("unknown frequency {other:?}")),
        }
    }

    /// When the next digest is due: `None` for immediate delivery, else the first
    /// scheduled moment strictly after `now` in `tz`.
    ///
    /// Computed from `now`, never from the previous due time, so a daemon that was down
    /// for a week sends one overdue digest, not seven. On DST change days: a local time
    /// that happens twice is used the first time only; one that does not exist (the
    /// spring-forward gap) is moved to the end of the gap. Neither skips nor repeats a
    /// digest.
    pub fn next_after(self, now: DateTime<Utc>, tz: Tz) -> Option<DateTime<Utc>> {
        match self {
            Schedule::Immediate => None,
            Schedule::Hourly => {
                // Local hours start on a quarter hour of UTC in every zone in use; check
                // the next eight quarters for the one that is a local :00.
                let quarter = chrono::Duration::minutes(15);
                let base = now.duration_trunc(quarter).unwrap_or(now);
                (1..=8)
                    .map(|k| base + quarter * k)
                    .find(|t| t.with_timezone(&tz).minute() == 0)
                    .or(Some(base + chrono::Duration::hours(1)))
            }
            Schedule::Daily { at } => {
                let today = now.with_timezone(&tz).date_naive();
                (0..=2u64).find_map(|d| {
                    let t = local_moment(tz, today.checked_add_days(Days::new(d))?, at)?;
                    (t > now).then_some(t)
                })
            }
            Schedule::Weekly { day, at } => {
                let today = now.with_timezone(&tz).date_naive();
                (0..=8u64).find_map(|d| {
                    let date = today.checked_add_days(Days::new(d))?;
                    if date.weekday() != day {
                        return None;
                    }
                    let t = local_moment(tz, date, at)?;
                    (t > now).then_some(t)
                })
            }
        }
    }
}

impl Schedule {
    /// The schedule as [`Schedule::parse`] reads it (`weekly fri 17:00`), for forms.
    pub fn spec(&self) -> String {
        match self {
            Schedule::Immediate => "immediate".into(),
            Schedule::Hourly => "hourly".into(),
            Schedule::Daily { at } => format!("daily {}", at.format("%H:%M")),
            Schedule::Weekly { day, at } => format!(
                "weekly {} {}",
                day.to_string().to_lowercase(),
                at.format("%H:%M")
            ),
        }
    }
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Schedule::Immediate => f.write_str("immediate"),
            Schedule::Hourly => f.write_str("hourly"),
            Schedule::Daily { at } => write!(f, "daily at {}", at.format("%H:%M")),
            Schedule::Weekly { day, at } => write!(
                f,
                "weekly on {} at {}",
                WEEKDAYS[day.num_days_from_monday() as usize],
                at.format("%H:%M")
            ),
        }
    }
}

/// `date` at `time` in `tz`: the first of two if the clock went back, the end of the
/// gap if it jumped over `time`.
fn local_moment(tz: Tz, date: NaiveDate, time: NaiveTime) -> Option<DateTime<Utc>> {
    let local = date.and_time(time);
    match tz.from_local_datetime(&local) {
        LocalResult::Single(t) | LocalResult::Ambiguous(t, _) => Some(t.with_timezone(&Utc)),
        LocalResult::None => (1..=16).find_map(|k| {
            tz.from_local_datetime(&(local + chrono::Duration::minutes(15 * k)))
                .earliest()
                .map(|t| {
                    // The first valid quarter hour after the gap is its end; `time` had
                    // a minute offset into the gap that the clock skipped too.
                    let t = t.with_timezone(&Utc);
                    t.duration_trunc(chrono::Duration::minutes(15)).unwrap_or(t)
                })
        }),
    }
}

// ---- content --------------------------------------------------------------------------------

/// One pending match, as the store hands it over.
#[derive(Debug, Clone, PartialEq)]
pub struct DigestEntry {
    pub subscription_id: SubscriptionId,
    pub query: String,
    pub item_id: ItemId,
    pub feed_id: String,
    pub feed_name: String,
    /// The feed's tags, so `tag:` queries explain (and highlight) as they matched.
    pub tags: Vec<String>,
    pub title: String,
    pub link: Option<String>,
    pub summary: String,
    pub content: String,
    pub published: Option<DateTime<Utc>>,
    pub first_seen: DateTime<Utc>,
    /// The item was in an earlier digest and has changed since.
    pub updated: bool,
    /// The story its link points to (full-text feeds), which it was matched on too.
    pub article: Option<String>,
    /// Its story (see [`crate::story`]): items of other feeds with the same story are
    /// shown once, the others as "also covered by".
    pub story: i64,
    /// A new outlet for a story the subscriber already got: listed as more coverage,
    /// and it did not make this digest due by itself.
    pub more_coverage: bool,
    /// The item's language (`es`), when known.
    pub lang: Option<String>,
    /// Its search crosses languages: explained (highlighted) as it matched.
    pub crosses_languages: bool,
}

/// A feed that has been failing, named in the footer so silence is not read as "no news".
#[derive(Debug, Clone, PartialEq)]
pub struct FailingFeed {
    pub name: String,
    /// The last success, or the first failure when it never worked.
    pub since: DateTime<Utc>,
    pub error: String,
}

/// Who the digest is for and what goes around the items.
#[derive(Debug, Clone, Copy)]
pub struct DigestContext<'a> {
    pub recipient: &'a str,
    pub schedule: Schedule,
    /// Dates are shown in this zone.
    pub timezone: Tz,
    pub synonyms: &'a Synonyms,
    pub failing_feeds: &'a [FailingFeed],
    pub unsubscribe_url: Option<&'a str>,
    /// The subscriber's own page (searches, schedule), linked in the footer.
    pub manage_url: Option<&'a str>,
    /// Shared by the digests of one round, so an item's highlighted title and snippet
    /// for a query are made once, not once per subscriber.
    pub cache: Option<&'a StoryCache>,
    /// More matches are pending than one message holds ([`MAX_DIGEST_ENTRIES`]): they
    /// follow in the next one, and the intro says so.
    pub more_follow: bool,
    /// The subscriber's language: the digest's words, dates and numbers.
    pub locale: &'a Locale,
}

/// The most matches one digest holds; past it a message grows beyond what mail servers
/// take (60k matches made a 35 MB message). The rest stay pending for the next digest,
/// which goes out at once.
pub const MAX_DIGEST_ENTRIES: usize = 500;

/// Highlighted title and snippets of items, by (item, query), for one digest round.
#[derive(Debug, Default)]
pub struct StoryCache {
    parts: std::sync::Mutex<HashMap<PartsKey, Arc<StoryParts>>>,
}

/// Item, query, whether it crosses languages, and locale: what the highlighting of an
/// item depends on.
type PartsKey = (ItemId, String, bool, String);

/// What the highlighting of one item for one query produces.
#[derive(Debug)]
struct StoryParts {
    title: String,
    title_html: String,
    snippet_html: String,
    snippet_text: String,
    /// The snippet without highlights or wrapping, for other destinations.
    snippet_plain: String,
    /// The snippet is from the article, not the feed's text.
    from_article: bool,
    /// The query's terms that matched, each once, in the order they were found.
    matched: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    pub subject: String,
    pub text: String,
    pub html: String,
}

/// Longest snippet, in characters.
const SNIPPET_CHARS: usize = 280;

/// Subscriptions named in a subject before "+N more".
const SUBJECT_QUERIES: usize = 4;
/// Longest query shown in a subject, in characters.
const SUBJECT_QUERY_CHARS: usize = 40;
/// Highlight style: inline, so Gmail and Outlook (which drop `<style>`) show it.
const MARK_OPEN: &str = "<mark style=\"background-color:#fff0a8;color:#222222;padding:0 1px;\">";

/// HTML-escapes strings like minijinja does, but leaves `/` alone so links read as links
/// in the source (some mail clients do not decode `&#x2f;` in `href`). The web pages use
/// it too.
pub(crate) fn html_formatter(
    out: &mut minijinja::Output<'_>,
    state: &minijinja::State<'_, '_>,
    value: &Value,
) -> Result<(), minijinja::Error> {
    match value.as_str() {
        Some(s) if state.auto_escape() == AutoEscape::Html && !value.is_safe() => {
            out.write_str(&escape(s)).map_err(minijinja::Error::from)
        }
        _ => minijinja::escape_formatter(out, state, value),
    }
}

static TEMPLATES: LazyLock<Environment<'static>> = LazyLock::new(|| {
    let mut env = Environment::new();
    env.set_trim_blocks(true);
    env.set_lstrip_blocks(true);
    env.set_formatter(html_formatter);
    crate::locale::install(&mut env);
    // The templates are compiled into the binary; a unit test renders both.
    for (name, source) in [
        ("digest.html", include_str!("../templates/digest.html")),
        ("digest.txt", include_str!("../templates/digest.txt")),
    ] {
        if let Err(e) = env.add_template(name, source) {
            panic!("template {name} does not compile: {e}");
        }
    }
    env
});

/// Lets through `<mark>` and nothing else: the last word on what feed text becomes.
static SANITIZER: LazyLock<ammonia::Builder<'static>> = LazyLock::new(|| {
    let mut builder = ammonia::Builder::empty();
    builder.add_tags(["mark"]);
    builder
});

/// One story of a digest: an item, and the same story carried by other feeds.
#[derive(Debug)]
struct Story<'a> {
    entry: &'a DigestEntry,
    /// Items of other feeds with the same story (or canonical link), shown as "also
    /// covered by".
    also_in: Vec<&'a DigestEntry>,
}

impl Story<'_> {
    /// Only new outlets for a story the subscriber already got.
    fn more_coverage(&self) -> bool {
        self.entry.more_coverage && self.also_in.iter().all(|e| e.more_coverage)
    }
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

/// Outlets named under a story, at most: a wire story can be carried by hundreds.
pub const MAX_ALSO_SHOWN: usize = 10;

/// How much of a story an entry tells: its text, and its article's.
fn completeness(e: &DigestEntry) -> usize {
    e.summary.len().max(e.content.len()) + e.article.as_deref().map_or(0, str::len)
}

/// The digest's stories, grouped by subscription in the order the entries arrive. Every
/// entry is shown: as a story, or as "also covered by" of a story from another feed with
/// the same story id or link. An item matched by several subscriptions appears once,
/// under the first. Two items of one feed are never merged (a live blog's updates share
/// a page), and links that differ in their fragment are different stories. A story shows
/// its first item (the original) when the digest has it, else its most complete version
/// (the most text; the first of equals), never hiding an update; stories of only more
/// coverage come after the others of their search.
fn arrange(entries: &[DigestEntry]) -> Vec<(&str, Vec<Story<'_>>)> {
    let mut groups: Vec<(&str, Vec<Story>)> = Vec::new();
    let mut shown: HashSet<ItemId> = HashSet::new();
    // Stories by link and by story id: (group, index) of each.
    let mut by_link: HashMap<&str, Vec<(usize, usize)>> = HashMap::new();
    let mut by_story: HashMap<i64, Vec<(usize, usize)>> = HashMap::new();
    for entry in entries {
        if !shown.insert(entry.item_id) {
            continue;
        }
        let fits = |&(g, s): &(usize, usize)| {
            let story: &Story = &groups[g].1[s];
            story.entry.feed_id != entry.feed_id
                && story.also_in.iter().all(|e| e.feed_id != entry.feed_id)
        };
        let joins = by_story
            .get(&entry.story)
            .and_then(|places| places.iter().copied().find(fits))
            .or_else(|| {
                let link = entry.link.as_deref()?;
                by_link.get(link)?.iter().copied().find(fits)
            });
        if let Some((g, s)) = joins {
            groups[g].1[s].also_in.push(entry);
            continue;
        }
        let g = match groups.iter().position(|(q, _)| *q == entry.query) {
            Some(g) => g,
            None => {
                groups.push((&entry.query, Vec::new()));
                groups.len() - 1
            }
        };
        let place = (g, groups[g].1.len());
        if let Some(link) = entry.link.as_deref() {
            by_link.entry(link).or_default().push(place);
        }
        by_story.entry(entry.story).or_default().push(place);
        groups[g].1.push(Story {
            entry,
            also_in: Vec::new(),
        });
    }
    for (_, stories) in &mut groups {
        // An update (a correction) is never demoted to "also covered by".
        for story in stories.iter_mut().filter(|s| !s.entry.updated) {
            // Shown under its search's name, highlighted for its search: only an entry of
            // the same search takes the story's place. The story's first item (the
            // original, usually the agency's) before any later copy, however long; else
            // the most complete version.
            let candidates = || {
                story
                    .also_in
                    .iter()
                    .enumerate()
                    .filter(|(_, e)| e.query == story.entry.query && !e.updated)
            };
            let is_first = |e: &DigestEntry| e.item_id.0 == e.story;
            let pick = if is_first(story.entry) {
                None
            } else if let Some((i, _)) = candidates().find(|(_, e)| is_first(e)) {
                Some(i)
            } else {
                candidates()
                    .fold(None, |best: Option<(usize, usize)>, (i, e)| {
                        let c = completeness(e);
                        match best {
                            Some((_, b)) if b >= c => best,
                            _ if c > completeness(story.entry) => Some((i, c)),
                            _ => best,
                        }
                    })
                    .map(|(i, _)| i)
            };
            if let Some(i) = pick {
                std::mem::swap(&mut story.entry, &mut story.also_in[i]);
            }
        }
        // Stable: the order within each kind stays.
        stories.sort_by_key(Story::more_coverage);
    }
    groups
}

/// Renders one digest. Entries arrive grouped by subscription; see [`arrange`] for how
/// they become stories.
pub fn render_digest(
    entries: &[DigestEntry],
    cx: &DigestContext<'_>,
) -> Result<Rendered, minijinja::Error> {
    let groups = arrange(entries);
    let (new, updated, coverage) = counts(&groups);
    let subject = subject(cx.locale, (new, updated, coverage), &groups, |(q, s)| {
        (*q, s.len())
    });
    let l = cx.locale;
    let intro = match (new as u64, updated as u64) {
        (0, 0) => l.count("digest.intro_coverage", coverage as u64, &[]),
        (n, 0) => l.count("digest.intro_new", n, &[]),
        (0, u) => l.count("digest.intro_updated", u, &[]),
        (n, u) => l.fill(
            "digest.intro_both",
            &[
                ("new", &l.count("digest.intro_both_new", n, &[])),
                ("updated", &l.count("digest.intro_both_updated", u, &[])),
            ],
        ),
    };
    let intro = if cx.more_follow {
        format!("{intro} {}", l.text("digest.more_follow"))
    } else {
        intro
    };

    let mut queries: HashMap<&str, Option<Query>> = HashMap::new();
    let groups: Vec<Value> = groups
        .iter()
        .map(|(query, stories)| {
            let parsed = queries
                .entry(query)
                .or_insert_with(|| parsed_search(query, stories, cx.synonyms))
                .as_ref();
            let stories: Vec<Value> = stories
                .iter()
                .map(|story| {
                    story_value(
                        story.entry,
                        &story.also_in,
                        story.more_coverage(),
                        parsed,
                        cx,
                    )
                })
                .collect();
            context! { query => one_line(query), stories }
        })
        .collect();
    let failing: Vec<Value> = cx
        .failing_feeds
        .iter()
        .map(|f| {
            context! {
                name => one_line(&f.name),
                since => cx.locale.date(&f.since.with_timezone(&cx.timezone), true),
                error => truncate(&one_line(&f.error), 120),
            }
        })
        .collect();
    let page = context! {
        lang => &cx.locale.code,
        subject => &subject,
        intro,
        groups,
        failing,
        recipient => cx.recipient,
        schedule => cx.schedule.to_string(),
        unsubscribe_url => cx.unsubscribe_url,
        manage_url => cx.manage_url,
    };
    let html = TEMPLATES.get_template("digest.html")?.render(&page)?;
    let mut text = TEMPLATES.get_template("digest.txt")?.render(&page)?;
    text.push('\n');
    Ok(Rendered {
        subject,
        text,
        html: html + "\n",
    })
}

/// A search of a digest as it matched: across languages when it does (its stories all
/// come from the one search of that text).
fn parsed_search(query: &str, stories: &[Story<'_>], synonyms: &Synonyms) -> Option<Query> {
    let parsed = Query::parse(query).ok()?;
    Some(if stories.iter().any(|s| s.entry.crosses_languages) {
        parsed.across_languages(synonyms)
    } else {
        parsed
    })
}

/// The highlighted parts of `e` for its query, from the round's cache when there is one.
fn parts_of(e: &DigestEntry, query: Option<&Query>, cx: &DigestContext<'_>) -> Arc<StoryParts> {
    match cx.cache {
        Some(cache) => {
            let key = (
                e.item_id,
                e.query.clone(),
                e.crosses_languages,
                cx.locale.code.clone(),
            );
            let cached = cache
                .parts
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(&key)
                .cloned();
            cached.unwrap_or_else(|| {
                let parts = Arc::new(story_parts(e, query, cx));
                cache
                    .parts
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(key, parts.clone());
                parts
            })
        }
        None => Arc::new(story_parts(e, query, cx)),
    }
}

/// The new, updated and more-coverage stories of a digest.
fn counts(groups: &[(&str, Vec<Story<'_>>)]) -> (usize, usize, usize) {
    let stories = groups.iter().flat_map(|(_, s)| s);
    let coverage = stories.clone().filter(|s| s.more_coverage()).count();
    let updated = stories
        .clone()
        .filter(|s| !s.more_coverage() && s.entry.updated)
        .count();
    (stories.count() - coverage - updated, updated, coverage)
}

fn story_value(
    e: &DigestEntry,
    also_in: &[&DigestEntry],
    more_coverage: bool,
    query: Option<&Query>,
    cx: &DigestContext<'_>,
) -> Value {
    let parts = parts_of(e, query, cx);
    let date = e
        .published
        .unwrap_or(e.first_seen)
        .with_timezone(&cx.timezone);
    context! {
        title => &parts.title,
        title_html => Value::from_safe_string(parts.title_html.clone()),
        link => e.link.as_deref(),
        source => one_line(&e.feed_name),
        // Named in itself ("Español") when it is not the digest's language.
        language => e.lang.as_deref().filter(|l| *l != cx.locale.code).map(native_name),
        language_code => e.lang.as_deref(),
        date => cx.locale.date(&date, false),
        also_in => also_in
            .iter()
            .take(MAX_ALSO_SHOWN)
            .map(|a| context! { source => one_line(&a.feed_name), link => a.link.as_deref() })
            .collect::<Vec<_>>(),
        also_more => also_in.len().saturating_sub(MAX_ALSO_SHOWN),
        more_coverage,
        snippet_html => Value::from_safe_string(parts.snippet_html.clone()),
        snippet_text => &parts.snippet_text,
        from_article => parts.from_article,
        updated => e.updated,
    }
}

/// The title and a snippet of `e` with what `query` matched highlighted.
fn story_parts(e: &DigestEntry, query: Option<&Query>, cx: &DigestContext<'_>) -> StoryParts {
    let synonyms = cx.synonyms;
    let title = if e.title.trim().is_empty() {
        cx.locale.text("digest.untitled").to_string()
    } else {
        one_line(&e.title)
    };
    let feed_text = crate::parse::visible(body_text(&e.summary, &e.content));
    let article = e
        .article
        .as_deref()
        .filter(|a| !a.trim().is_empty())
        .map(|a| crate::parse::visible(a.to_string()));
    // Explained on the text it was matched on: the feed's, then the article's.
    let matched = match &article {
        Some(article) => format!("{feed_text}\n\n{article}"),
        None => feed_text.clone(),
    };
    let hits = query
        .and_then(|q| {
            let doc = Document::new(&title, &matched)
                .with_source(&e.feed_id, &e.tags)
                .with_lang(e.lang.as_deref());
            q.explain(&doc, synonyms)
        })
        .unwrap_or_default();
    let ranges_in = |field| {
        hits.iter()
            .filter(|h| h.field == field)
            .map(|h| h.range.clone())
            .collect::<Vec<_>>()
    };
    // The snippet shows the feed's text, unless what matched is only in the article:
    // then it shows the article (and says so).
    let body_hits = ranges_in(Field::Body);
    let in_feed: Vec<_> = body_hits
        .iter()
        .filter(|r| r.end <= feed_text.len())
        .cloned()
        .collect();
    let article_start = feed_text.len() + 2;
    let (body, body_ranges, from_article) = match &article {
        Some(article) if in_feed.is_empty() && !body_hits.is_empty() => {
            let shifted = body_hits
                .iter()
                .filter(|r| r.start >= article_start)
                .map(|r| r.start - article_start..r.end - article_start)
                .collect();
            (article.as_str(), shifted, true)
        }
        _ => (feed_text.as_str(), in_feed, false),
    };
    let (snippet, snippet_ranges) = excerpt(body, &body_ranges, SNIPPET_CHARS);
    let title_parts = segments(&title, &ranges_in(Field::Title));
    let snippet_parts = segments(&snippet, &snippet_ranges);
    let mut matched: Vec<String> = Vec::new();
    for hit in &hits {
        if !matched.contains(&hit.term) {
            matched.push(hit.term.clone());
        }
    }
    StoryParts {
        snippet_plain: snippet.trim().to_string(),
        matched,
        title_html: highlighted_html(&title_parts),
        snippet_html: highlighted_html(&snippet_parts),
        snippet_text: highlighted_text(&snippet_parts),
        from_article,
        title,
    }
}

// ---- destinations beside email --------------------------------------------------------------

/// Where a subscriber's searches go, as the digest's transaction reads it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Routes {
    /// Searches whose subscriber turned email off for them.
    pub not_to_email: HashSet<SubscriptionId>,
    /// The subscriber's active destinations.
    pub channels: Vec<ChannelRoute>,
}

/// One active destination and the searches it takes.
#[derive(Debug, Clone, PartialEq)]
pub struct ChannelRoute {
    pub id: ChannelId,
    pub name: String,
    /// Takes every search; otherwise only `searches`.
    pub every_search: bool,
    pub searches: HashSet<SubscriptionId>,
}

impl ChannelRoute {
    fn takes(&self, search: SubscriptionId) -> bool {
        self.every_search || self.searches.contains(&search)
    }
}

/// A digest round's matches, split by where they go. Every match goes somewhere: a
/// search whose destinations are all paused or gone, or that has none, goes to email.
#[derive(Debug, Clone, PartialEq)]
pub struct Parcels {
    pub more_follow: bool,
    pub email: Vec<DigestEntry>,
    /// Each destination with the matches it takes (none listed that take nothing).
    pub channels: Vec<(ChannelRoute, Vec<DigestEntry>)>,
}

/// Splits `entries` (in digest order) between email and the destinations of `routes`.
pub fn route(entries: &[DigestEntry], routes: &Routes, more_follow: bool) -> Parcels {
    let mut email = Vec::new();
    let mut channels: Vec<(ChannelRoute, Vec<DigestEntry>)> = routes
        .channels
        .iter()
        .map(|c| (c.clone(), Vec::new()))
        .collect();
    for e in entries {
        let mut elsewhere = false;
        for (channel, taken) in &mut channels {
            if channel.takes(e.subscription_id) {
                taken.push(e.clone());
                elsewhere = true;
            }
        }
        if !elsewhere || !routes.not_to_email.contains(&e.subscription_id) {
            email.push(e.clone());
        }
    }
    channels.retain(|(_, taken)| !taken.is_empty());
    Parcels {
        more_follow,
        email,
        channels,
    }
}

/// What a digest round writes to the outbox: the mail (when anything goes to email) and
/// one event per destination, in the order of [`Parcels::channels`].
#[derive(Debug, Clone, PartialEq)]
pub struct RenderedRound {
    pub email: Option<Rendered>,
    pub events: Vec<Event>,
}

/// What a destination receives, before each service's formatting: the body of a webhook
/// (the Standard Webhooks shape: `type`, `timestamp`, `data`), and what the chat
/// formats are made from.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Event {
    /// `tidings.digest`, `tidings.verify` or `tidings.test`.
    #[serde(rename = "type")]
    pub kind: String,
    pub timestamp: DateTime<Utc>,
    pub data: EventData,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct EventData {
    /// The subscriber's address.
    pub subscriber: String,
    /// The destination's name.
    pub destination: String,
    /// One line: the digest's subject, or what a notice is about.
    pub title: String,
    /// The subscriber's time zone (IANA), for the dates chat messages show.
    pub timezone: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub searches: Vec<EventSearch>,
    /// More matches were pending than one digest holds; they follow in the next.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub more_follow: bool,
    /// A notice's text (a verification, a test).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// A verification's code, to be entered on the subscriber's page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct EventSearch {
    pub query: String,
    /// The search's private feed: every match, for a message cut short.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub feed_url: Option<String>,
    pub items: Vec<EventItem>,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct EventItem {
    pub title: String,
    #[serde(default)]
    pub link: Option<String>,
    /// The feed's name.
    pub source: String,
    /// Published (or first seen, when the feed gives no date).
    pub date: DateTime<Utc>,
    /// Plain text around what matched.
    pub snippet: String,
    /// The search's terms that matched.
    pub matched: Vec<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub updated: bool,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub from_article: bool,
    /// A new outlet for a story the subscriber already got.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub more_coverage: bool,
    /// Other feeds carrying the same story, the first [`MAX_ALSO_SHOWN`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub also_in: Vec<EventSource>,
    /// How many more carry it.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub also_more: usize,
    /// The item's language (`es`), when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lang: Option<String>,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct EventSource {
    pub source: String,
    #[serde(default)]
    pub link: Option<String>,
}

impl Event {
    /// A notice for a destination: a verification (`code` set) or a test.
    pub fn notice(
        kind: &str,
        subscriber: &str,
        destination: &str,
        title: &str,
        text: &str,
        code: Option<&str>,
        now: DateTime<Utc>,
    ) -> Event {
        Event {
            kind: kind.to_string(),
            timestamp: now,
            data: EventData {
                subscriber: subscriber.to_string(),
                destination: destination.to_string(),
                title: title.to_string(),
                timezone: "UTC".to_string(),
                searches: Vec::new(),
                more_follow: false,
                text: Some(text.to_string()),
                code: code.map(str::to_string),
            },
        }
    }

    /// The number of items it carries.
    pub fn items(&self) -> usize {
        self.data.searches.iter().map(|s| s.items.len()).sum()
    }
}

/// The digest of `entries` for the destination `destination`, as an [`Event`]: stories
/// arranged as in mail (see [`arrange`]), with plain snippets and the matched terms.
pub fn digest_event(
    entries: &[DigestEntry],
    cx: &DigestContext<'_>,
    destination: &str,
    now: DateTime<Utc>,
    feed_url: &dyn Fn(SubscriptionId) -> String,
) -> Event {
    let groups = arrange(entries);
    let (new, updated, coverage) = counts(&groups);
    let title = subject(cx.locale, (new, updated, coverage), &groups, |(q, s)| {
        (*q, s.len())
    });
    let mut queries: HashMap<&str, Option<Query>> = HashMap::new();
    let searches = groups
        .iter()
        .map(|(query, stories)| {
            let parsed = queries
                .entry(query)
                .or_insert_with(|| parsed_search(query, stories, cx.synonyms))
                .as_ref();
            let items = stories
                .iter()
                .map(|story| {
                    let e = story.entry;
                    let parts = parts_of(e, parsed, cx);
                    EventItem {
                        title: parts.title.clone(),
                        link: e.link.clone(),
                        source: one_line(&e.feed_name),
                        date: e.published.unwrap_or(e.first_seen),
                        snippet: parts.snippet_plain.clone(),
                        matched: parts.matched.clone(),
                        updated: e.updated,
                        from_article: parts.from_article,
                        more_coverage: story.more_coverage(),
                        also_more: story.also_in.len().saturating_sub(MAX_ALSO_SHOWN),
                        lang: e.lang.clone(),
                        also_in: story
                            .also_in
                            .iter()
                            .take(MAX_ALSO_SHOWN)
                            .map(|a| EventSource {
                                source: one_line(&a.feed_name),
                                link: a.link.clone(),
                            })
                            .collect(),
                    }
                })
                .collect();
            let search = stories.first().map(|s| s.entry.subscription_id);
            EventSearch {
                query: one_line(query),
                feed_url: search.map(feed_url),
                items,
            }
        })
        .collect();
    Event {
        kind: "tidings.digest".to_string(),
        timestamp: now,
        data: EventData {
            subscriber: cx.recipient.to_string(),
            destination: destination.to_string(),
            title,
            timezone: cx.timezone.name().to_string(),
            searches,
            more_follow: cx.more_follow,
            text: None,
            code: None,
        },
    }
}

/// `Tidings: 5 new — asylum (3), H-1B (2)`, naming at most a few subscriptions.
fn subject<G>(
    locale: &Locale,
    (new, updated, coverage): (usize, usize, usize),
    groups: &[G],
    name_and_count: impl Fn(&G) -> (&str, usize),
) -> String {
    let l = locale;
    let counts = match (new as u64, updated as u64) {
        (0, 0) => l.count("digest.counts_coverage", coverage as u64, &[]),
        (n, 0) => l.count("digest.counts_new", n, &[]),
        (0, u) => l.count("digest.counts_updated", u, &[]),
        (n, u) => l.fill(
            "digest.counts_both",
            &[
                ("new", &l.count("digest.counts_new", n, &[])),
                ("updated", &l.count("digest.counts_updated", u, &[])),
            ],
        ),
    };
    let mut named: Vec<String> = groups
        .iter()
        .take(SUBJECT_QUERIES)
        .map(|g| {
            let (query, count) = name_and_count(g);
            format!(
                "{} ({count})",
                truncate(&one_line(query), SUBJECT_QUERY_CHARS)
            )
        })
        .collect();
    if groups.len() > SUBJECT_QUERIES {
        named.push(l.count(
            "digest.subject_more",
            (groups.len() - SUBJECT_QUERIES) as u64,
            &[],
        ));
    }
    l.fill(
        "digest.subject",
        &[("counts", &counts), ("searches", &named.join(", "))],
    )
}

/// `text` cut into (piece, highlighted) runs at `ranges`, with whitespace runs
/// (newlines included) collapsed to single spaces.
fn segments(text: &str, ranges: &[Range<usize>]) -> Vec<(String, bool)> {
    let mut out = Vec::new();
    let mut at = 0;
    for r in ranges {
        if r.start < at || r.end > text.len() {
            continue;
        }
        if r.start > at {
            out.push((collapse(&text[at..r.start]), false));
        }
        out.push((collapse(&text[r.clone()]), true));
        at = r.end;
    }
    if at < text.len() {
        out.push((collapse(&text[at..]), false));
    }
    out
}

fn collapse(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut space = false;
    for c in s.chars() {
        if c.is_whitespace() || c.is_control() {
            space = true;
        } else {
            if space {
                out.push(' ');
                space = false;
            }
            out.push(c);
        }
    }
    if space {
        out.push(' ');
    }
    out
}

/// Escaped text with `<mark>` around the highlights, passed through ammonia. Its input is
/// flat (never nested markup) and bounded (extracted text: a title of at most
/// [`crate::parse::MAX_TEXT_BYTES`], a snippet of [`SNIPPET_CHARS`]), so the tree ammonia
/// builds stays shallow and its work linear.
fn highlighted_html(parts: &[(String, bool)]) -> String {
    let mut html = String::new();
    for (piece, marked) in parts {
        if *marked {
            html.push_str("<mark>");
            html.push_str(&escape(piece));
            html.push_str("</mark>");
        } else {
            html.push_str(&escape(piece));
        }
    }
    SANITIZER
        .clean(html.trim())
        .to_string()
        .replace("<mark>", MARK_OPEN)
}

/// The snippet for the plain-text part: highlights as `*word*`, wrapped and indented.
fn highlighted_text(parts: &[(String, bool)]) -> String {
    let mut text = String::new();
    for (piece, marked) in parts {
        if *marked {
            text.push('*');
            text.push_str(piece);
            text.push('*');
        } else {
            text.push_str(piece);
        }
    }
    let options = textwrap::Options::new(74)
        .initial_indent("  ")
        .subsequent_indent("  ");
    textwrap::fill(text.trim(), options)
}

/// A window of at most about `max_chars` characters of `text` around its first highlighted
/// range, cut at word boundaries and marked with "…" where cut. `ranges` are byte ranges
/// into `text` (sorted, non-overlapping); those inside the window come back re-based onto
/// the excerpt.
pub fn excerpt(
    text: &str,
    ranges: &[Range<usize>],
    max_chars: usize,
) -> (String, Vec<Range<usize>>) {
    let valid = |r: &&Range<usize>| {
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
    let mut body = text[start..end].trim_end();
    if !suffix.is_empty() {
        // "authorities.…" reads badly: the ellipsis replaces the punctuation.
        body = body.trim_end_matches(['.', ',', ';', ':']);
    }
    let out = format!("{prefix}{body}{suffix}");
    let kept = ranges
        .iter()
        .filter(|r| r.start >= start && r.end <= end)
        .map(|r| r.start - start + shift..r.end - start + shift)
        .filter(|r| r.end <= shift + body.len())
        .collect();
    (out, kept)
}

fn truncate(s: &str, max_chars: usize) -> String {
    if s.chars().count() <= max_chars {
        return s.to_string();
    }
    let cut: String = s.chars().take(max_chars - 1).collect();
    format!("{}…", cut.trim_end())
}

/// Text safe for one line of a header or list: control characters and runs of
/// whitespace become single spaces.
/// `s` on one line, without control characters or the invisible ones
/// ([`crate::parse::visible`]) that text stored before they were removed at ingest may
/// still hold.
fn one_line(s: &str) -> String {
    crate::parse::visible(s.to_string())
        .split(|c: char| c.is_control() || c.is_whitespace())
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
    use chrono_tz::{America, Asia, Australia, Europe};

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn hm(h: u32, m: u32) -> NaiveTime {
        NaiveTime::from_hms_opt(h, m, 0).unwrap()
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
            subscription_id: SubscriptionId(sub),
            query: query.into(),
            item_id: ItemId(item),
            feed_id: feed.into(),
            feed_name: format!("{feed} news"),
            tags: vec!["us".into()],
            title: title.into(),
            link: link.map(Into::into),
            summary: format!("Summary of {title}"),
            content: String::new(),
            published: Some(at("2026-11-27T15:00:00Z")),
            first_seen: at("2026-11-28T12:00:00Z"),
            updated: false,
            article: None,
            story: item,
            more_coverage: false,
            lang: None,
            crosses_languages: false,
        }
    }

    fn render(entries: &[DigestEntry]) -> Rendered {
        render_with(entries, Tz::UTC, &[], None)
    }

    fn render_with(
        entries: &[DigestEntry],
        timezone: Tz,
        failing_feeds: &[FailingFeed],
        unsubscribe_url: Option<&str>,
    ) -> Rendered {
        let synonyms = Synonyms::new(vec![vec![
            "TPS".into(),
            "temporary protected status".into(),
        ]])
        .unwrap();
        let cx = DigestContext {
            recipient: "ana@example.org",
            schedule: Schedule::Daily { at: hm(8, 0) },
            timezone,
            synonyms: &synonyms,
            failing_feeds,
            unsubscribe_url,
            manage_url: unsubscribe_url.map(|_| "https://alerts.example.org/manage/1.ab"),
            cache: None,
            more_follow: false,
            locale: crate::locale::get("en"),
        };
        render_digest(entries, &cx).unwrap()
    }

    #[test]
    fn a_schedule_spec_parses_back_to_the_same_schedule() {
        for text in [
            "immediate",
            "hourly",
            "daily 07:30",
            "weekly fri 17:00",
            "weekly sun 00:05",
        ] {
            let schedule = Schedule::parse(text, hm(8, 0)).unwrap();
            assert_eq!(schedule.spec(), text);
            assert_eq!(Schedule::parse(&schedule.spec(), hm(8, 0)), Ok(schedule));
        }
    }

    #[test]
    fn schedules_read_as_people_write_them() {
        let eight = hm(8, 0);
        let ok = [
            ("immediate", Schedule::Immediate),
            ("Hourly", Schedule::Hourly),
            ("daily", Schedule::Daily { at: eight }),
            ("daily 07:30", Schedule::Daily { at: hm(7, 30) }),
            ("daily at 7:05", Schedule::Daily { at: hm(7, 5) }),
            (
                "weekly",
                Schedule::Weekly {
                    day: Weekday::Mon,
                    at: eight,
                },
            ),
            (
                "weekly fri",
                Schedule::Weekly {
                    day: Weekday::Fri,
                    at: eight,
                },
            ),
            (
                "weekly on Friday at 17:00",
                Schedule::Weekly {
                    day: Weekday::Fri,
                    at: hm(17, 0),
                },
            ),
            (
                "every weekly 06:00 sun",
                Schedule::Weekly {
                    day: Weekday::Sun,
                    at: hm(6, 0),
                },
            ),
            (
                "every tuesday",
                Schedule::Weekly {
                    day: Weekday::Tue,
                    at: eight,
                },
            ),
            (
                "every Friday at 17:00",
                Schedule::Weekly {
                    day: Weekday::Fri,
                    at: hm(17, 0),
                },
            ),
            ("every day 07:30", Schedule::Daily { at: hm(7, 30) }),
            ("every hour", Schedule::Hourly),
            (
                "every week",
                Schedule::Weekly {
                    day: Weekday::Mon,
                    at: eight,
                },
            ),
        ];
        for (text, expected) in ok {
            assert_eq!(Schedule::parse(text, eight), Ok(expected), "{text}");
            // What is stored reads back the same.
            let back = Schedule::from_parts(
                expected.frequency(),
                expected
                    .time()
                    .map(|t| t.format("%H:%M").to_string())
                    .as_deref(),
                expected.weekday().map(|d| d.num_days_from_monday()),
            );
            assert_eq!(back, Ok(expected), "{text} round trip");
        }
        let bad = [
            ("", "empty schedule"),
            ("every every", "no frequency given, only \"every\""),
            ("at on", "no frequency given"),
            ("monthly", "unknown frequency \"monthly\""),
            (
                "fortnightly",
                "expected immediate, hourly, daily [HH:MM] or weekly [DAY] [HH:MM]",
            ),
            ("daily 25:00", "\"25:00\" is not a time"),
            ("daily mon", "daily digests take no weekday"),
            ("hourly 08:00", "hourly digests take no time"),
            ("weekly mon tue", "more than one weekday"),
            ("weekly funday", "neither a time like 07:30 nor a weekday"),
        ];
        for (text, message) in bad {
            let err = Schedule::parse(text, eight).unwrap_err();
            assert!(err.contains(message), "{text:?}: {err}");
        }
        assert_eq!(
            Schedule::Weekly {
                day: Weekday::Wed,
                at: hm(9, 15)
            }
            .to_string(),
            "weekly on Wednesday at 09:15"
        );
    }

    #[test]
    fn next_digest_times() {
        let ny = America::New_York;
        let daily8 = Schedule::Daily { at: hm(8, 0) };
        let monday8 = Schedule::Weekly {
            day: Weekday::Mon,
            at: hm(8, 0),
        };
        // (name, schedule, zone, now, expected)
        let cases = [
            (
                "immediate has no schedule",
                Schedule::Immediate,
                ny,
                "2026-11-28T12:00:00Z",
                None,
            ),
            (
                "later today",
                daily8,
                ny,
                "2026-11-28T12:00:00Z",
                Some("2026-11-28T13:00:00Z"),
            ),
            (
                "already passed today",
                daily8,
                ny,
                "2026-11-28T14:00:00Z",
                Some("2026-11-29T13:00:00Z"),
            ),
            (
                "exactly at the time moves on",
                daily8,
                ny,
                "2026-11-28T13:00:00Z",
                Some("2026-11-29T13:00:00Z"),
            ),
            (
                "spring forward keeps 08:00 local",
                daily8,
                ny,
                "2026-03-07T14:00:00Z",
                Some("2026-03-08T12:00:00Z"),
            ),
            (
                "fall back keeps 08:00 local",
                daily8,
                ny,
                "2026-10-31T13:00:00Z",
                Some("2026-11-01T13:00:00Z"),
            ),
            (
                "weekly: Saturday → Monday",
                monday8,
                ny,
                "2026-11-28T12:00:00Z",
                Some("2026-11-30T13:00:00Z"),
            ),
            (
                "weekly: Monday before the time",
                monday8,
                ny,
                "2026-11-30T12:59:59Z",
                Some("2026-11-30T13:00:00Z"),
            ),
            (
                "weekly: Monday after the time → a week on",
                monday8,
                ny,
                "2026-11-30T13:00:00Z",
                Some("2026-12-07T13:00:00Z"),
            ),
            (
                "hourly: next top of the hour",
                Schedule::Hourly,
                ny,
                "2026-11-28T12:20:00Z",
                Some("2026-11-28T13:00:00Z"),
            ),
            (
                "hourly in a half-hour zone",
                Schedule::Hourly,
                Asia::Kolkata,
                "2026-11-28T12:20:00Z",
                Some("2026-11-28T12:30:00Z"),
            ),
            (
                "hourly in a 45-minute zone",
                Schedule::Hourly,
                Asia::Kathmandu,
                "2026-11-28T12:20:00Z",
                Some("2026-11-28T13:15:00Z"),
            ),
            // Overdue: the daemon was down for three days; the next one is simply the
            // next future slot, so only one digest goes out for the missed days.
            (
                "overdue daily",
                daily8,
                ny,
                "2026-12-01T20:00:00Z",
                Some("2026-12-02T13:00:00Z"),
            ),
            (
                "02:30 does not exist on 2026-03-08: end of the gap",
                Schedule::Daily { at: hm(2, 30) },
                ny,
                "2026-03-07T12:00:00Z",
                Some("2026-03-08T07:00:00Z"),
            ),
            (
                "01:30 happens twice on 2026-11-01: the first",
                Schedule::Daily { at: hm(1, 30) },
                ny,
                "2026-10-31T12:00:00Z",
                Some("2026-11-01T05:30:00Z"),
            ),
            (
                "after the first 01:30, not the second but tomorrow's",
                Schedule::Daily { at: hm(1, 30) },
                ny,
                "2026-11-01T05:30:10Z",
                Some("2026-11-02T06:30:00Z"),
            ),
        ];
        for (name, schedule, tz, now, expected) in cases {
            assert_eq!(schedule.next_after(at(now), tz), expected.map(at), "{name}");
        }
    }

    /// Walks a daemon through two years, sending each digest the moment it is due, and
    /// checks that every local day (or week) gets exactly one, across every DST change.
    #[test]
    fn a_year_of_digests_neither_skips_nor_repeats_across_dst() {
        let zones = [
            ny_zone(),
            Europe::London,
            Australia::Sydney,
            Australia::Lord_Howe,
            Asia::Kolkata,
        ];
        for tz in zones {
            for time in [
                hm(0, 30),
                hm(1, 30),
                hm(2, 0),
                hm(2, 30),
                hm(8, 0),
                hm(23, 45),
            ] {
                let schedule = Schedule::Daily { at: time };
                let mut now = at("2026-01-01T00:00:00Z");
                let mut days = Vec::new();
                while now < at("2028-01-01T00:00:00Z") {
                    let next = schedule.next_after(now, tz).unwrap();
                    assert!(next > now);
                    let local = next.with_timezone(&tz);
                    days.push(local.date_naive());
                    // Off the wanted time only by a DST gap, never more.
                    let off = (local.time() - time).num_minutes().abs();
                    assert!(off <= 60, "{tz} {time}: sent at {local}");
                    now = next + chrono::Duration::seconds(30);
                }
                for pair in days.windows(2) {
                    assert_eq!(
                        pair[1] - pair[0],
                        chrono::Duration::days(1),
                        "{tz} daily at {time}: {} then {}",
                        pair[0],
                        pair[1]
                    );
                }
            }
            let weekly = Schedule::Weekly {
                day: Weekday::Sun,
                at: hm(2, 30),
            };
            let mut now = at("2026-01-01T00:00:00Z");
            let mut last: Option<NaiveDate> = None;
            for _ in 0..104 {
                let next = weekly.next_after(now, tz).unwrap();
                let date = next.with_timezone(&tz).date_naive();
                assert_eq!(date.weekday(), Weekday::Sun, "{tz}");
                if let Some(last) = last {
                    assert_eq!(date - last, chrono::Duration::days(7), "{tz}");
                }
                last = Some(date);
                now = next;
            }
            let mut now = at("2026-01-01T00:00:00Z");
            for _ in 0..(24 * 400) {
                let next = Schedule::Hourly.next_after(now, tz).unwrap();
                assert_eq!(next.with_timezone(&tz).minute(), 0, "{tz}");
                // Lord Howe's clocks move by half an hour: its local :00s are 90
                // minutes apart once a year.
                let most = if tz == Australia::Lord_Howe { 90 } else { 60 };
                assert!(
                    next - now <= chrono::Duration::minutes(most),
                    "{tz}: {now} → {next}"
                );
                now = next;
            }
        }
    }

    #[test]
    fn time_zones_are_named_in_any_case() {
        for (name, text, zone) in [
            ("as written", "Europe/London", Some(Europe::London)),
            ("lower case", "europe/london", Some(Europe::London)),
            ("upper case", "AMERICA/NEW_YORK", Some(America::New_York)),
            ("utc", "utc", Some(Tz::UTC)),
            ("spaces around", " UTC ", Some(Tz::UTC)),
            ("unknown", "Europe/Atlantis", None),
            ("empty", "", None),
        ] {
            assert_eq!(parse_time_zone(text), zone, "{name}");
        }
    }

    fn ny_zone() -> Tz {
        America::New_York
    }

    #[test]
    fn subject_says_what_is_inside() {
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
        assert_eq!(
            render(&entries).subject,
            "Tidings: 3 new — asylum (2), \"H-1B\" (1)"
        );

        let mut updated = entries.clone();
        updated[1].updated = true;
        assert_eq!(
            render(&updated).subject,
            "Tidings: 2 new, 1 updated — asylum (2), \"H-1B\" (1)"
        );

        let many: Vec<DigestEntry> = (0..6i64)
            .map(|i| {
                let q = format!(
                    "query number {i} {}",
                    "with a very long tail ".repeat(i as usize)
                );
                entry(
                    i,
                    &q,
                    100 + i,
                    "a",
                    "T",
                    Some(&format!("https://x.example/{i}")),
                )
            })
            .collect();
        let subject = render(&many).subject;
        assert!(subject.ends_with(", +2 more"), "{subject}");
        assert!(subject.chars().count() < 200, "{subject}");
    }

    #[test]
    fn a_story_carried_by_many_names_ten_and_counts_the_rest() {
        let entries: Vec<DigestEntry> = (0..15)
            .map(|i| {
                let mut e = entry(1, "asylum", 10 + i, &format!("f{i}"), "Wire story", None);
                e.story = 7;
                e
            })
            .collect();
        let r = render(&entries);
        assert_eq!(r.text.matches("\nWire story\n").count(), 1, "{}", r.text);
        assert_eq!(
            r.text.matches("\n    - f").count(),
            MAX_ALSO_SHOWN,
            "{}",
            r.text
        );
        assert!(r.text.contains("    - and 4 more\n"), "{}", r.text);
        assert!(r.html.contains(" and 4 more</div>"), "{}", r.html);
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
        let r = render(&entries);
        assert_eq!(r.text.matches("\nSame story\n").count(), 1, "{}", r.text);
        assert!(
            r.text
                .contains("  Also covered by:\n    - b news: https://x.example/s\n"),
            "{}",
            r.text
        );
        assert!(
            r.html.contains(
                r#"also covered by: <a href="https://x.example/s" style="color:#1a4f9c;">b news</a></div>"#
            ),
            "{}",
            r.html
        );
        assert_eq!(r.subject, "Tidings: 1 new — asylum (1)");
    }

    /// A live blog: three updates of one feed share a page. Each is its own match, each
    /// is marked sent with the digest, so each must be in it.
    #[test]
    fn items_of_one_feed_sharing_a_link_are_each_shown() {
        let entries = vec![
            entry(
                1,
                "asylum",
                10,
                "a",
                "Update one",
                Some("https://x.example/live"),
            ),
            entry(
                1,
                "asylum",
                11,
                "a",
                "Update two",
                Some("https://x.example/live"),
            ),
            entry(
                1,
                "asylum",
                12,
                "b",
                "Update three",
                Some("https://x.example/live#update-3"),
            ),
            entry(
                1,
                "asylum",
                13,
                "b",
                "Update four",
                Some("https://x.example/live#update-4"),
            ),
        ];
        let r = render(&entries);
        for title in ["Update one", "Update two", "Update three", "Update four"] {
            assert!(r.text.contains(title), "{title} missing:\n{}", r.text);
            assert!(r.html.contains(title), "{title} missing:\n{}", r.html);
        }
        assert!(!r.text.contains("lso covered by"), "{}", r.text);
        assert_eq!(r.subject, "Tidings: 4 new — asylum (4)");
    }

    mod property {
        use super::*;
        use proptest::prelude::*;

        /// A random digest as the store hands one over: pending matches ordered by
        /// subscription, items from a few feeds with colliding links, some items matched
        /// by more than one subscription.
        fn digests() -> impl Strategy<Value = Vec<DigestEntry>> {
            let links = [
                None,
                Some("https://x.example/live"),
                Some("https://x.example/live#update-1"),
                Some("https://x.example/live#update-2"),
                Some("https://y.example/story"),
            ];
            // Feed, link, story, text length, more coverage.
            let item = (0..3usize, 0..links.len(), 0..4i64, 0..3usize, any::<bool>());
            (
                proptest::collection::vec(item, 1..12),
                proptest::collection::vec((0..3i64, any::<proptest::sample::Index>()), 1..20),
            )
                .prop_map(move |(items, picks)| {
                    let mut entries: Vec<DigestEntry> = picks
                        .into_iter()
                        .map(|(sub, pick)| {
                            let n = pick.index(items.len());
                            let (feed, link, story, length, quiet) = items[n];
                            let feed = ["a", "b", "c"][feed];
                            let mut e = entry(
                                sub,
                                &format!("query{sub}"),
                                n as i64,
                                feed,
                                &format!("Story-{n}-end"),
                                links[link],
                            );
                            e.feed_name = format!("Feed-{feed}-name");
                            e.story = story;
                            e.summary = "more text ".repeat(length);
                            e.more_coverage = quiet;
                            e
                        })
                        .collect();
                    entries.sort_by_key(|e| (e.subscription_id, e.item_id));
                    entries.dedup_by_key(|e| (e.subscription_id, e.item_id));
                    entries
                })
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(500))]

            /// Every match a digest takes is shown in it: its item is a story (title in
            /// both parts), or it is listed "also covered by" under a story with the same
            /// link or story id from another feed. Never two items of one feed in one
            /// story. A story shows its most complete version of its search.
            #[test]
            fn every_match_taken_is_shown(entries in digests()) {
                let r = render(&entries);
                let groups = arrange(&entries);
                let stories: Vec<&Story> = groups.iter().flat_map(|(_, s)| s).collect();
                for e in &entries {
                    let own = stories.iter().any(|s| s.entry.item_id == e.item_id);
                    let joined = stories.iter().any(|s| {
                        s.also_in.iter().any(|a| a.item_id == e.item_id)
                            && s.entry.feed_id != e.feed_id
                            && s.also_in.iter().chain([&s.entry]).any(|m| {
                                m.item_id != e.item_id
                                    && (m.story == e.story
                                        || m.link.is_some() && m.link == e.link)
                            })
                    });
                    prop_assert!(own != joined, "item {} shown {} times", e.item_id,
                                 u8::from(own) + u8::from(joined));
                }
                for s in &stories {
                    let title = &s.entry.title;
                    prop_assert!(r.text.contains(title.as_str()), "{title} not in text");
                    prop_assert!(r.html.contains(title.as_str()), "{title} not in html");
                    let mut feeds: Vec<&str> =
                        s.also_in.iter().map(|a| a.feed_id.as_str()).collect();
                    feeds.push(&s.entry.feed_id);
                    let distinct: HashSet<&str> = feeds.iter().copied().collect();
                    prop_assert_eq!(distinct.len(), feeds.len(), "one feed twice in a story");
                    for a in &s.also_in {
                        prop_assert!(r.text.contains(&a.feed_name));
                        prop_assert!(r.html.contains(&a.feed_name));
                        let first = |e: &DigestEntry| e.item_id.0 == e.story;
                        if a.query == s.entry.query && !s.entry.updated && !a.updated
                            && !first(s.entry) && !first(a)
                        {
                            prop_assert!(completeness(a) <= completeness(s.entry),
                                         "the most complete version is shown");
                        }
                    }
                }
            }
        }
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
        let r = render_with(&entries, America::New_York, &[], None);
        for part in [&r.text, &r.html] {
            assert!(part.contains("uscis news"), "{part}");
            assert!(
                part.contains("Nov 27, 2026 10:00 EST"),
                "date in the subscriber's zone: {part}"
            );
            assert!(part.contains("daily at 08:00"), "{part}");
            assert!(part.contains("ana@example.org"), "{part}");
        }
        assert!(r.text.contains("\nTPS for Venezuela\n"), "{}", r.text);
        assert!(
            r.text.contains("  Summary of *TPS* for Venezuela"),
            "{}",
            r.text
        );
        assert!(
            r.text.contains("  https://u.example/tps?a=1&b=2\n"),
            "{}",
            r.text
        );
        assert!(
            r.html
                .contains("href=\"https://u.example/tps?a=1&amp;b=2\""),
            "{}",
            r.html
        );
        assert!(
            r.html
                .contains(&format!("{MARK_OPEN}TPS</mark> for Venezuela</a>")),
            "title highlighted: {}",
            r.html
        );
        assert!(
            r.html
                .contains(&format!("Summary of {MARK_OPEN}TPS</mark> for Venezuela")),
            "snippet highlighted: {}",
            r.html
        );
        assert!(
            r.text.ends_with("\n") && !r.text.contains("\n\n\n\n"),
            "{:?}",
            r.text
        );
    }

    #[test]
    fn synonyms_and_scopes_highlight_what_matched() {
        let mut e = entry(
            1,
            "tag:us TPS",
            10,
            "uscis",
            "Notice",
            Some("https://u.example/n"),
        );
        e.summary = "Extension of Temporary Protected Status for Haiti.".into();
        let r = render(&[e]);
        assert!(
            r.html
                .contains(&format!("{MARK_OPEN}Temporary Protected Status</mark>")),
            "{}",
            r.html
        );
        assert!(
            r.text.contains("*Temporary Protected Status*"),
            "{}",
            r.text
        );
    }

    /// Text stored before ingest removed them: bidi overrides and zero-width characters
    /// reach neither titles nor snippets of a digest.
    #[test]
    fn stored_bidi_overrides_and_zero_width_characters_are_not_shown() {
        let mut e = entry(1, "asylum", 10, "a", "Form I-\u{202E}exe.fdp", None);
        e.summary = "New asy\u{200B}lum rule\u{2066} from\u{2069} USCIS".into();
        let r = render(&[e]);
        for hidden in ['\u{202E}', '\u{200B}', '\u{2066}', '\u{2069}'] {
            assert!(!r.text.contains(hidden), "{hidden:?} in {}", r.text);
            assert!(!r.html.contains(hidden), "{hidden:?} in {}", r.html);
            assert!(!r.subject.contains(hidden), "{hidden:?} in {}", r.subject);
        }
        assert!(r.text.contains("Form I-exe.fdp"), "{}", r.text);
        assert!(
            r.text.contains("*asylum*"),
            "the word is found again: {}",
            r.text
        );
    }

    #[test]
    fn feed_text_cannot_inject_markup_or_headers() {
        let mut e = entry(
            1,
            "asylum",
            10,
            "a",
            "<script>alert(1)</script> asylum\r\nBcc: victim@x.example",
            Some("https://x.example/\"><script>"),
        );
        e.summary = "<img src=x onerror=alert(1)> asylum <mark onclick=x>".into();
        e.feed_name = "<b onmouseover=x>Feed</b>".into();
        let r = render(&[e]);
        // Parsed as a browser would: only the template's own elements, no handlers.
        let page = scraper::Html::parse_document(&r.html);
        let allowed = [
            "html", "head", "meta", "title", "body", "table", "tbody", "tr", "td", "div", "span",
            "a", "mark", "strong", "br",
        ];
        for element in page.root_element().descendent_elements() {
            let el = element.value();
            assert!(
                allowed.contains(&el.name()),
                "<{}> in {}",
                el.name(),
                r.html
            );
            for (name, _) in el.attrs() {
                assert!(!name.starts_with("on"), "{name} on <{}>", el.name());
            }
        }
        assert!(
            r.html.contains("&lt;script&gt;"),
            "shown as text: {}",
            r.html
        );
        assert!(
            r.html
                .contains("href=\"https://x.example/&quot;&gt;&lt;script&gt;\""),
            "the link stays inside its attribute: {}",
            r.html
        );
        assert!(!r.subject.contains('\n') && !r.subject.contains('\r'));
        assert!(!r.text.contains("\r\nBcc"), "title flattened to one line");
    }

    #[test]
    fn updated_items_and_failing_feeds_are_marked() {
        let mut e = entry(
            1,
            "asylum",
            10,
            "a",
            "Asylum rule",
            Some("https://x.example/1"),
        );
        e.updated = true;
        let failing = [FailingFeed {
            name: "USCIS News".into(),
            since: at("2026-11-26T09:00:00Z"),
            error: "HTTP 503 Service Unavailable".into(),
        }];
        let r = render_with(&[e], Tz::UTC, &failing, Some("https://t.example/u/1.abc"));
        assert!(r.text.contains("[Updated] Asylum rule"), "{}", r.text);
        assert!(r.html.contains(">Updated</span>"), "{}", r.html);
        assert_eq!(r.subject, "Tidings: 1 updated — asylum (1)");
        for part in [&r.text, &r.html] {
            assert!(
                part.contains(
                    "USCIS News: failing since Nov 26 09:00 UTC (HTTP 503 Service Unavailable)"
                ),
                "{part}"
            );
            assert!(part.contains("https://t.example/u/1.abc"), "{part}");
        }
        // Without failing feeds or an unsubscribe URL, neither section appears.
        let quiet = render(&[entry(1, "asylum", 10, "a", "A", None)]);
        assert!(!quiet.text.contains("could not read"), "{}", quiet.text);
        assert!(!quiet.html.contains("Unsubscribe"), "{}", quiet.html);
    }

    #[test]
    fn the_round_cache_changes_nothing_but_the_work() {
        let synonyms = Synonyms::default();
        let cache = StoryCache::default();
        let mut e = entry(
            1,
            "asylum",
            10,
            "a",
            "Asylum rule",
            Some("https://x.example/1"),
        );
        e.summary = "The asylum rule changes.".into();
        let render = |cache: Option<&StoryCache>, recipient: &str| {
            let cx = DigestContext {
                recipient,
                schedule: Schedule::Immediate,
                timezone: Tz::UTC,
                synonyms: &synonyms,
                failing_feeds: &[],
                unsubscribe_url: None,
                manage_url: None,
                cache,
                more_follow: false,
                locale: crate::locale::get("en"),
            };
            render_digest(std::slice::from_ref(&e), &cx).unwrap()
        };
        for recipient in ["a@x.example", "b@x.example"] {
            assert_eq!(render(Some(&cache), recipient), render(None, recipient));
        }
        assert_eq!(
            cache.parts.lock().unwrap().len(),
            1,
            "made once, used twice"
        );
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

        // Cut after a full stop: the ellipsis replaces it.
        let text = format!("{} the end. {}", "word ".repeat(8), "more ".repeat(20));
        let (out, _) = excerpt(&text, &[], 52);
        assert!(out.ends_with(" end…"), "{out}");

        // Short text: unchanged; bad ranges are dropped, never panic.
        let (out, ranges) = excerpt("José pide asilo", &[0..5, 6..99, 1..2], 100);
        assert_eq!(out, "José pide asilo");
        assert_eq!(ranges.len(), 1);
        assert_eq!(ranges[0], 0..5);
    }

    #[test]
    fn long_snippets_are_cut_around_the_match_and_wrapped() {
        let mut e = entry(1, "lottery", 10, "a", "Long one", None);
        e.summary = format!(
            "{} the H-1B lottery opens {}",
            "word ".repeat(200),
            "tail ".repeat(200)
        );
        let r = render(&[e]);
        let snippet: Vec<&str> = r
            .text
            .lines()
            .skip_while(|l| !l.starts_with("  …"))
            .take_while(|l| l.starts_with("  "))
            .collect();
        assert!(snippet.join(" ").contains("*lottery*"), "{}", r.text);
        assert!(
            snippet.iter().all(|l| l.chars().count() <= 74),
            "{snippet:#?}"
        );
        let chars: usize = snippet.iter().map(|l| l.trim().chars().count() + 1).sum();
        assert!(chars <= SNIPPET_CHARS + 12, "{chars}: {snippet:#?}");
    }
}
