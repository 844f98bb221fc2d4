//! Upkeep: health, counts for metrics, retention. Backups are PostgreSQL's own (pg_dump).

use super::*;

impl Postgres {
    pub fn ping(&self) -> Result<()> {
        self.conn()?.query_one("SELECT 1", &[])?;
        Ok(())
    }

    pub fn service_stats(&self) -> Result<ServiceStats> {
        let r = self.conn()?.query_one(
            "SELECT (SELECT COUNT(*) FROM outbox WHERE status = 'pending' AND kind = 'mail'),
                    (SELECT MIN(created_at) FROM outbox WHERE status = 'pending' AND kind = 'mail'),
                    (SELECT COUNT(*) FROM feeds WHERE active),
                    (SELECT COUNT(*) FROM feeds WHERE active
                        AND (consecutive_failures > 0 OR gone_at IS NOT NULL)),
                    (SELECT COUNT(*) FROM subscribers)",
            &[],
        )?;
        Ok(ServiceStats {
            outbox_pending: r.try_get(0)?,
            oldest_pending: time_opt(r.try_get(1)?)?,
            feeds_active: r.try_get(2)?,
            feeds_failing: r.try_get(3)?,
            subscribers: r.try_get(4)?,
        })
    }

    /// Prunes what is older than `cutoff`, as the SQLite store does:
    /// - sent and failed mail created before `cutoff` is deleted, with the matches it
    ///   carried (pending mail is never touched);
    /// - items first seen before `cutoff` that no pending match needs are deleted, with
    ///   their matches (all long since taken), leaving a tombstone in `item_tombstones`.
    ///
    /// The work is done in short batches, each a transaction, with a pause between them.
    /// Each batch holds [`PRUNE_LOCK`] (one prune at a time in the cluster) and checks,
    /// before it commits, that it made no match pending and dropped none that was.
    pub fn prune(&self, cutoff: DateTime<Utc>, now: DateTime<Utc>) -> Result<Pruned> {
        // One prune at a time in the cluster: the others skip theirs. The lock belongs to
        // this connection, held to the end (a crash closes it, and so releases it).
        let mut job = self.conn()?;
        let ours: bool = job
            .query_one("SELECT pg_try_advisory_lock($1)", &[&PRUNE_JOB_LOCK])?
            .try_get(0)?;
        if !ours {
            return Ok(Pruned {
                skipped: true,
                ..Pruned::default()
            });
        }
        let result = self.prune_held(cutoff, now);
        job.execute("SELECT pg_advisory_unlock($1)", &[&PRUNE_JOB_LOCK])?;
        result
    }

    /// [`Postgres::prune`] once its job lock is held.
    fn prune_held(&self, cutoff: DateTime<Utc>, now: DateTime<Utc>) -> Result<Pruned> {
        let mut pruned = Pruned::default();
        loop {
            let outbox = self.prune_outbox_batch(cutoff)?;
            pruned.outbox += outbox.outbox;
            pruned.matches += outbox.matches;
            if outbox.outbox < PRUNE_OUTBOX_BATCH {
                break;
            }
            std::thread::sleep(PRUNE_PAUSE);
        }
        // Keyset cursor over (first_seen_at, id): items a pending match holds stay behind
        // it instead of being scanned again by every batch.
        let mut after = (i64::MIN, i64::MIN);
        while let Some((items, cursor)) = self.prune_items_batch(cutoff, now, after)? {
            pruned.items += items.items;
            pruned.matches += items.matches;
            after = cursor;
            std::thread::sleep(PRUNE_PAUSE);
        }
        self.conn()?.execute(
            "DELETE FROM stories_sent WHERE sent_at < $1",
            &[&cutoff.timestamp()],
        )?;
        Ok(pruned)
    }

    /// Deletes up to [`PRUNE_OUTBOX_BATCH`] sent or failed messages created before
    /// `cutoff`, oldest first, with their matches.
    fn prune_outbox_batch(&self, cutoff: DateTime<Utc>) -> Result<Pruned> {
        let mut pruned = Pruned::default();
        let mut conn = self.conn()?;
        let mut tx = conn.transaction()?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&PRUNE_LOCK])?;
        // Locked to the end: a requeue of one of them waits, or was first and made it
        // pending (then the lock's re-check leaves it out).
        let ids: Vec<i64> = tx
            .query(
                "SELECT id FROM outbox WHERE status <> 'pending' AND created_at < $1
                 ORDER BY created_at LIMIT $2 FOR UPDATE",
                &[&cutoff.timestamp(), &(PRUNE_OUTBOX_BATCH as i64)],
            )?
            .iter()
            .map(|r| r.try_get(0))
            .collect::<Result<_, _>>()?;
        // The matches go first: `matches.outbox_id` is ON DELETE SET NULL, so deleting
        // the mail under them would make them pending, and old news would go out again.
        let taken: Vec<bool> = tx
            .query(
                "DELETE FROM matches WHERE outbox_id = ANY($1) RETURNING outbox_id IS NULL",
                &[&ids],
            )?
            .iter()
            .map(|r| r.try_get(0))
            .collect::<Result<_, _>>()?;
        pruned.matches = taken.len();
        // SQLite compares the count of every pending match before and after; under READ
        // COMMITTED that count moves with other instances' work, so this batch checks its
        // own effect instead: it deleted no pending match, and no match still refers to
        // the mail it deletes (which the cascade would make pending).
        let left: i64 = tx
            .query_one(
                "SELECT COUNT(*) FROM matches WHERE outbox_id = ANY($1)",
                &[&ids],
            )?
            .try_get(0)?;
        let dropped = taken.iter().filter(|pending| **pending).count();
        if left != 0 || dropped != 0 {
            bail!(
                "pruning mail would make {left} matches pending and drop {dropped} pending \
                 ones; rolled back"
            );
        }
        pruned.outbox = tx.execute("DELETE FROM outbox WHERE id = ANY($1)", &[&ids])? as usize;
        tx.commit()?;
        Ok(pruned)
    }

    /// Looks at up to [`PRUNE_ITEM_BATCH`] items first seen before `cutoff`, after
    /// `after` in (first_seen_at, id) order, and turns those no pending match needs into
    /// tombstones. Returns what it pruned and where it stopped; `None` when there was
    /// nothing left to look at.
    fn prune_items_batch(
        &self,
        cutoff: DateTime<Utc>,
        now: DateTime<Utc>,
        after: (i64, i64),
    ) -> Result<Option<(Pruned, (i64, i64))>> {
        let mut pruned = Pruned::default();
        let mut conn = self.conn()?;
        let mut tx = conn.transaction()?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&PRUNE_LOCK])?;
        let candidates = tx
            .query(
                "SELECT first_seen_at, id FROM items
                 WHERE first_seen_at < $1 AND (first_seen_at, id) > ($2, $3)
                 ORDER BY first_seen_at, id LIMIT $4",
                &[
                    &cutoff.timestamp(),
                    &after.0,
                    &after.1,
                    &(PRUNE_ITEM_BATCH as i64),
                ],
            )?
            .iter()
            .map(|r| Ok((r.try_get::<_, i64>(0)?, r.try_get::<_, i64>(1)?)))
            .collect::<Result<Vec<_>>>()?;
        let Some(&last) = candidates.last() else {
            return Ok(None);
        };
        let ids: Vec<i64> = candidates.iter().map(|&(_, id)| id).collect();
        // The feeds of these items, FOR SHARE to the end: a poll storing items for one of
        // them (it holds the feed's row FOR UPDATE) has committed, or waits for this batch.
        // Without it, a poll could re-insert an item deleted here before its tombstone
        // is visible, and the item would come back as new.
        tx.execute(
            "SELECT 1 FROM feeds
             WHERE id IN (SELECT feed_id FROM items WHERE id = ANY($1))
             ORDER BY id FOR SHARE",
            &[&ids],
        )?;
        // The pending matches of these items, locked to the end: none can be taken by a
        // digest or removed with its search meanwhile (with the feeds locked, no poll
        // makes a match of them pending either), so the count before and after differs
        // only by what this batch did.
        let pending = "SELECT COUNT(*) FROM (SELECT 1 FROM matches
                                             WHERE item_id = ANY($1) AND outbox_id IS NULL
                                             FOR UPDATE) p";
        let pending_before: i64 = tx.query_one(pending, &[&ids])?.try_get(0)?;
        let tombstone = tx.prepare(
            "INSERT INTO item_tombstones (feed_id, key, pruned_at)
             SELECT feed_id, key, $2 FROM items i
             WHERE id = $1 AND NOT EXISTS (SELECT 1 FROM matches m
                                           WHERE m.item_id = $1 AND m.outbox_id IS NULL)
             ON CONFLICT (feed_id, key) DO UPDATE SET pruned_at = excluded.pruned_at",
        )?;
        let delete_matches = tx.prepare("DELETE FROM matches WHERE item_id = $1")?;
        let delete_item = tx.prepare("DELETE FROM items WHERE id = $1")?;
        for id in ids.iter() {
            if tx.execute(&tombstone, &[id, &now.timestamp()])? == 1 {
                pruned.items += 1;
                pruned.matches += tx.execute(&delete_matches, &[id])? as usize;
                tx.execute(&delete_item, &[id])?;
            }
        }
        let pending_after: i64 = tx.query_one(pending, &[&ids])?.try_get(0)?;
        if pending_after != pending_before {
            bail!(
                "pruning would change the pending matches from {pending_before} to \
                 {pending_after}; rolled back"
            );
        }
        tx.commit()?;
        Ok(Some((pruned, last)))
    }

    /// Not for PostgreSQL: its backups are made with its own tools, consistent while the
    /// instances go on writing.
    pub fn limit_growth(&self, _pages: Option<u64>) -> Result<()> {
        anyhow::bail!("limiting the database's growth is for SQLite only")
    }

    pub fn refuse_writes(&self, _refuse: bool) -> Result<()> {
        anyhow::bail!("refusing writes on demand is for SQLite only")
    }

    pub fn backup_to(&self, path: &Path, _overwrite: bool) -> Result<BackupSummary> {
        bail!(
            "cannot back up PostgreSQL database {} to {}: `tidings backup` copies SQLite \
             databases; use pg_dump (e.g. `pg_dump --format=custom --file=tidings.dump \
             DATABASE_URL`), which takes a consistent copy while Tidings runs",
            self.name,
            path.display()
        )
    }
}
