//! The ingest role: the gRPC and HTTP front doors over one pipeline and one
//! group committer, as a [`Role`] for the process's host.

use std::sync::Arc;

use aforo_api::GrpcAuth;
use aforo_api::serve::Role;
use aforo_proto::v1::ingest_service_server::IngestServiceServer;
use aforo_store::Store;
use prometheus_client::registry::Registry;

use crate::batches::{self, BatchState};
use crate::clock::Clock;
use crate::committer::Committer;
use crate::config::IngestConfig;
use crate::grpc::IngestGrpc;
use crate::metrics::Metrics;
use crate::pipeline::Ingestor;
use crate::rest::{self, RestState};
use crate::webhooks::{self, WebhookState, secrets::SecretFiles};
use aforo_store::auth::Authenticator;
use aforo_store::cache::CatalogCache;

/// The ingest role: REST, CloudEvents, batch uploads, webhooks and gRPC
/// ingest over one pipeline and one group committer, its metrics
/// registered in `registry` (`aforo_ingest_*`). Its ports and time limits
/// are the host's: `config.http_addr`, `config.grpc_addr`, `config.http`.
pub fn build(
    config: &IngestConfig,
    store: Arc<dyn Store>,
    catalog: Arc<CatalogCache>,
    clock: Arc<dyn Clock>,
    registry: &mut Registry,
) -> Role {
    let metrics = Arc::new(Metrics::register(registry));
    let committer = Committer::start(
        store.clone(),
        config.committer(store.backend()),
        metrics.clone(),
    );
    let ingestor = Arc::new(Ingestor::new(
        committer,
        catalog.clone(),
        clock.clone(),
        config.gates(),
        config.node_name(),
        metrics,
    ));
    let auth = Authenticator::new(store.clone());
    let limits = config.limits();
    let webhooks = WebhookState::new(
        ingestor.clone(),
        store.clone(),
        catalog,
        auth.clone(),
        SecretFiles::new(config.secrets_dir.clone()),
        clock.clone(),
        config.node_name(),
        config.max_body_bytes,
    );
    let batches = BatchState {
        ingestor: ingestor.clone(),
        store: store.clone(),
        auth: auth.clone(),
        clock,
        max_row_bytes: config.max_body_bytes,
        max_json_depth: config.max_json_depth,
    };
    let rest = RestState {
        ingestor: ingestor.clone(),
        auth: auth.clone(),
        store,
        limits,
    };
    let grpc = GrpcAuth::new(
        IngestServiceServer::new(IngestGrpc::new(ingestor, limits))
            .max_decoding_message_size(config.max_body_bytes),
        auth,
    );
    Role::new("ingest")
        .http(rest::router(rest).merge(webhooks::router(webhooks)))
        // An upload takes as long as its body does.
        .streaming(batches::router(batches))
        .grpc(grpc, aforo_proto::FILE_DESCRIPTOR_SET)
}
