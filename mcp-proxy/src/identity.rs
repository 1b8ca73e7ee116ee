//! Who is calling: the authenticated identity of a request, when the
//! deployment gives the proxy one. Strongest first: a header set by an
//! authenticating gateway in front of the proxy, then an API key the proxy
//! was configured with, then the sidecar's own configuration. Without any,
//! sessions fall back to the client's self-reported `clientInfo`.
//!
//! The proxy meters; it does not authorize. An unknown API key is relayed
//! like any other header and the call is attributed by `clientInfo`.

use http::HeaderMap;
use http::header::{AUTHORIZATION, HeaderName};
use subtle::ConstantTimeEq;

use crate::session::{Agent, AgentSource};

#[derive(Clone, Debug, Default)]
pub struct Identify {
    /// A header whose value is the caller's authenticated identity.
    pub header: Option<HeaderName>,
    /// `(agent, key)`: a request presenting `key` (as `Authorization:
    /// Bearer` or `X-API-Key`) is `agent`.
    pub api_keys: Vec<(String, String)>,
    /// The agent of every request (a sidecar in front of one agent).
    pub agent: Option<String>,
}

const API_KEY_HEADER: &str = "x-api-key";

/// Parses `AGENT=KEY`.
pub fn parse_api_key(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((agent, key)) if !agent.is_empty() && !key.is_empty() => {
            Ok((agent.to_owned(), key.to_owned()))
        }
        _ => Err(format!(
            "{:?} is not AGENT=KEY (for example claude-code=s3cr3t)",
            redact(text)
        )),
    }
}

fn redact(text: &str) -> String {
    match text.split_once('=') {
        Some((agent, _)) => format!("{agent}=…"),
        None => "…".into(),
    }
}

impl Identify {
    /// The identity of a request, from its headers (HTTP transports).
    pub fn from_headers(&self, headers: &HeaderMap) -> Option<Agent> {
        if let Some(name) = &self.header
            && let Some(value) = headers.get(name).and_then(|v| v.to_str().ok())
            && !value.trim().is_empty()
        {
            return Some(Agent {
                id: value.trim().to_owned(),
                source: AgentSource::Header,
            });
        }
        if !self.api_keys.is_empty() {
            let presented = headers
                .get(AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| {
                    v.strip_prefix("Bearer ")
                        .or_else(|| v.strip_prefix("bearer "))
                })
                .or_else(|| headers.get(API_KEY_HEADER).and_then(|v| v.to_str().ok()))
                .map(str::trim);
            if let Some(presented) = presented {
                // Compare with every key, so timing tells nothing about which matched.
                let mut found = None;
                for (agent, key) in &self.api_keys {
                    if bool::from(key.as_bytes().ct_eq(presented.as_bytes())) {
                        found = Some(agent);
                    }
                }
                if let Some(agent) = found {
                    return Some(Agent {
                        id: agent.clone(),
                        source: AgentSource::ApiKey,
                    });
                }
            }
        }
        self.configured()
    }

    /// The configured agent (stdio, where there are no headers).
    pub fn configured(&self) -> Option<Agent> {
        self.agent.as_ref().map(|id| Agent {
            id: id.clone(),
            source: AgentSource::Config,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(
                HeaderName::from_bytes(name.as_bytes()).expect("a name"),
                value.parse().expect("a value"),
            );
        }
        map
    }

    fn identify() -> Identify {
        Identify {
            header: Some(HeaderName::from_static("x-auth-user")),
            api_keys: vec![
                ("team-a".into(), "key-a".into()),
                ("team-b".into(), "key-b".into()),
            ],
            agent: None,
        }
    }

    #[test]
    fn the_gateway_header_wins() {
        let agent = identify().from_headers(&headers(&[
            ("x-auth-user", "alice@example.com"),
            ("authorization", "Bearer key-a"),
        ]));
        assert_eq!(
            agent,
            Some(Agent {
                id: "alice@example.com".into(),
                source: AgentSource::Header
            })
        );
    }

    #[test]
    fn an_api_key_names_its_agent() {
        let id = |h: &[(&str, &str)]| identify().from_headers(&headers(h)).map(|a| a.id);
        assert_eq!(
            id(&[("authorization", "Bearer key-b")]).as_deref(),
            Some("team-b")
        );
        assert_eq!(id(&[("x-api-key", "key-a")]).as_deref(), Some("team-a"));
        assert_eq!(id(&[("authorization", "Bearer nope")]), None);
        assert_eq!(id(&[]), None);
    }

    #[test]
    fn api_key_flags_are_agent_equals_key() {
        assert_eq!(
            parse_api_key("claude=s3=cr3t"),
            Ok(("claude".into(), "s3=cr3t".into()))
        );
        let err = parse_api_key("secret-without-agent").expect_err("refused");
        assert!(
            !err.contains("secret"),
            "the key stays out of the message: {err}"
        );
    }
}
