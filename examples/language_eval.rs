//! How well items' languages are told, on the labelled set in
//! `tests/fixtures/languages/titles.jsonl` (433 real-looking immigration headlines and
//! their first sentences: English, Spanish, French, Portuguese, Haitian Creole and a
//! few others), and how fast.
//!
//! ```text
//! cargo run --release --example language_eval
//! cargo run --release --example language_eval -- --detect en,es,fr,pt,de --show 10
//! ```
//!
//! For each way an item can arrive — a title alone, a title with its text, each with or
//! without the feed declaring the item's true language — it prints the share told right
//! among the items in a detected language, and what became of the others (a declared
//! language the detector cannot tell is kept; undeclared, they come out unknown or as
//! one of the detected languages). `--show N` lists N mistakes of each way.

use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, Result};
use tidings::language::Detector;

struct Labelled {
    lang: String,
    title: String,
    text: String,
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let mut detect: Vec<String> = tidings::language::DEFAULT_LANGUAGES
        .iter()
        .map(|c| c.to_string())
        .collect();
    let mut show = 0;
    let mut min_confidence: Option<f64> = None;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--detect" => {
                detect = args
                    .next()
                    .context("--detect needs codes")?
                    .split(',')
                    .map(str::to_string)
                    .collect()
            }
            "--show" => show = args.next().context("--show needs N")?.parse()?,
            "--min-confidence" => {
                min_confidence = Some(args.next().context("--min-confidence needs C")?.parse()?)
            }
            other => anyhow::bail!("unknown argument {other:?}"),
        }
    }
    let mut detector = Detector::new(&detect).map_err(anyhow::Error::msg)?;
    if let Some(c) = min_confidence {
        detector = detector.with_min_confidence(c);
    }
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/languages/titles.jsonl"
    );
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {path}"))?;
    let items: Vec<Labelled> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l)?;
            let field = |k: &str| v[k].as_str().unwrap_or_default().to_string();
            Ok(Labelled {
                lang: field("lang"),
                title: field("title"),
                text: field("text"),
            })
        })
        .collect::<Result<_>>()?;
    let detected = |l: &Labelled| detect.contains(&l.lang);
    let inside = items.iter().filter(|l| detected(l)).count();
    println!(
        "{} items: {inside} in a detected language ({}), {} in others",
        items.len(),
        detect.join(", "),
        items.len() - inside
    );
    println!(
        "{:<30} {:>8} {:>8} {:>8}   others: kept / unknown / mislabelled",
        "", "right", "wrong", "unknown"
    );
    for (name, with_text, declared) in [
        ("title alone", false, false),
        ("title + text", true, false),
        ("title alone, feed declares", false, true),
        ("title + text, feed declares", true, true),
    ] {
        let (mut right, mut wrong, mut unknown) = (0, 0, 0);
        let (mut kept, mut other_unknown, mut mislabelled) = (0, 0, 0);
        let mut mistakes = Vec::new();
        for l in &items {
            let body = if with_text { l.text.as_str() } else { "" };
            let got = detector.detect(&l.title, body, declared.then_some(l.lang.as_str()));
            let is_right = got.as_deref() == Some(l.lang.as_str());
            match (detected(l), is_right, got.is_some()) {
                (true, true, _) => right += 1,
                (true, false, true) => wrong += 1,
                (true, false, false) => unknown += 1,
                (false, true, _) => kept += 1,
                (false, false, false) => other_unknown += 1,
                (false, false, true) => mislabelled += 1,
            }
            if detected(l) && !is_right && mistakes.len() < show {
                mistakes.push(format!("  {} as {:?}: {}", l.lang, got, l.title));
            }
        }
        let share = |n: usize| 100.0 * n as f64 / inside.max(1) as f64;
        println!(
            "{name:<30} {:>7.1}% {:>7.1}% {:>7.1}%   {kept} / {other_unknown} / {mislabelled}",
            share(right),
            share(wrong),
            share(unknown),
        );
        for m in mistakes {
            println!("{m}");
        }
    }
    // Speed: title + text, no declaration, every item many times over.
    let rounds = 200;
    let start = Instant::now();
    let mut found = 0;
    for _ in 0..rounds {
        for l in &items {
            found += usize::from(detector.detect(&l.title, &l.text, None).is_some());
        }
    }
    let elapsed = start.elapsed();
    let n = rounds * items.len();
    println!(
        "speed: {:.0} items/s on one core ({:.1} µs an item, title + text; {found} answers)",
        n as f64 / elapsed.as_secs_f64(),
        elapsed.as_secs_f64() * 1e6 / n as f64
    );
    Ok(())
}
