//! The subscriber pages (axum, server-rendered, no JavaScript): the one-click unsubscribe
//! link every digest carries, and the manage page where a subscriber edits their searches
//! and schedule. A signed token in the URL ([`crate::token::Links`]) is the only key: no
//! accounts, no cookies.
//!
//! Every form also carries the subscriber's anti-forgery value and is refused without
//! it, except the unsubscribe POST: RFC 8058 one-click clients send no such field, and
//! the URL token itself is the secret a forger would need. Responses carry a strict CSP
//! (no scripts at all), no framing, no referrer (the URLs hold tokens) and no caching.
//! Bad input gets a page that says what to fix; internal errors are logged and the page
//! says only that something went wrong.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::LazyLock;

use anyhow::{Context, Result};
use axum::Router;
use axum::extract::rejection::FormRejection;
use axum::extract::{DefaultBodyLimit, Path, Query as UrlQuery, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, middleware};
use chrono::Utc;
use chrono_tz::Tz;
use minijinja::{Environment, context};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::digest::Schedule;
use crate::matcher::Query;
use crate::pipeline::App;
use crate::store::Subscriber;

/// Largest form body accepted; a search is at most [`MAX_QUERY_CHARS`].
const MAX_BODY: usize = 8 * 1024;
const MAX_QUERY_CHARS: usize = 500;
/// Searches one subscriber may hold.
const MAX_QUERIES: usize = 25;

const CSP: &str = "default-src 'none'; style-src 'self'; form-action 'self'; \
                   frame-ancestors 'none'; base-uri 'none'";

static TEMPLATES: LazyLock<Environment<'static>> = LazyLock::new(|| {
    let mut env = Environment::new();
    env.set_formatter(crate::digest::html_formatter);
    for (name, source) in [
        (
            "web/layout.html",
            include_str!("../templates/web/layout.html"),
        ),
        (
            "web/message.html",
            include_str!("../templates/web/message.html"),
        ),
        (
            "web/unsubscribe.html",
            include_str!("../templates/web/unsubscribe.html"),
        ),
        (
            "web/manage.html",
            include_str!("../templates/web/manage.html"),
        ),
        (
            "web/admin.html",
            include_str!("../templates/web/admin.html"),
        ),
    ] {
        if let Err(e) = env.add_template(name, source) {
            error!(template = name, error = %e, "bad web template");
        }
    }
    env
});

/// Binds `addr` and serves the subscriber pages until `stop` is cancelled. Returns the
/// address actually bound.
pub async fn serve(
    addr: SocketAddr,
    app: watch::Receiver<App>,
    stop: CancellationToken,
) -> Result<SocketAddr> {
    let listener = TcpListener::bind(addr).await.with_context(|| {
        format!("web listener on {addr} (set [web].listen, or \"\" to turn it off)")
    })?;
    let bound = listener.local_addr()?;
    let router = router(app);
    tokio::spawn(async move {
        let served = axum::serve(listener, router)
            .with_graceful_shutdown(stop.cancelled_owned())
            .await;
        if let Err(e) = served {
            warn!(error = %e, "web listener stopped");
        }
    });
    info!(address = %bound, "web listener: subscriber pages");
    Ok(bound)
}

/// The routes, for [`serve`] and for tests.
pub fn router(app: watch::Receiver<App>) -> Router {
    Router::new()
        .route("/style.css", get(style))
        .route(
            "/unsubscribe/{token}",
            get(unsubscribe_page).post(unsubscribe),
        )
        .route("/manage/{token}", get(manage_page))
        .route("/feed/{token}", get(matches_feed))
        .route("/admin", get(admin_page))
        .route("/manage/{token}/add", post(add_query))
        .route("/manage/{token}/remove", post(remove_query))
        .route("/manage/{token}/schedule", post(set_schedule))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .layer(middleware::map_response(security_headers))
        .with_state(app)
}

async fn security_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    for (name, value) in [
        (header::CONTENT_SECURITY_POLICY, CSP),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::CACHE_CONTROL, "no-store"),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    response
}

async fn style() -> Response {
    (
        [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
        include_str!("../templates/web/style.css"),
    )
        .into_response()
}

// ---- pages and errors ---------------------------------------------------------------------

/// Why a request got no page of its own. Rendered as a short page with the right status;
/// `Internal` is logged and never shown.
#[derive(Debug)]
enum Failure {
    NotFound,
    BadLink,
    Forbidden,
    Unauthorized,
    TooLarge,
    BadForm(String),
    Internal(anyhow::Error),
}

impl From<anyhow::Error> for Failure {
    fn from(e: anyhow::Error) -> Failure {
        Failure::Internal(e)
    }
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        let (status, heading, line) = match self {
            Failure::NotFound => (
                StatusCode::NOT_FOUND,
                "Not found",
                "There is no page here.".to_string(),
            ),
            Failure::BadLink => (
                StatusCode::NOT_FOUND,
                "This link does not work",
                "It may have been copied incompletely, or the subscription it was for no \
                 longer exists. Use the link in your most recent digest."
                    .to_string(),
            ),
            Failure::Forbidden => (
                StatusCode::FORBIDDEN,
                "Please try again",
                "This form did not come from your page here, or it has expired. Reload \
                 the page and submit it again."
                    .to_string(),
            ),
            Failure::Unauthorized => {
                let body = render(
                    "web/message.html",
                    context! {
                        heading => "Admin",
                        lines => ["Sign in with the admin password (TIDINGS_ADMIN_TOKEN)."],
                    },
                );
                return (
                    StatusCode::UNAUTHORIZED,
                    [(
                        header::WWW_AUTHENTICATE,
                        "Basic realm=\"Tidings admin\", charset=\"UTF-8\"",
                    )],
                    body,
                )
                    .into_response();
            }
            Failure::TooLarge => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "Too much text",
                format!("A form may hold at most {} KB.", MAX_BODY / 1024),
            ),
            Failure::BadForm(why) => (StatusCode::BAD_REQUEST, "That did not work", why),
            Failure::Internal(e) => {
                error!(error = %format!("{e:#}"), "web request failed");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "Something went wrong",
                    "Something went wrong on our side. Please try again in a few minutes."
                        .to_string(),
                )
            }
        };
        let body = render(
            "web/message.html",
            context! { heading, lines => [line], link => None::<String> },
        );
        (status, body).into_response()
    }
}

/// A rendered template as an HTML response body.
fn render(name: &str, cx: minijinja::Value) -> axum::response::Html<String> {
    let html = TEMPLATES
        .get_template(name)
        .and_then(|t| t.render(cx))
        .unwrap_or_else(|e| {
            error!(template = name, error = %e, "rendering a page");
            "<!DOCTYPE html><title>Tidings</title><p>Something went wrong on our side.</p>"
                .to_string()
        });
    axum::response::Html(html)
}

fn message(heading: &str, lines: &[&str], link: Option<(&str, &str)>) -> Response {
    render(
        "web/message.html",
        context! {
            heading,
            lines,
            link => link.map(|(url, _)| url),
            link_text => link.map(|(_, text)| text),
        },
    )
    .into_response()
}

async fn not_found() -> Failure {
    Failure::NotFound
}

/// Runs a blocking database call off the async threads.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T, Failure> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Failure::Internal(e.into()))?
        .map_err(Failure::Internal)
}

/// The subscriber a manage token (`manage`) or unsubscribe token names, if genuine.
async fn subscriber_for(app: &App, token: &str, manage: bool) -> Result<Subscriber, Failure> {
    let (store, links, token) = (app.store.clone(), app.links.clone(), token.to_string());
    blocking(move || {
        let mut found = None;
        let lookup = |id| {
            found = store.subscriber_by_id(id).ok().flatten();
            found.as_ref().map(|s| s.email.clone())
        };
        let id = if manage {
            links.verify_manage(&token, lookup)
        } else {
            links.verify_unsubscribe(&token, lookup)
        };
        Ok(id.and(found))
    })
    .await?
    .ok_or(Failure::BadLink)
}

// ---- unsubscribe --------------------------------------------------------------------------

/// GET: a page with one button; following the link never unsubscribes by itself (mail
/// scanners fetch links).
async fn unsubscribe_page(
    State(app): State<watch::Receiver<App>>,
    Path(token): Path<String>,
) -> Result<Response, Failure> {
    let app = app.borrow().clone();
    let s = match subscriber_for(&app, &token, false).await {
        Err(Failure::BadLink) => return already_unsubscribed(&app, &token).await,
        other => other?,
    };
    Ok(render(
        "web/unsubscribe.html",
        context! {
            email => s.email,
            queries => s.queries.len(),
            action => format!("/unsubscribe/{token}"),
            csrf => app.links.csrf_token(s.id, &s.email),
            manage => local_path(&app.links.manage_url(s.id, &s.email)),
        },
    )
    .into_response())
}

/// POST: unsubscribes at once (RFC 8058 one-click: whatever the body, no cookies, no
/// redirect). Idempotent: posting again answers the same.
async fn unsubscribe(
    State(app): State<watch::Receiver<App>>,
    Path(token): Path<String>,
) -> Result<Response, Failure> {
    let app = app.borrow().clone();
    let s = match subscriber_for(&app, &token, false).await {
        Err(Failure::BadLink) => return already_unsubscribed(&app, &token).await,
        other => other?,
    };
    let store = app.store.clone();
    blocking(move || store.unsubscribe(s.id, &token, Utc::now())).await?;
    info!(subscriber = s.id, "unsubscribed from the web");
    Ok(unsubscribed_page())
}

/// A token that names no current subscriber: fine if it was used to unsubscribe (the
/// link keeps working), a bad link otherwise.
async fn already_unsubscribed(app: &App, token: &str) -> Result<Response, Failure> {
    let (store, token) = (app.store.clone(), token.to_string());
    if blocking(move || store.was_unsubscribed(&token)).await? {
        Ok(unsubscribed_page())
    } else {
        Err(Failure::BadLink)
    }
}

fn unsubscribed_page() -> Response {
    message(
        "You are unsubscribed",
        &[
            "You will get no more digests from Tidings, and your searches are deleted.",
            "A digest already on its way may still arrive.",
        ],
        Some(("/", "Subscribe again")),
    )
}

// ---- manage -------------------------------------------------------------------------------

/// `?done=` values the manage page turns into a notice after a change.
fn notice(done: Option<&str>) -> Option<&'static str> {
    match done? {
        "added" => Some("Search added. It matches news from now on."),
        "removed" => Some("Search removed."),
        "schedule" => Some("Schedule saved."),
        _ => None,
    }
}

async fn manage_page(
    State(app): State<watch::Receiver<App>>,
    Path(token): Path<String>,
    UrlQuery(params): UrlQuery<HashMap<String, String>>,
) -> Result<Response, Failure> {
    let app = app.borrow().clone();
    let s = subscriber_for(&app, &token, true).await?;
    let page = manage_view(
        &app,
        &token,
        &s,
        notice(params.get("done").map(String::as_str)),
        None,
        "",
    )
    .await?;
    Ok(page.into_response())
}

async fn manage_view(
    app: &App,
    token: &str,
    s: &Subscriber,
    notice: Option<&str>,
    error: Option<&str>,
    query: &str,
) -> Result<axum::response::Html<String>, Failure> {
    let store = app.store.clone();
    let id = s.id;
    let subscriptions = blocking(move || store.subscriptions_of(id)).await?;
    let subscriptions: Vec<_> = subscriptions
        .into_iter()
        .map(|(id, query)| {
            let feed = local_path(&app.links.feed_url(id, &s.email));
            context! { id, query, feed }
        })
        .collect();
    Ok(render(
        "web/manage.html",
        context! {
            email => &s.email,
            paused => s.paused_at.is_some(),
            notice,
            error,
            query,
            subscriptions,
            base => format!("/manage/{token}"),
            csrf => app.links.csrf_token(s.id, &s.email),
            frequency => s.schedule.spec(),
            timezone => s.timezone.name(),
            unsubscribe => local_path(&app.links.unsubscribe_url(s.id, &s.email)),
        },
    ))
}

/// A form posted to a manage page: the subscriber, once the token and the anti-forgery
/// field check out, and the fields.
async fn manage_form(
    app: &App,
    token: &str,
    form: Result<Form<HashMap<String, String>>, FormRejection>,
) -> Result<(Subscriber, HashMap<String, String>), Failure> {
    let s = subscriber_for(app, token, true).await?;
    let Form(fields) = form.map_err(|e| match e {
        FormRejection::BytesRejection(_) => Failure::TooLarge,
        other => Failure::BadForm(format!(
            "The form could not be read ({}).",
            other.body_text()
        )),
    })?;
    let csrf = fields.get("csrf").map(String::as_str).unwrap_or("");
    if !app.links.verify_csrf(s.id, &s.email, csrf) {
        return Err(Failure::Forbidden);
    }
    Ok((s, fields))
}

fn back_to(token: &str, done: &str) -> Response {
    Redirect::to(&format!("/manage/{token}?done={done}")).into_response()
}

async fn add_query(
    State(app): State<watch::Receiver<App>>,
    Path(token): Path<String>,
    form: Result<Form<HashMap<String, String>>, FormRejection>,
) -> Result<Response, Failure> {
    let app = app.borrow().clone();
    let (s, fields) = manage_form(&app, &token, form).await?;
    let query = fields.get("query").map(|q| q.trim()).unwrap_or("");
    let problem = if query.is_empty() {
        Some("Type a search first.".to_string())
    } else if query.chars().count() > MAX_QUERY_CHARS {
        Some(format!(
            "A search may be at most {MAX_QUERY_CHARS} characters."
        ))
    } else if s.queries.len() >= MAX_QUERIES {
        Some(format!(
            "You have {MAX_QUERIES} searches, the most there can be; remove one first."
        ))
    } else {
        Query::parse(query)
            .err()
            .map(|e| format!("That search does not work: {e}"))
    };
    if let Some(problem) = problem {
        let page = manage_view(&app, &token, &s, None, Some(&problem), query).await?;
        return Ok((StatusCode::BAD_REQUEST, page).into_response());
    }
    let (store, email, query) = (app.store.clone(), s.email.clone(), query.to_string());
    let (schedule, tz) = (s.schedule, s.timezone);
    blocking(move || store.add_subscription(&email, &query, schedule, tz, Utc::now())).await?;
    Ok(back_to(&token, "added"))
}

async fn remove_query(
    State(app): State<watch::Receiver<App>>,
    Path(token): Path<String>,
    form: Result<Form<HashMap<String, String>>, FormRejection>,
) -> Result<Response, Failure> {
    let app = app.borrow().clone();
    let (s, fields) = manage_form(&app, &token, form).await?;
    let Some(subscription) = fields
        .get("subscription")
        .and_then(|v| v.parse::<i64>().ok())
    else {
        return Err(Failure::BadForm(
            "Which search? The form named none.".into(),
        ));
    };
    let store = app.store.clone();
    // Someone else's subscription id removes nothing: the store checks the owner.
    blocking(move || store.remove_subscription(s.id, subscription)).await?;
    Ok(back_to(&token, "removed"))
}

async fn set_schedule(
    State(app): State<watch::Receiver<App>>,
    Path(token): Path<String>,
    form: Result<Form<HashMap<String, String>>, FormRejection>,
) -> Result<Response, Failure> {
    let app = app.borrow().clone();
    let (s, fields) = manage_form(&app, &token, form).await?;
    let field = |name: &str| fields.get(name).map(|v| v.trim()).unwrap_or("");
    let schedule = Schedule::parse(field("frequency"), app.config.digest.daily_at);
    let tz = field("tz").parse::<Tz>();
    let (schedule, tz) = match (schedule, tz) {
        (Ok(schedule), Ok(tz)) => (schedule, tz),
        (Err(e), _) => {
            let page = manage_view(&app, &token, &s, None, Some(&e.to_string()), "").await?;
            return Ok((StatusCode::BAD_REQUEST, page).into_response());
        }
        (_, Err(_)) => {
            let why = format!(
                "Unknown time zone {:?}: use a name like America/New_York or Europe/London.",
                field("tz")
            );
            let page = manage_view(&app, &token, &s, None, Some(&why), "").await?;
            return Ok((StatusCode::BAD_REQUEST, page).into_response());
        }
    };
    let store = app.store.clone();
    blocking(move || store.set_schedule(s.id, schedule, tz, Utc::now())).await?;
    Ok(back_to(&token, "schedule"))
}

// ---- admin -------------------------------------------------------------------------------

/// Failed messages listed on the admin page.
const ADMIN_FAILED: usize = 20;

/// `GET /admin`: feed health, the outbox and subscriber counts, behind HTTP Basic auth
/// whose password is `TIDINGS_ADMIN_TOKEN` (any user name). Without that variable the
/// page does not exist.
async fn admin_page(
    State(app): State<watch::Receiver<App>>,
    headers: axum::http::HeaderMap,
) -> Result<Response, Failure> {
    let app = app.borrow().clone();
    let Some(expected) = app.admin_token.clone() else {
        return Err(Failure::NotFound);
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(basic_password);
    if !given.is_some_and(|p| same(p.as_bytes(), expected.as_bytes())) {
        return Err(Failure::Unauthorized);
    }
    let store = app.store.clone();
    let (feeds, outbox, subscribers) = blocking(move || {
        Ok((
            store.feed_statuses()?,
            store.outbox()?,
            store.subscribers()?,
        ))
    })
    .await?;
    let time = |t: Option<chrono::DateTime<Utc>>| {
        t.map(|t| t.format("%Y-%m-%d %H:%M UTC").to_string())
            .unwrap_or_else(|| "never".into())
    };
    let feeds: Vec<_> = feeds
        .iter()
        .filter(|f| f.active)
        .map(|f| {
            context! {
                id => &f.id,
                name => &f.name,
                status => f.last_status.as_deref().unwrap_or("not polled yet"),
                error => &f.last_error,
                failures => f.consecutive_failures,
                failing => f.consecutive_failures > 0 || f.gone,
                last_success => time(f.last_success_at),
                next_poll => if f.gone { "never (gone)".to_string() } else { time(Some(f.next_poll_at)) },
                items => f.items,
            }
        })
        .collect();
    let pending: Vec<_> = outbox.iter().filter(|m| m.status == "pending").collect();
    let failed: Vec<_> = outbox.iter().filter(|m| m.status == "failed").collect();
    let failed_rows: Vec<_> = failed
        .iter()
        .rev()
        .take(ADMIN_FAILED)
        .map(|m| {
            context! {
                id => m.id,
                to => &m.recipient,
                created => time(Some(m.created_at)),
                error => m.last_error.as_deref().unwrap_or(""),
            }
        })
        .collect();
    Ok(render(
        "web/admin.html",
        context! {
            subscribers => subscribers.len(),
            paused => subscribers.iter().filter(|s| s.paused_at.is_some()).count(),
            searches => subscribers.iter().map(|s| s.queries.len()).sum::<usize>(),
            pending => pending.len(),
            oldest => pending.iter().map(|m| m.created_at).min().map(|t| time(Some(t))),
            failed_count => failed.len(),
            failed => failed_rows,
            feeds,
        },
    )
    .into_response())
}

/// The password of an `Authorization: Basic …` header.
fn basic_password(value: &str) -> Option<String> {
    use base64::Engine as _;
    let encoded = value.strip_prefix("Basic ")?.trim();
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    Some(text.split_once(':')?.1.to_string())
}

/// Constant-time equality of two secrets (of possibly different lengths).
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

// ---- a subscription's matches as Atom ------------------------------------------------------

/// Entries in a subscription's feed.
const FEED_ENTRIES: usize = 50;

/// `GET /feed/TOKEN`: the latest matches of one subscription as an Atom feed, for people
/// who would rather follow their search in a feed reader than by mail.
async fn matches_feed(
    State(app): State<watch::Receiver<App>>,
    Path(token): Path<String>,
) -> Result<Response, Failure> {
    let app = app.borrow().clone();
    let (store, links, t) = (app.store.clone(), app.links.clone(), token.clone());
    let found = blocking(move || {
        let mut query = None;
        let id = links.verify_feed(&t, |id| {
            let (q, email) = store.subscription(id).ok().flatten()?;
            query = Some(q);
            Some(email)
        });
        match (id, query) {
            (Some(id), Some(query)) => Ok(Some((
                id,
                query,
                store.subscription_matches(id, FEED_ENTRIES)?,
            ))),
            _ => Ok(None),
        }
    })
    .await?;
    let Some((_, query, items)) = found else {
        return Err(Failure::BadLink);
    };
    let self_url = app.links.feed_url_from_token(&token);
    let xml = atom_feed(&query, &self_url, &items);
    Ok((
        [(header::CONTENT_TYPE, "application/atom+xml; charset=utf-8")],
        xml,
    )
        .into_response())
}

fn atom_feed(query: &str, self_url: &str, items: &[crate::store::MatchedItem]) -> String {
    use atom_syndication::{Entry, Feed, Link, Text};
    let when = |t: chrono::DateTime<Utc>| t.fixed_offset();
    let mut feed = Feed::default();
    feed.set_title(Text::plain(format!("Tidings: {query}")));
    feed.set_id(self_url);
    feed.set_updated(when(items.first().map_or_else(Utc::now, |i| i.matched_at)));
    let mut me = Link::default();
    me.set_href(self_url);
    me.set_rel("self");
    feed.set_links(vec![me]);
    feed.set_entries(
        items
            .iter()
            .map(|item| {
                let mut entry = Entry::default();
                entry.set_title(Text::plain(item.title.clone()));
                entry.set_id(
                    item.link
                        .clone()
                        .unwrap_or_else(|| format!("{self_url}#item-{}", item.item_id)),
                );
                entry.set_updated(when(item.matched_at));
                entry.set_published(item.published.map(when));
                if let Some(link) = &item.link {
                    let mut l = Link::default();
                    l.set_href(link.clone());
                    entry.set_links(vec![l]);
                }
                let summary: String = item.summary.chars().take(600).collect();
                entry.set_summary(Some(Text::plain(format!("{} — {summary}", item.feed_name))));
                entry
            })
            .collect::<Vec<_>>(),
    );
    feed.to_string()
}

/// The path of one of our own URLs, so pages link within whatever host serves them.
fn local_path(url: &str) -> String {
    url::Url::parse(url).map_or_else(|_| url.to_string(), |u| u.path().to_string())
}
