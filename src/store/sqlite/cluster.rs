//! The mail pacer, settings and instances (see [`Store::reserve_mail_slot`]).

use super::*;
use crate::store::cluster::{
    ALL_HOSTS, FetchSlot, Instance, interval_ms, owner_is_gone, slot_time, slot_token, slots,
};

/// Gives back the slots held with a token: its host's and all hosts' (found by the
/// primary key, not by reading the slots of every host).
pub(super) const RELEASE_FETCH_SLOT: &str =
    "UPDATE fetch_slots SET holder = NULL, held_until = NULL
     WHERE host IN (?1, ?2) AND holder = ?3";

/// Frees every slot held by an instance that is gone ([`owner_is_gone`]), if one of
/// `host`'s is: the number freed.
fn free_slots_of_gone_holders(
    tx: &rusqlite::Transaction<'_>,
    host: &str,
    now_s: i64,
) -> Result<usize> {
    let mut gone = Vec::new();
    let mut holders = tx.prepare_cached(
        "SELECT DISTINCT s.held_by, i.seen_at FROM fetch_slots s
         LEFT JOIN instances i ON i.id = s.held_by
         WHERE s.host = ?1 AND s.held_by IS NOT NULL AND s.held_until > ?2",
    )?;
    let rows = holders.query_map(params![host, now_s], |r| {
        Ok((r.get::<_, String>(0)?, r.get::<_, Option<i64>>(1)?))
    })?;
    for row in rows {
        let (by, seen_at) = row?;
        if owner_is_gone(&by, seen_at, now_s) {
            gone.push(by);
        }
    }
    if gone.is_empty() {
        return Ok(0);
    }
    Ok(tx
        .prepare_cached(
            "UPDATE fetch_slots SET holder = NULL, held_until = NULL, held_by = NULL
             WHERE held_by IN (SELECT value FROM json_each(?1))",
        )?
        .execute([serde_json::to_string(&gone)?])?)
}

impl Sqlite {
    pub fn reserve_mail_slot(
        &self,
        now: DateTime<Utc>,
        interval: Duration,
    ) -> Result<DateTime<Utc>> {
        // One statement: SQLite's write lock makes it atomic across processes.
        let slot: i64 = self.conn().query_row(
            "UPDATE pacers SET next_at_ms = MAX(next_at_ms, ?1) + ?2 WHERE name = 'mail'
             RETURNING next_at_ms - ?2",
            params![now.timestamp_millis(), interval_ms(interval)],
            |r| r.get(0),
        )?;
        slot_time(slot)
    }

    pub fn reserve_slot(
        &self,
        pacer: &str,
        now: DateTime<Utc>,
        interval: Duration,
    ) -> Result<DateTime<Utc>> {
        let conn = self.conn();
        conn.execute(
            "INSERT INTO pacers (name, next_at_ms) VALUES (?1, 0) ON CONFLICT DO NOTHING",
            [pacer],
        )?;
        let slot: i64 = conn.query_row(
            "UPDATE pacers SET next_at_ms = MAX(next_at_ms, ?1) + ?2 WHERE name = ?3
             RETURNING next_at_ms - ?2",
            params![now.timestamp_millis(), interval_ms(interval), pacer],
            |r| r.get(0),
        )?;
        slot_time(slot)
    }

    pub fn acquire_fetch_slot(
        &self,
        host: &str,
        limits: FetchLimits,
        now: DateTime<Utc>,
        lease: Duration,
    ) -> Result<Option<FetchSlot>> {
        let token = slot_token()?;
        let (now_s, until) = (now.timestamp(), now.timestamp() + lease_secs(lease));
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        for (host, limit) in [(host, limits.per_host), (ALL_HOSTS, limits.concurrency)] {
            let rows: i64 = tx
                .prepare_cached("SELECT COUNT(*) FROM fetch_slots WHERE host = ?1 AND slot < ?2")?
                .query_row(params![host, slots(limit)], |r| r.get(0))?;
            for slot in (rows < slots(limit))
                .then_some(0..slots(limit))
                .into_iter()
                .flatten()
            {
                tx.prepare_cached(
                    "INSERT INTO fetch_slots (host, slot) VALUES (?1, ?2) ON CONFLICT DO NOTHING",
                )?
                .execute(params![host, slot])?;
            }
            let mut take = tx.prepare_cached(
                "UPDATE fetch_slots SET holder = ?1, held_until = ?2, held_by = ?6
                 WHERE rowid = (SELECT rowid FROM fetch_slots
                                WHERE host = ?3 AND slot < ?4
                                  AND (holder IS NULL OR held_until <= ?5)
                                LIMIT 1)",
            )?;
            let this = &Instance::this().id;
            let args = params![token, until, host, slots(limit), now_s, this];
            let mut taken = take.execute(args)?;
            // All taken: the slots of holders that are gone (a poll that died) are free.
            if taken == 0 && free_slots_of_gone_holders(&tx, host, now_s)? > 0 {
                taken = take.execute(args)?;
            }
            if taken == 0 {
                // Full: the rollback gives back the slot taken above, if any.
                return Ok(None);
            }
        }
        tx.commit()?;
        Ok(Some(FetchSlot {
            host: host.to_owned(),
            token,
        }))
    }

    pub fn release_fetch_slot(&self, slot: &FetchSlot) -> Result<()> {
        self.conn()
            .prepare_cached(RELEASE_FETCH_SLOT)?
            .execute(params![slot.host, ALL_HOSTS, slot.token])?;
        Ok(())
    }

    pub fn setting_or_insert(&self, name: &str, candidate: &str) -> Result<String> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        tx.execute(
            "INSERT INTO settings (name, value) VALUES (?1, ?2) ON CONFLICT (name) DO NOTHING",
            params![name, candidate],
        )?;
        let value = tx.query_row("SELECT value FROM settings WHERE name = ?1", [name], |r| {
            r.get(0)
        })?;
        tx.commit()?;
        Ok(value)
    }

    pub fn heartbeat(&self, instance: &Instance, now: DateTime<Utc>) -> Result<()> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        tx.execute(
            "INSERT INTO instances (id, host, pid, version, started_at, seen_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)
             ON CONFLICT (id) DO UPDATE SET seen_at = excluded.seen_at",
            params![
                instance.id,
                instance.host,
                instance.pid,
                instance.version,
                instance.started_at.timestamp(),
                now.timestamp()
            ],
        )?;
        tx.execute(
            "DELETE FROM instances WHERE seen_at < ?1",
            [now.timestamp() - 86_400],
        )?;
        tx.commit()?;
        Ok(())
    }

    pub fn cluster_stats(&self, now: DateTime<Utc>, lease: Duration) -> Result<ClusterStats> {
        let now_s = now.timestamp();
        Ok(self.conn().query_row(
            "SELECT (SELECT COUNT(*) FROM instances WHERE seen_at >= ?1 - 60),
                    (SELECT COUNT(*) FROM feeds
                      WHERE active = 1 AND gone_at IS NULL AND next_poll_at <= ?1),
                    (SELECT COUNT(*) FROM feeds
                      WHERE active = 1 AND gone_at IS NULL AND next_poll_at <= ?1 - ?2)",
            params![now_s, lease_secs(lease)],
            |r| {
                Ok(ClusterStats {
                    instances_alive: r.get(0)?,
                    feeds_due: r.get(1)?,
                    feeds_overdue: r.get(2)?,
                })
            },
        )?)
    }
}
