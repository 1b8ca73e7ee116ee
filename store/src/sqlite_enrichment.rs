//! SQLite: the enrichment queue, running totals and the ledger. Decimals
//! are stored as their exact text. The claim holds the single writer, so
//! enrichment and ingest commits take turns (standalone runs one enricher).

use std::collections::{BTreeMap, HashMap};
use std::str::FromStr;

use async_trait::async_trait;
use chrono::Utc;
use rust_decimal::Decimal;
use sqlx::{Row, Sqlite, Transaction};
use uuid::Uuid;

use crate::enrichment::{
    AggregationInput, EnrichmentClaim, EnrichmentOutcome, EnrichmentState, RevenueQuery,
    RevenueRow, TotalKey, TotalState, fold,
};
use crate::sqlite::{event_from_row, time, uuid};
use crate::{HourRow, LedgerLine};
use crate::{Result, SqliteStore, StoreError, StoredEvent};

pub(crate) struct SqliteClaim {
    tx: Transaction<'static, Sqlite>,
    events: Vec<StoredEvent>,
}

/// A running total as read back (see the PostgreSQL twin).
pub(crate) fn total_from_row(
    tenant: Uuid,
    r: &sqlx::sqlite::SqliteRow,
) -> Result<(TotalKey, TotalState)> {
    Ok((
        TotalKey {
            tenant,
            subscription: crate::sqlite::uuid(r.try_get("subscription_id")?)?,
            meter: r.try_get("meter")?,
            dimension: r.try_get("dimension")?,
            period_start: time(r.try_get("period_start")?)?,
            plan_terms: r.try_get("plan_terms")?,
        },
        TotalState {
            quantity: decimal(r.try_get("quantity")?)?,
            price: decimal(r.try_get("price")?)?,
            latest_time: r
                .try_get::<Option<i64>, _>("latest_time")?
                .map(time)
                .transpose()?,
        },
    ))
}

pub(crate) fn decimal(text: &str) -> Result<Decimal> {
    Decimal::from_str(text).map_err(|_| StoreError::Corrupt(format!("{text:?} is not a decimal")))
}

impl SqliteStore {
    pub(crate) async fn sqlite_revenue_by_hour(
        &self,
        tenant: Uuid,
        q: &RevenueQuery,
    ) -> Result<Vec<HourRow>> {
        const HOUR: i64 = 3_600_000_000;
        let rows = sqlx::query(
            "SELECT event_time, currency, revenue, cost FROM ledger
             WHERE tenant_id = ?1 AND (?2 IS NULL OR customer = ?2)
               AND (?3 IS NULL OR event_time >= ?3) AND (?4 IS NULL OR event_time < ?4)",
        )
        .bind(tenant.to_string())
        .bind(&q.customer)
        .bind(q.from.map(|t| t.timestamp_micros()))
        .bind(q.to.map(|t| t.timestamp_micros()))
        .fetch_all(self.readers())
        .await?;
        let mut sums: BTreeMap<(i64, String), (Decimal, Decimal, i64)> = BTreeMap::new();
        for r in rows {
            let t: i64 = r.try_get("event_time")?;
            let entry = sums
                .entry((t.div_euclid(HOUR) * HOUR, r.try_get("currency")?))
                .or_default();
            entry.0 += decimal(r.try_get("revenue")?)?;
            entry.1 += decimal(r.try_get("cost")?)?;
            entry.2 += 1;
        }
        sums.into_iter()
            .map(|((hour, currency), (revenue, cost, events))| {
                Ok(HourRow {
                    hour: time(hour)?,
                    currency,
                    revenue,
                    cost,
                    events,
                })
            })
            .collect()
    }

    pub(crate) async fn sqlite_running_totals_of(
        &self,
        tenant: Uuid,
        subscription: Uuid,
    ) -> Result<Vec<(TotalKey, TotalState)>> {
        let rows = sqlx::query(
            "SELECT subscription_id, meter, dimension, period_start, plan_terms, quantity, price,
                 latest_time
             FROM running_totals WHERE tenant_id = ?1 AND subscription_id = ?2
             ORDER BY period_start, meter, dimension",
        )
        .bind(tenant.to_string())
        .bind(subscription.to_string())
        .fetch_all(self.readers())
        .await?;
        rows.iter().map(|r| total_from_row(tenant, r)).collect()
    }

    pub(crate) async fn sqlite_claim_enrichment(
        &self,
        limit: u32,
    ) -> Result<Box<dyn EnrichmentClaim>> {
        let mut tx = self.writer().begin_with("BEGIN IMMEDIATE").await?;
        let rows = sqlx::query(
            "SELECT e.id, e.seq, e.tenant_id, e.event_id, e.source, e.type, e.customer, e.time,
                 e.properties, e.tier, e.tier_detail, e.status, e.flags, e.gates,
                 e.validation_hash, e.received_at, e.node, NULL AS enrichment
             FROM enrichment_queue q JOIN events e ON e.id = q.event_id
             WHERE q.waiting IS NULL
             ORDER BY q.position LIMIT ?1",
        )
        .bind(i64::from(limit))
        .fetch_all(&mut *tx)
        .await?;
        let events = rows
            .iter()
            .map(event_from_row)
            .collect::<Result<Vec<_>>>()?;
        Ok(Box::new(SqliteClaim { tx, events }))
    }

    pub(crate) async fn sqlite_requeue_waiting(&self, tenant: Uuid) -> Result<u64> {
        let mut tx = self.writer().begin_with("BEGIN IMMEDIATE").await?;
        let done = sqlx::query(
            "UPDATE enrichment_queue SET waiting = NULL WHERE tenant_id = ?1 AND waiting IS NOT NULL",
        )
        .bind(tenant.to_string())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(done.rows_affected())
    }

    pub(crate) async fn sqlite_enrichment_backlog(&self) -> Result<u64> {
        let n: i64 =
            sqlx::query_scalar("SELECT count(*) FROM enrichment_queue WHERE waiting IS NULL")
                .fetch_one(self.readers())
                .await?;
        Ok(n as u64)
    }

    pub(crate) async fn sqlite_revenue(
        &self,
        tenant: Uuid,
        q: &RevenueQuery,
    ) -> Result<Vec<RevenueRow>> {
        // Decimal text cannot be summed exactly in SQL here; sum in Rust.
        let rows = sqlx::query(
            "SELECT customer, meter, currency, quantity, revenue, cost FROM ledger
             WHERE tenant_id = ?1 AND (?2 IS NULL OR customer = ?2)
               AND (?3 IS NULL OR event_time >= ?3) AND (?4 IS NULL OR event_time < ?4)",
        )
        .bind(tenant.to_string())
        .bind(&q.customer)
        .bind(q.from.map(|t| t.timestamp_micros()))
        .bind(q.to.map(|t| t.timestamp_micros()))
        .fetch_all(self.readers())
        .await?;
        let mut sums: BTreeMap<(String, String, String), RevenueRow> = BTreeMap::new();
        for r in rows {
            let (customer, meter, currency): (String, String, String) = (
                r.try_get("customer")?,
                r.try_get("meter")?,
                r.try_get("currency")?,
            );
            let row = sums
                .entry((customer.clone(), meter.clone(), currency.clone()))
                .or_insert_with(|| RevenueRow {
                    customer,
                    meter,
                    currency,
                    quantity: Decimal::ZERO,
                    revenue: Decimal::ZERO,
                    cost: Decimal::ZERO,
                    events: 0,
                });
            row.quantity += decimal(r.try_get("quantity")?)?;
            row.revenue += decimal(r.try_get("revenue")?)?;
            row.cost += decimal(r.try_get("cost")?)?;
            row.events += 1;
        }
        Ok(sums.into_values().collect())
    }

    pub(crate) async fn sqlite_ledger_of(
        &self,
        tenant: Uuid,
        events: &[Uuid],
    ) -> Result<Vec<LedgerLine>> {
        let ids = serde_json::to_string(&events.iter().map(Uuid::to_string).collect::<Vec<_>>())
            .map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let rows = sqlx::query(
            "SELECT event_id, subscription_id, meter, rate_plan, catalog_version, quantity, revenue,
                 currency, cost
             FROM ledger
             WHERE tenant_id = ?1 AND event_id IN (SELECT value FROM json_each(?2))
             ORDER BY event_id, meter",
        )
        .bind(tenant.to_string())
        .bind(ids)
        .fetch_all(self.readers())
        .await?;
        rows.iter()
            .map(|r| {
                Ok(LedgerLine {
                    event: uuid(r.try_get("event_id")?)?,
                    subscription: uuid(r.try_get("subscription_id")?)?,
                    meter: r.try_get("meter")?,
                    rate_plan: r.try_get("rate_plan")?,
                    catalog_version: r.try_get("catalog_version")?,
                    quantity: decimal(r.try_get("quantity")?)?,
                    revenue: decimal(r.try_get("revenue")?)?,
                    currency: r.try_get("currency")?,
                    cost: decimal(r.try_get("cost")?)?,
                })
            })
            .collect()
    }
}

#[async_trait]
impl EnrichmentClaim for SqliteClaim {
    fn events(&self) -> &[StoredEvent] {
        &self.events
    }

    async fn complete(mut self: Box<Self>, outcomes: Vec<EnrichmentOutcome>) -> Result<usize> {
        let tx = &mut self.tx;
        let now = Utc::now().timestamp_micros();
        let mut totals: BTreeMap<TotalKey, TotalState> = BTreeMap::new();
        for outcome in &outcomes {
            for intent in &outcome.intents {
                totals.entry(intent.key.clone()).or_default();
            }
        }
        for (key, state) in totals.iter_mut() {
            let row = sqlx::query(
                "SELECT quantity, price, latest_time FROM running_totals
                 WHERE tenant_id = ?1 AND subscription_id = ?2 AND meter = ?3 AND dimension = ?4
                   AND period_start = ?5 AND plan_terms = ?6",
            )
            .bind(key.tenant.to_string())
            .bind(key.subscription.to_string())
            .bind(&key.meter)
            .bind(&key.dimension)
            .bind(key.period_start.timestamp_micros())
            .bind(&key.plan_terms)
            .fetch_optional(&mut **tx)
            .await?;
            if let Some(row) = row {
                *state = TotalState {
                    quantity: decimal(row.try_get("quantity")?)?,
                    price: decimal(row.try_get("price")?)?,
                    latest_time: row
                        .try_get::<Option<i64>, _>("latest_time")?
                        .map(time)
                        .transpose()?,
                };
            }
        }

        let mut written = 0;
        let mut marks: HashMap<EnrichmentState, Vec<String>> = HashMap::new();
        for outcome in &outcomes {
            marks
                .entry(outcome.state)
                .or_default()
                .push(outcome.event.to_string());
            for intent in &outcome.intents {
                let key = &intent.key;
                let unique_is_new = match &intent.input {
                    AggregationInput::UniqueCount(value) => {
                        sqlx::query(
                            "INSERT INTO running_unique_values (tenant_id, subscription_id, meter, dimension,
                                 period_start, plan_terms, value)
                             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT DO NOTHING",
                        )
                        .bind(key.tenant.to_string())
                        .bind(key.subscription.to_string())
                        .bind(&key.meter)
                        .bind(&key.dimension)
                        .bind(key.period_start.timestamp_micros())
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
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)",
                )
                .bind(outcome.event.to_string())
                .bind(&key.meter)
                .bind(key.tenant.to_string())
                .bind(&intent.customer)
                .bind(key.subscription.to_string())
                .bind(&intent.rate_plan)
                .bind(intent.catalog_version)
                .bind(&key.dimension)
                .bind(key.period_start.timestamp_micros())
                .bind(outcome.event_time.timestamp_micros())
                .bind(quantity.to_string())
                .bind(revenue.to_string())
                .bind(&intent.currency)
                .bind(intent.cost.to_string())
                .bind(&intent.cost_currency)
                .bind(now)
                .execute(&mut **tx)
                .await?;
                written += 1;
            }
        }
        for (key, state) in &totals {
            sqlx::query(
                "INSERT INTO running_totals (tenant_id, subscription_id, meter, dimension, period_start,
                     plan_terms, quantity, price, latest_time, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
                 ON CONFLICT (tenant_id, subscription_id, meter, dimension, period_start, plan_terms)
                 DO UPDATE SET quantity = excluded.quantity, price = excluded.price,
                     latest_time = excluded.latest_time, updated_at = excluded.updated_at",
            )
            .bind(key.tenant.to_string())
            .bind(key.subscription.to_string())
            .bind(&key.meter)
            .bind(&key.dimension)
            .bind(key.period_start.timestamp_micros())
            .bind(&key.plan_terms)
            .bind(state.quantity.to_string())
            .bind(state.price.to_string())
            .bind(state.latest_time.map(|t| t.timestamp_micros()))
            .bind(now)
            .execute(&mut **tx)
            .await?;
        }
        // Enriched events leave the queue; the others are parked with the reason.
        for (state, ids) in marks {
            for id in ids {
                let statement = if state == EnrichmentState::Enriched {
                    sqlx::query("DELETE FROM enrichment_queue WHERE event_id = ?1").bind(id)
                } else {
                    sqlx::query("UPDATE enrichment_queue SET waiting = ?2 WHERE event_id = ?1")
                        .bind(id)
                        .bind(state.as_str())
                };
                statement.execute(&mut **tx).await?;
            }
        }
        self.tx.commit().await?;
        Ok(written)
    }
}
