//! Attack 17 (languages): hostile queries, admin language sets, Accept-Language headers,
//! subscriber e-mail addresses and feeds against item languages, `lang:`, searches that
//! cross languages and the English/Spanish locales.
//!
//! A failing test shows a bug; `held_…` tests show the code held.

mod support;

use std::time::Duration;

use chrono::{DateTime, Utc};
use tidings::config::{LanguageSettings, language_sets};
use tidings::digest::{DigestContext, DigestEntry, Schedule, render_digest};
use tidings::ids::{ItemId, SubscriptionId};
use tidings::language::Detector;
use tidings::locale;
use tidings::matcher::{Document, Matcher, Query, Synonyms};

fn shipped() -> Synonyms {
    Synonyms::default()
        .with_crossings(LanguageSettings::default().crossings)
        .expect("shipped sets read")
}

fn q(text: &str) -> Query {
    Query::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"))
}

fn at(rfc3339: &str) -> DateTime<Utc> {
    support::at(rfc3339)
}

// ---------------------------------------------------------------------------------------
// The query language: `lang:`, and the crossed query's canonical Display
// ---------------------------------------------------------------------------------------

/// Display is canonical (the matcher shares compiled queries by their text): the crossed
/// query of every shape of search must parse back to itself with the shipped sets.
#[test]
fn held_crossed_queries_round_trip_through_display_with_the_shipped_sets() {
    let synonyms = shipped();
    for text in [
        "asylum",
        "title:asylum",
        "\"work permit\"",
        "title:\"work permit\" -lang:fr",
        "-asylum visa",
        "visa -(asylum OR refugee)",
        "(asylum OR refugee) lang:es",
        "deport* asylum",
        "\"demandeur d'asile\"",
        "parole -lang:fr",
        "feed:x asylum OR tag:y refugee",
    ] {
        let crossed = q(text).across_languages(&synonyms);
        let shown = crossed.to_string();
        let back = Query::parse(&shown).unwrap_or_else(|e| panic!("{text} → {shown}: {e}"));
        assert_eq!(back, crossed, "{text} → {shown}");
    }
}

/// `lang:` odd spellings: quoted, region subtags, case; the refused ones say so.
#[test]
fn held_lang_scope_spellings() {
    let es = Document::new("Nueva regla de asilo", "").with_lang(Some("es"));
    for (text, want) in [
        ("asilo lang:\"ES-mx\"", true),
        ("asilo lang:es_419", true),
        ("asilo (lang:fr OR lang:es)", true),
        ("asilo -(lang:en OR lang:fr)", true),
        ("asilo NOT lang:es", false),
        ("asilo −lang:es", false),
    ] {
        assert_eq!(q(text).matches(&es), want, "{text}");
        // Canonical text parses back.
        assert_eq!(q(&q(text).to_string()), q(text), "{text}");
    }
    for bad in [
        "-lang:es",
        "lang:es*",
        "lang:\"es mx\"",
        "lang:ñ",
        "lang:español",
        "lang:(es)",
    ] {
        assert!(Query::parse(bad).is_err(), "{bad} was accepted");
    }
}

/// Short searches with the shipped sets: the crossed query's text reads back as the
/// same query, and members of one set named side by side (`asilo OR asile OR azil`)
/// bring the set once, not once each.
#[test]
fn crossed_display_of_a_short_search_parses_back() {
    let synonyms = shipped();
    let crossed = q("asilo OR asile OR azil").across_languages(&synonyms);
    let shown = crossed.to_string();
    let back = Query::parse(&shown);
    assert_eq!(
        back.as_ref().ok(),
        Some(&crossed),
        "{shown}: {:?}",
        back.as_ref().err()
    );
    for text in [
        "asilo OR asile OR azil",
        "asylum refugee deportation parole TPS \"green card\"",
    ] {
        let shown = q(text).across_languages(&synonyms).to_string();
        let alternatives: Vec<&str> = shown.split(" OR ").collect();
        let mut unique = alternatives.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), alternatives.len(), "{text}: {shown}");
    }
}

/// An admin's member written with its quotes (`'"oficina de asilo"'`) is refused with
/// the reason, by `check-config` as at start; one with parentheses is a phrase, and the
/// crossed query's text reads back as the same query.
#[test]
fn crossed_query_with_an_admin_member_in_quotes_or_parentheses_round_trips() {
    let quoted = r#"
[[set]]
concept = "asylum office"
en = ["asylum office"]
es = ['"oficina de asilo"']
"#;
    let err = language_sets(quoted).expect_err("quotes are refused");
    assert!(err.contains("without quotes"), "{err}");
    let file = r#"
[[set]]
concept = "asylum office"
en = ["asylum office"]
es = ["oficina (de asilo)", "-oficina", "asilo|refugio"]
"#;
    let sets = language_sets(file).expect("check-config accepts the file");
    let synonyms = Synonyms::default().with_crossings(sets).unwrap();
    let crossed = q("\"asylum office\"").across_languages(&synonyms);
    let shown = crossed.to_string();
    let back = Query::parse(&shown);
    assert_eq!(
        back.as_ref().ok(),
        Some(&crossed),
        "{shown} parses as {back:?}"
    );
}

/// Two subscriptions whose queries differ but whose Display is the same are compiled
/// once (`Matcher::new` keys by text): a crossing member written `title:…` in an admin
/// file makes the crossed query of one subscriber look exactly like another subscriber's
/// title-only search, and one of them gets the other's answers.
#[test]
fn a_crossed_query_and_a_different_typed_query_with_the_same_text_are_not_confused() {
    let file = r#"
[[set]]
concept = "asylum"
en = ["asylum"]
es = ["title:asilo"]
"#;
    let sets = language_sets(file).expect("check-config accepts the file");
    let synonyms = Synonyms::default().with_crossings(sets).unwrap();
    let crossed = q("asylum").across_languages(&synonyms);
    // The member is written as a phrase: the crossed text reads back as the same query.
    assert_eq!(q(&crossed.to_string()), crossed, "{crossed}");
    // Another subscriber's title-only search that would have printed the same before.
    let typed = q("asylum OR title:asilo lang:es");
    assert_ne!(typed.to_string(), crossed.to_string());
    // Spanish item with "title asilo" in the body: the member (a phrase of "title" and
    // "asilo", anywhere) matches, the typed title-only term `title:asilo` does not.
    let doc = Document::new("Nueva regla", "El title asilo del documento").with_lang(Some("es"));
    let want_crossed = crossed.matches(&doc);
    let want_typed = typed.matches(&doc);
    assert_ne!(
        want_crossed, want_typed,
        "the two queries must differ on this item"
    );
    // Both orders: neither takes the other's answers.
    for order in [
        [(1, crossed.clone()), (2, typed.clone())],
        [(2, typed.clone()), (1, crossed.clone())],
    ] {
        let matcher = Matcher::new(order.to_vec(), &synonyms);
        let got = matcher.find_matches(&doc);
        assert_eq!(
            (got.contains(&1), got.contains(&2)),
            (want_crossed, want_typed),
            "crossed {crossed} / typed {typed}: {got:?}"
        );
    }
}

/// Highlights say what matched. A crossing member counts only in items of its own
/// language, so in an English item the French-only member `expulsion` (an English pupil's
/// expulsion, the README's own false friend) did not match `deportation` — yet the digest
/// highlighting (`Query::explain`) marks it as a hit.
#[test]
fn explain_does_not_highlight_a_false_friend_in_another_language() {
    let synonyms = shipped();
    let crossed = q("deportation").across_languages(&synonyms);
    let doc = Document::new(
        "Deportation case delayed",
        "The judge also heard about the student's expulsion from school.",
    )
    .with_lang(Some("en"));
    let hits = crossed
        .explain(&doc, &synonyms)
        .expect("matches by deportation");
    let body = "The judge also heard about the student's expulsion from school.";
    let marked: Vec<String> = hits.iter().map(|h| format!("{:?}", h)).collect();
    let expulsion = body.find("expulsion").unwrap();
    assert!(
        !hits.iter().any(|h| h.range.start == expulsion),
        "the English false friend is highlighted: {marked:?}"
    );
}

/// Blow-up: a query of many terms, each a member of several sets, crossed; compiled
/// with thousands of other crossing searches in reasonable time.
#[test]
fn held_crossing_many_terms_in_many_sets_stays_small_and_fast() {
    // Each of 40 English words is in 30 sets, each with 5 other members.
    let words: Vec<String> = (0..40).map(|i| format!("word{i}")).collect();
    let mut sets = Vec::new();
    for (w, word) in words.iter().enumerate() {
        for s in 0..30 {
            let mut set = vec![("en".to_string(), word.clone())];
            for (m, lang) in ["es", "fr", "pt", "ht", "de"].iter().enumerate() {
                set.push((lang.to_string(), format!("m{w}x{s}x{m}")));
            }
            sets.push(set);
        }
    }
    let synonyms = Synonyms::default().with_crossings(sets).unwrap();
    let text = words.join(" ");
    let crossed = q(&text).across_languages(&synonyms);
    let shown = crossed.to_string();
    assert!(shown.len() < 2_000_000, "{}", shown.len());
    let queries: Vec<(i64, Query)> = (0..2_000)
        .map(|i| {
            let text = format!("{} {}", words[i % 40], words[(i * 7 + 3) % 40]);
            (i as i64, q(&text).across_languages(&synonyms))
        })
        .chain([(9_999, crossed)])
        .collect();
    let matcher = Matcher::new(queries, &synonyms);
    let doc = Document::new(&format!("m0x0x0 {}", words[1..].join(" ")), "").with_lang(Some("es"));
    assert!(matcher.find_matches(&doc).contains(&9_999));
}

// ---------------------------------------------------------------------------------------
// Detection
// ---------------------------------------------------------------------------------------

/// A hostile feed's 10 MB title: the detector reads a bounded start of the title (as of
/// the text), not the whole of it, inside the store's write transaction. An English
/// start followed by megabytes of Spanish is read as English: only the start was read.
#[test]
fn detection_of_a_huge_title_reads_a_bounded_sample() {
    let detector = Detector::default();
    let start = "The agency said on Thursday that the new rule would take effect next month \
                 for everyone who files the form after that date, and that the fee goes up.";
    let huge = format!(
        "{start} {}",
        "la nueva regla de asilo del gobierno ".repeat(300_000)
    );
    assert_eq!(detector.detect(&huge, "", None).as_deref(), Some("en"));
    assert_eq!(
        detector.detect(&huge[start.len()..], "", None).as_deref(),
        Some("es")
    );
}

/// A hostile feed: only emoji, NUL bytes, mixed scripts, hostile declarations; detection
/// answers a code or nothing.
#[test]
fn held_detection_on_pathological_text_is_quick_and_sane() {
    let detector = Detector::default();
    for (title, text, declared) in [
        ("🙂🙂🙂🙂🙂🙂", "🔥🔥🔥🔥", None),
        ("\0\0\0", "\0asilo\0", Some("es\0")),
        (
            "Привет 你好 مرحبا hello",
            "",
            Some("\"><script>alert(1)</script>"),
        ),
        ("", "", Some(&*"e".repeat(10_000))),
        ("", "", Some("x-klingon")),
        ("", "", Some("EN\u{0}")),
    ] {
        let got = detector.detect(title, text, declared);
        if let Some(code) = &got {
            assert!(
                (2..=3).contains(&code.len()) && code.bytes().all(|b| b.is_ascii_lowercase()),
                "{code:?}"
            );
        }
    }
}

// ---------------------------------------------------------------------------------------
// Locales: Accept-Language, substitution, plural forms
// ---------------------------------------------------------------------------------------

/// RFC 9110: parameter names are case-insensitive, and `q=0` means "not acceptable".
/// `es;Q=0` is a Spanish speaker's browser saying no Spanish, please.
#[test]
fn accept_language_q_is_case_insensitive() {
    assert_eq!(locale::negotiate(Some("es;Q=0, en;q=0.5")).code, "en");
    assert_eq!(locale::negotiate(Some("en;Q=0.1, es;q=0.5")).code, "es");
}

/// qvalues are at most 1 (RFC 9110 §12.4.2): `q=inf` or `q=1e9` is no stronger wish
/// than `q=1`, so the header's first language at q=1 should win.
#[test]
fn accept_language_out_of_range_q_does_not_outrank_q_1() {
    assert_eq!(locale::negotiate(Some("en, es;q=inf")).code, "en");
    assert_eq!(locale::negotiate(Some("en, es;q=1e9")).code, "en");
}

#[test]
fn held_accept_language_hostile_headers() {
    let huge = "xx;q=0.9,".repeat(200_000);
    // Only the first entries are read: a Spanish wish after 200,000 others is not.
    assert_eq!(locale::negotiate(Some(&format!("{huge}es"))).code, "en");
    for (header, want) in [
        ("es;q=NaN, en;q=0.1", "en"),
        ("es;q=-1, en;q=0.1", "en"),
        ("*;q=1, es;q=0.1", "es"),
        ("es-MX-x-private;q=0.8", "es"),
        (";;;,,,;q=1", "en"),
        ("\u{0}es", "en"),
        ("español", "en"),
    ] {
        assert_eq!(locale::negotiate(Some(header)).code, want, "{header:?}");
    }
}

/// `t()` fills its arguments one after another: a value that contains another
/// argument's placeholder (`{schedule}` in an address, which RFC 5321 allows and
/// Tidings accepts) gets that argument written into it.
#[test]
fn t_does_not_substitute_inside_an_argument_value() {
    let address = "{schedule}@example.org";
    let normalized =
        tidings::mail::normalize_address(address).expect("Tidings accepts the address");
    let mut env = minijinja::Environment::new();
    locale::install(&mut env);
    let out = env
        .render_str(
            "{{ t('digest.why', recipient=r, schedule=s) }}",
            minijinja::context! { lang => "es", r => &normalized, s => "daily 08:00" },
        )
        .unwrap();
    assert!(out.contains(&normalized), "{out}");
    let out = env
        .render_str(
            "{{ t('confirm.mail_intro', email=e, frequency=f, timezone=z) }}",
            minijinja::context! {
                lang => "en",
                e => "{timezone}@example.org",
                f => "daily",
                z => "America/New_York"
            },
        )
        .unwrap();
    assert!(out.contains("{timezone}@example.org"), "{out}");
}

/// t() output is escaped: no markup from a subscriber's address, a feed's error text.
#[test]
fn held_t_arguments_are_escaped_in_html() {
    let mut env = minijinja::Environment::new();
    env.set_auto_escape_callback(|_| minijinja::AutoEscape::Html);
    locale::install(&mut env);
    let out = env
        .render_str(
            "{{ t('destinations.last_error', error=e) }} {{ t('subscribe.sent_link', email=e) }}",
            minijinja::context! { lang => "es", e => "<script>alert(1)</script>" },
        )
        .unwrap();
    assert!(!out.contains("<script>"), "{out}");
}

fn entry(item: i64, title: &str, updated: bool) -> DigestEntry {
    DigestEntry {
        subscription_id: SubscriptionId(1),
        query: "asilo".into(),
        item_id: ItemId(item),
        feed_id: "es".into(),
        feed_name: "Noticias".into(),
        tags: vec![],
        title: title.into(),
        link: Some(format!("https://news.example/{item}")),
        summary: "Texto sobre el asilo.".into(),
        content: String::new(),
        published: Some(at("2026-11-27T15:00:00Z")),
        first_seen: at("2026-11-28T12:00:00Z"),
        updated,
        article: None,
        story: item,
        more_coverage: false,
        lang: Some("es".into()),
        crosses_languages: false,
    }
}

fn render_in(code: &str, entries: &[DigestEntry]) -> tidings::digest::Rendered {
    let synonyms = Synonyms::default();
    let cx = DigestContext {
        recipient: "ana@example.org",
        schedule: Schedule::Immediate,
        timezone: chrono_tz::Tz::UTC,
        synonyms: &synonyms,
        failing_feeds: &[],
        unsubscribe_url: None,
        manage_url: None,
        cache: None,
        more_follow: false,
        locale: locale::get(code),
    };
    render_digest(entries, &cx).unwrap()
}

/// A Spanish digest of one new and one updated item: "1 nueva, 1 actualizada", not
/// "1 nuevas, 1 actualizadas" (the both-kinds strings have no singular forms).
#[test]
fn spanish_digest_of_one_new_and_one_updated_is_singular() {
    let r = render_in(
        "es",
        &[
            entry(1, "Nueva regla de asilo", false),
            entry(2, "Cambio de asilo", true),
        ],
    );
    assert!(!r.subject.contains("1 nuevas"), "{}", r.subject);
    assert!(!r.subject.contains("1 actualizadas"), "{}", r.subject);
    assert!(!r.text.contains("1 noticias nuevas"), "{}", r.text);
}

#[test]
fn held_spanish_digest_counts_zero_one_many_and_unknown_locale() {
    let one = render_in("es", &[entry(1, "Nueva regla de asilo", false)]);
    assert!(
        one.subject.starts_with("Tidings: 1 nueva — asilo (1)"),
        "{}",
        one.subject
    );
    let many: Vec<_> = (0..1500)
        .map(|i| entry(i, &format!("Asilo {i}"), false))
        .collect();
    let r = render_in("es", &many);
    assert!(r.subject.contains("1\u{a0}500 nuevas"), "{}", r.subject);
    // A stored locale nobody ships renders in English.
    let xx = render_in("xx", &[entry(1, "Nueva regla de asilo", false)]);
    assert!(xx.subject.starts_with("Tidings: 1 new"), "{}", xx.subject);
    assert!(
        xx.html.contains("<html lang=\"en\">"),
        "{}",
        &xx.html[..200]
    );
}

// ---------------------------------------------------------------------------------------
// Pages: odd `?lang=`, hostile Accept-Language, a stored locale nobody ships
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_pages_with_odd_languages_render_safely() {
    let dir = tempfile::tempdir().unwrap();
    let config = support::write_config(dir.path(), &[], 25);
    let app = tidings::App::open(config).await.unwrap();
    let now = Utc::now();
    support::subscribe(&app, "ana@example.org", "asilo lang:es", "daily", now).await;
    let ana = app
        .store
        .subscriber("ana@example.org")
        .await
        .unwrap()
        .unwrap();
    // A locale stored by an older or newer version that this one does not ship.
    app.store.set_locale(ana.id, "xx").await.unwrap();
    let (tx, rx) = tokio::sync::watch::channel(app.clone());
    let stop = tokio_util::sync::CancellationToken::new();
    let _guard = stop.clone().drop_guard();
    let addr = tidings::web::serve("127.0.0.1:0".parse().unwrap(), rx, stop)
        .await
        .unwrap();
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let base = format!("http://{addr}");
    let get = async |path: &str, accept: Option<&str>| {
        let mut r = client.get(format!("{base}{path}"));
        if let Some(a) = accept {
            r = r.header("accept-language", a);
        }
        let r = r.send().await.unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    };

    for lang in [
        "%22%3E%3Cscript%3Ealert(1)%3C%2Fscript%3E",
        "",
        "xx",
        "es%00",
        "es&lang=en",
        &"e".repeat(5000),
    ] {
        let (status, page) = get(&format!("/?lang={lang}"), None).await;
        assert_eq!(status, 200, "?lang={lang}");
        assert!(!page.contains("<script>alert"), "?lang={lang}: {page}");
        assert!(
            page.contains("<html lang=\"en\">") || page.contains("<html lang=\"es\">"),
            "{lang}"
        );
    }
    let (status, page) = get("/?lang=ES-mx", None).await;
    assert_eq!(status, 200);
    assert!(page.contains("<html lang=\"es\">"), "{page}");
    let (status, page) = get("/", Some("xx;q=NaN, es;q=0.5, en;q=0")).await;
    assert_eq!(status, 200);
    assert!(page.contains("<html lang=\"es\">"), "{page}");
    let (status, _) = get("/", Some(&"de;q=0.9,".repeat(2_000))).await;
    assert!(status == 200 || status == 431, "{status}");

    // The manage page of the subscriber with locale "xx": English, one language checked.
    let manage = url::Url::parse(&app.links.manage_url(ana.id, &ana.email))
        .unwrap()
        .path()
        .to_string();
    let (status, page) = get(&manage, Some("es")).await;
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("Your digests"), "{page}");
    drop(tx);
}

/// A subscriber whose stored locale is unknown sees a language form with no language
/// chosen: saving it as it is answers "Choose one of the languages."; the page should
/// show the language it is really in (English) as the chosen one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manage_page_of_an_unknown_locale_checks_the_language_it_shows() {
    let dir = tempfile::tempdir().unwrap();
    let config = support::write_config(dir.path(), &[], 25);
    let app = tidings::App::open(config).await.unwrap();
    support::subscribe(&app, "ana@example.org", "asilo", "daily", Utc::now()).await;
    let ana = app
        .store
        .subscriber("ana@example.org")
        .await
        .unwrap()
        .unwrap();
    app.store.set_locale(ana.id, "xx").await.unwrap();
    let (tx, rx) = tokio::sync::watch::channel(app.clone());
    let stop = tokio_util::sync::CancellationToken::new();
    let _guard = stop.clone().drop_guard();
    let addr = tidings::web::serve("127.0.0.1:0".parse().unwrap(), rx, stop)
        .await
        .unwrap();
    let manage = url::Url::parse(&app.links.manage_url(ana.id, &ana.email))
        .unwrap()
        .path()
        .to_string();
    let page = reqwest::get(format!("http://{addr}{manage}"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        page.contains("value=\"en\" checked"),
        "no language is checked: {}",
        page.lines()
            .filter(|l| l.contains("name=\"locale\""))
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(page.contains("<html lang=\"en\">"), "the page says lang=xx");
    drop(tx);
}
