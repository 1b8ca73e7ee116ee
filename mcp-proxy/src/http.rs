//! HTTP: Streamable HTTP (2025-03-26 … 2026-07-28) and the legacy HTTP+SSE
//! transport (2024-11-05), relayed request by request to one upstream.
//!
//! Every path, method and header goes through as it came (less hop-by-hop
//! headers; `Host` names the upstream). POST bodies are read whole (they
//! are single JSON-RPC messages or batches, bounded by `--max-message-bytes`)
//! so the meter sees each request before the server does. Response bodies
//! stream through frame by frame; the meter reads a copy: a JSON body when
//! it ends, an SSE stream event by event.
//!
//! Session keys: `Mcp-Session-Id` (an initialize is seen under a provisional
//! key until its answer names the session); the legacy transport's
//! `sessionId`/`session_id` query; otherwise the request is its own session
//! (stateless servers and the 2026-07-28 revision), where closing the
//! response stream early cancels the request.
//!
//! Legacy SSE: the first event of a GET stream, `endpoint`, names the URI
//! to POST to; when it points at the upstream it is rewritten to the same
//! path on the proxy.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::Body;
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri};
use http_body::{Body as HttpBody, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use crate::Error;
use crate::framing::{SseEvent, SseSplitter};
use crate::identity::Identify;
use crate::jsonrpc::{self, Framed, Message, RequestId};
use crate::meter::Meter;
use crate::session::{Direction, Outcome, Transport};

const SESSION_HEADER: &str = "mcp-session-id";

/// Where requests go: an `http://host:port` origin and an optional path
/// prefix put before every request's path.
#[derive(Clone, Debug)]
pub struct Upstream {
    scheme: http::uri::Scheme,
    authority: http::uri::Authority,
    prefix: String,
}

impl Upstream {
    pub fn parse(url: &str) -> Result<Upstream, Error> {
        let uri: Uri = url.parse().map_err(|e| {
            Error::Config(format!(
                "--upstream {url:?} is not a URL such as http://127.0.0.1:8000: {e}"
            ))
        })?;
        let scheme = uri.scheme().cloned().ok_or_else(|| {
            Error::Config(format!(
                "--upstream {url:?} has no scheme; use http://HOST:PORT"
            ))
        })?;
        if scheme != http::uri::Scheme::HTTP {
            return Err(Error::Config(format!(
                "--upstream {url:?}: only http:// upstreams are supported; run the proxy beside the server (TLS ends in front of the proxy)"
            )));
        }
        let authority = uri
            .authority()
            .cloned()
            .ok_or_else(|| Error::Config(format!("--upstream {url:?} has no host")))?;
        if uri.query().is_some() {
            return Err(Error::Config(format!(
                "--upstream {url:?} has a query; give the origin and, at most, a path prefix"
            )));
        }
        Ok(Upstream {
            scheme,
            authority,
            prefix: uri.path().trim_end_matches('/').to_owned(),
        })
    }

    /// A name for events: `host:port`.
    pub fn name(&self) -> String {
        self.authority.to_string()
    }

    pub fn url(&self) -> String {
        format!("{}://{}{}", self.scheme, self.authority, self.prefix)
    }

    fn uri(&self, path_and_query: &str) -> Result<Uri, http::Error> {
        Uri::builder()
            .scheme(self.scheme.clone())
            .authority(self.authority.clone())
            .path_and_query(format!("{}{path_and_query}", self.prefix))
            .build()
    }

    /// The legacy `endpoint` URI, made to point at the proxy when it points
    /// at the upstream. `None` leaves it as it is.
    pub fn rewrite_endpoint(&self, endpoint: &str) -> Option<String> {
        let path = if endpoint.starts_with("http://") || endpoint.starts_with("https://") {
            let uri: Uri = endpoint.parse().ok()?;
            if uri.authority() != Some(&self.authority) {
                return None;
            }
            uri.path_and_query()?.as_str().to_owned()
        } else if endpoint.starts_with('/') {
            endpoint.to_owned()
        } else {
            // Relative to the stream's URL, which is the proxy's already.
            return None;
        };
        let stripped = match path.strip_prefix(self.prefix.as_str()) {
            Some(rest)
                if !self.prefix.is_empty() && (rest.is_empty() || rest.starts_with(['/', '?'])) =>
            {
                rest.to_owned()
            }
            _ => path,
        };
        (stripped != endpoint).then_some(stripped)
    }
}

pub struct HttpProxy {
    pub upstream: Upstream,
    pub meter: Arc<Meter>,
    pub identify: Identify,
    pub max_message: usize,
    client: Client<HttpConnector, Body>,
}

impl HttpProxy {
    pub fn new(
        upstream: Upstream,
        meter: Arc<Meter>,
        identify: Identify,
        max_message: usize,
    ) -> HttpProxy {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new()).build(connector);
        HttpProxy {
            upstream,
            meter,
            identify,
            max_message,
            client,
        }
    }

    pub fn router(self: Arc<Self>) -> axum::Router {
        axum::Router::new().fallback(relay).with_state(self)
    }
}

/// The session a request belongs to, as far as its own headers tell.
fn session_of(request: &Request<Body>) -> (String, Transport, bool) {
    if let Some(id) = request
        .headers()
        .get(SESSION_HEADER)
        .and_then(|v| v.to_str().ok())
    {
        return (format!("http:{id}"), Transport::StreamableHttp, true);
    }
    if let Some(id) = request.uri().query().and_then(legacy_session) {
        return (format!("sse:{id}"), Transport::Sse, true);
    }
    (
        format!("request:{}", uuid::Uuid::now_v7()),
        Transport::Stateless,
        false,
    )
}

/// The legacy transport's session: `sessionId` (TypeScript SDK) or
/// `session_id` (Python SDK) in the POST endpoint's query.
fn legacy_session(query: &str) -> Option<String> {
    query.split('&').find_map(|pair| {
        let (name, value) = pair.split_once('=')?;
        (name == "sessionId" || name == "session_id").then(|| value.to_owned())
    })
}

fn is_hop_by_hop(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "proxy-authenticate"
            | "proxy-authorization"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
    )
}

fn copy_headers(from: &HeaderMap, to: &mut HeaderMap, skip_host: bool) {
    for (name, value) in from {
        if is_hop_by_hop(name) || (skip_host && name == header::HOST) {
            continue;
        }
        to.append(name.clone(), value.clone());
    }
}

/// A JSON-RPC error from the proxy itself (never for a relayed message).
fn proxy_error(status: StatusCode, message: String) -> Response<Body> {
    let body = serde_json::json!({
        "jsonrpc": "2.0",
        "id": null,
        "error": {"code": -32603, "message": format!("aforo mcp-proxy: {message}")},
    });
    let mut response = Response::new(Body::from(body.to_string()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// What the body leaves out and the headers say: `MCP-Protocol-Version`
/// (sent after initialize, 2025-06-18+) and, for a tools/call whose body
/// names no tool, `Mcp-Name` (2026-07-28).
fn fill_from_headers(framed: &mut [Framed], headers: &HeaderMap) {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let version = header("mcp-protocol-version");
    let name = header("mcp-name");
    for f in framed {
        if let Message::Request(request) = &mut f.message {
            if request.protocol_version.is_none() {
                request.protocol_version = version.map(str::to_owned);
            }
            if request.name.is_none() && request.method == "tools/call" {
                request.name = name.map(str::to_owned);
            }
        }
    }
}

fn client_requests(framed: &[Framed]) -> Vec<RequestId> {
    framed
        .iter()
        .filter_map(|f| match &f.message {
            Message::Request(r) => Some(r.id.clone()),
            _ => None,
        })
        .collect()
}

async fn relay(
    axum::extract::State(proxy): axum::extract::State<Arc<HttpProxy>>,
    request: Request<Body>,
) -> Response<Body> {
    let (mut key, mut transport, known) = session_of(&request);
    let identity = proxy.identify.from_headers(request.headers());
    let method = request.method().clone();
    let is_get = method == Method::GET;
    let (parts, body) = request.into_parts();
    // Until a response body takes over, a client that goes away (hyper
    // drops this future) cancels a stateless request here.
    let mut guard = ExchangeGuard {
        meter: proxy.meter.clone(),
        key: key.clone(),
        armed: transport == Transport::Stateless,
    };

    // A POST is one message (or batch): read it whole, meter a copy, send it on.
    let (body, sent) = if method == Method::POST {
        let limited = http_body_util::Limited::new(body, proxy.max_message);
        let bytes = match limited.collect().await {
            Ok(collected) => collected.to_bytes(),
            Err(err) => {
                let too_large = err
                    .downcast_ref::<http_body_util::LengthLimitError>()
                    .is_some();
                return if too_large {
                    proxy_error(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        format!(
                            "the request body is larger than --max-message-bytes ({} bytes)",
                            proxy.max_message
                        ),
                    )
                } else {
                    proxy_error(
                        StatusCode::BAD_REQUEST,
                        format!("cannot read the request body: {err}"),
                    )
                };
            }
        };
        let mut framed = jsonrpc::parse(&bytes).unwrap_or_else(|err| {
            tracing::debug!("POST body not metered: {err}");
            Vec::new()
        });
        fill_from_headers(&mut framed, &parts.headers);
        if !framed.is_empty() {
            proxy.meter.observe(
                &key,
                transport,
                Direction::ClientToServer,
                &framed,
                identity.clone(),
            );
        }
        (Body::from(bytes), client_requests(&framed))
    } else {
        (body, Vec::new())
    };

    let path_and_query = parts
        .uri
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_owned();
    let mut upstream_request = Request::new(body);
    *upstream_request.method_mut() = method.clone();
    *upstream_request.uri_mut() = match proxy.upstream.uri(&path_and_query) {
        Ok(uri) => uri,
        Err(err) => {
            return proxy_error(
                StatusCode::BAD_REQUEST,
                format!("cannot map {path_and_query:?} onto the upstream: {err}"),
            );
        }
    };
    copy_headers(&parts.headers, upstream_request.headers_mut(), true);

    let response = match proxy.client.request(upstream_request).await {
        Ok(response) => response,
        Err(err) => {
            tracing::warn!(upstream = %proxy.upstream.authority, "the MCP server did not answer: {err}");
            end_exchange(
                &proxy.meter,
                &key,
                transport,
                &sent,
                Outcome::TransportError,
            );
            return proxy_error(
                StatusCode::BAD_GATEWAY,
                format!(
                    "the MCP server at {} did not answer: {err}",
                    proxy.upstream.authority
                ),
            );
        }
    };
    let (mut head, incoming) = response.into_parts();
    guard.armed = false;

    // An initialize answered with a session id: the session's real key.
    if transport == Transport::Stateless
        && let Some(id) = head
            .headers
            .get(SESSION_HEADER)
            .and_then(|v| v.to_str().ok())
    {
        let real = format!("http:{id}");
        proxy.meter.rekey(&key, &real, Transport::StreamableHttp);
        key = real;
        transport = Transport::StreamableHttp;
    }
    if known && head.status == StatusCode::NOT_FOUND && transport == Transport::StreamableHttp {
        // The server does not know the session (any more).
        proxy.meter.close(&key, Outcome::TransportError);
    }
    if method == Method::DELETE && head.status.is_success() {
        proxy.meter.close(&key, Outcome::Cancelled);
    }
    let content = content_kind(&head.headers);
    let legacy_stream = is_get && !known && content == Content::EventStream;
    let lifetime = match (legacy_stream, transport) {
        (true, _) => Lifetime::LegacyStream,
        (false, Transport::Stateless) => Lifetime::Request,
        (false, _) => Lifetime::Session,
    };
    let tap = Tap {
        meter: proxy.meter.clone(),
        key: key.clone(),
        transport: if legacy_stream {
            Transport::Sse
        } else {
            transport
        },
        lifetime,
        upstream: proxy.upstream.clone(),
        max: proxy.max_message,
    };
    let mut response_headers = HeaderMap::new();
    copy_headers(&head.headers, &mut response_headers, false);
    if legacy_stream {
        response_headers.remove(header::CONTENT_LENGTH);
    }
    head.headers = response_headers;
    let body = match content {
        Content::Json => Body::new(MeteredBody::json(incoming, tap)),
        Content::EventStream => Body::new(MeteredBody::sse(incoming, tap, legacy_stream)),
        Content::Other => {
            // No answer comes in a body that is not JSON-RPC. A legacy POST
            // is answered 202 and its answer comes on the SSE stream; an
            // HTTP error (or a stateless exchange) ends the requests here.
            if transport == Transport::Stateless {
                proxy.meter.close(&key, Outcome::TransportError);
            } else if !head.status.is_success() {
                proxy
                    .meter
                    .abandon_requests(&key, &sent, Outcome::TransportError);
            }
            Body::new(incoming)
        }
    };
    Response::from_parts(head, body)
}

/// Cancels a stateless request whose client went away before the answer's
/// head came (the handler future is dropped mid-flight).
struct ExchangeGuard {
    meter: Arc<Meter>,
    key: String,
    armed: bool,
}

impl Drop for ExchangeGuard {
    fn drop(&mut self) {
        if self.armed {
            self.meter.close(&self.key, Outcome::Cancelled);
        }
    }
}

/// The HTTP exchange of `sent` failed before any answer could come.
fn end_exchange(
    meter: &Meter,
    key: &str,
    transport: Transport,
    sent: &[RequestId],
    outcome: Outcome,
) {
    if transport == Transport::Stateless {
        meter.close(key, outcome);
    } else {
        meter.abandon_requests(key, sent, outcome);
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Content {
    Json,
    EventStream,
    Other,
}

fn content_kind(headers: &HeaderMap) -> Content {
    let value = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_ascii_lowercase();
    if value.starts_with("text/event-stream") {
        Content::EventStream
    } else if value.starts_with("application/json") {
        Content::Json
    } else {
        Content::Other
    }
}

/// What ends with the response body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Lifetime {
    /// A stateless request: its session ends with the body; closed early,
    /// it is cancelled.
    Request,
    /// A legacy SSE stream: the session ends with it.
    LegacyStream,
    /// A stream of a longer session: disconnecting cancels nothing.
    Session,
}

struct Tap {
    meter: Arc<Meter>,
    key: String,
    transport: Transport,
    lifetime: Lifetime,
    upstream: Upstream,
    max: usize,
}

impl Tap {
    fn messages(&self, bytes: &[u8]) {
        match jsonrpc::parse(bytes) {
            Ok(framed) if !framed.is_empty() => self.meter.observe(
                &self.key,
                self.transport,
                Direction::ServerToClient,
                &framed,
                None,
            ),
            Ok(_) => {}
            Err(err) => tracing::debug!("response not metered: {err}"),
        }
    }

    fn event(&self, event: &SseEvent) {
        if event.event.as_deref().is_none_or(|e| e == "message") && !event.data.is_empty() {
            self.messages(event.data.as_bytes());
        }
    }

    fn ended(&self, completed: bool) {
        match (self.lifetime, completed) {
            (Lifetime::Request, true) => self.meter.close(&self.key, Outcome::TransportError),
            (Lifetime::Request, false) => self.meter.close(&self.key, Outcome::Cancelled),
            (Lifetime::LegacyStream, true) => self.meter.close(&self.key, Outcome::TransportError),
            (Lifetime::LegacyStream, false) => self.meter.close(&self.key, Outcome::Cancelled),
            (Lifetime::Session, _) => {}
        }
    }
}

enum Reader {
    Json(Vec<u8>, bool),
    Sse(SseSplitter),
}

/// A response body relayed frame by frame while the meter reads a copy.
struct MeteredBody<B> {
    inner: B,
    tap: Tap,
    reader: Reader,
    /// Legacy streams: bytes held until the first event (`endpoint`) is whole.
    first_event: Option<Vec<u8>>,
    done: bool,
}

impl<B> MeteredBody<B> {
    fn json(inner: B, tap: Tap) -> Self {
        MeteredBody {
            inner,
            tap,
            reader: Reader::Json(Vec::new(), false),
            first_event: None,
            done: false,
        }
    }

    fn sse(inner: B, tap: Tap, rewrite_endpoint: bool) -> Self {
        let max = tap.max;
        MeteredBody {
            inner,
            tap,
            reader: Reader::Sse(SseSplitter::new(max)),
            first_event: rewrite_endpoint.then(Vec::new),
            done: false,
        }
    }

    fn observe(&mut self, bytes: &[u8]) {
        match &mut self.reader {
            Reader::Json(buffer, overflowed) => {
                if !*overflowed {
                    if buffer.len() + bytes.len() > self.tap.max {
                        *overflowed = true;
                        buffer.clear();
                    } else {
                        buffer.extend_from_slice(bytes);
                    }
                }
            }
            Reader::Sse(splitter) => {
                for event in splitter.push(bytes) {
                    self.tap.event(&event);
                }
            }
        }
    }

    fn finish(&mut self) {
        if self.done {
            return;
        }
        self.done = true;
        if let Reader::Json(buffer, overflowed) = &mut self.reader {
            if *overflowed {
                tracing::warn!(
                    "a response larger than --max-message-bytes was relayed without metering"
                );
            } else if !buffer.is_empty() {
                let body = std::mem::take(buffer);
                self.tap.messages(&body);
            }
        }
        self.tap.ended(true);
    }

    /// The legacy stream's first event, with its `endpoint` pointed at the
    /// proxy; learns the session from it.
    fn rewrite_first(&mut self, held: Vec<u8>) -> Bytes {
        let Some(end) = event_end(&held) else {
            return Bytes::from(held);
        };
        let (first, rest) = held.split_at(end);
        let mut splitter = SseSplitter::new(self.tap.max);
        let mut events = splitter.push(first);
        let Some(event) = events
            .pop()
            .filter(|e| e.event.as_deref() == Some("endpoint"))
        else {
            self.observe(&held);
            return Bytes::from(held);
        };
        if let Some(id) = event
            .data
            .split_once('?')
            .and_then(|(_, q)| legacy_session(q))
        {
            let key = format!("sse:{id}");
            // Seen before the stream's key was known: nothing to move yet.
            self.tap.key = key;
        }
        let mut out = match self.tap.upstream.rewrite_endpoint(&event.data) {
            Some(rewritten) => format!("event: endpoint\r\ndata: {rewritten}\r\n\r\n").into_bytes(),
            None => {
                if event.data.contains("://") && !event.data.contains(&self.tap.upstream.name()) {
                    tracing::warn!(
                        endpoint = %event.data,
                        "the legacy SSE endpoint names another origin: POSTs there bypass the proxy and are not metered"
                    );
                }
                first.to_vec()
            }
        };
        let rest = rest.to_vec();
        self.observe(&rest);
        out.extend_from_slice(&rest);
        Bytes::from(out)
    }
}

/// Where the first SSE event of `bytes` ends (after its blank line).
fn event_end(bytes: &[u8]) -> Option<usize> {
    let mut i = 0;
    while i < bytes.len() {
        for ending in [&b"\r\n\r\n"[..], b"\n\n", b"\r\r"] {
            if bytes[i..].starts_with(ending) {
                return Some(i + ending.len());
            }
        }
        i += 1;
    }
    None
}

impl<B> HttpBody for MeteredBody<B>
where
    B: HttpBody<Data = Bytes> + Unpin,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        loop {
            let frame = match Pin::new(&mut self.inner).poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(None) => {
                    if let Some(held) = self.first_event.take()
                        && !held.is_empty()
                    {
                        self.observe(&held);
                        return Poll::Ready(Some(Ok(Frame::data(Bytes::from(held)))));
                    }
                    self.finish();
                    return Poll::Ready(None);
                }
                Poll::Ready(Some(Err(err))) => {
                    // The upstream broke the stream off: its end, for the meter.
                    self.finish();
                    return Poll::Ready(Some(Err(err.into())));
                }
                Poll::Ready(Some(Ok(frame))) => frame,
            };
            let Ok(data) = frame.into_data() else {
                // Trailers: not part of any message.
                continue;
            };
            if let Some(held) = self.first_event.as_mut() {
                held.extend_from_slice(&data);
                if event_end(held).is_none() && held.len() <= self.tap.max {
                    continue;
                }
                let held = self.first_event.take().unwrap_or_default();
                let out = self.rewrite_first(held);
                if self.inner.is_end_stream() {
                    self.finish();
                }
                return Poll::Ready(Some(Ok(Frame::data(out))));
            }
            self.observe(&data);
            if self.inner.is_end_stream() {
                // hyper does not poll a body again once it says it ended.
                self.finish();
            }
            return Poll::Ready(Some(Ok(Frame::data(data))));
        }
    }

    fn is_end_stream(&self) -> bool {
        self.first_event.as_ref().is_none_or(Vec::is_empty) && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        if self.first_event.is_some() {
            SizeHint::default()
        } else {
            self.inner.size_hint()
        }
    }
}

impl<B> Drop for MeteredBody<B> {
    fn drop(&mut self) {
        if !self.done {
            // The client went away before the body ended.
            self.done = true;
            self.tap.ended(false);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_at_the_upstream_are_pointed_at_the_proxy() {
        let plain = Upstream::parse("http://127.0.0.1:8000").expect("an upstream");
        assert_eq!(plain.rewrite_endpoint("/messages/?session_id=ab"), None);
        assert_eq!(
            plain
                .rewrite_endpoint("http://127.0.0.1:8000/messages?sessionId=ab")
                .as_deref(),
            Some("/messages?sessionId=ab")
        );
        assert_eq!(plain.rewrite_endpoint("http://elsewhere:9/messages"), None);
        let prefixed = Upstream::parse("http://127.0.0.1:8000/mcp-a/").expect("an upstream");
        assert_eq!(
            prefixed
                .rewrite_endpoint("/mcp-a/messages/?session_id=ab")
                .as_deref(),
            Some("/messages/?session_id=ab")
        );
        assert_eq!(prefixed.rewrite_endpoint("/mcp-ab/messages"), None);
        assert_eq!(
            prefixed
                .uri("/messages/?session_id=ab")
                .expect("a URI")
                .to_string(),
            "http://127.0.0.1:8000/mcp-a/messages/?session_id=ab"
        );
    }

    #[test]
    fn upstreams_must_be_plain_http_origins() {
        for bad in [
            "127.0.0.1:8000",
            "https://example.com",
            "http://h:1/x?y=1",
            "not a url",
        ] {
            assert!(Upstream::parse(bad).is_err(), "{bad} is refused");
        }
    }

    #[test]
    fn legacy_sessions_come_from_either_sdk_spelling() {
        assert_eq!(legacy_session("sessionId=a1").as_deref(), Some("a1"));
        assert_eq!(legacy_session("x=1&session_id=b2").as_deref(), Some("b2"));
        assert_eq!(legacy_session("session=c3"), None);
    }

    #[test]
    fn an_sse_event_ends_at_its_blank_line() {
        assert_eq!(event_end(b"event: endpoint\ndata: /m\n\nrest"), Some(26));
        assert_eq!(event_end(b"event: endpoint\r\ndata: /m\r\n\r\n"), Some(29));
        assert_eq!(event_end(b"event: endpoint\ndata: /m\n"), None);
    }
}
