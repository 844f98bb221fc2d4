//! Signed tokens for links in mail: HMAC-SHA256 over what the link may do and for whom,
//! with a key that never leaves the server.
//!
//! The key comes from `TIDINGS_SECRET` or from the secret file, which is created with
//! 32 random bytes and mode 0600 on first run. A token names the subscriber id and is
//! bound to their address, so it cannot be forged, moved to another subscriber, or reused
//! after the address is removed and its id given to someone else.

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::Path;

use anyhow::{Context, Result, bail};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use url::Url;

use crate::ids::{SignupId, SubscriberId, SubscriptionId};

/// Environment variable that, when set, holds the signing secret.
pub const SECRET_ENV: &str = "TIDINGS_SECRET";

/// Hex digits of the MAC kept in a token (128 bits).
const MAC_HEX: usize = 32;

#[derive(Clone)]
pub struct Signer {
    key: Vec<u8>,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Signer(..)")
    }
}

impl Signer {
    pub fn new(key: &[u8]) -> Result<Signer> {
        if key.len() < 16 {
            bail!("the signing secret must be at least 16 bytes");
        }
        Ok(Signer { key: key.to_vec() })
    }

    /// The key from `TIDINGS_SECRET`, if set.
    pub fn from_env() -> Option<Result<Signer>> {
        let secret = std::env::var(SECRET_ENV).ok()?;
        Some(
            Signer::new(secret.trim().as_bytes())
                .with_context(|| format!("{SECRET_ENV} is too short")),
        )
    }

    /// The secret in the file at `path`, if there is one.
    pub fn read_file(path: &Path) -> Result<Option<String>> {
        match std::fs::read_to_string(path) {
            Ok(secret) => Ok(Some(secret.trim().to_string())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("reading secret file {}", path.display())),
        }
    }

    /// The key from `TIDINGS_SECRET`, else from `path`, which is created (0600, 32
    /// random bytes as hex) if it does not exist yet.
    pub fn load_or_create(path: &Path) -> Result<Signer> {
        if let Some(signer) = Signer::from_env() {
            return signer;
        }
        match std::fs::read_to_string(path) {
            Ok(secret) => Signer::new(secret.trim().as_bytes())
                .with_context(|| format!("secret file {}", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => create_secret(path),
            Err(e) => Err(e).with_context(|| format!("reading secret file {}", path.display())),
        }
    }

    /// The token for `purpose` (e.g. `unsubscribe`) for subscriber `id` at `email`:
    /// `<id>.<mac>`.
    pub fn token(&self, purpose: &str, id: i64, email: &str) -> String {
        format!("{id}.{}", &self.mac_hex(purpose, id, email)[..MAC_HEX])
    }

    /// The subscriber id a token names, if it is spelled exactly as [`Signer::token`]
    /// writes it, `lookup` (id → current address) agrees and the MAC is right. Comparison
    /// is constant-time.
    pub fn verify(
        &self,
        purpose: &str,
        token: &str,
        lookup: impl FnOnce(i64) -> Option<String>,
    ) -> Option<i64> {
        let (_, mac) = token.split_once('.')?;
        let id = token_id(token)?;
        let email = lookup(id)?;
        let expected = self.mac_hex(purpose, id, &email);
        let ok = mac.len() == MAC_HEX
            && mac
                .bytes()
                .zip(expected.bytes())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0;
        ok.then_some(id)
    }

    fn mac_hex(&self, purpose: &str, id: i64, email: &str) -> String {
        // The key is never empty (checked in `new`), and HMAC takes keys of any length.
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.key)
            .unwrap_or_else(|_| unreachable!("HMAC accepts any key length"));
        mac.update(purpose.as_bytes());
        mac.update(b"\0");
        mac.update(id.to_string().as_bytes());
        mac.update(b"\0");
        mac.update(email.to_lowercase().as_bytes());
        mac.finalize()
            .into_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }
}

/// The id a token names, if spelled exactly as [`Signer::token`] writes it (`+7` and `07`
/// parse to 7 too, but only `7` is a token's spelling). Says nothing about the MAC: look
/// the record up by this id, then [`Signer::verify`] the token against it.
pub fn token_id(token: &str) -> Option<i64> {
    let (id_text, _) = token.split_once('.')?;
    let id: i64 = id_text.parse().ok()?;
    (id.to_string() == id_text).then_some(id)
}

/// The links mail carries, built from `[web].base_url` and signed tokens.
#[derive(Debug, Clone)]
pub struct Links {
    base_url: Url,
    signer: Signer,
}

impl Links {
    pub fn new(base_url: Url, signer: Signer) -> Links {
        Links { base_url, signer }
    }

    /// The same signing key with another public base URL (after a config reload).
    pub fn with_base_url(&self, base_url: Url) -> Links {
        Links {
            base_url,
            signer: self.signer.clone(),
        }
    }

    /// The path of `base_url`, ending in `/`: where the pages are for whoever follows a
    /// link (a proxy serving `https://x.org/tidings/` passes `/tidings/manage/…` here
    /// as `/manage/…`), so every link and form on a page starts with it.
    pub fn root(&self) -> &str {
        self.base_url.path()
    }

    /// The one-click unsubscribe token of a subscriber.
    pub fn unsubscribe_token(&self, id: SubscriberId, email: &str) -> String {
        self.signer.token(UNSUBSCRIBE, id.0, email)
    }

    /// `<base_url>/unsubscribe/<token>`: GET shows a confirm page, POST unsubscribes.
    pub fn unsubscribe_url(&self, id: SubscriberId, email: &str) -> String {
        self.url("unsubscribe", &self.unsubscribe_token(id, email))
    }

    /// The subscriber an unsubscribe token is for, if genuine.
    pub fn verify_unsubscribe(
        &self,
        token: &str,
        lookup: impl FnOnce(SubscriberId) -> Option<String>,
    ) -> Option<SubscriberId> {
        self.signer
            .verify(UNSUBSCRIBE, token, |id| lookup(SubscriberId(id)))
            .map(SubscriberId)
    }

    /// `<base_url>/manage/<token>`: the subscriber's own page (queries, schedule).
    pub fn manage_url(&self, id: SubscriberId, email: &str) -> String {
        self.url("manage", &self.signer.token(MANAGE, id.0, email))
    }

    /// The subscriber a manage token is for, if genuine.
    pub fn verify_manage(
        &self,
        token: &str,
        lookup: impl FnOnce(SubscriberId) -> Option<String>,
    ) -> Option<SubscriberId> {
        self.signer
            .verify(MANAGE, token, |id| lookup(SubscriberId(id)))
            .map(SubscriberId)
    }

    /// `<base_url>/feed/<token>`: an Atom feed of one subscription's matches. The token
    /// names the subscription and is bound to its subscriber's address.
    pub fn feed_url(&self, subscription_id: SubscriptionId, email: &str) -> String {
        self.url("feed", &self.signer.token(FEED, subscription_id.0, email))
    }

    /// `<base_url>/confirm/<token>`: confirms sign-up `signup_id` for `email`.
    pub fn confirm_url(&self, signup_id: SignupId, email: &str) -> String {
        self.url("confirm", &self.signer.token(CONFIRM, signup_id.0, email))
    }

    /// The sign-up a confirm token is for, if genuine (`lookup`: sign-up id → address).
    pub fn verify_confirm(
        &self,
        token: &str,
        lookup: impl FnOnce(SignupId) -> Option<String>,
    ) -> Option<SignupId> {
        self.signer
            .verify(CONFIRM, token, |id| lookup(SignupId(id)))
            .map(SignupId)
    }

    /// The anti-forgery value of the public sign-up form, issued at `now` (Unix seconds).
    pub fn form_token(&self, now: i64) -> String {
        self.signer.token(FORM, now, "")
    }

    /// Whether `value` is a sign-up form value issued at most `max_age_secs` before `now`.
    pub fn verify_form_token(&self, value: &str, now: i64, max_age_secs: i64) -> bool {
        self.signer
            .verify(FORM, value, |issued| {
                (issued <= now + 60 && now - issued <= max_age_secs).then(String::new)
            })
            .is_some()
    }

    /// The feed URL a valid feed token came from.
    pub fn feed_url_from_token(&self, token: &str) -> String {
        self.url("feed", token)
    }

    /// The subscription a feed token is for, if genuine (`lookup`: subscription id →
    /// its subscriber's address).
    pub fn verify_feed(
        &self,
        token: &str,
        lookup: impl FnOnce(SubscriptionId) -> Option<String>,
    ) -> Option<SubscriptionId> {
        self.signer
            .verify(FEED, token, |id| lookup(SubscriptionId(id)))
            .map(SubscriptionId)
    }

    /// The anti-forgery value the subscriber's forms carry: only a page rendered for
    /// them holds it, so another site cannot post on their behalf.
    pub fn csrf_token(&self, id: SubscriberId, email: &str) -> String {
        self.signer.token(CSRF, id.0, email)
    }

    /// Whether `value` is the subscriber's anti-forgery value.
    pub fn verify_csrf(&self, id: SubscriberId, email: &str, value: &str) -> bool {
        self.signer
            .verify(CSRF, value, |i| (i == id.0).then(|| email.to_string()))
            == Some(id.0)
    }

    fn url(&self, page: &str, token: &str) -> String {
        let mut url = self.base_url.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().push(page).push(token);
        }
        url.to_string()
    }
}

const UNSUBSCRIBE: &str = "unsubscribe";
const MANAGE: &str = "manage";
const CSRF: &str = "csrf";
const FEED: &str = "feed";
const CONFIRM: &str = "confirm";
const FORM: &str = "form";

/// 32 random bytes as hex: a new signing secret.
pub fn random_secret() -> Result<String> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| anyhow::anyhow!("no randomness for a secret: {e}"))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

fn create_secret(path: &Path) -> Result<Signer> {
    let secret = random_secret()?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path);
    match file {
        Ok(mut file) => {
            file.write_all(format!("{secret}\n").as_bytes())
                .and_then(|()| file.sync_all())
                .with_context(|| format!("writing secret file {}", path.display()))?;
            tracing::info!(path = %path.display(), "created a new signing secret");
            Signer::new(secret.as_bytes())
        }
        // Another process created it first: use theirs.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let secret = std::fs::read_to_string(path)
                .with_context(|| format!("reading secret file {}", path.display()))?;
            Signer::new(secret.trim().as_bytes())
        }
        Err(e) => Err(e).with_context(|| format!("creating secret file {}", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    #[test]
    fn tokens_verify_only_for_their_subscriber_purpose_and_key() {
        let signer = Signer::new(b"0123456789abcdef0123").unwrap();
        let token = signer.token("unsubscribe", 42, "Ana@Example.org");
        let ana = |id| (id == 42).then(|| "ana@example.org".to_string());
        assert_eq!(signer.verify("unsubscribe", &token, ana), Some(42));
        assert_eq!(signer.verify("manage", &token, ana), None, "other purpose");
        let other = Signer::new(b"another key, 16+ bytes").unwrap();
        assert_eq!(other.verify("unsubscribe", &token, ana), None, "other key");
        // Same id, different address (id reused after removal).
        assert_eq!(
            signer.verify("unsubscribe", &token, |_| Some("bo@example.org".into())),
            None
        );
        // Tampering with the id or the MAC.
        let (_, mac) = token.split_once('.').unwrap();
        let forged = format!("43.{mac}");
        let anyone = |_| Some("ana@example.org".to_string());
        assert_eq!(signer.verify("unsubscribe", &forged, anyone), None);
        let mut flipped = token.clone();
        let last = flipped.pop().unwrap();
        flipped.push(if last == '0' { '1' } else { '0' });
        assert_eq!(signer.verify("unsubscribe", &flipped, ana), None);
        for junk in ["", ".", "42", "42.", "x.y", &token[..token.len() - 1]] {
            assert_eq!(signer.verify("unsubscribe", junk, ana), None, "{junk:?}");
        }
    }

    /// A token has one spelling: the id exactly as issued, the MAC as 32 lowercase hex
    /// digits. Anything `i64::from_str` would also read (`+7`, `07`) is another spelling.
    #[test]
    fn only_the_canonical_spelling_of_a_token_verifies() {
        let signer = Signer::new(b"0123456789abcdef0123").unwrap();
        let token = signer.token("manage", 7, "a@x.example");
        let who = |_| Some("a@x.example".to_string());
        assert_eq!(signer.verify("manage", &token, who), Some(7));
        let mac = token.split_once('.').unwrap().1;
        for (case, spelling) in [
            ("plus sign", format!("+7.{mac}")),
            ("leading zero", format!("07.{mac}")),
            ("zeros", format!("0007.{mac}")),
            ("uppercase MAC", format!("7.{}", mac.to_uppercase())),
            ("space", format!(" 7.{mac}")),
            ("trailing dot", format!("{token}.")),
        ] {
            assert_eq!(signer.verify("manage", &spelling, who), None, "{case}");
        }
        let zero = signer.token("manage", 0, "a@x.example");
        assert_eq!(signer.verify("manage", &zero, who), Some(0));
        let zero_mac = zero.split_once('.').unwrap().1;
        for spelling in [format!("-0.{zero_mac}"), format!("+0.{zero_mac}")] {
            assert_eq!(signer.verify("manage", &spelling, who), None, "{spelling}");
        }
    }

    #[test]
    fn unsubscribe_urls_extend_the_base_path() {
        let signer = Signer::new(b"0123456789abcdef0123").unwrap();
        for (base, prefix) in [
            (
                "https://alerts.example.org/",
                "https://alerts.example.org/unsubscribe/7.",
            ),
            (
                "https://example.org/tidings",
                "https://example.org/tidings/unsubscribe/7.",
            ),
            (
                "https://example.org/tidings/",
                "https://example.org/tidings/unsubscribe/7.",
            ),
        ] {
            let links = Links::new(Url::parse(base).unwrap(), signer.clone());
            let url = links.unsubscribe_url(SubscriberId(7), "a@x.example");
            assert!(url.starts_with(prefix), "{base}: {url}");
            let token = url.rsplit('/').next().unwrap();
            let who = |_| Some("a@x.example".to_string());
            assert_eq!(links.verify_unsubscribe(token, who), Some(SubscriberId(7)));
        }
    }

    #[test]
    fn secret_file_is_created_private_once_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state/tidings.secret");
        let first = Signer::load_or_create(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let second = Signer::load_or_create(&path).unwrap();
        let t = first.token("unsubscribe", 1, "a@x.example");
        assert_eq!(second.token("unsubscribe", 1, "a@x.example"), t);
        std::fs::write(&path, "short").unwrap();
        let err = Signer::load_or_create(&path).unwrap_err();
        assert!(format!("{err:#}").contains("at least 16 bytes"), "{err:#}");
    }
}
