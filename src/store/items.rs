//! Items: storing a poll's items (with their matches and tombstones), reading them back.

use super::*;

impl Store {
    /// Stores a successful poll: new items and their matches in one transaction, then the
    /// feed's new validators and schedule. `find_matches` is called for each *new* item
    /// that may match (on the baseline poll, only those published after `baseline_cutoff`)
    /// and for each known item whose text changed materially, and returns the ids of the
    /// subscriptions it matches (given the item's stored article, if any). New items of a
    /// full-text feed are stored unmatched, their articles pending: they are matched when
    /// the article is in ([`Store::finish_article`]). A changed item is sent again (marked updated) only to
    /// subscriptions it was already sent to, so an edit never floods anyone with old news.
    pub async fn store_items(
        &self,
        feed: &FeedToPoll,
        poll: SuccessfulPoll,
        find_matches: impl FnMut(&Item, Option<&str>, Option<&str>) -> Vec<SubscriptionId>
        + Send
        + 'static,
    ) -> Result<StoreOutcome> {
        let feed = feed.clone();
        run!(self, about = feed.id, db => db.store_items(&feed, &poll, find_matches))
    }

    /// Live items of a feed as (title, updated_at), newest first: for tests and inspection.
    pub async fn feed_items(&self, feed_id: &str) -> Result<Vec<(String, Option<DateTime<Utc>>)>> {
        let feed_id = feed_id.to_owned();
        run!(self, db => db.feed_items(&feed_id))
    }

    /// Live items first seen at or after `since`, newest first.
    pub async fn items_since(&self, since: DateTime<Utc>) -> Result<Vec<StoredItem>> {
        run!(self, db => db.items_since(since))
    }
}
