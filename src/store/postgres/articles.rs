//! Articles: claims on pending articles, what each fetch found, with the item's matches.

use super::*;

impl Postgres {
    pub fn claim_articles(
        &self,
        now: DateTime<Utc>,
        lease: Duration,
        limit: usize,
    ) -> Result<Vec<ArticleToFetch>> {
        let now_s = now.timestamp();
        let until = now_s + lease_secs(lease);
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = self.conn()?.query(
            &format!(
                "UPDATE items i SET claim = {NEW_CLAIM}, claimed_until = $2
                 FROM feeds f
                 WHERE f.id = i.feed_id
                   AND i.id IN (SELECT id FROM items
                                WHERE article_state = 'pending' AND article_next_at <= $1
                                  AND (claimed_until IS NULL OR claimed_until <= $1)
                                ORDER BY article_next_at, id LIMIT $3
                                FOR UPDATE SKIP LOCKED)
                 RETURNING i.id, i.claim, i.feed_id, COALESCE(i.article_link, ''), i.title,
                           i.summary, i.content, i.article_attempts, f.tags, f.options,
                           i.content_hash, i.lang"
            ),
            &[&now_s, &until, &limit],
        )?;
        let mut claimed = rows
            .iter()
            .map(|r| {
                let options = FeedOptions::from_json(r.try_get(9)?);
                Ok(ArticleToFetch {
                    item: r.try_get(0)?,
                    claim: r.try_get(1)?,
                    feed_id: r.try_get(2)?,
                    link: r.try_get(3)?,
                    title: r.try_get(4)?,
                    summary: r.try_get(5)?,
                    content: r.try_get(6)?,
                    attempts: count(r.try_get::<_, i32>(7)?)?,
                    tags: split_tags(r.try_get(8)?),
                    wanted: options.full_text,
                    content_selector: options.content_selector,
                    content_hash: r.try_get(10)?,
                    lang: r.try_get(11)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        claimed.sort_by_key(|a| a.item);
        Ok(claimed)
    }

    pub fn renew_article_claim(
        &self,
        article: &ArticleToFetch,
        now: DateTime<Utc>,
        lease: Duration,
    ) -> Result<bool> {
        Ok(self.conn()?.execute(
            "UPDATE items SET claimed_until = $3 WHERE id = $1 AND claim = $2",
            &[
                &article.item,
                &article.claim,
                &(now.timestamp() + lease_secs(lease)),
            ],
        )? == 1)
    }

    pub fn finish_article(
        &self,
        article: &ArticleToFetch,
        done: &ArticleDone,
        now: DateTime<Utc>,
    ) -> Result<ArticleOutcome> {
        let now_s = now.timestamp();
        let mut conn = self.conn()?;
        let mut tx = conn.transaction()?;
        // Locks the item's row to the end: its claim cannot be taken meanwhile.
        let row = tx.query_opt(
            "SELECT article_resend, article_text, content_hash FROM items
             WHERE id = $1 AND claim = $2 AND article_state = 'pending' FOR UPDATE",
            &[&article.item, &article.claim],
        )?;
        let Some(row) = row else {
            return Ok(ArticleOutcome::ClaimLost);
        };
        let resend: bool = row.try_get(0)?;
        let old_text: Option<String> = row.try_get(1)?;
        let hash: Option<String> = row.try_get(2)?;
        if hash != article.content_hash {
            return Ok(ArticleOutcome::TextChanged);
        }
        // A new link that brought the same story (a tracking parameter changed): nothing
        // to send again.
        let resend_to = if resend && old_text == done.text {
            &[][..]
        } else {
            &done.matches[..]
        };
        // FOR SHARE to the end, as for a poll's matches: no change to the subscriptions
        // commits between this check and the matches written below.
        let generation: i64 = tx
            .query_one(
                "SELECT value FROM generations WHERE name = 'subscriptions' FOR SHARE",
                &[],
            )?
            .try_get(0)?;
        if generation != done.matcher_generation {
            return Ok(ArticleOutcome::StaleMatcher);
        }
        tx.execute(
            "UPDATE items SET article_state = $2, article_text = $3, article_error = $4,
                article_attempts = article_attempts + 1, article_next_at = NULL,
                article_resend = FALSE, claim = NULL, claimed_until = NULL
             WHERE id = $1",
            &[&article.item, &done.state.as_str(), &done.text, &done.error],
        )?;
        // New: matched now, once. A new link of an item already sent: sent again, marked
        // updated, to the subscriptions it was sent to and still matches.
        let resend_match = tx.prepare(
            "UPDATE matches SET outbox_id = NULL, updated = TRUE, matched_at = $3
             WHERE subscription_id = $1 AND item_id = $2 AND outbox_id IS NOT NULL",
        )?;
        let story: i64 = tx
            .query_one(
                "SELECT COALESCE(story_id, id) FROM items WHERE id = $1",
                &[&article.item],
            )?
            .try_get(0)?;
        let mut matches = 0;
        for subscription in resend_to {
            matches += if resend {
                tx.execute(&resend_match, &[subscription, &article.item, &now_s])? as usize
            } else {
                super::stories::insert_match(&mut tx, subscription, article.item.0, story, now_s)?
            };
        }
        tx.commit()?;
        Ok(ArticleOutcome::Matched(matches))
    }

    pub fn retry_article(
        &self,
        article: &ArticleToFetch,
        error: &str,
        retry_at: DateTime<Utc>,
    ) -> Result<bool> {
        Ok(self.conn()?.execute(
            "UPDATE items SET article_attempts = article_attempts + 1, article_error = $3,
                article_next_at = $4, claim = NULL, claimed_until = NULL
             WHERE id = $1 AND claim = $2 AND article_state = 'pending'",
            &[&article.item, &article.claim, &error, &retry_at.timestamp()],
        )? == 1)
    }

    pub fn reread_article(&self, article: &ArticleToFetch) -> Result<Option<ArticleToFetch>> {
        let row = self.conn()?.query_opt(
            "SELECT title, summary, content, content_hash FROM items
             WHERE id = $1 AND claim = $2",
            &[&article.item, &article.claim],
        )?;
        row.map(|r| {
            Ok(ArticleToFetch {
                title: r.try_get(0)?,
                summary: r.try_get(1)?,
                content: r.try_get(2)?,
                content_hash: r.try_get(3)?,
                ..article.clone()
            })
        })
        .transpose()
    }

    pub fn release_article(&self, article: &ArticleToFetch) -> Result<()> {
        self.conn()?.execute(
            "UPDATE items SET claim = NULL, claimed_until = NULL WHERE id = $1 AND claim = $2",
            &[&article.item, &article.claim],
        )?;
        Ok(())
    }

    pub fn article_counts(&self) -> Result<HashMap<String, ArticleCounts>> {
        let mut conn = self.conn()?;
        let mut counts: HashMap<String, ArticleCounts> = HashMap::new();
        let rows = conn.query(
            "SELECT feed_id, article_state, COUNT(*) FROM items
             WHERE article_state IS NOT NULL GROUP BY feed_id, article_state",
            &[],
        )?;
        for r in &rows {
            let state: ArticleState = r.try_get(1)?;
            let n: i64 = r.try_get(2)?;
            counts
                .entry(r.try_get(0)?)
                .or_default()
                .add(state, u64::try_from(n).unwrap_or_default());
        }
        let rows = conn.query(
            "SELECT feed_id, article_error FROM items
             WHERE id IN (SELECT MAX(id) FROM items WHERE article_error IS NOT NULL
                          GROUP BY feed_id)",
            &[],
        )?;
        for r in &rows {
            counts.entry(r.try_get(0)?).or_default().last_error = r.try_get(1)?;
        }
        Ok(counts)
    }
}
