//! Clients that try to get around the limits: password guessing on `/admin`, one mailbox
//! under many spellings, and slow connections that would hold every socket.

mod support;

use std::time::Duration;

use reqwest::StatusCode;
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
        let mut app = App::open(config).unwrap();
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
