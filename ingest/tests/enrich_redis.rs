//! The enrichment context cache on a real Redis: Redis stopped in the middle
//! of a run, enrichment goes on from the store without loss or double
//! counting; Redis back, the cache serves hits again.
//!
//! Dates are fixed: events are committed to the store directly (no gates),
//! and enrichment prices them by their own time, never by the clock's.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aforo_billing::catalog::CatalogApi;
use aforo_billing::customers::BusinessData;
use aforo_billing::pricing::RatingFunction;
use aforo_crds::catalog::{Resource, yaml_documents};
use aforo_crds::{EventFlags, GateResults, SourceEvent, Tier, validation_hash};
use aforo_ingest::enrich::Enricher;
use aforo_store::cache::CatalogCache;
use aforo_store::context::ContextCache;
use aforo_store::{
    CommitBatch, CustomerInput, NewEvent, PgStore, RevenueQuery, Store, SubscriptionInput, Tenant,
};
use chrono::{TimeZone, Utc};
use rust_decimal::Decimal;
use serde_json::json;
use sqlx::Connection;
use uuid::Uuid;

struct Redis {
    child: Child,
    port: u16,
}

impl Redis {
    fn start(port: u16) -> Redis {
        let child = Command::new("redis-server")
            .args([
                "--bind",
                "127.0.0.1",
                "--port",
                &port.to_string(),
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server (installed by scripts/services.sh)");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not listen");
            std::thread::sleep(Duration::from_millis(20));
        }
        Redis { child, port }
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn postgres() -> Arc<dyn Store> {
    let admin = std::env::var("AFORO_TEST_DATABASE_URL")
        .expect("AFORO_TEST_DATABASE_URL is not set: run scripts/test.sh");
    let name = format!("aforo_redis_{}", Uuid::now_v7().simple());
    let mut conn = sqlx::PgConnection::connect(&admin).await.unwrap();
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut conn)
        .await
        .unwrap();
    let base = admin.rsplit_once('/').unwrap().0;
    Arc::new(PgStore::connect(&format!("{base}/{name}")).await.unwrap())
}

fn examples() -> Vec<Resource> {
    let dir = format!(
        "{}/../examples",
        std::env::var("CARGO_MANIFEST_DIR")
            .expect("CARGO_MANIFEST_DIR: run by cargo test, or by scripts/hard-days.sh")
    );
    let mut out = Vec::new();
    for file in ["meters.yaml", "products.yaml", "rate-plans.yaml"] {
        let text = std::fs::read_to_string(format!("{dir}/{file}")).unwrap();
        for (origin, value) in yaml_documents(&text, file).unwrap() {
            out.push(Resource::from_value(value, &origin).unwrap());
        }
    }
    out
}

fn translation_pro() -> RatingFunction {
    examples()
        .into_iter()
        .find_map(|r| match r {
            Resource::RatePlan(p) if p.metadata.name.as_deref() == Some("translation-pro") => Some(
                aforo_billing::pricing::ChargeRating::from_charge(&p.spec.charges[0])
                    .unwrap()
                    .function,
            ),
            _ => None,
        })
        .unwrap()
}

/// Commits `n` translation events for `customer` straight into the queue.
async fn queue(
    store: &dyn Store,
    tenant: &Tenant,
    prefix: &str,
    customer: &str,
    n: usize,
) -> Decimal {
    let mut batch = CommitBatch::default();
    let mut total = Decimal::ZERO;
    for i in 0..n {
        let chars = (i * 6131 % 7000 + 100) as i64;
        total += Decimal::from(chars);
        let event = SourceEvent {
            id: format!("{prefix}-{i}"),
            source: "redis-test".into(),
            event_type: "translation.characters".into(),
            customer: customer.into(),
            time: Utc.with_ymd_and_hms(2026, 11, 10, 12, 0, 0).unwrap(),
            properties: json!({"characters": chars}).as_object().unwrap().clone(),
            tier: Tier::Sdk,
            tier_detail: String::new(),
        };
        let stored_id = Uuid::now_v7();
        let gates = GateResults::accepted(false);
        let properties_json = event.canonical_properties();
        batch.events.push(NewEvent {
            tenant: tenant.id,
            stored_id,
            dedup_key: format!("{}\n{}", event.source, event.id),
            validation_hash: validation_hash(
                &tenant.hmac_key,
                &tenant.name,
                &stored_id.to_string(),
                &event,
                &properties_json,
                &gates,
            ),
            properties_json,
            event,
            flags: EventFlags::default(),
            gates,
            received_at: Utc::now(),
            node: "test".into(),
            trace_parent: None,
        });
    }
    store.commit(&batch).await.unwrap();
    total
}

async fn drain(enricher: &Enricher) {
    while enricher.run_once().await.unwrap() > 0 {}
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enrichment_goes_on_without_redis_and_the_cache_recovers() {
    let port = free_port();
    let mut redis = Redis::start(port);
    let store = postgres().await;
    let tenant = store.create_tenant("acme").await.unwrap();
    let context = ContextCache::redis(
        &format!("redis://127.0.0.1:{}", redis.port),
        Duration::from_secs(600),
        store.changes(),
    )
    .unwrap();
    let catalog = CatalogApi::new(
        store.clone(),
        CatalogCache::new(store.clone(), Duration::from_secs(5)),
    );
    catalog.apply(tenant.id, &examples()).await.unwrap();
    let business = BusinessData::new(store.clone(), catalog);
    for customer in ["acme", "globex"] {
        business
            .upsert_customer(
                tenant.id,
                &CustomerInput {
                    external_id: customer.into(),
                    name: customer.into(),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        business
            .create_subscription(
                tenant.id,
                &SubscriptionInput {
                    customer: customer.into(),
                    rate_plan: "translation-pro".into(),
                    starts_at: Utc.with_ymd_and_hms(2026, 11, 1, 0, 0, 0).unwrap(),
                    ends_at: None,
                    billing_anchor_day: Some(1),
                },
            )
            .await
            .unwrap();
    }
    let enricher = Enricher::new(store.clone(), context.clone(), 50);

    // Redis up: the first batch misses and fills the cache, later ones hit.
    let mut acme = queue(store.as_ref(), &tenant, "a", "acme", 200).await;
    drain(&enricher).await;
    let warm = context.stats();
    assert!(warm.hits > 0 && warm.fallbacks == 0, "{warm:?}");

    // Redis stopped in the middle of a run: every lookup falls back to the store.
    acme += queue(store.as_ref(), &tenant, "b", "acme", 200).await;
    let globex = queue(store.as_ref(), &tenant, "c", "globex", 100).await;
    enricher.run_once().await.unwrap();
    redis.stop();
    drain(&enricher).await;
    let down = context.stats();
    assert!(down.fallbacks > warm.fallbacks, "{down:?}");

    // Redis back: hits again.
    let redis = Redis::start(port);
    acme += queue(store.as_ref(), &tenant, "d", "acme", 200).await;
    drain(&enricher).await;
    drain(&enricher).await;
    let back = context.stats();
    assert!(back.hits > down.hits, "the hit ratio recovers: {back:?}");
    drop(redis);

    // Nothing lost, nothing counted twice: the ledger telescopes exactly.
    let rows = store
        .revenue(tenant.id, &RevenueQuery::default())
        .await
        .unwrap();
    let f = translation_pro();
    let by = |c: &str| rows.iter().find(|r| r.customer == c).unwrap();
    assert_eq!(by("acme").events, 600);
    assert_eq!(by("acme").quantity, acme);
    assert_eq!(by("acme").revenue, f.price(acme));
    assert_eq!(by("globex").events, 100);
    assert_eq!(by("globex").revenue, f.price(globex));
}
