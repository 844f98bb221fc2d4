//! The mail pacer, settings and instances (see [`Store::reserve_mail_slot`]).

use super::*;
use crate::store::cluster::{
    ALL_HOSTS, FetchSlot, Instance, interval_ms, owner_is_gone, slot_time, slot_token, slots,
};

impl Postgres {
    pub fn reserve_mail_slot(
        &self,
        now: DateTime<Utc>,
        interval: Duration,
    ) -> Result<DateTime<Utc>> {
        // The row lock the UPDATE takes makes concurrent senders take turns.
        let slot: i64 = self
            .conn()?
            .query_one(
                "UPDATE pacers SET next_at_ms = GREATEST(next_at_ms, $1) + $2 WHERE name = 'mail'
                 RETURNING next_at_ms - $2",
                &[&now.timestamp_millis(), &interval_ms(interval)],
            )?
            .try_get(0)?;
        slot_time(slot)
    }

    pub fn reserve_slot(
        &self,
        pacer: &str,
        now: DateTime<Utc>,
        interval: Duration,
    ) -> Result<DateTime<Utc>> {
        let mut conn = self.conn()?;
        conn.execute(
            "INSERT INTO pacers (name, next_at_ms) VALUES ($1, 0) ON CONFLICT DO NOTHING",
            &[&pacer],
        )?;
        // The row lock the UPDATE takes makes concurrent senders take turns.
        let slot: i64 = conn
            .query_one(
                "UPDATE pacers SET next_at_ms = GREATEST(next_at_ms, $1) + $2 WHERE name = $3
                 RETURNING next_at_ms - $2",
                &[&now.timestamp_millis(), &interval_ms(interval), &pacer],
            )?
            .try_get(0)?;
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
        let mut conn = self.conn()?;
        let mut tx = conn.transaction()?;
        for (host, limit) in [(host, limits.per_host), (ALL_HOSTS, limits.concurrency)] {
            let rows: i64 = tx
                .query_one(
                    "SELECT COUNT(*) FROM fetch_slots WHERE host = $1 AND slot < $2::BIGINT",
                    &[&host, &slots(limit)],
                )?
                .try_get(0)?;
            if rows < slots(limit) {
                tx.execute(
                    "INSERT INTO fetch_slots (host, slot)
                     SELECT $1, s FROM generate_series(0, $2::BIGINT - 1) AS s
                     ON CONFLICT DO NOTHING",
                    &[&host, &slots(limit)],
                )?;
            }
            // A slot another instance is taking right now is skipped, not waited for.
            let take = "UPDATE fetch_slots SET holder = $1, held_until = $2, held_by = $6
                 WHERE (host, slot) = (SELECT host, slot FROM fetch_slots
                                       WHERE host = $3 AND slot < $4::BIGINT
                                         AND (holder IS NULL OR held_until <= $5)
                                       LIMIT 1 FOR UPDATE SKIP LOCKED)";
            let this = &Instance::this().id;
            let args: [&(dyn postgres::types::ToSql + Sync); 6] =
                [&token, &until, &host, &slots(limit), &now_s, this];
            let mut taken = tx.execute(take, &args)?;
            // All taken: the slots of holders that are gone (a poll that died) are free.
            if taken == 0 {
                let holders = tx.query(
                    "SELECT DISTINCT s.held_by, i.seen_at FROM fetch_slots s
                     LEFT JOIN instances i ON i.id = s.held_by
                     WHERE s.host = $1 AND s.held_by IS NOT NULL AND s.held_until > $2",
                    &[&host, &now_s],
                )?;
                let mut gone = Vec::new();
                for row in holders {
                    let by: String = row.try_get(0)?;
                    if owner_is_gone(&by, row.try_get(1)?, now_s) {
                        gone.push(by);
                    }
                }
                if !gone.is_empty()
                    && tx.execute(
                        "UPDATE fetch_slots SET holder = NULL, held_until = NULL, held_by = NULL
                         WHERE held_by = ANY($1)",
                        &[&gone],
                    )? > 0
                {
                    taken = tx.execute(take, &args)?;
                }
            }
            if taken == 0 {
                // Full: the rollback (on drop) gives back the slot taken above, if any.
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
        // By the primary key: not a read of every host's slots.
        self.conn()?.execute(
            "UPDATE fetch_slots SET holder = NULL, held_until = NULL
             WHERE host IN ($1, $2) AND holder = $3",
            &[&slot.host, &ALL_HOSTS, &slot.token],
        )?;
        Ok(())
    }

    pub fn setting_or_insert(&self, name: &str, candidate: &str) -> Result<String> {
        let mut conn = self.conn()?;
        // Two instances inserting at once: the second's insert waits for the first's
        // commit and then does nothing; its SELECT (a new snapshot) sees the first's value.
        conn.execute(
            "INSERT INTO settings (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
            &[&name, &candidate],
        )?;
        Ok(conn
            .query_one("SELECT value FROM settings WHERE name = $1", &[&name])?
            .try_get(0)?)
    }

    /// How far the database server's clock is from `local`: (server minus local, the round
    /// trip), in milliseconds, the best of three tries. Only the query is timed, not the
    /// wait for a pooled connection.
    pub fn clock_offset_ms(&self, local: fn() -> DateTime<Utc>) -> Result<(i64, i64)> {
        let mut conn = self.conn()?;
        let statement =
            conn.prepare("SELECT (extract(epoch FROM clock_timestamp()) * 1000)::bigint")?;
        let mut best: Option<(i64, i64)> = None;
        for _ in 0..3 {
            let before = local();
            let server: i64 = conn.query_one(&statement, &[])?.try_get(0)?;
            let after = local();
            let round_trip = (after - before).num_milliseconds();
            // The server read its clock about halfway through the round trip.
            let offset = server - (before.timestamp_millis() + round_trip / 2);
            if best.is_none_or(|(_, rtt)| round_trip < rtt) {
                best = Some((offset, round_trip));
            }
        }
        Ok(best.unwrap_or_default())
    }

    pub fn heartbeat(&self, instance: &Instance, now: DateTime<Utc>) -> Result<()> {
        let mut conn = self.conn()?;
        let mut tx = conn.transaction()?;
        tx.execute(
            "INSERT INTO instances (id, host, pid, version, started_at, seen_at)
             VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (id) DO UPDATE SET seen_at = excluded.seen_at",
            &[
                &instance.id,
                &instance.host,
                &i64::from(instance.pid),
                &instance.version,
                &instance.started_at.timestamp(),
                &now.timestamp(),
            ],
        )?;
        tx.execute(
            "DELETE FROM instances WHERE seen_at < $1",
            &[&(now.timestamp() - 86_400)],
        )?;
        tx.commit()?;
        Ok(())
    }

    pub fn cluster_stats(&self, now: DateTime<Utc>, lease: Duration) -> Result<ClusterStats> {
        let now_s = now.timestamp();
        let r = self.conn()?.query_one(
            "SELECT (SELECT COUNT(*) FROM instances WHERE seen_at >= $1::BIGINT - 60),
                    (SELECT COUNT(*) FROM feeds
                      WHERE active AND gone_at IS NULL AND next_poll_at <= $1::BIGINT),
                    (SELECT COUNT(*) FROM feeds
                      WHERE active AND gone_at IS NULL AND next_poll_at <= $1::BIGINT - $2::BIGINT)",
            &[&now_s, &lease_secs(lease)],
        )?;
        Ok(ClusterStats {
            instances_alive: r.try_get(0)?,
            feeds_due: r.try_get(1)?,
            feeds_overdue: r.try_get(2)?,
        })
    }
}
