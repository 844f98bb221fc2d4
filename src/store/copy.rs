//! Moving a SQLite deployment to PostgreSQL (`tidings migrate-db`): a snapshot of the live
//! SQLite file, its schema brought up to date in the snapshot, then every table copied
//! into an empty PostgreSQL database in one transaction, ids kept.
//!
//! The table list ([`TABLES`]) says how each table of the schema is copied, or why it is
//! not; before copying, it is checked against both schemas as they are at run time
//! (tables and columns): a migration that adds a table or a column to one backend and
//! not to the copy makes the copy refuse, never drop it silently.

use anyhow::bail;
use std::collections::BTreeSet;
use std::path::PathBuf;

use ::postgres::types::ToSql;
use rusqlite::types::ValueRef;

use super::*;

/// How one table is copied.
struct Table {
    name: &'static str,
    how: How,
}

enum How {
    /// Every row, with these columns left NULL.
    Rows { clear: &'static [&'static str] },
    /// Every row, each replacing the row with its key that the PostgreSQL migrations
    /// seeded (the generation counter, the mail pacer).
    Replace { key: &'static str },
    /// Not copied, for this reason.
    Skip(&'static str),
}

const fn rows(name: &'static str) -> Table {
    Table {
        name,
        how: How::Rows { clear: &[] },
    }
}

/// Claims belong to processes of the old deployment, which can no longer renew them:
/// cleared, the work is free for the new one at once.
const CLAIMS: &[&str] = &["claim", "claimed_until"];
/// A feed's claim also names its owner.
const FEED_CLAIMS: &[&str] = &["claim", "claimed_until", "claimed_by", "claimed_at"];

/// Every table of the schema, in foreign-key order (a table after those it refers to).
const TABLES: &[Table] = &[
    Table {
        name: "feeds",
        how: How::Rows { clear: FEED_CLAIMS },
    },
    Table {
        name: "items",
        how: How::Rows { clear: CLAIMS },
    },
    rows("item_tombstones"),
    rows("subscribers"),
    rows("subscriptions"),
    rows("channels"),
    rows("channel_searches"),
    Table {
        name: "outbox",
        how: How::Rows { clear: CLAIMS },
    },
    rows("matches"),
    rows("stories_sent"),
    rows("unsubscribed"),
    rows("signups"),
    // After `subscriptions`, whose triggers bump it as their rows go in.
    Table {
        name: "generations",
        how: How::Replace { key: "name" },
    },
    rows("feed_list"),
    Table {
        name: "pacers",
        how: How::Replace { key: "name" },
    },
    Table {
        name: "settings",
        how: How::Replace { key: "name" },
    },
    Table {
        name: "instances",
        how: How::Skip("the heartbeats of processes that ran on SQLite"),
    },
    Table {
        name: "fetch_slots",
        how: How::Skip("connection slots held by fetches in progress"),
    },
];

/// Tables of a schema that are the database's own bookkeeping, not Tidings data.
fn is_bookkeeping(table: &str) -> bool {
    table.starts_with("sqlite_") || table == "schema_migrations"
}

/// Rows per INSERT, at most (PostgreSQL takes 65,535 parameters per statement).
const BATCH_ROWS: usize = 500;
/// Bytes of text per INSERT, about: mail bodies are large.
const BATCH_BYTES: usize = 4 << 20;

/// A step of [`Store::import_sqlite`], for progress reports.
#[derive(Debug, Clone)]
pub enum ImportStep {
    /// The snapshot is taken and its schema brought up to date.
    Snapshot {
        /// The schema version of the SQLite file.
        source_version: i64,
        /// The schema version of the snapshot, migrated.
        version: i64,
    },
    /// One table copied (not yet committed).
    Table(TableCopied),
}

/// One table copied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableCopied {
    pub table: &'static str,
    pub rows: u64,
}

/// What [`Store::import_sqlite`] did, committed.
#[derive(Debug, Clone)]
pub struct Imported {
    /// The schema version of the SQLite file.
    pub source_version: i64,
    /// The tables copied, in the order they were.
    pub tables: Vec<TableCopied>,
    /// The tables not copied, with the reason.
    pub skipped: Vec<(&'static str, &'static str)>,
}

impl Store {
    /// Copies the SQLite database at `source` into this PostgreSQL database, which must
    /// hold no data yet (no row in any table but those its migrations seed), then writes
    /// `settings` (name, value), replacing any there.
    ///
    /// `source` is copied first with SQLite's online backup into a temporary file (in
    /// the temporary folder, `TMPDIR`; as large as the database), so a daemon may go on
    /// writing to it meanwhile and the file itself is never changed; an older schema is
    /// migrated in that copy. Every table is then copied in foreign-key order, in
    /// batches, in one transaction, every id kept (claims cleared); each identity then
    /// continues past the highest id the table ever handed out (for subscriptions,
    /// removed ones included), so no id comes back. Row counts are checked before the
    /// commit; on any error nothing is written.
    ///
    /// `progress` is called after the snapshot and after each table.
    pub async fn import_sqlite(
        &self,
        source: &Path,
        settings: Vec<(String, String)>,
        progress: impl FnMut(&ImportStep) + Send + 'static,
    ) -> Result<Imported> {
        let source = source.to_owned();
        let mut progress = progress;
        self.blocking(move |backend| match backend {
            Backend::Postgres(pg) => import(pg, &source, &settings, &mut progress),
            Backend::Sqlite(_) => bail!("a SQLite database is copied into PostgreSQL only"),
        })
        .await
    }
}

fn import(
    pg: &Postgres,
    source: &Path,
    settings: &[(String, String)],
    progress: &mut dyn FnMut(&ImportStep),
) -> Result<Imported> {
    // Declared first, dropped last: after the connection to the file is closed.
    let temp = TempFile::create()?;
    let (snapshot, source_version) = Sqlite::snapshot(source, &temp.path)?;
    let lite = snapshot.conn();
    let version: i64 = lite.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    progress(&ImportStep::Snapshot {
        source_version,
        version,
    });

    let mut conn = pg.conn()?;
    let mut tx = conn.transaction()?;
    let copied: Vec<&Table> = TABLES
        .iter()
        .filter(|t| !matches!(t.how, How::Skip(_)))
        .collect();
    // No instance may write while the copy runs (they would wait, then find it done).
    tx.batch_execute(&format!(
        "SET LOCAL lock_timeout = '30s'; LOCK TABLE {} IN EXCLUSIVE MODE",
        copied.iter().map(|t| t.name).collect::<Vec<_>>().join(", ")
    ))
    .context("locking the PostgreSQL tables (is an instance running on it?)")?;
    let plans = plan(&lite, &mut tx)?;
    refuse_data(&mut tx, &plans)?;

    let mut tables = Vec::new();
    for plan in &plans {
        let rows = copy_table(&lite, &mut tx, plan)
            .with_context(|| format!("copying table {}", plan.table.name))?;
        let copied = TableCopied {
            table: plan.table.name,
            rows,
        };
        progress(&ImportStep::Table(copied.clone()));
        tables.push(copied);
    }
    for plan in &plans {
        continue_ids(&lite, &mut tx, plan)?;
    }
    for (name, value) in settings {
        tx.execute(
            "INSERT INTO settings (name, value) VALUES ($1, $2)
             ON CONFLICT (name) DO UPDATE SET value = EXCLUDED.value",
            &[name, value],
        )?;
    }
    // Every row arrived (a table with a replaced row holds its seeded rows too).
    for (plan, copied) in plans.iter().zip(&tables) {
        if matches!(plan.table.how, How::Rows { .. }) {
            let held: i64 = tx
                .query_one(&format!("SELECT COUNT(*) FROM {}", plan.table.name), &[])?
                .try_get(0)?;
            if u64::try_from(held).ok() != Some(copied.rows) {
                bail!(
                    "table {} holds {held} rows after copying {}; rolled back",
                    plan.table.name,
                    copied.rows
                );
            }
        }
    }
    tx.commit().context("committing the copy")?;
    Ok(Imported {
        source_version,
        tables,
        skipped: TABLES
            .iter()
            .filter_map(|t| match t.how {
                How::Skip(why) => Some((t.name, why)),
                _ => None,
            })
            .collect(),
    })
}

/// A table to copy, with its columns as PostgreSQL has them (in its order).
struct Plan {
    table: &'static Table,
    columns: Vec<Column>,
}

struct Column {
    name: String,
    kind: Kind,
    /// An identity: the table's ids, continued after the copy.
    identity: bool,
}

/// The PostgreSQL column types the schema uses.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Text,
    BigInt,
    Int,
    Bool,
}

/// The plan for each table [`TABLES`] copies, after checking the list against both
/// schemas: the same tables (each listed, as copied or skipped), and for each table
/// copied, the same columns.
fn plan(lite: &rusqlite::Connection, tx: &mut ::postgres::Transaction<'_>) -> Result<Vec<Plan>> {
    let mut stmt = lite.prepare("SELECT name FROM sqlite_master WHERE type = 'table'")?;
    let sqlite_tables = stmt
        .query_map([], |r| r.get::<_, String>(0))?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    check_tables("SQLite", sqlite_tables)?;
    let postgres_tables = tx
        .query(
            "SELECT table_name::TEXT FROM information_schema.tables
             WHERE table_schema = current_schema() AND table_type = 'BASE TABLE'",
            &[],
        )?
        .iter()
        .map(|r| r.try_get(0))
        .collect::<Result<Vec<String>, _>>()?;
    check_tables("PostgreSQL", postgres_tables)?;

    let mut plans = Vec::new();
    for table in TABLES.iter().filter(|t| !matches!(t.how, How::Skip(_))) {
        let sqlite_columns: BTreeSet<String> = sqlite_columns(lite, table.name)?;
        let mut columns = Vec::new();
        for row in tx.query(
            "SELECT column_name::TEXT, data_type::TEXT, is_identity::TEXT
             FROM information_schema.columns
             WHERE table_schema = current_schema() AND table_name = $1
             ORDER BY ordinal_position",
            &[&table.name],
        )? {
            let name: String = row.try_get(0)?;
            let kind = match row.try_get::<_, String>(1)?.as_str() {
                "text" => Kind::Text,
                "bigint" => Kind::BigInt,
                "integer" => Kind::Int,
                "boolean" => Kind::Bool,
                other => bail!(
                    "column {}.{name} is of type {other} in PostgreSQL, which the copy does not \
                     know; nothing was copied",
                    table.name
                ),
            };
            let identity = row.try_get::<_, String>(2)? == "YES";
            columns.push(Column {
                name,
                kind,
                identity,
            });
        }
        let postgres_columns: BTreeSet<String> = columns.iter().map(|c| c.name.clone()).collect();
        let differ = |a: &BTreeSet<String>, b: &BTreeSet<String>| {
            a.difference(b).cloned().collect::<Vec<_>>().join(", ")
        };
        if sqlite_columns != postgres_columns {
            bail!(
                "table {} has columns only SQLite has ({}) or only PostgreSQL has ({}): the two \
                 schemas disagree and the copy would lose them; nothing was copied",
                table.name,
                differ(&sqlite_columns, &postgres_columns),
                differ(&postgres_columns, &sqlite_columns),
            );
        }
        plans.push(Plan { table, columns });
    }
    Ok(plans)
}

/// Refuses a schema whose tables are not exactly those of [`TABLES`].
fn check_tables(schema: &str, tables: Vec<String>) -> Result<()> {
    let found: BTreeSet<String> = tables.into_iter().filter(|t| !is_bookkeeping(t)).collect();
    let known: BTreeSet<String> = TABLES.iter().map(|t| t.name.to_string()).collect();
    if let Some(unknown) = found.difference(&known).next() {
        bail!(
            "the {schema} database has a table {unknown} that the copy does not know; nothing \
             was copied"
        );
    }
    if let Some(missing) = known.difference(&found).next() {
        bail!("the {schema} database has no table {missing}; nothing was copied");
    }
    Ok(())
}

fn sqlite_columns(lite: &rusqlite::Connection, table: &str) -> Result<BTreeSet<String>> {
    let mut stmt = lite.prepare("SELECT name FROM pragma_table_info(?1)")?;
    let columns = stmt
        .query_map([table], |r| r.get::<_, String>(0))?
        .collect::<rusqlite::Result<_>>()?;
    Ok(columns)
}

/// Refuses a target with a row in any table the copy fills (beyond the seeded rows of
/// those whose rows it replaces), naming them.
fn refuse_data(tx: &mut ::postgres::Transaction<'_>, plans: &[Plan]) -> Result<()> {
    let mut full = Vec::new();
    for plan in plans {
        if matches!(plan.table.how, How::Rows { .. }) {
            let any: bool = tx
                .query_one(
                    &format!("SELECT EXISTS (SELECT 1 FROM {})", plan.table.name),
                    &[],
                )?
                .try_get(0)?;
            if any {
                full.push(plan.table.name);
            }
        }
    }
    if !full.is_empty() {
        bail!(
            "the PostgreSQL database already holds data (in {}): migrate-db copies into an \
             empty database only; nothing was copied",
            full.join(", ")
        );
    }
    Ok(())
}

/// Copies every row of `plan`'s table, in batches; returns how many.
fn copy_table(
    lite: &rusqlite::Connection,
    tx: &mut ::postgres::Transaction<'_>,
    plan: &Plan,
) -> Result<u64> {
    let names: Vec<&str> = plan.columns.iter().map(|c| c.name.as_str()).collect();
    let clear: &[&str] = match plan.table.how {
        How::Rows { clear } => clear,
        _ => &[],
    };
    let cleared: Vec<bool> = names.iter().map(|n| clear.contains(n)).collect();
    let mut stmt = lite.prepare(&format!(
        "SELECT {} FROM {}",
        names.join(", "),
        plan.table.name
    ))?;
    let mut rows = stmt.query([])?;
    let mut batch = Batch::new(plan, BATCH_ROWS.min(60_000 / names.len().max(1)));
    let mut copied = 0;
    while let Some(row) = rows.next()? {
        copied += 1;
        for (i, column) in plan.columns.iter().enumerate() {
            let value = if cleared[i] {
                ValueRef::Null
            } else {
                row.get_ref(i)?
            };
            let value = postgres_value(value, column.kind)
                .with_context(|| format!("row {copied}, column {}", column.name))?;
            batch.push(value);
        }
        batch.end_row();
        if batch.full() {
            batch.insert(tx)?;
        }
    }
    batch.insert(tx)?;
    Ok(copied)
}

/// Rows waiting to be inserted with one statement.
struct Batch<'p> {
    plan: &'p Plan,
    max_rows: usize,
    values: Vec<Box<dyn ToSql + Sync>>,
    rows: usize,
    bytes: usize,
}

impl<'p> Batch<'p> {
    fn new(plan: &'p Plan, max_rows: usize) -> Batch<'p> {
        Batch {
            plan,
            max_rows,
            values: Vec::new(),
            rows: 0,
            bytes: 0,
        }
    }

    fn push(&mut self, (value, bytes): (Box<dyn ToSql + Sync>, usize)) {
        self.values.push(value);
        self.bytes += bytes;
    }

    fn end_row(&mut self) {
        self.rows += 1;
    }

    fn full(&self) -> bool {
        self.rows >= self.max_rows || self.bytes >= BATCH_BYTES
    }

    /// Inserts the rows waiting, if any.
    fn insert(&mut self, tx: &mut ::postgres::Transaction<'_>) -> Result<()> {
        if self.rows == 0 {
            return Ok(());
        }
        let width = self.plan.columns.len();
        let tuples: Vec<String> = (0..self.rows)
            .map(|r| {
                let params: Vec<String> =
                    (1..=width).map(|c| format!("${}", r * width + c)).collect();
                format!("({})", params.join(", "))
            })
            .collect();
        let names: Vec<&str> = self.plan.columns.iter().map(|c| c.name.as_str()).collect();
        let conflict = match self.plan.table.how {
            How::Replace { key } => {
                let set: Vec<String> = names
                    .iter()
                    .filter(|n| **n != key)
                    .map(|n| format!("{n} = EXCLUDED.{n}"))
                    .collect();
                format!(" ON CONFLICT ({key}) DO UPDATE SET {}", set.join(", "))
            }
            _ => String::new(),
        };
        let sql = format!(
            "INSERT INTO {} ({}) VALUES {}{conflict}",
            self.plan.table.name,
            names.join(", "),
            tuples.join(", ")
        );
        let params: Vec<&(dyn ToSql + Sync)> = self.values.iter().map(|v| v.as_ref()).collect();
        tx.execute(&sql, &params)?;
        self.values.clear();
        self.rows = 0;
        self.bytes = 0;
        Ok(())
    }
}

/// A SQLite value as a parameter for a PostgreSQL column of type `kind`, and its size in
/// bytes (about). Anything but the type the column expects (or NULL) is an error, never
/// guessed at.
fn postgres_value(value: ValueRef<'_>, kind: Kind) -> Result<(Box<dyn ToSql + Sync>, usize)> {
    Ok(match (kind, value) {
        (Kind::Text, ValueRef::Null) => (Box::new(None::<String>), 0),
        (Kind::BigInt, ValueRef::Null) => (Box::new(None::<i64>), 0),
        (Kind::Int, ValueRef::Null) => (Box::new(None::<i32>), 0),
        (Kind::Bool, ValueRef::Null) => (Box::new(None::<bool>), 0),
        (Kind::Text, ValueRef::Text(bytes)) => {
            let text = std::str::from_utf8(bytes).context("text that is not UTF-8")?;
            (Box::new(text.to_owned()), bytes.len())
        }
        (Kind::BigInt, ValueRef::Integer(n)) => (Box::new(n), 8),
        (Kind::Int, ValueRef::Integer(n)) => (
            Box::new(i32::try_from(n).with_context(|| format!("{n} is out of range"))?),
            4,
        ),
        (Kind::Bool, ValueRef::Integer(n)) => (Box::new(n != 0), 1),
        (kind, other) => bail!(
            "a {:?} value where PostgreSQL takes {kind:?}",
            other.data_type()
        ),
    })
}

/// Moves each identity of `plan`'s table past the highest id the SQLite table ever
/// handed out: its highest id, or, for a table that never reuses ids (`AUTOINCREMENT`:
/// subscriptions), the highest in `sqlite_sequence`, removed rows included. An identity
/// already further on is left there.
fn continue_ids(
    lite: &rusqlite::Connection,
    tx: &mut ::postgres::Transaction<'_>,
    plan: &Plan,
) -> Result<()> {
    for column in plan.columns.iter().filter(|c| c.identity) {
        let table = plan.table.name;
        let highest: Option<i64> = lite.query_row(
            &format!("SELECT MAX({}) FROM {table}", column.name),
            [],
            |r| r.get(0),
        )?;
        let has_sequence: bool = lite.query_row(
            "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE name = 'sqlite_sequence')",
            [],
            |r| r.get(0),
        )?;
        let handed_out: Option<i64> = if has_sequence {
            lite.query_row(
                "SELECT MAX(seq) FROM sqlite_sequence WHERE name = ?1",
                [table],
                |r| r.get(0),
            )?
        } else {
            None
        };
        let Some(last) = highest.max(handed_out).filter(|&n| n > 0) else {
            continue;
        };
        tx.execute(
            "SELECT setval(pg_get_serial_sequence($1, $2),
                           GREATEST($3::BIGINT, nextval(pg_get_serial_sequence($1, $2)) - 1))",
            &[&table, &column.name, &last],
        )
        .with_context(|| format!("moving the ids of {table} past {last}"))?;
    }
    Ok(())
}

/// A file in the temporary folder, removed (with SQLite's files beside it) when dropped.
struct TempFile {
    path: PathBuf,
}

impl TempFile {
    fn create() -> Result<TempFile> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or_default();
        let path =
            std::env::temp_dir().join(format!("tidings-migrate-{}-{nanos}.db", std::process::id()));
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .with_context(|| format!("creating {}", path.display()))?;
        Ok(TempFile { path })
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        for suffix in ["", "-journal", "-wal", "-shm"] {
            let mut file = self.path.clone().into_os_string();
            file.push(suffix);
            let _ = std::fs::remove_file(file);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The table list names every table of the SQLite schema, as copied or skipped, and
    /// nothing else (the PostgreSQL schema is checked the same way at every copy, and by
    /// `tests/migrate_db.rs`).
    #[test]
    fn every_sqlite_table_is_copied_or_skipped_for_a_reason() {
        let dir = tempfile::tempdir().unwrap();
        let store = Sqlite::open(&dir.path().join("t.db")).unwrap();
        let conn = store.conn();
        let mut stmt = conn
            .prepare("SELECT name FROM sqlite_master WHERE type = 'table'")
            .unwrap();
        let tables: Vec<String> = stmt
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        check_tables("SQLite", tables.clone()).unwrap();

        let mut extra = tables.clone();
        extra.push("digests".into());
        let err = check_tables("SQLite", extra).unwrap_err().to_string();
        assert!(
            err.contains("table digests that the copy does not know"),
            "{err}"
        );
        let fewer: Vec<String> = tables.into_iter().filter(|t| t != "signups").collect();
        let err = check_tables("SQLite", fewer).unwrap_err().to_string();
        assert!(err.contains("no table signups"), "{err}");
    }

    /// Each table comes after the tables it refers to, so rows go in without deferring
    /// foreign keys.
    #[test]
    fn tables_are_in_foreign_key_order() {
        let dir = tempfile::tempdir().unwrap();
        let store = Sqlite::open(&dir.path().join("t.db")).unwrap();
        let conn = store.conn();
        let position = |name: &str| TABLES.iter().position(|t| t.name == name).unwrap();
        for table in TABLES {
            let mut stmt = conn
                .prepare("SELECT DISTINCT \"table\" FROM pragma_foreign_key_list(?1)")
                .unwrap();
            let parents: Vec<String> = stmt
                .query_map([table.name], |r| r.get(0))
                .unwrap()
                .collect::<rusqlite::Result<_>>()
                .unwrap();
            for parent in parents {
                assert!(
                    position(&parent) < position(table.name),
                    "{} refers to {parent}, copied later",
                    table.name
                );
            }
        }
    }

    /// Values go over as the PostgreSQL column takes them; anything else is refused.
    #[test]
    fn values_convert_only_to_their_own_type() {
        let cases: &[(&str, ValueRef<'_>, Kind, bool)] = &[
            ("text", ValueRef::Text(b"abc"), Kind::Text, true),
            ("bigint", ValueRef::Integer(1 << 40), Kind::BigInt, true),
            ("int", ValueRef::Integer(7), Kind::Int, true),
            (
                "int out of range",
                ValueRef::Integer(1 << 40),
                Kind::Int,
                false,
            ),
            ("flag", ValueRef::Integer(1), Kind::Bool, true),
            ("null", ValueRef::Null, Kind::Bool, true),
            ("a number as text", ValueRef::Integer(5), Kind::Text, false),
            (
                "text as a number",
                ValueRef::Text(b"5"),
                Kind::BigInt,
                false,
            ),
            ("a real", ValueRef::Real(1.5), Kind::BigInt, false),
            ("not UTF-8", ValueRef::Text(b"\xff"), Kind::Text, false),
        ];
        for (name, value, kind, ok) in cases {
            assert_eq!(postgres_value(*value, *kind).is_ok(), *ok, "{name}");
        }
    }

    /// The snapshot leaves no file behind.
    #[test]
    fn the_temporary_copy_is_removed() {
        let temp = TempFile::create().unwrap();
        let path = temp.path.clone();
        drop(Sqlite::open(&path).unwrap());
        assert!(path.exists());
        drop(temp);
        assert!(!path.exists());
    }
}
