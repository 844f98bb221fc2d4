//! Polling against a fault-injecting HTTP server on loopback. Each fault is injected into
//! one feed after a healthy baseline poll; the test asserts the feed's recorded state and
//! next poll time, that the other feed is unaffected, that the feed is not polled again
//! before its time, and that nothing old is re-sent once the feed recovers.

mod support;

use std::io::Write;
use std::time::Duration;

use support::{FeedServer, Route, SmtpServer, at, fixture};
use tidings::config::Config;
use tidings::digest::Schedule;
use tidings::store::FeedStatus;
use tidings::store::PollStatus;
use tidings::{App, poll_feeds, send_digests};

const WAIT: Duration = Duration::from_secs(10);

fn minutes(m: i64) -> chrono::Duration {
    chrono::Duration::minutes(m)
}

struct Harness {
    feeds: FeedServer,
    smtp: SmtpServer,
    app: App,
    _dir: tempfile::TempDir,
}

const T0: &str = "2026-11-28T12:00:00Z";

impl Harness {
    /// Two feeds, "good" and "flaky", both healthy at first; one subscriber whose query
    /// matches one item of each. After `start`, both are baselined and one digest was sent.
    async fn start() -> Harness {
        let feeds = FeedServer::start().await;
        let smtp = SmtpServer::start().await;
        feeds.set(
            "/good.xml",
            Route::feed("application/rss+xml", fixture("uscis.xml")),
        );
        feeds.set(
            "/flaky",
            Route::feed("application/atom+xml", fixture("govuk.atom")),
        );
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        std::fs::write(
            &path,
            format!(
                "[poll]\ninterval = \"15m\"\ntimeout = \"2s\"\nconnect_timeout = \"2s\"\nmax_backoff = \"24h\"\n\
                 [mail]\nfrom = \"alerts@tidings.test\"\ntransport = \"smtp\"\n\
                 [mail.smtp]\nhost = \"127.0.0.1\"\nport = {}\ntls = \"none\"\n\
                 [[feeds]]\nid = \"good\"\nurl = \"{}\"\n[[feeds]]\nid = \"flaky\"\nurl = \"{}\"\n",
                smtp.port(),
                feeds.url("/good.xml"),
                feeds.url("/flaky"),
            ),
        )
        .unwrap();
        let app = App::open(Config::load(&path).unwrap()).await.unwrap();
        let now = at(T0);
        app.store
            .add_subscription(
                "ana@example.org",
                "asylum OR TPS",
                Schedule::Immediate,
                chrono_tz::Tz::UTC,
                now,
            )
            .await
            .unwrap();
        let poll = poll_feeds(&app, now, false).await.unwrap();
        assert_eq!((poll.updated, poll.failed), (2, 0), "{poll:?}");
        send_digests(&app, now, false).await.unwrap();
        assert_eq!(smtp.wait_for(1, WAIT).await.len(), 1);
        Harness {
            feeds,
            smtp,
            app,
            _dir: dir,
        }
    }

    async fn status(&self, id: &str) -> FeedStatus {
        self.app
            .store
            .feed_statuses()
            .await
            .unwrap()
            .into_iter()
            .find(|s| s.id == id)
            .unwrap()
    }
}

/// What a fault must leave on the feed.
struct Expect {
    kind: &'static str,
    error: &'static str,
    /// Bounds of the next poll, in minutes after the failed poll.
    next_poll: (i64, i64),
}

async fn check_fault(fault: impl Fn(&FeedServer), expect: Expect) {
    let h = Harness::start().await;
    fault(&h.feeds);
    let now = at(T0) + minutes(20);
    let poll = poll_feeds(&h.app, now, true)
        .await
        .expect("the poll cycle itself never fails");
    assert_eq!((poll.feeds, poll.failed), (2, 1), "{poll:?}");

    let flaky = h.status("flaky").await;
    assert_eq!(
        flaky.last_error_kind.as_deref(),
        Some(expect.kind),
        "{flaky:?}"
    );
    assert!(
        flaky
            .last_error
            .as_deref()
            .unwrap_or("")
            .contains(expect.error),
        "{:?} should contain {:?}",
        flaky.last_error,
        expect.error
    );
    assert_eq!(flaky.consecutive_failures, 1);
    assert_eq!(flaky.items, 2, "stored items untouched");
    let wait = (flaky.next_poll_at - now).num_minutes();
    assert!(
        (expect.next_poll.0..=expect.next_poll.1).contains(&wait),
        "next poll in {wait} min, expected {:?}",
        expect.next_poll
    );
    let good = h.status("good").await;
    assert_eq!(
        good.last_status,
        Some(PollStatus::NotModified),
        "the other feed goes on"
    );
    assert_eq!(good.consecutive_failures, 0);

    // Not polled again before its time…
    let hits = h.feeds.hits("/flaky");
    poll_feeds(&h.app, now + minutes(wait - 1).max(minutes(1)), true)
        .await
        .unwrap();
    if wait > 1 {
        assert_eq!(
            h.feeds.hits("/flaky"),
            hits,
            "polled before its next poll time"
        );
    }

    // …and once it recovers, nothing it had is new again.
    h.feeds.set(
        "/flaky",
        Route::feed("application/atom+xml", fixture("govuk.atom")),
    );
    let later = flaky.next_poll_at + minutes(1);
    let poll = poll_feeds(&h.app, later, true).await.unwrap();
    assert_eq!(poll.new_items, 0, "{poll:?}");
    assert_eq!(
        h.status("flaky").await.consecutive_failures,
        0,
        "reset on success"
    );
    let digests = send_digests(&h.app, later, false).await.unwrap();
    assert_eq!(digests.queued, 0, "nothing old re-sent");
    assert_eq!(h.smtp.messages().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_error_500() {
    check_fault(
        |f| f.set("/flaky", Route::status(500, "Internal Server Error")),
        Expect {
            kind: "http",
            error: "HTTP 500 Internal Server Error",
            next_poll: (15, 17),
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_many_requests_with_retry_after_seconds() {
    check_fault(
        |f| {
            f.set(
                "/flaky",
                Route::status(429, "slow down").header("retry-after", "7200"),
            )
        },
        Expect {
            kind: "throttled",
            error: "HTTP 429 Too Many Requests (retry after 7200 s)",
            next_poll: (120, 120),
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_many_requests_with_retry_after_date() {
    // Three hours after the failed poll (T0 + 20 min).
    check_fault(
        |f| {
            f.set(
                "/flaky",
                Route::status(429, "slow down")
                    .header("retry-after", "Sat, 28 Nov 2026 15:20:00 GMT"),
            )
        },
        Expect {
            kind: "throttled",
            error: "retry after 2026-11-28 15:20:00 UTC",
            next_poll: (180, 180),
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_is_capped() {
    check_fault(
        |f| {
            f.set(
                "/flaky",
                Route::status(503, "maintenance").header("retry-after", "99999999"),
            )
        },
        Expect {
            kind: "throttled",
            error: "HTTP 503",
            next_poll: (1440, 1440),
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_unavailable_without_retry_after() {
    check_fault(
        |f| f.set("/flaky", Route::status(503, "maintenance")),
        Expect {
            kind: "throttled",
            error: "HTTP 503 Service Unavailable",
            next_poll: (15, 17),
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_drip_is_cut_off_by_the_total_timeout() {
    let body = fixture("govuk.atom");
    check_fault(
        move |f| {
            f.set(
                "/flaky",
                Route::feed("application/atom+xml", body.clone())
                    .etag("\"new\"")
                    .drip(Duration::from_millis(50)),
            )
        },
        Expect {
            kind: "timeout",
            error: "timed out",
            next_poll: (15, 17),
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncated_body() {
    let body = fixture("govuk.atom");
    let half = body[..body.len() / 2].to_vec();
    check_fault(
        move |f| f.set("/flaky", Route::feed("application/atom+xml", half.clone())),
        Expect {
            kind: "parse",
            error: "invalid feed",
            next_poll: (15, 17),
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_mib_body_is_cut_off() {
    let mut body = b"<rss version=\"2.0\"><channel><title>".to_vec();
    body.resize(50 * 1024 * 1024, b'a');
    check_fault(
        move |f| f.set("/flaky", Route::feed("application/rss+xml", body.clone())),
        Expect {
            kind: "too-large",
            error: "larger than 10 MiB",
            next_poll: (15, 17),
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gzip_bomb_is_cut_off_after_decompression() {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let zeros = vec![b' '; 1024 * 1024];
    for _ in 0..40 {
        encoder.write_all(&zeros).unwrap();
    }
    let bomb = encoder.finish().unwrap();
    assert!(
        bomb.len() < 1024 * 1024,
        "small on the wire: {} bytes",
        bomb.len()
    );
    check_fault(
        move |f| {
            f.set(
                "/flaky",
                Route::feed("application/rss+xml", bomb.clone()).header("content-encoding", "gzip"),
            )
        },
        Expect {
            kind: "too-large",
            error: "larger than 10 MiB",
            next_poll: (15, 17),
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirect_loop() {
    check_fault(
        |f| {
            let a = f.url("/loop-a");
            f.set("/flaky", Route::status(302, "").header("location", &a));
            f.set(
                "/loop-a",
                Route::status(302, "").header("location", "/loop-b"),
            );
            f.set(
                "/loop-b",
                Route::status(307, "").header("location", "/loop-a"),
            );
        },
        Expect {
            kind: "redirect",
            error: "loop at",
            next_poll: (15, 17),
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_many_redirects() {
    check_fault(
        |f| {
            f.set(
                "/flaky",
                Route::status(302, "").header("location", "/hop-1"),
            );
            for i in 1..=7 {
                f.set(
                    &format!("/hop-{i}"),
                    Route::status(302, "").header("location", &format!("/hop-{}", i + 1)),
                );
            }
        },
        Expect {
            kind: "redirect",
            error: "more than 5 redirects",
            next_poll: (15, 17),
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_xml() {
    check_fault(
        |f| {
            f.set(
                "/flaky",
                Route::feed(
                    "application/atom+xml",
                    "<feed><entry><title>x</titel></entry></feed>",
                ),
            )
        },
        Expect {
            kind: "parse",
            error: "invalid feed",
            next_poll: (15, 17),
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_200() {
    check_fault(
        |f| f.set("/flaky", Route::feed("application/atom+xml", "  \n")),
        Expect {
            kind: "empty",
            error: "empty response",
            next_poll: (15, 17),
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn html_page_names_the_feeds_it_advertises() {
    check_fault(
        |f| {
            f.set(
                "/flaky",
                Route::feed(
                    "text/html; charset=utf-8",
                    "<!DOCTYPE html><html><head><title>UKVI</title>\
                     <link rel=\"alternate\" type=\"application/atom+xml\" href=\"/news.atom\" title=\"News\">\
                     </head><body>Welcome</body></html>",
                ),
            )
        },
        Expect { kind: "parse", error: "links to these feeds: http://127.0.0.1:", next_poll: (15, 17) },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_failures_back_off_exponentially_and_are_never_dropped() {
    let h = Harness::start().await;
    h.feeds.set("/flaky", Route::status(500, "down"));
    let mut now = at(T0) + minutes(20);
    let mut waits = Vec::new();
    for _ in 0..9 {
        poll_feeds(&h.app, now, true).await.unwrap();
        let s = h.status("flaky").await;
        waits.push((s.next_poll_at - now).num_minutes());
        now = s.next_poll_at;
    }
    // 15 min doubling (each plus up to 10% jitter), capped at 24 h.
    let floors = [15, 30, 60, 120, 240, 480, 960, 1440, 1440];
    for (wait, floor) in waits.iter().zip(floors) {
        assert!(
            *wait >= floor && *wait <= (floor + floor / 10).min(1440),
            "{waits:?}"
        );
    }
    let s = h.status("flaky").await;
    assert_eq!(s.consecutive_failures, 9);
    assert!(s.active && !s.gone, "still polled: {s:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gone_feed_stops_polling_and_says_so() {
    let h = Harness::start().await;
    h.feeds.set("/flaky", Route::status(410, "gone"));
    let now = at(T0) + minutes(20);
    let poll = poll_feeds(&h.app, now, true).await.unwrap();
    assert_eq!(poll.failed, 1);
    let s = h.status("flaky").await;
    assert!(s.gone);
    assert_eq!(s.last_status, Some(PollStatus::Gone));
    assert!(
        s.last_error.as_deref().unwrap_or("").contains("410"),
        "{s:?}"
    );
    let hits = h.feeds.hits("/flaky");
    poll_feeds(&h.app, now + chrono::Duration::days(3), true)
        .await
        .unwrap();
    poll_feeds(&h.app, now + chrono::Duration::days(3), false)
        .await
        .unwrap();
    assert_eq!(h.feeds.hits("/flaky"), hits, "a gone feed is not polled");
    assert_eq!(h.status("good").await.consecutive_failures, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permanent_redirect_chain_is_followed_and_reported() {
    let h = Harness::start().await;
    let new_home = h.feeds.url("/new-home.atom");
    h.feeds.set(
        "/flaky",
        Route::status(301, "").header("location", "/moved-once"),
    );
    h.feeds.set(
        "/moved-once",
        Route::status(308, "").header("location", &new_home),
    );
    h.feeds.set(
        "/new-home.atom",
        Route::feed("application/atom+xml", fixture("govuk.atom")).etag("\"moved\""),
    );
    let now = at(T0) + minutes(20);
    let poll = poll_feeds(&h.app, now, true).await.unwrap();
    assert_eq!(poll.failed, 0, "{poll:?}");
    let s = h.status("flaky").await;
    assert_eq!(s.moved_to.as_deref(), Some(new_home.as_str()));
    assert_eq!(s.last_status, Some(PollStatus::Ok));
    assert_eq!(
        poll.new_items, 0,
        "same items at the new address are not new"
    );

    // A temporary redirect on the way is not a move.
    h.feeds.set(
        "/flaky",
        Route::status(302, "").header("location", "/new-home.atom"),
    );
    poll_feeds(&h.app, s.next_poll_at, true).await.unwrap();
    assert_eq!(h.status("flaky").await.moved_to, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_304_server_is_caught_by_a_full_fetch_every_12_hours() {
    let h = Harness::start().await;
    // The publisher adds an item but the server keeps its old ETag: conditional requests
    // get 304 forever.
    let old_etag = Route::feed("application/atom+xml", fixture("govuk.atom"))
        .etag
        .unwrap();
    let updated = String::from_utf8(fixture("govuk.atom")).unwrap().replacen(
        "<entry>",
        "<entry><id>urn:new-asylum</id><updated>2026-11-28T13:00:00Z</updated>\
         <title>New asylum rules</title><link href=\"https://www.gov.uk/new-asylum\"/></entry><entry>",
        1,
    );
    h.feeds.set(
        "/flaky",
        Route::feed("application/atom+xml", updated).etag(&old_etag),
    );

    let mut now = at(T0);
    let mut polls_with_304 = 0;
    while now < at(T0) + chrono::Duration::hours(11) {
        now = h.status("flaky").await.next_poll_at;
        let poll = poll_feeds(&h.app, now, true).await.unwrap();
        polls_with_304 += poll.not_modified;
        assert_eq!(poll.new_items, 0, "still stale at {now}");
    }
    assert!(polls_with_304 > 10, "{polls_with_304}");
    let full_fetch_at = at(T0) + chrono::Duration::hours(12) + minutes(1);
    let poll = poll_feeds(&h.app, full_fetch_at, false).await.unwrap();
    assert_eq!(poll.new_items, 1, "{poll:?}");
    let last = h.feeds.requests("/flaky").pop().unwrap();
    assert!(
        !last
            .iter()
            .any(|(name, _)| name == "if-none-match" || name == "if-modified-since"),
        "the full fetch is unconditional: {last:?}"
    );
    send_digests(&h.app, full_fetch_at, false).await.unwrap();
    let mail = h.smtp.wait_for(2, WAIT).await;
    assert!(String::from_utf8_lossy(&mail[1].data).contains("New asylum rules"));
}

/// A server that ignores conditional requests sends the whole feed every time. A body
/// identical to the last one (same bytes, type and address) is recognised before it is
/// parsed and recorded as not modified; the full-fetch schedule still counts it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_identical_body_is_not_parsed_again() {
    let h = Harness::start().await;
    let ignores_validators = |body: Vec<u8>, etag: &str| {
        Route::status(200, body)
            .header("content-type", "application/atom+xml")
            .header("etag", etag)
    };
    h.feeds.set(
        "/flaky",
        ignores_validators(fixture("govuk.atom"), "\"v1\""),
    );
    let poll = poll_feeds(&h.app, at(T0) + minutes(20), false)
        .await
        .unwrap();
    assert_eq!((poll.updated, poll.not_modified), (0, 2), "{poll:?}");
    let flaky = h.status("flaky").await;
    assert_eq!(flaky.last_status, Some(PollStatus::NotModified));
    assert_eq!(flaky.last_poll_at, Some(at(T0) + minutes(20)));

    // The full fetch due after 12 h is made, and counted though the body is the same:
    // the poll after it is conditional again, with the validator the server sent.
    let full_at = at(T0) + chrono::Duration::hours(13);
    let poll = poll_feeds(&h.app, full_at, false).await.unwrap();
    assert_eq!(poll.not_modified, 2, "{poll:?}");
    let unconditional = h.feeds.requests("/flaky").pop().unwrap();
    assert!(
        !unconditional
            .iter()
            .any(|(name, _)| name == "if-none-match"),
        "{unconditional:?}"
    );
    poll_feeds(&h.app, full_at + minutes(20), false)
        .await
        .unwrap();
    let conditional = h.feeds.requests("/flaky").pop().unwrap();
    assert!(
        conditional
            .iter()
            .any(|(name, value)| name == "if-none-match" && value == "\"v1\""),
        "{conditional:?}"
    );

    // A changed body is parsed as ever.
    let changed = String::from_utf8(fixture("govuk.atom")).unwrap().replacen(
        "<entry>",
        "<entry><id>urn:new-asylum</id><updated>2026-11-28T13:00:00Z</updated>\
         <title>New asylum rules</title><link href=\"https://www.gov.uk/new-asylum\"/></entry><entry>",
        1,
    );
    h.feeds
        .set("/flaky", ignores_validators(changed.into_bytes(), "\"v2\""));
    let poll = poll_feeds(&h.app, full_at + minutes(40), false)
        .await
        .unwrap();
    assert_eq!((poll.updated, poll.new_items), (1, 1), "{poll:?}");
    assert_eq!(h.status("flaky").await.last_status, Some(PollStatus::Ok));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edited_item_is_recorded_as_updated_not_new() {
    let h = Harness::start().await;
    let edited = String::from_utf8(fixture("govuk.atom")).unwrap().replace(
        "Skilled Worker visa fees change",
        "Skilled Worker visa fees change again",
    );
    let cosmetic = String::from_utf8(fixture("govuk.atom")).unwrap().replace(
        "Asylum accommodation: update for November",
        "Asylum accommodation:  update for November!",
    );
    h.feeds
        .set("/flaky", Route::feed("application/atom+xml", cosmetic));
    let poll = poll_feeds(&h.app, at(T0) + minutes(20), false)
        .await
        .unwrap();
    assert_eq!(
        (poll.new_items, poll.updated_items),
        (0, 0),
        "punctuation is not material"
    );
    h.feeds
        .set("/flaky", Route::feed("application/atom+xml", edited));
    let poll = poll_feeds(&h.app, at(T0) + minutes(40), false)
        .await
        .unwrap();
    assert_eq!((poll.new_items, poll.updated_items), (0, 1), "{poll:?}");
    let items = h.app.store.feed_items("flaky").await.unwrap();
    let edited = items
        .iter()
        .find(|(t, _)| t.ends_with("again"))
        .expect("title updated");
    assert_eq!(edited.1, Some(at(T0) + minutes(40)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_slow_host_does_not_stall_the_others() {
    // 6 feeds on a host that takes 1.5 s each, 6 on a fast one; per-host limit 2.
    let slow = FeedServer::start().await;
    let fast = FeedServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut text = String::from("[poll]\nper_host = 2\nconcurrency = 4\ntimeout = \"5s\"\n");
    for i in 0..6 {
        slow.set(
            &format!("/s{i}"),
            Route::feed("application/atom+xml", fixture("govuk.atom"))
                .delay(Duration::from_millis(1500)),
        );
        fast.set(
            &format!("/f{i}"),
            Route::feed("application/atom+xml", fixture("govuk.atom")),
        );
        text.push_str(&format!(
            "[[feeds]]\nid = \"s{i}\"\nurl = \"{}\"\n",
            slow.url(&format!("/s{i}"))
        ));
        // The fast host is reached by another name for the same loopback address.
        let fast_url = fast
            .url(&format!("/f{i}"))
            .replace("127.0.0.1", "localhost");
        text.push_str(&format!("[[feeds]]\nid = \"f{i}\"\nurl = \"{fast_url}\"\n"));
    }
    let path = dir.path().join("config.toml");
    std::fs::write(&path, text).unwrap();
    let app = App::open(Config::load(&path).unwrap()).await.unwrap();
    let started = std::time::Instant::now();
    let poll = tokio::spawn({
        let app = app.clone();
        async move { poll_feeds(&app, at(T0), false).await.unwrap() }
    });
    // While the slow host works through its queue two at a time, the fast feeds finish.
    let mut fast_done = false;
    while started.elapsed() < Duration::from_secs(4) {
        let statuses = app.store.feed_statuses().await.unwrap();
        let fast_ok = statuses
            .iter()
            .filter(|s| s.id.starts_with('f') && s.last_status.is_some())
            .count();
        let slow_ok = statuses
            .iter()
            .filter(|s| s.id.starts_with('s') && s.last_status.is_some())
            .count();
        if fast_ok == 6 {
            assert!(
                slow_ok < 6,
                "fast feeds finished while the slow host was still busy"
            );
            fast_done = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(fast_done, "fast feeds were held up by the slow host");
    let summary = poll.await.unwrap();
    assert_eq!(summary.updated, 12);
    // Never more than 2 requests at once to the slow host.
    assert!(
        started.elapsed() >= Duration::from_millis(4400),
        "6 feeds × 1.5 s / 2 at a time"
    );
}

/// Poll cycles overlap (the daemon starts one per tick without waiting for a slow one),
/// so the per-host limit counts the fetches of every cycle running at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlapping_poll_cycles_share_the_per_host_limit() {
    let slow = FeedServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    let write = |feeds: usize| {
        let mut text = String::from("[poll]\nper_host = 2\nconcurrency = 8\ntimeout = \"5s\"\n");
        for i in 0..feeds {
            text.push_str(&format!(
                "[[feeds]]\nid = \"s{i}\"\nurl = \"{}\"\n",
                slow.url(&format!("/s{i}"))
            ));
        }
        std::fs::write(&path, text).unwrap();
        Config::load(&path).unwrap()
    };
    for i in 0..4 {
        slow.set(
            &format!("/s{i}"),
            Route::feed("application/atom+xml", fixture("govuk.atom"))
                .delay(Duration::from_millis(1500)),
        );
    }
    let app = App::open(write(2)).await.unwrap();
    let started = std::time::Instant::now();
    let first = tokio::spawn({
        let app = app.clone();
        async move { poll_feeds(&app, at(T0), true).await.unwrap() }
    });
    while slow.hits("/s0") + slow.hits("/s1") < 2 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Two more feeds on the same host, polled by a second cycle while the first runs.
    let app = app.reconfigure(write(4)).await.unwrap();
    let second = poll_feeds(&app, at(T0), true).await.unwrap();
    let first = first.await.unwrap();
    assert_eq!((first.updated, second.updated), (2, 2));
    assert!(
        started.elapsed() >= Duration::from_millis(2900),
        "4 feeds × 1.5 s, 2 at a time across both cycles: {:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_but_readable_feeds_are_repaired_and_say_so() {
    let h = Harness::start().await;
    // Undeclared windows-1252, a bare '&', <rss> without version, an odd date.
    let mut body = b"<rss><channel><title>Noticias</title><ttl>120</ttl>\
        <item><title>Asylum & parole: "
        .to_vec();
    body.push(0x93); // windows-1252 left double quote
    body.extend_from_slice(b"new rules");
    body.push(0x94);
    body.extend_from_slice(
        b"</title><guid>n-1</guid><pubDate>Sun, 29 Nov 2026 12:15 PM</pubDate></item></channel></rss>",
    );
    h.feeds
        .set("/flaky", Route::feed("application/rss+xml", body));
    let now = at(T0) + minutes(20);
    let poll = poll_feeds(&h.app, now, true).await.unwrap();
    assert_eq!((poll.failed, poll.new_items), (0, 1), "{poll:?}");
    let s = h.status("flaky").await;
    assert_eq!(s.last_status, Some(PollStatus::Ok));
    let repairs = s.repairs.join("; ");
    for note in ["windows-1252", "bare '&'", "version"] {
        assert!(repairs.contains(note), "{note} in {repairs}");
    }
    let items = h.app.store.feed_items("flaky").await.unwrap();
    assert_eq!(items[0].0, "Asylum & parole: \u{201c}new rules\u{201d}");
    // <ttl>120</ttl> lengthens the 15-minute interval to two hours.
    let wait = (s.next_poll_at - now).num_minutes();
    assert!((120..=132).contains(&wait), "{wait}");
    send_digests(&h.app, now, false).await.unwrap();
    let mail = h.smtp.wait_for(2, WAIT).await;
    assert!(
        String::from_utf8_lossy(&mail[1].data).contains("parole"),
        "repaired item delivered"
    );
}
