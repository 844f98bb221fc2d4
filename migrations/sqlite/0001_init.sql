-- Tidings schema, version 1. Times are Unix seconds (UTC).

-- One row per feed ever configured; a feed removed from config.toml is kept, inactive,
-- so its items and their history stay.
CREATE TABLE feeds (
    id                   TEXT PRIMARY KEY,
    url                  TEXT NOT NULL,
    name                 TEXT NOT NULL,
    tags                 TEXT NOT NULL DEFAULT '',   -- comma-separated
    active               INTEGER NOT NULL DEFAULT 1,
    etag                 TEXT,
    last_modified        TEXT,
    baseline_at          INTEGER,                    -- first successful poll; NULL = not yet
    next_poll_at         INTEGER NOT NULL DEFAULT 0,
    last_poll_at         INTEGER,
    last_success_at      INTEGER,
    last_status          TEXT,                       -- 'ok', 'not-modified' or 'error'
    last_error           TEXT,
    last_error_kind      TEXT,
    consecutive_failures INTEGER NOT NULL DEFAULT 0,
    claimed_until        INTEGER                     -- lease held by the worker polling it
);

CREATE TABLE items (
    id            INTEGER PRIMARY KEY,
    feed_id       TEXT NOT NULL REFERENCES feeds(id),
    key           TEXT NOT NULL,                     -- stable identity within the feed
    guid          TEXT,
    link          TEXT,                              -- canonical form
    title         TEXT NOT NULL,
    summary       TEXT NOT NULL,                     -- plain text
    content       TEXT NOT NULL,                     -- plain text
    published_at  INTEGER,
    first_seen_at INTEGER NOT NULL,
    UNIQUE (feed_id, key)
);
CREATE INDEX items_link ON items(link);

CREATE TABLE subscribers (
    id             INTEGER PRIMARY KEY,
    email          TEXT NOT NULL UNIQUE COLLATE NOCASE,
    frequency      TEXT NOT NULL CHECK (frequency IN ('immediate', 'daily')),
    next_digest_at INTEGER,                          -- NULL for immediate
    created_at     INTEGER NOT NULL
);

CREATE TABLE subscriptions (
    id            INTEGER PRIMARY KEY,
    subscriber_id INTEGER NOT NULL REFERENCES subscribers(id) ON DELETE CASCADE,
    query         TEXT NOT NULL,                     -- as written; compiled on load
    created_at    INTEGER NOT NULL,
    UNIQUE (subscriber_id, query)
);

-- A match is pending until a digest takes it (outbox_id set in the same transaction
-- that writes the outbox row).
CREATE TABLE matches (
    subscription_id INTEGER NOT NULL REFERENCES subscriptions(id) ON DELETE CASCADE,
    item_id         INTEGER NOT NULL REFERENCES items(id),
    matched_at      INTEGER NOT NULL,
    outbox_id       INTEGER REFERENCES outbox(id) ON DELETE SET NULL,
    PRIMARY KEY (subscription_id, item_id)
);
CREATE INDEX matches_pending ON matches(subscription_id) WHERE outbox_id IS NULL;

CREATE TABLE outbox (
    id              INTEGER PRIMARY KEY,
    subscriber_id   INTEGER REFERENCES subscribers(id) ON DELETE SET NULL,
    recipient       TEXT NOT NULL,
    message_id      TEXT NOT NULL UNIQUE,
    subject         TEXT NOT NULL,
    body_text       TEXT NOT NULL,
    body_html       TEXT NOT NULL,
    created_at      INTEGER NOT NULL,
    status          TEXT NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'sent', 'failed')),
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL,
    last_error      TEXT,
    sent_at         INTEGER,
    claimed_until   INTEGER
);
CREATE INDEX outbox_pending ON outbox(next_attempt_at) WHERE status = 'pending';
