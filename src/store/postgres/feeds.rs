//! Feeds: the configured list, claims on feeds being polled, what each poll found.

use super::*;

impl Postgres {
    pub fn sync_feeds(&self, feeds: &[FeedConfig]) -> Result<()> {
        let mut conn = self.conn()?;
        let mut tx = conn.transaction()?;
        sync_feeds_in(&mut tx, feeds)?;
        tx.commit()?;
        Ok(())
    }

    pub fn sync_feed_list(
        &self,
        feeds: &[FeedConfig],
        version: &FeedListVersion,
    ) -> Result<FeedListSync> {
        let mut conn = self.conn()?;
        let mut tx = conn.transaction()?;
        // The lock first: the version read below stays the latest until this commits.
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&SYNC_FEEDS_LOCK])?;
        let stored = tx
            .query_opt(
                "SELECT fingerprint, written_at, written_by FROM feed_list WHERE id = 1",
                &[],
            )?
            .map(|r| anyhow::Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?)))
            .transpose()?;
        if let Some(kept) = FeedListSync::kept(stored, version)? {
            return Ok(kept);
        }
        sync_feeds_in(&mut tx, feeds)?;
        tx.execute(
            "INSERT INTO feed_list (id, fingerprint, written_at, written_by) VALUES (1, $1, $2, $3)
             ON CONFLICT (id) DO UPDATE SET fingerprint = excluded.fingerprint,
                 written_at = excluded.written_at, written_by = excluded.written_by",
            &[
                &version.fingerprint,
                &version.written_at.timestamp_millis(),
                &version.written_by,
            ],
        )?;
        tx.commit()?;
        Ok(FeedListSync::Applied)
    }
}

/// Makes the feeds table agree with `feeds` (see [`Store::sync_feeds`]).
fn sync_feeds_in(tx: &mut Transaction<'_>, feeds: &[FeedConfig]) -> Result<()> {
    {
        // One sync at a time across instances: two would insert the same new feed (the
        // second failing on its key) or deactivate each other's feeds half-way.
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&SYNC_FEEDS_LOCK])?;
        tx.execute("UPDATE feeds SET active = FALSE", &[])?;
        for feed in feeds {
            let url = feed.url.as_str();
            let tags = feed.tags.join(",");
            let interval = i64::try_from(feed.interval.as_secs()).unwrap_or(i64::MAX);
            let options = feed.options.to_json();
            let old_url: Option<String> = tx
                .query_opt("SELECT url FROM feeds WHERE id = $1", &[&feed.id])?
                .map(|r| r.try_get(0))
                .transpose()?;
            match old_url {
                None => {
                    tx.execute(
                        "INSERT INTO feeds (id, url, name, tags, interval_secs, options)
                         VALUES ($1, $2, $3, $4, $5, $6)",
                        &[&feed.id, &url, &feed.name, &tags, &interval, &options],
                    )?;
                }
                Some(old) if old != url => {
                    tx.execute(
                        "UPDATE feeds SET url = $2, name = $3, tags = $4, interval_secs = $5, options = $6,
                         active = TRUE,
                         etag = NULL, last_modified = NULL, baseline_at = NULL, next_poll_at = 0,
                         consecutive_failures = 0, gone_at = NULL, moved_to = NULL,
                         last_full_fetch_at = NULL, last_status = NULL, failing_since = NULL,
                         body_hash = NULL, page_snapshot = NULL,
                         -- A poll of the old URL still in flight holds a claim on what is
                         -- now another feed: void it, so that poll records nothing.
                         claim = NULL, claimed_until = NULL
                         WHERE id = $1",
                        &[&feed.id, &url, &feed.name, &tags, &interval, &options],
                    )?;
                }
                Some(_) => {
                    tx.execute(
                        "UPDATE feeds SET name = $2, tags = $3, interval_secs = $4, options = $5,
                         active = TRUE,
                         -- Read another way: what was remembered of the page no longer
                         -- compares (nor does the body hash stand for the same items).
                         page_snapshot = CASE WHEN options = $5 THEN page_snapshot END,
                         body_hash = CASE WHEN options = $5 THEN body_hash END,
                         -- and its next poll is a baseline again: what the page holds
                         -- now, read the new way, is not news.
                         baseline_at = CASE WHEN options = $5 THEN baseline_at END
                         WHERE id = $1",
                        &[&feed.id, &feed.name, &tags, &interval, &options],
                    )?;
                }
            }
        }
    }
    Ok(())
}

impl Postgres {
    pub fn claim_feeds(
        &self,
        now: DateTime<Utc>,
        lease: Duration,
        only_due: bool,
        limit: usize,
    ) -> Result<Vec<FeedToPoll>> {
        let now_s = now.timestamp();
        let until = now_s + lease_secs(lease);
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let mut conn = self.conn()?;
        // Claims whose owner is gone are taken over at once, not after their lease.
        let gone: Vec<String> = conn
            .query(
                "SELECT DISTINCT f.claimed_by, i.seen_at FROM feeds f
                 LEFT JOIN instances i ON i.id = f.claimed_by
                 WHERE f.claimed_until > $1 AND f.claimed_by IS NOT NULL",
                &[&now_s],
            )?
            .iter()
            .map(|r| Ok((r.try_get::<_, String>(0)?, r.try_get::<_, Option<i64>>(1)?)))
            .collect::<Result<Vec<_>>>()?
            .into_iter()
            .filter(|(by, seen_at)| crate::store::cluster::owner_is_gone(by, *seen_at, now_s))
            .map(|(by, _)| by)
            .collect();
        let this = &Instance::this().id;
        let rows = conn.query(
            &format!(
                "UPDATE feeds SET claimed_until = $2, claim = {NEW_CLAIM},
                                  claimed_by = $6, claimed_at = $1
                 WHERE id IN (SELECT id FROM feeds
                              WHERE active AND gone_at IS NULL
                                AND (claimed_until IS NULL OR claimed_until <= $1
                                     OR claimed_by = ANY($5))
                                AND (NOT $3 OR next_poll_at <= $1)
                              ORDER BY next_poll_at LIMIT $4
                              FOR UPDATE SKIP LOCKED)
                 RETURNING id, url, etag, last_modified, baseline_at, last_full_fetch_at,
                           consecutive_failures, body_hash, claim, tags, interval_secs, options,
                           page_snapshot"
            ),
            &[&now_s, &until, &only_due, &limit, &gone, this],
        )?;
        rows.iter()
            .map(|r| {
                Ok(FeedToPoll {
                    id: r.try_get(0)?,
                    url: r.try_get(1)?,
                    etag: r.try_get(2)?,
                    last_modified: r.try_get(3)?,
                    baseline_at: time_opt(r.try_get(4)?)?,
                    last_full_fetch_at: time_opt(r.try_get(5)?)?,
                    consecutive_failures: count(r.try_get::<_, i32>(6)?)?,
                    body_hash: r.try_get(7)?,
                    claim: r.try_get(8)?,
                    tags: split_tags(r.try_get(9)?),
                    interval: r
                        .try_get::<_, Option<i64>>(10)?
                        .and_then(|s| u64::try_from(s).ok())
                        .map(Duration::from_secs),
                    options: FeedOptions::from_json(r.try_get(11)?),
                    snapshot: r.try_get(12)?,
                })
            })
            .collect()
    }

    pub fn record_not_modified(
        &self,
        feed: &FeedToPoll,
        now: DateTime<Utc>,
        next_poll_at: DateTime<Utc>,
        moved_to: Option<&str>,
    ) -> Result<bool> {
        // Every `record_*` checks the claim in its UPDATE's condition, which READ
        // COMMITTED evaluates again on the newest row after waiting for a lock on it.
        Ok(self.conn()?.execute(
            "UPDATE feeds SET next_poll_at = $4, last_poll_at = $3, last_success_at = $3,
             last_status = 'not-modified', last_error = NULL, last_error_kind = NULL,
             consecutive_failures = 0, failing_since = NULL, claimed_until = NULL, claim = NULL,
             moved_to = $5
             WHERE id = $1 AND claim IS NOT DISTINCT FROM $2",
            &[
                &feed.id,
                &feed.claim,
                &now.timestamp(),
                &next_poll_at.timestamp(),
                &moved_to,
            ],
        )? == 1)
    }

    pub fn record_unchanged(&self, feed: &FeedToPoll, poll: &UnchangedPoll) -> Result<bool> {
        Ok(self.conn()?.execute(
            "UPDATE feeds SET etag = $2, last_modified = $3, next_poll_at = $5,
             last_poll_at = $4, last_success_at = $4, last_status = 'not-modified',
             last_error = NULL, last_error_kind = NULL, consecutive_failures = 0,
             failing_since = NULL, claimed_until = NULL, claim = NULL, moved_to = $6,
             last_full_fetch_at = CASE WHEN $7 THEN $4 ELSE last_full_fetch_at END
             WHERE id = $1 AND claim IS NOT DISTINCT FROM $8",
            &[
                &feed.id,
                &poll.etag,
                &poll.last_modified,
                &poll.now.timestamp(),
                &poll.next_poll_at.timestamp(),
                &poll.moved_to,
                &poll.full_fetch,
                &feed.claim,
            ],
        )? == 1)
    }

    pub fn record_failure(
        &self,
        feed: &FeedToPoll,
        now: DateTime<Utc>,
        kind: &str,
        error: &str,
        next_poll_at: DateTime<Utc>,
    ) -> Result<bool> {
        Ok(self.conn()?.execute(
            "UPDATE feeds SET next_poll_at = $5, last_poll_at = $2, last_status = 'error',
             last_error = $4, last_error_kind = $3, last_error_at = $2,
             failing_since = COALESCE(failing_since, $2),
             consecutive_failures = consecutive_failures + 1, claimed_until = NULL, claim = NULL
             WHERE id = $1 AND claim IS NOT DISTINCT FROM $6",
            &[
                &feed.id,
                &now.timestamp(),
                &kind,
                &error,
                &next_poll_at.timestamp(),
                &feed.claim,
            ],
        )? == 1)
    }

    pub fn record_gone(&self, feed: &FeedToPoll, now: DateTime<Utc>, error: &str) -> Result<bool> {
        Ok(self.conn()?.execute(
            "UPDATE feeds SET gone_at = $2, last_poll_at = $2, last_status = 'gone',
             last_error = $3, last_error_kind = 'gone', last_error_at = $2,
             failing_since = COALESCE(failing_since, $2),
             consecutive_failures = consecutive_failures + 1, claimed_until = NULL, claim = NULL
             WHERE id = $1 AND claim IS NOT DISTINCT FROM $4",
            &[&feed.id, &now.timestamp(), &error, &feed.claim],
        )? == 1)
    }

    pub fn renew_feed_claim(
        &self,
        feed: &FeedToPoll,
        now: DateTime<Utc>,
        lease: Duration,
    ) -> Result<bool> {
        Ok(self.conn()?.execute(
            "UPDATE feeds SET claimed_until = $3 WHERE id = $1 AND claim IS NOT DISTINCT FROM $2",
            &[
                &feed.id,
                &feed.claim,
                &(now.timestamp() + lease_secs(lease)),
            ],
        )? == 1)
    }

    pub fn claims_held(&self, now: DateTime<Utc>) -> Result<(usize, Option<DateTime<Utc>>)> {
        let now_s = now.timestamp();
        let held = self
            .conn()?
            .query(
                "SELECT f.claimed_by, i.seen_at, f.claimed_until FROM feeds f
                 LEFT JOIN instances i ON i.id = f.claimed_by
                 WHERE f.active AND f.gone_at IS NULL AND f.claimed_until > $1",
                &[&now_s],
            )?
            .iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?)))
            .collect::<Result<Vec<_>>>()?;
        Ok(crate::store::cluster::live_claims(held, now_s))
    }

    pub fn release_claim(&self, feed: &FeedToPoll) -> Result<()> {
        self.conn()?.execute(
            "UPDATE feeds SET claimed_until = NULL, claim = NULL
             WHERE id = $1 AND claim IS NOT DISTINCT FROM $2",
            &[&feed.id, &feed.claim],
        )?;
        Ok(())
    }

    pub fn poll_no_later_than(&self, feed_id: &str, latest: DateTime<Utc>) -> Result<bool> {
        let changed = self.conn()?.execute(
            "UPDATE feeds SET next_poll_at = $2
             WHERE id = $1 AND next_poll_at > $2 AND consecutive_failures = 0",
            &[&feed_id, &latest.timestamp()],
        )?;
        Ok(changed > 0)
    }

    pub fn last_poll_at(&self, feed_id: &str) -> Result<Option<DateTime<Utc>>> {
        let row = self
            .conn()?
            .query_opt("SELECT last_poll_at FROM feeds WHERE id = $1", &[&feed_id])?;
        match row {
            Some(r) => time_opt(r.try_get(0)?),
            None => Ok(None),
        }
    }

    pub fn consecutive_failures(&self, feed_id: &str) -> Result<u32> {
        let row = self.conn()?.query_opt(
            "SELECT consecutive_failures FROM feeds WHERE id = $1",
            &[&feed_id],
        )?;
        match row {
            Some(r) => count(r.try_get::<_, i32>(0)?),
            None => Ok(0),
        }
    }

    pub fn feed_statuses(&self) -> Result<Vec<FeedStatus>> {
        // `COLLATE "C"`: byte order, as SQLite sorts text, whatever the database's locale.
        let rows = self.conn()?.query(
            "SELECT f.id, f.name, f.url, f.active, f.last_status, f.last_error, f.last_error_kind,
                    f.consecutive_failures, f.last_success_at, f.next_poll_at,
                    (SELECT COUNT(*) FROM items i WHERE i.feed_id = f.id),
                    f.last_error_at, f.last_poll_at, f.moved_to, f.gone_at, f.repairs,
                    f.claimed_by, f.claimed_at, f.claimed_until
             FROM feeds f ORDER BY f.active DESC, f.id COLLATE \"C\"",
            &[],
        )?;
        rows.iter()
            .map(|r| {
                Ok(FeedStatus {
                    id: r.try_get(0)?,
                    name: r.try_get(1)?,
                    url: r.try_get(2)?,
                    active: r.try_get(3)?,
                    last_status: r.try_get(4)?,
                    last_error: r.try_get(5)?,
                    last_error_kind: r.try_get(6)?,
                    consecutive_failures: count(r.try_get::<_, i32>(7)?)?,
                    last_success_at: time_opt(r.try_get(8)?)?,
                    next_poll_at: time(r.try_get(9)?)?,
                    items: r.try_get(10)?,
                    last_error_at: time_opt(r.try_get(11)?)?,
                    last_poll_at: time_opt(r.try_get(12)?)?,
                    moved_to: r.try_get(13)?,
                    gone: r.try_get::<_, Option<i64>>(14)?.is_some(),
                    repairs: r
                        .try_get::<_, Option<String>>(15)?
                        .map(|s| s.lines().map(str::to_string).collect())
                        .unwrap_or_default(),
                    articles: ArticleCounts::default(),
                    claim: match (
                        r.try_get::<_, Option<String>>(16)?,
                        time_opt(r.try_get(17)?)?,
                        time_opt(r.try_get(18)?)?,
                    ) {
                        (Some(by), Some(since), Some(until)) => {
                            Some(crate::store::FeedClaim { by, since, until })
                        }
                        _ => None,
                    },
                })
            })
            .collect()
    }

    pub fn failing_feeds(&self, min_failures: u32) -> Result<Vec<FailingFeed>> {
        let rows = self.conn()?.query(
            "SELECT name, COALESCE(failing_since, last_error_at, 0), COALESCE(last_error, '')
             FROM feeds
             WHERE active AND (consecutive_failures >= $1::BIGINT OR gone_at IS NOT NULL)
             ORDER BY name COLLATE \"C\"",
            &[&i64::from(min_failures)],
        )?;
        rows.iter()
            .map(|r| {
                Ok(FailingFeed {
                    name: r.try_get(0)?,
                    since: time(r.try_get(1)?)?,
                    error: r.try_get(2)?,
                })
            })
            .collect()
    }
}
