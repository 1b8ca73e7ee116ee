//! Group commit: many concurrent requests, one transaction.
//!
//! Each request hands its [`CommitBatch`] to the committer and waits. A
//! dispatcher takes a writer slot, then gathers every request already
//! waiting (up to `max_group_events`, lingering at most `linger` for more)
//! into one transaction. Each request is answered only after that
//! transaction commits: acked means durable. At most `writers` transactions
//! are in flight; while they run, new requests queue up and form the next,
//! larger group, so batching grows with load without adding latency when
//! the system is idle.

use std::sync::Arc;
use std::time::{Duration, Instant};

use aforo_store::{CommitBatch, CommitOutcome, Store, StoreError};
use tokio::sync::{Semaphore, mpsc, oneshot};

use crate::metrics::Metrics;

#[derive(Clone, Debug)]
pub struct CommitterConfig {
    /// Most events in one transaction.
    pub max_group_events: usize,
    /// How long a group waits for more requests once it has one.
    pub linger: Duration,
    /// Transactions in flight at once.
    pub writers: usize,
    /// Requests waiting for a group before senders are made to wait.
    pub queue_depth: usize,
}

impl Default for CommitterConfig {
    fn default() -> Self {
        CommitterConfig {
            max_group_events: 4096,
            linger: Duration::from_micros(500),
            writers: 4,
            queue_depth: 4096,
        }
    }
}

type Reply = oneshot::Sender<Result<Vec<CommitOutcome>, Arc<StoreError>>>;

struct Job {
    batch: CommitBatch,
    reply: Reply,
}

impl Job {
    fn size(&self) -> usize {
        self.batch.events.len() + self.batch.rejections.len()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CommitError {
    #[error("the committer has shut down")]
    Closed,
    #[error(transparent)]
    Store(Arc<StoreError>),
}

/// The handle requests commit through. Cheap to clone.
#[derive(Clone)]
pub struct Committer {
    jobs: mpsc::Sender<Job>,
}

impl Committer {
    /// Starts the dispatcher on the current runtime.
    pub fn start(store: Arc<dyn Store>, config: CommitterConfig, metrics: Arc<Metrics>) -> Self {
        let (jobs, queue) = mpsc::channel(config.queue_depth.max(1));
        tokio::spawn(dispatch(store, config, metrics, queue));
        Committer { jobs }
    }

    /// Commits `batch` as part of some group; returns once it is durable.
    pub async fn commit(&self, batch: CommitBatch) -> Result<Vec<CommitOutcome>, CommitError> {
        if batch.events.is_empty() && batch.rejections.is_empty() {
            return Ok(Vec::new());
        }
        let (reply, answer) = oneshot::channel();
        self.jobs
            .send(Job { batch, reply })
            .await
            .map_err(|_| CommitError::Closed)?;
        match answer.await {
            Ok(result) => result.map_err(CommitError::Store),
            Err(_) => Err(CommitError::Closed),
        }
    }
}

async fn dispatch(
    store: Arc<dyn Store>,
    config: CommitterConfig,
    metrics: Arc<Metrics>,
    mut queue: mpsc::Receiver<Job>,
) {
    let slots = Arc::new(Semaphore::new(config.writers.max(1)));
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let Some(first) = queue.recv().await else {
            return;
        };
        let mut size = first.size();
        let mut group = vec![first];
        let deadline = tokio::time::Instant::now() + config.linger;
        while size < config.max_group_events {
            let next = match queue.try_recv() {
                Ok(job) => job,
                Err(mpsc::error::TryRecvError::Empty) if !config.linger.is_zero() => {
                    match tokio::time::timeout_at(deadline, queue.recv()).await {
                        Ok(Some(job)) => job,
                        _ => break,
                    }
                }
                Err(_) => break,
            };
            size += next.size();
            group.push(next);
        }
        let store = store.clone();
        let metrics = metrics.clone();
        tokio::spawn(async move {
            commit_group(store.as_ref(), &metrics, group).await;
            drop(slot);
        });
    }
}

async fn commit_group(store: &dyn Store, metrics: &Metrics, mut group: Vec<Job>) {
    let started = Instant::now();
    let mut merged = CommitBatch::default();
    // How many events and rejections each request put into `merged`.
    let mut spans = Vec::with_capacity(group.len());
    for job in &mut group {
        spans.push((job.batch.events.len(), job.batch.rejections.len()));
        merged.events.append(&mut job.batch.events);
        merged.rejections.append(&mut job.batch.rejections);
    }
    let size = merged.events.len() + merged.rejections.len();
    let result = store.commit(&merged).await;
    metrics.observe_commit(size, started.elapsed(), result.is_ok());
    match result {
        Ok(outcomes) => {
            let mut rest = outcomes.into_iter();
            for (job, (events, _)) in group.into_iter().zip(spans) {
                let _ = job.reply.send(Ok(rest.by_ref().take(events).collect()));
            }
        }
        Err(err) if group.len() > 1 && !err.is_retryable() => {
            // Something in the group broke the transaction; commit each
            // request alone so one bad request cannot fail the others.
            tracing::warn!(error = %err, requests = group.len(), "group commit failed; committing requests one by one");
            let mut events = merged.events.into_iter();
            let mut rejections = merged.rejections.into_iter();
            for (job, (n_events, n_rejections)) in group.into_iter().zip(spans) {
                let alone = CommitBatch {
                    events: events.by_ref().take(n_events).collect(),
                    rejections: rejections.by_ref().take(n_rejections).collect(),
                };
                let _ = job.reply.send(store.commit(&alone).await.map_err(Arc::new));
            }
        }
        Err(err) => {
            tracing::warn!(error = %err, requests = group.len(), "commit failed");
            let err = Arc::new(err);
            for job in group {
                let _ = job.reply.send(Err(err.clone()));
            }
        }
    }
}
