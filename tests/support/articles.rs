//! Full text on loopback: 127.0.0.2 stands in for the public internet (the fetch policy
//! is told to treat it as public; article links may reach public addresses only), a
//! summary-only RSS of teasers, pages, and an app over a config with `[poll]` keys of the
//! test's choosing. Shared by the full-text tests and their attacks.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tidings::App;
use tidings::config::Config;
use tidings::fetch::{AddressPolicy, Fetcher};
use tidings::send_digests;
use tidings::store::FeedStatus;

use super::{FeedServer, Mail, Route, SmtpServer, decode};

/// Treated as a public address by the apps' fetch policy.
pub const PUBLIC: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);
const WAIT: Duration = Duration::from_secs(10);

pub async fn public_server() -> FeedServer {
    FeedServer::start_on(SocketAddr::from((PUBLIC, 0)))
        .await
        .expect("bind 127.0.0.2 (Linux answers on all of 127/8)")
}

/// One RSS item: guid, title, link and a one-line teaser, published an hour before `now`.
pub struct Teaser<'a> {
    pub guid: &'a str,
    pub title: &'a str,
    pub link: String,
    pub summary: &'a str,
}

pub fn rss(items: &[Teaser<'_>], now: DateTime<Utc>) -> Route {
    let published = (now - chrono::Duration::hours(1)).to_rfc2822();
    let mut xml = String::from(
        "<?xml version=\"1.0\"?><rss version=\"2.0\"><channel><title>Immigration Daily</title>",
    );
    for item in items {
        xml.push_str(&format!(
            "<item><guid>{}</guid><title>{}</title><link>{}</link>\
             <description>{} &lt;a href=\"{}\"&gt;Read more&lt;/a&gt;</description>\
             <pubDate>{published}</pubDate></item>",
            item.guid,
            item.title,
            item.link.replace('&', "&amp;"),
            item.summary,
            item.link.replace('&', "&amp;")
        ));
    }
    xml.push_str("</channel></rss>");
    Route::feed("application/rss+xml", xml)
}

pub fn page(body: impl Into<Vec<u8>>) -> Route {
    Route::status(200, body).header("content-type", "text/html; charset=utf-8")
}

/// A config polling `feeds` with `[poll]` keys `poll` (say `full_text = true`), mailing
/// through `smtp_port`; the app's fetcher treats 127.0.0.2 as public.
pub async fn app(dir: &std::path::Path, poll: &str, feeds: &str, smtp_port: u16) -> App {
    let text = format!(
        r#"
database = "data/tidings.db"
[poll]
initial_backlog = "24h"
timeout = "2s"
{poll}
[digest]
daily_at = "08:00"
timezone = "UTC"
[mail]
from = "Tidings <alerts@tidings.test>"
transport = "smtp"
send_timeout = "5s"
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
    let config = Config::load(&path).unwrap();
    let mut app = App::open(config).await.unwrap();
    let policy = AddressPolicy {
        treat_as_public: vec![IpAddr::V4(PUBLIC)],
        ..AddressPolicy::default()
    };
    app.fetcher = Fetcher::with_policy(&app.config.poll, policy).unwrap();
    app
}

pub fn feed_table(id: &str, url: &str, extra: &str) -> String {
    format!("\n[[feeds]]\nid = \"{id}\"\nname = \"{id} feed\"\nurl = \"{url}\"\n{extra}\n")
}

pub async fn status(app: &App, id: &str) -> FeedStatus {
    let all = app.store.feed_statuses().await.unwrap();
    all.into_iter().find(|s| s.id == id).unwrap()
}

pub async fn digest_mail(app: &App, smtp: &SmtpServer, now: DateTime<Utc>, n: usize) -> Vec<Mail> {
    let before = smtp.messages().len();
    let round = send_digests(app, now, false).await.unwrap();
    assert_eq!(round.delivery.sent, n, "{round:?}");
    smtp.wait_for(before + n, WAIT).await[before..]
        .iter()
        .map(decode)
        .collect()
}
