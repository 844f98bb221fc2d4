//! Destinations beside email: a subscriber's webhooks and chats, which searches they
//! take, their verification, and the outbox rows that carry digests to them.

use super::*;

/// A destination to add (see [`Store::add_channel`]).
#[derive(Debug, Clone, PartialEq)]
pub struct NewChannel {
    pub subscriber_id: SubscriberId,
    pub name: String,
    pub kind: ChannelKind,
    /// What is not secret (URL, chat id, room), as JSON (`push::Target`).
    pub target: String,
    /// The signing secret, token or secret URL; `None` when `secret_env` names it.
    pub secret: Option<String>,
    pub secret_env: Option<String>,
    pub added_by: ChannelOrigin,
    /// Set when the destination must be confirmed before anything but its verification
    /// message is sent there.
    pub confirm_code: Option<String>,
    /// Takes every search of its subscriber (else only `searches`).
    pub every_search: bool,
    pub searches: Vec<SubscriptionId>,
    /// Held in the transaction that adds it (so forms posted at once cannot pass them
    /// together): at most this many destinations and notices a day for the subscriber.
    pub limits: Option<ChannelLimits>,
    /// Its verification message, queued in the same transaction.
    pub verification: Option<Notice>,
}

/// Limits on what one subscriber may make Tidings send (see [`NewChannel::limits`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChannelLimits {
    pub max_channels: usize,
    /// Notices (verifications, tests) queued in the last 24 hours.
    pub max_notices_per_day: i64,
}

/// A notice for a destination: its subject, its event (JSON) and its stable id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    pub subject: String,
    pub event: String,
    pub message_id: String,
}

/// Why a destination or a notice was refused by its limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OverLimit {
    Channels(usize),
    NoticesToday(i64),
}

impl std::fmt::Display for OverLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OverLimit::Channels(n) => {
                write!(
                    f,
                    "you have {n} destinations, the most there can be; remove one first"
                )
            }
            OverLimit::NoticesToday(_) => write!(
                f,
                "too many messages to your destinations today (codes and tests); try again tomorrow"
            ),
        }
    }
}

impl std::error::Error for OverLimit {}

/// A destination as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct Channel {
    pub id: ChannelId,
    pub subscriber_id: SubscriberId,
    /// Its subscriber's address.
    pub email: String,
    pub name: String,
    pub kind: ChannelKind,
    pub target: String,
    pub secret: Option<String>,
    pub secret_env: Option<String>,
    pub added_by: ChannelOrigin,
    pub state: ChannelState,
    pub paused_reason: Option<String>,
    pub every_search: bool,
    pub searches: Vec<SubscriptionId>,
    /// Permanent failures in a row.
    pub failures: u32,
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub confirmed_at: Option<DateTime<Utc>>,
}

/// An outbox row for a destination, claimed to be sent, with the destination.
#[derive(Debug, Clone, PartialEq)]
pub struct PushMessage {
    pub outbox: OutboxMessage,
    pub kind: OutboxKind,
    pub channel: Channel,
}

/// What entering a verification code did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Confirmation {
    Confirmed,
    /// Not the code; this many tries are left.
    Wrong {
        tries_left: u32,
    },
    /// Too many wrong codes: the destination must be removed and added again.
    Locked,
    /// The destination is not waiting for a code (confirmed already, or gone).
    NotWaiting,
}

/// Wrong codes accepted before a destination is locked.
pub const CONFIRM_TRIES: u32 = 5;

impl Store {
    /// Adds a destination. Fails when its subscriber already has one of that name, or a
    /// listed search is not theirs.
    pub async fn add_channel(&self, new: NewChannel, now: DateTime<Utc>) -> Result<ChannelId> {
        run!(self, db => db.add_channel(&new, now))
    }

    /// The destinations of one subscriber, or of all, in the order they were added.
    pub async fn channels(&self, subscriber: Option<SubscriberId>) -> Result<Vec<Channel>> {
        run!(self, db => db.channels(subscriber))
    }

    pub async fn channel(&self, id: ChannelId) -> Result<Option<Channel>> {
        run!(self, db => db.channel(id))
    }

    /// Removes a destination. What was waiting to go there fails ("destination
    /// removed"); the matches it carried stay taken. False if there was no such one.
    pub async fn remove_channel(&self, id: ChannelId) -> Result<bool> {
        run!(self, db => db.remove_channel(id))
    }

    /// Pauses an active destination (`reason` is shown); its digests wait, and new
    /// matches of searches that go nowhere else go to email. False when it was not active.
    pub async fn pause_channel(&self, id: ChannelId, reason: &str) -> Result<bool> {
        let reason = reason.to_owned();
        run!(self, db => db.pause_channel(id, &reason))
    }

    /// Resumes a paused destination, its failures forgotten: what waited is sent. False
    /// when it was not paused.
    pub async fn resume_channel(&self, id: ChannelId, now: DateTime<Utc>) -> Result<bool> {
        run!(self, db => db.resume_channel(id, now))
    }

    /// Checks a verification code for an unconfirmed destination; [`CONFIRM_TRIES`]
    /// wrong ones lock it.
    pub async fn confirm_channel(
        &self,
        id: ChannelId,
        code: &str,
        now: DateTime<Utc>,
    ) -> Result<Confirmation> {
        let code = code.to_owned();
        run!(self, db => db.confirm_channel(id, &code, now))
    }

    /// The code an unconfirmed destination waits for (to send it again), unless it is
    /// locked by wrong tries.
    pub async fn pending_code(&self, id: ChannelId) -> Result<Option<String>> {
        run!(self, db => db.pending_code(id))
    }

    /// Which searches a destination takes: every one, or those listed (which must be its
    /// subscriber's).
    pub async fn set_channel_searches(
        &self,
        id: ChannelId,
        every_search: bool,
        searches: Vec<SubscriptionId>,
    ) -> Result<()> {
        run!(self, db => db.set_channel_searches(id, every_search, &searches))
    }

    /// Whether a search goes to its subscriber's email. False if there is no such search.
    pub async fn set_search_email(&self, search: SubscriptionId, to_email: bool) -> Result<bool> {
        run!(self, db => db.set_search_email(search, to_email))
    }

    /// Where one search goes: to email or not, and to exactly the destinations listed
    /// (of its subscriber). A destination that took every search and is left out takes
    /// every other search from now on, by name.
    pub async fn set_search_route(
        &self,
        search: SubscriptionId,
        to_email: bool,
        channels: Vec<ChannelId>,
    ) -> Result<()> {
        run!(self, db => db.set_search_route(search, to_email, &channels))
    }

    /// The searches of a subscriber that do not go to email.
    pub async fn searches_not_to_email(
        &self,
        subscriber: SubscriberId,
    ) -> Result<Vec<SubscriptionId>> {
        run!(self, db => db.searches_not_to_email(subscriber))
    }

    /// Queues a notice (a verification or test message, `event` as JSON) for a
    /// destination: sent whatever its state. `message_id` is its stable id (the
    /// `webhook-id`, Matrix's transaction id).
    pub async fn queue_notice(
        &self,
        channel: ChannelId,
        subject: &str,
        event: &str,
        message_id: &str,
        now: DateTime<Utc>,
    ) -> Result<OutboxId> {
        let notice = Notice {
            subject: subject.to_owned(),
            event: event.to_owned(),
            message_id: message_id.to_owned(),
        };
        run!(self, about = channel, db => db.queue_notice(channel, &notice, None, now))?
            .context("a notice without a limit is always queued")
    }

    /// [`Store::queue_notice`], unless the destination's subscriber already had
    /// `max_per_day` notices queued in the last 24 hours (counted in the transaction
    /// that queues it): then `None`.
    pub async fn queue_notice_limited(
        &self,
        channel: ChannelId,
        notice: Notice,
        max_per_day: i64,
        now: DateTime<Utc>,
    ) -> Result<Option<OutboxId>> {
        run!(self, about = channel, db => db.queue_notice(channel, &notice, Some(max_per_day), now))
    }

    /// Changes what a destination is (config.toml changed it) in place: what waits for
    /// it stays, and goes to the new target.
    pub async fn update_channel(
        &self,
        id: ChannelId,
        kind: ChannelKind,
        target: &str,
        secret_env: Option<&str>,
    ) -> Result<bool> {
        let (target, secret_env) = (target.to_owned(), secret_env.map(str::to_owned));
        run!(self, db => db.update_channel(id, kind, &target, secret_env.as_deref()))
    }

    /// Extends a destination message's claim right before it is sent, like
    /// [`Store::renew_mail_claim`]; false too when its destination was paused meanwhile
    /// (a digest waits for the resume; a notice goes whatever the state).
    pub async fn renew_push_claim(
        &self,
        outbox_id: OutboxId,
        claim: &str,
        now: DateTime<Utc>,
        lease: Duration,
    ) -> Result<bool> {
        let claim = claim.to_owned();
        run!(self, db => db.renew_push_claim(outbox_id, &claim, now, lease))
    }

    /// Claims up to `limit` destination messages that are due: digests for active
    /// destinations and notices for any. Like [`Store::claim_mail`], with
    /// [`Store::renew_mail_claim`] before sending and the `mark_*` methods after.
    pub async fn claim_push(
        &self,
        now: DateTime<Utc>,
        lease: Duration,
        limit: usize,
    ) -> Result<Vec<PushMessage>> {
        self.write_unreleased_deliveries().await?;
        run!(self, db => db.claim_push(now, lease, limit))
    }

    /// A permanent rejection of a destination message: it fails with `error`, and its
    /// destination is paused once it has failed `pause_after` times in a row, or at once
    /// with `pause_now` (a 410). Returns the destination when this paused it; nothing
    /// is written when `claim` was lost.
    pub async fn mark_push_rejected(
        &self,
        outbox_id: OutboxId,
        claim: Option<&str>,
        error: &str,
        pause_after: u32,
        pause_now: bool,
    ) -> Result<Option<Channel>> {
        let claim = claim.map(str::to_owned);
        let outcome = Outcome::PushRejected(error.to_owned(), pause_after, pause_now);
        let result = self
            .write_outcome(outbox_id, claim.clone(), outcome.clone())
            .await;
        self.keep_unreleased(&result, || Unreleased::Outcome {
            outbox_id,
            claim,
            outcome,
        });
        Ok(result?.paused_channel())
    }

    /// Notices (verifications, tests) queued for a subscriber's destinations since
    /// `since`: what the sign-up pages' limit counts.
    pub async fn notices_since(
        &self,
        subscriber: SubscriberId,
        since: DateTime<Utc>,
    ) -> Result<i64> {
        run!(self, db => db.notices_since(subscriber, since))
    }

    /// Destination messages by kind of destination: pending, and when the oldest
    /// pending one was queued.
    pub async fn push_backlog(&self) -> Result<Vec<(ChannelKind, i64, DateTime<Utc>)>> {
        run!(self, db => db.push_backlog())
    }
}

/// A new stable id for a destination message (`webhook-id`, Matrix transaction id).
pub fn event_id() -> Result<String> {
    let mut bytes = [0u8; 12];
    getrandom::fill(&mut bytes).map_err(|e| anyhow::anyhow!("no randomness for an id: {e}"))?;
    Ok(format!(
        "evt_{}",
        bytes.iter().map(|b| format!("{b:02x}")).collect::<String>()
    ))
}
