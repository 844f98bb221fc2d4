//! HTTP: one (usually conditional) GET per feed, with timeouts, a body cap and redirects
//! followed by hand.
//!
//! The only module that knows reqwest. It never touches storage: the caller passes the
//! validators (ETag, Last-Modified) it stored last time and gets back either "not
//! modified", the body, or a [`FetchError`] that says what kind of failure it was (and,
//! for 429/503, when the server asked us to come back). Redirects are followed here (at
//! most [`MAX_REDIRECTS`], loops are an error) so that a permanent move can be reported.

use std::collections::HashSet;
use std::fmt;
use std::time::Duration;

use chrono::{DateTime, Utc};
use reqwest::StatusCode;
use reqwest::header::{
    CACHE_CONTROL, CONTENT_TYPE, ETAG, HeaderMap, IF_MODIFIED_SINCE, IF_NONE_MATCH, LAST_MODIFIED,
    LOCATION, RETRY_AFTER,
};
use url::Url;

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
        }
    }
}

impl std::error::Error for FetchError {}

/// A shared HTTP client; cheap to clone.
#[derive(Clone)]
pub struct Fetcher {
    client: reqwest::Client,
    max_body_bytes: usize,
}

impl Fetcher {
    pub fn new(settings: &PollSettings) -> anyhow::Result<Fetcher> {
        let client = reqwest::Client::builder()
            .user_agent(&settings.user_agent)
            .connect_timeout(settings.connect_timeout)
            .timeout(settings.timeout)
            .redirect(reqwest::redirect::Policy::none())
            .pool_max_idle_per_host(settings.per_host)
            .gzip(true)
            .build()?;
        Ok(Fetcher {
            client,
            max_body_bytes: settings.max_body_bytes,
        })
    }

    /// GETs `url`, conditionally on `validators` (pass empty ones for a full fetch).
    pub async fn fetch_feed(
        &self,
        url: &Url,
        validators: &Validators,
    ) -> Result<FetchOutcome, FetchError> {
        let mut current = url.clone();
        let mut seen = HashSet::from([url.to_string()]);
        let mut all_permanent = true;
        let mut response = loop {
            let mut request = self.client.get(current.as_str());
            if let Some(etag) = &validators.etag {
                request = request.header(IF_NONE_MATCH, etag);
            }
            if let Some(lm) = &validators.last_modified {
                request = request.header(IF_MODIFIED_SINCE, lm);
            }
            let response = request.send().await.map_err(classify)?;
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
        while let Some(chunk) = response.chunk().await.map_err(classify)? {
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

fn classify(err: reqwest::Error) -> FetchError {
    if err.is_timeout() {
        return FetchError::Timeout;
    }
    // The innermost cause is the useful part ("Connection refused", "dns error"…).
    let mut cause: &dyn std::error::Error = &err;
    while let Some(next) = cause.source() {
        cause = next;
    }
    if cause.to_string().contains("timed out") {
        return FetchError::Timeout;
    }
    FetchError::Connection(cause.to_string())
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
