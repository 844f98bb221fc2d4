//! What subscribers receive and when: digest content and headers parsed from the MIME
//! messages a real SMTP server on loopback received, schedules in subscribers' own time
//! zones, items re-sent when updated, failing feeds named, bounces, rate limit and the
//! retry limit. Feeds come from a real HTTP server; the database is a real SQLite file.

mod support;

use std::time::{Duration, Instant};

use support::{
    FeedServer, Route, SmtpServer, at, decode, subscribe, subscribe_in, write_config,
    write_config_with,
};
use tidings::store::OutboxStatus;
use tidings::{App, poll_feeds, send_digests};

const WAIT: Duration = Duration::from_secs(10);

/// An RSS feed with the given `<item>` elements.
fn rss(items: &str) -> String {
    format!(
        r#"<?xml version="1.0" encoding="utf-8"?>
<rss version="2.0"><channel><title>Agency news</title><link>https://agency.example/</link>
<description>News</description>{items}</channel></rss>"#
    )
}

fn item(guid: &str, title: &str, description: &str, date: &str) -> String {
    format!(
        "<item><guid>{guid}</guid><title>{title}</title><link>https://agency.example/{guid}</link>\
         <description><![CDATA[{description}]]></description><pubDate>{date}</pubDate></item>"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_digest_has_both_parts_highlights_safe_html_and_list_headers() {
    let feeds = FeedServer::start().await;
    let smtp = SmtpServer::start().await;
    let hostile = r#"<item><guid>a1</guid>
<title>Asylum rule: fees &lt; $500 &amp; forms &lt;script&gt;alert(1)&lt;/script&gt;</title>
<link>/news/asylum-rule</link>
<description><![CDATA[<p>The new <b>asylum</b> rule <script>alert('x')</script><img src="https://tracker.example/p.gif" onerror="steal()"> takes effect in January. <a href="/details" onclick="x()">Details</a></p>]]></description>
<pubDate>Sat, 28 Nov 2026 11:00:00 GMT</pubDate></item>
<item><guid>a2</guid><title>Injected
Bcc: victim@evil.example
X-Evil: 1</title><link>https://agency.example/a2</link>
<description>Asylum seekers and a header injection attempt.</description>
<pubDate>Sat, 28 Nov 2026 10:00:00 GMT</pubDate></item>"#;
    feeds.set("/a.xml", Route::feed("application/rss+xml", rss(hostile)));
    let dir = tempfile::tempdir().unwrap();
    let config = write_config_with(
        dir.path(),
        &[("agency", feeds.url("/a.xml"))],
        smtp.port(),
        "",
        "[web]\nbase_url = \"https://alerts.tidings.test/u/\"\n",
    );
    let app = App::open(config).await.unwrap();
    let now = at("2026-11-28T12:00:00Z");
    subscribe(&app, "ana@example.org", "asylum", "immediate", now).await;
    poll_feeds(&app, now, false).await.unwrap();
    let sent = send_digests(&app, now, false).await.unwrap();
    assert_eq!((sent.queued, sent.delivery.sent), (1, 1), "{sent:?}");
    let got = smtp.wait_for(1, WAIT).await;
    let mail = decode(&got[0]);

    assert_eq!(mail.subject, "Tidings: 2 new — asylum (2)");
    assert!(mail.content_type.starts_with("multipart/alternative"));
    // Our own Message-ID, the one stored in the outbox, and a Date.
    let outbox = app.store.outbox().await.unwrap();
    assert_eq!(
        mail.message_id,
        outbox[0].message_id.trim_matches(['<', '>'])
    );
    assert!(mail.message_id.ends_with("@tidings.test"));
    assert!(mail.header("Date").is_some());
    // List headers: RFC 2919 List-Id, RFC 8058 one-click unsubscribe.
    assert_eq!(
        mail.header("List-Id"),
        Some("Tidings alerts <alerts.tidings.test>")
    );
    assert_eq!(
        mail.header("List-Unsubscribe-Post"),
        Some("List-Unsubscribe=One-Click")
    );
    let unsubscribe = mail.header("List-Unsubscribe").unwrap();
    let (https, mailto) = unsubscribe.split_once(", ").unwrap();
    let url = https.trim_matches(['<', '>']);
    assert!(
        url.starts_with("https://alerts.tidings.test/u/unsubscribe/"),
        "{unsubscribe}"
    );
    let token = url.rsplit('/').next().unwrap();
    assert_eq!(
        mailto,
        format!("<mailto:alerts@tidings.test?subject=unsubscribe%20{token}>")
    );
    let ana = app
        .store
        .subscriber("ana@example.org")
        .await
        .unwrap()
        .unwrap();
    let lookup = |id| (id == ana.id).then(|| ana.email.clone());
    assert_eq!(app.links.verify_unsubscribe(token, lookup), Some(ana.id));
    let forged = format!("{}.{}", ana.id, "0".repeat(32));
    assert_eq!(app.links.verify_unsubscribe(&forged, lookup), None);
    // The same link is in both parts, for clients that do not show the header.
    assert!(mail.text.contains(url), "{}", mail.text);
    assert!(
        mail.html.contains(&format!("href=\"{url}\"")),
        "{}",
        mail.html
    );
    // So is the subscriber's own page, signed for them alone.
    let manage = mail
        .text
        .lines()
        .find_map(|l| l.strip_prefix("Change your searches or schedule: "))
        .unwrap_or_else(|| panic!("no manage link in {}", mail.text));
    let manage_token = manage
        .strip_prefix("https://alerts.tidings.test/u/manage/")
        .unwrap_or_else(|| panic!("{manage}"));
    assert_eq!(app.links.verify_manage(manage_token, lookup), Some(ana.id));
    assert_eq!(app.links.verify_unsubscribe(manage_token, lookup), None);
    assert!(mail.html.contains(&format!("href=\"{manage}\"")));

    // Nothing from a feed became a header.
    assert!(mail.header("Bcc").is_none() && mail.header("X-Evil").is_none());
    assert!(
        mail.headers.iter().all(|(_, v)| !v.contains("victim")),
        "{:?}",
        mail.headers
    );

    // Plain text part: readable on its own.
    assert!(
        mail.text
            .lines()
            .any(|l| l == "Asylum rule: fees < $500 & forms"),
        "titles are plain text, feed markup dropped: {}",
        mail.text
    );
    assert!(!mail.text.contains("alert("), "{}", mail.text);
    assert!(
        mail.text
            .contains("The new *asylum* rule takes effect in January."),
        "{}",
        mail.text
    );
    assert!(
        mail.text
            .contains("Injected Bcc: victim@evil.example X-Evil: 1")
    );

    // HTML part: highlights, absolute links, nothing active.
    let feed_origin = feeds.url("/");
    let absolute = format!("href=\"{}news/asylum-rule\"", feed_origin);
    assert!(
        mail.html.contains(&absolute),
        "relative link made absolute: {}",
        mail.html
    );
    assert!(
        mail.html.contains("The new <mark style=\"background-color:#fff0a8;color:#222222;padding:0 1px;\">asylum</mark> rule"),
        "{}",
        mail.html
    );
    let page = scraper::Html::parse_document(&mail.html);
    for element in page.root_element().descendent_elements() {
        let el = element.value();
        assert!(
            !matches!(
                el.name(),
                "script" | "img" | "iframe" | "object" | "style" | "link"
            ),
            "<{}> in the mail",
            el.name()
        );
        assert!(el.attrs().all(|(name, _)| !name.starts_with("on")));
    }
    assert!(!mail.html.contains("tracker.example"), "no remote trackers");
    assert!(
        mail.html.contains("fees &lt; $500 &amp; forms</a>"),
        "{}",
        mail.html
    );
    assert!(!mail.html.contains("alert("), "{}", mail.html);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_item_that_changes_after_it_was_sent_comes_again_marked_updated() {
    let feeds = FeedServer::start().await;
    let smtp = SmtpServer::start().await;
    let date = "Sat, 28 Nov 2026 11:00:00 GMT";
    let before = item(
        "p1",
        "Parole program pauses",
        "New parole requests are paused.",
        date,
    );
    feeds.set("/p.xml", Route::feed("application/rss+xml", rss(&before)));
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &[("agency", feeds.url("/p.xml"))], smtp.port());
    let app = App::open(config).await.unwrap();
    let now = at("2026-11-28T12:00:00Z");
    subscribe(&app, "ana@example.org", "parole", "immediate", now).await;
    subscribe(&app, "ben@example.org", "paused", "immediate", now).await;
    poll_feeds(&app, now, false).await.unwrap();
    assert_eq!(send_digests(&app, now, false).await.unwrap().queued, 2);
    smtp.wait_for(2, WAIT).await;

    // A cosmetic change (whitespace) is not news; a real edit is.
    let later = at("2026-11-28T13:00:00Z");
    let same = item(
        "p1",
        "Parole program  pauses",
        "New parole requests are paused. ",
        date,
    );
    feeds.set("/p.xml", Route::feed("application/rss+xml", rss(&same)));
    poll_feeds(&app, later, false).await.unwrap();
    assert_eq!(send_digests(&app, later, false).await.unwrap().queued, 0);

    let edited = item(
        "p1",
        "Parole program resumes",
        "New parole requests are accepted again from December 1.",
        date,
    );
    feeds.set("/p.xml", Route::feed("application/rss+xml", rss(&edited)));
    let poll = poll_feeds(&app, at("2026-11-28T14:00:00Z"), false)
        .await
        .unwrap();
    assert_eq!((poll.new_items, poll.updated_items), (0, 1), "{poll:?}");
    let sent = send_digests(&app, at("2026-11-28T14:00:00Z"), false)
        .await
        .unwrap();
    assert_eq!(sent.queued, 1, "only ana: ben's query no longer matches");
    let got = smtp.wait_for(3, WAIT).await;
    let update = decode(&got[2]);
    assert_eq!(update.to, "ana@example.org");
    assert_eq!(update.subject, "Tidings: 1 updated — parole (1)");
    assert!(
        update.text.contains("[Updated] Parole program resumes"),
        "{}",
        update.text
    );
    assert!(update.html.contains(">Updated</span>"), "{}", update.html);
    assert!(
        update.text.contains("accepted again"),
        "the new text: {}",
        update.text
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn feeds_that_keep_failing_are_named_in_the_footer() {
    let feeds = FeedServer::start().await;
    let smtp = SmtpServer::start().await;
    feeds.set("/down.xml", Route::status(503, "maintenance"));
    feeds.set("/up.xml", Route::feed("application/rss+xml", rss("")));
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        &[
            ("down", feeds.url("/down.xml")),
            ("up", feeds.url("/up.xml")),
        ],
        smtp.port(),
    );
    let app = App::open(config).await.unwrap();
    let t0 = at("2026-11-28T12:00:00Z");
    subscribe(&app, "ana@example.org", "asylum", "immediate", t0).await;
    for hours in 0..3 {
        poll_feeds(&app, t0 + chrono::Duration::hours(hours), false)
            .await
            .unwrap();
    }
    let news = item(
        "n1",
        "Asylum office hours",
        "Asylum offices open on Saturdays.",
        "Sat, 28 Nov 2026 14:30:00 GMT",
    );
    feeds.set("/up.xml", Route::feed("application/rss+xml", rss(&news)));
    let t3 = at("2026-11-28T15:00:00Z");
    poll_feeds(&app, t3, false).await.unwrap();
    send_digests(&app, t3, false).await.unwrap();
    let mail = decode(&smtp.wait_for(1, WAIT).await[0]);
    // Failing since the first failure, shown in the subscriber's zone (New York).
    let line = "down feed: failing since Nov 28 07:00 EST (HTTP 503";
    assert!(mail.text.contains(line), "{}", mail.text);
    assert!(mail.html.contains(line), "{}", mail.html);
    assert!(!mail.text.contains("up feed: failing"), "{}", mail.text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schedules_follow_each_subscribers_zone_and_overdue_digests_go_once() {
    let feeds = FeedServer::start().await;
    let smtp = SmtpServer::start().await;
    let first = item(
        "v1",
        "Visa bulletin for December",
        "The visa bulletin moves family dates.",
        "Sat, 28 Nov 2026 11:00:00 GMT",
    );
    feeds.set("/v.xml", Route::feed("application/rss+xml", rss(&first)));
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &[("state", feeds.url("/v.xml"))], smtp.port());
    let app = App::open(config).await.unwrap();
    let now = at("2026-11-28T12:00:00Z"); // a Saturday
    subscribe_in(
        &app,
        "london@example.org",
        "visa",
        "daily 08:00",
        chrono_tz::Europe::London,
        now,
    )
    .await;
    subscribe_in(
        &app,
        "tokyo@example.org",
        "visa",
        "weekly mon 09:00",
        chrono_tz::Asia::Tokyo,
        now,
    )
    .await;
    subscribe_in(
        &app,
        "hourly@example.org",
        "visa",
        "hourly",
        chrono_tz::UTC,
        now,
    )
    .await;
    poll_feeds(&app, now, false).await.unwrap();

    let round = |t: &str| {
        let app = app.clone();
        let t = at(t);
        async move { send_digests(&app, t, false).await.unwrap().queued }
    };
    assert_eq!(round("2026-11-28T12:00:00Z").await, 0, "nobody is due yet");
    assert_eq!(round("2026-11-28T13:00:00Z").await, 1, "the hourly one");
    let got = smtp.wait_for(1, WAIT).await;
    assert_eq!(decode(&got[0]).to, "hourly@example.org");

    // The daemon is down from Saturday until Wednesday 10:00 UTC. London missed four
    // 08:00s and Tokyo its Monday 09:00: each gets one digest, not one per missed slot.
    assert_eq!(round("2026-12-02T10:00:00Z").await, 2);
    assert_eq!(round("2026-12-02T10:00:30Z").await, 0);
    let got = smtp.wait_for(3, WAIT).await;
    let mut to: Vec<String> = got[1..].iter().map(|m| decode(m).to).collect();
    to.sort();
    assert_eq!(to, ["london@example.org", "tokyo@example.org"]);

    let next = async |email: &str| {
        app.store
            .subscriber(email)
            .await
            .unwrap()
            .unwrap()
            .next_digest_at
            .unwrap()
    };
    assert_eq!(next("london@example.org").await, at("2026-12-03T08:00:00Z"));
    assert_eq!(
        next("tokyo@example.org").await,
        at("2026-12-07T00:00:00Z"),
        "09:00 JST"
    );

    // A match that arrives after London's slot waits for the next 08:00.
    let second = item(
        "v2",
        "Visa fees rise",
        "Visa fees rise in January.",
        "Wed, 02 Dec 2026 11:00:00 GMT",
    );
    feeds.set(
        "/v.xml",
        Route::feed("application/rss+xml", rss(&(second + &first))),
    );
    poll_feeds(&app, at("2026-12-02T12:00:00Z"), false)
        .await
        .unwrap();
    // No round ran since 10:00:30, so hourly's 11:00 slot is overdue: sent at once.
    assert_eq!(round("2026-12-02T12:00:30Z").await, 1, "hourly");
    assert_eq!(
        round("2026-12-02T13:00:00Z").await,
        0,
        "nothing new for hourly"
    );
    assert_eq!(round("2026-12-03T07:59:59Z").await, 0, "London waits");
    assert_eq!(
        round("2026-12-03T08:00:00Z").await,
        1,
        "London at 08:00 GMT"
    );
    let got = smtp.wait_for(5, WAIT).await;
    let london = decode(&got[4]);
    assert_eq!(london.to, "london@example.org");
    assert!(london.text.contains("Visa fees rise"));
    assert!(!london.text.contains("Visa bulletin"), "already sent");
    assert!(
        london.text.contains("Dec 2, 2026 11:00 GMT"),
        "dates in the subscriber's zone: {}",
        london.text
    );
    assert!(london.text.contains("(daily at 08:00)"), "{}", london.text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_address_that_keeps_bouncing_is_paused_until_resumed() {
    let feeds = FeedServer::start().await;
    let smtp = SmtpServer::start().await;
    smtp.reject_rcpt("gone@example.org", 550, "5.1.1 mailbox unavailable");
    feeds.set("/f.xml", Route::feed("application/rss+xml", rss("")));
    let dir = tempfile::tempdir().unwrap();
    let config = write_config_with(
        dir.path(),
        &[("agency", feeds.url("/f.xml"))],
        smtp.port(),
        "pause_after_bounces = 2",
        "",
    );
    let app = App::open(config).await.unwrap();
    let t0 = at("2026-11-28T12:00:00Z");
    subscribe(&app, "gone@example.org", "asylum", "immediate", t0).await;
    subscribe(&app, "ok@example.org", "asylum", "immediate", t0).await;
    poll_feeds(&app, t0, false).await.unwrap();

    let mut items = String::new();
    let mut rounds = Vec::new();
    for n in 1..=3 {
        let t = t0 + chrono::Duration::hours(n);
        items.push_str(&item(
            &format!("i{n}"),
            &format!("Asylum update {n}"),
            "Asylum news.",
            &t.to_rfc2822(),
        ));
        feeds.set("/f.xml", Route::feed("application/rss+xml", rss(&items)));
        poll_feeds(&app, t, false).await.unwrap();
        rounds.push(send_digests(&app, t, false).await.unwrap());
    }
    let summary: Vec<_> = rounds
        .iter()
        .map(|r| {
            (
                r.queued,
                r.delivery.sent,
                r.delivery.failed,
                r.delivery.paused,
            )
        })
        .collect();
    assert_eq!(
        summary,
        [(2, 1, 1, 0), (2, 1, 1, 1), (1, 1, 0, 0)],
        "bounce, bounce → paused, then only ok@ is sent to"
    );
    let gone = app
        .store
        .subscriber("gone@example.org")
        .await
        .unwrap()
        .unwrap();
    assert!(gone.paused_at.is_some());
    assert_eq!(gone.bounces, 2);
    let failed: Vec<_> = app
        .store
        .outbox()
        .await
        .unwrap()
        .into_iter()
        .filter(|m| m.status == OutboxStatus::Failed)
        .collect();
    assert_eq!(failed.len(), 2);
    assert!(
        failed[0]
            .last_error
            .as_deref()
            .unwrap()
            .contains("mailbox unavailable")
    );
    assert_eq!(smtp.messages().len(), 3, "ok@ got all three");

    // Resumed: the matches kept while paused go out in the next round.
    assert!(
        app.store
            .resume_subscriber("gone@example.org")
            .await
            .unwrap()
    );
    let after = send_digests(&app, t0 + chrono::Duration::hours(4), false)
        .await
        .unwrap();
    assert_eq!(after.queued, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mail_deferred_past_the_maximum_age_is_given_up_with_the_reason() {
    let feeds = FeedServer::start().await;
    // A port with nothing listening: every attempt is refused.
    let port = SmtpServer::start().await.port();
    let news = item(
        "a",
        "Asylum news",
        "Asylum.",
        "Sat, 28 Nov 2026 11:00:00 GMT",
    );
    feeds.set("/f.xml", Route::feed("application/rss+xml", rss(&news)));
    let dir = tempfile::tempdir().unwrap();
    let config = write_config_with(
        dir.path(),
        &[("agency", feeds.url("/f.xml"))],
        port,
        "max_age = \"1h\"",
        "",
    );
    let app = App::open(config).await.unwrap();
    let t0 = at("2026-11-28T12:00:00Z");
    subscribe(&app, "ana@example.org", "asylum", "immediate", t0).await;
    poll_feeds(&app, t0, false).await.unwrap();
    let first = send_digests(&app, t0, false).await.unwrap();
    assert_eq!((first.delivery.retrying, first.delivery.failed), (1, 0));
    let later = send_digests(&app, t0 + chrono::Duration::minutes(30), false)
        .await
        .unwrap();
    assert_eq!((later.delivery.retrying, later.delivery.failed), (1, 0));
    let last = send_digests(&app, t0 + chrono::Duration::minutes(90), false)
        .await
        .unwrap();
    assert_eq!((last.delivery.retrying, last.delivery.failed), (0, 1));
    let row = &app.store.outbox().await.unwrap()[0];
    assert_eq!(row.status, OutboxStatus::Failed);
    let error = row.last_error.as_deref().unwrap();
    assert!(error.starts_with("gave up after 3 attempts: "), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rate_limit_spaces_messages_out() {
    let feeds = FeedServer::start().await;
    let smtp = SmtpServer::start().await;
    let news = item(
        "a",
        "Asylum news",
        "Asylum.",
        "Sat, 28 Nov 2026 11:00:00 GMT",
    );
    feeds.set("/f.xml", Route::feed("application/rss+xml", rss(&news)));
    let dir = tempfile::tempdir().unwrap();
    let config = write_config_with(
        dir.path(),
        &[("agency", feeds.url("/f.xml"))],
        smtp.port(),
        "rate_limit = 300", // one message per 200 ms
        "",
    );
    let app = App::open(config).await.unwrap();
    let t0 = at("2026-11-28T12:00:00Z");
    for n in 0..5 {
        subscribe(
            &app,
            &format!("s{n}@example.org"),
            "asylum",
            "immediate",
            t0,
        )
        .await;
    }
    poll_feeds(&app, t0, false).await.unwrap();
    let started = Instant::now();
    let sent = send_digests(&app, t0, false).await.unwrap();
    let took = started.elapsed();
    assert_eq!(sent.delivery.sent, 5);
    // Not a speed claim: a lower bound the limiter must enforce (four 200 ms gaps).
    assert!(took >= Duration::from_millis(790), "{took:?}");
}
