//! A bill run on an injected clock, standing on a period's boundary: a period
//! is due the instant its end is reached (by the cut-off, which trails the
//! clock by the settle delay), not a microsecond before; and the usage
//! queries answer for the period the clock is in. On an embedded store, with
//! fixed dates, so the test means the same on any day.

use std::sync::Arc;
use std::time::Duration as StdDuration;

use aforo_billing::billrun::runner::BillRunConfig;
use aforo_billing::catalog::CatalogApi;
use aforo_billing::customers::BusinessData;
use aforo_billing::invoices::InvoiceApi;
use aforo_billing::usage::UsageApi;
use aforo_crds::catalog::{Resource, yaml_documents};
use aforo_crds::clock::FixedClock;
use aforo_store::cache::CatalogCache;
use aforo_store::context::ContextCache;
use aforo_store::{CustomerInput, Store, SubscriptionInput};
use chrono::{DateTime, Duration, TimeZone, Utc};
use uuid::Uuid;

fn examples() -> Vec<Resource> {
    let dir = format!(
        "{}/../examples",
        std::env::var("CARGO_MANIFEST_DIR")
            .expect("CARGO_MANIFEST_DIR: run by cargo test, or by scripts/hard-days.sh")
    );
    let mut out = Vec::new();
    for file in ["meters.yaml", "products.yaml", "rate-plans.yaml"] {
        let text = std::fs::read_to_string(format!("{dir}/{file}")).expect("an example");
        for (origin, value) in yaml_documents(&text, file).expect("YAML") {
            out.push(Resource::from_value(value, &origin).expect("a resource"));
        }
    }
    out
}

fn at(y: i32, mo: u32, d: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(y, mo, d, 0, 0, 0).unwrap()
}

struct Setup {
    _dir: tempfile::TempDir,
    store: Arc<dyn Store>,
    context: Arc<ContextCache>,
    tenant: Uuid,
}

/// A store with the example catalog and acme on translation-pro, anchored
/// on the 1st, from `start`.
async fn setup(start: DateTime<Utc>) -> Setup {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let url = format!("sqlite://{}", dir.path().join("aforo.db").display());
    let store = aforo_store::open(&url).await.expect("the embedded store");
    let tenant = store.create_tenant("acme-corp").await.expect("a tenant").id;
    let context = ContextCache::in_process(store.changes(), StdDuration::from_secs(600));
    let catalog = CatalogApi::new(
        store.clone(),
        CatalogCache::new(store.clone(), StdDuration::from_secs(5)),
    );
    catalog.apply(tenant, &examples()).await.expect("applied");
    let business = BusinessData::new(store.clone(), catalog);
    business
        .upsert_customer(
            tenant,
            &CustomerInput {
                external_id: "acme".into(),
                name: "ACME".into(),
                ..Default::default()
            },
        )
        .await
        .expect("a customer");
    business
        .create_subscription(
            tenant,
            &SubscriptionInput {
                customer: "acme".into(),
                rate_plan: "translation-pro".into(),
                starts_at: start,
                ends_at: None,
                billing_anchor_day: Some(1),
            },
        )
        .await
        .expect("a subscription");
    Setup {
        _dir: dir,
        store,
        context,
        tenant,
    }
}

#[tokio::test]
async fn a_period_is_billed_the_instant_the_cut_off_reaches_its_end_and_not_before() {
    let s = setup(at(2028, 1, 1)).await;
    let settle = Duration::seconds(60);
    let clock = Arc::new(FixedClock::new(at(2028, 2, 1)));
    let invoices = InvoiceApi::new(s.store.clone(), BillRunConfig::default(), settle)
        .with_clock(clock.clone());

    // Midnight into February, and the settle delay not yet over: January's
    // events may still be committing, so January waits.
    let early = invoices.run(s.tenant, None, None, None).await.unwrap();
    assert!(early.invoiced.is_empty(), "{early:?}");
    clock.set(at(2028, 2, 1) + settle - Duration::microseconds(1));
    let last = invoices.run(s.tenant, None, None, None).await.unwrap();
    assert!(last.invoiced.is_empty(), "{last:?}");

    // The settle delay after midnight, exactly: January is due.
    clock.set(at(2028, 2, 1) + settle);
    let due = invoices.run(s.tenant, None, None, None).await.unwrap();
    let starts: Vec<_> = due.invoiced.iter().map(|i| i.period_start).collect();
    assert_eq!(starts, [at(2028, 1, 1)], "{due:?}");
    // The run is recorded at the clock's time, not the machine's.
    let record = &invoices.runs(s.tenant, 1).await.unwrap()[0];
    assert_eq!(record.id, due.id);
    assert_eq!(
        (record.started_at, record.finished_at),
        (at(2028, 2, 1) + settle, at(2028, 2, 1) + settle)
    );

    // The leap day is February's last: February ends at midnight into March.
    clock.set(at(2028, 2, 29) + Duration::hours(23) + settle);
    assert!(
        invoices
            .run(s.tenant, None, None, None)
            .await
            .unwrap()
            .invoiced
            .is_empty()
    );
    clock.set(at(2028, 3, 1) + settle);
    let march = invoices.run(s.tenant, None, None, None).await.unwrap();
    let starts: Vec<_> = march.invoiced.iter().map(|i| i.period_start).collect();
    assert_eq!(starts, [at(2028, 2, 1)], "{march:?}");
}

#[tokio::test]
async fn a_run_as_of_a_moment_the_clock_has_not_reached_is_refused() {
    let s = setup(at(2027, 12, 1)).await;
    let clock = Arc::new(FixedClock::new(at(2027, 12, 31) + Duration::hours(23)));
    let invoices = InvoiceApi::new(
        s.store.clone(),
        BillRunConfig::default(),
        Duration::seconds(60),
    )
    .with_clock(clock.clone());
    let refused = invoices
        .run(s.tenant, Some(at(2028, 1, 1)), None, None)
        .await
        .unwrap_err();
    assert!(refused.to_string().contains("in the future"), "{refused}");
    clock.set(at(2028, 1, 1));
    let ran = invoices
        .run(s.tenant, Some(at(2028, 1, 1)), Some(at(2028, 1, 1)), None)
        .await
        .unwrap();
    assert_eq!(ran.invoiced.len(), 1, "{ran:?}");
}

#[tokio::test]
async fn the_entitlement_answers_for_the_period_the_clock_is_in() {
    let s = setup(at(2027, 12, 1)).await;
    let clock = Arc::new(FixedClock::new(at(2028, 1, 1) - Duration::microseconds(1)));
    let usage = UsageApi::new(s.store.clone(), s.context.clone()).with_clock(clock.clone());
    let before = usage
        .entitlement(s.tenant, "acme", "translation-characters", usage.now())
        .await
        .unwrap()
        .expect("an entitlement");
    assert_eq!(before.period_start, at(2027, 12, 1));
    clock.set(at(2028, 1, 1));
    let after = usage
        .entitlement(s.tenant, "acme", "translation-characters", usage.now())
        .await
        .unwrap()
        .expect("an entitlement");
    assert_eq!(after.period_start, at(2028, 1, 1));
}
