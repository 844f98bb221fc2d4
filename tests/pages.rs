//! Pages without feeds (issue 15), end to end on loopback: a newsroom listing page read
//! as a feed (`kind = "html"`), and a Visa-Bulletin-like page watched for changes
//! (`kind = "watch"`), each changing between polls. Real HTTP, real SMTP, a SQLite file.

mod support;

use std::time::Duration;

use chrono::{DateTime, Utc};
use support::{FeedServer, Mail, Route, SmtpServer, at, decode, subscribe};
use tidings::config::Config;
use tidings::{App, poll_feeds, send_digests};

const WAIT: Duration = Duration::from_secs(10);

fn page(body: String) -> Route {
    Route::status(200, body).header("content-type", "text/html; charset=utf-8")
}

async fn app(dir: &std::path::Path, feeds: &str, smtp_port: u16) -> App {
    let text = format!(
        r#"
database = "data/tidings.db"
[poll]
initial_backlog = "24h"
timeout = "5s"
[digest]
timezone = "UTC"
[mail]
from = "Tidings <alerts@tidings.test>"
transport = "smtp"
[mail.smtp]
host = "127.0.0.1"
port = {smtp_port}
tls = "none"
[service]
admin_listen = ""
[web]
listen = ""
{feeds}
"#
    );
    let path = dir.join("config.toml");
    std::fs::write(&path, text).unwrap();
    App::open(Config::load(&path).unwrap()).await.unwrap()
}

async fn digest_mail(app: &App, smtp: &SmtpServer, now: DateTime<Utc>) -> Vec<Mail> {
    let before = smtp.messages().len();
    let round = send_digests(app, now, false).await.unwrap();
    smtp.wait_for(before + round.delivery.sent, WAIT).await[before..]
        .iter()
        .map(decode)
        .collect()
}

/// A newsroom page: `entries` as (path, title, date) in a list, inside the site's usual
/// navigation and footer; `stamp` changes with every render, as real pages' do.
fn newsroom(entries: &[(&str, &str, Option<&str>)], stamp: &str) -> String {
    let mut items = String::new();
    for (path, title, date) in entries {
        let time = date.map_or(String::new(), |d| {
            format!("<time datetime=\"{d}\">{d}</time>")
        });
        items.push_str(&format!(
            "<li class=\"news-item\" data-impression=\"{stamp}\"><h3><a href=\"{path}?utm_campaign={stamp}\">{title}</a></h3>{time}\
             <p>{title}: read the announcement.</p></li>\n"
        ));
    }
    format!(
        "<html><head><title>USCIS Newsroom</title></head><body><nav><a href=\"/\">Home</a>\
         <a href=\"/tps\">TPS</a></nav><ul class=\"news\">{items}</ul>\
         <footer>Page generated {stamp}</footer></body></html>"
    )
}

/// Each entry of a listing page is an item, polled, matched and mailed like a feed's:
/// the first poll is a baseline (only recent entries can match); later polls bring exactly
/// the new entries, whatever else the page moved; a page the selector no longer fits is a
/// visible failure, not silence.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listing_page_brings_exactly_its_new_entries() {
    let site = FeedServer::start().await;
    let smtp = SmtpServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let now = at("2026-12-01T12:00:00Z");
    let recent = "2026-12-01T09:00:00Z";
    site.set(
        "/newsroom",
        page(newsroom(
            &[
                ("/news/tps-haiti", "TPS for Haiti extended", Some(recent)),
                ("/news/fees", "New fee schedule", Some(recent)),
                ("/news/old-tps", "TPS for Sudan (2025)", None),
            ],
            "a1",
        )),
    );
    let feeds = format!(
        "[[feeds]]\nid = \"uscis-newsroom\"\nname = \"USCIS Newsroom\"\nurl = \"{}\"\n\
         kind = \"html\"\nitem_selector = \"li.news-item\"\n",
        site.url("/newsroom")
    );
    let app = app(dir.path(), &feeds, smtp.port()).await;
    subscribe(&app, "tps@example.org", "TPS", "immediate", now).await;

    let first = poll_feeds(&app, now, false).await.unwrap();
    assert_eq!((first.new_items, first.matches), (3, 1), "{first:?}");
    let mail = digest_mail(&app, &smtp, now).await;
    assert_eq!(mail.len(), 1);
    assert!(
        mail[0].text.contains("TPS for Haiti extended"),
        "{}",
        mail[0].text
    );
    assert!(
        !mail[0].text.contains("Sudan"),
        "an undated entry of the baseline is old news"
    );
    assert!(
        mail[0].text.contains("/news/tps-haiti\n") || mail[0].text.contains("/news/tps-haiti\r"),
        "the link resolved, without tracking: {}",
        mail[0].text
    );

    // The page re-renders: entries reordered, tracking changed, one new entry on top.
    let later = now + chrono::Duration::hours(1);
    site.set(
        "/newsroom",
        page(newsroom(
            &[
                (
                    "/news/tps-venezuela",
                    "TPS for Venezuela redesignated",
                    None,
                ),
                ("/news/fees", "New fee schedule", Some(recent)),
                ("/news/tps-haiti", "TPS for Haiti extended", Some(recent)),
                ("/news/old-tps", "TPS for Sudan (2025)", None),
            ],
            "b2",
        )),
    );
    let second = poll_feeds(&app, later, false).await.unwrap();
    assert_eq!((second.new_items, second.matches), (1, 1), "{second:?}");
    let mail = digest_mail(&app, &smtp, later).await;
    assert_eq!(mail.len(), 1);
    assert!(
        mail[0].text.contains("TPS for Venezuela redesignated"),
        "{}",
        mail[0].text
    );
    assert!(
        !mail[0].text.contains("Haiti"),
        "sent once: {}",
        mail[0].text
    );

    // A redesign: the selector fits nothing. The feed fails, visibly.
    site.set(
        "/newsroom",
        page("<html><body><div class=\"card\">TPS news</div></body></html>".into()),
    );
    let third = poll_feeds(&app, later + chrono::Duration::hours(1), false)
        .await
        .unwrap();
    assert_eq!(third.failed, 1);
    let status = app.store.feed_statuses().await.unwrap();
    assert_eq!(status[0].last_error_kind.as_deref(), Some("page"));
    assert!(
        status[0]
            .last_error
            .as_deref()
            .unwrap_or_default()
            .contains("item_selector \"li.news-item\" selects nothing"),
        "{:?}",
        status[0].last_error
    );
}

fn bulletin(eb2_india: &str, footer: &str, spacing: &str) -> String {
    format!(
        "<html><head><title>Visa Bulletin for January 2027</title></head><body>\
         <div class=\"promo\" data-click=\"{footer}\">Sign up for updates</div>\
         <table id=\"final-action\">\
         <tr><th>Category</th><th>China</th><th>India</th></tr>\
         <tr><td>EB-2</td><td>01JAN21</td><td>{spacing}{eb2_india}{spacing}</td></tr>\
         <tr><td>EB-3</td><td>01MAR21</td><td>15NOV13</td></tr>\
         </table><footer>Last updated {footer}</footer></body></html>"
    )
}

/// A watched page: the first poll remembers it; whitespace, attributes and text outside
/// the selector never alert; a real change alerts once, its text the change.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watched_page_alerts_once_per_real_change_and_never_for_cosmetics() {
    let site = FeedServer::start().await;
    let smtp = SmtpServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let now = at("2026-12-01T12:00:00Z");
    site.set("/bulletin", page(bulletin("15DEC22", "Dec 1 10:00", "")));
    let feeds = format!(
        "[[feeds]]\nid = \"visa-bulletin\"\nname = \"Visa Bulletin\"\nurl = \"{}\"\n\
         kind = \"watch\"\nselector = \"#final-action\"\ninterval = \"1h\"\n",
        site.url("/bulletin")
    );
    let app = app(dir.path(), &feeds, smtp.port()).await;
    // Matched on the change (and its line's words), not the whole page.
    subscribe(&app, "eb2@example.org", "\"EB-2\"", "immediate", now).await;
    subscribe(&app, "eb3@example.org", "\"EB-3\"", "immediate", now).await;

    let first = poll_feeds(&app, now, false).await.unwrap();
    assert_eq!(
        (first.updated, first.new_items),
        (1, 0),
        "remembered: {first:?}"
    );

    let mut t = now;
    for (footer, spacing) in [
        ("Dec 1 11:00", ""),
        ("Dec 1 12:00", "\n   "),
        ("Dec 2 08:00", " "),
    ] {
        t += chrono::Duration::hours(1);
        site.set("/bulletin", page(bulletin("15DEC22", footer, spacing)));
        let cosmetic = poll_feeds(&app, t, false).await.unwrap();
        assert_eq!(
            cosmetic.new_items, 0,
            "{footer:?}/{spacing:?}: {cosmetic:?}"
        );
    }

    t += chrono::Duration::hours(1);
    site.set("/bulletin", page(bulletin("01FEB23", "Jan 10 09:00", "")));
    let changed = poll_feeds(&app, t, false).await.unwrap();
    assert_eq!((changed.new_items, changed.matches), (1, 1), "{changed:?}");
    let mail = digest_mail(&app, &smtp, t).await;
    assert_eq!(mail.len(), 1);
    assert!(
        mail[0]
            .text
            .contains("Visa Bulletin for January 2027 — page changed"),
        "{}",
        mail[0].text
    );
    assert!(
        mail[0].text.contains("15DEC22 → 01FEB23"),
        "{}",
        mail[0].text
    );

    // Polled again, unchanged: nothing. Changed back: that is news too, once.
    t += chrono::Duration::hours(1);
    assert_eq!(poll_feeds(&app, t, false).await.unwrap().new_items, 0);
    t += chrono::Duration::hours(1);
    site.set("/bulletin", page(bulletin("15DEC22", "Jan 11 09:00", "")));
    let reverted = poll_feeds(&app, t, false).await.unwrap();
    assert_eq!(reverted.new_items, 1, "{reverted:?}");
    let mail = digest_mail(&app, &smtp, t).await;
    assert!(
        mail[0].text.contains("01FEB23 → 15DEC22"),
        "{}",
        mail[0].text
    );
}

/// An error page served with 200 that the selector still fits is not a change (a visible
/// failure, nothing mailed, nothing when the page comes back); if it stays, it is the
/// page now, and that is one alert.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_maintenance_page_is_not_news_unless_it_stays() {
    let site = FeedServer::start().await;
    let smtp = SmtpServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let now = at("2026-12-01T12:00:00Z");
    let full = bulletin("15DEC22", "Dec 1", "").replace(
        "</table>",
        "<tr><td>EB-4</td><td>01SEP20</td><td>01SEP20</td></tr>\
         <tr><td>EB-5 Unreserved</td><td>C</td><td>01DEC19</td></tr>\
         <tr><td>Other Workers</td><td>01JAN17</td><td>01JAN13</td></tr>\
         <tr><td>Certain Religious Workers</td><td>01SEP20</td><td>01SEP20</td></tr>\
         <tr><td>Targeted Employment Areas</td><td>C</td><td>C</td></tr></table>",
    );
    let down = "<html><head><title>Visa Bulletin</title></head><body><table id=\"final-action\">\
                <tr><td>Down for maintenance, back soon</td></tr></table></body></html>";
    site.set("/bulletin", page(full.clone()));
    let feeds = format!(
        "[[feeds]]\nid = \"visa-bulletin\"\nurl = \"{}\"\nkind = \"watch\"\nselector = \"#final-action\"\n",
        site.url("/bulletin")
    );
    let app = app(dir.path(), &feeds, smtp.port()).await;
    subscribe(
        &app,
        "all@example.org",
        "maintenance OR \"EB-2\"",
        "immediate",
        now,
    )
    .await;
    poll_feeds(&app, now, false).await.unwrap();

    // Down once: a failure, then back: nothing to say.
    site.set("/bulletin", page(down.to_string()));
    let mut t = now + chrono::Duration::hours(1);
    let failed = poll_feeds(&app, t, false).await.unwrap();
    assert_eq!((failed.failed, failed.new_items), (1, 0), "{failed:?}");
    let status = app.store.feed_statuses().await.unwrap();
    assert_eq!(status[0].last_error_kind.as_deref(), Some("page"));
    site.set("/bulletin", page(full.clone()));
    t += chrono::Duration::hours(1);
    let back = poll_feeds(&app, t, false).await.unwrap();
    assert_eq!((back.failed, back.new_items), (0, 0), "{back:?}");
    assert!(digest_mail(&app, &smtp, t).await.is_empty());

    // Down and staying down: after three failed polls, it is the page now.
    site.set("/bulletin", page(down.to_string()));
    let mut new_items = Vec::new();
    for _ in 0..4 {
        t += chrono::Duration::hours(1);
        new_items.push(poll_feeds(&app, t, false).await.unwrap().new_items);
    }
    assert_eq!(new_items, [0, 0, 0, 1]);
    let mail = digest_mail(&app, &smtp, t).await;
    assert_eq!(mail.len(), 1);
    assert!(
        mail[0].text.contains("Down for *maintenance*, back soon"),
        "{}",
        mail[0].text
    );
}
