//! An attack on issue 13 (searches naming unknown feeds or tags, check-config reporting
//! every problem); its findings about the pages, the base URL, the browser test and CI
//! are in attack_13_web.rs. Each test is named for the behaviour it expects and failed
//! on the code it was written against. Loopback only: every server is on 127.0.0.1.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use reqwest::StatusCode;
use tidings::App;
use tidings::config::Config;
use tidings::matcher::Query;

fn tidings(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tidings"))
        .args(args)
        .env_remove("TIDINGS_CONFIG")
        .env_remove("TIDINGS_BASE_URL")
        .env_remove("TIDINGS_LOG")
        .env_remove("RUST_LOG")
        .output()
        .expect("run tidings")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A config text with `n` valid feeds (ids `feed-0`…, each tagged), under `head`.
fn many_feeds(head: &str, n: usize) -> String {
    let mut text = format!("{head}\n");
    for i in 0..n {
        text.push_str(&format!(
            "[[feeds]]\nid = \"feed-{i}\"\nname = \"Feed number {i}\"\n\
             url = \"http://127.0.0.1:1/feed/{i}.xml\"\ntags = [\"news\", \"t{}\"]\n\n",
            i % 50
        ));
    }
    text
}

// ---- check-config: every problem, by position ---------------------------------------------

/// A value of the wrong type is one problem, not two: once left out of the document it
/// must not also be reported as a missing required key (`id`, `url`, `mail.smtp.host`).
#[test]
fn a_required_value_of_the_wrong_type_is_not_also_reported_missing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    std::fs::write(
        &path,
        "[mail]\ntransport = \"smtp\"\n[mail.smtp]\nhost = 1\n\
         [[feeds]]\nid = 5\nurl = \"http://127.0.0.1:1/a\"\n\
         [[feeds]]\nid = \"b\"\nurl = 7\n",
    )
    .unwrap();
    let out = tidings(&["check-config", "-c", path.to_str().unwrap()]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert_eq!(
        err.matches("invalid type").count(),
        3,
        "each bad value reported: {err}"
    );
    assert!(
        !err.contains("missing field"),
        "a key that is there, with the wrong type, is not missing: {err}"
    );
}

/// Problems speak the file's language: no Rust type names (`struct RawFeed`, `RawWeb with
/// 7 elements`) that the user never wrote.
#[test]
fn config_problems_never_name_internal_types() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    std::fs::write(&path, "poll = 3\nweb = []\nfeeds = [1]\n").unwrap();
    let out = tidings(&["check-config", "-c", path.to_str().unwrap()]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert_eq!(err.lines().count(), 3, "{err}");
    for internal in ["Raw", "struct", "elements"] {
        assert!(!err.contains(internal), "{internal:?} in: {err}");
    }
}

/// Exactly 100 problems are all the problems: check-config must not claim it stopped
/// early ("stopped after 100 problems") when there was nothing more to find.
#[test]
fn exactly_one_hundred_problems_are_not_reported_as_stopping_early() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    let keys: String = (0..100).map(|i| format!("k{i} = 1\n")).collect();
    std::fs::write(&path, format!("[poll]\n{keys}")).unwrap();
    let out = tidings(&["check-config", "-c", path.to_str().unwrap()]);
    let err = stderr(&out);
    assert_eq!(err.matches("unknown field").count(), 100, "{err}");
    assert!(
        !err.contains("stopped after"),
        "all 100 were found: {}",
        err.lines().last().unwrap_or("")
    );
}

// ---- check-config and the database -------------------------------------------------------

/// A folder with a config naming feed `uscis`, and a database holding a search for it.
fn config_and_database() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    std::fs::write(
        &path,
        "database = \"t.db\"\n[web]\nlisten = \"\"\n[service]\nadmin_listen = \"\"\n\
         [[feeds]]\nid = \"uscis\"\nurl = \"http://127.0.0.1:1/a\"\n",
    )
    .unwrap();
    let out = tidings(&[
        "subscriber",
        "add",
        "ana@example.org",
        "--query",
        "feed:uscis",
        "-c",
        path.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    (dir, path)
}

/// check-config only looks: with no daemon running it leaves the database's folder as
/// it found it. It left `t.db-wal` and a 32 KiB `t.db-shm` behind (a read-only SQLite
/// connection to a WAL database creates them and cannot remove them).
#[test]
fn check_config_leaves_no_wal_or_shm_files_beside_the_database() {
    let (dir, path) = config_and_database();
    let before: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(
        !dir.path().join("t.db-shm").exists(),
        "clean before: {before:?}"
    );
    let out = tidings(&["check-config", "-c", path.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    for leftover in ["t.db-wal", "t.db-shm"] {
        assert!(
            !dir.path().join(leftover).exists(),
            "check-config created {leftover}"
        );
    }
}

/// A database from a newer Tidings is not one `tidings run` migrates (run refuses it:
/// "migration number that is too high"); check-config must not say it will.
#[test]
fn check_config_on_a_newer_schema_does_not_promise_a_migration() {
    let (dir, path) = config_and_database();
    let db = rusqlite::Connection::open(dir.path().join("t.db")).unwrap();
    db.pragma_update(None, "user_version", 99).unwrap();
    drop(db);
    let out = tidings(&["check-config", "-c", path.to_str().unwrap()]);
    let err = stderr(&out);
    assert!(err.contains("99"), "{err}");
    assert!(
        !err.contains("migrates it"),
        "`tidings run` cannot migrate a newer database: {err}"
    );
}

// ---- unknown feeds and tags -----------------------------------------------------------------

/// Refusing `feed:nope` helps by naming a few feeds, not all of them: with 10,000 feeds
/// the message was ~120 KB (every id, then every tag).
#[test]
fn an_unknown_feed_error_names_a_bounded_number_of_known_feeds() {
    let text = many_feeds("database = \"t.db\"", 2_000);
    let config = Config::parse(&text, Path::new("/etc/tidings/config.toml")).unwrap();
    let query = Query::parse("feed:nope tag:nada").unwrap();
    let message = config.check_scopes(&query).unwrap_err();
    assert!(message.contains("\"nope\"") && message.contains("\"nada\""));
    assert!(
        message.len() < 2_000,
        "a {} byte message: {}…",
        message.len(),
        &message[..200]
    );
}

/// The public sign-up form answers a 150-byte post naming unknown feeds with a page of
/// bounded size. It repeated every feed id and tag once per search: 10 searches over
/// 3,000 feeds made a 1.45 MB page, an amplification anyone can ask for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sign_up_naming_unknown_feeds_gets_a_page_of_bounded_size() {
    let dir = tempfile::tempdir().unwrap();
    let ids: Vec<String> = (0..1_000)
        .map(|i| format!("a-rather-long-feed-identifier-{i}"))
        .collect();
    let feeds: Vec<(&str, String)> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| (id.as_str(), format!("http://127.0.0.1:1/f/{i}")))
        .collect();
    let config = support::write_config(dir.path(), &feeds, 25);
    let site = support::Site::start(App::open(config).await.unwrap()).await;
    let csrf = site.form_csrf().await;
    let queries: Vec<String> = (0..10).map(|i| format!("feed:x{i} asylum")).collect();
    let (status, page) = site
        .post(
            "/subscribe",
            &[
                ("csrf", &csrf),
                ("email", "zoe@example.org"),
                ("queries", &queries.join("\n")),
                ("frequency", "daily"),
                ("tz", "UTC"),
                ("action", "subscribe"),
            ],
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(page.contains("x9"), "every unknown feed is named");
    assert!(
        page.len() < 64 * 1024,
        "a {} byte page for a {} byte form",
        page.len(),
        queries.join("\n").len()
    );
}
