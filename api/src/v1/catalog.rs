//! `/v1/catalog`: applying declarations and reading the versions they made.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

/// `POST /v1/catalog/apply`: the catalog's resources (Product, Meter,
/// RatePlan, WebhookSource, UsageAlert, MeteringPipeline) as Kubernetes
/// objects, applied all or nothing.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct ApplyRequest {
    #[schema(value_type = Vec<Object>)]
    pub resources: Vec<Value>,
}

/// One immutable catalog version.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct CatalogVersion {
    pub version: i64,
    /// SHA-256 of the canonical snapshot: equal content, equal hash.
    pub content_hash: String,
    /// When it takes effect; `null` means from when it was applied.
    #[serde(with = "super::time::option")]
    pub effective_from: Option<DateTime<Utc>>,
    #[serde(with = "super::time")]
    pub applied_at: DateTime<Utc>,
    /// The compiled catalog; only on the routes that read one version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub snapshot: Option<Value>,
}

/// What an apply did: the version in force after it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Applied {
    #[serde(flatten)]
    pub version: CatalogVersion,
    /// Whether this apply created the version (false: the content was
    /// already the latest version).
    pub created: bool,
    /// Resources that were not part of the catalog, and why.
    pub skipped: Vec<String>,
}
