//! The `tidings` binary as an admin and an operator use it: check-config, subscriber
//! management, one-shot poll/digest, and the daemon stopping cleanly on SIGTERM.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};
use tidings::store::OutboxStatus;

use support::{FeedServer, Route, SmtpServer, fixture};

fn tidings(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tidings"))
        .args(args)
        .env_remove("TIDINGS_CONFIG")
        .env("TIDINGS_LOG", "info")
        .env("TIDINGS_SMTP_PASSWORD", "s3cret")
        .output()
        .expect("run tidings")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn shipped_config() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("config.toml")
}

fn write(dir: &Path, name: &str, body: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, body).unwrap();
    path.to_string_lossy().into_owned()
}

#[test]
fn check_config_summarizes_the_shipped_file() {
    let shipped = shipped_config();
    let out = tidings(&["check-config", "--config", shipped.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.contains(": ok"), "{stdout}");
    for id in [
        "uscis-news",
        "federal-register-uscis",
        "visaverge",
        "immigration-impact",
        "govuk-visas",
    ] {
        assert!(stdout.contains(id), "{id} listed: {stdout}");
    }
    assert!(
        stdout.contains("links to http://localhost:8080/")
            && stdout.contains("note: web.base_url is not https"),
        "{stdout}"
    );
    // --config also works before the subcommand.
    let before = tidings(&["--config", shipped.to_str().unwrap(), "check-config"]);
    assert_eq!(text(&before.stdout), stdout);
}

#[test]
fn check_config_reports_every_error_with_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "config.toml",
        "[[feeds]]\nid = \"a\"\nurl = \"https://a.example/feed\"\n\n[[feeds]]\nid = \"a\"\nurl = \"not a url\"\ninterval = \"often\"\n",
    );
    let out = tidings(&["check-config", "--config", &path]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = text(&out.stderr);
    for expected in [
        "config.toml:6:6: duplicate feed id \"a\" (first used on line 2)",
        "config.toml:7:7: feed \"a\": bad url",
        "config.toml:8:12: feed \"a\": interval: bad duration",
    ] {
        assert!(stderr.contains(expected), "{expected:?} in:\n{stderr}");
    }

    let unknown = write(dir.path(), "unknown.toml", "[poll]\nintervall = \"5m\"\n");
    let out = tidings(&["check-config", "--config", &unknown]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("unknown.toml:2:1: unknown field `intervall`"),
        "{}",
        text(&out.stderr)
    );

    let out = tidings(&["check-config", "--config", "/nonexistent/config.toml"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("/nonexistent/config.toml"));
}

#[test]
fn subscribers_are_added_listed_and_removed() {
    let dir = tempfile::tempdir().unwrap();
    let config = write(dir.path(), "config.toml", "");
    let add = |email: &str, query: &str, freq: &str| {
        tidings(&[
            "subscriber",
            "add",
            email,
            "--query",
            query,
            "--frequency",
            freq,
            "--config",
            &config,
        ])
    };
    let out = add("ana@example.org", "asylum OR \"H-1B\"", "immediate");
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        add("ana@example.org", "TPS -Honduras", "daily")
            .status
            .success()
    );
    assert!(
        add("ben@example.org", "\"green card\"", "immediate")
            .status
            .success()
    );

    let bad = add("cy@example.org", "\"green card", "immediate");
    assert_eq!(bad.status.code(), Some(2));
    assert!(
        text(&bad.stderr).contains("unclosed quote"),
        "{}",
        text(&bad.stderr)
    );
    let bad = add("not-an-address", "asylum", "immediate");
    assert_eq!(bad.status.code(), Some(2));
    assert!(
        text(&bad.stderr).contains("not an email address"),
        "{}",
        text(&bad.stderr)
    );
    let bad = add("cy@example.org", "asylum", "monthly");
    assert_eq!(bad.status.code(), Some(2));
    assert!(
        text(&bad.stderr).contains("unknown frequency \"monthly\""),
        "{}",
        text(&bad.stderr)
    );
    let weekly = tidings(&[
        "subscriber",
        "add",
        "dee@example.org",
        "-q",
        "parole",
        "-f",
        "weekly fri 17:30",
        "--tz",
        "Europe/London",
        "--config",
        &config,
    ]);
    assert!(weekly.status.success(), "{}", text(&weekly.stderr));
    let bad_zone = tidings(&[
        "subscriber",
        "add",
        "cy@example.org",
        "-q",
        "parole",
        "--tz",
        "Mars/Olympus",
        "--config",
        &config,
    ]);
    assert_eq!(bad_zone.status.code(), Some(2));
    assert!(
        text(&bad_zone.stderr).contains("unknown time zone"),
        "{}",
        text(&bad_zone.stderr)
    );

    let list = text(&tidings(&["subscriber", "list", "--config", &config]).stdout);
    assert!(list.contains("ana@example.org (daily"), "{list}");
    assert!(
        list.contains("asylum OR \"H-1B\"") && list.contains("TPS -Honduras"),
        "{list}"
    );
    assert!(list.contains("ben@example.org (immediate, UTC)"), "{list}");
    assert!(
        list.contains("dee@example.org (weekly on Friday at 17:30, Europe/London, next "),
        "{list}"
    );
    // The next Friday 17:30 in London, shown in London time.
    assert!(
        list.contains(" 17:30 GMT)") || list.contains(" 17:30 BST)"),
        "{list}"
    );
    assert!(
        !list.contains("cy@example.org"),
        "rejected subscriber not stored: {list}"
    );

    assert!(
        tidings(&[
            "subscriber",
            "remove",
            "ana@example.org",
            "--config",
            &config
        ])
        .status
        .success()
    );
    let list = text(&tidings(&["subscriber", "list", "--config", &config]).stdout);
    assert!(
        !list.contains("ana@example.org") && list.contains("ben@example.org"),
        "{list}"
    );
    let again = tidings(&[
        "subscriber",
        "remove",
        "ana@example.org",
        "--config",
        &config,
    ]);
    assert_eq!(again.status.code(), Some(2));
}

fn feed_config(dir: &Path, feed_url: &str, smtp_port: u16) -> String {
    write(
        dir,
        "config.toml",
        &format!(
            "[service]\nadmin_listen = \"127.0.0.1:0\"\n[web]\nlisten = \"127.0.0.1:0\"\n[poll]\ninitial_backlog = \"3650d\"\n[mail]\nfrom = \"alerts@tidings.test\"\ntransport = \"smtp\"\n\
             [mail.smtp]\nhost = \"127.0.0.1\"\nport = {smtp_port}\ntls = \"none\"\nusername = \"tidings-bot\"\n\
             [[feeds]]\nid = \"uscis\"\nname = \"USCIS\"\nurl = \"{feed_url}\"\n"
        ),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_shot_poll_and_digest_then_feeds_status() {
    let feeds = FeedServer::start().await;
    let smtp = SmtpServer::start().await;
    feeds.set(
        "/uscis.xml",
        Route::feed("application/rss+xml", fixture("uscis.xml")),
    );
    feeds.set("/gone.xml", Route::status(404, "gone"));
    let dir = tempfile::tempdir().unwrap();
    let config = feed_config(dir.path(), &feeds.url("/uscis.xml"), smtp.port());
    let run = |args: Vec<String>| {
        let config = config.clone();
        tokio::task::spawn_blocking(move || {
            let mut all: Vec<&str> = args.iter().map(String::as_str).collect();
            all.extend(["--config", &config]);
            tidings(&all)
        })
    };
    let out = run(vec![
        "subscriber".into(),
        "add".into(),
        "ana@example.org".into(),
        "-q".into(),
        "TPS".into(),
    ])
    .await
    .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));

    let poll = run(vec!["poll".into()]).await.unwrap();
    assert!(poll.status.success(), "{}", text(&poll.stderr));
    assert!(
        text(&poll.stdout).contains("1 ok"),
        "{}",
        text(&poll.stdout)
    );
    let log = text(&poll.stderr);
    assert!(
        log.contains("feed polled") && log.contains("feed=uscis") && log.contains("new=4"),
        "one log line per feed: {log}"
    );

    // Preview a query over what is stored: compounds, highlights, counts.
    let preview = run(vec!["match".into(), "H1B".into()]).await.unwrap();
    assert!(preview.status.success(), "{}", text(&preview.stderr));
    let out = text(&preview.stdout);
    assert!(
        out.contains("USCIS Announces New **H-1B** Registration Period"),
        "{out}"
    );
    assert!(
        out.contains("The **H-1B** cap registration period"),
        "{out}"
    );
    assert!(
        out.contains("1 of 4 items from the last 7 days match H1B"),
        "{out}"
    );
    let bad = run(vec!["match".into(), "(asylum".into()]).await.unwrap();
    assert_eq!(bad.status.code(), Some(2));
    assert!(
        text(&bad.stderr).contains("column"),
        "{}",
        text(&bad.stderr)
    );

    let digest = run(vec!["digest".into()]).await.unwrap();
    assert!(digest.status.success(), "{}", text(&digest.stderr));
    assert!(
        text(&digest.stdout).contains("sent 1"),
        "{}",
        text(&digest.stdout)
    );
    let got = smtp.wait_for(1, Duration::from_secs(10)).await;
    assert_eq!(got[0].rcpt_to, ["ana@example.org"]);
    assert_eq!(
        smtp.credentials(),
        [("tidings-bot".to_string(), "s3cret".to_string())],
        "user from config, password from TIDINGS_SMTP_PASSWORD"
    );
    let no_password = Command::new(env!("CARGO_BIN_EXE_tidings"))
        .args(["digest", "--config", &config])
        .env_remove("TIDINGS_SMTP_PASSWORD")
        .output()
        .unwrap();
    assert_eq!(no_password.status.code(), Some(2));
    assert!(
        text(&no_password.stderr).contains("TIDINGS_SMTP_PASSWORD is not"),
        "{}",
        text(&no_password.stderr)
    );

    let status = run(vec!["feeds".into(), "status".into()]).await.unwrap();
    let table = text(&status.stdout);
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("uscis") && l.contains(" ok ")),
        "{table}"
    );

    // Break the feed: the table and the JSON both say what is wrong and when it is retried.
    feeds.set(
        "/uscis.xml",
        Route::status(503, "down").header("retry-after", "600"),
    );
    let poll = run(vec!["poll".into()]).await.unwrap();
    assert!(
        poll.status.success(),
        "a failing feed is not a failing command"
    );
    let table = text(
        &run(vec!["feeds".into(), "status".into()])
            .await
            .unwrap()
            .stdout,
    );
    assert!(
        table.contains("throttled: HTTP 503 Service Unavailable (retry after 600 s)"),
        "{table}"
    );
    let json = run(vec!["feeds".into(), "status".into(), "--json".into()])
        .await
        .unwrap();
    let parsed: serde_json::Value = serde_json::from_slice(&json.stdout).expect("valid JSON");
    let feed = &parsed[0];
    assert_eq!(feed["id"], "uscis");
    assert_eq!(feed["last_status"], "error");
    assert_eq!(feed["last_error_kind"], "throttled");
    assert_eq!(feed["consecutive_failures"], 1);
    assert_eq!(feed["items"], 4);
    assert_eq!(feed["gone"], false);
    assert!(
        feed["next_poll_at"]
            .as_str()
            .is_some_and(|t| t.starts_with("20")),
        "{feed}"
    );
    assert!(feed["last_success_at"].is_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemon_delivers_then_stops_cleanly_on_sigterm() {
    let feeds = FeedServer::start().await;
    let smtp = SmtpServer::start().await;
    feeds.set(
        "/uscis.xml",
        Route::feed("application/rss+xml", fixture("uscis.xml")),
    );
    let dir = tempfile::tempdir().unwrap();
    let config = feed_config(dir.path(), &feeds.url("/uscis.xml"), smtp.port());
    let add = tidings(&[
        "subscriber",
        "add",
        "ana@example.org",
        "--query",
        "\"H-1B\"",
        "--config",
        &config,
    ]);
    assert!(add.status.success(), "{}", text(&add.stderr));

    let mut daemon = Command::new(env!("CARGO_BIN_EXE_tidings"))
        .args(["run", "--config", &config])
        .env("TIDINGS_SMTP_PASSWORD", "s3cret")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let got = smtp.wait_for(1, Duration::from_secs(30)).await;
    assert_eq!(
        got.len(),
        1,
        "the daemon polls at start and mails immediate subscribers"
    );
    assert!(text(&got[0].data).contains("H-1B"));

    let killed = Command::new("kill")
        .args(["-TERM", &daemon.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let started = Instant::now();
    let status = loop {
        if let Some(status) = daemon.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > Duration::from_secs(30) {
            let _ = daemon.kill();
            panic!("daemon did not stop after SIGTERM");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let mut log = String::new();
    use std::io::Read;
    daemon
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut log)
        .unwrap();
    assert!(status.success(), "exit {status:?}; log:\n{log}");
    assert!(log.contains("stopped cleanly"), "{log}");
    assert_eq!(smtp.messages().len(), 1, "sent once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn feeds_discover_lists_what_a_page_advertises() {
    let feeds = FeedServer::start().await;
    feeds.set(
        "/",
        Route::feed(
            "text/html",
            "<!DOCTYPE html><html><head><title>USCIS</title>\
             <link rel=\"alternate\" type=\"application/rss+xml\" title=\"News releases\" href=\"/news.xml\">\
             <link rel=\"alternate\" type=\"application/atom+xml\" href=\"https://example.org/alerts.atom\">\
             </head><body>Home</body></html>",
        ),
    );
    feeds.set(
        "/news.xml",
        Route::feed("application/rss+xml", fixture("uscis.xml")),
    );
    feeds.set(
        "/plain",
        Route::feed("text/html", "<html><body>nothing here</body></html>"),
    );
    let dir = tempfile::tempdir().unwrap();
    let config = write(dir.path(), "config.toml", "");
    let discover = |url: String| {
        let config = config.clone();
        tokio::task::spawn_blocking(move || {
            tidings(&["feeds", "discover", &url, "--config", &config])
        })
    };

    let page = discover(feeds.url("/")).await.unwrap();
    assert!(page.status.success(), "{}", text(&page.stderr));
    let out = text(&page.stdout);
    assert!(
        out.contains(&format!("rss   {}  News releases", feeds.url("/news.xml"))),
        "{out}"
    );
    assert!(
        out.contains("atom  https://example.org/alerts.atom"),
        "{out}"
    );

    let feed = discover(feeds.url("/news.xml")).await.unwrap();
    assert!(
        text(&feed.stdout).contains("is a feed: USCIS News Releases (4 items)"),
        "{}",
        text(&feed.stdout)
    );

    let none = discover(feeds.url("/plain")).await.unwrap();
    assert_eq!(none.status.code(), Some(2));
    assert!(
        text(&none.stderr).contains("advertises no feed"),
        "{}",
        text(&none.stderr)
    );

    // No feed, but a list of stories: the [[feeds]] table that reads it as one, which
    // check-config accepts.
    let stories: String = (1..=4)
        .map(|i| {
            format!(
                "<article class=\"card\"><a href=\"/news/{i}\">Asylum office update number {i}</a></article>"
            )
        })
        .collect();
    feeds.set(
        "/newsroom",
        Route::feed(
            "text/html",
            format!("<html><body><nav><a href=\"/\">Home of the agency newsroom</a></nav>{stories}</body></html>"),
        ),
    );
    let listing = discover(feeds.url("/newsroom")).await.unwrap();
    assert!(listing.status.success(), "{}", text(&listing.stderr));
    let out = text(&listing.stdout);
    assert!(
        out.contains("lists 4 entries that can be read as one"),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "Asylum office update number 1  {}",
            feeds.url("/news/1")
        )),
        "{out}"
    );
    let table = &out[out.find("[[feeds]]").expect(&out)..];
    assert!(
        table.contains("kind = \"html\"\nitem_selector = \"article.card\""),
        "{table}"
    );
    let checked_dir = tempfile::tempdir().unwrap();
    let checked = write(checked_dir.path(), "config.toml", table);
    let check =
        tokio::task::spawn_blocking(move || tidings(&["check-config", "--config", &checked]))
            .await
            .unwrap();
    assert!(check.status.success(), "{}\n{table}", text(&check.stderr));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbox_lists_failed_mail_and_retry_requeues_it() {
    let feeds = FeedServer::start().await;
    let smtp = SmtpServer::start().await;
    feeds.set(
        "/uscis.xml",
        Route::feed("application/rss+xml", fixture("uscis.xml")),
    );
    let dir = tempfile::tempdir().unwrap();
    let config = feed_config(dir.path(), &feeds.url("/uscis.xml"), smtp.port());
    let run = |args: &[&str]| {
        let mut all: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        all.extend(["--config".to_string(), config.clone()]);
        tokio::task::spawn_blocking(move || {
            tidings(&all.iter().map(String::as_str).collect::<Vec<_>>())
        })
    };
    assert!(
        run(&["subscriber", "add", "ana@example.org", "-q", "TPS"])
            .await
            .unwrap()
            .status
            .success()
    );
    assert!(run(&["poll"]).await.unwrap().status.success());
    smtp.fail_next(1, 554, "message rejected as spam");
    let digest = run(&["digest"]).await.unwrap();
    assert!(
        text(&digest.stdout).contains("failed 1"),
        "{}{}",
        text(&digest.stdout),
        text(&digest.stderr)
    );

    let listing = text(&run(&["outbox"]).await.unwrap().stdout);
    let row = listing
        .lines()
        .find(|l| l.contains("ana@example.org"))
        .unwrap_or_else(|| panic!("{listing}"));
    assert!(row.contains("failed"), "{listing}");
    assert!(
        listing.contains("554") && listing.contains("message rejected as spam"),
        "{listing}"
    );
    let id = row.split_whitespace().next().unwrap().to_string();

    let retry = run(&["outbox", "retry", &id]).await.unwrap();
    assert!(retry.status.success(), "{}", text(&retry.stderr));
    let digest = run(&["digest"]).await.unwrap();
    assert!(
        text(&digest.stdout).contains("sent 1"),
        "{}",
        text(&digest.stdout)
    );
    assert_eq!(smtp.wait_for(1, Duration::from_secs(10)).await.len(), 1);
    assert!(text(&run(&["outbox"]).await.unwrap().stdout).contains("nothing pending or failed"));
    let sent_again = run(&["outbox", "retry", &id]).await.unwrap();
    assert_eq!(
        sent_again.status.code(),
        Some(2),
        "sent mail is not requeued"
    );
    assert!(
        text(&run(&["outbox", "retry", "999"]).await.unwrap().stderr).contains("no message 999")
    );
}

/// The daemon killed with SIGKILL in the middle of sending: after a restart every digest
/// arrives, and a digest that went out twice (the server had it, the daemon died before
/// recording that) carries the same Message-ID both times.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_while_sending_loses_nothing_and_duplicates_keep_their_message_id() {
    const SUBSCRIBERS: usize = 24;
    let feeds = FeedServer::start().await;
    let smtp = SmtpServer::start().await;
    // Slow acknowledgements keep sends in flight when the kill lands.
    smtp.set_data_delay(Duration::from_millis(250));
    feeds.set(
        "/uscis.xml",
        Route::feed("application/rss+xml", fixture("uscis.xml")),
    );
    let dir = tempfile::tempdir().unwrap();
    let config = write(
        dir.path(),
        "config.toml",
        &format!(
            "[service]\nadmin_listen = \"127.0.0.1:0\"\n[web]\nlisten = \"127.0.0.1:0\"\n[poll]\ninitial_backlog = \"3650d\"\n[mail]\nfrom = \"alerts@tidings.test\"\n\
             transport = \"smtp\"\nsend_timeout = \"2s\"\n\
             [mail.smtp]\nhost = \"127.0.0.1\"\nport = {}\ntls = \"none\"\n\
             [[feeds]]\nid = \"uscis\"\nname = \"USCIS\"\nurl = \"{}\"\n",
            smtp.port(),
            feeds.url("/uscis.xml")
        ),
    );
    {
        let loaded = tidings::config::Config::load(Path::new(&config)).unwrap();
        let store = tidings::store::Store::open_database(&loaded.database)
            .await
            .unwrap();
        let now = chrono::Utc::now();
        for n in 0..SUBSCRIBERS {
            store
                .add_subscription(
                    &format!("s{n:02}@example.org"),
                    "\"H-1B\"",
                    tidings::digest::Schedule::Immediate,
                    chrono_tz::Tz::UTC,
                    now,
                )
                .await
                .unwrap();
        }
    }
    let daemon = || {
        Command::new(env!("CARGO_BIN_EXE_tidings"))
            .args(["run", "--config", &config])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };

    let mut first = daemon();
    let before = smtp.wait_for(6, Duration::from_secs(30)).await.len();
    assert!(before >= 6, "the daemon started sending");
    let killed = Command::new("kill")
        .args(["-KILL", &first.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    first.wait().unwrap();
    let at_kill = smtp.messages().len();
    assert!(
        at_kill < SUBSCRIBERS,
        "killed mid-way ({at_kill} of {SUBSCRIBERS} sent)"
    );

    // Restarted: the claimed batch is retried once its lease (send timeout + 10 s) is up,
    // until the outbox has every digest marked sent.
    let store = tidings::store::Store::open(&dir.path().join("tidings.db")).unwrap();
    let unsent = async || {
        let outbox = store.outbox().await.unwrap();
        assert_eq!(outbox.len(), SUBSCRIBERS, "one digest each, queued once");
        outbox
            .iter()
            .filter(|m| m.status != OutboxStatus::Sent)
            .count()
    };
    assert!(unsent().await > 0, "the kill left mail to send");
    let mut second = daemon();
    let deadline = Instant::now() + Duration::from_secs(90);
    while unsent().await > 0 {
        assert!(
            Instant::now() < deadline,
            "{} digests still unsent after the restart",
            unsent().await
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let everyone = smtp.messages();
    let _ = Command::new("kill")
        .args(["-TERM", &second.id().to_string()])
        .status();
    second.wait().unwrap();

    let mut ids: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for m in &everyone {
        let mail = support::decode(m);
        ids.entry(mail.to).or_default().push(mail.message_id);
    }
    assert_eq!(ids.len(), SUBSCRIBERS);
    for (to, ids) in &ids {
        assert!(
            ids.iter().all(|id| id == &ids[0]),
            "{to} got different Message-IDs: {ids:?}"
        );
    }
    let duplicates = everyone.len() - SUBSCRIBERS;
    eprintln!("{at_kill} sent before the kill; {duplicates} sent twice");
    assert!(
        duplicates <= 4,
        "at most the in-flight batch is sent twice, got {duplicates}"
    );
}

/// `--help` says what the exit codes mean: for every command, and for `poll` and
/// `digest`, when a run whose work the database would not take exits 2.
#[test]
fn help_documents_the_exit_codes() {
    let help = |args: &[&str]| {
        let out = tidings(args);
        assert!(out.status.success(), "{args:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    let top = help(&["--help"]);
    assert!(
        top.contains("Exit codes:") && top.contains("0 ") && top.contains("2 "),
        "{top}"
    );
    for command in ["poll", "digest"] {
        let text = help(&[command, "--help"]);
        assert!(
            text.contains("Exit code 2 when the database would not take"),
            "{command}: {text}"
        );
    }
}
