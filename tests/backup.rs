//! `tidings backup PATH`: consistent copies of a database the running daemon is writing
//! to, and an existing PATH never replaced without `--force`. The real binary, a real
//! feed server on loopback, real SQLite files.

mod support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use support::{FeedServer, Route};

const FEEDS: usize = 40;
const ITEMS: usize = 50;
const WORDS: [&str; 4] = ["Asylum", "Visa", "Parole", "Citizenship"];

fn tidings(args: &[&str], config: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tidings"))
        .args(args)
        .arg("--config")
        .arg(config)
        .env_remove("TIDINGS_CONFIG")
        .output()
        .expect("run tidings")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Feed `n`: `ITEMS` items, a quarter of them about asylum.
fn feed(n: usize) -> Route {
    let now = chrono::Utc::now();
    let items: String = (0..ITEMS)
        .map(|i| {
            let word = WORDS[(n + i) % WORDS.len()];
            format!(
                "<item><guid>f{n}-{i}</guid><title>{word} notice {n}-{i}</title>\
                 <link>https://agency.example/{n}/{i}</link>\
                 <description>{word} update number {i} from agency {n}.</description>\
                 <pubDate>{}</pubDate></item>",
                (now - chrono::Duration::minutes(i as i64)).to_rfc2822()
            )
        })
        .collect();
    Route::feed(
        "application/rss+xml",
        format!(
            "<?xml version=\"1.0\"?><rss version=\"2.0\"><channel><title>Agency {n}</title>\
             <link>https://agency.example/{n}</link><description>d</description>{items}\
             </channel></rss>"
        ),
    )
}

/// What a copy holds, after checking it is sound.
#[derive(Debug)]
struct Checked {
    items: BTreeSet<(String, String)>,
}

/// Opens a database file and checks it: intact, no dangling references, each feed's items
/// all there or none (a poll is one transaction), and every asylum item matched (an item
/// and its matches are one transaction too).
fn check(path: &Path) -> Checked {
    let db = rusqlite::Connection::open(path).unwrap();
    let integrity: String = db
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(integrity, "ok", "{}", path.display());
    let dangling = db
        .prepare("PRAGMA foreign_key_check")
        .unwrap()
        .query_map([], |r| r.get::<_, String>(0))
        .unwrap()
        .count();
    assert_eq!(dangling, 0, "dangling references in {}", path.display());
    let per_feed: Vec<(String, i64)> = db
        .prepare("SELECT feed_id, COUNT(*) FROM items GROUP BY feed_id")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    for (feed, n) in &per_feed {
        assert_eq!(
            *n,
            ITEMS as i64,
            "feed {feed} half stored in {}",
            path.display()
        );
    }
    let (asylum, matched): (i64, i64) = db
        .query_row(
            "SELECT (SELECT COUNT(*) FROM items WHERE title LIKE 'Asylum%'),
                    (SELECT COUNT(*) FROM matches m JOIN subscriptions q ON q.id = m.subscription_id
                     WHERE q.query = 'asylum')",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!(asylum, matched, "items without their matches");
    let items = db
        .prepare("SELECT feed_id, key FROM items")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    Checked { items }
}

fn polled_feeds(live: &Path) -> i64 {
    let db = rusqlite::Connection::open(live).unwrap();
    db.query_row(
        "SELECT COUNT(*) FROM feeds WHERE last_status = 'ok'",
        [],
        |r| r.get(0),
    )
    .unwrap_or(0)
}

fn live_items(live: &Path) -> i64 {
    rusqlite::Connection::open(live)
        .and_then(|db| db.query_row("SELECT COUNT(*) FROM items", [], |r| r.get(0)))
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backups_taken_while_the_daemon_polls_are_consistent_and_the_last_is_complete() {
    let server = FeedServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = String::from(
        "database = \"tidings.db\"\n[poll]\ninitial_backlog = \"3650d\"\nper_host = 4\n\
         [mail]\ntransport = \"file\"\nfolder = \"mail\"\n\
         [service]\nadmin_listen = \"127.0.0.1:0\"\n[web]\nlisten = \"127.0.0.1:0\"\n",
    );
    for n in 0..FEEDS {
        // The second half answers slowly, so polling goes on while backups are taken.
        let delay = if n < FEEDS / 2 { 0 } else { 1500 };
        server.set(
            &format!("/f{n}.xml"),
            feed(n).delay(Duration::from_millis(delay)),
        );
        config.push_str(&format!(
            "[[feeds]]\nid = \"f{n}\"\nurl = \"{}\"\n",
            server.url(&format!("/f{n}.xml"))
        ));
    }
    let config_path = dir.path().join("config.toml");
    std::fs::write(&config_path, config).unwrap();
    let live = dir.path().join("tidings.db");
    for (email, query) in [("ana@example.org", "asylum"), ("ben@example.org", "parole")] {
        let out = tidings(&["subscriber", "add", email, "-q", query], &config_path);
        assert!(out.status.success(), "{}", text(&out.stderr));
    }

    let log_path = dir.path().join("daemon.log");
    let mut daemon = Command::new(env!("CARGO_BIN_EXE_tidings"))
        .args(["run", "--config"])
        .arg(&config_path)
        .env_remove("TIDINGS_CONFIG")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log_path).unwrap())
        .spawn()
        .unwrap();

    let deadline = Instant::now() + Duration::from_secs(60);
    while live_items(&live) == 0 {
        assert!(Instant::now() < deadline, "the daemon stored nothing");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Backups while the daemon polls, until it is done.
    let backup = |n: usize| {
        let (config_path, path) = (config_path.clone(), dir.path().join(format!("b{n}.db")));
        tokio::task::spawn_blocking(move || {
            let out = tidings(&["backup", path.to_str().unwrap()], &config_path);
            assert!(out.status.success(), "{}", text(&out.stderr));
            (path, text(&out.stdout))
        })
    };
    let mut during = Vec::new();
    for n in 0.. {
        let done = polled_feeds(&live) == FEEDS as i64;
        let (path, _) = backup(n).await.unwrap();
        during.push(check(&path).items.len());
        if done {
            break;
        }
        assert!(Instant::now() < deadline, "polling never finished");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!("items in each backup: {during:?}");
    assert!(
        during[0] < FEEDS * ITEMS,
        "the first backup was taken while polling: {during:?}"
    );

    let (path, summary): (PathBuf, String) = backup(999).await.unwrap();
    let last = check(&path);
    let db = rusqlite::Connection::open(&live).unwrap();
    let live_keys: BTreeSet<(String, String)> = db
        .prepare("SELECT feed_id, key FROM items")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(live_keys.len(), FEEDS * ITEMS);
    assert_eq!(last.items, live_keys, "the last backup holds every item");
    assert!(
        summary.contains(&format!(
            "{FEEDS} feeds, {} items (0 pruned), 2 subscribers",
            FEEDS * ITEMS
        )),
        "{summary}"
    );
    let mode: String = rusqlite::Connection::open(&path)
        .unwrap()
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "delete", "a backup is one self-contained file");

    let killed = Command::new("kill")
        .args(["-TERM", &daemon.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let stopped = Instant::now();
    let status = loop {
        if let Some(status) = daemon.try_wait().unwrap() {
            break status;
        }
        if stopped.elapsed() > Duration::from_secs(30) {
            let _ = daemon.kill();
            panic!("daemon did not stop after SIGTERM");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let log = std::fs::read_to_string(&log_path).unwrap();
    assert!(
        status.success() && log.contains("stopped cleanly"),
        "{status:?}\n{log}"
    );
}

#[test]
fn a_backup_never_replaces_a_file_without_force_and_never_the_database() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(&config, "database = \"tidings.db\"\n").unwrap();
    let missing = tidings(&["backup", "x.db"], &config);
    assert_eq!(missing.status.code(), Some(2));
    assert!(
        text(&missing.stderr).contains("no database at"),
        "{}",
        text(&missing.stderr)
    );
    let add = tidings(
        &["subscriber", "add", "ana@example.org", "-q", "asylum"],
        &config,
    );
    assert!(add.status.success(), "{}", text(&add.stderr));

    let target = dir.path().join("backup.db");
    std::fs::write(&target, b"last week's backup").unwrap();
    let refused = tidings(&["backup", target.to_str().unwrap()], &config);
    assert_eq!(refused.status.code(), Some(2));
    assert!(
        text(&refused.stderr).contains("already exists (pass --force to replace it)"),
        "{}",
        text(&refused.stderr)
    );
    assert_eq!(std::fs::read(&target).unwrap(), b"last week's backup");

    let itself = dir.path().join("tidings.db");
    let refused = tidings(&["backup", "--force", itself.to_str().unwrap()], &config);
    assert_eq!(refused.status.code(), Some(2));
    assert!(
        text(&refused.stderr).contains("is the database itself"),
        "{}",
        text(&refused.stderr)
    );

    let forced = tidings(&["backup", "--force", target.to_str().unwrap()], &config);
    assert!(forced.status.success(), "{}", text(&forced.stderr));
    assert!(
        text(&forced.stdout).contains("0 feeds, 0 items (0 pruned), 1 subscriber, 0 outbox"),
        "{}",
        text(&forced.stdout)
    );
    let subscribers: i64 = rusqlite::Connection::open(&target)
        .unwrap()
        .query_row("SELECT COUNT(*) FROM subscribers", [], |r| r.get(0))
        .unwrap();
    assert_eq!(subscribers, 1);

    let mut left: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with("tidings."))
        .collect();
    left.sort();
    assert_eq!(
        left,
        ["backup.db", "config.toml"],
        "no temporary files left"
    );
}
