//! Hostile tests of the issue-13 CLI work (closed readers, health, poll output, messages,
//! help, README): each one states the behaviour a user should get and failed when written.

mod support;

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use support::{FeedServer, Route};

fn tidings_command(args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_tidings"));
    command
        .args(args)
        .env_remove("TIDINGS_CONFIG")
        .env_remove("TIDINGS_LOG")
        .env_remove("RUST_LOG")
        .env_remove("TIDINGS_LOG_FORMAT")
        .stdin(Stdio::null());
    command
}

fn tidings(args: &[&str]) -> Output {
    tidings_command(args).output().expect("run tidings")
}

/// [`tidings`] on a blocking thread, for tests whose servers need the runtime.
async fn run(args: &[&str]) -> Output {
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        tidings(&args.iter().map(String::as_str).collect::<Vec<_>>())
    })
    .await
    .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn write(dir: &Path, name: &str, body: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, body).unwrap();
    path.to_string_lossy().into_owned()
}

fn no_panic(what: &str, out: &Output) {
    let stderr = text(&out.stderr);
    assert!(
        !stderr.contains("panicked") && out.status.code() != Some(101),
        "{what}: panicked ({:?}):\n{stderr}",
        out.status
    );
}

/// The searches stored for `email` in the database of `config`.
async fn searches(config: &str, email: &str) -> Vec<String> {
    let loaded = tidings::config::Config::load(Path::new(config)).unwrap();
    if loaded.database.sqlite_path().is_some_and(|p| !p.exists()) {
        return Vec::new();
    }
    let store = tidings::store::Store::open_database(&loaded.database)
        .await
        .unwrap();
    store
        .subscriber(email)
        .await
        .unwrap()
        .map(|s| s.queries)
        .unwrap_or_default()
}

// ---- match --since ------------------------------------------------------------------------

/// `--since 99999999d` (or `300000y`) reaches before the calendar chrono can hold:
/// `Utc::now() - since` panics ("`DateTime - TimeDelta` overflowed", exit 101).
#[test]
fn match_with_a_since_beyond_the_calendar_fails_cleanly_or_looks_at_everything() {
    let dir = tempfile::tempdir().unwrap();
    let config = write(dir.path(), "config.toml", "");
    for since in ["99999999d", "300000y"] {
        let out = tidings(&["match", "asylum", "--since", since, "--config", &config]);
        no_panic(&format!("--since {since}"), &out);
        assert!(
            matches!(out.status.code(), Some(0 | 2)),
            "--since {since}: {:?}\n{}",
            out.status,
            text(&out.stderr)
        );
    }
}

// ---- --query swallowing the next flag -------------------------------------------------------

/// `allow_hyphen_values` on `--query` takes the next flag as the search: `--query --help`
/// subscribes the address to "--help" (that is, to "help": `--` is a double negation)
/// with exit 0 instead of showing help or saying the query is missing.
#[tokio::test]
async fn a_flag_right_after_query_is_not_stored_as_the_search() {
    let dir = tempfile::tempdir().unwrap();
    let config = write(dir.path(), "config.toml", "");
    for (what, args) in [
        (
            "--query --help",
            vec!["subscriber", "add", "ana@example.org", "--query", "--help"],
        ),
        (
            "-q --frequency -f daily",
            vec![
                "subscriber",
                "add",
                "ana@example.org",
                "-q",
                "--frequency",
                "-f",
                "daily",
            ],
        ),
        (
            "--query --config",
            vec![
                "subscriber",
                "add",
                "ana@example.org",
                "--query",
                "--config",
            ],
        ),
    ] {
        let mut all = vec!["--config", config.as_str()];
        all.extend(args);
        let out = tidings(&all);
        no_panic(what, &out);
        let stored = searches(&config, "ana@example.org").await;
        assert!(
            stored.iter().all(|s| !s.starts_with("--")),
            "{what}: a flag was stored as a search {stored:?}; stdout:\n{}",
            text(&out.stdout)
        );
    }
}

/// `--query -- -visa`, the usual way to pass a value that starts with `-`, makes `--` the
/// query and then fails on `-visa` as flags, with clap's tip "to pass '-i' as a value,
/// use '-- -i'", which is what the user just did.
#[tokio::test]
async fn query_after_a_double_dash_is_taken_or_refused_without_a_contradicting_tip() {
    let dir = tempfile::tempdir().unwrap();
    let config = write(dir.path(), "config.toml", "");
    let out = tidings(&[
        "--config",
        &config,
        "subscriber",
        "add",
        "ana@example.org",
        "--query",
        "--",
        "-visa asylum",
    ]);
    no_panic("--query -- ...", &out);
    let stderr = text(&out.stderr);
    if out.status.success() {
        assert_eq!(
            searches(&config, "ana@example.org").await,
            vec!["-visa asylum".to_string()]
        );
    } else {
        assert!(
            !stderr.contains("use '-- -"),
            "the tip asks for what was typed:\n{stderr}"
        );
    }
}

// ---- health -------------------------------------------------------------------------------

fn health_config(dir: &Path, port: u16) -> String {
    write(
        dir,
        "health.toml",
        &format!("[service]\nadmin_listen = \"127.0.0.1:{port}\"\n"),
    )
}

/// Any 200 from whatever listens on the admin port counts as healthy: another web server
/// there, or a redirect to one, makes `tidings health` exit 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_is_not_fooled_by_another_server_on_the_admin_port() {
    let server = FeedServer::start().await;
    let other = FeedServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = health_config(dir.path(), server.addr().port());

    server.set(
        "/healthz",
        Route::feed("text/html", "<html><body>Welcome to nginx!</body></html>"),
    );
    let out = run(&["health", "--config", &config]).await;
    assert_eq!(
        out.status.code(),
        Some(1),
        "a web page is not the daemon's health: {}",
        text(&out.stdout)
    );

    other.set("/healthz", Route::feed("text/plain", "hello"));
    server.set(
        "/healthz",
        Route::status(302, "").header("Location", &other.url("/healthz")),
    );
    let out = run(&["health", "--config", &config]).await;
    assert_eq!(
        out.status.code(),
        Some(1),
        "a redirect elsewhere is not the daemon's health: {}",
        text(&out.stdout)
    );
}

/// A 200 whose body never ends (a stuck daemon, a server streaming forever) is read until
/// the 7 s timeout, then the read error is dropped (`unwrap_or_default`) and the answer is
/// "healthy" with nothing printed. (Against a fast stream the body is also buffered
/// without a cap: 4.7 GB resident in those 7 s on loopback.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_fails_when_the_answer_never_finishes() {
    let server = FeedServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = health_config(dir.path(), server.addr().port());
    server.set(
        "/healthz",
        Route::status(200, format!("ok\n{}", "x".repeat(200))).drip(Duration::from_millis(500)),
    );
    let started = Instant::now();
    let out = run(&["health", "--config", &config]).await;
    assert_eq!(
        out.status.code(),
        Some(1),
        "an unfinished answer after {:?} is not healthy; stdout {:?}",
        started.elapsed(),
        text(&out.stdout)
    );
}

// ---- what reaches the terminal --------------------------------------------------------------

/// `printable` escapes control characters (Cc) but not Unicode bidirectional controls
/// (Cf: U+202E RIGHT-TO-LEFT OVERRIDE, U+2066..2069 isolates), which reorder what the
/// terminal shows ("Trojan Source").
#[test]
fn printable_shows_bidi_controls_escaped() {
    for c in [
        '\u{202e}', '\u{202d}', '\u{2066}', '\u{2067}', '\u{2068}', '\u{2069}',
    ] {
        let line = format!("news {c}exe.pdf");
        let shown = tidings::output::printable(&line);
        assert!(
            !shown.contains(c),
            "U+{:04X} is printed as it is: {shown:?}",
            c as u32
        );
    }
}

/// End to end: a feed whose title carries U+202E gets it printed raw by `feeds discover`
/// (the same goes for feed names imported from OPML, shown by `tidings match`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discover_does_not_print_a_feeds_bidi_override() {
    let server = FeedServer::start().await;
    server.set(
        "/feed.xml",
        Route::feed(
            "application/rss+xml",
            "<?xml version=\"1.0\"?><rss version=\"2.0\"><channel>\
             <title>USCIS \u{202e}fdp.exe</title><link>http://127.0.0.1/</link>\
             <description>d</description></channel></rss>",
        ),
    );
    let dir = tempfile::tempdir().unwrap();
    let config = write(dir.path(), "config.toml", "");
    let out = run(&[
        "feeds",
        "discover",
        &server.url("/feed.xml"),
        "--config",
        &config,
    ])
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let said = text(&out.stdout);
    assert!(said.contains("is a feed"), "{said}");
    assert!(
        !said.contains('\u{202e}'),
        "bidi override printed: {said:?}"
    );
}

/// `feeds import` reports the OPML's URL as written there, while the config gets the URL
/// parsed (tabs and newlines dropped by the URL parser): a URL with a newline breaks the
/// one-line-per-feed report and shows an address other than the one added.
#[test]
fn import_reports_the_url_it_writes_on_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let config = write(dir.path(), "config.toml", "");
    let opml = write(
        dir.path(),
        "feeds.opml",
        "<?xml version=\"1.0\"?><opml version=\"2.0\"><head><title>x</title></head><body>\
         <outline type=\"rss\" text=\"news\" xmlUrl=\"https://news.example.org/fe&#10;ed.xml\"/>\
         </body></opml>",
    );
    let out = tidings(&["feeds", "import", &opml, "--config", &config]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let report = text(&out.stderr);
    assert!(
        report.contains("https://news.example.org/feed.xml"),
        "the URL added to the config is the one reported:\n{report}"
    );
    assert_eq!(
        report.lines().count(),
        1,
        "one line for one feed:\n{report}"
    );
}

// ---- messages -------------------------------------------------------------------------------

/// A feed never polled shows "NEXT POLL 1970-01-01 00:00 UTC" in `feeds status`.
#[test]
fn feeds_status_of_a_new_feed_does_not_say_1970() {
    let dir = tempfile::tempdir().unwrap();
    let config = write(
        dir.path(),
        "config.toml",
        "[[feeds]]\nid = \"uscis\"\nurl = \"https://news.example.org/feed.xml\"\n",
    );
    let out = tidings(&["feeds", "status", "--config", &config]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let said = text(&out.stdout);
    assert!(said.contains("uscis"), "{said}");
    assert!(!said.contains("1970"), "{said}");
}

/// With no subscribers, `subscriber list` prints nothing at all: a new user cannot tell
/// an empty list from a command that did nothing.
#[test]
fn subscriber_list_with_nobody_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let config = write(dir.path(), "config.toml", "");
    let out = tidings(&["subscriber", "list", "--config", &config]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        !text(&out.stdout).trim().is_empty(),
        "an empty list says it is empty"
    );
}

/// "every every" is called an "empty schedule": it is not empty, "every" is given twice.
#[test]
fn a_schedule_of_only_every_is_not_called_empty() {
    let dir = tempfile::tempdir().unwrap();
    let config = write(dir.path(), "config.toml", "");
    let out = tidings(&[
        "subscriber",
        "add",
        "ana@example.org",
        "-q",
        "visa",
        "-f",
        "every every",
        "--config",
        &config,
    ]);
    assert_eq!(out.status.code(), Some(2));
    let said = text(&out.stderr);
    assert!(!said.contains("empty schedule"), "{said}");
}

/// `--tz utc` and `--tz europe/london` are refused as unknown time zones, while
/// check-config itself prints the zone as "UTC".
#[test]
fn time_zone_names_are_not_case_sensitive() {
    let dir = tempfile::tempdir().unwrap();
    let config = write(dir.path(), "config.toml", "");
    for tz in ["utc", "europe/london"] {
        let out = tidings(&[
            "subscriber",
            "add",
            "ana@example.org",
            "-q",
            "visa",
            "--tz",
            tz,
            "--config",
            &config,
        ]);
        assert!(out.status.success(), "--tz {tz}: {}", text(&out.stderr));
    }
}

/// `feeds discover localhost:PORT` against a plain-HTTP server fails with a TLS error
/// ("received corrupt message of type InvalidContentType") and no hint that http:// may
/// be what was meant.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discover_without_a_scheme_suggests_http_when_https_fails() {
    let server = FeedServer::start().await;
    server.set(
        "/feed.xml",
        Route::feed(
            "application/rss+xml",
            "<?xml version=\"1.0\"?><rss version=\"2.0\"><channel><title>t</title>\
             <link>http://127.0.0.1/</link><description>d</description></channel></rss>",
        ),
    );
    let dir = tempfile::tempdir().unwrap();
    let config = write(dir.path(), "config.toml", "");
    let bare = format!("localhost:{}/feed.xml", server.addr().port());
    let out = run(&["feeds", "discover", &bare, "--config", &config]).await;
    assert_eq!(out.status.code(), Some(2));
    let said = text(&out.stderr);
    assert!(
        said.contains(&format!("http://{bare}")),
        "the plain-HTTP address is suggested:\n{said}"
    );
}

/// Log lines with times show them without a zone (`cutoff=2026-09-02 16:55:06`,
/// `next_poll=…`), unlike every other time the commands show.
#[test]
fn log_lines_label_their_times() {
    let dir = tempfile::tempdir().unwrap();
    let config = write(dir.path(), "config.toml", "");
    let out = tidings(&["prune", "-v", "--config", &config]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let log = text(&out.stderr);
    let line = log
        .lines()
        .find(|l| l.contains("cutoff="))
        .unwrap_or_else(|| panic!("a pruned line:\n{log}"));
    let cutoff = line.split("cutoff=").nth(1).unwrap();
    assert!(
        cutoff.contains("UTC") || cutoff.split_whitespace().next().unwrap().ends_with('Z'),
        "the cutoff's zone is said: {line}"
    );
}

// ---- help that cannot be written ------------------------------------------------------------

/// `tidings --help > /dev/full` exits 0 with the help lost, while every other command
/// whose output cannot be written exits 2 ("error: writing to standard output").
#[test]
fn help_that_cannot_be_written_is_an_error() {
    let full = match std::fs::OpenOptions::new().write(true).open("/dev/full") {
        Ok(f) => f,
        Err(_) => return, // no /dev/full here
    };
    let out = tidings_command(&["match", "--help"])
        .stdout(Stdio::from(full))
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(2),
        "help to a full disk: {}",
        text(&out.stderr)
    );
}

// ---- poll: a result that cannot be saved ----------------------------------------------------

/// A feed fetched and parsed whose items the database refuses (a full disk, say; here a
/// trigger) was reported as "skipped" on its line while the summary counted it failed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poll_says_a_feed_whose_result_cannot_be_saved_failed() {
    let server = FeedServer::start().await;
    server.set(
        "/feed.xml",
        Route::feed(
            "application/rss+xml",
            "<?xml version=\"1.0\"?><rss version=\"2.0\"><channel><title>t</title>\
             <link>http://127.0.0.1/</link><description>d</description>\
             <item><title>Asylum rule</title><guid>a1</guid></item></channel></rss>",
        ),
    );
    let dir = tempfile::tempdir().unwrap();
    let config = write(
        dir.path(),
        "config.toml",
        &format!(
            "[poll]\ninitial_backlog = \"3650d\"\n\
             [[feeds]]\nid = \"uscis\"\nurl = \"{}\"\n",
            server.url("/feed.xml")
        ),
    );
    let database = tidings::config::Config::load(Path::new(&config))
        .unwrap()
        .database
        .sqlite_path()
        .unwrap()
        .to_path_buf();
    drop(tidings::store::Store::open(&database).unwrap());
    rusqlite::Connection::open(&database)
        .unwrap()
        .execute_batch(
            "CREATE TRIGGER no_room BEFORE INSERT ON items \
             BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END;",
        )
        .unwrap();

    let out = run(&["poll", "--config", &config]).await;
    no_panic("poll", &out);
    let said = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert!(
        said.contains("uscis: failed") && said.contains("disk is full"),
        "the feed's line says it failed and why:\n{said}"
    );
    assert!(!said.contains("skipped"), "{said}");
    assert!(said.contains("1 failed"), "{said}");
}
