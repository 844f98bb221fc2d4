//! Matching throughput: items per second against 1k, 10k and 100k
//! subscriptions, for the compiled [`Matcher`] and for the naive way (every
//! query evaluated on its own), in the same run.
//!
//! Subscriptions (about three terms each: words, phrases, compounds, prefixes,
//! OR, NOT, `title:`/`feed:`/`tag:`) and ~200 news items are generated from an
//! immigration-news vocabulary with a fixed seed, so runs are comparable.
//! Each measured item includes building its [`Document`], as the pipeline does.
//!
//! ```text
//! cargo bench --bench matcher
//! ```

use std::hint::black_box;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use tidings::matcher::{Document, Matcher, Query, Synonyms};

#[path = "../examples/common/news.rs"]
#[allow(dead_code)]
mod news;
use news::{Item, Rng, corpus, subscription};

fn synonyms() -> Synonyms {
    let groups = [
        &[
            "green card",
            "permanent resident",
            "permanent residence",
            "LPR",
        ][..],
        &["H-1B", "specialty occupation"],
        &["TPS", "temporary protected status"],
        &["DACA", "deferred action for childhood arrivals"],
        &["EAD", "work permit", "employment authorization document"],
    ];
    let groups = groups
        .iter()
        .map(|g| g.iter().map(|m| m.to_string()).collect())
        .collect();
    Synonyms::new(groups).expect("valid synonyms")
}

fn bench_matching(c: &mut Criterion) {
    let mut rng = Rng(0x5eed_1234_abcd_ef01);
    let items = corpus(&mut rng);
    let bytes: usize = items.iter().map(|i| i.title.len() + i.body.len()).sum();
    eprintln!(
        "corpus: {} items, {} bytes of text on average",
        items.len(),
        bytes / items.len()
    );

    let mut group = c.benchmark_group("matcher");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4));
    for size in [1_000_usize, 10_000, 100_000] {
        let queries: Vec<(i64, Query)> = (0..size as i64)
            .map(|id| {
                let text = subscription(&mut rng);
                let query = Query::parse(&text).unwrap_or_else(|e| panic!("{text:?}: {e}"));
                (id, query)
            })
            .collect();
        let matcher = Matcher::new(queries.clone(), &Synonyms::default());
        let total: usize = items
            .iter()
            .map(|i| matcher.find_matches(&i.document()).len())
            .sum();
        eprintln!(
            "{size} subscriptions: {:.1} matches per item",
            total as f64 / items.len() as f64
        );

        group.throughput(Throughput::Elements(items.len() as u64));
        group.bench_with_input(BenchmarkId::new("fast", size), &items, |b, items| {
            b.iter(|| {
                for item in items {
                    black_box(matcher.find_matches(&item.document()));
                }
            })
        });

        // The naive way is slow enough that a sample of the corpus will do:
        // all 200 items at 1k, 40 at 10k, 4 at 100k.
        let stride = (size / 2_000).max(1);
        let sample: Vec<&Item> = items.iter().step_by(stride).collect();
        for item in &sample {
            let doc = item.document();
            let naive = naive_matches(&queries, &doc);
            assert_eq!(matcher.find_matches(&doc), naive, "fast and naive disagree");
        }
        group.throughput(Throughput::Elements(sample.len() as u64));
        group.bench_with_input(BenchmarkId::new("naive", size), &sample, |b, sample| {
            b.iter(|| {
                for item in sample {
                    black_box(naive_matches(&queries, &item.document()));
                }
            })
        });

        if size == 100_000 {
            let with_synonyms = Matcher::new(queries, &synonyms());
            let total: usize = items
                .iter()
                .map(|i| with_synonyms.find_matches(&i.document()).len())
                .sum();
            eprintln!(
                "{size} subscriptions with synonyms: {:.1} matches per item",
                total as f64 / items.len() as f64
            );
            group.throughput(Throughput::Elements(items.len() as u64));
            group.bench_with_input(
                BenchmarkId::new("fast+synonyms", size),
                &items,
                |b, items| {
                    b.iter(|| {
                        for item in items {
                            black_box(with_synonyms.find_matches(&item.document()));
                        }
                    })
                },
            );
            group.bench_with_input(BenchmarkId::new("explain", size), &items, |b, items| {
                b.iter(|| {
                    for item in items {
                        black_box(with_synonyms.explain(&item.document()));
                    }
                })
            });
        }
    }
    group.finish();
}

/// Every query on its own, as before the matcher was compiled.
fn naive_matches(queries: &[(i64, Query)], doc: &Document) -> Vec<i64> {
    queries
        .iter()
        .filter(|(_, q)| q.matches(doc))
        .map(|(id, _)| *id)
        .collect()
}

criterion_group!(benches, bench_matching);
criterion_main!(benches);
