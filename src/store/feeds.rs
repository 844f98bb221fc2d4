//! Feeds: the configured list, claims on feeds being polled, what each poll found.

use super::*;

/// The feed list one instance's config proposes ([`Store::sync_feed_list`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeedListVersion {
    /// [`crate::config::Config::feed_list_fingerprint`].
    pub fingerprint: String,
    /// When its config file was written.
    pub written_at: DateTime<Utc>,
    /// Which instance and file: `host:/etc/tidings/config.toml`.
    pub written_by: String,
}

/// What [`Store::sync_feed_list`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FeedListSync {
    /// The feeds table now has this list.
    Applied,
    /// The database already had this list.
    Unchanged,
    /// The database has another list, from another config written later: it is kept,
    /// and this one is not applied (of two written at the same millisecond, the last
    /// synced wins; a file read again always replaces its own older list).
    Kept {
        written_at: DateTime<Utc>,
        written_by: String,
    },
}

impl FeedListSync {
    /// The rule, given the stored (fingerprint, written_at ms, written_by): `Some` when
    /// `version` must not be applied.
    pub(super) fn kept(
        stored: Option<(String, i64, String)>,
        version: &FeedListVersion,
    ) -> Result<Option<FeedListSync>> {
        let Some((fingerprint, written_at, written_by)) = stored else {
            return Ok(None);
        };
        if fingerprint == version.fingerprint {
            return Ok(Some(FeedListSync::Unchanged));
        }
        // The same file read again is that file's newest word, whatever its dates say.
        if written_by != version.written_by && written_at > version.written_at.timestamp_millis() {
            let written_at = DateTime::from_timestamp_millis(written_at)
                .with_context(|| format!("stored feed list time {written_at} is out of range"))?;
            return Ok(Some(FeedListSync::Kept {
                written_at,
                written_by,
            }));
        }
        Ok(None)
    }
}

impl Store {
    /// Makes the feeds table agree with the config: new feeds are added (due now),
    /// changed ones updated, and feeds no longer configured are marked inactive (their
    /// items stay). A feed whose URL changed starts over with a fresh baseline.
    pub async fn sync_feeds(&self, feeds: &[FeedConfig]) -> Result<()> {
        let feeds = feeds.to_vec();
        run!(self, db => db.sync_feeds(&feeds))
    }

    /// Makes the feeds table agree with one instance's config, unless the database holds
    /// a newer feed list: instances whose configs differ never switch each other's feeds
    /// off. The feed list written from the config file modified last wins; the same list
    /// again changes nothing; an older one is kept out (the caller warns). Every instance
    /// polls the database's list, with its intervals and tags.
    pub async fn sync_feed_list(
        &self,
        feeds: &[FeedConfig],
        version: FeedListVersion,
    ) -> Result<FeedListSync> {
        let list = feeds.to_vec();
        let synced = run!(self, db => db.sync_feed_list(&list, &version))?;
        if matches!(synced, FeedListSync::Applied | FeedListSync::Unchanged) {
            self.health
                .keep_polls_of(&feeds.iter().map(|f| f.id.as_str()).collect());
        }
        Ok(synced)
    }

    /// Claims active feeds for polling until `now + lease`: all of them, or only those due.
    /// A feed another worker holds a lease on is skipped.
    pub async fn claim_feeds(
        &self,
        now: DateTime<Utc>,
        lease: Duration,
        only_due: bool,
    ) -> Result<Vec<FeedToPoll>> {
        self.give_back_unreleased().await?;
        run!(self, db => db.claim_feeds(now, lease, only_due, usize::MAX))
    }

    /// Claims up to `limit` due feeds, the longest due first, as [`Store::claim_feeds`]
    /// does: a poll cycle takes its work in batches, so instances sharing the database
    /// share the due feeds.
    pub async fn claim_due_feeds(
        &self,
        now: DateTime<Utc>,
        lease: Duration,
        limit: usize,
    ) -> Result<Vec<FeedToPoll>> {
        self.give_back_unreleased().await?;
        run!(self, db => db.claim_feeds(now, lease, true, limit))
    }

    /// Records a 304: the feed is fine and nothing is new.
    pub async fn record_not_modified(
        &self,
        feed: &FeedToPoll,
        now: DateTime<Utc>,
        next_poll_at: DateTime<Utc>,
        moved_to: Option<&str>,
    ) -> Result<bool> {
        let feed = feed.clone();
        let moved_to = moved_to.map(str::to_owned);
        run!(self, about = feed.id, db => db.record_not_modified(&feed, now, next_poll_at, moved_to.as_deref()))
    }

    /// Records a 200 whose body is the one stored last time as not modified, keeping the
    /// validators the server sent and, after an unconditional GET, its time.
    pub async fn record_unchanged(&self, feed: &FeedToPoll, poll: UnchangedPoll) -> Result<bool> {
        let feed = feed.clone();
        run!(self, about = feed.id, db => db.record_unchanged(&feed, &poll))
    }

    /// Records a failed poll on the feed. Nothing about its items changes. False (nothing
    /// written) when another worker holds the feed now, as for every `record_*`.
    pub async fn record_failure(
        &self,
        feed: &FeedToPoll,
        now: DateTime<Utc>,
        kind: &str,
        error: &str,
        next_poll_at: DateTime<Utc>,
    ) -> Result<bool> {
        let feed = feed.clone();
        let kind = kind.to_owned();
        let error = error.to_owned();
        run!(self, about = feed.id, db => db.record_failure(&feed, now, &kind, &error, next_poll_at))
    }

    /// Records a 410: the feed is not polled again until its URL changes.
    pub async fn record_gone(
        &self,
        feed: &FeedToPoll,
        now: DateTime<Utc>,
        error: &str,
    ) -> Result<bool> {
        let feed = feed.clone();
        let error = error.to_owned();
        run!(self, about = feed.id, db => db.record_gone(&feed, now, &error))
    }

    /// Extends this poll's claim on the feed to `now + lease`, right before fetching.
    /// False when another worker claimed the feed meanwhile (this one's lease ran out while
    /// it waited for a connection slot): the feed must not be fetched.
    pub async fn renew_feed_claim(
        &self,
        feed: &FeedToPoll,
        now: DateTime<Utc>,
        lease: Duration,
    ) -> Result<bool> {
        let feed = feed.clone();
        run!(self, about = feed.id, db => db.renew_feed_claim(&feed, now, lease))
    }

    /// The active feeds claimed at `now` (by another poll: this one's claims are not made
    /// yet, or are over) and when the last of those claims ends: feeds a poll of all of
    /// them leaves alone, and says so.
    pub async fn claims_held(&self, now: DateTime<Utc>) -> Result<(usize, Option<DateTime<Utc>>)> {
        // This process's own leftovers are not another poll's.
        self.give_back_unreleased().await?;
        run!(self, db => db.claims_held(now))
    }

    /// Lets go of a feed this poll claimed but will not poll (shutting down), so it is
    /// due again at once instead of after the lease; another worker's claim is left alone.
    /// One the database would not let go of (it cannot be written) is given back before
    /// this store next claims feeds or takes a slot.
    pub async fn release_claim(&self, feed: &FeedToPoll) -> Result<()> {
        let claim = feed.clone();
        let result = run!(self, about = claim.id, db => db.release_claim(&claim));
        self.keep_unreleased(&result, || Unreleased::Claim(Box::new(feed.clone())));
        result
    }

    /// Brings a healthy feed's next poll forward to `latest` if it was later: after its
    /// interval was shortened in the config, the new interval counts from its last poll.
    pub async fn poll_no_later_than(&self, feed_id: &str, latest: DateTime<Utc>) -> Result<bool> {
        let feed_id = feed_id.to_owned();
        run!(self, db => db.poll_no_later_than(&feed_id, latest))
    }

    /// When a feed was last polled, if ever.
    pub async fn last_poll_at(&self, feed_id: &str) -> Result<Option<DateTime<Utc>>> {
        let feed_id = feed_id.to_owned();
        run!(self, db => db.last_poll_at(&feed_id))
    }

    pub async fn consecutive_failures(&self, feed_id: &str) -> Result<u32> {
        let feed_id = feed_id.to_owned();
        run!(self, db => db.consecutive_failures(&feed_id))
    }

    /// Every feed's health, with the articles of its items.
    pub async fn feed_statuses(&self) -> Result<Vec<FeedStatus>> {
        let mut statuses = run!(self, db => db.feed_statuses())?;
        let mut articles = self.article_counts().await?;
        for status in &mut statuses {
            status.articles = articles.remove(&status.id).unwrap_or_default();
        }
        Ok(statuses)
    }

    /// Active feeds that have failed `min_failures` times in a row (or are gone), for
    /// digest footers.
    pub async fn failing_feeds(&self, min_failures: u32) -> Result<Vec<FailingFeed>> {
        run!(self, db => db.failing_feeds(min_failures))
    }
}
