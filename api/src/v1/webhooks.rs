//! `/v1/webhooks`: deliveries from providers, and the ones set aside.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::events::IngestResponse;

/// What a verified delivery became: a result per mapped event, and the
/// provider's delivery id (its idempotency key).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Delivered {
    #[serde(flatten)]
    pub outcome: IngestResponse,
    pub delivery_id: Option<String>,
}

/// A delivery no mapping selects: acknowledged, so the provider stops
/// retrying, and stored for review.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Ignored {
    /// `IGNORED`.
    pub status: String,
}

/// A delivery set aside: what arrived, and why it was not taken.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct WebhookRejection {
    pub stored_id: Uuid,
    pub cursor: String,
    pub namespace: String,
    pub source: String,
    pub provider: Option<String>,
    /// A stable code, e.g. `WEBHOOK_SIGNATURE_INVALID`.
    pub reason: String,
    /// What exactly was wrong (never told to the caller).
    pub message: String,
    /// `[name, value]` pairs in arrival order.
    #[schema(value_type = Vec<Vec<String>>)]
    pub headers: Vec<(String, String)>,
    /// The body, when it is UTF-8.
    pub body: Option<String>,
    /// The body, always.
    pub body_base64: String,
    #[serde(with = "super::time")]
    pub received_at: DateTime<Utc>,
    pub node: String,
}

/// What `POST /v1/webhooks/{namespace}/{source}` answers with 200.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum WebhookAnswer {
    Delivered(Delivered),
    Ignored(Ignored),
}
