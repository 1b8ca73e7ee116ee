//! What the webhook and batch front doors keep beside the events: webhook
//! deliveries that did not become events, and batch uploads with their
//! per-row results.

use chrono::{DateTime, Utc};
use uuid::Uuid;

/// A webhook delivery turned away, with everything it arrived with.
#[derive(Clone, Debug, PartialEq)]
pub struct NewWebhookRejection {
    pub stored_id: Uuid,
    /// `None` when the URL named no known tenant.
    pub tenant: Option<Uuid>,
    pub namespace: String,
    pub source: String,
    pub provider: Option<String>,
    /// A stable code, e.g. `WEBHOOK_SIGNATURE_INVALID`.
    pub reason: String,
    /// What exactly was wrong (kept here, never told to the caller).
    pub message: String,
    /// `(name, value)` pairs in arrival order.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub received_at: DateTime<Utc>,
    pub node: String,
}

#[derive(Clone, Debug, PartialEq)]
pub struct StoredWebhookRejection {
    pub seq: i64,
    pub rejection: NewWebhookRejection,
}

#[derive(Clone, Debug, Default)]
pub struct WebhookRejectionQuery {
    pub source: Option<String>,
    pub reason: Option<String>,
    pub after: Option<i64>,
    pub limit: u32,
}

/// Where a batch upload stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BatchStatus {
    /// Rows are still arriving (or the upload broke off and the server
    /// stopped before it could say so).
    Running,
    Complete,
    /// The upload stopped early; `error` says why. Rows before it stand.
    Failed,
}

impl BatchStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            BatchStatus::Running => "RUNNING",
            BatchStatus::Complete => "COMPLETE",
            BatchStatus::Failed => "FAILED",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        [
            BatchStatus::Running,
            BatchStatus::Complete,
            BatchStatus::Failed,
        ]
        .into_iter()
        .find(|s| s.as_str() == text)
    }
}

/// A batch upload and its counters.
#[derive(Clone, Debug, PartialEq)]
pub struct Batch {
    pub id: Uuid,
    pub tenant: Uuid,
    /// `ndjson` or `csv`.
    pub format: String,
    pub status: BatchStatus,
    pub rows: i64,
    pub accepted: i64,
    pub duplicates: i64,
    pub rejected: i64,
    pub error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
}

/// The results of consecutive rows of a batch, one NDJSON line per row.
#[derive(Clone, Debug, PartialEq)]
pub struct BatchResultChunk {
    pub chunk: i64,
    /// 1-based number of the chunk's first row.
    pub first_row: i64,
    pub rows: i64,
    pub accepted: i64,
    pub duplicates: i64,
    pub rejected: i64,
    pub results: String,
}
