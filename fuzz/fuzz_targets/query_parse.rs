//! Arbitrary text as a query: whatever parses must display as a query that
//! parses back to itself, and must match and explain a fixed document the
//! same way through `Query` and `Matcher`. The same text as a document, against
//! fixed queries, must give highlights on character boundaries. Nothing may
//! panic.
//!
//! ```text
//! cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run query_parse -- -max_total_time=30
//! ```
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
// The matcher is pure and self-contained, so the fuzz target compiles its source directly
// rather than the whole `tidings` crate (whose TLS and SQLite dependencies would take
// many minutes to build with sanitizers).
#[path = "../../src/matcher.rs"]
#[allow(dead_code)]
mod matcher;

use matcher::{Document, Field, Hit, Matcher, Query, Synonyms};

fn synonyms() -> &'static Synonyms {
    static SYNONYMS: OnceLock<Synonyms> = OnceLock::new();
    SYNONYMS.get_or_init(|| {
        let groups = [
            vec!["green card", "permanent resident", "LPR"],
            vec!["H-1B", "specialty occupation"],
            vec!["deport*", "removal"],
        ];
        let groups = groups
            .iter()
            .map(|g| g.iter().map(|m| m.to_string()).collect())
            .collect();
        Synonyms::new(groups).expect("valid synonyms")
    })
}

fn document() -> Document {
    Document::new(
        "José's H-1B update: ICE, I-485 and the green-card backlog",
        "Déportation orders, ΟΔΟΣ, ﬁle 移民 at 10:30; permanent residents and removal.\u{0}",
    )
    .with_source("uscis-news", &["official".to_string(), "us".to_string()])
    .with_lang(Some("es-MX"))
}

fn fixed_matcher() -> &'static Matcher {
    static MATCHER: OnceLock<Matcher> = OnceLock::new();
    MATCHER.get_or_init(|| {
        let queries = [
            "a",
            "e",
            "1",
            "ice OR visa",
            "\"a b\"",
            "a*",
            "title:e*",
            "i*",
            "H-1B",
            "\"green card\" -x",
            "é",
        ];
        let subscriptions = (0..)
            .zip(queries)
            .map(|(id, q)| (id, Query::parse(q).expect("valid query")))
            .collect();
        Matcher::new(subscriptions, synonyms())
    })
}

fn check_hits(hits: &[Hit], title: &str, body: &str) {
    for hit in hits {
        let text = match hit.field {
            Field::Title => title,
            Field::Body => body,
        };
        assert!(hit.range.start < hit.range.end, "{hit:?}");
        assert!(text.get(hit.range.clone()).is_some(), "{hit:?} in {text:?}");
    }
    for pair in hits.windows(2) {
        if pair[0].field == pair[1].field {
            assert!(pair[0].range.end <= pair[1].range.start, "{pair:?}");
        } else {
            assert_eq!((pair[0].field, pair[1].field), (Field::Title, Field::Body));
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };

    if let Ok(query) = Query::parse(text) {
        let shown = query.to_string();
        assert_eq!(Query::parse(&shown).as_ref(), Ok(&query), "{shown:?}");
        let doc = document();
        let plain = query.explain(&doc, &Synonyms::default());
        assert_eq!(plain.is_some(), query.matches(&doc));
        let explained = query.explain(&doc, synonyms());
        let matcher = Matcher::new(vec![(7, query.clone())], synonyms());
        assert_eq!(matcher.find_matches(&doc) == [7], explained.is_some());
        let from_matcher = matcher.explain(&doc);
        match explained {
            Some(hits) => assert_eq!(from_matcher, [(7, hits)]),
            None => assert!(from_matcher.is_empty()),
        }
    }

    let doc = Document::new(text, text);
    for (_, hits) in fixed_matcher().explain(&doc) {
        check_hits(&hits, text, text);
    }
});
