//! Acked means durable: SIGKILL the server in the middle of a load, restart
//! it, resend everything with the same ids, and find every event exactly
//! once, including every event acknowledged before the kill.
//!
//! Dates: relative to now; nothing depends on a period.

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use aforo_proto::v1 as pb;
use chrono::Utc;
use common::{Backend, Server, proto_event};
use tokio::sync::Notify;

const WRITERS: usize = 4;
const BATCHES_PER_WRITER: usize = 40;
const BATCH: usize = 50;
/// Kill once this many events were acknowledged.
const KILL_AFTER_ACKS: usize = 1500;

fn all_batches() -> Vec<Vec<Vec<pb::Event>>> {
    let now = Utc::now();
    (0..WRITERS)
        .map(|w| {
            (0..BATCHES_PER_WRITER)
                .map(|b| {
                    (0..BATCH)
                        .map(|i| proto_event(&format!("w{w}-b{b}-e{i}"), now))
                        .collect()
                })
                .collect()
        })
        .collect()
}

async fn survives_sigkill(backend: Backend) {
    let mut server = Server::start(backend).await;
    let batches = all_batches();
    let total = WRITERS * BATCHES_PER_WRITER * BATCH;
    let acked: Arc<Mutex<HashSet<String>>> = Arc::default();
    let enough = Arc::new(Notify::new());

    let mut writers = Vec::new();
    for writer_batches in batches.clone() {
        let (acked, enough) = (acked.clone(), enough.clone());
        let mut client = server.grpc_client().await;
        let key = server.key.clone();
        writers.push(tokio::spawn(async move {
            for batch in writer_batches {
                let mut request = tonic::Request::new(pb::IngestRequest {
                    batch_id: String::new(),
                    events: batch.clone(),
                });
                request
                    .metadata_mut()
                    .insert("authorization", format!("Bearer {key}").parse().unwrap());
                match client.ingest(request).await {
                    Ok(answer) => {
                        let answer = answer.into_inner();
                        assert_eq!(answer.accepted as usize, batch.len());
                        let mut acked = acked.lock().unwrap();
                        acked.extend(batch.iter().map(|e| e.id.clone()));
                        if acked.len() >= KILL_AFTER_ACKS {
                            enough.notify_one();
                        }
                    }
                    // The server died under us; this batch was never acked.
                    Err(_) => return,
                }
            }
        }));
    }
    enough.notified().await;
    server.kill9().await;
    for writer in writers {
        writer.await.unwrap();
    }
    let acked_before_kill = acked.lock().unwrap().clone();
    assert!(acked_before_kill.len() >= KILL_AFTER_ACKS);
    assert!(
        acked_before_kill.len() < total,
        "the kill came after the whole load; make the load longer"
    );

    server.restart().await;
    let mut client = server.grpc_client().await;
    let mut statuses: HashMap<String, i32> = HashMap::new();
    for writer_batches in &batches {
        for batch in writer_batches {
            let answer = server
                .grpc_ingest(&mut client, batch.clone())
                .await
                .unwrap();
            for result in answer.results {
                statuses.insert(result.id, result.status);
            }
        }
    }
    // Every event acked before the kill is already there: a retry is DUPLICATE.
    for id in &acked_before_kill {
        assert_eq!(
            statuses[id],
            pb::EventStatus::Duplicate as i32,
            "{id} was acked before the kill but not stored"
        );
    }

    let stored = server.all_events().await;
    let mut seen = HashSet::new();
    for event in &stored {
        let id = event["id"].as_str().unwrap().to_owned();
        assert!(seen.insert(id.clone()), "{id} is stored twice");
    }
    assert_eq!(seen.len(), total, "every event is stored exactly once");
    assert!(acked_before_kill.is_subset(&seen));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acked_events_survive_sigkill_on_sqlite() {
    survives_sigkill(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acked_events_survive_sigkill_on_postgres() {
    survives_sigkill(Backend::Postgres).await;
}
