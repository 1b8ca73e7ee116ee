//! Bill runs, invoices and audit trails: `aforo bill`, `aforo invoices`,
//! `aforo audit`, and the billing settings the serving roles take.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use aforo_api::v1::bill_runs::{BillRunRequest, ReplayRequest};
use aforo_api::v1::invoices::InvoiceSummary;
use aforo_api::v1::{Page, time};
use aforo_billing::billrun::audit::{AuditExport, verify};
use aforo_billing::billrun::runner::BillRunConfig;
use aforo_billing::billrun::runner::RunReport;
use aforo_billing::billrun::{RoutingConfig, TaxTable};
use aforo_billing::rest::{BillRun, Replay};
use anyhow::{Context, bail};
use chrono::{DateTime, Utc};
use clap::{Args, Subcommand};
use serde_json::Value;

use crate::client::{Client, Server};
use crate::roles::StoreArgs;

/// How the billing role bills: tax, invoice destinations, schedule.
#[derive(Args, Clone, Debug)]
pub struct BillingArgs {
    /// Tax rates per tax class and customer region (YAML; see docs/billing.md).
    #[arg(long, env = "AFORO_TAX_CONFIG")]
    tax_config: Option<PathBuf>,
    /// Where a signed `invoice.finalized` webhook is POSTed for each invoice.
    #[arg(long, env = "AFORO_INVOICE_WEBHOOK_URL")]
    invoice_webhook_url: Option<String>,
    /// The Standard Webhooks secret (`whsec_…`) that signs it.
    #[arg(long, env = "AFORO_INVOICE_WEBHOOK_SECRET", hide_env_values = true)]
    invoice_webhook_secret: Option<String>,
    /// A folder every invoice is written to.
    #[arg(long, env = "AFORO_INVOICE_EXPORT_DIR")]
    invoice_export_dir: Option<PathBuf>,
    /// Export formats: json, csv or both.
    #[arg(
        long,
        env = "AFORO_INVOICE_EXPORT_FORMATS",
        value_delimiter = ',',
        default_value = "json,csv"
    )]
    invoice_export_formats: Vec<String>,
    /// Seconds between scheduled bill runs (each bills the periods that
    /// ended); 0 turns the scheduler off.
    #[arg(long, env = "AFORO_BILL_EVERY_SECS", default_value_t = 60)]
    pub bill_every_secs: u64,
    /// Seconds a scheduled run waits after an instant before counting its
    /// events as stored (commits in flight land first).
    #[arg(long, env = "AFORO_BILL_SETTLE_DELAY_SECS", default_value_t = 60)]
    pub bill_settle_delay_secs: u64,
}

impl BillingArgs {
    pub fn config(&self) -> anyhow::Result<BillRunConfig> {
        let tax = match &self.tax_config {
            Some(path) => {
                let text = std::fs::read_to_string(path).with_context(|| {
                    format!("cannot read the tax configuration {}", path.display())
                })?;
                Some(Arc::new(
                    TaxTable::parse(&text)
                        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?,
                ))
            }
            None => None,
        };
        if let Some(url) = &self.invoice_webhook_url {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                bail!("--invoice-webhook-url {url:?} is not an http(s) URL");
            }
            let Some(secret) = &self.invoice_webhook_secret else {
                bail!(
                    "--invoice-webhook-url needs --invoice-webhook-secret (whsec_…) to sign with"
                );
            };
            aforo_billing::billrun::deliver::sign(secret, "check", 0, b"")
                .map_err(|e| anyhow::anyhow!("--invoice-webhook-secret: {e}"))?;
        }
        for f in &self.invoice_export_formats {
            if f != "json" && f != "csv" {
                bail!("--invoice-export-formats: {f:?} is not json or csv");
            }
        }
        Ok(BillRunConfig {
            tax,
            routing: Arc::new(RoutingConfig {
                webhook_url: self.invoice_webhook_url.clone(),
                webhook_secret: self.invoice_webhook_secret.clone(),
                export_dir: self
                    .invoice_export_dir
                    .as_ref()
                    .map(|d| d.display().to_string()),
                export_formats: self.invoice_export_formats.clone(),
            }),
            ..BillRunConfig::default()
        })
    }
}

#[derive(Subcommand)]
pub enum BillCommand {
    /// Bill every period that has ended and has no invoice yet.
    Run {
        /// Bill periods that ended by this time (RFC 3339; default: the cut-off).
        #[arg(long)]
        as_of: Option<String>,
        /// Count events stored by this time (RFC 3339, or `now`; default
        /// now minus the server's settle delay).
        #[arg(long)]
        cutoff: Option<String>,
        /// Only this subscription (to retry one that failed).
        #[arg(long)]
        subscription: Option<String>,
        #[command(flatten)]
        server: Server,
    },
    /// Recompute a closed period from raw events and diff it against its invoices.
    Replay {
        /// The period's start (RFC 3339).
        #[arg(long)]
        period: String,
        #[arg(long)]
        subscription: Option<String>,
        #[command(flatten)]
        server: Server,
    },
    /// Recorded bill runs, latest first.
    Runs {
        #[command(flatten)]
        server: Server,
    },
}

#[derive(Subcommand)]
pub enum InvoicesCommand {
    /// Invoices by number.
    List {
        #[arg(long)]
        customer: Option<String>,
        #[command(flatten)]
        server: Server,
    },
    /// One invoice with its lines (by id or number).
    Show {
        invoice: String,
        #[command(flatten)]
        server: Server,
    },
    /// The events behind one line.
    Events {
        invoice: String,
        line: u32,
        /// `next_cursor` of the previous page.
        #[arg(long)]
        after: Option<String>,
        #[arg(long, default_value_t = 100)]
        limit: usize,
        #[command(flatten)]
        server: Server,
    },
    /// A line's usage by source and tier.
    Attribution {
        invoice: String,
        line: u32,
        #[command(flatten)]
        server: Server,
    },
}

#[derive(Subcommand)]
pub enum AuditCommand {
    /// Export an invoice with every event behind it, validation hashes and proofs.
    Export {
        /// Invoice id or number.
        #[arg(long)]
        invoice: String,
        /// json or csv.
        #[arg(long, default_value = "json")]
        format: String,
        /// Write here instead of stdout.
        #[arg(long, short)]
        output: Option<PathBuf>,
        #[command(flatten)]
        server: Server,
    },
    /// Where one stored event was billed, with its Merkle proof.
    Proof {
        /// The event's stored id.
        #[arg(long)]
        event: String,
        #[command(flatten)]
        server: Server,
    },
    /// Recompute every hash, proof and root of a JSON export; name what does
    /// not match. Reads the tenant's validation key from the store.
    Verify {
        file: PathBuf,
        #[command(flatten)]
        store: StoreArgs,
    },
}

fn time_arg(name: &str, value: &Option<String>) -> anyhow::Result<Option<DateTime<Utc>>> {
    Ok(match value.as_deref() {
        None => None,
        Some("now") => Some(Utc::now()),
        Some(v) => Some(
            DateTime::parse_from_rfc3339(v)
                .with_context(|| format!("--{name} {v:?} is not an RFC 3339 time"))?
                .with_timezone(&Utc),
        ),
    })
}

fn subscription_arg(value: &Option<String>) -> anyhow::Result<Option<uuid::Uuid>> {
    value
        .as_deref()
        .map(|s| {
            s.parse()
                .with_context(|| format!("--subscription {s:?} is not an id"))
        })
        .transpose()
}

pub async fn bill(command: BillCommand) -> anyhow::Result<ExitCode> {
    match command {
        BillCommand::Run {
            as_of,
            cutoff,
            subscription,
            server,
        } => {
            let body = BillRunRequest {
                as_of: time_arg("as-of", &as_of)?,
                cutoff: time_arg("cutoff", &cutoff)?,
                subscription: subscription_arg(&subscription)?,
            };
            let r: RunReport = Client::new(&server)?.post("/v1/bill-runs", &body).await?;
            println!("NUMBER\tCUSTOMER\tPERIOD\tTOTAL");
            for i in &r.invoiced {
                println!(
                    "{}\t{}\t{}\t{} {}",
                    i.number,
                    i.customer,
                    time::format(&i.period_start),
                    i.total,
                    i.currency
                );
            }
            for f in &r.failures {
                eprintln!(
                    "failed: subscription {} ({}) period {} at {}: {}",
                    f.subscription,
                    f.customer,
                    time::format(&f.period_start),
                    f.stage,
                    f.reason
                );
            }
            eprintln!(
                "{} invoiced, {} already invoiced, {} failed, {} reconciliation differences, {} events read (run {})",
                r.invoiced.len(),
                r.already_invoiced,
                r.failures.len(),
                r.differences.len(),
                r.events_read,
                r.id
            );
            if !r.failures.is_empty() {
                return Ok(ExitCode::FAILURE);
            }
        }
        BillCommand::Replay {
            period,
            subscription,
            server,
        } => {
            let body = ReplayRequest {
                period_start: time_arg("period", &Some(period.clone()))?
                    .context("--period is required")?,
                subscription: subscription_arg(&subscription)?,
            };
            let r: Replay = Client::new(&server)?
                .post("/v1/bill-runs/replay", &body)
                .await?;
            for i in &r.invoices {
                let verdict = if i.identical {
                    "reproduced exactly"
                } else {
                    "DIFFERS"
                };
                println!("{}\t{}", i.number, verdict);
                for d in &i.differences {
                    println!("  {d}");
                }
            }
            if !r.identical {
                return Ok(ExitCode::FAILURE);
            }
        }
        BillCommand::Runs { server } => {
            let runs: Page<BillRun> = Client::new(&server)?.get("/v1/bill-runs", &[]).await?;
            println!("RUN\tSTARTED\tINVOICED\tFAILED");
            for run in &runs.items {
                println!(
                    "{}\t{}\t{}\t{}",
                    run.id,
                    time::format(&run.started_at),
                    run.invoiced,
                    run.failed
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn pretty(value: &Value) -> String {
    serde_json::to_string_pretty(value).unwrap_or_default()
}

pub async fn invoices(command: InvoicesCommand) -> anyhow::Result<ExitCode> {
    match command {
        InvoicesCommand::List { customer, server } => {
            let client = Client::new(&server)?;
            let mut after: Option<String> = None;
            println!("NUMBER\tCUSTOMER\tPERIOD START\tTOTAL");
            loop {
                let mut query = vec![("limit", "1000".to_owned())];
                if let Some(c) = &customer {
                    query.push(("customer", c.clone()));
                }
                if let Some(a) = &after {
                    query.push(("after", a.clone()));
                }
                let page: Page<InvoiceSummary> = client.get("/v1/invoices", &query).await?;
                for i in &page.items {
                    println!(
                        "{}\t{}\t{}\t{} {}",
                        i.number,
                        i.customer,
                        time::format(&i.period_start),
                        i.total,
                        i.currency
                    );
                }
                match page.next_cursor {
                    Some(next) => after = Some(next),
                    None => break,
                }
            }
        }
        InvoicesCommand::Show { invoice, server } => {
            let mut r: Value = Client::new(&server)?
                .get(&format!("/v1/invoices/{invoice}"), &[])
                .await?;
            if let Some(obj) = r.as_object_mut() {
                obj.remove("document");
            }
            println!("{}", pretty(&r));
        }
        InvoicesCommand::Events {
            invoice,
            line,
            after,
            limit,
            server,
        } => {
            let r = Client::new(&server)?
                .get(
                    &format!("/v1/invoices/{invoice}/lines/{line}/events"),
                    &[
                        ("after", after.unwrap_or_default()),
                        ("limit", limit.to_string()),
                    ],
                )
                .await?;
            println!("{}", pretty(&r));
        }
        InvoicesCommand::Attribution {
            invoice,
            line,
            server,
        } => {
            let r = Client::new(&server)?
                .get(
                    &format!("/v1/invoices/{invoice}/lines/{line}/attribution"),
                    &[],
                )
                .await?;
            println!("{}", pretty(&r));
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn audit(command: AuditCommand) -> anyhow::Result<ExitCode> {
    match command {
        AuditCommand::Export {
            invoice,
            format,
            output,
            server,
        } => {
            if format != "json" && format != "csv" {
                bail!("--format {format:?} is not json or csv");
            }
            let client = Client::new(&server)?;
            let path = format!("/v1/invoices/{invoice}/audit");
            let body = if format == "json" {
                pretty(&client.get(&path, &[("format", "json".into())]).await?).into_bytes()
            } else {
                client.get_bytes(&path, &[("format", "csv".into())]).await?
            };
            match output {
                Some(file) => std::fs::write(&file, &body)
                    .with_context(|| format!("cannot write {}", file.display()))?,
                None => std::io::stdout().write_all(&body)?,
            }
        }
        AuditCommand::Proof { event, server } => {
            let r = Client::new(&server)?
                .get(&format!("/v1/events/{event}/proof"), &[])
                .await?;
            println!("{}", pretty(&r));
        }
        AuditCommand::Verify { file, store } => {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("cannot read {}", file.display()))?;
            let export: AuditExport = serde_json::from_str(&text).with_context(|| {
                format!("{} is not an aforo audit export (JSON)", file.display())
            })?;
            let store = store.open().await?;
            let tenant = store
                .tenant_by_name(&export.tenant)
                .await?
                .with_context(|| {
                    format!(
                        "the export is of tenant {:?}, which this store does not have",
                        export.tenant
                    )
                })?;
            let v = verify(&export, &tenant.hmac_key);
            for problem in &v.problems {
                println!("MISMATCH {problem}");
            }
            if v.ok() {
                println!(
                    "verified invoice {}: {} lines, {} events, every hash, proof and root matches",
                    export.invoice_number, v.lines_checked, v.events_checked
                );
            } else {
                eprintln!(
                    "invoice {}: {} problems in {} events",
                    export.invoice_number,
                    v.problems.len(),
                    v.events_checked
                );
                return Ok(ExitCode::FAILURE);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
