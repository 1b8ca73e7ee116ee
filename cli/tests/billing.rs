//! The bill run end to end, on a real standalone server (SQLite and
//! PostgreSQL): events in, invoices out; a subscription that fails a stage
//! fails alone and is retried; running twice invoices nothing twice; a late
//! event becomes an adjustment on the next invoice while the closed one
//! stays byte for byte; replay reproduces the stored invoice; the audit
//! export verifies until a stored event is altered; the invoice webhook is
//! signed and the exports are written.
//!
//! Dates: two closed months, counted back from the month the test starts in
//! ([`Months`]): the one before last ("A", `start(2)`) and last month ("B",
//! `start(1)`). Invoices are looked up by period, never by position, since a
//! run that starts in a month's last seconds also finds this month closed by
//! its end.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aforo_billing::pricing::rounding::round_line;
use aforo_billing::pricing::{ChargeRating, RatingFunction};
use aforo_crds::catalog::{Resource, yaml_documents};
use base64::Engine;
use chrono::{DateTime, Utc};
use common::{Backend, Months, Server, api_time, examples, examples_with, rfc3339, set_first};
use hmac::Mac;
use rust_decimal::Decimal;
use serde_json::{Value, json};
use sqlx::Connection;

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

fn translation_pro() -> RatingFunction {
    let plans = std::fs::read_to_string(examples().join("rate-plans.yaml")).unwrap();
    for (origin, value) in yaml_documents(&plans, "rate-plans.yaml").unwrap() {
        if let Resource::RatePlan(plan) = Resource::from_value(value, &origin).unwrap()
            && plan.metadata.name.as_deref() == Some("translation-pro")
        {
            return ChargeRating::from_charge(&plan.spec.charges[0])
                .unwrap()
                .function;
        }
    }
    panic!("no translation-pro in the examples");
}

fn dec(v: &Value) -> Decimal {
    v.as_str()
        .unwrap_or_else(|| panic!("{v} is not a decimal string"))
        .parse()
        .unwrap()
}

/// Deliveries the invoice webhook receiver got: (headers, body).
type Received = Arc<Mutex<Vec<(axum::http::HeaderMap, String)>>>;

async fn webhook_receiver() -> (String, Received) {
    let received: Received = Arc::default();
    let sink = received.clone();
    let app = axum::Router::new().route(
        "/invoices",
        axum::routing::post(move |headers: axum::http::HeaderMap, body: String| {
            let sink = sink.clone();
            async move {
                sink.lock().unwrap().push((headers, body));
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}/invoices"), received)
}

/// Checks a Standard Webhooks signature independently of aforo's signer.
fn signature_ok(headers: &axum::http::HeaderMap, body: &str) -> bool {
    let h = |n: &str| headers.get(n).and_then(|v| v.to_str().ok()).unwrap_or("");
    let key = base64::engine::general_purpose::STANDARD
        .decode(SECRET.trim_start_matches("whsec_"))
        .unwrap();
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&key).unwrap();
    mac.update(format!("{}.{}.{body}", h("webhook-id"), h("webhook-timestamp")).as_bytes());
    let expected = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    h("webhook-signature")
        .split(' ')
        .any(|s| s == format!("v1,{expected}"))
}

async fn ok(server: &Server, args: &[&str]) -> String {
    let mut all = args.to_vec();
    all.extend(["--http", &server.http]);
    let (success, out, err) = server.cli(&all).await;
    assert!(success, "aforo {args:?} failed:\n{out}\n{err}");
    out
}

/// Translation events in the month `back` months ago: deterministic sizes.
fn events(
    months: &Months,
    prefix: &str,
    customer: &str,
    n: usize,
    back: i32,
) -> Vec<(Value, Decimal)> {
    (0..n)
        .map(|i| {
            let chars = (i * 7919 % 9000 + 500) as i64;
            let e = json!({"id": format!("{prefix}-{i}"), "source": "e2e", "type": "translation.characters",
                           "customer": customer,
                           "time": months.at(back, 1 + (i as u32 % 28), (i % 24) as u32).to_rfc3339(),
                           "properties": {"characters": chars, "lang": "de"}});
            (e, Decimal::from(chars))
        })
        .collect()
}

async fn send(server: &Server, batch: &[(Value, Decimal)]) {
    let body = Value::Array(batch.iter().map(|(e, _)| e.clone()).collect()).to_string();
    let (status, answer) = server.post_events("application/json", body).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["rejected"], 0, "{answer}");
}

/// Waits until the ledger holds `events` events for `customer`.
async fn enriched(server: &Server, customer: &str, events: i64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, answer) = server
            .get(&format!("/v1/revenue?customer={customer}"))
            .await;
        let seen: i64 = answer["rows"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|r| r["events"].as_i64().unwrap_or(0))
            .sum();
        if seen == events {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "enriched {seen} of {events} within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The revenue the RevenueEstimator recorded for a customer's events in
/// the month `back` months ago.
async fn estimated(server: &Server, customer: &str, months: &Months, back: i32) -> Decimal {
    let (_, answer) = server
        .get(&format!(
            "/v1/revenue?customer={customer}&from={}&to={}",
            rfc3339(months.start(back)),
            rfc3339(months.start(back - 1))
        ))
        .await;
    answer["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| dec(&r["revenue"]))
        .sum()
}

async fn invoice(server: &Server, number: &str) -> Value {
    let (status, answer) = server.get(&format!("/v1/invoices/{number}")).await;
    assert_eq!(status, 200, "{answer}");
    answer
}

fn lines_of<'a>(invoice: &'a Value, kind: &str) -> Vec<&'a Value> {
    invoice["lines"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| l["kind"] == kind)
        .collect()
}

async fn alter_event(server: &Server, stored_id: &str) {
    let sql = format!(
        "UPDATE events SET properties = '{{\"characters\":1,\"lang\":\"de\"}}' WHERE id = '{stored_id}'"
    );
    if server.database_url.starts_with("postgres") {
        let mut conn = sqlx::PgConnection::connect(&server.database_url)
            .await
            .unwrap();
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
            .execute(&mut conn)
            .await
            .unwrap();
    } else {
        let mut conn = sqlx::SqliteConnection::connect(&server.database_url)
            .await
            .unwrap();
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
            .execute(&mut conn)
            .await
            .unwrap();
    }
}

/// Applies `catalog`, creates the customer acme and subscribes it from
/// `start` with `subscription` (`--plan …` and any further flags).
async fn catalog_and_acme(
    server: &Server,
    catalog: &std::path::Path,
    subscription: &[&str],
    start: DateTime<Utc>,
) {
    ok(server, &["apply", "-f", catalog.to_str().unwrap()]).await;
    ok(
        server,
        &["customers", "create", "--id", "acme", "--name", "acme"],
    )
    .await;
    let start = rfc3339(start);
    let mut args = vec![
        "subscriptions",
        "create",
        "--customer",
        "acme",
        "--start",
        &start,
    ];
    args.extend_from_slice(subscription);
    ok(server, &args).await;
}

async fn bill_run_end_to_end(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let tax = dir.path().join("tax.yaml");
    std::fs::write(
        &tax,
        "rates:\n  - class: digital-services\n    region: DE\n    percent: \"19\"\n",
    )
    .unwrap();
    let exports = dir.path().join("exports");
    let months = Months::now();
    let (a, b) = (months.start(2), months.start(1));
    let mid_b = rfc3339(months.at(1, 15, 0));
    let (hook, received) = webhook_receiver().await;
    let server = Server::start_with(
        backend,
        &[
            "--bill-every-secs",
            "0",
            "--max-age",
            "400d",
            "--tax-config",
            tax.to_str().unwrap(),
            "--invoice-webhook-url",
            &hook,
            "--invoice-webhook-secret",
            SECRET,
            "--invoice-export-dir",
            exports.to_str().unwrap(),
        ],
    )
    .await;
    ok(&server, &["apply", "-f", examples().to_str().unwrap()]).await;
    for (customer, region) in [("acme", Some("DE")), ("globex", None)] {
        let mut args = vec!["customers", "create", "--id", customer, "--name", customer];
        if let Some(r) = region {
            args.extend(["--tax-region", r]);
        }
        ok(&server, &args).await;
        ok(
            &server,
            &[
                "subscriptions",
                "create",
                "--customer",
                customer,
                "--plan",
                "translation-pro",
                "--start",
                &rfc3339(a),
                "--anchor-day",
                "1",
            ],
        )
        .await;
    }
    let september = events(&months, "sep", "acme", 50, 2);
    let october = events(&months, "oct", "acme", 40, 1);
    send(&server, &september).await;
    send(&server, &october).await;
    send(&server, &events(&months, "g", "globex", 10, 2)).await;
    enriched(&server, "acme", 90).await;
    enriched(&server, "globex", 10).await;

    // Bill A ("September") only. globex has no tax region and the configuration
    // no fallback: it fails at TAX, alone.
    let (success, out, err) = server
        .cli(&[
            "bill",
            "run",
            "--as-of",
            &mid_b,
            "--cutoff",
            "now",
            "--http",
            &server.http,
        ])
        .await;
    assert!(
        !success,
        "a failed subscription fails the command:\n{out}\n{err}"
    );
    assert!(out.contains("INV-000001\tacme"), "{out}");
    assert!(
        err.contains("at TAX: no tax rate for class \"digital-services\""),
        "{err}"
    );
    assert!(err.contains("1 invoiced"), "{err}");
    // Every event was enriched before the cut-off: the estimator agrees.
    assert!(err.contains("0 reconciliation differences"), "{err}");
    // The run is counted: one invoice, one failure at TAX, and the time of
    // each of the ten stages.
    let metrics = server.metrics().await;
    for line in [
        "aforo_billing_bill_runs_total{outcome=\"ok\"} 1",
        "aforo_billing_bill_run_invoices_total 1",
        "aforo_billing_bill_run_subscriptions_failed_total{stage=\"TAX\"} 1",
        "aforo_billing_bill_run_reconciliation_differences_total 0",
        "aforo_billing_bill_run_phase_seconds_count{phase=\"settle\"} 1",
        "aforo_billing_bill_run_duration_seconds_count 1",
    ] {
        assert!(
            metrics.contains(&format!("\n{line}\n")),
            "{line}: {metrics}"
        );
    }
    for stage in [
        "QUOTA_CHECK",
        "ROLLOVER",
        "AGGREGATE",
        "ALLOWANCE",
        "RATE",
        "COMMIT",
        "DISCOUNT",
        "TAX",
        "ROUTE",
        "SETTLE",
    ] {
        let line = format!("\naforo_billing_bill_run_stage_seconds_count{{stage=\"{stage}\"}} 1\n");
        assert!(metrics.contains(&line), "{stage}: {metrics}");
    }
    let events_read = metrics
        .lines()
        .find_map(|l| l.strip_prefix("aforo_billing_bill_run_events_read_total "))
        .expect("events read");
    assert_ne!(events_read, "0", "{metrics}");

    let sep = invoice(&server, "INV-000001").await;
    assert_eq!(sep["customer"], "acme");
    assert_eq!(sep["period_start"], api_time(a));
    assert_eq!(sep["currency"], "EUR");
    let usage = lines_of(&sep, "USAGE");
    assert_eq!(usage.len(), 1);
    let total: Decimal = september.iter().map(|(_, q)| *q).sum();
    assert_eq!(dec(&usage[0]["quantity"]), total);
    assert_eq!(usage[0]["event_count"], 50);
    let unrounded = dec(&usage[0]["amount_unrounded"]);
    assert_eq!(unrounded, translation_pro().price(total));
    // The per-event revenue estimates add up to the line before rounding.
    assert_eq!(estimated(&server, "acme", &months, 2).await, unrounded);
    assert_eq!(
        dec(&usage[0]["amount"]),
        round_line(unrounded, "EUR").unwrap()
    );
    let fee = lines_of(&sep, "RECURRING");
    assert_eq!(dec(&fee[0]["amount"]), Decimal::new(4900, 2));
    let taxed = dec(&usage[0]["amount"]) + dec(&fee[0]["amount"]);
    let tax_line = lines_of(&sep, "TAX");
    assert_eq!(
        dec(&tax_line[0]["amount"]),
        round_line(taxed * Decimal::new(19, 2), "EUR").unwrap()
    );
    assert_eq!(dec(&sep["total"]), taxed + dec(&tax_line[0]["amount"]));

    // Routed: a signed invoice.finalized webhook and both exports.
    let deliveries = received.lock().unwrap().clone();
    assert_eq!(deliveries.len(), 1, "one webhook per invoice");
    let (headers, body) = &deliveries[0];
    assert!(
        signature_ok(headers, body),
        "the webhook signature verifies"
    );
    let payload: Value = serde_json::from_str(body).unwrap();
    assert_eq!(payload["type"], "invoice.finalized");
    assert_eq!(payload["data"]["number"], "INV-000001");
    assert!(exports.join("INV-000001.json").exists());
    let csv = std::fs::read_to_string(exports.join("INV-000001.csv")).unwrap();
    assert!(
        csv.lines().count() == 1 + sep["lines"].as_array().unwrap().len(),
        "{csv}"
    );

    // Running the same period again creates nothing.
    let (_, _, err) = server
        .cli(&[
            "bill",
            "run",
            "--as-of",
            &mid_b,
            "--cutoff",
            "now",
            "--http",
            &server.http,
        ])
        .await;
    assert!(err.contains("0 invoiced"), "{err}");
    let (_, list) = server.get("/v1/invoices").await;
    assert_eq!(list["items"].as_array().unwrap().len(), 1, "{list}");

    // Fix globex and retry just its subscription.
    ok(
        &server,
        &[
            "customers",
            "create",
            "--id",
            "globex",
            "--name",
            "globex",
            "--tax-region",
            "DE",
        ],
    )
    .await;
    let (_, subs) = server.get("/v1/subscriptions?customer=globex").await;
    let globex_sub = subs["items"][0]["id"].as_str().unwrap().to_owned();
    let out = ok(
        &server,
        &[
            "bill",
            "run",
            "--as-of",
            &mid_b,
            "--cutoff",
            "now",
            "--subscription",
            &globex_sub,
        ],
    )
    .await;
    assert!(out.contains("INV-000002\tglobex"), "{out}");

    // Replay reproduces both September invoices exactly, and their usage
    // lines equal the sum of their events' revenue estimates.
    let out = ok(&server, &["bill", "replay", "--period", &rfc3339(a)]).await;
    assert!(out.contains("INV-000001\treproduced exactly"), "{out}");
    assert!(out.contains("INV-000002\treproduced exactly"), "{out}");
    let replay = server
        .http_client()
        .post(format!("{}/v1/bill-runs/replay", server.http))
        .bearer_auth(&server.key)
        .json(&json!({"period_start": rfc3339(a)}))
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap();
    for inv in replay["invoices"].as_array().unwrap() {
        for check in inv["estimates"].as_array().unwrap() {
            assert_eq!(check["estimates"], check["amount_unrounded"], "{inv}");
        }
    }

    // Any billed event's proof leads from its leaf to its line's root.
    let (_, events) = server
        .get("/v1/invoices/INV-000001/lines/1/events?after=3&limit=2")
        .await;
    assert_eq!(events["total"], 50, "{events}");
    assert_eq!(events["next_cursor"], "5", "{events}");
    let picked = events["items"][0]["stored_id"].as_str().unwrap().to_owned();
    let out = ok(&server, &["audit", "proof", "--event", &picked]).await;
    let proof: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(proof["number"], "INV-000001");
    assert_eq!(proof["line"], 1);
    assert_eq!(proof["proof"]["index"], 3);
    assert_eq!(proof["merkle_root"], usage[0]["merkle_root"]);
    let leaf = aforo_billing::billrun::merkle::leaf(
        picked.parse().unwrap(),
        proof["validation_hash"].as_str().unwrap(),
    );
    let path: aforo_billing::billrun::merkle::Proof =
        serde_json::from_value(proof["proof"].clone()).unwrap();
    assert_eq!(
        aforo_billing::billrun::merkle::root_from_proof(leaf, &path).as_deref(),
        usage[0]["merkle_root"].as_str()
    );

    // A late September event: an adjustment on October's invoice; the
    // closed September invoice does not change by a byte.
    let before = invoice(&server, "INV-000001").await["document"].clone();
    let late = vec![(
        json!({"id": "sep-late", "source": "e2e", "type": "translation.characters",
               "customer": "acme", "time": months.at(2, 20, 12).to_rfc3339(),
               "properties": {"characters": 20000, "lang": "de"}}),
        Decimal::from(20000),
    )];
    send(&server, &late).await;
    enriched(&server, "acme", 91).await;
    let out = ok(&server, &["bill", "run", "--cutoff", "now"]).await;
    assert!(
        out.contains(&format!("\tacme\t{}", b.format("%Y-%m-%d"))),
        "{out}"
    );
    let (_, list) = server.get("/v1/invoices?customer=acme").await;
    let october_number = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["period_start"] == api_time(b))
        .unwrap_or_else(|| panic!("an invoice for {b}: {list}"))["number"]
        .as_str()
        .unwrap()
        .to_owned();
    let oct = invoice(&server, &october_number).await;
    assert_eq!(oct["period_start"], api_time(b));
    let adjustments = lines_of(&oct, "ADJUSTMENT");
    assert_eq!(adjustments.len(), 1, "{oct}");
    let adj = adjustments[0];
    assert_eq!(adj["period"]["start"], rfc3339(a));
    assert_eq!(adj["event_count"], 1);
    assert_eq!(dec(&adj["quantity"]), Decimal::from(20000));
    let f = translation_pro();
    let expected = f.price(total + Decimal::from(20000)) - f.price(total);
    assert_eq!(dec(&adj["amount_unrounded"]), expected);
    assert_eq!(invoice(&server, "INV-000001").await["document"], before);
    let oct_usage = lines_of(&oct, "USAGE");
    let oct_total: Decimal = october.iter().map(|(_, q)| *q).sum();
    assert_eq!(dec(&oct_usage[0]["quantity"]), oct_total);

    // The audit export of October's invoice verifies.
    let audit = dir.path().join("audit.json");
    ok(
        &server,
        &[
            "audit",
            "export",
            "--invoice",
            &october_number,
            "-o",
            audit.to_str().unwrap(),
        ],
    )
    .await;
    let (success, out, err) = server
        .cli(&[
            "audit",
            "verify",
            audit.to_str().unwrap(),
            "--database-url",
            &server.database_url,
        ])
        .await;
    assert!(success, "{out}\n{err}");
    assert!(out.contains("every hash, proof and root matches"), "{out}");
    let csv_audit = ok(
        &server,
        &[
            "audit",
            "export",
            "--invoice",
            &october_number,
            "--format",
            "csv",
        ],
    )
    .await;
    assert_eq!(
        csv_audit.lines().count(),
        1 + 40 + 1,
        "a row per line event"
    );

    // Alter one stored event behind October's usage line: verify names it,
    // and a replay of October no longer matches.
    let export: Value = serde_json::from_str(&std::fs::read_to_string(&audit).unwrap()).unwrap();
    let usage_line = export["lines"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["kind"] == "USAGE")
        .unwrap();
    let victim = usage_line["events"][7]["stored_id"]
        .as_str()
        .unwrap()
        .to_owned();
    alter_event(&server, &victim).await;
    ok(
        &server,
        &[
            "audit",
            "export",
            "--invoice",
            &october_number,
            "-o",
            audit.to_str().unwrap(),
        ],
    )
    .await;
    let (success, out, _) = server
        .cli(&[
            "audit",
            "verify",
            audit.to_str().unwrap(),
            "--database-url",
            &server.database_url,
        ])
        .await;
    assert!(!success, "{out}");
    let mismatches: Vec<&str> = out.lines().filter(|l| l.starts_with("MISMATCH")).collect();
    assert_eq!(mismatches.len(), 1, "{out}");
    assert!(mismatches[0].contains(&victim), "{out}");
    assert!(
        mismatches[0].contains("does not match its validation hash"),
        "{out}"
    );
    let (success, out, _) = server
        .cli(&[
            "bill",
            "replay",
            "--period",
            &rfc3339(b),
            "--http",
            &server.http,
        ])
        .await;
    assert!(!success, "{out}");
    assert!(out.contains(&format!("{october_number}\tDIFFERS")), "{out}");
}

#[tokio::test]
async fn the_bill_run_invoices_adjusts_replays_and_audits_on_sqlite() {
    bill_run_end_to_end(Backend::Sqlite).await;
}

#[tokio::test]
async fn the_bill_run_invoices_adjusts_replays_and_audits_on_postgres() {
    bill_run_end_to_end(Backend::Postgres).await;
}

#[tokio::test]
async fn invoices_are_served_over_grpc() {
    use aforo_proto::v1 as pb;
    use aforo_proto::v1::invoice_service_client::InvoiceServiceClient;
    let server = Server::start_with(
        Backend::Sqlite,
        &["--bill-every-secs", "0", "--max-age", "400d"],
    )
    .await;
    let months = Months::now();
    // The example's launch discount, valid around the billed month whatever
    // the day the test runs.
    let dir = tempfile::tempdir().unwrap();
    let catalog = examples_with(dir.path(), |plans| {
        let from = set_first(&plans, "validFrom", &rfc3339(months.start(3)));
        set_first(&from, "validUntil", &rfc3339(months.start(-1)))
    });
    catalog_and_acme(
        &server,
        &catalog,
        &["--plan", "ai-agents-usage", "--anchor-day", "1"],
        months.start(2),
    )
    .await;
    let mut client = InvoiceServiceClient::connect(server.grpc.clone())
        .await
        .unwrap();
    let ts = |t: DateTime<Utc>| prost_types::Timestamp {
        seconds: t.timestamp(),
        nanos: t.timestamp_subsec_nanos() as i32,
    };
    let refused = client
        .run_bill(common::authed(
            &server.key,
            pb::RunBillRequest {
                as_of: Some(ts(Utc::now() + chrono::Duration::days(1))),
                ..Default::default()
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);
    let run = client
        .run_bill(common::authed(
            &server.key,
            pb::RunBillRequest {
                as_of: Some(ts(months.at(1, 2, 0))),
                cutoff: Some(ts(Utc::now())),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(run.invoiced.len(), 1, "{run:?}");
    assert!(run.failures.is_empty(), "{run:?}");
    // No usage: the minimum commitment (100 USD) less the plan's 10 %
    // discount. No tax configuration was given, so the invoice is untaxed
    // and says so.
    let got = client
        .get_invoice(common::authed(
            &server.key,
            pb::GetInvoiceRequest {
                invoice: run.invoiced[0].number.clone(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.currency, "USD");
    let kinds: Vec<&str> = got.lines.iter().map(|l| l.kind.as_str()).collect();
    assert_eq!(kinds, vec!["COMMITMENT", "DISCOUNT"]);
    assert_eq!(got.total, "90.00");
    let (_, shown) = server.get(&format!("/v1/invoices/{}", got.number)).await;
    assert_eq!(shown["flags"], json!(["UNTAXED"]), "{shown}");
    let missing = client
        .get_invoice(common::authed(
            &server.key,
            pb::GetInvoiceRequest {
                invoice: "INV-999999".into(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(missing.code(), tonic::Code::NotFound);
}

/// Day `day` of the month starting at `first`, or the month's last day
/// when it is shorter: where a period anchored on `day` starts.
fn anchored(first: DateTime<Utc>, day: i64) -> DateTime<Utc> {
    let next = first.checked_add_months(chrono::Months::new(1)).unwrap();
    let length = (next - first).num_days();
    first + chrono::Duration::days(day.min(length) - 1)
}

#[tokio::test]
async fn a_plan_anchored_on_the_31st_starts_short_months_periods_on_their_last_day() {
    let server = Server::start_with(Backend::Sqlite, &["--bill-every-secs", "0"]).await;
    let months = Months::now();
    // The plan declares the anchor; the subscription sets none of its own.
    let dir = tempfile::tempdir().unwrap();
    let catalog = examples_with(dir.path(), |plans| {
        plans.replacen(
            "billingPeriod: MONTHLY\n",
            "billingPeriod: MONTHLY\n  billingAnchorDay: 31\n",
            1,
        )
    });
    catalog_and_acme(
        &server,
        &catalog,
        &["--plan", "translation-pro"],
        months.start(4),
    )
    .await;
    // Every period that ended by the first of this month: the one the
    // subscription started in (from the 31st, or last day, of the month
    // before) up to the one ending on last month's.
    let out = ok(
        &server,
        &[
            "bill",
            "run",
            "--as-of",
            &rfc3339(months.start(0)),
            "--cutoff",
            "now",
        ],
    )
    .await;
    let (_, list) = server.get("/v1/invoices?customer=acme").await;
    let mut periods: Vec<(String, String)> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (
                i["period_start"].as_str().unwrap().to_owned(),
                i["period_end"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    periods.sort();
    let expected: Vec<(String, String)> = (1..=4)
        .rev()
        .map(|back| {
            (
                api_time(anchored(months.start(back + 1), 31)),
                api_time(anchored(months.start(back), 31)),
            )
        })
        .collect();
    assert_eq!(periods, expected, "{out}");
}
