-- Stories (issue 17): items of different feeds that report the same news are one story.
-- An item's story is the id of the story's first item (its own id when it starts one);
-- it is set when the item is stored and never changes. Items that cannot be alerted
-- (old news on a feed's first poll) have none.
ALTER TABLE items ADD COLUMN story_id BIGINT;
-- Whether a story already has an item of a feed: looked up for each item grouped.
CREATE INDEX items_story ON items(story_id, feed_id);

-- What a subscriber hears of a story they already got when another outlet carries it:
-- 'never'; 'next': listed under "more coverage" in their next digest (it does not send
-- one by itself); 'always': alerted as any new item.
ALTER TABLE subscribers ADD COLUMN new_outlets TEXT NOT NULL DEFAULT 'next'
    CHECK (new_outlets IN ('never', 'next', 'always'));
-- A match of a story the subscriber already got, waiting for their next digest.
ALTER TABLE matches ADD COLUMN quiet BOOLEAN NOT NULL DEFAULT FALSE;

-- The stories each subscriber got: a story's new outlets are news for them only as they
-- chose (`new_outlets`). Written when a digest takes matches; pruned with old mail.
CREATE TABLE stories_sent (
    subscriber_id BIGINT NOT NULL REFERENCES subscribers(id) ON DELETE CASCADE,
    story_id      BIGINT NOT NULL,
    sent_at       BIGINT NOT NULL,
    PRIMARY KEY (subscriber_id, story_id)
);
CREATE INDEX stories_sent_at ON stories_sent(sent_at);
