//! When the database cannot be written (a full disk, made on demand with SQLite's
//! `max_page_count`): a poll says which feeds it could not record, as a local failure
//! (`tidings poll` exits non-zero), keeps what was written, and the next poll once
//! there is room finishes the job: every item once, nothing lost, nothing twice. Real
//! HTTP feeds, a real SMTP server, a real SQLite file.

mod support;

use std::process::Command;
use std::time::Duration;

use support::{FeedServer, Route, SmtpServer, at, subscribe, write_config_with};
use tidings::{App, poll_feeds};

const FEEDS: usize = 12;
const ITEMS: usize = 4;

/// Feed `n`: `ITEMS` items about asylum of about 3 KB each.
fn rss(n: usize) -> Route {
    let filler = "The rule changes how asylum claims are filed at the border. ".repeat(50);
    let items: String = (0..ITEMS)
        .map(|i| {
            format!(
                "<item><guid>f{n}-{i}</guid><title>Asylum update {n}.{i}</title>\
                 <link>https://news{n}.example/{i}</link><description>{filler}</description>\
                 <pubDate>Tue, 01 Dec 2026 11:00:00 GMT</pubDate></item>"
            )
        })
        .collect();
    Route::feed(
        "application/rss+xml",
        format!(
            "<?xml version=\"1.0\"?><rss version=\"2.0\"><channel><title>Feed {n}</title>\
             <link>https://news{n}.example/</link><description>d</description>{items}\
             </channel></rss>"
        ),
    )
}

/// Serves feeds `f0`… `f{n-1}` (answering after `delay`) and writes a config polling
/// them into `dir`.
fn feeds_config(
    feeds: &FeedServer,
    n: usize,
    delay: Duration,
    dir: &std::path::Path,
    smtp_port: u16,
) -> tidings::config::Config {
    let list: Vec<(String, String)> = (0..n)
        .map(|n| {
            let path = format!("/f{n}.xml");
            feeds.set(&path, rss(n).delay(delay));
            (format!("f{n}"), feeds.url(&path))
        })
        .collect();
    let list: Vec<(&str, String)> = list
        .iter()
        .map(|(id, url)| (id.as_str(), url.clone()))
        .collect();
    write_config_with(dir, &list, smtp_port, "", "")
}

/// One test's parts: feeds `f0`… served (answering after `delay`), an SMTP server, the
/// folder with a config polling them, and the app over it.
struct Setup {
    feeds: FeedServer,
    smtp: SmtpServer,
    dir: tempfile::TempDir,
    app: App,
}

async fn setup(n: usize, delay: Duration) -> Setup {
    let feeds = FeedServer::start().await;
    let smtp = SmtpServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = feeds_config(&feeds, n, delay, dir.path(), smtp.port());
    let app = App::open(config).await.unwrap();
    Setup {
        feeds,
        smtp,
        dir,
        app,
    }
}

/// Waits until `fetches` requests for feeds `f0`… `f{n-1}` have come in.
async fn wait_for_fetches(feeds: &FeedServer, n: usize, fetches: usize) {
    let waited = std::time::Instant::now();
    while (0..n)
        .map(|n| feeds.hits(&format!("/f{n}.xml")))
        .sum::<usize>()
        < fetches
    {
        assert!(
            waited.elapsed() < Duration::from_secs(10),
            "{fetches} fetches start"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn count(db: &rusqlite::Connection, sql: &str) -> i64 {
    db.query_row(sql, [], |r| r.get(0)).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_database_is_a_local_failure_and_the_next_poll_finishes_the_job() {
    let Setup {
        feeds: _feeds,
        smtp: _smtp,
        dir,
        app,
    } = setup(FEEDS, Duration::ZERO).await;
    let now = at("2026-12-01T12:00:00Z");
    subscribe(&app, "alice@example.org", "asylum", "immediate", now).await;

    // Room for a few feeds' items, not for all of them.
    app.store.limit_growth(Some(12)).await.unwrap();
    let first = poll_feeds(&app, now, false).await.unwrap();
    assert!(first.updated > 0, "some feeds fit: {first:?}");
    assert!(first.unrecorded > 0, "the others do not: {first:?}");
    assert_eq!(first.updated + first.unrecorded, FEEDS, "{first:?}");
    assert_eq!(first.failed, first.unrecorded, "no feed failed on its side");
    let error = format!("{:#}", first.local_failure().expect("a local failure"));
    assert!(error.contains("database or disk is full"), "{error}");
    assert!(
        error.contains(&format!("{} feed", first.unrecorded)),
        "{error}"
    );

    let db = rusqlite::Connection::open(dir.path().join("data/tidings.db")).unwrap();
    let ok: String = db
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(ok, "ok");
    let stored = count(&db, "SELECT COUNT(*) FROM items") as usize;
    assert_eq!(stored, first.new_items);
    assert_eq!(
        stored,
        first.updated * ITEMS,
        "a feed's items are stored whole or not at all"
    );
    // A full disk is not the feeds' fault: none is backed off or named as failing, and
    // every one not recorded is due again at once (the daemon's next tick takes it).
    assert_eq!(
        count(
            &db,
            "SELECT COUNT(*) FROM feeds WHERE consecutive_failures > 0 OR last_error IS NOT NULL"
        ),
        0
    );
    assert_eq!(
        count(
            &db,
            &format!(
                "SELECT COUNT(*) FROM feeds WHERE next_poll_at <= {}",
                now.timestamp()
            )
        ) as usize,
        first.unrecorded
    );

    // Room again: the very next poll fetches and stores the rest.
    app.store.limit_growth(None).await.unwrap();
    let second = poll_feeds(&app, now + chrono::Duration::minutes(1), false)
        .await
        .unwrap();
    assert_eq!(second.unrecorded, 0, "{second:?}");
    assert!(second.local_failure().is_none());
    assert_eq!(second.failed, 0, "{second:?}");
    assert_eq!(
        first.new_items + second.new_items,
        FEEDS * ITEMS,
        "{second:?}"
    );
    assert_eq!(
        count(&db, "SELECT COUNT(*) FROM items") as usize,
        FEEDS * ITEMS
    );
    assert_eq!(
        count(&db, "SELECT COUNT(*) FROM matches") as usize,
        FEEDS * ITEMS,
        "each item matched once"
    );
    assert_eq!(
        count(&db, "SELECT COUNT(*) FROM feeds WHERE claim IS NOT NULL"),
        0
    );
}

/// `tidings poll` polls every feed, but leaves alone those another poll holds (another
/// process, or one that died with its claims): it says how many, and until when.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poll_of_all_feeds_says_which_feeds_another_poll_holds_and_until_when() {
    let Setup {
        feeds: _feeds,
        smtp: _smtp,
        dir,
        app,
    } = setup(3, Duration::ZERO).await;
    // Another poll took two of the three feeds.
    let claimed_at = chrono::Utc::now();
    let lease = Duration::from_secs(600);
    let held = app
        .store
        .claim_due_feeds(claimed_at, lease, 2)
        .await
        .unwrap();
    assert_eq!(held.len(), 2);
    let until = chrono::DateTime::from_timestamp(claimed_at.timestamp() + 600, 0).unwrap();

    let config = dir.path().join("config.toml");
    let out = tokio::task::spawn_blocking(move || tidings(&config, &["poll"]))
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("polled 1 feed:"), "{stdout}");
    let expected = format!(
        "left 2 feeds alone: another poll holds them (claims end by {} at the latest)",
        until.format("%Y-%m-%d %H:%M UTC")
    );
    assert!(stdout.contains(&expected), "{stdout}");
}

fn tidings(config: &std::path::Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_tidings"))
        .args(args)
        .arg("--config")
        .arg(config)
        .env_remove("TIDINGS_CONFIG")
        .output()
        .unwrap()
}

/// A poll killed while it holds its feeds: `feeds status` shows them claimed by a process
/// that has ended (not as new), and the very next poll takes them over at once, not
/// after the lease.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_claims_of_a_killed_poll_are_taken_over_by_the_next_at_once() {
    let feeds = FeedServer::start().await;
    let smtp = SmtpServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    feeds_config(&feeds, 3, Duration::from_secs(3), dir.path(), smtp.port());
    let config = dir.path().join("config.toml");

    let mut first = Command::new(env!("CARGO_BIN_EXE_tidings"))
        .args(["poll", "--config"])
        .arg(&config)
        .env_remove("TIDINGS_CONFIG")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Killed once it is fetching (it claimed every feed before that).
    wait_for_fetches(&feeds, 3, 2).await;
    first.kill().unwrap();
    first.wait().unwrap();
    for n in 0..3 {
        feeds.set(&format!("/f{n}.xml"), rss(n));
    }

    // Its connection slots for the host (both of `per_host = 2`) are free again at once.
    let store = tidings::store::Store::open(&dir.path().join("data/tidings.db")).unwrap();
    let limits = tidings::store::FetchLimits {
        per_host: 2,
        concurrency: 16,
    };
    let mut taken = Vec::new();
    for _ in 0..2 {
        let slot = store
            .acquire_fetch_slot(
                "127.0.0.1",
                limits,
                chrono::Utc::now(),
                Duration::from_secs(300),
            )
            .await
            .unwrap();
        taken.push(slot.expect("a slot of the killed poll is free"));
    }
    for slot in &taken {
        store.release_fetch_slot(slot).await.unwrap();
    }
    drop(store);

    let config2 = config.clone();
    let status = tokio::task::spawn_blocking(move || tidings(&config2, &["feeds", "status"]))
        .await
        .unwrap();
    let table = String::from_utf8_lossy(&status.stdout);
    assert!(status.status.success(), "{table}");
    assert!(
        table.contains("polling") && table.contains("which has ended: the next poll takes it over"),
        "{table}"
    );
    assert!(!table.contains(" new "), "{table}");

    let poll = tokio::task::spawn_blocking(move || tidings(&config, &["poll"]))
        .await
        .unwrap();
    let out = String::from_utf8_lossy(&poll.stdout);
    assert!(
        poll.status.success(),
        "{out}{}",
        String::from_utf8_lossy(&poll.stderr)
    );
    assert!(out.contains("polled 3 feeds: 3 ok"), "{out}");
    assert!(!out.contains("alone"), "{out}");
}

/// What this test binary logs, from every thread (the store's calls run on the blocking
/// pool): lines are told apart by the database they name.
fn captured_logs() -> &'static std::sync::Mutex<Vec<u8>> {
    static LOGS: std::sync::OnceLock<&'static std::sync::Mutex<Vec<u8>>> =
        std::sync::OnceLock::new();
    LOGS.get_or_init(|| {
        let logs: &'static std::sync::Mutex<Vec<u8>> = Box::leak(Box::default());
        tracing_subscriber::fmt()
            .with_ansi(false)
            .with_max_level(tracing::Level::INFO)
            .with_writer(move || Capture(logs))
            .init();
        logs
    })
}

struct Capture(&'static std::sync::Mutex<Vec<u8>>);

impl std::io::Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The captured lines that name `database` and say `what`.
fn logged(database: &std::path::Path, what: &str) -> usize {
    let logs = captured_logs().lock().unwrap();
    let database = database.display().to_string();
    String::from_utf8_lossy(&logs)
        .lines()
        .filter(|l| l.contains(&database) && l.contains(what))
        .count()
}

async fn get(url: &str) -> (u16, String) {
    let response = reqwest::get(url).await.unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

/// The daemon's view of a full disk: `/healthz` answers 503 with the database's reason
/// while writes fail, `/metrics` counts the failed writes, and the log says so once when
/// they start and once when they work again, not once a feed a tick.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_says_while_writes_fail_and_the_log_says_it_once() {
    captured_logs();
    let Setup {
        feeds: _feeds,
        smtp: _smtp,
        dir,
        app,
    } = setup(FEEDS, Duration::ZERO).await;
    let database = dir.path().join("data/tidings.db");
    app.metrics.last_tick.set(chrono::Utc::now().timestamp());
    let (_current, app_rx) = tokio::sync::watch::channel(app.clone());
    let stop = tokio_util::sync::CancellationToken::new();
    let addr = tidings::admin::serve("127.0.0.1:0".parse().unwrap(), app_rx, stop.clone())
        .await
        .unwrap();
    let (healthz, metrics) = (
        format!("http://{addr}/healthz"),
        format!("http://{addr}/metrics"),
    );
    let now = at("2026-12-01T12:00:00Z");
    subscribe(&app, "alice@example.org", "asylum", "immediate", now).await;
    assert_eq!(get(&healthz).await.0, 200);

    app.store.limit_growth(Some(12)).await.unwrap();
    let first = poll_feeds(&app, now, true).await.unwrap();
    assert!(first.unrecorded > 1, "{first:?}");
    let (code, body) = get(&healthz).await;
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("database: writes failing since"), "{body}");
    assert!(body.contains("database or disk is full"), "{body}");
    let (_, text) = get(&metrics).await;
    let failures: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("tidings_database_write_failures_total "))
        .unwrap_or_else(|| panic!("no write failures counted in\n{text}"))
        .parse()
        .unwrap();
    assert!(
        failures >= first.unrecorded as u64,
        "{failures} counted for {first:?}"
    );

    // The next tick, still full: the same feeds fail again, and nothing more is logged.
    let second = poll_feeds(&app, now + chrono::Duration::seconds(15), true)
        .await
        .unwrap();
    assert_eq!(second.unrecorded, first.unrecorded, "{second:?}");
    // Probed every few seconds, as a container runtime does: one line, not one a probe.
    for _ in 0..5 {
        assert_eq!(get(&healthz).await.0, 503);
    }
    let all = String::from_utf8_lossy(&captured_logs().lock().unwrap()).to_string();
    assert_eq!(all.matches("health check failing").count(), 1, "{all}");
    assert_eq!(logged(&database, "database writes are failing"), 1);
    assert_eq!(logged(&database, "database writes work again"), 0);
    let all = String::from_utf8_lossy(&captured_logs().lock().unwrap()).to_string();
    assert!(
        !all.contains("could not record poll"),
        "one line for the database, none a feed:\n{all}"
    );

    // Room again: the next tick stores the rest, and health and the log say so.
    app.store.limit_growth(None).await.unwrap();
    let third = poll_feeds(&app, now + chrono::Duration::seconds(30), true)
        .await
        .unwrap();
    assert_eq!((third.unrecorded, third.updated), (0, first.unrecorded));
    let (code, body) = get(&healthz).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(get(&healthz).await.0, 200);
    assert_eq!(logged(&database, "database writes work again"), 1);
    assert_eq!(logged(&database, "database writes are failing"), 1);
    let all = String::from_utf8_lossy(&captured_logs().lock().unwrap()).to_string();
    assert_eq!(
        all.matches("health check passing again").count(),
        1,
        "{all}"
    );
    stop.cancel();
}

/// `tidings` run by someone file modes stop: `nobody` when the tests run as root (whom
/// they do not stop), else the tests' own user.
fn tidings_unprivileged(config: &std::path::Path, args: &[&str]) -> std::process::Output {
    let uid = Command::new("id").arg("-u").output().unwrap();
    let mut command = if String::from_utf8_lossy(&uid.stdout).trim() == "0" {
        let mut c = Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(env!("CARGO_BIN_EXE_tidings"));
        c
    } else {
        Command::new(env!("CARGO_BIN_EXE_tidings"))
    };
    command
        .args(args)
        .arg("--config")
        .arg(config)
        .env_remove("TIDINGS_CONFIG")
        .output()
        .unwrap()
}

fn set_mode(path: &std::path::Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// The files in `dir` and their contents.
fn files(dir: &std::path::Path) -> Vec<(std::ffi::OsString, Vec<u8>)> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (e.file_name(), std::fs::read(e.path()).unwrap())
        })
        .collect();
    files.sort();
    files
}

/// With the database on a read-only filesystem (a folder and file nobody may write), and
/// as a file another user may not write in a folder anyone may, the commands that only
/// look still work: `feeds status`, `subscriber list`, `outbox` and `match`; and nothing
/// at all is written, not even a `-shm` file the owner's daemon could not use.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_commands_that_only_look_work_on_a_read_only_database() {
    let feeds = FeedServer::start().await;
    let smtp = SmtpServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let fresh = chrono::Utc::now().to_rfc2822();
    feeds.set(
        "/news.xml",
        Route::feed(
            "application/rss+xml",
            format!(
                "<?xml version=\"1.0\"?><rss version=\"2.0\"><channel><title>News</title>\
                 <link>https://news.example/</link><description>d</description>\
                 <item><guid>n1</guid><title>Asylum rule changes</title>\
                 <link>https://news.example/1</link><description>New asylum rule.\
                 </description><pubDate>{fresh}</pubDate></item></channel></rss>"
            ),
        ),
    );
    let url = feeds.url("/news.xml");
    write_config_with(dir.path(), &[("news", url.clone())], smtp.port(), "", "");
    let config = dir.path().join("config.toml");
    let run = |args: &[&str]| {
        // The feed server and the SMTP server answer on this runtime's other thread.
        let out = tokio::task::block_in_place(|| tidings(&config, args));
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(&[
        "subscriber",
        "add",
        "alice@example.org",
        "--query",
        "asylum",
    ]);
    run(&["poll"]);
    run(&["digest"]);
    assert_eq!(smtp.wait_for(1, Duration::from_secs(10)).await.len(), 1);

    let data = dir.path().join("data");
    let database = data.join("tidings.db");
    let looks = [
        (&["feeds", "status"][..], "news "),
        (&["subscriber", "list"][..], "alice@example.org"),
        (&["outbox", "--all"][..], "alice@example.org"),
        (&["match", "asylum"][..], "1 of 1 item"),
    ];
    set_mode(dir.path(), 0o755);
    set_mode(&config, 0o644);
    for (case, folder_mode) in [("read-only filesystem", 0o555), ("read-only file", 0o777)] {
        set_mode(&data, folder_mode);
        set_mode(&database, 0o444);
        let before = files(&data);
        for (args, shows) in looks {
            let out = tidings_unprivileged(&config, args);
            let (stdout, stderr) = (
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr),
            );
            assert!(out.status.success(), "{case}, {args:?}: {stderr}");
            assert!(stdout.contains(shows), "{case}, {args:?}: {stdout}");
            assert!(
                stderr.contains("note: the database cannot be written"),
                "{case}, {args:?}: {stderr}"
            );
        }
        // Nothing beside the file either, which would stand in the owner's way.
        assert!(files(&data) == before, "{case}: nothing was written");
        let unchanged = std::fs::read(&database).unwrap();
        assert!(unchanged == before.iter().find(|(n, _)| n == "tidings.db").unwrap().1);
        // Next, a feed added to the config: bringing it in is a write the read-only file
        // refuses (in a folder that may be written, the database reads as usual).
        let feeds = [("news", url.clone()), ("more", feeds.url("/more.xml"))];
        write_config_with(dir.path(), &feeds, smtp.port(), "", "");
        set_mode(&config, 0o644);
    }
    set_mode(&data, 0o755);
    set_mode(&database, 0o644);
}

/// A disk so full that not even giving back a connection slot or a claim fits (every
/// write fails): the poll still ends at once, counting every feed it could not record,
/// rather than waiting out the lease of slots it holds itself; and once writes work, the
/// very next poll gives them back and polls every feed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poll_that_cannot_give_its_slots_back_does_not_wait_for_them() {
    // Four feeds of one host, two at a time (`per_host = 2`).
    let Setup {
        feeds,
        smtp: _smtp,
        dir,
        app,
    } = setup(4, Duration::from_millis(500)).await;
    let now = at("2026-12-01T12:00:00Z");
    let poll = tokio::spawn({
        let app = app.clone();
        async move { poll_feeds(&app, now, false).await }
    });
    wait_for_fetches(&feeds, 4, 2).await;
    app.store.refuse_writes(true).await.unwrap();
    // Well within the 300 s lease the slots would otherwise be waited for.
    let first = tokio::time::timeout(Duration::from_secs(60), poll)
        .await
        .expect("the poll ends without waiting for its own slots")
        .unwrap()
        .unwrap();
    assert_eq!((first.unrecorded, first.updated), (4, 0), "{first:?}");
    let error = format!("{:#}", first.local_failure().unwrap());
    assert!(error.contains("readonly database"), "{error}");

    app.store.refuse_writes(false).await.unwrap();
    let second = poll_feeds(&app, now + chrono::Duration::minutes(1), false)
        .await
        .unwrap();
    assert_eq!((second.updated, second.unrecorded), (4, 0), "{second:?}");
    let db = rusqlite::Connection::open(dir.path().join("data/tidings.db")).unwrap();
    assert_eq!(
        count(
            &db,
            "SELECT COUNT(*) FROM fetch_slots WHERE holder IS NOT NULL"
        ),
        0
    );
    assert_eq!(
        count(&db, "SELECT COUNT(*) FROM feeds WHERE claim IS NOT NULL"),
        0
    );
    assert_eq!(count(&db, "SELECT COUNT(*) FROM items") as usize, 4 * ITEMS);
}

/// Through a link to a database on a read-only filesystem whose write-ahead log holds
/// changes (its writer was killed) and which has no `-shm` file to read them with: a
/// clear refusal, not the database without those changes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_linked_database_whose_log_cannot_be_read_is_refused_not_read_stale() {
    let smtp = SmtpServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    write_config_with(dir.path(), &[], smtp.port(), "", "");
    let config = dir.path().join("config.toml");
    let out = tidings(
        &config,
        &[
            "subscriber",
            "add",
            "alice@example.org",
            "--query",
            "asylum",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (data, real) = (dir.path().join("data"), dir.path().join("real"));
    std::fs::create_dir(&real).unwrap();
    std::fs::rename(data.join("tidings.db"), real.join("tidings.db")).unwrap();
    std::os::unix::fs::symlink(real.join("tidings.db"), data.join("tidings.db")).unwrap();
    // A writer that dies with its change in the log: never closed, so never checkpointed.
    let writer = rusqlite::Connection::open(real.join("tidings.db")).unwrap();
    writer
        .execute_batch(
            "PRAGMA wal_autocheckpoint = 0;
             UPDATE subscribers SET email = 'walbob@example.org';",
        )
        .unwrap();
    std::mem::forget(writer);
    std::fs::remove_file(real.join("tidings.db-shm")).unwrap();
    for (path, mode) in [
        (dir.path(), 0o755),
        (&data, 0o755),
        (&real, 0o555),
        (&real.join("tidings.db"), 0o444),
        (&config, 0o644),
    ] {
        set_mode(path, mode);
    }

    let out = tidings_unprivileged(&config, &["subscriber", "list"]);
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(
        !stdout.contains("alice@example.org"),
        "read stale: {stdout}"
    );
    assert_eq!(out.status.code(), Some(2), "{stdout}{stderr}");
    assert!(stderr.contains("write-ahead log"), "{stderr}");
    set_mode(&real, 0o755);
}

/// A digest round where one subscriber's digest does not fit: the others' that do are
/// still queued and sent, and the round says how many could not be queued and why, so
/// `tidings digest` exits 2.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_digest_that_does_not_fit_holds_up_no_one_else() {
    let Setup {
        feeds: _feeds,
        smtp,
        dir: _dir,
        app,
    } = setup(FEEDS, Duration::ZERO).await;
    let now = at("2026-12-01T12:00:00Z");
    // alice first: every item, a big digest; carol: one short item.
    subscribe(&app, "alice@example.org", "asylum", "immediate", now).await;
    subscribe(
        &app,
        "carol@example.org",
        "\"update 3.1\"",
        "immediate",
        now,
    )
    .await;
    let polled = poll_feeds(&app, now, false).await.unwrap();
    assert_eq!(polled.unrecorded, 0);

    app.store.limit_growth(Some(2)).await.unwrap();
    let round = tidings::send_digests(&app, now + chrono::Duration::minutes(1), false)
        .await
        .unwrap();
    assert_eq!((round.queued, round.unqueued), (1, 1), "{round:?}");
    let error = format!("{:#}", round.local_failure().expect("a local failure"));
    assert!(
        error.contains("1 digest") && error.contains("database or disk is full"),
        "{error}"
    );
    let sent = smtp.wait_for(1, Duration::from_secs(10)).await;
    assert_eq!(sent[0].rcpt_to, ["carol@example.org"]);

    // Room again: alice's digest goes with the next round, whole.
    app.store.limit_growth(None).await.unwrap();
    let next = tidings::send_digests(&app, now + chrono::Duration::minutes(2), false)
        .await
        .unwrap();
    assert_eq!((next.queued, next.unqueued), (1, 0), "{next:?}");
    assert!(next.local_failure().is_none());
    assert_eq!(smtp.wait_for(2, Duration::from_secs(10)).await.len(), 2);
}

/// Health follows the work, not one call's name: while the disk stays full, a digest
/// round in which one subscriber's digest goes through in place and another's does not
/// fit is not "working again"; and a feed whose items did not fit is not written until
/// they are stored: its next poll failing on the publisher's side (written in place)
/// does not clear it, the one that stores the items does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_clears_when_the_work_that_failed_is_written_and_not_before() {
    captured_logs();
    let Setup {
        feeds,
        smtp: _smtp,
        dir,
        app,
    } = setup(FEEDS, Duration::ZERO).await;
    let database = dir.path().join("data/tidings.db");
    let now = at("2026-12-01T12:00:00Z");
    // bob first: daily, nothing matches; alice: immediate, a big digest.
    subscribe(&app, "bob@example.org", "zebra", "daily 08:00", now).await;
    subscribe(&app, "alice@example.org", "asylum", "immediate", now).await;
    let polled = poll_feeds(&app, now, true).await.unwrap();
    assert_eq!(polled.unrecorded, 0);

    app.store.limit_growth(Some(0)).await.unwrap();
    let first = tidings::send_digests(&app, now + chrono::Duration::minutes(1), false)
        .await
        .unwrap();
    assert_eq!(first.unqueued, 1, "{first:?}");
    assert!(app.store.write_trouble().is_some());
    // 13:30 UTC: bob's daily digest is due (08:00 in New York), nothing in it; still full.
    let second = tidings::send_digests(&app, at("2026-12-01T13:30:00Z"), false)
        .await
        .unwrap();
    assert_eq!(second.unqueued, 1, "{second:?}");
    assert!(
        app.store.write_trouble().is_some(),
        "alice's digest is still not written"
    );
    assert_eq!(
        (
            logged(&database, "database writes are failing"),
            logged(&database, "database writes work again")
        ),
        (1, 0)
    );
    app.store.limit_growth(None).await.unwrap();
    let third = tidings::send_digests(&app, at("2026-12-01T13:31:00Z"), false)
        .await
        .unwrap();
    assert_eq!((third.queued, third.unqueued), (1, 0), "{third:?}");
    assert_eq!(app.store.write_trouble(), None);

    // New items that do not fit; then, room made, the publisher fails instead.
    for n in 0..FEEDS {
        let path = format!("/f{n}.xml");
        feeds.set(&path, rss(n + 100));
    }
    app.store.limit_growth(Some(0)).await.unwrap();
    let later = now + chrono::Duration::hours(2);
    let full = poll_feeds(&app, later, false).await.unwrap();
    assert!(full.unrecorded > 0, "{full:?}");
    assert!(app.store.write_trouble().is_some());
    app.store.limit_growth(None).await.unwrap();
    for n in 0..FEEDS {
        feeds.set(&format!("/f{n}.xml"), Route::status(500, "down"));
    }
    let failed = poll_feeds(&app, later + chrono::Duration::minutes(1), false)
        .await
        .unwrap();
    assert_eq!((failed.failed, failed.unrecorded), (FEEDS, 0), "{failed:?}");
    assert!(
        app.store.write_trouble().is_some(),
        "a failure written in place says nothing of room for the items that did not fit"
    );
    for n in 0..FEEDS {
        feeds.set(&format!("/f{n}.xml"), rss(n + 100));
    }
    let stored = poll_feeds(&app, later + chrono::Duration::minutes(30), false)
        .await
        .unwrap();
    // Those whose items fit the first time have them already.
    assert_eq!(
        (stored.updated + stored.not_modified, stored.unrecorded),
        (FEEDS, 0),
        "{stored:?}"
    );
    assert_eq!(
        app.store.write_trouble(),
        None,
        "every feed's items are stored"
    );
    assert_eq!(logged(&database, "database writes work again"), 2);
}

/// The mail server took a digest, but the database could not record it as sent (every
/// write refused while the server's reply was on its way): the outcome is kept and
/// written before any more mail is claimed, so the digest is not sent again once the
/// database can be written, not even after the message's lease has run out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sent_digest_the_database_could_not_record_is_not_sent_again() {
    let Setup {
        feeds: _feeds,
        smtp,
        dir,
        app,
    } = setup(1, Duration::ZERO).await;
    let now = at("2026-12-01T12:00:00Z");
    subscribe(&app, "alice@example.org", "asylum", "immediate", now).await;
    poll_feeds(&app, now, false).await.unwrap();

    // The server has the message before it answers; writes stop in between.
    smtp.set_data_delay(Duration::from_secs(2));
    let round = tokio::spawn({
        let app = app.clone();
        async move { tidings::send_digests(&app, now + chrono::Duration::minutes(1), false).await }
    });
    assert_eq!(smtp.wait_for(1, Duration::from_secs(10)).await.len(), 1);
    app.store.refuse_writes(true).await.unwrap();
    let during = round.await.unwrap();
    assert!(during.is_err() || during.as_ref().unwrap().local_failure().is_some());
    assert!(app.store.write_trouble().is_some());

    // Writes work again, long after the message's lease ran out.
    app.store.refuse_writes(false).await.unwrap();
    smtp.set_data_delay(Duration::ZERO);
    let after = tidings::send_digests(&app, now + chrono::Duration::hours(1), false)
        .await
        .unwrap();
    assert_eq!(after.delivery.sent, 0, "{after:?}");
    assert!(after.local_failure().is_none(), "{after:?}");
    assert_eq!(
        smtp.wait_for(2, Duration::from_secs(3)).await.len(),
        1,
        "the digest went out twice"
    );
    let db = rusqlite::Connection::open(dir.path().join("data/tidings.db")).unwrap();
    assert_eq!(
        count(&db, "SELECT COUNT(*) FROM outbox WHERE status = 'sent'"),
        1
    );
    assert_eq!(app.store.write_trouble(), None);
}

/// The disk stays full all along: a feed's new items never fit, while in between its
/// publisher fails and that failure is written in place. Health stays "failing" (one
/// log line) rather than flapping with each publisher error; once there is room and
/// the items are stored, it clears (one more line).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_does_not_flap_while_the_disk_stays_full() {
    captured_logs();
    let Setup {
        feeds,
        smtp: _smtp,
        dir,
        app,
    } = setup(1, Duration::ZERO).await;
    let database = dir.path().join("data/tidings.db");
    let now = at("2026-12-01T12:00:00Z");
    assert_eq!(poll_feeds(&app, now, false).await.unwrap().unrecorded, 0);

    app.store.limit_growth(Some(0)).await.unwrap();
    let mut failing = vec![];
    for tick in 1..=5 {
        let route = if tick % 2 == 1 {
            rss(tick)
        } else {
            Route::status(500, "oops")
        };
        feeds.set("/f0.xml", route);
        let later = now + chrono::Duration::minutes(tick as i64 * 10);
        let polled = poll_feeds(&app, later, false).await.unwrap();
        assert_eq!(polled.failed, 1, "tick {tick}: {polled:?}");
        failing.push(app.store.write_trouble().is_some());
    }
    assert_eq!(failing, [true; 5]);
    assert_eq!(
        (
            logged(&database, "database writes are failing"),
            logged(&database, "database writes work again")
        ),
        (1, 0)
    );

    app.store.limit_growth(None).await.unwrap();
    feeds.set("/f0.xml", rss(7));
    let stored = poll_feeds(&app, now + chrono::Duration::hours(1), false)
        .await
        .unwrap();
    assert_eq!((stored.updated, stored.unrecorded), (1, 0), "{stored:?}");
    assert_eq!(app.store.write_trouble(), None);
    assert_eq!(logged(&database, "database writes work again"), 1);
}

/// One subscriber whose stored row this build cannot read (a time zone it does not
/// know) fails their own digest, every round, and no one else's: the round goes on,
/// counts it, and is a local failure (`tidings digest` exits 2) naming why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_subscriber_that_cannot_be_read_holds_up_no_one_else() {
    let Setup {
        feeds: _feeds,
        smtp,
        dir,
        app,
    } = setup(1, Duration::ZERO).await;
    let now = at("2026-12-01T12:00:00Z");
    subscribe(&app, "alice@example.org", "asylum", "immediate", now).await;
    subscribe(&app, "carol@example.org", "asylum", "immediate", now).await;
    assert_eq!(poll_feeds(&app, now, false).await.unwrap().unrecorded, 0);
    let db = rusqlite::Connection::open(dir.path().join("data/tidings.db")).unwrap();
    db.execute(
        "UPDATE subscribers SET timezone = 'Mars/Olympus_Mons' WHERE email = 'alice@example.org'",
        [],
    )
    .unwrap();

    for round in 1..=2 {
        let done = tidings::send_digests(&app, now + chrono::Duration::minutes(round), false)
            .await
            .unwrap();
        assert_eq!(done.queued, 2 - round as usize, "round {round}: {done:?}");
        let error = format!("{:#}", done.local_failure().expect("a local failure"));
        assert!(error.contains("Mars/Olympus_Mons"), "{error}");
    }
    let sent = smtp.wait_for(1, Duration::from_secs(10)).await;
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].rcpt_to, ["carol@example.org"]);
}

/// A feed whose items did not fit is then removed from the config: its poll will never
/// be written, so once the new feed list is in, health no longer waits for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_feed_removed_from_the_config_is_no_longer_waited_for() {
    let Setup {
        feeds,
        smtp,
        dir,
        app,
    } = setup(2, Duration::ZERO).await;
    let now = at("2026-12-01T12:00:00Z");
    assert_eq!(poll_feeds(&app, now, false).await.unwrap().unrecorded, 0);
    feeds.set("/f1.xml", rss(11));
    app.store.limit_growth(Some(0)).await.unwrap();
    let full = poll_feeds(&app, now + chrono::Duration::minutes(10), false)
        .await
        .unwrap();
    assert_eq!(full.unrecorded, 1, "{full:?}");
    assert!(app.store.write_trouble().is_some());

    app.store.limit_growth(None).await.unwrap();
    let config = write_config_with(
        dir.path(),
        &[("f0", feeds.url("/f0.xml"))],
        smtp.port(),
        "",
        "",
    );
    let app = app.reconfigure(config).await.unwrap();
    assert_eq!(app.store.write_trouble(), None);
}

/// A database, written by a process still at work (its changes in the write-ahead log),
/// whose shared-memory file this user may not read: a clear refusal naming that file,
/// not SQLite's "unable to open database file".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_whose_shared_memory_cannot_be_read_is_refused_clearly() {
    let smtp = SmtpServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    write_config_with(dir.path(), &[], smtp.port(), "", "");
    let config = dir.path().join("config.toml");
    let out = tidings(
        &config,
        &[
            "subscriber",
            "add",
            "alice@example.org",
            "--query",
            "asylum",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let data = dir.path().join("data");
    let database = data.join("tidings.db");
    // The writer at work: its change in the log, not yet checkpointed.
    let writer = rusqlite::Connection::open(&database).unwrap();
    writer
        .execute_batch(
            "PRAGMA wal_autocheckpoint = 0;
             UPDATE subscribers SET email = 'walbob@example.org';",
        )
        .unwrap();
    let shm = data.join("tidings.db-shm");
    for (path, mode) in [
        (dir.path(), 0o755),
        (&data, 0o755),
        (&database, 0o644),
        (&shm, 0o000),
        (&config, 0o644),
    ] {
        set_mode(path, mode);
    }
    let out = tidings_unprivileged(&config, &["subscriber", "list"]);
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    set_mode(&shm, 0o644);
    drop(writer);
    assert_eq!(out.status.code(), Some(2), "{stdout}{stderr}");
    assert!(
        !stdout.contains("alice@example.org"),
        "read stale: {stdout}"
    );
    assert!(
        stderr.contains(&shm.display().to_string()) && stderr.contains("cannot read"),
        "{stderr}"
    );
}

/// A damaged database read by a command that only looks: the error says so, and the
/// command does not log that "database writes are failing" (it writes nothing).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_read_only_database_is_not_write_trouble() {
    let smtp = SmtpServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    write_config_with(dir.path(), &[], smtp.port(), "", "");
    let config = dir.path().join("config.toml");
    let out = tidings(
        &config,
        &[
            "subscriber",
            "add",
            "alice@example.org",
            "--query",
            "asylum",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let data = dir.path().join("data");
    let database = data.join("tidings.db");
    // Every page but the first (the header and the schema) overwritten.
    let mut bytes = std::fs::read(&database).unwrap();
    let page = u16::from_be_bytes([bytes[16], bytes[17]]) as usize;
    assert!(bytes.len() > 2 * page, "more than one page");
    bytes[page..].fill(0xA5);
    std::fs::write(&database, &bytes).unwrap();
    for (path, mode) in [
        (dir.path(), 0o755),
        (&data, 0o555),
        (&database, 0o444),
        (&config, 0o644),
    ] {
        set_mode(path, mode);
    }
    let out = tidings_unprivileged(&config, &["subscriber", "list"]);
    set_mode(&data, 0o755);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("malformed"), "{stderr}");
    assert!(!stderr.contains("writes are failing"), "{stderr}");
}

/// Two digests sent in one batch, paced a second apart: the first is with the mail
/// server, awaiting its answer, when writes stop and the second cannot take its turn.
/// The round ends with the error only once the first's answer is in (and kept), so the
/// first is not sent again and the second goes with the next round.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_that_fails_midway_waits_for_the_messages_in_flight() {
    let feeds = FeedServer::start().await;
    let smtp = SmtpServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    feeds.set("/f0.xml", rss(0));
    let config = write_config_with(
        dir.path(),
        &[("f0", feeds.url("/f0.xml"))],
        smtp.port(),
        "rate_limit = 60\nconcurrency = 2",
        "",
    );
    let app = App::open(config).await.unwrap();
    let now = at("2026-12-01T12:00:00Z");
    subscribe(&app, "alice@example.org", "asylum", "immediate", now).await;
    subscribe(&app, "carol@example.org", "asylum", "immediate", now).await;
    poll_feeds(&app, now, false).await.unwrap();
    // Both queued, both deferred: the next delivery takes them as one batch.
    smtp.fail_next(2, 451, "try again later");
    let deferred = tidings::send_digests(&app, now, false).await.unwrap();
    assert_eq!(
        (deferred.queued, deferred.delivery.retrying),
        (2, 2),
        "{deferred:?}"
    );

    smtp.set_data_delay(Duration::from_secs(4));
    let later = now + chrono::Duration::hours(1);
    let round = tokio::spawn({
        let app = app.clone();
        async move { tidings::pipeline::send_mail(&app, later).await }
    });
    assert_eq!(smtp.wait_for(1, Duration::from_secs(10)).await.len(), 1);
    app.store.refuse_writes(true).await.unwrap();
    assert!(round.await.unwrap().is_err());

    app.store.refuse_writes(false).await.unwrap();
    smtp.set_data_delay(Duration::ZERO);
    let after = tidings::pipeline::send_mail(&app, later + chrono::Duration::hours(1))
        .await
        .unwrap();
    assert_eq!(after.sent, 1, "{after:?}");
    let got = smtp.wait_for(3, Duration::from_secs(3)).await;
    let mut to: Vec<_> = got.iter().map(|m| m.rcpt_to.join(",")).collect();
    to.sort();
    assert_eq!(to, ["alice@example.org", "carol@example.org"], "one each");
}

/// One process, two jobs at once (the daemon's poll beside its digest round) after
/// writes work again: the poll starts writing what was kept (its slots, then a
/// delivery's outcome), and the digest round, a moment later, waits for that before it
/// claims mail, rather than finding nothing kept and sending the digest again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_was_kept_is_written_before_any_job_claims() {
    let Setup {
        feeds: _feeds,
        smtp,
        dir: _dir,
        app,
    } = setup(1, Duration::ZERO).await;
    let now = at("2026-12-01T12:00:00Z");
    subscribe(&app, "alice@example.org", "asylum", "immediate", now).await;
    poll_feeds(&app, now, false).await.unwrap();
    let limits = tidings::store::FetchLimits {
        per_host: 1000,
        concurrency: 1000,
    };
    let lease = Duration::from_secs(300);
    let mut slots = Vec::new();
    for _ in 0..60 {
        let slot = app
            .store
            .acquire_fetch_slot("news.example", limits, chrono::Utc::now(), lease)
            .await
            .unwrap()
            .expect("a slot");
        slots.push(slot);
    }
    // The digest is with the mail server when writes stop: the slots cannot be given
    // back, nor the server's answer recorded.
    smtp.set_data_delay(Duration::from_secs(2));
    let round = tokio::spawn({
        let app = app.clone();
        async move { tidings::send_digests(&app, now + chrono::Duration::minutes(1), false).await }
    });
    assert_eq!(smtp.wait_for(1, Duration::from_secs(10)).await.len(), 1);
    app.store.refuse_writes(true).await.unwrap();
    for slot in &slots {
        assert!(app.store.release_fetch_slot(slot).await.is_err());
    }
    let _ = round.await.unwrap();
    smtp.set_data_delay(Duration::ZERO);

    app.store.refuse_writes(false).await.unwrap();
    let later = now + chrono::Duration::hours(1);
    let (slot, mail) = tokio::join!(
        app.store
            .acquire_fetch_slot("news.example", limits, chrono::Utc::now(), lease),
        tidings::pipeline::send_mail(&app, later),
    );
    assert!(slot.unwrap().is_some());
    let mail = mail.unwrap();
    assert_eq!(mail.sent, 0, "{mail:?}");
    assert_eq!(smtp.wait_for(2, Duration::from_secs(3)).await.len(), 1);
}

mod full_text {
    use super::*;
    use support::articles::{Teaser, app, feed_table, page, public_server, rss, status};
    use tidings::pipeline::fetch_articles;

    /// An article whose result the database would not take, nor its claim's release:
    /// the release is kept and written before the next claim, so the first round after
    /// room is made fetches and writes it (not once its lease has run out), and health
    /// clears with it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_article_the_database_refused_is_read_by_the_first_round_after() {
        let site = public_server().await;
        let smtp = SmtpServer::start().await;
        let dir = tempfile::tempdir().unwrap();
        let now = at("2026-11-30T15:00:00Z");
        let story = "/2026/11/30/story/";
        site.set(
            story,
            page(support::fixture("article-wordpress.html")).delay(Duration::from_millis(1000)),
        );
        let teasers = [Teaser {
            guid: "ead",
            title: "USCIS extends work permits",
            link: site.url(story),
            summary: "USCIS announced a change for some applicants.",
        }];
        site.set("/feed.xml", rss(&teasers, now));
        let feeds = feed_table("daily", &site.url("/feed.xml"), "");
        let app = app(dir.path(), "full_text = true", &feeds, smtp.port()).await;
        subscribe(&app, "body@example.org", "Bodyonlyword", "immediate", now).await;
        assert_eq!(poll_feeds(&app, now, false).await.unwrap().new_items, 1);

        let round = tokio::spawn({
            let app = app.clone();
            async move { fetch_articles(&app, now).await }
        });
        let waited = std::time::Instant::now();
        while site.hits(story) == 0 {
            assert!(
                waited.elapsed() < Duration::from_secs(20),
                "article fetched"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        app.store.refuse_writes(true).await.unwrap();
        let during = round.await.unwrap();
        site.set(story, page(support::fixture("article-wordpress.html")));
        assert!(app.store.write_trouble().is_some(), "{during:?}");

        // Room again; the article round's next tick (they run every minute or so).
        app.store.refuse_writes(false).await.unwrap();
        let next = fetch_articles(&app, now + chrono::Duration::minutes(1))
            .await
            .unwrap();
        assert_eq!((next.articles, next.ok), (1, 1), "{next:?}");
        assert_eq!(status(&app, "daily").await.articles.pending, 0);
        assert_eq!(app.store.write_trouble(), None, "{next:?}");
    }

    /// An article whose story the database would not take (a full disk) is a local
    /// failure of the round, saying how many and why (`tidings poll`, which reads the
    /// articles after polling, exits 2), not counted as left for later.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_article_the_database_would_not_take_is_a_local_failure() {
        let site = public_server().await;
        let smtp = SmtpServer::start().await;
        let dir = tempfile::tempdir().unwrap();
        let now = at("2026-11-30T15:00:00Z");
        let story = "/2026/11/30/story/";
        // A long story: far more than the free pages of the file hold.
        let paragraphs: String = (0..400)
            .map(|i| {
                format!(
                    "<p>Paragraph {i}: Bodyonlyword officials said the work permits of \
                     applicants {i} would be extended while their cases are pending.</p>"
                )
            })
            .collect();
        site.set(
            story,
            page(format!(
                "<html><head><title>Story</title></head><body><article><h1>USCIS extends \
                 work permits</h1>{paragraphs}</article></body></html>"
            )),
        );
        let teasers = [Teaser {
            guid: "ead",
            title: "USCIS extends work permits",
            link: site.url(story),
            summary: "USCIS announced a change for some applicants.",
        }];
        site.set("/feed.xml", rss(&teasers, now));
        let feeds = feed_table("daily", &site.url("/feed.xml"), "");
        let app = app(dir.path(), "full_text = true", &feeds, smtp.port()).await;
        subscribe(&app, "body@example.org", "Bodyonlyword", "immediate", now).await;
        assert_eq!(poll_feeds(&app, now, false).await.unwrap().new_items, 1);

        app.store.limit_growth(Some(0)).await.unwrap();
        let read = fetch_articles(&app, now).await;
        let pending = status(&app, "daily").await.articles.pending;
        let trouble = app.store.write_trouble();
        assert_eq!(pending, 1, "the story did not fit: {read:?}");
        assert!(trouble.is_some());
        let read = read.unwrap();
        assert_eq!((read.unrecorded, read.skipped), (1, 0), "{read:?}");
        let error = format!("{:#}", read.local_failure().expect("a local failure"));
        assert!(
            error.contains("1 article") && error.contains("database or disk is full"),
            "{error}"
        );
    }
}

/// A process ending while it holds a delivery's result the database refused: it writes
/// it first if the database now takes it, so the next run does not send the digest
/// again; if it still cannot, the log names the message that will go again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_writes_what_it_kept_before_it_ends_or_names_what_is_lost() {
    captured_logs();
    let Setup {
        feeds: _feeds,
        smtp,
        dir,
        app,
    } = setup(1, Duration::ZERO).await;
    let now = at("2026-12-01T12:00:00Z");
    subscribe(&app, "alice@example.org", "asylum", "immediate", now).await;
    poll_feeds(&app, now, false).await.unwrap();
    smtp.set_data_delay(Duration::from_secs(2));
    let round = tokio::spawn({
        let app = app.clone();
        async move { tidings::send_digests(&app, now + chrono::Duration::minutes(1), false).await }
    });
    assert_eq!(smtp.wait_for(1, Duration::from_secs(10)).await.len(), 1);
    app.store.refuse_writes(true).await.unwrap();
    assert!(round.await.unwrap().is_err());
    smtp.set_data_delay(Duration::ZERO);

    // Ending while writes still fail: an error, and the message named.
    assert!(app.store.write_kept(Duration::from_secs(30)).await.is_err());
    let all = String::from_utf8_lossy(&captured_logs().lock().unwrap()).to_string();
    let line = all
        .lines()
        .find(|l| l.contains("could not be written before exiting"))
        .unwrap_or_else(|| panic!("no line names the message:\n{all}"));
    let db = rusqlite::Connection::open(dir.path().join("data/tidings.db")).unwrap();
    let id = count(
        &db,
        "SELECT id FROM outbox WHERE recipient = 'alice@example.org'",
    );
    assert!(line.contains(&format!("outbox={id}")), "{line}");

    // Ending once they work: written, and the next run sends nothing again.
    app.store.refuse_writes(false).await.unwrap();
    app.store.write_kept(Duration::from_secs(30)).await.unwrap();
    let config = app.config.as_ref().clone();
    drop(app);
    let next = App::open(config).await.unwrap();
    let later = tidings::send_digests(&next, now + chrono::Duration::hours(1), false)
        .await
        .unwrap();
    assert_eq!(later.delivery.sent, 0, "{later:?}");
    assert_eq!(smtp.wait_for(2, Duration::from_secs(3)).await.len(), 1);
}

/// On PostgreSQL, as on SQLite, an error of the client's own (a query that found no row
/// where one was expected, a value that does not convert) is not the database being
/// unavailable: no write trouble, nothing kept to retry. A connection that is gone is.
#[test]
fn a_postgres_error_that_is_not_the_database_being_away_is_not_write_trouble() {
    let Some(server) = support::postgres::PgServer::start_or_skip("unavailable()") else {
        return;
    };
    let url = server.fresh_database();
    let mut client = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    let no_row = client
        .query_one("SELECT 1 WHERE false", &[])
        .expect_err("no row");
    let wrong_type = client
        .query_one("SELECT 'x'::text", &[])
        .unwrap()
        .try_get::<_, i32>(0)
        .expect_err("not an integer");
    // The same on SQLite, for comparison.
    let sqlite = rusqlite::Connection::open_in_memory().unwrap();
    let sqlite_no_row = sqlite
        .query_row("SELECT 1 WHERE 0", [], |r| r.get::<_, i64>(0))
        .expect_err("no row");
    let sqlite_wrong_type = sqlite
        .query_row("SELECT 'x'", [], |r| r.get::<_, i64>(0))
        .expect_err("not an integer");
    let judged: Vec<(String, Option<String>)> = [
        anyhow::Error::new(no_row).context("recording a delivery"),
        anyhow::Error::new(wrong_type).context("reading subscriber 7"),
        anyhow::Error::new(sqlite_no_row).context("recording a delivery"),
        anyhow::Error::new(sqlite_wrong_type).context("reading subscriber 7"),
    ]
    .into_iter()
    .map(|e| (format!("{e:#}"), tidings::store::unavailable(&e)))
    .collect();
    assert!(
        judged.iter().all(|(_, unavailable)| unavailable.is_none()),
        "judged as the database being unwritable: {judged:#?}"
    );
    // The server going away under an open connection is.
    let mut doomed = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    let pid: i32 = doomed
        .query_one("SELECT pg_backend_pid()", &[])
        .unwrap()
        .get(0);
    client
        .execute("SELECT pg_terminate_backend($1)", &[&pid])
        .unwrap();
    let gone = doomed.execute("SELECT 1", &[]).expect_err("terminated");
    let gone = anyhow::Error::new(gone).context("recording a delivery");
    assert!(
        tidings::store::unavailable(&gone).is_some(),
        "a lost connection: {gone:#}"
    );
}

async fn app_with_an_empty_feed(
    dir: &std::path::Path,
    feeds: &FeedServer,
    smtp: &SmtpServer,
) -> App {
    feeds.set(
        "/f0.xml",
        support::Route::feed(
            "application/rss+xml",
            "<?xml version=\"1.0\"?><rss version=\"2.0\"><channel><title>F</title>\
             <link>https://n.example/</link><description>d</description></channel></rss>",
        ),
    );
    let config = write_config_with(dir, &[("f0", feeds.url("/f0.xml"))], smtp.port(), "", "");
    App::open(config).await.unwrap()
}

/// Two delivery results the database refused are kept. The next claim_mail writes them
/// first; its caller gives up on it while the first is waiting for a lock another
/// process holds (a timeout, a `select!`): the writing goes on to its end, so neither
/// result is dropped and neither message is claimed (and sent) again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_given_up_while_writing_kept_results_loses_none() {
    let feeds = FeedServer::start().await;
    let smtp = SmtpServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let app = app_with_an_empty_feed(dir.path(), &feeds, &smtp).await;
    let store = app.store.clone();
    let now = at("2026-12-01T12:00:00Z");
    for to in ["a@example.org", "b@example.org"] {
        store
            .queue_message(to, "s", "t", "<p>t</p>", "example.org", now)
            .await
            .unwrap();
    }
    let lease = Duration::from_secs(60);
    let rows = store.claim_mail(now, lease, 10).await.unwrap();
    assert_eq!(rows.len(), 2);
    // Both were sent; the database refuses both results: both kept.
    store.refuse_writes(true).await.unwrap();
    for row in &rows {
        assert!(
            store
                .mark_sent(row.id, row.claim.as_deref(), now)
                .await
                .is_err()
        );
    }
    store.refuse_writes(false).await.unwrap();

    // Another process holds the write lock for a while (a backup, a migration).
    let path = dir.path().join("data/tidings.db");
    let other = rusqlite::Connection::open(&path).unwrap();
    other.execute_batch("BEGIN IMMEDIATE").unwrap();
    let cancelled = tokio::time::timeout(
        Duration::from_millis(1500),
        store.claim_mail(now + chrono::Duration::seconds(1), lease, 10),
    )
    .await;
    assert!(
        cancelled.is_err(),
        "the claim was still waiting for the lock"
    );
    other.execute_batch("ROLLBACK").unwrap();
    drop(other);

    // The write in flight runs to its end on the blocking pool.
    let db = rusqlite::Connection::open(&path).unwrap();
    let waited = std::time::Instant::now();
    while count(&db, "SELECT COUNT(*) FROM outbox WHERE status = 'sent'") == 0 {
        assert!(
            waited.elapsed() < Duration::from_secs(30),
            "the first kept result is written"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Exiting now: write_kept has nothing left, and says nothing.
    let kept = store.write_kept(Duration::from_secs(30)).await;
    let sent = count(&db, "SELECT COUNT(*) FROM outbox WHERE status = 'sent'");
    let again = store
        .claim_mail(now + chrono::Duration::hours(1), lease, 10)
        .await
        .unwrap();
    assert!(
        sent == 2 || kept.is_err(),
        "a delivery result was dropped silently: {sent} of 2 recorded as sent, write_kept \
         = {kept:?}, and {} message(s) the server took are claimed to be sent again: {:?}",
        again.len(),
        again.iter().map(|m| &m.recipient).collect::<Vec<_>>()
    );
}

/// The disk is full (no page can be added), yet claims and in-place writes still fit.
/// One delivery result kept because it needs room (a long server reply as its error)
/// holds up the claims of mail, not those of feeds or connection slots: polling goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_kept_result_that_needs_room_holds_up_only_mail() {
    let feeds = FeedServer::start().await;
    let smtp = SmtpServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let app = app_with_an_empty_feed(dir.path(), &feeds, &smtp).await;
    let store = app.store.clone();
    let now = at("2026-12-01T12:00:00Z");
    tidings::poll_feeds(&app, now, false).await.unwrap();
    store
        .queue_message("a@example.org", "s", "t", "<p>t</p>", "example.org", now)
        .await
        .unwrap();
    let lease = Duration::from_secs(60);
    let rows = store.claim_mail(now, lease, 10).await.unwrap();
    assert_eq!(rows.len(), 1);

    // The disk fills up.
    store.limit_growth(Some(0)).await.unwrap();
    // A claim fits: it changes a row in place.
    let later = now + chrono::Duration::hours(2);
    let claimed = store.claim_feeds(later, lease, false).await.unwrap();
    assert_eq!(claimed.len(), 1, "a feed claim fits on the full disk");
    store.release_claim(&claimed[0]).await.unwrap();

    // The mail server deferred the message with a long reply: the retry does not fit.
    let reply = "451 4.3.0 try again later; ".repeat(2000);
    let retry = store
        .mark_retry(
            rows[0].id,
            rows[0].claim.as_deref(),
            &reply,
            now + chrono::Duration::minutes(5),
        )
        .await;
    assert!(retry.is_err(), "the long reply needs pages: {retry:?}");

    // Now nothing is claimed any more, though each claim alone would fit.
    let feeds_claim = store.claim_feeds(later, lease, false).await;
    let limits = tidings::store::FetchLimits {
        per_host: 10,
        concurrency: 10,
    };
    let slot = store
        .acquire_fetch_slot("n.example", limits, later, lease)
        .await;
    let poll = tidings::poll_feeds(&app, later, false).await;
    assert!(
        feeds_claim.is_ok() && slot.is_ok(),
        "a mail's kept outcome blocks feed claims and fetch slots: claim_feeds = {:?}, \
         acquire_fetch_slot = {:?}, poll_feeds = {:?}",
        feeds_claim.map(|f| f.len()).map_err(|e| format!("{e:#}")),
        slot.map(|s| s.is_some()).map_err(|e| format!("{e:#}")),
        poll.map(|p| format!("{p:?}")).map_err(|e| format!("{e:#}")),
    );
}

/// `tidings digest` ends while it holds a delivery result the database would not take
/// (another process held the write lock past the busy timeout while the mail server
/// answered), its round ending in that error: it still names the message lost with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_digest_round_that_fails_still_names_the_message_it_loses() {
    let feeds = FeedServer::start().await;
    let smtp = SmtpServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let app = app_with_an_empty_feed(dir.path(), &feeds, &smtp).await;
    let now = chrono::Utc::now();
    let id = app
        .store
        .queue_message("a@example.org", "s", "t", "<p>t</p>", "example.org", now)
        .await
        .unwrap();
    drop(app);
    smtp.set_data_delay(Duration::from_secs(3));
    let config = dir.path().join("config.toml");
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_tidings"))
        .args(["digest", "--config"])
        .arg(&config)
        .env_remove("TIDINGS_CONFIG")
        .env("RUST_LOG", "info")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    assert_eq!(smtp.wait_for(1, Duration::from_secs(20)).await.len(), 1);
    // The server has the message; another process takes the write lock until the
    // digest command has ended.
    let path = dir.path().join("data/tidings.db");
    let other = rusqlite::Connection::open(&path).unwrap();
    other.busy_timeout(Duration::from_secs(10)).unwrap();
    other.execute_batch("BEGIN IMMEDIATE").unwrap();
    let out = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
        .await
        .unwrap();
    other.execute_batch("ROLLBACK").unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let db = rusqlite::Connection::open(&path).unwrap();
    let status: String = db
        .query_row("SELECT status FROM outbox WHERE id = ?1", [id.0], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(status, "pending", "the result was lost with the process");
    assert!(
        stderr.contains("could not be written before exiting"),
        "exit {:?}; message {} was sent but its result died with the process, and no \
         line names it.\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status,
        id.0
    );
}
