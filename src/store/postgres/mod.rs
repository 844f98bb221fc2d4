//! The PostgreSQL backend: the same operations as the SQLite store, with the same
//! signatures and row types, for several Tidings instances sharing one database.
//!
//! SQLite runs one writer at a time (`BEGIN IMMEDIATE`), and several rules lean on that.
//! PostgreSQL runs writers side by side under READ COMMITTED, where each statement sees
//! what was committed when it started; so every operation that checks something and then
//! writes takes the lock that makes its check hold until it commits. Each is named where
//! it is taken; in short:
//! - a feed's row (`FOR UPDATE`) while a poll's result is stored: the claim checked is
//!   the claim held, and prune leaves the feed's items alone meanwhile;
//! - the `generations` row (`FOR SHARE` in `store_items`; `FOR NO KEY UPDATE` by a
//!   trigger before any change to `subscriptions`): no subscription change commits
//!   between the matcher's generation check and the matches it writes;
//! - a subscriber's row (`FOR UPDATE`) while their digest is taken, and the matches it
//!   renders: one digest per subscriber at a time, and each match rendered is taken;
//! - a sign-up's row while it is confirmed; advisory transaction locks keyed by client
//!   and by address while sign-up limits are counted and the new one inserted;
//! - claims (feeds, mail) with `FOR UPDATE SKIP LOCKED`: two workers never take one row;
//!   writes checked against a claim re-read the row after any wait (READ COMMITTED
//!   re-evaluates an UPDATE's condition on the newest row version), so a lost claim writes
//!   nothing;
//! - advisory transaction locks for what must run once at a time across instances:
//!   migrations, feed-list sync, prune batches.
//!
//! Connections come from an r2d2 pool; methods block, like the SQLite store's. The
//! connection is plain TCP (`NoTls`): fine on loopback or a private network, not across
//! an untrusted one (TLS is still to do).
//!
//! Private helpers take a `&mut Transaction` (or any client, for reads); the public
//! operations are built from them.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use postgres::{GenericClient, IsolationLevel, NoTls, Row, Transaction};
use r2d2_postgres::PostgresConnectionManager;

use super::{
    ActiveSubscriptions, ArticleCounts, ArticleDone, ArticleOutcome, ArticleState, ArticleToFetch,
    BackupSummary, CONFIRM_TRIES, Channel, ChannelId, ChannelKind, ChannelOrigin, ChannelState,
    ClusterStats, Confirmation, FeedListSync, FeedListVersion, FeedStatus, FeedToPoll, FetchLimits,
    Instance, ItemId, MatchedItem, NewChannel, OutboxId, OutboxKind, OutboxMessage, OutboxStatus,
    PRUNE_ITEM_BATCH, PRUNE_OUTBOX_BATCH, PRUNE_PAUSE, PollStatus, Pruned, PushMessage,
    ServiceStats, Signup, SignupAdmission, SignupId, SignupLimits, StoreOutcome, Stored,
    StoredItem, Subscriber, SubscriberId, SubscriptionId, SuccessfulPoll, UnchangedPoll, event_id,
    from_unix, lease_secs, split_tags,
};
use crate::config::{FeedConfig, FeedOptions};
use crate::digest::{
    ChannelRoute, DigestEntry, FailingFeed, MAX_DIGEST_ENTRIES, Parcels, RenderedRound, Routes,
    Schedule, route,
};
use crate::parse::Item;

mod articles;
mod channels;
mod cluster;
mod digests;
mod feeds;
mod items;
mod maintenance;
mod outbox;
mod signups;
mod stories;
mod subscriptions;

/// The migrations, in order; version N is the Nth. Each file in `migrations/postgres/`
/// must be listed here.
const MIGRATIONS: &[(&str, &str)] = &[
    (
        "0001_init.sql",
        include_str!("../../../migrations/postgres/0001_init.sql"),
    ),
    (
        "0002_cluster.sql",
        include_str!("../../../migrations/postgres/0002_cluster.sql"),
    ),
    (
        "0003_long_values.sql",
        include_str!("../../../migrations/postgres/0003_long_values.sql"),
    ),
    (
        "0004_articles.sql",
        include_str!("../../../migrations/postgres/0004_articles.sql"),
    ),
    (
        "0005_channels.sql",
        include_str!("../../../migrations/postgres/0005_channels.sql"),
    ),
    (
        "0006_stories.sql",
        include_str!("../../../migrations/postgres/0006_stories.sql"),
    ),
    (
        "0007_languages.sql",
        include_str!("../../../migrations/postgres/0007_languages.sql"),
    ),
    (
        "0008_claim_owner.sql",
        include_str!("../../../migrations/postgres/0008_claim_owner.sql"),
    ),
];

/// Advisory lock keys (the one-bigint key space): instances that start, sync the feed
/// list or prune at the same moment take turns.
const MIGRATION_LOCK: i64 = 0x7469_6469_6e67_0001;
const SYNC_FEEDS_LOCK: i64 = 0x7469_6469_6e67_0002;
const PRUNE_LOCK: i64 = 0x7469_6469_6e67_0003;
/// Held by the one instance pruning (a session lock, see `prune`).
const PRUNE_JOB_LOCK: i64 = 0x7469_6469_6e67_0004;
/// Advisory lock classes (the two-int key space), the second key a hash of the value:
/// sign-ups per client and per address are counted and recorded one at a time.
const SIGNUP_CLIENT_LOCK: i32 = 0x7469_0001;
const SIGNUP_ADDRESS_LOCK: i32 = 0x7469_0002;

/// Connections per instance: enough for the jobs and the web pages working at once.
const POOL_SIZE: u32 = 8;

/// A claim token, as SQLite's `hex(randomblob(12))` makes it: 24 upper-case hex digits
/// (`gen_random_uuid` is core since PostgreSQL 13; its first 24 digits hold 92 random bits).
const NEW_CLAIM: &str = "upper(left(replace(gen_random_uuid()::text, '-', ''), 24))";

type Manager = PostgresConnectionManager<NoTls>;
type Connection = r2d2::PooledConnection<Manager>;

/// A pool of connections to one PostgreSQL database; cheap to clone, safe to share.
pub struct Postgres {
    /// `None` only while being dropped.
    pool: Option<r2d2::Pool<Manager>>,
    /// `postgres://user@host:port/database`, never with the password: for messages.
    name: String,
    /// The window's grouped items by term (see [`crate::story`]).
    stories: std::sync::Mutex<crate::story::StoryIndex>,
}

impl std::fmt::Debug for Postgres {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Postgres")
            .field("name", &self.name)
            .finish()
    }
}

impl Drop for Postgres {
    /// The client closes a connection by blocking on a runtime of its own, which must
    /// not start on a thread that drives async tasks (the last `Store` is often dropped
    /// on one): a plain thread closes them.
    fn drop(&mut self) {
        if let Some(pool) = self.pool.take()
            && tokio::runtime::Handle::try_current().is_ok()
        {
            let _ = std::thread::spawn(move || drop(pool)).join();
        }
    }
}

impl Postgres {
    /// `postgres://user@host:port/database`, without the password: for messages.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Connects to the database at `url` (`postgres://user@host:port/database`), with
    /// `password` instead of the URL's when given, and brings its schema up to date.
    /// Messages name the database without its password.
    pub fn connect(url: &str, password: Option<&str>) -> Result<Postgres> {
        Postgres::open(url, password, false)
    }

    /// Connects without creating or migrating anything, in read-only sessions: for
    /// commands that only look. Refuses a database whose schema is not this version's.
    pub fn connect_read_only(url: &str, password: Option<&str>) -> Result<Postgres> {
        Postgres::open(url, password, true)
    }

    fn open(url: &str, password: Option<&str>, read_only: bool) -> Result<Postgres> {
        // The parser's errors name the option at fault, never its value.
        let mut config: postgres::Config = url
            .parse()
            .context("reading the PostgreSQL URL (postgres://user@host:port/database)")?;
        if let Some(password) = password {
            config.password(password);
        }
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_secs(10));
        }
        if read_only {
            // Added to the URL's own options (a `search_path`, say), not put instead.
            let options = match config.get_options() {
                Some(theirs) => format!("{theirs} -c default_transaction_read_only=on"),
                None => "-c default_transaction_read_only=on".to_string(),
            };
            config.options(&options);
        }
        let name = display_name(&config);
        // The first connection is made here, not by the pool: a wrong address or password
        // is reported at once, with PostgreSQL's reason (the pool would retry until its
        // timeout). It migrates (or checks the version), and closes; the pool opens its own.
        let mut first = config
            .connect(NoTls)
            .with_context(|| format!("connecting to database {name}"))?;
        if read_only {
            check_current(&mut first, &name)?;
        } else {
            migrate(&mut first, &name)?;
        }
        drop(first);
        let pool = r2d2::Pool::builder()
            .max_size(POOL_SIZE)
            .min_idle(Some(1))
            .connection_timeout(Duration::from_secs(30))
            .build_unchecked(PostgresConnectionManager::new(config, NoTls));
        Ok(Postgres {
            pool: Some(pool),
            name,
            stories: Default::default(),
        })
    }

    pub(super) fn conn(&self) -> Result<Connection> {
        self.pool
            .as_ref()
            .context("the connection pool is closed")?
            .get()
            .with_context(|| format!("connecting to database {}", self.name))
    }

    /// A read-only transaction that sees one snapshot for all its statements (under READ
    /// COMMITTED each statement would see its own), as a SQLite read transaction does.
    fn snapshot(conn: &mut Connection) -> Result<Transaction<'_>> {
        Ok(conn
            .build_transaction()
            .isolation_level(IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()?)
    }
}

/// `postgres://user@host:port/database`, for messages: everything but the password.
fn display_name(config: &postgres::Config) -> String {
    use postgres::config::Host;
    let host = match config.get_hosts().first() {
        Some(Host::Tcp(host)) => host.clone(),
        Some(Host::Unix(path)) => path.display().to_string(),
        None => "localhost".to_string(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let user = config.get_user().unwrap_or("");
    let db = config.get_dbname().unwrap_or(user);
    format!("postgres://{user}@{host}:{port}/{db}")
}

/// Applies the migrations this database lacks, each in one transaction holding
/// [`MIGRATION_LOCK`]: instances starting at once take turns, and each later one finds
/// the work done. A database a newer Tidings migrated is refused, untouched.
fn migrate(conn: &mut postgres::Client, name: &str) -> Result<()> {
    for (version, (file, sql)) in (1..).zip(MIGRATIONS) {
        let mut tx = conn.transaction()?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])?;
        tx.batch_execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (
                 version    INTEGER PRIMARY KEY,
                 name       TEXT NOT NULL,
                 applied_at BIGINT NOT NULL
             )",
        )?;
        if schema_version(&mut tx, name)? >= version {
            tx.commit()?;
            continue;
        }
        tx.batch_execute(sql)
            .with_context(|| format!("applying migration {file} to database {name}"))?;
        tx.execute(
            "INSERT INTO schema_migrations (version, name, applied_at)
             VALUES ($1, $2, extract(epoch FROM now())::BIGINT)",
            &[&version, file],
        )?;
        tx.commit()?;
    }
    Ok(())
}

/// Refuses a database whose schema is not this version's, without changing anything.
fn check_current(conn: &mut postgres::Client, name: &str) -> Result<()> {
    let mut tx = conn.transaction()?;
    let exists: bool = tx
        .query_one("SELECT to_regclass('schema_migrations') IS NOT NULL", &[])?
        .try_get(0)?;
    let version = if exists {
        schema_version(&mut tx, name)?
    } else {
        0
    };
    let expected = MIGRATIONS.len();
    if usize::try_from(version).ok() != Some(expected) {
        bail!(
            "database {name} has schema version {version}, not {expected}: `tidings run` (or \
             any command that writes) migrates it"
        );
    }
    Ok(())
}

/// The schema version of the database `name` (0 when new). One a newer Tidings wrote is
/// refused: this one cannot migrate it back, nor read it.
fn schema_version(tx: &mut Transaction<'_>, name: &str) -> Result<i32> {
    let version: i32 = tx
        .query_one(
            "SELECT COALESCE(MAX(version), 0) FROM schema_migrations",
            &[],
        )?
        .try_get(0)?;
    let known = MIGRATIONS.len();
    if usize::try_from(version).is_ok_and(|v| v > known) {
        bail!(
            "database {name} was written by a newer version of Tidings (schema version {version}; \
             Tidings {} knows versions up to {known}): run that version, or restore a backup \
             this one made",
            env!("CARGO_PKG_VERSION")
        );
    }
    Ok(version)
}

/// Whether `feed`'s claim still holds it, locking the feed's row until the transaction
/// ends: nobody can claim the feed, void its claim (`sync_feeds`) or prune its items
/// before this transaction commits. A missing row holds no claim but `None`'s.
fn holds_claim(tx: &mut Transaction<'_>, feed: &FeedToPoll) -> Result<bool> {
    let claim: Option<String> = tx
        .query_opt(
            "SELECT claim FROM feeds WHERE id = $1 FOR UPDATE",
            &[&feed.id],
        )?
        .map(|r| r.try_get(0))
        .transpose()?
        .flatten();
    Ok(claim == feed.claim)
}

fn subscriptions_generation(client: &mut impl GenericClient) -> Result<i64> {
    Ok(client
        .query_one(
            "SELECT value FROM generations WHERE name = 'subscriptions'",
            &[],
        )?
        .try_get(0)?)
}

/// The next id of `table`'s identity, taken before its row is inserted: the Message-ID
/// carries it, and it is never handed out again.
fn next_id(tx: &mut Transaction<'_>, table: &str) -> Result<i64> {
    Ok(tx
        .query_one(
            "SELECT nextval(pg_get_serial_sequence($1, 'id'))",
            &[&table],
        )?
        .try_get(0)?)
}

/// Queues one message (not a digest) to `recipient` inside `tx`.
fn queue_message_in(
    tx: &mut Transaction<'_>,
    recipient: &str,
    subject: &str,
    text: &str,
    html: &str,
    message_domain: &str,
    now: DateTime<Utc>,
) -> Result<OutboxId> {
    let id = next_id(tx, "outbox")?;
    let message_id = format!("<note.{id}.{}@{message_domain}>", now.timestamp());
    tx.execute(
        "INSERT INTO outbox (id, recipient, message_id, subject, body_text, body_html,
                             created_at, next_attempt_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $7)",
        &[
            &id,
            &recipient,
            &message_id,
            &subject,
            &text,
            &html,
            &now.timestamp(),
        ],
    )?;
    Ok(OutboxId(id))
}

const OUTBOX_COLUMNS: &str = "id, recipient, message_id, subject, body_text, body_html, created_at, \
     status, attempts, last_error, next_attempt_at, sent_at, subscriber_id, claim";

const SUBSCRIBER_COLUMNS: &str = "s.id, s.email, s.frequency, s.digest_time, s.digest_weekday, \
     s.timezone, s.next_digest_at, s.bounces, s.paused_at, s.new_outlets, s.locale";
/// The number of [`SUBSCRIBER_COLUMNS`]: the index of a column selected after them.
const SUBSCRIBER_COLUMN_COUNT: usize = 11;

/// A subscriber from [`SUBSCRIBER_COLUMNS`], without queries.
fn subscriber_row(r: &Row) -> Result<Subscriber> {
    let frequency: String = r.try_get(2)?;
    let time: Option<String> = r.try_get(3)?;
    let weekday: Option<i32> = r.try_get(4)?;
    let weekday = weekday
        .map(u32::try_from)
        .transpose()
        .context("digest weekday")?;
    let timezone: String = r.try_get(5)?;
    Ok(Subscriber {
        id: r.try_get(0)?,
        email: r.try_get(1)?,
        schedule: Schedule::from_parts(&frequency, time.as_deref(), weekday)
            .map_err(anyhow::Error::msg)?,
        timezone: timezone
            .parse()
            .map_err(|e| anyhow::anyhow!("time zone {timezone:?}: {e}"))?,
        next_digest_at: time_opt(r.try_get(6)?)?,
        bounces: count(r.try_get::<_, i32>(7)?)?,
        paused_at: time_opt(r.try_get(8)?)?,
        queries: Vec::new(),
        new_outlets: r
            .try_get::<_, String>(9)?
            .parse()
            .map_err(anyhow::Error::msg)?,
        locale: r.try_get(10)?,
    })
}

/// Statuses are read as the text they are stored as; any other text is an error.
macro_rules! status_from_sql {
    ($($status:ty),+) => {$(
        impl<'a> postgres::types::FromSql<'a> for $status {
            fn from_sql(
                ty: &postgres::types::Type,
                raw: &'a [u8],
            ) -> std::result::Result<$status, Box<dyn std::error::Error + Sync + Send>> {
                Ok(<&str as postgres::types::FromSql>::from_sql(ty, raw)?.parse()?)
            }

            fn accepts(ty: &postgres::types::Type) -> bool {
                <&str as postgres::types::FromSql>::accepts(ty)
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

fn outbox_row(r: &Row) -> Result<OutboxMessage> {
    Ok(OutboxMessage {
        id: r.try_get(0)?,
        recipient: r.try_get(1)?,
        message_id: r.try_get(2)?,
        subject: r.try_get(3)?,
        body_text: r.try_get(4)?,
        body_html: r.try_get(5)?,
        created_at: time(r.try_get(6)?)?,
        status: r.try_get(7)?,
        attempts: count(r.try_get::<_, i32>(8)?)?,
        last_error: r.try_get(9)?,
        next_attempt_at: time(r.try_get(10)?)?,
        sent_at: time_opt(r.try_get(11)?)?,
        subscriber_id: r.try_get(12)?,
        claim: r.try_get(13)?,
    })
}

/// A stored Unix time; one out of range is an error, not 1970.
fn time(secs: i64) -> Result<DateTime<Utc>> {
    from_unix(secs).with_context(|| format!("stored time {secs} is out of range"))
}

fn time_opt(secs: Option<i64>) -> Result<Option<DateTime<Utc>>> {
    secs.map(time).transpose()
}

/// A stored count (failures, attempts, bounces), never negative.
fn count<N>(n: N) -> Result<u32>
where
    N: Copy + std::fmt::Display,
    u32: TryFrom<N>,
{
    u32::try_from(n).map_err(|_| anyhow::anyhow!("stored count {n} is out of range"))
}
