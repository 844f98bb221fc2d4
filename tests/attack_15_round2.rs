//! Second hostile review of issue 15 (full text, pages without feeds). Each test states a
//! promise and fails while the bug is there. Loopback only: 127.0.0.2 stands in for the
//! internet.

mod support;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use chrono::{DateTime, Utc};
use support::{FeedServer, Route, SmtpServer, at, subscribe};
use tidings::article::{Extraction, extract};
use tidings::config::Config;
use tidings::fetch::{AddressPolicy, Fetcher};
use tidings::page::{Compared, ListingRules, compare, listing, watched_text};
use tidings::pipeline::fetch_articles;
use tidings::{App, poll_feeds};
use url::Url;

const PUBLIC: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);

fn now() -> DateTime<Utc> {
    at("2026-12-01T12:00:00Z")
}

fn rules(item_selector: &str) -> ListingRules {
    ListingRules {
        item_selector: item_selector.into(),
        ..ListingRules::default()
    }
}

// ---- 1. `sid` is a story id on PHP-Nuke-style news sites, not a session ----------------

/// PHP-Nuke / PostNuke / many agency CMSs link stories as
/// `modules.php?name=News&file=article&sid=1234`. `listing_link` strips `sid` as a
/// session parameter, so every story on the page gets the same key: only the first
/// entry is ever read, every later story is dropped as a duplicate.
#[test]
fn story_ids_named_sid_are_not_merged_into_one_entry() {
    let base = Url::parse("https://news.example/index.php").unwrap();
    let html = "<html><body><ul>\
        <li class=\"s\"><a href=\"modules.php?name=News&amp;file=article&amp;sid=101\">TPS for Haiti extended by DHS</a></li>\
        <li class=\"s\"><a href=\"modules.php?name=News&amp;file=article&amp;sid=102\">H-1B registration opens in March</a></li>\
        <li class=\"s\"><a href=\"modules.php?name=News&amp;file=article&amp;sid=103\">New fee schedule for Form I-485</a></li>\
        </ul></body></html>";
    let items = listing(html, &base, &rules("li.s"), now()).unwrap().0;
    let titles: Vec<&str> = items.iter().map(|i| i.title.as_str()).collect();
    assert_eq!(
        titles.len(),
        3,
        "three stories, three entries; got {titles:?} with links {:?}",
        items.iter().map(|i| i.link.clone()).collect::<Vec<_>>()
    );
}

// ---- 2. the depth guard refuses ordinary pages with unclosed inline tags ---------------

/// Old CMS output leaves inline tags unclosed inside list items (`<li><span>…</li>`);
/// browsers (and html5ever) close them with the `</li>`, so the page is 4 deep. The
/// guard counts every unclosed non-"flat" tag as one more level, so a long listing
/// (the README promises up to 2,000 entries) is refused as "nests more than 1,000 deep".
#[test]
fn a_long_listing_with_unclosed_spans_is_not_refused_as_too_deep() {
    let base = Url::parse("https://news.example/all").unwrap();
    let mut html = String::from("<html><body><ul class=\"news\">");
    for i in 0..1_200 {
        html.push_str(&format!(
            "<li class=\"n\"><a href=\"/news/{i}\">Immigration news story number {i}</a> \
             <span class=\"date\">Nov {d}</li>\n",
            d = i % 28 + 1
        ));
    }
    html.push_str("</ul></body></html>");
    let read = listing(&html, &base, &rules("li.n"), now());
    assert!(
        read.as_ref().is_ok_and(|(items, _)| items.len() == 1_200),
        "{:?}",
        read.map(|(i, _)| i.len())
    );
}

/// Same for an article: one unclosed `<font>` per paragraph (FrontPage/Word-era pages)
/// makes a long but ordinary article "no article".
#[test]
fn an_article_with_unclosed_font_tags_is_read() {
    let mut html =
        String::from("<html><head><title>Policy manual</title></head><body><div id=\"content\">");
    for i in 0..1_100 {
        html.push_str(&format!(
            "<p><font face=\"Arial\" size=\"2\">Paragraph {i} of the policy manual on \
             adjustment of status and Form I-485 eligibility.</p>\n"
        ));
    }
    html.push_str("</div></body></html>");
    let got = extract(
        &html,
        "https://www.uscis.gov/policy-manual",
        Some("#content"),
    );
    assert!(
        matches!(&got, Extraction::Article(a) if a.text.contains("Paragraph 1099")),
        "{:?}",
        match &got {
            Extraction::NoArticle(why) => why.clone(),
            Extraction::Article(a) => format!("article of {} chars", a.text.len()),
        }
    );
}

// ---- 3. a genuine total rewrite of a watched notice is swallowed, for ever --------------

/// A watched alert box (the kind of part a user watches: "#alert" on an agency page)
/// whose notice is replaced by the next notice: a real change, sharing only a few
/// function words with the old one. `compare` takes it for a maintenance page; since
/// the old text is kept, every later poll compares against the old notice again and
/// fails the same way, until the selector is changed (which starts afresh, so the
/// change is never alerted).
#[test]
fn a_new_notice_replacing_the_old_one_is_a_change() {
    let page = |notice: &str| {
        format!(
            "<html><body><div id=\"alert\"><p>{notice}</p></div><footer>x</footer></body></html>"
        )
    };
    let old = watched_text(
        &page(
            "USCIS offices will be closed on Monday, January 19, 2026, in observance of \
             Martin Luther King Jr. Day. Appointments scheduled that day are rescheduled \
             automatically; you will receive a new notice by mail.",
        ),
        "#alert",
    )
    .unwrap();
    let new = watched_text(
        &page(
            "Effective immediately, H-1B cap registration for fiscal year 2027 opens \
             March 7 and closes March 24. Employers must submit each beneficiary \
             electronically through an organizational myUSCIS online account.",
        ),
        "#alert",
    )
    .unwrap();
    let got = compare(&old, &new);
    assert!(matches!(got, Compared::Changed(_)), "{got:?}");
}

// ---- 4. full text switched off: pending articles are still fetched ----------------------

async fn app(dir: &std::path::Path, poll: &str, feeds: &str, smtp_port: u16) -> App {
    let text = format!(
        "database = \"data/tidings.db\"\n[poll]\ninitial_backlog = \"24h\"\ntimeout = \"2s\"\n{poll}\n\
         [digest]\ntimezone = \"UTC\"\n[mail]\nfrom = \"Tidings <alerts@tidings.test>\"\n\
         transport = \"smtp\"\n[mail.smtp]\nhost = \"127.0.0.1\"\nport = {smtp_port}\n\
         tls = \"none\"\n[service]\nadmin_listen = \"\"\n[web]\nlisten = \"\"\n{feeds}\n"
    );
    let path = dir.join("config.toml");
    std::fs::write(&path, text).unwrap();
    let mut app = App::open(Config::load(&path).unwrap()).await.unwrap();
    let policy = AddressPolicy {
        treat_as_public: vec![IpAddr::V4(PUBLIC)],
        ..AddressPolicy::default()
    };
    app.fetcher = Fetcher::with_policy(&app.config.poll, policy).unwrap();
    app
}

fn rss(link: &str, now: DateTime<Utc>) -> Route {
    let published = (now - chrono::Duration::hours(1)).to_rfc2822();
    Route::feed(
        "application/rss+xml",
        format!(
            "<?xml version=\"1.0\"?><rss version=\"2.0\"><channel><title>Daily</title>\
             <item><guid>one</guid><title>Visa news</title><link>{link}</link>\
             <description>Teaserword only.</description><pubDate>{published}</pubDate></item>\
             </channel></rss>"
        ),
    )
}

fn story() -> Route {
    let body = format!(
        "<html><head><title>Story</title></head><body><article><p>{}</p></article></body></html>",
        "Articleword appears in this long paragraph about immigration policy. ".repeat(10)
    );
    Route::status(200, body).header("content-type", "text/html; charset=utf-8")
}

/// The admin turns `full_text` off (the site blocks us, or is slow) while items are
/// pending: the feed no longer asks for articles, yet the pending ones are still fetched
/// (up to four times each) and held back from matching until then. `claim_articles`
/// never looks at the feed's current `full_text`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn turning_full_text_off_stops_fetching_pending_articles() {
    let site = FeedServer::start_on(SocketAddr::from((PUBLIC, 0)))
        .await
        .expect("bind 127.0.0.2");
    let smtp = SmtpServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let t = now();
    site.set("/story", story());
    site.set("/feed.xml", rss(&site.url("/story"), t));
    let feed = |extra: &str| {
        format!(
            "[[feeds]]\nid = \"daily\"\nurl = \"{}\"\n{extra}\n",
            site.url("/feed.xml")
        )
    };
    {
        let app = app(dir.path(), "", &feed("full_text = true"), smtp.port()).await;
        subscribe(&app, "a@example.org", "teaserword", "immediate", t).await;
        poll_feeds(&app, t, false).await.unwrap();
    }
    // Off again, before the article job ran.
    let app = app(dir.path(), "", &feed("full_text = false"), smtp.port()).await;
    let t2 = t + chrono::Duration::minutes(1);
    poll_feeds(&app, t2, false).await.unwrap();
    let read = fetch_articles(&app, t2).await.unwrap();
    assert_eq!(
        site.hits("/story"),
        0,
        "full_text is off, yet the article was fetched: {read:?}"
    );
    assert_eq!(
        (read.none, read.matches),
        (1, 1),
        "matched on its feed text: {read:?}"
    );
}

// ---- 5. per_host = 1: articles still run (held?) ----------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_one_connection_per_host_articles_still_run() {
    let site = FeedServer::start_on(SocketAddr::from((PUBLIC, 0)))
        .await
        .expect("bind 127.0.0.2");
    let smtp = SmtpServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let t = now();
    site.set("/story", story());
    site.set("/feed.xml", rss(&site.url("/story"), t));
    let feeds = format!(
        "[[feeds]]\nid = \"daily\"\nurl = \"{}\"\nfull_text = true\n",
        site.url("/feed.xml")
    );
    let app = app(dir.path(), "per_host = 1", &feeds, smtp.port()).await;
    subscribe(&app, "a@example.org", "articleword", "immediate", t).await;
    poll_feeds(&app, t, false).await.unwrap();
    let read = tokio::time::timeout(std::time::Duration::from_secs(20), fetch_articles(&app, t))
        .await
        .expect("articles never ran with per_host = 1")
        .unwrap();
    assert_eq!((read.ok, read.matches), (1, 1), "{read:?}");
}

// ---- 6. gzip bomb and a dripping page: bounded (held?) ----------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gzip_bomb_and_a_dripping_article_are_bounded() {
    use std::io::Write;
    let site = FeedServer::start_on(SocketAddr::from((PUBLIC, 0)))
        .await
        .expect("bind 127.0.0.2");
    let smtp = SmtpServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let t = now();
    // 1 GiB of spaces inside a <p>, gzipped to ~1 MiB.
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    gz.write_all(b"<html><body><article><p>").unwrap();
    let chunk = vec![b'a'; 1 << 20];
    for _ in 0..1024 {
        gz.write_all(&chunk).unwrap();
    }
    let bomb = gz.finish().unwrap();
    site.set(
        "/bomb",
        Route::status(200, bomb)
            .header("content-type", "text/html")
            .header("content-encoding", "gzip"),
    );
    site.set(
        "/drip",
        Route::status(200, "<html><body>".repeat(1000))
            .header("content-type", "text/html")
            .drip(std::time::Duration::from_millis(20)),
    );
    let published = (t - chrono::Duration::hours(1)).to_rfc2822();
    site.set(
        "/feed.xml",
        Route::feed(
            "application/rss+xml",
            format!(
                "<?xml version=\"1.0\"?><rss version=\"2.0\"><channel><title>D</title>\
                 <item><guid>b</guid><title>Bomb</title><link>{}</link><pubDate>{published}</pubDate></item>\
                 <item><guid>d</guid><title>Drip</title><link>{}</link><pubDate>{published}</pubDate></item>\
                 </channel></rss>",
                site.url("/bomb"),
                site.url("/drip")
            ),
        ),
    );
    let feeds = format!(
        "[[feeds]]\nid = \"daily\"\nurl = \"{}\"\nfull_text = true\n",
        site.url("/feed.xml")
    );
    let app = app(dir.path(), "", &feeds, smtp.port()).await;
    let started = std::time::Instant::now();
    poll_feeds(&app, t, false).await.unwrap();
    let read = fetch_articles(&app, t).await.unwrap();
    assert!(started.elapsed() < std::time::Duration::from_secs(30));
    // The bomb is given up (too large), the drip retried (timeout).
    assert_eq!((read.failed, read.retrying), (1, 1), "{read:?}");
}

// ---- 7. a new listing baseline (options changed) re-sends every entry as "Updated" -----

/// The admin adds a `title_selector` (the default title was only the link's text). The
/// README: "Changing a feed's kind or any of its options makes its next poll a baseline
/// again" — what the page holds now, read the new way, is not news. But the entries are
/// already stored under the same keys (the link did not change), their headline
/// fingerprint changes with the new title, and the store's edit path (which ignores the
/// baseline) sends each one again, marked *Updated*, to everyone who had it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_title_selector_does_not_resend_every_entry() {
    let site = FeedServer::start().await;
    let smtp = SmtpServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let html = "<html><body><ul>\
        <li class=\"n\"><h3><a href=\"/news/tps\">TPS for Haiti</a> extended to 2027</h3>\
        <time datetime=\"2026-12-01T09:00:00Z\">Dec 1</time></li>\
        <li class=\"n\"><h3><a href=\"/news/h1b\">H-1B</a> registration opens</h3>\
        <time datetime=\"2026-12-01T08:00:00Z\">Dec 1</time></li></ul></body></html>";
    site.set(
        "/news",
        Route::status(200, html).header("content-type", "text/html; charset=utf-8"),
    );
    let feed = |extra: &str| {
        format!(
            "[[feeds]]\nid = \"news\"\nurl = \"{}\"\nkind = \"html\"\nitem_selector = \"li.n\"\n{extra}\n",
            site.url("/news")
        )
    };
    let t = now();
    {
        let app = app(dir.path(), "", &feed(""), smtp.port()).await;
        subscribe(&app, "a@example.org", "TPS", "immediate", t).await;
        let first = poll_feeds(&app, t, false).await.unwrap();
        assert_eq!(first.matches, 1, "{first:?}");
        let sent = tidings::send_digests(&app, t, false).await.unwrap();
        assert_eq!(sent.delivery.sent, 1, "{sent:?}");
    }
    let app = app(
        dir.path(),
        "",
        &feed("title_selector = \"h3\""),
        smtp.port(),
    )
    .await;
    let t2 = t + chrono::Duration::hours(1);
    let again = poll_feeds(&app, t2, false).await.unwrap();
    let sent = tidings::send_digests(&app, t2, false).await.unwrap();
    assert_eq!(
        (again.matches, sent.delivery.sent),
        (0, 0),
        "a new baseline re-sent old entries: {again:?} {sent:?}"
    );
}
