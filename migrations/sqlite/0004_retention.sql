-- Retention: old items and old mail are pruned (Store::prune).

-- A pruned item leaves a tombstone: its feed and key, so an item the feed still carries
-- is recognised as seen and never comes back as new. Its `items` row is deleted (clearing
-- the row in place would keep its page: a ~2 KB item fills one, and the file would grow
-- by a page per item forever). Tombstones are kept forever: a few dozen bytes each.
CREATE TABLE item_tombstones (
    feed_id   TEXT NOT NULL REFERENCES feeds(id),
    key       TEXT NOT NULL,
    pruned_at INTEGER NOT NULL,
    PRIMARY KEY (feed_id, key)
) WITHOUT ROWID;

-- Items by age: what pruning scans.
CREATE INDEX items_first_seen ON items(first_seen_at);
-- "Does a pending match still need this item?", and deleting an item's matches.
CREATE INDEX matches_item ON matches(item_id);
-- The matches of an outbox row: deleted before the row itself (its ON DELETE SET NULL
-- would otherwise make them pending again), and looked up by that foreign key.
CREATE INDEX matches_outbox ON matches(outbox_id) WHERE outbox_id IS NOT NULL;
-- Sent and failed mail by age.
CREATE INDEX outbox_done_created ON outbox(created_at) WHERE status <> 'pending';
