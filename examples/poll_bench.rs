//! Polling benchmark: N feeds served from loopback with a fixed latency per response;
//! prints feeds/s, items ingested/s and peak RSS for the first cycle (everything new)
//! and the second (everything answers 304).
//!
//! ```sh
//! cargo run --release --example poll_bench                  # 10,000 feeds, 20 items, 20 ms
//! cargo run --release --example poll_bench -- --feeds 2000 --concurrency 16
//! cargo run --release --example poll_bench -- --backend postgres --instances 3
//! ```
//!
//! With `--instances N`, N Tidings instances (each its own `App`: its own database
//! connections, connection slots and matcher) poll the same database at once, each running
//! the daemon's cycle (due feeds, claimed in batches), until every feed is polled:
//! `concurrency` and `per_host` hold for all of them together, as in a cluster. They share
//! this process's two cores, as instances on one machine would. `--backend postgres`
//! starts a PostgreSQL server of its own (Debian's `postgresql` package) in a temporary
//! folder, stopped at the end.
//!
//! The feed server runs in a child process (this same binary with `--serve`), so the
//! RSS figures are Tidings' own. Feeds are spread over 128 loopback addresses
//! (127.0.1.0–127.0.1.127) so that the per-host limit applies as it would to 128
//! publishers.

mod common;
#[path = "../tests/support/postgres.rs"]
#[allow(dead_code)]
mod postgres;

use common::{peak_rss_mib, reset_peak_rss};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::Path;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use tidings::config::Config;
use tidings::digest::Schedule;
use tidings::{App, poll_feeds};

const HOSTS: usize = 128;

struct Args {
    feeds: usize,
    items: usize,
    latency_ms: u64,
    concurrency: usize,
    per_host: usize,
    /// `Some(N)`: N instances running the daemon's cycle; `None`: `tidings poll`'s.
    instances: Option<usize>,
    postgres: bool,
}

fn parse_args() -> (bool, Args) {
    let mut args = Args {
        feeds: 10_000,
        items: 20,
        latency_ms: 20,
        concurrency: 64,
        per_host: 2,
        instances: None,
        postgres: false,
    };
    let mut serve = false;
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut num = || {
            it.next()
                .and_then(|v| v.parse::<usize>().ok())
                .expect("a number")
        };
        match a.as_str() {
            "--serve" => serve = true,
            "--feeds" => args.feeds = num(),
            "--items" => args.items = num(),
            "--latency-ms" => args.latency_ms = num() as u64,
            "--concurrency" => args.concurrency = num(),
            "--per-host" => args.per_host = num(),
            "--instances" => args.instances = Some(num().max(1)),
            "--backend" => match it.next().as_deref() {
                Some("sqlite") => args.postgres = false,
                Some("postgres") => args.postgres = true,
                other => panic!("--backend sqlite|postgres, not {other:?}"),
            },
            other => panic!("unknown argument {other}"),
        }
    }
    (serve, args)
}

fn main() {
    let (serve, args) = parse_args();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    if serve {
        runtime.block_on(serve_feeds(args));
    } else {
        runtime.block_on(bench(args));
    }
}

/// The feed server: `/feed/N` is an RSS document of `items` items with a stable ETag.
async fn serve_feeds(args: Args) {
    let items = args.items;
    let latency = Duration::from_millis(args.latency_ms);
    let app = Router::new().route(
        "/feed/{n}",
        axum::routing::get(move |Path(n): Path<usize>, headers: HeaderMap| async move {
            tokio::time::sleep(latency).await;
            let etag = format!("\"feed-{n}-v1\"");
            if headers
                .get(header::IF_NONE_MATCH)
                .is_some_and(|v| v.as_bytes() == etag.as_bytes())
            {
                return StatusCode::NOT_MODIFIED.into_response();
            }
            let body = feed_document(n, items);
            Response::builder()
                .header(header::CONTENT_TYPE, "application/rss+xml")
                .header(header::ETAG, etag)
                .body(axum::body::Body::from(body))
                .unwrap()
        }),
    );
    let mut ports = Vec::new();
    let mut tasks = Vec::new();
    for h in 0..HOSTS {
        let listener = tokio::net::TcpListener::bind(("127.0.1.".to_string() + &h.to_string(), 0))
            .await
            .expect("bind loopback");
        ports.push(listener.local_addr().unwrap().port());
        tasks.push(tokio::spawn(
            axum::serve(listener, app.clone()).into_future(),
        ));
    }
    // Tell the parent where we listen, then serve until killed.
    println!(
        "{}",
        ports
            .iter()
            .map(u16::to_string)
            .collect::<Vec<_>>()
            .join(",")
    );
    for t in tasks {
        let _ = t.await;
    }
}

fn feed_document(n: usize, items: usize) -> String {
    const TOPICS: &[&str] = &[
        "asylum interview backlog",
        "H-1B registration lottery",
        "green card interview waiver",
        "TPS extension for Venezuela",
        "visa bulletin movement",
        "naturalization fee change",
        "parole program update",
        "student visa OPT rules",
    ];
    let mut s = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><rss version=\"2.0\"><channel><title>Feed {n}</title><link>https://publisher{n}.example/</link><description>bench</description>"
    );
    let now = Utc::now();
    for i in 0..items {
        let topic = TOPICS[(n + i) % TOPICS.len()];
        let published = (now - chrono::Duration::minutes(30 * i as i64 + 5)).to_rfc2822();
        s.push_str(&format!(
            "<item><title>{topic} ({n}/{i})</title><link>https://publisher{n}.example/news/{i}</link>\
             <guid>feed-{n}-item-{i}</guid><pubDate>{published}</pubDate>\
             <description>&lt;p&gt;Officials announced changes affecting {topic}. Applicants should review the \
             new guidance, check deadlines and consult the official notice before filing.&lt;/p&gt;</description></item>"
        ));
    }
    s.push_str("</channel></rss>");
    s
}

async fn bench(args: Args) {
    let mut feed_server = Command::new(std::env::current_exe().unwrap())
        .args([
            "--serve",
            "--items",
            &args.items.to_string(),
            "--latency-ms",
            &args.latency_ms.to_string(),
        ])
        .stdout(Stdio::piped())
        .spawn()
        .expect("start feed server");
    let mut line = String::new();
    BufReader::new(feed_server.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let ports: Vec<u16> = line.trim().split(',').map(|p| p.parse().unwrap()).collect();

    let dir = tempfile::tempdir().unwrap();
    let (server, database) = postgres::bench_database(args.postgres);
    let mut config = format!(
        "database = \"{database}\"\n\
         [poll]\nconcurrency = {}\nper_host = {}\ntimeout = \"30s\"\n[mail]\ntransport = \"file\"\n",
        args.concurrency, args.per_host
    );
    for n in 0..args.feeds {
        let h = n % HOSTS;
        config.push_str(&format!(
            "[[feeds]]\nid = \"feed-{n}\"\nurl = \"http://127.0.1.{h}:{}/feed/{n}\"\n",
            ports[h]
        ));
    }
    let path = dir.path().join("config.toml");
    std::fs::write(&path, config).unwrap();
    let mut apps = Vec::new();
    for _ in 0..args.instances.unwrap_or(1) {
        apps.push(App::open(Config::load(&path).unwrap()).await.unwrap());
    }
    let app = &apps[0];
    let now = Utc::now();
    for (i, q) in [
        "asylum",
        "\"H-1B\" OR H1B",
        "\"green card\" -lottery",
        "TPS Venezuela",
        "visa bulletin",
    ]
    .iter()
    .enumerate()
    {
        app.store
            .add_subscription(
                &format!("bench{i}@example.org"),
                q,
                Schedule::Immediate,
                chrono_tz::Tz::UTC,
                now,
            )
            .await
            .unwrap();
    }

    println!(
        "poll_bench: {} feeds × {} items, {} ms latency, concurrency {}, per host {} ({} hosts); \
         {} on {}",
        args.feeds,
        args.items,
        args.latency_ms,
        args.concurrency,
        args.per_host,
        HOSTS,
        match args.instances {
            Some(n) => format!("{} (daemon cycles)", tidings::output::count(n, "instance")),
            None => "one `tidings poll`".to_string(),
        },
        if args.postgres {
            "PostgreSQL"
        } else {
            "SQLite"
        }
    );
    for (cycle, label) in [(1, "first cycle (all new)"), (2, "second cycle (all 304)")] {
        reset_peak_rss();
        let started = Instant::now();
        // Every feed due: the second cycle polls an hour on, when all are due again (and
        // no full fetch is due yet).
        let at = Utc::now() + chrono::Duration::hours(cycle - 1);
        let s = match args.instances {
            None => poll_feeds(app, at, false).await.unwrap(),
            Some(_) => all_instances(&apps, at).await,
        };
        let secs = started.elapsed().as_secs_f64();
        println!(
            "cycle {cycle}: {label}: {:.2} s, {:.0} feeds/s, {:.0} items/s ingested, peak RSS {:.1} MiB \
             (updated {}, not modified {}, failed {}, new items {}, matches {})",
            secs,
            s.feeds as f64 / secs,
            s.new_items as f64 / secs,
            peak_rss_mib(),
            s.updated,
            s.not_modified,
            s.failed,
            s.new_items,
            s.matches
        );
    }
    let _ = feed_server.kill();
    let _ = feed_server.wait();
    drop(apps);
    drop(server);
}

/// Daemon cycles of every instance at once, again until no feed is left due at `at`: what
/// they polled, added up.
async fn all_instances(apps: &[App], at: chrono::DateTime<Utc>) -> tidings::pipeline::PollSummary {
    let mut total = tidings::pipeline::PollSummary::default();
    loop {
        let cycles = apps.iter().map(|app| poll_feeds(app, at, true));
        let summaries = futures_util::future::join_all(cycles).await;
        let mut polled = 0;
        for s in summaries {
            let s = s.unwrap();
            polled += s.feeds;
            total.feeds += s.feeds;
            total.updated += s.updated;
            total.not_modified += s.not_modified;
            total.failed += s.failed;
            total.new_items += s.new_items;
            total.matches += s.matches;
        }
        if polled == 0 {
            return total;
        }
    }
}
