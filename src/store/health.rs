//! Whether the database takes writes, as the store's own calls find it: a call that
//! failed because the database could not be written (its disk full, its file or
//! filesystem read-only, its server away) is counted and remembered until the same call
//! goes through again. `/healthz` answers 503 while any is remembered, and the log has
//! one line when writes start failing and one when they work again, not one per call.
//!
//! A call is remembered by its operation and, for a feed's poll, the feed: a poll that
//! wrote nothing new going through says nothing about another feed's items that did not
//! fit. A failed call nobody makes again (a sign-up not retried) is forgotten after
//! [`FORGET_AFTER`]; while the disk stays full the daemon's own work fails again every
//! tick and keeps the trouble known.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use tracing::{error, info};

/// A failed call not made again for this long is forgotten.
pub const FORGET_AFTER: Duration = Duration::from_secs(600);

/// Why `error` means the database could not be written (or reached) at all, as opposed
/// to refusing this one write (a constraint, a value it cannot hold): its disk is full,
/// its file or filesystem is read-only, it cannot be opened, it is locked for longer
/// than the wait, its server is away or out of room. `None` for anything else.
pub fn unavailable(error: &anyhow::Error) -> Option<String> {
    use rusqlite::ErrorCode as E;
    for cause in error.chain() {
        if let Some(e) = cause.downcast_ref::<rusqlite::Error>() {
            let local = matches!(
                e.sqlite_error_code(),
                Some(
                    E::DiskFull
                        | E::ReadOnly
                        | E::SystemIoFailure
                        | E::CannotOpen
                        | E::DatabaseBusy
                        | E::DatabaseLocked
                        | E::FileLockingProtocolFailed
                        | E::OutOfMemory
                        | E::PermissionDenied
                        | E::DatabaseCorrupt
                        | E::NotADatabase
                )
            );
            return local.then(|| sqlite_reason(e));
        }
        if let Some(e) = cause.downcast_ref::<postgres::Error>() {
            let local = match e.code() {
                // No SQL state: the connection failed, or the client did (a row count,
                // a conversion), which says nothing of the database.
                None => connection_failed(e),
                Some(state) => {
                    let code = state.code();
                    // Insufficient resources (disk full, out of memory, too many
                    // connections), system errors (I/O), connection exceptions, the
                    // server shutting down; a read-only transaction (a standby).
                    ["53", "58", "08", "57P"]
                        .iter()
                        .any(|class| code.starts_with(class))
                        || code == "25006"
                }
            };
            return local.then(|| e.as_db_error().map_or(e.to_string(), |db| db.to_string()));
        }
        if cause.is::<r2d2::Error>() {
            return Some(cause.to_string());
        }
    }
    None
}

/// Whether a PostgreSQL error without an SQL state is the connection failing: closed,
/// an I/O error, or no connection or answer at all; not the client's own (a query that
/// returned another number of rows than asked, a value that does not convert, a
/// parameter).
fn connection_failed(e: &postgres::Error) -> bool {
    use std::error::Error as _;
    let mut source = e.source();
    while let Some(cause) = source {
        if cause.is::<std::io::Error>() {
            return true;
        }
        source = cause.source();
    }
    // The client's kinds of error are not public; their words are.
    let said = e.to_string();
    e.is_closed()
        || [
            "error connecting",
            "timeout waiting",
            "error performing TLS",
            "unexpected message from server",
            "error parsing response",
        ]
        .iter()
        .any(|words| said.starts_with(words))
}

/// SQLite's own words for `e` ("database or disk is full"), without the error code
/// rusqlite adds.
fn sqlite_reason(e: &rusqlite::Error) -> String {
    match e {
        rusqlite::Error::SqliteFailure(_, Some(message)) if !message.is_empty() => message.clone(),
        rusqlite::Error::SqliteFailure(code, _) => code.to_string(),
        other => other.to_string(),
    }
}

/// What [`WriteHealth::trouble`] reports while writes fail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteTrouble {
    /// When the first of the calls still remembered failed.
    pub since: DateTime<Utc>,
    /// The database's words for the latest failure ("database or disk is full").
    pub reason: String,
    /// Calls that failed since then.
    pub failed: u64,
    /// Distinct calls that failed and have not gone through since.
    pub pending: usize,
}

impl std::fmt::Display for WriteTrouble {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "writes failing since {} ({} failed, {} not yet through): {}",
            self.since.format("%Y-%m-%d %H:%M:%S UTC"),
            self.failed,
            self.pending,
            self.reason
        )
    }
}

/// One store's record of its failed writes (see the module's documentation).
pub struct WriteHealth {
    /// The database, for log lines: a path, or a PostgreSQL URL without its password.
    database: String,
    /// Every failed call since the store was opened, for `/metrics`.
    failed_total: AtomicU64,
    /// Whether any call is remembered: the one check a successful call makes.
    failing: AtomicBool,
    state: Mutex<Failing>,
    /// False for a store opened only to read: whatever its reads meet (a damaged file) is
    /// not write trouble, and a command that only looks logs none.
    tracking: bool,
}

#[derive(Default)]
struct Failing {
    /// Each remembered call and when it last failed.
    calls: HashMap<String, Instant>,
    since: Option<DateTime<Utc>>,
    reason: String,
    failed: u64,
}

impl WriteHealth {
    pub fn new(database: String) -> WriteHealth {
        WriteHealth {
            database,
            failed_total: AtomicU64::new(0),
            failing: AtomicBool::new(false),
            state: Mutex::default(),
            tracking: true,
        }
    }

    /// The health of a store opened only to read: nothing is tracked.
    pub fn untracked(database: String) -> WriteHealth {
        WriteHealth {
            tracking: false,
            ..WriteHealth::new(database)
        }
    }

    /// Every call that failed because the database could not be written, since the store
    /// was opened.
    pub fn failed_total(&self) -> u64 {
        self.failed_total.load(Ordering::Relaxed)
    }

    /// The trouble while any failed call has not gone through since (and was made again
    /// within [`FORGET_AFTER`]); `None` when writes work.
    pub fn trouble(&self) -> Option<WriteTrouble> {
        if !self.failing.load(Ordering::Acquire) {
            return None;
        }
        let mut state = self.lock();
        self.forget_stale(&mut state);
        Some(WriteTrouble {
            since: state.since?,
            reason: state.reason.clone(),
            failed: state.failed,
            pending: state.calls.len(),
        })
    }

    /// `call` (an operation and what it was about) failed for `reason`.
    pub fn failed(&self, call: String, reason: String) {
        if !self.tracking {
            return;
        }
        self.failed_total.fetch_add(1, Ordering::Relaxed);
        let mut state = self.lock();
        self.forget_stale(&mut state);
        if state.calls.is_empty() {
            error!(
                database = %self.database, reason = %reason,
                "database writes are failing; the work is kept and tried again, and the \
                 log says when writes work again"
            );
            state.since = Some(Utc::now());
            state.failed = 0;
        }
        state.calls.insert(call, Instant::now());
        state.reason = reason;
        state.failed += 1;
        self.failing.store(true, Ordering::Release);
    }

    /// `calls` went through (a call, and those its success vouches for): when they were
    /// the last ones remembered, writes work again.
    pub fn succeeded(&self, calls: impl FnOnce() -> Vec<String>) {
        if !self.failing.load(Ordering::Acquire) {
            return;
        }
        let mut state = self.lock();
        let mut removed = false;
        for call in calls() {
            removed |= state.calls.remove(&call).is_some();
        }
        if removed && state.calls.is_empty() {
            self.recovered(&mut state, "the calls that failed went through");
        } else {
            self.forget_stale(&mut state);
        }
    }

    /// Forgets the polls that failed of feeds not in `feeds` (removed from the feed
    /// list): they are not polled again, so their polls will never be written.
    pub fn keep_polls_of(&self, feeds: &std::collections::HashSet<&str>) {
        if !self.failing.load(Ordering::Acquire) {
            return;
        }
        let mut state = self.lock();
        let before = state.calls.len();
        state.calls.retain(|call, _| {
            let feed = [STORE_A_POLL, RECORD_A_POLL].iter().find_map(|operation| {
                call.strip_prefix(operation)
                    .and_then(|rest| rest.strip_prefix(' '))
            });
            feed.is_none_or(|feed| feeds.contains(feed))
        });
        if before > 0 && state.calls.is_empty() {
            self.recovered(&mut state, "the feeds whose polls failed were removed");
        }
    }

    /// Forgets calls not made again for [`FORGET_AFTER`]; when that leaves none, writes
    /// are taken to work again.
    fn forget_stale(&self, state: &mut Failing) {
        let before = state.calls.len();
        state.calls.retain(|_, at| at.elapsed() < FORGET_AFTER);
        if before > 0 && state.calls.is_empty() {
            self.recovered(state, "no write has failed for 10 minutes");
        }
    }

    fn recovered(&self, state: &mut Failing, how: &str) {
        let secs = state
            .since
            .map_or(0, |since| (Utc::now() - since).num_seconds().max(0));
        info!(
            database = %self.database, failed = state.failed, seconds = secs,
            "database writes work again ({how})"
        );
        *state = Failing::default();
        self.failing.store(false, Ordering::Release);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Failing> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The operation a `run!` call names: `record_failure` of `db.record_failure(&feed, …)`;
/// the writes that end one piece of work, whichever it was, under one name: a feed's
/// poll that stores items in `store_items`, one that writes in place in one of its
/// `record_*`; a message in one of its `mark_*`.
pub fn operation(call: &str) -> &str {
    let call = call.split('(').next().unwrap_or(call);
    let operation = call.rsplit('.').next().unwrap_or(call).trim();
    match operation {
        "store_items" => STORE_A_POLL,
        "record_not_modified" | "record_unchanged" | "record_failure" | "record_gone" => {
            RECORD_A_POLL
        }
        "mark_sent" | "mark_retry" | "mark_failed" | "mark_bounced" | "mark_push_rejected" => {
            "record a delivery"
        }
        other => other,
    }
}

const STORE_A_POLL: &str = "store a poll's items";
const RECORD_A_POLL: &str = "record a poll";

/// The operations a success of `operation` also vouches for. Storing a poll's items
/// writes everything recording one in place does, so it clears those too; the other way
/// round it does not: a failure written in place fits on a disk too full for the items
/// that did not (they are fetched and stored again by the next poll that gets them).
pub fn also_clears(operation: &str) -> &'static [&'static str] {
    match operation {
        STORE_A_POLL => &[RECORD_A_POLL],
        _ => &[],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sqlite_error(code: i32, message: &str) -> anyhow::Error {
        anyhow::Error::new(rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(code),
            Some(message.to_string()),
        ))
        .context("recording the poll of feed a")
    }

    #[test]
    fn a_full_or_read_only_database_is_unavailable_a_refused_value_is_not() {
        let full = sqlite_error(rusqlite::ffi::SQLITE_FULL, "database or disk is full");
        assert_eq!(
            unavailable(&full).as_deref(),
            Some("database or disk is full")
        );
        let read_only = sqlite_error(
            rusqlite::ffi::SQLITE_READONLY,
            "attempt to write a readonly database",
        );
        assert_eq!(
            unavailable(&read_only).as_deref(),
            Some("attempt to write a readonly database")
        );
        let constraint = sqlite_error(
            rusqlite::ffi::SQLITE_CONSTRAINT,
            "UNIQUE constraint failed: items.id",
        );
        assert_eq!(unavailable(&constraint), None);
        assert_eq!(
            unavailable(&anyhow::anyhow!("subscriptions kept changing")),
            None
        );
    }

    #[test]
    fn the_operation_is_the_method_a_call_names() {
        assert_eq!(operation("db.claim_feeds(now, lease)"), "claim_feeds");
        let (stored, failed) = (
            operation("db.store_items(&feed, &poll, find_matches)"),
            operation("db.record_failure(&feed, now, &kind, &error, next_poll_at)"),
        );
        assert_eq!(
            operation("db.record_not_modified(&feed, now, next_poll_at)"),
            failed,
            "a poll written in place ends in either"
        );
        assert_ne!(
            stored, failed,
            "a failure written says nothing of room for items"
        );
        assert_eq!(also_clears(stored), [failed], "items stored say it all");
        assert!(also_clears(failed).is_empty());
        assert_eq!(operation("db.ping()"), "ping");
        assert_eq!(operation("ping"), "ping");
    }

    #[test]
    fn trouble_lasts_until_every_failed_call_went_through() {
        let health = WriteHealth::new("test.db".into());
        assert_eq!(health.trouble(), None);
        health.failed("store_items a".into(), "database or disk is full".into());
        health.failed("store_items b".into(), "database or disk is full".into());
        health.failed("store_items a".into(), "database or disk is full".into());
        let trouble = health.trouble().expect("failing");
        assert_eq!((trouble.failed, trouble.pending), (3, 2));
        assert!(trouble.to_string().contains("database or disk is full"));
        // Another call going through says nothing about these.
        health.succeeded(|| vec!["record_not_modified c".into()]);
        assert_eq!(health.trouble().map(|t| t.pending), Some(2));
        health.succeeded(|| vec!["store_items a".into()]);
        assert_eq!(health.trouble().map(|t| t.pending), Some(1));
        health.succeeded(|| vec!["store_items b".into()]);
        assert_eq!(health.trouble(), None);
        assert_eq!(health.failed_total(), 3, "the total is never reset");
    }
}
