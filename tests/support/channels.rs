//! Push-notification services on loopback, for delivery tests: real HTTP servers that
//! answer as the documented APIs do (success and error shapes, rate limits), record every
//! request, and can be told to fail the next requests ([`Fault`]).
//!
//! One generic [`Fake`] serves them all; each service is its state type ([`WebhookState`],
//! [`TelegramState`], …) with a named alias ([`WebhookReceiver`], [`TelegramApi`], …)
//! carrying its constructors and accessors. `start()` binds `127.0.0.1:0`, `start_on(ip)`
//! binds `ip:0` (tests use [`super::articles::PUBLIC`]). A fake stops when dropped.

use std::collections::{HashMap, HashSet, VecDeque};
use std::convert::Infallible;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::http::{Request, Response, StatusCode};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD as B64, URL_SAFE_NO_PAD};
use hmac::{Hmac, Mac};
use serde_json::{Map, Value, json};
use sha2::Sha256;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio::task::{JoinHandle, JoinSet};

use super::lock;

const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// One request as a fake received it.
#[derive(Clone, Debug)]
pub struct Recorded {
    pub method: String,
    /// Path and query as sent (still percent-encoded).
    pub path: String,
    /// Every header (lowercase name, lossy UTF-8 value), in order.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// When the whole request had arrived.
    pub at: Instant,
    /// The status answered (a delayed answer's too); `None`: the connection was dropped.
    pub status: Option<u16>,
}

impl Recorded {
    /// The first header called `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        let found = self
            .headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name));
        found.map(|(_, v)| v.as_str())
    }

    /// The body as JSON (`Null` if it is not JSON).
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    /// The path without the query.
    pub fn route(&self) -> &str {
        self.path.split('?').next().unwrap_or("/")
    }

    /// The decoded query parameter `name`.
    pub fn query(&self, name: &str) -> Option<String> {
        let query = self.path.split_once('?')?.1;
        let mut pairs = url::form_urlencoded::parse(query.as_bytes());
        pairs.find(|(k, _)| k == name).map(|(_, v)| v.into_owned())
    }

    /// Answered 2xx.
    pub fn is_accepted(&self) -> bool {
        matches!(self.status, Some(200..=299))
    }
}

/// What the next requests meet instead of the service's normal answer.
#[derive(Clone, Copy, Debug)]
pub enum Fault {
    /// The service's own error shape for this status.
    Status(u16),
    /// The service's documented 429, telling the client to come back after this long
    /// (headers in whole seconds, rounded up).
    RateLimited(Duration),
    /// Served normally (recorded, delivered) on arrival, answered only after this long:
    /// a slow service, for timeout tests.
    Delay(Duration),
    /// The connection is closed without an answer.
    Drop,
}

/// An HTTP answer.
pub struct Reply {
    status: u16,
    headers: Vec<(&'static str, String)>,
    body: Vec<u8>,
}

impl Reply {
    fn json(status: u16, value: Value) -> Reply {
        let reply = Reply {
            status,
            headers: Vec::new(),
            body: value.to_string().into_bytes(),
        };
        reply.header("content-type", "application/json")
    }

    fn text(status: u16, text: &str) -> Reply {
        let reply = Reply {
            status,
            headers: Vec::new(),
            body: text.as_bytes().to_vec(),
        };
        reply.header("content-type", "text/plain; charset=utf-8")
    }

    fn empty(status: u16) -> Reply {
        Reply {
            status,
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    fn header(mut self, name: &'static str, value: impl ToString) -> Reply {
        self.headers.push((name, value.to_string()));
        self
    }

    fn into_response(self) -> Response<Body> {
        let mut builder = Response::builder().status(self.status);
        for (name, value) in self.headers {
            builder = builder.header(name, value);
        }
        builder.body(Body::from(self.body)).expect("a valid reply")
    }
}

/// A service's behaviour: its answers to requests, to scripted errors and to rate limits.
pub trait Service: Send + 'static {
    fn answer(&mut self, request: &Recorded) -> Reply;
    fn error(&self, status: u16) -> Reply;
    fn rate_limited(&self, after: Duration) -> Reply;
}

struct Shared<S> {
    service: S,
    requests: Vec<Recorded>,
    faults: VecDeque<Fault>,
}

type State<S> = Arc<Mutex<Shared<S>>>;

/// A fake service on loopback, serving on the current runtime until dropped.
pub struct Fake<S: Service> {
    addr: SocketAddr,
    shared: State<S>,
    task: JoinHandle<()>,
}

impl<S: Service> Drop for Fake<S> {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl<S: Service> Fake<S> {
    async fn launch(ip: IpAddr, service: S) -> Fake<S> {
        assert!(ip.is_loopback(), "fake services stay on loopback");
        let listener = TcpListener::bind((ip, 0))
            .await
            .unwrap_or_else(|e| panic!("bind {ip}:0 (Linux answers on all of 127/8): {e}"));
        let addr = listener.local_addr().expect("local_addr");
        let shared = Arc::new(Mutex::new(Shared {
            service,
            requests: Vec::new(),
            faults: VecDeque::new(),
        }));
        let task = tokio::spawn(serve(listener, Arc::clone(&shared)));
        Fake { addr, shared, task }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://IP:PORT`, no trailing slash.
    pub fn base(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `http://IP:PORT/path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}/{}", self.base(), path.strip_prefix('/').unwrap_or(path))
    }

    /// Every request so far, in arrival order, whatever its answer.
    pub fn requests(&self) -> Vec<Recorded> {
        lock(&self.shared).requests.clone()
    }

    /// How many requests were answered 2xx (duplicates the service ignored included).
    pub fn accepted(&self) -> usize {
        lock(&self.shared)
            .requests
            .iter()
            .filter(|r| r.is_accepted())
            .count()
    }

    /// Waits until `n` requests were answered 2xx or `timeout` passed; returns the
    /// requests answered 2xx so far (fewer than `n` on timeout).
    pub async fn wait_for(&self, n: usize, timeout: Duration) -> Vec<Recorded> {
        let deadline = Instant::now() + timeout;
        loop {
            let accepted: Vec<Recorded> = self
                .requests()
                .into_iter()
                .filter(Recorded::is_accepted)
                .collect();
            if accepted.len() >= n || Instant::now() >= deadline {
                return accepted;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// The next `n` requests meet `fault` (after any faults already scripted).
    pub fn fail_next(&self, n: usize, fault: Fault) {
        lock(&self.shared)
            .faults
            .extend(std::iter::repeat_n(fault, n));
    }

    fn with<T>(&self, f: impl FnOnce(&mut S) -> T) -> T {
        f(&mut lock(&self.shared).service)
    }
}

/// Accepts connections until aborted; dropping the set closes every connection.
async fn serve<S: Service>(listener: TcpListener, shared: State<S>) {
    let mut connections = JoinSet::new();
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        while connections.try_join_next().is_some() {}
        let shared = Arc::clone(&shared);
        connections.spawn(async move {
            let cut = Arc::new(Notify::new());
            let service = {
                let cut = Arc::clone(&cut);
                hyper::service::service_fn(move |request| {
                    handle(Arc::clone(&shared), Arc::clone(&cut), request)
                })
            };
            let connection = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
            tokio::select! {
                _ = connection => {}
                _ = cut.notified() => {}
            }
        });
    }
}

async fn handle<S: Service>(
    shared: State<S>,
    cut: Arc<Notify>,
    request: Request<hyper::body::Incoming>,
) -> Result<Response<Body>, Infallible> {
    let (parts, body) = request.into_parts();
    let Ok(body) = axum::body::to_bytes(Body::new(body), usize::MAX).await else {
        return Ok(Reply::empty(400).into_response());
    };
    let headers = parts.headers.iter().map(|(name, value)| {
        (
            name.as_str().to_owned(),
            String::from_utf8_lossy(value.as_bytes()).into_owned(),
        )
    });
    let mut recorded = Recorded {
        method: parts.method.to_string(),
        path: parts
            .uri
            .path_and_query()
            .map_or("/".into(), |p| p.to_string()),
        headers: headers.collect(),
        body: body.to_vec(),
        at: Instant::now(),
        status: None,
    };
    let (reply, delay) = {
        let mut shared = lock(&shared);
        let (reply, delay) = match shared.faults.pop_front() {
            Some(Fault::Drop) => (None, Duration::ZERO),
            Some(Fault::Status(code)) => (Some(shared.service.error(code)), Duration::ZERO),
            Some(Fault::RateLimited(after)) => {
                (Some(shared.service.rate_limited(after)), Duration::ZERO)
            }
            Some(Fault::Delay(pause)) => (Some(shared.service.answer(&recorded)), pause),
            None => (Some(shared.service.answer(&recorded)), Duration::ZERO),
        };
        recorded.status = reply.as_ref().map(|r| r.status);
        shared.requests.push(recorded);
        (reply, delay)
    };
    let Some(reply) = reply else {
        cut.notify_one();
        return std::future::pending().await;
    };
    tokio::time::sleep(delay).await;
    Ok(reply.into_response())
}

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn ceil_secs(d: Duration) -> u64 {
    d.as_millis().div_ceil(1000) as u64
}

fn reason(status: u16) -> &'static str {
    StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("Error")
}

/// `len` random characters of the URL-safe base64 alphabet.
fn random_id(len: usize) -> String {
    let mut bytes = vec![0u8; len];
    getrandom::fill(&mut bytes).expect("randomness");
    URL_SAFE_NO_PAD
        .encode(bytes)
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .take(len)
        .collect()
}

/// The body's fields: a JSON object, or a form (whose `form_json` field, if named, holds
/// the JSON object: Slack's and Mattermost's `payload=`). `None` if it is neither.
fn fields(request: &Recorded, form_json: Option<&str>) -> Option<Map<String, Value>> {
    let content_type = request.header("content-type").unwrap_or_default();
    if content_type.starts_with("application/x-www-form-urlencoded") {
        let pairs = url::form_urlencoded::parse(&request.body).into_owned();
        let mut map: Map<String, Value> = pairs.map(|(k, v)| (k, Value::String(v))).collect();
        match form_json {
            Some(field) => match map.remove(field)? {
                Value::String(json) => serde_json::from_str(&json).ok(),
                _ => None,
            },
            None => Some(map),
        }
    } else {
        serde_json::from_slice(&request.body).ok()
    }
}

fn text_field<'a>(fields: &'a Map<String, Value>, name: &str) -> &'a str {
    fields.get(name).and_then(Value::as_str).unwrap_or_default()
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = s
            .get(i + 1..i + 3)
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

// ---------------------------------------------------------------------------
// Standard Webhooks receiver
// ---------------------------------------------------------------------------

/// A receiver verifying Standard Webhooks signatures, on any path.
pub type WebhookReceiver = Fake<WebhookState>;

pub struct WebhookState {
    key: Vec<u8>,
    seen: HashSet<String>,
    events: Vec<Value>,
    rejected: Vec<(u16, String)>,
    duplicates: Vec<String>,
}

/// The HMAC key of a `whsec_<base64>` secret (the prefix is optional).
fn webhook_key(secret: &str) -> Vec<u8> {
    let encoded = secret.strip_prefix("whsec_").unwrap_or(secret);
    B64.decode(encoded)
        .expect("a Standard Webhooks secret: whsec_ and base64")
}

impl WebhookState {
    /// The verified `webhook-id`, or the status and error a receiver library answers.
    fn verify(&self, request: &Recorded) -> Result<String, (u16, &'static str)> {
        let (Some(id), Some(timestamp), Some(signatures)) = (
            request.header("webhook-id"),
            request.header("webhook-timestamp"),
            request.header("webhook-signature"),
        ) else {
            return Err((400, "missing required headers"));
        };
        let timestamp: i64 = timestamp
            .trim()
            .parse()
            .map_err(|_| (400, "invalid signature headers"))?;
        let now = unix_now() as i64;
        if now - timestamp > 300 {
            return Err((400, "message timestamp too old"));
        }
        if timestamp - now > 300 {
            return Err((400, "message timestamp too new"));
        }
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("any key length");
        mac.update(format!("{id}.{timestamp}.").as_bytes());
        mac.update(&request.body);
        let verified = signatures
            .split(' ')
            .filter_map(|s| s.split_once(','))
            .filter(|(version, _)| *version == "v1")
            .filter_map(|(_, signature)| B64.decode(signature).ok())
            .any(|signature| mac.clone().verify_slice(&signature).is_ok());
        if verified {
            Ok(id.to_owned())
        } else {
            Err((401, "no matching signature found"))
        }
    }
}

impl Service for WebhookState {
    fn answer(&mut self, request: &Recorded) -> Reply {
        match self.verify(request) {
            Err((status, error)) => {
                self.rejected.push((status, error.to_owned()));
                Reply::json(status, json!({ "error": error }))
            }
            Ok(id) if !self.seen.insert(id.clone()) => {
                self.duplicates.push(id);
                Reply::empty(200)
            }
            Ok(_) => {
                let body = &request.body;
                let event = serde_json::from_slice(body)
                    .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(body).into()));
                self.events.push(event);
                Reply::empty(200)
            }
        }
    }

    fn error(&self, status: u16) -> Reply {
        Reply::json(status, json!({ "error": reason(status) }))
    }

    fn rate_limited(&self, after: Duration) -> Reply {
        self.error(429).header("retry-after", ceil_secs(after))
    }
}

impl WebhookReceiver {
    pub async fn start(secret: &str) -> WebhookReceiver {
        WebhookReceiver::start_on(LOCALHOST, secret).await
    }

    /// `secret` is `whsec_` and the base64 of the key, as Standard Webhooks writes it.
    pub async fn start_on(ip: IpAddr, secret: &str) -> WebhookReceiver {
        let state = WebhookState {
            key: webhook_key(secret),
            seen: HashSet::new(),
            events: Vec::new(),
            rejected: Vec::new(),
            duplicates: Vec::new(),
        };
        Fake::launch(ip, state).await
    }

    /// Verifies with `secret` from the next request on (a rotated secret).
    pub fn set_secret(&self, secret: &str) {
        self.with(|s| s.key = webhook_key(secret));
    }

    /// The bodies (JSON) of verified requests with a new `webhook-id`, in order.
    pub fn accepted_events(&self) -> Vec<Value> {
        self.with(|s| s.events.clone())
    }

    /// (status, error) of every request that failed verification.
    pub fn rejected(&self) -> Vec<(u16, String)> {
        self.with(|s| s.rejected.clone())
    }

    /// The `webhook-id` of every verified request whose id was seen before (answered 200,
    /// not delivered again).
    pub fn duplicates(&self) -> Vec<String> {
        self.with(|s| s.duplicates.clone())
    }
}

// ---------------------------------------------------------------------------
// Telegram Bot API
// ---------------------------------------------------------------------------

/// `POST /bot{token}/sendMessage` (JSON, form or query parameters).
pub type TelegramApi = Fake<TelegramState>;

pub struct TelegramState {
    token: String,
    chats: Vec<String>,
    last_message_id: i64,
    messages: Vec<Value>,
}

fn telegram_error(status: u16, description: &str) -> Reply {
    let body = json!({ "ok": false, "error_code": status, "description": description });
    Reply::json(status, body)
}

/// The text of Telegram `parse_mode: HTML` (its tags and entities), as Telegram's
/// parser takes it, or its error.
fn telegram_html(html: &str) -> Result<String, String> {
    const TAGS: &str =
        "a b strong i em u ins s strike del code pre blockquote tg-spoiler span tg-emoji";
    let mut text = String::new();
    let mut open: Vec<String> = Vec::new();
    let mut i = 0;
    while let Some(c) = html[i..].chars().next() {
        let rest = &html[i..];
        if c == '&'
            && let Some((decoded, len)) = html_entity(rest)
        {
            text.push(decoded);
            i += len;
            continue;
        }
        if c != '<' {
            text.push(c);
            i += c.len_utf8();
            continue;
        }
        let begin = i;
        if let Some(end_tag) = rest.strip_prefix("</") {
            let Some(top) = open.pop() else {
                return Err(format!("Unexpected end tag at byte offset {begin}"));
            };
            let Some(end) = end_tag.find('>') else {
                return Err(format!("Unclosed end tag at byte offset {begin}"));
            };
            let name = end_tag[..end].trim_end().to_ascii_lowercase();
            if name != top {
                return Err(format!(
                    "Unmatched end tag at byte offset {begin}, expected \"</{top}>\", found \"</{name}>\""
                ));
            }
            i += 2 + end + 1;
            continue;
        }
        let Some(name_end) = rest[1..].find(|c: char| c.is_whitespace() || c == '>') else {
            return Err(format!("Unclosed start tag at byte offset {begin}"));
        };
        let name = rest[1..1 + name_end].to_ascii_lowercase();
        if !TAGS.split(' ').any(|tag| tag == name) {
            return Err(format!(
                "Unsupported start tag \"{name}\" at byte offset {begin}"
            ));
        }
        // Attributes run to the first `>` outside quotes.
        let mut quote = None;
        let attributes_end = rest[1 + name_end..].find(|c: char| {
            match (quote, c) {
                (None, '"' | '\'') => quote = Some(c),
                (Some(q), _) if q == c => quote = None,
                (None, '>') => return true,
                _ => {}
            }
            false
        });
        let Some(attributes_end) = attributes_end else {
            return Err(format!("Unclosed start tag at byte offset {begin}"));
        };
        let attributes = &rest[1 + name_end..1 + name_end + attributes_end];
        if name == "span" && !attributes.contains("tg-spoiler") {
            return Err(format!(
                "Tag \"span\" must have class \"tg-spoiler\" at byte offset {begin}"
            ));
        }
        open.push(name);
        i += 1 + name_end + attributes_end + 1;
    }
    match open.last() {
        Some(tag) => Err(format!(
            "Can't find end tag corresponding to start tag \"{tag}\""
        )),
        None => Ok(text),
    }
}

/// The entities Telegram decodes (`&lt; &gt; &amp; &quot;` and numeric ones) at the start
/// of `s`: the character and the entity's length. Others stay as they are.
fn html_entity(s: &str) -> Option<(char, usize)> {
    let end = s.find(';')?;
    let name = &s[1..end];
    let decoded = match name {
        "lt" => '<',
        "gt" => '>',
        "amp" => '&',
        "quot" => '"',
        _ => {
            let number = name.strip_prefix('#')?;
            let code = match number.strip_prefix(['x', 'X']) {
                Some(hex) => u32::from_str_radix(hex, 16).ok()?,
                None => number.parse().ok()?,
            };
            char::from_u32(code)?
        }
    };
    Some((decoded, end + 1))
}

impl Service for TelegramState {
    fn answer(&mut self, request: &Recorded) -> Reply {
        let Some((token, method)) = request
            .route()
            .strip_prefix("/bot")
            .and_then(|r| r.split_once('/'))
        else {
            return telegram_error(404, "Not Found");
        };
        if token != self.token {
            return telegram_error(401, "Unauthorized");
        }
        if !method.eq_ignore_ascii_case("sendMessage") {
            return telegram_error(404, "Not Found");
        }
        let mut params = if request.body.is_empty() {
            Some(Map::new())
        } else {
            fields(request, None)
        }
        .unwrap_or_default();
        let query = request.path.split_once('?').map_or("", |(_, q)| q);
        for (k, v) in url::form_urlencoded::parse(query.as_bytes()).into_owned() {
            params.entry(k).or_insert(Value::String(v));
        }
        let chat = match params.get("chat_id") {
            Some(Value::Number(n)) => n.to_string(),
            Some(Value::String(s)) if !s.is_empty() => s.clone(),
            _ => return telegram_error(400, "Bad Request: chat_id is empty"),
        };
        if !self.chats.contains(&chat) {
            return telegram_error(400, "Bad Request: chat not found");
        }
        let text = text_field(&params, "text");
        let text = if text_field(&params, "parse_mode").eq_ignore_ascii_case("html") {
            match telegram_html(text) {
                Ok(text) => text,
                Err(e) => {
                    return telegram_error(400, &format!("Bad Request: can't parse entities: {e}"));
                }
            }
        } else {
            text.to_owned()
        };
        let text = text.trim();
        if text.is_empty() {
            return telegram_error(400, "Bad Request: message text is empty");
        }
        if text.chars().count() > 4096 {
            return telegram_error(400, "Bad Request: message is too long");
        }
        self.last_message_id += 1;
        self.messages.push(Value::Object(params));
        let chat = match chat.parse::<i64>() {
            Ok(id) if id > 0 => json!({ "id": id, "type": "private", "first_name": "Test" }),
            Ok(id) => json!({ "id": id, "type": "supergroup", "title": "Test" }),
            Err(_) => {
                json!({ "id": -1001000000001i64, "type": "channel", "username": chat.trim_start_matches('@') })
            }
        };
        Reply::json(
            200,
            json!({ "ok": true, "result": {
                "message_id": self.last_message_id,
                "from": { "id": 1000000001, "is_bot": true, "first_name": "Tidings", "username": "tidings_test_bot" },
                "chat": chat,
                "date": unix_now(),
                "text": text,
            }}),
        )
    }

    fn error(&self, status: u16) -> Reply {
        let description = match status {
            400 => "Bad Request: chat not found".to_owned(),
            401 => "Unauthorized".to_owned(),
            403 => "Forbidden: bot was blocked by the user".to_owned(),
            _ => reason(status).to_owned(),
        };
        telegram_error(status, &description)
    }

    fn rate_limited(&self, after: Duration) -> Reply {
        let secs = ceil_secs(after);
        Reply::json(
            429,
            json!({
                "ok": false,
                "error_code": 429,
                "description": format!("Too Many Requests: retry after {secs}"),
                "parameters": { "retry_after": secs },
            }),
        )
    }
}

impl TelegramApi {
    pub async fn start(token: &str, chats: &[&str]) -> TelegramApi {
        TelegramApi::start_on(LOCALHOST, token, chats).await
    }

    /// A bot with `token` that can write to `chats` (ids as text, e.g. "42",
    /// "-1001234567890", or "@channel", matched as the client sends them).
    pub async fn start_on(ip: IpAddr, token: &str, chats: &[&str]) -> TelegramApi {
        let state = TelegramState {
            token: token.to_owned(),
            chats: chats.iter().map(|c| c.to_string()).collect(),
            last_message_id: 0,
            messages: Vec::new(),
        };
        Fake::launch(ip, state).await
    }

    /// The parameters of every message sent, in order.
    pub fn messages(&self) -> Vec<Value> {
        self.with(|s| s.messages.clone())
    }
}

// ---------------------------------------------------------------------------
// Slack incoming webhook
// ---------------------------------------------------------------------------

/// `POST /services/T…/B…/…`: JSON, or a form with `payload=`.
pub type SlackWebhook = Fake<SlackState>;

pub struct SlackState {
    path: String,
    messages: Vec<Value>,
    truncated: usize,
}

impl Service for SlackState {
    fn answer(&mut self, request: &Recorded) -> Reply {
        if request.route() != self.path || request.method != "POST" {
            return Reply::text(404, "no_service");
        }
        let Some(payload) = fields(request, Some("payload")) else {
            return Reply::text(400, "invalid_payload");
        };
        let blocks = match payload.get("blocks") {
            None => 0,
            Some(Value::Array(blocks)) => blocks.len(),
            Some(_) => return Reply::text(400, "invalid_blocks_format"),
        };
        let attachments = payload
            .get("attachments")
            .and_then(Value::as_array)
            .map_or(0, Vec::len);
        let text = text_field(&payload, "text");
        if text.trim().is_empty() && blocks == 0 && attachments == 0 {
            return Reply::text(400, "no_text");
        }
        // Slack truncates, rather than refuses, text over 40,000 characters.
        self.truncated += usize::from(text.chars().count() > 40_000);
        self.messages.push(Value::Object(payload));
        Reply::text(200, "ok")
    }

    fn error(&self, status: u16) -> Reply {
        let error = match status {
            400 => "invalid_payload",
            403 => "action_prohibited",
            404 => "no_service",
            410 => "channel_is_archived",
            _ => "internal_error",
        };
        Reply::text(status, error)
    }

    fn rate_limited(&self, after: Duration) -> Reply {
        Reply::text(429, "rate_limited").header("retry-after", ceil_secs(after))
    }
}

impl SlackWebhook {
    pub async fn start(hook_path: &str) -> SlackWebhook {
        SlackWebhook::start_on(LOCALHOST, hook_path).await
    }

    /// A hook at `hook_path`, e.g. `/services/T000/B000/XXXX`.
    pub async fn start_on(ip: IpAddr, hook_path: &str) -> SlackWebhook {
        let path = format!("/{}", hook_path.trim_start_matches('/'));
        Fake::launch(
            ip,
            SlackState {
                path,
                messages: Vec::new(),
                truncated: 0,
            },
        )
        .await
    }

    /// The hook's URL.
    pub fn endpoint(&self) -> String {
        self.url(&self.with(|s| s.path.clone()))
    }

    /// The payload of every message posted, in order.
    pub fn messages(&self) -> Vec<Value> {
        self.with(|s| s.messages.clone())
    }

    /// How many posted messages Slack would have truncated (text over 40,000 characters).
    pub fn truncated(&self) -> usize {
        self.with(|s| s.truncated)
    }
}

// ---------------------------------------------------------------------------
// Discord webhook
// ---------------------------------------------------------------------------

/// `POST /api[/v10]/webhooks/{id}/{token}[?wait=true]`: JSON or form.
pub type DiscordWebhook = Fake<DiscordState>;

pub struct DiscordState {
    id: String,
    token: String,
    messages: Vec<Value>,
    last_message_id: u64,
}

fn discord_error(status: u16, code: u32, message: &str) -> Reply {
    Reply::json(status, json!({ "code": code, "message": message }))
}

fn discord_form_error(field: &str, code: &str, message: &str) -> Reply {
    let errors = json!({ field: { "_errors": [{ "code": code, "message": message }] } });
    Reply::json(
        400,
        json!({ "code": 50035, "errors": errors, "message": "Invalid Form Body" }),
    )
}

impl Service for DiscordState {
    fn answer(&mut self, request: &Recorded) -> Reply {
        let route = request.route().strip_prefix("/api").unwrap_or_default();
        let route = match route.strip_prefix("/v") {
            Some(versioned) => versioned.trim_start_matches(|c: char| c.is_ascii_digit()),
            None => route,
        };
        let Some((id, token)) = route
            .strip_prefix("/webhooks/")
            .and_then(|r| r.split_once('/'))
        else {
            return discord_error(404, 0, "404: Not Found");
        };
        if id != self.id {
            return self.error(404);
        }
        if token != self.token {
            return self.error(401);
        }
        if request.method != "POST" {
            return discord_error(405, 0, "405: Method Not Allowed");
        }
        let Some(payload) = fields(request, None) else {
            return discord_error(400, 50109, "The request body contains invalid JSON.");
        };
        let content = text_field(&payload, "content");
        let embeds = payload
            .get("embeds")
            .and_then(Value::as_array)
            .map_or(0, Vec::len);
        if content.chars().count() > 2000 {
            return discord_form_error(
                "content",
                "BASE_TYPE_MAX_LENGTH",
                "Must be 2000 or fewer in length.",
            );
        }
        if embeds > 10 {
            return discord_form_error(
                "embeds",
                "BASE_TYPE_MAX_LENGTH",
                "Must be 10 or fewer in length.",
            );
        }
        if content.trim().is_empty() && embeds == 0 {
            return discord_error(400, 50006, "Cannot send an empty message");
        }
        self.last_message_id += 1;
        let message = json!({
            "id": (1_200_000_000_000_000_000 + self.last_message_id).to_string(),
            "type": 0,
            "content": content,
            "channel_id": "1100000000000000001",
            "author": {
                "bot": true,
                "id": self.id,
                "username": payload.get("username").and_then(Value::as_str).unwrap_or("Tidings"),
                "avatar": null,
                "discriminator": "0000",
            },
            "embeds": payload.get("embeds").cloned().unwrap_or(json!([])),
            "attachments": [],
            "mentions": [],
            "pinned": false,
            "tts": false,
            "timestamp": chrono::Utc::now().to_rfc3339(),
            "webhook_id": self.id,
        });
        self.messages.push(Value::Object(payload));
        if request.query("wait").is_some_and(|w| w == "true") {
            Reply::json(200, message)
        } else {
            Reply::empty(204)
        }
    }

    fn error(&self, status: u16) -> Reply {
        match status {
            400 => Reply::json(
                400,
                json!({ "code": 50035, "errors": {}, "message": "Invalid Form Body" }),
            ),
            401 => discord_error(401, 50027, "Invalid Webhook Token"),
            403 => discord_error(403, 50013, "Missing Permissions"),
            404 => discord_error(404, 10015, "Unknown Webhook"),
            _ => discord_error(status, 0, &format!("{status}: {}", reason(status))),
        }
    }

    fn rate_limited(&self, after: Duration) -> Reply {
        let secs = (after.as_secs_f64() * 1000.0).round() / 1000.0;
        let body = json!({ "message": "You are being rate limited.", "retry_after": secs, "global": false });
        Reply::json(429, body)
            .header("retry-after", ceil_secs(after))
            .header("x-ratelimit-limit", 5)
            .header("x-ratelimit-remaining", 0)
            .header("x-ratelimit-reset-after", format!("{secs:.3}"))
            .header("x-ratelimit-scope", "user")
    }
}

impl DiscordWebhook {
    pub async fn start(id: &str, token: &str) -> DiscordWebhook {
        DiscordWebhook::start_on(LOCALHOST, id, token).await
    }

    /// The webhook `id` with `token`.
    pub async fn start_on(ip: IpAddr, id: &str, token: &str) -> DiscordWebhook {
        let state = DiscordState {
            id: id.to_owned(),
            token: token.to_owned(),
            messages: Vec::new(),
            last_message_id: 0,
        };
        Fake::launch(ip, state).await
    }

    /// `…/api/webhooks/{id}/{token}`.
    pub fn endpoint(&self) -> String {
        let path = self.with(|s| format!("api/webhooks/{}/{}", s.id, s.token));
        self.url(&path)
    }

    /// The payload of every message posted, in order.
    pub fn messages(&self) -> Vec<Value> {
        self.with(|s| s.messages.clone())
    }
}

// ---------------------------------------------------------------------------
// Mattermost incoming webhook
// ---------------------------------------------------------------------------

/// `POST /hooks/{key}`: JSON, or a form with `payload=`.
pub type MattermostWebhook = Fake<MattermostState>;

pub struct MattermostState {
    key: String,
    messages: Vec<Value>,
    posts: Vec<String>,
}

fn mattermost_error(status: u16, id: &str, message: &str) -> Reply {
    Reply::json(
        status,
        json!({
            "id": id,
            "message": message,
            "detailed_error": "",
            "request_id": random_id(26).to_lowercase(),
            "status_code": status,
        }),
    )
}

impl Service for MattermostState {
    fn answer(&mut self, request: &Recorded) -> Reply {
        let Some(key) = request.route().strip_prefix("/hooks/") else {
            return mattermost_error(
                404,
                "api.context.404.app_error",
                "Sorry, we could not find the page.",
            );
        };
        if key != self.key || request.method != "POST" {
            return self.error(400);
        }
        let Some(payload) = fields(request, Some("payload")) else {
            return mattermost_error(
                400,
                "web.incoming_webhook.parse.app_error",
                "Unable to parse incoming data.",
            );
        };
        let text: Vec<char> = text_field(&payload, "text").chars().collect();
        if text.is_empty() && payload.get("attachments").is_none_or(Value::is_null) {
            return mattermost_error(
                400,
                "web.incoming_webhook.text.app_error",
                "No text specified.",
            );
        }
        // Mattermost splits text over 16383 characters into several posts.
        self.posts.extend(
            text.chunks(16383)
                .map(|chunk| chunk.iter().collect::<String>()),
        );
        self.messages.push(Value::Object(payload));
        Reply::text(200, "ok")
    }

    fn error(&self, status: u16) -> Reply {
        match status {
            400 => mattermost_error(
                400,
                "web.incoming_webhook.invalid.app_error",
                "Invalid webhook.",
            ),
            401 => mattermost_error(
                401,
                "api.context.session_expired.app_error",
                "Invalid or expired session, please login again.",
            ),
            403 => mattermost_error(
                403,
                "api.context.permissions.app_error",
                "You do not have the appropriate permissions.",
            ),
            _ => mattermost_error(
                status,
                "web.incoming_webhook.general.app_error",
                reason(status),
            ),
        }
    }

    fn rate_limited(&self, after: Duration) -> Reply {
        let secs = ceil_secs(after);
        Reply::text(429, "limit exceeded\n")
            .header("x-ratelimit-limit", 10)
            .header("x-ratelimit-remaining", 0)
            .header("x-ratelimit-reset", secs)
            .header("retry-after", secs)
    }
}

impl MattermostWebhook {
    pub async fn start(key: &str) -> MattermostWebhook {
        MattermostWebhook::start_on(LOCALHOST, key).await
    }

    /// The incoming webhook `key`.
    pub async fn start_on(ip: IpAddr, key: &str) -> MattermostWebhook {
        let state = MattermostState {
            key: key.to_owned(),
            messages: Vec::new(),
            posts: Vec::new(),
        };
        Fake::launch(ip, state).await
    }

    /// `…/hooks/{key}`.
    pub fn endpoint(&self) -> String {
        self.url(&format!("hooks/{}", self.with(|s| s.key.clone())))
    }

    /// The payload of every message posted, in order.
    pub fn messages(&self) -> Vec<Value> {
        self.with(|s| s.messages.clone())
    }

    /// The text of the posts created (one message over 16383 characters makes several).
    pub fn posts(&self) -> Vec<String> {
        self.with(|s| s.posts.clone())
    }
}

// ---------------------------------------------------------------------------
// ntfy
// ---------------------------------------------------------------------------

/// `POST`/`PUT /{topic}` (message as body, headers or query for the rest), or
/// `POST /` with a JSON message.
pub type NtfyServer = Fake<NtfyState>;

/// A published message, the same whichever way it was published.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct NtfyMessage {
    pub topic: String,
    /// As sent (ntfy shows "You received a file: attachment.txt" when it is an attachment).
    pub message: String,
    pub title: Option<String>,
    pub tags: Vec<String>,
    /// 1 (min) to 5 (max); `None` when not given (ntfy's default, 3).
    pub priority: Option<u8>,
    pub click: Option<String>,
    pub markdown: bool,
    /// Over 4096 bytes: ntfy made it an attachment.
    pub attachment: bool,
}

pub struct NtfyState {
    token: Option<String>,
    messages: Vec<NtfyMessage>,
}

/// ntfy's error JSON; `link` is a fragment of its publishing docs (`#authentication`).
fn ntfy_error(status: u16, code: u32, error: &str, link: &str) -> Reply {
    let mut body = json!({ "code": code, "http": status, "error": error });
    if !link.is_empty() {
        body["link"] = json!(format!("https://ntfy.sh/docs/publish/{link}"));
    }
    Reply::json(status, body)
}

fn ntfy_priority_error() -> Reply {
    ntfy_error(400, 40007, "invalid priority", "#message-priority")
}

/// Decodes RFC 2047 encoded words (`=?UTF-8?B?…?=`, `=?UTF-8?Q?…?=`) as ntfy does.
fn rfc2047(value: &str) -> String {
    fn word(s: &str) -> Option<(String, usize)> {
        let (charset, rest) = s.strip_prefix("=?")?.split_once('?')?;
        let (encoding, rest) = rest.split_once('?')?;
        let encoded = &rest[..rest.find("?=")?];
        let bytes = match encoding {
            _ if !charset.eq_ignore_ascii_case("utf-8") => return None,
            "B" | "b" => B64.decode(encoded).ok()?,
            "Q" | "q" => {
                let encoded = encoded.replace('_', " ");
                percent_decode(&encoded.replace('=', "%")).into_bytes()
            }
            _ => return None,
        };
        let len = 2 + charset.len() + 1 + encoding.len() + 1 + encoded.len() + 2;
        Some((String::from_utf8(bytes).ok()?, len))
    }
    let (mut out, mut rest, mut after_word) = (String::new(), value, false);
    while let Some(start) = rest.find("=?") {
        let (before, candidate) = rest.split_at(start);
        match word(candidate) {
            Some((decoded, len)) => {
                // Whitespace between two encoded words is not part of the text.
                if !(after_word && before.trim().is_empty()) {
                    out.push_str(before);
                }
                out.push_str(&decoded);
                rest = &candidate[len..];
                after_word = true;
            }
            None => {
                out.push_str(&rest[..start + 2]);
                rest = &candidate[2..];
                after_word = false;
            }
        }
    }
    out + rest
}

fn ntfy_priority(value: &str) -> Result<Option<u8>, ()> {
    Ok(Some(match value.trim().to_ascii_lowercase().as_str() {
        "" => return Ok(None),
        "1" | "min" => 1,
        "2" | "low" => 2,
        "3" | "default" => 3,
        "4" | "high" => 4,
        "5" | "max" | "urgent" => 5,
        _ => return Err(()),
    }))
}

impl NtfyState {
    fn parse(request: &Recorded) -> Result<NtfyMessage, Reply> {
        if request.route() == "/" {
            let bad = ntfy_error(
                400,
                40017,
                "invalid request: request body must be message JSON",
                "#publish-as-json",
            );
            let json: Map<String, Value> =
                serde_json::from_slice(&request.body).map_err(|_| bad)?;
            let text = |name: &str| json.get(name).and_then(Value::as_str).map(str::to_owned);
            let priority = match json.get("priority").map(Value::as_u64) {
                None | Some(Some(0)) => None,
                Some(Some(p @ 1..=5)) => Some(p as u8),
                _ => return Err(ntfy_priority_error()),
            };
            let tags = json
                .get("tags")
                .and_then(Value::as_array)
                .into_iter()
                .flatten();
            return Ok(NtfyMessage {
                topic: text("topic").unwrap_or_default(),
                message: text("message").unwrap_or_default(),
                title: text("title"),
                tags: tags.filter_map(Value::as_str).map(str::to_owned).collect(),
                priority,
                click: text("click"),
                markdown: json
                    .get("markdown")
                    .and_then(Value::as_bool)
                    .unwrap_or(false),
                attachment: false,
            });
        }
        // Headers (`X-` or not, or their short forms), else query parameters.
        let param = |names: &[&str]| {
            let header = names
                .iter()
                .find_map(|n| request.header(n).or(request.header(&format!("x-{n}"))));
            header
                .map(rfc2047)
                .or_else(|| names.iter().find_map(|n| request.query(n)))
        };
        let flag = param(&["markdown", "md"])
            .is_some_and(|v| matches!(v.to_ascii_lowercase().as_str(), "1" | "yes" | "true"));
        let priority = param(&["priority", "prio", "p"]).unwrap_or_default();
        Ok(NtfyMessage {
            topic: request.route()[1..].to_owned(),
            message: String::from_utf8_lossy(&request.body).into_owned(),
            title: param(&["title", "ti", "t"]),
            tags: param(&["tags", "tag", "ta"])
                .map(|t| {
                    t.split(',')
                        .map(|t| t.trim().to_owned())
                        .filter(|t| !t.is_empty())
                        .collect()
                })
                .unwrap_or_default(),
            priority: ntfy_priority(&priority).map_err(|()| ntfy_priority_error())?,
            click: param(&["click"]),
            markdown: flag
                || request
                    .header("content-type")
                    .is_some_and(|c| c.starts_with("text/markdown")),
            attachment: false,
        })
    }
}

impl Service for NtfyState {
    fn answer(&mut self, request: &Recorded) -> Reply {
        if !matches!(request.method.as_str(), "POST" | "PUT") {
            return self.error(404);
        }
        if let Some(token) = &self.token {
            match request.header("authorization") {
                None => return self.error(403),
                Some(auth) if auth.strip_prefix("Bearer ") != Some(token.as_str()) => {
                    return self.error(401);
                }
                Some(_) => {}
            }
        }
        let mut message = match NtfyState::parse(request) {
            Ok(message) => message,
            Err(reply) => return reply,
        };
        let valid_topic = |t: &str| {
            (1..=64).contains(&t.len())
                && t.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        };
        if !valid_topic(&message.topic) {
            return self.error(404);
        }
        if message.message.is_empty() {
            message.message = "triggered".to_owned();
        }
        message.attachment = message.message.len() > 4096;
        let now = unix_now();
        let mut body = json!({
            "id": random_id(12), "time": now, "expires": now + 12 * 3600, "event": "message",
            "topic": message.topic, "message": message.message,
        });
        if message.attachment {
            body["message"] = json!("You received a file: attachment.txt");
            body["attachment"] = json!({
                "name": "attachment.txt", "type": "text/plain; charset=utf-8", "size": message.message.len(),
                "expires": now + 3 * 3600, "url": format!("https://ntfy.sh/file/{}.txt", random_id(12)),
            });
        }
        let optional = [
            ("title", message.title.as_ref().map(|t| json!(t))),
            (
                "tags",
                (!message.tags.is_empty()).then(|| json!(message.tags)),
            ),
            ("priority", message.priority.map(|p| json!(p))),
            ("click", message.click.as_ref().map(|c| json!(c))),
            (
                "content_type",
                message.markdown.then(|| json!("text/markdown")),
            ),
        ];
        for (name, value) in optional {
            if let Some(value) = value {
                body[name] = value;
            }
        }
        self.messages.push(message);
        Reply::json(200, body)
    }

    fn error(&self, status: u16) -> Reply {
        match status {
            401 => ntfy_error(401, 40101, "unauthorized", "#authentication"),
            403 => ntfy_error(403, 40301, "forbidden", "#authentication"),
            404 => ntfy_error(404, 40401, "page not found", ""),
            _ => ntfy_error(
                status,
                u32::from(status) * 100 + 1,
                &reason(status).to_lowercase(),
                "",
            ),
        }
    }

    fn rate_limited(&self, _after: Duration) -> Reply {
        ntfy_error(
            429,
            42901,
            "limit reached: too many requests",
            "#limitations",
        )
    }
}

impl NtfyServer {
    pub async fn start(token: Option<&str>) -> NtfyServer {
        NtfyServer::start_on(LOCALHOST, token).await
    }

    /// With a `token`, publishing needs `Authorization: Bearer <token>`: anonymous
    /// requests are refused 403, a wrong token 401.
    pub async fn start_on(ip: IpAddr, token: Option<&str>) -> NtfyServer {
        let state = NtfyState {
            token: token.map(str::to_owned),
            messages: Vec::new(),
        };
        Fake::launch(ip, state).await
    }

    /// Every message published, in order.
    pub fn messages(&self) -> Vec<NtfyMessage> {
        self.with(|s| s.messages.clone())
    }
}

// ---------------------------------------------------------------------------
// Matrix client-server API
// ---------------------------------------------------------------------------

/// `PUT /_matrix/client/v3/rooms/{roomId}/send/{eventType}/{txnId}`.
pub type MatrixHomeserver = Fake<MatrixState>;

pub struct MatrixState {
    token: String,
    user: String,
    rooms: Vec<String>,
    /// Event id by (token, room, event type, txn id): as Synapse scopes transactions.
    transactions: HashMap<(String, String, String, String), String>,
    events: Vec<(String, String, Value)>,
    duplicates: Vec<String>,
}

fn matrix_error(status: u16, errcode: &str, error: &str) -> Reply {
    Reply::json(status, json!({ "errcode": errcode, "error": error }))
}

impl Service for MatrixState {
    fn answer(&mut self, request: &Recorded) -> Reply {
        let segments: Vec<String> = request.route().split('/').map(percent_decode).collect();
        let [
            _,
            "_matrix",
            "client",
            "v3" | "r0",
            "rooms",
            room,
            "send",
            kind,
            txn,
        ] = segments.iter().map(String::as_str).collect::<Vec<_>>()[..]
        else {
            return matrix_error(404, "M_UNRECOGNIZED", "Unrecognized request");
        };
        if request.method != "PUT" {
            return matrix_error(405, "M_UNRECOGNIZED", "Unrecognized request");
        }
        let bearer = request
            .header("authorization")
            .and_then(|a| a.strip_prefix("Bearer "));
        let Some(token) = bearer
            .map(str::to_owned)
            .or_else(|| request.query("access_token"))
        else {
            return matrix_error(401, "M_MISSING_TOKEN", "Missing access token");
        };
        if token != self.token {
            return self.error(401);
        }
        let key = (token, room.to_owned(), kind.to_owned(), txn.to_owned());
        if let Some(event_id) = self.transactions.get(&key) {
            self.duplicates.push(txn.to_owned());
            return Reply::json(200, json!({ "event_id": event_id }));
        }
        if !self.rooms.iter().any(|r| r == room) {
            return matrix_error(
                403,
                "M_FORBIDDEN",
                &format!("User {} not in room {room}", self.user),
            );
        }
        let Ok(content) = serde_json::from_slice::<Value>(&request.body) else {
            return matrix_error(400, "M_NOT_JSON", "Content not JSON.");
        };
        if !content.is_object() {
            return matrix_error(400, "M_BAD_JSON", "Content must be a JSON object.");
        }
        let event_id = format!("${}", random_id(43));
        self.transactions.insert(key, event_id.clone());
        self.events.push((room.to_owned(), txn.to_owned(), content));
        Reply::json(200, json!({ "event_id": event_id }))
    }

    fn error(&self, status: u16) -> Reply {
        match status {
            400 => matrix_error(400, "M_BAD_JSON", "Bad JSON"),
            401 => Reply::json(
                401,
                json!({
                    "errcode": "M_UNKNOWN_TOKEN", "error": "Invalid access token passed.", "soft_logout": false,
                }),
            ),
            403 => matrix_error(403, "M_FORBIDDEN", "Forbidden"),
            404 => matrix_error(404, "M_NOT_FOUND", "Not found"),
            _ => matrix_error(status, "M_UNKNOWN", "Internal server error"),
        }
    }

    fn rate_limited(&self, after: Duration) -> Reply {
        let body = json!({
            "errcode": "M_LIMIT_EXCEEDED", "error": "Too Many Requests", "retry_after_ms": after.as_millis() as u64,
        });
        Reply::json(429, body).header("retry-after", ceil_secs(after))
    }
}

impl MatrixHomeserver {
    pub async fn start(token: &str, user: &str, rooms: &[&str]) -> MatrixHomeserver {
        MatrixHomeserver::start_on(LOCALHOST, token, user, rooms).await
    }

    /// `user` (e.g. `@bot:example.org`) with access `token`, joined to `rooms`
    /// (e.g. `!abc:example.org`).
    pub async fn start_on(ip: IpAddr, token: &str, user: &str, rooms: &[&str]) -> MatrixHomeserver {
        let state = MatrixState {
            token: token.to_owned(),
            user: user.to_owned(),
            rooms: rooms.iter().map(|r| r.to_string()).collect(),
            transactions: HashMap::new(),
            events: Vec::new(),
            duplicates: Vec::new(),
        };
        Fake::launch(ip, state).await
    }

    /// (room id, txn id, content) of every event sent, in order (not the repeats).
    pub fn events(&self) -> Vec<(String, String, Value)> {
        self.with(|s| s.events.clone())
    }

    /// The txn id of every repeated transaction (answered with the first event id).
    pub fn duplicates(&self) -> Vec<String> {
        self.with(|s| s.duplicates.clone())
    }
}
