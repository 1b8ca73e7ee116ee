//! One host per process, whatever roles it runs: `aforo standalone` is
//! `[ingest, billing, enrich]` on one [`Host`], `aforo ingest` is
//! `[ingest]`, `aforo enrich` is `[enrich]` with probes only.
//!
//! A [`Role`] brings its HTTP routes, its gRPC services and the tasks it
//! runs in the background; it registers its metrics in the host's one
//! [`Registry`] when it is built. The host adds what every process has, once:
//!
//! - `GET /healthz` (the process runs), `GET /readyz` (the store answers),
//!   `GET /metrics` (OpenMetrics text of the one registry, with the
//!   collectors read at scrape time, and the enrichment backlog counted in
//!   the store at that moment);
//! - `GET /openapi.json`, when the process serves an API;
//! - on gRPC: the health service (every role's services `SERVING`) and
//!   reflection v1 and v1alpha over every role's descriptors;
//! - the layers of [`crate::host`]: a span per request, a time limit (not
//!   on streaming routes, such as batch uploads) and a bound on requests in
//!   flight;
//! - one shutdown path: on the signal, both servers stop taking requests
//!   and drain those in flight, the background tasks are told to stop, and
//!   [`Host::serve`] returns once all of them have.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aforo_store::Store;
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::gauge::ConstGauge;
pub use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::server::NamedService;
use tonic::service::Routes;

use crate::host::{Limits, bounded, grpc_span, traced};

/// Told when the process stops: `stopped(stop).await` returns then.
pub type Stop = watch::Receiver<bool>;

/// Waits until `stop` says so (or its sender is gone).
pub async fn stopped(mut stop: Stop) {
    let _ = stop.wait_for(|stop| *stop).await;
}

type Task = Box<dyn FnOnce(Stop) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send>;
type AddService = Box<dyn FnOnce(Routes) -> Routes + Send>;

/// What one role brings to a process.
pub struct Role {
    name: &'static str,
    http: Router,
    streaming: Router,
    grpc: Vec<AddService>,
    grpc_services: Vec<&'static str>,
    descriptors: Vec<&'static [u8]>,
    tasks: Vec<Task>,
}

impl fmt::Debug for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Role")
            .field("name", &self.name)
            .field("grpc_services", &self.grpc_services)
            .field("tasks", &self.tasks.len())
            .finish_non_exhaustive()
    }
}

impl Role {
    pub fn new(name: &'static str) -> Role {
        Role {
            name,
            http: Router::new(),
            streaming: Router::new(),
            grpc: Vec::new(),
            grpc_services: Vec::new(),
            descriptors: Vec::new(),
            tasks: Vec::new(),
        }
    }

    /// Routes answered within the host's time limit.
    pub fn http(mut self, routes: Router) -> Role {
        self.http = self.http.merge(routes);
        self
    }

    /// Routes that may take as long as their body does (uploads): traced
    /// and bounded in number, never cut off by the time limit.
    pub fn streaming(mut self, routes: Router) -> Role {
        self.streaming = self.streaming.merge(routes);
        self
    }

    /// A gRPC service, reported `SERVING` by the health service under its
    /// name; `descriptors` is the encoded file descriptor set reflection
    /// describes it from.
    pub fn grpc<S>(mut self, service: S, descriptors: &'static [u8]) -> Role
    where
        S: tonic::codegen::Service<
                tonic::codegen::http::Request<tonic::body::Body>,
                Error = std::convert::Infallible,
            > + NamedService
            + Clone
            + Send
            + Sync
            + 'static,
        S::Response: axum::response::IntoResponse,
        S::Future: Send + 'static,
    {
        self.grpc
            .push(Box::new(move |routes: Routes| routes.add_service(service)));
        self.grpc_services.push(S::NAME);
        if !self.descriptors.contains(&descriptors) {
            self.descriptors.push(descriptors);
        }
        self
    }

    /// A task that runs beside the servers until told to stop (an
    /// enricher, the bill-run scheduler). The host waits for it on
    /// shutdown.
    pub fn task<F, Fut>(mut self, task: F) -> Role
    where
        F: FnOnce(Stop) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.tasks.push(Box::new(move |stop| Box::pin(task(stop))));
        self
    }
}

#[derive(Debug, thiserror::Error)]
pub enum HostError {
    #[error("the HTTP server failed: {0}")]
    Http(std::io::Error),
    #[error("the gRPC server failed: {0}")]
    Grpc(#[from] tonic::transport::Error),
    #[error("the reflection service cannot load the descriptors: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    #[error("a gRPC service is served, but no gRPC address was given")]
    NoGrpcListener,
    #[error("a background task of the {role} role failed: {message}")]
    Task { role: &'static str, message: String },
}

/// Where the servers of a process listen.
#[derive(Debug)]
pub struct Listeners {
    pub http: TcpListener,
    /// `None` for a process without gRPC services (the enrich role).
    pub grpc: Option<TcpListener>,
    /// Close each gRPC connection after this long, so clients reconnect
    /// and spread over the replicas there are now.
    pub grpc_max_connection_age: Option<Duration>,
}

/// One process's servers, registry and background tasks.
pub struct Host {
    registry: Registry,
    store: Arc<dyn Store>,
    backlog: Arc<Backlog>,
    roles: Vec<Role>,
    openapi: Option<utoipa::openapi::OpenApi>,
    limits: Limits,
}

impl Host {
    pub fn new(store: Arc<dyn Store>, limits: Limits) -> Host {
        let mut registry = Registry::default();
        let backlog = Arc::new(Backlog::default());
        registry.register_collector(Box::new(backlog.clone()));
        Host {
            registry,
            store,
            backlog,
            roles: Vec::new(),
            openapi: None,
            limits,
        }
    }

    /// The process's one registry, for a role to register its metrics in
    /// (under its own prefix: `registry().sub_registry_with_prefix(…)`).
    pub fn registry(&mut self) -> &mut Registry {
        &mut self.registry
    }

    pub fn add(&mut self, role: Role) {
        self.roles.push(role);
    }

    /// The document served at `/openapi.json`.
    pub fn openapi(&mut self, document: utoipa::openapi::OpenApi) {
        self.openapi = Some(document);
    }

    /// Runs every role until `shutdown` resolves, then drains: the servers
    /// finish the requests in flight, the tasks are told to stop, and this
    /// returns when all have ended.
    pub async fn serve(
        self,
        listeners: Listeners,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), HostError> {
        let (stop_tx, stop) = watch::channel(false);

        let mut http = Router::new();
        let mut streaming = Router::new();
        let mut grpc: Vec<AddService> = Vec::new();
        let mut services = Vec::new();
        let mut descriptors = vec![tonic_health::pb::FILE_DESCRIPTOR_SET];
        let mut tasks = Vec::new();
        for role in self.roles {
            http = http.merge(role.http);
            streaming = streaming.merge(role.streaming);
            grpc.extend(role.grpc);
            services.extend(role.grpc_services);
            for set in role.descriptors {
                if !descriptors.contains(&set) {
                    descriptors.push(set);
                }
            }
            for task in role.tasks {
                tasks.push((role.name, tokio::spawn(task(stop.clone()))));
            }
        }

        let probes = Router::new()
            .route("/healthz", get(|| async { "ok" }))
            .route("/readyz", get(readyz))
            .route("/metrics", get(metrics))
            .with_state(Probes {
                registry: Arc::new(self.registry),
                store: self.store,
                backlog: self.backlog,
            });
        let mut api = http.merge(probes);
        if let Some(document) = &self.openapi {
            api = api.merge(crate::openapi::route(document));
        }
        let app = traced(bounded(api, self.limits).merge(streaming));
        let http_server =
            axum::serve(listeners.http, app).with_graceful_shutdown(stopped(stop.clone()));

        let grpc_server = match (grpc.is_empty(), listeners.grpc) {
            (true, _) => None,
            (false, None) => return Err(HostError::NoGrpcListener),
            (false, Some(listener)) => {
                let routes = grpc
                    .into_iter()
                    .fold(Routes::default(), |routes, add| add(routes));
                let (reporter, health) = tonic_health::server::health_reporter();
                for service in &services {
                    reporter
                        .set_service_status(*service, tonic_health::ServingStatus::Serving)
                        .await;
                }
                let reflection = || {
                    descriptors.iter().fold(
                        tonic_reflection::server::Builder::configure(),
                        |builder, set| builder.register_encoded_file_descriptor_set(set),
                    )
                };
                let routes = routes
                    .add_service(health)
                    .add_service(reflection().build_v1()?)
                    .add_service(reflection().build_v1alpha()?);
                let mut builder = tonic::transport::Server::builder().trace_fn(grpc_span);
                if let Some(age) = listeners.grpc_max_connection_age {
                    builder = builder.max_connection_age(age);
                }
                Some(builder.add_routes(routes).serve_with_incoming_shutdown(
                    TcpListenerStream::new(listener),
                    stopped(stop.clone()),
                ))
            }
        };

        tokio::spawn(async move {
            shutdown.await;
            let _ = stop_tx.send(true);
        });
        let grpc_run = async {
            match grpc_server {
                Some(server) => server.await.map_err(HostError::from),
                None => Ok(()),
            }
        };
        let (http_result, grpc_result) = tokio::join!(
            async { http_server.await.map_err(HostError::Http) },
            grpc_run
        );
        // The servers stop only when told to; the tasks were told too.
        let mut failed = None;
        for (role, task) in tasks {
            if let Err(e) = task.await {
                tracing::error!(role, error = %e, "a background task failed");
                failed.get_or_insert(HostError::Task {
                    role,
                    message: e.to_string(),
                });
            }
        }
        http_result?;
        grpc_result?;
        failed.map_or(Ok(()), Err)
    }
}

#[derive(Clone)]
struct Probes {
    registry: Arc<Registry>,
    store: Arc<dyn Store>,
    backlog: Arc<Backlog>,
}

async fn readyz(State(probes): State<Probes>) -> (StatusCode, String) {
    match probes.store.ping().await {
        Ok(()) => (StatusCode::OK, "ok".to_owned()),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    }
}

async fn metrics(State(probes): State<Probes>) -> impl IntoResponse {
    // Counted in the store now. A store that does not answer leaves the
    // gauge out (a gap in the series) rather than reporting a made-up zero.
    let backlog = match probes.store.enrichment_backlog().await {
        Ok(events) => Some(events),
        Err(e) => {
            tracing::warn!(error = %e, "cannot count the enrichment backlog");
            None
        }
    };
    probes.backlog.set(backlog);
    let mut text = String::new();
    if let Err(e) = prometheus_client::encoding::text::encode(&mut text, &probes.registry) {
        // Only a collector can fail to encode; say so rather than answer
        // a truncated exposition.
        tracing::error!(error = %e, "cannot encode the metrics");
        return (
            StatusCode::INTERNAL_SERVER_ERROR,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            format!("cannot encode the metrics: {e}"),
        );
    }
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
}

/// The enrichment backlog: events stored and ready for enrichment but not
/// yet enriched, in every tenant, as counted at the scrape. Whether
/// enrichment keeps up with ingest is whether this stays flat.
#[derive(Debug, Default)]
struct Backlog(Mutex<Option<u64>>);

impl Backlog {
    fn set(&self, events: Option<u64>) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = events;
    }
}

impl Collector for Backlog {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
        let Some(events) = *self.0.lock().unwrap_or_else(|e| e.into_inner()) else {
            return Ok(());
        };
        let gauge = ConstGauge::new(events as i64);
        let metric = encoder.encode_descriptor(
            "aforo_enrichment_backlog_events",
            "Events stored and ready for enrichment but not yet enriched (parked events not included)",
            None,
            gauge.metric_type(),
        )?;
        gauge.encode(metric)
    }
}
