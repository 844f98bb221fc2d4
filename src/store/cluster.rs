//! What instances sharing one database coordinate through it: the mail pacer, values
//! created once (the link-signing secret), and which instances are alive.

use super::*;

/// One running instance, as it reports itself ([`Store::heartbeat`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instance {
    /// Unique per process start: `host:pid:start`.
    pub id: String,
    pub host: String,
    pub pid: u32,
    pub version: String,
    pub started_at: DateTime<Utc>,
}

/// The cluster as the database sees it, for `/metrics`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClusterStats {
    /// Instances that reported within the last minute.
    pub instances_alive: i64,
    /// Active feeds whose next poll time has come.
    pub feeds_due: i64,
    /// Of those, due for longer than a poll lease: nobody is polling them.
    pub feeds_overdue: i64,
}

impl Store {
    /// Reserves the next slot of the mail pacer every process on this database shares:
    /// one message per `interval` in all (`mail.rate_limit` holds for the cluster).
    /// Returns when this message may go: `now`, or later when others went just before.
    pub async fn reserve_mail_slot(
        &self,
        now: DateTime<Utc>,
        interval: Duration,
    ) -> Result<DateTime<Utc>> {
        run!(self, db => db.reserve_mail_slot(now, interval))
    }

    /// The value of setting `name`, created as `candidate` by the first instance to ask:
    /// every instance gets the same value (the link-signing secret).
    pub async fn setting_or_insert(&self, name: &str, candidate: &str) -> Result<String> {
        let (name, candidate) = (name.to_owned(), candidate.to_owned());
        run!(self, db => db.setting_or_insert(&name, &candidate))
    }

    /// Records that `instance` is alive at `now`, and forgets instances not seen for a
    /// day.
    pub async fn heartbeat(&self, instance: &Instance, now: DateTime<Utc>) -> Result<()> {
        let instance = instance.clone();
        run!(self, db => db.heartbeat(&instance, now))
    }

    /// Instances alive and feeds due or overdue at `now` (overdue: due for longer than
    /// `lease`).
    pub async fn cluster_stats(&self, now: DateTime<Utc>, lease: Duration) -> Result<ClusterStats> {
        run!(self, db => db.cluster_stats(now, lease))
    }
}

/// An interval in whole milliseconds, at least 1.
pub(super) fn interval_ms(interval: Duration) -> i64 {
    i64::try_from(interval.as_millis())
        .unwrap_or(i64::MAX / 4)
        .max(1)
}

/// The time a stored pacer slot (ms since the epoch) stands for.
pub(super) fn slot_time(ms: i64) -> Result<DateTime<Utc>> {
    DateTime::from_timestamp_millis(ms).with_context(|| format!("stored slot {ms} is out of range"))
}
