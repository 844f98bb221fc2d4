//! The identities of stored rows, one type each: a subscription's id cannot be passed
//! where a subscriber's is expected, nor an outbox row's where an item's is. The number
//! inside is the row's key in the database.

use std::fmt;
use std::str::FromStr;

/// Declares an id type: a copyable `i64` that prints and parses as its number, reads
/// and writes itself as a database integer, and serializes as the bare number.
macro_rules! row_id {
    ($($(#[$meta:meta])* $name:ident;)+) => {$(
        $(#[$meta])*
        #[derive(
            Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize,
        )]
        #[serde(transparent)]
        pub struct $name(pub i64);

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0, f)
            }
        }

        impl FromStr for $name {
            type Err = std::num::ParseIntError;

            fn from_str(text: &str) -> Result<$name, Self::Err> {
                text.parse().map($name)
            }
        }

        impl rusqlite::types::ToSql for $name {
            fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
                Ok(self.0.into())
            }
        }

        impl rusqlite::types::FromSql for $name {
            fn column_result(
                value: rusqlite::types::ValueRef<'_>,
            ) -> rusqlite::types::FromSqlResult<$name> {
                i64::column_result(value).map($name)
            }
        }

        impl postgres::types::ToSql for $name {
            fn to_sql(
                &self,
                ty: &postgres::types::Type,
                out: &mut bytes::BytesMut,
            ) -> Result<postgres::types::IsNull, Box<dyn std::error::Error + Sync + Send>> {
                self.0.to_sql(ty, out)
            }

            fn accepts(ty: &postgres::types::Type) -> bool {
                <i64 as postgres::types::ToSql>::accepts(ty)
            }

            postgres::types::to_sql_checked!();
        }

        impl<'a> postgres::types::FromSql<'a> for $name {
            fn from_sql(
                ty: &postgres::types::Type,
                raw: &'a [u8],
            ) -> Result<$name, Box<dyn std::error::Error + Sync + Send>> {
                i64::from_sql(ty, raw).map($name)
            }

            fn accepts(ty: &postgres::types::Type) -> bool {
                <i64 as postgres::types::FromSql>::accepts(ty)
            }
        }
    )+};
}

row_id! {
    /// A subscriber (one address).
    SubscriberId;
    /// One search of a subscriber.
    SubscriptionId;
    /// A stored item.
    ItemId;
    /// A message in the outbox.
    OutboxId;
    /// A sign-up from the web, before and after it was confirmed.
    SignupId;
    /// A subscriber's destination beside email (a webhook, a chat).
    ChannelId;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_print_and_parse_as_their_number() {
        assert_eq!(SubscriberId(42).to_string(), "42");
        assert_eq!(format!("{:>4}", OutboxId(7)), "   7");
        assert_eq!("42".parse::<OutboxId>(), Ok(OutboxId(42)));
        assert!("4x".parse::<OutboxId>().is_err());
        assert_eq!(serde_json::to_string(&ItemId(3)).unwrap(), "3");
    }
}
