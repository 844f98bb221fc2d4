//! What grouping items into stories costs per item as the window fills, up to 100,000
//! items in the window.
//!
//! ```text
//! cargo run --release --example story_bench                  # 100,000 items
//! cargo run --release --example story_bench -- --items 20000
//! ```
//!
//! Items are stored through the real store (a SQLite file in a temporary folder), 200 per
//! poll of one of 500 feeds, each poll a minute after the last, all within the window.
//! Their words follow a Zipf law over a 20,000-word vocabulary whose commonest words are
//! function words, as in real text (titles of 8 words, texts of 60); one item in ten is a
//! copy of a recent item of another feed with a new headline and a few words changed.
//! Every item may be alerted, so every item is grouped. For each tenth of the run it
//! prints the time per item; at the end, the same for items that are old news on a new
//! feed's first poll (stored, never grouped): the difference is what stories cost.

use std::collections::VecDeque;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use chrono::{DateTime, Utc};
use common::{peak_rss_mib, reset_peak_rss};
use tidings::config::FeedConfig;
use tidings::parse::Item;
use tidings::store::{Store, SuccessfulPoll};
use tidings::story::StoryRules;

mod common;

const FEEDS: usize = 500;
const PER_POLL: usize = 200;
const VOCABULARY: usize = 20_000;

fn wait<T>(call: impl std::future::Future<Output = T>) -> T {
    static RUNTIME: std::sync::LazyLock<tokio::runtime::Runtime> = std::sync::LazyLock::new(|| {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .expect("a tokio runtime")
    });
    RUNTIME.block_on(call)
}

/// xorshift64*: reproducible runs.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    /// A word index, Zipf-distributed (rank r with weight 1/r).
    fn zipf(&mut self, cumulative: &[f64]) -> usize {
        let total = cumulative[cumulative.len() - 1];
        let x = (self.next() >> 11) as f64 / (1u64 << 53) as f64 * total;
        cumulative.partition_point(|&c| c < x)
    }
}

/// Real text's commonest words are function words: so are the bench's.
const COMMON: &[&str] = &[
    "the",
    "of",
    "to",
    "and",
    "a",
    "in",
    "for",
    "is",
    "on",
    "that",
    "by",
    "with",
    "as",
    "at",
    "from",
    "it",
    "be",
    "was",
    "are",
    "has",
    "have",
    "will",
    "said",
    "this",
    "an",
    "its",
    "their",
    "new",
    "more",
    "after",
    "who",
    "which",
    "about",
    "over",
    "not",
    "but",
    "or",
    "had",
    "been",
    "were",
    "they",
    "would",
    "could",
    "than",
    "into",
    "also",
    "under",
    "some",
    "other",
    "these",
    "year",
    "years",
    "people",
    "officials",
    "government",
    "federal",
    "immigration",
    "state",
    "states",
    "according",
    "department",
    "agency",
    "report",
];

fn word(i: usize) -> String {
    if let Some(w) = COMMON.get(i) {
        return w.to_string();
    }
    // Pronounceable and distinct: two letters per base-20 digit.
    const SYLLABLES: [&str; 20] = [
        "ka", "lo", "mi", "ne", "su", "ta", "ri", "po", "de", "va", "zu", "be", "fo", "gi", "ha",
        "ju", "ce", "xo", "wy", "qe",
    ];
    let mut n = i + 20;
    let mut w = String::new();
    while n > 0 {
        w.push_str(SYLLABLES[n % 20]);
        n /= 20;
    }
    w
}

fn sentence(rng: &mut Rng, cumulative: &[f64], words: usize) -> String {
    (0..words)
        .map(|_| word(rng.zipf(cumulative)))
        .collect::<Vec<_>>()
        .join(" ")
}

fn run() -> Result<()> {
    let mut items = 100_000usize;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--items" => items = args.next().context("--items N")?.parse()?,
            other => bail!("unknown argument {other:?} (--items N)"),
        }
    }
    reset_peak_rss();
    let dir = tempfile::tempdir()?;
    let store = Store::open(&dir.path().join("bench.db"))?;
    let configs: Vec<FeedConfig> = (0..FEEDS + 10)
        .map(|f| FeedConfig {
            id: format!("feed{f:03}"),
            name: format!("Feed {f}"),
            url: format!("https://feed{f}.example/rss").parse().unwrap(),
            tags: Vec::new(),
            interval: Duration::from_secs(900),
            options: Default::default(),
        })
        .collect();
    wait(store.sync_feeds(&configs))?;
    let generation = wait(store.subscriptions_generation())?;
    let mut cumulative = Vec::with_capacity(VOCABULARY);
    let mut sum = 0.0;
    for r in 1..=VOCABULARY {
        sum += 1.0 / r as f64;
        cumulative.push(sum);
    }
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let start: DateTime<Utc> = "2026-12-01T00:00:00Z".parse()?;
    let rules = StoryRules::default();
    // Recent items, to copy from: (feed, title, text).
    let mut recent: VecDeque<(usize, String)> = VecDeque::new();
    let mut stored = 0usize;
    let mut poll_no = 0usize;
    let mut fresh = FEEDS;
    let mut store_poll = |count: usize, old_news: bool, stored: &mut usize| -> Result<Duration> {
        // Old news is a new feed's first poll of items published a month ago.
        let feed = if old_news {
            fresh += 1;
            fresh - 1
        } else {
            poll_no % FEEDS
        };
        let now = start + chrono::Duration::minutes(poll_no as i64);
        poll_no += 1;
        let batch: Vec<Item> = (0..count)
            .map(|n| {
                let text = match recent.get(rng.below(recent.len().max(1))) {
                    Some((from, text)) if *from != feed && rng.below(10) == 0 => {
                        // A copy: the same text, a few words changed.
                        let mut words: Vec<String> = text.split(' ').map(str::to_string).collect();
                        for _ in 0..4 {
                            let i = rng.below(words.len());
                            words[i] = word(rng.zipf(&cumulative));
                        }
                        words.join(" ")
                    }
                    _ => sentence(&mut rng, &cumulative, 60),
                };
                if recent.len() >= 1000 {
                    recent.pop_front();
                }
                recent.push_back((feed, text.clone()));
                Item {
                    key: format!("{poll_no}-{n}"),
                    guid: None,
                    link: Some(format!("https://feed{feed}.example/{poll_no}/{n}")),
                    title: sentence(&mut rng, &cumulative, 8),
                    summary: text,
                    content: String::new(),
                    published: Some(if old_news {
                        now - chrono::Duration::days(30)
                    } else {
                        now
                    }),
                    declared_lang: None,
                }
            })
            .collect();
        let claimed = wait(store.claim_feeds(now, Duration::from_secs(1), false))?;
        let to_poll = claimed
            .into_iter()
            .find(|f| f.id == format!("feed{feed:03}"))
            .context("feed not claimed")?;
        let poll = SuccessfulPoll {
            items: batch.into(),
            etag: None,
            last_modified: None,
            full_fetch: true,
            moved_to: None,
            repairs: Arc::new([]),
            body_hash: None,
            now,
            next_poll_at: now,
            baseline_cutoff: now - chrono::Duration::days(1),
            matcher_generation: generation,
            snapshot: None,
            stories: rules,
            languages: Default::default(),
            prepared: Default::default(),
        };
        let began = Instant::now();
        wait(store.store_items(&to_poll, poll, |_, _, _| Vec::new()))?;
        *stored += count;
        Ok(began.elapsed())
    };
    // Each feed's first poll is its baseline, where only recent items are grouped: these
    // are, so all are.
    println!("items in the window   µs per item stored (grouped)");
    let step = (items / 10).max(PER_POLL);
    let mut block = Duration::ZERO;
    let mut in_block = 0;
    while stored < items {
        block += store_poll(PER_POLL, false, &mut stored)?;
        in_block += PER_POLL;
        if in_block >= step || stored >= items {
            println!(
                "{stored:>20}   {:>8.1}",
                block.as_secs_f64() * 1e6 / in_block as f64
            );
            block = Duration::ZERO;
            in_block = 0;
        }
    }
    let (mut grouped, mut old) = (Duration::ZERO, Duration::ZERO);
    let rounds = 10;
    for _ in 0..rounds {
        grouped += store_poll(PER_POLL, false, &mut stored)?;
        old += store_poll(PER_POLL, true, &mut stored)?;
    }
    let per = |d: Duration| d.as_secs_f64() * 1e6 / (rounds * PER_POLL) as f64;
    println!(
        "at {items} in the window: {:.1} µs per item grouped, {:.1} µs per item of old news \
         (not grouped): stories cost {:.1} µs per item",
        per(grouped),
        per(old),
        per(grouped) - per(old)
    );
    drop(store);
    let conn = rusqlite::Connection::open(dir.path().join("bench.db"))?;
    let (grouped_items, stories): (i64, i64) = conn.query_row(
        "SELECT COUNT(*), COUNT(DISTINCT story_id) FROM items WHERE story_id IS NOT NULL",
        [],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    println!(
        "{grouped_items} items grouped in {stories} stories ({} items joined another's); \
         peak RSS {:.0} MiB",
        grouped_items - stories,
        peak_rss_mib()
    );
    Ok(())
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("story_bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}
