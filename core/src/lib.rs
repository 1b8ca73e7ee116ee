//! aforo's pure domain, with no I/O: no tokio, sqlx, axum or tonic. What it
//! computes depends only on what it is handed, so it is tested by value and
//! by property, and every role computes it the same way.
//!
//! - [`model`]: the stored facts it reads (an event as stored, a
//!   subscription and its phases, a catalog version);
//! - [`revenue`]: the RevenueEstimator's running-total fold;
//! - [`period`]: billing periods from a subscription's anchor;
//! - [`pricing`]: charge models and rounding;
//! - [`resolve`]: an event against the catalog and subscription in force at
//!   its time, to ledger intents — what the enricher and the bill run share;
//! - [`billrun`]: the bill run's ten stages, usage in, an invoice out;
//! - [`gates`]: the four gates every event passes before it is stored.
//!
//! A typed compiled catalog and the clock are to follow here; they live in
//! `aforo-crds` until then.

pub mod billrun;
pub mod gates;
pub mod model;
pub mod period;
pub mod pricing;
pub mod resolve;
pub mod revenue;
