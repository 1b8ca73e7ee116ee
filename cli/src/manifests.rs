//! `aforo standalone --manifests DIR`: the folder is the catalog. It is
//! applied at start (an invalid folder stops the start, naming every error)
//! and again whenever its content changes (an invalid change is logged and
//! the catalog in force stays).

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::time::Duration;

use aforo_billing::catalog::{ApplyError, CatalogApi};
use uuid::Uuid;

use crate::catalog::{manifest_files, read_manifests};

/// How often the folder is looked at.
const POLL: Duration = Duration::from_secs(2);

/// A fingerprint of the folder's manifests: names and contents.
fn fingerprint(dir: &Path) -> Option<u64> {
    let mut hasher = DefaultHasher::new();
    for file in manifest_files(dir).ok()? {
        file.hash(&mut hasher);
        std::fs::read(&file).ok()?.hash(&mut hasher);
    }
    Some(hasher.finish())
}

/// Applies the folder once; describes the outcome or every error.
pub async fn apply(catalog: &CatalogApi, tenant: Uuid, dir: &Path) -> anyhow::Result<String> {
    let documents = read_manifests(dir)?;
    let resources = CatalogApi::parse(documents).map_err(describe)?;
    let applied = catalog.apply(tenant, &resources).await.map_err(describe)?;
    let v = &applied.catalog.version;
    Ok(format!(
        "catalog version {} {} from {} ({})",
        v.version,
        if applied.catalog.created {
            "applied"
        } else {
            "unchanged"
        },
        dir.display(),
        v.content_hash
    ))
}

fn describe(err: ApplyError) -> anyhow::Error {
    match err {
        ApplyError::Invalid(errors) => anyhow::anyhow!(
            "the manifests are invalid; nothing was applied. {} errors:\n  {}",
            errors.len(),
            errors
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("\n  ")
        ),
        other => other.into(),
    }
}

/// Re-applies the folder whenever it changes, until the process ends.
pub fn watch(catalog: CatalogApi, tenant: Uuid, dir: PathBuf) {
    tokio::spawn(async move {
        let mut last = fingerprint(&dir);
        loop {
            tokio::time::sleep(POLL).await;
            let now = fingerprint(&dir);
            if now == last {
                continue;
            }
            last = now;
            match apply(&catalog, tenant, &dir).await {
                Ok(outcome) => tracing::info!("{outcome}"),
                Err(err) => tracing::error!("{err:#}"),
            }
        }
    });
}
