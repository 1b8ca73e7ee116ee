//! The enrichment context cache: a tenant's catalog versions and each
//! customer's subscriptions, the lookups every enriched event needs.
//!
//! In production it is Redis (deadpool-redis), shared by every enricher and
//! invalidated by the billing role when a customer, subscription or catalog
//! changes; entries also expire after a TTL (10 minutes by default). In
//! standalone it is an in-process map. When Redis is away, lookups fall back
//! to the store and enrichment carries on; the counters say how often.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use deadpool_redis::redis::AsyncCommands;
use serde::Serialize;
use serde::de::DeserializeOwned;
use uuid::Uuid;

use crate::{CatalogVersion, Result, Store, StoreError, Subscription};

/// The default lifetime of a cached entry.
pub const DEFAULT_TTL: Duration = Duration::from_secs(600);
/// How long a Redis call may take before the store is asked instead.
const REDIS_TIMEOUT: Duration = Duration::from_millis(250);

enum Backend {
    Memory(Mutex<HashMap<String, (String, Instant)>>),
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
}

fn subscriptions_key(tenant: Uuid, customer: &str) -> String {
    format!("aforo:ctx:{tenant}:subscriptions:{customer}")
}

fn catalogs_key(tenant: Uuid) -> String {
    format!("aforo:ctx:{tenant}:catalogs")
}

impl ContextCache {
    pub fn in_process(ttl: Duration) -> Self {
        Self::with(Backend::Memory(Mutex::default()), ttl)
    }

    /// A Redis-backed cache. Connecting is lazy: a Redis that is down now
    /// only means fallbacks until it is up.
    pub fn redis(url: &str, ttl: Duration) -> Result<Self> {
        let mut config = deadpool_redis::Config::from_url(url);
        let mut pool = deadpool_redis::PoolConfig::new(16);
        pool.timeouts.wait = Some(REDIS_TIMEOUT);
        pool.timeouts.create = Some(REDIS_TIMEOUT);
        pool.timeouts.recycle = Some(REDIS_TIMEOUT);
        config.pool = Some(pool);
        let pool = config
            .create_pool(Some(deadpool_redis::Runtime::Tokio1))
            .map_err(|e| StoreError::InvalidUrl(format!("{url}: {e}")))?;
        Ok(Self::with(Backend::Redis(pool), ttl))
    }

    fn with(backend: Backend, ttl: Duration) -> Self {
        ContextCache {
            backend,
            ttl,
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            fallbacks: AtomicU64::new(0),
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
            Backend::Memory(map) => {
                let map = map.lock().unwrap_or_else(|e| e.into_inner());
                Ok(map
                    .get(key)
                    .filter(|(_, at)| at.elapsed() < self.ttl)
                    .map(|(v, _)| v.clone()))
            }
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
            Backend::Memory(map) => {
                let mut map = map.lock().unwrap_or_else(|e| e.into_inner());
                map.insert(key.to_owned(), (value, Instant::now()));
            }
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
            Backend::Memory(map) => {
                map.lock().unwrap_or_else(|e| e.into_inner()).remove(key);
            }
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
        let value = load.await?;
        if let Ok(text) = serde_json::to_string(&value) {
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

    pub async fn invalidate_customer(&self, tenant: Uuid, customer: &str) {
        self.remove(&subscriptions_key(tenant, customer)).await;
    }

    pub async fn invalidate_catalogs(&self, tenant: Uuid) {
        self.remove(&catalogs_key(tenant)).await;
    }
}
