//! The CRDs as a real kube-apiserver enforces them: installed from the
//! chart's YAML, they are served; the example catalog is admitted and stored
//! without a field pruned; and what breaks a CEL rule is rejected at
//! admission with the rule's message, leaving nothing stored.
//!
//! Needs kube-apiserver and etcd: `eval "$(scripts/controlplane.sh)"`.

use std::collections::BTreeMap;

use aforo_crds::catalog::{Meter, MeteringPipeline, RatePlan, WebhookSource, yaml_documents};
use aforo_kubetest::ControlPlane;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Resource;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, PostParams};
use kube::core::{ObjectMeta, Status};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

fn chart_crds_file() -> String {
    format!(
        "{}/../charts/aforo/crds/aforo.io.yaml",
        std::env::var("CARGO_MANIFEST_DIR")
            .expect("CARGO_MANIFEST_DIR: run by cargo test, or by scripts/hard-days.sh")
    )
}

fn examples() -> String {
    format!(
        "{}/../examples",
        std::env::var("CARGO_MANIFEST_DIR")
            .expect("CARGO_MANIFEST_DIR: run by cargo test, or by scripts/hard-days.sh")
    )
}

/// The CRDs exactly as the Helm chart installs them.
fn chart_crds() -> Vec<CustomResourceDefinition> {
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

fn typed<K: Resource<DynamicType = ()> + DeserializeOwned>(
    name: &str,
    namespace: &str,
    spec: Value,
) -> K {
    let kind = K::kind(&());
    serde_json::from_value(json!({
        "apiVersion": K::api_version(&()),
        "kind": kind,
        "metadata": ObjectMeta {
            name: Some(name.into()),
            namespace: Some(namespace.into()),
            ..ObjectMeta::default()
        },
        "spec": spec,
    }))
    .unwrap_or_else(|e| panic!("a {kind}: {e}"))
}

/// The apiserver's answer to a request that must fail validation.
fn invalid<T: std::fmt::Debug>(result: Result<T, kube::Error>) -> Status {
    match result {
        Err(kube::Error::Api(status)) => {
            assert_eq!(
                (status.code, status.reason.as_str()),
                (422, "Invalid"),
                "{status:?}"
            );
            *status
        }
        other => panic!("expected 422 Invalid from admission, got {other:?}"),
    }
}

/// Whether `stored` holds every field of `sent` with the same value (it may
/// hold more: defaults).
fn holds_all_of(stored: &Value, sent: &Value) -> bool {
    match (stored, sent) {
        (Value::Object(stored), Value::Object(sent)) => sent
            .iter()
            .all(|(k, v)| stored.get(k).is_some_and(|s| holds_all_of(s, v))),
        (Value::Array(stored), Value::Array(sent)) => {
            stored.len() == sent.len() && stored.iter().zip(sent).all(|(s, v)| holds_all_of(s, v))
        }
        _ => stored == sent,
    }
}

#[tokio::test]
async fn the_example_catalog_is_admitted_and_stored_without_pruning() {
    let (control_plane, namespace) = ControlPlane::shared_with(&chart_crds(), "examples").await;
    let client = control_plane.client().expect("a client");
    let resources: BTreeMap<String, ApiResource> = chart_crds()
        .iter()
        .map(|crd| {
            let names = &crd.spec.names;
            let gvk =
                GroupVersionKind::gvk(&crd.spec.group, &crd.spec.versions[0].name, &names.kind);
            (
                names.kind.clone(),
                ApiResource::from_gvk_with_plural(&gvk, &names.plural),
            )
        })
        .collect();

    let mut files: Vec<_> = std::fs::read_dir(examples())
        .expect("examples/")
        .map(|e| e.expect("an entry of examples/").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    let mut kinds = BTreeMap::<String, usize>::new();
    for file in files {
        let text = std::fs::read_to_string(&file).expect("read an example");
        for (origin, mut sent) in yaml_documents(&text, &file.display().to_string()).expect("YAML")
        {
            sent["metadata"]["namespace"] = json!(namespace);
            let kind = sent["kind"].as_str().expect("a kind").to_owned();
            let resource = resources
                .get(&kind)
                .unwrap_or_else(|| panic!("{origin}: no CRD serves {kind}"));
            let object: DynamicObject = serde_json::from_value(sent.clone()).expect("an object");
            let api = Api::<DynamicObject>::namespaced_with(client.clone(), &namespace, resource);
            let stored = api
                .create(&PostParams::default(), &object)
                .await
                .unwrap_or_else(|e| panic!("{origin} was not admitted: {e}"));
            let stored = serde_json::to_value(&stored).expect("JSON");
            assert!(
                holds_all_of(&stored["spec"], &sent["spec"]),
                "{origin}: the apiserver dropped fields the schema does not know\n\
                 sent:   {}\nstored: {}",
                sent["spec"],
                stored["spec"]
            );
            *kinds.entry(kind).or_default() += 1;
        }
    }
    assert_eq!(
        kinds.keys().collect::<Vec<_>>(),
        [
            "Meter",
            "MeteringPipeline",
            "Product",
            "RatePlan",
            "UsageAlert",
            "WebhookSource"
        ],
        "the examples cover every kind"
    );
}

#[tokio::test]
async fn a_sum_meter_without_a_value_property_is_rejected_with_the_rules_message() {
    let (control_plane, namespace) = ControlPlane::shared_with(&chart_crds(), "meter-rule").await;
    let meters = Api::<Meter>::namespaced(control_plane.client().expect("a client"), &namespace);
    let meter: Meter = typed(
        "characters",
        &namespace,
        json!({"eventType": "translation.characters", "aggregation": "SUM"}),
    );

    let status = invalid(meters.create(&PostParams::default(), &meter).await);
    assert!(
        status.message.contains(
            "valueProperty is required for SUM, MAX, UNIQUE_COUNT and LATEST, and forbidden for COUNT"
        ),
        "{}",
        status.message
    );
    assert!(
        status.message.contains("spec.valueProperty"),
        "the rule's field path: {}",
        status.message
    );
    let stored = meters.get_opt("characters").await.expect("a lookup");
    assert!(stored.is_none(), "a rejected Meter was stored: {stored:?}");
}

#[tokio::test]
async fn tiers_out_of_order_are_rejected_with_the_rules_message() {
    let (control_plane, namespace) = ControlPlane::shared_with(&chart_crds(), "tier-rule").await;
    let plans = Api::<RatePlan>::namespaced(control_plane.client().expect("a client"), &namespace);
    let plan: RatePlan = typed(
        "unsorted",
        &namespace,
        json!({
            "productRef": "p", "currency": "EUR", "billingPeriod": "MONTHLY",
            "effectiveFrom": "2026-01-01T00:00:00Z",
            "charges": [{"meter": "m", "volume": [
                {"upTo": "10000", "unitPrice": "1"},
                {"upTo": "1000", "unitPrice": "2"},
                {"unitPrice": "0.5"}
            ]}]
        }),
    );

    let status = invalid(plans.create(&PostParams::default(), &plan).await);
    assert!(
        status
            .message
            .contains("tiers must be in increasing order of upTo"),
        "{}",
        status.message
    );
    assert!(
        status.message.contains("spec.charges[0].volume"),
        "{}",
        status.message
    );
    let stored = plans.get_opt("unsorted").await.expect("a lookup");
    assert!(
        stored.is_none(),
        "a rejected RatePlan was stored: {stored:?}"
    );
}

#[tokio::test]
async fn an_anchor_day_up_to_the_31st_is_admitted_and_the_32nd_is_not() {
    let (control_plane, namespace) = ControlPlane::shared_with(&chart_crds(), "anchor-day").await;
    let plans = Api::<RatePlan>::namespaced(control_plane.client().expect("a client"), &namespace);
    let plan = |name: &str, day: u32| -> RatePlan {
        typed(
            name,
            &namespace,
            json!({
                "productRef": "p", "currency": "EUR", "billingPeriod": "MONTHLY",
                "billingAnchorDay": day, "effectiveFrom": "2026-01-01T00:00:00Z",
                "charges": [{"meter": "m", "perUnit": {"unitPrice": "1"}}]
            }),
        )
    };
    let admitted = plans
        .create(&PostParams::default(), &plan("month-end", 31))
        .await
        .expect("the 31st is an anchor day");
    assert_eq!(admitted.spec.billing_anchor_day, Some(31));
    let status = invalid(
        plans
            .create(&PostParams::default(), &plan("no-such-day", 32))
            .await,
    );
    assert!(
        status.message.contains("spec.billingAnchorDay"),
        "{}",
        status.message
    );
}

#[tokio::test]
async fn a_tolerance_is_admitted_by_the_grammar_aforo_apply_reads() {
    let (control_plane, namespace) = ControlPlane::shared_with(&chart_crds(), "tolerance").await;
    let sources =
        Api::<WebhookSource>::namespaced(control_plane.client().expect("a client"), &namespace);
    let source = |name: &str, tolerance: &str| -> WebhookSource {
        typed(
            name,
            &namespace,
            json!({
                "provider": "stripe", "secretRef": {"name": "s", "key": "k"},
                "tolerance": tolerance,
                "mappings": [{"customer": "$.data.object.customer", "type": "payment"}]
            }),
        )
    };
    for (name, tolerance) in [("two-days", "2d"), ("millis", "1500ms")] {
        sources
            .create(&PostParams::default(), &source(name, tolerance))
            .await
            .unwrap_or_else(|e| panic!("{tolerance} was refused: {e}"));
        assert!(aforo_crds::duration::parse(tolerance).is_ok());
    }
    for tolerance in ["1h30m", "5"] {
        let status = invalid(
            sources
                .create(&PostParams::default(), &source("refused", tolerance))
                .await,
        );
        assert!(
            status.message.contains("spec.tolerance"),
            "{}",
            status.message
        );
        assert!(aforo_crds::duration::parse(tolerance).is_err());
    }
}

#[tokio::test]
async fn a_pipeline_role_with_both_replicas_and_autoscaling_is_rejected() {
    let (control_plane, namespace) = ControlPlane::shared_with(&chart_crds(), "role-rule").await;
    let pipelines =
        Api::<MeteringPipeline>::namespaced(control_plane.client().expect("a client"), &namespace);
    let pipeline: MeteringPipeline = typed(
        "aforo",
        &namespace,
        json!({
            "image": "aforo:dev", "database": {"name": "db", "key": "url"},
            "apiKey": {"name": "tenant", "key": "api-key"},
            "ingest": {"replicas": 2, "autoscaling": {"minReplicas": 1, "maxReplicas": 3}}
        }),
    );

    let status = invalid(pipelines.create(&PostParams::default(), &pipeline).await);
    assert!(status.message.contains("spec.ingest"), "{}", status.message);
    assert!(
        status
            .message
            .contains("set replicas or autoscaling, not both"),
        "{}",
        status.message
    );
}

#[tokio::test]
async fn a_meters_event_type_cannot_change_but_its_unit_can() {
    let (control_plane, namespace) = ControlPlane::shared_with(&chart_crds(), "meter-update").await;
    let meters = Api::<Meter>::namespaced(control_plane.client().expect("a client"), &namespace);
    let meter: Meter = typed(
        "sessions",
        &namespace,
        json!({"eventType": "agent.session.started", "aggregation": "COUNT", "unit": "session"}),
    );
    let created = meters
        .create(&PostParams::default(), &meter)
        .await
        .expect("a valid Meter is admitted");

    let mut renamed = created.clone();
    renamed.spec.event_type = "agent.session.ended".into();
    let status = invalid(
        meters
            .replace("sessions", &PostParams::default(), &renamed)
            .await,
    );
    assert!(
        status
            .message
            .contains("eventType is immutable; create a new Meter"),
        "{}",
        status.message
    );

    let mut relabelled = created;
    relabelled.spec.unit = Some("conversation".into());
    let replaced = meters
        .replace("sessions", &PostParams::default(), &relabelled)
        .await
        .expect("a Meter's unit may change");
    assert_eq!(replaced.spec.event_type, "agent.session.started");
    assert_eq!(replaced.spec.unit.as_deref(), Some("conversation"));
}
