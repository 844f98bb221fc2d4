//! Ingest benchmark: feed bodies already in memory → parsed, text extracted, stored,
//! grouped into stories, languages told, matched against 1,000 subscriptions, recorded.
//! No network: the fetch is left out, so this is the work a poll does per byte it gets.
//!
//! ```sh
//! cargo run --release --example ingest_bench                 # 1,000 feeds × 20 items
//! cargo run --release --example ingest_bench -- --feeds 200 --subscriptions 10000
//! ```
//!
//! The bodies are RSS 2.0 documents as publishers write them (generated with a fixed
//! seed): HTML descriptions of 0.5–5 KB (paragraphs, links, emphasis, lists, images,
//! entities; half escaped, half in CDATA), one item in ten with a `content:encoded`
//! article of 20–50 KB, one in ten a copy of another outlet's item (the same link: one
//! story). Every item is recent, so every one can be alerted.
//!
//! Feeds are ingested one after another through `tidings::pipeline::ingest`, the same
//! function a poll calls once it has a body, into a real SQLite file. Before that, the
//! stages on their own, over the same bodies: feed-rs alone (the floor), Tidings' parse
//! (decoding, repairs, feed-rs, HTML to text, keys) and matching alone.

mod common;
#[path = "common/news.rs"]
#[allow(dead_code)]
mod news;

use std::fmt::Write as _;
use std::hint::black_box;
use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, Utc};
use common::{peak_rss_mib, reset_peak_rss};
use news::{FEEDS, FILLER, QUALIFIERS, Rng, TOPICS, as_text, sentence, subscription};
use tidings::App;
use tidings::config::Config;
use tidings::digest::Schedule;
use tidings::fetch::{Fetched, Meta, Validators};
use tidings::matcher::Document;
use tidings::parse::{body_text, parse_feed};
use tidings::pipeline::{FeedOutcome, ingest};
use url::Url;

struct Args {
    feeds: usize,
    items: usize,
    subscriptions: usize,
}

fn parse_args() -> Args {
    let mut args = Args {
        feeds: 1_000,
        items: 20,
        subscriptions: 1_000,
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
            "--subscriptions" => args.subscriptions = num(),
            other => panic!("unknown argument {other}"),
        }
    }
    args
}

/// A feed of the bench: its id (the first twelve are the news corpus's feeds, whose ids
/// and tags the subscriptions name), tags and body.
struct BenchFeed {
    id: String,
    tags: &'static [&'static str],
    url: String,
    body: Vec<u8>,
}

fn feed_id(n: usize) -> (String, &'static [&'static str]) {
    let (name, tags) = FEEDS[n % FEEDS.len()];
    if n < FEEDS.len() {
        (name.to_string(), tags)
    } else {
        (format!("{name}-{n}"), tags)
    }
}

/// Words wrapped the ways publishers' HTML wraps them.
fn html_sentence(rng: &mut Rng, focus: &[&str]) -> String {
    let plain = sentence(rng, focus);
    let mut out = String::with_capacity(plain.len() * 2);
    for (i, word) in plain.split(' ').enumerate() {
        if i > 0 {
            out.push(' ');
        }
        match rng.below(100) {
            0..=2 => write!(
                out,
                "<a href=\"https://www.example.gov/news/{}?utm_source=rss&amp;utm_medium=feed\" \
                 target=\"_blank\" rel=\"noopener\">{word}</a>",
                rng.below(100_000)
            )
            .unwrap(),
            3..=4 => write!(out, "<strong>{word}</strong>").unwrap(),
            5 => write!(out, "<em>{word}</em>").unwrap(),
            6 => write!(out, "{word}&#8217;s").unwrap(),
            7 => write!(out, "{word}&nbsp;&amp;").unwrap(),
            8 => write!(out, "&#8220;{word}&#8221;").unwrap(),
            _ => out.push_str(word),
        }
    }
    out
}

/// An HTML fragment of about `bytes` bytes about `focus`.
fn html_body(rng: &mut Rng, focus: &[&str], bytes: usize) -> String {
    let mut out = String::with_capacity(bytes + 512);
    while out.len() < bytes {
        match rng.below(12) {
            0 => {
                out.push_str("<ul>");
                for _ in 0..2 + rng.below(4) {
                    write!(out, "<li>{}</li>", html_sentence(rng, focus)).unwrap();
                }
                out.push_str("</ul>");
            }
            1 => write!(
                out,
                "<figure class=\"wp-block-image size-large\"><img src=\"https://cdn.example.com/{}.jpg\" \
                 alt=\"{}\" width=\"1024\" height=\"576\" loading=\"lazy\" /><figcaption>{}</figcaption></figure>",
                rng.below(1_000_000),
                rng.pick(FILLER),
                html_sentence(rng, focus)
            )
            .unwrap(),
            2 => {
                let term = rng.pick(focus);
                write!(out, "<h2>{}</h2>", as_text(rng, term)).unwrap()
            }
            _ => {
                out.push_str("<p>");
                for _ in 0..2 + rng.below(4) {
                    out.push_str(&html_sentence(rng, focus));
                    out.push(' ');
                }
                out.push_str("</p>\n");
            }
        }
    }
    out
}

/// Escapes text for an XML element.
fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// An item kept to be copied by another outlet.
struct Original {
    title: String,
    link: String,
    description: String,
}

fn generate(args: &Args, now: DateTime<Utc>) -> Vec<BenchFeed> {
    let mut rng = Rng(0x1a9e_57b0_d1e5_0001);
    let mut originals: Vec<Original> = Vec::new();
    (0..args.feeds)
        .map(|n| {
            let (id, tags) = feed_id(n);
            let mut doc = format!(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<rss version=\"2.0\" \
                 xmlns:content=\"http://purl.org/rss/1.0/modules/content/\" \
                 xmlns:dc=\"http://purl.org/dc/elements/1.1/\">\n<channel>\n\
                 <title>{id}</title><link>https://{id}.example/</link>\
                 <description>Immigration news from {id}</description>\
                 <language>en-US</language><ttl>30</ttl>\n"
            );
            for i in 0..args.items {
                let published =
                    (now - chrono::Duration::minutes((n * 7 + i * 29) as i64 % 600)).to_rfc2822();
                let copy = !originals.is_empty() && rng.chance(10);
                let (title, link, description) = if copy {
                    let o = &originals[rng.below(originals.len())];
                    (o.title.clone(), o.link.clone(), o.description.clone())
                } else {
                    let focus = [
                        rng.pick(TOPICS),
                        rng.pick(QUALIFIERS),
                        rng.pick(TOPICS),
                        rng.pick(QUALIFIERS),
                    ];
                    let who = as_text(&mut rng, focus[1]);
                    let what = as_text(&mut rng, focus[0]);
                    let verb = rng.pick(&["announces", "extends", "ends", "updates", "delays"]);
                    let title = format!("{who} {verb} {what} rules for 2027 ({n}/{i})");
                    let link = format!("https://{id}.example/news/2026/12/{n}-{i}-{}", what.len());
                    let size = 500 + rng.below(4_500);
                    let description = html_body(&mut rng, &focus, size);
                    if rng.chance(20) {
                        originals.push(Original {
                            title: title.clone(),
                            link: link.clone(),
                            description: description.clone(),
                        });
                    }
                    (title, link, description)
                };
                write!(
                    doc,
                    "<item><title>{}</title><link>{}?utm_source=rss</link>\
                     <guid isPermaLink=\"false\">{id}-{i}</guid><pubDate>{published}</pubDate>\
                     <dc:creator>Staff</dc:creator><category>Immigration</category>",
                    xml_escape(&title),
                    xml_escape(&link),
                )
                .unwrap();
                if rng.chance(50) {
                    write!(
                        doc,
                        "<description>{}</description>",
                        xml_escape(&description)
                    )
                    .unwrap();
                } else {
                    write!(doc, "<description><![CDATA[{description}]]></description>").unwrap();
                }
                if rng.chance(10) {
                    let focus = [rng.pick(TOPICS), rng.pick(QUALIFIERS)];
                    let size = 20_000 + rng.below(30_000);
                    let article = html_body(&mut rng, &focus, size);
                    write!(
                        doc,
                        "<content:encoded><![CDATA[{article}]]></content:encoded>"
                    )
                    .unwrap();
                }
                doc.push_str("</item>\n");
            }
            doc.push_str("</channel>\n</rss>\n");
            BenchFeed {
                id,
                tags,
                url: format!("http://127.0.0.1:9/feed/{n}"),
                body: doc.into_bytes(),
            }
        })
        .collect()
}

/// CPU time of the whole process (every thread), in seconds.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // After the command name in parentheses: field 14 (utime) and 15 (stime), in ticks.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) / 100.0
}

fn report(label: &str, items: usize, bytes: usize, secs: f64, cpu: Option<f64>) {
    let cpu = cpu.map_or(String::new(), |c| format!(", {c:.2} s of CPU"));
    println!(
        "{label:<28} {secs:>7.3} s  {:>9.0} items/s  {:>6.1} µs/item  {:>6.0} MB/s{cpu}",
        items as f64 / secs,
        secs * 1e6 / items as f64,
        bytes as f64 / secs / 1e6,
    );
}

fn main() {
    let args = parse_args();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(bench(args));
}

async fn bench(args: Args) {
    let now = Utc::now();
    let feeds = generate(&args, now);
    let items = args.feeds * args.items;
    let bytes: usize = feeds.iter().map(|f| f.body.len()).sum();
    println!(
        "ingest_bench: {} feeds × {} items ({} items, {:.1} MB of feed bodies, {:.1} KB an item), \
         {} subscriptions, SQLite",
        args.feeds,
        args.items,
        items,
        bytes as f64 / 1e6,
        bytes as f64 / items as f64 / 1e3,
        args.subscriptions
    );

    // Stage 1: feed-rs alone, the floor.
    let started = Instant::now();
    let mut parsed_entries = 0;
    for f in &feeds {
        let feed = feed_rs::parser::parse(&f.body[..]).expect("feed-rs parses it");
        parsed_entries += feed.entries.len();
        black_box(feed);
    }
    assert_eq!(parsed_entries, items);
    report(
        "feed-rs alone",
        items,
        bytes,
        started.elapsed().as_secs_f64(),
        None,
    );

    // Stage 2: Tidings' parse: decode, repairs, feed-rs, HTML to text, keys.
    let base = Url::parse("https://bench.example/feed").unwrap();
    let started = Instant::now();
    let mut parsed = Vec::with_capacity(feeds.len());
    for f in &feeds {
        let feed = parse_feed(&f.body, Some("application/rss+xml"), &base, now).expect("parses");
        assert!(feed.repairs.is_empty(), "{:?}", feed.repairs);
        parsed.push(feed);
    }
    report(
        "parse_feed",
        items,
        bytes,
        started.elapsed().as_secs_f64(),
        None,
    );
    let text: usize = parsed
        .iter()
        .flat_map(|p| &p.items)
        .map(|i| i.title.len() + i.summary.len() + i.content.len())
        .sum();
    println!(
        "{:<28} {:.1} KB of text an item",
        "",
        text as f64 / items as f64 / 1e3
    );

    // The database, the feeds and the subscriptions.
    let dir = tempfile::tempdir().unwrap();
    let mut config = format!(
        "database = \"{}\"\n[mail]\ntransport = \"file\"\n",
        dir.path().join("tidings.db").display()
    );
    for f in &feeds {
        let tags: Vec<String> = f.tags.iter().map(|t| format!("\"{t}\"")).collect();
        writeln!(
            config,
            "[[feeds]]\nid = \"{}\"\nurl = \"{}\"\ntags = [{}]",
            f.id,
            f.url,
            tags.join(", ")
        )
        .unwrap();
    }
    let path = dir.path().join("config.toml");
    std::fs::write(&path, config).unwrap();
    let app = App::open(Config::load(&path).unwrap()).await.unwrap();
    let mut rng = Rng(0x5eed_0000_1234_5678);
    for i in 0..args.subscriptions {
        let query = subscription(&mut rng);
        app.store
            .add_subscription(
                &format!("reader{}@example.org", i / 5),
                &query,
                Schedule::Immediate,
                chrono_tz::Tz::UTC,
                now,
            )
            .await
            .unwrap();
    }
    let matcher = app.current_matcher().await.unwrap();

    // Stage 3: matching alone, on the parsed items (as the store asks for it).
    let started = Instant::now();
    let mut matches = 0;
    for (f, p) in feeds.iter().zip(&parsed) {
        let tags: Vec<String> = f.tags.iter().map(|t| t.to_string()).collect();
        for item in &p.items {
            let doc = Document::new(&item.title, &body_text(&item.summary, &item.content))
                .with_source(&f.id, &tags)
                .with_lang(Some("en"));
            matches += matcher.matcher.find_matches(&doc).len();
        }
    }
    report(
        "matching alone",
        items,
        text,
        started.elapsed().as_secs_f64(),
        None,
    );
    println!(
        "{:<28} {:.2} matches an item",
        "",
        matches as f64 / items as f64
    );
    drop(parsed);

    // The whole ingest, feed after feed.
    let claimed = app
        .store
        .claim_feeds(now, std::time::Duration::from_secs(3600), false)
        .await
        .unwrap();
    assert_eq!(claimed.len(), feeds.len());
    let mut by_id: std::collections::HashMap<String, Vec<u8>> =
        feeds.into_iter().map(|f| (f.id, f.body)).collect();
    let matcher = Arc::clone(&matcher);
    reset_peak_rss();
    let cpu = cpu_seconds();
    let started = Instant::now();
    let (mut new_items, mut matched) = (0, 0);
    for feed in claimed {
        let body = by_id.remove(&feed.id).expect("a body for each feed");
        let fetched = Fetched {
            body,
            content_type: Some("application/rss+xml".into()),
            final_url: Url::parse(&feed.url).unwrap(),
            validators: Validators::default(),
            meta: Meta::default(),
        };
        match ingest(&app, feed, fetched, &matcher, now).await.unwrap() {
            FeedOutcome::Updated {
                new_items: n,
                matches: m,
                ..
            } => {
                new_items += n;
                matched += m;
            }
            other => panic!("not ingested: {other:?}"),
        }
    }
    let secs = started.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu;
    assert_eq!(new_items, items);
    report("ingest (all of it)", items, bytes, secs, Some(cpu));
    println!(
        "{:<28} {} new items, {} matches stored, peak RSS {:.0} MiB",
        "",
        new_items,
        matched,
        peak_rss_mib()
    );
}
