-- A B-tree entry holds at most about 2.7 KB: text that may be longer (a link with
-- kilobytes of tracking parameters, a search of 1,000 CJK characters) is indexed by its
-- hash. SQLite has no such limit and keeps its plain indexes.
DROP INDEX items_link;
CREATE INDEX items_link ON items (md5(link));

ALTER TABLE subscriptions DROP CONSTRAINT subscriptions_subscriber_id_query_key;
CREATE UNIQUE INDEX subscriptions_query ON subscriptions (subscriber_id, md5(query));
