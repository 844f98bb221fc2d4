//! The only place with SQL: the SQLite database, its migrations, and a small set of
//! domain operations the pipeline is built from.
//!
//! Every operation that crosses a crash boundary is one `IMMEDIATE` transaction:
//! [`Store::store_items`] writes new items *and* their matches; [`Store::take_digest`]
//! writes an outbox row *and* marks the matches it holds as taken. Work that several
//! workers could share (polling a feed, sending a message) is claimed with a lease
//! (`claimed_until`). [`Store::prune`] works in short batches, each a transaction that
//! leaves every pending match as it was. Methods block: async callers run them with
//! `spawn_blocking`.

use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use rusqlite::backup::{Backup, StepResult};
use rusqlite::config::DbConfig;
use rusqlite::{Connection, OpenFlags, OptionalExtension, TransactionBehavior, params};
use rusqlite_migration::{M, Migrations};

use crate::config::FeedConfig;
use crate::digest::{DigestEntry, FailingFeed, MAX_DIGEST_ENTRIES, Rendered, Schedule};
use crate::parse::Item;

/// The migrations, in order. Each file in `migrations/` must be listed here.
const MIGRATIONS: &[(&str, &str)] = &[
    ("0001_init.sql", include_str!("../migrations/0001_init.sql")),
    (
        "0002_fetch_state.sql",
        include_str!("../migrations/0002_fetch_state.sql"),
    ),
    (
        "0003_digest_schedules.sql",
        include_str!("../migrations/0003_digest_schedules.sql"),
    ),
    (
        "0004_retention.sql",
        include_str!("../migrations/0004_retention.sql"),
    ),
    ("0005_web.sql", include_str!("../migrations/0005_web.sql")),
    (
        "0006_generations.sql",
        include_str!("../migrations/0006_generations.sql"),
    ),
    (
        "0007_body_hash.sql",
        include_str!("../migrations/0007_body_hash.sql"),
    ),
];

/// A handle to the database; cheap to clone, safe to share between threads.
#[derive(Clone)]
pub struct Store {
    conn: Arc<Mutex<Connection>>,
}

/// What the poller needs to know about a feed it is about to fetch.
#[derive(Debug, Clone)]
pub struct FeedToPoll {
    pub id: String,
    pub url: String,
    pub etag: Option<String>,
    pub last_modified: Option<String>,
    /// `None` until the first successful poll: that poll is the baseline.
    pub baseline_at: Option<DateTime<Utc>>,
    /// The last unconditional GET (stale-304 servers are caught by fetching in full).
    pub last_full_fetch_at: Option<DateTime<Utc>>,
    pub consecutive_failures: u32,
    /// [`crate::parse::body_hash`] of the last body stored: the same body again is not parsed.
    pub body_hash: Option<String>,
    /// The token of the claim this poll holds ([`Store::claim_feeds`]); `None` for a feed
    /// that was not claimed (tools, benchmarks).
    pub claim: Option<String>,
}

/// A successful fetch and parse, ready to be stored.
#[derive(Debug, Clone, Copy)]
pub struct SuccessfulPoll<'a> {
    pub items: &'a [Item],
    pub etag: Option<&'a str>,
    pub last_modified: Option<&'a str>,
    /// This was an unconditional GET.
    pub full_fetch: bool,
    /// The feed answered from a new home after permanent redirects.
    pub moved_to: Option<&'a str>,
    /// What the parser had to repair to read it.
    pub repairs: &'a [String],
    /// [`crate::parse::body_hash`] of the body these items came from.
    pub body_hash: Option<&'a str>,
    pub now: DateTime<Utc>,
    pub next_poll_at: DateTime<Utc>,
    /// On the baseline poll, only items published after this can match.
    pub baseline_cutoff: DateTime<Utc>,
    /// The subscriptions generation the matcher was compiled at.
    pub matcher_generation: i64,
}

/// The subscriptions the matcher runs, and the generation they were read at.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ActiveSubscriptions {
    pub generation: i64,
    /// (subscription id, query text), by id.
    pub queries: Vec<(i64, String)>,
}

/// What [`Store::store_items`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreOutcome {
    Stored(Stored),
    /// The subscriptions changed since the matcher was compiled: nothing was written;
    /// compile it again and store again.
    StaleMatcher,
    /// Another worker claimed the feed meanwhile: nothing was written.
    ClaimLost,
}

/// How many sign-ups the web takes ([`Store::record_signup`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SignupLimits {
    pub per_client_per_hour: u32,
    pub per_address_per_day: u32,
}

/// What [`Store::record_signup`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignupAdmission {
    /// Over the client's limit: nothing recorded.
    TooManyFromClient,
    /// Recorded; `mailed` when its confirmation mail was queued too.
    Recorded { id: i64, mailed: bool },
}

/// A 200 whose body is the one stored last time: nothing to parse, but the feed's
/// validators and full-fetch time move on.
#[derive(Debug, Clone, Copy)]
pub struct UnchangedPoll<'a> {
    pub etag: Option<&'a str>,
    pub last_modified: Option<&'a str>,
    /// This was an unconditional GET.
    pub full_fetch: bool,
    pub moved_to: Option<&'a str>,
    pub now: DateTime<Utc>,
    pub next_poll_at: DateTime<Utc>,
}

/// What one successful poll changed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stored {
    pub new_items: usize,
    /// Known items whose title or text changed materially.
    pub updated_items: usize,
    pub matches: usize,
}

/// A feed's health, for `tidings feeds status` and for tests.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct FeedStatus {
    pub id: String,
    pub name: String,
    pub url: String,
    pub active: bool,
    /// `ok`, `not-modified`, `error` or `gone`; `None` before the first poll.
    pub last_status: Option<String>,
    pub last_error: Option<String>,
    pub last_error_kind: Option<String>,
    pub last_error_at: Option<DateTime<Utc>>,
    pub consecutive_failures: u32,
    pub last_poll_at: Option<DateTime<Utc>>,
    pub last_success_at: Option<DateTime<Utc>>,
    pub next_poll_at: DateTime<Utc>,
    pub items: i64,
    /// Where a permanent redirect pointed: update `config.toml`.
    pub moved_to: Option<String>,
    pub gone: bool,
    /// What the parser had to repair on the last successful poll.
    pub repairs: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Subscriber {
    pub id: i64,
    pub email: String,
    pub schedule: Schedule,
    pub timezone: Tz,
    pub next_digest_at: Option<DateTime<Utc>>,
    /// Permanent delivery failures in a row.
    pub bounces: u32,
    /// Set when `bounces` reached the limit: no digests until resumed.
    pub paused_at: Option<DateTime<Utc>>,
    pub queries: Vec<String>,
}

/// A stored item with its feed, as `tidings match` previews it.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredItem {
    pub feed_id: String,
    pub feed_name: String,
    pub tags: Vec<String>,
    pub title: String,
    pub summary: String,
    pub content: String,
    pub link: Option<String>,
    pub published: Option<DateTime<Utc>>,
    pub first_seen: DateTime<Utc>,
}

/// What [`Store::prune`] removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pruned {
    /// Items turned into tombstones.
    pub items: usize,
    /// Sent or failed messages deleted from the outbox.
    pub outbox: usize,
    /// Matches deleted with them (every one long since taken by a digest).
    pub matches: usize,
}

/// What a backup made by [`Store::backup_to`] holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BackupSummary {
    /// Size of the copy.
    pub bytes: u64,
    pub feeds: i64,
    /// Live items (tombstones not counted).
    pub items: i64,
    /// Tombstones of pruned items.
    pub pruned_items: i64,
    pub subscribers: i64,
    /// Messages in the outbox, whatever their status.
    pub outbox: i64,
}

/// A sign-up from the web, before and after confirmation.
#[derive(Debug, Clone, PartialEq)]
pub struct Signup {
    pub email: String,
    pub queries: Vec<String>,
    /// As [`Schedule::parse`] reads it.
    pub frequency: String,
    /// An IANA zone name.
    pub timezone: String,
    pub client: String,
    pub created_at: DateTime<Utc>,
    pub confirmed_at: Option<DateTime<Utc>>,
}

/// An item a subscription matched, for its Atom feed.
#[derive(Debug, Clone, PartialEq)]
pub struct MatchedItem {
    pub item_id: i64,
    pub title: String,
    pub link: Option<String>,
    pub summary: String,
    pub published: Option<DateTime<Utc>>,
    pub matched_at: DateTime<Utc>,
    pub feed_name: String,
}

/// A rendered digest waiting in (or gone from) the outbox.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboxMessage {
    pub id: i64,
    /// `None` once the subscriber was removed (the mail is still sent).
    pub subscriber_id: Option<i64>,
    pub recipient: String,
    pub message_id: String,
    pub subject: String,
    pub body_text: String,
    pub body_html: String,
    pub created_at: DateTime<Utc>,
    pub status: String,
    pub attempts: u32,
    pub last_error: Option<String>,
    pub next_attempt_at: DateTime<Utc>,
    pub sent_at: Option<DateTime<Utc>>,
    /// The token of the claim that holds the row (see [`Store::claim_mail`]).
    pub claim: Option<String>,
}

/// The schema version of the database at `path` (on `conn`). One a newer Tidings wrote is
/// refused: this one cannot migrate it back, nor read it.
fn schema_version(conn: &Connection, path: &Path) -> Result<i64> {
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .with_context(|| format!("reading database {}", path.display()))?;
    let known = MIGRATIONS.len() as i64;
    if version > known {
        bail!(
            "database {} was written by a newer version of Tidings (schema version {version}; \
             Tidings {} knows versions up to {known}): run that version, or restore a backup \
             this one made",
            path.display(),
            env!("CARGO_PKG_VERSION")
        );
    }
    Ok(version)
}

impl Store {
    /// Opens (creating if needed) the database at `path` and brings its schema up to date.
    pub fn open(path: &Path) -> Result<Store> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("creating folder {}", dir.display()))?;
        }
        let mut conn = Connection::open(path)
            .with_context(|| format!("opening database {}", path.display()))?;
        conn.busy_timeout(Duration::from_secs(10))?;
        schema_version(&conn, path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        // Off while migrating, so a table rebuild does not cascade; each migration is
        // checked for dangling references before it commits.
        conn.pragma_update(None, "foreign_keys", "OFF")?;
        let migrations = Migrations::new(
            MIGRATIONS
                .iter()
                .map(|(_, sql)| M::up(sql).foreign_key_check())
                .collect(),
        );
        migrations
            .to_latest(&mut conn)
            .with_context(|| format!("migrating database {}", path.display()))?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        Ok(Store {
            conn: Arc::new(Mutex::new(conn)),
        })
    }

    /// Opens the existing database at `path` to read only, without creating or migrating
    /// it: for commands that only look (`check-config`). Refuses a database whose schema
    /// is not this version's (older ones are migrated by any other command).
    ///
    /// The connection may write but refuses to (`query_only`): a read-only connection to a
    /// WAL database creates its `-wal` and `-shm` files and cannot remove them, where this
    /// one, the last to close, removes them, as the daemon's does. A file it may not
    /// write is opened read-only. A `-wal` file that was there before (a daemon running,
    /// or one killed) is left as found: closing would otherwise checkpoint it into the
    /// database file, a write.
    pub fn open_read_only(path: &Path) -> Result<Store> {
        let mut wal = path.as_os_str().to_owned();
        wal.push("-wal");
        let wal_existed = Path::new(&wal).exists();
        let open =
            |flags| Connection::open_with_flags(path, flags | OpenFlags::SQLITE_OPEN_NO_MUTEX);
        let conn = open(OpenFlags::SQLITE_OPEN_READ_WRITE)
            .or_else(|_| open(OpenFlags::SQLITE_OPEN_READ_ONLY))
            .with_context(|| format!("opening database {}", path.display()))?;
        if wal_existed {
            conn.set_db_config(DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, true)?;
        }
        conn.pragma_update(None, "query_only", true)?;
        conn.busy_timeout(Duration::from_secs(10))?;
        let version = schema_version(&conn, path)?;
        let expected = MIGRATIONS.len() as i64;
        if version != expected {
            bail!(
                "database {} has schema version {version}, not {expected}: `tidings run` (or any \
                 command that writes) migrates it",
                path.display()
            );
        }
        Ok(Store {
            conn: Arc::new(Mutex::new(conn)),
        })
    }

    fn conn(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock cannot leave SQLite half-written (transactions
        // roll back on drop), so a poisoned lock is safe to keep using.
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    // ---- feeds ---------------------------------------------------------------------------

    /// Makes the feeds table agree with the config: new feeds are added (due now),
    /// changed ones updated, and feeds no longer configured are marked inactive (their
    /// items stay). A feed whose URL changed starts over with a fresh baseline.
    pub fn sync_feeds(&self, feeds: &[FeedConfig]) -> Result<()> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        tx.execute("UPDATE feeds SET active = 0", [])?;
        for feed in feeds {
            let url = feed.url.as_str();
            let tags = feed.tags.join(",");
            let old_url: Option<String> = tx
                .query_row("SELECT url FROM feeds WHERE id = ?1", [&feed.id], |r| {
                    r.get(0)
                })
                .optional()?;
            match old_url {
                None => {
                    tx.execute(
                        "INSERT INTO feeds (id, url, name, tags) VALUES (?1, ?2, ?3, ?4)",
                        params![feed.id, url, feed.name, tags],
                    )?;
                }
                Some(old) if old != url => {
                    tx.execute(
                        "UPDATE feeds SET url = ?2, name = ?3, tags = ?4, active = 1, etag = NULL,
                         last_modified = NULL, baseline_at = NULL, next_poll_at = 0,
                         consecutive_failures = 0, gone_at = NULL, moved_to = NULL,
                         last_full_fetch_at = NULL, last_status = NULL, failing_since = NULL,
                         body_hash = NULL,
                         -- A poll of the old URL still in flight holds a claim on what is
                         -- now another feed: void it, so that poll records nothing.
                         claim = NULL, claimed_until = NULL
                         WHERE id = ?1",
                        params![feed.id, url, feed.name, tags],
                    )?;
                }
                Some(_) => {
                    tx.execute(
                        "UPDATE feeds SET name = ?2, tags = ?3, active = 1 WHERE id = ?1",
                        params![feed.id, feed.name, tags],
                    )?;
                }
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Claims active feeds for polling until `now + lease`: all of them, or only those due.
    /// A feed another worker holds a lease on is skipped.
    pub fn claim_feeds(
        &self,
        now: DateTime<Utc>,
        lease: Duration,
        only_due: bool,
    ) -> Result<Vec<FeedToPoll>> {
        let now_s = now.timestamp();
        let until = now_s + lease.as_secs() as i64;
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let feeds = {
            let mut stmt = tx.prepare(
                "UPDATE feeds SET claimed_until = ?2, claim = hex(randomblob(12))
                 WHERE active = 1 AND gone_at IS NULL
                   AND (claimed_until IS NULL OR claimed_until <= ?1)
                   AND (?3 = 0 OR next_poll_at <= ?1)
                 RETURNING id, url, etag, last_modified, baseline_at, last_full_fetch_at,
                           consecutive_failures, body_hash, claim",
            )?;
            stmt.query_map(params![now_s, until, only_due], |r| {
                Ok(FeedToPoll {
                    id: r.get(0)?,
                    url: r.get(1)?,
                    etag: r.get(2)?,
                    last_modified: r.get(3)?,
                    baseline_at: r.get::<_, Option<i64>>(4)?.and_then(from_unix),
                    last_full_fetch_at: r.get::<_, Option<i64>>(5)?.and_then(from_unix),
                    consecutive_failures: r.get(6)?,
                    body_hash: r.get(7)?,
                    claim: r.get(8)?,
                })
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?
        };
        tx.commit()?;
        Ok(feeds)
    }

    /// Stores a successful poll: new items and their matches in one transaction, then the
    /// feed's new validators and schedule. `find_matches` is called for each *new* item
    /// that may match (on the baseline poll, only those published after `baseline_cutoff`)
    /// and for each known item whose text changed materially, and returns the ids of the
    /// subscriptions it matches. A changed item is sent again (marked updated) only to
    /// subscriptions it was already sent to, so an edit never floods anyone with old news.
    pub fn store_items(
        &self,
        feed: &FeedToPoll,
        poll: &SuccessfulPoll<'_>,
        mut find_matches: impl FnMut(&Item) -> Vec<i64>,
    ) -> Result<StoreOutcome> {
        let SuccessfulPoll {
            items,
            etag,
            last_modified,
            full_fetch,
            moved_to,
            repairs,
            body_hash,
            now,
            next_poll_at,
            baseline_cutoff,
            matcher_generation,
        } = *poll;
        let now_s = now.timestamp();
        let is_baseline = feed.baseline_at.is_none();
        let mut stored = Stored::default();
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        if !holds_claim(&tx, feed)? {
            return Ok(StoreOutcome::ClaimLost);
        }
        // Checked inside the write transaction: no change can land between this check
        // and the matches written below.
        if subscriptions_generation(&tx)? != matcher_generation {
            return Ok(StoreOutcome::StaleMatcher);
        }
        {
            let mut insert_item = tx.prepare(
                "INSERT INTO items (feed_id, key, guid, link, title, summary, content, published_at,
                                    first_seen_at, content_hash)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
                 ON CONFLICT (feed_id, key) DO NOTHING",
            )?;
            let mut known_hash =
                tx.prepare("SELECT id, content_hash FROM items WHERE feed_id = ?1 AND key = ?2")?;
            let mut pruned = tx.prepare(
                "SELECT EXISTS (SELECT 1 FROM item_tombstones WHERE feed_id = ?1 AND key = ?2)",
            )?;
            let mut update_item = tx.prepare(
                "UPDATE items SET title = ?2, summary = ?3, content = ?4, link = ?5,
                    content_hash = ?6, updated_at = ?7 WHERE id = ?1",
            )?;
            let mut set_hash = tx.prepare("UPDATE items SET content_hash = ?2 WHERE id = ?1")?;
            let mut insert_match = tx.prepare(
                "INSERT INTO matches (subscription_id, item_id, matched_at) VALUES (?1, ?2, ?3)
                 ON CONFLICT DO NOTHING",
            )?;
            // An edited item goes out again, marked updated, to the subscriptions it was
            // already sent to and still matches; one still pending just shows the new text.
            let mut resend_match = tx.prepare(
                "UPDATE matches SET outbox_id = NULL, updated = 1, matched_at = ?3
                 WHERE subscription_id = ?1 AND item_id = ?2 AND outbox_id IS NOT NULL",
            )?;
            for item in items {
                if pruned.query_row(params![feed.id, item.key], |r| r.get::<_, bool>(0))? {
                    // Past retention and pruned: old news, whatever the feed says now.
                    continue;
                }
                let hash = item.fingerprint();
                let inserted = insert_item.execute(params![
                    feed.id,
                    item.key,
                    item.guid,
                    item.link,
                    item.title,
                    item.summary,
                    item.content,
                    item.published.map(|d| d.timestamp()),
                    now_s,
                    hash,
                ])?;
                if inserted == 0 {
                    // Seen before: never new again, but a material edit is recorded.
                    let (id, old): (i64, Option<String>) = known_hash
                        .query_row(params![feed.id, item.key], |r| Ok((r.get(0)?, r.get(1)?)))?;
                    match old {
                        Some(old) if old != hash => {
                            update_item.execute(params![
                                id,
                                item.title,
                                item.summary,
                                item.content,
                                item.link,
                                hash,
                                now_s
                            ])?;
                            stored.updated_items += 1;
                            for subscription in find_matches(item) {
                                stored.matches +=
                                    resend_match.execute(params![subscription, id, now_s])?;
                            }
                        }
                        None => {
                            set_hash.execute(params![id, hash])?;
                        }
                        Some(_) => {}
                    }
                    continue;
                }
                stored.new_items += 1;
                if is_baseline && item.published.is_none_or(|p| p < baseline_cutoff) {
                    continue;
                }
                let item_id = tx.last_insert_rowid();
                for subscription in find_matches(item) {
                    stored.matches +=
                        insert_match.execute(params![subscription, item_id, now_s])?;
                }
            }
        }
        tx.execute(
            "UPDATE feeds SET etag = ?2, last_modified = ?3, baseline_at = COALESCE(baseline_at, ?4),
             next_poll_at = ?5, last_poll_at = ?4, last_success_at = ?4, last_status = 'ok',
             last_error = NULL, last_error_kind = NULL, consecutive_failures = 0, failing_since = NULL,
             claimed_until = NULL, claim = NULL,
             last_full_fetch_at = CASE WHEN ?6 THEN ?4 ELSE last_full_fetch_at END,
             moved_to = ?7, repairs = ?8, body_hash = ?9
             WHERE id = ?1",
            params![
                feed.id,
                etag,
                last_modified,
                now_s,
                next_poll_at.timestamp(),
                full_fetch,
                moved_to,
                (!repairs.is_empty()).then(|| repairs.join("\n")),
                body_hash,
            ],
        )?;
        tx.commit()?;
        Ok(StoreOutcome::Stored(stored))
    }

    /// Records a 304: the feed is fine and nothing is new.
    pub fn record_not_modified(
        &self,
        feed: &FeedToPoll,
        now: DateTime<Utc>,
        next_poll_at: DateTime<Utc>,
        moved_to: Option<&str>,
    ) -> Result<bool> {
        Ok(self.conn().execute(
            "UPDATE feeds SET next_poll_at = ?4, last_poll_at = ?3, last_success_at = ?3,
             last_status = 'not-modified', last_error = NULL, last_error_kind = NULL,
             consecutive_failures = 0, failing_since = NULL, claimed_until = NULL, claim = NULL,
             moved_to = ?5
             WHERE id = ?1 AND claim IS ?2",
            params![
                feed.id,
                feed.claim,
                now.timestamp(),
                next_poll_at.timestamp(),
                moved_to
            ],
        )? == 1)
    }

    /// Records a 200 whose body is the one stored last time as not modified, keeping the
    /// validators the server sent and, after an unconditional GET, its time.
    pub fn record_unchanged(&self, feed: &FeedToPoll, poll: &UnchangedPoll<'_>) -> Result<bool> {
        let now = poll.now.timestamp();
        Ok(self.conn().execute(
            "UPDATE feeds SET etag = ?2, last_modified = ?3, next_poll_at = ?5, last_poll_at = ?4,
             last_success_at = ?4, last_status = 'not-modified', last_error = NULL,
             last_error_kind = NULL, consecutive_failures = 0, failing_since = NULL,
             claimed_until = NULL, claim = NULL, moved_to = ?6,
             last_full_fetch_at = CASE WHEN ?7 THEN ?4 ELSE last_full_fetch_at END
             WHERE id = ?1 AND claim IS ?8",
            params![
                feed.id,
                poll.etag,
                poll.last_modified,
                now,
                poll.next_poll_at.timestamp(),
                poll.moved_to,
                poll.full_fetch,
                feed.claim,
            ],
        )? == 1)
    }

    /// Records a failed poll on the feed. Nothing about its items changes. False (nothing
    /// written) when another worker holds the feed now, as for every `record_*`.
    pub fn record_failure(
        &self,
        feed: &FeedToPoll,
        now: DateTime<Utc>,
        kind: &str,
        error: &str,
        next_poll_at: DateTime<Utc>,
    ) -> Result<bool> {
        Ok(self.conn().execute(
            "UPDATE feeds SET next_poll_at = ?5, last_poll_at = ?2, last_status = 'error',
             last_error = ?4, last_error_kind = ?3, last_error_at = ?2,
             failing_since = COALESCE(failing_since, ?2),
             consecutive_failures = consecutive_failures + 1, claimed_until = NULL, claim = NULL
             WHERE id = ?1 AND claim IS ?6",
            params![
                feed.id,
                now.timestamp(),
                kind,
                error,
                next_poll_at.timestamp(),
                feed.claim
            ],
        )? == 1)
    }

    /// Records a 410: the feed is not polled again until its URL changes.
    pub fn record_gone(&self, feed: &FeedToPoll, now: DateTime<Utc>, error: &str) -> Result<bool> {
        Ok(self.conn().execute(
            "UPDATE feeds SET gone_at = ?2, last_poll_at = ?2, last_status = 'gone',
             last_error = ?3, last_error_kind = 'gone', last_error_at = ?2,
             failing_since = COALESCE(failing_since, ?2),
             consecutive_failures = consecutive_failures + 1, claimed_until = NULL, claim = NULL
             WHERE id = ?1 AND claim IS ?4",
            params![feed.id, now.timestamp(), error, feed.claim],
        )? == 1)
    }

    /// Extends this poll's claim on the feed to `now + lease`, right before fetching.
    /// False when another worker claimed the feed meanwhile (this one's lease ran out while
    /// it waited for a connection slot): the feed must not be fetched.
    pub fn renew_feed_claim(
        &self,
        feed: &FeedToPoll,
        now: DateTime<Utc>,
        lease: Duration,
    ) -> Result<bool> {
        Ok(self.conn().execute(
            "UPDATE feeds SET claimed_until = ?3 WHERE id = ?1 AND claim IS ?2",
            params![feed.id, feed.claim, now.timestamp() + lease_secs(lease)],
        )? == 1)
    }

    /// Lets go of a feed this poll claimed but will not poll (shutting down), so it is
    /// due again at once instead of after the lease; another worker's claim is left alone.
    pub fn release_claim(&self, feed: &FeedToPoll) -> Result<()> {
        self.conn().execute(
            "UPDATE feeds SET claimed_until = NULL, claim = NULL WHERE id = ?1 AND claim IS ?2",
            params![feed.id, feed.claim],
        )?;
        Ok(())
    }

    /// Brings a healthy feed's next poll forward to `latest` if it was later: after its
    /// interval was shortened in the config, the new interval counts from its last poll.
    pub fn poll_no_later_than(&self, feed_id: &str, latest: DateTime<Utc>) -> Result<bool> {
        let changed = self.conn().execute(
            "UPDATE feeds SET next_poll_at = ?2
             WHERE id = ?1 AND next_poll_at > ?2 AND consecutive_failures = 0",
            params![feed_id, latest.timestamp()],
        )?;
        Ok(changed > 0)
    }

    /// When a feed was last polled, if ever.
    pub fn last_poll_at(&self, feed_id: &str) -> Result<Option<DateTime<Utc>>> {
        Ok(self
            .conn()
            .query_row(
                "SELECT last_poll_at FROM feeds WHERE id = ?1",
                [feed_id],
                |r| r.get::<_, Option<i64>>(0),
            )
            .optional()?
            .flatten()
            .and_then(from_unix))
    }

    pub fn consecutive_failures(&self, feed_id: &str) -> Result<u32> {
        Ok(self
            .conn()
            .query_row(
                "SELECT consecutive_failures FROM feeds WHERE id = ?1",
                [feed_id],
                |r| r.get(0),
            )
            .optional()?
            .unwrap_or(0))
    }

    /// Live items of a feed as (title, updated_at), newest first: for tests and inspection.
    pub fn feed_items(&self, feed_id: &str) -> Result<Vec<(String, Option<DateTime<Utc>>)>> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare("SELECT title, updated_at FROM items WHERE feed_id = ?1 ORDER BY id DESC")?;
        let rows = stmt.query_map([feed_id], |r| {
            Ok((r.get(0)?, r.get::<_, Option<i64>>(1)?.and_then(from_unix)))
        })?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }

    pub fn feed_statuses(&self) -> Result<Vec<FeedStatus>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT f.id, f.name, f.url, f.active, f.last_status, f.last_error, f.last_error_kind,
                    f.consecutive_failures, f.last_success_at, f.next_poll_at,
                    (SELECT COUNT(*) FROM items i WHERE i.feed_id = f.id),
                    f.last_error_at, f.last_poll_at, f.moved_to, f.gone_at, f.repairs
             FROM feeds f ORDER BY f.active DESC, f.id",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok(FeedStatus {
                id: r.get(0)?,
                name: r.get(1)?,
                url: r.get(2)?,
                active: r.get(3)?,
                last_status: r.get(4)?,
                last_error: r.get(5)?,
                last_error_kind: r.get(6)?,
                consecutive_failures: r.get(7)?,
                last_success_at: r.get::<_, Option<i64>>(8)?.and_then(from_unix),
                next_poll_at: from_unix(r.get(9)?).unwrap_or_default(),
                items: r.get(10)?,
                last_error_at: r.get::<_, Option<i64>>(11)?.and_then(from_unix),
                last_poll_at: r.get::<_, Option<i64>>(12)?.and_then(from_unix),
                moved_to: r.get(13)?,
                gone: r.get::<_, Option<i64>>(14)?.is_some(),
                repairs: r
                    .get::<_, Option<String>>(15)?
                    .map(|s| s.lines().map(str::to_string).collect())
                    .unwrap_or_default(),
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }

    // ---- subscribers ---------------------------------------------------------------------

    /// Adds `query` for `email`, creating the subscriber if needed, and sets their
    /// schedule and time zone. Their next digest time moves only when the schedule or zone
    /// changed. The query must already have been validated by the caller. Returns false
    /// when the subscriber already had exactly this query.
    pub fn add_subscription(
        &self,
        email: &str,
        query: &str,
        schedule: Schedule,
        timezone: Tz,
        now: DateTime<Utc>,
    ) -> Result<bool> {
        let next = schedule.next_after(now, timezone).map(|d| d.timestamp());
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let subscriber_id: i64 = tx.query_row(
            "INSERT INTO subscribers (email, frequency, digest_time, digest_weekday, timezone,
                                      next_digest_at, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
             ON CONFLICT (email) DO UPDATE SET
                next_digest_at = CASE WHEN frequency IS excluded.frequency
                                        AND digest_time IS excluded.digest_time
                                        AND digest_weekday IS excluded.digest_weekday
                                        AND timezone IS excluded.timezone
                                      THEN next_digest_at ELSE excluded.next_digest_at END,
                frequency = excluded.frequency, digest_time = excluded.digest_time,
                digest_weekday = excluded.digest_weekday, timezone = excluded.timezone
             RETURNING id",
            params![
                email,
                schedule.frequency(),
                schedule.time().map(|t| t.format("%H:%M").to_string()),
                schedule.weekday().map(|d| d.num_days_from_monday()),
                timezone.name(),
                next,
                now.timestamp()
            ],
            |r| r.get(0),
        )?;
        let added = tx.execute(
            "INSERT INTO subscriptions (subscriber_id, query, created_at) VALUES (?1, ?2, ?3)
             ON CONFLICT DO NOTHING",
            params![subscriber_id, query, now.timestamp()],
        )?;
        tx.commit()?;
        Ok(added == 1)
    }

    /// Removes a subscriber, their subscriptions and pending matches. Mail already in
    /// the outbox is kept (and still sent). Returns false if there was no such subscriber.
    pub fn remove_subscriber(&self, email: &str) -> Result<bool> {
        Ok(self
            .conn()
            .execute("DELETE FROM subscribers WHERE email = ?1", [email])?
            == 1)
    }

    /// The subscriber with this id, with their queries.
    pub fn subscriber_by_id(&self, id: i64) -> Result<Option<Subscriber>> {
        let conn = self.conn();
        let subscriber = conn
            .query_row(
                &format!("SELECT {SUBSCRIBER_COLUMNS} FROM subscribers s WHERE s.id = ?1"),
                [id],
                |r| Ok(subscriber_row(r)),
            )
            .optional()?
            .transpose()?;
        let Some(mut subscriber) = subscriber else {
            return Ok(None);
        };
        subscriber.queries = self
            .subscriptions_of_locked(&conn, id)?
            .into_iter()
            .map(|(_, q)| q)
            .collect();
        Ok(Some(subscriber))
    }

    /// A subscriber's subscriptions as (id, query), oldest first.
    pub fn subscriptions_of(&self, subscriber_id: i64) -> Result<Vec<(i64, String)>> {
        self.subscriptions_of_locked(&self.conn(), subscriber_id)
    }

    fn subscriptions_of_locked(
        &self,
        conn: &Connection,
        subscriber_id: i64,
    ) -> Result<Vec<(i64, String)>> {
        let mut stmt = conn.prepare_cached(
            "SELECT id, query FROM subscriptions WHERE subscriber_id = ?1 ORDER BY id",
        )?;
        let rows = stmt.query_map([subscriber_id], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }

    /// The subscription with this id: (its query, its subscriber's address).
    pub fn subscription(&self, id: i64) -> Result<Option<(String, String)>> {
        Ok(self
            .conn()
            .query_row(
                "SELECT q.query, s.email FROM subscriptions q
                 JOIN subscribers s ON s.id = q.subscriber_id WHERE q.id = ?1",
                [id],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?)
    }

    /// The latest `limit` items a subscription matched, newest match first, sent or not.
    pub fn subscription_matches(&self, id: i64, limit: usize) -> Result<Vec<MatchedItem>> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT i.id, i.title, i.link, i.summary, i.published_at, m.matched_at, f.name
             FROM matches m JOIN items i ON i.id = m.item_id JOIN feeds f ON f.id = i.feed_id
             WHERE m.subscription_id = ?1
             ORDER BY m.matched_at DESC, i.id DESC LIMIT ?2",
        )?;
        let rows = stmt.query_map(params![id, limit as i64], |r| {
            Ok(MatchedItem {
                item_id: r.get(0)?,
                title: r.get(1)?,
                link: r.get(2)?,
                summary: r.get(3)?,
                published: r.get::<_, Option<i64>>(4)?.and_then(from_unix),
                matched_at: from_unix(r.get(5)?).unwrap_or_default(),
                feed_name: r.get(6)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }

    /// A subscriber's subscriptions as (id, query, paused), oldest first.
    pub fn subscription_states(&self, subscriber_id: i64) -> Result<Vec<(i64, String, bool)>> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT id, query, paused_at IS NOT NULL FROM subscriptions
             WHERE subscriber_id = ?1 ORDER BY id",
        )?;
        let rows = stmt.query_map([subscriber_id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }

    /// Pauses (or resumes) one of a subscriber's subscriptions: a paused one matches
    /// nothing new. Returns false if they had no such subscription.
    pub fn set_subscription_paused(
        &self,
        subscriber_id: i64,
        subscription_id: i64,
        paused: bool,
        now: DateTime<Utc>,
    ) -> Result<bool> {
        Ok(self.conn().execute(
            "UPDATE subscriptions SET paused_at = CASE WHEN ?3 THEN COALESCE(paused_at, ?4) END
             WHERE id = ?1 AND subscriber_id = ?2",
            params![subscription_id, subscriber_id, paused, now.timestamp()],
        )? == 1)
    }

    /// Removes one of a subscriber's subscriptions (and its pending matches). Returns false
    /// if they had no such subscription.
    pub fn remove_subscription(&self, subscriber_id: i64, subscription_id: i64) -> Result<bool> {
        Ok(self.conn().execute(
            "DELETE FROM subscriptions WHERE id = ?1 AND subscriber_id = ?2",
            params![subscription_id, subscriber_id],
        )? == 1)
    }

    /// Changes a subscriber's schedule and time zone; their next digest is computed anew
    /// from `now`. Returns false if there is no such subscriber.
    pub fn set_schedule(
        &self,
        subscriber_id: i64,
        schedule: Schedule,
        timezone: Tz,
        now: DateTime<Utc>,
    ) -> Result<bool> {
        let next = schedule.next_after(now, timezone).map(|d| d.timestamp());
        Ok(self.conn().execute(
            "UPDATE subscribers SET frequency = ?2, digest_time = ?3, digest_weekday = ?4,
                timezone = ?5, next_digest_at = ?6
             WHERE id = ?1",
            params![
                subscriber_id,
                schedule.frequency(),
                schedule.time().map(|t| t.format("%H:%M").to_string()),
                schedule.weekday().map(|d| d.num_days_from_monday()),
                timezone.name(),
                next,
            ],
        )? == 1)
    }

    /// Unsubscribes the subscriber with this id from the web: removes them, as
    /// [`Store::remove_subscriber`], and remembers the `token` used, so the link keeps
    /// answering "unsubscribed".
    pub fn unsubscribe(&self, id: i64, token: &str, now: DateTime<Utc>) -> Result<()> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        tx.execute("DELETE FROM subscribers WHERE id = ?1", [id])?;
        tx.execute(
            "INSERT INTO unsubscribed (token, at) VALUES (?1, ?2) ON CONFLICT DO NOTHING",
            params![token, now.timestamp()],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Records a sign-up as it is, without limits or mail (tests, tools); the web uses
    /// [`Store::record_signup`].
    pub fn create_signup(&self, signup: &Signup) -> Result<i64> {
        let conn = self.conn();
        conn.execute(
            "INSERT INTO signups (email, queries, frequency, timezone, client, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                signup.email,
                signup.queries.join("\n"),
                signup.frequency,
                signup.timezone,
                signup.client,
                signup.created_at.timestamp()
            ],
        )?;
        Ok(conn.last_insert_rowid())
    }

    /// Sign-ups since `since` for this address, and from this client.
    pub fn recent_signups(
        &self,
        email: &str,
        client: &str,
        since: DateTime<Utc>,
    ) -> Result<(u32, u32)> {
        Ok(self.conn().query_row(
            "SELECT (SELECT COUNT(*) FROM signups WHERE email = ?1 AND created_at >= ?3),
                    (SELECT COUNT(*) FROM signups WHERE client = ?2 AND created_at >= ?3)",
            params![email, client, since.timestamp()],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?)
    }

    pub fn signup(&self, id: i64) -> Result<Option<Signup>> {
        Ok(self
            .conn()
            .query_row(
                "SELECT email, queries, frequency, timezone, client, created_at, confirmed_at
                 FROM signups WHERE id = ?1",
                [id],
                |r| {
                    Ok(Signup {
                        email: r.get(0)?,
                        queries: r.get::<_, String>(1)?.lines().map(str::to_string).collect(),
                        frequency: r.get(2)?,
                        timezone: r.get(3)?,
                        client: r.get(4)?,
                        created_at: from_unix(r.get(5)?).unwrap_or_default(),
                        confirmed_at: r.get::<_, Option<i64>>(6)?.and_then(from_unix),
                    })
                },
            )
            .optional()?)
    }

    /// Confirms a sign-up: the subscriber (created, or their schedule updated) gets its
    /// queries that `keep` accepts (the others could no longer match anything), in one
    /// transaction with marking it confirmed. Returns the subscriber id.
    pub fn confirm_signup(
        &self,
        id: i64,
        schedule: Schedule,
        timezone: Tz,
        keep: impl Fn(&str) -> bool,
        now: DateTime<Utc>,
    ) -> Result<i64> {
        let signup = self.signup(id)?.context("no such sign-up")?;
        for query in signup.queries.iter().filter(|q| keep(q)) {
            self.add_subscription(&signup.email, query, schedule, timezone, now)?;
        }
        self.conn().execute(
            "UPDATE signups SET confirmed_at = COALESCE(confirmed_at, ?2) WHERE id = ?1",
            params![id, now.timestamp()],
        )?;
        self.subscriber(&signup.email)?
            .map(|s| s.id)
            .context("the subscriber vanished")
    }

    /// Queues one message that is not a digest (a sign-up confirmation) in the outbox,
    /// to be delivered, retried and recorded like digests. Returns its outbox id.
    pub fn queue_message(
        &self,
        recipient: &str,
        subject: &str,
        text: &str,
        html: &str,
        message_domain: &str,
        now: DateTime<Utc>,
    ) -> Result<i64> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let id = queue_message_in(&tx, recipient, subject, text, html, message_domain, now)?;
        tx.commit()?;
        Ok(id)
    }

    /// A sign-up from the web, within its limits, in one transaction (so requests sent
    /// at the same moment cannot all pass the count): refused when `signup.client` made
    /// `limits.per_client_per_hour` sign-ups in the last hour; otherwise recorded (it
    /// counts either way) and, while its address was asked for fewer than
    /// `limits.per_address_per_day` times in the last day, the confirmation mail that
    /// `confirmation(id)` renders as (subject, text, html) is queued with it.
    pub fn record_signup(
        &self,
        signup: &Signup,
        limits: SignupLimits,
        message_domain: &str,
        confirmation: impl FnOnce(i64) -> Result<(String, String, String)>,
    ) -> Result<SignupAdmission> {
        let now = signup.created_at;
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let (by_address, by_client): (u32, u32) = tx.query_row(
            "SELECT (SELECT COUNT(*) FROM signups WHERE email = ?1 AND created_at >= ?3),
                    (SELECT COUNT(*) FROM signups WHERE client = ?2 AND created_at >= ?4)",
            params![
                signup.email,
                signup.client,
                (now - chrono::Duration::days(1)).timestamp(),
                (now - chrono::Duration::hours(1)).timestamp(),
            ],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        if by_client >= limits.per_client_per_hour {
            return Ok(SignupAdmission::TooManyFromClient);
        }
        tx.execute(
            "INSERT INTO signups (email, queries, frequency, timezone, client, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                signup.email,
                signup.queries.join("\n"),
                signup.frequency,
                signup.timezone,
                signup.client,
                now.timestamp()
            ],
        )?;
        let id = tx.last_insert_rowid();
        let mailed = by_address < limits.per_address_per_day;
        if mailed {
            let (subject, text, html) = confirmation(id)?;
            queue_message_in(
                &tx,
                &signup.email,
                &subject,
                &text,
                &html,
                message_domain,
                now,
            )?;
        }
        tx.commit()?;
        Ok(SignupAdmission::Recorded { id, mailed })
    }

    /// Whether this unsubscribe token was already used.
    pub fn was_unsubscribed(&self, token: &str) -> Result<bool> {
        Ok(self.conn().query_row(
            "SELECT EXISTS (SELECT 1 FROM unsubscribed WHERE token = ?1)",
            [token],
            |r| r.get(0),
        )?)
    }

    /// Removes the subscriber with this id, as [`Store::remove_subscriber`]. Returns false
    /// if there was none (already removed: unsubscribing twice is fine).
    pub fn remove_subscriber_by_id(&self, id: i64) -> Result<bool> {
        Ok(self
            .conn()
            .execute("DELETE FROM subscribers WHERE id = ?1", [id])?
            == 1)
    }

    /// Lets a paused subscriber receive digests again (bounce count reset). Returns false
    /// if there is no such subscriber.
    pub fn resume_subscriber(&self, email: &str) -> Result<bool> {
        Ok(self.conn().execute(
            "UPDATE subscribers SET paused_at = NULL, bounces = 0 WHERE email = ?1",
            [email],
        )? == 1)
    }

    pub fn subscribers(&self) -> Result<Vec<Subscriber>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(&format!(
            "SELECT {SUBSCRIBER_COLUMNS}, q.query
             FROM subscribers s LEFT JOIN subscriptions q ON q.subscriber_id = s.id
             ORDER BY s.email, q.id"
        ))?;
        let mut rows = stmt.query([])?;
        let mut out: Vec<Subscriber> = Vec::new();
        while let Some(r) = rows.next()? {
            let id: i64 = r.get(0)?;
            if out.last().is_none_or(|s| s.id != id) {
                out.push(subscriber_row(r)?);
            }
            if let (Some(q), Some(last)) = (r.get::<_, Option<String>>(9)?, out.last_mut()) {
                last.queries.push(q);
            }
        }
        Ok(out)
    }

    /// The subscriber with this address (any case), with their queries.
    pub fn subscriber(&self, email: &str) -> Result<Option<Subscriber>> {
        Ok(self
            .subscribers()?
            .into_iter()
            .find(|s| s.email.eq_ignore_ascii_case(email.trim())))
    }

    /// Live items first seen at or after `since`, newest first.
    pub fn items_since(&self, since: DateTime<Utc>) -> Result<Vec<StoredItem>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT f.id, f.name, f.tags, i.title, i.summary, i.content, i.link, i.published_at,
                    i.first_seen_at
             FROM items i JOIN feeds f ON f.id = i.feed_id
             WHERE i.first_seen_at >= ?1
             ORDER BY COALESCE(i.published_at, i.first_seen_at) DESC, i.id DESC",
        )?;
        let rows = stmt.query_map([since.timestamp()], |r| {
            let tags: String = r.get(2)?;
            Ok(StoredItem {
                feed_id: r.get(0)?,
                feed_name: r.get(1)?,
                tags: split_tags(&tags),
                title: r.get(3)?,
                summary: r.get(4)?,
                content: r.get(5)?,
                link: r.get(6)?,
                published: r.get::<_, Option<i64>>(7)?.and_then(from_unix),
                first_seen: from_unix(r.get(8)?).unwrap_or_default(),
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }

    /// The subscriptions' generation: bumped (by triggers, in the same transaction) by
    /// every change to a subscription, from any process.
    pub fn subscriptions_generation(&self) -> Result<i64> {
        Ok(subscriptions_generation(&self.conn())?)
    }

    /// Every active (not paused) subscription as (id, query text), for the matcher, with
    /// the generation they are current at (read in one transaction).
    pub fn subscriptions(&self) -> Result<ActiveSubscriptions> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let generation = subscriptions_generation(&tx)?;
        let queries = {
            let mut stmt = tx.prepare(
                "SELECT id, query FROM subscriptions WHERE paused_at IS NULL ORDER BY id",
            )?;
            stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<rusqlite::Result<Vec<_>>>()?
        };
        tx.commit()?;
        Ok(ActiveSubscriptions {
            generation,
            queries,
        })
    }

    // ---- digests -------------------------------------------------------------------------

    /// Subscribers whose digest round is due at `now`: immediate ones with pending
    /// matches, and scheduled ones whose time has come (with or without matches: taking
    /// an empty digest moves their next time on). With `ignore_schedule`, every subscriber
    /// with pending matches. Paused subscribers are left out.
    pub fn due_digests(&self, now: DateTime<Utc>, ignore_schedule: bool) -> Result<Vec<i64>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT s.id FROM subscribers s
             WHERE s.paused_at IS NULL AND (
                 (s.frequency <> 'immediate' AND NOT ?2
                  AND (s.next_digest_at IS NULL OR s.next_digest_at <= ?1))
                 OR ((s.frequency = 'immediate' OR ?2) AND EXISTS (
                     SELECT 1 FROM subscriptions q
                     JOIN matches m ON m.subscription_id = q.id AND m.outbox_id IS NULL
                     WHERE q.subscriber_id = s.id)))
             ORDER BY s.id",
        )?;
        let rows = stmt.query_map(params![now.timestamp(), ignore_schedule], |r| r.get(0))?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }

    /// Active feeds that have failed `min_failures` times in a row (or are gone), for
    /// digest footers.
    pub fn failing_feeds(&self, min_failures: u32) -> Result<Vec<FailingFeed>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT name, COALESCE(failing_since, last_error_at, 0), COALESCE(last_error, '')
             FROM feeds
             WHERE active = 1 AND (consecutive_failures >= ?1 OR gone_at IS NOT NULL)
             ORDER BY name",
        )?;
        let rows = stmt.query_map([min_failures], |r| {
            Ok(FailingFeed {
                name: r.get(0)?,
                since: from_unix(r.get(1)?).unwrap_or_default(),
                error: r.get(2)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }

    /// In one transaction: loads the subscriber's pending matches, renders them with
    /// `render`, writes the result to the outbox, marks those matches as taken and moves
    /// the subscriber's next digest time on (to the first slot after `now`, so a digest
    /// that was overdue for days goes out once). Returns the outbox id, or `None` when there
    /// was nothing to send (the schedule still moves on). The `Message-ID` is fixed here,
    /// so a resend carries the same one.
    pub fn take_digest(
        &self,
        subscriber_id: i64,
        now: DateTime<Utc>,
        message_domain: &str,
        render: impl FnOnce(&Subscriber, &[DigestEntry], bool) -> Result<Rendered>,
    ) -> Result<Option<i64>> {
        let now_s = now.timestamp();
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let subscriber = tx
            .prepare_cached(&format!(
                "SELECT {SUBSCRIBER_COLUMNS} FROM subscribers s WHERE s.id = ?1"
            ))?
            .query_row([subscriber_id], |r| Ok(subscriber_row(r)))
            .optional()?
            .transpose()?;
        let Some(mut subscriber) = subscriber else {
            return Ok(None);
        };
        let next = subscriber.schedule.next_after(now, subscriber.timezone);
        tx.prepare_cached("UPDATE subscribers SET next_digest_at = ?2 WHERE id = ?1")?
            .execute(params![subscriber.id, next.map(|d| d.timestamp())])?;
        let entries = {
            let mut stmt = tx.prepare_cached(
                "SELECT q.id, q.query, i.id, f.id, f.name, f.tags, i.title, i.link, i.summary,
                        i.content, i.published_at, i.first_seen_at, m.updated
                 FROM matches m
                 JOIN subscriptions q ON q.id = m.subscription_id
                 JOIN items i ON i.id = m.item_id
                 JOIN feeds f ON f.id = i.feed_id
                 WHERE q.subscriber_id = ?1 AND m.outbox_id IS NULL
                 ORDER BY q.id, COALESCE(i.published_at, i.first_seen_at) DESC, i.id
                 LIMIT ?2",
            )?;
            stmt.query_map(params![subscriber.id, MAX_DIGEST_ENTRIES as i64 + 1], |r| {
                let tags: String = r.get(5)?;
                Ok(DigestEntry {
                    subscription_id: r.get(0)?,
                    query: r.get(1)?,
                    item_id: r.get(2)?,
                    feed_id: r.get(3)?,
                    feed_name: r.get(4)?,
                    tags: split_tags(&tags),
                    title: r.get(6)?,
                    link: r.get(7)?,
                    summary: r.get(8)?,
                    content: r.get(9)?,
                    published: r.get::<_, Option<i64>>(10)?.and_then(from_unix),
                    first_seen: from_unix(r.get(11)?).unwrap_or_default(),
                    updated: r.get(12)?,
                })
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?
        };
        if entries.is_empty() {
            tx.commit()?;
            return Ok(None);
        }
        let mut entries = entries;
        let more_follow = entries.len() > MAX_DIGEST_ENTRIES;
        if more_follow {
            entries.truncate(MAX_DIGEST_ENTRIES);
            // Due again at once: the rest go out in the next message, not next period.
            tx.prepare_cached("UPDATE subscribers SET next_digest_at = ?2 WHERE id = ?1")?
                .execute(params![subscriber.id, now_s])?;
        }
        subscriber.queries = entries.iter().map(|e| e.query.clone()).collect();
        subscriber.queries.dedup();
        let rendered = render(&subscriber, &entries, more_follow)?;

        // The row id is part of the Message-ID, so insert first with a placeholder.
        tx.prepare_cached(
            "INSERT INTO outbox (subscriber_id, recipient, message_id, subject, body_text, body_html,
                                 created_at, next_attempt_at)
             VALUES (?1, ?2, 'pending:' || hex(randomblob(16)), ?3, ?4, ?5, ?6, ?6)",
        )?
        .execute(params![
                subscriber.id,
                subscriber.email,
                rendered.subject,
                rendered.text,
                rendered.html,
                now_s
            ])?;
        let outbox_id = tx.last_insert_rowid();
        let message_id = format!(
            "<digest.{outbox_id}.{}.{now_s}@{message_domain}>",
            subscriber.id
        );
        tx.prepare_cached("UPDATE outbox SET message_id = ?2 WHERE id = ?1")?
            .execute(params![outbox_id, message_id])?;
        let mut taken = 0;
        {
            let mut take = tx.prepare_cached(
                "UPDATE matches SET outbox_id = ?3
                 WHERE subscription_id = ?1 AND item_id = ?2 AND outbox_id IS NULL",
            )?;
            for e in &entries {
                taken += take.execute(params![e.subscription_id, e.item_id, outbox_id])?;
            }
        }
        if taken != entries.len() {
            bail!(
                "digest for subscriber {}: took {taken} matches but rendered {}",
                subscriber.id,
                entries.len()
            );
        }
        tx.commit()?;
        Ok(Some(outbox_id))
    }

    // ---- outbox --------------------------------------------------------------------------

    /// Claims up to `limit` pending messages whose next attempt is due, for `lease`:
    /// the longest-waiting first. The claim's token (in each message's `claim`) must be
    /// shown to [`Store::renew_mail_claim`] before sending and to the `mark_*` methods
    /// after: once another sender has claimed a row, the old token opens nothing.
    pub fn claim_mail(
        &self,
        now: DateTime<Utc>,
        lease: Duration,
        limit: usize,
    ) -> Result<Vec<OutboxMessage>> {
        let now_s = now.timestamp();
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let messages = {
            let mut stmt = tx.prepare(&format!(
                "UPDATE outbox SET claimed_until = ?2, claim = hex(randomblob(12))
                 WHERE id IN (SELECT id FROM outbox
                              WHERE status = 'pending' AND next_attempt_at <= ?1
                                AND (claimed_until IS NULL OR claimed_until <= ?1)
                              -- The order of `outbox_pending`: no sort, and the scan stops
                              -- after LIMIT rows instead of reading every pending body.
                              ORDER BY next_attempt_at, id LIMIT ?3)
                 RETURNING {OUTBOX_COLUMNS}"
            ))?;
            stmt.query_map(
                params![now_s, now_s + lease_secs(lease), limit as i64],
                outbox_row,
            )?
            .collect::<rusqlite::Result<Vec<_>>>()?
        };
        tx.commit()?;
        let mut messages = messages;
        messages.sort_by_key(|m| m.id);
        Ok(messages)
    }

    /// Extends a claim to `now + lease`, right before its message is sent. False when
    /// the claim was lost (another sender holds the row, or it is no longer pending):
    /// the message must not be sent.
    pub fn renew_mail_claim(
        &self,
        outbox_id: i64,
        claim: &str,
        now: DateTime<Utc>,
        lease: Duration,
    ) -> Result<bool> {
        Ok(self.conn().execute(
            "UPDATE outbox SET claimed_until = ?3
             WHERE id = ?1 AND claim = ?2 AND status = 'pending'",
            params![outbox_id, claim, now.timestamp() + lease_secs(lease)],
        )? == 1)
    }

    /// Delivered: the row is done, and the subscriber's bounce count starts over. False
    /// (nothing written) when `claim` no longer holds the row. `claim` is `None` only
    /// for a row that was never claimed (tools, benchmarks).
    pub fn mark_sent(
        &self,
        outbox_id: i64,
        claim: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<bool> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let marked = tx.execute(
            "UPDATE outbox SET status = 'sent', sent_at = ?3, attempts = attempts + 1,
             last_error = NULL, claimed_until = NULL, claim = NULL
             WHERE id = ?1 AND claim IS ?2",
            params![outbox_id, claim, now.timestamp()],
        )?;
        if marked == 0 {
            return Ok(false);
        }
        tx.execute(
            "UPDATE subscribers SET bounces = 0
             WHERE bounces > 0 AND id = (SELECT subscriber_id FROM outbox WHERE id = ?1)",
            [outbox_id],
        )?;
        tx.commit()?;
        Ok(true)
    }

    /// A temporary failure: try again at `retry_at`. False when `claim` was lost.
    pub fn mark_retry(
        &self,
        outbox_id: i64,
        claim: Option<&str>,
        error: &str,
        retry_at: DateTime<Utc>,
    ) -> Result<bool> {
        Ok(self.conn().execute(
            "UPDATE outbox SET attempts = attempts + 1, last_error = ?3, next_attempt_at = ?4,
             claimed_until = NULL, claim = NULL WHERE id = ?1 AND claim IS ?2",
            params![outbox_id, claim, error, retry_at.timestamp()],
        )? == 1)
    }

    /// A failure for good: the server's answer is kept; the message is not retried.
    /// False when `claim` was lost.
    pub fn mark_failed(&self, outbox_id: i64, claim: Option<&str>, error: &str) -> Result<bool> {
        Ok(self.conn().execute(
            "UPDATE outbox SET status = 'failed', attempts = attempts + 1, last_error = ?3,
             claimed_until = NULL, claim = NULL WHERE id = ?1 AND claim IS ?2",
            params![outbox_id, claim, error],
        )? == 1)
    }

    /// A permanent rejection (a bounce): the message fails, and its subscriber is paused
    /// once they have bounced `pause_after` times in a row. Returns the address when this
    /// bounce paused them; nothing is written when `claim` was lost.
    pub fn mark_bounced(
        &self,
        outbox_id: i64,
        claim: Option<&str>,
        error: &str,
        pause_after: u32,
        now: DateTime<Utc>,
    ) -> Result<Option<String>> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let marked = tx.execute(
            "UPDATE outbox SET status = 'failed', attempts = attempts + 1, last_error = ?3,
             claimed_until = NULL, claim = NULL WHERE id = ?1 AND claim IS ?2",
            params![outbox_id, claim, error],
        )?;
        if marked == 0 {
            return Ok(None);
        }
        let paused = tx
            .query_row(
                "UPDATE subscribers SET bounces = bounces + 1,
                    paused_at = CASE WHEN paused_at IS NULL AND bounces + 1 >= ?2 THEN ?3
                                     ELSE paused_at END
                 WHERE id = (SELECT subscriber_id FROM outbox WHERE id = ?1)
                 RETURNING email, paused_at IS ?3",
                params![outbox_id, pause_after, now.timestamp()],
                |r| Ok((r.get::<_, String>(0)?, r.get::<_, bool>(1)?)),
            )
            .optional()?;
        tx.commit()?;
        Ok(paused.and_then(|(email, paused)| paused.then_some(email)))
    }

    /// Puts a failed (or pending) message back in the queue to be sent at `now`, with its
    /// attempts reset. Sent mail cannot be requeued. Returns false if there is no such row.
    pub fn requeue(&self, outbox_id: i64, now: DateTime<Utc>) -> Result<bool> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let row: Option<(String, Option<i64>)> = tx
            .query_row(
                "SELECT status, claimed_until FROM outbox WHERE id = ?1",
                [outbox_id],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        match row {
            None => return Ok(false),
            Some((status, _)) if status == "sent" => bail!("message {outbox_id} was already sent"),
            // A sender holds it: requeueing would take its claim and send it twice.
            Some((_, Some(until))) if until > now.timestamp() => {
                bail!("message {outbox_id} is being sent right now; look again in a minute")
            }
            Some(_) => {}
        }
        tx.execute(
            "UPDATE outbox SET status = 'pending', attempts = 0, next_attempt_at = ?2,
             created_at = ?2, claimed_until = NULL, claim = NULL WHERE id = ?1",
            params![outbox_id, now.timestamp()],
        )?;
        tx.commit()?;
        Ok(true)
    }

    pub fn outbox(&self) -> Result<Vec<OutboxMessage>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(&format!("SELECT {OUTBOX_COLUMNS} FROM outbox ORDER BY id"))?;
        let rows = stmt.query_map([], outbox_row)?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }

    // ---- service -------------------------------------------------------------------------

    /// Answers when the database does: a trivial query through the shared connection.
    pub fn ping(&self) -> Result<()> {
        self.conn().query_row("SELECT 1", [], |_| Ok(()))?;
        Ok(())
    }

    /// Counts for health and metrics, read in one snapshot.
    pub fn service_stats(&self) -> Result<ServiceStats> {
        Ok(self.conn().query_row(
            "SELECT (SELECT COUNT(*) FROM outbox WHERE status = 'pending'),
                    (SELECT MIN(created_at) FROM outbox WHERE status = 'pending'),
                    (SELECT COUNT(*) FROM feeds WHERE active = 1),
                    (SELECT COUNT(*) FROM feeds WHERE active = 1
                        AND (consecutive_failures > 0 OR gone_at IS NOT NULL)),
                    (SELECT COUNT(*) FROM subscribers)",
            [],
            |r| {
                Ok(ServiceStats {
                    outbox_pending: r.get(0)?,
                    oldest_pending: r.get::<_, Option<i64>>(1)?.and_then(from_unix),
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
        {
            let source = self.conn();
            let backup = Backup::new(&source, &mut copy)?;
            // All pages in one step, under one read transaction: a consistent snapshot
            // that writers in WAL mode go on around. (Copying a few pages per step
            // starts over whenever another connection writes, maybe forever.)
            let mut waits = 0;
            loop {
                match backup.step(-1)? {
                    StepResult::Done => break,
                    StepResult::More => {}
                    _ if waits < 100 => {
                        waits += 1;
                        std::thread::sleep(Duration::from_millis(100));
                    }
                    other => bail!("the database stayed locked ({other:?})"),
                }
            }
        }
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

/// Sent or failed messages deleted per prune transaction (their bodies are most of the
/// bytes a prune frees).
const PRUNE_OUTBOX_BATCH: usize = 200;
/// Items looked at per prune transaction.
const PRUNE_ITEM_BATCH: usize = 2000;
/// Between prune batches: the lock is free this long, so writers waiting on it (a poll
/// storing items) get it rather than the next batch.
const PRUNE_PAUSE: Duration = Duration::from_millis(50);

/// Whether `feed`'s claim still holds it.
fn holds_claim(tx: &rusqlite::Transaction<'_>, feed: &FeedToPoll) -> rusqlite::Result<bool> {
    let claim: Option<String> = tx
        .prepare_cached("SELECT claim FROM feeds WHERE id = ?1")?
        .query_row([&feed.id], |r| r.get(0))
        .optional()?
        .flatten();
    Ok(claim == feed.claim)
}

/// A lease in whole seconds, rounded up (a lease of 0.5 s must not end at once).
fn lease_secs(lease: Duration) -> i64 {
    i64::try_from(lease.as_secs() + u64::from(lease.subsec_nanos() > 0)).unwrap_or(i64::MAX / 4)
}

/// Queues one message (not a digest) to `recipient` inside `tx`.
fn queue_message_in(
    tx: &rusqlite::Transaction<'_>,
    recipient: &str,
    subject: &str,
    text: &str,
    html: &str,
    message_domain: &str,
    now: DateTime<Utc>,
) -> Result<i64> {
    tx.execute(
        "INSERT INTO outbox (recipient, message_id, subject, body_text, body_html,
                             created_at, next_attempt_at)
         VALUES (?1, 'pending:' || hex(randomblob(16)), ?2, ?3, ?4, ?5, ?5)",
        params![recipient, subject, text, html, now.timestamp()],
    )?;
    let id = tx.last_insert_rowid();
    tx.execute(
        "UPDATE outbox SET message_id = ?2 WHERE id = ?1",
        params![
            id,
            format!("<note.{id}.{}@{message_domain}>", now.timestamp())
        ],
    )?;
    Ok(id)
}

fn subscriptions_generation(conn: &Connection) -> rusqlite::Result<i64> {
    conn.prepare_cached("SELECT value FROM generations WHERE name = 'subscriptions'")?
        .query_row([], |r| r.get(0))
}

fn pending_matches(tx: &rusqlite::Transaction<'_>) -> rusqlite::Result<i64> {
    tx.query_row(
        "SELECT COUNT(*) FROM matches WHERE outbox_id IS NULL",
        [],
        |r| r.get(0),
    )
}

/// Pruning must never make a match pending, nor drop one that is.
fn check_pending(tx: &rusqlite::Transaction<'_>, before: i64) -> Result<()> {
    let after = pending_matches(tx)?;
    if after != before {
        bail!("pruning would change the pending matches from {before} to {after}; rolled back");
    }
    Ok(())
}

/// What `/metrics` and `/healthz` report about stored state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServiceStats {
    pub outbox_pending: i64,
    /// When the oldest pending message was queued.
    pub oldest_pending: Option<DateTime<Utc>>,
    pub feeds_active: i64,
    /// Active feeds whose last poll failed, or that are gone.
    pub feeds_failing: i64,
    pub subscribers: i64,
}

const OUTBOX_COLUMNS: &str = "id, recipient, message_id, subject, body_text, body_html, created_at, \
     status, attempts, last_error, next_attempt_at, sent_at, subscriber_id, claim";

const SUBSCRIBER_COLUMNS: &str = "s.id, s.email, s.frequency, s.digest_time, s.digest_weekday, \
     s.timezone, s.next_digest_at, s.bounces, s.paused_at";

/// A subscriber from [`SUBSCRIBER_COLUMNS`], without queries.
fn subscriber_row(r: &rusqlite::Row<'_>) -> Result<Subscriber> {
    let frequency: String = r.get(2)?;
    let time: Option<String> = r.get(3)?;
    let timezone: String = r.get(5)?;
    Ok(Subscriber {
        id: r.get(0)?,
        email: r.get(1)?,
        schedule: Schedule::from_parts(&frequency, time.as_deref(), r.get(4)?)
            .map_err(anyhow::Error::msg)?,
        timezone: timezone
            .parse()
            .map_err(|e| anyhow::anyhow!("time zone {timezone:?}: {e}"))?,
        next_digest_at: r.get::<_, Option<i64>>(6)?.and_then(from_unix),
        bounces: r.get(7)?,
        paused_at: r.get::<_, Option<i64>>(8)?.and_then(from_unix),
        queries: Vec::new(),
    })
}

fn split_tags(tags: &str) -> Vec<String> {
    tags.split(',')
        .filter(|t| !t.is_empty())
        .map(str::to_string)
        .collect()
}

fn outbox_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<OutboxMessage> {
    Ok(OutboxMessage {
        subscriber_id: r.get(12)?,
        id: r.get(0)?,
        recipient: r.get(1)?,
        message_id: r.get(2)?,
        subject: r.get(3)?,
        body_text: r.get(4)?,
        body_html: r.get(5)?,
        created_at: from_unix(r.get(6)?).unwrap_or_default(),
        status: r.get(7)?,
        attempts: r.get(8)?,
        last_error: r.get(9)?,
        next_attempt_at: from_unix(r.get(10)?).unwrap_or_default(),
        sent_at: r.get::<_, Option<i64>>(11)?.and_then(from_unix),
        claim: r.get(13)?,
    })
}

fn from_unix(secs: i64) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp(secs, 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn every_migration_file_is_embedded() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations");
        let mut files: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".sql"))
            .collect();
        files.sort();
        let embedded: Vec<&str> = MIGRATIONS.iter().map(|(name, _)| *name).collect();
        assert_eq!(files, embedded);
    }

    #[test]
    fn migrations_are_valid_and_reopening_is_a_no_op() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let store = Store::open(&path).unwrap();
        let now = Utc.with_ymd_and_hms(2026, 11, 28, 12, 0, 0).unwrap();
        store
            .add_subscription("a@x.example", "asylum", Schedule::Immediate, Tz::UTC, now)
            .unwrap();
        drop(store);
        let store = Store::open(&path).unwrap();
        assert_eq!(
            store.subscribers().unwrap().len(),
            1,
            "data survives reopening"
        );
        let version: i64 = store
            .conn()
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(version, MIGRATIONS.len() as i64);
    }

    /// A matcher is keyed by the generation: every kind of change, made through any
    /// path (a cascade from removing a subscriber included), must move it, and a removed
    /// subscription's id must never come back.
    #[test]
    fn every_subscription_change_moves_the_generation_and_ids_are_never_reused() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("t.db")).unwrap();
        let now = Utc.with_ymd_and_hms(2026, 11, 28, 12, 0, 0).unwrap();
        let add = |email: &str, query: &str| {
            store
                .add_subscription(email, query, Schedule::Immediate, Tz::UTC, now)
                .unwrap()
        };
        let id_of = |query: &str| {
            store
                .subscriptions()
                .unwrap()
                .queries
                .into_iter()
                .find(|(_, q)| q == query)
                .map(|(id, _)| id)
        };
        let mut seen = vec![store.subscriptions_generation().unwrap()];
        let mut step = |name: &str| {
            let g = store.subscriptions_generation().unwrap();
            assert!(!seen.contains(&g), "{name}: generation {g} seen before");
            seen.push(g);
        };
        add("a@x.example", "asylum");
        step("add");
        add("b@x.example", "DACA");
        step("add a second");
        let daca = id_of("DACA").unwrap();
        let b = store.subscriber("b@x.example").unwrap().unwrap().id;
        assert!(store.set_subscription_paused(b, daca, true, now).unwrap());
        step("pause");
        assert_eq!(id_of("DACA"), None, "a paused search is not matched");
        assert!(store.set_subscription_paused(b, daca, false, now).unwrap());
        step("resume");
        assert!(store.remove_subscriber("b@x.example").unwrap());
        step("remove the subscriber (cascade)");
        add("c@x.example", "TPS");
        step("add after remove");
        let tps = id_of("TPS").unwrap();
        assert!(
            tps > daca,
            "id {daca} of a removed search was reused ({tps})"
        );
        let c = store.subscriber("c@x.example").unwrap().unwrap().id;
        assert!(store.remove_subscription(c, tps).unwrap());
        step("remove one search");
        let active = store.subscriptions().unwrap();
        assert_eq!(active.generation, *seen.last().unwrap());
        assert_eq!(active.queries.len(), 1);
    }

    /// A feed's claim is valid while it is held: a worker whose lease ran out while it
    /// waited (another took the feed) neither fetches it (the renewal fails) nor writes
    /// its result over the new holder's.
    #[test]
    fn a_worker_that_lost_its_feed_claim_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("t.db")).unwrap();
        let t0 = Utc.with_ymd_and_hms(2026, 11, 28, 12, 0, 0).unwrap();
        store
            .sync_feeds(&[FeedConfig {
                id: "f".into(),
                name: "F".into(),
                url: "https://f.example/feed".parse().unwrap(),
                tags: Vec::new(),
                interval: Duration::from_secs(900),
            }])
            .unwrap();
        let lease = Duration::from_secs(300);
        let old = store.claim_feeds(t0, lease, false).unwrap().remove(0);
        let later = t0 + chrono::Duration::seconds(301);
        let new = store.claim_feeds(later, lease, false).unwrap().remove(0);
        assert!(!store.renew_feed_claim(&old, later, lease).unwrap());
        assert!(store.renew_feed_claim(&new, later, lease).unwrap());
        let failed = store
            .record_failure(&old, later, "http", "HTTP 500", later)
            .unwrap();
        assert!(!failed, "the old holder's failure is not recorded");
        assert_eq!(store.consecutive_failures("f").unwrap(), 0);
        let items = [Item {
            key: "k".into(),
            guid: None,
            link: None,
            title: "Asylum".into(),
            summary: String::new(),
            content: String::new(),
            published: Some(later),
        }];
        let poll = SuccessfulPoll {
            items: &items,
            etag: None,
            last_modified: None,
            full_fetch: true,
            moved_to: None,
            repairs: &[],
            now: later,
            next_poll_at: later,
            baseline_cutoff: later,
            body_hash: None,
            matcher_generation: store.subscriptions_generation().unwrap(),
        };
        let outcome = store.store_items(&old, &poll, |_| Vec::new()).unwrap();
        assert_eq!(outcome, StoreOutcome::ClaimLost);
        assert!(store.feed_items("f").unwrap().is_empty());
        store.release_claim(&old).unwrap();
        assert!(
            store.claim_feeds(later, lease, false).unwrap().is_empty(),
            "the old holder cannot release the new holder's claim"
        );
        let outcome = store.store_items(&new, &poll, |_| Vec::new()).unwrap();
        assert!(matches!(outcome, StoreOutcome::Stored(s) if s.new_items == 1));
    }

    /// Items are never matched by a matcher older than the subscriptions: the store
    /// refuses it, inside the transaction that would write the matches.
    #[test]
    fn storing_with_a_stale_matcher_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("t.db")).unwrap();
        let now = Utc.with_ymd_and_hms(2026, 11, 28, 12, 0, 0).unwrap();
        store
            .sync_feeds(&[FeedConfig {
                id: "f".into(),
                name: "F".into(),
                url: "https://f.example/feed".parse().unwrap(),
                tags: Vec::new(),
                interval: Duration::from_secs(900),
            }])
            .unwrap();
        let stale = store.subscriptions_generation().unwrap();
        store
            .add_subscription("a@x.example", "asylum", Schedule::Immediate, Tz::UTC, now)
            .unwrap();
        let feed = store
            .claim_feeds(now, Duration::from_secs(60), false)
            .unwrap()
            .remove(0);
        let items = [Item {
            key: "k".into(),
            guid: None,
            link: None,
            title: "Asylum".into(),
            summary: String::new(),
            content: String::new(),
            published: Some(now),
        }];
        let poll = |generation| SuccessfulPoll {
            items: &items,
            etag: None,
            last_modified: None,
            full_fetch: true,
            moved_to: None,
            repairs: &[],
            now,
            next_poll_at: now,
            baseline_cutoff: now - chrono::Duration::days(1),
            body_hash: None,
            matcher_generation: generation,
        };
        let outcome = store.store_items(&feed, &poll(stale), |_| vec![1]).unwrap();
        assert_eq!(outcome, StoreOutcome::StaleMatcher);
        assert!(store.feed_items("f").unwrap().is_empty(), "nothing stored");
        let current = store.subscriptions_generation().unwrap();
        let outcome = store
            .store_items(&feed, &poll(current), |_| vec![1])
            .unwrap();
        assert!(matches!(outcome, StoreOutcome::Stored(s) if s.new_items == 1 && s.matches == 1));
    }

    /// The body hash stands for what was stored from the feed's URL; a feed given a new
    /// URL starts over (a fresh baseline), even if the new URL serves the same bytes.
    #[test]
    fn the_body_hash_is_kept_per_url() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("t.db")).unwrap();
        let now = Utc.with_ymd_and_hms(2026, 11, 28, 12, 0, 0).unwrap();
        let config = |url: &str| FeedConfig {
            id: "f".into(),
            name: "F".into(),
            url: url.parse().unwrap(),
            tags: Vec::new(),
            interval: Duration::from_secs(900),
        };
        store.sync_feeds(&[config("https://f.example/a")]).unwrap();
        let claim = || {
            let mut claimed = store.claim_feeds(now, Duration::ZERO, false).unwrap();
            assert_eq!(claimed.len(), 1);
            claimed.remove(0)
        };
        let feed = claim();
        assert_eq!(feed.body_hash, None);
        let poll = SuccessfulPoll {
            items: &[],
            etag: None,
            last_modified: None,
            full_fetch: true,
            moved_to: None,
            repairs: &[],
            body_hash: Some("abc"),
            now,
            next_poll_at: now,
            baseline_cutoff: now,
            matcher_generation: store.subscriptions_generation().unwrap(),
        };
        store.store_items(&feed, &poll, |_| Vec::new()).unwrap();
        assert_eq!(claim().body_hash.as_deref(), Some("abc"));
        store.sync_feeds(&[config("https://f.example/a")]).unwrap();
        assert_eq!(claim().body_hash.as_deref(), Some("abc"), "same URL");
        store.sync_feeds(&[config("https://f.example/b")]).unwrap();
        assert_eq!(claim().body_hash, None, "new URL");
    }

    #[test]
    fn read_only_opens_only_a_current_database_and_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let old = dir.path().join("v2.db");
        {
            let mut conn = Connection::open(&old).unwrap();
            let v2 = Migrations::new(MIGRATIONS[..2].iter().map(|(_, sql)| M::up(sql)).collect());
            v2.to_latest(&mut conn).unwrap();
        }
        let err = Store::open_read_only(&old).err().unwrap();
        assert!(
            format!("{err:#}").contains("schema version 2, not"),
            "{err:#}"
        );
        let version: i64 = Connection::open(&old)
            .unwrap()
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(version, 2, "not migrated");

        let missing = dir.path().join("none.db");
        assert!(Store::open_read_only(&missing).is_err());
        assert!(!missing.exists(), "not created");

        let current = dir.path().join("t.db");
        let store = Store::open(&current).unwrap();
        let now = Utc::now();
        store
            .add_subscription("a@x.example", "asylum", Schedule::Immediate, Tz::UTC, now)
            .unwrap();
        drop(store);
        let bytes = std::fs::read(&current).unwrap();
        let read = Store::open_read_only(&current).unwrap();
        assert_eq!(read.subscribers().unwrap()[0].queries, ["asylum"]);
        assert!(read.remove_subscriber("a@x.example").is_err(), "read only");
        drop(read);
        assert_eq!(
            std::fs::read(&current).unwrap(),
            bytes,
            "not a byte written"
        );
        for beside in ["t.db-wal", "t.db-shm"] {
            assert!(!dir.path().join(beside).exists(), "{beside} left behind");
        }

        // Beside a writer (the daemon), it reads what was committed and leaves the
        // writer's files to it.
        let writer = Store::open(&current).unwrap();
        writer
            .add_subscription("b@x.example", "parole", Schedule::Immediate, Tz::UTC, now)
            .unwrap();
        let read = Store::open_read_only(&current).unwrap();
        assert_eq!(read.subscribers().unwrap().len(), 2);
        drop(read);
        writer
            .add_subscription("c@x.example", "visa", Schedule::Immediate, Tz::UTC, now)
            .unwrap();
        assert_eq!(writer.subscribers().unwrap().len(), 3);
    }

    #[test]
    fn a_database_from_a_newer_tidings_is_refused_and_left_as_it_is() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        drop(Store::open(&path).unwrap());
        let newer = MIGRATIONS.len() as i64 + 1;
        Connection::open(&path)
            .unwrap()
            .pragma_update(None, "user_version", newer)
            .unwrap();
        let bytes = std::fs::read(&path).unwrap();
        for (name, opened) in [
            ("open", Store::open(&path).err()),
            ("open_read_only", Store::open_read_only(&path).err()),
        ] {
            let err = format!("{:#}", opened.unwrap());
            assert!(
                err.contains(&format!(
                    "was written by a newer version of Tidings (schema version {newer}"
                )) && !err.contains("migrat"),
                "{name}: {err}"
            );
        }
        assert_eq!(std::fs::read(&path).unwrap(), bytes, "left as it was");
    }

    /// Version 3 rebuilds `subscribers`; their subscriptions, matches and mail must survive
    /// (a rebuild with foreign keys on would cascade-delete them).
    #[test]
    fn upgrading_from_version_2_keeps_subscribers_and_their_subscriptions() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v2.db");
        {
            let mut conn = Connection::open(&path).unwrap();
            let v2 = Migrations::new(MIGRATIONS[..2].iter().map(|(_, sql)| M::up(sql)).collect());
            v2.to_latest(&mut conn).unwrap();
            conn.execute_batch(
                "PRAGMA foreign_keys = ON;
                 INSERT INTO feeds (id, url, name) VALUES ('f', 'https://f.example/', 'F');
                 INSERT INTO items (id, feed_id, key, title, summary, content, first_seen_at)
                     VALUES (1, 'f', 'k', 'T', '', '', 0);
                 INSERT INTO subscribers (id, email, frequency, next_digest_at, created_at)
                     VALUES (7, 'd@x.example', 'daily', 100, 0), (8, 'i@x.example', 'immediate', NULL, 0);
                 INSERT INTO subscriptions (id, subscriber_id, query, created_at)
                     VALUES (1, 7, 'asylum', 0), (2, 8, 'parole', 0);
                 INSERT INTO matches (subscription_id, item_id, matched_at) VALUES (1, 1, 0), (2, 1, 0);",
            )
            .unwrap();
        }
        let store = Store::open(&path).unwrap();
        let subscribers = store.subscribers().unwrap();
        assert_eq!(subscribers.len(), 2);
        assert_eq!(subscribers[0].email, "d@x.example");
        assert_eq!(
            subscribers[0].schedule,
            Schedule::Daily {
                at: chrono::NaiveTime::from_hms_opt(8, 0, 0).unwrap()
            }
        );
        assert_eq!(subscribers[0].queries, ["asylum"]);
        assert_eq!(subscribers[1].schedule, Schedule::Immediate);
        assert_eq!(subscribers[1].queries, ["parole"]);
        let pending: i64 = store
            .conn()
            .query_row(
                "SELECT COUNT(*) FROM matches WHERE outbox_id IS NULL",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(pending, 2);
        // Foreign keys are on again and still point at the rebuilt table.
        assert!(store.remove_subscriber("i@x.example").unwrap());
        let left: i64 = store
            .conn()
            .query_row("SELECT COUNT(*) FROM subscriptions", [], |r| r.get(0))
            .unwrap();
        assert_eq!(
            left, 1,
            "removing a subscriber cascades to their subscriptions"
        );
    }
}
