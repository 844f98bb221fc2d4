//! Config loading: `Config::parse` of a valid config of 1,000 and 10,000 feeds (each with
//! an id, a name, a url and two tags, as an operator writes them), the work the daemon
//! does at every start and every reload, and `check-config` at every check; and
//! ten searches that each name unknown feeds and tags, against 10,000 feeds: checked one
//! by one (`Config::check_scopes`, each listing the closest known names) and as the
//! sign-up form checks them (`Config::check_searches`, what such a form costs the server).
//!
//! ```text
//! cargo bench --bench config
//! ```

use std::hint::black_box;
use std::path::Path;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use tidings::config::Config;
use tidings::matcher::Query;

/// A config text of `n` valid feeds under a few settings.
fn config_text(n: usize) -> String {
    let mut text = String::from(
        "database = \"/var/lib/tidings/tidings.db\"\n\n[poll]\ninterval = \"15m\"\n\n\
         [mail]\nfrom = \"Tidings <alerts@example.org>\"\n\n",
    );
    for i in 0..n {
        text.push_str(&format!(
            "[[feeds]]\nid = \"feed-{i}\"\nname = \"Feed number {i}\"\n\
             url = \"https://publisher-{}.example.org/feed/{i}.xml\"\n\
             tags = [\"news\", \"t{}\"]\n\n",
            i % 128,
            i % 50
        ));
    }
    text
}

fn bench_config(c: &mut Criterion) {
    let path = Path::new("/etc/tidings/config.toml");
    let mut group = c.benchmark_group("config");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5));
    for feeds in [1_000_usize, 10_000] {
        let text = config_text(feeds);
        let config = Config::parse(&text, path).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(config.feeds.len(), feeds);
        group.throughput(Throughput::Bytes(text.len() as u64));
        group.bench_with_input(BenchmarkId::new("parse", feeds), &text, |b, text| {
            b.iter(|| black_box(Config::parse(text, path).is_ok()))
        });
    }
    group.finish();

    // Names a few characters from the known ones, so each is compared with all of them.
    let config = Config::parse(&config_text(10_000), path).unwrap_or_else(|e| panic!("{e}"));
    let texts: Vec<String> = (0..10)
        .map(|i| {
            format!("feed:feed-1{i}x feed:feed-2{i}y feed:feed-3{i}z tag:t4{i}x tag:t5{i}y asylum")
        })
        .collect();
    let searches: Vec<Query> = texts
        .iter()
        .map(|text| Query::parse(text).unwrap_or_else(|e| panic!("{e}")))
        .collect();
    let mut group = c.benchmark_group("unknown scopes, 10000 feeds");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5));
    group.bench_function("check_scopes of 10 searches", |b| {
        b.iter(|| {
            for query in &searches {
                black_box(config.check_scopes(query).is_err());
            }
        })
    });
    group.bench_function("check_searches of a form of 10", |b| {
        b.iter(|| black_box(config.check_searches(&texts).len()))
    });
    group.finish();
}

criterion_group!(benches, bench_config);
criterion_main!(benches);
