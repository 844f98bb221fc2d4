//! Article extraction (issue 15): pages/s and MB/s of `article::extract` on one core, for
//! WordPress-style article pages of about 100 and 300 KB (the story, a menu, a trending
//! bar, related stories, a long comment thread, a sidebar, inline scripts and styles, as
//! such pages carry), by Readability and by a `content_selector`.
//!
//! ```text
//! cargo bench --bench article
//! ```
//!
//! Measured on the 2-core development machine: Readability 2.19 ms for a 100 KB page and
//! 6.45 ms for 300 KB (about 45 MiB/s: 460 and 155 pages/s on one core); a
//! `content_selector` 1.29 and 3.87 ms (76 MiB/s).

use std::hint::black_box;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use tidings::article::{Extraction, extract};

const PAGE: &str = include_str!("../tests/fixtures/article-wordpress.html");
const URL: &str = "https://news.example/2026/11/30/uscis-extends-ead/";

/// The fixture grown to about `kb` KB: more story paragraphs, more comments, more
/// sidebar widgets and an inline script, in the places a real page has them.
fn page_of(kb: usize) -> String {
    let paragraph = "<p>The agency said applicants who filed before their card expired keep \
        their work authorization while the renewal is processed, and employers should accept \
        the receipt notice together with the expired card as proof.</p>\n";
    let comment = "<li class=\"comment\"><div class=\"comment-author\"><a href=\"/u\">reader</a>\
        </div><div class=\"comment-content\"><p>Thank you for explaining this; our clinic \
        has been asking about it for months and the families we serve will be relieved.</p>\
        </div><div class=\"reply\"><a href=\"#respond\">Reply</a></div></li>\n";
    let widget = "<section class=\"widget\"><h2>Popular</h2><ul><li><a href=\"/a\">Visa \
        bulletin predictions</a></li><li><a href=\"/b\">Fee schedule changes</a></li><li>\
        <a href=\"/c\">Court calendar</a></li></ul></section>\n";
    let script = "<script>(function(){var d=document,s=d.createElement('script');s.src=\
        'https://ads.example/tag.js';s.async=true;d.head.appendChild(s);})();</script>\n";
    let target = kb * 1024;
    let mut story = String::new();
    let mut comments = String::new();
    let mut widgets = String::new();
    while PAGE.len() + story.len() + comments.len() + widgets.len() < target {
        story.push_str(paragraph);
        for _ in 0..3 {
            comments.push_str(comment);
        }
        widgets.push_str(widget);
        widgets.push_str(script);
    }
    PAGE.replacen(
        "</div>\n  <footer class=\"entry-footer\">",
        &format!("{story}</div>\n  <footer class=\"entry-footer\">"),
        1,
    )
    .replacen("</ol>\n</div>", &format!("{comments}</ol>\n</div>"), 1)
    .replacen("</aside>", &format!("{widgets}</aside>"), 1)
}

fn extraction(c: &mut Criterion) {
    let mut group = c.benchmark_group("article");
    group.measurement_time(Duration::from_secs(10));
    for kb in [100, 300] {
        let page = page_of(kb);
        // The grown page is still read as one story.
        match extract(&page, URL, None) {
            Extraction::Article(a) => assert!(a.text.contains("Bodyonlyword")),
            Extraction::NoArticle(why) => panic!("{why}"),
        }
        group.throughput(Throughput::Bytes(page.len() as u64));
        group.bench_with_input(BenchmarkId::new("readability", kb), &page, |b, page| {
            b.iter(|| extract(black_box(page), URL, None))
        });
        group.bench_with_input(
            BenchmarkId::new("content_selector", kb),
            &page,
            |b, page| b.iter(|| extract(black_box(page), URL, Some("div.entry-content"))),
        );
    }
    group.finish();
}

criterion_group!(benches, extraction);
criterion_main!(benches);
