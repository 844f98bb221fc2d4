//! Articles: the items of full-text feeds waiting for their article, claimed by the
//! article worker, and what it found, written with the item's matches in one transaction.

use super::*;

/// A pending article claimed by this worker ([`Store::claim_articles`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArticleToFetch {
    pub item: ItemId,
    /// The token of the claim; a worker whose claim lapsed and was taken writes nothing.
    pub claim: String,
    pub feed_id: String,
    /// The feed's tags, as the database's feed list has them (matching needs them).
    pub tags: Vec<String>,
    /// The article's address: the item's link.
    pub link: String,
    /// The feed's `content_selector`, if any.
    pub content_selector: Option<String>,
    /// The feed still asks for full text (turned off meanwhile: matched on its feed text,
    /// without a fetch).
    pub wanted: bool,
    /// The item's text from the feed, matched together with the article.
    pub title: String,
    pub summary: String,
    pub content: String,
    /// Tries made before this one.
    pub attempts: u32,
    /// The fingerprint of that text: a poll that edits the item meanwhile changes it, and
    /// the item is matched on the new text ([`ArticleOutcome::TextChanged`]).
    pub content_hash: Option<String>,
    /// The item's language, as stored when it was.
    pub lang: Option<String>,
}

/// The end of an article's wait: the item is matched now, once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArticleDone {
    /// [`ArticleState::Ok`], [`ArticleState::None`] or [`ArticleState::Failed`].
    pub state: ArticleState,
    /// The story (with `Ok`).
    pub text: Option<String>,
    /// Why there is none, or the last failure.
    pub error: Option<String>,
    /// The subscriptions the item matches, feed text and article together, found by a
    /// matcher of `matcher_generation`.
    pub matches: Vec<SubscriptionId>,
    pub matcher_generation: i64,
}

/// What [`Store::finish_article`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArticleOutcome {
    /// Written, with this many matches.
    Matched(usize),
    /// The subscriptions changed since the matcher was compiled: nothing was written.
    StaleMatcher,
    /// The claim lapsed and another worker took the article (or the item was pruned, or
    /// got a new link meanwhile): nothing was written.
    ClaimLost,
    /// A poll edited the item's text since it was claimed: nothing was written; match
    /// again on the text [`Store::reread_article`] gives.
    TextChanged,
}

/// The articles of one feed's items, for `feeds status` and `/admin`.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct ArticleCounts {
    pub pending: u64,
    pub ok: u64,
    /// Pages without a story.
    pub none: u64,
    /// Given up after every try.
    pub failed: u64,
    /// The newest failure (pending or given up), or why the newest page had no story.
    pub last_error: Option<String>,
}

impl ArticleCounts {
    /// Adds `n` items in `state`.
    pub(super) fn add(&mut self, state: ArticleState, n: u64) {
        match state {
            ArticleState::Pending => self.pending += n,
            ArticleState::Ok => self.ok += n,
            ArticleState::None => self.none += n,
            ArticleState::Failed => self.failed += n,
        }
    }

    /// No item of the feed ever wanted an article.
    pub fn is_empty(&self) -> bool {
        self.pending + self.ok + self.none + self.failed == 0
    }

    /// One line for `feeds status` and `/admin`: "articles: 3 read, 1 pending, 4 without
    /// a story, 2 failed (last: …)"; `None` for a feed without articles.
    pub fn describe(&self) -> Option<String> {
        if self.is_empty() {
            return None;
        }
        let mut parts = vec![format!("{} read", self.ok)];
        for (n, what) in [
            (self.pending, "pending"),
            (self.none, "without a story"),
            (self.failed, "failed"),
        ] {
            if n > 0 {
                parts.push(format!("{n} {what}"));
            }
        }
        let mut line = format!("articles: {}", parts.join(", "));
        if let Some(error) = &self.last_error {
            line.push_str(&format!(" (last: {error})"));
        }
        Some(line)
    }
}

impl Store {
    /// Claims up to `limit` pending articles due at `now` (oldest first) for `lease`.
    /// Claims are taken with the feed's claim rules: a lapsed one is free again, so an
    /// article a crashed worker held is fetched by another.
    pub async fn claim_articles(
        &self,
        now: DateTime<Utc>,
        lease: Duration,
        limit: usize,
    ) -> Result<Vec<ArticleToFetch>> {
        self.give_back_unreleased().await?;
        run!(self, db => db.claim_articles(now, lease, limit))
    }

    /// Renews the claim on `article` right before its fetch (the wait for a connection
    /// slot may have been long); `false` when another worker holds it now.
    pub async fn renew_article_claim(
        &self,
        article: &ArticleToFetch,
        now: DateTime<Utc>,
        lease: Duration,
    ) -> Result<bool> {
        let article = article.clone();
        run!(self, db => db.renew_article_claim(&article, now, lease))
    }

    /// The article is in, or will never be: writes it and matches the item (new items:
    /// new matches; an item whose link changed after it was sent: sent again, marked
    /// updated, to the subscriptions it was sent to), all in one transaction.
    pub async fn finish_article(
        &self,
        article: &ArticleToFetch,
        done: ArticleDone,
        now: DateTime<Utc>,
    ) -> Result<ArticleOutcome> {
        let article = article.clone();
        run!(self, about = article.item, db => db.finish_article(&article, &done, now))
    }

    /// A try failed and another will be made at `retry_at`: the article stays pending
    /// (unmatched), its failure recorded.
    pub async fn retry_article(
        &self,
        article: &ArticleToFetch,
        error: &str,
        retry_at: DateTime<Utc>,
    ) -> Result<bool> {
        let (article, error) = (article.clone(), error.to_owned());
        run!(self, db => db.retry_article(&article, &error, retry_at))
    }

    /// `article` with the item's text as it is now (a poll edited it), if the claim still
    /// holds.
    pub async fn reread_article(&self, article: &ArticleToFetch) -> Result<Option<ArticleToFetch>> {
        let article = article.clone();
        run!(self, db => db.reread_article(&article))
    }

    /// Gives a claimed article back untried (shutdown, or its result could not be
    /// written): due again at once. One the database would not give back (it cannot be
    /// written) is given back before this store next claims.
    pub async fn release_article(&self, article: &ArticleToFetch) -> Result<()> {
        let held = article.clone();
        let result = run!(self, about = held.item, db => db.release_article(&held));
        self.keep_unreleased(&result, || Unreleased::Article(Box::new(article.clone())));
        result
    }

    /// How many items each feed has in each article state, and the newest failure.
    pub async fn article_counts(&self) -> Result<HashMap<String, ArticleCounts>> {
        run!(self, db => db.article_counts())
    }
}
