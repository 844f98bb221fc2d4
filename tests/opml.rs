//! `tidings feeds import` and `tidings feeds export` as an admin uses them: a reader's
//! OPML export merged into a commented config.toml, and feeds carried over to another
//! config through OPML.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use tidings::Config;

mod support;

const SHIPPED_CONFIG: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/config.toml");
const FEEDLY_EXPORT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/feedly-immigration.opml"
);
const MALFORMED: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/malformed.opml");

fn tidings(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tidings"))
        .args(args)
        .env_remove("TIDINGS_CONFIG")
        .env("TIDINGS_LOG", "warn")
        .output()
        .expect("run tidings")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A copy of the shipped config.toml in a fresh folder.
fn shipped_copy(dir: &Path) -> (PathBuf, String) {
    let original = std::fs::read_to_string(SHIPPED_CONFIG).unwrap();
    let path = dir.join("config.toml");
    std::fs::write(&path, &original).unwrap();
    (path, original)
}

fn import(config: &Path, opml: &str, extra: &[&str]) -> Output {
    let mut args = vec![
        "feeds",
        "import",
        opml,
        "--config",
        config.to_str().unwrap(),
    ];
    args.extend(extra);
    tidings(&args)
}

/// (id, name, url, tags) of every configured feed, sorted.
fn feed_set(config: &Config) -> Vec<(String, String, String, Vec<String>)> {
    let mut feeds: Vec<_> = config
        .feeds
        .iter()
        .map(|f| {
            (
                f.id.clone(),
                f.name.clone(),
                f.url.to_string(),
                f.tags.clone(),
            )
        })
        .collect();
    feeds.sort();
    feeds
}

#[test]
fn import_appends_feeds_and_keeps_every_comment() {
    let dir = tempfile::tempdir().unwrap();
    let (config, original) = shipped_copy(dir.path());
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o640)).unwrap();

    let out = import(&config, FEEDLY_EXPORT, &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(
        stdout.contains("imported 8 feeds, skipped 6")
            && stdout.contains("a running daemon reloads it"),
        "{stdout}"
    );
    for line in [
        "added federal-register-u-s-immigration: \"Federal Register: U.S. Immigration and Customs Enforcement\" https://www.federalregister.gov/api/v1/documents.rss?conditions%5Bagencies%5D%5B%5D=u-s-immigration-and-customs-enforcement&order=newest [immigration, us-official]",
        "added noticias-de-inmigracion: \"Noticias de inmigración\" https://www.univision.com/temas/inmigracion/rss\n",
        "skipped \"USCIS News Releases\" https://www.uscis.gov/news/rss-feed/59144: already in the config as uscis-news",
        "skipped \"UK Visas and Immigration - GOV.UK\" https://WWW.GOV.UK/government/organisations/uk-visas-and-immigration.atom: already in the config as govuk-visas",
        "skipped \"VisaVerge\" https://www.visaverge.com/feed/: already in the config as visaverge",
        "skipped \"DHS Press Releases\" https://www.dhs.gov/news-releases/press-releases/rss.xml: listed twice in the file (the same feed as dhs-press-releases)",
        "skipped \"Immigration Podcast (old app)\" feed://podcasts.example.org/immigration.xml: not an http(s) URL",
        "skipped \"Pasted by hand\" www.example.org/rss: not a URL (relative URL without a base)",
    ] {
        assert!(stderr.contains(line), "{line:?} in:\n{stderr}");
    }

    let new = std::fs::read_to_string(&config).unwrap();
    // The shipped feeds come last, so the whole old file is a prefix of the new one...
    assert!(new.starts_with(&original), "{new}");
    // ...and so every comment line is still there, in order.
    let comments: Vec<&str> = original.lines().filter(|l| l.starts_with('#')).collect();
    let mut new_lines = new.lines();
    for comment in &comments {
        assert!(
            new_lines.any(|l| l == *comment),
            "{comment:?} kept in order:\n{new}"
        );
    }
    assert!(comments.len() > 30, "the shipped config is commented");
    assert_eq!(
        std::fs::metadata(&config).unwrap().permissions().mode() & 0o777,
        0o640,
        "the file's permissions are kept"
    );

    let check = tidings(&["check-config", "--config", config.to_str().unwrap()]);
    assert!(check.status.success(), "{}", text(&check.stderr));
    assert!(
        text(&check.stdout).contains("feeds: 13"),
        "{}",
        text(&check.stdout)
    );

    let loaded = Config::load(&config).unwrap();
    let tags = |id: &str| {
        loaded
            .feed(id)
            .unwrap_or_else(|| panic!("{id}"))
            .tags
            .clone()
    };
    for (id, want) in [
        (
            "federal-register-u-s-immigration",
            vec!["immigration", "us-official"],
        ),
        (
            "federal-register-executive",
            vec!["immigration", "us-official"],
        ),
        // In two folders of the export: both are tags.
        (
            "dhs-press-releases",
            vec!["immigration", "us-official", "news-analysis"],
        ),
        ("immigration-rules-gov-uk", vec!["immigration", "uk"]),
        ("free-movement", vec!["immigration", "uk"]),
        // "visaverge" is taken by the shipped feed with another URL.
        ("visaverge-2", vec!["news-analysis"]),
        ("boundless-immigration-blog", vec!["news-analysis"]),
        ("noticias-de-inmigracion", vec![]),
        ("uscis-news", vec!["us", "official"]),
    ] {
        assert_eq!(tags(id), want, "{id}");
    }
    assert_eq!(
        loaded.feed("visaverge-2").unwrap().url.as_str(),
        "https://www.visaverge.com/category/immigration/feed/"
    );

    // The same file again adds nothing and leaves the file as it is.
    let again = import(&config, FEEDLY_EXPORT, &[]);
    assert!(again.status.success(), "{}", text(&again.stderr));
    assert!(
        text(&again.stdout).contains("imported 0 feeds, skipped 14"),
        "{}",
        text(&again.stdout)
    );
    assert!(
        text(&again.stderr).contains("already in the config as visaverge-2"),
        "{}",
        text(&again.stderr)
    );
    assert_eq!(std::fs::read_to_string(&config).unwrap(), new);
}

#[test]
fn export_then_import_gives_the_same_feeds() {
    let dir = tempfile::tempdir().unwrap();
    let shipped = Config::load(Path::new(SHIPPED_CONFIG)).unwrap();

    let to_stdout = tidings(&["feeds", "export", "--config", SHIPPED_CONFIG]);
    assert!(to_stdout.status.success(), "{}", text(&to_stdout.stderr));
    let xml = text(&to_stdout.stdout);
    assert!(
        xml.starts_with("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<opml version=\"2.0\">"),
        "{xml}"
    );
    assert!(
        xml.contains("<dateCreated>") && xml.contains("<title>Tidings feeds</title>"),
        "{xml}"
    );
    assert_eq!(xml.matches("xmlUrl=").count(), shipped.feeds.len(), "{xml}");
    assert!(
        xml.contains("<outline text=\"us\" title=\"us\">"),
        "first tags are folders: {xml}"
    );

    let exported = dir.path().join("tidings.opml");
    let to_file = tidings(&[
        "feeds",
        "export",
        "-o",
        exported.to_str().unwrap(),
        "--config",
        SHIPPED_CONFIG,
    ]);
    assert!(to_file.status.success(), "{}", text(&to_file.stderr));
    assert!(to_file.stdout.is_empty(), "{}", text(&to_file.stdout));

    // Another installation with no feeds yet.
    let config = dir.path().join("config.toml");
    let before = "# A second Tidings.\ndatabase = \"other.db\"\n\n[poll]\ninterval = \"30m\"\n";
    std::fs::write(&config, before).unwrap();
    let out = import(&config, exported.to_str().unwrap(), &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("imported 5 feeds, skipped 0"),
        "{}",
        text(&out.stdout)
    );
    let new = std::fs::read_to_string(&config).unwrap();
    assert!(new.starts_with(before), "{new}");
    assert_eq!(
        feed_set(&Config::load(&config).unwrap()),
        feed_set(&shipped),
        "{new}"
    );
}

#[test]
fn malformed_opml_exits_2_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (config, original) = shipped_copy(dir.path());
    let out = import(&config, MALFORMED, &[]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("error: importing ")
            && stderr.contains("malformed.opml: not valid OPML: ")
            && stderr.contains(" at 10:"),
        "names the file and the position: {stderr}"
    );
    assert!(out.stdout.is_empty(), "{}", text(&out.stdout));
    assert_eq!(std::fs::read_to_string(&config).unwrap(), original);

    let missing = import(&config, "/nonexistent/feeds.opml", &[]);
    assert_eq!(missing.status.code(), Some(2));
    assert!(
        text(&missing.stderr).contains("reading /nonexistent/feeds.opml"),
        "{}",
        text(&missing.stderr)
    );
    assert_eq!(std::fs::read_to_string(&config).unwrap(), original);
}

#[test]
fn dry_run_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (config, original) = shipped_copy(dir.path());
    let out = import(&config, FEEDLY_EXPORT, &["--dry-run"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("dry run: would have imported 8 feeds, skipped 6"),
        "{}",
        text(&out.stdout)
    );
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("would add free-movement: \"Free Movement\" https://freemovement.org.uk/feed/ [immigration, uk]")
            && !stderr.lines().any(|l| l.starts_with("added")),
        "{stderr}"
    );
    assert_eq!(std::fs::read_to_string(&config).unwrap(), original);
}

#[test]
fn a_symlinked_config_stays_a_symlink() {
    let dir = tempfile::tempdir().unwrap();
    let real = dir.path().join("etc");
    std::fs::create_dir(&real).unwrap();
    let (target, original) = shipped_copy(&real);
    let link = dir.path().join("config.toml");
    std::os::unix::fs::symlink(&target, &link).unwrap();

    let out = import(&link, FEEDLY_EXPORT, &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        std::fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink()
    );
    let new = std::fs::read_to_string(&target).unwrap();
    assert!(new.starts_with(&original) && new.len() > original.len());
    let leftovers: Vec<_> = std::fs::read_dir(&real)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(leftovers, ["config.toml"], "no temporary file left behind");
}

/// `--check` fetches each new feed from a real server on loopback first: the ones that
/// answer with a feed are added, a 404 and an HTML page are left out with the reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import_check_leaves_out_feeds_that_do_not_answer_with_a_feed() {
    let feeds = support::FeedServer::start().await;
    feeds.set(
        "/uscis.xml",
        support::Route::feed("application/rss+xml", support::fixture("uscis.xml")),
    );
    feeds.set("/gone.xml", support::Route::status(404, "no such feed"));
    feeds.set(
        "/page.html",
        support::Route::feed("text/html", "<html><body>not a feed</body></html>"),
    );
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(&config, "# my feeds\n").unwrap();
    let opml = dir.path().join("list.opml");
    std::fs::write(
        &opml,
        format!(
            r#"<?xml version="1.0"?><opml version="2.0"><head><title>x</title></head><body>
<outline text="USCIS" xmlUrl="{}"/>
<outline text="Gone" xmlUrl="{}"/>
<outline text="Page" xmlUrl="{}"/>
</body></opml>"#,
            feeds.url("/uscis.xml"),
            feeds.url("/gone.xml"),
            feeds.url("/page.html")
        ),
    )
    .unwrap();
    let (config_arg, opml_arg) = (config.clone(), opml.to_string_lossy().into_owned());
    let out = tokio::task::spawn_blocking(move || import(&config_arg, &opml_arg, &["--check"]))
        .await
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("ok http://"), "{stderr}");
    assert!(
        stderr.contains("\"Gone\"") && stderr.contains("check failed: HTTP 404"),
        "{stderr}"
    );
    assert!(
        stderr.contains("\"Page\"") && stderr.contains("check failed:"),
        "{stderr}"
    );
    assert!(
        text(&out.stdout).contains("imported 1 feed, skipped 2"),
        "{}",
        text(&out.stdout)
    );
    let loaded = Config::load(&config).unwrap();
    let urls: Vec<String> = loaded.feeds.iter().map(|f| f.url.to_string()).collect();
    assert_eq!(urls, vec![feeds.url("/uscis.xml")]);
    assert!(
        std::fs::read_to_string(&config)
            .unwrap()
            .starts_with("# my feeds\n")
    );
}
