//! Languages: each item's language is detected (or taken as its feed declares it),
//! stored and shown; `lang:` scopes a search to a language; a search that crosses
//! languages finds its words' translations (languages/synonyms.toml), each only in items
//! of its own language. Real HTTP feeds with Spanish and French items, a real SMTP
//! server, a real SQLite file.

mod support;

use std::time::Duration;

use support::{FeedServer, Route, SmtpServer, at, decode, subscribe, write_config_with};
use tidings::{App, poll_feeds, send_digests};

const WAIT: Duration = Duration::from_secs(10);

/// An RSS feed of (guid, title, text), declaring `language` when given.
fn rss(language: Option<&str>, items: &[(&str, &str, &str)]) -> Route {
    let items: String = items
        .iter()
        .map(|(guid, title, text)| {
            format!(
                "<item><guid>{guid}</guid><title>{title}</title>\
                 <link>https://news.example/{guid}</link><description>{text}</description>\
                 <pubDate>Tue, 01 Dec 2026 11:00:00 GMT</pubDate></item>"
            )
        })
        .collect();
    let language = language
        .map(|l| format!("<language>{l}</language>"))
        .unwrap_or_default();
    Route::feed(
        "application/rss+xml",
        format!(
            "<?xml version=\"1.0\" encoding=\"utf-8\"?><rss version=\"2.0\"><channel>\
             <title>t</title><link>https://news.example/</link><description>d</description>\
             {language}{items}</channel></rss>"
        ),
    )
}

const SPANISH_ASYLUM: (&str, &str, &str) = (
    "es-1",
    "¿Qué cambia con la nueva regla de asilo? ¡Atención, familias!",
    "El gobierno publicó el jueves una norma que limita las solicitudes de asilo en la \
     frontera sur. Los niños no acompañados y las familias con año de residencia \
     señalan que la regla será impugnada en los tribunales.",
);
const SPANISH_TPS: (&str, &str, &str) = (
    "es-2",
    "Nueva fecha para el TPS de Honduras",
    "Los beneficiarios del estatus de protección temporal deben volver a inscribirse antes \
     del 15 de diciembre, según el aviso publicado por el gobierno.",
);
const ENGLISH_ASYLUM: (&str, &str, &str) = (
    "en-1",
    "New asylum rule takes effect at the southern border",
    "The rule limits asylum claims by people who crossed between ports of entry, the \
     Department of Homeland Security said on Thursday.",
);
const FRENCH_ASYLUM: (&str, &str, &str) = (
    "fr-1",
    "Demandeurs d'asile : ce que change la nouvelle règle",
    "Les demandeurs d'asile arrivés par la frontière sud devront déposer leur demande dans \
     un délai plus court, selon le texte publié jeudi.",
);
const FRENCH_REMOVAL: (&str, &str, &str) = (
    "fr-2",
    "Expulsion vers Haïti : un nouveau vol affrété par les États-Unis",
    "Un avion transportant une centaine de personnes expulsées a atterri à Port-au-Prince, \
     selon les autorités haïtiennes, qui demandent la suspension des vols.",
);
const ENGLISH_SCHOOL: (&str, &str, &str) = (
    "en-2",
    "Student expulsion hearing is set for Monday",
    "The school board will hear the appeal of a student facing expulsion after a fight in \
     the cafeteria, the district said.",
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn languages_are_detected_shown_scoped_and_crossed_only_when_asked() {
    let feeds = FeedServer::start().await;
    let smtp = SmtpServer::start().await;
    // Spanish without a declaration (detected), English declared wrongly as Spanish
    // (a reliable detection wins), French declared.
    feeds.set("/es.xml", rss(None, &[SPANISH_ASYLUM, SPANISH_TPS]));
    feeds.set(
        "/en.xml",
        rss(Some("es-MX"), &[ENGLISH_ASYLUM, ENGLISH_SCHOOL]),
    );
    feeds.set(
        "/fr.xml",
        rss(Some("fr-FR"), &[FRENCH_ASYLUM, FRENCH_REMOVAL]),
    );
    let dir = tempfile::tempdir().unwrap();
    let config = write_config_with(
        dir.path(),
        &[
            ("es", feeds.url("/es.xml")),
            ("en", feeds.url("/en.xml")),
            ("fr", feeds.url("/fr.xml")),
        ],
        smtp.port(),
        "",
        "",
    );
    let app = App::open(config).await.unwrap();
    let now = at("2026-12-01T12:00:00Z");
    subscribe(&app, "plain@example.org", "asylum", "immediate", now).await;
    subscribe(&app, "cross@example.org", "asylum", "immediate", now).await;
    subscribe(&app, "deport@example.org", "deportation", "immediate", now).await;
    subscribe(&app, "scoped@example.org", "TPS lang:es", "immediate", now).await;
    for who in ["cross", "deport"] {
        let s = app
            .store
            .subscriber(&format!("{who}@example.org"))
            .await
            .unwrap()
            .unwrap();
        let searches = app.store.subscriptions_of(s.id).await.unwrap();
        assert!(
            app.store
                .set_crosses_languages(s.id, searches[0].0, true)
                .await
                .unwrap()
        );
        // Once is enough: nothing changes the second time.
        assert!(
            !app.store
                .set_crosses_languages(s.id, searches[0].0, true)
                .await
                .unwrap()
        );
    }

    poll_feeds(&app, now, false).await.unwrap();
    let mut langs: Vec<(String, Option<String>)> = app
        .store
        .items_since(now - chrono::Duration::days(1))
        .await
        .unwrap()
        .into_iter()
        .map(|i| (i.title, i.lang))
        .collect();
    langs.sort();
    let lang_of = |title: &str| {
        langs
            .iter()
            .find(|(t, _)| t == title)
            .and_then(|(_, l)| l.clone())
    };
    assert_eq!(
        lang_of(SPANISH_ASYLUM.1).as_deref(),
        Some("es"),
        "{langs:?}"
    );
    assert_eq!(lang_of(SPANISH_TPS.1).as_deref(), Some("es"), "{langs:?}");
    assert_eq!(
        lang_of(ENGLISH_ASYLUM.1).as_deref(),
        Some("en"),
        "{langs:?}"
    );
    assert_eq!(lang_of(FRENCH_ASYLUM.1).as_deref(), Some("fr"), "{langs:?}");

    let sent = send_digests(&app, now, false).await.unwrap();
    assert_eq!(sent.queued, 4, "{sent:?}");
    let mails: Vec<_> = smtp.wait_for(4, WAIT).await.iter().map(decode).collect();
    let mail = |to: &str| {
        mails
            .iter()
            .find(|m| m.to.contains(to))
            .unwrap_or_else(|| panic!("no mail to {to}"))
    };

    // Not crossing: the word as written, in any language (the French title has
    // "asile", not "asylum").
    let plain = mail("plain@");
    assert!(plain.text.contains(ENGLISH_ASYLUM.1), "{}", plain.text);
    assert!(!plain.text.contains("asilo"), "{}", plain.text);
    assert!(!plain.text.contains("asile"), "{}", plain.text);

    // Crossing: Spanish "asilo" and French "asile" too, accents and marks intact, each
    // marked with its language; the match highlighted in the HTML.
    let cross = mail("cross@");
    assert_eq!(
        cross.subject, "Tidings: 3 new — asylum (3)",
        "{}",
        cross.text
    );
    for title in [SPANISH_ASYLUM.1, ENGLISH_ASYLUM.1, FRENCH_ASYLUM.1] {
        assert!(cross.text.contains(title), "{title} in:\n{}", cross.text);
    }
    assert!(cross.text.contains(" · Español"), "{}", cross.text);
    assert!(cross.text.contains(" · Français"), "{}", cross.text);
    assert!(!cross.text.contains(" · English"), "{}", cross.text);
    assert!(
        cross.html.contains("regla de <mark") && cross.html.contains(">asilo</mark>"),
        "{}",
        cross.html
    );
    assert!(
        cross.html.contains("<span lang=\"es\">Español</span>"),
        "{}",
        cross.html
    );

    // "expulsion" is a member for French only: the removal flight is deportation news,
    // the English pupil's expulsion is not.
    let deport = mail("deport@");
    assert!(deport.text.contains(FRENCH_REMOVAL.1), "{}", deport.text);
    assert!(!deport.text.contains(ENGLISH_SCHOOL.1), "{}", deport.text);

    // `lang:` scope: only the Spanish TPS item.
    let scoped = mail("scoped@");
    assert_eq!(
        scoped.subject, "Tidings: 1 new — TPS lang:es (1)",
        "{}",
        scoped.text
    );
    assert!(scoped.text.contains(SPANISH_TPS.1), "{}", scoped.text);
}

/// Turning crossing on and off from the command line; the list shows it; `tidings
/// match --cross-languages` previews it with each item's language.
#[test]
fn searches_cross_languages_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(&config, "database = \"t.db\"\n").unwrap();
    let run = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_tidings"))
            .arg("--config")
            .arg(&config)
            .args(args)
            .env_remove("TIDINGS_CONFIG")
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        (out.status.success(), text)
    };
    let (ok, out) = run(&["subscriber", "add", "ana@example.org", "--query", "asylum"]);
    assert!(ok, "{out}");
    let (ok, out) = run(&["subscriber", "list"]);
    assert!(ok && !out.contains("crosses languages"), "{out}");
    let on = [
        "subscriber",
        "cross-languages",
        "ana@example.org",
        "-q",
        "asylum",
        "on",
    ];
    let (ok, out) = run(&on);
    assert!(
        ok && out.contains("also finds its words in other languages"),
        "{out}"
    );
    let (ok, out) = run(&["subscriber", "list"]);
    assert!(ok && out.contains("asylum  (crosses languages)"), "{out}");
    let (ok, out) = run(&[
        "subscriber",
        "cross-languages",
        "ana@example.org",
        "-q",
        "asylum",
        "maybe",
    ]);
    assert!(!ok && out.contains("say on or off"), "{out}");
    let (ok, out) = run(&[
        "subscriber",
        "cross-languages",
        "ana@example.org",
        "-q",
        "visa",
        "on",
    ]);
    assert!(!ok && out.contains("has no search \"visa\""), "{out}");
    let (ok, out) = run(&[
        "subscriber",
        "cross-languages",
        "ana@example.org",
        "-q",
        "asylum",
        "off",
    ]);
    assert!(ok, "{out}");
    let (ok, out) = run(&["subscriber", "list"]);
    assert!(ok && !out.contains("crosses languages"), "{out}");
}

/// An admin extends the sets with a file of their own; a broken one is refused with
/// where and why, by `check-config` as at start.
#[test]
fn admins_extend_the_language_sets_and_broken_files_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    let check = |sets: &str| {
        std::fs::write(dir.path().join("mine.toml"), sets).unwrap();
        std::fs::write(
            &config,
            "database = \"t.db\"\n[languages]\ndetect = [\"en\", \"es\", \"ht\"]\n",
        )
        .unwrap();
        let refused = std::process::Command::new(env!("CARGO_BIN_EXE_tidings"))
            .arg("--config")
            .arg(&config)
            .arg("check-config")
            .output()
            .unwrap();
        std::fs::write(
            &config,
            "database = \"t.db\"\n[languages]\nsynonyms = \"mine.toml\"\n",
        )
        .unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_tidings"))
            .arg("--config")
            .arg(&config)
            .arg("check-config")
            .output()
            .unwrap();
        let text = |o: &std::process::Output| {
            String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr)
        };
        (text(&refused), out.status.success(), text(&out))
    };
    let (refused, ok, out) = check(
        "[[set]]\nconcept = \"lottery\"\nen = [\"diversity visa\"]\nes = [\"lotería de visas\"]\n",
    );
    // Haitian Creole can be declared by a feed, not detected.
    assert!(
        refused.contains("3:") && refused.contains("cannot detect language \"ht\""),
        "{refused}"
    );
    assert!(ok, "{out}");
    let (_, ok, out) = check("[[set]]\nconcept = \"x\"\nen = [\"a\"]\n");
    assert!(!ok && out.contains("needs at least two terms"), "{out}");
    let (_, ok, out) = check("[[set]]\nconcept = \"x\"\nspanish = [\"a\", \"b\"]\n");
    assert!(
        !ok && out.contains("\"spanish\" is not a language code"),
        "{out}"
    );
    let (_, ok, out) = check("[[set]]\nconcept = \"x\"\nen = \"a\"\n");
    assert!(
        !ok && out.contains("mine.toml: line 3, column 6") && out.contains("list of terms"),
        "{out}"
    );
}

/// The shipped sets read and hold what their review promises.
#[test]
fn the_shipped_sets_keep_false_friends_out() {
    let sets = tidings::config::language_sets(tidings::config::LANGUAGE_SETS).unwrap();
    assert!(sets.len() >= 12, "{}", sets.len());
    let has = |lang: &str, term: &str| {
        sets.iter()
            .flatten()
            .any(|(l, t)| l == lang && t.eq_ignore_ascii_case(term))
    };
    for (lang, term) in [
        ("es", "asilo"),
        ("fr", "asile"),
        ("es", "deportación"),
        ("es", "tarjeta verde"),
        ("es", "permiso de trabajo"),
        ("es", "estatus de protección temporal"),
        ("es", "permiso humanitario"),
        ("es", "boletín de visas"),
        ("fr", "expulsion"),
    ] {
        assert!(has(lang, term), "{lang} {term}");
    }
    // False friends: French "parole" is speech, English "expulsion" is from school,
    // French "TPS" is a tax.
    for (lang, term) in [("fr", "parole"), ("en", "expulsion"), ("fr", "TPS")] {
        assert!(!has(lang, term), "{lang} {term} must stay out");
    }
}

/// A feed's first poll (every item new, so their language and story terms are worked
/// out while parsing) tells each item's language and story as any later poll does:
/// each item its own, whatever its place in the feed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_first_poll_tells_each_item_its_own_language_and_story() {
    let feeds = FeedServer::start().await;
    let smtp = SmtpServer::start().await;
    feeds.set("/wire.xml", rss(None, &[ENGLISH_ASYLUM]));
    // Down at first: its first good poll comes after the wire's.
    feeds.set("/mixed.xml", Route::status(503, "later"));
    let dir = tempfile::tempdir().unwrap();
    let config = write_config_with(
        dir.path(),
        &[
            ("wire", feeds.url("/wire.xml")),
            ("mixed", feeds.url("/mixed.xml")),
        ],
        smtp.port(),
        "",
        "",
    );
    let app = App::open(config).await.unwrap();
    let now = at("2026-12-01T12:00:00Z");
    poll_feeds(&app, now, false).await.unwrap();
    // The wire's story, carried again (under another guid) between items in other
    // languages.
    let copy = ("copy-1", ENGLISH_ASYLUM.1, ENGLISH_ASYLUM.2);
    feeds.set(
        "/mixed.xml",
        rss(None, &[SPANISH_TPS, FRENCH_REMOVAL, copy, SPANISH_ASYLUM]),
    );
    poll_feeds(&app, now + chrono::Duration::minutes(30), false)
        .await
        .unwrap();

    let db = rusqlite::Connection::open(dir.path().join("data/tidings.db")).unwrap();
    let mut stmt = db
        .prepare("SELECT feed_id, guid, lang, story_id, id FROM items ORDER BY id")
        .unwrap();
    let items: Vec<(String, String, Option<String>, i64, i64)> = stmt
        .query_map([], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
        })
        .unwrap()
        .collect::<rusqlite::Result<_>>()
        .unwrap();
    let item = |guid: &str| {
        items
            .iter()
            .find(|i| i.1 == guid)
            .unwrap_or_else(|| panic!("{guid} stored: {items:?}"))
    };
    let wire = item(ENGLISH_ASYLUM.0);
    assert_eq!(wire.0, "wire");
    for (guid, lang) in [
        (SPANISH_TPS.0, "es"),
        (FRENCH_REMOVAL.0, "fr"),
        ("copy-1", "en"),
        (SPANISH_ASYLUM.0, "es"),
    ] {
        assert_eq!(item(guid).2.as_deref(), Some(lang), "{guid}: {items:?}");
    }
    assert_eq!(item("copy-1").3, wire.3, "the copy joins the wire's story");
    for guid in [SPANISH_TPS.0, FRENCH_REMOVAL.0, SPANISH_ASYLUM.0] {
        let (.., story, id) = item(guid);
        assert_eq!(story, id, "{guid} starts a story of its own: {items:?}");
    }
}
