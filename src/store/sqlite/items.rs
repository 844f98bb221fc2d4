//! Items: storing a poll's items (with their matches and tombstones), reading them back.

use super::*;
use crate::store::Prepared;
use crate::story::Indexed;

/// What is stored of an item seen before.
struct Known {
    id: i64,
    hash: Option<String>,
    link: Option<String>,
    article: Option<ArticleState>,
    article_text: Option<String>,
    lang: Option<String>,
}

impl Sqlite {
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
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        if !holds_claim(&tx, feed)? {
            return Ok(StoreOutcome::ClaimLost);
        }
        // Checked inside the write transaction: no change can land between this check
        // and the matches written below.
        if subscriptions_generation(&tx)? != matcher_generation {
            return Ok(StoreOutcome::StaleMatcher);
        }
        super::stories::refresh(&tx, &self.stories, now_s, stories)?;
        let mut grouped = Vec::new();
        {
            // Known items are looked up first: a new one is inserted once, whole (its
            // language and story included), with the id SQLite would give it.
            let mut insert_item = tx.prepare_cached(
                "INSERT INTO items (feed_id, key, guid, link, title, summary, content, published_at,
                                    first_seen_at, content_hash, article_state, article_link,
                                    article_next_at, id, lang, story_id)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?4, ?9, ?12, ?13, ?14)",
            )?;
            let mut next_id: i64 =
                tx.query_row("SELECT COALESCE(MAX(id), 0) + 1 FROM items", [], |r| {
                    r.get(0)
                })?;
            let mut known = tx.prepare_cached(
                "SELECT id, content_hash, link, article_state, article_text, lang
                 FROM items WHERE feed_id = ?1 AND key = ?2",
            )?;
            // A new link for an item whose article is in: fetched again, and the item sent
            // again (marked updated) once it is. One still pending fetches the new link.
            let mut refetch_article = tx.prepare_cached(
                "UPDATE items SET article_state = 'pending', article_link = ?2,
                    article_next_at = ?3, article_attempts = 0, article_error = NULL,
                    article_resend = (article_state IS NOT 'pending' OR article_resend),
                    claim = NULL, claimed_until = NULL
                 WHERE id = ?1",
            )?;
            let mut pruned = tx.prepare_cached(
                "SELECT EXISTS (SELECT 1 FROM item_tombstones WHERE feed_id = ?1 AND key = ?2)",
            )?;
            let mut update_item = tx.prepare_cached(
                "UPDATE items SET title = ?2, summary = ?3, content = ?4, link = ?5,
                    content_hash = ?6, updated_at = ?7 WHERE id = ?1",
            )?;
            let mut set_hash =
                tx.prepare_cached("UPDATE items SET content_hash = ?2 WHERE id = ?1")?;
            let mut set_link = tx.prepare_cached("UPDATE items SET link = ?2 WHERE id = ?1")?;
            // An edited item goes out again, marked updated, to the subscriptions it was
            // already sent to and still matches; one still pending just shows the new text.
            let mut resend_match = tx.prepare_cached(
                "UPDATE matches SET outbox_id = NULL, updated = 1, matched_at = ?3
                 WHERE subscription_id = ?1 AND item_id = ?2 AND outbox_id IS NOT NULL",
            )?;
            for (index, item) in items.iter().enumerate() {
                if pruned.query_row(params![feed.id, item.key], |r| r.get::<_, bool>(0))? {
                    // Past retention and pruned: old news, whatever the feed says now.
                    continue;
                }
                let hash = if listing {
                    item.headline_fingerprint()
                } else {
                    item.fingerprint()
                };
                // On the baseline poll, only recent items may match: older ones are stored
                // as seen, and their articles never fetched.
                let old_news = item.published.is_some_and(|p| p < baseline_cutoff);
                // A listing page shows what it lists now: an entry dated before the
                // backlog that slides onto it (from page 2) is old news on any poll.
                let baseline_old =
                    is_baseline && item.published.is_none_or(|p| p < baseline_cutoff);
                let may_match = !(baseline_old || listing && old_news);
                let wants_article = may_match && feed.options.full_text && item.link.is_some();
                let seen = known
                    .query_row(params![feed.id, item.key], |r| {
                        Ok(Known {
                            id: r.get(0)?,
                            hash: r.get(1)?,
                            link: r.get(2)?,
                            article: r.get(3)?,
                            article_text: r.get(4)?,
                            lang: r.get(5)?,
                        })
                    })
                    .optional()?;
                if let Some(seen) = seen {
                    // Seen before: never new again, but a material edit is recorded.
                    let Known {
                        id,
                        hash: old,
                        link: old_link,
                        article,
                        article_text,
                        lang,
                    } = seen;
                    // A full-text item's new link is a new article: fetched again.
                    let refetch = feed.options.full_text
                        && article.is_some()
                        && item.link.is_some()
                        && item.link != old_link;
                    match old {
                        Some(old) if old != hash => {
                            update_item.execute(params![
                                id,
                                item.title,
                                item.summary,
                                item.content,
                                item.link,
                                hash,
                                now_s
                            ])?;
                            stored.updated_items += 1;
                            if refetch {
                                refetch_article.execute(params![id, item.link, now_s])?;
                                stored.articles_pending += 1;
                            } else if article != Some(ArticleState::Pending) {
                                // (A pending item is matched once its article is in, with
                                // the latest text.)
                                let text = article_text.as_deref();
                                for subscription in find_matches(item, text, lang.as_deref()) {
                                    stored.matches +=
                                        resend_match.execute(params![subscription, id, now_s])?;
                                }
                            }
                        }
                        None => {
                            set_hash.execute(params![id, hash])?;
                        }
                        Some(_) if refetch => {
                            set_link.execute(params![id, item.link])?;
                            refetch_article.execute(params![id, item.link, now_s])?;
                            stored.articles_pending += 1;
                        }
                        Some(_) => {}
                    }
                    continue;
                }
                let item_id = next_id;
                next_id += 1;
                stored.new_items += 1;
                // Only items that can be alerted get a language and a story: old news is
                // never shown.
                let alertable = may_match.then(|| poll.prepare(index));
                let story = match &alertable {
                    Some(Prepared { terms, .. }) => super::stories::choose_story(
                        &tx,
                        &self.stories,
                        &feed.id,
                        item,
                        terms,
                        now_s,
                        stories,
                    )?
                    .unwrap_or(item_id),
                    None => item_id,
                };
                insert_item.execute(params![
                    feed.id,
                    item.key,
                    item.guid,
                    item.link,
                    item.title,
                    item.summary,
                    item.content,
                    item.published.map(|d| d.timestamp()),
                    now_s,
                    hash,
                    wants_article.then_some(ArticleState::Pending.as_str()),
                    item_id,
                    alertable.as_ref().and_then(|a| a.lang.as_deref()),
                    alertable.is_some().then_some(story),
                ])?;
                let Some(Prepared { terms, lang }) = alertable else {
                    continue;
                };
                grouped.push(Indexed {
                    id: item_id,
                    story,
                    feed: feed.id.clone(),
                    seen_at: now_s,
                    terms,
                });
                if wants_article {
                    // Matched once, when its article is in (or will never be).
                    stored.articles_pending += 1;
                    continue;
                }
                for subscription in find_matches(item, None, lang.as_deref()) {
                    stored.matches += super::stories::insert_match(
                        &tx,
                        subscription,
                        item_id,
                        story,
                        now_s,
                        story == item_id,
                    )?;
                }
            }
        }
        tx.prepare_cached(
            "UPDATE feeds SET etag = ?2, last_modified = ?3, baseline_at = COALESCE(baseline_at, ?4),
             next_poll_at = ?5, last_poll_at = ?4, last_success_at = ?4, last_status = 'ok',
             last_error = NULL, last_error_kind = NULL, consecutive_failures = 0, failing_since = NULL,
             claimed_until = NULL, claim = NULL,
             last_full_fetch_at = CASE WHEN ?6 THEN ?4 ELSE last_full_fetch_at END,
             moved_to = ?7, repairs = ?8, body_hash = ?9,
             page_snapshot = COALESCE(?10, page_snapshot)
             WHERE id = ?1",
        )?
        .execute(
            params![
                feed.id,
                etag,
                last_modified,
                now_s,
                next_poll_at.timestamp(),
                full_fetch,
                moved_to,
                (!repairs.is_empty()).then(|| repairs.join("\n")),
                body_hash,
                snapshot,
            ],
        )?;
        tx.commit()?;
        if let Some(checkpointer) = &self.checkpointer {
            checkpointer.wrote();
        }
        let mut index = self.stories.lock().unwrap_or_else(|p| p.into_inner());
        for indexed in grouped {
            index.add(indexed);
        }
        Ok(StoreOutcome::Stored(stored))
    }

    pub fn feed_items(&self, feed_id: &str) -> Result<Vec<(String, Option<DateTime<Utc>>)>> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare("SELECT title, updated_at FROM items WHERE feed_id = ?1 ORDER BY id DESC")?;
        let rows = stmt.query_map([feed_id], |r| Ok((r.get(0)?, time_opt(r, 1)?)))?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }

    pub fn items_since(&self, since: DateTime<Utc>) -> Result<Vec<StoredItem>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT f.id, f.name, f.tags, i.title, i.summary, i.content, i.link, i.published_at,
                    i.first_seen_at, i.lang
             FROM items i JOIN feeds f ON f.id = i.feed_id
             WHERE i.first_seen_at >= ?1
             ORDER BY COALESCE(i.published_at, i.first_seen_at) DESC, i.id DESC",
        )?;
        let rows = stmt.query_map([since.timestamp()], |r| {
            let tags: String = r.get(2)?;
            Ok(StoredItem {
                feed_id: r.get(0)?,
                feed_name: r.get(1)?,
                tags: split_tags(&tags),
                title: r.get(3)?,
                summary: r.get(4)?,
                content: r.get(5)?,
                link: r.get(6)?,
                published: time_opt(r, 7)?,
                first_seen: time(r, 8)?,
                lang: r.get(9)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }
}
