//! The only place with SQL: the database, its migrations, and the domain operations the
//! pipeline is built from, one file per domain (feeds, items, subscriptions, signups,
//! digests, outbox, maintenance).
//!
//! [`Store`] is the async front every caller uses; the SQL lives in a backend behind it,
//! SQLite (`sqlite/`, the embedded default) or PostgreSQL (`postgres/`, for several
//! instances sharing one database), one file per domain again, with the same operations
//! and the same observable behaviour (one contract test suite, `tests/store_contract.rs`,
//! runs against both). The blocking calls run on tokio's blocking pool inside the front,
//! never in callers. A call whose caller goes away (a cancelled request, a shutdown)
//! still runs to its end: a transaction is never cut in half.
//!
//! Every operation that crosses a crash boundary is one transaction:
//! [`Store::store_items`] writes new items *and* their matches; [`Store::take_digest`]
//! writes an outbox row *and* marks the matches it holds as taken. Work that several
//! workers could share (polling a feed, sending a message) is claimed with a lease
//! (`claimed_until`). [`Store::prune`] works in short batches, each a transaction that
//! leaves every pending match as it was.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use chrono::{DateTime, Utc};
use chrono_tz::Tz;

use crate::config::{DATABASE_PASSWORD_ENV, Database, FeedConfig, FeedOptions};
use crate::digest::{
    ChannelRoute, DigestEntry, FailingFeed, Parcels, RenderedRound, Routes, Schedule, route,
};
pub use crate::ids::{ChannelId, ItemId, OutboxId, SignupId, SubscriberId, SubscriptionId};
use crate::parse::Item;
use anyhow::bail;

mod articles;
mod channels;
mod cluster;
mod copy;
mod digests;
mod feeds;
mod health;
mod items;
mod maintenance;
mod model;
mod outbox;
mod postgres;
mod signups;
mod sqlite;
mod subscriptions;

pub use articles::{ArticleCounts, ArticleDone, ArticleOutcome, ArticleToFetch};
pub use channels::{
    CONFIRM_TRIES, Channel, ChannelLimits, Confirmation, NewChannel, Notice, OverLimit,
    PushMessage, event_id,
};
pub use cluster::{ClusterStats, FetchLimits, FetchSlot, Instance};
pub use copy::{ImportStep, Imported, TableCopied};
pub use feeds::{FeedListSync, FeedListVersion};
pub use health::{WriteTrouble, unavailable};
pub use model::{
    ArticleState, ChannelKind, ChannelOrigin, ChannelState, OutboxKind, OutboxStatus, PollStatus,
    UnknownStatus,
};
use postgres::Postgres;
use sqlite::Sqlite;

/// A handle to the database; cheap to clone, safe to share between tasks and threads.
#[derive(Clone)]
pub struct Store {
    backend: Arc<Backend>,
    clock: Arc<Clock>,
    /// Whether its writes go through ([`Store::write_trouble`]).
    health: Arc<health::WriteHealth>,
    /// Claims and connection slots this process was done with but could not give back,
    /// and outcomes of deliveries it could not record (the database refused the write):
    /// written before it next claims feeds, mail or pushes or takes a slot, so its own
    /// leftovers never hold it up until their lease ends, and a message the mail server
    /// took is not sent again once its lease runs out.
    unreleased: Arc<std::sync::Mutex<Vec<Unreleased>>>,
    /// Held while what `unreleased` held is written: another job about to claim waits for
    /// it, rather than finding the list empty while its contents are still on the way.
    writing_unreleased: Arc<tokio::sync::Mutex<()>>,
}

/// Something [`Store::unreleased`] holds.
enum Unreleased {
    Slot(FetchSlot),
    Claim(Box<FeedToPoll>),
    Article(Box<ArticleToFetch>),
    /// What happened to an outbox message under a claim, as its `mark_*` call says it.
    Outcome {
        outbox_id: OutboxId,
        claim: Option<String>,
        outcome: Outcome,
    },
}

/// The outcome of one delivery, for [`Unreleased::Outcome`].
#[derive(Clone)]
enum Outcome {
    Sent(DateTime<Utc>),
    Retry(String, DateTime<Utc>),
    Failed(String),
    Bounced(String, u32, DateTime<Utc>),
    PushRejected(String, u32, bool),
}

/// What writing an [`Outcome`] did.
struct Marked {
    /// The claim still held the row (else nothing was written).
    recorded: bool,
    /// Whom (or which destination) this rejection paused.
    paused: Option<Paused>,
}

enum Paused {
    Subscriber(String),
    Channel(Box<Channel>),
}

impl Marked {
    fn paused_subscriber(self) -> Option<String> {
        match self.paused {
            Some(Paused::Subscriber(email)) => Some(email),
            _ => None,
        }
    }

    fn paused_channel(self) -> Option<Channel> {
        match self.paused {
            Some(Paused::Channel(channel)) => Some(*channel),
            _ => None,
        }
    }

    /// Logs an outcome written late: the delivery happened while the database could not
    /// be written, and its sender has moved on.
    fn tell(self, outbox_id: OutboxId) {
        if !self.recorded {
            tracing::warn!(
                outbox = outbox_id.0,
                "a delivery's result written late found its claim lost; not recorded"
            );
            return;
        }
        tracing::info!(
            outbox = outbox_id.0,
            "recorded a delivery's result the database could not take at the time"
        );
        match self.paused {
            Some(Paused::Subscriber(email)) => tracing::warn!(
                to = %email,
                "subscriber paused after repeated bounces; `tidings subscriber resume` undoes it"
            ),
            Some(Paused::Channel(channel)) => tracing::warn!(
                channel = channel.id.0,
                subscriber = %channel.email,
                "destination paused after repeated rejections"
            ),
            None => {}
        }
    }
}

/// A clock measure whose round trip took longer than this is not used.
const MAX_CLOCK_ROUND_TRIP_MS: i64 = 250;

/// The time every instance on one database goes by ([`Store::now`]): the database
/// server's. Leases, connection slots, the mail pacer and schedules are compared across
/// instances, so one instance whose clock runs minutes ahead would take feeds and
/// messages another still holds. SQLite's processes share one machine's clock.
struct Clock {
    /// This process's clock (`Utc::now`; another in tests).
    local: fn() -> DateTime<Utc>,
    /// Database time minus local time, in milliseconds, as last measured.
    offset_ms: std::sync::atomic::AtomicI64,
}

/// The database a [`Store`] works on.
enum Backend {
    Sqlite(Sqlite),
    Postgres(Postgres),
}

/// Runs one backend call on the blocking pool: `run!(self, db => db.method(args))`, where
/// the expression is written once and compiled for each backend. Its outcome goes into
/// the store's [`health::WriteHealth`] under the method's name and, with
/// `run!(self, about = feed.id, db => …)`, what the call is about (a failed call is
/// remembered until that same call goes through).
macro_rules! run {
    ($store:expr, $db:ident => $call:expr) => {
        run!($store, about = "", $db => $call)
    };
    ($store:expr, about = $about:expr, $db:ident => $call:expr) => {{
        let about = ($about).to_string();
        $store
            .tracked(stringify!($call), about, move |backend| match backend {
                Backend::Sqlite($db) => $call,
                Backend::Postgres($db) => $call,
            })
            .await
    }};
}
use run;

impl Store {
    /// Opens (creating if needed) the SQLite database at `path` and brings its schema up
    /// to date. Blocks while migrating: call it before serving.
    pub fn open(path: &Path) -> Result<Store> {
        let name = path.display().to_string();
        Ok(Store::from(Backend::Sqlite(Sqlite::open(path)?), name))
    }

    /// Opens the existing database at `path` to read only, without creating or migrating
    /// it: for commands that only look (`check-config`). Refuses a database whose schema
    /// is not this version's (older ones are migrated by any other command).
    pub fn open_read_only(path: &Path) -> Result<Store> {
        let name = path.display().to_string();
        let backend = Backend::Sqlite(Sqlite::open_read_only(path)?);
        Ok(Store::reading(backend, name))
    }

    /// Connects to the PostgreSQL database at `url` (`postgres://user@host:port/database`),
    /// with `password` instead of the URL's when given, and brings its schema up to date
    /// (instances starting at once take turns). Messages name the database without its
    /// password.
    pub async fn connect(url: &str, password: Option<&str>) -> Result<Store> {
        let (url, password) = (url.to_owned(), password.map(str::to_owned));
        let postgres = off_thread(move || Postgres::connect(&url, password.as_deref())).await?;
        let name = postgres.name().to_string();
        let store = Store::from(Backend::Postgres(postgres), name);
        store.sync_clock().await?;
        Ok(store)
    }

    /// Opens the configured database: the SQLite file (created and migrated as
    /// [`Store::open`]) or the PostgreSQL database (as [`Store::connect`], its password
    /// from [`DATABASE_PASSWORD_ENV`] when set).
    pub async fn open_database(database: &Database) -> Result<Store> {
        match database {
            Database::Sqlite(path) => {
                let path = path.clone();
                off_thread(move || Store::open(&path)).await
            }
            Database::Postgres(url) => {
                let password = std::env::var(DATABASE_PASSWORD_ENV).ok();
                Store::connect(url, password.as_deref()).await
            }
        }
    }

    /// Why this process may not write the configured SQLite file that exists (a
    /// read-only file or filesystem, another user's), as the kernel says; `None` when it
    /// may, or when there is no such file (or it is PostgreSQL).
    pub fn cannot_write(database: &Database) -> Option<String> {
        match database {
            Database::Sqlite(path) if path.exists() => {
                rustix::fs::access(path, rustix::fs::Access::WRITE_OK)
                    .err()
                    .map(|e| std::io::Error::from(e).to_string())
            }
            _ => None,
        }
    }

    /// Opens the configured database to read only, without creating or migrating it, as
    /// [`Store::open_read_only`] does for SQLite; a PostgreSQL session is read-only too.
    pub async fn open_database_read_only(database: &Database) -> Result<Store> {
        let database = database.clone();
        let store = off_thread(move || match database {
            Database::Sqlite(path) => Store::open_read_only(&path),
            Database::Postgres(url) => {
                let password = std::env::var(DATABASE_PASSWORD_ENV).ok();
                let postgres = Postgres::connect_read_only(&url, password.as_deref())?;
                let name = postgres.name().to_string();
                Ok(Store::reading(Backend::Postgres(postgres), name))
            }
        })
        .await?;
        store.sync_clock().await?;
        Ok(store)
    }

    /// A store over `backend` opened only to read: the writes it refuses are its nature,
    /// not write trouble ([`health::WriteHealth::untracked`]).
    fn reading(backend: Backend, name: String) -> Store {
        Store {
            health: Arc::new(health::WriteHealth::untracked(name.clone())),
            ..Store::from(backend, name)
        }
    }

    fn from(backend: Backend, name: String) -> Store {
        Store {
            backend: Arc::new(backend),
            health: Arc::new(health::WriteHealth::new(name)),
            unreleased: Arc::default(),
            writing_unreleased: Arc::default(),
            clock: Arc::new(Clock {
                local: Utc::now,
                offset_ms: 0.into(),
            }),
        }
    }

    /// This handle with `local` as this process's clock instead of `Utc::now`, the offset
    /// to the database's not yet measured: for tests of instances whose clocks disagree.
    pub fn with_local_clock(&self, local: fn() -> DateTime<Utc>) -> Store {
        Store {
            backend: self.backend.clone(),
            health: self.health.clone(),
            unreleased: self.unreleased.clone(),
            writing_unreleased: self.writing_unreleased.clone(),
            clock: Arc::new(Clock {
                local,
                offset_ms: 0.into(),
            }),
        }
    }

    /// Now, on the cluster's clock: this process's clock corrected by the offset to the
    /// database server's last measured ([`Store::sync_clock`]). Every time an instance
    /// writes or compares in the database (claims, leases, slots, schedules) is this.
    pub fn now(&self) -> DateTime<Utc> {
        let offset = self
            .clock
            .offset_ms
            .load(std::sync::atomic::Ordering::Relaxed);
        (self.clock.local)() + chrono::Duration::milliseconds(offset)
    }

    /// Measures how far this process's clock is from the database server's (PostgreSQL;
    /// SQLite has no other clock) and corrects [`Store::now`] by it. Returns the offset:
    /// database time minus local time. Called at connection and with every heartbeat.
    pub async fn sync_clock(&self) -> Result<chrono::Duration> {
        let local = self.clock.local;
        let (offset_ms, round_trip_ms) = self
            .blocking(move |backend| match backend {
                Backend::Sqlite(_) => Ok((0, 0)),
                Backend::Postgres(db) => db.clock_offset_ms(local),
            })
            .await?;
        let offset = &self.clock.offset_ms;
        // A slow answer says little about the clocks: the last good measure stays.
        if round_trip_ms <= MAX_CLOCK_ROUND_TRIP_MS {
            offset.store(offset_ms, std::sync::atomic::Ordering::Relaxed);
        }
        Ok(chrono::Duration::milliseconds(
            offset.load(std::sync::atomic::Ordering::Relaxed),
        ))
    }

    /// Runs `call` on the blocking pool and waits for it; it runs to its end even when
    /// the waiting future is dropped.
    async fn blocking<T: Send + 'static>(
        &self,
        call: impl FnOnce(&Backend) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let backend = self.backend.clone();
        off_thread(move || call(&backend)).await
    }

    /// [`Store::blocking`], its outcome recorded in the store's write health: `call` is
    /// the backend call as written, `about` what it is about ("" for nothing in
    /// particular).
    async fn tracked<T: Send + 'static>(
        &self,
        call: &'static str,
        about: String,
        work: impl FnOnce(&Backend) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let result = self.blocking(work).await;
        let operation = health::operation(call);
        let key = |operation: &str| {
            if about.is_empty() {
                operation.to_string()
            } else {
                format!("{operation} {about}")
            }
        };
        match &result {
            Ok(_) => self.health.succeeded(|| {
                let vouched = health::also_clears(operation).iter().copied();
                std::iter::once(operation).chain(vouched).map(key).collect()
            }),
            Err(e) => {
                if let Some(reason) = health::unavailable(e) {
                    self.health.failed(key(operation), reason);
                }
            }
        }
        result
    }

    /// Keeps what `result` (of giving back `what`) failed to give back because the
    /// database could not be written, for [`Store::give_back_unreleased`].
    fn keep_unreleased<T>(&self, result: &Result<T>, what: impl FnOnce() -> Unreleased) {
        if let Err(e) = result
            && health::unavailable(e).is_some()
        {
            let mut unreleased = self.unreleased.lock().unwrap_or_else(|p| p.into_inner());
            unreleased.push(what());
        }
    }

    /// Gives back the claims and slots this process could not give back before (see
    /// [`Store::write_unreleased`]); the deliveries' results it keeps wait for a claim of
    /// mail or pushes.
    async fn give_back_unreleased(&self) -> Result<()> {
        self.write_unreleased(false).await
    }

    /// [`Store::give_back_unreleased`], and the deliveries' results this store kept:
    /// before it claims mail or pushes, which could otherwise take (and send) those
    /// messages again.
    async fn write_unreleased_deliveries(&self) -> Result<()> {
        self.write_unreleased(true).await
    }

    /// Writes what [`Store::unreleased`] holds: the claims and slots, then, with
    /// `deliveries`, the deliveries' results (one that does not fit holds up no claim of
    /// feeds, articles or slots). In each group the first that still cannot be written is
    /// an error (the database still cannot be written), and it and the rest are kept for
    /// the next try. The work runs to its end even when the caller goes away (a timeout):
    /// nothing taken out of the list is dropped unwritten.
    async fn write_unreleased(&self, deliveries: bool) -> Result<()> {
        let store = self.clone();
        tokio::spawn(async move { store.write_unreleased_now(deliveries).await })
            .await
            .context("writing what earlier work could not")?
    }

    async fn write_unreleased_now(&self, deliveries: bool) -> Result<()> {
        let _writing = self.writing_unreleased.lock().await;
        let (outcomes, releases): (Vec<_>, Vec<_>) = {
            let mut unreleased = self.unreleased.lock().unwrap_or_else(|p| p.into_inner());
            std::mem::take(&mut *unreleased)
                .into_iter()
                .partition(|kept| matches!(kept, Unreleased::Outcome { .. }))
        };
        let released = self.write_each(releases).await;
        if !deliveries {
            self.keep_all(outcomes);
            return released;
        }
        let recorded = self.write_each(outcomes).await;
        released.and(recorded)
    }

    /// Writes `pending` in order until one fails; it and the rest go back to be kept.
    async fn write_each(&self, pending: Vec<Unreleased>) -> Result<()> {
        let mut pending = pending.into_iter();
        while let Some(next) = pending.next() {
            let result = match &next {
                Unreleased::Slot(slot) => {
                    let slot = slot.clone();
                    run!(self, db => db.release_fetch_slot(&slot))
                }
                Unreleased::Claim(feed) => {
                    let feed = FeedToPoll::clone(feed);
                    run!(self, about = feed.id, db => db.release_claim(&feed))
                }
                Unreleased::Article(article) => {
                    let article = ArticleToFetch::clone(article);
                    run!(self, about = article.item, db => db.release_article(&article))
                }
                Unreleased::Outcome {
                    outbox_id,
                    claim,
                    outcome,
                } => {
                    let written = self
                        .write_outcome(*outbox_id, claim.clone(), outcome.clone())
                        .await;
                    written.map(|marked| marked.tell(*outbox_id))
                }
            };
            if let Err(e) = result {
                self.keep_all(std::iter::once(next).chain(pending));
                return Err(
                    e.context("writing what earlier work could not (claims, slots, deliveries)")
                );
            }
        }
        Ok(())
    }

    /// Puts `kept` back in [`Store::unreleased`].
    fn keep_all(&self, kept: impl IntoIterator<Item = Unreleased>) {
        let mut unreleased = self.unreleased.lock().unwrap_or_else(|p| p.into_inner());
        unreleased.extend(kept);
    }

    /// The outbox ids of the deliveries' results this store holds unwritten.
    fn kept_deliveries(&self) -> Vec<String> {
        let unreleased = self.unreleased.lock().unwrap_or_else(|p| p.into_inner());
        unreleased
            .iter()
            .filter_map(|kept| match kept {
                Unreleased::Outcome { outbox_id, .. } => Some(outbox_id.0.to_string()),
                _ => None,
            })
            .collect()
    }

    /// Writes what the database refused earlier and this store still holds (claims and
    /// slots to give back, deliveries' results), as a process does before it ends: what
    /// it holds dies with it. Waits at most `within` (a database that hangs must not
    /// hold up the exit). What still cannot be written is an error, and the log names
    /// the messages whose results are lost with it: they are sent again (with the same
    /// `Message-ID`) once their claim runs out.
    pub async fn write_kept(&self, within: Duration) -> Result<()> {
        let before = self.kept_deliveries();
        let (result, lost) = match tokio::time::timeout(within, self.write_unreleased_deliveries())
            .await
        {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(e)) => (Err(e), self.kept_deliveries()),
            Err(_) => (
                Err(
                    anyhow::anyhow!("the database did not answer within {} s", within.as_secs())
                        .context("writing what earlier work could not (claims, slots, deliveries)"),
                ),
                before,
            ),
        };
        if !lost.is_empty() {
            tracing::error!(
                outbox = %lost.join(", "),
                "the results of deliveries could not be written before exiting: these \
                 messages are sent again (with the same Message-ID) once their claim runs out"
            );
        }
        result
    }

    /// While calls fail because the database cannot be written (full, read-only, away),
    /// since when and why; `None` once every call that failed has gone through since.
    pub fn write_trouble(&self) -> Option<WriteTrouble> {
        self.health.trouble()
    }

    /// Calls that failed because the database could not be written, since this store
    /// was opened (`/metrics`).
    pub fn write_failures(&self) -> u64 {
        self.health.failed_total()
    }
}

/// Runs blocking database work on tokio's blocking pool (the PostgreSQL client blocks on
/// a runtime of its own, which may not be started from an async task).
async fn off_thread<T: Send + 'static>(
    work: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(work)
        .await
        .context("a database call panicked")?
}

/// What the poller needs to know about a feed it is about to fetch.
#[derive(Debug, Clone)]
pub struct FeedToPoll {
    pub id: String,
    pub url: String,
    pub etag: Option<String>,
    pub last_modified: Option<String>,
    /// `None` until the first successful poll: that poll is the baseline.
    pub baseline_at: Option<DateTime<Utc>>,
    /// The last unconditional GET (stale-304 servers are caught by fetching in full).
    pub last_full_fetch_at: Option<DateTime<Utc>>,
    pub consecutive_failures: u32,
    /// [`crate::parse::body_hash`] of the last body stored: the same body again is not parsed.
    pub body_hash: Option<String>,
    /// The token of the claim this poll holds ([`Store::claim_feeds`]); `None` for a feed
    /// that was not claimed (tools, benchmarks).
    pub claim: Option<String>,
    /// The feed's tags and poll interval as the feed list in the database has them
    /// (which every instance polls, whatever its own config says).
    pub tags: Vec<String>,
    /// `None` for a feed synced before intervals were stored: the default applies.
    pub interval: Option<Duration>,
    /// How the feed's items are read (full text…), as the database's feed list says.
    pub options: FeedOptions,
    /// A watched page: the text of its selected part at the last poll (`None` before).
    pub snapshot: Option<String>,
}

/// A successful fetch and parse, ready to be stored.
#[derive(Debug, Clone)]
pub struct SuccessfulPoll {
    pub items: Arc<[Item]>,
    pub etag: Option<String>,
    pub last_modified: Option<String>,
    /// This was an unconditional GET.
    pub full_fetch: bool,
    /// The feed answered from a new home after permanent redirects.
    pub moved_to: Option<String>,
    /// What the parser had to repair to read it.
    pub repairs: Arc<[String]>,
    /// [`crate::parse::body_hash`] of the body these items came from.
    pub body_hash: Option<String>,
    pub now: DateTime<Utc>,
    pub next_poll_at: DateTime<Utc>,
    /// On the baseline poll, only items published after this can match.
    pub baseline_cutoff: DateTime<Utc>,
    /// The subscriptions generation the matcher was compiled at.
    pub matcher_generation: i64,
    /// A watched page: the text of its selected part now, remembered for the next poll.
    pub snapshot: Option<String>,
    /// How new items join stories.
    pub stories: crate::story::StoryRules,
    /// What tells new items' languages.
    pub languages: Arc<crate::language::Detector>,
    /// For some of `items` (by index), what [`SuccessfulPoll::prepare`] would work out,
    /// worked out already: on a baseline poll, every item is new, and this work is done
    /// while parsing rather than inside the write transaction, which one poll at a time
    /// holds. Empty (or shorter than `items`) for the rest.
    pub prepared: Arc<[Option<Prepared>]>,
}

/// What a new item that can be alerted needs to be stored: the terms that group it
/// into a story ([`crate::story::Terms::of_item`]) and its language.
#[derive(Debug, Clone, PartialEq)]
pub struct Prepared {
    pub terms: crate::story::Terms,
    pub lang: Option<String>,
}

impl Prepared {
    /// Works it out for `item` with `languages`.
    pub fn of(item: &Item, languages: &crate::language::Detector) -> Prepared {
        Prepared {
            terms: crate::story::Terms::of_item(&item.title, &item.summary, &item.content),
            lang: languages.detect_item(item),
        }
    }
}

impl SuccessfulPoll {
    /// [`Prepared`] for `items[index]`: as worked out already, or now.
    pub fn prepare(&self, index: usize) -> Prepared {
        match self.prepared.get(index) {
            Some(Some(prepared)) => prepared.clone(),
            _ => Prepared::of(&self.items[index], &self.languages),
        }
    }
}

/// The subscriptions the matcher runs, and the generation they were read at.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ActiveSubscriptions {
    pub generation: i64,
    /// (subscription id, query text), by id.
    pub queries: Vec<(SubscriptionId, String)>,
    /// The searches of `queries` that cross languages, by id.
    pub crossing: Vec<SubscriptionId>,
}

/// What [`Store::store_items`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreOutcome {
    Stored(Stored),
    /// The subscriptions changed since the matcher was compiled: nothing was written;
    /// compile it again and store again.
    StaleMatcher,
    /// Another worker claimed the feed meanwhile: nothing was written.
    ClaimLost,
}

/// How many sign-ups the web takes ([`Store::record_signup`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SignupLimits {
    pub per_client_per_hour: u32,
    pub per_address_per_day: u32,
}

/// What [`Store::record_signup`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignupAdmission {
    /// Over the client's limit: nothing recorded.
    TooManyFromClient,
    /// Recorded; `mailed` when its confirmation mail was queued too.
    Recorded { id: SignupId, mailed: bool },
}

/// A 200 whose body is the one stored last time: nothing to parse, but the feed's
/// validators and full-fetch time move on.
#[derive(Debug, Clone)]
pub struct UnchangedPoll {
    pub etag: Option<String>,
    pub last_modified: Option<String>,
    /// This was an unconditional GET.
    pub full_fetch: bool,
    pub moved_to: Option<String>,
    pub now: DateTime<Utc>,
    pub next_poll_at: DateTime<Utc>,
}

/// What one successful poll changed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stored {
    pub new_items: usize,
    /// Known items whose title or text changed materially.
    pub updated_items: usize,
    pub matches: usize,
    /// New items of full-text feeds left waiting for their article (matched once it is in).
    pub articles_pending: usize,
}

/// A feed's health, for `tidings feeds status` and for tests.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct FeedStatus {
    pub id: String,
    pub name: String,
    pub url: String,
    pub active: bool,
    /// `None` before the first poll.
    pub last_status: Option<PollStatus>,
    pub last_error: Option<String>,
    pub last_error_kind: Option<String>,
    pub last_error_at: Option<DateTime<Utc>>,
    pub consecutive_failures: u32,
    pub last_poll_at: Option<DateTime<Utc>>,
    pub last_success_at: Option<DateTime<Utc>>,
    pub next_poll_at: DateTime<Utc>,
    pub items: i64,
    /// Where a permanent redirect pointed: update `config.toml`.
    pub moved_to: Option<String>,
    pub gone: bool,
    /// What the parser had to repair on the last successful poll.
    pub repairs: Vec<String>,
    /// The articles of its items (full-text feeds).
    pub articles: ArticleCounts,
    /// The claim of the last poll that took it (held only until `until`).
    pub claim: Option<FeedClaim>,
}

/// Who took a feed to poll it, and for how long ([`FeedStatus::claim`]).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct FeedClaim {
    /// The instance id of the poll (`host:pid:start`).
    pub by: String,
    pub since: DateTime<Utc>,
    pub until: DateTime<Utc>,
}

impl FeedClaim {
    /// Who holds the feed, as `feeds status` and `/admin` say it: "being polled by HOST
    /// pid PID since … (its claim ends …)", or, when that process is known to have ended
    /// ([`Instance::is_gone`]), "claimed by … since …, which has ended: the next poll
    /// takes it over".
    pub fn describe(&self) -> String {
        let utc = |t: DateTime<Utc>| t.format("%Y-%m-%d %H:%M UTC");
        if Instance::is_gone(&self.by) {
            format!(
                "claimed by {} since {}, which has ended: the next poll takes it over",
                self.owner(),
                utc(self.since)
            )
        } else {
            format!(
                "being polled by {} since {} (its claim ends {})",
                self.owner(),
                utc(self.since),
                utc(self.until)
            )
        }
    }

    /// "host pid N": who, as people say it.
    pub fn owner(&self) -> String {
        match cluster::Signer::of(&self.by) {
            Some(signer) => format!("{} pid {}", signer.host, signer.pid),
            None => self.by.clone(),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Subscriber {
    pub id: SubscriberId,
    pub email: String,
    pub schedule: Schedule,
    pub timezone: Tz,
    pub next_digest_at: Option<DateTime<Utc>>,
    /// Permanent delivery failures in a row.
    pub bounces: u32,
    /// Set when `bounces` reached the limit: no digests until resumed.
    pub paused_at: Option<DateTime<Utc>>,
    pub queries: Vec<String>,
    /// What they hear of a story they already got when another outlet carries it.
    pub new_outlets: NewOutlets,
    /// The language of their digests and pages (see [`crate::locale`]).
    pub locale: String,
}

/// What a subscriber hears of a story they already got when another outlet carries it
/// (see [`crate::story`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum NewOutlets {
    /// Nothing.
    Never,
    /// Listed as "more coverage" in their next digest; it does not send one by itself.
    #[default]
    Next,
    /// Alerted as any new item.
    Always,
}

impl NewOutlets {
    pub const ALL: [NewOutlets; 3] = [NewOutlets::Never, NewOutlets::Next, NewOutlets::Always];

    /// As stored, and as written on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            NewOutlets::Never => "never",
            NewOutlets::Next => "next",
            NewOutlets::Always => "always",
        }
    }
}

impl std::str::FromStr for NewOutlets {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<NewOutlets, String> {
        NewOutlets::ALL
            .into_iter()
            .find(|n| n.as_str() == s.trim())
            .ok_or_else(|| format!("{s:?}: expected never, next or always"))
    }
}

impl Subscriber {
    /// Whether their digest round may run at `now`: never while they are paused; for a
    /// scheduled subscriber, once its time has come (or with `ignore_schedule`); for an
    /// immediate one, always (it takes only what is pending). [`Store::due_digests`]
    /// lists who is due; [`Store::take_digest`] asks again under its lock.
    pub fn digest_due(&self, now: DateTime<Utc>, ignore_schedule: bool) -> bool {
        self.paused_at.is_none()
            && (ignore_schedule
                || self.schedule == Schedule::Immediate
                || self.next_digest_at.is_none_or(|at| at <= now))
    }
}

/// A stored item with its feed, as `tidings match` previews it.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredItem {
    pub feed_id: String,
    pub feed_name: String,
    pub tags: Vec<String>,
    pub title: String,
    pub summary: String,
    pub content: String,
    pub link: Option<String>,
    pub published: Option<DateTime<Utc>>,
    pub first_seen: DateTime<Utc>,
    /// Its language, when known (see [`crate::language`]).
    pub lang: Option<String>,
}

/// What [`Store::prune`] removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pruned {
    /// Items turned into tombstones.
    pub items: usize,
    /// Sent or failed messages deleted from the outbox.
    pub outbox: usize,
    /// Matches deleted with them (every one long since taken by a digest).
    pub matches: usize,
    /// Another instance was pruning the same database: this one left it to it.
    pub skipped: bool,
}

/// What a backup made by [`Store::backup_to`] holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BackupSummary {
    /// Size of the copy.
    pub bytes: u64,
    pub feeds: i64,
    /// Live items (tombstones not counted).
    pub items: i64,
    /// Tombstones of pruned items.
    pub pruned_items: i64,
    pub subscribers: i64,
    /// Messages in the outbox, whatever their status.
    pub outbox: i64,
}

/// A sign-up from the web, before and after confirmation.
#[derive(Debug, Clone, PartialEq)]
pub struct Signup {
    pub email: String,
    pub queries: Vec<String>,
    /// As [`Schedule::parse`] reads it.
    pub frequency: String,
    /// An IANA zone name.
    pub timezone: String,
    pub client: String,
    pub created_at: DateTime<Utc>,
    pub confirmed_at: Option<DateTime<Utc>>,
    /// The language of the page they signed up on: their subscriber's, once confirmed.
    pub locale: String,
}

/// An item a subscription matched, for its Atom feed.
#[derive(Debug, Clone, PartialEq)]
pub struct MatchedItem {
    pub item_id: ItemId,
    pub title: String,
    pub link: Option<String>,
    pub summary: String,
    pub published: Option<DateTime<Utc>>,
    pub matched_at: DateTime<Utc>,
    pub feed_name: String,
}

/// A rendered digest waiting in (or gone from) the outbox.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboxMessage {
    pub id: OutboxId,
    /// `None` once the subscriber was removed (the mail is still sent).
    pub subscriber_id: Option<SubscriberId>,
    pub recipient: String,
    pub message_id: String,
    pub subject: String,
    pub body_text: String,
    pub body_html: String,
    pub created_at: DateTime<Utc>,
    pub status: OutboxStatus,
    pub attempts: u32,
    pub last_error: Option<String>,
    pub next_attempt_at: DateTime<Utc>,
    pub sent_at: Option<DateTime<Utc>>,
    /// The token of the claim that holds the row (see [`Store::claim_mail`]).
    pub claim: Option<String>,
}

/// What `/metrics` and `/healthz` report about stored state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServiceStats {
    pub outbox_pending: i64,
    /// When the oldest pending message was queued.
    pub oldest_pending: Option<DateTime<Utc>>,
    pub feeds_active: i64,
    /// Active feeds whose last poll failed, or that are gone.
    pub feeds_failing: i64,
    pub subscribers: i64,
}

// ---- shared by the backends ----------------------------------------------------------------

/// Sent or failed messages deleted per prune transaction (their bodies are most of the
/// bytes a prune frees).
const PRUNE_OUTBOX_BATCH: usize = 200;
/// Items looked at per prune transaction.
const PRUNE_ITEM_BATCH: usize = 2000;
/// Between prune batches: the lock is free this long, so writers waiting on it (a poll
/// storing items) get it rather than the next batch.
const PRUNE_PAUSE: Duration = Duration::from_millis(50);

/// A lease in whole seconds, rounded up (a lease of 0.5 s must not end at once).
fn lease_secs(lease: Duration) -> i64 {
    i64::try_from(lease.as_secs() + u64::from(lease.subsec_nanos() > 0)).unwrap_or(i64::MAX / 4)
}

fn split_tags(tags: &str) -> Vec<String> {
    tags.split(',')
        .filter(|t| !t.is_empty())
        .map(str::to_string)
        .collect()
}

fn from_unix(secs: i64) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp(secs, 0)
}
