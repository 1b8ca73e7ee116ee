//! The server roles.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use std::time::Duration;

use aforo_billing::catalog::CatalogApi;
use aforo_billing::customers::BusinessData;
use aforo_billing::grpc::{CatalogGrpc, CustomerGrpc, InvoiceGrpc, UsageGrpc};
use aforo_billing::invoices::InvoiceApi;
use aforo_billing::rest::BillingState;
use aforo_billing::usage::UsageApi;
use aforo_ingest::enrich::Enricher;
use aforo_ingest::{IngestConfig, IngestServer, clock::SystemClock};
use aforo_proto::v1::catalog_service_server::CatalogServiceServer;
use aforo_proto::v1::customer_service_server::CustomerServiceServer;
use aforo_proto::v1::invoice_service_server::InvoiceServiceServer;
use aforo_proto::v1::usage_service_server::UsageServiceServer;
use aforo_store::Store;
use aforo_store::auth::Authenticator;
use aforo_store::cache::CatalogCache;
use aforo_store::context::{self, ContextCache};
use anyhow::Context;
use clap::Args;
use tokio::sync::watch;
use tonic::service::Routes;

/// Where the embedded store and the development key live.
#[derive(Args, Clone, Debug)]
pub struct StoreArgs {
    /// Folder of the embedded store and the development API key.
    #[arg(long, env = "AFORO_DATA_DIR", default_value = "aforo-data")]
    pub data_dir: PathBuf,

    /// Use this database instead of the embedded one: postgres://… or sqlite://PATH.
    #[arg(long, env = "AFORO_DATABASE_URL")]
    pub database_url: Option<String>,
}

impl StoreArgs {
    pub fn url(&self) -> String {
        self.database_url
            .clone()
            .unwrap_or_else(|| format!("sqlite://{}", self.data_dir.join("aforo.db").display()))
    }

    pub async fn open(&self) -> anyhow::Result<Arc<dyn Store>> {
        let url = self.url();
        aforo_store::open(&url)
            .await
            .with_context(|| format!("cannot open the store at {}", redact(&url)))
    }
}

/// A database URL without its password, for messages.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let credentials = &url[scheme + 3..at];
            match credentials.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

#[derive(Args, Debug)]
pub struct StandaloneArgs {
    #[command(flatten)]
    store: StoreArgs,
    /// A folder of catalog manifests, applied at start and whenever it changes.
    #[arg(long, env = "AFORO_MANIFESTS")]
    manifests: Option<PathBuf>,
    /// In-process enrichers (0 leaves events queued for `aforo enrich`).
    #[arg(long, env = "AFORO_ENRICHERS", default_value_t = 1)]
    enrichers: usize,
    /// Events per enrichment batch.
    #[arg(long, env = "AFORO_ENRICH_BATCH", default_value_t = 2000)]
    enrich_batch: u32,
    /// Redis for the enrichment context cache (default: in process).
    #[arg(long, env = "AFORO_REDIS_URL")]
    redis_url: Option<String>,
    #[command(flatten)]
    ingest: IngestConfig,
    #[command(flatten)]
    billing: crate::billing::BillingArgs,
}

#[derive(Args, Debug)]
pub struct EnrichArgs {
    /// The production store: postgres://user:password@host/db.
    #[arg(long, env = "AFORO_DATABASE_URL")]
    database_url: String,
    /// Events per batch (larger batches spread a claim's fixed costs
    /// thinner: 2000 drains ~40 % faster than 500 on the benchmark).
    #[arg(long, env = "AFORO_ENRICH_BATCH", default_value_t = 2000)]
    batch: u32,
    /// Redis for the context cache, shared with the billing role, which
    /// invalidates it. Without it each enricher caches for a few seconds only.
    #[arg(long, env = "AFORO_REDIS_URL")]
    redis_url: Option<String>,
    /// Address of /healthz, /readyz and /metrics.
    #[arg(long, env = "AFORO_ENRICH_HTTP_ADDR", default_value = "127.0.0.1:8472")]
    http_addr: std::net::SocketAddr,
    /// Enrich what is waiting, then exit (a one-off backfill): done when a
    /// claim finds nothing and the backlog is empty. Prints how many events
    /// this process enriched. A failed batch stays queued and the process
    /// exits non-zero: run it again.
    #[arg(long)]
    drain: bool,
}

/// The enrich role: claims batches from the store's queue until stopped.
pub async fn enrich(args: EnrichArgs) -> anyhow::Result<ExitCode> {
    let store = aforo_store::open(&args.database_url)
        .await
        .with_context(|| format!("cannot open the store at {}", redact(&args.database_url)))?;
    let (stop, stopped) = watch::channel(false);
    let context = Arc::new(match &args.redis_url {
        Some(url) => ContextCache::redis(url, context::DEFAULT_TTL)?,
        // Nothing invalidates an in-process cache from another process.
        None => ContextCache::in_process(Duration::from_secs(5)),
    });
    if args.drain {
        let taken = Enricher::new(store, context, args.batch)
            .drain()
            .await
            .context("enrichment failed")?;
        println!(
            "aforo enrich: drained; {taken} events taken by this process (enriched or parked)"
        );
        return Ok(ExitCode::SUCCESS);
    }
    let listener = tokio::net::TcpListener::bind(args.http_addr)
        .await
        .with_context(|| format!("cannot listen on {}", args.http_addr))?;
    let http_addr = listener.local_addr()?;
    let probes = probes(store.clone(), context.clone());
    let worker = tokio::spawn(Enricher::new(store, context, args.batch).run(stopped.clone()));
    let mut http_stopped = stopped;
    let http = tokio::spawn(async move {
        axum::serve(listener, probes)
            .with_graceful_shutdown(async move {
                let _ = http_stopped.wait_for(|s| *s).await;
            })
            .await
    });
    println!("aforo enrich ready: http=http://{http_addr}");
    shutdown_signal().await;
    let _ = stop.send(true);
    worker.await?;
    http.await??;
    Ok(ExitCode::SUCCESS)
}

/// The enrich and billing roles' probes: liveness, readiness (the store
/// answers) and the context cache's counters.
fn probes(store: Arc<dyn Store>, context: Arc<ContextCache>) -> axum::Router {
    use axum::http::{StatusCode, header};
    use axum::routing::get;
    let metrics_store = store.clone();
    axum::Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(move || {
                let store = store.clone();
                async move {
                    match store.ping().await {
                        Ok(()) => (StatusCode::OK, "ok".to_owned()),
                        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
                    }
                }
            }),
        )
        .route(
            "/metrics",
            get(move || {
                let stats = context.stats();
                let store = metrics_store.clone();
                async move {
                    let mut body = aforo_ingest::metrics::context_cache_exposition(stats);
                    // A store that does not answer leaves the gauge out
                    // (a scrape gap), rather than reporting a made-up zero.
                    match store.enrichment_backlog().await {
                        Ok(events) => body.push_str(
                            &aforo_ingest::metrics::enrichment_backlog_exposition(events),
                        ),
                        Err(e) => tracing::warn!(error = %e, "cannot count the enrichment backlog"),
                    }
                    body.push_str("# EOF\n");
                    (
                        [(
                            header::CONTENT_TYPE,
                            "application/openmetrics-text; version=1.0.0; charset=utf-8",
                        )],
                        body,
                    )
                }
            }),
        )
}

#[derive(Args, Debug)]
pub struct IngestArgs {
    /// The production store: postgres://user:password@host/db.
    #[arg(long, env = "AFORO_DATABASE_URL")]
    database_url: String,
    #[command(flatten)]
    ingest: IngestConfig,
}

const DEV_TENANT: &str = "default";
const DEV_KEY_FILE: &str = "dev-api-key";

/// On a store with no tenant: creates `default` with a development key,
/// kept in the data folder so the README's commands can read it.
async fn first_start(store: &dyn Store, data_dir: &Path) -> anyhow::Result<()> {
    if !store.list_tenants().await?.is_empty() {
        let key_file = data_dir.join(DEV_KEY_FILE);
        if key_file.exists() {
            eprintln!("aforo: development API key in {}", key_file.display());
        }
        return Ok(());
    }
    let tenant = store.create_tenant(DEV_TENANT).await?;
    let key = aforo_store::auth::create_key(store, &tenant, "development").await?;
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("cannot create {}", data_dir.display()))?;
    let key_file = data_dir.join(DEV_KEY_FILE);
    write_secret(&key_file, &key.plaintext)?;
    eprintln!(
        "aforo: created tenant {DEV_TENANT:?} with a development API key (also in {}):\n\n    {}\n",
        key_file.display(),
        key.plaintext
    );
    Ok(())
}

fn write_secret(path: &Path, secret: &str) -> anyhow::Result<()> {
    use std::io::Write;
    #[cfg(unix)]
    use std::os::unix::fs::OpenOptionsExt;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    options.mode(0o600);
    let mut file = options
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    writeln!(file, "{secret}")?;
    Ok(())
}

pub(crate) async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = terminate => {},
    }
    tracing::info!("shutting down: draining in-flight requests");
}

/// How long a role trusts its cached catalog before asking the store again.
const CATALOG_TTL: Duration = Duration::from_secs(5);

async fn serve(
    role: &str,
    server: IngestServer,
    backend: &str,
    stop: watch::Sender<bool>,
) -> anyhow::Result<ExitCode> {
    // One line on stdout when ready: scripts and tests wait for it.
    println!(
        "aforo {role} ready: http=http://{} grpc={} store={backend}",
        server.http_addr(),
        server.grpc_addr()
    );
    server
        .run(async move {
            shutdown_signal().await;
            let _ = stop.send(true);
        })
        .await?;
    Ok(ExitCode::SUCCESS)
}

pub async fn standalone(mut args: StandaloneArgs) -> anyhow::Result<ExitCode> {
    if args.ingest.secrets_dir.is_none() {
        args.ingest.secrets_dir = Some(args.store.data_dir.join("secrets"));
    }
    let store = args.store.open().await?;
    first_start(store.as_ref(), &args.store.data_dir).await?;
    let cache = Arc::new(CatalogCache::new(store.clone(), CATALOG_TTL));
    let context = Arc::new(match &args.redis_url {
        Some(url) => ContextCache::redis(url, context::DEFAULT_TTL)?,
        None => ContextCache::in_process(context::DEFAULT_TTL),
    });
    let catalog = CatalogApi::new(store.clone(), cache.clone(), context.clone());
    if let Some(dir) = &args.manifests {
        let tenant = store.tenant_by_name(DEV_TENANT).await?.with_context(|| {
            format!("--manifests applies to tenant {DEV_TENANT:?}, which does not exist")
        })?;
        let outcome = crate::manifests::apply(&catalog, tenant.id, dir).await?;
        eprintln!("aforo: {outcome}");
        crate::manifests::watch(catalog.clone(), tenant.id, dir.clone());
    }
    let backend = store.backend();
    let billing = BillingServices::new(store.clone(), catalog, context.clone(), &args.billing)?;
    let invoices = billing.invoices.clone();
    let (billing_http, billing_grpc) = billing.routes();
    let enrich_store = store.clone();
    let server = IngestServer::bind(&args.ingest, store, cache, Arc::new(SystemClock))
        .await?
        .extend(billing_http, billing_grpc, aforo_billing::rest::openapi());
    if args.enrichers > 0 {
        server.metrics().watch_context_cache(context.clone());
    }
    let (stop, stopped) = watch::channel(false);
    if args.billing.bill_every_secs > 0 {
        tokio::spawn(invoices.schedule(
            Duration::from_secs(args.billing.bill_every_secs),
            stopped.clone(),
        ));
    }
    if args.enrichers > 0 {
        for _ in 0..args.enrichers {
            tokio::spawn(
                Enricher::new(enrich_store.clone(), context.clone(), args.enrich_batch)
                    .run(stopped.clone()),
            );
        }
    }
    serve("standalone", server, backend, stop).await
}

/// The billing role's APIs over one store: catalog, customers and
/// subscriptions, usage, invoices (REST and gRPC), and the bill-run
/// scheduler's invoice API.
struct BillingServices {
    store: Arc<dyn Store>,
    catalog: CatalogApi,
    context: Arc<ContextCache>,
    auth: Authenticator,
    invoices: InvoiceApi,
}

impl BillingServices {
    fn new(
        store: Arc<dyn Store>,
        catalog: CatalogApi,
        context: Arc<ContextCache>,
        billing: &crate::billing::BillingArgs,
    ) -> anyhow::Result<BillingServices> {
        let invoices = InvoiceApi::new(
            store.clone(),
            billing.config()?,
            chrono::Duration::seconds(billing.bill_settle_delay_secs as i64),
        );
        Ok(BillingServices {
            auth: Authenticator::new(store.clone()),
            store,
            catalog,
            context,
            invoices,
        })
    }

    fn routes(self) -> (axum::Router, Routes) {
        let store = self.store;
        let business = BusinessData::new(store.clone(), self.catalog.clone(), self.context.clone());
        let http = aforo_billing::rest::router(BillingState {
            catalog: self.catalog.clone(),
            business: business.clone(),
            usage: UsageApi::new(store.clone(), self.context.clone()),
            auth: self.auth.clone(),
            invoices: self.invoices.clone(),
        });
        let grpc = Routes::new(CatalogServiceServer::new(CatalogGrpc::new(
            self.catalog,
            self.auth.clone(),
        )))
        .add_service(CustomerServiceServer::new(CustomerGrpc::new(
            business,
            self.auth.clone(),
        )))
        .add_service(UsageServiceServer::new(UsageGrpc::new(
            UsageApi::new(store.clone(), self.context.clone()),
            store,
            self.auth.clone(),
        )))
        .add_service(InvoiceServiceServer::new(InvoiceGrpc::new(
            self.invoices,
            self.auth,
        )));
        (http, grpc)
    }
}

#[derive(Args, Debug)]
pub struct BillingRoleArgs {
    /// The production store: postgres://user:password@host/db (or sqlite://PATH).
    #[arg(long, env = "AFORO_DATABASE_URL")]
    database_url: String,
    /// Redis for the enrichment context cache, which catalog and
    /// subscription changes invalidate (shared with the enrich role).
    #[arg(long, env = "AFORO_REDIS_URL")]
    redis_url: Option<String>,
    /// Address of the HTTP API (catalog, customers, usage, invoices, health, metrics).
    #[arg(long, env = "AFORO_HTTP_ADDR", default_value = "127.0.0.1:8470")]
    http_addr: std::net::SocketAddr,
    /// Address of the gRPC API.
    #[arg(long, env = "AFORO_GRPC_ADDR", default_value = "127.0.0.1:8471")]
    grpc_addr: std::net::SocketAddr,
    /// Close each gRPC connection after this long (after a grace period for
    /// calls in flight), so that clients reconnect and spread over the
    /// replicas there are now, e.g. `5m`. Default: connections live on.
    #[arg(long, env = "AFORO_GRPC_MAX_CONNECTION_AGE", value_parser = aforo_crds::duration::parse)]
    grpc_max_connection_age: Option<Duration>,
    #[command(flatten)]
    billing: crate::billing::BillingArgs,
    #[command(flatten)]
    http: aforo_ingest::config::HttpLimitsArgs,
}

/// The billing role: the catalog, customers, usage and invoice APIs (REST
/// and gRPC) and the bill-run scheduler; no front doors, no enrichment.
pub async fn billing(args: BillingRoleArgs) -> anyhow::Result<ExitCode> {
    use tokio_stream::wrappers::TcpListenerStream;

    let store = aforo_store::open(&args.database_url)
        .await
        .with_context(|| format!("cannot open the store at {}", redact(&args.database_url)))?;
    let cache = Arc::new(CatalogCache::new(store.clone(), CATALOG_TTL));
    let context = Arc::new(match &args.redis_url {
        Some(url) => ContextCache::redis(url, context::DEFAULT_TTL)?,
        // Nothing invalidates an in-process cache of another process.
        None => ContextCache::in_process(Duration::from_secs(5)),
    });
    let catalog = CatalogApi::new(store.clone(), cache, context.clone());
    let services = BillingServices::new(store.clone(), catalog, context.clone(), &args.billing)?;
    let invoices = services.invoices.clone();
    let (billing_http, billing_grpc) = services.routes();

    let http_listener = tokio::net::TcpListener::bind(args.http_addr)
        .await
        .with_context(|| format!("cannot listen on {}", args.http_addr))?;
    let grpc_listener = tokio::net::TcpListener::bind(args.grpc_addr)
        .await
        .with_context(|| format!("cannot listen on {}", args.grpc_addr))?;
    let http_addr = http_listener.local_addr()?;
    let grpc_addr = grpc_listener.local_addr()?;

    let (stop, stopped) = watch::channel(false);
    if args.billing.bill_every_secs > 0 {
        tokio::spawn(invoices.schedule(
            Duration::from_secs(args.billing.bill_every_secs),
            stopped.clone(),
        ));
    }
    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    health_reporter
        .set_serving::<CatalogServiceServer<CatalogGrpc>>()
        .await;
    // Both reflection versions, as the ingest role serves: grpcurl and
    // older clients still ask v1alpha.
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(aforo_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let routes = billing_grpc
        .add_service(health_service)
        .add_service(reflection().build_v1()?)
        .add_service(reflection().build_v1alpha()?);
    let mut builder = tonic::transport::Server::builder().trace_fn(aforo_api::host::grpc_span);
    if let Some(age) = args.grpc_max_connection_age {
        builder = builder.max_connection_age(age);
    }
    let mut grpc_stopped = stopped.clone();
    let grpc = tokio::spawn(builder.add_routes(routes).serve_with_incoming_shutdown(
        TcpListenerStream::new(grpc_listener),
        async move {
            let _ = grpc_stopped.wait_for(|s| *s).await;
        },
    ));
    let app = aforo_api::host::traced(aforo_api::host::bounded(
        billing_http
            .merge(probes(store.clone(), context))
            .merge(aforo_api::openapi::route(&aforo_billing::rest::document())),
        args.http.limits(),
    ));
    let mut http_stopped = stopped;
    let http = tokio::spawn(async move {
        axum::serve(http_listener, app)
            .with_graceful_shutdown(async move {
                let _ = http_stopped.wait_for(|s| *s).await;
            })
            .await
    });
    println!(
        "aforo billing ready: http=http://{http_addr} grpc={grpc_addr} store={}",
        store.backend()
    );
    shutdown_signal().await;
    let _ = stop.send(true);
    grpc.await??;
    http.await??;
    Ok(ExitCode::SUCCESS)
}

pub async fn ingest(args: IngestArgs) -> anyhow::Result<ExitCode> {
    let store = aforo_store::open(&args.database_url)
        .await
        .with_context(|| format!("cannot open the store at {}", redact(&args.database_url)))?;
    let cache = Arc::new(CatalogCache::new(store.clone(), CATALOG_TTL));
    let backend = store.backend();
    let server = IngestServer::bind(&args.ingest, store, cache, Arc::new(SystemClock)).await?;
    let (stop, _) = watch::channel(false);
    serve("ingest", server, backend, stop).await
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn passwords_never_reach_messages() {
        assert_eq!(
            redact("postgres://aforo:s3cret@db:5432/aforo"),
            "postgres://aforo:***@db:5432/aforo"
        );
        assert_eq!(redact("postgres://db/aforo"), "postgres://db/aforo");
        assert_eq!(
            redact("sqlite://aforo-data/aforo.db"),
            "sqlite://aforo-data/aforo.db"
        );
    }
}
