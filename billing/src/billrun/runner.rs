//! The bill run's I/O: which subscription periods are due, their inputs
//! from the store, the ten stages, settling, reconciliation, the record.
//!
//! A run bills every period that ended at or before `as_of` and has no
//! invoice yet, for each subscription, oldest first, so rollover and
//! adjustments chain. Events count when stored at or before the run's
//! cut-off; the catalog versions, subscription phases and discounts that
//! count are those recorded by then, which is what lets a replay rebuild
//! the same inputs later. Settling is idempotent (one invoice per
//! subscription and period, enforced by the store), so running a period
//! twice creates nothing; a subscription that fails a stage is recorded with
//! the stage and the reason, and the run goes on. A failed period has no
//! invoice, so the next run retries it.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use aforo_crds::clock::Clock;
use aforo_crds::compile::CatalogSnapshot;
use aforo_store::billing::BillEvent;
use aforo_store::billing::{BillRunRecord, InvoiceQuery, NewInvoice, SettleOutcome};
use aforo_store::enrichment::{EnrichmentState, TotalKey, TotalState};
use aforo_store::{Store, StoreError, Subscription};
use chrono::{DateTime, Duration, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use tracing::Instrument;
use uuid::Uuid;

use super::{
    Aggregated, DiscountTerm, Inputs, Invoice, LatePeriod, LineKey, LineKind, Period,
    RoutingConfig, StageTimes, TaxTable, UsageItem, bill_timed,
};
use crate::period::Calendar;
use crate::resolve::{CatalogAt, EventView, TenantContext, resolve_view};

/// How a bill run is set up.
#[derive(Clone, Debug)]
pub struct BillRunConfig {
    /// `None`: no tax configuration (taxed plans are flagged UNTAXED).
    pub tax: Option<Arc<TaxTable>>,
    pub routing: Arc<RoutingConfig>,
    /// How far back closed periods are searched for late events. Events
    /// older than the late-arrival gate's window cannot arrive at all.
    pub late_window: Duration,
    /// Customers whose events one read loads.
    pub chunk: usize,
}

impl Default for BillRunConfig {
    fn default() -> Self {
        BillRunConfig {
            tax: None,
            routing: Arc::new(RoutingConfig::default()),
            late_window: Duration::days(100),
            // Each chunk's read visits most of the period's heap pages when
            // customers' events are interleaved (they are: events are stored
            // in time order), so fewer, larger chunks read less.
            chunk: 2048,
        }
    }
}

/// What to bill.
#[derive(Clone, Debug)]
pub struct RunRequest {
    pub tenant: Uuid,
    /// Periods ending at or before this instant are due.
    pub as_of: DateTime<Utc>,
    /// Events stored after this instant wait for a later invoice.
    pub cutoff: DateTime<Utc>,
    /// Only this subscription (a retry), or all.
    pub subscription: Option<Uuid>,
}

/// A subscription period that could not be billed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct FailureRecord {
    pub subscription: Uuid,
    pub customer: String,
    pub period_start: DateTime<Utc>,
    /// A stage name, or LOAD when its inputs could not be built.
    pub stage: String,
    pub reason: String,
}

/// A difference between Aggregate and the RevenueEstimator's running total.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Difference {
    pub subscription: Uuid,
    pub period_start: DateTime<Utc>,
    pub meter: String,
    pub dimension: String,
    pub plan_terms: String,
    pub aggregated_quantity: Decimal,
    pub estimated_quantity: Decimal,
    pub aggregated_amount: Decimal,
    pub estimated_amount: Decimal,
}

/// One invoice a run settled.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Settled {
    pub invoice: Uuid,
    pub number: String,
    pub subscription: Uuid,
    pub customer: String,
    pub period_start: DateTime<Utc>,
    pub total: Decimal,
    pub currency: String,
}

/// What a run did.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RunReport {
    pub id: Uuid,
    pub tenant: Uuid,
    pub as_of: DateTime<Utc>,
    pub cutoff: DateTime<Utc>,
    pub invoiced: Vec<Settled>,
    /// Periods that another run invoiced first.
    pub already_invoiced: u64,
    pub failures: Vec<FailureRecord>,
    pub differences: Vec<Difference>,
    pub events_read: u64,
    /// Where the run's time went, in milliseconds.
    pub timings: Timings,
}

/// Wall time of a run's phases, in milliseconds. Reading overlaps billing
/// (the next chunk is read while this one is billed): `read_wait` is only
/// the time the run waited for events.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Timings {
    pub load: u64,
    pub read_wait: u64,
    pub resolve: u64,
    pub stages: u64,
    pub settle: u64,
    pub reconcile: u64,
    /// The time in each of the ten stages, summed over the run's
    /// subscriptions, in microseconds (part of `stages`).
    #[serde(default)]
    pub stage_micros: BTreeMap<String, u64>,
}

fn ms(since: std::time::Instant) -> u64 {
    since.elapsed().as_millis() as u64
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("stored invoice {0} cannot be read: {1}")]
    Document(String, String),
    #[error("{0}")]
    Internal(String),
}

fn micros(t: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(t.timestamp_micros()).unwrap_or(t)
}

/// A subscription as it was known at `cutoff`: phases recorded later are
/// dropped, and a phase closed by a later change is open again.
pub fn as_known_at(sub: &Subscription, cutoff: DateTime<Utc>) -> Option<Subscription> {
    if sub.created_at > cutoff {
        return None;
    }
    let mut known = sub.clone();
    known.phases.retain(|p| p.recorded_at <= cutoff);
    if known.phases.len() < sub.phases.len()
        && let Some(last) = known.phases.last_mut()
    {
        last.ends_at = sub.ends_at;
    }
    (!known.phases.is_empty()).then_some(known)
}

/// The catalog versions applied by `cutoff`, newest first, parsed.
pub async fn catalogs_at(
    store: &dyn Store,
    tenant: Uuid,
    cutoff: DateTime<Utc>,
) -> Result<Vec<Arc<CatalogAt>>, RunError> {
    let mut out = Vec::new();
    for v in store.catalog_versions(tenant).await?.into_iter().rev() {
        if v.applied_at > cutoff {
            continue;
        }
        let snapshot: CatalogSnapshot = serde_json::from_str(&v.snapshot)
            .map_err(|e| StoreError::Corrupt(format!("catalog version {}: {e}", v.version)))?;
        out.push(Arc::new(CatalogAt::new(
            v.version,
            v.effective_from,
            snapshot,
        )));
    }
    Ok(out)
}

/// Parses a stored invoice's document, with its number.
pub fn parse_invoice(stored: &aforo_store::billing::StoredInvoice) -> Result<Invoice, RunError> {
    let mut invoice: Invoice = serde_json::from_str(&stored.document)
        .map_err(|e| RunError::Document(stored.number.clone(), e.to_string()))?;
    invoice.number = stored.number.clone();
    Ok(invoice)
}

/// The settled invoices of `subscriptions` (all when `None`), oldest first
/// per subscription, leaving out those of runs after `cutoff`.
async fn load_invoices(
    store: &dyn Store,
    tenant: Uuid,
    cutoff: DateTime<Utc>,
    subscriptions: Option<&BTreeSet<Uuid>>,
) -> Result<HashMap<Uuid, Vec<Invoice>>, RunError> {
    let mut invoices: HashMap<Uuid, Vec<Invoice>> = HashMap::new();
    let stored_invoices = match subscriptions {
        None => store.invoices(tenant, &InvoiceQuery::default()).await?,
        Some(subs) => {
            let mut all = Vec::new();
            for sub in subs {
                let query = InvoiceQuery {
                    subscription: Some(*sub),
                    ..Default::default()
                };
                all.extend(store.invoices(tenant, &query).await?);
            }
            all
        }
    };
    for stored in stored_invoices {
        // Invoices of later runs (a replay looks at the past).
        if stored.cutoff > cutoff {
            continue;
        }
        let invoice = parse_invoice(&stored)?;
        invoices
            .entry(invoice.subscription)
            .or_default()
            .push(invoice);
    }
    for list in invoices.values_mut() {
        list.sort_by_key(|i| i.period.start);
    }
    Ok(invoices)
}

/// The periods of a subscription that ended by `as_of`, oldest first, with
/// the plan and catalog version in force at each start.
fn periods(
    sub: &Subscription,
    ctx: &TenantContext,
    as_of: DateTime<Utc>,
) -> Result<Vec<(Period, String, Arc<CatalogAt>)>, String> {
    let mut out = Vec::new();
    let first_plan = sub.phases.first().map(|p| p.rate_plan.as_str());
    let Some(first_plan) = first_plan else {
        return Ok(out);
    };
    let catalog = ctx
        .catalogs
        .iter()
        .find(|c| c.effective_from.is_none_or(|f| f <= sub.starts_at))
        .ok_or("no catalog version was in force when the subscription started")?;
    let plan = catalog.snapshot.rate_plans.get(first_plan).ok_or_else(|| {
        format!(
            "rate plan {first_plan:?} is not in catalog version {}",
            catalog.version
        )
    })?;
    let mut start = Calendar::of(sub, plan)
        .period_of(sub.starts_at)
        .ok_or("the subscription's start is out of range")?
        .start;
    loop {
        if sub.ends_at.is_some_and(|e| e <= start) {
            break;
        }
        let Some((period, plan_name, catalog)) = period_from(sub, ctx, start)? else {
            break;
        };
        if period.end > as_of {
            break;
        }
        start = period.end;
        out.push((period, plan_name, catalog));
    }
    Ok(out)
}

/// The period starting at `start` and the plan (with its catalog version)
/// in force at its start — or, for a subscription starting mid-period, at
/// the subscription's start. `None` when no plan is in force then.
pub fn period_from(
    sub: &Subscription,
    ctx: &TenantContext,
    start: DateTime<Utc>,
) -> Result<Option<(Period, String, Arc<CatalogAt>)>, String> {
    let at = start.max(sub.starts_at);
    let Some(plan_name) = sub.plan_at(at) else {
        return Ok(None);
    };
    let catalog = ctx
        .catalogs
        .iter()
        .find(|c| c.effective_from.is_none_or(|f| f <= at))
        .ok_or_else(|| format!("no catalog version was in force at {at}"))?;
    let plan = catalog.snapshot.rate_plans.get(plan_name).ok_or_else(|| {
        format!(
            "rate plan {plan_name:?} is not in catalog version {}",
            catalog.version
        )
    })?;
    // `start` is a boundary of the subscription's calendar; under a plan
    // with another period length the next boundary is that plan's.
    let end = Calendar::of(sub, plan)
        .period_of(start)
        .ok_or("the period's end is out of range")?
        .end;
    Ok(Some((
        Period { start, end },
        plan_name.to_owned(),
        Arc::clone(catalog),
    )))
}

/// Resolves events to usage items, grouped by (subscription, period start).
pub fn usage_by_period(
    tenant: Uuid,
    events: &[BillEvent],
    ctx: &TenantContext,
) -> HashMap<(Uuid, DateTime<Utc>), Vec<UsageItem>> {
    let mut out: HashMap<(Uuid, DateTime<Utc>), Vec<UsageItem>> = HashMap::new();
    for event in events {
        let view = EventView {
            tenant,
            event_type: &event.event_type,
            customer: &event.customer,
            time: event.time,
            properties: &event.properties,
        };
        let (state, priced) = resolve_view(view, ctx);
        if state != EnrichmentState::Enriched {
            continue;
        }
        let hash: Arc<str> = Arc::from(event.validation_hash.as_str());
        for (intent, function) in priced {
            out.entry((intent.key.subscription, intent.key.period_start))
                .or_default()
                .push(UsageItem {
                    event: event.stored_id,
                    validation_hash: Arc::clone(&hash),
                    time: event.time,
                    stored_at: event.received_at,
                    intent,
                    function,
                });
        }
    }
    out
}

/// What one subscription period needs besides its usage.
struct Due {
    sub: Subscription,
    period: Period,
    plan_name: String,
    catalog: Arc<CatalogAt>,
}

/// Everything loaded once per run.
pub struct RunContext {
    pub ctx: TenantContext,
    pub tax_regions: HashMap<String, Option<String>>,
    /// Per subscription, its invoices oldest first.
    pub invoices: HashMap<Uuid, Vec<Invoice>>,
    pub discounts: HashMap<Uuid, Vec<DiscountTerm>>,
}

impl RunContext {
    /// Loads what a run (or a replay) at `cutoff` reads.
    /// `invoices_of`: the subscriptions whose invoices are loaded (all when
    /// `None`); the rest of the context is the tenant's whole.
    pub async fn load(
        store: &dyn Store,
        tenant: Uuid,
        cutoff: DateTime<Utc>,
        invoices_of: Option<&BTreeSet<Uuid>>,
    ) -> Result<Self, RunError> {
        let catalogs = catalogs_at(store, tenant, cutoff).await?;
        let mut subscriptions: HashMap<String, Vec<Subscription>> = HashMap::new();
        for sub in store.subscriptions(tenant, None).await? {
            if let Some(known) = as_known_at(&sub, cutoff) {
                subscriptions
                    .entry(known.customer.clone())
                    .or_default()
                    .push(known);
            }
        }
        let mut tax_regions = HashMap::new();
        let mut after: Option<String> = None;
        loop {
            let page = store.list_customers(tenant, after.as_deref(), 1000).await?;
            let Some(last) = page.last() else { break };
            after = Some(last.external_id.clone());
            for c in page {
                tax_regions.insert(c.external_id, c.tax_region);
            }
        }
        let invoices = load_invoices(store, tenant, cutoff, invoices_of).await?;
        let mut discounts: HashMap<Uuid, Vec<DiscountTerm>> = HashMap::new();
        for d in store.subscription_discounts(tenant).await? {
            if d.created_at > cutoff {
                continue;
            }
            discounts
                .entry(d.subscription)
                .or_default()
                .push(DiscountTerm {
                    source: "subscription".into(),
                    percent: d.percent,
                    amount: d.amount,
                    valid_from: d.valid_from,
                    valid_until: d.valid_until,
                });
        }
        Ok(RunContext {
            ctx: TenantContext {
                catalogs,
                subscriptions,
            },
            tax_regions,
            invoices,
            discounts,
        })
    }

    /// The inputs of one subscription period. `earlier` are the
    /// subscription's invoices before it (the previous one gives rollover;
    /// their periods may have late events in `usage`).
    #[allow(clippy::too_many_arguments)]
    pub fn inputs(
        &self,
        tenant: Uuid,
        sub: &Subscription,
        period: Period,
        plan_name: &str,
        catalog: &CatalogAt,
        cutoff: DateTime<Utc>,
        earlier: &[Invoice],
        usage: &mut HashMap<(Uuid, DateTime<Utc>), Vec<UsageItem>>,
        config: &BillRunConfig,
    ) -> Result<Inputs, String> {
        let plan = catalog
            .snapshot
            .rate_plans
            .get(plan_name)
            .ok_or_else(|| {
                format!(
                    "rate plan {plan_name:?} is not in catalog version {}",
                    catalog.version
                )
            })?
            .clone();
        let items = usage.remove(&(sub.id, period.start)).unwrap_or_default();
        let mut late = Vec::new();
        let closed: BTreeSet<Period> = earlier
            .iter()
            .flat_map(|i| i.lines.iter().map(|l| l.period).chain([i.period]))
            .collect();
        for p in closed {
            // The last time the period was billed: the latest cut-off of an
            // invoice carrying it.
            let billed_until = earlier
                .iter()
                .filter(|i| i.period == p || i.lines.iter().any(|l| l.period == p))
                .map(|i| i.cutoff)
                .max();
            let Some(billed_until) = billed_until else {
                continue;
            };
            let Some(items) = usage.get(&(sub.id, p.start)) else {
                continue;
            };
            let late_ids: BTreeSet<Uuid> = items
                .iter()
                .filter(|i| i.stored_at > billed_until)
                .map(|i| i.event)
                .collect();
            if late_ids.is_empty() {
                continue;
            }
            let billed = earlier
                .iter()
                .flat_map(|i| i.lines.iter())
                .filter(|l| {
                    l.period == p && matches!(l.kind, LineKind::Usage | LineKind::Adjustment)
                })
                .cloned()
                .collect();
            late.push(LatePeriod {
                period: p,
                items: items.clone(),
                late: late_ids,
                billed,
            });
        }
        Ok(Inputs {
            tenant,
            subscription: sub.id,
            customer: sub.customer.clone(),
            tax_region: self.tax_regions.get(&sub.customer).cloned().flatten(),
            period,
            calendar: Calendar::of(sub, &plan),
            cutoff,
            rate_plan: plan_name.to_owned(),
            plan,
            catalog_version: catalog.version,
            usage: items,
            late,
            previous: earlier.last().cloned(),
            subscription_discounts: self.discounts.get(&sub.id).cloned().unwrap_or_default(),
            tax: config.tax.clone(),
            routing: Arc::clone(&config.routing),
        })
    }
}

/// The RevenueEstimator's running totals by (subscription, period start).
type TotalsByPeriod = HashMap<(Uuid, DateTime<Utc>), Vec<(TotalKey, TotalState)>>;

/// Compares Aggregate with the running totals of the same keys.
fn reconcile(
    sub: Uuid,
    period: Period,
    tenant: Uuid,
    aggregated: &[Aggregated],
    totals: &TotalsByPeriod,
    out: &mut Vec<Difference>,
) {
    let estimated: HashMap<&TotalKey, &TotalState> = totals
        .get(&(sub, period.start))
        .into_iter()
        .flatten()
        .map(|(k, v)| (k, v))
        .collect();
    // Every key either side knows, Aggregate's first; a side without the
    // key counts as zero.
    let mut keys: Vec<(LineKey, Decimal, Decimal)> = aggregated
        .iter()
        .map(|a| (a.key.clone(), a.quantity, a.estimate))
        .collect();
    for k in estimated.keys() {
        let line = LineKey {
            meter: k.meter.clone(),
            dimension: k.dimension.clone(),
            plan_terms: k.plan_terms.clone(),
        };
        if !keys.iter().any(|(l, _, _)| *l == line) {
            keys.push((line, Decimal::ZERO, Decimal::ZERO));
        }
    }
    for (line, quantity, amount) in keys {
        let total = TotalKey {
            tenant,
            subscription: sub,
            meter: line.meter.clone(),
            dimension: line.dimension.clone(),
            period_start: period.start,
            plan_terms: line.plan_terms.clone(),
        };
        let est = estimated.get(&total).map(|s| **s).unwrap_or_default();
        if est.quantity != quantity || est.price != amount {
            out.push(Difference {
                subscription: sub,
                period_start: period.start,
                meter: line.meter,
                dimension: line.dimension,
                plan_terms: line.plan_terms,
                aggregated_quantity: quantity,
                estimated_quantity: est.quantity,
                aggregated_amount: amount,
                estimated_amount: est.price,
            });
        }
    }
}

pub(crate) fn new_invoice(invoice: &Invoice, bill_run: Uuid) -> NewInvoice {
    let document = invoice.document();
    NewInvoice {
        id: invoice.id,
        subscription: invoice.subscription,
        customer: invoice.customer.clone(),
        period_start: invoice.period.start,
        period_end: invoice.period.end,
        cutoff: invoice.cutoff,
        currency: invoice.currency.clone(),
        total: invoice.total,
        bill_run,
        document_hash: Invoice::document_hash(&document),
        document,
        lineage: invoice
            .lines
            .iter()
            .filter(|l| !l.events.is_empty())
            .map(|l| (l.number, l.events.iter().map(|(id, _)| *id).collect()))
            .collect(),
        deliveries: invoice
            .routes
            .iter()
            .filter(|r| !matches!(r, super::Route::Ledger))
            .map(|r| serde_json::to_string(r).unwrap_or_default())
            .collect(),
    }
}

/// Runs a bill run and records it.
pub async fn run(
    store: &Arc<dyn Store>,
    config: &BillRunConfig,
    request: &RunRequest,
    clock: &dyn Clock,
) -> Result<RunReport, RunError> {
    let started_at = clock.now();
    let tenant = request.tenant;
    // Stores keep microseconds: the cut-off in the document must be the one
    // a replay reads back.
    let request = &RunRequest {
        cutoff: micros(request.cutoff),
        as_of: micros(request.as_of),
        ..request.clone()
    };
    let mut report = RunReport {
        id: Uuid::now_v7(),
        tenant,
        as_of: request.as_of,
        cutoff: request.cutoff,
        ..Default::default()
    };
    let loading = std::time::Instant::now();
    // What is due is decided before any invoice is read: the invoiced
    // periods are a light query, and a run with nothing due (most scheduled
    // runs) reads no invoice at all.
    let invoiced: BTreeSet<(Uuid, DateTime<Utc>)> =
        store.invoiced_periods(tenant).await?.into_iter().collect();
    let mut rc = RunContext::load(
        store.as_ref(),
        tenant,
        request.cutoff,
        Some(&BTreeSet::new()),
    )
    .instrument(tracing::info_span!("bill_run.load"))
    .await?;

    // What is due, per customer.
    let mut due: BTreeMap<String, Vec<Due>> = BTreeMap::new();
    let mut all_subs: Vec<Subscription> =
        rc.ctx.subscriptions.values().flatten().cloned().collect();
    all_subs.sort_by_key(|s| s.id);
    for sub in all_subs {
        if request.subscription.is_some_and(|s| s != sub.id) {
            continue;
        }
        match periods(&sub, &rc.ctx, request.as_of) {
            Ok(list) => {
                for (period, plan_name, catalog) in list {
                    if invoiced.contains(&(sub.id, period.start)) {
                        continue;
                    }
                    due.entry(sub.customer.clone()).or_default().push(Due {
                        sub: sub.clone(),
                        period,
                        plan_name,
                        catalog,
                    });
                }
            }
            Err(reason) => report.failures.push(FailureRecord {
                subscription: sub.id,
                customer: sub.customer.clone(),
                period_start: sub.starts_at,
                stage: "LOAD".into(),
                reason,
            }),
        }
    }
    let Some(first) = due.values().flatten().map(|d| d.period.start).min() else {
        return finish(store.as_ref(), report, started_at, clock).await;
    };
    // Now the invoices of the subscriptions with something due (rollover,
    // late events, chaining): per subscription when few are due, all at once
    // when many are (a period end).
    let due_subs: BTreeSet<Uuid> = due.values().flatten().map(|d| d.sub.id).collect();
    let some = (due_subs.len() <= 64).then_some(&due_subs);
    rc.invoices = load_invoices(store.as_ref(), tenant, request.cutoff, some).await?;
    let last = due
        .values()
        .flatten()
        .map(|d| d.period.start)
        .max()
        .unwrap_or(first);
    // The estimator's running totals, by (subscription, period start).
    let mut totals: TotalsByPeriod = HashMap::new();
    for (key, state) in store.running_totals_between(tenant, first, last).await? {
        totals
            .entry((key.subscription, key.period_start))
            .or_default()
            .push((key, state));
    }
    report.timings.load = ms(loading);

    let customers: Vec<String> = due.keys().cloned().collect();
    let chunks: Vec<Vec<String>> = customers
        .chunks(config.chunk.max(1))
        .map(<[String]>::to_vec)
        .collect();
    // Reading a chunk's events (PostgreSQL's work, and decoding them) runs
    // in a task of its own while the previous chunk is billed: on two cores
    // the database and the stages overlap.
    let read = |chunk: &Vec<String>| {
        let from = chunk
            .iter()
            .flat_map(|c| due[c].iter().map(|d| d.period.start))
            .min()
            .unwrap_or(first);
        let to = chunk
            .iter()
            .flat_map(|c| due[c].iter().map(|d| d.period.end))
            .max()
            .unwrap_or(from);
        let store = Arc::clone(store);
        let chunk = chunk.clone();
        let read_from = from - config.late_window;
        let cutoff = request.cutoff;
        let span = tracing::info_span!("bill_run.read", customers = chunk.len());
        tokio::spawn(
            async move {
                let mut events = store
                    .bill_events(tenant, &chunk, read_from, to, cutoff)
                    .await?;
                // Stored order (ids are UUIDv7): what Aggregate folds in.
                events.sort_unstable_by_key(|e| e.stored_id);
                Ok::<_, StoreError>(events)
            }
            .instrument(span),
        )
    };
    let mut stage_times = StageTimes::default();
    let mut next = chunks.first().map(read);
    for (n, chunk) in chunks.iter().enumerate() {
        let Some(reading) = next.take() else { break };
        let waiting = std::time::Instant::now();
        let events = reading
            .await
            .map_err(|e| RunError::Internal(format!("the task reading events failed: {e}")))??;
        report.timings.read_wait += ms(waiting);
        next = chunks.get(n + 1).map(read);
        report.events_read += events.len() as u64;
        let resolving = std::time::Instant::now();
        let mut usage = usage_by_period(tenant, &events, &rc.ctx);
        drop(events);
        report.timings.resolve += ms(resolving);
        let billing = std::time::Instant::now();
        // No await until the stages are done: the guard covers them only.
        let stages_span = tracing::info_span!("bill_run.stages", customers = chunk.len());
        let stages_guard = stages_span.enter();
        let mut batch: Vec<(Invoice, Vec<Aggregated>)> = Vec::new();
        let mut failed: BTreeSet<Uuid> = BTreeSet::new();
        for customer in chunk {
            for d in &due[customer] {
                // A subscription's later periods wait for a failed one.
                if failed.contains(&d.sub.id) {
                    continue;
                }
                let earlier: Vec<Invoice> = rc
                    .invoices
                    .get(&d.sub.id)
                    .map(|l| {
                        l.iter()
                            .filter(|i| i.period.start < d.period.start)
                            .cloned()
                            .collect()
                    })
                    .unwrap_or_default();
                let inputs = match rc.inputs(
                    tenant,
                    &d.sub,
                    d.period,
                    &d.plan_name,
                    &d.catalog,
                    request.cutoff,
                    &earlier,
                    &mut usage,
                    config,
                ) {
                    Ok(inputs) => inputs,
                    Err(reason) => {
                        report.failures.push(FailureRecord {
                            subscription: d.sub.id,
                            customer: customer.clone(),
                            period_start: d.period.start,
                            stage: "LOAD".into(),
                            reason,
                        });
                        failed.insert(d.sub.id);
                        continue;
                    }
                };
                match bill_timed(&inputs, Uuid::now_v7(), &mut stage_times) {
                    Ok(billed) => {
                        // Later periods of this run chain on this invoice.
                        rc.invoices
                            .entry(d.sub.id)
                            .or_default()
                            .push(billed.invoice.clone());
                        batch.push((billed.invoice, billed.aggregated));
                    }
                    Err(failure) => {
                        report.failures.push(FailureRecord {
                            subscription: d.sub.id,
                            customer: customer.clone(),
                            period_start: d.period.start,
                            stage: failure.stage.as_str().into(),
                            reason: failure.reason,
                        });
                        failed.insert(d.sub.id);
                    }
                }
            }
        }
        drop(stages_guard);
        report.timings.stages += ms(billing);
        let settling = std::time::Instant::now();
        let new: Vec<NewInvoice> = batch
            .iter()
            .map(|(i, _)| new_invoice(i, report.id))
            .collect();
        let outcomes = store
            .settle_invoices(tenant, &new)
            .instrument(tracing::info_span!("bill_run.settle", invoices = new.len()))
            .await?;
        report.timings.settle += ms(settling);
        let reconciling = std::time::Instant::now();
        for ((invoice, aggregated), outcome) in batch.into_iter().zip(outcomes) {
            match outcome {
                SettleOutcome::Settled { number } => {
                    reconcile(
                        invoice.subscription,
                        invoice.period,
                        tenant,
                        &aggregated,
                        &totals,
                        &mut report.differences,
                    );
                    report.invoiced.push(Settled {
                        invoice: invoice.id,
                        number,
                        subscription: invoice.subscription,
                        customer: invoice.customer.clone(),
                        period_start: invoice.period.start,
                        total: invoice.total,
                        currency: invoice.currency.clone(),
                    });
                }
                SettleOutcome::AlreadyInvoiced { .. } => report.already_invoiced += 1,
            }
        }
        report.timings.reconcile += ms(reconciling);
    }
    report.timings.stage_micros = stage_times
        .micros()
        .map(|(stage, micros)| (stage.to_owned(), micros))
        .collect();
    finish(store.as_ref(), report, started_at, clock).await
}

async fn finish(
    store: &dyn Store,
    report: RunReport,
    started_at: DateTime<Utc>,
    clock: &dyn Clock,
) -> Result<RunReport, RunError> {
    // A run that found nothing due is not worth a record (the scheduler
    // runs often).
    if report.invoiced.is_empty() && report.failures.is_empty() && report.already_invoiced == 0 {
        return Ok(report);
    }
    let record = BillRunRecord {
        id: report.id,
        tenant: report.tenant,
        as_of: report.as_of,
        cutoff: report.cutoff,
        started_at,
        finished_at: clock.now(),
        invoiced: report.invoiced.len() as i64,
        failed: report.failures.len() as i64,
        report: serde_json::to_string(&report).unwrap_or_default(),
    };
    store.record_bill_run(&record).await?;
    for f in &report.failures {
        tracing::warn!(
            subscription = %f.subscription,
            customer = %f.customer,
            period = %f.period_start,
            stage = %f.stage,
            reason = %f.reason,
            "a subscription failed its bill run"
        );
    }
    if !report.differences.is_empty() {
        tracing::warn!(
            differences = report.differences.len(),
            "the bill run's totals differ from the revenue estimates; see the run's report"
        );
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use aforo_store::SubscriptionPhase;
    use chrono::TimeZone;

    fn t(d: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 3, d, 0, 0, 0).unwrap()
    }

    #[test]
    fn reconciliation_reports_every_difference_and_nothing_else() {
        use super::super::aggregate::fold_all;
        use super::super::fixtures::{inputs_with, plan_per_unit, sum_item};
        use rust_decimal_macros::dec;
        let inputs = inputs_with(
            plan_per_unit("0.5", None),
            vec![sum_item(1, "api", dec!(4)), sum_item(2, "api", dec!(6))],
        );
        let aggregated = fold_all(&inputs.usage);
        let item = &inputs.usage[0].intent.key;
        let period = super::super::fixtures::period(3);
        let state = |q: Decimal, p: Decimal| TotalState {
            quantity: q,
            price: p,
            latest_time: None,
        };
        let mut other = item.clone();
        other.meter = "storage".into();
        let run = |totals: Vec<(TotalKey, TotalState)>| {
            let mut by_period = TotalsByPeriod::new();
            by_period.insert((item.subscription, period.start), totals);
            let mut out = Vec::new();
            reconcile(
                item.subscription,
                period,
                item.tenant,
                &aggregated,
                &by_period,
                &mut out,
            );
            out
        };
        // The estimator agrees: nothing to report.
        assert!(run(vec![(item.clone(), state(dec!(10), dec!(5)))]).is_empty());
        // It is behind (an event not yet enriched), and it knows a total the
        // bill run does not: both reported, with both sides' figures.
        let found = run(vec![
            (item.clone(), state(dec!(4), dec!(2))),
            (other.clone(), state(dec!(1), dec!(0.2))),
        ]);
        assert_eq!(found.len(), 2, "{found:?}");
        assert_eq!(
            (found[0].aggregated_quantity, found[0].estimated_quantity),
            (dec!(10), dec!(4))
        );
        assert_eq!(found[1].meter, "storage");
        assert_eq!(found[1].aggregated_amount, Decimal::ZERO);
        assert_eq!(found[1].estimated_amount, dec!(0.2));
    }

    #[test]
    fn later_plan_changes_are_not_known_at_an_earlier_cutoff() {
        let sub = Subscription {
            id: Uuid::nil(),
            customer: "acme".into(),
            starts_at: t(1),
            ends_at: None,
            billing_anchor_day: None,
            phases: vec![
                SubscriptionPhase {
                    starts_at: t(1),
                    ends_at: Some(t(20)),
                    rate_plan: "a".into(),
                    recorded_at: t(1),
                },
                SubscriptionPhase {
                    starts_at: t(20),
                    ends_at: None,
                    rate_plan: "b".into(),
                    recorded_at: t(15),
                },
            ],
            created_at: t(1),
        };
        let early = as_known_at(&sub, t(10)).unwrap();
        assert_eq!(early.phases.len(), 1);
        assert_eq!(early.phases[0].ends_at, None);
        assert_eq!(as_known_at(&sub, t(16)).unwrap(), sub);
        assert_eq!(
            as_known_at(&sub, Utc.with_ymd_and_hms(2026, 2, 1, 0, 0, 0).unwrap()),
            None
        );
    }
}
