//! Destinations beside email (see [`Store::add_channel`](crate::store::Store::add_channel)).
//!
//! Lock order: a destination's row before its outbox rows (`remove_channel`'s trigger and
//! `resume_channel` take them so; `mark_sent` and `mark_push_rejected` lock the row first).

use postgres::types::ToSql;

use super::*;
use crate::store::{Notice, OverLimit};

/// A destination's columns, its searches last (none when it takes every search).
const CHANNEL_COLUMNS: &str = "c.id, c.subscriber_id, s.email, c.name, c.kind, c.target, c.secret, \
     c.secret_env, c.added_by, c.state, c.paused_reason, c.every_search, c.failures, \
     c.last_error, c.created_at, c.confirmed_at, \
     CASE WHEN c.every_search THEN '{}'::BIGINT[] \
          ELSE ARRAY(SELECT subscription_id FROM channel_searches \
                     WHERE channel_id = c.id ORDER BY subscription_id) END";

fn channel_row(r: &Row) -> Result<Channel> {
    Ok(Channel {
        id: r.try_get(0)?,
        subscriber_id: r.try_get(1)?,
        email: r.try_get(2)?,
        name: r.try_get(3)?,
        kind: r.try_get(4)?,
        target: r.try_get(5)?,
        secret: r.try_get(6)?,
        secret_env: r.try_get(7)?,
        added_by: r.try_get(8)?,
        state: r.try_get(9)?,
        paused_reason: r.try_get(10)?,
        every_search: r.try_get(11)?,
        searches: r.try_get(16)?,
        failures: count(r.try_get::<_, i32>(12)?)?,
        last_error: r.try_get(13)?,
        created_at: time(r.try_get(14)?)?,
        confirmed_at: time_opt(r.try_get(15)?)?,
    })
}

/// The destinations `filter` (a WHERE clause on `c`) selects, with their searches, in
/// one statement.
fn load_channels(
    client: &mut impl GenericClient,
    filter: &str,
    args: &[&(dyn ToSql + Sync)],
) -> Result<Vec<Channel>> {
    client
        .query(
            &format!(
                "SELECT {CHANNEL_COLUMNS} FROM channels c JOIN subscribers s ON s.id = c.subscriber_id
                 WHERE {filter} ORDER BY c.id"
            ),
            args,
        )?
        .iter()
        .map(channel_row)
        .collect()
}

/// Writes the searches a destination takes, checking they are its subscriber's. The
/// first UPDATE locks the destination's row: writers of its searches take turns.
fn write_searches(
    tx: &mut Transaction<'_>,
    channel: ChannelId,
    subscriber: SubscriberId,
    every_search: bool,
    searches: &[SubscriptionId],
) -> Result<()> {
    tx.execute(
        "UPDATE channels SET every_search = $2 WHERE id = $1",
        &[&channel, &every_search],
    )?;
    tx.execute(
        "DELETE FROM channel_searches WHERE channel_id = $1",
        &[&channel],
    )?;
    if every_search {
        return Ok(());
    }
    let insert = tx.prepare(
        "INSERT INTO channel_searches (channel_id, subscription_id)
         SELECT $1::BIGINT, id FROM subscriptions WHERE id = $2 AND subscriber_id = $3
         ON CONFLICT DO NOTHING",
    )?;
    for &search in searches {
        if tx.execute(&insert, &[&channel, &search, &subscriber])? == 0 {
            let known: bool = tx
                .query_one(
                    "SELECT EXISTS (SELECT 1 FROM subscriptions WHERE id = $1 AND subscriber_id = $2)",
                    &[&search, &subscriber],
                )?
                .try_get(0)?;
            if !known {
                bail!("search {search} is not this subscriber's");
            }
        }
    }
    Ok(())
}

impl Postgres {
    pub fn add_channel(&self, new: &NewChannel, now: DateTime<Utc>) -> Result<ChannelId> {
        let now_s = now.timestamp();
        let mut conn = self.conn()?;
        let mut tx = conn.transaction()?;
        let state = match new.confirm_code {
            Some(_) => ChannelState::Unconfirmed,
            None => ChannelState::Active,
        };
        if let Some(limits) = new.limits {
            // The subscriber's row, locked to the end: adds at once count in turn.
            tx.execute(
                "SELECT 1 FROM subscribers WHERE id = $1 FOR UPDATE",
                &[&new.subscriber_id],
            )?;
            let held: i64 = tx
                .query_one(
                    "SELECT COUNT(*) FROM channels WHERE subscriber_id = $1",
                    &[&new.subscriber_id],
                )?
                .try_get(0)?;
            if held >= limits.max_channels as i64 {
                return Err(OverLimit::Channels(limits.max_channels).into());
            }
            if notices_today(&mut tx, new.subscriber_id, now)? >= limits.max_notices_per_day {
                return Err(OverLimit::NoticesToday(limits.max_notices_per_day).into());
            }
        }
        // The unique (subscriber_id, name) decides between two adding one name at once.
        let row = tx.query_opt(
            "INSERT INTO channels (subscriber_id, name, kind, target, secret, secret_env, added_by,
                                   state, confirm_code, every_search, created_at, confirmed_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
             ON CONFLICT (subscriber_id, name) DO NOTHING
             RETURNING id",
            &[
                &new.subscriber_id,
                &new.name,
                &new.kind.as_str(),
                &new.target,
                &new.secret,
                &new.secret_env,
                &new.added_by.as_str(),
                &state.as_str(),
                &new.confirm_code,
                &new.every_search,
                &now_s,
                &new.confirm_code.is_none().then_some(now_s),
            ],
        )?;
        let Some(row) = row else {
            bail!("there is already a destination named {:?}", new.name);
        };
        let id: ChannelId = row.try_get(0)?;
        write_searches(
            &mut tx,
            id,
            new.subscriber_id,
            new.every_search,
            &new.searches,
        )?;
        if let Some(notice) = &new.verification {
            insert_push(
                &mut tx,
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
        let mut conn = self.conn()?;
        match subscriber {
            Some(id) => load_channels(&mut *conn, "c.subscriber_id = $1", &[&id]),
            None => load_channels(&mut *conn, "TRUE", &[]),
        }
    }

    pub fn channel(&self, id: ChannelId) -> Result<Option<Channel>> {
        Ok(load_channels(&mut *self.conn()?, "c.id = $1", &[&id])?.pop())
    }

    pub fn remove_channel(&self, id: ChannelId) -> Result<bool> {
        // The `channels_deleted` trigger fails what waited to go there.
        Ok(self
            .conn()?
            .execute("DELETE FROM channels WHERE id = $1", &[&id])?
            == 1)
    }

    pub fn pause_channel(&self, id: ChannelId, reason: &str) -> Result<bool> {
        Ok(self.conn()?.execute(
            "UPDATE channels SET state = 'paused', paused_reason = $2
             WHERE id = $1 AND state = 'active'",
            &[&id, &reason],
        )? == 1)
    }

    pub fn resume_channel(&self, id: ChannelId, now: DateTime<Utc>) -> Result<bool> {
        let mut conn = self.conn()?;
        let mut tx = conn.transaction()?;
        let resumed = tx.execute(
            "UPDATE channels SET state = 'active', paused_reason = NULL, failures = 0
             WHERE id = $1 AND state = 'paused'",
            &[&id],
        )? == 1;
        if resumed {
            // What waited goes now, with its tries counted afresh.
            tx.execute(
                "UPDATE outbox SET next_attempt_at = LEAST(next_attempt_at, $2), attempts = 0
                 WHERE channel_id = $1 AND status = 'pending'",
                &[&id, &now.timestamp()],
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
        let mut conn = self.conn()?;
        let mut tx = conn.transaction()?;
        // Locked to the end: guesses at once are counted one after the other, each
        // against the newest count.
        let row = tx.query_opt(
            "SELECT state, confirm_code, confirm_tries FROM channels WHERE id = $1
             FOR NO KEY UPDATE",
            &[&id],
        )?;
        let row = match row {
            Some(r) => Some((
                r.try_get::<_, ChannelState>(0)?,
                r.try_get::<_, Option<String>>(1)?,
                count(r.try_get::<_, i32>(2)?)?,
            )),
            None => None,
        };
        let outcome = match row {
            Some((ChannelState::Unconfirmed, Some(expected), tries)) => {
                if tries >= CONFIRM_TRIES {
                    Confirmation::Locked
                } else if crate::push::same_code(&expected, code) {
                    tx.execute(
                        "UPDATE channels SET state = 'active', confirm_code = NULL,
                                confirm_tries = 0, confirmed_at = $2 WHERE id = $1",
                        &[&id, &now.timestamp()],
                    )?;
                    Confirmation::Confirmed
                } else {
                    tx.execute(
                        "UPDATE channels SET confirm_tries = confirm_tries + 1 WHERE id = $1",
                        &[&id],
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
            .conn()?
            .query_opt(
                "SELECT confirm_code FROM channels
                 WHERE id = $1 AND state = 'unconfirmed' AND confirm_tries < $2",
                &[&id, &(CONFIRM_TRIES as i32)],
            )?
            .map(|r| r.try_get::<_, Option<String>>(0))
            .transpose()?
            .flatten())
    }

    pub fn set_channel_searches(
        &self,
        id: ChannelId,
        every_search: bool,
        searches: &[SubscriptionId],
    ) -> Result<()> {
        let mut conn = self.conn()?;
        let mut tx = conn.transaction()?;
        let subscriber: Option<SubscriberId> = tx
            .query_opt(
                "SELECT subscriber_id FROM channels WHERE id = $1 FOR NO KEY UPDATE",
                &[&id],
            )?
            .map(|r| r.try_get(0))
            .transpose()?;
        let Some(subscriber) = subscriber else {
            bail!("no destination {id}");
        };
        write_searches(&mut tx, id, subscriber, every_search, searches)?;
        tx.commit()?;
        Ok(())
    }

    pub fn set_search_email(&self, search: SubscriptionId, to_email: bool) -> Result<bool> {
        Ok(self.conn()?.execute(
            "UPDATE subscriptions SET to_email = $2 WHERE id = $1",
            &[&search, &to_email],
        )? == 1)
    }

    pub fn set_search_route(
        &self,
        search: SubscriptionId,
        to_email: bool,
        channels: &[ChannelId],
    ) -> Result<()> {
        let mut conn = self.conn()?;
        let mut tx = conn.transaction()?;
        let subscriber: Option<SubscriberId> = tx
            .query_opt(
                "SELECT subscriber_id FROM subscriptions WHERE id = $1",
                &[&search],
            )?
            .map(|r| r.try_get(0))
            .transpose()?;
        let Some(subscriber) = subscriber else {
            bail!("no search {search}");
        };
        tx.execute(
            "UPDATE subscriptions SET to_email = $2 WHERE id = $1",
            &[&search, &to_email],
        )?;
        // Locked to the end, like `set_channel_searches`: writers of a destination's
        // searches take turns, each on the newest `every_search`.
        let owned: Vec<(ChannelId, bool)> = tx
            .query(
                "SELECT id, every_search FROM channels WHERE subscriber_id = $1
                 ORDER BY id FOR NO KEY UPDATE",
                &[&subscriber],
            )?
            .iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
            .collect::<Result<_>>()?;
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
                        "INSERT INTO channel_searches (channel_id, subscription_id)
                         VALUES ($1, $2) ON CONFLICT DO NOTHING",
                        &[&channel, &search],
                    )?;
                }
                (false, true) => {
                    tx.execute(
                        "UPDATE channels SET every_search = FALSE WHERE id = $1",
                        &[&channel],
                    )?;
                    tx.execute(
                        "INSERT INTO channel_searches (channel_id, subscription_id)
                         SELECT $1::BIGINT, id FROM subscriptions WHERE subscriber_id = $2 AND id <> $3
                         ON CONFLICT DO NOTHING",
                        &[&channel, &subscriber, &search],
                    )?;
                }
                (false, false) => {
                    tx.execute(
                        "DELETE FROM channel_searches WHERE channel_id = $1 AND subscription_id = $2",
                        &[&channel, &search],
                    )?;
                }
            }
        }
        tx.commit()?;
        Ok(())
    }

    pub fn searches_not_to_email(&self, subscriber: SubscriberId) -> Result<Vec<SubscriptionId>> {
        self.conn()?
            .query(
                "SELECT id FROM subscriptions WHERE subscriber_id = $1 AND NOT to_email
                 ORDER BY id",
                &[&subscriber],
            )?
            .iter()
            .map(|r| Ok(r.try_get(0)?))
            .collect()
    }

    pub fn queue_notice(
        &self,
        channel: ChannelId,
        notice: &Notice,
        max_per_day: Option<i64>,
        now: DateTime<Utc>,
    ) -> Result<Option<OutboxId>> {
        let mut conn = self.conn()?;
        let mut tx = conn.transaction()?;
        // FOR KEY SHARE: a removal waits for the notice, then fails it.
        let owner = tx.query_opt(
            "SELECT subscriber_id, name FROM channels WHERE id = $1 FOR KEY SHARE",
            &[&channel],
        )?;
        let Some(owner) = owner else {
            bail!("no destination {channel}");
        };
        let subscriber: SubscriberId = owner.try_get(0)?;
        let name: String = owner.try_get(1)?;
        if let Some(max) = max_per_day {
            // Counted in turn with adds and other notices of this subscriber.
            tx.execute(
                "SELECT 1 FROM subscribers WHERE id = $1 FOR UPDATE",
                &[&subscriber],
            )?;
            if notices_today(&mut tx, subscriber, now)? >= max {
                return Ok(None);
            }
        }
        let id = insert_push(
            &mut tx,
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
        Ok(self.conn()?.execute(
            "UPDATE channels SET kind = $2, target = $3, secret_env = $4 WHERE id = $1",
            &[&id, &kind.as_str(), &target, &secret_env],
        )? == 1)
    }

    pub fn renew_push_claim(
        &self,
        outbox_id: OutboxId,
        claim: &str,
        now: DateTime<Utc>,
        lease: Duration,
    ) -> Result<bool> {
        Ok(self.conn()?.execute(
            "UPDATE outbox SET claimed_until = $3
             WHERE id = $1 AND claim = $2 AND status = 'pending'
               AND (kind = 'notice' OR EXISTS (SELECT 1 FROM channels c
                                               WHERE c.id = outbox.channel_id
                                                 AND c.state = 'active'))",
            &[&outbox_id, &claim, &(now.timestamp() + lease_secs(lease))],
        )? == 1)
    }

    pub fn claim_push(
        &self,
        now: DateTime<Utc>,
        lease: Duration,
        limit: usize,
    ) -> Result<Vec<PushMessage>> {
        let now_s = now.timestamp();
        let mut conn = self.conn()?;
        let mut tx = conn.transaction()?;
        // Only outbox rows are locked (OF o): a destination's row stays free to change.
        let rows = tx.query(
            &format!(
                "UPDATE outbox SET claimed_until = $2, claim = {NEW_CLAIM}
                 WHERE id IN (SELECT o.id FROM outbox o JOIN channels c ON c.id = o.channel_id
                              WHERE o.status = 'pending' AND o.kind <> 'mail'
                                AND o.next_attempt_at <= $1
                                AND (o.claimed_until IS NULL OR o.claimed_until <= $1)
                                AND (o.kind = 'notice' OR c.state = 'active')
                              ORDER BY o.next_attempt_at, o.id LIMIT $3
                              FOR UPDATE OF o SKIP LOCKED)
                 RETURNING {OUTBOX_COLUMNS}, kind, channel_id"
            ),
            &[
                &now_s,
                &(now_s + lease_secs(lease)),
                &i64::try_from(limit).unwrap_or(i64::MAX),
            ],
        )?;
        let mut claimed = Vec::with_capacity(rows.len());
        for r in &rows {
            let kind: OutboxKind = r.try_get(14)?;
            let channel: ChannelId = r.try_get(15)?;
            claimed.push((outbox_row(r)?, kind, channel));
        }
        // The claimed rows are locked until commit, and a removal locks them (its
        // trigger) before it deletes: every destination named is still there.
        let mut ids: Vec<ChannelId> = claimed.iter().map(|(_, _, c)| *c).collect();
        ids.sort();
        ids.dedup();
        let channels: HashMap<ChannelId, Channel> =
            load_channels(&mut tx, "c.id = ANY($1)", &[&ids])?
                .into_iter()
                .map(|c| (c.id, c))
                .collect();
        let mut out = Vec::with_capacity(claimed.len());
        for (outbox, kind, id) in claimed {
            let Some(channel) = channels.get(&id) else {
                bail!(
                    "outbox row {} names destination {id}, which is gone",
                    outbox.id
                );
            };
            out.push(PushMessage {
                outbox,
                kind,
                channel: channel.clone(),
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
        let mut conn = self.conn()?;
        let mut tx = conn.transaction()?;
        // The destination's row first (see the module's lock order), locked to the end:
        // rejections at once count one after the other, each on the newest count.
        let before = tx.query_opt(
            "SELECT id, state, failures FROM channels
             WHERE id = (SELECT channel_id FROM outbox WHERE id = $1 AND kind = 'push')
             FOR NO KEY UPDATE",
            &[&outbox_id],
        )?;
        // A notice refused says nothing of the destination in use: `before` is None.
        let before = match before {
            Some(r) => Some((
                r.try_get::<_, ChannelId>(0)?,
                r.try_get::<_, ChannelState>(1)?,
                count(r.try_get::<_, i32>(2)?)?,
            )),
            None => None,
        };
        let marked = tx.execute(
            "UPDATE outbox SET status = 'failed', attempts = attempts + 1, last_error = $3,
             claimed_until = NULL, claim = NULL WHERE id = $1 AND claim IS NOT DISTINCT FROM $2",
            &[&outbox_id, &claim, &error],
        )?;
        if marked == 0 {
            return Ok(None);
        }
        let Some((id, state, failures)) = before else {
            tx.commit()?;
            return Ok(None);
        };
        // What it carried goes where its searches go now (email once it is paused).
        tx.execute(
            "UPDATE matches SET outbox_id = NULL WHERE outbox_id = $1",
            &[&outbox_id],
        )?;
        let pause = state == ChannelState::Active && (pause_now || failures + 1 >= pause_after);
        tx.execute(
            "UPDATE channels SET failures = failures + 1, last_error = $2,
                state = CASE WHEN $3 THEN 'paused' ELSE state END,
                paused_reason = CASE WHEN $3 THEN $2 ELSE paused_reason END
             WHERE id = $1",
            &[&id, &error, &pause],
        )?;
        let channel = match pause {
            true => load_channels(&mut tx, "c.id = $1", &[&id])?.pop(),
            false => None,
        };
        tx.commit()?;
        Ok(channel)
    }

    pub fn notices_since(&self, subscriber: SubscriberId, since: DateTime<Utc>) -> Result<i64> {
        Ok(self
            .conn()?
            .query_one(
                "SELECT COUNT(*) FROM outbox
                 WHERE subscriber_id = $1 AND kind = 'notice' AND created_at >= $2",
                &[&subscriber, &since.timestamp()],
            )?
            .try_get(0)?)
    }

    pub fn push_backlog(&self) -> Result<Vec<(ChannelKind, i64, DateTime<Utc>)>> {
        self.conn()?
            .query(
                "SELECT c.kind, COUNT(*), MIN(o.created_at) FROM outbox o
                 JOIN channels c ON c.id = o.channel_id
                 WHERE o.status = 'pending' AND o.kind <> 'mail'
                 GROUP BY c.kind ORDER BY c.kind",
                &[],
            )?
            .iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?, time(r.try_get(2)?)?)))
            .collect()
    }
}

/// Notices queued for `subscriber`'s destinations in the 24 hours before `now`.
fn notices_today(
    tx: &mut Transaction<'_>,
    subscriber: SubscriberId,
    now: DateTime<Utc>,
) -> Result<i64> {
    Ok(tx
        .query_one(
            "SELECT COUNT(*) FROM outbox
             WHERE subscriber_id = $1 AND kind = 'notice' AND created_at > $2",
            &[&subscriber, &(now.timestamp() - 86_400)],
        )?
        .try_get(0)?)
}

/// Writes one outbox row for a destination inside `tx`.
#[allow(clippy::too_many_arguments)]
pub(super) fn insert_push(
    tx: &mut Transaction<'_>,
    kind: OutboxKind,
    subscriber: SubscriberId,
    channel: ChannelId,
    name: &str,
    message_id: &str,
    subject: &str,
    event: &str,
    now: DateTime<Utc>,
) -> Result<OutboxId> {
    Ok(tx
        .query_one(
            "INSERT INTO outbox (subscriber_id, recipient, message_id, subject, body_text,
                                 body_html, created_at, next_attempt_at, kind, channel_id)
             VALUES ($1, (SELECT kind || ':' || $2 FROM channels WHERE id = $8), $3, $4, $5, '',
                     $6, $6, $7, $8)
             RETURNING id",
            &[
                &subscriber,
                &name,
                &message_id,
                &subject,
                &event,
                &now.timestamp(),
                &kind.as_str(),
                &channel,
            ],
        )?
        .try_get(0)?)
}

/// A subscriber's active destinations and the searches each takes, inside `tx`. Each is
/// held FOR KEY SHARE to the end: a removal waits until the digest's rows for it are
/// written (then fails them), and one removed before is not routed to.
pub(super) fn active_routes(
    tx: &mut Transaction<'_>,
    subscriber: SubscriberId,
) -> Result<Vec<ChannelRoute>> {
    tx.query(
        "SELECT c.id, c.name, c.every_search,
                CASE WHEN c.every_search THEN '{}'::BIGINT[]
                     ELSE ARRAY(SELECT subscription_id FROM channel_searches
                                WHERE channel_id = c.id) END
         FROM channels c
         WHERE c.subscriber_id = $1 AND c.state = 'active'
         ORDER BY c.id
         FOR KEY SHARE",
        &[&subscriber],
    )?
    .iter()
    .map(|r| {
        Ok(ChannelRoute {
            id: r.try_get(0)?,
            name: r.try_get(1)?,
            every_search: r.try_get(2)?,
            searches: r
                .try_get::<_, Vec<SubscriptionId>>(3)?
                .into_iter()
                .collect(),
        })
    })
    .collect()
}
