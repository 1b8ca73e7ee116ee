//! The catalog in force per tenant, read through from the store.
//!
//! Ingest asks for it once per batch (the schema gate checks each meter's
//! required properties), so it is cached in process. A version never
//! changes, so each is parsed once and kept (by tenant and version); which
//! version is in force is kept until the store announces a new one
//! ([`crate::changes`]: at once in this process, through PostgreSQL from the
//! others), or for the TTL at most.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use aforo_crds::compile::CatalogSnapshot;
use moka::sync::Cache;
use uuid::Uuid;

use crate::changes::Change;
use crate::{Store, StoreError};

/// Tenants whose catalog in force is kept.
const TENANTS: u64 = 10_000;
/// Parsed versions kept (every tenant's recent ones).
const VERSIONS: u64 = 1_000;

/// A stored catalog version, parsed.
#[derive(Debug)]
pub struct LoadedCatalog {
    pub version: i64,
    pub content_hash: String,
    pub snapshot: CatalogSnapshot,
}

pub struct CatalogCache {
    store: Arc<dyn Store>,
    /// The version in force per tenant; `None` before the first apply.
    latest: Cache<Uuid, Option<Arc<LoadedCatalog>>>,
    /// Parsed versions, by tenant and version: immutable.
    versions: Cache<(Uuid, i64), Arc<LoadedCatalog>>,
    /// Bumped by every change heard, so that a read that started before a
    /// change does not put back what the change dropped.
    generation: AtomicU64,
}

impl CatalogCache {
    /// A cache of `store`'s catalogs that follows its changes; `ttl` bounds
    /// how long a missed change can go unseen.
    pub fn new(store: Arc<dyn Store>, ttl: Duration) -> Arc<Self> {
        let cache = Arc::new(CatalogCache {
            latest: Cache::builder()
                .max_capacity(TENANTS)
                .time_to_live(ttl)
                .build(),
            versions: Cache::builder().max_capacity(VERSIONS).build(),
            generation: AtomicU64::new(0),
            store: store.clone(),
        });
        let weak: Weak<CatalogCache> = Arc::downgrade(&cache);
        store.changes().listen(move |change| {
            if let Some(cache) = weak.upgrade() {
                cache.forget(&change);
            }
            async {}
        });
        cache
    }

    fn forget(&self, change: &Change) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        match change {
            Change::Catalog { tenant } => self.latest.invalidate(tenant),
            Change::Unknown => self.latest.invalidate_all(),
            Change::Customer { .. } => {}
        }
    }

    /// The latest catalog version of `tenant`, or `None` before the first apply.
    pub async fn latest(&self, tenant: Uuid) -> Result<Option<Arc<LoadedCatalog>>, StoreError> {
        if let Some(entry) = self.latest.get(&tenant) {
            return Ok(entry);
        }
        let generation = self.generation.load(Ordering::SeqCst);
        let loaded = match self.store.catalog_version(tenant, None).await? {
            Some(v) => Some(match self.versions.get(&(tenant, v.version)) {
                Some(parsed) => parsed,
                None => {
                    let parsed = Arc::new(LoadedCatalog {
                        snapshot: serde_json::from_str(&v.snapshot).map_err(|e| {
                            StoreError::Corrupt(format!("catalog version {}: {e}", v.version))
                        })?,
                        version: v.version,
                        content_hash: v.content_hash,
                    });
                    self.versions.insert((tenant, v.version), parsed.clone());
                    parsed
                }
            }),
            None => None,
        };
        if self.generation.load(Ordering::SeqCst) == generation {
            self.latest.insert(tenant, loaded.clone());
        }
        Ok(loaded)
    }
}
