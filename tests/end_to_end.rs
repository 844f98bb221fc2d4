//! Tidings end to end, with real parts on loopback: a feed server speaking HTTP with
//! ETag/304, an SMTP server receiving real SMTP, and a SQLite file on disk. The library's
//! one-shot jobs are called directly, with the clock as a parameter.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use mail_parser::MessageParser;
use support::{
    FeedServer, Mail, Received, Route, SmtpServer, at, decode, fixture, subscribe, write_config,
};
use tidings::config::Config;
use tidings::store::{OutboxStatus, PollStatus};
use tidings::{App, poll_feeds, send_digests};

const WAIT: Duration = Duration::from_secs(10);

/// The text a reader sees in an HTML part (tags such as highlights removed).
fn visible_text(html: &str) -> String {
    scraper::Html::parse_document(html)
        .root_element()
        .text()
        .collect()
}

fn by_recipient(messages: &[Received]) -> BTreeMap<String, Mail> {
    let mut out = BTreeMap::new();
    for m in messages {
        let mail = decode(m);
        assert!(
            out.insert(mail.to.clone(), mail).is_none(),
            "one digest per recipient"
        );
    }
    out
}

async fn serve_fixtures(server: &FeedServer) -> Vec<(&'static str, String)> {
    server.set(
        "/uscis.xml",
        Route::feed("application/rss+xml", fixture("uscis.xml")),
    );
    server.set(
        "/govuk.atom",
        Route::feed("application/atom+xml", fixture("govuk.atom")),
    );
    server.set(
        "/visaverge.json",
        Route::feed("application/feed+json", fixture("visaverge.json")),
    );
    server.set(
        "/noticias.xml",
        Route::feed("text/xml", fixture("noticias-latin1.xml")),
    );
    vec![
        ("uscis", server.url("/uscis.xml")),
        ("govuk", server.url("/govuk.atom")),
        ("visaverge", server.url("/visaverge.json")),
        ("noticias", server.url("/noticias.xml")),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_subscriber_gets_the_right_items_exactly_once() {
    let feeds = FeedServer::start().await;
    let smtp = SmtpServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &serve_fixtures(&feeds).await, smtp.port());
    assert_eq!(
        config.database,
        tidings::config::Database::Sqlite(dir.path().join("data/tidings.db")),
        "relative to the config"
    );
    let now = at("2026-11-28T12:00:00Z");

    let app = App::open(config.clone()).await.unwrap();
    subscribe(&app, "alice@example.org", "asylum", "immediate", now).await;
    subscribe(&app, "bob@example.org", "\"H-1B\" OR TPS", "immediate", now).await;
    subscribe(&app, "carol@example.org", "jose asilo", "immediate", now).await;
    subscribe(&app, "dave@example.org", "ICE", "immediate", now).await;
    subscribe(&app, "erin@example.org", "\"skilled worker\"", "daily", now).await;

    // First poll: every item is stored as the baseline; only recent ones can match.
    let poll = poll_feeds(&app, now, false).await.unwrap();
    assert_eq!(
        (poll.feeds, poll.updated, poll.failed),
        (4, 4, 0),
        "{poll:?}"
    );
    assert_eq!(poll.new_items, 9, "{poll:?}");

    let digests = send_digests(&app, now, false).await.unwrap();
    assert_eq!(
        digests.queued, 3,
        "alice, bob, carol; dave matched nothing; erin is daily"
    );
    assert_eq!(digests.delivery.sent, 3);
    let mail = by_recipient(&smtp.wait_for(3, WAIT).await);
    assert_eq!(
        mail.keys().collect::<Vec<_>>(),
        ["alice@example.org", "bob@example.org", "carol@example.org"]
    );

    let alice = &mail["alice@example.org"];
    assert_eq!(alice.subject, "Tidings: 1 new — asylum (1)");
    assert!(
        alice
            .text
            .contains("Asylum accommodation: update for November")
    );
    assert!(
        alice
            .text
            .contains("Changes to *asylum* support & accommodation."),
        "{}",
        alice.text
    );
    assert!(
        alice
            .text
            .contains("https://www.gov.uk/government/news/asylum-accommodation-update")
    );
    assert!(
        !alice.text.contains("Backlog Report"),
        "an old item is not news: {}",
        alice.text
    );
    assert!(
        !alice.text.contains("H-1B"),
        "markup (class=\"asylum-banner\") never matches"
    );
    assert!(
        alice.content_type.starts_with("multipart/alternative"),
        "{}",
        alice.content_type
    );
    assert!(
        alice
            .html
            .contains("<a href=\"https://www.gov.uk/government/news/asylum-accommodation-update\"")
    );
    assert!(
        alice.message_id.ends_with("@tidings.test"),
        "our own Message-ID: {}",
        alice.message_id
    );

    let bob = &mail["bob@example.org"];
    // Two stories, each carried by USCIS and VisaVerge: each shown once (the one stored
    // first, the story's original), the other outlet linked under it.
    let lines: Vec<&str> = bob.text.lines().collect();
    for (uscis, visaverge, uscis_link, visaverge_link) in [
        (
            "USCIS Announces New H-1B Registration Period",
            "USCIS opens H-1B registration",
            "https://www.uscis.gov/newsroom/news-releases/h1b-registration",
            "https://www.visaverge.com/news/uscis-h1b-registration/",
        ),
        (
            "TPS Extended for Venezuela",
            "What the TPS extension means for Venezuelans",
            "https://www.uscis.gov/newsroom/news-releases/tps-venezuela",
            "https://www.visaverge.com/news/tps-venezuela-explained/",
        ),
    ] {
        let shown = [uscis, visaverge]
            .into_iter()
            .filter(|t| {
                bob.text.matches(t).count() == 1 && visible_text(&bob.html).matches(t).count() == 1
            })
            .count();
        assert_eq!(shown, 1, "{uscis}: once, in both parts:\n{}", bob.text);
        assert!(
            lines.windows(2).any(|w| w[0] == "  Also covered by:"
                && (w[1] == format!("    - uscis feed: {uscis_link}")
                    || w[1] == format!("    - visaverge feed: {visaverge_link}"))),
            "{}",
            bob.text
        );
    }
    assert!(
        bob.html.contains(
            "<mark style=\"background-color:#fff0a8;color:#222222;padding:0 1px;\">H-1B</mark>"
        ),
        "matched words highlighted: {}",
        bob.html
    );
    assert!(bob.subject.starts_with("Tidings: 2 new"), "{}", bob.subject);
    assert!(
        !bob.html.contains("<script"),
        "feed scripts never reach the mail"
    );
    assert!(
        bob.text
            .contains("https://www.uscis.gov/newsroom/news-releases/h1b-registration")
    );
    assert!(!bob.text.contains("utm_"), "canonical links: {}", bob.text);

    let carol = &mail["carol@example.org"];
    assert!(
        carol.text.contains("José García obtiene asilo político"),
        "ISO-8859-1 decoded: {}",
        carol.text
    );

    // Nothing changed: every feed answers 304 and nobody hears anything.
    let later = at("2026-11-28T12:20:00Z");
    let poll = poll_feeds(&app, later, false).await.unwrap();
    assert_eq!((poll.not_modified, poll.new_items), (4, 0), "{poll:?}");
    for path in [
        "/uscis.xml",
        "/govuk.atom",
        "/visaverge.json",
        "/noticias.xml",
    ] {
        assert_eq!(feeds.not_modified(path), 1, "{path} answered 304");
    }
    let digests = send_digests(&app, later, false).await.unwrap();
    assert_eq!((digests.queued, digests.delivery.sent), (0, 0));

    // The daily subscriber gets theirs at 08:00 New York time (13:00 UTC), once.
    let eight_am = at("2026-11-28T13:00:00Z");
    let digests = send_digests(&app, eight_am, false).await.unwrap();
    assert_eq!(digests.queued, 1);
    let all = smtp.wait_for(4, WAIT).await;
    let erin = decode(&all[3]);
    assert_eq!(erin.to, "erin@example.org");
    assert!(erin.text.contains("Skilled Worker visa fees change"));
    let digests = send_digests(&app, at("2026-11-29T12:00:00Z"), false)
        .await
        .unwrap();
    assert_eq!(digests.queued, 0, "no new matches, no empty digest");

    // Reopen the database with a fresh process state: still nothing new to send.
    drop(app);
    let app = App::open(config.clone()).await.unwrap();
    let poll = poll_feeds(&app, at("2026-11-28T14:00:00Z"), false)
        .await
        .unwrap();
    assert_eq!(poll.new_items, 0);
    let digests = send_digests(&app, at("2026-11-28T14:00:00Z"), true)
        .await
        .unwrap();
    assert_eq!(digests.queued, 0);
    assert_eq!(smtp.messages().len(), 4);

    // A genuinely new item after the baseline reaches exactly the subscriber it matches.
    let updated = String::from_utf8(fixture("uscis.xml")).unwrap().replacen(
        "<item>",
        "<item><title>New asylum interview guidance</title><guid>uscis-new-1</guid>\
         <link>https://www.uscis.gov/newsroom/asylum-interviews</link>\
         <pubDate>Sat, 28 Nov 2026 14:30:00 GMT</pubDate></item><item>",
        1,
    );
    feeds.set("/uscis.xml", Route::feed("application/rss+xml", updated));
    let poll = poll_feeds(&app, at("2026-11-28T15:00:00Z"), false)
        .await
        .unwrap();
    assert_eq!((poll.new_items, poll.matches), (1, 1), "{poll:?}");
    send_digests(&app, at("2026-11-28T15:00:00Z"), false)
        .await
        .unwrap();
    let all = smtp.wait_for(5, WAIT).await;
    assert_eq!(all.len(), 5);
    let fifth = decode(&all[4]);
    assert_eq!(fifth.to, "alice@example.org");
    assert!(fifth.text.contains("New asylum interview guidance"));
    assert!(
        !fifth.text.contains("accommodation"),
        "already sent items are not repeated"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_feeds_are_recorded_while_the_others_go_on() {
    let feeds = FeedServer::start().await;
    let smtp = SmtpServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    feeds.set(
        "/good.xml",
        Route::feed("application/rss+xml", fixture("uscis.xml")),
    );
    feeds.set(
        "/garbage.xml",
        Route::feed("application/rss+xml", &b"\x00\x13 <<<< not xml"[..]),
    );
    feeds.set(
        "/page.html",
        Route::feed(
            "text/html",
            "<!DOCTYPE html><html><head><link rel=\"alternate\" type=\"application/rss+xml\" href=\"/feed\"></head><body>News</body></html>",
        ),
    );
    let config = write_config(
        dir.path(),
        &[
            ("good", feeds.url("/good.xml")),
            ("missing", feeds.url("/missing.xml")),
            ("garbage", feeds.url("/garbage.xml")),
            ("page", feeds.url("/page.html")),
        ],
        smtp.port(),
    );
    let now = at("2026-11-28T12:00:00Z");
    let app = App::open(config).await.unwrap();
    subscribe(&app, "bob@example.org", "TPS", "immediate", now).await;

    let poll = poll_feeds(&app, now, false).await.unwrap();
    assert_eq!(
        (poll.updated, poll.failed, poll.new_items),
        (1, 3, 4),
        "{poll:?}"
    );

    let status: BTreeMap<_, _> = app
        .store
        .feed_statuses()
        .await
        .unwrap()
        .into_iter()
        .map(|s| (s.id.clone(), s))
        .collect();
    let expect = [
        ("missing", "http", "HTTP 404 Not Found"),
        ("garbage", "parse", "not a feed"),
        ("page", "parse", "HTML page"),
    ];
    for (id, kind, words) in expect {
        let s = &status[id];
        assert_eq!(s.last_status, Some(PollStatus::Error), "{id}");
        assert_eq!(s.last_error_kind.as_deref(), Some(kind), "{id}");
        assert!(
            s.last_error.as_deref().unwrap_or("").contains(words),
            "{id}: {:?}",
            s.last_error
        );
        assert_eq!(s.consecutive_failures, 1, "{id}");
        assert!(s.next_poll_at > now, "{id} backs off");
        assert_eq!(s.items, 0, "{id}");
    }
    assert_eq!(status["good"].last_status, Some(PollStatus::Ok));
    assert_eq!(status["good"].items, 4);

    // The good feed's match is delivered despite its neighbours.
    send_digests(&app, now, false).await.unwrap();
    let mail = smtp.wait_for(1, WAIT).await;
    assert!(decode(&mail[0]).text.contains("TPS Extended for Venezuela"));

    // A second failure counts up; recovery resets the count and is a baseline (no flood).
    poll_feeds(&app, at("2026-11-28T13:00:00Z"), false)
        .await
        .unwrap();
    assert_eq!(app.store.consecutive_failures("missing").await.unwrap(), 2);
    feeds.set(
        "/missing.xml",
        Route::feed("application/rss+xml", fixture("govuk.atom")),
    );
    let poll = poll_feeds(&app, at("2026-11-30T12:00:00Z"), false)
        .await
        .unwrap();
    assert_eq!(poll.new_items, 2, "{poll:?}");
    assert_eq!(
        poll.matches, 0,
        "items older than the backlog are a baseline, not news"
    );
    assert_eq!(app.store.consecutive_failures("missing").await.unwrap(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_fetches_never_make_old_items_new() {
    let feeds = FeedServer::start().await;
    let smtp = SmtpServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    feeds.set(
        "/f.xml",
        Route::feed("application/rss+xml", fixture("uscis.xml")),
    );
    let config = write_config(dir.path(), &[("f", feeds.url("/f.xml"))], smtp.port());
    let now = at("2026-11-28T12:00:00Z");
    let app = App::open(config).await.unwrap();
    subscribe(&app, "bob@example.org", "TPS", "immediate", now).await;
    poll_feeds(&app, now, false).await.unwrap();
    send_digests(&app, now, false).await.unwrap();
    assert_eq!(smtp.wait_for(1, WAIT).await.len(), 1);

    // Server errors, garbage, an empty body, then the same feed again without validators.
    let faults = [
        Route::status(500, "oops"),
        Route::feed(
            "application/rss+xml",
            "<rss version=\"2.0\"><channel><item><title>trunc",
        ),
        Route::status(200, ""),
        Route::status(200, fixture("uscis.xml")).header("content-type", "application/rss+xml"),
    ];
    for (i, route) in faults.into_iter().enumerate() {
        feeds.set("/f.xml", route);
        let t = now + chrono::Duration::hours(i as i64 + 1);
        let poll = poll_feeds(&app, t, false).await.unwrap();
        assert_eq!(poll.new_items, 0, "step {i}: {poll:?}");
        let digests = send_digests(&app, t, false).await.unwrap();
        assert_eq!(digests.queued, 0, "step {i}");
    }
    let status = &app.store.feed_statuses().await.unwrap()[0];
    // Recovered; the body is the one stored before the faults, so it is not parsed again.
    assert_eq!(
        status.last_status,
        Some(PollStatus::NotModified),
        "{status:?}"
    );
    assert_eq!(status.consecutive_failures, 0, "recovered");
    assert_eq!(status.items, 4);
    assert_eq!(smtp.messages().len(), 1, "nothing re-sent");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smtp_failures_are_retried_or_failed_and_nothing_is_lost() {
    let feeds = FeedServer::start().await;
    let smtp = SmtpServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    feeds.set(
        "/f.xml",
        Route::feed("application/rss+xml", fixture("uscis.xml")),
    );
    let config = write_config(dir.path(), &[("f", feeds.url("/f.xml"))], smtp.port());
    let now = at("2026-11-28T12:00:00Z");
    let app = App::open(config).await.unwrap();
    subscribe(&app, "bob@example.org", "TPS", "immediate", now).await;
    subscribe(&app, "nobody@example.org", "H-1B", "immediate", now).await;
    smtp.fail_next(1, 451, "greylisted, try later");
    smtp.reject_rcpt("nobody@example.org", 550, "no such user");
    poll_feeds(&app, now, false).await.unwrap();

    let digests = send_digests(&app, now, false).await.unwrap();
    assert_eq!(digests.queued, 2);
    assert_eq!(
        (
            digests.delivery.sent,
            digests.delivery.retrying,
            digests.delivery.failed
        ),
        (0, 1, 1)
    );
    let outbox = app.store.outbox().await.unwrap();
    let bob = outbox
        .iter()
        .find(|m| m.recipient == "bob@example.org")
        .unwrap();
    let nobody = outbox
        .iter()
        .find(|m| m.recipient == "nobody@example.org")
        .unwrap();
    assert_eq!(bob.status, OutboxStatus::Pending);
    assert!(
        bob.last_error.as_deref().unwrap_or("").contains("451"),
        "{:?}",
        bob.last_error
    );
    assert_eq!(nobody.status, OutboxStatus::Failed);
    assert!(
        nobody
            .last_error
            .as_deref()
            .unwrap_or("")
            .contains("no such user"),
        "{:?}",
        nobody.last_error
    );

    // Not retried before its backoff, then delivered with the Message-ID it was given.
    let soon = send_digests(&app, now + chrono::Duration::seconds(10), false)
        .await
        .unwrap();
    assert_eq!(soon.delivery.sent, 0);
    let retry = send_digests(&app, now + chrono::Duration::minutes(5), false)
        .await
        .unwrap();
    assert_eq!(retry.delivery.sent, 1);
    let got = smtp.wait_for(1, WAIT).await;
    assert_eq!(got.len(), 1);
    assert_eq!(
        decode(&got[0]).message_id,
        bob.message_id.trim_matches(['<', '>'])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_transport_writes_eml_next_to_the_config() {
    let feeds = FeedServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    feeds.set(
        "/f.xml",
        Route::feed("application/rss+xml", fixture("uscis.xml")),
    );
    let path = dir.path().join("config.toml");
    std::fs::write(
        &path,
        format!(
            "[mail]\ntransport = \"file\"\nfolder = \"outgoing\"\n[[feeds]]\nid = \"f\"\nurl = \"{}\"\n",
            feeds.url("/f.xml")
        ),
    )
    .unwrap();
    let config = Config::load(&path).unwrap();
    let now = at("2026-11-28T12:00:00Z");
    let app = App::open(config).await.unwrap();
    subscribe(&app, "bob@example.org", "TPS", "immediate", now).await;
    poll_feeds(&app, now, false).await.unwrap();
    let digests = send_digests(&app, now, false).await.unwrap();
    assert_eq!(digests.delivery.sent, 1);

    assert!(
        dir.path().join("tidings.db").exists(),
        "database next to the config"
    );
    let files: Vec<_> = std::fs::read_dir(dir.path().join("outgoing"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    let bytes = std::fs::read(&files[0]).unwrap();
    let message = MessageParser::default().parse(&bytes).unwrap();
    assert!(
        message
            .body_text(0)
            .unwrap()
            .contains("TPS Extended for Venezuela")
    );
    assert_eq!(
        message
            .to()
            .and_then(|a| a.first())
            .and_then(|a| a.address()),
        Some("bob@example.org")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scopes_synonyms_and_compounds_reach_the_right_people() {
    let feeds = FeedServer::start().await;
    let smtp = SmtpServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    feeds.set(
        "/uscis.xml",
        Route::feed("application/rss+xml", fixture("uscis.xml")),
    );
    feeds.set(
        "/govuk.atom",
        Route::feed("application/atom+xml", fixture("govuk.atom")),
    );
    feeds.set(
        "/law.xml",
        Route::feed(
            "application/rss+xml",
            "<rss version=\"2.0\"><channel><title>Law</title>\
             <item><title>Becoming a lawful permanent resident after asylum</title><guid>law-1</guid>\
             <link>https://law.example/lpr</link><pubDate>Sat, 28 Nov 2026 10:00:00 GMT</pubDate></item>\
             <item><title>I485 filing tips</title><guid>law-2</guid><link>https://law.example/i485</link>\
             <pubDate>Sat, 28 Nov 2026 10:00:00 GMT</pubDate></item></channel></rss>",
        ),
    );
    let path = dir.path().join("config.toml");
    std::fs::write(
        &path,
        format!(
            "[mail]\nfrom = \"alerts@tidings.test\"\ntransport = \"smtp\"\n\
             [mail.smtp]\nhost = \"127.0.0.1\"\nport = {}\ntls = \"none\"\n\
             [synonyms]\n\"green card\" = [\"permanent resident\", \"LPR\"]\n\
             [[feeds]]\nid = \"uscis\"\nurl = \"{}\"\ntags = [\"us\", \"official\"]\n\
             [[feeds]]\nid = \"govuk\"\nurl = \"{}\"\ntags = [\"uk\", \"official\"]\n\
             [[feeds]]\nid = \"law\"\nurl = \"{}\"\ntags = [\"us\"]\n",
            smtp.port(),
            feeds.url("/uscis.xml"),
            feeds.url("/govuk.atom"),
            feeds.url("/law.xml")
        ),
    )
    .unwrap();
    let app = App::open(Config::load(&path).unwrap()).await.unwrap();
    let now = at("2026-11-28T12:00:00Z");
    // (subscriber, query, titles they must get; nobody gets anything else)
    let cases: &[(&str, &str, &[&str])] = &[
        (
            "uk@example.org",
            "tag:uk",
            &[
                "Asylum accommodation: update for November",
                "Skilled Worker visa fees change",
            ],
        ),
        (
            "card@example.org",
            "\"green card\"",
            &["Becoming a lawful permanent resident after asylum"],
        ),
        ("form@example.org", "I-485", &["I485 filing tips"]),
        (
            "official-asylum@example.org",
            "asylum tag:official -feed:govuk",
            &[],
        ),
        (
            "title@example.org",
            "title:asylum",
            &[
                "Asylum accommodation: update for November",
                "Becoming a lawful permanent resident after asylum",
            ],
        ),
    ];
    for (email, query, _) in cases {
        subscribe(&app, email, query, "immediate", now).await;
    }
    poll_feeds(&app, now, false).await.unwrap();
    send_digests(&app, now, false).await.unwrap();
    let expected_mails = cases
        .iter()
        .filter(|(_, _, titles)| !titles.is_empty())
        .count();
    let mail = by_recipient(&smtp.wait_for(expected_mails, WAIT).await);
    assert_eq!(
        mail.len(),
        expected_mails,
        "{:?}",
        mail.keys().collect::<Vec<_>>()
    );
    let all_titles = [
        "Asylum accommodation: update for November",
        "Skilled Worker visa fees change",
        "Becoming a lawful permanent resident after asylum",
        "I485 filing tips",
        "TPS Extended for Venezuela",
        "USCIS Announces New H-1B Registration Period",
    ];
    for (email, query, titles) in cases {
        let Some(got) = mail.get(*email) else {
            assert!(titles.is_empty(), "{email} ({query}) got nothing");
            continue;
        };
        for title in all_titles {
            assert_eq!(
                got.text.contains(title),
                titles.contains(&title),
                "{email} ({query}): {title}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriptions_added_or_removed_between_polls_take_effect() {
    let feeds = FeedServer::start().await;
    let smtp = SmtpServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    feeds.set(
        "/f.xml",
        Route::feed("application/rss+xml", fixture("uscis.xml")),
    );
    let config = write_config(dir.path(), &[("f", feeds.url("/f.xml"))], smtp.port());
    let now = at("2026-11-28T12:00:00Z");
    let app = App::open(config).await.unwrap();
    subscribe(&app, "old@example.org", "police", "immediate", now).await;
    poll_feeds(&app, now, false).await.unwrap();

    // Same App (its compiled matcher is cached): a new subscriber is matched from now on,
    // a removed one no longer is.
    subscribe(&app, "new@example.org", "asylum", "immediate", now).await;
    assert!(
        app.store
            .remove_subscriber("old@example.org")
            .await
            .unwrap()
    );
    let body = String::from_utf8(fixture("uscis.xml")).unwrap().replacen(
        "<item>",
        "<item><title>Asylum and police cooperation</title><guid>fresh</guid>\
         <pubDate>Sat, 28 Nov 2026 12:30:00 GMT</pubDate></item><item>",
        1,
    );
    feeds.set("/f.xml", Route::feed("application/rss+xml", body));
    let later = at("2026-11-28T13:00:00Z");
    let poll = poll_feeds(&app, later, false).await.unwrap();
    assert_eq!((poll.new_items, poll.matches), (1, 1), "{poll:?}");
    send_digests(&app, later, false).await.unwrap();
    let got = smtp.wait_for(1, WAIT).await;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].rcpt_to, ["new@example.org"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn digests_wait_out_a_mail_server_outage_and_all_arrive() {
    let feeds = FeedServer::start().await;
    let smtp = SmtpServer::start().await;
    let port = smtp.port();
    drop(smtp); // the mail server goes down before anything is sent
    tokio::time::sleep(Duration::from_millis(100)).await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &serve_fixtures(&feeds).await, port);
    let now = at("2026-11-28T12:00:00Z");
    let app = App::open(config).await.unwrap();
    subscribe(&app, "alice@example.org", "asylum", "immediate", now).await;
    subscribe(&app, "bob@example.org", "TPS", "immediate", now).await;
    poll_feeds(&app, now, false).await.unwrap();

    // Down for a while: every round defers both digests, nothing is lost or duplicated.
    let mut t = now;
    for _ in 0..3 {
        let round = send_digests(&app, t, false).await.unwrap();
        assert_eq!(round.delivery.sent, 0);
        t += chrono::Duration::minutes(10);
    }
    let outbox = app.store.outbox().await.unwrap();
    assert_eq!(outbox.len(), 2, "one digest each, not one per round");
    assert!(
        outbox
            .iter()
            .all(|m| m.status == OutboxStatus::Pending && m.attempts >= 2),
        "{outbox:?}"
    );

    // Back up on the same port: both arrive, once.
    let smtp = SmtpServer::start_on(port).await;
    let round = send_digests(&app, t + chrono::Duration::hours(1), false)
        .await
        .unwrap();
    assert_eq!(round.delivery.sent, 2, "{round:?}");
    let got = smtp.wait_for(2, WAIT).await;
    let mut to: Vec<_> = got.iter().map(|m| m.rcpt_to.join(",")).collect();
    to.sort();
    assert_eq!(to, ["alice@example.org", "bob@example.org"]);
    let again = send_digests(&app, t + chrono::Duration::hours(2), false)
        .await
        .unwrap();
    assert_eq!(again.delivery.sent, 0);
    assert_eq!(smtp.messages().len(), 2);
}
