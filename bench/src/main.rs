//! The ingest benchmark. One run measures, on the same PostgreSQL and the
//! same rows:
//!
//! - aforo's durable ingest: a real `aforo ingest` process fed over gRPC
//!   `IngestStream` by N concurrent streams of B-event batches with ~5 %
//!   duplicate ids; throughput and ack latency (per batch, from the time it
//!   was due to be sent, so a slow server cannot hide its queueing);
//! - the ack latency at a fixed offered rate (default 10k events/s);
//! - raw `COPY` of the same rows into a table of the same shape: the ceiling;
//! - one `INSERT … ON CONFLICT DO NOTHING` per event in autocommit from
//!   several connections: the naive baseline;
//!
//! and prints the ratios. `bench/run.sh` builds and runs it.

use aforo_store::prelude::*;
use std::collections::HashSet;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aforo_crds::{GateResults, SourceEvent, Tier, event::format_time, validation_hash};
use aforo_proto::v1 as pb;
use aforo_proto::v1::ingest_service_client::IngestServiceClient;
use anyhow::{Context, bail};
use chrono::{DateTime, Utc};
use clap::Parser;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Map, Value, json};
use sqlx::{Connection, PgConnection};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;
use tokio_stream::wrappers::ReceiverStream;
use uuid::Uuid;

#[derive(Parser, Clone)]
#[command(about = "Durable ingest against raw COPY and naive INSERT, in one run")]
struct Args {
    /// A PostgreSQL URL with the right to create databases (not used with
    /// `--standalone`).
    #[arg(long, env = "AFORO_TEST_DATABASE_URL")]
    database_url: Option<String>,
    /// The aforo binary (default: next to this one).
    #[arg(long)]
    aforo: Option<PathBuf>,
    /// Events offered to aforo in the throughput run.
    #[arg(long, default_value_t = 300_000)]
    events: usize,
    /// Concurrent gRPC streams.
    #[arg(long, default_value_t = 16)]
    streams: usize,
    /// Events per batch.
    #[arg(long, default_value_t = 200)]
    batch: usize,
    /// Share of events that repeat an earlier id.
    #[arg(long, default_value_t = 0.05)]
    dup_ratio: f64,
    /// Offered rate of the latency run, events per second.
    #[arg(long, default_value_t = 10_000)]
    paced_rate: usize,
    /// Length of the latency run.
    #[arg(long, default_value_t = 10)]
    paced_seconds: u64,
    /// Events for the naive INSERT baseline (it is slow; its rate is what counts).
    #[arg(long, default_value_t = 20_000)]
    insert_events: usize,
    /// Connections of the naive INSERT baseline.
    #[arg(long, default_value_t = 8)]
    insert_connections: usize,
    /// Keep the benchmark's database afterwards, to look into it.
    #[arg(long)]
    keep_database: bool,
    /// Run the load against `aforo standalone` on its embedded SQLite store
    /// instead (ingest alone, its in-process enricher draining the backlog,
    /// then both at once).
    #[arg(long)]
    standalone: bool,
}

/// The workload: deterministic, so every run offers the same events.
struct Workload {
    /// Per stream, its batches.
    streams: Vec<Vec<Vec<pb::Event>>>,
    unique: usize,
    total: usize,
}

fn properties(rng: &mut StdRng) -> Map<String, Value> {
    let langs = ["de", "fr", "es", "ja", "pt"];
    json!({
        "characters": rng.random_range(1..5000),
        "lang": langs[rng.random_range(0..langs.len())],
        "model": "nmt-large-2026",
    })
    .as_object()
    .cloned()
    .unwrap_or_default()
}

fn workload(prefix: &str, events: usize, streams: usize, batch: usize, dup_ratio: f64) -> Workload {
    let now = Utc::now();
    let mut rng = StdRng::seed_from_u64(7);
    let per_stream = events.div_ceil(streams);
    let mut all = Vec::with_capacity(streams);
    let mut unique = 0;
    for s in 0..streams {
        let mut ids: Vec<String> = Vec::with_capacity(per_stream);
        let mut batches = Vec::new();
        let mut current = Vec::with_capacity(batch);
        for i in 0..per_stream {
            let id = if !ids.is_empty() && rng.random_bool(dup_ratio) {
                ids[rng.random_range(0..ids.len())].clone()
            } else {
                let id = format!("{prefix}-s{s}-{i}");
                ids.push(id.clone());
                unique += 1;
                id
            };
            current.push(pb::Event {
                id,
                source: "bench".into(),
                r#type: "translation.characters".into(),
                customer: format!("customer-{}", rng.random_range(0..1000)),
                time: Some(prost_timestamp(now)),
                properties: Some(aforo_ingest::decode::json_to_struct(&properties(&mut rng))),
                tier: pb::Tier::Sdk as i32,
                tier_detail: "aforo-bench".into(),
            });
            if current.len() == batch {
                batches.push(std::mem::take(&mut current));
            }
        }
        if !current.is_empty() {
            batches.push(current);
        }
        all.push(batches);
    }
    Workload {
        streams: all,
        unique,
        total: per_stream * streams,
    }
}

fn prost_timestamp(t: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: t.timestamp(),
        nanos: t.timestamp_subsec_nanos() as i32,
    }
}

/// Latency percentiles of a sample, in milliseconds.
struct Latency {
    p50: f64,
    p99: f64,
    max: f64,
}

fn latency(mut samples: Vec<Duration>) -> Latency {
    samples.sort_unstable();
    let at = |q: f64| {
        let i = ((samples.len() as f64 * q).ceil() as usize).clamp(1, samples.len()) - 1;
        samples[i].as_secs_f64() * 1000.0
    };
    Latency {
        p50: at(0.50),
        p99: at(0.99),
        max: at(1.0),
    }
}

struct IngestRun {
    answered: usize,
    accepted: usize,
    elapsed: Duration,
    latency: Latency,
}

/// Feeds `work` to aforo over one `IngestStream` per stream. With `pace`,
/// stream k sends its n-th batch at `start + n × pace`; latency counts from
/// that due time, so queueing inside the server is measured, not hidden.
async fn drive(
    grpc: &str,
    key: &str,
    work: Workload,
    pace: Option<Duration>,
) -> anyhow::Result<IngestRun> {
    let start = Instant::now();
    let mut tasks = Vec::new();
    for (s, batches) in work.streams.into_iter().enumerate() {
        let channel = tonic::transport::Endpoint::from_shared(grpc.to_owned())?
            .connect()
            .await
            .context("connect to aforo")?;
        let mut client = IngestServiceClient::new(channel);
        let key = key.to_owned();
        tasks.push(tokio::spawn(async move {
            let (tx, rx) = tokio::sync::mpsc::channel(4);
            let mut request = tonic::Request::new(ReceiverStream::new(rx));
            request
                .metadata_mut()
                .insert("authorization", format!("Bearer {key}").parse()?);
            let mut answers = client.ingest_stream(request).await?.into_inner();
            // Offset the streams so paced sends do not all fall on one instant.
            let offset = pace.map(|p| p.mul_f64(s as f64 / 16.0)).unwrap_or_default();
            let (mut samples, mut answered, mut accepted) = (Vec::new(), 0usize, 0usize);
            for (n, events) in batches.into_iter().enumerate() {
                let due = match pace {
                    Some(p) => {
                        let due = start + offset + p * n as u32;
                        tokio::time::sleep_until(due.into()).await;
                        due
                    }
                    None => Instant::now(),
                };
                tx.send(pb::IngestRequest {
                    batch_id: n.to_string(),
                    events,
                })
                .await?;
                let answer = answers.message().await?.context("the stream ended early")?;
                samples.push(due.elapsed());
                answered += answer.results.len();
                accepted += answer.accepted as usize;
                if answer.rejected > 0 {
                    bail!("aforo rejected {} events of a valid batch", answer.rejected);
                }
            }
            Ok::<_, anyhow::Error>((samples, answered, accepted))
        }));
    }
    let (mut samples, mut answered, mut accepted) = (Vec::new(), 0, 0);
    for task in tasks {
        let (s, a, c) = task.await??;
        samples.extend(s);
        answered += a;
        accepted += c;
    }
    Ok(IngestRun {
        answered,
        accepted,
        elapsed: start.elapsed(),
        latency: latency(samples),
    })
}

/// The example catalog, and a translation-pro subscription for each of the
/// workload's 1000 customers, so every event is enriched with revenue.
async fn billing_context(database: &str) -> anyhow::Result<()> {
    use aforo_billing::catalog::CatalogApi;
    use aforo_billing::customers::BusinessData;
    let store = aforo_store::open(database).await?;
    let tenant = store
        .tenant_by_name("bench")
        .await?
        .context("the bench tenant")?;
    let catalogs = aforo_store::cache::CatalogCache::new(store.clone(), Duration::from_secs(5));
    let catalog = CatalogApi::new(store.clone(), catalogs);
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples");
    let mut resources = Vec::new();
    for file in ["meters.yaml", "products.yaml", "rate-plans.yaml"] {
        let text = std::fs::read_to_string(format!("{dir}/{file}"))?;
        for (origin, value) in
            aforo_crds::catalog::yaml_documents(&text, file).map_err(|e| anyhow::anyhow!("{e}"))?
        {
            resources.push(
                aforo_crds::catalog::Resource::from_value(value, &origin)
                    .map_err(|e| anyhow::anyhow!("{e}"))?,
            );
        }
    }
    catalog
        .apply(tenant.id, &resources)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let business = BusinessData::new(store.clone(), catalog);
    let start = Utc::now() - chrono::Duration::days(30);
    for i in 0..1000 {
        let customer = format!("customer-{i}");
        business
            .upsert_customer(
                tenant.id,
                &aforo_store::CustomerInput {
                    external_id: customer.clone(),
                    name: customer.clone(),
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        business
            .create_subscription(
                tenant.id,
                &aforo_store::SubscriptionInput {
                    customer,
                    rate_plan: "translation-pro".into(),
                    starts_at: start,
                    ends_at: None,
                    billing_anchor_day: Some(1),
                },
            )
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    Ok(())
}

/// Runs `processes` enrichers (`aforo enrich --drain`) until nothing is
/// left to enrich; returns the events they enriched (as each reports), the
/// time it took, and the CPU seconds of the enrichers and of PostgreSQL
/// meanwhile. Nothing polls the database while they run.
async fn enrich(
    bin: &PathBuf,
    database: &str,
    processes: usize,
) -> anyhow::Result<(usize, Duration, f64, f64)> {
    let pg_before = cpu_of_all("postgres");
    let start = Instant::now();
    let mut children = Vec::new();
    for _ in 0..processes {
        children.push(
            Command::new(bin)
                .args(["enrich", "--drain", "--database-url", database])
                .env("AFORO_LOG", "warn")
                .stdout(Stdio::piped())
                .kill_on_drop(true)
                .spawn()
                .context("start aforo enrich")?,
        );
    }
    // The CPU of a process can only be read while it exists: sample each
    // until it exits.
    let mut cpu = vec![0.0; children.len()];
    let mut running: Vec<bool> = vec![true; children.len()];
    while running.iter().any(|r| *r) {
        for (i, child) in children.iter_mut().enumerate() {
            if !running[i] {
                continue;
            }
            if let Some(pid) = child.id() {
                cpu[i] = cpu_seconds(pid);
            }
            if let Some(status) = child.try_wait()? {
                anyhow::ensure!(status.success(), "aforo enrich --drain failed: {status}");
                running[i] = false;
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let elapsed = start.elapsed();
    let pg_cpu = cpu_of_all("postgres") - pg_before;
    let mut enriched = 0usize;
    for child in children {
        let out = child.wait_with_output().await?;
        let text = String::from_utf8_lossy(&out.stdout);
        let n = text
            .split("drained; ")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse::<usize>().ok())
            .with_context(|| format!("aforo enrich --drain said: {text}"))?;
        enriched += n;
    }
    Ok((enriched, elapsed, cpu.iter().sum(), pg_cpu))
}

/// Ingest and enrichment at once.
struct Together {
    ingest: IngestRun,
    /// Events stored but not yet enriched when ingest finished.
    backlog_at_end: u64,
    /// From the first event sent until nothing was left to enrich.
    all_enriched: Duration,
}

/// Drives `work` into aforo while two `aforo enrich` processes run, then
/// waits (checking the backlog every 50 ms) until they have enriched it all.
async fn together(
    bin: &PathBuf,
    aforo: &Aforo,
    database: &str,
    work: Workload,
) -> anyhow::Result<Together> {
    let store = aforo_store::PgStore::connect(database).await?;
    let mut enrichers = Vec::new();
    for _ in 0..2 {
        enrichers.push(
            Command::new(bin)
                .args(["enrich", "--database-url", database])
                .args(["--http-addr", "127.0.0.1:0"])
                .env("AFORO_LOG", "warn")
                .stdout(Stdio::null())
                .kill_on_drop(true)
                .spawn()
                .context("start aforo enrich")?,
        );
    }
    let start = Instant::now();
    let ingest = drive(&aforo.grpc, &aforo.key, work, None).await?;
    let backlog_at_end = store.enrichment_backlog().await?;
    loop {
        if store.enrichment_backlog().await? == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let all_enriched = start.elapsed();
    for mut child in enrichers {
        child.start_kill()?;
        child.wait().await?;
    }
    Ok(Together {
        ingest,
        backlog_at_end,
        all_enriched,
    })
}

/// Starts `aforo` with `args` and returns it and its gRPC address once it
/// prints its ready line.
async fn spawn_ready(
    bin: &PathBuf,
    args: &[&str],
) -> anyhow::Result<(tokio::process::Child, String)> {
    let mut child = Command::new(bin)
        .args(args)
        .args(["--http-addr", "127.0.0.1:0", "--grpc-addr", "127.0.0.1:0"])
        .env("AFORO_LOG", "warn")
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("start aforo {args:?}"))?;
    let mut lines = BufReader::new(child.stdout.take().context("stdout")?).lines();
    let ready = loop {
        match lines.next_line().await? {
            Some(line) if line.contains(" ready: ") => break line,
            Some(_) => continue,
            None => bail!("aforo {args:?} exited before it was ready"),
        }
    };
    let grpc = ready
        .split_whitespace()
        .find_map(|w| w.strip_prefix("grpc="))
        .context("no grpc= in the ready line")?;
    Ok((child, format!("http://{grpc}")))
}

/// Starts `aforo standalone` on `data_dir` with `enrichers` in-process
/// enrichers.
async fn start_standalone(
    bin: &PathBuf,
    data_dir: &str,
    enrichers: usize,
) -> anyhow::Result<(tokio::process::Child, String)> {
    let enrichers = enrichers.to_string();
    spawn_ready(
        bin,
        &[
            "standalone",
            "--data-dir",
            data_dir,
            "--enrichers",
            &enrichers,
        ],
    )
    .await
}

/// Waits until the store's enrichment backlog is empty, looking every
/// 100 ms (on SQLite the count is a read beside the one writer).
async fn until_enriched(store: &dyn aforo_store::Store) -> anyhow::Result<()> {
    while store.enrichment_backlog().await? > 0 {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

/// `--standalone`: the same load against `aforo standalone` on its
/// embedded SQLite store, with its in-process enricher.
async fn standalone(args: &Args, bin: &PathBuf) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let data_dir = dir.path().to_str().context("a UTF-8 temporary folder")?;
    let url = format!("sqlite://{}", dir.path().join("aforo.db").display());
    let key = bench_tenant(bin, &url).await?;
    billing_context(&url).await?;
    let store = aforo_store::open(&url).await?;
    println!(
        "aforo standalone on SQLite; {} streams x {} events/batch, {:.0}% duplicate ids",
        args.streams,
        args.batch,
        args.dup_ratio * 100.0
    );
    let work = |prefix: &str, events: usize| {
        workload(prefix, events, args.streams, args.batch, args.dup_ratio)
    };

    // Ingest alone: no enricher.
    let (mut aforo, grpc) = start_standalone(bin, data_dir, 0).await?;
    drive(&grpc, &key, work("warm", 20_000), None).await?;
    let alone = drive(&grpc, &key, work("run", args.events), None).await?;
    aforo.start_kill()?;
    aforo.wait().await?;

    // The in-process enricher drains what is waiting.
    let backlog = store.enrichment_backlog().await?;
    let (mut aforo, grpc) = start_standalone(bin, data_dir, 1).await?;
    let pid = aforo.id().context("aforo has no pid")?;
    let cpu_before = cpu_seconds(pid);
    let start = Instant::now();
    until_enriched(store.as_ref()).await?;
    let drain = start.elapsed();
    let drain_cpu = cpu_seconds(pid) - cpu_before;

    // Both at once.
    let start = Instant::now();
    let together = drive(&grpc, &key, work("together", args.events), None).await?;
    let backlog_at_end = store.enrichment_backlog().await?;
    until_enriched(store.as_ref()).await?;
    let all_enriched = start.elapsed();
    aforo.start_kill()?;
    aforo.wait().await?;

    let ingest_rate = rate(alone.answered, alone.elapsed);
    let drain_rate = backlog as f64 / drain.as_secs_f64();
    println!();
    println!(
        "ingest alone, {} events ({} unique) in {:.2} s: {ingest_rate:.0} events/s (ack p99 {:.1} ms per batch of {})",
        alone.answered,
        alone.accepted,
        alone.elapsed.as_secs_f64(),
        alone.latency.p99,
        args.batch
    );
    println!(
        "enrichment in process: {backlog} events in {:.2} s: {drain_rate:.0} events/s ({:.2} x the ingest rate); {:.1} µs of CPU per event",
        drain.as_secs_f64(),
        drain_rate / ingest_rate,
        drain_cpu * 1e6 / backlog as f64
    );
    println!(
        "ingest with the enricher running: {:.0} events/s; backlog when the last batch was acknowledged: {backlog_at_end} events",
        rate(together.answered, together.elapsed)
    );
    println!(
        "  every event stored and enriched {:.2} s after the first was sent: {:.0} events/s end to end",
        all_enriched.as_secs_f64(),
        rate(together.accepted, all_enriched)
    );
    Ok(())
}

/// A running `aforo ingest` on the benchmark database.
struct Aforo {
    child: tokio::process::Child,
    grpc: String,
    key: String,
}

async fn aforo_cli(bin: &PathBuf, args: &[&str]) -> anyhow::Result<String> {
    let output = Command::new(bin)
        .args(args)
        .env("AFORO_LOG", "warn")
        .output()
        .await?;
    if !output.status.success() {
        bail!(
            "aforo {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

/// Creates the `bench` tenant in `database`; returns an API key of it.
async fn bench_tenant(bin: &PathBuf, database: &str) -> anyhow::Result<String> {
    aforo_cli(
        bin,
        &["tenants", "create", "bench", "--database-url", database],
    )
    .await?;
    aforo_cli(
        bin,
        &[
            "keys",
            "create",
            "--tenant",
            "bench",
            "--database-url",
            database,
        ],
    )
    .await
}

async fn start_aforo(bin: &PathBuf, database: &str) -> anyhow::Result<Aforo> {
    let key = bench_tenant(bin, database).await?;
    let (child, grpc) = spawn_ready(bin, &["ingest", "--database-url", database]).await?;
    Ok(Aforo { child, grpc, key })
}

const COLUMNS: &str = "id, tenant_id, dedup_key, event_id, source, type, customer, time, \
    properties, tier, tier_detail, status, flags, gates, validation_hash, received_at, node";

/// One row as aforo would store it, for the baselines.
struct Row {
    id: Uuid,
    dedup_key: String,
    event: SourceEvent,
    properties: String,
    gates: String,
    hash: String,
}

fn rows(work: &Workload) -> Vec<Row> {
    let key = [7u8; 32];
    let mut seen = HashSet::new();
    let mut out = Vec::with_capacity(work.unique);
    for event in work.streams.iter().flatten().flatten() {
        if !seen.insert(event.id.clone()) {
            continue;
        }
        let candidate = aforo_ingest::decode::from_proto(event);
        let gates = aforo_ingest::gates::GateConfig::default();
        let admitted =
            match aforo_ingest::gates::evaluate(&candidate, Tier::Sdk, &gates, None, Utc::now()) {
                aforo_ingest::gates::GateDecision::Admit(a) => a,
                aforo_ingest::gates::GateDecision::Reject(r) => {
                    panic!("bench event rejected: {r:?}")
                }
            };
        let id = Uuid::now_v7();
        let results = GateResults::accepted(false);
        out.push(Row {
            hash: validation_hash(
                &key,
                "bench",
                &id.to_string(),
                &admitted.event,
                &admitted.properties_json,
                &results,
            ),
            id,
            dedup_key: admitted.dedup_key,
            properties: admitted.properties_json,
            event: admitted.event,
            gates: results.to_json(),
        });
    }
    out
}

/// Escapes a value for COPY's text format.
fn copy_text(value: &str, out: &mut String) {
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c => out.push(c),
        }
    }
}

fn copy_line(row: &Row, tenant: Uuid, received: &str, out: &mut String) {
    let fields = [
        row.id.to_string(),
        tenant.to_string(),
        row.dedup_key.clone(),
        row.event.id.clone(),
        row.event.source.clone(),
        row.event.event_type.clone(),
        row.event.customer.clone(),
        format_time(&row.event.time),
        row.properties.clone(),
        row.event.tier.as_str().to_owned(),
        row.event.tier_detail.clone(),
        "ACCEPTED".to_owned(),
        "0".to_owned(),
        row.gates.clone(),
        row.hash.clone(),
        received.to_owned(),
        "bench".to_owned(),
    ];
    for (i, field) in fields.iter().enumerate() {
        if i > 0 {
            out.push('\t');
        }
        copy_text(field, out);
    }
    out.push('\n');
}

/// A fresh table with the events table's shape: columns, defaults, identity
/// and every index (the foreign key aside, which only makes aforo slower).
async fn shaped_table(conn: &mut PgConnection, name: &str) -> anyhow::Result<()> {
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "DROP TABLE IF EXISTS {name}; CREATE TABLE {name} (LIKE events INCLUDING ALL)"
    )))
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// COPY of `rows` over `connections` connections, each one COPY of its share.
async fn copy_rows(
    database: &str,
    rows: &Arc<Vec<Row>>,
    tenant: Uuid,
    connections: usize,
) -> anyhow::Result<(Duration, f64)> {
    let mut conn = PgConnection::connect(database).await?;
    shaped_table(&mut conn, "bench_copy").await?;
    let received = format_time(&Utc::now());
    // Encode first: the ceiling is the database's, not our formatting's.
    let share = rows.len().div_ceil(connections);
    let payloads: Vec<String> = rows
        .chunks(share)
        .map(|chunk| {
            let mut text = String::new();
            for row in chunk {
                copy_line(row, tenant, &received, &mut text);
            }
            text
        })
        .collect();
    let mut conns = Vec::new();
    for _ in 0..payloads.len() {
        conns.push(PgConnection::connect(database).await?);
    }
    // PostgreSQL's CPU is read while the COPY backends are still alive.
    let pg_before = cpu_of_all("postgres");
    let start = Instant::now();
    let mut tasks = Vec::new();
    for (mut conn, payload) in conns.into_iter().zip(payloads) {
        tasks.push(tokio::spawn(async move {
            let mut copy = conn
                .copy_in_raw(&format!("COPY bench_copy ({COLUMNS}) FROM STDIN"))
                .await?;
            for piece in payload.as_bytes().chunks(1 << 20) {
                copy.send(piece).await?;
            }
            copy.finish().await?;
            Ok::<_, anyhow::Error>(conn)
        }));
    }
    let mut done = Vec::new();
    for task in tasks {
        done.push(task.await??);
    }
    let elapsed = start.elapsed();
    let pg_cpu = cpu_of_all("postgres") - pg_before;
    drop(done);
    Ok((elapsed, pg_cpu))
}

/// One INSERT per event, autocommit, `connections` at once.
async fn insert_rows(
    database: &str,
    rows: &Arc<Vec<Row>>,
    tenant: Uuid,
    connections: usize,
    count: usize,
) -> anyhow::Result<(usize, Duration)> {
    let mut conn = PgConnection::connect(database).await?;
    shaped_table(&mut conn, "bench_insert").await?;
    let count = count.min(rows.len());
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut conns = Vec::new();
    for _ in 0..connections {
        conns.push(PgConnection::connect(database).await?);
    }
    let start = Instant::now();
    let mut tasks = Vec::new();
    for mut conn in conns {
        let (rows, next) = (rows.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= count {
                    return Ok::<_, anyhow::Error>(());
                }
                let row = &rows[i];
                sqlx::query(
                    "INSERT INTO bench_insert (id, tenant_id, dedup_key, event_id, source, type,
                         customer, time, properties, tier, tier_detail, status, flags, gates,
                         validation_hash, received_at, node)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9::json, $10, $11, 'ACCEPTED', 0,
                         $12, $13, now(), 'bench')
                     ON CONFLICT (tenant_id, dedup_key) DO NOTHING",
                )
                .bind(row.id)
                .bind(tenant)
                .bind(&row.dedup_key)
                .bind(&row.event.id)
                .bind(&row.event.source)
                .bind(&row.event.event_type)
                .bind(&row.event.customer)
                .bind(row.event.time)
                .bind(&row.properties)
                .bind(row.event.tier.as_str())
                .bind(&row.event.tier_detail)
                .bind(&row.gates)
                .bind(&row.hash)
                .execute(&mut conn)
                .await?;
            }
        }));
    }
    for task in tasks {
        task.await??;
    }
    Ok((count, start.elapsed()))
}

/// CPU seconds (user + system) a process has used, from /proc.
fn cpu_seconds(pid: u32) -> f64 {
    stat_cpu(pid, false)
}

/// CPU seconds of a process and of its children that have exited and been
/// waited for (PostgreSQL's postmaster reaps the backends of closed
/// connections and autovacuum workers: their CPU stays counted).
fn cpu_seconds_with_children(pid: u32) -> f64 {
    stat_cpu(pid, true)
}

fn stat_cpu(pid: u32, children: bool) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // Fields after the command name, which is in parentheses and may hold spaces.
    let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
        return 0.0;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 of stat, 12 and 13 after the
    // name; cutime and cstime (children waited for) 16 and 17.
    let own = ticks(11) + ticks(12);
    let reaped = if children { ticks(13) + ticks(14) } else { 0.0 };
    (own + reaped) / 100.0
}

/// CPU seconds used by every process whose command is `name`, and by their
/// children that have exited.
fn cpu_of_all(name: &str) -> f64 {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0.0;
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == name)
        })
        .map(cpu_seconds_with_children)
        .sum()
}

/// Where the CPU went during a run: aforo, PostgreSQL, this load generator.
struct CpuSplit {
    aforo: f64,
    postgres: f64,
    loadgen: f64,
}

fn cpu_now(aforo_pid: u32) -> CpuSplit {
    CpuSplit {
        aforo: cpu_seconds(aforo_pid),
        postgres: cpu_of_all("postgres"),
        loadgen: cpu_seconds(std::process::id()),
    }
}

fn rate(n: usize, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64()
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let aforo_bin = match &args.aforo {
        Some(path) => path.clone(),
        None => std::env::current_exe()?
            .parent()
            .context("no folder of the current binary")?
            .join("aforo"),
    };
    if args.standalone {
        return standalone(&args, &aforo_bin).await;
    }
    let database_url = args
        .database_url
        .clone()
        .context("--database-url (or AFORO_TEST_DATABASE_URL) names the PostgreSQL to use")?;

    // A fresh database for this run.
    let name = format!("aforo_bench_{}", Utc::now().format("%Y%m%d%H%M%S"));
    let mut admin = PgConnection::connect(&database_url).await?;
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut admin)
        .await?;
    let base = database_url
        .rsplit_once('/')
        .context("URL has a database")?
        .0;
    let database = format!("{base}/{name}");

    let mut aforo = start_aforo(&aforo_bin, &database).await?;
    billing_context(&database).await?;
    println!(
        "aforo ingest on PostgreSQL; {} streams x {} events/batch, {:.0}% duplicate ids",
        args.streams,
        args.batch,
        args.dup_ratio * 100.0
    );

    // Warm-up: connections, prepared statements, caches.
    drive(
        &aforo.grpc,
        &aforo.key,
        workload("warm", 20_000, args.streams, args.batch, args.dup_ratio),
        None,
    )
    .await?;

    let work = workload("run", args.events, args.streams, args.batch, args.dup_ratio);
    let (offered, unique) = (work.total, work.unique);
    let baseline_work = workload("run", args.events, args.streams, args.batch, args.dup_ratio);
    let aforo_pid = aforo.child.id().context("aforo has no pid")?;
    let cpu_before = cpu_now(aforo_pid);
    let throughput = drive(&aforo.grpc, &aforo.key, work, None).await?;
    let cpu_after = cpu_now(aforo_pid);
    if throughput.accepted != unique || throughput.answered != offered {
        bail!(
            "aforo answered {} of {offered} events and stored {} of {unique} unique ones",
            throughput.answered,
            throughput.accepted
        );
    }

    // The latency run: a fixed offered rate.
    let per_batch =
        Duration::from_secs_f64((args.batch * args.streams) as f64 / args.paced_rate as f64);
    let paced_events = args.paced_rate * args.paced_seconds as usize;
    let paced = drive(
        &aforo.grpc,
        &aforo.key,
        workload(
            "paced",
            paced_events,
            args.streams,
            args.batch,
            args.dup_ratio,
        ),
        Some(per_batch),
    )
    .await?;

    // Enrichment of everything ingested, by two `aforo enrich` processes.
    let (enriched, enrich_time, enrich_cpu, enrich_pg_cpu) =
        enrich(&aforo_bin, &database, 2).await?;

    // Both at once, as in production: the same offered load while two
    // enrichers run, then until the backlog is gone.
    let together = together(
        &aforo_bin,
        &aforo,
        &database,
        workload(
            "together",
            args.events,
            args.streams,
            args.batch,
            args.dup_ratio,
        ),
    )
    .await?;
    aforo.child.start_kill()?;
    aforo.child.wait().await?;

    // Baselines on the same rows.
    let tenant = Uuid::now_v7();
    let rows = Arc::new(rows(&baseline_work));
    let (copy1, _) = copy_rows(&database, &rows, tenant, 1).await?;
    let (copy2, copy2_pg_cpu) = copy_rows(&database, &rows, tenant, 2).await?;
    let (copy_time, copy_conns) = if copy1 <= copy2 {
        (copy1, 1)
    } else {
        (copy2, 2)
    };
    let (inserted, insert_time) = insert_rows(
        &database,
        &rows,
        tenant,
        args.insert_connections,
        args.insert_events,
    )
    .await?;

    let aforo_events = rate(throughput.answered, throughput.elapsed);
    let aforo_rows = rate(throughput.accepted, throughput.elapsed);
    let copy_rate = rate(rows.len(), copy_time);
    let insert_rate = rate(inserted, insert_time);
    println!();
    println!(
        "durable ingest, {offered} events ({unique} unique) in {:.2} s",
        throughput.elapsed.as_secs_f64()
    );
    println!("  aforo            {aforo_events:>10.0} events/s  ({aforo_rows:.0} stored rows/s)");
    println!(
        "  ack latency      p50 {:.1} ms  p99 {:.1} ms  max {:.1} ms (per batch of {})",
        throughput.latency.p50, throughput.latency.p99, throughput.latency.max, args.batch
    );
    println!(
        "paced at {} events/s for {} s: ack p50 {:.1} ms  p99 {:.1} ms  max {:.1} ms ({} events)",
        args.paced_rate,
        args.paced_seconds,
        paced.latency.p50,
        paced.latency.p99,
        paced.latency.max,
        paced.answered
    );
    let wall = throughput.elapsed.as_secs_f64();
    println!(
        "  CPU during the run (of {:.1} core-seconds on {} cores): aforo {:.1} s, PostgreSQL {:.1} s, load generator {:.1} s",
        wall * std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1) as f64,
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
        cpu_after.aforo - cpu_before.aforo,
        cpu_after.postgres - cpu_before.postgres,
        cpu_after.loadgen - cpu_before.loadgen
    );
    println!("baselines, same rows, same table shape and indexes");
    println!(
        "  raw COPY         {copy_rate:>10.0} rows/s    (best of 1 and 2 connections: {copy_conns}; 1: {:.0}, 2: {:.0})",
        rate(rows.len(), copy1),
        rate(rows.len(), copy2)
    );
    println!(
        "  PostgreSQL CPU per stored row: {:.1} µs for aforo's commits, {:.1} µs for COPY (2 connections)",
        (cpu_after.postgres - cpu_before.postgres) * 1e6 / throughput.accepted as f64,
        copy2_pg_cpu * 1e6 / rows.len() as f64
    );
    println!(
        "  INSERT per event {insert_rate:>10.0} rows/s    ({} connections, autocommit, {inserted} rows)",
        args.insert_connections
    );
    println!(
        "enrichment: {enriched} events in {:.2} s by 2 enrich processes: {:.0} events/s ({:.2} x the durable ingest rate)",
        enrich_time.as_secs_f64(),
        rate(enriched, enrich_time),
        rate(enriched, enrich_time) / aforo_events
    );
    println!(
        "  CPU per enriched event: {:.1} µs in the enrichers, {:.1} µs in PostgreSQL",
        enrich_cpu * 1e6 / enriched as f64,
        enrich_pg_cpu * 1e6 / enriched as f64
    );
    println!(
        "ingest with 2 enrich processes running: {:.0} events/s; backlog when the last batch was acknowledged: {} events",
        rate(together.ingest.answered, together.ingest.elapsed),
        together.backlog_at_end
    );
    println!(
        "  every event stored and enriched {:.2} s after the first was sent: {:.0} events/s end to end",
        together.all_enriched.as_secs_f64(),
        rate(together.ingest.accepted, together.all_enriched)
    );
    println!("ratios");
    println!(
        "  aforo / raw COPY        {:.2} (events), {:.2} (stored rows)",
        aforo_events / copy_rate,
        aforo_rows / copy_rate
    );
    println!(
        "  aforo / INSERT per event {:.1}x",
        aforo_events / insert_rate
    );

    drop(admin);
    if args.keep_database {
        println!("kept database {name}");
        return Ok(());
    }
    let mut admin = PgConnection::connect(&database_url).await?;
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
    )))
    .execute(&mut admin)
    .await?;
    Ok(())
}
