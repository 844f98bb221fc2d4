-- Digest schedules per subscriber (hourly; daily at HH:MM; weekly on a day at HH:MM;
-- each in the subscriber's own IANA time zone), bounce tracking, items sent again when
-- they change, and how long a feed has been failing (named in digest footers).

-- SQLite cannot change a CHECK constraint in place, so `subscribers` is rebuilt. Foreign
-- keys are off while migrations run (Store::open turns them on, then checks them).
-- Rows from version 2 had no time or zone of their own: daily ones get 08:00 UTC.
CREATE TABLE subscribers_v3 (
    id             INTEGER PRIMARY KEY,
    email          TEXT NOT NULL UNIQUE COLLATE NOCASE,
    frequency      TEXT NOT NULL CHECK (frequency IN ('immediate', 'hourly', 'daily', 'weekly')),
    digest_time    TEXT CHECK (digest_time GLOB '[0-2][0-9]:[0-5][0-9]'),   -- local HH:MM
    digest_weekday INTEGER CHECK (digest_weekday BETWEEN 0 AND 6),         -- 0 = Monday
    timezone       TEXT NOT NULL DEFAULT 'UTC',                            -- IANA name
    next_digest_at INTEGER,                          -- NULL for immediate
    bounces        INTEGER NOT NULL DEFAULT 0,       -- permanent failures in a row
    paused_at      INTEGER,                          -- set after too many bounces
    created_at     INTEGER NOT NULL,
    CHECK ((frequency IN ('daily', 'weekly')) = (digest_time IS NOT NULL)),
    CHECK ((frequency = 'weekly') = (digest_weekday IS NOT NULL))
);
INSERT INTO subscribers_v3 (id, email, frequency, digest_time, next_digest_at, created_at)
    SELECT id, email, frequency, CASE frequency WHEN 'daily' THEN '08:00' END,
           next_digest_at, created_at
    FROM subscribers;
DROP TABLE subscribers;
ALTER TABLE subscribers_v3 RENAME TO subscribers;

-- An item already sent that changes materially is pending again, marked updated.
ALTER TABLE matches ADD COLUMN updated INTEGER NOT NULL DEFAULT 0;

-- First failure of the current run of failures; NULL while the feed works.
ALTER TABLE feeds ADD COLUMN failing_since INTEGER;
UPDATE feeds SET failing_since = last_error_at WHERE consecutive_failures > 0;
