//! Usage and money before the period closes: entitlements (included, used,
//! remaining), an hourly revenue series, and margin by customer cohort.

use std::collections::BTreeMap;
use std::str::FromStr;
use std::sync::Arc;

use aforo_crds::clock::{Clock, SystemClock};
use aforo_crds::compile::CatalogSnapshot;
use aforo_store::context::ContextCache;
use aforo_store::{HourRow, RevenueQuery, Store, StoreError};
use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use rust_decimal::Decimal;
use uuid::Uuid;

use crate::period::Calendar;

/// What a customer may still use of a meter this period.
#[derive(Clone, Debug, PartialEq)]
pub struct Entitlement {
    pub customer: String,
    pub meter: String,
    pub rate_plan: String,
    pub period_start: DateTime<Utc>,
    pub included: Decimal,
    pub used: Decimal,
    pub remaining: Decimal,
}

/// Revenue, cost and margin of one cohort in one currency.
#[derive(Clone, Debug, PartialEq)]
pub struct CohortRow {
    pub cohort: String,
    pub currency: String,
    pub revenue: Decimal,
    pub cost: Decimal,
    pub customers: usize,
}

#[derive(Clone)]
pub struct UsageApi {
    store: Arc<dyn Store>,
    context: Arc<ContextCache>,
    clock: Arc<dyn Clock>,
}

impl UsageApi {
    pub fn new(store: Arc<dyn Store>, context: Arc<ContextCache>) -> Self {
        UsageApi {
            store,
            context,
            clock: Arc::new(SystemClock),
        }
    }

    /// The same API on another clock.
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// What "this period" and "the last 24 hours" are measured from.
    pub fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    /// The entitlement of `customer` to `meter` at `now`, or `None` when no
    /// subscription or charge applies. Plans and subscriptions come from the
    /// context cache; `used` is the enricher's running total.
    pub async fn entitlement(
        &self,
        tenant: Uuid,
        customer: &str,
        meter: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<Entitlement>, StoreError> {
        let store = self.store.as_ref();
        let subs = self.context.subscriptions(store, tenant, customer).await?;
        let Some((sub, plan_name)) = subs.iter().find_map(|s| s.plan_at(now).map(|p| (s, p)))
        else {
            return Ok(None);
        };
        let versions = self.context.catalog_versions(store, tenant).await?;
        let Some(version) = versions
            .iter()
            .rev()
            .find(|v| v.effective_from.is_none_or(|from| from <= now))
        else {
            return Ok(None);
        };
        let snapshot: CatalogSnapshot = serde_json::from_str(&version.snapshot).map_err(|e| {
            StoreError::Corrupt(format!("catalog version {}: {e}", version.version))
        })?;
        let Some(plan) = snapshot.rate_plans.get(plan_name) else {
            return Ok(None);
        };
        let Some(charge) = plan.charges.iter().find(|c| c.meter == meter) else {
            return Ok(None);
        };
        let included = charge
            .included_units
            .as_ref()
            .and_then(|d| Decimal::from_str(d.as_str()).ok())
            .unwrap_or_default();
        let Some(period) = Calendar::of(sub, plan).period_of(now) else {
            return Ok(None);
        };
        let period = period.start;
        let used: Decimal = store
            .running_totals_of(tenant, sub.id)
            .await?
            .into_iter()
            .filter(|(key, _)| key.meter == meter && key.period_start == period)
            .map(|(_, state)| state.quantity)
            .sum();
        Ok(Some(Entitlement {
            customer: customer.to_owned(),
            meter: meter.to_owned(),
            rate_plan: plan_name.to_owned(),
            period_start: period,
            included,
            used,
            remaining: (included - used).max(Decimal::ZERO),
        }))
    }

    /// Revenue, cost and events by (customer, meter, currency).
    pub async fn revenue(
        &self,
        tenant: Uuid,
        query: &RevenueQuery,
    ) -> Result<Vec<aforo_store::RevenueRow>, StoreError> {
        self.store.revenue(tenant, query).await
    }

    /// What each meter made of some stored events: their ledger rows.
    pub async fn ledger_of(
        &self,
        tenant: Uuid,
        events: &[Uuid],
    ) -> Result<Vec<aforo_store::LedgerLine>, StoreError> {
        self.store.ledger_of(tenant, events).await
    }

    /// Revenue and cost per hour over the 24 hours up to `now`.
    pub async fn last_24_hours(
        &self,
        tenant: Uuid,
        customer: Option<String>,
        now: DateTime<Utc>,
    ) -> Result<Vec<HourRow>, StoreError> {
        let this_hour = now.duration_trunc(TimeDelta::hours(1)).unwrap_or(now);
        let query = RevenueQuery {
            customer,
            from: Some(this_hour - TimeDelta::hours(23)),
            to: Some(now),
        };
        self.store.revenue_by_hour(tenant, &query).await
    }

    /// Revenue, cost and margin by the value of one customer metadata key
    /// (customers without it form the cohort "(none)").
    pub async fn cohorts(
        &self,
        tenant: Uuid,
        key: &str,
        query: &RevenueQuery,
    ) -> Result<Vec<CohortRow>, StoreError> {
        let rows = self.store.revenue(tenant, query).await?;
        let mut cohort_of: BTreeMap<String, String> = BTreeMap::new();
        let mut after: Option<String> = None;
        loop {
            let page = self
                .store
                .list_customers(tenant, after.as_deref(), 1000)
                .await?;
            for c in &page {
                let cohort = c
                    .metadata
                    .get(key)
                    .map(|v| {
                        v.as_str()
                            .map(str::to_owned)
                            .unwrap_or_else(|| v.to_string())
                    })
                    .unwrap_or_else(|| "(none)".to_owned());
                cohort_of.insert(c.external_id.clone(), cohort);
            }
            match page.last() {
                Some(last) if page.len() == 1000 => after = Some(last.external_id.clone()),
                _ => break,
            }
        }
        let mut out: BTreeMap<(String, String), (CohortRow, std::collections::BTreeSet<String>)> =
            BTreeMap::new();
        for r in rows {
            let cohort = cohort_of
                .get(&r.customer)
                .cloned()
                .unwrap_or_else(|| "(none)".to_owned());
            let (row, customers) = out
                .entry((cohort.clone(), r.currency.clone()))
                .or_insert_with(|| {
                    (
                        CohortRow {
                            cohort,
                            currency: r.currency.clone(),
                            revenue: Decimal::ZERO,
                            cost: Decimal::ZERO,
                            customers: 0,
                        },
                        Default::default(),
                    )
                });
            row.revenue += r.revenue;
            row.cost += r.cost;
            customers.insert(r.customer);
            row.customers = customers.len();
        }
        Ok(out.into_values().map(|(row, _)| row).collect())
    }
}
