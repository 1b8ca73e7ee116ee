//! The ingest role's configuration: flags, each with an environment fallback.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Args;

use crate::committer::CommitterConfig;
use crate::gates::{GateConfig, SchemaLimits};

fn duration(text: &str) -> Result<Duration, String> {
    aforo_crds::duration::parse(text)
}

#[derive(Args, Clone, Debug)]
pub struct IngestConfig {
    /// Address of the HTTP API (REST, CloudEvents, health, metrics).
    #[arg(long, env = "AFORO_HTTP_ADDR", default_value = "127.0.0.1:8470")]
    pub http_addr: SocketAddr,

    /// Address of the gRPC API.
    #[arg(long, env = "AFORO_GRPC_ADDR", default_value = "127.0.0.1:8471")]
    pub grpc_addr: SocketAddr,

    /// Name of this node in every stored event's provenance (defaults to the host name).
    #[arg(long, env = "AFORO_NODE")]
    pub node: Option<String>,

    /// Reject events dated further than this ahead of the server clock.
    #[arg(long, env = "AFORO_MAX_FUTURE", default_value = "5m", value_parser = duration)]
    pub max_future: Duration,

    /// Reject events older than this.
    #[arg(long, env = "AFORO_MAX_AGE", default_value = "90d", value_parser = duration)]
    pub max_age: Duration,

    /// Accept but flag LATE events older than this.
    #[arg(long, env = "AFORO_LATE_AFTER", default_value = "24h", value_parser = duration)]
    pub late_after: Duration,

    /// Largest request body, in bytes (HTTP) or message (gRPC).
    #[arg(long, env = "AFORO_MAX_BODY_BYTES", default_value_t = 4 * 1024 * 1024)]
    pub max_body_bytes: usize,

    /// Most events in one request.
    #[arg(long, env = "AFORO_MAX_BATCH_EVENTS", default_value_t = 1000)]
    pub max_batch_events: usize,

    /// Deepest JSON nesting of a request body (HTTP).
    #[arg(long, env = "AFORO_MAX_JSON_DEPTH", default_value_t = 16)]
    pub max_json_depth: usize,

    /// Deepest nesting of one event's properties.
    #[arg(long, env = "AFORO_MAX_PROPERTIES_DEPTH", default_value_t = 8)]
    pub max_properties_depth: usize,

    /// Most events and rejections in one group-commit transaction.
    #[arg(long, env = "AFORO_COMMIT_MAX_EVENTS", default_value_t = 4096)]
    pub commit_max_events: usize,

    /// How long a group commit waits for more requests.
    #[arg(long, env = "AFORO_COMMIT_LINGER", default_value = "1ms", value_parser = duration)]
    pub commit_linger: Duration,

    /// Folder of webhook secrets, laid out as Kubernetes mounts Secrets:
    /// `<dir>/<namespace>/<secret name>/<key>` (standalone: `<data dir>/secrets`).
    #[arg(long, env = "AFORO_SECRETS_DIR")]
    pub secrets_dir: Option<std::path::PathBuf>,

    /// Close each gRPC connection after this long (after a grace period for
    /// calls in flight), so that clients reconnect and spread over the
    /// replicas there are now, e.g. `5m`. Default: connections live on.
    #[arg(long, env = "AFORO_GRPC_MAX_CONNECTION_AGE", value_parser = duration)]
    pub grpc_max_connection_age: Option<Duration>,

    /// Group-commit transactions in flight at once (SQLite always uses 1).
    #[arg(long, env = "AFORO_COMMIT_WRITERS", default_value_t = 4)]
    pub commit_writers: usize,
    #[command(flatten)]
    pub http: HttpLimitsArgs,
}

/// How a role's HTTP server bounds its requests.
#[derive(Args, Clone, Debug)]
pub struct HttpLimitsArgs {
    /// The longest an HTTP request may take (streamed batch uploads are not
    /// bounded); over it the answer is 504 TIMEOUT.
    #[arg(long, env = "AFORO_REQUEST_TIMEOUT", default_value = "60s", value_parser = duration)]
    pub request_timeout: Duration,
    /// The most HTTP requests handled at once; more wait their turn.
    #[arg(long, env = "AFORO_MAX_CONCURRENT_REQUESTS", default_value_t = 1024,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub max_concurrent_requests: u32,
}

impl HttpLimitsArgs {
    pub fn limits(&self) -> aforo_api::host::Limits {
        aforo_api::host::Limits {
            timeout: self.request_timeout,
            concurrency: self.max_concurrent_requests as usize,
        }
    }
}

impl IngestConfig {
    pub fn gates(&self) -> GateConfig {
        let span = |d: Duration| chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX);
        GateConfig {
            max_future: span(self.max_future),
            max_age: span(self.max_age),
            late_after: span(self.late_after),
            schema: SchemaLimits {
                max_properties_depth: self.max_properties_depth,
                ..SchemaLimits::default()
            },
        }
    }

    pub fn committer(&self, backend: &str) -> CommitterConfig {
        CommitterConfig {
            max_group_events: self.commit_max_events,
            linger: self.commit_linger,
            writers: if backend == "sqlite" {
                1
            } else {
                self.commit_writers
            },
            ..CommitterConfig::default()
        }
    }

    pub fn node_name(&self) -> String {
        self.node
            .clone()
            .or_else(|| std::env::var("HOSTNAME").ok().filter(|h| !h.is_empty()))
            .or_else(|| {
                std::fs::read_to_string("/etc/hostname")
                    .ok()
                    .map(|h| h.trim().to_owned())
                    .filter(|h| !h.is_empty())
            })
            .unwrap_or_else(|| "aforo".to_owned())
    }

    pub fn limits(&self) -> RequestLimits {
        RequestLimits {
            max_body_bytes: self.max_body_bytes,
            max_batch_events: self.max_batch_events,
            max_json_depth: self.max_json_depth,
        }
    }
}

/// Bounds on one request, shared by the front doors.
#[derive(Clone, Copy, Debug)]
pub struct RequestLimits {
    pub max_body_bytes: usize,
    pub max_batch_events: usize,
    pub max_json_depth: usize,
}
