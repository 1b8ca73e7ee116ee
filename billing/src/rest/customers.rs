//! `/v1/customers`.

use aforo_api::v1::Page;
use aforo_api::v1::customers::{Customer, CustomerRequest, ImportResult, ImportRow, ImportStatus};
use aforo_api::{ApiError, ApiJson, ApiPath, ApiQuery, ApiText, Authed};
use aforo_store::CustomerInput;
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;
use utoipa::IntoParams;

use super::BillingState;
use crate::customers::{self as business, AdminError};

/// Create a customer, or update the one with this `id`.
#[utoipa::path(operation_id = "upsert_customer", post, path = "/v1/customers", tag = "customers",
    request_body = CustomerRequest,
    responses((status = 201, description = "Created", body = Customer),
              (status = 200, description = "Updated", body = Customer)))]
pub(super) async fn upsert(
    State(state): State<BillingState>,
    Authed(tenant): Authed,
    ApiJson(body): ApiJson<CustomerRequest>,
) -> Result<(StatusCode, Json<Customer>), ApiError> {
    let input = CustomerInput {
        external_id: body.id,
        name: body.name,
        currency: body.currency,
        tax_region: body.tax_region,
        metadata: body.metadata,
    };
    let (customer, created) = state.business.upsert_customer(tenant.id, &input).await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json((&customer).into())))
}

/// A cursor over a listing ordered by a key.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct ListQuery {
    /// `next_cursor` of the previous page.
    after: Option<String>,
    /// 1 to 1000; 100 when absent.
    limit: Option<u32>,
}

/// Customers by id.
#[utoipa::path(operation_id = "list_customers", get, path = "/v1/customers", tag = "customers",
    params(ListQuery),
    responses((status = 200, body = Page<Customer>)))]
pub(super) async fn list(
    State(state): State<BillingState>,
    Authed(tenant): Authed,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Json<Page<Customer>>, ApiError> {
    let (page, limit) = state
        .business
        .customers(tenant.id, q.after.as_deref(), q.limit.unwrap_or(100))
        .await?;
    let page = Page::of(page, limit, |c| c.external_id.clone());
    Ok(Json(page.map(|c| (&c).into())))
}

#[utoipa::path(operation_id = "get_customer", get, path = "/v1/customers/{id}", tag = "customers",
    params(("id" = String, Path, description = "The customer's id")),
    responses((status = 200, body = Customer)))]
pub(super) async fn get(
    State(state): State<BillingState>,
    Authed(tenant): Authed,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<Customer>, ApiError> {
    let c = state
        .business
        .customer(tenant.id, &id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no customer {id:?}")))?;
    Ok(Json((&c).into()))
}

/// Create or update customers from CSV: `external_id,name,currency,tax_region`
/// and any further columns as metadata. Every row gets its own result; a bad
/// row does not stop the others.
#[utoipa::path(operation_id = "import_customers", post, path = "/v1/customers/import", tag = "customers",
    request_body(content = String, content_type = "text/csv"),
    responses((status = 200, body = ImportResult)))]
pub(super) async fn import(
    State(state): State<BillingState>,
    Authed(tenant): Authed,
    ApiText(body): ApiText,
) -> Result<Json<ImportResult>, ApiError> {
    let rows = business::read_csv(&body).map_err(ApiError::invalid)?;
    let mut out = ImportResult {
        created: 0,
        updated: 0,
        failed: 0,
        results: Vec::with_capacity(rows.len()),
    };
    for row in rows {
        let (status, id, reason) = match row {
            Err(reason) => (ImportStatus::Failed, None, Some(reason)),
            Ok(input) => match state.business.upsert_customer(tenant.id, &input).await {
                Ok((c, true)) => (ImportStatus::Created, Some(c.external_id), None),
                Ok((c, false)) => (ImportStatus::Updated, Some(c.external_id), None),
                Err(AdminError::Invalid(reason)) => (
                    ImportStatus::Failed,
                    None,
                    Some(format!("{}: {reason}", input.external_id)),
                ),
                Err(e) => return Err(e.into()),
            },
        };
        match status {
            ImportStatus::Created => out.created += 1,
            ImportStatus::Updated => out.updated += 1,
            ImportStatus::Failed => out.failed += 1,
        }
        out.results.push(ImportRow { status, id, reason });
    }
    Ok(Json(out))
}
