//! The v1 wire types: what the REST API takes and answers, shared by the
//! handlers, the CLI, and the OpenAPI document generated from them.
//!
//! Conventions, the same on every route:
//!
//! - every listing answers one [`Page`]: `{"items": [...], "next_cursor"}`;
//!   pass `next_cursor` back as `after` for the next page, and stop when it
//!   is `null`;
//! - times are RFC 3339 in UTC with microseconds ([`time`]);
//! - money and quantities are exact decimal strings, never JSON numbers
//!   ([`money`]): a float cannot hold a price;
//! - every error is [`ErrorBody`], whatever rejected the request.
//!
//! The invoice documents, bill-run reports and audit exports are the billing
//! domain's own types (in `aforo-billing`): they are stored, hashed and
//! replayed as they are, so the wire shows them as they are.

pub mod batches;
pub mod bill_runs;
pub mod catalog;
mod convert;
pub mod customers;
pub mod events;
pub mod invoices;
pub mod subscriptions;
pub mod usage;
pub mod webhooks;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// One page of a listing.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// Pass as `after` for the next page; `null` on the last page.
    pub next_cursor: Option<String>,
    /// How many items the whole listing has, where it is known cheaply.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total: Option<u64>,
}

impl<T> Page<T> {
    /// A page of what the store answered for `limit`: there is a next page
    /// when the store filled it (the store never answers more than asked).
    pub fn of(items: Vec<T>, limit: u32, cursor: impl Fn(&T) -> String) -> Self {
        let next_cursor = (items.len() as u64 >= u64::from(limit))
            .then(|| items.last().map(&cursor))
            .flatten();
        Page {
            items,
            next_cursor,
            total: None,
        }
    }

    pub fn map<U>(self, f: impl FnMut(T) -> U) -> Page<U> {
        Page {
            items: self.items.into_iter().map(f).collect(),
            next_cursor: self.next_cursor,
            total: self.total,
        }
    }
}

/// Every error answer: `{"error": {...}}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable and machine-readable, e.g. `INVALID`, `NOT_FOUND`,
    /// `UNAUTHENTICATED`, `INVALID_JSON`, `UNAVAILABLE`.
    pub code: String,
    /// For people.
    pub message: String,
    /// Structured detail where there is some, e.g. every error of a
    /// catalog apply.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<serde_json::Value>,
}

/// Times on the wire: RFC 3339, UTC, always six fractional digits, so that
/// they sort as text.
pub mod time {
    use chrono::{DateTime, SecondsFormat, Utc};
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn format(t: &DateTime<Utc>) -> String {
        t.to_rfc3339_opts(SecondsFormat::Micros, true)
    }

    pub fn serialize<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format(t))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
        DateTime::<Utc>::deserialize(d)
    }

    /// The same for an optional time (`null` when absent).
    pub mod option {
        use chrono::{DateTime, Utc};
        use serde::{Deserialize, Deserializer, Serializer};

        pub fn serialize<S: Serializer>(
            t: &Option<DateTime<Utc>>,
            s: S,
        ) -> Result<S::Ok, S::Error> {
            match t {
                Some(t) => s.serialize_str(&super::format(t)),
                None => s.serialize_none(),
            }
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(
            d: D,
        ) -> Result<Option<DateTime<Utc>>, D::Error> {
            Option::<DateTime<Utc>>::deserialize(d)
        }
    }
}

/// Money and quantities on the wire: the exact decimal, as a string, without
/// trailing zeros.
pub mod money {
    use rust_decimal::Decimal;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Decimal, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&d.normalize().to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Decimal, D::Error> {
        <Decimal as Deserialize>::deserialize(d)
    }

    pub mod option {
        use rust_decimal::Decimal;
        use serde::{Deserialize, Deserializer, Serializer};

        pub fn serialize<S: Serializer>(d: &Option<Decimal>, s: S) -> Result<S::Ok, S::Error> {
            match d {
                Some(d) => s.serialize_str(&d.normalize().to_string()),
                None => s.serialize_none(),
            }
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Decimal>, D::Error> {
            Option::<Decimal>::deserialize(d)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_page_has_a_cursor_and_a_short_one_does_not() {
        let full = Page::of(vec![1, 2, 3], 3, |n| n.to_string());
        assert_eq!(full.next_cursor.as_deref(), Some("3"));
        let short = Page::of(vec![1, 2], 3, |n| n.to_string());
        assert_eq!(short.next_cursor, None);
        let empty = Page::of(Vec::<i32>::new(), 3, |n| n.to_string());
        assert_eq!(empty.next_cursor, None);
    }

    #[test]
    fn money_keeps_every_digit_and_drops_trailing_zeros() {
        #[derive(Serialize, Deserialize)]
        struct M(#[serde(with = "money")] rust_decimal::Decimal);
        let m: M = serde_json::from_str("\"0.000000000000000001\"").unwrap();
        assert_eq!(
            serde_json::to_string(&m).unwrap(),
            "\"0.000000000000000001\""
        );
        let m: M = serde_json::from_str("\"12.500\"").unwrap();
        assert_eq!(serde_json::to_string(&m).unwrap(), "\"12.5\"");
    }
}
