//! `/v1/catalog`.

use aforo_api::v1::Page;
use aforo_api::v1::catalog::{Applied, ApplyRequest, CatalogVersion};
use aforo_api::{ApiError, ApiJson, ApiPath, Authed};
use axum::Json;
use axum::extract::State;

use super::BillingState;
use crate::catalog::CatalogApi;

fn full(v: &aforo_store::CatalogVersion) -> Result<CatalogVersion, ApiError> {
    CatalogVersion::full(v).map_err(|e| {
        ApiError::new(
            axum::http::StatusCode::INTERNAL_SERVER_ERROR,
            "INTERNAL",
            format!("catalog version {} cannot be read back: {e}", v.version),
        )
    })
}

/// Apply the catalog's resources, all or nothing.
///
/// Equal content answers the version in force with `created: false`.
#[utoipa::path(operation_id = "apply_catalog", post, path = "/v1/catalog/apply", tag = "catalog",
    request_body = ApplyRequest,
    responses((status = 200, body = Applied)))]
pub(super) async fn apply(
    State(state): State<BillingState>,
    Authed(tenant): Authed,
    ApiJson(body): ApiJson<ApplyRequest>,
) -> Result<Json<Applied>, ApiError> {
    let values = body
        .resources
        .into_iter()
        .enumerate()
        .map(|(i, v)| (format!("resource {}", i + 1), v))
        .collect();
    let resources = CatalogApi::parse(values)?;
    let applied = state.catalog.apply(tenant.id, &resources).await?;
    Ok(Json(Applied {
        version: CatalogVersion::summary(&applied.catalog.version),
        created: applied.catalog.created,
        skipped: applied.skipped,
    }))
}

/// The version in force, with its compiled snapshot.
#[utoipa::path(operation_id = "get_catalog", get, path = "/v1/catalog", tag = "catalog",
    responses((status = 200, body = CatalogVersion)))]
pub(super) async fn latest(
    State(state): State<BillingState>,
    Authed(tenant): Authed,
) -> Result<Json<CatalogVersion>, ApiError> {
    let v = state
        .catalog
        .get(tenant.id, None)
        .await?
        .ok_or_else(|| ApiError::not_found("no catalog has been applied yet"))?;
    Ok(Json(full(&v)?))
}

/// Every version, oldest first, without snapshots (one page: a tenant has
/// one version per distinct apply).
#[utoipa::path(operation_id = "list_catalog_versions", get, path = "/v1/catalog/versions", tag = "catalog",
    responses((status = 200, body = Page<CatalogVersion>)))]
pub(super) async fn versions(
    State(state): State<BillingState>,
    Authed(tenant): Authed,
) -> Result<Json<Page<CatalogVersion>>, ApiError> {
    let all = state.catalog.list(tenant.id).await?;
    Ok(Json(Page {
        total: Some(all.len() as u64),
        items: all.iter().map(CatalogVersion::summary).collect(),
        next_cursor: None,
    }))
}

/// One version, with its compiled snapshot.
#[utoipa::path(operation_id = "get_catalog_version", get, path = "/v1/catalog/versions/{version}", tag = "catalog",
    params(("version" = i64, Path, description = "The version number")),
    responses((status = 200, body = CatalogVersion)))]
pub(super) async fn version(
    State(state): State<BillingState>,
    Authed(tenant): Authed,
    ApiPath(version): ApiPath<String>,
) -> Result<Json<CatalogVersion>, ApiError> {
    let n: i64 = version
        .parse()
        .map_err(|_| ApiError::bad_path(format!("{version:?} is not a version number")))?;
    let v = state
        .catalog
        .get(tenant.id, Some(n))
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no catalog version {n}")))?;
    Ok(Json(full(&v)?))
}
