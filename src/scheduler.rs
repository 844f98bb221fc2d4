//! The daemon: cron ticks that drive the jobs in [`crate::pipeline`], and a clean shutdown.
//!
//! tokio-cron-scheduler only fires two global ticks (poll dispatch, digest dispatch);
//! per-feed and per-subscriber due times live in SQLite. A tick never starts a second
//! run of its job while one is going: ticks go into a channel of one slot, so extra
//! ticks while busy coalesce. On shutdown no new run starts, and the run in progress
//! gets `grace` to finish; what it does not finish stays in the database for next time.

use std::future::Future;
use std::time::Duration;

use anyhow::{Context, Result};
use chrono::Utc;
use tokio::sync::mpsc;
use tokio_cron_scheduler::{Job, JobScheduler};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::pipeline::{App, poll_feeds, send_digests};

/// Every 15 seconds: poll the feeds that are due.
const POLL_TICK: &str = "*/15 * * * * *";
/// Every 30 seconds (offset from polling): queue due digests and send the outbox.
const DIGEST_TICK: &str = "5/30 * * * * *";

/// Runs until `shutdown` completes, then waits up to `grace` for work in progress.
pub async fn run(app: App, shutdown: impl Future<Output = ()>, grace: Duration) -> Result<()> {
    let cancel = CancellationToken::new();
    let (poll_tx, poll_rx) = mpsc::channel::<()>(1);
    let (digest_tx, digest_rx) = mpsc::channel::<()>(1);

    let mut scheduler = JobScheduler::new().await.context("starting scheduler")?;
    for (schedule, tx) in [
        (POLL_TICK, poll_tx.clone()),
        (DIGEST_TICK, digest_tx.clone()),
    ] {
        let job = Job::new_async(schedule, move |_, _| {
            let tx = tx.clone();
            Box::pin(async move {
                // Full channel = a run is already pending; this tick merges into it.
                let _ = tx.try_send(());
            })
        })
        .with_context(|| format!("scheduling {schedule}"))?;
        scheduler.add(job).await?;
    }
    scheduler.start().await.context("starting scheduler")?;

    let poller = tokio::spawn(poll_loop(
        app.clone(),
        poll_rx,
        digest_tx.clone(),
        cancel.clone(),
    ));
    let sender = tokio::spawn(digest_loop(app.clone(), digest_rx, cancel.clone()));
    // Start right away rather than at the first tick.
    let _ = poll_tx.try_send(());
    let _ = digest_tx.try_send(());
    info!(feeds = app.config.feeds.len(), database = %app.config.database.display(), "tidings running");

    shutdown.await;
    info!(
        grace_secs = grace.as_secs(),
        "shutting down: finishing work in progress"
    );
    cancel.cancel();
    if let Err(e) = scheduler.shutdown().await {
        warn!(error = %e, "stopping scheduler");
    }
    let finished = tokio::time::timeout(grace, async {
        let _ = poller.await;
        let _ = sender.await;
    })
    .await;
    match finished {
        Ok(()) => info!("stopped cleanly"),
        Err(_) => warn!("work still running after the grace period; it resumes on next start"),
    }
    Ok(())
}

async fn poll_loop(
    app: App,
    mut ticks: mpsc::Receiver<()>,
    digest: mpsc::Sender<()>,
    cancel: CancellationToken,
) {
    loop {
        tokio::select! {
            biased;
            _ = cancel.cancelled() => return,
            tick = ticks.recv() => if tick.is_none() { return },
        }
        match poll_feeds(&app, Utc::now(), true).await {
            Ok(s) if s.feeds > 0 => {
                info!(
                    feeds = s.feeds,
                    updated = s.updated,
                    not_modified = s.not_modified,
                    failed = s.failed,
                    new = s.new_items,
                    matched = s.matches,
                    "poll cycle done"
                );
                if s.matches > 0 {
                    // Immediate subscribers hear within this cycle.
                    let _ = digest.try_send(());
                }
            }
            Ok(_) => {}
            Err(e) => error!(error = %format!("{e:#}"), "poll cycle failed"),
        }
    }
}

async fn digest_loop(app: App, mut ticks: mpsc::Receiver<()>, cancel: CancellationToken) {
    loop {
        tokio::select! {
            biased;
            _ = cancel.cancelled() => return,
            tick = ticks.recv() => if tick.is_none() { return },
        }
        match send_digests(&app, Utc::now(), false).await {
            Ok(s) if s.queued + s.delivery.sent + s.delivery.retrying + s.delivery.failed > 0 => {
                info!(
                    queued = s.queued,
                    sent = s.delivery.sent,
                    retrying = s.delivery.retrying,
                    failed = s.delivery.failed,
                    "digest round done"
                );
            }
            Ok(_) => {}
            Err(e) => error!(error = %format!("{e:#}"), "digest round failed"),
        }
    }
}

/// Completes on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            error!(error = %e, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
