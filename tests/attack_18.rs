//! Hostile review of issue 18 (performance): storing items with an explicit id, the fast
//! path of a match. (The one-pass HTML reader's findings are unit tests in src/parse.rs,
//! beside the tokenizer path they compare with.)
//! Loopback only: real HTTP feeds (`FeedServer`), a real SMTP server, real SQLite files.

mod support;

use std::time::Duration;

use chrono::{DateTime, Utc};
use support::{FeedServer, Mail, Route, SmtpServer, at, decode, subscribe};
use tidings::store::NewOutlets;
use tidings::{App, poll_feeds, send_digests};

const WAIT: Duration = Duration::from_secs(10);

// ---- 2. storing items: explicit ids, stories, the fast path of a match ------------------------

const WIRE: &str = "U.S. Citizenship and Immigration Services said Tuesday it will extend the \
    automatic extension of employment authorization documents to 540 days for asylum \
    applicants who file Form I-765 on time, citing processing backlogs at its service centers.";
const EAD_TITLE: &str = "USCIS extends EAD automatic extension to 540 days";

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[derive(Clone)]
struct It {
    guid: String,
    title: String,
    link: String,
    text: String,
}

fn it(guid: &str, title: &str, link: &str, text: &str) -> It {
    It {
        guid: guid.into(),
        title: title.into(),
        link: link.into(),
        text: text.into(),
    }
}

fn rss(items: &[It]) -> Route {
    let items: String = items
        .iter()
        .map(|i| {
            format!(
                "<item><guid>{}</guid><title>{}</title><link>{}</link>\
                 <description>{}</description><pubDate>Tue, 01 Dec 2026 11:00:00 GMT</pubDate></item>",
                xml_escape(&i.guid),
                xml_escape(&i.title),
                xml_escape(&i.link),
                xml_escape(&i.text),
            )
        })
        .collect();
    Route::feed(
        "application/rss+xml",
        format!(
            "<?xml version=\"1.0\"?><rss version=\"2.0\"><channel><title>t</title>\
             <link>https://news.example/</link><description>d</description>{items}\
             </channel></rss>"
        ),
    )
}

fn config(
    dir: &std::path::Path,
    feeds: &[(String, String)],
    smtp_port: u16,
    top: &str,
) -> std::path::PathBuf {
    let mut text = format!(
        r#"
database = "data/tidings.db"
{top}
[poll]
initial_backlog = "24h"
timeout = "5s"
[digest]
daily_at = "08:00"
timezone = "UTC"
[mail]
from = "Tidings <alerts@tidings.test>"
transport = "smtp"
send_timeout = "5s"
[mail.smtp]
host = "127.0.0.1"
port = {smtp_port}
tls = "none"
[service]
admin_listen = "127.0.0.1:0"
[web]
listen = "127.0.0.1:0"
"#
    );
    for (id, url) in feeds {
        text.push_str(&format!(
            "\n[[feeds]]\nid = \"{id}\"\nname = \"{id} feed\"\nurl = \"{url}\"\n"
        ));
    }
    let path = dir.join("config.toml");
    std::fs::write(&path, text).unwrap();
    path
}

struct World {
    dir: tempfile::TempDir,
    feeds: FeedServer,
    smtp: SmtpServer,
    app: App,
    now: DateTime<Utc>,
}

impl World {
    async fn with(ids: &[&str], top: &str) -> World {
        let feeds = FeedServer::start().await;
        let smtp = SmtpServer::start().await;
        let dir = tempfile::tempdir().unwrap();
        let list: Vec<(String, String)> = ids
            .iter()
            .map(|id| {
                let path = format!("/{id}.xml");
                feeds.set(&path, rss(&[]));
                (id.to_string(), feeds.url(&path))
            })
            .collect();
        let path = config(dir.path(), &list, smtp.port(), top);
        let app = App::open(tidings::config::Config::load(&path).unwrap())
            .await
            .unwrap();
        World {
            dir,
            feeds,
            smtp,
            app,
            now: at("2026-12-01T12:00:00Z"),
        }
    }

    async fn second_app(&self) -> App {
        App::open(tidings::config::Config::load(&self.dir.path().join("config.toml")).unwrap())
            .await
            .unwrap()
    }

    fn serve(&self, feed: &str, items: &[It]) {
        self.feeds.set(&format!("/{feed}.xml"), rss(items));
    }

    async fn sub(&self, who: &str, query: &str, outlets: NewOutlets) {
        subscribe(&self.app, who, query, "immediate", self.now).await;
        let s = self.app.store.subscriber(who).await.unwrap().unwrap();
        assert!(self.app.store.set_new_outlets(s.id, outlets).await.unwrap());
    }

    async fn poll(&self) {
        poll_feeds(&self.app, self.now, false).await.unwrap();
    }

    async fn digest(&self) -> Vec<Mail> {
        let before = self.smtp.messages().len();
        let round = send_digests(&self.app, self.now, false).await.unwrap();
        self.smtp.wait_for(before + round.queued, WAIT).await[before..]
            .iter()
            .map(decode)
            .collect()
    }

    fn db(&self) -> rusqlite::Connection {
        rusqlite::Connection::open(self.dir.path().join("data/tidings.db")).unwrap()
    }

    /// (id, feed, story, title) of every stored item.
    fn items(&self) -> String {
        let db = self.db();
        let mut stmt = db
            .prepare("SELECT id, feed_id, story_id, title FROM items ORDER BY id")
            .unwrap();
        let rows = stmt
            .query_map([], |r| {
                Ok(format!(
                    "  item {} of {}: story {:?}: {}",
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, Option<i64>>(2)?,
                    r.get::<_, String>(3)?
                ))
            })
            .unwrap();
        rows.map(Result::unwrap).collect::<Vec<_>>().join("\n")
    }
}

/// Two items of one document with the same guid: the parser gives them distinct keys, so
/// each is stored once with its own id, alerted once, and the same document polled again
/// adds nothing and sends nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_a_guid_twice_in_one_document_is_one_item() {
    let mut w = World::with(&["uscis"], "").await;
    w.sub("ana@x.example", "asylum", NewOutlets::Next).await;
    w.serve(
        "uscis",
        &[
            it("dup", EAD_TITLE, "https://uscis.example/ead", WIRE),
            it(
                "dup",
                "Asylum clock rule changed",
                "https://uscis.example/ead2",
                "Other asylum words here.",
            ),
            it(
                "other",
                "Asylum fee waiver",
                "https://uscis.example/fee",
                "Fee waiver for asylum seekers.",
            ),
        ],
    );
    w.poll().await;
    let n: i64 = w
        .db()
        .query_row("SELECT COUNT(*) FROM items", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 3, "{}", w.items());
    let mails = w.digest().await;
    assert_eq!(mails.len(), 1);
    let text = &mails[0].text;
    assert_eq!(text.matches("Asylum fee waiver").count(), 1, "{text}");
    // The poll again, unchanged: nothing new, nothing resent.
    w.now += chrono::Duration::hours(1);
    w.poll().await;
    assert!(w.digest().await.is_empty());
    let n: i64 = w
        .db()
        .query_row("SELECT COUNT(*) FROM items", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 3, "{}", w.items());
}

/// Two processes on one file poll many feeds at once: every item stored once, ids unique,
/// each item alerted once, and an edit of an item stored by the other process goes out
/// again marked Updated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_two_processes_storing_at_once_give_every_item_its_own_id() {
    let ids: Vec<String> = (0..16).map(|i| format!("f{i}")).collect();
    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    let mut w = World::with(&refs, "").await;
    w.sub("ana@x.example", "asylum", NewOutlets::Always).await;
    let serve_all = |w: &World, rev: &str| {
        for (n, id) in ids.iter().enumerate() {
            let items: Vec<It> = (0..6)
                .map(|k| {
                    let seed = (n * 6 + k) as u64;
                    let words: String = (0..14u64)
                        .map(|j| format!(" w{}", (seed * 1_000_003 + j * 7919) % 999_983))
                        .collect();
                    let extra = if k == 0 { rev } else { "" };
                    it(
                        &format!("{id}-{k}"),
                        &format!("zq{n}x{k} asylum{extra}"),
                        &format!("https://{id}.example/{k}"),
                        &format!("Asylum{words}{extra}."),
                    )
                })
                .collect();
            w.serve(id, &items);
        }
    };
    serve_all(&w, "");
    let second = w.second_app().await;
    let (a, b) = tokio::join!(
        poll_feeds(&w.app, w.now, false),
        poll_feeds(&second, w.now, false)
    );
    a.unwrap();
    b.unwrap();
    let (n, distinct): (i64, i64) = w
        .db()
        .query_row(
            "SELECT COUNT(*), COUNT(DISTINCT feed_id || '/' || key) FROM items",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!((n, distinct), (96, 96), "{}", w.items());
    let mails = w.digest().await;
    let all: String = mails.iter().map(|m| m.text.clone()).collect();
    for n in 0..16 {
        for k in 0..6 {
            assert_eq!(
                all.matches(&format!("zq{n}x{k} asylum")).count(),
                1,
                "item {n}/{k} once\n{all}"
            );
        }
    }
    // Edits, polled by both processes at once.
    w.now += chrono::Duration::hours(1);
    serve_all(&w, " revised with new words");
    let (a, b) = tokio::join!(
        poll_feeds(&w.app, w.now, false),
        poll_feeds(&second, w.now, false)
    );
    a.unwrap();
    b.unwrap();
    let mails = w.digest().await;
    let all: String = mails.iter().map(|m| m.text.clone()).collect();
    for n in 0..16 {
        assert_eq!(
            all.matches(&format!("[Updated] zq{n}x0 asylum revised"))
                .count(),
            1,
            "edit {n} resent once\n{all}"
        );
    }
}

/// A full-text item starts its own story when stored, but is matched only once its
/// article is in. Meanwhile another outlet's copy joins its story and goes out: the
/// subscriber got the story. When the article arrives, `insert_match` takes its fast path
/// (story == item id: "nobody got it yet") and records an ordinary match, so a subscriber
/// who chose `never` is alerted of a story they already got. Before the fast path, the
/// `stories_sent` check dropped it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_text_item_matched_after_its_storys_copy_went_out_ignores_never() {
    use std::net::{IpAddr, Ipv4Addr};
    let site = FeedServer::start().await;
    let smtp = SmtpServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut now = at("2026-12-01T12:00:00Z");
    let article = String::from_utf8(support::fixture("article-wordpress.html")).unwrap();
    site.set(
        "/ead",
        Route::status(200, article).header("content-type", "text/html; charset=utf-8"),
    );
    let published = (now - chrono::Duration::hours(1)).to_rfc2822();
    let agency = format!(
        "<?xml version=\"1.0\"?><rss version=\"2.0\"><channel><title>Agency</title>\
         <item><guid>ead</guid><title>{EAD_TITLE}</title><link>{}</link>\
         <description>{WIRE}</description><pubDate>{published}</pubDate></item></channel></rss>",
        site.url("/ead")
    );
    site.set("/agency.xml", Route::feed("application/rss+xml", agency));
    site.set("/wire.xml", rss(&[]));
    let text = format!(
        r#"
database = "data/tidings.db"
[poll]
initial_backlog = "24h"
timeout = "2s"
[digest]
daily_at = "08:00"
timezone = "UTC"
[mail]
from = "Tidings <alerts@tidings.test>"
transport = "smtp"
send_timeout = "5s"
[mail.smtp]
host = "127.0.0.1"
port = {}
tls = "none"
[service]
admin_listen = ""
[web]
listen = ""

[[feeds]]
id = "agency"
name = "agency feed"
url = "{}"
full_text = true

[[feeds]]
id = "wire"
name = "wire feed"
url = "{}"
"#,
        smtp.port(),
        site.url("/agency.xml"),
        site.url("/wire.xml")
    );
    let path = dir.path().join("config.toml");
    std::fs::write(&path, text).unwrap();
    let mut app = App::open(tidings::config::Config::load(&path).unwrap())
        .await
        .unwrap();
    let policy = tidings::fetch::AddressPolicy {
        treat_as_public: vec![IpAddr::V4(Ipv4Addr::LOCALHOST)],
        ..tidings::fetch::AddressPolicy::default()
    };
    app.fetcher = tidings::fetch::Fetcher::with_policy(&app.config.poll, policy).unwrap();
    subscribe(&app, "ana@x.example", "asylum", "immediate", now).await;
    let ana = app
        .store
        .subscriber("ana@x.example")
        .await
        .unwrap()
        .unwrap();
    assert!(
        app.store
            .set_new_outlets(ana.id, NewOutlets::Never)
            .await
            .unwrap()
    );

    // The agency's item: stored, its article pending.
    poll_feeds(&app, now, false).await.unwrap();
    // The wire's copy of it, a minute later: joins its story, matched, sent.
    now += chrono::Duration::minutes(1);
    site.set(
        "/wire.xml",
        rss(&[it("w1", EAD_TITLE, "https://wire.example/ead", WIRE)]),
    );
    poll_feeds(&app, now, false).await.unwrap();
    let db = rusqlite::Connection::open(dir.path().join("data/tidings.db")).unwrap();
    let stories: Vec<(String, Option<i64>, i64)> = db
        .prepare("SELECT feed_id, story_id, id FROM items ORDER BY id")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(stories.len(), 2, "{stories:?}");
    assert_eq!(
        stories[1].1,
        Some(stories[0].2),
        "premise: the copy joins the agency's story {stories:?}"
    );
    let before = smtp.messages().len();
    let round = send_digests(&app, now, false).await.unwrap();
    assert_eq!(round.queued, 1, "premise: the wire's copy goes out");
    smtp.wait_for(before + 1, WAIT).await;
    // The agency's article comes in: ana got this story and wants nothing more of it.
    now += chrono::Duration::minutes(1);
    let read = tidings::pipeline::fetch_articles(&app, now).await.unwrap();
    assert_eq!(read.articles, 1, "premise: the article is read {read:?}");
    let round = send_digests(&app, now, false).await.unwrap();
    let quiet: Vec<(i64, bool)> = db
        .prepare("SELECT item_id, quiet FROM matches ORDER BY item_id")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(
        round.queued, 0,
        "ana (new-outlets never) already got this story through the wire's copy, and is \
         alerted again by the agency's item once its article is in; matches (item, quiet): {quiet:?}"
    );
}
