//! Findings of the attack on issue 13 about the subscriber pages, the public base URL,
//! the browser test's listing and CI's summary line. Each test is named for the
//! behaviour it expects. Loopback only: every server is on 127.0.0.1.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use reqwest::StatusCode;
use tidings::App;
use tidings::config::Config;

/// zoe@example.org signs up for `queries` on a site with feeds alpha and beta; then the
/// operator removes alpha and reloads. Returns the site, the reloaded App and the path of
/// the confirmation link (with the temp dir and SMTP server, to keep them alive).
async fn signed_up_then_feed_alpha_removed(
    queries: &str,
) -> (
    tempfile::TempDir,
    support::SmtpServer,
    support::Site,
    App,
    String,
) {
    let smtp = support::SmtpServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let feeds = [
        ("alpha", "http://127.0.0.1:1/alpha".to_string()),
        ("beta", "http://127.0.0.1:1/beta".to_string()),
    ];
    let config = support::write_config(dir.path(), &feeds, smtp.port());
    let site = support::Site::start(App::open(config).await.unwrap()).await;
    let confirm = site.sign_up(&smtp, 1, "zoe@example.org", queries).await;

    let config = support::write_config(dir.path(), &feeds[1..], smtp.port());
    let reloaded = App::open(config).await.unwrap();
    site.tx.send_replace(reloaded.clone());
    (dir, smtp, site, reloaded, confirm)
}

/// A sign-up confirmed after a reload removed the feed it names does not slip in a
/// search that sign-up and the manage page would refuse: confirming re-checks the
/// searches against the config of the time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn confirming_a_sign_up_after_its_feed_was_removed_stores_no_dangling_search() {
    let (_dir, _smtp, site, reloaded, confirm) =
        signed_up_then_feed_alpha_removed("feed:alpha\nasylum").await;

    let (status, page) = site.post(&confirm, &[]).await;
    assert!(status.is_success(), "{status}: {page}");
    assert!(
        page.contains("Not added: feed:alpha: unknown feed"),
        "the page says which search was left out: {page}"
    );
    let zoe = reloaded
        .store
        .subscriber("zoe@example.org")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(zoe.queries, ["asylum"], "the other search is kept");
    let subscribers = reloaded.store.subscribers().await.unwrap();
    let dangling = tidings::pipeline::dangling_searches(&reloaded.config, &subscribers);
    assert!(
        dangling.is_empty(),
        "confirming stored {:?} (the page said it subscribed: {})",
        dangling.iter().map(ToString::to_string).collect::<Vec<_>>(),
        page.contains("You are subscribed")
    );
}

// ---- the public base URL -------------------------------------------------------------------

/// The local links (`href`, `action`, `src`) of an HTML page that start with '/'.
fn local_links(page: &str) -> Vec<String> {
    let mut links = Vec::new();
    for attr in ["href=\"", "action=\"", "src=\""] {
        for (at, _) in page.match_indices(attr) {
            let rest = &page[at + attr.len()..];
            let value = rest.split('"').next().unwrap_or("");
            if value.starts_with('/') {
                links.push(value.to_string());
            }
        }
    }
    links
}

/// With a public address under a path (`base_url = "https://x.org/tidings"`, a proxy
/// passing `/tidings/…` on as `/…`), every link and form of a page must carry that path
/// as the mail's links do. The manage page linked `/tidings/unsubscribe/…` and
/// `/tidings/feed/…` but posted its forms to `/manage/…/add` and loaded `/style.css`; the
/// unsubscribe page posted to `/unsubscribe/…` and linked `/tidings/manage/…`. Whichever
/// way the proxy is set up, half of each page is broken.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_base_url_with_a_path_gives_pages_whose_links_and_forms_all_carry_it() {
    let dir = tempfile::tempdir().unwrap();
    let config = support::write_config_with(
        dir.path(),
        &[("uscis", "http://127.0.0.1:1/a".to_string())],
        25,
        "",
        "[web]\nbase_url = \"https://x.org/tidings\"\n",
    );
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
    let manage = app.links.manage_url(ana.id, &ana.email);
    let unsubscribe = app.links.unsubscribe_url(ana.id, &ana.email);
    assert!(
        manage.starts_with("https://x.org/tidings/manage/"),
        "{manage}"
    );
    let site = support::Site::start(app).await;

    let mut wrong = Vec::new();
    for url in [manage, unsubscribe] {
        // What the proxy passes on.
        let path = url.trim_start_matches("https://x.org/tidings");
        let (status, page) = site.get(path).await;
        assert_eq!(status, StatusCode::OK, "{path}: {page}");
        let links = local_links(&page);
        assert!(!links.is_empty());
        wrong.extend(
            links
                .into_iter()
                .filter(|l| !l.starts_with("/tidings/"))
                .map(|l| format!("{path}: {l}")),
        );
    }
    assert!(
        wrong.is_empty(),
        "links without the base URL's path: {wrong:#?}"
    );
}

/// `[web] base_url` and `TIDINGS_BASE_URL` name where the pages are, nothing more: a
/// user name and password (mailed to every subscriber in every link, and printed by
/// check-config), a query or a fragment (glued after every token) are refused.
#[test]
fn a_base_url_with_credentials_query_or_fragment_is_refused() {
    let path = Path::new("/etc/tidings/config.toml");
    let mut accepted = Vec::new();
    for url in [
        "https://user:secret@x.org/",
        "https://x.org/?utm_source=mail",
        "https://x.org/#top",
    ] {
        let text = format!("[web]\nbase_url = \"{url}\"\n");
        if Config::parse(&text, path).is_ok() {
            accepted.push(format!("[web] base_url = {url:?}"));
        }
        let mut config = Config::parse("", path).unwrap();
        if config
            .override_from(|name| (name == "TIDINGS_BASE_URL").then(|| url.to_string()))
            .is_ok()
        {
            accepted.push(format!("TIDINGS_BASE_URL={url}"));
        }
    }
    assert!(accepted.is_empty(), "accepted: {accepted:#?}");
}

// ---- the browser test and CI ---------------------------------------------------------------

/// The browser test binary beside this one (built by the same `cargo test`).
fn browser_test_binary() -> PathBuf {
    let deps = std::env::current_exe()
        .unwrap()
        .parent()
        .unwrap()
        .to_path_buf();
    std::fs::read_dir(&deps)
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy();
            name.starts_with("browser-") && p.extension().is_none()
        })
        .max_by_key(|p| p.metadata().and_then(|m| m.modified()).ok())
        .unwrap_or_else(|| {
            panic!(
                "no browser test binary in {} (cargo test builds it)",
                deps.display()
            )
        })
}

/// `--list --format terse` is a machine-read format (cargo-nextest reads it): one
/// `name: test` line per test. Without chromedriver the browser test printed its
/// "browser test ignored: …" notice into that listing.
#[test]
fn listing_the_browser_test_prints_only_test_names() {
    let empty = tempfile::tempdir().unwrap();
    let out = Command::new(browser_test_binary())
        .args(["--list", "--format", "terse"])
        .env("PATH", empty.path())
        .env_remove("TIDINGS_REQUIRE_BROWSER")
        .output()
        .unwrap();
    assert!(out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    let odd: Vec<&str> = stdout
        .lines()
        .filter(|l| !l.is_empty() && !l.ends_with(": test"))
        .collect();
    assert!(odd.is_empty(), "not a listing: {odd:?}");
    assert!(stdout.contains("in_a_real_browser: test"), "{stdout}");
}

/// .ci/run ends with "tests: N passed, N failed, N ignored", all binaries added up. With
/// `set -e` and `pipefail`, a failing `cargo test` ended the script before that line, so
/// it could only ever say "0 failed". Here a stand-in `cargo` fails one test.
#[test]
fn ci_run_prints_its_summary_line_when_tests_fail() {
    let bin = tempfile::tempdir().unwrap();
    let cargo = bin.path().join("cargo");
    std::fs::write(
        &cargo,
        "#!/bin/sh\n\
         if [ \"$1\" = test ]; then\n\
         echo 'running 3 tests'\n\
         echo 'test result: FAILED. 2 passed; 1 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.01s'\n\
         exit 101\n\
         fi\n\
         exit 0\n",
    )
    .unwrap();
    std::fs::write(bin.path().join("cargo-fuzz"), "#!/bin/sh\nexit 0\n").unwrap();
    std::fs::write(bin.path().join("chromedriver"), "#!/bin/sh\nexit 0\n").unwrap();
    for name in ["cargo", "cargo-fuzz", "chromedriver"] {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(
            bin.path().join(name),
            std::fs::Permissions::from_mode(0o755),
        )
        .unwrap();
    }
    let path = format!(
        "{}:{}",
        bin.path().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = Command::new("bash")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join(".ci/run"))
        .env("PATH", path)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "a failing test fails the run");
    assert!(
        stdout.contains("tests: 2 passed, 1 failed, 0 ignored"),
        "no summary line in {stdout:?}"
    );
}

/// When a reload left none of a sign-up's searches able to match, confirming creates no
/// subscriber (one who would never get anything) and says why, naming the searches.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn confirming_a_sign_up_whose_every_search_lost_its_feed_subscribes_nobody() {
    let (_dir, _smtp, site, reloaded, confirm) =
        signed_up_then_feed_alpha_removed("feed:alpha asylum").await;

    let (status, page) = site.post(&confirm, &[]).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{page}");
    assert!(
        page.contains("None of your searches could be added"),
        "{page}"
    );
    assert!(page.contains("feed:alpha asylum"), "{page}");
    assert_eq!(
        reloaded.store.subscriber("zoe@example.org").await.unwrap(),
        None
    );
}
