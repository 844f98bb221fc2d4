//! Outbox → mailbox: builds MIME messages and delivers them over SMTP (lettre) or as
//! `.eml` files, then marks each outbox row sent, retrying or failed.
//!
//! The only module that knows lettre. Temporary failures (SMTP 4xx, refused or dropped
//! connections, timeouts) are retried with exponential backoff; permanent ones (5xx)
//! mark the row failed with the server's answer.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result};
use chrono::{DateTime, Utc};
use futures_util::StreamExt as _;
use lettre::message::header::{HeaderName, HeaderValue};
use lettre::message::{Mailbox, MultiPart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::config::{MailSettings, MailTransport, SMTP_PASSWORD_ENV, TlsMode};
use crate::store::{OutboxId, OutboxMessage, Store};
use crate::token::Links;

/// Besides the send timeout and rate-limit waits, how long a claimed batch stays ours
/// before another worker (or this one, restarted after a crash) may try it again.
const CLAIM_MARGIN: Duration = Duration::from_secs(10);

/// Why one delivery failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendError {
    /// Worth retrying later: 4xx, connection trouble, timeout.
    Transient(String),
    /// Retrying will not help: 5xx, an unusable address.
    Permanent(String),
}

#[derive(Clone)]
pub struct Mailer {
    from: Mailbox,
    transport: Transport,
    timeout: Duration,
    max_age: chrono::Duration,
    concurrency: usize,
    pause_after_bounces: Option<u32>,
    pacer: Option<Arc<Pacer>>,
    links: Option<Links>,
}

#[derive(Clone)]
enum Transport {
    File(PathBuf),
    /// lettre keeps a pool of connections behind this handle.
    Smtp(AsyncSmtpTransport<Tokio1Executor>),
}

/// What one [`send_due`] round did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Delivery {
    pub sent: usize,
    pub retrying: usize,
    pub failed: usize,
    /// Subscribers paused by this round's bounces.
    pub paused: usize,
}

impl std::ops::AddAssign for Delivery {
    fn add_assign(&mut self, other: Delivery) {
        self.sent += other.sent;
        self.retrying += other.retrying;
        self.failed += other.failed;
        self.paused += other.paused;
    }
}

/// `mail.rate_limit`: at most one message per `interval`, across every sender on the database.
#[derive(Debug)]
struct Pacer {
    interval: Duration,
}

impl Pacer {
    fn per_minute(rate: u32) -> Pacer {
        Pacer {
            interval: Duration::from_secs(60) / rate.max(1),
        }
    }

    /// Waits for this message's slot. The slots are the database's
    /// ([`Store::reserve_mail_slot`]): the limit holds for every process sending from it,
    /// the daemon, a one-shot beside it, or other instances.
    async fn wait(&self, store: &Store) -> Result<()> {
        let slot = store.reserve_mail_slot(store.now(), self.interval).await?;
        if let Ok(wait) = (slot - store.now()).to_std() {
            tokio::time::sleep(wait).await;
        }
        Ok(())
    }
}

impl Mailer {
    /// `links` adds `List-Unsubscribe` headers (and is what digests link to).
    pub fn new(settings: &MailSettings, links: Option<Links>) -> Result<Mailer> {
        let from: Mailbox = settings
            .from
            .parse()
            .with_context(|| format!("mail.from {:?}", settings.from))?;
        let transport = match &settings.transport {
            MailTransport::File { folder } => Transport::File(folder.clone()),
            MailTransport::Smtp(smtp) => {
                let builder = match smtp.tls {
                    TlsMode::Tls => AsyncSmtpTransport::<Tokio1Executor>::relay(&smtp.host)?,
                    TlsMode::Starttls => {
                        AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(&smtp.host)?
                    }
                    TlsMode::None => {
                        AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&smtp.host)
                    }
                };
                let pool = lettre::transport::smtp::PoolConfig::new()
                    .max_size(settings.concurrency.max(1) as u32);
                let mut builder = builder
                    .port(smtp.port)
                    .timeout(Some(settings.send_timeout))
                    .pool_config(pool);
                if let Some(user) = &smtp.username {
                    let password = std::env::var(SMTP_PASSWORD_ENV).with_context(|| {
                        format!("mail.smtp.username is set but {SMTP_PASSWORD_ENV} is not")
                    })?;
                    builder = builder.credentials(Credentials::new(user.clone(), password));
                }
                Transport::Smtp(builder.build())
            }
        };
        Ok(Mailer {
            from,
            transport,
            timeout: settings.send_timeout,
            max_age: chrono::Duration::from_std(settings.max_age)
                .unwrap_or(chrono::Duration::days(3)),
            concurrency: settings.concurrency.max(1),
            pause_after_bounces: settings.pause_after_bounces,
            pacer: settings.rate_limit.map(|r| Arc::new(Pacer::per_minute(r))),
            links,
        })
    }

    /// The domain our `Message-ID`s end in: the `From:` address's.
    pub fn message_domain(&self) -> String {
        self.from.email.domain().to_string()
    }

    /// Builds the MIME message for an outbox row: both parts, our `Message-ID` and
    /// `Date`, and the list headers that let mail clients offer one-click unsubscribe.
    /// Every header value is either ours or goes through lettre's encoder, so nothing
    /// from a feed can add a header.
    pub fn build_message(&self, row: &OutboxMessage) -> Result<Message, SendError> {
        let to: Mailbox = row
            .recipient
            .parse()
            .map_err(|e| SendError::Permanent(format!("bad recipient {:?}: {e}", row.recipient)))?;
        let mut builder = Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(row.subject.clone())
            .message_id(Some(row.message_id.clone()))
            .date(SystemTime::from(row.created_at))
            .raw_header(HeaderValue::new(
                HeaderName::new_from_ascii_str("List-Id"),
                format!("Tidings alerts <alerts.{}>", self.message_domain()),
            ));
        if let (Some(links), Some(subscriber)) = (&self.links, row.subscriber_id) {
            let token = links.unsubscribe_token(subscriber, &row.recipient);
            builder = builder
                .raw_header(HeaderValue::new(
                    HeaderName::new_from_ascii_str("List-Unsubscribe"),
                    format!(
                        "<{}>, <mailto:{}?subject=unsubscribe%20{token}>",
                        links.unsubscribe_url(subscriber, &row.recipient),
                        self.from.email
                    ),
                ))
                .raw_header(HeaderValue::new(
                    HeaderName::new_from_ascii_str("List-Unsubscribe-Post"),
                    "List-Unsubscribe=One-Click".to_string(),
                ));
        }
        builder
            .multipart(MultiPart::alternative_plain_html(
                row.body_text.clone(),
                row.body_html.clone(),
            ))
            .map_err(|e| SendError::Permanent(format!("building message: {e}")))
    }

    /// Delivers one outbox row.
    pub async fn deliver(&self, row: &OutboxMessage) -> Result<(), SendError> {
        let message = self.build_message(row)?;
        match &self.transport {
            Transport::File(folder) => write_eml(folder, row.id, &message.formatted())
                .await
                .map_err(|e| SendError::Transient(format!("{e:#}"))),
            Transport::Smtp(smtp) => {
                match tokio::time::timeout(self.timeout, smtp.send(message)).await {
                    Err(_) => Err(SendError::Transient("timed out".into())),
                    Ok(Ok(_)) => Ok(()),
                    Ok(Err(e)) if e.is_permanent() => Err(SendError::Permanent(e.to_string())),
                    Ok(Err(e)) => Err(SendError::Transient(e.to_string())),
                }
            }
        }
    }

    /// Messages claimed at once: as many as are sent at once.
    fn batch(&self) -> usize {
        self.concurrency
    }

    /// How long a claimed batch may take: every message waiting for its rate-limit slot,
    /// then the slowest send.
    fn claim_lease(&self) -> Duration {
        let pacing = self
            .pacer
            .as_ref()
            .map_or(Duration::ZERO, |p| p.interval * self.batch() as u32);
        self.timeout + pacing + CLAIM_MARGIN
    }
}

/// Writes `<folder>/<id>.eml` atomically (temporary file, then rename), so a resend of
/// the same row replaces the file instead of adding a second one.
async fn write_eml(folder: &Path, id: OutboxId, bytes: &[u8]) -> Result<()> {
    tokio::fs::create_dir_all(folder)
        .await
        .with_context(|| format!("creating mail folder {}", folder.display()))?;
    let path = folder.join(format!("{id:08}.eml"));
    let tmp = folder.join(format!(".{id:08}.eml.tmp"));
    tokio::fs::write(&tmp, bytes)
        .await
        .with_context(|| format!("writing {}", tmp.display()))?;
    tokio::fs::rename(&tmp, &path)
        .await
        .with_context(|| format!("renaming to {}", path.display()))?;
    Ok(())
}

/// Whether the mailer can send from `text` (`mail.from`): `check-config` refuses what
/// [`Mailer::new`] would.
pub fn check_mailbox(text: &str) -> Result<(), String> {
    text.parse::<Mailbox>()
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// Why an address was refused, in words for the person who typed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddressError(String);

impl std::fmt::Display for AddressError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for AddressError {}

/// Longest address (RFC 5321: a 64-octet local part, 254 octets in all).
const MAX_ADDRESS: usize = 254;
const MAX_LOCAL_PART: usize = 64;

/// The one spelling of an email address, or why it cannot be mailed. Every address is
/// read through here (sign-up form, CLI) before it is counted, stored or compared.
///
/// - Quoting is undone where it changes nothing (`"victim"@x.org`, `"v\ictim"@x.org` →
///   `victim@x.org`) and kept minimal where it is needed (`"a b"@x.org`).
/// - The domain is lowercased and IDNA-encoded (`Bücher.example` → `xn--bcher-kva.example`),
///   without a trailing root dot; it must be a domain name with at least two labels.
/// - The local part keeps its case (the receiving server owns it); the database compares
///   addresses without regard to ASCII case, as people expect.
/// - Refused: IP addresses (`a@[127.0.0.1]`, `a@127.0.0.1`), display names, comments,
///   non-ASCII local parts (they need SMTPUTF8, which lettre uses only if the server
///   offers it) and anything lettre itself would not send.
pub fn normalize_address(text: &str) -> Result<String, AddressError> {
    let text = text.trim();
    let not_an_address = || AddressError(format!("{text:?} is not an email address."));
    let too_long = || AddressError(format!("{text:?} is too long for an email address."));
    if text.len() > MAX_ADDRESS {
        return Err(too_long());
    }
    let (local, domain) = text.rsplit_once('@').ok_or_else(not_an_address)?;
    if local.is_empty() || domain.is_empty() {
        return Err(not_an_address());
    }
    let local = normalize_local_part(local).ok_or_else(|| {
        if local.is_ascii() {
            not_an_address()
        } else {
            AddressError(format!(
                "{text:?}: the part before the @ must be plain ASCII; Tidings cannot \
                 mail internationalized addresses."
            ))
        }
    })?;
    if local.len() > MAX_LOCAL_PART {
        return Err(too_long());
    }
    let domain = normalize_domain(domain).map_err(|e| match e {
        DomainProblem::Ip => AddressError(format!(
            "{text:?} is at an IP address; use an address at a domain name, like \
             name@example.org."
        )),
        DomainProblem::Invalid => AddressError(format!(
            "{text:?}: the part after the @ is not a domain name like example.org."
        )),
    })?;
    let address = format!("{local}@{domain}");
    if address.len() > MAX_ADDRESS {
        return Err(too_long());
    }
    // The last word is the mailer's: what lettre will not send is no address for us.
    address
        .parse::<lettre::Address>()
        .map_err(|_| not_an_address())?;
    Ok(address)
}

/// The local part unquoted when it is a dot-atom, else minimally quoted; `None` if it
/// is not a valid ASCII local part (RFC 5322 `dot-atom / quoted-string`, no comments,
/// no obsolete forms).
fn normalize_local_part(local: &str) -> Option<String> {
    let atext = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-/=?^_`{|}~".contains(c);
    let dot_atom = |s: &str| {
        s.split('.')
            .all(|atom| !atom.is_empty() && atom.chars().all(atext))
    };
    let value = match local.strip_prefix('"') {
        None => return dot_atom(local).then(|| local.to_string()),
        Some(rest) => {
            let inner = rest.strip_suffix('"')?;
            let mut value = String::with_capacity(inner.len());
            let mut chars = inner.chars();
            while let Some(c) = chars.next() {
                let c = match c {
                    '\\' => chars.next()?,
                    // An unescaped quote ends the string early: not one quoted-string.
                    '"' => return None,
                    c => c,
                };
                // Printable ASCII and space only: no control characters, no line breaks.
                if !(' '..='~').contains(&c) {
                    return None;
                }
                value.push(c);
            }
            value
        }
    };
    if value.is_empty() {
        return None;
    }
    if dot_atom(&value) {
        return Some(value);
    }
    let mut quoted = String::with_capacity(value.len() + 2);
    quoted.push('"');
    for c in value.chars() {
        if c == '"' || c == '\\' {
            quoted.push('\\');
        }
        quoted.push(c);
    }
    quoted.push('"');
    Some(quoted)
}

enum DomainProblem {
    Ip,
    Invalid,
}

/// The domain lowercased in its ASCII (IDNA) form, without a root dot; refused if it is
/// an IP address in any spelling URL parsers accept, or not a host name of two or more
/// letter-digit-hyphen labels.
fn normalize_domain(domain: &str) -> Result<String, DomainProblem> {
    if domain.starts_with('[') {
        return Err(DomainProblem::Ip);
    }
    let host = url::Host::parse(domain).map_err(|_| DomainProblem::Invalid)?;
    let name = match host {
        url::Host::Domain(name) => name,
        url::Host::Ipv4(_) | url::Host::Ipv6(_) => return Err(DomainProblem::Ip),
    };
    let name = name.strip_suffix('.').unwrap_or(&name);
    let labels: Vec<&str> = name.split('.').collect();
    let label_ok = |l: &&str| {
        (1..=63).contains(&l.len())
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    if labels.len() < 2 || name.len() > 253 || !labels.iter().all(label_ok) {
        return Err(DomainProblem::Invalid);
    }
    Ok(name.to_string())
}

/// [`normalize_address`] for the command line.
pub fn check_address(address: &str) -> Result<String> {
    Ok(normalize_address(address)?)
}

/// When to try again after `attempts` failures: 1, 2, 4 … minutes, at most 1 hour.
fn retry_delay(attempts: u32) -> chrono::Duration {
    chrono::Duration::minutes(1i64 << attempts.min(6)).min(chrono::Duration::hours(1))
}

/// The one mail sender of a process. Callers (the digest round, a sign-up's
/// confirmation mail) ask it for a delivery; if a delivery is already running, it takes
/// their mail too (it runs until nothing is due) and they return at once. So the
/// rate-limit queue holds one claimed batch at a time, and a claim's lease covers the
/// real wait.
#[derive(Clone, Default)]
pub struct Sender {
    running: Arc<tokio::sync::Mutex<()>>,
    /// Someone asked for a delivery since the running one last looked.
    wanted: Arc<std::sync::atomic::AtomicBool>,
}

impl Sender {
    /// Delivers what is due (see [`send_due`]) unless a delivery is running already, in
    /// which case that one sends it. Returns what this call itself delivered.
    pub async fn deliver(
        &self,
        store: &Store,
        mailer: &Mailer,
        now: DateTime<Utc>,
        draining: &CancellationToken,
    ) -> Result<Delivery> {
        use std::sync::atomic::Ordering::SeqCst;
        self.wanted.store(true, SeqCst);
        let mut done = Delivery::default();
        loop {
            let Ok(running) = self.running.try_lock() else {
                // The running delivery sees `wanted` before it stops.
                return Ok(done);
            };
            while self.wanted.swap(false, SeqCst) {
                done += send_due(store, mailer, now, draining).await?;
            }
            drop(running);
            // Asked for between the last look and the unlock: go again.
            if !self.wanted.load(SeqCst) {
                return Ok(done);
            }
        }
    }
}

/// Sends every pending outbox message that is due, until none are left: a batch at a
/// time, the messages of a batch concurrently (each within the send timeout and its
/// rate-limit slot), each outcome recorded as soon as it is known. Use it through the
/// process's [`Sender`].
///
/// A batch is claimed with a lease, so if this process dies mid-send the messages are
/// sent again once the lease runs out, with the same `Message-ID`. Right before each send
/// the claim is renewed for the send's timeout; a message whose claim was lost meanwhile
/// (another sender took it) is left to that sender. Once `draining` is cancelled no
/// further batch is claimed; the one in flight finishes.
pub async fn send_due(
    store: &Store,
    mailer: &Mailer,
    now: DateTime<Utc>,
    draining: &CancellationToken,
) -> Result<Delivery> {
    let mut done = Delivery::default();
    let started = std::time::Instant::now();
    // `now` is the round's clock; leases must cover real time spent since.
    let clock = move || now + chrono::Duration::from_std(started.elapsed()).unwrap_or_default();
    while !draining.is_cancelled() {
        let (lease, batch, at) = (mailer.claim_lease(), mailer.batch(), clock());
        let rows = store.claim_mail(at, lease, batch).await?;
        if rows.is_empty() {
            return Ok(done);
        }
        let mut sends = futures_util::stream::iter(rows)
            .map(|row| async move {
                if let Some(pacer) = &mailer.pacer {
                    pacer.wait(store).await?;
                }
                let id = row.id;
                let lease = mailer.timeout + CLAIM_MARGIN;
                let token = row.claim.as_deref().unwrap_or_default();
                let held = store.renew_mail_claim(id, token, clock(), lease).await?;
                if !held {
                    info!(
                        outbox = id.0,
                        "claim lost while waiting; another sender has it"
                    );
                    return anyhow::Ok(None);
                }
                let outcome = mailer.deliver(&row).await;
                Ok(Some((row, outcome)))
            })
            .buffer_unordered(mailer.concurrency);
        // One message failing (its turn or its claim could not be written) ends the
        // round only once the others in flight have their answers, each recorded or
        // kept: dropped mid-send, one the server took would be sent again.
        let mut failed = None;
        while let Some(sent) = sends.next().await {
            let recorded = match sent {
                Ok(Some((row, outcome))) => {
                    record(store, mailer, clock(), row, outcome, &mut done).await
                }
                Ok(None) => Ok(()),
                Err(e) => Err(e),
            };
            if let Err(e) = recorded {
                failed.get_or_insert(e);
            }
        }
        if let Some(e) = failed {
            return Err(e);
        }
    }
    Ok(done)
}

/// Logs and stores what happened to one message, at `now` (when it happened: a retry
/// waits its delay from the failure, not from the start of the round).
async fn record(
    store: &Store,
    mailer: &Mailer,
    now: DateTime<Utc>,
    row: OutboxMessage,
    outcome: Result<(), SendError>,
    done: &mut Delivery,
) -> Result<()> {
    let (id, to, claim) = (row.id, row.recipient.clone(), row.claim.clone());
    let young = now - row.created_at < mailer.max_age;
    let store = store.clone();
    let pause_after = mailer.pause_after_bounces;
    let recorded = match outcome {
        Ok(()) => {
            info!(outbox = id.0, to = %to, subject = %row.subject, "mail sent");
            done.sent += 1;
            store.mark_sent(id, claim.as_deref(), now).await
        }
        Err(SendError::Transient(e)) if young => {
            warn!(outbox = id.0, to = %to, error = %e, "mail deferred; will retry");
            done.retrying += 1;
            let retry_at = now + retry_delay(row.attempts);
            store.mark_retry(id, claim.as_deref(), &e, retry_at).await
        }
        Err(SendError::Transient(e)) => {
            let attempts = crate::output::count(row.attempts as usize + 1, "attempt");
            let e = format!("gave up after {attempts}: {e}");
            warn!(outbox = id.0, to = %to, error = %e, "mail failed");
            done.failed += 1;
            store.mark_failed(id, claim.as_deref(), &e).await
        }
        Err(SendError::Permanent(e)) => {
            warn!(outbox = id.0, to = %to, error = %e, "mail rejected");
            done.failed += 1;
            match pause_after {
                Some(limit) => store
                    .mark_bounced(id, claim.as_deref(), &e, limit, now)
                    .await
                    .map(|paused| {
                        if let Some(email) = paused {
                            warn!(to = %email, bounces = limit,
                                  "subscriber paused after repeated bounces; `tidings subscriber resume` undoes it");
                            done.paused += 1;
                        }
                        true
                    }),
                None => store.mark_failed(id, claim.as_deref(), &e).await,
            }
        }
    };
    outcome_written(id, recorded)
}

/// What became of writing one message's outcome: a claim lost is logged; an outcome the
/// database would not take (it cannot be written) is kept by the store and written
/// before it claims more, so the round goes on with the messages already in flight.
pub(crate) fn outcome_written(id: OutboxId, recorded: Result<bool>) -> Result<()> {
    match recorded {
        Ok(true) => {}
        Ok(false) => warn!(
            outbox = id.0,
            "claim lost during the send; the result was not recorded"
        ),
        Err(e) if crate::store::unavailable(&e).is_some() => debug!(
            outbox = id.0,
            error = %format!("{e:#}"),
            "result kept until the database can be written"
        ),
        Err(e) => return Err(e),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every spelling of one mailbox comes out as one address; forms the mailer cannot
    /// send are refused with a reason.
    #[test]
    fn addresses_have_one_spelling() {
        for (case, given, expected) in [
            ("plain", "victim@x.org", "victim@x.org"),
            ("spaces, domain case", "  victim@X.ORG ", "victim@x.org"),
            ("needless quotes", r#""victim"@x.org"#, "victim@x.org"),
            ("quoted pair", r#""v\ictim"@x.org"#, "victim@x.org"),
            ("another quoted pair", r#""vi\ctim"@x.org"#, "victim@x.org"),
            (
                "all quoted pairs",
                r#""\v\i\c\t\i\m"@x.org"#,
                "victim@x.org",
            ),
            ("quoted dots", r#""first.last"@x.org"#, "first.last@x.org"),
            ("root dot", "victim@x.org.", "victim@x.org"),
            (
                "local case kept",
                "Ana.Lopez@Example.ORG",
                "Ana.Lopez@example.org",
            ),
            ("needed quotes", r#""a b"@x.org"#, r#""a b"@x.org"#),
            (
                "needed quotes, escaped",
                r#""a\ b"@x.org"#,
                r#""a b"@x.org"#,
            ),
            ("quote inside", r#""a\"b"@x.org"#, r#""a\"b"@x.org"#),
            ("leading dot quoted", r#"".a"@x.org"#, r#"".a"@x.org"#),
            (
                "IDNA",
                "ana@b\u{fc}cher.example",
                "ana@xn--bcher-kva.example",
            ),
            (
                "IDNA upper case",
                "ana@B\u{dc}CHER.example",
                "ana@xn--bcher-kva.example",
            ),
            (
                "punycode",
                "ana@XN--BCHER-KVA.example",
                "ana@xn--bcher-kva.example",
            ),
            ("fullwidth letter", "ana@\u{ff58}.org", "ana@x.org"),
            ("ideographic full stop", "ana@x\u{3002}org", "ana@x.org"),
        ] {
            assert_eq!(
                normalize_address(given).as_deref(),
                Ok(expected),
                "{case}: {given:?}"
            );
            assert!(
                expected.parse::<lettre::Address>().is_ok(),
                "{case}: lettre sends {expected:?}"
            );
        }
        let long_local = format!("{}@x.org", "a".repeat(65));
        let long_address = format!("a@{}org", "b.".repeat(130));
        for (case, given, why) in [
            ("domain literal", "a@[127.0.0.1]", "IP address"),
            ("IPv6 literal", "a@[IPv6:::1]", "IP address"),
            ("bare IP", "a@127.0.0.1", "IP address"),
            ("hex IP", "a@0x7f.1", "IP address"),
            ("number", "a@2130706433", "IP address"),
            ("no domain name", "a@localhost", "domain"),
            ("underscore", "a@x_y.org", "domain"),
            ("hyphen first", "a@-x.org", "domain"),
            ("empty label", "a@x..org", "domain"),
            ("words", "zoe at example", "is not an email address"),
            ("empty", "", "is not an email address"),
            ("no local part", "@x.org", "is not an email address"),
            ("no domain", "a@", "is not an email address"),
            ("double dot", "a..b@x.org", "is not an email address"),
            ("leading dot", ".a@x.org", "is not an email address"),
            ("space", "a b@x.org", "is not an email address"),
            ("display name", "Ana <ana@x.org>", "is not an email address"),
            ("half quoted", r#""a"b@x.org"#, "is not an email address"),
            ("unterminated", r#""a@x.org"#, "is not an email address"),
            ("empty quotes", r#"""@x.org"#, "is not an email address"),
            ("control", "\"a\tb\"@x.org", "is not an email address"),
            ("line break", "a\r\nb@x.org", "is not an email address"),
            ("non-ASCII local part", "jos\u{e9}@x.org", "plain ASCII"),
            ("long local part", &long_local, "too long"),
            ("long address", &long_address, "too long"),
        ] {
            let err = normalize_address(given).expect_err(case).to_string();
            assert!(err.contains(why), "{case}: {given:?}: {err}");
        }
    }

    #[test]
    fn retry_delay_grows_and_is_capped() {
        let minutes: Vec<i64> = (0..9).map(|a| retry_delay(a).num_minutes()).collect();
        assert_eq!(minutes, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
    }
}
