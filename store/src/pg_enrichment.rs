//! PostgreSQL: the enrichment queue, running totals and the ledger.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use sqlx::{Postgres, Row, Transaction};
use uuid::Uuid;

use crate::enrichment::{
    AggregationInput, ENRICH_SHARDS, EnrichmentClaim, EnrichmentOutcome, EnrichmentState,
    LedgerIntent, RevenueQuery, RevenueRow, TotalKey, TotalState, complete,
};
use crate::postgres::{event_from_row, micros};
use crate::{HourRow, LedgerLine};
use crate::{PgStore, Result, StoreError, StoredEvent};

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

/// The advisory-lock key space of enrichment shards.
const QUEUE_LOCK_SPACE: i32 = 0x0af0_0002;

/// The columns of a claimed event, as `event_from_row` reads them.
macro_rules! claimed_columns {
    () => {
        "e.id, e.seq, e.tenant_id, e.event_id, e.source, e.type, e.customer, e.time,
         e.properties::text AS properties, e.tier, e.tier_detail, e.status, e.flags, e.gates,
         e.validation_hash, e.received_at, e.node, NULL::text AS enrichment, e.trace_parent"
    };
}

pub(crate) struct PgClaim {
    tx: Transaction<'static, Postgres>,
    events: Vec<StoredEvent>,
    /// The first `queued` events came from `enrichment_queue`, the rest
    /// from the shard's log.
    queued: usize,
    /// The shard the claim holds.
    shard: i16,
    /// Where the shard's cursor moves once the claim completes: the
    /// (transaction id, event id) of the last event read from the log.
    cursor: Option<(String, Uuid)>,
    known: KnownTotals,
}

/// A shard's cursor as a claim reads it: transaction id and event id (none
/// yet), the horizon, whether the cursor is ahead of the server, and the
/// planner setting's echo.
type ClaimCursor = (Option<String>, Option<Uuid>, String, bool, String);

/// Running totals known to exist (they are never deleted), so a claim
/// creates only the ones it has not seen before.
#[derive(Clone, Default)]
pub(crate) struct KnownTotals(Arc<Mutex<HashSet<TotalKey>>>);

impl KnownTotals {
    /// Past this many keys the set starts over: it is only a shortcut.
    const LIMIT: usize = 1 << 20;

    fn unknown<'a>(&self, keys: &'a [TotalKey]) -> Vec<&'a TotalKey> {
        let known = self.0.lock().unwrap_or_else(|e| e.into_inner());
        keys.iter().filter(|k| !known.contains(*k)).collect()
    }

    fn forget(&self) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }

    fn learn(&self, keys: impl IntoIterator<Item = TotalKey>) {
        let mut known = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if known.len() > Self::LIMIT {
            known.clear();
        }
        known.extend(keys);
    }
}

/// A shard's requeued events (parked ones put back, and those queued
/// before the log), oldest first.
async fn requeued(
    tx: &mut Transaction<'static, Postgres>,
    shard: i16,
    limit: i64,
) -> Result<Vec<StoredEvent>> {
    let rows = sqlx::query(concat!(
        // Queue rows first, then their events by primary key.
        "WITH claimed AS (
             SELECT event_id FROM enrichment_queue
             WHERE shard = $2 AND waiting IS NULL
             ORDER BY event_id LIMIT $1)
         SELECT ",
        claimed_columns!(),
        " FROM claimed c JOIN events e ON e.id = c.event_id
         ORDER BY e.id"
    ))
    .bind(limit)
    .bind(shard)
    .fetch_all(&mut **tx)
    .await?;
    rows.iter().map(event_from_row).collect()
}

/// A shard's events past its cursor and below the horizon, in log order,
/// with where the cursor moves if they are enriched.
async fn past_cursor(
    tx: &mut Transaction<'static, Postgres>,
    shard: i16,
    limit: i64,
) -> Result<(Vec<StoredEvent>, Option<(String, Uuid)>)> {
    // Every transaction older than the snapshot's xmin has ended: no event
    // can still appear below it.
    //
    // The backlog is by definition newer than the table's statistics, so
    // the planner underestimates it and would fetch the shard's whole
    // backlog with a bitmap scan and sort it (a claim of 2000 read 24,000
    // events on the benchmark). Only a walk of the index in order stops at
    // the limit: bitmap scans are off for this transaction.
    //
    // A cursor at a transaction id this server has not reached yet means the
    // database was restored from a logical copy (pg_dump, logical
    // replication): ids start over there, and new events would sort behind
    // the cursor. Stop rather than skip them.
    let read: ClaimCursor = sqlx::query_as(
        "SELECT c.xid::text, c.event_id,
             pg_snapshot_xmin(pg_current_snapshot())::text,
             coalesce(c.xid >= pg_snapshot_xmax(pg_current_snapshot()), false),
             set_config('enable_bitmapscan', 'off', true)
         FROM (SELECT 1) one
         LEFT JOIN enrichment_cursors c ON c.shard = $1",
    )
    .bind(shard)
    .fetch_one(&mut **tx)
    .await?;
    let (at_xid, at_event, horizon, ahead, _) = read;
    if ahead {
        return Err(StoreError::Corrupt(format!(
            "the enrichment cursor of shard {shard} is at transaction {}, which this PostgreSQL \
             server has not reached: the database was restored from a logical copy. \
             Enrichment stops rather than skip events; see docs/enrichment.md, \
             \"After a logical restore\"",
            at_xid.as_deref().unwrap_or("?")
        )));
    }
    let rows = sqlx::query(concat!(
        "SELECT ",
        claimed_columns!(),
        ", e.enrich_xid::text AS log_xid
         FROM events e
         WHERE e.enrich_shard = $1 AND e.enrich_xid IS NOT NULL
           AND (e.enrich_xid, e.id) > ($2::text::xid8, $3)
           AND e.enrich_xid < $4::text::xid8
         ORDER BY e.enrich_xid, e.id
         LIMIT $5"
    ))
    .bind(shard)
    .bind(at_xid.as_deref().unwrap_or("0"))
    .bind(at_event.unwrap_or(Uuid::nil()))
    .bind(&horizon)
    .bind(limit)
    .fetch_all(&mut **tx)
    .await?;
    let last = match rows.last() {
        Some(row) => Some((row.try_get("log_xid")?, row.try_get("id")?)),
        None => None,
    };
    let events = rows.iter().map(event_from_row).collect::<Result<_>>()?;
    Ok((events, last))
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

    /// Claims events of the first shard no other enricher holds: requeued
    /// ones first, then the shard's log past its cursor. The shard's
    /// advisory lock lasts until the claim's transaction ends, so no two
    /// enrichers ever see the same event.
    pub(crate) async fn pg_claim_enrichment(&self, limit: u32) -> Result<Box<dyn EnrichmentClaim>> {
        let mut tx = self.pool().begin().await?;
        let limit = i64::from(limit.max(1));
        let start = rand::random::<u32>() % ENRICH_SHARDS;
        for step in 0..ENRICH_SHARDS {
            let shard = ((start + step) % ENRICH_SHARDS) as i16;
            // Each shard is tried in a savepoint: rolling back to it releases
            // the shard's lock when nothing there could be claimed (its
            // events may only be held back by the horizon), so the claim
            // does not keep other enrichers from it.
            sqlx::raw_sql("SAVEPOINT shard").execute(&mut *tx).await?;
            let mine: bool = sqlx::query_scalar("SELECT pg_try_advisory_xact_lock($1, $2)")
                .bind(QUEUE_LOCK_SPACE)
                .bind(i32::from(shard))
                .fetch_one(&mut *tx)
                .await?;
            if !mine {
                sqlx::raw_sql("RELEASE SAVEPOINT shard")
                    .execute(&mut *tx)
                    .await?;
                continue;
            }
            let mut events = requeued(&mut tx, shard, limit).await?;
            let queued = events.len();
            let mut cursor = None;
            if (queued as i64) < limit {
                let (logged, last) = past_cursor(&mut tx, shard, limit - queued as i64).await?;
                events.extend(logged);
                cursor = last;
            }
            if events.is_empty() {
                sqlx::raw_sql("ROLLBACK TO SAVEPOINT shard; RELEASE SAVEPOINT shard")
                    .execute(&mut *tx)
                    .await?;
                continue;
            }
            sqlx::raw_sql("RELEASE SAVEPOINT shard")
                .execute(&mut *tx)
                .await?;
            return Ok(Box::new(PgClaim {
                tx,
                events,
                queued,
                shard,
                cursor,
                known: self.known_totals.clone(),
            }));
        }
        Ok(Box::new(PgClaim {
            tx,
            events: Vec::new(),
            queued: 0,
            shard: 0,
            cursor: None,
            known: self.known_totals.clone(),
        }))
    }

    /// Ready queue rows plus, per shard, the events past its cursor: index
    /// range counts, as long as the backlog is.
    pub(crate) async fn pg_enrichment_backlog(&self) -> Result<u64> {
        let n: i64 = sqlx::query_scalar(
            "SELECT (SELECT count(*) FROM enrichment_queue WHERE waiting IS NULL)
                  + (SELECT coalesce(sum(l.n), 0)
                     FROM generate_series(0, $1 - 1) AS s(shard)
                     LEFT JOIN enrichment_cursors c ON c.shard = s.shard
                     CROSS JOIN LATERAL (
                         SELECT count(*) AS n FROM events e
                         WHERE e.enrich_shard = s.shard AND e.enrich_xid IS NOT NULL
                           AND (e.enrich_xid, e.id) > (coalesce(c.xid, '0'::xid8),
                               coalesce(c.event_id, '00000000-0000-0000-0000-000000000000'::uuid))
                     ) l)::int8",
        )
        .bind(ENRICH_SHARDS as i32)
        .fetch_one(self.pool())
        .await?;
        Ok(n as u64)
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

    /// A handful of set-based statements per batch, whatever its size:
    /// create the totals not seen before, lock every total (in key order,
    /// so enrichers cannot deadlock), claim UNIQUE_COUNT values, write the
    /// ledger, write the totals back, park what could not be enriched,
    /// move the shard's cursor.
    async fn complete(mut self: Box<Self>, outcomes: Vec<EnrichmentOutcome>) -> Result<usize> {
        crate::enrichment::check_outcomes(&self.events, &outcomes)?;
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
        let unknown = self.known.unknown(&keys);
        if !unknown.is_empty() {
            sqlx::query(
                "INSERT INTO running_totals (tenant_id, subscription_id, meter, dimension, period_start,
                     plan_terms, quantity, price, latest_time, updated_at)
                 SELECT t, s, m, d, p, pt, 0, 0, NULL, $7
                 FROM UNNEST($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::timestamptz[], $6::text[])
                   AS k(t, s, m, d, p, pt)
                 ON CONFLICT DO NOTHING",
            )
            .bind(unknown.iter().map(|k| k.tenant).collect::<Vec<_>>())
            .bind(unknown.iter().map(|k| k.subscription).collect::<Vec<_>>())
            .bind(unknown.iter().map(|k| k.meter.as_str()).collect::<Vec<_>>())
            .bind(unknown.iter().map(|k| k.dimension.as_str()).collect::<Vec<_>>())
            .bind(unknown.iter().map(|k| k.period_start).collect::<Vec<_>>())
            .bind(unknown.iter().map(|k| k.plan_terms.as_str()).collect::<Vec<_>>())
            .bind(now)
            .execute(&mut **tx)
            .await?;
        }
        if !keys.is_empty() {
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
            if rows.len() != keys.len() {
                // Only possible if rows this process saw were removed behind
                // its back (a restore, a manual delete): start over.
                self.known.forget();
                return Err(StoreError::Conflict(format!(
                    "{} running totals believed to exist were not found; the batch stays \
                     queued and is retried",
                    keys.len() - rows.len()
                )));
            }
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

        let (contributions, marks) = complete(&outcomes, &mut totals, &mut new_values);
        let mut ledger = LedgerColumns::default();
        for c in &contributions {
            ledger.push(c.outcome, c.intent, c.quantity, c.revenue);
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
        // Requeued events that were enriched leave the queue, the others
        // stay parked with their reason; events from the log that could not
        // be enriched are parked.
        let queued: HashSet<Uuid> = self.events[..self.queued]
            .iter()
            .map(|e| e.stored_id)
            .collect();
        for (state, ids) in marks {
            let (from_queue, from_log): (Vec<Uuid>, Vec<Uuid>) =
                ids.into_iter().partition(|id| queued.contains(id));
            if state == EnrichmentState::Enriched {
                if !from_queue.is_empty() {
                    sqlx::query("DELETE FROM enrichment_queue WHERE event_id = ANY($1)")
                        .bind(&from_queue)
                        .execute(&mut **tx)
                        .await?;
                }
                continue;
            }
            if !from_queue.is_empty() {
                sqlx::query("UPDATE enrichment_queue SET waiting = $1 WHERE event_id = ANY($2)")
                    .bind(state.as_str())
                    .bind(&from_queue)
                    .execute(&mut **tx)
                    .await?;
            }
            if !from_log.is_empty() {
                sqlx::query(
                    "INSERT INTO enrichment_queue (event_id, tenant_id, shard, waiting)
                     SELECT id, tenant_id, enrich_shard, $1 FROM events WHERE id = ANY($2)",
                )
                .bind(state.as_str())
                .bind(&from_log)
                .execute(&mut **tx)
                .await?;
            }
        }
        if let Some((xid, event)) = &self.cursor {
            sqlx::query(
                "INSERT INTO enrichment_cursors (shard, xid, event_id) VALUES ($1, $2::text::xid8, $3)
                 ON CONFLICT (shard) DO UPDATE SET xid = excluded.xid, event_id = excluded.event_id",
            )
            .bind(self.shard)
            .bind(xid)
            .bind(event)
            .execute(&mut **tx)
            .await?;
        }
        self.tx.commit().await?;
        self.known.learn(keys);
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
