//! How well items are grouped into stories, on the labelled set in
//! `tests/fixtures/stories/labelled.jsonl` (see its README): precision and recall over
//! pairs of items of different feeds, for a range of similarity thresholds.
//!
//! ```text
//! cargo run --release --example story_eval                    # thresholds 0.2 to 0.8
//! cargo run --release --example story_eval -- --similarity 0.5 --show 10
//! ```
//!
//! Each run stores the set through the real store (a SQLite file in a temporary
//! folder), item by item in publication order, each from its own feed, exactly as polls
//! would: canonical links, fingerprints, candidates from the band keys, the window and the
//! one-feed rule all apply. Then it reads back each item's story and counts pairs:
//! precision is the share of pairs put in one story that the labels say are one story;
//! recall, the share of labelled pairs put in one story. `--show N` lists N wrong merges
//! and N missed pairs at the first threshold.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use chrono::{DateTime, Utc};
use tidings::config::FeedConfig;
use tidings::parse::{Item, canonical_link};
use tidings::store::{Store, SuccessfulPoll};
use tidings::story::StoryRules;

#[derive(serde::Deserialize)]
struct Labelled {
    id: String,
    story: String,
    feed: String,
    published: DateTime<Utc>,
    link: Option<String>,
    title: String,
    text: String,
}

fn wait<T>(call: impl std::future::Future<Output = T>) -> T {
    static RUNTIME: std::sync::LazyLock<tokio::runtime::Runtime> = std::sync::LazyLock::new(|| {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .expect("a tokio runtime")
    });
    RUNTIME.block_on(call)
}

/// Stores the set with `rules`; returns each item's story, by item id.
fn group(set: &[Labelled], rules: StoryRules, dir: &Path) -> Result<HashMap<String, i64>> {
    let path = dir.join(format!("eval-{}.db", rules.similarity));
    let store = Store::open(&path)?;
    let feeds: BTreeSet<&str> = set.iter().map(|l| l.feed.as_str()).collect();
    let configs: Vec<FeedConfig> = feeds
        .iter()
        .map(|id| FeedConfig {
            id: id.to_string(),
            name: id.to_string(),
            url: format!("https://{id}.example/feed.xml").parse().unwrap(),
            tags: Vec::new(),
            interval: Duration::from_secs(900),
            options: Default::default(),
        })
        .collect();
    wait(store.sync_feeds(&configs))?;
    let generation = wait(store.subscriptions_generation())?;
    for (n, l) in set.iter().enumerate() {
        // Strictly later than the last: every claim (1 s) has run out.
        let now = l.published + chrono::Duration::seconds(2 * n as i64);
        let claimed = wait(store.claim_feeds(now, Duration::from_secs(1), false))?;
        let Some(feed) = claimed.into_iter().find(|f| f.id == l.feed) else {
            bail!("feed {} could not be claimed", l.feed);
        };
        let item = Item {
            key: l.id.clone(),
            guid: Some(l.id.clone()),
            link: l.link.as_deref().and_then(canonical_link),
            title: l.title.clone(),
            summary: l.text.clone(),
            content: String::new(),
            published: Some(l.published),
            declared_lang: None,
        };
        let poll = SuccessfulPoll {
            items: Arc::new([item]),
            etag: None,
            last_modified: None,
            full_fetch: true,
            moved_to: None,
            repairs: Arc::new([]),
            body_hash: None,
            now,
            next_poll_at: now,
            // Every item is recent: each may be alerted, so each is grouped.
            baseline_cutoff: now - chrono::Duration::days(30),
            matcher_generation: generation,
            snapshot: None,
            stories: rules,
            languages: Default::default(),
            prepared: Default::default(),
        };
        wait(store.store_items(&feed, poll, |_, _, _| Vec::new()))?;
    }
    drop(store);
    let conn = rusqlite::Connection::open(&path)?;
    let mut stmt = conn.prepare("SELECT key, COALESCE(story_id, id) FROM items")?;
    let stories = stmt
        .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?
        .collect::<rusqlite::Result<HashMap<_, _>>>()?;
    Ok(stories)
}

struct Score {
    true_pairs: usize,
    predicted: usize,
    labelled: usize,
    wrong: Vec<(usize, usize)>,
    missed: Vec<(usize, usize)>,
}

fn score(set: &[Labelled], stories: &HashMap<String, i64>) -> Score {
    let mut s = Score {
        true_pairs: 0,
        predicted: 0,
        labelled: 0,
        wrong: Vec::new(),
        missed: Vec::new(),
    };
    for i in 0..set.len() {
        for j in i + 1..set.len() {
            let (a, b) = (&set[i], &set[j]);
            if a.feed == b.feed {
                continue;
            }
            let same = a.story == b.story;
            let grouped = stories.get(&a.id) == stories.get(&b.id);
            s.labelled += usize::from(same);
            s.predicted += usize::from(grouped);
            s.true_pairs += usize::from(same && grouped);
            if grouped && !same {
                s.wrong.push((i, j));
            }
            if same && !grouped {
                s.missed.push((i, j));
            }
        }
    }
    s
}

fn run() -> Result<()> {
    let mut set_path = PathBuf::from("tests/fixtures/stories/labelled.jsonl");
    let mut thresholds: Vec<f64> = (4..=16).map(|t| f64::from(t) * 0.05).collect();
    let mut show = 0;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().context("a value after the flag");
        match arg.as_str() {
            "--set" => set_path = value()?.into(),
            "--similarity" => thresholds = vec![value()?.parse()?],
            "--show" => show = value()?.parse()?,
            other => bail!("unknown argument {other:?} (--set, --similarity, --show)"),
        }
    }
    let text = std::fs::read_to_string(&set_path)
        .with_context(|| format!("reading {}", set_path.display()))?;
    let mut set: Vec<Labelled> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?;
    set.sort_by_key(|l| l.published);
    let stories: BTreeSet<&str> = set.iter().map(|l| l.story.as_str()).collect();
    println!(
        "{}: {} items, {} stories; pairs of items of different feeds",
        set_path.display(),
        set.len(),
        stories.len()
    );
    println!("similarity  precision  recall  grouped pairs  labelled pairs  wrong  missed");
    let dir = tempfile::tempdir()?;
    for (k, &similarity) in thresholds.iter().enumerate() {
        let rules = StoryRules {
            similarity,
            ..StoryRules::default()
        };
        let grouped = group(&set, rules, dir.path())?;
        let s = score(&set, &grouped);
        let precision = s.true_pairs as f64 / s.predicted.max(1) as f64;
        let recall = s.true_pairs as f64 / s.labelled.max(1) as f64;
        println!(
            "{similarity:>10.2}  {precision:>9.3}  {recall:>6.3}  {:>13}  {:>14}  {:>5}  {:>6}",
            s.predicted,
            s.labelled,
            s.wrong.len(),
            s.missed.len()
        );
        if k == 0 && show > 0 {
            let line = |i: usize| {
                let l = &set[i];
                format!("    {} [{}] {}", l.id, l.feed, l.title)
            };
            for (what, pairs) in [("wrongly merged", &s.wrong), ("missed", &s.missed)] {
                println!("  {what} ({}):", pairs.len());
                for &(i, j) in pairs.iter().take(show) {
                    println!("{}\n{}", line(i), line(j));
                }
            }
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("story_eval: {e:#}");
            ExitCode::FAILURE
        }
    }
}
