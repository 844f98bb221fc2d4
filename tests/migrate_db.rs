//! `tidings migrate-db` (issue 14): a SQLite deployment made by this release's binary (feeds
//! on a real feed server, mail to a real SMTP server, sign-ups and unsubscribes through the
//! real web pages) is copied into a real PostgreSQL and carries on from there. One
//! PostgreSQL server for the whole binary, stopped after the last trial; without
//! PostgreSQL installed the trials are listed as ignored, unless `TIDINGS_REQUIRE_POSTGRES=1`.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use support::postgres::PgServer;
use support::{FeedServer, Route, Site, SmtpServer, decode};
use tidings::App;

const WAIT: Duration = Duration::from_secs(20);

/// The tables the copy fills; `instances` and `fetch_slots` are left behind.
const COPIED: &[&str] = &[
    "feeds",
    "items",
    "item_tombstones",
    "subscribers",
    "subscriptions",
    "channels",
    "channel_searches",
    "outbox",
    "matches",
    "stories_sent",
    "unsubscribed",
    "signups",
    "generations",
    "feed_list",
    "pacers",
    "settings",
];

/// Runs the binary with `args` in `cwd`, without any Tidings variable from the
/// environment of the tests, and `env` set.
fn run(args: &[&str], cwd: &Path, env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_tidings"));
    command
        .args(args)
        .current_dir(cwd)
        .env_remove("TIDINGS_CONFIG")
        .env_remove("TIDINGS_DATABASE_PASSWORD")
        .env_remove("TIDINGS_SECRET")
        .envs(env.iter().copied());
    tokio::task::block_in_place(|| command.output().expect("run tidings"))
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `tidings ARGS --config CONFIG`, which must succeed; returns standard output.
fn ok(args: &[&str], config: &Path) -> String {
    let mut all = args.to_vec();
    all.extend(["--config", config.to_str().unwrap()]);
    let out = run(&all, config.parent().unwrap(), &[]);
    assert!(
        out.status.success(),
        "tidings {args:?} failed: {}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

/// `tidings migrate-db --from FROM --to TO EXTRA` in `cwd` (where no config file is).
fn migrate(from: &Path, to: &str, extra: &[&str], cwd: &Path) -> Output {
    let mut args = vec!["migrate-db", "--from", from.to_str().unwrap(), "--to", to];
    args.extend(extra);
    run(&args, cwd, &[])
}

/// [`migrate`], which must fail with exit code 2; returns standard error.
fn refused(from: &Path, to: &str, extra: &[&str], cwd: &Path) -> String {
    let out = migrate(from, to, extra, cwd);
    assert_eq!(
        out.status.code(),
        Some(2),
        "stdout: {}\nstderr: {}",
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stderr)
}

/// The schema version this release's SQLite migrations make.
fn latest_version() -> usize {
    std::fs::read_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations/sqlite"))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "sql")
        })
        .count()
}

/// A feed of `items` (guid, title), each published when the tests started: the same
/// item is the same every time it is served.
fn rss(items: &[(&str, &str)]) -> Route {
    static STARTED: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let now = STARTED.get_or_init(|| chrono::Utc::now().to_rfc2822());
    let items: String = items
        .iter()
        .map(|(guid, title)| {
            format!(
                "<item><guid>{guid}</guid><title>{title}</title>\
                 <link>https://agency.example/{guid}</link>\
                 <description>{title}.</description><pubDate>{now}</pubDate></item>"
            )
        })
        .collect();
    Route::feed(
        "application/rss+xml",
        format!(
            "<?xml version=\"1.0\"?><rss version=\"2.0\"><channel><title>Agency</title>\
             <link>https://agency.example/</link><description>d</description>{items}\
             </channel></rss>"
        ),
    )
}

/// A config in `dir` for the feed at `feed_url`, mailing through `smtp_port`, on
/// `database` (a SQLite path or a postgres:// URL).
fn config_in(dir: &Path, feed_url: &str, smtp_port: u16, database: &str) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    support::write_config(dir, &[("news", feed_url.to_string())], smtp_port);
    let path = dir.join("config.toml");
    let text = std::fs::read_to_string(&path).unwrap().replace(
        "database = \"data/tidings.db\"",
        &format!("database = \"{database}\""),
    );
    std::fs::write(&path, text).unwrap();
    path
}

// ---- reading both databases, for comparison ------------------------------------------------

type Rows = Vec<Vec<Option<String>>>;

/// Work with a client of the database at `url` (the client blocks: off the async threads).
fn pg<T>(url: &str, work: impl FnOnce(&mut postgres::Client) -> T) -> T {
    tokio::task::block_in_place(|| {
        let mut client = postgres::Client::connect(url, postgres::NoTls).unwrap();
        work(&mut client)
    })
}

fn pg_i64(url: &str, sql: &str) -> i64 {
    pg(url, |c| c.query_one(sql, &[]).unwrap().get(0))
}

/// Every row of `table` in PostgreSQL, each value as text (flags as 0 and 1, as SQLite
/// has them), sorted; and the column names.
fn pg_rows(url: &str, table: &str) -> (Vec<String>, Rows) {
    pg(url, |c| {
        let columns: Vec<(String, String)> = c
            .query(
                "SELECT column_name::TEXT, data_type::TEXT FROM information_schema.columns
                 WHERE table_schema = current_schema() AND table_name = $1
                 ORDER BY ordinal_position",
                &[&table],
            )
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        assert!(!columns.is_empty(), "no table {table}");
        let names: Vec<String> = columns.iter().map(|(n, _)| n.clone()).collect();
        let mut rows: Rows = c
            .query(&format!("SELECT {} FROM {table}", names.join(", ")), &[])
            .unwrap()
            .iter()
            .map(|row| {
                columns
                    .iter()
                    .enumerate()
                    .map(|(i, (_, ty))| match ty.as_str() {
                        "text" => row.get::<_, Option<String>>(i),
                        "bigint" => row.get::<_, Option<i64>>(i).map(|n| n.to_string()),
                        "integer" => row.get::<_, Option<i32>>(i).map(|n| n.to_string()),
                        "boolean" => row
                            .get::<_, Option<bool>>(i)
                            .map(|b| u8::from(b).to_string()),
                        other => panic!("{table}: a column of type {other}"),
                    })
                    .collect()
            })
            .collect();
        rows.sort();
        (names, rows)
    })
}

/// Every row of `table` in the SQLite file at `path`, `columns` of it as text, sorted.
fn sqlite_rows(path: &Path, table: &str, columns: &[String]) -> Rows {
    let conn =
        rusqlite::Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .unwrap();
    let mut stmt = conn
        .prepare(&format!("SELECT {} FROM {table}", columns.join(", ")))
        .unwrap();
    let mut rows: Rows = stmt
        .query_map([], |row| {
            (0..columns.len())
                .map(|i| {
                    Ok(match row.get_ref(i)? {
                        rusqlite::types::ValueRef::Null => None,
                        rusqlite::types::ValueRef::Integer(n) => Some(n.to_string()),
                        rusqlite::types::ValueRef::Text(t) => {
                            Some(String::from_utf8(t.to_vec()).unwrap())
                        }
                        other => panic!("{table}: {other:?}"),
                    })
                })
                .collect()
        })
        .unwrap()
        .collect::<rusqlite::Result<_>>()
        .unwrap();
    rows.sort();
    rows
}

fn sqlite_i64(path: &Path, sql: &str) -> i64 {
    rusqlite::Connection::open(path)
        .unwrap()
        .query_row(sql, [], |r| r.get(0))
        .unwrap()
}

/// The path of the unsubscribe link in `mail` (the default base URL's).
fn unsubscribe_path(mail: &support::Mail) -> String {
    let header = mail.header("List-Unsubscribe").expect("List-Unsubscribe");
    let url = header.split(", ").next().unwrap().trim_matches(['<', '>']);
    url.strip_prefix("http://localhost:8080")
        .unwrap_or_else(|| panic!("{url}"))
        .to_string()
}

/// The messages `smtp` received for `to`, decoded.
fn mail_to(smtp: &SmtpServer, to: &str) -> Vec<support::Mail> {
    smtp.messages()
        .iter()
        .map(decode)
        .filter(|m| m.to == to)
        .collect()
}

// ---- the trials ------------------------------------------------------------------------------

/// A deployment made by this release moves to PostgreSQL: every table arrives as it was,
/// the commands show the same, polling again mails nothing old and a new item once,
/// a link mailed before the move still unsubscribes, new ids come after old ones (a
/// removed search's too), and a second copy into the same database is refused.
async fn a_live_deployment_moves_to_postgres_and_carries_on(server: &PgServer) {
    let feeds = FeedServer::start().await;
    let smtp = SmtpServer::start().await;
    feeds.set(
        "/news.xml",
        rss(&[
            ("a1", "Asylum ruling"),
            ("v1", "Visa bulletin"),
            ("w1", "Weather report"),
        ]),
    );
    let feed_url = feeds.url("/news.xml");
    let dir = tempfile::tempdir().unwrap();
    let lite = config_in(
        &dir.path().join("sqlite"),
        &feed_url,
        smtp.port(),
        "data/tidings.db",
    );
    let db = dir.path().join("sqlite/data/tidings.db");

    // The deployment, made with the binary.
    for (email, query, frequency) in [
        ("ana@x.example", "asylum", "immediate"),
        ("ben@x.example", "visa", "daily 07:30"),
        ("dan@x.example", "ruling", "immediate"),
        ("eve@x.example", "visa", "immediate"),
        ("fay@x.example", "visa", "immediate"),
    ] {
        ok(
            &[
                "subscriber",
                "add",
                email,
                "--query",
                query,
                "--frequency",
                frequency,
            ],
            &lite,
        );
    }
    // A destination beside email that takes one search (ben's digest is not due today).
    ok(
        &[
            "subscriber",
            "channel",
            "add",
            "ben@x.example",
            "webhook",
            "crm",
            "--url",
            "https://hooks.x.example/in",
            "--search",
            "visa",
        ],
        &lite,
    );
    smtp.reject_rcpt("eve@x.example", 550, "no such user");
    smtp.reject_rcpt("fay@x.example", 451, "mailbox busy, try later");
    ok(&["poll"], &lite);
    ok(&["digest"], &lite);
    smtp.wait_for(2, WAIT).await;
    let ana_before = mail_to(&smtp, "ana@x.example");
    assert_eq!(ana_before.len(), 1);
    assert!(ana_before[0].text.contains("Asylum ruling"));
    let dan_before = mail_to(&smtp, "dan@x.example");
    assert_eq!(dan_before.len(), 1);

    // An old item nobody needs is pruned to a tombstone.
    rusqlite::Connection::open(&db)
        .unwrap()
        .execute(
            "UPDATE items SET first_seen_at = first_seen_at - 400 * 86400
             WHERE title = 'Weather report'",
            [],
        )
        .unwrap();
    assert!(ok(&["prune"], &lite).contains("pruned 1 item"));

    // Over the web: dan unsubscribes with his mail's link, gus signs up (unconfirmed).
    {
        let config = tidings::Config::load(&lite).unwrap();
        let site = Site::start(App::open(config).await.unwrap()).await;
        let (status, page) = site.post(&unsubscribe_path(&dan_before[0]), &[]).await;
        assert_eq!(status, 200, "{page}");
        assert!(page.contains("You are unsubscribed"), "{page}");
        let nth = smtp.messages().len() + 1;
        site.sign_up(&smtp, nth, "gus@x.example", "parole").await;
    }

    // A search removed: its id is the highest SQLite ever handed out.
    ok(
        &["subscriber", "add", "hal@x.example", "--query", "parole"],
        &lite,
    );
    ok(&["subscriber", "remove", "hal@x.example"], &lite);
    let removed_search = sqlite_i64(
        &db,
        "SELECT seq FROM sqlite_sequence WHERE name = 'subscriptions'",
    );
    assert!(removed_search > sqlite_i64(&db, "SELECT MAX(id) FROM subscriptions"));

    // What the copy must carry, there to be carried.
    for (what, sql, expected) in [
        ("tombstones", "SELECT COUNT(*) FROM item_tombstones", 1),
        (
            "sent mail",
            "SELECT COUNT(*) FROM outbox WHERE status = 'sent'",
            3,
        ),
        (
            "failed mail",
            "SELECT COUNT(*) FROM outbox WHERE status = 'failed'",
            1,
        ),
        (
            "mail to retry",
            "SELECT COUNT(*) FROM outbox WHERE status = 'pending' AND attempts = 1",
            1,
        ),
        (
            "pending matches",
            "SELECT COUNT(*) FROM matches WHERE outbox_id IS NULL",
            1,
        ),
        (
            "used unsubscribe links",
            "SELECT COUNT(*) FROM unsubscribed",
            1,
        ),
        (
            "sign-ups",
            "SELECT COUNT(*) FROM signups WHERE confirmed_at IS NULL",
            1,
        ),
    ] {
        assert_eq!(sqlite_i64(&db, sql), expected, "{what}");
    }
    // A daemon killed mid-poll left its claim on the feed, for a day.
    rusqlite::Connection::open(&db)
        .unwrap()
        .execute(
            "UPDATE feeds SET claim = 'KILLED', claimed_until = unixepoch() + 86400",
            [],
        )
        .unwrap();
    let secret = std::fs::read_to_string(dir.path().join("sqlite/data/tidings.secret")).unwrap();
    let source_bytes = std::fs::read(&db).unwrap();

    // The move. No config file where it runs: it needs none.
    let url = tokio::task::block_in_place(|| server.fresh_database());
    let out = migrate(&db, &url, &[], dir.path());
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    assert!(
        stdout.contains("snapshot of")
            && stdout.contains(&format!("(schema version {})", latest_version())),
        "{stdout}"
    );
    for table in COPIED {
        assert!(
            stdout
                .lines()
                .any(|l| l.trim_start().starts_with(&format!("{table} "))),
            "progress for {table}: {stdout}"
        );
    }
    assert!(
        stdout.contains("link-signing secret: copied from"),
        "{stdout}"
    );
    assert!(
        stdout.contains("not copied: instances (") && stdout.contains("fetch_slots ("),
        "{stdout}"
    );
    assert_eq!(
        std::fs::read(&db).unwrap(),
        source_bytes,
        "the source is unchanged"
    );
    for beside in ["tidings.db-wal", "tidings.db-shm"] {
        assert!(
            !dir.path().join("sqlite/data").join(beside).exists(),
            "{beside}"
        );
    }

    // Every table, row for row, value for value; claims cleared; the secret stored.
    let tables: Vec<String> = pg(&url, |c| {
        c.query(
            "SELECT table_name::TEXT FROM information_schema.tables
             WHERE table_schema = current_schema() ORDER BY 1",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
    });
    let mut expected_tables: Vec<&str> = COPIED.to_vec();
    expected_tables.extend(["instances", "fetch_slots", "schema_migrations"]);
    expected_tables.sort();
    assert_eq!(tables, expected_tables, "a table the copy does not fill");
    let mut total = 0;
    for table in COPIED {
        let (columns, copied) = pg_rows(&url, table);
        let mut expected = sqlite_rows(&db, table, &columns);
        if ["feeds", "outbox"].contains(table) {
            for row in &mut expected {
                for (value, column) in row.iter_mut().zip(&columns) {
                    let claim = ["claim", "claimed_until", "claimed_by", "claimed_at"];
                    if claim.contains(&column.as_str()) {
                        *value = None;
                    }
                }
            }
        }
        if *table == "settings" {
            expected.push(vec![
                Some("link_secret".to_string()),
                Some(secret.trim().to_string()),
            ]);
            expected.sort();
        }
        assert_eq!(copied, expected, "table {table}");
        total += copied.len();
    }
    assert!(
        // The secret is not a row of the SQLite database.
        stdout.contains(&format!(
            "copied {} rows in {} tables",
            total - 1,
            COPIED.len()
        )),
        "{stdout}"
    );

    // The commands show the same.
    let pg_config = config_in(&dir.path().join("pg"), &feed_url, smtp.port(), &url);
    for command in [
        &["subscriber", "list"][..],
        &["outbox", "--all"],
        &["feeds", "status", "--json"],
    ] {
        let (copy, source) = (ok(command, &pg_config), ok(command, &lite));
        if command[0] == "feeds" {
            // The same, but for the claim the killed daemon left on the source, which
            // the copy cleared.
            let unclaimed = |json: &str| {
                let mut feeds: serde_json::Value = serde_json::from_str(json).unwrap();
                for feed in feeds.as_array_mut().unwrap() {
                    feed.as_object_mut().unwrap().remove("claim");
                }
                feeds
            };
            assert_eq!(unclaimed(&copy), unclaimed(&source));
            assert!(copy.contains("\"claim\": null") && source.contains("\"until\""));
        } else {
            assert_eq!(copy, source, "{command:?}");
        }
    }

    // Polling again: nothing old comes back, the new item is mailed once.
    feeds.set(
        "/news.xml",
        rss(&[
            ("a1", "Asylum ruling"),
            ("v1", "Visa bulletin"),
            ("w1", "Weather report"),
            ("a2", "Asylum appeal"),
        ]),
    );
    let received = smtp.messages().len();
    let polled = ok(&["poll"], &pg_config);
    assert!(polled.contains("1 new item"), "{polled}");
    ok(&["digest"], &pg_config);
    smtp.wait_for(received + 1, WAIT).await;
    for _ in 0..2 {
        ok(&["poll"], &pg_config);
        ok(&["digest"], &pg_config);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(smtp.messages().len(), received + 1, "one message, once");
    let ana = mail_to(&smtp, "ana@x.example");
    assert_eq!(ana.len(), 2);
    assert!(ana[1].text.contains("Asylum appeal"), "{}", ana[1].text);
    assert!(!ana[1].text.contains("Asylum ruling"), "{}", ana[1].text);
    assert_eq!(mail_to(&smtp, "dan@x.example").len(), 1, "dan unsubscribed");
    assert_eq!(
        pg_i64(
            &url,
            "SELECT COUNT(*) FROM items WHERE title = 'Weather report'"
        ),
        0,
        "the tombstone keeps the pruned item out"
    );

    // Links mailed before the move work: ana unsubscribes, dan's used link still answers.
    {
        let config = tidings::Config::load(&pg_config).unwrap();
        assert!(
            !config.web.secret_file.exists(),
            "the secret is the database's"
        );
        let site = Site::start(App::open(config).await.unwrap()).await;
        for mail in [&ana_before[0], &dan_before[0]] {
            let (status, page) = site.post(&unsubscribe_path(mail), &[]).await;
            assert_eq!(status, 200, "{page}");
            assert!(page.contains("You are unsubscribed"), "{page}");
        }
    }
    let listed = ok(&["subscriber", "list"], &pg_config);
    assert!(!listed.contains("ana@x.example"), "{listed}");
    assert!(listed.contains("ben@x.example"), "{listed}");

    // A new search gets an id after every old one, the removed one's included.
    ok(
        &["subscriber", "add", "ivy@x.example", "--query", "parole"],
        &pg_config,
    );
    let ivy = pg_i64(
        &url,
        "SELECT s.id FROM subscriptions s JOIN subscribers r ON r.id = s.subscriber_id
         WHERE r.email = 'ivy@x.example'",
    );
    assert!(ivy > removed_search, "{ivy} after {removed_search}");

    // A second copy into the same database is refused, and changes nothing.
    let before = pg_rows(&url, "subscriptions");
    let err = refused(&db, &url, &[], dir.path());
    assert!(err.contains("already holds data (in feeds, items"), "{err}");
    assert_eq!(pg_rows(&url, "subscriptions"), before);
}

/// A database an older release made (schema version 2) is migrated in the copy, never
/// in the file, and arrives with what those migrations make of it.
async fn an_older_schema_is_migrated_in_the_snapshot_not_in_the_file(server: &PgServer) {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("v2.db");
    {
        let conn = rusqlite::Connection::open(&db).unwrap();
        let migrations = Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations/sqlite");
        for file in ["0001_init.sql", "0002_fetch_state.sql"] {
            conn.execute_batch(&std::fs::read_to_string(migrations.join(file)).unwrap())
                .unwrap();
        }
        conn.execute_batch(
            "PRAGMA user_version = 2;
             PRAGMA foreign_keys = ON;
             INSERT INTO feeds (id, url, name) VALUES ('f', 'https://f.example/', 'F');
             INSERT INTO items (id, feed_id, key, title, summary, content, first_seen_at)
                 VALUES (1, 'f', 'k', 'Asylum ruling', '', '', 0);
             INSERT INTO subscribers (id, email, frequency, next_digest_at, created_at)
                 VALUES (7, 'd@x.example', 'daily', 100, 0), (8, 'i@x.example', 'immediate', NULL, 0);
             INSERT INTO subscriptions (id, subscriber_id, query, created_at)
                 VALUES (3, 7, 'asylum', 0), (4, 8, 'ruling', 0);
             INSERT INTO matches (subscription_id, item_id, matched_at) VALUES (3, 1, 0), (4, 1, 0);",
        )
        .unwrap();
    }
    let source_bytes = std::fs::read(&db).unwrap();
    let url = tokio::task::block_in_place(|| server.fresh_database());
    let out = migrate(&db, &url, &[], dir.path());
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(
        stdout.contains(&format!(
            "its schema migrated from version 2 to {} (the file itself is unchanged)",
            latest_version()
        )),
        "{stdout}"
    );
    assert!(
        stderr.contains("warning: no secret file at") && stderr.contains("TIDINGS_SECRET"),
        "without a secret file, the operator is told what follows: {stderr}"
    );
    assert_eq!(
        std::fs::read(&db).unwrap(),
        source_bytes,
        "the file is unchanged"
    );
    assert_eq!(sqlite_i64(&db, "PRAGMA user_version"), 2);

    let (_, subscribers) = pg_rows(&url, "subscribers");
    let schedules: Vec<(Option<String>, Option<String>, Option<String>)> = subscribers
        .iter()
        .map(|r| (r[0].clone(), r[2].clone(), r[3].clone()))
        .collect();
    assert_eq!(
        schedules,
        [
            (Some("7".into()), Some("daily".into()), Some("08:00".into())),
            (Some("8".into()), Some("immediate".into()), None),
        ],
        "version 3 gave daily digests a time"
    );
    assert_eq!(
        pg_i64(&url, "SELECT COUNT(*) FROM matches WHERE outbox_id IS NULL"),
        2,
        "pending matches stay pending"
    );
    assert_eq!(
        pg_i64(
            &url,
            "SELECT COUNT(*) FROM settings WHERE name = 'link_secret'"
        ),
        0
    );
    // A new search comes after the old ones.
    pg(&url, |c| {
        let id: i64 = c
            .query_one(
                "INSERT INTO subscriptions (subscriber_id, query, created_at)
                 VALUES (8, 'visa', 0) RETURNING id",
                &[],
            )
            .unwrap()
            .get(0);
        assert_eq!(id, 5);
    });
}

/// What migrate-db refuses, each with a one-line reason, changing nothing; and a copy
/// that fails half-way leaves the target as empty as it found it.
async fn refusals_and_failures_change_nothing(server: &PgServer) {
    let dir = tempfile::tempdir().unwrap();
    let cwd = dir.path();
    let url = tokio::task::block_in_place(|| server.fresh_database());
    let smtp = SmtpServer::start().await;
    let lite = config_in(
        &cwd.join("sqlite"),
        "http://127.0.0.1:1/feed",
        smtp.port(),
        "data/tidings.db",
    );
    ok(
        &["subscriber", "add", "ana@x.example", "--query", "asylum"],
        &lite,
    );
    let db = cwd.join("sqlite/data/tidings.db");

    // The URL must not carry the password, which is never repeated.
    let with_password = url.replace("postgres@", "postgres:hunter2@");
    let err = refused(&db, &with_password, &[], cwd);
    assert!(err.contains("--to must not hold the password"), "{err}");
    assert!(err.contains("TIDINGS_DATABASE_PASSWORD"), "{err}");
    assert!(!err.contains("hunter2"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    let err = refused(&db, "mysql://db/t", &[], cwd);
    assert!(err.contains("--to must be a postgres:// URL"), "{err}");

    // The source must be a Tidings database.
    let err = refused(&cwd.join("none.db"), &url, &[], cwd);
    assert!(err.contains("no SQLite database at"), "{err}");
    assert!(!cwd.join("none.db").exists(), "not created");

    // A secret file named must be there.
    let err = refused(&db, &url, &["--secret-file", "missing.secret"], cwd);
    assert!(err.contains("no secret file at missing.secret"), "{err}");

    // None of those even connected.
    assert_eq!(
        pg_i64(
            &url,
            "SELECT COUNT(*) FROM pg_tables WHERE schemaname = 'public'"
        ),
        0,
        "not even the schema"
    );

    // A SQLite file that is not Tidings' (the target's schema is made by then, empty).
    let other = cwd.join("other.db");
    rusqlite::Connection::open(&other)
        .unwrap()
        .execute_batch("CREATE TABLE t (x)")
        .unwrap();
    let other_bytes = std::fs::read(&other).unwrap();
    let err = refused(&other, &url, &[], cwd);
    assert!(err.contains("is not a Tidings database"), "{err}");
    assert_eq!(std::fs::read(&other).unwrap(), other_bytes);
    assert_eq!(pg_i64(&url, "SELECT COUNT(*) FROM feeds"), 0);

    // A value PostgreSQL cannot take, in a table copied late: all or nothing.
    rusqlite::Connection::open(&db)
        .unwrap()
        .execute(
            "INSERT INTO signups (email, queries, frequency, timezone, client, created_at)
             VALUES ('x@x.example', 'visa', 'daily', 'UTC', CAST(X'FF' AS TEXT), 0)",
            [],
        )
        .unwrap();
    let err = refused(&db, &url, &[], cwd);
    assert!(
        err.contains("copying table signups") && err.contains("not UTF-8"),
        "{err}"
    );
    for table in ["feeds", "subscribers", "subscriptions", "signups"] {
        assert_eq!(
            pg_i64(&url, &format!("SELECT COUNT(*) FROM {table}")),
            0,
            "{table} rolled back"
        );
    }
    // Mended, the same target takes the copy.
    rusqlite::Connection::open(&db)
        .unwrap()
        .execute("DELETE FROM signups", [])
        .unwrap();
    let out = migrate(&db, &url, &[], cwd);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(pg_i64(&url, "SELECT COUNT(*) FROM subscriptions"), 1);

    // A target an instance already used is refused.
    let used = tokio::task::block_in_place(|| server.fresh_database());
    let pg_config = config_in(
        &cwd.join("pg"),
        "http://127.0.0.1:1/feed",
        smtp.port(),
        &used,
    );
    ok(
        &["subscriber", "add", "bob@x.example", "--query", "visa"],
        &pg_config,
    );
    let err = refused(&db, &used, &[], cwd);
    assert!(
        err.contains("already holds data (in feeds, subscribers, subscriptions, feed_list)")
            && err.contains("nothing was copied"),
        "{err}"
    );
    let listed = ok(&["subscriber", "list"], &pg_config);
    assert!(
        listed.contains("bob@x.example") && !listed.contains("ana@x.example"),
        "{listed}"
    );
}

/// The daemon may keep running on the SQLite file while the copy is made.
async fn the_daemon_may_run_during_the_copy(server: &PgServer) {
    let feeds = FeedServer::start().await;
    let smtp = SmtpServer::start().await;
    feeds.set("/news.xml", rss(&[("a1", "Asylum ruling")]));
    let dir = tempfile::tempdir().unwrap();
    let lite = config_in(
        &dir.path().join("sqlite"),
        &feeds.url("/news.xml"),
        smtp.port(),
        "data/tidings.db",
    );
    ok(
        &["subscriber", "add", "ana@x.example", "--query", "asylum"],
        &lite,
    );
    let daemon = support::Daemon::start(&lite, &[], &[]);
    daemon.wait_log("a poll", |l| l.contains("new=1")).await;
    let db = dir.path().join("sqlite/data/tidings.db");
    assert!(
        dir.path().join("sqlite/data/tidings.db-wal").exists(),
        "the daemon has it open"
    );
    let url = tokio::task::block_in_place(|| server.fresh_database());
    let out = migrate(&db, &url, &[], dir.path());
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(pg_i64(&url, "SELECT COUNT(*) FROM items"), 1);
    assert_eq!(pg_i64(&url, "SELECT COUNT(*) FROM subscribers"), 1);
    assert!(
        daemon.log().lines().all(|l| !l.contains("ERROR")),
        "{}",
        daemon.log()
    );
}

fn main() -> std::process::ExitCode {
    support::postgres::run_pg_trials(
        "migrate-db tests",
        support::postgres::pg_trials![
            a_live_deployment_moves_to_postgres_and_carries_on,
            an_older_schema_is_migrated_in_the_snapshot_not_in_the_file,
            refusals_and_failures_change_nothing,
            the_daemon_may_run_during_the_copy,
        ],
    )
}
