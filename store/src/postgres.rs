//! The PostgreSQL store: production.
//!
//! A commit is three set-based statements in one transaction, whatever the
//! batch size: one `INSERT … SELECT FROM UNNEST(…) ON CONFLICT DO NOTHING
//! RETURNING id` claims and writes every event, one `SELECT` finds the
//! originals of the duplicates, one `INSERT` writes the rejections. Each
//! event row carries its enrichment shard and the id of the transaction that
//! stored it: that is how the enricher finds it (see migration 0007), with
//! no queue row to write.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgRow};
use sqlx::{ConnectOptions, Row};
use uuid::Uuid;

use crate::changes::{Change, Changes};
use crate::enrichment::enrich_shard;
use crate::error::is_transient;
use crate::migrate::{PG_LOCK_KEY, POSTGRES};
use crate::model::{EventRow, RejectionRow, clamp_limit, insertion_order};
use crate::prelude::*;
use crate::{
    AppliedCatalog, CatalogVersion, CommitBatch, CommitOutcome, Customer, CustomerInput,
    EventQuery, NewCatalogVersion, NewEvent, Page, RejectionQuery, Result, Store, StoreError,
    StoredEvent, StoredRejection, Subscription, SubscriptionInput, Tenant,
};

/// How often a commit that lost a deadlock or serialization race is retried
/// before the error goes back to the caller.
const COMMIT_ATTEMPTS: u32 = 5;

pub struct PgStore {
    pool: PgPool,
    pub(crate) known_totals: crate::pg_enrichment::KnownTotals,
    changes: Changes,
    /// The task that hears other processes' changes; it ends with the store.
    _listening: AbortOnDrop,
}

/// Aborts its task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Hears the changes other processes make (their `NOTIFY`s on
/// [`crate::changes::CHANNEL`]) and tells `changes`' listeners. After any
/// break in listening, whatever happened meanwhile is unknown: it says
/// [`Change::Unknown`] once it listens again.
async fn hear_changes(pool: PgPool, changes: Changes) {
    use backon::BackoffBuilder;
    use sqlx::postgres::PgListener;
    let retries = || {
        backon::ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(100))
            .with_max_delay(Duration::from_secs(5))
            .with_jitter()
            .without_max_times()
            .build()
    };
    let mut backoff = retries();
    loop {
        let listening = async {
            let mut listener = PgListener::connect_with(&pool).await?;
            listener.listen(crate::changes::CHANNEL).await?;
            Ok::<_, sqlx::Error>(listener)
        };
        let mut listener = match listening.await {
            Ok(listener) => listener,
            Err(sqlx::Error::PoolClosed) => return,
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for other processes' changes; retrying");
                let wait = backoff.next().unwrap_or(Duration::from_secs(5));
                tokio::time::sleep(wait).await;
                continue;
            }
        };
        backoff = retries();
        changes.publish(Change::Unknown).await;
        loop {
            match listener.try_recv().await {
                Ok(Some(notice)) => changes.received(notice.payload()).await,
                // Reconnected: what was sent in between is lost.
                Ok(None) => changes.publish(Change::Unknown).await,
                Err(sqlx::Error::PoolClosed) => return,
                Err(e) => {
                    tracing::warn!(error = %e, "stopped hearing other processes' changes; listening again");
                    break;
                }
            }
        }
    }
}

/// Sends `change` to the other processes when `tx` commits (and never if
/// it does not).
pub(crate) async fn notify(
    tx: &mut sqlx::PgConnection,
    changes: &Changes,
    change: &Change,
) -> Result<()> {
    sqlx::query("SELECT pg_notify($1, $2)")
        .bind(crate::changes::CHANNEL)
        .bind(changes.notice(change))
        .execute(tx)
        .await?;
    Ok(())
}

impl PgStore {
    /// Connects and runs pending migrations.
    pub async fn connect(url: &str) -> Result<Self> {
        let options: PgConnectOptions = url.parse()?;
        let options = options.log_statements(tracing::log::LevelFilter::Trace);
        let pool = PgPoolOptions::new()
            .max_connections(32)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options)
            .await?;
        let changes = Changes::default();
        let listening = AbortOnDrop(tokio::spawn(hear_changes(pool.clone(), changes.clone())));
        let store = PgStore {
            pool,
            known_totals: Default::default(),
            changes,
            _listening: listening,
        };
        store.migrate().await?;
        Ok(store)
    }

    /// The pool, for tests and benchmarks that look beneath the interface.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    async fn migrate(&self) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(PG_LOCK_KEY)
            .execute(&mut *tx)
            .await?;
        sqlx::raw_sql(
            "CREATE TABLE IF NOT EXISTS aforo_migrations (
                version BIGINT PRIMARY KEY,
                name TEXT NOT NULL,
                applied_at TIMESTAMPTZ NOT NULL DEFAULT now())",
        )
        .execute(&mut *tx)
        .await?;
        let applied: HashSet<i64> = sqlx::query_scalar("SELECT version FROM aforo_migrations")
            .fetch_all(&mut *tx)
            .await?
            .into_iter()
            .collect();
        for migration in POSTGRES.iter().filter(|m| !applied.contains(&m.version)) {
            let failed = |source| StoreError::Migration {
                version: migration.version,
                name: migration.name,
                source,
            };
            sqlx::raw_sql(migration.sql)
                .execute(&mut *tx)
                .await
                .map_err(failed)?;
            sqlx::query("INSERT INTO aforo_migrations (version, name) VALUES ($1, $2)")
                .bind(migration.version)
                .bind(migration.name)
                .execute(&mut *tx)
                .await
                .map_err(failed)?;
            tracing::info!(
                version = migration.version,
                name = migration.name,
                "applied migration"
            );
        }
        tx.commit().await?;
        Ok(())
    }

    async fn try_commit(&self, batch: &CommitBatch) -> Result<Vec<CommitOutcome>> {
        let events = &batch.events;
        let order = insertion_order(events);
        let n = events.len();
        // Column arrays for UNNEST, borrowing from the batch.
        let column = |f: &dyn Fn(&NewEvent) -> &str| -> Vec<&str> {
            order.iter().map(|&i| f(&events[i])).collect()
        };
        let ids: Vec<Uuid> = order.iter().map(|&i| events[i].stored_id).collect();
        let tenants: Vec<Uuid> = order.iter().map(|&i| events[i].tenant).collect();
        let keys = column(&|e| &e.dedup_key);
        let event_ids = column(&|e| &e.event.id);
        let sources = column(&|e| &e.event.source);
        let types = column(&|e| &e.event.event_type);
        let customers = column(&|e| &e.event.customer);
        let times: Vec<DateTime<Utc>> = order.iter().map(|&i| events[i].event.time).collect();
        let properties = column(&|e| &e.properties_json);
        let tiers = column(&|e| e.event.tier.as_str());
        let details = column(&|e| &e.event.tier_detail);
        let flags: Vec<i16> = order
            .iter()
            .map(|&i| i16::from(events[i].flags.bits()))
            .collect();
        let gates: Vec<String> = order.iter().map(|&i| events[i].gates.to_json()).collect();
        let hashes = column(&|e| &e.validation_hash);
        let received: Vec<DateTime<Utc>> = order.iter().map(|&i| events[i].received_at).collect();
        let nodes = column(&|e| &e.node);
        let shards: Vec<i16> = order
            .iter()
            .map(|&i| enrich_shard(events[i].tenant, &events[i].event.customer))
            .collect();
        let trace_parents: Vec<Option<&str>> = order
            .iter()
            .map(|&i| events[i].trace_parent.as_deref())
            .collect();

        let mut tx = self.pool.begin().await?;
        let inserted: HashSet<Uuid> = if n == 0 {
            HashSet::new()
        } else {
            sqlx::query_scalar(
                "WITH inserted AS (
                 INSERT INTO events (id, tenant_id, dedup_key, event_id, source, type, customer,
                     time, properties, tier, tier_detail, status, flags, gates, validation_hash,
                     received_at, node, enrich_shard, enrich_xid, trace_parent)
                 SELECT id, tenant_id, dedup_key, event_id, source, type, customer, time,
                     properties::json, tier, tier_detail, 'ACCEPTED', flags, gates,
                     validation_hash, received_at, node, shard, pg_current_xact_id(), trace_parent
                 FROM UNNEST($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::text[],
                     $6::text[], $7::text[], $8::timestamptz[], $9::text[], $10::text[],
                     $11::text[], $12::int2[], $13::text[], $14::text[], $15::timestamptz[],
                     $16::text[], $17::int2[], $18::text[])
                   AS t(id, tenant_id, dedup_key, event_id, source, type, customer, time,
                     properties, tier, tier_detail, flags, gates, validation_hash, received_at,
                     node, shard, trace_parent)
                 ON CONFLICT (tenant_id, dedup_key) DO NOTHING
                 RETURNING id)
                 SELECT id FROM inserted",
            )
            .bind(&ids)
            .bind(&tenants)
            .bind(&keys)
            .bind(&event_ids)
            .bind(&sources)
            .bind(&types)
            .bind(&customers)
            .bind(&times)
            .bind(&properties)
            .bind(&tiers)
            .bind(&details)
            .bind(&flags)
            .bind(&gates)
            .bind(&hashes)
            .bind(&received)
            .bind(&nodes)
            .bind(&shards)
            .bind(&trace_parents)
            .fetch_all(&mut *tx)
            .await?
            .into_iter()
            .collect()
        };

        let mut originals: HashMap<(Uuid, String), Uuid> = HashMap::new();
        if inserted.len() < n {
            let (dup_tenants, dup_keys): (Vec<Uuid>, Vec<String>) = events
                .iter()
                .filter(|e| !inserted.contains(&e.stored_id))
                .map(|e| (e.tenant, e.dedup_key.clone()))
                .unzip();
            let rows = sqlx::query(
                "SELECT e.tenant_id, e.dedup_key, e.id FROM events e
                 JOIN UNNEST($1::uuid[], $2::text[]) AS k(tenant_id, dedup_key)
                   ON e.tenant_id = k.tenant_id AND e.dedup_key = k.dedup_key",
            )
            .bind(&dup_tenants)
            .bind(&dup_keys)
            .fetch_all(&mut *tx)
            .await?;
            for row in rows {
                originals.insert((row.try_get(0)?, row.try_get(1)?), row.try_get(2)?);
            }
        }

        if !batch.rejections.is_empty() {
            insert_rejections(&mut tx, batch).await?;
        }
        tx.commit().await?;

        events
            .iter()
            .map(|e| {
                if inserted.contains(&e.stored_id) {
                    return Ok(CommitOutcome::Inserted);
                }
                originals
                    .get(&(e.tenant, e.dedup_key.clone()))
                    .map(|&original| CommitOutcome::Duplicate { original })
                    .ok_or_else(|| {
                        StoreError::Corrupt(format!(
                            "event {} was neither inserted nor found as a duplicate",
                            e.stored_id
                        ))
                    })
            })
            .collect()
    }
}

async fn insert_rejections(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    batch: &CommitBatch,
) -> Result<()> {
    let r = &batch.rejections;
    let col = |f: fn(&crate::NewRejection) -> Option<String>| r.iter().map(f).collect::<Vec<_>>();
    sqlx::query(
        "INSERT INTO rejections (id, tenant_id, event_id, source, type, customer, reason, message,
             gates, payload, tier, tier_detail, received_at, node)
         SELECT * FROM UNNEST($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::text[],
             $6::text[], $7::text[], $8::text[], $9::text[], $10::text[], $11::text[],
             $12::text[], $13::timestamptz[], $14::text[])",
    )
    .bind(r.iter().map(|x| x.stored_id).collect::<Vec<_>>())
    .bind(r.iter().map(|x| x.tenant).collect::<Vec<_>>())
    .bind(col(|x| x.event_id.clone()))
    .bind(col(|x| x.source.clone()))
    .bind(col(|x| x.event_type.clone()))
    .bind(col(|x| x.customer.clone()))
    .bind(r.iter().map(|x| x.reason.clone()).collect::<Vec<_>>())
    .bind(r.iter().map(|x| x.message.clone()).collect::<Vec<_>>())
    .bind(r.iter().map(|x| x.gates.to_json()).collect::<Vec<_>>())
    .bind(r.iter().map(|x| x.payload.clone()).collect::<Vec<_>>())
    .bind(r.iter().map(|x| x.tier.as_str()).collect::<Vec<_>>())
    .bind(r.iter().map(|x| x.tier_detail.clone()).collect::<Vec<_>>())
    .bind(r.iter().map(|x| x.received_at).collect::<Vec<_>>())
    .bind(r.iter().map(|x| x.node.clone()).collect::<Vec<_>>())
    .execute(&mut **tx)
    .await?;
    Ok(())
}

fn tenant_from_row(row: &PgRow) -> Result<Tenant> {
    Ok(Tenant {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        hmac_key: row.try_get("hmac_key")?,
        created_at: row.try_get("created_at")?,
    })
}

/// A column only some queries select (absent: `None`).
fn optional_column(row: &PgRow, name: &str) -> Result<Option<String>> {
    match row.try_get(name) {
        Ok(value) => Ok(value),
        Err(sqlx::Error::ColumnNotFound(_)) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

pub(crate) fn event_from_row(row: &PgRow) -> Result<StoredEvent> {
    EventRow {
        stored_id: row.try_get("id")?,
        seq: row.try_get("seq")?,
        tenant: row.try_get("tenant_id")?,
        event_id: row.try_get("event_id")?,
        source: row.try_get("source")?,
        event_type: row.try_get("type")?,
        customer: row.try_get("customer")?,
        time: row.try_get("time")?,
        properties_json: row.try_get("properties")?,
        tier: row.try_get("tier")?,
        tier_detail: row.try_get("tier_detail")?,
        status: row.try_get("status")?,
        flags: i64::from(row.try_get::<i16, _>("flags")?),
        gates: row.try_get("gates")?,
        validation_hash: row.try_get("validation_hash")?,
        received_at: row.try_get("received_at")?,
        node: row.try_get("node")?,
        enrichment: row.try_get("enrichment")?,
        trace_parent: optional_column(row, "trace_parent")?,
    }
    .decode()
}

fn rejection_from_row(row: &PgRow) -> Result<StoredRejection> {
    RejectionRow {
        stored_id: row.try_get("id")?,
        seq: row.try_get("seq")?,
        event_id: row.try_get("event_id")?,
        source: row.try_get("source")?,
        event_type: row.try_get("type")?,
        customer: row.try_get("customer")?,
        reason: row.try_get("reason")?,
        message: row.try_get("message")?,
        gates: row.try_get("gates")?,
        payload: row.try_get("payload")?,
        tier: row.try_get("tier")?,
        tier_detail: row.try_get("tier_detail")?,
        received_at: row.try_get("received_at")?,
        node: row.try_get("node")?,
    }
    .decode()
}

fn is_unique_violation(err: &sqlx::Error) -> bool {
    matches!(err, sqlx::Error::Database(db) if db.code().as_deref() == Some("23505"))
}

#[async_trait]
impl Store for PgStore {
    fn backend(&self) -> &'static str {
        "postgres"
    }

    fn changes(&self) -> &Changes {
        &self.changes
    }

    async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }
}

#[async_trait]
impl TenantStore for PgStore {
    async fn create_tenant(&self, name: &str) -> Result<Tenant> {
        let tenant = Tenant {
            id: Uuid::now_v7(),
            name: name.to_owned(),
            hmac_key: crate::new_hmac_key(),
            created_at: micros(Utc::now()),
        };
        sqlx::query("INSERT INTO tenants (id, name, hmac_key, created_at) VALUES ($1, $2, $3, $4)")
            .bind(tenant.id)
            .bind(&tenant.name)
            .bind(&tenant.hmac_key)
            .bind(tenant.created_at)
            .execute(&self.pool)
            .await
            .map_err(|e| {
                if is_unique_violation(&e) {
                    StoreError::Conflict(format!("tenant {name:?} already exists"))
                } else {
                    e.into()
                }
            })?;
        Ok(tenant)
    }

    async fn tenant_by_name(&self, name: &str) -> Result<Option<Tenant>> {
        let row = sqlx::query("SELECT id, name, hmac_key, created_at FROM tenants WHERE name = $1")
            .bind(name)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(tenant_from_row).transpose()
    }

    async fn list_tenants(&self) -> Result<Vec<Tenant>> {
        let rows = sqlx::query("SELECT id, name, hmac_key, created_at FROM tenants ORDER BY name")
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(tenant_from_row).collect()
    }

    async fn create_api_key(
        &self,
        tenant: Uuid,
        key_hash: &str,
        prefix: &str,
        label: &str,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO api_keys (key_hash, tenant_id, prefix, label, created_at)
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(key_hash)
        .bind(tenant)
        .bind(prefix)
        .bind(label)
        .bind(Utc::now())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn tenant_for_api_key(&self, key_hash: &str) -> Result<Option<Tenant>> {
        let row = sqlx::query(
            "SELECT t.id, t.name, t.hmac_key, t.created_at FROM api_keys k
             JOIN tenants t ON t.id = k.tenant_id WHERE k.key_hash = $1",
        )
        .bind(key_hash)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(tenant_from_row).transpose()
    }
}

#[async_trait]
impl IntakeStore for PgStore {
    async fn commit(&self, batch: &CommitBatch) -> Result<Vec<CommitOutcome>> {
        let mut attempt = 1;
        loop {
            match self.try_commit(batch).await {
                Err(StoreError::Database(err))
                    if attempt < COMMIT_ATTEMPTS && is_lost_race(&err) =>
                {
                    tracing::debug!(attempt, error = %err, "commit lost a race; retrying");
                    tokio::time::sleep(Duration::from_millis(5 << attempt)).await;
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    async fn list_events(&self, tenant: Uuid, query: &EventQuery) -> Result<Page<StoredEvent>> {
        let limit = clamp_limit(query.limit);
        // Two static statements rather than SQL built at run time.
        let sql = if query.descending {
            "SELECT e.id, e.seq, e.tenant_id, e.event_id, e.source, e.type, e.customer, e.time,
                 e.properties::text AS properties, e.tier, e.tier_detail, e.status, e.flags, e.gates,
                 e.validation_hash, e.received_at, e.node,
                 CASE WHEN q.event_id IS NOT NULL THEN q.waiting
                     WHEN e.enrich_xid IS NOT NULL AND (c.xid IS NULL
                         OR (e.enrich_xid, e.id) > (c.xid, c.event_id)) THEN NULL
                     ELSE 'ENRICHED' END AS enrichment
             FROM events e LEFT JOIN enrichment_queue q ON q.event_id = e.id
                 LEFT JOIN enrichment_cursors c ON c.shard = e.enrich_shard
             WHERE e.tenant_id = $1
               AND ($2::text IS NULL OR e.customer = $2)
               AND ($3::text IS NULL OR e.type = $3)
               AND ($4::timestamptz IS NULL OR e.time >= $4)
               AND ($5::timestamptz IS NULL OR e.time < $5)
               AND ($6::text IS NULL OR e.status = $6)
               AND (e.flags & $7) = $7
               AND e.seq < $8
             ORDER BY e.seq DESC
             LIMIT $9"
        } else {
            "SELECT e.id, e.seq, e.tenant_id, e.event_id, e.source, e.type, e.customer, e.time,
                 e.properties::text AS properties, e.tier, e.tier_detail, e.status, e.flags, e.gates,
                 e.validation_hash, e.received_at, e.node,
                 CASE WHEN q.event_id IS NOT NULL THEN q.waiting
                     WHEN e.enrich_xid IS NOT NULL AND (c.xid IS NULL
                         OR (e.enrich_xid, e.id) > (c.xid, c.event_id)) THEN NULL
                     ELSE 'ENRICHED' END AS enrichment
             FROM events e LEFT JOIN enrichment_queue q ON q.event_id = e.id
                 LEFT JOIN enrichment_cursors c ON c.shard = e.enrich_shard
             WHERE e.tenant_id = $1
               AND ($2::text IS NULL OR e.customer = $2)
               AND ($3::text IS NULL OR e.type = $3)
               AND ($4::timestamptz IS NULL OR e.time >= $4)
               AND ($5::timestamptz IS NULL OR e.time < $5)
               AND ($6::text IS NULL OR e.status = $6)
               AND (e.flags & $7) = $7
               AND e.seq > $8
             ORDER BY e.seq
             LIMIT $9"
        };
        let after = query
            .after
            .unwrap_or(if query.descending { i64::MAX } else { 0 });
        let rows = sqlx::query(sql)
            .bind(tenant)
            .bind(&query.customer)
            .bind(&query.event_type)
            .bind(query.from)
            .bind(query.to)
            .bind(&query.status)
            .bind(i16::from(query.flags.bits()))
            .bind(after)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?;
        let items = rows
            .iter()
            .map(event_from_row)
            .collect::<Result<Vec<_>>>()?;
        Ok(Page::new(items, limit, |e| e.seq))
    }

    async fn list_rejections(
        &self,
        tenant: Uuid,
        query: &RejectionQuery,
    ) -> Result<Page<StoredRejection>> {
        let limit = clamp_limit(query.limit);
        let rows = sqlx::query(
            "SELECT id, seq, event_id, source, type, customer, reason, message, gates, payload,
                 tier, tier_detail, received_at, node
             FROM rejections
             WHERE tenant_id = $1 AND ($2::text IS NULL OR reason = $2) AND seq > $3
             ORDER BY seq
             LIMIT $4",
        )
        .bind(tenant)
        .bind(&query.reason)
        .bind(query.after.unwrap_or(0))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        let items = rows
            .iter()
            .map(rejection_from_row)
            .collect::<Result<Vec<_>>>()?;
        Ok(Page::new(items, limit, |r| r.seq))
    }

    async fn count_events(&self, tenant: Uuid) -> Result<u64> {
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM events WHERE tenant_id = $1")
            .bind(tenant)
            .fetch_one(&self.pool)
            .await?;
        Ok(n as u64)
    }
    async fn record_webhook_rejection(&self, rejection: &crate::NewWebhookRejection) -> Result<()> {
        self.pg_record_webhook_rejection(rejection).await
    }
    async fn list_webhook_rejections(
        &self,
        tenant: Uuid,
        query: &crate::WebhookRejectionQuery,
    ) -> Result<Page<crate::StoredWebhookRejection>> {
        self.pg_list_webhook_rejections(tenant, query).await
    }
    async fn create_batch(&self, batch: &crate::Batch) -> Result<()> {
        self.pg_create_batch(batch).await
    }
    async fn append_batch_results(
        &self,
        tenant: Uuid,
        batch: Uuid,
        chunk: &crate::BatchResultChunk,
    ) -> Result<()> {
        self.pg_append_batch_results(tenant, batch, chunk).await
    }
    async fn finish_batch(
        &self,
        tenant: Uuid,
        batch: Uuid,
        status: crate::BatchStatus,
        error: Option<&str>,
        at: DateTime<Utc>,
    ) -> Result<()> {
        self.pg_finish_batch(tenant, batch, status, error, at).await
    }
    async fn batch(&self, tenant: Uuid, batch: Uuid) -> Result<Option<crate::Batch>> {
        self.pg_batch(tenant, batch).await
    }
    async fn batch_results(
        &self,
        tenant: Uuid,
        batch: Uuid,
        after: Option<i64>,
        limit: u32,
    ) -> Result<Vec<crate::BatchResultChunk>> {
        self.pg_batch_results(tenant, batch, after, limit).await
    }
    async fn events_by_ids(&self, tenant: Uuid, ids: &[Uuid]) -> Result<Vec<StoredEvent>> {
        self.pg_events_by_ids(tenant, ids).await
    }
}

#[async_trait]
impl CatalogStore for PgStore {
    async fn apply_catalog(
        &self,
        tenant: Uuid,
        catalog: &NewCatalogVersion,
    ) -> Result<AppliedCatalog> {
        let applied = self.pg_apply_catalog(tenant, catalog).await?;
        if applied.created {
            self.changes.publish(Change::Catalog { tenant }).await;
        }
        Ok(applied)
    }
    async fn catalog_version(
        &self,
        tenant: Uuid,
        version: Option<i64>,
    ) -> Result<Option<CatalogVersion>> {
        self.pg_catalog_version(tenant, version).await
    }
    async fn catalog_versions(&self, tenant: Uuid) -> Result<Vec<CatalogVersion>> {
        self.pg_catalog_versions(tenant).await
    }
}

#[async_trait]
impl CustomerStore for PgStore {
    async fn upsert_customer(
        &self,
        tenant: Uuid,
        customer: &CustomerInput,
    ) -> Result<(Customer, bool)> {
        self.pg_upsert_customer(tenant, customer).await
    }
    async fn customer(&self, tenant: Uuid, external_id: &str) -> Result<Option<Customer>> {
        self.pg_customer(tenant, external_id).await
    }
    async fn list_customers(
        &self,
        tenant: Uuid,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<Customer>> {
        self.pg_list_customers(tenant, after, limit).await
    }
    async fn create_subscription(
        &self,
        tenant: Uuid,
        subscription: &SubscriptionInput,
    ) -> Result<Subscription> {
        let created = self.pg_create_subscription(tenant, subscription).await?;
        self.changes
            .customer_changed(tenant, &created.customer)
            .await;
        Ok(created)
    }
    async fn subscriptions(
        &self,
        tenant: Uuid,
        customer: Option<&str>,
    ) -> Result<Vec<Subscription>> {
        self.pg_load_subscriptions(tenant, customer, None).await
    }
    async fn change_plan(
        &self,
        tenant: Uuid,
        subscription: Uuid,
        rate_plan: &str,
        at: DateTime<Utc>,
    ) -> Result<Subscription> {
        let changed = self
            .pg_change_plan(tenant, subscription, rate_plan, at)
            .await?;
        self.changes
            .customer_changed(tenant, &changed.customer)
            .await;
        Ok(changed)
    }
    async fn add_subscription_discount(
        &self,
        tenant: Uuid,
        discount: &crate::billing::SubscriptionDiscount,
    ) -> Result<()> {
        self.pg_add_subscription_discount(tenant, discount).await
    }
    async fn subscription_discounts(
        &self,
        tenant: Uuid,
    ) -> Result<Vec<crate::billing::SubscriptionDiscount>> {
        self.pg_subscription_discounts(tenant).await
    }
}

#[async_trait]
impl EnrichmentStore for PgStore {
    async fn claim_enrichment(&self, limit: u32) -> Result<Box<dyn crate::EnrichmentClaim>> {
        self.pg_claim_enrichment(limit).await
    }
    async fn requeue_waiting(&self, tenant: Uuid) -> Result<u64> {
        self.pg_requeue_waiting(tenant).await
    }
    async fn enrichment_backlog(&self) -> Result<u64> {
        self.pg_enrichment_backlog().await
    }
    async fn revenue(
        &self,
        tenant: Uuid,
        query: &crate::RevenueQuery,
    ) -> Result<Vec<crate::RevenueRow>> {
        self.pg_revenue(tenant, query).await
    }
    async fn ledger_of(&self, tenant: Uuid, events: &[Uuid]) -> Result<Vec<crate::LedgerLine>> {
        self.pg_ledger_of(tenant, events).await
    }
    async fn revenue_by_hour(
        &self,
        tenant: Uuid,
        query: &crate::RevenueQuery,
    ) -> Result<Vec<crate::HourRow>> {
        self.pg_revenue_by_hour(tenant, query).await
    }
    async fn running_totals_of(
        &self,
        tenant: Uuid,
        subscription: Uuid,
    ) -> Result<Vec<(crate::enrichment::TotalKey, crate::enrichment::TotalState)>> {
        self.pg_running_totals_of(tenant, subscription).await
    }
    async fn running_totals_between(
        &self,
        tenant: Uuid,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<(crate::enrichment::TotalKey, crate::enrichment::TotalState)>> {
        self.pg_running_totals_between(tenant, from, to).await
    }
}

#[async_trait]
impl InvoiceStore for PgStore {
    async fn bill_events(
        &self,
        tenant: Uuid,
        customers: &[String],
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        stored_until: DateTime<Utc>,
    ) -> Result<Vec<crate::billing::BillEvent>> {
        self.pg_bill_events(tenant, customers, from, to, stored_until)
            .await
    }
    async fn settle_invoices(
        &self,
        tenant: Uuid,
        invoices: &[crate::billing::NewInvoice],
    ) -> Result<Vec<crate::billing::SettleOutcome>> {
        self.pg_settle_invoices(tenant, invoices).await
    }
    async fn invoices(
        &self,
        tenant: Uuid,
        query: &crate::billing::InvoiceQuery,
    ) -> Result<Vec<crate::billing::StoredInvoice>> {
        self.pg_invoices(tenant, query).await
    }
    async fn invoice(
        &self,
        tenant: Uuid,
        id_or_number: &str,
    ) -> Result<Option<crate::billing::StoredInvoice>> {
        self.pg_invoice(tenant, id_or_number).await
    }
    async fn invoiced_periods(&self, tenant: Uuid) -> Result<Vec<(Uuid, DateTime<Utc>)>> {
        self.pg_invoiced_periods(tenant).await
    }
    async fn line_events(
        &self,
        tenant: Uuid,
        invoice: Uuid,
        line: u32,
    ) -> Result<Option<Vec<Uuid>>> {
        self.pg_line_events(tenant, invoice, line).await
    }
    async fn record_bill_run(&self, run: &crate::billing::BillRunRecord) -> Result<()> {
        self.pg_record_bill_run(run).await
    }
    async fn bill_runs(
        &self,
        tenant: Uuid,
        limit: u32,
    ) -> Result<Vec<crate::billing::BillRunRecord>> {
        self.pg_bill_runs(tenant, limit).await
    }
    async fn due_deliveries(
        &self,
        now: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<crate::billing::Delivery>> {
        self.pg_due_deliveries(now, limit).await
    }
    async fn finish_delivery(
        &self,
        id: Uuid,
        at: DateTime<Utc>,
        error: Option<&str>,
        retry_at: DateTime<Utc>,
    ) -> Result<()> {
        self.pg_finish_delivery(id, at, error, retry_at).await
    }
}

/// Deadlock or serialization failure: the transaction was rolled back and
/// may simply be run again.
fn is_lost_race(err: &sqlx::Error) -> bool {
    matches!(err, sqlx::Error::Database(db)
        if matches!(db.code().as_deref(), Some("40001" | "40P01")))
        && is_transient(err)
}

/// PostgreSQL keeps microseconds; truncate so what we return is what we stored.
pub(crate) fn micros(t: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(t.timestamp_micros()).unwrap_or(t)
}
