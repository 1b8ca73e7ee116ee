//! SQLite: the enrichment queue, running totals and the ledger. Decimals
//! are stored as their exact text. The claim holds the single writer, so
//! enrichment and ingest commits take turns (standalone runs one enricher).

use std::collections::{BTreeMap, HashSet};
use std::str::FromStr;

use async_trait::async_trait;
use chrono::Utc;
use rust_decimal::Decimal;
use serde_json::{Value, json};
use sqlx::{Row, Sqlite, Transaction};
use uuid::Uuid;

use crate::enrichment::{
    AggregationInput, EnrichmentClaim, EnrichmentOutcome, EnrichmentState, RevenueQuery,
    RevenueRow, TotalKey, TotalState, complete,
};
use crate::sqlite::{event_from_row, time, uuid};
use crate::{HourRow, LedgerLine};
use crate::{Result, SqliteStore, StoreError, StoredEvent};

pub(crate) struct SqliteClaim {
    tx: Transaction<'static, Sqlite>,
    events: Vec<StoredEvent>,
    /// The first `queued` events came from `enrichment_queue`, the rest
    /// from the log.
    queued: usize,
    /// Where the cursor moves once the claim completes: the seq of the last
    /// event read from the log.
    cursor: Option<i64>,
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

    /// Requeued events first, then the events past the cursor. The claim
    /// holds the one writer (`BEGIN IMMEDIATE`) until it completes, so no
    /// other enricher sees its events and no event is stored meanwhile.
    pub(crate) async fn sqlite_claim_enrichment(
        &self,
        limit: u32,
    ) -> Result<Box<dyn EnrichmentClaim>> {
        let mut tx = self.writer().begin_with("BEGIN IMMEDIATE").await?;
        let limit = i64::from(limit.max(1));
        let rows = sqlx::query(
            "SELECT e.id, e.seq, e.tenant_id, e.event_id, e.source, e.type, e.customer, e.time,
                 e.properties, e.tier, e.tier_detail, e.status, e.flags, e.gates,
                 e.validation_hash, e.received_at, e.node, NULL AS enrichment, e.trace_parent
             FROM enrichment_queue q JOIN events e ON e.id = q.event_id
             WHERE q.waiting IS NULL
             ORDER BY q.position LIMIT ?1",
        )
        .bind(limit)
        .fetch_all(&mut *tx)
        .await?;
        let mut events = rows
            .iter()
            .map(event_from_row)
            .collect::<Result<Vec<_>>>()?;
        let queued = events.len();
        let mut cursor = None;
        if (queued as i64) < limit {
            let rows = sqlx::query(
                "SELECT e.id, e.seq, e.tenant_id, e.event_id, e.source, e.type, e.customer, e.time,
                     e.properties, e.tier, e.tier_detail, e.status, e.flags, e.gates,
                     e.validation_hash, e.received_at, e.node, NULL AS enrichment, e.trace_parent
                 FROM events e
                 WHERE e.seq > (SELECT seq FROM enrichment_cursor WHERE id = 1)
                 ORDER BY e.seq LIMIT ?1",
            )
            .bind(limit - queued as i64)
            .fetch_all(&mut *tx)
            .await?;
            for row in &rows {
                let event = event_from_row(row)?;
                cursor = Some(event.seq);
                events.push(event);
            }
        }
        Ok(Box::new(SqliteClaim {
            tx,
            events,
            queued,
            cursor,
        }))
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
        let n: i64 = sqlx::query_scalar(
            "SELECT (SELECT count(*) FROM enrichment_queue WHERE waiting IS NULL)
                  + (SELECT count(*) FROM events
                     WHERE seq > (SELECT seq FROM enrichment_cursor WHERE id = 1))",
        )
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

    /// A fixed handful of statements per batch, each over a JSON array of
    /// rows (`json_each`): through sqlx a SQLite statement is a round trip
    /// to the connection's thread, and one per event cost ~115 µs of CPU
    /// per event. Read the totals, claim UNIQUE_COUNT values, write the
    /// ledger, write the totals, park what could not be enriched, move the
    /// cursor.
    async fn complete(mut self: Box<Self>, outcomes: Vec<EnrichmentOutcome>) -> Result<usize> {
        crate::enrichment::check_outcomes(&self.events, &outcomes)?;
        let tx = &mut self.tx;
        let now = Utc::now().timestamp_micros();
        let key_json = |key: &TotalKey| {
            json!([
                key.tenant.to_string(),
                key.subscription.to_string(),
                key.meter,
                key.dimension,
                key.period_start.timestamp_micros(),
                key.plan_terms
            ])
        };
        let mut totals: BTreeMap<TotalKey, TotalState> = BTreeMap::new();
        for outcome in &outcomes {
            for intent in &outcome.intents {
                totals.entry(intent.key.clone()).or_default();
            }
        }
        if !totals.is_empty() {
            let keys = Value::Array(totals.keys().map(key_json).collect());
            let rows = sqlx::query(
                "SELECT r.tenant_id, r.subscription_id, r.meter, r.dimension, r.period_start,
                     r.plan_terms, r.quantity, r.price, r.latest_time
                 FROM json_each(?1) k JOIN running_totals r
                   ON r.tenant_id = k.value ->> 0 AND r.subscription_id = k.value ->> 1
                  AND r.meter = k.value ->> 2 AND r.dimension = k.value ->> 3
                  AND r.period_start = k.value ->> 4 AND r.plan_terms = k.value ->> 5",
            )
            .bind(keys.to_string())
            .fetch_all(&mut **tx)
            .await?;
            for row in &rows {
                let tenant = uuid(row.try_get("tenant_id")?)?;
                let (key, state) = total_from_row(tenant, row)?;
                totals.insert(key, state);
            }
        }

        // UNIQUE_COUNT values this batch counts for the first time: the
        // insert returns only the rows it added, a value repeated within the
        // batch once.
        let uniques: Vec<Value> = outcomes
            .iter()
            .flat_map(|o| o.intents.iter())
            .filter_map(|i| match &i.input {
                AggregationInput::UniqueCount(v) => {
                    let mut row = key_json(&i.key);
                    if let Value::Array(items) = &mut row {
                        items.push(Value::String(v.clone()));
                    }
                    Some(row)
                }
                _ => None,
            })
            .collect();
        let mut new_values: HashSet<(TotalKey, String)> = HashSet::new();
        if !uniques.is_empty() {
            let rows = sqlx::query(
                "INSERT INTO running_unique_values (tenant_id, subscription_id, meter, dimension,
                     period_start, plan_terms, value)
                 SELECT u.value ->> 0, u.value ->> 1, u.value ->> 2, u.value ->> 3,
                     u.value ->> 4, u.value ->> 5, u.value ->> 6
                 FROM json_each(?1) u WHERE true
                 ON CONFLICT DO NOTHING
                 RETURNING tenant_id, subscription_id, meter, dimension, period_start, plan_terms,
                     value",
            )
            .bind(Value::Array(uniques).to_string())
            .fetch_all(&mut **tx)
            .await?;
            for row in &rows {
                new_values.insert((
                    TotalKey {
                        tenant: uuid(row.try_get("tenant_id")?)?,
                        subscription: uuid(row.try_get("subscription_id")?)?,
                        meter: row.try_get("meter")?,
                        dimension: row.try_get("dimension")?,
                        period_start: time(row.try_get("period_start")?)?,
                        plan_terms: row.try_get("plan_terms")?,
                    },
                    row.try_get("value")?,
                ));
            }
        }

        let (contributions, marks) = complete(&outcomes, &mut totals, &mut new_values);
        let ledger: Vec<Value> = contributions
            .iter()
            .map(|c| {
                let (outcome, intent, key) = (c.outcome, c.intent, &c.intent.key);
                json!([
                    outcome.event.to_string(),
                    key.meter,
                    key.tenant.to_string(),
                    intent.customer,
                    key.subscription.to_string(),
                    intent.rate_plan,
                    intent.catalog_version,
                    key.dimension,
                    key.period_start.timestamp_micros(),
                    outcome.event_time.timestamp_micros(),
                    c.quantity.to_string(),
                    c.revenue.to_string(),
                    intent.currency,
                    intent.cost.to_string(),
                    intent.cost_currency
                ])
            })
            .collect();
        let written = ledger.len();
        if written > 0 {
            sqlx::query(
                "INSERT INTO ledger (event_id, meter, tenant_id, customer, subscription_id, rate_plan,
                     catalog_version, dimension, period_start, event_time, quantity, revenue, currency,
                     cost, cost_currency, enriched_at)
                 SELECT l.value ->> 0, l.value ->> 1, l.value ->> 2, l.value ->> 3, l.value ->> 4,
                     l.value ->> 5, l.value ->> 6, l.value ->> 7, l.value ->> 8, l.value ->> 9,
                     l.value ->> 10, l.value ->> 11, l.value ->> 12, l.value ->> 13,
                     l.value ->> 14, ?2
                 FROM json_each(?1) l",
            )
            .bind(Value::Array(ledger).to_string())
            .bind(now)
            .execute(&mut **tx)
            .await?;
        }
        if !totals.is_empty() {
            let rows: Vec<Value> = totals
                .iter()
                .map(|(key, state)| {
                    let mut row = key_json(key);
                    if let Value::Array(items) = &mut row {
                        items.push(Value::String(state.quantity.to_string()));
                        items.push(Value::String(state.price.to_string()));
                        items.push(json!(state.latest_time.map(|t| t.timestamp_micros())));
                    }
                    row
                })
                .collect();
            sqlx::query(
                "INSERT INTO running_totals (tenant_id, subscription_id, meter, dimension, period_start,
                     plan_terms, quantity, price, latest_time, updated_at)
                 SELECT t.value ->> 0, t.value ->> 1, t.value ->> 2, t.value ->> 3, t.value ->> 4,
                     t.value ->> 5, t.value ->> 6, t.value ->> 7, t.value ->> 8, ?2
                 FROM json_each(?1) t WHERE true
                 ON CONFLICT (tenant_id, subscription_id, meter, dimension, period_start, plan_terms)
                 DO UPDATE SET quantity = excluded.quantity, price = excluded.price,
                     latest_time = excluded.latest_time, updated_at = excluded.updated_at",
            )
            .bind(Value::Array(rows).to_string())
            .bind(now)
            .execute(&mut **tx)
            .await?;
        }
        // Requeued events that were enriched leave the queue, the others
        // stay parked with their reason; events from the log that could not
        // be enriched are parked.
        let queued: HashSet<String> = self.events[..self.queued]
            .iter()
            .map(|e| e.stored_id.to_string())
            .collect();
        for (state, ids) in marks {
            let (from_queue, from_log): (Vec<String>, Vec<String>) = ids
                .into_iter()
                .map(|id| id.to_string())
                .partition(|id| queued.contains(id));
            if state == EnrichmentState::Enriched {
                if !from_queue.is_empty() {
                    sqlx::query(
                        "DELETE FROM enrichment_queue
                         WHERE event_id IN (SELECT value FROM json_each(?1))",
                    )
                    .bind(json!(from_queue).to_string())
                    .execute(&mut **tx)
                    .await?;
                }
                continue;
            }
            if !from_queue.is_empty() {
                sqlx::query(
                    "UPDATE enrichment_queue SET waiting = ?2
                     WHERE event_id IN (SELECT value FROM json_each(?1))",
                )
                .bind(json!(from_queue).to_string())
                .bind(state.as_str())
                .execute(&mut **tx)
                .await?;
            }
            if !from_log.is_empty() {
                sqlx::query(
                    "INSERT INTO enrichment_queue (event_id, tenant_id, waiting)
                     SELECT e.id, e.tenant_id, ?2 FROM json_each(?1) j JOIN events e ON e.id = j.value
                     ORDER BY j.key",
                )
                .bind(json!(from_log).to_string())
                .bind(state.as_str())
                .execute(&mut **tx)
                .await?;
            }
        }
        if let Some(seq) = self.cursor {
            sqlx::query("UPDATE enrichment_cursor SET seq = ?1 WHERE id = 1")
                .bind(seq)
                .execute(&mut **tx)
                .await?;
        }
        self.tx.commit().await?;
        Ok(written)
    }
}
