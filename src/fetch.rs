//! HTTP: one (usually conditional) GET per feed, with timeouts, a body cap and redirects
//! followed by hand.
//!
//! The only module that knows reqwest. It never touches storage: the caller passes the
//! validators (ETag, Last-Modified) it stored last time and gets back either "not
//! modified", the body, or a [`FetchError`] that says what kind of failure it was (and,
//! for 429/503, when the server asked us to come back). Redirects are followed here (at
//! most [`MAX_REDIRECTS`], loops are an error) so that a permanent move can be reported.
//!
//! Every request passes the fetch guard ([`AddressPolicy`], [`classify_address`]): it
//! connects to public addresses, to private networks only where the admin configured a
//! feed there, and a redirect never leads from a public address to a non-public one.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use ipnet::{Ipv4Net, Ipv6Net};
use reqwest::StatusCode;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use reqwest::header::{
    CACHE_CONTROL, CONTENT_TYPE, ETAG, HeaderMap, IF_MODIFIED_SINCE, IF_NONE_MATCH, LAST_MODIFIED,
    LOCATION, RETRY_AFTER,
};
use url::{Host, Url};

use crate::config::PollSettings;

/// Redirects followed for one fetch before giving up.
pub const MAX_REDIRECTS: usize = 5;

/// What the server said last time, sent back so it can answer 304.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Validators {
    pub etag: Option<String>,
    pub last_modified: Option<String>,
}

#[derive(Debug)]
pub enum FetchOutcome {
    NotModified(Meta),
    Fetched(Fetched),
}

/// What every successful answer carries besides the body.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Meta {
    /// Set when every redirect on the way was permanent (301/308): the feed's new home.
    pub moved_to: Option<Url>,
    /// `Cache-Control: max-age`: the server would rather not be asked sooner.
    pub max_age: Option<Duration>,
}

#[derive(Debug)]
pub struct Fetched {
    pub body: Vec<u8>,
    pub content_type: Option<String>,
    /// Where the body came from after redirects: the base for relative links.
    pub final_url: Url,
    pub validators: Validators,
    pub meta: Meta,
}

/// When a 429/503 asked us to come back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryAfter {
    Seconds(u64),
    At(DateTime<Utc>),
}

/// The longest a server may ask us to wait, whatever its header says (the poller caps
/// the wait again at `poll.max_backoff`).
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(365 * 24 * 3600);

impl RetryAfter {
    /// The moment we may ask again, given the time of the answer: never in the past and
    /// never more than [`MAX_RETRY_AFTER`] away, however large the server's number.
    pub fn at(self, now: DateTime<Utc>) -> DateTime<Utc> {
        let max = MAX_RETRY_AFTER.as_secs();
        let latest = now + chrono::Duration::seconds(max as i64);
        match self {
            RetryAfter::Seconds(s) => now + chrono::Duration::seconds(s.min(max) as i64),
            RetryAfter::At(t) => t.clamp(now, latest),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FetchError {
    /// The server answered with an error status.
    Status(u16),
    /// 429 or 503, possibly with Retry-After.
    Throttled {
        status: u16,
        retry_after: Option<RetryAfter>,
    },
    /// 410: the feed is gone for good.
    Gone,
    /// 403 with `cf-mitigated: challenge`: a bot wall, not an error of ours.
    Challenge,
    Timeout,
    /// DNS, refused connection, TLS, reset…
    Connection(String),
    /// The body grew past the cap (counted after decompression).
    TooLarge {
        limit: usize,
    },
    /// 200 with nothing in it.
    Empty,
    /// A redirect without a usable Location, a loop, or too many hops.
    Redirect(String),
    /// The fetch policy refused the address (see [`AddressPolicy`]); says which host
    /// and why, never the address a name resolved to.
    Refused(String),
}

impl FetchError {
    /// A short, stable name for logs, status tables and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            FetchError::Status(_) => "http",
            FetchError::Throttled { .. } => "throttled",
            FetchError::Gone => "gone",
            FetchError::Challenge => "blocked",
            FetchError::Timeout => "timeout",
            FetchError::Connection(_) => "connection",
            FetchError::TooLarge { .. } => "too-large",
            FetchError::Empty => "empty",
            FetchError::Redirect(_) => "redirect",
            FetchError::Refused(_) => "fetch-policy",
        }
    }
}

fn status_text(code: u16) -> String {
    let reason = StatusCode::from_u16(code)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("");
    format!("HTTP {code} {reason}").trim_end().to_string()
}

impl fmt::Display for FetchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FetchError::Status(code) => write!(f, "{}", status_text(*code)),
            FetchError::Throttled {
                status,
                retry_after: None,
            } => write!(f, "{}", status_text(*status)),
            FetchError::Throttled {
                status,
                retry_after: Some(RetryAfter::Seconds(s)),
            } => {
                write!(f, "{} (retry after {s} s)", status_text(*status))
            }
            FetchError::Throttled {
                status,
                retry_after: Some(RetryAfter::At(t)),
            } => {
                write!(
                    f,
                    "{} (retry after {})",
                    status_text(*status),
                    t.format("%Y-%m-%d %H:%M:%S UTC")
                )
            }
            FetchError::Gone => {
                write!(
                    f,
                    "HTTP 410 Gone: the publisher removed this feed; polling stopped"
                )
            }
            FetchError::Challenge => {
                write!(
                    f,
                    "HTTP 403: blocked by a bot challenge (Cloudflare); a browser is required"
                )
            }
            FetchError::Timeout => write!(f, "timed out"),
            FetchError::Connection(why) => write!(f, "connection failed: {why}"),
            FetchError::TooLarge { limit } => {
                write!(f, "response larger than {} MiB", limit / (1024 * 1024))
            }
            FetchError::Empty => write!(f, "empty response"),
            FetchError::Redirect(why) => write!(f, "redirect: {why}"),
            FetchError::Refused(why) => write!(f, "refused by the fetch policy: {why}"),
        }
    }
}

impl std::error::Error for FetchError {}

/// Where every outgoing request may connect. Public addresses always; loopback,
/// private and link-local ones only for a URL the admin configured with such an address
/// (or `localhost`), or for any configured URL with `allow_private_networks`; cloud
/// metadata only with `allow_metadata` on top; reserved ranges never. Once a fetch has
/// connected to a public address, its redirects may only go to public ones. The check is
/// made on the addresses a name resolves to, as the connection is made, so a name that
/// later resolves elsewhere (DNS rebinding) is caught too.
#[derive(Debug, Clone, Default)]
pub struct AddressPolicy {
    pub allow_private_networks: bool,
    pub allow_metadata: bool,
    /// Addresses treated as public whatever [`classify_address`] says. For tests, where a
    /// second loopback address (127.0.0.2) stands in for the internet.
    #[doc(hidden)]
    pub treat_as_public: Vec<IpAddr>,
    /// Names answered from here instead of DNS (lowercase), checked like any answer.
    /// For tests, where a name must resolve to a loopback address.
    #[doc(hidden)]
    pub hosts: HashMap<String, Vec<IpAddr>>,
}

impl AddressPolicy {
    pub fn new(settings: &PollSettings) -> AddressPolicy {
        AddressPolicy {
            allow_private_networks: settings.allow_private_networks,
            allow_metadata: settings.allow_metadata,
            ..AddressPolicy::default()
        }
    }

    fn class_of(&self, ip: IpAddr) -> AddressClass {
        if self.treat_as_public.contains(&ip) {
            AddressClass::Public
        } else {
            classify_address(ip)
        }
    }

    /// What the first connection of a fetch of `url` from `origin` may go to: private
    /// networks when the admin wrote a non-public address (or `localhost`) as the URL's
    /// host, or allowed them for every configured URL.
    fn first_reach(&self, url: &Url, origin: Origin) -> Reach {
        let names_private = match (literal_ip(url), url.host_str()) {
            (Some(ip), _) => self.class_of(ip) != AddressClass::Public,
            (None, Some(host)) => {
                let host = host.trim_end_matches('.').to_ascii_lowercase();
                host == "localhost" || host.ends_with(".localhost")
            }
            (None, None) => false,
        };
        match origin {
            Origin::Configured if names_private || self.allow_private_networks => Reach::Private,
            _ => Reach::Public,
        }
    }

    /// Whether a connection that may `reach` so far may go to an address of `class`.
    fn permits(&self, reach: Reach, class: AddressClass) -> bool {
        match class {
            AddressClass::Public => true,
            AddressClass::Loopback | AddressClass::Private | AddressClass::LinkLocal => {
                reach == Reach::Private
            }
            AddressClass::Metadata => reach == Reach::Private && self.allow_metadata,
            AddressClass::Reserved => false,
        }
    }
}

/// Where the URL of a fetch came from, which decides where the fetch may go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// The admin wrote it (config.toml, an OPML import, the command line).
    Configured,
    /// Found in fetched content, such as a link in a feed: public addresses only.
    Found,
    /// A destination a subscriber gave (a webhook): public addresses only, so no one
    /// can make the server send into its own network.
    Subscriber,
}

/// What the next connection of a fetch may go to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reach {
    Public,
    /// Private networks too (metadata as the policy says).
    Private,
}

/// The resolver of one client: looks a name up (or in [`AddressPolicy::hosts`]) and
/// keeps only the addresses the policy lets this client reach.
struct GuardedResolver {
    policy: Arc<AddressPolicy>,
    reach: Reach,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let (policy, reach) = (self.policy.clone(), self.reach);
        let host = name.as_str().to_ascii_lowercase();
        Box::pin(async move {
            let found: Vec<IpAddr> = match policy.hosts.get(&host) {
                Some(ips) => ips.clone(),
                None => tokio::net::lookup_host((host.as_str(), 0))
                    .await?
                    .map(|a| a.ip())
                    .collect(),
            };
            let allowed: Vec<SocketAddr> = found
                .iter()
                .filter(|&&ip| policy.permits(reach, policy.class_of(ip)))
                .map(|&ip| SocketAddr::new(ip, 0))
                .collect();
            if allowed.is_empty()
                && let Some(&ip) = found.first()
            {
                let class = policy.class_of(ip);
                return Err(Box::new(RefusedAddress { host, class }) as _);
            }
            Ok(Box::new(allowed.into_iter()) as Addrs)
        })
    }
}

/// The resolver's refusal, found again in reqwest's error chain by [`classify`].
#[derive(Debug)]
struct RefusedAddress {
    host: String,
    class: AddressClass,
}

impl fmt::Display for RefusedAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} resolves to {}", self.host, self.class.describe())
    }
}

impl std::error::Error for RefusedAddress {}

/// A shared HTTP client; cheap to clone. It never uses a proxy (`HTTP_PROXY` and
/// friends are ignored): the fetch guard must see the address it connects to.
#[derive(Clone)]
pub struct Fetcher {
    /// Connects to public addresses only.
    public: reqwest::Client,
    /// Connects to private networks too, as the policy allows.
    private: reqwest::Client,
    policy: Arc<AddressPolicy>,
    max_body_bytes: usize,
}

impl Fetcher {
    pub fn new(settings: &PollSettings) -> anyhow::Result<Fetcher> {
        Fetcher::with_policy(settings, AddressPolicy::new(settings))
    }

    /// A fetcher whose [`AddressPolicy`] is given rather than read from `settings`.
    pub fn with_policy(settings: &PollSettings, policy: AddressPolicy) -> anyhow::Result<Fetcher> {
        let policy = Arc::new(policy);
        let client = |reach| {
            reqwest::Client::builder()
                .user_agent(&settings.user_agent)
                .connect_timeout(settings.connect_timeout)
                .timeout(settings.timeout)
                .redirect(reqwest::redirect::Policy::none())
                .pool_max_idle_per_host(settings.per_host)
                .gzip(true)
                .no_proxy()
                .dns_resolver(GuardedResolver {
                    policy: policy.clone(),
                    reach,
                })
                .build()
        };
        Ok(Fetcher {
            public: client(Reach::Public)?,
            private: client(Reach::Private)?,
            max_body_bytes: settings.max_body_bytes,
            policy,
        })
    }

    /// GETs the feed at `url`, as configured by the admin, conditionally on `validators`
    /// (pass empty ones for a full fetch).
    pub async fn fetch_feed(
        &self,
        url: &Url,
        validators: &Validators,
    ) -> Result<FetchOutcome, FetchError> {
        self.fetch(url, validators, Origin::Configured).await
    }

    /// GETs `url`, which came from `origin`, conditionally on `validators`.
    pub async fn fetch(
        &self,
        url: &Url,
        validators: &Validators,
        origin: Origin,
    ) -> Result<FetchOutcome, FetchError> {
        let mut reach = self.policy.first_reach(url, origin);
        let mut current = url.clone();
        let mut seen = HashSet::from([url.to_string()]);
        let mut all_permanent = true;
        let mut response = loop {
            let hop = seen.len() - 1;
            let refused = |subject: &str, class| refusal(subject, class, hop, reach, origin);
            // reqwest resolves only names; an address in the URL is checked here.
            if let Some(ip) = literal_ip(&current) {
                let class = self.policy.class_of(ip);
                if !self.policy.permits(reach, class) {
                    return Err(refused(&format!("{ip} is"), class));
                }
            }
            let client = match reach {
                Reach::Public => &self.public,
                Reach::Private => &self.private,
            };
            let mut request = client.get(current.as_str());
            if let Some(etag) = &validators.etag {
                request = request.header(IF_NONE_MATCH, etag);
            }
            if let Some(lm) = &validators.last_modified {
                request = request.header(IF_MODIFIED_SINCE, lm);
            }
            let response = request.send().await.map_err(|e| match classify(e) {
                Err(RefusedAddress { host, class }) => {
                    refused(&format!("{host} resolves to"), class)
                }
                Ok(other) => other,
            })?;
            // Having reached the public internet, the chain never goes back inside.
            let peer = response.remote_addr().map(|a| self.policy.class_of(a.ip()));
            if peer.is_none_or(|class| class == AddressClass::Public) {
                reach = Reach::Public;
            }
            let status = response.status();
            if !status.is_redirection() || status == StatusCode::NOT_MODIFIED {
                break response;
            }
            all_permanent &= matches!(
                status,
                StatusCode::MOVED_PERMANENTLY | StatusCode::PERMANENT_REDIRECT
            );
            let location = response
                .headers()
                .get(LOCATION)
                .and_then(|v| v.to_str().ok())
                .ok_or_else(|| FetchError::Redirect(format!("{status} without a Location")))?;
            let next = current
                .join(location)
                .map_err(|e| FetchError::Redirect(format!("bad Location {location:?}: {e}")))?;
            if !matches!(next.scheme(), "http" | "https") {
                return Err(FetchError::Redirect(format!("to a non-HTTP URL {next}")));
            }
            if !seen.insert(next.to_string()) {
                return Err(FetchError::Redirect(format!("loop at {next}")));
            }
            if seen.len() > MAX_REDIRECTS + 1 {
                return Err(FetchError::Redirect(format!(
                    "more than {MAX_REDIRECTS} redirects"
                )));
            }
            current = next;
        };

        let status = response.status();
        let headers = response.headers().clone();
        let meta = Meta {
            moved_to: (current != *url && all_permanent).then(|| current.clone()),
            max_age: max_age(&headers),
        };
        if status == StatusCode::NOT_MODIFIED {
            return Ok(FetchOutcome::NotModified(meta));
        }
        if !status.is_success() {
            return Err(match status.as_u16() {
                410 => FetchError::Gone,
                429 | 503 => FetchError::Throttled {
                    status: status.as_u16(),
                    retry_after: retry_after(&headers),
                },
                403 if headers
                    .get("cf-mitigated")
                    .is_some_and(|v| v == "challenge") =>
                {
                    FetchError::Challenge
                }
                code => FetchError::Status(code),
            });
        }

        let header = |name| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let fresh = Validators {
            etag: header(ETAG),
            last_modified: header(LAST_MODIFIED),
        };
        // Same ETag as we sent, on a 200: the server ignored If-None-Match; nothing changed.
        if fresh.etag.is_some() && fresh.etag == validators.etag {
            return Ok(FetchOutcome::NotModified(meta));
        }

        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| classify(e).unwrap_or_else(|r| FetchError::Refused(r.to_string())))?
        {
            if body.len() + chunk.len() > self.max_body_bytes {
                return Err(FetchError::TooLarge {
                    limit: self.max_body_bytes,
                });
            }
            body.extend_from_slice(&chunk);
        }
        if body.iter().all(u8::is_ascii_whitespace) {
            return Err(FetchError::Empty);
        }
        Ok(FetchOutcome::Fetched(Fetched {
            body,
            content_type: header(CONTENT_TYPE),
            final_url: current,
            validators: fresh,
            meta,
        }))
    }
}

/// A request that delivers something (a webhook, a chat message): sent once, never
/// redirected, through the same fetch guard as every fetch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing {
    /// `PUT` when true (Matrix sends are idempotent PUTs), else `POST`.
    pub put: bool,
    pub url: Url,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// What the receiver answered to an [`Outgoing`] request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub status: u16,
    /// `Retry-After`, seconds or an HTTP date.
    pub retry_after: Option<RetryAfter>,
    /// The start of the body (at most [`ANSWER_BYTES`]), for error messages and the
    /// services that put their retry delay in it.
    pub body: String,
}

/// How much of an answer's body is kept.
pub const ANSWER_BYTES: usize = 4096;

impl Fetcher {
    /// Sends `request`, whose URL came from `origin`, within `timeout`. Any answer is
    /// an [`Answer`] (the caller decides what a status means); a redirect is not
    /// followed. Errors are the connection's: refused by the policy, timeout, network.
    pub async fn deliver(
        &self,
        request: &Outgoing,
        origin: Origin,
        timeout: Duration,
    ) -> Result<Answer, FetchError> {
        let reach = self.policy.first_reach(&request.url, origin);
        let refused = |subject: &str, class| refusal(subject, class, 0, reach, origin);
        if let Some(ip) = literal_ip(&request.url) {
            let class = self.policy.class_of(ip);
            if !self.policy.permits(reach, class) {
                return Err(refused(&format!("{ip} is"), class));
            }
        }
        let client = match reach {
            Reach::Public => &self.public,
            Reach::Private => &self.private,
        };
        let mut builder = match request.put {
            true => client.put(request.url.as_str()),
            false => client.post(request.url.as_str()),
        };
        for (name, value) in &request.headers {
            builder = builder.header(name, value);
        }
        // The destination's timeout, not the feed polls' the client was built with.
        builder = builder.timeout(timeout);
        let work =
            async {
                let mut response = builder.body(request.body.clone()).send().await.map_err(
                    |e| match classify(e) {
                        Err(RefusedAddress { host, class }) => {
                            refused(&format!("{host} resolves to"), class)
                        }
                        Ok(other) => other,
                    },
                )?;
                let status = response.status().as_u16();
                let retry_after = retry_after(response.headers());
                let mut body = Vec::new();
                // An answer is read up to the cap and no further: a receiver cannot make
                // us hold its 1 GB error page.
                while body.len() < ANSWER_BYTES {
                    match response.chunk().await {
                        Ok(Some(chunk)) => body.extend_from_slice(&chunk),
                        Ok(None) => break,
                        // The status arrived; a body cut short does not change it.
                        Err(_) => break,
                    }
                }
                body.truncate(ANSWER_BYTES);
                Ok(Answer {
                    status,
                    retry_after,
                    body: String::from_utf8_lossy(&body).into_owned(),
                })
            };
        tokio::time::timeout(timeout, work)
            .await
            .unwrap_or(Err(FetchError::Timeout))
    }
}

// ---- the fetch guard: where a request may connect ------------------------------------------

/// What an IP address is, as far as the fetch policy cares. [`classify_address`] decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddressClass {
    /// Reachable on the internet: always allowed.
    Public,
    /// 127.0.0.0/8, ::1.
    Loopback,
    /// RFC 1918, shared/CGNAT (100.64.0.0/10), benchmarking (198.18.0.0/15), unique
    /// local (fc00::/7), site-local (fec0::/10), local-use NAT64 (64:ff9b:1::/48).
    Private,
    /// fe80::/10 (IPv4's 169.254.0.0/16 is [`AddressClass::Metadata`]).
    LinkLocal,
    /// Cloud instance metadata and credential endpoints: all of 169.254.0.0/16
    /// (169.254.169.254 and friends), fd00:ec2::/32, fd20:ce::/32 and a few others.
    Metadata,
    /// Never a feed server: unspecified (0.0.0.0/8, ::), broadcast, multicast,
    /// documentation, IETF-reserved and unallocated ranges.
    Reserved,
}

impl AddressClass {
    /// "a loopback address", for error messages.
    pub fn describe(self) -> &'static str {
        match self {
            AddressClass::Public => "a public address",
            AddressClass::Loopback => "a loopback address",
            AddressClass::Private => "a private network address",
            AddressClass::LinkLocal => "a link-local address",
            AddressClass::Metadata => "a cloud metadata address",
            AddressClass::Reserved => "a reserved address",
        }
    }
}

/// IPv4 ranges that are not public, most specific first (the first match wins).
const V4_RANGES: &[(Ipv4Net, AddressClass)] = {
    use AddressClass::*;
    const fn net(a: u8, b: u8, c: u8, d: u8, len: u8) -> Ipv4Net {
        Ipv4Net::new_assert(Ipv4Addr::new(a, b, c, d), len)
    }
    &[
        // All of IPv4 link-local: AWS, GCP, Azure, OpenStack (169.254.169.254), AWS ECS
        // and EKS credentials (169.254.170.x), Tencent (169.254.0.23)… Providers keep
        // adding endpoints here, and a feed never lives here, so the whole range is
        // treated as metadata rather than a list that is always one provider behind.
        (net(169, 254, 0, 0, 16), Metadata),
        // Alibaba Cloud.
        (net(100, 100, 100, 200, 32), Metadata),
        // Azure WireServer.
        (net(168, 63, 129, 16, 32), Metadata),
        // Oracle Cloud.
        (net(192, 0, 0, 192, 32), Metadata),
        // "This network": 0.0.0.0 reaches the local host on Linux.
        (net(0, 0, 0, 0, 8), Reserved),
        (net(10, 0, 0, 0, 8), Private),
        (net(100, 64, 0, 0, 10), Private),
        (net(127, 0, 0, 0, 8), Loopback),
        (net(172, 16, 0, 0, 12), Private),
        (net(192, 0, 0, 0, 24), Reserved),
        (net(192, 0, 2, 0, 24), Reserved),
        (net(192, 88, 99, 0, 24), Reserved),
        (net(192, 168, 0, 0, 16), Private),
        (net(198, 18, 0, 0, 15), Private),
        (net(198, 51, 100, 0, 24), Reserved),
        (net(203, 0, 113, 0, 24), Reserved),
        // Multicast, then reserved up to and including broadcast.
        (net(224, 0, 0, 0, 4), Reserved),
        (net(240, 0, 0, 0, 4), Reserved),
    ]
};

/// IPv6 ranges with a class of their own, most specific first. Forms that carry an IPv4
/// address (mapped, compatible, NAT64, 6to4) are handled before this table.
const V6_RANGES: &[(Ipv6Net, AddressClass)] = {
    use AddressClass::*;
    const fn net(segments: [u16; 8], len: u8) -> Ipv6Net {
        let [a, b, c, d, e, f, g, h] = segments;
        Ipv6Net::new_assert(Ipv6Addr::new(a, b, c, d, e, f, g, h), len)
    }
    &[
        (net([0, 0, 0, 0, 0, 0, 0, 1], 128), Loopback),
        (net([0, 0, 0, 0, 0, 0, 0, 0], 128), Reserved),
        (net([0x64, 0xff9b, 1, 0, 0, 0, 0, 0], 48), Private),
        // Discard-only.
        (net([0x100, 0, 0, 0, 0, 0, 0, 0], 64), Reserved),
        // IETF protocol assignments (Teredo, benchmarking, ORCHID…).
        (net([0x2001, 0, 0, 0, 0, 0, 0, 0], 23), Reserved),
        // Documentation.
        (net([0x2001, 0xdb8, 0, 0, 0, 0, 0, 0], 32), Reserved),
        (net([0x3fff, 0, 0, 0, 0, 0, 0, 0], 20), Reserved),
        // AWS instance metadata over IPv6 (fd00:ec2::254) and its neighbours.
        (net([0xfd00, 0xec2, 0, 0, 0, 0, 0, 0], 32), Metadata),
        // Google Compute Engine metadata over IPv6 (fd20:ce::254).
        (net([0xfd20, 0xce, 0, 0, 0, 0, 0, 0], 32), Metadata),
        (net([0xfc00, 0, 0, 0, 0, 0, 0, 0], 7), Private),
        (net([0xfe80, 0, 0, 0, 0, 0, 0, 0], 10), LinkLocal),
        (net([0xfec0, 0, 0, 0, 0, 0, 0, 0], 10), Private),
        (net([0xff00, 0, 0, 0, 0, 0, 0, 0], 8), Reserved),
    ]
};

/// The one place that says what an address is. IPv6 forms that embed an IPv4 address
/// (`::ffff:10.0.0.1`, `::10.0.0.1`, NAT64 `64:ff9b::10.0.0.1`, 6to4 `2002:0a00:0001::`)
/// are what the IPv4 address is; IPv6 outside 2000::/3 is not allocated for unicast.
pub fn classify_address(ip: IpAddr) -> AddressClass {
    let v6 = match ip {
        IpAddr::V4(v4) => {
            return V4_RANGES
                .iter()
                .find(|(net, _)| net.contains(&v4))
                .map_or(AddressClass::Public, |&(_, class)| class);
        }
        IpAddr::V6(v6) => v6,
    };
    let [a, b, c, d, e, f, g, h] = v6.segments();
    let embedded =
        |hi: u16, lo: u16| IpAddr::V4(Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo)));
    match (a, b, c, d, e, f) {
        // ::ffff:a.b.c.d (mapped) and ::a.b.c.d (compatible; :: and ::1 are in the table).
        (0, 0, 0, 0, 0, 0xffff) => return classify_address(embedded(g, h)),
        (0, 0, 0, 0, 0, 0) if g != 0 => return classify_address(embedded(g, h)),
        // NAT64, well-known prefix 64:ff9b::/96.
        (0x64, 0xff9b, 0, 0, 0, 0) => return classify_address(embedded(g, h)),
        // 6to4: 2002:AABB:CCDD::/48 stands for AA.BB.CC.DD.
        (0x2002, ..) => return classify_address(embedded(b, c)),
        _ => {}
    }
    if let Some(&(_, class)) = V6_RANGES.iter().find(|(net, _)| net.contains(&v6)) {
        return class;
    }
    if a & 0xe000 == 0x2000 {
        AddressClass::Public
    } else {
        AddressClass::Reserved
    }
}

/// `Retry-After: 120` or `Retry-After: Fri, 31 Dec 2026 23:59:59 GMT`.
fn retry_after(headers: &HeaderMap) -> Option<RetryAfter> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(RetryAfter::Seconds(seconds));
    }
    DateTime::parse_from_rfc2822(value)
        .ok()
        .map(|t| RetryAfter::At(t.with_timezone(&Utc)))
}

/// `Cache-Control: max-age=N` (ignored with `no-cache`/`no-store`).
fn max_age(headers: &HeaderMap) -> Option<Duration> {
    let value = headers
        .get(CACHE_CONTROL)?
        .to_str()
        .ok()?
        .to_ascii_lowercase();
    let directives: Vec<&str> = value.split(',').map(str::trim).collect();
    if directives
        .iter()
        .any(|d| *d == "no-cache" || *d == "no-store")
    {
        return None;
    }
    directives
        .iter()
        .find_map(|d| d.strip_prefix("max-age="))
        .and_then(|n| n.trim_matches('"').parse::<u64>().ok())
        .filter(|&n| n > 0)
        .map(Duration::from_secs)
}

/// The IP address a URL names as its host, if it names one.
fn literal_ip(url: &Url) -> Option<IpAddr> {
    match url.host()? {
        Host::Ipv4(ip) => Some(IpAddr::V4(ip)),
        Host::Ipv6(ip) => Some(IpAddr::V6(ip)),
        Host::Domain(_) => None,
    }
}

/// Why the policy refused a connection on hop `hop` of a fetch from `origin` that could
/// `reach` so far: `subject` ("10.0.0.1 is", "intranet.example resolves to") is an
/// address of `class`. Says nothing of what a name resolved to beyond its class.
fn refusal(
    subject: &str,
    class: AddressClass,
    hop: usize,
    reach: Reach,
    origin: Origin,
) -> FetchError {
    let what = format!("{subject} {}", class.describe());
    FetchError::Refused(match class {
        AddressClass::Metadata if reach == Reach::Private => {
            format!("{what} ([poll] allow_metadata is off)")
        }
        AddressClass::Reserved | AddressClass::Public => what,
        _ if hop > 0 => format!("a redirect from a public address: {what}"),
        _ if origin == Origin::Found => format!("a link found in a feed: {what}"),
        _ if origin == Origin::Subscriber => {
            format!("a destination a subscriber gave may only be public: {what}")
        }
        _ => format!(
            "{what}; name that address itself in the feed's url, or set [poll] allow_private_networks = true"
        ),
    })
}

/// A reqwest error as a [`FetchError`], or the fetch guard's refusal if that was the cause.
fn classify(err: reqwest::Error) -> Result<FetchError, RefusedAddress> {
    if err.is_timeout() {
        return Ok(FetchError::Timeout);
    }
    // The innermost cause is the useful part ("Connection refused", "dns error"…).
    let mut cause: &dyn std::error::Error = &err;
    while let Some(next) = cause.source() {
        if let Some(refused) = next.downcast_ref::<RefusedAddress>() {
            return Err(RefusedAddress {
                host: refused.host.clone(),
                class: refused.class,
            });
        }
        cause = next;
    }
    if cause.to_string().contains("timed out") {
        return Ok(FetchError::Timeout);
    }
    Ok(FetchError::Connection(cause.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    fn headers(name: reqwest::header::HeaderName, value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(name, HeaderValue::from_str(value).unwrap());
        h
    }

    #[test]
    fn every_kind_of_address_is_classified() {
        use AddressClass::*;
        // (name, address, class)
        let cases = [
            ("public v4", "93.184.215.14", Public),
            ("public v4 next to 10/8", "11.0.0.1", Public),
            ("public v4 next to 172.16/12", "172.32.0.1", Public),
            ("public v4 next to CGNAT", "100.128.0.1", Public),
            ("loopback", "127.0.0.1", Loopback),
            ("all of 127/8", "127.255.0.2", Loopback),
            ("this network", "0.0.0.0", Reserved),
            ("this network, any host", "0.1.2.3", Reserved),
            ("rfc1918 10/8", "10.0.0.1", Private),
            ("rfc1918 172.16/12", "172.31.255.255", Private),
            ("rfc1918 192.168/16", "192.168.1.1", Private),
            ("CGNAT", "100.64.0.1", Private),
            ("benchmarking", "198.19.0.1", Private),
            ("IPv4 link-local is all metadata", "169.254.1.1", Metadata),
            ("Tencent metadata", "169.254.0.23", Metadata),
            ("GCE metadata over IPv6", "fd20:ce::254", Metadata),
            ("AWS/GCP/Azure metadata", "169.254.169.254", Metadata),
            ("AWS DNS", "169.254.169.253", Metadata),
            ("ECS credentials", "169.254.170.2", Metadata),
            ("Alibaba metadata", "100.100.100.200", Metadata),
            ("Azure WireServer", "168.63.129.16", Metadata),
            ("Oracle metadata", "192.0.0.192", Metadata),
            ("IETF protocol assignments", "192.0.0.8", Reserved),
            ("TEST-NET-1", "192.0.2.1", Reserved),
            ("TEST-NET-2", "198.51.100.7", Reserved),
            ("TEST-NET-3", "203.0.113.9", Reserved),
            ("6to4 relay anycast", "192.88.99.1", Reserved),
            ("multicast", "224.0.0.1", Reserved),
            ("reserved 240/4", "240.0.0.1", Reserved),
            ("broadcast", "255.255.255.255", Reserved),
            ("public v6", "2606:4700::1111", Public),
            ("v6 loopback", "::1", Loopback),
            ("v6 unspecified", "::", Reserved),
            ("mapped loopback", "::ffff:127.0.0.1", Loopback),
            ("mapped private", "::ffff:10.0.0.1", Private),
            ("mapped metadata", "::ffff:169.254.169.254", Metadata),
            ("mapped public", "::ffff:93.184.215.14", Public),
            ("compatible loopback", "::127.0.0.1", Loopback),
            ("compatible private", "::192.168.0.1", Private),
            ("NAT64 of private", "64:ff9b::10.0.0.1", Private),
            ("NAT64 of metadata", "64:ff9b::169.254.169.254", Metadata),
            ("NAT64 of public", "64:ff9b::93.184.215.14", Public),
            ("local-use NAT64", "64:ff9b:1::1", Private),
            ("6to4 of loopback", "2002:7f00:1::1", Loopback),
            ("6to4 of private", "2002:c0a8:101::1", Private),
            ("6to4 of public", "2002:5db8:d70e::1", Public),
            ("Teredo", "2001:0:4136:e378::1", Reserved),
            ("documentation v6", "2001:db8::1", Reserved),
            ("documentation 3fff::/20", "3fff::1", Reserved),
            ("discard-only", "100::1", Reserved),
            ("unique local", "fd12:3456::1", Private),
            ("unique local fc", "fc00::1", Private),
            ("AWS metadata v6", "fd00:ec2::254", Metadata),
            ("link-local v6", "fe80::1", LinkLocal),
            ("site-local v6", "fec0::1", Private),
            ("multicast v6", "ff02::1", Reserved),
            ("unallocated v6", "4000::1", Reserved),
        ];
        for (name, address, class) in cases {
            let ip: IpAddr = address.parse().unwrap();
            assert_eq!(classify_address(ip), class, "{name}: {address}");
        }
    }

    #[test]
    fn where_the_first_connection_of_a_fetch_may_go() {
        let (off, private, metadata) = (
            AddressPolicy::default(),
            AddressPolicy {
                allow_private_networks: true,
                ..AddressPolicy::default()
            },
            AddressPolicy {
                allow_metadata: true,
                ..AddressPolicy::default()
            },
        );
        let c = Origin::Configured;
        // (name, policy, origin, configured url, address connected to, allowed)
        let cases = [
            (
                "public name, public address",
                &off,
                c,
                "https://news.example/",
                "93.184.215.14",
                true,
            ),
            (
                "public name resolving to loopback",
                &off,
                c,
                "https://news.example/",
                "127.0.0.1",
                false,
            ),
            (
                "public name resolving to private",
                &off,
                c,
                "https://news.example/",
                "10.1.2.3",
                false,
            ),
            (
                "public name resolving to metadata",
                &off,
                c,
                "https://news.example/",
                "169.254.169.254",
                false,
            ),
            (
                "configured loopback address",
                &off,
                c,
                "http://127.0.0.1:8080/feed",
                "127.0.0.1",
                true,
            ),
            (
                "configured private address",
                &off,
                c,
                "http://192.168.1.5/feed",
                "192.168.1.5",
                true,
            ),
            (
                "configured mapped private address",
                &off,
                c,
                "http://[::ffff:10.0.0.1]/",
                "10.0.0.1",
                true,
            ),
            (
                "configured link-local address",
                &off,
                c,
                "http://[fe80::1]/",
                "fe80::1",
                true,
            ),
            (
                "localhost by name",
                &off,
                c,
                "http://localhost:1200/rss",
                "127.0.0.1",
                true,
            ),
            (
                "a .localhost name",
                &off,
                c,
                "http://bridge.localhost/",
                "::1",
                true,
            ),
            (
                "configured metadata address",
                &off,
                c,
                "http://169.254.169.254/latest/",
                "169.254.169.254",
                false,
            ),
            (
                "metadata allowed, by address",
                &metadata,
                c,
                "http://169.254.169.254/latest/",
                "169.254.169.254",
                true,
            ),
            (
                "metadata allowed, but from a public name",
                &metadata,
                c,
                "https://news.example/",
                "169.254.169.254",
                false,
            ),
            (
                "configured unspecified address",
                &off,
                c,
                "http://0.0.0.0:8080/",
                "0.0.0.0",
                false,
            ),
            (
                "private allowed: name resolving to private",
                &private,
                c,
                "http://intranet.corp/",
                "10.1.2.3",
                true,
            ),
            (
                "private allowed: not metadata",
                &private,
                c,
                "http://intranet.corp/",
                "169.254.169.254",
                false,
            ),
            (
                "private allowed: not reserved",
                &private,
                c,
                "http://intranet.corp/",
                "224.0.0.1",
                false,
            ),
            (
                "found link to loopback",
                &private,
                Origin::Found,
                "http://127.0.0.1/admin",
                "127.0.0.1",
                false,
            ),
            (
                "found link to public",
                &off,
                Origin::Found,
                "https://news.example/a",
                "93.184.215.14",
                true,
            ),
        ];
        for (name, policy, origin, url, address, allowed) in cases {
            let reach = policy.first_reach(&Url::parse(url).unwrap(), origin);
            let class = policy.class_of(address.parse().unwrap());
            assert_eq!(policy.permits(reach, class), allowed, "{name}");
        }
    }

    #[test]
    fn after_a_public_address_only_public_ones_follow() {
        let everything = AddressPolicy {
            allow_private_networks: true,
            allow_metadata: true,
            ..AddressPolicy::default()
        };
        for address in [
            "127.0.0.1",
            "10.0.0.1",
            "fd00::1",
            "169.254.169.254",
            "::ffff:192.168.0.1",
        ] {
            let class = classify_address(address.parse().unwrap());
            assert!(!everything.permits(Reach::Public, class), "{address}");
        }
        assert!(everything.permits(Reach::Public, AddressClass::Public));
    }

    #[test]
    fn refusals_say_why_without_what_a_name_resolved_to() {
        let cases = [
            (
                refusal(
                    "news.example resolves to",
                    AddressClass::Loopback,
                    0,
                    Reach::Public,
                    Origin::Configured,
                ),
                "news.example resolves to a loopback address; name that address itself in the feed's url, or set [poll] allow_private_networks = true",
            ),
            (
                refusal(
                    "127.0.0.1 is",
                    AddressClass::Loopback,
                    1,
                    Reach::Public,
                    Origin::Configured,
                ),
                "a redirect from a public address: 127.0.0.1 is a loopback address",
            ),
            (
                refusal(
                    "169.254.169.254 is",
                    AddressClass::Metadata,
                    0,
                    Reach::Private,
                    Origin::Configured,
                ),
                "169.254.169.254 is a cloud metadata address ([poll] allow_metadata is off)",
            ),
            (
                refusal(
                    "0.0.0.0 is",
                    AddressClass::Reserved,
                    0,
                    Reach::Private,
                    Origin::Configured,
                ),
                "0.0.0.0 is a reserved address",
            ),
            (
                refusal(
                    "10.0.0.1 is",
                    AddressClass::Private,
                    0,
                    Reach::Public,
                    Origin::Found,
                ),
                "a link found in a feed: 10.0.0.1 is a private network address",
            ),
        ];
        for (error, expected) in cases {
            assert_eq!(error.kind(), "fetch-policy");
            assert_eq!(
                error.to_string(),
                format!("refused by the fetch policy: {expected}")
            );
        }
    }

    #[test]
    fn retry_after_forms() {
        let cases = [
            ("seconds", "120", Some(RetryAfter::Seconds(120))),
            (
                "http date",
                "Sat, 28 Nov 2026 13:00:00 GMT",
                Some(RetryAfter::At("2026-11-28T13:00:00Z".parse().unwrap())),
            ),
            ("garbage", "soon", None),
            ("negative", "-5", None),
        ];
        for (name, value, expected) in cases {
            assert_eq!(
                retry_after(&headers(RETRY_AFTER, value)),
                expected,
                "{name}"
            );
        }
        let now: DateTime<Utc> = "2026-11-28T12:00:00Z".parse().unwrap();
        let past = RetryAfter::At("2026-11-28T11:00:00Z".parse().unwrap());
        assert_eq!(past.at(now), now, "a date in the past means now");
    }

    /// A server's number of seconds or date is bounded before any arithmetic: these
    /// overflowed chrono and panicked the poll.
    #[test]
    fn retry_after_beyond_any_calendar_is_bounded() {
        let now: DateTime<Utc> = "2026-11-28T12:00:00Z".parse().unwrap();
        let cases = [
            (
                "past TimeDelta::seconds",
                RetryAfter::Seconds(99_999_999_999_999_999),
            ),
            (
                "past DateTime + TimeDelta",
                RetryAfter::Seconds(9_000_000_000_000),
            ),
            ("u64::MAX", RetryAfter::Seconds(u64::MAX)),
            (
                "year 9999",
                RetryAfter::At("9999-12-31T23:59:59Z".parse().unwrap()),
            ),
        ];
        for (name, retry) in cases {
            let at = retry.at(now);
            assert!(at > now, "{name}: {at}");
            assert!(at <= now + chrono::Duration::days(365), "{name}: {at}");
        }
        assert_eq!(
            RetryAfter::Seconds(120).at(now),
            now + chrono::Duration::seconds(120)
        );
    }

    #[test]
    fn cache_control_max_age() {
        let cases = [
            ("plain", "max-age=3600", Some(3600)),
            (
                "with others",
                "public, max-age=600, must-revalidate",
                Some(600),
            ),
            ("no-cache wins", "no-cache, max-age=600", None),
            ("zero", "max-age=0", None),
            ("absent", "public", None),
        ];
        for (name, value, expected) in cases {
            assert_eq!(
                max_age(&headers(CACHE_CONTROL, value)),
                expected.map(Duration::from_secs),
                "{name}"
            );
        }
    }
}
