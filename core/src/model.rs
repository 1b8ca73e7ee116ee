//! The stored facts pure code reads: an event as stored, a subscription
//! and its phases, a catalog version. The store writes and reads them; the
//! domain (resolution, billing periods, the bill run) computes with them.

use aforo_crds::{EventFlags, GateResults, SourceEvent};
use chrono::{DateTime, Utc};
use uuid::Uuid;

/// A stored event with its provenance.
#[derive(Clone, Debug, PartialEq)]
pub struct StoredEvent {
    pub stored_id: Uuid,
    pub seq: i64,
    pub tenant: Uuid,
    pub event: SourceEvent,
    pub properties_json: String,
    pub status: String,
    pub flags: EventFlags,
    pub gates: GateResults,
    pub validation_hash: String,
    pub received_at: DateTime<Utc>,
    pub node: String,
    /// `None` while queued for enrichment; then ENRICHED, UNATTRIBUTED or UNMETERED.
    pub enrichment: Option<String>,
    /// The storing request's traceparent; read by enrichment claims only.
    pub trace_parent: Option<String>,
}

/// One immutable version of a tenant's catalog.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct CatalogVersion {
    pub version: i64,
    pub content_hash: String,
    pub effective_from: Option<DateTime<Utc>>,
    /// Canonical JSON of the compiled snapshot.
    pub snapshot: String,
    pub applied_at: DateTime<Utc>,
}

/// The rate plan a subscription is on over `[starts_at, ends_at)`.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SubscriptionPhase {
    pub starts_at: DateTime<Utc>,
    pub ends_at: Option<DateTime<Utc>>,
    pub rate_plan: String,
    pub recorded_at: DateTime<Utc>,
}

#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Subscription {
    pub id: Uuid,
    /// The customer's external id.
    pub customer: String,
    pub starts_at: DateTime<Utc>,
    pub ends_at: Option<DateTime<Utc>>,
    pub billing_anchor_day: Option<u8>,
    /// Oldest first; the last one is open unless the subscription ended.
    pub phases: Vec<SubscriptionPhase>,
    pub created_at: DateTime<Utc>,
}

impl Subscription {
    /// The rate plan in force at `at`, if the subscription is.
    pub fn plan_at(&self, at: DateTime<Utc>) -> Option<&str> {
        self.phases
            .iter()
            .find(|p| p.starts_at <= at && p.ends_at.is_none_or(|end| at < end))
            .map(|p| p.rate_plan.as_str())
    }
}
