//! The spine, end to end: real `aforo standalone` processes on SQLite and on
//! PostgreSQL, spoken to over REST, gRPC and by grpcurl.
//!
//! Dates: relative to now. The timestamp and late-arrival gates measure from
//! the server's clock, so events are dated `now - 91 days`, `now - 2 days`,
//! `now + 6 minutes`; nothing depends on a period.

mod common;

use aforo_proto::v1 as pb;
use chrono::{Duration, Utc};
use common::{Backend, Server, grpcurl_out, proto_event};
use serde_json::{Value, json};

/// The batch of the acceptance criteria: valid, 6 minutes ahead, 91 days
/// old, 2 days old, and missing its id.
fn mixed_batch(prefix: &str) -> Vec<Value> {
    let now = Utc::now();
    let event = |id: Option<String>, time: chrono::DateTime<Utc>| {
        let mut e = json!({
            "source": "e2e", "type": "api.call", "customer": "acme",
            "time": time.to_rfc3339(), "properties": {"ms": 12}
        });
        if let Some(id) = id {
            e["id"] = json!(id);
        }
        e
    };
    vec![
        event(Some(format!("{prefix}-valid")), now),
        event(Some(format!("{prefix}-future")), now + Duration::minutes(6)),
        event(Some(format!("{prefix}-ancient")), now - Duration::days(91)),
        event(Some(format!("{prefix}-late")), now - Duration::days(2)),
        event(None, now),
    ]
}

const EXPECTED: [(&str, &str, &[&str]); 5] = [
    ("ACCEPTED", "", &[]),
    ("REJECTED", "TIMESTAMP_IN_FUTURE", &[]),
    ("REJECTED", "TIMESTAMP_TOO_OLD", &[]),
    ("ACCEPTED", "", &["LATE"]),
    ("REJECTED", "SCHEMA_MISSING_ID", &[]),
];

fn rest_verdicts(answer: &Value) -> Vec<(String, String, Vec<String>)> {
    answer["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|r| {
            (
                r["status"].as_str().unwrap_or_default().to_owned(),
                r["reason"].as_str().unwrap_or_default().to_owned(),
                r["flags"]
                    .as_array()
                    .map(|f| {
                        f.iter()
                            .map(|x| x.as_str().unwrap_or_default().to_owned())
                            .collect()
                    })
                    .unwrap_or_default(),
            )
        })
        .collect()
}

fn expected() -> Vec<(String, String, Vec<String>)> {
    EXPECTED
        .iter()
        .map(|(s, r, f)| {
            (
                s.to_string(),
                r.to_string(),
                f.iter().map(|x| x.to_string()).collect(),
            )
        })
        .collect()
}

async fn mixed_batch_over_rest(backend: Backend) {
    let server = Server::start(backend).await;
    let body = Value::Array(mixed_batch("rest")).to_string();
    let (status, first) = server.post_events("application/json", body.clone()).await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(rest_verdicts(&first), expected(), "{first}");
    assert_eq!(
        (first["accepted"].as_u64(), first["rejected"].as_u64()),
        (Some(2), Some(3))
    );

    // The rejections are listed with their reasons and raw payloads.
    let (_, listed) = server.get("/v1/rejections").await;
    let reasons: Vec<&str> = listed["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["reason"].as_str().unwrap())
        .collect();
    assert_eq!(
        reasons,
        [
            "TIMESTAMP_IN_FUTURE",
            "TIMESTAMP_TOO_OLD",
            "SCHEMA_MISSING_ID"
        ]
    );
    let payload: Value =
        serde_json::from_str(listed["items"][2]["payload"].as_str().unwrap()).unwrap();
    assert_eq!(payload["customer"], "acme");

    // Sent again: the accepted ones are DUPLICATE of the same stored events.
    let (_, second) = server.post_events("application/json", body).await;
    let statuses: Vec<&str> = second["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["status"].as_str().unwrap())
        .collect();
    assert_eq!(
        statuses,
        ["DUPLICATE", "REJECTED", "REJECTED", "DUPLICATE", "REJECTED"]
    );
    for i in [0, 3] {
        assert_eq!(
            second["results"][i]["stored_event_id"],
            first["results"][i]["stored_event_id"]
        );
    }
    let stored = server.all_events().await;
    assert_eq!(stored.len(), 2, "nothing is counted twice");
    let late: Vec<&Value> = stored
        .iter()
        .filter(|e| e["flags"] == json!(["LATE"]))
        .collect();
    assert_eq!(late.len(), 1);
    assert_eq!(late[0]["gates"]["late_arrival"], "LATE");
    assert_eq!(late[0]["tier"], "REST");
    assert_eq!(late[0]["validation_hash"].as_str().unwrap().len(), 64);
}

async fn mixed_batch_over_grpc(backend: Backend) {
    let server = Server::start(backend).await;
    let mut client = server.grpc_client().await;
    let now = Utc::now();
    let batch = vec![
        proto_event("g-valid", now),
        proto_event("g-future", now + Duration::minutes(6)),
        proto_event("g-ancient", now - Duration::days(91)),
        proto_event("g-late", now - Duration::days(2)),
        proto_event("", now),
    ];
    let first = server
        .grpc_ingest(&mut client, batch.clone())
        .await
        .unwrap();
    let verdicts: Vec<(String, String, Vec<String>)> = first
        .results
        .iter()
        .map(|r| {
            (
                pb::EventStatus::try_from(r.status)
                    .unwrap()
                    .as_str_name()
                    .trim_start_matches("EVENT_STATUS_")
                    .to_owned(),
                r.reason.clone(),
                r.flags
                    .iter()
                    .map(|f| {
                        pb::EventFlag::try_from(*f)
                            .unwrap()
                            .as_str_name()
                            .trim_start_matches("EVENT_FLAG_")
                            .to_owned()
                    })
                    .collect(),
            )
        })
        .collect();
    assert_eq!(verdicts, expected());

    let second = server.grpc_ingest(&mut client, batch).await.unwrap();
    assert_eq!(
        (second.accepted, second.duplicates, second.rejected),
        (0, 2, 3)
    );
    assert_eq!(
        second.results[0].stored_event_id,
        first.results[0].stored_event_id
    );
    let stored = server.all_events().await;
    assert_eq!(stored.len(), 2);
    assert!(stored.iter().all(|e| e["tier"] == "SDK"));
    let (_, rejections) = server.get("/v1/rejections?reason=SCHEMA_MISSING_ID").await;
    assert_eq!(rejections["items"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn mixed_batch_gets_five_verdicts_over_rest_on_sqlite() {
    mixed_batch_over_rest(Backend::Sqlite).await;
}

#[tokio::test]
async fn mixed_batch_gets_five_verdicts_over_rest_on_postgres() {
    mixed_batch_over_rest(Backend::Postgres).await;
}

#[tokio::test]
async fn mixed_batch_gets_five_verdicts_over_grpc_on_sqlite() {
    mixed_batch_over_grpc(Backend::Sqlite).await;
}

#[tokio::test]
async fn mixed_batch_gets_five_verdicts_over_grpc_on_postgres() {
    mixed_batch_over_grpc(Backend::Postgres).await;
}

#[tokio::test]
async fn cloudevents_map_subject_to_customer_and_data_to_properties() {
    let server = Server::start(Backend::Sqlite).await;
    let now = Utc::now().to_rfc3339();
    let single = json!({
        "specversion": "1.0", "id": "ce-1", "source": "//translate", "type": "translation.characters",
        "subject": "acme", "time": now, "datacontenttype": "application/json",
        "data": {"characters": 1200, "lang": "de"}
    });
    let (status, answer) = server
        .post_events("application/cloudevents+json", single.to_string())
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["results"][0]["status"], "ACCEPTED");

    let batch = json!([
        {"specversion": "1.0", "id": "ce-2", "source": "//translate", "type": "translation.characters",
         "subject": "globex", "time": now, "data": {"characters": 10}},
        {"specversion": "0.3", "id": "ce-3", "source": "//translate", "type": "x", "subject": "a", "time": now}
    ]);
    let (status, answer) = server
        .post_events("application/cloudevents-batch+json", batch.to_string())
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["results"][0]["status"], "ACCEPTED");
    assert_eq!(answer["results"][1]["reason"], "SCHEMA_MALFORMED");

    let (_, listed) = server.get("/v1/events?customer=acme").await;
    let event = &listed["items"][0];
    assert_eq!(event["type"], "translation.characters");
    assert_eq!(
        event["properties"],
        json!({"characters": 1200, "lang": "de"})
    );
    assert_eq!(listed["items"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn keys_are_required_and_tenants_are_isolated() {
    let server = Server::start(Backend::Sqlite).await;
    let http = server.http_client();
    let url = format!("{}/v1/events", server.http);
    let body = json!({"id": "same", "source": "s", "type": "t", "customer": "c",
                      "time": Utc::now().to_rfc3339()})
    .to_string();

    let missing = http.post(&url).body(body.clone()).send().await.unwrap();
    assert_eq!(missing.status(), 401);
    assert_eq!(missing.headers()["www-authenticate"], "Bearer");
    let wrong = http
        .post(&url)
        .bearer_auth("aforo_not-a-key")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    let answer: Value = wrong.json().await.unwrap();
    assert_eq!(answer["error"]["code"], "UNAUTHENTICATED");

    let mut client = server.grpc_client().await;
    let status = client
        .ingest(pb::IngestRequest::default())
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unauthenticated);

    // A second tenant, made with the CLI while the server runs.
    let (ok, out, err) = server.admin(&["tenants", "create", "globex"]).await;
    assert!(ok, "{out}{err}");
    let (ok, key_b, err) = server
        .admin(&["keys", "create", "--tenant", "globex"])
        .await;
    assert!(ok, "{err}");
    let key_b = key_b.trim().to_owned();
    let (ok, _, err) = server
        .admin(&["keys", "create", "--tenant", "nobody"])
        .await;
    assert!(!ok);
    assert!(err.contains("no tenant named \"nobody\""), "{err}");

    let (_, a) = server.post_events("application/json", body.clone()).await;
    assert_eq!(a["results"][0]["status"], "ACCEPTED");
    let b: Value = http
        .post(&url)
        .bearer_auth(&key_b)
        .body(body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        b["results"][0]["status"], "ACCEPTED",
        "no dedup across tenants"
    );
    assert_ne!(
        b["results"][0]["stored_event_id"],
        a["results"][0]["stored_event_id"]
    );
    let (_, seen_by_b) = server.get_as("/v1/events", &key_b).await;
    let seen: Vec<&Value> = seen_by_b["items"].as_array().unwrap().iter().collect();
    assert_eq!(seen.len(), 1);
    assert_eq!(
        seen[0]["stored_event_id"],
        b["results"][0]["stored_event_id"]
    );
}

#[tokio::test]
async fn oversized_and_malformed_requests_get_specific_errors_and_store_nothing() {
    let server = Server::start_with(
        Backend::Sqlite,
        &[
            "--max-body-bytes",
            "4096",
            "--max-batch-events",
            "3",
            "--max-json-depth",
            "6",
        ],
    )
    .await;
    let event = |id: usize| {
        json!({"id": format!("e{id}"), "source": "s", "type": "t", "customer": "c",
               "time": Utc::now().to_rfc3339()})
    };
    let cases: Vec<(&str, String, u16, &str)> = vec![
        (
            "application/json",
            json!({"blob": "x".repeat(5000)}).to_string(),
            413,
            "BODY_TOO_LARGE",
        ),
        (
            "application/json",
            Value::Array((0..4).map(event).collect()).to_string(),
            413,
            "BATCH_TOO_LARGE",
        ),
        (
            "application/json",
            "[[[[[[[{}]]]]]]]".to_owned(),
            400,
            "JSON_TOO_DEEP",
        ),
        (
            "application/json",
            "{\"id\": ".to_owned(),
            400,
            "INVALID_JSON",
        ),
        ("application/json", "42".to_owned(), 400, "INVALID_BODY"),
        (
            "text/csv",
            "id,source\n".to_owned(),
            415,
            "UNSUPPORTED_MEDIA_TYPE",
        ),
    ];
    for (content_type, body, status, code) in cases {
        let (got, answer) = server.post_events(content_type, body).await;
        assert_eq!(
            (got, answer["error"]["code"].as_str().unwrap()),
            (status, code),
            "{answer}"
        );
    }
    let (status, answer) = server.get("/v1/events?colour=blue").await;
    assert_eq!(status, 400);
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap()
            .contains("colour")
    );
    let (status, _) = server.get("/v1/events?from=yesterday").await;
    assert_eq!(status, 400);
    assert!(server.all_events().await.is_empty());
    let (_, rejections) = server.get("/v1/rejections").await;
    assert!(rejections["items"].as_array().unwrap().is_empty());

    // Over gRPC the batch bound is the same.
    let mut client = server.grpc_client().await;
    let events = (0..4)
        .map(|i| proto_event(&format!("g{i}"), Utc::now()))
        .collect();
    let status = server.grpc_ingest(&mut client, events).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(
        status.message().starts_with("BATCH_TOO_LARGE"),
        "{}",
        status.message()
    );
}

#[tokio::test]
async fn grpcurl_finds_the_services_by_reflection_and_ingests() {
    let server = Server::start(Backend::Sqlite).await;
    let address = server.grpc.trim_start_matches("http://").to_owned();
    let services = grpcurl_out(&[], &address, &["list"]);
    assert!(services.contains("aforo.v1.IngestService"), "{services}");
    assert!(services.contains("grpc.health.v1.Health"), "{services}");
    let described = grpcurl_out(&[], &address, &["describe", "aforo.v1.Event"]);
    assert!(described.contains("customer"), "{described}");
    let health = grpcurl_out(&[], &address, &["grpc.health.v1.Health/Check"]);
    assert!(health.contains("SERVING"), "{health}");
    let body = json!({"events": [{"id": "from-grpcurl", "source": "cli", "type": "api.call",
        "customer": "acme", "time": Utc::now().to_rfc3339(), "properties": {"n": 1}}]});
    let key = format!("authorization: Bearer {}", server.key);
    let answer = grpcurl_out(
        &["-H", &key, "-d", &body.to_string()],
        &address,
        &["aforo.v1.IngestService/Ingest"],
    );
    assert!(answer.contains("EVENT_STATUS_ACCEPTED"), "{answer}");
    assert_eq!(server.all_events().await[0]["id"], "from-grpcurl");
}

#[tokio::test]
async fn the_cli_sends_and_tails_events() {
    let server = Server::start(Backend::Sqlite).await;
    let grpc = server.grpc.clone();
    let (ok, out, err) = server
        .cli(&[
            "events",
            "send",
            "--grpc",
            &grpc,
            "--id",
            "cli-1",
            "--type",
            "tokens",
            "--customer",
            "acme",
            "-p",
            "tokens=42",
            "-p",
            "model=small",
        ])
        .await;
    assert!(ok, "{out}{err}");
    assert!(out.contains("ACCEPTED"), "{out}");

    let file = server.data_dir().join("events.ndjson");
    let now = Utc::now().to_rfc3339();
    std::fs::write(
        &file,
        format!(
            "{}\n{}\n",
            json!({"id": "cli-2", "source": "f", "type": "tokens", "customer": "acme", "time": now}),
            json!({"id": "cli-3", "source": "f", "type": "tokens", "time": now})
        ),
    )
    .unwrap();
    let (ok, out, _) = server
        .cli(&[
            "events",
            "send",
            "--grpc",
            &grpc,
            "--file",
            file.to_str().unwrap(),
        ])
        .await;
    assert!(!ok, "a rejected event makes the command fail");
    assert!(out.contains("SCHEMA_MISSING_CUSTOMER"), "{out}");

    let http = server.http.clone();
    let (ok, out, err) = server
        .cli(&[
            "events",
            "tail",
            "--http",
            &http,
            "--from-start",
            "--json",
            "--limit",
            "2",
        ])
        .await;
    assert!(ok, "{err}");
    let lines: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["id"], "cli-1");
    assert_eq!(
        lines[0]["properties"],
        json!({"tokens": 42, "model": "small"})
    );
    assert_eq!(lines[1]["id"], "cli-2");
}

#[tokio::test]
async fn health_readiness_and_metrics_are_served() {
    let server = Server::start(Backend::Postgres).await;
    let http = server.http_client();
    for path in ["/healthz", "/readyz"] {
        let response = http
            .get(format!("{}{path}", server.http))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{path}");
    }
    let body = Value::Array(mixed_batch("m")).to_string();
    server.post_events("application/json", body).await;
    let metrics = server.metrics().await;
    assert!(
        metrics.contains(r#"aforo_ingest_events_total{status="ACCEPTED",reason=""} 2"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"reason="TIMESTAMP_IN_FUTURE"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains("aforo_ingest_commit_duration_seconds_bucket"),
        "{metrics}"
    );
    assert!(
        metrics.contains("aforo_ingest_request_duration_seconds_bucket"),
        "{metrics}"
    );
}

#[tokio::test]
async fn metrics_show_the_enrichment_backlog() {
    for backend in [Backend::Sqlite, Backend::Postgres] {
        // No enricher: what is stored stays waiting.
        let server = Server::start_with(backend, &["--enrichers", "0"]).await;
        let body = Value::Array(mixed_batch("b")).to_string();
        server.post_events("application/json", body).await;
        let metrics = server.metrics().await;
        assert!(
            metrics.contains("\naforo_enrichment_backlog_events 2\n"),
            "the two accepted events wait: {metrics}"
        );
        assert!(metrics.ends_with("# EOF\n"), "{metrics}");
    }
}

#[tokio::test]
async fn ingest_stream_answers_every_batch_by_its_id() {
    let server = Server::start(Backend::Sqlite).await;
    let mut client = server.grpc_client().await;
    let now = Utc::now();
    let requests: Vec<pb::IngestRequest> = (0..5)
        .map(|b| pb::IngestRequest {
            batch_id: format!("batch-{b}"),
            // Batch 4 repeats batch 0: its events are DUPLICATE.
            events: (0..20)
                .map(|i| proto_event(&format!("s{}-{i}", b % 4), now))
                .collect(),
        })
        .collect();
    let (tx, rx) = tokio::sync::mpsc::channel(8);
    let mut request = tonic::Request::new(tokio_stream::wrappers::ReceiverStream::new(rx));
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {}", server.key).parse().unwrap(),
    );
    let mut answers = client.ingest_stream(request).await.unwrap().into_inner();
    // Send the first four at once; they may be answered in any order.
    for r in &requests[..4] {
        tx.send(r.clone()).await.unwrap();
    }
    let mut seen = std::collections::HashMap::new();
    for _ in 0..4 {
        let answer = answers.message().await.unwrap().expect("an answer");
        seen.insert(answer.batch_id.clone(), answer);
    }
    tx.send(requests[4].clone()).await.unwrap();
    let last = answers.message().await.unwrap().expect("an answer");
    drop(tx);
    assert!(
        answers.message().await.unwrap().is_none(),
        "the stream ends with its input"
    );

    for b in 0..4 {
        assert_eq!(seen[&format!("batch-{b}")].accepted, 20);
    }
    assert_eq!(last.batch_id, "batch-4");
    assert_eq!(last.duplicates, 20);
    assert_eq!(server.all_events().await.len(), 80);
}
