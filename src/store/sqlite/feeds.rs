//! Feeds: the configured list, claims on feeds being polled, what each poll found.

use super::*;

impl Sqlite {
    pub fn sync_feeds(&self, feeds: &[FeedConfig]) -> Result<()> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        sync_feeds_in(&tx, feeds)?;
        tx.commit()?;
        Ok(())
    }

    pub fn sync_feed_list(
        &self,
        feeds: &[FeedConfig],
        version: &FeedListVersion,
    ) -> Result<FeedListSync> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let stored: Option<(String, i64, String)> = tx
            .query_row(
                "SELECT fingerprint, written_at, written_by FROM feed_list WHERE id = 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()?;
        if let Some(kept) = FeedListSync::kept(stored, version)? {
            return Ok(kept);
        }
        sync_feeds_in(&tx, feeds)?;
        tx.execute(
            "INSERT INTO feed_list (id, fingerprint, written_at, written_by) VALUES (1, ?1, ?2, ?3)
             ON CONFLICT (id) DO UPDATE SET fingerprint = excluded.fingerprint,
                 written_at = excluded.written_at, written_by = excluded.written_by",
            params![
                version.fingerprint,
                version.written_at.timestamp_millis(),
                version.written_by
            ],
        )?;
        tx.commit()?;
        Ok(FeedListSync::Applied)
    }
}

/// Makes the feeds table agree with `feeds` (see [`Store::sync_feeds`]).
fn sync_feeds_in(tx: &rusqlite::Transaction<'_>, feeds: &[FeedConfig]) -> Result<()> {
    {
        tx.execute("UPDATE feeds SET active = 0", [])?;
        for feed in feeds {
            let url = feed.url.as_str();
            let tags = feed.tags.join(",");
            let interval = i64::try_from(feed.interval.as_secs()).unwrap_or(i64::MAX);
            let options = feed.options.to_json();
            let old_url: Option<String> = tx
                .query_row("SELECT url FROM feeds WHERE id = ?1", [&feed.id], |r| {
                    r.get(0)
                })
                .optional()?;
            match old_url {
                None => {
                    tx.execute(
                        "INSERT INTO feeds (id, url, name, tags, interval_secs, options)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                        params![feed.id, url, feed.name, tags, interval, options],
                    )?;
                }
                Some(old) if old != url => {
                    tx.execute(
                        "UPDATE feeds SET url = ?2, name = ?3, tags = ?4, interval_secs = ?5, options = ?6,
                         active = 1, etag = NULL,
                         last_modified = NULL, baseline_at = NULL, next_poll_at = 0,
                         consecutive_failures = 0, gone_at = NULL, moved_to = NULL,
                         last_full_fetch_at = NULL, last_status = NULL, failing_since = NULL,
                         body_hash = NULL, page_snapshot = NULL,
                         -- A poll of the old URL still in flight holds a claim on what is
                         -- now another feed: void it, so that poll records nothing.
                         claim = NULL, claimed_until = NULL
                         WHERE id = ?1",
                        params![feed.id, url, feed.name, tags, interval, options],
                    )?;
                }
                Some(_) => {
                    tx.execute(
                        "UPDATE feeds SET name = ?2, tags = ?3, interval_secs = ?4, options = ?5,
                         active = 1,
                         -- Read another way: what was remembered of the page no longer
                         -- compares (nor does the body hash stand for the same items).
                         page_snapshot = CASE WHEN options = ?5 THEN page_snapshot END,
                         body_hash = CASE WHEN options = ?5 THEN body_hash END,
                         -- and its next poll is a baseline again: what the page holds
                         -- now, read the new way, is not news.
                         baseline_at = CASE WHEN options = ?5 THEN baseline_at END
                         WHERE id = ?1",
                        params![feed.id, feed.name, tags, interval, options],
                    )?;
                }
            }
        }
    }
    Ok(())
}

impl Sqlite {
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
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        // Claims whose owner is gone are taken over at once, not after their lease.
        let gone = {
            let mut stmt = tx.prepare_cached(
                "SELECT DISTINCT f.claimed_by, i.seen_at FROM feeds f
                 LEFT JOIN instances i ON i.id = f.claimed_by
                 WHERE f.claimed_until > ?1 AND f.claimed_by IS NOT NULL",
            )?;
            let owners = stmt.query_map([now_s], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, Option<i64>>(1)?))
            })?;
            let mut gone = Vec::new();
            for owner in owners {
                let (by, seen_at) = owner?;
                if crate::store::cluster::owner_is_gone(&by, seen_at, now_s) {
                    gone.push(by);
                }
            }
            serde_json::to_string(&gone)?
        };
        let feeds = {
            let mut stmt = tx.prepare(
                "UPDATE feeds SET claimed_until = ?2, claim = hex(randomblob(12)),
                                  claimed_by = ?6, claimed_at = ?1
                 WHERE id IN (SELECT id FROM feeds
                              WHERE active = 1 AND gone_at IS NULL
                                AND (claimed_until IS NULL OR claimed_until <= ?1
                                     OR claimed_by IN (SELECT value FROM json_each(?5)))
                                AND (?3 = 0 OR next_poll_at <= ?1)
                              ORDER BY next_poll_at LIMIT ?4)
                 RETURNING id, url, etag, last_modified, baseline_at, last_full_fetch_at,
                           consecutive_failures, body_hash, claim, tags, interval_secs, options,
                           page_snapshot",
            )?;
            let this = &Instance::this().id;
            stmt.query_map(params![now_s, until, only_due, limit, gone, this], |r| {
                Ok(FeedToPoll {
                    id: r.get(0)?,
                    url: r.get(1)?,
                    etag: r.get(2)?,
                    last_modified: r.get(3)?,
                    baseline_at: time_opt(r, 4)?,
                    last_full_fetch_at: time_opt(r, 5)?,
                    consecutive_failures: r.get(6)?,
                    body_hash: r.get(7)?,
                    claim: r.get(8)?,
                    tags: split_tags(&r.get::<_, String>(9)?),
                    interval: r
                        .get::<_, Option<i64>>(10)?
                        .and_then(|s| u64::try_from(s).ok())
                        .map(Duration::from_secs),
                    options: FeedOptions::from_json(&r.get::<_, String>(11)?),
                    snapshot: r.get(12)?,
                })
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?
        };
        tx.commit()?;
        Ok(feeds)
    }

    pub fn record_not_modified(
        &self,
        feed: &FeedToPoll,
        now: DateTime<Utc>,
        next_poll_at: DateTime<Utc>,
        moved_to: Option<&str>,
    ) -> Result<bool> {
        Ok(self
            .conn()
            .prepare_cached(
                "UPDATE feeds SET next_poll_at = ?4, last_poll_at = ?3, last_success_at = ?3,
             last_status = 'not-modified', last_error = NULL, last_error_kind = NULL,
             consecutive_failures = 0, failing_since = NULL, claimed_until = NULL, claim = NULL,
             moved_to = ?5
             WHERE id = ?1 AND claim IS ?2",
            )?
            .execute(params![
                feed.id,
                feed.claim,
                now.timestamp(),
                next_poll_at.timestamp(),
                moved_to
            ])?
            == 1)
    }

    pub fn record_unchanged(&self, feed: &FeedToPoll, poll: &UnchangedPoll) -> Result<bool> {
        let now = poll.now.timestamp();
        Ok(self
            .conn()
            .prepare_cached(
            "UPDATE feeds SET etag = ?2, last_modified = ?3, next_poll_at = ?5, last_poll_at = ?4,
             last_success_at = ?4, last_status = 'not-modified', last_error = NULL,
             last_error_kind = NULL, consecutive_failures = 0, failing_since = NULL,
             claimed_until = NULL, claim = NULL, moved_to = ?6,
             last_full_fetch_at = CASE WHEN ?7 THEN ?4 ELSE last_full_fetch_at END
             WHERE id = ?1 AND claim IS ?8",
            )?
            .execute(params![
                feed.id,
                poll.etag,
                poll.last_modified,
                now,
                poll.next_poll_at.timestamp(),
                poll.moved_to,
                poll.full_fetch,
                feed.claim,
            ])? == 1)
    }

    pub fn record_failure(
        &self,
        feed: &FeedToPoll,
        now: DateTime<Utc>,
        kind: &str,
        error: &str,
        next_poll_at: DateTime<Utc>,
    ) -> Result<bool> {
        Ok(self
            .conn()
            .prepare_cached(
                "UPDATE feeds SET next_poll_at = ?5, last_poll_at = ?2, last_status = 'error',
             last_error = ?4, last_error_kind = ?3, last_error_at = ?2,
             failing_since = COALESCE(failing_since, ?2),
             consecutive_failures = consecutive_failures + 1, claimed_until = NULL, claim = NULL
             WHERE id = ?1 AND claim IS ?6",
            )?
            .execute(params![
                feed.id,
                now.timestamp(),
                kind,
                error,
                next_poll_at.timestamp(),
                feed.claim
            ])?
            == 1)
    }

    pub fn record_gone(&self, feed: &FeedToPoll, now: DateTime<Utc>, error: &str) -> Result<bool> {
        Ok(self
            .conn()
            .prepare_cached(
                "UPDATE feeds SET gone_at = ?2, last_poll_at = ?2, last_status = 'gone',
             last_error = ?3, last_error_kind = 'gone', last_error_at = ?2,
             failing_since = COALESCE(failing_since, ?2),
             consecutive_failures = consecutive_failures + 1, claimed_until = NULL, claim = NULL
             WHERE id = ?1 AND claim IS ?4",
            )?
            .execute(params![feed.id, now.timestamp(), error, feed.claim])?
            == 1)
    }

    pub fn renew_feed_claim(
        &self,
        feed: &FeedToPoll,
        now: DateTime<Utc>,
        lease: Duration,
    ) -> Result<bool> {
        Ok(self
            .conn()
            .prepare_cached("UPDATE feeds SET claimed_until = ?3 WHERE id = ?1 AND claim IS ?2")?
            .execute(params![
                feed.id,
                feed.claim,
                now.timestamp() + lease_secs(lease)
            ])?
            == 1)
    }

    pub fn claims_held(&self, now: DateTime<Utc>) -> Result<(usize, Option<DateTime<Utc>>)> {
        let now_s = now.timestamp();
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT f.claimed_by, i.seen_at, f.claimed_until FROM feeds f
             LEFT JOIN instances i ON i.id = f.claimed_by
             WHERE f.active = 1 AND f.gone_at IS NULL AND f.claimed_until > ?1",
        )?;
        let claims = stmt.query_map([now_s], |r| {
            Ok((
                r.get::<_, Option<String>>(0)?,
                r.get::<_, Option<i64>>(1)?,
                r.get::<_, i64>(2)?,
            ))
        })?;
        let mut held = Vec::new();
        for claim in claims {
            held.push(claim?);
        }
        Ok(crate::store::cluster::live_claims(held, now_s))
    }

    pub fn release_claim(&self, feed: &FeedToPoll) -> Result<()> {
        self.conn()
            .prepare_cached(
                "UPDATE feeds SET claimed_until = NULL, claim = NULL WHERE id = ?1 AND claim IS ?2",
            )?
            .execute(params![feed.id, feed.claim])?;
        Ok(())
    }

    pub fn poll_no_later_than(&self, feed_id: &str, latest: DateTime<Utc>) -> Result<bool> {
        let changed = self
            .conn()
            .prepare_cached(
                "UPDATE feeds SET next_poll_at = ?2
             WHERE id = ?1 AND next_poll_at > ?2 AND consecutive_failures = 0",
            )?
            .execute(params![feed_id, latest.timestamp()])?;
        Ok(changed > 0)
    }

    pub fn last_poll_at(&self, feed_id: &str) -> Result<Option<DateTime<Utc>>> {
        Ok(self
            .conn()
            .query_row(
                "SELECT last_poll_at FROM feeds WHERE id = ?1",
                [feed_id],
                |r| time_opt(r, 0),
            )
            .optional()?
            .flatten())
    }

    pub fn consecutive_failures(&self, feed_id: &str) -> Result<u32> {
        Ok(self
            .conn()
            .query_row(
                "SELECT consecutive_failures FROM feeds WHERE id = ?1",
                [feed_id],
                |r| r.get(0),
            )
            .optional()?
            .unwrap_or(0))
    }

    pub fn feed_statuses(&self) -> Result<Vec<FeedStatus>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT f.id, f.name, f.url, f.active, f.last_status, f.last_error, f.last_error_kind,
                    f.consecutive_failures, f.last_success_at, f.next_poll_at,
                    (SELECT COUNT(*) FROM items i WHERE i.feed_id = f.id),
                    f.last_error_at, f.last_poll_at, f.moved_to, f.gone_at, f.repairs,
                    f.claimed_by, f.claimed_at, f.claimed_until
             FROM feeds f ORDER BY f.active DESC, f.id",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok(FeedStatus {
                id: r.get(0)?,
                name: r.get(1)?,
                url: r.get(2)?,
                active: r.get(3)?,
                last_status: r.get(4)?,
                last_error: r.get(5)?,
                last_error_kind: r.get(6)?,
                consecutive_failures: r.get(7)?,
                last_success_at: time_opt(r, 8)?,
                next_poll_at: time(r, 9)?,
                items: r.get(10)?,
                last_error_at: time_opt(r, 11)?,
                last_poll_at: time_opt(r, 12)?,
                moved_to: r.get(13)?,
                gone: r.get::<_, Option<i64>>(14)?.is_some(),
                repairs: r
                    .get::<_, Option<String>>(15)?
                    .map(|s| s.lines().map(str::to_string).collect())
                    .unwrap_or_default(),
                articles: ArticleCounts::default(),
                claim: match (
                    r.get::<_, Option<String>>(16)?,
                    time_opt(r, 17)?,
                    time_opt(r, 18)?,
                ) {
                    (Some(by), Some(since), Some(until)) => Some(FeedClaim { by, since, until }),
                    _ => None,
                },
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }

    // ---- subscribers ---------------------------------------------------------------------

    pub fn failing_feeds(&self, min_failures: u32) -> Result<Vec<FailingFeed>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT name, COALESCE(failing_since, last_error_at, 0), COALESCE(last_error, '')
             FROM feeds
             WHERE active = 1 AND (consecutive_failures >= ?1 OR gone_at IS NOT NULL)
             ORDER BY name",
        )?;
        let rows = stmt.query_map([min_failures], |r| {
            Ok(FailingFeed {
                name: r.get(0)?,
                since: time(r, 1)?,
                error: r.get(2)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }
}
