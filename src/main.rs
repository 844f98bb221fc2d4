//! The `tidings` command: parses arguments, loads the config, calls into the library.
#![forbid(unsafe_code)]

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use chrono::Utc;
use clap::{Parser, Subcommand};
use futures_util::StreamExt as _;
use tidings::config::{Config, MailTransport};
use tidings::digest::{Schedule, excerpt, parse_time_zone};
use tidings::fetch::{FetchError, FetchOutcome, Fetcher, Validators};
use tidings::matcher::{Document, Field, Query};
use tidings::opml::{self, Entry, Outcome};
use tidings::output::{self, count};
use tidings::parse::body_text;
use tidings::parse::{ParseError, discover_feeds, parse_feed};
use tidings::pipeline::LINK_SECRET_SETTING;
use tidings::pipeline::{
    FeedOutcome, PollObserver, before, dangling_searches, fetch_articles, poll_feeds_observed,
    prune_store,
};
use tidings::progress::{LogWriter, Progress};
use tidings::store::{ImportStep, OutboxStatus, Store};
use tidings::token::Signer;
use tidings::{App, mail, scheduler, send_digests};

/// A line on standard output for everything the commands print: text from feeds, mail
/// servers and subscribers passes through [`printable`](tidings::output::printable), so
/// it cannot drive the operator's terminal, and a closed reader (`| head`) ends the
/// command quietly ([`output::say`]).
macro_rules! say {
    () => {
        output::say("")
    };
    ($($arg:tt)*) => {
        output::say(&format!($($arg)*))
    };
}

/// [`say!`] on standard error, where a line nobody reads is dropped ([`output::esay`]).
macro_rules! esay {
    ($($arg:tt)*) => {
        output::esay(&format!($($arg)*))
    };
}
use tracing_subscriber::EnvFilter;

/// Feed notifier: polls RSS/Atom/JSON feeds, matches keyword subscriptions, emails digests.
#[derive(Parser)]
#[command(version, about, after_help = EXIT_CODES)]
struct Cli {
    /// The configuration file; relative paths inside it resolve against its folder.
    #[arg(
        long,
        short,
        global = true,
        default_value = "config.toml",
        env = "TIDINGS_CONFIG"
    )]
    config: PathBuf,
    /// Log lines as readable text, or as one JSON object per line for log collectors.
    /// Levels come from TIDINGS_LOG or RUST_LOG (e.g. "debug", "info,tidings=debug").
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "TIDINGS_LOG_FORMAT")]
    log_format: LogFormat,
    /// Log INFO lines (-v), or Tidings' DEBUG lines too (-vv). By default `run` logs INFO
    /// and the other commands warnings only; TIDINGS_LOG or RUST_LOG, when set, decide.
    #[arg(long, short, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

/// What the exit codes mean, for `--help` (README: "Commands").
const EXIT_CODES: &str = "\
Exit codes:
  0  the command did its work (`poll`: feeds that failed on their side are counted in its
     summary and tried again later)
  1  `health`: the daemon is not healthy, or did not answer
  2  the command failed, saying why on standard error; `poll` and `digest` also when the
     database would not take some of their work (a full disk, a read-only file): what it
     took is kept, and the next run does the rest";

/// The query language in short, for `--help` (README: "Query language"; the grammar is
/// in `src/matcher.rs`).
const QUERY_SYNTAX: &str = "\
Query syntax (README: \"Query language\"):
  asylum                      the word, in any case, with or without accents
  asylum parole               both words, anywhere
  \"green card\"                the words in that order
  H1B OR TPS                  either (OR in capitals)
  \"green card\" -lottery       the phrase but not the word (also NOT lottery); a
                              query needs at least one term that is not excluded
  (TPS OR parole) Venezuela   grouping
  deport*                     words starting with deport
  title:USCIS                 the term in the title
  feed:uscis-news             items of that feed (its id in config.toml)
  tag:official                items of feeds with that tag
Whole words only (ICE does not match police); H1B, H-1B and h1b are the same term.";

/// What `migrate-db` does, for `--help` (README: "Moving to PostgreSQL").
const MIGRATE_DB_HELP: &str = "\
Copied, every id kept: feeds with their poll state (claims cleared), items, tombstones of
pruned items, subscribers, their searches, matches (pending and already mailed), the
outbox (pending, sent and failed, Message-IDs kept), sign-ups, used unsubscribe links,
the subscriptions generation, the feed list, the mail pacer and settings. New ids come
after every id SQLite handed out (a removed search's id is never given again). Not
copied: instance heartbeats and fetch slots. All in one transaction: on any error the
PostgreSQL database is left as it was. The SQLite file is never changed.

The link-signing secret (--secret-file) is stored in the database, so unsubscribe and
manage links in mail already sent keep working. Without a secret file (a deployment
that set TIDINGS_SECRET instead), keep TIDINGS_SECRET on every instance; otherwise the
first instance makes a new secret and those links stop working.

Moving (the daemon may run while the copy is made, but mail queued and items polled
after it stay behind in SQLite: stop it before switching):
  1. stop `tidings run`
  2. TIDINGS_DATABASE_PASSWORD=... tidings migrate-db --from data/tidings.db \\
         --to postgres://tidings@db.internal:5432/tidings
  3. in config.toml: database = \"postgres://tidings@db.internal:5432/tidings\"
  4. start `tidings run` (with TIDINGS_DATABASE_PASSWORD), on as many machines as needed";

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon: poll feeds and send digests on schedule until Ctrl-C or SIGTERM.
    Run,
    /// Poll every active feed once (including those not yet due), then exit.
    ///
    /// Exit code 0 when every poll was recorded, even if some feeds failed on their side
    /// (the summary counts them; they are tried again later). Exit code 2 when the
    /// database would not take some polls or articles (a full disk, a read-only file):
    /// what it took is kept, and the next poll fetches the rest.
    Poll,
    /// Queue and send the digests that are due, then exit.
    ///
    /// Exit code 0 when every due digest was queued (mail the server defers is retried
    /// later). Exit code 2 when the database would not take some digests (a full disk, a
    /// read-only file), or some could not be made (a subscriber's stored row this build
    /// cannot read, named in the log): the others are queued and sent, and these stay due.
    Digest {
        /// Send every subscriber their pending matches now, whatever their schedule.
        #[arg(long)]
        all: bool,
    },
    /// Check the configuration file and print a summary; exit code 2 on errors.
    CheckConfig,
    /// Ask the running daemon's admin listener for /healthz; exit code 0 when healthy,
    /// 1 when not (for container health checks).
    Health,
    /// Preview what QUERY would have matched among stored items, with the matched words
    /// highlighted.
    #[command(after_long_help = QUERY_SYNTAX)]
    Match {
        /// The search, as subscribers write it, e.g. 'asylum OR "H-1B"' (--help: the syntax).
        #[arg(allow_hyphen_values = true)]
        query: String,
        /// How far back to look, with a unit: 7d, 12h, 30m.
        #[arg(long, default_value = "7d", value_name = "DURATION", value_parser = parse_since)]
        since: Duration,
        /// Show at most this many items (all are counted).
        #[arg(long, default_value_t = 20)]
        limit: usize,
        /// Also find the query's terms in other languages, as a search that crosses
        /// languages does (languages/synonyms.toml): `asylum` finds "asilo" in Spanish.
        #[arg(long)]
        cross_languages: bool,
    },
    /// Manage subscribers and their keyword queries.
    #[command(subcommand)]
    Subscriber(SubscriberCommand),
    /// Show each feed's health, find feeds, import and export them as OPML.
    #[command(subcommand)]
    Feeds(FeedsCommand),
    /// Prune what is older than `retention` once, then exit: items no digest still needs
    /// (a marker stays so they never come back as new) and sent or failed mail.
    Prune,
    /// Copy the database to PATH, consistently, even while the daemon is writing to it.
    Backup {
        /// Where the copy goes; written under a temporary name, then renamed.
        #[arg(value_name = "PATH")]
        path: PathBuf,
        /// Replace PATH if it exists.
        #[arg(long)]
        force: bool,
    },
    /// Copy a SQLite database into an empty PostgreSQL database, to move a deployment
    /// there (--help: what is copied, and the steps). Needs no config file.
    #[command(after_long_help = MIGRATE_DB_HELP)]
    MigrateDb {
        /// The SQLite database (the config's `database`), e.g. data/tidings.db. Read
        /// only: a snapshot is copied (into TMPDIR, then removed), so the daemon may go on
        /// running meanwhile, and an older schema is brought up to date in the snapshot.
        #[arg(long, value_name = "PATH")]
        from: PathBuf,
        /// The PostgreSQL database, postgres://user@host:port/name, without the password:
        /// it comes from TIDINGS_DATABASE_PASSWORD. Its tables are created if needed; it
        /// must hold no data yet.
        #[arg(long, value_name = "URL")]
        to: String,
        /// The link-signing secret of the SQLite deployment ([web] secret_file), stored
        /// in the database for every instance to sign links with. Default: tidings.secret
        /// beside --from, if there is one.
        #[arg(long, value_name = "PATH")]
        secret_file: Option<PathBuf>,
    },
    /// List mail that is pending or failed (add --all for sent mail too), or requeue one.
    Outbox {
        /// What to do; without one, list the outbox.
        #[command(subcommand)]
        command: Option<OutboxCommand>,
        /// Include mail already sent.
        #[arg(long)]
        all: bool,
    },
}

#[derive(Subcommand)]
enum OutboxCommand {
    /// Put a failed (or deferred) message back in the queue, to be sent on the next round.
    Retry {
        /// The message's number, the ID column of `tidings outbox`.
        id: tidings::store::OutboxId,
    },
}

#[derive(Subcommand)]
enum SubscriberCommand {
    /// Subscribe EMAIL to a query (adding to any queries they already have).
    #[command(after_long_help = QUERY_SYNTAX)]
    Add {
        /// The subscriber's email address.
        email: String,
        /// What to look for, e.g. 'asylum OR "H-1B"', '"green card" -lottery'
        /// (--help: the syntax).
        #[arg(long, short, allow_hyphen_values = true, value_parser = parse_query_value)]
        query: String,
        /// When digests go out: "immediate" (after each poll that finds something),
        /// "hourly", "daily [HH:MM]" or "weekly [DAY] [HH:MM]", e.g. "weekly fri 17:00" or
        /// "every tuesday". A missing time is [digest].daily_at; a missing day, Monday.
        /// Default: the subscriber's current schedule, or immediate for a new subscriber.
        #[arg(long, short)]
        frequency: Option<String>,
        /// The subscriber's IANA time zone, e.g. Europe/London. Default: their current
        /// one, or [digest].timezone for a new subscriber.
        #[arg(long)]
        tz: Option<String>,
    },
    /// List subscribers, their schedule and queries.
    List,
    /// Remove a subscriber and all their queries.
    Remove {
        /// The subscriber's email address.
        email: String,
    },
    /// Send digests again to a subscriber paused after repeated bounces.
    Resume {
        /// The subscriber's email address.
        email: String,
    },
    /// Choose what EMAIL hears when another outlet carries a story they already got:
    /// "never"; "next" (the default: listed as more coverage in their next digest, which
    /// it does not send by itself); "always" (alerted as news).
    NewOutlets {
        /// The subscriber's email address.
        email: String,
        /// never, next or always.
        choice: String,
    },
    /// Destinations beside email: webhooks, ntfy, Telegram, Matrix, Slack, Discord,
    /// Mattermost. Each gets the subscriber's digests on their schedule.
    #[command(subcommand)]
    Channel(ChannelCommand),
    /// Whether one search also finds its words in other languages: with `on`, "asylum"
    /// finds "asilo" in Spanish items and "asile" in French ones (languages/synonyms.toml
    /// and `[languages] synonyms`).
    CrossLanguages {
        /// The subscriber's email address.
        email: String,
        /// The search, as listed by `tidings subscriber list`.
        #[arg(long, short, allow_hyphen_values = true)]
        query: String,
        /// on or off.
        choice: String,
    },
    /// Choose where one search goes: email and/or destinations, by name.
    Route {
        /// The subscriber's email address.
        email: String,
        /// The search, as listed by `tidings subscriber list`.
        #[arg(long, short, allow_hyphen_values = true)]
        query: String,
        /// Where it goes: `email` and destination names, comma-separated
        /// (e.g. "email,team-slack").
        #[arg(long, value_delimiter = ',', required = true)]
        to: Vec<String>,
    },
}

// Parsed once per run: the size of a variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum ChannelCommand {
    /// Add a destination. It is active at once (the admin vouches for it); a webhook's
    /// signing secret is printed once. Secrets come from environment variables, never the
    /// command line.
    #[command(after_long_help = CHANNEL_EXAMPLES)]
    Add {
        /// The subscriber's email address.
        email: String,
        /// webhook, ntfy, telegram, matrix, slack, discord or mattermost.
        kind: String,
        /// A name for it, unique for this subscriber (e.g. "phone", "team-slack").
        name: String,
        /// Webhook URL, or ntfy topic URL (https://ntfy.sh/TOPIC).
        #[arg(long)]
        url: Option<String>,
        /// The environment variable holding a secret URL: a Slack, Discord or Mattermost
        /// incoming webhook.
        #[arg(long, value_name = "VAR")]
        url_env: Option<String>,
        /// The environment variable holding the token: Telegram bot token, Matrix access
        /// token, ntfy access token (optional for ntfy).
        #[arg(long, value_name = "VAR")]
        token_env: Option<String>,
        /// Telegram chat id (a number, or @channelname).
        #[arg(long)]
        chat_id: Option<String>,
        /// Matrix homeserver URL.
        #[arg(long)]
        homeserver: Option<String>,
        /// Matrix room id (!abc:example.org).
        #[arg(long)]
        room: Option<String>,
        /// Another Telegram Bot API server.
        #[arg(long)]
        api: Option<String>,
        /// Only these searches go there (repeat the flag); default: every search.
        #[arg(long = "search", allow_hyphen_values = true, value_name = "QUERY")]
        searches: Vec<String>,
    },
    /// List destinations (of one subscriber, or all) with their state and last error.
    List {
        /// Only this subscriber's.
        email: Option<String>,
    },
    /// Remove a destination; what waited to go there fails.
    Remove { email: String, name: String },
    /// Stop sending to a destination; its digests wait until it is resumed.
    Pause { email: String, name: String },
    /// Send to a paused destination again (its failures forgotten), with what waited.
    Resume { email: String, name: String },
    /// Send a test message to a destination now and say what its service answered.
    Test { email: String, name: String },
}

const CHANNEL_EXAMPLES: &str = "\
Examples:
  tidings subscriber channel add ana@example.org webhook crm --url https://crm.example.org/hooks/tidings
  tidings subscriber channel add ana@example.org ntfy phone --url https://ntfy.sh/ana-alerts
  TG_TOKEN=123:abc tidings subscriber channel add ana@example.org telegram tg --chat-id 4242 --token-env TG_TOKEN
  MX_TOKEN=syt_... tidings subscriber channel add ana@example.org matrix room --homeserver https://matrix.org --room '!abc:matrix.org' --token-env MX_TOKEN
  SLACK_URL=https://hooks.slack.com/services/T/B/X tidings subscriber channel add ana@example.org slack team --url-env SLACK_URL --search asylum";

#[derive(Subcommand)]
enum FeedsCommand {
    /// One line per feed: last result, error, failures, next poll, items stored,
    /// and whether it moved or is gone.
    Status {
        /// Print JSON (one array of objects) instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Fetch URL and print the feeds it advertises (or confirm it is a feed itself).
    Discover {
        /// A web page or feed, e.g. https://www.uscis.gov (without a scheme, https:// is
        /// tried, and http:// suggested if that cannot connect).
        url: String,
    },
    /// Add the feeds of an OPML file (another reader's export) to the config file as
    /// [[feeds]] tables, leaving its comments and layout as they are. Folders become tags;
    /// feeds already configured, repeated or with a bad URL are skipped and reported.
    Import {
        /// The OPML file.
        file: PathBuf,
        /// Print what would be added; change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Fetch each new feed first and leave out those that fail (with the reason).
        #[arg(long)]
        check: bool,
    },
    /// Write the configured feeds as OPML 2.0, in folders named after their first tag.
    Export {
        /// Write to FILE instead of standard output.
        #[arg(long, short, value_name = "FILE")]
        output: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse_from(query_after_double_dash(std::env::args_os())) {
        Ok(cli) => cli,
        Err(e) => return usage(&e),
    };
    let failure = failure_code(&cli.command);
    init_logging(cli.log_format, default_log_level(&cli.command, cli.verbose));
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            esay!("error: starting the async runtime: {e}");
            return ExitCode::from(failure);
        }
    };
    let result = runtime.block_on(execute(cli));
    // A database write still in progress gets a moment; nothing else is waited for.
    runtime.shutdown_timeout(Duration::from_secs(1));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            esay!("error: {e:#}");
            ExitCode::from(failure)
        }
    }
}

/// Prints clap's help, version or usage error (coloured on a terminal, as clap does)
/// and says how the command ends: 0 after help or the version, 2 after a usage error,
/// and help or a version that cannot be written ends like any other output that
/// cannot ([`output::exit_unwritable`]).
fn usage(e: &clap::Error) -> ExitCode {
    use std::io::Write as _;
    let printed = e.print().and_then(|()| {
        if e.use_stderr() {
            std::io::stderr().flush()
        } else {
            std::io::stdout().flush()
        }
    });
    match printed {
        Err(written) if !e.use_stderr() => output::exit_unwritable(&written),
        // A usage error nobody can read still fails.
        _ => ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(2)),
    }
}

/// How long a command that ends waits for the database to take what it refused earlier.
const EXIT_WAIT: std::time::Duration = std::time::Duration::from_secs(15);

/// The command's failures, each said, as one error; `Ok` when there are none.
fn failed_if_any<const N: usize>(failures: [Option<anyhow::Error>; N]) -> Result<()> {
    let said: Vec<String> = failures
        .into_iter()
        .flatten()
        .map(|e| format!("{e:#}"))
        .collect();
    match said.is_empty() {
        true => Ok(()),
        false => Err(anyhow::anyhow!(said.join("; "))),
    }
}

/// The exit code of a command that fails: 2, but 1 for `health`, whatever went wrong
/// (no config, nothing listening): container health checks reserve 2.
fn failure_code(command: &Command) -> u8 {
    match command {
        Command::Health => 1,
        _ => 2,
    }
}

/// The log filter unless TIDINGS_LOG or RUST_LOG says otherwise. The daemon logs what
/// it does; a one-shot prints its own result, so its logs show warnings only unless asked
/// for more (`-v` info, `-vv` debug). `poll` reports each feed itself (a progress bar or
/// one line each): the per-feed log lines would say it again, so they are off.
fn default_log_level(command: &Command, verbose: u8) -> String {
    match (verbose, command) {
        (0, Command::Run) | (1, _) => "info".to_string(),
        (0, Command::Poll) => format!("warn,{}=off", tidings::pipeline::FEED_LOG),
        (0, _) => "warn".to_string(),
        _ => "info,tidings=debug".to_string(),
    }
}

/// Logs go to stderr (above a progress bar, if one is shown), as text (coloured on a terminal) or JSON lines. The level filter
/// is TIDINGS_LOG, else RUST_LOG, else `level`.
fn init_logging(format: LogFormat, level: String) {
    let filter = EnvFilter::try_from_env("TIDINGS_LOG")
        .or_else(|_| EnvFilter::try_from_default_env())
        .unwrap_or_else(|_| EnvFilter::new(format!("{level},tokio_cron_scheduler=warn")));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(LogWriter);
    match format {
        LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .init(),
    }
}

async fn execute(cli: Cli) -> Result<()> {
    if let Command::MigrateDb {
        from,
        to,
        secret_file,
    } = &cli.command
    {
        return migrate_db(from, to, secret_file.as_deref()).await;
    }
    let config = Config::load(&cli.config)?;
    match cli.command {
        Command::CheckConfig => check_config(&config).await,
        Command::Health => {
            let addr = config
                .service
                .admin_listen
                .context("[service].admin_listen is off: nothing to ask")?;
            let health = tidings::admin::probe(addr).await?;
            output::say_raw(&output::printable(&health.answer));
            if !health.healthy {
                std::process::exit(1);
            }
            Ok(())
        }
        Command::Run => {
            let app = App::open(config).await?;
            scheduler::run(app, scheduler::shutdown_signal()).await
        }
        Command::Poll => {
            let app = App::open(config).await?;
            stop_on_signal(&app);
            let progress = PollProgress::default();
            let s = poll_feeds_observed(&app, app.store.now(), false, &progress).await?;
            progress.finish();
            say!(
                "polled {}: {} ok, {} not modified, {} failed; {}, {}, {}",
                count(s.feeds as usize, "feed"),
                s.updated,
                s.not_modified,
                s.failed,
                count(s.new_items, "new item"),
                count(s.updated_items, "updated item"),
                count(s.matches, "match")
            );
            if s.skipped > 0 {
                say!("stopped early: {} not polled", count(s.skipped, "feed"));
            }
            if s.held_elsewhere > 0 {
                say!(
                    "left {} alone: another poll holds {} (claims end by {} at the latest)",
                    count(s.held_elsewhere, "feed"),
                    if s.held_elsewhere == 1 { "it" } else { "them" },
                    s.held_until.map_or_else(|| "?".to_string(), utc)
                );
            }
            // Items of full-text feeds are matched once their article is in: read them now
            // (a failed fetch is tried again by a later `poll` or by `run`).
            let articles = match fetch_articles(&app, app.store.now()).await {
                Ok(a) => {
                    if a.articles > 0 {
                        say!(
                            "read {}: {} found, {} without a story, {} failed, {} to try \
                             again, {} not written; {}",
                            count(a.articles, "article"),
                            a.ok,
                            a.none,
                            a.failed,
                            a.retrying,
                            a.unrecorded,
                            count(a.matches, "match")
                        );
                    }
                    a.local_failure()
                }
                Err(e) => Some(e.context("reading the articles of full-text feeds")),
            };
            // A local failure (the database would not take a poll's or an article's
            // result) is the command's: exit non-zero. Feeds that failed on their side
            // are not.
            let kept = app.store.write_kept(EXIT_WAIT).await.err();
            failed_if_any([s.local_failure(), articles, kept])
        }
        Command::Digest { all } => {
            let app = App::open(config).await?;
            stop_on_signal(&app);
            let round = match send_digests(&app, app.store.now(), all).await {
                Ok(s) => {
                    say!(
                        "queued {}; sent {}, retrying {}, failed {}",
                        count(s.queued, "digest"),
                        s.delivery.sent,
                        s.delivery.retrying,
                        s.delivery.failed
                    );
                    s.local_failure()
                }
                Err(e) => Some(e),
            };
            // A digest the database would not take, or one that could not be made, is a
            // local failure: exit 2. So is a delivery's result it would not take, which
            // is lost with this process (and named), however the round ended.
            let kept = app.store.write_kept(EXIT_WAIT).await.err();
            failed_if_any([round, kept])
        }
        Command::Prune => {
            let store = open_store(&config).await?;
            let p = prune_store(&store, config.retention, store.now()).await?;
            if p.skipped {
                say!("not pruned: another instance is pruning this database now");
                return Ok(());
            }
            say!(
                "pruned {} first seen more than {} ago and {}",
                count(p.items, "item"),
                in_days(config.retention),
                count(p.outbox, "sent or failed message")
            );
            Ok(())
        }
        Command::Backup { path, force } => backup(&config, &path, force).await,
        Command::MigrateDb { .. } => unreachable!("migrate-db needs no config: run above"),
        Command::Match {
            query,
            since,
            limit,
            cross_languages,
        } => {
            let store = open_to_read(&config).await?;
            let search = Search {
                query: &query,
                since,
                limit,
                cross_languages,
            };
            preview_matches(&config, &store, search).await
        }
        Command::Outbox { command, all } => match command {
            Some(OutboxCommand::Retry { id }) => {
                let store = open_store(&config).await?;
                if !store.requeue(id, store.now()).await? {
                    bail!("no message {id} in the outbox");
                }
                say!("message {id} requeued; `tidings digest` or the daemon sends it");
                Ok(())
            }
            None => list_outbox(&open_to_read(&config).await?, all).await,
        },
        Command::Subscriber(command) => {
            let only_reads = matches!(
                command,
                SubscriberCommand::List | SubscriberCommand::Channel(ChannelCommand::List { .. })
            );
            let store = if only_reads {
                open_to_read(&config).await?
            } else {
                open_store(&config).await?
            };
            subscriber(&config, &store, command).await
        }
        Command::Feeds(FeedsCommand::Status { json }) => {
            feeds_status(&open_to_read(&config).await?, json).await
        }
        Command::Feeds(FeedsCommand::Discover { url }) => {
            discover(&config, &discover_url(&url)?).await
        }
        Command::Feeds(FeedsCommand::Import {
            file,
            dry_run,
            check,
        }) => import_opml(&config, &file, dry_run, check).await,
        Command::Feeds(FeedsCommand::Export { output }) => {
            let xml = opml::export(&config, Utc::now());
            match output {
                None => output::say_raw(&xml),
                Some(path) => {
                    std::fs::write(&path, xml)
                        .with_context(|| format!("writing {}", path.display()))?;
                    esay!(
                        "wrote {} to {}",
                        count(config.feeds.len(), "feed"),
                        path.display()
                    );
                }
            }
            Ok(())
        }
    }
}

/// `match --since`: a duration with its unit. A bare number gets examples rather than
/// humantime's "time unit needed, for example 7sec or 7ms".
fn parse_since(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if !text.is_empty() && text.chars().all(|c| c.is_ascii_digit()) {
        return Err(format!("a unit is needed, for example {text}d, 12h or 30m"));
    }
    humantime::parse_duration(text).map_err(|e| format!("{e} (for example 7d, 12h or 30m)"))
}

/// `subscriber add --query`: a search, which may start with `-` (`-q -lottery visa`),
/// but not with `--`: that is the next flag (`--query --help`, `-q --frequency daily`),
/// or `--query -- -visa`, taken by clap as the value `--`. Refused, with how to write
/// a search that starts with `-`.
fn parse_query_value(text: &str) -> Result<String, String> {
    if text.starts_with("--") {
        return Err(
            "a search cannot start with \"--\" (was a flag given right after --query?); \
             for a search that starts with \"-\", write --query='-lottery visa'"
                .to_string(),
        );
    }
    Ok(text.to_string())
}

/// The command line with `--query -- SEARCH` (or `-q -- SEARCH`) read as the user
/// meant it, `--query=SEARCH`: clap would take `--` itself as the search and then the
/// search as flags, with a tip to write what was written.
fn query_after_double_dash(
    args: impl IntoIterator<Item = std::ffi::OsString>,
) -> Vec<std::ffi::OsString> {
    let mut args = args.into_iter().peekable();
    let mut out = Vec::new();
    while let Some(arg) = args.next() {
        if arg == "--" {
            // Everything after a lone `--` is positional: leave it alone.
            out.push(arg);
            out.extend(args.by_ref());
            break;
        }
        if (arg == "--query" || arg == "-q") && args.peek().is_some_and(|next| next == "--") {
            args.next();
            if let Some(search) = args.next() {
                let mut joined = std::ffi::OsString::from("--query=");
                joined.push(search);
                out.push(joined);
                continue;
            }
            out.push(arg);
            out.push("--".into());
            continue;
        }
        out.push(arg);
    }
    out
}

/// One-shots stop like the daemon: on Ctrl-C/SIGTERM nothing new starts and work in
/// progress gets `[service].shutdown_timeout`; a second signal, or the deadline, drops it.
fn stop_on_signal(app: &App) {
    use tokio::signal::unix::{SignalKind, signal};
    let shutdown = app.shutdown.clone();
    let timeout = app.config.service.shutdown_timeout;
    // Installed now, and each stream read twice, so the second signal is a new one.
    let (Ok(mut int), Ok(mut term)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        return;
    };
    tokio::spawn(async move {
        tokio::select! {
            _ = int.recv() => {},
            _ = term.recv() => {},
        }
        esay!(
            "stopping: finishing work in progress (up to {}; again to stop now)",
            humantime::format_duration(timeout)
        );
        shutdown.draining.cancel();
        tokio::select! {
            _ = int.recv() => {},
            _ = term.recv() => {},
            _ = tokio::time::sleep(timeout) => {},
        }
        shutdown.abort.cancel();
        // Dropped fetches release their feeds at once; mail in flight keeps its lease
        // and is sent again after it, as after a crash.
        tokio::time::sleep(Duration::from_secs(1)).await;
        std::process::exit(130);
    });
}

/// `tidings poll` on a terminal: a bar over the feeds; elsewhere: one line per feed.
#[derive(Default)]
struct PollProgress {
    progress: std::sync::OnceLock<Progress>,
}

impl PollObserver for PollProgress {
    fn started(&self, feeds: usize) {
        let _ = self.progress.set(Progress::new(feeds as u64, "polling"));
    }

    fn finished(&self, feed: &str, outcome: Option<&FeedOutcome>) {
        let line = match outcome {
            Some(FeedOutcome::Updated {
                new_items,
                updated_items,
                matches,
            }) => format!(
                "{feed}: ok, {new_items} new, {updated_items} updated, {}",
                count(*matches, "match")
            ),
            Some(FeedOutcome::NotModified) => format!("{feed}: not modified"),
            Some(FeedOutcome::TakenOver) => format!("{feed}: skipped (another worker polls it)"),
            Some(FeedOutcome::Failed { kind, error }) => {
                format!("{feed}: failed ({kind}): {error}")
            }
            None => format!("{feed}: skipped"),
        };
        if let Some(p) = self.progress.get() {
            match outcome {
                Some(FeedOutcome::Failed { .. }) => p.step_failed(&line),
                _ => p.step(&line),
            }
        }
    }
}

impl PollProgress {
    fn finish(&self) {
        if let Some(p) = self.progress.get() {
            p.finish();
        }
    }
}

/// `tidings feeds import`: adds the feeds of an OPML file to the config file in place.
/// With `check`, each new feed is fetched and parsed first (a progress bar on a
/// terminal); those that fail are left out.
async fn import_opml(config: &Config, file: &Path, dry_run: bool, check: bool) -> Result<()> {
    let opml_text =
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let config_text = std::fs::read_to_string(&config.path)
        .with_context(|| format!("reading {}", config.path.display()))?;
    let mut entries = opml::plan(&config_text, &config.path, &opml_text)
        .with_context(|| format!("importing {}", file.display()))?;
    if check {
        check_feeds(config, &mut entries).await?;
    }
    let import = opml::Import {
        config_text: opml::apply(&config_text, &config.path, &entries)
            .with_context(|| format!("importing {}", file.display()))?,
        entries,
    };

    // The report: one plain line per feed (a bar would only flash; the work is done).
    for entry in &import.entries {
        esay!("{}", describe(entry, dry_run));
    }

    let (added, skipped) = (import.added(), import.skipped());
    let config_name = config.path.display();
    let feeds = count(added, "feed");
    if dry_run {
        say!("dry run: would have imported {feeds}, skipped {skipped}; {config_name} not changed");
    } else if added == 0 {
        say!("imported {feeds}, skipped {skipped}; {config_name} not changed");
    } else {
        write_replacing(&config.path, &import.config_text)?;
        say!(
            "imported {feeds}, skipped {skipped} into {config_name} (a running daemon reloads it)"
        );
    }
    Ok(())
}

/// One line about one feed of an import: an added feed with the URL written to the
/// config, a skipped one with the URL as the file has it, its line breaks and other
/// control characters escaped.
fn describe(entry: &Entry, dry_run: bool) -> String {
    let name = if entry.name.is_empty() {
        String::new()
    } else {
        format!("{:?} ", entry.name)
    };
    let mut url = String::with_capacity(entry.url.len());
    for c in entry.url.chars() {
        if c.is_control() {
            url.extend(c.escape_default());
        } else {
            url.push(c);
        }
    }
    match &entry.outcome {
        Outcome::Added { id, tags, url } => format!(
            "{} {id}: {name}{url}{}",
            if dry_run { "would add" } else { "added" },
            if tags.is_empty() {
                String::new()
            } else {
                format!(" [{}]", tags.join(", "))
            }
        ),
        Outcome::InConfig { id } => format!("skipped {name}{url}: already in the config as {id}"),
        Outcome::Duplicate { id } => {
            format!("skipped {name}{url}: listed twice in the file (the same feed as {id})")
        }
        Outcome::BadUrl(why) => format!("skipped {name}{url}: {why}"),
        Outcome::Unreachable(why) => format!("skipped {name}{url}: check failed: {why}"),
    }
}

/// `feeds import --check`: fetches and parses every feed the import would add,
/// `poll.concurrency` at a time, and marks those that fail as unreachable.
async fn check_feeds(config: &Config, entries: &mut [Entry]) -> Result<()> {
    let fetcher = Fetcher::new(&config.poll)?;
    let todo: Vec<(usize, url::Url)> = entries
        .iter()
        .enumerate()
        .filter_map(|(i, e)| match &e.outcome {
            Outcome::Added { url, .. } => Some((i, url.clone())),
            _ => None,
        })
        .collect();
    let progress = Progress::new(todo.len() as u64, "checking");
    let fetcher = &fetcher;
    let mut checks = futures_util::stream::iter(todo)
        .map(|(i, url)| async move {
            let result = match fetcher.fetch_feed(&url, &Validators::default()).await {
                Ok(FetchOutcome::Fetched(f)) => {
                    parse_feed(&f.body, f.content_type.as_deref(), &f.final_url, Utc::now())
                        .map(|feed| feed.items.len())
                        .map_err(|e| e.to_string())
                }
                Ok(FetchOutcome::NotModified(_)) => Ok(0),
                Err(e) => Err(e.to_string()),
            };
            (i, url, result)
        })
        .buffer_unordered(config.poll.concurrency);
    while let Some((i, url, result)) = checks.next().await {
        match result {
            Ok(items) => progress.step(&format!("ok {url}: {}", count(items, "item"))),
            Err(why) => {
                progress.step_failed(&format!("failed {url}: {why}"));
                entries[i].outcome = Outcome::Unreachable(why);
            }
        }
    }
    progress.finish();
    Ok(())
}

/// Replaces the file at `path` with `text` atomically: a temporary file in the same
/// folder, with the old file's permissions (and owner, where that is allowed), renamed
/// over it. A symlink is followed, so the file it points to is the one replaced.
fn write_replacing(path: &Path, text: &str) -> Result<()> {
    use std::io::Write;

    let path =
        std::fs::canonicalize(path).with_context(|| format!("finding {}", path.display()))?;
    let old = std::fs::metadata(&path).with_context(|| format!("reading {}", path.display()))?;
    let folder = path.parent().unwrap_or(Path::new("."));
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let temp = folder.join(format!(".{name}.tidings-{}.tmp", std::process::id()));
    let write = || -> Result<()> {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&temp)?;
        file.set_permissions(old.permissions())?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::MetadataExt;
            let new = file.metadata()?;
            if (new.uid(), new.gid()) != (old.uid(), old.gid()) {
                std::os::unix::fs::fchown(&file, Some(old.uid()), Some(old.gid()))
                    .context("keeping the file's owner")?;
            }
        }
        file.write_all(text.as_bytes())?;
        file.sync_all()?;
        std::fs::rename(&temp, &path)?;
        // Make the rename itself durable, where the system allows syncing a folder.
        if let Ok(folder) = std::fs::File::open(folder) {
            let _ = folder.sync_all();
        }
        Ok(())
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&temp);
        e.context(format!("writing {}", path.display()))
    })
}

async fn check_config(config: &Config) -> Result<()> {
    say!("{}: ok", config.path.display());
    say!(
        "  database: {} (items and sent mail kept {})",
        config.database,
        in_days(config.retention)
    );
    match &config.mail.transport {
        MailTransport::File { folder } => say!("  mail: .eml files in {}", folder.display()),
        MailTransport::Smtp(s) => say!(
            "  mail: SMTP {}:{} ({:?}){}",
            s.host,
            s.port,
            s.tls,
            s.username
                .as_ref()
                .map(|u| format!(" as {u}"))
                .unwrap_or_default()
        ),
    }
    say!(
        "  new subscribers: digests at {} {}; links to {}{}",
        config.digest.daily_at.format("%H:%M"),
        config.digest.timezone,
        config.web.base_url,
        if std::env::var(tidings::config::BASE_URL_ENV).is_ok_and(|v| !v.trim().is_empty()) {
            " (from TIDINGS_BASE_URL)"
        } else {
            ""
        }
    );
    if config.web.base_url.scheme() != "https" {
        say!(
            "  note: web.base_url is not https; mail clients offer one-click unsubscribe \
             (RFC 8058) only for https links: set it to this server's public https address"
        );
    }
    match config.web.listen {
        Some(addr) => say!(
            "  subscriber pages: http://{addr}/ (public at {})",
            config.web.base_url
        ),
        None => say!("  subscriber pages: off"),
    }
    match config.service.admin_listen {
        Some(addr) => say!("  admin: http://{addr}/healthz and /metrics"),
        None => say!("  admin: off"),
    }
    say!(
        "  reload: on SIGHUP{}; shutdown waits up to {}",
        if config.service.watch_config {
            " and when this file changes"
        } else {
            ""
        },
        humantime::format_duration(config.service.shutdown_timeout)
    );
    say!("  feeds: {}", config.feeds.len());
    for feed in &config.feeds {
        say!(
            "    {:<24} every {:<6} {}",
            feed.id,
            humantime::format_duration(feed.interval).to_string(),
            feed.url
        );
    }
    warn_dangling_searches(config).await;
    Ok(())
}

/// Warns (on stderr) of each stored search that names a feed or tag the config does not
/// have, when there is a database to read; the config itself is fine all the same.
async fn warn_dangling_searches(config: &Config) {
    if config.database.sqlite_path().is_some_and(|p| !p.exists()) {
        return;
    }
    let subscribers = match Store::open_database_read_only(&config.database).await {
        Ok(store) => store.subscribers().await,
        Err(e) => Err(e),
    };
    match subscribers {
        Ok(subscribers) => {
            for dangling in dangling_searches(config, &subscribers) {
                esay!("warning: {dangling}");
            }
        }
        Err(e) => esay!("warning: stored searches not checked: {e:#}"),
    }
}

/// What `tidings match` looks for.
struct Search<'a> {
    query: &'a str,
    since: Duration,
    limit: usize,
    cross_languages: bool,
}

/// `tidings match`: runs one query over stored items and prints each hit with its
/// matched words marked (bold on a terminal, `**…**` otherwise).
async fn preview_matches(config: &Config, store: &Store, search: Search<'_>) -> Result<()> {
    let Search {
        query,
        since,
        limit,
        cross_languages,
    } = search;
    let parsed = Query::parse(query).map_err(|e| anyhow::anyhow!("bad query {query:?}: {e}"))?;
    let synonyms = config.matcher_synonyms().map_err(anyhow::Error::msg)?;
    let parsed = if cross_languages {
        parsed.across_languages(&synonyms)
    } else {
        parsed
    };
    let since_at = before(Utc::now(), since);
    let (open, close) = if std::io::stdout().is_terminal() {
        ("\x1b[1;33m", "\x1b[0m")
    } else {
        ("**", "**")
    };
    let mark = |text: &str, ranges: &[std::ops::Range<usize>]| {
        let mut out = String::with_capacity(text.len() + ranges.len() * 8);
        let mut at = 0;
        for r in ranges {
            out.push_str(&text[at..r.start]);
            out.push_str(open);
            out.push_str(&text[r.clone()]);
            out.push_str(close);
            at = r.end;
        }
        out.push_str(&text[at..]);
        out
    };
    let mut matched = 0;
    let items = store.items_since(since_at).await?;
    let scanned = items.len();
    for item in items {
        let body = body_text(&item.summary, &item.content);
        let doc = Document::new(&item.title, &body)
            .with_source(&item.feed_id, &item.tags)
            .with_lang(item.lang.as_deref());
        let Some(hits) = parsed.explain(&doc, &synonyms) else {
            continue;
        };
        matched += 1;
        if matched > limit {
            continue;
        }
        let in_field = |field: Field| -> Vec<std::ops::Range<usize>> {
            hits.iter()
                .filter(|h| h.field == field)
                .map(|h| h.range.clone())
                .collect()
        };
        let (snippet, ranges) = excerpt(&body, &in_field(Field::Body), 240);
        let date = utc(item.published.unwrap_or(item.first_seen));
        say!("{}", mark(&item.title, &in_field(Field::Title)));
        match &item.lang {
            Some(lang) => say!(
                "  {} · {date} · {}",
                item.feed_name,
                tidings::language::native_name(lang)
            ),
            None => say!("  {} · {date}", item.feed_name),
        }
        if !snippet.is_empty() {
            say!("  {}", mark(&snippet, &ranges));
        }
        if let Some(link) = &item.link {
            say!("  {link}");
        }
        say!();
    }
    let shown = matched.min(limit);
    say!(
        "{matched} of {} from the last {} match {query}{}",
        count(scanned, "item"),
        output::duration_in_words(since),
        if shown < matched {
            format!(" ({shown} shown)")
        } else {
            String::new()
        }
    );
    Ok(())
}

async fn list_outbox(store: &Store, all: bool) -> Result<()> {
    let rows: Vec<_> = store
        .outbox()
        .await?
        .into_iter()
        .filter(|m| all || m.status != OutboxStatus::Sent)
        .collect();
    if rows.is_empty() {
        say!(
            "outbox empty{}",
            if all {
                ""
            } else {
                " (nothing pending or failed)"
            }
        );
        return Ok(());
    }
    say!(
        "{:>6} {:<8} {:>8} {:<20} {:<20} {:<28} SUBJECT / LAST ERROR",
        "ID",
        "STATUS",
        "ATTEMPTS",
        "CREATED",
        "NEXT / SENT",
        "TO"
    );
    for m in rows {
        let when = utc;
        let next = match (m.status, m.sent_at) {
            (OutboxStatus::Sent, Some(t)) => when(t),
            (OutboxStatus::Pending, _) => when(m.next_attempt_at),
            _ => "-".to_string(),
        };
        say!(
            "{:>6} {:<8} {:>8} {:<20} {:<20} {:<28} {}",
            m.id,
            m.status,
            m.attempts,
            when(m.created_at),
            next,
            m.recipient,
            m.subject
        );
        if let Some(e) = &m.last_error {
            say!(
                "{:>6} {:<8} {:>8} {:<20} {:<20} {:<28} ↳ {e}",
                "",
                "",
                "",
                "",
                "",
                ""
            );
        }
    }
    Ok(())
}

/// A moment as the commands show it: `2026-12-01 07:30 UTC`, its zone always said.
fn utc(t: chrono::DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M UTC").to_string()
}

/// A retention as people write it: "90d" rather than humantime's "2months 29days 7h…".
fn in_days(d: Duration) -> String {
    if d.as_secs().is_multiple_of(86400) {
        format!("{}d", d.as_secs() / 86400)
    } else {
        humantime::format_duration(d).to_string()
    }
}

/// `tidings backup`: a consistent copy of the database at `path`, with what it holds.
async fn backup(config: &Config, path: &std::path::Path, force: bool) -> Result<()> {
    let Some(database) = config.database.sqlite_path() else {
        bail!(
            "`tidings backup` copies a SQLite database; back up PostgreSQL with its own tools \
             (pg_dump, or the server's continuous archiving)"
        );
    };
    if !database.exists() {
        bail!("no database at {}", database.display());
    }
    if !force && path.exists() {
        bail!(
            "{} already exists (pass --force to replace it)",
            path.display()
        );
    }
    if std::fs::canonicalize(path).ok() == std::fs::canonicalize(database).ok() {
        bail!("{} is the database itself", path.display());
    }
    // Its own connection, and no sync with the config: a backup writes nothing.
    let store = Store::open(database)?;
    let s = store
        .backup_to(path, force)
        .await
        .with_context(|| format!("backing up to {}", path.display()))?;
    say!(
        "backed up {} to {}: {:.1} MiB; {}, {} ({} pruned), {}, {}",
        database.display(),
        path.display(),
        s.bytes as f64 / (1024.0 * 1024.0),
        count(s.feeds as usize, "feed"),
        count(s.items as usize, "item"),
        s.pruned_items,
        count(s.subscribers as usize, "subscriber"),
        count(s.outbox as usize, "outbox message")
    );
    Ok(())
}

/// `tidings migrate-db`: copies the SQLite database at `from` into the empty PostgreSQL
/// database at `to`, with the link-signing secret, saying how far it got.
async fn migrate_db(from: &Path, to: &str, secret_file: Option<&Path>) -> Result<()> {
    let url = tidings::config::postgres_url(to, "--to").map_err(anyhow::Error::msg)?;
    if !from.is_file() {
        bail!("no SQLite database at {}", from.display());
    }
    let default_secret;
    let secret_path = match secret_file {
        Some(path) => path,
        None => {
            default_secret = from
                .parent()
                .unwrap_or(Path::new(""))
                .join("tidings.secret");
            &default_secret
        }
    };
    let secret = match Signer::read_file(secret_path)? {
        Some(secret) => {
            Signer::new(secret.as_bytes())
                .with_context(|| format!("secret file {}", secret_path.display()))?;
            Some(secret)
        }
        None if secret_file.is_some() => bail!("no secret file at {}", secret_path.display()),
        None => None,
    };
    let password = std::env::var(tidings::config::DATABASE_PASSWORD_ENV).ok();
    let store = Store::connect(&url, password.as_deref()).await?;
    let settings = secret
        .iter()
        .map(|s| (LINK_SECRET_SETTING.to_string(), s.clone()))
        .collect();
    let started = std::time::Instant::now();
    let source = from.display().to_string();
    let imported = store
        .import_sqlite(from, settings, move |step| match step {
            ImportStep::Snapshot {
                source_version,
                version,
            } => {
                if source_version == version {
                    say!("snapshot of {source} taken (schema version {version})");
                } else {
                    say!(
                        "snapshot of {source} taken, its schema migrated from version \
                         {source_version} to {version} (the file itself is unchanged)"
                    );
                }
            }
            ImportStep::Table(t) => say!("  {:<16} {}", t.table, count(t.rows as usize, "row")),
        })
        .await
        .with_context(|| format!("copying {} into {url}", from.display()))?;
    let rows: u64 = imported.tables.iter().map(|t| t.rows).sum();
    say!(
        "copied {} in {} into {url} in {:.1} s; not copied: {}",
        count(rows as usize, "row"),
        count(imported.tables.len(), "table"),
        started.elapsed().as_secs_f64(),
        imported
            .skipped
            .iter()
            .map(|(table, why)| format!("{table} ({why})"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    if secret.is_some() {
        say!(
            "link-signing secret: copied from {}: links in mail already sent keep working",
            secret_path.display()
        );
    } else {
        esay!(
            "warning: no secret file at {}: no link-signing secret copied. Links in mail \
             already sent work on PostgreSQL only if every instance sets TIDINGS_SECRET to \
             the secret the SQLite deployment used; otherwise the first instance makes a new \
             one and those links stop working (pass --secret-file to copy one)",
            secret_path.display()
        );
    }
    say!(
        "next: set database = \"{url}\" in config.toml and start the daemon; if it ran on {} \
         during the copy, what it did after the snapshot is not in PostgreSQL",
        from.display()
    );
    Ok(())
}

/// The database alone, for admin commands that neither fetch nor mail (so they work
/// without, say, the SMTP password in the environment).
async fn open_store(config: &Config) -> Result<Store> {
    let store = Store::open_database(&config.database).await?;
    tidings::pipeline::sync_feed_list(&store, config).await?;
    for problem in tidings::pipeline::sync_destinations(&store, config).await? {
        esay!("warning: {problem}");
    }
    Ok(store)
}

/// The database for a command that only reads: opened as [`open_store`] opens it
/// (migrated, the config's feed list brought in) when it can be written; when it cannot
/// (a read-only file or filesystem, a full disk, a standby server), read-only as it is,
/// with a note saying so.
async fn open_to_read(config: &Config) -> Result<Store> {
    // A file this user may not write is not tried: the try would leave files beside it
    // that stand in its owner's way.
    let (store, reason) = match Store::cannot_write(&config.database) {
        Some(reason) => (
            Store::open_database_read_only(&config.database).await?,
            reason,
        ),
        None => {
            let error = match open_store(config).await {
                Ok(store) => return Ok(store),
                Err(e) => e,
            };
            if let tidings::config::Database::Sqlite(path) = &config.database
                && !path.exists()
            {
                let missing = format!("there is no database at {} yet", path.display());
                return Err(error.context(missing));
            }
            let Some(reason) = tidings::store::unavailable(&error) else {
                return Err(error);
            };
            let store = Store::open_database_read_only(&config.database)
                .await
                .with_context(|| format!("{error:#}; opening it read-only instead"))?;
            (store, reason)
        }
    };
    esay!(
        "note: the database cannot be written ({reason}), so it is read as it is: changes \
         to the feed list in {} since its last write do not show",
        config.path.display()
    );
    Ok(store)
}

async fn subscriber(config: &Config, store: &Store, command: SubscriberCommand) -> Result<()> {
    let now = store.now();
    match command {
        SubscriberCommand::Add {
            email,
            query,
            frequency,
            tz,
        } => {
            let email = mail::check_address(&email)?;
            let parsed =
                Query::parse(&query).map_err(|e| anyhow::anyhow!("bad query {query:?}: {e}"))?;
            config
                .check_scopes(&parsed)
                .map_err(|e| anyhow::anyhow!("bad query {query:?}: {e}"))?;
            let current = store.subscriber(&email).await?;
            let schedule = match (&frequency, &current) {
                (Some(f), _) => Schedule::parse(f, config.digest.daily_at)
                    .map_err(|e| anyhow::anyhow!("bad --frequency {f:?}: {e}"))?,
                (None, Some(s)) => s.schedule,
                (None, None) => Schedule::Immediate,
            };
            let timezone = match (&tz, &current) {
                (Some(tz), _) => parse_time_zone(tz).with_context(|| {
                    format!("unknown time zone {tz:?} (use an IANA name like \"America/New_York\")")
                })?,
                (None, Some(s)) => s.timezone,
                (None, None) => config.digest.timezone,
            };
            let added = store
                .add_subscription(&email, query.trim(), schedule, timezone, now)
                .await?;
            let searches = store
                .subscriber(&email)
                .await?
                .map(|s| s.queries)
                .unwrap_or_default();
            let digests = format!(
                "digests {} ({timezone}) for {}",
                when_sent(schedule),
                count(searches.len(), "search")
            );
            if added {
                say!("{email} now gets {digests}:");
            } else {
                say!("{email} already has that search; they get {digests}:");
            }
            for search in &searches {
                say!("    {search}");
            }
        }
        SubscriberCommand::List => {
            let subscribers = store.subscribers().await?;
            if subscribers.is_empty() {
                say!(
                    "no subscribers yet (add one with `tidings subscriber add EMAIL --query ...`)"
                );
            }
            for s in subscribers {
                let next = s.next_digest_at.map(|d| {
                    format!(
                        ", next {}",
                        d.with_timezone(&s.timezone).format("%Y-%m-%d %H:%M %Z")
                    )
                });
                let paused = s
                    .paused_at
                    .map(|_| format!(", PAUSED after {}", count(s.bounces as usize, "bounce")));
                let outlets = (s.new_outlets != Default::default())
                    .then(|| format!(", new outlets: {}", s.new_outlets.as_str()));
                say!(
                    "{} ({}, {}{}{}{})",
                    s.email,
                    s.schedule,
                    s.timezone,
                    next.unwrap_or_default(),
                    outlets.unwrap_or_default(),
                    paused.unwrap_or_default()
                );
                let crossing = store.searches_crossing_languages(s.id).await?;
                let searches = store.subscriptions_of(s.id).await?;
                for (id, q) in &searches {
                    if crossing.contains(id) {
                        say!("    {q}  (crosses languages)");
                    } else {
                        say!("    {q}");
                    }
                }
            }
        }
        SubscriberCommand::CrossLanguages {
            email,
            query,
            choice,
        } => {
            let crosses = match choice.trim().to_ascii_lowercase().as_str() {
                "on" | "yes" | "true" => true,
                "off" | "no" | "false" => false,
                _ => bail!("say on or off, not {choice:?}"),
            };
            let who = subscriber_named(store, &email).await?;
            let searches = store.subscriptions_of(who.id).await?;
            let Some((search, _)) = searches.iter().find(|(_, q)| q.trim() == query.trim()) else {
                bail!("{email} has no search {query:?} (see `tidings subscriber list`)");
            };
            store
                .set_crosses_languages(who.id, *search, crosses)
                .await?;
            if crosses {
                say!("{query:?} of {email} now also finds its words in other languages");
            } else {
                say!("{query:?} of {email} now finds its words as written only");
            }
        }
        SubscriberCommand::NewOutlets { email, choice } => {
            let choice: tidings::store::NewOutlets = choice.parse().map_err(anyhow::Error::msg)?;
            let Some(subscriber) = store.subscriber(&stored_spelling(&email)).await? else {
                bail!("no subscriber {email}");
            };
            store.set_new_outlets(subscriber.id, choice).await?;
            say!(
                "{email}: {}",
                match choice {
                    tidings::store::NewOutlets::Never =>
                        "new outlets for stories they got are not sent (what waited is dropped)",
                    tidings::store::NewOutlets::Next =>
                        "new outlets for stories they got are listed in their next digest",
                    tidings::store::NewOutlets::Always =>
                        "new outlets for stories they got are sent as news (what waited too)",
                }
            );
        }
        SubscriberCommand::Resume { email } => {
            let stored = stored_spelling(&email);
            let Some(subscriber) = store.subscriber(&stored).await? else {
                bail!("no subscriber {email}");
            };
            if subscriber.paused_at.is_none() {
                say!("{email} is not paused: they get digests already; nothing changed");
            } else if store.resume_subscriber(&stored).await? {
                say!("{email} gets digests again");
            } else {
                bail!("no subscriber {email}");
            }
        }
        SubscriberCommand::Remove { email } => {
            if !store.remove_subscriber(&stored_spelling(&email)).await? {
                bail!("no subscriber {email}");
            }
            say!("removed {email}");
        }
        SubscriberCommand::Channel(command) => channel(config, store, command).await?,
        SubscriberCommand::Route { email, query, to } => {
            let who = subscriber_named(store, &email).await?;
            let searches = store.subscriptions_of(who.id).await?;
            let Some((search, _)) = searches.iter().find(|(_, q)| q.trim() == query.trim()) else {
                bail!("{email} has no search {query:?} (see `tidings subscriber list`)");
            };
            let channels = store.channels(Some(who.id)).await?;
            let mut to_email = false;
            let mut chosen = Vec::new();
            for name in to.iter().map(|n| n.trim()).filter(|n| !n.is_empty()) {
                if name.eq_ignore_ascii_case("email") {
                    to_email = true;
                } else if let Some(c) = channels.iter().find(|c| c.name == name) {
                    chosen.push(c.id);
                } else {
                    bail!(
                        "{email} has no destination {name:?} (see `tidings subscriber channel list`)"
                    );
                }
            }
            store.set_search_route(*search, to_email, chosen).await?;
            say!("{query:?} of {email} now goes to {}", to.join(", "));
        }
    }
    Ok(())
}

/// The subscriber with this address, or an error naming it.
async fn subscriber_named(store: &Store, email: &str) -> Result<tidings::store::Subscriber> {
    store
        .subscriber(&stored_spelling(email))
        .await?
        .with_context(|| format!("no subscriber {email}"))
}

/// A destination by its owner and name.
async fn channel_named(store: &Store, email: &str, name: &str) -> Result<tidings::store::Channel> {
    let who = subscriber_named(store, email).await?;
    store
        .channels(Some(who.id))
        .await?
        .into_iter()
        .find(|c| c.name == name)
        .with_context(|| {
            format!("{email} has no destination {name:?} (see `tidings subscriber channel list`)")
        })
}

/// The value of an environment variable a flag names.
fn secret_from_env(flag: &str, var: &Option<String>) -> Result<Option<String>> {
    let Some(var) = var else {
        return Ok(None);
    };
    match std::env::var(var) {
        Ok(value) if !value.trim().is_empty() => Ok(Some(value.trim().to_string())),
        _ => bail!("{flag} {var}: that environment variable is not set"),
    }
}

async fn channel(config: &Config, store: &Store, command: ChannelCommand) -> Result<()> {
    use tidings::push::{Spec, Target};
    use tidings::store::ChannelOrigin;
    let now = store.now();
    match command {
        ChannelCommand::Add {
            email,
            kind,
            name,
            url,
            url_env,
            token_env,
            chat_id,
            homeserver,
            room,
            api,
            searches,
        } => {
            let who = subscriber_named(store, &email).await?;
            let url = match (url, secret_from_env("--url-env", &url_env)?) {
                (Some(_), Some(_)) => bail!("give --url or --url-env, not both"),
                (url, from_env) => url.or(from_env),
            };
            let spec = Spec {
                kind,
                url,
                token: secret_from_env("--token-env", &token_env)?,
                chat_id,
                homeserver,
                room,
                api,
            };
            let known = store.subscriptions_of(who.id).await?;
            let mut chosen = Vec::new();
            for query in &searches {
                let Some((id, _)) = known.iter().find(|(_, q)| q.trim() == query.trim()) else {
                    bail!("{email} has no search {query:?} (see `tidings subscriber list`)");
                };
                chosen.push(*id);
            }
            // The admin may point a destination at a private network as `[poll]` allows.
            let added = tidings::push::add_channel(
                store,
                &config.channels,
                &who,
                &name,
                &spec,
                ChannelOrigin::Admin,
                chosen,
                now,
            )
            .await?;
            say!(
                "added {} destination {name:?} (#{}) for {email}: {}",
                added.target.kind(),
                added.id,
                added.target.describe()
            );
            if let Some(secret) = &added.signing_secret {
                say!(
                    "signing secret (shown once; the receiver verifies webhook-signature with it):"
                );
                say!("    {secret}");
            }
            say!("check it with `tidings subscriber channel test {email} {name}`");
        }
        ChannelCommand::List { email } => {
            let owner = match &email {
                Some(email) => Some(subscriber_named(store, email).await?.id),
                None => None,
            };
            let channels = store.channels(owner).await?;
            if channels.is_empty() {
                say!(
                    "no destinations beside email (add one with `tidings subscriber channel add`)"
                );
            }
            for c in channels {
                let target = serde_json::from_str::<Target>(&c.target)
                    .map(|t| t.describe())
                    .unwrap_or_else(|e| format!("(unreadable: {e})"));
                let searches = match c.every_search {
                    true => "every search".to_string(),
                    false => count(c.searches.len(), "search"),
                };
                say!(
                    "{} {} {:?}: {}, {}, {} (added by {})",
                    c.email,
                    c.kind,
                    c.name,
                    target,
                    c.state,
                    searches,
                    c.added_by
                );
                if let Some(reason) = &c.paused_reason {
                    say!("    paused: {reason}");
                } else if let Some(error) = &c.last_error {
                    say!(
                        "    last error ({}): {error}",
                        count(c.failures as usize, "failure")
                    );
                }
            }
        }
        ChannelCommand::Remove { email, name } => {
            let c = channel_named(store, &email, &name).await?;
            store.remove_channel(c.id).await?;
            say!("removed {} destination {name:?} of {email}", c.kind);
        }
        ChannelCommand::Pause { email, name } => {
            let c = channel_named(store, &email, &name).await?;
            if !store.pause_channel(c.id, "paused by an admin").await? {
                bail!("{name:?} is {}, not active: nothing changed", c.state);
            }
            say!("paused {name:?} of {email}; its digests wait until it is resumed");
        }
        ChannelCommand::Resume { email, name } => {
            let c = channel_named(store, &email, &name).await?;
            if !store.resume_channel(c.id, now).await? {
                bail!("{name:?} is {}, not paused: nothing changed", c.state);
            }
            say!("resumed {name:?} of {email}; what waited goes with the next round");
        }
        ChannelCommand::Test { email, name } => {
            let c = channel_named(store, &email, &name).await?;
            let app = App::open(config.clone()).await?;
            let id = tidings::push::queue_test(&app.store, &c, now).await?;
            tidings::pipeline::send_push(&app, app.store.now()).await?;
            let row = app.store.outbox().await?.into_iter().find(|m| m.id == id);
            match row {
                Some(m) if m.status == OutboxStatus::Sent => {
                    say!("sent: {} accepted the test message", c.kind)
                }
                Some(m) => bail!(
                    "not sent ({}): {}",
                    m.status,
                    m.last_error.as_deref().unwrap_or("no answer yet")
                ),
                None => bail!("the test message is gone from the outbox"),
            }
        }
    }
    Ok(())
}

/// When digests go out, to follow "gets digests": "immediately", "daily at 07:30".
fn when_sent(schedule: Schedule) -> String {
    match schedule {
        Schedule::Immediate => "immediately".to_string(),
        other => other.to_string(),
    }
}

/// How an address given to `remove` or `resume` is stored: its one spelling, or as
/// typed if it has none (a row added before addresses were normalized can still go).
fn stored_spelling(email: &str) -> String {
    mail::normalize_address(email).unwrap_or_else(|_| email.trim().to_string())
}

/// What `feeds discover` fetches.
struct DiscoverTarget {
    url: url::Url,
    /// Given without a scheme, `https://` was put in front: the `http://` address, to
    /// suggest when that one cannot be reached.
    plain: Option<url::Url>,
}

/// The URL `feeds discover` fetches: as given, or, given without a scheme
/// (`www.uscis.gov`), with `https://` in front, which is said on stderr.
fn discover_url(text: &str) -> Result<DiscoverTarget> {
    let text = text.trim();
    match url::Url::parse(text) {
        Ok(url) if matches!(url.scheme(), "http" | "https") => {
            Ok(DiscoverTarget { url, plain: None })
        }
        Ok(_) | Err(url::ParseError::RelativeUrlWithoutBase) if !text.contains("://") => {
            let url = url::Url::parse(&format!("https://{text}"))
                .with_context(|| format!("{text:?} is not a URL"))?;
            esay!("no scheme given: trying {url}");
            let plain = url::Url::parse(&format!("http://{text}")).ok();
            Ok(DiscoverTarget { url, plain })
        }
        Ok(url) => bail!("{url}: only http:// and https:// URLs can be fetched"),
        Err(e) => bail!("{text:?} is not a URL: {e}"),
    }
}

async fn discover(config: &Config, target: &DiscoverTarget) -> Result<()> {
    let url = &target.url;
    let fetcher = Fetcher::new(&config.poll)?;
    let fetched = match fetcher.fetch_feed(url, &Validators::default()).await {
        Ok(FetchOutcome::Fetched(f)) => f,
        Ok(FetchOutcome::NotModified(_)) => {
            bail!("{url} answered 304 to an unconditional request")
        }
        // No TLS there, or nothing on port 443: the site may be plain HTTP. Not tried
        // unasked: a feed found that way would be configured without TLS.
        Err(e @ (FetchError::Connection(_) | FetchError::Timeout))
            if let Some(plain) = &target.plain =>
        {
            bail!("fetching {url}: {e}; for a site without https, try {plain}")
        }
        Err(e) => return Err(anyhow::Error::new(e).context(format!("fetching {url}"))),
    };
    let ct = fetched.content_type.as_deref();
    match parse_feed(&fetched.body, ct, &fetched.final_url, Utc::now()) {
        Ok(feed) => {
            say!(
                "{} is a feed: {} ({})",
                fetched.final_url,
                feed.title.as_deref().unwrap_or("untitled"),
                count(feed.items.len(), "item")
            );
            Ok(())
        }
        Err(ParseError::NotAFeed { .. }) => {
            let links = discover_feeds(&fetched.body, ct, &fetched.final_url);
            if links.is_empty() {
                let html = tidings::article::decode_html(&fetched.body, ct);
                let Some(found) = tidings::page::suggest_listing(&html, &fetched.final_url) else {
                    bail!(
                        "{} is a web page that advertises no feed, and has no list of \
                         article links to read as one",
                        fetched.final_url
                    );
                };
                say_listing(&fetched.final_url, &found);
                return Ok(());
            }
            for link in links {
                say!(
                    "{:<5} {}  {}",
                    link.kind,
                    link.url,
                    link.title.unwrap_or_default()
                );
            }
            Ok(())
        }
        Err(e) => Err(anyhow::anyhow!("{}: {e}", fetched.final_url)),
    }
}

/// A page without a feed whose list of article links can be read as one: what was found,
/// and the `[[feeds]]` table that reads it.
fn say_listing(url: &url::Url, found: &tidings::page::Suggestion) {
    say!(
        "{url} advertises no feed, but lists {} that can be read as one (kind = \"html\"):",
        count(found.entries, "entry")
    );
    for (title, link) in &found.sample {
        say!("  {}  {link}", output::printable(title));
    }
    let id: String = url
        .host_str()
        .unwrap_or("page")
        .trim_start_matches("www.")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    say!("");
    say!("[[feeds]]");
    say!("id = {:?}", id);
    say!("url = {:?}", url.as_str());
    say!("kind = \"html\"");
    say!("item_selector = {:?}", found.rules.item_selector);
}

async fn feeds_status(store: &Store, json: bool) -> Result<()> {
    let statuses = store.feed_statuses().await.context("reading feed status")?;
    if json {
        say!("{}", serde_json::to_string_pretty(&statuses)?);
        return Ok(());
    }
    if statuses.is_empty() {
        say!(
            "no feeds yet (add [[feeds]] tables to the config file, or import another \
             reader's with `tidings feeds import FILE.opml`)"
        );
        return Ok(());
    }
    let now = store.now();
    say!(
        "{:<24} {:<13} {:>5} {:>7} {:<20} {:<20} NOTE",
        "FEED",
        "STATUS",
        "FAILS",
        "ITEMS",
        "LAST SUCCESS",
        "NEXT POLL"
    );
    let when = |d: Option<chrono::DateTime<Utc>>| d.map_or("never".to_string(), utc);
    for f in statuses {
        // Claimed by a poll now: whoever holds it (another process, or one that died).
        let polling = f.claim.as_ref().filter(|c| c.until > now);
        let status = match (f.active, f.gone, f.last_status, polling) {
            (false, _, _, _) => "inactive",
            (true, true, _, _) => "gone",
            (true, false, _, Some(_)) => "polling",
            (true, false, None, None) => "new",
            (true, false, Some(s), None) => s.as_str(),
        };
        let mut notes = Vec::new();
        if let Some(c) = polling {
            notes.push(c.describe());
        }
        if let (Some(k), Some(e)) = (&f.last_error_kind, &f.last_error) {
            notes.push(format!("{k}: {e}"));
        }
        if let Some(to) = &f.moved_to {
            notes.push(format!("moved to {to}"));
        }
        if !f.repairs.is_empty() {
            notes.push(format!("repaired: {}", f.repairs.join("; ")));
        }
        notes.extend(f.articles.describe());
        let next = if f.gone || !f.active {
            "-".to_string()
        } else if f.next_poll_at <= now {
            // Never polled (stored as the epoch), or overdue: the next poll takes it.
            "due now".to_string()
        } else {
            when(Some(f.next_poll_at))
        };
        say!(
            "{:<24} {:<13} {:>5} {:>7} {:<20} {:<20} {}",
            f.id,
            status,
            f.consecutive_failures,
            f.items,
            when(f.last_success_at),
            next,
            notes.join(" | ")
        );
    }
    Ok(())
}
