//! Upkeep: health, counts for metrics, retention and online backups.

use super::*;

impl Sqlite {
    pub fn ping(&self) -> Result<()> {
        self.conn().query_row("SELECT 1", [], |_| Ok(()))?;
        Ok(())
    }

    pub fn service_stats(&self) -> Result<ServiceStats> {
        Ok(self.conn().query_row(
            "SELECT (SELECT COUNT(*) FROM outbox WHERE status = 'pending' AND kind = 'mail'),
                    (SELECT MIN(created_at) FROM outbox WHERE status = 'pending' AND kind = 'mail'),
                    (SELECT COUNT(*) FROM feeds WHERE active = 1),
                    (SELECT COUNT(*) FROM feeds WHERE active = 1
                        AND (consecutive_failures > 0 OR gone_at IS NOT NULL)),
                    (SELECT COUNT(*) FROM subscribers)",
            [],
            |r| {
                Ok(ServiceStats {
                    outbox_pending: r.get(0)?,
                    oldest_pending: time_opt(r, 1)?,
                    feeds_active: r.get(2)?,
                    feeds_failing: r.get(3)?,
                    subscribers: r.get(4)?,
                })
            },
        )?)
    }

    // ---- retention and backup ------------------------------------------------------------

    /// Prunes what is older than `cutoff`:
    /// - sent and failed mail created before `cutoff` is deleted, with the matches it
    ///   carried (pending mail is never touched);
    /// - items first seen before `cutoff` that no pending match needs are deleted, with
    ///   their matches (all long since taken), leaving a tombstone: their feed and key in
    ///   `item_tombstones`. Deleting the row, rather than clearing it, frees its page.
    ///
    /// Tombstones are kept forever: a few dozen bytes each, they are what keeps an item
    /// the feed still carries from coming back as new ([`Store::store_items`] skips them).
    ///
    /// The work is done in batches, each an `IMMEDIATE` transaction that leaves the
    /// database consistent, with a pause between them: the first prune of a large
    /// database took seconds as one transaction (200,000 items and 6,000 messages of
    /// ~30 KB, 6.7 s in a debug build), and every writer, in this process or another,
    /// would have waited for it; batches hold the lock ~0.15 s at most. Nothing pending
    /// is lost and nothing sent becomes pending again: each batch checks that the number
    /// of pending matches did not change, or rolls back.
    pub fn prune(&self, cutoff: DateTime<Utc>, now: DateTime<Utc>) -> Result<Pruned> {
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
        self.conn().execute(
            "DELETE FROM stories_sent WHERE sent_at < ?1",
            [cutoff.timestamp()],
        )?;
        Ok(pruned)
    }

    /// Deletes up to [`PRUNE_OUTBOX_BATCH`] sent or failed messages created before
    /// `cutoff`, oldest first, with their matches.
    fn prune_outbox_batch(&self, cutoff: DateTime<Utc>) -> Result<Pruned> {
        let mut pruned = Pruned::default();
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let pending_before = pending_matches(&tx)?;
        {
            let mut old = tx.prepare_cached(
                "SELECT id FROM outbox WHERE status <> 'pending' AND created_at < ?1
                 ORDER BY created_at LIMIT ?2",
            )?;
            // The matches go first: `matches.outbox_id` is ON DELETE SET NULL, so deleting
            // the mail under them would make them pending, and old news would go out again.
            let mut delete_matches =
                tx.prepare_cached("DELETE FROM matches WHERE outbox_id = ?1")?;
            let mut delete_mail = tx.prepare_cached("DELETE FROM outbox WHERE id = ?1")?;
            let ids = old
                .query_map(
                    params![cutoff.timestamp(), PRUNE_OUTBOX_BATCH as i64],
                    |r| r.get::<_, i64>(0),
                )?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            for id in ids {
                pruned.matches += delete_matches.execute([id])?;
                pruned.outbox += delete_mail.execute([id])?;
            }
        }
        check_pending(&tx, pending_before)?;
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
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let pending_before = pending_matches(&tx)?;
        let candidates = tx
            .prepare_cached(
                "SELECT first_seen_at, id FROM items
                 WHERE first_seen_at < ?1 AND (first_seen_at, id) > (?2, ?3)
                 ORDER BY first_seen_at, id LIMIT ?4",
            )?
            .query_map(
                params![
                    cutoff.timestamp(),
                    after.0,
                    after.1,
                    PRUNE_ITEM_BATCH as i64
                ],
                |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?)),
            )?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        let Some(&last) = candidates.last() else {
            return Ok(None);
        };
        {
            let mut tombstone = tx.prepare_cached(
                "INSERT INTO item_tombstones (feed_id, key, pruned_at)
                 SELECT feed_id, key, ?2 FROM items i
                 WHERE id = ?1 AND NOT EXISTS (SELECT 1 FROM matches m
                                               WHERE m.item_id = ?1 AND m.outbox_id IS NULL)
                 ON CONFLICT DO UPDATE SET pruned_at = excluded.pruned_at",
            )?;
            let mut delete_matches = tx.prepare_cached("DELETE FROM matches WHERE item_id = ?1")?;
            let mut delete_item = tx.prepare_cached("DELETE FROM items WHERE id = ?1")?;
            for (_, id) in candidates {
                if tombstone.execute(params![id, now.timestamp()])? == 1 {
                    pruned.items += 1;
                    pruned.matches += delete_matches.execute([id])?;
                    delete_item.execute([id])?;
                }
            }
        }
        check_pending(&tx, pending_before)?;
        tx.commit()?;
        Ok(Some((pruned, last)))
    }

    /// Copies the database to `path` while other connections (the daemon) may be writing
    /// to it, with SQLite's online backup. The copy goes to a temporary file next to
    /// `path`, must pass `PRAGMA integrity_check`, and only then takes the name `path`,
    /// so `path` is never half-written. An existing `path` is replaced only with
    /// `overwrite`. The copy is a plain rollback-journal file, complete on its own.
    pub fn limit_growth(&self, pages: Option<u64>) -> Result<()> {
        let conn = self.conn();
        let now: i64 = conn.query_row("PRAGMA page_count", [], |r| r.get(0))?;
        // SQLite's own ceiling when unlimited.
        let max = pages.map_or(0xffff_fffe, |p| now.saturating_add_unsigned(p));
        conn.pragma_update(None, "max_page_count", max)?;
        Ok(())
    }

    pub fn refuse_writes(&self, refuse: bool) -> Result<()> {
        self.conn().pragma_update(None, "query_only", refuse)?;
        Ok(())
    }

    pub fn backup_to(&self, path: &Path, overwrite: bool) -> Result<BackupSummary> {
        let name = path
            .file_name()
            .with_context(|| format!("{} is not a file name", path.display()))?;
        let dir = path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        if !overwrite && path.exists() {
            bail!("{} already exists", path.display());
        }
        let tmp = dir.join(format!(
            ".{}.tmp-{}",
            name.to_string_lossy(),
            std::process::id()
        ));
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .with_context(|| format!("creating {}", tmp.display()))?;
        let copied = self.copy_into(&tmp).and_then(|summary| {
            std::fs::File::open(&tmp)?.sync_all()?;
            if overwrite {
                std::fs::rename(&tmp, path)?;
            } else {
                // A link fails if `path` appeared meanwhile: never replaced by accident.
                std::fs::hard_link(&tmp, path)
                    .with_context(|| format!("creating {}", path.display()))?;
                std::fs::remove_file(&tmp)?;
            }
            std::fs::File::open(dir)?.sync_all()?;
            Ok(summary)
        });
        if copied.is_err() {
            for suffix in ["", "-journal", "-wal", "-shm"] {
                let mut leftover = tmp.clone().into_os_string();
                leftover.push(suffix);
                let _ = std::fs::remove_file(leftover);
            }
        }
        let mut summary = copied?;
        summary.bytes = std::fs::metadata(path)?.len();
        Ok(summary)
    }

    /// The backup proper: every page into the (empty) database at `tmp`, then checks.
    fn copy_into(&self, tmp: &Path) -> Result<BackupSummary> {
        let mut copy =
            Connection::open(tmp).with_context(|| format!("opening {}", tmp.display()))?;
        backup_pages(&self.conn(), &mut copy)?;
        // The copy carries the source's WAL flag; a backup is better as one file.
        let mode: String = copy.query_row("PRAGMA journal_mode = DELETE", [], |r| r.get(0))?;
        if mode != "delete" {
            bail!("could not take the copy out of WAL mode ({mode})");
        }
        let problems = {
            let mut stmt = copy.prepare("PRAGMA integrity_check")?;
            stmt.query_map([], |r| r.get::<_, String>(0))?
                .collect::<rusqlite::Result<Vec<_>>>()?
        };
        if problems != ["ok"] {
            bail!(
                "the copy failed its integrity check: {}",
                problems.join("; ")
            );
        }
        let summary = copy.query_row(
            "SELECT (SELECT COUNT(*) FROM feeds),
                    (SELECT COUNT(*) FROM items),
                    (SELECT COUNT(*) FROM item_tombstones),
                    (SELECT COUNT(*) FROM subscribers),
                    (SELECT COUNT(*) FROM outbox)",
            [],
            |r| {
                Ok(BackupSummary {
                    bytes: 0,
                    feeds: r.get(0)?,
                    items: r.get(1)?,
                    pruned_items: r.get(2)?,
                    subscribers: r.get(3)?,
                    outbox: r.get(4)?,
                })
            },
        )?;
        copy.close().map_err(|(_, e)| e)?;
        Ok(summary)
    }
}
