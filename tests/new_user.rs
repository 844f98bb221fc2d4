//! What a new user trips over (issue 13): the `tidings` binary run as a newcomer runs it,
//! in a pipe, with typos, on a first poll.

mod support;

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Command, ExitStatus, Output, Stdio};

fn tidings_command(args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_tidings"));
    command
        .args(args)
        .env_remove("TIDINGS_CONFIG")
        .env_remove("TIDINGS_LOG")
        .env_remove("RUST_LOG")
        .env_remove("TIDINGS_LOG_FORMAT");
    command
}

fn tidings(args: &[&str]) -> Output {
    tidings_command(args).output().expect("run tidings")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn write(dir: &Path, name: &str, body: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, body).unwrap();
    path.to_string_lossy().into_owned()
}

// ---- 1. a reader that goes away ----------------------------------------------------------

/// Runs `args` with standard output in a pipe, reads its first line and closes the pipe,
/// as `| head -1` does. Returns the exit status, the line and standard error.
fn first_line_then_close(args: &[&str]) -> (ExitStatus, String, String) {
    let mut child = tidings_command(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run tidings");
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    drop(stdout);
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    (child.wait().unwrap(), line, stderr)
}

/// A config with `n` feeds: more output than a pipe holds, so the command is still
/// writing when its reader goes away.
fn many_feeds_config(dir: &Path, n: usize) -> String {
    let mut body = String::new();
    for i in 0..n {
        body.push_str(&format!(
            "[[feeds]]\nid = \"feed-{i:04}\"\nurl = \"https://news-{i:04}.example.org/feed.xml\"\n"
        ));
    }
    write(dir, "config.toml", &body)
}

fn assert_quiet_end(what: &str, (status, line, stderr): (ExitStatus, String, String)) {
    assert!(!line.is_empty(), "{what}: printed a first line");
    assert!(
        !stderr.contains("panicked") && !stderr.contains("Broken pipe"),
        "{what}: {stderr}"
    );
    assert_ne!(status.code(), Some(101), "{what}: {stderr}");
    assert!(
        status.success(),
        "{what}: a closed reader is not a failure: {status:?}"
    );
}

#[tokio::test]
async fn a_closed_reader_ends_every_listing_quietly() {
    let dir = tempfile::tempdir().unwrap();
    let config = many_feeds_config(dir.path(), 2000);
    assert_quiet_end(
        "check-config",
        first_line_then_close(&["check-config", "--config", &config]),
    );
    assert_quiet_end(
        "feeds status",
        first_line_then_close(&["feeds", "status", "--config", &config]),
    );
    assert_quiet_end(
        "feeds export",
        first_line_then_close(&["feeds", "export", "--config", &config]),
    );

    let loaded = tidings::config::Config::load(Path::new(&config)).unwrap();
    let store = tidings::store::Store::open_database(&loaded.database)
        .await
        .unwrap();
    let now = chrono::Utc::now();
    for n in 0..2000 {
        store
            .add_subscription(
                &format!("reader-{n:04}@example.org"),
                "asylum OR \"green card\"",
                tidings::digest::Schedule::Immediate,
                chrono_tz::Tz::UTC,
                now,
            )
            .await
            .unwrap();
    }
    assert_quiet_end(
        "subscriber list",
        first_line_then_close(&["subscriber", "list", "--config", &config]),
    );
}

#[test]
fn a_closed_error_stream_keeps_the_exit_code() {
    let dir = tempfile::tempdir().unwrap();
    let config = write(dir.path(), "config.toml", "[poll]\nintervall = \"5m\"\n");
    let mut child = tidings_command(&["check-config", "--config", &config])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stderr.take());
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(2), "the error is still an error");
}

// ---- 2. health: 0 healthy, 1 anything else -----------------------------------------------

#[test]
fn health_exits_1_for_every_failure() {
    let dir = tempfile::tempdir().unwrap();
    // A port nobody listens on: taken, then let go.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let not_running = write(
        dir.path(),
        "down.toml",
        &format!("[service]\nadmin_listen = \"127.0.0.1:{port}\"\n"),
    );
    let out = tidings(&["health", "--config", &not_running]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("is `tidings run` running?"),
        "{}",
        text(&out.stderr)
    );

    let broken = write(dir.path(), "broken.toml", "[service\n");
    let out = tidings(&["health", "--config", &broken]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));

    let off = write(dir.path(), "off.toml", "[service]\nadmin_listen = \"\"\n");
    let out = tidings(&["health", "--config", &off]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));

    let help = text(&tidings(&["health", "--help"]).stdout);
    assert!(help.contains("0 when healthy, 1 when not"), "{help}");
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    assert!(
        readme.contains("exit 0 when healthy, 1 when not"),
        "README says 0/1"
    );
}

// ---- 3. poll: one line per feed, a summary with updated items ----------------------------

use support::{FeedServer, Route, fixture};

/// Runs `args` off a terminal on a blocking thread (the test servers need the runtime).
async fn run(args: Vec<String>) -> Output {
    tokio::task::spawn_blocking(move || {
        tidings(&args.iter().map(String::as_str).collect::<Vec<_>>())
    })
    .await
    .unwrap()
}

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|a| a.to_string()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poll_off_a_terminal_reports_each_feed_once_and_counts_updated_items() {
    let feeds = FeedServer::start().await;
    let uscis = String::from_utf8(fixture("uscis.xml")).unwrap();
    feeds.set(
        "/news.xml",
        Route::feed("application/rss+xml", uscis.clone()),
    );
    feeds.set("/a.xml", Route::status(404, "not here"));
    feeds.set("/b.xml", Route::status(503, "down"));
    let dir = tempfile::tempdir().unwrap();
    let config = write(
        dir.path(),
        "config.toml",
        &format!(
            "[poll]\ninitial_backlog = \"3650d\"\n\
             [[feeds]]\nid = \"uscis\"\nurl = \"{}\"\n\
             [[feeds]]\nid = \"lost-feed\"\nurl = \"{}\"\n\
             [[feeds]]\nid = \"sleepy-feed\"\nurl = \"{}\"\n",
            feeds.url("/news.xml"),
            feeds.url("/a.xml"),
            feeds.url("/b.xml")
        ),
    );

    let poll = run(args(&["poll", "--config", &config])).await;
    assert!(poll.status.success(), "{}", text(&poll.stderr));
    let combined = format!("{}{}", text(&poll.stdout), text(&poll.stderr));
    for id in ["uscis", "lost-feed", "sleepy-feed"] {
        assert_eq!(
            combined.matches(id).count(),
            1,
            "{id} reported exactly once:\n{combined}"
        );
    }
    assert!(
        combined.contains("lost-feed: failed") && combined.contains("sleepy-feed: failed"),
        "{combined}"
    );
    assert!(
        !combined.contains("WARN"),
        "no log line repeats a feed:\n{combined}"
    );
    let summary = text(&poll.stdout);
    assert!(
        summary.contains("polled 3 feeds") && summary.contains("4 new items, 0 updated items"),
        "{summary}"
    );

    // The publisher corrects one story: an updated item, counted as such.
    feeds.set(
        "/news.xml",
        Route::feed(
            "application/rss+xml",
            uscis.replace(
                "TPS Extended for Venezuela",
                "TPS Extended for Venezuela (corrected)",
            ),
        ),
    );
    let poll = run(args(&["poll", "--config", &config])).await;
    assert!(poll.status.success(), "{}", text(&poll.stderr));
    let combined = format!("{}{}", text(&poll.stdout), text(&poll.stderr));
    assert!(
        combined.contains("uscis: ok, 0 new, 1 updated"),
        "{combined}"
    );
    assert!(
        text(&poll.stdout).contains("0 new items, 1 updated item,"),
        "{combined}"
    );

    // The User-Agent the shipped config.toml documents is the one sent.
    let shipped =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("config.toml")).unwrap();
    let documented = shipped
        .lines()
        .find_map(|l| l.strip_prefix("# user_agent = "))
        .expect("config.toml documents user_agent")
        .trim_matches('"')
        .replace("VERSION", env!("CARGO_PKG_VERSION"));
    let sent = feeds.requests("/news.xml")[0]
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case("user-agent"))
        .map(|(_, value)| value.clone());
    assert_eq!(sent.as_deref(), Some(documented.as_str()));
}

// ---- 5. messages that say the right thing ------------------------------------------------

#[test]
fn subscriber_messages_say_what_happened() {
    let dir = tempfile::tempdir().unwrap();
    let config = write(
        dir.path(),
        "config.toml",
        "[digest]\ndaily_at = \"07:30\"\n",
    );
    let add = |extra: &[&str]| {
        let mut all = vec!["subscriber", "add", "ana@example.org"];
        all.extend(extra);
        all.extend(["--config", config.as_str()]);
        tidings(&all)
    };

    let out = add(&["-q", "asylum", "-f", "daily"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let said = text(&out.stdout);
    assert!(
        said.contains("ana@example.org now gets digests daily at 07:30 (UTC)"),
        "{said}"
    );

    // A leading `-` is an exclusion, not a flag.
    let out = add(&["--query", "-tourist visa"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let said = text(&out.stdout);
    assert!(
        said.contains("2 searches") && said.contains("asylum") && said.contains("-tourist visa"),
        "every search of the subscriber is listed: {said}"
    );
    let out = add(&["--query", "-visa"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("needs at least one term that is not excluded"),
        "{}",
        text(&out.stderr)
    );

    // "every tuesday" is a weekly schedule.
    let out = add(&["-q", "parole", "--frequency", "every tuesday"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("now gets digests weekly on Tuesday at 07:30"),
        "{}",
        text(&out.stdout)
    );

    let out = tidings(&[
        "subscriber",
        "resume",
        "ana@example.org",
        "--config",
        &config,
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let said = text(&out.stdout);
    assert!(
        said.contains("ana@example.org is not paused") && !said.contains("again"),
        "{said}"
    );
    let out = tidings(&[
        "subscriber",
        "resume",
        "bo@example.org",
        "--config",
        &config,
    ]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn match_since_without_a_unit_suggests_one() {
    let dir = tempfile::tempdir().unwrap();
    let config = write(dir.path(), "config.toml", "");
    let out = tidings(&["match", "asylum", "--since", "7", "--config", &config]);
    assert_eq!(out.status.code(), Some(2));
    let said = text(&out.stderr);
    assert!(
        said.contains("'7'") && said.contains("a unit is needed, for example 7d, 12h or 30m"),
        "{said}"
    );
    let out = tidings(&[
        "match",
        "-tourist visa",
        "--since",
        "36h",
        "--config",
        &config,
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("0 of 0 items from the last 1 day 12 hours match -tourist visa"),
        "{}",
        text(&out.stdout)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discover_without_a_scheme_tries_https() {
    // Something listens, but speaks plain HTTP: the https:// attempt is what is reported.
    let feeds = FeedServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = write(dir.path(), "config.toml", "");
    let bare = format!("{}/news.xml", feeds.addr());
    let out = run(args(&["feeds", "discover", &bare, "--config", &config])).await;
    let said = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert!(!said.contains("relative URL without a base"), "{said}");
    assert!(
        said.contains(&format!("no scheme given: trying https://{bare}")),
        "{said}"
    );
}

/// One feed, one subscriber, one digest: every count in the one-shot commands is singular.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counts_of_one_are_singular_and_times_say_utc() {
    let feeds = FeedServer::start().await;
    let smtp = support::SmtpServer::start().await;
    let uscis = String::from_utf8(fixture("uscis.xml")).unwrap();
    // One item only.
    let one = uscis
        .split("<item>")
        .take(3)
        .collect::<Vec<_>>()
        .join("<item>");
    let one = format!("{}</channel></rss>", &one[..one.rfind("<item>").unwrap()]);
    feeds.set("/news.xml", Route::feed("application/rss+xml", one));
    let dir = tempfile::tempdir().unwrap();
    let config = write(
        dir.path(),
        "config.toml",
        &format!(
            "[poll]\ninitial_backlog = \"3650d\"\n\
             [mail]\nfrom = \"alerts@tidings.test\"\ntransport = \"smtp\"\n\
             [mail.smtp]\nhost = \"127.0.0.1\"\nport = {}\ntls = \"none\"\n\
             [[feeds]]\nid = \"uscis\"\nurl = \"{}\"\n",
            smtp.port(),
            feeds.url("/news.xml")
        ),
    );
    let with_config = |list: &[&str]| {
        let mut all = args(list);
        all.extend(args(&["--config", &config]));
        all
    };
    let out = run(with_config(&[
        "subscriber",
        "add",
        "ana@example.org",
        "-q",
        "H-1B",
    ]))
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("1 search:"),
        "{}",
        text(&out.stdout)
    );

    let out = run(with_config(&["poll"])).await;
    let said = text(&out.stdout);
    assert!(
        said.contains("polled 1 feed:") && said.contains("1 new item,") && said.contains("1 match"),
        "{said}"
    );
    assert!(!said.contains("1 matches"), "{said}");

    let out = run(with_config(&["digest"])).await;
    assert!(
        text(&out.stdout).contains("queued 1 digest;"),
        "{}",
        text(&out.stdout)
    );

    let copy = dir.path().join("copy.db");
    let out = run(with_config(&["backup", copy.to_str().unwrap()])).await;
    let said = text(&out.stdout);
    assert!(
        said.contains("1 feed,")
            && said.contains("1 subscriber,")
            && said.contains("1 outbox message"),
        "{said}"
    );

    let export = dir.path().join("feeds.opml");
    let out = run(with_config(&[
        "feeds",
        "export",
        "-o",
        export.to_str().unwrap(),
    ]))
    .await;
    assert!(
        text(&out.stderr).contains("wrote 1 feed to"),
        "{}",
        text(&out.stderr)
    );

    // 6. Every time shown says its zone.
    let stamp = regex_free_stamps;
    let out = run(with_config(&["match", "H-1B"])).await;
    stamp("match", &text(&out.stdout));
    let out = run(with_config(&["feeds", "status"])).await;
    stamp("feeds status", &text(&out.stdout));
    let out = run(with_config(&["outbox", "--all"])).await;
    stamp("outbox", &text(&out.stdout));
}

/// Every `YYYY-MM-DD HH:MM` in `output` is followed by a zone; there is at least one.
fn regex_free_stamps(what: &str, output: &str) {
    let bytes = output.as_bytes();
    let is_stamp = |i: usize| {
        let pattern = b"dddd-dd-dd dd:dd";
        i + pattern.len() <= bytes.len()
            && pattern.iter().enumerate().all(|(k, p)| match p {
                b'd' => bytes[i + k].is_ascii_digit(),
                other => bytes[i + k] == *other,
            })
    };
    let stamps: Vec<usize> = (0..bytes.len()).filter(|&i| is_stamp(i)).collect();
    assert!(!stamps.is_empty(), "{what} shows a time:\n{output}");
    for i in stamps {
        let after = &output[i + 16..];
        assert!(
            after.starts_with(" UTC") || after.starts_with(":") && after[3..].starts_with(" UTC"),
            "{what}: a time without its zone at {:?}:\n{output}",
            &output[i..(i + 24).min(output.len())]
        );
    }
}

// ---- 10. help -----------------------------------------------------------------------------

#[test]
fn help_describes_every_argument() {
    let commands: &[&[&str]] = &[
        &[],
        &["run"],
        &["poll"],
        &["digest"],
        &["check-config"],
        &["health"],
        &["match"],
        &["subscriber", "add"],
        &["subscriber", "list"],
        &["subscriber", "remove"],
        &["subscriber", "resume"],
        &["feeds", "status"],
        &["feeds", "discover"],
        &["feeds", "import"],
        &["feeds", "export"],
        &["prune"],
        &["backup"],
        &["outbox"],
        &["outbox", "retry"],
    ];
    for command in commands {
        let mut all = command.to_vec();
        all.push("-h");
        let out = tidings(&all);
        assert!(out.status.success(), "{command:?}: {}", text(&out.stderr));
        let help = text(&out.stdout);
        let mut section = "";
        for line in help.lines() {
            if !line.starts_with(' ') && line.ends_with(':') {
                section = line;
                continue;
            }
            let entry = line.strip_prefix("  ").unwrap_or(line);
            if matches!(section, "Arguments:" | "Options:") && entry.starts_with(['<', '-']) {
                assert!(
                    entry.trim_end().contains("  "),
                    "{command:?}: {entry:?} has no description:\n{help}"
                );
            }
        }
    }
    let help = text(&tidings(&["match", "--help"]).stdout);
    for syntax in [
        "\"green card\"",
        "-lottery",
        "OR",
        "title:",
        "feed:",
        "tag:",
        "deport*",
    ] {
        assert!(
            help.contains(syntax),
            "match --help shows {syntax}:\n{help}"
        );
    }
}

#[test]
fn readme_says_what_the_first_build_costs() {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let start = readme
        .find("## Set up on a fresh machine")
        .expect("README has a setup section");
    let end = readme[start + 3..]
        .find("\n## ")
        .map_or(readme.len(), |e| start + 3 + e);
    let around = &readme[start..end];
    assert!(
        around.contains("minutes") && around.contains("GB"),
        "the first build's time and disk are said next to the command:\n{around}"
    );
}
