//! Items: storing a poll's items (with their matches and tombstones), reading them back.

use super::*;

impl Postgres {
    pub fn store_items(
        &self,
        feed: &FeedToPoll,
        poll: &SuccessfulPoll,
        mut find_matches: impl FnMut(&Item, Option<&str>, Option<&str>) -> Vec<SubscriptionId>,
    ) -> Result<StoreOutcome> {
        let SuccessfulPoll {
            items,
            etag,
            last_modified,
            full_fetch,
            moved_to,
            repairs,
            body_hash,
            now,
            next_poll_at,
            baseline_cutoff,
            matcher_generation,
            snapshot,
            stories,
            ..
        } = poll;
        let (full_fetch, now, next_poll_at) = (*full_fetch, *now, *next_poll_at);
        let (baseline_cutoff, matcher_generation) = (*baseline_cutoff, *matcher_generation);
        let now_s = now.timestamp();
        let is_baseline = feed.baseline_at.is_none();
        let listing = matches!(feed.options.source, crate::config::Source::Html(_));
        let mut stored = Stored::default();
        let mut conn = self.conn()?;
        let mut tx = conn.transaction()?;
        // Locks the feed's row to the end: the claim cannot be taken or voided before this
        // commits, and this feed's items are written by this transaction alone (prune
        // waits for the row too), so "seen before?" below stays true until the commit.
        if !holds_claim(&mut tx, feed)? {
            return Ok(StoreOutcome::ClaimLost);
        }
        // FOR SHARE to the end: a change to the subscriptions locks this row first (a
        // trigger, before the change), so none commits between this check and the matches
        // written below; polls of other feeds share the lock and do not wait for this one.
        let generation: i64 = tx
            .query_one(
                "SELECT value FROM generations WHERE name = 'subscriptions' FOR SHARE",
                &[],
            )?
            .try_get(0)?;
        if generation != matcher_generation {
            return Ok(StoreOutcome::StaleMatcher);
        }
        super::stories::refresh(&mut tx, &self.stories, now_s, stories)?;
        let mut grouped = Vec::new();
        let pruned = tx.prepare(
            "SELECT EXISTS (SELECT 1 FROM item_tombstones WHERE feed_id = $1 AND key = $2)",
        )?;
        let insert_item = tx.prepare(
            "INSERT INTO items (feed_id, key, guid, link, title, summary, content, published_at,
                                first_seen_at, content_hash, article_state, article_link,
                                article_next_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $4, $9)
             ON CONFLICT (feed_id, key) DO NOTHING
             RETURNING id",
        )?;
        let known = tx.prepare(
            "SELECT id, content_hash, link, article_state, article_text, lang
             FROM items WHERE feed_id = $1 AND key = $2",
        )?;
        let set_lang = tx.prepare("UPDATE items SET lang = $2 WHERE id = $1")?;
        // A new link for an item whose article is in: fetched again, and the item sent
        // again (marked updated) once it is. One still pending fetches the new link.
        let refetch_article = tx.prepare(
            "UPDATE items SET article_state = 'pending', article_link = $2,
                article_next_at = $3, article_attempts = 0, article_error = NULL,
                article_resend = (article_state IS DISTINCT FROM 'pending' OR article_resend),
                claim = NULL, claimed_until = NULL
             WHERE id = $1",
        )?;
        let update_item = tx.prepare(
            "UPDATE items SET title = $2, summary = $3, content = $4, link = $5,
                content_hash = $6, updated_at = $7 WHERE id = $1",
        )?;
        let set_hash = tx.prepare("UPDATE items SET content_hash = $2 WHERE id = $1")?;
        let set_link = tx.prepare("UPDATE items SET link = $2 WHERE id = $1")?;
        // An edited item goes out again, marked updated, to the subscriptions it was
        // already sent to and still matches; one still pending just shows the new text.
        let resend_match = tx.prepare(
            "UPDATE matches SET outbox_id = NULL, updated = TRUE, matched_at = $3
             WHERE subscription_id = $1 AND item_id = $2 AND outbox_id IS NOT NULL",
        )?;
        for (index, item) in items.iter().enumerate() {
            let was_pruned: bool = tx.query_one(&pruned, &[&feed.id, &item.key])?.try_get(0)?;
            if was_pruned {
                // Past retention and pruned: old news, whatever the feed says now.
                continue;
            }
            let hash = if listing {
                item.headline_fingerprint()
            } else {
                item.fingerprint()
            };
            // On the baseline poll, only recent items may match: older ones are stored as
            // seen, and their articles never fetched.
            let old_news = item.published.is_some_and(|p| p < baseline_cutoff);
            // A listing page shows what it lists now: an entry dated before the
            // backlog that slides onto it (from page 2) is old news on any poll.
            let baseline_old = is_baseline && item.published.is_none_or(|p| p < baseline_cutoff);
            let may_match = !(baseline_old || listing && old_news);
            let wants_article = may_match && feed.options.full_text && item.link.is_some();
            let pending = wants_article.then_some(ArticleState::Pending.as_str());
            let inserted = tx.query_opt(
                &insert_item,
                &[
                    &feed.id,
                    &item.key,
                    &item.guid,
                    &item.link,
                    &item.title,
                    &item.summary,
                    &item.content,
                    &item.published.map(|d| d.timestamp()),
                    &now_s,
                    &hash,
                    &pending,
                ],
            )?;
            let Some(inserted) = inserted else {
                // Seen before: never new again, but a material edit is recorded.
                let row = tx.query_one(&known, &[&feed.id, &item.key])?;
                let id: i64 = row.try_get(0)?;
                let old: Option<String> = row.try_get(1)?;
                let old_link: Option<String> = row.try_get(2)?;
                let article: Option<ArticleState> = row.try_get(3)?;
                let article_text: Option<String> = row.try_get(4)?;
                let lang: Option<String> = row.try_get(5)?;
                // A full-text item's new link is a new article: fetched again.
                let refetch = feed.options.full_text
                    && article.is_some()
                    && item.link.is_some()
                    && item.link != old_link;
                match old {
                    Some(old) if old != hash => {
                        tx.execute(
                            &update_item,
                            &[
                                &id,
                                &item.title,
                                &item.summary,
                                &item.content,
                                &item.link,
                                &hash,
                                &now_s,
                            ],
                        )?;
                        stored.updated_items += 1;
                        if refetch {
                            tx.execute(&refetch_article, &[&id, &item.link, &now_s])?;
                            stored.articles_pending += 1;
                        } else if article != Some(ArticleState::Pending) {
                            // (A pending item is matched once its article is in, with the
                            // latest text.)
                            let text = article_text.as_deref();
                            for subscription in find_matches(item, text, lang.as_deref()) {
                                stored.matches += tx
                                    .execute(&resend_match, &[&subscription, &id, &now_s])?
                                    as usize;
                            }
                        }
                    }
                    None => {
                        tx.execute(&set_hash, &[&id, &hash])?;
                    }
                    Some(_) if refetch => {
                        tx.execute(&set_link, &[&id, &item.link])?;
                        tx.execute(&refetch_article, &[&id, &item.link, &now_s])?;
                        stored.articles_pending += 1;
                    }
                    Some(_) => {}
                }
                continue;
            };
            let item_id: i64 = inserted.try_get(0)?;
            stored.new_items += 1;
            if !may_match {
                continue;
            }
            // Only items that can be alerted are grouped: old news is never shown.
            let crate::store::Prepared { terms, lang } = poll.prepare(index);
            let indexed = super::stories::assign_story(
                &mut tx,
                &self.stories,
                item_id,
                &feed.id,
                item,
                terms,
                now_s,
                stories,
            )?;
            let story = indexed.story;
            grouped.push(indexed);
            if let Some(lang) = &lang {
                tx.execute(&set_lang, &[&item_id, lang])?;
            }
            if wants_article {
                // Matched once, when its article is in (or will never be).
                stored.articles_pending += 1;
                continue;
            }
            for subscription in find_matches(item, None, lang.as_deref()) {
                stored.matches +=
                    super::stories::insert_match(&mut tx, &subscription, item_id, story, now_s)?;
            }
        }
        let repairs = (!repairs.is_empty()).then(|| repairs.join("\n"));
        tx.execute(
            "UPDATE feeds SET etag = $2, last_modified = $3,
             baseline_at = COALESCE(baseline_at, $4), next_poll_at = $5, last_poll_at = $4,
             last_success_at = $4, last_status = 'ok', last_error = NULL,
             last_error_kind = NULL, consecutive_failures = 0, failing_since = NULL,
             claimed_until = NULL, claim = NULL,
             last_full_fetch_at = CASE WHEN $6 THEN $4 ELSE last_full_fetch_at END,
             moved_to = $7, repairs = $8, body_hash = $9,
             page_snapshot = COALESCE($10, page_snapshot)
             WHERE id = $1",
            &[
                &feed.id,
                &etag,
                &last_modified,
                &now_s,
                &next_poll_at.timestamp(),
                &full_fetch,
                &moved_to,
                &repairs,
                &body_hash,
                &snapshot,
            ],
        )?;
        tx.commit()?;
        let mut index = self.stories.lock().unwrap_or_else(|p| p.into_inner());
        for indexed in grouped {
            index.add(indexed);
        }
        Ok(StoreOutcome::Stored(stored))
    }

    pub fn feed_items(&self, feed_id: &str) -> Result<Vec<(String, Option<DateTime<Utc>>)>> {
        let rows = self.conn()?.query(
            "SELECT title, updated_at FROM items WHERE feed_id = $1 ORDER BY id DESC",
            &[&feed_id],
        )?;
        rows.iter()
            .map(|r| Ok((r.try_get(0)?, time_opt(r.try_get(1)?)?)))
            .collect()
    }

    pub fn items_since(&self, since: DateTime<Utc>) -> Result<Vec<StoredItem>> {
        let rows = self.conn()?.query(
            "SELECT f.id, f.name, f.tags, i.title, i.summary, i.content, i.link, i.published_at,
                    i.first_seen_at, i.lang
             FROM items i JOIN feeds f ON f.id = i.feed_id
             WHERE i.first_seen_at >= $1
             ORDER BY COALESCE(i.published_at, i.first_seen_at) DESC, i.id DESC",
            &[&since.timestamp()],
        )?;
        rows.iter()
            .map(|r| {
                let tags: String = r.try_get(2)?;
                Ok(StoredItem {
                    feed_id: r.try_get(0)?,
                    feed_name: r.try_get(1)?,
                    tags: split_tags(&tags),
                    title: r.try_get(3)?,
                    summary: r.try_get(4)?,
                    content: r.try_get(5)?,
                    link: r.try_get(6)?,
                    published: time_opt(r.try_get(7)?)?,
                    first_seen: time(r.try_get(8)?)?,
                    lang: r.try_get(9)?,
                })
            })
            .collect()
    }
}
