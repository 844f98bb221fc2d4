//! Upkeep: health, counts for metrics, retention and online backups.

use super::*;

impl Store {
    /// Answers when the database does: a trivial query through the shared connection.
    pub async fn ping(&self) -> Result<()> {
        run!(self, db => db.ping())
    }

    /// Counts for health and metrics, read in one snapshot.
    pub async fn service_stats(&self) -> Result<ServiceStats> {
        run!(self, db => db.service_stats())
    }

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
    pub async fn prune(&self, cutoff: DateTime<Utc>, now: DateTime<Utc>) -> Result<Pruned> {
        run!(self, db => db.prune(cutoff, now))
    }

    /// Copies the database to `path` while other connections (the daemon) may be writing
    /// to it, with SQLite's online backup. The copy goes to a temporary file next to
    /// `path`, must pass `PRAGMA integrity_check`, and only then takes the name `path`,
    /// so `path` is never half-written. An existing `path` is replaced only with
    /// `overwrite`. The copy is a plain rollback-journal file, complete on its own.
    pub async fn backup_to(&self, path: &Path, overwrite: bool) -> Result<BackupSummary> {
        let path = path.to_owned();
        run!(self, db => db.backup_to(&path, overwrite))
    }

    /// For tests of a full disk: lets the database grow by at most `pages` more pages
    /// (`None`: as much as it likes again). Writes that need more fail as on a full
    /// disk. SQLite only (`PRAGMA max_page_count` of the writing connection).
    #[doc(hidden)]
    pub async fn limit_growth(&self, pages: Option<u64>) -> Result<()> {
        run!(self, db => db.limit_growth(pages))
    }

    /// For tests of a disk so full that not even a change in place fits: every write
    /// fails as on a read-only database (`true`), or works again (`false`). SQLite only
    /// (`PRAGMA query_only` of the writing connection).
    #[doc(hidden)]
    pub async fn refuse_writes(&self, refuse: bool) -> Result<()> {
        run!(self, db => db.refuse_writes(refuse))
    }
}
