//! Subscribers and their searches, and the generation the matcher is compiled at.
//!
//! Addresses compare as SQLite's `COLLATE NOCASE` does (ASCII letters folded):
//! `lower(email COLLATE "C")`, the expression of the unique index `subscribers_email`.

use super::*;
use crate::store::NewOutlets;

impl Postgres {
    pub fn add_subscription(
        &self,
        email: &str,
        query: &str,
        schedule: Schedule,
        timezone: Tz,
        now: DateTime<Utc>,
    ) -> Result<bool> {
        let mut conn = self.conn()?;
        let mut tx = conn.transaction()?;
        let (_, added) = add_subscription_in(&mut tx, email, query, schedule, timezone, now)?;
        tx.commit()?;
        Ok(added)
    }

    pub fn remove_subscriber(&self, email: &str) -> Result<bool> {
        Ok(self.conn()?.execute(
            "DELETE FROM subscribers WHERE lower(email COLLATE \"C\") = lower($1 COLLATE \"C\")",
            &[&email],
        )? == 1)
    }

    pub fn subscriber_by_id(&self, id: SubscriberId) -> Result<Option<Subscriber>> {
        let mut conn = self.conn()?;
        let mut tx = Self::snapshot(&mut conn)?;
        let row = tx.query_opt(
            &format!("SELECT {SUBSCRIBER_COLUMNS} FROM subscribers s WHERE s.id = $1"),
            &[&id],
        )?;
        let Some(row) = row else {
            return Ok(None);
        };
        let mut subscriber = subscriber_row(&row)?;
        subscriber.queries = subscriptions_of_in(&mut tx, id)?
            .into_iter()
            .map(|(_, q)| q)
            .collect();
        tx.commit()?;
        Ok(Some(subscriber))
    }

    pub fn subscriptions_of(
        &self,
        subscriber_id: SubscriberId,
    ) -> Result<Vec<(SubscriptionId, String)>> {
        subscriptions_of_in(&mut *self.conn()?, subscriber_id)
    }

    pub fn subscription(&self, id: SubscriptionId) -> Result<Option<(String, String)>> {
        let row = self.conn()?.query_opt(
            "SELECT q.query, s.email FROM subscriptions q
             JOIN subscribers s ON s.id = q.subscriber_id WHERE q.id = $1",
            &[&id],
        )?;
        match row {
            Some(r) => Ok(Some((r.try_get(0)?, r.try_get(1)?))),
            None => Ok(None),
        }
    }

    pub fn subscription_matches(
        &self,
        id: SubscriptionId,
        limit: usize,
    ) -> Result<Vec<MatchedItem>> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = self.conn()?.query(
            "SELECT i.id, i.title, i.link, i.summary, i.published_at, m.matched_at, f.name
             FROM matches m JOIN items i ON i.id = m.item_id JOIN feeds f ON f.id = i.feed_id
             WHERE m.subscription_id = $1
             ORDER BY m.matched_at DESC, i.id DESC LIMIT $2",
            &[&id, &limit],
        )?;
        rows.iter()
            .map(|r| {
                Ok(MatchedItem {
                    item_id: r.try_get(0)?,
                    title: r.try_get(1)?,
                    link: r.try_get(2)?,
                    summary: r.try_get(3)?,
                    published: time_opt(r.try_get(4)?)?,
                    matched_at: time(r.try_get(5)?)?,
                    feed_name: r.try_get(6)?,
                })
            })
            .collect()
    }

    pub fn subscription_states(
        &self,
        subscriber_id: SubscriberId,
    ) -> Result<Vec<(SubscriptionId, String, bool)>> {
        let rows = self.conn()?.query(
            "SELECT id, query, paused_at IS NOT NULL FROM subscriptions
             WHERE subscriber_id = $1 ORDER BY id",
            &[&subscriber_id],
        )?;
        rows.iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?)))
            .collect()
    }

    pub fn set_subscription_paused(
        &self,
        subscriber_id: SubscriberId,
        subscription_id: SubscriptionId,
        paused: bool,
        now: DateTime<Utc>,
    ) -> Result<bool> {
        Ok(self.conn()?.execute(
            "UPDATE subscriptions SET paused_at = CASE WHEN $3 THEN COALESCE(paused_at, $4) END
             WHERE id = $1 AND subscriber_id = $2",
            &[&subscription_id, &subscriber_id, &paused, &now.timestamp()],
        )? == 1)
    }

    pub fn remove_subscription(
        &self,
        subscriber_id: SubscriberId,
        subscription_id: SubscriptionId,
    ) -> Result<bool> {
        Ok(self.conn()?.execute(
            "DELETE FROM subscriptions WHERE id = $1 AND subscriber_id = $2",
            &[&subscription_id, &subscriber_id],
        )? == 1)
    }

    pub fn set_schedule(
        &self,
        subscriber_id: SubscriberId,
        schedule: Schedule,
        timezone: Tz,
        now: DateTime<Utc>,
    ) -> Result<bool> {
        let next = schedule.next_after(now, timezone).map(|d| d.timestamp());
        let (frequency, time, weekday) = schedule_columns(schedule);
        Ok(self.conn()?.execute(
            "UPDATE subscribers SET frequency = $2, digest_time = $3, digest_weekday = $4,
                timezone = $5, next_digest_at = $6
             WHERE id = $1",
            &[
                &subscriber_id,
                &frequency,
                &time,
                &weekday,
                &timezone.name(),
                &next,
            ],
        )? == 1)
    }

    pub fn set_locale(&self, id: SubscriberId, locale: &str) -> Result<bool> {
        Ok(self.conn()?.execute(
            "UPDATE subscribers SET locale = $2 WHERE id = $1",
            &[&id, &locale],
        )? == 1)
    }

    pub fn set_new_outlets(&self, id: SubscriberId, new_outlets: NewOutlets) -> Result<bool> {
        let mut conn = self.conn()?;
        let mut tx = conn.transaction()?;
        let found = tx.execute(
            "UPDATE subscribers SET new_outlets = $2 WHERE id = $1",
            &[&id, &new_outlets.as_str()],
        )? == 1;
        let waiting = "quiet AND outbox_id IS NULL AND subscription_id IN
                           (SELECT id FROM subscriptions WHERE subscriber_id = $1)";
        match new_outlets {
            NewOutlets::Never => {
                // What waits of stories they got, quiet or not (under `always`), goes.
                tx.execute(&format!("DELETE FROM matches WHERE {waiting}"), &[&id])?
                    + tx.execute(
                        "DELETE FROM matches WHERE outbox_id IS NULL AND NOT updated
                           AND subscription_id IN
                               (SELECT id FROM subscriptions WHERE subscriber_id = $1)
                           AND item_id IN (SELECT i.id FROM items i JOIN stories_sent g
                                           ON g.story_id = i.story_id AND g.subscriber_id = $1)",
                        &[&id],
                    )?
            }
            NewOutlets::Always => tx.execute(
                &format!("UPDATE matches SET quiet = FALSE WHERE {waiting}"),
                &[&id],
            )?,
            NewOutlets::Next => 0,
        };
        tx.commit()?;
        Ok(found)
    }

    pub fn unsubscribe(&self, id: SubscriberId, token: &str, now: DateTime<Utc>) -> Result<()> {
        let mut conn = self.conn()?;
        let mut tx = conn.transaction()?;
        tx.execute("DELETE FROM subscribers WHERE id = $1", &[&id])?;
        tx.execute(
            "INSERT INTO unsubscribed (token, at) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            &[&token, &now.timestamp()],
        )?;
        tx.commit()?;
        Ok(())
    }

    pub fn was_unsubscribed(&self, token: &str) -> Result<bool> {
        Ok(self
            .conn()?
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM unsubscribed WHERE token = $1)",
                &[&token],
            )?
            .try_get(0)?)
    }

    pub fn remove_subscriber_by_id(&self, id: SubscriberId) -> Result<bool> {
        Ok(self
            .conn()?
            .execute("DELETE FROM subscribers WHERE id = $1", &[&id])?
            == 1)
    }

    pub fn resume_subscriber(&self, email: &str) -> Result<bool> {
        Ok(self.conn()?.execute(
            "UPDATE subscribers SET paused_at = NULL, bounces = 0
             WHERE lower(email COLLATE \"C\") = lower($1 COLLATE \"C\")",
            &[&email],
        )? == 1)
    }

    pub fn subscribers(&self) -> Result<Vec<Subscriber>> {
        let rows = self.conn()?.query(
            &format!(
                "SELECT {SUBSCRIBER_COLUMNS}, q.query
                 FROM subscribers s LEFT JOIN subscriptions q ON q.subscriber_id = s.id
                 ORDER BY lower(s.email COLLATE \"C\"), s.id, q.id"
            ),
            &[],
        )?;
        let mut out: Vec<Subscriber> = Vec::new();
        for r in &rows {
            let id: SubscriberId = r.try_get(0)?;
            if out.last().is_none_or(|s| s.id != id) {
                out.push(subscriber_row(r)?);
            }
            if let (Some(q), Some(last)) = (
                r.try_get::<_, Option<String>>(SUBSCRIBER_COLUMN_COUNT)?,
                out.last_mut(),
            ) {
                last.queries.push(q);
            }
        }
        Ok(out)
    }

    pub fn subscriber(&self, email: &str) -> Result<Option<Subscriber>> {
        let id: Option<SubscriberId> = self
            .conn()?
            .query_opt(
                "SELECT id FROM subscribers
                 WHERE lower(email COLLATE \"C\") = lower($1 COLLATE \"C\")",
                &[&email.trim()],
            )?
            .map(|r| r.try_get(0))
            .transpose()?;
        match id {
            Some(id) => self.subscriber_by_id(id),
            None => Ok(None),
        }
    }

    pub fn subscriptions_generation(&self) -> Result<i64> {
        subscriptions_generation(&mut *self.conn()?)
    }

    pub fn subscriptions(&self) -> Result<ActiveSubscriptions> {
        let mut conn = self.conn()?;
        let mut tx = Self::snapshot(&mut conn)?;
        let generation = subscriptions_generation(&mut tx)?;
        let queries = tx
            .query(
                "SELECT id, query FROM subscriptions WHERE paused_at IS NULL ORDER BY id",
                &[],
            )?
            .iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
            .collect::<Result<Vec<_>>>()?;
        let crossing = tx
            .query(
                "SELECT id FROM subscriptions
                 WHERE paused_at IS NULL AND crosses_languages ORDER BY id",
                &[],
            )?
            .iter()
            .map(|r| Ok(r.try_get(0)?))
            .collect::<Result<Vec<_>>>()?;
        tx.commit()?;
        Ok(ActiveSubscriptions {
            generation,
            queries,
            crossing,
        })
    }

    pub fn set_crosses_languages(
        &self,
        subscriber: SubscriberId,
        search: SubscriptionId,
        crosses: bool,
    ) -> Result<bool> {
        Ok(self.conn()?.execute(
            "UPDATE subscriptions SET crosses_languages = $3
             WHERE id = $1 AND subscriber_id = $2 AND crosses_languages != $3",
            &[&search, &subscriber, &crosses],
        )? == 1)
    }

    pub fn searches_crossing_languages(
        &self,
        subscriber: SubscriberId,
    ) -> Result<Vec<SubscriptionId>> {
        self.conn()?
            .query(
                "SELECT id FROM subscriptions WHERE subscriber_id = $1 AND crosses_languages
                 ORDER BY id",
                &[&subscriber],
            )?
            .iter()
            .map(|r| Ok(r.try_get(0)?))
            .collect()
    }
}

/// A subscriber's subscriptions as (id, query), oldest first.
fn subscriptions_of_in(
    client: &mut impl GenericClient,
    subscriber_id: SubscriberId,
) -> Result<Vec<(SubscriptionId, String)>> {
    client
        .query(
            "SELECT id, query FROM subscriptions WHERE subscriber_id = $1 ORDER BY id",
            &[&subscriber_id],
        )?
        .iter()
        .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
        .collect()
}

/// A schedule as the `subscribers` columns hold it: frequency, `HH:MM`, weekday (0 = Monday).
fn schedule_columns(schedule: Schedule) -> (&'static str, Option<String>, Option<i32>) {
    (
        schedule.frequency(),
        schedule.time().map(|t| t.format("%H:%M").to_string()),
        // 0..=6: always fits.
        schedule.weekday().map(|d| d.num_days_from_monday() as i32),
    )
}

/// [`Postgres::add_subscription`] inside `tx`: returns the subscriber's id and whether the
/// search is new to them. The upsert locks the subscriber's row; adding the search then
/// locks the generation (a trigger), in that order, as every subscription change does.
pub(super) fn add_subscription_in(
    tx: &mut Transaction<'_>,
    email: &str,
    query: &str,
    schedule: Schedule,
    timezone: Tz,
    now: DateTime<Utc>,
) -> Result<(SubscriberId, bool)> {
    let next = schedule.next_after(now, timezone).map(|d| d.timestamp());
    let (frequency, time, weekday) = schedule_columns(schedule);
    let subscriber_id: SubscriberId = tx
        .query_one(
            "INSERT INTO subscribers (email, frequency, digest_time, digest_weekday, timezone,
                                      next_digest_at, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7)
             ON CONFLICT ((lower(email COLLATE \"C\"))) DO UPDATE SET
                next_digest_at =
                    CASE WHEN subscribers.frequency IS NOT DISTINCT FROM excluded.frequency
                          AND subscribers.digest_time IS NOT DISTINCT FROM excluded.digest_time
                          AND subscribers.digest_weekday IS NOT DISTINCT FROM excluded.digest_weekday
                          AND subscribers.timezone IS NOT DISTINCT FROM excluded.timezone
                         THEN subscribers.next_digest_at ELSE excluded.next_digest_at END,
                frequency = excluded.frequency, digest_time = excluded.digest_time,
                digest_weekday = excluded.digest_weekday, timezone = excluded.timezone
             RETURNING id",
            &[
                &email,
                &frequency,
                &time,
                &weekday,
                &timezone.name(),
                &next,
                &now.timestamp(),
            ],
        )?
        .try_get(0)?;
    let added = tx.execute(
        "INSERT INTO subscriptions (subscriber_id, query, created_at) VALUES ($1, $2, $3)
         ON CONFLICT DO NOTHING",
        &[&subscriber_id, &query, &now.timestamp()],
    )?;
    Ok((subscriber_id, added == 1))
}
