//! Retention: items past `retention` become tombstones once no digest needs them, old sent
//! and failed mail is deleted, and none of it ever comes back: a pruned item still in its
//! feed is not new again, not updated, not matched, not sent; deleting old mail never
//! makes its matches pending. Real feed and SMTP servers on loopback, a real SQLite file,
//! the clock passed explicitly.

mod support;

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use chrono::{DateTime, Utc};
use support::{FeedServer, Route, SmtpServer, at, decode, subscribe, write_config};
use tidings::store::Pruned;
use tidings::{App, poll_feeds, prune, send_digests};

const WAIT: Duration = Duration::from_secs(10);

/// One `<item>` of a feed.
#[derive(Clone, Copy)]
struct Story<'a> {
    guid: &'a str,
    title: &'a str,
    body: &'a str,
    published: DateTime<Utc>,
}

fn rss(stories: &[Story<'_>]) -> Route {
    let items: String = stories
        .iter()
        .map(|s| {
            format!(
                "<item><guid>{0}</guid><title>{1}</title><link>https://agency.example/{0}</link>\
                 <description>{2}</description><pubDate>{3}</pubDate></item>",
                s.guid,
                s.title,
                s.body,
                s.published.to_rfc2822()
            )
        })
        .collect();
    Route::feed(
        "application/rss+xml",
        format!(
            "<?xml version=\"1.0\" encoding=\"utf-8\"?><rss version=\"2.0\"><channel>\
             <title>Agency news</title><link>https://agency.example/</link>\
             <description>News</description>{items}</channel></rss>"
        ),
    )
}

fn days(n: i64) -> chrono::Duration {
    chrono::Duration::days(n)
}

fn db(app: &App) -> rusqlite::Connection {
    rusqlite::Connection::open(app.config.database.sqlite_path().unwrap()).unwrap()
}

/// The id of the item with this guid.
fn item_id(app: &App, guid: &str) -> i64 {
    db(app)
        .query_row("SELECT id FROM items WHERE guid = ?1", [guid], |r| r.get(0))
        .unwrap()
}

/// The key an item is known by in its feed.
fn item_key(app: &App, id: i64) -> String {
    db(app)
        .query_row("SELECT key FROM items WHERE id = ?1", [id], |r| r.get(0))
        .unwrap()
}

fn item_exists(app: &App, id: i64) -> bool {
    db(app)
        .query_row(
            "SELECT EXISTS (SELECT 1 FROM items WHERE id = ?1)",
            [id],
            |r| r.get(0),
        )
        .unwrap()
}

/// When the item with this key in feed "news" was pruned, if it was.
fn tombstone(app: &App, key: &str) -> Option<i64> {
    db(app)
        .query_row(
            "SELECT pruned_at FROM item_tombstones WHERE feed_id = 'news' AND key = ?1",
            [key],
            |r| r.get(0),
        )
        .ok()
}

fn tombstones(app: &App) -> i64 {
    db(app)
        .query_row("SELECT COUNT(*) FROM item_tombstones", [], |r| r.get(0))
        .unwrap()
}

fn item_rows(app: &App) -> i64 {
    db(app)
        .query_row("SELECT COUNT(*) FROM items", [], |r| r.get(0))
        .unwrap()
}

async fn live_titles(app: &App, since: DateTime<Utc>) -> Vec<String> {
    app.store
        .items_since(since)
        .await
        .unwrap()
        .into_iter()
        .map(|i| i.title)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_old_item_a_digest_still_needs_is_kept_until_the_digest_takes_it() {
    let feeds = FeedServer::start().await;
    let smtp = SmtpServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &[("news", feeds.url("/news.xml"))], smtp.port());
    assert_eq!(
        config.retention,
        Duration::from_secs(90 * 86400),
        "the default"
    );
    let app = App::open(config).await.unwrap();
    let t0 = at("2026-01-05T12:00:00Z");
    subscribe(&app, "ana@example.org", "asylum", "daily", t0).await;

    let asylum = Story {
        guid: "asylum-ruling",
        title: "Asylum ruling",
        body: "The court ruled on asylum claims.",
        published: t0 - chrono::Duration::hours(1),
    };
    let january = Story {
        guid: "visa-bulletin-jan",
        title: "Visa bulletin for January",
        body: "Dates for family visas.",
        published: t0 - chrono::Duration::hours(2),
    };
    feeds.set("/news.xml", rss(&[asylum, january]));
    let polled = poll_feeds(&app, t0, false).await.unwrap();
    assert_eq!((polled.new_items, polled.matches), (2, 1), "{polled:?}");
    let (asylum_id, january_id) = (
        item_id(&app, "asylum-ruling"),
        item_id(&app, "visa-bulletin-jan"),
    );
    let (asylum_key, january_key) = (item_key(&app, asylum_id), item_key(&app, january_id));

    // 95 days on, a new item; ana's daily digest has not gone out since.
    let t1 = t0 + days(95);
    let april = Story {
        guid: "visa-bulletin-apr",
        title: "Visa bulletin for April",
        body: "Dates for employment visas.",
        published: t1 - chrono::Duration::hours(1),
    };
    feeds.set("/news.xml", rss(&[april, asylum, january]));
    assert_eq!(poll_feeds(&app, t1, false).await.unwrap().new_items, 1);

    // Day 100: the January bulletin goes; the asylum ruling waits for ana's digest; the
    // April bulletin is within retention.
    let t2 = t0 + days(100);
    let pruned = prune(&app, t2).await.unwrap();
    assert_eq!(
        pruned,
        Pruned {
            items: 1,
            outbox: 0,
            matches: 0,
            skipped: false
        }
    );
    assert!(!item_exists(&app, january_id), "its row and text are gone");
    assert_eq!(
        tombstone(&app, &january_key),
        Some(t2.timestamp()),
        "a tombstone keeps its key"
    );
    assert_eq!(
        tombstone(&app, &asylum_key),
        None,
        "a digest still needs it"
    );
    assert_eq!(
        live_titles(&app, t0 - days(1)).await,
        ["Visa bulletin for April", "Asylum ruling"]
    );
    assert_eq!(app.store.feed_statuses().await.unwrap()[0].items, 2);

    let sent = send_digests(&app, t2, false).await.unwrap();
    assert_eq!((sent.queued, sent.delivery.sent), (1, 1));
    let mail = decode(&smtp.wait_for(1, WAIT).await[0]);
    assert!(mail.text.contains("Asylum ruling"), "{}", mail.text);

    // Sent: now it can go. Its digest, created today, stays.
    let pruned = prune(&app, t2).await.unwrap();
    assert_eq!(
        pruned,
        Pruned {
            items: 1,
            outbox: 0,
            matches: 1,
            skipped: false
        }
    );
    assert!(!item_exists(&app, asylum_id));
    assert_eq!(tombstone(&app, &asylum_key), Some(t2.timestamp()));
    assert_eq!(
        live_titles(&app, t0 - days(1)).await,
        ["Visa bulletin for April"]
    );
    assert_eq!(app.store.outbox().await.unwrap().len(), 1);
    assert_eq!(
        (item_rows(&app), tombstones(&app)),
        (1, 2),
        "tombstones are kept"
    );
    assert_eq!(
        prune(&app, t2).await.unwrap(),
        Pruned::default(),
        "nothing twice"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pruned_item_still_in_its_feed_never_comes_back_even_when_edited() {
    let feeds = FeedServer::start().await;
    let smtp = SmtpServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &[("news", feeds.url("/news.xml"))], smtp.port());
    let app = App::open(config).await.unwrap();
    let t0 = at("2026-01-05T12:00:00Z");
    subscribe(&app, "ana@example.org", "asylum", "immediate", t0).await;
    feeds.set(
        "/news.xml",
        rss(&[Story {
            guid: "asylum-ruling",
            title: "Asylum ruling",
            body: "The court ruled on asylum claims.",
            published: t0 - chrono::Duration::hours(1),
        }]),
    );
    poll_feeds(&app, t0, false).await.unwrap();
    let ruling = item_key(&app, item_id(&app, "asylum-ruling"));
    assert_eq!(
        send_digests(&app, t0, false).await.unwrap().delivery.sent,
        1
    );

    let t1 = t0 + days(100);
    assert_eq!(
        prune(&app, t1).await.unwrap(),
        Pruned {
            items: 1,
            outbox: 1,
            matches: 1,
            skipped: false
        },
        "the item, and the digest that carried it"
    );

    // The feed still carries the old story, now edited, and a new one.
    feeds.set(
        "/news.xml",
        rss(&[
            Story {
                guid: "asylum-guidance",
                title: "New asylum guidance",
                body: "Guidance for asylum officers.",
                published: t1 - chrono::Duration::hours(1),
            },
            Story {
                guid: "asylum-ruling",
                title: "Asylum ruling amended",
                body: "The court amended its asylum ruling, in length.",
                published: t0 - chrono::Duration::hours(1),
            },
        ]),
    );
    let polled = poll_feeds(&app, t1, false).await.unwrap();
    assert_eq!(
        (
            polled.updated,
            polled.new_items,
            polled.updated_items,
            polled.matches
        ),
        (1, 1, 0, 1),
        "only the new story is new, and matches: {polled:?}"
    );
    assert_eq!(
        tombstone(&app, &ruling),
        Some(t1.timestamp()),
        "still a tombstone, not brought back"
    );
    assert_eq!(item_rows(&app), 1, "only the new story is stored");
    assert_eq!(
        app.store
            .feed_items("news")
            .await
            .unwrap()
            .into_iter()
            .map(|(title, _)| title)
            .collect::<Vec<_>>(),
        ["New asylum guidance"]
    );

    let sent = send_digests(&app, t1, false).await.unwrap();
    assert_eq!(sent.delivery.sent, 1);
    let messages = smtp.wait_for(2, WAIT).await;
    assert_eq!(messages.len(), 2);
    let mail = decode(&messages[1]);
    assert!(mail.text.contains("New asylum guidance"), "{}", mail.text);
    assert!(
        !mail.text.contains("ruling"),
        "old news resent: {}",
        mail.text
    );

    // Polled again (and again edited): still nothing.
    feeds.set(
        "/news.xml",
        rss(&[Story {
            guid: "asylum-ruling",
            title: "Asylum ruling amended twice",
            body: "More on asylum.",
            published: t0 - chrono::Duration::hours(1),
        }]),
    );
    let polled = poll_feeds(&app, t1 + days(1), false).await.unwrap();
    assert_eq!(
        (polled.new_items, polled.updated_items, polled.matches),
        (0, 0, 0)
    );
    let again = send_digests(&app, t1 + days(1), true).await.unwrap();
    assert_eq!(again.queued, 0);
    assert_eq!(smtp.messages().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_old_mail_never_makes_its_matches_pending_again() {
    let feeds = FeedServer::start().await;
    let smtp = SmtpServer::start().await;
    smtp.reject_rcpt("cy@example.org", 550, "5.1.1 no such mailbox");
    smtp.reject_rcpt("dee@example.org", 451, "4.3.0 try again later");
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &[("news", feeds.url("/news.xml"))], smtp.port());
    let app = App::open(config).await.unwrap();
    let t0 = at("2026-01-05T12:00:00Z");
    subscribe(&app, "ana@example.org", "asylum", "immediate", t0).await;
    subscribe(&app, "ben@example.org", "asylum", "daily", t0).await;
    subscribe(&app, "cy@example.org", "asylum", "immediate", t0).await;
    subscribe(&app, "dee@example.org", "asylum", "immediate", t0).await;
    feeds.set(
        "/news.xml",
        rss(&[Story {
            guid: "asylum-ruling",
            title: "Asylum ruling",
            body: "The court ruled on asylum claims.",
            published: t0 - chrono::Duration::hours(1),
        }]),
    );
    assert_eq!(poll_feeds(&app, t0, false).await.unwrap().matches, 4);
    let first = send_digests(&app, t0, false).await.unwrap();
    assert_eq!(
        (
            first.queued,
            first.delivery.sent,
            first.delivery.failed,
            first.delivery.retrying
        ),
        (3, 1, 1, 1),
        "ana sent, cy failed, dee deferred; ben is daily"
    );

    // Day 100: ana's sent and cy's failed digests go, with their matches; dee's is still
    // pending (deferred) and stays; the item stays for ben's pending match.
    let t1 = t0 + days(100);
    let pruned = prune(&app, t1).await.unwrap();
    assert_eq!(
        pruned,
        Pruned {
            items: 0,
            outbox: 2,
            matches: 2,
            skipped: false
        }
    );
    let outbox = app.store.outbox().await.unwrap();
    assert_eq!(outbox.len(), 1);
    assert_eq!(
        (outbox[0].recipient.as_str(), outbox[0].status.as_str()),
        ("dee@example.org", "pending")
    );
    let ruling = item_id(&app, "asylum-ruling");
    assert!(item_exists(&app, ruling), "a pending digest still needs it");

    // Ben's digest goes out, and dee's deferred one; ana and cy get nothing again.
    smtp.reject_rcpt("dee@example.org", 250, "OK");
    let second = send_digests(&app, t1, false).await.unwrap();
    assert_eq!((second.queued, second.delivery.sent), (1, 2), "{second:?}");
    assert_eq!(send_digests(&app, t1, true).await.unwrap().queued, 0);
    let mut to: Vec<String> = smtp
        .wait_for(3, WAIT)
        .await
        .iter()
        .map(|m| decode(m).to)
        .collect();
    to.sort();
    assert_eq!(
        to,
        ["ana@example.org", "ben@example.org", "dee@example.org"]
    );

    // Sent to everyone who wanted it: the item goes too.
    assert_eq!(prune(&app, t1).await.unwrap().items, 1);
}

// ---- the command line ---------------------------------------------------------------------

fn tidings(args: &[&str], config: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tidings"))
        .args(args)
        .arg("--config")
        .arg(config)
        .env_remove("TIDINGS_CONFIG")
        .output()
        .expect("run tidings")
}

fn stdout(out: &Output) -> String {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tidings_prune_hides_pruned_items_from_match_and_feeds_status() {
    let feeds = FeedServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &[("news", feeds.url("/news.xml"))], 25);
    let path = config.path.clone();
    // The CLI runs on the wall clock: these items were first seen 120 days and 1 day ago.
    let now = Utc::now();
    {
        let app = App::open(config).await.unwrap();
        let old = Story {
            guid: "asylum-ruling",
            title: "Asylum ruling",
            body: "The court ruled on asylum claims.",
            published: now - days(121),
        };
        let older = Story {
            guid: "asylum-appeal",
            title: "Asylum appeal",
            body: "An appeal in an asylum case.",
            published: now - days(122),
        };
        feeds.set("/news.xml", rss(&[old, older]));
        poll_feeds(&app, now - days(120), false).await.unwrap();
        let recent = Story {
            guid: "asylum-guidance",
            title: "New asylum guidance",
            body: "Guidance for asylum officers.",
            published: now - days(1),
        };
        feeds.set("/news.xml", rss(&[recent]));
        poll_feeds(&app, now - days(1), false).await.unwrap();
    }
    let run = |args: &'static [&'static str]| {
        let path = path.clone();
        tokio::task::spawn_blocking(move || tidings(args, &path))
    };

    let before = stdout(&run(&["match", "asylum", "--since", "3650d"]).await.unwrap());
    assert!(before.contains("3 of 3 items"), "{before}");
    assert!(
        before.contains("ruling") && before.contains("appeal"),
        "{before}"
    );

    let pruned = stdout(&run(&["prune"]).await.unwrap());
    assert!(
        pruned
            .contains("pruned 2 items first seen more than 90d ago and 0 sent or failed messages"),
        "{pruned}"
    );
    let after = stdout(&run(&["match", "asylum", "--since", "3650d"]).await.unwrap());
    assert!(after.contains("1 of 1 item from"), "{after}");
    assert!(after.contains("New **asylum** guidance"), "{after}");
    assert!(
        !after.contains("ruling") && !after.contains("appeal"),
        "{after}"
    );
    let status: serde_json::Value =
        serde_json::from_str(&stdout(&run(&["feeds", "status", "--json"]).await.unwrap())).unwrap();
    assert_eq!(status[0]["items"], 1);
    let again = stdout(&run(&["prune"]).await.unwrap());
    assert!(again.contains("pruned 0 items"), "{again}");
}

#[test]
fn a_retention_shorter_than_a_day_is_an_error_with_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    std::fs::write(&path, "database = \"t.db\"\nretention = \"12h\"\n").unwrap();
    let out = tidings(&["check-config"], &path);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("config.toml:2:13: `retention` must be at least 1 day"),
        "{stderr}"
    );
    std::fs::write(&path, "retention = \"30d\"\n").unwrap();
    let ok = stdout(&tidings(&["check-config"], &path));
    assert!(ok.contains("items and sent mail kept 30d"), "{ok}");
}
