//! Bill runs and invoices as a service, shared by the REST and gRPC APIs,
//! the CLI (through them) and the scheduler: run a bill run, replay a
//! period, read invoices, their lines and the events behind a line, export
//! an audit trail, grant subscription discounts.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration as StdDuration;

use aforo_crds::clock::{Clock, SystemClock};
use aforo_store::billing::{BillRunRecord, InvoiceQuery, StoredInvoice, SubscriptionDiscount};
use aforo_store::{Store, StoreError, StoredEvent, Tenant};
use chrono::{DateTime, Duration, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use tokio::sync::{Mutex, watch};
use tracing::Instrument;
use uuid::Uuid;

use crate::billrun::audit::{self, AuditExport};
use crate::billrun::deliver::deliver_due;
use crate::billrun::merkle;
use crate::billrun::replay::{ReplayResult, replay};
use crate::billrun::runner::{BillRunConfig, RunError, RunReport, RunRequest, parse_invoice, run};
use crate::billrun::{Invoice, Line};
use crate::metrics::BillRunMetrics;

#[derive(Debug, thiserror::Error)]
pub enum InvoiceError {
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    NotFound(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    Run(String),
}

impl From<RunError> for InvoiceError {
    fn from(e: RunError) -> Self {
        match e {
            RunError::Store(s) => InvoiceError::Store(s),
            other => InvoiceError::Run(other.to_string()),
        }
    }
}

/// One event behind a line, with what the RevenueEstimator made of it.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct LineEvent {
    pub stored_id: Uuid,
    pub id: String,
    pub source: String,
    pub tier: String,
    pub event_type: String,
    pub time: DateTime<Utc>,
    pub received_at: DateTime<Utc>,
    pub validation_hash: String,
    pub quantity: Option<Decimal>,
    pub revenue: Option<Decimal>,
}

/// A page of a line's events.
#[derive(Clone, Debug, Serialize)]
pub struct LineEvents {
    pub total: usize,
    pub events: Vec<LineEvent>,
    /// Pass as `offset` for the next page.
    pub next_offset: Option<usize>,
}

/// Usage attribution of a line: its events by source and tier.
#[derive(Clone, Debug, Default, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Attribution {
    pub source: String,
    pub tier: String,
    pub events: u64,
    pub quantity: Decimal,
    pub revenue: Decimal,
}

/// Where an event was billed, and the proof that it is in that line's root.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct EventProof {
    pub event: Uuid,
    pub validation_hash: String,
    pub invoice: Uuid,
    pub number: String,
    pub line: u32,
    pub merkle_root: String,
    pub leaf: String,
    pub proof: merkle::Proof,
}

#[derive(Clone)]
pub struct InvoiceApi {
    store: Arc<dyn Store>,
    config: BillRunConfig,
    /// How long after an instant its events are surely committed: the
    /// default cut-off of a run is `now - settle_delay`.
    settle_delay: Duration,
    /// One run at a time in this process (the store makes concurrent runs
    /// across processes safe; this keeps one process from racing itself).
    running: Arc<Mutex<()>>,
    /// What "now" is: which periods have ended, the default cut-off.
    clock: Arc<dyn Clock>,
    /// Where runs are counted, when the process has a registry.
    metrics: Option<Arc<BillRunMetrics>>,
}

impl InvoiceApi {
    pub fn new(store: Arc<dyn Store>, config: BillRunConfig, settle_delay: Duration) -> Self {
        InvoiceApi {
            store,
            config,
            settle_delay,
            running: Arc::new(Mutex::new(())),
            clock: Arc::new(SystemClock),
            metrics: None,
        }
    }

    /// The same API, counting its runs in `registry` (`aforo_billing_*`).
    pub fn with_metrics(mut self, registry: &mut prometheus_client::registry::Registry) -> Self {
        self.metrics = Some(Arc::new(BillRunMetrics::register(registry)));
        self
    }

    /// The same API on another clock (tests stand on a period's boundary).
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    pub fn config(&self) -> &BillRunConfig {
        &self.config
    }

    /// Runs a bill run for periods ended by `as_of` (default: the cut-off),
    /// counting events stored by `cutoff` (default now minus the settle
    /// delay), then makes the deliveries that are due.
    pub async fn run(
        &self,
        tenant: Uuid,
        as_of: Option<DateTime<Utc>>,
        cutoff: Option<DateTime<Utc>>,
        subscription: Option<Uuid>,
    ) -> Result<RunReport, InvoiceError> {
        let now = self.clock.now();
        let cutoff = cutoff.unwrap_or(now - self.settle_delay);
        // By default a period is due once the cut-off has passed its end,
        // so that the events stored in its last moments are on its invoice
        // rather than adjustments on the next.
        let as_of = as_of.unwrap_or(cutoff.min(now));
        if as_of > now {
            return Err(InvoiceError::Invalid(format!(
                "as_of {as_of} is in the future: periods are billed once they have ended"
            )));
        }
        if cutoff > now {
            return Err(InvoiceError::Invalid(format!(
                "cutoff {cutoff} is in the future: events stored after it would fall between invoices"
            )));
        }
        let _one = self.running.lock().await;
        let started = std::time::Instant::now();
        let span = tracing::info_span!("bill_run", %tenant, %as_of, %cutoff);
        let report = run(
            &self.store,
            &self.config,
            &RunRequest {
                tenant,
                as_of,
                cutoff,
                subscription,
            },
            self.clock.as_ref(),
        )
        .instrument(span)
        .await;
        drop(_one);
        if let Some(metrics) = &self.metrics {
            match &report {
                Ok(report) => metrics.finished(report, started.elapsed()),
                Err(_) => metrics.failed(started.elapsed()),
            }
        }
        let report = report?;
        let now = self.clock.now();
        if let Err(e) = deliver_due(self.store.as_ref(), &self.config.routing, now).await {
            tracing::warn!(error = %e, "invoice deliveries will be retried");
        }
        Ok(report)
    }

    pub async fn replay(
        &self,
        tenant: Uuid,
        period_start: DateTime<Utc>,
        subscription: Option<Uuid>,
    ) -> Result<Vec<ReplayResult>, InvoiceError> {
        let results = replay(
            self.store.as_ref(),
            &self.config,
            tenant,
            period_start,
            subscription,
        )
        .await?;
        if results.is_empty() {
            return Err(InvoiceError::NotFound(format!(
                "no invoice for a period starting at {period_start}"
            )));
        }
        Ok(results)
    }

    pub async fn list(
        &self,
        tenant: Uuid,
        query: &InvoiceQuery,
    ) -> Result<Vec<StoredInvoice>, InvoiceError> {
        Ok(self.store.invoices(tenant, query).await?)
    }

    /// An invoice by id or number, parsed.
    pub async fn get(
        &self,
        tenant: Uuid,
        invoice: &str,
    ) -> Result<(StoredInvoice, Invoice), InvoiceError> {
        let stored = self
            .store
            .invoice(tenant, invoice)
            .await?
            .ok_or_else(|| InvoiceError::NotFound(format!("no invoice {invoice:?}")))?;
        let parsed = parse_invoice(&stored)?;
        Ok((stored, parsed))
    }

    async fn line(
        &self,
        tenant: Uuid,
        invoice: &str,
        line: u32,
    ) -> Result<(Invoice, Line, Vec<Uuid>), InvoiceError> {
        let (stored, parsed) = self.get(tenant, invoice).await?;
        let found = parsed
            .lines
            .iter()
            .find(|l| l.number == line)
            .cloned()
            .ok_or_else(|| {
                InvoiceError::NotFound(format!("invoice {} has no line {line}", stored.number))
            })?;
        let ids = self
            .store
            .line_events(tenant, stored.id, line)
            .await?
            .unwrap_or_default();
        Ok((parsed, found, ids))
    }

    async fn describe(
        &self,
        tenant: Uuid,
        line: &Line,
        ids: &[Uuid],
    ) -> Result<Vec<LineEvent>, InvoiceError> {
        let events: BTreeMap<Uuid, StoredEvent> = self
            .store
            .events_by_ids(tenant, ids)
            .await?
            .into_iter()
            .map(|e| (e.stored_id, e))
            .collect();
        let meter = line.key.as_ref().map(|k| k.meter.clone());
        let ledger: BTreeMap<Uuid, _> = self
            .store
            .ledger_of(tenant, ids)
            .await?
            .into_iter()
            .filter(|l| Some(&l.meter) == meter.as_ref())
            .map(|l| (l.event, l))
            .collect();
        Ok(ids
            .iter()
            .filter_map(|id| {
                let e = events.get(id)?;
                let l = ledger.get(id);
                Some(LineEvent {
                    stored_id: *id,
                    id: e.event.id.clone(),
                    source: e.event.source.clone(),
                    tier: e.event.tier.as_str().to_owned(),
                    event_type: e.event.event_type.clone(),
                    time: e.event.time,
                    received_at: e.received_at,
                    validation_hash: e.validation_hash.clone(),
                    quantity: l.map(|l| l.quantity),
                    revenue: l.map(|l| l.revenue),
                })
            })
            .collect())
    }

    /// A page of the events behind a line, in line order.
    pub async fn line_events(
        &self,
        tenant: Uuid,
        invoice: &str,
        line: u32,
        offset: usize,
        limit: usize,
    ) -> Result<LineEvents, InvoiceError> {
        let (_, found, ids) = self.line(tenant, invoice, line).await?;
        let limit = limit.clamp(1, 1000);
        let page: Vec<Uuid> = ids.iter().skip(offset).take(limit).copied().collect();
        let next = (offset + page.len() < ids.len()).then_some(offset + page.len());
        Ok(LineEvents {
            total: ids.len(),
            events: self.describe(tenant, &found, &page).await?,
            next_offset: next,
        })
    }

    /// A line's events by source and tier, with their quantities and
    /// revenue estimates.
    pub async fn attribution(
        &self,
        tenant: Uuid,
        invoice: &str,
        line: u32,
    ) -> Result<Vec<Attribution>, InvoiceError> {
        let (_, found, ids) = self.line(tenant, invoice, line).await?;
        let mut groups: BTreeMap<(String, String), Attribution> = BTreeMap::new();
        for chunk in ids.chunks(5000) {
            for e in self.describe(tenant, &found, chunk).await? {
                let g = groups
                    .entry((e.source.clone(), e.tier.clone()))
                    .or_insert_with(|| Attribution {
                        source: e.source.clone(),
                        tier: e.tier.clone(),
                        ..Default::default()
                    });
                g.events += 1;
                g.quantity += e.quantity.unwrap_or_default();
                g.revenue += e.revenue.unwrap_or_default();
            }
        }
        Ok(groups.into_values().collect())
    }

    /// The Merkle proof of one stored event: the invoice line it was billed
    /// on, the line's root, the event's leaf and its audit path.
    pub async fn proof(&self, tenant: Uuid, event: Uuid) -> Result<EventProof, InvoiceError> {
        let found = self
            .store
            .events_by_ids(tenant, &[event])
            .await?
            .pop()
            .ok_or_else(|| InvoiceError::NotFound(format!("no stored event {event}")))?;
        let query = InvoiceQuery {
            customer: Some(found.event.customer.clone()),
            ..Default::default()
        };
        for stored in self.store.invoices(tenant, &query).await? {
            let invoice = parse_invoice(&stored)?;
            for line in &invoice.lines {
                if line.event_count == 0 || !line.period.contains(found.event.time) {
                    continue;
                }
                // The lineage alone says whether the event is on this line;
                // its events are read only for the line that has it.
                let ids = self
                    .store
                    .line_events(tenant, stored.id, line.number)
                    .await?
                    .unwrap_or_default();
                let Some(index) = ids.iter().position(|id| *id == event) else {
                    continue;
                };
                let leaves =
                    audit::line_leaves(self.store.as_ref(), tenant, stored.id, line.number)
                        .await?
                        .leaves;
                let proof = merkle::proof(&leaves, index).ok_or_else(|| {
                    InvoiceError::Run(format!("no proof for leaf {index} of {}", leaves.len()))
                })?;
                return Ok(EventProof {
                    event,
                    validation_hash: found.validation_hash.clone(),
                    invoice: stored.id,
                    number: stored.number.clone(),
                    line: line.number,
                    merkle_root: line.merkle_root.clone().unwrap_or_default(),
                    leaf: hex::encode(leaves[index]),
                    proof,
                });
            }
        }
        Err(InvoiceError::NotFound(format!(
            "event {event} is not on any invoice yet"
        )))
    }

    pub async fn audit(&self, tenant: &Tenant, invoice: &str) -> Result<AuditExport, InvoiceError> {
        audit::export(self.store.as_ref(), tenant, invoice)
            .await?
            .ok_or_else(|| InvoiceError::NotFound(format!("no invoice {invoice:?}")))
    }

    pub async fn add_discount(
        &self,
        tenant: Uuid,
        subscription: Uuid,
        percent: Option<Decimal>,
        amount: Option<Decimal>,
        valid_from: Option<DateTime<Utc>>,
        valid_until: Option<DateTime<Utc>>,
    ) -> Result<SubscriptionDiscount, InvoiceError> {
        match (percent, amount) {
            (Some(p), None) if p > Decimal::ZERO && p <= Decimal::ONE_HUNDRED => {}
            (None, Some(a)) if a > Decimal::ZERO => {}
            (Some(_), None) => {
                return Err(InvoiceError::Invalid(
                    "percent must be more than 0 and at most 100".into(),
                ));
            }
            (None, Some(_)) => {
                return Err(InvoiceError::Invalid("amount must be more than 0".into()));
            }
            _ => {
                return Err(InvoiceError::Invalid(
                    "a discount has exactly one of percent and amount".into(),
                ));
            }
        }
        if let (Some(f), Some(u)) = (valid_from, valid_until)
            && f >= u
        {
            return Err(InvoiceError::Invalid(
                "valid_from must be before valid_until".into(),
            ));
        }
        let discount = SubscriptionDiscount {
            id: Uuid::now_v7(),
            subscription,
            percent,
            amount,
            valid_from,
            valid_until,
            created_at: self.clock.now(),
        };
        self.store
            .add_subscription_discount(tenant, &discount)
            .await?;
        Ok(discount)
    }

    pub async fn runs(&self, tenant: Uuid, limit: u32) -> Result<Vec<BillRunRecord>, InvoiceError> {
        Ok(self.store.bill_runs(tenant, limit).await?)
    }

    /// The scheduler: every `every`, bills each tenant's periods that have
    /// ended (a no-op when none has) and retries due deliveries.
    pub async fn schedule(self, every: StdDuration, mut stop: watch::Receiver<bool>) {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = stop.wait_for(|s| *s) => return,
            }
            let tenants = match self.store.list_tenants().await {
                Ok(t) => t,
                Err(e) => {
                    tracing::warn!(error = %e, "the bill run scheduler cannot list tenants");
                    continue;
                }
            };
            for tenant in tenants {
                match self.run(tenant.id, None, None, None).await {
                    Ok(r) if !r.invoiced.is_empty() || !r.failures.is_empty() => tracing::info!(
                        tenant = %tenant.name,
                        invoiced = r.invoiced.len(),
                        failed = r.failures.len(),
                        "scheduled bill run"
                    ),
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(tenant = %tenant.name, error = %e, "scheduled bill run failed")
                    }
                }
            }
        }
    }
}
