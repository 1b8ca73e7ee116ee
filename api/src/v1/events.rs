//! `/v1/events` and `/v1/rejections`: the ingest role's front door.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::ToSchema;
use uuid::Uuid;

use super::usage::RevenueLine;

/// One event as a client sends it to `POST /v1/events` (alone or in an
/// array). Decoding never fails the request: each event that breaks a rule
/// gets its own `REJECTED` result with a reason, and the others go on.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct NewEvent {
    /// The client's id for the event: the idempotency key, with `source`.
    pub id: String,
    pub source: String,
    #[serde(rename = "type")]
    pub event_type: String,
    /// The customer's id.
    pub customer: String,
    /// When the usage happened (RFC 3339).
    pub time: DateTime<Utc>,
    #[serde(default)]
    #[schema(value_type = Object)]
    pub properties: Map<String, Value>,
    /// The front door's name (`rest` when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tier: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tier_detail: Option<String>,
}

/// What `POST /v1/events` did with a batch: a result per event, in order.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct IngestResponse {
    pub results: Vec<EventResult>,
    pub accepted: u32,
    pub duplicates: u32,
    pub rejected: u32,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct EventResult {
    /// The event's position in the batch, from 0.
    pub index: u32,
    /// The event's own id, as sent (empty when it had none).
    pub id: String,
    pub status: EventStatus,
    /// Where the event (or its rejection) is stored: `stored_event_id` in
    /// `/v1/events` or `/v1/rejections`. A duplicate answers the first's.
    pub stored_event_id: Uuid,
    /// Why it was rejected, e.g. `SCHEMA_MISSING_ID`, `TIMESTAMP_TOO_OLD`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// `LATE`, `UNMETERED`, `UNATTRIBUTED`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub flags: Vec<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum EventStatus {
    /// Stored, durably, before this answer.
    Accepted,
    /// Stored before: counted once.
    Duplicate,
    /// Not counted; stored with its reason at `/v1/rejections`.
    Rejected,
}

/// What each gate said, in order.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Gates {
    pub schema: String,
    pub timestamp: String,
    pub idempotency: String,
    pub late_arrival: String,
}

/// A stored event, with its enrichment and what each meter made of it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct StoredEvent {
    pub stored_event_id: Uuid,
    /// Its position in the tenant's event stream: a cursor for `after`.
    pub cursor: String,
    pub id: String,
    pub source: String,
    #[serde(rename = "type")]
    pub event_type: String,
    pub customer: String,
    #[serde(with = "super::time")]
    pub time: DateTime<Utc>,
    #[schema(value_type = Object)]
    pub properties: Map<String, Value>,
    pub tier: String,
    pub tier_detail: String,
    /// `ACCEPTED`.
    pub status: String,
    pub flags: Vec<String>,
    pub gates: Gates,
    pub validation_hash: String,
    #[serde(with = "super::time")]
    pub received_at: DateTime<Utc>,
    /// The ingest node that stored it.
    pub node: String,
    /// `PENDING`, `ENRICHED`, `UNATTRIBUTED` or `UNMETERED`.
    pub enrichment: String,
    pub revenue: Vec<RevenueLine>,
}

/// A rejected event as stored: its payload, reason and gate verdicts.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Rejection {
    pub stored_event_id: Uuid,
    pub cursor: String,
    pub id: Option<String>,
    pub source: Option<String>,
    #[serde(rename = "type")]
    pub event_type: Option<String>,
    pub customer: Option<String>,
    pub reason: String,
    pub message: String,
    pub gates: Gates,
    /// The event as it was received.
    pub payload: String,
    pub tier: String,
    pub tier_detail: String,
    #[serde(with = "super::time")]
    pub received_at: DateTime<Utc>,
    pub node: String,
}
