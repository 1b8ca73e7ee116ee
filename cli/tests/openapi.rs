//! The OpenAPI documents: generated from the handlers, committed under
//! `api/openapi/`, served by every role at `/openapi.json`, valid OpenAPI 3.1
//! by an independent validator, and true: every operation they declare is
//! called here on a real server, and every answer is checked against the
//! schema the document declares for it.
//!
//! Dates: the subscription starts at the start of the month two months ago
//! and the events are in the month before this one, so the bill run finds
//! exactly one ended period with usage whatever day the suite runs.

mod common;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::{Backend, Months, Server, api_time, examples, rfc3339, single_role};
use serde_json::{Value, json};
use tokio::process::Child;

fn committed(role: &str) -> PathBuf {
    PathBuf::from(
        std::env::var("CARGO_MANIFEST_DIR")
            .expect("CARGO_MANIFEST_DIR: run by cargo test, or by scripts/hard-days.sh"),
    )
    .join(format!("../api/openapi/{role}.json"))
}

fn generated() -> Vec<(&'static str, String)> {
    use aforo_api::openapi::to_json;
    vec![
        (
            "standalone",
            to_json(&aforo_ingest::standalone_document(
                aforo_billing::rest::openapi(),
            )),
        ),
        ("ingest", to_json(&aforo_ingest::document())),
        ("billing", to_json(&aforo_billing::rest::document())),
    ]
}

#[test]
fn committed_documents_match_the_code() {
    for (role, text) in generated() {
        let path = committed(role);
        if std::env::var_os("AFORO_UPDATE_OPENAPI").is_some() {
            std::fs::write(&path, &text).expect("write the document");
        }
        let on_disk = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            on_disk == text,
            "api/openapi/{role}.json is out of date with the handlers.\n\
             Regenerate it: `aforo openapi print --role {role} > api/openapi/{role}.json`\n\
             (or AFORO_UPDATE_OPENAPI=1 cargo test -p aforo --test openapi)"
        );
    }
}

fn python() -> String {
    std::env::var("AFORO_OPENAPI_PYTHON").expect(
        "AFORO_OPENAPI_PYTHON is not set: run scripts/test.sh, or `eval \"$(scripts/pyenv.sh)\"` first",
    )
}

/// Runs tests/openapi/validate.py; panics with its report unless it passes.
fn validate(args: &[&std::path::Path]) -> String {
    let script = PathBuf::from(
        std::env::var("CARGO_MANIFEST_DIR")
            .expect("CARGO_MANIFEST_DIR: run by cargo test, or by scripts/hard-days.sh"),
    )
    .join("../tests/openapi/validate.py");
    let out = std::process::Command::new(python())
        .arg(script)
        .args(args)
        .output()
        .expect("run the OpenAPI validator");
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{report}");
    report
}

#[test]
fn every_committed_document_is_valid_openapi_3_1() {
    for role in ["standalone", "ingest", "billing"] {
        let report = validate(&[&committed(role)]);
        assert!(report.contains("valid OpenAPI 3.1.0"), "{report}");
    }
}

/// Starts a single role on a fresh SQLite store; returns it and its HTTP URL.
async fn role(args: &[&str], dir: &tempfile::TempDir) -> (Child, String) {
    let ports = ["--http-addr", "127.0.0.1:0", "--grpc-addr", "127.0.0.1:0"];
    let args: Vec<&str> = args.iter().chain(&ports).copied().collect();
    let (child, ready) = single_role(&args, dir.path()).await;
    (child, ready.field("http="))
}

async fn served(http: &str) -> String {
    // No key: the document is public.
    let response = reqwest::get(format!("{http}/openapi.json"))
        .await
        .expect("GET /openapi.json");
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-type"].to_str().unwrap(),
        "application/json"
    );
    response.text().await.expect("a body")
}

#[tokio::test]
async fn every_role_serves_its_committed_document() {
    let standalone = Server::start(Backend::Sqlite).await;
    let ingest_dir = tempfile::tempdir().unwrap();
    let (_ingest, ingest) = role(&["ingest"], &ingest_dir).await;
    let billing_dir = tempfile::tempdir().unwrap();
    let (_billing, billing) = role(&["billing", "--bill-every-secs", "0"], &billing_dir).await;
    for (role, http) in [
        ("standalone", &standalone.http),
        ("ingest", &ingest),
        ("billing", &billing),
    ] {
        let on_disk = std::fs::read_to_string(committed(role)).unwrap();
        assert!(
            served(http).await == on_disk,
            "{role} serves another document than api/openapi/{role}.json"
        );
    }
}

/// Real calls, recorded for the validator: (path template, method, status,
/// content type, body).
struct Recorder {
    server: Server,
    answers: Vec<Value>,
}

impl Recorder {
    async fn call(
        &mut self,
        method: &str,
        template: &str,
        path: &str,
        body: Option<(&str, String)>,
    ) -> (u16, Value) {
        self.call_with(method, template, path, body, &[]).await
    }

    /// A call with more headers. An NDJSON answer is recorded line by
    /// line (each is one of the declared schema) and returned as an array.
    async fn call_with(
        &mut self,
        method: &str,
        template: &str,
        path: &str,
        body: Option<(&str, String)>,
        headers: &[(String, String)],
    ) -> (u16, Value) {
        let client = self.server.http_client();
        let url = format!("{}{path}", self.server.http);
        let mut request = match method {
            "get" => client.get(url),
            _ => client.post(url),
        }
        .bearer_auth(&self.server.key);
        for (name, value) in headers {
            request = request.header(name, value);
        }
        if let Some((content_type, body)) = body {
            request = request.header("content-type", content_type).body(body);
        }
        let response = request.send().await.expect("a response");
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().split(';').next().unwrap().to_owned())
            .unwrap_or_default();
        let text = response.text().await.expect("a body");
        if content_type == "application/x-ndjson" {
            let lines: Vec<Value> = text
                .lines()
                .map(|line| serde_json::from_str(line).expect("an NDJSON line"))
                .collect();
            for line in &lines {
                self.answers.push(json!({
                    "path": template, "method": method, "status": status,
                    "content_type": content_type, "body": line,
                }));
            }
            return (status, Value::Array(lines));
        }
        let body = if content_type == "application/json" {
            serde_json::from_str(&text).expect("JSON")
        } else {
            Value::String(text)
        };
        self.answers.push(json!({
            "path": template, "method": method, "status": status,
            "content_type": content_type, "body": body,
        }));
        (status, body)
    }

    async fn get(&mut self, template: &str, path: &str) -> Value {
        let (status, body) = self.call("get", template, path, None).await;
        assert_eq!(status, 200, "GET {path}: {body}");
        body
    }

    async fn post(&mut self, template: &str, path: &str, body: Value) -> (u16, Value) {
        self.call(
            "post",
            template,
            path,
            Some(("application/json", body.to_string())),
        )
        .await
    }
}

#[tokio::test]
async fn every_operation_answers_what_the_document_says() {
    let server = Server::start_with(
        Backend::Sqlite,
        &["--bill-every-secs", "0", "--max-age", "400d"],
    )
    .await;
    let (applied, out, err) = server
        .cli(&[
            "apply",
            "-f",
            examples().to_str().unwrap(),
            "--http",
            &server.http,
        ])
        .await;
    assert!(applied, "{out}{err}");
    let months = Months::now();
    let mut r = Recorder {
        server,
        answers: Vec::new(),
    };

    // The catalog: the examples again (the same content: no new version),
    // and a resource that is not one.
    let mut resources = Vec::new();
    for file in std::fs::read_dir(examples()).unwrap() {
        let path = file.unwrap().path();
        if path.extension().is_some_and(|e| e == "yaml") {
            let text = std::fs::read_to_string(&path).unwrap();
            let docs = aforo_crds::catalog::yaml_documents(&text, "example").unwrap();
            resources.extend(docs.into_iter().map(|(_, v)| v));
        }
    }
    let (status, applied) = r
        .post(
            "/v1/catalog/apply",
            "/v1/catalog/apply",
            json!({ "resources": resources }),
        )
        .await;
    assert_eq!(
        (status, &applied["created"]),
        (200, &json!(false)),
        "{applied}"
    );
    let (status, refused) = r
        .post(
            "/v1/catalog/apply",
            "/v1/catalog/apply",
            json!({"resources": [{"apiVersion": "aforo.io/v1alpha1", "kind": "Meter",
                                   "metadata": {"name": "m"}, "spec": {}}]}),
        )
        .await;
    assert_eq!(status, 422, "{refused}");
    r.get("/v1/catalog", "/v1/catalog").await;
    let versions = r.get("/v1/catalog/versions", "/v1/catalog/versions").await;
    let version = versions["items"][0]["version"].as_i64().unwrap();
    r.get(
        "/v1/catalog/versions/{version}",
        &format!("/v1/catalog/versions/{version}"),
    )
    .await;
    let (status, _) = r
        .call(
            "get",
            "/v1/catalog/versions/{version}",
            "/v1/catalog/versions/999",
            None,
        )
        .await;
    assert_eq!(status, 404);

    // Customers.
    let acme = json!({"id": "acme", "name": "Acme", "tax_region": "DE",
                      "metadata": {"tier": "gold"}});
    assert_eq!(
        r.post("/v1/customers", "/v1/customers", acme.clone())
            .await
            .0,
        201
    );
    assert_eq!(r.post("/v1/customers", "/v1/customers", acme).await.0, 200);
    let csv = "external_id,name,currency,tax_region\nglobex,Globex,EUR,DE\n,nameless,,\n";
    let (status, import) = r
        .call(
            "post",
            "/v1/customers/import",
            "/v1/customers/import",
            Some(("text/csv", csv.to_owned())),
        )
        .await;
    assert_eq!((status, &import["failed"]), (200, &json!(1)), "{import}");
    let page = r.get("/v1/customers", "/v1/customers?limit=1").await;
    assert_eq!(page["items"].as_array().unwrap().len(), 1);
    assert!(page["next_cursor"].is_string(), "{page}");
    r.get("/v1/customers/{id}", "/v1/customers/acme").await;
    let (status, _) = r
        .call("get", "/v1/customers/{id}", "/v1/customers/nobody", None)
        .await;
    assert_eq!(status, 404);

    // Subscriptions.
    let (status, sub) = r
        .post(
            "/v1/subscriptions",
            "/v1/subscriptions",
            json!({"customer": "acme", "rate_plan": "translation-pro",
                   "starts_at": rfc3339(months.start(2)), "billing_anchor_day": 1}),
        )
        .await;
    assert_eq!(status, 201, "{sub}");
    let sub = sub["id"].as_str().unwrap().to_owned();
    r.get("/v1/subscriptions", "/v1/subscriptions?customer=acme")
        .await;
    let (status, discount) = r
        .post(
            "/v1/subscriptions/{id}/discounts",
            &format!("/v1/subscriptions/{sub}/discounts"),
            json!({"percent": "10"}),
        )
        .await;
    assert_eq!(status, 200, "{discount}");

    // Events: two good ones last month, one without a customer.
    let events: Vec<Value> = (0..2)
        .map(|i| {
            json!({"id": format!("e{i}"), "source": "openapi", "type": "translation.characters",
                   "customer": "acme", "time": rfc3339(months.at(1, 10 + i, 12)),
                   "properties": {"characters": 1000, "lang": "de"}})
        })
        .chain([
            json!({"id": "bad", "source": "openapi", "type": "translation.characters",
                       "time": rfc3339(months.at(1, 3, 0)), "properties": {}}),
        ])
        .collect();
    let (status, sent) = r.post("/v1/events", "/v1/events", json!(events)).await;
    assert_eq!(
        (status, &sent["accepted"], &sent["rejected"]),
        (200, &json!(2), &json!(1)),
        "{sent}"
    );
    let (status, _) = r
        .call(
            "post",
            "/v1/events",
            "/v1/events",
            Some(("text/plain", "hello".into())),
        )
        .await;
    assert_eq!(status, 415);
    r.get("/v1/rejections", "/v1/rejections").await;

    // A batch: two rows as NDJSON, one of them without a customer; a CSV
    // upload without its header row stops with the batch as far as it got.
    let rows = [
        json!({"id": "b0", "source": "openapi", "type": "translation.characters",
               "customer": "batch-co", "time": rfc3339(months.at(1, 12, 0)),
               "properties": {"characters": 10, "lang": "de"}}),
        json!({"id": "b1", "source": "openapi", "type": "translation.characters",
               "time": rfc3339(months.at(1, 12, 0)), "properties": {}}),
    ];
    let ndjson: String = rows.iter().map(|row| format!("{row}\n")).collect();
    let (status, batch) = r
        .call(
            "post",
            "/v1/batches",
            "/v1/batches",
            Some(("application/x-ndjson", ndjson)),
        )
        .await;
    assert_eq!(status, 200, "{batch}");
    assert_eq!(
        (&batch["status"], &batch["accepted"], &batch["rejected"]),
        (&json!("COMPLETE"), &json!(1), &json!(1)),
        "{batch}"
    );
    let batch_id = batch["batch_id"].as_str().unwrap().to_owned();
    let shown = r
        .get("/v1/batches/{id}", &format!("/v1/batches/{batch_id}"))
        .await;
    assert_eq!(shown, batch);
    let (status, results) = r
        .call(
            "get",
            "/v1/batches/{id}/results",
            &format!("/v1/batches/{batch_id}/results"),
            None,
        )
        .await;
    assert_eq!(status, 200);
    let statuses: Vec<_> = results
        .as_array()
        .unwrap()
        .iter()
        .map(|line| (line["row"].clone(), line["status"].clone()))
        .collect();
    assert_eq!(
        statuses,
        [(json!(1), json!("ACCEPTED")), (json!(2), json!("REJECTED"))]
    );
    let (status, failed) = r
        .call(
            "post",
            "/v1/batches",
            "/v1/batches",
            Some(("text/csv", String::new())),
        )
        .await;
    assert_eq!(status, 422, "{failed}");
    assert_eq!(failed["batch"]["status"], "FAILED", "{failed}");
    let (status, _) = r
        .call(
            "get",
            "/v1/batches/{id}",
            &format!("/v1/batches/{}", uuid::Uuid::now_v7()),
            None,
        )
        .await;
    assert_eq!(status, 404);

    // Webhooks: the example Stripe source with its secret written where
    // standalone reads secrets; a paid invoice maps to an event, another
    // type is ignored, an unsigned delivery is refused and kept for review.
    let secret = "whsec_openapi";
    let folder = r.server.data_dir().join("secrets/default/stripe-webhook");
    std::fs::create_dir_all(&folder).unwrap();
    std::fs::write(folder.join("signing-secret"), secret).unwrap();
    let stripe = |kind: &str, id: &str| {
        use hmac::{Hmac, Mac};
        let now = chrono::Utc::now().timestamp();
        let body = json!({"id": id, "type": kind, "created": now,
            "data": {"object": {"customer": "stripe-co", "amount_paid": 1200, "currency": "eur"}}})
        .to_string();
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
        mac.update(format!("{now}.{body}").as_bytes());
        let signature: String = mac
            .finalize()
            .into_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        (
            body,
            vec![(
                "stripe-signature".to_owned(),
                format!("t={now},v1={signature}"),
            )],
        )
    };
    let template = "/v1/webhooks/{namespace}/{source}";
    let path = "/v1/webhooks/default/stripe-payments";
    let (body, headers) = stripe("invoice.paid", "evt_openapi_paid");
    let (status, delivered) = r
        .call_with(
            "post",
            template,
            path,
            Some(("application/json", body)),
            &headers,
        )
        .await;
    assert_eq!(status, 200, "{delivered}");
    assert_eq!(delivered["delivery_id"], "evt_openapi_paid", "{delivered}");
    assert_eq!(delivered["accepted"], 1, "{delivered}");
    let (body, headers) = stripe("customer.created", "evt_openapi_other");
    let (status, ignored) = r
        .call_with(
            "post",
            template,
            path,
            Some(("application/json", body)),
            &headers,
        )
        .await;
    assert_eq!(
        (status, &ignored["status"]),
        (200, &json!("IGNORED")),
        "{ignored}"
    );
    let (status, _) = r
        .call(
            "post",
            template,
            path,
            Some(("application/json", "{}".into())),
        )
        .await;
    assert_eq!(status, 401);
    let kept = r
        .get("/v1/webhooks/rejections", "/v1/webhooks/rejections")
        .await;
    let reasons: BTreeSet<&str> = kept["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["reason"].as_str().unwrap())
        .collect();
    assert_eq!(
        reasons,
        BTreeSet::from(["WEBHOOK_SIGNATURE_MISSING", "WEBHOOK_UNMATCHED"]),
        "{kept}"
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    let event = loop {
        let page = r.get("/v1/events", "/v1/events?customer=acme").await;
        let items = page["items"].as_array().unwrap().clone();
        if items.len() == 2 && items.iter().all(|e| e["enrichment"] == "ENRICHED") {
            break items[0]["stored_event_id"].as_str().unwrap().to_owned();
        }
        assert!(Instant::now() < deadline, "enriched within 60 s: {page}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let (status, _) = r
        .call("get", "/v1/events", "/v1/events?colour=blue", None)
        .await;
    assert_eq!(status, 400);

    // Usage.
    r.get("/v1/revenue", "/v1/revenue?customer=acme").await;
    r.get(
        "/v1/events/{id}/revenue",
        &format!("/v1/events/{event}/revenue"),
    )
    .await;
    r.get("/v1/revenue/hourly", "/v1/revenue/hourly").await;
    r.get("/v1/margin/cohorts", "/v1/margin/cohorts?key=tier")
        .await;
    r.get(
        "/v1/entitlements",
        "/v1/entitlements?customer=acme&meter=translation-characters",
    )
    .await;

    // Bill runs and invoices.
    // Cut off now: by default a run leaves out the last minute, and the
    // subscription was recorded within it.
    let now = chrono::Utc::now().to_rfc3339();
    let (status, report) = r
        .post("/v1/bill-runs", "/v1/bill-runs", json!({ "cutoff": now }))
        .await;
    assert_eq!(status, 200, "{report}");
    assert!(
        !report["invoiced"].as_array().unwrap().is_empty(),
        "{report}"
    );
    r.get("/v1/bill-runs", "/v1/bill-runs").await;
    let (status, replay) = r
        .post(
            "/v1/bill-runs/replay",
            "/v1/bill-runs/replay",
            json!({"period_start": rfc3339(months.start(1))}),
        )
        .await;
    assert_eq!(
        (status, &replay["identical"]),
        (200, &json!(true)),
        "{replay}"
    );
    let invoices = r.get("/v1/invoices", "/v1/invoices?customer=acme").await;
    // The invoice of last month: the one with the usage.
    let number = invoices["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["period_start"] == api_time(months.start(1)))
        .unwrap_or_else(|| panic!("an invoice of last month: {invoices}"))["number"]
        .as_str()
        .unwrap()
        .to_owned();
    r.get("/v1/invoices/{invoice}", &format!("/v1/invoices/{number}"))
        .await;
    let lines = r
        .get(
            "/v1/invoices/{invoice}/lines",
            &format!("/v1/invoices/{number}/lines"),
        )
        .await;
    let line = lines["lines"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["kind"] == "USAGE")
        .expect("a usage line")["number"]
        .clone();
    let first = r
        .get(
            "/v1/invoices/{invoice}/lines/{line}/events",
            &format!("/v1/invoices/{number}/lines/{line}/events?limit=1"),
        )
        .await;
    assert_eq!(
        (&first["total"], &first["next_cursor"]),
        (&json!(2), &json!("1"))
    );
    r.get(
        "/v1/invoices/{invoice}/lines/{line}/events",
        &format!("/v1/invoices/{number}/lines/{line}/events?after=1"),
    )
    .await;
    r.get(
        "/v1/invoices/{invoice}/lines/{line}/attribution",
        &format!("/v1/invoices/{number}/lines/{line}/attribution"),
    )
    .await;
    r.get(
        "/v1/invoices/{invoice}/audit",
        &format!("/v1/invoices/{number}/audit"),
    )
    .await;
    let (status, csv) = r
        .call(
            "get",
            "/v1/invoices/{invoice}/audit",
            &format!("/v1/invoices/{number}/audit?format=csv"),
            None,
        )
        .await;
    assert_eq!(status, 200);
    assert!(
        csv.as_str().unwrap().starts_with("tenant,invoice,line,"),
        "{csv}"
    );
    r.get(
        "/v1/events/{id}/proof",
        &format!("/v1/events/{event}/proof"),
    )
    .await;

    // A plan change last: it changes what the next events cost.
    let (status, changed) = r
        .post(
            "/v1/subscriptions/{id}/plan",
            &format!("/v1/subscriptions/{sub}/plan"),
            json!({"rate_plan": "ai-agents-usage", "effective_at": rfc3339(chrono::Utc::now())}),
        )
        .await;
    assert_eq!(status, 200, "{changed}");
    assert_eq!(changed["phases"].as_array().unwrap().len(), 2, "{changed}");

    // Every declared operation was called.
    let document: Value =
        serde_json::from_str(&std::fs::read_to_string(committed("standalone")).unwrap()).unwrap();
    let declared: BTreeSet<(String, String)> = document["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(path, item)| {
            item.as_object()
                .unwrap()
                .keys()
                .map(move |method| (path.clone(), method.clone()))
        })
        .collect();
    let called: BTreeSet<(String, String)> = r
        .answers
        .iter()
        .map(|a| {
            (
                a["path"].as_str().unwrap().to_owned(),
                a["method"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let missed: Vec<_> = declared.difference(&called).collect();
    assert!(missed.is_empty(), "declared and never called: {missed:?}");

    let dir = tempfile::tempdir().unwrap();
    let answers = dir.path().join("answers.json");
    std::fs::write(&answers, serde_json::to_string(&r.answers).unwrap()).unwrap();
    let report = validate(&[&committed("standalone"), &answers]);
    assert!(report.contains(", 0 problems"), "{report}");
}
