//! The gRPC APIs of the billing role: `aforo.v1.CatalogService`,
//! `aforo.v1.CustomerService` and `aforo.v1.UsageService`.

use aforo_api::ApiError;
use aforo_proto::v1 as pb;
use aforo_proto::v1::catalog_service_server::CatalogService;
use aforo_proto::v1::customer_service_server::CustomerService;
use aforo_proto::v1::usage_service_server::UsageService;
use aforo_store::{CatalogVersion, CustomerInput, StoreError, SubscriptionInput};
use chrono::{DateTime, Utc};
use tonic::{Request, Response, Status};

use crate::catalog::{ApplyError, CatalogApi};
use crate::customers::{AdminError, BusinessData};
use crate::usage::UsageApi;

#[derive(Clone)]
pub struct CatalogGrpc {
    catalog: CatalogApi,
}

impl CatalogGrpc {
    pub fn new(catalog: CatalogApi) -> Self {
        CatalogGrpc { catalog }
    }
}

/// The tenant [`aforo_api::GrpcAuth`] authenticated before the call's
/// message was read (every service here is served behind it).
fn tenant<T>(request: &Request<T>) -> Result<uuid::Uuid, Status> {
    Ok(aforo_api::grpc_tenant(request)?.id)
}

/// Errors reach gRPC callers through [`ApiError`], as they reach REST ones.
fn store_status(e: StoreError) -> Status {
    ApiError::from(e).into()
}

fn timestamp(t: &DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: t.timestamp(),
        nanos: t.timestamp_subsec_nanos() as i32,
    }
}

fn version(v: &CatalogVersion, with_snapshot: bool) -> pb::CatalogVersion {
    pb::CatalogVersion {
        version: v.version,
        content_hash: v.content_hash.clone(),
        effective_from: v.effective_from.as_ref().map(timestamp),
        applied_at: Some(timestamp(&v.applied_at)),
        snapshot_json: if with_snapshot {
            v.snapshot.clone()
        } else {
            String::new()
        },
    }
}

#[tonic::async_trait]
impl CatalogService for CatalogGrpc {
    async fn apply(
        &self,
        request: Request<pb::ApplyCatalogRequest>,
    ) -> Result<Response<pb::ApplyCatalogResponse>, Status> {
        let tenant = tenant(&request)?;
        let mut values = Vec::new();
        for (i, text) in request.into_inner().resources_json.iter().enumerate() {
            let value = serde_json::from_str(text).map_err(|e| {
                Status::invalid_argument(format!("resource {} is not JSON: {e}", i + 1))
            })?;
            values.push((format!("resource {}", i + 1), value));
        }
        let outcome = match CatalogApi::parse(values) {
            Ok(resources) => self.catalog.apply(tenant, &resources).await,
            Err(e) => Err(e),
        };
        match outcome {
            Ok(applied) => Ok(Response::new(pb::ApplyCatalogResponse {
                version: Some(version(&applied.catalog.version, false)),
                created: applied.catalog.created,
                errors: vec![],
                skipped: applied.skipped,
            })),
            Err(ApplyError::Invalid(errors)) => Ok(Response::new(pb::ApplyCatalogResponse {
                version: None,
                created: false,
                errors: errors
                    .into_iter()
                    .map(|e| pb::CatalogError {
                        kind: e.kind,
                        name: e.name,
                        field: e.field,
                        message: e.message,
                    })
                    .collect(),
                skipped: vec![],
            })),
            Err(ApplyError::Store(e)) => Err(store_status(e)),
        }
    }

    async fn get(
        &self,
        request: Request<pb::GetCatalogRequest>,
    ) -> Result<Response<pb::CatalogVersion>, Status> {
        let tenant = tenant(&request)?;
        let n = request.into_inner().version;
        let wanted = (n > 0).then_some(n);
        let v = self
            .catalog
            .get(tenant, wanted)
            .await
            .map_err(store_status)?
            .ok_or_else(|| {
                Status::not_found(if n > 0 {
                    format!("no catalog version {n}")
                } else {
                    "no catalog has been applied yet".into()
                })
            })?;
        Ok(Response::new(version(&v, true)))
    }

    async fn list(
        &self,
        request: Request<pb::ListCatalogVersionsRequest>,
    ) -> Result<Response<pb::ListCatalogVersionsResponse>, Status> {
        let tenant = tenant(&request)?;
        let all = self.catalog.list(tenant).await.map_err(store_status)?;
        Ok(Response::new(pb::ListCatalogVersionsResponse {
            versions: all.iter().map(|v| version(v, false)).collect(),
        }))
    }
}

#[derive(Clone)]
pub struct CustomerGrpc {
    business: BusinessData,
}

impl CustomerGrpc {
    pub fn new(business: BusinessData) -> Self {
        CustomerGrpc { business }
    }
}

fn admin_status(e: AdminError) -> Status {
    ApiError::from(e).into()
}

fn from_timestamp(
    field: &str,
    t: Option<&prost_types::Timestamp>,
) -> Result<Option<DateTime<Utc>>, Status> {
    t.map(|t| {
        u32::try_from(t.nanos)
            .ok()
            .and_then(|n| DateTime::from_timestamp(t.seconds, n))
            .ok_or_else(|| Status::invalid_argument(format!("{field} is not a valid time")))
    })
    .transpose()
}

fn non_empty(s: String) -> Option<String> {
    (!s.is_empty()).then_some(s)
}

fn customer_message(c: &aforo_store::Customer) -> pb::Customer {
    pb::Customer {
        id: c.external_id.clone(),
        name: c.name.clone(),
        currency: c.currency.clone().unwrap_or_default(),
        tax_region: c.tax_region.clone().unwrap_or_default(),
        metadata: Some(prost_types::Struct {
            fields: c
                .metadata
                .iter()
                .filter_map(|(k, v)| {
                    v.as_str().map(|s| {
                        (
                            k.clone(),
                            prost_types::Value {
                                kind: Some(prost_types::value::Kind::StringValue(s.to_owned())),
                            },
                        )
                    })
                })
                .collect(),
        }),
    }
}

fn subscription_message(s: &aforo_store::Subscription) -> pb::Subscription {
    pb::Subscription {
        id: s.id.to_string(),
        customer: s.customer.clone(),
        starts_at: Some(timestamp(&s.starts_at)),
        ends_at: s.ends_at.as_ref().map(timestamp),
        billing_anchor_day: s.billing_anchor_day.map(u32::from).unwrap_or(0),
        phases: s
            .phases
            .iter()
            .map(|p| pb::SubscriptionPhase {
                rate_plan: p.rate_plan.clone(),
                starts_at: Some(timestamp(&p.starts_at)),
                ends_at: p.ends_at.as_ref().map(timestamp),
            })
            .collect(),
    }
}

#[tonic::async_trait]
impl CustomerService for CustomerGrpc {
    async fn upsert_customer(
        &self,
        request: Request<pb::Customer>,
    ) -> Result<Response<pb::UpsertCustomerResponse>, Status> {
        let tenant = tenant(&request)?;
        let c = request.into_inner();
        let metadata = c
            .metadata
            .map(|m| {
                m.fields
                    .into_iter()
                    .filter_map(|(k, v)| match v.kind {
                        Some(prost_types::value::Kind::StringValue(s)) => {
                            Some((k, serde_json::Value::String(s)))
                        }
                        _ => None,
                    })
                    .collect()
            })
            .unwrap_or_default();
        let input = CustomerInput {
            external_id: c.id,
            name: c.name,
            currency: non_empty(c.currency),
            tax_region: non_empty(c.tax_region),
            metadata,
        };
        let (customer, created) = self
            .business
            .upsert_customer(tenant, &input)
            .await
            .map_err(admin_status)?;
        Ok(Response::new(pb::UpsertCustomerResponse {
            customer: Some(customer_message(&customer)),
            created,
        }))
    }

    async fn get_customer(
        &self,
        request: Request<pb::GetCustomerRequest>,
    ) -> Result<Response<pb::Customer>, Status> {
        let tenant = tenant(&request)?;
        let id = request.into_inner().id;
        let c = self
            .business
            .customer(tenant, &id)
            .await
            .map_err(store_status)?
            .ok_or_else(|| Status::not_found(format!("no customer {id:?}")))?;
        Ok(Response::new(customer_message(&c)))
    }

    async fn list_customers(
        &self,
        request: Request<pb::ListCustomersRequest>,
    ) -> Result<Response<pb::ListCustomersResponse>, Status> {
        let tenant = tenant(&request)?;
        let r = request.into_inner();
        let after = non_empty(r.after);
        let (page, limit) = self
            .business
            .customers(
                tenant,
                after.as_deref(),
                if r.limit == 0 { 100 } else { r.limit },
            )
            .await
            .map_err(store_status)?;
        let next_cursor = if page.len() as u32 >= limit {
            page.last()
                .map(|c| c.external_id.clone())
                .unwrap_or_default()
        } else {
            String::new()
        };
        Ok(Response::new(pb::ListCustomersResponse {
            customers: page.iter().map(customer_message).collect(),
            next_cursor,
        }))
    }

    async fn create_subscription(
        &self,
        request: Request<pb::CreateSubscriptionRequest>,
    ) -> Result<Response<pb::Subscription>, Status> {
        let tenant = tenant(&request)?;
        let r = request.into_inner();
        let input = SubscriptionInput {
            customer: r.customer,
            rate_plan: r.rate_plan,
            starts_at: from_timestamp("starts_at", r.starts_at.as_ref())?
                .ok_or_else(|| Status::invalid_argument("starts_at is required"))?,
            ends_at: from_timestamp("ends_at", r.ends_at.as_ref())?,
            billing_anchor_day: match r.billing_anchor_day {
                0 => None,
                d => Some(u8::try_from(d).map_err(|_| {
                    Status::invalid_argument("billing_anchor_day must be from 1 to 31")
                })?),
            },
        };
        let sub = self
            .business
            .create_subscription(tenant, &input)
            .await
            .map_err(admin_status)?;
        Ok(Response::new(subscription_message(&sub)))
    }

    async fn list_subscriptions(
        &self,
        request: Request<pb::ListSubscriptionsRequest>,
    ) -> Result<Response<pb::ListSubscriptionsResponse>, Status> {
        let tenant = tenant(&request)?;
        let customer = non_empty(request.into_inner().customer);
        let subs = self
            .business
            .subscriptions(tenant, customer.as_deref())
            .await
            .map_err(store_status)?;
        Ok(Response::new(pb::ListSubscriptionsResponse {
            subscriptions: subs.iter().map(subscription_message).collect(),
        }))
    }

    async fn change_plan(
        &self,
        request: Request<pb::ChangePlanRequest>,
    ) -> Result<Response<pb::Subscription>, Status> {
        let tenant = tenant(&request)?;
        let r = request.into_inner();
        let id = r.subscription_id.parse().map_err(|_| {
            Status::invalid_argument(format!("{:?} is not a subscription id", r.subscription_id))
        })?;
        let at = from_timestamp("effective_at", r.effective_at.as_ref())?
            .ok_or_else(|| Status::invalid_argument("effective_at is required"))?;
        let sub = self
            .business
            .change_plan(tenant, id, &r.rate_plan, at)
            .await
            .map_err(admin_status)?;
        Ok(Response::new(subscription_message(&sub)))
    }
}

#[derive(Clone)]
pub struct UsageGrpc {
    usage: UsageApi,
}

impl UsageGrpc {
    pub fn new(usage: UsageApi) -> Self {
        UsageGrpc { usage }
    }
}

fn money(d: rust_decimal::Decimal) -> String {
    d.normalize().to_string()
}

#[tonic::async_trait]
impl UsageService for UsageGrpc {
    async fn revenue(
        &self,
        request: Request<pb::RevenueRequest>,
    ) -> Result<Response<pb::RevenueResponse>, Status> {
        let tenant = tenant(&request)?;
        let r = request.into_inner();
        let query = aforo_store::RevenueQuery {
            customer: non_empty(r.customer),
            from: from_timestamp("from", r.from.as_ref())?,
            to: from_timestamp("to", r.to.as_ref())?,
        };
        let rows = self
            .usage
            .revenue(tenant, &query)
            .await
            .map_err(store_status)?;
        Ok(Response::new(pb::RevenueResponse {
            rows: rows
                .into_iter()
                .map(|r| pb::RevenueRow {
                    margin: money(r.revenue - r.cost),
                    quantity: money(r.quantity),
                    revenue: money(r.revenue),
                    cost: money(r.cost),
                    customer: r.customer,
                    meter: r.meter,
                    currency: r.currency,
                    events: r.events,
                })
                .collect(),
        }))
    }

    async fn hourly_revenue(
        &self,
        request: Request<pb::HourlyRevenueRequest>,
    ) -> Result<Response<pb::HourlyRevenueResponse>, Status> {
        let tenant = tenant(&request)?;
        let customer = non_empty(request.into_inner().customer);
        let rows = self
            .usage
            .last_24_hours(tenant, customer, self.usage.now())
            .await
            .map_err(store_status)?;
        Ok(Response::new(pb::HourlyRevenueResponse {
            hours: rows
                .into_iter()
                .map(|h| pb::HourRow {
                    hour: Some(timestamp(&h.hour)),
                    margin: money(h.revenue - h.cost),
                    revenue: money(h.revenue),
                    cost: money(h.cost),
                    currency: h.currency,
                    events: h.events,
                })
                .collect(),
        }))
    }

    async fn cohort_margin(
        &self,
        request: Request<pb::CohortMarginRequest>,
    ) -> Result<Response<pb::CohortMarginResponse>, Status> {
        let tenant = tenant(&request)?;
        let r = request.into_inner();
        if r.key.is_empty() {
            return Err(Status::invalid_argument(
                "key (a customer metadata key) is required",
            ));
        }
        let query = aforo_store::RevenueQuery {
            customer: None,
            from: from_timestamp("from", r.from.as_ref())?,
            to: from_timestamp("to", r.to.as_ref())?,
        };
        let rows = self
            .usage
            .cohorts(tenant, &r.key, &query)
            .await
            .map_err(store_status)?;
        Ok(Response::new(pb::CohortMarginResponse {
            cohorts: rows
                .into_iter()
                .map(|c| pb::CohortRow {
                    margin: money(c.revenue - c.cost),
                    revenue: money(c.revenue),
                    cost: money(c.cost),
                    customers: c.customers as u32,
                    cohort: c.cohort,
                    currency: c.currency,
                })
                .collect(),
        }))
    }

    async fn entitlement(
        &self,
        request: Request<pb::EntitlementRequest>,
    ) -> Result<Response<pb::EntitlementResponse>, Status> {
        let tenant = tenant(&request)?;
        let r = request.into_inner();
        let e = self
            .usage
            .entitlement(tenant, &r.customer, &r.meter, self.usage.now())
            .await
            .map_err(store_status)?
            .ok_or_else(|| {
                Status::not_found(format!(
                    "{:?} has no subscription that charges meter {:?} now",
                    r.customer, r.meter
                ))
            })?;
        Ok(Response::new(pb::EntitlementResponse {
            period_start: Some(timestamp(&e.period_start)),
            included: money(e.included),
            used: money(e.used),
            remaining: money(e.remaining),
            customer: e.customer,
            meter: e.meter,
            rate_plan: e.rate_plan,
        }))
    }

    async fn event_revenue(
        &self,
        request: Request<pb::EventRevenueRequest>,
    ) -> Result<Response<pb::EventRevenueResponse>, Status> {
        let tenant = tenant(&request)?;
        let id = request.into_inner().stored_event_id;
        let id = id
            .parse()
            .map_err(|_| Status::invalid_argument(format!("{id:?} is not a stored event id")))?;
        let lines = self
            .usage
            .ledger_of(tenant, &[id])
            .await
            .map_err(store_status)?;
        Ok(Response::new(pb::EventRevenueResponse {
            lines: lines
                .into_iter()
                .map(|l| pb::LedgerLine {
                    quantity: money(l.quantity),
                    revenue: money(l.revenue),
                    cost: money(l.cost),
                    meter: l.meter,
                    rate_plan: l.rate_plan,
                    catalog_version: l.catalog_version,
                    currency: l.currency,
                })
                .collect(),
        }))
    }
}

/// `aforo.v1.InvoiceService`: bill runs, replays and invoices.
pub struct InvoiceGrpc {
    invoices: crate::invoices::InvoiceApi,
}

impl InvoiceGrpc {
    pub fn new(invoices: crate::invoices::InvoiceApi) -> Self {
        InvoiceGrpc { invoices }
    }
}

fn invoice_status(e: crate::invoices::InvoiceError) -> Status {
    ApiError::from(e).into()
}

fn uuid_field(field: &str, value: String) -> Result<Option<uuid::Uuid>, Status> {
    non_empty(value)
        .map(|v| {
            v.parse()
                .map_err(|_| Status::invalid_argument(format!("{field} {v:?} is not an id")))
        })
        .transpose()
}

fn invoice_message(
    stored: &aforo_store::billing::StoredInvoice,
    parsed: &crate::billrun::Invoice,
) -> pb::Invoice {
    pb::Invoice {
        id: stored.id.to_string(),
        number: stored.number.clone(),
        subscription: stored.subscription.to_string(),
        customer: stored.customer.clone(),
        currency: stored.currency.clone(),
        period_start: Some(timestamp(&stored.period_start)),
        period_end: Some(timestamp(&stored.period_end)),
        cutoff: Some(timestamp(&stored.cutoff)),
        subtotal: parsed.subtotal.to_string(),
        discount: parsed.discount.to_string(),
        tax: parsed.tax.to_string(),
        total: parsed.total.to_string(),
        lines: parsed
            .lines
            .iter()
            .map(|l| pb::InvoiceLine {
                number: l.number,
                kind: l.kind.as_str().to_owned(),
                description: l.description.clone(),
                meter: l.key.as_ref().map(|k| k.meter.clone()).unwrap_or_default(),
                dimension: l
                    .key
                    .as_ref()
                    .map(|k| k.dimension.clone())
                    .unwrap_or_default(),
                period_start: Some(timestamp(&l.period.start)),
                period_end: Some(timestamp(&l.period.end)),
                quantity: l.quantity.to_string(),
                included: l.included.to_string(),
                amount_unrounded: l.amount_unrounded.to_string(),
                amount: l.amount.to_string(),
                event_count: l.event_count,
                merkle_root: l.merkle_root.clone().unwrap_or_default(),
                flags: l.flags.clone(),
            })
            .collect(),
        document_hash: stored.document_hash.clone(),
    }
}

#[tonic::async_trait]
impl aforo_proto::v1::invoice_service_server::InvoiceService for InvoiceGrpc {
    async fn run_bill(
        &self,
        request: Request<pb::RunBillRequest>,
    ) -> Result<Response<pb::RunBillResponse>, Status> {
        let tenant = tenant(&request)?;
        let r = request.into_inner();
        let report = self
            .invoices
            .run(
                tenant,
                from_timestamp("as_of", r.as_of.as_ref())?,
                from_timestamp("cutoff", r.cutoff.as_ref())?,
                uuid_field("subscription", r.subscription)?,
            )
            .await
            .map_err(invoice_status)?;
        Ok(Response::new(pb::RunBillResponse {
            id: report.id.to_string(),
            invoiced: report
                .invoiced
                .iter()
                .map(|s| pb::InvoicedPeriod {
                    invoice: s.invoice.to_string(),
                    number: s.number.clone(),
                    subscription: s.subscription.to_string(),
                    customer: s.customer.clone(),
                    period_start: Some(timestamp(&s.period_start)),
                    total: s.total.to_string(),
                    currency: s.currency.clone(),
                })
                .collect(),
            already_invoiced: report.already_invoiced,
            failures: report
                .failures
                .iter()
                .map(|f| pb::StageFailure {
                    subscription: f.subscription.to_string(),
                    customer: f.customer.clone(),
                    period_start: Some(timestamp(&f.period_start)),
                    stage: f.stage.clone(),
                    reason: f.reason.clone(),
                })
                .collect(),
            differences_json: serde_json::to_string(&report.differences).unwrap_or_default(),
            events_read: report.events_read,
        }))
    }

    async fn replay(
        &self,
        request: Request<pb::ReplayRequest>,
    ) -> Result<Response<pb::ReplayResponse>, Status> {
        let tenant = tenant(&request)?;
        let r = request.into_inner();
        let period = from_timestamp("period_start", r.period_start.as_ref())?
            .ok_or_else(|| Status::invalid_argument("period_start is required"))?;
        let results = self
            .invoices
            .replay(tenant, period, uuid_field("subscription", r.subscription)?)
            .await
            .map_err(invoice_status)?;
        Ok(Response::new(pb::ReplayResponse {
            identical: results.iter().all(|r| r.identical),
            invoices: results
                .into_iter()
                .map(|r| pb::ReplayedInvoice {
                    number: r.number,
                    subscription: r.subscription.to_string(),
                    identical: r.identical,
                    differences: r.differences,
                })
                .collect(),
        }))
    }

    async fn list_invoices(
        &self,
        request: Request<pb::ListInvoicesRequest>,
    ) -> Result<Response<pb::ListInvoicesResponse>, Status> {
        let tenant = tenant(&request)?;
        let r = request.into_inner();
        let limit = if r.limit == 0 { 100 } else { r.limit.min(1000) };
        let page = self
            .invoices
            .list(
                tenant,
                &aforo_store::billing::InvoiceQuery {
                    customer: non_empty(r.customer),
                    subscription: uuid_field("subscription", r.subscription)?,
                    after: non_empty(r.after),
                    limit,
                },
            )
            .await
            .map_err(invoice_status)?;
        let mut invoices = Vec::with_capacity(page.len());
        for stored in &page {
            let parsed = crate::billrun::runner::parse_invoice(stored)
                .map_err(|e| Status::internal(e.to_string()))?;
            invoices.push(invoice_message(stored, &parsed));
        }
        let next_cursor = if page.len() as u32 >= limit {
            page.last().map(|i| i.number.clone()).unwrap_or_default()
        } else {
            String::new()
        };
        Ok(Response::new(pb::ListInvoicesResponse {
            invoices,
            next_cursor,
        }))
    }

    async fn get_invoice(
        &self,
        request: Request<pb::GetInvoiceRequest>,
    ) -> Result<Response<pb::Invoice>, Status> {
        let tenant = tenant(&request)?;
        let r = request.into_inner();
        let (stored, parsed) = self
            .invoices
            .get(tenant, &r.invoice)
            .await
            .map_err(invoice_status)?;
        Ok(Response::new(invoice_message(&stored, &parsed)))
    }

    async fn list_line_events(
        &self,
        request: Request<pb::ListLineEventsRequest>,
    ) -> Result<Response<pb::ListLineEventsResponse>, Status> {
        let tenant = tenant(&request)?;
        let r = request.into_inner();
        let limit = if r.limit == 0 { 100 } else { r.limit as usize };
        let page = self
            .invoices
            .line_events(tenant, &r.invoice, r.line, r.offset as usize, limit)
            .await
            .map_err(invoice_status)?;
        Ok(Response::new(pb::ListLineEventsResponse {
            total: page.total as u64,
            next_offset: page.next_offset.unwrap_or(0) as u64,
            events: page
                .events
                .into_iter()
                .map(|e| pb::LineEvent {
                    stored_id: e.stored_id.to_string(),
                    id: e.id,
                    source: e.source,
                    tier: e.tier,
                    r#type: e.event_type,
                    time: Some(timestamp(&e.time)),
                    validation_hash: e.validation_hash,
                    quantity: e.quantity.map(|q| q.to_string()).unwrap_or_default(),
                    revenue: e.revenue.map(|q| q.to_string()).unwrap_or_default(),
                })
                .collect(),
        }))
    }
}
