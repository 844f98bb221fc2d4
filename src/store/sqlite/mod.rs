//! SQLite, the embedded default: one file, one connection shared behind a mutex, every
//! operation that crosses a crash boundary one `IMMEDIATE` transaction (so writers in
//! this process and in others are serialized by SQLite's lock).

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

use super::*;
use crate::digest::MAX_DIGEST_ENTRIES;

mod articles;
mod channels;
mod checkpoint;
mod cluster;
mod digests;
mod feeds;
mod items;
mod maintenance;
mod outbox;
mod signups;
mod stories;
mod subscriptions;

/// The migrations, in order. Each file in `migrations/sqlite/` must be listed here.
const MIGRATIONS: &[(&str, &str)] = &[
    (
        "0001_init.sql",
        include_str!("../../../migrations/sqlite/0001_init.sql"),
    ),
    (
        "0002_fetch_state.sql",
        include_str!("../../../migrations/sqlite/0002_fetch_state.sql"),
    ),
    (
        "0003_digest_schedules.sql",
        include_str!("../../../migrations/sqlite/0003_digest_schedules.sql"),
    ),
    (
        "0004_retention.sql",
        include_str!("../../../migrations/sqlite/0004_retention.sql"),
    ),
    (
        "0005_web.sql",
        include_str!("../../../migrations/sqlite/0005_web.sql"),
    ),
    (
        "0006_generations.sql",
        include_str!("../../../migrations/sqlite/0006_generations.sql"),
    ),
    (
        "0007_body_hash.sql",
        include_str!("../../../migrations/sqlite/0007_body_hash.sql"),
    ),
    (
        "0008_cluster.sql",
        include_str!("../../../migrations/sqlite/0008_cluster.sql"),
    ),
    (
        "0009_articles.sql",
        include_str!("../../../migrations/sqlite/0009_articles.sql"),
    ),
    (
        "0010_channels.sql",
        include_str!("../../../migrations/sqlite/0010_channels.sql"),
    ),
    (
        "0011_stories.sql",
        include_str!("../../../migrations/sqlite/0011_stories.sql"),
    ),
    (
        "0012_languages.sql",
        include_str!("../../../migrations/sqlite/0012_languages.sql"),
    ),
    (
        "0013_claim_owner.sql",
        include_str!("../../../migrations/sqlite/0013_claim_owner.sql"),
    ),
];

/// The SQLite database behind a [`Store`].
pub struct Sqlite {
    conn: Arc<Mutex<Connection>>,
    /// The window's grouped items by term (see [`crate::story`]).
    stories: Mutex<crate::story::StoryIndex>,
    /// Folds the log into the database file off the writing connection; `None` for a
    /// database opened to read.
    checkpointer: Option<checkpoint::Checkpointer>,
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

impl Sqlite {
    /// Opens (creating if needed) the database at `path` and brings its schema up to date.
    pub fn open(path: &Path) -> Result<Sqlite> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("creating folder {}", dir.display()))?;
        }
        let mut conn = Connection::open(path)
            .with_context(|| format!("opening database {}", path.display()))?;
        conn.busy_timeout(Duration::from_secs(10))?;
        fixed_plans(&conn)?;
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
        conn.pragma_update(None, "wal_autocheckpoint", checkpoint::FOREGROUND_PAGES)?;
        let checkpointer = checkpoint::Checkpointer::start(path)?;
        Ok(Sqlite {
            conn: Arc::new(Mutex::new(conn)),
            stories: Default::default(),
            checkpointer: Some(checkpointer),
        })
    }

    /// Opens the existing database at `path` to read only, without creating or migrating
    /// it: for commands that only look (`check-config`). Refuses a database whose schema
    /// is not this version's (older ones are migrated by any other command). Nothing is
    /// written, not even by closing (see [`open_untouched`]).
    pub fn open_read_only(path: &Path) -> Result<Sqlite> {
        let (conn, version) = open_untouched(path)?;
        let expected = MIGRATIONS.len() as i64;
        if version != expected {
            bail!(
                "database {} has schema version {version}, not {expected}: any command that \
                 writes (`tidings run`, `tidings poll`) migrates it, once it can be written",
                path.display()
            );
        }
        Ok(Sqlite {
            conn: Arc::new(Mutex::new(conn)),
            stories: Default::default(),
            checkpointer: None,
        })
    }

    /// Copies the database at `source` into a new database at `copy` with SQLite's online
    /// backup, while other connections (a daemon) may be writing to it, without changing
    /// `source` (opened as [`Sqlite::open_read_only`] opens it) nor migrating it; then
    /// opens the copy, bringing its schema up to date. Returns the copy and the schema
    /// version `source` has. A file that is not a Tidings database is refused.
    pub fn snapshot(source: &Path, copy: &Path) -> Result<(Sqlite, i64)> {
        let (conn, version) = open_untouched(source)?;
        if version == 0 {
            bail!(
                "{} is not a Tidings database (no schema version)",
                source.display()
            );
        }
        let mut target =
            Connection::open(copy).with_context(|| format!("creating {}", copy.display()))?;
        backup_pages(&conn, &mut target)
            .with_context(|| format!("copying database {}", source.display()))?;
        target.close().map_err(|(_, e)| e)?;
        drop(conn);
        Ok((Sqlite::open(copy)?, version))
    }

    pub(super) fn conn(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock cannot leave SQLite half-written (transactions
        // roll back on drop), so a poisoned lock is safe to keep using.
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    // ---- feeds ---------------------------------------------------------------------------
}

/// Compiled statements kept, and plans that do not depend on bound values: SQLite would otherwise compile a statement
/// again each time it runs with a new value the planner could use (a `LIMIT ?`), and
/// Tidings never gathers the statistics that make value-dependent plans worth it.
fn fixed_plans(conn: &Connection) -> Result<()> {
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true)?;
    // Room for every statement a poll's storing runs, kept compiled between polls.
    conn.set_prepared_statement_cache_capacity(128);
    Ok(())
}

/// Opens the existing database at `path` without creating, migrating or writing to it,
/// and reads its schema version (one a newer Tidings wrote is refused).
///
/// Where this process may write the file, the connection may write but refuses to
/// (`query_only`): a read-only connection to a WAL database creates its `-wal` and
/// `-shm` files and cannot remove them, where this one, the last to close, removes them,
/// as the daemon's does. A `-wal` file that was there before (a daemon running, or one
/// killed) is left as found: closing would otherwise checkpoint it into the database
/// file, a write.
///
/// Where it may not (a read-only file or filesystem, another user's database), it
/// creates nothing beside the file, which would stand in its owner's way: with nothing in
/// a `-wal`, the database file holds everything and is read as an immutable file;
/// otherwise through the `-shm` file of the process that writes it. So too where the
/// `-shm` file cannot be made (a full disk).
fn open_untouched(given: &Path) -> Result<(Connection, i64)> {
    // A writer closing as this looks (checkpointing, then removing its `-wal` and `-shm`
    // files) can leave what it saw out of date: one more look then sees what is there.
    match open_untouched_once(given) {
        Err(e) if cannot_share(&e) => {
            std::thread::sleep(Duration::from_millis(100));
            open_untouched_once(given)
        }
        opened => opened,
    }
}

fn open_untouched_once(given: &Path) -> Result<(Connection, i64)> {
    // The `-wal` and `-shm` files are beside the file a link leads to.
    let path = &std::fs::canonicalize(given)
        .with_context(|| format!("opening database {}", given.display()))?;
    let beside = |suffix: &str| {
        let mut name = path.as_os_str().to_owned();
        name.push(suffix);
        std::path::PathBuf::from(name)
    };
    let (wal, shm) = (beside("-wal"), beside("-shm"));
    let wal_existed = wal.exists();
    let logged = std::fs::metadata(&wal).is_ok_and(|m| m.len() > 0);
    // Asked of the kernel, not tried: closing a descriptor of the file would drop this
    // process's SQLite locks on it.
    let may = |path: &Path, access| rustix::fs::access(path, access).is_ok();
    let writable = may(path, rustix::fs::Access::WRITE_OK);
    let shm_readable = shm.exists().then(|| may(&shm, rustix::fs::Access::READ_OK));
    let open = |flags| Connection::open_with_flags(path, flags | OpenFlags::SQLITE_OPEN_NO_MUTEX);
    let conn = match read_via(writable, logged, shm_readable) {
        Ok(ReadVia::Writing) => {
            let conn = open(OpenFlags::SQLITE_OPEN_READ_WRITE)
                .with_context(|| format!("opening database {}", given.display()))?;
            match readable(conn, given, wal_existed) {
                Err(e) if !logged && cannot_share(&e) => {
                    readable(open_immutable(path)?, given, false)
                }
                opened => opened,
            }?
        }
        Ok(ReadVia::SharedMemory) => {
            let conn = open(OpenFlags::SQLITE_OPEN_READ_ONLY)
                .with_context(|| format!("opening database {}", given.display()));
            // A `-shm` left by a writer that died may need a recovery this user cannot
            // write; with nothing in the log, the file holds everything.
            match conn.and_then(|conn| readable(conn, given, true)) {
                Err(e) if !logged && cannot_share(&e) => {
                    readable(open_immutable(path)?, given, false)
                }
                opened => opened,
            }?
        }
        Ok(ReadVia::Immutable) => readable(open_immutable(path)?, given, false)?,
        Err(CannotRead::SharedMemory) => bail!(
            "database {} has changes in its write-ahead log that this user cannot read: it \
             cannot read {}, the shared-memory file of the process that writes it; run this \
             as the user the database belongs to",
            given.display(),
            shm.display()
        ),
        Err(CannotRead::WithoutWriting) => bail!(
            "database {} has changes in its write-ahead log ({}) that this user cannot read \
             without writing beside it: run this as the user the database belongs to, or \
             while its daemon runs",
            given.display(),
            wal.display()
        ),
    };
    let version = schema_version(&conn, given)?;
    Ok((conn, version))
}

/// How [`open_untouched`] reads a database.
#[derive(Debug, PartialEq, Eq)]
enum ReadVia {
    /// As any process that may write it, with writes turned off.
    Writing,
    /// Read-only, through the `-shm` file of the process that writes it, so that process
    /// may go on (checkpointing, too) as this reads.
    SharedMemory,
    /// As a file nothing changes: no locks, nothing made beside it. Only with nothing in
    /// the log and no `-shm` (no process has it open).
    Immutable,
}

/// Why [`open_untouched`] cannot read a database without writing.
#[derive(Debug, PartialEq, Eq)]
enum CannotRead {
    /// Its log holds changes and its `-shm` file cannot be read.
    SharedMemory,
    /// Its log holds changes and it has no `-shm` file, which this user may not make.
    WithoutWriting,
}

/// How to read a database this user may (`writable`) or may not write, whose log holds
/// changes (`logged`), whose `-shm` file is there and readable (`Some(true)`), there and
/// not (`Some(false)`), or not there.
fn read_via(writable: bool, logged: bool, shm: Option<bool>) -> Result<ReadVia, CannotRead> {
    match (writable, logged, shm) {
        (_, true, Some(false)) => Err(CannotRead::SharedMemory),
        (true, _, _) => Ok(ReadVia::Writing),
        // A writer may be at work: read beside it, never around it.
        (false, _, Some(true)) => Ok(ReadVia::SharedMemory),
        (false, false, _) => Ok(ReadVia::Immutable),
        (false, true, _) => Err(CannotRead::WithoutWriting),
    }
}

/// `conn` set up to read only, once it has read the database's header.
fn readable(conn: Connection, path: &Path, wal_existed: bool) -> Result<Connection> {
    if wal_existed {
        conn.set_db_config(DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, true)?;
    }
    conn.pragma_update(None, "query_only", true)?;
    conn.busy_timeout(Duration::from_secs(10))?;
    fixed_plans(&conn)?;
    conn.query_row("PRAGMA user_version", [], |_| Ok(()))
        .with_context(|| format!("reading database {}", path.display()))?;
    Ok(conn)
}

/// Whether `error` is SQLite failing to open or make a WAL database's shared files: in
/// a place it may not write, or on a full disk.
fn cannot_share(error: &anyhow::Error) -> bool {
    use rusqlite::ErrorCode as E;
    error.chain().any(|cause| {
        cause.downcast_ref::<rusqlite::Error>().is_some_and(|e| {
            matches!(
                e.sqlite_error_code(),
                Some(E::ReadOnly | E::CannotOpen | E::SystemIoFailure | E::DiskFull)
            )
        })
    })
}

/// The database at `path` opened to read as a file nothing changes (SQLite's
/// `immutable`): no locks, no `-shm`, no `-wal`.
fn open_immutable(path: &Path) -> Result<Connection> {
    let absolute = std::path::absolute(path)
        .with_context(|| format!("opening database {}", path.display()))?;
    let mut uri = url::Url::from_file_path(&absolute)
        .map_err(|()| anyhow::anyhow!("opening database {}: not a file path", path.display()))?;
    uri.set_query(Some("immutable=1"));
    Connection::open_with_flags(
        uri.as_str(),
        OpenFlags::SQLITE_OPEN_READ_ONLY
            | OpenFlags::SQLITE_OPEN_URI
            | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .with_context(|| format!("opening database {}", path.display()))
}

/// Copies every page of `source` into `copy` (an empty database) in one step, under one
/// read transaction: a consistent snapshot that writers in WAL mode go on around.
/// (Copying a few pages per step starts over whenever another connection writes, maybe
/// forever.)
fn backup_pages(source: &Connection, copy: &mut Connection) -> Result<()> {
    let backup = Backup::new(source, copy)?;
    let mut waits = 0;
    loop {
        match backup.step(-1)? {
            StepResult::Done => return Ok(()),
            StepResult::More => {}
            _ if waits < 100 => {
                waits += 1;
                std::thread::sleep(Duration::from_millis(100));
            }
            other => bail!("the database stayed locked ({other:?})"),
        }
    }
}

/// Whether `feed`'s claim still holds it.
fn holds_claim(tx: &rusqlite::Transaction<'_>, feed: &FeedToPoll) -> rusqlite::Result<bool> {
    let claim: Option<String> = tx
        .prepare_cached("SELECT claim FROM feeds WHERE id = ?1")?
        .query_row([&feed.id], |r| r.get(0))
        .optional()?
        .flatten();
    Ok(claim == feed.claim)
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
) -> Result<OutboxId> {
    tx.execute(
        "INSERT INTO outbox (recipient, message_id, subject, body_text, body_html,
                             created_at, next_attempt_at)
         VALUES (?1, 'pending:' || hex(randomblob(16)), ?2, ?3, ?4, ?5, ?5)",
        params![recipient, subject, text, html, now.timestamp()],
    )?;
    let id = OutboxId(tx.last_insert_rowid());
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

const OUTBOX_COLUMNS: &str = "id, recipient, message_id, subject, body_text, body_html, created_at, \
     status, attempts, last_error, next_attempt_at, sent_at, subscriber_id, claim";

const SUBSCRIBER_COLUMNS: &str = "s.id, s.email, s.frequency, s.digest_time, s.digest_weekday, \
     s.timezone, s.next_digest_at, s.bounces, s.paused_at, s.new_outlets, s.locale";
/// The number of [`SUBSCRIBER_COLUMNS`]: the index of a column selected after them.
const SUBSCRIBER_COLUMN_COUNT: usize = 11;

/// The time stored in column `i` (Unix seconds). One out of range is an error naming the
/// column, never 1970.
fn time(r: &rusqlite::Row<'_>, i: usize) -> rusqlite::Result<DateTime<Utc>> {
    let secs: i64 = r.get(i)?;
    from_unix(secs).ok_or_else(|| out_of_range(i, secs))
}

/// [`time`] of a column that may be NULL.
fn time_opt(r: &rusqlite::Row<'_>, i: usize) -> rusqlite::Result<Option<DateTime<Utc>>> {
    match r.get::<_, Option<i64>>(i)? {
        None => Ok(None),
        Some(secs) => from_unix(secs)
            .map(Some)
            .ok_or_else(|| out_of_range(i, secs)),
    }
}

fn out_of_range(column: usize, secs: i64) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(
        column,
        rusqlite::types::Type::Integer,
        format!("stored time {secs} is out of range").into(),
    )
}

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
        next_digest_at: time_opt(r, 6)?,
        bounces: r.get(7)?,
        paused_at: time_opt(r, 8)?,
        queries: Vec::new(),
        new_outlets: r.get::<_, String>(9)?.parse().map_err(anyhow::Error::msg)?,
        locale: r.get(10)?,
    })
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
        created_at: time(r, 6)?,
        status: r.get(7)?,
        attempts: r.get(8)?,
        last_error: r.get(9)?,
        next_attempt_at: time(r, 10)?,
        sent_at: time_opt(r, 11)?,
        claim: r.get(13)?,
    })
}

/// Statuses are read as the text they are stored as; any other text is an error.
macro_rules! status_from_sql {
    ($($status:ty),+) => {$(
        impl rusqlite::types::FromSql for $status {
            fn column_result(
                value: rusqlite::types::ValueRef<'_>,
            ) -> rusqlite::types::FromSqlResult<$status> {
                value
                    .as_str()?
                    .parse()
                    .map_err(|e| rusqlite::types::FromSqlError::Other(Box::new(e)))
            }
        }
    )+};
}
status_from_sql!(
    OutboxStatus,
    PollStatus,
    ArticleState,
    OutboxKind,
    ChannelKind,
    ChannelState,
    ChannelOrigin
);

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    /// A database this user may not write is read through its writer's `-shm` whenever
    /// there is one (a writer may be at work, checkpointing into the file), as an
    /// immutable file only when nothing has it open; a log that cannot be read is a
    /// refusal, saying why.
    #[test]
    fn a_database_that_may_not_be_written_is_read_beside_its_writer() {
        use {CannotRead as No, ReadVia as Via};
        for (writable, logged, shm, expected) in [
            (true, false, None, Ok(Via::Writing)),
            (true, true, Some(true), Ok(Via::Writing)),
            (false, false, Some(true), Ok(Via::SharedMemory)),
            (false, true, Some(true), Ok(Via::SharedMemory)),
            (false, false, None, Ok(Via::Immutable)),
            (false, false, Some(false), Ok(Via::Immutable)),
            (false, true, None, Err(No::WithoutWriting)),
            (false, true, Some(false), Err(No::SharedMemory)),
            (true, true, Some(false), Err(No::SharedMemory)),
        ] {
            assert_eq!(
                read_via(writable, logged, shm),
                expected,
                "writable {writable}, logged {logged}, -shm {shm:?}"
            );
        }
    }

    /// A statement with a bound LIMIT (or any value the planner could use) is compiled
    /// once, not again each time it runs with another value: SQLite re-prepares such a
    /// statement on every new binding unless the plan is fixed (QPSG). Grouping ran its
    /// same-link lookup that way for every new item.
    #[test]
    fn statements_are_not_prepared_again_for_each_new_value() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let store = Sqlite::open(&path).unwrap();
        let count_reprepares = |conn: &Connection| {
            let mut stmt = conn
                .prepare_cached("SELECT id FROM items WHERE link = ?1 ORDER BY id LIMIT ?2")
                .unwrap();
            for limit in 1..=5 {
                let _: Vec<i64> = stmt
                    .query_map(params!["https://x.example/a", limit], |r| r.get(0))
                    .unwrap()
                    .collect::<rusqlite::Result<_>>()
                    .unwrap();
            }
            stmt.get_status(rusqlite::StatementStatus::RePrepare)
        };
        assert_eq!(count_reprepares(&store.conn()), 0);
        drop(store);
        let reader = Sqlite::open_read_only(&path).unwrap();
        assert_eq!(count_reprepares(&reader.conn()), 0);
    }

    /// Giving back a connection slot finds it by its holder, not by reading every slot:
    /// there are `per_host` rows for each host ever polled (thousands with a large feed
    /// list), and every fetch gives one back.
    #[test]
    fn a_slot_is_given_back_without_reading_every_host() {
        let dir = tempfile::tempdir().unwrap();
        let store = Sqlite::open(&dir.path().join("t.db")).unwrap();
        let now = Utc.with_ymd_and_hms(2026, 12, 2, 12, 0, 0).unwrap();
        let limits = FetchLimits {
            per_host: 2,
            concurrency: 1_000,
        };
        let lease = Duration::from_secs(300);
        let mut tokens = Vec::new();
        for host in 0..200 {
            let host = format!("publisher{host}.example");
            tokens.push(store.acquire_fetch_slot(&host, limits, now, lease).unwrap());
        }
        let slot = tokens[100].clone().expect("a free slot");
        store.release_fetch_slot(&slot).unwrap();
        let conn = store.conn();
        let stmt = conn.prepare_cached(cluster::RELEASE_FETCH_SLOT).unwrap();
        assert_eq!(stmt.get_status(rusqlite::StatementStatus::FullscanStep), 0);
        let held: i64 = conn
            .query_row(
                "SELECT COUNT(*) FROM fetch_slots WHERE holder = ?1",
                [&slot.token],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(
            held, 0,
            "both of its slots (its host's and all hosts') are free"
        );
    }

    #[test]
    fn a_status_this_version_does_not_know_is_an_error_not_a_guess() {
        let dir = tempfile::tempdir().unwrap();
        let store = Sqlite::open(&dir.path().join("t.db")).unwrap();
        let now = Utc.with_ymd_and_hms(2026, 11, 28, 12, 0, 0).unwrap();
        store
            .queue_message(
                "a@x.example",
                "Hello",
                "text",
                "<p>html</p>",
                "x.example",
                now,
            )
            .unwrap();
        assert_eq!(store.outbox().unwrap()[0].status, OutboxStatus::Pending);
        let feed = FeedConfig {
            id: "f".into(),
            name: "F".into(),
            url: "http://127.0.0.1:9/f.xml".parse().unwrap(),
            tags: Vec::new(),
            interval: Duration::from_secs(900),
            options: Default::default(),
        };
        store.sync_feeds(std::slice::from_ref(&feed)).unwrap();
        assert_eq!(store.feed_statuses().unwrap()[0].last_status, None);
        // A feed status written by some other version (outbox statuses have a CHECK).
        store
            .conn()
            .execute("UPDATE feeds SET last_status = 'paused'", [])
            .unwrap();
        let err = format!("{:#}", store.feed_statuses().unwrap_err());
        assert!(err.contains("unknown PollStatus \"paused\""), "{err}");
    }

    #[test]
    fn every_migration_file_is_embedded() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("migrations")
            .join("sqlite");
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
        let store = Sqlite::open(&path).unwrap();
        let now = Utc.with_ymd_and_hms(2026, 11, 28, 12, 0, 0).unwrap();
        store
            .add_subscription("a@x.example", "asylum", Schedule::Immediate, Tz::UTC, now)
            .unwrap();
        drop(store);
        let store = Sqlite::open(&path).unwrap();
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

    #[test]
    fn read_only_opens_only_a_current_database_and_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let old = dir.path().join("v2.db");
        {
            let mut conn = Connection::open(&old).unwrap();
            let v2 = Migrations::new(MIGRATIONS[..2].iter().map(|(_, sql)| M::up(sql)).collect());
            v2.to_latest(&mut conn).unwrap();
        }
        let err = Sqlite::open_read_only(&old).err().unwrap();
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
        assert!(Sqlite::open_read_only(&missing).is_err());
        assert!(!missing.exists(), "not created");

        let current = dir.path().join("t.db");
        let store = Sqlite::open(&current).unwrap();
        let now = Utc::now();
        store
            .add_subscription("a@x.example", "asylum", Schedule::Immediate, Tz::UTC, now)
            .unwrap();
        drop(store);
        let bytes = std::fs::read(&current).unwrap();
        let read = Sqlite::open_read_only(&current).unwrap();
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
        let writer = Sqlite::open(&current).unwrap();
        writer
            .add_subscription("b@x.example", "parole", Schedule::Immediate, Tz::UTC, now)
            .unwrap();
        let read = Sqlite::open_read_only(&current).unwrap();
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
        drop(Sqlite::open(&path).unwrap());
        let newer = MIGRATIONS.len() as i64 + 1;
        Connection::open(&path)
            .unwrap()
            .pragma_update(None, "user_version", newer)
            .unwrap();
        let bytes = std::fs::read(&path).unwrap();
        for (name, opened) in [
            ("open", Sqlite::open(&path).err()),
            ("open_read_only", Sqlite::open_read_only(&path).err()),
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
        let store = Sqlite::open(&path).unwrap();
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
