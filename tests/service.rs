//! The daemon as an operator runs it: the real binary, reloading its config on SIGHUP
//! and on file changes, stopping within its deadline on SIGTERM, answering /healthz and
//! /metrics, logging JSON, and telling systemd (a notify socket) where it is.

mod support;

use std::collections::HashMap;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use support::{Daemon, FeedServer, Route, SmtpServer, fixture};

/// A config polling `feeds` (id, url, interval) and mailing through `smtp_port`, with the
/// admin listener on an ephemeral port; `service` adds keys to `[service]`.
fn write_config(
    path: &Path,
    feeds: &[(&str, &str, &str)],
    smtp_port: u16,
    service: &str,
) -> PathBuf {
    let mut text = format!(
        "[poll]\ninitial_backlog = \"3650d\"\n\
         [mail]\nfrom = \"alerts@tidings.test\"\ntransport = \"smtp\"\nsend_timeout = \"5s\"\n\
         [mail.smtp]\nhost = \"127.0.0.1\"\nport = {smtp_port}\ntls = \"none\"\n\
         [web]\nlisten = \"127.0.0.1:0\"\n[service]\nadmin_listen = \"127.0.0.1:0\"\n{service}\n"
    );
    for (id, url, interval) in feeds {
        text.push_str(&format!(
            "\n[[feeds]]\nid = \"{id}\"\nname = \"{id}\"\nurl = \"{url}\"\ninterval = \"{interval}\"\n"
        ));
    }
    std::fs::write(path, text).unwrap();
    path.to_path_buf()
}

/// `tidings feeds status --json`, by feed id.
fn feed_status(config: &Path) -> HashMap<String, serde_json::Value> {
    let out = Command::new(env!("CARGO_BIN_EXE_tidings"))
        .args(["feeds", "status", "--json", "--config"])
        .arg(config)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let all: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    all.into_iter()
        .map(|f| (f["id"].as_str().unwrap().to_string(), f))
        .collect()
}

async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let started = Instant::now();
    while !cond() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Parses the OpenMetrics text format into `name{labels}` → value, checking every
/// sample line is well formed.
fn parse_metrics(text: &str) -> HashMap<String, f64> {
    assert!(text.ends_with("# EOF\n"), "OpenMetrics ends with # EOF");
    let mut samples = HashMap::new();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let (key, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("bad line {line:?}"));
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("bad value in {line:?}"));
        assert!(key.starts_with("tidings_"), "{line}");
        samples.insert(key.to_string(), value);
    }
    samples
}

async fn get(url: &str) -> (u16, String, String) {
    let response = reqwest::get(url).await.unwrap();
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    (status, content_type, response.text().await.unwrap())
}

/// Collects what the daemon sends to `NOTIFY_SOCKET`, as systemd would receive it.
struct NotifySocket {
    path: PathBuf,
    seen: Arc<Mutex<Vec<String>>>,
}

impl NotifySocket {
    fn bind(dir: &Path) -> NotifySocket {
        let path = dir.join("notify.sock");
        let socket = tokio::net::UnixDatagram::bind(&path).unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink = seen.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            while let Ok(n) = socket.recv(&mut buf).await {
                let message = String::from_utf8_lossy(&buf[..n]).into_owned();
                sink.lock().unwrap().push(message);
            }
        });
        NotifySocket { path, seen }
    }

    fn saw(&self, state: &str) -> bool {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .any(|m| m.lines().any(|l| l == state))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_applies_a_valid_config_and_keeps_running_on_an_invalid_one() {
    let feeds = FeedServer::start().await;
    let smtp = SmtpServer::start().await;
    feeds.set(
        "/a.xml",
        Route::feed("application/rss+xml", fixture("uscis.xml")),
    );
    feeds.set(
        "/b.atom",
        Route::feed("application/atom+xml", fixture("govuk.atom")),
    );
    let dir = tempfile::tempdir().unwrap();
    let notify = NotifySocket::bind(dir.path());
    let (a, b) = (feeds.url("/a.xml"), feeds.url("/b.atom"));
    // Only SIGHUP reloads here: the file watch is off.
    let config = write_config(
        &dir.path().join("config.toml"),
        &[("a", &a, "1h")],
        smtp.port(),
        "watch_config = false",
    );
    let notify_path = notify.path.to_string_lossy().into_owned();
    let mut daemon = Daemon::start(&config, &[], &[("NOTIFY_SOCKET", &notify_path)]);
    let admin = daemon.admin().await;
    wait_until("first poll of a", || feeds.hits("/a.xml") == 1).await;
    wait_until("READY=1", || notify.saw("READY=1")).await;
    daemon
        .wait_log("a polled", |l| {
            l.contains("feed polled") && l.contains("feed=a")
        })
        .await;
    let next_a = |config: &Path| {
        let s = feed_status(config);
        let next =
            chrono::DateTime::parse_from_rfc3339(s["a"]["next_poll_at"].as_str().unwrap()).unwrap();
        (next.with_timezone(&chrono::Utc) - chrono::Utc::now()).num_seconds()
    };
    assert!(
        next_a(&config) > 50 * 60,
        "hourly feed: next poll in about an hour"
    );

    // A valid change: feed b added, a's interval shortened. Nothing happens until SIGHUP.
    write_config(
        &config,
        &[("a", &a, "1m"), ("b", &b, "1h")],
        smtp.port(),
        "watch_config = false",
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        feeds.hits("/b.atom"),
        0,
        "no reload without SIGHUP when watch_config is off"
    );
    daemon.signal("HUP");
    daemon
        .wait_log("reloaded", |l| {
            l.contains("config reloaded") && l.contains("added=b")
        })
        .await;
    wait_until("b polled right after the reload", || {
        feeds.hits("/b.atom") == 1
    })
    .await;
    assert!(
        next_a(&config) <= 2 * 60,
        "the shorter interval counts from a's last poll: next in {} s",
        next_a(&config)
    );
    wait_until("RELOADING=1", || notify.saw("RELOADING=1")).await;

    // Feed a removed: it stops (kept, inactive, its items stay).
    write_config(
        &config,
        &[("b", &b, "1h")],
        smtp.port(),
        "watch_config = false",
    );
    daemon.signal("HUP");
    daemon
        .wait_log("a removed", |l| {
            l.contains("config reloaded") && l.contains("removed=a")
        })
        .await;
    let status = feed_status(&config);
    assert_eq!(status["a"]["active"], false, "{:?}", status["a"]);
    assert!(status["a"]["items"].as_i64().unwrap() > 0, "a's items stay");

    // An invalid file: logged with line and column, nothing changes, still running.
    let good = std::fs::read_to_string(&config).unwrap();
    let broken = good.replace(&format!("url = \"{b}\""), "url = \"not a url\"");
    std::fs::write(&config, &broken).unwrap();
    let bad_line = broken
        .lines()
        .position(|l| l.contains("not a url"))
        .unwrap()
        + 1;
    daemon.signal("HUP");
    let error = daemon
        .wait_log("reload error", |l| l.contains("config reload failed"))
        .await;
    assert!(
        error.contains(&format!("config.toml:{bad_line}:7: feed \"b\": bad url")),
        "error names file, line and column: {error}"
    );
    daemon
        .wait_log("kept", |l| {
            l.contains("still running on the last good config")
        })
        .await;
    assert!(daemon.is_running());
    let (code, _, body) = get(&format!("{admin}/healthz")).await;
    assert_eq!((code, body.lines().next()), (200, Some("ok")), "{body}");
    let metrics = parse_metrics(&get(&format!("{admin}/metrics")).await.2);
    assert_eq!(metrics["tidings_config_reloads_total{result=\"ok\"}"], 2.0);
    assert_eq!(
        metrics["tidings_config_reloads_total{result=\"error\"}"],
        1.0
    );
    assert_eq!(
        metrics["tidings_feeds"], 1.0,
        "b only: the bad file changed nothing"
    );

    daemon.signal("TERM");
    let (status, _) = daemon.wait_exit(Duration::from_secs(15)).await;
    assert!(status.success(), "{status:?}\n{}", daemon.log());
    assert!(notify.saw("STOPPING=1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_config_file_replaced_on_disk_is_picked_up_without_a_signal() {
    let feeds = FeedServer::start().await;
    let smtp = SmtpServer::start().await;
    feeds.set(
        "/a.xml",
        Route::feed("application/rss+xml", fixture("uscis.xml")),
    );
    feeds.set(
        "/b.atom",
        Route::feed("application/atom+xml", fixture("govuk.atom")),
    );
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (feeds.url("/a.xml"), feeds.url("/b.atom"));
    let config = write_config(
        &dir.path().join("config.toml"),
        &[("a", &a, "1h")],
        smtp.port(),
        "",
    );
    let daemon = Daemon::start(&config, &[], &[]);
    wait_until("first poll of a", || feeds.hits("/a.xml") == 1).await;
    daemon
        .wait_log("a polled", |l| {
            l.contains("feed polled") && l.contains("feed=a")
        })
        .await;

    // As editors save: write a temporary file, then rename it over the config.
    let staged = dir.path().join(".config.toml.swp");
    write_config(
        &staged,
        &[("a", &a, "1h"), ("b", &b, "1h")],
        smtp.port(),
        "",
    );
    std::fs::rename(&staged, &config).unwrap();
    daemon
        .wait_log("reloaded", |l| {
            l.contains("config reloaded") && l.contains("added=b")
        })
        .await;
    wait_until("b polled after the file changed", || {
        feeds.hits("/b.atom") == 1
    })
    .await;
    assert_eq!(feeds.hits("/a.xml"), 1, "a is not due again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_a_poll_stops_within_the_deadline_and_leaves_the_database_consistent() {
    let feeds = FeedServer::start().await;
    let smtp = SmtpServer::start().await;
    // A publisher that takes a minute to answer, and others queued behind it.
    feeds.set(
        "/slow.xml",
        Route::feed("application/rss+xml", fixture("uscis.xml")).delay(Duration::from_secs(60)),
    );
    for n in 0..5 {
        feeds.set(
            &format!("/queued-{n}.xml"),
            Route::feed("application/rss+xml", fixture("uscis.xml")),
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let slow = feeds.url("/slow.xml");
    let queued: Vec<(String, String)> = (0..5)
        .map(|n| (format!("q{n}"), feeds.url(&format!("/queued-{n}.xml"))))
        .collect();
    let mut list: Vec<(&str, &str, &str)> = vec![("slow", &slow, "1h")];
    list.extend(
        queued
            .iter()
            .map(|(id, url)| (id.as_str(), url.as_str(), "1h")),
    );
    let config = write_config(
        &dir.path().join("config.toml"),
        &list,
        smtp.port(),
        "shutdown_timeout = \"2s\"",
    );
    // One fetch at a time: whatever is queued behind the slow feed waits for its slot.
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("[poll]\n", "[poll]\nconcurrency = 1\ntimeout = \"90s\"\n");
    std::fs::write(&config, text).unwrap();

    let mut daemon = Daemon::start(&config, &[], &[]);
    let admin = daemon.admin().await;
    wait_until("the slow fetch in flight", || feeds.hits("/slow.xml") == 1).await;
    let before: usize = (0..5)
        .map(|n| feeds.hits(&format!("/queued-{n}.xml")))
        .sum();

    daemon.signal("TERM");
    let sent = Instant::now();
    // While it drains, health says so.
    let (code, _, body) = get(&format!("{admin}/healthz")).await;
    if sent.elapsed() < Duration::from_millis(1500) {
        assert_eq!(code, 503, "{body}");
        assert!(body.contains("shutting down"), "{body}");
    }
    let (status, _) = daemon.wait_exit(Duration::from_secs(20)).await;
    let took = sent.elapsed();
    eprintln!("stopped {took:?} after SIGTERM (shutdown_timeout 2 s)");
    assert!(status.success(), "exit 0: {status:?}\n{}", daemon.log());
    // The deadline is 2 s; the runtime may take up to one more second for a database
    // write in progress. The slow fetch alone would have taken a minute.
    assert!(
        took < Duration::from_secs(4),
        "stopped in {took:?}, deadline 2 s\n{}",
        daemon.log()
    );
    let log = daemon.log();
    assert!(log.contains("shutdown deadline"), "{log}");
    let after: usize = (0..5)
        .map(|n| feeds.hits(&format!("/queued-{n}.xml")))
        .sum();
    assert_eq!(after, before, "no new fetch started after SIGTERM");

    // Consistent: integrity and references check out, and no feed is left claimed
    // (the next start polls them at once instead of waiting out a lease).
    let db = rusqlite::Connection::open(dir.path().join("tidings.db")).unwrap();
    let integrity: String = db
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(integrity, "ok");
    let dangling: i64 = db
        .query_row("SELECT COUNT(*) FROM pragma_foreign_key_check", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(dangling, 0);
    let claimed: Vec<String> = db
        .prepare("SELECT id FROM feeds WHERE claimed_until IS NOT NULL")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert!(claimed.is_empty(), "still claimed: {claimed:?}");
    let slow_polled: Option<i64> = db
        .query_row(
            "SELECT last_poll_at FROM feeds WHERE id = 'slow'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(
        slow_polled, None,
        "the dropped fetch recorded nothing, not even an error"
    );
}

/// A feed slow to answer holds only its own connection slot: while it is in flight the
/// daemon's next cycles go on (here: a feed added by a reload is polled at once), the slow
/// feed is not claimed twice, and SIGTERM still drops it within the deadline and leaves
/// nothing claimed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_feed_does_not_hold_up_the_next_poll_cycle() {
    let feeds = FeedServer::start().await;
    let smtp = SmtpServer::start().await;
    feeds.set(
        "/slow.xml",
        Route::feed("application/rss+xml", fixture("uscis.xml")).delay(Duration::from_secs(120)),
    );
    feeds.set(
        "/fast.atom",
        Route::feed("application/atom+xml", fixture("govuk.atom")),
    );
    let dir = tempfile::tempdir().unwrap();
    let (slow, fast) = (feeds.url("/slow.xml"), feeds.url("/fast.atom"));
    let path = dir.path().join("config.toml");
    let configure = |list: &[(&str, &str, &str)]| {
        write_config(
            &path,
            list,
            smtp.port(),
            "watch_config = false\nshutdown_timeout = \"2s\"",
        );
        // Slow, not failing: the fetch may take three minutes.
        let text = std::fs::read_to_string(&path)
            .unwrap()
            .replace("[poll]\n", "[poll]\ntimeout = \"180s\"\n");
        std::fs::write(&path, text).unwrap();
    };
    configure(&[("slow", &slow, "1h")]);
    let mut daemon = Daemon::start(&path, &[], &[]);
    wait_until("the slow fetch in flight", || feeds.hits("/slow.xml") == 1).await;

    configure(&[("slow", &slow, "1h"), ("fast", &fast, "1h")]);
    daemon.signal("HUP");
    daemon
        .wait_log("reloaded", |l| {
            l.contains("config reloaded") && l.contains("added=fast")
        })
        .await;
    wait_until(
        "the added feed polled while the slow one is in flight",
        || feeds.hits("/fast.atom") == 1,
    )
    .await;
    daemon
        .wait_log("fast polled", |l| {
            l.contains("feed polled") && l.contains("feed=fast")
        })
        .await;
    assert_eq!(
        feeds.hits("/slow.xml"),
        1,
        "the slow feed is not claimed twice"
    );

    daemon.signal("TERM");
    let (status, _) = daemon.wait_exit(Duration::from_secs(20)).await;
    assert!(status.success(), "exit 0: {status:?}\n{}", daemon.log());
    let db = rusqlite::Connection::open(dir.path().join("tidings.db")).unwrap();
    let claimed: i64 = db
        .query_row(
            "SELECT COUNT(*) FROM feeds WHERE claimed_until IS NOT NULL",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(claimed, 0, "the dropped fetch released its feed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_and_health_report_polls_mail_and_failures_in_json_logs() {
    let feeds = FeedServer::start().await;
    let smtp = SmtpServer::start().await;
    feeds.set(
        "/uscis.xml",
        Route::feed("application/rss+xml", fixture("uscis.xml")),
    );
    feeds.set("/broken.xml", Route::status(500, "oops"));
    let dir = tempfile::tempdir().unwrap();
    let (uscis, broken) = (feeds.url("/uscis.xml"), feeds.url("/broken.xml"));
    let config = write_config(
        &dir.path().join("config.toml"),
        &[("uscis", &uscis, "1h")],
        smtp.port(),
        "",
    );
    let add = Command::new(env!("CARGO_BIN_EXE_tidings"))
        .args([
            "subscriber",
            "add",
            "ana@example.org",
            "-q",
            "\"H-1B\"",
            "--config",
        ])
        .arg(&config)
        .output()
        .unwrap();
    assert!(add.status.success());

    let daemon = Daemon::start(&config, &["--log-format", "json"], &[]);
    let started = daemon
        .wait_log("admin listener", |l| l.contains("admin listener"))
        .await;
    let started: serde_json::Value = serde_json::from_str(&started).expect("JSON log line");
    let admin = format!("http://{}", started["address"].as_str().unwrap());
    smtp.wait_for(1, Duration::from_secs(30)).await;
    daemon
        .wait_log("mail sent", |l| l.contains("\"mail sent\""))
        .await;
    // The subscriber pages are served too.
    let web = daemon
        .wait_log("web listener", |l| l.contains("web listener"))
        .await;
    let web: serde_json::Value = serde_json::from_str(&web).unwrap();
    let (code, content_type, _) = get(&format!(
        "http://{}/style.css",
        web["address"].as_str().unwrap()
    ))
    .await;
    assert_eq!(
        (code, content_type.as_str()),
        (200, "text/css; charset=utf-8")
    );

    let (code, content_type, body) = get(&format!("{admin}/metrics")).await;
    assert_eq!(code, 200);
    assert!(
        content_type.starts_with("application/openmetrics-text"),
        "{content_type}"
    );
    let m = parse_metrics(&body);
    assert_eq!(m["tidings_polls_total{result=\"updated\"}"], 1.0, "{body}");
    assert_eq!(m["tidings_items_ingested_total"], 4.0);
    assert_eq!(m["tidings_matches_total"], 1.0);
    assert_eq!(m["tidings_mail_total{result=\"sent\"}"], 1.0);
    assert_eq!(m["tidings_digests_queued_total"], 1.0);
    assert_eq!(m["tidings_fetch_duration_seconds_count"], 1.0);
    assert_eq!(m["tidings_outbox_pending"], 0.0);
    assert_eq!(m["tidings_outbox_oldest_pending_age_seconds"], 0.0);
    assert_eq!(m["tidings_feeds"], 1.0);
    assert_eq!(m["tidings_feeds_failing"], 0.0);
    assert_eq!(m["tidings_subscribers"], 1.0);
    let (code, _, health) = get(&format!("{admin}/healthz")).await;
    assert_eq!(code, 200, "{health}");
    // `tidings health` (the container health check) asks the same listener. Its config
    // names port 0, so point it at the port the daemon bound.
    let probe_config = dir.path().join("probe.toml");
    std::fs::write(
        &probe_config,
        format!(
            "[service]\nadmin_listen = \"{}\"\n",
            started["address"].as_str().unwrap()
        ),
    )
    .unwrap();
    let probe = |config: PathBuf| {
        tokio::task::spawn_blocking(move || {
            Command::new(env!("CARGO_BIN_EXE_tidings"))
                .args(["health", "--config"])
                .arg(config)
                .output()
                .unwrap()
        })
    };
    let healthy = probe(probe_config.clone()).await.unwrap();
    assert_eq!(healthy.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&healthy.stdout).starts_with("ok\n"));
    std::fs::write(&probe_config, "[service]\nadmin_listen = \"127.0.0.1:1\"\n").unwrap();
    let nobody = probe(probe_config).await.unwrap();
    assert_eq!(
        nobody.status.code(),
        Some(1),
        "no daemon there is unhealthy (2 is reserved by Docker)"
    );
    assert!(String::from_utf8_lossy(&nobody.stderr).contains("is `tidings run` running?"));

    // A failing feed joins (by reload) and the mail server goes away: the numbers move.
    drop(smtp);
    write_config(
        &config,
        &[("uscis", &uscis, "1h"), ("broken", &broken, "1h")],
        0,
        "",
    );
    daemon
        .wait_log("broken polled", |l| l.contains("\"feed poll failed\""))
        .await;
    let m = parse_metrics(&get(&format!("{admin}/metrics")).await.2);
    assert_eq!(m["tidings_polls_total{result=\"failed\"}"], 1.0);
    assert_eq!(m["tidings_polls_total{result=\"updated\"}"], 1.0);
    assert_eq!(m["tidings_fetch_duration_seconds_count"], 2.0);
    assert_eq!(m["tidings_feeds"], 2.0);
    assert_eq!(m["tidings_feeds_failing"], 1.0);

    // Every log line is one JSON object with a level and a message.
    for line in daemon.log().lines() {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(v["level"].is_string() && v["message"].is_string(), "{line}");
    }
    let polled = daemon
        .wait_log("feed polled", |l| l.contains("\"feed polled\""))
        .await;
    let polled: serde_json::Value = serde_json::from_str(&polled).unwrap();
    assert_eq!(
        (polled["feed"].as_str(), polled["new"].as_u64()),
        (Some("uscis"), Some(4)),
        "fields are top-level keys: {polled}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_shot_poll_prints_a_line_per_feed_when_not_on_a_terminal() {
    let feeds = FeedServer::start().await;
    feeds.set(
        "/uscis.xml",
        Route::feed("application/rss+xml", fixture("uscis.xml")),
    );
    feeds.set("/missing.xml", Route::status(404, "no"));
    let dir = tempfile::tempdir().unwrap();
    let (uscis, missing) = (feeds.url("/uscis.xml"), feeds.url("/missing.xml"));
    let config = write_config(
        &dir.path().join("config.toml"),
        &[("uscis", &uscis, "1h"), ("missing", &missing, "1h")],
        25,
        "",
    );
    let out = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_tidings"))
            .args(["poll", "--config"])
            .arg(&config)
            .env_remove("TIDINGS_LOG")
            .env_remove("RUST_LOG")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr
            .lines()
            .any(|l| l == "uscis: ok, 4 new, 0 updated, 0 matches"),
        "{stderr}"
    );
    assert!(
        stderr
            .lines()
            .any(|l| l.starts_with("missing: failed (http)")),
        "{stderr}"
    );
    assert!(
        !stderr.contains("feed polled"),
        "info logs stay quiet by default, the lines say it: {stderr}"
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("polled 2 feeds"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_while_sending_finishes_the_mail_in_flight_and_claims_no_more() {
    const SUBSCRIBERS: usize = 12;
    let feeds = FeedServer::start().await;
    let smtp = SmtpServer::start().await;
    // Each message takes 700 ms to be accepted: a SIGTERM lands mid-batch.
    smtp.set_data_delay(Duration::from_millis(700));
    feeds.set(
        "/uscis.xml",
        Route::feed("application/rss+xml", fixture("uscis.xml")),
    );
    let dir = tempfile::tempdir().unwrap();
    let uscis = feeds.url("/uscis.xml");
    let config = write_config(
        &dir.path().join("config.toml"),
        &[("uscis", &uscis, "1h")],
        smtp.port(),
        "shutdown_timeout = \"5s\"",
    );
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("[mail]\n", "[mail]\nconcurrency = 2\n");
    std::fs::write(&config, text).unwrap();
    {
        let loaded = tidings::config::Config::load(&config).unwrap();
        let store = tidings::store::Store::open_database(&loaded.database)
            .await
            .unwrap();
        for n in 0..SUBSCRIBERS {
            store
                .add_subscription(
                    &format!("s{n:02}@example.org"),
                    "\"H-1B\"",
                    tidings::digest::Schedule::Immediate,
                    chrono_tz::Tz::UTC,
                    chrono::Utc::now(),
                )
                .await
                .unwrap();
        }
    }

    let mut daemon = Daemon::start(&config, &[], &[]);
    smtp.wait_for(1, Duration::from_secs(30)).await;
    daemon.signal("TERM");
    let (status, _) = daemon.wait_exit(Duration::from_secs(15)).await;
    assert!(status.success(), "{status:?}\n{}", daemon.log());
    assert!(daemon.log().contains("stopped cleanly"), "{}", daemon.log());
    let received = smtp.messages().len();
    assert!(
        received < SUBSCRIBERS,
        "the stop came mid-delivery ({received} of {SUBSCRIBERS} sent)"
    );

    // Every message the server accepted is recorded sent; the rest wait, unclaimed, so
    // the next start sends them at once and nothing is sent twice.
    let db = rusqlite::Connection::open(dir.path().join("tidings.db")).unwrap();
    let count =
        |sql: &str| -> usize { db.query_row(sql, [], |r| r.get::<_, i64>(0)).unwrap() as usize };
    assert_eq!(
        count("SELECT COUNT(*) FROM outbox WHERE status = 'sent'"),
        received
    );
    assert_eq!(
        count("SELECT COUNT(*) FROM outbox WHERE claimed_until IS NOT NULL"),
        0,
        "no message left claimed by the stopped process"
    );
    let queued = count("SELECT COUNT(*) FROM outbox");
    let pending_matches = count("SELECT COUNT(*) FROM matches WHERE outbox_id IS NULL");
    assert_eq!(
        queued + pending_matches,
        SUBSCRIBERS,
        "each subscriber's match is in the outbox or still pending"
    );
    drop(db);

    let _again = Daemon::start(&config, &[], &[]);
    let all = smtp.wait_for(SUBSCRIBERS, Duration::from_secs(60)).await;
    let mut recipients: Vec<String> = all.iter().flat_map(|m| m.rcpt_to.clone()).collect();
    recipients.sort();
    recipients.dedup();
    assert_eq!(all.len(), SUBSCRIBERS, "nothing sent twice");
    assert_eq!(recipients.len(), SUBSCRIBERS, "everyone once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_shot_poll_stops_on_sigterm_and_releases_what_it_did_not_poll() {
    let feeds = FeedServer::start().await;
    feeds.set(
        "/slow.xml",
        Route::feed("application/rss+xml", fixture("uscis.xml")).delay(Duration::from_secs(60)),
    );
    feeds.set(
        "/fast.xml",
        Route::feed("application/rss+xml", fixture("uscis.xml")),
    );
    let dir = tempfile::tempdir().unwrap();
    let (slow, fast) = (feeds.url("/slow.xml"), feeds.url("/fast.xml"));
    let config = write_config(
        &dir.path().join("config.toml"),
        &[("slow", &slow, "1h"), ("fast", &fast, "1h")],
        25,
        "shutdown_timeout = \"1s\"",
    );
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("[poll]\n", "[poll]\ntimeout = \"90s\"\n");
    std::fs::write(&config, text).unwrap();
    let mut poll = Command::new(env!("CARGO_BIN_EXE_tidings"))
        .args(["poll", "--config"])
        .arg(&config)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_until("the slow fetch in flight", || feeds.hits("/slow.xml") == 1).await;
    let sent = Command::new("kill")
        .args(["-TERM", &poll.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    let started = Instant::now();
    while poll.try_wait().unwrap().is_none() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "poll did not stop"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let out = poll.wait_with_output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("stopped early: 1 feed not polled"),
        "{stdout}"
    );
    let db = rusqlite::Connection::open(dir.path().join("tidings.db")).unwrap();
    let claimed: i64 = db
        .query_row(
            "SELECT COUNT(*) FROM feeds WHERE claimed_until IS NOT NULL",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(claimed, 0, "the slow feed is released, due again at once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_prunes_at_start_and_pruned_items_never_come_back() {
    let feeds = FeedServer::start().await;
    feeds.set(
        "/uscis.xml",
        Route::feed("application/rss+xml", fixture("uscis.xml")),
    );
    let dir = tempfile::tempdir().unwrap();
    let uscis = feeds.url("/uscis.xml");
    let config = write_config(
        &dir.path().join("config.toml"),
        &[("uscis", &uscis, "1m")],
        25,
        "",
    );
    let config_arg = config.clone();
    let poll = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_tidings"))
            .args(["poll", "--config"])
            .arg(&config_arg)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(poll.status.success());
    // The stored items were first seen 100 days ago (retention is 90 days), and the feed
    // is not due yet, so the prune at start comes first.
    let db_path = dir.path().join("tidings.db");
    let db = rusqlite::Connection::open(&db_path).unwrap();
    let aged = db
        .execute(
            "UPDATE items SET first_seen_at = first_seen_at - 100 * 86400",
            [],
        )
        .unwrap();
    assert_eq!(aged, 4);
    db.execute("UPDATE feeds SET next_poll_at = 4102444800", [])
        .unwrap();

    let daemon = Daemon::start(&config, &[], &[]);
    daemon
        .wait_log("pruned", |l| {
            l.contains(" pruned ") && l.contains("items=4")
        })
        .await;
    // Now the feed is due and answers in full: its four items are in it again (and the
    // body is not known as the last one stored, so it is parsed).
    db.execute(
        "UPDATE feeds SET next_poll_at = 0, etag = NULL, last_modified = NULL, body_hash = NULL",
        [],
    )
    .unwrap();
    daemon.signal("HUP"); // a reload starts a poll at once
    daemon
        .wait_log("polled again", |l| {
            l.contains("feed polled") && l.contains("feed=uscis") && l.contains("baseline=false")
        })
        .await;
    let polled = daemon.log();
    let line = polled
        .lines()
        .find(|l| l.contains("feed polled") && l.contains("baseline=false"))
        .unwrap();
    assert!(
        line.contains("new=0") && line.contains("updated=0"),
        "{line}"
    );
    let db = rusqlite::Connection::open(&db_path).unwrap();
    let (live, tombstones): (i64, i64) = db
        .query_row(
            "SELECT (SELECT COUNT(*) FROM items), (SELECT COUNT(*) FROM item_tombstones)",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!((live, tombstones), (0, 4), "pruned items stay tombstones");
}

/// The unhealthy answers, without waiting for a real scheduler to stall: the admin
/// listener in process, over an `App` whose last tick is set back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_is_503_when_the_scheduler_stalls_or_the_daemon_stops() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(&dir.path().join("config.toml"), &[], 25, "");
    let app = tidings::App::open(tidings::Config::load(&config).unwrap())
        .await
        .unwrap();
    let now = chrono::Utc::now().timestamp();
    app.metrics.last_tick.set(now);
    let (_current, app_rx) = tokio::sync::watch::channel(app.clone());
    let stop = tokio_util::sync::CancellationToken::new();
    let addr = tidings::admin::serve("127.0.0.1:0".parse().unwrap(), app_rx, stop.clone())
        .await
        .unwrap();
    let healthz = format!("http://{addr}/healthz");

    let (code, _, body) = get(&healthz).await;
    assert_eq!(code, 200, "{body}");
    app.metrics
        .last_tick
        .set(now - tidings::admin::STALE_TICK_SECS - 30);
    let (code, _, body) = get(&healthz).await;
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("scheduler: no tick for"), "{body}");
    app.metrics.last_tick.set(now);
    app.shutdown.draining.cancel();
    let (code, _, body) = get(&healthz).await;
    assert_eq!(
        (code, body.contains("shutting down")),
        (503, true),
        "{body}"
    );
    stop.cancel();
}
