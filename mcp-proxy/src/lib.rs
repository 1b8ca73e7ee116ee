//! `aforo mcp-proxy`: the MCP metering sidecar. It stands between MCP
//! clients and one MCP server, relays every message unchanged, and turns
//! each `tools/call` into a Source Event (tier MCP) — tool, server, session,
//! agent, outcome, latency, sizes — with no change to the server.
//!
//! ```text
//!  client ⇄ transport (stdio.rs | http.rs) ⇄ server
//!                │ a copy of each message
//!            jsonrpc.rs (classify) → meter.rs → session.rs (pair, time, end)
//!                                       │ Metered
//!                                   event.rs (Source Event, idempotency key)
//!                                       │ outbox (bounded queue)
//!                       delivery.rs: spool writer → spool.rs (disk) → shipper → ingest (gRPC)
//! ```
//!
//! The relay never waits for metering: a message is written on before its
//! copy is classified, and events leave through a queue. The spool makes
//! ingest outages cost delay, not events; only a full spool loses events,
//! and the proxy says so loudly and keeps relaying.

pub mod delivery;
pub mod event;
pub mod framing;
pub mod http;
pub mod identity;
pub mod jsonrpc;
pub mod meter;
pub mod metrics;
pub mod session;
pub mod spool;
pub mod stdio;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aforo_proto::v1::ingest_service_client::IngestServiceClient;
use clap::Args;
use tokio::sync::{Notify, mpsc, watch};

use crate::delivery::{Bearer, Shipper, write_spool};
use crate::event::EventContext;
use crate::identity::{Identify, parse_api_key};
use crate::meter::Meter;
use crate::metrics::Metrics;
use crate::session::Outcome;
use crate::spool::{Spool, SpoolError};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Config(String),
    #[error("cannot {0}: {1}")]
    Io(String, #[source] std::io::Error),
    #[error(transparent)]
    Spool(#[from] SpoolError),
}

/// Events waiting between the meter and the spool writer.
const OUTBOX: usize = 65_536;

/// `aforo mcp-proxy`: stdio (`-- COMMAND…`) or HTTP (`--listen` and `--upstream`).
#[derive(Args, Debug)]
pub struct ProxyArgs {
    /// HTTP modes: the address clients connect to (Streamable HTTP and legacy SSE alike).
    #[arg(long, env = "AFORO_MCP_LISTEN", requires = "upstream")]
    pub listen: Option<SocketAddr>,

    /// HTTP modes: the MCP server, http://HOST:PORT with an optional path prefix.
    #[arg(long, env = "AFORO_MCP_UPSTREAM", requires = "listen")]
    pub upstream: Option<String>,

    /// stdio mode: the MCP server's command and arguments, after `--`.
    #[arg(last = true, value_name = "SERVER COMMAND")]
    pub command: Vec<String>,

    /// The MCP server's name in events (default: the command's or upstream's name).
    #[arg(long = "server", env = "AFORO_MCP_SERVER")]
    pub server: Option<String>,

    /// gRPC address of aforo ingest.
    #[arg(long, env = "AFORO_GRPC_URL", default_value = "http://127.0.0.1:8471")]
    pub ingest: String,

    /// API key for ingest (default: the standalone development key in --data-dir).
    #[arg(long, env = "AFORO_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,

    /// Where `aforo standalone` keeps its development key.
    #[arg(long, env = "AFORO_DATA_DIR", default_value = "aforo-data")]
    pub data_dir: PathBuf,

    /// The `source` of every event.
    #[arg(long, env = "AFORO_MCP_SOURCE", default_value = "mcp-proxy")]
    pub source: String,

    /// Bill every event to this customer (default: the agent).
    #[arg(long, env = "AFORO_MCP_CUSTOMER")]
    pub customer: Option<String>,

    /// The agent of every call (a sidecar in front of one agent; the stdio default).
    #[arg(long, env = "AFORO_MCP_AGENT")]
    pub agent: Option<String>,

    /// A request header carrying the caller's authenticated identity, set by
    /// an authenticating gateway in front of the proxy (e.g. x-forwarded-user).
    #[arg(long, env = "AFORO_MCP_AGENT_HEADER")]
    pub agent_header: Option<::http::HeaderName>,

    /// AGENT=KEY: requests presenting KEY (Authorization: Bearer, or
    /// X-API-Key) are AGENT's. Repeat, or comma-separate in the variable.
    #[arg(long = "agent-key", env = "AFORO_MCP_AGENT_KEYS", value_delimiter = ',',
          value_parser = parse_api_key, hide_env_values = true)]
    pub agent_keys: Vec<(String, String)>,

    /// The spool folder: events wait here until ingest acknowledges them.
    #[arg(long, env = "AFORO_MCP_SPOOL_DIR", default_value = "aforo-mcp-spool")]
    pub spool_dir: PathBuf,

    /// The spool's bound, in bytes; past it new events are lost (loudly).
    #[arg(long, env = "AFORO_MCP_SPOOL_MAX_BYTES", default_value_t = 256 * 1024 * 1024)]
    pub spool_max_bytes: u64,

    /// Events per ingest request.
    #[arg(long, env = "AFORO_MCP_BATCH", default_value_t = 500)]
    pub batch: usize,

    /// A tools/call without an answer after this long is metered as timed out.
    #[arg(long, env = "AFORO_MCP_CALL_TIMEOUT", default_value = "5m", value_parser = parse_duration)]
    pub call_timeout: Duration,

    /// A session without traffic for this long is ended.
    #[arg(long, env = "AFORO_MCP_SESSION_IDLE", default_value = "1h", value_parser = parse_duration)]
    pub session_idle: Duration,

    /// On exit, how long to keep sending spooled events to ingest.
    #[arg(long, env = "AFORO_MCP_DRAIN_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub drain_timeout: Duration,

    /// Largest message metered (a stdio line, a POST body, an SSE event);
    /// larger ones are relayed unmetered, except POST bodies, refused with 413.
    #[arg(long, env = "AFORO_MCP_MAX_MESSAGE_BYTES", default_value_t = 16 * 1024 * 1024)]
    pub max_message_bytes: usize,

    /// Address of /metrics and /healthz (off by default).
    #[arg(long, env = "AFORO_MCP_METRICS_ADDR")]
    pub metrics_addr: Option<SocketAddr>,
}

/// `500ms`, `30s`, `5m`, `1h`, `2d`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("{text:?} has no unit: write 500ms, 30s, 5m, 1h or 2d"))?;
    let (number, unit) = text.split_at(split);
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} does not start with a whole number"))?;
    let seconds = |s: u64| Duration::from_secs(n.saturating_mul(s));
    match unit {
        "ms" => Ok(Duration::from_millis(n)),
        "s" => Ok(seconds(1)),
        "m" => Ok(seconds(60)),
        "h" => Ok(seconds(3600)),
        "d" => Ok(seconds(86_400)),
        other => Err(format!(
            "{text:?}: unknown unit {other:?}; use ms, s, m, h or d"
        )),
    }
}

enum Mode {
    Stdio(Vec<String>),
    Http {
        listen: SocketAddr,
        upstream: http::Upstream,
    },
}

impl ProxyArgs {
    fn mode(&self) -> Result<Mode, Error> {
        match (&self.listen, &self.upstream, self.command.is_empty()) {
            (Some(listen), Some(upstream), true) => Ok(Mode::Http {
                listen: *listen,
                upstream: http::Upstream::parse(upstream)?,
            }),
            (None, None, false) => Ok(Mode::Stdio(self.command.clone())),
            (Some(_), Some(_), false) => Err(Error::Config(
                "give either --listen and --upstream (HTTP) or a server command after `--` (stdio), not both".into(),
            )),
            _ => Err(Error::Config(
                "nothing to relay: give a server command after `--` (stdio), or --listen ADDR --upstream URL (HTTP)".into(),
            )),
        }
    }

    fn ingest_key(&self) -> Result<String, Error> {
        if let Some(key) = &self.api_key {
            return Ok(key.trim().to_owned());
        }
        let file = self.data_dir.join("dev-api-key");
        std::fs::read_to_string(&file)
            .map(|k| k.trim().to_owned())
            .map_err(|_| {
                Error::Config(format!(
                    "no API key for ingest: pass --api-key, set AFORO_API_KEY, or run `aforo standalone` here to create {}",
                    file.display()
                ))
            })
    }

    fn server_name(&self, mode: &Mode) -> String {
        if let Some(name) = &self.server {
            return name.clone();
        }
        match mode {
            Mode::Stdio(command) => std::path::Path::new(&command[0])
                .file_name()
                .map_or_else(|| command[0].clone(), |n| n.to_string_lossy().into_owned()),
            Mode::Http { upstream, .. } => upstream.name(),
        }
    }
}

/// Runs the proxy until the server exits (stdio) or a signal (HTTP).
pub async fn run(args: ProxyArgs) -> Result<ExitCode, Error> {
    let mode = args.mode()?;
    let key = args.ingest_key()?;
    let metrics = Arc::new(Metrics::new());

    let spool = Spool::open(&args.spool_dir, args.spool_max_bytes)?;
    metrics.spool_records.set(spool.held_records());
    metrics.spool_bytes.set(spool.held_bytes());
    if spool.held_records() > 0 {
        tracing::info!(
            "{} events from an earlier run wait in the spool; sending them first",
            spool.held_records()
        );
    }
    let spool = Arc::new(Mutex::new(spool));
    let (outbox, outbox_rx) = mpsc::channel(OUTBOX);
    let (stop, stopped) = watch::channel(false);
    let wake = Arc::new(Notify::new());
    let writer = tokio::spawn(write_spool(
        outbox_rx,
        spool.clone(),
        wake.clone(),
        metrics.clone(),
        stopped.clone(),
    ));

    let channel = tonic::transport::Endpoint::from_shared(args.ingest.clone())
        .map_err(|e| {
            Error::Config(format!(
                "--ingest {:?} is not a gRPC URL such as http://127.0.0.1:8471: {e}",
                args.ingest
            ))
        })?
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(30))
        .connect_lazy();
    let client =
        IngestServiceClient::with_interceptor(channel, Bearer::new(&key).map_err(Error::Config)?);
    // The shipper stops after the spool writer has written everything the
    // meter emitted (the sessions closed at stop included): stopping both
    // at once let the shipper find the spool empty and leave before the
    // last events reached it.
    let (stop_shipping, shipping_stopped) = watch::channel(false);
    let shipper = tokio::spawn(
        Shipper {
            spool,
            wake,
            client,
            batch: args.batch.max(1),
            metrics: metrics.clone(),
        }
        .run(shipping_stopped, args.drain_timeout),
    );

    let server = args.server_name(&mode);
    let meter = Arc::new(Meter::new(
        EventContext {
            source: args.source.clone(),
            server: server.clone(),
            customer: args.customer.clone(),
        },
        outbox,
        metrics.clone(),
        args.call_timeout,
        args.session_idle,
    ));
    let sweeper = {
        let (meter, mut stopped) = (meter.clone(), stopped.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tokio::select! {
                    _ = tick.tick() => meter.sweep(),
                    _ = stopped.wait_for(|s| *s) => return,
                }
            }
        })
    };
    let metrics_addr = match args.metrics_addr {
        Some(addr) => Some(serve_metrics(addr, metrics.clone(), stopped.clone()).await?),
        None => None,
    };
    let identify = Identify {
        header: args.agent_header.clone(),
        api_keys: args.agent_keys.clone(),
        agent: args.agent.clone(),
    };

    let mut stdin_open = false;
    let mut exit_number = 0u8;
    let code = match mode {
        Mode::Stdio(command) => {
            let (status, client_closed) = stdio::StdioProxy {
                command,
                meter: meter.clone(),
                identify,
                max_message: args.max_message_bytes,
            }
            .run()
            .await?;
            stdin_open = !client_closed;
            exit_number = exit_code(status);
            ExitCode::from(exit_number)
        }
        Mode::Http { listen, upstream } => {
            let proxy = Arc::new(http::HttpProxy::new(
                upstream.clone(),
                meter.clone(),
                identify,
                args.max_message_bytes,
            ));
            let listener = tokio::net::TcpListener::bind(listen)
                .await
                .map_err(|e| Error::Io(format!("listen on {listen}"), e))?;
            let local = listener
                .local_addr()
                .map_err(|e| Error::Io("read the listening address".into(), e))?;
            // One line on stdout when ready: scripts and tests wait for it.
            println!(
                "aforo mcp-proxy ready: listen=http://{local} upstream={} server={server}{}",
                upstream.url(),
                metrics_addr
                    .map(|a| format!(" metrics=http://{a}"))
                    .unwrap_or_default()
            );
            use axum::serve::ListenerExt;
            let listener = listener.tap_io(|tcp| {
                // Small JSON-RPC messages must not wait for Nagle.
                let _ = tcp.set_nodelay(true);
            });
            let (shutdown, on_shutdown) = watch::channel(false);
            let serving = tokio::spawn(
                axum::serve(listener, proxy.router())
                    .with_graceful_shutdown(async move {
                        let mut on_shutdown = on_shutdown;
                        let _ = on_shutdown.wait_for(|s| *s).await;
                    })
                    .into_future(),
            );
            shutdown_signal().await;
            tracing::info!(
                "stopping: no new connections; open streams get {:?}",
                args.drain_timeout
            );
            let _ = shutdown.send(true);
            if tokio::time::timeout(args.drain_timeout, serving)
                .await
                .is_err()
            {
                tracing::warn!("streams still open after the drain timeout are cut");
            }
            ExitCode::SUCCESS
        }
    };

    meter.close_all(Outcome::TransportError);
    let _ = stop.send(true);
    let _ = sweeper.await;
    if writer.await.is_err() {
        tracing::error!("the spool writer failed while stopping");
    }
    let _ = stop_shipping.send(true);
    if shipper.await.is_err() {
        tracing::error!("the shipper failed while stopping");
    }
    if stdin_open {
        // The server exited while the client still holds our stdin open: the
        // runtime's blocking read of it would hold the process up until the
        // client closes it. Everything is flushed; leave now.
        use std::io::Write;
        let _ = std::io::stdout().flush();
        std::process::exit(i32::from(exit_number));
    }
    Ok(code)
}

/// The server's exit status as the proxy's own exit code.
fn exit_code(status: std::process::ExitStatus) -> u8 {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => code.clamp(0, 255) as u8,
        // Killed by a signal: the shell convention.
        (None, Some(signal)) => (128 + signal).clamp(0, 255) as u8,
        (None, None) => 1,
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => {
            tracing::error!("cannot listen for SIGTERM/SIGINT; stop the proxy with SIGKILL");
            std::future::pending::<()>().await;
        }
    }
}

async fn serve_metrics(
    addr: SocketAddr,
    metrics: Arc<Metrics>,
    mut stopped: watch::Receiver<bool>,
) -> Result<SocketAddr, Error> {
    use axum::routing::get;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| Error::Io(format!("listen on {addr} for metrics"), e))?;
    let local = listener
        .local_addr()
        .map_err(|e| Error::Io("read the metrics address".into(), e))?;
    let router = axum::Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/metrics",
            get(move || {
                let metrics = metrics.clone();
                async move { metrics.encode() }
            }),
        );
    tokio::spawn(async move {
        let served = axum::serve(listener, router)
            .with_graceful_shutdown(async move {
                let _ = stopped.wait_for(|s| *s).await;
            })
            .await;
        if let Err(err) = served {
            tracing::error!("the metrics server stopped: {err}");
        }
    });
    Ok(local)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_need_a_unit() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert!(
            parse_duration("5")
                .expect_err("no unit")
                .contains("no unit")
        );
        assert!(
            parse_duration("5w")
                .expect_err("bad unit")
                .contains("unknown unit")
        );
    }
}
