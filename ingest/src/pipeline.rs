//! The ingest pipeline: candidates in, per-event results out.
//!
//! `Ingestor::ingest` runs the gates over every candidate of a batch, seals
//! each admitted event with its validation hash, and hands the batch (the
//! admitted events and the rejections both) to the group committer. The
//! answer is assembled only after the commit: nothing is acknowledged before
//! it is durable, and every event, rejected or not, gets its own result.

use std::sync::Arc;
use std::time::Instant;

use aforo_crds::{EventFlag, EventFlags, GateResults, RejectReason, Tier, validation_hash};
use aforo_store::cache::CatalogCache;
use aforo_store::{CommitBatch, CommitOutcome, NewEvent, NewRejection, Tenant};
use tracing::Instrument;
use uuid::Uuid;

use crate::clock::Clock;
use crate::committer::{CommitError, Committer};
use crate::gates::{self, EventCandidate, GateConfig, GateDecision};
use crate::metrics::Metrics;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    Accepted,
    Duplicate,
    Rejected,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Accepted => "ACCEPTED",
            Status::Duplicate => "DUPLICATE",
            Status::Rejected => "REJECTED",
        }
    }
}

/// The answer for one event.
#[derive(Clone, Debug, PartialEq)]
pub struct EventOutcome {
    pub index: u32,
    /// The client's id, as sent (empty when missing).
    pub id: String,
    pub status: Status,
    pub reason: Option<RejectReason>,
    pub message: String,
    pub flags: EventFlags,
    /// The stored event (for a duplicate: the original), or the stored rejection.
    pub stored_id: Uuid,
}

#[derive(Clone, Debug, Default)]
pub struct BatchOutcome {
    pub results: Vec<EventOutcome>,
    pub accepted: u32,
    pub duplicates: u32,
    pub rejected: u32,
}

pub struct Ingestor {
    committer: Committer,
    catalog: Arc<CatalogCache>,
    clock: Arc<dyn Clock>,
    gates: GateConfig,
    node: String,
    metrics: Arc<Metrics>,
}

/// What is known of each candidate before the commit.
enum Slot {
    /// Admitted; its fate is the commit outcome at `outcome`.
    Event {
        outcome: usize,
        stored_id: Uuid,
        flags: EventFlags,
    },
    Rejected {
        reason: RejectReason,
        message: String,
        stored_id: Uuid,
    },
}

impl Ingestor {
    pub fn new(
        committer: Committer,
        catalog: Arc<CatalogCache>,
        clock: Arc<dyn Clock>,
        gates: GateConfig,
        node: String,
        metrics: Arc<Metrics>,
    ) -> Self {
        Ingestor {
            committer,
            catalog,
            clock,
            gates,
            node,
            metrics,
        }
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Gates, seals and durably commits one batch of `tenant`'s events.
    /// `payload_of(i)` renders the i-th event as received; it is called only
    /// for the events that are rejected, to store them with their rejection.
    #[tracing::instrument(name = "ingest", skip_all,
        fields(tenant = %tenant.name, front_door = front_door.as_str(), events = candidates.len()))]
    pub async fn ingest(
        &self,
        tenant: &Tenant,
        front_door: Tier,
        candidates: Vec<EventCandidate>,
        payload_of: &(dyn Fn(usize) -> String + Send + Sync),
    ) -> Result<BatchOutcome, CommitError> {
        let started = Instant::now();
        let received_at = self.clock.now();
        let catalog = self
            .catalog
            .latest(tenant.id)
            .await
            .map_err(|e| CommitError::Store(Arc::new(e)))?;
        let snapshot = catalog.as_deref().map(|c| &c.snapshot);
        // Enrichment continues this request's trace, when it is traced.
        let trace_parent = aforo_api::host::current_traceparent();
        let mut batch = CommitBatch::default();
        let mut slots = Vec::with_capacity(candidates.len());
        let mut ids = Vec::with_capacity(candidates.len());
        for (position, candidate) in candidates.into_iter().enumerate() {
            ids.push(candidate.id.clone().unwrap_or_default());
            match gates::evaluate(&candidate, front_door, &self.gates, snapshot, received_at) {
                GateDecision::Admit(admitted) => {
                    let stored_id = Uuid::now_v7();
                    let gate_results = GateResults::accepted(admitted.late);
                    let hash = validation_hash(
                        &tenant.hmac_key,
                        &tenant.name,
                        &stored_id.to_string(),
                        &admitted.event,
                        &admitted.properties_json,
                        &gate_results,
                    );
                    let mut flags = EventFlags::default();
                    if admitted.late {
                        flags = flags.with(EventFlag::Late);
                    }
                    if admitted.unmetered {
                        flags = flags.with(EventFlag::Unmetered);
                    }
                    slots.push(Slot::Event {
                        outcome: batch.events.len(),
                        stored_id,
                        flags,
                    });
                    batch.events.push(NewEvent {
                        tenant: tenant.id,
                        stored_id,
                        dedup_key: admitted.dedup_key,
                        event: admitted.event,
                        properties_json: admitted.properties_json,
                        flags,
                        gates: gate_results,
                        validation_hash: hash,
                        received_at,
                        node: self.node.clone(),
                        trace_parent: trace_parent.clone(),
                    });
                }
                GateDecision::Reject(rejected) => {
                    let rejection_id = Uuid::now_v7();
                    slots.push(Slot::Rejected {
                        reason: rejected.reason,
                        message: rejected.message.clone(),
                        stored_id: rejection_id,
                    });
                    let tier = match candidate.tier {
                        Some(Ok(tier)) => tier,
                        _ => front_door,
                    };
                    batch.rejections.push(NewRejection {
                        tenant: tenant.id,
                        stored_id: rejection_id,
                        event_id: candidate.id,
                        source: candidate.source,
                        event_type: candidate.event_type,
                        customer: candidate.customer,
                        reason: rejected.reason.as_str().to_owned(),
                        message: rejected.message,
                        gates: GateResults::rejected(rejected.reason),
                        payload: payload_of(position),
                        tier,
                        tier_detail: candidate.tier_detail.unwrap_or_default(),
                        received_at,
                        node: self.node.clone(),
                    });
                }
            }
        }

        let commit = tracing::info_span!(
            "commit",
            events = batch.events.len(),
            rejections = batch.rejections.len()
        );
        let outcomes = self.committer.commit(batch).instrument(commit).await?;

        let mut answer = BatchOutcome::default();
        for (index, (slot, id)) in slots.into_iter().zip(ids).enumerate() {
            let index = index as u32;
            let (status, reason, message, flags, stored_id) = match slot {
                Slot::Event {
                    outcome,
                    stored_id,
                    flags,
                } => match outcomes[outcome] {
                    CommitOutcome::Inserted => {
                        (Status::Accepted, None, String::new(), flags, stored_id)
                    }
                    CommitOutcome::Duplicate { original } => (
                        Status::Duplicate,
                        None,
                        String::new(),
                        EventFlags::default(),
                        original,
                    ),
                },
                Slot::Rejected {
                    reason,
                    message,
                    stored_id,
                } => (
                    Status::Rejected,
                    Some(reason),
                    message,
                    EventFlags::default(),
                    stored_id,
                ),
            };
            let result = EventOutcome {
                index,
                id,
                status,
                reason,
                message,
                flags,
                stored_id,
            };
            match result.status {
                Status::Accepted => answer.accepted += 1,
                Status::Duplicate => answer.duplicates += 1,
                Status::Rejected => answer.rejected += 1,
            }
            answer.results.push(result);
        }
        self.metrics.count_batch(&answer);
        self.metrics
            .observe_request(front_door.as_str(), answer.results.len(), started.elapsed());
        Ok(answer)
    }
}
