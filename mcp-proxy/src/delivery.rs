//! From the meter to ingest: the spool writer (outbox → spool, fsynced in
//! groups) and the shipper (spool → `IngestService/Ingest`, in order,
//! acknowledged records removed). Between the two the spool absorbs any
//! ingest outage.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use aforo_proto::v1 as pb;
use aforo_proto::v1::ingest_service_client::IngestServiceClient;
use prost::Message;
use tokio::sync::{Notify, mpsc, watch};
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

use crate::metrics::Metrics;
use crate::spool::{Spool, SpoolError};

/// Events taken from the outbox per spool append (one fsync).
const WRITE_GROUP: usize = 1024;
const MAX_BACKOFF: Duration = Duration::from_secs(5);
const MIN_BACKOFF: Duration = Duration::from_millis(100);

/// How long to wait before trying again: 100 ms doubling to 5 s, with
/// jitter, so that proxies that lost ingest together do not all come back
/// in step; a success starts over.
struct Retry {
    delays: backon::ExponentialBackoff,
    upcoming: Duration,
}

impl Retry {
    fn new() -> Self {
        use backon::BackoffBuilder;
        let mut delays = backon::ExponentialBuilder::default()
            .with_min_delay(MIN_BACKOFF)
            .with_max_delay(MAX_BACKOFF)
            .with_factor(2.0)
            .with_jitter()
            .without_max_times()
            .build();
        let upcoming = delays.next().unwrap_or(MAX_BACKOFF);
        Retry { delays, upcoming }
    }

    /// The wait the next failure will take.
    fn upcoming(&self) -> Duration {
        self.upcoming
    }

    /// Takes the wait, and lengthens the next.
    fn take(&mut self) -> Duration {
        let wait = self.upcoming;
        self.upcoming = self.delays.next().unwrap_or(MAX_BACKOFF);
        wait
    }
}

pub type SharedSpool = Arc<Mutex<Spool>>;

fn lock(spool: &SharedSpool) -> std::sync::MutexGuard<'_, Spool> {
    spool.lock().unwrap_or_else(|e| e.into_inner())
}

fn gauges(spool: &Spool, metrics: &Metrics) {
    metrics.spool_records.set(spool.held_records());
    metrics.spool_bytes.set(spool.held_bytes());
}

/// Writes what the meter emits into the spool until `stop`, then writes
/// what is still queued and returns.
pub async fn write_spool(
    mut outbox: mpsc::Receiver<pb::Event>,
    spool: SharedSpool,
    wake: Arc<Notify>,
    metrics: Arc<Metrics>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let first = tokio::select! {
            event = outbox.recv() => match event {
                Some(event) => event,
                None => return,
            },
            _ = stop.wait_for(|s| *s) => {
                // Everything the meter emitted before the stop is queued.
                match outbox.try_recv() {
                    Ok(event) => event,
                    Err(_) => return,
                }
            }
        };
        let mut group = vec![first.encode_to_vec()];
        while group.len() < WRITE_GROUP {
            match outbox.try_recv() {
                Ok(event) => group.push(event.encode_to_vec()),
                Err(_) => break,
            }
        }
        let count = group.len();
        let (spool_for_write, metrics_for_write) = (spool.clone(), metrics.clone());
        let appended = tokio::task::spawn_blocking(move || {
            let mut spool = lock(&spool_for_write);
            let result = spool.append(&group);
            gauges(&spool, &metrics_for_write);
            result
        })
        .await;
        match appended {
            Ok(Ok(written)) => {
                metrics.events_spooled.inc_by(written as u64);
            }
            Ok(Err(err)) => {
                let written = match &err {
                    SpoolError::Full { written, .. } => *written,
                    _ => 0,
                };
                metrics.events_spooled.inc_by(written as u64);
                metrics.events_dropped.inc_by((count - written) as u64);
                tracing::error!(
                    "SPOOL FULL OR FAILING, {} EVENTS LOST: {err}. The proxy keeps relaying MCP traffic unmetered until the spool has room: check that ingest is reachable (see the warnings about it), or raise --spool-max-bytes",
                    count - written
                );
            }
            Err(panicked) => {
                metrics.events_dropped.inc_by(count as u64);
                tracing::error!("{count} EVENTS LOST: the spool writer failed: {panicked}");
            }
        }
        wake.notify_one();
    }
}

/// `authorization: Bearer <key>` on every ingest request.
#[derive(Clone)]
pub struct Bearer(MetadataValue<Ascii>);

impl Bearer {
    pub fn new(key: &str) -> Result<Bearer, String> {
        format!("Bearer {key}")
            .parse()
            .map(Bearer)
            .map_err(|_| "the ingest API key has characters a header cannot carry".to_owned())
    }
}

impl Interceptor for Bearer {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        request
            .metadata_mut()
            .insert("authorization", self.0.clone());
        Ok(request)
    }
}

pub type IngestClient = IngestServiceClient<InterceptedService<Channel, Bearer>>;

pub struct Shipper {
    pub spool: SharedSpool,
    pub wake: Arc<Notify>,
    pub client: IngestClient,
    pub batch: usize,
    pub metrics: Arc<Metrics>,
}

impl Shipper {
    /// Ships the spool to ingest, oldest first, until `stop`; then keeps
    /// shipping until the spool is empty or `drain` has passed. What is left
    /// stays on disk for the next start.
    pub async fn run(mut self, mut stop: watch::Receiver<bool>, drain: Duration) {
        let mut backoff = Retry::new();
        let mut deadline: Option<tokio::time::Instant> = None;
        loop {
            if deadline.is_none() && *stop.borrow() {
                deadline = Some(tokio::time::Instant::now() + drain);
            }
            if deadline.is_some_and(|d| tokio::time::Instant::now() >= d) {
                let left = lock(&self.spool).held_records();
                if left > 0 {
                    tracing::warn!(
                        "stopping with {left} events in the spool: they are kept on disk and sent when the proxy starts again with the same --spool-dir"
                    );
                }
                return;
            }
            let spool = self.spool.clone();
            let batch = self.batch;
            let records = match tokio::task::spawn_blocking(move || lock(&spool).read(batch)).await
            {
                Ok(Ok(records)) => records,
                Ok(Err(err)) => {
                    tracing::error!("cannot read the spool: {err}; retrying");
                    self.pause(&mut stop, deadline, &mut backoff).await;
                    continue;
                }
                Err(panicked) => {
                    tracing::error!("the spool reader failed: {panicked}");
                    return;
                }
            };
            let Some(last) = records.last().map(|r| r.end) else {
                if deadline.is_some() {
                    return;
                }
                tokio::select! {
                    _ = self.wake.notified() => {}
                    _ = stop.wait_for(|s| *s) => {}
                }
                continue;
            };
            let mut events = Vec::with_capacity(records.len());
            for record in &records {
                match pb::Event::decode(record.payload.as_slice()) {
                    Ok(event) => events.push(event),
                    Err(err) => tracing::error!(
                        "a spool record is not an event ({err}); it is skipped, and the spool may be damaged"
                    ),
                }
            }
            let count = records.len() as u64;
            if !events.is_empty() && !self.send(events, &mut backoff).await {
                self.pause(&mut stop, deadline, &mut backoff).await;
                continue;
            }
            let (spool, metrics) = (self.spool.clone(), self.metrics.clone());
            let acked = tokio::task::spawn_blocking(move || {
                let mut spool = lock(&spool);
                let result = spool.ack(last, count);
                gauges(&spool, &metrics);
                result
            })
            .await;
            match acked {
                Ok(Ok(())) => {}
                Ok(Err(err)) => {
                    // The records go again; ingest answers DUPLICATE.
                    tracing::error!(
                        "cannot move the spool cursor: {err}; the batch will be sent again"
                    );
                    self.pause(&mut stop, deadline, &mut backoff).await;
                }
                Err(panicked) => {
                    tracing::error!("the spool cursor update failed: {panicked}");
                    return;
                }
            }
        }
    }

    /// One Ingest request; true when ingest answered for every event.
    async fn send(&mut self, events: Vec<pb::Event>, backoff: &mut Retry) -> bool {
        let count = events.len();
        let request = pb::IngestRequest {
            batch_id: uuid::Uuid::now_v7().to_string(),
            events,
        };
        match self.client.ingest(request).await {
            Ok(response) => {
                let response = response.into_inner();
                if response.results.len() != count {
                    self.metrics.ingest_failures.inc();
                    tracing::warn!(
                        "ingest answered for {} of {count} events; sending the batch again",
                        response.results.len()
                    );
                    return false;
                }
                for result in &response.results {
                    if result.status == pb::EventStatus::Rejected as i32 {
                        tracing::warn!(
                            id = %result.id, reason = %result.reason,
                            "ingest rejected an MCP event (stored there with its reason): {}",
                            result.message
                        );
                    }
                }
                self.metrics
                    .events_delivered
                    .inc_by(u64::from(response.accepted + response.duplicates));
                self.metrics
                    .events_rejected
                    .inc_by(u64::from(response.rejected));
                *backoff = Retry::new();
                true
            }
            Err(status) => {
                self.metrics.ingest_failures.inc();
                let held = lock(&self.spool).held_records();
                tracing::warn!(
                    code = ?status.code(),
                    "ingest did not take a batch of {count} events ({}); {held} events wait in the spool, retrying in {:?}",
                    status.message(),
                    backoff.upcoming()
                );
                false
            }
        }
    }

    async fn pause(
        &self,
        stop: &mut watch::Receiver<bool>,
        deadline: Option<tokio::time::Instant>,
        backoff: &mut Retry,
    ) {
        let wait = backoff.take();
        let until = tokio::time::Instant::now() + wait;
        let until = deadline.map_or(until, |d| d.min(until));
        if deadline.is_some() {
            tokio::time::sleep_until(until).await;
        } else {
            tokio::select! {
                _ = tokio::time::sleep_until(until) => {}
                _ = stop.wait_for(|s| *s) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_grow_from_the_minimum_to_the_cap_with_jitter_and_start_over() {
        let mut retry = Retry::new();
        let waits: Vec<Duration> = (0..12).map(|_| retry.take()).collect();
        // Jitter adds up to one delay: each wait is in [delay, 2 × delay].
        assert!(
            waits[0] >= MIN_BACKOFF && waits[0] <= 2 * MIN_BACKOFF,
            "{waits:?}"
        );
        assert!(waits.iter().all(|w| *w <= 2 * MAX_BACKOFF), "{waits:?}");
        assert!(waits[11] >= MAX_BACKOFF, "{waits:?}");
        let again = Retry::new().take();
        assert!(again <= 2 * MIN_BACKOFF, "{again:?}");
    }
}
