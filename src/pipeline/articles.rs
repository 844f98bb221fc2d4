//! The article job: for each pending article (a new item of a full-text feed), fetch its
//! link → decode → extract the story → match the item on its feed text and the story,
//! once → write both in one transaction. A job of its own beside polling, with its own
//! connection budget (`poll.full_text_concurrency`), so articles never hold up a poll.

use super::*;
use crate::article::{Extraction, decode_html, extract};
use crate::fetch::Origin;
use crate::store::{ArticleDone, ArticleOutcome, ArticleState, ArticleToFetch, FetchLimits};

/// Tries per article: the first and three retries (after 2, 10 and 30 minutes). Then the
/// item is matched on its feed text alone; nothing waits for ever.
pub const ARTICLE_TRIES: u32 = 4;

/// The pause after the `tries`-th failed try.
fn retry_delay(tries: u32) -> chrono::Duration {
    chrono::Duration::minutes(match tries {
        0 | 1 => 2,
        2 => 10,
        _ => 30,
    })
}

/// What one article round did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ArticleSummary {
    /// Articles claimed.
    pub articles: usize,
    pub ok: usize,
    /// Pages without a story: matched on the feed text.
    pub none: usize,
    /// Given up: matched on the feed text.
    pub failed: usize,
    /// Failed this time, tried again later (not matched yet).
    pub retrying: usize,
    /// Left for later (shutdown) or taken by another worker.
    pub skipped: usize,
    /// Read, but the database would not take the result (it cannot be written): tried
    /// again once it can be.
    pub unrecorded: usize,
    /// Why the first of `unrecorded` could not be written.
    pub unrecorded_error: Option<String>,
    pub matches: usize,
}

impl ArticleSummary {
    /// An error when some articles could not be written to the database (a local
    /// failure: `tidings poll` exits non-zero), saying how many and why.
    pub fn local_failure(&self) -> Option<anyhow::Error> {
        (self.unrecorded > 0).then(|| {
            anyhow::anyhow!(
                "the database did not take {} ({}); they are read again once it can be \
                 written",
                crate::output::count(self.unrecorded, "article"),
                self.unrecorded_error
                    .as_deref()
                    .unwrap_or("no reason given"),
            )
        })
    }
}

/// How one article's try ended, before it is written.
enum Tried {
    Done {
        state: ArticleState,
        text: Option<String>,
        error: Option<String>,
    },
    Retry(String),
}

/// What one fetch of a link found, for every item that links there.
enum Read {
    /// Final: the story, or why there is none.
    Done {
        state: ArticleState,
        text: Option<String>,
        error: Option<String>,
    },
    /// A failure that may pass (a timeout, a 5xx, a 304 to a plain request): tried again
    /// while an item has tries left.
    Passing(String),
}

impl Read {
    /// What it means for `article`, given the tries it had.
    fn for_article(&self, article: &ArticleToFetch) -> Tried {
        match self {
            Read::Done { state, text, error } => Tried::Done {
                state: *state,
                text: text.clone(),
                error: error.clone(),
            },
            Read::Passing(error) if article.attempts + 1 < ARTICLE_TRIES => {
                Tried::Retry(error.clone())
            }
            Read::Passing(error) => Tried::Done {
                state: ArticleState::Failed,
                text: None,
                error: Some(error.clone()),
            },
        }
    }
}

/// Fetches every article due at `now`, `poll.full_text_concurrency` at a time, each host's
/// connections counted with the polls' (`poll.per_host`, for every instance together),
/// but only taken when free: an article never queues in front of a feed poll. Returns
/// when none is due any more (a retry is due later) or on shutdown.
pub async fn fetch_articles(app: &App, now: DateTime<Utc>) -> Result<ArticleSummary> {
    let started = Instant::now();
    let concurrency = app.config.poll.full_text_concurrency;
    let lease = poll_lease(&app.config.poll);
    let mut summary = ArticleSummary::default();
    let mut seen = HashSet::new();
    loop {
        if app.shutdown.draining.is_cancelled() {
            break;
        }
        let at = now + to_chrono(started.elapsed());
        let claimed = app.store.claim_articles(at, lease, concurrency * 4).await?;
        if claimed.is_empty() {
            break;
        }
        let mut fresh = Vec::new();
        for article in claimed {
            if seen.insert(article.item) {
                fresh.push(article);
            } else {
                // Its write failed earlier in this round: the next round tries it.
                app.store.release_article(&article).await?;
            }
        }
        if fresh.is_empty() {
            break;
        }
        summary.articles += fresh.len();
        // Items that link to the same page (read the same way) share one fetch.
        let mut groups: Vec<Vec<ArticleToFetch>> = Vec::new();
        for article in fresh {
            match groups.iter_mut().find(|g| {
                g[0].link == article.link
                    && g[0].content_selector == article.content_selector
                    && g[0].wanted == article.wanted
            }) {
                Some(group) => group.push(article),
                None => groups.push(vec![article]),
            }
        }
        let slots = Arc::new(Semaphore::new(concurrency));
        let mut jobs = JoinSet::new();
        for group in groups {
            let (app, slots) = (app.clone(), slots.clone());
            jobs.spawn(async move {
                let outcomes = article_job(&app, group, slots, now, started).await;
                for (article, outcome) in &outcomes {
                    if !matches!(outcome, Ok(Some(_))) {
                        // Not tried (shutdown), or its result could not be written: due
                        // again.
                        if let Err(e) = app.store.release_article(article).await {
                            super::giving_back_failed("an article", &article.feed_id, &e);
                        }
                    }
                }
                outcomes
            });
        }
        while let Some(joined) = jobs.join_next().await {
            let outcomes = match joined {
                Ok(done) => done,
                Err(e) => {
                    error!(error = %e, "article task crashed");
                    summary.skipped += 1;
                    continue;
                }
            };
            for (article, outcome) in outcomes {
                match outcome {
                    Ok(Some(Finished::Done(state, matches))) => {
                        summary.matches += matches;
                        match state {
                            ArticleState::Ok => summary.ok += 1,
                            ArticleState::None => summary.none += 1,
                            ArticleState::Failed | ArticleState::Pending => summary.failed += 1,
                        }
                    }
                    Ok(Some(Finished::Retrying)) => summary.retrying += 1,
                    Ok(None) => summary.skipped += 1,
                    // The store's write health says once that the database cannot
                    // be written; the article is tried again.
                    Err(e) if let Some(reason) = crate::store::unavailable(&e) => {
                        debug!(feed = %article.feed_id, item = article.item.0,
                           error = %format!("{e:#}"), "could not record article");
                        summary.unrecorded += 1;
                        summary.unrecorded_error.get_or_insert(reason);
                    }
                    Err(e) => {
                        error!(feed = %article.feed_id, item = article.item.0, link = %article.link,
                           error = %format!("{e:#}"), "could not record article");
                        summary.skipped += 1;
                    }
                }
            }
        }
    }
    Ok(summary)
}

/// How an article's job ended, written.
enum Finished {
    /// Matched now (with this many matches) in this state.
    Done(ArticleState, usize),
    Retrying,
}

/// The items of a group, each with how its job ended.
type Outcomes = Vec<(ArticleToFetch, Result<Option<Finished>>)>;

/// The articles of `group` (items linking to one page): a connection slot, one fetch and
/// extraction, and each item's write. `None`: not tried (shutdown, or another worker has
/// it now).
async fn article_job(
    app: &App,
    group: Vec<ArticleToFetch>,
    slots: Arc<Semaphore>,
    now: DateTime<Utc>,
    started: Instant,
) -> Outcomes {
    let untried = |group: Vec<ArticleToFetch>| -> Outcomes {
        group.into_iter().map(|a| (a, Ok(None))).collect()
    };
    let link = group[0].link.clone();
    let read = match Url::parse(&link) {
        // The feed no longer asks for articles: matched on its text, nothing fetched.
        _ if !group[0].wanted => Read::Done {
            state: ArticleState::None,
            text: None,
            error: Some("full text was turned off for this feed: not fetched".into()),
        },
        Ok(url) if matches!(url.scheme(), "http" | "https") => {
            match fetch_in_turn(app, &group, &url, slots, now, started).await {
                Ok(Some((read, renewed))) => {
                    let mut outcomes = Vec::new();
                    for (article, held) in group.into_iter().zip(renewed) {
                        let outcome = if held {
                            let at = now + to_chrono(started.elapsed());
                            record(app, &article, read.for_article(&article), at).await
                        } else {
                            Ok(None)
                        };
                        outcomes.push((article, outcome));
                    }
                    return outcomes;
                }
                Ok(None) => return untried(group),
                Err(e) => {
                    let message = format!("{e:#}");
                    return group
                        .into_iter()
                        .map(|a| (a, Err(anyhow::anyhow!("{message}"))))
                        .collect();
                }
            }
        }
        _ => Read::Done {
            state: ArticleState::Failed,
            text: None,
            error: Some(format!("the item's link {link:?} is not a web address")),
        },
    };
    let mut outcomes = Vec::new();
    for article in group {
        let at = now + to_chrono(started.elapsed());
        let outcome = record(app, &article, read.for_article(&article), at).await;
        outcomes.push((article, outcome));
    }
    outcomes
}

/// Waits for this round's slot, a connection slot of the host that a poll is not
/// waiting for, and the cluster's slot; renews the group's claims and reads `url` once.
/// The read, and which claims were still held; `None` on shutdown.
async fn fetch_in_turn(
    app: &App,
    group: &[ArticleToFetch],
    url: &Url,
    slots: Arc<Semaphore>,
    now: DateTime<Utc>,
    started: Instant,
) -> Result<Option<(Read, Vec<bool>)>> {
    let draining = app.shutdown.draining.clone();
    let _slot = tokio::select! {
        biased;
        _ = draining.cancelled() => return Ok(None),
        p = slots.acquire_owned() => p?,
    };
    let host = url.host_str().unwrap_or_default().to_ascii_lowercase();
    // With two or more connections per host, one is always left to the polls.
    let per_host = app.config.poll.per_host;
    let reserved = usize::from(per_host > 1);
    let _host = {
        let host_slots = app.poll_slots.host(host.clone());
        let mut pause = Duration::from_millis(20);
        loop {
            // Taken only when free: a poll waiting for this host goes first.
            if host_slots.available_permits() > reserved
                && let Ok(permit) = host_slots.clone().try_acquire_owned()
            {
                break permit;
            }
            tokio::select! {
                biased;
                _ = draining.cancelled() => return Ok(None),
                _ = tokio::time::sleep(pause) => {}
            }
            pause = (pause * 2).min(Duration::from_millis(50));
        }
    };
    let limits = FetchLimits {
        per_host: per_host - reserved,
        concurrency: app.config.poll.concurrency,
    };
    let cluster = match cluster_slot_within(app, &host, limits, &draining).await? {
        Some(token) => token,
        None => return Ok(None),
    };
    let at = now + to_chrono(started.elapsed());
    let tried = async {
        let mut renewed = Vec::with_capacity(group.len());
        for article in group {
            let lease = poll_lease(&app.config.poll);
            renewed.push(app.store.renew_article_claim(article, at, lease).await?);
        }
        if !renewed.contains(&true) {
            return Ok(None);
        }
        let abort = app.shutdown.abort.clone();
        tokio::select! {
            biased;
            _ = abort.cancelled() => Ok(None),
            read = read_page(app, &group[0], url) => Ok(Some((read, renewed))),
        }
    }
    .await;
    if let Err(e) = app.store.release_fetch_slot(&cluster).await {
        super::giving_back_failed("a connection slot", url.as_str(), &e);
    }
    tried
}

/// Fetches and reads one page (for every item of `article`'s group).
async fn read_page(app: &App, article: &ArticleToFetch, url: &Url) -> Read {
    // The link was written by whoever writes the feed: public addresses only.
    let fetched = match app
        .fetcher
        .fetch(url, &Validators::default(), Origin::Found)
        .await
    {
        Ok(FetchOutcome::Fetched(f)) => f,
        Ok(FetchOutcome::NotModified(_)) => {
            // A 304 to a request that asked for nothing conditional: a broken server or
            // cache, tried like any failure that may pass, as often.
            return Read::Passing(format!(
                "fetching {url}: the server answered 304 to a plain request"
            ));
        }
        Err(FetchError::Empty) => {
            return Read::Done {
                state: ArticleState::None,
                text: None,
                error: Some("no article found: the page is empty".into()),
            };
        }
        Err(e) => {
            let error = format!("fetching {url}: {e}");
            return if transient(&e) {
                Read::Passing(error)
            } else {
                Read::Done {
                    state: ArticleState::Failed,
                    text: None,
                    error: Some(error),
                }
            };
        }
    };
    if let Some(kind) = fetched.content_type.as_deref().filter(|ct| !is_page(ct)) {
        return Read::Done {
            state: ArticleState::None,
            text: None,
            error: Some(format!(
                "no article found: the link is {kind}, not a web page"
            )),
        };
    }
    let selector = article.content_selector.clone();
    let base = fetched.final_url.to_string();
    let extracted = tokio::task::spawn_blocking(move || {
        let html = decode_html(&fetched.body, fetched.content_type.as_deref());
        extract(&html, &base, selector.as_deref())
    })
    .await;
    match extracted {
        Ok(Extraction::Article(a)) => Read::Done {
            state: ArticleState::Ok,
            text: Some(a.text),
            error: None,
        },
        Ok(Extraction::NoArticle(why)) => Read::Done {
            state: ArticleState::None,
            text: None,
            error: Some(why),
        },
        Err(e) => Read::Done {
            state: ArticleState::Failed,
            text: None,
            error: Some(format!("internal error reading the page: {e}")),
        },
    }
}

/// Failures worth another try: the network, timeouts, throttling and server errors.
/// A 404, a refused address or a page over the size cap stays what it is.
fn transient(e: &FetchError) -> bool {
    match e {
        FetchError::Timeout | FetchError::Connection(_) | FetchError::Throttled { .. } => true,
        FetchError::Status(code) => *code >= 500 || *code == 408,
        FetchError::Gone
        | FetchError::Challenge
        | FetchError::TooLarge { .. }
        | FetchError::Empty
        | FetchError::Redirect(_)
        | FetchError::Refused(_) => false,
    }
}

/// HTML (or XHTML), by its `Content-Type`.
fn is_page(content_type: &str) -> bool {
    let mime = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    mime.is_empty() || mime.contains("html") || mime == "text/plain"
}

/// Writes a try: a retry, or the article with the item's matches (compiled again while
/// the subscriptions change under it).
async fn record(
    app: &App,
    article: &ArticleToFetch,
    tried: Tried,
    now: DateTime<Utc>,
) -> Result<Option<Finished>> {
    let (state, text, error) = match tried {
        Tried::Retry(error) => {
            let at = now + retry_delay(article.attempts + 1);
            warn!(feed = %article.feed_id, item = article.item.0, link = %article.link,
                  error = %error, tries = article.attempts + 1,
                  next = %at.to_rfc3339_opts(SecondsFormat::Secs, true),
                  "article fetch failed; trying again later");
            app.metrics.article("retrying");
            return Ok(app
                .store
                .retry_article(article, &error, at)
                .await?
                .then_some(Finished::Retrying));
        }
        Tried::Done { state, text, error } => (state, text, error),
    };
    let mut attempts = 0;
    let mut article = article.clone();
    loop {
        let matcher = app.current_matcher().await?;
        let document = matched_text(
            &article.title,
            &article.summary,
            &article.content,
            text.as_deref(),
            &article.feed_id,
            &article.tags,
        )
        .with_lang(article.lang.as_deref());
        let matches = matcher
            .matcher
            .find_matches(&document)
            .into_iter()
            .map(SubscriptionId)
            .collect();
        let done = ArticleDone {
            state,
            text: text.clone(),
            error: error.clone(),
            matches,
            matcher_generation: matcher.generation,
        };
        match app.store.finish_article(&article, done, now).await? {
            ArticleOutcome::Matched(matches) => {
                match state {
                    ArticleState::Ok => {
                        info!(feed = %article.feed_id, item = article.item.0, matched = matches,
                              chars = text.as_deref().map_or(0, |t| t.chars().count()),
                              "article read")
                    }
                    _ => warn!(feed = %article.feed_id, item = article.item.0,
                               link = %article.link, state = %state, matched = matches,
                               error = %error.as_deref().unwrap_or_default(),
                               "no article; the item is matched on its feed text"),
                }
                app.metrics.article(state.as_str());
                return Ok(Some(Finished::Done(state, matches)));
            }
            ArticleOutcome::StaleMatcher if attempts < 10 => attempts += 1,
            ArticleOutcome::StaleMatcher => {
                anyhow::bail!("the subscriptions kept changing while matching an article")
            }
            // A poll edited the item meanwhile: matched on its text as it is now.
            ArticleOutcome::TextChanged if attempts < 10 => {
                attempts += 1;
                match app.store.reread_article(&article).await? {
                    Some(fresh) => article = fresh,
                    None => return Ok(None),
                }
            }
            ArticleOutcome::TextChanged => {
                anyhow::bail!("the item kept changing while matching its article")
            }
            ArticleOutcome::ClaimLost => return Ok(None),
        }
    }
}
