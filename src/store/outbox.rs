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
        self.write_unreleased_deliveries().await?;
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
        self.mark(outbox_id, claim, Outcome::Sent(now)).await
    }

    /// A temporary failure: try again at `retry_at`. False when `claim` was lost.
    pub async fn mark_retry(
        &self,
        outbox_id: OutboxId,
        claim: Option<&str>,
        error: &str,
        retry_at: DateTime<Utc>,
    ) -> Result<bool> {
        let outcome = Outcome::Retry(error.to_owned(), retry_at);
        self.mark(outbox_id, claim, outcome).await
    }

    /// A failure for good: the server's answer is kept; the message is not retried.
    /// False when `claim` was lost.
    pub async fn mark_failed(
        &self,
        outbox_id: OutboxId,
        claim: Option<&str>,
        error: &str,
    ) -> Result<bool> {
        self.mark(outbox_id, claim, Outcome::Failed(error.to_owned()))
            .await
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
        let outcome = Outcome::Bounced(error.to_owned(), pause_after, now);
        let result = self
            .write_outcome(outbox_id, claim.clone(), outcome.clone())
            .await;
        self.keep_unreleased(&result, || Unreleased::Outcome {
            outbox_id,
            claim,
            outcome,
        });
        Ok(result?.paused_subscriber())
    }

    /// Writes `outcome` under `claim` (see the `mark_*` methods); true when `claim` still
    /// held the row. An outcome the database would not take (it cannot be written) is
    /// kept, and written before this store next claims mail or pushes.
    pub(super) async fn mark(
        &self,
        outbox_id: OutboxId,
        claim: Option<&str>,
        outcome: Outcome,
    ) -> Result<bool> {
        let claim = claim.map(str::to_owned);
        let result = self
            .write_outcome(outbox_id, claim.clone(), outcome.clone())
            .await;
        self.keep_unreleased(&result, || Unreleased::Outcome {
            outbox_id,
            claim,
            outcome,
        });
        Ok(result?.recorded)
    }

    /// Writes one delivery's outcome (the backend call its `mark_*` method names).
    pub(super) async fn write_outcome(
        &self,
        outbox_id: OutboxId,
        claim: Option<String>,
        outcome: Outcome,
    ) -> Result<Marked> {
        let claim = claim.as_deref().map(str::to_owned);
        let marked = |recorded| Marked {
            recorded,
            paused: None,
        };
        Ok(match outcome {
            Outcome::Sent(at) => marked(
                run!(self, about = outbox_id, db => db.mark_sent(outbox_id, claim.as_deref(), at))?,
            ),
            Outcome::Retry(error, at) => marked(
                run!(self, about = outbox_id, db => db.mark_retry(outbox_id, claim.as_deref(), &error, at))?,
            ),
            Outcome::Failed(error) => marked(
                run!(self, about = outbox_id, db => db.mark_failed(outbox_id, claim.as_deref(), &error))?,
            ),
            Outcome::Bounced(error, pause_after, now) => {
                let paused = run!(self, about = outbox_id, db => db.mark_bounced(outbox_id, claim.as_deref(), &error, pause_after, now))?;
                Marked {
                    recorded: true,
                    paused: paused.map(Paused::Subscriber),
                }
            }
            Outcome::PushRejected(error, pause_after, pause_now) => {
                let paused = run!(self, about = outbox_id, db => db.mark_push_rejected(outbox_id, claim.as_deref(), &error, pause_after, pause_now))?;
                Marked {
                    recorded: true,
                    paused: paused.map(|c| Paused::Channel(Box::new(c))),
                }
            }
        })
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
