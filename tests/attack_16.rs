//! Hostile review of issue 16 (destinations beside email), on loopback only: 127.0.0.2
//! stands in for the internet (`support::articles::app`), 127.0.0.1 for the inside.
//!
//! The first section holds tests that fail on the code as reviewed, each for the reason
//! its comment gives; the second, attacks that held, kept for the coverage they add.

mod support;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use support::articles::{PUBLIC, app, feed_table, public_server};
use support::channels::{
    DiscordWebhook, Fault, MatrixHomeserver, MattermostWebhook, NtfyServer, SlackWebhook,
    TelegramApi, WebhookReceiver,
};
use support::{FeedServer, Route, SmtpServer, at, decode, subscribe};
use tidings::App;
use tidings::fetch::{AddressPolicy, FetchError, Fetcher, Origin, Outgoing};
use tidings::pipeline::{send_push, sync_destinations};
use tidings::push::{Added, Spec, add_channel};
use tidings::store::{ChannelOrigin, OutboxStatus, SubscriptionId};
use tidings::{poll_feeds, send_digests, send_mail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const ANA: &str = "ana@x.example";
const BEN: &str = "ben@x.example";

fn public() -> IpAddr {
    IpAddr::V4(PUBLIC)
}

// ---- the world ------------------------------------------------------------------------------

struct World {
    dir: tempfile::TempDir,
    smtp: SmtpServer,
    feed: FeedServer,
    app: App,
    now: DateTime<Utc>,
}

/// A feed on the "public" address, a mail server, and an app with `[channels]` keys
/// `channels` (plain http allowed: the fakes speak it) and `extra` appended to the
/// config (say `[[destinations]]`).
async fn world_with(channels: &str, extra: &str) -> World {
    let dir = tempfile::tempdir().unwrap();
    let smtp = SmtpServer::start().await;
    let feed = public_server().await;
    let now = at("2026-12-01T12:00:00Z");
    let poll = format!("[channels]\nrequire_https = false\ntimeout = \"1s\"\n{channels}");
    let feeds = format!("{}{extra}", feed_table("daily", &feed.url("/feed.xml"), ""));
    let app = app(dir.path(), &poll, &feeds, smtp.port()).await;
    World {
        dir,
        smtp,
        feed,
        app,
        now,
    }
}

async fn world(channels: &str) -> World {
    world_with(channels, "").await
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Plain text as RSS carries it: HTML-escaped (feed readers take titles and
/// descriptions as HTML), then XML-escaped.
fn as_rss_text(s: &str) -> String {
    xml_escape(&xml_escape(s).replace('"', "&quot;"))
}

impl World {
    /// The feed carries these (guid, title, summary) items, published an hour ago.
    fn serve_full(&self, items: &[(String, String, String)]) {
        let published = (self.now - chrono::Duration::hours(1)).to_rfc2822();
        let mut xml = String::from(
            "<?xml version=\"1.0\"?><rss version=\"2.0\"><channel><title>Daily</title>",
        );
        for (guid, title, summary) in items {
            xml.push_str(&format!(
                "<item><guid>{guid}</guid><title>{}</title><link>https://news.example/{guid}</link>\
                 <description>{}</description><pubDate>{published}</pubDate></item>",
                as_rss_text(title),
                as_rss_text(summary),
            ));
        }
        xml.push_str("</channel></rss>");
        self.feed
            .set("/feed.xml", Route::feed("application/rss+xml", xml));
    }

    fn serve(&self, items: &[(&str, &str)]) {
        let items: Vec<(String, String, String)> = items
            .iter()
            .map(|(g, t)| (g.to_string(), t.to_string(), "Read the notice.".to_string()))
            .collect();
        self.serve_full(&items);
    }

    async fn poll(&self) {
        poll_feeds(&self.app, self.now, false).await.unwrap();
    }

    async fn search_of(&self, email: &str, query: &str) -> SubscriptionId {
        subscribe(&self.app, email, query, "immediate", self.now).await;
        let who = self.app.store.subscriber(email).await.unwrap().unwrap();
        let searches = self.app.store.subscriptions_of(who.id).await.unwrap();
        searches.iter().find(|(_, q)| q == query).unwrap().0
    }

    async fn search(&self, query: &str) -> SubscriptionId {
        self.search_of(ANA, query).await
    }

    async fn add_for(&self, email: &str, name: &str, spec: Spec, by: ChannelOrigin) -> Added {
        let who = self.app.store.subscriber(email).await.unwrap().unwrap();
        add_channel(
            &self.app.store,
            &self.app.config.channels,
            &who,
            name,
            &spec,
            by,
            Vec::new(),
            self.now,
        )
        .await
        .unwrap()
    }

    async fn add(&self, name: &str, spec: Spec, by: ChannelOrigin) -> Added {
        self.add_for(ANA, name, spec, by).await
    }

    async fn digest(&self) -> tidings::pipeline::DigestSummary {
        send_digests(&self.app, self.now, false).await.unwrap()
    }

    async fn outbox_push(&self) -> Vec<tidings::store::OutboxMessage> {
        let all = self.app.store.outbox().await.unwrap();
        all.into_iter()
            .filter(|m| m.recipient.contains(':'))
            .collect()
    }

    fn later(&mut self, d: chrono::Duration) {
        self.now += d;
    }

    /// `/manage/<token>` of `email` and its anti-forgery value.
    async fn manage(&self, email: &str) -> (String, String) {
        let s = self.app.store.subscriber(email).await.unwrap().unwrap();
        let url = self.app.links.manage_url(s.id, &s.email);
        let path = url::Url::parse(&url).unwrap().path().to_string();
        (path, self.app.links.csrf_token(s.id, &s.email))
    }
}

fn webhook(url: String) -> Spec {
    Spec {
        kind: "webhook".into(),
        url: Some(url),
        ..Spec::default()
    }
}

fn kind(kind: &str, url: String) -> Spec {
    Spec {
        kind: kind.into(),
        url: Some(url),
        ..Spec::default()
    }
}

/// A TCP listener on 127.0.0.1 that counts the connections it gets and answers none:
/// "the inside", which nothing a subscriber gave may reach.
async fn inside() -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let hits = Arc::new(AtomicUsize::new(0));
    let counted = hits.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            counted.fetch_add(1, Ordering::SeqCst);
            drop(stream);
        }
    });
    (addr, hits)
}

/// A raw HTTP server on `ip` that reads each request (headers and a Content-Length body)
/// and writes `answer` as it is, then, with `endless`, writes `x` forever.
async fn raw_server(ip: IpAddr, answer: String, endless: bool) -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind((ip, 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let hits = Arc::new(AtomicUsize::new(0));
    let counted = hits.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            counted.fetch_add(1, Ordering::SeqCst);
            let answer = answer.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    let Ok(n) = stream.read(&mut chunk).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    let text = String::from_utf8_lossy(&buf).to_string();
                    if let Some(end) = text.find("\r\n\r\n") {
                        let length = text[..end]
                            .lines()
                            .find_map(|l| {
                                let (k, v) = l.split_once(':')?;
                                k.eq_ignore_ascii_case("content-length")
                                    .then(|| v.trim().parse::<usize>().ok())?
                            })
                            .unwrap_or(0);
                        if buf.len() >= end + 4 + length {
                            break;
                        }
                    }
                }
                if stream.write_all(answer.as_bytes()).await.is_err() {
                    return;
                }
                if endless {
                    while stream.write_all(&[b'x'; 8192]).await.is_ok() {}
                }
            });
        }
    });
    (addr, hits)
}

// =============================================================================================
// Findings: these fail on the code as reviewed.
// =============================================================================================

/// A hostile receiver answers every request `429` with `Retry-After: 0` (or a date in
/// the past, or Telegram's/Discord's `retry_after: 0` in the body). `retry_at` clamps
/// the time to `now`, `mark_retry` stores it (in whole seconds), and `send_due`'s loop
/// claims the row again at once: the round never ends, posting to the receiver as fast
/// as it answers (no pacing for webhooks by default), one database write per post.
/// Here it is the *verification* message of a destination a subscriber just typed in,
/// so anyone with a manage link can do it. In the daemon the destinations' loop is stuck
/// in that one round for `[mail] max_age` (days), spinning: a request, a log line and a
/// database write per turn, as fast as the receiver answers.
///
/// Expected: a retry is never sooner than some floor (the backoff's minute, say) and a
/// round ends; the receiver sees one or two requests in a few seconds, not hundreds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_zero_does_not_trap_the_sending_round() {
    let w = world("").await;
    let receiver = WebhookReceiver::start_on(public(), "whsec_AAAA").await;
    receiver.fail_next(100_000, Fault::RateLimited(Duration::ZERO));
    w.search("asylum").await;
    w.add(
        "mine",
        webhook(receiver.url("/in")),
        ChannelOrigin::Subscriber,
    )
    .await;

    let round = tokio::time::timeout(Duration::from_secs(3), send_push(&w.app, w.now)).await;
    let hits = receiver.requests().len();
    assert!(
        round.is_ok() && hits <= 3,
        "the round {} after 3 s; the receiver got {hits} requests for one message",
        if round.is_ok() {
            "ended"
        } else {
            "was still running"
        }
    );
}

/// A hostile feed's titles and teasers are backslashes (each is two bytes once written
/// as JSON). The Matrix message is composed twice, as plain text and as HTML, each cut
/// at 24,000 *unescaped* bytes (`MATRIX_LIMIT`), and then written as JSON: the request
/// body, the event's content, is far over the 65,536 bytes a Matrix event may be in all
/// (Synapse answers 413 M_TOO_LARGE; a permanent rejection, and after `pause_after` the
/// destination is paused). The fake homeserver does not check the size, so the test
/// looks at the request itself.
///
/// Expected: the content, as sent, stays under 65,536 bytes (in truth a little less:
/// the event's envelope counts too).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_matrix_event_stays_under_the_event_size_limit_whatever_the_feed_says() {
    let w = world("").await;
    let matrix =
        MatrixHomeserver::start_on(public(), "syt_mx", "@bot:m.test", &["!room:m.test"]).await;
    let slashes = "\\".repeat(400);
    let items: Vec<(String, String, String)> = (0..80)
        .map(|i| {
            (
                format!("g{i:03}"),
                format!("Asylum {i} {slashes}"),
                format!("asylum {slashes}"),
            )
        })
        .collect();
    w.serve_full(&items);
    w.search("asylum").await;
    w.add(
        "room",
        Spec {
            kind: "matrix".into(),
            homeserver: Some(matrix.base()),
            room: Some("!room:m.test".into()),
            token: Some("syt_mx".into()),
            ..Spec::default()
        },
        ChannelOrigin::Admin,
    )
    .await;
    w.poll().await;
    let round = w.digest().await;
    assert_eq!(round.push.sent, 1, "{round:?}");
    let request = matrix.requests().remove(0);
    assert!(
        request.body.len() < 65_536,
        "the event's content alone is {} bytes (body {} bytes as text, formatted_body {})",
        request.body.len(),
        request.json()["body"].as_str().unwrap_or_default().len(),
        request.json()["formatted_body"]
            .as_str()
            .unwrap_or_default()
            .len(),
    );
}

/// Discord takes 2,000 characters. A destination's digest whose items fill it to within
/// a few dozen characters is sent with "More matches follow in the next message."
/// appended when the subscriber had more than 500 matches pending (`more_follow`):
/// `compose` checks every item and the "…and N more" line against the limit, but adds
/// that sentence after the check. Discord answers 400; after `pause_after` such rounds
/// the destination is paused.
///
/// The test sizes the items with a first digest (all fit, nothing follows), then sends
/// the same shape once more with 500 other matches pending.
///
/// Expected: the message stays within 2,000 characters whatever follows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_more_follow_line_is_counted_within_discords_limit() {
    let mut w = world("").await;
    let discord = DiscordWebhook::start_on(public(), "77", "tok").await;
    let asylum = w.search("asylum").await;
    let weather = w.search("weather").await;
    let added = w
        .add(
            "d",
            kind("discord", discord.endpoint()),
            ChannelOrigin::Admin,
        )
        .await;
    let store = &w.app.store;
    store
        .set_search_route(asylum, false, vec![added.id])
        .await
        .unwrap();
    store.set_search_route(weather, true, vec![]).await.unwrap();
    let title = |prefix: &str, i: usize, len: usize| {
        let head = format!("Asylum {prefix}{i} ");
        format!("{head}{}", "x".repeat(len - head.len()))
    };
    let summary = "Read the notice.".to_string();

    // The probe: eight items of 100 characters each, all shown.
    let mut items: Vec<(String, String, String)> = (0..8)
        .map(|i| (format!("a{i}"), title("a", i, 100), summary.clone()))
        .collect();
    w.serve_full(&items);
    w.poll().await;
    w.digest().await;
    let probe = discord.messages()[0]["content"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(probe.matches("• ").count(), 8, "{probe}");
    let room = 2000 - probe.chars().count();
    // Grow the titles to leave 25 characters free: within the limit, and within any
    // margin a little under it, but not room for the 42 of the line about what follows.
    let grow = room - 25;
    assert!(grow <= 8 * 100, "{room}");

    // The same shape again, with 500 weather items pending besides.
    w.later(chrono::Duration::hours(1));
    let mut left = grow;
    for i in 0..8 {
        let extra = left.min(100);
        left -= extra;
        items.push((format!("b{i}"), title("b", i, 100 + extra), summary.clone()));
    }
    for i in 0..500 {
        items.push((
            format!("w{i:03}"),
            format!("Weather report {i}"),
            summary.clone(),
        ));
    }
    w.serve_full(&items);
    w.poll().await;
    w.digest().await;
    let requests = discord.requests();
    let last = requests.last().unwrap();
    let content = last.json()["content"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(content.contains("Asylum b"), "the second digest: {content}");
    assert!(
        content.chars().count() <= 2000 && last.is_accepted(),
        "{} characters, answered {:?}: …{}",
        content.chars().count(),
        last.status,
        content
            .char_indices()
            .rev()
            .nth(120)
            .map_or(content.as_str(), |(i, _)| &content[i..])
    );
}

/// `[channels]` is unlimited for tests, so only the per-day notice count stands between
/// a subscriber and posting to their destination. Adding one and sending the code again
/// are held to `MAX_VERIFICATIONS_PER_DAY` (10) notices a day, but the manage page's
/// "send a test message" is not counted against it (`change_destination`, `Some("test")`).
/// A subscriber who confirmed a destination on a shared service (a public ntfy.sh topic
/// anyone can read) can queue as many as they like: each takes a slot of the service's
/// shared pacer (ntfy: one a second for all subscribers), so everyone else's alerts
/// there wait behind them, and the service rate-limits the server's address.
///
/// Expected: test messages count against the same daily limit as other notices.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_messages_are_held_to_the_daily_notice_limit() {
    let mut w = world("").await;
    // The page counts the day back from the store's clock: the verification must be
    // queued on that day too, whatever the date the test runs on.
    w.now = w.app.store.now();
    let receiver = WebhookReceiver::start_on(public(), "whsec_AAAA").await;
    w.search("asylum").await;
    let added = w
        .add(
            "mine",
            webhook(receiver.url("/in")),
            ChannelOrigin::Subscriber,
        )
        .await;
    let code = added.confirm_code.clone().unwrap();
    assert_eq!(
        w.app
            .store
            .confirm_channel(added.id, &code, w.now)
            .await
            .unwrap(),
        tidings::store::Confirmation::Confirmed
    );
    let site = support::Site::start(w.app.clone()).await;
    let (manage, csrf) = w.manage(ANA).await;
    let id = added.id.to_string();
    for _ in 0..15 {
        let (status, _) = site
            .post(
                &format!("{manage}/destination/change"),
                &[("csrf", &csrf), ("destination", &id), ("action", "test")],
            )
            .await;
        assert!(
            status.is_redirection() || status.is_client_error(),
            "{status}"
        );
    }
    let notices = w
        .outbox_push()
        .await
        .into_iter()
        .filter(|m| m.subject.contains("test message") || m.subject.contains("confirm"))
        .count();
    assert!(
        notices <= 10,
        "{notices} notices queued for one destination in a day (limit 10)"
    );
}

/// The admin keeps a destination in config.toml. Its URL is wrong (a closed port), so
/// the digest waits, retrying; the admin fixes the URL and the config is reloaded.
/// `sync_destinations` sees a different target and *removes* the destination and adds
/// a new one: the `channels_deleted` trigger fails what waited ("destination removed").
/// The search went to that destination alone, so its match is never delivered anywhere.
///
/// Expected: what waited reaches the fixed destination (or, failing that, comes by
/// email): nothing is lost because a destination was changed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fixing_a_config_destinations_url_keeps_what_waited_for_it() {
    let closed = {
        let listener = std::net::TcpListener::bind((PUBLIC, 0)).unwrap();
        listener.local_addr().unwrap().port()
    };
    let destination = |url: &str| {
        format!(
            "\n[[destinations]]\nsubscriber = \"{ANA}\"\nname = \"phone\"\nkind = \"ntfy\"\nurl = \"{url}\"\n"
        )
    };
    let wrong = format!("http://{PUBLIC}:{closed}/ana-alerts");
    let mut w = world_with("", &destination(&wrong)).await;
    let ntfy = NtfyServer::start_on(public(), None).await;
    let asylum = w.search("asylum").await;
    assert!(
        sync_destinations(&w.app.store, &w.app.config)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(w.app.store.set_search_email(asylum, false).await.unwrap());
    w.serve(&[("a1", "Asylum ruling for the record")]);
    w.poll().await;
    let round = w.digest().await;
    assert_eq!(round.push.retrying, 1, "{round:?}");

    // The admin fixes the URL; the config is reloaded.
    let text = std::fs::read_to_string(w.dir.path().join("config.toml")).unwrap();
    let fixed = text.replace(&wrong, &ntfy.url("/ana-alerts"));
    let path = w.dir.path().join("fixed.toml");
    std::fs::write(&path, fixed).unwrap();
    let config = tidings::Config::load(&path).unwrap();
    assert!(
        sync_destinations(&w.app.store, &config)
            .await
            .unwrap()
            .is_empty()
    );

    w.later(chrono::Duration::minutes(5));
    send_push(&w.app, w.now).await.unwrap();
    w.later(chrono::Duration::minutes(5));
    w.digest().await;
    send_mail(&w.app, w.now).await.unwrap();
    let mailed = w
        .smtp
        .messages()
        .iter()
        .map(decode)
        .any(|m| m.text.contains("Asylum ruling for the record"));
    let pushed = ntfy
        .messages()
        .iter()
        .any(|m| m.message.contains("Asylum ruling for the record"));
    assert!(
        mailed || pushed,
        "the match went nowhere: {:?}",
        w.outbox_push()
            .await
            .iter()
            .map(|m| (m.recipient.clone(), m.status, m.last_error.clone()))
            .collect::<Vec<_>>()
    );
}

/// A `[[destinations]]` table lists the searches it takes (`searches = ["visa"]`). The
/// subscriber removes that search on their page; at the next reload `sync_destinations`
/// finds none of the listed searches, reports it, and stores the destination with
/// `every_search = searches.is_empty()`: it now takes *every* search of the subscriber.
/// A team chat meant for one topic receives all of someone's private searches.
///
/// Expected: a destination whose listed searches are all gone takes nothing (or is left
/// out), never everything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_config_destination_whose_searches_are_gone_does_not_take_every_search() {
    let ntfy = NtfyServer::start_on(public(), None).await;
    let extra = format!(
        "\n[[destinations]]\nsubscriber = \"{ANA}\"\nname = \"team\"\nkind = \"ntfy\"\nurl = \"{}\"\nsearches = [\"visa\"]\n",
        ntfy.url("/team-visa")
    );
    let w = world_with("", &extra).await;
    w.search("asylum").await;
    let visa = w.search("visa").await;
    assert!(
        sync_destinations(&w.app.store, &w.app.config)
            .await
            .unwrap()
            .is_empty()
    );
    let ana = w.app.store.subscriber(ANA).await.unwrap().unwrap();
    assert!(w.app.store.remove_subscription(ana.id, visa).await.unwrap());
    // The reload.
    let problems = sync_destinations(&w.app.store, &w.app.config)
        .await
        .unwrap();
    assert!(!problems.is_empty(), "the missing search is reported");

    w.serve(&[("a1", "Asylum: a private matter")]);
    w.poll().await;
    w.digest().await;
    assert!(
        ntfy.messages().is_empty(),
        "the team topic got the subscriber's asylum search: {:?}",
        ntfy.messages()
    );
}

/// A search goes to one destination alone. The receiver is down (500), so its digest
/// waits, retrying; the owner gives up on it and removes it (or it was paused after
/// rejections and they remove it rather than resume it). The waiting row fails,
/// "destination removed", and the matches it carried stay taken: they never come by
/// email, though the search now goes nowhere but email.
///
/// Expected (the issue: "nothing lost when a destination is paused or removed"): the
/// matches that waited for it go where the search goes now.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removing_a_destination_does_not_lose_the_matches_waiting_for_it() {
    let mut w = world("").await;
    let receiver = WebhookReceiver::start_on(public(), "whsec_AAAA").await;
    receiver.fail_next(100, Fault::Status(500));
    let asylum = w.search("asylum").await;
    let added = w
        .add("crm", webhook(receiver.url("/in")), ChannelOrigin::Admin)
        .await;
    w.app
        .store
        .set_search_route(asylum, false, vec![added.id])
        .await
        .unwrap();
    w.serve(&[("a1", "Asylum decision kept for later")]);
    w.poll().await;
    let round = w.digest().await;
    assert_eq!(round.push.retrying, 1, "{round:?}");
    assert!(w.smtp.messages().is_empty());

    assert!(w.app.store.remove_channel(added.id).await.unwrap());
    w.later(chrono::Duration::minutes(30));
    w.digest().await;
    send_mail(&w.app, w.now).await.unwrap();
    let mails: Vec<_> = w.smtp.messages().iter().map(decode).collect();
    assert!(
        mails
            .iter()
            .any(|m| m.text.contains("Asylum decision kept for later")),
        "the match is gone: {} mails; push rows {:?}",
        mails.len(),
        w.outbox_push()
            .await
            .iter()
            .map(|m| (m.status, m.last_error.clone()))
            .collect::<Vec<_>>()
    );
}

/// `tidings outbox retry N` on a message of a destination that was removed: `requeue`
/// makes it pending again, and says it will be sent, but `claim_push` joins on the
/// destination (gone: `channel_id` is NULL) and `claim_mail` takes only mail, so the row
/// stays pending for ever: it is never sent, never fails, and `prune` never removes it
/// (it keeps only pending rows).
///
/// Expected: a message with no destination left is not requeued (an error saying why).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requeueing_a_removed_destinations_message_is_refused() {
    let mut w = world("").await;
    let receiver = WebhookReceiver::start_on(public(), "whsec_AAAA").await;
    w.search("asylum").await;
    let added = w
        .add("crm", webhook(receiver.url("/in")), ChannelOrigin::Admin)
        .await;
    let channel = w.app.store.channel(added.id).await.unwrap().unwrap();
    let queued = tidings::push::queue_test(&w.app.store, &channel, w.now)
        .await
        .unwrap();
    assert!(w.app.store.remove_channel(added.id).await.unwrap());
    let requeued = w.app.store.requeue(queued, w.now).await;
    w.later(chrono::Duration::minutes(1));
    send_push(&w.app, w.now).await.unwrap();
    send_mail(&w.app, w.now).await.unwrap();
    let row = w
        .app
        .store
        .outbox()
        .await
        .unwrap()
        .into_iter()
        .find(|m| m.id == queued)
        .unwrap();
    assert!(
        requeued.is_err() || row.status != OutboxStatus::Pending,
        "requeue said {requeued:?}; the row is {:?} with no destination to go to",
        row.status
    );
}

/// The owner pauses a destination ("its alerts wait until you resume it") while a
/// message for it is claimed and waiting for its pacer slot (here one a second per host,
/// as ntfy.sh's shared pacer is by default; with 32 rows a batch, the wait can be half a
/// minute). `send_due` renews the claim right before sending, but `renew_mail_claim`
/// looks at the row alone, not at the destination's state: the message goes out after
/// the pause. (Removal and unsubscribing are honoured: they fail the row.)
///
/// Expected: a message whose destination was paused after it was claimed is not sent;
/// it waits for the resume like the rest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pausing_a_destination_stops_a_message_already_claimed_for_it() {
    let mut w = world("webhook_rate = 1").await;
    let one = WebhookReceiver::start_on(public(), "whsec_AAAA").await;
    let two = WebhookReceiver::start_on(public(), "whsec_AAAA").await;
    w.search("asylum").await;
    let first = w
        .add("one", webhook(one.url("/in")), ChannelOrigin::Admin)
        .await;
    let second = w
        .add("two", webhook(two.url("/in")), ChannelOrigin::Admin)
        .await;
    one.set_secret(first.signing_secret.as_deref().unwrap());
    two.set_secret(second.signing_secret.as_deref().unwrap());
    // The first tries fail: both rows wait, retrying.
    one.fail_next(1, Fault::Status(500));
    two.fail_next(1, Fault::Status(500));
    w.serve(&[("a1", "Asylum news")]);
    w.poll().await;
    let round = w.digest().await;
    assert_eq!(round.push.retrying, 2, "{round:?}");

    w.later(chrono::Duration::minutes(2));
    let app = w.app.clone();
    let now = w.now;
    let sending = tokio::spawn(async move { send_push(&app, now).await });
    // Both are claimed at once; "two" waits for the host's next slot.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        w.app
            .store
            .pause_channel(second.id, "paused by you")
            .await
            .unwrap()
    );
    let round = sending.await.unwrap().unwrap();
    assert_eq!(one.accepted_events().len(), 1, "{round:?}");
    assert!(
        two.accepted_events().is_empty(),
        "sent after its destination was paused: {round:?}"
    );
}

/// `[channels] pause_after = 3`: a destination is paused after three rejections in a
/// row. Notices (tests, verifications) are meant not to count ("a notice failing says
/// nothing of a destination in use": `pause_after = u32::MAX` for them), yet
/// `mark_push_rejected` adds them to `failures` all the same: two test messages the
/// receiver refused and then a *single* rejected digest pause the destination, and its
/// owner gets a mail saying it failed repeatedly.
///
/// Expected: only digests count towards `pause_after`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejected_notices_do_not_count_towards_pausing() {
    let w = world("pause_after = 3").await;
    let receiver = WebhookReceiver::start_on(public(), "whsec_AAAA").await;
    w.search("asylum").await;
    let added = w
        .add("crm", webhook(receiver.url("/in")), ChannelOrigin::Admin)
        .await;
    receiver.set_secret(added.signing_secret.as_deref().unwrap());
    receiver.fail_next(3, Fault::Status(400));
    let channel = w.app.store.channel(added.id).await.unwrap().unwrap();
    for _ in 0..2 {
        tidings::push::queue_test(&w.app.store, &channel, w.now)
            .await
            .unwrap();
    }
    let round = send_push(&w.app, w.now).await.unwrap();
    assert_eq!((round.failed, round.paused), (2, 0), "{round:?}");
    w.serve(&[("a1", "Asylum news")]);
    w.poll().await;
    let round = w.digest().await;
    assert_eq!(round.push.failed, 1, "{round:?}");
    let channel = w.app.store.channel(added.id).await.unwrap().unwrap();
    assert_eq!(
        channel.state,
        tidings::store::ChannelState::Active,
        "one digest rejected, yet paused: {:?} after {} failures",
        channel.paused_reason,
        channel.failures
    );
}

/// `[channels] rate_limits` (and `webhook_rate`) take "0 (no limit) to 10000" requests a
/// second, and the config check accepts any such number. A tiny one (`1e-300`, a typo
/// for `1e-3`, or any rate under about 5e-20) makes `Pusher::pace` call
/// `Duration::from_secs_f64(1.0 / per_second)`, which panics ("value is either too big
/// or NaN"): the sending round dies with its task, on every round.
///
/// Expected: the config check refuses such a rate, or sending caps the interval; no
/// panic either way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tiny_rate_limit_does_not_panic_the_sender() {
    let dir = tempfile::tempdir().unwrap();
    let smtp = SmtpServer::start().await;
    let receiver = WebhookReceiver::start_on(public(), "whsec_AAAA").await;
    let text = format!(
        r#"
database = "data/tidings.db"
[mail]
from = "Tidings <alerts@tidings.test>"
transport = "smtp"
[mail.smtp]
host = "127.0.0.1"
port = {}
tls = "none"
[service]
admin_listen = ""
[web]
listen = ""
[channels]
require_https = false
timeout = "1s"
[channels.rate_limits]
"127.0.0.2" = 1e-300
"#,
        smtp.port()
    );
    let path = dir.path().join("config.toml");
    std::fs::write(&path, text).unwrap();
    let Ok(config) = tidings::Config::load(&path) else {
        return; // Refused by the check: fine.
    };
    let mut app = App::open(config).await.unwrap();
    app.fetcher = Fetcher::with_policy(
        &app.config.poll,
        AddressPolicy {
            treat_as_public: vec![public()],
            ..AddressPolicy::default()
        },
    )
    .unwrap();
    let now = at("2026-12-01T12:00:00Z");
    subscribe(&app, ANA, "asylum", "immediate", now).await;
    let who = app.store.subscriber(ANA).await.unwrap().unwrap();
    let added = add_channel(
        &app.store,
        &app.config.channels,
        &who,
        "crm",
        &webhook(receiver.url("/in")),
        ChannelOrigin::Admin,
        Vec::new(),
        now,
    )
    .await
    .unwrap();
    let channel = app.store.channel(added.id).await.unwrap().unwrap();
    tidings::push::queue_test(&app.store, &channel, now)
        .await
        .unwrap();
    let sending = tokio::spawn(async move {
        tokio::time::timeout(Duration::from_secs(2), send_push(&app, now)).await
    })
    .await;
    match sending {
        Err(e) => panic!("the sending round panicked: {e}"),
        Ok(Err(_)) => panic!("the sending round did not end"),
        Ok(Ok(round)) => {
            round.unwrap();
        }
    }
}

/// Two limits guard the manage page's "add a destination": 10 destinations, and 10
/// verification messages a day, each checked (`channels`, `notices_since`) before the
/// insert, outside its transaction. Forms posted at once pass the checks before any is
/// written (here 100 forms: 12 to 52 of them got through, run after run; it is a race,
/// so the test fails by chance, though it has every time so far): the server posts that
/// many verification messages to whatever URLs were typed, and the subscriber holds
/// that many destinations.
///
/// Expected: the limits hold under concurrent posts.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_destination_limits_hold_when_forms_are_posted_at_once() {
    let w = world("").await;
    let receiver = WebhookReceiver::start_on(public(), "whsec_AAAA").await;
    w.search("asylum").await;
    let site = Arc::new(support::Site::start(w.app.clone()).await);
    let (manage, csrf) = w.manage(ANA).await;
    let url = receiver.url("/in");
    let mut posts = tokio::task::JoinSet::new();
    for i in 0..100 {
        let (site, manage, csrf, url) = (site.clone(), manage.clone(), csrf.clone(), url.clone());
        posts.spawn(async move {
            let name = format!("d{i}");
            site.post(
                &format!("{manage}/destination"),
                &[
                    ("csrf", csrf.as_str()),
                    ("kind", "webhook"),
                    ("name", name.as_str()),
                    ("url", url.as_str()),
                ],
            )
            .await
            .0
        });
    }
    while posts.join_next().await.is_some() {}
    let ana = w.app.store.subscriber(ANA).await.unwrap().unwrap();
    let destinations = w.app.store.channels(Some(ana.id)).await.unwrap().len();
    let notices = w.outbox_push().await.len();
    assert!(
        destinations <= 10 && notices <= 10,
        "{destinations} destinations, {notices} verification messages queued"
    );
}

/// `[[destinations]]` names its secret by environment variable. An admin who pastes the
/// secret itself there (`url_env = "https://hooks.slack.com/services/…"`, or a bot
/// token, or a `whsec_` signing secret) gets an error that quotes it back: on
/// `check-config`'s output, and, on a reload of the running daemon, in its log (the
/// journal keeps it). The promise is that secrets from config are never stored.
///
/// Expected: the error says the value is not a variable name without repeating it.
#[test]
fn a_secret_pasted_where_its_variable_belongs_is_not_echoed() {
    let dir = tempfile::tempdir().unwrap();
    let secret = "https://hooks.slack.com/services/T0/B0/SuperSecretToken123";
    let text = format!(
        r#"
database = "data/tidings.db"
[mail]
from = "Tidings <alerts@tidings.test>"
transport = "smtp"
[mail.smtp]
host = "127.0.0.1"
port = 25
tls = "none"

[[destinations]]
subscriber = "{ANA}"
name = "team"
kind = "slack"
url_env = "{secret}"

[[destinations]]
subscriber = "{ANA}"
name = "bot"
kind = "telegram"
chat_id = "42"
token_env = "123456:AAH-SuperSecretBotToken"
"#
    );
    let path = dir.path().join("config.toml");
    std::fs::write(&path, text).unwrap();
    let error = format!("{:#}", tidings::Config::load(&path).unwrap_err());
    assert!(
        error.contains("url_env") && error.contains("token_env"),
        "{error}"
    );
    for leaked in ["SuperSecretToken123", "SuperSecretBotToken"] {
        assert!(
            !error.contains(leaked),
            "the secret is in the error: {error}"
        );
    }
}

// =============================================================================================
// Attacks that held.
// =============================================================================================

/// A subscriber's webhook on a public address answers 307 to a loopback URL: the
/// redirect is not followed (the inside gets no connection) and the message fails,
/// saying it was redirected. An admin's is not followed either.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_a_redirect_from_a_public_receiver_to_the_inside_is_not_followed() {
    let w = world("").await;
    let (inside, hits) = inside().await;
    let answer = format!(
        "HTTP/1.1 307 Temporary Redirect\r\nLocation: http://{inside}/hook\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    let (outside, asked) = raw_server(public(), answer, false).await;
    w.search("asylum").await;
    w.add(
        "mine",
        webhook(format!("http://{outside}/in")),
        ChannelOrigin::Subscriber,
    )
    .await;
    w.add(
        "ops",
        webhook(format!("http://{outside}/ops")),
        ChannelOrigin::Admin,
    )
    .await;
    let channel = w.app.store.channels(None).await.unwrap().pop().unwrap();
    tidings::push::queue_test(&w.app.store, &channel, w.now)
        .await
        .unwrap();
    let round = send_push(&w.app, w.now).await.unwrap();
    assert_eq!(round.failed, 2, "{round:?}");
    assert_eq!(asked.load(Ordering::SeqCst), 2);
    assert_eq!(hits.load(Ordering::SeqCst), 0, "the inside was reached");
    for row in w.outbox_push().await {
        assert!(
            row.last_error.as_deref().unwrap().contains("redirected"),
            "{row:?}"
        );
    }
}

/// Every spelling of a loopback address a subscriber might give, and a name that
/// resolves there (or to both an outside and an inside address), is refused or kept
/// outside by `deliver` for a subscriber's destination: the inside gets no connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_loopback_in_any_spelling_is_refused_to_a_subscribers_destination() {
    let (inside, hits) = inside().await;
    let port = inside.port();
    let (outside, asked) = raw_server(
        public(),
        "HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n".into(),
        false,
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let app = app(dir.path(), "", "", 25).await;
    let policy = AddressPolicy {
        treat_as_public: vec![public()],
        hosts: [
            (
                "inside.test".to_string(),
                vec![IpAddr::V4(Ipv4Addr::LOCALHOST)],
            ),
            (
                "both.test".to_string(),
                vec![IpAddr::V4(Ipv4Addr::LOCALHOST), public()],
            ),
        ]
        .into_iter()
        .collect(),
        ..AddressPolicy::default()
    };
    let fetcher = Fetcher::with_policy(&app.config.poll, policy).unwrap();
    let post = |url: String| Outgoing {
        put: false,
        url: url::Url::parse(&url).unwrap(),
        headers: vec![("content-type".into(), "application/json".into())],
        body: b"{}".to_vec(),
    };
    for url in [
        format!("http://127.0.0.1:{port}/"),
        format!("http://2130706433:{port}/"),
        format!("http://0x7f000001:{port}/"),
        format!("http://0177.0.0.1:{port}/"),
        format!("http://127.1:{port}/"),
        format!("http://[::ffff:127.0.0.1]:{port}/"),
        format!("http://[::ffff:7f00:1]:{port}/"),
        format!("http://[::1]:{port}/"),
        format!("http://inside.test:{port}/"),
        format!("http://INSIDE.test:{port}/"),
        format!("http://localhost:{port}/"),
    ] {
        let outcome = fetcher
            .deliver(
                &post(url.clone()),
                Origin::Subscriber,
                Duration::from_secs(2),
            )
            .await;
        assert!(
            matches!(outcome, Err(FetchError::Refused(_))),
            "{url}: {outcome:?}"
        );
    }
    // A name with an inside and an outside address: only the outside one is used.
    let both = format!("http://both.test:{}/", outside.port());
    let outcome = fetcher
        .deliver(
            &post(both.clone()),
            Origin::Subscriber,
            Duration::from_secs(2),
        )
        .await;
    assert_eq!(outcome.map(|a| a.status).ok(), Some(204), "{both}");
    assert_eq!(asked.load(Ordering::SeqCst), 1);
    assert_eq!(hits.load(Ordering::SeqCst), 0, "the inside was reached");
}

/// A receiver that answers 200 and then a body that never ends, and one that drips its
/// status line a byte at a time: neither holds the round past the send timeout (1 s),
/// and the first counts as delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_an_endless_or_dripping_answer_does_not_hold_the_round() {
    let w = world("").await;
    let (endless, _) = raw_server(
        public(),
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n".into(),
        true,
    )
    .await;
    // Drip: a listener that accepts and writes one byte a second.
    let listener = TcpListener::bind((PUBLIC, 0)).await.unwrap();
    let drip = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 8192];
                let _ = stream.read(&mut buf).await;
                for b in b"HTTP/1.1 200 OK\r\n\r\n" {
                    if stream.write_all(&[*b]).await.is_err() {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            });
        }
    });
    w.search("asylum").await;
    w.add(
        "endless",
        webhook(format!("http://{endless}/in")),
        ChannelOrigin::Admin,
    )
    .await;
    w.add(
        "drip",
        webhook(format!("http://{drip}/in")),
        ChannelOrigin::Admin,
    )
    .await;
    for c in w.app.store.channels(None).await.unwrap() {
        tidings::push::queue_test(&w.app.store, &c, w.now)
            .await
            .unwrap();
    }
    let started = std::time::Instant::now();
    let round = tokio::time::timeout(Duration::from_secs(4), send_push(&w.app, w.now))
        .await
        .expect("the round ended")
        .unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert_eq!((round.sent, round.retrying), (1, 1), "{round:?}");
    let errors: Vec<String> = w
        .outbox_push()
        .await
        .into_iter()
        .filter_map(|m| m.last_error)
        .collect();
    assert_eq!(errors, vec!["timed out".to_string()]);
}

/// A Matrix room id with `/`, `..`, `?`, `#` and `%2F` is one path segment of the
/// request, percent-encoded: the homeserver sees exactly that room id, and no other
/// endpoint is reached.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_a_matrix_room_id_cannot_reach_another_endpoint() {
    let w = world("").await;
    let room = "!x/../../../../admin?y=1#z%2F..:m.test";
    let matrix = MatrixHomeserver::start_on(public(), "syt_mx", "@bot:m.test", &[room]).await;
    w.search("asylum").await;
    w.add(
        "room",
        Spec {
            kind: "matrix".into(),
            homeserver: Some(matrix.url("/prefix/")),
            room: Some(room.into()),
            token: Some("syt_mx".into()),
            ..Spec::default()
        },
        ChannelOrigin::Subscriber,
    )
    .await;
    send_push(&w.app, w.now).await.unwrap();
    let request = matrix.requests().remove(0);
    assert!(
        request
            .path
            .starts_with("/prefix/_matrix/client/v3/rooms/!x%2F..%2F")
            && !request.path.contains('?')
            && request.path.contains("%252F"),
        "{}",
        request.path
    );
}

/// Feed titles written to break each service's markup or page a whole channel: Telegram
/// takes the HTML (its parser refuses none of it), nobody is mentioned on Discord, Slack
/// or Mattermost, no Slack link is made from feed text, and emoji (two UTF-16 units
/// each) keep Discord and Telegram within their limits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_feed_text_cannot_break_markup_or_mention_anyone() {
    let w = world("").await;
    let slack = SlackWebhook::start_on(public(), "/services/T1/B1/XYZ").await;
    let discord = DiscordWebhook::start_on(public(), "77", "tok").await;
    let mattermost = MattermostWebhook::start_on(public(), "key1").await;
    let telegram = TelegramApi::start_on(public(), "9:tg", &["-100500"]).await;
    let emoji = "😀".repeat(150);
    let mut items = vec![
        (
            "h1".to_string(),
            "Asylum <tg-spoiler>x</tg-spoiler> <b unclosed &amp; &lt; &#x41; & <a href=\"x\">"
                .to_string(),
        ),
        (
            "h2".to_string(),
            "Asylum @here @everyone <@&123> <@!42> [click](javascript:alert(1)) ||s||".to_string(),
        ),
        (
            "h3".to_string(),
            "Asylum <!here> <!channel> <http://evil.example|click> *b* ~s~".to_string(),
        ),
        (
            "h4".to_string(),
            "Asylum @all @channel ~town-square".to_string(),
        ),
    ];
    for i in 0..40 {
        items.push((format!("e{i:02}"), format!("Asylum {i} {emoji}")));
    }
    let items: Vec<(String, String, String)> = items
        .into_iter()
        .map(|(g, t)| (g, t, format!("asylum {emoji}")))
        .collect();
    w.serve_full(&items);
    w.search("asylum").await;
    w.add("s", kind("slack", slack.endpoint()), ChannelOrigin::Admin)
        .await;
    w.add(
        "d",
        kind("discord", discord.endpoint()),
        ChannelOrigin::Admin,
    )
    .await;
    w.add(
        "m",
        kind("mattermost", mattermost.endpoint()),
        ChannelOrigin::Admin,
    )
    .await;
    w.add(
        "t",
        Spec {
            kind: "telegram".into(),
            token: Some("9:tg".into()),
            chat_id: Some("-100500".into()),
            api: Some(telegram.base()),
            ..Spec::default()
        },
        ChannelOrigin::Admin,
    )
    .await;
    w.poll().await;
    let round = w.digest().await;
    assert_eq!((round.push.sent, round.push.failed), (4, 0), "{round:?}");
    let text = telegram.messages()[0]["text"].as_str().unwrap().to_string();
    assert!(text.encode_utf16().count() <= 4096);
    let discord_text = discord.messages()[0]["content"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(discord_text.encode_utf16().count() <= 2000);
    assert!(discord_text.contains("here"), "{discord_text}");
    for mention in ["@here", "@everyone", "<@&123>", "<@!42>", "](javascript"] {
        assert!(!discord_text.contains(mention), "{mention}: {discord_text}");
    }
    let slack_text = slack.messages()[0]["text"].as_str().unwrap().to_string();
    for raw in ["<!here>", "<!channel>", "<http://evil.example|"] {
        assert!(!slack_text.contains(raw), "{raw}: {slack_text}");
    }
    let mm = mattermost.messages()[0]["text"]
        .as_str()
        .unwrap()
        .to_string();
    for raw in ["@all", "@channel", " ~town"] {
        assert!(!mm.contains(raw), "{raw}: {mm}");
    }
}

/// Ben posts Ana's destination id to the confirm, change and route forms with his own
/// (valid) manage link and anti-forgery value: nothing of Ana's changes, no test is
/// queued for her destination, and Ben's search is not routed there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_another_subscribers_destination_cannot_be_used_from_the_forms() {
    let w = world("").await;
    let receiver = WebhookReceiver::start_on(public(), "whsec_AAAA").await;
    w.search("asylum").await;
    let bens = w.search_of(BEN, "visa").await;
    let anas = w
        .add(
            "hers",
            webhook(receiver.url("/in")),
            ChannelOrigin::Subscriber,
        )
        .await;
    let confirmed = w
        .add("hers2", webhook(receiver.url("/in2")), ChannelOrigin::Admin)
        .await;
    let site = support::Site::start(w.app.clone()).await;
    let (manage, csrf) = w.manage(BEN).await;
    let code = anas.confirm_code.clone().unwrap();
    let (status, _) = site
        .post(
            &format!("{manage}/destination/confirm"),
            &[
                ("csrf", &csrf),
                ("destination", &anas.id.to_string()),
                ("code", &code),
            ],
        )
        .await;
    assert!(status.is_redirection(), "{status}");
    for action in ["pause", "remove", "test", "resend"] {
        let (status, _) = site
            .post(
                &format!("{manage}/destination/change"),
                &[
                    ("csrf", &csrf),
                    ("destination", &confirmed.id.to_string()),
                    ("action", action),
                ],
            )
            .await;
        assert!(status.is_redirection(), "{action}: {status}");
    }
    let to = format!("to_{}", confirmed.id);
    let (status, _) = site
        .post(
            &format!("{manage}/route"),
            &[
                ("csrf", &csrf),
                ("subscription", &bens.to_string()),
                ("email", "1"),
                (&to, "1"),
            ],
        )
        .await;
    assert!(status.is_redirection(), "{status}");
    let store = &w.app.store;
    let hers = store.channel(anas.id).await.unwrap().unwrap();
    assert_eq!(hers.state, tidings::store::ChannelState::Unconfirmed);
    let hers2 = store.channel(confirmed.id).await.unwrap().unwrap();
    assert_eq!(hers2.state, tidings::store::ChannelState::Active);
    assert!(hers2.every_search && !hers2.searches.contains(&bens));
    let tests = w
        .outbox_push()
        .await
        .into_iter()
        .filter(|m| m.subject.contains("test"))
        .count();
    assert_eq!(tests, 0);
}

/// Two processes on one database send what is due at the same time: every message is
/// claimed by one of them, and the receiver gets each `webhook-id` exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn held_two_processes_send_each_message_once() {
    let w = world("").await;
    let receiver = WebhookReceiver::start_on(public(), "whsec_AAAA").await;
    w.search("asylum").await;
    let added = w
        .add("crm", webhook(receiver.url("/in")), ChannelOrigin::Admin)
        .await;
    receiver.set_secret(added.signing_secret.as_deref().unwrap());
    let channel = w.app.store.channel(added.id).await.unwrap().unwrap();
    for _ in 0..40 {
        tidings::push::queue_test(&w.app.store, &channel, w.now)
            .await
            .unwrap();
    }
    // A second process: another App over the same config and database.
    let config = tidings::Config::load(&w.dir.path().join("config.toml")).unwrap();
    let mut other = App::open(config).await.unwrap();
    other.fetcher = w.app.fetcher.clone();
    let (a, b) = tokio::join!(send_push(&w.app, w.now), send_push(&other, w.now));
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(a.sent + b.sent, 40, "{a:?} {b:?}");
    assert_eq!(receiver.requests().len(), 40);
    assert_eq!(receiver.accepted_events().len(), 40);
    assert!(receiver.duplicates().is_empty());
}

/// A search routed only to a destination that is not confirmed (or paused), with email
/// turned off for it: its matches come by email, and the destination gets nothing but
/// its verification message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_a_search_routed_only_to_an_unconfirmed_destination_comes_by_email() {
    let w = world("").await;
    let receiver = WebhookReceiver::start_on(public(), "whsec_AAAA").await;
    let asylum = w.search("asylum").await;
    let added = w
        .add(
            "mine",
            webhook(receiver.url("/in")),
            ChannelOrigin::Subscriber,
        )
        .await;
    receiver.set_secret(added.signing_secret.as_deref().unwrap());
    w.app
        .store
        .set_search_route(asylum, false, vec![added.id])
        .await
        .unwrap();
    w.serve(&[("a1", "Asylum ruling by email")]);
    w.poll().await;
    let round = w.digest().await;
    assert_eq!(round.push.sent, 1, "the verification only: {round:?}");
    let events = receiver.accepted_events();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["type"], "tidings.verify");
    send_mail(&w.app, w.now).await.unwrap();
    let mails = w.smtp.wait_for(1, Duration::from_secs(5)).await;
    assert!(decode(&mails[0]).text.contains("Asylum ruling by email"));
}

/// A destination named with markup, and a receiver whose rejection is markup: the
/// manage page shows both as text.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_names_and_answers_are_text_on_the_manage_page() {
    let w = world("pause_after = 1").await;
    let (outside, _) = raw_server(
        public(),
        "HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\nContent-Length: 47\r\n\r\n{\"error\":\"<img src=x onerror=alert(1)>!!!!!!!\"}".into(),
        false,
    )
    .await;
    w.search("asylum").await;
    let added = w
        .add(
            "<script>alert(1)</script>\"'",
            webhook(format!("http://{outside}/in")),
            ChannelOrigin::Admin,
        )
        .await;
    let channel = w.app.store.channel(added.id).await.unwrap().unwrap();
    tidings::push::queue_test(&w.app.store, &channel, w.now)
        .await
        .unwrap();
    w.serve(&[("a1", "Asylum")]);
    w.poll().await;
    w.digest().await;
    let channel = w.app.store.channel(added.id).await.unwrap().unwrap();
    assert!(channel.last_error.as_deref().unwrap().contains("<img"));
    let site = support::Site::start(w.app.clone()).await;
    let (manage, _) = w.manage(ANA).await;
    let (status, page) = site.get(&manage).await;
    assert!(status.is_success());
    assert!(!page.contains("<script>alert(1)"), "{page}");
    assert!(!page.contains("<img src=x"), "{page}");
    assert!(page.contains("&lt;script&gt;alert(1)"), "{page}");
}
