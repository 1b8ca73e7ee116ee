//! The bill run: usage in, immutable invoices out.
//!
//! Ten stages, in this order, each a function over an invoice [`Draft`] and
//! the run's read-only [`Inputs`], each in its own module with its own tests:
//!
//! 1. [`quota`] — QuotaCheck: soft and hard quotas per meter, overage flags.
//! 2. [`rollover`] — Rollover: unused included units carried in from the
//!    previous invoice, per the plan's cap and expiry.
//! 3. [`aggregate`] — Aggregate: the stored events (up to the stored-at
//!    cut-off) folded into one quantity per (meter, dimension, plan terms),
//!    with the very fold the RevenueEstimator uses.
//! 4. [`allowance`] — Allowance: included units (the plan's and the rolled
//!    over ones) per line; what is left over rolls out.
//! 5. [`rate`] — Rate: each line priced by the RevenueEstimator's rating
//!    function, rounded once to the currency's minor units; recurring fees;
//!    adjustment lines for late events of closed periods.
//! 6. [`commit`] — Commit: a true-up line when the period's charges fall
//!    short of the minimum commitment.
//! 7. [`discount`] — Discount: the plan's and the subscription's discounts
//!    valid for the period.
//! 8. [`tax`] — Tax: the rate for the plan's tax class in the customer's
//!    tax region, from the tax configuration.
//! 9. [`route`] — Route: where the invoice goes (the internal ledger always;
//!    a signed `invoice.finalized` webhook; CSV and JSON exports).
//! 10. [`settle`] — Settle: Merkle roots of each line's events, the invoice
//!     document; the store numbers it and writes it, its lineage and its
//!     deliveries in one transaction, after which it never changes.
//!
//! Stages are pure: the same inputs give the same invoice, which is what
//! makes replay exact. The I/O — loading inputs, storing invoices, delivering
//! them, replaying a period, exporting its audit trail — is
//! `aforo_billing::billrun`'s (`runner`, `replay`, `deliver`, `audit`).

pub mod aggregate;
pub mod allowance;
pub mod commit;
pub mod discount;
pub mod merkle;
pub mod quota;
pub mod rate;
pub mod rollover;
pub mod route;
pub mod settle;
pub mod tax;

use std::collections::BTreeMap;
use std::sync::Arc;

pub use crate::period::Period;
use crate::revenue::LedgerIntent;
use aforo_crds::catalog::RatePlanSpec;
use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::period::Calendar;
use crate::pricing::RatingFunction;

pub use discount::DiscountTerm;
pub use route::RoutingConfig;
pub use tax::TaxTable;

/// One event's contribution to one line, resolved against the catalog and
/// the subscription in force at its time (exactly as the enricher resolves).
#[derive(Clone, Debug)]
pub struct UsageItem {
    pub event: Uuid,
    /// Shared with the line it lands on: cloning it is a reference count.
    pub validation_hash: Arc<str>,
    pub time: DateTime<Utc>,
    /// When the event was stored (its `received_at`).
    pub stored_at: DateTime<Utc>,
    pub intent: LedgerIntent,
    pub function: Arc<RatingFunction>,
}

/// What identifies a usage line within an invoice: the running total it
/// corresponds to.
#[derive(
    Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, utoipa::ToSchema,
)]
pub struct LineKey {
    pub meter: String,
    pub dimension: String,
    pub plan_terms: String,
}

impl LineKey {
    pub fn of(intent: &LedgerIntent) -> Self {
        LineKey {
            meter: intent.key.meter.clone(),
            dimension: intent.key.dimension.clone(),
            plan_terms: intent.key.plan_terms.clone(),
        }
    }
}

/// A closed period with events that arrived after it was invoiced.
#[derive(Clone, Debug)]
pub struct LatePeriod {
    pub period: Period,
    /// Every event of the period up to this run's cut-off, late ones included.
    pub items: Vec<UsageItem>,
    /// The events stored after the period was last billed.
    pub late: std::collections::BTreeSet<Uuid>,
    /// What was billed for the period so far, per line key: its original
    /// lines and earlier adjustments.
    pub billed: Vec<Line>,
}

/// Everything a subscription's bill run reads. Built by the runner (or a
/// replay) from the store; the stages never do I/O.
#[derive(Clone, Debug)]
pub struct Inputs {
    pub tenant: Uuid,
    pub subscription: Uuid,
    pub customer: String,
    pub tax_region: Option<String>,
    pub period: Period,
    /// The subscription's periods under the plan (rolled-over units expire
    /// a number of them later).
    pub calendar: Calendar,
    /// Events stored after this instant are not in this invoice.
    pub cutoff: DateTime<Utc>,
    /// The plan in force at the period's start.
    pub rate_plan: String,
    pub plan: RatePlanSpec,
    pub catalog_version: i64,
    /// The period's usage, in stored order (event id).
    pub usage: Vec<UsageItem>,
    /// Closed periods with late events, oldest first.
    pub late: Vec<LatePeriod>,
    /// The subscription's previous invoice (for rolled-over units).
    pub previous: Option<Invoice>,
    pub subscription_discounts: Vec<DiscountTerm>,
    /// `None` when no tax configuration was given: taxed plans are then
    /// invoiced without tax and flagged UNTAXED.
    pub tax: Option<Arc<TaxTable>>,
    pub routing: Arc<RoutingConfig>,
}

/// The ten stages, in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Stage {
    QuotaCheck,
    Rollover,
    Aggregate,
    Allowance,
    Rate,
    Commit,
    Discount,
    Tax,
    Route,
    Settle,
}

impl Stage {
    pub const ALL: [Stage; 10] = [
        Stage::QuotaCheck,
        Stage::Rollover,
        Stage::Aggregate,
        Stage::Allowance,
        Stage::Rate,
        Stage::Commit,
        Stage::Discount,
        Stage::Tax,
        Stage::Route,
        Stage::Settle,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Stage::QuotaCheck => "QUOTA_CHECK",
            Stage::Rollover => "ROLLOVER",
            Stage::Aggregate => "AGGREGATE",
            Stage::Allowance => "ALLOWANCE",
            Stage::Rate => "RATE",
            Stage::Commit => "COMMIT",
            Stage::Discount => "DISCOUNT",
            Stage::Tax => "TAX",
            Stage::Route => "ROUTE",
            Stage::Settle => "SETTLE",
        }
    }

    fn apply(self, draft: &mut Draft, inputs: &Inputs) -> Result<(), String> {
        match self {
            Stage::QuotaCheck => quota::run(draft, inputs),
            Stage::Rollover => rollover::run(draft, inputs),
            Stage::Aggregate => aggregate::run(draft, inputs),
            Stage::Allowance => allowance::run(draft, inputs),
            Stage::Rate => rate::run(draft, inputs),
            Stage::Commit => commit::run(draft, inputs),
            Stage::Discount => discount::run(draft, inputs),
            Stage::Tax => tax::run(draft, inputs),
            Stage::Route => route::run(draft, inputs),
            Stage::Settle => settle::run(draft, inputs),
        }
    }
}

/// A subscription whose bill run stopped: where and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{} failed: {reason}", stage.as_str())]
pub struct StageFailure {
    pub stage: Stage,
    pub reason: String,
}

/// What a quota check found for one meter.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct QuotaState {
    pub soft: Option<Decimal>,
    pub hard: Option<Decimal>,
    pub used: Decimal,
}

impl QuotaState {
    pub fn soft_exceeded(&self) -> bool {
        self.soft.is_some_and(|s| self.used > s)
    }
    pub fn hard_exceeded(&self) -> bool {
        self.hard.is_some_and(|h| self.used > h)
    }
}

/// Included units carried over from one period.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RolloverBucket {
    pub units: Decimal,
    /// The period the units were included in.
    pub from: DateTime<Utc>,
    /// The first period start at which they are no longer usable.
    pub expires: Option<DateTime<Utc>>,
}

/// One (meter, dimension, plan terms)'s usage in the period.
#[derive(Clone, Debug)]
pub struct Aggregated {
    pub key: LineKey,
    pub rate_plan: String,
    pub catalog_version: i64,
    pub quantity: Decimal,
    /// `price(quantity)` with the plan's allowance: what the per-event
    /// revenue estimates of these events add up to.
    pub estimate: Decimal,
    pub function: Arc<RatingFunction>,
    /// The events behind it: (stored id, validation hash), in stored order.
    pub events: Vec<(Uuid, Arc<str>)>,
    /// Included units that apply (set by Allowance).
    pub included: Decimal,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum LineKind {
    Usage,
    Recurring,
    Adjustment,
    Commitment,
    Discount,
    Tax,
}

impl LineKind {
    pub fn as_str(self) -> &'static str {
        match self {
            LineKind::Usage => "USAGE",
            LineKind::Recurring => "RECURRING",
            LineKind::Adjustment => "ADJUSTMENT",
            LineKind::Commitment => "COMMITMENT",
            LineKind::Discount => "DISCOUNT",
            LineKind::Tax => "TAX",
        }
    }
}

/// One invoice line. `amount` is `amount_unrounded` rounded once to the
/// currency's minor units; nothing else is rounded.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Line {
    /// 1-based position, assigned by Settle.
    #[serde(default)]
    pub number: u32,
    pub kind: LineKind,
    pub description: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<LineKey>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_plan: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub catalog_version: Option<i64>,
    /// The period the line's usage belongs to (earlier than the invoice's
    /// for an adjustment).
    pub period: Period,
    pub quantity: Decimal,
    pub included: Decimal,
    /// The most units priced (a hard quota).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hard_limit: Option<Decimal>,
    pub amount_unrounded: Decimal,
    pub amount: Decimal,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub flags: Vec<String>,
    pub event_count: u64,
    /// Merkle root of the events' validation hashes (set by Settle).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub merkle_root: Option<String>,
    /// The events behind the line; kept in the lineage index, not in the
    /// invoice document.
    #[serde(skip)]
    pub events: Vec<(Uuid, Arc<str>)>,
}

/// Where a settled invoice goes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "type", rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Route {
    /// The internal ledger: the invoice tables themselves.
    Ledger,
    /// A signed `invoice.finalized` webhook.
    Webhook { url: String },
    /// A file per invoice in a folder, in `format` (csv or json).
    Export { dir: String, format: String },
}

/// An invoice being built. Stages fill it in order.
#[derive(Clone, Debug)]
pub struct Draft {
    pub quotas: BTreeMap<String, QuotaState>,
    pub rollover_in: BTreeMap<String, Vec<RolloverBucket>>,
    pub aggregated: Vec<Aggregated>,
    pub rollover_out: BTreeMap<String, Vec<RolloverBucket>>,
    pub lines: Vec<Line>,
    pub routes: Vec<Route>,
    /// Invoice-level flags (line flags are collected too).
    pub flags: Vec<String>,
    pub invoice: Option<Invoice>,
}

impl Draft {
    fn new() -> Self {
        Draft {
            quotas: BTreeMap::new(),
            rollover_in: BTreeMap::new(),
            aggregated: Vec::new(),
            rollover_out: BTreeMap::new(),
            lines: Vec::new(),
            routes: Vec::new(),
            flags: Vec::new(),
            invoice: None,
        }
    }

    /// The sum of the lines' rounded amounts.
    pub fn total(&self) -> Decimal {
        self.lines.iter().map(|l| l.amount).sum()
    }
}

/// A settled invoice: the document that is stored, hashed and never changed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Invoice {
    pub id: Uuid,
    /// Assigned by the store when it settles the invoice ("" before); not
    /// part of the document.
    #[serde(default, skip_serializing)]
    pub number: String,
    pub tenant: Uuid,
    pub subscription: Uuid,
    pub customer: String,
    pub rate_plan: String,
    pub catalog_version: i64,
    pub currency: String,
    pub period: Period,
    pub cutoff: DateTime<Utc>,
    pub lines: Vec<Line>,
    pub subtotal: Decimal,
    pub discount: Decimal,
    pub tax: Decimal,
    pub total: Decimal,
    pub flags: Vec<String>,
    pub quotas: BTreeMap<String, QuotaState>,
    pub rollover: BTreeMap<String, Vec<RolloverBucket>>,
    pub routes: Vec<Route>,
}

impl Invoice {
    /// The canonical JSON that is stored and hashed, byte for byte.
    pub fn document(&self) -> String {
        let value = serde_json::to_value(self).unwrap_or(serde_json::Value::Null);
        aforo_crds::canonical::to_string(&value)
    }

    /// SHA-256 of the document, hex.
    pub fn document_hash(document: &str) -> String {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(document.as_bytes()))
    }
}

/// A billed subscription period: the invoice and what Aggregate found (for
/// reconciliation with the RevenueEstimator).
#[derive(Clone, Debug)]
pub struct Billed {
    pub invoice: Invoice,
    pub aggregated: Vec<Aggregated>,
}

/// Runs the ten stages for one subscription and period. The invoice id is
/// an input so that a replay can compare like with like.
pub fn bill(inputs: &Inputs, invoice_id: Uuid) -> Result<Invoice, StageFailure> {
    bill_with_aggregates(inputs, invoice_id).map(|b| b.invoice)
}

/// [`bill`], keeping Aggregate's results.
pub fn bill_with_aggregates(inputs: &Inputs, invoice_id: Uuid) -> Result<Billed, StageFailure> {
    bill_timed(inputs, invoice_id, &mut StageTimes::default())
}

/// The time spent in each of the ten stages, in [`Stage::ALL`]'s order.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StageTimes(pub [std::time::Duration; 10]);

impl StageTimes {
    /// `(stage name, microseconds)` of every stage.
    pub fn micros(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        Stage::ALL
            .iter()
            .zip(self.0)
            .map(|(stage, took)| (stage.as_str(), took.as_micros() as u64))
    }
}

/// [`bill_with_aggregates`], adding the time each stage takes to `times`
/// (what the bill-run metrics report). Timing never changes the result.
pub fn bill_timed(
    inputs: &Inputs,
    invoice_id: Uuid,
    times: &mut StageTimes,
) -> Result<Billed, StageFailure> {
    let mut draft = Draft::new();
    for (i, stage) in Stage::ALL.into_iter().enumerate() {
        let started = std::time::Instant::now();
        let applied = stage.apply(&mut draft, inputs);
        times.0[i] += started.elapsed();
        applied.map_err(|reason| StageFailure { stage, reason })?;
    }
    let mut invoice = draft.invoice.ok_or_else(|| StageFailure {
        stage: Stage::Settle,
        reason: "settle produced no invoice".into(),
    })?;
    invoice.id = invoice_id;
    Ok(Billed {
        invoice,
        aggregated: draft.aggregated,
    })
}

/// Parses a catalog decimal that validation has already checked.
pub fn decimal(field: &str, value: &str) -> Result<Decimal, String> {
    value
        .parse()
        .map_err(|_| format!("{field} {value:?} is not a decimal"))
}

/// Inputs for the stages' tests, here and in `aforo-billing`'s (feature
/// `fixtures`).
#[cfg(any(test, feature = "fixtures"))]
pub mod fixtures;
#[cfg(test)]
mod properties;
#[cfg(test)]
mod worked_examples;
