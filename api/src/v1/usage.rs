//! Revenue, margin and entitlements, from the ledger the RevenueEstimator
//! writes at enrichment.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

/// `GET /v1/revenue`: one row per (customer, meter, currency).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RevenueReport {
    pub rows: Vec<RevenueRow>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RevenueRow {
    pub customer: String,
    pub meter: String,
    pub currency: String,
    #[serde(with = "super::money")]
    #[schema(value_type = String)]
    pub quantity: Decimal,
    #[serde(with = "super::money")]
    #[schema(value_type = String)]
    pub revenue: Decimal,
    #[serde(with = "super::money")]
    #[schema(value_type = String)]
    pub cost: Decimal,
    #[serde(with = "super::money")]
    #[schema(value_type = String)]
    pub margin: Decimal,
    pub events: i64,
}

/// What one meter made of one stored event.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RevenueLine {
    pub meter: String,
    pub subscription: Uuid,
    pub rate_plan: String,
    pub catalog_version: i64,
    #[serde(with = "super::money")]
    #[schema(value_type = String)]
    pub quantity: Decimal,
    #[serde(with = "super::money")]
    #[schema(value_type = String)]
    pub revenue: Decimal,
    pub currency: String,
    #[serde(with = "super::money")]
    #[schema(value_type = String)]
    pub cost: Decimal,
}

/// `GET /v1/events/{id}/revenue`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct EventRevenue {
    pub lines: Vec<RevenueLine>,
}

/// `GET /v1/revenue/hourly`: the last 24 hours of event time.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Hourly {
    pub hours: Vec<Hour>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Hour {
    #[serde(with = "super::time")]
    pub hour: DateTime<Utc>,
    pub currency: String,
    #[serde(with = "super::money")]
    #[schema(value_type = String)]
    pub revenue: Decimal,
    #[serde(with = "super::money")]
    #[schema(value_type = String)]
    pub cost: Decimal,
    #[serde(with = "super::money")]
    #[schema(value_type = String)]
    pub margin: Decimal,
    pub events: i64,
}

/// `GET /v1/margin/cohorts`: customers grouped by one metadata key.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Cohorts {
    pub key: String,
    pub cohorts: Vec<Cohort>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Cohort {
    /// The metadata value; customers without the key are `(none)`.
    pub cohort: String,
    pub currency: String,
    pub customers: u64,
    #[serde(with = "super::money")]
    #[schema(value_type = String)]
    pub revenue: Decimal,
    #[serde(with = "super::money")]
    #[schema(value_type = String)]
    pub cost: Decimal,
    #[serde(with = "super::money")]
    #[schema(value_type = String)]
    pub margin: Decimal,
}

/// `GET /v1/entitlements`: included, used and remaining units this period.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Entitlement {
    pub customer: String,
    pub meter: String,
    pub rate_plan: String,
    #[serde(with = "super::time")]
    pub period_start: DateTime<Utc>,
    #[serde(with = "super::money")]
    #[schema(value_type = String)]
    pub included: Decimal,
    #[serde(with = "super::money")]
    #[schema(value_type = String)]
    pub used: Decimal,
    #[serde(with = "super::money")]
    #[schema(value_type = String)]
    pub remaining: Decimal,
}
