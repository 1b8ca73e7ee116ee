//! The operator end to end, every part a real process: a kube-apiserver and
//! etcd (aforo-kubetest), `aforo billing` as the data plane on loopback
//! (the operator's `--catalog-endpoint` points at it, as it would at the
//! pipeline's billing Service in a cluster), and `aforo operator` itself.
//!
//! Needs kube-apiserver and etcd: `eval "$(scripts/controlplane.sh)"`.
//!
//! Dates: a price change takes effect next month ([`common::Months`]);
//! nothing else depends on the day.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Stdio;

use aforo_crds::catalog::{MeteringPipeline, RatePlan, yaml_documents};
use aforo_kubetest::{ControlPlane, WAIT, eventually};
use common::BIN;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Client;
use kube::api::{
    Api, ApiResource, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams, PostParams,
};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// A started `aforo` server process and the address from its ready line.
struct Process {
    child: Child,
    http: String,
}

async fn start(args: &[&str], env: &[(&str, &Path)]) -> Process {
    let mut command = Command::new(BIN);
    command
        .args(args)
        .env("AFORO_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true);
    for (name, value) in env {
        command.env(name, value);
    }
    let mut child = command.spawn().expect("spawn aforo");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let ready = tokio::time::timeout(WAIT, async {
        while let Some(line) = lines.next_line().await.expect("read stdout") {
            if line.contains(" ready: ") {
                return line;
            }
        }
        panic!("aforo {args:?} exited before it was ready");
    })
    .await
    .unwrap_or_else(|_| panic!("aforo {args:?} was not ready within {WAIT:?}"));
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    let http = ready
        .split_whitespace()
        .find_map(|w| w.strip_prefix("http="))
        .unwrap_or_else(|| panic!("no http= in {ready:?}"))
        .to_owned();
    Process { child, http }
}

impl Process {
    /// SIGTERM, and the exit status must be success (a graceful stop).
    async fn terminate(mut self) {
        let pid = self.child.id().expect("a pid") as i32;
        // SAFETY: kill(2) on a child this test spawned and has not reaped.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0, "send SIGTERM");
        let status = tokio::time::timeout(WAIT, self.child.wait())
            .await
            .expect("aforo stops within the wait")
            .expect("wait for aforo");
        assert!(status.success(), "aforo exited with {status}");
    }
}

async fn run(args: &[&str]) -> String {
    let output = Command::new(BIN)
        .args(args)
        .env("AFORO_LOG", "warn")
        .output()
        .await
        .expect("run aforo");
    assert!(
        output.status.success(),
        "aforo {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn crds() -> Vec<CustomResourceDefinition> {
    aforo_crds::catalog::crds()
}

/// The example catalog (meters, products, rate plans) in `namespace`,
/// with `edit` applied to the rate plans' text.
fn examples(namespace: &str, edit: impl Fn(String) -> String) -> Vec<Value> {
    let dir = format!(
        "{}/../examples",
        std::env::var("CARGO_MANIFEST_DIR")
            .expect("CARGO_MANIFEST_DIR: run by cargo test, or by scripts/hard-days.sh")
    );
    let mut out = Vec::new();
    for file in ["meters.yaml", "products.yaml", "rate-plans.yaml"] {
        let mut text = std::fs::read_to_string(format!("{dir}/{file}")).expect("an example");
        if file == "rate-plans.yaml" {
            text = edit(text);
        }
        for (_, mut value) in yaml_documents(&text, file).expect("YAML") {
            value["metadata"]["namespace"] = json!(namespace);
            out.push(value);
        }
    }
    out
}

fn api(client: &Client, namespace: &str, kind: &str) -> Api<DynamicObject> {
    let plural = format!("{}s", kind.to_lowercase());
    let resource = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("aforo.io", "v1alpha1", kind),
        &plural,
    );
    Api::namespaced_with(client.clone(), namespace, &resource)
}

async fn apply_all(client: &Client, namespace: &str, objects: &[Value]) {
    for object in objects {
        let kind = object["kind"].as_str().expect("a kind");
        let name = object["metadata"]["name"].as_str().expect("a name");
        api(client, namespace, kind)
            .patch(
                name,
                &PatchParams::apply("aforo-e2e").force(),
                &Patch::Apply(object),
            )
            .await
            .unwrap_or_else(|e| panic!("apply {kind}/{name}: {e}"));
    }
}

async fn data_plane_catalog(http: &str, key: &str) -> (u16, Value) {
    let response = reqwest::Client::new()
        .get(format!("{http}/v1/catalog/versions"))
        .bearer_auth(key)
        .send()
        .await
        .expect("GET /v1/catalog/versions");
    let status = response.status().as_u16();
    (status, response.json().await.expect("JSON"))
}

/// resourceVersions of the pipeline, its children and the catalog resources.
async fn versions(client: &Client, namespace: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut resources: Vec<ApiResource> = ["MeteringPipeline", "Meter", "Product", "RatePlan"]
        .iter()
        .map(|kind| {
            ApiResource::from_gvk_with_plural(
                &GroupVersionKind::gvk("aforo.io", "v1alpha1", kind),
                &format!("{}s", kind.to_lowercase()),
            )
        })
        .collect();
    resources.extend(
        aforo_operator::children::ChildKind::ALL
            .iter()
            .map(|k| k.api_resource()),
    );
    resources.push(ApiResource::erase::<k8s_openapi::api::events::v1::Event>(
        &(),
    ));
    for resource in resources {
        let api = Api::<DynamicObject>::namespaced_with(client.clone(), namespace, &resource);
        for object in api.list(&ListParams::default()).await.expect("list").items {
            out.insert(
                format!(
                    "{}/{}",
                    resource.kind,
                    object.metadata.name.unwrap_or_default()
                ),
                object.metadata.resource_version.unwrap_or_default(),
            );
        }
    }
    out
}

async fn metrics(http: &str) -> String {
    reqwest::get(format!("{http}/metrics"))
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("text")
}

/// The value of one sample line of an exposition, e.g.
/// `aforo_operator_reconciliations_total{controller="pipeline",result="ok"}`.
fn sample(text: &str, prefix: &str) -> u64 {
    text.lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

#[tokio::test]
async fn the_catalog_reaches_a_running_data_plane_and_a_restarted_operator_writes_nothing() {
    let control_plane = ControlPlane::shared()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    control_plane
        .install_crds(&crds())
        .await
        .unwrap_or_else(|e| panic!("install the CRDs: {e}"));
    let ns = control_plane.namespace("e2e").await.expect("a namespace");
    let client = control_plane.client().expect("a client");

    // The data plane: a tenant named after the namespace, its key, and
    // `aforo billing` serving the catalog API.
    let dir = tempfile::tempdir().expect("a temporary directory");
    let database = format!("sqlite://{}", dir.path().join("aforo.db").display());
    run(&["tenants", "create", &ns, "--database-url", &database]).await;
    let key = run(&[
        "keys",
        "create",
        "--tenant",
        &ns,
        "--database-url",
        &database,
    ])
    .await
    .trim()
    .to_owned();
    let billing = start(
        &[
            "billing",
            "--database-url",
            &database,
            "--http-addr",
            "127.0.0.1:0",
            "--grpc-addr",
            "127.0.0.1:0",
            "--bill-every-secs",
            "0",
        ],
        &[],
    )
    .await;
    let (status, versions_before) = data_plane_catalog(&billing.http, &key).await;
    assert_eq!((status, &versions_before["items"]), (200, &json!([])));

    Api::<Secret>::namespaced(client.clone(), &ns)
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "metadata": {"name": "aforo-tenant"}, "stringData": {"api-key": key}
            }))
            .expect("a Secret"),
        )
        .await
        .expect("create the key's Secret");
    apply_all(&client, &ns, &examples(&ns, |t| t)).await;
    let mut pipeline = yaml_documents(
        &std::fs::read_to_string(format!(
            "{}/../examples/pipeline.yaml",
            std::env::var("CARGO_MANIFEST_DIR")
                .expect("CARGO_MANIFEST_DIR: run by cargo test, or by scripts/hard-days.sh")
        ))
        .expect("the example pipeline"),
        "pipeline.yaml",
    )
    .expect("YAML")
    .remove(0)
    .1;
    pipeline["metadata"]["namespace"] = json!(ns);
    apply_all(&client, &ns, &[pipeline]).await;

    let operator_args = |identity: &'static str| {
        vec![
            "operator".to_owned(),
            "--watch-namespace".into(),
            ns.clone(),
            "--lease-namespace".into(),
            ns.clone(),
            "--identity".into(),
            identity.into(),
            "--catalog-endpoint".into(),
            billing.http.clone(),
            "--http-addr".into(),
            "127.0.0.1:0".into(),
        ]
    };
    let kubeconfig = control_plane.kubeconfig();
    let args = operator_args("first");
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let operator = start(&args, &[("KUBECONFIG", kubeconfig)]).await;

    // Version 1 lands on the data plane, and in the pipeline's status.
    let pipelines = Api::<MeteringPipeline>::namespaced(client.clone(), &ns);
    let applied = eventually("catalog version 1 in the pipeline's status", || async {
        let p = pipelines.get("aforo").await.map_err(|e| e.to_string())?;
        let status = p.status.clone().unwrap_or_default();
        if status.catalog_version == Some(1) {
            Ok(status)
        } else {
            Err(format!("{:?}", p.status))
        }
    })
    .await;
    let (_, on_data_plane) = data_plane_catalog(&billing.http, &key).await;
    assert_eq!(on_data_plane["items"].as_array().map(Vec::len), Some(1));
    assert_eq!(
        applied.catalog_hash.as_deref(),
        on_data_plane["items"][0]["content_hash"].as_str(),
        "the status shows the hash the data plane stored"
    );
    let catalog = applied
        .conditions
        .iter()
        .find(|c| c.type_ == "CatalogApplied")
        .expect("CatalogApplied");
    assert_eq!(
        (catalog.status.as_str(), catalog.reason.as_str()),
        ("True", "Applied")
    );
    let plans = Api::<RatePlan>::namespaced(client.clone(), &ns);
    eventually("the RatePlan is in force in version 1", || async {
        let plan = plans
            .get("translation-pro")
            .await
            .map_err(|e| e.to_string())?;
        let status = plan.status.clone().unwrap_or_default();
        let applied = status
            .conditions
            .iter()
            .any(|c| c.type_ == "Applied" && c.status == "True");
        if applied && status.catalog_version == Some(1) {
            Ok(())
        } else {
            Err(format!("{:?}", plan.status))
        }
    })
    .await;

    // A price changes from next month on: version 2.
    let next_month = common::rfc3339(common::Months::now().start(-1));
    apply_all(
        &client,
        &ns,
        &examples(&ns, |text| {
            let cheaper = text.replacen("unitPrice: \"0.00002\"", "unitPrice: \"0.000018\"", 1);
            common::set_first(&cheaper, "effectiveFrom", &next_month)
        }),
    )
    .await;
    eventually("catalog version 2 in the pipeline's status", || async {
        let p = pipelines.get("aforo").await.map_err(|e| e.to_string())?;
        match p.status.as_ref().and_then(|s| s.catalog_version) {
            Some(2) => Ok(()),
            _ => Err(format!("{:?}", p.status)),
        }
    })
    .await;
    eventually("the RatePlan is in force in version 2", || async {
        let plan = plans
            .get("translation-pro")
            .await
            .map_err(|e| e.to_string())?;
        match plan.status.as_ref().and_then(|s| s.catalog_version) {
            Some(2) => Ok(()),
            _ => Err(format!("{:?}", plan.status)),
        }
    })
    .await;
    let (_, on_data_plane) = data_plane_catalog(&billing.http, &key).await;
    assert_eq!(on_data_plane["items"].as_array().map(Vec::len), Some(2));

    // Restart the operator: it reconciles everything again and writes nothing.
    operator.terminate().await;
    let stored = versions(&client, &ns).await;
    let args = operator_args("second");
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let restarted = start(&args, &[("KUBECONFIG", kubeconfig)]).await;
    let text = eventually(
        "the restarted operator reconciled everything once",
        || async {
            let text = metrics(&restarted.http).await;
            let pipelines = sample(
                &text,
                r#"aforo_operator_reconciliations_total{controller="pipeline",result="ok"}"#,
            );
            let catalogs = sample(
                &text,
                r#"aforo_operator_reconciliations_total{controller="catalog",result="ok"}"#,
            );
            if pipelines >= 1 && catalogs >= 1 {
                Ok(text)
            } else {
                Err(text)
            }
        },
    )
    .await;
    assert_eq!(sample(&text, "aforo_operator_writes_total"), 0, "{text}");
    assert_eq!(versions(&client, &ns).await, stored, "an object changed");
    let (_, on_data_plane) = data_plane_catalog(&billing.http, &key).await;
    assert_eq!(
        on_data_plane["items"].as_array().map(Vec::len),
        Some(2),
        "re-applying identical content made no new version"
    );
    restarted.terminate().await;
    billing.terminate().await;
}
