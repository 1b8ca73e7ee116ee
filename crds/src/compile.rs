//! The catalog compiler: a set of resources → one validated, canonically
//! encoded, content-hashed, effective-dated snapshot.
//!
//! The snapshot is what billing prices with. Its canonical JSON (keys
//! sorted, no whitespace) is hashed with SHA-256, so identical content has
//! an identical hash whatever order the manifests came in, and applying it
//! again changes nothing.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::canonical;
use crate::catalog::*;
use crate::validate::{CatalogError, validate};

/// Everything billing needs from the catalog, by resource name.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CatalogSnapshot {
    pub meters: BTreeMap<String, MeterSpec>,
    pub products: BTreeMap<String, ProductSpec>,
    pub rate_plans: BTreeMap<String, RatePlanSpec>,
    pub webhook_sources: BTreeMap<String, WebhookSourceSpec>,
    pub usage_alerts: BTreeMap<String, UsageAlertSpec>,
}

impl CatalogSnapshot {
    /// The meters that take events of `event_type`.
    pub fn meters_for<'a>(
        &'a self,
        event_type: &'a str,
    ) -> impl Iterator<Item = (&'a String, &'a MeterSpec)> {
        self.meters
            .iter()
            .filter(move |(_, m)| m.event_type == event_type)
    }

    /// The canonical encoding that is stored and hashed.
    pub fn canonical_json(&self) -> String {
        canonical::to_string(&serde_json::to_value(self).unwrap_or_default())
    }

    /// `sha256:` and the hex SHA-256 of the canonical encoding.
    pub fn content_hash(&self) -> String {
        format!(
            "sha256:{}",
            hex::encode(Sha256::digest(self.canonical_json()))
        )
    }

    /// When this catalog can first be in force: the latest `effectiveFrom`
    /// of its rate plans (a catalog cannot price with a plan not yet valid).
    pub fn effective_from(&self) -> Option<DateTime<Utc>> {
        self.rate_plans
            .values()
            .filter_map(|p| DateTime::parse_from_rfc3339(&p.effective_from).ok())
            .map(|t| t.with_timezone(&Utc))
            .max()
    }
}

/// A compiled catalog, ready to store.
#[derive(Clone, Debug)]
pub struct Compiled {
    pub snapshot: CatalogSnapshot,
    pub canonical_json: String,
    pub content_hash: String,
    pub effective_from: Option<DateTime<Utc>>,
    /// Resources that are not catalog (MeteringPipelines), by name.
    pub skipped: Vec<String>,
}

/// Validates and compiles. With `previous` (the catalog in force), a rate
/// plan whose terms changed must take effect after its previous version did:
/// a price change never rewrites the past.
pub fn compile(
    resources: &[Resource],
    previous: Option<&CatalogSnapshot>,
) -> Result<Compiled, Vec<CatalogError>> {
    let mut errors = validate(resources);
    let mut snapshot = CatalogSnapshot::default();
    let mut skipped = Vec::new();
    for resource in resources {
        let name = resource.name().to_owned();
        match resource {
            Resource::Meter(r) => {
                snapshot.meters.insert(name, r.spec.clone());
            }
            Resource::Product(r) => {
                snapshot.products.insert(name, r.spec.clone());
            }
            Resource::RatePlan(r) => {
                snapshot.rate_plans.insert(name, r.spec.clone());
            }
            Resource::WebhookSource(r) => {
                snapshot.webhook_sources.insert(name, r.spec.clone());
            }
            Resource::UsageAlert(r) => {
                snapshot.usage_alerts.insert(name, r.spec.clone());
            }
            Resource::MeteringPipeline(_) => skipped.push(format!("MeteringPipeline/{name}")),
        }
    }
    if let Some(previous) = previous {
        for (name, plan) in &snapshot.rate_plans {
            let Some(old) = previous.rate_plans.get(name).filter(|old| *old != plan) else {
                continue;
            };
            let parse = |t: &str| DateTime::parse_from_rfc3339(t).ok();
            if let (Some(new_from), Some(old_from)) =
                (parse(&plan.effective_from), parse(&old.effective_from))
                && new_from <= old_from
            {
                errors.push(CatalogError {
                        kind: "RatePlan".into(),
                        name: name.clone(),
                        field: "spec.effectiveFrom".into(),
                        message: format!(
                            "the plan changed but takes effect at {}, not after its previous version ({}); \
                             a price change cannot rewrite the past: set a later effectiveFrom",
                            plan.effective_from, old.effective_from
                        ),
                    });
            }
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(Compiled {
        canonical_json: snapshot.canonical_json(),
        content_hash: snapshot.content_hash(),
        effective_from: snapshot.effective_from(),
        snapshot,
        skipped,
    })
}
