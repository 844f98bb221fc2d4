//! Sign-ups from the web: recorded within their limits, confirmed into subscriptions.

use super::*;

const SIGNUP_COLUMNS: &str =
    "email, queries, frequency, timezone, client, created_at, confirmed_at, locale";

fn signup_row(r: &Row) -> Result<Signup> {
    Ok(Signup {
        email: r.try_get(0)?,
        queries: r
            .try_get::<_, String>(1)?
            .lines()
            .map(str::to_string)
            .collect(),
        frequency: r.try_get(2)?,
        timezone: r.try_get(3)?,
        client: r.try_get(4)?,
        created_at: time(r.try_get(5)?)?,
        confirmed_at: time_opt(r.try_get(6)?)?,
        locale: r.try_get(7)?,
    })
}

/// Inserts `signup` as it is (created at `signup.created_at`) and returns its id.
fn insert_signup(tx: &mut impl GenericClient, signup: &Signup) -> Result<SignupId> {
    Ok(tx
        .query_one(
            "INSERT INTO signups (email, queries, frequency, timezone, client, created_at, locale)
             VALUES ($1, $2, $3, $4, $5, $6, $7)
             RETURNING id",
            &[
                &signup.email,
                &signup.queries.join("\n"),
                &signup.frequency,
                &signup.timezone,
                &signup.client,
                &signup.created_at.timestamp(),
                &signup.locale,
            ],
        )?
        .try_get(0)?)
}

/// Sign-ups since `address_since` for this address (ASCII case folded), and since
/// `client_since` from this client.
fn count_signups(
    tx: &mut impl GenericClient,
    email: &str,
    client: &str,
    address_since: i64,
    client_since: i64,
) -> Result<(u32, u32)> {
    let row = tx.query_one(
        "SELECT (SELECT COUNT(*) FROM signups
                 WHERE lower(email COLLATE \"C\") = lower($1 COLLATE \"C\")
                   AND created_at >= $3),
                (SELECT COUNT(*) FROM signups WHERE client = $2 AND created_at >= $4)",
        &[&email, &client, &address_since, &client_since],
    )?;
    Ok((
        count(row.try_get::<_, i64>(0)?)?,
        count(row.try_get::<_, i64>(1)?)?,
    ))
}

impl Postgres {
    pub fn create_signup(&self, signup: &Signup) -> Result<SignupId> {
        insert_signup(&mut *self.conn()?, signup)
    }

    pub fn recent_signups(
        &self,
        email: &str,
        client: &str,
        since: DateTime<Utc>,
    ) -> Result<(u32, u32)> {
        let since = since.timestamp();
        count_signups(&mut *self.conn()?, email, client, since, since)
    }

    pub fn signup(&self, id: SignupId) -> Result<Option<Signup>> {
        self.conn()?
            .query_opt(
                &format!("SELECT {SIGNUP_COLUMNS} FROM signups WHERE id = $1"),
                &[&id],
            )?
            .map(|r| signup_row(&r))
            .transpose()
    }

    pub fn confirm_signup(
        &self,
        id: SignupId,
        schedule: Schedule,
        timezone: Tz,
        keep: impl Fn(&str) -> bool,
        now: DateTime<Utc>,
    ) -> Result<SubscriberId> {
        let mut conn = self.conn()?;
        let mut tx = conn.transaction()?;
        // The sign-up's row is locked to the end: two confirmations of one sign-up (a
        // double click, two instances) take turns, as under SQLite's one writer.
        let signup = tx
            .query_opt(
                &format!("SELECT {SIGNUP_COLUMNS} FROM signups WHERE id = $1 FOR UPDATE"),
                &[&id],
            )?
            .map(|r| signup_row(&r))
            .transpose()?
            .context("no such sign-up")?;
        for query in signup.queries.iter().filter(|q| keep(q)) {
            super::subscriptions::add_subscription_in(
                &mut tx,
                &signup.email,
                query,
                schedule,
                timezone,
                now,
            )?;
        }
        tx.execute(
            "UPDATE signups SET confirmed_at = COALESCE(confirmed_at, $2) WHERE id = $1",
            &[&id, &now.timestamp()],
        )?;
        // The language they signed up in is their digests' from now on.
        tx.execute(
            "UPDATE subscribers SET locale = $2
             WHERE lower(email COLLATE \"C\") = lower($1 COLLATE \"C\")",
            &[&signup.email, &signup.locale],
        )?;
        let subscriber: SubscriberId = tx
            .query_opt(
                "SELECT id FROM subscribers
                 WHERE lower(email COLLATE \"C\") = lower($1 COLLATE \"C\")",
                &[&signup.email],
            )?
            .context("confirming added no search and there is no such subscriber")?
            .try_get(0)?;
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
        let mut conn = self.conn()?;
        let mut tx = conn.transaction()?;
        // Counting and inserting are one step for the whole cluster only if requests from
        // one client, and for one address, take turns: an advisory lock on each, held to
        // the end (client first, then address, in every transaction: no deadlock).
        tx.execute(
            "SELECT pg_advisory_xact_lock($1, hashtext($2))",
            &[&SIGNUP_CLIENT_LOCK, &signup.client],
        )?;
        tx.execute(
            "SELECT pg_advisory_xact_lock($1, hashtext(lower($2 COLLATE \"C\")))",
            &[&SIGNUP_ADDRESS_LOCK, &signup.email],
        )?;
        let (by_address, by_client) = count_signups(
            &mut tx,
            &signup.email,
            &signup.client,
            (now - chrono::Duration::days(1)).timestamp(),
            (now - chrono::Duration::hours(1)).timestamp(),
        )?;
        if by_client >= limits.per_client_per_hour {
            return Ok(SignupAdmission::TooManyFromClient);
        }
        let id = insert_signup(&mut tx, signup)?;
        let mailed = by_address < limits.per_address_per_day;
        if mailed {
            let (subject, text, html) = confirmation(id)?;
            queue_message_in(
                &mut tx,
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
