//! Tidings on PostgreSQL (issue 14): the real binary with `database = "postgres://…"`,
//! against a real PostgreSQL server on loopback (one per test binary, stopped after the
//! last test), a real feed server and mail written as files. Without PostgreSQL
//! installed the tests are listed as ignored, unless `TIDINGS_REQUIRE_POSTGRES=1`.

mod support;

use std::path::Path;
use std::process::{Command, Output};
use std::sync::Arc;

use libtest_mimic::{Arguments, Trial};
use support::postgres::PgServer;
use support::{FeedServer, Route};

fn tidings(args: &[&str], config: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tidings"))
        .args(args)
        .arg("--config")
        .arg(config)
        .env_remove("TIDINGS_CONFIG")
        .env_remove("TIDINGS_DATABASE_PASSWORD")
        .output()
        .expect("run tidings")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Runs `args`, which must succeed; returns standard output.
fn ok(args: &[&str], config: &Path) -> String {
    let out = tidings(args, config);
    assert!(
        out.status.success(),
        "tidings {args:?} failed: {}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

fn rss(items: &[(&str, &str)]) -> Route {
    let now = chrono::Utc::now().to_rfc2822();
    let items: String = items
        .iter()
        .map(|(guid, title)| {
            format!(
                "<item><guid>{guid}</guid><title>{title}</title>\
                 <link>https://agency.example/{guid}</link>\
                 <description>{title}.</description><pubDate>{now}</pubDate></item>"
            )
        })
        .collect();
    Route::feed(
        "application/rss+xml",
        format!(
            "<?xml version=\"1.0\"?><rss version=\"2.0\"><channel><title>Agency</title>\
             <link>https://agency.example/</link><description>d</description>{items}\
             </channel></rss>"
        ),
    )
}

/// One number from the database at `url` (the sync client blocks: off the async threads).
async fn query_i64(url: &str, sql: &'static str) -> i64 {
    let url = url.to_string();
    tokio::task::spawn_blocking(move || {
        let mut client = postgres::Client::connect(&url, postgres::NoTls).unwrap();
        client.query_one(sql, &[]).unwrap().get(0)
    })
    .await
    .unwrap()
}

/// Every command a new operator runs works the same on PostgreSQL as on SQLite: checking
/// the config (read-only: nothing is created), adding a subscriber (which migrates),
/// polling, queueing and sending a digest, listing; `backup` says what to use instead.
async fn the_commands_work_on_postgres(server: &PgServer) {
    let feeds = FeedServer::start().await;
    feeds.set(
        "/news.xml",
        rss(&[("a1", "Asylum ruling"), ("v1", "Visa bulletin")]),
    );
    let dir = tempfile::tempdir().unwrap();
    let url = tokio::task::block_in_place(|| server.fresh_database());
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            "database = \"{url}\"\n[mail]\ntransport = \"file\"\nfolder = \"mail\"\n\
             [[feeds]]\nid = \"news\"\nurl = \"{}\"\n",
            feeds.url("/news.xml")
        ),
    )
    .unwrap();

    let checked = tidings(&["check-config"], &config);
    assert!(checked.status.success(), "{}", text(&checked.stderr));
    assert!(
        text(&checked.stdout).contains(&format!("database: {url}")),
        "{}",
        text(&checked.stdout)
    );
    assert!(
        text(&checked.stderr).contains("schema version 0"),
        "a database not yet migrated is read, not migrated: {}",
        text(&checked.stderr)
    );
    assert_eq!(
        query_i64(
            &url,
            "SELECT COUNT(*) FROM pg_tables WHERE schemaname = 'public'"
        )
        .await,
        0,
        "check-config created nothing"
    );

    ok(
        &["subscriber", "add", "ana@example.org", "-q", "asylum"],
        &config,
    );
    let polled = ok(&["poll"], &config);
    assert!(polled.contains("2 new items"), "{polled}");
    let sent = ok(&["digest"], &config);
    assert!(sent.contains("queued 1 digest; sent 1"), "{sent}");
    let mail: Vec<_> = std::fs::read_dir(dir.path().join("mail"))
        .unwrap()
        .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
        .collect();
    assert_eq!(mail.len(), 1);
    assert!(mail[0].contains("Asylum ruling"), "{}", mail[0]);
    assert!(!mail[0].contains("Visa bulletin"), "{}", mail[0]);

    let listed = ok(&["subscriber", "list"], &config);
    assert!(listed.contains("ana@example.org"), "{listed}");
    let outbox = ok(&["outbox", "--all"], &config);
    assert!(outbox.contains("sent"), "{outbox}");
    let status = ok(&["feeds", "status"], &config);
    assert!(status.contains("news"), "{status}");

    let checked = tidings(&["check-config"], &config);
    assert!(checked.status.success());
    assert!(
        !text(&checked.stderr).contains("warning"),
        "a current database is read without complaint: {}",
        text(&checked.stderr)
    );

    let backup = tidings(&["backup", "copy.db"], &config);
    assert!(!backup.status.success());
    assert!(
        text(&backup.stderr).contains("pg_dump"),
        "{}",
        text(&backup.stderr)
    );
}

/// The active feeds as `feeds status --json` lists them, by id.
fn active_feeds(config: &Path) -> Vec<String> {
    let json: serde_json::Value =
        serde_json::from_str(&ok(&["feeds", "status", "--json"], config)).unwrap();
    let mut ids: Vec<String> = json
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["active"] == true)
        .map(|f| f["id"].as_str().unwrap().to_string())
        .collect();
    ids.sort();
    ids
}

/// Instances whose configs list different feeds never switch each other's feeds off
/// back and forth: the feed list of the config file written last is the database's,
/// an older one is kept out (with a warning), and the same list again changes nothing.
async fn the_config_written_last_decides_the_feed_list(server: &PgServer) {
    let dir = tempfile::tempdir().unwrap();
    let url = tokio::task::block_in_place(|| server.fresh_database());
    let write = |name: &str, feeds: &[&str], age_secs: u64| {
        let path = dir.path().join(name);
        let mut text = format!("database = \"{url}\"\n");
        for id in feeds {
            text.push_str(&format!(
                "[[feeds]]\nid = \"{id}\"\nurl = \"https://{id}.example/feed.xml\"\n"
            ));
        }
        std::fs::write(&path, text).unwrap();
        let when = std::time::SystemTime::now() - std::time::Duration::from_secs(age_secs);
        std::fs::File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_modified(when)
            .unwrap();
        path
    };
    let old = write("old.toml", &["a", "b"], 3600);
    let new = write("new.toml", &["a", "c"], 60);
    let same_as_new = write("same.toml", &["c", "a"], 7200);

    assert_eq!(active_feeds(&old), ["a", "b"], "the first list is applied");
    assert_eq!(active_feeds(&new), ["a", "c"], "a newer config wins");
    let kept = tidings(&["feeds", "status"], &old);
    assert!(kept.status.success());
    assert!(
        text(&kept.stderr).contains("config written later"),
        "{}",
        text(&kept.stderr)
    );
    assert_eq!(
        active_feeds(&old),
        ["a", "c"],
        "an older config is kept out"
    );
    assert_eq!(
        active_feeds(&same_as_new),
        ["a", "c"],
        "the same list, however old its file, changes nothing"
    );
    let same = tidings(&["feeds", "status"], &same_as_new);
    assert!(!text(&same.stderr).contains("config written later"));

    // Editing the old config makes it the newest: it wins.
    write("old.toml", &["a", "b"], 0);
    assert_eq!(active_feeds(&old), ["a", "b"]);
}

type Test = fn(&PgServer) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + '_>>;

macro_rules! tests {
    ($($name:ident),* $(,)?) => {
        vec![$((stringify!($name), (|s| Box::pin($name(s))) as Test)),*]
    };
}

fn main() -> std::process::ExitCode {
    let args = Arguments::from_args();
    let server = if args.list {
        None
    } else {
        PgServer::start_or_skip("scale-out tests").map(Arc::new)
    };
    let trials = tests![
        the_commands_work_on_postgres,
        the_config_written_last_decides_the_feed_list,
    ]
    .into_iter()
    .map(|(name, test)| {
        let server = server.clone();
        let ignored = server.is_none() && !args.list;
        Trial::test(name, move || {
            if let Some(server) = &server {
                tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                    .unwrap()
                    .block_on(test(server));
            }
            Ok(())
        })
        .with_ignored_flag(ignored)
    })
    .collect();
    let conclusion = libtest_mimic::run(&args, trials);
    // The trials (and their clones of the server) are gone: this stops it.
    drop(server);
    conclusion.exit_code()
}
