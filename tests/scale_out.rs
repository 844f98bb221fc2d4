//! Tidings on PostgreSQL (issue 14): the real binary with `database = "postgres://…"`,
//! against a real PostgreSQL server on loopback (one per test binary, stopped after the
//! last test), real feed servers, and mail written as files or sent to a real SMTP
//! server. One trial runs three `tidings run` on one database and kills two of them. Without PostgreSQL
//! installed the tests are listed as ignored, unless `TIDINGS_REQUIRE_POSTGRES=1`.

mod support;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::Ipv4Addr;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant, SystemTime};

use support::postgres::PgServer;
use support::{Daemon, FeedServer, Fetch, Route, SmtpServer};

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
    support::active_feed_ids(&ok(&["feeds", "status", "--json"], config))
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

// ---------------------------------------------------------------------------
// Three instances, two of them killed
// ---------------------------------------------------------------------------

const FEEDS: usize = 200;
/// Feed servers, on 127.0.0.1 to 127.0.0.4: each instance allows `per_host` fetches per
/// host, so the 200 feeds are spread over four hosts of 50.
const HOSTS: usize = 4;
const SUBSCRIBERS: usize = 50;
const ROUNDS: usize = 3;
const TOPICS: [&str; 10] = [
    "asylum",
    "visa",
    "parole",
    "refugee",
    "citizenship",
    "deportation",
    "passport",
    "residency",
    "naturalization",
    "sponsorship",
];
/// Every feed's interval, the shortest a config allows.
const INTERVAL: Duration = Duration::from_secs(60);
/// `[poll] claim_lease`: the shortest allowed with a 2 s connect and 3 s fetch timeout.
const CLAIM_LEASE: Duration = Duration::from_secs(15);
/// The daemon's poll tick (`*/15 * * * * *`) and digest tick (`5/30 * * * * *`).
const POLL_TICK: Duration = Duration::from_secs(15);
const DIGEST_TICK: Duration = Duration::from_secs(30);
/// How long round 1's answers take, so that a kill lands while fetches are in flight
/// (under the 3 s fetch timeout).
const SLOW_ANSWER: Duration = Duration::from_secs(2);
/// How long the mail server holds its reply to a message it has already recorded while
/// the second kill is prepared (under the 5 s send timeout).
const SLOW_REPLY: Duration = Duration::from_millis(1500);
/// From the moment a lease is over (or a tick fires) to the fetch or the message: the
/// cycle's claim, matcher and connection, on a loaded 2-core machine.
const LATENCY: Duration = Duration::from_secs(5);
const INSTANCES: [char; 3] = ['A', 'B', 'C'];

/// The topic word of feed `feed`'s item of round `round`.
fn topic(feed: usize, round: usize) -> usize {
    (feed + 3 * round) % TOPICS.len()
}

/// Words of their own for each item: every item is a story of its own, not a copy of
/// another feed's (which the store would group as one story).
fn story_words(feed: usize, round: usize) -> String {
    const SYLLABLES: [&str; 16] = [
        "ka", "lo", "mi", "ne", "su", "ta", "ri", "po", "de", "va", "zu", "be", "fo", "gi", "ha",
        "ju",
    ];
    let mut x = (feed as u64 * 7919 + round as u64 * 104_729) | 1;
    // Enough of them that the shared template ("New asylum notice …") is not most of it.
    (0..30)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (0..4)
                .map(|i| SYLLABLES[((x >> (4 * i)) & 15) as usize])
                .collect::<String>()
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn guid(feed: usize, round: usize) -> String {
    format!("f{feed:03}-r{round}")
}

/// What a subscriber searches for: one of two topics, or a topic on the feeds of one
/// host (`tag:`, which the feeds' tags in the database decide).
#[derive(Clone, Copy, Debug)]
enum Wants {
    Either(usize, usize),
    OnHost(usize, usize),
}

impl Wants {
    fn of(subscriber: usize) -> Wants {
        let first = subscriber % TOPICS.len();
        if subscriber < 40 {
            Wants::Either(first, (subscriber + 1 + subscriber / 10) % TOPICS.len())
        } else {
            Wants::OnHost(first, subscriber % HOSTS)
        }
    }

    fn query(self) -> String {
        match self {
            Wants::Either(a, b) => format!("{} OR {}", TOPICS[a], TOPICS[b]),
            Wants::OnHost(t, h) => format!("{} tag:h{h}", TOPICS[t]),
        }
    }

    /// The reference: whether the item of `feed` in `round` matches.
    fn matches(self, feed: usize, round: usize) -> bool {
        let t = topic(feed, round);
        match self {
            Wants::Either(a, b) => t == a || t == b,
            Wants::OnHost(want, h) => t == want && feed % HOSTS == h,
        }
    }
}

fn email(subscriber: usize) -> String {
    format!("s{subscriber:02}@example.org")
}

/// Feed `feed` once rounds `1..=rounds` are out: a real feed keeps its older items, so a
/// poll that was lost to a kill loses nothing. Each item keeps the date it came out on.
fn feed_route(feed: usize, published: &[chrono::DateTime<chrono::Utc>]) -> Route {
    let items: String = (1..=published.len())
        .rev()
        .map(|round| {
            let (id, word) = (guid(feed, round), TOPICS[topic(feed, round)]);
            format!(
                "<item><guid>{id}</guid><title>New {word} notice {id}</title>\
                 <link>https://agency.example/{id}</link>\
                 <description>What changes for {word} cases: {}.</description>\
                 <pubDate>{}</pubDate></item>",
                story_words(feed, round),
                published[round - 1].to_rfc2822()
            )
        })
        .collect();
    Route::feed(
        "application/rss+xml",
        format!(
            "<?xml version=\"1.0\"?><rss version=\"2.0\"><channel><title>Agency {feed}</title>\
             <link>https://agency.example/</link><description>d</description>{items}\
             </channel></rss>"
        ),
    )
}

/// Instance `name`'s config: the shared database and feed list; its own user agent and
/// `From:` name (so the feed and mail servers can tell who asked), its own secret file,
/// which does not exist (the link secret is then the database's).
fn instance_config(dir: &Path, name: char, url: &str, feeds: &[String], smtp: u16) -> PathBuf {
    let folder = dir.join(format!("instance-{name}"));
    std::fs::create_dir_all(&folder).unwrap();
    let mut text = format!(
        "database = \"{url}\"\n\
         [poll]\ninterval = \"1m\"\nconnect_timeout = \"2s\"\ntimeout = \"3s\"\n\
         claim_lease = \"15s\"\nconcurrency = {FEEDS}\nper_host = {}\n\
         user_agent = \"tidings-scale-out/{name}\"\n\
         [mail]\nfrom = \"Instance {name} <alerts@tidings.test>\"\ntransport = \"smtp\"\n\
         send_timeout = \"5s\"\n\
         [mail.smtp]\nhost = \"127.0.0.1\"\nport = {smtp}\ntls = \"none\"\n\
         [web]\nlisten = \"127.0.0.1:0\"\nsecret_file = \"secret-{name}\"\n\
         [service]\nadmin_listen = \"127.0.0.1:0\"\nshutdown_timeout = \"5s\"\n",
        FEEDS / HOSTS
    );
    for (i, feed_url) in feeds.iter().enumerate() {
        text.push_str(&format!(
            "[[feeds]]\nid = \"f{i:03}\"\nurl = \"{feed_url}\"\ntags = [\"h{}\"]\n",
            i % HOSTS
        ));
    }
    let path = folder.join("config.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// The instance a user agent or a `From:` name belongs to.
fn instance_of(marker: &str) -> Option<char> {
    INSTANCES.into_iter().find(|&name| {
        marker == format!("tidings-scale-out/{name}")
            || marker
                .trim_start_matches('"')
                .starts_with(&format!("Instance {name}"))
    })
}

/// A digest as the mail server received it.
#[derive(Clone, Debug)]
struct Delivered {
    to: String,
    message_id: String,
    /// The instance that sent this copy.
    by: char,
    /// The items in it (their guids), in order.
    items: Vec<String>,
    at: SystemTime,
    /// The path of its unsubscribe link.
    unsubscribe: String,
    updated: bool,
}

fn delivered(smtp: &SmtpServer) -> Vec<Delivered> {
    smtp.messages()
        .iter()
        .map(|received| {
            let mail = support::decode(received);
            let from = mail.header("From").unwrap_or_default();
            let by = instance_of(from).unwrap_or_else(|| panic!("From: {from:?}"));
            let lines: Vec<&str> = mail.text.lines().map(str::trim).collect();
            let items = lines
                .iter()
                .filter_map(|l| l.strip_prefix("https://agency.example/"))
                .map(str::to_string)
                .collect();
            let unsubscribe = lines
                .iter()
                .find_map(|l| l.strip_prefix("Unsubscribe: http://localhost:8080"))
                .unwrap_or_else(|| panic!("no unsubscribe link in {}", mail.text))
                .to_string();
            Delivered {
                to: mail.to.clone(),
                message_id: mail.message_id.clone(),
                by,
                items,
                at: received.at,
                unsubscribe,
                updated: mail.text.contains("[Updated]"),
            }
        })
        .collect()
}

/// Every (recipient, item) pair delivered so far.
fn pairs(mail: &[Delivered]) -> BTreeSet<(String, String)> {
    mail.iter()
        .flat_map(|m| m.items.iter().map(|i| (m.to.clone(), i.clone())))
        .collect()
}

/// Rows of `sql` at `url`, each turned into a value by `row` (off the async threads).
async fn query<T: Send + 'static>(
    url: &str,
    sql: &'static str,
    row: fn(&postgres::Row) -> T,
) -> Vec<T> {
    let url = url.to_string();
    tokio::task::spawn_blocking(move || {
        let mut client = postgres::Client::connect(&url, postgres::NoTls).unwrap();
        client.query(sql, &[]).unwrap().iter().map(row).collect()
    })
    .await
    .unwrap()
}

fn epoch(secs: i64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(u64::try_from(secs).unwrap())
}

/// `later - earlier`, negative as zero.
fn since(later: SystemTime, earlier: SystemTime) -> Duration {
    later.duration_since(earlier).unwrap_or_default()
}

/// The start of the 15-second poll tick window `t` falls in.
fn tick_of(t: SystemTime) -> u64 {
    let secs = t.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs();
    secs - secs % POLL_TICK.as_secs()
}

fn secs(d: Duration) -> String {
    format!("{:.1}s", d.as_secs_f64())
}

/// The three daemons; if the test fails, their logs, the fetch log and the mail are
/// written to a folder that is kept, and its path printed.
struct Cluster {
    dir: tempfile::TempDir,
    daemons: Vec<(char, Daemon)>,
    evidence: Vec<(&'static str, String)>,
}

impl Cluster {
    fn daemon(&mut self, name: char) -> &mut Daemon {
        &mut self.daemons.iter_mut().find(|(n, _)| *n == name).unwrap().1
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        let keep = self.dir.path().join("evidence");
        let _ = std::fs::create_dir_all(&keep);
        for (name, daemon) in &self.daemons {
            let _ = std::fs::write(keep.join(format!("instance-{name}.log")), daemon.log());
        }
        for (file, text) in &self.evidence {
            let _ = std::fs::write(keep.join(file), text);
        }
        let kept = std::mem::replace(&mut self.dir, tempfile::tempdir().unwrap()).keep();
        eprintln!(
            "scale-out evidence kept in {}",
            kept.join("evidence").display()
        );
    }
}

/// Waits until `done()`, checked `every` so often, or `limit` from now; false on timeout.
async fn wait_for(limit: Duration, every: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while !done() {
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(every).await;
    }
    true
}

/// A feed claim an instance still held when it was killed: its poll was never recorded.
#[derive(Debug)]
struct Orphan {
    victim: char,
    /// Its fetch the kill interrupted (index into the sorted fetch log of the feed).
    fetch_start: SystemTime,
    claimed_until: SystemTime,
    killed_at: SystemTime,
}

/// The feed claims still held right after `victim` was killed at `killed_at` whose last
/// fetch was the victim's, begun within a lease: the polls it never finished.
async fn orphans_of(
    url: &str,
    fetches: &[Fetch],
    victim: char,
    killed_at: SystemTime,
) -> HashMap<String, Orphan> {
    let held = query(
        url,
        "SELECT id, claimed_until FROM feeds WHERE claim IS NOT NULL",
        |r| (r.get::<_, String>(0), r.get::<_, i64>(1)),
    )
    .await;
    let mut orphans = HashMap::new();
    for (feed, until) in held {
        let path = format!("/{feed}.xml");
        let last = fetches
            .iter()
            .filter(|f| f.path == path && f.start <= killed_at)
            .max_by_key(|f| f.start);
        if let Some(last) = last
            && instance_of(&last.user_agent) == Some(victim)
            && since(killed_at, last.start) < CLAIM_LEASE
        {
            orphans.insert(
                path,
                Orphan {
                    victim,
                    fetch_start: last.start,
                    claimed_until: epoch(until),
                    killed_at,
                },
            );
        }
    }
    orphans
}

/// Three `tidings run` on one PostgreSQL share 200 feeds (on four loopback hosts) and 50
/// immediate subscribers through three rounds of news, while one instance is SIGKILLed
/// mid-poll and another mid-send (issue 14's proof). From the feed servers' log: no feed
/// is fetched by two at once, none sooner than its interval allows, and the killed
/// instances' claimed feeds are taken over after the kill (at once, their processes
/// being gone on this host) and at the latest within a tick of their lease. From
/// the mail server: every subscriber gets every matching item exactly once, in distinct
/// messages, except for messages the second victim had handed over when it died, which
/// are sent again after their lease with the same Message-ID. The links in mail from
/// different instances are the same and verify on any instance.
///
/// The story: round 1 is out before the instances start and answers slowly; a second
/// after the first fetch arrives, the instance with the most fetches in flight is killed,
/// and the survivors take its feeds over and mail round 1. Round 2 comes out; the first
/// instance seen sending it is killed while the mail server holds its reply; round 3
/// comes out at once (feeds not yet polled for round 2 bring both, the others bring round
/// 3 an interval later), and the last instance delivers everything. About 2.5–3 minutes:
/// a kill costs a lease and a tick, and each feed is polled once a minute.
async fn three_instances_share_the_work_and_survive_kills(server: &PgServer) {
    let began = Instant::now();
    let url = tokio::task::block_in_place(|| server.fresh_database());
    let mut hosts = Vec::new();
    for h in 0..HOSTS {
        let ip = Ipv4Addr::new(127, 0, 0, 1 + h as u8);
        hosts.push(
            FeedServer::start_on((ip, 0).into())
                .await
                .expect("a feed server on loopback"),
        );
    }
    let feed_urls: Vec<String> = (0..FEEDS)
        .map(|i| hosts[i % HOSTS].url(&format!("/f{i:03}.xml")))
        .collect();
    let fetches = || {
        let mut all: Vec<Fetch> = hosts.iter().flat_map(FeedServer::fetches).collect();
        all.sort_by_key(|f| f.start);
        all
    };
    let mut published = Vec::new();
    let publish = |published: &[chrono::DateTime<chrono::Utc>], delay: Duration| {
        for i in 0..FEEDS {
            hosts[i % HOSTS].set(
                &format!("/f{i:03}.xml"),
                feed_route(i, published).delay(delay),
            );
        }
    };
    let smtp = SmtpServer::start().await;

    let dir = tempfile::tempdir().unwrap();
    let configs: Vec<PathBuf> = INSTANCES
        .iter()
        .map(|&n| instance_config(dir.path(), n, &url, &feed_urls, smtp.port()))
        .collect();
    let wants: Vec<Wants> = (0..SUBSCRIBERS).map(Wants::of).collect();
    {
        let config = configs[0].clone();
        let wants = wants.clone();
        tokio::task::spawn_blocking(move || {
            for (s, w) in wants.iter().enumerate() {
                ok(&["subscriber", "add", &email(s), "-q", &w.query()], &config);
            }
        })
        .await
        .unwrap();
    }
    let expected = |round: usize| -> BTreeSet<(String, String)> {
        (0..SUBSCRIBERS)
            .flat_map(|s| (0..FEEDS).map(move |f| (s, f)))
            .filter(|&(s, f)| wants[s].matches(f, round))
            .map(|(s, f)| (email(s), guid(f, round)))
            .collect()
    };
    let expected_all: BTreeSet<_> = (1..=ROUNDS).flat_map(expected).collect();

    // Round 1, slow, before anyone starts: whoever claims the feeds first is still
    // fetching them a second later.
    published.push(chrono::Utc::now());
    publish(&published, SLOW_ANSWER);
    let setup = began.elapsed();
    let mut cluster = Cluster {
        dir,
        daemons: INSTANCES
            .iter()
            .zip(&configs)
            .map(|(&n, c)| (n, Daemon::start(c, &[], &[])))
            .collect(),
        evidence: Vec::new(),
    };

    // Kill 1, mid-poll: a second after the first fetch arrived, the instance with the
    // most fetches in flight.
    assert!(
        wait_for(Duration::from_secs(30), Duration::from_millis(10), || {
            !fetches().is_empty()
        })
        .await,
        "no instance polled within 30 s"
    );
    let first_fetch = fetches()[0].start;
    tokio::time::sleep(
        Duration::from_secs(1).saturating_sub(since(SystemTime::now(), first_fetch)),
    )
    .await;
    let mut in_flight: HashMap<char, usize> = HashMap::new();
    for f in fetches().iter().filter(|f| f.end.is_none()) {
        *in_flight
            .entry(instance_of(&f.user_agent).unwrap())
            .or_default() += 1;
    }
    let poll_victim = *in_flight
        .iter()
        .max_by_key(|(_, n)| **n)
        .expect("fetches in flight a second after the first")
        .0;
    cluster.daemon(poll_victim).signal("KILL");
    let killed_polling = SystemTime::now();
    cluster
        .daemon(poll_victim)
        .wait_exit(Duration::from_secs(5))
        .await;
    let orphans_polling = orphans_of(&url, &fetches(), poll_victim, killed_polling).await;
    assert!(
        orphans_polling.len() >= 20,
        "the kill landed mid-poll: instance {poll_victim} had {:?} fetches in flight, and \
         {} claims left",
        in_flight,
        orphans_polling.len()
    );
    // The feeds answer at once from now on (the same round: the same ETag).
    publish(&published, Duration::ZERO);
    for (name, daemon) in &cluster.daemons {
        if *name != poll_victim {
            daemon
                .wait_log("tidings running", |l| l.contains("tidings running"))
                .await;
        }
    }

    // The survivors take the feeds over and mail round 1.
    let round1 = expected(1);
    let limit = CLAIM_LEASE + POLL_TICK + LATENCY + Duration::from_secs(20);
    let arrived = wait_for(limit, Duration::from_millis(500), || {
        pairs(&delivered(&smtp)).is_superset(&round1)
    })
    .await;
    cluster
        .evidence
        .push(("fetches.txt", format!("{:#?}", fetches())));
    assert!(
        arrived,
        "round 1 did not arrive within {limit:?} of the kill: {} of {} pairs",
        pairs(&delivered(&smtp)).intersection(&round1).count(),
        round1.len()
    );

    // Round 2, and kill 2, mid-send: the mail server holds its reply to each message it
    // has recorded; the first instance seen sending round 2 dies while it waits for it.
    smtp.set_data_delay(SLOW_REPLY);
    let before_round2 = smtp.messages().len();
    published.push(chrono::Utc::now());
    publish(&published, Duration::ZERO);
    let limit = INTERVAL + DIGEST_TICK + POLL_TICK + LATENCY;
    assert!(
        smtp.wait_for(before_round2 + 1, limit).await.len() > before_round2,
        "no round 2 mail within {limit:?}"
    );
    let first = delivered(&smtp)[before_round2].clone();
    let send_victim = first.by;
    cluster.daemon(send_victim).signal("KILL");
    let killed_sending = SystemTime::now();
    smtp.set_data_delay(Duration::ZERO);
    cluster
        .daemon(send_victim)
        .wait_exit(Duration::from_secs(5))
        .await;
    let orphans_sending = orphans_of(&url, &fetches(), send_victim, killed_sending).await;
    let mail_held: HashMap<String, SystemTime> = query(
        &url,
        "SELECT message_id, claimed_until FROM outbox WHERE claim IS NOT NULL",
        |r| {
            let id: String = r.get(0);
            (id.trim_matches(['<', '>']).to_string(), epoch(r.get(1)))
        },
    )
    .await
    .into_iter()
    .collect();
    assert!(
        since(killed_sending, first.at) < SLOW_REPLY,
        "instance {send_victim} was killed while its message waited for the server's reply"
    );
    let survivor = *INSTANCES
        .iter()
        .find(|&&n| n != poll_victim && n != send_victim)
        .unwrap();

    // Round 3, and everything delivered.
    published.push(chrono::Utc::now());
    publish(&published, Duration::ZERO);
    let limit = 2 * (INTERVAL + DIGEST_TICK + POLL_TICK) + CLAIM_LEASE;
    let arrived = wait_for(limit, Duration::from_millis(500), || {
        pairs(&delivered(&smtp)).is_superset(&expected_all)
    })
    .await;
    let fetched = fetches();
    let mail = delivered(&smtp);
    cluster
        .evidence
        .push(("fetches.txt", format!("{fetched:#?}")));
    cluster.evidence.push(("mail.txt", format!("{mail:#?}")));
    let got_pairs = pairs(&mail);
    let missing: Vec<_> = expected_all.difference(&got_pairs).take(10).collect();
    assert!(
        arrived,
        "not every matching item arrived within {limit:?} of round 3: {} of {} pairs; \
         missing e.g. {missing:?}",
        got_pairs.intersection(&expected_all).count(),
        expected_all.len()
    );
    let outbox = query(&url, "SELECT message_id, status FROM outbox", |r| {
        (r.get::<_, String>(0), r.get::<_, String>(1))
    })
    .await;

    // The feed servers' log, feed by feed.
    let mut by_feed: BTreeMap<&str, Vec<&Fetch>> = BTreeMap::new();
    for f in &fetched {
        by_feed.entry(f.path.as_str()).or_default().push(f);
    }
    assert_eq!(by_feed.len(), FEEDS, "every feed was fetched");
    let killed = [(poll_victim, killed_polling), (send_victim, killed_sending)];
    let orphans: HashMap<(&str, SystemTime), &Orphan> = orphans_polling
        .iter()
        .chain(&orphans_sending)
        .map(|(path, o)| ((path.as_str(), o.fetch_start), o))
        .collect();
    let mut taken_over = Vec::new();
    let mut shortest_gap = Duration::MAX;
    for (path, list) in &by_feed {
        for f in list {
            let by = instance_of(&f.user_agent)
                .unwrap_or_else(|| panic!("{path} fetched by {:?}", f.user_agent));
            for (victim, at) in killed {
                assert!(
                    by != victim || f.start <= at,
                    "{path} fetched by {victim} after it was killed"
                );
            }
        }
        for pair in list.windows(2) {
            let (f1, f2) = (pair[0], pair[1]);
            let end = f1
                .end
                .unwrap_or_else(|| panic!("{path}: a fetch never answered: {f1:?}"));
            assert!(
                f2.start >= end,
                "{path} fetched twice at once: {f1:?} and {f2:?}"
            );
            if let Some(orphan) = orphans.get(&(*path, f1.start)) {
                // Taken over: by a survivor, not before the kill, and at the latest at
                // the first poll tick after the lease ran out. (The instances run on this
                // host: a survivor sees the victim's process is gone and may take its
                // claim at once, at its next tick.)
                let by = instance_of(&f2.user_agent).unwrap();
                assert!(
                    killed
                        .iter()
                        .all(|&(victim, at)| by != victim || at > f2.start),
                    "{path}: taken over by an instance that was dead"
                );
                assert!(
                    f2.start >= orphan.killed_at,
                    "{path} taken over {} before its owner was killed",
                    secs(since(orphan.killed_at, f2.start))
                );
                assert!(
                    f2.start <= orphan.claimed_until + POLL_TICK + LATENCY,
                    "{path} taken over {} after its claim ran out (a tick is {POLL_TICK:?})",
                    secs(since(f2.start, orphan.claimed_until))
                );
                let delay = since(f2.start, orphan.killed_at);
                assert!(
                    delay <= CLAIM_LEASE + POLL_TICK + LATENCY,
                    "{path} taken over {} after the kill (lease {CLAIM_LEASE:?})",
                    secs(delay)
                );
                taken_over.push((orphan.victim, delay));
            } else {
                // A poll's next one is due `interval` (plus jitter) after the tick that
                // claimed it, whole seconds rounded down; only ticks claim (and the start
                // of an instance), and a fetch starts within its tick's 15 s (no feed
                // waits for a connection slot: concurrency is the number of feeds). So
                // two fetches of a feed are at least `interval` of ticks apart.
                assert!(
                    tick_of(f2.start) >= tick_of(f1.start) + INTERVAL.as_secs(),
                    "{path} fetched {} after its last fetch (interval {INTERVAL:?}): \
                     {f1:?} then {f2:?}",
                    secs(since(f2.start, f1.start))
                );
                shortest_gap = shortest_gap.min(since(f2.start, f1.start));
            }
        }
    }
    for (path, orphan) in orphans_polling.iter().chain(&orphans_sending) {
        assert!(
            by_feed[path.as_str()]
                .iter()
                .any(|f| f.start > orphan.fetch_start),
            "{path}: the killed instance's claim was never taken over"
        );
    }
    assert_eq!(
        taken_over.len(),
        orphans_polling.len() + orphans_sending.len()
    );

    // The mail: per recipient and Message-ID, the copies are one message; a second copy
    // is a resend of what the second victim had handed over when it died.
    let mut copies: BTreeMap<(&str, &str), Vec<&Delivered>> = BTreeMap::new();
    for m in &mail {
        assert!(!m.updated, "no item changed, none is marked updated: {m:?}");
        copies
            .entry((m.to.as_str(), m.message_id.as_str()))
            .or_default()
            .push(m);
    }
    let mut resends = Vec::new();
    for ((to, id), list) in &copies {
        for m in &list[1..] {
            assert_eq!(
                (&m.items, &m.unsubscribe),
                (&list[0].items, &list[0].unsubscribe),
                "a resend is the same message"
            );
        }
        match list.as_slice() {
            [_] => {}
            [first, again] => {
                assert!(
                    first.by == send_victim && first.at <= killed_sending,
                    "{to} got {id} twice, not because of the kill: {list:#?}"
                );
                assert_ne!(again.by, send_victim);
                let until = *mail_held
                    .get(*id)
                    .unwrap_or_else(|| panic!("{id} was resent but held no claim at the kill"));
                assert!(
                    again.at >= until,
                    "{id} resent {} before its claim ran out",
                    secs(since(until, again.at))
                );
                assert!(
                    again.at <= until + DIGEST_TICK + LATENCY,
                    "{id} resent {} after its claim ran out (a digest tick is {DIGEST_TICK:?})",
                    secs(since(again.at, until))
                );
                resends.push(since(again.at, killed_sending));
            }
            _ => panic!("{to} got {id} {} times: {list:#?}", list.len()),
        }
    }
    assert!(
        !resends.is_empty(),
        "the message instance {send_victim} had handed over when it died was sent again"
    );
    let mut received: BTreeMap<(String, String), usize> = BTreeMap::new();
    for list in copies.values() {
        for item in &list[0].items {
            *received
                .entry((list[0].to.clone(), item.clone()))
                .or_default() += 1;
        }
    }
    let twice: Vec<_> = received.iter().filter(|(_, n)| **n > 1).take(10).collect();
    assert!(
        twice.is_empty(),
        "items in two different messages: {twice:?}"
    );
    let got: BTreeSet<_> = received.into_keys().collect();
    let extra: Vec<_> = got.difference(&expected_all).take(10).collect();
    assert!(extra.is_empty(), "items nobody asked for: {extra:?}");
    assert_eq!(got, expected_all, "every matching item, exactly once");
    assert!(
        outbox.iter().all(|(_, status)| status == "sent"),
        "the outbox is all sent: {outbox:?}"
    );
    let queued: BTreeSet<&str> = outbox
        .iter()
        .map(|(id, _)| id.trim_matches(['<', '>']))
        .collect();
    let distinct: BTreeSet<&str> = copies.keys().map(|(_, id)| *id).collect();
    assert_eq!(queued, distinct, "each queued message arrived");

    // Links: the same subscriber's link is the same from every instance, and one written
    // by the dead second victim opens the survivor's page.
    let mut link_of: HashMap<(&str, char), &str> = HashMap::new();
    for m in &mail {
        link_of.insert((m.to.as_str(), m.by), m.unsubscribe.as_str());
    }
    let mut compared = 0;
    for s in 0..SUBSCRIBERS {
        let to = email(s);
        let links: BTreeSet<&str> = INSTANCES
            .iter()
            .filter_map(|&n| link_of.get(&(to.as_str(), n)).copied())
            .collect();
        assert!(links.len() <= 1, "{to} got different links: {links:?}");
        compared += usize::from(
            INSTANCES
                .iter()
                .filter(|&&n| link_of.contains_key(&(to.as_str(), n)))
                .count()
                > 1,
        );
    }
    assert!(compared > 0, "some subscriber got mail from two instances");
    let web = cluster.daemon(survivor).address("web listener").await;
    let client = reqwest::Client::new();
    let page = |path: String| {
        let client = client.clone();
        async move {
            let r = client
                .get(format!("http://{web}{path}"))
                .send()
                .await
                .unwrap();
            (r.status(), r.text().await.unwrap())
        }
    };
    let (status, body) = page(first.unsubscribe.clone()).await;
    assert_eq!(status, reqwest::StatusCode::OK);
    assert!(
        body.contains(&first.to),
        "the link from instance {send_victim}'s mail opens {}'s page for {}: {body}",
        survivor,
        first.to
    );
    let forged = first.unsubscribe.replace('.', ".0");
    let (_, body) = page(forged).await;
    assert!(!body.contains(&first.to), "a forged link opens nothing");

    // Both instances that ran for minutes reported in (the first victim may have died
    // before its first heartbeat).
    let reported = query(&url, "SELECT pid FROM instances", |r| r.get::<_, i64>(0)).await;
    for name in [send_victim, survivor] {
        let pid = i64::from(cluster.daemon(name).pid());
        assert!(reported.contains(&pid), "{name} ({pid}) is in {reported:?}");
    }

    // The survivor stops on SIGTERM; the victims died of SIGKILL.
    cluster.daemon(survivor).signal("TERM");
    let (status, took) = cluster
        .daemon(survivor)
        .wait_exit(Duration::from_secs(15))
        .await;
    assert!(status.success(), "{status:?}");
    for victim in [poll_victim, send_victim] {
        let (status, _) = cluster.daemon(victim).wait_exit(Duration::ZERO).await;
        assert_eq!(status.signal(), Some(9));
    }

    let mut per_instance: BTreeMap<char, (usize, usize)> = BTreeMap::new();
    for f in &fetched {
        per_instance
            .entry(instance_of(&f.user_agent).unwrap())
            .or_default()
            .0 += 1;
    }
    for m in &mail {
        per_instance.entry(m.by).or_default().1 += 1;
    }
    let took_over = |victim: char| -> Vec<Duration> {
        taken_over
            .iter()
            .filter(|(v, _)| *v == victim)
            .map(|(_, d)| *d)
            .collect()
    };
    let range = |d: &[Duration]| match (d.iter().min(), d.iter().max()) {
        (Some(min), Some(max)) => format!("{}–{}", secs(*min), secs(*max)),
        _ => "-".to_string(),
    };
    println!(
        "scale-out: {} in all ({} setup); {} fetches, {} messages ({} distinct) for {} \
         (recipient, item) pairs; per instance (fetches, messages): {per_instance:?}; \
         {poll_victim} killed mid-poll holding {} claims, taken over {} after the kill; \
         {send_victim} killed mid-send holding {} feed claims (taken over {}), {} resent \
         {} after the kill; shortest time between two polls of a feed {}; {survivor} \
         stopped in {}",
        secs(began.elapsed()),
        secs(setup),
        fetched.len(),
        mail.len(),
        copies.len(),
        expected_all.len(),
        orphans_polling.len(),
        range(&took_over(poll_victim)),
        orphans_sending.len(),
        range(&took_over(send_victim)),
        resends.len(),
        range(&resends),
        secs(shortest_gap),
        secs(took),
    );
}

/// Two instances started together share the due feeds (a cycle claims them in batches of
/// twice `concurrency`), and `concurrency` holds for both together: 40 slow feeds,
/// `concurrency = 4` each, never more than 4 fetches in flight in all, each feed fetched
/// once, and each instance doing a real share.
async fn two_instances_share_the_due_feeds_within_one_concurrency(server: &PgServer) {
    const FEEDS: usize = 40;
    let feeds = FeedServer::start().await;
    let mut list = String::new();
    for n in 0..FEEDS {
        let path = format!("/f{n}.xml");
        feeds.set(
            &path,
            rss(&[(&format!("i{n}"), "Asylum ruling")])
                .delay(std::time::Duration::from_millis(400)),
        );
        list.push_str(&format!(
            "[[feeds]]\nid = \"f{n}\"\nurl = \"{}\"\n",
            feeds.url(&path)
        ));
    }
    let dir = tempfile::tempdir().unwrap();
    let url = tokio::task::block_in_place(|| server.fresh_database());
    let configs: Vec<_> = ['A', 'B']
        .into_iter()
        .map(|name| {
            let folder = dir.path().join(format!("instance-{name}"));
            std::fs::create_dir_all(&folder).unwrap();
            let config = folder.join("config.toml");
            std::fs::write(
                &config,
                format!(
                    "database = \"{url}\"\n\
                     [poll]\ninterval = \"1m\"\nconcurrency = 4\nper_host = 4\n\
                     connect_timeout = \"2s\"\ntimeout = \"3s\"\nclaim_lease = \"15s\"\n\
                     user_agent = \"tidings-share/{name}\"\n\
                     [mail]\ntransport = \"file\"\nfolder = \"mail\"\n\
                     [web]\nlisten = \"\"\n[service]\nadmin_listen = \"\"\n{list}"
                ),
            )
            .unwrap();
            config
        })
        .collect();
    // Migrated before the race, so both start polling at once.
    ok(&["feeds", "status"], &configs[0]);
    let daemons: Vec<_> = configs
        .iter()
        .map(|c| support::Daemon::start(c, &[], &[]))
        .collect();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let done = feeds.fetches().iter().filter(|f| f.end.is_some()).count();
        if done >= FEEDS {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{done} of {FEEDS} fetched; logs:\n{}\n{}",
            daemons[0].log(),
            daemons[1].log()
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    drop(daemons);
    let fetched = feeds.fetches();
    let mut paths: Vec<&str> = fetched.iter().map(|f| f.path.as_str()).collect();
    paths.sort();
    paths.dedup();
    assert_eq!(paths.len(), FEEDS);
    assert_eq!(
        fetched.len(),
        FEEDS,
        "each feed once (the interval is a minute)"
    );
    let by = |name: &str| {
        fetched
            .iter()
            .filter(|f| f.user_agent.ends_with(name))
            .count()
    };
    let (a, b) = (by("/A"), by("/B"));
    assert_eq!(a + b, FEEDS);
    assert!(a >= 8 && b >= 8, "both share the work: A {a}, B {b}");
    // At most 4 in flight at any moment, in all.
    let mut events: Vec<(std::time::SystemTime, i32)> = Vec::new();
    for f in &fetched {
        events.push((f.start, 1));
        events.push((f.end.unwrap(), -1));
    }
    events.sort();
    let (mut now, mut most) = (0, 0);
    for (_, step) in events {
        now += step;
        most = most.max(now);
    }
    assert!(
        most <= 4,
        "{most} fetches at once; concurrency is 4 for the cluster"
    );
    assert!(most >= 3, "the limit, not less: {most}");
}

fn main() -> std::process::ExitCode {
    support::postgres::run_pg_trials(
        "scale-out tests",
        support::postgres::pg_trials![
            the_commands_work_on_postgres,
            the_config_written_last_decides_the_feed_list,
            two_instances_share_the_due_feeds_within_one_concurrency,
            three_instances_share_the_work_and_survive_kills,
        ],
    )
}
