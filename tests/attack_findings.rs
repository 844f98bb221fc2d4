//! Attacks on the issue 12 fixes with inputs the other tests do not try. Each test states
//! a promise of README.md / DESIGN.md and the input that broke it when it was written;
//! all failed then except `an_idle_keep_alive_connection_does_not_hold_its_place_forever`,
//! an attack that held and is kept as a guard. Loopback only: every server is on 127.0.0.0/8, and the fetch guard's
//! decisions about other addresses are checked as functions.

mod support;

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use tidings::App;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

// ---------------------------------------------------------------------------------------
// The subscriber pages, in process
// ---------------------------------------------------------------------------------------

struct Site {
    app: App,
    config: std::path::PathBuf,
    addr: SocketAddr,
    base: String,
    client: reqwest::Client,
    _dir: tempfile::TempDir,
    _stop: tokio_util::sync::DropGuard,
}

impl Site {
    async fn start(admin: Option<&str>, smtp_port: u16, web: &str) -> Site {
        Site::start_on("127.0.0.1:0", admin, smtp_port, web).await
    }

    /// A site whose pages listen on `listen`.
    async fn start_on(listen: &str, admin: Option<&str>, smtp_port: u16, web: &str) -> Site {
        let dir = tempfile::tempdir().unwrap();
        let config = support::write_config_with(dir.path(), &[], smtp_port, "", web);
        let config_path = config.path.clone();
        let mut app = App::open(config).await.unwrap();
        app.admin_token = admin.map(std::sync::Arc::from);
        let (tx, rx) = tokio::sync::watch::channel(app.clone());
        std::mem::forget(tx);
        let stop = tokio_util::sync::CancellationToken::new();
        let addr = tidings::web::serve(listen.parse().unwrap(), rx, stop.clone())
            .await
            .unwrap();
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(10))
            .no_proxy()
            .build()
            .unwrap();
        Site {
            app,
            config: config_path,
            addr,
            base: format!("http://127.0.0.1:{}", addr.port()),
            client,
            _dir: dir,
            _stop: stop.drop_guard(),
        }
    }

    async fn form_csrf(&self) -> String {
        let page = self.client.get(&self.base).send().await.unwrap();
        let page = page.text().await.unwrap();
        let marker = "name=\"csrf\" value=\"";
        let start = page.find(marker).unwrap() + marker.len();
        page[start..].split('"').next().unwrap().to_string()
    }

    /// A sign-up posted through a proxy on this host, with these `X-Forwarded-For` header
    /// lines, in order.
    async fn sign_up(&self, csrf: &str, email: &str, forwarded: &[&str]) -> StatusCode {
        let mut request = self.client.post(format!("{}/subscribe", self.base)).form(&[
            ("csrf", csrf),
            ("email", email),
            ("queries", "asylum"),
            ("frequency", "daily"),
            ("tz", "UTC"),
            ("action", "subscribe"),
        ]);
        for value in forwarded {
            request = request.header("x-forwarded-for", *value);
        }
        request.send().await.unwrap().status()
    }

    async fn admin(&self, password: &str, forwarded: &[&str]) -> StatusCode {
        let mut request = self
            .client
            .get(format!("{}/admin", self.base))
            .basic_auth("admin", Some(password));
        for value in forwarded {
            request = request.header("x-forwarded-for", *value);
        }
        request.send().await.unwrap().status()
    }
}

/// README: "one client (the `X-Forwarded-For` of a proxy on the same host) at most 10
/// sign-ups an hour". A proxy that adds its own `X-Forwarded-For` line below the one the
/// client sent (HAProxy's `option forwardfor`, Apache `RequestHeader add`, Envoy with
/// `append`) names the real client in the LAST line; RFC 9110 §5.3 makes the two lines one
/// list, whose last entry is the proxy's. Tidings reads only the first line, which the
/// client wrote, so one client posting a new made-up address each time signs up without
/// limit (and mails 3 confirmations a day to as many victims as it likes).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_cannot_pick_its_own_identity_with_an_extra_forwarded_line() {
    let smtp = support::SmtpServer::start().await;
    let site = Site::start(None, smtp.port(), "").await;
    let csrf = site.form_csrf().await;
    let mut refused = None;
    for n in 1..=15 {
        let spoofed = format!("203.0.113.{n}");
        let status = site
            .sign_up(
                &csrf,
                &format!("victim{n}@example.org"),
                // The client's own line, then the proxy's.
                &[&spoofed, "198.51.100.77"],
            )
            .await;
        if status == StatusCode::TOO_MANY_REQUESTS {
            refused = Some(n);
            break;
        }
        assert_eq!(status, StatusCode::OK, "sign-up {n}");
    }
    assert_eq!(
        refused,
        Some(11),
        "the client 198.51.100.77 (named by the proxy) made 15 sign-ups within the hour"
    );
}

/// The same header trick walks around the `/admin` password throttle: every guess comes
/// from a "new client".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_guessing_cannot_pick_its_own_identity_with_an_extra_forwarded_line() {
    let site = Site::start(Some("correct horse battery staple"), 25, "").await;
    let mut statuses = Vec::new();
    for n in 1..=30 {
        let spoofed = format!("203.0.113.{n}");
        statuses.push(
            site.admin(&format!("guess {n}"), &[&spoofed, "198.51.100.77"])
                .await,
        );
    }
    let throttled = statuses
        .iter()
        .filter(|s| **s == StatusCode::TOO_MANY_REQUESTS)
        .count();
    assert!(
        throttled >= 20,
        "30 wrong passwords from 198.51.100.77, {throttled} slowed down: {statuses:?}"
    );
}

/// The listeners count an IPv6 client by its /64 ("one household or host gets a whole
/// /64"), but the sign-up limit and the `/admin` throttle count the full address, so one
/// host with the /64 every ISP hands out has 2^64 identities: ten sign-ups and ten password
/// guesses per address.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_ipv6_slash_64_is_one_client_for_the_admin_throttle() {
    let site = Site::start(Some("correct horse battery staple"), 25, "").await;
    let mut statuses = Vec::new();
    for n in 1..=30 {
        let from = format!("2001:db8:1:2::{n:x}");
        statuses.push(site.admin(&format!("guess {n}"), &[&from]).await);
    }
    let throttled = statuses
        .iter()
        .filter(|s| **s == StatusCode::TOO_MANY_REQUESTS)
        .count();
    assert!(
        throttled >= 20,
        "30 wrong passwords from one /64, {throttled} slowed down: {statuses:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_ipv6_slash_64_is_one_client_for_the_sign_up_limit() {
    let smtp = support::SmtpServer::start().await;
    let site = Site::start(None, smtp.port(), "").await;
    let csrf = site.form_csrf().await;
    let mut refused = None;
    for n in 1..=15 {
        let from = format!("2001:db8:1:2::{n:x}");
        let status = site
            .sign_up(&csrf, &format!("victim{n}@example.org"), &[&from])
            .await;
        if status == StatusCode::TOO_MANY_REQUESTS {
            refused = Some(n);
            break;
        }
    }
    assert_eq!(
        refused,
        Some(11),
        "15 sign-ups from one /64 within the hour"
    );
}

/// `listen = "[::]:8080"` (dual stack) is a natural setting; a proxy on this host that
/// connects over IPv4 then arrives as `::ffff:127.0.0.1`, which `is_loopback()` does not
/// recognise, so its `X-Forwarded-For` is ignored and every visitor behind it is one
/// client: ten sign-ups an hour for the whole site, and ten wrong passwords lock the admin
/// out. (Bound here to the mapped loopback address only, which is what `[::]` shows for a
/// local IPv4 connection.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_reaching_a_dual_stack_listener_over_ipv4_is_still_a_proxy() {
    let smtp = support::SmtpServer::start().await;
    let site = Site::start_on("[::ffff:127.0.0.1]:0", None, smtp.port(), "").await;
    let csrf = site.form_csrf().await;
    let mut statuses = Vec::new();
    for n in 1..=12 {
        let visitor = format!("198.51.100.{n}");
        statuses.push(
            site.sign_up(&csrf, &format!("v{n}@example.org"), &[&visitor])
                .await,
        );
    }
    assert!(
        statuses.iter().all(|s| *s == StatusCode::OK),
        "twelve visitors behind the proxy, one sign-up each: {statuses:?}"
    );
}

// ---------------------------------------------------------------------------------------
// Slow clients on the listener
// ---------------------------------------------------------------------------------------

/// Whether a fresh connection from 127.0.0.1 is served: with `max_connections_per_client
/// = 1`, it is closed at once while another connection of ours is still held.
async fn served(addr: SocketAddr) -> bool {
    let Ok(mut stream) = tokio::net::TcpStream::connect(addr).await else {
        return false;
    };
    if stream
        .write_all(b"GET /style.css HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .is_err()
    {
        return false;
    }
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer)).await;
    answer.starts_with(b"HTTP/1.1 200")
}

const ONE_PER_CLIENT: &str = "[web]\nheader_timeout = \"1s\"\nrequest_timeout = \"2s\"\n\
                              max_connections_per_client = 1\n";

/// README: "header_timeout: a request's headers must arrive within this long". A
/// keep-alive connection that finished one request and then sends nothing must not keep
/// its place: otherwise one idle socket per slot keeps the listener full with no traffic
/// at all. (This attack held: hyper's header deadline also runs between requests.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_keep_alive_connection_does_not_hold_its_place_forever() {
    let site = Site::start(None, 25, ONE_PER_CLIENT).await;
    assert!(served(site.addr).await, "a normal request is served");

    let mut idle = tokio::net::TcpStream::connect(site.addr).await.unwrap();
    idle.write_all(b"GET /style.css HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 65536];
    let n = tokio::time::timeout(Duration::from_secs(5), idle.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
    // Now silent, well past the header deadline (1 s) and the request timeout (2 s).
    tokio::time::sleep(Duration::from_secs(6)).await;
    let still_open = tokio::time::timeout(Duration::from_millis(200), idle.read(&mut buf))
        .await
        .is_err();
    assert!(
        served(site.addr).await,
        "after 6 s of silence the idle connection still holds the client's only place \
         (idle connection still open: {still_open})"
    );
}

/// A client that sends requests and never reads the answers: once the socket buffers are
/// full the server waits on the write with no deadline at all (the request timeout covers
/// the handler, the header deadline only reading), so the connection is held for good.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_reads_does_not_hold_its_place_forever() {
    let site = Site::start(None, 25, ONE_PER_CLIENT).await;
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let stream = socket.connect(site.addr).await.unwrap();
    let (mut reader, mut writer) = stream.into_split();
    // Pipelined requests for the sign-up page (several KiB each), written from a task so
    // the test goes on when the server stops reading them; never read.
    let writing = tokio::spawn(async move {
        let request = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";
        for _ in 0..5000 {
            if writer.write_all(request).await.is_err() {
                break;
            }
        }
        writer
    });
    tokio::time::sleep(Duration::from_secs(8)).await;
    let ok = served(site.addr).await;
    writing.abort();
    let mut one = [0u8; 1];
    let _ = tokio::time::timeout(Duration::from_millis(10), reader.read(&mut one)).await;
    assert!(
        ok,
        "8 s after the client stopped reading (header deadline 1 s, request timeout 2 s) \
         its connection still holds the client's only place"
    );
}

// ---------------------------------------------------------------------------------------
// The fetch guard, as functions (no connection leaves loopback)
// ---------------------------------------------------------------------------------------

/// README: cloud metadata is refused unless `allow_metadata = true`. Google Compute
/// Engine's metadata server also answers on fd20:ce::254 (IPv6 and dual-stack VMs), and
/// Tencent Cloud's on 169.254.0.23 (metadata.tencentyun.com); they are classed as a
/// private and a link-local address, which `allow_private_networks = true` (or a feed URL
/// naming such an address) lets a fetch reach without `allow_metadata`.
#[test]
fn cloud_metadata_endpoints_outside_the_listed_ranges_are_metadata() {
    use tidings::fetch::{AddressClass, classify_address};
    let wrong: Vec<String> = [
        ("GCE metadata over IPv6", "fd20:ce::254"),
        ("Tencent Cloud metadata", "169.254.0.23"),
    ]
    .into_iter()
    .filter_map(|(case, ip)| {
        let ip: IpAddr = ip.parse().unwrap();
        let class = classify_address(ip);
        (class != AddressClass::Metadata).then(|| format!("{case} {ip}: {class:?}"))
    })
    .collect();
    assert!(wrong.is_empty(), "not classed as metadata: {wrong:?}");
}

// ---------------------------------------------------------------------------------------
// Mail rate limit across processes
// ---------------------------------------------------------------------------------------

/// README: messages go out "at most `rate_limit` per minute", and a second process (a
/// `tidings digest` one-shot from cron beside the daemon, or a second daemon on the same
/// database) is expected: claims keep it from sending a message twice. The pacer is per
/// process, though, so two processes send twice the rate: a relay that allows 20 a minute
/// starts refusing or throttling. Two real processes on one SQLite file, 40 messages
/// queued, `rate_limit = 120` (one per 500 ms): count what reaches the server in the
/// first 5 s. Fixed (issue 14): the pacer's slots are the database's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_together_keep_the_mail_rate_limit() {
    let smtp = support::SmtpServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = support::write_config_with(dir.path(), &[], smtp.port(), "rate_limit = 120", "");
    {
        let app = App::open(config.clone()).await.unwrap();
        let now = chrono::Utc::now();
        for n in 0..40 {
            app.store
                .queue_message(
                    &format!("r{n}@example.org"),
                    "hello",
                    "text",
                    "<p>html</p>",
                    "tidings.test",
                    now,
                )
                .await
                .unwrap();
        }
    }
    let spawn = || {
        std::process::Command::new(env!("CARGO_BIN_EXE_tidings"))
            .args(["digest", "--config"])
            .arg(&config.path)
            .env_remove("TIDINGS_CONFIG")
            .env_remove("NOTIFY_SOCKET")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap()
    };
    let mut first = spawn();
    let mut second = spawn();

    // Arrival times, from the first message on.
    let mut arrivals: Vec<Instant> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        let count = smtp.messages().len();
        while arrivals.len() < count {
            arrivals.push(Instant::now());
        }
        if let Some(start) = arrivals.first()
            && start.elapsed() > Duration::from_secs(6)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = first.kill();
    let _ = second.kill();
    let _ = first.wait();
    let _ = second.wait();

    let start = arrivals[0];
    let in_first_5s = arrivals
        .iter()
        .filter(|t| t.duration_since(start) < Duration::from_secs(5))
        .count();
    // No message twice (the claims hold), but the rate is the sum of both processes'.
    let mut recipients: Vec<Vec<String>> = smtp.messages().into_iter().map(|m| m.rcpt_to).collect();
    let all = recipients.len();
    recipients.sort();
    recipients.dedup();
    assert_eq!(recipients.len(), all, "a message was sent twice");
    assert!(
        in_first_5s <= 11,
        "rate_limit = 120 per minute, {in_first_5s} messages in the first 5 s"
    );
    assert!(
        in_first_5s >= 8,
        "the limit, not less: {in_first_5s} in 5 s"
    );
}

// ---------------------------------------------------------------------------------------
// Sign-up limits under concurrency
// ---------------------------------------------------------------------------------------

/// README: "an address gets at most 3 confirmation mails a day". The count is read in one
/// step and the sign-up written in a later one, so sign-ups posted at the same moment all
/// see "none yet": ten at once (within one client's ten an hour) mail the victim ten times.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simultaneous_sign_ups_for_one_address_mail_it_three_times_at_most() {
    let smtp = support::SmtpServer::start().await;
    let site = std::sync::Arc::new(Site::start(None, smtp.port(), "").await);
    let csrf = site.form_csrf().await;
    let posts: Vec<_> = (0..10)
        .map(|_| {
            let (site, csrf) = (site.clone(), csrf.clone());
            tokio::spawn(async move { site.sign_up(&csrf, "victim@x.org", &[]).await })
        })
        .collect();
    for post in posts {
        assert_eq!(post.await.unwrap(), StatusCode::OK);
    }
    smtp.wait_for(10, Duration::from_secs(5)).await;
    let to_victim = smtp
        .messages()
        .iter()
        .filter(|m| m.rcpt_to == ["victim@x.org"])
        .count();
    assert!(
        to_victim <= 3,
        "{to_victim} confirmation mails to one address in one day"
    );
}

/// README: "one client … at most 10 sign-ups an hour". The same read-then-write race:
/// thirty posted at once from one client are all accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simultaneous_sign_ups_from_one_client_are_ten_at_most() {
    let smtp = support::SmtpServer::start().await;
    let site = std::sync::Arc::new(Site::start(None, smtp.port(), "").await);
    let csrf = site.form_csrf().await;
    let posts: Vec<_> = (0..30)
        .map(|n| {
            let (site, csrf) = (site.clone(), csrf.clone());
            tokio::spawn(
                async move { site.sign_up(&csrf, &format!("v{n}@example.org"), &[]).await },
            )
        })
        .collect();
    let mut accepted = 0;
    for post in posts {
        if post.await.unwrap() == StatusCode::OK {
            accepted += 1;
        }
    }
    assert!(
        accepted <= 10,
        "{accepted} sign-ups from one client accepted at once"
    );
}

// ---------------------------------------------------------------------------------------
// What the operator's terminal is sent
// ---------------------------------------------------------------------------------------

/// Runs the real binary with `args` against `config`; its stdout.
fn tidings(config: &std::path::Path, args: &[&str]) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tidings"))
        .args(args)
        .arg("--config")
        .arg(config)
        .env_remove("TIDINGS_CONFIG")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "tidings {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Anyone can sign up and confirm their own address, then add searches on their manage
/// page. A search is stored as typed, control characters and line breaks included (the
/// query language reads them as spaces), and `tidings subscriber list` prints it raw: an
/// anonymous visitor writes escape sequences to the operator's terminal (set its title,
/// rewrite the lines above, OSC 52 write the clipboard) and forges lines of the listing.
/// Feed text has control characters removed at ingest; text from the pages should too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_search_from_the_pages_cannot_write_escape_sequences_to_the_operators_terminal() {
    let site = Site::start(None, 25, "").await;
    let now = chrono::Utc::now();
    support::subscribe(&site.app, "eve@example.org", "asylum", "daily", now).await;
    let eve = site
        .app
        .store
        .subscriber("eve@example.org")
        .await
        .unwrap()
        .unwrap();
    let manage = url::Url::parse(&site.app.links.manage_url(eve.id, &eve.email))
        .unwrap()
        .path()
        .to_string();
    let csrf = site.app.links.csrf_token(eve.id, &eve.email);
    let hostile = "TPS \u{1b}]0;owned\u{7}\u{1b}[1A\u{1b}[2K\nmallory@example.org (immediate, UTC)";
    let response = site
        .client
        .post(format!("{}{manage}/add", site.base))
        .form(&[("csrf", csrf.as_str()), ("query", hostile)])
        .send()
        .await
        .unwrap();
    // Refused with a reason (the search names the control character), or stored clean.
    let status = response.status();
    let page = response.text().await.unwrap();
    assert!(
        status.is_redirection() || page.contains("control character"),
        "{status}: {page}"
    );
    let listing = tidings(&site.config, &["subscriber", "list"]);
    let controls: Vec<char> = listing
        .chars()
        .filter(|c| c.is_control() && *c != '\n')
        .collect();
    assert!(
        controls.is_empty() && !listing.lines().any(|l| l.starts_with("mallory@")),
        "`tidings subscriber list` printed control characters {controls:?} / a forged line:\n{listing:?}"
    );
}

/// A mail server's answer is stored as the message's last error and printed raw by
/// `tidings outbox`: a relay (or whatever answers on its port) writes escape sequences to
/// the operator's terminal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mail_servers_answer_cannot_write_escape_sequences_to_the_operators_terminal() {
    let smtp = support::SmtpServer::start().await;
    let site = Site::start(None, smtp.port(), "").await;
    let now = chrono::Utc::now();
    site.app
        .store
        .queue_message(
            "ana@example.org",
            "hello",
            "text",
            "<p>html</p>",
            "tidings.test",
            now,
        )
        .await
        .unwrap();
    smtp.fail_next(1, 550, "no such user \u{1b}]0;owned\u{7}\u{1b}[2J");
    tidings::pipeline::send_mail(&site.app, now).await.unwrap();
    let listing = tidings(&site.config, &["outbox", "--all"]);
    assert!(listing.contains("no such user"), "{listing}");
    let controls: Vec<char> = listing
        .chars()
        .filter(|c| c.is_control() && *c != '\n')
        .collect();
    assert!(
        controls.is_empty(),
        "`tidings outbox` printed control characters {controls:?}:\n{listing:?}"
    );
}
