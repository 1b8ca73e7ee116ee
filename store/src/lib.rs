//! Where aforo keeps what it has accepted.
//!
//! One interface, [`Store`], with two implementations that pass one
//! conformance suite (`tests/conformance.rs`): [`PgStore`] on PostgreSQL for
//! production, and [`SqliteStore`], an embedded file, for `aforo standalone`.
//!
//! The heart of it is [`Store::commit`]: a group of accepted events and
//! rejections, gathered from many concurrent requests, written in one
//! transaction. The idempotency claim and the write are the same statement
//! (`INSERT … ON CONFLICT (tenant_id, dedup_key) DO NOTHING`), so dedup is
//! exact: an event is either new and stored, or a duplicate that names the
//! stored original, and a transaction that fails leaves no claim behind.
//!
//! Beside the events: the catalog versions, customers and subscriptions,
//! the enrichment queue, running totals and ledger ([`enrichment`]), and
//! two read-through caches ([`cache`] for the catalog in force, [`context`]
//! for the enricher's lookups, in Redis or in process).
//!
//! Each backend knows its own SQL; nothing outside this crate writes SQL.

pub mod auth;
pub mod billing;
pub mod cache;
pub mod changes;
pub mod context;
pub mod enrichment;
mod error;
pub mod intake;
mod migrate;
mod model;
mod pg_billing;
mod pg_catalog;
mod pg_enrichment;
mod pg_intake;
mod postgres;
mod sqlite;
mod sqlite_billing;
mod sqlite_catalog;
mod sqlite_enrichment;
mod sqlite_intake;

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

pub use enrichment::{EnrichmentClaim, HourRow, LedgerLine, RevenueQuery, RevenueRow};
pub use error::StoreError;
pub use intake::{
    Batch, BatchResultChunk, BatchStatus, NewWebhookRejection, StoredWebhookRejection,
    WebhookRejectionQuery,
};
pub use model::{
    AppliedCatalog, CatalogVersion, CommitBatch, CommitOutcome, Customer, CustomerInput,
    EventQuery, NewCatalogVersion, NewEvent, NewRejection, Page, RejectionQuery, StoredEvent,
    StoredRejection, Subscription, SubscriptionInput, SubscriptionPhase, Tenant,
};
pub use postgres::PgStore;
pub use sqlite::SqliteStore;

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// The store and every aggregate trait, for `use aforo_store::prelude::*`.
pub mod prelude {
    pub use crate::{
        CatalogStore, CustomerStore, EnrichmentStore, IntakeStore, InvoiceStore, Store, TenantStore,
    };
}

/// The largest page a list call returns, whatever the caller asks for.
pub const MAX_PAGE_SIZE: u32 = 1000;

/// The storage interface every role uses, split by aggregate: tenants and
/// keys ([`TenantStore`]), what the front doors store ([`IntakeStore`]),
/// catalog versions ([`CatalogStore`]), customers and subscriptions
/// ([`CustomerStore`]), enrichment and revenue ([`EnrichmentStore`]), bill
/// runs and invoices ([`InvoiceStore`]). A backend is all of them, with its
/// name, its change notices and a ping. Callers bring the aggregates they
/// use into scope, or all of them with `use aforo_store::prelude::*`.
#[async_trait]
pub trait Store:
    TenantStore
    + IntakeStore
    + CatalogStore
    + CustomerStore
    + EnrichmentStore
    + InvoiceStore
    + Send
    + Sync
    + 'static
{
    /// `"postgres"` or `"sqlite"`, for logs and metrics.
    fn backend(&self) -> &'static str;

    /// Where this store announces its writes to the caches of what it holds
    /// (and, on PostgreSQL, hears other processes' writes): see [`changes`].
    fn changes(&self) -> &changes::Changes;

    /// Checks that the store answers (for readiness probes).
    async fn ping(&self) -> Result<()>;
}

/// Tenants and their API keys.
#[async_trait]
pub trait TenantStore: Send + Sync {
    /// Creates a tenant with a fresh validation key. Fails with
    /// [`StoreError::Conflict`] if the name is taken.
    async fn create_tenant(&self, name: &str) -> Result<Tenant>;
    async fn tenant_by_name(&self, name: &str) -> Result<Option<Tenant>>;
    async fn list_tenants(&self) -> Result<Vec<Tenant>>;

    /// Records an API key by its SHA-256 hash; the key itself is never stored.
    async fn create_api_key(
        &self,
        tenant: Uuid,
        key_hash: &str,
        prefix: &str,
        label: &str,
    ) -> Result<()>;
    async fn tenant_for_api_key(&self, key_hash: &str) -> Result<Option<Tenant>>;
}

/// What the front doors store: events, rejections, webhook deliveries set aside, batch uploads.
#[async_trait]
pub trait IntakeStore: Send + Sync {
    /// Writes a group of events and rejections in one transaction and returns
    /// one outcome per event of `batch.events`, in order. When this returns
    /// `Ok`, everything in the batch is durable; when it returns `Err`,
    /// nothing of it is.
    async fn commit(&self, batch: &CommitBatch) -> Result<Vec<CommitOutcome>>;

    async fn list_events(&self, tenant: Uuid, query: &EventQuery) -> Result<Page<StoredEvent>>;
    async fn list_rejections(
        &self,
        tenant: Uuid,
        query: &RejectionQuery,
    ) -> Result<Page<StoredRejection>>;
    async fn count_events(&self, tenant: Uuid) -> Result<u64>;
    /// Stores a webhook delivery that did not become events.
    async fn record_webhook_rejection(&self, rejection: &NewWebhookRejection) -> Result<()>;
    /// A tenant's rejected webhook deliveries, oldest first.
    async fn list_webhook_rejections(
        &self,
        tenant: Uuid,
        query: &WebhookRejectionQuery,
    ) -> Result<Page<StoredWebhookRejection>>;

    /// Records a new batch upload (status RUNNING, counters zero).
    async fn create_batch(&self, batch: &Batch) -> Result<()>;
    /// Appends the results of the batch's next rows and adds their counts to
    /// the batch, in one transaction. Chunks are numbered from 0; appending
    /// a number that exists fails with [`StoreError::Conflict`].
    async fn append_batch_results(
        &self,
        tenant: Uuid,
        batch: Uuid,
        chunk: &BatchResultChunk,
    ) -> Result<()>;
    /// Marks a RUNNING batch COMPLETE or FAILED.
    async fn finish_batch(
        &self,
        tenant: Uuid,
        batch: Uuid,
        status: BatchStatus,
        error: Option<&str>,
        at: DateTime<Utc>,
    ) -> Result<()>;
    async fn batch(&self, tenant: Uuid, batch: Uuid) -> Result<Option<Batch>>;
    /// Up to `limit` result chunks of a batch after chunk `after`, in order.
    async fn batch_results(
        &self,
        tenant: Uuid,
        batch: Uuid,
        after: Option<i64>,
        limit: u32,
    ) -> Result<Vec<BatchResultChunk>>;
    /// Events by stored id, in stored order; unknown ids are left out.
    async fn events_by_ids(&self, tenant: Uuid, ids: &[Uuid]) -> Result<Vec<StoredEvent>>;
}

/// Catalog versions: immutable, one per distinct content.
#[async_trait]
pub trait CatalogStore: Send + Sync {
    /// Stores a new catalog version unless the latest one has the same
    /// content hash, in which case nothing is written and it is returned.
    async fn apply_catalog(
        &self,
        tenant: Uuid,
        catalog: &NewCatalogVersion,
    ) -> Result<AppliedCatalog>;
    /// A version by number, or the latest with `None`.
    async fn catalog_version(
        &self,
        tenant: Uuid,
        version: Option<i64>,
    ) -> Result<Option<CatalogVersion>>;
    /// Every version, oldest first.
    async fn catalog_versions(&self, tenant: Uuid) -> Result<Vec<CatalogVersion>>;
}

/// Customers, their subscriptions and plan phases, and subscription discounts.
#[async_trait]
pub trait CustomerStore: Send + Sync {
    /// Creates the customer, or updates the one with the same external id.
    /// Returns it and whether it was created.
    async fn upsert_customer(
        &self,
        tenant: Uuid,
        customer: &CustomerInput,
    ) -> Result<(Customer, bool)>;
    async fn customer(&self, tenant: Uuid, external_id: &str) -> Result<Option<Customer>>;
    /// Customers by external id, after `after`.
    async fn list_customers(
        &self,
        tenant: Uuid,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<Customer>>;

    /// Fails with [`StoreError::NotFound`] for an unknown customer.
    async fn create_subscription(
        &self,
        tenant: Uuid,
        subscription: &SubscriptionInput,
    ) -> Result<Subscription>;
    async fn subscriptions(
        &self,
        tenant: Uuid,
        customer: Option<&str>,
    ) -> Result<Vec<Subscription>>;
    /// Moves a subscription to `rate_plan` from `at` on: the open phase ends
    /// at `at`, a new one starts. Earlier phases are never touched.
    async fn change_plan(
        &self,
        tenant: Uuid,
        subscription: Uuid,
        rate_plan: &str,
        at: DateTime<Utc>,
    ) -> Result<Subscription>;
    /// Fails with [`StoreError::NotFound`] for an unknown subscription.
    async fn add_subscription_discount(
        &self,
        tenant: Uuid,
        discount: &billing::SubscriptionDiscount,
    ) -> Result<()>;
    async fn subscription_discounts(
        &self,
        tenant: Uuid,
    ) -> Result<Vec<billing::SubscriptionDiscount>>;
}

/// The enrichment queue, the running totals and the ledger it writes, and the revenue read from them.
#[async_trait]
pub trait EnrichmentStore: Send + Sync {
    /// Claims up to `limit` events waiting for enrichment, oldest first.
    /// Events claimed by another enricher are skipped, never shared.
    async fn claim_enrichment(&self, limit: u32) -> Result<Box<dyn EnrichmentClaim>>;
    /// Puts a tenant's UNATTRIBUTED and UNMETERED events back in the queue
    /// (after a customer, subscription or catalog change). Returns how many.
    async fn requeue_waiting(&self, tenant: Uuid) -> Result<u64>;
    /// Events ready for enrichment and not yet enriched, in every tenant
    /// (parked UNATTRIBUTED and UNMETERED events not included).
    async fn enrichment_backlog(&self) -> Result<u64>;
    /// Revenue, cost and quantity by customer, meter and currency.
    async fn revenue(&self, tenant: Uuid, query: &RevenueQuery) -> Result<Vec<RevenueRow>>;
    /// The ledger rows of these events (a page of them), by event then meter.
    async fn ledger_of(&self, tenant: Uuid, events: &[Uuid]) -> Result<Vec<LedgerLine>>;
    /// Revenue and cost by hour of event time.
    async fn revenue_by_hour(&self, tenant: Uuid, query: &RevenueQuery) -> Result<Vec<HourRow>>;

    /// Every running total of a subscription.
    async fn running_totals_of(
        &self,
        tenant: Uuid,
        subscription: Uuid,
    ) -> Result<Vec<(enrichment::TotalKey, enrichment::TotalState)>>;
    /// Every running total of periods starting in `[from, to]`.
    async fn running_totals_between(
        &self,
        tenant: Uuid,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<(enrichment::TotalKey, enrichment::TotalState)>>;
}

/// What bill runs read and write: events by period, invoices and their lineage, run records, deliveries.
#[async_trait]
pub trait InvoiceStore: Send + Sync {
    // The bill run.

    /// Events of `customers` with event times in `[from, to)` stored at or
    /// before `stored_until` (the cut-off), in no particular order (the
    /// caller sorts: a sort in the database spilled to disk).
    async fn bill_events(
        &self,
        tenant: Uuid,
        customers: &[String],
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        stored_until: DateTime<Utc>,
    ) -> Result<Vec<billing::BillEvent>>;
    /// Numbers and writes invoices, each with its lineage and deliveries,
    /// in one transaction; a period already invoiced is left as it is.
    async fn settle_invoices(
        &self,
        tenant: Uuid,
        invoices: &[billing::NewInvoice],
    ) -> Result<Vec<billing::SettleOutcome>>;
    /// Invoices by number; `limit` 0 means all.
    async fn invoices(
        &self,
        tenant: Uuid,
        query: &billing::InvoiceQuery,
    ) -> Result<Vec<billing::StoredInvoice>>;
    async fn invoice(
        &self,
        tenant: Uuid,
        id_or_number: &str,
    ) -> Result<Option<billing::StoredInvoice>>;
    /// Every invoiced (subscription, period start): what a bill run checks
    /// before it loads any invoice.
    async fn invoiced_periods(&self, tenant: Uuid) -> Result<Vec<(Uuid, DateTime<Utc>)>>;
    /// The events behind an invoice line, in line order.
    async fn line_events(
        &self,
        tenant: Uuid,
        invoice: Uuid,
        line: u32,
    ) -> Result<Option<Vec<Uuid>>>;
    async fn record_bill_run(&self, run: &billing::BillRunRecord) -> Result<()>;
    /// The latest bill runs first.
    async fn bill_runs(&self, tenant: Uuid, limit: u32) -> Result<Vec<billing::BillRunRecord>>;
    /// Deliveries not yet made whose next attempt is due.
    async fn due_deliveries(
        &self,
        now: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<billing::Delivery>>;
    /// Records an attempt: delivered when `error` is `None`, else retried
    /// from `retry_at`.
    async fn finish_delivery(
        &self,
        id: Uuid,
        at: DateTime<Utc>,
        error: Option<&str>,
        retry_at: DateTime<Utc>,
    ) -> Result<()>;
}

/// Opens the store a URL names, running its migrations first:
/// `postgres://…` or `sqlite://PATH` (created when missing).
pub async fn open(url: &str) -> Result<Arc<dyn Store>> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(Arc::new(PgStore::connect(url).await?))
    } else if let Some(path) = url.strip_prefix("sqlite://") {
        Ok(Arc::new(SqliteStore::open(path).await?))
    } else {
        Err(StoreError::InvalidUrl(url.to_owned()))
    }
}

/// A fresh random validation key for a new tenant.
fn new_hmac_key() -> Vec<u8> {
    use rand::RngCore;
    let mut key = vec![0u8; 32];
    rand::rng().fill_bytes(&mut key);
    key
}
