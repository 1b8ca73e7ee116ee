//! The API edge on a real standalone server: one error envelope for every
//! malformed input on every route, authentication before any body is read,
//! paging that reaches the end whatever the limit asked for, and REST
//! writes that take effect for enrichment at once; and the host of every
//! role: gRPC health for each of its services, reflection, probes, one
//! metrics exposition.
//!
//! Dates: the subscription starts on the first of last month and the
//! events are dated now ([`Months`]).

mod common;

use std::time::{Duration, Instant};

use chrono::Utc;
use common::{
    Backend, Months, Server, examples_with, grpcurl_out, metrics_of, rfc3339, single_role,
};
use serde_json::{Value, json};

/// `(method, path, content type, body)` of requests every one of which is
/// malformed: a body that is no JSON, JSON of the wrong shape, a query or
/// path parameter of the wrong type.
const MALFORMED: &[(&str, &str, &str, &str)] = &[
    (
        "POST",
        "/v1/catalog/apply",
        "application/json",
        "{\"resources\": [",
    ),
    (
        "POST",
        "/v1/catalog/apply",
        "application/json",
        "{\"resources\": 3}",
    ),
    ("GET", "/v1/catalog/versions/one", "", ""),
    ("POST", "/v1/customers", "application/json", "{\"id\": 7}"),
    (
        "POST",
        "/v1/customers",
        "text/plain",
        "{\"id\": \"acme\", \"name\": \"ACME\"}",
    ),
    ("GET", "/v1/customers?limit=many", "", ""),
    (
        "POST",
        "/v1/subscriptions",
        "application/json",
        "{\"customer\": \"acme\"}",
    ),
    (
        "POST",
        "/v1/subscriptions",
        "application/json",
        "{\"customer\": \"acme\", \"rate_plan\": \"p\", \"starts_at\": \"soon\"}",
    ),
    (
        "POST",
        "/v1/subscriptions/0190/plan",
        "application/json",
        "{\"rate_plan\": 1}",
    ),
    ("GET", "/v1/revenue?from=yesterday", "", ""),
    ("GET", "/v1/entitlements?customer=acme", "", ""),
    ("POST", "/v1/bill-runs", "application/json", "{\"as_of\": "),
    ("POST", "/v1/bill-runs", "application/json", "[1, 2]"),
    ("POST", "/v1/bill-runs/replay", "application/json", "{}"),
    ("GET", "/v1/invoices/INV-000001/lines/first/events", "", ""),
    (
        "POST",
        "/v1/subscriptions/0190/discounts",
        "application/json",
        "{\"percent\": \"ten\"}",
    ),
    ("GET", "/v1/events?limit=-1", "", ""),
];

async fn call(
    server: &Server,
    key: Option<&str>,
    (method, path, content_type, body): (&str, &str, &str, &str),
) -> (u16, Option<String>, Value) {
    let client = server.http_client();
    let url = format!("{}{path}", server.http);
    let mut request = match method {
        "GET" => client.get(url),
        _ => client.post(url).body(body.to_owned()),
    };
    if !content_type.is_empty() {
        request = request.header("content-type", content_type);
    }
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    let response = request.send().await.expect("a response");
    let status = response.status().as_u16();
    let challenge = response
        .headers()
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap().to_owned());
    let text = response.text().await.expect("a body");
    let json = serde_json::from_str(&text)
        .unwrap_or_else(|_| panic!("{method} {path}: not JSON ({status}): {text}"));
    (status, challenge, json)
}

#[tokio::test]
async fn malformed_input_on_every_route_gets_the_one_error_envelope() {
    // No scheduled runs: the only run could be one a malformed body started.
    let server = Server::start_with(Backend::Sqlite, &["--bill-every-secs", "0"]).await;
    for &request in MALFORMED {
        let (status, _, json) = call(&server, Some(&server.key), request).await;
        assert!((400..500).contains(&status), "{request:?}: {status} {json}");
        let error = json["error"].as_object().unwrap_or_else(|| {
            panic!("{request:?}: no error envelope: {json}");
        });
        assert!(
            error["code"].as_str().is_some_and(
                |c| !c.is_empty() && c.chars().all(|c| c.is_ascii_uppercase() || c == '_')
            ),
            "{request:?}: {json}"
        );
        assert!(
            error["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{request:?}: {json}"
        );
    }
    // A malformed bill-run body is refused, never taken for "no body" and
    // a run with the defaults.
    let (_, runs) = server.get("/v1/bill-runs").await;
    assert_eq!(runs["items"], json!([]), "{runs}");
}

#[tokio::test]
async fn a_request_without_a_valid_key_is_refused_before_its_body_is_read() {
    let server = Server::start(Backend::Sqlite).await;
    for key in [None, Some("aforo_not-a-key")] {
        for &request in MALFORMED {
            let (status, challenge, json) = call(&server, key, request).await;
            assert_eq!(status, 401, "{request:?} with {key:?}: {json}");
            assert_eq!(json["error"]["code"], "UNAUTHENTICATED", "{request:?}");
            assert_eq!(challenge.as_deref(), Some("Bearer"), "{request:?}");
        }
    }
}

#[tokio::test]
async fn listing_customers_with_a_limit_above_the_page_size_reaches_the_end() {
    let server = Server::start(Backend::Sqlite).await;
    let total = aforo_store::MAX_PAGE_SIZE as usize + 205;
    let mut csv = String::from("external_id,name\n");
    for i in 0..total {
        csv.push_str(&format!("cus-{i:05},Customer {i}\n"));
    }
    let imported: Value = server
        .http_client()
        .post(format!("{}/v1/customers/import", server.http))
        .bearer_auth(&server.key)
        .header("content-type", "text/csv")
        .body(csv)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(imported["created"], total, "{}", imported["created"]);

    let mut seen = Vec::new();
    let mut path = "/v1/customers?limit=5000".to_owned();
    loop {
        let (status, page) = server.get(&path).await;
        assert_eq!(status, 200, "{page}");
        let customers = page["items"].as_array().unwrap();
        assert!(customers.len() <= aforo_store::MAX_PAGE_SIZE as usize);
        seen.extend(
            customers
                .iter()
                .map(|c| c["id"].as_str().unwrap().to_owned()),
        );
        match page["next_cursor"].as_str() {
            Some(next) => path = format!("/v1/customers?limit=5000&after={next}"),
            None => break,
        }
    }
    let expected: Vec<String> = (0..total).map(|i| format!("cus-{i:05}")).collect();
    assert_eq!(seen.len(), total, "every customer listed");
    assert!(seen == expected, "each customer once, in order");
}

/// Waits until `customer`'s events are all priced; returns the revenue lines
/// of the event with stored id `stored`.
async fn lines_when_enriched(server: &Server, stored: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, lines) = server.get(&format!("/v1/events/{stored}/revenue")).await;
        if lines["lines"].as_array().is_some_and(|l| !l.is_empty()) {
            return lines;
        }
        assert!(
            Instant::now() < deadline,
            "not enriched within 60 s: {lines}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn send(server: &Server, id: &str) -> String {
    let event = json!({"id": id, "source": "e2e", "type": "translation.characters",
                       "customer": "acme", "time": Utc::now().to_rfc3339(),
                       "properties": {"characters": 1000, "lang": "de"}});
    let (status, answer) = server
        .post_events("application/json", event.to_string())
        .await;
    assert_eq!(status, 200, "{answer}");
    answer["results"][0]["stored_event_id"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn a_plan_change_over_rest_prices_the_next_event_by_the_new_plan_at_once() {
    let server = Server::start(Backend::Sqlite).await;
    let months = Months::now();
    // A second plan for the same meter: one cent per character.
    let dir = tempfile::tempdir().unwrap();
    let catalog = examples_with(dir.path(), |plans| {
        format!(
            "{plans}---\napiVersion: aforo.io/v1alpha1\nkind: RatePlan\nmetadata:\n  name: translation-flat\n  namespace: default\nspec:\n  productRef: translation-api\n  currency: EUR\n  billingPeriod: MONTHLY\n  effectiveFrom: \"{}\"\n  charges:\n    - meter: translation-characters\n      perUnit:\n        unitPrice: \"0.01\"\n",
            rfc3339(months.start(1))
        )
    });
    let http = server.http.clone();
    let (ok, out, err) = server
        .cli(&["apply", "-f", catalog.to_str().unwrap(), "--http", &http])
        .await;
    assert!(ok, "{out}{err}");
    let client = server.http_client();
    let created = client
        .post(format!("{http}/v1/customers"))
        .bearer_auth(&server.key)
        .json(&json!({"id": "acme", "name": "ACME", "currency": "EUR"}))
        .send()
        .await
        .unwrap();
    assert!(created.status().is_success(), "{}", created.status());
    let sub: Value = client
        .post(format!("{http}/v1/subscriptions"))
        .bearer_auth(&server.key)
        .json(&json!({"customer": "acme", "rate_plan": "translation-pro",
                      "starts_at": rfc3339(months.start(1)), "billing_anchor_day": 1}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = sub["id"].as_str().expect("a subscription id").to_owned();

    // Priced by translation-pro: the enricher now holds acme's context.
    let first = send(&server, "before").await;
    let lines = lines_when_enriched(&server, &first).await;
    assert_eq!(lines["lines"][0]["rate_plan"], "translation-pro", "{lines}");

    let changed = client
        .post(format!("{http}/v1/subscriptions/{id}/plan"))
        .bearer_auth(&server.key)
        .json(&json!({"rate_plan": "translation-flat",
                      "effective_at": (Utc::now() - chrono::Duration::seconds(1)).to_rfc3339()}))
        .send()
        .await
        .unwrap();
    assert_eq!(changed.status(), 200);
    let second = send(&server, "after").await;
    let lines = lines_when_enriched(&server, &second).await;
    assert_eq!(
        lines["lines"][0]["rate_plan"], "translation-flat",
        "the cached context was dropped: {lines}"
    );
    assert_eq!(lines["lines"][0]["revenue"], "10", "{lines}");
}

#[tokio::test]
async fn a_request_over_its_time_is_answered_with_the_envelope_and_stores_nothing() {
    let server = Server::start_with(Backend::Sqlite, &["--request-timeout", "1s"]).await;
    // A body that never ends: the handler waits on it until the time is up.
    let body =
        reqwest::Body::wrap_stream(futures::stream::pending::<Result<Vec<u8>, std::io::Error>>());
    let response = server
        .http_client()
        .post(format!("{}/v1/events", server.http))
        .bearer_auth(&server.key)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .expect("an answer, not a hang");
    assert_eq!(response.status(), 504);
    let json: Value = response.json().await.expect("the envelope");
    assert_eq!(json["error"]["code"], "TIMEOUT", "{json}");
    assert!(server.all_events().await.is_empty());
}

#[tokio::test]
async fn every_role_reports_each_of_its_services_serving_and_one_exposition() {
    let http = reqwest::Client::new();
    let ports = ["--http-addr", "127.0.0.1:0", "--grpc-addr", "127.0.0.1:0"];
    let cases: [(&[&str], &[&str]); 2] = [
        (&["ingest"], &["aforo.v1.IngestService"]),
        (
            &["billing", "--bill-every-secs", "0"],
            &[
                "aforo.v1.CatalogService",
                "aforo.v1.CustomerService",
                "aforo.v1.UsageService",
                "aforo.v1.InvoiceService",
            ],
        ),
    ];
    for (args, services) in cases {
        let dir = tempfile::tempdir().unwrap();
        let args: Vec<&str> = args.iter().chain(&ports).copied().collect();
        let (_role, ready) = single_role(&args, dir.path()).await;
        let grpc = ready.field("grpc=");
        let listed = grpcurl_out(&[], &grpc, &["list"]);
        assert!(listed.contains("grpc.health.v1.Health"), "{listed}");
        // "" is the server as a whole.
        for service in services.iter().chain(&[""]) {
            assert!(
                listed.contains(service),
                "{args:?} lists {service}: {listed}"
            );
            let request = json!({ "service": service }).to_string();
            let health = grpcurl_out(&["-d", &request], &grpc, &["grpc.health.v1.Health/Check"]);
            assert!(
                health.contains("\"SERVING\""),
                "{args:?} {service}: {health}"
            );
        }
        let base = ready.field("http=");
        for probe in ["/healthz", "/readyz"] {
            let status = http
                .get(format!("{base}{probe}"))
                .send()
                .await
                .unwrap()
                .status();
            assert_eq!(status, 200, "{args:?} {probe}");
        }
        let metrics = metrics_of(&base).await;
        assert!(
            metrics.contains("\naforo_enrichment_backlog_events 0\n"),
            "{args:?}: {metrics}"
        );
        assert_eq!(metrics.matches("# EOF").count(), 1, "{args:?}: {metrics}");
        assert!(metrics.ends_with("# EOF\n"), "{args:?}: {metrics}");
    }
}

/// Sends and receives a gRPC message's bytes as they are: how a test sends
/// a message that is no protobuf at all.
#[derive(Clone, Copy, Default)]
struct RawCodec;

impl tonic::codec::Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawCodec;
    type Decoder = RawCodec;
    fn encoder(&mut self) -> RawCodec {
        RawCodec
    }
    fn decoder(&mut self) -> RawCodec {
        RawCodec
    }
}

impl tonic::codec::Encoder for RawCodec {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn encode(
        &mut self,
        item: Vec<u8>,
        dst: &mut tonic::codec::EncodeBuf<'_>,
    ) -> Result<(), tonic::Status> {
        use bytes::BufMut;
        dst.put_slice(&item);
        Ok(())
    }
}

impl tonic::codec::Decoder for RawCodec {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn decode(
        &mut self,
        src: &mut tonic::codec::DecodeBuf<'_>,
    ) -> Result<Option<Vec<u8>>, tonic::Status> {
        use bytes::Buf;
        Ok(Some(src.copy_to_bytes(src.remaining()).to_vec()))
    }
}

/// Calls `method` with `message` (any bytes) and the `authorization` value.
async fn raw_call(
    server: &Server,
    method: &'static str,
    message: Vec<u8>,
    authorization: Option<&str>,
) -> tonic::Status {
    let channel = tonic::transport::Channel::from_shared(server.grpc.clone())
        .unwrap()
        .connect()
        .await
        .expect("connect over gRPC");
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.expect("ready");
    let mut request = tonic::Request::new(message);
    if let Some(value) = authorization {
        request
            .metadata_mut()
            .insert("authorization", value.parse().unwrap());
    }
    let path = tonic::codegen::http::uri::PathAndQuery::from_static(method);
    match grpc.unary(request, path, RawCodec).await {
        Ok(answer) => panic!("{method} answered {:?}", answer.into_inner()),
        Err(status) => status,
    }
}

#[tokio::test]
async fn a_grpc_call_without_a_valid_key_is_refused_before_its_message_is_read() {
    let server = Server::start(Backend::Sqlite).await;
    // No protobuf at all: reading it would fail.
    let garbage = vec![0xff; 16];
    for method in [
        "/aforo.v1.IngestService/Ingest",
        "/aforo.v1.CatalogService/Apply",
        "/aforo.v1.CustomerService/UpsertCustomer",
        "/aforo.v1.UsageService/Revenue",
        "/aforo.v1.InvoiceService/ListInvoices",
    ] {
        for authorization in [None, Some("Bearer aforo_not_a_key"), Some("Basic abc")] {
            let status = raw_call(&server, method, garbage.clone(), authorization).await;
            assert_eq!(
                status.code(),
                tonic::Code::Unauthenticated,
                "{method} {authorization:?}: {status:?}"
            );
        }
        // With a valid key the message is read, and found wanting.
        let key = format!("Bearer {}", server.key);
        let status = raw_call(&server, method, garbage.clone(), Some(&key)).await;
        assert_ne!(
            status.code(),
            tonic::Code::Unauthenticated,
            "{method}: {status:?}"
        );
    }
}
