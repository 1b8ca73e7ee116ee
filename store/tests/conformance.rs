//! The storage conformance suite: every test runs against both backends.
//!
//! SQLite runs on a temporary file. PostgreSQL runs on a fresh database of the
//! server named by `AFORO_TEST_DATABASE_URL` (`scripts/test.sh` starts one);
//! without it the PostgreSQL half fails and says how to get one.
//!
//! Dates are fixed (`t0`, months of 2026): the store is handed every time it
//! compares (cut-offs, `now` for due deliveries) and reads the clock only to
//! stamp rows, so these tests mean the same on any day.

use std::collections::HashMap;
use std::sync::Arc;

use aforo_crds::{EventFlag, EventFlags, GateResults, RejectReason, SourceEvent, Tier};
use aforo_store::billing::{
    BillRunRecord, InvoiceQuery, NewInvoice, SettleOutcome, SubscriptionDiscount,
};
use aforo_store::cache::CatalogCache;
use aforo_store::changes::Change;
use aforo_store::context::ContextCache;
use aforo_store::{
    CommitBatch, CommitOutcome, CustomerInput, EventQuery, NewCatalogVersion, NewEvent,
    NewRejection, PgStore, RejectionQuery, SqliteStore, Store, StoreError, SubscriptionInput,
};
use chrono::{DateTime, Duration, TimeZone, Utc};
use serde_json::json;
use sqlx::Connection;
use uuid::Uuid;

/// A store under test and what keeps it alive.
struct Fixture {
    store: Arc<dyn Store>,
    /// Where the database is, for tests that go around the store.
    url: String,
    _dir: Option<tempfile::TempDir>,
}

async fn sqlite() -> Fixture {
    let dir = tempfile::tempdir().expect("temporary directory");
    let path = dir.path().join("aforo.db");
    let store = SqliteStore::open(&path).await.expect("open sqlite");
    Fixture {
        store: Arc::new(store),
        url: format!("sqlite://{}", path.display()),
        _dir: Some(dir),
    }
}

/// A fresh, empty PostgreSQL database for one test.
async fn postgres_url() -> String {
    let admin = std::env::var("AFORO_TEST_DATABASE_URL").expect(
        "AFORO_TEST_DATABASE_URL is not set: run scripts/test.sh, or `eval \"$(scripts/services.sh)\"` first",
    );
    let name = format!("aforo_test_{}", Uuid::now_v7().simple());
    let mut conn = sqlx::PgConnection::connect(&admin)
        .await
        .expect("connect to the test PostgreSQL");
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut conn)
        .await
        .expect("create test database");
    let base = admin.rsplit_once('/').expect("URL has a database").0;
    format!("{base}/{name}")
}

async fn postgres() -> Fixture {
    let url = postgres_url().await;
    let store = PgStore::connect(&url).await.expect("connect");
    Fixture {
        store: Arc::new(store),
        url,
        _dir: None,
    }
}

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 20, 10, 0, 0).unwrap()
}

fn source_event(id: &str, customer: &str, minutes: i64) -> SourceEvent {
    SourceEvent {
        id: id.into(),
        source: "api".into(),
        event_type: "tokens".into(),
        customer: customer.into(),
        time: t0() + Duration::minutes(minutes),
        properties: json!({"tokens": 12, "model": "m1", "nested": {"b": 1.5, "a": [1, 2]}})
            .as_object()
            .unwrap()
            .clone(),
        tier: Tier::Sdk,
        tier_detail: "aforo-python/0.1".into(),
    }
}

fn new_event(tenant: &aforo_store::Tenant, event: SourceEvent) -> NewEvent {
    let stored_id = Uuid::now_v7();
    let gates = GateResults::accepted(false);
    let hash = aforo_crds::validation_hash(
        &tenant.hmac_key,
        &tenant.name,
        &stored_id.to_string(),
        &event,
        &event.canonical_properties(),
        &gates,
    );
    NewEvent {
        tenant: tenant.id,
        stored_id,
        dedup_key: format!("{}\n{}", event.source, event.id),
        properties_json: event.canonical_properties(),
        event,
        flags: EventFlags::default(),
        gates,
        validation_hash: hash,
        received_at: t0() + Duration::hours(1),
        node: "test-node".into(),
        trace_parent: None,
    }
}

fn rejection(tenant: Uuid, reason: RejectReason, payload: &str) -> NewRejection {
    NewRejection {
        tenant,
        stored_id: Uuid::now_v7(),
        event_id: None,
        source: Some("api".into()),
        event_type: Some("tokens".into()),
        customer: None,
        reason: reason.as_str().into(),
        message: "test rejection".into(),
        gates: GateResults::rejected(reason),
        payload: payload.into(),
        tier: Tier::Rest,
        tier_detail: String::new(),
        received_at: t0(),
        node: "test-node".into(),
    }
}

fn events(list: Vec<NewEvent>) -> CommitBatch {
    CommitBatch {
        events: list,
        rejections: vec![],
    }
}

/// Declares one test per backend for each suite function.
macro_rules! conformance {
    ($($name:ident),* $(,)?) => {
        mod on_sqlite {
            $(#[tokio::test] async fn $name() { super::$name(super::sqlite().await).await })*
        }
        mod on_postgres {
            $(#[tokio::test] async fn $name() { super::$name(super::postgres().await).await })*
        }
    };
}

conformance!(
    tenant_names_are_unique,
    api_key_resolves_to_its_tenant_only_by_hash,
    a_repeated_key_is_a_duplicate_naming_the_original,
    a_key_repeated_within_one_commit_is_stored_once,
    tenants_neither_see_nor_dedup_against_each_other,
    a_stored_event_keeps_its_provenance_byte_for_byte,
    an_enrichment_claim_carries_the_storing_requests_trace,
    rejections_are_stored_with_payload_and_reason,
    events_filter_and_paginate_in_storage_order,
    a_failed_commit_leaves_no_claim_behind,
    concurrent_commits_of_one_key_store_it_once,
    identical_catalog_content_is_the_same_version,
    customers_are_upserted_by_external_id,
    a_plan_change_opens_a_phase_and_never_rewrites_the_past,
    invoices_are_numbered_without_gaps_once_per_period,
    settled_invoices_cannot_be_changed,
    deliveries_are_retried_until_made,
    discounts_and_bill_runs_are_recorded,
    writes_are_told_to_the_stores_listeners_before_they_return,
);

fn catalog(hash: &str, effective: i64) -> NewCatalogVersion {
    NewCatalogVersion {
        content_hash: hash.into(),
        effective_from: Some(t0() + Duration::days(effective)),
        snapshot: format!("{{\"hash\":\"{hash}\"}}"),
    }
}

async fn identical_catalog_content_is_the_same_version(f: Fixture) {
    let t = f.store.create_tenant("acme").await.unwrap();
    assert_eq!(f.store.catalog_version(t.id, None).await.unwrap(), None);
    let first = f
        .store
        .apply_catalog(t.id, &catalog("sha256:a", 0))
        .await
        .unwrap();
    assert!(first.created);
    assert_eq!(first.version.version, 1);
    let again = f
        .store
        .apply_catalog(t.id, &catalog("sha256:a", 0))
        .await
        .unwrap();
    assert!(!again.created);
    assert_eq!(again.version, first.version);
    let second = f
        .store
        .apply_catalog(t.id, &catalog("sha256:b", 30))
        .await
        .unwrap();
    assert_eq!((second.version.version, second.created), (2, true));

    let all = f.store.catalog_versions(t.id).await.unwrap();
    assert_eq!(all.iter().map(|v| v.version).collect::<Vec<_>>(), [1, 2]);
    assert_eq!(all[0].snapshot, "{\"hash\":\"sha256:a\"}");
    assert_eq!(all[1].effective_from, Some(t0() + Duration::days(30)));
    let v1 = f
        .store
        .catalog_version(t.id, Some(1))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(v1.content_hash, "sha256:a");
    assert_eq!(
        f.store
            .catalog_version(t.id, None)
            .await
            .unwrap()
            .unwrap()
            .version,
        2
    );
    let other = f.store.create_tenant("globex").await.unwrap();
    assert!(f.store.catalog_versions(other.id).await.unwrap().is_empty());
}

async fn customers_are_upserted_by_external_id(f: Fixture) {
    let t = f.store.create_tenant("acme").await.unwrap();
    let mut input = CustomerInput {
        external_id: "cus_1".into(),
        name: "Initech".into(),
        currency: Some("EUR".into()),
        tax_region: Some("DE".into()),
        metadata: json!({"segment": "smb"}).as_object().unwrap().clone(),
    };
    let (created, was_new) = f.store.upsert_customer(t.id, &input).await.unwrap();
    assert!(was_new);
    input.name = "Initech GmbH".into();
    let (updated, was_new) = f.store.upsert_customer(t.id, &input).await.unwrap();
    assert!(!was_new);
    assert_eq!(updated.id, created.id);
    assert_eq!(updated.name, "Initech GmbH");
    assert_eq!(updated.metadata["segment"], "smb");
    for id in ["cus_3", "cus_2"] {
        input.external_id = id.into();
        f.store.upsert_customer(t.id, &input).await.unwrap();
    }
    let page = f.store.list_customers(t.id, None, 2).await.unwrap();
    assert_eq!(
        page.iter()
            .map(|c| c.external_id.as_str())
            .collect::<Vec<_>>(),
        ["cus_1", "cus_2"]
    );
    let rest = f
        .store
        .list_customers(t.id, Some("cus_2"), 2)
        .await
        .unwrap();
    assert_eq!(rest.len(), 1);
    assert_eq!(f.store.customer(t.id, "cus_9").await.unwrap(), None);
}

async fn a_plan_change_opens_a_phase_and_never_rewrites_the_past(f: Fixture) {
    let t = f.store.create_tenant("acme").await.unwrap();
    let missing = f
        .store
        .create_subscription(
            t.id,
            &SubscriptionInput {
                customer: "nobody".into(),
                rate_plan: "pro".into(),
                starts_at: t0(),
                ends_at: None,
                billing_anchor_day: None,
            },
        )
        .await
        .unwrap_err();
    assert!(matches!(missing, StoreError::NotFound(_)), "{missing:?}");

    let customer = CustomerInput {
        external_id: "cus_1".into(),
        name: "Initech".into(),
        ..Default::default()
    };
    f.store.upsert_customer(t.id, &customer).await.unwrap();
    let sub = f
        .store
        .create_subscription(
            t.id,
            &SubscriptionInput {
                customer: "cus_1".into(),
                rate_plan: "starter".into(),
                starts_at: t0(),
                ends_at: None,
                billing_anchor_day: Some(1),
            },
        )
        .await
        .unwrap();
    assert_eq!(sub.plan_at(t0()), Some("starter"));
    assert_eq!(sub.plan_at(t0() - Duration::seconds(1)), None);

    let change = t0() + Duration::days(14);
    let changed = f
        .store
        .change_plan(t.id, sub.id, "pro", change)
        .await
        .unwrap();
    assert_eq!(changed.phases.len(), 2);
    assert_eq!(changed.phases[0].ends_at, Some(change));
    assert_eq!(
        changed.plan_at(change - Duration::microseconds(1)),
        Some("starter")
    );
    assert_eq!(changed.plan_at(change), Some("pro"));

    let rewrite = f
        .store
        .change_plan(t.id, sub.id, "enterprise", t0() + Duration::days(7))
        .await
        .unwrap_err();
    assert!(matches!(rewrite, StoreError::Invalid(_)), "{rewrite:?}");
    let listed = f.store.subscriptions(t.id, Some("cus_1")).await.unwrap();
    assert_eq!(listed, vec![changed]);
    assert!(
        f.store
            .subscriptions(t.id, Some("cus_2"))
            .await
            .unwrap()
            .is_empty()
    );
}

async fn tenant_names_are_unique(f: Fixture) {
    let a = f.store.create_tenant("acme").await.unwrap();
    assert_eq!(a.hmac_key.len(), 32);
    let err = f.store.create_tenant("acme").await.unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{err:?}");
    assert_eq!(f.store.tenant_by_name("acme").await.unwrap(), Some(a));
    assert_eq!(f.store.tenant_by_name("nobody").await.unwrap(), None);
    assert_eq!(f.store.list_tenants().await.unwrap().len(), 1);
}

async fn api_key_resolves_to_its_tenant_only_by_hash(f: Fixture) {
    let a = f.store.create_tenant("a").await.unwrap();
    let b = f.store.create_tenant("b").await.unwrap();
    f.store
        .create_api_key(a.id, "hash-a", "ak_a", "ci")
        .await
        .unwrap();
    f.store
        .create_api_key(b.id, "hash-b", "ak_b", "ci")
        .await
        .unwrap();
    assert_eq!(
        f.store
            .tenant_for_api_key("hash-a")
            .await
            .unwrap()
            .unwrap()
            .id,
        a.id
    );
    assert_eq!(
        f.store
            .tenant_for_api_key("hash-b")
            .await
            .unwrap()
            .unwrap()
            .id,
        b.id
    );
    assert_eq!(f.store.tenant_for_api_key("ak_a").await.unwrap(), None);
}

async fn a_repeated_key_is_a_duplicate_naming_the_original(f: Fixture) {
    let t = f.store.create_tenant("acme").await.unwrap();
    let first = new_event(&t, source_event("e1", "c1", 0));
    let original = first.stored_id;
    let out = f.store.commit(&events(vec![first])).await.unwrap();
    assert_eq!(out, vec![CommitOutcome::Inserted]);

    // A retry carries a new stored id; the answer names the first one.
    let retry = new_event(&t, source_event("e1", "c1", 0));
    let other = new_event(&t, source_event("e2", "c1", 0));
    let out = f.store.commit(&events(vec![retry, other])).await.unwrap();
    assert_eq!(
        out,
        vec![
            CommitOutcome::Duplicate { original },
            CommitOutcome::Inserted
        ]
    );
    assert_eq!(f.store.count_events(t.id).await.unwrap(), 2);
}

async fn a_key_repeated_within_one_commit_is_stored_once(f: Fixture) {
    let t = f.store.create_tenant("acme").await.unwrap();
    let a = new_event(&t, source_event("same", "c1", 0));
    let b = new_event(&t, source_event("same", "c1", 5));
    let first = a.stored_id;
    let out = f.store.commit(&events(vec![a, b])).await.unwrap();
    assert_eq!(
        out,
        vec![
            CommitOutcome::Inserted,
            CommitOutcome::Duplicate { original: first }
        ]
    );
    assert_eq!(f.store.count_events(t.id).await.unwrap(), 1);
}

async fn tenants_neither_see_nor_dedup_against_each_other(f: Fixture) {
    let a = f.store.create_tenant("a").await.unwrap();
    let b = f.store.create_tenant("b").await.unwrap();
    let out = f
        .store
        .commit(&events(vec![
            new_event(&a, source_event("e1", "c1", 0)),
            new_event(&b, source_event("e1", "c1", 0)),
        ]))
        .await
        .unwrap();
    assert_eq!(out, vec![CommitOutcome::Inserted, CommitOutcome::Inserted]);
    let seen_by_a = f
        .store
        .list_events(a.id, &EventQuery::default())
        .await
        .unwrap();
    assert_eq!(seen_by_a.items.len(), 1);
    assert!(seen_by_a.items.iter().all(|e| e.tenant == a.id));
    f.store
        .commit(&CommitBatch {
            events: vec![],
            rejections: vec![rejection(b.id, RejectReason::SchemaMissingId, "{}")],
        })
        .await
        .unwrap();
    let a_rejections = f
        .store
        .list_rejections(a.id, &RejectionQuery::default())
        .await
        .unwrap();
    assert!(a_rejections.items.is_empty());
}

async fn a_stored_event_keeps_its_provenance_byte_for_byte(f: Fixture) {
    let t = f.store.create_tenant("acme").await.unwrap();
    let mut e = new_event(&t, source_event("e1", "c1", 0));
    e.flags = EventFlags::default().with(EventFlag::Late);
    e.gates = GateResults::accepted(true);
    e.event.time += Duration::microseconds(123_456);
    e.validation_hash = aforo_crds::validation_hash(
        &t.hmac_key,
        &t.name,
        &e.stored_id.to_string(),
        &e.event,
        &e.properties_json,
        &e.gates,
    );
    f.store.commit(&events(vec![e.clone()])).await.unwrap();

    let page = f
        .store
        .list_events(t.id, &EventQuery::default())
        .await
        .unwrap();
    let stored = &page.items[0];
    assert_eq!(stored.stored_id, e.stored_id);
    assert_eq!(stored.event, e.event);
    assert_eq!(stored.properties_json, e.properties_json);
    assert_eq!(stored.flags, e.flags);
    assert_eq!(stored.gates, e.gates);
    assert_eq!(stored.received_at, e.received_at);
    assert_eq!(stored.node, "test-node");
    assert_eq!(stored.status, "ACCEPTED");
    // The seal can be recomputed from what was stored.
    let recomputed = aforo_crds::validation_hash(
        &t.hmac_key,
        &t.name,
        &stored.stored_id.to_string(),
        &stored.event,
        &stored.properties_json,
        &stored.gates,
    );
    assert_eq!(recomputed, stored.validation_hash);
}

async fn an_enrichment_claim_carries_the_storing_requests_trace(f: Fixture) {
    let t = f.store.create_tenant("acme").await.unwrap();
    let traced = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let mut a = new_event(&t, source_event("traced", "c1", 0));
    a.trace_parent = Some(traced.into());
    let b = new_event(&t, source_event("untraced", "c1", 1));
    f.store
        .commit(&events(vec![a.clone(), b.clone()]))
        .await
        .unwrap();
    // On PostgreSQL events become claimable once every older transaction
    // has ended (other tests share the server): claim until both are in.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let claim = loop {
        let claim = f.store.claim_enrichment(100).await.unwrap();
        if claim.events().len() == 2 {
            break claim;
        }
        drop(claim);
        assert!(
            std::time::Instant::now() < deadline,
            "claimable within 30 s"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    };
    let of = |id: Uuid| {
        claim
            .events()
            .iter()
            .find(|e| e.stored_id == id)
            .unwrap_or_else(|| panic!("{id} claimed"))
            .trace_parent
            .clone()
    };
    assert_eq!(of(a.stored_id).as_deref(), Some(traced));
    assert_eq!(of(b.stored_id), None);
    // It is not part of what listings show, nor of the seal.
    let page = f
        .store
        .list_events(t.id, &EventQuery::default())
        .await
        .unwrap();
    assert!(page.items.iter().all(|e| e.trace_parent.is_none()));
}

async fn rejections_are_stored_with_payload_and_reason(f: Fixture) {
    let t = f.store.create_tenant("acme").await.unwrap();
    let payload = r#"{"source":"api","type":"tokens","time":"2026-11-20T10:00:00Z"}"#;
    f.store
        .commit(&CommitBatch {
            events: vec![],
            rejections: vec![
                rejection(t.id, RejectReason::SchemaMissingId, payload),
                rejection(t.id, RejectReason::TimestampInFuture, "{}"),
            ],
        })
        .await
        .unwrap();
    let all = f
        .store
        .list_rejections(t.id, &RejectionQuery::default())
        .await
        .unwrap();
    assert_eq!(all.items.len(), 2);
    assert_eq!(all.items[0].payload, payload);
    assert_eq!(all.items[0].reason, "SCHEMA_MISSING_ID");
    assert_eq!(
        all.items[0].gates,
        GateResults::rejected(RejectReason::SchemaMissingId)
    );
    let future = f
        .store
        .list_rejections(
            t.id,
            &RejectionQuery {
                reason: Some("TIMESTAMP_IN_FUTURE".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(future.items.len(), 1);
    assert_eq!(f.store.count_events(t.id).await.unwrap(), 0);
}

async fn events_filter_and_paginate_in_storage_order(f: Fixture) {
    let t = f.store.create_tenant("acme").await.unwrap();
    let mut batch = Vec::new();
    for i in 0..25 {
        let customer = if i % 2 == 0 { "even" } else { "odd" };
        let mut e = new_event(&t, source_event(&format!("e{i}"), customer, i));
        if i % 5 == 0 {
            e.flags = EventFlags::default().with(EventFlag::Late);
        }
        if i == 24 {
            e.event.event_type = "calls".into();
        }
        batch.push(e);
    }
    f.store.commit(&events(batch)).await.unwrap();

    let q = |query: EventQuery| {
        let store = f.store.clone();
        let tenant = t.id;
        async move { store.list_events(tenant, &query).await.unwrap() }
    };
    assert_eq!(
        q(EventQuery {
            customer: Some("even".into()),
            ..Default::default()
        })
        .await
        .items
        .len(),
        13
    );
    assert_eq!(
        q(EventQuery {
            event_type: Some("calls".into()),
            ..Default::default()
        })
        .await
        .items
        .len(),
        1
    );
    let window = q(EventQuery {
        from: Some(t0() + Duration::minutes(10)),
        to: Some(t0() + Duration::minutes(20)),
        ..Default::default()
    })
    .await;
    assert_eq!(window.items.len(), 10, "from is inclusive, to exclusive");
    let late = q(EventQuery {
        flags: EventFlags::default().with(EventFlag::Late),
        ..Default::default()
    })
    .await;
    assert_eq!(late.items.len(), 5);
    assert_eq!(
        q(EventQuery {
            status: Some("ACCEPTED".into()),
            ..Default::default()
        })
        .await
        .items
        .len(),
        25
    );

    // Walk all pages of 10: every event once, in storage order.
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let page = q(EventQuery {
            after,
            limit: 10,
            ..Default::default()
        })
        .await;
        seen.extend(page.items.iter().map(|e| e.seq));
        match page.next_after {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    assert_eq!(seen.len(), 25);
    assert!(seen.windows(2).all(|w| w[0] < w[1]));

    // Newest first, paged the same way.
    let newest = q(EventQuery {
        descending: true,
        limit: 10,
        ..Default::default()
    })
    .await;
    assert_eq!(newest.items[0].seq, *seen.last().unwrap());
    let next = q(EventQuery {
        descending: true,
        after: newest.next_after,
        limit: 10,
        ..Default::default()
    })
    .await;
    assert_eq!(next.items[0].seq, seen[seen.len() - 11]);
}

async fn a_failed_commit_leaves_no_claim_behind(f: Fixture) {
    let t = f.store.create_tenant("acme").await.unwrap();
    let earlier = rejection(t.id, RejectReason::SchemaMissingId, "{}");
    f.store
        .commit(&CommitBatch {
            events: vec![],
            rejections: vec![earlier.clone()],
        })
        .await
        .unwrap();
    let good = new_event(&t, source_event("e1", "c1", 0));
    // A rejection reusing a stored id breaks its primary key: the whole
    // transaction must roll back, the good event's claim with it.
    let broken = CommitBatch {
        events: vec![good.clone()],
        rejections: vec![earlier],
    };
    assert!(f.store.commit(&broken).await.is_err());
    assert_eq!(f.store.count_events(t.id).await.unwrap(), 0);

    // The client's retry counts exactly once: stored, not a duplicate.
    let retry = new_event(&t, source_event("e1", "c1", 0));
    assert_eq!(
        f.store.commit(&events(vec![retry])).await.unwrap(),
        vec![CommitOutcome::Inserted]
    );
    assert_eq!(f.store.count_events(t.id).await.unwrap(), 1);
}

async fn concurrent_commits_of_one_key_store_it_once(f: Fixture) {
    let t = f.store.create_tenant("acme").await.unwrap();
    let mut tasks = Vec::new();
    for i in 0..8 {
        let store = f.store.clone();
        // Each writer also carries keys the others carry, in another order.
        let mut list = vec![new_event(&t, source_event("shared", "c1", 0))];
        for k in 0..10 {
            let k = if i % 2 == 0 { k } else { 9 - k };
            list.push(new_event(&t, source_event(&format!("k{k}"), "c1", 0)));
        }
        let ids: Vec<(String, Uuid)> = list
            .iter()
            .map(|e| (e.event.id.clone(), e.stored_id))
            .collect();
        tasks.push(tokio::spawn(async move {
            (ids, store.commit(&events(list)).await.unwrap())
        }));
    }
    let mut inserted = 0;
    let mut holders: HashMap<String, Uuid> = HashMap::new();
    let mut results = Vec::new();
    for task in tasks {
        results.push(task.await.unwrap());
    }
    for (ids, outcomes) in &results {
        for (pos, outcome) in outcomes.iter().enumerate() {
            if *outcome == CommitOutcome::Inserted {
                inserted += 1;
                let (key, id) = &ids[pos];
                assert!(
                    holders.insert(key.clone(), *id).is_none(),
                    "{key} stored twice"
                );
            }
        }
    }
    assert_eq!(inserted, 11);
    for (ids, outcomes) in &results {
        for (pos, outcome) in outcomes.iter().enumerate() {
            if let CommitOutcome::Duplicate { original } = outcome {
                assert_eq!(*original, holders[&ids[pos].0]);
            }
        }
    }
    assert_eq!(f.store.count_events(t.id).await.unwrap(), 11);
}

mod properties {
    //! Dedup as an invariant: however events are split into commits and
    //! however often keys repeat, each key is stored once, the first time it
    //! is seen, and every repeat names that first stored id.
    use super::*;
    use proptest::prelude::*;

    #[derive(Clone, Copy)]
    enum Backend {
        Sqlite,
        Postgres,
    }

    fn check(backend: Backend, keys: Vec<u8>, cuts: Vec<usize>) {
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async {
            let f = match backend {
                Backend::Sqlite => sqlite().await,
                Backend::Postgres => postgres().await,
            };
            let t = f.store.create_tenant("p").await.unwrap();
            let all: Vec<NewEvent> = keys
                .iter()
                .map(|k| new_event(&t, source_event(&format!("k{k}"), "c", 0)))
                .collect();
            let mut first: HashMap<u8, Uuid> = HashMap::new();
            let mut start = 0;
            let mut bounds: Vec<usize> = cuts.into_iter().map(|c| c % (all.len() + 1)).collect();
            bounds.push(all.len());
            bounds.sort_unstable();
            for end in bounds {
                let chunk = &all[start..end.max(start)];
                let chunk_keys = &keys[start..end.max(start)];
                let out = f.store.commit(&events(chunk.to_vec())).await.unwrap();
                for ((e, k), o) in chunk.iter().zip(chunk_keys).zip(out) {
                    match (first.get(k), o) {
                        (None, CommitOutcome::Inserted) => {
                            first.insert(*k, e.stored_id);
                        }
                        (Some(orig), CommitOutcome::Duplicate { original }) => {
                            assert_eq!(*orig, original)
                        }
                        (seen, outcome) => panic!("key {k}: seen {seen:?}, got {outcome:?}"),
                    }
                }
                start = end.max(start);
            }
            assert_eq!(
                f.store.count_events(t.id).await.unwrap(),
                first.len() as u64
            );
        });
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        #[test]
        fn dedup_is_exact_on_sqlite(keys in prop::collection::vec(0u8..12, 1..60),
                                    cuts in prop::collection::vec(0usize..64, 0..6)) {
            check(Backend::Sqlite, keys, cuts);
        }
        #[test]
        fn dedup_is_exact_on_postgres(keys in prop::collection::vec(0u8..12, 1..60),
                                      cuts in prop::collection::vec(0usize..64, 0..6)) {
            check(Backend::Postgres, keys, cuts);
        }
    }
}

mod enrichment {
    //! The enrichment queue: claims, running totals and the ledger.
    use std::sync::Arc;

    use aforo_store::enrichment::{
        AggregationInput, EnrichmentOutcome, EnrichmentState, LedgerIntent, TotalKey,
    };
    use rust_decimal::Decimal;

    use super::*;

    fn intent(tenant: Uuid, subscription: Uuid, input: AggregationInput) -> LedgerIntent {
        LedgerIntent {
            key: TotalKey {
                tenant,
                subscription,
                meter: "m".into(),
                dimension: String::new(),
                period_start: t0(),
                plan_terms: "terms".into(),
            },
            input,
            // A volume-like price: every unit at 2 up to 10, at 1 beyond.
            price: Arc::new(|q: Decimal| {
                if q <= Decimal::from(10) {
                    q * Decimal::from(2)
                } else {
                    q
                }
            }),
            customer: "c1".into(),
            rate_plan: "plan".into(),
            catalog_version: 1,
            currency: "EUR".into(),
            cost: Decimal::new(5, 1),
            cost_currency: Some("USD".into()),
        }
    }

    async fn queue(f: &Fixture, t: &aforo_store::Tenant, n: usize) {
        let list = (0..n)
            .map(|i| new_event(t, source_event(&format!("q{i}"), "c1", i as i64)))
            .collect();
        f.store.commit(&events(list)).await.unwrap();
    }

    /// The enrichment mark of each of a tenant's events, as listed.
    async fn enrichment_marks(f: &Fixture, t: &aforo_store::Tenant) -> Vec<Option<String>> {
        f.store
            .list_events(t.id, &EventQuery::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .map(|e| e.enrichment)
            .collect()
    }

    /// A claim of up to `limit` events; empty only once the backlog is. On
    /// PostgreSQL an event becomes claimable when every transaction older
    /// than the one that stored it has ended, and the tests sharing the
    /// server run transactions of their own: until then a claim may come
    /// back empty while the backlog is not.
    async fn claim_ready(f: &Fixture, limit: u32) -> Box<dyn aforo_store::EnrichmentClaim> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let claim = f.store.claim_enrichment(limit).await.unwrap();
            if !claim.events().is_empty() {
                return claim;
            }
            drop(claim);
            let backlog = f.store.enrichment_backlog().await.unwrap();
            if backlog == 0 {
                return f.store.claim_enrichment(limit).await.unwrap();
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{backlog} events in the backlog stayed unclaimable for 30 s"
            );
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }

    /// Claims and completes until the backlog is empty; `input(i)` is what
    /// the i-th event enriched (in claim order) adds. Returns how many were.
    async fn enrich_all(
        f: &Fixture,
        subscription: Uuid,
        input: impl Fn(usize) -> AggregationInput,
    ) -> usize {
        let mut n = 0;
        loop {
            let claim = claim_ready(f, 100).await;
            if claim.events().is_empty() {
                return n;
            }
            let mut outcomes = Vec::new();
            for e in claim.events() {
                outcomes.push(EnrichmentOutcome {
                    event: e.stored_id,
                    event_time: e.event.time,
                    state: EnrichmentState::Enriched,
                    intents: vec![intent(e.tenant, subscription, input(n))],
                });
                n += 1;
            }
            claim.complete(outcomes).await.unwrap();
        }
    }

    async fn revenue_telescopes_through_the_running_total(f: Fixture) {
        let t = f.store.create_tenant("acme").await.unwrap();
        queue(&f, &t, 8).await;
        assert_eq!(f.store.enrichment_backlog().await.unwrap(), 8);
        assert!(
            enrichment_marks(&f, &t).await.iter().all(Option::is_none),
            "queued events are listed as pending"
        );
        let sub = Uuid::now_v7();
        assert_eq!(
            enrich_all(&f, sub, |_| AggregationInput::Sum(Decimal::from(3))).await,
            8
        );
        assert_eq!(f.store.enrichment_backlog().await.unwrap(), 0);
        assert_eq!(
            enrich_all(&f, sub, |_| AggregationInput::Count).await,
            0,
            "the queue is empty"
        );
        let rows = f.store.revenue(t.id, &Default::default()).await.unwrap();
        assert_eq!(rows[0].quantity, Decimal::from(24));
        assert_eq!(
            rows[0].revenue,
            Decimal::from(24),
            "price(24) of the volume-like function"
        );
        assert_eq!(rows[0].cost, Decimal::from(4));
        assert_eq!(rows[0].events, 8);
        assert!(
            enrichment_marks(&f, &t)
                .await
                .iter()
                .all(|m| m.as_deref() == Some("ENRICHED"))
        );
        let totals = f.store.running_totals_of(t.id, sub).await.unwrap();
        assert_eq!(
            (totals[0].1.quantity, totals[0].1.price),
            (Decimal::from(24), Decimal::from(24))
        );
    }

    async fn a_unique_value_counts_once_even_within_one_batch(f: Fixture) {
        let t = f.store.create_tenant("acme").await.unwrap();
        queue(&f, &t, 6).await;
        let sub = Uuid::now_v7();
        // Values a, b, a, b, c, a: three distinct.
        let values = ["a", "b", "a", "b", "c", "a"];
        enrich_all(&f, sub, |i| AggregationInput::UniqueCount(values[i].into())).await;
        let totals = f.store.running_totals_of(t.id, sub).await.unwrap();
        assert_eq!(totals[0].1.quantity, Decimal::from(3));
    }

    /// LATEST keeps the value of the latest event time, across batches: the
    /// time is stored with the total and read back.
    async fn latest_survives_the_round_trip_through_the_store(f: Fixture) {
        let t = f.store.create_tenant("acme").await.unwrap();
        let sub = Uuid::now_v7();
        // Batch one: minutes 0 and 5 (value 5 is the latest).
        let list = (0..2)
            .map(|i| new_event(&t, source_event(&format!("l{i}"), "c1", i * 5)))
            .collect();
        f.store.commit(&events(list)).await.unwrap();
        let value = |minutes: i64| AggregationInput::Latest(Decimal::from(minutes + 100));
        let claim = claim_ready(&f, 100).await;
        let outcomes = claim
            .events()
            .iter()
            .map(|e| EnrichmentOutcome {
                event: e.stored_id,
                event_time: e.event.time,
                state: EnrichmentState::Enriched,
                intents: vec![intent(
                    e.tenant,
                    sub,
                    value((e.event.time - t0()).num_minutes()),
                )],
            })
            .collect();
        claim.complete(outcomes).await.unwrap();
        // Batch two: minute 3 arrives late; it must not replace minute 5.
        f.store
            .commit(&events(vec![new_event(
                &t,
                source_event("l-late", "c1", 3),
            )]))
            .await
            .unwrap();
        let claim = claim_ready(&f, 100).await;
        assert_eq!(claim.events().len(), 1);
        let e = &claim.events()[0];
        let outcome = EnrichmentOutcome {
            event: e.stored_id,
            event_time: e.event.time,
            state: EnrichmentState::Enriched,
            intents: vec![intent(e.tenant, sub, value(3))],
        };
        claim.complete(vec![outcome]).await.unwrap();
        let totals = f.store.running_totals_of(t.id, sub).await.unwrap();
        assert_eq!(totals[0].1.quantity, Decimal::from(105));
        assert_eq!(
            totals[0].1.latest_time,
            Some(t0() + chrono::Duration::minutes(5))
        );
    }

    fn outcome(
        e: &aforo_store::StoredEvent,
        state: EnrichmentState,
        sub: Uuid,
    ) -> EnrichmentOutcome {
        EnrichmentOutcome {
            event: e.stored_id,
            event_time: e.event.time,
            state,
            intents: if state == EnrichmentState::Enriched {
                vec![intent(e.tenant, sub, AggregationInput::Count)]
            } else {
                vec![]
            },
        }
    }

    /// One claim holding requeued events and events from the log: each
    /// kind is parked or released its own way.
    async fn a_claim_of_requeued_and_new_events_marks_each_kind(f: Fixture) {
        let t = f.store.create_tenant("acme").await.unwrap();
        let sub = Uuid::now_v7();
        queue(&f, &t, 2).await;
        let claim = claim_ready(&f, 100).await;
        let parked: Vec<_> = claim
            .events()
            .iter()
            .map(|e| outcome(e, EnrichmentState::Unattributed, sub))
            .collect();
        claim.complete(parked).await.unwrap();
        assert_eq!(f.store.requeue_waiting(t.id).await.unwrap(), 2);
        let list = (0..2)
            .map(|i| new_event(&t, source_event(&format!("new{i}"), "c1", 10 + i)))
            .collect();
        f.store.commit(&events(list)).await.unwrap();
        // Requeued first, then the log, in one claim (one customer, one shard).
        let mut seen = Vec::new();
        let mut outcomes = Vec::new();
        while seen.len() < 4 {
            let claim = claim_ready(&f, 100).await;
            assert!(!claim.events().is_empty(), "four events to claim");
            for e in claim.events() {
                seen.push(e.event.id.clone());
                // q1 (requeued) and new1 (from the log) are parked again.
                let state = if e.event.id == "q1" || e.event.id == "new1" {
                    EnrichmentState::Unmetered
                } else {
                    EnrichmentState::Enriched
                };
                outcomes.push(outcome(e, state, sub));
            }
            claim.complete(std::mem::take(&mut outcomes)).await.unwrap();
        }
        assert_eq!(seen, ["q0", "q1", "new0", "new1"]);
        assert_eq!(f.store.enrichment_backlog().await.unwrap(), 0);
        let listed = f
            .store
            .list_events(t.id, &EventQuery::default())
            .await
            .unwrap();
        let mut marks: Vec<(String, Option<String>)> = listed
            .items
            .iter()
            .map(|e| (e.event.id.clone(), e.enrichment.clone()))
            .collect();
        marks.sort();
        let mark = |id: &str, m: &str| (id.to_owned(), Some(m.to_owned()));
        assert_eq!(
            marks,
            [
                mark("new0", "ENRICHED"),
                mark("new1", "UNMETERED"),
                mark("q0", "ENRICHED"),
                mark("q1", "UNMETERED"),
            ]
        );
        assert_eq!(f.store.requeue_waiting(t.id).await.unwrap(), 2);
        assert_eq!(enrich_all(&f, sub, |_| AggregationInput::Count).await, 2);
        let totals = f.store.running_totals_of(t.id, sub).await.unwrap();
        assert_eq!(totals[0].1.quantity, Decimal::from(4));
    }

    /// A completion must answer for every claimed event: one left out would
    /// be passed by the cursor unenriched.
    async fn a_completion_missing_an_event_writes_nothing(f: Fixture) {
        let t = f.store.create_tenant("acme").await.unwrap();
        queue(&f, &t, 3).await;
        let sub = Uuid::now_v7();
        let claim = claim_ready(&f, 100).await;
        assert_eq!(claim.events().len(), 3);
        let partial: Vec<_> = claim.events()[..2]
            .iter()
            .map(|e| outcome(e, EnrichmentState::Enriched, sub))
            .collect();
        let refused = claim.complete(partial).await.unwrap_err();
        assert!(refused.to_string().contains("3 events"), "{refused}");
        assert_eq!(f.store.enrichment_backlog().await.unwrap(), 3);
        assert!(
            f.store
                .running_totals_of(t.id, sub)
                .await
                .unwrap()
                .is_empty()
        );
        assert_eq!(enrich_all(&f, sub, |_| AggregationInput::Count).await, 3);
    }

    async fn requeued_events_come_back_to_the_queue(f: Fixture) {
        let t = f.store.create_tenant("acme").await.unwrap();
        queue(&f, &t, 3).await;
        let mut parked = 0;
        loop {
            let claim = claim_ready(&f, 10).await;
            if claim.events().is_empty() {
                break;
            }
            let outcomes: Vec<EnrichmentOutcome> = claim
                .events()
                .iter()
                .map(|e| EnrichmentOutcome {
                    event: e.stored_id,
                    event_time: e.event.time,
                    state: EnrichmentState::Unattributed,
                    intents: vec![],
                })
                .collect();
            parked += outcomes.len();
            claim.complete(outcomes).await.unwrap();
        }
        assert_eq!(parked, 3, "parked events are not claimed again");
        assert_eq!(
            f.store.enrichment_backlog().await.unwrap(),
            0,
            "parked events are not in the backlog"
        );
        assert!(
            enrichment_marks(&f, &t)
                .await
                .iter()
                .all(|m| m.as_deref() == Some("UNATTRIBUTED"))
        );
        assert_eq!(f.store.requeue_waiting(t.id).await.unwrap(), 3);
        assert_eq!(f.store.enrichment_backlog().await.unwrap(), 3);
        let enriched = enrich_all(&f, Uuid::now_v7(), |_| AggregationInput::Count).await;
        assert_eq!(enriched, 3);
    }

    macro_rules! both {
        ($($name:ident),*) => {
            mod on_sqlite { $(#[tokio::test] async fn $name() { super::$name(super::sqlite().await).await })* }
            mod on_postgres { $(#[tokio::test] async fn $name() { super::$name(super::postgres().await).await })* }
        };
    }
    both!(
        revenue_telescopes_through_the_running_total,
        a_unique_value_counts_once_even_within_one_batch,
        latest_survives_the_round_trip_through_the_store,
        a_claim_of_requeued_and_new_events_marks_each_kind,
        a_completion_missing_an_event_writes_nothing,
        requeued_events_come_back_to_the_queue
    );

    /// A transaction that has its transaction id (it holds the horizon back
    /// from the moment it has one).
    async fn transaction_with_an_id(
        pool: &sqlx::PgPool,
    ) -> sqlx::Transaction<'static, sqlx::Postgres> {
        let mut tx = pool.begin().await.unwrap();
        sqlx::query("SELECT pg_current_xact_id()")
            .execute(&mut *tx)
            .await
            .unwrap();
        tx
    }

    /// The log's one hazard: a transaction that stores an event commits
    /// after a younger one whose events were already enriched. Its event
    /// must not end up behind the shard's cursor, unseen.
    #[tokio::test]
    async fn an_event_committed_late_by_an_older_transaction_is_not_skipped() {
        let f = postgres().await;
        let t = f.store.create_tenant("acme").await.unwrap();
        let pool = sqlx::PgPool::connect(&f.url).await.unwrap();
        // The older transaction: it has its id before the others store anything.
        let mut older = transaction_with_an_id(&pool).await;
        // A younger commit of events of the same customer (one shard).
        let list = (0..5)
            .map(|i| new_event(&t, source_event(&format!("young{i}"), "c1", i)))
            .collect();
        f.store.commit(&events(list)).await.unwrap();
        let young = f.store.claim_enrichment(100).await.unwrap();
        assert!(
            young.events().is_empty(),
            "events stored after a transaction still in flight wait for it"
        );
        drop(young);
        // The older transaction now stores an event (a copy of a young one
        // under a new id and key, as aforo's commit would) and commits.
        let late = Uuid::now_v7();
        sqlx::query(
            "INSERT INTO events (id, tenant_id, dedup_key, event_id, source, type, customer, time,
                 properties, tier, tier_detail, status, flags, gates, validation_hash, received_at,
                 node, enrich_shard, enrich_xid)
             SELECT $1, tenant_id, 'api/late', 'late', source, type, customer, time, properties,
                 tier, tier_detail, status, flags, gates, validation_hash, received_at, node,
                 enrich_shard, pg_current_xact_id()
             FROM events WHERE event_id = 'young0'",
        )
        .bind(late)
        .execute(&mut *older)
        .await
        .unwrap();
        older.commit().await.unwrap();
        assert_eq!(f.store.enrichment_backlog().await.unwrap(), 6);
        let sub = Uuid::now_v7();
        assert_eq!(enrich_all(&f, sub, |_| AggregationInput::Count).await, 6);
        let ledger = f.store.ledger_of(t.id, &[late]).await.unwrap();
        assert_eq!(ledger.len(), 1, "the late event was enriched");
        let totals = f.store.running_totals_of(t.id, sub).await.unwrap();
        assert_eq!(totals[0].1.quantity, Decimal::from(6));
    }

    /// A claim that found a shard's events held back by the horizon does
    /// not keep that shard locked while it is open.
    #[tokio::test]
    async fn a_claim_that_found_nothing_keeps_no_shard() {
        let f = postgres().await;
        let t = f.store.create_tenant("acme").await.unwrap();
        let pool = sqlx::PgPool::connect(&f.url).await.unwrap();
        let older = transaction_with_an_id(&pool).await;
        queue(&f, &t, 3).await;
        let idle = f.store.claim_enrichment(100).await.unwrap();
        assert!(
            idle.events().is_empty(),
            "held back by the older transaction"
        );
        older.commit().await.unwrap();
        // `idle` is still open; the shard it looked at is free.
        let claim = claim_ready(&f, 100).await;
        assert_eq!(claim.events().len(), 3);
        drop((idle, claim));
    }

    /// Events stored before migration 0007 (or by an older aforo during a
    /// rolling upgrade) have a queue row and no transaction id: they are
    /// claimed from the queue, once.
    #[tokio::test]
    async fn events_queued_the_old_way_are_enriched_once() {
        let f = postgres().await;
        let t = f.store.create_tenant("acme").await.unwrap();
        queue(&f, &t, 4).await;
        let pool = sqlx::PgPool::connect(&f.url).await.unwrap();
        let mut tx = pool.begin().await.unwrap();
        sqlx::query(
            "INSERT INTO enrichment_queue (event_id, tenant_id, shard)
             SELECT id, tenant_id, get_byte(uuid_send(id), 15) % 16 FROM events
             WHERE event_id IN ('q0', 'q1')",
        )
        .execute(&mut *tx)
        .await
        .unwrap();
        sqlx::query(
            "UPDATE events SET enrich_xid = NULL, enrich_shard = NULL
             WHERE event_id IN ('q0', 'q1')",
        )
        .execute(&mut *tx)
        .await
        .unwrap();
        tx.commit().await.unwrap();
        assert_eq!(f.store.enrichment_backlog().await.unwrap(), 4);
        let sub = Uuid::now_v7();
        assert_eq!(enrich_all(&f, sub, |_| AggregationInput::Count).await, 4);
        let totals = f.store.running_totals_of(t.id, sub).await.unwrap();
        assert_eq!(totals[0].1.quantity, Decimal::from(4));
        let queued: i64 = sqlx::query_scalar("SELECT count(*) FROM enrichment_queue")
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(queued, 0, "enriched queue rows leave the queue");
    }

    /// The SQLite twin: events queued before its migration 0007 sit at or
    /// before the cursor with a queue row; they are claimed from the queue,
    /// once, and the log goes on after them.
    #[tokio::test]
    async fn events_queued_the_old_way_are_enriched_once_on_sqlite() {
        let f = sqlite().await;
        let t = f.store.create_tenant("acme").await.unwrap();
        queue(&f, &t, 4).await;
        let path = f.url.strip_prefix("sqlite://").unwrap().to_owned();
        let options = sqlx::sqlite::SqliteConnectOptions::new().filename(&path);
        let mut conn = sqlx::SqliteConnection::connect_with(&options)
            .await
            .unwrap();
        // As the migration leaves a database that had two queued events.
        sqlx::query(
            "INSERT INTO enrichment_queue (event_id, tenant_id)
             SELECT id, tenant_id FROM events WHERE event_id IN ('q0', 'q1') ORDER BY seq",
        )
        .execute(&mut conn)
        .await
        .unwrap();
        sqlx::query(
            "UPDATE enrichment_cursor SET seq = (SELECT seq FROM events WHERE event_id = 'q1')",
        )
        .execute(&mut conn)
        .await
        .unwrap();
        drop(conn);
        assert_eq!(f.store.enrichment_backlog().await.unwrap(), 4);
        let sub = Uuid::now_v7();
        assert_eq!(enrich_all(&f, sub, |_| AggregationInput::Count).await, 4);
        let totals = f.store.running_totals_of(t.id, sub).await.unwrap();
        assert_eq!(totals[0].1.quantity, Decimal::from(4));
        assert_eq!(f.store.enrichment_backlog().await.unwrap(), 0);
    }

    /// After a logical restore transaction ids start over, and a cursor
    /// from the old server would pass every new event: claims stop instead,
    /// and the repair the docs give puts the waiting event back.
    #[tokio::test]
    async fn a_cursor_ahead_of_the_server_stops_enrichment() {
        let f = postgres().await;
        let t = f.store.create_tenant("acme").await.unwrap();
        queue(&f, &t, 2).await;
        let pool = sqlx::PgPool::connect(&f.url).await.unwrap();
        // As restored from a server that had counted far beyond this one:
        // q0 was enriched there, q1 was still waiting.
        sqlx::query("UPDATE events SET enrich_xid = '999999999999'")
            .execute(&pool)
            .await
            .unwrap();
        sqlx::query(
            "INSERT INTO enrichment_cursors (shard, xid, event_id)
             SELECT enrich_shard, enrich_xid, id FROM events WHERE event_id = 'q0'",
        )
        .execute(&pool)
        .await
        .unwrap();
        let refused = match f.store.claim_enrichment(100).await {
            Ok(claim) => panic!("claimed {} events", claim.events().len()),
            Err(e) => e.to_string(),
        };
        assert!(
            refused.contains("restored from a logical copy"),
            "{refused}"
        );
        // The repair docs/enrichment.md gives, as written there.
        let docs = std::fs::read_to_string(format!(
            "{}/../docs/enrichment.md",
            std::env::var("CARGO_MANIFEST_DIR")
                .expect("CARGO_MANIFEST_DIR: run by cargo test, or by scripts/hard-days.sh")
        ))
        .unwrap();
        let section = docs.split("### After a logical restore").nth(1).unwrap();
        let repair = section
            .split("```sql")
            .nth(1)
            .and_then(|rest| rest.split("```").next())
            .expect("the repair's SQL");
        sqlx::raw_sql(sqlx::AssertSqlSafe(repair.to_owned()))
            .execute(&pool)
            .await
            .unwrap();
        assert_eq!(f.store.enrichment_backlog().await.unwrap(), 1);
        let sub = Uuid::now_v7();
        assert_eq!(enrich_all(&f, sub, |_| AggregationInput::Count).await, 1);
    }

    /// The store remembers which running totals exist so it does not insert
    /// them again; if one disappears behind its back, a batch is refused
    /// rather than counted into nothing, and the retry recreates it.
    #[tokio::test]
    async fn a_running_total_removed_behind_the_stores_back_is_recreated() {
        let f = postgres().await;
        let t = f.store.create_tenant("acme").await.unwrap();
        queue(&f, &t, 2).await;
        let sub = Uuid::now_v7();
        assert_eq!(enrich_all(&f, sub, |_| AggregationInput::Count).await, 2);
        let pool = sqlx::PgPool::connect(&f.url).await.unwrap();
        sqlx::query("DELETE FROM running_totals")
            .execute(&pool)
            .await
            .unwrap();
        let list = (0..3)
            .map(|i| new_event(&t, source_event(&format!("again{i}"), "c1", i)))
            .collect();
        f.store.commit(&events(list)).await.unwrap();
        let claim = claim_ready(&f, 100).await;
        let outcomes = claim
            .events()
            .iter()
            .map(|e| EnrichmentOutcome {
                event: e.stored_id,
                event_time: e.event.time,
                state: EnrichmentState::Enriched,
                intents: vec![intent(e.tenant, sub, AggregationInput::Count)],
            })
            .collect();
        let refused = claim.complete(outcomes).await.unwrap_err();
        assert!(refused.to_string().contains("running totals"), "{refused}");
        assert_eq!(f.store.enrichment_backlog().await.unwrap(), 3);
        assert_eq!(enrich_all(&f, sub, |_| AggregationInput::Count).await, 3);
        let totals = f.store.running_totals_of(t.id, sub).await.unwrap();
        assert_eq!(totals[0].1.quantity, Decimal::from(3));
    }

    #[tokio::test]
    async fn two_claims_on_postgres_never_share_an_event() {
        let f = postgres().await;
        let t = f.store.create_tenant("acme").await.unwrap();
        // Forty customers, so the events fall in several shards.
        let list = (0..40)
            .map(|i| new_event(&t, source_event(&format!("q{i}"), &format!("c{i}"), i)))
            .collect();
        f.store.commit(&events(list)).await.unwrap();
        // Claims held open at once each see events no other holds, and
        // together they cover the backlog.
        let mut held = Vec::new();
        let mut seen: Vec<Uuid> = Vec::new();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while seen.len() < 40 {
            assert!(
                std::time::Instant::now() < deadline,
                "only {} of 40 events became claimable in 30 s",
                seen.len()
            );
            let claim = f.store.claim_enrichment(100).await.unwrap();
            if claim.events().is_empty() {
                // Held back by a transaction in flight elsewhere on the server.
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                continue;
            }
            for e in claim.events() {
                assert!(
                    !seen.contains(&e.stored_id),
                    "{} claimed twice",
                    e.stored_id
                );
                seen.push(e.stored_id);
            }
            held.push(claim);
        }
        assert!(held.len() > 1, "the events fell in more than one shard");
        let empty = f.store.claim_enrichment(100).await.unwrap();
        assert!(
            empty.events().is_empty(),
            "with every shard that has events held, there is nothing left to claim"
        );
        drop(held);
    }
}

/// What a store's listeners heard, but `Unknown` (a PostgreSQL store says it
/// whenever it starts listening).
fn hear(store: &dyn Store) -> Arc<std::sync::Mutex<Vec<Change>>> {
    let heard = Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = heard.clone();
    store.changes().listen(move |change| {
        if change != Change::Unknown {
            log.lock().unwrap().push(change);
        }
        async {}
    });
    heard
}

async fn writes_are_told_to_the_stores_listeners_before_they_return(f: Fixture) {
    let t = f.store.create_tenant("acme").await.unwrap();
    let heard = hear(f.store.as_ref());
    let taken = || std::mem::take(&mut *heard.lock().unwrap());
    f.store
        .apply_catalog(t.id, &catalog("sha256:a", 0))
        .await
        .unwrap();
    assert_eq!(taken(), [Change::Catalog { tenant: t.id }]);
    // The same content is no new version: nothing changed.
    f.store
        .apply_catalog(t.id, &catalog("sha256:a", 0))
        .await
        .unwrap();
    assert_eq!(taken(), []);
    f.store
        .upsert_customer(
            t.id,
            &CustomerInput {
                external_id: "cus_1".into(),
                name: "Initech".into(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    // Nothing cached holds a customer's own fields.
    assert_eq!(taken(), []);
    let sub = f
        .store
        .create_subscription(
            t.id,
            &SubscriptionInput {
                customer: "cus_1".into(),
                rate_plan: "pro".into(),
                starts_at: t0(),
                ends_at: None,
                billing_anchor_day: None,
            },
        )
        .await
        .unwrap();
    let customer = Change::Customer {
        tenant: t.id,
        customer: "cus_1".into(),
    };
    assert_eq!(taken(), std::slice::from_ref(&customer));
    f.store
        .change_plan(t.id, sub.id, "max", t0() + Duration::days(10))
        .await
        .unwrap();
    assert_eq!(taken(), [customer]);
    // A write that fails tells nothing.
    let refused = f
        .store
        .change_plan(t.id, Uuid::now_v7(), "max", t0() + Duration::days(20))
        .await;
    assert!(refused.is_err());
    assert_eq!(taken(), []);
}

/// Another process's caches: a second store on the same PostgreSQL
/// database, with caches that would keep what they hold for an hour.
#[tokio::test]
async fn another_processs_caches_follow_a_change_at_once() {
    let url = postgres_url().await;
    let writer: Arc<dyn Store> = Arc::new(PgStore::connect(&url).await.expect("connect"));
    let reader: Arc<dyn Store> = Arc::new(PgStore::connect(&url).await.expect("connect"));
    let hour = std::time::Duration::from_secs(3600);
    let catalogs = CatalogCache::new(reader.clone(), hour);
    let context = ContextCache::in_process(reader.changes(), hour);

    let t = writer.create_tenant("acme").await.unwrap();
    let snapshot = serde_json::to_string(&aforo_crds::compile::CatalogSnapshot::default()).unwrap();
    let version = |hash: &str| NewCatalogVersion {
        content_hash: hash.into(),
        effective_from: None,
        snapshot: snapshot.clone(),
    };
    writer
        .upsert_customer(
            t.id,
            &CustomerInput {
                external_id: "cus_1".into(),
                name: "Initech".into(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let subscribe = |plan: &str| SubscriptionInput {
        customer: "cus_1".into(),
        rate_plan: plan.into(),
        starts_at: t0(),
        ends_at: None,
        billing_anchor_day: None,
    };
    writer
        .create_subscription(t.id, &subscribe("pro"))
        .await
        .unwrap();
    let latest = || async { catalogs.latest(t.id).await.unwrap().map(|c| c.version) };
    let subscriptions = || async {
        context
            .subscriptions(reader.as_ref(), t.id, "cus_1")
            .await
            .unwrap()
            .len()
    };

    // The reader listens once it has heard a notice: until then it may
    // still be connecting, and on connecting it drops everything (what was
    // sent before is unknown to it). A notice sent before it listened is
    // lost, so the writer sends versions until one is heard.
    let heard = hear(reader.as_ref());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let mut warm = 0;
    while heard.lock().unwrap().is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "the reader never listened"
        );
        warm = writer
            .apply_catalog(t.id, &version(&format!("sha256:warm-{warm}")))
            .await
            .unwrap()
            .version
            .version;
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(latest().await, Some(warm));
    assert_eq!(subscriptions().await, 1);

    // The caches do hold: a change made behind the store's back (no
    // notice) goes unseen.
    let pool = sqlx::PgPool::connect(&url).await.unwrap();
    sqlx::query(
        "INSERT INTO catalog_versions (tenant_id, version, content_hash, effective_from, snapshot, applied_at)
         VALUES ($1, $2, 'sha256:behind', NULL, $3, now())",
    )
    .bind(t.id)
    .bind(warm + 1)
    .bind(&snapshot)
    .execute(&pool)
    .await
    .unwrap();
    assert_eq!(latest().await, Some(warm));
    let hits = context.stats().hits;
    assert_eq!(subscriptions().await, 1);
    assert_eq!(context.stats().hits, hits + 1);

    // Through the store, the other process hears it.
    writer
        .apply_catalog(t.id, &version("sha256:c"))
        .await
        .unwrap();
    writer
        .create_subscription(t.id, &subscribe("max"))
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        if latest().await == Some(warm + 2) && subscriptions().await == 2 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the reader's caches still hold version {:?} and {} subscriptions",
            latest().await,
            subscriptions().await
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    pool.close().await;
}

async fn subscribed(f: &Fixture) -> (aforo_store::Tenant, aforo_store::Subscription) {
    let t = f.store.create_tenant("acme").await.unwrap();
    f.store
        .upsert_customer(
            t.id,
            &CustomerInput {
                external_id: "cus_1".into(),
                name: "Initech".into(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let sub = f
        .store
        .create_subscription(
            t.id,
            &SubscriptionInput {
                customer: "cus_1".into(),
                rate_plan: "pro".into(),
                starts_at: t0(),
                ends_at: None,
                billing_anchor_day: None,
            },
        )
        .await
        .unwrap();
    (t, sub)
}

fn invoice(sub: Uuid, month: u32, events: Vec<Uuid>) -> NewInvoice {
    let start = Utc.with_ymd_and_hms(2026, month, 1, 0, 0, 0).unwrap();
    let document = format!("{{\"period\":\"{month}\"}}");
    NewInvoice {
        id: Uuid::now_v7(),
        subscription: sub,
        customer: "cus_1".into(),
        period_start: start,
        period_end: start + Duration::days(28),
        cutoff: start + Duration::days(29),
        currency: "EUR".into(),
        total: rust_decimal::Decimal::new(12345, 2),
        bill_run: Uuid::now_v7(),
        document_hash: format!("hash-{month}"),
        document,
        lineage: vec![(1, events)],
        deliveries: vec![r#"{"type":"WEBHOOK","url":"http://127.0.0.1:9/hook"}"#.into()],
    }
}

async fn invoices_are_numbered_without_gaps_once_per_period(f: Fixture) {
    let (t, sub) = subscribed(&f).await;
    let events = vec![Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7()];
    let first = invoice(sub.id, 1, events.clone());
    let outcomes = f
        .store
        .settle_invoices(t.id, &[first.clone(), invoice(sub.id, 2, vec![])])
        .await
        .unwrap();
    assert_eq!(
        outcomes,
        vec![
            SettleOutcome::Settled {
                number: "INV-000001".into()
            },
            SettleOutcome::Settled {
                number: "INV-000002".into()
            },
        ]
    );
    // The same period again, beside a new one: nothing is written twice and
    // the new one takes the next number.
    let again = f
        .store
        .settle_invoices(
            t.id,
            &[invoice(sub.id, 1, vec![]), invoice(sub.id, 3, vec![])],
        )
        .await
        .unwrap();
    assert_eq!(
        again,
        vec![
            SettleOutcome::AlreadyInvoiced {
                number: "INV-000001".into()
            },
            SettleOutcome::Settled {
                number: "INV-000003".into()
            },
        ]
    );
    let mut periods = f.store.invoiced_periods(t.id).await.unwrap();
    periods.sort();
    let starts: Vec<u32> = periods
        .iter()
        .map(|(s, p)| {
            assert_eq!(*s, sub.id);
            chrono::Datelike::month(p)
        })
        .collect();
    assert_eq!(starts, vec![1, 2, 3]);
    let stored = f.store.invoice(t.id, "INV-000001").await.unwrap().unwrap();
    assert_eq!(stored.id, first.id);
    assert_eq!(stored.document, first.document);
    assert_eq!(stored.total, first.total);
    assert_eq!(
        f.store.invoice(t.id, &first.id.to_string()).await.unwrap(),
        Some(stored.clone())
    );
    assert_eq!(
        f.store.line_events(t.id, first.id, 1).await.unwrap(),
        Some(events)
    );
    assert_eq!(f.store.line_events(t.id, first.id, 2).await.unwrap(), None);
    let other = f.store.create_tenant("other").await.unwrap();
    assert_eq!(f.store.invoice(other.id, "INV-000001").await.unwrap(), None);
    assert_eq!(
        f.store.line_events(other.id, first.id, 1).await.unwrap(),
        None
    );
    let all = f
        .store
        .invoices(t.id, &InvoiceQuery::default())
        .await
        .unwrap();
    let numbers: Vec<_> = all.iter().map(|i| i.number.as_str()).collect();
    assert_eq!(numbers, vec!["INV-000001", "INV-000002", "INV-000003"]);
    let page = f
        .store
        .invoices(
            t.id,
            &InvoiceQuery {
                after: Some("INV-000001".into()),
                limit: 1,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(page.len(), 1);
    assert_eq!(page[0].number, "INV-000002");
}

async fn settled_invoices_cannot_be_changed(f: Fixture) {
    let (t, sub) = subscribed(&f).await;
    let inv = invoice(sub.id, 1, vec![Uuid::now_v7()]);
    f.store
        .settle_invoices(t.id, std::slice::from_ref(&inv))
        .await
        .unwrap();
    let statements = [
        "UPDATE invoices SET total = 0",
        "DELETE FROM invoices",
        "UPDATE bill_run_event_index SET event_count = 0",
        "DELETE FROM bill_run_event_index",
    ];
    for sql in statements {
        let err = if f.store.backend() == "postgres" {
            let mut conn = sqlx::PgConnection::connect(&f.url).await.unwrap();
            sqlx::raw_sql(sql).execute(&mut conn).await.unwrap_err()
        } else {
            let mut conn = sqlx::SqliteConnection::connect(&f.url).await.unwrap();
            sqlx::raw_sql(sql).execute(&mut conn).await.unwrap_err()
        };
        assert!(err.to_string().contains("immutable"), "{sql}: {err}");
    }
    let stored = f.store.invoice(t.id, "INV-000001").await.unwrap().unwrap();
    assert_eq!(stored.document, inv.document);
    assert_eq!(stored.total, inv.total);
}

async fn deliveries_are_retried_until_made(f: Fixture) {
    let (t, sub) = subscribed(&f).await;
    let inv = invoice(sub.id, 1, vec![]);
    f.store
        .settle_invoices(t.id, std::slice::from_ref(&inv))
        .await
        .unwrap();
    let now = Utc::now() + Duration::seconds(1);
    let due = f.store.due_deliveries(now, 10).await.unwrap();
    assert_eq!(due.len(), 1);
    assert_eq!(
        (due[0].invoice, due[0].tenant, due[0].attempts),
        (inv.id, t.id, 0)
    );
    assert!(due[0].route.contains("WEBHOOK"));
    f.store
        .finish_delivery(
            due[0].id,
            now,
            Some("connection refused"),
            now + Duration::seconds(10),
        )
        .await
        .unwrap();
    assert!(f.store.due_deliveries(now, 10).await.unwrap().is_empty());
    let later = now + Duration::seconds(11);
    let retry = f.store.due_deliveries(later, 10).await.unwrap();
    assert_eq!(retry[0].attempts, 1);
    f.store
        .finish_delivery(retry[0].id, later, None, later)
        .await
        .unwrap();
    assert!(
        f.store
            .due_deliveries(later + Duration::days(1), 10)
            .await
            .unwrap()
            .is_empty()
    );
}

async fn discounts_and_bill_runs_are_recorded(f: Fixture) {
    let (t, sub) = subscribed(&f).await;
    let discount = SubscriptionDiscount {
        id: Uuid::now_v7(),
        subscription: sub.id,
        percent: Some(rust_decimal::Decimal::new(125, 1)),
        amount: None,
        valid_from: Some(t0()),
        valid_until: None,
        created_at: t0(),
    };
    f.store
        .add_subscription_discount(t.id, &discount)
        .await
        .unwrap();
    let unknown = SubscriptionDiscount {
        subscription: Uuid::now_v7(),
        id: Uuid::now_v7(),
        ..discount.clone()
    };
    let err = f
        .store
        .add_subscription_discount(t.id, &unknown)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::NotFound(_)), "{err:?}");
    assert_eq!(
        f.store.subscription_discounts(t.id).await.unwrap(),
        vec![discount]
    );
    let run = BillRunRecord {
        id: Uuid::now_v7(),
        tenant: t.id,
        as_of: t0(),
        cutoff: t0(),
        started_at: t0(),
        finished_at: t0() + Duration::seconds(3),
        invoiced: 2,
        failed: 1,
        report: "{\"failures\":[]}".into(),
    };
    f.store.record_bill_run(&run).await.unwrap();
    assert_eq!(f.store.bill_runs(t.id, 10).await.unwrap(), vec![run]);
}
