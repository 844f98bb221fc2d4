//! The outbox: mail queued, claimed, sent, retried, failed or bounced.

use super::*;

impl Store {
    /// Queues one message that is not a digest (a sign-up confirmation) in the outbox,
    /// to be delivered, retried and recorded like digests. Returns its outbox id.
    pub async fn queue_message(
        &self,
        recipient: &str,
        subject: &str,
        text: &str,
        html: &str,
        message_domain: &str,
        now: DateTime<Utc>,
    ) -> Result<OutboxId> {
        let recipient = recipient.to_owned();
        let subject = subject.to_owned();
        let text = text.to_owned();
        let html = html.to_owned();
        let message_domain = message_domain.to_owned();
        run!(self, db => db.queue_message(&recipient, &subject, &text, &html, &message_domain, now))
    }

    /// Claims up to `limit` pending messages whose next attempt is due, for `lease`:
    /// the longest-waiting first. The claim's token (in each message's `claim`) must be
    /// shown to [`Store::renew_mail_claim`] before sending and to the `mark_*` methods
    /// after: once another sender has claimed a row, the old token opens nothing.
    pub async fn claim_mail(
        &self,
        now: DateTime<Utc>,
        lease: Duration,
        limit: usize,
    ) -> Result<Vec<OutboxMessage>> {
        run!(self, db => db.claim_mail(now, lease, limit))
    }

    /// Extends a claim to `now + lease`, right before its message is sent. False when
    /// the claim was lost (another sender holds the row, or it is no longer pending):
    /// the message must not be sent.
    pub async fn renew_mail_claim(
        &self,
        outbox_id: OutboxId,
        claim: &str,
        now: DateTime<Utc>,
        lease: Duration,
    ) -> Result<bool> {
        let claim = claim.to_owned();
        run!(self, db => db.renew_mail_claim(outbox_id, &claim, now, lease))
    }

    /// Delivered: the row is done, and the subscriber's bounce count starts over. False
    /// (nothing written) when `claim` no longer holds the row. `claim` is `None` only
    /// for a row that was never claimed (tools, benchmarks).
    pub async fn mark_sent(
        &self,
        outbox_id: OutboxId,
        claim: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<bool> {
        let claim = claim.map(str::to_owned);
        run!(self, about = outbox_id, db => db.mark_sent(outbox_id, claim.as_deref(), now))
    }

    /// A temporary failure: try again at `retry_at`. False when `claim` was lost.
    pub async fn mark_retry(
        &self,
        outbox_id: OutboxId,
        claim: Option<&str>,
        error: &str,
        retry_at: DateTime<Utc>,
    ) -> Result<bool> {
        let claim = claim.map(str::to_owned);
        let error = error.to_owned();
        run!(self, about = outbox_id, db => db.mark_retry(outbox_id, claim.as_deref(), &error, retry_at))
    }

    /// A failure for good: the server's answer is kept; the message is not retried.
    /// False when `claim` was lost.
    pub async fn mark_failed(
        &self,
        outbox_id: OutboxId,
        claim: Option<&str>,
        error: &str,
    ) -> Result<bool> {
        let claim = claim.map(str::to_owned);
        let error = error.to_owned();
        run!(self, about = outbox_id, db => db.mark_failed(outbox_id, claim.as_deref(), &error))
    }

    /// A permanent rejection (a bounce): the message fails, and its subscriber is paused
    /// once they have bounced `pause_after` times in a row. Returns the address when this
    /// bounce paused them; nothing is written when `claim` was lost.
    pub async fn mark_bounced(
        &self,
        outbox_id: OutboxId,
        claim: Option<&str>,
        error: &str,
        pause_after: u32,
        now: DateTime<Utc>,
    ) -> Result<Option<String>> {
        let claim = claim.map(str::to_owned);
        let error = error.to_owned();
        run!(self, about = outbox_id, db => db.mark_bounced(outbox_id, claim.as_deref(), &error, pause_after, now))
    }

    /// Puts a failed (or pending) message back in the queue to be sent at `now`, with its
    /// attempts reset. Sent mail cannot be requeued. Returns false if there is no such row.
    pub async fn requeue(&self, outbox_id: OutboxId, now: DateTime<Utc>) -> Result<bool> {
        run!(self, db => db.requeue(outbox_id, now))
    }

    pub async fn outbox(&self) -> Result<Vec<OutboxMessage>> {
        run!(self, db => db.outbox())
    }
}
