//! Destinations beside email, end to end on loopback: a feed, a mail server and real HTTP
//! servers speaking each service's API (`support::channels`), 127.0.0.2 standing in for
//! the internet. Digests reach webhooks (signed, verified by an independent
//! implementation), ntfy, Telegram, Matrix, Slack, Discord and Mattermost in their own
//! formats; faults are retried, rejected or paused as the outbox promises.

mod support;

use std::net::IpAddr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use support::articles::{PUBLIC, Teaser, app, feed_table, public_server, rss};
use support::channels::{
    DiscordWebhook, Fault, MatrixHomeserver, MattermostWebhook, NtfyServer, SlackWebhook,
    TelegramApi, WebhookReceiver,
};
use support::{FeedServer, SmtpServer, at, decode, subscribe};
use tidings::App;
use tidings::pipeline::send_push;
use tidings::push::{Added, Spec, add_channel};
use tidings::store::{ChannelOrigin, ChannelState, Confirmation, OutboxStatus, SubscriptionId};
use tidings::{poll_feeds, send_digests};

const WAIT: Duration = Duration::from_secs(10);
const ANA: &str = "ana@x.example";

fn public() -> IpAddr {
    IpAddr::V4(PUBLIC)
}

/// A feed on the "public" address, a mail server, and an app polling the feed with
/// `[channels]` keys `channels` (plain http allowed: the fakes speak it).
struct World {
    _dir: tempfile::TempDir,
    smtp: SmtpServer,
    feed: FeedServer,
    app: App,
    now: DateTime<Utc>,
}

async fn world(channels: &str) -> World {
    let dir = tempfile::tempdir().unwrap();
    let smtp = SmtpServer::start().await;
    let feed = public_server().await;
    let now = at("2026-12-01T12:00:00Z");
    let timeout = match channels.contains("timeout") {
        true => "",
        false => "timeout = \"1s\"\n",
    };
    let poll = format!("[channels]\nrequire_https = false\n{timeout}{channels}");
    let feeds = feed_table("daily", &feed.url("/feed.xml"), "");
    let app = app(dir.path(), &poll, &feeds, smtp.port()).await;
    World {
        _dir: dir,
        smtp,
        feed,
        app,
        now,
    }
}

impl World {
    /// The feed carries these (guid, title) items, each with a one-line teaser.
    fn serve(&self, items: &[(&str, &str)]) {
        let escaped: Vec<String> = items
            .iter()
            .map(|(_, t)| {
                t.replace('&', "&amp;")
                    .replace('<', "&lt;")
                    .replace('>', "&gt;")
            })
            .collect();
        let mut titles = escaped.iter().map(String::as_str);
        let teasers: Vec<Teaser> = items
            .iter()
            .map(|(guid, _)| Teaser {
                guid,
                title: titles.next().unwrap(),
                link: format!("https://news.example/{guid}"),
                summary: "Read the agency's notice.",
            })
            .collect();
        self.feed.set("/feed.xml", rss(&teasers, self.now));
    }

    async fn poll(&self) {
        poll_feeds(&self.app, self.now, false).await.unwrap();
    }

    async fn search(&self, query: &str) -> SubscriptionId {
        subscribe(&self.app, ANA, query, "immediate", self.now).await;
        let who = self.app.store.subscriber(ANA).await.unwrap().unwrap();
        let searches = self.app.store.subscriptions_of(who.id).await.unwrap();
        searches.iter().find(|(_, q)| q == query).unwrap().0
    }

    async fn add(&self, name: &str, spec: Spec, by: ChannelOrigin) -> Added {
        let who = self.app.store.subscriber(ANA).await.unwrap().unwrap();
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

    async fn digest(&self) -> tidings::pipeline::DigestSummary {
        send_digests(&self.app, self.now, false).await.unwrap()
    }

    fn mails(&self) -> Vec<support::Mail> {
        self.smtp.messages().iter().map(decode).collect()
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
}

/// The `/admin` page of `app`, served on loopback with a password.
async fn admin_page(app: &App) -> String {
    let mut app = app.clone();
    app.admin_token = Some("a-long-enough-admin-password".into());
    let (tx, rx) = tokio::sync::watch::channel(app);
    std::mem::forget(tx);
    let stop = tokio_util::sync::CancellationToken::new();
    let addr = tidings::web::serve(([127, 0, 0, 1], 0).into(), rx, stop.clone())
        .await
        .unwrap();
    let page = reqwest::Client::new()
        .get(format!("http://{addr}/admin"))
        .basic_auth("admin", Some("a-long-enough-admin-password"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    stop.cancel();
    page
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

/// A digest reaches a webhook as one JSON event, signed so that an independent
/// verifier accepts it, with the items, their links, sources and the words that
/// matched; the `webhook-id` is the outbox row's stable id. Email still gets its copy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_digest_reaches_a_webhook_signed_and_complete() {
    let w = world("").await;
    let receiver = WebhookReceiver::start_on(public(), "whsec_AAAA").await;
    w.serve(&[
        ("a1", "New asylum rule for border cases"),
        ("b1", "Weather report"),
    ]);
    w.search("asylum").await;
    let added = w
        .add(
            "crm",
            webhook(receiver.url("/hooks/in")),
            ChannelOrigin::Admin,
        )
        .await;
    let secret = added.signing_secret.expect("a webhook's secret is shown");
    assert!(secret.starts_with("whsec_"), "{secret}");
    receiver.set_secret(&secret);

    w.poll().await;
    let round = w.digest().await;
    assert_eq!((round.push.sent, round.push.failed), (1, 0), "{round:?}");
    let events = receiver.wait_for(1, WAIT).await;
    assert_eq!(events.len(), 1);
    assert!(receiver.rejected().is_empty(), "{:?}", receiver.rejected());
    let event = &receiver.accepted_events()[0];
    assert_eq!(event["type"], "tidings.digest");
    assert_eq!(event["data"]["subscriber"], ANA);
    assert_eq!(event["data"]["destination"], "crm");
    let search = &event["data"]["searches"][0];
    assert_eq!(search["query"], "asylum");
    let items = search["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{event}");
    assert_eq!(items[0]["title"], "New asylum rule for border cases");
    assert_eq!(items[0]["link"], "https://news.example/a1");
    assert_eq!(items[0]["source"], "daily feed");
    assert_eq!(items[0]["matched"], serde_json::json!(["asylum"]));
    assert!(search["feed_url"].as_str().unwrap().contains("/feed/"));

    let outbox = w.outbox_push().await;
    assert_eq!(outbox.len(), 1);
    assert_eq!(outbox[0].status, OutboxStatus::Sent);
    assert_eq!(
        events[0].header("webhook-id"),
        Some(outbox[0].message_id.as_str())
    );
    assert_eq!(outbox[0].recipient, "webhook:crm");

    let mails = w.smtp.wait_for(1, WAIT).await;
    assert_eq!(mails.len(), 1, "email is still the default");
    assert!(decode(&mails[0]).text.contains("New asylum rule"));
}

/// Each search goes where its subscriber sends it: a search routed to Telegram alone is
/// not mailed, the other search is not sent to Telegram, and Telegram gets its own
/// HTML, which its parser accepts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_search_goes_where_it_is_routed() {
    let w = world("").await;
    let telegram = TelegramApi::start_on(public(), "123:secret", &["4242"]).await;
    w.serve(&[
        ("a1", "Asylum office backlog grows"),
        ("h1", "H-1B lottery <b>results</b> & dates"),
    ]);
    let asylum = w.search("asylum").await;
    let h1b = w.search("H-1B").await;
    let added = w
        .add(
            "phone",
            Spec {
                kind: "telegram".into(),
                token: Some("123:secret".into()),
                chat_id: Some("4242".into()),
                api: Some(telegram.base()),
                ..Spec::default()
            },
            ChannelOrigin::Admin,
        )
        .await;
    let store = &w.app.store;
    store
        .set_search_route(h1b, false, vec![added.id])
        .await
        .unwrap();
    store.set_search_route(asylum, true, vec![]).await.unwrap();

    w.poll().await;
    let round = w.digest().await;
    assert_eq!(round.push.sent, 1, "{round:?}");
    let sent = telegram.wait_for(1, WAIT).await;
    assert_eq!(sent.len(), 1, "{:?}", telegram.requests());
    let message = &telegram.messages()[0];
    assert_eq!(message["chat_id"], 4242);
    assert_eq!(message["parse_mode"], "HTML");
    let text = message["text"].as_str().unwrap();
    assert!(text.contains("H-1B lottery results &amp; dates"), "{text}");
    assert!(!text.contains("Asylum office"), "{text}");

    let mails = w.smtp.wait_for(1, WAIT).await;
    let mail = decode(&mails[0]);
    assert!(mail.text.contains("Asylum office backlog"), "{}", mail.text);
    assert!(!mail.text.contains("H-1B lottery"), "{}", mail.text);
}

/// Thirty long items: every chat service gets one message within its limit (the fakes
/// refuse longer ones as the services do), cut at an item with a link to the rest;
/// Matrix's transaction id is the outbox row's id, ntfy gets a title and a click link,
/// Discord pings no one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_chat_service_gets_its_own_format_within_its_limits() {
    let w = world("").await;
    let slack = SlackWebhook::start_on(public(), "/services/T1/B1/XYZ").await;
    let discord = DiscordWebhook::start_on(public(), "77", "tok").await;
    let mattermost = MattermostWebhook::start_on(public(), "key1").await;
    let ntfy = NtfyServer::start_on(public(), Some("tk_ntfy")).await;
    let matrix =
        MatrixHomeserver::start_on(public(), "syt_mx", "@bot:m.test", &["!room:m.test"]).await;
    let telegram = TelegramApi::start_on(public(), "9:tg", &["-100500"]).await;
    let titles: Vec<(String, String)> = (0..30)
        .map(|i| {
            (
                format!("g{i}"),
                format!("Asylum update {i}: @everyone read the agency's long and detailed notice on procedures"),
            )
        })
        .collect();
    let items: Vec<(&str, &str)> = titles
        .iter()
        .map(|(g, t)| (g.as_str(), t.as_str()))
        .collect();
    w.serve(&items);
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
    let ntfy_spec = Spec {
        token: Some("tk_ntfy".into()),
        ..kind("ntfy", ntfy.url("/ana-alerts"))
    };
    w.add("n", ntfy_spec, ChannelOrigin::Admin).await;
    let matrix_spec = Spec {
        kind: "matrix".into(),
        homeserver: Some(matrix.base()),
        room: Some("!room:m.test".into()),
        token: Some("syt_mx".into()),
        ..Spec::default()
    };
    w.add("x", matrix_spec, ChannelOrigin::Admin).await;
    let telegram_spec = Spec {
        kind: "telegram".into(),
        token: Some("9:tg".into()),
        chat_id: Some("-100500".into()),
        api: Some(telegram.base()),
        ..Spec::default()
    };
    w.add("t", telegram_spec, ChannelOrigin::Admin).await;

    w.poll().await;
    let round = w.digest().await;
    assert_eq!(
        (round.push.sent, round.push.failed, round.push.retrying),
        (6, 0, 0),
        "{round:?}"
    );
    for (name, accepted) in [
        ("slack", slack.accepted()),
        ("discord", discord.accepted()),
        ("mattermost", mattermost.accepted()),
        ("ntfy", ntfy.accepted()),
        ("matrix", matrix.accepted()),
        ("telegram", telegram.accepted()),
    ] {
        assert_eq!(accepted, 1, "{name}");
    }
    let cut = |text: &str, name: &str| {
        let shown = text.matches("• ").count();
        assert!((1..30).contains(&shown), "{name}: {shown} items in {text}");
        assert!(
            text.contains(&format!("and {} more", 30 - shown)),
            "{name}: {text}"
        );
        assert!(text.contains("/feed/"), "{name}: the rest's link: {text}");
    };
    let discord_message = &discord.messages()[0];
    let content = discord_message["content"].as_str().unwrap();
    assert!(content.encode_utf16().count() <= 2000);
    cut(content, "discord");
    assert_eq!(
        discord_message["allowed_mentions"]["parse"],
        serde_json::json!([])
    );
    assert!(!content.contains("@everyone"), "{content}");
    cut(telegram.messages()[0]["text"].as_str().unwrap(), "telegram");
    cut(slack.messages()[0]["text"].as_str().unwrap(), "slack");
    let ntfy_message = &ntfy.messages()[0];
    assert_eq!(ntfy_message.topic, "ana-alerts");
    assert!(
        ntfy_message
            .title
            .as_deref()
            .unwrap()
            .starts_with("Tidings: 30 new")
    );
    assert!(
        ntfy_message
            .click
            .as_deref()
            .unwrap()
            .starts_with("https://news.example/g")
    );
    assert!(!ntfy_message.attachment, "within ntfy's 4,096 bytes");
    cut(&ntfy_message.message, "ntfy");
    // Mattermost takes 16,383 characters: all thirty fit.
    let mm = mattermost.messages()[0]["text"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(mm.matches("• ").count(), 30, "{mm}");
    let (room, txn, content) = matrix.events().remove(0);
    assert_eq!(room, "!room:m.test");
    let row = w
        .outbox_push()
        .await
        .into_iter()
        .find(|m| m.recipient == "matrix:x")
        .unwrap();
    assert_eq!(
        txn, row.message_id,
        "the transaction id is the row's stable id"
    );
    assert_eq!(content["msgtype"], "m.text");
    assert!(
        content["formatted_body"]
            .as_str()
            .unwrap()
            .contains("<a href=\"https://news.example/g")
    );
}

/// A 500 is retried with backoff and a 429 not before its Retry-After; the retry carries
/// the same `webhook-id`, and a receiver that already took the first (a slow answer that
/// timed out) drops the repeat.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_are_retried_with_the_same_id_and_never_before_retry_after() {
    let mut w = world("").await;
    let receiver = WebhookReceiver::start_on(public(), "whsec_AAAA").await;
    w.serve(&[("a1", "Asylum hearing moved")]);
    w.search("asylum").await;
    let added = w
        .add("crm", webhook(receiver.url("/in")), ChannelOrigin::Admin)
        .await;
    receiver.set_secret(added.signing_secret.as_deref().unwrap());
    receiver.fail_next(1, Fault::Status(500));
    receiver.fail_next(1, Fault::RateLimited(Duration::from_secs(300)));
    receiver.fail_next(1, Fault::Delay(Duration::from_secs(3)));

    w.poll().await;
    let round = w.digest().await;
    assert_eq!((round.push.sent, round.push.retrying), (0, 1), "{round:?}");
    let row = w.outbox_push().await.remove(0);
    assert_eq!(row.status, OutboxStatus::Pending);
    assert!(
        row.last_error.as_deref().unwrap().contains("HTTP 500"),
        "{row:?}"
    );
    assert_eq!(row.next_attempt_at, w.now + chrono::Duration::minutes(1));

    // Backoff over: the 429 says five minutes.
    w.later(chrono::Duration::seconds(61));
    assert_eq!(send_push(&w.app, w.now).await.unwrap().retrying, 1);
    let row = w.outbox_push().await.remove(0);
    assert_eq!(row.next_attempt_at, w.now + chrono::Duration::seconds(300));
    w.later(chrono::Duration::seconds(200));
    let early = send_push(&w.app, w.now).await.unwrap();
    assert_eq!(early, Default::default(), "not before Retry-After");
    assert_eq!(receiver.requests().len(), 2);

    // The slow answer times out (1 s); the receiver took it all the same.
    w.later(chrono::Duration::seconds(101));
    assert_eq!(send_push(&w.app, w.now).await.unwrap().retrying, 1);
    assert!(
        w.outbox_push().await[0]
            .last_error
            .as_deref()
            .unwrap()
            .contains("timed out")
    );
    w.later(chrono::Duration::minutes(10));
    assert_eq!(send_push(&w.app, w.now).await.unwrap().sent, 1);
    let requests = receiver.requests();
    assert_eq!(requests.len(), 4);
    let ids: Vec<&str> = requests
        .iter()
        .map(|r| r.header("webhook-id").unwrap())
        .collect();
    assert!(ids.iter().all(|id| *id == row.message_id), "{ids:?}");
    assert_eq!(receiver.accepted_events().len(), 1);
    assert_eq!(receiver.duplicates(), vec![row.message_id.clone()]);
    assert_eq!(w.outbox_push().await[0].status, OutboxStatus::Sent);
}

/// A receiver that is down is retried; one answering 410 is paused at once, its owner
/// told by mail, and from then on the searches that went only there come by email.
/// Resuming sends what waited.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gone_destination_is_paused_its_owner_told_and_email_takes_over() {
    let mut w = world("").await;
    let slack = SlackWebhook::start_on(public(), "/services/T/B/GONE").await;
    w.serve(&[("a1", "Asylum ruling one")]);
    let search = w.search("asylum").await;
    let added = w
        .add(
            "team",
            kind("slack", slack.endpoint()),
            ChannelOrigin::Admin,
        )
        .await;
    w.app
        .store
        .set_search_route(search, false, vec![added.id])
        .await
        .unwrap();

    // Down: the connection closes without an answer.
    slack.fail_next(1, Fault::Drop);
    w.poll().await;
    let round = w.digest().await;
    assert_eq!(round.push.retrying, 1, "{round:?}");
    assert!(w.mails().is_empty(), "the search goes to Slack alone");
    let row = w.outbox_push().await.remove(0);
    assert!(
        row.last_error.as_deref().unwrap().contains("connection"),
        "{row:?}"
    );

    // Back, archived: 410.
    slack.fail_next(1, Fault::Status(410));
    w.later(chrono::Duration::minutes(2));
    let round = send_push(&w.app, w.now).await.unwrap();
    assert_eq!((round.failed, round.paused), (1, 1), "{round:?}");
    let channel = w.app.store.channel(added.id).await.unwrap().unwrap();
    assert_eq!(channel.state, ChannelState::Paused);
    assert!(
        channel.paused_reason.as_deref().unwrap().contains("410"),
        "{channel:?}"
    );
    // The owner's mail goes with the next mail round.
    let a_moment_later = w.now + chrono::Duration::seconds(5);
    let mailed = tidings::send_mail(&w.app, a_moment_later).await.unwrap();
    assert_eq!(
        mailed.sent,
        1,
        "{mailed:?} {:?}",
        w.app.store.outbox().await.unwrap()
    );
    let told = w.smtp.wait_for(1, WAIT).await;
    let told = decode(&told[0]);
    assert!(
        told.subject.contains("\"team\" is paused"),
        "{}",
        told.subject
    );
    assert!(told.text.contains("channel_is_archived"), "{}", told.text);
    // The operators' page shows it, with the service's answer.
    let admin = admin_page(&w.app).await;
    let start = admin.find("Destinations beside email").unwrap();
    let section = &admin[start..admin.find("Failed messages").unwrap()];
    assert!(
        section.contains("1 in all: 0 active, 0 waiting for their code, 1 paused"),
        "{section}"
    );
    assert!(
        section.contains("slack: team") && section.contains("channel_is_archived"),
        "{section}"
    );
    assert!(
        admin[admin.find("Failed messages").unwrap()..].contains("slack:team"),
        "{admin}"
    );

    // The next match of that search comes by email.
    w.serve(&[("a1", "Asylum ruling one"), ("a2", "Asylum ruling two")]);
    w.later(chrono::Duration::minutes(20));
    w.poll().await;
    w.digest().await;
    let mails = w.smtp.wait_for(2, WAIT).await;
    assert!(decode(&mails[1]).text.contains("Asylum ruling two"));
    assert_eq!(slack.requests().len(), 2, "nothing more went to Slack");

    // Resumed: what waited goes (nothing did: the 410's row failed), and new matches
    // go to Slack again.
    assert!(w.app.store.resume_channel(added.id, w.now).await.unwrap());
    w.serve(&[
        ("a1", "Asylum ruling one"),
        ("a2", "Asylum ruling two"),
        ("a3", "Asylum ruling three"),
    ]);
    w.later(chrono::Duration::minutes(20));
    w.poll().await;
    let round = w.digest().await;
    assert_eq!(round.push.sent, 1, "{round:?}");
    assert!(
        slack.messages()[0]["text"]
            .as_str()
            .unwrap()
            .contains("Asylum ruling three")
    );
}

/// A receiver whose port is closed is retried, not given up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_that_is_down_is_retried() {
    let w = world("").await;
    let port = {
        let listener = std::net::TcpListener::bind((PUBLIC, 0)).unwrap();
        listener.local_addr().unwrap().port()
    };
    w.serve(&[("a1", "Asylum")]);
    w.search("asylum").await;
    w.add(
        "crm",
        webhook(format!("http://{PUBLIC}:{port}/in")),
        ChannelOrigin::Admin,
    )
    .await;
    w.poll().await;
    let round = w.digest().await;
    assert_eq!(
        (round.push.retrying, round.push.failed),
        (1, 0),
        "{round:?}"
    );
    let row = w.outbox_push().await.remove(0);
    assert_eq!(row.status, OutboxStatus::Pending);
    assert!(
        row.last_error.as_deref().unwrap().contains("connection"),
        "{row:?}"
    );
}

/// A destination a subscriber adds gets its verification message (with the code) and
/// nothing else until the code is entered; wrong codes count, five lock it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscribers_destination_gets_nothing_before_its_code() {
    let w = world("").await;
    let receiver = WebhookReceiver::start_on(public(), "whsec_AAAA").await;
    w.serve(&[("a1", "Asylum news")]);
    w.search("asylum").await;
    let added = w
        .add(
            "mine",
            webhook(receiver.url("/in")),
            ChannelOrigin::Subscriber,
        )
        .await;
    receiver.set_secret(added.signing_secret.as_deref().unwrap());
    let code = added.confirm_code.clone().unwrap();

    w.poll().await;
    let round = w.digest().await;
    assert_eq!(round.push.sent, 1, "the verification only: {round:?}");
    let events = receiver.accepted_events();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["type"], "tidings.verify");
    assert_eq!(events[0]["data"]["code"], code.as_str());
    assert_eq!(
        w.smtp.wait_for(1, WAIT).await.len(),
        1,
        "the digest went by email"
    );

    let store = &w.app.store;
    assert_eq!(
        store
            .confirm_channel(added.id, "0000 0000", w.now)
            .await
            .unwrap(),
        Confirmation::Wrong { tries_left: 4 }
    );
    assert_eq!(
        store
            .confirm_channel(added.id, &code.replace(' ', ""), w.now)
            .await
            .unwrap(),
        Confirmation::Confirmed
    );
    assert_eq!(
        store.confirm_channel(added.id, &code, w.now).await.unwrap(),
        Confirmation::NotWaiting
    );

    // Another destination: five wrong codes lock it, the right one no longer works.
    let other = w
        .add(
            "other",
            webhook(receiver.url("/in2")),
            ChannelOrigin::Subscriber,
        )
        .await;
    for left in (1..5).rev() {
        assert_eq!(
            store
                .confirm_channel(other.id, "1111 1111", w.now)
                .await
                .unwrap(),
            Confirmation::Wrong { tries_left: left }
        );
    }
    assert_eq!(
        store
            .confirm_channel(other.id, "1111 1111", w.now)
            .await
            .unwrap(),
        Confirmation::Locked
    );
    assert_eq!(
        store
            .confirm_channel(other.id, other.confirm_code.as_deref().unwrap(), w.now)
            .await
            .unwrap(),
        Confirmation::Locked
    );
}

/// A subscriber cannot make the server post into its own network: their webhook on a
/// loopback address (or a name resolving to one) is refused at connect time, and
/// nothing reaches it. The admin may point one there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscribers_webhook_may_not_reach_the_private_network() {
    let w = world("").await;
    let inside = WebhookReceiver::start("whsec_AAAA").await;
    w.serve(&[("a1", "Asylum")]);
    w.search("asylum").await;
    let theirs = w
        .add(
            "inside",
            webhook(inside.url("/in")),
            ChannelOrigin::Subscriber,
        )
        .await;
    let round = send_push(&w.app, w.now).await.unwrap();
    assert_eq!(round.failed, 1, "{round:?}");
    assert!(inside.requests().is_empty(), "nothing reached the inside");
    let row = w.outbox_push().await.remove(0);
    assert_eq!(row.status, OutboxStatus::Failed);
    let error = row.last_error.unwrap();
    assert!(
        error.contains("refused by the fetch policy") && error.contains("subscriber"),
        "{error}"
    );
    // A failed verification says nothing of the destination's standing.
    let channel = w.app.store.channel(theirs.id).await.unwrap().unwrap();
    assert_eq!(channel.state, ChannelState::Unconfirmed);

    let admins = w
        .add("ops", webhook(inside.url("/ops")), ChannelOrigin::Admin)
        .await;
    inside.set_secret(admins.signing_secret.as_deref().unwrap());
    let queued = tidings::push::queue_test(
        &w.app.store,
        &w.app.store.channel(admins.id).await.unwrap().unwrap(),
        w.now,
    )
    .await
    .unwrap();
    assert_eq!(send_push(&w.app, w.now).await.unwrap().sent, 1);
    assert_eq!(inside.accepted_events()[0]["type"], "tidings.test");
    let sent = w.app.store.outbox().await.unwrap();
    assert!(
        sent.iter()
            .any(|m| m.id == queued && m.status == OutboxStatus::Sent)
    );
}

/// Removing a destination fails what waited for it, saying so; removing the subscriber
/// (one-click unsubscribe) does the same for all of theirs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removing_a_destination_or_its_subscriber_stops_everything_waiting() {
    let w = world("").await;
    let receiver = WebhookReceiver::start_on(public(), "whsec_AAAA").await;
    w.serve(&[("a1", "Asylum")]);
    w.search("asylum").await;
    let one = w
        .add("one", webhook(receiver.url("/1")), ChannelOrigin::Admin)
        .await;
    let two = w
        .add("two", webhook(receiver.url("/2")), ChannelOrigin::Admin)
        .await;
    w.app
        .store
        .pause_channel(one.id, "on holiday")
        .await
        .unwrap();
    w.app
        .store
        .pause_channel(two.id, "on holiday")
        .await
        .unwrap();
    // Paused: the digest goes by email, and a test waits for nobody.
    for id in [one.id, two.id] {
        let c = w.app.store.channel(id).await.unwrap().unwrap();
        tidings::push::queue_test(&w.app.store, &c, w.now)
            .await
            .unwrap();
    }
    w.app.store.remove_channel(one.id).await.unwrap();
    assert!(w.app.store.remove_subscriber(ANA).await.unwrap());
    let rows = w.outbox_push().await;
    assert_eq!(rows.len(), 2);
    for row in rows {
        assert_eq!(row.status, OutboxStatus::Failed, "{row:?}");
        assert_eq!(row.last_error.as_deref(), Some("destination removed"));
    }
    assert_eq!(send_push(&w.app, w.now).await.unwrap(), Default::default());
    assert!(receiver.requests().is_empty());
    // Retrying one is refused: it has nowhere to go (it would wait, unseen, for ever).
    let row = w.outbox_push().await.remove(0);
    let refused = w.app.store.requeue(row.id, w.now).await.unwrap_err();
    assert!(
        refused.to_string().contains("destination was removed"),
        "{refused}"
    );
}

/// `[channels] timeout` is the destinations' own, even longer than `[poll] timeout` (2 s
/// here): a receiver answering after 3 s is within a 4 s timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_destinations_timeout_is_their_own() {
    let w = world("timeout = \"4s\"\n").await;
    let receiver = WebhookReceiver::start_on(public(), "whsec_AAAA").await;
    w.serve(&[("a1", "Asylum")]);
    w.search("asylum").await;
    let added = w
        .add("crm", webhook(receiver.url("/in")), ChannelOrigin::Admin)
        .await;
    receiver.set_secret(added.signing_secret.as_deref().unwrap());
    receiver.fail_next(1, Fault::Delay(Duration::from_secs(3)));
    w.poll().await;
    let round = w.digest().await;
    assert_eq!((round.push.sent, round.push.retrying), (1, 0), "{round:?}");
}

/// Requests to one Slack incoming webhook are paced at Slack's published one a second,
/// whoever they are for: three subscribers' digests to one team channel go 1 s apart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_incoming_webhook_is_sent_to_at_its_services_pace() {
    let w = world("").await;
    let slack = SlackWebhook::start_on(public(), "/services/T/B/TEAM").await;
    w.serve(&[("a1", "Asylum")]);
    for who in ["a@x.example", "b@x.example", "c@x.example"] {
        subscribe(&w.app, who, "asylum", "immediate", w.now).await;
        let subscriber = w.app.store.subscriber(who).await.unwrap().unwrap();
        add_channel(
            &w.app.store,
            &w.app.config.channels,
            &subscriber,
            "team",
            &kind("slack", slack.endpoint()),
            ChannelOrigin::Admin,
            Vec::new(),
            w.now,
        )
        .await
        .unwrap();
    }
    w.poll().await;
    let round = w.digest().await;
    assert_eq!(round.push.sent, 3, "{round:?}");
    let at: Vec<_> = slack.requests().iter().map(|r| r.at).collect();
    assert_eq!(at.len(), 3);
    for pair in at.windows(2) {
        let gap = pair[1].duration_since(pair[0]);
        assert!(
            gap >= Duration::from_millis(950),
            "{gap:?} between two requests"
        );
    }
}

/// `/metrics`: deliveries by kind and result, and what waits, by kind, with the oldest's
/// age.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_deliveries_by_kind_and_result_and_what_waits() {
    let w = world("").await;
    let receiver = WebhookReceiver::start_on(public(), "whsec_AAAA").await;
    let slack = SlackWebhook::start_on(public(), "/services/T/B/M").await;
    w.serve(&[("a1", "Asylum")]);
    w.search("asylum").await;
    let hook = w
        .add("crm", webhook(receiver.url("/in")), ChannelOrigin::Admin)
        .await;
    receiver.set_secret(hook.signing_secret.as_deref().unwrap());
    w.add(
        "team",
        kind("slack", slack.endpoint()),
        ChannelOrigin::Admin,
    )
    .await;
    slack.fail_next(1, Fault::Status(503));
    w.poll().await;
    let round = w.digest().await;
    assert_eq!((round.push.sent, round.push.retrying), (1, 1), "{round:?}");

    let (tx, rx) = tokio::sync::watch::channel(w.app.clone());
    std::mem::forget(tx);
    let stop = tokio_util::sync::CancellationToken::new();
    let addr = tidings::admin::serve(([127, 0, 0, 1], 0).into(), rx, stop.clone())
        .await
        .unwrap();
    let metrics = reqwest::get(format!("http://{addr}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for line in [
        "tidings_deliveries_total{kind=\"webhook\",result=\"sent\"} 1",
        "tidings_deliveries_total{kind=\"slack\",result=\"retry\"} 1",
        "tidings_deliveries_total{kind=\"telegram\",result=\"rejected\"} 0",
        "tidings_deliveries_pending{kind=\"slack\"} 1",
        "tidings_deliveries_pending{kind=\"webhook\"} 0",
    ] {
        assert!(metrics.contains(line), "{line} in\n{metrics}");
    }
    let age = metrics
        .lines()
        .find(|l| l.starts_with("tidings_deliveries_oldest_pending_age_seconds{kind=\"slack\"}"))
        .unwrap();
    let age: f64 = age.rsplit(' ').next().unwrap().parse().unwrap();
    // Queued at the test's clock; the scrape reads the database's (the wall clock).
    let expected = (chrono::Utc::now() - w.now).num_seconds() as f64;
    assert!(
        (age - expected).abs() < 60.0,
        "{age} s, expected about {expected} s"
    );
    stop.cancel();
}
