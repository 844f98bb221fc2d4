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
use std::sync::{Arc, LazyLock, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::Result;
use axum::Router;
use axum::extract::rejection::FormRejection;
use axum::extract::{DefaultBodyLimit, Path, Query as UrlQuery, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Extension, Form, middleware};
use chrono::Utc;
use minijinja::{Environment, Value, context};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::digest::{Schedule, parse_time_zone};
use crate::locale::Locale;
use crate::matcher::Query;
use crate::pipeline::App;
use crate::store::{
    OutboxStatus, PollStatus, SignupAdmission, SignupId, SignupLimits, Subscriber, SubscriberId,
    SubscriptionId,
};
use crate::token::token_id;

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
    crate::locale::install(&mut env);
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
        (
            "web/subscribe.html",
            include_str!("../templates/web/subscribe.html"),
        ),
        (
            "web/confirm.html",
            include_str!("../templates/web/confirm.html"),
        ),
        (
            "web/confirm_mail.txt",
            include_str!("../templates/web/confirm_mail.txt"),
        ),
        (
            "web/confirm_mail.html",
            include_str!("../templates/web/confirm_mail.html"),
        ),
    ] {
        if let Err(e) = env.add_template(name, source) {
            error!(template = name, error = %e, "bad web template");
        }
    }
    env
});

/// Binds `addr` and serves the subscriber pages until `stop` is cancelled, within
/// `[web]`'s deadlines and connection caps ([`crate::listener`]). Returns the address
/// actually bound.
pub async fn serve(
    addr: SocketAddr,
    app: watch::Receiver<App>,
    stop: CancellationToken,
) -> Result<SocketAddr> {
    let limits = app.borrow().config.web.limits;
    let router = router(app);
    let bound = crate::listener::serve("web", "[web].listen", addr, router, limits, stop).await?;
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
        .route("/", get(subscribe_page))
        .route("/subscribe", post(subscribe))
        .route("/confirm/{token}", get(confirm_page).post(confirm))
        .route("/manage/{token}/add", post(add_query))
        .route("/manage/{token}/remove", post(remove_query))
        .route("/manage/{token}/pause", post(pause_query))
        .route("/manage/{token}/schedule", post(set_schedule))
        .route("/manage/{token}/outlets", post(set_new_outlets))
        .route("/manage/{token}/languages", post(cross_languages))
        .route("/manage/{token}/language", post(set_language))
        .route("/manage/{token}/destination", post(add_destination))
        .route(
            "/manage/{token}/destination/confirm",
            post(confirm_destination),
        )
        .route(
            "/manage/{token}/destination/change",
            post(change_destination),
        )
        .route("/manage/{token}/route", post(route_search))
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(app.clone(), under_root))
        .layer(Extension(Arc::new(AdminGuard::default())))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .layer(middleware::map_response(security_headers))
        .with_state(app)
}

tokio::task_local! {
    /// The path every link on the page being answered starts with ([`Links::root`]).
    static ROOT: String;
}

/// Answers the request with [`ROOT`] set from the config of the moment (a reload may
/// change `base_url`), for [`render`] and the handlers that build links.
async fn under_root(
    State(app): State<watch::Receiver<App>>,
    request: axum::extract::Request,
    next: middleware::Next,
) -> Response {
    let root = app.borrow().links.root().to_string();
    ROOT.scope(root, next.run(request)).await
}

/// `path` (no leading `/`) under the root of the pages: `manage/T` → `/tidings/manage/T`.
fn page_path(path: &str) -> String {
    let root = ROOT
        .try_with(Clone::clone)
        .ok()
        // Never a network-path reference (`//host/`), whatever the config let through.
        .filter(|root| root.starts_with('/') && !root.starts_with("//"))
        .unwrap_or_else(|| "/".to_string());
    format!("{root}{path}")
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
    Expired,
    TooMany,
    /// Too many wrong admin passwords from one client: try again after this long.
    TooManyTries(Duration),
    TooLarge,
    BadForm(String),
    /// A whole page to answer with (a form refused, shown again with why).
    Page(StatusCode, String),
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
            Failure::TooManyTries(wait) => {
                let seconds = wait.as_secs().max(1);
                let line = format!(
                    "Too many wrong passwords from your network. Try again in {seconds} seconds."
                );
                let body = render(
                    "web/message.html",
                    context! { heading => "Admin", lines => [line], link => None::<String> },
                );
                return (
                    StatusCode::TOO_MANY_REQUESTS,
                    [(header::RETRY_AFTER, seconds.to_string())],
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
            Failure::Expired => (
                StatusCode::GONE,
                "This link has expired",
                "Confirmation links work for 48 hours. Sign up again to get a new one.".to_string(),
            ),
            Failure::TooMany => (
                StatusCode::TOO_MANY_REQUESTS,
                "Too many sign-ups",
                "There have been too many sign-ups from your network. Please try again in an hour."
                    .to_string(),
            ),
            Failure::Page(status, page) => {
                return (status, axum::response::Html(page)).into_response();
            }
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
        .and_then(|t| t.render(context! { root => page_path(""), ..cx }))
        .unwrap_or_else(|e| {
            error!(template = name, error = %e, "rendering a page");
            "<!DOCTYPE html><title>Tidings</title><p>Something went wrong on our side.</p>"
                .to_string()
        });
    axum::response::Html(html)
}

/// A page of a few lines, in a subscriber's language (its texts already translated).
fn message_in(
    locale: &Locale,
    heading: &str,
    lines: &[&str],
    link: Option<(&str, &str)>,
) -> Response {
    render(
        "web/message.html",
        context! {
            lang => &locale.code,
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

/// Runs CPU-heavy work (checking searches against the config) off the async threads.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T, Failure> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Failure::Internal(e.into()))?
        .map_err(Failure::Internal)
}

/// The subscriber a manage token (`manage`) or unsubscribe token names, if genuine. A
/// database that cannot answer is an error, not a bad link.
async fn subscriber_for(app: &App, token: &str, manage: bool) -> Result<Subscriber, Failure> {
    let id = SubscriberId(token_id(token).ok_or(Failure::BadLink)?);
    let found = app.store.subscriber_by_id(id).await?;
    let email = found.as_ref().map(|s| s.email.clone());
    let genuine = if manage {
        app.links.verify_manage(token, |_| email)
    } else {
        app.links.verify_unsubscribe(token, |_| email)
    };
    genuine.and(found).ok_or(Failure::BadLink)
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
            lang => &crate::locale::get(&s.locale).code,
            email => s.email,
            queries => s.queries.len(),
            action => page_path(&format!("unsubscribe/{token}")),
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
    app.store.unsubscribe(s.id, &token, app.store.now()).await?;
    info!(subscriber = s.id.0, "unsubscribed from the web");
    Ok(unsubscribed_page(crate::locale::get(&s.locale)))
}

/// A token that names no current subscriber: fine if it was used to unsubscribe (the
/// link keeps working), a bad link otherwise.
async fn already_unsubscribed(app: &App, token: &str) -> Result<Response, Failure> {
    if app.store.was_unsubscribed(token).await? {
        Ok(unsubscribed_page(crate::locale::get(
            crate::locale::DEFAULT,
        )))
    } else {
        Err(Failure::BadLink)
    }
}

fn unsubscribed_page(l: &Locale) -> Response {
    message_in(
        l,
        l.text("unsubscribe.done"),
        &[
            l.text("unsubscribe.done_line"),
            l.text("unsubscribe.on_its_way"),
        ],
        Some((
            &page_path(&format!("?lang={}", l.code)),
            l.text("unsubscribe.again"),
        )),
    )
}

// ---- manage -------------------------------------------------------------------------------

/// `?done=` values the manage page turns into a notice after a change: the notice's key
/// in the locale files.
fn notice(done: Option<&str>) -> Option<&'static str> {
    Some(match done? {
        "added" => "notice.added",
        "removed" => "notice.removed",
        "schedule" => "notice.schedule",
        "outlets" => "notice.outlets",
        "paused" => "notice.paused",
        "resumed" => "notice.resumed",
        "unchanged" => "notice.unchanged",
        "confirmed" => "notice.confirmed",
        "dest-paused" => "notice.dest_paused",
        "dest-resumed" => "notice.dest_resumed",
        "dest-removed" => "notice.dest_removed",
        "dest-tested" => "notice.dest_tested",
        "dest-resent" => "notice.dest_resent",
        "dest-unchanged" => "notice.dest_unchanged",
        "routed" => "notice.routed",
        "crossing" => "notice.crossing",
        "not-crossing" => "notice.not_crossing",
        "language" => "notice.language",
        _ => return None,
    })
}

async fn manage_page(
    State(app): State<watch::Receiver<App>>,
    Path(token): Path<String>,
    UrlQuery(params): UrlQuery<HashMap<String, String>>,
) -> Result<Response, Failure> {
    let app = app.borrow().clone();
    let s = subscriber_for(&app, &token, true).await?;
    let locale = crate::locale::get(&s.locale);
    let page = manage_view(
        &app,
        &token,
        &s,
        notice(params.get("done").map(String::as_str)).map(|key| locale.text(key)),
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
    manage_view_with(app, token, s, notice, error, query, None, None).await
}

/// The manage page, with what only the answer to adding a destination shows: its
/// signing secret (once), or the form as it was typed when it was refused.
#[allow(clippy::too_many_arguments)]
async fn manage_view_with(
    app: &App,
    token: &str,
    s: &Subscriber,
    notice: Option<&str>,
    error: Option<&str>,
    query: &str,
    shown_once: Option<&str>,
    destination_form: Option<&HashMap<String, String>>,
) -> Result<axum::response::Html<String>, Failure> {
    let subscriptions = app.store.subscription_states(s.id).await?;
    let channels = app.store.channels(Some(s.id)).await?;
    let not_to_email = app.store.searches_not_to_email(s.id).await?;
    let crossing = app.store.searches_crossing_languages(s.id).await?;
    let subscriptions: Vec<_> = subscriptions
        .into_iter()
        .map(|(id, query, paused)| {
            let feed = local_path(&app.links.feed_url(id, &s.email));
            let to_email = !not_to_email.contains(&id);
            let routes: Vec<Value> = channels
                .iter()
                .map(|c| {
                    let takes = c.every_search || c.searches.contains(&id);
                    context! { id => c.id.0, name => &c.name, takes }
                })
                .collect();
            let crosses = crossing.contains(&id);
            context! { id, query, paused, feed, to_email, routes, crosses }
        })
        .collect();
    let destinations: Vec<Value> = channels
        .iter()
        .map(|c| {
            let target = serde_json::from_str::<crate::push::Target>(&c.target)
                .map(|t| t.describe())
                .unwrap_or_default();
            context! {
                id => c.id.0,
                name => &c.name,
                kind => c.kind.as_str(),
                target,
                state => c.state.as_str(),
                paused_reason => c.paused_reason.as_deref(),
                last_error => c.last_error.as_deref(),
                failures => c.failures,
            }
        })
        .collect();
    Ok(render(
        "web/manage.html",
        context! {
            // The locale the page is in: English for one Tidings no longer has.
            lang => &crate::locale::get(&s.locale).code,
            locales => locale_choices(),
            email => &s.email,
            paused => s.paused_at.is_some(),
            notice,
            error,
            query,
            subscriptions,
            destinations,
            shown_once,
            form => destination_form,
            base => page_path(&format!("manage/{token}")),
            csrf => app.links.csrf_token(s.id, &s.email),
            frequency => s.schedule.spec(),
            timezone => s.timezone.name(),
            new_outlets => s.new_outlets.as_str(),
            outlet_choices => [
                ("next", "List it in my next digest, under \"More coverage\""),
                ("never", "Nothing: one alert per story is enough"),
                ("always", "Alert me as for news"),
            ]
            .map(|(value, label)| context! { value, label }),
            unsubscribe => local_path(&app.links.unsubscribe_url(s.id, &s.email)),
        },
    ))
}

/// The fields of a posted form, or why it could not be read (too large, wrong type).
fn read_form(
    form: Result<Form<HashMap<String, String>>, FormRejection>,
) -> Result<HashMap<String, String>, Failure> {
    form.map(|Form(fields)| fields).map_err(|e| match e {
        FormRejection::BytesRejection(_) => Failure::TooLarge,
        other => Failure::BadForm(format!(
            "The form could not be read ({}).",
            other.body_text()
        )),
    })
}

/// A form posted to a manage page: the subscriber, once the token and the anti-forgery
/// field check out, and the fields.
async fn manage_form(
    app: &App,
    token: &str,
    form: Result<Form<HashMap<String, String>>, FormRejection>,
) -> Result<(Subscriber, HashMap<String, String>), Failure> {
    let s = subscriber_for(app, token, true).await?;
    let fields = read_form(form)?;
    let csrf = fields.get("csrf").map(String::as_str).unwrap_or("");
    if !app.links.verify_csrf(s.id, &s.email, csrf) {
        return Err(Failure::Forbidden);
    }
    Ok((s, fields))
}

fn back_to(token: &str, done: &str) -> Response {
    Redirect::to(&page_path(&format!("manage/{token}?done={done}"))).into_response()
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
        let (config, text) = (app.config.clone(), vec![query.to_string()]);
        blocking(move || Ok(config.check_searches(&text)))
            .await?
            .into_iter()
            .find_map(Result::err)
            .map(|e| format!("That search does not work: {e}"))
    };
    if let Some(problem) = problem {
        let page = manage_view(&app, &token, &s, None, Some(&problem), query).await?;
        return Ok((StatusCode::BAD_REQUEST, page).into_response());
    }
    app.store
        .add_subscription(&s.email, query, s.schedule, s.timezone, app.store.now())
        .await?;
    Ok(back_to(&token, "added"))
}

/// The search a manage form names (its `subscription` field).
fn subscription_field(fields: &HashMap<String, String>) -> Result<SubscriptionId, Failure> {
    fields
        .get("subscription")
        .and_then(|v| v.parse::<SubscriptionId>().ok())
        .ok_or_else(|| Failure::BadForm("Which search? The form named none.".into()))
}

async fn remove_query(
    State(app): State<watch::Receiver<App>>,
    Path(token): Path<String>,
    form: Result<Form<HashMap<String, String>>, FormRejection>,
) -> Result<Response, Failure> {
    let app = app.borrow().clone();
    let (s, fields) = manage_form(&app, &token, form).await?;
    let subscription = subscription_field(&fields)?;
    // Someone else's subscription id removes nothing: the store checks the owner.
    let removed = app.store.remove_subscription(s.id, subscription).await?;
    Ok(back_to(
        &token,
        if removed { "removed" } else { "unchanged" },
    ))
}

/// The language of a subscriber's digests and pages, chosen on the manage page.
async fn set_language(
    State(app): State<watch::Receiver<App>>,
    Path(token): Path<String>,
    form: Result<Form<HashMap<String, String>>, FormRejection>,
) -> Result<Response, Failure> {
    let app = app.borrow().clone();
    let (s, fields) = manage_form(&app, &token, form).await?;
    let chosen = fields.get("locale").and_then(|c| crate::locale::find(c));
    let Some(locale) = chosen else {
        let why = "Choose one of the languages.";
        let page = manage_view(&app, &token, &s, None, Some(why), "").await?;
        return Ok((StatusCode::BAD_REQUEST, page).into_response());
    };
    app.store.set_locale(s.id, &locale.code).await?;
    Ok(back_to(&token, "language"))
}

/// Every locale as the pages offer them: code and name.
fn locale_choices() -> Vec<minijinja::Value> {
    crate::locale::all()
        .iter()
        .map(|l| context! { code => &l.code, name => &l.name })
        .collect()
}

/// Turns crossing languages on or off for one of the subscriber's searches.
async fn cross_languages(
    State(app): State<watch::Receiver<App>>,
    Path(token): Path<String>,
    form: Result<Form<HashMap<String, String>>, FormRejection>,
) -> Result<Response, Failure> {
    let app = app.borrow().clone();
    let (s, fields) = manage_form(&app, &token, form).await?;
    let subscription = subscription_field(&fields)?;
    let crosses = fields.get("cross").map(String::as_str) == Some("1");
    let changed = app
        .store
        .set_crosses_languages(s.id, subscription, crosses)
        .await?;
    let done = match (changed, crosses) {
        (false, _) => "unchanged",
        (true, true) => "crossing",
        (true, false) => "not-crossing",
    };
    Ok(back_to(&token, done))
}

async fn pause_query(
    State(app): State<watch::Receiver<App>>,
    Path(token): Path<String>,
    form: Result<Form<HashMap<String, String>>, FormRejection>,
) -> Result<Response, Failure> {
    let app = app.borrow().clone();
    let (s, fields) = manage_form(&app, &token, form).await?;
    let subscription = subscription_field(&fields)?;
    let pause = fields.get("paused").map(String::as_str) == Some("1");
    let changed = app
        .store
        .set_subscription_paused(s.id, subscription, pause, app.store.now())
        .await?;
    let done = match (changed, pause) {
        (false, _) => "unchanged",
        (true, true) => "paused",
        (true, false) => "resumed",
    };
    Ok(back_to(&token, done))
}

/// Adds a destination from the manage page: checked, stored unconfirmed, and its
/// verification message (with the code) sent at once. The answer shows a webhook's
/// signing secret, once.
async fn add_destination(
    State(app): State<watch::Receiver<App>>,
    Path(token): Path<String>,
    form: Result<Form<HashMap<String, String>>, FormRejection>,
) -> Result<Response, Failure> {
    let app = app.borrow().clone();
    let (s, fields) = manage_form(&app, &token, form).await?;
    let field = |name: &str| {
        fields
            .get(name)
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
    };
    let now = app.store.now();
    let spec = crate::push::Spec {
        kind: field("kind").unwrap_or_default(),
        url: field("url"),
        token: field("token"),
        chat_id: field("chat_id"),
        homeserver: field("homeserver"),
        room: field("room"),
        api: None,
    };
    let name = field("name").unwrap_or_else(|| spec.kind.clone());
    // The limits (destinations, messages a day) hold in the transaction that adds it.
    let added = crate::push::add_channel(
        &app.store,
        &app.config.channels,
        &s,
        &name,
        &spec,
        crate::store::ChannelOrigin::Subscriber,
        Vec::new(),
        now,
    )
    .await
    .map_err(|e| format!("That destination cannot be added: {e:#}."));
    let added = match added {
        Ok(added) => added,
        Err(why) => {
            let page =
                manage_view_with(&app, &token, &s, None, Some(&why), "", None, Some(&fields))
                    .await?;
            return Ok((StatusCode::BAD_REQUEST, page).into_response());
        }
    };
    info!(subscriber = s.id.0, channel = added.id.0, kind = %added.target.kind(), "destination added from the web; verification queued");
    push_soon(&app);
    let notice = format!(
        "Destination added. We sent a message with a code to it: enter the code below to \
         confirm it. Nothing else is sent there until then.{}",
        if added.signing_secret.is_some() {
            " Your webhook's signing secret is below: copy it now, it is not shown again."
        } else {
            ""
        }
    );
    let page = manage_view_with(
        &app,
        &token,
        &s,
        Some(&notice),
        None,
        "",
        added.signing_secret.as_deref(),
        None,
    )
    .await?;
    Ok(page.into_response())
}

/// Sends what waits for destinations now, rather than at the next digest tick.
fn push_soon(app: &App) {
    let app = app.clone();
    tokio::spawn(async move {
        if let Err(e) = crate::pipeline::send_push(&app, app.store.now()).await {
            warn!(error = %format!("{e:#}"), "sending to destinations failed");
        }
    });
}

/// The subscriber's destination a form names (its `destination` field).
async fn destination_field(
    app: &App,
    s: &Subscriber,
    fields: &HashMap<String, String>,
) -> Result<Option<crate::store::Channel>, Failure> {
    let id = fields
        .get("destination")
        .and_then(|v| v.parse::<crate::store::ChannelId>().ok())
        .ok_or_else(|| Failure::BadForm("Which destination? The form named none.".into()))?;
    Ok(app
        .store
        .channel(id)
        .await?
        .filter(|c| c.subscriber_id == s.id))
}

async fn confirm_destination(
    State(app): State<watch::Receiver<App>>,
    Path(token): Path<String>,
    form: Result<Form<HashMap<String, String>>, FormRejection>,
) -> Result<Response, Failure> {
    use crate::store::Confirmation;
    let app = app.borrow().clone();
    let (s, fields) = manage_form(&app, &token, form).await?;
    let Some(channel) = destination_field(&app, &s, &fields).await? else {
        return Ok(back_to(&token, "dest-unchanged"));
    };
    let code = fields.get("code").map(String::as_str).unwrap_or("");
    let why = match app
        .store
        .confirm_channel(channel.id, code, app.store.now())
        .await?
    {
        Confirmation::Confirmed => return Ok(back_to(&token, "confirmed")),
        Confirmation::NotWaiting => return Ok(back_to(&token, "dest-unchanged")),
        Confirmation::Wrong { tries_left } => format!(
            "That is not the code sent to {:?}. {} left.",
            channel.name,
            crate::output::count(tries_left as usize, "try")
        ),
        Confirmation::Locked => format!(
            "Too many wrong codes for {:?}: remove it and add it again for a new code.",
            channel.name
        ),
    };
    let page = manage_view(&app, &token, &s, None, Some(&why), "").await?;
    Ok((StatusCode::BAD_REQUEST, page).into_response())
}

async fn change_destination(
    State(app): State<watch::Receiver<App>>,
    Path(token): Path<String>,
    form: Result<Form<HashMap<String, String>>, FormRejection>,
) -> Result<Response, Failure> {
    let app = app.borrow().clone();
    let (s, fields) = manage_form(&app, &token, form).await?;
    let Some(channel) = destination_field(&app, &s, &fields).await? else {
        return Ok(back_to(&token, "dest-unchanged"));
    };
    let now = app.store.now();
    let done = match fields.get("action").map(String::as_str) {
        Some("pause") => app
            .store
            .pause_channel(channel.id, "paused by you")
            .await?
            .then_some("dest-paused"),
        Some("resume") => {
            let resumed = app.store.resume_channel(channel.id, now).await?;
            if resumed {
                push_soon(&app);
            }
            resumed.then_some("dest-resumed")
        }
        Some("remove") => app
            .store
            .remove_channel(channel.id)
            .await?
            .then_some("dest-removed"),
        Some("test") if channel.state == crate::store::ChannelState::Active => {
            let notice = crate::push::test_notice(&channel, now)?;
            notice_or_refuse(&app, &token, &s, channel.id, notice, "dest-tested").await?
        }
        Some("resend") => match app.store.pending_code(channel.id).await? {
            Some(code) => {
                let notice = crate::push::verification(&s.email, &channel.name, &code, now)?;
                notice_or_refuse(&app, &token, &s, channel.id, notice, "dest-resent").await?
            }
            None => None,
        },
        Some("test") => None,
        _ => {
            return Err(Failure::BadForm(
                "What should change? The form said nothing.".into(),
            ));
        }
    };
    Ok(back_to(&token, done.unwrap_or("dest-unchanged")))
}

/// Queues `notice` unless the subscriber had their notices for the day: then the page
/// says so (as `Err`, the answer to send).
async fn notice_or_refuse(
    app: &App,
    token: &str,
    s: &Subscriber,
    channel: crate::store::ChannelId,
    notice: crate::store::Notice,
    done: &'static str,
) -> Result<Option<&'static str>, Failure> {
    let queued = app
        .store
        .queue_notice_limited(
            channel,
            notice,
            crate::push::MAX_NOTICES_PER_DAY,
            app.store.now(),
        )
        .await?;
    if queued.is_none() {
        let why = crate::store::OverLimit::NoticesToday(crate::push::MAX_NOTICES_PER_DAY);
        let why = format!("Not sent: {why}.");
        let page = manage_view(app, token, s, None, Some(&why), "").await?;
        return Err(Failure::Page(StatusCode::TOO_MANY_REQUESTS, page.0));
    }
    push_soon(app);
    Ok(Some(done))
}

/// Where one search goes: email (`email` = 1) and the destinations ticked
/// (`to_<id>` = 1).
async fn route_search(
    State(app): State<watch::Receiver<App>>,
    Path(token): Path<String>,
    form: Result<Form<HashMap<String, String>>, FormRejection>,
) -> Result<Response, Failure> {
    let app = app.borrow().clone();
    let (s, fields) = manage_form(&app, &token, form).await?;
    let search = subscription_field(&fields)?;
    let mine = app.store.subscription_states(s.id).await?;
    if !mine.iter().any(|(id, _, _)| *id == search) {
        return Ok(back_to(&token, "unchanged"));
    }
    let to_email = fields.get("email").map(String::as_str) == Some("1");
    let chosen: Vec<crate::store::ChannelId> = app
        .store
        .channels(Some(s.id))
        .await?
        .into_iter()
        .filter(|c| fields.get(&format!("to_{}", c.id)).map(String::as_str) == Some("1"))
        .map(|c| c.id)
        .collect();
    if !to_email && chosen.is_empty() {
        let why = "A search must go somewhere: tick email or a destination (or remove the search).";
        let page = manage_view(&app, &token, &s, None, Some(why), "").await?;
        return Ok((StatusCode::BAD_REQUEST, page).into_response());
    }
    app.store.set_search_route(search, to_email, chosen).await?;
    Ok(back_to(&token, "routed"))
}

async fn set_new_outlets(
    State(app): State<watch::Receiver<App>>,
    Path(token): Path<String>,
    form: Result<Form<HashMap<String, String>>, FormRejection>,
) -> Result<Response, Failure> {
    let app = app.borrow().clone();
    let (s, fields) = manage_form(&app, &token, form).await?;
    let choice = fields.get("new_outlets").map(String::as_str).unwrap_or("");
    let Ok(choice) = choice.parse::<crate::store::NewOutlets>() else {
        return Err(Failure::BadForm(
            "Choose one of the options for stories you already got.".into(),
        ));
    };
    app.store.set_new_outlets(s.id, choice).await?;
    Ok(back_to(&token, "outlets"))
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
    let tz = parse_time_zone(field("tz"));
    let (schedule, tz) = match (schedule, tz) {
        (Ok(schedule), Some(tz)) => (schedule, tz),
        (Err(e), _) => {
            let page = manage_view(&app, &token, &s, None, Some(&e.to_string()), "").await?;
            return Ok((StatusCode::BAD_REQUEST, page).into_response());
        }
        (_, None) => {
            let why = format!(
                "Unknown time zone {:?}: use a name like America/New_York or Europe/London.",
                field("tz")
            );
            let page = manage_view(&app, &token, &s, None, Some(&why), "").await?;
            return Ok((StatusCode::BAD_REQUEST, page).into_response());
        }
    };
    app.store
        .set_schedule(s.id, schedule, tz, app.store.now())
        .await?;
    Ok(back_to(&token, "schedule"))
}

// ---- admin -------------------------------------------------------------------------------

/// Failed messages listed on the admin page.
const ADMIN_FAILED: usize = 20;
/// Searches naming missing feeds or tags listed on the admin page; the rest are counted.
const ADMIN_DANGLING: usize = 100;

/// Wrong admin passwords one client may try before it has to wait.
const ADMIN_FREE_TRIES: u32 = 10;
/// The first wait; each further wrong password doubles it, up to [`ADMIN_MAX_WAIT`].
const ADMIN_FIRST_WAIT: Duration = Duration::from_secs(30);
const ADMIN_MAX_WAIT: Duration = Duration::from_secs(3600);
/// A client's wrong passwords are forgotten this long after its last wait ends.
const ADMIN_FORGET_AFTER: Duration = Duration::from_secs(3600);
/// Clients remembered at once; past this the stalest are forgotten first.
const ADMIN_CLIENTS: usize = 10_000;

/// Password tries on `/admin` per client, in memory: after [`ADMIN_FREE_TRIES`] wrong
/// ones a client waits, longer after each further wrong one. A try is counted before
/// the password is checked, so parallel requests cannot slip past the count.
#[derive(Debug, Default)]
struct AdminGuard {
    clients: Mutex<HashMap<String, Tries>>,
}

#[derive(Debug, Clone, Copy)]
struct Tries {
    /// Tries since the last right password.
    count: u32,
    /// Until when the client must wait (the time of its last try if it need not).
    until: Instant,
}

impl AdminGuard {
    /// Counts a try by `client` at `now`, or says how long it must still wait.
    fn try_once(&self, client: &str, now: Instant) -> Result<(), Duration> {
        let mut clients = self.clients.lock().unwrap_or_else(PoisonError::into_inner);
        if clients.len() >= ADMIN_CLIENTS && !clients.contains_key(client) {
            clients.retain(|_, t| now < t.until + ADMIN_FORGET_AFTER);
            let stalest = (clients.len() >= ADMIN_CLIENTS)
                .then(|| clients.iter().min_by_key(|(_, t)| t.until))
                .flatten()
                .map(|(c, _)| c.clone());
            if let Some(stalest) = stalest {
                clients.remove(&stalest);
            }
        }
        let tries = clients.entry(client.to_string()).or_insert(Tries {
            count: 0,
            until: now,
        });
        if now < tries.until {
            return Err(tries.until - now);
        }
        if now >= tries.until + ADMIN_FORGET_AFTER {
            tries.count = 0;
        }
        tries.count += 1;
        tries.until = now + admin_wait(tries.count);
        Ok(())
    }

    /// The right password: the client's count starts over.
    fn passed(&self, client: &str) {
        let mut clients = self.clients.lock().unwrap_or_else(PoisonError::into_inner);
        clients.remove(client);
    }
}

/// How long a client waits after `tries` tries without the right password.
fn admin_wait(tries: u32) -> Duration {
    match tries.checked_sub(ADMIN_FREE_TRIES) {
        None => Duration::ZERO,
        Some(over) => ADMIN_FIRST_WAIT
            .saturating_mul(1 << over.min(16))
            .min(ADMIN_MAX_WAIT),
    }
}

/// `GET /admin`: feed health, the outbox, subscriber counts and the searches naming feeds
/// or tags the config does not have, behind HTTP Basic auth
/// whose password is `TIDINGS_ADMIN_TOKEN` (any user name). Without that variable the
/// page does not exist. Password guessing is slowed down per client ([`AdminGuard`]).
async fn admin_page(
    State(app): State<watch::Receiver<App>>,
    Extension(guard): Extension<Arc<AdminGuard>>,
    axum::extract::ConnectInfo(peer): axum::extract::ConnectInfo<SocketAddr>,
    headers: axum::http::HeaderMap,
) -> Result<Response, Failure> {
    let app = app.borrow().clone();
    let Some(expected) = app.admin_token.clone() else {
        return Err(Failure::NotFound);
    };
    let Some(given) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    else {
        // No password yet (a browser's first request): nothing to count.
        return Err(Failure::Unauthorized);
    };
    let client = client_of(peer, &headers);
    guard
        .try_once(&client, Instant::now())
        .map_err(Failure::TooManyTries)?;
    if !basic_password(given).is_some_and(|p| same(p.as_bytes(), expected.as_bytes())) {
        warn!(client = %client, "admin page: wrong password");
        return Err(Failure::Unauthorized);
    }
    guard.passed(&client);
    let feeds = app.store.feed_statuses().await?;
    let outbox = app.store.outbox().await?;
    let subscribers = app.store.subscribers().await?;
    let time = |t: Option<chrono::DateTime<Utc>>| {
        t.map(|t| t.format("%Y-%m-%d %H:%M UTC").to_string())
            .unwrap_or_else(|| "never".into())
    };
    let now = app.store.now();
    let feeds: Vec<_> = feeds
        .iter()
        .filter(|f| f.active)
        .map(|f| {
            let status = match f.claim.as_ref().filter(|c| c.until > now) {
                Some(c) => c.describe(),
                None => f.last_status.map_or("not polled yet", PollStatus::as_str).to_string(),
            };
            context! {
                id => &f.id,
                name => &f.name,
                status => status,
                error => &f.last_error,
                failures => f.consecutive_failures,
                failing => f.consecutive_failures > 0 || f.gone,
                last_success => time(f.last_success_at),
                next_poll => if f.gone { "never (gone)".to_string() } else { time(Some(f.next_poll_at)) },
                items => f.items,
                articles => f.articles.describe(),
            }
        })
        .collect();
    let dangling = crate::pipeline::dangling_searches(&app.config, &subscribers);
    let dangling_more = dangling.len().saturating_sub(ADMIN_DANGLING);
    let dangling: Vec<_> = dangling
        .into_iter()
        .take(ADMIN_DANGLING)
        .map(|d| {
            let missing: Vec<String> = d.unknown.iter().map(ToString::to_string).collect();
            context! { email => d.email, query => d.query, missing => missing.join(", ") }
        })
        .collect();
    let channels = app.store.channels(None).await?;
    let troubled: Vec<_> = channels
        .iter()
        .filter(|c| c.state == crate::store::ChannelState::Paused || c.failures > 0)
        .take(ADMIN_DANGLING)
        .map(|c| {
            context! {
                email => &c.email,
                name => &c.name,
                kind => c.kind.as_str(),
                state => c.state.as_str(),
                failures => c.failures,
                error => c.paused_reason.as_deref().or(c.last_error.as_deref()).unwrap_or(""),
            }
        })
        .collect();
    let destinations = context! {
        total => channels.len(),
        active => channels.iter().filter(|c| c.state == crate::store::ChannelState::Active).count(),
        unconfirmed => channels.iter().filter(|c| c.state == crate::store::ChannelState::Unconfirmed).count(),
        paused => channels.iter().filter(|c| c.state == crate::store::ChannelState::Paused).count(),
        troubled,
    };
    let pending: Vec<_> = outbox
        .iter()
        .filter(|m| m.status == OutboxStatus::Pending)
        .collect();
    let failed: Vec<_> = outbox
        .iter()
        .filter(|m| m.status == OutboxStatus::Failed)
        .collect();
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
            dangling,
            dangling_more,
            destinations,
        },
    )
    .into_response())
}

/// The password of an `Authorization: Basic …` header (the scheme name in any case,
/// RFC 7617).
fn basic_password(value: &str) -> Option<String> {
    use base64::Engine as _;
    let (scheme, encoded) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let encoded = encoded.trim();
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
    let id = SubscriptionId(token_id(&token).ok_or(Failure::BadLink)?);
    let (query, email) = app.store.subscription(id).await?.ok_or(Failure::BadLink)?;
    app.links
        .verify_feed(&token, |_| Some(email))
        .ok_or(Failure::BadLink)?;
    let items = app.store.subscription_matches(id, FEED_ENTRIES).await?;
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

// ---- sign-up with double opt-in -----------------------------------------------------------

/// How long the sign-up form's anti-forgery value, and a confirmation link, stay good.
const FORM_MAX_AGE_SECS: i64 = 2 * 3600;
const CONFIRM_MAX_AGE_HOURS: i64 = 48;
/// Searches one sign-up may carry.
const MAX_SIGNUP_QUERIES: usize = 10;
/// Confirmation mails one address gets per day; more requests are answered the same
/// way but send nothing (the page never tells whether an address is known).
const SIGNUPS_PER_ADDRESS_PER_DAY: u32 = 3;
/// Sign-ups one client may make per hour.
const SIGNUPS_PER_CLIENT_PER_HOUR: u32 = 10;
/// Items listed under each search in a preview.
const PREVIEW_TITLES: usize = 5;

/// What the sign-up form holds, to show it again with errors or a preview.
#[derive(Default)]
struct SignupForm {
    email: String,
    queries: String,
    frequency: String,
    tz: String,
}

/// The sign-up page, in the language asked for (`?lang=es`), else in the one the
/// browser prefers (`Accept-Language`) among those there are.
async fn subscribe_page(
    State(app): State<watch::Receiver<App>>,
    UrlQuery(params): UrlQuery<HashMap<String, String>>,
    headers: axum::http::HeaderMap,
) -> Response {
    let app = app.borrow().clone();
    let form = SignupForm {
        frequency: "daily".into(),
        tz: app.config.digest.timezone.name().into(),
        ..SignupForm::default()
    };
    let locale = page_locale(params.get("lang").map(String::as_str), &headers);
    subscribe_view(&app, locale, &form, &[], None).into_response()
}

/// The locale named by `chosen` (a form field, `?lang=`), else the browser's.
fn page_locale(chosen: Option<&str>, headers: &axum::http::HeaderMap) -> &'static Locale {
    chosen.and_then(crate::locale::find).unwrap_or_else(|| {
        let accept = headers
            .get(axum::http::header::ACCEPT_LANGUAGE)
            .and_then(|v| v.to_str().ok());
        crate::locale::negotiate(accept)
    })
}

fn subscribe_view(
    app: &App,
    locale: &Locale,
    form: &SignupForm,
    errors: &[String],
    previews: Option<Vec<minijinja::Value>>,
) -> axum::response::Html<String> {
    render(
        "web/subscribe.html",
        context! {
            lang => &locale.code,
            locales => locale_choices(),
            feeds => app.config.feeds.len(),
            csrf => app.links.form_token(app.store.now().timestamp()),
            email => &form.email,
            queries => &form.queries,
            frequency => &form.frequency,
            tz => &form.tz,
            errors,
            previews,
        },
    )
}

/// The client a request came from, as limits count it: the peer, or, when the peer is a
/// proxy on this host (IPv4-mapped loopback included), the address that proxy added last
/// to `X-Forwarded-For` — the last entry of the last line, since proxies append (as a new
/// line, some of them) and everything before it was written by the client. Addresses
/// become [`crate::listener::client_key`]s: an IPv6 /64 is one client, as for the
/// connection caps.
fn client_of(peer: SocketAddr, headers: &axum::http::HeaderMap) -> String {
    let peer = peer.ip().to_canonical();
    if peer.is_loopback()
        && let Some(forwarded) = headers
            .get_all("x-forwarded-for")
            .iter()
            .next_back()
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(',').next_back())
            .map(str::trim)
            .filter(|v| !v.is_empty())
    {
        return match forwarded.parse::<std::net::IpAddr>() {
            Ok(ip) => crate::listener::client_key(ip.to_canonical()).to_string(),
            // A proxy's own word ("unknown", an obfuscated id): counted as written.
            Err(_) => forwarded.to_string(),
        };
    }
    crate::listener::client_key(peer).to_string()
}

/// `POST /subscribe`: shows a preview, or checks everything and mails a confirmation
/// link. The answer is the same whether or not the address is already subscribed.
async fn subscribe(
    State(app): State<watch::Receiver<App>>,
    axum::extract::ConnectInfo(peer): axum::extract::ConnectInfo<SocketAddr>,
    headers: axum::http::HeaderMap,
    form: Result<Form<HashMap<String, String>>, FormRejection>,
) -> Result<Response, Failure> {
    let app = app.borrow().clone();
    let fields = read_form(form)?;
    let field = |name: &str| {
        fields
            .get(name)
            .map(|v| v.trim().to_string())
            .unwrap_or_default()
    };
    let now = app.store.now();
    if !app
        .links
        .verify_form_token(&field("csrf"), now.timestamp(), FORM_MAX_AGE_SECS)
    {
        return Err(Failure::Forbidden);
    }
    let form = SignupForm {
        email: field("email"),
        queries: field("queries"),
        frequency: field("frequency"),
        tz: field("tz"),
    };
    let locale = page_locale(Some(&field("lang")), &headers);

    let mut errors = Vec::new();
    // Counted, stored and mailed in its one spelling; the form shows what was typed.
    let email = crate::mail::normalize_address(&form.email).unwrap_or_else(|e| {
        errors.push(e.to_string());
        String::new()
    });
    let lines: Vec<&str> = form
        .queries
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    if lines.is_empty() {
        errors.push("Write at least one search.".into());
    } else if lines.len() > MAX_SIGNUP_QUERIES {
        errors.push(format!(
            "At most {MAX_SIGNUP_QUERIES} searches at first; add more later."
        ));
    }
    let (config, texts) = (app.config.clone(), lines.iter().map(|l| l.to_string()));
    let texts: Vec<String> = texts.take(MAX_SIGNUP_QUERIES).collect();
    let checked = blocking(move || Ok(config.check_searches(&texts))).await?;
    let mut parsed = Vec::new();
    for (n, (line, checked)) in lines.iter().zip(checked).enumerate() {
        if line.chars().count() > MAX_QUERY_CHARS {
            errors.push(format!(
                "Search {}: at most {MAX_QUERY_CHARS} characters.",
                n + 1
            ));
            continue;
        }
        match checked {
            Ok(q) => parsed.push((n as i64, q, line.to_string())),
            Err(e) => errors.push(format!("Search {} ({line}): {e}", n + 1)),
        }
    }
    let schedule = Schedule::parse(&form.frequency, app.config.digest.daily_at);
    if let Err(e) = &schedule {
        errors.push(e.clone());
    }
    let tz = parse_time_zone(&form.tz);
    if tz.is_none() {
        errors.push(format!(
            "Unknown time zone {:?}: use a name like America/New_York or Europe/London.",
            form.tz
        ));
    }

    if field("action") == "preview" {
        let previews = preview(&app, &parsed, now).await?;
        let status = if errors.is_empty() {
            StatusCode::OK
        } else {
            StatusCode::BAD_REQUEST
        };
        let page = subscribe_view(&app, locale, &form, &errors, Some(previews));
        return Ok((status, page).into_response());
    }
    let (Ok(schedule), Some(tz), true) = (schedule, tz, errors.is_empty()) else {
        let page = subscribe_view(&app, locale, &form, &errors, None);
        return Ok((StatusCode::BAD_REQUEST, page).into_response());
    };

    let client = client_of(peer, &headers);
    let signup = crate::store::Signup {
        email: email.clone(),
        queries: parsed.iter().map(|(_, _, text)| text.clone()).collect(),
        frequency: schedule.spec(),
        timezone: tz.name().to_string(),
        client: client.clone(),
        created_at: now,
        confirmed_at: None,
        locale: locale.code.clone(),
    };
    let limits = SignupLimits {
        per_client_per_hour: SIGNUPS_PER_CLIENT_PER_HOUR,
        per_address_per_day: SIGNUPS_PER_ADDRESS_PER_DAY,
    };
    let domain = app.mailer.message_domain();
    let links = app.links.clone();
    let mail_to = signup.clone();
    let admission = app
        .store
        .record_signup(&signup, limits, &domain, move |id| {
            let signup = mail_to;
            let cx = context! {
                lang => &signup.locale,
                email => &signup.email,
                queries => &signup.queries,
                frequency => schedule.to_string(),
                tz => &signup.timezone,
                url => links.confirm_url(id, &signup.email),
            };
            let text = TEMPLATES
                .get_template("web/confirm_mail.txt")?
                .render(&cx)?;
            let html = TEMPLATES
                .get_template("web/confirm_mail.html")?
                .render(&cx)?;
            let subject = crate::locale::get(&signup.locale).text("confirm.mail_subject");
            Ok((subject.to_string(), text, html))
        })
        .await?;
    let signup_id = match admission {
        SignupAdmission::TooManyFromClient => {
            warn!(client = %client, "sign-up refused: too many from this client");
            return Err(Failure::TooMany);
        }
        SignupAdmission::Recorded { id, mailed } => mailed.then_some(id),
    };
    let Some(signup_id) = signup_id else {
        // Answered like any other sign-up: the page never tells what it knows.
        info!("sign-up not mailed: this address was asked for too often today");
        return Ok(check_inbox(locale, &email));
    };
    info!(signup = signup_id.0, "sign-up: confirmation mail queued");
    // Send it now rather than at the next digest tick.
    let sender = app.clone();
    tokio::spawn(async move {
        if let Err(e) = crate::pipeline::send_mail(&sender, app.store.now()).await {
            warn!(error = %format!("{e:#}"), "sending the confirmation mail; the digest round retries it");
        }
    });
    Ok(check_inbox(locale, &email))
}

fn check_inbox(l: &Locale, email: &str) -> Response {
    let line = l.fill("subscribe.sent_link", &[("email", &email)]);
    message_in(
        l,
        l.text("subscribe.check_inbox"),
        &[&line, l.text("subscribe.link_hours")],
        None,
    )
}

/// What each search would have matched among the items of the last 7 days.
async fn preview(
    app: &App,
    queries: &[(i64, Query, String)],
    now: chrono::DateTime<Utc>,
) -> Result<Vec<minijinja::Value>, Failure> {
    let items = app
        .store
        .items_since(now - chrono::Duration::days(7))
        .await?;
    let matcher = crate::matcher::Matcher::new(
        queries.iter().map(|(i, q, _)| (*i, q.clone())).collect(),
        &app.synonyms,
    );
    let mut hits: Vec<Vec<&str>> = vec![Vec::new(); queries.len()];
    for item in &items {
        let body = crate::parse::body_text(&item.summary, &item.content);
        let doc = crate::matcher::Document::new(&item.title, &body)
            .with_source(&item.feed_id, &item.tags)
            .with_lang(item.lang.as_deref());
        for i in matcher.find_matches(&doc) {
            if let Some(list) = usize::try_from(i).ok().and_then(|i| hits.get_mut(i)) {
                list.push(&item.title);
            }
        }
    }
    Ok(queries
        .iter()
        .zip(hits)
        .map(|((_, _, text), titles)| {
            context! {
                query => text,
                count => titles.len(),
                titles => titles.iter().take(PREVIEW_TITLES).collect::<Vec<_>>(),
            }
        })
        .collect())
}

/// The sign-up a confirm token names, if genuine and not expired.
async fn signup_for(app: &App, token: &str) -> Result<(SignupId, crate::store::Signup), Failure> {
    let id = SignupId(token_id(token).ok_or(Failure::BadLink)?);
    let signup = app.store.signup(id).await?.ok_or(Failure::BadLink)?;
    let email = signup.email.clone();
    app.links
        .verify_confirm(token, |_| Some(email))
        .ok_or(Failure::BadLink)?;
    if signup.confirmed_at.is_none()
        && app.store.now() - signup.created_at > chrono::Duration::hours(CONFIRM_MAX_AGE_HOURS)
    {
        return Err(Failure::Expired);
    }
    Ok((id, signup))
}

/// `GET /confirm/TOKEN`: what would be confirmed, and a button (link checkers that fetch
/// the link confirm nothing).
async fn confirm_page(
    State(app): State<watch::Receiver<App>>,
    Path(token): Path<String>,
) -> Result<Response, Failure> {
    let app = app.borrow().clone();
    let (_, signup) = signup_for(&app, &token).await?;
    if signup.confirmed_at.is_some() {
        return subscribed_page(&app, &signup, &[]).await;
    }
    Ok(render(
        "web/confirm.html",
        context! {
            lang => &crate::locale::get(&signup.locale).code,
            email => &signup.email,
            queries => &signup.queries,
            frequency => &signup.frequency,
            tz => &signup.timezone,
            action => page_path(&format!("confirm/{token}")),
        },
    )
    .into_response())
}

/// `POST /confirm/TOKEN`: creates the subscriber (or adds to them) with the searches.
/// Posting again changes nothing.
async fn confirm(
    State(app): State<watch::Receiver<App>>,
    Path(token): Path<String>,
) -> Result<Response, Failure> {
    let app = app.borrow().clone();
    let (id, signup) = signup_for(&app, &token).await?;
    let mut left_out = Vec::new();
    if signup.confirmed_at.is_none() {
        // The config may have lost a feed or tag since the sign-up was checked.
        let usable = |text: &str| {
            Query::parse(text)
                .map_err(|e| e.to_string())
                .and_then(|q| app.config.check_scopes(&q))
        };
        // Nor may confirming take a subscriber past the searches the manage page allows.
        let existing = app
            .store
            .subscriber(&signup.email)
            .await?
            .map(|s| s.queries)
            .unwrap_or_default();
        let mut room = MAX_QUERIES.saturating_sub(existing.len());
        let mut added: Vec<String> = Vec::new();
        for q in &signup.queries {
            if existing.contains(q) || added.contains(q) {
                continue;
            }
            match usable(q) {
                Err(why) => left_out.push(format!("{q}: {why}")),
                Ok(()) if room == 0 => left_out.push(format!(
                    "{q}: you have {MAX_QUERIES} searches, the most there can be"
                )),
                Ok(()) => {
                    room -= 1;
                    added.push(q.clone());
                }
            }
        }
        if added.is_empty() && !left_out.is_empty() {
            return Err(Failure::BadForm(format!(
                "None of your searches could be added; please sign up again. {}",
                left_out.join("; ")
            )));
        }
        let schedule = Schedule::parse(&signup.frequency, app.config.digest.daily_at)
            .map_err(|e| Failure::Internal(anyhow::anyhow!("stored schedule: {e}")))?;
        let tz = parse_time_zone(&signup.timezone).ok_or_else(|| {
            Failure::Internal(anyhow::anyhow!("stored zone {:?}", signup.timezone))
        })?;
        let keep = move |text: &str| added.iter().any(|q| q == text);
        let subscriber = app
            .store
            .confirm_signup(id, schedule, tz, keep, app.store.now())
            .await?;
        info!(
            signup = id.0,
            subscriber = subscriber.0,
            left_out = left_out.len(),
            "sign-up confirmed"
        );
    }
    subscribed_page(&app, &signup, &left_out).await
}

/// "You are subscribed", naming the searches of the sign-up that were `left_out`.
async fn subscribed_page(
    app: &App,
    signup: &crate::store::Signup,
    left_out: &[String],
) -> Result<Response, Failure> {
    let email = &signup.email;
    let subscriber = app.store.subscriber(email).await?;
    let manage = subscriber.map(|s| local_path(&app.links.manage_url(s.id, &s.email)));
    let l = crate::locale::get(&signup.locale);
    let line = l.fill("subscribe.subscribed_to", &[("email", email)]);
    let mut lines = vec![line.as_str()];
    let left_out = left_out
        .iter()
        .map(|q| l.fill("subscribe.not_added", &[("search", q)]))
        .collect::<Vec<_>>();
    lines.extend(left_out.iter().map(String::as_str));
    Ok(message_in(
        l,
        l.text("subscribe.subscribed"),
        &lines,
        manage
            .as_deref()
            .map(|m| (m, l.text("subscribe.your_page"))),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admin_waits_grow_after_ten_wrong_passwords_and_end_with_the_right_one() {
        let guard = AdminGuard::default();
        let t0 = Instant::now();
        for n in 0..ADMIN_FREE_TRIES {
            assert_eq!(guard.try_once("a", t0), Ok(()), "try {}", n + 1);
        }
        assert_eq!(guard.try_once("a", t0), Err(Duration::from_secs(30)));
        assert_eq!(
            guard.try_once("b", t0),
            Ok(()),
            "other clients are not held up"
        );
        let t1 = t0 + Duration::from_secs(30);
        assert_eq!(guard.try_once("a", t1), Ok(()), "the wait is over");
        assert_eq!(guard.try_once("a", t1), Err(Duration::from_secs(60)));
        let waits: Vec<u64> = (10..20).map(|n| admin_wait(n).as_secs()).collect();
        assert_eq!(waits, [30, 60, 120, 240, 480, 960, 1920, 3600, 3600, 3600]);
        assert_eq!(admin_wait(u32::MAX), ADMIN_MAX_WAIT);
        // The right password starts the count over; so does an hour without tries.
        guard.passed("a");
        assert_eq!(guard.try_once("a", t1), Ok(()));
        let late = t1 + Duration::from_secs(90) + ADMIN_FORGET_AFTER;
        for _ in 0..ADMIN_FREE_TRIES - 1 {
            guard.try_once("b", t0).unwrap();
        }
        assert_eq!(guard.try_once("b", late), Ok(()), "forgotten");
    }

    #[test]
    fn admin_guard_remembers_a_bounded_number_of_clients() {
        let guard = AdminGuard::default();
        let now = Instant::now();
        for n in 0..ADMIN_CLIENTS + 5 {
            guard.try_once(&format!("192.0.2.{n}"), now).unwrap();
        }
        assert!(guard.clients.lock().unwrap().len() <= ADMIN_CLIENTS);
    }

    #[test]
    fn basic_credentials_are_read_with_any_case_of_scheme_name() {
        // "a:b c" in base64.
        for (case, header, password) in [
            ("canonical", "Basic YTpiIGM=", Some("b c")),
            ("lowercase", "basic YTpiIGM=", Some("b c")),
            ("uppercase", "BASIC  YTpiIGM=", Some("b c")),
            ("other scheme", "Bearer YTpiIGM=", None),
            ("no credentials", "Basic", None),
            ("not base64", "Basic !!", None),
            ("no colon", "Basic YWJj", None),
        ] {
            assert_eq!(basic_password(header).as_deref(), password, "{case}");
        }
    }
}
