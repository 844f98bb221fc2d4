//! Stories: the story a new item joins (see [`crate::story`] and the SQLite twin).

use std::sync::Mutex;

use super::*;
use crate::story::{Candidate, Indexed, MAX_CANDIDATES, StoryIndex, StoryRules, Terms, ranked};

/// See the SQLite store's `refresh`.
pub(super) fn refresh(
    tx: &mut Transaction<'_>,
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
    for r in tx.query(
        "SELECT id, story_id, feed_id, first_seen_at, title, summary, content FROM items
         WHERE id > $1 AND story_id IS NOT NULL AND first_seen_at >= $2
         ORDER BY id",
        &[&after, &since],
    )? {
        let summary: String = r.try_get(5)?;
        let content: String = r.try_get(6)?;
        found.push(Indexed {
            id: r.try_get(0)?,
            story: r.try_get(1)?,
            feed: r.try_get(2)?,
            seen_at: r.try_get(3)?,
            terms: Terms::of_item(r.try_get(4)?, &summary, &content),
        });
    }
    let mut index = index.lock().unwrap_or_else(|p| p.into_inner());
    for indexed in found {
        index.add(indexed);
    }
    index.loaded();
    Ok(())
}

/// Sets the story of the new item `item_id` with `terms` ([`Terms::of_item`]), as the
/// SQLite store's `choose_story` chooses it.
#[allow(clippy::too_many_arguments)]
pub(super) fn assign_story(
    tx: &mut Transaction<'_>,
    index: &Mutex<StoryIndex>,
    item_id: i64,
    feed_id: &str,
    item: &Item,
    terms: Terms,
    now_s: i64,
    rules: &StoryRules,
) -> Result<Indexed> {
    let since = now_s.saturating_sub(rules.window.as_secs() as i64);
    let mut candidates = index
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .candidates(&terms, feed_id, since);
    if let Some(link) = &item.link {
        for row in tx.query(
            "SELECT id, story_id FROM items
             WHERE link = $1 AND feed_id <> $2 AND first_seen_at >= $3 AND story_id IS NOT NULL
             ORDER BY id LIMIT $4",
            &[link, &feed_id, &since, &(MAX_CANDIDATES as i64)],
        )? {
            let candidate = Candidate {
                item: row.try_get(0)?,
                story: row.try_get(1)?,
                similarity: 1.0,
            };
            let index = index.lock().unwrap_or_else(|p| p.into_inner());
            candidates.push(index.same_link(candidate, &terms, rules));
        }
    }
    let mut story = item_id;
    let has_feed =
        tx.prepare("SELECT EXISTS (SELECT 1 FROM items WHERE story_id = $1 AND feed_id = $2)")?;
    for candidate in ranked(candidates, rules) {
        // Items of one feed are never one story (a live blog's updates share a page).
        let taken: bool = tx
            .query_one(&has_feed, &[&candidate.story, &feed_id])?
            .try_get(0)?;
        if !taken {
            story = candidate.story;
            break;
        }
    }
    tx.execute(
        "UPDATE items SET story_id = $2 WHERE id = $1",
        &[&item_id, &story],
    )?;
    Ok(Indexed {
        id: item_id,
        story,
        feed: feed_id.to_owned(),
        seen_at: now_s,
        terms,
    })
}

/// See the SQLite store's `insert_match`.
pub(super) fn insert_match(
    tx: &mut Transaction<'_>,
    subscription_id: &SubscriptionId,
    item_id: i64,
    story: i64,
    now_s: i64,
) -> Result<usize> {
    Ok(tx.execute(
        "INSERT INTO matches (subscription_id, item_id, matched_at, quiet)
         SELECT $1, $2, $3, seen.got AND seen.mode = 'next'
         FROM (SELECT s.new_outlets AS mode, EXISTS (
                   SELECT 1 FROM stories_sent g
                   WHERE g.subscriber_id = q.subscriber_id AND g.story_id = $4
               ) AS got
               FROM subscriptions q JOIN subscribers s ON s.id = q.subscriber_id
               WHERE q.id = $1) seen
         WHERE NOT (seen.got AND seen.mode = 'never')
         ON CONFLICT DO NOTHING",
        &[subscription_id, &item_id, &now_s, &story],
    )? as usize)
}
