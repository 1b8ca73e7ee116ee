//! `aforo mcp-proxy` between real MCP peers: servers and clients of the
//! official MCP Python SDK (tests/mcp/), over stdio, legacy SSE and
//! Streamable HTTP, with a real `aforo standalone` as the ingest target.
//! Every tools/call must become exactly one event, and the client must see
//! what it sees without the proxy.
//!
//! Dates: the proxy stamps each call with the time it saw it; nothing
//! depends on a period.

mod common;

use std::collections::{BTreeMap, HashSet};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{BIN, Backend, Server};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::{Child, Command};

const DEADLINE: Duration = Duration::from_secs(60);

fn python() -> String {
    std::env::var("AFORO_MCP_PYTHON").expect(
        "AFORO_MCP_PYTHON is not set: run scripts/test.sh, or `eval \"$(scripts/pyenv.sh)\"` first",
    )
}

fn script(name: &str) -> String {
    format!(
        "{}/../tests/mcp/{name}",
        std::env::var("CARGO_MANIFEST_DIR")
            .expect("CARGO_MANIFEST_DIR: run by cargo test, or by scripts/hard-days.sh")
    )
}

/// The calls every transport is tried with: each outcome a server can give.
fn calls() -> Value {
    json!([
        ["add", {"a": 2, "b": 3}],
        ["echo", {"text": "héllo, wörld"}],
        ["fail", {"reason": "boom"}],
        ["reject", {"reason": "nope"}],
        ["add", {"a": 40, "b": 2}],
    ])
}

const EXPECTED: [(&str, &str); 5] = [
    ("add", "ok"),
    ("echo", "ok"),
    ("fail", "tool_error"),
    ("reject", "rpc_error"),
    ("add", "ok"),
];

/// Reads lines of a child's stdout until one contains `marker`.
async fn wait_for_line(child: &mut Child, marker: &str, what: &str) -> String {
    let stdout = child.stdout.take().expect("piped stdout");
    let mut lines = BufReader::new(stdout).lines();
    let line = tokio::time::timeout(DEADLINE, async {
        while let Some(line) = lines.next_line().await.expect("read stdout") {
            if line.contains(marker) {
                return line;
            }
        }
        panic!("{what} exited before it was ready");
    })
    .await
    .unwrap_or_else(|_| panic!("{what} was not ready within {DEADLINE:?}"));
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    line
}

/// An MCP server of the Python SDK on a free loopback port.
struct McpServer {
    _child: Child,
    base: String,
}

impl McpServer {
    async fn start(args: &[&str]) -> McpServer {
        let mut child = Command::new(python())
            .arg(script("server.py"))
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("start the Python MCP server");
        let ready = wait_for_line(&mut child, "ready port=", "the MCP server").await;
        let port = ready.trim().trim_start_matches("ready port=").to_owned();
        McpServer {
            _child: child,
            base: format!("http://127.0.0.1:{port}"),
        }
    }
}

/// A running `aforo mcp-proxy` in HTTP mode; its stderr is kept.
struct Proxy {
    child: Child,
    url: String,
    metrics: String,
    stderr: Arc<Mutex<String>>,
    _spool: tempfile::TempDir,
}

impl Proxy {
    async fn start(ingest: &str, key: &str, upstream: &str, extra: &[&str]) -> Proxy {
        let spool = tempfile::tempdir().expect("a spool folder");
        let mut child = Command::new(BIN)
            .args([
                "mcp-proxy",
                "--listen",
                "127.0.0.1:0",
                "--upstream",
                upstream,
            ])
            .args([
                "--ingest",
                ingest,
                "--api-key",
                key,
                "--server",
                "test-server",
            ])
            .args(["--metrics-addr", "127.0.0.1:0", "--spool-dir"])
            .arg(spool.path())
            .args(extra)
            .env("AFORO_LOG", "info")
            .env("NO_COLOR", "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("start aforo mcp-proxy");
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut err_lines = BufReader::new(child.stderr.take().expect("piped stderr")).lines();
        let sink = stderr.clone();
        tokio::spawn(async move {
            while let Ok(Some(line)) = err_lines.next_line().await {
                let mut text = sink.lock().expect("stderr buffer");
                text.push_str(&line);
                text.push('\n');
            }
        });
        let ready = wait_for_line(&mut child, " ready: ", "aforo mcp-proxy").await;
        let field = |name: &str| {
            ready
                .split_whitespace()
                .find_map(|w| w.strip_prefix(name))
                .unwrap_or_else(|| panic!("no {name} in {ready:?}"))
                .to_owned()
        };
        Proxy {
            url: field("listen="),
            metrics: field("metrics="),
            child,
            stderr,
            _spool: spool,
        }
    }

    fn stderr(&self) -> String {
        self.stderr.lock().expect("stderr buffer").clone()
    }

    /// One metric's value from /metrics.
    async fn metric(&self, name: &str) -> f64 {
        let text = reqwest::get(format!("{}/metrics", self.metrics))
            .await
            .expect("GET /metrics")
            .text()
            .await
            .expect("metrics text");
        text.lines()
            .find_map(|line| {
                let (metric, value) = line.rsplit_once(' ')?;
                (metric == name).then(|| value.parse().expect("a number"))
            })
            .unwrap_or(0.0)
    }

    /// SIGTERM, then wait: the proxy drains its spool before it exits.
    async fn stop(mut self) {
        let pid = self.child.id().expect("a running proxy");
        let status = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .await
            .expect("run kill");
        assert!(status.success());
        let exit = tokio::time::timeout(DEADLINE, self.child.wait())
            .await
            .expect("the proxy stops")
            .expect("reap the proxy");
        assert!(
            exit.success(),
            "the proxy exits cleanly: {exit}\n{}",
            self.stderr()
        );
    }
}

/// Runs tests/mcp/client.py; returns its JSON lines before `{"done": true}`.
async fn client(args: &[&str]) -> Vec<Value> {
    let calls = calls().to_string();
    let output = tokio::time::timeout(
        DEADLINE,
        Command::new(python())
            .arg(script("client.py"))
            .args(["--calls", &calls])
            .args(args)
            .stdin(Stdio::null())
            .output(),
    )
    .await
    .expect("the MCP client finishes")
    .expect("run the MCP client");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "the MCP client failed: {}\n{stdout}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let mut lines: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    assert_eq!(lines.pop(), Some(json!({"done": true})), "{stdout}");
    lines
}

/// The stored events of `event_type`, once there are `count` of them.
async fn events_of(server: &Server, event_type: &str, count: usize) -> Vec<Value> {
    let waited = tokio::time::timeout(DEADLINE, async {
        loop {
            let events: Vec<Value> = server
                .all_events()
                .await
                .into_iter()
                .filter(|e| e["type"] == event_type)
                .collect();
            if events.len() >= count {
                return events;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    match waited {
        Ok(events) => events,
        Err(_) => panic!(
            "fewer than {count} {event_type} events arrived within {DEADLINE:?}: {:#?}",
            server.all_events().await
        ),
    }
}

/// Every call's event: one per call, in order, with the right tool and
/// outcome, tier MCP, and distinct idempotency keys.
fn assert_one_event_per_call(events: &[Value]) -> Vec<&Value> {
    assert_eq!(events.len(), EXPECTED.len(), "{events:#?}");
    let mut sorted: Vec<&Value> = events.iter().collect();
    sorted.sort_by_key(|e| e["time"].as_str().unwrap_or_default().to_owned());
    let seen: Vec<(String, String)> = sorted
        .iter()
        .map(|e| {
            (
                e["properties"]["tool"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
                e["properties"]["outcome"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
            )
        })
        .collect();
    let want: Vec<(String, String)> = EXPECTED
        .iter()
        .map(|(t, o)| (t.to_string(), o.to_string()))
        .collect();
    assert_eq!(seen, want);
    let ids: HashSet<&str> = events.iter().filter_map(|e| e["id"].as_str()).collect();
    assert_eq!(ids.len(), events.len(), "idempotency keys are distinct");
    for event in events {
        assert_eq!(event["tier"], "MCP", "{event}");
        assert_eq!(event["tier_detail"], "test-server", "{event}");
        assert_eq!(event["properties"]["server"], "test-server", "{event}");
        if event["properties"]["outcome"] == "rpc_error" {
            assert_eq!(
                event["properties"]["error_code"].as_f64(),
                Some(-32602.0),
                "{event}"
            );
        }
        assert!(
            event["properties"]["request_bytes"].as_f64() > Some(0.0),
            "{event}"
        );
        assert!(
            event["properties"]["response_bytes"].as_f64() > Some(0.0),
            "{event}"
        );
        assert!(
            event["properties"]["latency_ms"].as_f64() > Some(0.0),
            "{event}"
        );
    }
    sorted
}

fn property<'a>(event: &'a Value, name: &str) -> &'a str {
    event["properties"][name].as_str().unwrap_or_default()
}

#[tokio::test]
async fn stdio_calls_are_metered_once_each_and_answered_as_without_the_proxy() {
    let server = Server::start(Backend::Sqlite).await;
    let spool = tempfile::tempdir().expect("a spool folder");
    let python = python();
    let direct = json!([python, script("server.py"), "stdio"]).to_string();
    let proxied = json!([
        BIN,
        "mcp-proxy",
        "--ingest",
        server.grpc,
        "--api-key",
        server.key,
        "--server",
        "test-server",
        "--spool-dir",
        spool.path().to_str().expect("a UTF-8 path"),
        "--",
        python,
        script("server.py"),
        "stdio"
    ])
    .to_string();

    let without = client(&["--stdio", &direct, "--name", "stdio-agent"]).await;
    let with = client(&["--stdio", &proxied, "--name", "stdio-agent"]).await;
    assert_eq!(with, without, "the client sees the same answers");
    assert_eq!(with.len(), EXPECTED.len());

    let events = events_of(&server, "mcp.tools_call", EXPECTED.len()).await;
    let calls = assert_one_event_per_call(&events);
    let session = property(calls[0], "session");
    assert!(session.starts_with("stdio-"), "{session}");
    for call in &calls {
        assert_eq!(
            property(call, "session"),
            session,
            "one process, one session"
        );
        assert_eq!(property(call, "transport"), "stdio");
        assert_eq!(property(call, "agent"), "stdio-agent");
        assert_eq!(property(call, "agent_source"), "client_info");
        assert_eq!(
            call["customer"], "stdio-agent",
            "billed to the agent by default"
        );
    }
    // The proxy exits with the server; the session's end is metered too.
    let ended = events_of(&server, "mcp.session.ended", 1).await;
    assert_eq!(property(&ended[0], "session"), session);
    assert_eq!(ended[0]["properties"]["tool_calls"].as_f64(), Some(5.0));
}

#[tokio::test]
async fn streamable_http_sessions_are_keyed_by_mcp_session_id_and_api_keys_name_agents() {
    for json_responses in [false, true] {
        let server = Server::start(Backend::Sqlite).await;
        let mut args = vec!["streamable-http"];
        if json_responses {
            args.push("--json");
        }
        let mcp = McpServer::start(&args).await;
        let proxy = Proxy::start(
            &server.grpc,
            &server.key,
            &mcp.base,
            &[
                "--agent-key",
                "team-a=k-aaaa",
                "--agent-key",
                "team-b=k-bbbb",
            ],
        )
        .await;
        let header = "Authorization=Bearer k-bbbb";
        let direct = format!("{}/mcp", mcp.base);
        let via = format!("{}/mcp", proxy.url);
        let common = [
            "--mode",
            "legacy",
            "--name",
            "http-agent",
            "--header",
            header,
        ];
        let without = client(&[&["--http", direct.as_str()][..], &common[..]].concat()).await;
        let with = client(&[&["--http", via.as_str()][..], &common[..]].concat()).await;
        assert_eq!(
            with, without,
            "the client sees the same answers (JSON: {json_responses})"
        );

        let events = events_of(&server, "mcp.tools_call", EXPECTED.len()).await;
        let calls = assert_one_event_per_call(&events);
        let session = property(calls[0], "session");
        assert!(
            session.starts_with("http:"),
            "keyed by Mcp-Session-Id: {session}"
        );
        for call in &calls {
            assert_eq!(property(call, "session"), session);
            assert_eq!(property(call, "transport"), "streamable-http");
            assert_eq!(
                property(call, "agent"),
                "team-b",
                "the API key names the agent"
            );
            assert_eq!(property(call, "agent_source"), "api_key");
            assert_eq!(call["properties"]["client"]["name"], "http-agent");
            assert_eq!(property(call, "protocol_version"), "2025-11-25");
        }
        // initialize started the session; the client's DELETE ended it.
        let started = events_of(&server, "mcp.session.started", 1).await;
        assert_eq!(property(&started[0], "session"), session);
        let ended = events_of(&server, "mcp.session.ended", 1).await;
        assert_eq!(property(&ended[0], "session"), session);
        proxy.stop().await;
    }
}

#[tokio::test]
async fn stateless_2026_requests_are_metered_each_as_its_own_session() {
    let server = Server::start(Backend::Sqlite).await;
    let mcp = McpServer::start(&["streamable-http"]).await;
    let proxy = Proxy::start(
        &server.grpc,
        &server.key,
        &mcp.base,
        &["--agent-header", "x-authenticated-user"],
    )
    .await;
    let direct = format!("{}/mcp", mcp.base);
    let via = format!("{}/mcp", proxy.url);
    // `auto` discovers the server speaks 2026-07-28: no initialize, no
    // session id, client info in each request's `_meta`.
    let without = client(&["--http", &direct, "--name", "modern-agent"]).await;
    let with = client(&["--http", &via, "--name", "modern-agent"]).await;
    assert_eq!(with, without, "the client sees the same answers");
    let authenticated = client(&[
        "--http",
        &via,
        "--name",
        "modern-agent",
        "--header",
        "x-authenticated-user=alice@example.com",
    ])
    .await;
    assert_eq!(authenticated, without);

    let events = events_of(&server, "mcp.tools_call", 2 * EXPECTED.len()).await;
    let (by_header, by_client_info): (Vec<Value>, Vec<Value>) = events
        .into_iter()
        .partition(|e| e["properties"]["agent_source"] == "header");
    for (events, agent) in [
        (&by_client_info, "modern-agent"),
        (&by_header, "alice@example.com"),
    ] {
        let calls = assert_one_event_per_call(events);
        let sessions: HashSet<&str> = calls.iter().map(|c| property(c, "session")).collect();
        assert_eq!(
            sessions.len(),
            calls.len(),
            "each request is its own session"
        );
        for call in &calls {
            assert!(property(call, "session").starts_with("request:"));
            assert_eq!(property(call, "transport"), "streamable-http-stateless");
            assert_eq!(property(call, "agent"), agent);
            assert_eq!(property(call, "protocol_version"), "2026-07-28");
            assert_eq!(call["properties"]["client"]["name"], "modern-agent");
        }
    }
    // server/discover and tools/list are activity, one event per request.
    let requests = events_of(&server, "mcp.request", 1).await;
    let methods: BTreeMap<String, usize> = requests.iter().fold(BTreeMap::new(), |mut m, e| {
        for method in e["properties"]["methods"]
            .as_object()
            .expect("methods")
            .keys()
        {
            *m.entry(method.clone()).or_default() += 1;
        }
        m
    });
    assert!(methods.contains_key("server/discover"), "{methods:?}");
    assert!(!methods.contains_key("tools/call"), "{methods:?}");
    proxy.stop().await;
}

#[tokio::test]
async fn legacy_sse_endpoint_points_at_the_proxy_and_calls_are_metered_per_session() {
    let server = Server::start(Backend::Sqlite).await;
    let mcp = McpServer::start(&["sse"]).await;
    let proxy = Proxy::start(&server.grpc, &server.key, &mcp.base, &[]).await;
    let direct = format!("{}/sse", mcp.base);
    let via = format!("{}/sse", proxy.url);
    let without = client(&["--sse", &direct, "--mode", "legacy", "--name", "sse-agent"]).await;
    let with = client(&["--sse", &via, "--mode", "legacy", "--name", "sse-agent"]).await;
    assert_eq!(with, without, "the client sees the same answers");

    let events = events_of(&server, "mcp.tools_call", EXPECTED.len()).await;
    let calls = assert_one_event_per_call(&events);
    let session = property(calls[0], "session");
    assert!(
        session.starts_with("sse:"),
        "keyed by the endpoint's session id: {session}"
    );
    for call in &calls {
        assert_eq!(property(call, "session"), session);
        assert_eq!(property(call, "transport"), "sse");
        assert_eq!(property(call, "agent"), "sse-agent");
    }
    // The client closed its stream: the session ended.
    let ended = events_of(&server, "mcp.session.ended", 1).await;
    assert_eq!(property(&ended[0], "session"), session);
    proxy.stop().await;
}

/// A TCP relay on a fixed port in front of ingest's gRPC port, so that
/// ingest can go away and come back (on a new port) behind one address.
struct Forwarder {
    addr: String,
    target: Arc<Mutex<Option<String>>>,
}

impl Forwarder {
    async fn start(target: &str) -> Forwarder {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = format!("http://{}", listener.local_addr().expect("an address"));
        let target = Arc::new(Mutex::new(Some(
            target.trim_start_matches("http://").to_owned(),
        )));
        let shared = target.clone();
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let to = shared.lock().expect("target").clone();
                tokio::spawn(async move {
                    // Refused while ingest is away: the client sees a dead connection.
                    let Some(to) = to else { return };
                    if let Ok(mut outbound) = TcpStream::connect(&to).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
        });
        Forwarder { addr, target }
    }

    fn point_at(&self, target: Option<&str>) {
        *self.target.lock().expect("target") =
            target.map(|t| t.trim_start_matches("http://").to_owned());
    }
}

#[tokio::test]
async fn an_ingest_outage_delays_events_and_loses_none() {
    let mut server = Server::start(Backend::Sqlite).await;
    let forwarder = Forwarder::start(&server.grpc).await;
    let mcp = McpServer::start(&["streamable-http"]).await;
    let proxy = Proxy::start(&forwarder.addr, &server.key, &mcp.base, &[]).await;
    let url = format!("{}/mcp", proxy.url);

    client(&["--http", &url, "--mode", "legacy", "--name", "before"]).await;
    events_of(&server, "mcp.tools_call", EXPECTED.len()).await;

    // Ingest goes away mid-run: calls go on, their events wait in the spool.
    server.kill9().await;
    forwarder.point_at(None);
    let during = client(&["--http", &url, "--mode", "legacy", "--name", "during"]).await;
    assert_eq!(
        during.len(),
        EXPECTED.len(),
        "relaying goes on without ingest"
    );
    let spooled = tokio::time::timeout(DEADLINE, async {
        loop {
            let held = proxy.metric("aforo_mcp_spool_records").await;
            if held >= EXPECTED.len() as f64
                && proxy.metric("aforo_mcp_ingest_failures_total").await >= 1.0
            {
                return held;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("the outage's events wait in the spool");
    assert!(spooled >= EXPECTED.len() as f64);

    // Ingest comes back (same store, new port behind the same address).
    server.restart().await;
    forwarder.point_at(Some(&server.grpc));
    let events = events_of(&server, "mcp.tools_call", 2 * EXPECTED.len()).await;
    let drained = tokio::time::timeout(DEADLINE, async {
        while proxy.metric("aforo_mcp_spool_records").await > 0.0 {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    assert!(drained.is_ok(), "the spool drains");
    let events_after = server
        .all_events()
        .await
        .into_iter()
        .filter(|e| e["type"] == "mcp.tools_call")
        .collect::<Vec<_>>();
    assert_eq!(events_after.len(), events.len(), "nothing arrives twice");
    for agent in ["before", "during"] {
        let mine: Vec<Value> = events_after
            .iter()
            .filter(|e| e["properties"]["client"]["name"] == agent)
            .cloned()
            .collect();
        assert_one_event_per_call(&mine);
    }
    proxy.stop().await;
}

#[tokio::test]
async fn a_full_spool_is_reported_loudly_and_relaying_goes_on() {
    // Ingest is nowhere: nothing leaves the spool, which holds ~two events.
    let nowhere = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let dead = format!("http://{}", nowhere.local_addr().expect("an address"));
    drop(nowhere);
    let mcp = McpServer::start(&["streamable-http"]).await;
    let proxy = Proxy::start(
        &dead,
        "unused-key",
        &mcp.base,
        &["--spool-max-bytes", "1000"],
    )
    .await;
    let url = format!("{}/mcp", proxy.url);
    let direct = format!("{}/mcp", mcp.base);

    let with = client(&["--http", &url, "--mode", "legacy"]).await;
    let without = client(&["--http", &direct, "--mode", "legacy"]).await;
    assert_eq!(with, without, "every call is still relayed unchanged");
    let dropped = tokio::time::timeout(DEADLINE, async {
        loop {
            let dropped = proxy.metric("aforo_mcp_events_dropped_total").await;
            if dropped > 0.0 {
                return dropped;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("events are counted as dropped");
    assert!(dropped >= 1.0);
    assert!(
        proxy.stderr().contains("SPOOL FULL"),
        "the proxy says so: {}",
        proxy.stderr()
    );
}
