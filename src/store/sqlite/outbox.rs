//! The outbox: mail queued, claimed, sent, retried, failed or bounced.

use super::*;

impl Sqlite {
    pub fn queue_message(
        &self,
        recipient: &str,
        subject: &str,
        text: &str,
        html: &str,
        message_domain: &str,
        now: DateTime<Utc>,
    ) -> Result<OutboxId> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let id = queue_message_in(&tx, recipient, subject, text, html, message_domain, now)?;
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
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let messages = {
            let mut stmt = tx.prepare(&format!(
                "UPDATE outbox SET claimed_until = ?2, claim = hex(randomblob(12))
                 WHERE id IN (SELECT id FROM outbox
                              WHERE status = 'pending' AND kind = 'mail'
                                AND next_attempt_at <= ?1
                                AND (claimed_until IS NULL OR claimed_until <= ?1)
                              -- The order of `outbox_pending`: no sort, and the scan stops
                              -- after LIMIT rows instead of reading every pending body.
                              ORDER BY next_attempt_at, id LIMIT ?3)
                 RETURNING {OUTBOX_COLUMNS}"
            ))?;
            stmt.query_map(
                params![now_s, now_s + lease_secs(lease), limit as i64],
                outbox_row,
            )?
            .collect::<rusqlite::Result<Vec<_>>>()?
        };
        tx.commit()?;
        let mut messages = messages;
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
        Ok(self.conn().execute(
            "UPDATE outbox SET claimed_until = ?3
             WHERE id = ?1 AND claim = ?2 AND status = 'pending'",
            params![outbox_id, claim, now.timestamp() + lease_secs(lease)],
        )? == 1)
    }

    pub fn mark_sent(
        &self,
        outbox_id: OutboxId,
        claim: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<bool> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let marked = tx.execute(
            "UPDATE outbox SET status = 'sent', sent_at = ?3, attempts = attempts + 1,
             last_error = NULL, claimed_until = NULL, claim = NULL
             WHERE id = ?1 AND claim IS ?2",
            params![outbox_id, claim, now.timestamp()],
        )?;
        if marked == 0 {
            return Ok(false);
        }
        tx.execute(
            "UPDATE subscribers SET bounces = 0
             WHERE bounces > 0
               AND id = (SELECT subscriber_id FROM outbox WHERE id = ?1 AND kind = 'mail')",
            [outbox_id],
        )?;
        tx.execute(
            "UPDATE channels SET failures = 0, last_error = NULL
             WHERE id = (SELECT channel_id FROM outbox WHERE id = ?1)",
            [outbox_id],
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
        Ok(self.conn().execute(
            "UPDATE outbox SET attempts = attempts + 1, last_error = ?3, next_attempt_at = ?4,
             claimed_until = NULL, claim = NULL WHERE id = ?1 AND claim IS ?2",
            params![outbox_id, claim, error, retry_at.timestamp()],
        )? == 1)
    }

    pub fn mark_failed(
        &self,
        outbox_id: OutboxId,
        claim: Option<&str>,
        error: &str,
    ) -> Result<bool> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let marked = tx.execute(
            "UPDATE outbox SET status = 'failed', attempts = attempts + 1, last_error = ?3,
             claimed_until = NULL, claim = NULL WHERE id = ?1 AND claim IS ?2",
            params![outbox_id, claim, error],
        )? == 1;
        if marked {
            // A destination's digest given up: what it carried goes where its searches
            // go now (mail's matches were in the mail: they stay taken).
            tx.execute(
                "UPDATE matches SET outbox_id = NULL
                 WHERE outbox_id = ?1
                   AND (SELECT kind FROM outbox WHERE id = ?1) = 'push'",
                [outbox_id],
            )?;
        }
        tx.commit()?;
        Ok(marked)
    }

    pub fn mark_bounced(
        &self,
        outbox_id: OutboxId,
        claim: Option<&str>,
        error: &str,
        pause_after: u32,
        now: DateTime<Utc>,
    ) -> Result<Option<String>> {
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
        let paused = tx
            .query_row(
                "UPDATE subscribers SET bounces = bounces + 1,
                    paused_at = CASE WHEN paused_at IS NULL AND bounces + 1 >= ?2 THEN ?3
                                     ELSE paused_at END
                 WHERE id = (SELECT subscriber_id FROM outbox WHERE id = ?1)
                 RETURNING email, paused_at IS ?3",
                params![outbox_id, pause_after, now.timestamp()],
                |r| Ok((r.get::<_, String>(0)?, r.get::<_, bool>(1)?)),
            )
            .optional()?;
        tx.commit()?;
        Ok(paused.and_then(|(email, paused)| paused.then_some(email)))
    }

    pub fn requeue(&self, outbox_id: OutboxId, now: DateTime<Utc>) -> Result<bool> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let row: Option<(OutboxStatus, Option<i64>, bool)> = tx
            .query_row(
                "SELECT status, claimed_until, kind <> 'mail' AND channel_id IS NULL
                 FROM outbox WHERE id = ?1",
                [outbox_id],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()?;
        match row {
            None => return Ok(false),
            Some((OutboxStatus::Sent, _, _)) => bail!("message {outbox_id} was already sent"),
            Some((_, _, true)) => {
                bail!("message {outbox_id} has nowhere to go: its destination was removed")
            }
            // A sender holds it: requeueing would take its claim and send it twice.
            Some((_, Some(until), _)) if until > now.timestamp() => {
                bail!("message {outbox_id} is being sent right now; look again in a minute")
            }
            Some(_) => {}
        }
        tx.execute(
            "UPDATE outbox SET status = 'pending', attempts = 0, next_attempt_at = ?2,
             created_at = ?2, claimed_until = NULL, claim = NULL WHERE id = ?1",
            params![outbox_id, now.timestamp()],
        )?;
        tx.commit()?;
        Ok(true)
    }

    pub fn outbox(&self) -> Result<Vec<OutboxMessage>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(&format!("SELECT {OUTBOX_COLUMNS} FROM outbox ORDER BY id"))?;
        let rows = stmt.query_map([], outbox_row)?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }

    // ---- service -------------------------------------------------------------------------
}
