//! The Helm chart: `helm lint` passes; `helm template` renders objects the
//! real apiserver accepts (a server-side dry run of each, then an apply);
//! and the RBAC it grants is enough for the operator to do its whole job
//! while it cannot, say, list Secrets.
//!
//! helm comes from scripts/helm.sh (built from its Go module, cached):
//! `AFORO_HELM` names it, as `scripts/test.sh` exports; without it the test
//! runs the script itself.

mod common;

use std::path::PathBuf;
use std::process::Command;

use aforo_crds::catalog::{Meter, MeteringPipeline, Product, RatePlan, yaml_documents};
use aforo_operator::{Operator, OperatorConfig};
use common::*;
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
use kube::api::{
    Api, ApiResource, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams, PostParams,
};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use serde_json::{Value, json};

fn chart() -> String {
    format!(
        "{}/../charts/aforo",
        std::env::var("CARGO_MANIFEST_DIR")
            .expect("CARGO_MANIFEST_DIR: run by cargo test, or by scripts/hard-days.sh")
    )
}
const KUBE_VERSION: &str = "1.36.3";

fn helm() -> PathBuf {
    if let Some(path) = std::env::var_os("AFORO_HELM") {
        return PathBuf::from(path);
    }
    let script = format!(
        "{}/../scripts/helm.sh",
        std::env::var("CARGO_MANIFEST_DIR")
            .expect("CARGO_MANIFEST_DIR: run by cargo test, or by scripts/hard-days.sh")
    );
    let output = Command::new(&script)
        .output()
        .unwrap_or_else(|e| panic!("run {script}: {e}"));
    assert!(
        output.status.success(),
        "{script} failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    PathBuf::from(
        stdout
            .trim()
            .strip_prefix("export AFORO_HELM=")
            .unwrap_or_else(|| panic!("{script} printed {stdout:?}")),
    )
}

fn run_helm(args: &[&str]) -> String {
    let output = Command::new(helm()).args(args).output().expect("run helm");
    assert!(
        output.status.success(),
        "helm {args:?} failed:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The chart rendered for a release named `release` in `namespace`.
fn render(release: &str, namespace: &str, extra: &[&str]) -> Vec<Value> {
    let chart = chart();
    let mut args = vec![
        "template",
        release,
        &chart,
        "--namespace",
        namespace,
        "--kube-version",
        KUBE_VERSION,
        "--include-crds",
    ];
    args.extend(extra);
    let text = run_helm(&args);
    yaml_documents(&text, "helm template")
        .expect("helm renders YAML")
        .into_iter()
        .map(|(_, v)| v)
        .collect()
}

fn api_for(client: &Client, object: &Value, namespace: &str) -> (Api<DynamicObject>, String) {
    let api_version = object["apiVersion"].as_str().expect("apiVersion");
    let kind = object["kind"].as_str().expect("kind");
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    let plural = match kind {
        "ServiceAccount" => "serviceaccounts",
        "ClusterRole" => "clusterroles",
        "ClusterRoleBinding" => "clusterrolebindings",
        "Role" => "roles",
        "RoleBinding" => "rolebindings",
        "Deployment" => "deployments",
        "Service" => "services",
        "CustomResourceDefinition" => "customresourcedefinitions",
        other => panic!("the chart renders a {other} this test does not know"),
    };
    let resource =
        ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), plural);
    let namespaced = !matches!(
        kind,
        "ClusterRole" | "ClusterRoleBinding" | "CustomResourceDefinition"
    );
    let api = if namespaced {
        Api::namespaced_with(client.clone(), namespace, &resource)
    } else {
        Api::all_with(client.clone(), &resource)
    };
    (
        api,
        format!(
            "{kind}/{}",
            object["metadata"]["name"].as_str().unwrap_or_default()
        ),
    )
}

/// Applies every rendered object: first all as a server-side dry run, then
/// for real.
async fn apply_chart(client: &Client, namespace: &str, objects: &[Value]) {
    for dry_run in [true, false] {
        for object in objects {
            let (api, label) = api_for(client, object, namespace);
            let mut params = PatchParams::apply("aforo-chart-test").force();
            params.dry_run = dry_run;
            let name = object["metadata"]["name"].as_str().expect("a name");
            api.patch(name, &params, &Patch::Apply(object))
                .await
                .unwrap_or_else(|e| {
                    panic!("the apiserver refused {label} (dry run: {dry_run}): {e}")
                });
        }
    }
}

#[test]
fn helm_lint_passes() {
    let out = run_helm(&["lint", "--strict", &chart(), "--kube-version", KUBE_VERSION]);
    assert!(out.contains("0 chart(s) failed"), "{out}");
}

#[tokio::test]
async fn the_rendered_chart_is_accepted_by_the_control_plane() {
    let (_, client, ns) = cluster("chart").await;
    let objects = render(&ns, &ns, &["--set", "metrics.service=true"]);
    let kinds: Vec<&str> = objects.iter().filter_map(|o| o["kind"].as_str()).collect();
    for kind in [
        "CustomResourceDefinition",
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Role",
        "RoleBinding",
        "Deployment",
        "Service",
    ] {
        assert!(
            kinds.contains(&kind),
            "the chart renders no {kind}: {kinds:?}"
        );
    }
    assert_eq!(
        kinds
            .iter()
            .filter(|k| **k == "CustomResourceDefinition")
            .count(),
        6,
        "the six aforo CRDs"
    );
    apply_chart(&client, &ns, &objects).await;

    let deployment: Value = serde_json::to_value(
        Api::<k8s_openapi::api::apps::v1::Deployment>::namespaced(client.clone(), &ns)
            .get(&format!("{ns}-aforo-operator"))
            .await
            .expect("the operator Deployment"),
    )
    .expect("JSON");
    let pod = &deployment["spec"]["template"]["spec"];
    assert_eq!(pod["serviceAccountName"], format!("{ns}-aforo-operator"));
    assert_eq!(pod["containers"][0]["args"], json!(["operator"]));
    assert_eq!(
        pod["containers"][0]["readinessProbe"]["httpGet"]["path"],
        "/readyz"
    );
}

/// A client authenticated as the chart's ServiceAccount, by a token the
/// apiserver itself issues (TokenRequest).
async fn client_as_service_account(
    admin: &Client,
    kubeconfig: &std::path::Path,
    namespace: &str,
    name: &str,
) -> Client {
    let token = Api::<ServiceAccount>::namespaced(admin.clone(), namespace)
        .create_token_request(
            name,
            &PostParams::default(),
            &TokenRequest {
                spec: Some(TokenRequestSpec {
                    expiration_seconds: Some(3600),
                    ..TokenRequestSpec::default()
                }),
                ..TokenRequest::default()
            },
        )
        .await
        .expect("a token for the ServiceAccount")
        .status
        .expect("a token")
        .token
        .expect("a token");
    let mut config = Kubeconfig::read_from(kubeconfig).expect("the kubeconfig");
    for user in &mut config.auth_infos {
        if let Some(auth) = user.auth_info.as_mut() {
            auth.token = Some(token.clone().into());
        }
    }
    let config = Config::from_custom_kubeconfig(config, &KubeConfigOptions::default())
        .await
        .expect("a client configuration");
    Client::try_from(config).expect("a client")
}

#[tokio::test]
async fn the_charts_rbac_is_enough_for_the_operator_and_no_more() {
    let (control_plane, admin, ns) = cluster("chart-rbac").await;
    apply_chart(&admin, &ns, &render(&ns, &ns, &[])).await;
    let account = format!("{ns}-aforo-operator");
    let client = client_as_service_account(&admin, control_plane.kubeconfig(), &ns, &account).await;

    // Least privilege: Secrets are read by name only.
    let denied = Api::<Secret>::namespaced(client.clone(), &ns)
        .list(&ListParams::default())
        .await;
    assert!(
        matches!(&denied, Err(kube::Error::Api(s)) if s.code == 403),
        "the operator may list Secrets: {denied:?}"
    );

    // Everything a reconcile does, as the ServiceAccount.
    let mut config = OperatorConfig::for_namespace(&ns);
    config.lease_name = account.clone();
    config.catalog_endpoint = Some("http://127.0.0.1:9".into());
    let operator = Operator::start(client, config)
        .await
        .expect("the operator starts with the chart's RBAC");
    create::<Secret>(
        &admin,
        &ns,
        json!({"metadata": {"name": "aforo-tenant"}, "stringData": {"api-key": "k"}}),
    )
    .await;
    create::<MeteringPipeline>(
        &admin,
        &ns,
        pipeline(
            "shop",
            json!({"ingest": {"autoscaling": {"minReplicas": 1, "maxReplicas": 2}}}),
        ),
    )
    .await;
    create::<Meter>(
        &admin,
        &ns,
        json!({"apiVersion": "aforo.io/v1alpha1", "kind": "Meter", "metadata": {"name": "calls"},
               "spec": {"eventType": "api.call", "aggregation": "COUNT"}}),
    )
    .await;
    create::<Product>(
        &admin,
        &ns,
        json!({"apiVersion": "aforo.io/v1alpha1", "kind": "Product", "metadata": {"name": "api"},
               "spec": {"displayName": "API", "meters": ["calls"]}}),
    )
    .await;
    create::<RatePlan>(
        &admin,
        &ns,
        json!({"apiVersion": "aforo.io/v1alpha1", "kind": "RatePlan", "metadata": {"name": "pro"},
               "spec": {"productRef": "api", "currency": "EUR", "billingPeriod": "MONTHLY",
                        "effectiveFrom": "2026-01-01T00:00:00Z",
                        "charges": [{"meter": "calls", "perUnit": {"unitPrice": "0.01"}}]}}),
    )
    .await;
    eventually("the pipeline's children, status and events", || async {
        let hpa = Api::<k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler>::namespaced(
            admin.clone(),
            &ns,
        )
        .get_opt("shop-ingest")
        .await
        .map_err(|e| e.to_string())?;
        let pipeline = Api::<MeteringPipeline>::namespaced(admin.clone(), &ns)
            .get("shop")
            .await
            .map_err(|e| e.to_string())?;
        let plan = Api::<RatePlan>::namespaced(admin.clone(), &ns)
            .get("pro")
            .await
            .map_err(|e| e.to_string())?;
        let events = Api::<k8s_openapi::api::events::v1::Event>::namespaced(admin.clone(), &ns)
            .list(&ListParams::default())
            .await
            .map_err(|e| e.to_string())?;
        let pipeline_status = pipeline.status.clone().unwrap_or_default();
        let catalog_reason = pipeline_status
            .conditions
            .iter()
            .find(|c| c.type_ == "CatalogApplied")
            .map(|c| c.reason.clone());
        if hpa.is_some()
            // It read the API key Secret, and tried the catalog API.
            && catalog_reason.as_deref() == Some("CatalogApiUnavailable")
            && plan.status.is_some_and(|s| !s.conditions.is_empty())
            && events.items.iter().any(|e| e.reason.as_deref() == Some("ChildrenApplied"))
        {
            Ok(())
        } else {
            Err(format!("{:?}", pipeline.status))
        }
    })
    .await;
    assert_eq!(operator.metrics().reconciliations("pipeline", "error"), 0);
    assert_eq!(operator.metrics().reconciliations("catalog", "error"), 0);

    // The Lease, and the finalizer's removal on deletion.
    Api::<MeteringPipeline>::namespaced(admin.clone(), &ns)
        .delete("shop", &Default::default())
        .await
        .expect("delete the pipeline");
    eventually("the pipeline is gone", || async {
        match Api::<MeteringPipeline>::namespaced(admin.clone(), &ns)
            .get_opt("shop")
            .await
            .map_err(|e| e.to_string())?
        {
            None => Ok(()),
            Some(p) => Err(format!("{:?}", p.metadata)),
        }
    })
    .await;
    operator
        .stop()
        .await
        .expect("the operator releases its Lease with the chart's RBAC");
}
