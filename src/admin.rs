//! The admin HTTP listener (axum): `GET /healthz` and `GET /metrics`.
//!
//! `/healthz` answers 200 when the database answers, its writes go through and the
//! scheduler has ticked recently, 503 (with the reason) otherwise, including while
//! shutting down. `/metrics` is [`crate::metrics`] in the OpenMetrics text format, with
//! the gauges that describe stored state read from the database at scrape time. It
//! listens on loopback unless `[service].admin_listen` says otherwise, and has no
//! authentication of its own.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use chrono::Utc;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::ListenLimits;
use crate::metrics::CONTENT_TYPE;
use crate::pipeline::App;

/// The scheduler ticks every 15 s; this many seconds without a tick is unhealthy.
pub const STALE_TICK_SECS: i64 = 90;
/// How long the database may take to answer a health check.
const DB_TIMEOUT: Duration = Duration::from_secs(5);

/// The admin listener's deadlines and caps: enough for health checks and scrapes, and
/// its own, so a flood of the subscriber pages never reaches `/healthz`.
const LIMITS: ListenLimits = ListenLimits {
    header_timeout: Duration::from_secs(10),
    request_timeout: Duration::from_secs(30),
    max_connections: 64,
    max_connections_per_client: 32,
};

/// Binds `addr` and serves the admin routes until `stop` is cancelled. Returns the
/// address actually bound (useful with port 0).
pub async fn serve(
    addr: SocketAddr,
    app: watch::Receiver<App>,
    stop: CancellationToken,
) -> Result<SocketAddr> {
    let router = Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .with_state(Admin {
            app,
            said: Arc::default(),
        });
    let setting = "[service].admin_listen";
    let bound = crate::listener::serve("admin", setting, addr, router, LIMITS, stop).await?;
    info!(address = %bound, "admin listener: /healthz, /metrics");
    Ok(bound)
}

/// The most of an answer `tidings health` reads: `/healthz` says a few short lines.
const MAX_ANSWER: usize = 4096;

/// What the daemon's `/healthz` said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Health {
    /// `200` with [`healthy_answer`]; otherwise a `503` with the reasons.
    pub healthy: bool,
    /// The answer, as it was sent.
    pub answer: String,
}

/// `tidings health`: asks the admin listener at `addr` for `/healthz` (an unspecified
/// address like `0.0.0.0` is asked on loopback). For container health checks, where no
/// HTTP client is installed. Only the daemon's own answers count: anything else there
/// (another server, a redirect, an answer that never ends or is more than a few KB) is
/// an error, as is nothing listening.
pub async fn probe(addr: SocketAddr) -> Result<Health> {
    let mut target = addr;
    if target.ip().is_unspecified() {
        target.set_ip(match addr {
            SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    let url = format!("http://{target}/healthz");
    let client = reqwest::Client::builder()
        .timeout(DB_TIMEOUT + Duration::from_secs(2))
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .build()?;
    let mut response = client
        .get(&url)
        .send()
        .await
        .with_context(|| format!("asking {url} (is `tidings run` running?)"))?;
    let status = response.status();
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .with_context(|| format!("reading the answer of {url} ({status})"))?
    {
        body.extend_from_slice(&chunk);
        if body.len() > MAX_ANSWER {
            bail!(
                "{url} answered {status} with more than {MAX_ANSWER} bytes: not the health \
                 check of Tidings (is another server on [service].admin_listen?)"
            );
        }
    }
    let answer = String::from_utf8_lossy(&body).into_owned();
    match status {
        StatusCode::OK if is_healthy_answer(&answer) => Ok(Health {
            healthy: true,
            answer,
        }),
        StatusCode::SERVICE_UNAVAILABLE if answer.starts_with(UNHEALTHY) => Ok(Health {
            healthy: false,
            answer,
        }),
        _ => {
            let to = response
                .headers()
                .get(header::LOCATION)
                .map(|l| format!(" to {}", String::from_utf8_lossy(l.as_bytes())))
                .unwrap_or_default();
            let start: String = answer.chars().take(80).collect();
            bail!(
                "{url} answered {status}{to} ({start:?}): not the health check of Tidings \
                 (is another server on [service].admin_listen?)"
            )
        }
    }
}

/// The first line of `/healthz`'s answer when something is wrong; the reasons follow.
const UNHEALTHY: &str = "unhealthy\n";

/// `/healthz`'s answer when all is well, `since_tick` seconds after the scheduler's last
/// tick; [`probe`] takes nothing else for healthy.
fn healthy_answer(since_tick: i64) -> String {
    format!("ok\nscheduler: last tick {since_tick} s ago\n")
}

/// Whether `answer` is one that [`healthy_answer`] gives.
fn is_healthy_answer(answer: &str) -> bool {
    answer
        .strip_prefix("ok\nscheduler: last tick ")
        .and_then(|rest| rest.strip_suffix(" s ago\n"))
        .is_some_and(|secs| secs.parse::<i64>().is_ok())
}

/// What the admin listener's handlers share.
#[derive(Clone)]
struct Admin {
    app: watch::Receiver<App>,
    /// The problems `/healthz` last logged, their figures left out ([`Admin::tell`]).
    said: Arc<Mutex<Option<String>>>,
}

impl Admin {
    /// Logs what a health check found when it differs from what the last one found, so a
    /// probe every few seconds logs a line when health changes, not one per probe.
    fn tell(&self, problems: &[String]) {
        // Times and counts change from one probe to the next; what is wrong does not.
        let gist = (!problems.is_empty()).then(|| {
            problems
                .join("; ")
                .chars()
                .filter(|c| !c.is_ascii_digit())
                .collect::<String>()
        });
        let mut said = self.said.lock().unwrap_or_else(|p| p.into_inner());
        if *said == gist {
            return;
        }
        match &gist {
            Some(_) => warn!(problems = %problems.join("; "), "health check failing"),
            None => info!("health check passing again"),
        }
        *said = gist;
    }
}

async fn healthz(State(admin): State<Admin>) -> Response {
    let app = admin.app.borrow().clone();
    let mut problems = Vec::new();
    if app.shutdown.draining.is_cancelled() {
        problems.push("shutting down".to_string());
    }
    match tokio::time::timeout(DB_TIMEOUT, app.store.ping()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => problems.push(format!("database: {e:#}")),
        Err(_) => problems.push(format!(
            "database: no answer within {} s",
            DB_TIMEOUT.as_secs()
        )),
    }
    if let Some(trouble) = app.store.write_trouble() {
        problems.push(format!("database: {trouble}"));
    }
    let since_tick = Utc::now().timestamp() - app.metrics.last_tick.get();
    if since_tick > STALE_TICK_SECS {
        problems.push(format!("scheduler: no tick for {since_tick} s"));
    }
    admin.tell(&problems);
    if problems.is_empty() {
        (StatusCode::OK, healthy_answer(since_tick)).into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("{UNHEALTHY}{}\n", problems.join("\n")),
        )
            .into_response()
    }
}

async fn metrics(State(admin): State<Admin>) -> Response {
    let app = admin.app.borrow().clone();
    app.metrics
        .set_database_write_failures(app.store.write_failures());
    match app.store.service_stats().await {
        Ok(stats) => {
            let m = &app.metrics;
            m.outbox_pending.set(stats.outbox_pending);
            let age = stats.oldest_pending.map_or(0.0, |t| {
                (app.store.now() - t).num_milliseconds().max(0) as f64 / 1000.0
            });
            m.oldest_pending_seconds.set(age);
            m.feeds_active.set(stats.feeds_active);
            m.feeds_failing.set(stats.feeds_failing);
            m.subscribers.set(stats.subscribers);
        }
        // Counters are still worth serving; the stored-state gauges keep their last value.
        Err(e) => warn!(error = %format!("{e:#}"), "metrics: reading stored state"),
    }
    match app.store.push_backlog().await {
        Ok(backlog) => {
            let now = app.store.now();
            let rows: Vec<(&str, i64, f64)> = backlog
                .iter()
                .map(|(kind, n, oldest)| {
                    let age = (now - *oldest).num_milliseconds().max(0) as f64 / 1000.0;
                    (kind.as_str(), *n, age)
                })
                .collect();
            app.metrics.set_push_backlog(&rows);
        }
        Err(e) => warn!(error = %format!("{e:#}"), "metrics: reading the destinations' backlog"),
    }
    let lease = crate::pipeline::poll_lease(&app.config.poll);
    match app.store.cluster_stats(app.store.now(), lease).await {
        Ok(cluster) => {
            let m = &app.metrics;
            m.instances.set(cluster.instances_alive);
            m.feeds_due.set(cluster.feeds_due);
            m.feeds_overdue.set(cluster.feeds_overdue);
        }
        Err(e) => warn!(error = %format!("{e:#}"), "metrics: reading the cluster's state"),
    }
    ([(header::CONTENT_TYPE, CONTENT_TYPE)], app.metrics.encode()).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_daemons_healthy_answer_counts_as_healthy() {
        for (name, answer, healthy) in [
            ("just ticked", healthy_answer(0), true),
            ("a while ago", healthy_answer(89), true),
            (
                "a web page",
                "<html>Welcome to nginx!</html>".to_string(),
                false,
            ),
            ("ok alone", "ok".to_string(), false),
            ("ok and more", format!("ok\n{}", "x".repeat(200)), false),
            ("unhealthy", format!("{UNHEALTHY}shutting down\n"), false),
            ("empty", String::new(), false),
        ] {
            assert_eq!(is_healthy_answer(&answer), healthy, "{name}: {answer:?}");
        }
    }
}
