//! Second attack on issue 13's fixes (health, `--query`, pages under a base URL path,
//! confirming sign-ups, base URL validation, config loading, check-config's database
//! connection). Each test is named for the behaviour it expects and failed when written.
//! Loopback only: every server is on 127.0.0.1.

mod support;

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use reqwest::StatusCode;
use tidings::App;
use tidings::config::Config;

fn tidings(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tidings"))
        .args(args)
        .env_remove("TIDINGS_CONFIG")
        .env_remove("TIDINGS_LOG")
        .env_remove("RUST_LOG")
        .env_remove("TIDINGS_BASE_URL")
        .stdin(Stdio::null())
        .output()
        .expect("run tidings")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Every `href`, `action` and `src` value of an HTML page.
fn links(page: &str) -> Vec<String> {
    let mut links = Vec::new();
    for attr in ["href=\"", "action=\"", "src=\""] {
        for (at, _) in page.match_indices(attr) {
            let rest = &page[at + attr.len()..];
            links.push(rest.split('"').next().unwrap_or("").to_string());
        }
    }
    links
}

// ---- a base URL whose path starts with "//" ------------------------------------------------

/// `base_url = "https://x.org//evil.example/"` (a doubled slash, or `https://x.org/\evil…`,
/// which the URL parser turns into the same) is accepted, and its path `//evil.example/`
/// becomes the root of every page: `href="//evil.example/style.css"`, the sign-up form's
/// `action="//evil.example/subscribe"`, and after a change on the manage page
/// `Location: //evil.example/manage/TOKEN?done=added`. A path starting with `//` is a
/// network-path reference: browsers load the style sheet from, post the sign-up form
/// (address, searches) to, and send the manage token to the host `evil.example`.
/// Either such a base URL is refused, or the pages' links stay on this host.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_base_url_path_starting_with_two_slashes_never_sends_a_browser_to_another_host() {
    let dir = tempfile::tempdir().unwrap();
    let loaded = support::write_config_with(
        dir.path(),
        &[("uscis", "http://127.0.0.1:1/a".to_string())],
        25,
        "",
        "[web]\nbase_url = \"https://x.org/tidings/\"\n",
    );
    let text = std::fs::read_to_string(&loaded.path)
        .unwrap()
        .replace("https://x.org/tidings/", "https://x.org//evil.example/");
    std::fs::write(&loaded.path, text).unwrap();
    let Ok(config) = Config::load(&loaded.path) else {
        return; // refused: fine
    };
    let app = App::open(config).await.unwrap();
    support::subscribe(
        &app,
        "ana@example.org",
        "asylum",
        "daily",
        chrono::Utc::now(),
    )
    .await;
    let ana = app
        .store
        .subscriber("ana@example.org")
        .await
        .unwrap()
        .unwrap();
    let manage_url = app.links.manage_url(ana.id, &ana.email);
    // What a proxy serving https://x.org//evil.example/ passes on.
    let manage = manage_url
        .strip_prefix("https://x.org//evil.example")
        .unwrap_or_else(|| panic!("{manage_url}"))
        .to_string();
    let site = support::Site::start(app).await;

    let mut elsewhere = Vec::new();
    for path in ["/", manage.as_str(), "/no-such-page"] {
        let (_, page) = site.get(path).await;
        elsewhere.extend(
            links(&page)
                .into_iter()
                .filter(|l| l.starts_with("//"))
                .map(|l| format!("{path}: {l}")),
        );
    }
    let (status, page) = site.get(&manage).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    let response = site
        .client
        .post(format!("{}{manage}/add", site.base))
        .form(&[
            ("csrf", support::csrf_of(&page).as_str()),
            ("query", "visa"),
        ])
        .send()
        .await
        .unwrap();
    assert!(response.status().is_redirection(), "{}", response.status());
    let location = response
        .headers()
        .get("location")
        .map(|l| l.to_str().unwrap().to_string())
        .unwrap_or_default();
    if location.starts_with("//") {
        elsewhere.push(format!("Location: {location}"));
    }
    assert!(
        elsewhere.is_empty(),
        "links and redirects that leave the host (network-path references):\n{}",
        elsewhere.join("\n")
    );
}

/// `TIDINGS_BASE_URL` goes through the same validation: a path starting with `//` is
/// refused there too, or made into one that does not name a host.
#[test]
fn tidings_base_url_with_a_path_starting_with_two_slashes_gives_no_network_path_root() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = support::write_config(dir.path(), &[], 25);
    for bad in [
        "https://x.org//evil.example/",
        "https://x.org/\\evil.example/",
    ] {
        let env = |name: &str| (name == "TIDINGS_BASE_URL").then(|| bad.to_string());
        if config.override_from(env).is_ok() {
            let root = config.web.base_url.path().to_string();
            assert!(
                !root.starts_with("//"),
                "TIDINGS_BASE_URL={bad}: pages' root {root:?} is a link to host {:?}",
                root.trim_start_matches('/').split('/').next().unwrap_or("")
            );
        }
    }
}

// ---- --query -- "-lottery visa" ------------------------------------------------------------

/// `--query -- '-lottery visa'` (the help's own example search after `--`) still gets
/// clap's tip "to pass '-l' as a value, use '-- -l'", which is what was typed: the
/// earlier fix is reached only when the search's first letter is a known short flag
/// (`-visa …`: `-v`), otherwise clap's unknown-argument error comes first.
#[test]
fn query_after_a_double_dash_gets_no_contradicting_tip_whatever_its_first_letter() {
    let dir = tempfile::tempdir().unwrap();
    let config = support::write_config(dir.path(), &[], 25);
    let config = config.path.to_string_lossy().into_owned();
    for search in ["-lottery visa", "-tourist visa", "-x y"] {
        let out = tidings(&[
            "--config",
            &config,
            "subscriber",
            "add",
            "ana@example.org",
            "--query",
            "--",
            search,
        ]);
        let stderr = text(&out.stderr);
        assert!(
            out.status.success() || !stderr.contains("use '-- -"),
            "--query -- {search:?}: the tip asks for what was typed:\n{stderr}"
        );
    }
}

// ---- dash-like characters in searches ------------------------------------------------------

/// `asylum −lottery` with a Unicode minus, en dash or em dash (what phones and word
/// processors make of "-", and what copying a search from a document gives) is read as
/// `asylum lottery`: the dash is dropped and the word becomes required, the opposite of
/// what was written, with no word of it on the CLI, the sign-up form or the manage page
/// (all use `Query::parse`). Either such a dash excludes like `-`, or the search is
/// refused saying to use `-`.
#[test]
fn a_word_after_a_unicode_dash_is_never_silently_required() {
    use tidings::matcher::{Document, Matcher, Query, Synonyms};
    let synonyms = Synonyms::new(Vec::new()).unwrap();
    let lottery = Document::new("Asylum and the lottery", "asylum lottery news");
    let mut inverted = Vec::new();
    for search in [
        "asylum \u{2212}lottery", // minus sign
        "asylum \u{2013}lottery", // en dash
        "asylum \u{2014}lottery", // em dash
    ] {
        let Ok(query) = Query::parse(search) else {
            continue; // refused: fine
        };
        let matcher = Matcher::new(vec![(1, query)], &synonyms);
        if !matcher.find_matches(&lottery).is_empty() {
            inverted.push(search);
        }
    }
    assert!(
        inverted.is_empty(),
        "searches meant to exclude `lottery` match only items with it: {inverted:?}"
    );
}

// ---- check-config and the database ---------------------------------------------------------

/// After the daemon stops uncleanly (SIGKILL, OOM, power loss) its last writes are in
/// `tidings.db-wal`. `check-config`, documented as read-only, is then the last connection
/// to close, and SQLite checkpoints on close: it writes the WAL into `tidings.db` (a 4 KB
/// file became 120 KB, new mtime) and deletes the WAL. `query_only` stops statements, not
/// the checkpoint on close (SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE would).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_config_after_an_unclean_stop_leaves_the_database_file_as_it_was() {
    let dir = tempfile::tempdir().unwrap();
    let config = support::write_config(dir.path(), &[], 25);
    let mut daemon = support::Daemon::start(&config.path, &[], &[]);
    daemon
        .wait_log("running", |l| l.contains("tidings running"))
        .await;
    daemon.signal("KILL");
    daemon.wait_exit(Duration::from_secs(10)).await;
    let db = config.database.sqlite_path().unwrap().to_path_buf();
    let wal = Path::new(&format!("{}-wal", db.display())).to_path_buf();
    assert!(
        wal.exists(),
        "the killed daemon left its WAL (else this test shows nothing)"
    );
    let before = std::fs::read(&db).unwrap();
    let mtime = std::fs::metadata(&db).unwrap().modified().unwrap();

    let out = tidings(&["--config", &config.path.to_string_lossy(), "check-config"]);
    assert!(out.status.success(), "{}", text(&out.stderr));

    let after = std::fs::read(&db).unwrap();
    assert!(
        before == after && std::fs::metadata(&db).unwrap().modified().unwrap() == mtime,
        "check-config wrote the database: {} bytes before, {} after; WAL still there: {}",
        before.len(),
        after.len(),
        wal.exists()
    );
}

// ---- config wording ------------------------------------------------------------------------

/// `[feeds]` (one table) or `feeds = "x"` instead of `[[feeds]]` is refused in serde's
/// words, "invalid type: map, expected a sequence", where the fix for issue 13 names
/// tables as the file does (`expected a [[feeds]] table` for an element of the array).
#[test]
fn feeds_written_as_one_table_is_refused_naming_the_feeds_array() {
    let dir = tempfile::tempdir().unwrap();
    let config = support::write_config(dir.path(), &[], 25);
    let original = std::fs::read_to_string(&config.path).unwrap();
    for (what, feeds) in [
        (
            "[feeds]",
            "[feeds]\nid = \"a\"\nurl = \"http://127.0.0.1:1/a\"\n",
        ),
        ("feeds = \"a\"", "feeds = \"a\"\n"),
    ] {
        std::fs::write(&config.path, format!("{feeds}{original}")).unwrap();
        let out = tidings(&["--config", &config.path.to_string_lossy(), "check-config"]);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{what}: {stderr}");
        assert!(
            stderr.contains("[[feeds]]") && !stderr.contains("sequence") && !stderr.contains("map"),
            "{what}: the problem is said in the file's words:\n{stderr}"
        );
    }
}

// ---- confirming sign-ups and the cap on searches -------------------------------------------

/// The manage page refuses a 26th search ("You have 25 searches, the most there can be"),
/// but confirming a sign-up adds its searches (up to 10) without looking at how many the
/// subscriber has: three sign-ups a day (the most mailed to one address) make 30 searches
/// on the first day, 30 more each day after. Confirming stops at the cap (or the sign-up
/// says so).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn confirming_sign_ups_never_takes_a_subscriber_past_the_most_searches_there_can_be() {
    let smtp = support::SmtpServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = support::write_config(
        dir.path(),
        &[("alpha", "http://127.0.0.1:1/alpha".to_string())],
        smtp.port(),
    );
    let app = App::open(config).await.unwrap();
    let store = app.store.clone();
    let site = support::Site::start(app).await;
    for round in 0..3 {
        let (_, page) = site.get("/").await;
        let queries: Vec<String> = (0..10).map(|i| format!("word{round}x{i}")).collect();
        let response = site
            .client
            .post(format!("{}/subscribe", site.base))
            .form(&[
                ("csrf", support::csrf_of(&page).as_str()),
                ("email", "zoe@example.org"),
                ("queries", queries.join("\n").as_str()),
                ("frequency", "daily"),
                ("tz", "UTC"),
                ("action", "subscribe"),
            ])
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK, "sign-up {round}");
    }
    let mails = smtp.wait_for(3, Duration::from_secs(20)).await;
    for received in &mails {
        let mail = support::decode(received);
        let confirm = mail
            .text
            .lines()
            .map(str::trim)
            .find(|l| l.starts_with("http://localhost:8080/confirm/"))
            .unwrap_or_else(|| panic!("no link in {}", mail.text))
            .trim_start_matches("http://localhost:8080")
            .to_string();
        let response = site
            .client
            .post(format!("{}{confirm}", site.base))
            .send()
            .await
            .unwrap();
        let _ = response.text().await;
    }
    let zoe = store.subscriber("zoe@example.org").await.unwrap().unwrap();
    assert!(
        zoe.queries.len() <= 25,
        "zoe has {} searches after confirming three sign-ups; the manage page allows 25",
        zoe.queries.len()
    );
}
