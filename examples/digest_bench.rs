//! Digest benchmark: 10,000 subscribers with pending matches → digests rendered and
//! queued in the SQLite outbox → delivered over real SMTP to a server on 127.0.0.1, or
//! with `--to webhook` as signed webhook events to an HTTP receiver on 127.0.0.1.
//! Prints digests/s (render + queue), messages/s or events/s (delivery), the same end to
//! end, CPU seconds and peak RSS, then checks that every recipient (destination) got
//! exactly one message (event) (exit code 1 if not).
//!
//! ```sh
//! cargo run --release --example digest_bench                      # 10,000 subscribers
//! cargo run --release --example digest_bench -- --subscribers 2000 --concurrency 8
//! cargo run --release --example digest_bench -- --smtp in-process
//! cargo run --release --example digest_bench -- --backend postgres --instances 3
//! cargo run --release --example digest_bench -- --to webhook      # 10,000 webhooks
//! cargo run --release --example digest_bench -- --to webhook --channel-concurrency 32
//! ```
//!
//! With `--instances N`, N Tidings instances (each its own `App`: its own database
//! connections, mail pacer and SMTP connections) run `send_digests` on the same database at
//! once, as a cluster's instances would when a digest round comes due: each subscriber's
//! digest must still be queued once and each message sent once. They share this process's
//! two cores. `--backend postgres` starts a PostgreSQL server of its own (Debian's
//! `postgresql` package) in a temporary folder, stopped at the end.
//!
//! # What is measured
//!
//! Setup (printed, not counted): a config with `transport = "smtp"` pointing at the
//! local server, 10,000 subscribers (`add_subscription`, one or two of ten realistic
//! immigration queries each), and 114 items with a few hundred to 1,500 characters of
//! text in four feeds, stored through `Store::store_items` with the compiled matcher as
//! a baseline poll stores them. Every subscriber ends up with 3–8 pending stories
//! (mean 4.6); a digest is about 10 KiB on the wire.
//!
//! Timed: one call of [`tidings::send_digests`], which renders and queues every due
//! digest (one `take_digest` transaction each) and then delivers the whole outbox. Both
//! phases run inside that one call, so the boundary comes from the library's own
//! events: a tracing layer that prints nothing notes the instant of the last
//! `digest queued` event (target `tidings::pipeline`) and of the first `mail sent` event
//! (`tidings::mail`). Render + queue = start → last `digest queued`; deliver = last
//! `digest queued` → return. Should a later version deliver while it still queues
//! (first `mail sent` before the last `digest queued`), the delivery line says so and
//! gives messages/s from the first message sent to the return instead. The end-to-end
//! figure needs no boundary. Other log output is shown at `warn` only. Peak RSS is
//! VmHWM of this process, reset (`clear_refs`) just before the timed call.
//!
//! The mail settings are the shipped defaults (`mail.concurrency = 4`, no rate limit)
//! unless `--concurrency` says otherwise.
//!
//! # `--to webhook`
//!
//! The issue 16 benchmark: events/s to a loopback webhook receiver, with 10,000
//! destinations (target: at least the mail path's rate). Setup adds, for every
//! subscriber, one webhook destination as an admin would (`Store::add_channel`, kind
//! webhook, `http://127.0.0.1:PORT/in/<i>`, its own `whsec_` secret from
//! [`tidings::push::webhook_secret`], every search, active at once), and routes each of
//! their searches to that destination only (`set_search_route(search, false, [it])`): the
//! round writes no mail and one outbox event (~2.8 KiB of JSON) per subscriber.
//! `send_digests` queues them all (its mail sender finds nothing to send) and then sends
//! them through `send_push` with the shipped `[channels]` settings (`concurrency = 8`, no
//! webhook pacing) unless `--channel-concurrency` sets `[channels] concurrency`. The
//! boundary is the last `digest queued` event, as for mail, with the first `delivered`
//! event (target `tidings::push`) in place of the first `mail sent`. CPU is also split at
//! that first event (one look at `/proc` when it is logged): render + queue, then
//! delivery. On this benchmark's 2 cores `--channel-concurrency 32` or `64` delivers no
//! faster than the default 8: delivery is CPU-bound (about 0.3 ms of this process's CPU
//! per event), not waiting on the receiver.
//!
//! The receiver is an axum server in a child process (this same binary with
//! `--serve-webhooks FILE`), so that its work and memory are not this process's; it shares
//! the two cores, and its CPU seconds are printed beside. The parent writes each path's
//! secret to FILE before starting it. It verifies every request as a Standard Webhooks
//! library does (the `webhook-id`, `webhook-timestamp` and `webhook-signature` headers; a
//! timestamp within 5 minutes; a `v1,` HMAC-SHA256 over `{id}.{timestamp}.{body}` keyed
//! by the base64 after `whsec_`), answers 200 (401 to a request that fails), and keeps
//! (path, `webhook-id`, verdict, size) for each request, which it reports when asked.
//!
//! # Where the SMTP server runs
//!
//! The server is the test suite's hand-written ESMTP server (`tests/support`). It runs
//! in a child process (this same binary with `--serve-smtp`), like `poll_bench`'s feed
//! server, because in-process it keeps every message it receives in the benchmark's own
//! heap. Measured both ways at 10,000 subscribers: peak RSS 151 MiB in-process against
//! 22 MiB in a child, delivery rates within run-to-run noise.
//! `--smtp in-process` is kept for comparison. With `--to webhook` it runs as well (the
//! config sends mail there) and must receive nothing.
//!
//! # Verification
//!
//! After the timed call: `send_digests` reports 10,000 queued and 10,000 sent; the
//! outbox holds 10,000 rows, all `sent`; the server received exactly 10,000 messages,
//! exactly one per subscriber address, each carrying the `Message-ID` of that
//! subscriber's outbox row; and every subject counts the stories that subscriber's
//! queries match. Any failure is listed and the exit code is 1.
//!
//! With `--to webhook`: `send_digests` reports 10,000 queued, no mail and 10,000 events
//! sent, none retrying, failed or paused, and the tracing layer saw 10,000 `delivered`;
//! the SMTP server received nothing; the outbox holds 10,000 rows, all `sent`, one per
//! subscriber, each for their webhook (none a mail); the receiver got exactly 10,000
//! requests, exactly one per destination path, every signature valid, no `webhook-id`
//! twice, each `webhook-id` equal to the `message_id` of that destination's outbox row;
//! and every event's title counts the stories that subscriber's queries match.

mod common;

use common::{peak_rss_mib, reset_peak_rss};
use std::collections::{BTreeSet, HashMap, HashSet};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use tidings::config::Config;
use tidings::digest::Schedule;
use tidings::matcher::{Document, Query};
use tidings::parse::{Item, body_text};
use tidings::push::Target;
use tidings::store::{
    ChannelKind, ChannelOrigin, NewChannel, OutboxStatus, SubscriberId, SubscriptionId,
};
use tidings::store::{StoreOutcome, SuccessfulPoll};
use tidings::{App, send_digests};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::Layer;
use tracing_subscriber::filter::{LevelFilter, filter_fn};
use tracing_subscriber::layer::{Context, SubscriberExt as _};
use tracing_subscriber::util::SubscriberInitExt as _;

#[path = "../tests/support/mod.rs"]
mod support;

use support::{SmtpServer, postgres};

/// Where the SMTP server runs.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum SmtpMode {
    Child,
    InProcess,
}

/// Where the digests go.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum To {
    /// Every search to email: one mail per subscriber, over SMTP.
    Mail,
    /// Every search to the subscriber's one webhook: one event per subscriber, over HTTP.
    Webhook,
}

struct Args {
    subscribers: usize,
    concurrency: Option<usize>,
    channel_concurrency: Option<usize>,
    smtp: SmtpMode,
    to: To,
    instances: usize,
    postgres: bool,
}

/// What this process is: the benchmark, or one of its servers in a child process.
enum Role {
    Bench(Args),
    SmtpServer,
    /// The webhook receiver, with the file of its secrets (`path<TAB>secret` lines).
    WebhookReceiver(PathBuf),
}

fn parse_args() -> Role {
    let mut args = Args {
        subscribers: 10_000,
        concurrency: None,
        channel_concurrency: None,
        smtp: SmtpMode::Child,
        to: To::Mail,
        instances: 1,
        postgres: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut value = || it.next().expect("a value after the option");
        match a.as_str() {
            "--serve-smtp" => return Role::SmtpServer,
            "--serve-webhooks" => return Role::WebhookReceiver(value().into()),
            "--subscribers" => args.subscribers = value().parse().expect("a number"),
            "--concurrency" => args.concurrency = Some(value().parse().expect("a number")),
            "--channel-concurrency" => {
                args.channel_concurrency = Some(value().parse().expect("a number"))
            }
            "--to" => {
                args.to = match value().as_str() {
                    "mail" => To::Mail,
                    "webhook" => To::Webhook,
                    other => panic!("--to mail|webhook, not {other}"),
                }
            }
            "--instances" => args.instances = value().parse::<usize>().expect("a number").max(1),
            "--backend" => match value().as_str() {
                "sqlite" => args.postgres = false,
                "postgres" => args.postgres = true,
                other => panic!("--backend sqlite|postgres, not {other}"),
            },
            "--smtp" => {
                args.smtp = match value().as_str() {
                    "child" => SmtpMode::Child,
                    "in-process" => SmtpMode::InProcess,
                    other => panic!("--smtp child|in-process, not {other}"),
                }
            }
            other => panic!("unknown argument {other}"),
        }
    }
    Role::Bench(args)
}

fn main() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    match parse_args() {
        Role::SmtpServer => runtime.block_on(serve_smtp()),
        Role::WebhookReceiver(secrets) => runtime.block_on(serve_webhooks(&secrets)),
        Role::Bench(args) => {
            if !runtime.block_on(bench(args)) {
                std::process::exit(1);
            }
        }
    }
}

// ---- the SMTP server -----------------------------------------------------------------------

/// One message as the server saw it: envelope recipients, `Message-ID`, size.
struct Arrival {
    rcpt_to: Vec<String>,
    message_id: String,
    bytes: usize,
}

fn arrivals(messages: &[support::Received]) -> Vec<Arrival> {
    messages
        .iter()
        .map(|m| Arrival {
            rcpt_to: m.rcpt_to.clone(),
            message_id: message_id(&m.data),
            bytes: m.data.len(),
        })
        .collect()
}

/// The `Message-ID` header of a raw message (empty if none).
fn message_id(data: &[u8]) -> String {
    let text = String::from_utf8_lossy(data);
    text.lines()
        .take_while(|l| !l.is_empty())
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("message-id")
                .then(|| value.trim().to_string())
        })
        .unwrap_or_default()
}

/// Child mode: the test SMTP server on 127.0.0.1. Prints its port, then on each
/// `report` line from stdin prints one `rcpt<TAB>message-id<TAB>bytes` line per message
/// received and `END`. Exits when stdin closes.
async fn serve_smtp() {
    use tokio::io::AsyncBufReadExt as _;
    let server = SmtpServer::start().await;
    println!("{}", server.port());
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        if line.trim() == "report" {
            let mut out = std::io::stdout().lock();
            for a in arrivals(&server.messages()) {
                writeln!(
                    out,
                    "{}\t{}\t{}",
                    a.rcpt_to.join(","),
                    a.message_id,
                    a.bytes
                )
                .unwrap();
            }
            writeln!(out, "END").unwrap();
            out.flush().unwrap();
        }
    }
}

/// The server in a child process; killed when dropped.
struct ChildSmtp {
    child: Child,
    port: u16,
    stdout: BufReader<std::process::ChildStdout>,
}

impl ChildSmtp {
    fn start() -> ChildSmtp {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .arg("--serve-smtp")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start SMTP server");
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        let port = line.trim().parse().expect("the SMTP server's port");
        ChildSmtp {
            child,
            port,
            stdout,
        }
    }

    fn report(&mut self) -> Vec<Arrival> {
        let stdin = self.child.stdin.as_mut().unwrap();
        stdin.write_all(b"report\n").unwrap();
        stdin.flush().unwrap();
        let mut out = Vec::new();
        let mut line = String::new();
        loop {
            line.clear();
            if self.stdout.read_line(&mut line).unwrap() == 0 {
                panic!("SMTP server exited before reporting");
            }
            let line = line.trim_end();
            if line == "END" {
                return out;
            }
            let mut fields = line.split('\t');
            let (rcpt, id, bytes) = (fields.next(), fields.next(), fields.next());
            out.push(Arrival {
                rcpt_to: rcpt
                    .unwrap_or_default()
                    .split(',')
                    .filter(|s| !s.is_empty())
                    .map(str::to_string)
                    .collect(),
                message_id: id.unwrap_or_default().to_string(),
                bytes: bytes.and_then(|b| b.parse().ok()).unwrap_or(0),
            });
        }
    }
}

impl Drop for ChildSmtp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

enum Smtp {
    Child(ChildSmtp),
    InProcess(SmtpServer),
}

impl Smtp {
    async fn start(mode: SmtpMode) -> Smtp {
        match mode {
            SmtpMode::Child => Smtp::Child(ChildSmtp::start()),
            SmtpMode::InProcess => Smtp::InProcess(SmtpServer::start().await),
        }
    }

    fn port(&self) -> u16 {
        match self {
            Smtp::Child(c) => c.port,
            Smtp::InProcess(s) => s.port(),
        }
    }

    fn arrivals(&mut self) -> Vec<Arrival> {
        match self {
            Smtp::Child(c) => c.report(),
            Smtp::InProcess(s) => arrivals(&s.messages()),
        }
    }
}

// ---- the webhook receiver ------------------------------------------------------------------

/// One request as the receiver saw it: its path, `webhook-id`, whether its Standard
/// Webhooks signature (and timestamp) checked out, and its body's size.
struct Hook {
    path: String,
    webhook_id: String,
    /// `ok`, or why the request was refused.
    verdict: String,
    bytes: usize,
}

/// The receiver's state: each path's HMAC key, and what arrived.
struct Receiver {
    keys: HashMap<String, Vec<u8>>,
    hooks: Mutex<Vec<Hook>>,
}

/// The HMAC key of a `whsec_<base64>` secret.
fn webhook_key(secret: &str) -> Option<Vec<u8>> {
    use base64::Engine as _;
    let encoded = secret.strip_prefix("whsec_")?;
    base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .ok()
}

impl Receiver {
    /// Checks a request as a Standard Webhooks receiver does: the three headers, a
    /// timestamp within five minutes, and a `v1` signature made with this path's key over
    /// `{webhook-id}.{webhook-timestamp}.{body}`. Returns the `webhook-id` and `ok`, or
    /// why not.
    fn verify(&self, path: &str, headers: &axum::http::HeaderMap, body: &[u8]) -> (String, String) {
        use base64::Engine as _;
        use hmac::Mac as _;
        let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        let id = header("webhook-id").unwrap_or_default().to_string();
        let (Some(timestamp), Some(signatures)) =
            (header("webhook-timestamp"), header("webhook-signature"))
        else {
            return (id, "missing webhook-timestamp or webhook-signature".into());
        };
        if id.is_empty() {
            return (id, "missing webhook-id".into());
        }
        let Some(key) = self.keys.get(path) else {
            return (id, "no secret for this path".into());
        };
        let Ok(at) = timestamp.trim().parse::<i64>() else {
            return (id, format!("bad webhook-timestamp {timestamp:?}"));
        };
        if (Utc::now().timestamp() - at).abs() > 300 {
            return (id, format!("webhook-timestamp {at} is over 5 minutes off"));
        }
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(key).expect("any key length");
        mac.update(format!("{id}.{at}.").as_bytes());
        mac.update(body);
        let valid = signatures
            .split(' ')
            .filter_map(|s| s.split_once(','))
            .filter(|(version, _)| *version == "v1")
            .filter_map(|(_, sig)| base64::engine::general_purpose::STANDARD.decode(sig).ok())
            .any(|sig| mac.clone().verify_slice(&sig).is_ok());
        match valid {
            true => (id, "ok".into()),
            false => (id, "no valid v1 signature".into()),
        }
    }
}

async fn receive(
    axum::extract::State(receiver): axum::extract::State<Arc<Receiver>>,
    uri: axum::http::Uri,
    headers: axum::http::HeaderMap,
    body: bytes::Bytes,
) -> axum::http::StatusCode {
    let path = uri.path().to_string();
    let (webhook_id, verdict) = receiver.verify(&path, &headers, &body);
    let status = match verdict.as_str() {
        "ok" => axum::http::StatusCode::OK,
        _ => axum::http::StatusCode::UNAUTHORIZED,
    };
    receiver.hooks.lock().unwrap().push(Hook {
        path,
        webhook_id,
        verdict,
        bytes: body.len(),
    });
    status
}

/// Child mode: an HTTP receiver on 127.0.0.1 for the webhooks whose secrets `secrets`
/// lists (`path<TAB>whsec_…` lines), any method, any path; answers 200 to a request
/// whose signature checks out and 401 otherwise. Prints its port, then on each `report`
/// line from stdin prints one `path<TAB>webhook-id<TAB>verdict<TAB>bytes` line per
/// request received and `END <its CPU seconds>`. Exits when stdin closes.
async fn serve_webhooks(secrets: &Path) {
    use tokio::io::AsyncBufReadExt as _;
    let text = std::fs::read_to_string(secrets).expect("the webhook secrets file");
    let keys = text
        .lines()
        .filter_map(|l| l.split_once('\t'))
        .map(|(path, secret)| {
            let key =
                webhook_key(secret).unwrap_or_else(|| panic!("{path}: not whsec_ and base64"));
            (path.to_string(), key)
        })
        .collect();
    let receiver = Arc::new(Receiver {
        keys,
        hooks: Mutex::new(Vec::new()),
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    println!("{}", listener.local_addr().unwrap().port());
    let app = axum::Router::new()
        .fallback(receive)
        .with_state(receiver.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        if line.trim() == "report" {
            let hooks = receiver.hooks.lock().unwrap();
            let mut out = std::io::stdout().lock();
            for h in hooks.iter() {
                writeln!(
                    out,
                    "{}\t{}\t{}\t{}",
                    h.path, h.webhook_id, h.verdict, h.bytes
                )
                .unwrap();
            }
            writeln!(out, "END {:.2}", cpu_seconds()).unwrap();
            out.flush().unwrap();
        }
    }
}

/// The receiver in a child process; killed when dropped.
struct ChildReceiver {
    child: Child,
    port: u16,
    stdout: BufReader<std::process::ChildStdout>,
}

impl ChildReceiver {
    fn start(secrets: &Path) -> ChildReceiver {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .arg("--serve-webhooks")
            .arg(secrets)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the webhook receiver");
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        let port = line.trim().parse().expect("the webhook receiver's port");
        ChildReceiver {
            child,
            port,
            stdout,
        }
    }

    /// What arrived, and the receiver's CPU seconds so far.
    fn report(&mut self) -> (Vec<Hook>, f64) {
        let stdin = self.child.stdin.as_mut().unwrap();
        stdin.write_all(b"report\n").unwrap();
        stdin.flush().unwrap();
        let mut out = Vec::new();
        let mut line = String::new();
        loop {
            line.clear();
            if self.stdout.read_line(&mut line).unwrap() == 0 {
                panic!("webhook receiver exited before reporting");
            }
            let line = line.trim_end();
            if let Some(cpu) = line.strip_prefix("END") {
                return (out, cpu.trim().parse().unwrap_or(f64::NAN));
            }
            let mut fields = line.split('\t');
            let mut next = || fields.next().unwrap_or_default().to_string();
            let (path, webhook_id, verdict, bytes) = (next(), next(), next(), next());
            out.push(Hook {
                path,
                webhook_id,
                verdict,
                bytes: bytes.parse().unwrap_or(0),
            });
        }
    }
}

impl Drop for ChildReceiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---- phase boundaries from the library's own events ---------------------------------------

/// Records when the last digest was queued and the first mail sent or webhook event
/// delivered; prints nothing.
#[derive(Clone, Default)]
struct PhaseClock(Arc<Mutex<Phases>>);

#[derive(Default, Debug, Clone, Copy)]
struct Phases {
    last_queued: Option<Instant>,
    first_sent: Option<Instant>,
    queued_events: usize,
    sent_events: usize,
    /// `delivered` events of `tidings::push`: messages to destinations beside email.
    first_delivered: Option<Instant>,
    delivered_events: usize,
    /// This process's CPU seconds at the first `delivered` event (one look at `/proc`).
    cpu_at_first_delivered: Option<f64>,
}

/// Whether an event's message is `delivered`.
struct IsDelivered(bool);

impl tracing::field::Visit for IsDelivered {
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        if field.name() == "message" {
            self.0 = value == "delivered";
        }
    }

    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.0 = format!("{value:?}") == "delivered";
        }
    }
}

impl<S: Subscriber> Layer<S> for PhaseClock {
    fn on_event(&self, event: &Event<'_>, _cx: Context<'_, S>) {
        let now = Instant::now();
        // `digest queued`, `mail sent` and `delivered` all name the outbox row.
        if event.metadata().fields().field("outbox").is_none() {
            return;
        }
        let target = event.metadata().target();
        let delivered = target == "tidings::push" && {
            let mut visitor = IsDelivered(false);
            event.record(&mut visitor);
            visitor.0
        };
        let mut p = self.0.lock().unwrap();
        match target {
            "tidings::pipeline" => {
                p.last_queued = Some(now);
                p.queued_events += 1;
            }
            "tidings::mail" => {
                p.first_sent.get_or_insert(now);
                p.sent_events += 1;
            }
            "tidings::push" if delivered => {
                if p.first_delivered.is_none() {
                    p.first_delivered = Some(now);
                    p.cpu_at_first_delivered = Some(cpu_seconds());
                }
                p.delivered_events += 1;
            }
            _ => {}
        }
    }
}

impl PhaseClock {
    fn install(&self) {
        let clock = self.clone().with_filter(filter_fn(|m| {
            *m.level() == Level::INFO
                && matches!(
                    m.target(),
                    "tidings::pipeline" | "tidings::mail" | "tidings::push"
                )
        }));
        let stderr = tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_filter(LevelFilter::WARN);
        tracing_subscriber::registry()
            .with(stderr)
            .with(clock)
            .init();
    }

    fn reset(&self) {
        *self.0.lock().unwrap() = Phases::default();
    }

    fn get(&self) -> Phases {
        *self.0.lock().unwrap()
    }
}

// ---- the data ------------------------------------------------------------------------------

/// The queries subscribers choose from, each with the stories written to match it
/// (3 or 4 each, so one or two queries give 3–8 stories).
const TOPICS: &[(&str, &[&str])] = &[
    (
        "asylum",
        &[
            "USCIS updates affirmative asylum interview scheduling priorities",
            "Asylum office backlog tops one million pending cases",
            "Court rules on asylum eligibility for people who crossed between ports",
            "New one-year filing deadline guidance for asylum seekers",
        ],
    ),
    (
        "\"H-1B\" OR H1B",
        &[
            "H-1B cap registration for fiscal year 2027 opens March 1",
            "DHS finalizes H-1B modernization rule",
            "Employers report fewer H1B selections in second round",
            "H-1B petition fee increase takes effect next month",
        ],
    ),
    (
        "TPS",
        &[
            "TPS designation for Venezuela extended 18 months",
            "Re-registration period opens for Haiti TPS beneficiaries",
            "Automatic EAD extension for TPS holders explained",
        ],
    ),
    (
        "\"green card\" -lottery",
        &[
            "Green card interview waivers expanded for family cases",
            "How to check your green card case status online",
            "Green card holders: new rules for reentry permits",
            "Employment-based green card backlog: what the numbers show",
        ],
    ),
    (
        "parole",
        &[
            "CHNV parole program applications paused",
            "Humanitarian parole requests: processing times lengthen",
            "Parole in place for military families continues",
        ],
    ),
    (
        "DACA OR \"deferred action\"",
        &[
            "DACA renewal filings: court order keeps program open",
            "Appeals court hears arguments on DACA rule",
            "Deferred action for special immigrant juveniles restored",
        ],
    ),
    (
        "naturalization OR citizenship",
        &[
            "New naturalization civics test takes effect",
            "Citizenship ceremonies held on Independence Day",
            "Naturalization fee waiver form revised",
            "Record number of citizenship applications in fiscal 2026",
        ],
    ),
    (
        "\"visa bulletin\"",
        &[
            "December visa bulletin: EB-2 India advances six months",
            "Visa bulletin predictions for the second quarter",
            "State Department explains visa bulletin final action dates",
        ],
    ),
    (
        "title:deport*",
        &[
            "Deportation flights resume to Central America",
            "Deportations rise 12 percent in first quarter",
            "Deported veterans program reopens applications",
        ],
    ),
    (
        "OPT student",
        &[
            "STEM OPT extension rules clarified for student employers",
            "Student visa holders: OPT unemployment limits reminder",
            "OPT work authorization delays frustrate international student graduates",
        ],
    ),
];

/// Stories no query matches (one of them mentions a green card, but with "lottery").
const OTHER_NEWS: &[&str] = &[
    "Diversity visa lottery results: green card chances for 2027 entrants",
    "Processing times update for the Nebraska Service Center",
    "Federal Register notice revises biometrics appointment rules",
    "Consulates expand interview capacity in Mexico City",
    "Online filing now available for more benefit forms",
    "Agency publishes annual statistical yearbook",
    "Immigration court adds judges in Houston and Atlanta",
    "Fee schedule: what changes for employers this year",
    "Border wait times lengthen over holiday weekend",
    "Advisory opinion clarifies employer sponsorship obligations",
    "Refugee admissions ceiling set for next fiscal year",
    "Address change requirements: reminder for applicants",
    "Translation requirements for supporting documents",
    "Public charge guidance remains unchanged",
    "New office opens in Sacramento to serve northern California",
    "Webinar: preparing for your biometrics appointment",
    "Medical examination form updated with new vaccine list",
    "Ombudsman annual report highlights case delays",
    "Visitor visa wait times fall in several countries",
    "Employers reminded of I-9 retention rules",
];

/// Feeds: (id, name, tags). Their URLs are on loopback and never fetched.
const FEEDS: &[(&str, &str, &[&str])] = &[
    ("uscis-news", "USCIS News", &["official", "us"]),
    ("visaverge", "VisaVerge", &["news"]),
    ("immigration-daily", "Immigration Daily", &["news", "us"]),
    ("law-journal", "Immigration Law Journal", &["legal"]),
];

const LEAD: &str = "Officials said applicants should read the updated guidance carefully \
    before filing, keep copies of every notice they receive and check the agency's website \
    for the current edition of each form. Attorneys advised clients to gather supporting \
    documents early, since requests for evidence remain common and can add months to a case.";

const CONTENT: &str = "The announcement follows months of comments from advocacy groups, \
    employers and local officials, who asked for clearer instructions and shorter waits. \
    According to the agency, the changes are meant to reduce the number of incomplete \
    applications, which currently account for a large share of rejections. Field offices \
    will receive training over the coming weeks, and a question-and-answer page will be \
    updated as new cases come up. Community organizations plan free information sessions \
    in several cities, with interpreters available in Spanish, Haitian Creole, Arabic and \
    Ukrainian. Anyone with an appointment already scheduled should attend as planned unless \
    they receive a new notice by mail.";

/// `words` words of text only story `n` has: matching stories are different news, and
/// text shared by all of them ([`LEAD`], [`CONTENT`]) would make them one story (see
/// README "One story, one alert"). Made-up words, from a fixed sequence per story.
fn story_text(n: usize, words: usize) -> String {
    const SYLLABLES: &[&str] = &[
        "ba", "ke", "li", "mo", "nu", "ra", "se", "ti", "vo", "za", "do", "fi", "gu", "ha", "je",
        "pe",
    ];
    let mut state = n as u64 * 2_654_435_761 + 1;
    let mut next = || {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (state >> 33) as usize
    };
    (0..words)
        .map(|_| {
            (0..3)
                .map(|_| SYLLABLES[next() % SYLLABLES.len()])
                .collect::<String>()
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// One item per story: the matching stories spread over the feeds, each with text of its
/// own, and each of the other stories in every feed (outlets covering the same news,
/// under their own links: one story). All published within the last day (the baseline
/// window), so they all count.
fn items_by_feed(now: DateTime<Utc>) -> Vec<Vec<Item>> {
    let matching = TOPICS
        .iter()
        .flat_map(|(_, titles)| titles.iter())
        .enumerate()
        .map(|(n, title)| (*title, n % FEEDS.len(), true));
    let stories = matching.chain(
        (0..FEEDS.len()).flat_map(|f| OTHER_NEWS.iter().map(move |title| (*title, f, false))),
    );
    let mut feeds = vec![Vec::new(); FEEDS.len()];
    for (n, (title, f, own_text)) in stories.enumerate() {
        let (lead, content) = if own_text {
            (story_text(n, 60), story_text(n + 10_000, 130))
        } else {
            (LEAD.to_string(), CONTENT.to_string())
        };
        let slug: String = title
            .to_ascii_lowercase()
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .collect();
        let link = format!("https://{}.example/news/{n}-{slug}", FEEDS[f].0);
        feeds[f].push(Item {
            key: format!("guid:{link}"),
            guid: Some(link.clone()),
            link: Some(link),
            title: title.to_string(),
            summary: format!("{title}. {lead}"),
            content: if n.is_multiple_of(2) {
                format!("{title}. {lead}\n{content}")
            } else {
                String::new()
            },
            published: Some(now - chrono::Duration::minutes(7 * n as i64 + 3)),
            declared_lang: None,
        });
    }
    feeds
}

/// Subscriber `i`'s queries (indexes into [`TOPICS`]): one, and for every third a second.
fn queries_of(i: usize) -> Vec<usize> {
    let first = i % TOPICS.len();
    let mut qs = vec![first];
    if i.is_multiple_of(3) {
        qs.push((first + 1 + (i / TOPICS.len()) % (TOPICS.len() - 1)) % TOPICS.len());
    }
    qs
}

fn email_of(i: usize) -> String {
    format!("subscriber{i:05}@example.org")
}

/// The path of subscriber `i`'s webhook on the receiver.
fn hook_path(i: usize) -> String {
    format!("/in/{i}")
}

// ---- measurement helpers -------------------------------------------------------------------

/// CPU time (user + system) of this process so far, in seconds.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 of the whole line: 11 and 12 after ')'.
    (ticks(11) + ticks(12)) / 100.0
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

// ---- the benchmark -------------------------------------------------------------------------

/// Runs the benchmark; false when a check failed.
async fn bench(args: Args) -> bool {
    let clock = PhaseClock::default();
    clock.install();
    let setup_started = Instant::now();
    let mut smtp = Smtp::start(args.smtp).await;

    let dir = tempfile::tempdir().unwrap();
    // With `--to webhook`: a secret per destination, in a file the receiver reads.
    let mut receiver = None;
    let mut secrets = Vec::new();
    if args.to == To::Webhook {
        secrets = (0..args.subscribers)
            .map(|_| tidings::push::webhook_secret().unwrap())
            .collect();
        let file = dir.path().join("webhook-secrets.tsv");
        let lines: String = secrets
            .iter()
            .enumerate()
            .map(|(i, secret)| format!("{}\t{secret}\n", hook_path(i)))
            .collect();
        std::fs::write(&file, lines).unwrap();
        receiver = Some(ChildReceiver::start(&file));
    }
    let (_server, database) = postgres::bench_database(args.postgres);
    let mut config = format!("database = \"{database}\"\n");
    config.push_str("[mail]\nfrom = \"Tidings <alerts@tidings.example>\"\n");
    config.push_str("transport = \"smtp\"\nsend_timeout = \"30s\"\n");
    if let Some(c) = args.concurrency {
        config.push_str(&format!("concurrency = {c}\n"));
    }
    config.push_str(&format!(
        "[mail.smtp]\nhost = \"127.0.0.1\"\nport = {}\ntls = \"none\"\n\
         [web]\nbase_url = \"https://alerts.tidings.example/\"\n",
        smtp.port()
    ));
    if let Some(c) = args.channel_concurrency {
        config.push_str(&format!("[channels]\nconcurrency = {c}\n"));
    }
    for (id, name, tags) in FEEDS {
        let tags: Vec<String> = tags.iter().map(|t| format!("{t:?}")).collect();
        config.push_str(&format!(
            "[[feeds]]\nid = \"{id}\"\nname = \"{name}\"\nurl = \"http://127.0.0.1:9/feeds/{id}.xml\"\ntags = [{}]\n",
            tags.join(", ")
        ));
    }
    let path = dir.path().join("config.toml");
    std::fs::write(&path, config).unwrap();
    let mut apps = Vec::new();
    for _ in 0..args.instances {
        apps.push(App::open(Config::load(&path).unwrap()).await.unwrap());
    }
    let app = &apps[0];
    let now = Utc::now();

    // Subscribers.
    for i in 0..args.subscribers {
        let email = email_of(i);
        for q in queries_of(i) {
            app.store
                .add_subscription(
                    &email,
                    TOPICS[q].0,
                    Schedule::Immediate,
                    chrono_tz::Tz::UTC,
                    now,
                )
                .await
                .unwrap();
        }
    }

    // With `--to webhook`: each subscriber's one webhook, taking each of their searches,
    // which no longer go to email. `subscriber_index`: the subscriber of each id.
    let mut subscriber_index: HashMap<SubscriberId, usize> = HashMap::new();
    if let Some(receiver) = &receiver {
        for (i, secret) in secrets.iter().enumerate() {
            let subscriber = app.store.subscriber(&email_of(i)).await.unwrap().unwrap();
            subscriber_index.insert(subscriber.id, i);
            let url = format!("http://127.0.0.1:{}{}", receiver.port, hook_path(i));
            let target = Target::Webhook {
                url: url.parse().unwrap(),
            };
            let channel = app
                .store
                .add_channel(
                    NewChannel {
                        subscriber_id: subscriber.id,
                        name: "hook".into(),
                        kind: ChannelKind::Webhook,
                        target: serde_json::to_string(&target).unwrap(),
                        secret: Some(secret.clone()),
                        secret_env: None,
                        added_by: ChannelOrigin::Admin,
                        confirm_code: None,
                        every_search: true,
                        searches: Vec::new(),
                        limits: None,
                        verification: None,
                    },
                    now,
                )
                .await
                .unwrap();
            for (search, _) in app.store.subscriptions_of(subscriber.id).await.unwrap() {
                app.store
                    .set_search_route(search, false, vec![channel])
                    .await
                    .unwrap();
            }
        }
    }

    // Items and their matches, stored as a poll stores them (the baseline poll).
    let matcher = app.current_matcher().await.unwrap();
    let feeds = app
        .store
        .claim_feeds(now, Duration::from_secs(300), false)
        .await
        .unwrap();
    let backlog = chrono::Duration::from_std(app.config.poll.initial_backlog).unwrap();
    let items = items_by_feed(now);
    let parsed: Vec<Query> = TOPICS
        .iter()
        .map(|(q, _)| Query::parse(q).unwrap())
        .collect();
    // Which stories each query matches, to check each subject against.
    let mut matched_by_query: Vec<BTreeSet<String>> = vec![BTreeSet::new(); TOPICS.len()];
    let (mut stored_items, mut stored_matches) = (0, 0);
    for feed in feeds {
        let f = FEEDS.iter().position(|(id, ..)| *id == feed.id).unwrap();
        let tags: Vec<String> = FEEDS[f].2.iter().map(|t| t.to_string()).collect();
        let document = |item: &Item| {
            Document::new(&item.title, &body_text(&item.summary, &item.content))
                .with_source(&feed.id, &tags)
        };
        for item in &items[f] {
            let doc = document(item);
            for (q, query) in parsed.iter().enumerate() {
                if query.matches(&doc) {
                    matched_by_query[q].insert(item.link.clone().unwrap());
                }
            }
        }
        let poll = SuccessfulPoll {
            items: items[f].clone().into(),
            etag: None,
            last_modified: None,
            full_fetch: true,
            moved_to: None,
            repairs: std::sync::Arc::new([]),
            body_hash: None,
            now,
            next_poll_at: now + chrono::Duration::minutes(15),
            baseline_cutoff: now - backlog,
            matcher_generation: matcher.generation,
            snapshot: None,
            stories: Default::default(),
            languages: Default::default(),
            prepared: Default::default(),
        };
        let StoreOutcome::Stored(stored) = app
            .store
            .store_items(&feed, poll, {
                let (matcher, id, tags) = (matcher.clone(), feed.id.clone(), tags.clone());
                move |item, _, _| {
                    let body = body_text(&item.summary, &item.content);
                    let doc = Document::new(&item.title, &body).with_source(&id, &tags);
                    let found = matcher.matcher.find_matches(&doc);
                    found.into_iter().map(SubscriptionId).collect()
                }
            })
            .await
            .unwrap()
        else {
            panic!("subscriptions changed while the benchmark stored items");
        };
        stored_items += stored.new_items;
        stored_matches += stored.matches;
    }
    let expected: HashMap<String, usize> = (0..args.subscribers)
        .map(|i| {
            let stories: BTreeSet<&String> = queries_of(i)
                .into_iter()
                .flat_map(|q| &matched_by_query[q])
                .collect();
            (email_of(i), stories.len())
        })
        .collect();
    let per_subscriber: Vec<usize> = expected.values().copied().collect();
    let setup_secs = setup_started.elapsed().as_secs_f64();
    println!(
        "digest_bench: {} subscribers, {} subscriptions, {} items in {} feeds, {} pending matches; \
         stories per digest min {} / mean {:.1} / max {}; {}; database: {}, {} instance(s)",
        args.subscribers,
        app.store.subscriptions().await.unwrap().queries.len(),
        stored_items,
        FEEDS.len(),
        stored_matches,
        per_subscriber.iter().min().unwrap_or(&0),
        per_subscriber.iter().sum::<usize>() as f64 / per_subscriber.len().max(1) as f64,
        per_subscriber.iter().max().unwrap_or(&0),
        match args.to {
            To::Mail => format!(
                "mail.concurrency {}; SMTP server: {}",
                app.config.mail.concurrency,
                match args.smtp {
                    SmtpMode::Child => "child process, 127.0.0.1",
                    SmtpMode::InProcess => "in-process, 127.0.0.1",
                }
            ),
            To::Webhook => format!(
                "to {} webhooks (one per subscriber, every search, none to email); \
                 channels.concurrency {}; webhook receiver: child process, 127.0.0.1",
                subscriber_index.len(),
                app.config.channels.concurrency
            ),
        },
        if args.postgres {
            "PostgreSQL"
        } else {
            "SQLite"
        },
        args.instances,
    );
    println!(
        "setup (not counted): {setup_secs:.2} s; load average before run: {}",
        load_average()
    );

    // The timed part.
    reset_peak_rss();
    clock.reset();
    let cpu_before = cpu_seconds();
    let started = Instant::now();
    // Every instance runs the round at once; their summaries add up.
    let rounds =
        futures_util::future::join_all(apps.iter().map(|app| send_digests(app, now, false))).await;
    let summary = rounds.into_iter().try_fold(
        tidings::pipeline::DigestSummary::default(),
        |mut all, round| {
            let round = round?;
            all.queued += round.queued;
            all.delivery += round.delivery;
            all.push += round.push;
            anyhow::Ok(all)
        },
    );
    let ended = Instant::now();
    let cpu = cpu_seconds() - cpu_before;
    let peak = peak_rss_mib();
    let phases = clock.get();
    let summary = match summary {
        Ok(s) => s,
        Err(e) => {
            println!("FAIL: send_digests: {e:#}");
            return false;
        }
    };

    let total = (ended - started).as_secs_f64();
    let queue_end = phases.last_queued.unwrap_or(started);
    let n = summary.queued as f64;
    println!(
        "render + queue: {queue:.2} s, {:.0} digests/s ({} queued)",
        n / (queue_end - started).as_secs_f64(),
        summary.queued,
        queue = (queue_end - started).as_secs_f64(),
    );
    // What the round delivered, the first delivery and how it is named.
    let (first_out, out, retrying, failed, unit, verb, target) = match args.to {
        To::Mail => (
            phases.first_sent,
            summary.delivery.sent,
            summary.delivery.retrying,
            summary.delivery.failed,
            "messages",
            "sent",
            "target 500",
        ),
        To::Webhook => (
            phases.first_delivered,
            summary.push.sent,
            summary.push.retrying,
            summary.push.failed,
            "events",
            "delivered",
            "target: the mail path's rate",
        ),
    };
    let first_out = first_out.unwrap_or(ended);
    let deliver = (ended - queue_end).as_secs_f64();
    let sent = out as f64;
    if first_out >= queue_end {
        println!(
            "deliver:        {deliver:.2} s, {:.0} {unit}/s ({out} {verb}, {retrying} retrying, \
             {failed} failed; first {verb} {:.1} ms after the last queued)",
            sent / deliver,
            (first_out - queue_end).as_secs_f64() * 1000.0
        );
    } else {
        // A library that delivers while it still queues: no separate delivery phase.
        let window = (ended - first_out).as_secs_f64();
        println!(
            "deliver:        overlapped with queueing: first {verb} {:.2} s after the start, \
             {window:.2} s from first {verb} to last, {:.0} {unit}/s over that window; \
             {deliver:.2} s after the last queued ({out} {verb}, {retrying} retrying, \
             {failed} failed)",
            (first_out - started).as_secs_f64(),
            sent / window,
        );
    }
    println!(
        "end to end:     {total:.2} s, {:.0} {unit}/s ({target}); CPU {cpu:.2} s \
         ({:.0}% of one core) in this process; peak RSS {peak:.1} MiB",
        sent / total,
        cpu / total * 100.0
    );
    if let (To::Webhook, Some(at)) = (args.to, phases.cpu_at_first_delivered) {
        // No mail: nothing is delivered before the last digest is queued.
        println!(
            "CPU by phase:   {:.2} s until the first event delivered (render + queue), \
             {:.2} s delivering",
            at - cpu_before,
            cpu_before + cpu - at
        );
    }

    // Checks.
    let mut failures = Vec::new();
    let want = args.subscribers;
    let (want_mail, want_push) = match args.to {
        To::Mail => (want, 0),
        To::Webhook => (0, want),
    };
    if summary.queued != want
        || summary.delivery.sent != want_mail
        || summary.push.sent != want_push
    {
        failures.push(match args.to {
            To::Mail => format!(
                "send_digests queued {} and sent {}, expected {want} each",
                summary.queued, summary.delivery.sent
            ),
            To::Webhook => format!(
                "send_digests queued {}, sent {} mails and {} events; expected {want} queued, \
                 no mail, {want} events",
                summary.queued, summary.delivery.sent, summary.push.sent
            ),
        });
    }
    if summary.delivery.retrying + summary.delivery.failed + summary.delivery.paused != 0 {
        failures.push(format!("delivery problems: {:?}", summary.delivery));
    }
    if summary.push.retrying + summary.push.failed + summary.push.paused != 0 {
        failures.push(format!("webhook delivery problems: {:?}", summary.push));
    }
    if phases.queued_events != want
        || phases.sent_events != want_mail
        || phases.delivered_events != want_push
    {
        failures.push(match args.to {
            To::Mail => format!(
                "events: {} queued, {} sent (phase boundary unreliable)",
                phases.queued_events, phases.sent_events
            ),
            To::Webhook => format!(
                "events: {} queued, {} mail sent, {} delivered (phase boundary unreliable)",
                phases.queued_events, phases.sent_events, phases.delivered_events
            ),
        });
    }
    let outbox = app.store.outbox().await.unwrap();
    let not_sent = outbox
        .iter()
        .filter(|m| m.status != OutboxStatus::Sent)
        .count();
    if outbox.len() != want || not_sent != 0 {
        failures.push(format!(
            "outbox has {} rows, {not_sent} not sent; expected {want}, all sent",
            outbox.len()
        ));
    }
    match receiver {
        None => check_mail(&mut smtp, &outbox, &expected, want, failures),
        Some(mut receiver) => {
            let mails = smtp.arrivals().len();
            if mails != 0 {
                failures.push(format!(
                    "the SMTP server received {mails} messages, expected none"
                ));
            }
            let subscribers = Subscribers {
                index: &subscriber_index,
                expected: &expected,
            };
            check_webhooks(&mut receiver, &outbox, &subscribers, want, failures)
        }
    }
}

/// The story count a digest's subject (or an event's title) gives: `Tidings: N …`.
fn stories_in(subject: &str) -> Option<usize> {
    subject
        .strip_prefix("Tidings: ")
        .and_then(|s| s.split(' ').next())
        .and_then(|n| n.parse::<usize>().ok())
}

/// Prints the checks' result; true when there were no failures.
fn report_checks(failures: &[String], ok: String) -> bool {
    if failures.is_empty() {
        println!("check: OK: {ok}");
        true
    } else {
        println!("check: FAILED ({} problems)", failures.len());
        for f in failures.iter().take(20) {
            println!("  {f}");
        }
        false
    }
}

/// `--to mail`: one mail per subscriber, each with its outbox row's `Message-ID` and
/// the right story count.
fn check_mail(
    smtp: &mut Smtp,
    outbox: &[tidings::store::OutboxMessage],
    expected: &HashMap<String, usize>,
    want: usize,
    mut failures: Vec<String>,
) -> bool {
    let mut by_recipient: HashMap<&str, &tidings::store::OutboxMessage> = HashMap::new();
    for m in outbox {
        if by_recipient.insert(&m.recipient, m).is_some() {
            failures.push(format!("two outbox rows for {}", m.recipient));
        }
        if stories_in(&m.subject) != expected.get(&m.recipient).copied() {
            failures.push(format!(
                "{}: subject {:?}, expected {:?} stories",
                m.recipient,
                m.subject,
                expected.get(&m.recipient)
            ));
        }
    }
    let received = smtp.arrivals();
    let mut per_rcpt: HashMap<&str, usize> = HashMap::new();
    for a in &received {
        if a.rcpt_to.len() != 1 {
            failures.push(format!("message with recipients {:?}", a.rcpt_to));
        }
        for r in &a.rcpt_to {
            *per_rcpt.entry(r).or_default() += 1;
            match by_recipient.get(r.as_str()) {
                None => failures.push(format!("message to unknown recipient {r}")),
                Some(row) if row.message_id != a.message_id => failures.push(format!(
                    "{r}: received Message-ID {}, outbox has {}",
                    a.message_id, row.message_id
                )),
                Some(_) => {}
            }
        }
    }
    for i in 0..want {
        let email = email_of(i);
        let got = per_rcpt.get(email.as_str()).copied().unwrap_or(0);
        if got != 1 {
            failures.push(format!(
                "{email} received {got} messages, expected exactly 1"
            ));
        }
    }
    if received.len() != want {
        failures.push(format!(
            "server received {} messages, expected {want}",
            received.len()
        ));
    }
    let mean_bytes =
        received.iter().map(|a| a.bytes).sum::<usize>() as f64 / received.len().max(1) as f64;
    report_checks(
        &failures,
        format!(
            "{want} recipients, exactly one message each ({} received, mean {:.1} KiB), \
             Message-IDs and story counts match the outbox",
            received.len(),
            mean_bytes / 1024.0
        ),
    )
}

/// Who the subscribers are, for `--to webhook`'s checks.
struct Subscribers<'a> {
    /// Subscriber `i`'s id → `i`.
    index: &'a HashMap<SubscriberId, usize>,
    /// Address → stories their digest must carry.
    expected: &'a HashMap<String, usize>,
}

/// `--to webhook`: no mail; one event per destination, each with its outbox row's
/// `message_id` as `webhook-id`, a valid signature and the right story count.
fn check_webhooks(
    receiver: &mut ChildReceiver,
    outbox: &[tidings::store::OutboxMessage],
    subscribers: &Subscribers<'_>,
    want: usize,
    mut failures: Vec<String>,
) -> bool {
    // Subscriber i's outbox row.
    let mut rows: HashMap<usize, &tidings::store::OutboxMessage> = HashMap::new();
    for m in outbox {
        let Some(&i) = m.subscriber_id.and_then(|id| subscribers.index.get(&id)) else {
            failures.push(format!("outbox row {} of no known subscriber", m.id));
            continue;
        };
        if m.recipient != "webhook:hook" {
            failures.push(format!(
                "outbox row {} goes to {:?}, not the webhook",
                m.id, m.recipient
            ));
        }
        if rows.insert(i, m).is_some() {
            failures.push(format!("two outbox rows for {}", email_of(i)));
        }
        let want_stories = subscribers.expected.get(&email_of(i)).copied();
        if stories_in(&m.subject) != want_stories {
            failures.push(format!(
                "{}: event title {:?}, expected {want_stories:?} stories",
                email_of(i),
                m.subject,
            ));
        }
    }
    let (hooks, receiver_cpu) = receiver.report();
    let mut per_path: HashMap<&str, usize> = HashMap::new();
    let mut ids = HashSet::new();
    let mut invalid = 0;
    for h in &hooks {
        *per_path.entry(&h.path).or_default() += 1;
        if !ids.insert(h.webhook_id.as_str()) {
            failures.push(format!("{}: webhook-id {} twice", h.path, h.webhook_id));
        }
        if h.verdict != "ok" {
            invalid += 1;
            failures.push(format!("{}: refused: {}", h.path, h.verdict));
        }
        let i = h.path.strip_prefix("/in/").and_then(|i| i.parse().ok());
        match i.and_then(|i: usize| rows.get(&i)) {
            None => failures.push(format!("request to unknown path {}", h.path)),
            Some(row) if row.message_id != h.webhook_id => failures.push(format!(
                "{}: webhook-id {}, outbox has {}",
                h.path, h.webhook_id, row.message_id
            )),
            Some(_) => {}
        }
    }
    for i in 0..want {
        let got = per_path.get(hook_path(i).as_str()).copied().unwrap_or(0);
        if got != 1 {
            failures.push(format!(
                "{} got {got} requests, expected exactly 1",
                hook_path(i)
            ));
        }
    }
    if hooks.len() != want {
        failures.push(format!(
            "receiver got {} requests, expected {want}",
            hooks.len()
        ));
    }
    let mean_bytes =
        hooks.iter().map(|h| h.bytes).sum::<usize>() as f64 / hooks.len().max(1) as f64;
    println!("webhook receiver (child process): CPU {receiver_cpu:.2} s in all");
    report_checks(
        &failures,
        format!(
            "{want} webhook destinations, exactly one event each ({} received, mean {:.1} KiB, \
             {} signatures valid, {invalid} invalid), no mail, webhook-ids and story counts \
             match the outbox, which is all sent",
            hooks.len(),
            mean_bytes / 1024.0,
            hooks.len() - invalid
        ),
    )
}
