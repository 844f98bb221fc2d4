//! Heavy-feed benchmark (issue 12, item 5): an item whose description holds N nested
//! `<div>`s (escaped in the XML). Prints the parse time of such feeds for growing N, then
//! a cycle of 500 feeds from loopback with and without the 100k-deep one in it: the whole
//! cycle, when the other feeds were all done, and a second cycle (the heavy feed is served
//! without validators, so it is fetched in full every time).
//!
//! ```sh
//! cargo run --release --example heavy_feed_bench
//! cargo run --release --example heavy_feed_bench -- --feeds 500 --depth 100000 --dom
//! ```
//!
//! `--dom` also times the DOM tree builder (scraper/html5ever) on the same markup, for
//! comparison with the token stream `html_to_text` reads. The feed server runs in a child
//! process (this same binary with `--serve`) on 64 loopback addresses, 10 ms per response.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::Path;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use tidings::App;
use tidings::config::Config;
use tidings::digest::Schedule;
use tidings::parse::{html_to_text, parse_feed};
use tidings::pipeline::{FeedOutcome, PollObserver, poll_feeds_observed};

const HOSTS: usize = 64;
const ITEMS: usize = 20;
const LATENCY: Duration = Duration::from_millis(10);

struct Args {
    serve: bool,
    feeds: usize,
    depth: usize,
    dom: bool,
}

fn parse_args() -> Args {
    let mut args = Args {
        serve: false,
        feeds: 500,
        depth: 100_000,
        dom: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut num = || {
            it.next()
                .and_then(|v| v.parse::<usize>().ok())
                .expect("a number")
        };
        match a.as_str() {
            "--serve" => args.serve = true,
            "--feeds" => args.feeds = num(),
            "--depth" => args.depth = num(),
            "--dom" => args.dom = true,
            other => panic!("unknown argument {other}"),
        }
    }
    args
}

fn main() {
    let args = parse_args();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    if args.serve {
        runtime.block_on(serve_feeds(args.depth));
    } else {
        parse_times(&args);
        runtime.block_on(cycles(&args));
    }
}

/// `depth` nested divs around a word.
fn nested_divs(depth: usize) -> String {
    format!("{}asylum{}", "<div>".repeat(depth), "</div>".repeat(depth))
}

/// An RSS feed of one item whose description is `depth` nested divs, escaped.
fn heavy_feed(depth: usize) -> String {
    heavy_feed_with(&nested_divs(depth))
}

/// An RSS feed of one item whose description is `html`, escaped.
fn heavy_feed_with(html: &str) -> String {
    let escaped = html.replace('<', "&lt;").replace('>', "&gt;");
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><rss version=\"2.0\"><channel><title>Heavy</title>\
         <link>https://heavy.example/</link><description>nested</description><item><title>Deep</title>\
         <link>https://heavy.example/1</link><guid>heavy-1</guid><description>{escaped}</description>\
         </item></channel></rss>"
    )
}

fn parse_times(args: &Args) {
    let base = url::Url::parse("https://heavy.example/feed").unwrap();
    println!("parse_feed on a feed with one item of N nested <div>s (release, one core):");
    let mut depths = vec![10_000, 20_000, 40_000];
    depths.push(args.depth);
    depths.dedup();
    for depth in depths {
        let feed = heavy_feed(depth);
        let started = Instant::now();
        let parsed = parse_feed(feed.as_bytes(), None, &base, Utc::now()).unwrap();
        let took = started.elapsed();
        assert_eq!(parsed.items[0].summary, "asylum");
        let mut line = format!(
            "  N = {depth:>7}: {:>5.2} MB feed, parse_feed {:>8.1} ms",
            feed.len() as f64 / 1e6,
            ms(took)
        );
        let html = nested_divs(depth);
        let started = Instant::now();
        assert_eq!(html_to_text(&html), "asylum");
        line += &format!(", html_to_text {:>7.1} ms", ms(started.elapsed()));
        if args.dom && depth <= 40_000 {
            let started = Instant::now();
            let dom = scraper::Html::parse_fragment(&html);
            std::hint::black_box(&dom);
            line += &format!(", DOM tree (before) {:>8.1} ms", ms(started.elapsed()));
        }
        println!("{line}");
    }
    println!("parse_feed on a feed with one item whose HTML has one tag of N attributes:");
    for attributes in [50_000, 100_000, 450_000] {
        let attrs: String = (0..attributes).map(|n| format!(" a{n}=x")).collect();
        let html = format!("<p{attrs}>asylum</p>");
        let feed = heavy_feed_with(&html);
        let started = Instant::now();
        let parsed = parse_feed(feed.as_bytes(), None, &base, Utc::now()).unwrap();
        let took = started.elapsed();
        assert_eq!(parsed.items[0].summary, "asylum");
        println!(
            "  N = {attributes:>7}: {:>5.2} MB feed, parse_feed {:>8.1} ms",
            feed.len() as f64 / 1e6,
            ms(took)
        );
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// The feed server: `/feed/N` is an RSS document of `ITEMS` items with a stable ETag;
/// `/heavy` is the heavy feed, without validators (the issue's server sends none).
async fn serve_feeds(depth: usize) {
    let heavy = Arc::new(heavy_feed(depth));
    let app = Router::new()
        .route(
            "/feed/{n}",
            axum::routing::get(|Path(n): Path<usize>, headers: HeaderMap| async move {
                tokio::time::sleep(LATENCY).await;
                let etag = format!("\"feed-{n}-v1\"");
                if headers
                    .get(header::IF_NONE_MATCH)
                    .is_some_and(|v| v.as_bytes() == etag.as_bytes())
                {
                    return StatusCode::NOT_MODIFIED.into_response();
                }
                Response::builder()
                    .header(header::CONTENT_TYPE, "application/rss+xml")
                    .header(header::ETAG, etag)
                    .body(axum::body::Body::from(feed_document(n)))
                    .unwrap()
            }),
        )
        .route(
            "/heavy",
            axum::routing::get(move || {
                let heavy = heavy.clone();
                async move {
                    tokio::time::sleep(LATENCY).await;
                    Response::builder()
                        .header(header::CONTENT_TYPE, "application/rss+xml")
                        .body(axum::body::Body::from(heavy.as_str().to_owned()))
                        .unwrap()
                }
            }),
        );
    let mut ports = Vec::new();
    let mut tasks = Vec::new();
    for h in 0..HOSTS {
        let listener = tokio::net::TcpListener::bind(format!("127.0.2.{h}:0"))
            .await
            .expect("bind loopback");
        ports.push(listener.local_addr().unwrap().port());
        tasks.push(tokio::spawn(
            axum::serve(listener, app.clone()).into_future(),
        ));
    }
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

fn feed_document(n: usize) -> String {
    const TOPICS: &[&str] = &[
        "asylum interview backlog",
        "H-1B registration lottery",
        "green card interview waiver",
        "TPS extension for Venezuela",
    ];
    let mut s = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><rss version=\"2.0\"><channel><title>Feed {n}</title>\
         <link>https://publisher{n}.example/</link><description>bench</description>"
    );
    for i in 0..ITEMS {
        let topic = TOPICS[(n + i) % TOPICS.len()];
        s.push_str(&format!(
            "<item><title>{topic} ({n}/{i})</title><link>https://publisher{n}.example/news/{i}</link>\
             <guid>feed-{n}-item-{i}</guid><description>&lt;p&gt;Officials announced changes affecting \
             {topic}. Applicants should review the new guidance.&lt;/p&gt;</description></item>"
        ));
    }
    s.push_str("</channel></rss>");
    s
}

/// When each feed of a cycle finished, from the cycle's start.
struct Finishing {
    started: Instant,
    done: Mutex<Vec<(String, Duration)>>,
}

impl PollObserver for Finishing {
    fn finished(&self, feed: &str, _outcome: Option<&FeedOutcome>) {
        let at = self.started.elapsed();
        self.done.lock().unwrap().push((feed.to_string(), at));
    }
}

async fn cycles(args: &Args) {
    let mut server = Command::new(std::env::current_exe().unwrap())
        .args(["--serve", "--depth", &args.depth.to_string()])
        .stdout(Stdio::piped())
        .spawn()
        .expect("start feed server");
    let mut line = String::new();
    BufReader::new(server.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let ports: Vec<u16> = line.trim().split(',').map(|p| p.parse().unwrap()).collect();

    println!(
        "\n{} feeds × {ITEMS} items from loopback ({HOSTS} hosts, {} ms per response, \
         concurrency 16, per host 2):",
        args.feeds,
        LATENCY.as_millis()
    );
    for heavy in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let mut config = String::from(
            "[poll]\nconcurrency = 16\nper_host = 2\ntimeout = \"120s\"\n\
             [mail]\ntransport = \"file\"\n",
        );
        for n in 0..args.feeds {
            let h = n % HOSTS;
            let path = if heavy && n == 0 {
                "/heavy".to_string()
            } else {
                format!("/feed/{n}")
            };
            config.push_str(&format!(
                "[[feeds]]\nid = \"feed-{n}\"\nurl = \"http://127.0.2.{h}:{}{path}\"\n",
                ports[h]
            ));
        }
        let path = dir.path().join("config.toml");
        std::fs::write(&path, config).unwrap();
        let app = App::open(Config::load(&path).unwrap()).await.unwrap();
        app.store
            .add_subscription(
                "bench@example.org",
                "asylum OR \"H-1B\"",
                Schedule::Immediate,
                chrono_tz::Tz::UTC,
                Utc::now(),
            )
            .await
            .unwrap();
        let label = if heavy {
            format!("with the {}-div feed", args.depth)
        } else {
            "without it".to_string()
        };
        for cycle in [1, 2] {
            let observer = Finishing {
                started: Instant::now(),
                done: Mutex::default(),
            };
            let s = poll_feeds_observed(&app, Utc::now(), false, &observer)
                .await
                .unwrap();
            let total = observer.started.elapsed();
            let done = observer.done.into_inner().unwrap();
            let others = done
                .iter()
                .filter(|(id, _)| !(heavy && id == "feed-0"))
                .map(|(_, at)| *at)
                .max()
                .unwrap_or_default();
            let heavy_at = done
                .iter()
                .find(|(id, _)| heavy && id == "feed-0")
                .map(|(_, at)| format!(", the heavy feed done at {:.2} s", at.as_secs_f64()))
                .unwrap_or_default();
            println!(
                "  {label:<26} cycle {cycle}: {:>6.2} s; the other feeds all done at {:.2} s{heavy_at} \
                 (updated {}, not modified {}, failed {})",
                total.as_secs_f64(),
                others.as_secs_f64(),
                s.updated,
                s.not_modified,
                s.failed
            );
        }
    }
    let _ = server.kill();
    let _ = server.wait();
}
