//! Config loading: `Config::parse` of a valid config of 1,000 and 10,000 feeds (each with
//! an id, a name, a url and two tags, as an operator writes them), the work the daemon
//! does at every start and every reload, and `check-config` at every check.
//!
//! ```text
//! cargo bench --bench config
//! ```

use std::hint::black_box;
use std::path::Path;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use tidings::config::Config;

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
}

criterion_group!(benches, bench_config);
criterion_main!(benches);
