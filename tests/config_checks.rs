//! What a new admin trips over, checked on the real binary: every problem of a config file
//! at once and in order, searches naming feeds or tags that do not exist (refused when
//! added, named when a reload leaves them dangling), metrics present from the start,
//! one-shot commands that stay quiet, and a daemon that says what it listens on and what
//! each reload changed.

mod support;

use std::path::{Path, PathBuf};

use std::process::{Command, Output};

use support::Daemon;

/// `tidings ARGS` with no log level from the environment (the defaults are under test).
fn tidings(args: &[&str]) -> Output {
    tidings_with(args, &[])
}

/// [`tidings`] with `env` set.
fn tidings_with(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_tidings"));
    command
        .args(args)
        .env_remove("TIDINGS_CONFIG")
        .env_remove("TIDINGS_LOG")
        .env_remove("RUST_LOG")
        .env_remove("TIDINGS_ADMIN_TOKEN");
    for (k, v) in env {
        command.env(k, v);
    }
    command.output().expect("run tidings")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A config in `dir` with `feeds` (id, tags) on loopback URLs that are never fetched in
/// time to matter, mail to files, both listeners on ephemeral ports, and `extra` appended.
fn write_config(dir: &Path, feeds: &[(&str, &[&str])], extra: &str) -> PathBuf {
    let mut text = String::from(
        "[poll]\ninterval = \"1h\"\n\
         [web]\nlisten = \"127.0.0.1:0\"\n\
         [service]\nadmin_listen = \"127.0.0.1:0\"\n",
    );
    text.push_str(extra);
    for (id, tags) in feeds {
        let tags: Vec<String> = tags.iter().map(|t| format!("{t:?}")).collect();
        text.push_str(&format!(
            "\n[[feeds]]\nid = \"{id}\"\nurl = \"http://127.0.0.1:9/{id}.xml\"\ntags = [{}]\n",
            tags.join(", ")
        ));
    }
    let path = dir.join("config.toml");
    std::fs::write(&path, text).unwrap();
    path
}

async fn get(url: &str) -> (u16, String) {
    let response = reqwest::get(url).await.unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_show_every_series_at_zero_before_anything_happens() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &[], "");
    let daemon = Daemon::start(&config, &[], &[]);
    let admin = daemon.admin().await;
    let (code, body) = get(&format!("{admin}/metrics")).await;
    assert_eq!(code, 200);
    for line in [
        "tidings_config_reloads_total{result=\"ok\"} 0",
        "tidings_config_reloads_total{result=\"error\"} 0",
        "tidings_polls_total{result=\"updated\"} 0",
        "tidings_polls_total{result=\"not_modified\"} 0",
        "tidings_polls_total{result=\"failed\"} 0",
        "tidings_mail_total{result=\"sent\"} 0",
        "tidings_mail_total{result=\"retrying\"} 0",
        "tidings_mail_total{result=\"failed\"} 0",
    ] {
        assert!(body.lines().any(|l| l == line), "no {line:?} in:\n{body}");
    }
}

#[test]
fn one_shot_commands_print_their_own_output_and_log_only_warnings_unless_asked() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &[("a", &[])], "");
    let config = config.to_str().unwrap();
    // A fresh database: migrating it is an INFO line nobody asked for.
    let add = tidings(&[
        "subscriber",
        "add",
        "ana@example.org",
        "-q",
        "asylum",
        "--config",
        config,
    ]);
    assert!(add.status.success(), "{}", text(&add.stderr));
    assert!(
        text(&add.stdout).contains("ana@example.org"),
        "{}",
        text(&add.stdout)
    );
    assert_eq!(text(&add.stderr), "", "no log lines by default");
    for args in [
        &["subscriber", "list"][..],
        &["prune"],
        &["check-config"],
        &["match", "asylum"],
    ] {
        let out = tidings(&[args, &["--config", config]].concat());
        assert!(out.status.success(), "{args:?}: {}", text(&out.stderr));
        assert_eq!(text(&out.stderr), "", "{args:?}: no log lines by default");
    }

    // -v asks for them; TIDINGS_LOG (or RUST_LOG) still decides when set.
    let fresh = tempfile::tempdir().unwrap();
    let other = write_config(fresh.path(), &[("a", &[])], "");
    let other = other.to_str().unwrap();
    let verbose = tidings(&["-v", "prune", "--config", other]);
    assert!(verbose.status.success());
    let log = text(&verbose.stderr);
    assert!(
        log.contains("INFO") && log.contains("Database migrated"),
        "{log}"
    );
    let by_env = tidings_with(&["prune", "--config", config], &[("TIDINGS_LOG", "info")]);
    assert!(
        text(&by_env.stderr).contains("INFO"),
        "{}",
        text(&by_env.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_logs_info_by_default() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &[], "");
    let mut child = Command::new(env!("CARGO_BIN_EXE_tidings"))
        .args(["run", "--config"])
        .arg(&config)
        .env_remove("TIDINGS_LOG")
        .env_remove("RUST_LOG")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let running = tokio::task::spawn_blocking(move || {
        std::io::BufRead::lines(std::io::BufReader::new(stderr))
            .map_while(Result::ok)
            .find(|l| l.contains("tidings running"))
    });
    let line = tokio::time::timeout(std::time::Duration::from_secs(30), running).await;
    let _ = child.kill();
    let _ = child.wait();
    let line = line.expect("a log line within 30 s").unwrap();
    assert!(line.is_some_and(|l| l.contains("INFO")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_says_what_it_serves_where_and_what_is_off() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &[], "");
    let daemon = Daemon::start(&config, &[], &[]);
    let web = daemon.address("web listener").await;
    let admin = daemon.address("admin listener").await;
    assert_ne!(web, admin);
    let line = daemon
        .wait_log("/admin off", |l| l.contains("/admin") && l.contains("off"))
        .await;
    assert!(
        line.contains("TIDINGS_ADMIN_TOKEN"),
        "says how to turn it on: {line}"
    );
    drop(daemon);

    let daemon = Daemon::start(
        &config,
        &[],
        &[("TIDINGS_ADMIN_TOKEN", "a-long-enough-admin-password")],
    );
    let web = daemon.address("web listener").await;
    let line = daemon
        .wait_log("/admin on", |l| l.contains(&format!("http://{web}/admin")))
        .await;
    assert!(!line.contains("off"), "{line}");
    // Where an admin reaches it: the public address, not 0.0.0.0 or the listener's.
    assert!(line.contains("url=http://localhost:8080/admin"), "{line}");

    // Listeners turned off say so.
    let quiet = tempfile::tempdir().unwrap();
    let config = quiet.path().join("config.toml");
    std::fs::write(
        &config,
        "[web]\nlisten = \"\"\n[service]\nadmin_listen = \"\"\n",
    )
    .unwrap();
    let daemon = Daemon::start(&config, &[], &[]);
    daemon
        .wait_log("web off", |l| l.contains("web listener off"))
        .await;
    daemon
        .wait_log("admin off", |l| l.contains("admin listener off"))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_good_reload_says_what_changed_even_after_a_failed_one() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &[("a", &[])], "");
    let daemon = Daemon::start(&config, &[], &[]);
    daemon
        .wait_log("running", |l| l.contains("tidings running"))
        .await;
    let reloads = || {
        daemon
            .log()
            .lines()
            .filter(|l| l.contains("config reloaded"))
            .map(String::from)
            .collect::<Vec<_>>()
    };

    // A feed added and [poll] changed: both named.
    let good = write_config(
        dir.path(),
        &[("a", &[]), ("b", &[])],
        "[mail]\nmax_age = \"2d\"\n",
    );
    let good_text = std::fs::read_to_string(&good).unwrap();
    let line = daemon
        .wait_log("reloaded", |l| l.contains("config reloaded"))
        .await;
    assert!(
        line.contains("added=b") && line.contains("settings=mail"),
        "{line}"
    );

    // A broken file, then the good one back as it was: that reload is logged too.
    std::fs::write(&config, format!("bogus = 1\n{good_text}")).unwrap();
    daemon
        .wait_log("reload failed", |l| l.contains("config reload failed"))
        .await;
    std::fs::write(&config, &good_text).unwrap();
    let started = std::time::Instant::now();
    while reloads().len() < 2 {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(30),
            "no second \"config reloaded\"; log:\n{}",
            daemon.log()
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let again = &reloads()[1];
    assert!(
        again.contains("added= ") && again.contains("settings="),
        "nothing changed since the last good config: {again}"
    );
}

#[test]
fn check_config_reports_every_problem_in_file_order_even_after_an_unknown_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    std::fs::write(
        &path,
        "[poll]\nconcurrency = \"many\"\n\
         [[feeds]]\nid = \"a\"\nurl = \"https://a.example/feed\"\n\
         [[feeds]]\nid = \"a\"\nurl = \"not a url\"\ncolour = \"red\"\n\
         [digest]\ntimezone = \"Mars/Base\"\n\
         [mail]\nbogus = 1\n",
    )
    .unwrap();
    let out = tidings(&["check-config", "--config", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = text(&out.stderr);
    let expected = [
        "config.toml:2:15: invalid type: string \"many\", expected u32",
        "config.toml:7:6: duplicate feed id \"a\" (first used on line 4)",
        "config.toml:8:7: feed \"a\": bad url",
        "config.toml:9:1: unknown field `colour`",
        "config.toml:11:12: `digest.timezone`: unknown time zone",
        "config.toml:13:1: unknown field `bogus`",
    ];
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(
        lines.len(),
        expected.len(),
        "one line per problem:\n{stderr}"
    );
    for (line, expected) in lines.iter().zip(expected) {
        assert!(line.contains(expected), "{expected:?} in order:\n{stderr}");
    }
}

#[test]
fn subscriber_add_refuses_feeds_and_tags_that_do_not_exist_and_lists_those_that_do() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &[("a", &["official"]), ("b", &["us"])], "");
    let config = config.to_str().unwrap();
    let add = |query: &str| {
        tidings(&[
            "subscriber",
            "add",
            "ana@example.org",
            "-q",
            query,
            "--config",
            config,
        ])
    };
    for (query, message) in [
        ("feed:nope", "unknown feed \"nope\" (feeds: a, b)"),
        (
            "asylum tag:nosuchtag",
            "unknown tag \"nosuchtag\" (tags: official, us)",
        ),
        ("asylum -feed:gone", "unknown feed \"gone\""),
    ] {
        let out = add(query);
        assert_eq!(out.status.code(), Some(2), "{query}: refused");
        let stderr = text(&out.stderr);
        assert!(stderr.contains(message), "{query}: {message:?} in {stderr}");
    }
    // Compared as the matcher compares them: any case.
    let out = add("feed:A tag:Official asylum");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let list = tidings(&["subscriber", "list", "--config", config]);
    let listed = text(&list.stdout);
    assert!(listed.contains("feed:A tag:Official asylum"), "{listed}");
    assert!(
        !listed.contains("nope") && !listed.contains("gone"),
        "{listed}"
    );
}

/// The subscriber pages of an app on `config`, served on loopback; stops when dropped.
async fn serve_pages(app: &tidings::App) -> (String, tokio_util::sync::DropGuard) {
    let (tx, rx) = tokio::sync::watch::channel(app.clone());
    std::mem::forget(tx);
    let stop = tokio_util::sync::CancellationToken::new();
    let addr = tidings::web::serve("127.0.0.1:0".parse().unwrap(), rx, stop.clone())
        .await
        .unwrap();
    (format!("http://{addr}"), stop.drop_guard())
}

async fn post(url: &str, form: &[(&str, &str)]) -> (u16, String) {
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let response = client.post(url).form(form).send().await.unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_up_and_manage_pages_refuse_feeds_and_tags_that_do_not_exist() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &[("a", &["official"]), ("b", &["us"])], "");
    let app = tidings::App::open(tidings::Config::load(&config).unwrap())
        .await
        .unwrap();
    let (base, _stop) = serve_pages(&app).await;
    let html = |s: &str| s.replace('"', "&quot;");

    // Sign-up: each bad search named, with the feeds or tags there are.
    let (_, page) = get(&format!("{base}/")).await;
    let marker = "name=\"csrf\" value=\"";
    let start = page.find(marker).unwrap() + marker.len();
    let csrf = page[start..].split('"').next().unwrap().to_string();
    let (status, page) = post(
        &format!("{base}/subscribe"),
        &[
            ("csrf", &csrf),
            ("email", "zoe@example.org"),
            ("queries", "asylum\nfeed:nope\ntag:nosuchtag visa"),
            ("frequency", "daily"),
            ("tz", "Europe/London"),
            ("action", "subscribe"),
        ],
    )
    .await;
    assert_eq!(status, 400, "{page}");
    for words in [
        "Search 2 (feed:nope): unknown feed \"nope\" (feeds: a, b)",
        "Search 3 (tag:nosuchtag visa): unknown tag \"nosuchtag\" (tags: official, us)",
    ] {
        assert!(page.contains(&html(words)), "{words}: {page}");
    }
    assert!(!page.contains("Search 1"), "asylum is fine: {page}");

    // Manage page: refused with the same words; a known one (any case) is added.
    let now = chrono::Utc::now();
    let schedule = tidings::digest::Schedule::parse("daily", app.config.digest.daily_at).unwrap();
    app.store
        .add_subscription("ana@example.org", "asylum", schedule, chrono_tz::UTC, now)
        .await
        .unwrap();
    let ana = app
        .store
        .subscriber("ana@example.org")
        .await
        .unwrap()
        .unwrap();
    let manage = url::Url::parse(&app.links.manage_url(ana.id, &ana.email))
        .unwrap()
        .path()
        .to_string();
    let csrf = app.links.csrf_token(ana.id, &ana.email);
    let add = format!("{base}{manage}/add");
    let (status, page) = post(&add, &[("query", "tag:nosuchtag"), ("csrf", &csrf)]).await;
    assert_eq!(status, 400, "{page}");
    let words = "That search does not work: unknown tag \"nosuchtag\" (tags: official, us)";
    assert!(page.contains(&html(words)), "{page}");
    let (status, _) = post(&add, &[("query", "feed:B visa"), ("csrf", &csrf)]).await;
    assert_eq!(status, 303);
    let queries = app
        .store
        .subscriber("ana@example.org")
        .await
        .unwrap()
        .unwrap()
        .queries;
    assert_eq!(queries, ["asylum", "feed:B visa"]);
}

/// Subscribes through the CLI, as an admin would.
fn subscribe(config: &Path, email: &str, query: &str) {
    let out = tidings(&[
        "subscriber",
        "add",
        email,
        "-q",
        query,
        "--config",
        config.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{query}: {}", text(&out.stderr));
}

#[test]
fn check_config_warns_of_stored_searches_naming_removed_feeds_and_tags() {
    let dir = tempfile::tempdir().unwrap();
    // No database yet: nothing to check, and none is created.
    let config = write_config(dir.path(), &[("a", &[]), ("b", &["official"])], "");
    let out = tidings(&["check-config", "--config", config.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stderr), "");
    assert!(
        !dir.path().join("tidings.db").exists(),
        "check-config created the database"
    );

    subscribe(&config, "ana@example.org", "feed:b asylum");
    subscribe(&config, "ana@example.org", "asylum");
    subscribe(&config, "ben@example.org", "tag:official visa");
    subscribe(&config, "ben@example.org", "feed:a");
    let out = tidings(&["check-config", "--config", config.to_str().unwrap()]);
    assert!(out.status.success());
    assert_eq!(text(&out.stderr), "", "every search names what exists");

    // Feed b (the only one tagged official) removed: a warning per search it leaves
    // dangling, naming subscriber, search and what is missing; the config is still valid.
    let config = write_config(dir.path(), &[("a", &[])], "");
    let out = tidings(&["check-config", "--config", config.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "warnings, not errors");
    let stderr = text(&out.stderr);
    let warnings: Vec<&str> = stderr.lines().collect();
    assert_eq!(warnings.len(), 2, "{stderr}");
    assert!(
        warnings[0].starts_with("warning: ")
            && warnings[0].contains("\"feed:b asylum\" of ana@example.org names feed:b"),
        "{stderr}"
    );
    assert!(
        warnings[1].contains("\"tag:official visa\" of ben@example.org names tag:official"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_names_searches_left_dangling_at_start_and_after_a_reload() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &[("a", &[]), ("b", &["official"])], "");
    subscribe(&config, "ana@example.org", "feed:b asylum");
    subscribe(&config, "ben@example.org", "tag:official -feed:a");
    subscribe(&config, "ben@example.org", "visa");
    let dangling = |l: &str| l.contains("WARN") && l.contains("names a feed or tag");

    let daemon = Daemon::start(&config, &[], &[]);
    daemon
        .wait_log("running", |l| l.contains("tidings running"))
        .await;
    write_config(dir.path(), &[("a", &[])], "");
    daemon
        .wait_log("reloaded", |l| l.contains("config reloaded"))
        .await;
    let ana = daemon
        .wait_log("ana's search", |l| {
            dangling(l) && l.contains("ana@example.org")
        })
        .await;
    assert!(
        ana.contains("feed:b asylum") && ana.contains("feed:b"),
        "{ana}"
    );
    let ben = daemon
        .wait_log("ben's search", |l| {
            dangling(l) && l.contains("ben@example.org")
        })
        .await;
    assert!(ben.contains("tag:official -feed:a"), "{ben}");
    let log = daemon.log();
    let before_reload = &log[..log.find("config reloaded").unwrap()];
    assert!(
        !before_reload.lines().any(dangling),
        "nothing dangled at start:\n{log}"
    );
    assert!(
        !log.lines()
            .any(|l| dangling(l) && l.contains("search=\"visa\"")),
        "{log}"
    );
    drop(daemon);

    // At the next start, the same.
    let daemon = Daemon::start(&config, &[], &[]);
    daemon
        .wait_log("at start", |l| dangling(l) && l.contains("ana@example.org"))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_page_lists_searches_naming_feeds_or_tags_the_config_does_not_have() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &[("a", &[]), ("b", &["official"])], "");
    subscribe(&config, "ana@example.org", "feed:b asylum");
    subscribe(&config, "ana@example.org", "asylum");
    subscribe(&config, "ben@example.org", "tag:official <b>visa</b>");
    let mut app = tidings::App::open(tidings::Config::load(&config).unwrap())
        .await
        .unwrap();
    app.admin_token = Some("a-long-enough-admin-password".into());
    let admin_page = |base: String| async move {
        let response = reqwest::Client::new()
            .get(format!("{base}/admin"))
            .basic_auth("admin", Some("a-long-enough-admin-password"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        response.text().await.unwrap()
    };
    let (base, stop) = serve_pages(&app).await;
    let page = admin_page(base).await;
    let section = |page: &str| {
        let start = page.find("Searches naming missing feeds or tags").unwrap();
        let rest = &page[start..];
        rest[..rest[4..].find("<h2>").map_or(rest.len(), |end| end + 4)].to_string()
    };
    assert!(section(&page).contains("None."), "{page}");
    drop(stop);

    // Feed b removed by a reload.
    let config = write_config(dir.path(), &[("a", &[])], "");
    let app = app
        .reconfigure(tidings::Config::load(&config).unwrap())
        .await
        .unwrap();
    let (base, _stop) = serve_pages(&app).await;
    let page = admin_page(base).await;
    let section = &section(&page);
    for words in [
        "ana@example.org",
        "<code>feed:b asylum</code>",
        "feed:b",
        "ben@example.org",
        "<code>tag:official &lt;b&gt;visa&lt;/b&gt;</code>",
        "tag:official",
    ] {
        assert!(section.contains(words), "{words} in:\n{section}");
    }
    assert!(!section.contains("<code>asylum</code>"), "{section}");
}

/// However many searches dangle, the admin page lists a hundred and counts the rest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_page_lists_a_hundred_dangling_searches_and_counts_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &[("a", &[]), ("b", &[])], "");
    let mut app = tidings::App::open(tidings::Config::load(&config).unwrap())
        .await
        .unwrap();
    let schedule = tidings::digest::Schedule::parse("daily", app.config.digest.daily_at).unwrap();
    let now = chrono::Utc::now();
    for i in 0..105 {
        app.store
            .add_subscription(
                &format!("s{i:03}@example.org"),
                "feed:b",
                schedule,
                chrono_tz::UTC,
                now,
            )
            .await
            .unwrap();
    }
    let config = write_config(dir.path(), &[("a", &[])], "");
    app = app
        .reconfigure(tidings::Config::load(&config).unwrap())
        .await
        .unwrap();
    app.admin_token = Some("a-long-enough-admin-password".into());
    let (base, _stop) = serve_pages(&app).await;
    let page = reqwest::Client::new()
        .get(format!("{base}/admin"))
        .basic_auth("admin", Some("a-long-enough-admin-password"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let start = page.find("Searches naming missing feeds or tags").unwrap();
    let section = &page[start..start + page[start..].find("Destinations beside email").unwrap()];
    assert_eq!(
        section.matches("<code>feed:b</code>").count(),
        100,
        "{section}"
    );
    assert!(section.contains("And 5 more"), "{section}");
}
