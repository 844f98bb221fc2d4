//! HTTP: one conditional GET per feed, with timeouts and a body cap.
//!
//! The only module that knows reqwest. It never touches storage: the caller passes the
//! validators (ETag, Last-Modified) it stored last time and gets back either
//! "not modified", the body, or a [`FetchError`] that says what kind of failure it was.

use std::fmt;

use reqwest::StatusCode;
use reqwest::header::{CONTENT_TYPE, ETAG, IF_MODIFIED_SINCE, IF_NONE_MATCH, LAST_MODIFIED};
use url::Url;

use crate::config::PollSettings;

/// What the server said last time, sent back so it can answer 304.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Validators {
    pub etag: Option<String>,
    pub last_modified: Option<String>,
}

#[derive(Debug)]
pub enum FetchOutcome {
    NotModified,
    Fetched(Fetched),
}

#[derive(Debug)]
pub struct Fetched {
    pub body: Vec<u8>,
    pub content_type: Option<String>,
    /// Where the body came from after redirects: the base for relative links.
    pub final_url: Url,
    pub validators: Validators,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FetchError {
    /// The server answered with an error status.
    Status(u16),
    Timeout,
    /// DNS, refused connection, TLS, reset…
    Connection(String),
    /// The body grew past the cap (counted after decompression).
    TooLarge {
        limit: usize,
    },
    /// 200 with nothing in it.
    Empty,
}

impl FetchError {
    /// A short, stable name for logs, status tables and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            FetchError::Status(_) => "http",
            FetchError::Timeout => "timeout",
            FetchError::Connection(_) => "connection",
            FetchError::TooLarge { .. } => "too-large",
            FetchError::Empty => "empty",
        }
    }
}

impl fmt::Display for FetchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FetchError::Status(code) => {
                let reason = StatusCode::from_u16(*code)
                    .ok()
                    .and_then(|s| s.canonical_reason())
                    .unwrap_or("");
                write!(f, "HTTP {code} {reason}")
            }
            FetchError::Timeout => write!(f, "timed out"),
            FetchError::Connection(why) => write!(f, "connection failed: {why}"),
            FetchError::TooLarge { limit } => {
                write!(f, "response larger than {} MiB", limit / (1024 * 1024))
            }
            FetchError::Empty => write!(f, "empty response"),
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
            .gzip(true)
            .build()?;
        Ok(Fetcher {
            client,
            max_body_bytes: settings.max_body_bytes,
        })
    }

    /// GETs `url`, conditionally on `validators`.
    pub async fn fetch_feed(
        &self,
        url: &Url,
        validators: &Validators,
    ) -> Result<FetchOutcome, FetchError> {
        let mut request = self.client.get(url.as_str());
        if let Some(etag) = &validators.etag {
            request = request.header(IF_NONE_MATCH, etag);
        }
        if let Some(lm) = &validators.last_modified {
            request = request.header(IF_MODIFIED_SINCE, lm);
        }
        let mut response = request.send().await.map_err(classify)?;
        let status = response.status();
        if status == StatusCode::NOT_MODIFIED {
            return Ok(FetchOutcome::NotModified);
        }
        if !status.is_success() {
            return Err(FetchError::Status(status.as_u16()));
        }

        let header = |name| {
            response
                .headers()
                .get(name)
                .and_then(|v: &reqwest::header::HeaderValue| v.to_str().ok())
                .map(str::to_string)
        };
        let fresh = Validators {
            etag: header(ETAG),
            last_modified: header(LAST_MODIFIED),
        };
        let content_type = header(CONTENT_TYPE);
        // Same ETag as we sent, on a 200: the server ignored If-None-Match; nothing changed.
        if fresh.etag.is_some() && fresh.etag == validators.etag {
            return Ok(FetchOutcome::NotModified);
        }
        let final_url = response.url().clone();

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
            content_type,
            final_url,
            validators: fresh,
        }))
    }
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
    FetchError::Connection(cause.to_string())
}
