//! MeteringPipelines against a real kube-apiserver: the children they
//! yield, updates, deletion without a garbage collector, conditions, the
//! pause annotation, and a restart that writes nothing.
//!
//! Needs kube-apiserver and etcd: `eval "$(scripts/controlplane.sh)"`.

mod common;

use std::collections::BTreeMap;

use aforo_crds::catalog::{MeteringPipeline, WebhookSource};
use common::*;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{Service, ServiceAccount};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::Client;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams};
use serde_json::{Value, json};

async fn get<K>(client: &Client, namespace: &str, name: &str) -> Option<Value>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + serde::Serialize
        + std::fmt::Debug,
{
    Api::<K>::namespaced(client.clone(), namespace)
        .get_opt(name)
        .await
        .unwrap_or_else(|e| panic!("get {} {name}: {e}", K::kind(&())))
        .map(|o| serde_json::to_value(o).expect("JSON"))
}

/// Waits until `name` exists and `check` accepts it.
async fn wait_for<K>(
    client: &Client,
    namespace: &str,
    name: &str,
    what: &str,
    check: impl Fn(&Value) -> bool,
) -> Value
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + serde::Serialize
        + std::fmt::Debug,
{
    eventually(&format!("{} {name}: {what}", K::kind(&())), || async {
        match get::<K>(client, namespace, name).await {
            Some(object) if check(&object) => Ok(object),
            Some(object) => Err(object.to_string()),
            None => Err("absent".into()),
        }
    })
    .await
}

async fn wait_gone<K>(client: &Client, namespace: &str, name: &str)
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + serde::Serialize
        + std::fmt::Debug,
{
    eventually(&format!("{} {name} is deleted", K::kind(&())), || async {
        match get::<K>(client, namespace, name).await {
            None => Ok(()),
            Some(object) => Err(object.to_string()),
        }
    })
    .await
}

/// The fields of `object` the operator's field manager owns.
fn owned_by_operator(object: &Value) -> Value {
    object["metadata"]["managedFields"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|m| m["manager"] == "aforo-operator" && m["operation"] == "Apply")
        .map(|m| m["fieldsV1"].clone())
        .unwrap_or(Value::Null)
}

#[tokio::test]
async fn a_pipeline_yields_its_deployments_services_hpa_and_pdbs() {
    let (_, client, ns) = cluster("children").await;
    let operator = operator(&client, &ns).await;
    let pipeline: MeteringPipeline = create(
        &client,
        &ns,
        pipeline(
            "shop",
            json!({
                "redis": {"name": "aforo-redis", "key": "url"},
                "ingest": {"autoscaling": {"minReplicas": 2, "maxReplicas": 8, "targetCpuUtilization": 65},
                           "resources": {"requests": {"cpu": "250m", "memory": "128Mi"}}},
                "enrich": {"replicas": 3},
            }),
        ),
    )
    .await;
    let uid = pipeline.metadata.uid.clone().expect("a uid");

    let ingest = wait_for::<Deployment>(&client, &ns, "shop-ingest", "exists", |_| true).await;
    let container = &ingest["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["image"], "aforo:test");
    assert_eq!(container["args"], json!(["ingest"]));
    assert_eq!(
        container["resources"],
        json!({"requests": {"cpu": "250m", "memory": "128Mi"}})
    );
    let env: BTreeMap<String, Value> = container["env"]
        .as_array()
        .expect("env")
        .iter()
        .map(|e| (e["name"].as_str().unwrap_or_default().to_owned(), e.clone()))
        .collect();
    assert_eq!(
        env["AFORO_DATABASE_URL"]["valueFrom"]["secretKeyRef"],
        json!({"name": "aforo-db", "key": "url"})
    );
    assert_eq!(
        env["AFORO_REDIS_URL"]["valueFrom"]["secretKeyRef"],
        json!({"name": "aforo-redis", "key": "url"})
    );
    assert_eq!(env["AFORO_GRPC_MAX_CONNECTION_AGE"]["value"], "5m");
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
    // The apiserver defaults an absent replicas to 1; what matters is that
    // the operator does not own it, so the HPA's scaling is never undone.
    let owned = owned_by_operator(&ingest);
    assert!(owned["f:spec"].is_object(), "{owned}");
    assert!(
        owned["f:spec"].get("f:replicas").is_none(),
        "the operator owns replicas of an autoscaled Deployment: {owned}"
    );

    let enrich = wait_for::<Deployment>(&client, &ns, "shop-enrich", "exists", |_| true).await;
    assert_eq!(enrich["spec"]["replicas"], 3);
    assert_eq!(
        owned_by_operator(&enrich)["f:spec"]["f:replicas"],
        json!({})
    );
    let billing = wait_for::<Deployment>(&client, &ns, "shop-billing", "exists", |_| true).await;
    assert_eq!(billing["spec"]["replicas"], 1);
    assert_eq!(
        billing["spec"]["template"]["spec"]["containers"][0]["args"],
        json!(["billing"])
    );

    let hpa =
        wait_for::<HorizontalPodAutoscaler>(&client, &ns, "shop-ingest", "exists", |_| true).await;
    assert_eq!(hpa["spec"]["minReplicas"], 2);
    assert_eq!(hpa["spec"]["maxReplicas"], 8);
    assert_eq!(hpa["spec"]["scaleTargetRef"]["name"], "shop-ingest");
    assert_eq!(
        hpa["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"],
        65
    );
    for role in ["enrich", "billing"] {
        assert!(
            get::<HorizontalPodAutoscaler>(&client, &ns, &format!("shop-{role}"))
                .await
                .is_none(),
            "{role} does not autoscale"
        );
    }
    for role in ["ingest", "enrich", "billing"] {
        let pdb = wait_for::<PodDisruptionBudget>(
            &client,
            &ns,
            &format!("shop-{role}"),
            "exists",
            |_| true,
        )
        .await;
        assert_eq!(pdb["spec"]["maxUnavailable"], 1);
        assert_eq!(
            pdb["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"],
            role
        );
    }

    let services: BTreeMap<String, Value> = eventually("four Services", || async {
        let list = Api::<Service>::namespaced(client.clone(), &ns)
            .list(&ListParams::default().labels("aforo.io/pipeline=shop"))
            .await
            .map_err(|e| e.to_string())?;
        if list.items.len() == 4 {
            Ok(list
                .items
                .into_iter()
                .map(|s| {
                    (
                        s.metadata.name.clone().unwrap_or_default(),
                        serde_json::to_value(s).expect("JSON"),
                    )
                })
                .collect())
        } else {
            Err(format!("{} Services", list.items.len()))
        }
    })
    .await;
    let port_names = |name: &str| -> Vec<String> {
        services[name]["spec"]["ports"]
            .as_array()
            .expect("ports")
            .iter()
            .map(|p| p["name"].as_str().unwrap_or_default().to_owned())
            .collect()
    };
    assert_eq!(port_names("shop-ingest"), ["http", "grpc"]);
    assert_eq!(port_names("shop-billing"), ["http", "grpc"]);
    assert_eq!(port_names("shop-ingest-grpc"), ["grpc"]);
    assert_eq!(services["shop-ingest-grpc"]["spec"]["clusterIP"], "None");
    assert_eq!(port_names("shop-metrics"), ["metrics"]);
    assert!(
        wait_for::<ServiceAccount>(&client, &ns, "shop", "exists", |_| true).await["automountServiceAccountToken"]
            == false
    );

    // Every child: our labels and a controller owner reference to the pipeline.
    for (name, service) in &services {
        assert_eq!(
            service["metadata"]["ownerReferences"][0]["uid"],
            uid.as_str(),
            "{name}"
        );
        assert_eq!(
            service["metadata"]["ownerReferences"][0]["controller"],
            true
        );
        assert_eq!(
            service["metadata"]["labels"]["app.kubernetes.io/managed-by"],
            "aforo-operator"
        );
    }
    operator.stop().await.expect("the operator stops");
}

#[tokio::test]
async fn changing_replicas_or_autoscaling_updates_the_children() {
    let (_, client, ns) = cluster("updates").await;
    let operator = operator(&client, &ns).await;
    create::<MeteringPipeline>(
        &client,
        &ns,
        pipeline(
            "shop",
            json!({"ingest": {"autoscaling": {"minReplicas": 2, "maxReplicas": 4}},
                   "enrich": {"replicas": 2}}),
        ),
    )
    .await;
    wait_for::<HorizontalPodAutoscaler>(&client, &ns, "shop-ingest", "exists", |_| true).await;
    wait_for::<Deployment>(&client, &ns, "shop-enrich", "2 replicas", |d| {
        d["spec"]["replicas"] == 2
    })
    .await;

    // More enrich replicas; ingest from autoscaling to a fixed count.
    merge::<MeteringPipeline>(
        &client,
        &ns,
        "shop",
        json!({"spec": {"enrich": {"replicas": 5},
                        "ingest": {"autoscaling": null, "replicas": 3}}}),
    )
    .await;
    wait_for::<Deployment>(&client, &ns, "shop-enrich", "5 replicas", |d| {
        d["spec"]["replicas"] == 5
    })
    .await;
    wait_for::<Deployment>(&client, &ns, "shop-ingest", "3 replicas, owned", |d| {
        d["spec"]["replicas"] == 3 && owned_by_operator(d)["f:spec"]["f:replicas"] == json!({})
    })
    .await;
    wait_gone::<HorizontalPodAutoscaler>(&client, &ns, "shop-ingest").await;

    // enrich starts autoscaling: an HPA, and the operator lets go of replicas.
    merge::<MeteringPipeline>(
        &client,
        &ns,
        "shop",
        json!({"spec": {"enrich": {"replicas": null,
                                   "autoscaling": {"minReplicas": 3, "maxReplicas": 12}}}}),
    )
    .await;
    let hpa =
        wait_for::<HorizontalPodAutoscaler>(&client, &ns, "shop-enrich", "exists", |_| true).await;
    assert_eq!(hpa["spec"]["maxReplicas"], 12);
    wait_for::<Deployment>(&client, &ns, "shop-enrich", "replicas not owned", |d| {
        owned_by_operator(d)["f:spec"].get("f:replicas").is_none()
    })
    .await;

    // A WebhookSource appears: ingest mounts the Secret it names.
    create::<WebhookSource>(
        &client,
        &ns,
        json!({"apiVersion": "aforo.io/v1alpha1", "kind": "WebhookSource",
               "metadata": {"name": "stripe-payments"},
               "spec": {"provider": "stripe", "secretRef": {"name": "stripe-webhook", "key": "signing-secret"},
                        "mappings": [{"customer": "$.data.object.customer", "type": "payment.succeeded"}]}}),
    )
    .await;
    let ingest = wait_for::<Deployment>(
        &client,
        &ns,
        "shop-ingest",
        "mounts the webhook secret",
        |d| d["spec"]["template"]["spec"]["volumes"][0]["secret"]["secretName"] == "stripe-webhook",
    )
    .await;
    assert_eq!(
        ingest["spec"]["template"]["spec"]["containers"][0]["volumeMounts"][0]["mountPath"],
        format!("/var/run/aforo/secrets/{ns}/stripe-webhook")
    );

    // Someone edits a field the operator sets: it is put back.
    merge::<Deployment>(
        &client,
        &ns,
        "shop-billing",
        json!({"spec": {"replicas": 7}}),
    )
    .await;
    wait_for::<Deployment>(&client, &ns, "shop-billing", "back to 1 replica", |d| {
        d["spec"]["replicas"] == 1
    })
    .await;
    operator.stop().await.expect("the operator stops");
}

#[tokio::test]
async fn deleting_the_pipeline_deletes_its_children_without_a_garbage_collector() {
    let (_, client, ns) = cluster("deletion").await;
    let operator = operator(&client, &ns).await;
    create::<MeteringPipeline>(
        &client,
        &ns,
        pipeline(
            "shop",
            json!({"ingest": {"autoscaling": {"minReplicas": 1, "maxReplicas": 3}}}),
        ),
    )
    .await;
    let stored = wait_for::<MeteringPipeline>(&client, &ns, "shop", "has the finalizer", |p| {
        p["metadata"]["finalizers"] == json!(["aforo.io/cleanup"])
    })
    .await;
    wait_for::<HorizontalPodAutoscaler>(&client, &ns, "shop-ingest", "exists", |_| true).await;
    // A Deployment of someone else in the namespace stays, though it
    // carries the pipeline's label.
    let mut bystander =
        wait_for::<Deployment>(&client, &ns, "shop-billing", "exists", |_| true).await;
    bystander["metadata"] = json!({"name": "bystander", "labels": {"aforo.io/pipeline": "shop"}});
    create::<Deployment>(&client, &ns, bystander).await;
    let uid = stored["metadata"]["uid"].clone();

    Api::<MeteringPipeline>::namespaced(client.clone(), &ns)
        .delete("shop", &DeleteParams::default())
        .await
        .expect("delete the pipeline");
    wait_gone::<MeteringPipeline>(&client, &ns, "shop").await;
    for kind in aforo_operator::children::ChildKind::ALL {
        let api = Api::<DynamicObject>::namespaced_with(client.clone(), &ns, &kind.api_resource());
        let left: Vec<String> = api
            .list(&ListParams::default())
            .await
            .expect("list")
            .items
            .into_iter()
            .filter(|o| {
                o.metadata
                    .owner_references
                    .iter()
                    .flatten()
                    .any(|r| r.uid == uid)
            })
            .filter_map(|o| o.metadata.name)
            .collect();
        assert!(left.is_empty(), "{kind:?} left behind: {left:?}");
    }
    assert!(
        get::<Deployment>(&client, &ns, "bystander").await.is_some(),
        "a Deployment the operator did not make was deleted"
    );
    operator.stop().await.expect("the operator stops");
}

#[tokio::test]
async fn conditions_and_observed_generation_follow_each_change() {
    let (_, client, ns) = cluster("conditions").await;
    let operator = operator(&client, &ns).await;
    create::<MeteringPipeline>(&client, &ns, pipeline("shop", json!({}))).await;

    let first = wait_for::<MeteringPipeline>(&client, &ns, "shop", "observed generation 1", |p| {
        p["status"]["observedGeneration"] == 1
    })
    .await;
    let ready = condition(&first, "Ready").expect("Ready");
    assert_eq!(ready["status"], "False");
    assert_eq!(ready["reason"], "DeploymentsUnavailable");
    assert_eq!(ready["observedGeneration"], 1);
    assert_eq!(
        condition(&first, "Reconciling").expect("Reconciling")["status"],
        "True"
    );
    assert_eq!(
        condition(&first, "CatalogApplied").expect("CatalogApplied")["reason"],
        "NoCatalogResources"
    );

    for role in ["ingest", "enrich", "billing"] {
        mark_available(&client, &ns, &format!("shop-{role}")).await;
    }
    let available = wait_for::<MeteringPipeline>(&client, &ns, "shop", "Ready", |p| {
        condition(p, "Ready").is_some_and(|c| c["status"] == "True")
    })
    .await;
    assert!(
        condition(&available, "Reconciling").is_none(),
        "{available}"
    );
    assert_eq!(available["status"]["observedGeneration"], 1);

    // A new generation: the enrich Deployment changes and is not yet rolled out.
    merge::<MeteringPipeline>(
        &client,
        &ns,
        "shop",
        json!({"spec": {"enrich": {"replicas": 2}}}),
    )
    .await;
    let changed =
        wait_for::<MeteringPipeline>(&client, &ns, "shop", "observed generation 2", |p| {
            p["status"]["observedGeneration"] == 2
        })
        .await;
    let ready = condition(&changed, "Ready").expect("Ready");
    assert_eq!(ready["status"], "False");
    assert_eq!(ready["observedGeneration"], 2);
    assert!(
        ready["message"]
            .as_str()
            .unwrap_or_default()
            .contains("enrich"),
        "{ready}"
    );
    mark_available(&client, &ns, "shop-enrich").await;
    wait_for::<MeteringPipeline>(&client, &ns, "shop", "Ready again", |p| {
        condition(p, "Ready").is_some_and(|c| c["status"] == "True" && c["observedGeneration"] == 2)
    })
    .await;

    // The pause annotation: changes wait, and the status says why.
    merge::<MeteringPipeline>(
        &client,
        &ns,
        "shop",
        json!({"metadata": {"annotations": {"aforo.io/paused": "true"}},
               "spec": {"enrich": {"replicas": 6}}}),
    )
    .await;
    let paused = wait_for::<MeteringPipeline>(&client, &ns, "shop", "Paused", |p| {
        condition(p, "Paused").is_some_and(|c| c["status"] == "True")
    })
    .await;
    assert_eq!(
        paused["status"]["observedGeneration"], 2,
        "a paused pipeline is not observed"
    );
    assert_eq!(
        get::<Deployment>(&client, &ns, "shop-enrich")
            .await
            .expect("enrich")["spec"]["replicas"],
        2
    );
    merge::<MeteringPipeline>(
        &client,
        &ns,
        "shop",
        json!({"metadata": {"annotations": {"aforo.io/paused": null}}}),
    )
    .await;
    wait_for::<Deployment>(
        &client,
        &ns,
        "shop-enrich",
        "6 replicas once resumed",
        |d| d["spec"]["replicas"] == 6,
    )
    .await;
    let resumed =
        wait_for::<MeteringPipeline>(&client, &ns, "shop", "observed generation 3", |p| {
            p["status"]["observedGeneration"] == 3
        })
        .await;
    assert!(condition(&resumed, "Paused").is_none(), "{resumed}");
    operator.stop().await.expect("the operator stops");
}

#[tokio::test]
async fn a_pipeline_named_too_long_for_its_services_is_stalled_with_the_field() {
    let (_, client, ns) = cluster("invalid-pipeline").await;
    let operator = operator(&client, &ns).await;
    let name = "a".repeat(60);
    create::<MeteringPipeline>(&client, &ns, pipeline(&name, json!({}))).await;
    let stalled = wait_for::<MeteringPipeline>(&client, &ns, &name, "Stalled", |p| {
        condition(p, "Stalled").is_some_and(|c| c["status"] == "True")
    })
    .await;
    let ready = condition(&stalled, "Ready").expect("Ready");
    assert_eq!(ready["status"], "False");
    assert_eq!(ready["reason"], "InvalidSpec");
    assert!(
        ready["message"]
            .as_str()
            .unwrap_or_default()
            .starts_with("metadata.name: "),
        "{ready}"
    );
    assert!(
        Api::<Deployment>::namespaced(client.clone(), &ns)
            .list(&ListParams::default())
            .await
            .expect("list")
            .items
            .is_empty(),
        "an invalid pipeline yields nothing"
    );
    // …and goes when deleted, though its name is no valid label value.
    let long = format!("{}-x", "a".repeat(70));
    create::<MeteringPipeline>(&client, &ns, pipeline(&long, json!({}))).await;
    wait_for::<MeteringPipeline>(&client, &ns, &long, "has the finalizer", |p| {
        p["metadata"]["finalizers"] == json!(["aforo.io/cleanup"])
    })
    .await;
    Api::<MeteringPipeline>::namespaced(client.clone(), &ns)
        .delete(&long, &DeleteParams::default())
        .await
        .expect("delete the pipeline");
    wait_gone::<MeteringPipeline>(&client, &ns, &long).await;
    operator.stop().await.expect("the operator stops");
}

#[tokio::test]
async fn only_the_lease_holder_reconciles_and_a_successor_takes_over_on_release() {
    let (_, client, ns) = cluster("lease").await;
    let first = operator_as(&client, &ns, "first").await;
    eventually("the first operator leads", || async {
        if first.metrics().is_ready() {
            Ok(())
        } else {
            Err("not leading".into())
        }
    })
    .await;
    let second = operator_as(&client, &ns, "second").await;
    create::<MeteringPipeline>(&client, &ns, pipeline("shop", json!({}))).await;
    wait_for::<Deployment>(&client, &ns, "shop-billing", "exists", |_| true).await;
    assert!(!second.metrics().is_ready(), "two leaders");
    assert_eq!(second.metrics().writes_total(), 0, "the follower wrote");

    first.stop().await.expect("the first operator stops");
    eventually("the second operator leads", || async {
        if second.metrics().is_ready() {
            Ok(())
        } else {
            Err("not leading".into())
        }
    })
    .await;
    let lease = Api::<k8s_openapi::api::coordination::v1::Lease>::namespaced(client.clone(), &ns)
        .get("aforo-operator")
        .await
        .expect("the Lease");
    let spec = lease.spec.expect("a spec");
    assert_eq!(spec.holder_identity.as_deref(), Some("second"));
    assert_eq!(spec.lease_transitions, Some(1));
    merge::<MeteringPipeline>(
        &client,
        &ns,
        "shop",
        json!({"spec": {"billing": {"replicas": 2}}}),
    )
    .await;
    wait_for::<Deployment>(&client, &ns, "shop-billing", "2 replicas", |d| {
        d["spec"]["replicas"] == 2
    })
    .await;
    second.stop().await.expect("the second operator stops");
}
