//! One story, one alert: items of different feeds that carry the same news are grouped
//! when stored, shown once in a digest with "also covered by", and a subscriber who got a
//! story hears of new outlets as they chose (never / in the next digest / always). Real
//! HTTP feeds, a real SMTP server, a real SQLite file.

mod support;

use std::time::Duration;

use support::{FeedServer, Route, SmtpServer, at, decode, subscribe, write_config};
use tidings::store::NewOutlets;
use tidings::{App, poll_feeds, send_digests};

const WAIT: Duration = Duration::from_secs(10);

const WIRE: &str = "U.S. Citizenship and Immigration Services said Tuesday it will extend the \
    automatic extension of employment authorization documents to 540 days for asylum \
    applicants who file Form I-765 on time, citing processing backlogs at its service centers.";

fn rss(title: &str, items: &[(&str, &str, &str, &str)]) -> Route {
    let items: String = items
        .iter()
        .map(|(guid, title, link, text)| {
            format!(
                "<item><guid>{guid}</guid><title>{title}</title><link>{link}</link>\
                 <description>{text}</description>\
                 <pubDate>Tue, 01 Dec 2026 11:00:00 GMT</pubDate></item>"
            )
        })
        .collect();
    Route::feed(
        "application/rss+xml",
        format!(
            "<?xml version=\"1.0\"?><rss version=\"2.0\"><channel><title>{title}</title>\
             <link>https://news.example/</link><description>d</description>{items}\
             </channel></rss>"
        ),
    )
}

fn agency_item() -> (&'static str, &'static str, &'static str, &'static str) {
    (
        "uscis-1",
        "USCIS extends EAD automatic extension to 540 days",
        "https://uscis.example/news/ead-540",
        WIRE,
    )
}

fn outlet_copy() -> (&'static str, &'static str, &'static str, String) {
    (
        "vv-1",
        "US immigration agency extends work permit extension to 540 days",
        "https://visaverge.example/ead-540-days",
        format!("WASHINGTON — {WIRE} The post appeared first on VisaVerge."),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_story_carried_by_several_feeds_is_shown_once_and_new_outlets_as_chosen() {
    let feeds = FeedServer::start().await;
    let smtp = SmtpServer::start().await;
    let copy = outlet_copy();
    feeds.set("/uscis.xml", rss("USCIS", &[agency_item()]));
    feeds.set(
        "/vv.xml",
        rss("VisaVerge", &[(copy.0, copy.1, copy.2, copy.3.as_str())]),
    );
    feeds.set("/third.xml", rss("Third", &[]));
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        &[
            ("uscis", feeds.url("/uscis.xml")),
            ("vv", feeds.url("/vv.xml")),
            ("third", feeds.url("/third.xml")),
        ],
        smtp.port(),
    );
    let app = App::open(config).await.unwrap();
    let now = at("2026-12-01T12:00:00Z");
    for who in ["next", "never", "always"] {
        subscribe(
            &app,
            &format!("{who}@example.org"),
            "asylum",
            "immediate",
            now,
        )
        .await;
    }
    for (who, choice) in [("never", NewOutlets::Never), ("always", NewOutlets::Always)] {
        let s = app
            .store
            .subscriber(&format!("{who}@example.org"))
            .await
            .unwrap()
            .unwrap();
        assert!(app.store.set_new_outlets(s.id, choice).await.unwrap());
    }
    // The first poll is the feeds' baseline; the items are recent, so they match.
    poll_feeds(&app, now, false).await.unwrap();
    let sent = send_digests(&app, now, false).await.unwrap();
    assert_eq!(sent.queued, 3, "{sent:?}");
    let got = smtp.wait_for(3, WAIT).await;
    for mail in got.iter().map(decode) {
        // One story: both carry the wire; one version is shown (the story's first), the
        // other outlet is "also covered by", linked.
        assert_eq!(mail.subject, "Tidings: 1 new — asylum (1)", "{}", mail.text);
        let shown = ["USCIS extends EAD", "US immigration agency extends"]
            .iter()
            .filter(|t| mail.text.contains(*t))
            .count();
        assert_eq!(shown, 1, "one version of the story:\n{}", mail.text);
        assert!(mail.text.contains("  Also covered by:"), "{}", mail.text);
        assert!(
            mail.text
                .contains("- uscis feed: https://uscis.example/news/ead-540")
                || mail
                    .text
                    .contains("- vv feed: https://visaverge.example/ead-540-days"),
            "the other outlet, linked:\n{}",
            mail.text
        );
    }

    // A third outlet carries the story after everyone got it.
    let later = now + chrono::Duration::hours(1);
    feeds.set(
        "/third.xml",
        rss(
            "Third",
            &[(
                "t-1",
                "Work permits: USCIS extends automatic extension to 540 days",
                "https://third.example/a/1",
                &format!("{WIRE} Subscribe to our newsletter."),
            )],
        ),
    );
    poll_feeds(&app, later, false).await.unwrap();
    let sent = send_digests(&app, later, false).await.unwrap();
    // Only the subscriber who wants every outlet is alerted now.
    assert_eq!(sent.queued, 1, "{sent:?}");
    let got = smtp.wait_for(4, WAIT).await;
    let always = decode(&got[3]);
    assert_eq!(always.to, "always@example.org");
    assert!(
        always.text.contains("Work permits: USCIS extends"),
        "{}",
        always.text
    );

    // Then news of another story: the subscriber who wanted new outlets in their next
    // digest gets them there, marked; the one who wanted nothing does not.
    let next_day = later + chrono::Duration::hours(1);
    feeds.set(
        "/uscis.xml",
        rss(
            "USCIS",
            &[
                agency_item(),
                (
                    "uscis-2",
                    "Asylum office opens in Atlanta",
                    "https://uscis.example/news/atlanta",
                    "A new asylum office opens in Atlanta to interview applicants from Georgia \
                     and the Carolinas starting in January.",
                ),
            ],
        ),
    );
    poll_feeds(&app, next_day, false).await.unwrap();
    let sent = send_digests(&app, next_day, false).await.unwrap();
    assert_eq!(sent.queued, 3, "{sent:?}");
    let got = smtp.wait_for(7, WAIT).await;
    let mails: Vec<_> = got[4..].iter().map(decode).collect();
    let to = |who: &str| {
        mails
            .iter()
            .find(|m| m.to == format!("{who}@example.org"))
            .unwrap_or_else(|| panic!("nothing for {who}"))
    };
    let next = to("next");
    assert!(next.text.contains("Asylum office opens in Atlanta"));
    assert!(
        next.text
            .contains("[More coverage] Work permits: USCIS extends automatic extension"),
        "{}",
        next.text
    );
    assert!(next.html.contains("More coverage</span>"), "{}", next.html);
    assert_eq!(next.subject, "Tidings: 1 new — asylum (2)", "{}", next.text);
    let never = to("never");
    assert!(never.text.contains("Asylum office opens in Atlanta"));
    assert!(!never.text.contains("Work permits"), "{}", never.text);
    let always = to("always");
    assert!(
        !always.text.contains("Work permits"),
        "sent once: {}",
        always.text
    );
}

/// Items of one feed are never one story, however alike: a correction posted as a new
/// item, or a live blog's entries.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn items_of_one_feed_are_never_one_story() {
    let feeds = FeedServer::start().await;
    let smtp = SmtpServer::start().await;
    let (guid, title, link, text) = agency_item();
    feeds.set(
        "/uscis.xml",
        rss(
            "USCIS",
            &[
                (guid, title, link, text),
                (
                    "uscis-1b",
                    title,
                    "https://uscis.example/news/ead-540-corrected",
                    text,
                ),
            ],
        ),
    );
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        &[("uscis", feeds.url("/uscis.xml"))],
        smtp.port(),
    );
    let app = App::open(config).await.unwrap();
    let now = at("2026-12-01T12:00:00Z");
    subscribe(&app, "ana@example.org", "asylum", "immediate", now).await;
    poll_feeds(&app, now, false).await.unwrap();
    let sent = send_digests(&app, now, false).await.unwrap();
    assert_eq!(sent.queued, 1);
    let mail = decode(&smtp.wait_for(1, WAIT).await[0]);
    assert_eq!(mail.subject, "Tidings: 2 new — asylum (2)", "{}", mail.text);
    assert!(!mail.text.contains("Also covered by"), "{}", mail.text);
}

/// The admin chooses for a subscriber from the command line; the list shows a choice
/// other than the default, and a mistyped one is refused with the choices.
#[test]
fn new_outlets_are_chosen_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(&config, "database = \"t.db\"\n").unwrap();
    let run = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_tidings"))
            .arg("--config")
            .arg(&config)
            .args(args)
            .env_remove("TIDINGS_CONFIG")
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        (out.status.success(), text)
    };
    let (ok, out) = run(&["subscriber", "add", "ana@example.org", "--query", "asylum"]);
    assert!(ok, "{out}");
    let (ok, out) = run(&["subscriber", "list"]);
    assert!(
        ok && !out.contains("new outlets"),
        "the default is not shown: {out}"
    );
    let (ok, out) = run(&["subscriber", "new-outlets", "ana@example.org", "never"]);
    assert!(ok, "{out}");
    assert!(out.contains("are not sent"), "{out}");
    let (ok, out) = run(&["subscriber", "list"]);
    assert!(ok && out.contains("new outlets: never"), "{out}");
    let (ok, out) = run(&["subscriber", "new-outlets", "ana@example.org", "sometimes"]);
    assert!(
        !ok && out.contains("expected never, next or always"),
        "{out}"
    );
    let (ok, out) = run(&["subscriber", "new-outlets", "bob@example.org", "next"]);
    assert!(
        !ok && out.contains("no subscriber bob@example.org"),
        "{out}"
    );
}
