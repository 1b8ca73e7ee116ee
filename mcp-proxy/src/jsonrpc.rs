//! What a JSON-RPC message is, read from a copy of the bytes on the wire.
//!
//! The relay never changes a message; this module only classifies a copy:
//! request, notification, response or error, with the few fields metering
//! needs. A batch (a JSON array, allowed by the 2025-03-26 revision) is
//! classified element by element. Anything that is not JSON-RPC is reported
//! as such and still relayed.

use serde_json::Value;

/// A JSON-RPC id, kept as its canonical JSON text so that the number `1` and
/// the string `"1"` stay different ids, as JSON-RPC says they are.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RequestId(String);

impl RequestId {
    pub fn from_json(value: &Value) -> Option<RequestId> {
        match value {
            Value::String(_) | Value::Number(_) => Some(RequestId(value.to_string())),
            _ => None,
        }
    }

    /// The canonical JSON text: `7` or `"abc"`.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for RequestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The self-reported identity of an MCP client (`clientInfo`) or server (`serverInfo`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Implementation {
    pub name: String,
    pub version: Option<String>,
}

impl Implementation {
    fn from_json(value: Option<&Value>) -> Option<Implementation> {
        let object = value?.as_object()?;
        let name = object.get("name")?.as_str()?.to_owned();
        let version = object
            .get("version")
            .and_then(Value::as_str)
            .map(str::to_owned);
        Some(Implementation { name, version })
    }
}

/// The `_meta` keys of the 2026-07-28 revision, carried on every request.
const META_CLIENT_INFO: &str = "io.modelcontextprotocol/clientInfo";
const META_PROTOCOL_VERSION: &str = "io.modelcontextprotocol/protocolVersion";
const META_SERVER_INFO: &str = "io.modelcontextprotocol/serverInfo";

#[derive(Clone, Debug, PartialEq)]
pub enum Message {
    Request(Request),
    Notification {
        method: String,
        /// `params.requestId` of `notifications/cancelled`.
        cancels: Option<RequestId>,
    },
    Response {
        id: RequestId,
        /// `result.isError` of a tools/call result.
        is_error: bool,
        /// `result.serverInfo` and `result.protocolVersion` of an initialize result.
        server_info: Option<Implementation>,
        protocol_version: Option<String>,
    },
    Error {
        id: Option<RequestId>,
        code: i64,
        message: String,
    },
}

#[derive(Clone, Debug, PartialEq)]
pub struct Request {
    pub id: RequestId,
    pub method: String,
    /// `params.name`: the tool of a tools/call, the prompt of prompts/get.
    pub name: Option<String>,
    /// `params.clientInfo` of initialize, or the 2026-07-28 `_meta` client info.
    pub client_info: Option<Implementation>,
    /// `params.protocolVersion` of initialize, or the 2026-07-28 `_meta` one.
    pub protocol_version: Option<String>,
}

/// One message of a body or line, with its own size on the wire.
#[derive(Clone, Debug, PartialEq)]
pub struct Framed {
    pub message: Message,
    pub bytes: u64,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ParseError {
    #[error("not JSON: {0}")]
    NotJson(String),
    #[error("not a JSON-RPC message: {0}")]
    NotJsonRpc(&'static str),
}

/// Classifies one wire unit (a stdio line, an HTTP body, an SSE `data`).
/// A batch yields one [`Framed`] per element; elements that are not
/// JSON-RPC are skipped (the peer answers them with its own error).
pub fn parse(bytes: &[u8]) -> Result<Vec<Framed>, ParseError> {
    let value: Value =
        serde_json::from_slice(bytes).map_err(|e| ParseError::NotJson(e.to_string()))?;
    match value {
        Value::Array(items) => Ok(items
            .iter()
            .filter_map(|item| {
                let message = classify(item).ok()?;
                // An element's own size: its compact encoding (the batch's
                // whitespace belongs to no element).
                let bytes = serde_json::to_vec(item).map_or(0, |v| v.len() as u64);
                Some(Framed { message, bytes })
            })
            .collect()),
        single => Ok(vec![Framed {
            message: classify(&single)?,
            bytes: bytes.len() as u64,
        }]),
    }
}

/// Classifies one JSON-RPC object.
pub fn classify(value: &Value) -> Result<Message, ParseError> {
    let object = value
        .as_object()
        .ok_or(ParseError::NotJsonRpc("a message must be a JSON object"))?;
    let id = object.get("id").and_then(RequestId::from_json);
    if let Some(method) = object.get("method") {
        let method = method
            .as_str()
            .ok_or(ParseError::NotJsonRpc("`method` must be a string"))?
            .to_owned();
        let params = object.get("params");
        let field = |name: &str| params.and_then(|p| p.get(name));
        let meta = field("_meta");
        return Ok(match id {
            Some(id) => Message::Request(Request {
                id,
                name: field("name").and_then(Value::as_str).map(str::to_owned),
                client_info: Implementation::from_json(field("clientInfo")).or_else(|| {
                    Implementation::from_json(meta.and_then(|m| m.get(META_CLIENT_INFO)))
                }),
                protocol_version: field("protocolVersion")
                    .or_else(|| meta.and_then(|m| m.get(META_PROTOCOL_VERSION)))
                    .and_then(Value::as_str)
                    .map(str::to_owned),
                method,
            }),
            None => Message::Notification {
                cancels: (method == "notifications/cancelled")
                    .then(|| field("requestId").and_then(RequestId::from_json))
                    .flatten(),
                method,
            },
        });
    }
    if let Some(error) = object.get("error") {
        return Ok(Message::Error {
            id,
            code: error.get("code").and_then(Value::as_i64).unwrap_or(0),
            message: error
                .get("message")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned(),
        });
    }
    if let Some(result) = object.get("result") {
        let id = id.ok_or(ParseError::NotJsonRpc("a result must carry an `id`"))?;
        return Ok(Message::Response {
            id,
            is_error: result.get("isError").and_then(Value::as_bool) == Some(true),
            server_info: Implementation::from_json(result.get("serverInfo")).or_else(|| {
                Implementation::from_json(result.get("_meta").and_then(|m| m.get(META_SERVER_INFO)))
            }),
            protocol_version: result
                .get("protocolVersion")
                .and_then(Value::as_str)
                .map(str::to_owned),
        });
    }
    Err(ParseError::NotJsonRpc(
        "neither `method`, `result` nor `error` is present",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(text: &str) -> Message {
        let mut framed = parse(text.as_bytes()).expect("parses");
        assert_eq!(framed.len(), 1);
        framed.remove(0).message
    }

    #[test]
    fn tools_call_request_names_its_tool() {
        let text = r#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"get_weather","arguments":{"location":"New York"}}}"#;
        let framed = parse(text.as_bytes()).expect("parses");
        assert_eq!(framed[0].bytes, text.len() as u64);
        let Message::Request(request) = &framed[0].message else {
            panic!("a request: {framed:?}");
        };
        assert_eq!(request.method, "tools/call");
        assert_eq!(request.name.as_deref(), Some("get_weather"));
        assert_eq!(request.id.as_str(), "2");
    }

    #[test]
    fn number_and_string_ids_differ() {
        let a = RequestId::from_json(&serde_json::json!(1));
        let b = RequestId::from_json(&serde_json::json!("1"));
        assert_ne!(a, b);
        assert_eq!(RequestId::from_json(&Value::Null), None);
    }

    #[test]
    fn initialize_carries_client_info_and_version() {
        let message = one(
            r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"ExampleClient","version":"1.0.0"}}}"#,
        );
        let Message::Request(request) = message else {
            panic!("a request")
        };
        assert_eq!(
            request.client_info,
            Some(Implementation {
                name: "ExampleClient".into(),
                version: Some("1.0.0".into())
            })
        );
        assert_eq!(request.protocol_version.as_deref(), Some("2025-06-18"));
    }

    #[test]
    fn stateless_request_carries_client_info_in_meta() {
        let message = one(
            r#"{"jsonrpc":"2.0","id":"a","method":"tools/call","params":{"name":"add","_meta":{"io.modelcontextprotocol/clientInfo":{"name":"agent-7"},"io.modelcontextprotocol/protocolVersion":"2026-07-28"}}}"#,
        );
        let Message::Request(request) = message else {
            panic!("a request")
        };
        assert_eq!(
            request.client_info.map(|c| c.name).as_deref(),
            Some("agent-7")
        );
        assert_eq!(request.protocol_version.as_deref(), Some("2026-07-28"));
    }

    #[test]
    fn tool_error_is_a_result_with_is_error() {
        assert_eq!(
            one(
                r#"{"jsonrpc":"2.0","id":4,"result":{"content":[{"type":"text","text":"rate limit"}],"isError":true}}"#
            ),
            Message::Response {
                id: RequestId("4".into()),
                is_error: true,
                server_info: None,
                protocol_version: None
            }
        );
    }

    #[test]
    fn protocol_error_keeps_its_code() {
        assert_eq!(
            one(r#"{"jsonrpc":"2.0","id":3,"error":{"code":-32602,"message":"Unknown tool: x"}}"#),
            Message::Error {
                id: Some(RequestId("3".into())),
                code: -32602,
                message: "Unknown tool: x".into()
            }
        );
    }

    #[test]
    fn cancellation_names_the_request() {
        assert_eq!(
            one(
                r#"{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":"123","reason":"user"}}"#
            ),
            Message::Notification {
                method: "notifications/cancelled".into(),
                cancels: Some(RequestId("\"123\"".into()))
            }
        );
    }

    #[test]
    fn batch_is_classified_element_by_element() {
        let framed = parse(
            br#"[{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a"}},
                 {"jsonrpc":"2.0","method":"notifications/progress"},
                 42,
                 {"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"b"}}]"#,
        )
        .expect("parses");
        let names: Vec<_> = framed
            .iter()
            .map(|f| match &f.message {
                Message::Request(r) => r.name.clone().unwrap_or_default(),
                Message::Notification { method, .. } => method.clone(),
                other => panic!("unexpected {other:?}"),
            })
            .collect();
        assert_eq!(names, ["a", "notifications/progress", "b"]);
        assert!(framed.iter().all(|f| f.bytes > 0));
    }

    #[test]
    fn not_json_rpc_is_reported() {
        assert!(matches!(parse(b"hello"), Err(ParseError::NotJson(_))));
        assert_eq!(
            parse(br#"{"jsonrpc":"2.0"}"#),
            Err(ParseError::NotJsonRpc(
                "neither `method`, `result` nor `error` is present"
            ))
        );
    }
}
