//! The gRPC front door: `aforo.v1.IngestService`.

use std::pin::Pin;
use std::sync::Arc;

use aforo_crds::Tier;
use aforo_proto::v1 as pb;
use aforo_proto::v1::ingest_service_server::IngestService;
use aforo_store::Tenant;
use futures::{Stream, StreamExt};
use tokio::sync::{Semaphore, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::committer::CommitError;
use crate::config::RequestLimits;
use crate::decode;
use crate::pipeline::{BatchOutcome, Ingestor, Status as OutcomeStatus};

/// Batches of one stream processed at once; answers may come out of order.
const STREAM_IN_FLIGHT: usize = 8;

#[derive(Clone)]
pub struct IngestGrpc {
    ingestor: Arc<Ingestor>,
    limits: RequestLimits,
}

impl IngestGrpc {
    /// The service; it is served behind [`aforo_api::GrpcAuth`], which
    /// authenticates each call before its first message is read.
    pub fn new(ingestor: Arc<Ingestor>, limits: RequestLimits) -> Self {
        IngestGrpc { ingestor, limits }
    }

    async fn handle(
        &self,
        tenant: &Tenant,
        request: pb::IngestRequest,
    ) -> Result<pb::IngestResponse, Status> {
        if request.events.len() > self.limits.max_batch_events {
            return Err(Status::invalid_argument(format!(
                "BATCH_TOO_LARGE: the batch has {} events; the limit is {}",
                request.events.len(),
                self.limits.max_batch_events
            )));
        }
        let candidates = request.events.iter().map(decode::from_proto).collect();
        let events = &request.events;
        let outcome = self
            .ingestor
            .ingest(tenant, Tier::Sdk, candidates, &|i| {
                decode::proto_payload(&events[i])
            })
            .await
            .map_err(commit_status)?;
        Ok(to_response(request.batch_id, outcome))
    }
}

/// A commit failure: the batch was not stored, and sending it again is safe.
pub fn commit_status(err: CommitError) -> Status {
    Status::unavailable(format!(
        "the batch was not stored ({err}); retry it: events already stored will answer DUPLICATE"
    ))
}

fn to_response(batch_id: String, outcome: BatchOutcome) -> pb::IngestResponse {
    let results = outcome
        .results
        .into_iter()
        .map(|r| pb::EventResult {
            index: r.index,
            id: r.id,
            status: match r.status {
                OutcomeStatus::Accepted => pb::EventStatus::Accepted,
                OutcomeStatus::Duplicate => pb::EventStatus::Duplicate,
                OutcomeStatus::Rejected => pb::EventStatus::Rejected,
            } as i32,
            reason: r.reason.map(|x| x.as_str().to_owned()).unwrap_or_default(),
            message: r.message,
            flags: r
                .flags
                .iter()
                .map(|f| match f {
                    aforo_crds::EventFlag::Late => pb::EventFlag::Late as i32,
                    aforo_crds::EventFlag::Unmetered => pb::EventFlag::Unmetered as i32,
                    aforo_crds::EventFlag::Unattributed => pb::EventFlag::Unattributed as i32,
                })
                .collect(),
            stored_event_id: r.stored_id.to_string(),
        })
        .collect();
    pb::IngestResponse {
        batch_id,
        results,
        accepted: outcome.accepted,
        duplicates: outcome.duplicates,
        rejected: outcome.rejected,
    }
}

type ResponseStream = Pin<Box<dyn Stream<Item = Result<pb::IngestResponse, Status>> + Send>>;

#[tonic::async_trait]
impl IngestService for IngestGrpc {
    async fn ingest(
        &self,
        request: Request<pb::IngestRequest>,
    ) -> Result<Response<pb::IngestResponse>, Status> {
        let tenant = aforo_api::grpc_tenant(&request)?;
        self.handle(&tenant, request.into_inner())
            .await
            .map(Response::new)
    }

    type IngestStreamStream = ResponseStream;

    async fn ingest_stream(
        &self,
        request: Request<Streaming<pb::IngestRequest>>,
    ) -> Result<Response<Self::IngestStreamStream>, Status> {
        let tenant = Arc::new(aforo_api::grpc_tenant(&request)?);
        let mut inbound = request.into_inner();
        let (answers, outbound) = mpsc::channel(STREAM_IN_FLIGHT * 2);
        let this = self.clone();
        tokio::spawn(async move {
            let in_flight = Arc::new(Semaphore::new(STREAM_IN_FLIGHT));
            while let Some(message) = inbound.next().await {
                let batch = match message {
                    Ok(batch) => batch,
                    Err(status) => {
                        let _ = answers.send(Err(status)).await;
                        return;
                    }
                };
                let Ok(permit) = in_flight.clone().acquire_owned().await else {
                    return;
                };
                let (this, tenant, answers) = (this.clone(), tenant.clone(), answers.clone());
                tokio::spawn(async move {
                    let answer = this.handle(&tenant, batch).await;
                    let _ = answers.send(answer).await;
                    drop(permit);
                });
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(outbound))))
    }
}
