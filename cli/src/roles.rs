//! The server roles.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use std::time::Duration;

use aforo_api::GrpcAuth;
use aforo_api::host::Limits;
use aforo_api::serve::{Host, Listeners, Role};
use aforo_billing::catalog::CatalogApi;
use aforo_billing::customers::BusinessData;
use aforo_billing::grpc::{CatalogGrpc, CustomerGrpc, InvoiceGrpc, UsageGrpc};
use aforo_billing::invoices::InvoiceApi;
use aforo_billing::rest::BillingState;
use aforo_billing::usage::UsageApi;
use aforo_ingest::enrich::Enricher;
use aforo_ingest::metrics::ContextCacheLookups;
use aforo_ingest::{IngestConfig, clock::SystemClock};
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
    /// Redis for the context cache, shared by every enricher. Without it each
    /// enricher caches in process; either way the cache follows the store's
    /// changes (PostgreSQL LISTEN/NOTIFY).
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
    let context = context_cache(store.as_ref(), args.redis_url.as_deref())?;
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
    let http = bind(args.http_addr).await?;
    let http_addr = http.local_addr()?;
    let mut host = Host::new(store.clone(), Limits::default());
    ContextCacheLookups::register(host.registry(), context.clone());
    host.add(enrich_role(store, context, 1, args.batch));
    println!("aforo enrich ready: http=http://{http_addr}");
    host.serve(
        Listeners {
            http,
            grpc: None,
            grpc_max_connection_age: None,
        },
        shutdown_signal(),
    )
    .await?;
    Ok(ExitCode::SUCCESS)
}

/// `enrichers` enrichers claiming batches of `batch` events.
fn enrich_role(
    store: Arc<dyn Store>,
    context: Arc<ContextCache>,
    enrichers: usize,
    batch: u32,
) -> Role {
    (0..enrichers).fold(Role::new("enrich"), |role, _| {
        let enricher = Enricher::new(store.clone(), context.clone(), batch);
        role.task(move |stop| enricher.run(stop))
    })
}

async fn bind(addr: std::net::SocketAddr) -> anyhow::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))
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

/// How long a cache may hold what another process changed, unseen. The
/// caches follow the store's changes: this process's at once, and on
/// PostgreSQL the other processes' too (LISTEN and NOTIFY), so the TTL only
/// bounds a missed notice. An SQLite file has no such channel: a role on
/// SQLite beside another process on the same file sees its changes within
/// seconds. `aforo standalone` owns its file.
fn shared_ttl(store: &dyn Store, long: Duration) -> Duration {
    match store.backend() {
        "postgres" => long,
        _ => Duration::from_secs(5),
    }
}

/// The longest a catalog cache holds the version in force.
const CATALOG_TTL: Duration = Duration::from_secs(300);

fn catalog_ttl(store: &dyn Store) -> Duration {
    shared_ttl(store, CATALOG_TTL)
}

/// The enrichment context cache: Redis when given (shared by every
/// enricher), else in process; following the store's changes either way.
fn context_cache(store: &dyn Store, redis_url: Option<&str>) -> anyhow::Result<Arc<ContextCache>> {
    in_process_or_redis(store, redis_url, shared_ttl(store, context::DEFAULT_TTL))
}

fn in_process_or_redis(
    store: &dyn Store,
    redis_url: Option<&str>,
    ttl: Duration,
) -> anyhow::Result<Arc<ContextCache>> {
    Ok(match redis_url {
        Some(url) => ContextCache::redis(url, context::DEFAULT_TTL, store.changes())?,
        None => ContextCache::in_process(store.changes(), ttl),
    })
}

/// Binds the ingest config's ports, prints the ready line and serves.
/// Where a role with an API listens.
struct Ports {
    http: std::net::SocketAddr,
    grpc: std::net::SocketAddr,
    grpc_max_connection_age: Option<Duration>,
}

impl Ports {
    fn of(config: &IngestConfig) -> Ports {
        Ports {
            http: config.http_addr,
            grpc: config.grpc_addr,
            grpc_max_connection_age: config.grpc_max_connection_age,
        }
    }
}

/// Binds the ports, prints the ready line and serves until a signal.
async fn serve(role: &str, host: Host, ports: Ports, backend: &str) -> anyhow::Result<ExitCode> {
    let http = bind(ports.http).await?;
    let grpc = bind(ports.grpc).await?;
    // One line on stdout when ready: scripts and tests wait for it.
    println!(
        "aforo {role} ready: http=http://{} grpc={} store={backend}",
        http.local_addr()?,
        grpc.local_addr()?
    );
    host.serve(
        Listeners {
            http,
            grpc: Some(grpc),
            grpc_max_connection_age: ports.grpc_max_connection_age,
        },
        shutdown_signal(),
    )
    .await?;
    Ok(ExitCode::SUCCESS)
}

pub async fn standalone(mut args: StandaloneArgs) -> anyhow::Result<ExitCode> {
    if args.ingest.secrets_dir.is_none() {
        args.ingest.secrets_dir = Some(args.store.data_dir.join("secrets"));
    }
    let store = args.store.open().await?;
    first_start(store.as_ref(), &args.store.data_dir).await?;
    // Standalone owns its store: every change is its own, heard at once.
    let cache = CatalogCache::new(store.clone(), CATALOG_TTL);
    let context = in_process_or_redis(
        store.as_ref(),
        args.redis_url.as_deref(),
        context::DEFAULT_TTL,
    )?;
    let catalog = CatalogApi::new(store.clone(), cache.clone());
    if let Some(dir) = &args.manifests {
        let tenant = store.tenant_by_name(DEV_TENANT).await?.with_context(|| {
            format!("--manifests applies to tenant {DEV_TENANT:?}, which does not exist")
        })?;
        let outcome = crate::manifests::apply(&catalog, tenant.id, dir).await?;
        eprintln!("aforo: {outcome}");
        crate::manifests::watch(catalog.clone(), tenant.id, dir.clone());
    }
    let backend = store.backend();
    let mut host = Host::new(store.clone(), args.ingest.http.limits());
    host.openapi(aforo_ingest::standalone_document(
        aforo_billing::rest::openapi(),
    ));
    ContextCacheLookups::register(host.registry(), context.clone());
    let ingest = aforo_ingest::role::build(
        &args.ingest,
        store.clone(),
        cache,
        Arc::new(SystemClock),
        host.registry(),
    );
    host.add(ingest);
    let billing = BillingServices::new(
        store.clone(),
        catalog,
        context.clone(),
        &args.billing,
        host.registry(),
    )?;
    host.add(billing.role(args.billing.bill_every_secs));
    host.add(enrich_role(
        store,
        context,
        args.enrichers,
        args.enrich_batch,
    ));
    serve("standalone", host, Ports::of(&args.ingest), backend).await
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
        registry: &mut aforo_api::serve::Registry,
    ) -> anyhow::Result<BillingServices> {
        let invoices = InvoiceApi::new(
            store.clone(),
            billing.config()?,
            chrono::Duration::seconds(billing.bill_settle_delay_secs as i64),
        )
        .with_metrics(registry);
        Ok(BillingServices {
            auth: Authenticator::new(store.clone()),
            store,
            catalog,
            context,
            invoices,
        })
    }

    /// The billing role: its REST and gRPC APIs, and the bill-run
    /// scheduler every `bill_every_secs` (0: none).
    fn role(self, bill_every_secs: u64) -> Role {
        let store = self.store;
        let business = BusinessData::new(store.clone(), self.catalog.clone());
        let usage = UsageApi::new(store.clone(), self.context.clone());
        let http = aforo_billing::rest::router(BillingState {
            catalog: self.catalog.clone(),
            business: business.clone(),
            usage: usage.clone(),
            auth: self.auth.clone(),
            invoices: self.invoices.clone(),
        });
        let descriptors = aforo_proto::FILE_DESCRIPTOR_SET;
        let auth = self.auth;
        let role = Role::new("billing")
            .http(http)
            .grpc(
                GrpcAuth::new(
                    CatalogServiceServer::new(CatalogGrpc::new(self.catalog)),
                    auth.clone(),
                ),
                descriptors,
            )
            .grpc(
                GrpcAuth::new(
                    CustomerServiceServer::new(CustomerGrpc::new(business)),
                    auth.clone(),
                ),
                descriptors,
            )
            .grpc(
                GrpcAuth::new(UsageServiceServer::new(UsageGrpc::new(usage)), auth.clone()),
                descriptors,
            )
            .grpc(
                GrpcAuth::new(
                    InvoiceServiceServer::new(InvoiceGrpc::new(self.invoices.clone())),
                    auth,
                ),
                descriptors,
            );
        if bill_every_secs == 0 {
            return role;
        }
        let invoices = self.invoices;
        role.task(move |stop| invoices.schedule(Duration::from_secs(bill_every_secs), stop))
    }
}

#[derive(Args, Debug)]
pub struct BillingRoleArgs {
    /// The production store: postgres://user:password@host/db (or sqlite://PATH).
    #[arg(long, env = "AFORO_DATABASE_URL")]
    database_url: String,
    /// The enrich role's Redis: given, a catalog or subscription change made
    /// here removes the entries it made stale before it is answered;
    /// without it the enrichers remove them when they hear of the change.
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
    let store = aforo_store::open(&args.database_url)
        .await
        .with_context(|| format!("cannot open the store at {}", redact(&args.database_url)))?;
    let cache = CatalogCache::new(store.clone(), catalog_ttl(store.as_ref()));
    let context = context_cache(store.as_ref(), args.redis_url.as_deref())?;
    let catalog = CatalogApi::new(store.clone(), cache);
    let mut host = Host::new(store.clone(), args.http.limits());
    let services = BillingServices::new(
        store.clone(),
        catalog,
        context.clone(),
        &args.billing,
        host.registry(),
    )?;
    host.openapi(aforo_billing::rest::document());
    ContextCacheLookups::register(host.registry(), context);
    host.add(services.role(args.billing.bill_every_secs));

    let ports = Ports {
        http: args.http_addr,
        grpc: args.grpc_addr,
        grpc_max_connection_age: args.grpc_max_connection_age,
    };
    serve("billing", host, ports, store.backend()).await
}

pub async fn ingest(args: IngestArgs) -> anyhow::Result<ExitCode> {
    let store = aforo_store::open(&args.database_url)
        .await
        .with_context(|| format!("cannot open the store at {}", redact(&args.database_url)))?;
    let cache = CatalogCache::new(store.clone(), catalog_ttl(store.as_ref()));
    let backend = store.backend();
    let mut host = Host::new(store.clone(), args.ingest.http.limits());
    host.openapi(aforo_ingest::document());
    let ingest = aforo_ingest::role::build(
        &args.ingest,
        store,
        cache,
        Arc::new(SystemClock),
        host.registry(),
    );
    host.add(ingest);
    serve("ingest", host, Ports::of(&args.ingest), backend).await
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
