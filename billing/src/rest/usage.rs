//! Revenue, margin and entitlements, read from the ledger the
//! RevenueEstimator writes at enrichment.

use aforo_api::v1::usage::{
    Cohort, Cohorts, Entitlement, EventRevenue, Hourly, RevenueLine, RevenueReport, RevenueRow,
};
use aforo_api::{ApiError, ApiPath, ApiQuery, Authed};
use aforo_store::RevenueQuery;
use axum::Json;
use axum::extract::State;
use chrono::{DateTime, Utc};
use serde::Deserialize;
use utoipa::IntoParams;

use super::{BillingState, parse_uuid};

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct RevenueParams {
    customer: Option<String>,
    /// Event time from (inclusive).
    from: Option<DateTime<Utc>>,
    /// Event time to (exclusive).
    to: Option<DateTime<Utc>>,
}

/// Revenue, cost and margin by customer, meter and currency.
#[utoipa::path(operation_id = "get_revenue", get, path = "/v1/revenue", tag = "usage",
    params(RevenueParams),
    responses((status = 200, body = RevenueReport)))]
pub(super) async fn revenue(
    State(state): State<BillingState>,
    Authed(tenant): Authed,
    ApiQuery(q): ApiQuery<RevenueParams>,
) -> Result<Json<RevenueReport>, ApiError> {
    let query = RevenueQuery {
        customer: q.customer,
        from: q.from,
        to: q.to,
    };
    let rows = state.usage.revenue(tenant.id, &query).await?;
    Ok(Json(RevenueReport {
        rows: rows.iter().map(RevenueRow::from).collect(),
    }))
}

/// What each meter made of one stored event.
#[utoipa::path(operation_id = "get_event_revenue", get, path = "/v1/events/{id}/revenue", tag = "usage",
    params(("id" = uuid::Uuid, Path, description = "The event's stored_event_id")),
    responses((status = 200, body = EventRevenue)))]
pub(super) async fn event_revenue(
    State(state): State<BillingState>,
    Authed(tenant): Authed,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<EventRevenue>, ApiError> {
    let id = parse_uuid("a stored event", &id)?;
    let lines = state.usage.ledger_of(tenant.id, &[id]).await?;
    Ok(Json(EventRevenue {
        lines: lines.iter().map(RevenueLine::from).collect(),
    }))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct HourlyParams {
    customer: Option<String>,
}

/// Revenue and cost per hour of event time over the last 24 hours.
#[utoipa::path(operation_id = "get_hourly_revenue", get, path = "/v1/revenue/hourly", tag = "usage",
    params(HourlyParams),
    responses((status = 200, body = Hourly)))]
pub(super) async fn hourly(
    State(state): State<BillingState>,
    Authed(tenant): Authed,
    ApiQuery(q): ApiQuery<HourlyParams>,
) -> Result<Json<Hourly>, ApiError> {
    let rows = state
        .usage
        .last_24_hours(tenant.id, q.customer, state.usage.now())
        .await?;
    Ok(Json(Hourly {
        hours: rows.iter().map(Into::into).collect(),
    }))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct CohortParams {
    /// The customer metadata key to group by.
    key: String,
    from: Option<DateTime<Utc>>,
    to: Option<DateTime<Utc>>,
}

/// Revenue, cost and margin by the value of one customer metadata key.
#[utoipa::path(operation_id = "get_margin_cohorts", get, path = "/v1/margin/cohorts", tag = "usage",
    params(CohortParams),
    responses((status = 200, body = Cohorts)))]
pub(super) async fn cohorts(
    State(state): State<BillingState>,
    Authed(tenant): Authed,
    ApiQuery(q): ApiQuery<CohortParams>,
) -> Result<Json<Cohorts>, ApiError> {
    let query = RevenueQuery {
        customer: None,
        from: q.from,
        to: q.to,
    };
    let rows = state.usage.cohorts(tenant.id, &q.key, &query).await?;
    Ok(Json(Cohorts {
        key: q.key,
        cohorts: rows
            .into_iter()
            .map(|c| Cohort {
                cohort: c.cohort,
                currency: c.currency,
                customers: c.customers as u64,
                revenue: c.revenue,
                cost: c.cost,
                margin: c.revenue - c.cost,
            })
            .collect(),
    }))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct EntitlementParams {
    customer: String,
    meter: String,
}

/// Included, used and remaining units of one meter in the current period.
#[utoipa::path(operation_id = "get_entitlement", get, path = "/v1/entitlements", tag = "usage",
    params(EntitlementParams),
    responses((status = 200, body = Entitlement)))]
pub(super) async fn entitlement(
    State(state): State<BillingState>,
    Authed(tenant): Authed,
    ApiQuery(q): ApiQuery<EntitlementParams>,
) -> Result<Json<Entitlement>, ApiError> {
    let e = state
        .usage
        .entitlement(tenant.id, &q.customer, &q.meter, state.usage.now())
        .await?
        .ok_or_else(|| {
            ApiError::not_found(format!(
                "{:?} has no subscription that charges meter {:?} now",
                q.customer, q.meter
            ))
        })?;
    Ok(Json(Entitlement {
        customer: e.customer,
        meter: e.meter,
        rate_plan: e.rate_plan,
        period_start: e.period_start,
        included: e.included,
        used: e.used,
        remaining: e.remaining,
    }))
}
