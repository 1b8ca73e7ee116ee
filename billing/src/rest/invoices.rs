//! `/v1/invoices` and the lineage behind each line: its events, their
//! attribution, the audit export and per-event Merkle proofs.

use std::collections::BTreeMap;

use aforo_api::v1::Page;
use aforo_api::v1::invoices::InvoiceSummary;
use aforo_api::{ApiError, ApiPath, ApiQuery, Authed};
use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::{BillingState, parse_uuid};
use crate::billrun::audit::AuditExport;
use crate::billrun::{Line, QuotaState, RolloverBucket, Route};
use crate::invoices::{Attribution, EventProof, LineEvent};

/// One invoice: its summary, the settled document's contents, and the
/// document itself exactly as stored and hashed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Invoice {
    #[serde(flatten)]
    pub summary: InvoiceSummary,
    pub rate_plan: String,
    pub catalog_version: i64,
    pub lines: Vec<Line>,
    #[schema(value_type = String)]
    pub subtotal: Decimal,
    #[schema(value_type = String)]
    pub discount: Decimal,
    #[schema(value_type = String)]
    pub tax: Decimal,
    pub flags: Vec<String>,
    pub quotas: BTreeMap<String, QuotaState>,
    pub rollover: BTreeMap<String, Vec<RolloverBucket>>,
    pub routes: Vec<Route>,
    /// Canonical JSON; `document_hash` is its SHA-256.
    pub document: String,
}

/// An invoice's lines.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct InvoiceLines {
    pub invoice: Uuid,
    pub number: String,
    pub currency: String,
    pub lines: Vec<Line>,
}

/// A line's usage by source and tier.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct LineAttribution {
    pub attribution: Vec<Attribution>,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct InvoiceListQuery {
    customer: Option<String>,
    /// A subscription id.
    subscription: Option<String>,
    /// `next_cursor` of the previous page (an invoice number).
    after: Option<String>,
    /// 1 to 1000; 100 when absent.
    limit: Option<u32>,
}

/// Invoices in number order.
#[utoipa::path(operation_id = "list_invoices", get, path = "/v1/invoices", tag = "invoices",
    params(InvoiceListQuery),
    responses((status = 200, body = Page<InvoiceSummary>)))]
pub(super) async fn list(
    State(state): State<BillingState>,
    Authed(tenant): Authed,
    ApiQuery(q): ApiQuery<InvoiceListQuery>,
) -> Result<Json<Page<InvoiceSummary>>, ApiError> {
    let limit = q.limit.unwrap_or(100).clamp(1, aforo_store::MAX_PAGE_SIZE);
    let subscription = q
        .subscription
        .as_deref()
        .map(|s| {
            s.parse::<Uuid>()
                .map_err(|_| ApiError::bad_query(format!("subscription {s:?} is not an id")))
        })
        .transpose()?;
    let page = state
        .invoices
        .list(
            tenant.id,
            &aforo_store::billing::InvoiceQuery {
                customer: q.customer,
                subscription,
                after: q.after,
                limit,
            },
        )
        .await?;
    let page = Page::of(page, limit, |i| i.number.clone());
    Ok(Json(page.map(|i| (&i).into())))
}

/// One invoice, by id or number.
#[utoipa::path(operation_id = "get_invoice", get, path = "/v1/invoices/{invoice}", tag = "invoices",
    params(("invoice" = String, Path, description = "An invoice id or number")),
    responses((status = 200, body = Invoice)))]
pub(super) async fn show(
    State(state): State<BillingState>,
    Authed(tenant): Authed,
    ApiPath(invoice): ApiPath<String>,
) -> Result<Json<Invoice>, ApiError> {
    let (stored, parsed) = state.invoices.get(tenant.id, &invoice).await?;
    Ok(Json(Invoice {
        summary: (&stored).into(),
        rate_plan: parsed.rate_plan,
        catalog_version: parsed.catalog_version,
        lines: parsed.lines,
        subtotal: parsed.subtotal,
        discount: parsed.discount,
        tax: parsed.tax,
        flags: parsed.flags,
        quotas: parsed.quotas,
        rollover: parsed.rollover,
        routes: parsed.routes,
        document: stored.document,
    }))
}

/// An invoice's lines.
#[utoipa::path(operation_id = "get_invoice_lines", get, path = "/v1/invoices/{invoice}/lines", tag = "invoices",
    params(("invoice" = String, Path, description = "An invoice id or number")),
    responses((status = 200, body = InvoiceLines)))]
pub(super) async fn lines(
    State(state): State<BillingState>,
    Authed(tenant): Authed,
    ApiPath(invoice): ApiPath<String>,
) -> Result<Json<InvoiceLines>, ApiError> {
    let (stored, parsed) = state.invoices.get(tenant.id, &invoice).await?;
    Ok(Json(InvoiceLines {
        invoice: stored.id,
        number: stored.number,
        currency: stored.currency,
        lines: parsed.lines,
    }))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct LineEventsQuery {
    /// `next_cursor` of the previous page.
    after: Option<String>,
    /// 1 to 1000; 100 when absent.
    limit: Option<usize>,
}

/// The events behind a line, in line order, with what the RevenueEstimator
/// made of each. `total` is the line's event count.
#[utoipa::path(operation_id = "list_line_events", get, path = "/v1/invoices/{invoice}/lines/{line}/events", tag = "invoices",
    params(("invoice" = String, Path, description = "An invoice id or number"),
           ("line" = u32, Path, description = "The line number, from 1"),
           LineEventsQuery),
    responses((status = 200, body = Page<LineEvent>)))]
pub(super) async fn line_events(
    State(state): State<BillingState>,
    Authed(tenant): Authed,
    ApiPath((invoice, line)): ApiPath<(String, u32)>,
    ApiQuery(q): ApiQuery<LineEventsQuery>,
) -> Result<Json<Page<LineEvent>>, ApiError> {
    let offset = match q.after.as_deref() {
        None | Some("") => 0,
        Some(c) => c.parse::<usize>().map_err(|_| {
            ApiError::bad_query(format!(
                "`after` {c:?} is not a cursor from a previous page"
            ))
        })?,
    };
    let page = state
        .invoices
        .line_events(tenant.id, &invoice, line, offset, q.limit.unwrap_or(100))
        .await?;
    Ok(Json(Page {
        items: page.events,
        next_cursor: page.next_offset.map(|n| n.to_string()),
        total: Some(page.total as u64),
    }))
}

/// A line's usage by source and tier.
#[utoipa::path(operation_id = "get_line_attribution", get, path = "/v1/invoices/{invoice}/lines/{line}/attribution", tag = "invoices",
    params(("invoice" = String, Path, description = "An invoice id or number"),
           ("line" = u32, Path, description = "The line number, from 1")),
    responses((status = 200, body = LineAttribution)))]
pub(super) async fn attribution(
    State(state): State<BillingState>,
    Authed(tenant): Authed,
    ApiPath((invoice, line)): ApiPath<(String, u32)>,
) -> Result<Json<LineAttribution>, ApiError> {
    let attribution = state
        .invoices
        .attribution(tenant.id, &invoice, line)
        .await?;
    Ok(Json(LineAttribution { attribution }))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct AuditQuery {
    /// `json` (default) or `csv`.
    format: Option<String>,
}

/// The audit export: the document, every line's events with their
/// validation hashes, and a Merkle proof per event.
#[utoipa::path(operation_id = "export_audit", get, path = "/v1/invoices/{invoice}/audit", tag = "invoices",
    params(("invoice" = String, Path, description = "An invoice id or number"), AuditQuery),
    responses((status = 200, content(
        (AuditExport = "application/json"),
        (String = "text/csv")))))]
pub(super) async fn audit(
    State(state): State<BillingState>,
    Authed(tenant): Authed,
    ApiPath(invoice): ApiPath<String>,
    ApiQuery(q): ApiQuery<AuditQuery>,
) -> Result<Response, ApiError> {
    let format = q.format.as_deref().unwrap_or("json");
    if !matches!(format, "json" | "csv") {
        return Err(ApiError::bad_query(format!(
            "format {format:?} is not json or csv"
        )));
    }
    let export = state.invoices.audit(&tenant, &invoice).await?;
    if format == "json" {
        return Ok(Json(export).into_response());
    }
    let body = crate::billrun::audit::to_csv(&export)
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "EXPORT_FAILED", e))?;
    Ok(([(header::CONTENT_TYPE, "text/csv; charset=utf-8")], body).into_response())
}

/// Where an event was billed, with the Merkle proof that it is in the
/// line's root.
#[utoipa::path(operation_id = "get_event_proof", get, path = "/v1/events/{id}/proof", tag = "invoices",
    params(("id" = uuid::Uuid, Path, description = "The event's stored_event_id")),
    responses((status = 200, body = EventProof)))]
pub(super) async fn proof(
    State(state): State<BillingState>,
    Authed(tenant): Authed,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<EventProof>, ApiError> {
    let event = parse_uuid("a stored event", &id)?;
    Ok(Json(state.invoices.proof(tenant.id, event).await?))
}
