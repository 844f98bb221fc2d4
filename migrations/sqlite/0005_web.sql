-- Subscriber pages (issue 7).

-- Unsubscribe links used from the web: posting one again answers "unsubscribed" (RFC 8058
-- asks for idempotence) although the subscriber, and their address, are gone. Only the
-- token is kept: it is a MAC, not the address.
CREATE TABLE unsubscribed (
    token TEXT PRIMARY KEY,
    at    INTEGER NOT NULL
) WITHOUT ROWID;

-- Sign-ups from the web, waiting for the address owner to confirm (double opt-in).
-- Nothing but the confirmation mail is ever sent to an address before it confirms; the
-- subscriber is created only then. Rows also count requests for rate limits.
CREATE TABLE signups (
    id           INTEGER PRIMARY KEY,
    email        TEXT NOT NULL COLLATE NOCASE,
    queries      TEXT NOT NULL,                  -- one per line, each already parsed
    frequency    TEXT NOT NULL,                  -- a schedule as `Schedule::parse` reads it
    timezone     TEXT NOT NULL,
    client       TEXT NOT NULL,                  -- requesting client's address
    created_at   INTEGER NOT NULL,
    confirmed_at INTEGER
);
CREATE INDEX signups_email ON signups(email, created_at);
CREATE INDEX signups_client ON signups(client, created_at);

-- A search its subscriber paused from the manage page: kept, but matches nothing until
-- resumed. NULL = active.
ALTER TABLE subscriptions ADD COLUMN paused_at INTEGER;
