//! Full-text benchmark: a cycle of summary-only feeds (25 feeds × 20 items = 500 items by
//! default) whose items link to ~100 KB WordPress-style article pages, all on loopback
//! with a fixed latency per response, polled and matched twice over a fresh database:
//! once as plain feeds, once with `full_text = true` (the poll, then the article job that
//! fetches, extracts and matches every page). Prints the time, items/s, pages/s and the
//! peak RSS of each.
//!
//! ```sh
//! cargo run --release --example full_text_bench
//! cargo run --release --example full_text_bench -- --feeds 50 --latency-ms 50 --full-text-concurrency 8
//! ```
//!
//! Pages are spread over 8 loopback addresses (127.0.2.0–7) that the fetch policy is told
//! to treat as public, so the per-host limit applies as to 8 publishers. The servers run
//! in this process (their share of the RSS is small: the pages are built once).

mod common;

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::Path;
use axum::http::header;
use axum::response::IntoResponse;
use chrono::Utc;
use common::{peak_rss_mib, reset_peak_rss};
use tidings::config::Config;
use tidings::digest::Schedule;
use tidings::fetch::{AddressPolicy, Fetcher};
use tidings::pipeline::fetch_articles;
use tidings::{App, poll_feeds};

const HOSTS: u8 = 8;

struct Args {
    feeds: usize,
    items: usize,
    latency_ms: u64,
    full_text_concurrency: usize,
}

fn parse_args() -> Args {
    let mut args = Args {
        feeds: 25,
        items: 20,
        latency_ms: 20,
        full_text_concurrency: 4,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut num = || {
            it.next()
                .and_then(|v| v.parse::<usize>().ok())
                .expect("a number")
        };
        match a.as_str() {
            "--feeds" => args.feeds = num(),
            "--items" => args.items = num(),
            "--latency-ms" => args.latency_ms = num() as u64,
            "--full-text-concurrency" => args.full_text_concurrency = num(),
            other => panic!("unknown argument {other}"),
        }
    }
    args
}

/// A ~100 KB article page: the test fixture's story, chrome and all, with the site's
/// usual weight (inline styles and scripts, long menus) around it.
fn article_page(n: usize) -> String {
    let page = include_str!("../tests/fixtures/article-wordpress.html");
    let padding = format!(
        "<script>window.__site = {{\"menu\": [{}]}};</script>",
        (0..3400)
            .map(|i| format!("{{\"id\":{i},\"label\":\"Section {i}\"}}"))
            .collect::<Vec<_>>()
            .join(",")
    );
    page.replace("Bodyonlyword", &format!("Story{n}word"))
        .replace("</head>", &format!("{padding}</head>"))
}

fn feed_document(host_ports: &[(Ipv4Addr, u16)], feed: usize, items: usize) -> String {
    let mut s = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><rss version=\"2.0\"><channel><title>Feed {feed}</title>"
    );
    let now = Utc::now();
    for i in 0..items {
        let (ip, port) = host_ports[(feed + i) % host_ports.len()];
        let published = (now - chrono::Duration::minutes(5 + i as i64)).to_rfc2822();
        s.push_str(&format!(
            "<item><title>Story {feed}/{i}</title><link>http://{ip}:{port}/article/{feed}/{i}</link>\
             <guid>feed-{feed}-item-{i}</guid><pubDate>{published}</pubDate>\
             <description>USCIS announced a change for some applicants. Read more.</description></item>"
        ));
    }
    s.push_str("</channel></rss>");
    s
}

async fn serve(latency: Duration, feeds: usize, items: usize) -> Vec<(Ipv4Addr, u16)> {
    let mut listeners = Vec::new();
    for h in 0..HOSTS {
        let ip = Ipv4Addr::new(127, 0, 2, h);
        let listener = tokio::net::TcpListener::bind((ip, 0)).await.unwrap();
        listeners.push((ip, listener));
    }
    let host_ports: Vec<(Ipv4Addr, u16)> = listeners
        .iter()
        .map(|(ip, l)| (*ip, l.local_addr().unwrap().port()))
        .collect();
    let pages: Arc<Vec<String>> = Arc::new((0..64).map(article_page).collect());
    let documents: Arc<Vec<String>> = Arc::new(
        (0..feeds)
            .map(|f| feed_document(&host_ports, f, items))
            .collect(),
    );
    let router = Router::new()
        .route(
            "/feed/{n}",
            axum::routing::get(move |Path(n): Path<usize>| {
                let documents = documents.clone();
                async move {
                    tokio::time::sleep(latency).await;
                    (
                        [(header::CONTENT_TYPE, "application/rss+xml")],
                        documents[n].clone(),
                    )
                        .into_response()
                }
            }),
        )
        .route(
            "/article/{feed}/{item}",
            axum::routing::get(move |Path((feed, item)): Path<(usize, usize)>| {
                let pages = pages.clone();
                async move {
                    tokio::time::sleep(latency).await;
                    (
                        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
                        pages[(feed * 31 + item) % pages.len()].clone(),
                    )
                        .into_response()
                }
            }),
        );
    for (_, listener) in listeners {
        tokio::spawn(axum::serve(listener, router.clone()).into_future());
    }
    host_ports
}

async fn open(dir: &std::path::Path, args: &Args, hosts: &[(Ipv4Addr, u16)], full: bool) -> App {
    let mut config = format!(
        "database = \"bench.db\"\n[poll]\nconcurrency = 16\nper_host = 2\n\
         full_text = {full}\nfull_text_concurrency = {}\n[mail]\ntransport = \"file\"\n",
        args.full_text_concurrency
    );
    for n in 0..args.feeds {
        let (ip, port) = hosts[n % hosts.len()];
        config.push_str(&format!(
            "[[feeds]]\nid = \"feed-{n}\"\nurl = \"http://{ip}:{port}/feed/{n}\"\n"
        ));
    }
    let path = dir.join("config.toml");
    std::fs::write(&path, config).unwrap();
    let mut app = App::open(Config::load(&path).unwrap()).await.unwrap();
    let policy = AddressPolicy {
        treat_as_public: hosts.iter().map(|(ip, _)| IpAddr::V4(*ip)).collect(),
        ..AddressPolicy::default()
    };
    app.fetcher = Fetcher::with_policy(&app.config.poll, policy).unwrap();
    for (i, q) in [
        "asylum",
        "Story7word OR Story13word",
        "\"Federal Register\"",
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
                Utc::now(),
            )
            .await
            .unwrap();
    }
    app
}

#[tokio::main]
async fn main() {
    let args = parse_args();
    let latency = Duration::from_millis(args.latency_ms);
    let hosts = serve(latency, args.feeds, args.items).await;
    println!(
        "full_text_bench: {} feeds × {} items, {} ms latency per response, {} hosts, \
         full_text_concurrency {}, pages of {} KB",
        args.feeds,
        args.items,
        args.latency_ms,
        HOSTS,
        args.full_text_concurrency,
        article_page(0).len() / 1024
    );
    for full in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let app = open(dir.path(), &args, &hosts, full).await;
        reset_peak_rss();
        let started = Instant::now();
        let now = Utc::now();
        let poll = poll_feeds(&app, now, false).await.unwrap();
        let polled = started.elapsed().as_secs_f64();
        let read = fetch_articles(&app, now).await.unwrap();
        let secs = started.elapsed().as_secs_f64();
        let items = poll.new_items as f64;
        println!(
            "{}: {:.2} s ({:.2} s polling, {:.2} s articles), {:.0} items/s, {:.0} pages/s, \
             peak RSS {:.1} MiB (new items {}, articles read {}, without a story {}, failed {}, \
             matches {})",
            if full {
                "full text on "
            } else {
                "full text off"
            },
            secs,
            polled,
            secs - polled,
            items / secs,
            if full {
                read.articles as f64 / (secs - polled)
            } else {
                0.0
            },
            peak_rss_mib(),
            poll.new_items,
            read.ok,
            read.none,
            read.failed,
            poll.matches + read.matches
        );
    }
}
