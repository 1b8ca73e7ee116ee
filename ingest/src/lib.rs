//! The front doors of aforo and the four gates behind them.
//!
//! Data flows one way:
//!
//! ```text
//!  gRPC (grpc.rs) ─────────┐
//!  REST (rest.rs) ─────────┼─ decode.rs ─ EventCandidate ─ gates ─── pipeline.rs ─ committer.rs ─ Store
//!  webhooks/ (verify, map) ┤                              (pure)    (seal, answer)  (group commit)
//!  batches.rs (streamed) ──┘
//! ```
//!
//! The gates are pure and live in `aforo-core` ([`gates`], re-exported).
//! Each front door turns its wire format into [`gates::EventCandidate`]s;
//! the [`pipeline::Ingestor`] runs the gates, seals every admitted event
//! with its validation hash, and commits admitted and rejected events
//! together through the [`committer::Committer`], which gathers concurrent
//! requests into one transaction. Answers go out only after the commit.
//!
//! The [`enrich`] role then takes each stored event from the queue, gives it
//! its billing context and computes its exact marginal revenue.

pub mod batches;
pub use aforo_crds::clock;
pub mod committer;
pub mod config;
pub mod decode;
pub mod enrich;
pub use aforo_core::gates;
pub mod grpc;
pub mod metrics;
pub mod pipeline;
pub mod rest;
pub mod role;
pub mod webhooks;

pub use config::IngestConfig;

/// The ingest role's OpenAPI document.
pub fn document() -> utoipa::openapi::OpenApi {
    aforo_api::openapi::document(
        "aforo ingest API",
        "The front doors: events as aforo JSON and CloudEvents, CSV and NDJSON batch \
         uploads, providers' signed webhooks, and what the gates and the webhook receiver \
         set aside.",
        operations(),
    )
}

/// The operations of every ingest route: events, batches, webhooks.
fn operations() -> utoipa::openapi::OpenApi {
    let mut doc = rest::openapi();
    doc.merge(batches::openapi());
    doc.merge(webhooks::openapi());
    doc
}

/// The document of `aforo standalone`: the front doors and every route
/// another role adds to the same port.
pub fn standalone_document(other: utoipa::openapi::OpenApi) -> utoipa::openapi::OpenApi {
    aforo_api::openapi::merge(
        "aforo API",
        "Every role in one process: the front doors, the catalog, customers and \
         subscriptions, revenue, bill runs and invoices.",
        [operations(), other],
    )
}
