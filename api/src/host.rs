//! What every role's HTTP server wraps its routes in: a request span per
//! request (method, matched route, status, latency, and the OpenTelemetry
//! trace id when traces are exported), a time limit, and a bound on the
//! requests in flight. A request over its time is answered by the one error
//! envelope, `504 TIMEOUT`, like every other failure.

use std::time::Duration;

use axum::Router;
use axum::error_handling::HandleErrorLayer;
use axum::extract::{MatchedPath, Request};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use tower::ServiceBuilder;
use tower_http::trace::TraceLayer;
use tracing::Span;

use crate::ApiError;

/// How a role's HTTP server bounds its requests.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// The longest a request may take, body and answer included.
    pub timeout: Duration,
    /// The most requests handled at once; more wait their turn (and their
    /// time runs while they wait).
    pub concurrency: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            timeout: Duration::from_secs(60),
            concurrency: 1024,
        }
    }
}

/// Routes with a time limit and a bound on requests in flight.
pub fn bounded(router: Router, limits: Limits) -> Router {
    router.layer(
        ServiceBuilder::new()
            .layer(HandleErrorLayer::new(
                move |e: tower::BoxError| async move { overloaded(e, limits.timeout) },
            ))
            .layer(tower::timeout::TimeoutLayer::new(limits.timeout))
            .layer(tower::limit::ConcurrencyLimitLayer::new(limits.concurrency)),
    )
}

fn overloaded(e: tower::BoxError, timeout: Duration) -> Response {
    if e.is::<tower::timeout::error::Elapsed>() {
        ApiError::new(
            StatusCode::GATEWAY_TIMEOUT,
            "TIMEOUT",
            format!(
                "the request took longer than {} s; nothing it had not finished was kept",
                timeout.as_secs()
            ),
        )
        .into_response()
    } else {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL", e.to_string()).into_response()
    }
}

/// Routes with a request span each: `http.request` with the method, the
/// matched route (not the raw path: ids do not make a span name per
/// customer), the status and the latency, and `trace_id` for finding the
/// request's trace from a log line.
pub fn traced(router: Router) -> Router {
    router.layer(
        TraceLayer::new_for_http()
            .make_span_with(|request: &Request| {
                let route = request
                    .extensions()
                    .get::<MatchedPath>()
                    .map_or("unmatched", MatchedPath::as_str);
                let span = tracing::info_span!(
                    "http.request",
                    otel.name = format!("{} {route}", request.method()),
                    otel.kind = "server",
                    http.request.method = %request.method(),
                    http.route = route,
                    http.response.status_code = tracing::field::Empty,
                    trace_id = tracing::field::Empty,
                );
                record_trace_id(&span);
                span
            })
            .on_response(|response: &Response, latency: Duration, span: &Span| {
                span.record("http.response.status_code", response.status().as_u16());
                tracing::debug!(latency_ms = latency.as_millis() as u64, "answered");
            }),
    )
}

/// Records the span's OpenTelemetry trace id in its `trace_id` field, when
/// traces are exported (otherwise the id is invalid and left out).
pub fn record_trace_id(span: &Span) {
    use opentelemetry::trace::TraceContextExt;
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    let context = span.context();
    let otel = context.span();
    let id = otel.span_context().trace_id();
    if id != opentelemetry::trace::TraceId::INVALID {
        span.record("trace_id", id.to_string());
    }
}

/// The W3C `traceparent` of the current span, when traces are exported: what
/// a stored event keeps so that its enrichment joins the request's trace.
pub fn current_traceparent() -> Option<String> {
    use opentelemetry::trace::TraceContextExt;
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    let context = Span::current().context();
    let otel = context.span();
    let sc = otel.span_context();
    sc.is_valid().then(|| {
        format!(
            "00-{}-{}-{:02x}",
            sc.trace_id(),
            sc.span_id(),
            sc.trace_flags().to_u8()
        )
    })
}

/// Makes `span` a child of the remote span a `traceparent` names; a
/// malformed value is ignored (the span starts a trace of its own).
pub fn continue_trace(span: &Span, traceparent: &str) {
    use opentelemetry::trace::{
        SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState,
    };
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    let parts: Vec<&str> = traceparent.split('-').collect();
    let [version, trace, parent, flags] = parts[..] else {
        return;
    };
    if version != "00" {
        return;
    }
    let (Ok(trace), Ok(parent), Ok(flags)) = (
        TraceId::from_hex(trace),
        SpanId::from_hex(parent),
        u8::from_str_radix(flags, 16),
    ) else {
        return;
    };
    let remote = SpanContext::new(
        trace,
        parent,
        TraceFlags::new(flags),
        true,
        TraceState::default(),
    );
    if remote.is_valid() {
        let _ = span.set_parent(opentelemetry::Context::new().with_remote_span_context(remote));
    }
}

/// The span of a gRPC call (`tonic::transport::Server::trace_fn`): the
/// method's path names it, e.g. `/aforo.v1.IngestService/Ingest`.
pub fn grpc_span(request: &axum::http::Request<()>) -> Span {
    let span = tracing::info_span!(
        "grpc.request",
        otel.name = request.uri().path(),
        otel.kind = "server",
        rpc.system = "grpc",
        trace_id = tracing::field::Empty,
    );
    record_trace_id(&span);
    span
}
