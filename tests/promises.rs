//! The promises Tidings makes, tried the way an attacker (or an unlucky admin) breaks
//! them: nobody's search reaches another subscriber, every match taken is shown, no
//! message goes out twice, and numbers from outside never crash a poll.

mod support;

use std::path::Path;
use std::process::Command;
use std::time::Duration;
use tidings::store::{OutboxStatus, PollStatus};

use support::{Daemon, FeedServer, Route, SmtpServer, decode};

/// An RSS feed of `(guid, title)` items published just now.
fn rss(items: &[(&str, &str)]) -> Route {
    let date = chrono::Utc::now().to_rfc2822();
    let items: String = items
        .iter()
        .map(|(guid, title)| {
            format!(
                "<item><guid>{guid}</guid><title>{title}</title>\
                 <link>https://agency.example/{guid}</link>\
                 <description>{title}</description><pubDate>{date}</pubDate></item>"
            )
        })
        .collect();
    Route::feed(
        "application/rss+xml",
        format!(
            r#"<?xml version="1.0" encoding="utf-8"?>
<rss version="2.0"><channel><title>Agency</title><link>https://agency.example/</link>
<description>News</description>{items}</channel></rss>"#
        ),
    )
}

/// Runs the real binary once with `args` against `config`; panics unless it succeeds.
fn tidings(config: &Path, args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_tidings"))
        .args(args)
        .arg("--config")
        .arg(config)
        .env_remove("TIDINGS_CONFIG")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "tidings {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A config with immediate digests over SMTP on `smtp_port`, polling `feeds` (id, url).
fn write_config(path: &Path, feeds: &[(&str, String)], smtp_port: u16) {
    let mut text = format!(
        "[poll]\ninitial_backlog = \"24h\"\n\
         [mail]\nfrom = \"alerts@tidings.test\"\ntransport = \"smtp\"\nsend_timeout = \"5s\"\n\
         [mail.smtp]\nhost = \"127.0.0.1\"\nport = {smtp_port}\ntls = \"none\"\n\
         [web]\nlisten = \"\"\n[service]\nadmin_listen = \"\"\nwatch_config = false\n"
    );
    for (id, url) in feeds {
        text.push_str(&format!(
            "\n[[feeds]]\nid = \"{id}\"\nname = \"{id}\"\nurl = \"{url}\"\n"
        ));
    }
    std::fs::write(path, text).unwrap();
}

/// Item 1: an admin removes one subscriber and adds another from a second process while
/// the daemon runs. SQLite would hand the removed subscription's id to the new one, and a
/// matcher cached by counts and ids would keep running the removed query under the new
/// subscriber's name. The new subscriber must get exactly their own search's matches.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_changed_by_another_process_reaches_the_running_matcher() {
    let feeds = FeedServer::start().await;
    let smtp = SmtpServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    feeds.set("/one.xml", rss(&[("old", "Weather report")]));
    // A second feed that answers slowly: the poll cycle compiles its matcher first,
    // then waits for this answer while the subscriptions change under it.
    feeds.set(
        "/two.xml",
        rss(&[
            ("daca", "DACA recipients win ruling"),
            ("tps", "TPS extended for Haiti"),
        ])
        .delay(Duration::from_secs(4)),
    );
    write_config(
        &config,
        &[
            ("one", feeds.url("/one.xml")),
            ("two", feeds.url("/two.xml")),
        ],
        smtp.port(),
    );

    tidings(&config, &["subscriber", "add", "a@x.test", "-q", "asylum"]);
    tidings(&config, &["subscriber", "add", "b@x.test", "-q", "DACA"]);

    let daemon = Daemon::start(&config, &[], &[]);
    daemon
        .wait_log("feed one polled", |l| l.contains("feed=one"))
        .await;
    // Another process, as an admin (or the manage page) would, while feed two is fetched.
    tidings(&config, &["subscriber", "remove", "b@x.test"]);
    tidings(&config, &["subscriber", "add", "c@x.test", "-q", "TPS"]);
    daemon
        .wait_log("feed two polled", |l| l.contains("feed=two"))
        .await;

    let received = smtp.wait_for(1, Duration::from_secs(30)).await;
    let mail = decode(&received[0]);
    assert_eq!(mail.to, "c@x.test", "{}", daemon.log());
    assert!(
        mail.text.contains("TPS extended for Haiti"),
        "{}",
        mail.text
    );
    assert!(
        !mail.text.contains("DACA"),
        "b's removed search reached c:\n{}",
        mail.text
    );
    // Nothing else went out: the DACA story matches nobody now.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(smtp.messages().len(), 1, "{}", daemon.log());
}

/// Item 4: numbers a server sends are bounded before arithmetic. These Retry-After
/// values overflowed chrono and panicked the poll, which left the feed looking brand new
/// ("new / 0 fails / never"), out of the failing-feeds metric and the digest footer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn absurd_retry_after_values_are_recorded_as_failures_with_a_bounded_wait() {
    let feeds = FeedServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    feeds.set(
        "/a.xml",
        Route::status(503, "busy").header("Retry-After", "99999999999999999"),
    );
    feeds.set(
        "/b.xml",
        Route::status(429, "slow down").header("Retry-After", "9000000000000"),
    );
    let config = support::write_config(
        dir.path(),
        &[("a", feeds.url("/a.xml")), ("b", feeds.url("/b.xml"))],
        1,
    );
    let max_backoff = config.poll.max_backoff;
    let app = tidings::App::open(config).await.unwrap();
    let now = chrono::Utc::now();
    let summary = tidings::poll_feeds(&app, now, false).await.unwrap();
    assert_eq!(summary.failed, 2, "{summary:?}");
    let limit = now + chrono::Duration::from_std(max_backoff).unwrap();
    for status in app.store.feed_statuses().await.unwrap() {
        assert_eq!(status.consecutive_failures, 1, "{status:?}");
        assert_eq!(status.last_status, Some(PollStatus::Error), "{status:?}");
        assert_eq!(
            status.last_error_kind.as_deref(),
            Some("throttled"),
            "{status:?}"
        );
        assert!(
            status.next_poll_at > now && status.next_poll_at <= limit,
            "{status:?}"
        );
    }
}

/// Item 3: a sender whose claim ran out while its messages waited for their rate-limit
/// slot must not send them: another sender (here a second process's, whose clock says
/// the lease is over) has claimed them and sends them itself. Every message goes out
/// exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sender_that_lost_its_claim_never_sends_the_message() {
    let smtp = SmtpServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    // One message a second, four claimed at once: the fourth waits 3 s for its slot.
    let config = support::write_config_with(
        dir.path(),
        &[],
        smtp.port(),
        "rate_limit = 60\nconcurrency = 4\n",
        "",
    );
    let first = tidings::App::open(config.clone()).await.unwrap();
    let second = tidings::App::open(config).await.unwrap();
    let now = chrono::Utc::now();
    for n in 0..4 {
        first
            .store
            .queue_message(
                &format!("r{n}@x.test"),
                &format!("Message {n}"),
                "text",
                "<p>html</p>",
                "tidings.test",
                now,
            )
            .await
            .unwrap();
    }
    let holder = tokio::spawn(async move { tidings::send_mail(&first, now).await.unwrap() });
    // While the first sender waits for its slots, the second finds the claims run out.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let later = now + chrono::Duration::minutes(10);
    let taken = tidings::send_mail(&second, later).await.unwrap();
    let kept = holder.await.unwrap();
    assert_eq!(kept.sent + taken.sent, 4, "{kept:?} {taken:?}");
    let mut to: Vec<String> = smtp
        .messages()
        .iter()
        .flat_map(|m| m.rcpt_to.clone())
        .collect();
    to.sort();
    assert_eq!(to, ["r0@x.test", "r1@x.test", "r2@x.test", "r3@x.test"]);
    let outbox = second.store.outbox().await.unwrap();
    assert!(
        outbox.iter().all(|m| m.status == OutboxStatus::Sent),
        "{outbox:?}"
    );
}

/// A digest holds at most `MAX_DIGEST_ENTRIES` matches (60k in one made a 35 MB message
/// that mail servers refuse); the rest go out in the next message at once, and the first
/// says so. Every match is sent exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_matches_is_split_into_messages_a_mail_server_takes() {
    let feeds = FeedServer::start().await;
    let smtp = SmtpServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let cap = tidings::digest::MAX_DIGEST_ENTRIES;
    let guids: Vec<String> = (0..cap + 7).map(|n| format!("g{n}")).collect();
    let items: Vec<(&str, &str)> = guids
        .iter()
        .map(|g| (g.as_str(), "Asylum ruling"))
        .collect();
    feeds.set("/many.xml", rss(&items));
    let config =
        support::write_config(dir.path(), &[("many", feeds.url("/many.xml"))], smtp.port());
    let app = tidings::App::open(config).await.unwrap();
    let now = chrono::Utc::now();
    support::subscribe(&app, "ana@x.test", "asylum", "immediate", now).await;
    let polled = tidings::poll_feeds(&app, now, false).await.unwrap();
    assert_eq!(polled.matches, cap + 7);
    let first = tidings::send_digests(&app, now, false).await.unwrap();
    let second = tidings::send_digests(&app, now, false).await.unwrap();
    assert_eq!(first.queued + second.queued, 2, "{first:?} {second:?}");
    let mails: Vec<_> = smtp
        .wait_for(2, Duration::from_secs(10))
        .await
        .iter()
        .map(decode)
        .collect();
    let shown = |m: &support::Mail| m.text.matches("Asylum ruling").count();
    assert_eq!(shown(&mails[0]) + shown(&mails[1]), cap + 7);
    assert!(
        mails[0].text.contains("the rest follow in the next"),
        "{}",
        &mails[0].text[..300]
    );
    assert!(!mails[1].text.contains("the rest follow"));
    let third = tidings::send_digests(&app, now, false).await.unwrap();
    assert_eq!(third.queued, 0, "nothing left: {third:?}");
}
