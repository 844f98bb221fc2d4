//! Outbox → destinations beside email: webhooks (signed as Standard Webhooks specify),
//! ntfy, Telegram, Matrix, Slack, Discord and Mattermost.
//!
//! A digest round writes each destination's [`Event`] to the outbox in the transaction
//! that takes its matches (see [`crate::store::Store::take_digest`]); this module sends
//! what the outbox holds, in each service's own format and within its limits, and
//! records the answer: sent; retried with backoff on network errors, 5xx and 429 (not
//! before `Retry-After`, or the delay the service puts in its body); or rejected for good
//! on other 4xx, with the answer kept, and the destination paused after
//! `[channels] pause_after` rejections in a row (at once on 410) and its owner told by
//! mail. Requests go through the fetch guard: a destination a subscriber gave reaches
//! public addresses only.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use base64::Engine as _;
use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use futures_util::StreamExt as _;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};
use url::Url;

use crate::config::ChannelSettings;
use crate::digest::{Event, EventItem};
use crate::fetch::{Answer, FetchError, Fetcher, Origin, Outgoing};
use crate::store::{Channel, ChannelKind, ChannelOrigin, OutboxKind, PushMessage, Store};

/// The Telegram Bot API unless a destination names another (a local Bot API server).
pub const TELEGRAM_API: &str = "https://api.telegram.org";

/// Besides the send timeout and pacing waits, how long a claimed batch stays ours.
const CLAIM_MARGIN: Duration = Duration::from_secs(10);

// ---- destinations ------------------------------------------------------------------------------

/// What a destination is, beside its secret: stored as JSON in `channels.target`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Target {
    /// POSTs the event as JSON to `url`, signed with the destination's secret.
    Webhook {
        url: Url,
    },
    /// A topic URL on any ntfy server (`https://ntfy.sh/my-topic`).
    Ntfy {
        url: Url,
    },
    Telegram {
        chat_id: String,
        #[serde(default = "telegram_api")]
        api: Url,
    },
    /// A room id (`!abc:example.org`) on a homeserver.
    Matrix {
        homeserver: Url,
        room: String,
    },
    /// Slack, Discord and Mattermost incoming webhooks: the URL is the secret; `host`
    /// is kept to show and to pace by.
    Slack {
        host: String,
    },
    Discord {
        host: String,
    },
    Mattermost {
        host: String,
    },
}

fn telegram_api() -> Url {
    Url::parse(TELEGRAM_API).expect("a valid URL")
}

impl Target {
    pub fn kind(&self) -> ChannelKind {
        match self {
            Target::Webhook { .. } => ChannelKind::Webhook,
            Target::Ntfy { .. } => ChannelKind::Ntfy,
            Target::Telegram { .. } => ChannelKind::Telegram,
            Target::Matrix { .. } => ChannelKind::Matrix,
            Target::Slack { .. } => ChannelKind::Slack,
            Target::Discord { .. } => ChannelKind::Discord,
            Target::Mattermost { .. } => ChannelKind::Mattermost,
        }
    }

    /// One line for lists: never the secret.
    pub fn describe(&self) -> String {
        match self {
            Target::Webhook { url } | Target::Ntfy { url } => url.to_string(),
            Target::Telegram { chat_id, api } if api.as_str() == "https://api.telegram.org/" => {
                format!("chat {chat_id}")
            }
            Target::Telegram { chat_id, api } => format!("chat {chat_id} via {api}"),
            Target::Matrix { homeserver, room } => format!("{room} on {homeserver}"),
            Target::Slack { host } | Target::Discord { host } | Target::Mattermost { host } => {
                match host.strip_prefix('$') {
                    Some(var) => format!("incoming webhook from ${var}"),
                    None => format!("incoming webhook on {host}"),
                }
            }
        }
    }
}

/// What someone typed to add a destination: the kind's fields, each optional here and
/// checked by [`Spec::check`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Spec {
    pub kind: String,
    /// Webhook URL, ntfy topic URL, or Slack/Discord/Mattermost incoming-webhook URL.
    pub url: Option<String>,
    /// Telegram bot token, Matrix access token, ntfy access token.
    pub token: Option<String>,
    pub chat_id: Option<String>,
    pub homeserver: Option<String>,
    pub room: Option<String>,
    /// Another Telegram Bot API server.
    pub api: Option<String>,
}

/// A destination, checked: what is stored in the open and what is secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checked {
    pub target: Target,
    /// `None` for a webhook: its signing secret is made by [`webhook_secret`].
    pub secret: Option<String>,
}

impl Spec {
    /// Checks the fields the kind needs, and nothing else given. `require_https` refuses
    /// plain-HTTP URLs (destinations subscribers give).
    pub fn check(&self, require_https: bool) -> Result<Checked, String> {
        let kind: ChannelKind = self.kind.trim().parse().map_err(|_| {
            format!(
                "unknown kind {:?}: expected webhook, ntfy, telegram, matrix, slack, discord or mattermost",
                self.kind
            )
        })?;
        let url = |what: &str| -> Result<Url, String> {
            let text = self
                .url
                .as_deref()
                .map(str::trim)
                .filter(|u| !u.is_empty())
                .ok_or_else(|| format!("a {kind} destination needs {what}"))?;
            check_url(text, require_https)
        };
        let token = |what: &str| -> Result<String, String> {
            let token = self
                .token
                .as_deref()
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .ok_or_else(|| format!("a {kind} destination needs {what}"))?;
            check_token(token, what)?;
            Ok(token.to_string())
        };
        let checked = match kind {
            ChannelKind::Webhook => Checked {
                target: Target::Webhook {
                    url: url("a URL (https://…)")?,
                },
                secret: None,
            },
            ChannelKind::Ntfy => {
                let url = url("a topic URL (https://ntfy.sh/your-topic)")?;
                if topic_of(&url).is_none() {
                    return Err(format!(
                        "{url} names no topic: expected https://server/topic"
                    ));
                }
                let token = match self.token.as_deref().map(str::trim) {
                    Some(t) if !t.is_empty() => {
                        check_token(t, "an access token")?;
                        Some(t.to_string())
                    }
                    _ => None,
                };
                Checked {
                    target: Target::Ntfy { url },
                    secret: token,
                }
            }
            ChannelKind::Telegram => {
                let chat_id = self.chat_id.as_deref().map(str::trim).unwrap_or_default();
                let valid = chat_id
                    .strip_prefix('@')
                    .unwrap_or_else(|| chat_id.strip_prefix('-').unwrap_or(chat_id));
                if valid.is_empty()
                    || !valid.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                    || chat_id.len() > 64
                {
                    return Err(format!(
                        "a telegram destination needs a chat id (a number, or @channelname), not {chat_id:?}"
                    ));
                }
                let api = match self.api.as_deref().map(str::trim) {
                    Some(a) if !a.is_empty() => check_url(a, require_https)?,
                    _ => telegram_api(),
                };
                Checked {
                    target: Target::Telegram {
                        chat_id: chat_id.to_string(),
                        api,
                    },
                    secret: Some(token("a bot token (from @BotFather)")?),
                }
            }
            ChannelKind::Matrix => {
                let homeserver = self
                    .homeserver
                    .as_deref()
                    .map(str::trim)
                    .filter(|h| !h.is_empty())
                    .ok_or(
                        "a matrix destination needs a homeserver URL (https://matrix.example.org)",
                    )?;
                let homeserver = check_url(homeserver, require_https)?;
                let room = self.room.as_deref().map(str::trim).unwrap_or_default();
                let well_formed = room.starts_with('!')
                    && room.contains(':')
                    && room.len() <= 255
                    && !room.chars().any(|c| c.is_whitespace() || c.is_control());
                if !well_formed {
                    return Err(format!(
                        "a matrix destination needs a room id like !abc123:example.org (Room settings → Advanced), not {room:?}"
                    ));
                }
                Checked {
                    target: Target::Matrix {
                        homeserver,
                        room: room.to_string(),
                    },
                    secret: Some(token("an access token")?),
                }
            }
            ChannelKind::Slack | ChannelKind::Discord | ChannelKind::Mattermost => {
                let url = url("its incoming-webhook URL")?;
                let host = url.host_str().unwrap_or_default().to_string();
                let target = match kind {
                    ChannelKind::Slack => Target::Slack { host },
                    ChannelKind::Discord => Target::Discord { host },
                    _ => Target::Mattermost { host },
                };
                Checked {
                    target,
                    secret: Some(url.to_string()),
                }
            }
        };
        Ok(checked)
    }
}

/// A destination's name: short, one line, printable.
pub fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.chars().count() > 40 {
        return Err("a destination's name is 1 to 40 characters".into());
    }
    if name.chars().any(|c| c.is_control()) {
        return Err("a destination's name cannot hold control characters".into());
    }
    Ok(())
}

/// A URL a destination may be: http(s), a host, no credentials.
fn check_url(text: &str, require_https: bool) -> Result<Url, String> {
    let url = Url::parse(text).map_err(|e| format!("{text:?} is not a URL: {e}"))?;
    match url.scheme() {
        "https" => {}
        "http" if !require_https => {}
        "http" => return Err(format!("{url}: only https:// URLs are accepted")),
        other => return Err(format!("{url}: {other}:// is not a web address")),
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(format!("{url} has no host"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(format!("{url}: put no user or password in the URL"));
    }
    if text.len() > 2000 {
        return Err("the URL is longer than 2,000 characters".into());
    }
    Ok(url)
}

fn check_token(token: &str, what: &str) -> Result<(), String> {
    if token.len() > 1000 || token.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(format!("{what} must be one word of printable characters"));
    }
    Ok(())
}

/// The topic of an ntfy topic URL: its last path segment.
fn topic_of(url: &Url) -> Option<String> {
    let topic = url.path_segments()?.rev().find(|s| !s.is_empty())?;
    let ok = topic.len() <= 64
        && topic
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    ok.then(|| topic.to_string())
}

// ---- secrets and codes ---------------------------------------------------------------------------

/// A new webhook signing secret: `whsec_` and 24 random bytes in base64, as Standard
/// Webhooks write them.
pub fn webhook_secret() -> Result<String> {
    let mut bytes = [0u8; 24];
    getrandom::fill(&mut bytes).map_err(|e| anyhow::anyhow!("no randomness for a secret: {e}"))?;
    Ok(format!(
        "whsec_{}",
        base64::engine::general_purpose::STANDARD.encode(bytes)
    ))
}

/// A verification code: 8 digits, shown as `1234 5678`.
pub fn confirm_code() -> Result<String> {
    let mut bytes = [0u8; 8];
    getrandom::fill(&mut bytes).map_err(|e| anyhow::anyhow!("no randomness for a code: {e}"))?;
    let n = u64::from_le_bytes(bytes) % 100_000_000;
    Ok(format!("{:04} {:04}", n / 10_000, n % 10_000))
}

/// Whether a code typed in is `expected`, ignoring spaces and dashes; compared in
/// constant time.
pub fn same_code(expected: &str, given: &str) -> bool {
    let digits = |s: &str| -> Vec<u8> {
        s.bytes()
            .filter(|b| !matches!(b, b' ' | b'-' | b'\t'))
            .collect()
    };
    let (a, b) = (digits(expected), digits(given));
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(&b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The `webhook-signature` of `body` sent as message `id` at `timestamp`:
/// `v1,` and base64 of HMAC-SHA256 over `{id}.{timestamp}.{body}`, keyed by the
/// secret's bytes (base64 after `whsec_`).
pub fn sign(secret: &str, id: &str, timestamp: i64, body: &[u8]) -> Result<String> {
    let key = base64::engine::general_purpose::STANDARD
        .decode(secret.strip_prefix("whsec_").unwrap_or(secret))
        .context("the webhook secret is not whsec_ and base64")?;
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).context("webhook secret")?;
    mac.update(format!("{id}.{timestamp}.").as_bytes());
    mac.update(body);
    Ok(format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
    ))
}

// ---- adding ----------------------------------------------------------------------------------

/// A destination just added: what to show its owner once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Added {
    pub id: crate::store::ChannelId,
    pub target: Target,
    /// A webhook's signing secret (`whsec_…`), shown once.
    pub signing_secret: Option<String>,
    /// Set when it must be confirmed: the code its verification message carries.
    pub confirm_code: Option<String>,
}

/// Checks `spec` and adds it as `subscriber`'s destination `name`, taking `searches` (or
/// every search when empty). One a subscriber adds must use https (unless
/// `[channels] require_https = false`) and be confirmed: its verification message, with
/// the code, is queued at once and nothing else goes there until the code is entered.
/// One an admin adds is active at once. Refusals (a bad URL, a name taken) are errors
/// whose message is for the person who typed it.
#[allow(clippy::too_many_arguments)]
pub async fn add_channel(
    store: &Store,
    settings: &ChannelSettings,
    subscriber: &crate::store::Subscriber,
    name: &str,
    spec: &Spec,
    added_by: ChannelOrigin,
    searches: Vec<crate::store::SubscriptionId>,
    now: DateTime<Utc>,
) -> Result<Added> {
    let name = name.trim();
    check_name(name).map_err(anyhow::Error::msg)?;
    let by_subscriber = added_by == ChannelOrigin::Subscriber;
    let checked = spec
        .check(by_subscriber && settings.require_https)
        .map_err(anyhow::Error::msg)?;
    let secret = match (&checked.target, &checked.secret) {
        (Target::Webhook { .. }, _) => Some(webhook_secret()?),
        (_, secret) => secret.clone(),
    };
    let confirm = match by_subscriber {
        true => Some(confirm_code()?),
        false => None,
    };
    let verification = match &confirm {
        Some(code) => Some(verification(&subscriber.email, name, code, now)?),
        None => None,
    };
    let limits = by_subscriber.then_some(crate::store::ChannelLimits {
        max_channels: MAX_DESTINATIONS,
        max_notices_per_day: MAX_NOTICES_PER_DAY,
    });
    let id = store
        .add_channel(
            crate::store::NewChannel {
                subscriber_id: subscriber.id,
                name: name.to_string(),
                kind: checked.target.kind(),
                target: serde_json::to_string(&checked.target)?,
                secret: secret.clone(),
                secret_env: None,
                added_by,
                confirm_code: confirm.clone(),
                every_search: searches.is_empty(),
                searches,
                limits,
                verification,
            },
            now,
        )
        .await?;
    Ok(Added {
        id,
        signing_secret: matches!(checked.target, Target::Webhook { .. })
            .then(|| secret.clone())
            .flatten(),
        target: checked.target,
        confirm_code: confirm,
    })
}

/// What a `[[destinations]]` table stores in the open. A secret URL is named by its
/// environment variable (`$TEAM_SLACK_URL`), never read into the database.
pub fn config_target(d: &crate::config::DestinationConfig) -> Result<Target, String> {
    let secret_url = matches!(d.kind.as_str(), "slack" | "discord" | "mattermost");
    let spec = Spec {
        kind: d.kind.clone(),
        // The URL is the secret, read when sending: what is stored must not depend on
        // whether this process has the variable.
        url: match secret_url {
            true => Some("https://secret.invalid/".into()),
            false => d.url.clone(),
        },
        token: Some("from-env".into()),
        chat_id: d.chat_id.clone(),
        homeserver: d.homeserver.clone(),
        room: d.room.clone(),
        api: d.api.clone(),
    };
    let named = format!("${}", d.secret_env.as_deref().unwrap_or("?"));
    Ok(match spec.check(false)?.target {
        Target::Slack { .. } => Target::Slack { host: named },
        Target::Discord { .. } => Target::Discord { host: named },
        Target::Mattermost { .. } => Target::Mattermost { host: named },
        other => other,
    })
}

/// Destinations a subscriber may add besides email.
pub const MAX_DESTINATIONS: usize = 10;
/// Notices (verification codes, tests) one subscriber may have sent in a day: the pages
/// must not make Tidings post to any address anyone types, over and over.
pub const MAX_NOTICES_PER_DAY: i64 = 10;

/// The verification message of destination `name` (of `email`), with its `code`.
pub fn verification(
    email: &str,
    name: &str,
    code: &str,
    now: DateTime<Utc>,
) -> Result<crate::store::Notice> {
    let event = Event::notice(
        "tidings.verify",
        email,
        name,
        "Tidings: confirm this destination",
        &format!(
            "Someone asked Tidings to send alerts for {email} here. If it was you, enter this \
             code on your Tidings page. If not, ignore this message: nothing else is sent \
             here until the code is entered."
        ),
        Some(code),
        now,
    );
    Ok(crate::store::Notice {
        subject: event.data.title.clone(),
        event: serde_json::to_string(&event)?,
        message_id: crate::store::event_id()?,
    })
}

/// A test message for `channel`.
pub fn test_notice(channel: &Channel, now: DateTime<Utc>) -> Result<crate::store::Notice> {
    let event = Event::notice(
        "tidings.test",
        &channel.email,
        &channel.name,
        "Tidings: test message",
        "This destination is set up: Tidings alerts will arrive here.",
        None,
        now,
    );
    Ok(crate::store::Notice {
        subject: event.data.title.clone(),
        event: serde_json::to_string(&event)?,
        message_id: crate::store::event_id()?,
    })
}

/// Queues a test message for a destination (sent whatever its state).
pub async fn queue_test(
    store: &Store,
    channel: &Channel,
    now: DateTime<Utc>,
) -> Result<crate::store::OutboxId> {
    let notice = test_notice(channel, now)?;
    store
        .queue_notice(
            channel.id,
            &notice.subject,
            &notice.event,
            &notice.message_id,
            now,
        )
        .await
}

// ---- formats -----------------------------------------------------------------------------------

/// How one service writes text: its markup and its length limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Markup {
    /// Telegram's HTML subset.
    TelegramHtml,
    /// Slack's mrkdwn.
    Slack,
    /// Discord's and Mattermost's Markdown.
    Markdown,
    /// No markup at all (ntfy, Matrix's `body`).
    Plain,
    /// Matrix's `formatted_body`.
    Html,
}

/// How a service counts a message's length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Measure {
    Utf16,
    Chars,
    Bytes,
    /// Bytes once written as a JSON string (escapes count).
    JsonBytes,
}

impl Measure {
    fn len(self, s: &str) -> usize {
        match self {
            Measure::Utf16 => s.encode_utf16().count(),
            Measure::Chars => s.chars().count(),
            Measure::Bytes => s.len(),
            Measure::JsonBytes => s
                .chars()
                .map(|c| match c {
                    '"' | '\\' | '\n' | '\r' | '\t' => 2,
                    c if (c as u32) < 0x20 => 6,
                    c => c.len_utf8(),
                })
                .sum(),
        }
    }
}

/// Longest title and link shown in a chat message, so one item always fits.
const ITEM_TITLE_CHARS: usize = 200;
const ITEM_LINK_BYTES: usize = 800;

impl Markup {
    fn escape(self, s: &str) -> String {
        let mut out = String::with_capacity(s.len());
        for c in s.chars() {
            match (self, c) {
                (Markup::TelegramHtml | Markup::Html | Markup::Slack, '&') => out.push_str("&amp;"),
                (Markup::TelegramHtml | Markup::Html | Markup::Slack, '<') => out.push_str("&lt;"),
                (Markup::TelegramHtml | Markup::Html | Markup::Slack, '>') => out.push_str("&gt;"),
                (Markup::TelegramHtml | Markup::Html, '"') => out.push_str("&quot;"),
                (
                    Markup::Markdown,
                    '\\' | '*' | '_' | '~' | '`' | '|' | '[' | ']' | '(' | ')' | '#' | '>' | '<'
                    | '-' | '+' | '!',
                ) => {
                    out.push('\\');
                    out.push(c);
                }
                // No one is paged by a feed's title: "@channel" loses its meaning.
                (Markup::Markdown | Markup::Slack, '@') => out.push_str("@\u{200b}"),
                _ => out.push(c),
            }
        }
        out
    }

    fn bold(self, s: &str) -> String {
        match self {
            Markup::TelegramHtml | Markup::Html => format!("<b>{}</b>", self.escape(s)),
            Markup::Slack => format!("*{}*", self.escape(s)),
            Markup::Markdown => format!("**{}**", self.escape(s)),
            Markup::Plain => s.to_string(),
        }
    }

    fn code(self, s: &str) -> String {
        match self {
            Markup::TelegramHtml | Markup::Html => format!("<code>{}</code>", self.escape(s)),
            Markup::Slack | Markup::Markdown => format!("`{}`", s.replace('`', "'")),
            Markup::Plain => s.to_string(),
        }
    }

    fn link(self, text: &str, url: &str) -> String {
        match self {
            Markup::TelegramHtml | Markup::Html => {
                format!("<a href=\"{}\">{}</a>", self.escape(url), self.escape(text))
            }
            Markup::Slack => format!(
                "<{}|{}>",
                url.replace('|', "%7C")
                    .replace('<', "%3C")
                    .replace('>', "%3E"),
                self.escape(text).replace('|', "¦")
            ),
            // Angle brackets: the link shows no preview card.
            Markup::Markdown => format!(
                "[{}](<{}>)",
                self.escape(text),
                url.replace('>', "%3E").replace(' ', "%20")
            ),
            Markup::Plain => format!("{text}\n  {url}"),
        }
    }

    fn newline(self) -> &'static str {
        match self {
            Markup::Html => "<br>\n",
            _ => "\n",
        }
    }
}

fn shorten(s: &str, max_chars: usize) -> String {
    if s.chars().count() <= max_chars {
        return s.to_string();
    }
    let cut: String = s.chars().take(max_chars.saturating_sub(1)).collect();
    format!("{}…", cut.trim_end())
}

/// One item as a few lines of `markup`.
fn item_text(item: &EventItem, markup: Markup, tz: Tz) -> String {
    let nl = markup.newline();
    let title = shorten(&item.title, ITEM_TITLE_CHARS);
    let title = if item.more_coverage {
        format!("More coverage: {title}")
    } else if item.updated {
        format!("Updated: {title}")
    } else {
        title
    };
    let headline = match item.link.as_deref().filter(|l| l.len() <= ITEM_LINK_BYTES) {
        Some(link) => markup.link(&title, link),
        None => markup.escape(&title),
    };
    let date = item.date.with_timezone(&tz).format("%b %-d %H:%M %Z");
    let mut line = format!(
        "• {headline}{nl}  {} · {date}",
        markup.escape(&shorten(&item.source, 80))
    );
    if !item.also_in.is_empty() {
        let mut others: Vec<String> = item
            .also_in
            .iter()
            .take(crate::digest::MAX_ALSO_SHOWN)
            .map(|a| shorten(&a.source, 40))
            .collect();
        if item.also_in.len() > crate::digest::MAX_ALSO_SHOWN {
            others.push(format!(
                "{} more",
                item.also_in.len() - crate::digest::MAX_ALSO_SHOWN
            ));
        }
        line.push_str(&markup.escape(&format!(" · also covered by {}", others.join(", "))));
    }
    if !item.snippet.is_empty() && !item.more_coverage {
        let prefix = if item.from_article {
            "From the article: "
        } else {
            ""
        };
        line.push_str(nl);
        line.push_str("  ");
        line.push_str(&markup.escape(&format!("{prefix}{}", item.snippet)));
    }
    line
}

/// The event as one message of `markup`, at most `limit` long as `measure` counts: whole
/// items while they fit, then a line saying how many more there are and where to find
/// them (the search's private feed).
fn compose(event: &Event, markup: Markup, measure: Measure, limit: usize) -> String {
    let nl = markup.newline();
    let follows = match event.data.more_follow {
        true => format!(
            "{nl}{nl}{}",
            markup.escape("More matches follow in the next message.")
        ),
        false => String::new(),
    };
    // The closing line's count can grow by a digit, and its link differs by search; the
    // "more follow" line is kept room for.
    let limit = limit.saturating_sub(16 + measure.len(&follows));
    let tz: Tz = event.data.timezone.parse().unwrap_or(chrono_tz::UTC);
    let mut out = markup.bold(&shorten(&event.data.title, 250));
    if let Some(text) = &event.data.text {
        out.push_str(nl);
        out.push_str(nl);
        out.push_str(&markup.escape(&shorten(text, 1500)));
    }
    if let Some(code) = &event.data.code {
        out.push_str(nl);
        out.push_str(nl);
        out.push_str(&markup.escape("Code: "));
        out.push_str(&markup.code(code));
    }
    let total = event.items();
    let mut shown = 0;
    'searches: for search in &event.data.searches {
        let heading = format!("{nl}{nl}{}", markup.bold(&shorten(&search.query, 100)));
        let mut first = true;
        for item in &search.items {
            let text = item_text(item, markup, tz);
            let piece = match first {
                true => format!("{heading}{nl}{text}"),
                false => format!("{nl}{text}"),
            };
            let rest = total - shown - 1;
            let tail = match rest {
                0 => String::new(),
                n => more_line(n, search.feed_url.as_deref(), markup),
            };
            if measure.len(&out) + measure.len(&piece) + measure.len(&tail) > limit {
                out.push_str(&more_line(
                    total - shown,
                    search.feed_url.as_deref(),
                    markup,
                ));
                break 'searches;
            }
            out.push_str(&piece);
            shown += 1;
            first = false;
        }
    }
    if shown == total {
        out.push_str(&follows);
    }
    out
}

fn more_line(n: usize, feed: Option<&str>, markup: Markup) -> String {
    let nl = markup.newline();
    let what = format!("…and {n} more");
    match feed.filter(|f| f.len() <= ITEM_LINK_BYTES) {
        Some(feed) => format!(
            "{nl}{nl}{}{}",
            markup.escape(&format!("{what}: ")),
            markup.link("all matches", feed)
        ),
        None => format!(
            "{nl}{nl}{}",
            markup.escape(&format!("{what} in your email digest."))
        ),
    }
}

/// Telegram counts 4,096 UTF-16 units after entity parsing; the markup we count too.
const TELEGRAM_LIMIT: usize = 4096;
/// Discord's `content` takes 2,000 characters.
const DISCORD_LIMIT: usize = 2000;
/// Slack shows about 4,000 characters of a message's text before "show more" and
/// splits longer ones oddly; its hard limit is 40,000.
const SLACK_LIMIT: usize = 4000;
/// Mattermost's post limit (16,383 characters).
const MATTERMOST_LIMIT: usize = 16_383;
/// ntfy turns a message over 4,096 bytes into an attachment.
const NTFY_LIMIT: usize = 4096;
/// A Matrix event is at most 65,536 bytes as JSON, envelope included; the plain and HTML
/// bodies share it, each counted as JSON.
const MATRIX_LIMIT: usize = 28_000;

/// The HTTP request that delivers `event` (its JSON as stored: `body`) to `channel`,
/// whose secret is `secret`, as message `message_id` sent at `now` (the wall clock's
/// time: a webhook's `webhook-timestamp`).
pub fn request(
    channel: &Channel,
    secret: Option<&str>,
    body: &str,
    message_id: &str,
    now: DateTime<Utc>,
) -> Result<Outgoing> {
    let target: Target = serde_json::from_str(&channel.target)
        .with_context(|| format!("destination {}: unreadable target", channel.id))?;
    let event: Event = serde_json::from_str(body)
        .with_context(|| format!("destination {}: unreadable event", channel.id))?;
    let json =
        |value: serde_json::Value| serde_json::to_vec(&value).expect("JSON values serialize");
    let content_json = ("content-type".to_string(), "application/json".to_string());
    let need = |what: &str| {
        secret
            .map(str::to_string)
            .with_context(|| format!("destination {} has no {what}", channel.name))
    };
    Ok(match target {
        Target::Webhook { url } => {
            let secret = need("signing secret")?;
            let timestamp = now.timestamp();
            let signature = sign(&secret, message_id, timestamp, body.as_bytes())?;
            Outgoing {
                put: false,
                url,
                headers: vec![
                    content_json,
                    ("webhook-id".into(), message_id.into()),
                    ("webhook-timestamp".into(), timestamp.to_string()),
                    ("webhook-signature".into(), signature),
                ],
                body: body.as_bytes().to_vec(),
            }
        }
        Target::Ntfy { url } => {
            let topic = topic_of(&url).context("ntfy URL without a topic")?;
            // JSON is published to the server's root: the topic URL without its topic
            // (a server under a path prefix keeps it).
            let mut server = url.clone();
            server.set_query(None);
            server.set_fragment(None);
            let path = server.path().trim_end_matches('/');
            let root = path.rsplit_once('/').map_or("", |(root, _)| root);
            let root = format!("{root}/");
            server.set_path(&root);
            let text = compose(&event, Markup::Plain, Measure::Bytes, NTFY_LIMIT - 200);
            // The title goes in its own field; the message is what follows it.
            let message = text
                .split_once("\n\n")
                .map_or(String::new(), |(_, rest)| rest.to_string());
            let click = event
                .data
                .searches
                .iter()
                .flat_map(|s| &s.items)
                .find_map(|i| i.link.clone());
            let mut payload = serde_json::json!({
                "topic": topic,
                "title": shorten(&event.data.title, 200),
                "message": if message.is_empty() { event.data.title.clone() } else { message },
                "tags": ["newspaper"],
            });
            if let Some(click) = click.filter(|c| c.len() <= ITEM_LINK_BYTES) {
                payload["click"] = click.into();
            }
            let mut headers = vec![content_json];
            if let Some(token) = secret {
                headers.push(("authorization".into(), format!("Bearer {token}")));
            }
            Outgoing {
                put: false,
                url: server,
                headers,
                body: json(payload),
            }
        }
        Target::Telegram { chat_id, api } => {
            let token = need("bot token")?;
            // "./": a token has a colon, and "bot1:x/…" alone would read as a scheme.
            let mut api = api.clone();
            if !api.path().ends_with('/') {
                api.set_path(&format!("{}/", api.path()));
            }
            let url = api
                .join(&format!("./bot{token}/sendMessage"))
                .context("telegram API URL")?;
            let text = compose(&event, Markup::TelegramHtml, Measure::Utf16, TELEGRAM_LIMIT);
            let chat: serde_json::Value = match chat_id.parse::<i64>() {
                Ok(n) => n.into(),
                Err(_) => chat_id.into(),
            };
            Outgoing {
                put: false,
                url,
                headers: vec![content_json],
                body: json(serde_json::json!({
                    "chat_id": chat,
                    "text": text,
                    "parse_mode": "HTML",
                    "link_preview_options": {"is_disabled": true},
                })),
            }
        }
        Target::Matrix { homeserver, room } => {
            let token = need("access token")?;
            let mut url = homeserver.clone();
            url.path_segments_mut()
                .map_err(|()| anyhow::anyhow!("homeserver URL cannot take a path"))?
                .pop_if_empty()
                .extend([
                    "_matrix",
                    "client",
                    "v3",
                    "rooms",
                    &room,
                    "send",
                    "m.room.message",
                    message_id,
                ]);
            let plain = compose(&event, Markup::Plain, Measure::JsonBytes, MATRIX_LIMIT);
            let html = compose(&event, Markup::Html, Measure::JsonBytes, MATRIX_LIMIT);
            Outgoing {
                // Idempotent per transaction id: a retry never posts twice.
                put: true,
                url,
                headers: vec![
                    content_json,
                    ("authorization".into(), format!("Bearer {token}")),
                ],
                body: json(serde_json::json!({
                    "msgtype": "m.text",
                    "body": plain,
                    "format": "org.matrix.custom.html",
                    "formatted_body": html,
                })),
            }
        }
        Target::Slack { .. } => Outgoing {
            put: false,
            url: Url::parse(&need("webhook URL")?).context("slack webhook URL")?,
            headers: vec![content_json],
            body: json(serde_json::json!({
                "text": compose(&event, Markup::Slack, Measure::Chars, SLACK_LIMIT),
                "unfurl_links": false,
                "unfurl_media": false,
            })),
        },
        Target::Discord { .. } => {
            let mut url = Url::parse(&need("webhook URL")?).context("discord webhook URL")?;
            // `wait=true`: Discord answers only once the message is stored, so a 2xx
            // means it is there.
            url.query_pairs_mut().append_pair("wait", "true");
            Outgoing {
                put: false,
                url,
                headers: vec![content_json],
                body: json(serde_json::json!({
                    "content": compose(&event, Markup::Markdown, Measure::Utf16, DISCORD_LIMIT),
                    "allowed_mentions": {"parse": []},
                    "flags": 4,
                })),
            }
        }
        Target::Mattermost { .. } => Outgoing {
            put: false,
            url: Url::parse(&need("webhook URL")?).context("mattermost webhook URL")?,
            headers: vec![content_json],
            body: json(serde_json::json!({
                "text": compose(&event, Markup::Markdown, Measure::Chars, MATTERMOST_LIMIT),
            })),
        },
    })
}

// ---- answers -----------------------------------------------------------------------------------

/// What an answer (or the lack of one) means for the message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Sent,
    /// Try again: not before `at` when the service said when.
    Retry {
        at: Option<DateTime<Utc>>,
        why: String,
    },
    /// Retrying will not help; `gone` pauses the destination at once.
    Rejected {
        why: String,
        gone: bool,
    },
}

/// Judges the answer of `kind`'s service (or the failure to get one) at `now`.
pub fn judge(
    kind: ChannelKind,
    outcome: &Result<Answer, FetchError>,
    now: DateTime<Utc>,
) -> Verdict {
    let answer = match outcome {
        Ok(answer) => answer,
        Err(FetchError::Refused(why)) => {
            return Verdict::Rejected {
                why: format!("refused by the fetch policy: {why}"),
                gone: false,
            };
        }
        Err(e) => {
            return Verdict::Retry {
                at: None,
                why: e.to_string(),
            };
        }
    };
    let status = answer.status;
    let why = describe_answer(kind, answer);
    // Telegram says `"ok": false` in its body when it did not send, whatever the status.
    let refused_in_body = kind == ChannelKind::Telegram
        && serde_json::from_str::<serde_json::Value>(&answer.body)
            .is_ok_and(|b| b.get("ok") == Some(&serde_json::Value::Bool(false)));
    match status {
        200..=299 if refused_in_body => Verdict::Rejected { why, gone: false },
        200..=299 => Verdict::Sent,
        429 | 503 => Verdict::Retry {
            at: retry_at(answer, now),
            why,
        },
        408 | 500..=599 => Verdict::Retry { at: None, why },
        410 => Verdict::Rejected { why, gone: true },
        300..=399 => Verdict::Rejected {
            why: format!("{why} (redirected: give the destination its new URL)"),
            gone: false,
        },
        _ => Verdict::Rejected { why, gone: false },
    }
}

/// When a 429 says to come back: `Retry-After`, or the delay Telegram
/// (`parameters.retry_after`), Discord (`retry_after`, seconds) or Matrix
/// (`retry_after_ms`) put in the body. Never more than a day away.
fn retry_at(answer: &Answer, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let from_body = || -> Option<f64> {
        let body: serde_json::Value = serde_json::from_str(&answer.body).ok()?;
        body.pointer("/parameters/retry_after")
            .and_then(serde_json::Value::as_f64)
            .or_else(|| body.get("retry_after").and_then(serde_json::Value::as_f64))
            .or_else(|| {
                body.get("retry_after_ms")
                    .and_then(serde_json::Value::as_f64)
                    .map(|ms| ms / 1000.0)
            })
    };
    let latest = now + chrono::Duration::days(1);
    let at = match (answer.retry_after, from_body()) {
        (_, Some(secs)) if secs.is_finite() && secs >= 0.0 => {
            let ms = (secs.min(86_400.0) * 1000.0).ceil() as i64;
            now + chrono::Duration::milliseconds(ms)
        }
        (Some(after), _) => after.at(now),
        _ => return None,
    };
    Some(at.min(latest))
}

/// `HTTP 404 (Unknown Webhook)`: the status and the service's own words.
fn describe_answer(kind: ChannelKind, answer: &Answer) -> String {
    let body: Option<serde_json::Value> = serde_json::from_str(&answer.body).ok();
    let said = body
        .as_ref()
        .and_then(|b| {
            ["description", "message", "error", "errcode"]
                .iter()
                .find_map(|k| b.get(k).and_then(serde_json::Value::as_str))
                .map(str::to_string)
        })
        .unwrap_or_else(|| answer.body.clone());
    let said: String = said
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .chars()
        .filter(|c| !c.is_control())
        .take(200)
        .collect();
    let status = match answer.status {
        200..=299 => format!("{kind}: HTTP {}", answer.status),
        s => format!("{kind} answered HTTP {s}"),
    };
    match said.is_empty() {
        true => status,
        false => format!("{status}: {said}"),
    }
}

// ---- sending ---------------------------------------------------------------------------------------

/// What one [`send_due`] round did, by outcome.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PushRound {
    pub sent: usize,
    pub retrying: usize,
    pub failed: usize,
    /// Destinations paused by this round's rejections.
    pub paused: usize,
}

impl std::ops::AddAssign for PushRound {
    fn add_assign(&mut self, other: PushRound) {
        self.sent += other.sent;
        self.retrying += other.retrying;
        self.failed += other.failed;
        self.paused += other.paused;
    }
}

/// Everything sending needs beside the store: the HTTP client and the settings.
#[derive(Clone)]
pub struct Pusher {
    pub fetcher: Fetcher,
    pub settings: ChannelSettings,
    /// Temporary failures are retried until a message is this old (`[mail] max_age`).
    pub max_age: chrono::Duration,
    /// For the mail telling an owner their destination was paused.
    pub message_domain: String,
    /// Counts deliveries by kind and result (`/metrics`).
    pub observe: Arc<dyn Fn(ChannelKind, &'static str) + Send + Sync>,
}

/// The soonest a message is tried again after a temporary failure.
const MIN_RETRY: chrono::Duration = chrono::Duration::seconds(10);

/// When to try again after `attempts` failures: 1, 2, 4 … minutes, at most 1 hour.
fn retry_delay(attempts: u32) -> chrono::Duration {
    chrono::Duration::minutes(1i64 << attempts.min(6)).min(chrono::Duration::hours(1))
}

impl Pusher {
    /// Where a destination's messages may go: admins' as `[poll]` allows, subscribers'
    /// to public addresses only.
    fn origin(channel: &Channel) -> Origin {
        match channel.added_by {
            ChannelOrigin::Subscriber => Origin::Subscriber,
            ChannelOrigin::Admin | ChannelOrigin::Config => Origin::Configured,
        }
    }

    /// The destination's secret: stored, or read from the environment variable a
    /// config.toml destination names.
    fn secret(channel: &Channel) -> Result<Option<String>, String> {
        match (&channel.secret, &channel.secret_env) {
            (Some(secret), _) => Ok(Some(secret.clone())),
            (None, Some(var)) => match std::env::var(var) {
                Ok(value) if !value.trim().is_empty() => Ok(Some(value.trim().to_string())),
                _ => Err(format!(
                    "environment variable {var} (the destination's secret) is not set"
                )),
            },
            (None, None) => Ok(None),
        }
    }

    /// The pacer a message to `channel` waits for, and its interval: one per service
    /// host or per incoming webhook, as each service publishes its limits.
    fn pace(&self, channel: &Channel, secret: Option<&str>) -> Option<(String, Duration)> {
        let target: Target = serde_json::from_str(&channel.target).ok()?;
        let (key, per_second) = match &target {
            Target::Webhook { url } => (url.host_str()?.to_string(), self.settings.webhook_rate),
            // ntfy.sh refills a client's budget at one message per 5 s after a burst of 60.
            Target::Ntfy { url } => (url.host_str()?.to_string(), 1.0),
            // Telegram: about 30 messages a second per bot.
            Target::Telegram { api, .. } => (api.host_str()?.to_string(), 30.0),
            Target::Matrix { homeserver, .. } => (homeserver.host_str()?.to_string(), 2.0),
            // Per incoming webhook: Slack about 1 a second, Discord 5 per 2 s.
            Target::Slack { .. } => (webhook_key(secret?), 1.0),
            Target::Discord { .. } => (webhook_key(secret?), 2.5),
            Target::Mattermost { host } => (host.clone(), 10.0),
        };
        let per_second = self
            .settings
            .rate_limits
            .get(&key)
            .copied()
            .unwrap_or(per_second);
        (per_second > 0.0).then(|| {
            (
                format!("push:{key}"),
                // At most an hour between two: a tiny rate is a typo, not a reason to stop.
                Duration::from_secs_f64((1.0 / per_second).min(3600.0)),
            )
        })
    }
}

/// A pacer name for a secret webhook URL that does not store the URL.
fn webhook_key(url: &str) -> String {
    use sha2::Digest as _;
    let digest = Sha256::digest(url.as_bytes());
    format!(
        "hook-{}",
        digest
            .iter()
            .take(8)
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    )
}

/// Sends every destination message that is due, a batch at a time, each outcome
/// recorded as soon as it is known (see the module doc). Claimed with a lease, renewed
/// right before each send, like mail: a crash mid-send sends the message again after
/// the lease, with the same id (`webhook-id`, Matrix transaction id).
pub async fn send_due(
    store: &Store,
    pusher: &Pusher,
    now: DateTime<Utc>,
    draining: &CancellationToken,
) -> Result<PushRound> {
    let mut done = PushRound::default();
    let started = std::time::Instant::now();
    let clock = move || now + chrono::Duration::from_std(started.elapsed()).unwrap_or_default();
    let lease = pusher.settings.timeout + CLAIM_MARGIN;
    while !draining.is_cancelled() {
        let rows = store
            .claim_push(clock(), lease, pusher.settings.concurrency * 4)
            .await?;
        if rows.is_empty() {
            return Ok(done);
        }
        let mut sends = futures_util::stream::iter(rows)
            .map(|row| async move {
                let secret = Pusher::secret(&row.channel);
                if let Some((pacer, interval)) = pusher.pace(
                    &row.channel,
                    secret.as_ref().ok().and_then(|s| s.as_deref()),
                ) {
                    let slot = store.reserve_slot(&pacer, store.now(), interval).await?;
                    if let Ok(wait) = (slot - store.now()).to_std() {
                        tokio::time::sleep(wait).await;
                    }
                }
                let token = row.outbox.claim.as_deref().unwrap_or_default();
                if !store
                    .renew_push_claim(row.outbox.id, token, clock(), lease)
                    .await?
                {
                    info!(
                        outbox = row.outbox.id.0,
                        "not sent: the claim was lost while waiting, or the destination was paused"
                    );
                    return anyhow::Ok(None);
                }
                let outcome = send_one(pusher, &row, secret, clock()).await;
                Ok(Some((row, outcome)))
            })
            .buffer_unordered(pusher.settings.concurrency);
        // As for mail: one failing ends the round once the others in flight are done.
        let mut failed = None;
        while let Some(sent) = sends.next().await {
            let recorded = match sent {
                Ok(Some((row, outcome))) => {
                    record(store, pusher, clock(), row, outcome, &mut done).await
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

async fn send_one(
    pusher: &Pusher,
    row: &PushMessage,
    secret: Result<Option<String>, String>,
    now: DateTime<Utc>,
) -> Verdict {
    let secret = match secret {
        Ok(secret) => secret,
        Err(why) => return Verdict::Retry { at: None, why },
    };
    // The receiver checks `webhook-timestamp` against its own clock: the wall clock's
    // time of sending, not the round's.
    let request = match request(
        &row.channel,
        secret.as_deref(),
        &row.outbox.body_text,
        &row.outbox.message_id,
        Utc::now(),
    ) {
        Ok(request) => request,
        Err(e) => {
            return Verdict::Rejected {
                why: format!("{e:#}"),
                gone: false,
            };
        }
    };
    let outcome = pusher
        .fetcher
        .deliver(
            &request,
            Pusher::origin(&row.channel),
            pusher.settings.timeout,
        )
        .await;
    judge(row.channel.kind, &outcome, now)
}

/// Logs and stores what happened to one message.
async fn record(
    store: &Store,
    pusher: &Pusher,
    now: DateTime<Utc>,
    row: PushMessage,
    verdict: Verdict,
    done: &mut PushRound,
) -> Result<()> {
    let PushMessage {
        outbox,
        channel,
        kind,
        ..
    } = row;
    let (id, claim) = (outbox.id, outbox.claim.as_deref());
    let young = now - outbox.created_at < pusher.max_age;
    let fields = (outbox.id.0, channel.id.0, channel.kind.as_str());
    let result: &'static str;
    let recorded = match verdict {
        Verdict::Sent => {
            info!(
                outbox = fields.0,
                channel = fields.1,
                kind = fields.2,
                "delivered"
            );
            done.sent += 1;
            result = "sent";
            store.mark_sent(id, claim, now).await
        }
        Verdict::Retry { at, why } if young => {
            warn!(outbox = fields.0, channel = fields.1, kind = fields.2, error = %why, "delivery deferred; will retry");
            done.retrying += 1;
            result = "retry";
            // Never sooner than a floor, whatever the service says ("Retry-After: 0"):
            // the round ends, and a receiver cannot make us post as fast as it answers.
            let retry_at = at
                .unwrap_or_else(|| now + retry_delay(outbox.attempts))
                .max(now + MIN_RETRY);
            store.mark_retry(id, claim, &why, retry_at).await
        }
        Verdict::Retry { why, .. } => {
            let attempts = crate::output::count(outbox.attempts as usize + 1, "attempt");
            let why = format!("gave up after {attempts}: {why}");
            warn!(outbox = fields.0, channel = fields.1, kind = fields.2, error = %why, "delivery failed");
            done.failed += 1;
            result = "failed";
            store.mark_failed(id, claim, &why).await
        }
        Verdict::Rejected { why, gone } => {
            warn!(outbox = fields.0, channel = fields.1, kind = fields.2, error = %why, "delivery rejected");
            done.failed += 1;
            result = "rejected";
            // A notice (a verification) failing says nothing of a destination in use.
            let pause_after = match kind {
                OutboxKind::Notice => u32::MAX,
                _ => pusher.settings.pause_after,
            };
            match store
                .mark_push_rejected(
                    id,
                    claim,
                    &why,
                    pause_after,
                    gone && kind != OutboxKind::Notice,
                )
                .await
            {
                Ok(Some(paused)) => {
                    done.paused += 1;
                    warn!(channel = paused.id.0, subscriber = %paused.email, "destination paused after repeated rejections");
                    tell_owner(store, pusher, &paused, now).await?;
                    Ok(true)
                }
                Ok(None) => Ok(true),
                Err(e) => Err(e),
            }
        }
    };
    (pusher.observe)(channel.kind, result);
    crate::mail::outcome_written(id, recorded)
}

/// Mails a destination's owner that it was paused, and why.
async fn tell_owner(
    store: &Store,
    pusher: &Pusher,
    channel: &Channel,
    now: DateTime<Utc>,
) -> Result<()> {
    let target = serde_json::from_str::<Target>(&channel.target)
        .map(|t| t.describe())
        .unwrap_or_default();
    let why = channel
        .paused_reason
        .as_deref()
        .unwrap_or("repeated failures");
    let subject = format!(
        "Tidings: your {} destination \"{}\" is paused",
        channel.kind, channel.name
    );
    let text = format!(
        "Tidings could not deliver to your {kind} destination \"{name}\" ({target}):\n\n  {why}\n\n\
         Nothing more is sent there until you resume it on your Tidings page. Until then,\n\
         alerts for searches that go nowhere else come to this address, and the ones\n\
         already waiting for \"{name}\" are kept and sent when you resume it.\n",
        kind = channel.kind,
        name = channel.name,
    );
    let html = format!(
        "<p>Tidings could not deliver to your {kind} destination <b>{name}</b> ({target}):</p>\
         <blockquote>{why}</blockquote><p>Nothing more is sent there until you resume it on \
         your Tidings page. Until then, alerts for searches that go nowhere else come to this \
         address, and the ones already waiting are kept and sent when you resume it.</p>",
        kind = channel.kind,
        name = html_escape(&channel.name),
        target = html_escape(&target),
        why = html_escape(why),
    );
    store
        .queue_message(
            &channel.email,
            &subject,
            &text,
            &html,
            &pusher.message_domain,
            now,
        )
        .await?;
    Ok(())
}

fn html_escape(s: &str) -> String {
    Markup::Html.escape(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::digest::{EventData, EventSearch};
    use crate::fetch::RetryAfter;

    fn item(title: &str, link: &str) -> EventItem {
        EventItem {
            title: title.into(),
            link: Some(link.into()),
            source: "USCIS".into(),
            date: "2026-12-01T15:00:00Z".parse().unwrap(),
            snippet: "New asylum rule published.".into(),
            matched: vec!["asylum".into()],
            updated: false,
            from_article: false,
            also_in: Vec::new(),
            also_more: 0,
            more_coverage: false,
            lang: None,
        }
    }

    fn event(items: Vec<EventItem>) -> Event {
        Event {
            kind: "tidings.digest".into(),
            timestamp: "2026-12-01T16:00:00Z".parse().unwrap(),
            data: EventData {
                subscriber: "a@x.example".into(),
                destination: "phone".into(),
                title: format!("Tidings: {} new — asylum ({})", items.len(), items.len()),
                timezone: "America/New_York".into(),
                searches: vec![EventSearch {
                    query: "asylum".into(),
                    feed_url: Some("https://t.example/feed/abc".into()),
                    items,
                }],
                more_follow: false,
                text: None,
                code: None,
            },
        }
    }

    /// The Standard Webhooks test vector (from the spec's reference libraries).
    #[test]
    fn signatures_match_the_standard_webhooks_reference() {
        let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let id = "msg_p5jXN8AQM9LWM0D4loKWxJek";
        let body = br#"{"test": 2432232314}"#;
        assert_eq!(
            sign(secret, id, 1614265330, body).unwrap(),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }

    #[test]
    fn ntfy_is_published_to_the_servers_root_under_any_prefix() {
        let channel = |url: &str| Channel {
            id: crate::store::ChannelId(1),
            subscriber_id: crate::store::SubscriberId(1),
            email: "a@x.example".into(),
            name: "n".into(),
            kind: ChannelKind::Ntfy,
            target: serde_json::to_string(&Target::Ntfy {
                url: url.parse().unwrap(),
            })
            .unwrap(),
            secret: None,
            secret_env: None,
            added_by: ChannelOrigin::Admin,
            state: crate::store::ChannelState::Active,
            paused_reason: None,
            every_search: true,
            searches: Vec::new(),
            failures: 0,
            last_error: None,
            created_at: Utc::now(),
            confirmed_at: None,
        };
        let body = serde_json::to_string(&event(vec![item("A", "https://n.example/1")])).unwrap();
        for (topic_url, root) in [
            ("https://ntfy.sh/alerts", "https://ntfy.sh/"),
            (
                "https://example.org/ntfy/alerts",
                "https://example.org/ntfy/",
            ),
            (
                "https://example.org/ntfy/alerts/?x=1",
                "https://example.org/ntfy/",
            ),
        ] {
            let sent = request(&channel(topic_url), None, &body, "evt_1", Utc::now()).unwrap();
            assert_eq!(sent.url.as_str(), root, "{topic_url}");
            let json: serde_json::Value = serde_json::from_slice(&sent.body).unwrap();
            assert_eq!(json["topic"], "alerts", "{topic_url}");
        }
    }

    #[test]
    fn codes_compare_whatever_the_spacing() {
        let code = confirm_code().unwrap();
        assert_eq!(code.len(), 9);
        assert!(same_code(&code, &code.replace(' ', "")));
        assert!(same_code("1234 5678", "1234-5678"));
        assert!(!same_code("1234 5678", "1234 5679"));
        assert!(!same_code("1234 5678", "1234 567"));
        assert!(!same_code("1234 5678", ""));
    }

    #[test]
    fn long_digests_are_cut_at_an_item_with_a_link_to_the_rest() {
        let items: Vec<EventItem> = (0..60)
            .map(|i| {
                item(
                    &format!("Asylum story number {i} with a long title"),
                    &format!("https://n.example/{i}"),
                )
            })
            .collect();
        let event = event(items);
        for (markup, measure, limit) in [
            (Markup::TelegramHtml, Measure::Utf16, TELEGRAM_LIMIT),
            (Markup::Markdown, Measure::Utf16, DISCORD_LIMIT),
            (Markup::Slack, Measure::Chars, SLACK_LIMIT),
            (Markup::Plain, Measure::Bytes, NTFY_LIMIT),
        ] {
            let text = compose(&event, markup, measure, limit);
            assert!(
                measure.len(&text) <= limit,
                "{markup:?}: {}",
                measure.len(&text)
            );
            let shown = text.matches("• ").count();
            assert!(shown > 0 && shown < 60, "{markup:?}: {shown}");
            assert!(
                text.contains(&format!("…and {} more", 60 - shown)),
                "{markup:?}: {text}"
            );
            assert!(text.contains("https://t.example/feed/abc"), "{markup:?}");
        }
        let short = compose(
            &self::event(vec![item("One", "https://n.example/1")]),
            Markup::Markdown,
            Measure::Utf16,
            DISCORD_LIMIT,
        );
        assert!(!short.contains("more"), "{short}");
    }

    #[test]
    fn feed_text_cannot_inject_markup_or_mentions() {
        let hostile = item(
            "<b>x</b> @everyone *bold* [a](https://evil.example) <!channel>",
            "https://n.example/1?a=1&b=<2>",
        );
        let event = event(vec![hostile]);
        let telegram = compose(&event, Markup::TelegramHtml, Measure::Utf16, TELEGRAM_LIMIT);
        assert!(telegram.contains("&lt;b&gt;x&lt;/b&gt;"), "{telegram}");
        assert!(
            telegram.contains("href=\"https://n.example/1?a=1&amp;b=&lt;2&gt;\""),
            "{telegram}"
        );
        let slack = compose(&event, Markup::Slack, Measure::Chars, SLACK_LIMIT);
        assert!(!slack.contains("<!channel>"), "{slack}");
        assert!(slack.contains("&lt;!channel&gt;"), "{slack}");
        let discord = compose(&event, Markup::Markdown, Measure::Utf16, DISCORD_LIMIT);
        assert!(discord.contains("\\*bold\\*"), "{discord}");
        assert!(
            discord.contains("\\[a\\]\\(https://evil.example\\)"),
            "{discord}"
        );
        assert!(!discord.contains("@everyone"), "{discord}");
    }

    #[test]
    fn answers_are_judged_as_each_service_means_them() {
        let now: DateTime<Utc> = "2026-12-01T16:00:00Z".parse().unwrap();
        let answer = |status, body: &str, after| {
            Ok(Answer {
                status,
                retry_after: after,
                body: body.into(),
            })
        };
        let cases: Vec<(&str, ChannelKind, Result<Answer, FetchError>, Verdict)> = vec![
            (
                "2xx",
                ChannelKind::Discord,
                answer(204, "", None),
                Verdict::Sent,
            ),
            (
                "telegram 200 but not ok",
                ChannelKind::Telegram,
                answer(
                    200,
                    r#"{"ok":false,"description":"Bad Request: chat not found"}"#,
                    None,
                ),
                Verdict::Rejected {
                    why: "telegram: HTTP 200: Bad Request: chat not found".into(),
                    gone: false,
                },
            ),
            (
                "telegram 429 body",
                ChannelKind::Telegram,
                answer(
                    429,
                    r#"{"ok":false,"error_code":429,"description":"Too Many Requests: retry after 7","parameters":{"retry_after":7}}"#,
                    None,
                ),
                Verdict::Retry {
                    at: Some(now + chrono::Duration::seconds(7)),
                    why: "telegram answered HTTP 429: Too Many Requests: retry after 7".into(),
                },
            ),
            (
                "discord 429 float",
                ChannelKind::Discord,
                answer(
                    429,
                    r#"{"message":"You are being rate limited.","retry_after":1.5,"global":false}"#,
                    Some(RetryAfter::Seconds(2)),
                ),
                Verdict::Retry {
                    at: Some(now + chrono::Duration::milliseconds(1500)),
                    why: "discord answered HTTP 429: You are being rate limited.".into(),
                },
            ),
            (
                "matrix 429 ms",
                ChannelKind::Matrix,
                answer(
                    429,
                    r#"{"errcode":"M_LIMIT_EXCEEDED","error":"Too Many Requests","retry_after_ms":2000}"#,
                    None,
                ),
                Verdict::Retry {
                    at: Some(now + chrono::Duration::seconds(2)),
                    why: "matrix answered HTTP 429: Too Many Requests".into(),
                },
            ),
            (
                "slack 429 header",
                ChannelKind::Slack,
                answer(429, "rate_limited", Some(RetryAfter::Seconds(30))),
                Verdict::Retry {
                    at: Some(now + chrono::Duration::seconds(30)),
                    why: "slack answered HTTP 429: rate_limited".into(),
                },
            ),
            (
                "huge retry capped",
                ChannelKind::Webhook,
                answer(429, "", Some(RetryAfter::Seconds(u64::MAX))),
                Verdict::Retry {
                    at: Some(now + chrono::Duration::days(1)),
                    why: "webhook answered HTTP 429".into(),
                },
            ),
            (
                "500",
                ChannelKind::Webhook,
                answer(500, "{\"error\":\"boom\"}", None),
                Verdict::Retry {
                    at: None,
                    why: "webhook answered HTTP 500: boom".into(),
                },
            ),
            (
                "410",
                ChannelKind::Slack,
                answer(410, "channel_is_archived", None),
                Verdict::Rejected {
                    why: "slack answered HTTP 410: channel_is_archived".into(),
                    gone: true,
                },
            ),
            (
                "404",
                ChannelKind::Discord,
                answer(404, r#"{"code":10015,"message":"Unknown Webhook"}"#, None),
                Verdict::Rejected {
                    why: "discord answered HTTP 404: Unknown Webhook".into(),
                    gone: false,
                },
            ),
            (
                "timeout",
                ChannelKind::Ntfy,
                Err(FetchError::Timeout),
                Verdict::Retry {
                    at: None,
                    why: "timed out".into(),
                },
            ),
            (
                "refused",
                ChannelKind::Webhook,
                Err(FetchError::Refused("10.0.0.1 is a private address".into())),
                Verdict::Rejected {
                    why: "refused by the fetch policy: 10.0.0.1 is a private address".into(),
                    gone: false,
                },
            ),
        ];
        for (case, kind, outcome, expected) in cases {
            assert_eq!(judge(kind, &outcome, now), expected, "{case}");
        }
    }

    #[test]
    fn specs_are_checked_before_they_are_stored() {
        let spec = |kind: &str, url: Option<&str>| Spec {
            kind: kind.into(),
            url: url.map(Into::into),
            ..Spec::default()
        };
        assert!(
            spec("webhook", Some("https://hooks.example/in"))
                .check(true)
                .is_ok()
        );
        assert!(
            spec("webhook", Some("http://hooks.example/in"))
                .check(true)
                .unwrap_err()
                .contains("only https")
        );
        assert!(
            spec("webhook", Some("https://u:p@hooks.example/in"))
                .check(true)
                .is_err()
        );
        assert!(
            spec("webhook", None)
                .check(true)
                .unwrap_err()
                .contains("needs a URL")
        );
        assert!(
            spec("pager", None)
                .check(true)
                .unwrap_err()
                .contains("unknown kind")
        );
        assert!(
            spec("ntfy", Some("https://ntfy.sh/"))
                .check(true)
                .unwrap_err()
                .contains("no topic")
        );
        let slack = spec("slack", Some("https://hooks.slack.com/services/T/B/X"))
            .check(true)
            .unwrap();
        assert_eq!(
            slack.secret.as_deref(),
            Some("https://hooks.slack.com/services/T/B/X")
        );
        assert_eq!(
            slack.target.describe(),
            "incoming webhook on hooks.slack.com"
        );
        let telegram = Spec {
            kind: "telegram".into(),
            chat_id: Some("-100123".into()),
            token: Some("123:abc".into()),
            ..Spec::default()
        };
        assert!(telegram.check(true).is_ok());
        let bad_chat = Spec {
            chat_id: Some("12 34".into()),
            ..telegram.clone()
        };
        assert!(bad_chat.check(true).unwrap_err().contains("chat id"));
        let matrix = Spec {
            kind: "matrix".into(),
            homeserver: Some("https://m.example".into()),
            room: Some("#alias:m.example".into()),
            token: Some("t".into()),
            ..Spec::default()
        };
        assert!(matrix.check(true).unwrap_err().contains("room id"));
    }
}
