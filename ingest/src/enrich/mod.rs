//! The `enrich` role: billing context and exact revenue for every event.
//!
//! An [`Enricher`] claims a batch of pending events from the store's queue
//! (several enrichers share it; none sees another's events), loads what the
//! batch's tenants need (catalog versions, the customers' subscriptions)
//! through the context cache, resolves each event ([`resolve`], pure) and
//! completes the claim: running totals are locked once per key, each
//! event's revenue is `price(total after) − price(total before)`, and the
//! ledger, the totals and the events' marks commit together. Events without
//! a customer, subscription or meter are marked UNATTRIBUTED or UNMETERED
//! (after a second look that bypasses the cache) and go back in the queue
//! when one of those appears.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use aforo_store::context::ContextCache;
use aforo_store::enrichment::EnrichmentState;
use aforo_store::{Store, StoreError};
use uuid::Uuid;

pub use aforo_core::resolve;
use aforo_core::resolve::{CatalogAt, TenantContext, resolve};

/// Parsed catalog versions an enricher keeps (every tenant's recent ones).
const PARSED_VERSIONS: u64 = 1_000;

pub struct Enricher {
    store: Arc<dyn Store>,
    cache: Arc<ContextCache>,
    /// Parsed catalog versions, by tenant and number: versions never change.
    parsed: moka::sync::Cache<(Uuid, i64), Arc<CatalogAt>>,
    batch: u32,
    idle: Duration,
}

impl Enricher {
    pub fn new(store: Arc<dyn Store>, cache: Arc<ContextCache>, batch: u32) -> Self {
        Enricher {
            store,
            cache,
            parsed: moka::sync::Cache::new(PARSED_VERSIONS),
            batch,
            idle: Duration::from_millis(200),
        }
    }

    /// A tenant's context, from the cache or (`fresh`) from the store.
    async fn context(
        &self,
        tenant: Uuid,
        customers: &BTreeSet<String>,
        fresh: bool,
    ) -> Result<TenantContext, StoreError> {
        let store = self.store.as_ref();
        let versions = if fresh {
            store.catalog_versions(tenant).await?
        } else {
            self.cache.catalog_versions(store, tenant).await?
        };
        let mut catalogs = Vec::new();
        for v in versions.into_iter().rev() {
            let parsed = match self.parsed.get(&(tenant, v.version)) {
                Some(parsed) => parsed,
                None => {
                    let snapshot = serde_json::from_str(&v.snapshot).map_err(|e| {
                        StoreError::Corrupt(format!("catalog version {}: {e}", v.version))
                    })?;
                    let parsed = Arc::new(CatalogAt::new(v.version, v.effective_from, snapshot));
                    self.parsed.insert((tenant, v.version), parsed.clone());
                    parsed
                }
            };
            catalogs.push(parsed);
        }
        let mut subscriptions = HashMap::new();
        for customer in customers {
            let subs = if fresh {
                store.subscriptions(tenant, Some(customer)).await?
            } else {
                self.cache.subscriptions(store, tenant, customer).await?
            };
            subscriptions.insert(customer.clone(), subs);
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
            contexts.insert(*tenant, self.context(*tenant, names, false).await?);
        }
        let mut outcomes: Vec<_> = events
            .iter()
            .map(|e| resolve(e, &contexts[&e.tenant]))
            .collect();
        // Before an event is set aside as UNATTRIBUTED or UNMETERED, make
        // sure a stale cache entry is not the reason: ask the store.
        let doubtful: BTreeSet<Uuid> = outcomes
            .iter()
            .zip(events)
            .filter(|(o, _)| o.state != EnrichmentState::Enriched)
            .map(|(_, e)| e.tenant)
            .collect();
        for tenant in doubtful {
            let fresh = self.context(tenant, &customers[&tenant], true).await?;
            for (outcome, event) in outcomes.iter_mut().zip(events) {
                if event.tenant == tenant && outcome.state != EnrichmentState::Enriched {
                    *outcome = resolve(event, &fresh);
                }
            }
        }
        let n = events.len();
        // A span per traced request whose events are in this batch, in the
        // request's trace: one trace shows an event from its request through
        // its commit to its enrichment.
        let mut traced: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
        for (event, outcome) in events.iter().zip(&outcomes) {
            if let Some(parent) = event.trace_parent.as_deref() {
                let (all, enriched) = traced.entry(parent).or_default();
                *all += 1;
                *enriched += usize::from(outcome.state == EnrichmentState::Enriched);
            }
        }
        let spans: Vec<tracing::Span> = traced
            .into_iter()
            .map(|(parent, (all, enriched))| {
                let span = tracing::info_span!("enrich", events = all, enriched, batch = n);
                aforo_api::host::continue_trace(&span, parent);
                span
            })
            .collect();
        // Open from here until the ledger is written (a span's time runs
        // from its creation to its drop; none is entered across the await).
        let written = claim.complete(outcomes).await;
        drop(spans);
        written?;
        Ok(n)
    }

    /// Enriches until nothing is left to enrich: a claim finds nothing and
    /// the store's backlog is empty (while another enricher holds a shard
    /// with events in it, or a transaction in flight holds events back, it
    /// waits and tries again). The first failed batch ends the drain with
    /// its error; the batch stays queued for the next run. Returns how many
    /// events this enricher took.
    pub async fn drain(&self) -> Result<u64, StoreError> {
        let mut taken = 0u64;
        loop {
            let n = self.run_once().await?;
            taken += n as u64;
            if n == 0 {
                if self.store.enrichment_backlog().await? == 0 {
                    return Ok(taken);
                }
                tokio::time::sleep(self.idle / 4).await;
            }
        }
    }

    /// Enriches until `stop` says so, resting when the queue is empty and
    /// backing off when the store is away.
    pub async fn run(self, mut stop: tokio::sync::watch::Receiver<bool>) {
        // After a failure: from twice the idle rest up to 10 s, with jitter,
        // so that enrichers that lost the store together do not return to
        // it in step; any success starts over.
        let retries = || {
            use backon::BackoffBuilder;
            backon::ExponentialBuilder::default()
                .with_min_delay(self.idle * 2)
                .with_max_delay(Duration::from_secs(10))
                .with_jitter()
                .without_max_times()
                .build()
        };
        let mut backoff = retries();
        loop {
            let rest = match self.run_once().await {
                Ok(taken) => {
                    backoff = retries();
                    if taken == 0 {
                        self.idle
                    } else {
                        Duration::ZERO
                    }
                }
                Err(err) => {
                    let wait = backoff.next().unwrap_or(Duration::from_secs(10));
                    tracing::warn!(error = %err, ?wait, "enrichment failed; the batch stays queued");
                    wait
                }
            };
            if !rest.is_zero() {
                tokio::select! {
                    _ = tokio::time::sleep(rest) => {}
                    _ = stop.wait_for(|s| *s) => return,
                }
            } else if *stop.borrow() {
                return;
            }
        }
    }
}
