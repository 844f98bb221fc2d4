//! Clients that try to get around the limits: password guessing on `/admin`, one mailbox
//! under many spellings, and slow connections that would hold every socket.

mod support;

use std::time::Duration;

use reqwest::StatusCode;
use support::Daemon;
use tidings::App;

struct Site {
    app: App,
    base: String,
    client: reqwest::Client,
    _dir: tempfile::TempDir,
    _stop: tokio_util::sync::DropGuard,
}

impl Site {
    async fn start(admin: Option<&str>, smtp_port: u16) -> Site {
        let dir = tempfile::tempdir().unwrap();
        let config = support::write_config(dir.path(), &[], smtp_port);
        let mut app = App::open(config).await.unwrap();
        app.admin_token = admin.map(std::sync::Arc::from);
        let (tx, rx) = tokio::sync::watch::channel(app.clone());
        std::mem::forget(tx);
        let stop = tokio_util::sync::CancellationToken::new();
        let addr = tidings::web::serve("127.0.0.1:0".parse().unwrap(), rx, stop.clone())
            .await
            .unwrap();
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
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

    async fn admin(&self, authorization: &str) -> StatusCode {
        self.client
            .get(format!("{}/admin", self.base))
            .header("authorization", authorization)
            .send()
            .await
            .unwrap()
            .status()
    }
}

fn basic(scheme: &str, user: &str, password: &str) -> String {
    use base64::Engine as _;
    let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    format!("{scheme} {encoded}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_scheme_name_is_case_insensitive() {
    let password = "correct horse battery staple";
    let site = Site::start(Some(password), 25).await;
    for scheme in ["Basic", "basic", "BASIC", "bAsIc"] {
        let status = site.admin(&basic(scheme, "admin", password)).await;
        assert_eq!(status, StatusCode::OK, "{scheme}");
    }
    for (case, header) in [
        ("another scheme", basic("Bearer", "admin", password)),
        (
            "no space",
            basic("Basic", "admin", password).replace(' ', ""),
        ),
        ("wrong password", basic("basic", "admin", "nope")),
    ] {
        assert_eq!(
            site.admin(&header).await,
            StatusCode::UNAUTHORIZED,
            "{case}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guessing_the_admin_password_is_slowed_down_per_client() {
    let password = "correct horse battery staple";
    let site = Site::start(Some(password), 25).await;
    for n in 1..=10 {
        let status = site
            .admin(&basic("Basic", "admin", &format!("guess {n}")))
            .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "guess {n}");
    }
    // The eleventh rapid try is refused unread, even with the right password.
    let response = site
        .client
        .get(format!("{}/admin", site.base))
        .header("authorization", basic("Basic", "admin", password))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    let wait: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(wait >= 1, "{wait}");
    let page = response.text().await.unwrap();
    assert!(page.contains("Too many wrong passwords"), "{page}");
    assert_eq!(
        site.admin(&basic("Basic", "admin", "guess 11")).await,
        StatusCode::TOO_MANY_REQUESTS
    );

    // Another client (a proxy on this host forwarding someone else) is not locked out.
    let response = site
        .client
        .get(format!("{}/admin", site.base))
        .header("authorization", basic("Basic", "admin", password))
        .header("x-forwarded-for", "192.0.2.7")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let _ = &site.app;
}

/// The sign-up form's anti-forgery value, read from the page as a browser would.
async fn form_csrf(site: &Site) -> String {
    let page = site.client.get(&site.base).send().await.unwrap();
    let page = page.text().await.unwrap();
    let marker = "name=\"csrf\" value=\"";
    let start = page.find(marker).unwrap() + marker.len();
    page[start..].split('"').next().unwrap().to_string()
}

async fn sign_up(site: &Site, csrf: &str, email: &str) -> (StatusCode, String) {
    let response = site
        .client
        .post(format!("{}/subscribe", site.base))
        .form(&[
            ("csrf", csrf),
            ("email", email),
            ("queries", "asylum"),
            ("frequency", "daily"),
            ("tz", "UTC"),
            ("action", "subscribe"),
        ])
        .send()
        .await
        .unwrap();
    (response.status(), response.text().await.unwrap())
}

/// Issue 12, item 6: one mailbox under eight spellings got eight confirmation mails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_mailbox_under_many_spellings_gets_three_confirmations_a_day() {
    let smtp = support::SmtpServer::start().await;
    let site = Site::start(None, smtp.port()).await;
    let csrf = form_csrf(&site).await;
    // Ten: one client may sign up ten times an hour.
    let spellings = [
        "victim@x.org",
        "victim@x.org",
        "victim@x.org",
        "victim@x.org",
        r#""victim"@x.org"#,
        r#""victim"@x.org"#,
        r#""v\ictim"@x.org"#,
        r#""vi\ctim"@x.org"#,
        "VICTIM@X.ORG",
        "victim@X.org.",
    ];
    for email in spellings {
        let (status, page) = sign_up(&site, &csrf, email).await;
        assert_eq!(status, StatusCode::OK, "{email}: {page}");
    }
    smtp.wait_for(3, Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let recipients: Vec<Vec<String>> = smtp.messages().into_iter().map(|m| m.rcpt_to).collect();
    assert_eq!(recipients.len(), 3, "{recipients:?}");
    assert!(
        recipients.iter().all(|r| r == &["victim@x.org"]),
        "{recipients:?}"
    );
    let signups = site
        .app
        .store
        .recent_signups(
            "victim@x.org",
            "",
            chrono::Utc::now() - chrono::Duration::days(1),
        )
        .await
        .unwrap()
        .0;
    assert_eq!(
        signups as usize,
        spellings.len(),
        "each counted once, by one spelling"
    );
}

/// A form the mailer cannot send is refused at the form, not left as a failed outbox row.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn addresses_the_mailer_cannot_send_are_refused_at_the_form() {
    let smtp = support::SmtpServer::start().await;
    let site = Site::start(None, smtp.port()).await;
    let csrf = form_csrf(&site).await;
    for (email, why) in [
        ("a@[127.0.0.1]", "IP address"),
        ("a@127.0.0.1", "IP address"),
        ("a@localhost", "domain"),
        ("jos\u{e9}@x.org", "plain ASCII"),
    ] {
        let (status, page) = sign_up(&site, &csrf, email).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{email}: {page}");
        assert!(page.contains(why), "{email}: {page}");
    }
    assert!(site.app.store.outbox().await.unwrap().is_empty());
    let (status, _) = sign_up(&site, &csrf, "ana@B\u{fc}cher.example").await;
    assert_eq!(status, StatusCode::OK);
    smtp.wait_for(1, Duration::from_secs(10)).await;
    assert_eq!(smtp.messages()[0].rcpt_to, ["ana@xn--bcher-kva.example"]);
}

/// The CLI reads addresses with the same rule: one subscriber per mailbox.
#[test]
fn the_cli_adds_one_subscriber_per_mailbox() {
    let dir = tempfile::tempdir().unwrap();
    let config = support::write_config(dir.path(), &[], 25);
    let config = config.path.to_string_lossy().into_owned();
    let run = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_tidings"))
            .args(args)
            .args(["--config", &config])
            .env_remove("TIDINGS_CONFIG")
            .output()
            .unwrap()
    };
    for (email, query) in [
        (r#""Victim"@X.org"#, "asylum"),
        (r#""v\ictim"@x.org"#, "TPS"),
        ("victim@x.org.", "DACA"),
    ] {
        let out = run(&["subscriber", "add", email, "-q", query]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{email}: {stderr}");
    }
    let out = run(&["subscriber", "add", "a@[127.0.0.1]", "-q", "asylum"]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("IP address"), "{stderr}");
    let list = String::from_utf8_lossy(&run(&["subscriber", "list"]).stdout).into_owned();
    assert_eq!(list.matches("@x.org").count(), 1, "{list}");
    assert!(list.contains("Victim@x.org ("), "{list}");
    let out = run(&["subscriber", "remove", r#""victim"@X.ORG"#]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let list = String::from_utf8_lossy(&run(&["subscriber", "list"]).stdout).into_owned();
    assert!(!list.contains("@x.org"), "{list}");
}

/// A connection from `from` that sends half a request, a byte every half second, until
/// the server closes it.
async fn slow_client(from: &str, to: std::net::SocketAddr) -> Option<tokio::net::TcpStream> {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(format!("{from}:0").parse().unwrap()).unwrap();
    let mut stream = socket.connect(to).await.ok()?;
    use tokio::io::AsyncWriteExt as _;
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n")
        .await
        .ok()?;
    Some(stream)
}

fn drip(mut stream: tokio::net::TcpStream) {
    tokio::spawn(async move {
        use tokio::io::AsyncWriteExt as _;
        while stream.write_all(b"X").await.is_ok() {
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    });
}

/// Issue 12, item 7: one client holding many half-sent requests took the pages,
/// `/healthz` and feed polls down ("Too many open files"). Now each listener holds a
/// bounded number of connections, fewer per client, and drops requests whose headers
/// do not arrive in time, so the file descriptors polling needs stay free.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_cannot_take_pages_health_or_polls_down() {
    let feeds = support::FeedServer::start().await;
    for path in ["/first.xml", "/late.xml"] {
        feeds.set(
            path,
            support::Route::feed("application/rss+xml", support::fixture("uscis.xml")),
        );
    }
    let smtp = support::SmtpServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let web = "[web]\nheader_timeout = \"2s\"\nmax_connections = 100\n\
               max_connections_per_client = 20\n";
    let config = support::write_config_with(
        dir.path(),
        &[("first", feeds.url("/first.xml"))],
        smtp.port(),
        "",
        web,
    );
    // 256 files: the flood below (300 connections) would use them all up.
    let daemon = Daemon::start_with_open_files(&config.path, 256);
    let web = daemon.address("web listener").await;
    let admin = daemon.address("admin listener").await;
    daemon
        .wait_log("first polled", |l| {
            l.contains("feed=first") && l.contains("ok")
        })
        .await;

    let mut flood = 0;
    for _ in 0..300 {
        if let Some(stream) = slow_client("127.0.0.1", web).await {
            drip(stream);
            flood += 1;
        }
    }
    assert_eq!(flood, 300, "the kernel accepts them all into the backlog");
    tokio::time::sleep(Duration::from_millis(500)).await;

    // The admin listener answers.
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .no_proxy()
        .build()
        .unwrap();
    let health = client
        .get(format!("http://{admin}/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), StatusCode::OK);
    // A page, for another client.
    let other = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .local_address("127.0.0.2".parse::<std::net::IpAddr>().unwrap())
        .no_proxy()
        .build()
        .unwrap();
    let page = other.get(format!("http://{web}/")).send().await.unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    assert!(page.text().await.unwrap().contains("name=\"csrf\""));
    // A poll: a feed added now is fetched and stored.
    let text = std::fs::read_to_string(&config.path).unwrap();
    let late = format!(
        "{text}\n[[feeds]]\nid = \"late\"\nname = \"Late\"\nurl = \"{}\"\n",
        feeds.url("/late.xml")
    );
    std::fs::write(&config.path, late).unwrap();
    daemon.signal("HUP");
    let polled = daemon
        .wait_log("late polled", |l| {
            l.contains("feed=late") && l.contains("status=")
        })
        .await;
    assert!(polled.contains("ok"), "{polled}\n{}", daemon.log());

    // A request whose headers never finish is closed once the header deadline passes.
    let mut half = slow_client("127.0.0.3", web).await.unwrap();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(
        Duration::from_secs(30),
        tokio::io::AsyncReadExt::read_to_end(&mut half, &mut answer),
    )
    .await;
    assert!(read.is_ok(), "still open after 30 s");
    assert!(
        !daemon.log().contains("Too many open files"),
        "{}",
        daemon.log()
    );
}
