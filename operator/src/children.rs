//! `apply`: bringing a pipeline's children to what `build` says, writing
//! only what differs, and deleting what is no longer wanted.
//!
//! A child is written (server-side apply, field manager
//! [`MANAGER`](crate::build::MANAGER), forced: these fields are ours alone)
//! unless the stored object already holds every field of the built one with
//! the same value and carries the same content hash. The hash catches a field
//! we stopped setting (e.g. `replicas` once autoscaling is on), the
//! comparison catches someone else's edit of a field we set. So a reconcile
//! of an unchanged pipeline sends no write at all. (Where the apiserver
//! stores a value in another form than it was sent, a quantity "0.5" as
//! "500m", a server-side dry run settles whether anything would change.)
//!
//! Orphans are found by our labels and deleted when no longer built: the
//! HPA of a role that stopped autoscaling, everything once the pipeline is
//! deleted. This does not rely on a garbage collector (owner references are
//! set too, for clusters that run one, and for Argo CD's resource tree).

use std::collections::BTreeSet;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{Service, ServiceAccount};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, ListParams, Patch, PatchParams};
use kube::{Client, Resource};
use serde_json::Value;

use crate::Error;
use crate::build::{Child, HASH_ANNOTATION, MANAGER};
use crate::metrics::Metrics;

/// The kinds of object a pipeline yields.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ChildKind {
    ServiceAccount,
    Deployment,
    Service,
    HorizontalPodAutoscaler,
    PodDisruptionBudget,
}

impl ChildKind {
    pub const ALL: [ChildKind; 5] = [
        ChildKind::ServiceAccount,
        ChildKind::Deployment,
        ChildKind::Service,
        ChildKind::HorizontalPodAutoscaler,
        ChildKind::PodDisruptionBudget,
    ];

    pub fn name(self) -> &'static str {
        match self {
            ChildKind::ServiceAccount => "ServiceAccount",
            ChildKind::Deployment => "Deployment",
            ChildKind::Service => "Service",
            ChildKind::HorizontalPodAutoscaler => "HorizontalPodAutoscaler",
            ChildKind::PodDisruptionBudget => "PodDisruptionBudget",
        }
    }

    pub fn api_resource(self) -> ApiResource {
        fn of<K: Resource<DynamicType = ()>>() -> ApiResource {
            ApiResource::erase::<K>(&())
        }
        match self {
            ChildKind::ServiceAccount => of::<ServiceAccount>(),
            ChildKind::Deployment => of::<Deployment>(),
            ChildKind::Service => of::<Service>(),
            ChildKind::HorizontalPodAutoscaler => of::<HorizontalPodAutoscaler>(),
            ChildKind::PodDisruptionBudget => of::<PodDisruptionBudget>(),
        }
    }

    fn api(self, client: &Client, namespace: &str) -> Api<DynamicObject> {
        Api::namespaced_with(client.clone(), namespace, &self.api_resource())
    }
}

/// What one apply pass changed, for events and logs.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Changes {
    pub created: Vec<String>,
    pub updated: Vec<String>,
    pub deleted: Vec<String>,
}

impl Changes {
    pub fn is_empty(&self) -> bool {
        self.created.is_empty() && self.updated.is_empty() && self.deleted.is_empty()
    }

    pub fn summary(&self) -> String {
        let mut parts = Vec::new();
        for (verb, list) in [
            ("created", &self.created),
            ("updated", &self.updated),
            ("deleted", &self.deleted),
        ] {
            if !list.is_empty() {
                parts.push(format!("{verb} {}", list.join(", ")));
            }
        }
        parts.join("; ")
    }
}

/// Whether `stored` holds every field of `wanted` with the same value.
/// Lists must match item by item; the stored object may have more fields
/// (defaults, status, other managers' fields).
pub fn holds(stored: &Value, wanted: &Value) -> bool {
    match (stored, wanted) {
        (Value::Object(stored), Value::Object(wanted)) => wanted
            .iter()
            .all(|(k, v)| stored.get(k).is_some_and(|s| holds(s, v))),
        (Value::Array(stored), Value::Array(wanted)) => {
            stored.len() == wanted.len() && stored.iter().zip(wanted).all(|(s, w)| holds(s, w))
        }
        _ => stored == wanted,
    }
}

/// Whether two versions of an object are the same, bookkeeping aside.
fn same_object(a: &Value, b: &Value) -> bool {
    let strip = |v: &Value| {
        let mut v = v.clone();
        if let Some(meta) = v.get_mut("metadata").and_then(Value::as_object_mut) {
            meta.remove("managedFields");
        }
        v
    };
    strip(a) == strip(b)
}

/// Whether the stored object is already what `child` describes.
pub fn up_to_date(stored: &Value, child: &Child) -> bool {
    stored["metadata"]["annotations"][HASH_ANNOTATION].as_str() == Some(child.hash())
        && holds(stored, &child.object)
}

/// Applies each child that is not up to date; returns what changed.
pub async fn apply(
    client: &Client,
    namespace: &str,
    children: &[Child],
    metrics: &Metrics,
) -> Result<Changes, Error> {
    let mut changes = Changes::default();
    let params = PatchParams::apply(MANAGER).force();
    for child in children {
        let api = child.kind.api(client, namespace);
        let stored = api.get_opt(&child.name).await?;
        let label = format!("{}/{}", child.kind.name(), child.name);
        match stored {
            Some(stored) => {
                let stored = serde_json::to_value(&stored)?;
                if up_to_date(&stored, child) {
                    continue;
                }
                // Same content as last applied, yet not held as written:
                // the apiserver may have normalized a value (a quantity
                // "0.5" is stored as "500m"). A dry run says whether
                // applying would change anything.
                if stored["metadata"]["annotations"][HASH_ANNOTATION].as_str() == Some(child.hash())
                {
                    let mut dry_run = params.clone();
                    dry_run.dry_run = true;
                    let outcome = api
                        .patch(&child.name, &dry_run, &Patch::Apply(&child.object))
                        .await?;
                    if same_object(&stored, &serde_json::to_value(&outcome)?) {
                        continue;
                    }
                }
                changes.updated.push(label);
            }
            None => changes.created.push(label),
        }
        api.patch(&child.name, &params, &Patch::Apply(&child.object))
            .await?;
        metrics.write(child.kind.name(), "apply");
    }
    Ok(changes)
}

/// Deletes the objects labelled as `selector`'s children and owned by
/// `owner_uid` that are not in `keep`.
pub async fn delete_orphans(
    client: &Client,
    namespace: &str,
    selector: &str,
    owner_uid: &str,
    keep: &[Child],
    metrics: &Metrics,
) -> Result<Vec<String>, Error> {
    let keep: BTreeSet<(ChildKind, &str)> =
        keep.iter().map(|c| (c.kind, c.name.as_str())).collect();
    let mut deleted = Vec::new();
    for kind in ChildKind::ALL {
        let api = kind.api(client, namespace);
        let found = api.list(&ListParams::default().labels(selector)).await?;
        for object in found.items {
            let name = object.metadata.name.clone().unwrap_or_default();
            let ours = object
                .metadata
                .owner_references
                .iter()
                .flatten()
                .any(|o| o.uid == owner_uid && o.controller == Some(true));
            if !ours || keep.contains(&(kind, name.as_str())) {
                continue;
            }
            match api.delete(&name, &DeleteParams::background()).await {
                Ok(_) => {}
                // Someone else deleted it meanwhile: the outcome we want.
                Err(kube::Error::Api(status)) if status.code == 404 => continue,
                Err(e) => return Err(e.into()),
            }
            metrics.write(kind.name(), "delete");
            deleted.push(format!("{}/{name}", kind.name()));
        }
    }
    Ok(deleted)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::holds;

    #[test]
    fn a_stored_object_with_defaults_holds_what_was_applied() {
        let wanted = json!({"spec": {"replicas": 2, "ports": [{"port": 8470}]}});
        let stored = json!({
            "metadata": {"resourceVersion": "7"},
            "spec": {"replicas": 2, "revisionHistoryLimit": 10,
                     "ports": [{"port": 8470, "protocol": "TCP"}]},
            "status": {}
        });
        assert!(holds(&stored, &wanted));
    }

    #[test]
    fn a_changed_value_or_a_missing_list_item_is_not_held() {
        let wanted = json!({"spec": {"replicas": 2, "ports": [{"port": 8470}, {"port": 8471}]}});
        assert!(!holds(
            &json!({"spec": {"replicas": 3, "ports": [{"port": 8470}, {"port": 8471}]}}),
            &wanted
        ));
        assert!(!holds(
            &json!({"spec": {"replicas": 2, "ports": [{"port": 8470}]}}),
            &wanted
        ));
    }
}
