//! `/v1/bill-runs`.

use aforo_api::v1::Page;
use aforo_api::v1::bill_runs::{BillRunRequest, ReplayRequest};
use aforo_api::{ApiError, ApiJson, ApiQuery, Authed, MaybeJson};
use axum::Json;
use axum::extract::State;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::BillingState;
use crate::billrun::replay::ReplayResult;
use crate::billrun::runner::RunReport;

/// A recorded bill run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct BillRun {
    pub id: Uuid,
    #[serde(with = "aforo_api::v1::time")]
    pub as_of: DateTime<Utc>,
    #[serde(with = "aforo_api::v1::time")]
    pub cutoff: DateTime<Utc>,
    #[serde(with = "aforo_api::v1::time")]
    pub started_at: DateTime<Utc>,
    #[serde(with = "aforo_api::v1::time")]
    pub finished_at: DateTime<Utc>,
    pub invoiced: i64,
    pub failed: i64,
    /// What the run did; `null` if the stored report cannot be read.
    pub report: Option<RunReport>,
}

/// What a replay found.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Replay {
    /// Every recomputed document equals the stored one.
    pub identical: bool,
    pub invoices: Vec<ReplayResult>,
}

/// Bill every subscription period that has ended: each gets one invoice,
/// whatever runs at the same time or again.
#[utoipa::path(operation_id = "run_bill", post, path = "/v1/bill-runs", tag = "bill-runs",
    request_body(content = Option<BillRunRequest>, description = "Optional"),
    responses((status = 200, body = RunReport)))]
pub(super) async fn run(
    State(state): State<BillingState>,
    Authed(tenant): Authed,
    MaybeJson(body): MaybeJson<BillRunRequest>,
) -> Result<Json<RunReport>, ApiError> {
    let body = body.unwrap_or_default();
    let report = state
        .invoices
        .run(tenant.id, body.as_of, body.cutoff, body.subscription)
        .await?;
    Ok(Json(report))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct RunsQuery {
    /// 1 to 1000; 20 when absent.
    limit: Option<u32>,
}

/// Recorded runs, latest first (one page: the latest `limit`).
#[utoipa::path(operation_id = "list_bill_runs", get, path = "/v1/bill-runs", tag = "bill-runs",
    params(RunsQuery),
    responses((status = 200, body = Page<BillRun>)))]
pub(super) async fn list(
    State(state): State<BillingState>,
    Authed(tenant): Authed,
    ApiQuery(q): ApiQuery<RunsQuery>,
) -> Result<Json<Page<BillRun>>, ApiError> {
    let limit = q.limit.unwrap_or(20).clamp(1, aforo_store::MAX_PAGE_SIZE);
    let runs = state.invoices.runs(tenant.id, limit).await?;
    Ok(Json(Page {
        items: runs
            .into_iter()
            .map(|r| BillRun {
                id: r.id,
                as_of: r.as_of,
                cutoff: r.cutoff,
                started_at: r.started_at,
                finished_at: r.finished_at,
                invoiced: r.invoiced,
                failed: r.failed,
                report: serde_json::from_str(&r.report).ok(),
            })
            .collect(),
        next_cursor: None,
        total: None,
    }))
}

/// Recompute a billed period from its events and compare each invoice with
/// the stored document, byte for byte.
#[utoipa::path(operation_id = "replay_period", post, path = "/v1/bill-runs/replay", tag = "bill-runs",
    request_body = ReplayRequest,
    responses((status = 200, body = Replay)))]
pub(super) async fn replay(
    State(state): State<BillingState>,
    Authed(tenant): Authed,
    ApiJson(body): ApiJson<ReplayRequest>,
) -> Result<Json<Replay>, ApiError> {
    let results = state
        .invoices
        .replay(tenant.id, body.period_start, body.subscription)
        .await?;
    Ok(Json(Replay {
        identical: results.iter().all(|r| r.identical),
        invoices: results,
    }))
}
