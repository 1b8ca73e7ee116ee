//! stdio: the proxy is the MCP server process the client launched; it
//! launches the real server and copies bytes both ways as they come,
//! metering each newline-delimited message. The server's stderr is its own
//! (inherited), never parsed. One server process is one session.

use std::process::{ExitStatus, Stdio};
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::process::Command;

use crate::Error;
use crate::framing::{Line, LineSplitter};
use crate::identity::Identify;
use crate::jsonrpc;
use crate::meter::Meter;
use crate::session::{Direction, Outcome, Transport};

const CHUNK: usize = 64 * 1024;

pub struct StdioProxy {
    pub command: Vec<String>,
    pub meter: Arc<Meter>,
    pub identify: Identify,
    pub max_message: usize,
}

/// Who closed first decides what calls still waiting become.
enum Ended {
    /// The client closed our stdin.
    Client,
    /// The server closed its stdout (or exited).
    Server,
}

impl StdioProxy {
    /// Runs the server until it exits; returns its exit status, and whether
    /// the client had closed our stdin by then.
    pub async fn run(self) -> Result<(ExitStatus, bool), Error> {
        let (program, args) = self.command.split_first().ok_or_else(|| {
            Error::Config("stdio mode needs the server command after `--`".into())
        })?;
        let mut child = Command::new(program)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| Error::Config(format!("cannot start the MCP server {program:?}: {e}")))?;
        let pid = child.id();
        let key = format!("stdio-{}", uuid::Uuid::now_v7());
        tracing::info!(server = %self.meter.server(), session = %key, ?pid, "relaying stdio");
        let child_in = child.stdin.take().expect("piped stdin");
        let child_out = child.stdout.take().expect("piped stdout");
        let identity = self.identify.configured();

        let upstream = relay(
            tokio::io::stdin(),
            child_in,
            Tap {
                meter: self.meter.clone(),
                key: key.clone(),
                direction: Direction::ClientToServer,
                identity: identity.clone(),
                max: self.max_message,
            },
        );
        let downstream = relay(
            child_out,
            tokio::io::stdout(),
            Tap {
                meter: self.meter.clone(),
                key: key.clone(),
                direction: Direction::ServerToClient,
                identity,
                max: self.max_message,
            },
        );
        tokio::pin!(upstream, downstream);
        let mut signals = Signals::new()?;
        let mut ended = None;
        let mut upstream_done = false;
        let status = loop {
            tokio::select! {
                result = &mut upstream, if !upstream_done => {
                    upstream_done = true;
                    // Our stdin closed: the client is done (closing the
                    // server's stdin, dropped with the relay, tells it so).
                    ended.get_or_insert(Ended::Client);
                    if let Err(err) = result {
                        tracing::debug!("client → server relay ended: {err}");
                    }
                }
                result = &mut downstream => {
                    ended.get_or_insert(Ended::Server);
                    if let Err(err) = result {
                        tracing::debug!("server → client relay ended: {err}");
                    }
                    break child.wait().await.map_err(|e| Error::Io("wait for the MCP server".into(), e))?;
                }
                signal = signals.next() => {
                    // Pass SIGTERM/SIGINT on: the server shuts down as it would without us.
                    if let Some(pid) = pid {
                        // SAFETY: kill(2) on our own child's pid, with a valid signal number.
                        unsafe { libc::kill(pid as libc::pid_t, signal) };
                    }
                }
            }
        };
        let outcome = match ended {
            Some(Ended::Client) => Outcome::Cancelled,
            _ => Outcome::TransportError,
        };
        self.meter.close(&key, outcome);
        Ok((status, upstream_done))
    }
}

struct Tap {
    meter: Arc<Meter>,
    key: String,
    direction: Direction,
    identity: Option<crate::session::Agent>,
    max: usize,
}

/// Copies `from` to `to` chunk by chunk, flushing each, and meters the
/// complete lines of a copy.
async fn relay(
    mut from: impl AsyncRead + Unpin,
    mut to: impl AsyncWrite + Unpin,
    tap: Tap,
) -> std::io::Result<()> {
    let mut buffer = vec![0u8; CHUNK];
    let mut lines = LineSplitter::new(tap.max);
    loop {
        let n = from.read(&mut buffer).await?;
        if n == 0 {
            to.shutdown().await.ok();
            return Ok(());
        }
        to.write_all(&buffer[..n]).await?;
        to.flush().await?;
        for line in lines.push(&buffer[..n]) {
            match line {
                Line::Whole(bytes) => match jsonrpc::parse(&bytes) {
                    Ok(framed) => tap.meter.observe(
                        &tap.key,
                        Transport::Stdio,
                        tap.direction,
                        &framed,
                        tap.identity.clone(),
                    ),
                    Err(err) => tracing::debug!(direction = ?tap.direction, "not metered: {err}"),
                },
                Line::Skipped { bytes } => tracing::warn!(
                    bytes,
                    "a message longer than --max-message-bytes was relayed without metering"
                ),
            }
        }
    }
}

struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> Result<Signals, Error> {
        use tokio::signal::unix::{SignalKind, signal};
        let listen = |kind| signal(kind).map_err(|e| Error::Io("listen for signals".into(), e));
        Ok(Signals {
            term: listen(SignalKind::terminate())?,
            int: listen(SignalKind::interrupt())?,
        })
    }

    async fn next(&mut self) -> i32 {
        tokio::select! {
            _ = self.term.recv() => libc::SIGTERM,
            _ = self.int.recv() => libc::SIGINT,
        }
    }
}
