-- Who holds a feed's claim, and since when (issue 19): the instance id of the poll that
-- took it (`host:pid:start`, as in `instances`). A claim whose owner is known to be gone
-- (its process ended on this host, or its instance stopped reporting) is taken over at
-- once, not after its lease; `feeds status` shows a claimed feed as being polled by it.
ALTER TABLE feeds ADD COLUMN claimed_by TEXT;
ALTER TABLE feeds ADD COLUMN claimed_at INTEGER;
-- Likewise the connection slots: the instance holding each, so that the slots of a poll
-- that died are free again at once.
ALTER TABLE fetch_slots ADD COLUMN held_by TEXT;
