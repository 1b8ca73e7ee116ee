//! The operator against a real kube-apiserver and etcd (aforo-kubetest):
//! each test makes its own namespace and runs its own operator, scoped to
//! that namespace, in process.
//!
//! No controller-manager runs: Deployments get no pods, owner references
//! are not garbage collected. Tests play the Deployment controller where
//! they need it ([`mark_available`]) and rely on the operator alone to
//! delete what it made.

#![allow(dead_code)]

use std::fmt::Debug;

use aforo_crds::catalog::yaml_documents;
use aforo_kubetest::ControlPlane;
pub use aforo_kubetest::eventually;
use aforo_operator::{Operator, OperatorConfig};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Client;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

fn chart_crds_file() -> String {
    format!(
        "{}/../charts/aforo/crds/aforo.io.yaml",
        std::env::var("CARGO_MANIFEST_DIR")
            .expect("CARGO_MANIFEST_DIR: run by cargo test, or by scripts/hard-days.sh")
    )
}

pub fn chart_crds() -> Vec<CustomResourceDefinition> {
    let text = std::fs::read_to_string(chart_crds_file()).expect("read the chart's CRDs");
    yaml_documents(&text, &chart_crds_file())
        .expect("the chart's CRDs are YAML")
        .into_iter()
        .map(|(origin, value)| {
            serde_json::from_value(value)
                .unwrap_or_else(|e| panic!("{origin} is not a CustomResourceDefinition: {e}"))
        })
        .collect()
}

/// The shared control plane with the CRDs installed, a client, and a fresh
/// namespace.
pub async fn cluster(test: &str) -> (&'static ControlPlane, Client, String) {
    let (control_plane, namespace) = ControlPlane::shared_with(&chart_crds(), test).await;
    let client = control_plane.client().expect("a client");
    (control_plane, client, namespace)
}

/// An operator watching `namespace` only, leading by a Lease there.
pub async fn operator(client: &Client, namespace: &str) -> Operator {
    operator_as(client, namespace, "test-operator").await
}

pub async fn operator_as(client: &Client, namespace: &str, identity: &str) -> Operator {
    let mut config = OperatorConfig::for_namespace(namespace);
    config.identity = Some(identity.to_owned());
    Operator::start(client.clone(), config)
        .await
        .unwrap_or_else(|e| panic!("start the operator: {e}"))
}

/// Creates an object from its JSON form.
pub async fn create<K>(client: &Client, namespace: &str, object: Value) -> K
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + DeserializeOwned
        + serde::Serialize
        + Debug,
{
    let typed: K = serde_json::from_value(object).expect("a valid object");
    Api::<K>::namespaced(client.clone(), namespace)
        .create(&PostParams::default(), &typed)
        .await
        .unwrap_or_else(|e| panic!("create {}: {e}", K::kind(&())))
}

/// A MeteringPipeline named `name` with `roles` merged into its spec.
pub fn pipeline(name: &str, roles: Value) -> Value {
    let mut spec = json!({
        "image": "aforo:test",
        "database": {"name": "aforo-db", "key": "url"},
        "apiKey": {"name": "aforo-tenant", "key": "api-key"},
    });
    if let (Value::Object(spec), Value::Object(roles)) = (&mut spec, roles) {
        spec.extend(roles);
    }
    json!({
        "apiVersion": "aforo.io/v1alpha1",
        "kind": "MeteringPipeline",
        "metadata": {"name": name},
        "spec": spec,
    })
}

/// Merge-patches an object's spec (or any part of it).
pub async fn merge<K>(client: &Client, namespace: &str, name: &str, patch: Value)
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + DeserializeOwned
        + Debug,
{
    Api::<K>::namespaced(client.clone(), namespace)
        .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap_or_else(|e| panic!("patch {} {name}: {e}", K::kind(&())));
}

/// Plays the Deployment controller: reports `name` rolled out and available.
pub async fn mark_available(client: &Client, namespace: &str, name: &str) {
    let api = Api::<Deployment>::namespaced(client.clone(), namespace);
    let deployment = api.get(name).await.expect("the Deployment");
    let replicas = deployment.spec.replicas.unwrap_or(1);
    let status = json!({"status": {
        "observedGeneration": deployment.metadata.generation,
        "replicas": replicas, "readyReplicas": replicas,
        "availableReplicas": replicas, "updatedReplicas": replicas,
        "conditions": [{"type": "Available", "status": "True",
                        "reason": "MinimumReplicasAvailable",
                        "message": "Deployment has minimum availability."}],
    }});
    api.patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .unwrap_or_else(|e| panic!("mark {name} available: {e}"));
}

/// The condition `type_` of an object's status, as JSON.
pub fn condition(object: &Value, type_: &str) -> Option<Value> {
    object["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)
        .cloned()
}
