-- A hash of the last feed body parsed (with its content type and final URL), so an
-- identical body from a server that ignores conditional requests is recognised before
-- it is parsed again.
ALTER TABLE feeds ADD COLUMN body_hash TEXT;
