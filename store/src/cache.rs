//! The catalog in force per tenant, read through from the store.
//!
//! Ingest asks for it once per batch (the schema gate checks each meter's
//! required properties), so it is cached in process. Entries expire after a
//! short TTL, so a separate `aforo ingest` process sees a new version within
//! that time; in one process the catalog API invalidates the entry at once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aforo_crds::compile::CatalogSnapshot;
use uuid::Uuid;

use crate::{Store, StoreError};

/// A stored catalog version, parsed.
#[derive(Debug)]
pub struct LoadedCatalog {
    pub version: i64,
    pub content_hash: String,
    pub snapshot: CatalogSnapshot,
}

type Entry = (Option<Arc<LoadedCatalog>>, Instant);

pub struct CatalogCache {
    store: Arc<dyn Store>,
    ttl: Duration,
    entries: Mutex<HashMap<Uuid, Entry>>,
}

impl CatalogCache {
    pub fn new(store: Arc<dyn Store>, ttl: Duration) -> Self {
        CatalogCache {
            store,
            ttl,
            entries: Mutex::default(),
        }
    }

    /// The latest catalog version of `tenant`, or `None` before the first apply.
    pub async fn latest(&self, tenant: Uuid) -> Result<Option<Arc<LoadedCatalog>>, StoreError> {
        if let Some((entry, at)) = self.lock().get(&tenant)
            && at.elapsed() < self.ttl
        {
            return Ok(entry.clone());
        }
        let loaded = match self.store.catalog_version(tenant, None).await? {
            Some(v) => Some(Arc::new(LoadedCatalog {
                snapshot: serde_json::from_str(&v.snapshot).map_err(|e| {
                    StoreError::Corrupt(format!("catalog version {}: {e}", v.version))
                })?,
                version: v.version,
                content_hash: v.content_hash,
            })),
            None => None,
        };
        self.lock().insert(tenant, (loaded.clone(), Instant::now()));
        Ok(loaded)
    }

    /// Forgets `tenant`'s entry: the next read goes to the store.
    pub fn invalidate(&self, tenant: Uuid) {
        self.lock().remove(&tenant);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, Entry>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }
}
