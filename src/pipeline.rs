//! The jobs, each reading top to bottom as the data flow in DESIGN.md:
//! [`poll_feeds`] (claim due feeds → [`refresh_feed`] each: conditional GET → not
//! modified? → parse → store new items and their matches → feed state),
//! [`send_digests`] (due subscribers → digest into the outbox → mail) and [`prune`]
//! (what is past `retention`: old items to tombstones, old mail deleted).
//!
//! The CLI's one-shots (`tidings poll`, `tidings digest`) and the scheduler's ticks call
//! these same functions; tests call them too, with the clock as a parameter.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use chrono::{DateTime, SecondsFormat, Utc};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};
use url::Url;

use crate::article::decode_html;
use crate::config::{Config, Database, MAX_DURATION, Source};
use crate::digest::{
    DigestContext, FailingFeed, RenderedRound, StoryCache, digest_event, render_digest,
};
use crate::fetch::{FetchError, FetchOutcome, Fetched, Fetcher, Validators};
use crate::mail::{self, Delivery, Mailer};
use crate::matcher::{Document, Matcher, Query, Scope, Synonyms};
use crate::metrics::{Metrics, PollResult};
use crate::page::Compared;
use crate::parse::{Item, ParsedFeed, body_hash, body_text, parse_feed};
use crate::push::{self, PushRound, Pusher};
use crate::store::{
    FeedListSync, FeedListVersion, FeedToPoll, FetchLimits, FetchSlot, Prepared, Pruned, Store,
    StoreOutcome, Subscriber, SubscriberId, SubscriptionId, SuccessfulPoll, UnchangedPoll,
};
use crate::token::{Links, Signer};

mod articles;
pub use articles::{ARTICLE_TRIES, ArticleSummary, fetch_articles};

/// How long a worker may hold a feed it claimed before another may take it
/// (`poll.claim_lease`). The claim is renewed right before the fetch, so waiting for a
/// connection slot does not count.
pub fn poll_lease(poll: &crate::config::PollSettings) -> Duration {
    poll.claim_lease
}

/// A matcher compiled over the subscriptions of one generation
/// ([`Store::subscriptions_generation`]).
pub struct CompiledMatcher {
    pub generation: i64,
    pub matcher: Matcher,
}

/// Everything a job needs: the config and the three edges (database, HTTP, mail).
#[derive(Clone)]
pub struct App {
    pub config: Arc<Config>,
    /// Counters the admin listener exports; shared across config reloads.
    pub metrics: Arc<Metrics>,
    /// Tells the jobs to wind down; shared across config reloads.
    pub shutdown: Shutdown,
    /// The process's one mail sender; shared across config reloads.
    pub sender: mail::Sender,
    /// The password of the web admin page (`TIDINGS_ADMIN_TOKEN`); `None` = no page.
    pub admin_token: Option<Arc<str>>,
    pub synonyms: Arc<Synonyms>,
    /// What tells new items' languages.
    pub languages: Arc<crate::language::Detector>,
    pub store: Store,
    pub fetcher: Fetcher,
    pub mailer: Mailer,
    /// Signed links for mail (unsubscribe).
    pub links: Links,
    /// The last compiled matcher (see [`App::current_matcher`]).
    matcher: Arc<std::sync::Mutex<Option<Arc<CompiledMatcher>>>>,
    /// Connection slots shared by every poll cycle running at once.
    poll_slots: Arc<PollSlots>,
    /// Held by the process's one destination-sending round ([`send_push`]).
    push_running: Arc<tokio::sync::Mutex<()>>,
}

/// `poll.concurrency` fetches in all and `poll.per_host` per host, shared by the poll
/// cycles that overlap (a slow feed may still be in flight when the next cycle starts),
/// so together they stay within the limits.
struct PollSlots {
    concurrency: usize,
    per_host: usize,
    global: Arc<Semaphore>,
    hosts: std::sync::Mutex<HashMap<String, Arc<Semaphore>>>,
}

impl PollSlots {
    fn new(concurrency: usize, per_host: usize) -> PollSlots {
        PollSlots {
            concurrency,
            per_host,
            global: Arc::new(Semaphore::new(concurrency)),
            hosts: std::sync::Mutex::default(),
        }
    }

    fn host(&self, host: String) -> Arc<Semaphore> {
        let mut hosts = self.hosts.lock().unwrap_or_else(|p| p.into_inner());
        hosts
            .entry(host)
            .or_insert_with(|| Arc::new(Semaphore::new(self.per_host)))
            .clone()
    }
}

impl App {
    /// Opens the database (migrating it), makes its feed list match the config, and
    /// builds the HTTP client and the mailer.
    pub async fn open(config: Config) -> Result<App> {
        let synonyms = config
            .matcher_synonyms()
            .map_err(|e| anyhow::anyhow!("{}: {e}", config.path.display()))?;
        let languages = Arc::new(config.language_detector());
        let store = Store::open_database(&config.database).await?;
        sync_feed_list(&store, &config).await?;
        for problem in sync_destinations(&store, &config).await? {
            warn!("{problem}");
        }
        let fetcher = Fetcher::new(&config.poll)?;
        let signer = match &config.database {
            Database::Sqlite(_) => Signer::load_or_create(&config.web.secret_file)?,
            Database::Postgres(_) => shared_signer(&store, &config.web.secret_file).await?,
        };
        let links = Links::new(config.web.base_url.clone(), signer);
        let mailer = Mailer::new(&config.mail, Some(links.clone()))?;
        let poll_slots = Arc::new(PollSlots::new(
            config.poll.concurrency,
            config.poll.per_host,
        ));
        Ok(App {
            links,
            poll_slots,
            config: Arc::new(config),
            synonyms: Arc::new(synonyms),
            languages,
            store,
            fetcher,
            mailer,
            matcher: Arc::default(),
            push_running: Arc::default(),
            metrics: Arc::default(),
            shutdown: Shutdown::default(),
            sender: mail::Sender::default(),
            admin_token: admin_token_from_env()?,
        })
    }

    /// The same database, signing key, metrics and shutdown signal with a new config:
    /// the feed table is synced (added feeds are due now, removed ones stop), a feed
    /// whose interval got shorter is due no later than its last poll plus the new
    /// interval, and the HTTP client, mailer and matcher are rebuilt. The database and
    /// the signing key cannot move while running: their old values are kept (the caller
    /// warns about that).
    pub async fn reconfigure(&self, mut config: Config) -> Result<App> {
        config.database = self.config.database.clone();
        config.web.secret_file = self.config.web.secret_file.clone();
        let synonyms = config
            .matcher_synonyms()
            .map_err(|e| anyhow::anyhow!("{}: {e}", config.path.display()))?;
        let languages = Arc::new(config.language_detector());
        let fetcher = Fetcher::new(&config.poll)?;
        let links = self.links.with_base_url(config.web.base_url.clone());
        let mailer = Mailer::new(&config.mail, Some(links.clone()))?;
        let applied = sync_feed_list(&self.store, &config).await? == FeedListSync::Applied;
        for problem in sync_destinations(&self.store, &config).await? {
            warn!("{problem}");
        }
        for feed in config.feeds.iter().filter(|_| applied) {
            let old = self.config.feed(&feed.id);
            if old.is_some_and(|old| old.url == feed.url && feed.interval < old.interval)
                && let Some(last) = self.store.last_poll_at(&feed.id).await?
            {
                self.store
                    .poll_no_later_than(&feed.id, last + to_chrono(feed.interval))
                    .await?;
            }
        }
        // Cycles still running keep the slots they started with.
        let poll_slots = if (self.poll_slots.concurrency, self.poll_slots.per_host)
            == (config.poll.concurrency, config.poll.per_host)
        {
            self.poll_slots.clone()
        } else {
            Arc::new(PollSlots::new(
                config.poll.concurrency,
                config.poll.per_host,
            ))
        };
        Ok(App {
            poll_slots,
            config: Arc::new(config),
            metrics: self.metrics.clone(),
            shutdown: self.shutdown.clone(),
            sender: self.sender.clone(),
            admin_token: self.admin_token.clone(),
            synonyms: Arc::new(synonyms),
            languages,
            store: self.store.clone(),
            fetcher,
            mailer,
            links,
            matcher: Arc::default(),
            push_running: self.push_running.clone(),
        })
    }
}

/// The link-signing key every instance on a shared database uses: `TIDINGS_SECRET` when
/// set, else the one stored in the database, which the first instance stores: the secret
/// file's, if this instance has one (a deployment moved from SQLite keeps its links
/// working), or a new random one.
async fn shared_signer(store: &Store, secret_file: &std::path::Path) -> Result<Signer> {
    if let Some(signer) = Signer::from_env() {
        return signer;
    }
    let candidate = match Signer::read_file(secret_file)? {
        Some(secret) => secret,
        None => crate::token::random_secret()?,
    };
    let secret = store
        .setting_or_insert(LINK_SECRET_SETTING, &candidate)
        .await
        .context("reading the shared signing secret")?;
    Signer::new(secret.as_bytes()).context("the signing secret stored in the database")
}

/// The database setting that holds the shared link-signing secret.
pub const LINK_SECRET_SETTING: &str = "link_secret";

/// Proposes the config's feed list to the database ([`Store::sync_feed_list`]): applied
/// unless the database holds a list from a config written later, which is kept, with a
/// warning (this instance then polls the database's list).
pub async fn sync_feed_list(store: &Store, config: &Config) -> Result<FeedListSync> {
    let host =
        hostname::get().map_or_else(|_| "unknown".into(), |h| h.to_string_lossy().into_owned());
    let version = FeedListVersion {
        fingerprint: config.feed_list_fingerprint(),
        // A file dated in the future (a clock that was wrong, `touch -d`) was written now
        // at the latest: it must not stay "the newest" until that date.
        written_at: config
            .written_at
            .map_or(DateTime::UNIX_EPOCH, DateTime::<Utc>::from)
            .min(store.now()),
        written_by: format!("{host}:{}", config.path.display()),
    };
    let outcome = store
        .sync_feed_list(&config.feeds, version)
        .await
        .context("syncing feeds from config")?;
    if let FeedListSync::Kept {
        written_at,
        written_by,
    } = &outcome
    {
        warn!(config = %config.path.display(), newer = %written_by,
              written = %written_at.to_rfc3339_opts(SecondsFormat::Secs, true),
              "the feed list in the database comes from a config written later than this one: \
               it is kept, and polled; update this config to match");
    }
    Ok(outcome)
}

/// Name of the environment variable holding the web admin page's password.
pub const ADMIN_TOKEN_ENV: &str = "TIDINGS_ADMIN_TOKEN";

/// The admin password from the environment: unset or empty turns the page off; a short
/// one is refused (it guards subscriber addresses).
/// Makes the destinations config.toml keeps (`[[destinations]]`) the database's: new ones
/// added, changed ones replaced, ones gone from the file removed; each takes the
/// searches it names. Destinations subscribers or admins added otherwise are left alone.
/// Returns what could not be done (an unknown subscriber or search, a name taken), for
/// the caller to log.
pub async fn sync_destinations(store: &Store, config: &Config) -> Result<Vec<String>> {
    use crate::store::{ChannelOrigin, NewChannel};
    let mut problems = Vec::new();
    let mut kept = HashSet::new();
    let existing = store.channels(None).await?;
    let now = store.now();
    for d in &config.destinations {
        let what = format!("[[destinations]] {:?} of {}", d.name, d.subscriber);
        let Some(who) = store.subscriber(&d.subscriber).await? else {
            problems.push(format!(
                "{what}: no such subscriber (add them with `tidings subscriber add`)"
            ));
            continue;
        };
        let target = match push::config_target(d) {
            Ok(target) => target,
            Err(e) => {
                problems.push(format!("{what}: {e}"));
                continue;
            }
        };
        let searches_of = store.subscriptions_of(who.id).await?;
        let mut searches = Vec::new();
        for query in &d.searches {
            match searches_of.iter().find(|(_, q)| q.trim() == query) {
                Some((id, _)) => searches.push(*id),
                None => problems.push(format!("{what}: {} has no search {query:?}", d.subscriber)),
            }
        }
        if !d.searches.is_empty() && searches.is_empty() {
            // Every search it was for is gone: it takes none, never all.
            problems.push(format!(
                "{what}: none of its searches exist; it takes nothing"
            ));
        }
        let every_search = d.searches.is_empty();
        let target_json = serde_json::to_string(&target)?;
        let same_name = existing
            .iter()
            .find(|c| c.subscriber_id == who.id && c.name == d.name);
        let id = match same_name {
            Some(c) if c.added_by != ChannelOrigin::Config => {
                problems.push(format!(
                    "{what}: the subscriber has a destination of that name already"
                ));
                continue;
            }
            Some(c) => {
                // Changed in place: what waits for it goes to the new target.
                if c.target != target_json || c.secret_env != d.secret_env {
                    store
                        .update_channel(c.id, target.kind(), &target_json, d.secret_env.as_deref())
                        .await?;
                }
                c.id
            }
            None => {
                store
                    .add_channel(
                        NewChannel {
                            subscriber_id: who.id,
                            name: d.name.clone(),
                            kind: target.kind(),
                            target: target_json,
                            secret: None,
                            secret_env: d.secret_env.clone(),
                            added_by: ChannelOrigin::Config,
                            confirm_code: None,
                            every_search,
                            searches: searches.clone(),
                            limits: None,
                            verification: None,
                        },
                        now,
                    )
                    .await?
            }
        };
        store
            .set_channel_searches(id, every_search, searches)
            .await?;
        kept.insert(id);
    }
    for c in existing
        .iter()
        .filter(|c| c.added_by == crate::store::ChannelOrigin::Config && !kept.contains(&c.id))
    {
        info!(channel = c.id.0, name = %c.name, "destination no longer in config.toml: removed");
        store.remove_channel(c.id).await?;
    }
    Ok(problems)
}

fn admin_token_from_env() -> Result<Option<Arc<str>>> {
    match std::env::var(ADMIN_TOKEN_ENV) {
        Ok(t) if t.trim().is_empty() => Ok(None),
        Ok(t) if t.trim().len() < 16 => {
            anyhow::bail!("{ADMIN_TOKEN_ENV} must be at least 16 characters (or unset)")
        }
        Ok(t) => Ok(Some(Arc::from(t.trim()))),
        Err(_) => Ok(None),
    }
}

/// The two steps of a shutdown. `draining`: start nothing new (feeds not yet fetched
/// are released, no further digest is queued or mail claimed) and let work in progress
/// finish. `abort`: the deadline passed; fetches still running are dropped and their
/// feeds released. Every database write is one transaction, so either leaves the
/// database consistent.
#[derive(Clone, Default)]
pub struct Shutdown {
    pub draining: CancellationToken,
    pub abort: CancellationToken,
}

/// The log target of the one line each feed's poll writes ("feed polled", "feed poll
/// failed"), so that a command reporting each feed itself can leave them out.
pub const FEED_LOG: &str = "tidings::pipeline::feed";

/// Sees each feed of a poll cycle as it finishes (a progress bar, say).
pub trait PollObserver: Sync {
    /// The cycle claimed this many feeds.
    fn started(&self, _feeds: usize) {}
    /// One feed is done (`None`: skipped because of shutdown). A poll whose result could
    /// not be written to the database is `Failed` with the kind `database`.
    fn finished(&self, _feed: &str, _outcome: Option<&FeedOutcome>) {}
}

impl PollObserver for () {}

impl App {
    /// The matcher over all subscriptions, compiled again only when their generation
    /// moved (a change from any process bumps it).
    pub async fn current_matcher(&self) -> Result<Arc<CompiledMatcher>> {
        let generation = self.store.subscriptions_generation().await?;
        if let Some(m) = self
            .matcher
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            && m.generation == generation
        {
            return Ok(m.clone());
        }
        let compiled = Arc::new(load_matcher(&self.store, &self.synonyms).await?);
        *self.matcher.lock().unwrap_or_else(|p| p.into_inner()) = Some(compiled.clone());
        Ok(compiled)
    }
}

/// What one poll cycle did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PollSummary {
    pub feeds: usize,
    /// Claimed but not polled because the daemon is shutting down.
    pub skipped: usize,
    pub updated: usize,
    pub not_modified: usize,
    /// Failed, whatever the cause (those of `unrecorded` included).
    pub failed: usize,
    /// Of `failed`: fetched, but the database would not take the result (full, read
    /// only, away). A local failure, not the feed's: polled again once it can be written.
    pub unrecorded: usize,
    /// Why the first of `unrecorded` could not be written.
    pub unrecorded_error: Option<String>,
    /// A poll of all feeds: those it left alone because another poll (another process,
    /// or one that died) holds them, and when the last of those claims ends.
    pub held_elsewhere: usize,
    pub held_until: Option<DateTime<Utc>>,
    pub new_items: usize,
    pub updated_items: usize,
    pub matches: usize,
}

impl PollSummary {
    /// An error when some polls could not be written to the database (a local
    /// failure: `tidings poll` exits non-zero), saying how many and why.
    pub fn local_failure(&self) -> Option<anyhow::Error> {
        (self.unrecorded > 0).then(|| {
            anyhow::anyhow!(
                "the database did not take the polls of {} ({}); what it took is kept, and \
                 the next poll fetches the rest again once it can be written",
                crate::output::count(self.unrecorded, "feed"),
                self.unrecorded_error
                    .as_deref()
                    .unwrap_or("no reason given"),
            )
        })
    }
}

/// One claimed feed's poll once it holds this instance's connection slots: takes the
/// cluster's slot, renews the claim, polls, gives the slot back. `None`: not polled
/// (shutting down).
async fn poll_in_slot(
    app: &App,
    feed: FeedToPoll,
    host: &str,
    matcher: &Arc<CompiledMatcher>,
    now: DateTime<Utc>,
    started: Instant,
) -> Option<Result<FeedOutcome>> {
    let Shutdown { draining, abort } = &app.shutdown;
    let id = feed.id.clone();
    // The same limits for every instance on the database together. A try for a slot is
    // never cut short (the database would finish it, and the slot would stay taken until
    // its lease ran out).
    let cluster = match cluster_slot(app, host, draining).await {
        Ok(Some(token)) => token,
        Ok(None) => return None,
        Err(e) => return Some(Err(e)),
    };
    if draining.is_cancelled() {
        if let Err(e) = app.store.release_fetch_slot(&cluster).await {
            giving_back_failed("a connection slot", &id, &e);
        }
        return None;
    }
    let polled = async {
        // The wait for a slot may have outlasted the lease: renew it, or leave the feed to
        // whoever claimed it since.
        let at = now + to_chrono(started.elapsed());
        let lease = poll_lease(&app.config.poll);
        match app.store.renew_feed_claim(&feed, at, lease).await {
            Ok(true) => {}
            Ok(false) => {
                warn_if_lost(false, &id);
                return Some(Ok(FeedOutcome::TakenOver));
            }
            Err(e) => return Some(Err(e)),
        }
        tokio::select! {
            biased;
            _ = abort.cancelled() => None,
            outcome = refresh_feed_guarded(app, feed, matcher, now) => Some(outcome),
        }
    };
    let outcome = polled.await;
    // Given back whatever happened; if it cannot be (the database is away), its lease
    // ends it.
    if let Err(e) = app.store.release_fetch_slot(&cluster).await {
        giving_back_failed("a connection slot", &id, &e);
    }
    outcome
}

/// Logs that `what` (a feed's claim, a connection slot) could not be given back after
/// the work `of` (a feed, a link): a warning, unless the database cannot be written,
/// which the store says once for everything (and gives it back as soon as it can).
pub(crate) fn giving_back_failed(what: &str, of: &str, e: &anyhow::Error) {
    if crate::store::unavailable(e).is_some() {
        debug!(of, error = %format!("{e:#}"), "giving back {what}: the database cannot be written");
    } else {
        warn!(of, error = %format!("{e:#}"), "giving back {what}");
    }
}

/// How one feed's poll went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FeedOutcome {
    Updated {
        new_items: usize,
        updated_items: usize,
        matches: usize,
    },
    NotModified,
    Failed {
        kind: String,
        error: String,
    },
    /// Another worker claimed the feed while this one waited (its lease ran out): it
    /// polls the feed, this one did nothing.
    TakenOver,
}

/// Polls the active feeds (all of them, or only those due), at most
/// `poll.concurrency` at a time and `poll.per_host` per host, counting every cycle of
/// this [`App`] running at once. A task waits for its host's permit before it takes a
/// global one, so one slow host never holds up the others. One feed failing never stops
/// the others.
pub async fn poll_feeds(app: &App, now: DateTime<Utc>, only_due: bool) -> Result<PollSummary> {
    poll_feeds_observed(app, now, only_due, &()).await
}

/// [`poll_feeds`], telling `observer` about each feed as it finishes. On shutdown
/// ([`Shutdown`]), feeds still waiting for a connection slot are released unpolled.
pub async fn poll_feeds_observed(
    app: &App,
    now: DateTime<Utc>,
    only_due: bool,
    observer: &dyn PollObserver,
) -> Result<PollSummary> {
    let started = Instant::now();
    let lease = poll_lease(&app.config.poll);
    // Daemon cycles take due feeds in batches as connection slots free up, so instances
    // sharing the database share them; `tidings poll` (all feeds) takes them at once.
    let batch = (app.config.poll.concurrency * 2).max(16);
    let mut summary = PollSummary::default();
    let mut feeds = if only_due {
        app.store
            .claim_due_feeds(now, lease, batch)
            .await
            .context("claiming the feeds to poll")?
    } else {
        // Claimed elsewhere, these are left alone: counted first, so that none of this
        // poll's own claims count.
        (summary.held_elsewhere, summary.held_until) = app
            .store
            .claims_held(now)
            .await
            .context("claiming the feeds to poll")?;
        app.store
            .claim_feeds(now, lease, false)
            .await
            .context("claiming the feeds to poll")?
    };
    let mut more = only_due && feeds.len() == batch;
    summary.feeds = feeds.len();
    if feeds.is_empty() {
        return Ok(summary);
    }
    observer.started(feeds.len());
    let matcher = app.current_matcher().await?;

    let global = app.poll_slots.global.clone();
    let mut jobs = JoinSet::new();
    let mut seen = HashSet::new();
    loop {
        for feed in feeds.drain(..) {
            seen.insert(feed.id.clone());
            let host = Url::parse(&feed.url)
                .ok()
                .and_then(|u| u.host_str().map(str::to_ascii_lowercase))
                .unwrap_or_default();
            let per_host = app.poll_slots.host(host.clone());
            let (app, matcher, global) = (app.clone(), matcher.clone(), global.clone());
            jobs.spawn(async move {
                let id = feed.id.clone();
                let claimed = feed.clone();
                let draining = app.shutdown.draining.clone();
                let work = async {
                    let _host = tokio::select! {
                        biased;
                        _ = draining.cancelled() => return None,
                        p = per_host.acquire_owned() => p,
                    };
                    let _slot = tokio::select! {
                        biased;
                        _ = draining.cancelled() => return None,
                        p = global.acquire_owned() => p,
                    };
                    // Boxed, and only now: a task still waiting for its slots stays
                    // small (a cycle spawns one for every feed it claimed at once).
                    Box::pin(poll_in_slot(&app, feed, &host, &matcher, now, started)).await
                };
                let outcome = work.await;
                if matches!(outcome, None | Some(Err(_))) {
                    // Not polled, or its result could not be written: due again at once (the
                    // next start, the next tick), not after the lease.
                    if let Err(e) = Box::pin(app.store.release_claim(&claimed)).await {
                        giving_back_failed("the feed", &id, &e);
                    }
                }
                (id, outcome)
            });
        }
        if more && jobs.len() < app.config.poll.concurrency && !app.shutdown.draining.is_cancelled()
        {
            let want = batch - jobs.len();
            let claimed = app.store.claim_due_feeds(now, lease, want).await?;
            more = claimed.len() == want;
            for feed in claimed {
                if seen.contains(&feed.id) {
                    // Due again in the same cycle (its poll could not be written): the
                    // next tick tries it, not this cycle again.
                    more = false;
                    if let Err(e) = app.store.release_claim(&feed).await {
                        giving_back_failed("the feed", &feed.id, &e);
                    }
                } else {
                    feeds.push(feed);
                }
            }
            summary.feeds += feeds.len();
            if !feeds.is_empty() {
                continue;
            }
        }
        let Some(joined) = jobs.join_next().await else {
            break;
        };
        let (id, outcome) = match joined {
            Ok(done) => done,
            Err(e) => {
                error!(error = %e, "poll task crashed");
                summary.failed += 1;
                continue;
            }
        };
        // A poll whose result could not be written failed like any other, and is said so
        // (it was released, so the next cycle polls it again).
        let outcome = outcome.map(|result| {
            result.unwrap_or_else(|e| {
                let error = format!("{e:#}");
                if crate::store::unavailable(&e).is_some() {
                    // The store's write health says so once, not once a feed a tick.
                    debug!(target: FEED_LOG, feed = %id, error = %error, "could not record poll");
                } else {
                    error!(target: FEED_LOG, feed = %id, error = %error, "could not record poll");
                }
                FeedOutcome::Failed {
                    kind: "database".to_string(),
                    error: format!("the poll could not be recorded: {error}"),
                }
            })
        });
        observer.finished(&id, outcome.as_ref());
        match outcome {
            None | Some(FeedOutcome::TakenOver) => summary.skipped += 1,
            Some(FeedOutcome::Updated {
                new_items,
                updated_items,
                matches,
            }) => {
                summary.updated += 1;
                summary.new_items += new_items;
                summary.updated_items += updated_items;
                summary.matches += matches;
            }
            Some(FeedOutcome::NotModified) => summary.not_modified += 1,
            Some(FeedOutcome::Failed { kind, error }) => {
                summary.failed += 1;
                if kind == "database" {
                    summary.unrecorded += 1;
                    summary.unrecorded_error.get_or_insert(error);
                }
            }
        }
    }
    Ok(summary)
}

/// [`refresh_feed`], with a panic anywhere inside it recorded on the feed as a failure
/// (kind `internal`) like any other: counted, named in status and digests, its failure
/// count kept, never lost.
async fn refresh_feed_guarded(
    app: &App,
    feed: FeedToPoll,
    matcher: &Arc<CompiledMatcher>,
    now: DateTime<Utc>,
) -> Result<FeedOutcome> {
    let started = Instant::now();
    let copy = feed.clone();
    match guard_panics(refresh_feed(app, feed, matcher, now)).await {
        Ok(Ok(outcome)) => Ok(outcome),
        // The database could not be written at all (its disk full, read-only, away): not
        // the feed's fault, so no failure and no backoff; the caller releases the feed,
        // due again at the next tick, and the store's write health says so once.
        Ok(Err(e)) if crate::store::unavailable(&e).is_some() => Err(e),
        // The database refused the poll's result (one item it cannot hold, a constraint):
        // a failure like any other, with its backoff, so the feed is not fetched again
        // every tick. Should that be refused too (the database is away), the caller
        // releases the feed and says so.
        Ok(Err(e)) => {
            let error = format!("the poll could not be recorded: {e:#}");
            let kind = failure_kind(&e);
            match record_failure(app, &copy, now, kind, error, None, started).await {
                Ok(outcome) => Ok(outcome),
                Err(_) => Err(e),
            }
        }
        Err(why) => {
            error!(feed = %copy.id, error = %why, "poll panicked; recorded as a failure");
            let error = format!("internal error: {why}");
            record_failure(app, &copy, now, "internal", error, None, started).await
        }
    }
}

/// The kind a poll's failure to be recorded is filed under: `database` when the database
/// refused it, `internal` for anything else (a task that died, subscriptions that kept
/// changing).
fn failure_kind(error: &anyhow::Error) -> &'static str {
    let database = error.chain().any(|cause| {
        cause.is::<rusqlite::Error>() || cause.is::<postgres::Error>() || cause.is::<r2d2::Error>()
    });
    if database { "database" } else { "internal" }
}

/// Runs `work`, turning a panic inside it into an error with the panic's message.
async fn guard_panics<T>(work: impl Future<Output = T>) -> Result<T, String> {
    use futures_util::FutureExt as _;
    std::panic::AssertUnwindSafe(work)
        .catch_unwind()
        .await
        .map_err(|panic| {
            panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "panic".to_string())
        })
}

/// Waits for one of the cluster's connection slots for `host` ([`Store::acquire_fetch_slot`]:
/// `poll.per_host` and `poll.concurrency` for every instance together), asking again
/// with a growing pause (20 ms to 1 s) while they are all taken; `None` when `draining`
/// fires during a pause. Slots are about real connections: their leases run on the
/// cluster's clock, whatever time the cycle polls at.
async fn cluster_slot(
    app: &App,
    host: &str,
    draining: &CancellationToken,
) -> Result<Option<FetchSlot>> {
    let limits = FetchLimits {
        per_host: app.config.poll.per_host,
        concurrency: app.config.poll.concurrency,
    };
    cluster_slot_within(app, host, limits, draining).await
}

/// [`cluster_slot`] within `limits` (articles leave one of a host's slots to polls).
async fn cluster_slot_within(
    app: &App,
    host: &str,
    limits: FetchLimits,
    draining: &CancellationToken,
) -> Result<Option<FetchSlot>> {
    let lease = poll_lease(&app.config.poll);
    let mut pause = Duration::from_millis(20);
    loop {
        if let Some(token) = app
            .store
            .acquire_fetch_slot(host, limits, app.store.now(), lease)
            .await?
        {
            return Ok(Some(token));
        }
        tokio::select! {
            biased;
            _ = draining.cancelled() => return Ok(None),
            _ = tokio::time::sleep(pause) => {}
        }
        pause = (pause * 2).min(Duration::from_secs(1));
    }
}

/// Compiles every stored subscription. A query that no longer parses (written by an
/// older version, say) is skipped with a warning rather than stopping all matching.
pub async fn load_matcher(store: &Store, synonyms: &Synonyms) -> Result<CompiledMatcher> {
    let active = store.subscriptions().await?;
    let mut compiled = Vec::with_capacity(active.queries.len());
    for (id, text) in active.queries {
        match Query::parse(&text) {
            // The matcher's ids are plain numbers; they come back as subscriptions'.
            Ok(q) if active.crossing.binary_search(&id).is_ok() => {
                compiled.push((id.0, q.across_languages(synonyms)));
            }
            Ok(q) => compiled.push((id.0, q)),
            Err(e) => warn!(subscription = id.0, query = %text, error = %e, "skipping bad query"),
        }
    }
    Ok(CompiledMatcher {
        generation: active.generation,
        matcher: Matcher::new(compiled, synonyms),
    })
}

/// A stored search naming feeds or tags the config does not have (any more): nothing
/// of theirs can reach it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DanglingSearch {
    pub email: String,
    pub query: String,
    /// The `feed:` and `tag:` it names that the config does not have.
    pub unknown: Vec<Scope>,
}

impl std::fmt::Display for DanglingSearch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<String> = self.unknown.iter().map(Scope::to_string).collect();
        write!(
            f,
            "search {:?} of {} names {}, which the config does not have",
            self.query,
            self.email,
            names.join(", ")
        )
    }
}

/// The searches of `subscribers` (paused ones too) that name feeds or tags `config` does
/// not have ([`Config::unknown_scopes`]), say after a reload removed a feed. New searches
/// are refused such names; these were stored before. A search that does not parse is
/// left out (the matcher skips it, and says so).
pub fn dangling_searches(config: &Config, subscribers: &[Subscriber]) -> Vec<DanglingSearch> {
    let mut found = Vec::new();
    for s in subscribers {
        for text in &s.queries {
            let Ok(query) = Query::parse(text) else {
                continue;
            };
            let unknown = config.unknown_scopes(&query);
            if !unknown.is_empty() {
                found.push(DanglingSearch {
                    email: s.email.clone(),
                    query: text.clone(),
                    unknown,
                });
            }
        }
    }
    found
}

/// One feed, start to finish: conditional GET (unconditional every
/// `poll.full_fetch_every`) → not modified? → parse → store new items and their matches
/// → feed state and next poll time. Fetch and parse failures are recorded on the feed and
/// returned as [`FeedOutcome::Failed`]; only a database failure is an `Err`.
pub async fn refresh_feed(
    app: &App,
    feed: FeedToPoll,
    matcher: &Arc<CompiledMatcher>,
    now: DateTime<Utc>,
) -> Result<FeedOutcome> {
    let started = Instant::now();
    let poll = &app.config.poll;
    let (interval, full_fetch) = poll_plan(&feed, poll, now);
    let validators = if full_fetch {
        Validators::default()
    } else {
        Validators {
            etag: feed.etag.clone(),
            last_modified: feed.last_modified.clone(),
        }
    };

    let fetched = match Url::parse(&feed.url) {
        Err(e) => {
            let error = format!("bad url: {e}");
            return record_failure(app, &feed, now, "config", error, None, started).await;
        }
        Ok(url) => app.fetcher.fetch_feed(&url, &validators).await,
    };
    let fetched = match fetched {
        Ok(FetchOutcome::NotModified(meta)) => {
            let next_poll_at = now
                + next_interval(
                    interval,
                    meta.max_age,
                    None,
                    poll.max_backoff,
                    &feed.id,
                    now,
                );
            let moved_to = meta.moved_to.as_ref().map(Url::to_string);
            let recorded = app
                .store
                .record_not_modified(&feed, now, next_poll_at, moved_to.as_deref())
                .await?;
            warn_if_lost(recorded, &feed.id);
            report_move(&feed, meta.moved_to.as_ref());
            info!(target: FEED_LOG, feed = %feed.id, status = "not-modified", new = 0, matched = 0,
                  ms = started.elapsed().as_millis() as u64, "feed polled");
            app.metrics.poll(
                PollResult::NotModified,
                started.elapsed().as_secs_f64(),
                0,
                0,
                0,
            );
            return Ok(FeedOutcome::NotModified);
        }
        Ok(FetchOutcome::Fetched(f)) => f,
        Err(FetchError::Gone) => {
            let error = FetchError::Gone.to_string();
            let recorded = app.store.record_gone(&feed, now, &error).await?;
            warn_if_lost(recorded, &feed.id);
            error!(feed = %feed.id, url = %feed.url, status = "gone",
                   "feed is gone (HTTP 410): polling stopped; remove it or give it a new url");
            app.metrics
                .poll(PollResult::Failed, started.elapsed().as_secs_f64(), 0, 0, 0);
            return Ok(FeedOutcome::Failed {
                kind: "gone".into(),
                error,
            });
        }
        Err(e) => {
            let retry_at = match &e {
                FetchError::Throttled {
                    retry_after: Some(r),
                    ..
                } => Some(r.at(now)),
                _ => None,
            };
            let kind = e.kind().to_string();
            return record_failure(app, &feed, now, &kind, e.to_string(), retry_at, started).await;
        }
    };

    ingest_from(app, feed, fetched, matcher, now, started).await
}

/// The interval a feed is polled at, and whether this poll is a full fetch (no
/// conditional request: the body is read whatever the validators say).
fn poll_plan(
    feed: &FeedToPoll,
    poll: &crate::config::PollSettings,
    now: DateTime<Utc>,
) -> (Duration, bool) {
    let interval = feed.interval.unwrap_or(poll.interval);
    let full_fetch = feed.last_full_fetch_at.is_none_or(|t| {
        now - t
            >= chrono::Duration::from_std(poll.full_fetch_every).unwrap_or(chrono::Duration::MAX)
    });
    (interval, full_fetch)
}

/// What a poll does with a fetched body: parses it (on the blocking pool), stores its
/// items and their matches, records the poll. `feed` must be claimed by this process.
/// [`refresh_feed`] after its fetch; public for the ingest benchmark
/// (`examples/ingest_bench.rs`), which hands it bodies from memory.
pub async fn ingest(
    app: &App,
    feed: FeedToPoll,
    fetched: Fetched,
    matcher: &Arc<CompiledMatcher>,
    now: DateTime<Utc>,
) -> Result<FeedOutcome> {
    ingest_from(app, feed, fetched, matcher, now, Instant::now()).await
}

async fn ingest_from(
    app: &App,
    feed: FeedToPoll,
    fetched: Fetched,
    matcher: &Arc<CompiledMatcher>,
    now: DateTime<Utc>,
    started: Instant,
) -> Result<FeedOutcome> {
    let poll = &app.config.poll;
    let (interval, full_fetch) = poll_plan(&feed, poll, now);
    let baseline_cutoff = before(now, poll.initial_backlog);
    let (hash, parsed, prepared) = {
        let body = fetched.body;
        let baseline = feed.baseline_at.is_none();
        let languages = app.languages.clone();
        let content_type = fetched.content_type.clone();
        let base = fetched.final_url.clone();
        let last = feed.body_hash.clone();
        let (source, snapshot, name, failures) = (
            feed.options.source.clone(),
            feed.snapshot.clone(),
            feed.id.clone(),
            feed.consecutive_failures,
        );
        tokio::task::spawn_blocking(move || {
            let hash = body_hash(&body, content_type.as_deref(), &base);
            // The body stored last time (a server that ignores conditional requests):
            // nothing in it can be new.
            let parsed = (last.as_deref() != Some(hash.as_str())).then(|| {
                let page = Page {
                    body: &body,
                    content_type: content_type.as_deref(),
                    base: &base,
                    name: &name,
                    failures,
                };
                read_body(page, &source, snapshot.as_deref(), now)
            });
            // On the baseline poll every item is new: those that can be alerted get
            // their story terms and language here, in parallel with other polls, not in
            // the store's write transaction (see `SuccessfulPoll::prepared`).
            let prepared: Arc<[Option<Prepared>]> = match &parsed {
                Some(Ok((feed, _))) if baseline => feed
                    .items
                    .iter()
                    .map(|item| {
                        item.published
                            .is_some_and(|p| p >= baseline_cutoff)
                            .then(|| Prepared::of(item, &languages))
                    })
                    .collect(),
                _ => Arc::new([]),
            };
            (hash, parsed, prepared)
        })
        .await?
    };
    let (parsed, snapshot) = match parsed {
        Some(Ok(p)) => p,
        Some(Err((kind, error))) => {
            return record_failure(app, &feed, now, kind, error, None, started).await;
        }
        None => {
            let next_poll_at = now
                + next_interval(
                    interval,
                    fetched.meta.max_age,
                    None,
                    poll.max_backoff,
                    &feed.id,
                    now,
                );
            let moved_to = fetched.meta.moved_to.as_ref().map(Url::to_string);
            let unchanged = UnchangedPoll {
                etag: fetched.validators.etag,
                last_modified: fetched.validators.last_modified,
                full_fetch,
                moved_to,
                now,
                next_poll_at,
            };
            let recorded = app.store.record_unchanged(&feed, unchanged).await?;
            warn_if_lost(recorded, &feed.id);
            report_move(&feed, fetched.meta.moved_to.as_ref());
            info!(target: FEED_LOG, feed = %feed.id, status = "not-modified", same_body = true, new = 0, matched = 0,
                  full = full_fetch, ms = started.elapsed().as_millis() as u64, "feed polled");
            app.metrics.poll(
                PollResult::NotModified,
                started.elapsed().as_secs_f64(),
                0,
                0,
                0,
            );
            return Ok(FeedOutcome::NotModified);
        }
    };

    let ttl = parsed
        .ttl
        .map(|minutes| Duration::from_secs(u64::from(minutes) * 60));
    let next_poll_at = now
        + next_interval(
            interval,
            fetched.meta.max_age,
            ttl,
            poll.max_backoff,
            &feed.id,
            now,
        );
    report_move(&feed, fetched.meta.moved_to.as_ref());
    let moved_to = fetched.meta.moved_to.as_ref().map(Url::to_string);
    let feed_id = feed.id.clone();
    let baseline = feed.baseline_at.is_none();
    let repairs = parsed.repairs.len();
    // The database's feed list, not this instance's config: every instance matches an
    // item with the same tags.
    let tags: Arc<[String]> = feed.tags.clone().into();
    let mut poll = SuccessfulPoll {
        items: parsed.items.into(),
        etag: fetched.validators.etag,
        last_modified: fetched.validators.last_modified,
        full_fetch,
        moved_to,
        repairs: parsed.repairs.into(),
        now,
        next_poll_at,
        body_hash: Some(hash),
        baseline_cutoff,
        matcher_generation: 0,
        snapshot,
        stories: app.config.stories,
        languages: app.languages.clone(),
        prepared,
    };
    let mut matcher = matcher.clone();
    // The store refuses a matcher older than the subscriptions (they may change in
    // another process at any moment): compile it again and store again.
    let mut attempts = 0;
    let stored = loop {
        poll.matcher_generation = matcher.generation;
        let (compiled, id, tags) = (matcher.clone(), feed.id.clone(), tags.clone());
        let outcome = app
            .store
            .store_items(&feed, poll.clone(), move |item, article, lang| {
                let found = compiled
                    .matcher
                    .find_matches(&document(item, article, &id, &tags).with_lang(lang));
                found.into_iter().map(SubscriptionId).collect()
            })
            .await?;
        match outcome {
            StoreOutcome::Stored(stored) => break stored,
            StoreOutcome::StaleMatcher if attempts < 10 => {
                attempts += 1;
                matcher = app.current_matcher().await?;
            }
            StoreOutcome::StaleMatcher => {
                anyhow::bail!("the subscriptions kept changing while storing feed {feed_id}")
            }
            StoreOutcome::ClaimLost => {
                warn_if_lost(false, &feed_id);
                return Ok(FeedOutcome::TakenOver);
            }
        }
    };
    info!(target: FEED_LOG, feed = %feed_id, status = "ok", baseline, full = full_fetch, new = stored.new_items,
          updated = stored.updated_items, matched = stored.matches, repairs,
          ms = started.elapsed().as_millis() as u64, "feed polled");
    app.metrics.poll(
        PollResult::Updated,
        started.elapsed().as_secs_f64(),
        stored.new_items,
        stored.updated_items,
        stored.matches,
    );
    Ok(FeedOutcome::Updated {
        new_items: stored.new_items,
        updated_items: stored.updated_items,
        matches: stored.matches,
    })
}

/// A fetched body and where it came from.
struct Page<'a> {
    body: &'a [u8],
    content_type: Option<&'a str>,
    /// After redirects: the base of relative links.
    base: &'a Url,
    /// The feed's id, the title of a watched page that has none.
    name: &'a str,
    /// Polls of the feed that failed in a row before this one.
    failures: u32,
}

/// What a fetched body holds, as a feed's items: a feed parsed; a listing page's entries;
/// a watched page's change since `snapshot` (none the first time), with the text to
/// remember. An error is its kind (`parse`, `page`) and message.
fn read_body(
    page: Page<'_>,
    source: &Source,
    snapshot: Option<&str>,
    now: DateTime<Utc>,
) -> Result<(ParsedFeed, Option<String>), (&'static str, String)> {
    let items = |items| ParsedFeed {
        title: None,
        items,
        repairs: Vec::new(),
        ttl: None,
    };
    match source {
        Source::Feed => parse_feed(page.body, page.content_type, page.base, now)
            .map(|parsed| (parsed, None))
            .map_err(|e| ("parse", e.to_string())),
        Source::Html(rules) => {
            let html = decode_html(page.body, page.content_type);
            let (found, cut) =
                crate::page::listing(&html, page.base, rules, now).map_err(|e| ("page", e))?;
            let mut parsed = items(found);
            parsed.repairs.extend(cut);
            Ok((parsed, None))
        }
        Source::Watch { selector } => {
            let html = decode_html(page.body, page.content_type);
            let text = crate::page::watched_text(&html, selector).map_err(|e| ("page", e))?;
            let change = match snapshot.map(|old| crate::page::compare(old, &text)) {
                None | Some(Compared::Same) => None,
                Some(Compared::Changed(change)) => Some(crate::page::change_item(
                    &html, page.base, page.name, change, now,
                )),
                // Not remembered, so the page's return is no change either; unless it
                // stays: then it is the page now.
                Some(Compared::Unrelated(why))
                    if page.failures < crate::page::UNRELATED_ACCEPTED_AFTER =>
                {
                    return Err(("page", why));
                }
                Some(Compared::Unrelated(_)) => snapshot
                    .and_then(|old| crate::page::describe_change(old, &text))
                    .map(|change| {
                        crate::page::change_item(&html, page.base, page.name, change, now)
                    }),
            };
            Ok((items(change.into_iter().collect()), Some(text)))
        }
    }
}

/// A poll whose claim another worker took over wrote nothing; says so.
fn warn_if_lost(recorded: bool, feed: &str) {
    if !recorded {
        warn!(feed = %feed, "another worker took this feed over; this poll's result was not recorded");
    }
}

fn report_move(feed: &FeedToPoll, moved_to: Option<&Url>) {
    if let Some(to) = moved_to {
        warn!(feed = %feed.id, from = %feed.url, to = %to,
              "feed moved permanently: update its url in config.toml");
    }
}

/// What a subscription is matched against: the item's text (with its article, for a
/// full-text feed), its feed and the feed's tags.
fn document(item: &Item, article: Option<&str>, feed_id: &str, tags: &[String]) -> Document {
    matched_text(
        &item.title,
        &item.summary,
        &item.content,
        article,
        feed_id,
        tags,
    )
}

/// [`document`] of an item's stored parts.
fn matched_text(
    title: &str,
    summary: &str,
    content: &str,
    article: Option<&str>,
    feed_id: &str,
    tags: &[String],
) -> Document {
    let mut text = body_text(summary, content);
    if let Some(article) = article.filter(|a| !a.is_empty()) {
        text.push_str("\n\n");
        text.push_str(article);
    }
    Document::new(title, &text).with_source(feed_id, tags)
}

/// Records a failed poll and schedules the next try: exponential backoff with jitter,
/// capped at `poll.max_backoff`, and never before a server's Retry-After.
async fn record_failure(
    app: &App,
    feed: &FeedToPoll,
    now: DateTime<Utc>,
    kind: &str,
    error: String,
    retry_at: Option<DateTime<Utc>>,
    started: Instant,
) -> Result<FeedOutcome> {
    let poll = &app.config.poll;
    let interval = feed.interval.unwrap_or(poll.interval);
    let failures = feed.consecutive_failures + 1;
    let next_poll_at = next_after_failure(
        interval,
        failures,
        poll.max_backoff,
        retry_at,
        &feed.id,
        now,
    );
    let recorded = app
        .store
        .record_failure(feed, now, kind, &error, next_poll_at)
        .await?;
    warn_if_lost(recorded, &feed.id);
    warn!(target: FEED_LOG, feed = %feed.id, status = "error", kind = %kind, error = %error, failures,
          next_poll = %next_poll_at.to_rfc3339_opts(SecondsFormat::Secs, true),
          ms = started.elapsed().as_millis() as u64, "feed poll failed");
    app.metrics
        .poll(PollResult::Failed, started.elapsed().as_secs_f64(), 0, 0, 0);
    Ok(FeedOutcome::Failed {
        kind: kind.to_string(),
        error,
    })
}

/// When a feed that just failed for the `failures`-th time in a row is tried again:
/// `interval × 2^(failures-1)` plus up to 10% jitter, capped at `max_backoff`, but never
/// before `retry_at` (itself capped at `max_backoff`, so a hostile date cannot park a
/// feed for years).
fn next_after_failure(
    interval: Duration,
    failures: u32,
    max_backoff: Duration,
    retry_at: Option<DateTime<Utc>>,
    feed_id: &str,
    now: DateTime<Utc>,
) -> DateTime<Utc> {
    let factor = 1u32 << failures.saturating_sub(1).min(20);
    let base = interval
        .saturating_mul(factor)
        .min(max_backoff)
        .max(interval.min(max_backoff));
    let backoff = (now + jittered(base, feed_id, now)).min(now + to_chrono(max_backoff));
    match retry_at {
        Some(at) => backoff.max(at.min(now + to_chrono(max_backoff))),
        None => backoff,
    }
}

/// The wait before the next poll of a healthy feed: its interval, lengthened (never
/// shortened) by the feed's `<ttl>` or the server's `Cache-Control: max-age`, at most
/// `max_backoff`, plus jitter.
fn next_interval(
    interval: Duration,
    max_age: Option<Duration>,
    ttl: Option<Duration>,
    max_backoff: Duration,
    feed_id: &str,
    now: DateTime<Utc>,
) -> chrono::Duration {
    let hinted = max_age.into_iter().chain(ttl).max().unwrap_or_default();
    let wait = interval.max(hinted.min(max_backoff));
    jittered(wait, feed_id, now)
}

/// Durations from the config are at most [`MAX_DURATION`] (checked when it is loaded);
/// anything longer is clamped to it, so adding the result to a date cannot overflow.
fn to_chrono(d: Duration) -> chrono::Duration {
    chrono::Duration::from_std(d.min(MAX_DURATION)).unwrap_or(chrono::Duration::MAX)
}

/// The moment `d` before `now`, or the earliest moment there is when `d` reaches back
/// past the calendar (`tidings match --since 300000y`: everything stored).
pub fn before(now: DateTime<Utc>, d: Duration) -> DateTime<Utc> {
    chrono::Duration::from_std(d)
        .ok()
        .and_then(|d| now.checked_sub_signed(d))
        .unwrap_or(DateTime::<Utc>::MIN_UTC)
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
    to_chrono(base) + chrono::Duration::seconds((seed % spread) as i64)
}

/// What one digest round did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DigestSummary {
    pub queued: usize,
    /// Due digests the database would not take (it cannot be written): they stay due,
    /// and the next round queues them.
    pub unqueued: usize,
    /// Why the first of `unqueued` could not be written.
    pub unqueued_error: Option<String>,
    /// Due digests that failed for another reason (a subscriber's stored row this build
    /// cannot read): each fails alone, and is tried again next round.
    pub broken: usize,
    /// Why the first of `broken` failed.
    pub broken_error: Option<String>,
    pub delivery: Delivery,
    /// What went to destinations beside email.
    pub push: PushRound,
}

impl DigestSummary {
    /// An error when some digests could not be written to the database (a local
    /// failure: `tidings digest` exits non-zero), saying how many and why.
    pub fn local_failure(&self) -> Option<anyhow::Error> {
        let unqueued = (self.unqueued > 0).then(|| {
            format!(
                "the database did not take {} ({}); the others were queued, and these stay \
                 due for the next round once it can be written",
                crate::output::count(self.unqueued, "digest"),
                self.unqueued_error.as_deref().unwrap_or("no reason given"),
            )
        });
        let broken = (self.broken > 0).then(|| {
            format!(
                "{} could not be made ({}); the others were queued",
                crate::output::count(self.broken, "digest"),
                self.broken_error.as_deref().unwrap_or("no reason given"),
            )
        });
        let said: Vec<String> = unqueued.into_iter().chain(broken).collect();
        (!said.is_empty()).then(|| anyhow::anyhow!(said.join("; ")))
    }
}

/// A feed that failed this many times in a row is named in digest footers.
pub const FAILING_AFTER: u32 = 3;

/// Writes a digest to the outbox for every due subscriber (every subscriber with
/// pending matches, with `ignore_schedule`) and delivers what the outbox holds. Delivery
/// starts while digests are still being queued, so the mail server's round trips overlap
/// the rendering; a last pass after the queueing sends what is left.
pub async fn send_digests(
    app: &App,
    now: DateTime<Utc>,
    ignore_schedule: bool,
) -> Result<DigestSummary> {
    digest_round(app, now, ignore_schedule, true).await
}

/// [`send_digests`], sending what goes to destinations beside email too when `push`
/// (the one-shots); the daemon sends those in a loop of their own, so one slow
/// destination never holds up anyone's mail.
pub async fn digest_round(
    app: &App,
    now: DateTime<Utc>,
    ignore_schedule: bool,
    push: bool,
) -> Result<DigestSummary> {
    let due = app.store.due_digests(now, ignore_schedule).await?;
    let failing = app.store.failing_feeds(FAILING_AFTER).await?;
    let failing = Arc::new(failing);
    let queueing_done = std::sync::atomic::AtomicBool::new(false);
    let queue = async {
        let result = queue_digests(app, now, ignore_schedule, due, failing).await;
        queueing_done.store(true, std::sync::atomic::Ordering::Release);
        result
    };
    let deliver = async {
        let mut delivery = Delivery::default();
        loop {
            let last_pass = queueing_done.load(std::sync::atomic::Ordering::Acquire);
            let round = send_mail(app, now).await?;
            delivery += round;
            if last_pass || app.shutdown.draining.is_cancelled() {
                return anyhow::Ok(delivery);
            }
            if round == Delivery::default() {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    let (queueing, delivery) = tokio::try_join!(queue, deliver)?;
    let Queueing {
        queued,
        unqueued,
        unqueued_error,
        broken,
        broken_error,
    } = queueing;
    app.metrics
        .digests(queued, delivery.sent, delivery.retrying, delivery.failed);
    let push = match push {
        true => send_push(app, now).await?,
        false => PushRound::default(),
    };
    Ok(DigestSummary {
        queued,
        unqueued,
        unqueued_error,
        broken,
        broken_error,
        delivery,
        push,
    })
}

/// Delivers what the outbox holds that is due at `now`, through the process's one
/// sender: if it is busy, it sends this mail too and this returns at once.
pub async fn send_mail(app: &App, now: DateTime<Utc>) -> Result<Delivery> {
    app.sender
        .deliver(&app.store, &app.mailer, now, &app.shutdown.draining)
        .await
}

/// Sends what the outbox holds for destinations beside email that is due at `now` (see
/// [`push::send_due`]). One round runs per process at a time: a call while one runs
/// returns at once, and the running round, which goes on until nothing is due, sends
/// what this call would have.
pub async fn send_push(app: &App, now: DateTime<Utc>) -> Result<PushRound> {
    let Ok(_running) = app.push_running.try_lock() else {
        return Ok(PushRound::default());
    };
    push::send_due(&app.store, &app.pusher(), now, &app.shutdown.draining).await
}

impl App {
    /// The destination sender over this app's HTTP client and settings.
    pub fn pusher(&self) -> Pusher {
        let metrics = self.metrics.clone();
        Pusher {
            fetcher: self.fetcher.clone(),
            settings: self.config.channels.clone(),
            max_age: chrono::Duration::from_std(self.config.mail.max_age)
                .unwrap_or(chrono::Duration::days(3)),
            message_domain: self.mailer.message_domain(),
            observe: Arc::new(move |kind, result| metrics.delivery(kind.as_str(), result)),
        }
    }
}

/// Renders and queues the digests of `due` subscribers, one transaction each.
async fn queue_digests(
    app: &App,
    now: DateTime<Utc>,
    ignore_schedule: bool,
    due: Vec<SubscriberId>,
    failing: Arc<Vec<FailingFeed>>,
) -> Result<Queueing> {
    let domain = app.mailer.message_domain();
    let cache = Arc::new(StoryCache::default());
    let mut done = Queueing::default();
    for subscriber in due {
        if app.shutdown.draining.is_cancelled() {
            // The rest stay due; the next start queues them.
            break;
        }
        let (app, domain, failing) = (app.clone(), domain.clone(), failing.clone());
        let cache = cache.clone();
        let store = app.store.clone();
        let taken = store
            .take_digest(
                subscriber,
                now,
                ignore_schedule,
                &domain,
                move |s, parcels| {
                    let unsubscribe = app.links.unsubscribe_url(s.id, &s.email);
                    let manage = app.links.manage_url(s.id, &s.email);
                    let cx = DigestContext {
                        recipient: &s.email,
                        schedule: s.schedule,
                        timezone: s.timezone,
                        synonyms: &app.synonyms,
                        failing_feeds: &failing,
                        unsubscribe_url: Some(&unsubscribe),
                        manage_url: Some(&manage),
                        cache: Some(&cache),
                        more_follow: parcels.more_follow,
                        locale: crate::locale::get(&s.locale),
                    };
                    let email = match parcels.email.is_empty() {
                        true => None,
                        false => Some(render_digest(&parcels.email, &cx)?),
                    };
                    let feed_url = |search| app.links.feed_url(search, &s.email);
                    let events = parcels
                        .channels
                        .iter()
                        .map(|(channel, taken)| {
                            digest_event(taken, &cx, &channel.name, now, &feed_url)
                        })
                        .collect();
                    Ok(RenderedRound { email, events })
                },
            )
            .await
            .with_context(|| format!("queueing digest for subscriber {subscriber}"));
        match taken {
            Ok(Some(outbox)) => {
                info!(
                    subscriber = subscriber.0,
                    outbox = outbox.0,
                    "digest queued"
                );
                done.queued += 1;
            }
            Ok(None) => {}
            // One digest the database cannot take (a full disk) holds up no one else's,
            // which may fit; the store's write health says so once.
            Err(e) => match crate::store::unavailable(&e) {
                Some(reason) => {
                    debug!(subscriber = subscriber.0, error = %format!("{e:#}"), "digest not queued");
                    done.unqueued += 1;
                    done.unqueued_error.get_or_insert(reason);
                }
                // Nor does one that fails for its own reason (a stored row this build
                // cannot read): it is said, every round, until it is fixed.
                None => {
                    let error = format!("{e:#}");
                    error!(subscriber = subscriber.0, error = %error, "digest not queued");
                    done.broken += 1;
                    done.broken_error.get_or_insert(error);
                }
            },
        }
    }
    Ok(done)
}

/// What [`queue_digests`] did.
#[derive(Default)]
struct Queueing {
    queued: usize,
    unqueued: usize,
    unqueued_error: Option<String>,
    broken: usize,
    broken_error: Option<String>,
}

/// Prunes what is older than `retention` at `now` (see [`Store::prune`]): old items become
/// tombstones once no digest still needs them, and old sent or failed mail is deleted.
/// Meant to run daily in the daemon; `tidings prune` runs it once.
pub async fn prune(app: &App, now: DateTime<Utc>) -> Result<Pruned> {
    prune_store(&app.store, app.config.retention, now).await
}

/// [`prune`] with only the database, for commands that need neither HTTP nor mail.
pub async fn prune_store(store: &Store, retention: Duration, now: DateTime<Utc>) -> Result<Pruned> {
    let cutoff = before(now, retention);
    let pruned = store
        .prune(cutoff, now)
        .await
        .context("pruning the database")?;
    if pruned.skipped {
        info!("not pruned: another instance is pruning this database");
    } else {
        info!(items = pruned.items, outbox = pruned.outbox, matches = pruned.matches,
              cutoff = %cutoff.to_rfc3339_opts(SecondsFormat::Secs, true), "pruned");
    }
    Ok(pruned)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn dangling_searches_name_subscriber_search_and_what_is_missing() {
        let config = Config::parse(
            "[[feeds]]\nid = \"a\"\nurl = \"https://a.example/\"\ntags = [\"us\"]\n",
            std::path::Path::new("/etc/tidings/config.toml"),
        )
        .unwrap();
        let subscriber = |email: &str, queries: &[&str]| Subscriber {
            id: SubscriberId(1),
            email: email.into(),
            schedule: crate::digest::Schedule::Immediate,
            timezone: chrono_tz::UTC,
            next_digest_at: None,
            bounces: 0,
            paused_at: None,
            queries: queries.iter().map(|q| q.to_string()).collect(),
            new_outlets: Default::default(),
            locale: "en".into(),
        };
        let subscribers = [
            subscriber(
                "ana@example.org",
                &["asylum", "feed:gone visa", "feed:A tag:US"],
            ),
            subscriber(
                "ben@example.org",
                &["(tag:uk OR feed:gone) -tag:eu", "(unparsable"],
            ),
        ];
        let found: Vec<String> = dangling_searches(&config, &subscribers)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            found,
            [
                "search \"feed:gone visa\" of ana@example.org names feed:gone, which the config does not have",
                "search \"(tag:uk OR feed:gone) -tag:eu\" of ben@example.org names tag:uk, feed:gone, tag:eu, which the config does not have",
            ]
        );
    }

    #[test]
    fn failing_feeds_back_off_exponentially_with_a_cap_and_respect_retry_after() {
        let now = at("2026-11-28T12:00:00Z");
        let fifteen = Duration::from_secs(900);
        let day = Duration::from_secs(86400);
        // (name, failures, retry_at, max_backoff, expected wait in minutes: low..=high)
        let cases = [
            ("first failure waits one interval", 1, None, day, 15, 16),
            ("second doubles", 2, None, day, 30, 33),
            ("fourth", 4, None, day, 120, 132),
            ("capped at max_backoff", 12, None, day, 1440, 1440),
            ("custom cap", 12, None, Duration::from_secs(3600), 60, 60),
            (
                "retry-after later than backoff wins",
                1,
                Some(at("2026-11-28T14:00:00Z")),
                day,
                120,
                120,
            ),
            (
                "retry-after sooner than backoff is not used",
                3,
                Some(at("2026-11-28T12:01:00Z")),
                day,
                60,
                66,
            ),
            (
                "retry-after years away is capped",
                1,
                Some(at("2030-01-01T00:00:00Z")),
                day,
                1440,
                1440,
            ),
        ];
        for (name, failures, retry_at, cap, low, high) in cases {
            let next = next_after_failure(fifteen, failures, cap, retry_at, "feed", now);
            let minutes = (next - now).num_minutes();
            assert!((low..=high).contains(&minutes), "{name}: {minutes} min");
        }
    }

    #[test]
    fn a_moment_before_stops_at_the_start_of_the_calendar() {
        let now = at("2026-12-01T07:30:00Z");
        for (name, back, expected) in [
            (
                "a week",
                Duration::from_secs(7 * 86_400),
                at("2026-11-24T07:30:00Z"),
            ),
            ("nothing", Duration::ZERO, now),
            (
                "past the calendar",
                Duration::from_secs(300_000 * 365 * 86_400),
                DateTime::<Utc>::MIN_UTC,
            ),
            (
                "past chrono's durations",
                Duration::MAX,
                DateTime::<Utc>::MIN_UTC,
            ),
        ] {
            assert_eq!(before(now, back), expected, "{name}");
        }
    }

    #[test]
    fn ttl_and_max_age_lengthen_but_never_shorten_the_interval() {
        let now = at("2026-11-28T12:00:00Z");
        let mins = |m: u64| Duration::from_secs(m * 60);
        let day = mins(1440);
        // (name, interval, max_age, ttl, expected base minutes before jitter)
        let cases = [
            ("no hints", mins(15), None, None, 15),
            ("ttl lengthens", mins(15), None, Some(mins(60)), 60),
            ("max-age lengthens", mins(15), Some(mins(30)), None, 30),
            (
                "the longer hint wins",
                mins(15),
                Some(mins(30)),
                Some(mins(45)),
                45,
            ),
            (
                "short hints never shorten",
                mins(60),
                Some(mins(5)),
                Some(mins(1)),
                60,
            ),
            (
                "hints capped at max_backoff",
                mins(15),
                None,
                Some(mins(10_000)),
                1440,
            ),
        ];
        for (name, interval, max_age, ttl, base) in cases {
            let wait = next_interval(interval, max_age, ttl, day, "feed", now).num_seconds();
            let base = base as i64 * 60;
            assert!(
                wait >= base && wait <= base + (base / 10).max(30),
                "{name}: {wait} s"
            );
        }
    }

    #[tokio::test]
    async fn a_panic_becomes_an_error_with_its_message() {
        let value = guard_panics(async { 7 }).await;
        assert_eq!(value, Ok(7));
        let formatted = guard_panics(async {
            let n = 3;
            if n > 2 {
                panic!("overflowed at {n}");
            }
        })
        .await;
        assert_eq!(formatted, Err("overflowed at 3".to_string()));
        let literal = guard_panics(async { panic!("plain") }).await;
        assert_eq!(literal, Err::<(), _>("plain".to_string()));
    }

    #[test]
    fn a_poll_that_could_not_be_recorded_is_filed_under_what_refused_it() {
        let refused = anyhow::Error::from(rusqlite::Error::InvalidQuery).context("storing items");
        assert_eq!(failure_kind(&refused), "database");
        let changing = anyhow::anyhow!("the subscriptions kept changing while storing feed a");
        assert_eq!(failure_kind(&changing), "internal");
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
