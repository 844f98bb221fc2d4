//! Test servers for Tidings integration tests.
//!
//! [`FeedServer`] is a real HTTP server (axum) serving scripted feeds with
//! conditional-GET support; [`SmtpServer`] is a small hand-written ESMTP
//! server that records what it receives and can inject failures. Both listen
//! on `127.0.0.1` with an ephemeral port, run as tasks on the current tokio
//! runtime and stop when dropped.

#![allow(dead_code)]

use std::collections::{HashMap, VecDeque};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::header::{
    CONTENT_LENGTH, CONTENT_TYPE, ETAG, IF_MODIFIED_SINCE, IF_NONE_MATCH, LAST_MODIFIED,
};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio::task::{JoinHandle, JoinSet};

pub mod articles;
pub mod channels;
pub mod postgres;

/// `Last-Modified` value used by [`Route::feed`].
pub const FEED_LAST_MODIFIED: &str = "Mon, 01 Jan 2024 00:00:00 GMT";

/// The bytes of `tests/fixtures/NAME`.
pub fn fixture(name: &str) -> Vec<u8> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("fixture {}: {e}", path.display()))
}

/// A UTC time written in RFC 3339, for tests that pass the clock explicitly.
pub fn at(rfc3339: &str) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::parse_from_rfc3339(rfc3339)
        .expect("RFC 3339 time")
        .with_timezone(&chrono::Utc)
}

// ---------------------------------------------------------------------------
// Tidings: config, subscribers, received mail
// ---------------------------------------------------------------------------

/// Writes a config.toml into `dir` that polls `feeds` (id, url) and mails through
/// `smtp_port` on loopback, and loads it.
pub fn write_config(
    dir: &std::path::Path,
    feeds: &[(&str, String)],
    smtp_port: u16,
) -> tidings::config::Config {
    write_config_with(dir, feeds, smtp_port, "", "")
}

/// [`write_config`] with extra `[mail]` keys (`mail_keys`) and extra tables (`tables`,
/// e.g. a `[web]` section). The admin listener is on an ephemeral port unless `tables`
/// has a `[service]` table.
pub fn write_config_with(
    dir: &std::path::Path,
    feeds: &[(&str, String)],
    smtp_port: u16,
    mail_keys: &str,
    tables: &str,
) -> tidings::config::Config {
    // Tests run side by side: the admin listener takes any free port unless a test
    // sets its own [service] table.
    let service = if tables.contains("[service]") {
        ""
    } else {
        "[service]\nadmin_listen = \"127.0.0.1:0\"\n"
    };
    // Likewise the subscriber pages.
    let tables = if tables.contains("[web]") {
        tables.replacen("[web]\n", "[web]\nlisten = \"127.0.0.1:0\"\n", 1)
    } else {
        format!("[web]\nlisten = \"127.0.0.1:0\"\n{tables}")
    };
    let mut text = format!(
        r#"
database = "data/tidings.db"
[poll]
initial_backlog = "24h"
timeout = "5s"
[digest]
daily_at = "08:00"
timezone = "America/New_York"
[mail]
from = "Tidings <alerts@tidings.test>"
transport = "smtp"
send_timeout = "5s"
{mail_keys}
[mail.smtp]
host = "127.0.0.1"
port = {smtp_port}
tls = "none"
{service}{tables}
"#
    );
    for (id, url) in feeds {
        text.push_str(&format!(
            "\n[[feeds]]\nid = \"{id}\"\nname = \"{id} feed\"\nurl = \"{url}\"\n"
        ));
    }
    let path = dir.join("config.toml");
    std::fs::write(&path, text).unwrap();
    tidings::config::Config::load(&path).unwrap()
}

/// The ids of the active feeds in `feeds status --json` output, sorted.
pub fn active_feed_ids(status_json: &str) -> Vec<String> {
    let json: serde_json::Value = serde_json::from_str(status_json).unwrap();
    let mut ids: Vec<String> = json
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["active"] == true)
        .map(|f| f["id"].as_str().unwrap().to_string())
        .collect();
    ids.sort();
    ids
}

/// Subscribes `email` to `query` on `schedule` ("immediate", "daily 07:30", …) in the
/// config's default time zone.
pub async fn subscribe(
    app: &tidings::App,
    email: &str,
    query: &str,
    schedule: &str,
    now: chrono::DateTime<chrono::Utc>,
) {
    subscribe_in(app, email, query, schedule, app.config.digest.timezone, now).await;
}

/// [`subscribe`] in time zone `tz`.
pub async fn subscribe_in(
    app: &tidings::App,
    email: &str,
    query: &str,
    schedule: &str,
    tz: chrono_tz::Tz,
    now: chrono::DateTime<chrono::Utc>,
) {
    let schedule = tidings::digest::Schedule::parse(schedule, app.config.digest.daily_at).unwrap();
    assert!(
        app.store
            .add_subscription(email, query, schedule, tz, now)
            .await
            .unwrap()
    );
}

/// A received message, decoded with a real MIME parser.
pub struct Mail {
    pub to: String,
    pub subject: String,
    pub text: String,
    pub html: String,
    /// Without angle brackets.
    pub message_id: String,
    pub content_type: String,
    /// Every header as (name, unfolded raw value), in order.
    pub headers: Vec<(String, String)>,
}

impl Mail {
    /// The first header called `name` (any case), unfolded and trimmed.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

pub fn decode(received: &Received) -> Mail {
    let message = mail_parser::MessageParser::default()
        .parse(&received.data)
        .expect("a MIME message");
    let raw = |name: &str| {
        message
            .header_raw(name)
            .unwrap_or_default()
            .split(['\r', '\n'])
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect::<Vec<_>>()
            .join(" ")
            .trim()
            .to_string()
    };
    let headers = message
        .headers()
        .iter()
        .map(|h| {
            let name = h.name().to_string();
            let value = raw(&name);
            (name, value)
        })
        .collect();
    Mail {
        to: received.rcpt_to.join(","),
        subject: message.subject().unwrap_or_default().to_string(),
        text: message.body_text(0).unwrap_or_default().into_owned(),
        html: message.body_html(0).unwrap_or_default().into_owned(),
        message_id: message.message_id().unwrap_or_default().to_string(),
        content_type: raw("Content-Type"),
        headers,
    }
}

/// Locks a mutex, ignoring poisoning (a panicking test must not hide others' results).
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

// ---------------------------------------------------------------------------
// The daemon
// ---------------------------------------------------------------------------

/// The `tidings` binary. Integration tests have it (also those with `harness = false`,
/// which are not built with `cfg(test)`); the examples that share this file do not.
pub fn tidings_bin() -> &'static str {
    match option_env!("CARGO_BIN_EXE_tidings") {
        Some(bin) => bin,
        None => panic!("only integration tests have the tidings binary"),
    }
}

/// A running `tidings run` whose stderr is collected as it is written.
pub struct Daemon {
    child: std::process::Child,
    log: Arc<Mutex<String>>,
}

impl Daemon {
    pub fn start(config: &std::path::Path, extra_args: &[&str], env: &[(&str, &str)]) -> Daemon {
        Daemon::start_in(
            std::process::Command::new(tidings_bin()),
            config,
            extra_args,
            env,
        )
    }

    /// [`Daemon::start`] with at most `nofile` open files (`ulimit -n`).
    pub fn start_with_open_files(config: &std::path::Path, nofile: u32) -> Daemon {
        let mut shell = std::process::Command::new("sh");
        shell
            .arg("-c")
            .arg(format!("ulimit -n {nofile} && exec \"$0\" \"$@\""))
            .arg(tidings_bin());
        Daemon::start_in(shell, config, &[], &[])
    }

    fn start_in(
        mut command: std::process::Command,
        config: &std::path::Path,
        extra_args: &[&str],
        env: &[(&str, &str)],
    ) -> Daemon {
        command
            .args(extra_args)
            .args(["run", "--config"])
            .arg(config)
            .env_remove("TIDINGS_CONFIG")
            .env_remove("NOTIFY_SOCKET")
            .env("TIDINGS_LOG", "info")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped());
        for (k, v) in env {
            command.env(k, v);
        }
        let mut child = command.spawn().expect("start tidings run");
        let log = Arc::new(Mutex::new(String::new()));
        let stderr = child.stderr.take().unwrap();
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in
                std::io::BufRead::lines(std::io::BufReader::new(stderr)).map_while(Result::ok)
            {
                let mut log = sink.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        });
        Daemon { child, log }
    }

    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits until a log line satisfies `pred`; returns that line.
    pub async fn wait_log(&self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        let started = std::time::Instant::now();
        loop {
            if let Some(line) = self.log().lines().find(|l| pred(l)) {
                return line.to_string();
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "no log line {what} within 30 s; log:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The admin listener's address, from its startup log line.
    pub async fn admin(&self) -> String {
        let line = self
            .wait_log("admin listener", |l| l.contains("admin listener"))
            .await;
        let addr = line
            .split_whitespace()
            .find_map(|w| w.strip_prefix("address="))
            .unwrap_or_else(|| panic!("no address in {line:?}"));
        format!("http://{addr}")
    }

    pub fn signal(&self, name: &str) {
        let sent = std::process::Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(sent.success());
    }

    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// Waits for the process to exit; returns its status and how long that took.
    pub async fn wait_exit(&mut self, limit: Duration) -> (std::process::ExitStatus, Duration) {
        let started = std::time::Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return (status, started.elapsed());
            }
            if started.elapsed() > limit {
                let _ = self.child.kill();
                panic!("daemon still running after {limit:?}; log:\n{}", self.log());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Daemon {
    /// The address a listener logged at start ("web listener", "admin listener").
    pub async fn address(&self, listener: &str) -> SocketAddr {
        let line = self
            .wait_log(listener, |l| l.contains(listener) && l.contains("address="))
            .await;
        line.split_whitespace()
            .find_map(|w| w.strip_prefix("address="))
            .unwrap_or_else(|| panic!("no address in {line:?}"))
            .parse()
            .unwrap()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------
// FeedServer
// ---------------------------------------------------------------------------

/// What the [`FeedServer`] answers for one path.
#[derive(Clone, Debug)]
pub struct Route {
    /// Status code of a full (non-304) answer.
    pub status: u16,
    /// Extra response headers, sent in order.
    pub headers: Vec<(String, String)>,
    /// Response body (omitted on 304).
    pub body: Vec<u8>,
    /// `ETag` to send and to match `If-None-Match` against.
    pub etag: Option<String>,
    /// `Last-Modified` to send and to match `If-Modified-Since` against.
    pub last_modified: Option<String>,
    /// Wait before answering.
    pub delay: Duration,
    /// When set, the body is sent one byte at a time with this pause between bytes.
    pub drip: Option<Duration>,
}

impl Route {
    /// 200 with the given content type and body, an `ETag` derived from the body
    /// (quoted, e.g. `"\"<hash>\""`) and [`FEED_LAST_MODIFIED`]; answers
    /// `If-None-Match` / `If-Modified-Since` with 304 (no body).
    pub fn feed(content_type: &str, body: impl Into<Vec<u8>>) -> Route {
        let body = body.into();
        let mut hasher = DefaultHasher::new();
        body.hash(&mut hasher);
        Route {
            status: 200,
            headers: vec![(CONTENT_TYPE.to_string(), content_type.to_owned())],
            etag: Some(format!("\"{:016x}\"", hasher.finish())),
            last_modified: Some(FEED_LAST_MODIFIED.to_owned()),
            body,
            delay: Duration::ZERO,
            drip: None,
        }
    }

    /// Plain `code` with `body`, no validators (never answered with 304).
    pub fn status(code: u16, body: impl Into<Vec<u8>>) -> Route {
        Route {
            status: code,
            headers: Vec::new(),
            body: body.into(),
            etag: None,
            last_modified: None,
            delay: Duration::ZERO,
            drip: None,
        }
    }

    /// Adds a response header (appended; existing headers are kept).
    pub fn header(mut self, name: &str, value: &str) -> Route {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    /// Waits `d` before answering.
    pub fn delay(mut self, d: Duration) -> Route {
        self.delay = d;
        self
    }

    /// Sends the body one byte every `pause` (a server that drips).
    pub fn drip(mut self, pause: Duration) -> Route {
        self.drip = Some(pause);
        self
    }

    /// Replaces the validator: a server that keeps its old ETag while the body changes
    /// answers 304 forever to a client that sends the old one (a stale-304 server).
    pub fn etag(mut self, etag: &str) -> Route {
        self.etag = Some(etag.to_owned());
        self
    }

    /// Whether the request's validators match, so the answer is 304.
    fn is_not_modified(&self, request: &HeaderMap) -> bool {
        if !(200..300).contains(&self.status) {
            return false;
        }
        let mut if_none_match = request.get_all(IF_NONE_MATCH).iter().peekable();
        if if_none_match.peek().is_some() {
            return if_none_match
                .filter_map(|value| value.to_str().ok())
                .flat_map(|value| value.split(','))
                .map(str::trim)
                .any(|tag| {
                    tag == "*"
                        || self
                            .etag
                            .as_deref()
                            .is_some_and(|etag| weak(tag) == weak(etag))
                });
        }
        match (request.get(IF_MODIFIED_SINCE), &self.last_modified) {
            (Some(since), Some(modified)) => since.as_bytes() == modified.as_bytes(),
            _ => false,
        }
    }

    /// Builds the response; invalid status codes or headers give a 500.
    fn into_response(self, not_modified: bool) -> Response {
        let status = if not_modified { 304 } else { self.status };
        let mut builder = Response::builder().status(status);
        for (name, value) in &self.headers {
            let entity_header = name.eq_ignore_ascii_case(CONTENT_TYPE.as_str())
                || name.eq_ignore_ascii_case(CONTENT_LENGTH.as_str());
            if !(not_modified && entity_header) {
                builder = builder.header(name.as_str(), value.as_str());
            }
        }
        if let Some(etag) = &self.etag {
            builder = builder.header(ETAG, etag.as_str());
        }
        if let Some(modified) = &self.last_modified {
            builder = builder.header(LAST_MODIFIED, modified.as_str());
        }
        let body = if not_modified {
            Body::empty()
        } else if let Some(pause) = self.drip {
            let bytes = self.body;
            Body::from_stream(futures_util::stream::unfold(0usize, move |i| {
                let byte = bytes.get(i).copied();
                async move {
                    let byte = byte?;
                    tokio::time::sleep(pause).await;
                    Some((Ok::<_, io::Error>(vec![byte]), i + 1))
                }
            }))
        } else {
            Body::from(self.body)
        };
        builder.body(body).unwrap_or_else(|err| {
            let message = format!("invalid test Route: {err}");
            (StatusCode::INTERNAL_SERVER_ERROR, message).into_response()
        })
    }
}

/// Strips the weak-validator prefix for weak `ETag` comparison.
fn weak(tag: &str) -> &str {
    tag.strip_prefix("W/").unwrap_or(tag)
}

/// Normalises a path argument to the form requests are keyed by:
/// a leading `/`, no query string or fragment.
fn route_key(path: &str) -> String {
    let path = path.split(['?', '#']).next().unwrap_or_default();
    format!("/{}", path.strip_prefix('/').unwrap_or(path))
}

/// Requests seen for one path.
#[derive(Default)]
struct PathLog {
    requests: Vec<Vec<(String, String)>>,
    not_modified: usize,
}

/// One request to a [`FeedServer`], as it saw it: what, who, and when it was served.
#[derive(Clone, Debug)]
pub struct Fetch {
    pub path: String,
    /// The `User-Agent` header (empty without one): which client asked.
    pub user_agent: String,
    /// When the request arrived.
    pub start: SystemTime,
    /// When its answer was handed to the connection, or the request was dropped (the
    /// client went away during a delay); `None` while it is being served.
    pub end: Option<SystemTime>,
}

#[derive(Default)]
struct FeedState {
    routes: HashMap<String, Route>,
    log: HashMap<String, PathLog>,
    fetches: Vec<Fetch>,
}

/// Marks the end of a [`Fetch`] when the request is answered or dropped.
struct Serving {
    state: SharedFeedState,
    index: usize,
}

impl Drop for Serving {
    fn drop(&mut self) {
        if let Some(fetch) = lock(&self.state).fetches.get_mut(self.index) {
            fetch.end = Some(SystemTime::now());
        }
    }
}

type SharedFeedState = Arc<Mutex<FeedState>>;

/// Scriptable HTTP server for feeds. Paths are matched without the query
/// string; unknown paths answer 404. Every request is recorded.
pub struct FeedServer {
    addr: SocketAddr,
    state: SharedFeedState,
    task: JoinHandle<()>,
}

impl FeedServer {
    /// Binds `127.0.0.1:0` and starts serving on the current runtime.
    pub async fn start() -> FeedServer {
        FeedServer::start_on(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
            .await
            .expect("FeedServer: bind 127.0.0.1:0")
    }

    /// Binds `addr`, which must be a loopback address (127.0.0.2 answers too on Linux);
    /// `None` if it is taken.
    pub async fn start_on(addr: SocketAddr) -> Option<FeedServer> {
        assert!(addr.ip().is_loopback(), "test servers stay on loopback");
        let listener = TcpListener::bind(addr).await.ok()?;
        let addr = listener.local_addr().expect("FeedServer: local_addr");
        let state = SharedFeedState::default();
        let app = Router::new()
            .fallback(serve_route)
            .with_state(Arc::clone(&state));
        let task = tokio::spawn(async move {
            if let Err(err) = axum::serve(listener, app).await {
                eprintln!("FeedServer stopped: {err}");
            }
        });
        Some(FeedServer { addr, state, task })
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Full URL for `path`, e.g. `http://127.0.0.1:PORT/path`.
    pub fn url(&self, path: &str) -> String {
        format!(
            "http://{}/{}",
            self.addr,
            path.strip_prefix('/').unwrap_or(path)
        )
    }

    /// Replaces what `path` serves, effective for the next request.
    pub fn set(&self, path: &str, route: Route) {
        lock(&self.state).routes.insert(route_key(path), route);
    }

    /// Number of requests received for `path` (any status).
    pub fn hits(&self, path: &str) -> usize {
        self.with_log(path, |log| log.requests.len())
    }

    /// Number of requests for `path` answered 304.
    pub fn not_modified(&self, path: &str) -> usize {
        self.with_log(path, |log| log.not_modified)
    }

    /// Every request so far, to any path, in arrival order.
    pub fn fetches(&self) -> Vec<Fetch> {
        lock(&self.state).fetches.clone()
    }

    /// Headers of each request for `path` (lowercase names), oldest first.
    pub fn requests(&self, path: &str) -> Vec<Vec<(String, String)>> {
        self.with_log(path, |log| log.requests.clone())
    }

    fn with_log<T: Default>(&self, path: &str, f: impl FnOnce(&PathLog) -> T) -> T {
        lock(&self.state)
            .log
            .get(&route_key(path))
            .map(f)
            .unwrap_or_default()
    }
}

impl Drop for FeedServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Axum handler for every path: records the request and answers from the route table.
async fn serve_route(
    State(state): State<SharedFeedState>,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let recorded = headers
        .iter()
        .map(|(name, value)| {
            let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
            (name.as_str().to_owned(), value)
        })
        .collect();
    let user_agent = headers
        .get(axum::http::header::USER_AGENT)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .unwrap_or_default();
    let (route, not_modified, _serving) = {
        let shared = Arc::clone(&state);
        let mut state = lock(&state);
        let path = uri.path();
        let serving = Serving {
            state: shared,
            index: state.fetches.len(),
        };
        state.fetches.push(Fetch {
            path: path.to_owned(),
            user_agent,
            start: SystemTime::now(),
            end: None,
        });
        let route = state.routes.get(path).cloned();
        let not_modified = route
            .as_ref()
            .is_some_and(|route| route.is_not_modified(&headers));
        let log = state.log.entry(path.to_owned()).or_default();
        log.requests.push(recorded);
        log.not_modified += usize::from(not_modified);
        (route, not_modified, serving)
    };
    let Some(route) = route else {
        return StatusCode::NOT_FOUND.into_response();
    };
    if !route.delay.is_zero() {
        tokio::time::sleep(route.delay).await;
    }
    route.into_response(not_modified)
}

// ---------------------------------------------------------------------------
// SmtpServer
// ---------------------------------------------------------------------------

/// One message accepted by the [`SmtpServer`].
#[derive(Clone, Debug)]
pub struct Received {
    /// Reverse path without angle brackets (empty for the null sender).
    pub mail_from: String,
    /// Forward paths without angle brackets, in RCPT order.
    pub rcpt_to: Vec<String>,
    /// The message, dot-unstuffed, without the final `.\r\n`.
    pub data: Vec<u8>,
    /// When its end of data arrived (it is recorded then, before the reply).
    pub at: SystemTime,
}

#[derive(Default)]
struct SmtpState {
    messages: Vec<Received>,
    data_replies: VecDeque<(u16, String)>,
    rcpt_rejects: HashMap<String, (u16, String)>,
    auth_lines: Vec<String>,
    credentials: Vec<(String, String)>,
    data_delay: Duration,
}

#[derive(Default)]
struct SmtpShared {
    state: Mutex<SmtpState>,
    arrived: Notify,
}

/// Minimal ESMTP server (no TLS) that records messages and injects faults.
pub struct SmtpServer {
    addr: SocketAddr,
    shared: Arc<SmtpShared>,
    task: JoinHandle<()>,
}

impl SmtpServer {
    /// Binds `127.0.0.1:0` and starts accepting on the current runtime.
    pub async fn start() -> SmtpServer {
        SmtpServer::start_on(0).await
    }

    /// Binds `127.0.0.1:port` (e.g. the port of a server that was stopped, to bring
    /// "the mail server" back) and starts accepting.
    pub async fn start_on(port: u16) -> SmtpServer {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, port))
            .await
            .expect("SmtpServer: bind 127.0.0.1");
        let addr = listener.local_addr().expect("SmtpServer: local_addr");
        let shared = Arc::new(SmtpShared::default());
        let task = tokio::spawn(accept_loop(listener, Arc::clone(&shared)));
        SmtpServer { addr, shared, task }
    }

    /// The listening port (the host is always `127.0.0.1`).
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Messages accepted so far, in arrival order.
    pub fn messages(&self) -> Vec<Received> {
        lock(&self.shared.state).messages.clone()
    }

    /// Waits until at least `n` messages arrived or `timeout` elapsed, then
    /// returns all messages so far (fewer than `n` on timeout).
    pub async fn wait_for(&self, n: usize, timeout: Duration) -> Vec<Received> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            // Register interest before checking, so no arrival is missed.
            let arrived = self.shared.arrived.notified();
            let messages = self.messages();
            if messages.len() >= n {
                return messages;
            }
            if tokio::time::timeout_at(deadline, arrived).await.is_err() {
                return self.messages();
            }
        }
    }

    /// Makes the final reply (after the body) of the next `times` DATA
    /// commands `code text`; the message is not recorded unless `code` is
    /// 250. Calls queue up behind earlier ones.
    ///
    /// Panics if `code` is not a three-digit reply code.
    pub fn fail_next(&self, times: usize, code: u16, text: &str) {
        let reply = (checked_code(code), one_line(text));
        lock(&self.shared.state)
            .data_replies
            .extend(std::iter::repeat_n(reply, times));
    }

    /// Holds the reply to each message's end of data for `pause` (the message is already
    /// recorded, as a real server may have queued it before a client vanishes).
    pub fn set_data_delay(&self, pause: Duration) {
        lock(&self.shared.state).data_delay = pause;
    }

    /// Answers every `RCPT TO` for `address` (case-insensitive) with `code text`.
    ///
    /// Panics if `code` is not a three-digit reply code.
    pub fn reject_rcpt(&self, address: &str, code: u16, text: &str) {
        let reply = (checked_code(code), one_line(text));
        lock(&self.shared.state)
            .rcpt_rejects
            .insert(address.to_ascii_lowercase(), reply);
    }

    /// The AUTH exchanges received, one entry per attempt: the command line as
    /// sent (`AUTH PLAIN <b64>`), with any continuation lines appended after a
    /// space (`AUTH LOGIN <b64 user> <b64 password>`).
    pub fn auth_seen(&self) -> Vec<String> {
        lock(&self.shared.state).auth_lines.clone()
    }

    /// Decoded `(username, password)` of each AUTH PLAIN/LOGIN attempt.
    pub fn credentials(&self) -> Vec<(String, String)> {
        lock(&self.shared.state).credentials.clone()
    }
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn checked_code(code: u16) -> u16 {
    assert!(
        (200..600).contains(&code),
        "SMTP reply code must be 2xx-5xx, got {code}"
    );
    code
}

/// Reply text must stay on one line.
fn one_line(text: &str) -> String {
    text.replace(['\r', '\n'], " ")
}

/// Accepts connections; aborting this task aborts every connection task too.
async fn accept_loop(listener: TcpListener, shared: Arc<SmtpShared>) {
    let mut connections = JoinSet::new();
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(err) => {
                eprintln!("SmtpServer: accept failed: {err}");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        while connections.try_join_next().is_some() {}
        let shared = Arc::clone(&shared);
        connections.spawn(async move {
            // A client hanging up mid-session is not an error worth reporting.
            let _ = SmtpSession::new(stream, shared).run().await;
        });
    }
}

/// EHLO answer: no PIPELINING, no STARTTLS.
const EHLO_REPLY: &str =
    "250-127.0.0.1 greets you\r\n250-8BITMIME\r\n250-SMTPUTF8\r\n250 AUTH PLAIN LOGIN\r\n";

/// State of one SMTP connection.
struct SmtpSession {
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
    shared: Arc<SmtpShared>,
    mail_from: Option<String>,
    rcpt_to: Vec<String>,
}

impl SmtpSession {
    fn new(stream: TcpStream, shared: Arc<SmtpShared>) -> Self {
        let (reader, writer) = stream.into_split();
        SmtpSession {
            reader: BufReader::new(reader),
            writer,
            shared,
            mail_from: None,
            rcpt_to: Vec::new(),
        }
    }

    /// Serves commands until QUIT or the client disconnects.
    async fn run(mut self) -> io::Result<()> {
        self.reply(220, "127.0.0.1 Tidings test SMTP ready").await?;
        while let Some(line) = self.read_line().await? {
            let (verb, arg) = line.split_once(' ').unwrap_or((&line, ""));
            let arg = arg.trim();
            match verb.to_ascii_uppercase().as_str() {
                "EHLO" => {
                    self.reset();
                    self.writer.write_all(EHLO_REPLY.as_bytes()).await?;
                }
                "HELO" => {
                    self.reset();
                    self.reply(250, "127.0.0.1").await?;
                }
                "AUTH" => {
                    if !self.auth(&line).await? {
                        return Ok(());
                    }
                }
                "MAIL" => self.mail(arg).await?,
                "RCPT" => self.rcpt(arg).await?,
                "DATA" => {
                    if !self.data().await? {
                        return Ok(());
                    }
                }
                "RSET" => {
                    self.reset();
                    self.reply(250, "OK").await?;
                }
                "NOOP" => self.reply(250, "OK").await?,
                "QUIT" => {
                    self.reply(221, "Bye").await?;
                    return Ok(());
                }
                _ => self.reply(500, "command not recognized").await?,
            }
        }
        Ok(())
    }

    fn reset(&mut self) {
        self.mail_from = None;
        self.rcpt_to.clear();
    }

    async fn reply(&mut self, code: u16, text: &str) -> io::Result<()> {
        let line = format!("{code} {text}\r\n");
        self.writer.write_all(line.as_bytes()).await
    }

    /// Reads one command line without its line ending; `None` at end of stream.
    async fn read_line(&mut self) -> io::Result<Option<String>> {
        let mut buf = Vec::new();
        if self.reader.read_until(b'\n', &mut buf).await? == 0 {
            return Ok(None);
        }
        let line = buf.strip_suffix(b"\n").unwrap_or(&buf);
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        Ok(Some(String::from_utf8_lossy(line).into_owned()))
    }

    /// Handles `AUTH PLAIN` / `AUTH LOGIN`, accepting any credentials.
    /// Returns `false` if the client disconnected mid-exchange.
    async fn auth(&mut self, line: &str) -> io::Result<bool> {
        let mut words = line.split_whitespace().skip(1);
        let mechanism = words.next().unwrap_or_default().to_ascii_uppercase();
        let initial = words.next().map(str::to_owned);
        let prompts: &[&str] = match mechanism.as_str() {
            "PLAIN" => &[""],
            // "Username:" and "Password:" in base64.
            "LOGIN" => &["VXNlcm5hbWU6", "UGFzc3dvcmQ6"],
            _ => {
                self.reply(504, "unrecognized authentication type").await?;
                return Ok(true);
            }
        };
        let mut record = line.to_owned();
        let mut responses: Vec<String> = initial.into_iter().collect();
        for prompt in &prompts[responses.len()..] {
            self.reply(334, prompt).await?;
            let Some(response) = self.read_line().await? else {
                return Ok(false);
            };
            if response == "*" {
                self.reply(501, "authentication cancelled").await?;
                return Ok(true);
            }
            record.push(' ');
            record.push_str(&response);
            responses.push(response);
        }
        let credentials = match responses.as_slice() {
            [plain] if mechanism == "PLAIN" => decode_base64_bytes(plain).and_then(|raw| {
                let mut parts = raw.split(|&b| b == 0).skip(1);
                Some((utf8(parts.next()?), utf8(parts.next()?)))
            }),
            [user, password] => decode_base64(user).zip(decode_base64(password)),
            _ => None,
        };
        {
            let mut state = lock(&self.shared.state);
            state.auth_lines.push(record);
            state.credentials.extend(credentials);
        }
        self.reply(235, "authentication succeeded").await?;
        Ok(true)
    }

    async fn mail(&mut self, arg: &str) -> io::Result<()> {
        if self.mail_from.is_some() {
            return self.reply(503, "sender already specified").await;
        }
        match parse_path(arg, "FROM:") {
            Some(from) => {
                self.mail_from = Some(from);
                self.reply(250, "OK").await
            }
            None => self.reply(501, "syntax: MAIL FROM:<address>").await,
        }
    }

    async fn rcpt(&mut self, arg: &str) -> io::Result<()> {
        if self.mail_from.is_none() {
            return self.reply(503, "need MAIL before RCPT").await;
        }
        let Some(to) = parse_path(arg, "TO:") else {
            return self.reply(501, "syntax: RCPT TO:<address>").await;
        };
        let rejection = lock(&self.shared.state)
            .rcpt_rejects
            .get(&to.to_ascii_lowercase())
            .cloned();
        let (code, text) = rejection.unwrap_or_else(|| (250, "OK".to_owned()));
        if (200..300).contains(&code) {
            self.rcpt_to.push(to);
        }
        self.reply(code, &text).await
    }

    /// Handles DATA. Returns `false` if the client disconnected mid-message.
    async fn data(&mut self) -> io::Result<bool> {
        if self.mail_from.is_none() {
            self.reply(503, "need MAIL before DATA").await?;
            return Ok(true);
        }
        if self.rcpt_to.is_empty() {
            self.reply(554, "no valid recipients").await?;
            return Ok(true);
        }
        self.reply(354, "end data with <CR><LF>.<CR><LF>").await?;
        let Some(data) = self.read_data().await? else {
            return Ok(false);
        };
        let received = Received {
            mail_from: self.mail_from.take().unwrap_or_default(),
            rcpt_to: std::mem::take(&mut self.rcpt_to),
            data,
            at: SystemTime::now(),
        };
        let (code, text) = {
            let mut state = lock(&self.shared.state);
            let reply = state
                .data_replies
                .pop_front()
                .unwrap_or_else(|| (250, "OK queued".to_owned()));
            if reply.0 == 250 {
                state.messages.push(received);
            }
            reply
        };
        self.shared.arrived.notify_waiters();
        let pause = lock(&self.shared.state).data_delay;
        if !pause.is_zero() {
            tokio::time::sleep(pause).await;
        }
        self.reply(code, &text).await?;
        Ok(true)
    }

    /// Reads the message up to the `.` line, undoing dot-stuffing.
    async fn read_data(&mut self) -> io::Result<Option<Vec<u8>>> {
        let mut data = Vec::new();
        loop {
            let start = data.len();
            if self.reader.read_until(b'\n', &mut data).await? == 0 {
                return Ok(None);
            }
            match &data[start..] {
                b".\r\n" | b".\n" => {
                    data.truncate(start);
                    return Ok(Some(data));
                }
                [b'.', ..] => {
                    data.remove(start);
                }
                _ => {}
            }
        }
    }
}

/// Parses `FROM:<addr> PARAMS` / `TO:<addr> PARAMS` into `addr`.
fn parse_path(arg: &str, keyword: &str) -> Option<String> {
    let head = arg.get(..keyword.len())?;
    if !head.eq_ignore_ascii_case(keyword) {
        return None;
    }
    let rest = arg[keyword.len()..].trim_start();
    match rest.strip_prefix('<') {
        Some(inner) => inner.split_once('>').map(|(addr, _)| addr.to_owned()),
        None => rest.split_whitespace().next().map(str::to_owned),
    }
}

fn utf8(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Decodes standard base64 (padding optional) into a lossy UTF-8 string.
fn decode_base64(input: &str) -> Option<String> {
    decode_base64_bytes(input).map(|bytes| utf8(&bytes))
}

fn decode_base64_bytes(input: &str) -> Option<Vec<u8>> {
    fn sextet(c: u8) -> Option<u32> {
        let value = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        };
        Some(u32::from(value))
    }
    let input = input.trim_end_matches('=').as_bytes();
    let mut out = Vec::with_capacity(input.len() * 3 / 4);
    for chunk in input.chunks(4) {
        if chunk.len() == 1 {
            return None;
        }
        // Accumulate up to 24 bits, left-aligned, then keep the whole bytes.
        let mut acc = 0u32;
        for i in 0..4 {
            let bits = chunk.get(i).map_or(Some(0), |&c| sextet(c))?;
            acc = (acc << 6) | bits;
        }
        out.extend_from_slice(&acc.to_be_bytes()[1..chunk.len()]);
    }
    Some(out)
}

/// The subscriber pages of an [`tidings::App`], served in-process on `127.0.0.1:0`, with a
/// client that follows no redirects and the sender of the App, so that a test can swap in
/// a reloaded one. The pages stop when it is dropped.
pub struct Site {
    pub base: String,
    pub client: reqwest::Client,
    pub tx: tokio::sync::watch::Sender<tidings::App>,
    _stop: tokio_util::sync::DropGuard,
}

impl Site {
    pub async fn start(app: tidings::App) -> Site {
        let (tx, rx) = tokio::sync::watch::channel(app);
        let stop = tokio_util::sync::CancellationToken::new();
        let addr = tidings::web::serve((Ipv4Addr::LOCALHOST, 0).into(), rx, stop.clone())
            .await
            .unwrap();
        Site {
            base: format!("http://{addr}"),
            client: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .timeout(Duration::from_secs(20))
                .build()
                .unwrap(),
            tx,
            _stop: stop.drop_guard(),
        }
    }

    pub async fn get(&self, path: &str) -> (reqwest::StatusCode, String) {
        let r = self
            .client
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap();
        (r.status(), r.text().await.unwrap())
    }

    pub async fn post(&self, path: &str, form: &[(&str, &str)]) -> (reqwest::StatusCode, String) {
        let r = self
            .client
            .post(format!("{}{path}", self.base))
            .form(form)
            .send()
            .await
            .unwrap();
        (r.status(), r.text().await.unwrap())
    }

    /// The anti-forgery value of the sign-up form at `/`.
    pub async fn form_csrf(&self) -> String {
        let (status, page) = self.get("/").await;
        assert_eq!(status, reqwest::StatusCode::OK);
        csrf_of(&page)
    }

    /// Signs `email` up for `queries` (one per line, daily, UTC) and returns the path of
    /// the confirmation link mailed to `smtp` as its `nth` message (from 1).
    pub async fn sign_up(
        &self,
        smtp: &SmtpServer,
        nth: usize,
        email: &str,
        queries: &str,
    ) -> String {
        let csrf = self.form_csrf().await;
        let (status, page) = self
            .post(
                "/subscribe",
                &[
                    ("csrf", &csrf),
                    ("email", email),
                    ("queries", queries),
                    ("frequency", "daily"),
                    ("tz", "UTC"),
                    ("action", "subscribe"),
                ],
            )
            .await;
        assert_eq!(status, reqwest::StatusCode::OK, "{page}");
        let mail = decode(&smtp.wait_for(nth, Duration::from_secs(20)).await[nth - 1]);
        confirm_path(&mail)
    }
}

/// The value of the `name="csrf"` field on a page.
pub fn csrf_of(page: &str) -> String {
    let marker = "name=\"csrf\" value=\"";
    let start = page.find(marker).expect("a csrf field") + marker.len();
    page[start..].split('"').next().unwrap().to_string()
}

/// The path of the confirmation link in a sign-up mail (the default base URL's).
pub fn confirm_path(mail: &Mail) -> String {
    mail.text
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("http://localhost:8080/confirm/"))
        .unwrap_or_else(|| panic!("no link in {}", mail.text))
        .trim_start_matches("http://localhost:8080")
        .to_string()
}
