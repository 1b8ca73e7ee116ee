//! Conformance of the webhook-rejection and batch tables: every test runs
//! against SQLite and PostgreSQL (`AFORO_TEST_DATABASE_URL`).
//!
//! Dates are fixed: the store is handed every time it compares and reads the
//! clock only to stamp rows, so these tests mean the same on any day.

use std::sync::Arc;

use aforo_store::{
    Batch, BatchResultChunk, BatchStatus, NewWebhookRejection, PgStore, SqliteStore, Store,
    StoreError, WebhookRejectionQuery,
};
use chrono::{DateTime, TimeZone, Utc};
use sqlx::Connection;
use uuid::Uuid;

struct Fixture {
    store: Arc<dyn Store>,
    _dir: Option<tempfile::TempDir>,
}

async fn sqlite() -> Fixture {
    let dir = tempfile::tempdir().expect("temporary directory");
    let store = SqliteStore::open(dir.path().join("aforo.db"))
        .await
        .expect("open sqlite");
    Fixture {
        store: Arc::new(store),
        _dir: Some(dir),
    }
}

async fn postgres() -> Fixture {
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
    let store = PgStore::connect(&format!("{base}/{name}"))
        .await
        .expect("connect");
    Fixture {
        store: Arc::new(store),
        _dir: None,
    }
}

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
    a_rejected_delivery_keeps_its_headers_and_raw_body,
    batch_results_append_in_order_and_add_up,
    a_finished_batch_takes_no_more_results,
);

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 20, 10, 0, 0).unwrap()
}

fn delivery(tenant: Option<Uuid>, source: &str, reason: &str) -> NewWebhookRejection {
    NewWebhookRejection {
        stored_id: Uuid::now_v7(),
        tenant,
        namespace: "default".into(),
        source: source.into(),
        provider: Some("stripe".into()),
        reason: reason.into(),
        message: "no signature matches the body".into(),
        headers: vec![
            ("stripe-signature".into(), "t=1,v1=00".into()),
            ("x-dup".into(), "a".into()),
            ("x-dup".into(), "b".into()),
        ],
        // Not UTF-8: the body is kept as bytes.
        body: vec![0xff, 0x00, b'{', b'}'],
        received_at: t0(),
        node: "n1".into(),
    }
}

async fn a_rejected_delivery_keeps_its_headers_and_raw_body(f: Fixture) {
    let acme = f.store.create_tenant("acme").await.unwrap();
    let other = f.store.create_tenant("other").await.unwrap();
    let first = delivery(Some(acme.id), "stripe", "WEBHOOK_SIGNATURE_INVALID");
    f.store.record_webhook_rejection(&first).await.unwrap();
    f.store
        .record_webhook_rejection(&delivery(Some(acme.id), "github", "WEBHOOK_UNMATCHED"))
        .await
        .unwrap();
    f.store
        .record_webhook_rejection(&delivery(Some(other.id), "stripe", "WEBHOOK_UNMATCHED"))
        .await
        .unwrap();
    // A delivery to an unknown tenant is kept too, under no tenant.
    f.store
        .record_webhook_rejection(&delivery(None, "x", "WEBHOOK_UNKNOWN_SOURCE"))
        .await
        .unwrap();

    let all = |q: WebhookRejectionQuery| {
        let store = f.store.clone();
        async move { store.list_webhook_rejections(acme.id, &q).await.unwrap() }
    };
    let page = all(WebhookRejectionQuery::default()).await;
    assert_eq!(page.items.len(), 2);
    assert_eq!(page.items[0].rejection, first);
    let only = all(WebhookRejectionQuery {
        reason: Some("WEBHOOK_UNMATCHED".into()),
        ..Default::default()
    })
    .await;
    assert_eq!(only.items.len(), 1);
    assert_eq!(only.items[0].rejection.source, "github");
    let by_source = all(WebhookRejectionQuery {
        source: Some("stripe".into()),
        limit: 1,
        ..Default::default()
    })
    .await;
    assert_eq!(by_source.items.len(), 1);
    let next = all(WebhookRejectionQuery {
        source: Some("stripe".into()),
        after: by_source.next_after,
        ..Default::default()
    })
    .await;
    assert!(next.items.is_empty());
}

fn batch(tenant: Uuid) -> Batch {
    Batch {
        id: Uuid::now_v7(),
        tenant,
        format: "ndjson".into(),
        status: BatchStatus::Running,
        rows: 0,
        accepted: 0,
        duplicates: 0,
        rejected: 0,
        error: None,
        created_at: t0(),
        finished_at: None,
    }
}

fn chunk(n: i64, first_row: i64, rows: i64, rejected: i64) -> BatchResultChunk {
    BatchResultChunk {
        chunk: n,
        first_row,
        rows,
        accepted: rows - rejected,
        duplicates: 0,
        rejected,
        results: format!("{{\"chunk\":{n}}}\n"),
    }
}

async fn batch_results_append_in_order_and_add_up(f: Fixture) {
    let t = f.store.create_tenant("acme").await.unwrap();
    let other = f.store.create_tenant("other").await.unwrap();
    let b = batch(t.id);
    f.store.create_batch(&b).await.unwrap();
    f.store
        .append_batch_results(t.id, b.id, &chunk(0, 1, 10, 1))
        .await
        .unwrap();
    f.store
        .append_batch_results(t.id, b.id, &chunk(1, 11, 5, 0))
        .await
        .unwrap();
    let again = f
        .store
        .append_batch_results(t.id, b.id, &chunk(1, 11, 5, 0))
        .await;
    assert!(matches!(again, Err(StoreError::Conflict(_))), "{again:?}");
    // Another tenant can neither write to it nor see it.
    let foreign = f
        .store
        .append_batch_results(other.id, b.id, &chunk(2, 16, 1, 0))
        .await;
    assert!(
        matches!(foreign, Err(StoreError::NotFound(_))),
        "{foreign:?}"
    );
    assert_eq!(f.store.batch(other.id, b.id).await.unwrap(), None);
    assert!(
        f.store
            .batch_results(other.id, b.id, None, 10)
            .await
            .unwrap()
            .is_empty()
    );

    let stored = f.store.batch(t.id, b.id).await.unwrap().unwrap();
    assert_eq!(
        (stored.rows, stored.accepted, stored.rejected, stored.status),
        (15, 14, 1, BatchStatus::Running),
        "the failed appends added nothing"
    );
    let chunks = f.store.batch_results(t.id, b.id, None, 1).await.unwrap();
    assert_eq!(chunks, vec![chunk(0, 1, 10, 1)]);
    let rest = f
        .store
        .batch_results(t.id, b.id, Some(0), 10)
        .await
        .unwrap();
    assert_eq!(rest, vec![chunk(1, 11, 5, 0)]);
}

async fn a_finished_batch_takes_no_more_results(f: Fixture) {
    let t = f.store.create_tenant("acme").await.unwrap();
    let b = batch(t.id);
    f.store.create_batch(&b).await.unwrap();
    let at = t0() + chrono::Duration::minutes(1);
    f.store
        .finish_batch(
            t.id,
            b.id,
            BatchStatus::Failed,
            Some("the upload broke off"),
            at,
        )
        .await
        .unwrap();
    let stored = f.store.batch(t.id, b.id).await.unwrap().unwrap();
    assert_eq!(stored.status, BatchStatus::Failed);
    assert_eq!(stored.error.as_deref(), Some("the upload broke off"));
    assert_eq!(stored.finished_at, Some(at));
    let late = f
        .store
        .append_batch_results(t.id, b.id, &chunk(0, 1, 1, 0))
        .await;
    assert!(matches!(late, Err(StoreError::NotFound(_))), "{late:?}");
    let twice = f
        .store
        .finish_batch(t.id, b.id, BatchStatus::Complete, None, at)
        .await;
    assert!(matches!(twice, Err(StoreError::NotFound(_))), "{twice:?}");
}
