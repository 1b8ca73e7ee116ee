//! `build`: a MeteringPipeline in, the objects that run it out. Pure: no
//! client, no clock; the same pipeline always yields the same bytes.
//!
//! For each role (ingest, enrich, billing) a Deployment running
//! `aforo <role>`, a PodDisruptionBudget, and, when the role autoscales, an
//! autoscaling/v2 HorizontalPodAutoscaler (and then no `replicas` on the
//! Deployment, so that applying never fights the HPA). Services: one per
//! serving role (HTTP and gRPC), a headless one for ingest's gRPC so that
//! clients balancing on the client side see every replica, and a headless
//! metrics Service over every pod of the pipeline. ingest and billing also
//! close gRPC connections after [`GRPC_MAX_CONNECTION_AGE`], so clients
//! behind the ClusterIP Service reconnect and reach replicas added since.
//!
//! Every object carries our own labels ([`labels`]), never the pipeline's,
//! a controller owner reference to the pipeline, and the hash of its own
//! content in [`HASH_ANNOTATION`], which `apply` compares to skip writes.

use std::collections::{BTreeMap, BTreeSet};

use aforo_crds::catalog::{MeteringPipeline, RoleSpec, SecretKeyRef};
use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec, DeploymentStrategy};
use k8s_openapi::api::autoscaling::v2::{
    CrossVersionObjectReference, HorizontalPodAutoscaler, HorizontalPodAutoscalerSpec, MetricSpec,
    MetricTarget, ResourceMetricSource,
};
use k8s_openapi::api::core::v1::{
    Capabilities, Container, ContainerPort, EnvVar, EnvVarSource, HTTPGetAction,
    ObjectFieldSelector, PodSpec, PodTemplateSpec, Probe, SeccompProfile, SecretKeySelector,
    SecretVolumeSource, SecurityContext, Service, ServiceAccount, ServicePort, ServiceSpec, Volume,
    VolumeMount,
};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::Resource;
use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::children::ChildKind;

/// The field manager of everything the operator applies.
pub const MANAGER: &str = "aforo-operator";
/// Holds the hash of the content the operator last applied to an object.
pub const HASH_ANNOTATION: &str = "aforo.io/applied-hash";
/// The pipeline an object belongs to.
pub const PIPELINE_LABEL: &str = "aforo.io/pipeline";
/// Marks objects the operator created.
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
pub const COMPONENT_LABEL: &str = "app.kubernetes.io/component";
/// Marks the Service a Prometheus ServiceMonitor selects.
pub const METRICS_LABEL: &str = "aforo.io/metrics";

/// Port of each role's HTTP API, health probes and `/metrics`.
pub const HTTP_PORT: i32 = 8470;
/// Port of the gRPC API (ingest, billing).
pub const GRPC_PORT: i32 = 8471;
/// How long a server keeps a gRPC connection before asking the client to
/// reconnect (and so re-balance over the replicas there are now).
pub const GRPC_MAX_CONNECTION_AGE: &str = "5m";
/// The longest pipeline name whose children's names are all valid Service
/// names (`<name>-ingest-grpc` is a DNS-1035 label of at most 63).
pub const MAX_NAME_LENGTH: usize = 51;

/// One role of the data plane.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    Ingest,
    Enrich,
    Billing,
}

impl Role {
    pub const ALL: [Role; 3] = [Role::Ingest, Role::Enrich, Role::Billing];

    pub fn name(self) -> &'static str {
        match self {
            Role::Ingest => "ingest",
            Role::Enrich => "enrich",
            Role::Billing => "billing",
        }
    }

    fn spec(self, pipeline: &MeteringPipeline) -> &RoleSpec {
        match self {
            Role::Ingest => &pipeline.spec.ingest,
            Role::Enrich => &pipeline.spec.enrich,
            Role::Billing => &pipeline.spec.billing,
        }
    }

    /// ingest and billing serve gRPC; enrich serves only its probes.
    fn serves_grpc(self) -> bool {
        self != Role::Enrich
    }
}

/// An object to apply, as JSON with `apiVersion`, `kind` and metadata.
#[derive(Clone, Debug, PartialEq)]
pub struct Child {
    pub kind: ChildKind,
    pub name: String,
    pub object: Value,
}

impl Child {
    /// The hash recorded in the object's [`HASH_ANNOTATION`].
    pub fn hash(&self) -> &str {
        self.object["metadata"]["annotations"][HASH_ANNOTATION]
            .as_str()
            .unwrap_or_default()
    }
}

/// Why a pipeline cannot be built.
#[derive(Debug, PartialEq, Eq)]
pub struct InvalidPipeline {
    pub field: String,
    pub message: String,
}

/// Checks what the CRD schema cannot: that the children's names will be valid.
pub fn check(pipeline: &MeteringPipeline) -> Result<(), InvalidPipeline> {
    let name = pipeline.metadata.name.as_deref().unwrap_or_default();
    let label = name.len() <= MAX_NAME_LENGTH
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name.ends_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if !label {
        return Err(InvalidPipeline {
            field: "metadata.name".into(),
            message: format!(
                "{name:?} must be a DNS-1035 label of at most {MAX_NAME_LENGTH} characters \
                 (lowercase letters, digits and '-', starting with a letter), because the \
                 Services it yields are named after it"
            ),
        });
    }
    Ok(())
}

/// The labels every child of `pipeline` carries; `component` narrows them
/// to one role.
pub fn labels(pipeline: &str, component: Option<&str>) -> BTreeMap<String, String> {
    let mut labels = selector(pipeline, component);
    labels.insert("app.kubernetes.io/name".into(), "aforo".into());
    labels.insert(MANAGED_BY_LABEL.into(), MANAGER.into());
    labels
}

/// The labels that select a pipeline's pods (of one role).
fn selector(pipeline: &str, component: Option<&str>) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::from([(PIPELINE_LABEL.to_owned(), pipeline.to_owned())]);
    if let Some(component) = component {
        labels.insert(COMPONENT_LABEL.into(), component.into());
    }
    labels
}

/// The label selector of every child of a pipeline, for orphan clean-up.
pub fn children_selector(pipeline: &str) -> String {
    format!("{MANAGED_BY_LABEL}={MANAGER},{PIPELINE_LABEL}={pipeline}")
}

/// Where ingest finds webhook signing secrets: `<dir>/<namespace>/<secret>/<key>`.
pub const SECRETS_DIR: &str = "/var/run/aforo/secrets";

/// Everything `pipeline` should run, in a stable order. `webhook_secrets`
/// are the Secrets the namespace's WebhookSources name: ingest mounts them.
pub fn children(pipeline: &MeteringPipeline, webhook_secrets: &BTreeSet<String>) -> Vec<Child> {
    let name = pipeline.metadata.name.clone().unwrap_or_default();
    let owner = owner(pipeline);
    let meta = |object_name: String, component: Option<&str>| ObjectMeta {
        name: Some(object_name),
        namespace: pipeline.metadata.namespace.clone(),
        labels: Some(labels(&name, component)),
        owner_references: Some(vec![owner.clone()]),
        ..ObjectMeta::default()
    };
    let mut out = vec![child(
        ChildKind::ServiceAccount,
        &ServiceAccount {
            metadata: meta(name.clone(), None),
            // The data plane never talks to the Kubernetes API.
            automount_service_account_token: Some(false),
            ..ServiceAccount::default()
        },
    )];
    for role in Role::ALL {
        let spec = role.spec(pipeline);
        let object_name = format!("{name}-{}", role.name());
        out.push(child(
            ChildKind::Deployment,
            &deployment(
                pipeline,
                role,
                meta(object_name.clone(), Some(role.name())),
                webhook_secrets,
            ),
        ));
        if let Some(autoscaling) = &spec.autoscaling {
            out.push(child(
                ChildKind::HorizontalPodAutoscaler,
                &HorizontalPodAutoscaler {
                    metadata: meta(object_name.clone(), Some(role.name())),
                    spec: HorizontalPodAutoscalerSpec {
                        scale_target_ref: CrossVersionObjectReference {
                            api_version: Some("apps/v1".into()),
                            kind: "Deployment".into(),
                            name: object_name.clone(),
                        },
                        min_replicas: Some(autoscaling.min_replicas),
                        max_replicas: autoscaling.max_replicas,
                        metrics: Some(vec![MetricSpec {
                            type_: "Resource".into(),
                            resource: Some(ResourceMetricSource {
                                name: "cpu".into(),
                                target: MetricTarget {
                                    type_: "Utilization".into(),
                                    average_utilization: Some(autoscaling.target_cpu_utilization),
                                    ..MetricTarget::default()
                                },
                            }),
                            ..MetricSpec::default()
                        }]),
                        ..HorizontalPodAutoscalerSpec::default()
                    },
                    ..HorizontalPodAutoscaler::default()
                },
            ));
        }
        out.push(child(
            ChildKind::PodDisruptionBudget,
            &PodDisruptionBudget {
                metadata: meta(object_name.clone(), Some(role.name())),
                spec: Some(PodDisruptionBudgetSpec {
                    // One pod at a time may go for a node drain, whatever
                    // the replica count (with one replica, that one).
                    max_unavailable: Some(IntOrString::Int(1)),
                    selector: Some(LabelSelector {
                        match_labels: Some(selector(&name, Some(role.name()))),
                        ..LabelSelector::default()
                    }),
                    ..PodDisruptionBudgetSpec::default()
                }),
                ..PodDisruptionBudget::default()
            },
        ));
        if role.serves_grpc() {
            out.push(child(
                ChildKind::Service,
                &service(
                    meta(object_name.clone(), Some(role.name())),
                    selector(&name, Some(role.name())),
                    false,
                    &[("http", HTTP_PORT), ("grpc", GRPC_PORT)],
                ),
            ));
        }
        if role == Role::Ingest {
            out.push(child(
                ChildKind::Service,
                &service(
                    meta(format!("{object_name}-grpc"), Some(role.name())),
                    selector(&name, Some(role.name())),
                    true,
                    &[("grpc", GRPC_PORT)],
                ),
            ));
        }
    }
    let mut metrics_meta = meta(format!("{name}-metrics"), None);
    metrics_meta
        .labels
        .get_or_insert_default()
        .insert(METRICS_LABEL.into(), "true".into());
    out.push(child(
        ChildKind::Service,
        &service(
            metrics_meta,
            selector(&name, None),
            true,
            &[("metrics", HTTP_PORT)],
        ),
    ));
    out
}

/// The URL of a pipeline's catalog API inside the cluster.
pub fn catalog_endpoint(pipeline: &MeteringPipeline) -> String {
    format!(
        "http://{}-billing.{}.svc:{HTTP_PORT}",
        pipeline.metadata.name.as_deref().unwrap_or_default(),
        pipeline.metadata.namespace.as_deref().unwrap_or("default")
    )
}

fn owner(pipeline: &MeteringPipeline) -> OwnerReference {
    OwnerReference {
        api_version: MeteringPipeline::api_version(&()).into_owned(),
        kind: MeteringPipeline::kind(&()).into_owned(),
        name: pipeline.metadata.name.clone().unwrap_or_default(),
        uid: pipeline.metadata.uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// The object as JSON, with the hash of that JSON in its annotations.
fn child<K: Resource<DynamicType = ()> + Serialize>(kind: ChildKind, object: &K) -> Child {
    let mut value = serde_json::to_value(object).unwrap_or(Value::Null);
    value["apiVersion"] = K::api_version(&()).into();
    value["kind"] = K::kind(&()).into();
    let hash = format!(
        "sha256:{}",
        hex::encode(Sha256::digest(aforo_crds::canonical::to_string(&value)))
    );
    value["metadata"]["annotations"] = serde_json::json!({ HASH_ANNOTATION: hash });
    Child {
        kind,
        name: object.meta().name.clone().unwrap_or_default(),
        object: value,
    }
}

fn service(
    metadata: ObjectMeta,
    selector: BTreeMap<String, String>,
    headless: bool,
    ports: &[(&str, i32)],
) -> Service {
    Service {
        metadata,
        spec: Some(ServiceSpec {
            cluster_ip: headless.then(|| "None".to_owned()),
            selector: Some(selector),
            ports: Some(
                ports
                    .iter()
                    .map(|(name, port)| ServicePort {
                        name: Some((*name).to_owned()),
                        port: *port,
                        target_port: Some(IntOrString::String(
                            if *name == "metrics" { "http" } else { name }.to_owned(),
                        )),
                        protocol: Some("TCP".into()),
                        app_protocol: (*name == "grpc").then(|| "kubernetes.io/h2c".to_owned()),
                        ..ServicePort::default()
                    })
                    .collect(),
            ),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

fn secret_env(name: &str, secret: &SecretKeyRef) -> EnvVar {
    EnvVar {
        name: name.into(),
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: secret.name.clone(),
                key: secret.key.clone(),
                ..SecretKeySelector::default()
            }),
            ..EnvVarSource::default()
        }),
        ..EnvVar::default()
    }
}

fn plain_env(name: &str, value: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: Some(value.into()),
        ..EnvVar::default()
    }
}

fn probe(path: &str) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::String("http".into()),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(10),
        failure_threshold: Some(3),
        ..Probe::default()
    }
}

fn deployment(
    pipeline: &MeteringPipeline,
    role: Role,
    metadata: ObjectMeta,
    webhook_secrets: &BTreeSet<String>,
) -> Deployment {
    let name = pipeline.metadata.name.clone().unwrap_or_default();
    let spec = role.spec(pipeline);
    let mut env = vec![secret_env("AFORO_DATABASE_URL", &pipeline.spec.database)];
    if let Some(redis) = &pipeline.spec.redis {
        env.push(secret_env("AFORO_REDIS_URL", redis));
    }
    let http = format!("0.0.0.0:{HTTP_PORT}");
    let mut ports = vec![ContainerPort {
        name: Some("http".into()),
        container_port: HTTP_PORT,
        protocol: Some("TCP".into()),
        ..ContainerPort::default()
    }];
    if role.serves_grpc() {
        env.push(plain_env("AFORO_HTTP_ADDR", &http));
        env.push(plain_env(
            "AFORO_GRPC_ADDR",
            &format!("0.0.0.0:{GRPC_PORT}"),
        ));
        env.push(plain_env(
            "AFORO_GRPC_MAX_CONNECTION_AGE",
            GRPC_MAX_CONNECTION_AGE,
        ));
        ports.push(ContainerPort {
            name: Some("grpc".into()),
            container_port: GRPC_PORT,
            protocol: Some("TCP".into()),
            ..ContainerPort::default()
        });
    } else {
        env.push(plain_env("AFORO_ENRICH_HTTP_ADDR", &http));
    }
    // The webhook receiver reads each WebhookSource's secret from files laid
    // out as `<dir>/<namespace>/<secret>/<key>`; the tenant a delivery's URL
    // names is the namespace's. Optional: a missing Secret fails the
    // deliveries that need it, not the pod.
    let namespace = pipeline.metadata.namespace.clone().unwrap_or_default();
    let (mut volumes, mut mounts) = (Vec::new(), Vec::new());
    if role == Role::Ingest && !webhook_secrets.is_empty() {
        env.push(plain_env("AFORO_SECRETS_DIR", SECRETS_DIR));
        for (i, secret) in webhook_secrets.iter().enumerate() {
            let volume = format!("webhook-secret-{i}");
            volumes.push(Volume {
                name: volume.clone(),
                secret: Some(SecretVolumeSource {
                    secret_name: Some(secret.clone()),
                    optional: Some(true),
                    ..SecretVolumeSource::default()
                }),
                ..Volume::default()
            });
            mounts.push(VolumeMount {
                name: volume,
                mount_path: format!("{SECRETS_DIR}/{namespace}/{secret}"),
                read_only: Some(true),
                ..VolumeMount::default()
            });
        }
    }
    if role == Role::Ingest {
        // Each stored event names the pod that accepted it.
        env.push(EnvVar {
            name: "AFORO_NODE".into(),
            value_from: Some(EnvVarSource {
                field_ref: Some(ObjectFieldSelector {
                    field_path: "metadata.name".into(),
                    ..ObjectFieldSelector::default()
                }),
                ..EnvVarSource::default()
            }),
            ..EnvVar::default()
        });
    }
    let replicas = match (&spec.autoscaling, spec.replicas) {
        (Some(_), _) => None,
        (None, replicas) => Some(replicas.unwrap_or(1)),
    };
    Deployment {
        metadata,
        spec: DeploymentSpec {
            replicas,
            selector: LabelSelector {
                match_labels: Some(selector(&name, Some(role.name()))),
                ..LabelSelector::default()
            },
            strategy: Some(DeploymentStrategy {
                type_: Some("RollingUpdate".into()),
                ..DeploymentStrategy::default()
            }),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels(&name, Some(role.name()))),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    service_account_name: Some(name.clone()),
                    containers: vec![Container {
                        name: "aforo".into(),
                        image: Some(pipeline.spec.image.clone()),
                        args: Some(vec![role.name().into()]),
                        env: Some(env),
                        ports: Some(ports),
                        readiness_probe: Some(probe("/readyz")),
                        liveness_probe: Some(probe("/healthz")),
                        resources: spec.resources.clone(),
                        volume_mounts: (!mounts.is_empty()).then_some(mounts),
                        security_context: Some(SecurityContext {
                            allow_privilege_escalation: Some(false),
                            capabilities: Some(Capabilities {
                                drop: Some(vec!["ALL".into()]),
                                ..Capabilities::default()
                            }),
                            seccomp_profile: Some(SeccompProfile {
                                type_: "RuntimeDefault".into(),
                                ..SeccompProfile::default()
                            }),
                            ..SecurityContext::default()
                        }),
                        ..Container::default()
                    }],
                    volumes: (!volumes.is_empty()).then_some(volumes),
                    ..PodSpec::default()
                }),
            },
            ..DeploymentSpec::default()
        },
        ..Deployment::default()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn pipeline(spec: Value) -> MeteringPipeline {
        let mut base = json!({
            "image": "aforo:1.2.3",
            "database": {"name": "db", "key": "url"},
            "apiKey": {"name": "tenant", "key": "api-key"},
        });
        if let (Value::Object(base), Value::Object(extra)) = (&mut base, spec) {
            base.extend(extra);
        }
        serde_json::from_value(json!({
            "apiVersion": "aforo.io/v1alpha1",
            "kind": "MeteringPipeline",
            "metadata": {"name": "shop", "namespace": "billing", "uid": "u-1",
                         "labels": {"app.kubernetes.io/instance": "argo-app", "team": "x"}},
            "spec": base,
        }))
        .expect("a MeteringPipeline")
    }

    fn find<'a>(children: &'a [Child], kind: ChildKind, name: &str) -> &'a Value {
        &children
            .iter()
            .find(|c| c.kind == kind && c.name == name)
            .unwrap_or_else(|| panic!("no {kind:?} {name}"))
            .object
    }

    fn names(children: &[Child]) -> Vec<String> {
        children
            .iter()
            .map(|c| format!("{}/{}", c.kind.name(), c.name))
            .collect()
    }

    #[test]
    fn a_pipeline_yields_a_deployment_pdb_per_role_and_the_services() {
        let built = children(
            &pipeline(json!({"enrich": {"replicas": 3}})),
            &BTreeSet::new(),
        );
        assert_eq!(
            names(&built),
            [
                "ServiceAccount/shop",
                "Deployment/shop-ingest",
                "PodDisruptionBudget/shop-ingest",
                "Service/shop-ingest",
                "Service/shop-ingest-grpc",
                "Deployment/shop-enrich",
                "PodDisruptionBudget/shop-enrich",
                "Deployment/shop-billing",
                "PodDisruptionBudget/shop-billing",
                "Service/shop-billing",
                "Service/shop-metrics",
            ]
        );
        let enrich = find(&built, ChildKind::Deployment, "shop-enrich");
        assert_eq!(enrich["spec"]["replicas"], 3);
        assert_eq!(
            find(&built, ChildKind::Deployment, "shop-billing")["spec"]["replicas"],
            1,
            "a role without replicas or autoscaling runs one"
        );
        let container = &enrich["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(container["image"], "aforo:1.2.3");
        assert_eq!(container["args"], json!(["enrich"]));
        assert_eq!(
            enrich["spec"]["template"]["spec"]["serviceAccountName"],
            "shop"
        );
    }

    #[test]
    fn the_deployments_take_their_configuration_from_the_referenced_secrets() {
        let built = children(
            &pipeline(json!({"redis": {"name": "cache", "key": "redis-url"}})),
            &BTreeSet::new(),
        );
        let ingest = find(&built, ChildKind::Deployment, "shop-ingest");
        let container = &ingest["spec"]["template"]["spec"]["containers"][0];
        let env = container["env"].as_array().expect("env");
        let var = |name: &str| {
            env.iter()
                .find(|e| e["name"] == name)
                .unwrap_or_else(|| panic!("no {name} in {env:?}"))
                .clone()
        };
        assert_eq!(
            var("AFORO_DATABASE_URL")["valueFrom"]["secretKeyRef"],
            json!({"name": "db", "key": "url"})
        );
        assert_eq!(
            var("AFORO_REDIS_URL")["valueFrom"]["secretKeyRef"],
            json!({"name": "cache", "key": "redis-url"})
        );
        assert_eq!(var("AFORO_GRPC_ADDR")["value"], "0.0.0.0:8471");
        assert_eq!(var("AFORO_GRPC_MAX_CONNECTION_AGE")["value"], "5m");
        assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
        assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/healthz");
        let ports: Vec<&str> = container["ports"]
            .as_array()
            .expect("ports")
            .iter()
            .filter_map(|p| p["name"].as_str())
            .collect();
        assert_eq!(ports, ["http", "grpc"]);
    }

    #[test]
    fn an_autoscaled_role_gets_an_hpa_and_its_deployment_no_replicas() {
        let built = children(
            &pipeline(json!({
                "ingest": {"autoscaling": {"minReplicas": 2, "maxReplicas": 9, "targetCpuUtilization": 60}}
            })),
            &BTreeSet::new(),
        );
        let deployment = find(&built, ChildKind::Deployment, "shop-ingest");
        assert!(
            deployment["spec"].get("replicas").is_none(),
            "the HPA owns replicas: {}",
            deployment["spec"]
        );
        let hpa = find(&built, ChildKind::HorizontalPodAutoscaler, "shop-ingest");
        assert_eq!(hpa["apiVersion"], "autoscaling/v2");
        assert_eq!(
            hpa["spec"]["scaleTargetRef"],
            json!({"apiVersion": "apps/v1", "kind": "Deployment", "name": "shop-ingest"})
        );
        assert_eq!(hpa["spec"]["minReplicas"], 2);
        assert_eq!(hpa["spec"]["maxReplicas"], 9);
        assert_eq!(
            hpa["spec"]["metrics"][0]["resource"],
            json!({"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 60}})
        );
        assert!(
            !built
                .iter()
                .any(|c| c.kind == ChildKind::HorizontalPodAutoscaler && c.name != "shop-ingest"),
            "only the autoscaled role has an HPA"
        );
    }

    #[test]
    fn grpc_reaches_every_ingest_replica_through_a_headless_service() {
        let built = children(&pipeline(json!({})), &BTreeSet::new());
        let headless = find(&built, ChildKind::Service, "shop-ingest-grpc");
        assert_eq!(headless["spec"]["clusterIP"], "None");
        assert_eq!(
            headless["spec"]["ports"],
            json!([{"name": "grpc", "port": 8471, "targetPort": "grpc", "protocol": "TCP",
                    "appProtocol": "kubernetes.io/h2c"}])
        );
        assert_eq!(
            headless["spec"]["selector"],
            json!({"aforo.io/pipeline": "shop", "app.kubernetes.io/component": "ingest"})
        );
        let metrics = find(&built, ChildKind::Service, "shop-metrics");
        assert_eq!(metrics["metadata"]["labels"]["aforo.io/metrics"], "true");
        assert_eq!(
            metrics["spec"]["selector"],
            json!({"aforo.io/pipeline": "shop"})
        );
    }

    #[test]
    fn every_child_has_our_labels_an_owner_and_never_the_pipelines_labels() {
        for child in children(
            &pipeline(json!({"billing": {"autoscaling": {"minReplicas": 1, "maxReplicas": 2}}})),
            &BTreeSet::new(),
        ) {
            let meta = &child.object["metadata"];
            assert_eq!(meta["namespace"], "billing", "{}", child.name);
            assert_eq!(meta["labels"]["app.kubernetes.io/managed-by"], MANAGER);
            assert_eq!(meta["labels"]["aforo.io/pipeline"], "shop");
            assert!(meta["labels"].get("team").is_none(), "{}", child.name);
            assert!(
                meta["labels"].get("app.kubernetes.io/instance").is_none(),
                "Argo CD's tracking label is not ours to set: {}",
                child.name
            );
            assert_eq!(
                meta["ownerReferences"],
                json!([{"apiVersion": "aforo.io/v1alpha1", "kind": "MeteringPipeline",
                        "name": "shop", "uid": "u-1", "controller": true, "blockOwnerDeletion": true}])
            );
            assert!(child.hash().starts_with("sha256:"), "{}", child.name);
        }
    }

    #[test]
    fn ingest_mounts_the_webhook_sources_secrets_where_the_receiver_reads_them() {
        let secrets = BTreeSet::from(["github-webhook".to_owned(), "stripe-webhook".to_owned()]);
        let built = children(&pipeline(json!({})), &secrets);
        let ingest = find(&built, ChildKind::Deployment, "shop-ingest");
        let pod = &ingest["spec"]["template"]["spec"];
        assert_eq!(
            pod["volumes"],
            json!([
                {"name": "webhook-secret-0", "secret": {"secretName": "github-webhook", "optional": true}},
                {"name": "webhook-secret-1", "secret": {"secretName": "stripe-webhook", "optional": true}},
            ])
        );
        assert_eq!(
            pod["containers"][0]["volumeMounts"][1],
            json!({"name": "webhook-secret-1", "mountPath": "/var/run/aforo/secrets/billing/stripe-webhook", "readOnly": true})
        );
        let env = pod["containers"][0]["env"].as_array().expect("env");
        assert!(
            env.contains(&json!({"name": "AFORO_SECRETS_DIR", "value": "/var/run/aforo/secrets"}))
        );
        for role in ["enrich", "billing"] {
            let other = find(&built, ChildKind::Deployment, &format!("shop-{role}"));
            assert!(
                other["spec"]["template"]["spec"].get("volumes").is_none(),
                "{role}"
            );
        }
        let without = children(&pipeline(json!({})), &BTreeSet::new());
        let ingest = find(&without, ChildKind::Deployment, "shop-ingest");
        assert!(ingest["spec"]["template"]["spec"].get("volumes").is_none());
    }

    #[test]
    fn pod_disruption_budgets_let_one_pod_go_at_a_time() {
        let built = children(&pipeline(json!({})), &BTreeSet::new());
        let pdb = find(&built, ChildKind::PodDisruptionBudget, "shop-billing");
        assert_eq!(pdb["apiVersion"], "policy/v1");
        assert_eq!(pdb["spec"]["maxUnavailable"], 1);
        assert_eq!(
            pdb["spec"]["selector"]["matchLabels"],
            json!({"aforo.io/pipeline": "shop", "app.kubernetes.io/component": "billing"})
        );
    }

    #[test]
    fn the_same_pipeline_builds_the_same_bytes_and_a_change_changes_the_hash() {
        let a = children(
            &pipeline(json!({"enrich": {"replicas": 2}})),
            &BTreeSet::new(),
        );
        let b = children(
            &pipeline(json!({"enrich": {"replicas": 2}})),
            &BTreeSet::new(),
        );
        assert_eq!(a, b);
        let c = children(
            &pipeline(json!({"enrich": {"replicas": 3}})),
            &BTreeSet::new(),
        );
        let hash = |built: &[Child]| {
            built
                .iter()
                .find(|c| c.name == "shop-enrich" && c.kind == ChildKind::Deployment)
                .map(|c| c.hash().to_owned())
        };
        assert_ne!(hash(&a), hash(&c));
    }

    #[test]
    fn a_name_too_long_for_its_services_is_refused_naming_the_field() {
        let mut long = pipeline(json!({}));
        long.metadata.name = Some("a".repeat(MAX_NAME_LENGTH + 1));
        let error = check(&long).expect_err("too long");
        assert_eq!(error.field, "metadata.name");
        assert!(error.message.contains("at most 51"), "{}", error.message);
        let mut dotted = pipeline(json!({}));
        dotted.metadata.name = Some("shop.eu".into());
        assert!(check(&dotted).is_err());
        assert_eq!(check(&pipeline(json!({}))), Ok(()));
    }
}
