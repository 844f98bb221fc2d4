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
//! | [`config`]    | `config.toml` → validated [`config::Config`], errors with line/column |
//! | [`fetch`]     | HTTP: conditional GET, timeouts, body cap (reqwest lives here)        |
//! | [`parse`]     | bytes → normalized [`parse::Item`]s with stable keys (feed-rs)        |
//! | [`matcher`]   | query language → compiled matcher; item → matching subscriptions      |
//! | [`digest`]    | pending matches → rendered digest; digest schedules                   |
//! | [`store`]     | the only SQL: migrations and domain operations (rusqlite)             |
//! | [`mail`]      | outbox → SMTP or `.eml` files, retries (lettre)                       |
//! | [`pipeline`]  | the jobs: [`poll_feeds`], [`send_digests`], [`prune`]                 |
//! | [`scheduler`] | the daemon: cron ticks driving the jobs, shutdown                     |
//! | [`token`]     | signed per-subscriber tokens and the links that carry them            |
//! | [`progress`]  | progress of interactive commands: a bar on a terminal, lines if not   |
//!
//! `parse`, `matcher` and `digest` are plain functions over plain data: no I/O, no async.
#![forbid(unsafe_code)]

pub mod config;
pub mod digest;
pub mod fetch;
pub mod mail;
pub mod matcher;
pub mod parse;
pub mod pipeline;
pub mod progress;
pub mod scheduler;
pub mod store;
pub mod token;

pub use config::Config;
pub use pipeline::{App, poll_feeds, prune, send_digests};
