//! The `enrich` role: billing context and exact revenue for every event.
//!
//! An [`Enricher`] claims a batch of pending events from the store's queue
//! (several enrichers share it; none sees another's events), loads what the
//! batch's tenants need (catalog versions, the customers' subscriptions),
//! resolves each event ([`resolve`], pure) and completes the claim: running
//! totals are locked once per key, each event's revenue is
//! `price(total after) − price(total before)`, and the ledger, the totals and
//! the events' marks commit together. Events without a customer, subscription
//! or meter are marked UNATTRIBUTED or UNMETERED and go back in the queue
//! when one of those appears.

pub mod resolve;

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use aforo_store::{Store, StoreError};
use uuid::Uuid;

use resolve::{CatalogAt, TenantContext, resolve};

pub struct Enricher {
    store: Arc<dyn Store>,
    batch: u32,
    idle: Duration,
}

impl Enricher {
    pub fn new(store: Arc<dyn Store>, batch: u32) -> Self {
        Enricher {
            store,
            batch,
            idle: Duration::from_millis(200),
        }
    }

    async fn context(
        &self,
        tenant: Uuid,
        customers: &BTreeSet<String>,
    ) -> Result<TenantContext, StoreError> {
        let mut catalogs = Vec::new();
        for v in self.store.catalog_versions(tenant).await?.into_iter().rev() {
            let snapshot = serde_json::from_str(&v.snapshot)
                .map_err(|e| StoreError::Corrupt(format!("catalog version {}: {e}", v.version)))?;
            catalogs.push(Arc::new(CatalogAt {
                version: v.version,
                effective_from: v.effective_from,
                snapshot,
            }));
        }
        let mut subscriptions = HashMap::new();
        for customer in customers {
            subscriptions.insert(
                customer.clone(),
                self.store.subscriptions(tenant, Some(customer)).await?,
            );
        }
        Ok(TenantContext {
            catalogs,
            subscriptions,
        })
    }

    /// Enriches one batch; returns how many events it took from the queue.
    pub async fn run_once(&self) -> Result<usize, StoreError> {
        let claim = self.store.claim_enrichment(self.batch).await?;
        let events = claim.events();
        if events.is_empty() {
            return Ok(0);
        }
        let mut customers: HashMap<Uuid, BTreeSet<String>> = HashMap::new();
        for e in events {
            customers
                .entry(e.tenant)
                .or_default()
                .insert(e.event.customer.clone());
        }
        let mut contexts = HashMap::new();
        for (tenant, names) in &customers {
            contexts.insert(*tenant, self.context(*tenant, names).await?);
        }
        let outcomes: Vec<_> = events
            .iter()
            .map(|e| resolve(e, &contexts[&e.tenant]))
            .collect();
        let n = events.len();
        claim.complete(outcomes).await?;
        Ok(n)
    }

    /// Enriches until `stop` says so, resting when the queue is empty and
    /// backing off when the store is away.
    pub async fn run(self, mut stop: tokio::sync::watch::Receiver<bool>) {
        let mut backoff = self.idle;
        loop {
            let rest = match self.run_once().await {
                Ok(0) => self.idle,
                Ok(_) => Duration::ZERO,
                Err(err) => {
                    tracing::warn!(error = %err, "enrichment failed; the batch stays queued");
                    backoff = (backoff * 2).min(Duration::from_secs(10));
                    backoff
                }
            };
            if !rest.is_zero() {
                tokio::select! {
                    _ = tokio::time::sleep(rest) => {}
                    _ = stop.wait_for(|s| *s) => return,
                }
            } else if *stop.borrow() {
                return;
            } else {
                backoff = self.idle;
            }
        }
    }
}
