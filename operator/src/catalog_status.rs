//! The status of catalog resources. A namespace's catalog is one unit (it
//! compiles and applies all or nothing), so this controller's key is the
//! namespace: any change of a catalog resource or pipeline there
//! recomputes every resource's status, and writes those that differ.
//!
//! Conditions it writes on each Meter, Product, RatePlan, WebhookSource and
//! UsageAlert:
//!
//! | type | True when | False reasons |
//! |---|---|---|
//! | `Valid` | semantic validation finds nothing in it | `Invalid` (the message names each field) |
//! | `Applied` | every pipeline of the namespace has the catalog that includes it in force | `Invalid`, `CatalogInvalid` (another resource is invalid), `NoPipeline`, `Pending`, or the pipeline's `CatalogApplied` reason |
//! | `Ready` | both | the first failing one's |
//! | `Reconciling` | (only while true) waiting for a pipeline to apply it | |
//! | `Stalled` | (only while true) it, or the namespace's catalog, needs a fix | |

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aforo_crds::catalog::{
    CatalogStatus, Meter, MeteringPipeline, Product, RatePlan, Resource, UsageAlert, WebhookSource,
};
use aforo_crds::validate::{CatalogError, validate};
use futures::StreamExt;
use k8s_openapi::api::core::v1::ObjectReference;
use kube::api::{Api, ApiResource, DynamicObject, ListParams, Patch, PatchParams};
use kube::runtime::events::{Event, EventType, Recorder};
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use serde::de::DeserializeOwned;
use serde_json::json;
use tokio::sync::{mpsc, watch};

use crate::build::MANAGER;
use crate::catalog;
use crate::conditions::{self, Desired, RECONCILING, STALLED};
use crate::metrics::Metrics;
use crate::pipeline::CATALOG_APPLIED;
use crate::{Error, paused};

pub const VALID: &str = "Valid";
pub const APPLIED: &str = "Applied";

/// What each namespace's pass needs.
pub struct Context {
    pub client: Client,
    pub metrics: Arc<Metrics>,
    pub recorder: Recorder,
}

/// What one pipeline says about the catalog it has in force.
#[derive(Clone, Debug)]
pub struct PipelineCatalog {
    pub name: String,
    pub version: Option<i64>,
    pub hash: Option<String>,
    /// Its `CatalogApplied` condition when False: (reason, message).
    pub failure: Option<(String, String)>,
}

/// A resource's status, decided.
#[derive(Clone, Debug, PartialEq)]
pub struct Decided {
    pub desired: Vec<Desired>,
    pub version: Option<i64>,
    pub hash: Option<String>,
}

/// Decides each resource's conditions (pure): `errors` from validating the
/// namespace, `hash` of its compiled catalog when valid, and what its
/// pipelines have in force. Keyed by (kind, name).
pub fn decide(
    resources: &[Resource],
    errors: &[CatalogError],
    hash: Option<&str>,
    pipelines: &[PipelineCatalog],
    namespace: &str,
) -> BTreeMap<(String, String), Decided> {
    let invalid: BTreeSet<String> = errors
        .iter()
        .map(|e| format!("{}/{}", e.kind, e.name))
        .collect();
    let mut out = BTreeMap::new();
    for resource in resources {
        let own: Vec<String> = errors
            .iter()
            .filter(|e| e.kind == resource.kind() && e.name == resource.name())
            .map(|e| {
                if e.field.is_empty() {
                    e.message.clone()
                } else {
                    format!("{}: {}", e.field, e.message)
                }
            })
            .collect();
        let valid = if own.is_empty() {
            Desired::true_(VALID, "Valid", "semantic validation found no error")
        } else {
            Desired::false_(VALID, "Invalid", own.join("; "))
        };
        let mut version = None;
        let mut applied_hash = None;
        let applied = if !own.is_empty() {
            Desired::false_(APPLIED, "Invalid", "not applied: this resource is invalid")
        } else if !invalid.is_empty() {
            Desired::false_(
                APPLIED,
                "CatalogInvalid",
                format!(
                    "not applied: the namespace's catalog has errors in {}; the catalog in force is unchanged",
                    invalid.iter().cloned().collect::<Vec<_>>().join(", ")
                ),
            )
        } else if pipelines.is_empty() {
            Desired::false_(
                APPLIED,
                "NoPipeline",
                format!("no MeteringPipeline in namespace {namespace} applies the catalog"),
            )
        } else if let Some(behind) = pipelines.iter().find(|p| p.hash.as_deref() != hash) {
            match &behind.failure {
                Some((reason, message)) => Desired::false_(
                    APPLIED,
                    reason,
                    format!("MeteringPipeline/{}: {message}", behind.name),
                ),
                None => Desired::false_(
                    APPLIED,
                    "Pending",
                    format!(
                        "waiting for MeteringPipeline/{} to apply the catalog",
                        behind.name
                    ),
                ),
            }
        } else {
            let first = &pipelines[0];
            version = first.version;
            applied_hash = first.hash.clone();
            Desired::true_(
                APPLIED,
                "Applied",
                format!(
                    "in catalog version {} ({}) of {}",
                    first.version.unwrap_or_default(),
                    first.hash.as_deref().unwrap_or_default(),
                    pipelines
                        .iter()
                        .map(|p| format!("MeteringPipeline/{}", p.name))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            )
        };
        let mut desired = vec![conditions::ready(
            &[valid.clone(), applied.clone()],
            "valid and in force",
        )];
        // kstatus: a fix is needed (Stalled), or the catalog is on its way
        // (Reconciling).
        let progress = if !valid.status {
            Some(Desired::true_(STALLED, "Invalid", valid.message.clone()))
        } else if applied.status {
            None
        } else if waiting(&applied.reason) {
            Some(Desired::true_(
                RECONCILING,
                &applied.reason,
                applied.message.clone(),
            ))
        } else {
            Some(Desired::true_(
                STALLED,
                &applied.reason,
                applied.message.clone(),
            ))
        };
        desired.push(valid);
        desired.push(applied);
        desired.extend(progress);
        out.insert(
            (resource.kind().to_owned(), resource.name().to_owned()),
            Decided {
                desired,
                version,
                hash: applied_hash,
            },
        );
    }
    out
}

/// Reasons that clear up without anyone's action: a pipeline still to
/// apply the catalog, or its catalog API still unreachable.
fn waiting(reason: &str) -> bool {
    matches!(reason, "Pending" | "NoPipeline" | "CatalogApiUnavailable")
}

fn status(resource: &Resource) -> CatalogStatus {
    match resource {
        Resource::Meter(r) => r.status.clone(),
        Resource::Product(r) => r.status.clone(),
        Resource::RatePlan(r) => r.status.clone(),
        Resource::WebhookSource(r) => r.status.clone(),
        Resource::UsageAlert(r) => r.status.clone(),
        Resource::MeteringPipeline(_) => None,
    }
    .unwrap_or_default()
}

fn api_resource(resource: &Resource) -> ApiResource {
    match resource {
        Resource::Meter(_) => ApiResource::erase::<Meter>(&()),
        Resource::Product(_) => ApiResource::erase::<Product>(&()),
        Resource::RatePlan(_) => ApiResource::erase::<RatePlan>(&()),
        Resource::WebhookSource(_) => ApiResource::erase::<WebhookSource>(&()),
        Resource::UsageAlert(_) => ApiResource::erase::<UsageAlert>(&()),
        Resource::MeteringPipeline(_) => ApiResource::erase::<MeteringPipeline>(&()),
    }
}

/// Recomputes and writes the status of every catalog resource of `namespace`.
pub async fn reconcile_namespace(namespace: &str, ctx: &Context) -> Result<(), Error> {
    let resources = catalog::resources(&ctx.client, namespace).await?;
    let pipelines: Vec<PipelineCatalog> =
        Api::<MeteringPipeline>::namespaced(ctx.client.clone(), namespace)
            .list(&ListParams::default())
            .await?
            .items
            .into_iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .map(|p| {
                let status = p.status.clone().unwrap_or_default();
                PipelineCatalog {
                    name: p.name_any(),
                    version: status.catalog_version,
                    hash: status.catalog_hash.clone(),
                    failure: status
                        .conditions
                        .iter()
                        .find(|c| c.type_ == CATALOG_APPLIED && c.status == "False")
                        .map(|c| (c.reason.clone(), c.message.clone())),
                }
            })
            .collect();
    let errors = validate(&resources);
    let hash = if errors.is_empty() {
        catalog::compile_namespace(&resources)
            .ok()
            .map(|c| c.content_hash)
    } else {
        None
    };
    let decided = decide(&resources, &errors, hash.as_deref(), &pipelines, namespace);
    let now = conditions::now();
    for resource in &resources {
        let meta = resource.meta();
        if paused(meta) {
            continue;
        }
        let Some(decided) = decided.get(&(resource.kind().to_owned(), resource.name().to_owned()))
        else {
            continue;
        };
        let previous = status(resource);
        let next = CatalogStatus {
            observed_generation: meta.generation,
            conditions: conditions::settle(
                &previous.conditions,
                &decided.desired,
                meta.generation,
                &now,
            ),
            catalog_version: decided.version.or(previous.catalog_version),
            catalog_hash: decided.hash.clone().or(previous.catalog_hash.clone()),
        };
        if next == previous {
            continue;
        }
        let api = Api::<DynamicObject>::namespaced_with(
            ctx.client.clone(),
            namespace,
            &api_resource(resource),
        );
        let patch = json!({
            "apiVersion": api_resource(resource).api_version,
            "kind": resource.kind(),
            "status": next,
        });
        api.patch_status(
            resource.name(),
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(&patch),
        )
        .await?;
        ctx.metrics.write(resource.kind(), "status");
        let was_valid = conditions::is_true(&previous.conditions, crate::catalog_status::VALID);
        let valid = decided.desired.iter().any(|d| d.type_ == VALID && d.status);
        let reference = ObjectReference {
            api_version: Some(api_resource(resource).api_version),
            kind: Some(resource.kind().to_owned()),
            name: Some(resource.name().to_owned()),
            namespace: Some(namespace.to_owned()),
            uid: meta.uid.clone(),
            resource_version: meta.resource_version.clone(),
            ..ObjectReference::default()
        };
        if !valid && (was_valid || previous.conditions.is_empty()) {
            let message = decided
                .desired
                .iter()
                .find(|d| d.type_ == VALID)
                .map(|d| d.message.clone())
                .unwrap_or_default();
            record(ctx, &reference, EventType::Warning, "Invalid", &message).await;
        }
        if decided.version.is_some() && decided.version != previous.catalog_version {
            record(
                ctx,
                &reference,
                EventType::Normal,
                "Applied",
                &format!(
                    "in force in catalog version {}",
                    decided.version.unwrap_or_default()
                ),
            )
            .await;
        }
    }
    Ok(())
}

async fn record(
    ctx: &Context,
    reference: &ObjectReference,
    type_: EventType,
    reason: &str,
    note: &str,
) {
    let event = Event {
        type_,
        reason: reason.into(),
        note: Some(conditions::truncate(note, 1000)),
        action: "Validate".into(),
        secondary: None,
    };
    match ctx.recorder.publish(&event, reference).await {
        Ok(()) => ctx.metrics.write("Event", "create"),
        Err(e) => tracing::warn!(error = %e, "cannot record an event"),
    }
}

/// Namespaces touched by changes of `K`: its creation, deletion, or a new
/// generation (a spec change), not its own status writes. `all_changes`
/// passes status changes too (pipelines: their catalog version).
async fn namespaces_of<K>(api: Api<K>, all_changes: bool, out: mpsc::UnboundedSender<String>)
where
    K: kube::Resource + Clone + DeserializeOwned + std::fmt::Debug + Send + 'static,
{
    let mut seen: BTreeMap<String, (Option<i64>, Option<String>)> = BTreeMap::new();
    let mut events = std::pin::pin!(watcher(api, watcher::Config::default()));
    while let Some(event) = events.next().await {
        let (object, deleted) = match event {
            Ok(watcher::Event::Apply(o) | watcher::Event::InitApply(o)) => (o, false),
            Ok(watcher::Event::Delete(o)) => (o, true),
            Ok(watcher::Event::Init | watcher::Event::InitDone) => continue,
            Err(e) => {
                tracing::warn!(error = %e, "watch failed; it restarts");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        let uid = object.meta().uid.clone().unwrap_or_default();
        let namespace = object.meta().namespace.clone().unwrap_or_default();
        let key = (
            object.meta().generation,
            all_changes
                .then(|| object.meta().resource_version.clone())
                .flatten(),
        );
        let changed = if deleted {
            seen.remove(&uid);
            true
        } else {
            seen.insert(uid, key.clone()).as_ref() != Some(&key)
        };
        if changed && out.send(namespace).is_err() {
            return;
        }
    }
}

/// Runs the controller until `stop` turns true.
pub async fn run(ctx: Arc<Context>, scope: Option<String>, mut stop: watch::Receiver<bool>) {
    let (tx, mut rx) = mpsc::unbounded_channel::<String>();
    let client = ctx.client.clone();
    fn api<K>(client: &Client, scope: &Option<String>) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
    {
        match scope {
            Some(ns) => Api::namespaced(client.clone(), ns),
            None => Api::all(client.clone()),
        }
    }
    let watchers = vec![
        tokio::spawn(namespaces_of(
            api::<Meter>(&client, &scope),
            false,
            tx.clone(),
        )),
        tokio::spawn(namespaces_of(
            api::<Product>(&client, &scope),
            false,
            tx.clone(),
        )),
        tokio::spawn(namespaces_of(
            api::<RatePlan>(&client, &scope),
            false,
            tx.clone(),
        )),
        tokio::spawn(namespaces_of(
            api::<WebhookSource>(&client, &scope),
            false,
            tx.clone(),
        )),
        tokio::spawn(namespaces_of(
            api::<UsageAlert>(&client, &scope),
            false,
            tx.clone(),
        )),
        tokio::spawn(namespaces_of(
            api::<MeteringPipeline>(&client, &scope),
            true,
            tx.clone(),
        )),
    ];
    let mut retry: BTreeMap<String, tokio::time::Instant> = BTreeMap::new();
    loop {
        let next_retry = retry.values().min().copied();
        let first = tokio::select! {
            ns = rx.recv() => match ns { Some(ns) => Some(ns), None => break },
            _ = async { match next_retry {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            } } => None,
            _ = stop.wait_for(|s| *s) => break,
        };
        // Take every namespace waiting, so a burst is one pass each.
        let mut pending: BTreeSet<String> = first.into_iter().collect();
        while let Ok(ns) = rx.try_recv() {
            pending.insert(ns);
        }
        let now = tokio::time::Instant::now();
        let due: Vec<String> = retry
            .iter()
            .filter(|(_, at)| **at <= now)
            .map(|(ns, _)| ns.clone())
            .collect();
        for ns in due {
            retry.remove(&ns);
            pending.insert(ns);
        }
        for namespace in pending {
            let started = Instant::now();
            let result = reconcile_namespace(&namespace, &ctx).await;
            ctx.metrics
                .reconciled("catalog", result.is_ok(), started.elapsed());
            if let Err(e) = result {
                tracing::warn!(%namespace, error = %e, "catalog status failed; retrying");
                retry.insert(
                    namespace,
                    tokio::time::Instant::now() + Duration::from_secs(5),
                );
            }
        }
    }
    for w in watchers {
        w.abort();
    }
}

#[cfg(test)]
mod tests {
    use aforo_crds::catalog::{Resource, yaml_documents};

    use super::*;

    fn resources(yaml: &str) -> Vec<Resource> {
        yaml_documents(yaml, "test")
            .expect("YAML")
            .into_iter()
            .map(|(origin, v)| Resource::from_value(v, &origin).expect("a resource"))
            .collect()
    }

    const CATALOG: &str = r#"
apiVersion: aforo.io/v1alpha1
kind: Meter
metadata: {name: calls}
spec: {eventType: api.call, aggregation: COUNT}
---
apiVersion: aforo.io/v1alpha1
kind: Product
metadata: {name: api}
spec: {displayName: API, meters: [calls]}
---
apiVersion: aforo.io/v1alpha1
kind: RatePlan
metadata: {name: pro}
spec:
  productRef: api
  currency: EUX
  billingPeriod: MONTHLY
  effectiveFrom: "2026-01-01T00:00:00Z"
  charges: [{meter: calls, perUnit: {unitPrice: "0.01"}}]
"#;

    fn condition<'a>(decided: &'a Decided, type_: &str) -> &'a Desired {
        decided
            .desired
            .iter()
            .find(|d| d.type_ == type_)
            .unwrap_or_else(|| panic!("no {type_} in {decided:?}"))
    }

    #[test]
    fn an_invalid_rate_plan_is_not_ready_and_its_message_names_the_field() {
        let resources = resources(CATALOG);
        let errors = validate(&resources);
        let decided = decide(&resources, &errors, None, &[], "shop");
        let plan = &decided[&("RatePlan".to_owned(), "pro".to_owned())];
        let ready = condition(plan, "Ready");
        assert!(!ready.status);
        assert_eq!(ready.reason, "Invalid");
        assert!(
            ready
                .message
                .contains("spec.currency: \"EUX\" is not a known ISO 4217 currency"),
            "{}",
            ready.message
        );
        assert!(condition(plan, STALLED).status);

        let meter = &decided[&("Meter".to_owned(), "calls".to_owned())];
        assert!(condition(meter, VALID).status);
        let applied = condition(meter, APPLIED);
        assert_eq!(applied.reason, "CatalogInvalid");
        assert!(
            applied.message.contains("RatePlan/pro"),
            "{}",
            applied.message
        );
    }

    #[test]
    fn a_valid_catalog_is_ready_once_every_pipeline_has_its_hash_in_force() {
        let resources = resources(&CATALOG.replace("EUX", "EUR"));
        assert!(validate(&resources).is_empty());
        let pipeline = |hash: Option<&str>| PipelineCatalog {
            name: "aforo".into(),
            version: Some(4),
            hash: hash.map(str::to_owned),
            failure: None,
        };
        let pending = decide(
            &resources,
            &[],
            Some("sha256:new"),
            &[pipeline(Some("sha256:old"))],
            "shop",
        );
        let meter = &pending[&("Meter".to_owned(), "calls".to_owned())];
        assert_eq!(condition(meter, "Ready").reason, "Pending");
        assert!(condition(meter, RECONCILING).status);
        assert_eq!(meter.version, None);

        let done = decide(
            &resources,
            &[],
            Some("sha256:new"),
            &[pipeline(Some("sha256:new"))],
            "shop",
        );
        let meter = &done[&("Meter".to_owned(), "calls".to_owned())];
        assert!(condition(meter, "Ready").status);
        assert!(
            !meter
                .desired
                .iter()
                .any(|d| d.type_ == RECONCILING || d.type_ == STALLED)
        );
        assert_eq!(meter.version, Some(4));
        assert_eq!(meter.hash.as_deref(), Some("sha256:new"));

        let none = decide(&resources, &[], Some("sha256:new"), &[], "shop");
        assert_eq!(
            condition(&none[&("Meter".to_owned(), "calls".to_owned())], "Ready").reason,
            "NoPipeline"
        );
    }
}
