//! Binds and runs the ingest role: the gRPC and HTTP front doors over one
//! pipeline and one group committer.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use aforo_proto::v1::ingest_service_server::IngestServiceServer;
use aforo_store::Store;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;

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

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("the HTTP server failed: {0}")]
    Http(std::io::Error),
    #[error("the gRPC server failed: {0}")]
    Grpc(#[from] tonic::transport::Error),
    #[error("the reflection service cannot load the descriptors: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
}

/// The ingest role, bound to its ports and ready to run.
pub struct IngestServer {
    http: TcpListener,
    grpc: TcpListener,
    rest: RestState,
    webhooks: WebhookState,
    batches: BatchState,
    grpc_service: IngestGrpc,
    max_body_bytes: usize,
    max_connection_age: Option<std::time::Duration>,
    extra_http: axum::Router,
    extra_grpc: tonic::service::Routes,
    /// Operations of the routes another role added (standalone).
    extra_openapi: Option<utoipa::openapi::OpenApi>,
    http_limits: aforo_api::host::Limits,
}

impl IngestServer {
    pub async fn bind(
        config: &IngestConfig,
        store: Arc<dyn Store>,
        catalog: Arc<CatalogCache>,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, ServeError> {
        let listen = |addr: SocketAddr| async move {
            TcpListener::bind(addr)
                .await
                .map_err(|source| ServeError::Bind { addr, source })
        };
        let http = listen(config.http_addr).await?;
        let grpc = listen(config.grpc_addr).await?;
        let metrics = Arc::new(Metrics::new());
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
            clock: clock.clone(),
            max_row_bytes: config.max_body_bytes,
            max_json_depth: config.max_json_depth,
        };
        Ok(IngestServer {
            webhooks,
            batches,
            http,
            grpc,
            rest: RestState {
                ingestor: ingestor.clone(),
                auth: auth.clone(),
                store,
                limits,
            },
            grpc_service: IngestGrpc::new(ingestor, auth, limits),
            max_body_bytes: config.max_body_bytes,
            max_connection_age: config.grpc_max_connection_age,
            extra_http: axum::Router::new(),
            extra_grpc: tonic::service::Routes::default(),
            extra_openapi: None,
            http_limits: config.http.limits(),
        })
    }

    /// The metrics of this process's ingest pipeline.
    pub fn metrics(&self) -> &std::sync::Arc<Metrics> {
        self.rest.ingestor.metrics()
    }

    /// Serves another role's HTTP routes and gRPC services on the same
    /// ports (how `aforo standalone` runs every role in one process), and
    /// their operations in the one `/openapi.json`.
    pub fn extend(
        mut self,
        http: axum::Router,
        grpc: tonic::service::Routes,
        openapi: utoipa::openapi::OpenApi,
    ) -> Self {
        self.extra_http = self.extra_http.merge(http);
        self.extra_grpc = grpc;
        self.extra_openapi = Some(openapi);
        self
    }

    /// The document this server answers at `/openapi.json`.
    pub fn document(&self) -> utoipa::openapi::OpenApi {
        match &self.extra_openapi {
            None => crate::document(),
            Some(extra) => crate::standalone_document(extra.clone()),
        }
    }

    pub fn http_addr(&self) -> SocketAddr {
        self.http
            .local_addr()
            .unwrap_or_else(|_| ([0, 0, 0, 0], 0).into())
    }

    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc
            .local_addr()
            .unwrap_or_else(|_| ([0, 0, 0, 0], 0).into())
    }

    /// Serves until `shutdown` resolves, then drains in-flight requests.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServeError> {
        let openapi = aforo_api::openapi::route(&self.document());
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            shutdown.await;
            let _ = stop_tx.send(true);
        });
        let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|stop| *stop).await;
        };

        let (health_reporter, health_service) = tonic_health::server::health_reporter();
        health_reporter
            .set_serving::<IngestServiceServer<IngestGrpc>>()
            .await;
        let reflection_v1 = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(aforo_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1()?;
        let reflection_v1alpha = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(aforo_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1alpha()?;
        let ingest = IngestServiceServer::new(self.grpc_service)
            .max_decoding_message_size(self.max_body_bytes);
        let routes = self
            .extra_grpc
            .add_service(health_service)
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha)
            .add_service(ingest);
        let mut builder = tonic::transport::Server::builder().trace_fn(aforo_api::host::grpc_span);
        if let Some(age) = self.max_connection_age {
            builder = builder.max_connection_age(age);
        }
        let grpc = builder.add_routes(routes).serve_with_incoming_shutdown(
            TcpListenerStream::new(self.grpc),
            stopped(stop_rx.clone()),
        );

        // Every route is traced; all but the streamed batch uploads are
        // bounded in time.
        let bounded = rest::router(self.rest)
            .merge(openapi)
            .merge(webhooks::router(self.webhooks))
            .merge(self.extra_http);
        let app = aforo_api::host::traced(
            aforo_api::host::bounded(bounded, self.http_limits)
                .merge(batches::router(self.batches)),
        );
        let http = axum::serve(self.http, app).with_graceful_shutdown(stopped(stop_rx));

        let (grpc, http) = tokio::join!(grpc, async { http.await.map_err(ServeError::Http) });
        grpc?;
        http
    }
}
