-- Full text and pages without feeds (issue 15).

-- How a feed's items are read beyond its URL (`FeedOptions` as JSON: full_text,
-- content_selector…), as the feed list in the database has it.
ALTER TABLE feeds ADD COLUMN options TEXT NOT NULL DEFAULT '{}';
-- A watched page (kind = "watch"): the text of what its selector selected last time.
ALTER TABLE feeds ADD COLUMN page_snapshot TEXT;

-- An item of a full-text feed waits for its article before it is matched, once.
--   article_state: NULL (no article wanted), 'pending' (to fetch; not matched yet),
--                  'ok', 'none' (the page has no story) or 'failed' (gave up): matched.
ALTER TABLE items ADD COLUMN article_state TEXT;
ALTER TABLE items ADD COLUMN article_text TEXT;                 -- the story, plain text
ALTER TABLE items ADD COLUMN article_link TEXT;                 -- the link it was fetched from
ALTER TABLE items ADD COLUMN article_attempts INTEGER NOT NULL DEFAULT 0;
ALTER TABLE items ADD COLUMN article_next_at BIGINT;           -- pending: not before this
ALTER TABLE items ADD COLUMN article_error TEXT;                -- the last failure, or why none
-- Pending because an item already matched got a new link: once fetched, it goes again
-- (marked updated) only to those it was sent to, as any edit does.
ALTER TABLE items ADD COLUMN article_resend BOOLEAN NOT NULL DEFAULT FALSE;
-- The worker fetching the article holds a claim (as on feeds); a lapsed one is free.
ALTER TABLE items ADD COLUMN claim TEXT;
ALTER TABLE items ADD COLUMN claimed_until BIGINT;
CREATE INDEX items_article_pending ON items(article_next_at) WHERE article_state = 'pending';
