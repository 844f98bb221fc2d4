//! The outbox: mail queued, claimed, sent, retried, failed or bounced.
//!
//! Every write checked against a claim tests it in its UPDATE's condition, which READ
//! COMMITTED evaluates again on the newest row after waiting for a lock on it: a sender
//! whose claim was replaced meanwhile writes nothing.

use super::*;

impl Postgres {
    pub fn queue_message(
        &self,
        recipient: &str,
        subject: &str,
        text: &str,
        html: &str,
        message_domain: &str,
        now: DateTime<Utc>,
    ) -> Result<OutboxId> {
        let mut conn = self.conn()?;
        let mut tx = conn.transaction()?;
        let id = queue_message_in(&mut tx, recipient, subject, text, html, message_domain, now)?;
        tx.commit()?;
        Ok(id)
    }

    pub fn claim_mail(
        &self,
        now: DateTime<Utc>,
        lease: Duration,
        limit: usize,
    ) -> Result<Vec<OutboxMessage>> {
        let now_s = now.timestamp();
        let rows = self.conn()?.query(
            &format!(
                "UPDATE outbox SET claimed_until = $2, claim = {NEW_CLAIM}
                 WHERE id IN (SELECT id FROM outbox
                              WHERE status = 'pending' AND kind = 'mail'
                                AND next_attempt_at <= $1
                                AND (claimed_until IS NULL OR claimed_until <= $1)
                              -- The order of `outbox_pending`: no sort, and the scan stops
                              -- after LIMIT rows instead of reading every pending body.
                              ORDER BY next_attempt_at, id LIMIT $3
                              FOR UPDATE SKIP LOCKED)
                 RETURNING {OUTBOX_COLUMNS}"
            ),
            &[
                &now_s,
                &(now_s + lease_secs(lease)),
                &i64::try_from(limit).unwrap_or(i64::MAX),
            ],
        )?;
        let mut messages = rows.iter().map(outbox_row).collect::<Result<Vec<_>>>()?;
        messages.sort_by_key(|m| m.id);
        Ok(messages)
    }

    pub fn renew_mail_claim(
        &self,
        outbox_id: OutboxId,
        claim: &str,
        now: DateTime<Utc>,
        lease: Duration,
    ) -> Result<bool> {
        Ok(self.conn()?.execute(
            "UPDATE outbox SET claimed_until = $3
             WHERE id = $1 AND claim = $2 AND status = 'pending'",
            &[&outbox_id, &claim, &(now.timestamp() + lease_secs(lease))],
        )? == 1)
    }

    pub fn mark_sent(
        &self,
        outbox_id: OutboxId,
        claim: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<bool> {
        let mut conn = self.conn()?;
        let mut tx = conn.transaction()?;
        // A destination's row (none for mail) before its message's, the order a removal
        // takes them in (see `channels`).
        tx.execute(
            "SELECT 1 FROM channels WHERE id = (SELECT channel_id FROM outbox WHERE id = $1)
             FOR NO KEY UPDATE",
            &[&outbox_id],
        )?;
        let marked = tx.execute(
            "UPDATE outbox SET status = 'sent', sent_at = $3, attempts = attempts + 1,
             last_error = NULL, claimed_until = NULL, claim = NULL
             WHERE id = $1 AND claim IS NOT DISTINCT FROM $2",
            &[&outbox_id, &claim, &now.timestamp()],
        )?;
        if marked == 0 {
            return Ok(false);
        }
        tx.execute(
            "UPDATE subscribers SET bounces = 0
             WHERE bounces > 0
               AND id = (SELECT subscriber_id FROM outbox WHERE id = $1 AND kind = 'mail')",
            &[&outbox_id],
        )?;
        tx.execute(
            "UPDATE channels SET failures = 0, last_error = NULL
             WHERE id = (SELECT channel_id FROM outbox WHERE id = $1)
               AND (failures > 0 OR last_error IS NOT NULL)",
            &[&outbox_id],
        )?;
        tx.commit()?;
        Ok(true)
    }

    pub fn mark_retry(
        &self,
        outbox_id: OutboxId,
        claim: Option<&str>,
        error: &str,
        retry_at: DateTime<Utc>,
    ) -> Result<bool> {
        Ok(self.conn()?.execute(
            "UPDATE outbox SET attempts = attempts + 1, last_error = $3, next_attempt_at = $4,
             claimed_until = NULL, claim = NULL WHERE id = $1 AND claim IS NOT DISTINCT FROM $2",
            &[&outbox_id, &claim, &error, &retry_at.timestamp()],
        )? == 1)
    }

    pub fn mark_failed(
        &self,
        outbox_id: OutboxId,
        claim: Option<&str>,
        error: &str,
    ) -> Result<bool> {
        let mut conn = self.conn()?;
        let mut tx = conn.transaction()?;
        let marked = tx.query_opt(
            "UPDATE outbox SET status = 'failed', attempts = attempts + 1, last_error = $3,
             claimed_until = NULL, claim = NULL WHERE id = $1 AND claim IS NOT DISTINCT FROM $2
             RETURNING kind",
            &[&outbox_id, &claim, &error],
        )?;
        let Some(row) = marked else {
            return Ok(false);
        };
        if row.try_get::<_, OutboxKind>(0)? == OutboxKind::Push {
            // A destination's digest given up: what it carried goes where its searches
            // go now (mail's matches were in the mail: they stay taken).
            tx.execute(
                "UPDATE matches SET outbox_id = NULL WHERE outbox_id = $1",
                &[&outbox_id],
            )?;
        }
        tx.commit()?;
        Ok(true)
    }

    pub fn mark_bounced(
        &self,
        outbox_id: OutboxId,
        claim: Option<&str>,
        error: &str,
        pause_after: u32,
        now: DateTime<Utc>,
    ) -> Result<Option<String>> {
        let mut conn = self.conn()?;
        let mut tx = conn.transaction()?;
        let marked = tx.execute(
            "UPDATE outbox SET status = 'failed', attempts = attempts + 1, last_error = $3,
             claimed_until = NULL, claim = NULL WHERE id = $1 AND claim IS NOT DISTINCT FROM $2",
            &[&outbox_id, &claim, &error],
        )?;
        if marked == 0 {
            return Ok(None);
        }
        // The UPDATE locks the subscriber's row: bounces from two instances count one
        // after the other, each on the newest count.
        let paused = tx.query_opt(
            "UPDATE subscribers SET bounces = bounces + 1,
                paused_at = CASE WHEN paused_at IS NULL AND bounces + 1 >= $2::BIGINT THEN $3
                                 ELSE paused_at END
             WHERE id = (SELECT subscriber_id FROM outbox WHERE id = $1)
             RETURNING email, paused_at IS NOT DISTINCT FROM $3",
            &[&outbox_id, &i64::from(pause_after), &now.timestamp()],
        )?;
        let paused = match paused {
            Some(r) => Some((r.try_get::<_, String>(0)?, r.try_get::<_, bool>(1)?)),
            None => None,
        };
        tx.commit()?;
        Ok(paused.and_then(|(email, paused)| paused.then_some(email)))
    }

    pub fn requeue(&self, outbox_id: OutboxId, now: DateTime<Utc>) -> Result<bool> {
        let mut conn = self.conn()?;
        let mut tx = conn.transaction()?;
        // Locked to the end: a sender or a prune deciding on this row waits for the answer.
        let row = tx.query_opt(
            "SELECT status, claimed_until, kind <> 'mail' AND channel_id IS NULL
             FROM outbox WHERE id = $1 FOR UPDATE",
            &[&outbox_id],
        )?;
        let Some(row) = row else {
            return Ok(false);
        };
        let status: OutboxStatus = row.try_get(0)?;
        let claimed_until: Option<i64> = row.try_get(1)?;
        if status == OutboxStatus::Sent {
            bail!("message {outbox_id} was already sent");
        }
        if row.try_get::<_, bool>(2)? {
            bail!("message {outbox_id} has nowhere to go: its destination was removed");
        }
        // A sender holds it: requeueing would take its claim and send it twice.
        if claimed_until.is_some_and(|until| until > now.timestamp()) {
            bail!("message {outbox_id} is being sent right now; look again in a minute");
        }
        tx.execute(
            "UPDATE outbox SET status = 'pending', attempts = 0, next_attempt_at = $2,
             created_at = $2, claimed_until = NULL, claim = NULL WHERE id = $1",
            &[&outbox_id, &now.timestamp()],
        )?;
        tx.commit()?;
        Ok(true)
    }

    pub fn outbox(&self) -> Result<Vec<OutboxMessage>> {
        let rows = self.conn()?.query(
            &format!("SELECT {OUTBOX_COLUMNS} FROM outbox ORDER BY id"),
            &[],
        )?;
        rows.iter().map(outbox_row).collect()
    }
}
