//! Sign-ups from the web: recorded within their limits, confirmed into subscriptions.

use super::*;

impl Store {
    /// Records a sign-up as it is, without limits or mail (tests, tools); the web uses
    /// [`Store::record_signup`].
    pub async fn create_signup(&self, signup: &Signup) -> Result<SignupId> {
        let signup = signup.clone();
        run!(self, db => db.create_signup(&signup))
    }

    /// Sign-ups since `since` for this address, and from this client.
    pub async fn recent_signups(
        &self,
        email: &str,
        client: &str,
        since: DateTime<Utc>,
    ) -> Result<(u32, u32)> {
        let email = email.to_owned();
        let client = client.to_owned();
        run!(self, db => db.recent_signups(&email, &client, since))
    }

    pub async fn signup(&self, id: SignupId) -> Result<Option<Signup>> {
        run!(self, db => db.signup(id))
    }

    /// Confirms a sign-up: the subscriber (created, or their schedule updated) gets its
    /// queries that `keep` accepts (the others could no longer match anything), in one
    /// transaction with marking it confirmed. Returns the subscriber id.
    pub async fn confirm_signup(
        &self,
        id: SignupId,
        schedule: Schedule,
        timezone: Tz,
        keep: impl Fn(&str) -> bool + Send + 'static,
        now: DateTime<Utc>,
    ) -> Result<SubscriberId> {
        run!(self, db => db.confirm_signup(id, schedule, timezone, keep, now))
    }

    /// A sign-up from the web, within its limits, in one transaction (so requests sent
    /// at the same moment cannot all pass the count): refused when `signup.client` made
    /// `limits.per_client_per_hour` sign-ups in the last hour; otherwise recorded (it
    /// counts either way) and, while its address was asked for fewer than
    /// `limits.per_address_per_day` times in the last day, the confirmation mail that
    /// `confirmation(id)` renders as (subject, text, html) is queued with it.
    pub async fn record_signup(
        &self,
        signup: &Signup,
        limits: SignupLimits,
        message_domain: &str,
        confirmation: impl FnOnce(SignupId) -> Result<(String, String, String)> + Send + 'static,
    ) -> Result<SignupAdmission> {
        let signup = signup.clone();
        let message_domain = message_domain.to_owned();
        run!(self, db => db.record_signup(&signup, limits, &message_domain, confirmation))
    }
}
