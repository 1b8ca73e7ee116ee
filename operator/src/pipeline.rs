//! The MeteringPipeline controller: dereference → validate → build →
//! apply → status, for one pipeline at a time.
//!
//! Conditions it writes:
//!
//! | type | True when | False reasons |
//! |---|---|---|
//! | `Ready` | `Available` and `CatalogApplied` | theirs, or `InvalidSpec` |
//! | `Available` | every role's Deployment reports `Available` for its latest spec | `DeploymentsUnavailable` |
//! | `CatalogApplied` | the namespace's catalog is in force on the pipeline (or there is none) | `CatalogInvalid`, `CatalogRejected`, `ApiKeyMissing`, `ApiKeyRejected`, `CatalogApiUnavailable` |
//! | `Reconciling` | (only while true) Deployments are rolling out, or the catalog API is not reachable yet | |
//! | `Stalled` | (only while true) the spec, the catalog or the key needs a fix | |
//! | `Paused` | (only while true) the pause annotation is set | |

use std::sync::Arc;
use std::time::{Duration, Instant};

use aforo_crds::catalog::{MeteringPipeline, MeteringPipelineStatus, Resource};
use k8s_openapi::ByteString;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder};
use kube::runtime::finalizer::{self, finalizer};
use kube::{Client, Resource as _, ResourceExt};
use serde_json::json;

use crate::build::{self, MANAGER, Role};
use crate::catalog::{self, ApplyFailure, CatalogClient};
use crate::children::{self, Changes};
use crate::conditions::{self, Desired, READY, RECONCILING, STALLED};
use crate::metrics::Metrics;
use crate::{Error, FINALIZER, paused};

pub const AVAILABLE: &str = "Available";
pub const CATALOG_APPLIED: &str = "CatalogApplied";
pub const PAUSED: &str = "Paused";

/// What every reconcile shares.
pub struct Context {
    pub client: Client,
    pub catalog: CatalogClient,
    pub catalog_endpoint: Option<String>,
    pub metrics: Arc<Metrics>,
    pub recorder: Recorder,
    pub resync: Duration,
}

/// How long to wait before asking an unreachable catalog API again.
const CATALOG_RETRY: Duration = Duration::from_secs(10);

pub async fn reconcile(
    pipeline: Arc<MeteringPipeline>,
    ctx: Arc<Context>,
) -> Result<Action, Error> {
    let started = Instant::now();
    let namespace = pipeline.namespace().unwrap_or_default();
    let api = Api::<MeteringPipeline>::namespaced(ctx.client.clone(), &namespace);
    let deleting = pipeline.metadata.deletion_timestamp.is_some();
    let has_finalizer = pipeline.finalizers().iter().any(|f| f == FINALIZER);
    let result = finalizer(&api, FINALIZER, pipeline, |event| async {
        match event {
            finalizer::Event::Apply(p) => apply(&p, &ctx).await,
            finalizer::Event::Cleanup(p) => cleanup(&p, &ctx).await,
        }
    })
    .await;
    if !deleting && !has_finalizer || deleting && has_finalizer && result.is_ok() {
        ctx.metrics.write("MeteringPipeline", "finalizer");
    }
    ctx.metrics
        .reconciled("pipeline", result.is_ok(), started.elapsed());
    result.map_err(|e| match e {
        finalizer::Error::ApplyFailed(e) | finalizer::Error::CleanupFailed(e) => e,
        other => Error::Finalizer(other.to_string()),
    })
}

pub fn error_policy(pipeline: Arc<MeteringPipeline>, error: &Error, _: Arc<Context>) -> Action {
    tracing::warn!(
        pipeline = %pipeline.name_any(),
        namespace = %pipeline.namespace().unwrap_or_default(),
        %error,
        "reconcile failed; retrying"
    );
    Action::requeue(Duration::from_secs(15))
}

/// The pipeline is going: delete its children ourselves (no garbage
/// collector is assumed), then let the finalizer go.
async fn cleanup(pipeline: &MeteringPipeline, ctx: &Context) -> Result<Action, Error> {
    if build::check(pipeline).is_err() {
        // Nothing was built for an invalid pipeline (and its name may not
        // even be a valid label value to select by).
        return Ok(Action::await_change());
    }
    let namespace = pipeline.namespace().unwrap_or_default();
    let deleted = children::delete_orphans(
        &ctx.client,
        &namespace,
        &build::children_selector(&pipeline.name_any()),
        pipeline.metadata.uid.as_deref().unwrap_or_default(),
        &[],
        &ctx.metrics,
    )
    .await?;
    tracing::info!(pipeline = %pipeline.name_any(), %namespace, ?deleted, "deleted the pipeline's children");
    Ok(Action::await_change())
}

async fn apply(pipeline: &MeteringPipeline, ctx: &Context) -> Result<Action, Error> {
    let previous = pipeline.status.clone().unwrap_or_default();
    if paused(&pipeline.metadata) {
        // Leave children and catalog be; say so, and nothing else.
        let mut status = previous.clone();
        let condition = Desired::true_(
            PAUSED,
            "ReconciliationPaused",
            format!(
                "{}=true: children and catalog are left as they are",
                crate::PAUSE_ANNOTATION
            ),
        );
        let kept: Vec<_> = previous
            .conditions
            .iter()
            .filter(|c| c.type_ != PAUSED)
            .cloned()
            .collect();
        let mut settled = conditions::settle(
            &previous.conditions,
            &[condition],
            previous.observed_generation,
            &conditions::now(),
        );
        settled.extend(kept);
        status.conditions = settled;
        write_status(pipeline, &previous, status, ctx).await?;
        return Ok(Action::await_change());
    }

    let generation = pipeline.metadata.generation;
    let namespace = pipeline.namespace().unwrap_or_default();
    let mut status = MeteringPipelineStatus {
        observed_generation: generation,
        ..previous.clone()
    };

    // validate
    if let Err(invalid) = build::check(pipeline) {
        let message = format!("{}: {}", invalid.field, invalid.message);
        let parts = [Desired::false_(AVAILABLE, "InvalidSpec", &message)];
        let mut desired = vec![conditions::ready(&parts, "")];
        desired.extend(parts);
        desired.push(Desired::true_(STALLED, "InvalidSpec", &message));
        status.conditions = conditions::settle(
            &previous.conditions,
            &desired,
            generation,
            &conditions::now(),
        );
        if !was(&previous, READY, "InvalidSpec") {
            event(ctx, pipeline, EventType::Warning, "InvalidSpec", &message).await;
        }
        write_status(pipeline, &previous, status, ctx).await?;
        return Ok(Action::await_change());
    }

    // dereference: the namespace's catalog, and the webhook secrets it names
    let resources: Vec<Resource> = catalog::resources(&ctx.client, &namespace).await?;
    let webhook_secrets = resources
        .iter()
        .filter_map(|r| match r {
            Resource::WebhookSource(w) => Some(w.spec.secret_ref.name.clone()),
            _ => None,
        })
        .collect();

    // build, apply
    let built = build::children(pipeline, &webhook_secrets);
    let mut changes: Changes =
        children::apply(&ctx.client, &namespace, &built, &ctx.metrics).await?;
    changes.deleted = children::delete_orphans(
        &ctx.client,
        &namespace,
        &build::children_selector(&pipeline.name_any()),
        pipeline.metadata.uid.as_deref().unwrap_or_default(),
        &built,
        &ctx.metrics,
    )
    .await?;
    if !changes.is_empty() {
        event(
            ctx,
            pipeline,
            EventType::Normal,
            "ChildrenApplied",
            &changes.summary(),
        )
        .await;
    }
    let available = availability(&ctx.client, pipeline).await?;

    // the catalog
    let (catalog, retry) = apply_catalog(pipeline, ctx, &resources, &mut status).await?;
    if status.catalog_version != previous.catalog_version && catalog.status {
        event(
            ctx,
            pipeline,
            EventType::Normal,
            "CatalogApplied",
            &catalog.message,
        )
        .await;
    }
    if !catalog.status && !was(&previous, CATALOG_APPLIED, &catalog.reason) {
        event(
            ctx,
            pipeline,
            EventType::Warning,
            &catalog.reason,
            &catalog.message,
        )
        .await;
    }

    // status
    let stalled = !catalog.status
        && matches!(
            catalog.reason.as_str(),
            "CatalogInvalid" | "CatalogRejected" | "ApiKeyMissing" | "ApiKeyRejected"
        );
    let parts = [available.clone(), catalog.clone()];
    let mut desired = vec![conditions::ready(
        &parts,
        "the data plane is available and its catalog is in force",
    )];
    desired.extend(parts);
    if !available.status {
        desired.push(Desired::true_(
            RECONCILING,
            "DeploymentsRollingOut",
            &available.message,
        ));
    } else if !catalog.status && !stalled {
        desired.push(Desired::true_(
            RECONCILING,
            &catalog.reason,
            &catalog.message,
        ));
    }
    if stalled {
        desired.push(Desired::true_(STALLED, &catalog.reason, &catalog.message));
    }
    status.conditions = conditions::settle(
        &previous.conditions,
        &desired,
        generation,
        &conditions::now(),
    );
    write_status(pipeline, &previous, status, ctx).await?;
    Ok(Action::requeue(if retry {
        CATALOG_RETRY
    } else {
        ctx.resync
    }))
}

/// Whether condition `type_` was False with `reason` before.
fn was(previous: &MeteringPipelineStatus, type_: &str, reason: &str) -> bool {
    previous
        .conditions
        .iter()
        .any(|c| c.type_ == type_ && c.status == "False" && c.reason == reason)
}

/// `Available`: every Deployment has rolled out its latest spec and reports
/// the Deployment controller's `Available`.
async fn availability(client: &Client, pipeline: &MeteringPipeline) -> Result<Desired, Error> {
    let namespace = pipeline.namespace().unwrap_or_default();
    let api = Api::<Deployment>::namespaced(client.clone(), &namespace);
    let found = api
        .list(&ListParams::default().labels(&build::children_selector(&pipeline.name_any())))
        .await?;
    let mut waiting = Vec::new();
    for role in Role::ALL {
        let name = format!("{}-{}", pipeline.name_any(), role.name());
        let ready = found
            .items
            .iter()
            .find(|d| d.name_any() == name)
            .is_some_and(|d| {
                let status = d.status.clone().unwrap_or_default();
                status.observed_generation >= d.metadata.generation
                    && status.conditions.iter().flatten().any(|c| {
                        c.type_.as_deref() == Some("Available")
                            && c.status.as_deref() == Some("True")
                    })
            });
        if !ready {
            waiting.push(role.name());
        }
    }
    Ok(if waiting.is_empty() {
        Desired::true_(
            AVAILABLE,
            "DeploymentsAvailable",
            "ingest, enrich and billing are available",
        )
    } else {
        Desired::false_(
            AVAILABLE,
            "DeploymentsUnavailable",
            format!("waiting for {} to become available", waiting.join(", ")),
        )
    })
}

/// Compiles the namespace's catalog and applies it through the pipeline's
/// catalog API; records the version in force in `status`. Returns the
/// `CatalogApplied` condition, and whether to retry soon.
async fn apply_catalog(
    pipeline: &MeteringPipeline,
    ctx: &Context,
    resources: &[Resource],
    status: &mut MeteringPipelineStatus,
) -> Result<(Desired, bool), Error> {
    let namespace = pipeline.namespace().unwrap_or_default();
    if resources.is_empty() {
        return Ok((
            Desired::true_(
                CATALOG_APPLIED,
                "NoCatalogResources",
                format!("namespace {namespace} declares no catalog resources"),
            ),
            false,
        ));
    }
    if let Err(errors) = catalog::compile_namespace(resources) {
        let list: Vec<String> = errors.iter().map(ToString::to_string).collect();
        return Ok((
            Desired::false_(
                CATALOG_APPLIED,
                "CatalogInvalid",
                format!(
                    "the namespace's catalog has {} error(s), so the catalog in force is unchanged: {}",
                    list.len(),
                    list.join("; ")
                ),
            ),
            false,
        ));
    }
    let key = match api_key(&ctx.client, pipeline).await? {
        Ok(key) => key,
        // Retried soon: the Secret may come after the pipeline.
        Err(message) => {
            return Ok((
                Desired::false_(CATALOG_APPLIED, "ApiKeyMissing", message),
                true,
            ));
        }
    };
    let endpoint = ctx
        .catalog_endpoint
        .clone()
        .unwrap_or_else(|| build::catalog_endpoint(pipeline));
    match ctx.catalog.apply(&endpoint, &key, resources).await {
        Ok(applied) => {
            status.catalog_version = Some(applied.version);
            status.catalog_hash = Some(applied.content_hash.clone());
            Ok((
                Desired::true_(
                    CATALOG_APPLIED,
                    "Applied",
                    format!(
                        "catalog version {} ({}) is in force",
                        applied.version, applied.content_hash
                    ),
                ),
                false,
            ))
        }
        Err(failure @ ApplyFailure::Rejected(_)) => Ok((
            Desired::false_(CATALOG_APPLIED, "CatalogRejected", failure.to_string()),
            false,
        )),
        Err(failure @ ApplyFailure::Unauthorized(_)) => Ok((
            Desired::false_(CATALOG_APPLIED, "ApiKeyRejected", failure.to_string()),
            true,
        )),
        Err(failure @ ApplyFailure::Unavailable { .. }) => Ok((
            Desired::false_(
                CATALOG_APPLIED,
                "CatalogApiUnavailable",
                failure.to_string(),
            ),
            true,
        )),
    }
}

/// The tenant's API key from the Secret `spec.apiKey` names, or why not.
async fn api_key(
    client: &Client,
    pipeline: &MeteringPipeline,
) -> Result<Result<String, String>, Error> {
    let namespace = pipeline.namespace().unwrap_or_default();
    let reference = &pipeline.spec.api_key;
    let secret = Api::<Secret>::namespaced(client.clone(), &namespace)
        .get_opt(&reference.name)
        .await?;
    let Some(secret) = secret else {
        return Ok(Err(format!(
            "spec.apiKey: no Secret {namespace}/{} holds the tenant's API key",
            reference.name
        )));
    };
    let value = secret
        .data
        .as_ref()
        .and_then(|d| d.get(&reference.key))
        .map(|ByteString(bytes)| String::from_utf8_lossy(bytes).trim().to_owned())
        .or_else(|| {
            secret
                .string_data
                .as_ref()
                .and_then(|d| d.get(&reference.key))
                .map(|s| s.trim().to_owned())
        });
    Ok(match value {
        Some(key) if !key.is_empty() => Ok(key),
        _ => Err(format!(
            "spec.apiKey: Secret {namespace}/{} has no key {:?} (or it is empty)",
            reference.name, reference.key
        )),
    })
}

/// Writes the status when it differs from what is stored.
async fn write_status(
    pipeline: &MeteringPipeline,
    previous: &MeteringPipelineStatus,
    status: MeteringPipelineStatus,
    ctx: &Context,
) -> Result<(), Error> {
    if &status == previous {
        return Ok(());
    }
    let api = Api::<MeteringPipeline>::namespaced(
        ctx.client.clone(),
        &pipeline.namespace().unwrap_or_default(),
    );
    let patch = json!({
        "apiVersion": MeteringPipeline::api_version(&()),
        "kind": MeteringPipeline::kind(&()),
        "status": status,
    });
    api.patch_status(
        &pipeline.name_any(),
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await?;
    ctx.metrics.write("MeteringPipeline", "status");
    Ok(())
}

/// Records a Kubernetes event on the pipeline; a failure to record is
/// logged, never fatal.
async fn event(
    ctx: &Context,
    pipeline: &MeteringPipeline,
    type_: EventType,
    reason: &str,
    note: &str,
) {
    let event = Event {
        type_,
        reason: reason.to_owned(),
        note: Some(conditions::truncate(note, 1000)),
        action: "Reconcile".into(),
        secondary: None,
    };
    match ctx
        .recorder
        .publish(&event, &pipeline.object_ref(&()))
        .await
    {
        Ok(()) => ctx.metrics.write("Event", "create"),
        Err(e) => tracing::warn!(error = %e, "cannot record an event"),
    }
}
