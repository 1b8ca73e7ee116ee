//! From what a session completed to Source Events (`aforo.v1.Event`, tier MCP).
//!
//! Event ids are idempotency keys derived only from the session and the
//! JSON-RPC id, so the same call always becomes the same event: a retry from
//! the spool after a lost answer counts once.

use aforo_proto::v1 as pb;
use chrono::{DateTime, Utc};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use crate::jsonrpc::Implementation;
use crate::session::{Metered, SessionSummary, ToolCall, Transport};

/// The type the example catalog's `mcp-tool-calls` Meter counts.
pub const TOOL_CALL: &str = "mcp.tools_call";
pub const SESSION_STARTED: &str = "mcp.session.started";
pub const SESSION_ENDED: &str = "mcp.session.ended";
/// A stateless request other than tools/call (each is its own "session").
pub const REQUEST: &str = "mcp.request";

/// What every event of one proxy shares.
#[derive(Clone, Debug)]
pub struct EventContext {
    /// The event's `source`, e.g. `mcp-proxy`.
    pub source: String,
    /// The MCP server's name: `tier_detail` and the `server` property.
    pub server: String,
    /// The customer every event is billed to; without it, the agent.
    pub customer: Option<String>,
}

/// The idempotency key of one thing that happened in one session.
pub fn event_id(session: &str, what: &str) -> String {
    let mut hash = Sha256::new();
    hash.update(session.as_bytes());
    hash.update([0]);
    hash.update(what.as_bytes());
    format!("mcp-{}", &hex::encode(hash.finalize())[..32])
}

pub fn to_event(context: &EventContext, metered: &Metered) -> Option<pb::Event> {
    match metered {
        Metered::ToolCall(call) => Some(tool_call(context, call)),
        Metered::SessionStarted(summary) => {
            // A stateless request has no session to start.
            (summary.transport != Transport::Stateless)
                .then(|| session_event(context, summary, SESSION_STARTED, summary.started_at))
        }
        Metered::SessionEnded(summary) => {
            if summary.transport == Transport::Stateless {
                // Its tools/call is its own event; anything else is one request.
                let only_tool_calls = summary.methods.keys().all(|m| m == "tools/call");
                (!only_tool_calls)
                    .then(|| session_event(context, summary, REQUEST, summary.started_at))
            } else {
                let at = summary.ended_at.unwrap_or(summary.started_at);
                Some(session_event(context, summary, SESSION_ENDED, at))
            }
        }
    }
}

fn implementation(value: &Option<Implementation>) -> Value {
    match value {
        Some(i) => json!({"name": i.name, "version": i.version}),
        None => Value::Null,
    }
}

fn tool_call(context: &EventContext, call: &ToolCall) -> pb::Event {
    let mut properties = json!({
        "tool": call.tool,
        "server": context.server,
        "session": call.session,
        "transport": call.transport.as_str(),
        "agent": call.agent.id,
        "agent_source": call.agent.source.as_str(),
        "client": implementation(&call.client),
        "outcome": call.outcome.as_str(),
        "latency_ms": call.latency.as_secs_f64() * 1000.0,
        "request_bytes": call.request_bytes,
        "response_bytes": call.response_bytes,
        "jsonrpc_id": call.jsonrpc_id.as_str(),
    });
    if let Some(code) = call.error_code {
        properties["error_code"] = json!(code);
    }
    if let Some(version) = &call.protocol_version {
        properties["protocol_version"] = json!(version);
    }
    pb::Event {
        id: event_id(&call.session, call.jsonrpc_id.as_str()),
        source: context.source.clone(),
        r#type: TOOL_CALL.into(),
        customer: context
            .customer
            .clone()
            .unwrap_or_else(|| call.agent.id.clone()),
        time: Some(timestamp(call.started_at)),
        properties: Some(to_struct(properties)),
        tier: pb::Tier::Mcp as i32,
        tier_detail: context.server.clone(),
    }
}

fn session_event(
    context: &EventContext,
    summary: &SessionSummary,
    kind: &str,
    at: DateTime<Utc>,
) -> pb::Event {
    let mut properties = json!({
        "server": context.server,
        "session": summary.session,
        "transport": summary.transport.as_str(),
        "agent": summary.agent.id,
        "agent_source": summary.agent.source.as_str(),
        "client": implementation(&summary.client),
        "server_info": implementation(&summary.server),
    });
    if let Some(version) = &summary.protocol_version {
        properties["protocol_version"] = json!(version);
    }
    if kind != SESSION_STARTED {
        properties["methods"] = json!(summary.methods);
        properties["tool_calls"] = json!(summary.tool_calls);
    }
    if let Some(ended) = summary.ended_at {
        let seconds = (ended - summary.started_at).num_microseconds().unwrap_or(0) as f64 / 1e6;
        properties["duration_s"] = json!(seconds);
    }
    pb::Event {
        id: event_id(&summary.session, kind),
        source: context.source.clone(),
        r#type: kind.into(),
        customer: context
            .customer
            .clone()
            .unwrap_or_else(|| summary.agent.id.clone()),
        time: Some(timestamp(at)),
        properties: Some(to_struct(properties)),
        tier: pb::Tier::Mcp as i32,
        tier_detail: context.server.clone(),
    }
}

fn timestamp(at: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: at.timestamp(),
        nanos: at.timestamp_subsec_nanos() as i32,
    }
}

fn to_struct(value: Value) -> prost_types::Struct {
    let fields = match value {
        Value::Object(map) => map,
        _ => Map::new(),
    };
    prost_types::Struct {
        fields: fields.into_iter().map(|(k, v)| (k, to_value(v))).collect(),
    }
}

fn to_value(value: Value) -> prost_types::Value {
    use prost_types::value::Kind;
    let kind = match value {
        Value::Null => Kind::NullValue(0),
        Value::Bool(b) => Kind::BoolValue(b),
        Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or(0.0)),
        Value::String(s) => Kind::StringValue(s),
        Value::Array(items) => Kind::ListValue(prost_types::ListValue {
            values: items.into_iter().map(to_value).collect(),
        }),
        object @ Value::Object(_) => Kind::StructValue(to_struct(object)),
    };
    prost_types::Value { kind: Some(kind) }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::time::Duration;

    use super::*;
    use crate::jsonrpc::{RequestId, parse};
    use crate::session::{Agent, AgentSource, Outcome};

    fn context(customer: Option<&str>) -> EventContext {
        EventContext {
            source: "mcp-proxy".into(),
            server: "weather".into(),
            customer: customer.map(str::to_owned),
        }
    }

    fn call(session: &str, id: &str) -> ToolCall {
        let Ok(framed) =
            parse(format!(r#"{{"jsonrpc":"2.0","id":{id},"result":{{}}}}"#).as_bytes())
        else {
            panic!("an id")
        };
        let crate::jsonrpc::Message::Response { id, .. } = &framed[0].message else {
            panic!("a response")
        };
        ToolCall {
            session: session.into(),
            transport: Transport::StreamableHttp,
            jsonrpc_id: id.clone(),
            tool: "get_weather".into(),
            agent: Agent {
                id: "claude-code".into(),
                source: AgentSource::ClientInfo,
            },
            client: Some(Implementation {
                name: "claude-code".into(),
                version: Some("2.1".into()),
            }),
            protocol_version: Some("2025-11-25".into()),
            outcome: Outcome::RpcError,
            error_code: Some(-32602),
            started_at: DateTime::from_timestamp(1_800_000_000, 5_000).expect("a time"),
            latency: Duration::from_micros(1500),
            request_bytes: 80,
            response_bytes: 120,
        }
    }

    fn property<'a>(event: &'a pb::Event, name: &str) -> &'a prost_types::value::Kind {
        event.properties.as_ref().expect("properties").fields[name]
            .kind
            .as_ref()
            .expect("a value")
    }

    #[test]
    fn the_same_call_always_gets_the_same_id() {
        let a = to_event(&context(None), &Metered::ToolCall(call("s1", "7"))).expect("an event");
        let b = to_event(&context(None), &Metered::ToolCall(call("s1", "7"))).expect("an event");
        assert_eq!(a.id, b.id);
        let other_session =
            to_event(&context(None), &Metered::ToolCall(call("s2", "7"))).expect("an event");
        let string_id =
            to_event(&context(None), &Metered::ToolCall(call("s1", "\"7\""))).expect("an event");
        assert_ne!(a.id, other_session.id);
        assert_ne!(a.id, string_id.id);
        assert_eq!(a.id.len(), 36);
        let _: RequestId = call("s1", "7").jsonrpc_id;
    }

    #[test]
    fn a_tool_call_is_an_mcp_tier_event_with_its_dimensions() {
        use prost_types::value::Kind;
        let event =
            to_event(&context(None), &Metered::ToolCall(call("s1", "7"))).expect("an event");
        assert_eq!(event.r#type, TOOL_CALL);
        assert_eq!(event.tier, pb::Tier::Mcp as i32);
        assert_eq!(event.tier_detail, "weather");
        assert_eq!(
            event.customer, "claude-code",
            "the agent without a configured customer"
        );
        assert_eq!(
            event.time.as_ref().map(|t| (t.seconds, t.nanos)),
            Some((1_800_000_000, 5_000))
        );
        assert_eq!(
            property(&event, "tool"),
            &Kind::StringValue("get_weather".into())
        );
        assert_eq!(
            property(&event, "outcome"),
            &Kind::StringValue("rpc_error".into())
        );
        assert_eq!(property(&event, "error_code"), &Kind::NumberValue(-32602.0));
        assert_eq!(property(&event, "latency_ms"), &Kind::NumberValue(1.5));
        assert_eq!(property(&event, "session"), &Kind::StringValue("s1".into()));
        let billed = to_event(&context(Some("acme")), &Metered::ToolCall(call("s1", "7")))
            .expect("an event");
        assert_eq!(billed.customer, "acme");
    }

    fn summary(transport: Transport, methods: &[(&str, u64)]) -> SessionSummary {
        let at = DateTime::from_timestamp(1_800_000_000, 0).expect("a time");
        SessionSummary {
            session: "s9".into(),
            transport,
            agent: Agent {
                id: "a".into(),
                source: AgentSource::Config,
            },
            client: None,
            server: None,
            protocol_version: None,
            started_at: at,
            ended_at: Some(at + chrono::Duration::seconds(3)),
            methods: methods
                .iter()
                .map(|(m, n)| (m.to_string(), *n))
                .collect::<BTreeMap<_, _>>(),
            tool_calls: 0,
        }
    }

    #[test]
    fn a_session_ends_with_its_activity() {
        use prost_types::value::Kind;
        let event = to_event(
            &context(None),
            &Metered::SessionEnded(summary(Transport::Stdio, &[("tools/list", 2)])),
        )
        .expect("an event");
        assert_eq!(event.r#type, SESSION_ENDED);
        assert_eq!(event.id, event_id("s9", SESSION_ENDED));
        assert_eq!(property(&event, "duration_s"), &Kind::NumberValue(3.0));
        let Kind::StructValue(methods) = property(&event, "methods") else {
            panic!("methods is an object")
        };
        assert!(methods.fields.contains_key("tools/list"));
    }

    #[test]
    fn a_stateless_request_is_one_event_and_its_tool_call_no_second() {
        let listed = to_event(
            &context(None),
            &Metered::SessionEnded(summary(Transport::Stateless, &[("tools/list", 1)])),
        );
        assert_eq!(listed.map(|e| e.r#type).as_deref(), Some(REQUEST));
        let called = to_event(
            &context(None),
            &Metered::SessionEnded(summary(Transport::Stateless, &[("tools/call", 1)])),
        );
        assert_eq!(called, None);
    }
}
