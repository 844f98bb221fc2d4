//! Digests: which are due, and taking a subscriber's pending matches into one.

use super::*;

impl Store {
    /// Subscribers whose digest round is due at `now`: immediate ones with pending
    /// matches, and scheduled ones whose time has come (with or without matches: taking
    /// an empty digest moves their next time on). With `ignore_schedule`, every subscriber
    /// with pending matches. Paused subscribers are left out.
    pub async fn due_digests(
        &self,
        now: DateTime<Utc>,
        ignore_schedule: bool,
    ) -> Result<Vec<SubscriberId>> {
        run!(self, db => db.due_digests(now, ignore_schedule))
    }

    /// In one transaction: checks that the subscriber's round is still due (see
    /// [`Subscriber::digest_due`]: another instance may have taken it since they were
    /// listed, and a match stored meanwhile must wait for the next period), loads their
    /// pending matches, renders them with
    /// `render`, writes the result to the outbox, marks those matches as taken and moves
    /// the subscriber's next digest time on (to the first slot after `now`, so a digest
    /// that was overdue for days goes out once). Returns the outbox id, or `None` when there
    /// was nothing to send (the schedule still moves on) or it was not due (nothing
    /// changes). The `Message-ID` is fixed here,
    /// so a resend carries the same one.
    pub async fn take_digest(
        &self,
        subscriber_id: SubscriberId,
        now: DateTime<Utc>,
        ignore_schedule: bool,
        message_domain: &str,
        render: impl FnOnce(&Subscriber, &[DigestEntry], bool) -> Result<Rendered> + Send + 'static,
    ) -> Result<Option<OutboxId>> {
        let message_domain = message_domain.to_owned();
        run!(self, db => db.take_digest(subscriber_id, now, ignore_schedule, &message_domain, render))
    }
}
