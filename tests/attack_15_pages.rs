//! Attack on issue 15 (pages without feeds): each test is one confirmed bug.

mod support;

use std::time::Duration;

use chrono::{DateTime, Utc};
use support::{FeedServer, Route, SmtpServer, at, decode, subscribe};
use tidings::article::decode_html;
use tidings::config::Config;
use tidings::page::{
    Compared, ListingRules, compare, describe_change, listing, suggest_listing, watched_text,
};
use tidings::{App, poll_feeds, send_digests};
use url::Url;

const WAIT: Duration = Duration::from_secs(10);

fn now() -> DateTime<Utc> {
    at("2026-12-01T12:00:00Z")
}

fn rules(item_selector: &str) -> ListingRules {
    ListingRules {
        item_selector: item_selector.into(),
        ..ListingRules::default()
    }
}

fn page(body: String) -> Route {
    Route::status(200, body).header("content-type", "text/html; charset=utf-8")
}

async fn app(dir: &std::path::Path, feeds: &str, smtp_port: u16) -> App {
    let text = format!(
        "database = \"data/tidings.db\"\n[poll]\ninitial_backlog = \"24h\"\ntimeout = \"5s\"\n\
         [digest]\ntimezone = \"UTC\"\n[mail]\nfrom = \"Tidings <alerts@tidings.test>\"\n\
         transport = \"smtp\"\n[mail.smtp]\nhost = \"127.0.0.1\"\nport = {smtp_port}\n\
         tls = \"none\"\n[service]\nadmin_listen = \"\"\n[web]\nlisten = \"\"\n{feeds}\n"
    );
    let path = dir.join("config.toml");
    std::fs::write(&path, text).unwrap();
    App::open(Config::load(&path).unwrap()).await.unwrap()
}

async fn mails(app: &App, smtp: &SmtpServer, now: DateTime<Utc>) -> Vec<String> {
    let before = smtp.messages().len();
    let round = send_digests(app, now, false).await.unwrap();
    smtp.wait_for(before + round.delivery.sent, WAIT).await[before..]
        .iter()
        .map(|m| decode(m).text)
        .collect()
}

// ---- 1. a listing entry's own text changing every render re-alerts it -------------------

fn newsroom(ago: &str) -> String {
    format!(
        "<html><head><title>Newsroom</title></head><body><ul class=\"news\">\
         <li class=\"news-item\"><h3><a href=\"/news/tps-haiti\">TPS for Haiti extended</a></h3>\
         <time datetime=\"2026-12-01T09:00:00Z\">Dec 1</time>\
         <span class=\"meta\">Posted {ago} · 12 comments</span></li>\
         <li class=\"news-item\"><h3><a href=\"/news/fees\">New fee schedule</a></h3>\
         <span class=\"meta\">Posted 2 days ago</span></li>\
         </ul></body></html>"
    )
}

/// The page re-renders ("Posted 3 hours ago" → "Posted 4 hours ago"): same entry, same
/// link, nothing new. Tidings takes the entry's whole text as its summary, so the
/// fingerprint changes, the item counts as edited and goes out again, "updated", to
/// everyone it matched — on every poll, for as long as the entry is on the page.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relative_date_in_a_listing_entry_resends_it_on_every_poll() {
    let site = FeedServer::start().await;
    let smtp = SmtpServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    site.set("/newsroom", page(newsroom("3 hours ago")));
    let feeds = format!(
        "[[feeds]]\nid = \"newsroom\"\nurl = \"{}\"\nkind = \"html\"\nitem_selector = \"li.news-item\"\n",
        site.url("/newsroom")
    );
    let app = app(dir.path(), &feeds, smtp.port()).await;
    subscribe(&app, "tps@example.org", "TPS", "immediate", now()).await;
    let first = poll_feeds(&app, now(), false).await.unwrap();
    assert_eq!(first.matches, 1, "{first:?}");
    assert_eq!(mails(&app, &smtp, now()).await.len(), 1);

    let mut t = now();
    for ago in ["4 hours ago", "5 hours ago"] {
        t += chrono::Duration::hours(1);
        site.set("/newsroom", page(newsroom(ago)));
        let again = poll_feeds(&app, t, false).await.unwrap();
        let sent = mails(&app, &smtp, t).await;
        assert_eq!(
            (again.updated_items, again.matches, sent.len()),
            (0, 0, 0),
            "re-render {ago:?} re-sent the entry: {again:?}\n{sent:?}"
        );
    }
}

/// Same cause, no relative date needed: the story is both in the "featured" box (with a
/// teaser) and in the list (with its date), both selected by `article.s`. The first copy
/// wins the key; when the site rotates the featured box below the list (or drops it), the
/// item's text changes, and it is re-sent as "updated".
#[test]
fn a_featured_copy_of_an_entry_moving_does_not_edit_it() {
    let featured = "<article class=\"s\"><a href=\"/tps\">TPS for Haiti extended</a><p>Featured: what it means for you</p></article>";
    let listed = "<article class=\"s\"><a href=\"/tps\">TPS for Haiti extended</a> <time datetime=\"2026-11-30\">Nov 30</time></article>";
    let base = Url::parse("https://news.example/").unwrap();
    let read = |html: String| {
        listing(&html, &base, &rules("article.s"), now())
            .unwrap()
            .0
            .remove(0)
    };
    let before = read(format!("<html><body>{featured}{listed}</body></html>"));
    let after = read(format!("<html><body>{listed}{featured}</body></html>"));
    assert_eq!(before.key, after.key);
    assert_eq!(
        before.headline_fingerprint(),
        after.headline_fingerprint(),
        "same page, boxes reordered: the entry counts as edited\n{:?}\n{:?}",
        before.summary,
        after.summary
    );
}

// ---- 2. watch → html on the same page: every entry alerts ---------------------------------

fn listing_page(entries: &[(&str, &str)]) -> String {
    let items: String = entries
        .iter()
        .map(|(path, title)| format!("<li class=\"n\"><a href=\"{path}\">{title}</a></li>"))
        .collect();
    format!(
        "<html><head><title>Newsroom</title></head><body><ul id=\"news\">{items}</ul></body></html>"
    )
}

/// The admin watched the newsroom list (kind = "watch"), then reads it as a listing
/// (kind = "html") instead — same URL. The options change resets the snapshot and body
/// hash but not `baseline_at`, so the first listing poll is not a baseline: every
/// undated, years-old entry on the page is "new" and matches.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn switching_a_watched_page_to_a_listing_alerts_every_old_entry() {
    let site = FeedServer::start().await;
    let smtp = SmtpServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    site.set(
        "/newsroom",
        page(listing_page(&[
            ("/news/tps-2019", "TPS for Sudan (2019)"),
            ("/news/tps-2021", "TPS for Burma (2021)"),
            ("/news/tps-2023", "TPS for Haiti (2023)"),
        ])),
    );
    let url = site.url("/newsroom");
    let watch = format!(
        "[[feeds]]\nid = \"newsroom\"\nurl = \"{url}\"\nkind = \"watch\"\nselector = \"#news\"\n"
    );
    let app1 = app(dir.path(), &watch, smtp.port()).await;
    subscribe(&app1, "tps@example.org", "TPS", "immediate", now()).await;
    poll_feeds(&app1, now(), false).await.unwrap();
    drop(app1);

    let html = format!(
        "[[feeds]]\nid = \"newsroom\"\nurl = \"{url}\"\nkind = \"html\"\nitem_selector = \"#news li\"\n"
    );
    let app2 = app(dir.path(), &html, smtp.port()).await;
    let t = now() + chrono::Duration::hours(1);
    let first = poll_feeds(&app2, t, false).await.unwrap();
    let sent = mails(&app2, &smtp, t).await;
    assert_eq!(
        (first.new_items, first.matches, sent.len()),
        (3, 0, 0),
        "old entries of the first listing poll alerted: {first:?}\n{sent:?}"
    );
}

// ---- 3. session ids / click ids in links make every entry new on every render -------------

/// Links carry a per-visit session id (Java `;jsessionid=`, PHP `PHPSESSID=`) or a click id
/// (`fbclid`, `gclid`): the same entries rendered twice get new keys, so each re-render
/// brings every entry again as new (and they alert: only the first poll is a baseline).
/// `canonical_link` only drops `utm_*`.
#[test]
fn session_and_click_ids_in_listing_links_do_not_make_entries_new() {
    let base = Url::parse("https://travel.example.gov/news/").unwrap();
    let render = |session: &str| {
        format!(
            "<html><body><ul>\
             <li class=\"n\"><a href=\"/news/a.jsp;jsessionid={session}\">Visa appointments resume</a></li>\
             <li class=\"n\"><a href=\"/news/b.php?id=7&PHPSESSID={session}\">Fee waiver announced</a></li>\
             <li class=\"n\"><a href=\"/news/c?fbclid={session}\">TPS notice published</a></li>\
             <li class=\"n\"><a href=\"/news/d?id=9&gclid={session}\">Asylum backlog report</a></li>\
             </ul></body></html>"
        )
    };
    let keys = |html: &str| -> Vec<String> {
        listing(html, &base, &rules("li.n"), now())
            .unwrap()
            .0
            .into_iter()
            .map(|i| i.key)
            .collect()
    };
    let first = keys(&render("A1B2C3D4E5"));
    let second = keys(&render("F6G7H8I9J0"));
    let changed: Vec<usize> = (0..4).filter(|&i| first[i] != second[i]).collect();
    assert!(
        changed.is_empty(),
        "entries {changed:?} got new keys when only the session/click id changed"
    );
}

// ---- 4. the first link of an entry is not its story ---------------------------------------

/// A common card: a topic tag link first, the headline link after. `feeds discover`
/// suggests `article.story` and promises 3 entries (sampling the headline links), but the
/// listing takes each entry's *first* link: the two asylum stories share the topic link,
/// collapse into one item, and every later asylum story is a duplicate of it — never an
/// alert. The links mailed are the topic pages.
#[test]
fn an_entry_is_keyed_by_its_headline_link_not_its_first_link() {
    let html = r#"<html><body><main>
      <article class="story"><a class="topic" href="/topics/asylum">Asylum</a>
        <h2><a href="/news/one">First asylum story of the week</a></h2></article>
      <article class="story"><a class="topic" href="/topics/asylum">Asylum</a>
        <h2><a href="/news/two">Second asylum story of the week</a></h2></article>
      <article class="story"><a class="topic" href="/topics/visas">Visas</a>
        <h2><a href="/news/three">Third story, about visas this time</a></h2></article>
    </main></body></html>"#;
    let base = Url::parse("https://news.example/latest").unwrap();
    let suggestion = suggest_listing(html, &base).unwrap();
    assert_eq!(suggestion.rules.item_selector, "article.story");
    assert_eq!(suggestion.entries, 3);
    assert_eq!(suggestion.sample[1].1, "https://news.example/news/two");
    let items = listing(html, &base, &suggestion.rules, now()).unwrap().0;
    let links: Vec<&str> = items.iter().filter_map(|i| i.link.as_deref()).collect();
    assert_eq!(
        links,
        [
            "https://news.example/news/one",
            "https://news.example/news/two",
            "https://news.example/news/three"
        ],
        "what the suggested table reads"
    );
}

/// Same cause: a `javascript:` share button before the headline link leaves the entry
/// without a link (the first `a[href]` is taken, then dropped), so it is keyed on its text
/// and mailed without a link.
#[test]
fn a_javascript_button_before_the_headline_does_not_lose_the_link() {
    let html = r#"<html><body><ul>
      <li class="n"><a href="javascript:share(1)">Share</a> <a href="/news/one">Visa bulletin for January</a></li>
      <li class="n"><a href="javascript:share(2)">Share</a> <a href="/news/two">Fee rule takes effect</a></li>
    </ul></body></html>"#;
    let base = Url::parse("https://news.example/latest").unwrap();
    let items = listing(html, &base, &rules("li.n"), now()).unwrap().0;
    assert_eq!(
        items[0].link.as_deref(),
        Some("https://news.example/news/one"),
        "{:?}",
        items[0]
    );
}

// ---- 5. <base href> is ignored ------------------------------------------------------------

/// Browsers resolve the page's relative links against `<base href>`; Tidings resolves them
/// against the page's own URL, so the mailed link is a 404 (and a full_text feed fetches
/// the wrong page). `feeds discover` shows the same wrong links.
#[test]
fn relative_links_resolve_against_the_base_element() {
    let html = r#"<html><head><base href="https://www.uscis.gov/archive/2026/"></head><body><ul>
      <li class="n"><a href="story-1.html">Story one about parole programs</a></li>
      <li class="n"><a href="story-2.html">Story two about parole programs</a></li>
      <li class="n"><a href="story-3.html">Story three about parole programs</a></li>
    </ul></body></html>"#;
    let base = Url::parse("https://www.uscis.gov/newsroom/list.html").unwrap();
    let items = listing(html, &base, &rules("li.n"), now()).unwrap().0;
    assert_eq!(
        items[0].link.as_deref(),
        Some("https://www.uscis.gov/archive/2026/story-1.html")
    );
    let suggestion = suggest_listing(html, &base).unwrap();
    assert_eq!(
        suggestion.sample[0].1,
        "https://www.uscis.gov/archive/2026/story-1.html"
    );
}

// ---- 6. entries past the 500th are silently never read ------------------------------------

/// An archive page listing notices oldest first: new notices are appended at the end. With
/// more than 500 entries, the new one is past MAX_PAGE_ITEMS and never becomes an item —
/// no error, no note in `feeds status`: silence.
#[test]
fn a_new_entry_past_the_500th_is_not_silently_lost() {
    let base = Url::parse("https://www.example.gov/notices").unwrap();
    let render = |n: usize| {
        let items: String = (0..n)
            .map(|i| {
                format!(
                    "<li class=\"n\"><a href=\"/notice/{i}\">Federal Register notice {i}</a></li>"
                )
            })
            .collect();
        format!("<html><body><ul>{items}</ul></body></html>")
    };
    let before = listing(&render(600), &base, &rules("li.n"), now())
        .unwrap()
        .0;
    let after = listing(&render(601), &base, &rules("li.n"), now())
        .unwrap()
        .0;
    let known: std::collections::HashSet<_> = before.iter().map(|i| i.key.clone()).collect();
    let new: Vec<_> = after.iter().filter(|i| !known.contains(&i.key)).collect();
    assert_eq!(
        new.len(),
        1,
        "the appended notice 600 was not read (nor any error)"
    );
}

// ---- 7. invisible <script>/<style> inside the watched part -------------------------------

/// A CSRF token or nonce in an inline script inside the selected part changes on every
/// render. `formatted_text` keeps script and style text, so every poll is a "change"
/// (and the snapshot, the diff and the mail are full of JavaScript).
#[test]
fn script_and_style_inside_the_watched_part_never_alert() {
    let render = |nonce: &str| {
        format!(
            "<html><head><title>Visa Bulletin</title></head><body><div id=\"dates\">\
             <table><tr><td>EB-2</td><td>India</td><td>15DEC22</td></tr></table>\
             <script>window.__csrf = \"{nonce}\";</script>\
             <style>.c-{nonce} {{ color: red }}</style>\
             <noscript>Enable JavaScript ({nonce})</noscript></div></body></html>"
        )
    };
    let old = watched_text(&render("a1b2c3"), "#dates").unwrap();
    let new = watched_text(&render("d4e5f6"), "#dates").unwrap();
    assert!(
        !old.contains("__csrf"),
        "script text is remembered: {old:?}"
    );
    assert_eq!(describe_change(&old, &new), None);
}

// ---- 8. one stray byte outside the selector re-decodes the whole page ---------------------

/// A page without a declared charset, in UTF-8. Someone pastes a windows-1252 "é" into the
/// footer (outside the selector): the body is no longer valid UTF-8, so the *whole* page
/// is decoded as windows-1252 and every accented word inside the selector changes:
/// "Visa für Ärzte" → "Visa fÃ¼r Ã„rzte" — an alert for a change outside the selector
/// (and another when the footer is fixed).
#[test]
fn a_stray_byte_outside_the_selector_does_not_change_the_watched_text() {
    let render = |footer: &[u8]| {
        let mut body = b"<html><head><title>Bulletin</title></head><body>\
            <div id=\"dates\">Visa f\xc3\xbcr \xc3\x84rzte: 15DEC22</div><footer>"
            .to_vec();
        body.extend_from_slice(footer);
        body.extend_from_slice(b"</footer></body></html>");
        body
    };
    let old = watched_text(
        &decode_html(&render(b"Updated by Jose"), Some("text/html")),
        "#dates",
    )
    .unwrap();
    let new = watched_text(
        &decode_html(&render(b"Updated by Jos\xe9"), Some("text/html")),
        "#dates",
    )
    .unwrap();
    assert_eq!(describe_change(&old, &new), None, "{old:?} vs {new:?}");
}

// ---- 9. control characters in titles ------------------------------------------------------

/// Feed items lose C0 control characters (`html_to_text`); a listing's titles and
/// summaries keep them (ESC, BEL, backspace …) into the store, the mail and matching.
#[test]
fn control_characters_do_not_reach_listing_titles() {
    let html = "<html><body><ul><li class=\"n\"><a href=\"/a\">TPS\u{1b}[2J\u{7} for\u{8}\u{8} Haiti</a></li></ul></body></html>";
    let base = Url::parse("https://news.example/").unwrap();
    let items = listing(html, &base, &rules("li.n"), now()).unwrap().0;
    assert!(
        !items[0].title.chars().any(|c| c.is_control()),
        "{:?}",
        items[0].title
    );
    assert!(
        !items[0].summary.chars().any(|c| c.is_control()),
        "{:?}",
        items[0].summary
    );
}

// ---- 10. cost ------------------------------------------------------------------------------

/// A watched table whose 20,000 words all change (a new bulletin replaces the old one):
/// Myers without a deadline is O((N+M)·D), seconds of CPU on one blocking thread per
/// poll, and growing quadratically with the page (the body limit is 10 MiB).
#[test]
fn a_total_rewrite_of_a_large_watched_part_is_diffed_quickly() {
    let old: String = (0..20_000).map(|i| format!("a{i} ")).collect();
    let new: String = (0..20_000).map(|i| format!("b{i} ")).collect();
    // (Its cost is bounded by a deadline inside; no timing here: tests do not time.)
    let change = describe_change(&old, &new).unwrap();
    assert!(
        change.contains("a0") && change.contains("b19999"),
        "{}",
        &change[..200]
    );
    assert!(
        change.lines().count() <= 41,
        "{} lines",
        change.lines().count()
    );
}

/// A listing page of 30,000 nested unclosed `<div>`s (150 KB, far under the 10 MiB body
/// limit): the DOM tree builder is quadratic on depth (see parse::html_to_text's note),
/// and page.rs builds a full DOM with no element cap (article.rs caps at 50,000).
/// 100,000 took 585 s in the test profile.
#[test]
fn a_deeply_nested_page_is_refused_quickly() {
    let html = format!(
        "<html><body>{}<a href=\"/x\">deep link text here</a></body></html>",
        "<div>".repeat(30_000)
    );
    let base = Url::parse("https://news.example/").unwrap();
    // Refused before a tree is built (building it costs the square of the depth).
    let error = listing(&html, &base, &rules("li.n"), now()).unwrap_err();
    assert!(
        error.contains("nests elements more than 1000 deep"),
        "{error}"
    );
}

// ---- 11. words of an entry run together -------------------------------------------------

/// Minified markup (no whitespace between tags) is the norm. The entry's summary is
/// `element.text()`, which glues block elements: "Fee rule publishedAsylum interviews…".
/// A search for `asylum` does not match the entry (feed items go through html_to_text,
/// where block elements become spaces).
#[test]
fn the_words_of_a_listing_entry_do_not_run_together() {
    let html = "<html><body><ul><li class=\"n\"><h3><a href=\"/a\">Fee rule published</a></h3>\
                <p>Asylum interviews move to a new office</p><time datetime=\"2026-11-30\">Nov 30</time></li>\
                </ul></body></html>";
    let base = Url::parse("https://news.example/").unwrap();
    let items = listing(html, &base, &rules("li.n"), now()).unwrap().0;
    assert!(
        items[0].summary.split_whitespace().any(|w| w == "Asylum"),
        "{:?}",
        items[0].summary
    );
}

// ---- 12. pagination back-fill: an old entry sliding onto the page alerts as news --------

/// The page shows the newest three entries. One is taken down; the fourth (dated two months
/// ago, never seen because it was on page 2) slides onto the page and is mailed as news.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_old_entry_sliding_up_from_page_two_is_not_news() {
    let site = FeedServer::start().await;
    let smtp = SmtpServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let render = |entries: &[(&str, &str, &str)]| {
        let items: String = entries
            .iter()
            .map(|(path, title, date)| {
                format!("<li class=\"n\"><a href=\"{path}\">{title}</a> <time datetime=\"{date}\">{date}</time></li>")
            })
            .collect();
        page(format!("<html><body><ul>{items}</ul></body></html>"))
    };
    site.set(
        "/news",
        render(&[
            ("/n/3", "TPS notice three", "2026-11-30T10:00:00Z"),
            ("/n/2", "TPS notice two", "2026-11-20T10:00:00Z"),
            ("/n/1", "TPS notice one", "2026-11-10T10:00:00Z"),
        ]),
    );
    let feeds = format!(
        "[[feeds]]\nid = \"news\"\nurl = \"{}\"\nkind = \"html\"\nitem_selector = \"li.n\"\n",
        site.url("/news")
    );
    let app = app(dir.path(), &feeds, smtp.port()).await;
    subscribe(&app, "tps@example.org", "TPS", "immediate", now()).await;
    poll_feeds(&app, now(), false).await.unwrap();
    mails(&app, &smtp, now()).await;

    let t = now() + chrono::Duration::hours(1);
    site.set(
        "/news",
        render(&[
            ("/n/3", "TPS notice three", "2026-11-30T10:00:00Z"),
            ("/n/1", "TPS notice one", "2026-11-10T10:00:00Z"),
            ("/n/0", "TPS notice from October", "2026-10-01T10:00:00Z"),
        ]),
    );
    let second = poll_feeds(&app, t, false).await.unwrap();
    let sent = mails(&app, &smtp, t).await;
    assert_eq!(second.matches, 0, "{second:?}\n{sent:?}");
}

// ---- 13. an error page served with 200 that the selector still fits ----------------------

/// The CMS's maintenance page keeps the site template (`<main>` included) and answers 200.
/// The watch must not report the whole bulletin removed, then, when the site is back, the
/// whole bulletin added: two alerts, neither a real change. (A part of fewer than 20 words
/// is always compared word by word: a single date that changes is the most important
/// watch there is.)
#[test]
fn a_maintenance_page_with_status_200_is_not_two_changes() {
    let rows: String = [
        ("EB-1", "01JAN23", "15FEB22"),
        ("EB-2", "15DEC22", "01MAR21"),
        ("EB-3", "01MAR21", "15NOV13"),
        ("EB-4", "01SEP20", "01SEP20"),
        ("EB-5 Unreserved", "C", "01DEC19"),
    ]
    .iter()
    .map(|(c, china, india)| format!("<tr><td>{c}</td><td>{china}</td><td>{india}</td></tr>"))
    .collect();
    let bulletin = format!(
        "<html><head><title>Visa Bulletin</title></head><body><main>\
         <h2>Final action dates for employment-based preference cases</h2>\
         <table><tr><th>Category</th><th>China</th><th>India</th></tr>{rows}</table></main></body></html>"
    );
    let down = "<html><head><title>Visa Bulletin</title></head><body><main>\
        <p>We are performing scheduled maintenance. Please try again later.</p></main></body></html>";
    let up = watched_text(&bulletin, "main").unwrap();
    let maintenance = watched_text(down, "main").unwrap();
    let first = compare(&up, &maintenance);
    assert!(
        matches!(&first, Compared::Unrelated(why) if why.contains("maintenance")),
        "{first:?}"
    );
    // The snapshot is kept, so the site's return compares with it: the same.
    assert_eq!(
        compare(&up, &watched_text(&bulletin, "main").unwrap()),
        Compared::Same
    );
    // A real month's change of the same table is a change.
    let next = watched_text(&bulletin.replace("15DEC22", "01FEB23"), "main").unwrap();
    assert!(matches!(compare(&up, &next), Compared::Changed(c) if c.contains("15DEC22 → 01FEB23")));
}
