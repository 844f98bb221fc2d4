//! Subscribers and their searches, and the generation the matcher is compiled at.

use super::*;

impl Store {
    /// Adds `query` for `email`, creating the subscriber if needed, and sets their
    /// schedule and time zone. Their next digest time moves only when the schedule or zone
    /// changed. The query must already have been validated by the caller. Returns false
    /// when the subscriber already had exactly this query.
    pub async fn add_subscription(
        &self,
        email: &str,
        query: &str,
        schedule: Schedule,
        timezone: Tz,
        now: DateTime<Utc>,
    ) -> Result<bool> {
        let email = email.to_owned();
        let query = query.to_owned();
        run!(self, db => db.add_subscription(&email, &query, schedule, timezone, now))
    }

    /// Removes a subscriber, their subscriptions and pending matches. Mail already in
    /// the outbox is kept (and still sent). Returns false if there was no such subscriber.
    pub async fn remove_subscriber(&self, email: &str) -> Result<bool> {
        let email = email.to_owned();
        run!(self, db => db.remove_subscriber(&email))
    }

    /// The subscriber with this id, with their queries.
    pub async fn subscriber_by_id(&self, id: SubscriberId) -> Result<Option<Subscriber>> {
        run!(self, db => db.subscriber_by_id(id))
    }

    /// A subscriber's subscriptions as (id, query), oldest first.
    pub async fn subscriptions_of(
        &self,
        subscriber_id: SubscriberId,
    ) -> Result<Vec<(SubscriptionId, String)>> {
        run!(self, db => db.subscriptions_of(subscriber_id))
    }

    /// The subscription with this id: (its query, its subscriber's address).
    pub async fn subscription(&self, id: SubscriptionId) -> Result<Option<(String, String)>> {
        run!(self, db => db.subscription(id))
    }

    /// The latest `limit` items a subscription matched, newest match first, sent or not.
    pub async fn subscription_matches(
        &self,
        id: SubscriptionId,
        limit: usize,
    ) -> Result<Vec<MatchedItem>> {
        run!(self, db => db.subscription_matches(id, limit))
    }

    /// A subscriber's subscriptions as (id, query, paused), oldest first.
    pub async fn subscription_states(
        &self,
        subscriber_id: SubscriberId,
    ) -> Result<Vec<(SubscriptionId, String, bool)>> {
        run!(self, db => db.subscription_states(subscriber_id))
    }

    /// Pauses (or resumes) one of a subscriber's subscriptions: a paused one matches
    /// nothing new. Returns false if they had no such subscription.
    pub async fn set_subscription_paused(
        &self,
        subscriber_id: SubscriberId,
        subscription_id: SubscriptionId,
        paused: bool,
        now: DateTime<Utc>,
    ) -> Result<bool> {
        run!(self, db => db.set_subscription_paused(subscriber_id, subscription_id, paused, now))
    }

    /// Removes one of a subscriber's subscriptions (and its pending matches). Returns false
    /// if they had no such subscription.
    pub async fn remove_subscription(
        &self,
        subscriber_id: SubscriberId,
        subscription_id: SubscriptionId,
    ) -> Result<bool> {
        run!(self, db => db.remove_subscription(subscriber_id, subscription_id))
    }

    /// Changes a subscriber's schedule and time zone; their next digest is computed anew
    /// from `now`. Returns false if there is no such subscriber.
    pub async fn set_schedule(
        &self,
        subscriber_id: SubscriberId,
        schedule: Schedule,
        timezone: Tz,
        now: DateTime<Utc>,
    ) -> Result<bool> {
        run!(self, db => db.set_schedule(subscriber_id, schedule, timezone, now))
    }

    /// Sets what the subscriber hears of new outlets for stories they already got. New
    /// outlets waiting for their next digest are dropped with `never`, and go out as news
    /// with `always`. Returns false if there is no such subscriber.
    pub async fn set_new_outlets(
        &self,
        subscriber_id: SubscriberId,
        new_outlets: NewOutlets,
    ) -> Result<bool> {
        run!(self, db => db.set_new_outlets(subscriber_id, new_outlets))
    }

    /// Sets the language of the subscriber's digests and pages (a locale code). Returns
    /// false if there is no such subscriber.
    pub async fn set_locale(&self, subscriber_id: SubscriberId, locale: &str) -> Result<bool> {
        let locale = locale.to_string();
        run!(self, db => db.set_locale(subscriber_id, &locale))
    }

    /// Unsubscribes the subscriber with this id from the web: removes them, as
    /// [`Store::remove_subscriber`], and remembers the `token` used, so the link keeps
    /// answering "unsubscribed".
    pub async fn unsubscribe(
        &self,
        id: SubscriberId,
        token: &str,
        now: DateTime<Utc>,
    ) -> Result<()> {
        let token = token.to_owned();
        run!(self, db => db.unsubscribe(id, &token, now))
    }

    /// Whether this unsubscribe token was already used.
    pub async fn was_unsubscribed(&self, token: &str) -> Result<bool> {
        let token = token.to_owned();
        run!(self, db => db.was_unsubscribed(&token))
    }

    /// Removes the subscriber with this id, as [`Store::remove_subscriber`]. Returns false
    /// if there was none (already removed: unsubscribing twice is fine).
    pub async fn remove_subscriber_by_id(&self, id: SubscriberId) -> Result<bool> {
        run!(self, db => db.remove_subscriber_by_id(id))
    }

    /// Lets a paused subscriber receive digests again (bounce count reset). Returns false
    /// if there is no such subscriber.
    pub async fn resume_subscriber(&self, email: &str) -> Result<bool> {
        let email = email.to_owned();
        run!(self, db => db.resume_subscriber(&email))
    }

    pub async fn subscribers(&self) -> Result<Vec<Subscriber>> {
        run!(self, db => db.subscribers())
    }

    /// The subscriber with this address (any case), with their queries.
    pub async fn subscriber(&self, email: &str) -> Result<Option<Subscriber>> {
        let email = email.to_owned();
        run!(self, db => db.subscriber(&email))
    }

    /// The subscriptions' generation: bumped (by triggers, in the same transaction) by
    /// every change to a subscription, from any process.
    pub async fn subscriptions_generation(&self) -> Result<i64> {
        run!(self, db => db.subscriptions_generation())
    }

    /// Every active (not paused) subscription as (id, query text), for the matcher, with
    /// the generation they are current at (read in one transaction).
    pub async fn subscriptions(&self) -> Result<ActiveSubscriptions> {
        run!(self, db => db.subscriptions())
    }

    /// Whether one search of `subscriber` also finds its terms' translations in items
    /// of other languages. False when they have no such search, or it was so already
    /// (nothing changed: the matcher need not be rebuilt).
    pub async fn set_crosses_languages(
        &self,
        subscriber: SubscriberId,
        search: SubscriptionId,
        crosses: bool,
    ) -> Result<bool> {
        run!(self, db => db.set_crosses_languages(subscriber, search, crosses))
    }

    /// The searches of a subscriber that cross languages, paused or not.
    pub async fn searches_crossing_languages(
        &self,
        subscriber: SubscriberId,
    ) -> Result<Vec<SubscriptionId>> {
        run!(self, db => db.searches_crossing_languages(subscriber))
    }
}
