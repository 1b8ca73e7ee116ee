//! Enrichment end to end: events in, exact revenue out, on a real standalone
//! server (and on PostgreSQL with two separate `aforo enrich` processes).
//!
//! Dates: subscriptions start on the first of last month ([`Months`]), and
//! events fall in last month, except where a test is about this period
//! (entitlements, the hourly series): those events fall between the first
//! instant of this month and now, and the test checks the period the server
//! answers for, since a run that starts in a month's last seconds ends in
//! the next one.

mod common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use aforo_billing::pricing::{ChargeRating, RatingFunction};
use aforo_crds::catalog::{Resource, yaml_documents};
use chrono::{DateTime, Utc};
use common::{Backend, Months, Server, api_time, examples, examples_with, rfc3339, set_first};
use rust_decimal::Decimal;
use serde_json::{Value, json};

/// translation-pro's rating function, read from the example catalog.
fn translation_pro(rate_plans_yaml: &str) -> RatingFunction {
    for (origin, value) in yaml_documents(rate_plans_yaml, "rate-plans.yaml").unwrap() {
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

fn example_plans() -> String {
    std::fs::read_to_string(examples().join("rate-plans.yaml")).unwrap()
}

async fn setup(server: &Server, customer: &str, months: &Months) {
    let http = server.http.clone();
    let (ok, _, err) = server
        .cli(&["apply", "-f", examples().to_str().unwrap(), "--http", &http])
        .await;
    assert!(ok, "{err}");
    subscribe(server, customer, months).await;
}

/// A translation-pro subscription from the first of last month.
async fn subscribe(server: &Server, customer: &str, months: &Months) {
    let http = server.http.clone();
    let (ok, _, err) = server
        .cli(&[
            "customers",
            "create",
            "--id",
            customer,
            "--name",
            customer,
            "--currency",
            "EUR",
            "--http",
            &http,
        ])
        .await;
    assert!(ok, "{err}");
    let (ok, _, err) = server
        .cli(&[
            "subscriptions",
            "create",
            "--customer",
            customer,
            "--plan",
            "translation-pro",
            "--start",
            &rfc3339(months.start(1)),
            "--anchor-day",
            "1",
            "--http",
            &http,
        ])
        .await;
    assert!(ok, "{err}");
}

fn translation(prefix: &str, i: usize, customer: &str, time: DateTime<Utc>) -> (Value, Decimal) {
    let chars = (i * 7919 % 9000 + 500) as i64;
    let e = json!({"id": format!("{prefix}-{i}"), "source": "e2e", "type": "translation.characters",
                   "customer": customer, "time": time.to_rfc3339(),
                   "properties": {"characters": chars, "lang": "de"}});
    (e, Decimal::from(chars))
}

/// Translation events for `customer`: deterministic sizes, times on `days`
/// of last month.
fn events(
    months: &Months,
    prefix: &str,
    customer: &str,
    n: usize,
    days: std::ops::Range<u32>,
) -> Vec<(Value, Decimal)> {
    (0..n)
        .map(|i| {
            let day = days.start + (i as u32 % (days.end - days.start));
            translation(prefix, i, customer, months.at(1, day, (i % 24) as u32))
        })
        .collect()
}

/// Translation events of this period so far, within the last `hours`.
fn recent_events(
    months: &Months,
    prefix: &str,
    customer: &str,
    n: usize,
    hours: i64,
) -> Vec<(Value, Decimal)> {
    months
        .recent(n, chrono::Duration::hours(hours))
        .into_iter()
        .enumerate()
        .map(|(i, t)| translation(prefix, i, customer, t))
        .collect()
}

/// The usage the server counts for this period: `expected` when it answers
/// for the period the test's "recent" events fell in, nothing when the
/// month turned while the test ran (the next period has no usage yet).
fn this_period(months: &Months, period_start: &str, expected: Decimal) -> Decimal {
    if period_start == api_time(months.start(0)) {
        expected
    } else {
        assert_eq!(
            period_start,
            api_time(months.start(-1)),
            "the entitlement is for this period or, past midnight, the next"
        );
        Decimal::ZERO
    }
}

async fn send(server: &Server, batch: &[(Value, Decimal)]) {
    for chunk in batch.chunks(500) {
        let body = Value::Array(chunk.iter().map(|(e, _)| e.clone()).collect()).to_string();
        let (status, answer) = server.post_events("application/json", body).await;
        assert_eq!(status, 200, "{answer}");
        assert_eq!(answer["rejected"], 0, "{answer}");
    }
}

/// Waits until the ledger holds `events` events for `customer`.
async fn revenue_when_enriched(server: &Server, customer: &str, events: i64) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, answer) = server
            .get(&format!("/v1/revenue?customer={customer}"))
            .await;
        let rows = answer["rows"].as_array().cloned().unwrap_or_default();
        let seen: i64 = rows.iter().map(|r| r["events"].as_i64().unwrap_or(0)).sum();
        if seen == events {
            return rows;
        }
        assert!(seen < events, "more ledger rows than events: {answer}");
        assert!(
            Instant::now() < deadline,
            "enriched {seen} of {events} within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn decimal(v: &Value) -> Decimal {
    v.as_str().unwrap().parse().unwrap()
}

async fn revenue_telescopes(backend: Backend) {
    let server = Server::start(backend).await;
    let months = Months::now();
    setup(&server, "acme", &months).await;
    let batch = events(&months, "t", "acme", 300, 2..28);
    send(&server, &batch).await;
    let rows = revenue_when_enriched(&server, "acme", 300).await;
    assert_eq!(rows.len(), 1);
    let total: Decimal = batch.iter().map(|(_, q)| *q).sum();
    assert_eq!(decimal(&rows[0]["quantity"]), total);
    let expected = translation_pro(&example_plans()).price(total);
    assert!(expected > Decimal::ZERO);
    assert_eq!(
        decimal(&rows[0]["revenue"]),
        expected,
        "per-event revenues add up to price(total)"
    );
    assert_eq!(rows[0]["currency"], "EUR");
    // Each event carries its own revenue line; together they are the total.
    let events = server.all_events().await;
    let inline: Decimal = events
        .iter()
        .map(|e| decimal(&e["revenue"][0]["revenue"]))
        .sum();
    assert_eq!(inline, expected);
    assert!(
        events
            .iter()
            .all(|e| e["revenue"][0]["rate_plan"] == "translation-pro")
    );
}

#[tokio::test]
async fn per_event_revenue_adds_up_to_the_price_of_the_total_on_sqlite() {
    revenue_telescopes(Backend::Sqlite).await;
}

#[tokio::test]
async fn per_event_revenue_adds_up_to_the_price_of_the_total_on_postgres() {
    revenue_telescopes(Backend::Postgres).await;
}

#[tokio::test]
async fn a_price_change_prices_each_event_by_its_own_time() {
    let server = Server::start(Backend::Sqlite).await;
    let months = Months::now();
    setup(&server, "acme", &months).await;
    // Version 2: translation gets cheaper from the 20th of last month on.
    let dir = tempfile::tempdir().unwrap();
    let cheaper_from = months.at(1, 20, 0);
    let edit = |plans: String| {
        let cheaper = plans.replacen("unitPrice: \"0.00002\"", "unitPrice: \"0.00001\"", 1);
        set_first(&cheaper, "effectiveFrom", &rfc3339(cheaper_from))
    };
    let v2_plans = edit(example_plans());
    let v2 = examples_with(dir.path(), edit);
    let http = server.http.clone();
    let (ok, out, err) = server
        .cli(&["apply", "-f", v2.to_str().unwrap(), "--http", &http])
        .await;
    assert!(ok && out.contains("version 2 created"), "{out}{err}");

    // Later events first: arrival order must not matter.
    let after = events(&months, "after", "acme", 40, 20..28);
    let before = events(&months, "before", "acme", 40, 2..19);
    send(&server, &after).await;
    send(&server, &before).await;
    revenue_when_enriched(&server, "acme", 80).await;

    let sum = |b: &[(Value, Decimal)]| b.iter().map(|(_, q)| *q).sum::<Decimal>();
    let v1 = translation_pro(&example_plans());
    let v2 = translation_pro(&v2_plans);
    let (_, listed) = server.get("/v1/events?limit=1000").await;
    let mut revenue_before = Decimal::ZERO;
    let mut revenue_after = Decimal::ZERO;
    for e in listed["items"].as_array().unwrap() {
        let id = e["stored_event_id"].as_str().unwrap();
        let (_, lines) = server.get(&format!("/v1/events/{id}/revenue")).await;
        let line = &lines["lines"][0];
        let time: DateTime<Utc> = e["time"].as_str().unwrap().parse().unwrap();
        let expected_version = if time >= cheaper_from { 2 } else { 1 };
        assert_eq!(line["catalog_version"], expected_version, "{e}");
        if expected_version == 2 {
            revenue_after += decimal(&line["revenue"]);
        } else {
            revenue_before += decimal(&line["revenue"]);
        }
    }
    // Each price's events telescope on their own running total.
    assert_eq!(revenue_before, v1.price(sum(&before)));
    assert_eq!(revenue_after, v2.price(sum(&after)));
}

#[tokio::test]
async fn unattributed_events_are_enriched_once_their_customer_subscribes() {
    let server = Server::start(Backend::Sqlite).await;
    let months = Months::now();
    setup(&server, "acme", &months).await;
    let early = events(&months, "early", "newco", 5, 3..6);
    send(&server, &early).await;
    // They are taken from the queue and wait, unattributed.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, listed) = server.get("/v1/events?customer=newco").await;
        let marks: Vec<&str> = listed["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["enrichment"].as_str().unwrap())
            .collect();
        if marks.len() == 5 && marks.iter().all(|m| *m == "UNATTRIBUTED") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not marked UNATTRIBUTED within 30 s: {marks:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (_, answer) = server.get("/v1/revenue?customer=newco").await;
    assert!(answer["rows"].as_array().unwrap().is_empty());
    subscribe(&server, "newco", &months).await;
    let rows = revenue_when_enriched(&server, "newco", 5).await;
    let (_, listed) = server.get("/v1/events?customer=newco").await;
    assert!(
        listed["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["enrichment"] == "ENRICHED")
    );
    let total: Decimal = early.iter().map(|(_, q)| *q).sum();
    assert_eq!(
        decimal(&rows[0]["revenue"]),
        translation_pro(&example_plans()).price(total)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_enrichers_on_one_postgres_enrich_every_event_exactly_once() {
    let server = Server::start_with(Backend::Postgres, &["--enrichers", "0"]).await;
    let months = Months::now();
    // Four customers, so the events fall in more than one shard.
    let customers = ["acme", "globex", "initech", "umbrella"];
    setup(&server, customers[0], &months).await;
    for customer in &customers[1..] {
        subscribe(&server, customer, &months).await;
    }
    let mut batches = Vec::new();
    for customer in customers {
        let batch = events(&months, customer, customer, 750, 2..28);
        send(&server, &batch).await;
        batches.push(batch);
    }
    // Live enrichers, working side by side until stopped...
    let spawn = |extra: &[&str]| {
        tokio::process::Command::new(common::BIN)
            .args(["enrich", "--database-url", &server.database_url])
            .args(["--batch", "100"])
            .args(extra)
            .env("AFORO_LOG", "warn")
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn aforo enrich")
    };
    let (mut a, mut b) = (
        spawn(&["--http-addr", "127.0.0.1:0"]),
        spawn(&["--http-addr", "127.0.0.1:0"]),
    );
    let plan = translation_pro(&example_plans());
    for (customer, batch) in customers.iter().zip(&batches) {
        let rows = revenue_when_enriched(&server, customer, 750).await;
        let total: Decimal = batch.iter().map(|(_, q)| *q).sum();
        assert_eq!(decimal(&rows[0]["quantity"]), total, "{customer}");
        assert_eq!(
            decimal(&rows[0]["revenue"]),
            plan.price(total),
            "{customer}"
        );
    }
    a.start_kill().unwrap();
    b.start_kill().unwrap();
    let _ = (a.wait().await, b.wait().await);

    // ...and two that drain a backlog and exit, each saying how many events
    // it took: together, every event exactly once.
    let more: Vec<_> = customers
        .iter()
        .map(|customer| events(&months, &format!("more-{customer}"), customer, 250, 2..28))
        .collect();
    for batch in &more {
        send(&server, batch).await;
    }
    let (a, b) = (spawn(&["--drain"]), spawn(&["--drain"]));
    let mut taken = 0;
    for child in [a, b] {
        let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
            .await
            .expect("a draining enricher exits within 60 s")
            .unwrap();
        let said = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{said}");
        taken += said
            .split("drained; ")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse::<usize>().ok())
            .unwrap_or_else(|| panic!("how many it enriched: {said}"));
    }
    assert_eq!(taken, 1000, "the two drains took every new event once");
    for ((customer, batch), extra) in customers.iter().zip(&batches).zip(&more) {
        let rows = revenue_when_enriched(&server, customer, 1000).await;
        let total: Decimal = batch.iter().chain(extra).map(|(_, q)| *q).sum();
        assert_eq!(decimal(&rows[0]["quantity"]), total, "{customer}");
        assert_eq!(
            decimal(&rows[0]["revenue"]),
            plan.price(total),
            "{customer}"
        );
    }
}

#[tokio::test]
async fn entitlements_hourly_revenue_and_cohort_margin_before_the_period_closes() {
    let server = Server::start(Backend::Sqlite).await;
    let months = Months::now();
    let http = server.http.clone();
    let (ok, _, err) = server
        .cli(&["apply", "-f", examples().to_str().unwrap(), "--http", &http])
        .await;
    assert!(ok, "{err}");
    for (customer, segment) in [("acme", "enterprise"), ("globex", "smb")] {
        let (ok, _, err) = server
            .cli(&[
                "customers",
                "create",
                "--id",
                customer,
                "--name",
                customer,
                "--meta",
                &format!("segment={segment}"),
                "--http",
                &http,
            ])
            .await;
        assert!(ok, "{err}");
        let (ok, _, err) = server
            .cli(&[
                "subscriptions",
                "create",
                "--customer",
                customer,
                "--plan",
                "translation-pro",
                "--start",
                &rfc3339(months.start(1)),
                "--anchor-day",
                "1",
                "--http",
                &http,
            ])
            .await;
        assert!(ok, "{err}");
    }
    // Events of this period, within the last five hours, so they fall in
    // the hourly series too.
    let recent = |prefix: &str, customer: &str, n: usize, chars: i64| -> Vec<(Value, Decimal)> {
        months
            .recent(n, chrono::Duration::hours(5))
            .into_iter()
            .enumerate()
            .map(|(i, t)| {
                (
                    json!({"id": format!("{prefix}-{i}"), "source": "e2e", "type": "translation.characters",
                           "customer": customer, "time": t.to_rfc3339(),
                           "properties": {"characters": chars}}),
                    Decimal::from(chars),
                )
            })
            .collect()
    };
    let acme = recent("h", "acme", 10, 30_000);
    let globex = recent("g", "globex", 4, 1_000);
    send(&server, &acme).await;
    send(&server, &globex).await;
    revenue_when_enriched(&server, "acme", 10).await;
    revenue_when_enriched(&server, "globex", 4).await;

    let (status, e) = server
        .get("/v1/entitlements?customer=acme&meter=translation-characters")
        .await;
    assert_eq!(status, 200, "{e}");
    assert_eq!(decimal(&e["included"]), Decimal::from(100_000));
    let used = this_period(
        &months,
        e["period_start"].as_str().unwrap(),
        Decimal::from(300_000),
    );
    assert_eq!(decimal(&e["used"]), used, "{e}");
    assert_eq!(
        decimal(&e["remaining"]),
        (Decimal::from(100_000) - used).max(Decimal::ZERO)
    );
    let (_, g) = server
        .get("/v1/entitlements?customer=globex&meter=translation-characters")
        .await;
    let used = this_period(
        &months,
        g["period_start"].as_str().unwrap(),
        Decimal::from(4_000),
    );
    assert_eq!(decimal(&g["remaining"]), Decimal::from(100_000) - used);
    let (status, _) = server
        .get("/v1/entitlements?customer=nobody&meter=translation-characters")
        .await;
    assert_eq!(status, 404);

    let (_, hourly) = server.get("/v1/revenue/hourly?customer=acme").await;
    let hours = hourly["hours"].as_array().unwrap();
    let events: i64 = hours.iter().map(|h| h["events"].as_i64().unwrap()).sum();
    assert_eq!(events, 10);
    let revenue: Decimal = hours.iter().map(|h| decimal(&h["revenue"])).sum();
    assert_eq!(
        revenue,
        translation_pro(&example_plans()).price(Decimal::from(300_000))
    );

    let (_, cohorts) = server.get("/v1/margin/cohorts?key=segment").await;
    let rows = cohorts["cohorts"].as_array().unwrap();
    let names: Vec<&str> = rows.iter().map(|r| r["cohort"].as_str().unwrap()).collect();
    assert_eq!(names, ["enterprise", "smb"]);
    assert_eq!(rows[0]["customers"], 1);
    assert_eq!(decimal(&rows[0]["revenue"]), revenue);
    assert_eq!(
        decimal(&rows[1]["revenue"]),
        Decimal::ZERO,
        "globex is within its included units"
    );
}

#[tokio::test]
async fn the_usage_queries_speak_grpc_too() {
    use aforo_proto::v1 as pb;
    let server = Server::start(Backend::Sqlite).await;
    let months = Months::now();
    setup(&server, "acme", &months).await;
    let batch = recent_events(&months, "u", "acme", 20, 24);
    send(&server, &batch).await;
    let rest = revenue_when_enriched(&server, "acme", 20).await;

    let channel = tonic::transport::Channel::from_shared(server.grpc.clone())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = pb::usage_service_client::UsageServiceClient::new(channel);
    let revenue = client
        .revenue(common::authed(
            &server.key,
            pb::RevenueRequest {
                customer: "acme".into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(revenue.rows.len(), 1);
    assert_eq!(
        revenue.rows[0].revenue,
        rest[0]["revenue"].as_str().unwrap()
    );
    assert_eq!(revenue.rows[0].events, 20);

    let entitlement = client
        .entitlement(common::authed(
            &server.key,
            pb::EntitlementRequest {
                customer: "acme".into(),
                meter: "translation-characters".into(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(entitlement.included, "100000");
    let period_start = entitlement
        .period_start
        .map(|t| DateTime::from_timestamp(t.seconds, t.nanos as u32).unwrap())
        .expect("the entitlement's period");
    let used = this_period(
        &months,
        &api_time(period_start),
        batch.iter().map(|(_, q)| *q).sum(),
    );
    assert_eq!(entitlement.used, used.normalize().to_string());

    let (_, listed) = server.get("/v1/events?limit=1").await;
    let id = listed["items"][0]["stored_event_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let lines = client
        .event_revenue(common::authed(
            &server.key,
            pb::EventRevenueRequest {
                stored_event_id: id,
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(lines.lines[0].meter, "translation-characters");
    assert_eq!(lines.lines[0].catalog_version, 1);
    let missing = client
        .entitlement(common::authed(
            &server.key,
            pb::EntitlementRequest {
                customer: "nobody".into(),
                meter: "x".into(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(missing.code(), tonic::Code::NotFound);
}

#[tokio::test]
async fn the_enrich_role_answers_probes_and_metrics() {
    use tokio::io::{AsyncBufReadExt, BufReader};
    let server = Server::start_with(Backend::Postgres, &["--enrichers", "0"]).await;
    let mut child = tokio::process::Command::new(common::BIN)
        .args([
            "enrich",
            "--database-url",
            &server.database_url,
            "--http-addr",
            "127.0.0.1:0",
        ])
        .env("AFORO_LOG", "warn")
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn aforo enrich");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let ready = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
        .await
        .expect("ready within 30 s")
        .unwrap()
        .expect("a ready line");
    let base = ready
        .split_once("http=")
        .expect("the HTTP address")
        .1
        .to_owned();
    let http = reqwest::Client::new();
    for path in ["/healthz", "/readyz"] {
        let response = http.get(format!("{base}{path}")).send().await.unwrap();
        assert_eq!(response.status(), 200, "{path}");
    }
    let metrics = common::metrics_of(&base).await;
    assert!(
        metrics.contains(r#"aforo_enrich_context_cache_lookups_total{result="fallback"}"#),
        "{metrics}"
    );
    assert!(
        metrics.contains("\naforo_enrichment_backlog_events 0\n"),
        "nothing stored, nothing waiting: {metrics}"
    );
    assert!(metrics.ends_with("# EOF\n"));
    child.start_kill().unwrap();
    let _ = child.wait().await;
}
