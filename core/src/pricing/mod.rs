//! Pricing math: pure functions from quantities to money, shared by the
//! RevenueEstimator (per event, at ingest time) and the bill run's Rate stage
//! (per period). No I/O, no clock, no floats: `rust_decimal` at full
//! precision, rounded once, at invoice line totals ([`rounding`]).
//!
//! A charge's [`RatingFunction`] maps a period's cumulative quantity `q` to
//! its price `price(q)`. The revenue of one event that takes the running
//! total from `before` to `after` is `price(after) − price(before)`, so the
//! revenues of a period's events telescope to exactly `price(final total)`,
//! whatever their order or grouping — the same number the bill run computes.
//! (For volume pricing a marginal can be negative: crossing into a cheaper
//! tier reprices every unit.)

mod rating;
pub mod rounding;

pub use rating::{ChargeRating, PercentageRule, PricingError, RatingFunction, Tier};
