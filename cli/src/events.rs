//! `aforo events send` and `aforo events tail`: client commands, over gRPC
//! and HTTP like any other client.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use aforo_api::v1::events::StoredEvent;
use aforo_api::v1::{Page, time};
use aforo_ingest::decode::json_to_struct;
use aforo_proto::v1 as pb;
use aforo_proto::v1::ingest_service_client::IngestServiceClient;
use anyhow::{Context, bail};
use chrono::{DateTime, Utc};
use clap::{Args, Subcommand};
use serde_json::{Map, Value};
use tonic::metadata::MetadataValue;

use crate::client::{Client, Credentials, Server};

#[derive(Subcommand)]
pub enum EventsCommand {
    /// Send events over gRPC: one from flags, or many from a JSON or NDJSON file.
    Send(SendArgs),
    /// Follow the events a server stores, as they arrive.
    Tail(TailArgs),
}

#[derive(Args)]
pub struct SendArgs {
    /// gRPC address of the server.
    #[arg(long, env = "AFORO_GRPC_URL", default_value = "http://127.0.0.1:8471")]
    grpc: String,
    #[command(flatten)]
    credentials: Credentials,
    /// A JSON array, one JSON object, or NDJSON (`-` reads standard input).
    #[arg(long, short, conflicts_with_all = ["id", "event_type", "customer"])]
    file: Option<PathBuf>,
    /// The event's idempotency key.
    #[arg(long, required_unless_present = "file")]
    id: Option<String>,
    #[arg(long, default_value = "aforo-cli")]
    source: String,
    #[arg(long = "type", required_unless_present = "file")]
    event_type: Option<String>,
    #[arg(long, required_unless_present = "file")]
    customer: Option<String>,
    /// RFC 3339 time (default: now).
    #[arg(long)]
    time: Option<String>,
    /// A property as key=value; the value is read as JSON when it parses, else as a string.
    #[arg(long = "property", short = 'p', value_name = "KEY=VALUE")]
    properties: Vec<String>,
    /// Events per request.
    #[arg(long, default_value_t = 500)]
    batch_size: usize,
    /// Print each result as a JSON line.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub struct TailArgs {
    /// HTTP address of the server.
    #[arg(long, env = "AFORO_HTTP_URL", default_value = "http://127.0.0.1:8470")]
    http: String,
    #[command(flatten)]
    credentials: Credentials,
    #[arg(long)]
    customer: Option<String>,
    #[arg(long = "type")]
    event_type: Option<String>,
    /// Start from the first stored event instead of from now.
    #[arg(long)]
    from_start: bool,
    /// Poll interval.
    #[arg(long, default_value = "1s", value_parser = aforo_crds::duration::parse)]
    interval: Duration,
    /// Print each event as a JSON line.
    #[arg(long)]
    json: bool,
    /// Stop after this many events (default: follow forever).
    #[arg(long)]
    limit: Option<usize>,
}

pub async fn run(command: EventsCommand) -> anyhow::Result<ExitCode> {
    match command {
        EventsCommand::Send(args) => send(args).await,
        EventsCommand::Tail(args) => tail(args).await,
    }
}

fn timestamp(text: &str) -> anyhow::Result<prost_types::Timestamp> {
    let time = DateTime::parse_from_rfc3339(text)
        .with_context(|| format!("time {text:?} is not RFC 3339, e.g. 2026-11-29T12:00:00Z"))?
        .with_timezone(&Utc);
    Ok(to_timestamp(time))
}

fn to_timestamp(time: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: time.timestamp(),
        nanos: time.timestamp_subsec_nanos() as i32,
    }
}

fn tier(name: &str) -> anyhow::Result<pb::Tier> {
    pb::Tier::from_str_name(&format!("TIER_{}", name.to_ascii_uppercase())).with_context(|| {
        format!("tier {name:?} is not one of GATEWAY, SDK, REST, WEBHOOK, BATCH, MCP")
    })
}

/// One JSON event (aforo's shape) as a protobuf event. Fields the server
/// requires are left for its gates to judge; only what proto cannot carry
/// (an unparseable time) is refused here.
fn event_from_json(value: &Value, position: usize) -> anyhow::Result<pb::Event> {
    let object = value
        .as_object()
        .with_context(|| format!("event {position} is not a JSON object"))?;
    let text = |name: &str| {
        object
            .get(name)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    let time = match object.get("time").and_then(Value::as_str) {
        Some(t) => Some(timestamp(t).with_context(|| format!("event {position}"))?),
        None => None,
    };
    let properties = match object.get("properties") {
        Some(Value::Object(map)) => Some(json_to_struct(map)),
        None | Some(Value::Null) => None,
        Some(_) => bail!("event {position}: `properties` must be a JSON object"),
    };
    let tier = match object.get("tier").and_then(Value::as_str) {
        Some(name) => tier(name).with_context(|| format!("event {position}"))? as i32,
        None => 0,
    };
    Ok(pb::Event {
        id: text("id"),
        source: text("source"),
        r#type: text("type"),
        customer: text("customer"),
        time,
        properties,
        tier,
        tier_detail: text("tier_detail"),
    })
}

fn read_events(path: &PathBuf) -> anyhow::Result<Vec<pb::Event>> {
    let text = if path.as_os_str() == "-" {
        std::io::read_to_string(std::io::stdin()).context("cannot read standard input")?
    } else {
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?
    };
    let values: Vec<Value> = match serde_json::from_str::<Value>(&text) {
        Ok(Value::Array(items)) => items,
        Ok(object @ Value::Object(_)) => vec![object],
        _ => text
            .lines()
            .enumerate()
            .filter(|(_, line)| !line.trim().is_empty())
            .map(|(n, line)| {
                serde_json::from_str(line).with_context(|| format!("line {} is not JSON", n + 1))
            })
            .collect::<anyhow::Result<_>>()?,
    };
    values
        .iter()
        .enumerate()
        .map(|(i, v)| event_from_json(v, i))
        .collect()
}

fn event_from_flags(args: &SendArgs) -> anyhow::Result<pb::Event> {
    let mut properties = Map::new();
    for pair in &args.properties {
        let (key, value) = pair
            .split_once('=')
            .with_context(|| format!("property {pair:?} is not KEY=VALUE"))?;
        let value = serde_json::from_str(value).unwrap_or_else(|_| Value::String(value.to_owned()));
        properties.insert(key.to_owned(), value);
    }
    Ok(pb::Event {
        id: args.id.clone().unwrap_or_default(),
        source: args.source.clone(),
        r#type: args.event_type.clone().unwrap_or_default(),
        customer: args.customer.clone().unwrap_or_default(),
        time: Some(match &args.time {
            Some(t) => timestamp(t)?,
            None => to_timestamp(Utc::now()),
        }),
        properties: Some(json_to_struct(&properties)),
        tier: 0,
        tier_detail: format!("aforo-cli/{}", env!("CARGO_PKG_VERSION")),
    })
}

async fn send(args: SendArgs) -> anyhow::Result<ExitCode> {
    let events = match &args.file {
        Some(path) => read_events(path)?,
        None => vec![event_from_flags(&args)?],
    };
    let key: MetadataValue<_> = format!("Bearer {}", args.credentials.key()?)
        .parse()
        .context("the API key has characters a header cannot carry")?;
    let channel = tonic::transport::Endpoint::from_shared(args.grpc.clone())
        .with_context(|| {
            format!(
                "{:?} is not a gRPC URL such as http://127.0.0.1:8471",
                args.grpc
            )
        })?
        .connect()
        .await
        .with_context(|| format!("cannot reach aforo at {}", args.grpc))?;
    let mut client =
        IngestServiceClient::with_interceptor(channel, move |mut request: tonic::Request<()>| {
            request.metadata_mut().insert("authorization", key.clone());
            Ok(request)
        });
    let (mut accepted, mut duplicates, mut rejected) = (0, 0, 0);
    for (n, chunk) in events.chunks(args.batch_size.max(1)).enumerate() {
        let response = client
            .ingest(pb::IngestRequest {
                batch_id: format!("cli-{n}"),
                events: chunk.to_vec(),
            })
            .await
            .map_err(|status| anyhow::anyhow!("{}: {}", status.code(), status.message()))?
            .into_inner();
        accepted += response.accepted;
        duplicates += response.duplicates;
        rejected += response.rejected;
        for result in response.results {
            print_result(&result, args.json, n * args.batch_size);
        }
    }
    eprintln!("{accepted} accepted, {duplicates} duplicate, {rejected} rejected");
    Ok(if rejected > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

fn print_result(result: &pb::EventResult, json: bool, offset: usize) {
    let status = pb::EventStatus::try_from(result.status)
        .map(|s| {
            s.as_str_name()
                .trim_start_matches("EVENT_STATUS_")
                .to_owned()
        })
        .unwrap_or_else(|_| result.status.to_string());
    let flags: Vec<String> = result
        .flags
        .iter()
        .filter_map(|f| pb::EventFlag::try_from(*f).ok())
        .map(|f| f.as_str_name().trim_start_matches("EVENT_FLAG_").to_owned())
        .collect();
    let index = offset + result.index as usize;
    if json {
        println!(
            "{}",
            serde_json::json!({
                "index": index, "id": result.id, "status": status, "reason": result.reason,
                "message": result.message, "flags": flags, "stored_event_id": result.stored_event_id,
            })
        );
    } else if result.reason.is_empty() {
        let flags = if flags.is_empty() {
            String::new()
        } else {
            format!(" [{}]", flags.join(","))
        };
        println!(
            "{index}\t{status}\t{}\tstored={}{flags}",
            result.id, result.stored_event_id
        );
    } else {
        println!(
            "{index}\t{status}\t{}\t{}: {}",
            result.id, result.reason, result.message
        );
    }
}

async fn tail(args: TailArgs) -> anyhow::Result<ExitCode> {
    let client = Client::new(&Server {
        http: args.http.clone(),
        credentials: args.credentials.clone(),
    })?;
    let fetch = |query: Vec<(&'static str, String)>| {
        let client = &client;
        async move { client.get::<Page<StoredEvent>>("/v1/events", &query).await }
    };
    let mut filters = Vec::new();
    if let Some(customer) = &args.customer {
        filters.push(("customer", customer.clone()));
    }
    if let Some(event_type) = &args.event_type {
        filters.push(("type", event_type.clone()));
    }
    let mut cursor = String::from("0");
    if !args.from_start {
        let mut query = filters.clone();
        query.extend([("order", "desc".to_owned()), ("limit", "1".to_owned())]);
        if let Some(newest) = fetch(query).await?.items.first() {
            cursor = newest.cursor.clone();
        }
    }
    let mut printed = 0usize;
    loop {
        let mut query = filters.clone();
        query.extend([("after", cursor.clone()), ("limit", "1000".to_owned())]);
        let events = fetch(query).await?.items;
        for event in &events {
            if args.json {
                println!("{}", serde_json::to_string(event)?);
            } else {
                let flags = event.flags.join(",");
                println!(
                    "{}\t{}\t{}\t{}\t{}{}",
                    time::format(&event.time),
                    event.customer,
                    event.event_type,
                    event.id,
                    Value::Object(event.properties.clone()),
                    if flags.is_empty() {
                        String::new()
                    } else {
                        format!("\t[{flags}]")
                    }
                );
            }
            cursor = event.cursor.clone();
            printed += 1;
            if args.limit.is_some_and(|limit| printed >= limit) {
                return Ok(ExitCode::SUCCESS);
            }
        }
        if events.len() < 1000 {
            tokio::time::sleep(args.interval).await;
        }
    }
}
