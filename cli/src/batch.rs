//! `aforo batch upload|show|results`: streamed batch uploads.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Subcommand;
use serde_json::Value;
use tokio::io::AsyncReadExt;

use crate::client::{Client, Server};

#[derive(Subcommand)]
pub enum BatchCommand {
    /// Upload a CSV or NDJSON file of events, streamed, with progress on stderr.
    Upload {
        file: PathBuf,
        /// csv or ndjson (default: from the file's extension).
        #[arg(long)]
        format: Option<String>,
        /// Also download the per-row results into this file.
        #[arg(long)]
        results: Option<PathBuf>,
        #[command(flatten)]
        server: Server,
    },
    /// Show a batch's status and counters.
    Show {
        id: String,
        #[command(flatten)]
        server: Server,
    },
    /// Download a batch's per-row results (NDJSON) to a file or stdout.
    Results {
        id: String,
        #[arg(long, short)]
        output: Option<PathBuf>,
        #[command(flatten)]
        server: Server,
    },
}

fn content_type(file: &std::path::Path, format: Option<&str>) -> anyhow::Result<&'static str> {
    let format = match format {
        Some(f) => f.to_ascii_lowercase(),
        None => file
            .extension()
            .and_then(|e| e.to_str())
            .unwrap_or_default()
            .to_ascii_lowercase(),
    };
    match format.as_str() {
        "csv" => Ok("text/csv"),
        "ndjson" | "jsonl" => Ok("application/x-ndjson"),
        other => bail!(
            "cannot tell the format of {} ({other:?}); pass --format csv or --format ndjson",
            file.display()
        ),
    }
}

fn megabytes(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / 1e6)
}

/// Prints the upload's progress every second until `done` reaches `total`.
fn progress(sent: Arc<AtomicU64>, total: u64) -> tokio::task::JoinHandle<()> {
    let tty = std::io::stderr().is_terminal();
    tokio::spawn(async move {
        let started = Instant::now();
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let now = sent.load(Ordering::Relaxed);
            let percent = (now * 100).checked_div(total).unwrap_or(100);
            let rate = now as f64 / started.elapsed().as_secs_f64().max(1e-3) / 1e6;
            let line = format!(
                "uploaded {} of {} ({percent}%), {rate:.1} MB/s",
                megabytes(now),
                megabytes(total)
            );
            if tty {
                eprint!("\r{line}   ");
            } else {
                eprintln!("{line}");
            }
            if now >= total {
                if tty {
                    eprintln!();
                }
                return;
            }
        }
    })
}

pub async fn run(command: BatchCommand) -> anyhow::Result<ExitCode> {
    match command {
        BatchCommand::Upload {
            file,
            format,
            results,
            server,
        } => upload(file, format, results, server).await,
        BatchCommand::Show { id, server } => {
            let batch: serde_json::Value = Client::new(&server)?
                .get(&format!("/v1/batches/{id}"), &[])
                .await?;
            println!("{}", serde_json::to_string_pretty(&batch)?);
            Ok(ExitCode::SUCCESS)
        }
        BatchCommand::Results { id, output, server } => {
            let client = Client::new(&server)?;
            let path = format!("/v1/batches/{id}/results");
            match output {
                Some(path_out) => {
                    let mut out = std::io::BufWriter::new(
                        std::fs::File::create(&path_out)
                            .with_context(|| format!("cannot create {}", path_out.display()))?,
                    );
                    client.download(&path, &mut out).await?;
                }
                None => {
                    let mut out = std::io::stdout();
                    client.download(&path, &mut out).await?;
                }
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

async fn upload(
    file: PathBuf,
    format: Option<String>,
    results: Option<PathBuf>,
    server: Server,
) -> anyhow::Result<ExitCode> {
    let content_type = content_type(&file, format.as_deref())?;
    let client = Client::new(&server)?;
    let handle = tokio::fs::File::open(&file)
        .await
        .with_context(|| format!("cannot open {}", file.display()))?;
    let total = handle.metadata().await?.len();
    let sent = Arc::new(AtomicU64::new(0));
    let counter = sent.clone();
    // The file is read in 256 KiB pieces as the server takes them: never whole.
    let pieces = futures::stream::unfold(Some(handle), move |file| {
        let counter = counter.clone();
        async move {
            let mut file = file?;
            let mut buffer = vec![0u8; 256 * 1024];
            match file.read(&mut buffer).await {
                Ok(0) => None,
                Ok(n) => {
                    buffer.truncate(n);
                    counter.fetch_add(n as u64, Ordering::Relaxed);
                    Some((Ok::<_, std::io::Error>(buffer), Some(file)))
                }
                Err(e) => Some((Err(e), None)),
            }
        }
    });
    let ticker = progress(sent.clone(), total);
    let answer = client
        .post_stream(
            "/v1/batches",
            content_type,
            reqwest::Body::wrap_stream(pieces),
        )
        .await;
    ticker.abort();
    let sent_bytes = sent.load(Ordering::Relaxed);
    eprintln!(
        "uploaded {} of {} ({}%)",
        megabytes(sent_bytes),
        megabytes(total),
        (sent_bytes * 100).checked_div(total).unwrap_or(100)
    );
    let answer: Value = answer?;
    let id = answer["batch_id"].as_str().unwrap_or_default().to_owned();
    println!(
        "batch {id} {}: {} rows, {} accepted, {} duplicates, {} rejected",
        answer["status"].as_str().unwrap_or("?"),
        answer["rows"],
        answer["accepted"],
        answer["duplicates"],
        answer["rejected"]
    );
    if let Some(path) = results {
        let mut out = std::io::BufWriter::new(
            std::fs::File::create(&path)
                .with_context(|| format!("cannot create {}", path.display()))?,
        );
        client
            .download(&format!("/v1/batches/{id}/results"), &mut out)
            .await?;
        println!("results in {}", path.display());
    } else {
        println!("results: aforo batch results {id}");
    }
    Ok(ExitCode::SUCCESS)
}
