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
        render: impl FnOnce(&Subscriber, &Parcels) -> Result<RenderedRound> + Send + 'static,
    ) -> Result<Option<OutboxId>> {
        let message_domain = message_domain.to_owned();
        run!(self, about = subscriber_id, db => db.take_digest(subscriber_id, now, ignore_schedule, &message_domain, render))
    }
}

/// Checks that what `render` made for `parcels` is what the outbox needs: a mail exactly
/// when something goes to email, one event per destination, and every one of the
/// round's `entries` carried by at least one of them. Returns the number of rows to write.
pub(super) fn check_rendered(
    parcels: &Parcels,
    rendered: &RenderedRound,
    entries: usize,
) -> Result<usize> {
    if parcels.email.is_empty() != rendered.email.is_none() {
        bail!(
            "digest rendering: {} matches for email, but {} mail",
            parcels.email.len(),
            if rendered.email.is_some() { "a" } else { "no" }
        );
    }
    if parcels.channels.len() != rendered.events.len() {
        bail!(
            "digest rendering: {} destinations, but {} events",
            parcels.channels.len(),
            rendered.events.len()
        );
    }
    let carried: std::collections::HashSet<(SubscriptionId, ItemId)> = parcels
        .email
        .iter()
        .chain(parcels.channels.iter().flat_map(|(_, taken)| taken))
        .map(|e| (e.subscription_id, e.item_id))
        .collect();
    if carried.len() != entries {
        bail!(
            "digest routing: {entries} matches taken, {} carried",
            carried.len()
        );
    }
    Ok(rendered.events.len() + usize::from(rendered.email.is_some()))
}
