//! The fetch guard end to end, on loopback only: 127.0.0.2 stands in for the public
//! internet (the policy is told to treat it as public) and 127.0.0.1 for the private
//! network a hostile feed wants to reach. Names resolve through the policy's host table,
//! never DNS. No request ever leaves loopback. The address classes themselves (metadata,
//! CGNAT, IPv4-mapped IPv6…) are unit-tested in `fetch`, without connections.

mod support;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use support::{FeedServer, Route};
use tidings::fetch::{AddressPolicy, FetchError, FetchOutcome, Fetcher, Origin, Validators};
use tidings::store::FeedStatus;
use tidings::store::PollStatus;
use tidings::{App, poll_feeds};

/// Treated as a public address by the policy under test.
const PUBLIC: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);

/// An RSS feed with one item, published an hour ago, titled `title`.
fn rss(title: &str) -> Route {
    let published = (chrono::Utc::now() - chrono::Duration::hours(1)).to_rfc2822();
    Route::feed(
        "application/rss+xml",
        format!(
            "<?xml version=\"1.0\"?><rss version=\"2.0\"><channel><title>{title}</title>\
             <item><guid>{title}</guid><title>{title}</title><pubDate>{published}</pubDate>\
             </item></channel></rss>"
        ),
    )
}

fn redirect(code: u16, to: &str) -> Route {
    Route::status(code, "").header("location", to)
}

/// A server on the "public" address 127.0.0.2.
async fn public_server() -> FeedServer {
    FeedServer::start_on(SocketAddr::from((PUBLIC, 0)))
        .await
        .expect("bind 127.0.0.2 (Linux answers on all of 127/8)")
}

/// The policy of a default config, with 127.0.0.2 public and `hosts` as its DNS.
fn policy(hosts: &[(&str, Ipv4Addr)]) -> AddressPolicy {
    AddressPolicy {
        treat_as_public: vec![IpAddr::V4(PUBLIC)],
        hosts: hosts
            .iter()
            .map(|(name, ip)| (name.to_string(), vec![IpAddr::V4(*ip)]))
            .collect(),
        ..AddressPolicy::default()
    }
}

async fn open(config: tidings::config::Config, policy: AddressPolicy) -> App {
    let mut app = App::open(config).await.unwrap();
    app.fetcher = Fetcher::with_policy(&app.config.poll, policy).unwrap();
    app
}

async fn status(app: &App, id: &str) -> FeedStatus {
    app.store
        .feed_statuses()
        .await
        .unwrap()
        .into_iter()
        .find(|s| s.id == id)
        .unwrap()
}

async fn assert_refused(app: &App, id: &str, words: &str) {
    let s = status(app, id).await;
    assert_eq!(s.last_error_kind.as_deref(), Some("fetch-policy"), "{s:?}");
    let error = s.last_error.as_deref().unwrap_or_default();
    assert!(error.contains(words), "{id}: {error:?} lacks {words:?}");
    assert_eq!(s.items, 0, "{id}: nothing stored");
}

async fn stored_titles(app: &App) -> Vec<String> {
    let since = chrono::Utc::now() - chrono::Duration::days(7);
    let mut titles: Vec<String> = app
        .store
        .items_since(since)
        .await
        .unwrap()
        .into_iter()
        .map(|i| i.title)
        .collect();
    titles.sort();
    titles
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirects_from_a_public_feed_into_the_private_network_are_refused() {
    let outside = public_server().await;
    let inside = FeedServer::start().await;
    inside.set("/secret.xml", rss("Asylum memo (internal)"));
    inside.set("/metrics", Route::status(200, "tidings_feeds_total 3\n"));
    inside.set("/inside.xml", rss("Asylum news from inside"));
    outside.set("/news.xml", rss("Asylum news from outside"));
    outside.set("/found.xml", redirect(302, &inside.url("/secret.xml")));
    outside.set("/moved.xml", redirect(301, &inside.url("/metrics")));
    // Two hops: the first stays outside, the second goes in.
    outside.set("/hop.xml", redirect(307, "/hop-2"));
    outside.set("/hop-2", redirect(302, &inside.url("/secret.xml")));
    let by_name = format!("http://intranet.test:{}/secret.xml", inside.addr().port());
    outside.set("/to-name.xml", redirect(302, &by_name));

    let dir = tempfile::tempdir().unwrap();
    let config = support::write_config(
        dir.path(),
        &[
            ("news", outside.url("/news.xml")),
            ("found", outside.url("/found.xml")),
            ("moved", outside.url("/moved.xml")),
            ("hop", outside.url("/hop.xml")),
            ("to-name", outside.url("/to-name.xml")),
            // The admin configured this one on the private network: allowed.
            ("inside", inside.url("/inside.xml")),
        ],
        25,
    );
    let app = open(config, policy(&[("intranet.test", Ipv4Addr::LOCALHOST)])).await;
    let now = chrono::Utc::now();
    support::subscribe(&app, "ana@example.org", "asylum", "immediate", now).await;

    let poll = poll_feeds(&app, now, false).await.unwrap();
    assert_eq!((poll.updated, poll.failed), (2, 4), "{poll:?}");
    for id in ["found", "moved", "hop", "to-name"] {
        assert_refused(&app, id, "a redirect from a public address").await;
    }
    assert_refused(
        &app,
        "to-name",
        "intranet.test resolves to a loopback address",
    )
    .await;
    assert_refused(&app, "moved", "127.0.0.1 is a loopback address").await;
    assert_eq!(
        (inside.hits("/secret.xml"), inside.hits("/metrics")),
        (0, 0),
        "no request reached the private network"
    );
    assert_eq!(
        status(&app, "moved").await.moved_to,
        None,
        "no move suggested"
    );
    assert_eq!(
        stored_titles(&app).await,
        ["Asylum news from inside", "Asylum news from outside"]
    );
    for id in ["news", "inside"] {
        assert_eq!(
            status(&app, id).await.last_status,
            Some(PollStatus::Ok),
            "{id}"
        );
    }
}

/// A name is checked on the address it resolves to when the connection is made, so one
/// that resolved outside on one poll and inside on the next (DNS rebinding) is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_that_comes_to_resolve_inside_is_refused_unless_private_networks_are_allowed() {
    // The same port on both addresses, so only the name's resolution differs.
    let (outside, inside) = loop {
        let outside = public_server().await;
        let same_port = SocketAddr::from((Ipv4Addr::LOCALHOST, outside.addr().port()));
        if let Some(inside) = FeedServer::start_on(same_port).await {
            break (outside, inside);
        }
    };
    outside.set("/feed.xml", rss("Asylum news from outside"));
    inside.set("/feed.xml", rss("Asylum memo (internal)"));
    let url = format!("http://news.test:{}/feed.xml", outside.addr().port());
    let dir = tempfile::tempdir().unwrap();
    let config = support::write_config(dir.path(), &[("news", url)], 25);

    let mut app = open(config.clone(), policy(&[("news.test", PUBLIC)])).await;
    let mut now = chrono::Utc::now();
    let poll = poll_feeds(&app, now, false).await.unwrap();
    assert_eq!(poll.updated, 1, "{poll:?}");
    assert_eq!(outside.hits("/feed.xml"), 1);

    // The name now points inside.
    app.fetcher = Fetcher::with_policy(
        &app.config.poll,
        policy(&[("news.test", Ipv4Addr::LOCALHOST)]),
    )
    .unwrap();
    now += chrono::Duration::hours(1);
    let poll = poll_feeds(&app, now, false).await.unwrap();
    assert_eq!(poll.failed, 1, "{poll:?}");
    let s = status(&app, "news").await;
    assert_eq!(s.last_error_kind.as_deref(), Some("fetch-policy"), "{s:?}");
    let error = s.last_error.unwrap_or_default();
    assert!(
        error.contains("news.test resolves to a loopback address")
            && error.contains("allow_private_networks"),
        "{error}"
    );
    assert_eq!(inside.hits("/feed.xml"), 0, "never connected inside");
    assert_eq!(stored_titles(&app).await, ["Asylum news from outside"]);

    // An admin who allows private networks may poll feeds there by name.
    let mut open_policy = policy(&[("news.test", Ipv4Addr::LOCALHOST)]);
    open_policy.allow_private_networks = true;
    app.fetcher = Fetcher::with_policy(&app.config.poll, open_policy).unwrap();
    now += chrono::Duration::hours(1);
    let poll = poll_feeds(&app, now, false).await.unwrap();
    assert_eq!(poll.updated, 1, "{poll:?}");
    assert_eq!(inside.hits("/feed.xml"), 1);
}

/// The switch lets configured names reach private networks, but a public server still
/// cannot redirect into them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_private_networks_allowed_a_public_server_still_cannot_redirect_inside() {
    let outside = public_server().await;
    let inside = FeedServer::start().await;
    inside.set("/secret.xml", rss("Asylum memo (internal)"));
    outside.set("/found.xml", redirect(302, &inside.url("/secret.xml")));
    let fetcher = Fetcher::with_policy(
        &support_poll_settings(),
        AddressPolicy {
            allow_private_networks: true,
            ..policy(&[])
        },
    )
    .unwrap();
    let url = url::Url::parse(&outside.url("/found.xml")).unwrap();
    let err = fetcher
        .fetch_feed(&url, &Validators::default())
        .await
        .unwrap_err();
    assert!(matches!(err, FetchError::Refused(_)), "{err:?}");
    assert_eq!(inside.hits("/secret.xml"), 0);
}

/// Links found in feeds (article pages, say) go through the same guard, as found links:
/// public addresses only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn links_found_in_feeds_may_only_lead_to_public_addresses() {
    let outside = public_server().await;
    let inside = FeedServer::start().await;
    outside.set("/article", Route::status(200, "an article"));
    inside.set("/admin", Route::status(200, "the admin page"));
    let fetcher = Fetcher::with_policy(&support_poll_settings(), policy(&[])).unwrap();
    let get = |url: String, origin| {
        let fetcher = fetcher.clone();
        async move {
            let url = url::Url::parse(&url).unwrap();
            fetcher.fetch(&url, &Validators::default(), origin).await
        }
    };

    let err = get(inside.url("/admin"), Origin::Found).await.unwrap_err();
    assert_eq!(err.kind(), "fetch-policy", "{err}");
    assert!(err.to_string().contains("a link found in a feed"), "{err}");
    assert_eq!(inside.hits("/admin"), 0);
    assert!(matches!(
        get(outside.url("/article"), Origin::Found).await,
        Ok(FetchOutcome::Fetched(_))
    ));
    assert!(
        matches!(
            get(inside.url("/admin"), Origin::Configured).await,
            Ok(FetchOutcome::Fetched(_))
        ),
        "a URL the admin wrote may name a loopback address"
    );
}

/// The public sign-up preview shows what was stored: nothing from a private network,
/// and no error text about it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_public_preview_shows_nothing_from_inside_and_no_error_details() {
    let outside = public_server().await;
    let inside = FeedServer::start().await;
    inside.set("/secret.xml", rss("Asylum memo from the intranet"));
    outside.set("/news.xml", rss("Asylum news from outside"));
    outside.set("/found.xml", redirect(302, &inside.url("/secret.xml")));
    let dir = tempfile::tempdir().unwrap();
    let config = support::write_config(
        dir.path(),
        &[
            ("news", outside.url("/news.xml")),
            ("found", outside.url("/found.xml")),
        ],
        25,
    );
    let app = open(config, policy(&[])).await;
    let now = chrono::Utc::now();
    poll_feeds(&app, now, false).await.unwrap();

    let (tx, rx) = tokio::sync::watch::channel(app.clone());
    let stop = tokio_util::sync::CancellationToken::new();
    let _stop = stop.clone().drop_guard();
    let addr = tidings::web::serve("127.0.0.1:0".parse().unwrap(), rx, stop)
        .await
        .unwrap();
    let csrf = app.links.form_token(chrono::Utc::now().timestamp());
    let page = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
        .post(format!("http://{addr}/subscribe"))
        .form(&[
            ("csrf", csrf.as_str()),
            ("email", ""),
            ("queries", "asylum"),
            ("frequency", "daily"),
            ("tz", "UTC"),
            ("action", "preview"),
        ])
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    drop(tx);
    assert!(page.contains("<code>asylum</code>: 1 story"), "{page}");
    assert!(page.contains("Asylum news from outside"), "{page}");
    for secret in ["intranet", "127.0.0.1", "policy", "refused", "loopback"] {
        assert!(
            !page.contains(secret),
            "the preview shows {secret:?}: {page}"
        );
    }
}

/// Poll settings of a config with defaults (timeouts, user agent…).
fn support_poll_settings() -> tidings::config::PollSettings {
    tidings::config::Config::parse("", std::path::Path::new("/tmp/config.toml"))
        .unwrap()
        .poll
}
