//! Destinations beside email (see [`Store::add_channel`]).

use super::*;

const CHANNEL_COLUMNS: &str = "c.id, c.subscriber_id, s.email, c.name, c.kind, c.target, c.secret, \
     c.secret_env, c.added_by, c.state, c.paused_reason, c.every_search, c.failures, \
     c.last_error, c.created_at, c.confirmed_at";

fn channel_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Channel> {
    Ok(Channel {
        id: r.get(0)?,
        subscriber_id: r.get(1)?,
        email: r.get(2)?,
        name: r.get(3)?,
        kind: r.get(4)?,
        target: r.get(5)?,
        secret: r.get(6)?,
        secret_env: r.get(7)?,
        added_by: r.get(8)?,
        state: r.get(9)?,
        paused_reason: r.get(10)?,
        every_search: r.get(11)?,
        searches: Vec::new(),
        failures: r.get(12)?,
        last_error: r.get(13)?,
        created_at: time(r, 14)?,
        confirmed_at: time_opt(r, 15)?,
    })
}

/// The destinations `filter` (a WHERE clause on `c`) selects, with their searches.
fn load_channels(
    conn: &Connection,
    filter: &str,
    args: impl rusqlite::Params,
) -> Result<Vec<Channel>> {
    let mut channels = conn
        .prepare_cached(&format!(
            "SELECT {CHANNEL_COLUMNS} FROM channels c JOIN subscribers s ON s.id = c.subscriber_id
             WHERE {filter} ORDER BY c.id"
        ))?
        .query_map(args, channel_row)?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let mut searches = conn.prepare_cached(
        "SELECT subscription_id FROM channel_searches WHERE channel_id = ?1
         ORDER BY subscription_id",
    )?;
    for c in channels.iter_mut().filter(|c| !c.every_search) {
        c.searches = searches
            .query_map([c.id], |r| r.get(0))?
            .collect::<rusqlite::Result<Vec<_>>>()?;
    }
    Ok(channels)
}

/// Writes the searches a destination takes, checking they are its subscriber's.
fn write_searches(
    tx: &rusqlite::Transaction<'_>,
    channel: ChannelId,
    subscriber: SubscriberId,
    every_search: bool,
    searches: &[SubscriptionId],
) -> Result<()> {
    tx.execute(
        "UPDATE channels SET every_search = ?2 WHERE id = ?1",
        params![channel, every_search],
    )?;
    tx.execute(
        "DELETE FROM channel_searches WHERE channel_id = ?1",
        [channel],
    )?;
    if every_search {
        return Ok(());
    }
    for &search in searches {
        let inserted = tx.execute(
            "INSERT OR IGNORE INTO channel_searches (channel_id, subscription_id)
             SELECT ?1, id FROM subscriptions WHERE id = ?2 AND subscriber_id = ?3",
            params![channel, search, subscriber],
        )?;
        let known: bool = tx.query_row(
            "SELECT EXISTS (SELECT 1 FROM subscriptions WHERE id = ?1 AND subscriber_id = ?2)",
            params![search, subscriber],
            |r| r.get(0),
        )?;
        if inserted == 0 && !known {
            bail!("search {search} is not this subscriber's");
        }
    }
    Ok(())
}

impl Sqlite {
    pub fn add_channel(&self, new: &NewChannel, now: DateTime<Utc>) -> Result<ChannelId> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let taken: bool = tx.query_row(
            "SELECT EXISTS (SELECT 1 FROM channels WHERE subscriber_id = ?1 AND name = ?2)",
            params![new.subscriber_id, new.name],
            |r| r.get(0),
        )?;
        if taken {
            bail!("there is already a destination named {:?}", new.name);
        }
        if let Some(limits) = new.limits {
            let held: i64 = tx.query_row(
                "SELECT COUNT(*) FROM channels WHERE subscriber_id = ?1",
                [new.subscriber_id],
                |r| r.get(0),
            )?;
            if held >= limits.max_channels as i64 {
                return Err(OverLimit::Channels(limits.max_channels).into());
            }
            if notices_today(&tx, new.subscriber_id, now)? >= limits.max_notices_per_day {
                return Err(OverLimit::NoticesToday(limits.max_notices_per_day).into());
            }
        }
        let state = match new.confirm_code {
            Some(_) => ChannelState::Unconfirmed,
            None => ChannelState::Active,
        };
        tx.execute(
            "INSERT INTO channels (subscriber_id, name, kind, target, secret, secret_env, added_by,
                                   state, confirm_code, every_search, created_at, confirmed_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11,
                     CASE WHEN ?9 IS NULL THEN ?11 END)",
            params![
                new.subscriber_id,
                new.name,
                new.kind.as_str(),
                new.target,
                new.secret,
                new.secret_env,
                new.added_by.as_str(),
                state.as_str(),
                new.confirm_code,
                new.every_search,
                now.timestamp()
            ],
        )?;
        let id = ChannelId(tx.last_insert_rowid());
        write_searches(&tx, id, new.subscriber_id, new.every_search, &new.searches)?;
        if let Some(notice) = &new.verification {
            insert_push(
                &tx,
                OutboxKind::Notice,
                new.subscriber_id,
                id,
                &new.name,
                &notice.message_id,
                &notice.subject,
                &notice.event,
                now,
            )?;
        }
        tx.commit()?;
        Ok(id)
    }

    pub fn channels(&self, subscriber: Option<SubscriberId>) -> Result<Vec<Channel>> {
        let conn = self.conn();
        match subscriber {
            Some(id) => load_channels(&conn, "c.subscriber_id = ?1", [id]),
            None => load_channels(&conn, "1", []),
        }
    }

    pub fn channel(&self, id: ChannelId) -> Result<Option<Channel>> {
        Ok(load_channels(&self.conn(), "c.id = ?1", [id])?.pop())
    }

    pub fn remove_channel(&self, id: ChannelId) -> Result<bool> {
        // The `channels_deleted` trigger fails what waited to go there.
        Ok(self
            .conn()
            .execute("DELETE FROM channels WHERE id = ?1", [id])?
            == 1)
    }

    pub fn pause_channel(&self, id: ChannelId, reason: &str) -> Result<bool> {
        Ok(self.conn().execute(
            "UPDATE channels SET state = 'paused', paused_reason = ?2
             WHERE id = ?1 AND state = 'active'",
            params![id, reason],
        )? == 1)
    }

    pub fn resume_channel(&self, id: ChannelId, now: DateTime<Utc>) -> Result<bool> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let resumed = tx.execute(
            "UPDATE channels SET state = 'active', paused_reason = NULL, failures = 0
             WHERE id = ?1 AND state = 'paused'",
            [id],
        )? == 1;
        if resumed {
            // What waited goes now, with its tries counted afresh.
            tx.execute(
                "UPDATE outbox SET next_attempt_at = MIN(next_attempt_at, ?2), attempts = 0
                 WHERE channel_id = ?1 AND status = 'pending'",
                params![id, now.timestamp()],
            )?;
        }
        tx.commit()?;
        Ok(resumed)
    }

    pub fn confirm_channel(
        &self,
        id: ChannelId,
        code: &str,
        now: DateTime<Utc>,
    ) -> Result<Confirmation> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let row: Option<(ChannelState, Option<String>, u32)> = tx
            .query_row(
                "SELECT state, confirm_code, confirm_tries FROM channels WHERE id = ?1",
                [id],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()?;
        let outcome = match row {
            Some((ChannelState::Unconfirmed, Some(expected), tries)) => {
                if tries >= CONFIRM_TRIES {
                    Confirmation::Locked
                } else if crate::push::same_code(&expected, code) {
                    tx.execute(
                        "UPDATE channels SET state = 'active', confirm_code = NULL,
                                confirm_tries = 0, confirmed_at = ?2 WHERE id = ?1",
                        params![id, now.timestamp()],
                    )?;
                    Confirmation::Confirmed
                } else {
                    tx.execute(
                        "UPDATE channels SET confirm_tries = confirm_tries + 1 WHERE id = ?1",
                        [id],
                    )?;
                    match CONFIRM_TRIES - tries - 1 {
                        0 => Confirmation::Locked,
                        left => Confirmation::Wrong { tries_left: left },
                    }
                }
            }
            _ => Confirmation::NotWaiting,
        };
        tx.commit()?;
        Ok(outcome)
    }

    pub fn pending_code(&self, id: ChannelId) -> Result<Option<String>> {
        Ok(self
            .conn()
            .query_row(
                "SELECT confirm_code FROM channels
                 WHERE id = ?1 AND state = 'unconfirmed' AND confirm_tries < ?2",
                params![id, CONFIRM_TRIES],
                |r| r.get(0),
            )
            .optional()?
            .flatten())
    }

    pub fn set_channel_searches(
        &self,
        id: ChannelId,
        every_search: bool,
        searches: &[SubscriptionId],
    ) -> Result<()> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let subscriber: Option<SubscriberId> = tx
            .query_row(
                "SELECT subscriber_id FROM channels WHERE id = ?1",
                [id],
                |r| r.get(0),
            )
            .optional()?;
        let Some(subscriber) = subscriber else {
            bail!("no destination {id}");
        };
        write_searches(&tx, id, subscriber, every_search, searches)?;
        tx.commit()?;
        Ok(())
    }

    pub fn set_search_email(&self, search: SubscriptionId, to_email: bool) -> Result<bool> {
        Ok(self.conn().execute(
            "UPDATE subscriptions SET to_email = ?2 WHERE id = ?1",
            params![search, to_email],
        )? == 1)
    }

    pub fn set_search_route(
        &self,
        search: SubscriptionId,
        to_email: bool,
        channels: &[ChannelId],
    ) -> Result<()> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let subscriber: Option<SubscriberId> = tx
            .query_row(
                "SELECT subscriber_id FROM subscriptions WHERE id = ?1",
                [search],
                |r| r.get(0),
            )
            .optional()?;
        let Some(subscriber) = subscriber else {
            bail!("no search {search}");
        };
        tx.execute(
            "UPDATE subscriptions SET to_email = ?2 WHERE id = ?1",
            params![search, to_email],
        )?;
        let owned: Vec<(ChannelId, bool)> = tx
            .prepare("SELECT id, every_search FROM channels WHERE subscriber_id = ?1")?
            .query_map([subscriber], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<rusqlite::Result<_>>()?;
        if let Some(stranger) = channels
            .iter()
            .find(|c| !owned.iter().any(|(id, _)| id == *c))
        {
            bail!("destination {stranger} is not this subscriber's");
        }
        for (channel, every) in owned {
            let wanted = channels.contains(&channel);
            match (wanted, every) {
                (true, true) => {}
                (true, false) => {
                    tx.execute(
                        "INSERT OR IGNORE INTO channel_searches (channel_id, subscription_id)
                         VALUES (?1, ?2)",
                        params![channel, search],
                    )?;
                }
                (false, true) => {
                    tx.execute(
                        "UPDATE channels SET every_search = 0 WHERE id = ?1",
                        [channel],
                    )?;
                    tx.execute(
                        "INSERT OR IGNORE INTO channel_searches (channel_id, subscription_id)
                         SELECT ?1, id FROM subscriptions WHERE subscriber_id = ?2 AND id <> ?3",
                        params![channel, subscriber, search],
                    )?;
                }
                (false, false) => {
                    tx.execute(
                        "DELETE FROM channel_searches WHERE channel_id = ?1 AND subscription_id = ?2",
                        params![channel, search],
                    )?;
                }
            }
        }
        tx.commit()?;
        Ok(())
    }

    pub fn searches_not_to_email(&self, subscriber: SubscriberId) -> Result<Vec<SubscriptionId>> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT id FROM subscriptions WHERE subscriber_id = ?1 AND NOT to_email ORDER BY id",
        )?;
        let rows = stmt.query_map([subscriber], |r| r.get(0))?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }

    pub fn queue_notice(
        &self,
        channel: ChannelId,
        notice: &Notice,
        max_per_day: Option<i64>,
        now: DateTime<Utc>,
    ) -> Result<Option<OutboxId>> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let owner: Option<(SubscriberId, String)> = tx
            .query_row(
                "SELECT subscriber_id, name FROM channels WHERE id = ?1",
                [channel],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        let Some((subscriber, name)) = owner else {
            bail!("no destination {channel}");
        };
        if max_per_day
            .is_some_and(|max| notices_today(&tx, subscriber, now).is_ok_and(|n| n >= max))
        {
            return Ok(None);
        }
        let id = insert_push(
            &tx,
            OutboxKind::Notice,
            subscriber,
            channel,
            &name,
            &notice.message_id,
            &notice.subject,
            &notice.event,
            now,
        )?;
        tx.commit()?;
        Ok(Some(id))
    }

    pub fn update_channel(
        &self,
        id: ChannelId,
        kind: ChannelKind,
        target: &str,
        secret_env: Option<&str>,
    ) -> Result<bool> {
        Ok(self.conn().execute(
            "UPDATE channels SET kind = ?2, target = ?3, secret_env = ?4 WHERE id = ?1",
            params![id, kind.as_str(), target, secret_env],
        )? == 1)
    }

    pub fn renew_push_claim(
        &self,
        outbox_id: OutboxId,
        claim: &str,
        now: DateTime<Utc>,
        lease: Duration,
    ) -> Result<bool> {
        Ok(self.conn().execute(
            "UPDATE outbox SET claimed_until = ?3
             WHERE id = ?1 AND claim = ?2 AND status = 'pending'
               AND (kind = 'notice' OR EXISTS (SELECT 1 FROM channels c
                                               WHERE c.id = outbox.channel_id
                                                 AND c.state = 'active'))",
            params![outbox_id, claim, now.timestamp() + lease_secs(lease)],
        )? == 1)
    }

    pub fn claim_push(
        &self,
        now: DateTime<Utc>,
        lease: Duration,
        limit: usize,
    ) -> Result<Vec<PushMessage>> {
        let now_s = now.timestamp();
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let claimed: Vec<(OutboxId, OutboxKind, ChannelId)> = tx
            .prepare_cached(
                "UPDATE outbox SET claimed_until = ?2, claim = hex(randomblob(12))
                 WHERE id IN (SELECT o.id FROM outbox o JOIN channels c ON c.id = o.channel_id
                              WHERE o.status = 'pending' AND o.kind <> 'mail'
                                AND o.next_attempt_at <= ?1
                                AND (o.claimed_until IS NULL OR o.claimed_until <= ?1)
                                AND (o.kind = 'notice' OR c.state = 'active')
                              ORDER BY o.next_attempt_at, o.id LIMIT ?3)
                 RETURNING id, kind, channel_id",
            )?
            .query_map(
                params![now_s, now_s + lease_secs(lease), limit as i64],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        let mut out = Vec::with_capacity(claimed.len());
        for (id, kind, channel) in claimed {
            let outbox = tx
                .prepare_cached(&format!(
                    "SELECT {OUTBOX_COLUMNS} FROM outbox WHERE id = ?1"
                ))?
                .query_row([id], outbox_row)?;
            let Some(channel) = load_channels(&tx, "c.id = ?1", [channel])?.pop() else {
                bail!("outbox row {id} names destination {channel}, which is gone");
            };
            out.push(PushMessage {
                outbox,
                kind,
                channel,
            });
        }
        tx.commit()?;
        out.sort_by_key(|m| m.outbox.id);
        Ok(out)
    }

    pub fn mark_push_rejected(
        &self,
        outbox_id: OutboxId,
        claim: Option<&str>,
        error: &str,
        pause_after: u32,
        pause_now: bool,
    ) -> Result<Option<Channel>> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let marked = tx.execute(
            "UPDATE outbox SET status = 'failed', attempts = attempts + 1, last_error = ?3,
             claimed_until = NULL, claim = NULL WHERE id = ?1 AND claim IS ?2",
            params![outbox_id, claim, error],
        )?;
        if marked == 0 {
            return Ok(None);
        }
        let before: Option<(ChannelId, ChannelState, u32, OutboxKind)> = tx
            .query_row(
                "SELECT c.id, c.state, c.failures, o.kind FROM channels c
                 JOIN outbox o ON o.channel_id = c.id WHERE o.id = ?1",
                [outbox_id],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )
            .optional()?;
        let Some((id, state, failures, OutboxKind::Push)) = before else {
            // A notice refused says nothing of the destination in use.
            tx.commit()?;
            return Ok(None);
        };
        // What it carried goes where its searches go now (email once it is paused).
        tx.execute(
            "UPDATE matches SET outbox_id = NULL WHERE outbox_id = ?1",
            [outbox_id],
        )?;
        let pause = state == ChannelState::Active && (pause_now || failures + 1 >= pause_after);
        tx.execute(
            "UPDATE channels SET failures = failures + 1, last_error = ?2,
                state = CASE WHEN ?3 THEN 'paused' ELSE state END,
                paused_reason = CASE WHEN ?3 THEN ?2 ELSE paused_reason END
             WHERE id = ?1",
            params![id, error, pause],
        )?;
        let channel = match pause {
            true => load_channels(&tx, "c.id = ?1", [id])?.pop(),
            false => None,
        };
        tx.commit()?;
        Ok(channel)
    }

    pub fn notices_since(&self, subscriber: SubscriberId, since: DateTime<Utc>) -> Result<i64> {
        Ok(self.conn().query_row(
            "SELECT COUNT(*) FROM outbox
             WHERE subscriber_id = ?1 AND kind = 'notice' AND created_at >= ?2",
            params![subscriber, since.timestamp()],
            |r| r.get(0),
        )?)
    }

    pub fn push_backlog(&self) -> Result<Vec<(ChannelKind, i64, DateTime<Utc>)>> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT c.kind, COUNT(*), MIN(o.created_at) FROM outbox o
             JOIN channels c ON c.id = o.channel_id
             WHERE o.status = 'pending' AND o.kind <> 'mail'
             GROUP BY c.kind ORDER BY c.kind",
        )?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, time(r, 2)?)))?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }
}

/// Notices queued for `subscriber`'s destinations in the 24 hours before `now`.
fn notices_today(
    tx: &rusqlite::Transaction<'_>,
    subscriber: SubscriberId,
    now: DateTime<Utc>,
) -> rusqlite::Result<i64> {
    tx.query_row(
        "SELECT COUNT(*) FROM outbox
         WHERE subscriber_id = ?1 AND kind = 'notice' AND created_at > ?2",
        params![subscriber, now.timestamp() - 86_400],
        |r| r.get(0),
    )
}

/// Writes one outbox row for a destination inside `tx`.
#[allow(clippy::too_many_arguments)]
pub(super) fn insert_push(
    tx: &rusqlite::Transaction<'_>,
    kind: OutboxKind,
    subscriber: SubscriberId,
    channel: ChannelId,
    name: &str,
    message_id: &str,
    subject: &str,
    event: &str,
    now: DateTime<Utc>,
) -> Result<OutboxId> {
    tx.prepare_cached(
        "INSERT INTO outbox (subscriber_id, recipient, message_id, subject, body_text, body_html,
                             created_at, next_attempt_at, kind, channel_id)
         VALUES (?1, (SELECT kind || ':' || ?2 FROM channels WHERE id = ?8), ?3, ?4, ?5, '',
                 ?6, ?6, ?7, ?8)",
    )?
    .execute(params![
        subscriber,
        name,
        message_id,
        subject,
        event,
        now.timestamp(),
        kind.as_str(),
        channel
    ])?;
    Ok(OutboxId(tx.last_insert_rowid()))
}

/// A subscriber's active destinations and the searches each takes, inside `tx`.
pub(super) fn active_routes(
    tx: &rusqlite::Transaction<'_>,
    subscriber: SubscriberId,
) -> Result<Vec<ChannelRoute>> {
    Ok(load_channels(
        tx,
        "c.subscriber_id = ?1 AND c.state = 'active'",
        [subscriber],
    )?
    .into_iter()
    .map(|c| ChannelRoute {
        id: c.id,
        name: c.name,
        every_search: c.every_search,
        searches: c.searches.into_iter().collect(),
    })
    .collect())
}
