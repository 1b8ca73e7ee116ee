//! One MCP session as the proxy sees it: requests waiting for their answer,
//! and what the session did. Pure: the transports feed it classified copies
//! of the messages they relayed, with the time, and take back what it
//! completed ([`Metered`]).
//!
//! Requests are paired with their answers by direction and JSON-RPC id: a
//! client request is answered by the server, and a server request (sampling,
//! elicitation, roots) by the client, with ids that may collide across the
//! two directions.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

use crate::jsonrpc::{Framed, Implementation, Message, RequestId};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Direction {
    ClientToServer,
    ServerToClient,
}

/// How the client reached the server; each has its own session key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    /// One session per server process.
    Stdio,
    /// Keyed by `Mcp-Session-Id`.
    StreamableHttp,
    /// No session: 2026-07-28 or a stateless server; one per HTTP request.
    Stateless,
    /// The 2024-11-05 HTTP+SSE transport, keyed by its `sessionId` query.
    Sse,
}

impl Transport {
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Stdio => "stdio",
            Transport::StreamableHttp => "streamable-http",
            Transport::Stateless => "streamable-http-stateless",
            Transport::Sse => "sse",
        }
    }
}

/// How a tools/call ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// A result without `isError`.
    Ok,
    /// A result with `isError: true`: the tool ran and failed.
    ToolError,
    /// A JSON-RPC error answered the request.
    RpcError,
    /// The client cancelled it (`notifications/cancelled`, or closed the
    /// response stream of a stateless request).
    Cancelled,
    /// No answer within the call timeout.
    TimedOut,
    /// The server went away (process exit, HTTP failure) before answering.
    TransportError,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::ToolError => "tool_error",
            Outcome::RpcError => "rpc_error",
            Outcome::Cancelled => "cancelled",
            Outcome::TimedOut => "timed_out",
            Outcome::TransportError => "transport_error",
        }
    }
}

/// Where an agent's identity came from, strongest first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AgentSource {
    /// A request header set by an authenticating gateway.
    Header,
    /// An API key the proxy was configured with.
    ApiKey,
    /// The sidecar's configuration (`--agent`).
    Config,
    /// The client's self-reported `clientInfo`: a dimension, not authentication.
    ClientInfo,
    Unknown,
}

impl AgentSource {
    pub fn as_str(self) -> &'static str {
        match self {
            AgentSource::Header => "header",
            AgentSource::ApiKey => "api_key",
            AgentSource::Config => "config",
            AgentSource::ClientInfo => "client_info",
            AgentSource::Unknown => "unknown",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Agent {
    pub id: String,
    pub source: AgentSource,
}

impl Agent {
    fn from_client(client: Option<&Implementation>) -> Agent {
        match client {
            Some(c) => Agent {
                id: c.name.clone(),
                source: AgentSource::ClientInfo,
            },
            None => Agent {
                id: "unknown".into(),
                source: AgentSource::Unknown,
            },
        }
    }
}

/// When a message passed the proxy, and who sent it if the transport knows.
#[derive(Clone, Debug)]
pub struct Observation {
    pub now: Instant,
    pub at: DateTime<Utc>,
    /// The authenticated identity of the request (header, API key, config).
    pub identity: Option<Agent>,
}

/// A completed tools/call.
#[derive(Clone, Debug, PartialEq)]
pub struct ToolCall {
    pub session: String,
    pub transport: Transport,
    pub jsonrpc_id: RequestId,
    pub tool: String,
    pub agent: Agent,
    pub client: Option<Implementation>,
    pub protocol_version: Option<String>,
    pub outcome: Outcome,
    pub error_code: Option<i64>,
    pub started_at: DateTime<Utc>,
    pub latency: Duration,
    pub request_bytes: u64,
    pub response_bytes: u64,
}

/// What a session did, at its start or its end.
#[derive(Clone, Debug, PartialEq)]
pub struct SessionSummary {
    pub session: String,
    pub transport: Transport,
    pub agent: Agent,
    pub client: Option<Implementation>,
    pub server: Option<Implementation>,
    pub protocol_version: Option<String>,
    pub started_at: DateTime<Utc>,
    pub ended_at: Option<DateTime<Utc>>,
    /// Messages per method, both directions (requests and notifications).
    pub methods: BTreeMap<String, u64>,
    pub tool_calls: u64,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Metered {
    ToolCall(ToolCall),
    SessionStarted(SessionSummary),
    SessionEnded(SessionSummary),
}

#[derive(Debug)]
struct Pending {
    method: String,
    tool: Option<String>,
    started: Instant,
    started_at: DateTime<Utc>,
    request_bytes: u64,
    identity: Option<Agent>,
    client: Option<Implementation>,
    protocol_version: Option<String>,
}

#[derive(Debug)]
pub struct Session {
    key: String,
    transport: Transport,
    started_at: DateTime<Utc>,
    last_active: Instant,
    identity: Option<Agent>,
    client: Option<Implementation>,
    server: Option<Implementation>,
    protocol_version: Option<String>,
    pending: HashMap<(Direction, RequestId), Pending>,
    methods: BTreeMap<String, u64>,
    tool_calls: u64,
}

impl Session {
    pub fn new(key: String, transport: Transport, at: DateTime<Utc>, now: Instant) -> Session {
        Session {
            key,
            transport,
            started_at: at,
            last_active: now,
            identity: None,
            client: None,
            server: None,
            protocol_version: None,
            pending: HashMap::new(),
            methods: BTreeMap::new(),
            tool_calls: 0,
        }
    }

    pub fn key(&self) -> &str {
        &self.key
    }

    pub fn last_active(&self) -> Instant {
        self.last_active
    }

    /// Requests still waiting for an answer.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Feeds one relayed wire unit (all elements of a batch); returns what completed.
    pub fn observe_all(
        &mut self,
        direction: Direction,
        framed: &[Framed],
        seen: &Observation,
    ) -> Vec<Metered> {
        framed
            .iter()
            .filter_map(|f| self.observe(direction, &f.message, f.bytes, seen))
            .collect()
    }

    /// Feeds one relayed message; returns what it completed, if anything.
    pub fn observe(
        &mut self,
        direction: Direction,
        message: &Message,
        bytes: u64,
        seen: &Observation,
    ) -> Option<Metered> {
        self.last_active = seen.now;
        if seen.identity.is_some() && direction == Direction::ClientToServer {
            self.identity.clone_from(&seen.identity);
        }
        match message {
            Message::Request(request) => {
                *self.methods.entry(request.method.clone()).or_default() += 1;
                // initialize's clientInfo, or (2026-07-28) the first
                // request's `_meta` one.
                if (request.method == "initialize" || self.client.is_none())
                    && let Some(client) = &request.client_info
                {
                    self.client = Some(client.clone());
                }
                if self.protocol_version.is_none() {
                    self.protocol_version.clone_from(&request.protocol_version);
                }
                let is_tool_call = request.method == "tools/call";
                self.pending.insert(
                    (direction, request.id.clone()),
                    Pending {
                        method: request.method.clone(),
                        tool: if is_tool_call {
                            Some(request.name.clone().unwrap_or_default())
                        } else {
                            None
                        },
                        started: seen.now,
                        started_at: seen.at,
                        request_bytes: bytes,
                        identity: seen.identity.clone(),
                        client: request.client_info.clone(),
                        protocol_version: request.protocol_version.clone(),
                    },
                );
                None
            }
            Message::Notification { method, cancels } => {
                *self.methods.entry(method.clone()).or_default() += 1;
                let cancelled = cancels.as_ref()?;
                // The cancelled request went the other way.
                let pending = self
                    .pending
                    .remove(&(direction, cancelled.clone()))
                    .or_else(|| {
                        self.pending
                            .remove(&(opposite(direction), cancelled.clone()))
                    })?;
                self.finish(
                    cancelled.clone(),
                    pending,
                    Outcome::Cancelled,
                    None,
                    0,
                    seen,
                )
            }
            Message::Response {
                id,
                is_error,
                server_info,
                protocol_version,
            } => {
                let pending = self.pending.remove(&(opposite(direction), id.clone()))?;
                if self.server.is_none() {
                    self.server.clone_from(server_info);
                }
                if pending.method == "initialize" {
                    self.server.clone_from(server_info);
                    self.protocol_version = protocol_version.clone();
                    let started = self.summary(None);
                    return Some(Metered::SessionStarted(started));
                }
                let outcome = if *is_error {
                    Outcome::ToolError
                } else {
                    Outcome::Ok
                };
                self.finish(id.clone(), pending, outcome, None, bytes, seen)
            }
            Message::Error { id, code, .. } => {
                let id = id.as_ref()?;
                let pending = self.pending.remove(&(opposite(direction), id.clone()))?;
                self.finish(
                    id.clone(),
                    pending,
                    Outcome::RpcError,
                    Some(*code),
                    bytes,
                    seen,
                )
            }
        }
    }

    /// Ends every request older than `timeout`: tools/calls as timed out.
    pub fn expire(&mut self, timeout: Duration, seen: &Observation) -> Vec<Metered> {
        let late: Vec<_> = self
            .pending
            .iter()
            .filter(|(_, p)| seen.now.saturating_duration_since(p.started) >= timeout)
            .map(|(key, _)| key.clone())
            .collect();
        let mut done = Vec::new();
        for key in late {
            if let Some(pending) = self.pending.remove(&key)
                && let Some(call) = self.finish(key.1, pending, Outcome::TimedOut, None, 0, seen)
            {
                done.push(call);
            }
        }
        done
    }

    /// The session got its real key (an `initialize` answered with an
    /// `Mcp-Session-Id`, after the request was seen under a provisional one).
    pub fn rekey(&mut self, key: String, transport: Transport) {
        self.key = key;
        self.transport = transport;
    }

    /// Ends the given client requests if they still wait (their HTTP
    /// exchange failed), with `outcome`.
    pub fn abandon_requests(
        &mut self,
        ids: &[RequestId],
        outcome: Outcome,
        seen: &Observation,
    ) -> Vec<Metered> {
        ids.iter()
            .filter_map(|id| {
                let pending = self
                    .pending
                    .remove(&(Direction::ClientToServer, id.clone()))?;
                self.finish(id.clone(), pending, outcome, None, 0, seen)
            })
            .collect()
    }

    /// Ends every request still waiting with `outcome` (the client or the
    /// server went away); does not end the session.
    pub fn abandon(&mut self, outcome: Outcome, seen: &Observation) -> Vec<Metered> {
        let mut pending: Vec<_> = self.pending.drain().collect();
        pending.sort_by_key(|(_, p)| p.started);
        pending
            .into_iter()
            .filter_map(|(key, p)| self.finish(key.1, p, outcome, None, 0, seen))
            .collect()
    }

    /// Ends the session: requests still waiting end with `outcome`, then the
    /// session's summary.
    pub fn close(mut self, outcome: Outcome, seen: &Observation) -> Vec<Metered> {
        let mut done = self.abandon(outcome, seen);
        done.push(Metered::SessionEnded(self.summary(Some(seen.at))));
        done
    }

    fn agent(&self, pending_identity: Option<&Agent>, client: Option<&Implementation>) -> Agent {
        pending_identity
            .or(self.identity.as_ref())
            .cloned()
            .unwrap_or_else(|| Agent::from_client(client.or(self.client.as_ref())))
    }

    fn summary(&self, ended_at: Option<DateTime<Utc>>) -> SessionSummary {
        SessionSummary {
            session: self.key.clone(),
            transport: self.transport,
            agent: self.agent(None, None),
            client: self.client.clone(),
            server: self.server.clone(),
            protocol_version: self.protocol_version.clone(),
            started_at: self.started_at,
            ended_at,
            methods: self.methods.clone(),
            tool_calls: self.tool_calls,
        }
    }

    fn finish(
        &mut self,
        id: RequestId,
        pending: Pending,
        outcome: Outcome,
        error_code: Option<i64>,
        response_bytes: u64,
        seen: &Observation,
    ) -> Option<Metered> {
        let tool = pending.tool?;
        self.tool_calls += 1;
        Some(Metered::ToolCall(ToolCall {
            session: self.key.clone(),
            transport: self.transport,
            jsonrpc_id: id,
            tool,
            agent: self.agent(pending.identity.as_ref(), pending.client.as_ref()),
            client: pending.client.or_else(|| self.client.clone()),
            protocol_version: pending
                .protocol_version
                .or_else(|| self.protocol_version.clone()),
            outcome,
            error_code,
            started_at: pending.started_at,
            latency: seen.now.saturating_duration_since(pending.started),
            request_bytes: pending.request_bytes,
            response_bytes,
        }))
    }
}

fn opposite(direction: Direction) -> Direction {
    match direction {
        Direction::ClientToServer => Direction::ServerToClient,
        Direction::ServerToClient => Direction::ClientToServer,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jsonrpc::parse;

    struct Clock {
        start: Instant,
        at: DateTime<Utc>,
    }

    impl Clock {
        fn new() -> Clock {
            Clock {
                start: Instant::now(),
                at: DateTime::from_timestamp(1_800_000_000, 0).expect("a time"),
            }
        }
        fn after(&self, ms: u64) -> Observation {
            Observation {
                now: self.start + Duration::from_millis(ms),
                at: self.at + chrono::Duration::milliseconds(ms as i64),
                identity: None,
            }
        }
    }

    fn feed(
        session: &mut Session,
        direction: Direction,
        text: &str,
        seen: &Observation,
    ) -> Vec<Metered> {
        session.observe_all(direction, &parse(text.as_bytes()).expect("JSON-RPC"), seen)
    }

    fn calls(metered: Vec<Metered>) -> Vec<ToolCall> {
        metered
            .into_iter()
            .filter_map(|m| match m {
                Metered::ToolCall(call) => Some(call),
                _ => None,
            })
            .collect()
    }

    const INIT: &str = r#"{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-06-18","clientInfo":{"name":"claude-code","version":"2.1"}}}"#;
    const INIT_OK: &str = r#"{"jsonrpc":"2.0","id":0,"result":{"protocolVersion":"2025-06-18","serverInfo":{"name":"weather","version":"1.0"}}}"#;

    fn initialized(clock: &Clock) -> Session {
        let mut session = Session::new("s1".into(), Transport::Stdio, clock.at, clock.start);
        assert!(
            feed(
                &mut session,
                Direction::ClientToServer,
                INIT,
                &clock.after(0)
            )
            .is_empty()
        );
        let started = feed(
            &mut session,
            Direction::ServerToClient,
            INIT_OK,
            &clock.after(1),
        );
        let [Metered::SessionStarted(summary)] = started.as_slice() else {
            panic!("the session starts: {started:?}");
        };
        assert_eq!(summary.agent.id, "claude-code");
        assert_eq!(
            summary.server.as_ref().map(|s| s.name.as_str()),
            Some("weather")
        );
        session
    }

    #[test]
    fn a_tools_call_and_its_result_make_one_call() {
        let clock = Clock::new();
        let mut session = initialized(&clock);
        let request =
            r#"{"jsonrpc":"2.0","id":5,"method":"tools/call","params":{"name":"get_weather"}}"#;
        let response = r#"{"jsonrpc":"2.0","id":5,"result":{"content":[]}}"#;
        assert!(
            feed(
                &mut session,
                Direction::ClientToServer,
                request,
                &clock.after(10)
            )
            .is_empty()
        );
        let done = calls(feed(
            &mut session,
            Direction::ServerToClient,
            response,
            &clock.after(35),
        ));
        assert_eq!(done.len(), 1);
        let call = &done[0];
        assert_eq!(call.tool, "get_weather");
        assert_eq!(call.outcome, Outcome::Ok);
        assert_eq!(call.latency, Duration::from_millis(25));
        assert_eq!(call.request_bytes, request.len() as u64);
        assert_eq!(call.response_bytes, response.len() as u64);
        assert_eq!(
            call.agent,
            Agent {
                id: "claude-code".into(),
                source: AgentSource::ClientInfo
            }
        );
        assert_eq!(call.protocol_version.as_deref(), Some("2025-06-18"));
        assert_eq!(session.pending(), 0);
    }

    #[test]
    fn a_repeated_answer_is_not_metered_twice() {
        let clock = Clock::new();
        let mut session = initialized(&clock);
        let response = r#"{"jsonrpc":"2.0","id":5,"result":{"isError":true}}"#;
        feed(
            &mut session,
            Direction::ClientToServer,
            r#"{"jsonrpc":"2.0","id":5,"method":"tools/call","params":{"name":"x"}}"#,
            &clock.after(2),
        );
        let first = calls(feed(
            &mut session,
            Direction::ServerToClient,
            response,
            &clock.after(3),
        ));
        assert_eq!(first[0].outcome, Outcome::ToolError);
        // A resumed SSE stream replays events the proxy already relayed.
        assert!(
            feed(
                &mut session,
                Direction::ServerToClient,
                response,
                &clock.after(4)
            )
            .is_empty()
        );
    }

    #[test]
    fn protocol_error_and_cancellation_are_outcomes() {
        let clock = Clock::new();
        let mut session = initialized(&clock);
        feed(
            &mut session,
            Direction::ClientToServer,
            r#"[{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a"}},{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"b"}}]"#,
            &clock.after(2),
        );
        let errored = calls(feed(
            &mut session,
            Direction::ServerToClient,
            r#"{"jsonrpc":"2.0","id":1,"error":{"code":-32602,"message":"Unknown tool"}}"#,
            &clock.after(3),
        ));
        assert_eq!(
            (errored[0].outcome, errored[0].error_code),
            (Outcome::RpcError, Some(-32602))
        );
        let cancelled = calls(feed(
            &mut session,
            Direction::ClientToServer,
            r#"{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":2}}"#,
            &clock.after(9),
        ));
        assert_eq!(
            (cancelled[0].tool.as_str(), cancelled[0].outcome),
            ("b", Outcome::Cancelled)
        );
        // The server's late answer changes nothing.
        assert!(
            feed(
                &mut session,
                Direction::ServerToClient,
                r#"{"jsonrpc":"2.0","id":2,"result":{}}"#,
                &clock.after(10)
            )
            .is_empty()
        );
    }

    #[test]
    fn ids_of_the_two_directions_do_not_collide() {
        let clock = Clock::new();
        let mut session = initialized(&clock);
        feed(
            &mut session,
            Direction::ClientToServer,
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"ask"}}"#,
            &clock.after(2),
        );
        // The server asks the client for a completion, with the same id 1.
        feed(
            &mut session,
            Direction::ServerToClient,
            r#"{"jsonrpc":"2.0","id":1,"method":"sampling/createMessage","params":{}}"#,
            &clock.after(3),
        );
        assert!(
            feed(
                &mut session,
                Direction::ClientToServer,
                r#"{"jsonrpc":"2.0","id":1,"result":{"content":{}}}"#,
                &clock.after(4)
            )
            .is_empty()
        );
        let done = calls(feed(
            &mut session,
            Direction::ServerToClient,
            r#"{"jsonrpc":"2.0","id":1,"result":{}}"#,
            &clock.after(5),
        ));
        assert_eq!(done[0].tool, "ask");
    }

    #[test]
    fn unanswered_calls_time_out_then_the_session_ends() {
        let clock = Clock::new();
        let mut session = initialized(&clock);
        feed(
            &mut session,
            Direction::ClientToServer,
            r#"{"jsonrpc":"2.0","id":"x","method":"tools/call","params":{"name":"slow"}}"#,
            &clock.after(10),
        );
        feed(
            &mut session,
            Direction::ClientToServer,
            r#"{"jsonrpc":"2.0","id":"y","method":"tools/call","params":{"name":"later"}}"#,
            &clock.after(500),
        );
        let expired = calls(session.expire(Duration::from_millis(1000), &clock.after(1010)));
        assert_eq!(expired.len(), 1);
        assert_eq!(
            (expired[0].tool.as_str(), expired[0].outcome),
            ("slow", Outcome::TimedOut)
        );
        let end = session.close(Outcome::TransportError, &clock.after(1100));
        let [Metered::ToolCall(last), Metered::SessionEnded(summary)] = end.as_slice() else {
            panic!("the waiting call, then the end: {end:?}");
        };
        assert_eq!(
            (last.tool.as_str(), last.outcome),
            ("later", Outcome::TransportError)
        );
        assert_eq!(summary.tool_calls, 2);
        assert_eq!(summary.methods.get("tools/call"), Some(&2));
        assert_eq!(summary.methods.get("initialize"), Some(&1));
    }

    #[test]
    fn an_authenticated_identity_beats_client_info() {
        let clock = Clock::new();
        let mut session = initialized(&clock);
        let mut seen = clock.after(5);
        seen.identity = Some(Agent {
            id: "team-a".into(),
            source: AgentSource::ApiKey,
        });
        feed(
            &mut session,
            Direction::ClientToServer,
            r#"{"jsonrpc":"2.0","id":9,"method":"tools/call","params":{"name":"t"}}"#,
            &seen,
        );
        let done = calls(feed(
            &mut session,
            Direction::ServerToClient,
            r#"{"jsonrpc":"2.0","id":9,"result":{}}"#,
            &clock.after(6),
        ));
        assert_eq!(
            done[0].agent,
            Agent {
                id: "team-a".into(),
                source: AgentSource::ApiKey
            }
        );
    }
}
