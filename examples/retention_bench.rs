//! Retention and backup benchmark: a database of 200,000 items and 20,000 sent digests,
//! ~90% of it past the retention cutoff, is pruned (`Store::prune`) and then backed up
//! (`Store::backup_to`) while a second connection keeps writing to it as a poll would.
//! Prints the file size, prune and backup times, how long the writer waited, and peak
//! RSS; then checks that no pending match was lost and that the copy is sound (exit
//! code 1 if not).
//!
//! ```sh
//! cargo run --release --example retention_bench                   # 200,000 items, 20,000 digests
//! cargo run --release --example retention_bench -- --items 50000 --outbox 5000
//! ```
//!
//! # The database
//!
//! Built through the public `Store` API, as the daemon builds it, in a temporary folder:
//! 200 feeds (`sync_feeds`), 1,020 subscribers with one subscription each
//! (`add_subscription`), then 20 rounds of a poll and a digest round. Each round stores
//! 10 feeds of 1,000 items of about 2 KB of text (`store_items`, one `SuccessfulPoll`
//! per feed), then writes a digest of about 10 KB for each of 1,000 subscribers
//! (`take_digest`) and marks it sent (`mark_sent`). Which items match whom is assigned by
//! the bench, not by the matcher (matching is not what is measured): 3 items per
//! digest, so 60,000 matches, all taken. The clock is a parameter of all these calls, so
//! age needs no SQL: the first 18 rounds happen 120 days ago, the last two 2 days ago,
//! and the cutoff is the default retention (90 days) before now, so ~90% of the items and
//! mail are past it. The other 20 subscribers bounce their first digest
//! (`mark_bounced`, paused) and get one match a round that is never taken: 380 pending
//! matches, 340 of them on old items, which pruning must keep (and their items).
//! `--items` and `--outbox` scale the items and digests; the 20 rounds stay.
//!
//! # What is measured
//!
//! - The size of the file before pruning (after a checkpoint, so the WAL is empty).
//! - `Store::prune(cutoff, now)`: wall time and what it reports pruned. Afterwards the set
//!   of pending matches (subscription, item) must be exactly what it was, every one on a
//!   live item. Also how many bytes of old item text and mail it cleared, against the
//!   free pages (`PRAGMA freelist_count`) the file then has for reuse.
//! - Meanwhile a second thread with its own `Store::open` on the same file (as the daemon
//!   is to `tidings prune`, or to `tidings backup`) stores a poll of one new ~2 KB item
//!   every 5 ms: `store_items`, one `IMMEDIATE` transaction that inserts the item and
//!   updates its feed. Each call's latency is recorded, from 1 s before the prune (the
//!   idle baseline) to the end of the backup; p50, p99 and max are printed per phase.
//! - `Store::backup_to` of the pruned database, started right after the prune while the
//!   writer goes on: wall time (including its own integrity check of the copy and the
//!   fsyncs), size of the copy, MiB/s. The bench then opens the copy itself: `PRAGMA
//!   integrity_check` must say `ok`, and the copy must hold the same pending matches.
//! - Peak RSS: VmHWM of this process (writer thread included), reset just before the
//!   prune.
//!
//! Everything is written through `Store`; the bench reads the file directly with
//! rusqlite only for what the library has no call for (checkpoint, counts, the pending
//! set, the copy's integrity check).

mod common;

use common::{peak_rss_mib, reset_peak_rss};
use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use chrono::{DateTime, Utc};
use rusqlite::{Connection, OpenFlags};
use tidings::config::{DEFAULT_RETENTION, FeedConfig};
use tidings::digest::{DigestEntry, Rendered, RenderedRound, Schedule};
use tidings::parse::Item;
use tidings::store::{FeedToPoll, Store, Subscriber, SubscriberId, SubscriptionId, SuccessfulPoll};

/// Feeds the items are spread over.
const FEEDS: usize = 200;
/// Poll-and-digest rounds the history is built in.
const ROUNDS: usize = 20;
/// Of those, the first ones happen before the cutoff.
const OLD_ROUNDS: usize = 18;
/// Subscribers who get digests (more if `--outbox` needs more per round).
const RECIPIENTS: usize = 1_000;
/// Subscribers paused after a bounce: their matches stay pending.
const PAUSED: usize = 20;
/// Items a digest carries.
const MATCHES_PER_DIGEST: usize = 3;
/// The feed the concurrent writer stores into.
const LIVE_FEED: &str = "live";
/// Between two writes of the concurrent writer.
const WRITE_EVERY: Duration = Duration::from_millis(5);
/// The writer runs this long before the prune starts: the idle baseline.
const BASELINE: Duration = Duration::from_secs(1);

struct Args {
    items: usize,
    outbox: usize,
}

fn parse_args() -> Args {
    let mut args = Args {
        items: 200_000,
        outbox: 20_000,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut num = || {
            it.next()
                .and_then(|v| v.parse::<usize>().ok())
                .expect("a number")
        };
        match a.as_str() {
            "--items" => args.items = num(),
            "--outbox" => args.outbox = num(),
            other => panic!("unknown argument {other}"),
        }
    }
    args
}

/// Waits for one store call: the bench drives the async store from plain threads.
fn wait<T>(call: impl std::future::Future<Output = T>) -> T {
    static RUNTIME: std::sync::LazyLock<tokio::runtime::Runtime> = std::sync::LazyLock::new(|| {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .expect("a tokio runtime")
    });
    RUNTIME.block_on(call)
}

fn main() -> ExitCode {
    match bench(parse_args()) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("retention_bench: {e:#}");
            ExitCode::from(2)
        }
    }
}

// ---- the data ------------------------------------------------------------------------------

const WORDS: &str = "asylum visa bulletin parole citizenship naturalization court ruling \
    petition employer filing deadline office backlog cases pending interview waiver family \
    green card holders reentry permit status online program applications paused \
    humanitarian requests processing times military renewal appeals arguments rule deferred \
    action juveniles restored civics test ceremony fee form revised record fiscal year \
    department explains final dates advances months predictions quarter the of and to in \
    for on with new after before under state";

/// Deterministic filler text (xorshift over a small vocabulary).
struct Words {
    state: u64,
    vocabulary: Vec<&'static str>,
}

impl Words {
    fn new(seed: u64) -> Words {
        Words {
            state: seed,
            vocabulary: WORDS.split_whitespace().collect(),
        }
    }

    fn word(&mut self) -> &'static str {
        self.state ^= self.state << 13;
        self.state ^= self.state >> 7;
        self.state ^= self.state << 17;
        self.vocabulary[(self.state % self.vocabulary.len() as u64) as usize]
    }

    /// About `bytes` bytes of words (ASCII).
    fn text(&mut self, bytes: usize) -> String {
        let mut s = String::with_capacity(bytes + 16);
        while s.len() < bytes {
            if !s.is_empty() {
                s.push(' ');
            }
            s.push_str(self.word());
        }
        s
    }
}

/// An item of about 2 KB of text, published an hour before `seen`.
fn item(words: &mut Words, feed: &str, n: usize, seen: DateTime<Utc>) -> Item {
    let key = format!("{feed}-{n}");
    Item {
        link: Some(format!("https://news.example/{feed}/{n}")),
        guid: Some(key.clone()),
        key,
        title: words.text(60),
        summary: words.text(300),
        content: words.text(1_700),
        published: Some(seen - chrono::Duration::hours(1)),
        declared_lang: None,
    }
}

/// A digest of about 10 KB (4 KB text, 6 KB HTML) carrying `entries`.
fn render(entries: &[DigestEntry]) -> Result<Rendered> {
    let fill = |parts: &[String], bytes: usize| {
        let mut s = String::with_capacity(bytes);
        for part in parts.iter().cycle() {
            if s.len() >= bytes {
                break;
            }
            s.push_str(part);
        }
        s.truncate(bytes);
        s
    };
    let text: Vec<String> = entries
        .iter()
        .map(|e| {
            format!(
                "{}\n{}\n{}\n\n",
                e.title,
                e.link.as_deref().unwrap_or(""),
                e.content
            )
        })
        .collect();
    let html: Vec<String> = entries
        .iter()
        .map(|e| {
            format!(
                "<h2><a href=\"{}\">{}</a></h2><p>{}</p>\n",
                e.link.as_deref().unwrap_or(""),
                e.title,
                e.content
            )
        })
        .collect();
    Ok(Rendered {
        subject: format!("Tidings: {} new stories", entries.len()),
        text: fill(&text, 4_000),
        html: fill(&html, 6_000),
    })
}

/// When round `round` polls and sends: 120 days ago for the old rounds, 2 days ago for
/// the rest, an hour apart.
fn round_time(round: usize, now: DateTime<Utc>) -> DateTime<Utc> {
    let hours = |h: usize| chrono::Duration::hours(h as i64);
    if round < OLD_ROUNDS {
        now - chrono::Duration::days(120) + hours(round)
    } else {
        now - chrono::Duration::days(2) + hours(round - OLD_ROUNDS)
    }
}

/// A subscriber and their one subscription.
#[derive(Clone, Copy)]
struct Reader {
    subscriber: SubscriberId,
    subscription: SubscriptionId,
}

/// Builds the history through `store` (see the module doc).
fn build(store: &Store, args: &Args, now: DateTime<Utc>) -> Result<()> {
    let feeds: Vec<FeedConfig> = (0..FEEDS)
        .map(|f| format!("feed{f:03}"))
        .chain([LIVE_FEED.to_string()])
        .map(|id| FeedConfig {
            name: format!("Feed {id}"),
            url: format!("https://news.example/{id}.xml").parse().unwrap(),
            id,
            tags: vec!["news".to_string()],
            interval: Duration::from_secs(900),
            options: Default::default(),
        })
        .collect();
    wait(store.sync_feeds(&feeds))?;
    let start = round_time(0, now);
    let mut to_poll: HashMap<String, FeedToPoll> =
        wait(store.claim_feeds(start, Duration::from_secs(300), false))?
            .into_iter()
            .map(|f| (f.id.clone(), f))
            .collect();

    let per_round = args.outbox.div_ceil(ROUNDS);
    let recipients = RECIPIENTS.max(per_round);
    let email = |i: usize| format!("reader{i:05}@example.org");
    for i in 0..recipients + PAUSED {
        wait(store.add_subscription(
            &email(i),
            &format!("topic{i}"),
            Schedule::Immediate,
            chrono_tz::Tz::UTC,
            start,
        ))?;
    }
    let subscription_of: HashMap<String, SubscriptionId> = wait(store.subscriptions())?
        .queries
        .into_iter()
        .map(|(id, query)| (query, id))
        .collect();
    let by_email: HashMap<String, Subscriber> = wait(store.subscribers())?
        .into_iter()
        .map(|s| (s.email.clone(), s))
        .collect();
    let readers: Vec<Reader> = (0..recipients + PAUSED)
        .map(|i| Reader {
            subscriber: by_email[&email(i)].id,
            subscription: subscription_of[&format!("topic{i}")],
        })
        .collect();
    let (active, paused) = readers.split_at(recipients);

    let generation = wait(store.subscriptions_generation())?;
    let mut words = Words::new(0x9E37_79B9_7F4A_7C15);
    for round in 0..ROUNDS {
        let at = round_time(round, now);
        let digests = args.outbox * (round + 1) / ROUNDS - args.outbox * round / ROUNDS;
        let matched = digests * MATCHES_PER_DIGEST;
        // The round's items in order: the first `matched` go to this round's recipients
        // (three each), the next `PAUSED` one to each paused subscriber.
        let mut k = 0;
        for f in FEEDS * round / ROUNDS..FEEDS * (round + 1) / ROUNDS {
            let id = format!("feed{f:03}");
            let count = args.items * (f + 1) / FEEDS - args.items * f / FEEDS;
            let items: Vec<Item> = (0..count).map(|n| item(&mut words, &id, n, at)).collect();
            // Each item's subscription, in the order the store asks.
            let mut matches = (0..items.len())
                .map(|_| {
                    let reader = if k < matched {
                        Some(active[k % digests])
                    } else {
                        paused.get(k - matched).copied()
                    };
                    k += 1;
                    reader.map(|r| vec![r.subscription]).unwrap_or_default()
                })
                .collect::<Vec<_>>()
                .into_iter();
            let poll = SuccessfulPoll {
                items: items.into(),
                etag: None,
                last_modified: None,
                full_fetch: true,
                moved_to: None,
                repairs: Arc::new([]),
                body_hash: None,
                now: at,
                next_poll_at: at + chrono::Duration::minutes(15),
                baseline_cutoff: at - chrono::Duration::days(1),
                matcher_generation: generation,
                snapshot: None,
                stories: Default::default(),
                languages: Default::default(),
                prepared: Default::default(),
            };
            wait(store.store_items(&to_poll[&id], poll, move |_, _, _| {
                matches.next().unwrap_or_default()
            }))
            .with_context(|| format!("storing feed {id}"))?;
            to_poll.remove(&id);
        }
        let sent_at = at + chrono::Duration::minutes(30);
        for reader in &active[..digests] {
            if let Some(outbox) = wait(store.take_digest(
                reader.subscriber,
                sent_at,
                true,
                "bench.example",
                |_, p| {
                    Ok(RenderedRound {
                        email: Some(render(&p.email)?),
                        events: Vec::new(),
                    })
                },
            ))? {
                wait(store.mark_sent(outbox, None, sent_at))?;
            }
        }
        if round == 0 {
            for reader in paused {
                if let Some(outbox) = wait(store.take_digest(
                    reader.subscriber,
                    sent_at,
                    true,
                    "bench.example",
                    |_, p| {
                        Ok(RenderedRound {
                            email: Some(render(&p.email)?),
                            events: Vec::new(),
                        })
                    },
                ))? {
                    wait(store.mark_bounced(outbox, None, "550 mailbox unavailable", 1, sent_at))?;
                }
            }
        }
    }
    Ok(())
}

// ---- reading the file directly -------------------------------------------------------------

fn inspect(path: &Path) -> Result<Connection> {
    let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_WRITE)
        .with_context(|| format!("opening {}", path.display()))?;
    conn.busy_timeout(Duration::from_secs(30))?;
    Ok(conn)
}

fn count(conn: &Connection, sql: &str) -> Result<i64> {
    Ok(conn.query_row(sql, [], |r| r.get(0))?)
}

/// Pending matches as (subscription, item).
fn pending(conn: &Connection) -> Result<BTreeSet<(i64, i64)>> {
    let mut stmt =
        conn.prepare("SELECT subscription_id, item_id FROM matches WHERE outbox_id IS NULL")?;
    let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// MiB of item text and of outbox bodies stored from before `cutoff` (what pruning
/// clears; the writer adds nothing there).
fn old_text(conn: &Connection, cutoff: i64) -> Result<(f64, f64)> {
    let items = count(
        conn,
        &format!(
            "SELECT CAST(TOTAL(LENGTH(title) + LENGTH(summary) + LENGTH(content)) AS INTEGER) FROM items
             WHERE first_seen_at < {cutoff}"
        ),
    )?;
    let outbox = count(
        conn,
        &format!(
            "SELECT CAST(TOTAL(LENGTH(body_text) + LENGTH(body_html)) AS INTEGER) FROM outbox
             WHERE created_at < {cutoff}"
        ),
    )?;
    Ok((items as f64 / MIB, outbox as f64 / MIB))
}

fn file_mib(path: &Path) -> f64 {
    std::fs::metadata(path).map_or(0.0, |m| m.len() as f64) / MIB
}

const MIB: f64 = 1024.0 * 1024.0;

// ---- the concurrent writer -----------------------------------------------------------------

/// One write by the concurrent writer.
struct Write {
    started: Instant,
    latency: Duration,
    error: Option<String>,
}

/// Stores a poll of one new item every [`WRITE_EVERY`] through its own connection, until
/// `stop`.
fn write_continuously(path: &Path, stop: &AtomicBool) -> Result<Vec<Write>> {
    let store = Store::open(path)?;
    let feed = FeedToPoll {
        id: LIVE_FEED.to_string(),
        url: format!("https://news.example/{LIVE_FEED}.xml"),
        etag: None,
        last_modified: None,
        baseline_at: Some(Utc::now()),
        last_full_fetch_at: None,
        consecutive_failures: 0,
        body_hash: None,
        claim: None,
        tags: Vec::new(),
        interval: None,
        options: Default::default(),
        snapshot: None,
    };
    let generation = wait(store.subscriptions_generation())?;
    let mut words = Words::new(0xD1B5_4A32_D192_ED03);
    let mut writes = Vec::new();
    for n in 0.. {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let now = Utc::now();
        let poll = SuccessfulPoll {
            items: Arc::new([item(&mut words, LIVE_FEED, n, now)]),
            etag: None,
            last_modified: None,
            full_fetch: false,
            moved_to: None,
            repairs: Arc::new([]),
            body_hash: None,
            now,
            next_poll_at: now + chrono::Duration::minutes(15),
            baseline_cutoff: now,
            matcher_generation: generation,
            snapshot: None,
            stories: Default::default(),
            languages: Default::default(),
            prepared: Default::default(),
        };
        let started = Instant::now();
        let result = wait(store.store_items(&feed, poll, |_, _, _| Vec::new()));
        writes.push(Write {
            started,
            latency: started.elapsed(),
            error: result.err().map(|e| format!("{e:#}")),
        });
        std::thread::sleep(WRITE_EVERY);
    }
    Ok(writes)
}

/// p50, p99, max and when the max happened, of the writes started in `from..to`.
fn report_writes(phase: &str, writes: &[Write], from: Instant, to: Instant) {
    let mut in_phase: Vec<&Write> = writes
        .iter()
        .filter(|w| w.started >= from && w.started < to)
        .collect();
    if in_phase.is_empty() {
        println!("  {phase:<8} no writes");
        return;
    }
    let slowest = *in_phase.iter().max_by_key(|w| w.latency).unwrap();
    in_phase.sort_by_key(|w| w.latency);
    let at = |q: f64| {
        let i = ((in_phase.len() as f64 * q).ceil() as usize).clamp(1, in_phase.len()) - 1;
        in_phase[i].latency.as_secs_f64() * 1000.0
    };
    let over = |ms: u64| {
        in_phase
            .iter()
            .filter(|w| w.latency > Duration::from_millis(ms))
            .count()
    };
    println!(
        "  {phase:<8} {:>5} writes: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms \
         ({:.2} s into the phase); {} over 100 ms, {} over 500 ms",
        in_phase.len(),
        at(0.50),
        at(0.99),
        at(1.0),
        (slowest.started - from).as_secs_f64(),
        over(100),
        over(500),
    );
}

// ---- the benchmark -------------------------------------------------------------------------

/// Runs the benchmark; false when a check failed.
fn bench(args: Args) -> Result<bool> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("tidings.db");
    let copy_path = dir.path().join("backup.db");
    let now = Utc::now();
    let cutoff = now - chrono::Duration::from_std(DEFAULT_RETENTION)?;

    let setup_started = Instant::now();
    let store = Store::open(&path)?;
    build(&store, &args, now)?;
    let setup_secs = setup_started.elapsed().as_secs_f64();

    let conn = inspect(&path)?;
    conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
    let c = cutoff.timestamp();
    let items = count(&conn, "SELECT COUNT(*) FROM items")?;
    let old_items = count(
        &conn,
        &format!("SELECT COUNT(*) FROM items WHERE first_seen_at < {c}"),
    )?;
    let sent = count(&conn, "SELECT COUNT(*) FROM outbox WHERE status = 'sent'")?;
    let failed = count(&conn, "SELECT COUNT(*) FROM outbox WHERE status = 'failed'")?;
    let old_outbox = count(
        &conn,
        &format!("SELECT COUNT(*) FROM outbox WHERE created_at < {c}"),
    )?;
    let outbox_kib = count(
        &conn,
        "SELECT CAST(AVG(LENGTH(body_text) + LENGTH(body_html)) AS INTEGER) FROM outbox",
    )? as f64
        / 1024.0;
    let matches = count(&conn, "SELECT COUNT(*) FROM matches")?;
    let pending_before = pending(&conn)?;
    let pending_old = count(
        &conn,
        &format!(
            "SELECT COUNT(*) FROM matches m JOIN items i ON i.id = m.item_id
             WHERE m.outbox_id IS NULL AND i.first_seen_at < {c}"
        ),
    )?;
    let subscribers = count(&conn, "SELECT COUNT(*) FROM subscribers")?;
    let size_before = file_mib(&path);
    let text_before = old_text(&conn, c)?;
    drop(conn);
    println!(
        "retention_bench: {items} items in {FEEDS} feeds ({old_items} before the cutoff), \
         {} outbox rows of {outbox_kib:.1} KiB ({sent} sent, {failed} failed; {old_outbox} \
         before the cutoff), {matches} matches ({} pending, {pending_old} of them on old \
         items), {subscribers} subscribers; cutoff {} days ago",
        sent + failed,
        pending_before.len(),
        DEFAULT_RETENTION.as_secs() / 86_400,
    );
    println!(
        "setup (not counted): {setup_secs:.1} s; database {size_before:.1} MiB after a checkpoint"
    );

    let stop = AtomicBool::new(false);
    let (writes, timeline, pruned, backup) = std::thread::scope(|s| -> Result<_> {
        let writer = s.spawn(|| write_continuously(&path, &stop));
        std::thread::sleep(BASELINE);
        let idle_from = Instant::now() - BASELINE;

        reset_peak_rss();
        let prune_from = Instant::now();
        let pruned = wait(store.prune(cutoff, Utc::now()));
        let prune_to = Instant::now();
        let backup = pruned
            .as_ref()
            .ok()
            .map(|_| wait(store.backup_to(&copy_path, false)));
        let backup_to = Instant::now();
        stop.store(true, Ordering::Relaxed);
        let writes = writer.join().expect("the writer thread")?;
        Ok((
            writes,
            [idle_from, prune_from, prune_to, backup_to],
            pruned,
            backup,
        ))
    })?;
    let peak = peak_rss_mib();
    let [idle_from, prune_from, prune_to, backup_to] = timeline;
    let pruned = pruned.context("pruning")?;
    let backup = backup
        .expect("backup after the prune")
        .context("backing up")?;

    let prune_secs = (prune_to - prune_from).as_secs_f64();
    let backup_secs = (backup_to - prune_to).as_secs_f64();
    let conn = inspect(&path)?;
    let page_size = count(&conn, "PRAGMA page_size")?;
    let free = (count(&conn, "PRAGMA freelist_count")? * page_size) as f64 / MIB;
    let text_after = old_text(&conn, c)?;
    println!(
        "prune:  {prune_secs:.2} s: {} items made tombstones, {} outbox rows and {} matches \
         deleted",
        pruned.items, pruned.outbox, pruned.matches,
    );
    println!(
        "        cleared {:.1} MiB of item text and {:.1} MiB of mail; file {:.1} MiB, of \
         which {free:.1} MiB free pages for reuse",
        text_before.0 - text_after.0,
        text_before.1 - text_after.1,
        file_mib(&path),
    );
    let backup_mib = backup.bytes as f64 / MIB;
    println!(
        "backup: {backup_secs:.2} s: {backup_mib:.1} MiB copied, {:.0} MiB/s ({} items, {} \
         tombstones, {} outbox rows)",
        backup_mib / backup_secs,
        backup.items,
        backup.pruned_items,
        backup.outbox,
    );
    println!("writer (its own connection, one poll stored every 5 ms), latency of each write:");
    report_writes("idle", &writes, idle_from, prune_from);
    report_writes("prune", &writes, prune_from, prune_to);
    report_writes("backup", &writes, prune_to, backup_to);
    println!("peak RSS during prune and backup: {peak:.1} MiB");

    // Checks.
    let mut failures = Vec::new();
    let errors: Vec<&String> = writes.iter().filter_map(|w| w.error.as_ref()).collect();
    if let Some(first) = errors.first() {
        failures.push(format!(
            "{} writes failed, the first: {first}",
            errors.len()
        ));
    }
    let pending_after = pending(&conn)?;
    if pending_after != pending_before {
        failures.push(format!(
            "pending matches: {} before the prune, {} after ({} lost, {} new)",
            pending_before.len(),
            pending_after.len(),
            pending_before.difference(&pending_after).count(),
            pending_after.difference(&pending_before).count(),
        ));
    }
    let dangling = count(
        &conn,
        "SELECT COUNT(*) FROM matches m WHERE NOT EXISTS (SELECT 1 FROM items i WHERE i.id = m.item_id)",
    )?;
    if dangling != 0 {
        failures.push(format!("{dangling} matches on pruned items"));
    }
    drop(conn);
    let check_started = Instant::now();
    let copy = Connection::open_with_flags(&copy_path, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    let integrity: Vec<String> = copy
        .prepare("PRAGMA integrity_check")?
        .query_map([], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    let check_secs = check_started.elapsed().as_secs_f64();
    if integrity != ["ok"] {
        failures.push(format!(
            "the copy's integrity check: {}",
            integrity.join("; ")
        ));
    }
    if pending(&copy)? != pending_before {
        failures.push("the copy's pending matches differ".to_string());
    }
    if failures.is_empty() {
        println!(
            "check: OK: {} pending matches before and after, none on a pruned item; the copy \
             passes PRAGMA integrity_check ({check_secs:.2} s) and holds them too; {} writes, \
             none failed",
            pending_after.len(),
            writes.len(),
        );
        Ok(true)
    } else {
        println!("check: FAILED ({} problems)", failures.len());
        for f in &failures {
            println!("  {f}");
        }
        Ok(false)
    }
}
