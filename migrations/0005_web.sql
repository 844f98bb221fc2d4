-- Subscriber pages (issue 7).

-- Unsubscribe links used from the web: posting one again answers "unsubscribed" (RFC 8058
-- asks for idempotence) although the subscriber, and their address, are gone. Only the
-- token is kept: it is a MAC, not the address.
CREATE TABLE unsubscribed (
    token TEXT PRIMARY KEY,
    at    INTEGER NOT NULL
) WITHOUT ROWID;
