//! The host of a process: the probes every process answers, one registry
//! read at scrape time, and one shutdown that waits for the roles' tasks.

use std::time::Duration;

use aforo_api::host::Limits;
use aforo_api::serve::{Host, Listeners, Role, stopped};
use axum::Router;
use axum::routing::get;
use prometheus_client::metrics::counter::Counter;
use tokio::sync::oneshot;

async fn get_text(url: String) -> (u16, String) {
    let response = reqwest::get(url).await.expect("an answer");
    let status = response.status().as_u16();
    (status, response.text().await.expect("a body"))
}

#[tokio::test]
async fn a_host_serves_its_roles_probes_and_metrics_and_stops_after_its_tasks() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("aforo.db").display());
    let store = aforo_store::open(&url).await.expect("the store opens");
    let mut host = Host::new(store, Limits::default());

    // A role's metric, registered under its own prefix in the one registry.
    let things = Counter::<u64>::default();
    host.registry()
        .sub_registry_with_prefix("aforo_test")
        .register("things", "Things done", things.clone());
    things.inc_by(3);

    // A task that takes a while to stop: the host must wait for it.
    let (ended_tx, mut ended) = oneshot::channel();
    host.add(
        Role::new("test")
            .http(Router::new().route("/v1/ping", get(|| async { "pong" })))
            .task(move |stop| async move {
                stopped(stop).await;
                tokio::time::sleep(Duration::from_millis(200)).await;
                let _ = ended_tx.send(());
            }),
    );

    let http = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", http.local_addr().unwrap());
    let (shutdown, signal) = oneshot::channel::<()>();
    let serving = tokio::spawn(host.serve(
        Listeners {
            http,
            grpc: None,
            grpc_max_connection_age: None,
        },
        async move {
            let _ = signal.await;
        },
    ));

    assert_eq!(
        get_text(format!("{base}/healthz")).await,
        (200, "ok".into())
    );
    assert_eq!(get_text(format!("{base}/readyz")).await, (200, "ok".into()));
    assert_eq!(
        get_text(format!("{base}/v1/ping")).await,
        (200, "pong".into())
    );
    assert_eq!(get_text(format!("{base}/v1/nothing")).await.0, 404);
    let (status, metrics) = get_text(format!("{base}/metrics")).await;
    assert_eq!(status, 200);
    assert!(
        metrics.contains("\naforo_test_things_total 3\n"),
        "{metrics}"
    );
    // Counted in the store at the scrape: an empty store has none waiting.
    assert!(
        metrics.contains("\naforo_enrichment_backlog_events 0\n"),
        "{metrics}"
    );
    assert!(metrics.ends_with("# EOF\n"), "{metrics}");
    assert_eq!(
        metrics.matches("# EOF").count(),
        1,
        "one exposition: {metrics}"
    );

    shutdown.send(()).unwrap();
    serving
        .await
        .expect("the host's task")
        .expect("the host stops cleanly");
    assert!(
        ended.try_recv().is_ok(),
        "serve returned only after the role's task had ended"
    );
}
