//! Sign-ups from the web: recorded within their limits, confirmed into subscriptions.

use super::*;

impl Sqlite {
    pub fn create_signup(&self, signup: &Signup) -> Result<SignupId> {
        let conn = self.conn();
        conn.execute(
            "INSERT INTO signups (email, queries, frequency, timezone, client, created_at, locale)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![
                signup.email,
                signup.queries.join("\n"),
                signup.frequency,
                signup.timezone,
                signup.client,
                signup.created_at.timestamp(),
                signup.locale,
            ],
        )?;
        Ok(SignupId(conn.last_insert_rowid()))
    }

    pub fn recent_signups(
        &self,
        email: &str,
        client: &str,
        since: DateTime<Utc>,
    ) -> Result<(u32, u32)> {
        Ok(self.conn().query_row(
            "SELECT (SELECT COUNT(*) FROM signups WHERE email = ?1 AND created_at >= ?3),
                    (SELECT COUNT(*) FROM signups WHERE client = ?2 AND created_at >= ?3)",
            params![email, client, since.timestamp()],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?)
    }

    pub fn signup(&self, id: SignupId) -> Result<Option<Signup>> {
        Ok(self
            .conn()
            .query_row(
                "SELECT email, queries, frequency, timezone, client, created_at, confirmed_at,
                        locale
                 FROM signups WHERE id = ?1",
                [id],
                |r| {
                    Ok(Signup {
                        email: r.get(0)?,
                        queries: r.get::<_, String>(1)?.lines().map(str::to_string).collect(),
                        frequency: r.get(2)?,
                        timezone: r.get(3)?,
                        client: r.get(4)?,
                        created_at: time(r, 5)?,
                        confirmed_at: time_opt(r, 6)?,
                        locale: r.get(7)?,
                    })
                },
            )
            .optional()?)
    }

    pub fn confirm_signup(
        &self,
        id: SignupId,
        schedule: Schedule,
        timezone: Tz,
        keep: impl Fn(&str) -> bool,
        now: DateTime<Utc>,
    ) -> Result<SubscriberId> {
        let signup = self.signup(id)?.context("no such sign-up")?;
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        for query in signup.queries.iter().filter(|q| keep(q)) {
            super::subscriptions::add_subscription_in(
                &tx,
                &signup.email,
                query,
                schedule,
                timezone,
                now,
            )?;
        }
        tx.execute(
            "UPDATE signups SET confirmed_at = COALESCE(confirmed_at, ?2) WHERE id = ?1",
            params![id, now.timestamp()],
        )?;
        // The language they signed up in is their digests' from now on.
        tx.execute(
            "UPDATE subscribers SET locale = ?2 WHERE email = ?1",
            params![signup.email, signup.locale],
        )?;
        let subscriber = tx
            .query_row(
                "SELECT id FROM subscribers WHERE email = ?1",
                params![signup.email],
                |r| r.get(0),
            )
            .optional()?
            .context("confirming added no search and there is no such subscriber")?;
        tx.commit()?;
        Ok(subscriber)
    }

    pub fn record_signup(
        &self,
        signup: &Signup,
        limits: SignupLimits,
        message_domain: &str,
        confirmation: impl FnOnce(SignupId) -> Result<(String, String, String)>,
    ) -> Result<SignupAdmission> {
        let now = signup.created_at;
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let (by_address, by_client): (u32, u32) = tx.query_row(
            "SELECT (SELECT COUNT(*) FROM signups WHERE email = ?1 AND created_at >= ?3),
                    (SELECT COUNT(*) FROM signups WHERE client = ?2 AND created_at >= ?4)",
            params![
                signup.email,
                signup.client,
                (now - chrono::Duration::days(1)).timestamp(),
                (now - chrono::Duration::hours(1)).timestamp(),
            ],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        if by_client >= limits.per_client_per_hour {
            return Ok(SignupAdmission::TooManyFromClient);
        }
        tx.execute(
            "INSERT INTO signups (email, queries, frequency, timezone, client, created_at, locale)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![
                signup.email,
                signup.queries.join("\n"),
                signup.frequency,
                signup.timezone,
                signup.client,
                now.timestamp(),
                signup.locale,
            ],
        )?;
        let id = SignupId(tx.last_insert_rowid());
        let mailed = by_address < limits.per_address_per_day;
        if mailed {
            let (subject, text, html) = confirmation(id)?;
            queue_message_in(
                &tx,
                &signup.email,
                &subject,
                &text,
                &html,
                message_domain,
                now,
            )?;
        }
        tx.commit()?;
        Ok(SignupAdmission::Recorded { id, mailed })
    }
}
