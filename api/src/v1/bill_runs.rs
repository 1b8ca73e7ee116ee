//! `/v1/bill-runs`: what a caller asks for. What a run did is the billing
//! domain's `RunReport`, stored and answered as it is.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

/// `POST /v1/bill-runs`; every field is optional, and so is the body.
#[derive(Clone, Debug, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BillRunRequest {
    /// Bill the periods that ended at or before this instant (default now).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub as_of: Option<DateTime<Utc>>,
    /// Events stored after this instant wait for a later invoice (default
    /// now minus the settle delay).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cutoff: Option<DateTime<Utc>>,
    /// Only this subscription (a retry).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subscription: Option<Uuid>,
}

/// `POST /v1/bill-runs/replay`: recompute a billed period from its events
/// and compare with what was stored, byte for byte.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReplayRequest {
    pub period_start: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subscription: Option<Uuid>,
}
