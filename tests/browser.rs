//! The subscriber pages in a real headless browser: Debian's chromium driven through
//! chromedriver (WebDriver, via fantoccini). One walk through what a subscriber does:
//! sign up with a preview, confirm from the mailed link, add and remove a search,
//! unsubscribe; at each step the page, the database and the SMTP server are checked.
//!
//! Without chromium and chromedriver the test is reported as ignored, with the reason on
//! standard output, unless `TIDINGS_REQUIRE_BROWSER` is set (CI sets it): then it runs and
//! fails. The harness is libtest-mimic (`harness = false`), which can decide at run time. With `TIDINGS_SCREENSHOTS=DIR` it writes
//! a PNG of each page into DIR (`docs/screenshots` holds the committed ones).
//!
//! The browser only loads pages from 127.0.0.1, and the pages load only `/style.css`.

mod support;

use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;
use tidings::App;

const EMAIL: &str = "zoe@example.org";

/// chromedriver running as a child process; killed when dropped.
struct Driver {
    child: Child,
    url: String,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `name` on `PATH`, if it is there.
fn on_path(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// The chromedriver and chromium programs; `Err` names what is missing.
fn find_browser() -> Result<(PathBuf, PathBuf), String> {
    let driver = on_path("chromedriver").ok_or("chromedriver is not on PATH")?;
    let chromium = [PathBuf::from("/usr/bin/chromium")]
        .into_iter()
        .chain(on_path("chromium"))
        .find(|p| p.is_file())
        .ok_or("chromium is not installed")?;
    Ok((driver, chromium))
}

/// chromedriver on a free loopback port, once it answers; `Err` names what is missing.
fn start_driver() -> Result<(Driver, PathBuf), String> {
    let (driver, chromium) = find_browser()?;
    let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .map_err(|e| format!("finding a free port: {e}"))?
        .port();
    let child = Command::new(&driver)
        .arg(format!("--port={port}"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("starting {}: {e}", driver.display()))?;
    let mut driver = Driver {
        child,
        url: format!("http://127.0.0.1:{port}"),
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_err() {
        if let Ok(Some(status)) = driver.child.try_wait() {
            return Err(format!("chromedriver exited at start: {status}"));
        }
        if Instant::now() > deadline {
            return Err("chromedriver did not answer within 20 s".into());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok((driver, chromium))
}

/// A headless chromium session at phone width that stays on loopback.
async fn open_browser(driver: &Driver, chromium: &Path) -> Client {
    open_browser_in(driver, chromium, "en-US,en").await
}

/// [`open_browser`] whose reader prefers `languages` (its `Accept-Language`).
async fn open_browser_in(driver: &Driver, chromium: &Path, languages: &str) -> Client {
    let first = languages.split(',').next().unwrap_or("en");
    let capabilities = json!({
        "browserName": "chrome",
        "goog:chromeOptions": {
            "binary": chromium,
            "prefs": { "intl.accept_languages": languages },
            "args": [
                format!("--lang={first}"),
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--window-size=420,1000",
                "--hide-scrollbars",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-default-apps",
                // Every host but 127.0.0.1 resolves to nothing: no traffic leaves loopback.
                "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
            ],
        },
    });
    let serde_json::Value::Object(capabilities) = capabilities else {
        unreachable!("a JSON object")
    };
    ClientBuilder::rustls()
        .expect("an HTTP client for chromedriver")
        .capabilities(capabilities)
        .connect(&driver.url)
        .await
        .expect("a chromium session from chromedriver")
}

/// The text of the page's `<main>`.
async fn main_text(browser: &Client) -> String {
    browser
        .find(Locator::Css("main"))
        .await
        .expect("a <main>")
        .text()
        .await
        .expect("its text")
}

/// Waits until `<main>` contains `words` (after a click that loads a page) and returns
/// its text.
async fn wait_for_text(browser: &Client, words: &str) -> String {
    let found = browser
        .wait()
        .at_most(Duration::from_secs(10))
        .for_element(Locator::XPath(&format!("//main[contains(., '{words}')]")))
        .await;
    let text = main_text(browser).await;
    assert!(
        found.is_ok(),
        "waiting for {words:?}; the page says: {text}"
    );
    text
}

/// Clicks the button labelled `label` (inside `within`, an XPath prefix) and waits for the
/// next page to show `words`.
async fn click_button(browser: &Client, within: &str, label: &str, words: &str) -> String {
    browser
        .find(Locator::XPath(&format!(
            "{within}//button[normalize-space()='{label}']"
        )))
        .await
        .unwrap_or_else(|e| panic!("a {label:?} button: {e}"))
        .click()
        .await
        .unwrap_or_else(|e| panic!("clicking {label:?}: {e}"));
    wait_for_text(browser, words).await
}

/// Follows the link reading `text` and waits for the next page to show `words`.
async fn click_link(browser: &Client, text: &str, words: &str) -> String {
    browser
        .find(Locator::LinkText(text))
        .await
        .unwrap_or_else(|e| panic!("a link {text:?}: {e}"))
        .click()
        .await
        .unwrap_or_else(|e| panic!("following {text:?}: {e}"));
    wait_for_text(browser, words).await
}

/// Types `text` into the field with id `id`, replacing what it held.
async fn fill(browser: &Client, id: &str, text: &str) {
    let field = browser
        .find(Locator::Id(id))
        .await
        .unwrap_or_else(|e| panic!("a field #{id}: {e}"));
    field.clear().await.unwrap();
    field.send_keys(text).await.unwrap();
}

/// The searches the page lists (`ul.queries`), in order.
async fn listed_searches(browser: &Client) -> Vec<String> {
    let mut searches = Vec::new();
    for code in browser
        .find_all(Locator::Css("ul.queries li code"))
        .await
        .unwrap()
    {
        searches.push(code.text().await.unwrap());
    }
    searches
}

/// A PNG of the window; written to `$TIDINGS_SCREENSHOTS/NAME.png` when that is set.
async fn screenshot(browser: &Client, name: &str) {
    let png = browser.screenshot().await.expect("a screenshot");
    assert!(png.starts_with(b"\x89PNG"), "{name}: not a PNG");
    if let Some(dir) = std::env::var_os("TIDINGS_SCREENSHOTS") {
        let dir = PathBuf::from(dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("{name}.png")), png).unwrap();
    }
}

async fn searches_of(app: &App) -> Option<Vec<String>> {
    app.store
        .subscriber(EMAIL)
        .await
        .unwrap()
        .map(|s| s.queries)
}

/// An app with one feed of recent news (so the preview finds something), serving its
/// pages on loopback. Returns the app and the pages' base URL.
async fn start_site(
    dir: &Path,
    feeds: &support::FeedServer,
    smtp: &support::SmtpServer,
) -> (App, String, tokio_util::sync::DropGuard) {
    let hours_ago = |h| (chrono::Utc::now() - chrono::Duration::hours(h)).to_rfc2822();
    feeds.set(
        "/news.xml",
        support::Route::feed(
            "application/rss+xml",
            format!(
                "<?xml version=\"1.0\"?><rss version=\"2.0\"><channel><title>News</title>\
                 <item><guid>a</guid><title>Asylum backlog grows to a record</title><pubDate>{}</pubDate></item>\
                 <item><guid>b</guid><title>New asylum office opens in Denver</title><pubDate>{}</pubDate></item>\
                 <item><guid>c</guid><title>Green card wait times fall</title><pubDate>{}</pubDate></item>\
                 <item><guid>d</guid><title>Diversity lottery green card results out</title><pubDate>{}</pubDate></item>\
                 </channel></rss>",
                hours_ago(3),
                hours_ago(30),
                hours_ago(50),
                hours_ago(70),
            ),
        ),
    );
    let config = support::write_config(dir, &[("news", feeds.url("/news.xml"))], smtp.port());
    let app = App::open(config).await.unwrap();
    tidings::poll_feeds(&app, chrono::Utc::now(), false)
        .await
        .unwrap();
    let (tx, rx) = tokio::sync::watch::channel(app.clone());
    std::mem::forget(tx);
    let stop = tokio_util::sync::CancellationToken::new();
    let addr = tidings::web::serve((Ipv4Addr::LOCALHOST, 0).into(), rx, stop.clone())
        .await
        .unwrap();
    (app, format!("http://{addr}"), stop.drop_guard())
}

fn main() -> std::process::ExitCode {
    let args = libtest_mimic::Arguments::from_args();
    let required = std::env::var_os("TIDINGS_REQUIRE_BROWSER").is_some();
    let missing = find_browser().err();
    if let (Some(why), false, false) = (&missing, required, args.list) {
        // On stdout beside the summary's "1 ignored", so whoever reads the results knows;
        // not in a listing (`--list`), which tools read line by line.
        println!(
            "browser test ignored: {why} (apt-get install -y chromium chromium-driver, \
             or set TIDINGS_REQUIRE_BROWSER=1 to make this a failure)"
        );
    }
    let walk = libtest_mimic::Trial::test(
        "a_subscriber_signs_up_confirms_manages_and_leaves_in_a_real_browser",
        || {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("a tokio runtime")
                .block_on(a_subscriber_signs_up_confirms_manages_and_leaves_in_a_real_browser());
            Ok(())
        },
    )
    .with_ignored_flag(missing.is_some() && !required);
    let webhook = libtest_mimic::Trial::test(
        "a_subscriber_adds_a_webhook_confirms_it_and_the_next_digest_arrives_there",
        || {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("a tokio runtime")
                .block_on(
                    a_subscriber_adds_a_webhook_confirms_it_and_the_next_digest_arrives_there(),
                );
            Ok(())
        },
    )
    .with_ignored_flag(missing.is_some() && !required);
    let spanish = libtest_mimic::Trial::test(
        "a_spanish_reader_signs_up_and_manages_in_spanish_in_a_real_browser",
        || {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("a tokio runtime")
                .block_on(a_spanish_reader_signs_up_and_manages_in_spanish_in_a_real_browser());
            Ok(())
        },
    )
    .with_ignored_flag(missing.is_some() && !required);
    libtest_mimic::run(&args, vec![walk, webhook, spanish]).exit_code()
}

async fn a_subscriber_signs_up_confirms_manages_and_leaves_in_a_real_browser() {
    let (driver, chromium) = start_driver().unwrap_or_else(|why| {
        panic!("the browser test cannot run: {why} (apt-get install -y chromium chromium-driver)")
    });
    let dir = tempfile::tempdir().unwrap();
    let feeds = support::FeedServer::start().await;
    let smtp = support::SmtpServer::start().await;
    let (app, base, _stop) = start_site(dir.path(), &feeds, &smtp).await;
    let browser = open_browser(&driver, &chromium).await;

    // 1. The sign-up form: a preview first, then subscribe.
    browser.goto(&format!("{base}/")).await.unwrap();
    assert_eq!(browser.title().await.unwrap(), "Subscribe · Tidings");
    fill(&browser, "email", EMAIL).await;
    fill(&browser, "queries", "asylum\n\"green card\" -lottery").await;
    fill(&browser, "frequency", "weekly fri 17:00").await;
    fill(&browser, "tz", "Europe/London").await;
    let page = click_button(
        &browser,
        "",
        "Preview matches",
        "What these would have found in the last 7 days",
    )
    .await;
    assert!(page.contains("asylum: 2 stories"), "{page}");
    assert!(page.contains("New asylum office opens in Denver"), "{page}");
    assert!(page.contains("\"green card\" -lottery: 1 story"), "{page}");
    assert!(!page.contains("Diversity lottery"), "{page}");
    // Tall enough to show the form and the preview below it.
    let (width, height) = browser.get_window_size().await.unwrap();
    browser.set_window_size(width as u32, 1400).await.unwrap();
    screenshot(&browser, "01-sign-up-preview").await;
    browser
        .set_window_size(width as u32, height as u32)
        .await
        .unwrap();
    assert!(smtp.messages().is_empty(), "a preview sends nothing");
    let page = click_button(&browser, "", "Subscribe", "Check your inbox").await;
    assert!(page.contains(EMAIL), "{page}");
    assert_eq!(searches_of(&app).await, None, "not before confirming");

    // 2. The confirmation mail's link, then the Confirm button.
    let received = smtp.wait_for(1, Duration::from_secs(10)).await;
    assert_eq!(received[0].rcpt_to, [EMAIL]);
    let mail = support::decode(&received[0]);
    let link = mail
        .text
        .lines()
        .map(str::trim)
        .find_map(|l| l.strip_prefix("http://localhost:8080/confirm/"))
        .unwrap_or_else(|| panic!("no confirmation link in {}", mail.text));
    browser
        .goto(&format!("{base}/confirm/{link}"))
        .await
        .unwrap();
    let page = wait_for_text(&browser, "Confirm your subscription").await;
    assert!(
        page.contains(EMAIL) && page.contains("Europe/London"),
        "{page}"
    );
    assert_eq!(
        listed_searches(&browser).await,
        ["asylum", "\"green card\" -lottery"]
    );
    screenshot(&browser, "02-confirm").await;
    assert_eq!(
        searches_of(&app).await,
        None,
        "opening the link is not confirming"
    );
    click_button(&browser, "", "Confirm", "You are subscribed").await;
    screenshot(&browser, "03-subscribed").await;
    let zoe = app
        .store
        .subscriber(EMAIL)
        .await
        .unwrap()
        .expect("subscribed");
    assert_eq!(zoe.queries, ["asylum", "\"green card\" -lottery"]);
    assert_eq!(
        (zoe.schedule.spec(), zoe.timezone.name()),
        ("weekly fri 17:00".to_string(), "Europe/London")
    );

    // 3. The manage page: add a search, remove another.
    click_link(&browser, "Your searches and schedule", "Your digests").await;
    assert_eq!(
        listed_searches(&browser).await,
        ["asylum", "\"green card\" -lottery"]
    );
    fill(&browser, "query", "H-1B OR \"specialty occupation\"").await;
    let page = click_button(&browser, "", "Add", "Search added.").await;
    assert!(page.contains("Search added. It matches news from now on."));
    assert_eq!(
        listed_searches(&browser).await,
        [
            "asylum",
            "\"green card\" -lottery",
            "H-1B OR \"specialty occupation\""
        ]
    );
    assert_eq!(searches_of(&app).await.unwrap().len(), 3);
    click_button(
        &browser,
        "//li[code[text()='asylum']]",
        "Remove",
        "Search removed.",
    )
    .await;
    let left = [
        "\"green card\" -lottery",
        "H-1B OR \"specialty occupation\"",
    ];
    assert_eq!(listed_searches(&browser).await, left);
    assert_eq!(searches_of(&app).await.unwrap(), left);
    screenshot(&browser, "04-manage").await;

    // 4. Unsubscribe: a page with one button, then gone.
    let page = click_link(
        &browser,
        "Unsubscribe from everything",
        "Stop all Tidings digests",
    )
    .await;
    assert!(
        page.contains(EMAIL) && page.contains("2 saved searches"),
        "{page}"
    );
    screenshot(&browser, "05-unsubscribe").await;
    assert!(
        searches_of(&app).await.is_some(),
        "the link alone changes nothing"
    );
    click_button(&browser, "", "Unsubscribe", "You are unsubscribed").await;
    screenshot(&browser, "06-unsubscribed").await;
    assert_eq!(searches_of(&app).await, None);
    assert_eq!(smtp.messages().len(), 1, "only the confirmation was mailed");

    browser.close().await.unwrap();
    drop(driver);
}

/// The manage page in the browser: a subscriber adds a webhook (its signing secret shown
/// once), their receiver refuses the first verification (it did not know the secret
/// yet), they ask for the code again, enter it, send a search to the webhook alone, and
/// the next digest arrives there, signed, and not by mail.
async fn a_subscriber_adds_a_webhook_confirms_it_and_the_next_digest_arrives_there() {
    use support::articles::{PUBLIC, Teaser, feed_table, public_server, rss};
    use support::channels::{Fault, WebhookReceiver};
    let (driver, chromium) = start_driver().unwrap_or_else(|why| {
        panic!("the browser test cannot run: {why} (apt-get install -y chromium chromium-driver)")
    });
    let dir = tempfile::tempdir().unwrap();
    let feed = public_server().await;
    let smtp = support::SmtpServer::start().await;
    let receiver = WebhookReceiver::start_on(PUBLIC.into(), "whsec_AAAA").await;
    let now = chrono::Utc::now();
    let teaser = |guid: &'static str, title: &'static str| Teaser {
        guid,
        title,
        link: format!("https://news.example/{guid}"),
        summary: "The agency's notice.",
    };
    feed.set("/feed.xml", rss(&[teaser("a1", "Asylum rule one")], now));
    let app = support::articles::app(
        dir.path(),
        "[channels]\nrequire_https = false",
        &feed_table("news", &feed.url("/feed.xml"), ""),
        smtp.port(),
    )
    .await;
    tidings::poll_feeds(&app, now, false).await.unwrap();
    support::subscribe(&app, EMAIL, "asylum", "immediate", now).await;
    let zoe = app.store.subscriber(EMAIL).await.unwrap().unwrap();
    let (tx, rx) = tokio::sync::watch::channel(app.clone());
    std::mem::forget(tx);
    let stop = tokio_util::sync::CancellationToken::new();
    let _stop = stop.clone().drop_guard();
    let addr = tidings::web::serve((Ipv4Addr::LOCALHOST, 0).into(), rx, stop)
        .await
        .unwrap();
    let manage = app.links.manage_url(zoe.id, EMAIL);
    let manage = manage.replace("http://localhost:8080", &format!("http://{addr}"));
    let browser = open_browser(&driver, &chromium).await;

    // 1. Add a webhook: the page shows its signing secret, once.
    browser.goto(&manage).await.unwrap();
    wait_for_text(&browser, "Where alerts go").await;
    receiver.fail_next(1, Fault::Status(401));
    fill(&browser, "dest-name", "crm").await;
    fill(&browser, "dest-url", &receiver.url("/hooks/tidings")).await;
    let page = click_button(&browser, "", "Add destination", "Destination added").await;
    assert!(
        page.contains("crm (webhook:") && page.contains("waiting for its code"),
        "{page}"
    );
    let secret = browser
        .find(Locator::Id("signing-secret"))
        .await
        .expect("the secret, shown once")
        .text()
        .await
        .unwrap();
    assert!(secret.starts_with("whsec_"), "{secret}");
    screenshot(&browser, "07-destination-added").await;
    browser.refresh().await.unwrap();
    let again = wait_for_text(&browser, "Where alerts go").await;
    assert!(!again.contains(&secret), "the secret is shown once");

    // 2. The receiver refused the first code (no secret yet); with the secret, the code
    // sent again arrives, signed.
    let deadline = Instant::now() + Duration::from_secs(10);
    while receiver.requests().is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(receiver.requests().len(), 1, "the first verification");
    assert!(receiver.accepted_events().is_empty());
    receiver.set_secret(&secret);
    click_button(
        &browser,
        "//li[strong[text()='crm']]",
        "Send the code again",
        "The code was sent again",
    )
    .await;
    receiver.wait_for(1, Duration::from_secs(10)).await;
    let verify = receiver.accepted_events().remove(0);
    assert_eq!(verify["type"], "tidings.verify");
    let code = verify["data"]["code"].as_str().unwrap().to_string();

    // 3. The code, then the search sent to the webhook alone.
    let channel = app.store.channels(Some(zoe.id)).await.unwrap().remove(0);
    fill(&browser, &format!("code-{}", channel.id), &code).await;
    click_button(&browser, "", "Confirm", "Destination confirmed").await;
    let email_box = browser
        .find(Locator::XPath(
            "//ul[@class='routes']//input[@name='email']",
        ))
        .await
        .expect("the search's email box");
    assert_eq!(
        email_box.prop("checked").await.unwrap().as_deref(),
        Some("true")
    );
    email_box.click().await.unwrap();
    let page = click_button(
        &browser,
        "//ul[@class='routes']",
        "Save",
        "Saved where that search goes",
    )
    .await;
    assert!(page.contains("crm") && page.contains("active"), "{page}");
    screenshot(&browser, "08-destinations").await;
    assert_eq!(
        app.store.searches_not_to_email(zoe.id).await.unwrap().len(),
        1
    );

    // 4. The next digest arrives at the webhook, not by mail.
    let later = now + chrono::Duration::minutes(20);
    feed.set(
        "/feed.xml",
        rss(
            &[
                teaser("a1", "Asylum rule one"),
                teaser("a2", "Asylum rule two"),
            ],
            later,
        ),
    );
    tidings::poll_feeds(&app, later, false).await.unwrap();
    let round = tidings::send_digests(&app, later, false).await.unwrap();
    assert_eq!((round.push.sent, round.delivery.sent), (1, 0), "{round:?}");
    let digest = receiver.accepted_events().pop().unwrap();
    assert_eq!(digest["type"], "tidings.digest");
    let titles: Vec<&str> = digest["data"]["searches"][0]["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["title"].as_str().unwrap())
        .collect();
    assert_eq!(titles, ["Asylum rule two"]);
    assert!(smtp.messages().is_empty(), "nothing by mail");

    browser.close().await.unwrap();
    drop(driver);
}

/// A reader whose browser prefers Spanish: the sign-up page, the confirmation mail, the
/// pages after it and the digests are in Spanish; a search that crosses languages finds
/// Spanish news for an English word; the manage page switches the language.
async fn a_spanish_reader_signs_up_and_manages_in_spanish_in_a_real_browser() {
    let (driver, chromium) = start_driver().unwrap_or_else(|why| {
        panic!("the browser test cannot run: {why} (apt-get install -y chromium chromium-driver)")
    });
    let dir = tempfile::tempdir().unwrap();
    let feeds = support::FeedServer::start().await;
    let smtp = support::SmtpServer::start().await;
    let (app, base, _stop) = start_site(dir.path(), &feeds, &smtp).await;
    let browser = open_browser_in(&driver, &chromium, "es-MX,es").await;
    const ANA: &str = "ana@example.org";

    // 1. The sign-up page, in Spanish from the browser's preference.
    browser.goto(&format!("{base}/")).await.unwrap();
    assert_eq!(browser.title().await.unwrap(), "Suscribirse · Tidings");
    let page = main_text(&browser).await;
    assert!(
        page.contains("Reciba las noticias de inmigración que coinciden con sus palabras"),
        "{page}"
    );
    fill(&browser, "email", ANA).await;
    fill(&browser, "queries", "asylum").await;
    fill(&browser, "frequency", "immediate").await;
    fill(&browser, "tz", "America/Mexico_City").await;
    let page = click_button(
        &browser,
        "",
        "Ver qué encontraría",
        "Lo que habrían encontrado en los últimos 7 días",
    )
    .await;
    assert!(page.contains("asylum: 2 noticias"), "{page}");
    screenshot(&browser, "07-registro-en-espanol").await;
    click_button(&browser, "", "Suscribirse", "Revise su correo").await;

    // 2. The confirmation mail and page, in Spanish.
    let received = smtp.wait_for(1, Duration::from_secs(10)).await;
    let mail = support::decode(&received[0]);
    assert_eq!(mail.subject, "Confirme su suscripción a Tidings");
    assert!(
        mail.text.contains("Alguien, probablemente usted"),
        "{}",
        mail.text
    );
    let link = mail
        .text
        .lines()
        .map(str::trim)
        .find_map(|l| l.strip_prefix("http://localhost:8080/confirm/"))
        .unwrap_or_else(|| panic!("no confirmation link in {}", mail.text));
    browser
        .goto(&format!("{base}/confirm/{link}"))
        .await
        .unwrap();
    wait_for_text(&browser, "Confirme su suscripción").await;
    click_button(&browser, "", "Confirmar", "Ya está suscrito").await;
    let ana = app
        .store
        .subscriber(ANA)
        .await
        .unwrap()
        .expect("subscribed");
    assert_eq!(ana.locale, "es");

    // 3. The manage page: the search crosses languages from a button.
    click_link(&browser, "Sus búsquedas y su horario", "Sus resúmenes").await;
    let page = click_button(
        &browser,
        "//li[code[text()='asylum']]",
        "También en otros idiomas",
        "también encuentra sus palabras en otros idiomas",
    )
    .await;
    assert!(page.contains("Solo como está escrita"), "{page}");
    screenshot(&browser, "08-gestion-en-espanol").await;

    // 4. Spanish news reaches the English word, in a Spanish digest.
    let now = chrono::Utc::now();
    feeds.set(
        "/news.xml",
        support::Route::feed(
            "application/rss+xml",
            format!(
                "<?xml version=\"1.0\"?><rss version=\"2.0\"><channel><title>Noticias</title>\
                 <item><guid>es1</guid><title>¿Qué cambia con la nueva regla de asilo?</title>\
                 <description>El gobierno publicó una norma que limita las solicitudes de asilo \
                 en la frontera sur; los niños y las familias señalan que será impugnada.</description>\
                 <pubDate>{}</pubDate></item></channel></rss>",
                now.to_rfc2822()
            ),
        ),
    );
    tidings::poll_feeds(&app, now, false).await.unwrap();
    tidings::send_digests(&app, now, false).await.unwrap();
    let received = smtp.wait_for(2, Duration::from_secs(10)).await;
    let digest = support::decode(&received[1]);
    assert_eq!(
        digest.subject, "Tidings: 1 nueva — asylum (1)",
        "{}",
        digest.text
    );
    assert!(
        digest
            .text
            .contains("1 noticia nueva para sus alertas de Tidings.")
            && digest
                .text
                .contains("¿Qué cambia con la nueva regla de asilo?")
            && digest.text.contains("Cancelar la suscripción: http"),
        "{}",
        digest.text
    );
    assert!(
        digest.html.contains("<html lang=\"es\">"),
        "{}",
        digest.html
    );

    // 5. Back to English from the manage page.
    browser
        .find(Locator::Css("input[name='locale'][value='en']"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    click_button(
        &browser,
        "//form[contains(@action, '/language')]",
        "Guardar",
        "Language saved.",
    )
    .await;
    assert_eq!(browser.title().await.unwrap(), "Your digests · Tidings");
    assert_eq!(
        app.store.subscriber(ANA).await.unwrap().unwrap().locale,
        "en"
    );

    browser.close().await.unwrap();
    drop(driver);
}
