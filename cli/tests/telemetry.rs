//! Traces and JSON logs: `aforo standalone` exports its spans over OTLP/HTTP
//! to a receiver here (the OTLP JSON encoding, as a collector receives it),
//! and one event's trace runs from its REST request through the gates and
//! the commit to its enrichment, which happens later, from the store, in
//! another task. The JSON log lines of the request carry its trace id.

mod common;

use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aforo_proto::v1 as pb;
use aforo_proto::v1::ingest_service_client::IngestServiceClient;
use axum::Json;
use axum::routing::post;
use common::{BIN, proto_event, ready_line, rfc3339};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

#[derive(Clone, Debug)]
struct Span {
    trace: String,
    id: String,
    parent: String,
    name: String,
}

/// An OTLP/HTTP receiver: every span exported to `/v1/traces`.
async fn receiver() -> (String, Arc<Mutex<Vec<Span>>>) {
    let spans: Arc<Mutex<Vec<Span>>> = Arc::default();
    let sink = spans.clone();
    let app = axum::Router::new().route(
        "/v1/traces",
        post(move |Json(body): Json<Value>| {
            let sink = sink.clone();
            async move {
                let mut sink = sink.lock().unwrap();
                for resource in body["resourceSpans"].as_array().into_iter().flatten() {
                    for scope in resource["scopeSpans"].as_array().into_iter().flatten() {
                        for s in scope["spans"].as_array().into_iter().flatten() {
                            let text = |k: &str| s[k].as_str().unwrap_or_default().to_owned();
                            sink.push(Span {
                                trace: text("traceId"),
                                id: text("spanId"),
                                parent: text("parentSpanId"),
                                name: text("name"),
                            });
                        }
                    }
                }
                Json(json!({}))
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, spans)
}

#[tokio::test]
async fn one_trace_runs_from_the_request_through_commit_to_enrichment() {
    let (collector, spans) = receiver().await;
    let spans_of = spans.clone();
    let dir = tempfile::tempdir().unwrap();
    let database = format!("sqlite://{}", dir.path().join("aforo.db").display());
    let mut child = Command::new(BIN)
        .args(["standalone", "--data-dir"])
        .arg(dir.path())
        .args(["--database-url", &database])
        .args(["--http-addr", "127.0.0.1:0", "--grpc-addr", "127.0.0.1:0"])
        .args(["--log-format", "json"])
        .env("AFORO_LOG", "warn,aforo_api=debug")
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", &collector)
        .env("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")
        .env("OTEL_SERVICE_NAME", "aforo-telemetry-test")
        .env("OTEL_BSP_SCHEDULE_DELAY", "100")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn aforo");
    let mut stderr = BufReader::new(child.stderr.take().unwrap()).lines();
    let logs: Arc<Mutex<Vec<String>>> = Arc::default();
    let sink = logs.clone();
    tokio::spawn(async move {
        while let Ok(Some(line)) = stderr.next_line().await {
            sink.lock().unwrap().push(line);
        }
    });
    let ready = ready_line(&mut child).await;
    let (http, grpc) = (
        ready.field("http="),
        format!("http://{}", ready.field("grpc=")),
    );
    let key = std::fs::read_to_string(dir.path().join("dev-api-key")).unwrap();

    let event = json!({"id": "traced-1", "source": "telemetry", "type": "api.call",
                       "customer": "acme", "time": rfc3339(chrono::Utc::now()),
                       "properties": {}});
    let answer: Value = reqwest::Client::new()
        .post(format!("{http}/v1/events"))
        .bearer_auth(key.trim())
        .json(&event)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(answer["accepted"], 1, "{answer}");

    // The enrichment span is exported last (the event waits in the store
    // for an enricher's claim).
    let deadline = Instant::now() + Duration::from_secs(30);
    let spans = loop {
        let seen = spans.lock().unwrap().clone();
        if seen.iter().any(|s| s.name == "enrich") {
            break seen;
        }
        assert!(
            Instant::now() < deadline,
            "no enrichment span within 30 s; exported: {:?}",
            seen.iter().map(|s| &s.name).collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let one = |name: &str| -> Span {
        let found: Vec<&Span> = spans.iter().filter(|s| s.name == name).collect();
        assert_eq!(found.len(), 1, "one {name:?} span in {spans:#?}");
        found[0].clone()
    };
    let request = one("POST /v1/events");
    let ingest = one("ingest");
    let commit = one("commit");
    let enrich = one("enrich");
    for span in [&ingest, &commit, &enrich] {
        assert_eq!(
            span.trace, request.trace,
            "{span:?} is in the request's trace"
        );
    }
    assert_eq!(ingest.parent, request.id, "the gates run in the request");
    assert_eq!(commit.parent, ingest.id, "the commit is the ingest's");
    assert_eq!(enrich.parent, ingest.id, "enrichment continues the ingest");
    assert!(request.parent.is_empty(), "the request starts the trace");

    // The request's JSON log lines name its trace.
    let logs = logs.lock().unwrap().clone();
    let answered = logs
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|l| l["fields"]["message"] == "answered" && l["span"]["http.route"] == "/v1/events")
        .unwrap_or_else(|| panic!("a JSON log line of the request in {logs:#?}"));
    assert_eq!(
        answered["span"]["trace_id"],
        request.trace.as_str(),
        "{answered}"
    );

    // A gRPC call has its own trace, named by its method.
    let mut client = IngestServiceClient::connect(grpc).await.unwrap();
    let mut call = tonic::Request::new(pb::IngestRequest {
        batch_id: "traced".into(),
        events: vec![proto_event("traced-2", chrono::Utc::now())],
    });
    call.metadata_mut().insert(
        "authorization",
        format!("Bearer {}", key.trim()).parse().unwrap(),
    );
    client.ingest(call).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let seen = spans_of.lock().unwrap().clone();
        let call = seen
            .iter()
            .find(|s| s.name == "/aforo.v1.IngestService/Ingest");
        if let Some(call) = call {
            assert!(
                seen.iter()
                    .any(|s| s.name == "ingest" && s.parent == call.id && s.trace == call.trace),
                "the gRPC call's gates run in its span: {seen:#?}"
            );
            assert_ne!(call.trace, request.trace);
            break;
        }
        assert!(Instant::now() < deadline, "no gRPC span within 30 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
