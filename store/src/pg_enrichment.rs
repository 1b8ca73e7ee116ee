//! PostgreSQL: the enrichment queue, running totals and the ledger.

use std::collections::{BTreeMap, HashMap};

use async_trait::async_trait;
use chrono::Utc;
use sqlx::{Postgres, Row, Transaction};
use uuid::Uuid;

use crate::enrichment::{
    AggregationInput, EnrichmentClaim, EnrichmentOutcome, EnrichmentState, RevenueQuery,
    RevenueRow, TotalKey, TotalState, fold,
};
use crate::postgres::{event_from_row, micros};
use crate::{HourRow, LedgerLine};
use crate::{PgStore, Result, StoredEvent};

pub(crate) struct PgClaim {
    tx: Transaction<'static, Postgres>,
    events: Vec<StoredEvent>,
}

impl PgStore {
    pub(crate) async fn pg_revenue_by_hour(
        &self,
        tenant: Uuid,
        q: &RevenueQuery,
    ) -> Result<Vec<HourRow>> {
        let rows = sqlx::query(
            "SELECT date_trunc('hour', event_time) AS hour, currency, sum(revenue) AS revenue,
                 sum(cost) AS cost, count(*) AS events
             FROM ledger
             WHERE tenant_id = $1 AND ($2::text IS NULL OR customer = $2)
               AND ($3::timestamptz IS NULL OR event_time >= $3)
               AND ($4::timestamptz IS NULL OR event_time < $4)
             GROUP BY 1, 2 ORDER BY 1, 2",
        )
        .bind(tenant)
        .bind(&q.customer)
        .bind(q.from)
        .bind(q.to)
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| {
                Ok(HourRow {
                    hour: r.try_get("hour")?,
                    currency: r.try_get("currency")?,
                    revenue: r.try_get("revenue")?,
                    cost: r.try_get("cost")?,
                    events: r.try_get("events")?,
                })
            })
            .collect()
    }

    pub(crate) async fn pg_running_totals_of(
        &self,
        tenant: Uuid,
        subscription: Uuid,
    ) -> Result<Vec<(TotalKey, TotalState)>> {
        let rows = sqlx::query(
            "SELECT meter, dimension, period_start, plan_terms, quantity, price, latest_time
             FROM running_totals WHERE tenant_id = $1 AND subscription_id = $2
             ORDER BY period_start, meter, dimension",
        )
        .bind(tenant)
        .bind(subscription)
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    TotalKey {
                        tenant,
                        subscription,
                        meter: r.try_get("meter")?,
                        dimension: r.try_get("dimension")?,
                        period_start: r.try_get("period_start")?,
                        plan_terms: r.try_get("plan_terms")?,
                    },
                    TotalState {
                        quantity: r.try_get("quantity")?,
                        price: r.try_get("price")?,
                        latest_time: r.try_get("latest_time")?,
                    },
                ))
            })
            .collect()
    }

    pub(crate) async fn pg_claim_enrichment(&self, limit: u32) -> Result<Box<dyn EnrichmentClaim>> {
        let mut tx = self.pool().begin().await?;
        let rows = sqlx::query(
            "SELECT id, seq, tenant_id, event_id, source, type, customer, time,
                 properties::text AS properties, tier, tier_detail, status, flags, gates,
                 validation_hash, received_at, node, enrichment
             FROM events WHERE enrichment IS NULL
             ORDER BY seq LIMIT $1
             FOR UPDATE SKIP LOCKED",
        )
        .bind(i64::from(limit))
        .fetch_all(&mut *tx)
        .await?;
        let events = rows
            .iter()
            .map(event_from_row)
            .collect::<Result<Vec<_>>>()?;
        Ok(Box::new(PgClaim { tx, events }))
    }

    pub(crate) async fn pg_requeue_waiting(&self, tenant: Uuid) -> Result<u64> {
        let done = sqlx::query(
            "UPDATE events SET enrichment = NULL
             WHERE tenant_id = $1 AND enrichment IN ('UNATTRIBUTED', 'UNMETERED')",
        )
        .bind(tenant)
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected())
    }

    pub(crate) async fn pg_revenue(
        &self,
        tenant: Uuid,
        q: &RevenueQuery,
    ) -> Result<Vec<RevenueRow>> {
        let rows = sqlx::query(
            "SELECT customer, meter, currency, sum(quantity) AS quantity, sum(revenue) AS revenue,
                 sum(cost) AS cost, count(*) AS events
             FROM ledger
             WHERE tenant_id = $1 AND ($2::text IS NULL OR customer = $2)
               AND ($3::timestamptz IS NULL OR event_time >= $3)
               AND ($4::timestamptz IS NULL OR event_time < $4)
             GROUP BY customer, meter, currency ORDER BY customer, meter, currency",
        )
        .bind(tenant)
        .bind(&q.customer)
        .bind(q.from)
        .bind(q.to)
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| {
                Ok(RevenueRow {
                    customer: r.try_get("customer")?,
                    meter: r.try_get("meter")?,
                    currency: r.try_get("currency")?,
                    quantity: r.try_get("quantity")?,
                    revenue: r.try_get("revenue")?,
                    cost: r.try_get("cost")?,
                    events: r.try_get("events")?,
                })
            })
            .collect()
    }

    pub(crate) async fn pg_ledger_of(&self, tenant: Uuid, event: Uuid) -> Result<Vec<LedgerLine>> {
        let rows = sqlx::query(
            "SELECT meter, rate_plan, catalog_version, quantity, revenue, currency, cost FROM ledger
             WHERE tenant_id = $1 AND event_id = $2 ORDER BY meter",
        )
        .bind(tenant)
        .bind(event)
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| {
                Ok(LedgerLine {
                    meter: r.try_get("meter")?,
                    rate_plan: r.try_get("rate_plan")?,
                    catalog_version: r.try_get("catalog_version")?,
                    quantity: r.try_get("quantity")?,
                    revenue: r.try_get("revenue")?,
                    currency: r.try_get("currency")?,
                    cost: r.try_get("cost")?,
                })
            })
            .collect()
    }
}

#[async_trait]
impl EnrichmentClaim for PgClaim {
    fn events(&self) -> &[StoredEvent] {
        &self.events
    }

    async fn complete(mut self: Box<Self>, outcomes: Vec<EnrichmentOutcome>) -> Result<usize> {
        let tx = &mut self.tx;
        let now = micros(Utc::now());
        // Lock every running total once, in key order (no deadlocks between
        // enrichers), creating the missing ones.
        let mut totals: BTreeMap<TotalKey, TotalState> = BTreeMap::new();
        for outcome in &outcomes {
            for intent in &outcome.intents {
                totals.entry(intent.key.clone()).or_default();
            }
        }
        for (key, state) in totals.iter_mut() {
            sqlx::query(
                "INSERT INTO running_totals (tenant_id, subscription_id, meter, dimension, period_start,
                     plan_terms, quantity, price, latest_time, updated_at)
                 VALUES ($1, $2, $3, $4, $5, $6, 0, 0, NULL, $7)
                 ON CONFLICT DO NOTHING",
            )
            .bind(key.tenant)
            .bind(key.subscription)
            .bind(&key.meter)
            .bind(&key.dimension)
            .bind(key.period_start)
            .bind(&key.plan_terms)
            .bind(now)
            .execute(&mut **tx)
            .await?;
            let row = sqlx::query(
                "SELECT quantity, price, latest_time FROM running_totals
                 WHERE tenant_id = $1 AND subscription_id = $2 AND meter = $3 AND dimension = $4
                   AND period_start = $5 AND plan_terms = $6
                 FOR UPDATE",
            )
            .bind(key.tenant)
            .bind(key.subscription)
            .bind(&key.meter)
            .bind(&key.dimension)
            .bind(key.period_start)
            .bind(&key.plan_terms)
            .fetch_one(&mut **tx)
            .await?;
            *state = TotalState {
                quantity: row.try_get("quantity")?,
                price: row.try_get("price")?,
                latest_time: row.try_get("latest_time")?,
            };
        }

        let mut written = 0;
        let mut marks: HashMap<EnrichmentState, Vec<Uuid>> = HashMap::new();
        for outcome in &outcomes {
            marks.entry(outcome.state).or_default().push(outcome.event);
            for intent in &outcome.intents {
                let key = &intent.key;
                let unique_is_new = match &intent.input {
                    AggregationInput::UniqueCount(value) => {
                        sqlx::query(
                            "INSERT INTO running_unique_values (tenant_id, subscription_id, meter, dimension,
                                 period_start, plan_terms, value)
                             VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING",
                        )
                        .bind(key.tenant)
                        .bind(key.subscription)
                        .bind(&key.meter)
                        .bind(&key.dimension)
                        .bind(key.period_start)
                        .bind(&key.plan_terms)
                        .bind(value)
                        .execute(&mut **tx)
                        .await?
                        .rows_affected()
                            == 1
                    }
                    _ => false,
                };
                let state = totals.entry(key.clone()).or_default();
                let (quantity, revenue) = fold(state, intent, outcome.event_time, unique_is_new);
                sqlx::query(
                    "INSERT INTO ledger (event_id, meter, tenant_id, customer, subscription_id, rate_plan,
                         catalog_version, dimension, period_start, event_time, quantity, revenue, currency,
                         cost, cost_currency, enriched_at)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)",
                )
                .bind(outcome.event)
                .bind(&key.meter)
                .bind(key.tenant)
                .bind(&intent.customer)
                .bind(key.subscription)
                .bind(&intent.rate_plan)
                .bind(intent.catalog_version)
                .bind(&key.dimension)
                .bind(key.period_start)
                .bind(outcome.event_time)
                .bind(quantity)
                .bind(revenue)
                .bind(&intent.currency)
                .bind(intent.cost)
                .bind(&intent.cost_currency)
                .bind(now)
                .execute(&mut **tx)
                .await?;
                written += 1;
            }
        }
        for (key, state) in &totals {
            sqlx::query(
                "UPDATE running_totals SET quantity = $7, price = $8, latest_time = $9, updated_at = $10
                 WHERE tenant_id = $1 AND subscription_id = $2 AND meter = $3 AND dimension = $4
                   AND period_start = $5 AND plan_terms = $6",
            )
            .bind(key.tenant)
            .bind(key.subscription)
            .bind(&key.meter)
            .bind(&key.dimension)
            .bind(key.period_start)
            .bind(&key.plan_terms)
            .bind(state.quantity)
            .bind(state.price)
            .bind(state.latest_time)
            .bind(now)
            .execute(&mut **tx)
            .await?;
        }
        for (state, ids) in marks {
            sqlx::query("UPDATE events SET enrichment = $1 WHERE id = ANY($2)")
                .bind(state.as_str())
                .bind(&ids)
                .execute(&mut **tx)
                .await?;
        }
        self.tx.commit().await?;
        Ok(written)
    }
}
