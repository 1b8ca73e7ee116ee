//! `aforo`: one binary, every role, and the client commands.
//!
//! Roles (`standalone`, `ingest`, `enrich`, `billing`, `operator`) run servers; `tenants` and `keys` act on a
//! store directly (they are how the first key comes to exist); `events`
//! talks to a running server like any client would.

mod admin;
mod batch;
mod billing;
mod catalog;
mod client;
mod events;
mod manifests;
mod operator;
mod roles;
mod telemetry;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

// glibc's allocator spent a third of a bill run's CPU on its free lists
// (bench/README.md); mimalloc does not.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "aforo",
    version,
    about = "Usage metering and billing you can audit"
)]
struct Cli {
    /// Log filter, e.g. `info` or `aforo_ingest=debug,info`.
    #[arg(long, global = true, env = "AFORO_LOG", default_value = "info")]
    log: String,
    /// Log lines as text, or as one JSON object per line (with the request's
    /// `trace_id` when traces are exported).
    #[arg(
        long,
        global = true,
        env = "AFORO_LOG_FORMAT",
        value_enum,
        default_value = "text"
    )]
    log_format: telemetry::LogFormat,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run every role in one process, on an embedded SQLite store by default.
    Standalone(Box<roles::StandaloneArgs>),
    /// Run the ingest role: the front doors and the four gates.
    Ingest(roles::IngestArgs),
    /// Run the enrich role: billing context and revenue for queued events.
    Enrich(roles::EnrichArgs),
    /// Run the billing role: catalog, customers, usage and invoice APIs, and bill runs.
    Billing(Box<roles::BillingRoleArgs>),
    /// Run the Kubernetes operator: MeteringPipelines and the catalog.
    Operator(crate::operator::OperatorArgs),
    /// Create and list tenants (acts on the store directly).
    #[command(subcommand)]
    Tenants(admin::TenantsCommand),
    /// Create API keys (acts on the store directly).
    #[command(subcommand)]
    Keys(admin::KeysCommand),
    /// Send events to a running server, or follow what it stores.
    #[command(subcommand)]
    Events(events::EventsCommand),
    /// Upload batches of events (CSV, NDJSON), streamed; show their results.
    #[command(subcommand)]
    Batch(batch::BatchCommand),
    /// Apply catalog manifests (Meter, Product, RatePlan, …) like kubectl apply: all or nothing.
    Apply(catalog::ApplyArgs),
    /// The CustomResourceDefinitions.
    #[command(subcommand)]
    Crd(catalog::CrdCommand),
    /// The OpenAPI 3.1 documents of the HTTP APIs.
    #[command(subcommand)]
    Openapi(catalog::OpenapiCommand),
    /// Show catalog versions.
    #[command(subcommand)]
    Catalog(catalog::CatalogCommand),
    /// Create, list and import customers.
    #[command(subcommand)]
    Customers(catalog::CustomersCommand),
    /// Create, list and change subscriptions.
    #[command(subcommand)]
    Subscriptions(catalog::SubscriptionsCommand),
    /// Run bill runs and replay closed periods.
    #[command(subcommand)]
    Bill(billing::BillCommand),
    /// List and show invoices, the events behind their lines.
    #[command(subcommand)]
    Invoices(billing::InvoicesCommand),
    /// Export an invoice's audit trail, and verify one.
    #[command(subcommand)]
    Audit(billing::AuditCommand),
    /// Meter an MCP server: relay stdio (`-- COMMAND…`) or HTTP (`--listen`, `--upstream`) unchanged.
    McpProxy(Box<aforo_mcp_proxy::ProxyArgs>),
}

fn main() -> std::process::ExitCode {
    let matches = Cli::command().get_matches();
    let command = matches.subcommand_name().unwrap_or("aforo").to_owned();
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(err) => err.exit(),
    };
    let _telemetry = match telemetry::init(&cli.log, cli.log_format, &command) {
        Ok(telemetry) => telemetry,
        Err(err) => {
            eprintln!("aforo: {err:#}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("aforo: cannot start the async runtime: {err}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Standalone(args) => roles::standalone(*args).await,
            Command::Ingest(args) => roles::ingest(args).await,
            Command::Enrich(args) => roles::enrich(args).await,
            Command::Billing(args) => roles::billing(*args).await,
            Command::Operator(args) => operator::run(args).await,
            Command::Tenants(cmd) => admin::tenants(cmd).await,
            Command::Keys(cmd) => admin::keys(cmd).await,
            Command::Events(cmd) => events::run(cmd).await,
            Command::Batch(cmd) => batch::run(cmd).await,
            Command::Apply(args) => catalog::apply(args).await,
            Command::Crd(cmd) => catalog::crd(cmd),
            Command::Openapi(cmd) => catalog::openapi(cmd),
            Command::Catalog(cmd) => catalog::catalog(cmd).await,
            Command::Customers(cmd) => catalog::customers(cmd).await,
            Command::Subscriptions(cmd) => catalog::subscriptions(cmd).await,
            Command::Bill(cmd) => billing::bill(cmd).await,
            Command::Invoices(cmd) => billing::invoices(cmd).await,
            Command::Audit(cmd) => billing::audit(cmd).await,
            Command::McpProxy(args) => Ok(aforo_mcp_proxy::run(*args).await?),
        }
    });
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("aforo: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
