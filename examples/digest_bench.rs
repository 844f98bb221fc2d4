//! Digest benchmark: 10,000 subscribers with pending matches → digests rendered and
//! queued in the SQLite outbox → delivered over real SMTP to a server on 127.0.0.1.
//! Prints digests/s (render + queue), messages/s (delivery), messages/s end to end and
//! peak RSS, then checks that every recipient got exactly one message (exit code 1 if
//! not).
//!
//! ```sh
//! cargo run --release --example digest_bench                      # 10,000 subscribers
//! cargo run --release --example digest_bench -- --subscribers 2000 --concurrency 8
//! cargo run --release --example digest_bench -- --smtp in-process
//! cargo run --release --example digest_bench -- --backend postgres --instances 3
//! ```
//!
//! With `--instances N`, N Tidings instances (each its own `App`: its own database
//! connections, mail pacer and SMTP connections) run `send_digests` on the same database at
//! once, as a cluster's instances would when a digest round comes due: each subscriber's
//! digest must still be queued once and each message sent once. They share this process's
//! two cores. `--backend postgres` starts a PostgreSQL server of its own (Debian's
//! `postgresql` package) in a temporary folder, stopped at the end.
//!
//! # What is measured
//!
//! Setup (printed, not counted): a config with `transport = "smtp"` pointing at the
//! local server, 10,000 subscribers (`add_subscription`, one or two of ten realistic
//! immigration queries each), and 114 items with a few hundred to 1,500 characters of
//! text in four feeds, stored through `Store::store_items` with the compiled matcher as
//! a baseline poll stores them. Every subscriber ends up with 3–8 pending stories
//! (mean 4.6); a digest is about 10 KiB on the wire.
//!
//! Timed: one call of [`tidings::send_digests`], which renders and queues every due
//! digest (one `take_digest` transaction each) and then delivers the whole outbox. Both
//! phases run inside that one call, so the boundary comes from the library's own
//! events: a tracing layer that prints nothing notes the instant of the last
//! `digest queued` event (target `tidings::pipeline`) and of the first `mail sent` event
//! (`tidings::mail`). Render + queue = start → last `digest queued`; deliver = last
//! `digest queued` → return. Should a later version deliver while it still queues
//! (first `mail sent` before the last `digest queued`), the delivery line says so and
//! gives messages/s from the first message sent to the return instead. The end-to-end
//! figure needs no boundary. Other log output is shown at `warn` only. Peak RSS is
//! VmHWM of this process, reset (`clear_refs`) just before the timed call.
//!
//! The mail settings are the shipped defaults (`mail.concurrency = 4`, no rate limit)
//! unless `--concurrency` says otherwise.
//!
//! # Where the SMTP server runs
//!
//! The server is the test suite's hand-written ESMTP server (`tests/support`). It runs
//! in a child process (this same binary with `--serve-smtp`), like `poll_bench`'s feed
//! server, because in-process it keeps every message it receives in the benchmark's own
//! heap. Measured both ways at 10,000 subscribers: peak RSS 151 MiB in-process against
//! 22 MiB in a child, delivery rates within run-to-run noise.
//! `--smtp in-process` is kept for comparison.
//!
//! # Verification
//!
//! After the timed call: `send_digests` reports 10,000 queued and 10,000 sent; the
//! outbox holds 10,000 rows, all `sent`; the server received exactly 10,000 messages,
//! exactly one per subscriber address, each carrying the `Message-ID` of that
//! subscriber's outbox row; and every subject counts the stories that subscriber's
//! queries match. Any failure is listed and the exit code is 1.

mod common;

use common::{peak_rss_mib, reset_peak_rss};
use std::collections::{BTreeSet, HashMap};
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use tidings::config::Config;
use tidings::digest::Schedule;
use tidings::matcher::{Document, Query};
use tidings::parse::{Item, body_text};
use tidings::store::{OutboxStatus, SubscriptionId};
use tidings::store::{StoreOutcome, SuccessfulPoll};
use tidings::{App, send_digests};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::Layer;
use tracing_subscriber::filter::{LevelFilter, filter_fn};
use tracing_subscriber::layer::{Context, SubscriberExt as _};
use tracing_subscriber::util::SubscriberInitExt as _;

#[path = "../tests/support/mod.rs"]
mod support;

use support::{SmtpServer, postgres};

/// Where the SMTP server runs.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum SmtpMode {
    Child,
    InProcess,
}

struct Args {
    subscribers: usize,
    concurrency: Option<usize>,
    smtp: SmtpMode,
    instances: usize,
    postgres: bool,
}

fn parse_args() -> (bool, Args) {
    let mut args = Args {
        subscribers: 10_000,
        concurrency: None,
        smtp: SmtpMode::Child,
        instances: 1,
        postgres: false,
    };
    let mut serve = false;
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut value = || it.next().expect("a value after the option");
        match a.as_str() {
            "--serve-smtp" => serve = true,
            "--subscribers" => args.subscribers = value().parse().expect("a number"),
            "--concurrency" => args.concurrency = Some(value().parse().expect("a number")),
            "--instances" => args.instances = value().parse::<usize>().expect("a number").max(1),
            "--backend" => match value().as_str() {
                "sqlite" => args.postgres = false,
                "postgres" => args.postgres = true,
                other => panic!("--backend sqlite|postgres, not {other}"),
            },
            "--smtp" => {
                args.smtp = match value().as_str() {
                    "child" => SmtpMode::Child,
                    "in-process" => SmtpMode::InProcess,
                    other => panic!("--smtp child|in-process, not {other}"),
                }
            }
            other => panic!("unknown argument {other}"),
        }
    }
    (serve, args)
}

fn main() {
    let (serve, args) = parse_args();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    if serve {
        runtime.block_on(serve_smtp());
    } else {
        let ok = runtime.block_on(bench(args));
        if !ok {
            std::process::exit(1);
        }
    }
}

// ---- the SMTP server -----------------------------------------------------------------------

/// One message as the server saw it: envelope recipients, `Message-ID`, size.
struct Arrival {
    rcpt_to: Vec<String>,
    message_id: String,
    bytes: usize,
}

fn arrivals(messages: &[support::Received]) -> Vec<Arrival> {
    messages
        .iter()
        .map(|m| Arrival {
            rcpt_to: m.rcpt_to.clone(),
            message_id: message_id(&m.data),
            bytes: m.data.len(),
        })
        .collect()
}

/// The `Message-ID` header of a raw message (empty if none).
fn message_id(data: &[u8]) -> String {
    let text = String::from_utf8_lossy(data);
    text.lines()
        .take_while(|l| !l.is_empty())
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("message-id")
                .then(|| value.trim().to_string())
        })
        .unwrap_or_default()
}

/// Child mode: the test SMTP server on 127.0.0.1. Prints its port, then on each
/// `report` line from stdin prints one `rcpt<TAB>message-id<TAB>bytes` line per message
/// received and `END`. Exits when stdin closes.
async fn serve_smtp() {
    use tokio::io::AsyncBufReadExt as _;
    let server = SmtpServer::start().await;
    println!("{}", server.port());
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        if line.trim() == "report" {
            let mut out = std::io::stdout().lock();
            for a in arrivals(&server.messages()) {
                writeln!(
                    out,
                    "{}\t{}\t{}",
                    a.rcpt_to.join(","),
                    a.message_id,
                    a.bytes
                )
                .unwrap();
            }
            writeln!(out, "END").unwrap();
            out.flush().unwrap();
        }
    }
}

/// The server in a child process; killed when dropped.
struct ChildSmtp {
    child: Child,
    port: u16,
    stdout: BufReader<std::process::ChildStdout>,
}

impl ChildSmtp {
    fn start() -> ChildSmtp {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .arg("--serve-smtp")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start SMTP server");
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        let port = line.trim().parse().expect("the SMTP server's port");
        ChildSmtp {
            child,
            port,
            stdout,
        }
    }

    fn report(&mut self) -> Vec<Arrival> {
        let stdin = self.child.stdin.as_mut().unwrap();
        stdin.write_all(b"report\n").unwrap();
        stdin.flush().unwrap();
        let mut out = Vec::new();
        let mut line = String::new();
        loop {
            line.clear();
            if self.stdout.read_line(&mut line).unwrap() == 0 {
                panic!("SMTP server exited before reporting");
            }
            let line = line.trim_end();
            if line == "END" {
                return out;
            }
            let mut fields = line.split('\t');
            let (rcpt, id, bytes) = (fields.next(), fields.next(), fields.next());
            out.push(Arrival {
                rcpt_to: rcpt
                    .unwrap_or_default()
                    .split(',')
                    .filter(|s| !s.is_empty())
                    .map(str::to_string)
                    .collect(),
                message_id: id.unwrap_or_default().to_string(),
                bytes: bytes.and_then(|b| b.parse().ok()).unwrap_or(0),
            });
        }
    }
}

impl Drop for ChildSmtp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

enum Smtp {
    Child(ChildSmtp),
    InProcess(SmtpServer),
}

impl Smtp {
    async fn start(mode: SmtpMode) -> Smtp {
        match mode {
            SmtpMode::Child => Smtp::Child(ChildSmtp::start()),
            SmtpMode::InProcess => Smtp::InProcess(SmtpServer::start().await),
        }
    }

    fn port(&self) -> u16 {
        match self {
            Smtp::Child(c) => c.port,
            Smtp::InProcess(s) => s.port(),
        }
    }

    fn arrivals(&mut self) -> Vec<Arrival> {
        match self {
            Smtp::Child(c) => c.report(),
            Smtp::InProcess(s) => arrivals(&s.messages()),
        }
    }
}

// ---- phase boundaries from the library's own events ---------------------------------------

/// Records when the last digest was queued and the first mail sent; prints nothing.
#[derive(Clone, Default)]
struct PhaseClock(Arc<Mutex<Phases>>);

#[derive(Default, Debug, Clone, Copy)]
struct Phases {
    last_queued: Option<Instant>,
    first_sent: Option<Instant>,
    queued_events: usize,
    sent_events: usize,
}

impl<S: Subscriber> Layer<S> for PhaseClock {
    fn on_event(&self, event: &Event<'_>, _cx: Context<'_, S>) {
        let now = Instant::now();
        // `digest queued` and `mail sent` both name the outbox row.
        if event.metadata().fields().field("outbox").is_none() {
            return;
        }
        let mut p = self.0.lock().unwrap();
        match event.metadata().target() {
            "tidings::pipeline" => {
                p.last_queued = Some(now);
                p.queued_events += 1;
            }
            "tidings::mail" => {
                p.first_sent.get_or_insert(now);
                p.sent_events += 1;
            }
            _ => {}
        }
    }
}

impl PhaseClock {
    fn install(&self) {
        let clock = self.clone().with_filter(filter_fn(|m| {
            *m.level() == Level::INFO && matches!(m.target(), "tidings::pipeline" | "tidings::mail")
        }));
        let stderr = tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_filter(LevelFilter::WARN);
        tracing_subscriber::registry()
            .with(stderr)
            .with(clock)
            .init();
    }

    fn reset(&self) {
        *self.0.lock().unwrap() = Phases::default();
    }

    fn get(&self) -> Phases {
        *self.0.lock().unwrap()
    }
}

// ---- the data ------------------------------------------------------------------------------

/// The queries subscribers choose from, each with the stories written to match it
/// (3 or 4 each, so one or two queries give 3–8 stories).
const TOPICS: &[(&str, &[&str])] = &[
    (
        "asylum",
        &[
            "USCIS updates affirmative asylum interview scheduling priorities",
            "Asylum office backlog tops one million pending cases",
            "Court rules on asylum eligibility for people who crossed between ports",
            "New one-year filing deadline guidance for asylum seekers",
        ],
    ),
    (
        "\"H-1B\" OR H1B",
        &[
            "H-1B cap registration for fiscal year 2027 opens March 1",
            "DHS finalizes H-1B modernization rule",
            "Employers report fewer H1B selections in second round",
            "H-1B petition fee increase takes effect next month",
        ],
    ),
    (
        "TPS",
        &[
            "TPS designation for Venezuela extended 18 months",
            "Re-registration period opens for Haiti TPS beneficiaries",
            "Automatic EAD extension for TPS holders explained",
        ],
    ),
    (
        "\"green card\" -lottery",
        &[
            "Green card interview waivers expanded for family cases",
            "How to check your green card case status online",
            "Green card holders: new rules for reentry permits",
            "Employment-based green card backlog: what the numbers show",
        ],
    ),
    (
        "parole",
        &[
            "CHNV parole program applications paused",
            "Humanitarian parole requests: processing times lengthen",
            "Parole in place for military families continues",
        ],
    ),
    (
        "DACA OR \"deferred action\"",
        &[
            "DACA renewal filings: court order keeps program open",
            "Appeals court hears arguments on DACA rule",
            "Deferred action for special immigrant juveniles restored",
        ],
    ),
    (
        "naturalization OR citizenship",
        &[
            "New naturalization civics test takes effect",
            "Citizenship ceremonies held on Independence Day",
            "Naturalization fee waiver form revised",
            "Record number of citizenship applications in fiscal 2026",
        ],
    ),
    (
        "\"visa bulletin\"",
        &[
            "December visa bulletin: EB-2 India advances six months",
            "Visa bulletin predictions for the second quarter",
            "State Department explains visa bulletin final action dates",
        ],
    ),
    (
        "title:deport*",
        &[
            "Deportation flights resume to Central America",
            "Deportations rise 12 percent in first quarter",
            "Deported veterans program reopens applications",
        ],
    ),
    (
        "OPT student",
        &[
            "STEM OPT extension rules clarified for student employers",
            "Student visa holders: OPT unemployment limits reminder",
            "OPT work authorization delays frustrate international student graduates",
        ],
    ),
];

/// Stories no query matches (one of them mentions a green card, but with "lottery").
const OTHER_NEWS: &[&str] = &[
    "Diversity visa lottery results: green card chances for 2027 entrants",
    "Processing times update for the Nebraska Service Center",
    "Federal Register notice revises biometrics appointment rules",
    "Consulates expand interview capacity in Mexico City",
    "Online filing now available for more benefit forms",
    "Agency publishes annual statistical yearbook",
    "Immigration court adds judges in Houston and Atlanta",
    "Fee schedule: what changes for employers this year",
    "Border wait times lengthen over holiday weekend",
    "Advisory opinion clarifies employer sponsorship obligations",
    "Refugee admissions ceiling set for next fiscal year",
    "Address change requirements: reminder for applicants",
    "Translation requirements for supporting documents",
    "Public charge guidance remains unchanged",
    "New office opens in Sacramento to serve northern California",
    "Webinar: preparing for your biometrics appointment",
    "Medical examination form updated with new vaccine list",
    "Ombudsman annual report highlights case delays",
    "Visitor visa wait times fall in several countries",
    "Employers reminded of I-9 retention rules",
];

/// Feeds: (id, name, tags). Their URLs are on loopback and never fetched.
const FEEDS: &[(&str, &str, &[&str])] = &[
    ("uscis-news", "USCIS News", &["official", "us"]),
    ("visaverge", "VisaVerge", &["news"]),
    ("immigration-daily", "Immigration Daily", &["news", "us"]),
    ("law-journal", "Immigration Law Journal", &["legal"]),
];

const LEAD: &str = "Officials said applicants should read the updated guidance carefully \
    before filing, keep copies of every notice they receive and check the agency's website \
    for the current edition of each form. Attorneys advised clients to gather supporting \
    documents early, since requests for evidence remain common and can add months to a case.";

const CONTENT: &str = "The announcement follows months of comments from advocacy groups, \
    employers and local officials, who asked for clearer instructions and shorter waits. \
    According to the agency, the changes are meant to reduce the number of incomplete \
    applications, which currently account for a large share of rejections. Field offices \
    will receive training over the coming weeks, and a question-and-answer page will be \
    updated as new cases come up. Community organizations plan free information sessions \
    in several cities, with interpreters available in Spanish, Haitian Creole, Arabic and \
    Ukrainian. Anyone with an appointment already scheduled should attend as planned unless \
    they receive a new notice by mail.";

/// One item per story: the matching stories spread over the feeds, and each of the other
/// stories in every feed (outlets covering the same news, under their own links). All
/// published within the last day (the baseline window), so they all count.
fn items_by_feed(now: DateTime<Utc>) -> Vec<Vec<Item>> {
    let stories = TOPICS
        .iter()
        .flat_map(|(_, titles)| titles.iter())
        .enumerate()
        .map(|(n, title)| (*title, n % FEEDS.len()))
        .chain((0..FEEDS.len()).flat_map(|f| OTHER_NEWS.iter().map(move |title| (*title, f))));
    let mut feeds = vec![Vec::new(); FEEDS.len()];
    for (n, (title, f)) in stories.enumerate() {
        let slug: String = title
            .to_ascii_lowercase()
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .collect();
        let link = format!("https://{}.example/news/{n}-{slug}", FEEDS[f].0);
        feeds[f].push(Item {
            key: format!("guid:{link}"),
            guid: Some(link.clone()),
            link: Some(link),
            title: title.to_string(),
            summary: format!("{title}. {LEAD}"),
            content: if n.is_multiple_of(2) {
                format!("{title}. {LEAD}\n{CONTENT}")
            } else {
                String::new()
            },
            published: Some(now - chrono::Duration::minutes(7 * n as i64 + 3)),
        });
    }
    feeds
}

/// Subscriber `i`'s queries (indexes into [`TOPICS`]): one, and for every third a second.
fn queries_of(i: usize) -> Vec<usize> {
    let first = i % TOPICS.len();
    let mut qs = vec![first];
    if i.is_multiple_of(3) {
        qs.push((first + 1 + (i / TOPICS.len()) % (TOPICS.len() - 1)) % TOPICS.len());
    }
    qs
}

fn email_of(i: usize) -> String {
    format!("subscriber{i:05}@example.org")
}

// ---- measurement helpers -------------------------------------------------------------------

/// CPU time (user + system) of this process so far, in seconds.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 of the whole line: 11 and 12 after ')'.
    (ticks(11) + ticks(12)) / 100.0
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

// ---- the benchmark -------------------------------------------------------------------------

/// Runs the benchmark; false when a check failed.
async fn bench(args: Args) -> bool {
    let clock = PhaseClock::default();
    clock.install();
    let setup_started = Instant::now();
    let mut smtp = Smtp::start(args.smtp).await;

    let dir = tempfile::tempdir().unwrap();
    let (_server, database) = postgres::bench_database(args.postgres);
    let mut config = format!("database = \"{database}\"\n");
    config.push_str("[mail]\nfrom = \"Tidings <alerts@tidings.example>\"\n");
    config.push_str("transport = \"smtp\"\nsend_timeout = \"30s\"\n");
    if let Some(c) = args.concurrency {
        config.push_str(&format!("concurrency = {c}\n"));
    }
    config.push_str(&format!(
        "[mail.smtp]\nhost = \"127.0.0.1\"\nport = {}\ntls = \"none\"\n\
         [web]\nbase_url = \"https://alerts.tidings.example/\"\n",
        smtp.port()
    ));
    for (id, name, tags) in FEEDS {
        let tags: Vec<String> = tags.iter().map(|t| format!("{t:?}")).collect();
        config.push_str(&format!(
            "[[feeds]]\nid = \"{id}\"\nname = \"{name}\"\nurl = \"http://127.0.0.1:9/feeds/{id}.xml\"\ntags = [{}]\n",
            tags.join(", ")
        ));
    }
    let path = dir.path().join("config.toml");
    std::fs::write(&path, config).unwrap();
    let mut apps = Vec::new();
    for _ in 0..args.instances {
        apps.push(App::open(Config::load(&path).unwrap()).await.unwrap());
    }
    let app = &apps[0];
    let now = Utc::now();

    // Subscribers.
    for i in 0..args.subscribers {
        let email = email_of(i);
        for q in queries_of(i) {
            app.store
                .add_subscription(
                    &email,
                    TOPICS[q].0,
                    Schedule::Immediate,
                    chrono_tz::Tz::UTC,
                    now,
                )
                .await
                .unwrap();
        }
    }

    // Items and their matches, stored as a poll stores them (the baseline poll).
    let matcher = app.current_matcher().await.unwrap();
    let feeds = app
        .store
        .claim_feeds(now, Duration::from_secs(300), false)
        .await
        .unwrap();
    let backlog = chrono::Duration::from_std(app.config.poll.initial_backlog).unwrap();
    let items = items_by_feed(now);
    let parsed: Vec<Query> = TOPICS
        .iter()
        .map(|(q, _)| Query::parse(q).unwrap())
        .collect();
    // Which stories each query matches, to check each subject against.
    let mut matched_by_query: Vec<BTreeSet<String>> = vec![BTreeSet::new(); TOPICS.len()];
    let (mut stored_items, mut stored_matches) = (0, 0);
    for feed in feeds {
        let f = FEEDS.iter().position(|(id, ..)| *id == feed.id).unwrap();
        let tags: Vec<String> = FEEDS[f].2.iter().map(|t| t.to_string()).collect();
        let document = |item: &Item| {
            Document::new(&item.title, &body_text(&item.summary, &item.content))
                .with_source(&feed.id, &tags)
        };
        for item in &items[f] {
            let doc = document(item);
            for (q, query) in parsed.iter().enumerate() {
                if query.matches(&doc) {
                    matched_by_query[q].insert(item.link.clone().unwrap());
                }
            }
        }
        let poll = SuccessfulPoll {
            items: items[f].clone().into(),
            etag: None,
            last_modified: None,
            full_fetch: true,
            moved_to: None,
            repairs: std::sync::Arc::new([]),
            body_hash: None,
            now,
            next_poll_at: now + chrono::Duration::minutes(15),
            baseline_cutoff: now - backlog,
            matcher_generation: matcher.generation,
            snapshot: None,
        };
        let StoreOutcome::Stored(stored) = app
            .store
            .store_items(&feed, poll, {
                let (matcher, id, tags) = (matcher.clone(), feed.id.clone(), tags.clone());
                move |item, _| {
                    let body = body_text(&item.summary, &item.content);
                    let doc = Document::new(&item.title, &body).with_source(&id, &tags);
                    let found = matcher.matcher.find_matches(&doc);
                    found.into_iter().map(SubscriptionId).collect()
                }
            })
            .await
            .unwrap()
        else {
            panic!("subscriptions changed while the benchmark stored items");
        };
        stored_items += stored.new_items;
        stored_matches += stored.matches;
    }
    let expected: HashMap<String, usize> = (0..args.subscribers)
        .map(|i| {
            let stories: BTreeSet<&String> = queries_of(i)
                .into_iter()
                .flat_map(|q| &matched_by_query[q])
                .collect();
            (email_of(i), stories.len())
        })
        .collect();
    let per_subscriber: Vec<usize> = expected.values().copied().collect();
    let setup_secs = setup_started.elapsed().as_secs_f64();
    println!(
        "digest_bench: {} subscribers, {} subscriptions, {} items in {} feeds, {} pending matches; \
         stories per digest min {} / mean {:.1} / max {}; mail.concurrency {}; SMTP server: {}; \
         database: {}, {} instance(s)",
        args.subscribers,
        app.store.subscriptions().await.unwrap().queries.len(),
        stored_items,
        FEEDS.len(),
        stored_matches,
        per_subscriber.iter().min().unwrap_or(&0),
        per_subscriber.iter().sum::<usize>() as f64 / per_subscriber.len().max(1) as f64,
        per_subscriber.iter().max().unwrap_or(&0),
        app.config.mail.concurrency,
        match args.smtp {
            SmtpMode::Child => "child process, 127.0.0.1",
            SmtpMode::InProcess => "in-process, 127.0.0.1",
        },
        if args.postgres {
            "PostgreSQL"
        } else {
            "SQLite"
        },
        args.instances,
    );
    println!(
        "setup (not counted): {setup_secs:.2} s; load average before run: {}",
        load_average()
    );

    // The timed part.
    reset_peak_rss();
    clock.reset();
    let cpu_before = cpu_seconds();
    let started = Instant::now();
    // Every instance runs the round at once; their summaries add up.
    let rounds =
        futures_util::future::join_all(apps.iter().map(|app| send_digests(app, now, false))).await;
    let summary = rounds.into_iter().try_fold(
        tidings::pipeline::DigestSummary::default(),
        |mut all, round| {
            let round = round?;
            all.queued += round.queued;
            all.delivery += round.delivery;
            anyhow::Ok(all)
        },
    );
    let ended = Instant::now();
    let cpu = cpu_seconds() - cpu_before;
    let peak = peak_rss_mib();
    let phases = clock.get();
    let summary = match summary {
        Ok(s) => s,
        Err(e) => {
            println!("FAIL: send_digests: {e:#}");
            return false;
        }
    };

    let total = (ended - started).as_secs_f64();
    let queue_end = phases.last_queued.unwrap_or(started);
    let first_sent = phases.first_sent.unwrap_or(ended);
    let queue = (queue_end - started).as_secs_f64();
    let deliver = (ended - queue_end).as_secs_f64();
    let n = summary.queued as f64;
    let sent = summary.delivery.sent as f64;
    println!(
        "render + queue: {queue:.2} s, {:.0} digests/s ({} queued)",
        n / queue,
        summary.queued
    );
    if first_sent >= queue_end {
        println!(
            "deliver:        {deliver:.2} s, {:.0} messages/s ({} sent, {} retrying, {} failed; \
             first sent {:.1} ms after the last queued)",
            sent / deliver,
            summary.delivery.sent,
            summary.delivery.retrying,
            summary.delivery.failed,
            (first_sent - queue_end).as_secs_f64() * 1000.0
        );
    } else {
        // A library that delivers while it still queues: no separate delivery phase.
        let window = (ended - first_sent).as_secs_f64();
        println!(
            "deliver:        overlapped with queueing: first sent {:.2} s after the start, \
             {window:.2} s from first sent to last, {:.0} messages/s over that window; \
             {deliver:.2} s after the last queued ({} sent, {} retrying, {} failed)",
            (first_sent - started).as_secs_f64(),
            sent / window,
            summary.delivery.sent,
            summary.delivery.retrying,
            summary.delivery.failed
        );
    }
    println!(
        "end to end:     {total:.2} s, {:.0} messages/s (target 500); CPU {cpu:.2} s \
         ({:.0}% of one core) in this process; peak RSS {peak:.1} MiB",
        sent / total,
        cpu / total * 100.0
    );

    // Checks.
    let mut failures = Vec::new();
    let want = args.subscribers;
    if summary.queued != want || summary.delivery.sent != want {
        failures.push(format!(
            "send_digests queued {} and sent {}, expected {want} each",
            summary.queued, summary.delivery.sent
        ));
    }
    if summary.delivery.retrying + summary.delivery.failed + summary.delivery.paused != 0 {
        failures.push(format!("delivery problems: {:?}", summary.delivery));
    }
    if phases.queued_events != want || phases.sent_events != want {
        failures.push(format!(
            "events: {} queued, {} sent (phase boundary unreliable)",
            phases.queued_events, phases.sent_events
        ));
    }
    let outbox = app.store.outbox().await.unwrap();
    let not_sent = outbox
        .iter()
        .filter(|m| m.status != OutboxStatus::Sent)
        .count();
    if outbox.len() != want || not_sent != 0 {
        failures.push(format!(
            "outbox has {} rows, {not_sent} not sent; expected {want}, all sent",
            outbox.len()
        ));
    }
    let mut by_recipient: HashMap<&str, &tidings::store::OutboxMessage> = HashMap::new();
    for m in &outbox {
        if by_recipient.insert(&m.recipient, m).is_some() {
            failures.push(format!("two outbox rows for {}", m.recipient));
        }
        let stories = m
            .subject
            .strip_prefix("Tidings: ")
            .and_then(|s| s.split(' ').next())
            .and_then(|n| n.parse::<usize>().ok());
        if stories != expected.get(&m.recipient).copied() {
            failures.push(format!(
                "{}: subject {:?}, expected {:?} stories",
                m.recipient,
                m.subject,
                expected.get(&m.recipient)
            ));
        }
    }
    let received = smtp.arrivals();
    let mut per_rcpt: HashMap<&str, usize> = HashMap::new();
    for a in &received {
        if a.rcpt_to.len() != 1 {
            failures.push(format!("message with recipients {:?}", a.rcpt_to));
        }
        for r in &a.rcpt_to {
            *per_rcpt.entry(r).or_default() += 1;
            match by_recipient.get(r.as_str()) {
                None => failures.push(format!("message to unknown recipient {r}")),
                Some(row) if row.message_id != a.message_id => failures.push(format!(
                    "{r}: received Message-ID {}, outbox has {}",
                    a.message_id, row.message_id
                )),
                Some(_) => {}
            }
        }
    }
    for i in 0..want {
        let email = email_of(i);
        let got = per_rcpt.get(email.as_str()).copied().unwrap_or(0);
        if got != 1 {
            failures.push(format!(
                "{email} received {got} messages, expected exactly 1"
            ));
        }
    }
    if received.len() != want {
        failures.push(format!(
            "server received {} messages, expected {want}",
            received.len()
        ));
    }
    let mean_bytes =
        received.iter().map(|a| a.bytes).sum::<usize>() as f64 / received.len().max(1) as f64;
    if failures.is_empty() {
        println!(
            "check: OK: {want} recipients, exactly one message each ({} received, mean {:.1} KiB), \
             Message-IDs and story counts match the outbox",
            received.len(),
            mean_bytes / 1024.0
        );
        true
    } else {
        println!("check: FAILED ({} problems)", failures.len());
        for f in failures.iter().take(20) {
            println!("  {f}");
        }
        false
    }
}
