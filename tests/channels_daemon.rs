//! Destinations beside email through the binary: the `subscriber channel` and `route`
//! commands, `[[destinations]]` in config.toml with their secrets in the environment, and
//! the daemon killed with SIGKILL in the middle of a delivery, which is sent again after
//! its lease with the same `webhook-id` (the receiver keeps one).

mod support;

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use support::channels::{Fault, SlackWebhook, WebhookReceiver};
use support::{Daemon, FeedServer, Route, SmtpServer, write_config_with};

const ZOE: &str = "zoe@x.example";

fn tidings(config: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_tidings"));
    command
        .args(args)
        .arg("--config")
        .arg(config)
        .env_remove("TIDINGS_CONFIG")
        .env("TIDINGS_LOG", "warn");
    for (k, v) in env {
        command.env(k, v);
    }
    command.output().unwrap()
}

fn ok(config: &Path, args: &[&str], env: &[(&str, &str)]) -> String {
    let out = tidings(config, args, env);
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{args:?}: {stdout}{stderr}");
    format!("{stdout}{stderr}")
}

fn news(feed: &FeedServer, items: &[(&str, &str)]) {
    let published = (chrono::Utc::now() - chrono::Duration::hours(1)).to_rfc2822();
    let mut xml =
        String::from("<?xml version=\"1.0\"?><rss version=\"2.0\"><channel><title>N</title>");
    for (guid, title) in items {
        xml.push_str(&format!(
            "<item><guid>{guid}</guid><title>{title}</title><link>https://n.example/{guid}</link>\
             <pubDate>{published}</pubDate></item>"
        ));
    }
    xml.push_str("</channel></rss>");
    feed.set("/news.xml", Route::feed("application/rss+xml", xml));
}

/// The admin adds a webhook (its secret printed once), routes a search to it alone,
/// tests it, lists it; the daemon is killed while the receiver holds the digest's
/// request; the next daemon sends it again after the lease, with the same id, and the
/// receiver keeps one. Nothing is mailed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_delivery_sends_again_with_the_same_webhook_id() {
    let dir = tempfile::tempdir().unwrap();
    let feed = FeedServer::start().await;
    let smtp = SmtpServer::start().await;
    let receiver = WebhookReceiver::start("whsec_AAAA").await;
    news(&feed, &[("a1", "Asylum rule published")]);
    let config = write_config_with(
        dir.path(),
        &[("news", feed.url("/news.xml"))],
        smtp.port(),
        "",
        "[channels]\ntimeout = \"3s\"\n",
    );
    let config = config.path.clone();

    ok(
        &config,
        &["subscriber", "add", ZOE, "--query", "asylum"],
        &[],
    );
    let added = ok(
        &config,
        &[
            "subscriber",
            "channel",
            "add",
            ZOE,
            "webhook",
            "crm",
            "--url",
            &receiver.url("/in"),
        ],
        &[],
    );
    let secret = added
        .split_whitespace()
        .find(|w| w.starts_with("whsec_"))
        .unwrap_or_else(|| panic!("no secret in {added}"))
        .to_string();
    receiver.set_secret(&secret);
    let routed = ok(
        &config,
        &[
            "subscriber",
            "route",
            ZOE,
            "--query",
            "asylum",
            "--to",
            "crm",
        ],
        &[],
    );
    assert!(routed.contains("now goes to crm"), "{routed}");
    let tested = ok(&config, &["subscriber", "channel", "test", ZOE, "crm"], &[]);
    assert!(tested.contains("accepted the test message"), "{tested}");
    assert_eq!(receiver.accepted_events()[0]["type"], "tidings.test");
    let listed = ok(&config, &["subscriber", "channel", "list"], &[]);
    assert!(
        listed.contains("zoe@x.example webhook \"crm\"")
            && listed.contains("active")
            && listed.contains("added by admin"),
        "{listed}"
    );
    assert!(
        !listed.contains(&secret),
        "the secret is shown once: {listed}"
    );

    // The digest's request is held by the receiver; the daemon dies meanwhile.
    receiver.fail_next(1, Fault::Delay(Duration::from_secs(20)));
    let mut first = Daemon::start(&config, &[], &[]);
    let deadline = Instant::now() + Duration::from_secs(60);
    while receiver.requests().len() < 2 {
        assert!(
            Instant::now() < deadline,
            "no digest request; log:\n{}",
            first.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    first.signal("KILL");
    first.wait_exit(Duration::from_secs(10)).await;
    let held = receiver.requests()[1].clone();
    let id = held.header("webhook-id").unwrap().to_string();
    assert_eq!(held.json()["type"], "tidings.digest");

    // The next daemon sends it again once the lease (3 s + 10 s) is over.
    let second = Daemon::start(&config, &[], &[]);
    let deadline = Instant::now() + Duration::from_secs(60);
    while receiver.requests().len() < 3 {
        assert!(
            Instant::now() < deadline,
            "not sent again; log:\n{}",
            second.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let again = receiver.requests()[2].clone();
    assert_eq!(again.header("webhook-id"), Some(id.as_str()), "the same id");
    assert_eq!(again.body, held.body, "the same event");
    assert_eq!(receiver.duplicates(), vec![id.clone()]);
    let digests: Vec<_> = receiver
        .accepted_events()
        .into_iter()
        .filter(|e| e["type"] == "tidings.digest")
        .collect();
    assert_eq!(digests.len(), 1, "kept once");
    second.signal("TERM");
    let outbox = ok(&config, &["outbox", "--all"], &[]);
    assert!(outbox.contains("webhook:crm"), "{outbox}");
    assert!(
        smtp.messages().is_empty(),
        "the search goes to the webhook alone"
    );
}

/// `[[destinations]]` in config.toml: synced into the database for a subscriber, its
/// secret URL read from the environment when sending, never stored; removed from the
/// file, removed from the database. Secrets written in the file are refused with line
/// and column.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn destinations_in_config_toml_take_their_secrets_from_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let feed = FeedServer::start().await;
    let smtp = SmtpServer::start().await;
    let slack = SlackWebhook::start("/services/T9/B9/SECRET").await;
    news(&feed, &[("a1", "Asylum")]);
    let table = "[[destinations]]\nsubscriber = \"zoe@x.example\"\nname = \"team\"\n\
                 kind = \"slack\"\nurl_env = \"TEAM_SLACK_URL\"\nsearches = [\"asylum\"]\n";
    let config = write_config_with(
        dir.path(),
        &[("news", feed.url("/news.xml"))],
        smtp.port(),
        "",
        table,
    );
    let config = config.path.clone();
    let env = [("TEAM_SLACK_URL", slack.endpoint())];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();

    ok(
        &config,
        &["subscriber", "add", ZOE, "--query", "asylum"],
        &[],
    );
    let listed = ok(&config, &["subscriber", "channel", "list", ZOE], &env);
    assert!(
        listed.contains("slack \"team\"") && listed.contains("added by config"),
        "{listed}"
    );
    assert!(
        listed.contains("incoming webhook from $TEAM_SLACK_URL"),
        "{listed}"
    );
    assert!(!listed.contains("SECRET"), "{listed}");
    let id_of = |db: &rusqlite::Connection| -> i64 {
        db.query_row("SELECT id FROM channels", [], |r| r.get(0))
            .unwrap()
    };
    let db = rusqlite::Connection::open(dir.path().join("data/tidings.db")).unwrap();
    let (secret, secret_env): (Option<String>, Option<String>) = db
        .query_row("SELECT secret, secret_env FROM channels", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap();
    assert_eq!(
        (secret, secret_env.as_deref()),
        (None, Some("TEAM_SLACK_URL"))
    );

    // Without the variable the message waits; with it, it goes.
    let missing = tidings(
        &config,
        &["subscriber", "channel", "test", ZOE, "team"],
        &[],
    );
    assert!(!missing.status.success());
    assert!(
        String::from_utf8_lossy(&missing.stderr).contains("TEAM_SLACK_URL"),
        "{}",
        String::from_utf8_lossy(&missing.stderr)
    );
    let before = id_of(&db);
    ok(
        &config,
        &["subscriber", "channel", "test", ZOE, "team"],
        &env,
    );
    assert_eq!(
        id_of(&db),
        before,
        "a process without the variable changes nothing stored"
    );
    // The test sent, and the first (deferred) test went with it.
    assert!(slack.accepted() >= 1);
    assert!(
        slack.messages()[0]["text"]
            .as_str()
            .unwrap()
            .contains("test message")
    );

    // Gone from the file: gone from the database.
    let text = std::fs::read_to_string(&config).unwrap().replace(table, "");
    std::fs::write(&config, text).unwrap();
    let listed = ok(&config, &["subscriber", "channel", "list"], &[]);
    assert!(listed.contains("no destinations"), "{listed}");

    // A secret written in the file is refused, with its place.
    let text = std::fs::read_to_string(&config).unwrap()
        + "[[destinations]]\nsubscriber = \"zoe@x.example\"\nname = \"t\"\nkind = \"telegram\"\n\
           chat_id = \"1\"\ntoken_env = \"123:abc-the-token\"\n";
    std::fs::write(&config, text).unwrap();
    let out = tidings(&config, &["check-config"], &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("`token_env` names an environment variable"),
        "{stderr}"
    );
    assert!(stderr.contains("config.toml:"), "line and column: {stderr}");
}

/// A destination that takes its time (a receiver holding the request for 40 s) delays
/// only itself: mail for everyone else keeps going out, round after round.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_destination_never_holds_up_anyones_mail() {
    let dir = tempfile::tempdir().unwrap();
    let feed = FeedServer::start().await;
    let smtp = SmtpServer::start().await;
    let receiver = WebhookReceiver::start("whsec_AAAA").await;
    news(&feed, &[("a1", "Asylum rule one")]);
    let config = write_config_with(
        dir.path(),
        &[("news", feed.url("/news.xml"))],
        smtp.port(),
        "",
        "[channels]\ntimeout = \"60s\"\n",
    );
    let config = config.path.clone();
    ok(
        &config,
        &["subscriber", "add", ZOE, "--query", "asylum"],
        &[],
    );
    ok(
        &config,
        &["subscriber", "add", "ben@x.example", "--query", "asylum"],
        &[],
    );
    ok(
        &config,
        &[
            "subscriber",
            "channel",
            "add",
            ZOE,
            "webhook",
            "crm",
            "--url",
            &receiver.url("/in"),
        ],
        &[],
    );
    ok(
        &config,
        &[
            "subscriber",
            "route",
            ZOE,
            "--query",
            "asylum",
            "--to",
            "crm",
        ],
        &[],
    );
    receiver.fail_next(1, Fault::Delay(Duration::from_secs(40)));
    let daemon = Daemon::start(&config, &[], &[]);
    let deadline = Instant::now() + Duration::from_secs(30);
    while receiver.requests().is_empty() || smtp.messages().is_empty() {
        assert!(
            Instant::now() < deadline,
            "first round; log:\n{}",
            daemon.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The webhook's request is held. News for ben arrives; his mail must not wait for it.
    news(
        &feed,
        &[("a1", "Asylum rule one"), ("a2", "Asylum rule two")],
    );
    let held_since = Instant::now();
    ok(&config, &["poll"], &[]);
    let mails = smtp.wait_for(2, Duration::from_secs(35)).await;
    assert_eq!(mails.len(), 2, "ben's second mail; log:\n{}", daemon.log());
    assert!(
        held_since.elapsed() < Duration::from_secs(40),
        "it came while the webhook still held its request"
    );
    assert_eq!(receiver.requests().len(), 1, "still the one held request");
    daemon.signal("TERM");
}
