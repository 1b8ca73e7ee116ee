//! `/v1/subscriptions`: subscriptions, plan changes, discounts.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

/// `POST /v1/subscriptions`.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SubscriptionRequest {
    /// The customer's id.
    pub customer: String,
    /// The RatePlan's name in the catalog.
    pub rate_plan: String,
    pub starts_at: DateTime<Utc>,
    pub ends_at: Option<DateTime<Utc>>,
    /// The day of the month periods start on, 1 to 31 (the last day of a
    /// shorter month); otherwise the plan's, otherwise the start's.
    #[schema(minimum = 1, maximum = 31)]
    pub billing_anchor_day: Option<u8>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Subscription {
    pub id: Uuid,
    pub customer: String,
    #[serde(with = "super::time")]
    pub starts_at: DateTime<Utc>,
    #[serde(with = "super::time::option")]
    pub ends_at: Option<DateTime<Utc>>,
    pub billing_anchor_day: Option<u8>,
    /// Oldest first; the last one is open unless the subscription ended.
    pub phases: Vec<Phase>,
}

/// The rate plan a subscription is on over `[starts_at, ends_at)`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Phase {
    pub rate_plan: String,
    #[serde(with = "super::time")]
    pub starts_at: DateTime<Utc>,
    #[serde(with = "super::time::option")]
    pub ends_at: Option<DateTime<Utc>>,
    #[serde(with = "super::time")]
    pub recorded_at: DateTime<Utc>,
}

/// `POST /v1/subscriptions/{id}/plan`.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PlanChangeRequest {
    pub rate_plan: String,
    pub effective_at: DateTime<Utc>,
}

/// `POST /v1/subscriptions/{id}/discounts`: exactly one of `percent` and
/// `amount`.
#[derive(Clone, Debug, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DiscountRequest {
    #[schema(value_type = Option<String>)]
    pub percent: Option<Decimal>,
    #[schema(value_type = Option<String>)]
    pub amount: Option<Decimal>,
    pub valid_from: Option<DateTime<Utc>>,
    pub valid_until: Option<DateTime<Utc>>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Discount {
    pub id: Uuid,
    pub subscription: Uuid,
    #[serde(with = "super::money::option")]
    #[schema(value_type = Option<String>)]
    pub percent: Option<Decimal>,
    #[serde(with = "super::money::option")]
    #[schema(value_type = Option<String>)]
    pub amount: Option<Decimal>,
    #[serde(with = "super::time::option")]
    pub valid_from: Option<DateTime<Utc>>,
    #[serde(with = "super::time::option")]
    pub valid_until: Option<DateTime<Utc>>,
}
