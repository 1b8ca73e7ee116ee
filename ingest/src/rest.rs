//! The HTTP front door: aforo JSON and CloudEvents in, JSON out.
//!
//! | route | what |
//! |---|---|
//! | `POST /v1/events` | one event or an array; `application/json`, `application/cloudevents+json`, `application/cloudevents-batch+json` |
//! | `GET /v1/events` | stored events with their enrichment state and revenue lines; filters `customer`, `type`, `from`, `to`, `status`, `flag`; `order` asc or desc; cursor `after`, `limit` |
//! | `GET /v1/rejections` | stored rejections; `reason`, `after`, `limit` |
//! | `GET /healthz`, `/readyz`, `/metrics` | liveness, readiness (the store answers), Prometheus |
//!
//! Errors are `{"error": {"code": "…", "message": "…"}}` with a specific code.

use std::collections::HashMap;
use std::sync::Arc;

use aforo_crds::{EventFlag, EventFlags, Tier, event::format_time};
use aforo_store::{EventQuery, RejectionQuery, Store, StoredEvent, StoredRejection};
use axum::body::{Body, Bytes};
use axum::extract::{FromRef, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use crate::config::RequestLimits;
use crate::decode;
use crate::gates::EventCandidate;
use crate::pipeline::{BatchOutcome, Ingestor};
use aforo_store::auth::Authenticator;

#[derive(Clone)]
pub struct RestState {
    pub ingestor: Arc<Ingestor>,
    pub auth: Authenticator,
    pub store: Arc<dyn Store>,
    pub limits: RequestLimits,
}

pub fn router(state: RestState) -> Router {
    Router::new()
        .route("/v1/events", get(list_events).post(post_events))
        .route("/v1/rejections", get(list_rejections))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(state)
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

async fn post_events(
    State(state): State<RestState>,
    Authed(tenant): Authed,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Value>, ApiError> {
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
    Ok(Json(outcome_json(&outcome)))
}

pub(crate) fn outcome_json(outcome: &BatchOutcome) -> Value {
    let results: Vec<Value> = outcome
        .results
        .iter()
        .map(|r| {
            let mut item = json!({
                "index": r.index,
                "id": r.id,
                "status": r.status.as_str(),
                "stored_event_id": r.stored_id.to_string(),
            });
            if let Some(reason) = r.reason {
                item["reason"] = json!(reason.as_str());
                item["message"] = json!(r.message);
            }
            let flags: Vec<&str> = r.flags.iter().map(EventFlag::as_str).collect();
            if !flags.is_empty() {
                item["flags"] = json!(flags);
            }
            item
        })
        .collect();
    json!({
        "results": results,
        "accepted": outcome.accepted,
        "duplicates": outcome.duplicates,
        "rejected": outcome.rejected,
    })
}

/// Query parameters, checked by name so a typo is an error, not a silent no-op.
pub(crate) struct Params(HashMap<String, String>);

impl Params {
    pub(crate) fn new(raw: HashMap<String, String>, allowed: &[&str]) -> Result<Self, ApiError> {
        if let Some(unknown) = raw.keys().find(|k| !allowed.contains(&k.as_str())) {
            return Err(ApiError::bad_query(format!(
                "unknown parameter {unknown:?}; accepted: {}",
                allowed.join(", ")
            )));
        }
        Ok(Params(raw))
    }
    pub(crate) fn text(&self, name: &str) -> Option<String> {
        self.0.get(name).filter(|v| !v.is_empty()).cloned()
    }
    pub(crate) fn time(&self, name: &str) -> Result<Option<DateTime<Utc>>, ApiError> {
        self.text(name)
            .map(|t| {
                DateTime::parse_from_rfc3339(&t)
                    .map(|t| t.with_timezone(&Utc))
                    .map_err(|_| {
                        ApiError::bad_query(format!("`{name}` {t:?} is not an RFC 3339 timestamp"))
                    })
            })
            .transpose()
    }
    pub(crate) fn cursor(&self) -> Result<Option<i64>, ApiError> {
        self.text("after")
            .map(|c| {
                c.parse::<i64>().map_err(|_| {
                    ApiError::bad_query(format!(
                        "`after` {c:?} is not a cursor from a previous page"
                    ))
                })
            })
            .transpose()
    }
    pub(crate) fn limit(&self) -> Result<u32, ApiError> {
        match self.text("limit") {
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
}

async fn list_events(
    State(state): State<RestState>,
    Authed(tenant): Authed,
    ApiQuery(raw): ApiQuery<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let p = Params::new(
        raw,
        &[
            "customer", "type", "from", "to", "status", "flag", "after", "limit", "order",
        ],
    )?;
    let mut flags = EventFlags::default();
    for name in p.text("flag").iter().flat_map(|f| f.split(',')) {
        let flag: EventFlag = name.trim().parse().map_err(|_| {
            ApiError::bad_query(format!(
                "`flag` {name:?} is not one of LATE, UNMETERED, UNATTRIBUTED"
            ))
        })?;
        flags = flags.with(flag);
    }
    let status = p.text("status").map(|s| s.to_ascii_uppercase());
    if let Some(s) = status.as_deref().filter(|s| *s != "ACCEPTED") {
        return Err(ApiError::bad_query(format!(
            "`status` {s:?} is not a stored event status (ACCEPTED); rejected events are at /v1/rejections"
        )));
    }
    let descending = match p.text("order").as_deref() {
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
        customer: p.text("customer"),
        event_type: p.text("type"),
        from: p.time("from")?,
        to: p.time("to")?,
        status,
        flags,
        after: p.cursor()?,
        limit: p.limit()?,
    };
    let page = state.store.list_events(tenant.id, &query).await?;
    // One more query for the page's revenue, not one per event.
    let ids: Vec<uuid::Uuid> = page.items.iter().map(|e| e.stored_id).collect();
    let mut revenue: HashMap<uuid::Uuid, Vec<Value>> = HashMap::new();
    for line in state.store.ledger_of(tenant.id, &ids).await? {
        revenue.entry(line.event).or_default().push(json!({
            "meter": line.meter,
            "subscription": line.subscription.to_string(),
            "rate_plan": line.rate_plan,
            "catalog_version": line.catalog_version,
            "quantity": line.quantity.normalize().to_string(),
            "revenue": line.revenue.normalize().to_string(),
            "currency": line.currency,
            "cost": line.cost.normalize().to_string(),
        }));
    }
    let events: Vec<Value> = page
        .items
        .iter()
        .map(|e| {
            let mut item = event_json(e);
            item["revenue"] = Value::Array(revenue.remove(&e.stored_id).unwrap_or_default());
            item
        })
        .collect();
    Ok(Json(json!({
        "events": events,
        "next_cursor": page.next_after.map(|c| c.to_string()),
    })))
}

fn event_json(e: &StoredEvent) -> Value {
    json!({
        "stored_event_id": e.stored_id.to_string(),
        "cursor": e.seq.to_string(),
        "id": e.event.id,
        "source": e.event.source,
        "type": e.event.event_type,
        "customer": e.event.customer,
        "time": format_time(&e.event.time),
        "properties": Value::Object(e.event.properties.clone()),
        "tier": e.event.tier.as_str(),
        "tier_detail": e.event.tier_detail,
        "status": e.status,
        "flags": e.flags.iter().map(EventFlag::as_str).collect::<Vec<_>>(),
        "gates": gates_json(&e.gates),
        "validation_hash": e.validation_hash,
        "received_at": format_time(&e.received_at),
        "node": e.node,
        "enrichment": e.enrichment.as_deref().unwrap_or("PENDING"),
    })
}

fn gates_json(g: &aforo_crds::GateResults) -> Value {
    serde_json::from_str(&g.to_json()).unwrap_or(Value::Null)
}

async fn list_rejections(
    State(state): State<RestState>,
    Authed(tenant): Authed,
    ApiQuery(raw): ApiQuery<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let p = Params::new(raw, &["reason", "after", "limit"])?;
    let query = RejectionQuery {
        reason: p.text("reason").map(|r| r.to_ascii_uppercase()),
        after: p.cursor()?,
        limit: p.limit()?,
    };
    let page = state.store.list_rejections(tenant.id, &query).await?;
    Ok(Json(json!({
        "rejections": page.items.iter().map(rejection_json).collect::<Vec<_>>(),
        "next_cursor": page.next_after.map(|c| c.to_string()),
    })))
}

fn rejection_json(r: &StoredRejection) -> Value {
    json!({
        "stored_event_id": r.stored_id.to_string(),
        "cursor": r.seq.to_string(),
        "id": r.event_id,
        "source": r.source,
        "type": r.event_type,
        "customer": r.customer,
        "reason": r.reason,
        "message": r.message,
        "gates": gates_json(&r.gates),
        "payload": r.payload,
        "tier": r.tier.as_str(),
        "tier_detail": r.tier_detail,
        "received_at": format_time(&r.received_at),
        "node": r.node,
    })
}

async fn readyz(State(state): State<RestState>) -> Result<&'static str, ApiError> {
    state.store.ping().await?;
    Ok("ok")
}

async fn metrics(State(state): State<RestState>) -> impl IntoResponse {
    let mut body = state.ingestor.metrics().encode();
    // The enrichment backlog, counted in the store at scrape time: how far
    // enrichment is behind what this role stored. A store that does not
    // answer leaves the gauge out rather than reporting a made-up zero.
    match state.store.enrichment_backlog().await {
        Ok(events) => {
            body = crate::metrics::before_eof(
                body,
                &crate::metrics::enrichment_backlog_exposition(events),
            )
        }
        Err(e) => tracing::warn!(error = %e, "cannot count the enrichment backlog"),
    }
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        body,
    )
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
