-- Caches know when they are stale (issue 12).

-- Subscription ids are never reused: without AUTOINCREMENT SQLite hands the id of a
-- deleted newest row to the next insert, and anything keyed by that id (a compiled
-- matcher, a private feed link) would take the new search for the old one. The table is
-- rebuilt with its ids kept; foreign keys are off while migrations run.
CREATE TABLE subscriptions_v6 (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    subscriber_id INTEGER NOT NULL REFERENCES subscribers(id) ON DELETE CASCADE,
    query         TEXT NOT NULL,                     -- as written; compiled on load
    created_at    INTEGER NOT NULL,
    paused_at     INTEGER,                           -- NULL = active
    UNIQUE (subscriber_id, query)
);
INSERT INTO subscriptions_v6 (id, subscriber_id, query, created_at, paused_at)
    SELECT id, subscriber_id, query, created_at, paused_at FROM subscriptions;
DROP TABLE subscriptions;
ALTER TABLE subscriptions_v6 RENAME TO subscriptions;

-- A generation per kind of derived state, bumped in the same transaction as every
-- change, by whichever process makes it: a process holding a compiled matcher compares
-- generations, never counts or ids. Triggers fire for cascaded deletes too (a removed
-- subscriber's searches).
CREATE TABLE generations (
    name  TEXT PRIMARY KEY,
    value INTEGER NOT NULL
) WITHOUT ROWID;
INSERT INTO generations (name, value) VALUES ('subscriptions', 1);

CREATE TRIGGER subscriptions_inserted AFTER INSERT ON subscriptions BEGIN
    UPDATE generations SET value = value + 1 WHERE name = 'subscriptions';
END;
CREATE TRIGGER subscriptions_updated AFTER UPDATE ON subscriptions BEGIN
    UPDATE generations SET value = value + 1 WHERE name = 'subscriptions';
END;
CREATE TRIGGER subscriptions_deleted AFTER DELETE ON subscriptions BEGIN
    UPDATE generations SET value = value + 1 WHERE name = 'subscriptions';
END;

-- A claim is valid while it is held: each claim of an outbox row writes a token of its
-- own, renewed before each send; a sender whose token was replaced (its lease ran out
-- and another sender took the row) neither sends the message nor records a result.
ALTER TABLE outbox ADD COLUMN claim TEXT;

-- The same for feeds: a poll renews its claim right before fetching, and a worker whose
-- claim was taken over records nothing.
ALTER TABLE feeds ADD COLUMN claim TEXT;
