//! PostgreSQL: the enrichment queue, running totals and the ledger.

use std::collections::{BTreeMap, HashMap, HashSet};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use sqlx::{Postgres, Row, Transaction};
use uuid::Uuid;

use crate::enrichment::{
    AggregationInput, EnrichmentClaim, EnrichmentOutcome, EnrichmentState, LedgerIntent,
    RevenueQuery, RevenueRow, TotalKey, TotalState, fold,
};
use crate::postgres::{event_from_row, micros};
use crate::{HourRow, LedgerLine};
use crate::{PgStore, Result, StoredEvent};

/// A running total as read back: `subscription_id`, `meter`, `dimension`,
/// `period_start`, `plan_terms`, `quantity`, `price`, `latest_time`.
pub(crate) fn total_from_row(
    tenant: Uuid,
    r: &sqlx::postgres::PgRow,
) -> Result<(TotalKey, TotalState)> {
    Ok((
        TotalKey {
            tenant,
            subscription: r.try_get("subscription_id")?,
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
}

/// Shards of the enrichment queue (see migration 0003).
const QUEUE_SHARDS: u32 = 16;
/// The advisory-lock key space of queue shards.
const QUEUE_LOCK_SPACE: i32 = 0x0af0_0002;

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
            "SELECT subscription_id, meter, dimension, period_start, plan_terms, quantity, price,
                 latest_time
             FROM running_totals WHERE tenant_id = $1 AND subscription_id = $2
             ORDER BY period_start, meter, dimension",
        )
        .bind(tenant)
        .bind(subscription)
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(|r| total_from_row(tenant, r)).collect()
    }

    /// Claims the oldest ready events of the first shard no other enricher
    /// holds. The shard's advisory lock lasts until the claim's transaction
    /// ends, so no two enrichers ever see the same event.
    pub(crate) async fn pg_claim_enrichment(&self, limit: u32) -> Result<Box<dyn EnrichmentClaim>> {
        let mut tx = self.pool().begin().await?;
        let start = rand::random::<u32>() % QUEUE_SHARDS;
        for step in 0..QUEUE_SHARDS {
            let shard = ((start + step) % QUEUE_SHARDS) as i16;
            let mine: bool = sqlx::query_scalar("SELECT pg_try_advisory_xact_lock($1, $2)")
                .bind(QUEUE_LOCK_SPACE)
                .bind(i32::from(shard))
                .fetch_one(&mut *tx)
                .await?;
            if !mine {
                continue;
            }
            let rows = sqlx::query(
                // Queue rows first, then their events by primary key.
                "WITH claimed AS (
                     SELECT event_id FROM enrichment_queue
                     WHERE shard = $2 AND waiting IS NULL
                     ORDER BY event_id LIMIT $1)
                 SELECT e.id, e.seq, e.tenant_id, e.event_id, e.source, e.type, e.customer, e.time,
                     e.properties::text AS properties, e.tier, e.tier_detail, e.status, e.flags, e.gates,
                     e.validation_hash, e.received_at, e.node, NULL::text AS enrichment
                 FROM claimed c JOIN events e ON e.id = c.event_id
                 ORDER BY e.id",
            )
            .bind(i64::from(limit))
            .bind(shard)
            .fetch_all(&mut *tx)
            .await?;
            if !rows.is_empty() {
                let events = rows
                    .iter()
                    .map(event_from_row)
                    .collect::<Result<Vec<_>>>()?;
                return Ok(Box::new(PgClaim { tx, events }));
            }
        }
        Ok(Box::new(PgClaim {
            tx,
            events: Vec::new(),
        }))
    }

    pub(crate) async fn pg_requeue_waiting(&self, tenant: Uuid) -> Result<u64> {
        let done = sqlx::query(
            "UPDATE enrichment_queue SET waiting = NULL WHERE tenant_id = $1 AND waiting IS NOT NULL",
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

    pub(crate) async fn pg_ledger_of(
        &self,
        tenant: Uuid,
        events: &[Uuid],
    ) -> Result<Vec<LedgerLine>> {
        let rows = sqlx::query(
            "SELECT event_id, subscription_id, meter, rate_plan, catalog_version, quantity, revenue,
                 currency, cost
             FROM ledger WHERE tenant_id = $1 AND event_id = ANY($2) ORDER BY event_id, meter",
        )
        .bind(tenant)
        .bind(events)
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| {
                Ok(LedgerLine {
                    event: r.try_get("event_id")?,
                    subscription: r.try_get("subscription_id")?,
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

    /// Six set-based statements per batch, whatever its size: create the
    /// missing totals, lock every total (in key order, so enrichers cannot
    /// deadlock), claim UNIQUE_COUNT values, write the ledger, write the
    /// totals back, mark the events.
    async fn complete(mut self: Box<Self>, outcomes: Vec<EnrichmentOutcome>) -> Result<usize> {
        let tx = &mut self.tx;
        let now = micros(Utc::now());
        let mut totals: BTreeMap<TotalKey, TotalState> = BTreeMap::new();
        for outcome in &outcomes {
            for intent in &outcome.intents {
                totals.entry(intent.key.clone()).or_default();
            }
        }
        let keys: Vec<TotalKey> = totals.keys().cloned().collect();
        let tenants: Vec<Uuid> = keys.iter().map(|k| k.tenant).collect();
        let subs: Vec<Uuid> = keys.iter().map(|k| k.subscription).collect();
        let meters: Vec<&str> = keys.iter().map(|k| k.meter.as_str()).collect();
        let dims: Vec<&str> = keys.iter().map(|k| k.dimension.as_str()).collect();
        let periods: Vec<DateTime<Utc>> = keys.iter().map(|k| k.period_start).collect();
        let terms: Vec<&str> = keys.iter().map(|k| k.plan_terms.as_str()).collect();
        if !keys.is_empty() {
            sqlx::query(
                "INSERT INTO running_totals (tenant_id, subscription_id, meter, dimension, period_start,
                     plan_terms, quantity, price, latest_time, updated_at)
                 SELECT t, s, m, d, p, pt, 0, 0, NULL, $7
                 FROM UNNEST($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::timestamptz[], $6::text[])
                   AS k(t, s, m, d, p, pt)
                 ON CONFLICT DO NOTHING",
            )
            .bind(&tenants)
            .bind(&subs)
            .bind(&meters)
            .bind(&dims)
            .bind(&periods)
            .bind(&terms)
            .bind(now)
            .execute(&mut **tx)
            .await?;
            let rows = sqlx::query(
                "SELECT r.tenant_id, r.subscription_id, r.meter, r.dimension, r.period_start, r.plan_terms,
                     r.quantity, r.price, r.latest_time
                 FROM running_totals r
                 JOIN UNNEST($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::timestamptz[], $6::text[])
                   AS k(t, s, m, d, p, pt)
                   ON r.tenant_id = k.t AND r.subscription_id = k.s AND r.meter = k.m
                  AND r.dimension = k.d AND r.period_start = k.p AND r.plan_terms = k.pt
                 ORDER BY r.tenant_id, r.subscription_id, r.meter, r.dimension, r.period_start, r.plan_terms
                 FOR UPDATE OF r",
            )
            .bind(&tenants)
            .bind(&subs)
            .bind(&meters)
            .bind(&dims)
            .bind(&periods)
            .bind(&terms)
            .fetch_all(&mut **tx)
            .await?;
            for row in rows {
                let key = TotalKey {
                    tenant: row.try_get("tenant_id")?,
                    subscription: row.try_get("subscription_id")?,
                    meter: row.try_get("meter")?,
                    dimension: row.try_get("dimension")?,
                    period_start: row.try_get("period_start")?,
                    plan_terms: row.try_get("plan_terms")?,
                };
                totals.insert(
                    key,
                    TotalState {
                        quantity: row.try_get("quantity")?,
                        price: row.try_get("price")?,
                        latest_time: row.try_get("latest_time")?,
                    },
                );
            }
        }

        // UNIQUE_COUNT values this batch counts for the first time.
        let uniques: Vec<(&TotalKey, &str)> = outcomes
            .iter()
            .flat_map(|o| o.intents.iter())
            .filter_map(|i| match &i.input {
                AggregationInput::UniqueCount(v) => Some((&i.key, v.as_str())),
                _ => None,
            })
            .collect();
        let mut new_values: HashSet<(TotalKey, String)> = HashSet::new();
        if !uniques.is_empty() {
            let rows = sqlx::query(
                "INSERT INTO running_unique_values (tenant_id, subscription_id, meter, dimension,
                     period_start, plan_terms, value)
                 SELECT * FROM UNNEST($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::timestamptz[],
                     $6::text[], $7::text[])
                 ON CONFLICT DO NOTHING
                 RETURNING tenant_id, subscription_id, meter, dimension, period_start, plan_terms, value",
            )
            .bind(uniques.iter().map(|(k, _)| k.tenant).collect::<Vec<_>>())
            .bind(uniques.iter().map(|(k, _)| k.subscription).collect::<Vec<_>>())
            .bind(uniques.iter().map(|(k, _)| k.meter.as_str()).collect::<Vec<_>>())
            .bind(uniques.iter().map(|(k, _)| k.dimension.as_str()).collect::<Vec<_>>())
            .bind(uniques.iter().map(|(k, _)| k.period_start).collect::<Vec<_>>())
            .bind(uniques.iter().map(|(k, _)| k.plan_terms.as_str()).collect::<Vec<_>>())
            .bind(uniques.iter().map(|(_, v)| *v).collect::<Vec<_>>())
            .fetch_all(&mut **tx)
            .await?;
            for row in rows {
                new_values.insert((
                    TotalKey {
                        tenant: row.try_get("tenant_id")?,
                        subscription: row.try_get("subscription_id")?,
                        meter: row.try_get("meter")?,
                        dimension: row.try_get("dimension")?,
                        period_start: row.try_get("period_start")?,
                        plan_terms: row.try_get("plan_terms")?,
                    },
                    row.try_get("value")?,
                ));
            }
        }

        let mut ledger = LedgerColumns::default();
        let mut marks: HashMap<EnrichmentState, Vec<Uuid>> = HashMap::new();
        for outcome in &outcomes {
            marks.entry(outcome.state).or_default().push(outcome.event);
            for intent in &outcome.intents {
                let unique_is_new = match &intent.input {
                    // Counted once: the first time in this batch it was new.
                    AggregationInput::UniqueCount(v) => {
                        new_values.remove(&(intent.key.clone(), v.clone()))
                    }
                    _ => false,
                };
                let state = totals.entry(intent.key.clone()).or_default();
                let (quantity, revenue) = fold(state, intent, outcome.event_time, unique_is_new);
                ledger.push(outcome, intent, quantity, revenue);
            }
        }
        let written = ledger.event_ids.len();
        if written > 0 {
            sqlx::query(
                "INSERT INTO ledger (event_id, meter, tenant_id, customer, subscription_id, rate_plan,
                     catalog_version, dimension, period_start, event_time, quantity, revenue, currency,
                     cost, cost_currency, enriched_at)
                 SELECT e, m, t, c, s, rp, cv, d, p, et, q, r, cur, co, cc, $16
                 FROM UNNEST($1::uuid[], $2::text[], $3::uuid[], $4::text[], $5::uuid[], $6::text[],
                     $7::int8[], $8::text[], $9::timestamptz[], $10::timestamptz[], $11::numeric[],
                     $12::numeric[], $13::text[], $14::numeric[], $15::text[])
                   AS l(e, m, t, c, s, rp, cv, d, p, et, q, r, cur, co, cc)",
            )
            .bind(&ledger.event_ids)
            .bind(&ledger.meters)
            .bind(&ledger.tenants)
            .bind(&ledger.customers)
            .bind(&ledger.subscriptions)
            .bind(&ledger.rate_plans)
            .bind(&ledger.catalog_versions)
            .bind(&ledger.dimensions)
            .bind(&ledger.periods)
            .bind(&ledger.event_times)
            .bind(&ledger.quantities)
            .bind(&ledger.revenues)
            .bind(&ledger.currencies)
            .bind(&ledger.costs)
            .bind(&ledger.cost_currencies)
            .bind(now)
            .execute(&mut **tx)
            .await?;
        }
        if !keys.is_empty() {
            let states: Vec<&TotalState> = totals.values().collect();
            sqlx::query(
                "UPDATE running_totals r
                 SET quantity = u.q, price = u.pr, latest_time = u.lt, updated_at = $10
                 FROM UNNEST($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::timestamptz[], $6::text[],
                     $7::numeric[], $8::numeric[], $9::timestamptz[]) AS u(t, s, m, d, p, pt, q, pr, lt)
                 WHERE r.tenant_id = u.t AND r.subscription_id = u.s AND r.meter = u.m
                   AND r.dimension = u.d AND r.period_start = u.p AND r.plan_terms = u.pt",
            )
            .bind(totals.keys().map(|k| k.tenant).collect::<Vec<_>>())
            .bind(totals.keys().map(|k| k.subscription).collect::<Vec<_>>())
            .bind(totals.keys().map(|k| k.meter.as_str()).collect::<Vec<_>>())
            .bind(totals.keys().map(|k| k.dimension.as_str()).collect::<Vec<_>>())
            .bind(totals.keys().map(|k| k.period_start).collect::<Vec<_>>())
            .bind(totals.keys().map(|k| k.plan_terms.as_str()).collect::<Vec<_>>())
            .bind(states.iter().map(|s| s.quantity).collect::<Vec<_>>())
            .bind(states.iter().map(|s| s.price).collect::<Vec<_>>())
            .bind(states.iter().map(|s| s.latest_time).collect::<Vec<_>>())
            .bind(now)
            .execute(&mut **tx)
            .await?;
        }
        // Enriched events leave the queue; the others are parked with the reason.
        for (state, ids) in marks {
            if state == EnrichmentState::Enriched {
                sqlx::query("DELETE FROM enrichment_queue WHERE event_id = ANY($1)")
                    .bind(&ids)
                    .execute(&mut **tx)
                    .await?;
            } else {
                sqlx::query("UPDATE enrichment_queue SET waiting = $1 WHERE event_id = ANY($2)")
                    .bind(state.as_str())
                    .bind(&ids)
                    .execute(&mut **tx)
                    .await?;
            }
        }
        self.tx.commit().await?;
        Ok(written)
    }
}

/// The ledger rows of a batch, as columns for one UNNEST insert.
#[derive(Default)]
struct LedgerColumns {
    event_ids: Vec<Uuid>,
    meters: Vec<String>,
    tenants: Vec<Uuid>,
    customers: Vec<String>,
    subscriptions: Vec<Uuid>,
    rate_plans: Vec<String>,
    catalog_versions: Vec<i64>,
    dimensions: Vec<String>,
    periods: Vec<DateTime<Utc>>,
    event_times: Vec<DateTime<Utc>>,
    quantities: Vec<Decimal>,
    revenues: Vec<Decimal>,
    currencies: Vec<String>,
    costs: Vec<Decimal>,
    cost_currencies: Vec<Option<String>>,
}

impl LedgerColumns {
    fn push(
        &mut self,
        outcome: &EnrichmentOutcome,
        intent: &LedgerIntent,
        quantity: Decimal,
        revenue: Decimal,
    ) {
        let key = &intent.key;
        self.event_ids.push(outcome.event);
        self.meters.push(key.meter.clone());
        self.tenants.push(key.tenant);
        self.customers.push(intent.customer.clone());
        self.subscriptions.push(key.subscription);
        self.rate_plans.push(intent.rate_plan.clone());
        self.catalog_versions.push(intent.catalog_version);
        self.dimensions.push(key.dimension.clone());
        self.periods.push(key.period_start);
        self.event_times.push(outcome.event_time);
        self.quantities.push(quantity);
        self.revenues.push(revenue);
        self.currencies.push(intent.currency.clone());
        self.costs.push(intent.cost);
        self.cost_currencies.push(intent.cost_currency.clone());
    }
}
