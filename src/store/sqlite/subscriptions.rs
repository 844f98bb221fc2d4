//! Subscribers and their searches, and the generation the matcher is compiled at.

use super::*;

impl Sqlite {
    pub fn add_subscription(
        &self,
        email: &str,
        query: &str,
        schedule: Schedule,
        timezone: Tz,
        now: DateTime<Utc>,
    ) -> Result<bool> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let (_, added) = add_subscription_in(&tx, email, query, schedule, timezone, now)?;
        tx.commit()?;
        Ok(added)
    }

    pub fn remove_subscriber(&self, email: &str) -> Result<bool> {
        Ok(self
            .conn()
            .execute("DELETE FROM subscribers WHERE email = ?1", [email])?
            == 1)
    }

    pub fn subscriber_by_id(&self, id: SubscriberId) -> Result<Option<Subscriber>> {
        let conn = self.conn();
        let subscriber = conn
            .query_row(
                &format!("SELECT {SUBSCRIBER_COLUMNS} FROM subscribers s WHERE s.id = ?1"),
                [id],
                |r| Ok(subscriber_row(r)),
            )
            .optional()?
            .transpose()?;
        let Some(mut subscriber) = subscriber else {
            return Ok(None);
        };
        subscriber.queries = self
            .subscriptions_of_locked(&conn, id)?
            .into_iter()
            .map(|(_, q)| q)
            .collect();
        Ok(Some(subscriber))
    }

    pub fn subscriptions_of(
        &self,
        subscriber_id: SubscriberId,
    ) -> Result<Vec<(SubscriptionId, String)>> {
        self.subscriptions_of_locked(&self.conn(), subscriber_id)
    }

    fn subscriptions_of_locked(
        &self,
        conn: &Connection,
        subscriber_id: SubscriberId,
    ) -> Result<Vec<(SubscriptionId, String)>> {
        let mut stmt = conn.prepare_cached(
            "SELECT id, query FROM subscriptions WHERE subscriber_id = ?1 ORDER BY id",
        )?;
        let rows = stmt.query_map([subscriber_id], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }

    pub fn subscription(&self, id: SubscriptionId) -> Result<Option<(String, String)>> {
        Ok(self
            .conn()
            .query_row(
                "SELECT q.query, s.email FROM subscriptions q
                 JOIN subscribers s ON s.id = q.subscriber_id WHERE q.id = ?1",
                [id],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?)
    }

    pub fn subscription_matches(
        &self,
        id: SubscriptionId,
        limit: usize,
    ) -> Result<Vec<MatchedItem>> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT i.id, i.title, i.link, i.summary, i.published_at, m.matched_at, f.name
             FROM matches m JOIN items i ON i.id = m.item_id JOIN feeds f ON f.id = i.feed_id
             WHERE m.subscription_id = ?1
             ORDER BY m.matched_at DESC, i.id DESC LIMIT ?2",
        )?;
        let rows = stmt.query_map(params![id, limit as i64], |r| {
            Ok(MatchedItem {
                item_id: r.get(0)?,
                title: r.get(1)?,
                link: r.get(2)?,
                summary: r.get(3)?,
                published: time_opt(r, 4)?,
                matched_at: time(r, 5)?,
                feed_name: r.get(6)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }

    pub fn subscription_states(
        &self,
        subscriber_id: SubscriberId,
    ) -> Result<Vec<(SubscriptionId, String, bool)>> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT id, query, paused_at IS NOT NULL FROM subscriptions
             WHERE subscriber_id = ?1 ORDER BY id",
        )?;
        let rows = stmt.query_map([subscriber_id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }

    pub fn set_subscription_paused(
        &self,
        subscriber_id: SubscriberId,
        subscription_id: SubscriptionId,
        paused: bool,
        now: DateTime<Utc>,
    ) -> Result<bool> {
        Ok(self.conn().execute(
            "UPDATE subscriptions SET paused_at = CASE WHEN ?3 THEN COALESCE(paused_at, ?4) END
             WHERE id = ?1 AND subscriber_id = ?2",
            params![subscription_id, subscriber_id, paused, now.timestamp()],
        )? == 1)
    }

    pub fn remove_subscription(
        &self,
        subscriber_id: SubscriberId,
        subscription_id: SubscriptionId,
    ) -> Result<bool> {
        Ok(self.conn().execute(
            "DELETE FROM subscriptions WHERE id = ?1 AND subscriber_id = ?2",
            params![subscription_id, subscriber_id],
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
        Ok(self.conn().execute(
            "UPDATE subscribers SET frequency = ?2, digest_time = ?3, digest_weekday = ?4,
                timezone = ?5, next_digest_at = ?6
             WHERE id = ?1",
            params![
                subscriber_id,
                schedule.frequency(),
                schedule.time().map(|t| t.format("%H:%M").to_string()),
                schedule.weekday().map(|d| d.num_days_from_monday()),
                timezone.name(),
                next,
            ],
        )? == 1)
    }

    pub fn set_locale(&self, id: SubscriberId, locale: &str) -> Result<bool> {
        Ok(self.conn().execute(
            "UPDATE subscribers SET locale = ?2 WHERE id = ?1",
            params![id, locale],
        )? == 1)
    }

    pub fn set_new_outlets(&self, id: SubscriberId, new_outlets: NewOutlets) -> Result<bool> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let found = tx.execute(
            "UPDATE subscribers SET new_outlets = ?2 WHERE id = ?1",
            params![id, new_outlets.as_str()],
        )? == 1;
        let waiting = "FROM matches WHERE quiet AND outbox_id IS NULL AND subscription_id IN
                           (SELECT id FROM subscriptions WHERE subscriber_id = ?1)";
        match new_outlets {
            NewOutlets::Never => {
                // What waits of stories they got, quiet or not (under `always`), goes.
                tx.execute(&format!("DELETE {waiting}"), [id])?
                    + tx.execute(
                        "DELETE FROM matches WHERE outbox_id IS NULL AND NOT updated
                           AND subscription_id IN
                               (SELECT id FROM subscriptions WHERE subscriber_id = ?1)
                           AND item_id IN (SELECT i.id FROM items i JOIN stories_sent g
                                           ON g.story_id = i.story_id AND g.subscriber_id = ?1)",
                        [id],
                    )?
            }
            NewOutlets::Always => tx.execute(
                &format!("UPDATE matches SET quiet = 0 WHERE rowid IN (SELECT rowid {waiting})"),
                [id],
            )?,
            NewOutlets::Next => 0,
        };
        tx.commit()?;
        Ok(found)
    }

    pub fn unsubscribe(&self, id: SubscriberId, token: &str, now: DateTime<Utc>) -> Result<()> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        tx.execute("DELETE FROM subscribers WHERE id = ?1", [id])?;
        tx.execute(
            "INSERT INTO unsubscribed (token, at) VALUES (?1, ?2) ON CONFLICT DO NOTHING",
            params![token, now.timestamp()],
        )?;
        tx.commit()?;
        Ok(())
    }

    pub fn was_unsubscribed(&self, token: &str) -> Result<bool> {
        Ok(self.conn().query_row(
            "SELECT EXISTS (SELECT 1 FROM unsubscribed WHERE token = ?1)",
            [token],
            |r| r.get(0),
        )?)
    }

    pub fn remove_subscriber_by_id(&self, id: SubscriberId) -> Result<bool> {
        Ok(self
            .conn()
            .execute("DELETE FROM subscribers WHERE id = ?1", [id])?
            == 1)
    }

    pub fn resume_subscriber(&self, email: &str) -> Result<bool> {
        Ok(self.conn().execute(
            "UPDATE subscribers SET paused_at = NULL, bounces = 0 WHERE email = ?1",
            [email],
        )? == 1)
    }

    pub fn subscribers(&self) -> Result<Vec<Subscriber>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(&format!(
            "SELECT {SUBSCRIBER_COLUMNS}, q.query
             FROM subscribers s LEFT JOIN subscriptions q ON q.subscriber_id = s.id
             ORDER BY s.email, q.id"
        ))?;
        let mut rows = stmt.query([])?;
        let mut out: Vec<Subscriber> = Vec::new();
        while let Some(r) = rows.next()? {
            let id: SubscriberId = r.get(0)?;
            if out.last().is_none_or(|s| s.id != id) {
                out.push(subscriber_row(r)?);
            }
            if let (Some(q), Some(last)) = (
                r.get::<_, Option<String>>(SUBSCRIBER_COLUMN_COUNT)?,
                out.last_mut(),
            ) {
                last.queries.push(q);
            }
        }
        Ok(out)
    }

    pub fn subscriber(&self, email: &str) -> Result<Option<Subscriber>> {
        // The address column compares NOCASE (ASCII), through its unique index.
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {SUBSCRIBER_COLUMNS}, q.query
             FROM subscribers s LEFT JOIN subscriptions q ON q.subscriber_id = s.id
             WHERE s.email = ?1 ORDER BY q.id"
        ))?;
        let mut rows = stmt.query([email.trim()])?;
        let mut found: Option<Subscriber> = None;
        while let Some(r) = rows.next()? {
            let subscriber = match &mut found {
                Some(s) => s,
                None => found.insert(subscriber_row(r)?),
            };
            if let Some(q) = r.get::<_, Option<String>>(SUBSCRIBER_COLUMN_COUNT)? {
                subscriber.queries.push(q);
            }
        }
        Ok(found)
    }

    pub fn subscriptions_generation(&self) -> Result<i64> {
        Ok(subscriptions_generation(&self.conn())?)
    }

    pub fn subscriptions(&self) -> Result<ActiveSubscriptions> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let generation = subscriptions_generation(&tx)?;
        let queries = {
            let mut stmt = tx.prepare(
                "SELECT id, query FROM subscriptions WHERE paused_at IS NULL ORDER BY id",
            )?;
            stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<rusqlite::Result<Vec<_>>>()?
        };
        let crossing = {
            let mut stmt = tx.prepare(
                "SELECT id FROM subscriptions
                 WHERE paused_at IS NULL AND crosses_languages ORDER BY id",
            )?;
            stmt.query_map([], |r| r.get(0))?
                .collect::<rusqlite::Result<Vec<_>>>()?
        };
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
        Ok(self.conn().execute(
            "UPDATE subscriptions SET crosses_languages = ?3
             WHERE id = ?1 AND subscriber_id = ?2 AND crosses_languages != ?3",
            params![search, subscriber, crosses],
        )? == 1)
    }

    pub fn searches_crossing_languages(
        &self,
        subscriber: SubscriberId,
    ) -> Result<Vec<SubscriptionId>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT id FROM subscriptions WHERE subscriber_id = ?1 AND crosses_languages
             ORDER BY id",
        )?;
        let rows = stmt.query_map([subscriber], |r| r.get(0))?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }

    // ---- digests -------------------------------------------------------------------------
}

/// [`Store::add_subscription`] inside `tx`: returns the subscriber's id and whether the
/// search is new to them.
pub(super) fn add_subscription_in(
    tx: &rusqlite::Transaction<'_>,
    email: &str,
    query: &str,
    schedule: Schedule,
    timezone: Tz,
    now: DateTime<Utc>,
) -> rusqlite::Result<(SubscriberId, bool)> {
    let next = schedule.next_after(now, timezone).map(|d| d.timestamp());
    let subscriber_id: SubscriberId = tx.query_row(
        "INSERT INTO subscribers (email, frequency, digest_time, digest_weekday, timezone,
                                  next_digest_at, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
         ON CONFLICT (email) DO UPDATE SET
            next_digest_at = CASE WHEN frequency IS excluded.frequency
                                    AND digest_time IS excluded.digest_time
                                    AND digest_weekday IS excluded.digest_weekday
                                    AND timezone IS excluded.timezone
                                  THEN next_digest_at ELSE excluded.next_digest_at END,
            frequency = excluded.frequency, digest_time = excluded.digest_time,
            digest_weekday = excluded.digest_weekday, timezone = excluded.timezone
         RETURNING id",
        params![
            email,
            schedule.frequency(),
            schedule.time().map(|t| t.format("%H:%M").to_string()),
            schedule.weekday().map(|d| d.num_days_from_monday()),
            timezone.name(),
            next,
            now.timestamp()
        ],
        |r| r.get(0),
    )?;
    let added = tx.execute(
        "INSERT INTO subscriptions (subscriber_id, query, created_at) VALUES (?1, ?2, ?3)
         ON CONFLICT DO NOTHING",
        params![subscriber_id, query, now.timestamp()],
    )?;
    Ok((subscriber_id, added == 1))
}
