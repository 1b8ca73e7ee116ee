//! The HTTP front door: aforo JSON and CloudEvents in, JSON out.
//!
//! | route | what |
//! |---|---|
//! | `POST /v1/events` | one event or an array; `application/json`, `application/cloudevents+json`, `application/cloudevents-batch+json` |
//! | `GET /v1/events` | stored events with their enrichment state and revenue lines; filters `customer`, `type`, `from`, `to`, `status`, `flag`; `order` asc or desc; cursor `after`, `limit` |
//! | `GET /v1/rejections` | stored rejections; `reason`, `after`, `limit` |
//!
//! Errors are `{"error": {"code": "…", "message": "…"}}` with a specific code.

use std::collections::HashMap;
use std::sync::Arc;

use aforo_api::v1::Page;
use aforo_api::v1::events::{self as v1, EventResult, EventStatus, IngestResponse, NewEvent};
use aforo_api::v1::usage::RevenueLine;
use aforo_crds::{EventFlag, EventFlags, Tier};
use aforo_store::{EventQuery, RejectionQuery, Store};
use axum::body::{Body, Bytes};
use axum::extract::{FromRef, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::Value;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::config::RequestLimits;
use crate::decode;
use crate::gates::EventCandidate;
use crate::pipeline::{BatchOutcome, Ingestor, Status};
use aforo_store::auth::Authenticator;

#[derive(Clone)]
pub struct RestState {
    pub ingestor: Arc<Ingestor>,
    pub auth: Authenticator,
    pub store: Arc<dyn Store>,
    pub limits: RequestLimits,
}

/// The documented routes with their OpenAPI operations.
fn routes() -> OpenApiRouter<RestState> {
    OpenApiRouter::new()
        .routes(routes!(list_events, post_events))
        .routes(routes!(list_rejections))
}

pub fn router(state: RestState) -> Router {
    routes().split_for_parts().0.with_state(state)
}

/// The event routes' operations (without the shared parts that
/// [`aforo_api::openapi::document`] adds).
pub fn openapi() -> utoipa::openapi::OpenApi {
    routes().split_for_parts().1
}

pub use aforo_api::{ApiError, authenticate};
use aforo_api::{ApiQuery, Authed};

impl FromRef<RestState> for Authenticator {
    fn from_ref(state: &RestState) -> Authenticator {
        state.auth.clone()
    }
}

/// The body formats `POST /v1/events` takes.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Format {
    Aforo,
    CloudEvent,
    CloudEventBatch,
}

fn format_of(headers: &HeaderMap) -> Result<Format, ApiError> {
    let Some(value) = headers.get(header::CONTENT_TYPE) else {
        return Ok(Format::Aforo);
    };
    let media = value
        .to_str()
        .unwrap_or_default()
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    match media.as_str() {
        "application/json" => Ok(Format::Aforo),
        "application/cloudevents+json" => Ok(Format::CloudEvent),
        "application/cloudevents-batch+json" => Ok(Format::CloudEventBatch),
        other => Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "UNSUPPORTED_MEDIA_TYPE",
            format!(
                "content type {other:?} is not accepted; use application/json, \
                 application/cloudevents+json or application/cloudevents-batch+json"
            ),
        )),
    }
}

/// Nesting depth of a JSON text, found without parsing it (so an absurdly
/// deep body costs a scan, not a recursion).
pub(crate) fn json_depth(bytes: &[u8]) -> usize {
    let (mut depth, mut deepest, mut in_string, mut escaped) = (0usize, 0usize, false, false);
    for &b in bytes {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'{' | b'[' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    deepest
}

async fn read_body(body: Body, limit: usize) -> Result<Bytes, ApiError> {
    axum::body::to_bytes(body, limit).await.map_err(|e| {
        let too_large = std::error::Error::source(&e)
            .is_some_and(|s| s.is::<http_body_util::LengthLimitError>());
        if too_large {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "BODY_TOO_LARGE",
                format!(
                    "the request body is larger than {limit} bytes; split it into smaller batches"
                ),
            )
        } else {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "INVALID_BODY",
                format!("cannot read the body: {e}"),
            )
        }
    })
}

/// Send events: one object or an array, as aforo JSON or CloudEvents 1.0.
///
/// Every event gets its own result, in order; an event that breaks a rule
/// is `REJECTED` with its reason and the others go on. `ACCEPTED` means
/// stored durably; sending it again answers `DUPLICATE`.
#[utoipa::path(operation_id = "send_events", post, path = "/v1/events", tag = "events",
    request_body(content(
        (NewEvent = "application/json"),
        (Vec<NewEvent> = "application/json"),
        (Object = "application/cloudevents+json"),
        (Vec<Object> = "application/cloudevents-batch+json"))),
    responses((status = 200, body = IngestResponse)))]
async fn post_events(
    State(state): State<RestState>,
    Authed(tenant): Authed,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<IngestResponse>, ApiError> {
    let format = format_of(&headers)?;
    let bytes = read_body(body, state.limits.max_body_bytes).await?;
    let depth = json_depth(&bytes);
    if depth > state.limits.max_json_depth {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "JSON_TOO_DEEP",
            format!(
                "the body nests {depth} levels deep; the limit is {}",
                state.limits.max_json_depth
            ),
        ));
    }
    let value: Value = serde_json::from_slice(&bytes).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "INVALID_JSON",
            format!("the body is not JSON: {e}"),
        )
    })?;
    let items = match (format, value) {
        (Format::Aforo, Value::Array(items)) => items,
        (Format::Aforo, object @ Value::Object(_)) => vec![object],
        (Format::CloudEvent, object) => vec![object],
        (Format::CloudEventBatch, Value::Array(items)) => items,
        (Format::Aforo, _) => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "INVALID_BODY",
                "expected an event object or an array of events",
            ));
        }
        (Format::CloudEventBatch, _) => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "INVALID_BODY",
                "a CloudEvents batch must be a JSON array",
            ));
        }
    };
    if items.len() > state.limits.max_batch_events {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "BATCH_TOO_LARGE",
            format!(
                "the batch has {} events; the limit is {}",
                items.len(),
                state.limits.max_batch_events
            ),
        ));
    }
    let decode: fn(&Value) -> EventCandidate = match format {
        Format::Aforo => decode::from_json,
        Format::CloudEvent | Format::CloudEventBatch => decode::from_cloudevent,
    };
    let candidates = items.iter().map(decode).collect();
    let outcome = state
        .ingestor
        .ingest(&tenant, Tier::Rest, candidates, &|i| items[i].to_string())
        .await
        .map_err(|e| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "UNAVAILABLE",
                format!("the batch was not stored ({e}); retry it: events already stored will answer DUPLICATE"),
            )
        })?;
    Ok(Json(self::outcome(&outcome)))
}

pub(crate) fn outcome(outcome: &BatchOutcome) -> IngestResponse {
    IngestResponse {
        results: outcome
            .results
            .iter()
            .map(|r| EventResult {
                index: r.index,
                id: r.id.clone(),
                status: match r.status {
                    Status::Accepted => EventStatus::Accepted,
                    Status::Duplicate => EventStatus::Duplicate,
                    Status::Rejected => EventStatus::Rejected,
                },
                stored_event_id: r.stored_id,
                reason: r.reason.map(|reason| reason.as_str().to_owned()),
                message: r.reason.map(|_| r.message.clone()),
                flags: r.flags.iter().map(|f| f.as_str().to_owned()).collect(),
            })
            .collect(),
        accepted: outcome.accepted,
        duplicates: outcome.duplicates,
        rejected: outcome.rejected,
    }
}

/// `GET /v1/events`: filters, order and cursor. An unknown parameter is an
/// error, not a silent no-op.
#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct EventsQuery {
    customer: Option<String>,
    /// The event type.
    #[serde(rename = "type")]
    #[param(rename = "type")]
    event_type: Option<String>,
    /// Event time from (inclusive), RFC 3339.
    from: Option<String>,
    /// Event time to (exclusive), RFC 3339.
    to: Option<String>,
    /// `ACCEPTED` (rejected events are at `/v1/rejections`).
    status: Option<String>,
    /// Comma-separated: `LATE`, `UNMETERED`, `UNATTRIBUTED`; events with all of them.
    flag: Option<String>,
    /// `next_cursor` of the previous page.
    after: Option<String>,
    /// 1 to 1000; 100 when absent.
    limit: Option<String>,
    /// `asc` (default) or `desc`, by storage order.
    order: Option<String>,
}

fn non_empty(v: Option<String>) -> Option<String> {
    v.filter(|v| !v.is_empty())
}

fn query_time(name: &str, value: Option<String>) -> Result<Option<DateTime<Utc>>, ApiError> {
    non_empty(value)
        .map(|t| {
            DateTime::parse_from_rfc3339(&t)
                .map(|t| t.with_timezone(&Utc))
                .map_err(|_| {
                    ApiError::bad_query(format!("`{name}` {t:?} is not an RFC 3339 timestamp"))
                })
        })
        .transpose()
}

pub(crate) fn query_cursor(after: Option<String>) -> Result<Option<i64>, ApiError> {
    non_empty(after)
        .map(|c| {
            c.parse::<i64>().map_err(|_| {
                ApiError::bad_query(format!(
                    "`after` {c:?} is not a cursor from a previous page"
                ))
            })
        })
        .transpose()
}

pub(crate) fn query_limit(limit: Option<String>) -> Result<u32, ApiError> {
    match non_empty(limit) {
        None => Ok(100),
        Some(l) => match l.parse::<u32>() {
            Ok(n) if (1..=aforo_store::MAX_PAGE_SIZE).contains(&n) => Ok(n),
            _ => Err(ApiError::bad_query(format!(
                "`limit` {l:?} must be a number from 1 to {}",
                aforo_store::MAX_PAGE_SIZE
            ))),
        },
    }
}

/// Stored events with their enrichment and what each meter made of them.
#[utoipa::path(operation_id = "list_events", get, path = "/v1/events", tag = "events",
    params(EventsQuery),
    responses((status = 200, body = Page<v1::StoredEvent>)))]
async fn list_events(
    State(state): State<RestState>,
    Authed(tenant): Authed,
    ApiQuery(q): ApiQuery<EventsQuery>,
) -> Result<Json<Page<v1::StoredEvent>>, ApiError> {
    let mut flags = EventFlags::default();
    for name in q
        .flag
        .iter()
        .flat_map(|f| f.split(','))
        .filter(|f| !f.is_empty())
    {
        let flag: EventFlag = name.trim().parse().map_err(|_| {
            ApiError::bad_query(format!(
                "`flag` {name:?} is not one of LATE, UNMETERED, UNATTRIBUTED"
            ))
        })?;
        flags = flags.with(flag);
    }
    let status = non_empty(q.status).map(|s| s.to_ascii_uppercase());
    if let Some(s) = status.as_deref().filter(|s| *s != "ACCEPTED") {
        return Err(ApiError::bad_query(format!(
            "`status` {s:?} is not a stored event status (ACCEPTED); rejected events are at /v1/rejections"
        )));
    }
    let descending = match non_empty(q.order).as_deref() {
        None | Some("asc") => false,
        Some("desc") => true,
        Some(other) => {
            return Err(ApiError::bad_query(format!(
                "`order` {other:?} is not asc or desc"
            )));
        }
    };
    let query = EventQuery {
        descending,
        customer: non_empty(q.customer),
        event_type: non_empty(q.event_type),
        from: query_time("from", q.from)?,
        to: query_time("to", q.to)?,
        status,
        flags,
        after: query_cursor(q.after)?,
        limit: query_limit(q.limit)?,
    };
    let page = state.store.list_events(tenant.id, &query).await?;
    // One more query for the page's revenue, not one per event.
    let ids: Vec<uuid::Uuid> = page.items.iter().map(|e| e.stored_id).collect();
    let mut revenue: HashMap<uuid::Uuid, Vec<RevenueLine>> = HashMap::new();
    for line in state.store.ledger_of(tenant.id, &ids).await? {
        revenue.entry(line.event).or_default().push((&line).into());
    }
    Ok(Json(Page {
        items: page
            .items
            .iter()
            .map(|e| v1::StoredEvent::new(e, revenue.remove(&e.stored_id).unwrap_or_default()))
            .collect(),
        next_cursor: page.next_after.map(|c| c.to_string()),
        total: None,
    }))
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct RejectionsQuery {
    /// A reject reason, e.g. `SCHEMA_MISSING_ID`.
    reason: Option<String>,
    /// `next_cursor` of the previous page.
    after: Option<String>,
    /// 1 to 1000; 100 when absent.
    limit: Option<String>,
}

/// Rejected events as stored: payload, reason and gate verdicts.
#[utoipa::path(operation_id = "list_rejections", get, path = "/v1/rejections", tag = "events",
    params(RejectionsQuery),
    responses((status = 200, body = Page<v1::Rejection>)))]
async fn list_rejections(
    State(state): State<RestState>,
    Authed(tenant): Authed,
    ApiQuery(q): ApiQuery<RejectionsQuery>,
) -> Result<Json<Page<v1::Rejection>>, ApiError> {
    let query = RejectionQuery {
        reason: non_empty(q.reason).map(|r| r.to_ascii_uppercase()),
        after: query_cursor(q.after)?,
        limit: query_limit(q.limit)?,
    };
    let page = state.store.list_rejections(tenant.id, &query).await?;
    Ok(Json(Page {
        items: page.items.iter().map(v1::Rejection::from).collect(),
        next_cursor: page.next_after.map(|c| c.to_string()),
        total: None,
    }))
}

#[cfg(test)]
mod tests {
    use super::json_depth;

    #[test]
    fn json_depth_ignores_brackets_in_strings() {
        assert_eq!(json_depth(br#"{"a":"[[[{{{"}"#), 1);
        assert_eq!(json_depth(br#"[{"a":{"b":[1]}}]"#), 4);
        assert_eq!(json_depth(br#"{"a":"\"[["}"#), 1);
        assert_eq!(json_depth(b"1"), 0);
    }
}
