//! The states stored rows move through, as Rust types: a status read from the database
//! is one of these or an error, never a string compared by hand.

use std::fmt;
use std::str::FromStr;

/// Declares a status enum stored as text: its variants and their spelling in the
/// database (and in `--json` output, which uses the same words).
macro_rules! stored_status {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident = $text:literal,)+ }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
        pub enum $name {
            $($(#[$vmeta])* #[serde(rename = $text)] $variant,)+
        }

        impl $name {
            /// The word stored in the database.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)+
                }
            }
        }

        impl FromStr for $name {
            type Err = UnknownStatus;

            fn from_str(text: &str) -> Result<$name, UnknownStatus> {
                match text {
                    $($text => Ok($name::$variant),)+
                    _ => Err(UnknownStatus {
                        kind: stringify!($name),
                        text: text.to_owned(),
                    }),
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.pad(self.as_str())
            }
        }
    };
}

stored_status! {
    /// Where a message stands in the outbox.
    OutboxStatus {
        /// Waiting for its next attempt, or being sent under a claim.
        Pending = "pending",
        /// Accepted by the mail server (or written to its file).
        Sent = "sent",
        /// Given up on: a permanent failure or a bounce. `tidings outbox retry` puts it back.
        Failed = "failed",
    }
}

stored_status! {
    /// What a feed's last poll found.
    PollStatus {
        /// New content, stored.
        Ok = "ok",
        /// A 304, or the same body as last time.
        NotModified = "not-modified",
        /// The poll failed; the feed is tried again with backoff.
        Error = "error",
        /// A 410: not polled again until its URL changes.
        Gone = "gone",
    }
}

stored_status! {
    /// Where an item's article stands (items of full-text feeds only).
    ArticleState {
        /// To be fetched; the item is not matched until it is no longer pending.
        Pending = "pending",
        /// The story was found; the item was matched on it too.
        Ok = "ok",
        /// The page has no story (a paywall, scripts only, an error page): matched on its
        /// feed text alone.
        None = "none",
        /// Every try failed: matched on its feed text alone.
        Failed = "failed",
    }
}

stored_status! {
    /// What a message in the outbox is.
    OutboxKind {
        /// Mail to the subscriber's address.
        Mail = "mail",
        /// A digest for one of the subscriber's other destinations: sent while the
        /// destination is active, held while it is paused.
        Push = "push",
        /// A destination's verification or test message: sent whatever its state.
        Notice = "notice",
    }
}

stored_status! {
    /// The services a destination can be.
    ChannelKind {
        /// HTTPS POST of the digest as JSON, signed as Standard Webhooks specify.
        Webhook = "webhook",
        Ntfy = "ntfy",
        Telegram = "telegram",
        Matrix = "matrix",
        Slack = "slack",
        Discord = "discord",
        Mattermost = "mattermost",
    }
}

stored_status! {
    /// Where a destination stands.
    ChannelState {
        /// Added from the manage page; only its verification message goes there until
        /// its owner enters the code.
        Unconfirmed = "unconfirmed",
        Active = "active",
        /// Paused by its owner or after repeated permanent failures; its digests wait.
        Paused = "paused",
    }
}

stored_status! {
    /// Who added a destination, which decides where it may be sent.
    ChannelOrigin {
        /// `tidings subscriber channel add`: private networks as `[poll]` allows.
        Admin = "admin",
        /// A `[[channels]]` table in config.toml; its secret is read from the environment.
        Config = "config",
        /// The subscriber, on their page: public addresses only.
        Subscriber = "subscriber",
    }
}

/// A status the database holds that this version does not know (a newer version wrote
/// it, or someone edited the row).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownStatus {
    kind: &'static str,
    text: String,
}

impl fmt::Display for UnknownStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "unknown {} {:?} in the database", self.kind, self.text)
    }
}

impl std::error::Error for UnknownStatus {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_read_back_what_they_write_and_refuse_anything_else() {
        for status in [
            OutboxStatus::Pending,
            OutboxStatus::Sent,
            OutboxStatus::Failed,
        ] {
            assert_eq!(status.as_str().parse::<OutboxStatus>(), Ok(status));
        }
        for status in [
            PollStatus::Ok,
            PollStatus::NotModified,
            PollStatus::Error,
            PollStatus::Gone,
        ] {
            assert_eq!(status.to_string().parse::<PollStatus>(), Ok(status));
        }
        for state in [
            ArticleState::Pending,
            ArticleState::Ok,
            ArticleState::None,
            ArticleState::Failed,
        ] {
            assert_eq!(state.as_str().parse::<ArticleState>(), Ok(state));
        }
        let err = "Sent".parse::<OutboxStatus>().unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown OutboxStatus \"Sent\" in the database"
        );
        assert!("bounced".parse::<OutboxStatus>().is_err());
        assert_eq!(
            serde_json::to_string(&PollStatus::NotModified).unwrap(),
            "\"not-modified\""
        );
    }
}
