//! Full text (issue 15), end to end on loopback: a summary-only RSS feed whose items link
//! to WordPress-style article pages (menus, sidebars, share bars, related stories,
//! comments, footers) on a server at 127.0.0.2, which the fetch policy is told to treat
//! as public (article links come from the feed, so only public addresses may be
//! fetched); 127.0.0.1 plays the private network. Real SMTP, a real SQLite file.

mod support;

use std::io::Write as _;
use std::time::Duration;

use support::articles::{Teaser, app, digest_mail, feed_table, page, public_server, rss, status};
use support::{FeedServer, Route, SmtpServer, at, fixture, subscribe};
use tidings::pipeline::{ArticleSummary, fetch_articles};
use tidings::store::ArticleCounts;
use tidings::{poll_feeds, send_digests};

/// Words the fixture page has only in its site chrome, one per part of it.
const CHROME_WORDS: [&str; 7] = [
    "Menuonlyword",
    "Sidebarword",
    "Shareonlyword",
    "Relatedonlyword",
    "Commentonlyword",
    "Newsletteronlyword",
    "Footeronlyword",
];

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

/// Words only in the story's body match; words only in its site chrome never do; the
/// digest's snippet comes from the body and says so; each article is fetched once; a
/// link that fails is visible in the feed's status, and its item still reaches the
/// subscriber it matches on its feed text.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_story_matches_the_site_around_it_never_does() {
    let site = public_server().await;
    let smtp = SmtpServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let now = at("2026-11-30T15:00:00Z");
    let story = "/2026/11/30/uscis-extends-ead/";
    site.set(story, page(fixture("article-wordpress.html")));
    site.set("/2026/11/30/gone/", Route::status(404, "Not Found"));
    let teasers = [
        Teaser {
            guid: "ead",
            title: "USCIS extends work permits",
            link: site.url(story),
            summary: "USCIS announced a change for some applicants.",
        },
        Teaser {
            guid: "gone",
            title: "Court sets hearing",
            link: site.url("/2026/11/30/gone/"),
            summary: "Teaserword: a hearing was set.",
        },
    ];
    site.set("/feed.xml", rss(&teasers, now));
    let feeds = feed_table("daily", &site.url("/feed.xml"), "");
    let app = app(dir.path(), "full_text = true", &feeds, smtp.port()).await;
    subscribe(&app, "body@example.org", "Bodyonlyword", "immediate", now).await;
    subscribe(
        &app,
        "chrome@example.org",
        &CHROME_WORDS.join(" OR "),
        "immediate",
        now,
    )
    .await;
    subscribe(&app, "teaser@example.org", "teaserword", "immediate", now).await;

    // The poll stores the items and matches nothing yet: they wait for their articles.
    let poll = poll_feeds(&app, now, false).await.unwrap();
    assert_eq!((poll.new_items, poll.matches), (2, 0), "{poll:?}");
    assert_eq!(status(&app, "daily").await.articles.pending, 2);
    assert_eq!(send_digests(&app, now, false).await.unwrap().queued, 0);

    let read = fetch_articles(&app, now).await.unwrap();
    assert_eq!(
        read,
        ArticleSummary {
            articles: 2,
            ok: 1,
            failed: 1,
            matches: 2,
            ..ArticleSummary::default()
        },
        "the story is read; the 404 is given up at once (it is not a passing failure)"
    );
    let mail = digest_mail(&app, &smtp, now, 2).await;
    let to: Vec<&str> = mail.iter().map(|m| m.to.as_str()).collect();
    assert!(
        !to.contains(&"chrome@example.org"),
        "site chrome matched: {to:?}"
    );
    let body = mail.iter().find(|m| m.to == "body@example.org").unwrap();
    assert!(
        body.text.contains("From the article:"),
        "the snippet says where it is from:\n{}",
        body.text
    );
    assert!(body.text.contains("*Bodyonlyword*"), "{}", body.text);
    assert!(
        body.html.contains("From the article:") && body.html.contains("Bodyonlyword"),
        "{}",
        body.html
    );
    for word in CHROME_WORDS {
        assert!(!body.text.contains(word), "{word} in the snippet");
    }
    let teaser = mail.iter().find(|m| m.to == "teaser@example.org").unwrap();
    assert!(
        teaser.text.contains("Court sets hearing"),
        "{}",
        teaser.text
    );
    assert!(
        !teaser.text.contains("From the article:"),
        "{}",
        teaser.text
    );

    let s = status(&app, "daily").await;
    assert_eq!(
        (s.articles.pending, s.articles.ok, s.articles.failed),
        (0, 1, 1),
        "{s:?}"
    );
    let error = s.articles.last_error.unwrap_or_default();
    assert!(error.contains("404"), "{error}");

    // The feed edits the story's teaser (same link): the article is not fetched again,
    // and the edit is matched with the stored article.
    let edited = Teaser {
        summary: "USCIS announced a change for some applicants, effective at once.",
        link: site.url(story),
        ..teasers[0]
    };
    site.set("/feed.xml", rss(&[edited], now));
    let later = now + chrono::Duration::hours(1);
    poll_feeds(&app, later, false).await.unwrap();
    let again = fetch_articles(&app, later).await.unwrap();
    assert_eq!(again.articles, 0, "{again:?}");
    assert_eq!(site.hits(story), 1, "each article is fetched once");
    assert_eq!(site.hits("/2026/11/30/gone/"), 1);
}

/// Real-world page shapes: gzip, a non-UTF-8 charset, a redirect; a paywall, a page
/// drawn by scripts and an error page served with 200 are "no article" (never their text
/// as the story); a PDF is not a page; a page over the size cap, a 410 and a private
/// address (the SSRF guard) fail at once; a slow page is tried again later, and read.
/// Every item reaches the subscriber its feed text matches, whatever its page did.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_kind_of_page_ends_visible_and_nothing_is_lost() {
    let site = public_server().await;
    let private = FeedServer::start().await;
    let smtp = SmtpServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let now = at("2026-11-30T15:00:00Z");
    let story = String::from_utf8(fixture("article-wordpress.html")).unwrap();

    site.set(
        "/gzip",
        page(gzip(story.replace("Bodyonlyword", "Gzipword").as_bytes()))
            .header("content-encoding", "gzip"),
    );
    let latin1: Vec<u8> = story
        .replace("charset=\"UTF-8\"", "charset=\"iso-8859-1\"")
        .replace("Bodyonlyword", "Se\u{f1}oraword")
        .chars()
        .map(|c| u8::try_from(u32::from(c)).unwrap_or(b'?'))
        .collect();
    site.set(
        "/latin1",
        Route::status(200, latin1).header("content-type", "text/html"),
    );
    site.set(
        "/old-address",
        Route::status(301, "").header("location", "/new-address"),
    );
    site.set(
        "/new-address",
        page(story.replace("Bodyonlyword", "Redirectword")),
    );
    site.set(
        "/paywall",
        page(
            "<html><body><article><h1>Asylum ruling</h1><p>The court ruled on Monday \
             that</p><div class=\"paywall\">Subscribe to keep reading.</div></article></body></html>",
        ),
    );
    site.set(
        "/app",
        page("<html><body><div id=\"root\"></div><script src=\"/app.js\"></script></body></html>"),
    );
    site.set(
        "/soft-404",
        page(
            "<html><head><title>Page not found</title></head><body><h1>Oops</h1>\
             <p>Sorry, that page does not exist.</p></body></html>",
        ),
    );
    site.set(
        "/form.pdf",
        Route::status(200, "%PDF-1.7 ...").header("content-type", "application/pdf"),
    );
    let huge = format!(
        "<html><body><article>{}</article></body></html>",
        "<p>Hugeword padding.</p>".repeat(60_000)
    );
    site.set("/huge", page(huge));
    site.set("/removed", Route::status(410, "Gone"));
    site.set(
        "/slow",
        page(story.replace("Bodyonlyword", "Slowword")).delay(Duration::from_secs(4)),
    );
    private.set("/internal", page(story.clone()));

    let links = [
        ("gzip", site.url("/gzip")),
        ("latin1", site.url("/latin1")),
        ("redirect", site.url("/old-address")),
        ("paywall", site.url("/paywall")),
        ("app", site.url("/app")),
        ("soft404", site.url("/soft-404")),
        ("pdf", site.url("/form.pdf")),
        ("huge", site.url("/huge")),
        ("removed", site.url("/removed")),
        ("slow", site.url("/slow")),
        ("private", private.url("/internal")),
    ];
    let teasers: Vec<Teaser<'_>> = links
        .iter()
        .map(|(guid, link)| Teaser {
            guid,
            title: guid,
            link: link.clone(),
            summary: "Everyitemword in the teaser.",
        })
        .collect();
    site.set("/feed.xml", rss(&teasers, now));
    let feeds = feed_table("daily", &site.url("/feed.xml"), "full_text = true");
    let app = app(dir.path(), "max_body_mib = 1", &feeds, smtp.port()).await;
    subscribe(&app, "all@example.org", "everyitemword", "daily", now).await;
    subscribe(
        &app,
        "story@example.org",
        "gzipword OR señoraword OR redirectword OR slowword",
        "daily",
        now,
    )
    .await;
    subscribe(
        &app,
        "never@example.org",
        "hugeword OR subscribe OR sorry",
        "daily",
        now,
    )
    .await;

    poll_feeds(&app, now, false).await.unwrap();
    let first = fetch_articles(&app, now).await.unwrap();
    assert_eq!(
        first,
        ArticleSummary {
            articles: 11,
            ok: 3,
            none: 4,
            failed: 3,
            retrying: 1,
            matches: 10 + 3,
            skipped: 0,
            ..ArticleSummary::default()
        },
        "gzip, latin1, redirect read; paywall, app, soft404, pdf: no story; huge, \
         removed, private: failed; slow: timed out, tried again later"
    );
    let s = status(&app, "daily").await;
    assert_eq!(
        s.articles,
        ArticleCounts {
            pending: 1,
            ok: 3,
            none: 4,
            failed: 3,
            last_error: s.articles.last_error.clone(),
        }
    );
    assert!(
        s.articles
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("refused by the fetch policy")),
        "the newest item's: {s:?}"
    );
    assert_eq!(
        private.hits("/internal"),
        0,
        "never fetched: a private address"
    );

    // Not yet due again: nothing is fetched.
    let early = fetch_articles(&app, now + chrono::Duration::seconds(30))
        .await
        .unwrap();
    assert_eq!(early.articles, 0);
    // The page answers in time now: read, and its item matched, once.
    site.set("/slow", page(story.replace("Bodyonlyword", "Slowword")));
    let retry = now + chrono::Duration::minutes(3);
    let second = fetch_articles(&app, retry).await.unwrap();
    assert_eq!(
        (second.articles, second.ok, second.matches),
        (1, 1, 2),
        "{second:?}"
    );

    let mail = digest_mail(&app, &smtp, retry + chrono::Duration::days(1), 2).await;
    let all = mail.iter().find(|m| m.to == "all@example.org").unwrap();
    for (guid, _) in &links {
        assert!(
            all.text.lines().any(|line| line.trim() == *guid),
            "{guid} lost:\n{}",
            all.text
        );
    }
    let story_mail = mail.iter().find(|m| m.to == "story@example.org").unwrap();
    for word in ["Gzipword", "Señoraword", "Redirectword", "Slowword"] {
        assert!(
            story_mail.text.contains(word),
            "{word}:\n{}",
            story_mail.text
        );
    }
    assert!(!mail.iter().any(|m| m.to == "never@example.org"));
}

/// A link that keeps failing is tried `ARTICLE_TRIES` times with growing pauses, then
/// given up: the item is matched on its feed text, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_link_is_retried_then_the_item_goes_out_on_its_feed_text() {
    let site = public_server().await;
    let smtp = SmtpServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let now = at("2026-11-30T15:00:00Z");
    site.set("/down", Route::status(503, "Service Unavailable"));
    let teasers = [Teaser {
        guid: "down",
        title: "Visa bulletin",
        link: site.url("/down"),
        summary: "Bulletinword for January.",
    }];
    site.set("/feed.xml", rss(&teasers, now));
    let feeds = feed_table("daily", &site.url("/feed.xml"), "");
    let app = app(dir.path(), "full_text = true", &feeds, smtp.port()).await;
    subscribe(&app, "a@example.org", "bulletinword", "immediate", now).await;
    poll_feeds(&app, now, false).await.unwrap();

    let mut at_time = now;
    for tries in 1..tidings::pipeline::ARTICLE_TRIES {
        let s = fetch_articles(&app, at_time).await.unwrap();
        assert_eq!(
            (s.articles, s.retrying, s.matches),
            (1, 1, 0),
            "try {tries}"
        );
        assert_eq!(send_digests(&app, at_time, false).await.unwrap().queued, 0);
        at_time += chrono::Duration::minutes(31);
    }
    let last = fetch_articles(&app, at_time).await.unwrap();
    assert_eq!((last.failed, last.matches), (1, 1), "{last:?}");
    assert_eq!(
        site.hits("/down"),
        tidings::pipeline::ARTICLE_TRIES as usize
    );
    let mail = digest_mail(&app, &smtp, at_time, 1).await;
    assert!(mail[0].text.contains("*Bulletinword*"), "{}", mail[0].text);
    assert_eq!(
        fetch_articles(&app, at_time + chrono::Duration::days(1))
            .await
            .unwrap()
            .articles,
        0
    );
}

/// An item sent, whose link then changes: its new article is fetched and it goes again,
/// marked updated, to the one who had it, not to anyone new.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_link_is_fetched_again_and_sent_as_an_update() {
    let site = public_server().await;
    let smtp = SmtpServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let now = at("2026-11-30T15:00:00Z");
    let story = String::from_utf8(fixture("article-wordpress.html")).unwrap();
    site.set("/v1", page(story.clone()));
    site.set(
        "/v2",
        page(story.replace("Judge Bodyonlyword", "Judge Bodyonlyword (Correctionword)")),
    );
    let item = |link: String| Teaser {
        guid: "ead",
        title: "USCIS extends work permits",
        link,
        summary: "USCIS announced a change.",
    };
    site.set("/feed.xml", rss(&[item(site.url("/v1"))], now));
    let feeds = feed_table("daily", &site.url("/feed.xml"), "full_text = true");
    let app = app(dir.path(), "", &feeds, smtp.port()).await;
    subscribe(&app, "a@example.org", "Bodyonlyword", "immediate", now).await;
    poll_feeds(&app, now, false).await.unwrap();
    fetch_articles(&app, now).await.unwrap();
    assert_eq!(digest_mail(&app, &smtp, now, 1).await.len(), 1);

    let later = now + chrono::Duration::hours(1);
    subscribe(&app, "b@example.org", "correctionword", "immediate", later).await;
    site.set("/feed.xml", rss(&[item(site.url("/v2"))], later));
    let poll = poll_feeds(&app, later, false).await.unwrap();
    assert_eq!(poll.matches, 0, "{poll:?}");
    let read = fetch_articles(&app, later).await.unwrap();
    assert_eq!((read.ok, read.matches), (1, 1), "{read:?}");
    assert_eq!((site.hits("/v1"), site.hits("/v2")), (1, 1));
    let mail = digest_mail(&app, &smtp, later, 1).await;
    assert_eq!(
        mail[0].to, "a@example.org",
        "b@ never had it: not news to them"
    );
    assert!(mail[0].text.contains("[Updated]"), "{}", mail[0].text);
}

/// A listing page (no feed) with `full_text = true`: each new entry's article is read and
/// matched with the entry's own text, as for a feed's items.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listing_pages_entries_are_read_in_full_too() {
    let site = public_server().await;
    let smtp = SmtpServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let now = at("2026-11-30T15:00:00Z");
    site.set("/2026/11/30/ead/", page(fixture("article-wordpress.html")));
    let listing = |entries: &str| {
        page(format!(
            "<html><body><nav><a href=\"/\">Home</a></nav><ul class=\"news\">{entries}</ul></body></html>"
        ))
    };
    site.set(
        "/newsroom",
        listing("<li class=\"n\"><a href=\"/2026/11/01/old/\">An older notice</a></li>"),
    );
    let feeds = feed_table(
        "newsroom",
        &site.url("/newsroom"),
        "kind = \"html\"\nitem_selector = \"li.n\"\nfull_text = true",
    );
    let app = app(dir.path(), "", &feeds, smtp.port()).await;
    subscribe(&app, "body@example.org", "Bodyonlyword", "immediate", now).await;
    let baseline = poll_feeds(&app, now, false).await.unwrap();
    assert_eq!((baseline.new_items, baseline.matches), (1, 0));
    assert_eq!(
        fetch_articles(&app, now).await.unwrap().articles,
        0,
        "old news is not read"
    );

    let later = now + chrono::Duration::hours(1);
    site.set(
        "/newsroom",
        listing(
            "<li class=\"n\"><h3><a href=\"/2026/11/30/ead/\">USCIS extends work permits</a></h3></li>\
             <li class=\"n\"><a href=\"/2026/11/01/old/\">An older notice</a></li>",
        ),
    );
    let poll = poll_feeds(&app, later, false).await.unwrap();
    assert_eq!((poll.new_items, poll.matches), (1, 0), "{poll:?}");
    let read = fetch_articles(&app, later).await.unwrap();
    assert_eq!((read.ok, read.matches), (1, 1), "{read:?}");
    let mail = digest_mail(&app, &smtp, later, 1).await;
    assert!(
        mail[0].text.contains("USCIS extends work permits"),
        "{}",
        mail[0].text
    );
    assert!(
        mail[0].text.contains("From the article:"),
        "{}",
        mail[0].text
    );
    assert_eq!(site.hits("/2026/11/01/old/"), 0);
}
