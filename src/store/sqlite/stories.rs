//! Stories: the story a new item joins (see [`crate::story`]).

use super::*;
use crate::story::{Candidate, Indexed, MAX_CANDIDATES, StoryIndex, StoryRules, Terms, ranked};

/// Brings `index` up to date before a poll's items are grouped: forgets what is past the
/// window, and adds the items grouped since it last looked (all of the window's, the
/// first time), by this process or another.
pub(super) fn refresh(
    tx: &rusqlite::Transaction<'_>,
    index: &Mutex<StoryIndex>,
    now_s: i64,
    rules: &StoryRules,
) -> Result<()> {
    let since = now_s.saturating_sub(rules.window.as_secs() as i64);
    let after = {
        let mut index = index.lock().unwrap_or_else(|p| p.into_inner());
        index.evict(since);
        if index.needs_loading() {
            0
        } else {
            index.highest()
        }
    };
    let mut found = Vec::new();
    // By id (the rowid): only what was stored since, never a scan of the window.
    let mut stmt = tx.prepare_cached(
        "SELECT id, story_id, feed_id, first_seen_at, title, summary, content FROM items
         WHERE id > ?1 AND story_id IS NOT NULL AND +first_seen_at >= ?2
         ORDER BY id",
    )?;
    let mut rows = stmt.query(params![after, since])?;
    while let Some(r) = rows.next()? {
        let (title, summary, content): (String, String, String) = (r.get(4)?, r.get(5)?, r.get(6)?);
        found.push(Indexed {
            id: r.get(0)?,
            story: r.get(1)?,
            feed: r.get(2)?,
            seen_at: r.get(3)?,
            terms: Terms::of_item(&title, &summary, &content),
        });
    }
    let mut index = index.lock().unwrap_or_else(|p| p.into_inner());
    for indexed in found {
        index.add(indexed);
    }
    index.loaded();
    Ok(())
}

/// The story the new item of feed `feed_id` with `terms` ([`Terms::of_item`]) joins: that
/// of an item of another feed seen within the window with the same link or alike terms,
/// whose story has no item of this feed yet; `None` when it starts a story of its own.
pub(super) fn choose_story(
    tx: &rusqlite::Transaction<'_>,
    index: &Mutex<StoryIndex>,
    feed_id: &str,
    item: &Item,
    terms: &Terms,
    now_s: i64,
    rules: &StoryRules,
) -> Result<Option<i64>> {
    let since = now_s.saturating_sub(rules.window.as_secs() as i64);
    let mut candidates = index
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .candidates(terms, feed_id, since);
    if let Some(link) = &item.link {
        let mut same_link = tx.prepare_cached(
            "SELECT id, story_id FROM items
             WHERE link = ?1 AND feed_id <> ?2 AND first_seen_at >= ?3 AND story_id IS NOT NULL
             ORDER BY id LIMIT ?4",
        )?;
        let rows =
            same_link.query_map(params![link, feed_id, since, MAX_CANDIDATES as i64], |r| {
                Ok(Candidate {
                    item: r.get(0)?,
                    story: r.get(1)?,
                    similarity: 1.0,
                })
            })?;
        let index = index.lock().unwrap_or_else(|p| p.into_inner());
        for row in rows {
            candidates.push(index.same_link(row?, terms, rules));
        }
    }
    let mut has_feed = tx.prepare_cached(
        "SELECT EXISTS (SELECT 1 FROM items WHERE story_id = ?1 AND feed_id = ?2)",
    )?;
    for candidate in ranked(candidates, rules) {
        // Items of one feed are never one story (a live blog's updates share a page).
        if !has_feed.query_row(params![candidate.story, feed_id], |r| r.get::<_, bool>(0))? {
            return Ok(Some(candidate.story));
        }
    }
    Ok(None)
}

/// Records that subscription `subscription_id` matched the new item `item_id` of story
/// `story`, unless its subscriber already got the story (a digest took an item of it for
/// them) and wants to hear nothing more of it: then nothing is recorded.
/// When they want new outlets in their next digest, the match is quiet: it goes out with
/// the next digest but does not send one. `new_story`: the item started `story` in this
/// transaction. Returns the number of matches recorded (0 or 1).
pub(super) fn insert_match(
    tx: &rusqlite::Transaction<'_>,
    subscription_id: SubscriptionId,
    item_id: i64,
    story: i64,
    now_s: i64,
    new_story: bool,
) -> Result<usize> {
    if new_story {
        // The item started its story in this transaction: nobody got it yet. (An item
        // matched later, when its article is in, may lead a story another outlet's copy
        // already brought someone.)
        return Ok(tx
            .prepare_cached(
                "INSERT INTO matches (subscription_id, item_id, matched_at, quiet)
                 VALUES (?1, ?2, ?3, 0) ON CONFLICT DO NOTHING",
            )?
            .execute(params![subscription_id, item_id, now_s])?);
    }
    Ok(tx
        .prepare_cached(
            "INSERT INTO matches (subscription_id, item_id, matched_at, quiet)
             SELECT ?1, ?2, ?3, seen.got AND seen.mode = 'next'
             FROM (SELECT s.new_outlets AS mode, EXISTS (
                       SELECT 1 FROM stories_sent g
                       WHERE g.subscriber_id = q.subscriber_id AND g.story_id = ?4
                   ) AS got
                   FROM subscriptions q JOIN subscribers s ON s.id = q.subscriber_id
                   WHERE q.id = ?1) seen
             WHERE NOT (seen.got AND seen.mode = 'never')
             ON CONFLICT DO NOTHING",
        )?
        .execute(params![subscription_id, item_id, now_s, story])?)
}
