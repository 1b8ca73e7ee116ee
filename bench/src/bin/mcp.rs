//! Latency the MCP proxy adds to a tools/call, per transport.
//!
//! For each transport, one MCP server of the official Python SDK
//! (tests/mcp/server.py) is called directly and through `aforo mcp-proxy`
//! (release build, metering into a real `aforo standalone`), the two calls
//! alternating so both see the same machine. One client session each; calls
//! are sequential `tools/call add`. Reported: p50 and p99 of each path and
//! their difference. Target: ≤ 1 ms added p50 over HTTP.
//!
//! `bench/run.sh mcp [--calls N]`

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use aforo_mcp_proxy::framing::SseSplitter;
use anyhow::{Context, bail};
use clap::Parser;
use futures::StreamExt;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

#[derive(Parser)]
struct Args {
    /// Calls per path (direct and proxied) per transport.
    #[arg(long, default_value_t = 2000)]
    calls: usize,
    /// Calls before measuring.
    #[arg(long, default_value_t = 200)]
    warmup: usize,
    /// The release `aforo` binary.
    #[arg(long)]
    aforo: PathBuf,
    /// Python with the `mcp` package.
    #[arg(long, env = "AFORO_MCP_PYTHON")]
    python: PathBuf,
}

fn server_script() -> String {
    format!("{}/../tests/mcp/server.py", env!("CARGO_MANIFEST_DIR"))
}

async fn ready_line(child: &mut Child, marker: &str) -> anyhow::Result<String> {
    let stdout = child.stdout.take().context("piped stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    let line = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(line) = lines.next_line().await? {
            if line.contains(marker) {
                return Ok(line);
            }
        }
        bail!("exited before printing {marker:?}")
    })
    .await
    .context("not ready within 60 s")??;
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Ok(line)
}

fn field(line: &str, name: &str) -> anyhow::Result<String> {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(name))
        .map(str::to_owned)
        .with_context(|| format!("no {name} in {line:?}"))
}

struct Ingest {
    _child: Child,
    _dir: tempfile::TempDir,
    grpc: String,
    key: String,
}

async fn standalone(aforo: &PathBuf) -> anyhow::Result<Ingest> {
    let dir = tempfile::tempdir()?;
    let mut child = Command::new(aforo)
        .arg("standalone")
        .arg("--data-dir")
        .arg(dir.path())
        .args(["--http-addr", "127.0.0.1:0", "--grpc-addr", "127.0.0.1:0"])
        .env("AFORO_LOG", "warn")
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .context("start aforo standalone")?;
    let ready = ready_line(&mut child, " ready: ").await?;
    let key = std::fs::read_to_string(dir.path().join("dev-api-key"))?
        .trim()
        .to_owned();
    Ok(Ingest {
        grpc: format!("http://{}", field(&ready, "grpc=")?),
        _child: child,
        _dir: dir,
        key,
    })
}

fn proxy_args(ingest: &Ingest, spool: &tempfile::TempDir) -> Vec<String> {
    vec![
        "mcp-proxy".into(),
        "--ingest".into(),
        ingest.grpc.clone(),
        "--api-key".into(),
        ingest.key.clone(),
        "--spool-dir".into(),
        spool.path().display().to_string(),
        "--server".into(),
        "bench".into(),
    ]
}

fn call(id: u64) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
           "params": {"name": "add", "arguments": {"a": id, "b": 1}}})
}

fn initialize() -> Value {
    json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {},
        "clientInfo": {"name": "aforo-bench", "version": "1"}}})
}

fn initialized() -> Value {
    json!({"jsonrpc": "2.0", "method": "notifications/initialized"})
}

/// One MCP client session over some transport.
trait Session {
    async fn call(&mut self, id: u64) -> anyhow::Result<()>;
}

struct StdioSession {
    _child: Child,
    stdin: ChildStdin,
    stdout: tokio::io::Lines<BufReader<ChildStdout>>,
}

impl StdioSession {
    async fn start(program: &PathBuf, args: &[String]) -> anyhow::Result<StdioSession> {
        let mut child = Command::new(program)
            .args(args)
            .env("AFORO_LOG", "warn")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("start {}", program.display()))?;
        let stdin = child.stdin.take().context("stdin")?;
        let stdout = BufReader::new(child.stdout.take().context("stdout")?).lines();
        let mut session = StdioSession {
            _child: child,
            stdin,
            stdout,
        };
        session.send(&initialize()).await?;
        session.answer(0).await?;
        session.send(&initialized()).await?;
        Ok(session)
    }

    async fn send(&mut self, message: &Value) -> anyhow::Result<()> {
        let mut line = message.to_string();
        line.push('\n');
        self.stdin.write_all(line.as_bytes()).await?;
        self.stdin.flush().await?;
        Ok(())
    }

    async fn answer(&mut self, id: u64) -> anyhow::Result<Value> {
        while let Some(line) = self.stdout.next_line().await? {
            let message: Value = serde_json::from_str(&line)?;
            if message["id"] == json!(id) {
                return Ok(message);
            }
        }
        bail!("the server closed stdout")
    }
}

impl Session for StdioSession {
    async fn call(&mut self, id: u64) -> anyhow::Result<()> {
        self.send(&call(id)).await?;
        self.answer(id).await.map(drop)
    }
}

/// Streamable HTTP, stateful (Mcp-Session-Id); JSON or SSE answers.
struct HttpSession {
    client: reqwest::Client,
    url: String,
    session: String,
}

async fn answer_of(response: reqwest::Response, id: u64) -> anyhow::Result<Value> {
    let status = response.status();
    if !status.is_success() {
        bail!(
            "HTTP {status}: {}",
            response.text().await.unwrap_or_default()
        );
    }
    let sse = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/event-stream"));
    if !sse {
        return Ok(response.json().await?);
    }
    let mut splitter = SseSplitter::new(1 << 20);
    let mut body = response.bytes_stream();
    while let Some(chunk) = body.next().await {
        for event in splitter.push(&chunk?) {
            if let Ok(message) = serde_json::from_str::<Value>(&event.data)
                && message["id"] == json!(id)
            {
                return Ok(message);
            }
        }
    }
    bail!("the stream ended without the answer to {id}")
}

impl HttpSession {
    async fn start(url: String) -> anyhow::Result<HttpSession> {
        let client = reqwest::Client::builder().tcp_nodelay(true).build()?;
        let response = client
            .post(&url)
            .header("accept", "application/json, text/event-stream")
            .json(&initialize())
            .send()
            .await?;
        let session = response
            .headers()
            .get("mcp-session-id")
            .and_then(|v| v.to_str().ok())
            .context("no Mcp-Session-Id on the initialize answer")?
            .to_owned();
        answer_of(response, 0).await?;
        let session = HttpSession {
            client,
            url,
            session,
        };
        session.post(&initialized()).await?;
        Ok(session)
    }

    async fn post(&self, message: &Value) -> anyhow::Result<reqwest::Response> {
        Ok(self
            .client
            .post(&self.url)
            .header("accept", "application/json, text/event-stream")
            .header("mcp-session-id", &self.session)
            .header("mcp-protocol-version", "2025-11-25")
            .json(message)
            .send()
            .await?)
    }
}

impl Session for HttpSession {
    async fn call(&mut self, id: u64) -> anyhow::Result<()> {
        let response = self.post(&call(id)).await?;
        answer_of(response, id).await.map(drop)
    }
}

/// The 2024-11-05 transport: answers come on the GET stream.
struct SseSession {
    client: reqwest::Client,
    endpoint: String,
    events: tokio::sync::mpsc::Receiver<Value>,
}

impl SseSession {
    async fn start(base: &str) -> anyhow::Result<SseSession> {
        let client = reqwest::Client::builder().tcp_nodelay(true).build()?;
        let stream = client
            .get(format!("{base}/sse"))
            .header("accept", "text/event-stream")
            .send()
            .await?;
        let (endpoint_tx, endpoint_rx) = tokio::sync::oneshot::channel();
        let (events_tx, events) = tokio::sync::mpsc::channel(16);
        tokio::spawn(async move {
            let mut endpoint_tx = Some(endpoint_tx);
            let mut splitter = SseSplitter::new(1 << 20);
            let mut body = stream.bytes_stream();
            while let Some(Ok(chunk)) = body.next().await {
                for event in splitter.push(&chunk) {
                    if event.event.as_deref() == Some("endpoint") {
                        if let Some(tx) = endpoint_tx.take() {
                            let _ = tx.send(event.data);
                        }
                    } else if let Ok(message) = serde_json::from_str(&event.data)
                        && events_tx.send(message).await.is_err()
                    {
                        return;
                    }
                }
            }
        });
        let path = endpoint_rx.await.context("no endpoint event")?;
        let mut session = SseSession {
            client,
            endpoint: format!("{base}{path}"),
            events,
        };
        session.send(&initialize()).await?;
        session.answer(0).await?;
        session.send(&initialized()).await?;
        Ok(session)
    }

    async fn send(&self, message: &Value) -> anyhow::Result<()> {
        let response = self
            .client
            .post(&self.endpoint)
            .json(message)
            .send()
            .await?;
        if !response.status().is_success() {
            bail!("POST answered {}", response.status());
        }
        Ok(())
    }

    async fn answer(&mut self, id: u64) -> anyhow::Result<Value> {
        while let Some(message) = self.events.recv().await {
            if message["id"] == json!(id) {
                return Ok(message);
            }
        }
        bail!("the stream ended")
    }
}

impl Session for SseSession {
    async fn call(&mut self, id: u64) -> anyhow::Result<()> {
        self.send(&call(id)).await?;
        self.answer(id).await.map(drop)
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

async fn measure(
    name: &str,
    direct: &mut impl Session,
    proxied: &mut impl Session,
    args: &Args,
) -> anyhow::Result<()> {
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for i in 0..(args.warmup + args.calls) as u64 {
        let id = i + 1;
        let t = Instant::now();
        direct.call(id).await?;
        let direct_time = t.elapsed();
        let t = Instant::now();
        proxied.call(id).await?;
        let proxied_time = t.elapsed();
        if i >= args.warmup as u64 {
            a.push(direct_time);
            b.push(proxied_time);
        }
    }
    a.sort();
    b.sort();
    let (a50, a99, b50, b99) = (
        percentile(&a, 0.5),
        percentile(&a, 0.99),
        percentile(&b, 0.5),
        percentile(&b, 0.99),
    );
    println!(
        "{name:<28} direct p50 {:>6.3} ms  p99 {:>6.3} ms | proxied p50 {:>6.3} ms  p99 {:>6.3} ms | added p50 {:>+6.3} ms  p99 {:>+6.3} ms",
        ms(a50),
        ms(a99),
        ms(b50),
        ms(b99),
        ms(b50) - ms(a50),
        ms(b99) - ms(a99),
    );
    Ok(())
}

/// A Python SDK server on HTTP; returns it and its base URL.
async fn http_server(python: &PathBuf, args: &[&str]) -> anyhow::Result<(Child, String)> {
    let mut child = Command::new(python)
        .arg(server_script())
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .context("start the Python MCP server")?;
    let ready = ready_line(&mut child, "ready port=").await?;
    let port = ready.trim().trim_start_matches("ready port=").to_owned();
    Ok((child, format!("http://127.0.0.1:{port}")))
}

async fn http_proxy(
    aforo: &PathBuf,
    ingest: &Ingest,
    spool: &tempfile::TempDir,
    upstream: &str,
) -> anyhow::Result<(Child, String)> {
    let mut child = Command::new(aforo)
        .args(proxy_args(ingest, spool))
        .args(["--listen", "127.0.0.1:0", "--upstream", upstream])
        .env("AFORO_LOG", "warn")
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .context("start aforo mcp-proxy")?;
    let ready = ready_line(&mut child, " ready: ").await?;
    Ok((child, field(&ready, "listen=")?))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let ingest = standalone(&args.aforo).await?;
    println!(
        "MCP proxy latency per tools/call: {} sequential calls per path after {} warm-up, direct and proxied alternating",
        args.calls, args.warmup
    );

    {
        let spool = tempfile::tempdir()?;
        let server = vec![server_script(), "stdio".to_owned()];
        let mut direct = StdioSession::start(&args.python, &server).await?;
        let mut proxied_args = proxy_args(&ingest, &spool);
        proxied_args.push("--".into());
        proxied_args.push(args.python.display().to_string());
        proxied_args.extend(server);
        let mut proxied = StdioSession::start(&args.aforo, &proxied_args).await?;
        measure("stdio", &mut direct, &mut proxied, &args).await?;
    }
    for (name, server_args) in [
        ("streamable HTTP, SSE answers", vec!["streamable-http"]),
        (
            "streamable HTTP, JSON answers",
            vec!["streamable-http", "--json"],
        ),
    ] {
        let spool = tempfile::tempdir()?;
        let (_server, base) = http_server(&args.python, &server_args).await?;
        let (_proxy, url) = http_proxy(&args.aforo, &ingest, &spool, &base).await?;
        let mut direct = HttpSession::start(format!("{base}/mcp")).await?;
        let mut proxied = HttpSession::start(format!("{url}/mcp")).await?;
        measure(name, &mut direct, &mut proxied, &args).await?;
    }
    {
        let spool = tempfile::tempdir()?;
        let (_server, base) = http_server(&args.python, &["sse"]).await?;
        let (_proxy, url) = http_proxy(&args.aforo, &ingest, &spool, &base).await?;
        let mut direct = SseSession::start(&base).await?;
        let mut proxied = SseSession::start(&url).await?;
        measure("legacy HTTP+SSE", &mut direct, &mut proxied, &args).await?;
    }
    Ok(())
}
