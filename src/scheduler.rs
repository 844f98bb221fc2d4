//! The daemon: cron ticks that drive the jobs in [`crate::pipeline`], config reloads, the
//! admin listener and a clean shutdown.
//!
//! tokio-cron-scheduler only fires three global ticks (poll dispatch, digest dispatch,
//! the daily prune); per-feed and per-subscriber due times live in SQLite. A digest or
//! prune tick never starts a second run of its job while one is going: ticks go into a
//! channel of one slot, so extra ticks while busy coalesce. A poll tick starts a cycle
//! without waiting for the last one: feeds still in flight keep their claims, so a slow
//! feed delays no other.
//!
//! The current [`App`] lives in a `watch` channel: each run of a job takes the latest
//! one, so a reload (SIGHUP, or the config file changing) applies from the next run while
//! runs in progress finish on the config they started with. A config with errors is
//! logged with its line and column and changes nothing. At start and after each reload,
//! stored searches naming a feed or tag the config does not have are logged.
//!
//! On SIGTERM/SIGINT nothing new starts ([`crate::pipeline::Shutdown::draining`]); work in progress gets
//! `[service].shutdown_timeout`; then fetches still running are dropped and their feeds
//! released ([`crate::pipeline::Shutdown::abort`]). What is left stays in the database for next time.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::store::Instance;
use anyhow::{Context, Result};
use chrono::Utc;
use notify::{RecursiveMode, Watcher};
use sd_notify::NotifyState;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio_cron_scheduler::{Job, JobScheduler};
use tracing::{debug, error, info, warn};

use crate::config::Config;
use crate::pipeline::{
    App, DanglingSearch, FeedOutcome, PollObserver, dangling_searches, digest_round,
    fetch_articles, poll_feeds_observed, prune, send_push,
};

/// Every 15 seconds: poll the feeds that are due.
const POLL_TICK: &str = "*/15 * * * * *";
/// Every 15 seconds (offset from polling), and after a poll cycle that stored new items:
/// fetch the articles of full-text feeds that are due.
const ARTICLE_TICK: &str = "7/15 * * * * *";
/// Every 30 seconds (offset from polling): queue due digests and send the outbox.
const DIGEST_TICK: &str = "5/30 * * * * *";
/// Daily at 03:17 UTC (and once at start): prune what is older than `retention`.
/// What waits for destinations beside email (retries included) is sent every 30 s,
/// between digest rounds.
const PUSH_TICK: &str = "20/30 * * * * *";
const PRUNE_TICK: &str = "0 17 3 * * *";
/// Changes to the config file closer together than this are one reload (editors write
/// a file in several steps).
const RELOAD_SETTLE: Duration = Duration::from_millis(300);

/// Searches naming a feed or tag the config does not have that are logged one by one at
/// start or after a reload; the rest are counted in one line.
const DANGLING_LOGGED: usize = 20;

/// What asked for a reload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Trigger {
    Signal,
    FileChanged,
}

/// Runs until `shutdown` completes, then winds down within `[service].shutdown_timeout`.
pub async fn run(app: App, shutdown: impl Future<Output = ()>) -> Result<()> {
    let (poll_tx, poll_rx) = mpsc::channel::<()>(1);
    let (digest_tx, digest_rx) = mpsc::channel::<()>(1);
    let (prune_tx, prune_rx) = mpsc::channel::<()>(1);
    let (article_tx, article_rx) = mpsc::channel::<()>(1);
    let (push_tx, push_rx) = mpsc::channel::<()>(1);
    let stopped = app.shutdown.clone();
    let metrics = app.metrics.clone();
    metrics.last_tick.set(Utc::now().timestamp());

    let mut scheduler = JobScheduler::new().await.context("starting scheduler")?;
    for (schedule, tx) in [
        (POLL_TICK, poll_tx.clone()),
        (DIGEST_TICK, digest_tx.clone()),
        (PRUNE_TICK, prune_tx.clone()),
        (ARTICLE_TICK, article_tx.clone()),
        (PUSH_TICK, push_tx.clone()),
    ] {
        let metrics = metrics.clone();
        let job = Job::new_async(schedule, move |_, _| {
            let (tx, metrics) = (tx.clone(), metrics.clone());
            Box::pin(async move {
                metrics.last_tick.set(Utc::now().timestamp());
                // Proof of life for systemd's watchdog (WatchdogSec=), when enabled.
                if sd_notify::watchdog_enabled().is_some() {
                    let _ = sd_notify::notify(&[NotifyState::Watchdog]);
                }
                // Full channel = a run is already pending; this tick merges into it.
                let _ = tx.try_send(());
            })
        })
        .with_context(|| format!("scheduling {schedule}"))?;
        scheduler.add(job).await?;
    }

    let (current, app_rx) = watch::channel(app.clone());
    let listeners_stop = tokio_util::sync::CancellationToken::new();
    if let Some(addr) = app.config.service.admin_listen {
        crate::admin::serve(addr, app_rx.clone(), listeners_stop.clone()).await?;
    } else {
        info!("admin listener off ([service].admin_listen is \"\"): no /healthz or /metrics");
    }
    let web = match app.config.web.listen {
        Some(addr) => Some(crate::web::serve(addr, app_rx.clone(), listeners_stop.clone()).await?),
        None => None,
    };
    match (web, &app.admin_token) {
        (None, _) => {
            info!("web listener off ([web].listen is \"\"): no subscriber pages, no /admin")
        }
        (Some(addr), Some(_)) => info!(
            url = %format!("{}admin", app.config.web.base_url),
            local = %format!("http://{addr}/admin"),
            "admin page on"
        ),
        (Some(_), None) => info!(
            "admin page /admin off: set {} (16 characters or more) to turn it on",
            crate::pipeline::ADMIN_TOKEN_ENV
        ),
    }
    scheduler.start().await.context("starting scheduler")?;

    let (reload_tx, reload_rx) = mpsc::channel::<Trigger>(1);
    let _watcher = watch_file(&app.config.path, reload_tx.clone());
    let signals = tokio::spawn(reload_on_sighup(reload_tx));
    let reloader = tokio::spawn(reload_loop(current, reload_rx, poll_tx.clone()));
    let poller = tokio::spawn(poll_loop(
        app_rx.clone(),
        poll_rx,
        digest_tx.clone(),
        article_tx.clone(),
    ));
    let reader = tokio::spawn(article_loop(app_rx.clone(), article_rx, digest_tx.clone()));
    let sender = tokio::spawn(digest_loop(app_rx.clone(), digest_rx, push_tx.clone()));
    let pusher = tokio::spawn(push_loop(app_rx.clone(), push_rx));
    let pruner = tokio::spawn(prune_loop(app_rx.clone(), prune_rx));
    let beats = tokio::spawn(heartbeat_loop(app_rx.clone(), Instance::this().clone()));
    // Start right away rather than at the first tick.
    let _ = poll_tx.try_send(());
    let _ = digest_tx.try_send(());
    let _ = prune_tx.try_send(());
    let _ = article_tx.try_send(());
    let _ = push_tx.try_send(());
    info!(feeds = app.config.feeds.len(), database = %app.config.database, "tidings running");
    warn_dangling_searches(&app).await;
    let _ = sd_notify::notify(&[NotifyState::Ready, NotifyState::Status("running")]);

    shutdown.await;
    let _ = sd_notify::notify(&[NotifyState::Stopping]);
    let grace = app_rx.borrow().config.service.shutdown_timeout;
    info!(
        timeout_secs = grace.as_secs_f64(),
        "shutting down: finishing work in progress"
    );
    stopped.draining.cancel();
    beats.abort();
    signals.abort();
    reloader.abort();
    if let Err(e) = scheduler.shutdown().await {
        warn!(error = %e, "stopping scheduler");
    }
    // Keep a little of the deadline for dropped fetches to release their feeds.
    let margin = (grace / 5).min(Duration::from_secs(1));
    let jobs = async {
        let _ = poller.await;
        let _ = reader.await;
        let _ = sender.await;
        let _ = pusher.await;
        let _ = pruner.await;
    };
    tokio::pin!(jobs);
    let finished = tokio::time::timeout(grace - margin, &mut jobs).await;
    if finished.is_err() {
        warn!("work still running at the shutdown deadline: dropping it; it resumes on next start");
        stopped.abort.cancel();
        let _ = tokio::time::timeout(margin, &mut jobs).await;
    }
    // What the database refused and this process still holds dies with it: a last try.
    let store = app_rx.borrow().store.clone();
    if let Err(e) = store.write_kept(Duration::from_secs(5)).await {
        warn!(error = %format!("{e:#}"), "exiting with work the database would not take");
    }
    listeners_stop.cancel();
    if finished.is_ok() {
        info!("stopped cleanly");
    } else {
        info!("stopped at the deadline");
    }
    Ok(())
}

/// How often a running instance reports to the database (`instances` counts those that
/// reported within a minute).
const HEARTBEAT_EVERY: Duration = Duration::from_secs(15);

/// A clock further than this from the database server's is warned about.
const CLOCK_SKEW_WARNING: chrono::Duration = chrono::Duration::seconds(2);

/// Reports this instance alive every [`HEARTBEAT_EVERY`]; a failure is logged once, and
/// its end once.
async fn heartbeat_loop(app: watch::Receiver<App>, instance: Instance) {
    let mut failing = false;
    let mut skewed = false;
    let mut every = tokio::time::interval(HEARTBEAT_EVERY);
    loop {
        every.tick().await;
        let store = app.borrow().store.clone();
        // The cluster goes by the database's clock: measured again each time, and said
        // once when this machine's is off by more than a little (NTP is not running).
        if let Ok(offset) = store.sync_clock().await {
            let off = offset.abs() > CLOCK_SKEW_WARNING;
            if off && !skewed {
                warn!(instance = %instance.id, offset_ms = offset.num_milliseconds(),
                      "this machine's clock is {:.1} s {} the database server's: Tidings goes by \
                       the database's for claims, leases and schedules; check NTP",
                      offset.num_milliseconds().abs() as f64 / 1000.0,
                      if offset > chrono::Duration::zero() { "behind" } else { "ahead of" });
            } else if !off && skewed {
                info!(instance = %instance.id, "this machine's clock agrees with the database's again");
            }
            skewed = off;
        }
        match store.heartbeat(&instance, store.now()).await {
            Ok(()) if failing => {
                info!(instance = %instance.id, "heartbeat recorded again");
                failing = false;
            }
            Ok(()) => {}
            Err(e) if !failing => {
                warn!(instance = %instance.id, error = %format!("{e:#}"), "recording heartbeat");
                failing = true;
            }
            Err(_) => {}
        }
    }
}

/// Logs a job's failed round: as an error, unless the database could not be written,
/// which the store's write health logs once for every job and feed (and again when
/// writes work), so a full disk is not an error line a job a tick.
fn round_failed(round: &str, e: &anyhow::Error) {
    if crate::store::unavailable(e).is_some() {
        debug!(error = %format!("{e:#}"), "{round} failed: the database cannot be written");
    } else {
        error!(error = %format!("{e:#}"), "{round} failed");
    }
}

/// Waits for the next tick of a job; returns the current [`App`] to run it with, or
/// `None` once the daemon is stopping.
async fn next_run(current: &watch::Receiver<App>, ticks: &mut mpsc::Receiver<()>) -> Option<App> {
    let draining = current.borrow().shutdown.draining.clone();
    tokio::select! {
        biased;
        _ = draining.cancelled() => None,
        tick = ticks.recv() => tick.map(|()| current.borrow().clone()),
    }
}

/// Starts a poll cycle on each tick without waiting for the ones still running: a feed
/// in flight (a slow server) keeps its claim and its connection slot, and the other
/// feeds are polled when they are due. Once draining, waits for the cycles in progress
/// (they release the feeds they did not poll).
async fn poll_loop(
    current: watch::Receiver<App>,
    mut ticks: mpsc::Receiver<()>,
    digest: mpsc::Sender<()>,
    articles: mpsc::Sender<()>,
) {
    let mut cycles = JoinSet::new();
    while let Some(app) = next_run(&current, &mut ticks).await {
        while let Some(done) = cycles.try_join_next() {
            if let Err(e) = done {
                error!(error = %e, "poll cycle crashed");
            }
        }
        cycles.spawn(poll_cycle(app, digest.clone(), articles.clone()));
    }
    while let Some(done) = cycles.join_next().await {
        if let Err(e) = done {
            error!(error = %e, "poll cycle crashed");
        }
    }
}

/// Asks for a digest round as soon as a feed brings matches, so immediate subscribers
/// do not wait for the rest of the cycle, and for an article round when it brings new
/// items (those of full-text feeds wait for their articles).
struct DigestOnMatch {
    digest: mpsc::Sender<()>,
    articles: mpsc::Sender<()>,
}

impl PollObserver for DigestOnMatch {
    fn finished(&self, _feed: &str, outcome: Option<&FeedOutcome>) {
        if let Some(FeedOutcome::Updated {
            matches, new_items, ..
        }) = outcome
        {
            // Full channel = a round is already pending; it will see these.
            if *matches > 0 {
                let _ = self.digest.try_send(());
            }
            if *new_items > 0 {
                let _ = self.articles.try_send(());
            }
        }
    }
}

async fn poll_cycle(app: App, digest: mpsc::Sender<()>, articles: mpsc::Sender<()>) {
    let observer = DigestOnMatch { digest, articles };
    match poll_feeds_observed(&app, app.store.now(), true, &observer).await {
        Ok(s) if s.feeds > 0 => {
            info!(
                feeds = s.feeds,
                updated = s.updated,
                not_modified = s.not_modified,
                failed = s.failed,
                skipped = s.skipped,
                new = s.new_items,
                matched = s.matches,
                "poll cycle done"
            );
        }
        Ok(_) => {}
        Err(e) => round_failed("poll cycle", &e),
    }
}

/// One article round at a time: a round fetches every article due, then asks for a
/// digest round if it matched anything.
async fn article_loop(
    current: watch::Receiver<App>,
    mut ticks: mpsc::Receiver<()>,
    digest: mpsc::Sender<()>,
) {
    while let Some(app) = next_run(&current, &mut ticks).await {
        match fetch_articles(&app, app.store.now()).await {
            Ok(s) if s.articles > 0 => {
                info!(
                    articles = s.articles,
                    ok = s.ok,
                    no_story = s.none,
                    failed = s.failed,
                    retrying = s.retrying,
                    unrecorded = s.unrecorded,
                    matched = s.matches,
                    "article round done"
                );
                if s.matches > 0 {
                    let _ = digest.try_send(());
                }
            }
            Ok(_) => {}
            Err(e) => round_failed("article round", &e),
        }
    }
}

async fn digest_loop(
    current: watch::Receiver<App>,
    mut ticks: mpsc::Receiver<()>,
    push: mpsc::Sender<()>,
) {
    while let Some(app) = next_run(&current, &mut ticks).await {
        match digest_round(&app, app.store.now(), false, false).await {
            Ok(s) if s.queued + s.delivery.sent + s.delivery.retrying + s.delivery.failed > 0 => {
                info!(
                    queued = s.queued,
                    sent = s.delivery.sent,
                    retrying = s.delivery.retrying,
                    failed = s.delivery.failed,
                    "digest round done"
                );
                // What the round queued for destinations goes now, not at the next tick.
                let _ = push.try_send(());
            }
            Ok(_) => {}
            Err(e) => round_failed("digest round", &e),
        }
    }
}

/// Sends what waits for destinations beside email, on its own ticks and after each
/// digest round: a slow destination delays only itself.
async fn push_loop(current: watch::Receiver<App>, mut ticks: mpsc::Receiver<()>) {
    while let Some(app) = next_run(&current, &mut ticks).await {
        match send_push(&app, app.store.now()).await {
            Ok(r) if r.sent + r.retrying + r.failed > 0 => info!(
                sent = r.sent,
                retrying = r.retrying,
                failed = r.failed,
                paused = r.paused,
                "destination round done"
            ),
            Ok(_) => {}
            Err(e) => round_failed("destination round", &e),
        }
    }
}

async fn prune_loop(current: watch::Receiver<App>, mut ticks: mpsc::Receiver<()>) {
    while let Some(app) = next_run(&current, &mut ticks).await {
        // `prune` logs what it did; its batches are short transactions, so a poll or a
        // digest round waits at most one batch for the database.
        if let Err(e) = prune(&app, app.store.now()).await {
            round_failed("prune", &e);
        }
    }
}

/// Reloads the config on each trigger. A file that does not load is logged (every
/// problem, with line and column) and changes nothing; a good one replaces the current
/// [`App`] and starts a poll, so added feeds are fetched at once.
async fn reload_loop(
    current: watch::Sender<App>,
    mut triggers: mpsc::Receiver<Trigger>,
    poll: mpsc::Sender<()>,
) {
    let mut last_text = std::fs::read_to_string(&current.borrow().config.path).ok();
    while let Some(mut trigger) = triggers.recv().await {
        // Let a burst of file events settle into one reload.
        tokio::time::sleep(RELOAD_SETTLE).await;
        while let Ok(t) = triggers.try_recv() {
            if t == Trigger::Signal {
                trigger = t;
            }
        }
        let app = current.borrow().clone();
        let path = app.config.path.clone();
        if trigger == Trigger::FileChanged {
            if !app.config.service.watch_config {
                continue;
            }
            // Saving without changes, or a write we already tried: nothing to do.
            let text = std::fs::read_to_string(&path).ok();
            if text.is_none() || text == last_text {
                continue;
            }
        }
        let _ = sd_notify::notify(&[
            NotifyState::Reloading,
            NotifyState::monotonic_usec_now().unwrap_or(NotifyState::Status("reloading")),
        ]);
        // The text of the last attempt, good or bad: after a failed one, putting the
        // good file back is a change to reload (and report).
        last_text = std::fs::read_to_string(&path).ok();
        match reload(&app, &path).await {
            Ok(new) => {
                current.send_replace(new.clone());
                app.metrics.reload(true);
                let _ = poll.try_send(());
                warn_dangling_searches(&new).await;
            }
            Err(e) => {
                app.metrics.reload(false);
                // One line per problem: each names the file, line and column.
                for problem in format!("{e:#}").lines() {
                    error!(trigger = ?trigger, error = %problem, "config reload failed");
                }
                warn!("still running on the last good config");
            }
        }
        let _ = sd_notify::notify(&[NotifyState::Ready, NotifyState::Status("running")]);
    }
}

/// Loads the config at `path` and builds the [`App`] for it, logging what changed: feeds
/// added, removed and changed (by id) and the other settings changed (by section).
async fn reload(app: &App, path: &Path) -> Result<App> {
    let path = path.to_path_buf();
    let config = tokio::task::spawn_blocking(move || Config::load(&path)).await??;
    let old = app.config.clone();
    for (what, changed) in [
        ("database", config.database != old.database),
        (
            "web.secret_file",
            config.web.secret_file != old.web.secret_file,
        ),
        (
            "service.admin_listen",
            config.service.admin_listen != old.service.admin_listen,
        ),
        ("web.listen", config.web.listen != old.web.listen),
    ] {
        if changed {
            warn!(
                setting = what,
                "changed in the config: takes effect at the next restart"
            );
        }
    }
    let added: Vec<&str> = config
        .feeds
        .iter()
        .filter(|f| old.feed(&f.id).is_none())
        .map(|f| f.id.as_str())
        .collect();
    let removed: Vec<&str> = old
        .feeds
        .iter()
        .filter(|f| config.feed(&f.id).is_none())
        .map(|f| f.id.as_str())
        .collect();
    let changed: Vec<&str> = config
        .feeds
        .iter()
        .filter(|f| old.feed(&f.id).is_some_and(|o| o != *f))
        .map(|f| f.id.as_str())
        .collect();
    let (feeds, added, removed, changed) = (
        config.feeds.len(),
        added.join(","),
        removed.join(","),
        changed.join(","),
    );
    let settings = config.changed_settings(&old).join(",");
    let new = app.reconfigure(config).await?;
    info!(
        feeds,
        %added,
        %removed,
        %changed,
        %settings,
        "config reloaded"
    );
    Ok(new)
}

/// Logs each stored search that names a feed or tag the config does not have, at start
/// and after each reload (which may have removed one).
async fn warn_dangling_searches(app: &App) {
    match app.store.subscribers().await {
        Ok(subscribers) => log_dangling_searches(&dangling_searches(&app.config, &subscribers)),
        Err(e) => {
            warn!(error = %format!("{e:#}"), "checking stored searches against the config")
        }
    }
}

/// Logs the first [`DANGLING_LOGGED`] of `found`, then how many more there are (the admin
/// page and `check-config` list them all). The subscriber's text is a `&str` field, which
/// the text log quotes (so a search `tag:x missing=none` cannot pass for a field of its own)
/// and the JSON log writes as a plain string.
fn log_dangling_searches(found: &[DanglingSearch]) {
    for d in found.iter().take(DANGLING_LOGGED) {
        let missing: Vec<String> = d.unknown.iter().map(ToString::to_string).collect();
        warn!(
            subscriber = d.email.as_str(),
            search = d.query.as_str(),
            missing = missing.join(", ").as_str(),
            "search names a feed or tag the config does not have"
        );
    }
    if found.len() > DANGLING_LOGGED {
        warn!(
            more = found.len() - DANGLING_LOGGED,
            "and more searches name a feed or tag the config does not have (see /admin or \
             `tidings check-config`)"
        );
    }
}

/// Forwards each SIGHUP as a reload trigger.
async fn reload_on_sighup(tx: mpsc::Sender<Trigger>) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::hangup()) {
            Ok(mut hup) => {
                while hup.recv().await.is_some() {
                    info!("SIGHUP: reloading the config");
                    // Waits if a file event is queued: a signal is never dropped.
                    if tx.send(Trigger::Signal).await.is_err() {
                        return;
                    }
                }
            }
            Err(e) => error!(error = %e, "cannot listen for SIGHUP"),
        }
    }
    #[cfg(not(unix))]
    drop(tx);
}

/// Watches the folder holding the config file (editors replace files by renaming, which a
/// watch on the file itself would miss) and sends a trigger when the file may have
/// changed. Returns the watcher, which stops when dropped; `None` if the platform refused.
fn watch_file(path: &Path, tx: mpsc::Sender<Trigger>) -> Option<notify::RecommendedWatcher> {
    let folder = path
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    let name = path.file_name()?.to_owned();
    let handler = move |event: notify::Result<notify::Event>| {
        if let Ok(event) = event
            && !event.kind.is_access()
            && event
                .paths
                .iter()
                .any(|p| p.file_name() == Some(name.as_os_str()))
        {
            let _ = tx.try_send(Trigger::FileChanged);
        }
    };
    let watching = notify::recommended_watcher(handler).and_then(|mut w| {
        w.watch(&folder, RecursiveMode::NonRecursive)?;
        Ok(w)
    });
    match watching {
        Ok(w) => Some(w),
        Err(e) => {
            warn!(folder = %folder.display(), error = %e,
                  "cannot watch the config file; reload with SIGHUP");
            None
        }
    }
}

/// Completes on Ctrl-C (SIGINT) or SIGTERM. The handlers are installed when this is
/// called, not when the future is first polled, so a signal during startup is not lost
/// (nor does it kill the process half-way).
pub fn shutdown_signal() -> impl Future<Output = ()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let listen = |kind: SignalKind, name: &'static str| {
            let installed = signal(kind);
            async move {
                match installed {
                    Ok(mut s) => {
                        s.recv().await;
                    }
                    Err(e) => {
                        error!(error = %e, signal = name, "cannot listen for signal");
                        std::future::pending::<()>().await;
                    }
                }
            }
        };
        let (int, term) = (
            listen(SignalKind::interrupt(), "SIGINT"),
            listen(SignalKind::terminate(), "SIGTERM"),
        );
        async move {
            tokio::select! {
                _ = int => {},
                _ = term => {},
            }
        }
    }
    #[cfg(not(unix))]
    async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            error!(error = %e, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    use crate::matcher::Scope;

    use super::*;

    /// A log writer into a shared buffer.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Write for Captured {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Captured {
        fn lines(&self) -> Vec<String> {
            String::from_utf8_lossy(&self.0.lock().unwrap())
                .lines()
                .map(str::to_string)
                .collect()
        }
    }

    fn dangling(n: usize) -> Vec<DanglingSearch> {
        (0..n)
            .map(|i| DanglingSearch {
                email: format!("s{i}@example.org"),
                query: "tag:x missing=none".into(),
                unknown: vec![Scope::Tag("x".into())],
            })
            .collect()
    }

    #[test]
    fn dangling_searches_are_logged_quoted_and_at_most_twenty() {
        // (searches, lines logged, the count on the last)
        let cases = [
            (0, 0, None),
            (3, 3, None),
            (20, 20, None),
            (21, 21, Some(1)),
            (500, 21, Some(480)),
        ];
        for (n, lines, more) in cases {
            let log = Captured::default();
            let writer = log.clone();
            let text = tracing_subscriber::fmt()
                .with_writer(move || writer.clone())
                .with_ansi(false)
                .finish();
            tracing::subscriber::with_default(text, || log_dangling_searches(&dangling(n)));
            let logged = log.lines();
            assert_eq!(logged.len(), lines, "{n}: {logged:#?}");
            if n > 0 {
                assert!(
                    logged[0].ends_with(
                        "search names a feed or tag the config does not have \
                         subscriber=\"s0@example.org\" search=\"tag:x missing=none\" missing=\"tag:x\""
                    ),
                    "{n}: {}",
                    logged[0]
                );
            }
            let last = logged.last().map_or("", String::as_str);
            match more {
                Some(more) => assert!(
                    last.contains("see /admin") && last.ends_with(&format!(" more={more}")),
                    "{n}: {last}"
                ),
                None => assert!(!last.contains("more="), "{n}: {last}"),
            }
        }

        // The JSON log has the search as it is.
        let log = Captured::default();
        let writer = log.clone();
        let json = tracing_subscriber::fmt()
            .json()
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::with_default(json, || log_dangling_searches(&dangling(1)));
        let line: serde_json::Value = serde_json::from_str(&log.lines()[0]).unwrap();
        assert_eq!(line["fields"]["search"], "tag:x missing=none", "{line}");
    }
}
