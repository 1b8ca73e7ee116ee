//! `aforo apply`, `aforo crd print`, `aforo catalog …`, `aforo customers …`,
//! `aforo subscriptions …`: the catalog and the business data it prices.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use aforo_api::v1::catalog::{Applied, ApplyRequest, CatalogVersion};
use aforo_api::v1::customers::{Customer, CustomerRequest, ImportResult, ImportStatus};
use aforo_api::v1::{Page, time};
use aforo_crds::catalog::yaml_documents;
use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use serde_json::{Map, Value, json};

use crate::client::{Client, Refused, Server};

#[derive(Args)]
pub struct ApplyArgs {
    /// A manifest file, or a folder of them (read recursively: .yaml, .yml, .json).
    #[arg(long, short)]
    file: PathBuf,
    #[command(flatten)]
    server: Server,
}

#[derive(Subcommand)]
pub enum CrdCommand {
    /// Print the CustomResourceDefinitions as YAML.
    Print,
}

#[derive(Subcommand)]
pub enum OpenapiCommand {
    /// Print a role's OpenAPI document as JSON: what it serves at /openapi.json.
    Print {
        #[arg(long, value_enum, default_value = "standalone")]
        role: ApiRole,
    },
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum ApiRole {
    Standalone,
    Ingest,
    Billing,
}

impl ApiRole {
    pub fn document(self) -> utoipa::openapi::OpenApi {
        match self {
            ApiRole::Standalone => {
                aforo_ingest::standalone_document(aforo_billing::rest::openapi())
            }
            ApiRole::Ingest => aforo_ingest::document(),
            ApiRole::Billing => aforo_billing::rest::document(),
        }
    }
}

#[derive(Subcommand)]
pub enum CatalogCommand {
    /// Show a catalog version (default: the one in force) with its snapshot.
    Get {
        #[arg(long)]
        version: Option<i64>,
        #[command(flatten)]
        server: Server,
    },
    /// List every catalog version.
    Versions {
        #[command(flatten)]
        server: Server,
    },
}

#[derive(Subcommand)]
pub enum CustomersCommand {
    /// Create a customer, or update the one with this id.
    Create {
        /// Your id for the customer: what events carry as `customer`.
        #[arg(long)]
        id: String,
        #[arg(long)]
        name: String,
        #[arg(long)]
        currency: Option<String>,
        #[arg(long)]
        tax_region: Option<String>,
        /// Metadata as key=value (repeatable), e.g. segment=smb for cohorts.
        #[arg(long = "meta", value_name = "KEY=VALUE")]
        metadata: Vec<String>,
        #[command(flatten)]
        server: Server,
    },
    /// List customers.
    List {
        #[command(flatten)]
        server: Server,
    },
    /// Import customers from CSV: external_id,name,currency,tax_region[,metadata columns…].
    Import {
        file: PathBuf,
        #[command(flatten)]
        server: Server,
    },
}

#[derive(Subcommand)]
pub enum SubscriptionsCommand {
    /// Subscribe a customer to a rate plan.
    Create {
        #[arg(long)]
        customer: String,
        #[arg(long)]
        plan: String,
        /// RFC 3339 start.
        #[arg(long)]
        start: String,
        #[arg(long)]
        end: Option<String>,
        /// Day of the month periods start on, 1–31 (shorter months use their
        /// last day); default: the plan's billingAnchorDay, else the start.
        #[arg(long)]
        anchor_day: Option<u8>,
        #[command(flatten)]
        server: Server,
    },
    /// List subscriptions with their plan phases.
    List {
        #[arg(long)]
        customer: Option<String>,
        #[command(flatten)]
        server: Server,
    },
    /// Move a subscription to another plan from a moment on.
    ChangePlan {
        id: String,
        #[arg(long)]
        plan: String,
        /// RFC 3339 time the new plan takes effect.
        #[arg(long)]
        at: String,
        #[command(flatten)]
        server: Server,
    },
    /// Grant a subscription a discount: a percentage or a fixed amount per period.
    Discount {
        id: String,
        #[arg(long, conflicts_with = "amount", required_unless_present = "amount")]
        percent: Option<String>,
        #[arg(long)]
        amount: Option<String>,
        /// RFC 3339; applies to periods starting at or after it.
        #[arg(long)]
        valid_from: Option<String>,
        /// RFC 3339; applies to periods starting before it.
        #[arg(long)]
        valid_until: Option<String>,
        #[command(flatten)]
        server: Server,
    },
}

/// Every manifest file under `path`, in a stable order.
pub fn manifest_files(path: &Path) -> anyhow::Result<Vec<PathBuf>> {
    if path.is_file() {
        return Ok(vec![path.to_owned()]);
    }
    let mut files = Vec::new();
    let mut folders = vec![path.to_owned()];
    while let Some(folder) = folders.pop() {
        for entry in std::fs::read_dir(&folder)
            .with_context(|| format!("cannot read {}", folder.display()))?
        {
            let path = entry?.path();
            if path.is_dir() {
                folders.push(path);
            } else if path
                .extension()
                .is_some_and(|e| e == "yaml" || e == "yml" || e == "json")
            {
                files.push(path);
            }
        }
    }
    files.sort();
    Ok(files)
}

/// Reads every document of every manifest under `path`.
pub fn read_manifests(path: &Path) -> anyhow::Result<Vec<(String, Value)>> {
    let mut documents = Vec::new();
    for file in manifest_files(path)? {
        let text = std::fs::read_to_string(&file)
            .with_context(|| format!("cannot read {}", file.display()))?;
        let docs = yaml_documents(&text, &file.display().to_string())
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        documents.extend(docs);
    }
    if documents.is_empty() {
        bail!("no manifests (.yaml, .yml, .json) in {}", path.display());
    }
    Ok(documents)
}

fn print_refusal(err: &anyhow::Error) -> Option<ExitCode> {
    let refused = err.downcast_ref::<Refused>()?;
    if let Some(details) = refused.body["error"]["details"].as_array() {
        eprintln!(
            "aforo: the catalog is invalid; nothing was applied. {} errors:",
            details.len()
        );
        for d in details {
            let field = d["field"].as_str().unwrap_or_default();
            eprintln!(
                "  {}/{}: {}{}",
                d["kind"].as_str().unwrap_or("?"),
                d["name"].as_str().unwrap_or("?"),
                if field.is_empty() {
                    String::new()
                } else {
                    format!("{field}: ")
                },
                d["message"].as_str().unwrap_or_default()
            );
        }
    } else {
        eprintln!("aforo: {}", refused.message);
    }
    Some(ExitCode::FAILURE)
}

pub async fn apply(args: ApplyArgs) -> anyhow::Result<ExitCode> {
    let documents = read_manifests(&args.file)?;
    // Read every document here first, so an unreadable one is named by its
    // file and position; the server then judges the set as a whole.
    let unreadable: Vec<String> = documents
        .iter()
        .filter_map(|(origin, value)| {
            aforo_crds::catalog::Resource::from_value(value.clone(), origin).err()
        })
        .map(|e| e.to_string())
        .collect();
    if !unreadable.is_empty() {
        eprintln!(
            "aforo: nothing was applied. {} documents cannot be read:",
            unreadable.len()
        );
        for e in unreadable {
            eprintln!("  {e}");
        }
        return Ok(ExitCode::FAILURE);
    }
    let client = Client::new(&args.server)?;
    let resources: Vec<Value> = documents.into_iter().map(|(_, v)| v).collect();
    let count = resources.len();
    match client
        .post("/v1/catalog/apply", &ApplyRequest { resources })
        .await
    {
        Ok(answer) => {
            let answer: Applied = answer;
            let verb = if answer.created {
                "created"
            } else {
                "unchanged"
            };
            println!(
                "catalog version {} {verb} ({count} resources, {}), effective from {}",
                answer.version.version,
                answer.version.content_hash,
                answer
                    .version
                    .effective_from
                    .as_ref()
                    .map_or("now".to_owned(), time::format)
            );
            for skipped in &answer.skipped {
                println!("skipped {skipped} (not catalog; the operator runs it)");
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(err) => print_refusal(&err).ok_or(err),
    }
}

pub fn openapi(command: OpenapiCommand) -> anyhow::Result<ExitCode> {
    match command {
        OpenapiCommand::Print { role } => {
            print!("{}", aforo_api::openapi::to_json(&role.document()))
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub fn crd(command: CrdCommand) -> anyhow::Result<ExitCode> {
    match command {
        CrdCommand::Print => print!("{}", aforo_crds::catalog::crds_yaml()?),
    }
    Ok(ExitCode::SUCCESS)
}

fn pretty(value: &Value) -> String {
    serde_json::to_string_pretty(value).unwrap_or_default()
}

pub async fn catalog(command: CatalogCommand) -> anyhow::Result<ExitCode> {
    match command {
        CatalogCommand::Get { version, server } => {
            let client = Client::new(&server)?;
            let path = match version {
                Some(n) => format!("/v1/catalog/versions/{n}"),
                None => "/v1/catalog".to_owned(),
            };
            let version: Value = client.get(&path, &[]).await?;
            println!("{}", pretty(&version));
        }
        CatalogCommand::Versions { server } => {
            let client = Client::new(&server)?;
            let versions: Page<CatalogVersion> = client.get("/v1/catalog/versions", &[]).await?;
            println!("VERSION\tEFFECTIVE FROM\tAPPLIED AT\tHASH");
            for v in &versions.items {
                println!(
                    "{}\t{}\t{}\t{}",
                    v.version,
                    v.effective_from
                        .as_ref()
                        .map_or("-".to_owned(), time::format),
                    time::format(&v.applied_at),
                    v.content_hash
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn customers(command: CustomersCommand) -> anyhow::Result<ExitCode> {
    match command {
        CustomersCommand::Create {
            id,
            name,
            currency,
            tax_region,
            metadata,
            server,
        } => {
            let mut meta = Map::new();
            for pair in metadata {
                let (k, v) = pair
                    .split_once('=')
                    .with_context(|| format!("{pair:?} is not KEY=VALUE"))?;
                meta.insert(k.to_owned(), Value::String(v.to_owned()));
            }
            let body = CustomerRequest {
                id,
                name,
                currency,
                tax_region,
                metadata: meta,
            };
            let answer: Customer = Client::new(&server)?.post("/v1/customers", &body).await?;
            println!("{}", serde_json::to_string_pretty(&answer)?);
        }
        CustomersCommand::List { server } => {
            let client = Client::new(&server)?;
            let mut after: Option<String> = None;
            loop {
                let mut query = vec![("limit", "1000".to_owned())];
                if let Some(a) = &after {
                    query.push(("after", a.clone()));
                }
                let page: Page<Customer> = client.get("/v1/customers", &query).await?;
                for c in &page.items {
                    println!(
                        "{}\t{}\t{}\t{}",
                        c.id,
                        c.name,
                        c.currency.as_deref().unwrap_or("-"),
                        c.tax_region.as_deref().unwrap_or("-")
                    );
                }
                match page.next_cursor {
                    Some(next) => after = Some(next),
                    None => break,
                }
            }
        }
        CustomersCommand::Import { file, server } => {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("cannot read {}", file.display()))?;
            let answer: ImportResult = Client::new(&server)?
                .post_text("/v1/customers/import", "text/csv", text)
                .await?;
            for r in &answer.results {
                if r.status == ImportStatus::Failed {
                    eprintln!("failed: {}", r.reason.as_deref().unwrap_or_default());
                }
            }
            println!(
                "{} created, {} updated, {} failed",
                answer.created, answer.updated, answer.failed
            );
            if answer.failed > 0 {
                return Ok(ExitCode::FAILURE);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn subscriptions(command: SubscriptionsCommand) -> anyhow::Result<ExitCode> {
    let answer = match command {
        SubscriptionsCommand::Create {
            customer,
            plan,
            start,
            end,
            anchor_day,
            server,
        } => {
            let body = json!({"customer": customer, "rate_plan": plan, "starts_at": start,
                              "ends_at": end, "billing_anchor_day": anchor_day});
            Client::new(&server)?
                .post("/v1/subscriptions", &body)
                .await?
        }
        SubscriptionsCommand::List { customer, server } => {
            let query: Vec<(&str, String)> =
                customer.into_iter().map(|c| ("customer", c)).collect();
            Client::new(&server)?
                .get("/v1/subscriptions", &query)
                .await?
        }
        SubscriptionsCommand::ChangePlan {
            id,
            plan,
            at,
            server,
        } => {
            let body = json!({"rate_plan": plan, "effective_at": at});
            Client::new(&server)?
                .post(&format!("/v1/subscriptions/{id}/plan"), &body)
                .await?
        }
        SubscriptionsCommand::Discount {
            id,
            percent,
            amount,
            valid_from,
            valid_until,
            server,
        } => {
            let body = json!({"percent": percent, "amount": amount,
                              "valid_from": valid_from, "valid_until": valid_until});
            Client::new(&server)?
                .post(&format!("/v1/subscriptions/{id}/discounts"), &body)
                .await?
        }
    };
    println!("{}", pretty(&answer));
    Ok(ExitCode::SUCCESS)
}
