//! The jobs, each reading top to bottom as the data flow in DESIGN.md:
//! [`poll_feeds`] (claim due feeds → [`refresh_feed`] each: conditional GET → not
//! modified? → parse → store new items and their matches → feed state) and
//! [`send_digests`] (due subscribers → digest into the outbox → mail).
//!
//! The CLI's one-shots (`tidings poll`, `tidings digest`) and the scheduler's ticks call
//! these same functions; tests call them too, with the clock as a parameter.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use chrono::{DateTime, Utc};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tracing::{error, info, warn};
use url::Url;

use crate::config::Config;
use crate::digest::{next_digest_at, render_digest};
use crate::fetch::{FetchOutcome, Fetcher, Validators};
use crate::mail::{self, Delivery, Mailer};
use crate::matcher::{Document, Matcher, Query};
use crate::parse::{Item, parse_feed};
use crate::store::{FeedToPoll, Store, SuccessfulPoll};

/// How long a worker may hold a feed it claimed before another may take it.
const POLL_LEASE: Duration = Duration::from_secs(5 * 60);
/// Failing feeds back off exponentially up to this.
const MAX_BACKOFF: Duration = Duration::from_secs(24 * 3600);

/// Everything a job needs: the config and the three edges (database, HTTP, mail).
#[derive(Clone)]
pub struct App {
    pub config: Arc<Config>,
    pub store: Store,
    pub fetcher: Fetcher,
    pub mailer: Mailer,
}

impl App {
    /// Opens the database (migrating it), makes its feed list match the config, and
    /// builds the HTTP client and the mailer.
    pub fn open(config: Config) -> Result<App> {
        let store = Store::open(&config.database)?;
        store
            .sync_feeds(&config.feeds)
            .context("syncing feeds from config")?;
        let fetcher = Fetcher::new(&config.poll)?;
        let mailer = Mailer::new(&config.mail)?;
        Ok(App {
            config: Arc::new(config),
            store,
            fetcher,
            mailer,
        })
    }
}

/// What one poll cycle did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PollSummary {
    pub feeds: usize,
    pub updated: usize,
    pub not_modified: usize,
    pub failed: usize,
    pub new_items: usize,
    pub matches: usize,
}

/// How one feed's poll went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FeedOutcome {
    Updated { new_items: usize, matches: usize },
    NotModified,
    Failed { kind: String, error: String },
}

/// Polls the active feeds (all of them, or only those due) at most
/// `poll.concurrency` at a time. One feed failing never stops the others.
pub async fn poll_feeds(app: &App, now: DateTime<Utc>, only_due: bool) -> Result<PollSummary> {
    let store = app.store.clone();
    let feeds =
        tokio::task::spawn_blocking(move || store.claim_feeds(now, POLL_LEASE, only_due)).await??;
    let mut summary = PollSummary {
        feeds: feeds.len(),
        ..PollSummary::default()
    };
    if feeds.is_empty() {
        return Ok(summary);
    }
    let matcher = Arc::new(load_matcher(&app.store).await?);

    let limit = Arc::new(Semaphore::new(app.config.poll.concurrency));
    let mut jobs = JoinSet::new();
    for feed in feeds {
        let (app, matcher, limit) = (app.clone(), matcher.clone(), limit.clone());
        jobs.spawn(async move {
            let _permit = limit.acquire_owned().await;
            let id = feed.id.clone();
            let outcome = refresh_feed(&app, feed, &matcher, now).await;
            (id, outcome)
        });
    }
    while let Some(joined) = jobs.join_next().await {
        match joined {
            Ok((_, Ok(FeedOutcome::Updated { new_items, matches }))) => {
                summary.updated += 1;
                summary.new_items += new_items;
                summary.matches += matches;
            }
            Ok((_, Ok(FeedOutcome::NotModified))) => summary.not_modified += 1,
            Ok((_, Ok(FeedOutcome::Failed { .. }))) => summary.failed += 1,
            Ok((id, Err(e))) => {
                error!(feed = %id, error = %format!("{e:#}"), "could not record poll");
                summary.failed += 1;
            }
            Err(e) => {
                error!(error = %e, "poll task crashed");
                summary.failed += 1;
            }
        }
    }
    Ok(summary)
}

/// Compiles every stored subscription. A query that no longer parses (written by an
/// older version, say) is skipped with a warning rather than stopping all matching.
pub async fn load_matcher(store: &Store) -> Result<Matcher> {
    let store = store.clone();
    let rows = tokio::task::spawn_blocking(move || store.subscriptions()).await??;
    let mut compiled = Vec::with_capacity(rows.len());
    for (id, text) in rows {
        match Query::parse(&text) {
            Ok(q) => compiled.push((id, q)),
            Err(e) => warn!(subscription = id, query = %text, error = %e, "skipping bad query"),
        }
    }
    Ok(Matcher::new(compiled))
}

/// One feed, start to finish. Fetch and parse failures are recorded on the feed and
/// returned as [`FeedOutcome::Failed`]; only a database failure is an `Err`.
pub async fn refresh_feed(
    app: &App,
    feed: FeedToPoll,
    matcher: &Arc<Matcher>,
    now: DateTime<Utc>,
) -> Result<FeedOutcome> {
    let started = Instant::now();
    let interval = app
        .config
        .feed(&feed.id)
        .map_or(app.config.poll.interval, |f| f.interval);
    let next_poll_at = now + jittered(interval, &feed.id, now);
    let validators = Validators {
        etag: feed.etag.clone(),
        last_modified: feed.last_modified.clone(),
    };

    let fetched = match Url::parse(&feed.url) {
        Err(e) => Err(("config".to_string(), format!("bad url: {e}"))),
        Ok(url) => app
            .fetcher
            .fetch_feed(&url, &validators)
            .await
            .map_err(|e| (e.kind().to_string(), e.to_string())),
    };
    let fetched = match fetched {
        Ok(FetchOutcome::NotModified) => {
            let store = app.store.clone();
            let id = feed.id.clone();
            tokio::task::spawn_blocking(move || store.record_not_modified(&id, now, next_poll_at))
                .await??;
            info!(feed = %feed.id, status = "not-modified", new = 0, matched = 0,
                  ms = started.elapsed().as_millis() as u64, "feed polled");
            return Ok(FeedOutcome::NotModified);
        }
        Ok(FetchOutcome::Fetched(f)) => f,
        Err((kind, error)) => return record_failure(app, &feed, now, kind, error, started).await,
    };

    let parsed = {
        let body = fetched.body;
        let content_type = fetched.content_type.clone();
        let base = fetched.final_url.clone();
        tokio::task::spawn_blocking(move || parse_feed(&body, content_type.as_deref(), &base, now))
            .await?
    };
    let parsed = match parsed {
        Ok(p) => p,
        Err(e) => {
            return record_failure(app, &feed, now, "parse".into(), e.to_string(), started).await;
        }
    };

    let baseline_cutoff = now
        - chrono::Duration::from_std(app.config.poll.initial_backlog)
            .unwrap_or(chrono::Duration::days(1));
    let store = app.store.clone();
    let matcher = matcher.clone();
    let feed_id = feed.id.clone();
    let baseline = feed.baseline_at.is_none();
    let stored = tokio::task::spawn_blocking(move || {
        let poll = SuccessfulPoll {
            items: &parsed.items,
            etag: fetched.validators.etag.as_deref(),
            last_modified: fetched.validators.last_modified.as_deref(),
            now,
            next_poll_at,
            baseline_cutoff,
        };
        store.store_items(&feed, &poll, |item| matcher.find_matches(&document(item)))
    })
    .await??;
    info!(feed = %feed_id, status = "ok", baseline, new = stored.new_items, matched = stored.matches,
          ms = started.elapsed().as_millis() as u64, "feed polled");
    Ok(FeedOutcome::Updated {
        new_items: stored.new_items,
        matches: stored.matches,
    })
}

/// The text a subscription is matched against.
fn document(item: &Item) -> Document {
    let body = if item.content.is_empty() || item.content == item.summary {
        item.summary.clone()
    } else {
        format!("{}\n{}", item.summary, item.content)
    };
    Document::new(&item.title, &body)
}

async fn record_failure(
    app: &App,
    feed: &FeedToPoll,
    now: DateTime<Utc>,
    kind: String,
    error: String,
    started: Instant,
) -> Result<FeedOutcome> {
    let store = app.store.clone();
    let id = feed.id.clone();
    let interval = app
        .config
        .feed(&feed.id)
        .map_or(app.config.poll.interval, |f| f.interval);
    let (k, e) = (kind.clone(), error.clone());
    let failures = tokio::task::spawn_blocking(move || -> Result<u32> {
        let failures = store.consecutive_failures(&id)? + 1;
        let next = now + backoff(interval, failures) + jittered(Duration::ZERO, &id, now);
        store.record_failure(&id, now, &k, &e, next)?;
        Ok(failures)
    })
    .await??;
    warn!(feed = %feed.id, status = "error", kind = %kind, error = %error, failures,
          ms = started.elapsed().as_millis() as u64, "feed poll failed");
    Ok(FeedOutcome::Failed { kind, error })
}

/// `interval × 2^(failures-1)`, capped at [`MAX_BACKOFF`].
fn backoff(interval: Duration, failures: u32) -> chrono::Duration {
    let factor = 1u32 << failures.saturating_sub(1).min(16);
    let d = interval
        .saturating_mul(factor)
        .min(MAX_BACKOFF)
        .max(interval);
    chrono::Duration::from_std(d).unwrap_or(chrono::Duration::days(1))
}

/// `base` plus up to a tenth of it (at least up to 30 s), derived from the feed id and
/// the time, so feeds with equal intervals spread out instead of polling in lockstep.
fn jittered(base: Duration, feed_id: &str, now: DateTime<Utc>) -> chrono::Duration {
    let spread = (base.as_secs() / 10).max(30);
    let seed = feed_id
        .bytes()
        .fold(now.timestamp() as u64 ^ 0x9E37_79B9_7F4A_7C15, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01B3)
        });
    chrono::Duration::from_std(base).unwrap_or_default()
        + chrono::Duration::seconds((seed % spread) as i64)
}

/// What one digest round did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DigestSummary {
    pub queued: usize,
    pub delivery: Delivery,
}

/// Writes a digest to the outbox for every due subscriber (every subscriber with
/// pending matches, with `ignore_schedule`), then delivers what the outbox holds.
pub async fn send_digests(
    app: &App,
    now: DateTime<Utc>,
    ignore_schedule: bool,
) -> Result<DigestSummary> {
    let store = app.store.clone();
    let due =
        tokio::task::spawn_blocking(move || store.due_digests(now, ignore_schedule)).await??;
    let mut summary = DigestSummary::default();
    let domain = app.mailer.message_domain();
    for subscriber in due {
        let store = app.store.clone();
        let config = app.config.clone();
        let domain = domain.clone();
        let queued = tokio::task::spawn_blocking(move || {
            let tz = config.digest.timezone;
            store.take_digest(
                subscriber,
                now,
                &domain,
                |_, entries| render_digest(entries, tz),
                |frequency| next_digest_at(frequency, now, config.digest.daily_at, tz),
            )
        })
        .await?
        .with_context(|| format!("queueing digest for subscriber {subscriber}"))?;
        if let Some(outbox) = queued {
            info!(subscriber, outbox, "digest queued");
            summary.queued += 1;
        }
    }
    summary.delivery = mail::send_due(&app.store, &app.mailer, now).await?;
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_caps() {
        let fifteen = Duration::from_secs(900);
        let minutes: Vec<i64> = [1, 2, 3, 4, 10]
            .iter()
            .map(|&f| backoff(fifteen, f).num_minutes())
            .collect();
        assert_eq!(minutes, [15, 30, 60, 120, 1440]);
    }

    #[test]
    fn jitter_stays_within_a_tenth() {
        let now = Utc::now();
        let base = Duration::from_secs(3600);
        let spread: Vec<i64> = (0..50)
            .map(|i| jittered(base, &format!("feed-{i}"), now).num_seconds())
            .collect();
        assert!(
            spread.iter().all(|s| (3600..3960).contains(s)),
            "{spread:?}"
        );
        let distinct: std::collections::HashSet<_> = spread.iter().collect();
        assert!(distinct.len() > 10, "feeds spread out: {spread:?}");
    }
}
