//! Digests: which are due, and taking a subscriber's pending matches into one.

use super::*;
use crate::store::digests::check_rendered;

impl Postgres {
    pub fn due_digests(
        &self,
        now: DateTime<Utc>,
        ignore_schedule: bool,
    ) -> Result<Vec<SubscriberId>> {
        let rows = self.conn()?.query(
            "SELECT s.id FROM subscribers s
             WHERE s.paused_at IS NULL AND (
                 (s.frequency <> 'immediate' AND NOT $2
                  AND (s.next_digest_at IS NULL OR s.next_digest_at <= $1))
                 OR ((s.frequency = 'immediate' OR $2) AND EXISTS (
                     SELECT 1 FROM subscriptions q
                     JOIN matches m ON m.subscription_id = q.id AND m.outbox_id IS NULL
                                       AND NOT m.quiet
                     WHERE q.subscriber_id = s.id)))
             ORDER BY s.id",
            &[&now.timestamp(), &ignore_schedule],
        )?;
        rows.iter().map(|r| Ok(r.try_get(0)?)).collect()
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
        let mut conn = self.conn()?;
        let mut tx = conn.transaction()?;
        // The subscriber's row is locked to the end: a second take for them (another
        // instance, the same moment) waits, then finds the matches taken.
        let row = tx.query_opt(
            &format!("SELECT {SUBSCRIBER_COLUMNS} FROM subscribers s WHERE s.id = $1 FOR UPDATE"),
            &[&subscriber_id],
        )?;
        let Some(row) = row else {
            return Ok(None);
        };
        let mut subscriber = subscriber_row(&row)?;
        if !subscriber.digest_due(now, ignore_schedule) {
            return Ok(None);
        }
        let next = subscriber.schedule.next_after(now, subscriber.timezone);
        tx.execute(
            "UPDATE subscribers SET next_digest_at = $2 WHERE id = $1",
            &[&subscriber.id, &next.map(|d| d.timestamp())],
        )?;
        // FOR UPDATE OF m: the matches rendered stay as they are until taken below (a
        // search removed meanwhile waits to cascade), so every match rendered is taken.
        let rows = tx.query(
            "SELECT q.id, q.query, i.id, f.id, f.name, f.tags, i.title, i.link, i.summary,
                    i.content, i.published_at, i.first_seen_at, m.updated, i.article_text,
                        COALESCE(i.story_id, i.id), m.quiet, i.lang, q.crosses_languages
             FROM matches m
             JOIN subscriptions q ON q.id = m.subscription_id
             JOIN items i ON i.id = m.item_id
             JOIN feeds f ON f.id = i.feed_id
             WHERE q.subscriber_id = $1 AND m.outbox_id IS NULL
             ORDER BY m.quiet, q.id, COALESCE(i.published_at, i.first_seen_at) DESC, i.id
             LIMIT $2
             FOR UPDATE OF m",
            &[&subscriber.id, &(MAX_DIGEST_ENTRIES as i64 + 1)],
        )?;
        let mut entries = rows
            .iter()
            .map(|r| {
                let tags: String = r.try_get(5)?;
                Ok(DigestEntry {
                    subscription_id: r.try_get(0)?,
                    query: r.try_get(1)?,
                    item_id: r.try_get(2)?,
                    feed_id: r.try_get(3)?,
                    feed_name: r.try_get(4)?,
                    tags: split_tags(&tags),
                    title: r.try_get(6)?,
                    link: r.try_get(7)?,
                    summary: r.try_get(8)?,
                    content: r.try_get(9)?,
                    published: time_opt(r.try_get(10)?)?,
                    first_seen: time(r.try_get(11)?)?,
                    updated: r.try_get(12)?,
                    article: r.try_get(13)?,
                    story: r.try_get(14)?,
                    more_coverage: r.try_get(15)?,
                    lang: r.try_get(16)?,
                    crosses_languages: r.try_get(17)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        // New outlets for stories the subscriber got wait for a digest with news.
        if entries.iter().all(|e| e.more_coverage) {
            tx.commit()?;
            return Ok(None);
        }
        let more_follow = entries.len() > MAX_DIGEST_ENTRIES;
        if more_follow {
            entries.truncate(MAX_DIGEST_ENTRIES);
            // Due again at once: the rest go out in the next message, not next period.
            tx.execute(
                "UPDATE subscribers SET next_digest_at = $2 WHERE id = $1",
                &[&subscriber.id, &now_s],
            )?;
        }
        subscriber.queries = entries.iter().map(|e| e.query.clone()).collect();
        subscriber.queries.dedup();
        let routes = Routes {
            not_to_email: tx
                .query(
                    "SELECT id FROM subscriptions WHERE subscriber_id = $1 AND NOT to_email",
                    &[&subscriber.id],
                )?
                .iter()
                .map(|r| r.try_get(0))
                .collect::<Result<_, _>>()?,
            channels: super::channels::active_routes(&mut tx, subscriber.id)?,
        };
        let parcels = route(&entries, &routes, more_follow);
        let rendered = render(&subscriber, &parcels)?;
        let rows = check_rendered(&parcels, &rendered, entries.len())?;

        let mut carrier: HashMap<(SubscriptionId, ItemId), OutboxId> = HashMap::new();
        let mut first = None;
        if let Some(mail) = &rendered.email {
            // The row id is part of the Message-ID: taken from the identity first.
            let outbox_id = next_id(&mut tx, "outbox")?;
            let message_id = format!(
                "<digest.{outbox_id}.{}.{now_s}@{message_domain}>",
                subscriber.id
            );
            tx.execute(
                "INSERT INTO outbox (id, subscriber_id, recipient, message_id, subject, body_text,
                                     body_html, created_at, next_attempt_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8)",
                &[
                    &outbox_id,
                    &subscriber.id,
                    &subscriber.email,
                    &message_id,
                    &mail.subject,
                    &mail.text,
                    &mail.html,
                    &now_s,
                ],
            )?;
            let outbox_id = OutboxId(outbox_id);
            for e in &parcels.email {
                carrier.insert((e.subscription_id, e.item_id), outbox_id);
            }
            first = Some(outbox_id);
        }
        for ((channel, taken), event) in parcels.channels.iter().zip(&rendered.events) {
            let body = serde_json::to_string(event)?;
            let outbox_id = super::channels::insert_push(
                &mut tx,
                OutboxKind::Push,
                subscriber.id,
                channel.id,
                &channel.name,
                &event_id()?,
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
        let take = tx.prepare(
            "UPDATE matches SET outbox_id = $3
             WHERE subscription_id = $1 AND item_id = $2 AND outbox_id IS NULL",
        )?;
        let got = tx.prepare(
            "INSERT INTO stories_sent (subscriber_id, story_id, sent_at) VALUES ($1, $2, $3)
             ON CONFLICT (subscriber_id, story_id) DO UPDATE SET sent_at = excluded.sent_at",
        )?;
        let mut taken = 0;
        for e in &entries {
            let Some(outbox_id) = carrier.get(&(e.subscription_id, e.item_id)) else {
                continue;
            };
            taken += tx.execute(&take, &[&e.subscription_id, &e.item_id, outbox_id])?;
            tx.execute(&got, &[&subscriber.id, &e.story, &now.timestamp()])?;
        }
        if taken != entries.len() as u64 || rows == 0 {
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
}
