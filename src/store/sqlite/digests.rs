//! Digests: which are due, and taking a subscriber's pending matches into one.

use super::*;

impl Sqlite {
    pub fn due_digests(
        &self,
        now: DateTime<Utc>,
        ignore_schedule: bool,
    ) -> Result<Vec<SubscriberId>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT s.id FROM subscribers s
             WHERE s.paused_at IS NULL AND (
                 (s.frequency <> 'immediate' AND NOT ?2
                  AND (s.next_digest_at IS NULL OR s.next_digest_at <= ?1))
                 OR ((s.frequency = 'immediate' OR ?2) AND EXISTS (
                     SELECT 1 FROM subscriptions q
                     JOIN matches m ON m.subscription_id = q.id AND m.outbox_id IS NULL
                                       AND NOT m.quiet
                     WHERE q.subscriber_id = s.id)))
             ORDER BY s.id",
        )?;
        let rows = stmt.query_map(params![now.timestamp(), ignore_schedule], |r| r.get(0))?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }

    pub fn take_digest(
        &self,
        subscriber_id: SubscriberId,
        now: DateTime<Utc>,
        ignore_schedule: bool,
        message_domain: &str,
        render: impl FnOnce(&Subscriber, &Parcels) -> Result<RenderedRound>,
    ) -> Result<Option<OutboxId>> {
        let now_s = now.timestamp();
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let subscriber = tx
            .prepare_cached(&format!(
                "SELECT {SUBSCRIBER_COLUMNS} FROM subscribers s WHERE s.id = ?1"
            ))?
            .query_row([subscriber_id], |r| Ok(subscriber_row(r)))
            .optional()?
            .transpose()?;
        let Some(mut subscriber) = subscriber else {
            return Ok(None);
        };
        if !subscriber.digest_due(now, ignore_schedule) {
            return Ok(None);
        }
        let next = subscriber.schedule.next_after(now, subscriber.timezone);
        tx.prepare_cached("UPDATE subscribers SET next_digest_at = ?2 WHERE id = ?1")?
            .execute(params![subscriber.id, next.map(|d| d.timestamp())])?;
        let entries = {
            let mut stmt = tx.prepare_cached(
                "SELECT q.id, q.query, i.id, f.id, f.name, f.tags, i.title, i.link, i.summary,
                        i.content, i.published_at, i.first_seen_at, m.updated, i.article_text,
                        COALESCE(i.story_id, i.id), m.quiet, i.lang, q.crosses_languages
                 FROM matches m
                 JOIN subscriptions q ON q.id = m.subscription_id
                 JOIN items i ON i.id = m.item_id
                 JOIN feeds f ON f.id = i.feed_id
                 WHERE q.subscriber_id = ?1 AND m.outbox_id IS NULL
                 ORDER BY m.quiet, q.id, COALESCE(i.published_at, i.first_seen_at) DESC, i.id
                 LIMIT ?2",
            )?;
            stmt.query_map(params![subscriber.id, MAX_DIGEST_ENTRIES as i64 + 1], |r| {
                let tags: String = r.get(5)?;
                Ok(DigestEntry {
                    subscription_id: r.get(0)?,
                    query: r.get(1)?,
                    item_id: r.get(2)?,
                    feed_id: r.get(3)?,
                    feed_name: r.get(4)?,
                    tags: split_tags(&tags),
                    title: r.get(6)?,
                    link: r.get(7)?,
                    summary: r.get(8)?,
                    content: r.get(9)?,
                    published: time_opt(r, 10)?,
                    first_seen: time(r, 11)?,
                    updated: r.get(12)?,
                    article: r.get(13)?,
                    story: r.get(14)?,
                    more_coverage: r.get(15)?,
                    lang: r.get(16)?,
                    crosses_languages: r.get(17)?,
                })
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?
        };
        // New outlets for stories the subscriber got wait for a digest with news.
        if entries.iter().all(|e| e.more_coverage) {
            tx.commit()?;
            return Ok(None);
        }
        let mut entries = entries;
        let more_follow = entries.len() > MAX_DIGEST_ENTRIES;
        if more_follow {
            entries.truncate(MAX_DIGEST_ENTRIES);
            // Due again at once: the rest go out in the next message, not next period.
            tx.prepare_cached("UPDATE subscribers SET next_digest_at = ?2 WHERE id = ?1")?
                .execute(params![subscriber.id, now_s])?;
        }
        subscriber.queries = entries.iter().map(|e| e.query.clone()).collect();
        subscriber.queries.dedup();
        let routes = Routes {
            not_to_email: tx
                .prepare_cached(
                    "SELECT id FROM subscriptions WHERE subscriber_id = ?1 AND NOT to_email",
                )?
                .query_map([subscriber.id], |r| r.get(0))?
                .collect::<rusqlite::Result<_>>()?,
            channels: super::channels::active_routes(&tx, subscriber.id)?,
        };
        let parcels = route(&entries, &routes, more_follow);
        let rendered = render(&subscriber, &parcels)?;
        let rows = crate::store::digests::check_rendered(&parcels, &rendered, entries.len())?;

        let mut carrier: HashMap<(SubscriptionId, ItemId), OutboxId> = HashMap::new();
        let mut first = None;
        if let Some(mail) = &rendered.email {
            // The row id is part of the Message-ID, so insert first with a placeholder.
            tx.prepare_cached(
                "INSERT INTO outbox (subscriber_id, recipient, message_id, subject, body_text,
                                     body_html, created_at, next_attempt_at)
                 VALUES (?1, ?2, 'pending:' || hex(randomblob(16)), ?3, ?4, ?5, ?6, ?6)",
            )?
            .execute(params![
                subscriber.id,
                subscriber.email,
                mail.subject,
                mail.text,
                mail.html,
                now_s
            ])?;
            let outbox_id = OutboxId(tx.last_insert_rowid());
            let message_id = format!(
                "<digest.{outbox_id}.{}.{now_s}@{message_domain}>",
                subscriber.id
            );
            tx.prepare_cached("UPDATE outbox SET message_id = ?2 WHERE id = ?1")?
                .execute(params![outbox_id, message_id])?;
            for e in &parcels.email {
                carrier.insert((e.subscription_id, e.item_id), outbox_id);
            }
            first = Some(outbox_id);
        }
        for ((channel, taken), event) in parcels.channels.iter().zip(&rendered.events) {
            let body = serde_json::to_string(event)?;
            let outbox_id = super::channels::insert_push(
                &tx,
                OutboxKind::Push,
                subscriber.id,
                channel.id,
                &channel.name,
                &crate::store::event_id()?,
                &event.data.title,
                &body,
                now,
            )?;
            for e in taken {
                carrier
                    .entry((e.subscription_id, e.item_id))
                    .or_insert(outbox_id);
            }
            first.get_or_insert(outbox_id);
        }
        let mut taken = 0;
        {
            let mut take = tx.prepare_cached(
                "UPDATE matches SET outbox_id = ?3
                 WHERE subscription_id = ?1 AND item_id = ?2 AND outbox_id IS NULL",
            )?;
            let mut got = tx.prepare_cached(
                "INSERT INTO stories_sent (subscriber_id, story_id, sent_at) VALUES (?1, ?2, ?3)
                 ON CONFLICT DO UPDATE SET sent_at = excluded.sent_at",
            )?;
            for e in &entries {
                let Some(outbox_id) = carrier.get(&(e.subscription_id, e.item_id)) else {
                    continue;
                };
                taken += take.execute(params![e.subscription_id, e.item_id, outbox_id])?;
                got.execute(params![subscriber.id, e.story, now_s])?;
            }
        }
        if taken != entries.len() || rows == 0 {
            bail!(
                "digest for subscriber {}: took {taken} matches but rendered {}",
                subscriber.id,
                entries.len()
            );
        }
        let Some(outbox_id) = first else {
            bail!("digest for subscriber {}: nothing written", subscriber.id);
        };
        tx.commit()?;
        Ok(Some(outbox_id))
    }

    // ---- outbox --------------------------------------------------------------------------
}
