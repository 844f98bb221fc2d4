-- Several instances on one database (issue 14): what they share.

-- The feed list is the database's: each instance's config proposes it, and the most
-- recently written config file wins (`written_at` is its modification time, ms).
ALTER TABLE feeds ADD COLUMN interval_secs BIGINT;    -- the config's poll interval
CREATE TABLE feed_list (
    id          INTEGER PRIMARY KEY CHECK (id = 1),
    fingerprint TEXT NOT NULL,                        -- of the feed list as applied
    written_at  BIGINT NOT NULL,                      -- the config file's mtime, ms
    written_by  TEXT NOT NULL                         -- host and config path
);

-- Pacers shared by every sender: the next free slot, ms since the epoch.
CREATE TABLE pacers (
    name       TEXT PRIMARY KEY,
    next_at_ms BIGINT NOT NULL
);
INSERT INTO pacers (name, next_at_ms) VALUES ('mail', 0);

-- Values created once and then the same for every instance (the link-signing secret).
CREATE TABLE settings (
    name  TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

-- Instances alive: each `tidings run` writes its row every tick.
CREATE TABLE instances (
    id         TEXT PRIMARY KEY,
    host       TEXT NOT NULL,
    pid        BIGINT NOT NULL,
    version    TEXT NOT NULL,
    started_at BIGINT NOT NULL,
    seen_at    BIGINT NOT NULL
);

-- Connection slots for the whole cluster: `per_host` rows per host and `concurrency`
-- rows for host '' (all hosts), each held by one fetch at a time, with a lease.
CREATE TABLE fetch_slots (
    host       TEXT NOT NULL,
    slot       INTEGER NOT NULL,
    holder     TEXT,
    held_until BIGINT,
    PRIMARY KEY (host, slot)
);
