//! The hostile review of issue 14 (several instances on one database), on SQLite: each
//! test names the promise it holds Tidings to and the input that broke it when it was
//! written. (The PostgreSQL ones are in `store_contract.rs` and `scale_out.rs`.) Loopback
//! only: every server is on 127.0.0.1.

mod support;

use std::path::Path;
use std::process::{Command, Output};

use chrono::{DateTime, Utc};
use support::{FeedServer, Route};

fn tidings(config: &Path, args: &[&str]) -> Output {
    Command::new(support::tidings_bin())
        .args(args)
        .arg("--config")
        .arg(config)
        .env_remove("TIDINGS_CONFIG")
        .env_remove("TIDINGS_SECRET")
        .output()
        .expect("run tidings")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn status_of(config: &Path, id: &str) -> serde_json::Value {
    let out = tidings(config, &["feeds", "status", "--json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let all: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    all.as_array()
        .unwrap()
        .iter()
        .find(|f| f["id"] == id)
        .cloned()
        .unwrap_or_else(|| panic!("no feed {id}: {all}"))
}

/// "A failing feed backs off … never dropped silently": a poll whose result the database
/// refuses (here a trigger; on PostgreSQL, one item too large for an index did it) was
/// released "due again at once" with nothing recorded, so every tick fetched the feed
/// again, for ever, while `feeds status` showed no failure. It is now recorded as a
/// failure of kind `database`, with the usual backoff.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poll_the_database_refuses_is_recorded_and_backs_off() {
    let feeds = FeedServer::start().await;
    let date = Utc::now().to_rfc2822();
    feeds.set(
        "/news.xml",
        Route::feed(
            "application/rss+xml",
            format!(
                "<?xml version=\"1.0\"?><rss version=\"2.0\"><channel><title>Agency</title>\
                 <link>https://agency.example/</link><description>d</description>\
                 <item><guid>a1</guid><title>Asylum ruling</title>\
                 <link>https://agency.example/a1</link><pubDate>{date}</pubDate></item>\
                 </channel></rss>"
            ),
        ),
    );
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            "database = \"tidings.db\"\n[[feeds]]\nid = \"news\"\nurl = \"{}\"\n",
            feeds.url("/news.xml")
        ),
    )
    .unwrap();
    assert_eq!(status_of(&config, "news")["consecutive_failures"], 0);
    rusqlite::Connection::open(dir.path().join("tidings.db"))
        .unwrap()
        .execute_batch(
            "CREATE TRIGGER refuse BEFORE INSERT ON items
             BEGIN SELECT RAISE(ABORT, 'no room for this item'); END;",
        )
        .unwrap();

    let polled = tidings(&config, &["poll"]);
    assert!(
        text(&polled.stdout).contains("1 failed"),
        "{}",
        text(&polled.stdout)
    );
    let news = status_of(&config, "news");
    let next: DateTime<Utc> = news["next_poll_at"].as_str().unwrap().parse().unwrap();
    assert_eq!(news["consecutive_failures"], 1, "{news}");
    assert_eq!(news["last_status"], "error", "{news}");
    assert_eq!(news["last_error_kind"], "database", "{news}");
    assert!(
        news["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("no room for this item")),
        "{news}"
    );
    assert!(next > Utc::now(), "backs off, not due at once: {news}");
}

fn write_feeds(config: &Path, feeds: &[&str], modified: std::time::SystemTime) {
    let mut body = String::from("database = \"tidings.db\"\n");
    for id in feeds {
        body.push_str(&format!(
            "[[feeds]]\nid = \"{id}\"\nurl = \"https://{id}.example/feed.xml\"\n"
        ));
    }
    std::fs::write(config, body).unwrap();
    std::fs::File::options()
        .write(true)
        .open(config)
        .unwrap()
        .set_modified(modified)
        .unwrap();
}

fn active_feeds(config: &Path) -> Vec<String> {
    let out = tidings(config, &["feeds", "status", "--json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    support::active_feed_ids(&text(&out.stdout))
}

/// "The list of the config file modified last wins": a config whose modification time was
/// in the future (a clock that was wrong once, `touch -d`, an image built on a machine
/// whose clock ran ahead) stayed "the config written last" until that date, and every
/// later edit, even of the same file, was kept out. A time in the future counts as now,
/// and a file's newest reading always replaces its own older one.
#[test]
fn a_config_dated_in_the_future_does_not_lock_the_feed_list() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    let next_year = std::time::SystemTime::now() + std::time::Duration::from_secs(365 * 86_400);
    write_feeds(&config, &["a"], next_year);
    assert_eq!(active_feeds(&config), ["a"]);
    write_feeds(&config, &["a", "b"], std::time::SystemTime::now());
    assert_eq!(
        active_feeds(&config),
        ["a", "b"],
        "the admin's edit of the same file"
    );

    // Another file dated in the future, then a later edit of the first: the later wins.
    let other = dir.path().join("other.toml");
    write_feeds(&other, &["c"], next_year);
    assert_eq!(active_feeds(&other), ["c"]);
    std::thread::sleep(std::time::Duration::from_millis(20));
    write_feeds(&config, &["a", "d"], std::time::SystemTime::now());
    assert_eq!(active_feeds(&config), ["a", "d"]);
}

/// "A crashed holder's slots free themselves after `claim_lease`; they are given back on
/// every other path": a shutdown that came while a feed's connection slot was being taken
/// dropped the taking, which the database finished anyway, so the slot stayed taken for
/// every instance until its lease ran out (five minutes of `per_host` lost). The slot is
/// now taken to the end and given back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slot_taken_while_shutting_down_is_given_back() {
    let feeds = FeedServer::start().await;
    feeds.set(
        "/news.xml",
        Route::feed(
            "application/rss+xml",
            "<?xml version=\"1.0\"?><rss version=\"2.0\"><channel><title>A</title>\
             <link>https://a.example/</link><description>d</description></channel></rss>",
        ),
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    std::fs::write(
        &path,
        format!(
            "database = \"tidings.db\"\n[poll]\nper_host = 1\n\
             [[feeds]]\nid = \"news\"\nurl = \"{}\"\n",
            feeds.url("/news.xml")
        ),
    )
    .unwrap();
    let app = tidings::App::open(tidings::Config::load(&path).unwrap())
        .await
        .unwrap();
    let db = dir.path().join("tidings.db");
    // Another instance is connected to the host: the poll waits for the one slot.
    let other = tidings::store::Store::open(&db).unwrap();
    let limits = tidings::store::FetchLimits {
        per_host: 1,
        concurrency: 16,
    };
    let held = other
        .acquire_fetch_slot(
            "127.0.0.1",
            limits,
            Utc::now(),
            std::time::Duration::from_secs(300),
        )
        .await
        .unwrap()
        .expect("the host's slot");
    let poll = tokio::spawn({
        let app = app.clone();
        async move { tidings::poll_feeds(&app, Utc::now(), false).await }
    });
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    // A writer holds the database: the poll's next try for the slot waits for it.
    let lock = tokio::task::spawn_blocking(move || {
        let conn = rusqlite::Connection::open(&db).unwrap();
        conn.execute_batch("BEGIN IMMEDIATE").unwrap();
        conn
    })
    .await
    .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    app.shutdown.draining.cancel();
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    // The other instance lets go; the waiting try gets the slot.
    let lock = tokio::task::spawn_blocking(move || {
        let freed = lock
            .execute(
                "UPDATE fetch_slots SET holder = NULL, held_until = NULL WHERE holder = ?1",
                [held.token()],
            )
            .unwrap();
        assert!(freed >= 1, "the other instance's slots");
        lock.execute_batch("COMMIT").unwrap();
        lock
    })
    .await
    .unwrap();
    let summary = poll.await.unwrap().unwrap();
    assert_eq!(summary.updated, 0, "shutting down: not polled");
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let left: i64 = lock
        .query_row(
            "SELECT COUNT(*) FROM fetch_slots WHERE holder IS NOT NULL",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(left, 0, "a connection slot stayed taken after the shutdown");
}
