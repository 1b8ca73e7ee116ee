//! Applying catalogs: all or nothing, identical content writes nothing.

use std::sync::Arc;

use aforo_crds::catalog::Resource;
use aforo_crds::compile::{CatalogSnapshot, compile};
use aforo_crds::validate::CatalogError;
use aforo_store::cache::CatalogCache;
use aforo_store::{AppliedCatalog, CatalogVersion, NewCatalogVersion, Store, StoreError};
use uuid::Uuid;

#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("the catalog is invalid ({} errors); nothing was applied", .0.len())]
    Invalid(Vec<CatalogError>),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The outcome of an apply.
#[derive(Debug)]
pub struct Applied {
    pub catalog: AppliedCatalog,
    pub skipped: Vec<String>,
}

/// The catalog API, shared by REST, gRPC and the manifests folder.
#[derive(Clone)]
pub struct CatalogApi {
    store: Arc<dyn Store>,
    cache: Arc<CatalogCache>,
}

impl CatalogApi {
    /// The API over `store`, reading the catalog in force through `cache`
    /// (which, like every cache of the store's data, follows the store's
    /// changes: an apply here invalidates nothing by hand).
    pub fn new(store: Arc<dyn Store>, cache: Arc<CatalogCache>) -> Self {
        CatalogApi { store, cache }
    }

    /// Reads resources from their JSON forms; every unreadable one is an error.
    pub fn parse(values: Vec<(String, serde_json::Value)>) -> Result<Vec<Resource>, ApplyError> {
        let mut resources = Vec::new();
        let mut errors = Vec::new();
        for (origin, value) in values {
            match Resource::from_value(value, &origin) {
                Ok(r) => resources.push(r),
                Err(e) => errors.push(e),
            }
        }
        if errors.is_empty() {
            Ok(resources)
        } else {
            Err(ApplyError::Invalid(errors))
        }
    }

    /// Validates and compiles `resources` against the version in force and,
    /// when the content changed, stores them as the next version.
    pub async fn apply(&self, tenant: Uuid, resources: &[Resource]) -> Result<Applied, ApplyError> {
        let previous = match self.store.catalog_version(tenant, None).await? {
            Some(v) => Some(
                serde_json::from_str::<CatalogSnapshot>(&v.snapshot).map_err(|e| {
                    StoreError::Corrupt(format!("catalog version {}: {e}", v.version))
                })?,
            ),
            None => None,
        };
        let compiled = compile(resources, previous.as_ref()).map_err(ApplyError::Invalid)?;
        let catalog = self
            .store
            .apply_catalog(
                tenant,
                &NewCatalogVersion {
                    content_hash: compiled.content_hash,
                    effective_from: compiled.effective_from,
                    snapshot: compiled.canonical_json,
                },
            )
            .await?;
        if catalog.created {
            // Events that waited for a meter get another try.
            self.store.requeue_waiting(tenant).await?;
            tracing::info!(
                %tenant,
                version = catalog.version.version,
                hash = %catalog.version.content_hash,
                "applied a new catalog version"
            );
        }
        Ok(Applied {
            catalog,
            skipped: compiled.skipped,
        })
    }

    pub async fn get(
        &self,
        tenant: Uuid,
        version: Option<i64>,
    ) -> Result<Option<CatalogVersion>, StoreError> {
        self.store.catalog_version(tenant, version).await
    }

    pub async fn list(&self, tenant: Uuid) -> Result<Vec<CatalogVersion>, StoreError> {
        self.store.catalog_versions(tenant).await
    }

    /// Whether `rate_plan` exists in the catalog in force.
    pub async fn has_rate_plan(&self, tenant: Uuid, rate_plan: &str) -> Result<bool, StoreError> {
        Ok(self
            .cache
            .latest(tenant)
            .await?
            .is_some_and(|c| c.snapshot.rate_plans.contains_key(rate_plan)))
    }
}
