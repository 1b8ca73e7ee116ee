//! The enrichment context cache: a tenant's catalog versions and each
//! customer's subscriptions, the lookups every enriched event needs.
//!
//! In production it is Redis (deadpool-redis), shared by every enricher; in
//! standalone an in-process cache (moka). Entries go when the store
//! announces a change to what they hold ([`crate::changes`]): the process
//! that wrote drops them (from Redis too) before its write returns, and the
//! other processes hear it through PostgreSQL. Entries also expire after a
//! TTL (10 minutes by default), the bound for a change that was missed.
//! When Redis is away, lookups fall back to the store and enrichment carries
//! on; the counters say how often.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use deadpool_redis::redis::AsyncCommands;
use serde::Serialize;
use serde::de::DeserializeOwned;
use uuid::Uuid;

use crate::changes::{Change, Changes};
use crate::{CatalogVersion, Result, Store, StoreError, Subscription};

/// The default lifetime of a cached entry.
pub const DEFAULT_TTL: Duration = Duration::from_secs(600);
/// How long a Redis call may take before the store is asked instead.
const REDIS_TIMEOUT: Duration = Duration::from_millis(250);

/// Entries an in-process cache keeps (customers' subscriptions, mostly).
const IN_PROCESS_ENTRIES: u64 = 200_000;

enum Backend {
    Memory(moka::sync::Cache<String, String>),
    Redis(deadpool_redis::Pool),
}

/// Hits, misses and fallbacks (Redis unreachable) since start.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheStats {
    pub hits: u64,
    pub misses: u64,
    pub fallbacks: u64,
}

pub struct ContextCache {
    backend: Backend,
    ttl: Duration,
    hits: AtomicU64,
    misses: AtomicU64,
    fallbacks: AtomicU64,
    /// Bumped by every change heard, so that a load that started before a
    /// change does not put back what the change dropped.
    generation: AtomicU64,
}

fn subscriptions_key(tenant: Uuid, customer: &str) -> String {
    format!("aforo:ctx:{tenant}:subscriptions:{customer}")
}

fn catalogs_key(tenant: Uuid) -> String {
    format!("aforo:ctx:{tenant}:catalogs")
}

impl ContextCache {
    /// An in-process cache following `changes` (the store's).
    pub fn in_process(changes: &Changes, ttl: Duration) -> Arc<Self> {
        let memory = moka::sync::Cache::builder()
            .max_capacity(IN_PROCESS_ENTRIES)
            .time_to_live(ttl)
            .build();
        Self::with(Backend::Memory(memory), ttl, changes)
    }

    /// A Redis-backed cache following `changes` (the store's). Connecting
    /// is lazy: a Redis that is down now only means fallbacks until it is up.
    pub fn redis(url: &str, ttl: Duration, changes: &Changes) -> Result<Arc<Self>> {
        let mut config = deadpool_redis::Config::from_url(url);
        let mut pool = deadpool_redis::PoolConfig::new(16);
        pool.timeouts.wait = Some(REDIS_TIMEOUT);
        pool.timeouts.create = Some(REDIS_TIMEOUT);
        pool.timeouts.recycle = Some(REDIS_TIMEOUT);
        config.pool = Some(pool);
        let pool = config
            .create_pool(Some(deadpool_redis::Runtime::Tokio1))
            .map_err(|e| StoreError::InvalidUrl(format!("{url}: {e}")))?;
        Ok(Self::with(Backend::Redis(pool), ttl, changes))
    }

    fn with(backend: Backend, ttl: Duration, changes: &Changes) -> Arc<Self> {
        let cache = Arc::new(ContextCache {
            backend,
            ttl,
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            fallbacks: AtomicU64::new(0),
            generation: AtomicU64::new(0),
        });
        let weak: Weak<ContextCache> = Arc::downgrade(&cache);
        changes.listen(move |change| {
            let weak = weak.clone();
            async move {
                if let Some(cache) = weak.upgrade() {
                    cache.forget(change).await;
                }
            }
        });
        cache
    }

    /// Drops what `change` made stale.
    async fn forget(&self, change: Change) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        match change {
            Change::Catalog { tenant } => self.remove(&catalogs_key(tenant)).await,
            Change::Customer { tenant, customer } => {
                self.remove(&subscriptions_key(tenant, &customer)).await
            }
            Change::Unknown => match &self.backend {
                Backend::Memory(memory) => memory.invalidate_all(),
                // Redis is shared: the process that wrote removed what its
                // write made stale before the write returned, so a change
                // this process missed left nothing stale there.
                Backend::Redis(_) => {}
            },
        }
    }

    pub fn stats(&self) -> CacheStats {
        CacheStats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            fallbacks: self.fallbacks.load(Ordering::Relaxed),
        }
    }

    /// `None`: not cached. `Err`: the cache is unreachable.
    async fn read(&self, key: &str) -> std::result::Result<Option<String>, ()> {
        match &self.backend {
            Backend::Memory(memory) => Ok(memory.get(key)),
            Backend::Redis(pool) => {
                let get = async {
                    let mut conn = pool.get().await.map_err(|_| ())?;
                    conn.get::<_, Option<String>>(key).await.map_err(|_| ())
                };
                tokio::time::timeout(REDIS_TIMEOUT, get)
                    .await
                    .map_err(|_| ())?
            }
        }
    }

    async fn write(&self, key: &str, value: String) {
        match &self.backend {
            Backend::Memory(memory) => memory.insert(key.to_owned(), value),
            Backend::Redis(pool) => {
                let set = async {
                    let mut conn = pool.get().await.map_err(|_| ())?;
                    conn.set_ex::<_, _, ()>(key, value, self.ttl.as_secs().max(1))
                        .await
                        .map_err(|_| ())
                };
                if !matches!(tokio::time::timeout(REDIS_TIMEOUT, set).await, Ok(Ok(()))) {
                    self.fallbacks.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }

    async fn remove(&self, key: &str) {
        match &self.backend {
            Backend::Memory(memory) => memory.invalidate(key),
            Backend::Redis(pool) => {
                let del = async {
                    let mut conn = pool.get().await.map_err(|_| ())?;
                    conn.del::<_, ()>(key).await.map_err(|_| ())
                };
                if !matches!(tokio::time::timeout(REDIS_TIMEOUT, del).await, Ok(Ok(()))) {
                    // The entry expires with its TTL; until then it may be stale.
                    self.fallbacks.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(
                        key,
                        "cannot invalidate a cached entry; it expires with its TTL"
                    );
                }
            }
        }
    }

    async fn get_or_load<T, F>(&self, key: &str, load: F) -> Result<T>
    where
        T: Serialize + DeserializeOwned,
        F: Future<Output = Result<T>>,
    {
        match self.read(key).await {
            Ok(Some(text)) => {
                if let Ok(value) = serde_json::from_str(&text) {
                    self.hits.fetch_add(1, Ordering::Relaxed);
                    return Ok(value);
                }
                self.misses.fetch_add(1, Ordering::Relaxed);
            }
            Ok(None) => {
                self.misses.fetch_add(1, Ordering::Relaxed);
            }
            Err(()) => {
                self.fallbacks.fetch_add(1, Ordering::Relaxed);
                return load.await;
            }
        }
        let generation = self.generation.load(Ordering::SeqCst);
        let value = load.await?;
        // A change heard while loading may have made the value stale.
        if self.generation.load(Ordering::SeqCst) == generation
            && let Ok(text) = serde_json::to_string(&value)
        {
            self.write(key, text).await;
        }
        Ok(value)
    }

    /// A customer's subscriptions, with their phases.
    pub async fn subscriptions(
        &self,
        store: &dyn Store,
        tenant: Uuid,
        customer: &str,
    ) -> Result<Vec<Subscription>> {
        self.get_or_load(
            &subscriptions_key(tenant, customer),
            store.subscriptions(tenant, Some(customer)),
        )
        .await
    }

    /// Every catalog version of a tenant, oldest first.
    pub async fn catalog_versions(
        &self,
        store: &dyn Store,
        tenant: Uuid,
    ) -> Result<Vec<CatalogVersion>> {
        self.get_or_load(&catalogs_key(tenant), store.catalog_versions(tenant))
            .await
    }
}
