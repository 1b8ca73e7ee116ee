//! Logs and traces: one setup for every command.
//!
//! Logs go to stderr, as text or as one JSON object per line
//! (`--log-format json`), filtered by `--log`. Traces are exported over
//! OTLP/HTTP when the standard OpenTelemetry variables name a collector:
//! `OTEL_EXPORTER_OTLP_ENDPOINT` (a base URL, `/v1/traces` is appended) or
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` (used as is);
//! `OTEL_EXPORTER_OTLP_PROTOCOL` is `http/protobuf` (the default) or
//! `http/json`; `OTEL_SERVICE_NAME` defaults to `aforo-<command>`; the batch
//! processor's `OTEL_BSP_*` variables apply. A request's spans carry
//! `trace_id`, so a log line leads to its trace.

use anyhow::{Context, bail};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing::Level;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::filter::filter_fn;
use tracing_subscriber::layer::{Layer as _, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;

#[derive(Clone, Copy, Debug, Default, clap::ValueEnum)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// Flushes the exported spans when dropped (at exit).
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take()
            && let Err(e) = provider.shutdown()
        {
            eprintln!("aforo: could not flush the last traces: {e}");
        }
    }
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

fn exporter() -> anyhow::Result<Option<opentelemetry_otlp::SpanExporter>> {
    let endpoint = env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").or_else(|| {
        env("OTEL_EXPORTER_OTLP_ENDPOINT")
            .map(|base| format!("{}/v1/traces", base.trim_end_matches('/')))
    });
    let Some(endpoint) = endpoint else {
        return Ok(None);
    };
    let protocol = env("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
        .or_else(|| env("OTEL_EXPORTER_OTLP_PROTOCOL"))
        .unwrap_or_else(|| "http/protobuf".into());
    let protocol = match protocol.as_str() {
        "http/protobuf" => Protocol::HttpBinary,
        "http/json" => Protocol::HttpJson,
        other => bail!(
            "OTEL_EXPORTER_OTLP_PROTOCOL {other:?} is not supported: use http/protobuf or http/json"
        ),
    };
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_endpoint(endpoint.clone())
        .with_protocol(protocol)
        .build()
        .with_context(|| format!("cannot export traces to {endpoint}"))?;
    Ok(Some(exporter))
}

/// Sets up logging and, when a collector is named, trace export.
pub fn init(filter: &str, format: LogFormat, command: &str) -> anyhow::Result<Telemetry> {
    let filter = EnvFilter::try_new(filter)
        .with_context(|| format!("--log {filter:?} is not a log filter"))?;
    let provider = exporter()?.map(|exporter| {
        let service = env("OTEL_SERVICE_NAME").unwrap_or_else(|| format!("aforo-{command}"));
        SdkTracerProvider::builder()
            .with_resource(Resource::builder().with_service_name(service).build())
            .with_batch_exporter(exporter)
            .build()
    });
    // Traces hold aforo's own spans at info and above whatever `--log`
    // says: the log filter decides what is printed, not what is traced.
    let otel = provider.as_ref().map(|p| {
        tracing_opentelemetry::layer()
            .with_tracer(p.tracer("aforo"))
            .with_filter(filter_fn(|m| {
                m.target().starts_with("aforo") && *m.level() <= Level::INFO
            }))
    });
    let registry = tracing_subscriber::registry().with(otel);
    match format {
        LogFormat::Text => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .with_writer(std::io::stderr)
                    .with_filter(filter),
            )
            .try_init(),
        LogFormat::Json => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .with_current_span(true)
                    .with_span_list(false)
                    .with_writer(std::io::stderr)
                    .with_filter(filter),
            )
            .try_init(),
    }
    .context("cannot set up logging")?;
    Ok(Telemetry { provider })
}
