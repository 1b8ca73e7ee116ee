//! The embedded SQLite store: the default of `aforo standalone`.
//!
//! One writer connection (SQLite has one writer at a time anyway) and a few
//! readers, in WAL mode with `synchronous=FULL`: a commit is on disk before
//! it returns, so acked means durable here too. Write transactions start
//! with `BEGIN IMMEDIATE`, so a second process (the CLI creating a tenant)
//! waits for the lock instead of failing mid-transaction.

use crate::changes::{Change, Changes};
use crate::prelude::*;
use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::Row;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use uuid::Uuid;

use crate::migrate::SQLITE;
use crate::model::{EventRow, RejectionRow, clamp_limit, insertion_order};
use crate::{
    AppliedCatalog, CatalogVersion, CommitBatch, CommitOutcome, Customer, CustomerInput,
    EventQuery, NewCatalogVersion, Page, RejectionQuery, Result, Store, StoreError, StoredEvent,
    StoredRejection, Subscription, SubscriptionInput, Tenant,
};

pub struct SqliteStore {
    writer: SqlitePool,
    readers: SqlitePool,
    /// The file is one process's: changes are told in process only.
    changes: Changes,
}

impl SqliteStore {
    /// Opens (creating when missing) the database file at `path` and runs
    /// pending migrations.
    pub async fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| StoreError::Database(sqlx::Error::Io(e)))?;
        }
        let options = SqliteConnectOptions::from_str("sqlite://")?
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(10))
            .foreign_keys(true);
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options.clone())
            .await?;
        migrate(&writer).await?;
        let readers = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options.read_only(true))
            .await?;
        Ok(SqliteStore {
            writer,
            readers,
            changes: Changes::default(),
        })
    }

    pub(crate) fn writer(&self) -> &SqlitePool {
        &self.writer
    }

    pub(crate) fn readers(&self) -> &SqlitePool {
        &self.readers
    }
}

async fn migrate(pool: &SqlitePool) -> Result<()> {
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
    sqlx::raw_sql(
        "CREATE TABLE IF NOT EXISTS aforo_migrations (
            version INTEGER PRIMARY KEY,
            name TEXT NOT NULL,
            applied_at INTEGER NOT NULL)",
    )
    .execute(&mut *tx)
    .await?;
    let applied: Vec<i64> = sqlx::query_scalar("SELECT version FROM aforo_migrations")
        .fetch_all(&mut *tx)
        .await?;
    for migration in SQLITE.iter().filter(|m| !applied.contains(&m.version)) {
        let failed = |source| StoreError::Migration {
            version: migration.version,
            name: migration.name,
            source,
        };
        sqlx::raw_sql(migration.sql)
            .execute(&mut *tx)
            .await
            .map_err(failed)?;
        sqlx::query("INSERT INTO aforo_migrations (version, name, applied_at) VALUES (?1, ?2, ?3)")
            .bind(migration.version)
            .bind(migration.name)
            .bind(Utc::now().timestamp_micros())
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

pub(crate) fn time(micros: i64) -> Result<DateTime<Utc>> {
    DateTime::from_timestamp_micros(micros)
        .ok_or_else(|| StoreError::Corrupt(format!("time {micros} is out of range")))
}

pub(crate) fn uuid(text: &str) -> Result<Uuid> {
    Uuid::parse_str(text).map_err(|e| StoreError::Corrupt(format!("uuid {text:?}: {e}")))
}

fn tenant_from_row(row: &SqliteRow) -> Result<Tenant> {
    Ok(Tenant {
        id: uuid(row.try_get("id")?)?,
        name: row.try_get("name")?,
        hmac_key: row.try_get("hmac_key")?,
        created_at: time(row.try_get("created_at")?)?,
    })
}

/// A column only some queries select (absent: `None`).
fn optional_column(row: &SqliteRow, name: &str) -> Result<Option<String>> {
    match row.try_get(name) {
        Ok(value) => Ok(value),
        Err(sqlx::Error::ColumnNotFound(_)) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

pub(crate) fn event_from_row(row: &SqliteRow) -> Result<StoredEvent> {
    EventRow {
        stored_id: uuid(row.try_get("id")?)?,
        seq: row.try_get("seq")?,
        tenant: uuid(row.try_get("tenant_id")?)?,
        event_id: row.try_get("event_id")?,
        source: row.try_get("source")?,
        event_type: row.try_get("type")?,
        customer: row.try_get("customer")?,
        time: time(row.try_get("time")?)?,
        properties_json: row.try_get("properties")?,
        tier: row.try_get("tier")?,
        tier_detail: row.try_get("tier_detail")?,
        status: row.try_get("status")?,
        flags: row.try_get("flags")?,
        gates: row.try_get("gates")?,
        validation_hash: row.try_get("validation_hash")?,
        received_at: time(row.try_get("received_at")?)?,
        node: row.try_get("node")?,
        enrichment: row.try_get("enrichment")?,
        trace_parent: optional_column(row, "trace_parent")?,
    }
    .decode()
}

fn rejection_from_row(row: &SqliteRow) -> Result<StoredRejection> {
    RejectionRow {
        stored_id: uuid(row.try_get("id")?)?,
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
        received_at: time(row.try_get("received_at")?)?,
        node: row.try_get("node")?,
    }
    .decode()
}

#[async_trait]
impl Store for SqliteStore {
    fn backend(&self) -> &'static str {
        "sqlite"
    }

    fn changes(&self) -> &Changes {
        &self.changes
    }

    async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.readers).await?;
        Ok(())
    }
}

#[async_trait]
impl TenantStore for SqliteStore {
    async fn create_tenant(&self, name: &str) -> Result<Tenant> {
        let now = Utc::now().timestamp_micros();
        let tenant = Tenant {
            id: Uuid::now_v7(),
            name: name.to_owned(),
            hmac_key: crate::new_hmac_key(),
            created_at: time(now)?,
        };
        let mut tx = self.writer.begin_with("BEGIN IMMEDIATE").await?;
        let taken: Option<String> = sqlx::query_scalar("SELECT id FROM tenants WHERE name = ?1")
            .bind(name)
            .fetch_optional(&mut *tx)
            .await?;
        if taken.is_some() {
            return Err(StoreError::Conflict(format!(
                "tenant {name:?} already exists"
            )));
        }
        sqlx::query("INSERT INTO tenants (id, name, hmac_key, created_at) VALUES (?1, ?2, ?3, ?4)")
            .bind(tenant.id.to_string())
            .bind(&tenant.name)
            .bind(&tenant.hmac_key)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(tenant)
    }

    async fn tenant_by_name(&self, name: &str) -> Result<Option<Tenant>> {
        let row = sqlx::query("SELECT id, name, hmac_key, created_at FROM tenants WHERE name = ?1")
            .bind(name)
            .fetch_optional(&self.readers)
            .await?;
        row.as_ref().map(tenant_from_row).transpose()
    }

    async fn list_tenants(&self) -> Result<Vec<Tenant>> {
        let rows = sqlx::query("SELECT id, name, hmac_key, created_at FROM tenants ORDER BY name")
            .fetch_all(&self.readers)
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
        let mut tx = self.writer.begin_with("BEGIN IMMEDIATE").await?;
        sqlx::query(
            "INSERT INTO api_keys (key_hash, tenant_id, prefix, label, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5)",
        )
        .bind(key_hash)
        .bind(tenant.to_string())
        .bind(prefix)
        .bind(label)
        .bind(Utc::now().timestamp_micros())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn tenant_for_api_key(&self, key_hash: &str) -> Result<Option<Tenant>> {
        let row = sqlx::query(
            "SELECT t.id, t.name, t.hmac_key, t.created_at FROM api_keys k
             JOIN tenants t ON t.id = k.tenant_id WHERE k.key_hash = ?1",
        )
        .bind(key_hash)
        .fetch_optional(&self.readers)
        .await?;
        row.as_ref().map(tenant_from_row).transpose()
    }
}

#[async_trait]
impl IntakeStore for SqliteStore {
    /// Two statements per batch over JSON arrays of rows (`json_each`),
    /// whatever its size: through sqlx each SQLite statement is a round trip
    /// to the connection's thread, and a statement per event capped ingest
    /// at ~7k events/s. Events are written in key order; the insert returns
    /// the ids it stored, the others are looked up as duplicates.
    async fn commit(&self, batch: &CommitBatch) -> Result<Vec<CommitOutcome>> {
        let order = insertion_order(&batch.events);
        let mut tx = self.writer.begin_with("BEGIN IMMEDIATE").await?;
        let rows: Vec<serde_json::Value> = order
            .iter()
            .map(|&i| {
                let e = &batch.events[i];
                serde_json::json!([
                    e.stored_id.to_string(),
                    e.tenant.to_string(),
                    e.dedup_key,
                    e.event.id,
                    e.event.source,
                    e.event.event_type,
                    e.event.customer,
                    e.event.time.timestamp_micros(),
                    e.properties_json,
                    e.event.tier.as_str(),
                    e.event.tier_detail,
                    i64::from(e.flags.bits()),
                    e.gates.to_json(),
                    e.validation_hash,
                    e.received_at.timestamp_micros(),
                    e.node,
                    e.trace_parent
                ])
            })
            .collect();
        let inserted: HashSet<String> = if rows.is_empty() {
            HashSet::new()
        } else {
            sqlx::query_scalar(
                "INSERT INTO events (id, tenant_id, dedup_key, event_id, source, type, customer,
                     time, properties, tier, tier_detail, status, flags, gates, validation_hash,
                     received_at, node, trace_parent)
                 SELECT j.value ->> 0, j.value ->> 1, j.value ->> 2, j.value ->> 3, j.value ->> 4,
                     j.value ->> 5, j.value ->> 6, j.value ->> 7, j.value ->> 8, j.value ->> 9,
                     j.value ->> 10, 'ACCEPTED', j.value ->> 11, j.value ->> 12, j.value ->> 13,
                     j.value ->> 14, j.value ->> 15, j.value ->> 16
                 FROM json_each(?1) j WHERE true
                 ON CONFLICT (tenant_id, dedup_key) DO NOTHING
                 RETURNING id",
            )
            .bind(serde_json::Value::Array(rows).to_string())
            .fetch_all(&mut *tx)
            .await?
            .into_iter()
            .collect()
        };
        let mut outcomes = vec![CommitOutcome::Inserted; batch.events.len()];
        let duplicates: Vec<usize> = (0..batch.events.len())
            .filter(|&i| !inserted.contains(&batch.events[i].stored_id.to_string()))
            .collect();
        if !duplicates.is_empty() {
            let keys: Vec<serde_json::Value> = duplicates
                .iter()
                .map(|&i| {
                    let e = &batch.events[i];
                    serde_json::json!([e.tenant.to_string(), e.dedup_key])
                })
                .collect();
            let found: Vec<(String, String, String)> = sqlx::query_as(
                "SELECT e.tenant_id, e.dedup_key, e.id
                 FROM json_each(?1) k JOIN events e
                   ON e.tenant_id = k.value ->> 0 AND e.dedup_key = k.value ->> 1",
            )
            .bind(serde_json::Value::Array(keys).to_string())
            .fetch_all(&mut *tx)
            .await?;
            let originals: HashMap<(String, String), String> = found
                .into_iter()
                .map(|(tenant, key, id)| ((tenant, key), id))
                .collect();
            for i in duplicates {
                let e = &batch.events[i];
                let original = originals
                    .get(&(e.tenant.to_string(), e.dedup_key.clone()))
                    .ok_or_else(|| {
                        StoreError::Corrupt(format!(
                            "event {} was neither inserted nor found as a duplicate",
                            e.stored_id
                        ))
                    })?;
                outcomes[i] = CommitOutcome::Duplicate {
                    original: uuid(original)?,
                };
            }
        }
        for r in &batch.rejections {
            sqlx::query(
                "INSERT INTO rejections (id, tenant_id, event_id, source, type, customer, reason,
                     message, gates, payload, tier, tier_detail, received_at, node)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
            )
            .bind(r.stored_id.to_string())
            .bind(r.tenant.to_string())
            .bind(&r.event_id)
            .bind(&r.source)
            .bind(&r.event_type)
            .bind(&r.customer)
            .bind(&r.reason)
            .bind(&r.message)
            .bind(r.gates.to_json())
            .bind(&r.payload)
            .bind(r.tier.as_str())
            .bind(&r.tier_detail)
            .bind(r.received_at.timestamp_micros())
            .bind(&r.node)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(outcomes)
    }

    async fn list_events(&self, tenant: Uuid, query: &EventQuery) -> Result<Page<StoredEvent>> {
        let limit = clamp_limit(query.limit);
        let sql = if query.descending {
            "SELECT e.id, e.seq, e.tenant_id, e.event_id, e.source, e.type, e.customer, e.time,
                 e.properties, e.tier, e.tier_detail, e.status, e.flags, e.gates,
                 e.validation_hash, e.received_at, e.node,
                 CASE WHEN q.event_id IS NOT NULL THEN q.waiting
                     WHEN e.seq > (SELECT seq FROM enrichment_cursor WHERE id = 1) THEN NULL
                     ELSE 'ENRICHED' END AS enrichment
             FROM events e LEFT JOIN enrichment_queue q ON q.event_id = e.id
             WHERE e.tenant_id = ?1
               AND (?2 IS NULL OR e.customer = ?2)
               AND (?3 IS NULL OR e.type = ?3)
               AND (?4 IS NULL OR e.time >= ?4)
               AND (?5 IS NULL OR e.time < ?5)
               AND (?6 IS NULL OR e.status = ?6)
               AND (e.flags & ?7) = ?7
               AND e.seq < ?8
             ORDER BY e.seq DESC
             LIMIT ?9"
        } else {
            "SELECT e.id, e.seq, e.tenant_id, e.event_id, e.source, e.type, e.customer, e.time,
                 e.properties, e.tier, e.tier_detail, e.status, e.flags, e.gates,
                 e.validation_hash, e.received_at, e.node,
                 CASE WHEN q.event_id IS NOT NULL THEN q.waiting
                     WHEN e.seq > (SELECT seq FROM enrichment_cursor WHERE id = 1) THEN NULL
                     ELSE 'ENRICHED' END AS enrichment
             FROM events e LEFT JOIN enrichment_queue q ON q.event_id = e.id
             WHERE e.tenant_id = ?1
               AND (?2 IS NULL OR e.customer = ?2)
               AND (?3 IS NULL OR e.type = ?3)
               AND (?4 IS NULL OR e.time >= ?4)
               AND (?5 IS NULL OR e.time < ?5)
               AND (?6 IS NULL OR e.status = ?6)
               AND (e.flags & ?7) = ?7
               AND e.seq > ?8
             ORDER BY e.seq
             LIMIT ?9"
        };
        let after = query
            .after
            .unwrap_or(if query.descending { i64::MAX } else { 0 });
        let rows = sqlx::query(sql)
            .bind(tenant.to_string())
            .bind(&query.customer)
            .bind(&query.event_type)
            .bind(query.from.map(|t| t.timestamp_micros()))
            .bind(query.to.map(|t| t.timestamp_micros()))
            .bind(&query.status)
            .bind(i64::from(query.flags.bits()))
            .bind(after)
            .bind(i64::from(limit))
            .fetch_all(&self.readers)
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
             WHERE tenant_id = ?1 AND (?2 IS NULL OR reason = ?2) AND seq > ?3
             ORDER BY seq
             LIMIT ?4",
        )
        .bind(tenant.to_string())
        .bind(&query.reason)
        .bind(query.after.unwrap_or(0))
        .bind(i64::from(limit))
        .fetch_all(&self.readers)
        .await?;
        let items = rows
            .iter()
            .map(rejection_from_row)
            .collect::<Result<Vec<_>>>()?;
        Ok(Page::new(items, limit, |r| r.seq))
    }

    async fn count_events(&self, tenant: Uuid) -> Result<u64> {
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM events WHERE tenant_id = ?1")
            .bind(tenant.to_string())
            .fetch_one(&self.readers)
            .await?;
        Ok(n as u64)
    }
    async fn record_webhook_rejection(&self, rejection: &crate::NewWebhookRejection) -> Result<()> {
        self.sqlite_record_webhook_rejection(rejection).await
    }
    async fn list_webhook_rejections(
        &self,
        tenant: Uuid,
        query: &crate::WebhookRejectionQuery,
    ) -> Result<Page<crate::StoredWebhookRejection>> {
        self.sqlite_list_webhook_rejections(tenant, query).await
    }
    async fn create_batch(&self, batch: &crate::Batch) -> Result<()> {
        self.sqlite_create_batch(batch).await
    }
    async fn append_batch_results(
        &self,
        tenant: Uuid,
        batch: Uuid,
        chunk: &crate::BatchResultChunk,
    ) -> Result<()> {
        self.sqlite_append_batch_results(tenant, batch, chunk).await
    }
    async fn finish_batch(
        &self,
        tenant: Uuid,
        batch: Uuid,
        status: crate::BatchStatus,
        error: Option<&str>,
        at: DateTime<Utc>,
    ) -> Result<()> {
        self.sqlite_finish_batch(tenant, batch, status, error, at)
            .await
    }
    async fn batch(&self, tenant: Uuid, batch: Uuid) -> Result<Option<crate::Batch>> {
        self.sqlite_batch(tenant, batch).await
    }
    async fn batch_results(
        &self,
        tenant: Uuid,
        batch: Uuid,
        after: Option<i64>,
        limit: u32,
    ) -> Result<Vec<crate::BatchResultChunk>> {
        self.sqlite_batch_results(tenant, batch, after, limit).await
    }
    async fn events_by_ids(&self, tenant: Uuid, ids: &[Uuid]) -> Result<Vec<StoredEvent>> {
        self.sqlite_events_by_ids(tenant, ids).await
    }
}

#[async_trait]
impl CatalogStore for SqliteStore {
    async fn apply_catalog(
        &self,
        tenant: Uuid,
        catalog: &NewCatalogVersion,
    ) -> Result<AppliedCatalog> {
        let applied = self.sqlite_apply_catalog(tenant, catalog).await?;
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
        self.sqlite_catalog_version(tenant, version).await
    }
    async fn catalog_versions(&self, tenant: Uuid) -> Result<Vec<CatalogVersion>> {
        self.sqlite_catalog_versions(tenant).await
    }
}

#[async_trait]
impl CustomerStore for SqliteStore {
    async fn upsert_customer(
        &self,
        tenant: Uuid,
        customer: &CustomerInput,
    ) -> Result<(Customer, bool)> {
        self.sqlite_upsert_customer(tenant, customer).await
    }
    async fn customer(&self, tenant: Uuid, external_id: &str) -> Result<Option<Customer>> {
        self.sqlite_customer(tenant, external_id).await
    }
    async fn list_customers(
        &self,
        tenant: Uuid,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<Customer>> {
        self.sqlite_list_customers(tenant, after, limit).await
    }
    async fn create_subscription(
        &self,
        tenant: Uuid,
        subscription: &SubscriptionInput,
    ) -> Result<Subscription> {
        let created = self
            .sqlite_create_subscription(tenant, subscription)
            .await?;
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
        self.sqlite_load_subscriptions(tenant, customer, None).await
    }
    async fn change_plan(
        &self,
        tenant: Uuid,
        subscription: Uuid,
        rate_plan: &str,
        at: DateTime<Utc>,
    ) -> Result<Subscription> {
        let changed = self
            .sqlite_change_plan(tenant, subscription, rate_plan, at)
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
        self.sqlite_add_subscription_discount(tenant, discount)
            .await
    }
    async fn subscription_discounts(
        &self,
        tenant: Uuid,
    ) -> Result<Vec<crate::billing::SubscriptionDiscount>> {
        self.sqlite_subscription_discounts(tenant).await
    }
}

#[async_trait]
impl EnrichmentStore for SqliteStore {
    async fn claim_enrichment(&self, limit: u32) -> Result<Box<dyn crate::EnrichmentClaim>> {
        self.sqlite_claim_enrichment(limit).await
    }
    async fn requeue_waiting(&self, tenant: Uuid) -> Result<u64> {
        self.sqlite_requeue_waiting(tenant).await
    }
    async fn enrichment_backlog(&self) -> Result<u64> {
        self.sqlite_enrichment_backlog().await
    }
    async fn revenue(
        &self,
        tenant: Uuid,
        query: &crate::RevenueQuery,
    ) -> Result<Vec<crate::RevenueRow>> {
        self.sqlite_revenue(tenant, query).await
    }
    async fn ledger_of(&self, tenant: Uuid, events: &[Uuid]) -> Result<Vec<crate::LedgerLine>> {
        self.sqlite_ledger_of(tenant, events).await
    }
    async fn revenue_by_hour(
        &self,
        tenant: Uuid,
        query: &crate::RevenueQuery,
    ) -> Result<Vec<crate::HourRow>> {
        self.sqlite_revenue_by_hour(tenant, query).await
    }
    async fn running_totals_of(
        &self,
        tenant: Uuid,
        subscription: Uuid,
    ) -> Result<Vec<(crate::enrichment::TotalKey, crate::enrichment::TotalState)>> {
        self.sqlite_running_totals_of(tenant, subscription).await
    }
    async fn running_totals_between(
        &self,
        tenant: Uuid,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<(crate::enrichment::TotalKey, crate::enrichment::TotalState)>> {
        self.sqlite_running_totals_between(tenant, from, to).await
    }
}

#[async_trait]
impl InvoiceStore for SqliteStore {
    async fn bill_events(
        &self,
        tenant: Uuid,
        customers: &[String],
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        stored_until: DateTime<Utc>,
    ) -> Result<Vec<crate::billing::BillEvent>> {
        self.sqlite_bill_events(tenant, customers, from, to, stored_until)
            .await
    }
    async fn settle_invoices(
        &self,
        tenant: Uuid,
        invoices: &[crate::billing::NewInvoice],
    ) -> Result<Vec<crate::billing::SettleOutcome>> {
        self.sqlite_settle_invoices(tenant, invoices).await
    }
    async fn invoices(
        &self,
        tenant: Uuid,
        query: &crate::billing::InvoiceQuery,
    ) -> Result<Vec<crate::billing::StoredInvoice>> {
        self.sqlite_invoices(tenant, query).await
    }
    async fn invoice(
        &self,
        tenant: Uuid,
        id_or_number: &str,
    ) -> Result<Option<crate::billing::StoredInvoice>> {
        self.sqlite_invoice(tenant, id_or_number).await
    }
    async fn invoiced_periods(&self, tenant: Uuid) -> Result<Vec<(Uuid, DateTime<Utc>)>> {
        self.sqlite_invoiced_periods(tenant).await
    }
    async fn line_events(
        &self,
        tenant: Uuid,
        invoice: Uuid,
        line: u32,
    ) -> Result<Option<Vec<Uuid>>> {
        self.sqlite_line_events(tenant, invoice, line).await
    }
    async fn record_bill_run(&self, run: &crate::billing::BillRunRecord) -> Result<()> {
        self.sqlite_record_bill_run(run).await
    }
    async fn bill_runs(
        &self,
        tenant: Uuid,
        limit: u32,
    ) -> Result<Vec<crate::billing::BillRunRecord>> {
        self.sqlite_bill_runs(tenant, limit).await
    }
    async fn due_deliveries(
        &self,
        now: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<crate::billing::Delivery>> {
        self.sqlite_due_deliveries(now, limit).await
    }
    async fn finish_delivery(
        &self,
        id: Uuid,
        at: DateTime<Utc>,
        error: Option<&str>,
        retry_at: DateTime<Utc>,
    ) -> Result<()> {
        self.sqlite_finish_delivery(id, at, error, retry_at).await
    }
}
