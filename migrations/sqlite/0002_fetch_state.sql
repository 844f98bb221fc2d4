-- Polling state for robust fetching, and item updates.

ALTER TABLE feeds ADD COLUMN last_full_fetch_at INTEGER;  -- last unconditional GET
ALTER TABLE feeds ADD COLUMN moved_to TEXT;               -- set after a permanent redirect
ALTER TABLE feeds ADD COLUMN gone_at INTEGER;             -- 410: not polled until the URL changes
ALTER TABLE feeds ADD COLUMN repairs TEXT;                -- what the parser had to fix, last poll
ALTER TABLE feeds ADD COLUMN last_error_at INTEGER;

-- An item that keeps its id but changes materially is recorded as updated.
ALTER TABLE items ADD COLUMN content_hash TEXT;
ALTER TABLE items ADD COLUMN updated_at INTEGER;
