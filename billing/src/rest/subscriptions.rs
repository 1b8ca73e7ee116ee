//! `/v1/subscriptions`: subscriptions, plan changes and discounts. Writes go
//! through the business-data service, as gRPC's do: it checks the input and,
//! once stored, drops the customer's cached context and requeues its waiting
//! events, so the next event is priced by what was just written.

use aforo_api::v1::Page;
use aforo_api::v1::subscriptions::{
    Discount, DiscountRequest, PlanChangeRequest, Subscription, SubscriptionRequest,
};
use aforo_api::{ApiError, ApiJson, ApiPath, ApiQuery, Authed};
use aforo_store::SubscriptionInput;
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;
use utoipa::IntoParams;

use super::{BillingState, parse_uuid};

#[utoipa::path(operation_id = "create_subscription", post, path = "/v1/subscriptions", tag = "subscriptions",
    request_body = SubscriptionRequest,
    responses((status = 201, body = Subscription)))]
pub(super) async fn create(
    State(state): State<BillingState>,
    Authed(tenant): Authed,
    ApiJson(body): ApiJson<SubscriptionRequest>,
) -> Result<(StatusCode, Json<Subscription>), ApiError> {
    let sub = state
        .business
        .create_subscription(
            tenant.id,
            &SubscriptionInput {
                customer: body.customer,
                rate_plan: body.rate_plan,
                starts_at: body.starts_at,
                ends_at: body.ends_at,
                billing_anchor_day: body.billing_anchor_day,
            },
        )
        .await?;
    Ok((StatusCode::CREATED, Json((&sub).into())))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct SubscriptionQuery {
    /// Only this customer's.
    customer: Option<String>,
}

/// Subscriptions with their phases (one page: all of them).
#[utoipa::path(operation_id = "list_subscriptions", get, path = "/v1/subscriptions", tag = "subscriptions",
    params(SubscriptionQuery),
    responses((status = 200, body = Page<Subscription>)))]
pub(super) async fn list(
    State(state): State<BillingState>,
    Authed(tenant): Authed,
    ApiQuery(q): ApiQuery<SubscriptionQuery>,
) -> Result<Json<Page<Subscription>>, ApiError> {
    let subs = state
        .business
        .subscriptions(tenant.id, q.customer.as_deref())
        .await?;
    Ok(Json(Page {
        total: Some(subs.len() as u64),
        items: subs.iter().map(Subscription::from).collect(),
        next_cursor: None,
    }))
}

/// Move a subscription to another rate plan from `effective_at`.
#[utoipa::path(operation_id = "change_plan", post, path = "/v1/subscriptions/{id}/plan", tag = "subscriptions",
    params(("id" = uuid::Uuid, Path, description = "The subscription's id")),
    request_body = PlanChangeRequest,
    responses((status = 200, body = Subscription)))]
pub(super) async fn change_plan(
    State(state): State<BillingState>,
    Authed(tenant): Authed,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<PlanChangeRequest>,
) -> Result<Json<Subscription>, ApiError> {
    let id = parse_uuid("a subscription", &id)?;
    let sub = state
        .business
        .change_plan(tenant.id, id, &body.rate_plan, body.effective_at)
        .await?;
    Ok(Json((&sub).into()))
}

/// A discount on the subscription's invoices: a percentage or an amount,
/// optionally only within `[valid_from, valid_until)`.
#[utoipa::path(operation_id = "add_discount", post, path = "/v1/subscriptions/{id}/discounts", tag = "subscriptions",
    params(("id" = uuid::Uuid, Path, description = "The subscription's id")),
    request_body = DiscountRequest,
    responses((status = 200, body = Discount)))]
pub(super) async fn add_discount(
    State(state): State<BillingState>,
    Authed(tenant): Authed,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<DiscountRequest>,
) -> Result<Json<Discount>, ApiError> {
    let sub = parse_uuid("a subscription", &id)?;
    let d = state
        .invoices
        .add_discount(
            tenant.id,
            sub,
            body.percent,
            body.amount,
            body.valid_from,
            body.valid_until,
        )
        .await?;
    Ok(Json((&d).into()))
}
