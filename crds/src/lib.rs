//! The domain language of aforo.
//!
//! Every other crate speaks in these types. A client sends a [`SourceEvent`]
//! (the raw billable fact); the ingest gates decide its [`GateResults`]; the
//! store keeps both, sealed by a [`validation_hash`](event::validation_hash)
//! under the tenant's key, so an audit export can later prove that nothing was
//! altered.
//!
//! The catalog is declared in [`catalog`]: the custom resources (Meter,
//! Product, RatePlan, WebhookSource, UsageAlert, MeteringPipeline) with their
//! CEL rules. [`validate`] checks what needs the other resources, and
//! [`compile`] turns a set of resources into one canonical, content-hashed,
//! effective-dated snapshot.
//!
//! Two small things every part shares: [`clock`], the injected notion of
//! "now" (gates, bill-run defaults and usage queries never read the system
//! clock themselves), and [`duration`], the one grammar for durations in
//! flags and manifests.
//!
//! Nothing here does I/O: these are values and pure functions over them.

// kube's `printcolumn(name = …, type_ = …)` attributes repeat key names by
// design; clippy reads them as duplicated attributes.
#![allow(clippy::duplicated_attributes)]

pub mod canonical;
pub mod catalog;
pub mod clock;
pub mod compile;
pub mod currency;
pub mod duration;
pub mod event;
pub mod validate;

pub use event::{
    EventFlag, EventFlags, GateResults, GateVerdict, RejectReason, SourceEvent, Tier,
    validation_hash,
};
