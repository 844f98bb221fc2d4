-- Destinations beside email (issue 16): webhooks, ntfy, Telegram, Matrix, Slack, Discord,
-- Mattermost. A digest round writes one outbox row per destination, in the transaction
-- that takes its matches.

-- A subscriber's destinations. `target` holds what is not secret (a URL, a chat id, a
-- room), as JSON; `secret` holds the signing secret, token or secret URL, unless the
-- admin wrote the destination in config.toml, where `secret_env` names the environment
-- variable each process reads it from. `added_by` decides where it may be sent:
-- 'subscriber' ones only ever reach public addresses.
CREATE TABLE channels (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    subscriber_id  INTEGER NOT NULL REFERENCES subscribers(id) ON DELETE CASCADE,
    name           TEXT NOT NULL,
    kind           TEXT NOT NULL,
    target         TEXT NOT NULL,
    secret         TEXT,
    secret_env     TEXT,
    added_by       TEXT NOT NULL CHECK (added_by IN ('admin', 'config', 'subscriber')),
    -- 'unconfirmed': only its verification message is sent; 'active'; 'paused' (by its
    -- owner, or after repeated permanent failures: `paused_reason` says which).
    state          TEXT NOT NULL CHECK (state IN ('unconfirmed', 'active', 'paused')),
    paused_reason  TEXT,
    confirm_code   TEXT,                              -- until confirmed
    confirm_tries  INTEGER NOT NULL DEFAULT 0,        -- wrong codes entered
    every_search   INTEGER NOT NULL DEFAULT 1,        -- else only `channel_searches`
    failures       INTEGER NOT NULL DEFAULT 0,        -- permanent failures in a row
    last_error     TEXT,
    created_at     INTEGER NOT NULL,
    confirmed_at   INTEGER,
    UNIQUE (subscriber_id, name)
);

-- The searches a destination takes when it does not take every search.
CREATE TABLE channel_searches (
    channel_id      INTEGER NOT NULL REFERENCES channels(id) ON DELETE CASCADE,
    subscription_id INTEGER NOT NULL REFERENCES subscriptions(id) ON DELETE CASCADE,
    PRIMARY KEY (channel_id, subscription_id)
) WITHOUT ROWID;
CREATE INDEX channel_searches_subscription ON channel_searches(subscription_id);

-- Whether a search goes to the subscriber's email (the default). A search whose other
-- destinations are all paused or gone goes to email anyway: nothing is taken unshown.
ALTER TABLE subscriptions ADD COLUMN to_email INTEGER NOT NULL DEFAULT 1;

-- Outbox rows for a destination: `channel_id` set, `kind` 'push' (a digest, sent while
-- the destination is active) or 'notice' (its verification or a test, sent whatever its
-- state); `body_text` holds the event (JSON) each service formats in its own way, and
-- `message_id` its stable id (`webhook-id`, Matrix transaction id).
ALTER TABLE outbox ADD COLUMN kind TEXT NOT NULL DEFAULT 'mail' CHECK (kind IN ('mail', 'push', 'notice'));
ALTER TABLE outbox ADD COLUMN channel_id INTEGER REFERENCES channels(id) ON DELETE SET NULL;
CREATE INDEX outbox_channel ON outbox(channel_id) WHERE channel_id IS NOT NULL;
-- Pending messages in the order they are due, mail and destination messages apart: each
-- sender scans its own in order and stops after its batch, never reading the other's
-- (rows held for a paused destination would otherwise be read by every mail claim).
DROP INDEX outbox_pending;
CREATE INDEX outbox_pending ON outbox(next_attempt_at, id) WHERE status = 'pending' AND kind = 'mail';
CREATE INDEX outbox_push_pending ON outbox(next_attempt_at, id)
    WHERE status = 'pending' AND kind <> 'mail';

-- A destination removed (by its owner, or with its subscriber): what waited to go there
-- fails, saying so, rather than lingering without a destination; the matches it carried
-- are pending again, to go where their searches go now.
CREATE TRIGGER channels_deleted BEFORE DELETE ON channels BEGIN
    UPDATE matches SET outbox_id = NULL
    WHERE outbox_id IN (SELECT id FROM outbox
                        WHERE channel_id = OLD.id AND status = 'pending' AND kind = 'push');
    UPDATE outbox SET status = 'failed', last_error = 'destination removed',
                      claim = NULL, claimed_until = NULL
    WHERE channel_id = OLD.id AND status = 'pending';
END;
