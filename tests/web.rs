//! The subscriber pages over real HTTP: the one-click unsubscribe link (RFC 8058), the
//! manage page and its forms, and what every response carries for safety.

mod support;

use std::time::Duration;

use reqwest::StatusCode;
use reqwest::redirect::Policy;
use tidings::App;

struct Site {
    app: App,
    base: String,
    client: reqwest::Client,
    _dir: tempfile::TempDir,
    _stop: tokio_util::sync::DropGuard,
}

impl Site {
    async fn start() -> Site {
        Site::start_with_admin(None).await
    }

    /// A site whose admin page has this password (as `TIDINGS_ADMIN_TOKEN` would set).
    async fn start_with_admin(admin: Option<&str>) -> Site {
        Site::start_full(admin, 25).await
    }

    /// A site mailing through the SMTP server on `smtp_port`.
    async fn start_full(admin: Option<&str>, smtp_port: u16) -> Site {
        let dir = tempfile::tempdir().unwrap();
        let config = support::write_config(dir.path(), &[], smtp_port);
        let mut app = App::open(config).await.unwrap();
        app.admin_token = admin.map(std::sync::Arc::from);
        let now = chrono::Utc::now();
        support::subscribe(&app, "ana@example.org", "asylum", "daily", now).await;
        support::subscribe(&app, "ana@example.org", "\"H-1B\"", "daily", now).await;
        support::subscribe(&app, "ben@example.org", "TPS", "immediate", now).await;
        let (_tx, rx) = tokio::sync::watch::channel(app.clone());
        std::mem::forget(_tx);
        let stop = tokio_util::sync::CancellationToken::new();
        let addr = tidings::web::serve("127.0.0.1:0".parse().unwrap(), rx, stop.clone())
            .await
            .unwrap();
        let client = reqwest::Client::builder()
            .redirect(Policy::none())
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap();
        Site {
            app,
            base: format!("http://{addr}"),
            client,
            _dir: dir,
            _stop: stop.drop_guard(),
        }
    }

    async fn subscriber(&self, email: &str) -> Option<tidings::store::Subscriber> {
        self.app.store.subscriber(email).await.unwrap()
    }

    /// A page's path from one of the app's links (they carry `[web].base_url`).
    fn path(url: &str) -> String {
        url::Url::parse(url).unwrap().path().to_string()
    }

    async fn unsubscribe_path(&self, email: &str) -> String {
        let s = self.subscriber(email).await.unwrap();
        Site::path(&self.app.links.unsubscribe_url(s.id, &s.email))
    }

    async fn manage_path(&self, email: &str) -> String {
        let s = self.subscriber(email).await.unwrap();
        Site::path(&self.app.links.manage_url(s.id, &s.email))
    }

    async fn csrf(&self, email: &str) -> String {
        let s = self.subscriber(email).await.unwrap();
        self.app.links.csrf_token(s.id, &s.email)
    }

    async fn get(&self, path: &str) -> (StatusCode, reqwest::header::HeaderMap, String) {
        let r = self
            .client
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap();
        (r.status(), r.headers().clone(), r.text().await.unwrap())
    }

    /// The admin page, with its password (any user name goes).
    async fn admin_page(&self, password: &str) -> String {
        let response = self
            .client
            .get(format!("{}/admin", self.base))
            .basic_auth("anyone", Some(password))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        response.text().await.unwrap()
    }

    async fn post(&self, path: &str, form: &[(&str, &str)]) -> (StatusCode, String, String) {
        let r = self
            .client
            .post(format!("{}{path}", self.base))
            .form(form)
            .send()
            .await
            .unwrap();
        let location = r
            .headers()
            .get("location")
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default();
        (r.status(), location, r.text().await.unwrap())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_click_unsubscribe_is_a_post_without_cookies_or_redirects_and_is_idempotent() {
    let site = Site::start().await;
    let path = site.unsubscribe_path("ana@example.org").await;

    // Following the link (as mail scanners do) only shows a page with a button.
    let (status, headers, page) = site.get(&path).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        page.contains("ana@example.org") && page.contains("2 saved"),
        "{page}"
    );
    assert!(page.contains(&format!("action=\"{path}\"")), "{page}");
    assert!(headers.get("set-cookie").is_none());
    assert!(
        site.subscriber("ana@example.org").await.is_some(),
        "GET changes nothing"
    );

    // What Gmail sends: a form POST with List-Unsubscribe=One-Click and nothing else.
    let response = site
        .client
        .post(format!("{}{path}", site.base))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("List-Unsubscribe=One-Click")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK, "no redirect");
    assert!(response.headers().get("set-cookie").is_none());
    assert!(
        response
            .text()
            .await
            .unwrap()
            .contains("You are unsubscribed")
    );
    assert!(
        site.subscriber("ana@example.org").await.is_none(),
        "gone at once"
    );
    assert!(
        site.subscriber("ben@example.org").await.is_some(),
        "others stay"
    );

    // Again, as multipart (RFC 8058 allows both): the same answer, nothing else changes.
    let again = site
        .client
        .post(format!("{}{path}", site.base))
        .multipart(reqwest::multipart::Form::new().text("List-Unsubscribe", "One-Click"))
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), StatusCode::OK);
    assert!(again.text().await.unwrap().contains("You are unsubscribed"));
    let (status, _, page) = site.get(&path).await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains("You are unsubscribed"), "{page}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_moved_or_misused_tokens_get_a_clear_page_and_change_nothing() {
    let site = Site::start().await;
    let ana = site.subscriber("ana@example.org").await.unwrap();
    let ben = site.subscriber("ben@example.org").await.unwrap();
    let good = site.app.links.unsubscribe_token(ana.id, &ana.email);
    let (_, mac) = good.split_once('.').unwrap();
    let forged_mac = format!("{}.{}", ana.id, "0".repeat(mac.len()));
    let moved = format!("{}.{mac}", ben.id);
    let manage_token = Site::path(&site.app.links.manage_url(ana.id, &ana.email))
        .rsplit('/')
        .next()
        .unwrap()
        .to_string();
    for (name, path) in [
        ("forged MAC", format!("/unsubscribe/{forged_mac}")),
        ("ana's MAC on ben's id", format!("/unsubscribe/{moved}")),
        ("no MAC", format!("/unsubscribe/{}", ana.id)),
        ("garbage", "/unsubscribe/%3Cscript%3E".to_string()),
        (
            "manage token to unsubscribe",
            format!("/unsubscribe/{manage_token}"),
        ),
        ("unsubscribe token to manage", format!("/manage/{good}")),
    ] {
        if path.starts_with("/unsubscribe/") {
            let (status, _, page) = site.post(&path, &[("List-Unsubscribe", "One-Click")]).await;
            assert_eq!(status, StatusCode::NOT_FOUND, "{name}");
            assert!(page.contains("This link does not work"), "{name}: {page}");
        }
        let (status, _, page) = site.get(&path).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{name} (GET)");
        assert!(page.contains("This link does not work"), "{name}: {page}");
        assert!(
            !page.contains("<script>"),
            "{name}: input is never echoed raw"
        );
    }
    assert!(site.subscriber("ana@example.org").await.is_some());
    assert!(site.subscriber("ben@example.org").await.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_manage_page_sets_what_a_subscriber_hears_of_stories_they_got() {
    use tidings::store::NewOutlets;
    let site = Site::start().await;
    let manage = site.manage_path("ana@example.org").await;
    let csrf = site.csrf("ana@example.org").await;
    let (_, _, page) = site.get(&manage).await;
    assert!(
        page.contains(r#"<input type="radio" name="new_outlets" value="next" checked>"#),
        "the default is chosen: {page}"
    );
    let outlets = format!("{manage}/outlets");
    let (status, _, _) = site.post(&outlets, &[("new_outlets", "never")]).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "without the form's value");
    let (status, _, page) = site
        .post(&outlets, &[("new_outlets", "often"), ("csrf", &csrf)])
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{page}");
    assert!(page.contains("Choose one of the options"), "{page}");
    let (status, location, _) = site
        .post(&outlets, &[("new_outlets", "never"), ("csrf", &csrf)])
        .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(location, format!("{manage}?done=outlets"));
    let ana = site.subscriber("ana@example.org").await.unwrap();
    assert_eq!(ana.new_outlets, NewOutlets::Never);
    let ben = site.subscriber("ben@example.org").await.unwrap();
    assert_eq!(ben.new_outlets, NewOutlets::Next, "only ana's changed");
    let (_, _, page) = site.get(&location).await;
    assert!(page.contains("Saved what you hear"), "{page}");
    assert!(
        page.contains(r#"<input type="radio" name="new_outlets" value="never" checked>"#),
        "{page}"
    );
}

/// A subscriber turns crossing languages on and off for one search of theirs, never
/// for another subscriber's, and never without the page's anti-forgery value.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_manage_page_turns_crossing_languages_on_and_off_per_search() {
    let site = Site::start().await;
    let manage = site.manage_path("ana@example.org").await;
    let csrf = site.csrf("ana@example.org").await;
    let ana = site.subscriber("ana@example.org").await.unwrap();
    let searches = site.app.store.subscriptions_of(ana.id).await.unwrap();
    let asylum = searches.iter().find(|(_, q)| q == "asylum").unwrap().0;
    let ben = site.subscriber("ben@example.org").await.unwrap();
    let ben_sub = site.app.store.subscriptions_of(ben.id).await.unwrap()[0].0;
    let crossing = async |id| {
        site.app
            .store
            .searches_crossing_languages(id)
            .await
            .unwrap()
    };
    let (_, _, page) = site.get(&manage).await;
    assert_eq!(
        page.matches(">Also in other languages</button>").count(),
        2,
        "{page}"
    );

    let languages = format!("{manage}/languages");
    let on = |id: tidings::store::SubscriptionId| {
        [("subscription", id.to_string()), ("cross", "1".into())]
    };
    let (status, _, _) = site
        .post(
            &languages,
            &[("subscription", &asylum.to_string()), ("cross", "1")],
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "without the form's value");
    assert!(crossing(ana.id).await.is_empty());

    let [(k1, v1), (k2, v2)] = on(asylum);
    let (status, location, _) = site
        .post(&languages, &[(k1, &v1), (k2, &v2), ("csrf", &csrf)])
        .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(location, format!("{manage}?done=crossing"));
    assert_eq!(crossing(ana.id).await, [asylum]);
    let (_, _, page) = site.get(&location).await;
    assert!(
        page.contains("now also finds its words in other languages"),
        "{page}"
    );
    assert_eq!(
        page.matches(">Only as written</button>").count(),
        1,
        "{page}"
    );

    // Ben's search through ana's page: nothing changes, and the page says so.
    let [(k1, v1), (k2, v2)] = on(ben_sub);
    let (_, location, _) = site
        .post(&languages, &[(k1, &v1), (k2, &v2), ("csrf", &csrf)])
        .await;
    assert_eq!(location, format!("{manage}?done=unchanged"));
    assert!(crossing(ben.id).await.is_empty());

    let (_, location, _) = site
        .post(
            &languages,
            &[
                ("subscription", &asylum.to_string()),
                ("cross", "0"),
                ("csrf", &csrf),
            ],
        )
        .await;
    assert_eq!(location, format!("{manage}?done=not-crossing"));
    assert!(crossing(ana.id).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_manage_page_adds_removes_and_reschedules_only_with_its_csrf_value() {
    let site = Site::start().await;
    let manage = site.manage_path("ana@example.org").await;
    let csrf = site.csrf("ana@example.org").await;
    let (status, _, page) = site.get(&manage).await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains("<code>asylum</code>"), "{page}");
    assert!(page.contains("<code>&quot;H-1B&quot;</code>"), "{page}");
    assert!(page.contains(&format!("value=\"{csrf}\"")), "{page}");

    // Add: without the form's value, refused; with it, added and back to the page.
    let add = format!("{manage}/add");
    let (status, _, page) = site.post(&add, &[("query", "TPS")]).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{page}");
    let (status, _, _) = site
        .post(
            &add,
            &[
                ("query", "TPS"),
                ("csrf", &site.csrf("ben@example.org").await),
            ],
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "another subscriber's value");
    assert_eq!(
        site.subscriber("ana@example.org")
            .await
            .unwrap()
            .queries
            .len(),
        2
    );
    let (status, location, _) = site
        .post(&add, &[("query", "  TPS -Haiti "), ("csrf", &csrf)])
        .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(location, format!("{manage}?done=added"));
    assert_eq!(
        site.subscriber("ana@example.org").await.unwrap().queries,
        ["asylum", "\"H-1B\"", "TPS -Haiti"]
    );
    let (_, _, page) = site.get(&location).await;
    assert!(page.contains("Search added"), "{page}");

    // A search that does not parse: the page says where, keeps what was typed.
    let (status, _, page) = site
        .post(&add, &[("query", "(asylum OR"), ("csrf", &csrf)])
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        page.contains("That search does not work") && page.contains("column"),
        "{page}"
    );
    assert!(page.contains("value=\"(asylum OR\""), "{page}");
    // Hostile text comes back escaped.
    let (status, _, page) = site
        .post(
            &add,
            &[("query", "\"<script>alert(1)</script>\""), ("csrf", &csrf)],
        )
        .await;
    assert_eq!(status, StatusCode::SEE_OTHER, "{page}");
    let (_, _, page) = site.get(&manage).await;
    assert!(!page.contains("<script>"), "{page}");
    assert!(
        page.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
        "{page}"
    );

    // Remove: ben's subscription id through ana's page removes nothing.
    let ben = site.subscriber("ben@example.org").await.unwrap();
    let ben_sub = site.app.store.subscriptions_of(ben.id).await.unwrap()[0].0;
    let remove = format!("{manage}/remove");
    let (status, location, _) = site
        .post(
            &remove,
            &[("subscription", &ben_sub.to_string()), ("csrf", &csrf)],
        )
        .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(
        site.subscriber("ben@example.org").await.unwrap().queries,
        ["TPS"]
    );
    // ...and says so, rather than a false "Search removed".
    let (_, _, page) = site.get(&location).await;
    assert!(!page.contains("Search removed"), "{page}");
    assert!(page.contains("Nothing changed"), "{page}");
    let (status, location, _) = site
        .post(
            &format!("{manage}/pause"),
            &[
                ("subscription", &ben_sub.to_string()),
                ("paused", "1"),
                ("csrf", &csrf),
            ],
        )
        .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let (_, _, page) = site.get(&location).await;
    assert!(!page.contains("Search paused"), "{page}");
    assert!(page.contains("Nothing changed"), "{page}");
    let ben = site.subscriber("ben@example.org").await.unwrap();
    assert!(
        !site.app.store.subscription_states(ben.id).await.unwrap()[0].2,
        "ben's search is not paused"
    );
    let ana = site.subscriber("ana@example.org").await.unwrap();
    let first = site.app.store.subscriptions_of(ana.id).await.unwrap()[0].0;
    site.post(
        &remove,
        &[("subscription", &first.to_string()), ("csrf", &csrf)],
    )
    .await;
    assert_eq!(
        site.subscriber("ana@example.org").await.unwrap().queries[0],
        "\"H-1B\""
    );

    // Schedule and zone; bad ones say what to write.
    let schedule = format!("{manage}/schedule");
    let (status, _, _) = site
        .post(
            &schedule,
            &[
                ("frequency", "weekly fri 17:00"),
                ("tz", "Europe/London"),
                ("csrf", &csrf),
            ],
        )
        .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let ana = site.subscriber("ana@example.org").await.unwrap();
    assert_eq!(
        (ana.schedule.spec(), ana.timezone.name()),
        ("weekly fri 17:00".to_string(), "Europe/London")
    );
    let next = ana
        .next_digest_at
        .unwrap()
        .with_timezone(&chrono_tz::Europe::London);
    assert_eq!(next.format("%a %H:%M").to_string(), "Fri 17:00");
    let (status, _, page) = site
        .post(
            &schedule,
            &[
                ("frequency", "weekly"),
                ("tz", "Mars/Olympus"),
                ("csrf", &csrf),
            ],
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(page.contains("Unknown time zone"), "{page}");
    let (status, _, page) = site
        .post(
            &schedule,
            &[("frequency", "fortnightly"), ("tz", "UTC"), ("csrf", &csrf)],
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{page}");
    assert_eq!(
        site.subscriber("ana@example.org")
            .await
            .unwrap()
            .timezone
            .name(),
        "Europe/London",
        "a bad form changes nothing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_response_is_locked_down_and_oversized_forms_are_refused() {
    let site = Site::start().await;
    let manage = site.manage_path("ana@example.org").await;
    let csrf = site.csrf("ana@example.org").await;
    for path in [
        manage.clone(),
        "/nowhere".to_string(),
        "/unsubscribe/1.0".to_string(),
    ] {
        let (_, headers, _) = site.get(&path).await;
        let header = |name: &str| headers.get(name).map(|v| v.to_str().unwrap().to_string());
        let csp = header("content-security-policy").unwrap_or_default();
        assert!(csp.contains("default-src 'none'"), "{path}: {csp}");
        assert!(csp.contains("frame-ancestors 'none'"), "{path}: {csp}");
        assert!(!csp.contains("unsafe"), "{path}: {csp}");
        assert_eq!(header("x-frame-options").as_deref(), Some("DENY"), "{path}");
        assert_eq!(
            header("referrer-policy").as_deref(),
            Some("no-referrer"),
            "{path}"
        );
        assert_eq!(header("x-content-type-options").as_deref(), Some("nosniff"));
        assert_eq!(header("cache-control").as_deref(), Some("no-store"));
    }
    let (status, _, page) = site.get("/nowhere").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(page.contains("There is no page here"), "{page}");

    let huge = "asylum ".repeat(3000);
    let (status, _, page) = site
        .post(
            &format!("{manage}/add"),
            &[("query", &huge), ("csrf", &csrf)],
        )
        .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{page}");
    assert!(page.contains("Too much text"), "{page}");
    let (status, _, page) = site
        .post(
            &format!("{manage}/add"),
            &[("query", &"a".repeat(501)), ("csrf", &csrf)],
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(page.contains("at most 500 characters"), "{page}");
    assert_eq!(
        site.subscriber("ana@example.org")
            .await
            .unwrap()
            .queries
            .len(),
        2
    );

    let (status, headers, css) = site.get("/style.css").await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/css")
    );
    assert!(css.contains("body{"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_search_has_a_private_atom_feed_of_its_matches() {
    let feeds = support::FeedServer::start().await;
    let site = Site::start().await;
    let now = chrono::Utc::now();
    let item = |guid: &str, title: &str| {
        format!(
            "<item><guid>{guid}</guid><title>{title}</title><link>https://news.example/{guid}</link>\
             <description>{title}, in detail.</description><pubDate>{}</pubDate></item>",
            (now - chrono::Duration::hours(1)).to_rfc2822()
        )
    };
    feeds.set(
        "/news.xml",
        support::Route::feed(
            "application/rss+xml",
            format!(
                "<?xml version=\"1.0\"?><rss version=\"2.0\"><channel><title>News</title>{}{}{}</channel></rss>",
                item("a", "New asylum rules &amp; what changes"),
                item("b", "H-1B lottery results"),
                item("c", "TPS extended for Haiti"),
            ),
        ),
    );
    // The site's config has no feeds: add this one the way a reload would.
    let mut config = (*site.app.config).clone();
    let extra = tidings::config::Config::parse(
        &format!(
            "[[feeds]]\nid = \"news\"\nurl = \"{}\"\n",
            feeds.url("/news.xml")
        ),
        &config.path,
    )
    .unwrap();
    config.feeds = extra.feeds;
    let app = site.app.reconfigure(config).await.unwrap();
    let polled = tidings::poll_feeds(&app, now, false).await.unwrap();
    assert_eq!(polled.matches, 3, "{polled:?}");

    let ana = site.subscriber("ana@example.org").await.unwrap();
    let subs = site.app.store.subscriptions_of(ana.id).await.unwrap();
    let (asylum, _) = subs.iter().find(|(_, q)| q == "asylum").unwrap();
    let feed_path = Site::path(&site.app.links.feed_url(*asylum, &ana.email));
    let (_, _, manage) = site.get(&site.manage_path("ana@example.org").await).await;
    assert!(
        manage.contains(&format!("href=\"{feed_path}\"")),
        "{manage}"
    );

    let (status, headers, body) = site.get(&feed_path).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/atom+xml")
    );
    // Read back with the same parser Tidings polls with: a valid Atom feed.
    let base = url::Url::parse(&format!("{}{feed_path}", site.base)).unwrap();
    let parsed =
        tidings::parse::parse_feed(body.as_bytes(), Some("application/atom+xml"), &base, now)
            .unwrap_or_else(|e| panic!("{e}: {body}"));
    let titles: Vec<&str> = parsed.items.iter().map(|i| i.title.as_str()).collect();
    assert_eq!(
        titles,
        ["New asylum rules & what changes"],
        "only this search's matches"
    );
    assert_eq!(
        parsed.items[0].link.as_deref(),
        Some("https://news.example/a")
    );
    assert!(body.contains("<title>Tidings: asylum</title>"), "{body}");

    // Another subscriber's address, or a forged token: no feed.
    let ben = site.subscriber("ben@example.org").await.unwrap();
    let moved = Site::path(&site.app.links.feed_url(*asylum, &ben.email));
    let (status, _, _) = site.get(&moved).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _, _) = site
        .get(&format!("/feed/{asylum}.{}", "f".repeat(32)))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_page_needs_its_password_and_shows_feeds_outbox_and_counts() {
    let closed = Site::start().await;
    let (status, _, _) = closed.get("/admin").await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "no TIDINGS_ADMIN_TOKEN, no page"
    );

    let password = "correct horse battery staple";
    let site = Site::start_with_admin(Some(password)).await;
    let feeds = support::FeedServer::start().await;
    feeds.set("/broken.xml", support::Route::status(500, "<b>down</b>"));
    let mut config = (*site.app.config).clone();
    // A full-text feed whose article link leads to a private address: refused, and the
    // failure shown with the feed.
    let published = (chrono::Utc::now() - chrono::Duration::hours(1)).to_rfc2822();
    feeds.set(
        "/teasers.xml",
        support::Route::feed(
            "application/rss+xml",
            format!(
                "<rss version=\"2.0\"><channel><title>T</title><item><guid>1</guid>\
                 <title>Teaser</title><link>{}</link><pubDate>{published}</pubDate></item>\
                 </channel></rss>",
                feeds.url("/story")
            ),
        ),
    );
    config.feeds = tidings::config::Config::parse(
        &format!(
            "[[feeds]]\nid = \"broken\"\nname = \"Broken <Feed>\"\nurl = \"{}\"\n\
             [[feeds]]\nid = \"teasers\"\nurl = \"{}\"\nfull_text = true\n",
            feeds.url("/broken.xml"),
            feeds.url("/teasers.xml")
        ),
        &config.path,
    )
    .unwrap()
    .feeds;
    let app = site.app.reconfigure(config).await.unwrap();
    tidings::poll_feeds(&app, chrono::Utc::now(), false)
        .await
        .unwrap();
    tidings::pipeline::fetch_articles(&app, chrono::Utc::now())
        .await
        .unwrap();

    let admin = format!("{}/admin", site.base);
    let response = site.client.get(&admin).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert!(
        response.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .starts_with("Basic ")
    );
    for wrong in ["nope", "correct horse battery stapl", ""] {
        let response = site
            .client
            .get(&admin)
            .basic_auth("admin", Some(wrong))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{wrong:?}");
    }
    let response = site
        .client
        .get(&admin)
        .basic_auth("anyone", Some(password))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let page = response.text().await.unwrap();
    assert!(
        page.contains("2 subscribers (0 paused after bounces), 3 searches"),
        "{page}"
    );
    assert!(page.contains("<tr class=\"failing\">"), "{page}");
    assert!(page.contains("Broken &lt;Feed&gt;"), "escaped: {page}");
    assert!(page.contains("HTTP 500"), "{page}");
    assert!(!page.contains("<b>down</b>"));
    assert!(
        page.contains("articles: 0 read, 1 failed (last: fetching http://127.0.0.1:"),
        "{page}"
    );
    assert!(page.contains("refused by the fetch policy"), "{page}");

    // One of each is said in the singular.
    assert!(
        site.app
            .store
            .remove_subscriber("ana@example.org")
            .await
            .unwrap()
    );
    let page = site.admin_page(password).await;
    assert!(
        page.contains("1 subscriber (0 paused after bounces), 1 search."),
        "{page}"
    );
}

/// A feed a poll holds shows on the admin page as being polled by that process, not as
/// never polled; one whose poll died shows as claimed by a process that has ended.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_page_shows_who_is_polling_a_feed() {
    let password = "correct horse battery staple";
    let site = Site::start_with_admin(Some(password)).await;
    let mut config = (*site.app.config).clone();
    config.feeds = tidings::config::Config::parse(
        "[[feeds]]\nid = \"held\"\nurl = \"https://held.example/feed\"\n\
         [[feeds]]\nid = \"orphaned\"\nurl = \"https://orphaned.example/feed\"\n",
        &config.path,
    )
    .unwrap()
    .feeds;
    let app = site.app.reconfigure(config).await.unwrap();
    let now = chrono::Utc::now();
    let claimed = app
        .store
        .claim_due_feeds(now, Duration::from_secs(300), 10)
        .await
        .unwrap();
    assert_eq!(claimed.len(), 2);
    // The poll that holds "orphaned" ran on this machine and has ended.
    let mut ended = std::process::Command::new("true").spawn().unwrap();
    let pid = ended.id();
    ended.wait().unwrap();
    let this = tidings::store::Instance::this();
    let database = site._dir.path().join("data/tidings.db");
    rusqlite::Connection::open(&database)
        .unwrap()
        .execute(
            "UPDATE feeds SET claimed_by = ?1 WHERE id = 'orphaned'",
            [format!("{}:{pid}:1:{}", this.host, this.pid_scope)],
        )
        .unwrap();

    let page = site.admin_page(password).await;
    let since = now.format("%Y-%m-%d %H:%M UTC");
    let held = format!(
        "being polled by {} pid {} since {since}",
        this.host, this.pid
    );
    let orphaned = format!(
        "claimed by {} pid {pid} since {since}, which has ended: the next poll takes it over",
        this.host
    );
    assert!(page.contains(&held), "{page}");
    assert!(page.contains(&orphaned), "{page}");
    assert!(!page.contains("not polled yet"), "{page}");
}

/// The sign-up form's anti-forgery value, read from the page as a browser would.
async fn form_csrf(site: &Site) -> String {
    let (status, _, page) = site.get("/").await;
    assert_eq!(status, StatusCode::OK);
    let marker = "name=\"csrf\" value=\"";
    let start = page.find(marker).unwrap() + marker.len();
    page[start..].split('"').next().unwrap().to_string()
}

fn confirm_link(mail: &support::Mail) -> String {
    let url = mail
        .text
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("http://localhost:8080/confirm/"))
        .unwrap_or_else(|| panic!("no link in {}", mail.text));
    url.trim_start_matches("http://localhost:8080").to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signing_up_mails_a_confirmation_and_only_confirming_subscribes() {
    let smtp = support::SmtpServer::start().await;
    let site = Site::start_full(None, smtp.port()).await;
    let csrf = form_csrf(&site).await;

    // Without the form's value: refused. With mistakes: each named, nothing sent.
    let (status, _, _) = site
        .post(
            "/subscribe",
            &[("email", "zoe@example.org"), ("queries", "asylum")],
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _, page) = site
        .post(
            "/subscribe",
            &[
                ("csrf", &csrf),
                ("email", "zoe at example"),
                ("queries", "asylum\n(TPS OR"),
                ("frequency", "daily 07:30"),
                ("tz", "Mars/Base"),
                ("action", "subscribe"),
            ],
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    for words in [
        "is not an email address",
        "Search 2 ((TPS OR)",
        "column",
        "Unknown time zone",
    ] {
        assert!(
            page.contains(&words.replace('"', "&quot;")),
            "{words}: {page}"
        );
    }
    assert!(
        page.contains("zoe at example"),
        "the form keeps what was typed"
    );

    // A good sign-up: a confirmation mail, and no subscriber yet.
    let signup = [
        ("csrf", csrf.as_str()),
        ("email", "zoe@example.org"),
        ("queries", "asylum\n\"green card\" -lottery"),
        ("frequency", "weekly fri 17:00"),
        ("tz", "Europe/London"),
        ("action", "subscribe"),
    ];
    let (status, _, page) = site.post("/subscribe", &signup).await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains("Check your inbox"), "{page}");
    let mail = support::decode(&smtp.wait_for(1, Duration::from_secs(10)).await[0]);
    assert_eq!(smtp.messages()[0].rcpt_to, ["zoe@example.org"]);
    assert!(
        mail.text.contains("\"green card\" -lottery"),
        "{}",
        mail.text
    );
    assert!(
        site.subscriber("zoe@example.org").await.is_none(),
        "not before confirming"
    );
    let confirm = confirm_link(&mail);

    // Following the link shows what would be confirmed; only the button confirms.
    let (status, _, page) = site.get(&confirm).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        page.contains("zoe@example.org") && page.contains("Confirm"),
        "{page}"
    );
    assert!(site.subscriber("zoe@example.org").await.is_none());
    let (status, _, page) = site.post(&confirm, &[]).await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains("You are subscribed"), "{page}");
    let zoe = site.subscriber("zoe@example.org").await.unwrap();
    assert_eq!(zoe.queries, ["asylum", "\"green card\" -lottery"]);
    assert_eq!(
        (zoe.schedule.spec(), zoe.timezone.name()),
        ("weekly fri 17:00".to_string(), "Europe/London")
    );
    let manage = Site::path(&site.app.links.manage_url(zoe.id, &zoe.email));
    assert!(page.contains(&format!("href=\"{manage}\"")), "{page}");
    let (status, _, page) = site.post(&confirm, &[]).await;
    assert_eq!(
        (status, page.contains("You are subscribed")),
        (StatusCode::OK, true)
    );
    assert_eq!(
        site.subscriber("zoe@example.org")
            .await
            .unwrap()
            .queries
            .len(),
        2
    );

    // A forged confirmation link does nothing.
    let (status, _, _) = site
        .post(&format!("/confirm/1.{}", "0".repeat(32)), &[])
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sign_up_page_never_tells_who_is_subscribed_and_limits_repeats() {
    let smtp = support::SmtpServer::start().await;
    let site = Site::start_full(None, smtp.port()).await;
    let csrf = form_csrf(&site).await;
    let sign_up = |email: &'static str| {
        let form = [
            ("csrf", csrf.clone()),
            ("email", email.to_string()),
            ("queries", "asylum".to_string()),
            ("frequency", "daily".to_string()),
            ("tz", "UTC".to_string()),
            ("action", "subscribe".to_string()),
        ];
        let site = &site;
        async move {
            let form: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
            site.post("/subscribe", &form).await
        }
    };
    // ana is subscribed, nobody@ is not: the same answer, apart from the address.
    let (s1, _, known) = sign_up("ana@example.org").await;
    let (s2, _, unknown) = sign_up("nobody@example.org").await;
    assert_eq!((s1, s2), (StatusCode::OK, StatusCode::OK));
    assert_eq!(
        known.replace("ana@example.org", "X"),
        unknown.replace("nobody@example.org", "X")
    );
    smtp.wait_for(2, Duration::from_secs(10)).await;

    // The same address three times a day at most; the fourth is answered alike, unmailed.
    sign_up("nobody@example.org").await;
    sign_up("nobody@example.org").await;
    smtp.wait_for(4, Duration::from_secs(10)).await;
    let (status, _, fourth) = sign_up("nobody@example.org").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(fourth, unknown);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let to_nobody = smtp
        .messages()
        .iter()
        .filter(|m| m.rcpt_to == ["nobody@example.org"])
        .count();
    assert_eq!(to_nobody, 3);

    // One client, ten sign-ups an hour: the eleventh is refused outright.
    for n in 0..5 {
        let email: &'static str = Box::leak(format!("c{n}@example.org").into_boxed_str());
        let (status, _, _) = sign_up(email).await;
        assert_eq!(status, StatusCode::OK, "sign-up {}", n + 6);
    }
    let (status, _, page) = sign_up("late@example.org").await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{page}");
    assert!(page.contains("Too many sign-ups"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_old_confirmation_link_has_expired_and_previews_show_recent_matches() {
    let feeds = support::FeedServer::start().await;
    let site = Site::start().await;
    let old = chrono::Utc::now() - chrono::Duration::hours(49);
    let id = site
        .app
        .store
        .create_signup(&tidings::store::Signup {
            email: "late@example.org".into(),
            queries: vec!["asylum".into()],
            frequency: "daily 08:00".into(),
            timezone: "UTC".into(),
            client: "192.0.2.1".into(),
            created_at: old,
            confirmed_at: None,
            locale: "en".into(),
        })
        .await
        .unwrap();
    let link = Site::path(&site.app.links.confirm_url(id, "late@example.org"));
    let (status, _, page) = site.post(&link, &[]).await;
    assert_eq!(status, StatusCode::GONE);
    assert!(page.contains("This link has expired"), "{page}");
    assert!(site.subscriber("late@example.org").await.is_none());

    // Preview: what each search would have found among the last week's items.
    let now = chrono::Utc::now();
    feeds.set(
        "/news.xml",
        support::Route::feed(
            "application/rss+xml",
            format!(
                "<?xml version=\"1.0\"?><rss version=\"2.0\"><channel><title>News</title>\
                 <item><guid>a</guid><title>Asylum backlog grows</title><pubDate>{0}</pubDate></item>\
                 <item><guid>b</guid><title>Asylum office opens</title><pubDate>{0}</pubDate></item>\
                 <item><guid>c</guid><title>H-1B cap reached</title><pubDate>{0}</pubDate></item>\
                 </channel></rss>",
                (now - chrono::Duration::hours(2)).to_rfc2822()
            ),
        ),
    );
    let mut config = (*site.app.config).clone();
    config.feeds = tidings::config::Config::parse(
        &format!(
            "[[feeds]]\nid = \"news\"\nurl = \"{}\"\n",
            feeds.url("/news.xml")
        ),
        &config.path,
    )
    .unwrap()
    .feeds;
    let app = site.app.reconfigure(config).await.unwrap();
    tidings::poll_feeds(&app, now, false).await.unwrap();
    let csrf = form_csrf(&site).await;
    let (status, _, page) = site
        .post(
            "/subscribe",
            &[
                ("csrf", &csrf),
                ("email", ""),
                ("queries", "asylum\nH1B\nvisa bulletin"),
                ("frequency", "daily"),
                ("tz", "UTC"),
                ("action", "preview"),
            ],
        )
        .await;
    assert_eq!(
        status,
        StatusCode::BAD_REQUEST,
        "no address yet, but a preview all the same"
    );
    assert!(page.contains("<code>asylum</code>: 2 stories"), "{page}");
    assert!(page.contains("Asylum backlog grows") && page.contains("Asylum office opens"));
    assert!(page.contains("<code>H1B</code>: 1 story"), "{page}");
    assert!(
        page.contains("<code>visa bulletin</code>: 0 stories"),
        "{page}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_search_matches_nothing_until_resumed() {
    let feeds = support::FeedServer::start().await;
    let site = Site::start().await;
    let manage = site.manage_path("ana@example.org").await;
    let csrf = site.csrf("ana@example.org").await;
    let ana = site.subscriber("ana@example.org").await.unwrap();
    let asylum = site.app.store.subscriptions_of(ana.id).await.unwrap()[0].0;
    let (status, location, _) = site
        .post(
            &format!("{manage}/pause"),
            &[
                ("subscription", &asylum.to_string()),
                ("paused", "1"),
                ("csrf", &csrf),
            ],
        )
        .await;
    assert_eq!(
        (status, location.ends_with("?done=paused")),
        (StatusCode::SEE_OTHER, true)
    );
    let (_, _, page) = site.get(&manage).await;
    assert!(
        page.contains("<code>asylum</code> <span class=\"warn\">paused</span>"),
        "{page}"
    );
    assert!(page.contains(">Resume</button>"), "{page}");

    let now = chrono::Utc::now();
    let story = |guid: &str, title: &str| {
        format!(
            "<item><guid>{guid}</guid><title>{title}</title><pubDate>{}</pubDate></item>",
            (now - chrono::Duration::minutes(30)).to_rfc2822()
        )
    };
    let set_feed = |items: String| {
        feeds.set(
            "/news.xml",
            support::Route::feed(
                "application/rss+xml",
                format!("<?xml version=\"1.0\"?><rss version=\"2.0\"><channel><title>N</title>{items}</channel></rss>"),
            ),
        )
    };
    set_feed(story("a", "Asylum and H-1B news"));
    let mut config = (*site.app.config).clone();
    config.feeds = tidings::config::Config::parse(
        &format!(
            "[[feeds]]\nid = \"news\"\nurl = \"{}\"\n",
            feeds.url("/news.xml")
        ),
        &config.path,
    )
    .unwrap()
    .feeds;
    let app = site.app.reconfigure(config).await.unwrap();
    let polled = tidings::poll_feeds(&app, now, false).await.unwrap();
    assert_eq!(polled.matches, 1, "only \"H-1B\": asylum is paused");
    let asylum_matches = site
        .app
        .store
        .subscription_matches(asylum, 10)
        .await
        .unwrap();
    assert!(asylum_matches.is_empty());

    site.post(
        &format!("{manage}/pause"),
        &[
            ("subscription", &asylum.to_string()),
            ("paused", "0"),
            ("csrf", &csrf),
        ],
    )
    .await;
    set_feed(format!(
        "{}{}",
        story("a", "Asylum and H-1B news"),
        story("b", "Asylum ruling")
    ));
    let polled = tidings::poll_feeds(&app, now + chrono::Duration::hours(1), false)
        .await
        .unwrap();
    assert_eq!(polled.matches, 1, "resumed: the new asylum story matches");
    let titles: Vec<String> = site
        .app
        .store
        .subscription_matches(asylum, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.title)
        .collect();
    assert_eq!(titles, ["Asylum ruling"]);
}
