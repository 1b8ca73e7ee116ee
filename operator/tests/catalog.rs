//! Catalog resources against a real kube-apiserver: semantic validation as
//! conditions naming the field, and a restarted operator that writes
//! nothing over an unchanged cluster.
//!
//! Applying the catalog to a running data plane is shown end to end in
//! cli/tests/operator.rs, with real `aforo` processes.
//!
//! Needs kube-apiserver and etcd: `eval "$(scripts/controlplane.sh)"`.

mod common;

use std::collections::BTreeMap;

use aforo_crds::catalog::{Meter, MeteringPipeline, Product, RatePlan};
use aforo_operator::{Operator, OperatorConfig};
use common::*;
use k8s_openapi::api::core::v1::Secret;
use kube::Client;
use kube::api::{Api, ApiResource, DynamicObject, ListParams};
use serde_json::{Value, json};

fn meter() -> Value {
    json!({"apiVersion": "aforo.io/v1alpha1", "kind": "Meter", "metadata": {"name": "calls"},
           "spec": {"eventType": "api.call", "aggregation": "COUNT"}})
}

fn product() -> Value {
    json!({"apiVersion": "aforo.io/v1alpha1", "kind": "Product", "metadata": {"name": "api"},
           "spec": {"displayName": "API", "meters": ["calls"]}})
}

fn rate_plan(currency: &str) -> Value {
    json!({"apiVersion": "aforo.io/v1alpha1", "kind": "RatePlan", "metadata": {"name": "pro"},
           "spec": {"productRef": "api", "currency": currency, "billingPeriod": "MONTHLY",
                    "effectiveFrom": "2026-01-01T00:00:00Z",
                    "charges": [{"meter": "calls", "perUnit": {"unitPrice": "0.01"}}]}})
}

async fn status_of<K>(client: &Client, namespace: &str, name: &str) -> Value
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + serde::Serialize
        + std::fmt::Debug,
{
    let object = Api::<K>::namespaced(client.clone(), namespace)
        .get(name)
        .await
        .unwrap_or_else(|e| panic!("get {name}: {e}"));
    serde_json::to_value(object).expect("JSON")
}

#[tokio::test]
async fn an_invalid_rate_plan_is_not_ready_and_the_message_names_the_field() {
    let (_, client, ns) = cluster("invalid-plan").await;
    let operator = operator(&client, &ns).await;
    create::<Meter>(&client, &ns, meter()).await;
    create::<Product>(&client, &ns, product()).await;
    // "EUX" passes the schema (three capitals) but is no ISO 4217 currency.
    create::<RatePlan>(&client, &ns, rate_plan("EUX")).await;

    let plan = eventually("the RatePlan is found invalid", || async {
        let plan = status_of::<RatePlan>(&client, &ns, "pro").await;
        match condition(&plan, "Ready") {
            Some(c) if c["reason"] == "Invalid" => Ok(plan),
            _ => Err(plan.to_string()),
        }
    })
    .await;
    let ready = condition(&plan, "Ready").expect("Ready");
    assert_eq!(ready["status"], "False");
    assert_eq!(
        ready["message"],
        "spec.currency: \"EUX\" is not a known ISO 4217 currency"
    );
    assert_eq!(ready["observedGeneration"], 1);
    assert_eq!(plan["status"]["observedGeneration"], 1);
    assert_eq!(condition(&plan, "Valid").expect("Valid")["status"], "False");
    assert_eq!(
        condition(&plan, "Stalled").expect("Stalled")["status"],
        "True"
    );

    // The meter is valid, but the namespace's catalog cannot apply.
    let meter = eventually("the Meter's status", || async {
        let meter = status_of::<Meter>(&client, &ns, "calls").await;
        match condition(&meter, "Applied") {
            Some(_) => Ok(meter),
            None => Err(meter.to_string()),
        }
    })
    .await;
    assert_eq!(condition(&meter, "Valid").expect("Valid")["status"], "True");
    let applied = condition(&meter, "Applied").expect("Applied");
    assert_eq!(applied["reason"], "CatalogInvalid");
    assert!(
        applied["message"]
            .as_str()
            .unwrap_or_default()
            .contains("RatePlan/pro"),
        "{applied}"
    );

    // Fixed: valid now, and waiting for a pipeline to apply it.
    merge::<RatePlan>(&client, &ns, "pro", json!({"spec": {"currency": "EUR"}})).await;
    let fixed = eventually("the RatePlan is valid", || async {
        let plan = status_of::<RatePlan>(&client, &ns, "pro").await;
        if plan["status"]["observedGeneration"] == 2 {
            Ok(plan)
        } else {
            Err(plan.to_string())
        }
    })
    .await;
    assert_eq!(condition(&fixed, "Valid").expect("Valid")["status"], "True");
    assert!(condition(&fixed, "Stalled").is_none(), "{fixed}");
    let ready = condition(&fixed, "Ready").expect("Ready");
    assert_eq!(ready["reason"], "NoPipeline");
    assert_eq!(ready["observedGeneration"], 2);
    operator.stop().await.expect("the operator stops");
}

/// Every object of these kinds in `namespace`, as `Kind/name` → resourceVersion.
async fn versions(client: &Client, namespace: &str) -> BTreeMap<String, String> {
    let mut kinds: Vec<ApiResource> = aforo_operator::children::ChildKind::ALL
        .iter()
        .map(|k| k.api_resource())
        .collect();
    kinds.extend([
        ApiResource::erase::<MeteringPipeline>(&()),
        ApiResource::erase::<Meter>(&()),
        ApiResource::erase::<Product>(&()),
        ApiResource::erase::<RatePlan>(&()),
        ApiResource::erase::<k8s_openapi::api::events::v1::Event>(&()),
    ]);
    let mut out = BTreeMap::new();
    for kind in kinds {
        let api = Api::<DynamicObject>::namespaced_with(client.clone(), namespace, &kind);
        for object in api.list(&ListParams::default()).await.expect("list").items {
            out.insert(
                format!("{}/{}", kind.kind, object.metadata.name.unwrap_or_default()),
                object.metadata.resource_version.unwrap_or_default(),
            );
        }
    }
    out
}

#[tokio::test]
async fn a_restarted_operator_writes_nothing_to_an_unchanged_cluster() {
    let (_, client, ns) = cluster("restart").await;
    // Nothing listens on the discard port: the catalog API stays
    // unreachable, which the status reports, stably.
    let mut config = OperatorConfig::for_namespace(&ns);
    config.catalog_endpoint = Some("http://127.0.0.1:9".into());
    config.identity = Some("before".into());
    let before = Operator::start(client.clone(), config.clone())
        .await
        .expect("start the operator");
    create::<Secret>(
        &client,
        &ns,
        json!({"metadata": {"name": "aforo-tenant"}, "stringData": {"api-key": "k"}}),
    )
    .await;
    create::<MeteringPipeline>(
        &client,
        &ns,
        pipeline(
            "shop",
            json!({"ingest": {"autoscaling": {"minReplicas": 2, "maxReplicas": 5}},
                   // Quantities the apiserver stores in another form
                   // ("500m", "1Gi"): still nothing to write.
                   "enrich": {"resources": {"requests": {"cpu": "0.5", "memory": "1073741824"}}}}),
        ),
    )
    .await;
    create::<Meter>(&client, &ns, meter()).await;
    create::<Product>(&client, &ns, product()).await;
    create::<RatePlan>(&client, &ns, rate_plan("EUR")).await;
    for role in ["ingest", "enrich", "billing"] {
        let name = format!("shop-{role}");
        eventually(&format!("Deployment {name}"), || async {
            Api::<k8s_openapi::api::apps::v1::Deployment>::namespaced(client.clone(), &ns)
                .get_opt(&name)
                .await
                .map_err(|e| e.to_string())?
                .map(|_| ())
                .ok_or_else(|| "absent".to_owned())
        })
        .await;
        mark_available(&client, &ns, &name).await;
    }
    // Steady: the pipeline saw its Deployments available and the catalog
    // API unreachable; every catalog resource says the same.
    eventually("a steady status everywhere", || async {
        let pipeline = status_of::<MeteringPipeline>(&client, &ns, "shop").await;
        let available = condition(&pipeline, "Available").is_some_and(|c| c["status"] == "True");
        let catalog = condition(&pipeline, "CatalogApplied")
            .is_some_and(|c| c["reason"] == "CatalogApiUnavailable");
        let plan = status_of::<RatePlan>(&client, &ns, "pro").await;
        let plan_settled =
            condition(&plan, "Applied").is_some_and(|c| c["reason"] == "CatalogApiUnavailable");
        if available && catalog && plan_settled {
            Ok(())
        } else {
            Err(format!("{pipeline}\n{plan}"))
        }
    })
    .await;
    before.stop().await.expect("the operator stops");
    let stored = versions(&client, &ns).await;
    assert!(stored.len() > 15, "{stored:?}");

    config.identity = Some("after".into());
    let after = Operator::start(client.clone(), config)
        .await
        .expect("restart the operator");
    eventually(
        "the restarted operator reconciled everything once",
        || async {
            let m = after.metrics();
            let pipelines = m.reconciliations("pipeline", "ok");
            let catalogs = m.reconciliations("catalog", "ok");
            if pipelines >= 1 && catalogs >= 1 {
                Ok(())
            } else {
                Err(format!(
                    "pipeline reconciles {pipelines}, catalog passes {catalogs}"
                ))
            }
        },
    )
    .await;
    assert_eq!(
        after.metrics().writes_total(),
        0,
        "{}",
        after.metrics().encode()
    );
    assert_eq!(versions(&client, &ns).await, stored, "an object changed");
    after.stop().await.expect("the operator stops");
}
