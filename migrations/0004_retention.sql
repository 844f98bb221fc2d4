-- Retention: old items and old mail are pruned (Store::prune).

-- A pruned item is a tombstone: its text, link and guid are cleared, but the row stays
-- (feed_id, key, content_hash) so the feed's UNIQUE (feed_id, key) keeps treating it as
-- seen and it never comes back as new. Tombstones are kept forever. NULL = live.
ALTER TABLE items ADD COLUMN pruned_at INTEGER;
-- Live items by age: what pruning scans, and what `tidings match` reads.
CREATE INDEX items_live_first_seen ON items(first_seen_at) WHERE pruned_at IS NULL;

-- "Does a pending match still need this item?", and deleting an item's matches.
CREATE INDEX matches_item ON matches(item_id);
-- The matches of an outbox row: deleted before the row itself (its ON DELETE SET NULL
-- would otherwise make them pending again), and looked up by that foreign key.
CREATE INDEX matches_outbox ON matches(outbox_id) WHERE outbox_id IS NOT NULL;
-- Sent and failed mail by age.
CREATE INDEX outbox_done_created ON outbox(created_at) WHERE status <> 'pending';
