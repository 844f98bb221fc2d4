//! What the daemon counts, in the Prometheus/OpenMetrics text format (`GET /metrics`).
//!
//! Counters and the fetch-duration histogram are updated by the jobs as they run; the
//! gauges that describe stored state (outbox depth, oldest pending mail, failing feeds)
//! are read from the database at scrape time by [`Metrics::encode`]'s caller, so they are
//! right even after a restart. Every series, each label value included, is there from the
//! start at 0, so a rate or an alert never waits for the first event.

use std::sync::atomic::{AtomicI64, AtomicU64};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

/// The content type of [`Metrics::encode`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Result_ {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindResult {
    kind: &'static str,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Kind {
    kind: &'static str,
}

/// The kinds of destination beside email, as the `kind` label has them.
pub const CHANNEL_KINDS: [&str; 7] = [
    "webhook",
    "ntfy",
    "telegram",
    "matrix",
    "slack",
    "discord",
    "mattermost",
];

/// What a delivery to a destination came to, as the `result` label has it.
pub const PUSH_RESULTS: [&str; 4] = ["sent", "retry", "failed", "rejected"];

/// Every metric Tidings exports. Cheap to share: clone the `Arc` it lives in.
pub struct Metrics {
    registry: Registry,
    polls: Family<Result_, Counter>,
    fetch_seconds: Histogram,
    items_new: Counter,
    items_updated: Counter,
    matches: Counter,
    digests_queued: Counter,
    articles: Family<Result_, Counter>,
    mail: Family<Result_, Counter>,
    push: Family<KindResult, Counter>,
    /// Read from the database at scrape time, by kind of destination.
    push_pending: Family<Kind, Gauge>,
    push_oldest_seconds: Family<Kind, Gauge<f64, AtomicU64>>,
    reloads: Family<Result_, Counter>,
    /// Kept by the store ([`crate::Store::write_failures`]); brought up to its count at
    /// scrape time.
    database_write_failures: Counter,
    /// Read from the database at scrape time.
    pub outbox_pending: Gauge,
    pub oldest_pending_seconds: Gauge<f64, AtomicU64>,
    pub feeds_active: Gauge,
    pub feeds_failing: Gauge,
    pub subscribers: Gauge,
    /// Instances of the cluster that reported within the last minute.
    pub instances: Gauge,
    /// Active feeds whose next poll time has come, and those due longer than a poll lease.
    pub feeds_due: Gauge,
    pub feeds_overdue: Gauge,
    /// Unix time of the scheduler's last tick.
    pub last_tick: Gauge<i64, AtomicI64>,
}

/// How one feed poll ended, as the `result` label of `tidings_polls_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PollResult {
    Updated,
    NotModified,
    Failed,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

/// A counter per `result`, each created at 0 (a family shows only the series it has).
fn family(results: &[&'static str]) -> Family<Result_, Counter> {
    let family = Family::<Result_, Counter>::default();
    for &result in results {
        let _ = family.get_or_create(&Result_ { result });
    }
    family
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("tidings");
        let polls = family(&["updated", "not_modified", "failed"]);
        registry.register(
            "polls",
            "Feed polls by result (updated, not_modified, failed)",
            polls.clone(),
        );
        // 50 ms … ~51 s: loopback feeds to slow publishers at the timeout.
        let fetch_seconds = Histogram::new(exponential_buckets(0.05, 2.0, 11));
        registry.register_with_unit(
            "fetch_duration",
            "Time to fetch, parse and store one feed",
            Unit::Seconds,
            fetch_seconds.clone(),
        );
        let items_new = Counter::default();
        registry.register("items_ingested", "New items stored", items_new.clone());
        let items_updated = Counter::default();
        registry.register(
            "items_updated",
            "Known items whose text changed materially",
            items_updated.clone(),
        );
        let matches = Counter::default();
        registry.register(
            "matches",
            "Item-subscription matches recorded",
            matches.clone(),
        );
        let digests_queued = Counter::default();
        registry.register(
            "digests_queued",
            "Digests rendered into the outbox",
            digests_queued.clone(),
        );
        let articles = family(&["ok", "none", "retrying", "failed"]);
        registry.register(
            "articles",
            "Article fetches of full-text feeds by result (ok, none: the page has no story, \
             retrying, failed: given up)",
            articles.clone(),
        );
        let mail = family(&["sent", "retrying", "failed"]);
        registry.register(
            "mail",
            "Delivery attempts by result (sent, retrying, failed)",
            mail.clone(),
        );
        let push = Family::<KindResult, Counter>::default();
        let push_pending = Family::<Kind, Gauge>::default();
        let push_oldest_seconds = Family::<Kind, Gauge<f64, AtomicU64>>::default();
        for kind in CHANNEL_KINDS {
            for result in PUSH_RESULTS {
                let _ = push.get_or_create(&KindResult { kind, result });
            }
            let _ = push_pending.get_or_create(&Kind { kind });
            let _ = push_oldest_seconds.get_or_create(&Kind { kind });
        }
        registry.register(
            "deliveries",
            "Deliveries to destinations beside email, by kind (webhook, ntfy, telegram, matrix, \
             slack, discord, mattermost) and result (sent, retry, failed: gave up on a temporary \
             failure, rejected: a permanent one)",
            push.clone(),
        );
        registry.register(
            "deliveries_pending",
            "Messages waiting for destinations beside email, by kind",
            push_pending.clone(),
        );
        registry.register_with_unit(
            "deliveries_oldest_pending_age",
            "Age of the oldest message waiting for a destination of this kind (0 when none)",
            Unit::Seconds,
            push_oldest_seconds.clone(),
        );
        let reloads = family(&["ok", "error"]);
        registry.register(
            "config_reloads",
            "Config reloads by result (ok, error)",
            reloads.clone(),
        );
        let database_write_failures = Counter::default();
        registry.register(
            "database_write_failures",
            "Database calls that failed because the database could not be written \
             (disk full, read-only, unreachable)",
            database_write_failures.clone(),
        );
        let outbox_pending = Gauge::default();
        registry.register(
            "outbox_pending",
            "Messages waiting to be sent",
            outbox_pending.clone(),
        );
        let oldest_pending_seconds = Gauge::<f64, AtomicU64>::default();
        registry.register_with_unit(
            "outbox_oldest_pending_age",
            "Age of the oldest message waiting to be sent (0 when none)",
            Unit::Seconds,
            oldest_pending_seconds.clone(),
        );
        let feeds_active = Gauge::default();
        registry.register("feeds", "Feeds being polled", feeds_active.clone());
        let feeds_failing = Gauge::default();
        registry.register(
            "feeds_failing",
            "Feeds whose last poll failed, or gone (HTTP 410)",
            feeds_failing.clone(),
        );
        let subscribers = Gauge::default();
        registry.register("subscribers", "Subscribers", subscribers.clone());
        let instances = Gauge::default();
        registry.register(
            "cluster_instances",
            "Tidings instances on this database that reported within the last minute",
            instances.clone(),
        );
        let feeds_due = Gauge::default();
        registry.register(
            "feeds_due",
            "Active feeds whose next poll time has come (every instance)",
            feeds_due.clone(),
        );
        let feeds_overdue = Gauge::default();
        registry.register(
            "feeds_overdue",
            "Feeds due for longer than a poll lease: no instance is polling them",
            feeds_overdue.clone(),
        );
        let last_tick = Gauge::<i64, AtomicI64>::default();
        registry.register_with_unit(
            "scheduler_last_tick_timestamp",
            "Unix time of the scheduler's last tick",
            Unit::Seconds,
            last_tick.clone(),
        );
        Metrics {
            registry,
            polls,
            fetch_seconds,
            items_new,
            items_updated,
            matches,
            digests_queued,
            articles,
            mail,
            push,
            push_pending,
            push_oldest_seconds,
            reloads,
            database_write_failures,
            outbox_pending,
            oldest_pending_seconds,
            feeds_active,
            feeds_failing,
            subscribers,
            instances,
            feeds_due,
            feeds_overdue,
            last_tick,
        }
    }

    /// One feed polled: its result, how long it took, what it stored.
    pub fn poll(
        &self,
        result: PollResult,
        seconds: f64,
        new_items: usize,
        updated: usize,
        matches: usize,
    ) {
        let result = match result {
            PollResult::Updated => "updated",
            PollResult::NotModified => "not_modified",
            PollResult::Failed => "failed",
        };
        self.polls.get_or_create(&Result_ { result }).inc();
        self.fetch_seconds.observe(seconds);
        self.items_new.inc_by(new_items as u64);
        self.items_updated.inc_by(updated as u64);
        self.matches.inc_by(matches as u64);
    }

    /// One delivery to a destination of `kind` ended so (one of [`PUSH_RESULTS`]).
    pub fn delivery(&self, kind: &str, result: &'static str) {
        if let Some(kind) = CHANNEL_KINDS.into_iter().find(|k| *k == kind) {
            self.push.get_or_create(&KindResult { kind, result }).inc();
        }
    }

    /// The destination backlog read at scrape time: (kind, pending, oldest age in s).
    pub fn set_push_backlog(&self, backlog: &[(&str, i64, f64)]) {
        for kind in CHANNEL_KINDS {
            let (pending, age) = backlog
                .iter()
                .find(|(k, _, _)| *k == kind)
                .map_or((0, 0.0), |&(_, n, age)| (n, age));
            self.push_pending.get_or_create(&Kind { kind }).set(pending);
            self.push_oldest_seconds
                .get_or_create(&Kind { kind })
                .set(age);
        }
    }

    /// One article fetch ended so (`ok`, `none`, `retrying` or `failed`).
    pub fn article(&self, result: &'static str) {
        self.articles.get_or_create(&Result_ { result }).inc();
    }

    /// A digest round: digests queued and what delivery did.
    pub fn digests(&self, queued: usize, sent: usize, retrying: usize, failed: usize) {
        self.digests_queued.inc_by(queued as u64);
        for (result, n) in [("sent", sent), ("retrying", retrying), ("failed", failed)] {
            self.mail
                .get_or_create(&Result_ { result })
                .inc_by(n as u64);
        }
    }

    /// A config reload was tried.
    pub fn reload(&self, ok: bool) {
        let result = if ok { "ok" } else { "error" };
        self.reloads.get_or_create(&Result_ { result }).inc();
    }

    /// The store has counted `total` failed writes since it was opened (it is the one
    /// the daemon keeps for its life, so the count only grows).
    pub fn set_database_write_failures(&self, total: u64) {
        let seen = self.database_write_failures.get();
        self.database_write_failures
            .inc_by(total.saturating_sub(seen));
    }

    /// The whole registry in the OpenMetrics text format ([`CONTENT_TYPE`]).
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_names_units_and_labels() {
        let m = Metrics::new();
        m.poll(PollResult::Updated, 0.2, 3, 1, 2);
        m.poll(PollResult::Failed, 1.5, 0, 0, 0);
        m.digests(2, 1, 1, 0);
        m.reload(false);
        m.set_database_write_failures(5);
        m.set_database_write_failures(7);
        m.outbox_pending.set(4);
        let text = m.encode();
        for line in [
            "tidings_polls_total{result=\"updated\"} 1",
            "tidings_polls_total{result=\"failed\"} 1",
            "tidings_items_ingested_total 3",
            "tidings_items_updated_total 1",
            "tidings_matches_total 2",
            "tidings_digests_queued_total 2",
            "tidings_mail_total{result=\"sent\"} 1",
            "tidings_mail_total{result=\"retrying\"} 1",
            "tidings_config_reloads_total{result=\"error\"} 1",
            "tidings_database_write_failures_total 7",
            "tidings_outbox_pending 4",
            "tidings_scheduler_last_tick_timestamp_seconds 0",
            "tidings_fetch_duration_seconds_count 2",
            "tidings_fetch_duration_seconds_bucket{le=\"0.2\"} 1",
            "tidings_fetch_duration_seconds_bucket{le=\"1.6\"} 2",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
        assert!(text.ends_with("# EOF\n"));
    }

    #[test]
    fn every_series_is_exposed_from_the_start_at_zero() {
        let text = Metrics::new().encode();
        for line in [
            "tidings_polls_total{result=\"updated\"} 0",
            "tidings_polls_total{result=\"not_modified\"} 0",
            "tidings_polls_total{result=\"failed\"} 0",
            "tidings_mail_total{result=\"sent\"} 0",
            "tidings_mail_total{result=\"retrying\"} 0",
            "tidings_mail_total{result=\"failed\"} 0",
            "tidings_config_reloads_total{result=\"ok\"} 0",
            "tidings_config_reloads_total{result=\"error\"} 0",
            "tidings_items_ingested_total 0",
            "tidings_digests_queued_total 0",
            "tidings_fetch_duration_seconds_count 0",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
    }
}
