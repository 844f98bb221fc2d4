//! `config.toml` → a typed, validated [`Config`].
//!
//! Loading happens in two phases: serde reads the file into raw structs (unknown keys and
//! values of the wrong type are problems there: each is recorded and left out, so one hides
//! no other), then [`validate`] turns raw strings into `Url`, `Duration`, `Tz` and friends,
//! collecting every problem it finds. Every error names the key and its line and column,
//! and they come in the file's order, so an admin can fix the whole file in one pass.

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::NaiveTime;
use chrono_tz::Tz;
use serde::Deserialize;
use toml::Spanned;
use toml::de::{DeArray, DeTable, DeValue};
use url::Url;

use crate::matcher::{KnownScopes, Query, Scope};

/// The configuration shipped with Tidings; `tidings check-config --example` prints it.
pub const EXAMPLE: &str = include_str!("../config.toml");

/// The curated immigration vocabulary across languages, reviewed for false friends:
/// the sets searches crossing languages use, with those of `[languages] synonyms`.
pub const LANGUAGE_SETS: &str = include_str!("../languages/synonyms.toml");

/// Links in mail point here until `[web].base_url` says otherwise.
pub const DEFAULT_BASE_URL: &str = "http://localhost:8080/";

/// How long items and sent mail are kept unless `retention` says otherwise.
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(90 * 24 * 3600);

/// Shorter than a day would prune items while daily digests still need them.
const MIN_RETENTION: Duration = Duration::from_secs(24 * 3600);

/// Name of the environment variable that holds the SMTP password.
pub const SMTP_PASSWORD_ENV: &str = "TIDINGS_SMTP_PASSWORD";
/// Overrides `[web] base_url` (see [`Config::override_from`]).
pub const BASE_URL_ENV: &str = "TIDINGS_BASE_URL";

/// Where the PostgreSQL password comes from: never the config file.
pub const DATABASE_PASSWORD_ENV: &str = "TIDINGS_DATABASE_PASSWORD";

/// Where the data lives (`database` in the config).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Database {
    /// A SQLite file, the embedded default (a relative path is relative to the config).
    Sqlite(PathBuf),
    /// A PostgreSQL database that several instances may share:
    /// `postgres://user@host:port/name`, without a password (it comes from
    /// [`DATABASE_PASSWORD_ENV`]).
    Postgres(String),
}

impl Database {
    /// The SQLite file, if this is one.
    pub fn sqlite_path(&self) -> Option<&Path> {
        match self {
            Database::Sqlite(path) => Some(path),
            Database::Postgres(_) => None,
        }
    }
}

impl std::fmt::Display for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Database::Sqlite(path) => write!(f, "{}", path.display()),
            Database::Postgres(url) => f.write_str(url),
        }
    }
}

/// Reads `database`: a `postgres://` (or `postgresql://`) URL, or a SQLite file path
/// relative to `base`. A URL carrying a password is refused: config files are shared,
/// copied and checked in, so the password comes from the environment.
fn database(text: &str, base: &Path) -> Result<Database, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err("`database` must not be empty".into());
    }
    if !is_postgres_url(text) {
        if text.contains("://") {
            return Err(format!(
                "`database` must be a SQLite file path or a postgres:// URL, found {text:?}"
            ));
        }
        return Ok(Database::Sqlite(base.join(text)));
    }
    postgres_url(text, "`database`").map(Database::Postgres)
}

/// Whether `text` starts with `postgres://` or `postgresql://` (any case).
fn is_postgres_url(text: &str) -> bool {
    ["postgres://", "postgresql://"].iter().any(|scheme| {
        text.get(..scheme.len())
            .is_some_and(|s| s.eq_ignore_ascii_case(scheme))
    })
}

/// Checks a `postgres://` (or `postgresql://`) URL as `database` takes one, where `what`
/// names it in messages (`database`, `--to`): a valid URL with a host and no password
/// (config files and command lines are shared, copied and logged; the password comes
/// from [`DATABASE_PASSWORD_ENV`]). Messages never repeat the password.
pub fn postgres_url(text: &str, what: &str) -> Result<String, String> {
    let text = text.trim();
    if !is_postgres_url(text) {
        return Err(format!(
            "{what} must be a postgres:// URL (postgres://user@host:port/database)"
        ));
    }
    // The client takes the scheme in lower case only.
    let (scheme, rest) = text.split_once("://").unwrap_or_default();
    let text = format!("{}://{rest}", scheme.to_ascii_lowercase());
    // The client knows no fragment: in `postgres://x#:pw@host/db` it reads a password
    // where a URL parser sees none.
    if text.contains('#') {
        return Err(format!(
            "{what}: a postgres:// URL has no `#` (percent-encode it as %23 in a name)"
        ));
    }
    // Nor does it know where the host ends: all up to the first `@`, wherever it is, is
    // the user, so an `@` in the path or query would move the host.
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    if rest[authority_end..].contains('@') || rest[..authority_end].matches('@').count() > 1 {
        return Err(format!(
            "{what}: write an `@` after the host as %40 (the PostgreSQL client would take \
             what comes before it for the user, and connect to another host)"
        ));
    }
    let url = Url::parse(&text).map_err(|e| format!("{what}: not a valid URL: {e}"))?;
    // Whatever the URL parser thinks, the client is the one that connects: what it reads
    // decides (its errors name the option at fault, never a value).
    let client: postgres::Config = text
        .parse()
        .map_err(|e| format!("{what}: not a URL the PostgreSQL client reads: {e}"))?;
    if url.password().is_some() || client.get_password().is_some() {
        return Err(format!(
            "{what} must not hold the password: set it in the environment variable {DATABASE_PASSWORD_ENV} and write the URL without it"
        ));
    }
    if url
        .query_pairs()
        .any(|(key, _)| key.eq_ignore_ascii_case("password"))
    {
        return Err(format!(
            "{what} must not hold the password (`password=` in the URL): set it in {DATABASE_PASSWORD_ENV}"
        ));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(format!(
            "{what}: a postgres:// URL needs a host (postgres://user@host/name)"
        ));
    }
    Ok(text)
}

#[derive(Debug, Clone)]
pub struct Config {
    /// The file this was loaded from; relative paths inside it resolve against its folder.
    pub path: PathBuf,
    /// When that file was last modified (`None` when parsed from text): instances sharing
    /// a database keep the feed list of the config written last.
    pub written_at: Option<std::time::SystemTime>,
    pub database: Database,
    /// Items first seen longer ago than this are pruned (unless a digest still needs
    /// them), and so is sent or failed mail older than this.
    pub retention: Duration,
    pub poll: PollSettings,
    pub digest: DigestSettings,
    pub mail: MailSettings,
    pub web: WebSettings,
    pub service: ServiceSettings,
    /// Destinations beside email: how their messages are sent.
    pub channels: ChannelSettings,
    /// Destinations the admin keeps in this file (`[[destinations]]`).
    pub destinations: Vec<DestinationConfig>,
    /// How items of different feeds are grouped into stories: `[stories]`.
    pub stories: crate::story::StoryRules,
    /// Detecting items' languages and searching across them: `[languages]`.
    pub languages: LanguageSettings,
    pub feeds: Vec<FeedConfig>,
    /// Synonym groups: a query term equal to any member matches every member.
    pub synonyms: Vec<Vec<String>>,
    /// Feed id → position in `feeds`.
    feed_index: HashMap<String, usize>,
    /// The feed ids and tags a search's `feed:` and `tag:` are checked against.
    scopes: KnownScopes,
    /// The feed ids, and the tags (each once), sorted: the names listed beside unknown
    /// ones.
    sorted_ids: Vec<String>,
    sorted_tags: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct PollSettings {
    /// Interval for feeds that do not set their own.
    pub interval: Duration,
    /// On a feed's first poll, only items published this recently can match.
    pub initial_backlog: Duration,
    pub connect_timeout: Duration,
    pub timeout: Duration,
    /// Largest response body accepted, counted after decompression.
    pub max_body_bytes: usize,
    /// Feeds polled at once, in all.
    pub concurrency: usize,
    /// Requests to one host at once.
    pub per_host: usize,
    /// Longest wait between polls of a failing feed.
    pub max_backoff: Duration,
    /// A full, unconditional fetch at least this often, for servers that send stale 304s.
    pub full_fetch_every: Duration,
    /// How long a feed an instance claimed stays its own (renewed right before its
    /// fetch): a crashed instance's feeds are taken over by the others after this.
    pub claim_lease: Duration,
    pub user_agent: String,
    /// Fetches may go to loopback, private and link-local addresses even when the feed's
    /// URL names a host rather than such an address (see `fetch::AddressPolicy`).
    pub allow_private_networks: bool,
    /// Cloud metadata addresses (169.254.169.254…) may be fetched, where private
    /// networks may be.
    pub allow_metadata: bool,
    /// Article fetches (see [`FeedOptions::full_text`]) at once, in all: their own budget,
    /// beside `concurrency`, so they never hold up feed polls.
    pub full_text_concurrency: usize,
}

/// Defaults for subscribers who do not choose their own.
#[derive(Debug, Clone, PartialEq)]
pub struct DigestSettings {
    /// Local time at which daily (and weekly) digests go out.
    pub daily_at: NaiveTime,
    pub timezone: Tz,
}

#[derive(Debug, Clone, PartialEq)]
pub struct MailSettings {
    /// `From:` of every digest, e.g. `Tidings <alerts@example.org>`.
    pub from: String,
    pub transport: MailTransport,
    pub send_timeout: Duration,
    /// Temporary failures are retried until a message is this old.
    pub max_age: Duration,
    /// Messages per minute at most; `None` for no limit.
    pub rate_limit: Option<u32>,
    /// Messages sent at once (over pooled SMTP connections).
    pub concurrency: usize,
    /// A subscriber whose mail is rejected permanently this many times in a row is
    /// paused; `None` never pauses.
    pub pause_after_bounces: Option<u32>,
}

/// Where subscribers reach Tidings on the web (unsubscribe links), and the secret that
/// signs their links.
#[derive(Debug, Clone, PartialEq)]
pub struct WebSettings {
    /// Public base URL, e.g. `https://alerts.example.org/`; links in mail start with it.
    pub base_url: Url,
    /// Where the subscriber pages listen (unsubscribe, manage); `None` = off. Put a TLS
    /// proxy serving `base_url` in front of it.
    pub listen: Option<SocketAddr>,
    /// File holding the signing key, created (mode 0600) on first run. The
    /// `TIDINGS_SECRET` environment variable, if set, is used instead.
    pub secret_file: PathBuf,
    /// Deadlines and connection caps of the subscriber pages' listener (read at start).
    pub limits: ListenLimits,
}

/// What one HTTP listener allows a client, so slow or many connections cannot hold it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListenLimits {
    /// A request's headers must arrive within this long of the connection opening or
    /// going idle; otherwise it is closed.
    pub header_timeout: Duration,
    /// A request (body and answer) gets this long; then 408.
    pub request_timeout: Duration,
    /// Connections open at once; more wait in the kernel's backlog.
    pub max_connections: usize,
    /// Connections one client (IPv4 address, IPv6 /64) may hold; more are closed at once.
    pub max_connections_per_client: usize,
}

impl ListenLimits {
    /// The subscriber pages' limits unless `[web]` says otherwise.
    pub const WEB: ListenLimits = ListenLimits {
        header_timeout: Duration::from_secs(10),
        request_timeout: Duration::from_secs(30),
        max_connections: 512,
        max_connections_per_client: 64,
    };
}

/// How messages to destinations beside email (webhooks, chats) are sent: `[channels]`.
#[derive(Debug, Clone, PartialEq)]
pub struct ChannelSettings {
    /// One request (connect, send, answer) gets this long.
    pub timeout: Duration,
    /// Requests at once, in all.
    pub concurrency: usize,
    /// A destination rejected this many times in a row is paused and its owner told.
    pub pause_after: u32,
    /// Destinations subscribers add must use https:// URLs.
    pub require_https: bool,
    /// Webhook requests per second to one host; 0 = no limit.
    pub webhook_rate: f64,
    /// Requests per second to a host (or an incoming webhook's pacer), overriding the
    /// services' published limits Tidings keeps to by default.
    pub rate_limits: HashMap<String, f64>,
}

impl Default for ChannelSettings {
    fn default() -> ChannelSettings {
        ChannelSettings {
            timeout: Duration::from_secs(15),
            concurrency: 8,
            pause_after: 3,
            require_https: true,
            webhook_rate: 0.0,
            rate_limits: HashMap::new(),
        }
    }
}

/// A `[[destinations]]` table: a subscriber's destination kept in config.toml, its secret
/// in the environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DestinationConfig {
    /// The subscriber's address (they must exist: `tidings subscriber add`).
    pub subscriber: String,
    pub name: String,
    pub kind: String,
    /// A webhook or ntfy topic URL (not secret).
    pub url: Option<String>,
    /// The environment variable with the secret: a Slack/Discord/Mattermost webhook URL,
    /// a Telegram or Matrix or ntfy token, or a webhook's signing secret.
    pub secret_env: Option<String>,
    pub chat_id: Option<String>,
    pub homeserver: Option<String>,
    pub room: Option<String>,
    pub api: Option<String>,
    /// The searches (as written) it takes; empty for every search.
    pub searches: Vec<String>,
}

/// How the daemon runs as a service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceSettings {
    /// Where the admin HTTP listener (`/healthz`, `/metrics`) listens; `None` = off.
    pub admin_listen: Option<SocketAddr>,
    /// On SIGTERM/SIGINT, work in progress gets this long to finish.
    pub shutdown_timeout: Duration,
    /// Reload the config when its file changes on disk (SIGHUP always reloads).
    pub watch_config: bool,
}

/// The subscriber pages' address unless `[web].listen` says otherwise.
pub const DEFAULT_WEB_LISTEN: &str = "127.0.0.1:8080";

/// The admin listener's address unless `[service].admin_listen` says otherwise.
pub const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:9108";

#[derive(Debug, Clone, PartialEq)]
pub enum MailTransport {
    /// Write each message as an `.eml` file into this folder.
    File {
        folder: PathBuf,
    },
    Smtp(SmtpSettings),
}

#[derive(Debug, Clone, PartialEq)]
pub struct SmtpSettings {
    pub host: String,
    pub port: u16,
    pub tls: TlsMode,
    pub username: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TlsMode {
    /// Implicit TLS from the first byte (usually port 465).
    Tls,
    /// Plain connection upgraded with STARTTLS, which is required (usually port 587).
    Starttls,
    /// No encryption at all: only for a relay on the same host or in tests.
    None,
}

#[derive(Debug, Clone, PartialEq)]
pub struct FeedConfig {
    pub id: String,
    pub name: String,
    pub url: Url,
    pub tags: Vec<String>,
    pub interval: Duration,
    /// How the feed's items are read, beyond its URL.
    pub options: FeedOptions,
}

/// How a feed's items are read, beyond fetching its URL: stored with the feed list in the
/// database (as JSON), so every instance reads a feed the same way.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, Deserialize)]
#[serde(default)]
pub struct FeedOptions {
    /// Each new item's link is fetched and its article (see [`crate::article`]) is matched
    /// with the feed's text (`full_text`, default `[poll] full_text`).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub full_text: bool,
    /// The article is what this CSS selector selects, not Readability's guess.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content_selector: Option<String>,
    /// What the URL serves: a feed, or a page without one (`kind`).
    #[serde(skip_serializing_if = "Source::is_feed")]
    pub source: Source,
}

/// What a feed's URL serves (`kind` in config.toml).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Source {
    /// RSS, Atom or JSON Feed (`kind = "feed"`, the default).
    #[default]
    Feed,
    /// A listing page: each element `item_selector` selects is an item (`kind = "html"`).
    Html(crate::page::ListingRules),
    /// A watched page: a change of what `selector` selects is an item (`kind = "watch"`).
    Watch { selector: String },
}

impl Source {
    pub fn is_feed(&self) -> bool {
        *self == Source::Feed
    }
}

impl FeedOptions {
    /// As stored in the database.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|_| "{}".to_string())
    }

    /// Read back from the database; what an older or newer version wrote and this one
    /// cannot read is the defaults (a plain feed), never an error that stops polling.
    pub fn from_json(json: &str) -> FeedOptions {
        serde_json::from_str(json).unwrap_or_default()
    }
}

/// Everything wrong with a config file, each with its position.
#[derive(Debug)]
pub struct ConfigError {
    pub path: PathBuf,
    pub problems: Vec<Problem>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub line: usize,
    pub column: usize,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(
                f,
                "{}:{}:{}: {}",
                self.path.display(),
                p.line,
                p.column,
                p.message
            )?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

impl Config {
    /// Reads and validates the file at `path`.
    pub fn load(path: &Path) -> anyhow::Result<Config> {
        let path = &std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("reading config {}: {e}", path.display()))?;
        let mut config = Config::parse(&text, path)?;
        config.written_at = std::fs::metadata(path).and_then(|m| m.modified()).ok();
        config.override_from(|name| std::env::var(name).ok())?;
        Ok(config)
    }

    /// What identifies the feed list (ids, URLs, names, tags, intervals, in id order):
    /// two configs with the same list have the same fingerprint, whatever else differs.
    pub fn feed_list_fingerprint(&self) -> String {
        use sha2::{Digest, Sha256};
        let mut feeds: Vec<&FeedConfig> = self.feeds.iter().collect();
        feeds.sort_by(|a, b| a.id.cmp(&b.id));
        let mut hash = Sha256::new();
        for f in feeds {
            for field in [
                f.id.as_str(),
                f.url.as_str(),
                f.name.as_str(),
                &f.tags.join(","),
                &f.interval.as_secs().to_string(),
                &f.options.to_json(),
            ] {
                hash.update(field.as_bytes());
                hash.update([0]);
            }
            hash.update([1]);
        }
        hash.finalize().iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Settings the environment overrides: `TIDINGS_BASE_URL` for `[web] base_url`, the
    /// public address, which a container or a host often learns only where it runs.
    pub fn override_from(&mut self, var: impl Fn(&str) -> Option<String>) -> anyhow::Result<()> {
        // `TIDINGS_BASE_URL=` (an env file's way of leaving it out) keeps the file's.
        if let Some(value) = var(BASE_URL_ENV).filter(|v| !v.trim().is_empty()) {
            self.web.base_url =
                public_base_url(&value).map_err(|e| anyhow::anyhow!("{BASE_URL_ENV}: {e}"))?;
        }
        Ok(())
    }

    /// Parses `text` as if it were the file at `path`. Every problem is reported, in the
    /// file's order: every syntax error; or, when there is none, every unknown key, value
    /// of the wrong type and invalid value.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let error = |mut problems: Vec<Problem>| {
            problems.sort_by_key(|p| (p.line, p.column));
            problems.dedup();
            ConfigError {
                path: path.to_path_buf(),
                problems,
            }
        };
        let lines = Lines::new(text);
        let Read {
            raw,
            mut problems,
            left_out,
        } = read_raw(text, &lines).map_err(error)?;
        match validate(raw, &left_out, &lines, path) {
            Ok(config) if problems.is_empty() => Ok(config),
            Ok(_) => Err(error(problems)),
            Err(e) => {
                problems.extend(e.problems);
                Err(error(problems))
            }
        }
    }

    pub fn feed(&self, id: &str) -> Option<&FeedConfig> {
        self.feed_index.get(id).and_then(|&i| self.feeds.get(i))
    }

    /// The `feed:` and `tag:` of `query` that name no feed or tag of this config
    /// ([`Query::unknown_scopes`]).
    pub fn unknown_scopes(&self, query: &Query) -> Vec<Scope> {
        query.unknown_scopes(&self.scopes)
    }

    /// A new search may name only feeds and tags that exist: `Err` names those `query`
    /// names that do not, and at most ten that do, the closest first.
    pub fn check_scopes(&self, query: &Query) -> Result<(), String> {
        self.check_scopes_listing(query, Listing::Closest)
    }

    /// Parses `texts`, the searches of one form or request, and checks the feeds and tags
    /// they name. Only the first with unknown ones lists the known names closest to them;
    /// the others list the first few, so a request costs one comparison with every known
    /// name, not one per search. Work for a blocking thread: it grows with the feeds.
    pub fn check_searches(&self, texts: &[String]) -> Vec<Result<Query, String>> {
        let mut listing = Listing::Closest;
        texts
            .iter()
            .map(|text| {
                let query = Query::parse(text).map_err(|e| e.to_string())?;
                let checked = self.check_scopes_listing(&query, listing);
                if checked.is_err() {
                    listing = Listing::First;
                }
                checked.map(|()| query)
            })
            .collect()
    }

    /// [`Config::check_scopes`], listing the known names as `listing` says.
    fn check_scopes_listing(&self, query: &Query, listing: Listing) -> Result<(), String> {
        let unknown = self.unknown_scopes(query);
        if unknown.is_empty() {
            return Ok(());
        }
        let mut parts = Vec::new();
        for (kind, known, none, where_all) in [
            (
                "feed",
                &self.sorted_ids,
                "no feeds are configured",
                "`tidings feeds status` lists them",
            ),
            (
                "tag",
                &self.sorted_tags,
                "no feed has tags",
                "see each feed's `tags` in the config",
            ),
        ] {
            let names: Vec<&str> = unknown
                .iter()
                .filter_map(|scope| match scope {
                    Scope::Feed(id) if kind == "feed" => Some(id.as_str()),
                    Scope::Tag(tag) if kind == "tag" => Some(tag.as_str()),
                    _ => None,
                })
                .collect();
            if names.is_empty() {
                continue;
            }
            let plural = if names.len() == 1 { "" } else { "s" };
            let known = if known.is_empty() {
                none.to_string()
            } else {
                let (listed, more) = match listing {
                    Listing::Closest => closest_names(known, &names),
                    Listing::First => closest_names(known, &[]),
                };
                let mut listed = listed.join(", ");
                if more > 0 {
                    listed.push_str(&format!(" and {more} more ({where_all})"));
                }
                format!("{kind}s: {listed}")
            };
            let names: Vec<String> = names.iter().map(|n| format!("{n:?}")).collect();
            parts.push(format!(
                "unknown {kind}{plural} {} ({known})",
                names.join(", ")
            ));
        }
        Err(parts.join("; "))
    }

    /// The settings other than `[[feeds]]` that differ from `old`, named as in the file
    /// The synonyms searches match with: `[synonyms]`, and the sets across languages
    /// for searches that cross them.
    pub fn matcher_synonyms(&self) -> Result<crate::matcher::Synonyms, String> {
        crate::matcher::Synonyms::new(self.synonyms.clone())
            .map_err(|e| format!("[synonyms]: {e}"))?
            .with_crossings(self.languages.crossings.clone())
            .map_err(|e| format!("[languages] synonyms: {e}"))
    }

    /// What tells new items' languages: `[languages] detect`.
    pub fn language_detector(&self) -> crate::language::Detector {
        // Checked when the config was read.
        crate::language::Detector::new(&self.languages.detect).unwrap_or_default()
    }

    /// (`"retention"`, `"poll"`, `"mail"`…), in the file's order.
    pub fn changed_settings(&self, old: &Config) -> Vec<&'static str> {
        [
            ("database", self.database != old.database),
            ("retention", self.retention != old.retention),
            ("poll", self.poll != old.poll),
            ("digest", self.digest != old.digest),
            ("mail", self.mail != old.mail),
            ("web", self.web != old.web),
            ("service", self.service != old.service),
            ("stories", self.stories != old.stories),
            ("languages", self.languages != old.languages),
            ("synonyms", self.synonyms != old.synonyms),
        ]
        .into_iter()
        .filter_map(|(name, changed)| changed.then_some(name))
        .collect()
    }
}

/// Which known feed ids and tags a message about unknown ones lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Listing {
    /// Those closest to the unknown ones: each of a few unknown names is compared with
    /// every known one.
    Closest,
    /// The first in order, compared with nothing: for the searches of a request after
    /// one that listed the closest, so that a request costs one comparison with every
    /// known name, not one per search.
    First,
}

/// Known names a message about unknown ones lists at most: enough to spot the one meant,
/// few enough that a message (on a public page too) stays short however many there are.
const NAMES_LISTED: usize = 10;

/// Unknown names that choose which known ones are listed, and the characters of each
/// compared, so a message costs little however long the query.
const NAMES_COMPARED: usize = 3;
const CHARS_COMPARED: usize = 64;

/// The names of `known` (sorted) to list beside the `unknown` ones, and how many are not
/// listed: all of them when there are at most [`NAMES_LISTED`]; otherwise those closest
/// to an unknown one first (those that contain it or that it contains, then those a few
/// edits away; each nearest first), then the others in order.
fn closest_names<'a>(known: &'a [String], unknown: &[&str]) -> (Vec<&'a str>, usize) {
    if known.len() <= NAMES_LISTED || unknown.is_empty() {
        let listed = known
            .iter()
            .take(NAMES_LISTED)
            .map(String::as_str)
            .collect();
        return (listed, known.len().saturating_sub(NAMES_LISTED));
    }
    let unknown: Vec<(String, usize)> = unknown
        .iter()
        .take(NAMES_COMPARED)
        .map(|name| {
            let name: String = name.chars().take(CHARS_COMPARED).collect();
            let len = name.chars().count();
            (name, len)
        })
        .collect();
    // (not related, edits away (usize::MAX: more than a few), name)
    let closeness = |name: &str| {
        let len = name.chars().count();
        unknown
            .iter()
            .map(|(u, u_len)| {
                if name.contains(u.as_str()) || u.contains(name) {
                    return (false, strsim::levenshtein(u, name));
                }
                // A typo's worth: more is no hint, and not worth the cost of counting.
                let few = (u_len / 3).max(2);
                if len.abs_diff(*u_len) > few {
                    return (true, usize::MAX);
                }
                let edits = strsim::levenshtein(u, name);
                (true, if edits <= few { edits } else { usize::MAX })
            })
            .min()
            .unwrap_or((true, usize::MAX))
    };
    let mut ranked: Vec<((bool, usize), &str)> = known
        .iter()
        .map(|name| (closeness(name), name.as_str()))
        .collect();
    ranked.sort_unstable();
    let listed = ranked[..NAMES_LISTED].iter().map(|&(_, n)| n).collect();
    (listed, known.len() - NAMES_LISTED)
}

// ---- phase one: raw values, exactly as written --------------------------------------------

/// Structural problems reported at most; each costs a read of the whole document.
const MAX_STRUCTURAL_PROBLEMS: usize = 100;

/// What phase one read.
struct Read {
    raw: RawConfig,
    /// The unknown keys and values of the wrong type, each left out of `raw`.
    problems: Vec<Problem>,
    /// The keys left out of tables, which phase two must not call missing as well.
    left_out: Vec<LeftOut>,
}

/// A key left out of a table in phase one: the table's span (as its `Spanned` has it)
/// and the key.
#[derive(Debug, PartialEq)]
struct LeftOut {
    table: Range<usize>,
    key: String,
}

/// Whether `key` was left out of the table at `table` (so it is there, with a problem
/// of its own, and not missing).
fn was_left_out(left_out: &[LeftOut], table: Range<usize>, key: &str) -> bool {
    left_out.iter().any(|l| l.table == table && l.key == key)
}

/// Phase one. A syntax error ends it, with every syntax error the parser finds (nothing
/// after one can be trusted). Otherwise serde reads the document; each unknown key or
/// value of the wrong type it stops at is recorded and left out of the document, which is
/// read again, so no such problem hides another. Returns what was read, or only problems
/// when reading could not go on (or found more than [`MAX_STRUCTURAL_PROBLEMS`]).
fn read_raw(text: &str, lines: &Lines) -> Result<Read, Vec<Problem>> {
    let problem = |e: &toml::de::Error| {
        let span = e.span().unwrap_or(0..0);
        let message = e.message().trim();
        // toml says "duplicate key" and points at it: name it.
        match text.get(span.clone()).map(str::trim) {
            Some(key) if message == "duplicate key" && !key.is_empty() => {
                lines.problem(span, &format!("duplicate key `{key}`"))
            }
            _ => lines.problem(span, message),
        }
    };
    let (mut document, syntax) = DeTable::parse_recoverable(text);
    if !syntax.is_empty() {
        return Err(syntax.iter().map(problem).collect());
    }
    let mut problems = Vec::new();
    let mut left_out = Vec::new();
    loop {
        let e = match RawConfig::deserialize(toml::de::Deserializer::from(document.clone())) {
            Ok(raw) => {
                return Ok(Read {
                    raw,
                    problems,
                    left_out,
                });
            }
            Err(e) => e,
        };
        if problems.len() == MAX_STRUCTURAL_PROBLEMS {
            // There is one more: say so, listed after the last one in the file.
            let last = problems
                .iter()
                .max_by_key(|p| (p.line, p.column))
                .cloned()
                .unwrap_or_else(|| lines.problem(0..0, ""));
            problems.push(Problem {
                message: format!(
                    "stopped after {MAX_STRUCTURAL_PROBLEMS} problems: fix these and check again"
                ),
                ..last
            });
            return Err(problems);
        }
        problems.push(problem(&e));
        if !leave_out(
            document.get_mut(),
            None,
            &e.span().unwrap_or(0..0),
            &mut left_out,
        ) {
            return Err(problems);
        }
    }
}

/// Leaves out of `table` (at `table_span`; `None` for the document) what `span` points
/// at: the innermost table entry whose key or value it is, or array element. A table
/// entry left out is added to `left_out`. Returns whether there was one.
fn leave_out(
    table: &mut DeTable<'_>,
    table_span: Option<Range<usize>>,
    span: &Range<usize>,
    left_out: &mut Vec<LeftOut>,
) -> bool {
    // Children first: an array of tables has the span of its first element's header.
    if table
        .iter_mut()
        .any(|(_, value)| leave_out_inside(value, span, left_out))
    {
        return true;
    }
    let Some(key) = table
        .iter()
        .find(|(key, value)| key.span() == *span || value.span() == *span)
        .map(|(key, _)| key.clone())
    else {
        return false;
    };
    if table.remove(&key).is_none() {
        return false;
    }
    if let Some(table) = table_span {
        left_out.push(LeftOut {
            table,
            key: key.get_ref().to_string(),
        });
    }
    true
}

fn leave_out_inside(
    value: &mut Spanned<DeValue<'_>>,
    span: &Range<usize>,
    left_out: &mut Vec<LeftOut>,
) -> bool {
    let value_span = value.span();
    match value.get_mut() {
        DeValue::Table(table) => leave_out(table, Some(value_span), span, left_out),
        DeValue::Array(items) => {
            if items
                .iter_mut()
                .any(|item| leave_out_inside(item, span, left_out))
            {
                return true;
            }
            let Some(at) = items.iter().position(|item| item.span() == *span) else {
                return false;
            };
            let mut kept: Vec<_> = std::mem::replace(items, DeArray::new())
                .into_iter()
                .collect();
            kept.remove(at);
            *items = kept.into_iter().collect();
            true
        }
        _ => false,
    }
}

/// A table of the file, read as `T`. Only a table: serde would also take an array for a
/// struct, its elements as the fields in order (`web = ["https://x.org/"]` as
/// `base_url`), and its problems would name the struct (`expected struct RawWeb with 7
/// elements`); here anything else is a value of the wrong type, named as the file names it.
#[derive(Default)]
struct Table<T>(T);

/// A struct read from a table of the file.
trait Section {
    /// What the file has there, for "expected …": "a `[web]` table".
    const EXPECTED: &'static str;
}

impl<T> std::ops::Deref for Table<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.0
    }
}

impl<'de, T: Section + Deserialize<'de>> Deserialize<'de> for Table<T> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Only<T>(std::marker::PhantomData<T>);
        impl<'de, T: Section + Deserialize<'de>> serde::de::Visitor<'de> for Only<T> {
            type Value = T;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str(T::EXPECTED)
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
                T::deserialize(serde::de::value::MapAccessDeserializer::new(map))
            }
        }
        deserializer
            .deserialize_map(Only(std::marker::PhantomData))
            .map(Table)
    }
}

macro_rules! sections {
    ($($raw:ty => $expected:literal,)*) => {
        $(impl Section for $raw {
            const EXPECTED: &'static str = $expected;
        })*
    };
}

sections! {
    RawPoll => "a `[poll]` table",
    RawDigest => "a `[digest]` table",
    RawMail => "a `[mail]` table",
    RawSmtp => "a `[mail.smtp]` table",
    RawWeb => "a `[web]` table",
    RawService => "a `[service]` table",
    RawChannels => "a `[channels]` table",
    RawStories => "a `[stories]` table",
    RawLanguages => "a `[languages]` table",
    RawDestination => "a `[[destinations]]` table (with `subscriber`, `name` and `kind`)",
    RawFeed => "a `[[feeds]]` table (with `id` and `url`)",
    RawSynonyms => "a `[synonyms]` table",
}

/// `[[feeds]]`: the array of feed tables. Only an array: a single `[feeds]` table (or
/// `feeds.id = …`) is refused in the file's words, not serde's ("invalid type: map,
/// expected a sequence").
#[derive(Default)]
struct Feeds(Vec<Spanned<Table<RawFeed>>>);

impl std::ops::Deref for Feeds {
    type Target = [Spanned<Table<RawFeed>>];

    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl<'de> Deserialize<'de> for Feeds {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Array;
        impl<'de> serde::de::Visitor<'de> for Array {
            type Value = Feeds;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("`[[feeds]]` tables (one per feed)")
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(self, _: A) -> Result<Feeds, A::Error> {
                Err(serde::de::Error::invalid_type(
                    serde::de::Unexpected::Other("table"),
                    &self,
                ))
            }

            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Feeds, A::Error> {
                let mut feeds = Vec::with_capacity(seq.size_hint().unwrap_or(0));
                while let Some(feed) = seq.next_element()? {
                    feeds.push(feed);
                }
                Ok(Feeds(feeds))
            }
        }
        deserializer.deserialize_seq(Array)
    }
}

/// `[synonyms]`: each term, with the others that mean the same.
type RawSynonyms = std::collections::BTreeMap<Spanned<String>, Vec<Spanned<String>>>;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    database: Option<Spanned<String>>,
    retention: Option<Spanned<String>>,
    #[serde(default)]
    poll: Table<RawPoll>,
    #[serde(default)]
    digest: Table<RawDigest>,
    #[serde(default)]
    mail: Table<RawMail>,
    #[serde(default)]
    web: Table<RawWeb>,
    #[serde(default)]
    service: Table<RawService>,
    #[serde(default)]
    channels: Table<RawChannels>,
    #[serde(default)]
    destinations: Vec<Spanned<Table<RawDestination>>>,
    #[serde(default)]
    stories: Table<RawStories>,
    #[serde(default)]
    languages: Table<RawLanguages>,
    #[serde(default)]
    feeds: Feeds,
    #[serde(default)]
    synonyms: Table<RawSynonyms>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawPoll {
    interval: Option<Spanned<String>>,
    initial_backlog: Option<Spanned<String>>,
    connect_timeout: Option<Spanned<String>>,
    timeout: Option<Spanned<String>>,
    max_body_mib: Option<Spanned<u32>>,
    concurrency: Option<Spanned<u32>>,
    per_host: Option<Spanned<u32>>,
    max_backoff: Option<Spanned<String>>,
    full_fetch_every: Option<Spanned<String>>,
    claim_lease: Option<Spanned<String>>,
    user_agent: Option<String>,
    allow_private_networks: Option<bool>,
    allow_metadata: Option<bool>,
    full_text: Option<bool>,
    full_text_concurrency: Option<Spanned<u32>>,
}

/// `[[destinations]]`: a subscriber's destination the admin keeps in the file. Secrets
/// are named by environment variable (`*_env`), never written here.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawDestination {
    subscriber: Option<Spanned<String>>,
    name: Option<Spanned<String>>,
    kind: Option<Spanned<String>>,
    url: Option<Spanned<String>>,
    url_env: Option<Spanned<String>>,
    secret_env: Option<Spanned<String>>,
    token_env: Option<Spanned<String>>,
    chat_id: Option<Spanned<String>>,
    homeserver: Option<Spanned<String>>,
    room: Option<Spanned<String>>,
    api: Option<Spanned<String>>,
    #[serde(default)]
    searches: Vec<Spanned<String>>,
}

/// `[languages]`: which languages to detect, and more sets across languages.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawLanguages {
    detect: Option<Spanned<Vec<Spanned<String>>>>,
    synonyms: Option<Spanned<String>>,
}

/// A file of sets across languages ([`LANGUAGE_SETS`] is one).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLanguageSets {
    /// Each set: `concept`, `review` and language code → terms, read key by key so
    /// that errors can say where.
    #[serde(default)]
    set: Vec<std::collections::BTreeMap<Spanned<String>, Spanned<toml::Value>>>,
}

/// Reads a file of sets across languages (the shape of `languages/synonyms.toml`):
/// each set as (language code, term) pairs. Errors name the line and column, or the
/// set's concept.
pub fn language_sets(text: &str) -> Result<Vec<Vec<(String, String)>>, String> {
    let raw: RawLanguageSets = toml::from_str(text).map_err(|e| e.to_string())?;
    let at = |span: Range<usize>| {
        let before = text.get(..span.start).unwrap_or_default();
        let line = before.matches('\n').count() + 1;
        let column = before
            .rsplit('\n')
            .next()
            .unwrap_or_default()
            .chars()
            .count()
            + 1;
        format!("line {line}, column {column}")
    };
    let mut sets = Vec::with_capacity(raw.set.len());
    for set in raw.set {
        let concept = set
            .iter()
            .find(|(k, _)| k.get_ref() == "concept")
            .and_then(|(_, v)| v.get_ref().as_str())
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .ok_or("each [[set]] needs a `concept`: a few words naming it")?;
        let mut members = Vec::new();
        for (lang, terms) in &set {
            if ["concept", "review"].contains(&lang.get_ref().as_str()) {
                continue;
            }
            if crate::language::primary_subtag(lang.get_ref()).is_none() {
                return Err(format!(
                    "{}: set {concept:?}: {:?} is not a language code (en, es, fr, pt, ht…)",
                    at(lang.span()),
                    lang.get_ref()
                ));
            }
            let list = terms
                .get_ref()
                .as_array()
                .map(|a| a.iter().map(|t| t.as_str()).collect::<Option<Vec<_>>>());
            let Some(Some(list)) = list else {
                return Err(format!(
                    "{}: set {concept:?}: `{}` must be a list of terms, as in [\"asilo\"]",
                    at(terms.span()),
                    lang.get_ref()
                ));
            };
            members.extend(
                list.into_iter()
                    .map(|t| (lang.get_ref().clone(), t.to_string())),
            );
        }
        if members.len() < 2 {
            return Err(format!("set {concept:?} needs at least two terms"));
        }
        // Checked as the matcher reads them, for an error naming the set.
        crate::matcher::Synonyms::default()
            .with_crossings(vec![members.clone()])
            .map_err(|e| format!("set {concept:?}: {e}"))?;
        sets.push(members);
    }
    Ok(sets)
}

/// `[languages]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LanguageSettings {
    /// The languages the detector chooses among (ISO 639-1 codes).
    pub detect: Vec<String>,
    /// The sets across languages: the shipped ones, then the admin's.
    pub crossings: Vec<Vec<(String, String)>>,
}

impl Default for LanguageSettings {
    fn default() -> LanguageSettings {
        LanguageSettings {
            detect: crate::language::DEFAULT_LANGUAGES
                .iter()
                .map(|c| c.to_string())
                .collect(),
            crossings: language_sets(LANGUAGE_SETS).unwrap_or_default(),
        }
    }
}

/// `[stories]`: grouping items of different feeds that report the same news.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawStories {
    window: Option<Spanned<String>>,
    similarity: Option<Spanned<f64>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawChannels {
    timeout: Option<Spanned<String>>,
    concurrency: Option<Spanned<u32>>,
    pause_after: Option<Spanned<u32>>,
    require_https: Option<bool>,
    webhook_rate: Option<Spanned<f64>>,
    #[serde(default)]
    rate_limits: std::collections::BTreeMap<String, Spanned<f64>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawDigest {
    daily_at: Option<Spanned<String>>,
    timezone: Option<Spanned<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawMail {
    from: Option<Spanned<String>>,
    transport: Option<Spanned<String>>,
    folder: Option<String>,
    send_timeout: Option<Spanned<String>>,
    max_age: Option<Spanned<String>>,
    rate_limit: Option<u32>,
    concurrency: Option<Spanned<u32>>,
    pause_after_bounces: Option<u32>,
    smtp: Option<Spanned<Table<RawSmtp>>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawWeb {
    base_url: Option<Spanned<String>>,
    listen: Option<Spanned<String>>,
    secret_file: Option<String>,
    header_timeout: Option<Spanned<String>>,
    request_timeout: Option<Spanned<String>>,
    max_connections: Option<Spanned<u32>>,
    max_connections_per_client: Option<Spanned<u32>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawService {
    admin_listen: Option<Spanned<String>>,
    shutdown_timeout: Option<Spanned<String>>,
    watch_config: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSmtp {
    /// Required; missing, it is a problem of phase two, so the table's others are found.
    host: Option<Spanned<String>>,
    port: Option<u16>,
    tls: Option<TlsMode>,
    username: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFeed {
    /// Required, like `url`; missing, it is a problem of phase two, so the feed's other
    /// problems are found too.
    id: Option<Spanned<String>>,
    url: Option<Spanned<String>>,
    name: Option<Spanned<String>>,
    #[serde(default)]
    tags: Vec<Spanned<String>>,
    interval: Option<Spanned<String>>,
    full_text: Option<bool>,
    content_selector: Option<Spanned<String>>,
    kind: Option<Spanned<String>>,
    item_selector: Option<Spanned<String>>,
    title_selector: Option<Spanned<String>>,
    link_selector: Option<Spanned<String>>,
    date_selector: Option<Spanned<String>>,
    selector: Option<Spanned<String>>,
}

// ---- phase two: validated values ----------------------------------------------------------

fn validate(
    raw: RawConfig,
    left_out: &[LeftOut],
    lines: &Lines,
    path: &Path,
) -> Result<Config, ConfigError> {
    let mut problems = Vec::new();
    let mut report = |span: Range<usize>, message: String| {
        problems.push(lines.problem(span, &message));
    };
    let base = path.parent().unwrap_or(Path::new("."));

    let database = match &raw.database {
        Some(db) => database(db.get_ref(), base).unwrap_or_else(|e| {
            report(db.span(), e);
            Database::Sqlite(PathBuf::new())
        }),
        None => Database::Sqlite(base.join("tidings.db")),
    };
    let retention = match &raw.retention {
        None => DEFAULT_RETENTION,
        Some(v) => match parse_duration(v.get_ref()) {
            Ok(d) if d < MIN_RETENTION => {
                report(
                    v.span(),
                    format!(
                        "`retention` must be at least 1 day (\"1d\"), found {:?}",
                        v.get_ref()
                    ),
                );
                DEFAULT_RETENTION
            }
            Ok(d) => d,
            Err(e) => {
                report(v.span(), format!("`retention`: {e}"));
                DEFAULT_RETENTION
            }
        },
    };

    let mut duration = |value: &Option<Spanned<String>>, key: &str, default: Duration| match value {
        None => default,
        Some(v) => match parse_duration(v.get_ref()) {
            Ok(d) => d,
            Err(e) => {
                report(v.span(), format!("`{key}`: {e}"));
                default
            }
        },
    };
    let interval = duration(
        &raw.poll.interval,
        "poll.interval",
        Duration::from_secs(15 * 60),
    );
    let initial_backlog = duration(
        &raw.poll.initial_backlog,
        "poll.initial_backlog",
        Duration::from_secs(24 * 3600),
    );
    let connect_timeout = duration(
        &raw.poll.connect_timeout,
        "poll.connect_timeout",
        Duration::from_secs(10),
    );
    let timeout = duration(&raw.poll.timeout, "poll.timeout", Duration::from_secs(30));
    let max_backoff = duration(
        &raw.poll.max_backoff,
        "poll.max_backoff",
        Duration::from_secs(24 * 3600),
    );
    let full_fetch_every = duration(
        &raw.poll.full_fetch_every,
        "poll.full_fetch_every",
        Duration::from_secs(12 * 3600),
    );
    // Long enough to connect, fetch, parse and store; five minutes unless set.
    let lease_floor = connect_timeout + timeout + Duration::from_secs(10);
    let claim_lease = duration(
        &raw.poll.claim_lease,
        "poll.claim_lease",
        Duration::from_secs(300).max(lease_floor),
    );
    let send_timeout = duration(
        &raw.mail.send_timeout,
        "mail.send_timeout",
        Duration::from_secs(60),
    );
    let max_age = duration(
        &raw.mail.max_age,
        "mail.max_age",
        Duration::from_secs(3 * 24 * 3600),
    );
    let shutdown_timeout = duration(
        &raw.service.shutdown_timeout,
        "service.shutdown_timeout",
        Duration::from_secs(10),
    );
    let header_timeout = duration(
        &raw.web.header_timeout,
        "web.header_timeout",
        ListenLimits::WEB.header_timeout,
    );
    let request_timeout = duration(
        &raw.web.request_timeout,
        "web.request_timeout",
        ListenLimits::WEB.request_timeout,
    );
    let channel_timeout = duration(
        &raw.channels.timeout,
        "channels.timeout",
        ChannelSettings::default().timeout,
    );
    let story_window = duration(
        &raw.stories.window,
        "stories.window",
        crate::story::DEFAULT_WINDOW,
    );
    // What a subscriber got is forgotten with old mail (`retention`): a story may not be
    // joined for longer than that. The default window is shortened to fit.
    let story_window = match &raw.stories.window {
        None => story_window.min(retention),
        Some(v) if story_window > Duration::from_secs(90 * 24 * 3600) => {
            report(v.span(), "`stories.window` must be at most \"90d\"".into());
            story_window
        }
        Some(v) if story_window > retention => {
            report(
                v.span(),
                format!(
                    "`stories.window` ({}) must not be longer than `retention` ({}): what \
                     each subscriber got is forgotten with old mail",
                    v.get_ref(),
                    humantime::format_duration(retention)
                ),
            );
            story_window
        }
        Some(_) => story_window,
    };
    let story_similarity = match &raw.stories.similarity {
        Some(v) if !(0.1..=1.0).contains(v.get_ref()) => {
            report(
                v.span(),
                "`stories.similarity` must be a number from 0.1 to 1 (1: only the same \
                 link or identical text)"
                    .into(),
            );
            crate::story::DEFAULT_SIMILARITY
        }
        Some(v) => *v.get_ref(),
        None => crate::story::DEFAULT_SIMILARITY,
    };

    // A count from 1 to `max`.
    let mut positive = |value: &Option<Spanned<u32>>, key: &str, default: u32, max: u32| match value
    {
        Some(v) if *v.get_ref() == 0 => {
            report(v.span(), format!("`{key}` must be at least 1"));
            default
        }
        Some(v) if *v.get_ref() > max => {
            report(v.span(), format!("`{key}` must be at most {max}"));
            default
        }
        Some(v) => *v.get_ref(),
        None => default,
    };
    let max_body_mib = positive(
        &raw.poll.max_body_mib,
        "poll.max_body_mib",
        10,
        MAX_BODY_MIB,
    );
    let mail_concurrency = positive(&raw.mail.concurrency, "mail.concurrency", 4, 1000);
    let channel_defaults = ChannelSettings::default();
    let channel_concurrency = positive(
        &raw.channels.concurrency,
        "channels.concurrency",
        channel_defaults.concurrency as u32,
        1000,
    );
    let pause_after = positive(
        &raw.channels.pause_after,
        "channels.pause_after",
        channel_defaults.pause_after,
        1000,
    );
    let max_connections = positive(
        &raw.web.max_connections,
        "web.max_connections",
        ListenLimits::WEB.max_connections as u32,
        100_000,
    );
    let max_connections_per_client = positive(
        &raw.web.max_connections_per_client,
        "web.max_connections_per_client",
        ListenLimits::WEB.max_connections_per_client as u32,
        100_000,
    );
    let concurrency = positive(&raw.poll.concurrency, "poll.concurrency", 16, 10_000);
    let per_host = positive(&raw.poll.per_host, "poll.per_host", 2, 1000);
    let full_text_concurrency = positive(
        &raw.poll.full_text_concurrency,
        "poll.full_text_concurrency",
        4,
        1000,
    );

    let daily_at = match &raw.digest.daily_at {
        None => NaiveTime::from_hms_opt(8, 0, 0).unwrap_or_default(),
        Some(v) => NaiveTime::parse_from_str(v.get_ref(), "%H:%M").unwrap_or_else(|_| {
            report(
                v.span(),
                format!(
                    "`digest.daily_at`: expected a time like \"07:30\", found {:?}",
                    v.get_ref()
                ),
            );
            NaiveTime::default()
        }),
    };
    let timezone = match &raw.digest.timezone {
        None => Tz::UTC,
        Some(v) => crate::digest::parse_time_zone(v.get_ref()).unwrap_or_else(|| {
            report(
                v.span(),
                format!(
                    "`digest.timezone`: unknown time zone {:?} (use an IANA name like \"America/New_York\")",
                    v.get_ref()
                ),
            );
            Tz::UTC
        }),
    };

    let from = match &raw.mail.from {
        None => "Tidings <tidings@localhost>".to_string(),
        Some(v) => {
            if let Err(e) = crate::mail::check_mailbox(v.get_ref()) {
                report(
                    v.span(),
                    format!(
                        "`mail.from`: expected an address like \"Tidings <alerts@example.org>\", found {:?} ({e})",
                        v.get_ref()
                    ),
                );
            }
            v.get_ref().clone()
        }
    };
    let folder = base.join(raw.mail.folder.as_deref().unwrap_or("mail"));
    let transport = match raw
        .mail
        .transport
        .as_ref()
        .map(|t| (t.get_ref().as_str(), t.span()))
    {
        None | Some(("file", _)) => MailTransport::File { folder },
        Some(("smtp", span)) => match &raw.mail.smtp {
            None => {
                report(
                    span,
                    "`mail.transport = \"smtp\"` needs a [mail.smtp] table".into(),
                );
                MailTransport::File { folder }
            }
            Some(table) => {
                let smtp = table.get_ref();
                let host = match &smtp.host {
                    None => {
                        if !was_left_out(left_out, table.span(), "host") {
                            report(table.span(), "missing field `host`".into());
                        }
                        String::new()
                    }
                    Some(host) if host.get_ref().trim().is_empty() => {
                        report(host.span(), "`mail.smtp.host` must not be empty".into());
                        String::new()
                    }
                    Some(host) => host.get_ref().trim().to_string(),
                };
                let tls = smtp.tls.unwrap_or(TlsMode::Starttls);
                let port = smtp.port.unwrap_or(match tls {
                    TlsMode::Tls => 465,
                    TlsMode::Starttls => 587,
                    TlsMode::None => 25,
                });
                MailTransport::Smtp(SmtpSettings {
                    host,
                    port,
                    tls,
                    username: smtp.username.clone(),
                })
            }
        },
        Some((other, span)) => {
            report(
                span,
                format!("`mail.transport`: expected \"file\" or \"smtp\", found {other:?}"),
            );
            MailTransport::File { folder }
        }
    };

    let default_base_url = || Url::parse(DEFAULT_BASE_URL).expect("the default URL is valid");
    let base_url = match &raw.web.base_url {
        None => default_base_url(),
        Some(v) => match public_base_url(v.get_ref()) {
            Ok(u) => u,
            Err(e) => {
                report(v.span(), format!("`web.base_url`: {e}"));
                default_base_url()
            }
        },
    };
    let secret_file = match &raw.web.secret_file {
        Some(f) => base.join(f),
        None => database
            .sqlite_path()
            .and_then(Path::parent)
            .unwrap_or(base)
            .join("tidings.secret"),
    };

    let mut listen = |value: &Option<Spanned<String>>, key: &str, default: &str| {
        match value {
        None => default.parse().ok(),
        Some(v) if v.get_ref().trim().is_empty() => None,
        Some(v) => v.get_ref().trim().parse::<SocketAddr>().map_or_else(
            |_| {
                report(
                    v.span(),
                    format!(
                        "`{key}`: expected an address and port like \"{default}\" (or \"\" for none), found {:?}",
                        v.get_ref()
                    ),
                );
                None
            },
            Some,
        ),
    }
    };
    let admin_listen = listen(
        &raw.service.admin_listen,
        "service.admin_listen",
        DEFAULT_ADMIN_LISTEN,
    );
    let web_listen = listen(&raw.web.listen, "web.listen", DEFAULT_WEB_LISTEN);

    let full_text = raw.poll.0.full_text.unwrap_or(false);
    let mut feeds = Vec::with_capacity(raw.feeds.len());
    let mut seen_ids: HashMap<String, usize> = HashMap::new();
    let mut seen_urls: HashMap<String, usize> = HashMap::new();
    for table in raw.feeds.iter() {
        let feed = table.get_ref();
        let id = match &feed.id {
            None => {
                if !was_left_out(left_out, table.span(), "id") {
                    report(table.span(), "missing field `id`".into());
                }
                String::new()
            }
            Some(spanned) => {
                let id = spanned.get_ref().trim().to_string();
                if !is_identifier(&id) {
                    report(
                        spanned.span(),
                        format!(
                            "feed id {id:?} must be 1-64 characters of lowercase letters, digits, '-' or '_'"
                        ),
                    );
                } else if let Some(line) =
                    seen_ids.insert(id.clone(), lines.line(spanned.span().start))
                {
                    report(
                        spanned.span(),
                        format!("duplicate feed id {id:?} (first used on line {line})"),
                    );
                }
                id
            }
        };

        let url = match &feed.url {
            None => {
                if !was_left_out(left_out, table.span(), "url") {
                    report(table.span(), "missing field `url`".into());
                }
                None
            }
            Some(spanned) => match Url::parse(spanned.get_ref().trim()) {
                Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {
                    Some((u, spanned.span()))
                }
                Ok(u) => {
                    report(
                        spanned.span(),
                        format!("feed {id:?}: url must be http or https with a host, found {u}"),
                    );
                    None
                }
                Err(e) => {
                    report(
                        spanned.span(),
                        format!("feed {id:?}: bad url {:?}: {e}", spanned.get_ref()),
                    );
                    None
                }
            },
        };
        if let Some((u, span)) = &url
            && let Some(line) = seen_urls.insert(u.to_string(), lines.line(span.start))
        {
            report(
                span.clone(),
                format!("duplicate feed url {u} (first used on line {line})"),
            );
        }

        // Shown in digests, pages and terminals, and stored (PostgreSQL refuses a NUL).
        let name = feed.name.as_ref().and_then(|name| {
            let text = name.get_ref().trim();
            if let Some(c) = text
                .chars()
                .find(|&c| c.is_control() && !matches!(c, '\t' | '\n'))
            {
                report(
                    name.span(),
                    format!(
                        "feed {id:?}: name must not hold a control character ({:?})",
                        c
                    ),
                );
            }
            (!text.is_empty()).then(|| text.to_string())
        });

        let mut tags = Vec::new();
        for tag in &feed.tags {
            let t = tag.get_ref().trim().to_lowercase();
            if is_identifier(&t) {
                tags.push(t);
            } else {
                report(
                    tag.span(),
                    format!("feed {id:?}: tag {t:?} must be lowercase letters, digits, '-' or '_'"),
                );
            }
        }

        let interval = match &feed.interval {
            None => interval,
            Some(v) => match parse_duration(v.get_ref()) {
                Ok(d) if d < Duration::from_secs(60) => {
                    report(
                        v.span(),
                        format!("feed {id:?}: interval must be at least 1m"),
                    );
                    d
                }
                Ok(d) => d,
                Err(e) => {
                    report(v.span(), format!("feed {id:?}: interval: {e}"));
                    interval
                }
            },
        };

        // A CSS selector, checked; `None` (reported) when it is not one.
        let mut css = |key: &str, value: &Option<Spanned<String>>| -> Option<String> {
            let selector = value.as_ref()?;
            let text = selector.get_ref().trim();
            match dom_query::Matcher::new(text) {
                Ok(_) if !text.is_empty() => Some(text.to_string()),
                Ok(_) | Err(_) => {
                    report(
                        selector.span(),
                        format!("feed {id:?}: {key} {text:?} is not a CSS selector"),
                    );
                    None
                }
            }
        };
        let content_selector = css("content_selector", &feed.content_selector);
        let item_selector = css("item_selector", &feed.item_selector);
        let title_selector = css("title_selector", &feed.title_selector);
        let link_selector = css("link_selector", &feed.link_selector);
        let date_selector = css("date_selector", &feed.date_selector);
        let selector = css("selector", &feed.selector);
        let kind = feed.kind.as_ref().map(|k| (k.get_ref().trim(), k.span()));
        let kind_name = kind.as_ref().map_or("feed", |(k, _)| *k);
        // Keys of another kind are a mistake worth saying (a watch with an item_selector
        // would silently watch nothing).
        let wrong_kind = |key: &str, value: &Option<Spanned<String>>, for_kind: &str| {
            value.as_ref().filter(|_| kind_name != for_kind).map(|v| {
                (
                    v.span(),
                    format!("feed {id:?}: {key} is for kind = \"{for_kind}\", not \"{kind_name}\""),
                )
            })
        };
        let misplaced: Vec<(Range<usize>, String)> = [
            wrong_kind("item_selector", &feed.item_selector, "html"),
            wrong_kind("title_selector", &feed.title_selector, "html"),
            wrong_kind("link_selector", &feed.link_selector, "html"),
            wrong_kind("date_selector", &feed.date_selector, "html"),
            wrong_kind("selector", &feed.selector, "watch"),
        ]
        .into_iter()
        .flatten()
        .collect();
        for (span, message) in misplaced {
            report(span, message);
        }
        let source = match &kind {
            None | Some(("feed", _)) => Source::Feed,
            Some(("html", span)) => match item_selector {
                Some(item_selector) => Source::Html(crate::page::ListingRules {
                    item_selector,
                    title_selector,
                    link_selector,
                    date_selector,
                }),
                None => {
                    if feed.item_selector.is_none() {
                        report(
                            span.clone(),
                            format!("feed {id:?}: kind = \"html\" needs an item_selector"),
                        );
                    }
                    Source::Feed
                }
            },
            Some(("watch", span)) => match selector {
                Some(selector) => Source::Watch { selector },
                None => {
                    if feed.selector.is_none() {
                        report(
                            span.clone(),
                            format!("feed {id:?}: kind = \"watch\" needs a selector"),
                        );
                    }
                    Source::Feed
                }
            },
            Some((other, span)) => {
                report(
                    span.clone(),
                    format!(
                        "feed {id:?}: kind must be \"feed\", \"html\" or \"watch\", found {other:?}"
                    ),
                );
                Source::Feed
            }
        };
        // A watched page's link is the page itself: no article to fetch.
        let is_watch = matches!(source, Source::Watch { .. });
        let options = FeedOptions {
            full_text: feed.full_text.unwrap_or(full_text) && !is_watch,
            content_selector,
            source,
        };

        if let Some((url, _)) = url {
            feeds.push(FeedConfig {
                name: name.unwrap_or_else(|| id.clone()),
                id,
                url,
                tags,
                interval,
                options,
            });
        }
    }

    let mut languages = LanguageSettings::default();
    if let Some(detect) = &raw.languages.detect {
        let codes: Vec<String> = detect
            .get_ref()
            .iter()
            .map(|c| c.get_ref().clone())
            .collect();
        match crate::language::Detector::new(&codes) {
            Ok(_) => {
                languages.detect = codes
                    .iter()
                    .filter_map(|c| crate::language::primary_subtag(c))
                    .collect();
            }
            Err(e) => {
                let span = detect
                    .get_ref()
                    .iter()
                    .find(|c| crate::language::Detector::new(&[c.get_ref()]).is_err())
                    .map_or(detect.span(), |c| c.span());
                report(span, format!("`languages.detect`: {e}"));
            }
        }
    }
    if let Some(file) = &raw.languages.synonyms {
        let path = base.join(file.get_ref());
        match std::fs::read_to_string(&path) {
            Ok(text) => match language_sets(&text) {
                Ok(sets) => languages.crossings.extend(sets),
                Err(e) => report(file.span(), format!("{}: {e}", path.display())),
            },
            Err(e) => report(
                file.span(),
                format!("`languages.synonyms`: cannot read {}: {e}", path.display()),
            ),
        }
    }

    let mut synonyms = Vec::with_capacity(raw.synonyms.len());
    for (spanned, others) in raw.synonyms.iter() {
        let term = spanned.get_ref();
        let mut group = vec![term.trim().to_string()];
        for other in others {
            if other.get_ref().trim().is_empty() {
                report(other.span(), format!("synonyms of {term:?}: empty synonym"));
            } else {
                group.push(other.get_ref().trim().to_string());
            }
        }
        if term.trim().is_empty() {
            report(spanned.span(), "[synonyms]: empty term".into());
        }
        synonyms.push(group);
    }

    let mut rate = |value: &Spanned<f64>, key: &str| {
        let per_second = *value.get_ref();
        if per_second == 0.0 || (per_second.is_finite() && (0.001..=10_000.0).contains(&per_second))
        {
            per_second
        } else {
            report(
                value.span(),
                format!(
                    "`{key}` must be 0 (no limit) or a number of requests per second from \
                     0.001 to 10000"
                ),
            );
            0.0
        }
    };
    let webhook_rate = raw
        .channels
        .webhook_rate
        .as_ref()
        .map_or(0.0, |v| rate(v, "channels.webhook_rate"));
    let rate_limits: HashMap<String, f64> = raw
        .channels
        .rate_limits
        .iter()
        .map(|(host, v)| {
            let per_second = rate(v, &format!("channels.rate_limits.{host}"));
            (host.trim().to_ascii_lowercase(), per_second)
        })
        .collect();
    let mut destinations: Vec<DestinationConfig> = Vec::new();
    for table in &raw.destinations {
        let d = table.get_ref();
        let text = |v: &Option<Spanned<String>>| v.as_ref().map(|v| v.get_ref().trim().to_string());
        let mut required = |v: &Option<Spanned<String>>, key: &str| match v {
            Some(v) if !v.get_ref().trim().is_empty() => v.get_ref().trim().to_string(),
            _ => {
                report(table.span(), format!("[[destinations]]: missing `{key}`"));
                String::new()
            }
        };
        let subscriber = required(&d.subscriber, "subscriber");
        let name = required(&d.name, "name");
        let kind = required(&d.kind, "kind");
        let envs = [
            ("url_env", &d.url_env),
            ("secret_env", &d.secret_env),
            ("token_env", &d.token_env),
        ];
        let given: Vec<&(&str, &Option<Spanned<String>>)> =
            envs.iter().filter(|(_, v)| v.is_some()).collect();
        if given.len() > 1 {
            report(
                table.span(),
                "[[destinations]]: give one of `url_env`, `secret_env`, `token_env`".into(),
            );
        }
        for (key, value) in &envs {
            if let Some(v) = value
                && !is_env_name(v.get_ref().trim())
            {
                // Not quoted back: it may be the secret itself, pasted in the wrong place.
                report(
                    v.span(),
                    format!(
                        "`{key}` names an environment variable (LIKE_THIS): put the secret \
                         itself in the environment, never in this file"
                    ),
                );
            }
        }
        let secret_env = given.first().and_then(|(_, v)| text(v));
        let needs = match kind.as_str() {
            "webhook" => Some((
                "secret_env",
                "the variable holding its signing secret (whsec_…)",
            )),
            "telegram" | "matrix" => Some(("token_env", "the variable holding its token")),
            "slack" | "discord" | "mattermost" => {
                Some(("url_env", "the variable holding its incoming-webhook URL"))
            }
            _ => None,
        };
        if let Some((key, what)) = needs
            && secret_env.is_none()
        {
            report(
                table.span(),
                format!("[[destinations]] {name:?}: a {kind} destination needs `{key}`, {what}"),
            );
        }
        if matches!(kind.as_str(), "slack" | "discord" | "mattermost")
            && let Some(url) = &d.url
        {
            report(
                url.span(),
                format!(
                    "a {kind} incoming-webhook URL is a secret: put it in an environment variable and name it with `url_env`"
                ),
            );
        }
        // Everything else the kind needs is checked as the CLI and the pages check it.
        let spec = crate::push::Spec {
            kind: kind.clone(),
            url: match kind.as_str() {
                "slack" | "discord" | "mattermost" => {
                    Some("https://secret.invalid/from-env".into())
                }
                _ => text(&d.url),
            },
            token: secret_env.as_ref().map(|_| "from-env".to_string()),
            chat_id: text(&d.chat_id),
            homeserver: text(&d.homeserver),
            room: text(&d.room),
            api: text(&d.api),
        };
        if !kind.is_empty()
            && let Err(e) = spec.check(false)
        {
            report(table.span(), format!("[[destinations]] {name:?}: {e}"));
        }
        if let Err(e) = crate::push::check_name(&name)
            && !name.is_empty()
        {
            report(table.span(), format!("[[destinations]]: {e}"));
        }
        if destinations
            .iter()
            .any(|o| o.subscriber.eq_ignore_ascii_case(&subscriber) && o.name == name)
        {
            report(
                table.span(),
                format!("[[destinations]]: {subscriber} has two destinations named {name:?}"),
            );
        }
        destinations.push(DestinationConfig {
            subscriber,
            name,
            kind,
            url: text(&d.url),
            secret_env,
            chat_id: text(&d.chat_id),
            homeserver: text(&d.homeserver),
            room: text(&d.room),
            api: text(&d.api),
            searches: d
                .searches
                .iter()
                .map(|s| s.get_ref().trim().to_string())
                .collect(),
        });
    }
    if let Some(v) = &raw.poll.claim_lease
        && claim_lease < lease_floor
    {
        report(
            v.span(),
            format!(
                "`poll.claim_lease` must cover a whole poll: at least connect_timeout + timeout \
                 + 10s ({}), found {:?}",
                humantime::format_duration(lease_floor),
                v.get_ref()
            ),
        );
    }
    if !problems.is_empty() {
        return Err(ConfigError {
            path: path.to_path_buf(),
            problems,
        });
    }
    let mut sorted_ids: Vec<String> = feeds.iter().map(|f| f.id.clone()).collect();
    sorted_ids.sort_unstable();
    let mut sorted_tags: Vec<String> = feeds.iter().flat_map(|f| f.tags.clone()).collect();
    sorted_tags.sort_unstable();
    sorted_tags.dedup();
    Ok(Config {
        path: path.to_path_buf(),
        written_at: None,
        database,
        retention,
        poll: PollSettings {
            interval,
            initial_backlog,
            connect_timeout,
            timeout,
            max_body_bytes: max_body_mib as usize * 1024 * 1024,
            concurrency: concurrency as usize,
            per_host: per_host as usize,
            max_backoff,
            full_fetch_every,
            claim_lease,
            user_agent: raw.poll.0.user_agent.unwrap_or_else(default_user_agent),
            allow_private_networks: raw.poll.0.allow_private_networks.unwrap_or(false),
            allow_metadata: raw.poll.0.allow_metadata.unwrap_or(false),
            full_text_concurrency: full_text_concurrency as usize,
        },
        digest: DigestSettings { daily_at, timezone },
        mail: MailSettings {
            from,
            transport,
            send_timeout,
            max_age,
            rate_limit: raw.mail.rate_limit.filter(|&r| r > 0),
            concurrency: mail_concurrency as usize,
            pause_after_bounces: raw.mail.pause_after_bounces.or(Some(3)).filter(|&n| n > 0),
        },
        web: WebSettings {
            base_url,
            listen: web_listen,
            secret_file,
            limits: ListenLimits {
                header_timeout,
                request_timeout,
                max_connections: max_connections as usize,
                max_connections_per_client: max_connections_per_client as usize,
            },
        },
        service: ServiceSettings {
            admin_listen,
            shutdown_timeout,
            watch_config: raw.service.watch_config.unwrap_or(true),
        },
        destinations,
        stories: crate::story::StoryRules {
            window: story_window,
            similarity: story_similarity,
        },
        languages,
        channels: ChannelSettings {
            timeout: channel_timeout,
            concurrency: channel_concurrency as usize,
            pause_after,
            require_https: raw.channels.require_https.unwrap_or(true),
            webhook_rate,
            rate_limits,
        },
        feed_index: feeds
            .iter()
            .enumerate()
            .map(|(i, f)| (f.id.clone(), i))
            .collect(),
        scopes: KnownScopes::new(
            feeds.iter().map(|f| f.id.as_str()),
            feeds.iter().flat_map(|f| f.tags.iter().map(String::as_str)),
        ),
        sorted_ids,
        sorted_tags,
        feeds,
        synonyms,
    })
}

/// `LIKE_THIS`: a name an environment variable can have.
fn is_env_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && name.len() <= 100
}

fn default_user_agent() -> String {
    format!(
        "Tidings/{} (feed notifier; +https://crates.io/crates/tidings)",
        env!("CARGO_PKG_VERSION")
    )
}

/// The largest feed body a fetch may read, in MiB.
const MAX_BODY_MIB: u32 = 1024;

/// The longest duration any setting takes (ten years and a bit): every duration is
/// added to dates, and a longer one would overflow the calendar.
pub const MAX_DURATION: Duration = Duration::from_secs(3660 * 24 * 3600);

/// `"15m"`, `"1h 30m"`, `"2d"`: humantime syntax, at least one second and at most
/// [`MAX_DURATION`].
fn parse_duration(text: &str) -> Result<Duration, String> {
    match humantime::parse_duration(text.trim()) {
        Ok(d) if d.as_secs() == 0 => Err(format!("{text:?} is shorter than a second")),
        Ok(d) if d > MAX_DURATION => Err(format!(
            "{text:?} is longer than the limit: at most 3660d (ten years)"
        )),
        Ok(d) => Ok(d),
        Err(e) => Err(format!(
            "bad duration {text:?} ({e}); write e.g. \"15m\", \"2h\", \"1d\""
        )),
    }
}

/// What a feed id or tag may be: 1-64 lowercase ASCII letters, digits, `-` or `_`.
pub(crate) fn is_identifier(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

/// `text` as the address every link in mail starts with: an absolute http(s) URL with a
/// host, its path ending in `/` (the pages are under it), and nothing that would be
/// repeated into every link: no user name or password, query or fragment.
fn public_base_url(text: &str) -> Result<Url, String> {
    let expected = || {
        format!(
            "expected an http(s) URL like \"https://alerts.example.org/\", found {:?}",
            text.trim()
        )
    };
    let mut url = Url::parse(text.trim()).map_err(|_| expected())?;
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        return Err(expected());
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(format!(
            "{}: a user name or password would be in every link mailed",
            expected()
        ));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(format!(
            "{}: a query or fragment would end up in the middle of every link",
            expected()
        ));
    }
    if url.path().contains("//") {
        // `https://x.org//evil.example/` (or `/\evil.example/`): the pages' links would
        // start with `//evil.example/`, which browsers read as another host.
        return Err(format!("{}: its path may not contain \"//\"", expected()));
    }
    if !url.path().ends_with('/') {
        url.set_path(&format!("{}/", url.path()));
    }
    Ok(url)
}

/// Lines and columns of a text's byte offsets. Where each line starts is found once, so
/// a position costs a binary search rather than a count from the start of the file (every
/// feed's id and url takes one, to name the line of a duplicate).
struct Lines<'a> {
    text: &'a str,
    /// The byte offset of each line's first character: 0, then each one after a `\n`.
    starts: Vec<usize>,
}

impl<'a> Lines<'a> {
    fn new(text: &'a str) -> Lines<'a> {
        let starts = std::iter::once(0)
            .chain(text.match_indices('\n').map(|(at, _)| at + 1))
            .collect();
        Lines { text, starts }
    }

    /// The line (from 1) of byte `offset`.
    fn line(&self, offset: usize) -> usize {
        // The first start is 0, so at least one is at or before any offset.
        self.starts.partition_point(|&start| start <= offset)
    }

    /// The line and column (from 1; a column counts characters, not bytes) of byte
    /// `offset`, taken back to the end of the text or the start of its character.
    fn position(&self, offset: usize) -> (usize, usize) {
        let offset = self.text.floor_char_boundary(offset);
        let line = self.line(offset);
        let start = self.starts[line - 1];
        (line, self.text[start..offset].chars().count() + 1)
    }

    fn problem(&self, span: Range<usize>, message: &str) -> Problem {
        let (line, column) = self.position(span.start);
        Problem {
            line,
            column,
            message: message.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("/etc/tidings/config.toml"))
    }

    fn problems(text: &str) -> Vec<Problem> {
        match parse(text) {
            Ok(_) => panic!("expected an error for:\n{text}"),
            Err(e) => e.problems,
        }
    }

    #[test]
    fn a_duplicate_key_or_table_is_named() {
        let found = problems(
            "[web]\nlisten = \"\"\n[web]\nbase_url = \"https://x.org/\"\n\
             [poll]\nconcurrency = 4\nconcurrency = 5\n",
        );
        let said: Vec<(usize, &str)> = found.iter().map(|p| (p.line, p.message.as_str())).collect();
        assert_eq!(
            said,
            [
                (3, "duplicate key `web`"),
                (7, "duplicate key `concurrency`")
            ]
        );
    }

    #[test]
    fn shipped_config_is_valid() {
        let config = parse(EXAMPLE).expect("shipped config.toml must be valid");
        assert!(config.feeds.len() >= 5, "ships real immigration feeds");
        assert_eq!(
            config.database,
            Database::Sqlite("/etc/tidings/tidings.db".into())
        );
        assert!(matches!(config.mail.transport, MailTransport::File { .. }));
        let green = config
            .synonyms
            .iter()
            .find(|g| g[0] == "green card")
            .expect("synonyms");
        assert!(green.contains(&"permanent resident".to_string()));
    }

    #[test]
    fn web_listener_limits_have_defaults_and_can_be_set() {
        assert_eq!(parse("").unwrap().web.limits, ListenLimits::WEB);
        let tuned = parse(
            "[web]\nheader_timeout = \"5s\"\nrequest_timeout = \"1m\"\n\
             max_connections = 2000\nmax_connections_per_client = 500\n",
        )
        .unwrap();
        assert_eq!(
            tuned.web.limits,
            ListenLimits {
                header_timeout: Duration::from_secs(5),
                request_timeout: Duration::from_secs(60),
                max_connections: 2000,
                max_connections_per_client: 500,
            }
        );
        let err = parse("[web]\nmax_connections_per_client = 0\n").unwrap_err();
        assert!(
            err.to_string()
                .contains("`web.max_connections_per_client` must be at least 1"),
            "{err}"
        );
    }

    /// `database` is a SQLite path (relative to the config) or a PostgreSQL URL without a
    /// password; anything else is refused where it is written.
    #[test]
    fn the_database_is_a_sqlite_path_or_a_postgres_url_without_a_password() {
        let db = |value: &str| parse(&format!("database = {value:?}\n")).map(|c| c.database);
        assert_eq!(
            db("data/t.db").unwrap(),
            Database::Sqlite("/etc/tidings/data/t.db".into())
        );
        for url in [
            "postgres://tidings@db.internal:5432/tidings",
            "postgresql://tidings@10.0.0.5/tidings?sslmode=disable",
        ] {
            assert_eq!(db(url).unwrap(), Database::Postgres(url.into()), "{url}");
        }
        // The client knows the scheme in lower case only.
        assert_eq!(
            db("POSTGRES://tidings@db/t").unwrap(),
            Database::Postgres("postgres://tidings@db/t".into())
        );
        for (value, expected) in [
            (
                "postgres://tidings:hunter2@db/t",
                "TIDINGS_DATABASE_PASSWORD",
            ),
            (
                "postgres://tidings@db/t?password=hunter2",
                "TIDINGS_DATABASE_PASSWORD",
            ),
            // The client reads no fragment: user `tidings`, password `hunter2` to it.
            ("postgres://x#:hunter2@db/t?user=tidings", "no `#`"),
            ("postgres://tidings@db/t#main", "no `#`"),
            // The client takes all up to the first `@` as the user: this connects to
            // other.internal, not db.internal.
            (
                "postgres://db.internal/tidings?application_name=ops@other.internal",
                "%40",
            ),
            ("postgres://pg.example:5432/t?user=tidings@pg", "%40"),
            ("postgres://ops@corp@db.internal/t", "%40"),
            ("postgres:///tidings", "needs a host"),
            ("mysql://db/t", "a SQLite file path or a postgres:// URL"),
            ("   ", "must not be empty"),
        ] {
            let err = db(value).unwrap_err().to_string();
            assert!(err.contains(expected), "{value}: {err}");
            assert!(err.contains("config.toml:1:"), "{value}: where: {err}");
            assert!(
                !err.contains("hunter2"),
                "the password is never repeated: {err}"
            );
        }
    }

    /// A feed's name is shown in digests, pages and terminals, and stored: a control
    /// character (a NUL, which PostgreSQL refuses in text; an escape sequence) is refused
    /// where it is written, not found later by a database or a terminal. Tabs and line
    /// breaks are text.
    #[test]
    fn a_feed_name_holds_no_control_characters() {
        for name in [
            "Agency\\u0000News",
            "Agency\\u001b[2JNews",
            "Agency\\u0007News",
        ] {
            let err = parse(&format!(
                "[[feeds]]\nid = \"agency\"\nname = \"{name}\"\nurl = \"https://agency.example/feed\"\n"
            ))
            .unwrap_err()
            .to_string();
            assert!(err.contains("config.toml:3:8"), "{name}: {err}");
            assert!(err.contains("control character"), "{name}: {err}");
        }
        let fine = parse(
            "[[feeds]]\nid = \"agency\"\nname = \"Agencia de Noticias\tÉ\"\nurl = \"https://agency.example/feed\"\n",
        );
        assert_eq!(fine.unwrap().feeds[0].name, "Agencia de Noticias\tÉ");
    }

    /// A claim must outlast a whole poll: the default is five minutes, a shorter lease
    /// is allowed down to the timeouts plus ten seconds.
    #[test]
    fn the_claim_lease_covers_a_whole_poll() {
        assert_eq!(
            parse("").unwrap().poll.claim_lease,
            Duration::from_secs(300)
        );
        let short =
            parse("[poll]\ntimeout = \"5s\"\nconnect_timeout = \"2s\"\nclaim_lease = \"17s\"\n");
        assert_eq!(short.unwrap().poll.claim_lease, Duration::from_secs(17));
        let err = parse("[poll]\nclaim_lease = \"30s\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("config.toml:2:"), "{err}");
        assert!(
            err.contains("at least connect_timeout + timeout + 10s (50s)"),
            "{err}"
        );
        let long = parse("[poll]\ntimeout = \"10m\"\n").unwrap();
        assert_eq!(
            long.poll.claim_lease,
            Duration::from_secs(620),
            "never shorter than a poll"
        );
    }

    #[test]
    fn defaults_and_relative_paths() {
        let config = parse("").unwrap();
        assert_eq!(
            config.database,
            Database::Sqlite("/etc/tidings/tidings.db".into())
        );
        assert_eq!(config.retention, Duration::from_secs(90 * 86400));
        assert_eq!(config.poll.interval, Duration::from_secs(900));
        assert_eq!(config.poll.initial_backlog, Duration::from_secs(86400));
        assert!(
            !config.poll.allow_private_networks && !config.poll.allow_metadata,
            "public addresses only by default"
        );
        assert_eq!(config.mail.max_age, Duration::from_secs(3 * 86400));
        assert_eq!(config.mail.concurrency, 4);
        assert_eq!(config.mail.rate_limit, None);
        assert_eq!(config.mail.pause_after_bounces, Some(3));
        assert_eq!(config.web.base_url.as_str(), DEFAULT_BASE_URL);
        assert_eq!(
            config.web.secret_file,
            Path::new("/etc/tidings/tidings.secret"),
            "beside the database"
        );
        match config.mail.transport {
            MailTransport::File { folder } => assert_eq!(folder, Path::new("/etc/tidings/mail")),
            other => panic!("{other:?}"),
        }
        let tuned = parse(
            "database = \"/var/lib/tidings/t.db\"\nretention = \"180d\"\n[mail]\nrate_limit = 120\npause_after_bounces = 0\n",
        )
        .unwrap();
        assert_eq!(tuned.retention, Duration::from_secs(180 * 86400));
        assert_eq!(tuned.mail.rate_limit, Some(120));
        assert_eq!(tuned.mail.pause_after_bounces, None, "0 never pauses");
        let open = parse("[poll]\nallow_private_networks = true\nallow_metadata = true\n")
            .unwrap()
            .poll;
        assert!(open.allow_private_networks && open.allow_metadata);
        assert_eq!(
            config.service,
            ServiceSettings {
                admin_listen: Some("127.0.0.1:9108".parse().unwrap()),
                shutdown_timeout: Duration::from_secs(10),
                watch_config: true,
            },
            "admin listener on loopback only by default"
        );
        let service = parse(
            "[service]\nadmin_listen = \"\"\nshutdown_timeout = \"30s\"\nwatch_config = false\n",
        )
        .unwrap()
        .service;
        assert_eq!(service.admin_listen, None, "an empty address turns it off");
        assert_eq!(service.shutdown_timeout, Duration::from_secs(30));
        assert!(!service.watch_config);
        assert_eq!(
            tuned.web.secret_file,
            Path::new("/var/lib/tidings/tidings.secret")
        );
    }

    #[test]
    fn the_environment_overrides_the_public_address() {
        let mut config = parse("[web]\nbase_url = \"http://localhost:8080/\"\n").unwrap();
        config.override_from(|_| None).unwrap();
        assert_eq!(config.web.base_url.as_str(), "http://localhost:8080/");

        let env = |value: &'static str| {
            move |name: &str| (name == BASE_URL_ENV).then(|| value.to_string())
        };
        config
            .override_from(env(" https://alerts.example.org/tidings/ "))
            .unwrap();
        assert_eq!(
            config.web.base_url.as_str(),
            "https://alerts.example.org/tidings/"
        );

        for bad in [
            "alerts.example.org",
            "ftp://alerts.example.org/",
            "https://user:secret@alerts.example.org/",
            "https://alerts.example.org/?utm_source=mail",
            "https://alerts.example.org/#top",
            "https://alerts.example.org//evil.example/",
            "https://alerts.example.org/\\evil.example/",
        ] {
            let err = config.override_from(env(bad)).unwrap_err().to_string();
            assert!(
                err.starts_with("TIDINGS_BASE_URL: expected an http(s) URL"),
                "{err}"
            );
            assert!(err.contains(&format!("{bad:?}")), "{err}");
        }
        assert_eq!(
            config.web.base_url.as_str(),
            "https://alerts.example.org/tidings/"
        );

        // Set but empty, as env files leave a variable out: the file's address stands.
        config.override_from(env(" ")).unwrap();
        assert_eq!(
            config.web.base_url.as_str(),
            "https://alerts.example.org/tidings/"
        );
        // A path without its last slash is the same folder.
        config
            .override_from(env("https://alerts.example.org/news"))
            .unwrap();
        assert_eq!(
            config.web.base_url.as_str(),
            "https://alerts.example.org/news/"
        );
    }

    /// `[poll] full_text` is the default of every feed; a feed's own setting wins; the
    /// options are part of the feed list's fingerprint (instances must agree on them).
    #[test]
    fn full_text_is_a_default_a_feed_can_override() {
        let text = "[poll]\nfull_text = true\n\
                    [[feeds]]\nid = \"a\"\nurl = \"https://a.example/\"\n\
                    [[feeds]]\nid = \"b\"\nurl = \"https://b.example/\"\nfull_text = false\n\
                    [[feeds]]\nid = \"c\"\nurl = \"https://c.example/\"\n\
                    content_selector = \" div.entry-content \"\n";
        let config = parse(text).unwrap();
        let options: Vec<(bool, Option<&str>)> = config
            .feeds
            .iter()
            .map(|f| (f.options.full_text, f.options.content_selector.as_deref()))
            .collect();
        assert_eq!(
            options,
            [
                (true, None),
                (false, None),
                (true, Some("div.entry-content"))
            ]
        );
        assert_eq!(config.poll.full_text_concurrency, 4);
        let off = parse(&text.replace("full_text = true\n[[", "full_text = false\n[[")).unwrap();
        assert!(!off.feeds[0].options.full_text);
        assert_ne!(config.feed_list_fingerprint(), off.feed_list_fingerprint());
        assert_eq!(
            FeedOptions::from_json(&config.feeds[2].options.to_json()),
            config.feeds[2].options
        );
        assert_eq!(FeedOptions::from_json("not json"), FeedOptions::default());

        let pages = parse(
            "[poll]\nfull_text = true\n\
             [[feeds]]\nid = \"news\"\nurl = \"https://a.example/news\"\nkind = \"html\"\n\
             item_selector = \"li.item\"\ndate_selector = \"time\"\n\
             [[feeds]]\nid = \"vb\"\nurl = \"https://a.example/vb\"\nkind = \"watch\"\n\
             selector = \"#dates\"\n",
        )
        .unwrap();
        let rules = crate::page::ListingRules {
            item_selector: "li.item".into(),
            date_selector: Some("time".into()),
            ..Default::default()
        };
        assert_eq!(pages.feeds[0].options.source, Source::Html(rules));
        assert!(
            pages.feeds[0].options.full_text,
            "a listing's entries have articles"
        );
        assert_eq!(
            pages.feeds[1].options.source,
            Source::Watch {
                selector: "#dates".into()
            }
        );
        assert!(
            !pages.feeds[1].options.full_text,
            "a watched page is its own article"
        );
        for feed in &pages.feeds {
            assert_eq!(
                FeedOptions::from_json(&feed.options.to_json()),
                feed.options
            );
        }
    }

    #[test]
    fn errors_name_key_line_and_column() {
        // (name, config text, line, column, words the message must contain)
        let cases: &[(&str, &str, usize, usize, &str)] = &[
            (
                "unknown top-level key",
                "databse = \"x.db\"\n",
                1,
                1,
                "databse",
            ),
            (
                "unknown feed key",
                "[[feeds]]\nid = \"a\"\nurl = \"https://a.example/feed\"\nintervall = \"5m\"\n",
                4,
                1,
                "intervall",
            ),
            (
                "bad url",
                "[[feeds]]\nid = \"a\"\nurl = \"not a url\"\n",
                3,
                7,
                "bad url",
            ),
            (
                "non-http url",
                "[[feeds]]\nid = \"a\"\nurl = \"ftp://a.example/x\"\n",
                3,
                7,
                "http or https",
            ),
            (
                "bad content selector",
                "[[feeds]]\nid = \"a\"\nurl = \"https://a.example/\"\nfull_text = true\ncontent_selector = \"div[\"\n",
                5,
                20,
                "content_selector \"div[\" is not a CSS selector",
            ),
            (
                "listing page without item_selector",
                "[[feeds]]\nid = \"a\"\nurl = \"https://a.example/\"\nkind = \"html\"\n",
                4,
                8,
                "kind = \"html\" needs an item_selector",
            ),
            (
                "selector of another kind",
                "[[feeds]]\nid = \"a\"\nurl = \"https://a.example/\"\nkind = \"html\"\nitem_selector = \"li\"\nselector = \"#x\"\n",
                6,
                12,
                "selector is for kind = \"watch\", not \"html\"",
            ),
            (
                "unknown kind",
                "[[feeds]]\nid = \"a\"\nurl = \"https://a.example/\"\nkind = \"rss\"\n",
                4,
                8,
                "kind must be \"feed\", \"html\" or \"watch\", found \"rss\"",
            ),
            (
                "bad item selector",
                "[[feeds]]\nid = \"a\"\nurl = \"https://a.example/\"\nkind = \"html\"\nitem_selector = \"li >\"\n",
                5,
                17,
                "item_selector \"li >\" is not a CSS selector",
            ),
            (
                "full_text not a boolean",
                "[poll]\nfull_text = \"yes\"\n",
                2,
                13,
                "expected a boolean",
            ),
            (
                "bad duration",
                "[[feeds]]\nid = \"a\"\nurl = \"https://a.example/\"\ninterval = \"soon\"\n",
                4,
                12,
                "bad duration",
            ),
            (
                "duplicate id",
                "[[feeds]]\nid = \"a\"\nurl = \"https://a.example/1\"\n[[feeds]]\nid = \"a\"\nurl = \"https://a.example/2\"\n",
                5,
                6,
                "duplicate feed id \"a\" (first used on line 2)",
            ),
            (
                "duplicate url",
                "[[feeds]]\nid = \"a\"\nurl = \"https://a.example/1\"\n[[feeds]]\nid = \"b\"\nurl = \"https://a.example/1\"\n",
                6,
                7,
                "duplicate feed url",
            ),
            (
                "bad time zone",
                "[digest]\ntimezone = \"Mars/Base\"\n",
                2,
                12,
                "unknown time zone",
            ),
            (
                "bad base url",
                "[web]\nbase_url = \"alerts.example.org\"\n",
                2,
                12,
                "`web.base_url`: expected an http(s) URL",
            ),
            (
                "retention shorter than a day",
                "database = \"t.db\"\nretention = \"12h\"\n",
                2,
                13,
                "`retention` must be at least 1 day (\"1d\"), found \"12h\"",
            ),
            (
                "bad retention",
                "retention = \"forever\"\n",
                1,
                13,
                "`retention`: bad duration",
            ),
            (
                "bad mail max age",
                "[mail]\nmax_age = \"forever\"\n",
                2,
                11,
                "`mail.max_age`: bad duration",
            ),
            (
                "feed interval beyond any calendar",
                "[[feeds]]\nid = \"a\"\nurl = \"https://a.example/\"\ninterval = \"1000000y\"\n",
                4,
                12,
                "at most 3660d",
            ),
            (
                "poll interval beyond any calendar",
                "[poll]\ninterval = \"100000000d\"\n",
                2,
                12,
                "`poll.interval`: \"100000000d\" is longer than the limit: at most 3660d",
            ),
            (
                "max backoff beyond any calendar",
                "[poll]\nmax_backoff = \"50000y\"\n",
                2,
                15,
                "at most 3660d",
            ),
            (
                "retention beyond any calendar",
                "retention = \"20000y\"\n",
                1,
                13,
                "at most 3660d",
            ),
            (
                "huge body cap",
                "[poll]\nmax_body_mib = 4000000000\n",
                2,
                16,
                "`poll.max_body_mib` must be at most 1024",
            ),
            (
                "a line break in mail.from (the mailer refuses it)",
                "[mail]\nfrom = \"Tidings <a@x.example>\\r\\nBcc: victim@x.example\"\n",
                2,
                8,
                "`mail.from`",
            ),
            (
                "zero mail concurrency",
                "[mail]\nconcurrency = 0\n",
                2,
                15,
                "`mail.concurrency` must be at least 1",
            ),
            (
                "bad daily time",
                "[digest]\ndaily_at = \"8am\"\n",
                2,
                12,
                "07:30",
            ),
            (
                "bad transport",
                "[mail]\ntransport = \"pigeon\"\n",
                2,
                13,
                "pigeon",
            ),
            (
                "smtp without table",
                "[mail]\ntransport = \"smtp\"\n",
                2,
                13,
                "[mail.smtp]",
            ),
            ("bad from", "[mail]\nfrom = \"nobody\"\n", 2, 8, "mail.from"),
            (
                "empty synonym",
                "[synonyms]\n\"green card\" = [\"LPR\", \" \"]\n",
                2,
                24,
                "empty synonym",
            ),
            (
                "bad admin address",
                "[service]\nadmin_listen = \"localhost\"\n",
                2,
                16,
                "`service.admin_listen`",
            ),
            (
                "bad shutdown timeout",
                "[service]\nshutdown_timeout = \"a while\"\n",
                2,
                20,
                "`service.shutdown_timeout`: bad duration",
            ),
            ("syntax error", "[[feeds]\n", 1, 9, "expected `]`"),
            ("wrong type", "[poll]\nconcurrency = \"many\"\n", 2, 15, ""),
            (
                "switch that is not a boolean",
                "[poll]\nallow_private_networks = \"yes\"\n",
                2,
                26,
                "bool",
            ),
        ];
        for (name, text, line, column, words) in cases {
            let found = problems(text);
            let p = &found[0];
            assert_eq!((p.line, p.column), (*line, *column), "{name}: {p:?}");
            assert!(
                p.message.contains(words),
                "{name}: {:?} lacks {words:?}",
                p.message
            );
        }
    }

    #[test]
    fn all_problems_are_reported_at_once() {
        let text = "[[feeds]]\nid = \"Bad Id\"\nurl = \"nope\"\ninterval = \"x\"\n";
        assert_eq!(problems(text).len(), 3);
    }

    #[test]
    fn structural_problems_hide_no_others_and_all_come_in_file_order() {
        // (name, config text, every problem as "line:column: words of its message")
        let cases: &[(&str, &str, &[&str])] = &[
            (
                "unknown key, duplicate id, bad url",
                "bogus = 1\n[[feeds]]\nid = \"a\"\nurl = \"https://a.example/\"\n\
                 [[feeds]]\nid = \"a\"\nurl = \"nope\"\n",
                &[
                    "1:1: unknown field `bogus`",
                    "6:6: duplicate feed id \"a\" (first used on line 3)",
                    "7:7: feed \"a\": bad url",
                ],
            ),
            (
                "two unknown keys and a wrong type in one table, out of alphabetical order",
                "[poll]\nzzz = 1\nconcurrency = \"many\"\naaa = 2\n",
                &[
                    "2:1: unknown field `zzz`",
                    "3:15: invalid type: string \"many\", expected u32",
                    "4:1: unknown field `aaa`",
                ],
            ),
            (
                "problems in several tables",
                "[digest]\ntimezone = \"Mars/Base\"\n[mail]\ntransport = 3\n[web]\nlisten = \"x\"\nextra = true\n",
                &[
                    "2:12: `digest.timezone`: unknown time zone",
                    "4:13: invalid type: integer `3`, expected a string",
                    "6:10: `web.listen`",
                    "7:1: unknown field `extra`",
                ],
            ),
            (
                "a feed without an id still has its other problems found",
                "[[feeds]]\nurl = \"nope\"\ninterval = \"x\"\ncolour = \"red\"\n",
                &[
                    "1:1: missing field `id`",
                    "2:7: bad url",
                    "3:12: bad duration",
                    "4:1: unknown field `colour`",
                ],
            ),
            (
                "a wrong element in a list",
                "[[feeds]]\nid = \"a\"\nurl = \"https://a.example/\"\ntags = [\"x\", 3, \"Bad Tag\"]\n",
                &[
                    "4:14: invalid type: integer `3`, expected a string",
                    "4:17: tag \"bad tag\" must be",
                ],
            ),
            (
                "required values of the wrong type are not also missing",
                "[mail]\ntransport = \"smtp\"\n[mail.smtp]\nhost = 1\n\
                 [[feeds]]\nid = 5\nurl = \"https://a.example/\"\n\
                 [[feeds]]\nid = \"b\"\nurl = 7\n[[feeds]]\nurl = \"https://c.example/\"\n",
                &[
                    "4:8: invalid type: integer `1`, expected a string",
                    "6:6: invalid type: integer `5`, expected a string",
                    "10:7: invalid type: integer `7`, expected a string",
                    "11:1: missing field `id`",
                ],
            ),
            (
                "the same in inline tables",
                "feeds = [{ id = 5, url = \"https://a.example/\" }, { url = \"https://c.example/\" }]\n",
                &[
                    "1:17: invalid type: integer `5`, expected a string",
                    "1:50: missing field `id`",
                ],
            ),
            (
                "smtp without a host",
                "[mail]\ntransport = \"smtp\"\n[mail.smtp]\nport = \"25\"\n",
                &[
                    "3:1: missing field `host`",
                    "4:8: invalid type: string \"25\", expected u16",
                ],
            ),
            ("several syntax errors", "a = \n[x\n", &["1:5: ", "2:3: "]),
        ];
        for (name, text, expected) in cases {
            let found: Vec<String> = problems(text)
                .iter()
                .map(|p| format!("{}:{}: {}", p.line, p.column, p.message))
                .collect();
            assert_eq!(found.len(), expected.len(), "{name}: {found:#?}");
            for (f, e) in found.iter().zip(expected.iter()) {
                let (at, words) = e.split_once(": ").unwrap();
                assert!(
                    f.starts_with(&format!("{at}: ")) && f.contains(words),
                    "{name}: {f:?} is not {e:?}; all: {found:#?}"
                );
            }
        }
    }

    #[test]
    fn structural_problems_stop_at_a_hundred_when_there_are_more() {
        // (unknown keys in the file, problems listed, whether the last says it stopped)
        let cases = [
            (99, 99, false),
            (100, 100, false),
            (101, 101, true),
            (150, 101, true),
        ];
        for (keys, listed, stopped) in cases {
            let text: String = (0..keys).map(|i| format!("bogus{i} = 1\n")).collect();
            let found = problems(&text);
            assert_eq!(found.len(), listed, "{keys} keys");
            let last = found.last().unwrap();
            assert_eq!(
                last.message.starts_with("stopped after 100 problems"),
                stopped,
                "{keys} keys: {last:?}"
            );
        }
    }

    #[test]
    fn tables_of_the_wrong_type_are_named_as_the_file_names_them() {
        // (name, config text, the one problem as "line:column: message")
        let cases: &[(&str, &str, &str)] = &[
            (
                "a number for a table",
                "poll = 3\n",
                "1:8: invalid type: integer `3`, expected a `[poll]` table",
            ),
            (
                "an empty array",
                "web = []\n",
                "1:7: invalid type: sequence, expected a `[web]` table",
            ),
            (
                "an array is not read as the fields in order",
                "web = [\"https://x.org/\"]\n",
                "1:7: invalid type: sequence, expected a `[web]` table",
            ),
            (
                "a feed that is a number",
                "feeds = [1]\n",
                "1:10: invalid type: integer `1`, expected a `[[feeds]]` table (with `id` and `url`)",
            ),
            (
                "a feed that is an array",
                "feeds = [[\"a\", \"https://a.example/\"]]\n",
                "1:10: invalid type: sequence, expected a `[[feeds]]` table",
            ),
            (
                "feeds as one table",
                "[feeds]\nid = \"a\"\n",
                "1:1: invalid type: table, expected `[[feeds]]` tables (one per feed)",
            ),
            (
                "feeds as a dotted key",
                "feeds.id = \"a\"\n",
                "1:1: invalid type: table, expected `[[feeds]]` tables (one per feed)",
            ),
            (
                "feeds as a string",
                "feeds = \"a\"\n",
                "1:9: invalid type: string \"a\", expected `[[feeds]]` tables (one per feed)",
            ),
            (
                "an smtp table that is an array",
                "[mail]\nsmtp = []\n",
                "2:8: invalid type: sequence, expected a `[mail.smtp]` table",
            ),
            (
                "digest",
                "digest = \"daily\"\n",
                "1:10: invalid type: string \"daily\", expected a `[digest]` table",
            ),
            (
                "service",
                "service = true\n",
                "1:11: invalid type: boolean `true`, expected a `[service]` table",
            ),
            (
                "synonyms",
                "synonyms = 3\n",
                "1:12: invalid type: integer `3`, expected a `[synonyms]` table",
            ),
        ];
        for (name, text, expected) in cases {
            let found: Vec<String> = problems(text)
                .iter()
                .map(|p| format!("{}:{}: {}", p.line, p.column, p.message))
                .collect();
            assert_eq!(found.len(), 1, "{name}: {found:#?}");
            assert!(found[0].starts_with(expected), "{name}: {found:#?}");
        }
    }

    #[test]
    fn the_line_index_gives_lines_and_columns_in_characters() {
        let text = "ab\ncd\r\n\né = \"ü\"\r\nlast";
        let lines = Lines::new(text);
        let at = |s: &str| text.find(s).unwrap();
        // (name, byte offset, line, column)
        let cases: &[(&str, usize, usize, usize)] = &[
            ("start of the text", 0, 1, 1),
            ("end of a line, at its \\n", 2, 1, 3),
            ("start of the second line", 3, 2, 1),
            (
                "a \\r of a CRLF line end counts as a character",
                at("\r"),
                2,
                3,
            ),
            ("the \\n after it", at("\r") + 1, 2, 4),
            ("an empty line", at("\n\n") + 1, 3, 1),
            ("the line after an empty one", at("é"), 4, 1),
            ("after a two-byte character", at("é") + 2, 4, 2),
            ("inside a string, after non-ASCII", at("ü"), 4, 6),
            ("after it", at("ü") + 2, 4, 7),
            ("the last line, without a line end", at("last"), 5, 1),
            ("the end of the text", text.len(), 5, 5),
            ("past the end", text.len() + 10, 5, 5),
            ("inside a character: its start", at("é") + 1, 4, 1),
        ];
        for (name, offset, line, column) in cases {
            assert_eq!(lines.position(*offset), (*line, *column), "{name}");
            assert_eq!(lines.line(*offset), *line, "{name}");
        }
        assert_eq!(Lines::new("").position(0), (1, 1), "an empty text");
    }

    #[test]
    fn error_display_is_path_line_column() {
        let err = parse("bogus = 1\n").unwrap_err();
        let shown = err.to_string();
        assert!(
            shown.starts_with("/etc/tidings/config.toml:1:1: "),
            "{shown}"
        );
    }

    #[test]
    fn changed_settings_are_named_by_section() {
        let base = "[[feeds]]\nid = \"a\"\nurl = \"https://a.example/\"\n";
        let old = parse(base).unwrap();
        // (name, config text, sections named)
        let cases: &[(&str, &str, &[&str])] = &[
            ("same file", "", &[]),
            (
                "a feed only",
                "[[feeds]]\nid = \"b\"\nurl = \"https://b.example/\"\n",
                &[],
            ),
            ("poll", "[poll]\ntimeout = \"9s\"\n", &["poll"]),
            (
                "mail and web",
                "[mail]\nmax_age = \"2d\"\n[web]\nbase_url = \"https://x.example/\"\n",
                &["mail", "web"],
            ),
            (
                "top level",
                "retention = \"30d\"\n[synonyms]\nx = [\"y\"]\n",
                &["retention", "synonyms"],
            ),
            ("service", "[service]\nwatch_config = false\n", &["service"]),
            (
                "digest",
                "[digest]\ntimezone = \"Europe/Paris\"\n",
                &["digest"],
            ),
        ];
        for (name, extra, expected) in cases {
            let new = parse(&format!("{extra}{base}")).unwrap();
            assert_eq!(new.changed_settings(&old), *expected, "{name}");
        }
    }

    #[test]
    fn new_searches_may_name_only_feeds_and_tags_that_exist() {
        let config = parse(
            "[[feeds]]\nid = \"uscis-news\"\nurl = \"https://a.example/\"\ntags = [\"US\", \"official\"]\n\
             [[feeds]]\nid = \"govuk\"\nurl = \"https://b.example/\"\ntags = [\"official\"]\n",
        )
        .unwrap();
        let bare = parse("[[feeds]]\nid = \"a\"\nurl = \"https://a.example/\"\n").unwrap();
        let empty = parse("").unwrap();
        // (name, config, query, Ok or the message)
        #[rustfmt::skip]
        let cases: &[(&str, &Config, &str, Result<(), &str>)] = &[
            ("no scopes", &empty, "asylum", Ok(())),
            ("known, any case", &config, "feed:USCIS-News tag:us -tag:Official", Ok(())),
            ("unknown feed", &config, "feed:nope", Err("unknown feed \"nope\" (feeds: govuk, uscis-news)")),
            ("unknown tag", &config, "asylum tag:nosuchtag", Err("unknown tag \"nosuchtag\" (tags: official, us)")),
            ("both, several", &config, "(feed:x OR feed:y) -tag:z",
                Err("unknown feeds \"x\", \"y\" (feeds: govuk, uscis-news); unknown tag \"z\" (tags: official, us)")),
            ("no tags at all", &bare, "tag:official", Err("unknown tag \"official\" (no feed has tags)")),
            ("no feeds at all", &empty, "feed:a", Err("unknown feed \"a\" (no feeds are configured)")),
        ];
        for (name, config, query, expected) in cases {
            let query = Query::parse(query).unwrap();
            assert_eq!(
                config.check_scopes(&query),
                expected.map_err(str::to_string),
                "{name}"
            );
        }
    }

    #[test]
    fn unknown_names_are_listed_with_the_ten_known_ones_closest_to_them() {
        let mut text = String::new();
        let ids = ["uscis-news", "uscis-alerts", "ice", "cbp"]
            .map(String::from)
            .into_iter()
            .chain((0..26).map(|i| format!("feed-{i:02}")));
        for (i, id) in ids.enumerate() {
            text.push_str(&format!(
                "[[feeds]]\nid = \"{id}\"\nurl = \"https://a.example/{i}\"\ntags = [\"t{}\"]\n",
                i % 20
            ));
        }
        let config = parse(&text).unwrap();
        // (name, query, which names are listed, the message)
        #[rustfmt::skip]
        let cases: &[(&str, &str, Listing, &str)] = &[
            ("a part of a name, then a few edits away, then the others", "feed:uscis tag:t1x",
                Listing::Closest,
                "unknown feed \"uscis\" (feeds: uscis-news, uscis-alerts, cbp, feed-00, feed-01, feed-02, \
                 feed-03, feed-04, feed-05, feed-06 and 20 more (`tidings feeds status` lists them)); \
                 unknown tag \"t1x\" (tags: t1, t10, t11, t12, t13, t14, t15, t16, t17, t18 \
                 and 10 more (see each feed's `tags` in the config))"),
            ("a typo", "feed:uscsi-news", Listing::Closest,
                "unknown feed \"uscsi-news\" (feeds: uscis-news, "),
            ("the closest to any of the first three", "feed:x feed:y feed:icee feed:cbp-news",
                Listing::Closest, "unknown feeds \"x\", \"y\", \"icee\", \"cbp-news\" (feeds: ice, "),
            ("the first in order, compared with nothing", "feed:uscsi-news", Listing::First,
                "unknown feed \"uscsi-news\" (feeds: cbp, feed-00, feed-01, feed-02, feed-03, feed-04, \
                 feed-05, feed-06, feed-07, feed-08 and 20 more (`tidings feeds status` lists them))"),
        ];
        for (name, query, listing, expected) in cases {
            let message = config
                .check_scopes_listing(&Query::parse(query).unwrap(), *listing)
                .unwrap_err();
            assert!(message.starts_with(expected), "{name}: {message}");
        }
        // However long the query, the message is not much longer than the names it repeats.
        let long: Vec<String> = (0..50).map(|i| format!("feed:unknown-{i}")).collect();
        let message = config
            .check_scopes(&Query::parse(&long.join(" OR ")).unwrap())
            .unwrap_err();
        assert!(message.len() < long.join(" ").len() + 300, "{message}");
    }

    #[test]
    fn smtp_settings() {
        let config =
            parse("[mail]\ntransport = \"smtp\"\nfrom = \"a@b.org\"\n[mail.smtp]\nhost = \"mx.example\"\ntls = \"tls\"\n")
                .unwrap();
        match config.mail.transport {
            MailTransport::Smtp(s) => {
                assert_eq!(
                    (s.host.as_str(), s.port, s.tls),
                    ("mx.example", 465, TlsMode::Tls)
                )
            }
            other => panic!("{other:?}"),
        }
    }
}
