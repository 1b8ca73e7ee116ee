//! `/v1/batches`: streamed CSV and NDJSON uploads and their per-row results.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::ErrorDetail;
use super::events::EventStatus;

/// An upload: its status and counters.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Batch {
    pub batch_id: Uuid,
    /// `csv` or `ndjson`.
    pub format: String,
    pub status: BatchStatus,
    /// Rows read so far.
    pub rows: i64,
    pub accepted: i64,
    pub duplicates: i64,
    pub rejected: i64,
    /// Why the upload stopped, when it failed.
    pub error: Option<String>,
    #[serde(with = "super::time")]
    pub created_at: DateTime<Utc>,
    #[serde(with = "super::time::option")]
    pub finished_at: Option<DateTime<Utc>>,
    /// Where the per-row results are.
    pub results: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum BatchStatus {
    Running,
    Complete,
    /// Stopped early: the rows before the stop are stored, and uploading the
    /// file again is safe (stored rows answer `DUPLICATE`).
    Failed,
}

/// An upload that stopped early: the error, and the batch as far as it got.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct BatchFailed {
    pub error: ErrorDetail,
    pub batch: Batch,
}

/// One line of `GET /v1/batches/{id}/results` (NDJSON: one per row).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RowResult {
    /// The line the row starts on, from 1 (in CSV the header is row 1).
    pub row: u64,
    /// The event's own id, as sent (empty when it had none).
    pub id: String,
    pub status: EventStatus,
    pub stored_event_id: Uuid,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub flags: Vec<String>,
}
