//! The bill run benchmark: `bench/run.sh billrun`.
//!
//! Builds a tenant with N subscriptions on one plan of five meters (two
//! COUNT, three SUM) and M stored events in one closed month, straight
//! into PostgreSQL (COPY; setup is not what is measured), with the
//! RevenueEstimator's running totals in place, then times:
//!
//! - the bill run itself (all ten stages, settling every invoice with its
//!   lineage, reconciliation against the running totals), in process;
//! - beside it, the floor: one `GROUP BY` in PostgreSQL over the same
//!   events (reading and summing them, nothing else).

use std::sync::Arc;
use std::time::{Duration, Instant};

use aforo_billing::billrun::runner::{BillRunConfig, RunRequest, run};
use aforo_billing::catalog::CatalogApi;
use aforo_crds::catalog::{RatePlanSpec, Resource};
use aforo_crds::event::format_time;
use aforo_crds::{GateResults, SourceEvent, Tier, validation_hash};
use aforo_store::{CustomerInput, Store, SubscriptionInput};
use anyhow::Context;
use chrono::{DateTime, TimeZone, Utc};
use clap::Parser;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sqlx::{Connection, PgConnection};
use uuid::Uuid;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(about = "A bill run over N subscriptions × 5 meters and M events")]
struct Args {
    #[arg(long, env = "AFORO_TEST_DATABASE_URL")]
    database_url: String,
    #[arg(long, default_value_t = 10_000)]
    subscriptions: usize,
    #[arg(long, default_value_t = 10_000_000)]
    events: usize,
    /// Keep the database afterwards (its name is printed).
    #[arg(long)]
    keep: bool,
}

const METERS: [(&str, &str, &str); 5] = [
    ("api-calls", "api.call", "COUNT"),
    ("tokens", "llm.tokens", "SUM"),
    ("storage-gb", "storage.gb", "SUM"),
    ("sessions", "agent.session", "COUNT"),
    ("characters", "translation.characters", "SUM"),
];
const PRICES: [&str; 5] = ["0.0004", "0.000002", "0.02", "0.05", "0.00002"];

fn catalog_yaml() -> String {
    let mut out = String::new();
    for (name, event_type, aggregation) in METERS {
        let value = if aggregation == "SUM" {
            "  valueProperty: $.units\n"
        } else {
            ""
        };
        out.push_str(&format!(
            "apiVersion: aforo.io/v1alpha1\nkind: Meter\nmetadata:\n  name: {name}\n  namespace: default\nspec:\n  eventType: {event_type}\n  aggregation: {aggregation}\n{value}---\n"
        ));
    }
    out.push_str("apiVersion: aforo.io/v1alpha1\nkind: Product\nmetadata:\n  name: platform\n  namespace: default\nspec:\n  displayName: Platform\n  meters: [api-calls, tokens, storage-gb, sessions, characters]\n---\n");
    out.push_str("apiVersion: aforo.io/v1alpha1\nkind: RatePlan\nmetadata:\n  name: platform-usage\n  namespace: default\nspec:\n  productRef: platform\n  currency: EUR\n  billingPeriod: MONTHLY\n  billingAnchorDay: 1\n  effectiveFrom: \"2026-01-01T00:00:00Z\"\n  recurringFees:\n    - name: Platform fee\n      amount: \"20.00\"\n  charges:\n");
    for ((name, _, _), price) in METERS.iter().zip(PRICES) {
        out.push_str(&format!(
            "    - meter: {name}\n      perUnit:\n        unitPrice: \"{price}\"\n"
        ));
    }
    out.push_str("  minimumCommitment: \"25.00\"\n");
    out
}

fn copy_text(value: &str, out: &mut String) {
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let name = format!("aforo_billbench_{}", Uuid::now_v7().simple());
    let mut admin = PgConnection::connect(&args.database_url).await?;
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut admin)
        .await?;
    let base = args
        .database_url
        .rsplit_once('/')
        .context("the URL names a database")?
        .0;
    let url = format!("{base}/{name}");
    println!(
        "bill run benchmark: {} subscriptions × 5 meters, {} events (database {name})",
        args.subscriptions, args.events
    );

    let store: Arc<dyn Store> = Arc::new(aforo_store::PgStore::connect(&url).await?);
    let tenant = store.create_tenant("bench").await?;
    let cache = aforo_store::cache::CatalogCache::new(store.clone(), Duration::from_secs(5));
    let catalog = CatalogApi::new(store.clone(), cache);
    let yaml = catalog_yaml();
    let mut resources = Vec::new();
    for (origin, value) in aforo_crds::catalog::yaml_documents(&yaml, "bench.yaml")
        .map_err(|e| anyhow::anyhow!("{e}"))?
    {
        resources.push(Resource::from_value(value, &origin).map_err(|e| anyhow::anyhow!("{e}"))?);
    }
    catalog
        .apply(tenant.id, &resources)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let plan: RatePlanSpec = resources
        .iter()
        .find_map(|r| match r {
            Resource::RatePlan(p) => Some(p.spec.clone()),
            _ => None,
        })
        .context("the plan")?;

    let setup = Instant::now();
    let start: DateTime<Utc> = Utc.with_ymd_and_hms(2026, 9, 1, 0, 0, 0).unwrap();
    let mut subs = Vec::with_capacity(args.subscriptions);
    for i in 0..args.subscriptions {
        let customer = format!("customer-{i:05}");
        store
            .upsert_customer(
                tenant.id,
                &CustomerInput {
                    external_id: customer.clone(),
                    name: customer.clone(),
                    ..Default::default()
                },
            )
            .await?;
        let sub = store
            .create_subscription(
                tenant.id,
                &SubscriptionInput {
                    customer,
                    rate_plan: "platform-usage".into(),
                    starts_at: start,
                    ends_at: None,
                    billing_anchor_day: Some(1),
                },
            )
            .await?;
        subs.push(sub.id);
    }
    println!(
        "  setup: {} customers and subscriptions in {:.1} s",
        subs.len(),
        setup.elapsed().as_secs_f64()
    );

    // Events: October 2026, ids in time order, spread over the customers.
    let copy_started = Instant::now();
    let mut conn = PgConnection::connect(&url).await?;
    sqlx::raw_sql(
        "ALTER TABLE events DROP CONSTRAINT events_tenant_id_dedup_key_key;
         DROP INDEX events_tenant_seq; DROP INDEX events_tenant_customer_time;",
    )
    .execute(&mut conn)
    .await?;
    let october = Utc.with_ymd_and_hms(2026, 10, 1, 0, 0, 0).unwrap();
    let month_us = 31i64 * 24 * 3600 * 1_000_000;
    let received = format_time(&Utc.with_ymd_and_hms(2026, 11, 1, 0, 0, 0).unwrap());
    let gates = GateResults::accepted(false);
    let gates_json = gates.to_json();
    let mut rng = StdRng::seed_from_u64(7);
    let chunk = 200_000;
    let mut written = 0;
    while written < args.events {
        let n = chunk.min(args.events - written);
        let mut text = String::with_capacity(n * 400);
        for k in 0..n {
            let i = written + k;
            let c = rng.random_range(0..args.subscriptions);
            let (_, event_type, aggregation) = METERS[i % 5];
            let time =
                october + chrono::Duration::microseconds(month_us / args.events as i64 * i as i64);
            let ms = time.timestamp_millis() as u64;
            let id = Uuid::new_v7(uuid::Timestamp::from_unix(
                uuid::NoContext,
                ms / 1000,
                ((ms % 1000) * 1_000_000 + (i as u64 % 1_000_000)) as u32,
            ));
            let units: u32 = rng.random_range(1..5000);
            let props = if aggregation == "SUM" {
                format!("{{\"units\":{units}}}")
            } else {
                "{}".to_owned()
            };
            let event = SourceEvent {
                id: format!("e{i}"),
                source: "bench".into(),
                event_type: event_type.into(),
                customer: format!("customer-{c:05}"),
                time,
                properties: serde_json::from_str(&props)?,
                tier: Tier::Sdk,
                tier_detail: String::new(),
            };
            let hash = validation_hash(
                &tenant.hmac_key,
                &tenant.name,
                &id.to_string(),
                &event,
                &props,
                &gates,
            );
            for (j, field) in [
                id.to_string(),
                tenant.id.to_string(),
                format!("bench\u{1f}e{i}"),
                event.id.clone(),
                event.source.clone(),
                event.event_type.clone(),
                event.customer.clone(),
                format_time(&time),
                props,
                "SDK".into(),
                String::new(),
                "ACCEPTED".into(),
                "0".into(),
                gates_json.clone(),
                hash,
                received.clone(),
                "bench".into(),
            ]
            .iter()
            .enumerate()
            {
                if j > 0 {
                    text.push('\t');
                }
                copy_text(field, &mut text);
            }
            text.push('\n');
        }
        let mut copy = conn
            .copy_in_raw("COPY events (id, tenant_id, dedup_key, event_id, source, type, customer, time, properties, tier, tier_detail, status, flags, gates, validation_hash, received_at, node) FROM STDIN")
            .await?;
        copy.send(text.into_bytes()).await?;
        copy.finish().await?;
        written += n;
    }
    sqlx::raw_sql(
        "CREATE INDEX events_tenant_customer_time ON events (tenant_id, customer, time);
         CREATE INDEX events_tenant_seq ON events (tenant_id, seq);
         ALTER TABLE events ADD CONSTRAINT events_tenant_id_dedup_key_key UNIQUE (tenant_id, dedup_key);
         ANALYZE events;",
    )
    .execute(&mut conn)
    .await?;
    // The RevenueEstimator's running totals for the same events (per-unit
    // prices: price = quantity × unit price).
    for ((meter, event_type, aggregation), price) in METERS.iter().zip(PRICES) {
        let terms = aforo_billing::resolve::plan_terms(&plan, meter);
        let quantity = if *aggregation == "SUM" {
            "sum((e.properties->>'units')::numeric)"
        } else {
            "count(*)::numeric"
        };
        let sql = format!(
            "INSERT INTO running_totals (tenant_id, subscription_id, meter, dimension, period_start, plan_terms, quantity, price, updated_at)
             SELECT e.tenant_id, s.id, '{meter}', '', '2026-10-01T00:00:00Z', '{terms}', {quantity}, {quantity} * {price}, now()
             FROM events e JOIN customers c ON c.external_id = e.customer AND c.tenant_id = e.tenant_id
                 JOIN subscriptions s ON s.customer_id = c.id
             WHERE e.type = '{event_type}' GROUP BY e.tenant_id, s.id"
        );
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
            .execute(&mut conn)
            .await?;
    }
    println!(
        "  setup: {} events (COPY, indexes, running totals) in {:.1} s",
        args.events,
        copy_started.elapsed().as_secs_f64()
    );

    // The floor: PostgreSQL reading and summing the same events.
    let floor_started = Instant::now();
    let groups: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT customer, type, count(*), sum((properties->>'units')::numeric)
         FROM events WHERE tenant_id = $1 AND time >= '2026-10-01' AND time < '2026-11-01' GROUP BY 1, 2) g",
    )
    .bind(tenant.id)
    .fetch_one(&mut conn)
    .await?;
    let floor = floor_started.elapsed();

    let started = Instant::now();
    let report = run(
        &store,
        &BillRunConfig::default(),
        &RunRequest {
            tenant: tenant.id,
            // September and October have ended by November 1st: two periods
            // per subscription, whatever the day the benchmark runs.
            as_of: Utc.with_ymd_and_hms(2026, 11, 1, 0, 0, 0).unwrap(),
            cutoff: Utc::now(),
            subscription: None,
        },
        &aforo_crds::clock::SystemClock,
    )
    .await?;
    let took = started.elapsed();
    anyhow::ensure!(
        report.failures.is_empty(),
        "failures: {:?}",
        &report.failures[..report.failures.len().min(3)]
    );
    anyhow::ensure!(
        report.invoiced.len() == 2 * args.subscriptions,
        "invoiced {} of {}",
        report.invoiced.len(),
        2 * args.subscriptions
    );
    let lineage: i64 = sqlx::query_scalar(
        "SELECT coalesce(sum(event_count), 0)::bigint FROM bill_run_event_index",
    )
    .fetch_one(&mut conn)
    .await?;
    anyhow::ensure!(
        lineage as usize == args.events,
        "lineage covers {lineage} of {} events",
        args.events
    );
    println!(
        "  bill run:  {:.1} s for {} invoices ({} subscriptions × September and October), {} events read, {} in the lineage, {} reconciliation differences",
        took.as_secs_f64(),
        report.invoiced.len(),
        args.subscriptions,
        report.events_read,
        lineage,
        report.differences.len()
    );
    let t = &report.timings;
    println!(
        "  where the time went (ms): load {}, waiting for reads {}, resolve {}, stages {}, settle {}, reconcile {}",
        t.load, t.read_wait, t.resolve, t.stages, t.settle, t.reconcile
    );
    println!(
        "  floor:     {:.1} s for one GROUP BY over the same events in PostgreSQL ({groups} groups)",
        floor.as_secs_f64()
    );
    println!(
        "  bill run / floor: {:.1}×;  {:.0} events/s",
        took.as_secs_f64() / floor.as_secs_f64(),
        args.events as f64 / took.as_secs_f64()
    );
    let _ = rng.random::<u8>();
    drop(conn);
    drop(store);
    if !args.keep {
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE {name} WITH (FORCE)"
        )))
        .execute(&mut admin)
        .await?;
    }
    Ok(())
}
