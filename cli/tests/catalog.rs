//! The catalog end to end: `aforo apply` against a real standalone server,
//! versions, all-or-nothing errors, the manifests folder, customers and
//! subscriptions, and the schema gate reading the meters.
//!
//! Dates: price changes take effect next month and subscriptions start last
//! month ([`Months`]), whatever the day the test runs.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use chrono::Utc;
use common::{Backend, Months, Server, api_time, examples, examples_with, rfc3339, set_first};
use serde_json::{Value, json};

async fn apply(server: &Server, path: &Path) -> (bool, String, String) {
    let http = server.http.clone();
    server
        .cli(&["apply", "-f", path.to_str().unwrap(), "--http", &http])
        .await
}

async fn catalog_on(backend: Backend) {
    let server = Server::start(backend).await;
    let (ok, out, err) = apply(&server, &examples()).await;
    assert!(ok, "{out}{err}");
    assert!(out.contains("catalog version 1 created"), "{out}");

    let (ok, out, _) = apply(&server, &examples()).await;
    assert!(ok);
    assert!(out.contains("catalog version 1 unchanged"), "{out}");
    let (_, versions) = server.get("/v1/catalog/versions").await;
    assert_eq!(
        versions["items"].as_array().unwrap().len(),
        1,
        "applying again wrote nothing"
    );

    // One price changes, from next month on.
    let next_month = Months::now().start(-1);
    let dir = tempfile::tempdir().unwrap();
    let changed = examples_with(dir.path(), |text| {
        let cheaper = text.replacen("unitPrice: \"0.00002\"", "unitPrice: \"0.000018\"", 1);
        set_first(&cheaper, "effectiveFrom", &rfc3339(next_month))
    });
    let (ok, out, err) = apply(&server, &changed).await;
    assert!(ok, "{out}{err}");
    assert!(out.contains("catalog version 2 created"), "{out}");
    assert!(
        out.contains(&format!(
            "effective from {}",
            next_month.format("%Y-%m-%dT%H:%M:%S")
        )),
        "{out}"
    );

    let price = |v: &Value| {
        v["snapshot"]["ratePlans"]["translation-pro"]["charges"][0]["graduated"][0]["unitPrice"]
            .clone()
    };
    let (_, v1) = server.get("/v1/catalog/versions/1").await;
    let (_, v2) = server.get("/v1/catalog/versions/2").await;
    assert_eq!(price(&v1), "0.00002");
    assert_eq!(price(&v2), "0.000018");
    assert_eq!(v2["effective_from"], api_time(next_month));
    assert_ne!(v1["content_hash"], v2["content_hash"]);
    let (_, latest) = server.get("/v1/catalog").await;
    assert_eq!(latest["version"], 2);
}

#[tokio::test]
async fn apply_creates_versions_and_identical_content_changes_nothing_on_sqlite() {
    catalog_on(Backend::Sqlite).await;
}

#[tokio::test]
async fn apply_creates_versions_and_identical_content_changes_nothing_on_postgres() {
    catalog_on(Backend::Postgres).await;
}

#[tokio::test]
async fn a_broken_folder_applies_nothing_and_names_every_error() {
    let server = Server::start(Backend::Sqlite).await;
    let dir = tempfile::tempdir().unwrap();
    let broken = examples_with(dir.path(), |text| {
        text.replace("currency: EUR", "currency: EUX")
            .replace("productRef: ai-agents", "productRef: agents")
            .replace("unitPrice: \"0.05\"", "unitPrice: \"five cents\"")
    });
    let (ok, _, err) = apply(&server, &broken).await;
    assert!(!ok);
    for expected in [
        "3 errors",
        r#"RatePlan/translation-pro: spec.currency: "EUX" is not a known ISO 4217 currency"#,
        r#"RatePlan/ai-agents-usage: spec.productRef: no Product named "agents""#,
        r#"RatePlan/ai-agents-usage: spec.charges[0].perUnit.unitPrice: "five cents" is not a decimal number"#,
    ] {
        assert!(err.contains(expected), "no {expected:?} in:\n{err}");
    }
    let (status, _) = server.get("/v1/catalog").await;
    assert_eq!(status, 404, "nothing was applied");

    // A document that is no aforo resource is named with its file and position.
    std::fs::write(
        broken.join("zz-typo.yaml"),
        "apiVersion: aforo.io/v1alpha1\nkind: Metre\nmetadata: {name: x}\n",
    )
    .unwrap();
    let (ok, _, err) = apply(&server, &broken).await;
    assert!(!ok);
    assert!(err.contains("\"Metre\" is not an aforo kind"), "{err}");
    assert!(err.contains("zz-typo.yaml, document 1"), "{err}");
}

#[tokio::test]
async fn the_catalog_api_speaks_grpc_too() {
    use aforo_proto::v1 as pb;
    let server = Server::start(Backend::Sqlite).await;
    let channel = tonic::transport::Channel::from_shared(server.grpc.clone())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = pb::catalog_service_client::CatalogServiceClient::new(channel);
    let request = |resources: Vec<String>| {
        let mut r = tonic::Request::new(pb::ApplyCatalogRequest {
            resources_json: resources,
        });
        r.metadata_mut().insert(
            "authorization",
            format!("Bearer {}", server.key).parse().unwrap(),
        );
        r
    };
    let meter = json!({"apiVersion": "aforo.io/v1alpha1", "kind": "Meter", "metadata": {"name": "calls"},
                       "spec": {"eventType": "api.call", "aggregation": "COUNT"}});
    let answer = client
        .apply(request(vec![meter.to_string()]))
        .await
        .unwrap()
        .into_inner();
    assert!(answer.created);
    assert_eq!(answer.version.unwrap().version, 1);

    let bad = json!({"apiVersion": "aforo.io/v1alpha1", "kind": "Meter", "metadata": {"name": "calls"},
                     "spec": {"eventType": "api.call", "aggregation": "SUM"}});
    let answer = client
        .apply(request(vec![bad.to_string()]))
        .await
        .unwrap()
        .into_inner();
    assert!(answer.version.is_none());
    assert_eq!(answer.errors.len(), 1);
    assert_eq!(answer.errors[0].name, "calls");
    assert!(
        answer.errors[0]
            .message
            .contains("valueProperty is required")
    );

    let mut get = tonic::Request::new(pb::GetCatalogRequest { version: 0 });
    get.metadata_mut().insert(
        "authorization",
        format!("Bearer {}", server.key).parse().unwrap(),
    );
    let latest = client.get(get).await.unwrap().into_inner();
    assert_eq!(latest.version, 1);
    assert!(latest.snapshot_json.contains("api.call"));
}

#[tokio::test]
async fn the_manifests_folder_is_applied_at_start_and_on_change() {
    let dir = tempfile::tempdir().unwrap();
    let folder = examples_with(dir.path(), |t| t);
    let server =
        Server::start_with(Backend::Sqlite, &["--manifests", folder.to_str().unwrap()]).await;
    let (_, v) = server.get("/v1/catalog").await;
    assert_eq!(v["version"], 1, "applied at start: {v}");

    let plans = folder.join("rate-plans.yaml");
    let text = std::fs::read_to_string(&plans).unwrap().replacen(
        "amount: \"49.00\"",
        "amount: \"59.00\"",
        1,
    );
    let text = set_first(&text, "effectiveFrom", &rfc3339(Months::now().start(-1)));
    std::fs::write(&plans, text).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, v) = server.get("/v1/catalog").await;
        if v["version"] == 2 {
            assert_eq!(
                v["snapshot"]["ratePlans"]["translation-pro"]["recurringFees"][0]["amount"],
                "59.00"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the change was not applied within 30 s: {v}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn meters_gate_their_events_and_unmetered_events_are_flagged() {
    let server = Server::start(Backend::Sqlite).await;
    let now = Utc::now().to_rfc3339();
    let batch = |prefix: &str| {
        json!([
            {"id": format!("{prefix}1"), "source": "s", "type": "translation.characters", "customer": "acme",
             "time": now, "properties": {"characters": 1200, "lang": "de"}},
            {"id": format!("{prefix}2"), "source": "s", "type": "translation.characters", "customer": "acme",
             "time": now, "properties": {"lang": "de"}},
            {"id": format!("{prefix}3"), "source": "s", "type": "translation.characters", "customer": "acme",
             "time": now, "properties": {"characters": "1200"}},
            {"id": format!("{prefix}4"), "source": "s", "type": "weather.report", "customer": "acme", "time": now}
        ])
        .to_string()
    };
    // Before any catalog, nothing is judged against meters.
    let (_, before) = server.post_events("application/json", batch("a")).await;
    assert_eq!(before["accepted"], 4, "{before}");
    assert!(before["results"][3].get("flags").is_none(), "{before}");

    let (ok, out, err) = apply(&server, &examples()).await;
    assert!(ok, "{out}{err}");
    let (_, after) = server.post_events("application/json", batch("b")).await;
    let r = &after["results"];
    assert_eq!(r[0]["status"], "ACCEPTED", "{after}");
    assert!(r[0].get("flags").is_none());
    assert_eq!(r[1]["reason"], "SCHEMA_MISSING_PROPERTY");
    assert!(r[1]["message"].as_str().unwrap().contains("`characters`"));
    assert_eq!(r[2]["reason"], "SCHEMA_PROPERTY_TYPE");
    assert_eq!(r[3]["status"], "ACCEPTED");
    assert_eq!(r[3]["flags"], json!(["UNMETERED"]));
    let (_, unmetered) = server.get("/v1/events?flag=UNMETERED").await;
    assert_eq!(unmetered["items"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn customers_and_subscriptions_through_cli_csv_and_api() {
    let server = Server::start(Backend::Postgres).await;
    let months = Months::now();
    let (start, change, before_change) = (
        rfc3339(months.start(1)),
        months.at(1, 15, 0),
        rfc3339(months.at(1, 10, 0)),
    );
    let http = server.http.clone();
    let (ok, _, err) = apply(&server, &examples()).await;
    assert!(ok, "{err}");

    let (ok, out, err) = server
        .cli(&[
            "customers",
            "create",
            "--id",
            "acme",
            "--name",
            "ACME Corp",
            "--currency",
            "EUR",
            "--tax-region",
            "DE",
            "--meta",
            "segment=enterprise",
            "--http",
            &http,
        ])
        .await;
    assert!(ok, "{out}{err}");
    let csv = server.data_dir().join("customers.csv");
    std::fs::write(&csv, "external_id,name,currency,tax_region,segment\nglobex,Globex,USD,US,smb\nacme,ACME Corporation,EUR,DE,enterprise\n,No Id,EUR,DE,\ninitech,Initech,EURO,DE,smb\n").unwrap();
    let (ok, out, err) = server
        .cli(&[
            "customers",
            "import",
            csv.to_str().unwrap(),
            "--http",
            &http,
        ])
        .await;
    assert!(!ok, "failed rows fail the command");
    assert!(out.contains("1 created, 1 updated, 2 failed"), "{out}{err}");
    assert!(err.contains("line 4"), "{err}");
    assert!(err.contains("EURO"), "{err}");
    let (_, acme) = server.get("/v1/customers/acme").await;
    assert_eq!(acme["name"], "ACME Corporation");
    assert_eq!(acme["metadata"]["segment"], "enterprise");

    let (ok, _, err) = server
        .cli(&[
            "subscriptions",
            "create",
            "--customer",
            "acme",
            "--plan",
            "no-such-plan",
            "--start",
            &start,
            "--http",
            &http,
        ])
        .await;
    assert!(!ok);
    assert!(err.contains("no RatePlan \"no-such-plan\""), "{err}");
    let (ok, out, err) = server
        .cli(&[
            "subscriptions",
            "create",
            "--customer",
            "acme",
            "--plan",
            "translation-pro",
            "--start",
            &start,
            "--anchor-day",
            "1",
            "--http",
            &http,
        ])
        .await;
    assert!(ok, "{err}");
    let sub: Value = serde_json::from_str(&out).unwrap();
    let id = sub["id"].as_str().unwrap().to_owned();

    let (ok, out, err) = server
        .cli(&[
            "subscriptions",
            "change-plan",
            &id,
            "--plan",
            "ai-agents-usage",
            "--at",
            &rfc3339(change),
            "--http",
            &http,
        ])
        .await;
    assert!(ok, "{err}");
    let changed: Value = serde_json::from_str(&out).unwrap();
    let phases = changed["phases"].as_array().unwrap();
    assert_eq!(phases.len(), 2);
    assert_eq!(phases[0]["rate_plan"], "translation-pro");
    assert_eq!(phases[0]["ends_at"], api_time(change));
    assert_eq!(phases[1]["rate_plan"], "ai-agents-usage");

    let (ok, _, err) = server
        .cli(&[
            "subscriptions",
            "change-plan",
            &id,
            "--plan",
            "translation-pro",
            "--at",
            &before_change,
            "--http",
            &http,
        ])
        .await;
    assert!(!ok);
    assert!(err.contains("the past is not rewritten"), "{err}");
}

#[tokio::test]
async fn crd_print_emits_the_committed_yaml() {
    let output = std::process::Command::new(common::BIN)
        .args(["crd", "print"])
        .output()
        .unwrap();
    assert!(output.status.success());
    let out = String::from_utf8(output.stdout).unwrap();
    let committed = std::fs::read_to_string(format!(
        "{}/../charts/aforo/crds/aforo.io.yaml",
        std::env::var("CARGO_MANIFEST_DIR")
            .expect("CARGO_MANIFEST_DIR: run by cargo test, or by scripts/hard-days.sh")
    ))
    .unwrap();
    assert_eq!(out, committed);
}

#[tokio::test]
async fn customers_and_subscriptions_speak_grpc_too() {
    use aforo_proto::v1 as pb;
    let server = Server::start(Backend::Sqlite).await;
    let (ok, _, err) = apply(&server, &examples()).await;
    assert!(ok, "{err}");
    let channel = tonic::transport::Channel::from_shared(server.grpc.clone())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = pb::customer_service_client::CustomerServiceClient::new(channel);
    let key = server.key.clone();
    let last_month = Months::now().start(1).timestamp();
    let ts = |s: i64| {
        Some(prost_types::Timestamp {
            seconds: s,
            nanos: 0,
        })
    };

    let created = client
        .upsert_customer(common::authed(
            &key,
            pb::Customer {
                id: "acme".into(),
                name: "ACME".into(),
                currency: "EUR".into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(created.created);
    let bad = client
        .upsert_customer(common::authed(
            &key,
            pb::Customer {
                id: "x".into(),
                name: "X".into(),
                currency: "EURO".into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(bad.code(), tonic::Code::InvalidArgument);

    let unknown_plan = client
        .create_subscription(common::authed(
            &key,
            pb::CreateSubscriptionRequest {
                customer: "acme".into(),
                rate_plan: "gold".into(),
                starts_at: ts(last_month),
                ..Default::default()
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(unknown_plan.code(), tonic::Code::InvalidArgument);
    let sub = client
        .create_subscription(common::authed(
            &key,
            pb::CreateSubscriptionRequest {
                customer: "acme".into(),
                rate_plan: "translation-pro".into(),
                starts_at: ts(last_month),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    let changed = client
        .change_plan(common::authed(
            &key,
            pb::ChangePlanRequest {
                subscription_id: sub.id.clone(),
                rate_plan: "ai-agents-usage".into(),
                effective_at: ts(last_month + 86_400),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(changed.phases.len(), 2);
    let listed = client
        .list_subscriptions(common::authed(
            &key,
            pb::ListSubscriptionsRequest {
                customer: "acme".into(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.subscriptions, vec![changed]);
}
