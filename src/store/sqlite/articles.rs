//! Articles: claims on pending articles, what each fetch found, with the item's matches.

use super::*;

impl Sqlite {
    pub fn claim_articles(
        &self,
        now: DateTime<Utc>,
        lease: Duration,
        limit: usize,
    ) -> Result<Vec<ArticleToFetch>> {
        let now_s = now.timestamp();
        let until = now_s + lease_secs(lease);
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut claimed = {
            let mut stmt = tx.prepare(
                "UPDATE items SET claim = hex(randomblob(12)), claimed_until = ?2
                 WHERE id IN (SELECT id FROM items
                              WHERE article_state = 'pending' AND article_next_at <= ?1
                                AND (claimed_until IS NULL OR claimed_until <= ?1)
                              ORDER BY article_next_at, id LIMIT ?3)
                 RETURNING id, claim, feed_id, COALESCE(article_link, ''), title, summary,
                           content, article_attempts, content_hash, lang",
            )?;
            stmt.query_map(params![now_s, until, limit], |r| {
                Ok(ArticleToFetch {
                    item: r.get(0)?,
                    claim: r.get(1)?,
                    feed_id: r.get(2)?,
                    tags: Vec::new(),
                    link: r.get(3)?,
                    content_selector: None,
                    wanted: true,
                    title: r.get(4)?,
                    summary: r.get(5)?,
                    content: r.get(6)?,
                    attempts: r.get(7)?,
                    content_hash: r.get(8)?,
                    lang: r.get(9)?,
                })
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?
        };
        {
            let mut feed = tx.prepare("SELECT tags, options FROM feeds WHERE id = ?1")?;
            for article in &mut claimed {
                let (tags, options): (String, String) =
                    feed.query_row([&article.feed_id], |r| Ok((r.get(0)?, r.get(1)?)))?;
                article.tags = split_tags(&tags);
                let options = FeedOptions::from_json(&options);
                article.content_selector = options.content_selector;
                article.wanted = options.full_text;
            }
        }
        tx.commit()?;
        claimed.sort_by_key(|a| a.item);
        Ok(claimed)
    }

    pub fn renew_article_claim(
        &self,
        article: &ArticleToFetch,
        now: DateTime<Utc>,
        lease: Duration,
    ) -> Result<bool> {
        Ok(self.conn().execute(
            "UPDATE items SET claimed_until = ?3 WHERE id = ?1 AND claim = ?2",
            params![
                article.item,
                article.claim,
                now.timestamp() + lease_secs(lease)
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
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let row: Option<(bool, Option<String>, Option<String>)> = tx
            .query_row(
                "SELECT article_resend, article_text, content_hash FROM items
                 WHERE id = ?1 AND claim = ?2 AND article_state = 'pending'",
                params![article.item, article.claim],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()?;
        let Some((resend, old_text, hash)) = row else {
            return Ok(ArticleOutcome::ClaimLost);
        };
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
        // Checked inside the write transaction, as for a poll's matches.
        if subscriptions_generation(&tx)? != done.matcher_generation {
            return Ok(ArticleOutcome::StaleMatcher);
        }
        tx.execute(
            "UPDATE items SET article_state = ?2, article_text = ?3, article_error = ?4,
                article_attempts = article_attempts + 1, article_next_at = NULL,
                article_resend = 0, claim = NULL, claimed_until = NULL
             WHERE id = ?1",
            params![article.item, done.state.as_str(), done.text, done.error],
        )?;
        let mut matches = 0;
        {
            // New: matched now, once. A new link of an item already sent: sent again,
            // marked updated, to the subscriptions it was sent to and still matches.
            let mut resend_match = tx.prepare(
                "UPDATE matches SET outbox_id = NULL, updated = 1, matched_at = ?3
                 WHERE subscription_id = ?1 AND item_id = ?2 AND outbox_id IS NOT NULL",
            )?;
            let story: i64 = tx.query_row(
                "SELECT COALESCE(story_id, id) FROM items WHERE id = ?1",
                [article.item],
                |r| r.get(0),
            )?;
            for &subscription in resend_to {
                matches += if resend {
                    resend_match.execute(params![subscription, article.item, now_s])?
                } else {
                    super::stories::insert_match(
                        &tx,
                        subscription,
                        article.item.0,
                        story,
                        now_s,
                        false,
                    )?
                };
            }
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
        Ok(self.conn().execute(
            "UPDATE items SET article_attempts = article_attempts + 1, article_error = ?3,
                article_next_at = ?4, claim = NULL, claimed_until = NULL
             WHERE id = ?1 AND claim = ?2 AND article_state = 'pending'",
            params![article.item, article.claim, error, retry_at.timestamp()],
        )? == 1)
    }

    pub fn reread_article(&self, article: &ArticleToFetch) -> Result<Option<ArticleToFetch>> {
        Ok(self
            .conn()
            .query_row(
                "SELECT title, summary, content, content_hash FROM items
                 WHERE id = ?1 AND claim = ?2",
                params![article.item, article.claim],
                |r| {
                    Ok(ArticleToFetch {
                        title: r.get(0)?,
                        summary: r.get(1)?,
                        content: r.get(2)?,
                        content_hash: r.get(3)?,
                        ..article.clone()
                    })
                },
            )
            .optional()?)
    }

    pub fn release_article(&self, article: &ArticleToFetch) -> Result<()> {
        self.conn().execute(
            "UPDATE items SET claim = NULL, claimed_until = NULL WHERE id = ?1 AND claim = ?2",
            params![article.item, article.claim],
        )?;
        Ok(())
    }

    pub fn article_counts(&self) -> Result<HashMap<String, ArticleCounts>> {
        let conn = self.conn();
        let mut counts: HashMap<String, ArticleCounts> = HashMap::new();
        let mut by_state = conn.prepare(
            "SELECT feed_id, article_state, COUNT(*) FROM items
             WHERE article_state IS NOT NULL GROUP BY feed_id, article_state",
        )?;
        let rows = by_state.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, ArticleState>(1)?,
                r.get::<_, i64>(2)?,
            ))
        })?;
        for row in rows {
            let (feed, state, n) = row?;
            let n = u64::try_from(n).unwrap_or_default();
            counts.entry(feed).or_default().add(state, n);
        }
        let mut last_error = conn.prepare(
            "SELECT feed_id, article_error FROM items
             WHERE id IN (SELECT MAX(id) FROM items WHERE article_error IS NOT NULL
                          GROUP BY feed_id)",
        )?;
        let rows = last_error.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get(1)?)))?;
        for row in rows {
            let (feed, error) = row?;
            counts.entry(feed).or_default().last_error = error;
        }
        Ok(counts)
    }
}
