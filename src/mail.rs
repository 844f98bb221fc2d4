//! Outbox → mailbox: builds MIME messages and delivers them over SMTP (lettre) or as
//! `.eml` files, then marks each outbox row sent, retrying or failed.
//!
//! The only module that knows lettre. Temporary failures (SMTP 4xx, refused or dropped
//! connections, timeouts) are retried with exponential backoff; permanent ones (5xx)
//! mark the row failed with the server's answer.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result};
use chrono::{DateTime, Utc};
use lettre::message::{Mailbox, MultiPart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use tracing::{info, warn};

use crate::config::{MailSettings, MailTransport, SMTP_PASSWORD_ENV, TlsMode};
use crate::store::{OutboxMessage, Store};

/// How long a claimed message stays ours before another worker may try it.
const CLAIM_LEASE: Duration = Duration::from_secs(10 * 60);
/// Messages claimed per round.
const BATCH: usize = 50;
/// Temporary failures are retried until the message is this old, then marked failed.
const MAX_AGE: chrono::Duration = chrono::Duration::days(3);

/// Why one delivery failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendError {
    /// Worth retrying later: 4xx, connection trouble, timeout.
    Transient(String),
    /// Retrying will not help: 5xx, an unusable address.
    Permanent(String),
}

#[derive(Clone)]
pub struct Mailer {
    from: Mailbox,
    transport: Transport,
    timeout: Duration,
}

#[derive(Clone)]
enum Transport {
    File(PathBuf),
    Smtp(AsyncSmtpTransport<Tokio1Executor>),
}

/// What one [`send_due`] round did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Delivery {
    pub sent: usize,
    pub retrying: usize,
    pub failed: usize,
}

impl Mailer {
    pub fn new(settings: &MailSettings) -> Result<Mailer> {
        let from: Mailbox = settings
            .from
            .parse()
            .with_context(|| format!("mail.from {:?}", settings.from))?;
        let transport = match &settings.transport {
            MailTransport::File { folder } => Transport::File(folder.clone()),
            MailTransport::Smtp(smtp) => {
                let builder = match smtp.tls {
                    TlsMode::Tls => AsyncSmtpTransport::<Tokio1Executor>::relay(&smtp.host)?,
                    TlsMode::Starttls => {
                        AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(&smtp.host)?
                    }
                    TlsMode::None => {
                        AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&smtp.host)
                    }
                };
                let mut builder = builder.port(smtp.port).timeout(Some(settings.send_timeout));
                if let Some(user) = &smtp.username {
                    let password = std::env::var(SMTP_PASSWORD_ENV).with_context(|| {
                        format!("mail.smtp.username is set but {SMTP_PASSWORD_ENV} is not")
                    })?;
                    builder = builder.credentials(Credentials::new(user.clone(), password));
                }
                Transport::Smtp(builder.build())
            }
        };
        Ok(Mailer {
            from,
            transport,
            timeout: settings.send_timeout,
        })
    }

    /// The domain our `Message-ID`s end in: the `From:` address's.
    pub fn message_domain(&self) -> String {
        self.from.email.domain().to_string()
    }

    /// Builds the MIME message for an outbox row.
    pub fn build_message(&self, row: &OutboxMessage) -> Result<Message, SendError> {
        let to: Mailbox = row
            .recipient
            .parse()
            .map_err(|e| SendError::Permanent(format!("bad recipient {:?}: {e}", row.recipient)))?;
        Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(row.subject.clone())
            .message_id(Some(row.message_id.clone()))
            .date(SystemTime::from(row.created_at))
            .multipart(MultiPart::alternative_plain_html(
                row.body_text.clone(),
                row.body_html.clone(),
            ))
            .map_err(|e| SendError::Permanent(format!("building message: {e}")))
    }

    /// Delivers one outbox row.
    pub async fn deliver(&self, row: &OutboxMessage) -> Result<(), SendError> {
        let message = self.build_message(row)?;
        match &self.transport {
            Transport::File(folder) => write_eml(folder, row.id, &message.formatted())
                .await
                .map_err(|e| SendError::Transient(format!("{e:#}"))),
            Transport::Smtp(smtp) => {
                match tokio::time::timeout(self.timeout, smtp.send(message)).await {
                    Err(_) => Err(SendError::Transient("timed out".into())),
                    Ok(Ok(_)) => Ok(()),
                    Ok(Err(e)) if e.is_permanent() => Err(SendError::Permanent(e.to_string())),
                    Ok(Err(e)) => Err(SendError::Transient(e.to_string())),
                }
            }
        }
    }
}

/// Writes `<folder>/<id>.eml` atomically (temporary file, then rename), so a resend of
/// the same row replaces the file instead of adding a second one.
async fn write_eml(folder: &Path, id: i64, bytes: &[u8]) -> Result<()> {
    tokio::fs::create_dir_all(folder)
        .await
        .with_context(|| format!("creating mail folder {}", folder.display()))?;
    let path = folder.join(format!("{id:08}.eml"));
    let tmp = folder.join(format!(".{id:08}.eml.tmp"));
    tokio::fs::write(&tmp, bytes)
        .await
        .with_context(|| format!("writing {}", tmp.display()))?;
    tokio::fs::rename(&tmp, &path)
        .await
        .with_context(|| format!("renaming to {}", path.display()))?;
    Ok(())
}

/// Checks and normalizes an email address given on the command line.
pub fn check_address(address: &str) -> Result<String> {
    let mailbox: Mailbox = address
        .trim()
        .parse()
        .with_context(|| format!("{address:?} is not an email address"))?;
    Ok(mailbox.email.to_string())
}

/// When to try again after `attempts` failures: 1, 2, 4 … minutes, at most 1 hour.
fn retry_delay(attempts: u32) -> chrono::Duration {
    chrono::Duration::minutes(1i64 << attempts.min(6)).min(chrono::Duration::hours(1))
}

/// Sends every pending outbox message that is due, until none are left.
pub async fn send_due(store: &Store, mailer: &Mailer, now: DateTime<Utc>) -> Result<Delivery> {
    let mut done = Delivery::default();
    loop {
        let claim = store.clone();
        let batch = tokio::task::spawn_blocking(move || claim.claim_mail(now, CLAIM_LEASE, BATCH))
            .await??;
        if batch.is_empty() {
            return Ok(done);
        }
        for row in batch {
            let outcome = mailer.deliver(&row).await;
            let store = store.clone();
            let id = row.id;
            let recipient = row.recipient.clone();
            match &outcome {
                Ok(()) => {
                    info!(outbox = id, to = %recipient, subject = %row.subject, "mail sent");
                    done.sent += 1;
                }
                Err(SendError::Transient(e)) if now - row.created_at < MAX_AGE => {
                    warn!(outbox = id, to = %recipient, error = %e, "mail deferred; will retry");
                    done.retrying += 1;
                }
                Err(SendError::Transient(e) | SendError::Permanent(e)) => {
                    warn!(outbox = id, to = %recipient, error = %e, "mail failed");
                    done.failed += 1;
                }
            }
            let attempts = row.attempts;
            let created_at = row.created_at;
            tokio::task::spawn_blocking(move || match outcome {
                Ok(()) => store.mark_sent(id, now),
                Err(SendError::Transient(e)) if now - created_at < MAX_AGE => {
                    store.mark_retry(id, &e, now + retry_delay(attempts))
                }
                Err(SendError::Transient(e) | SendError::Permanent(e)) => store.mark_failed(id, &e),
            })
            .await??;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_delay_grows_and_is_capped() {
        let minutes: Vec<i64> = (0..9).map(|a| retry_delay(a).num_minutes()).collect();
        assert_eq!(minutes, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
    }
}
