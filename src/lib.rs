//! Tidings polls RSS, Atom and JSON feeds, stores every new item in SQLite, matches items
//! against people's keyword subscriptions and emails them digests.
//!
//! # Layout
//!
//! The data flow (DESIGN.md) is one module per stage; dependencies point one way, from
//! the jobs down to the pure stages:
//!
//! | module        | job                                                                  |
//! | ------------- | -------------------------------------------------------------------- |
//! | [`ids`]       | the identities of stored rows, one type each                         |
//! | [`config`]    | `config.toml` → validated [`config::Config`], errors with line/column |
//! | [`fetch`]     | HTTP: conditional GET, timeouts, body cap (reqwest lives here)        |
//! | [`parse`]     | bytes → normalized [`parse::Item`]s with stable keys (feed-rs)        |
//! | [`article`]   | a web page → its story, without the site around it (dom_smoothie)    |
//! | [`page`]      | pages without feeds: a listing's entries, a watched page's changes   |
//! | [`language`]  | an item's language: detected from its text, or as its feed declares  |
//! | [`matcher`]   | query language → compiled matcher; item → matching subscriptions      |
//! | [`story`]     | one story across outlets: near-duplicate text, the in-memory index    |
//! | [`digest`]    | pending matches → rendered digest; digest schedules                   |
//! | [`store`]     | the only SQL: an async front, one file per domain; backends behind it |
//! | [`mail`]      | outbox → SMTP or `.eml` files, retries (lettre)                       |
//! | [`push`]      | outbox → webhooks, ntfy, Telegram, Matrix, Slack, Discord, Mattermost |
//! | [`pipeline`]  | the jobs: [`poll_feeds`], articles, [`send_digests`], [`prune`]       |
//! | [`scheduler`] | the daemon: cron ticks driving the jobs, reload, shutdown             |
//! | [`admin`]     | the admin HTTP listener: `/healthz`, `/metrics` (axum)                 |
//! | [`metrics`]   | counters and gauges in the Prometheus text format                     |
//! | [`locale`]    | subscriber languages: strings of digests and pages, dates, numbers    |
//! | [`token`]     | signed per-subscriber tokens and the links that carry them            |
//! | [`web`]       | subscriber pages: one-click unsubscribe, manage searches (axum)       |
//! | [`listener`]  | the accept loop both listeners share: deadlines, connection caps      |
//! | [`progress`]  | progress of interactive commands: a bar on a terminal, lines if not   |
//! | [`output`]    | what commands print: terminal-safe, quiet when the reader goes away   |
//! | [`opml`]      | OPML in (new `[[feeds]]` in the config text, layout kept) and out     |
//!
//! `parse`, `article`, `page`, `language`, `matcher`, `story`, `digest` and `opml` are plain functions over plain data:
//! no I/O, no async.
#![forbid(unsafe_code)]

pub mod admin;
pub mod article;
pub mod config;
pub mod digest;
pub mod fetch;
pub mod ids;
pub mod language;
pub mod listener;
pub mod locale;
pub mod mail;
pub mod matcher;
pub mod metrics;
pub mod opml;
pub mod output;
pub mod page;
pub mod parse;
pub mod pipeline;
pub mod progress;
pub mod push;
pub mod scheduler;
pub mod store;
pub mod story;
pub mod token;
pub mod web;

pub use config::Config;
pub use pipeline::{App, poll_feeds, prune, send_digests, send_mail};
