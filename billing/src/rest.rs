//! The billing role's HTTP API.
//!
//! | route | what |
//! |---|---|
//! | `POST /v1/catalog/apply` | `{"resources": [...]}`; all or nothing; 422 lists every error |
//! | `GET /v1/catalog` | the version in force, with its snapshot |
//! | `GET /v1/catalog/versions` | every version, without snapshots |
//! | `GET /v1/catalog/versions/{n}` | one version, with its snapshot |
//! | `POST /v1/customers`, `GET /v1/customers`, `GET /v1/customers/{id}` | upsert by external id; list by cursor |
//! | `POST /v1/customers/import` | CSV (`text/csv`); a result per row |
//! | `POST /v1/subscriptions`, `GET /v1/subscriptions?customer=` | create; list with phases |
//! | `POST /v1/subscriptions/{id}/plan` | `{"rate_plan", "effective_at"}`: a plan change |
//! | `GET /v1/revenue?customer=&from=&to=` | revenue, cost and margin by customer, meter and currency, from the ledger |
//! | `GET /v1/events/{id}/revenue` | what each meter made of one stored event |
//! | `GET /v1/revenue/hourly?customer=` | revenue and cost per hour over the last 24 hours |
//! | `GET /v1/margin/cohorts?key=&from=&to=` | revenue, cost and margin by a customer metadata key |
//! | `GET /v1/entitlements?customer=&meter=` | included, used and remaining this period |
//! | `POST /v1/bill-runs` | `{"as_of"?, "cutoff"?, "subscription"?}`: bill the periods that ended |
//! | `GET /v1/bill-runs` | recorded runs, latest first, with their reports |
//! | `POST /v1/bill-runs/replay` | `{"period_start", "subscription"?}`: recompute and diff |
//! | `GET /v1/invoices?customer=&subscription=&after=&limit=` | invoices by number |
//! | `GET /v1/invoices/{id or number}` | one invoice: document, lines, totals, hash |
//! | `GET /v1/invoices/{id}/lines/{n}/events?offset=&limit=` | the events behind a line |
//! | `GET /v1/invoices/{id}/lines/{n}/attribution` | a line's usage by source and tier |
//! | `GET /v1/invoices/{id}/audit?format=json\|csv` | the audit export |
//! | `GET /v1/invoices/{id}/lines` | an invoice's lines |
//! | `GET /v1/events/{id}/proof` | where an event was billed, with its Merkle proof |
//! | `POST /v1/subscriptions/{id}/discounts` | `{"percent" or "amount", "valid_from"?, "valid_until"?}` |

use std::sync::Arc;

use aforo_api::{ApiError, ApiJson, ApiPath, ApiQuery, ApiText, Authed, MaybeJson};
use aforo_store::auth::Authenticator;
use aforo_store::{
    CatalogVersion, Customer, CustomerInput, Store, Subscription, SubscriptionInput,
};
use axum::extract::{FromRef, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, SecondsFormat, Utc};
use serde::Deserialize;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::catalog::CatalogApi;
use crate::customers::{self, AdminError, BusinessData};
use crate::invoices::InvoiceApi;
use crate::usage::UsageApi;

#[derive(Clone)]
pub struct BillingState {
    pub catalog: CatalogApi,
    pub business: BusinessData,
    pub usage: UsageApi,
    pub store: Arc<dyn Store>,
    pub auth: Authenticator,
    pub invoices: InvoiceApi,
}

pub fn router(state: BillingState) -> Router {
    Router::new()
        .route("/v1/catalog", get(latest))
        .route("/v1/catalog/apply", post(apply))
        .route("/v1/catalog/versions", get(versions))
        .route("/v1/catalog/versions/{version}", get(version))
        .route("/v1/customers", get(list_customers).post(upsert_customer))
        .route("/v1/customers/import", post(import_customers))
        .route("/v1/customers/{id}", get(customer))
        .route(
            "/v1/subscriptions",
            get(list_subscriptions).post(create_subscription),
        )
        .route("/v1/subscriptions/{id}/plan", post(change_plan))
        .route("/v1/revenue", get(revenue))
        .route("/v1/revenue/hourly", get(hourly))
        .route("/v1/margin/cohorts", get(cohorts))
        .route("/v1/entitlements", get(entitlement))
        .route("/v1/events/{id}/revenue", get(event_revenue))
        .route("/v1/bill-runs", get(bill_runs).post(run_bill))
        .route("/v1/bill-runs/replay", post(replay_period))
        .route("/v1/invoices", get(list_invoices))
        .route("/v1/invoices/{invoice}", get(show_invoice))
        .route(
            "/v1/invoices/{invoice}/lines/{line}/events",
            get(line_events),
        )
        .route(
            "/v1/invoices/{invoice}/lines/{line}/attribution",
            get(line_attribution),
        )
        .route("/v1/invoices/{invoice}/audit", get(audit_export))
        .route("/v1/invoices/{invoice}/lines", get(invoice_lines))
        .route("/v1/events/{id}/proof", get(event_proof))
        .route("/v1/subscriptions/{id}/discounts", post(add_discount))
        .with_state(state)
}

impl FromRef<BillingState> for Authenticator {
    fn from_ref(state: &BillingState) -> Authenticator {
        state.auth.clone()
    }
}

fn time(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

fn version_json(v: &CatalogVersion, with_snapshot: bool) -> Value {
    let mut out = json!({
        "version": v.version,
        "content_hash": v.content_hash,
        "effective_from": v.effective_from.as_ref().map(time),
        "applied_at": time(&v.applied_at),
    });
    if with_snapshot {
        out["snapshot"] = serde_json::from_str(&v.snapshot).unwrap_or(Value::Null);
    }
    out
}

#[derive(Deserialize)]
struct ApplyBody {
    resources: Vec<Value>,
}

async fn apply(
    State(state): State<BillingState>,
    Authed(tenant): Authed,
    ApiJson(body): ApiJson<ApplyBody>,
) -> Result<Json<Value>, ApiError> {
    let values = body
        .resources
        .into_iter()
        .enumerate()
        .map(|(i, v)| (format!("resource {}", i + 1), v))
        .collect();
    let resources = CatalogApi::parse(values)?;
    let applied = state.catalog.apply(tenant.id, &resources).await?;
    let mut out = version_json(&applied.catalog.version, false);
    out["created"] = json!(applied.catalog.created);
    out["skipped"] = json!(applied.skipped);
    Ok(Json(out))
}

async fn latest(
    State(state): State<BillingState>,
    Authed(tenant): Authed,
) -> Result<Json<Value>, ApiError> {
    let v = state
        .catalog
        .get(tenant.id, None)
        .await?
        .ok_or_else(|| ApiError::not_found("no catalog has been applied yet"))?;
    Ok(Json(version_json(&v, true)))
}

async fn versions(
    State(state): State<BillingState>,
    Authed(tenant): Authed,
) -> Result<Json<Value>, ApiError> {
    let all = state.catalog.list(tenant.id).await?;
    Ok(Json(
        json!({"versions": all.iter().map(|v| version_json(v, false)).collect::<Vec<_>>()}),
    ))
}

async fn version(
    State(state): State<BillingState>,
    Authed(tenant): Authed,
    ApiPath(version): ApiPath<String>,
) -> Result<Json<Value>, ApiError> {
    let n: i64 = version
        .parse()
        .map_err(|_| ApiError::bad_path(format!("{version:?} is not a version number")))?;
    let v = state
        .catalog
        .get(tenant.id, Some(n))
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no catalog version {n}")))?;
    Ok(Json(version_json(&v, true)))
}

fn customer_json(c: &Customer) -> Value {
    json!({
        "id": c.external_id,
        "name": c.name,
        "currency": c.currency,
        "tax_region": c.tax_region,
        "metadata": Value::Object(c.metadata.clone()),
        "created_at": time(&c.created_at),
        "updated_at": time(&c.updated_at),
    })
}

#[derive(Deserialize)]
struct CustomerBody {
    id: String,
    name: String,
    currency: Option<String>,
    tax_region: Option<String>,
    #[serde(default)]
    metadata: serde_json::Map<String, Value>,
}

async fn upsert_customer(
    State(state): State<BillingState>,
    Authed(tenant): Authed,
    ApiJson(body): ApiJson<CustomerBody>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
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
    Ok((status, Json(customer_json(&customer))))
}

#[derive(Deserialize)]
struct ListQuery {
    after: Option<String>,
    limit: Option<u32>,
}

async fn list_customers(
    State(state): State<BillingState>,
    Authed(tenant): Authed,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Json<Value>, ApiError> {
    // The page the store returns is at most MAX_PAGE_SIZE long: compare
    // with what it was asked for, or a larger limit ends the listing early.
    let limit = q.limit.unwrap_or(100).clamp(1, aforo_store::MAX_PAGE_SIZE);
    let page = state
        .store
        .list_customers(tenant.id, q.after.as_deref(), limit)
        .await?;
    let next = (page.len() as u32 >= limit)
        .then(|| page.last().map(|c| c.external_id.clone()))
        .flatten();
    Ok(Json(json!({
        "customers": page.iter().map(customer_json).collect::<Vec<_>>(),
        "next_cursor": next,
    })))
}

async fn customer(
    State(state): State<BillingState>,
    Authed(tenant): Authed,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<Value>, ApiError> {
    let c = state
        .store
        .customer(tenant.id, &id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no customer {id:?}")))?;
    Ok(Json(customer_json(&c)))
}

async fn import_customers(
    State(state): State<BillingState>,
    Authed(tenant): Authed,
    ApiText(body): ApiText,
) -> Result<Json<Value>, ApiError> {
    let rows = customers::read_csv(&body).map_err(ApiError::invalid)?;
    let (mut created, mut updated, mut failed) = (0, 0, 0);
    let mut results = Vec::new();
    for row in rows {
        let result = match row {
            Err(reason) => {
                failed += 1;
                json!({"status": "FAILED", "reason": reason})
            }
            Ok(input) => match state.business.upsert_customer(tenant.id, &input).await {
                Ok((c, true)) => {
                    created += 1;
                    json!({"status": "CREATED", "id": c.external_id})
                }
                Ok((c, false)) => {
                    updated += 1;
                    json!({"status": "UPDATED", "id": c.external_id})
                }
                Err(AdminError::Invalid(reason)) => {
                    failed += 1;
                    json!({"status": "FAILED", "reason": format!("{}: {reason}", input.external_id)})
                }
                Err(e) => return Err(e.into()),
            },
        };
        results.push(result);
    }
    Ok(Json(
        json!({"created": created, "updated": updated, "failed": failed, "results": results}),
    ))
}

fn subscription_json(s: &Subscription) -> Value {
    json!({
        "id": s.id.to_string(),
        "customer": s.customer,
        "starts_at": time(&s.starts_at),
        "ends_at": s.ends_at.as_ref().map(time),
        "billing_anchor_day": s.billing_anchor_day,
        "phases": s.phases.iter().map(|p| json!({
            "rate_plan": p.rate_plan,
            "starts_at": time(&p.starts_at),
            "ends_at": p.ends_at.as_ref().map(time),
            "recorded_at": time(&p.recorded_at),
        })).collect::<Vec<_>>(),
    })
}

#[derive(Deserialize)]
struct SubscriptionBody {
    customer: String,
    rate_plan: String,
    starts_at: DateTime<Utc>,
    ends_at: Option<DateTime<Utc>>,
    billing_anchor_day: Option<u8>,
}

async fn create_subscription(
    State(state): State<BillingState>,
    Authed(tenant): Authed,
    ApiJson(body): ApiJson<SubscriptionBody>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    // Through the business-data service, as gRPC does: it checks the input,
    // and drops the customer's cached context and requeues its waiting
    // events once the subscription is stored.
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
    Ok((StatusCode::CREATED, Json(subscription_json(&sub))))
}

#[derive(Deserialize)]
struct SubscriptionQuery {
    customer: Option<String>,
}

async fn list_subscriptions(
    State(state): State<BillingState>,
    Authed(tenant): Authed,
    ApiQuery(q): ApiQuery<SubscriptionQuery>,
) -> Result<Json<Value>, ApiError> {
    let subs = state
        .store
        .subscriptions(tenant.id, q.customer.as_deref())
        .await?;
    Ok(Json(
        json!({"subscriptions": subs.iter().map(subscription_json).collect::<Vec<_>>()}),
    ))
}

#[derive(Deserialize)]
struct PlanChange {
    rate_plan: String,
    effective_at: DateTime<Utc>,
}

async fn change_plan(
    State(state): State<BillingState>,
    Authed(tenant): Authed,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<PlanChange>,
) -> Result<Json<Value>, ApiError> {
    let id: Uuid = id
        .parse()
        .map_err(|_| ApiError::bad_path(format!("{id:?} is not a subscription id")))?;
    // Through the business-data service: the next event is priced by the
    // new plan at once, not when a cached context expires.
    let sub = state
        .business
        .change_plan(tenant.id, id, &body.rate_plan, body.effective_at)
        .await?;
    Ok(Json(subscription_json(&sub)))
}

#[derive(Deserialize)]
struct RevenueParams {
    customer: Option<String>,
    from: Option<DateTime<Utc>>,
    to: Option<DateTime<Utc>>,
}

/// Money as an exact decimal string.
fn money(d: rust_decimal::Decimal) -> Value {
    Value::String(d.normalize().to_string())
}

async fn revenue(
    State(state): State<BillingState>,
    Authed(tenant): Authed,
    ApiQuery(q): ApiQuery<RevenueParams>,
) -> Result<Json<Value>, ApiError> {
    let rows = state
        .store
        .revenue(
            tenant.id,
            &aforo_store::RevenueQuery {
                customer: q.customer,
                from: q.from,
                to: q.to,
            },
        )
        .await?;
    Ok(Json(json!({
        "rows": rows.iter().map(|r| json!({
            "customer": r.customer,
            "meter": r.meter,
            "currency": r.currency,
            "quantity": money(r.quantity),
            "revenue": money(r.revenue),
            "cost": money(r.cost),
            "margin": money(r.revenue - r.cost),
            "events": r.events,
        })).collect::<Vec<_>>(),
    })))
}

async fn event_revenue(
    State(state): State<BillingState>,
    Authed(tenant): Authed,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<Value>, ApiError> {
    let id: Uuid = id
        .parse()
        .map_err(|_| ApiError::bad_path(format!("{id:?} is not a stored event id")))?;
    let lines = state.store.ledger_of(tenant.id, &[id]).await?;
    Ok(Json(json!({
        "lines": lines.iter().map(|l| json!({
            "meter": l.meter,
            "rate_plan": l.rate_plan,
            "catalog_version": l.catalog_version,
            "quantity": money(l.quantity),
            "revenue": money(l.revenue),
            "currency": l.currency,
            "cost": money(l.cost),
        })).collect::<Vec<_>>(),
    })))
}

#[derive(Deserialize)]
struct HourlyParams {
    customer: Option<String>,
}

async fn hourly(
    State(state): State<BillingState>,
    Authed(tenant): Authed,
    ApiQuery(q): ApiQuery<HourlyParams>,
) -> Result<Json<Value>, ApiError> {
    let rows = state
        .usage
        .last_24_hours(tenant.id, q.customer, state.usage.now())
        .await?;
    Ok(Json(json!({
        "hours": rows.iter().map(|h| json!({
            "hour": time(&h.hour),
            "currency": h.currency,
            "revenue": money(h.revenue),
            "cost": money(h.cost),
            "margin": money(h.revenue - h.cost),
            "events": h.events,
        })).collect::<Vec<_>>(),
    })))
}

#[derive(Deserialize)]
struct CohortParams {
    key: String,
    from: Option<DateTime<Utc>>,
    to: Option<DateTime<Utc>>,
}

async fn cohorts(
    State(state): State<BillingState>,
    Authed(tenant): Authed,
    ApiQuery(q): ApiQuery<CohortParams>,
) -> Result<Json<Value>, ApiError> {
    let query = aforo_store::RevenueQuery {
        customer: None,
        from: q.from,
        to: q.to,
    };
    let rows = state.usage.cohorts(tenant.id, &q.key, &query).await?;
    Ok(Json(json!({
        "key": q.key,
        "cohorts": rows.iter().map(|c| json!({
            "cohort": c.cohort,
            "currency": c.currency,
            "customers": c.customers,
            "revenue": money(c.revenue),
            "cost": money(c.cost),
            "margin": money(c.revenue - c.cost),
        })).collect::<Vec<_>>(),
    })))
}

#[derive(Deserialize)]
struct EntitlementParams {
    customer: String,
    meter: String,
}

async fn entitlement(
    State(state): State<BillingState>,
    Authed(tenant): Authed,
    ApiQuery(q): ApiQuery<EntitlementParams>,
) -> Result<Json<Value>, ApiError> {
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
    Ok(Json(json!({
        "customer": e.customer,
        "meter": e.meter,
        "rate_plan": e.rate_plan,
        "period_start": time(&e.period_start),
        "included": money(e.included),
        "used": money(e.used),
        "remaining": money(e.remaining),
    })))
}

fn parse_time(field: &str, value: &Option<String>) -> Result<Option<DateTime<Utc>>, ApiError> {
    value
        .as_deref()
        .map(|v| {
            DateTime::parse_from_rfc3339(v)
                .map(|t| t.with_timezone(&Utc))
                .map_err(|_| ApiError::invalid(format!("{field} {v:?} is not an RFC 3339 time")))
        })
        .transpose()
}

fn parse_uuid(field: &str, value: &Option<String>) -> Result<Option<Uuid>, ApiError> {
    value
        .as_deref()
        .map(|v| {
            v.parse()
                .map_err(|_| ApiError::invalid(format!("{field} {v:?} is not an id")))
        })
        .transpose()
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RunBody {
    as_of: Option<String>,
    cutoff: Option<String>,
    subscription: Option<String>,
}

async fn run_bill(
    State(state): State<BillingState>,
    Authed(tenant): Authed,
    MaybeJson(body): MaybeJson<RunBody>,
) -> Result<Json<Value>, ApiError> {
    let body = body.unwrap_or_default();
    let report = state
        .invoices
        .run(
            tenant.id,
            parse_time("as_of", &body.as_of)?,
            parse_time("cutoff", &body.cutoff)?,
            parse_uuid("subscription", &body.subscription)?,
        )
        .await?;
    Ok(Json(serde_json::to_value(&report).unwrap_or_default()))
}

async fn bill_runs(
    State(state): State<BillingState>,
    Authed(tenant): Authed,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Json<Value>, ApiError> {
    let runs = state
        .invoices
        .runs(tenant.id, q.limit.unwrap_or(20))
        .await?;
    Ok(Json(json!({
        "runs": runs.iter().map(|r| json!({
            "id": r.id,
            "as_of": time(&r.as_of),
            "cutoff": time(&r.cutoff),
            "started_at": time(&r.started_at),
            "finished_at": time(&r.finished_at),
            "invoiced": r.invoiced,
            "failed": r.failed,
            "report": serde_json::from_str::<Value>(&r.report).unwrap_or(Value::Null),
        })).collect::<Vec<_>>(),
    })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReplayBody {
    period_start: String,
    subscription: Option<String>,
}

async fn replay_period(
    State(state): State<BillingState>,
    Authed(tenant): Authed,
    ApiJson(body): ApiJson<ReplayBody>,
) -> Result<Json<Value>, ApiError> {
    let period = parse_time("period_start", &Some(body.period_start.clone()))?
        .ok_or_else(|| ApiError::invalid("period_start is required"))?;
    let results = state
        .invoices
        .replay(
            tenant.id,
            period,
            parse_uuid("subscription", &body.subscription)?,
        )
        .await?;
    Ok(Json(json!({
        "identical": results.iter().all(|r| r.identical),
        "invoices": results,
    })))
}

#[derive(Deserialize)]
struct InvoiceListQuery {
    customer: Option<String>,
    subscription: Option<String>,
    after: Option<String>,
    limit: Option<u32>,
}

fn invoice_summary(i: &aforo_store::billing::StoredInvoice) -> Value {
    json!({
        "id": i.id,
        "number": i.number,
        "subscription": i.subscription,
        "customer": i.customer,
        "period_start": time(&i.period_start),
        "period_end": time(&i.period_end),
        "cutoff": time(&i.cutoff),
        "currency": i.currency,
        "total": money(i.total),
        "settled_at": time(&i.settled_at),
        "document_hash": i.document_hash,
    })
}

async fn list_invoices(
    State(state): State<BillingState>,
    Authed(tenant): Authed,
    ApiQuery(q): ApiQuery<InvoiceListQuery>,
) -> Result<Json<Value>, ApiError> {
    let limit = q.limit.unwrap_or(100).clamp(1, aforo_store::MAX_PAGE_SIZE);
    let page = state
        .invoices
        .list(
            tenant.id,
            &aforo_store::billing::InvoiceQuery {
                customer: q.customer,
                subscription: parse_uuid("subscription", &q.subscription)?,
                after: q.after,
                limit,
            },
        )
        .await?;
    let next = (page.len() as u32 >= limit)
        .then(|| page.last().map(|i| i.number.clone()))
        .flatten();
    Ok(Json(json!({
        "invoices": page.iter().map(invoice_summary).collect::<Vec<_>>(),
        "next_cursor": next,
    })))
}

async fn show_invoice(
    State(state): State<BillingState>,
    Authed(tenant): Authed,
    ApiPath(invoice): ApiPath<String>,
) -> Result<Json<Value>, ApiError> {
    let (stored, parsed) = state.invoices.get(tenant.id, &invoice).await?;
    let mut out = invoice_summary(&stored);
    let doc = serde_json::to_value(&parsed).unwrap_or_default();
    for field in [
        "lines",
        "subtotal",
        "discount",
        "tax",
        "flags",
        "quotas",
        "rollover",
        "routes",
        "rate_plan",
        "catalog_version",
    ] {
        out[field] = doc[field].clone();
    }
    out["document"] = Value::String(stored.document);
    Ok(Json(out))
}

#[derive(Deserialize)]
struct PageQuery {
    offset: Option<usize>,
    limit: Option<usize>,
}

async fn line_events(
    State(state): State<BillingState>,
    Authed(tenant): Authed,
    ApiPath((invoice, line)): ApiPath<(String, u32)>,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> Result<Json<Value>, ApiError> {
    let page = state
        .invoices
        .line_events(
            tenant.id,
            &invoice,
            line,
            q.offset.unwrap_or(0),
            q.limit.unwrap_or(100),
        )
        .await?;
    Ok(Json(serde_json::to_value(&page).unwrap_or_default()))
}

async fn line_attribution(
    State(state): State<BillingState>,
    Authed(tenant): Authed,
    ApiPath((invoice, line)): ApiPath<(String, u32)>,
) -> Result<Json<Value>, ApiError> {
    let groups = state
        .invoices
        .attribution(tenant.id, &invoice, line)
        .await?;
    Ok(Json(json!({ "attribution": groups })))
}

#[derive(Deserialize)]
struct AuditQuery {
    format: Option<String>,
}

async fn audit_export(
    State(state): State<BillingState>,
    Authed(tenant): Authed,
    ApiPath(invoice): ApiPath<String>,
    ApiQuery(q): ApiQuery<AuditQuery>,
) -> Result<Response, ApiError> {
    let export = state.invoices.audit(&tenant, &invoice).await?;
    match q.format.as_deref().unwrap_or("json") {
        "json" => Ok(Json(serde_json::to_value(&export).unwrap_or_default()).into_response()),
        "csv" => {
            let body = crate::billrun::audit::to_csv(&export).map_err(|e| {
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "EXPORT_FAILED", e)
            })?;
            Ok(([(header::CONTENT_TYPE, "text/csv; charset=utf-8")], body).into_response())
        }
        other => Err(ApiError::invalid(format!(
            "format {other:?} is not json or csv"
        ))),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DiscountBody {
    percent: Option<rust_decimal::Decimal>,
    amount: Option<rust_decimal::Decimal>,
    valid_from: Option<String>,
    valid_until: Option<String>,
}

async fn add_discount(
    State(state): State<BillingState>,
    Authed(tenant): Authed,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<DiscountBody>,
) -> Result<Json<Value>, ApiError> {
    let sub = parse_uuid("subscription", &Some(id))?
        .ok_or_else(|| ApiError::invalid("no subscription"))?;
    let d = state
        .invoices
        .add_discount(
            tenant.id,
            sub,
            body.percent,
            body.amount,
            parse_time("valid_from", &body.valid_from)?,
            parse_time("valid_until", &body.valid_until)?,
        )
        .await?;
    Ok(Json(json!({
        "id": d.id,
        "subscription": d.subscription,
        "percent": d.percent.map(money),
        "amount": d.amount.map(money),
        "valid_from": d.valid_from.as_ref().map(time),
        "valid_until": d.valid_until.as_ref().map(time),
    })))
}

async fn invoice_lines(
    State(state): State<BillingState>,
    Authed(tenant): Authed,
    ApiPath(invoice): ApiPath<String>,
) -> Result<Json<Value>, ApiError> {
    let (stored, parsed) = state.invoices.get(tenant.id, &invoice).await?;
    Ok(Json(json!({
        "invoice": stored.id,
        "number": stored.number,
        "currency": stored.currency,
        "lines": parsed.lines,
    })))
}

async fn event_proof(
    State(state): State<BillingState>,
    Authed(tenant): Authed,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<Value>, ApiError> {
    let event = parse_uuid("event", &Some(id))?.ok_or_else(|| ApiError::invalid("no event"))?;
    let proof = state.invoices.proof(tenant.id, event).await?;
    Ok(Json(serde_json::to_value(&proof).unwrap_or_default()))
}
