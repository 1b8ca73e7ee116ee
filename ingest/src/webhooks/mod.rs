//! The webhook front door: provider deliveries, verified and mapped to events.
//!
//! | route | what |
//! |---|---|
//! | `POST /v1/webhooks/{namespace}/{source}` | a provider's delivery for the WebhookSource `source` of tenant `namespace` |
//! | `GET /v1/webhooks/rejections` | the tenant's deliveries that did not become events; `source`, `reason`, `after`, `limit` |
//!
//! A delivery goes: body read (bounded) → tenant and source looked up →
//! secret read ([`secrets`]) → signature verified over the raw bytes
//! ([`verify`]) → body mapped to event candidates ([`mapping`]) → the
//! candidates run through the four gates and the group committer like any
//! other events ([`crate::pipeline::Ingestor`]). The provider's event id is
//! the event id, so a redelivery is DUPLICATE and counted once.
//!
//! A delivery that goes no further is stored with its headers, raw body and
//! the precise reason (`webhook_rejections`), and the caller is told only
//! `401` (not authentic: unknown source, missing or bad signature, stale
//! timestamp, secret unavailable), `422` (authentic but unmappable) or
//! `413` (too large); a delivery no mapping's filter selects is stored as
//! WEBHOOK_UNMATCHED and answered `200` IGNORED, so the provider does not
//! retry what will never bill.

pub mod mapping;
pub mod secrets;
pub mod verify;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use aforo_crds::Tier;
use aforo_crds::catalog::{Provider, WebhookSourceSpec};
use aforo_crds::event::format_time;
use aforo_store::cache::CatalogCache;
use aforo_store::{NewWebhookRejection, Store, Tenant, WebhookRejectionQuery};
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine;
use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::clock::Clock;
use crate::pipeline::Ingestor;
use crate::rest::{ApiError, Params};
use aforo_store::auth::Authenticator;
use mapping::{CompiledMapping, DeliveryFacts, Mapped};
use secrets::SecretFiles;
use verify::{Delivery, Scheme, VerifyError};

/// Why a delivery did not become events. The code is stored and counted;
/// it is never sent to the caller.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeliveryRejection {
    UnknownSource,
    SecretUnavailable,
    /// The source's declaration cannot be used (e.g. an unreadable tolerance).
    SourceInvalid,
    SignatureMissing,
    SignatureInvalid,
    TimestampStale,
    BodyTooLarge,
    Unmatched,
    Unmappable,
}

impl DeliveryRejection {
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryRejection::UnknownSource => "WEBHOOK_UNKNOWN_SOURCE",
            DeliveryRejection::SecretUnavailable => "WEBHOOK_SECRET_UNAVAILABLE",
            DeliveryRejection::SourceInvalid => "WEBHOOK_SOURCE_INVALID",
            DeliveryRejection::SignatureMissing => "WEBHOOK_SIGNATURE_MISSING",
            DeliveryRejection::SignatureInvalid => "WEBHOOK_SIGNATURE_INVALID",
            DeliveryRejection::TimestampStale => "WEBHOOK_TIMESTAMP_STALE",
            DeliveryRejection::BodyTooLarge => "WEBHOOK_BODY_TOO_LARGE",
            DeliveryRejection::Unmatched => "WEBHOOK_UNMATCHED",
            DeliveryRejection::Unmappable => "WEBHOOK_UNMAPPABLE",
        }
    }

    fn of(err: &VerifyError) -> Self {
        match err {
            VerifyError::MissingHeader(_) | VerifyError::Malformed { .. } => {
                DeliveryRejection::SignatureMissing
            }
            VerifyError::Mismatch | VerifyError::BodyHashMismatch => {
                DeliveryRejection::SignatureInvalid
            }
            VerifyError::Stale { .. } => DeliveryRejection::TimestampStale,
            VerifyError::BadSecret(_) => DeliveryRejection::SecretUnavailable,
        }
    }

    /// What the caller is told: a status and a message that names no detail.
    fn answer(self) -> Response {
        let (status, code, message) = match self {
            DeliveryRejection::Unmatched => {
                return Json(json!({"status": "IGNORED"})).into_response();
            }
            DeliveryRejection::Unmappable => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "WEBHOOK_UNMAPPABLE",
                "the delivery could not be mapped to events; it was stored for review",
            ),
            DeliveryRejection::BodyTooLarge => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "BODY_TOO_LARGE",
                "the delivery is larger than this endpoint accepts",
            ),
            _ => (
                StatusCode::UNAUTHORIZED,
                "WEBHOOK_REJECTED",
                "the delivery was not accepted",
            ),
        };
        (
            status,
            Json(json!({"error": {"code": code, "message": message}})),
        )
            .into_response()
    }
}

/// A source's mappings, compiled once per catalog version.
type Compiled = Arc<Result<Vec<CompiledMapping>, String>>;
/// Tenant, catalog content hash, source name.
type CompiledKey = (Uuid, String, String);

#[derive(Clone)]
pub struct WebhookState {
    pub ingestor: Arc<Ingestor>,
    pub store: Arc<dyn Store>,
    pub catalog: Arc<CatalogCache>,
    pub auth: Authenticator,
    pub secrets: SecretFiles,
    pub clock: Arc<dyn Clock>,
    pub node: String,
    pub max_body_bytes: usize,
    /// By (tenant, catalog content hash, source name).
    compiled: Arc<Mutex<HashMap<CompiledKey, Compiled>>>,
}

impl WebhookState {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        ingestor: Arc<Ingestor>,
        store: Arc<dyn Store>,
        catalog: Arc<CatalogCache>,
        auth: Authenticator,
        secrets: SecretFiles,
        clock: Arc<dyn Clock>,
        node: String,
        max_body_bytes: usize,
    ) -> Self {
        WebhookState {
            ingestor,
            store,
            catalog,
            auth,
            secrets,
            clock,
            node,
            max_body_bytes,
            compiled: Arc::default(),
        }
    }

    fn mappings(&self, tenant: Uuid, hash: &str, name: &str, spec: &WebhookSourceSpec) -> Compiled {
        let key = (tenant, hash.to_owned(), name.to_owned());
        let mut cache = self.compiled.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(found) = cache.get(&key) {
            return found.clone();
        }
        // A new catalog version makes the old entries unreachable; drop them.
        cache.retain(|(t, h, _), _| *t != tenant || h == hash);
        let compiled = Arc::new(
            spec.mappings
                .iter()
                .map(CompiledMapping::compile)
                .collect::<Result<Vec<_>, _>>(),
        );
        cache.insert(key, compiled.clone());
        compiled
    }
}

pub fn router(state: WebhookState) -> Router {
    Router::new()
        .route("/v1/webhooks/rejections", get(list_rejections))
        .route("/v1/webhooks/{namespace}/{source}", post(receive))
        .with_state(state)
}

/// The request's headers as `(lowercase name, value)`, in order. Credentials
/// that are not the provider's are not kept.
fn header_pairs(headers: &HeaderMap) -> Vec<(String, String)> {
    headers
        .iter()
        .map(|(name, value)| {
            let name = name.as_str().to_owned();
            let value = match name.as_str() {
                "authorization" | "cookie" | "proxy-authorization" => "[redacted]".to_owned(),
                _ => String::from_utf8_lossy(value.as_bytes()).into_owned(),
            };
            (name, value)
        })
        .collect()
}

/// Reads the body up to `limit` bytes. `Err` carries the prefix read so
/// far, to be stored with the rejection.
async fn bounded_body(body: Body, limit: usize) -> Result<Vec<u8>, (Vec<u8>, String)> {
    use futures::StreamExt;
    let mut stream = body.into_data_stream();
    let mut out = Vec::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| {
            (
                std::mem::take(&mut out),
                format!("cannot read the body: {e}"),
            )
        })?;
        if out.len() + chunk.len() > limit {
            let room = limit - out.len();
            out.extend_from_slice(&chunk[..room]);
            return Err((
                out,
                format!("the body is larger than {limit} bytes; the first {limit} are kept"),
            ));
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

/// The URL the provider called: the source's `publicUrl` when set (the
/// request went through a proxy that changed it), else the URL rebuilt
/// from the request (`X-Forwarded-Proto`/`-Host` first), with the query.
fn called_url(
    spec: &WebhookSourceSpec,
    uri: &axum::http::Uri,
    headers: &[(String, String)],
) -> String {
    let header = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.split(',').next().unwrap_or_default().trim().to_owned())
    };
    let query = uri.query();
    match &spec.public_url {
        Some(public) => match query {
            Some(q) if public.contains('?') => format!("{public}&{q}"),
            Some(q) => format!("{public}?{q}"),
            None => public.clone(),
        },
        None => {
            let scheme = header("x-forwarded-proto").unwrap_or_else(|| "http".into());
            let host = header("x-forwarded-host")
                .or_else(|| header("host"))
                .unwrap_or_default();
            let path = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
            format!("{scheme}://{host}{path}")
        }
    }
}

fn is_form(headers: &[(String, String)]) -> bool {
    headers.iter().any(|(n, v)| {
        n == "content-type"
            && v.split(';').next().map(str::trim) == Some("application/x-www-form-urlencoded")
    })
}

/// The delivery's id when the scheme carries none in a header: Stripe and
/// Slack's Events API name the event in the body.
fn body_delivery_id(provider: Provider, body: &Value) -> Option<String> {
    let field = match provider {
        Provider::Stripe => "id",
        Provider::Slack => "event_id",
        _ => return None,
    };
    body.get(field).and_then(Value::as_str).map(str::to_owned)
}

/// One delivery on its way through the receiver.
struct Intake<'a> {
    state: &'a WebhookState,
    namespace: &'a str,
    source: &'a str,
    tenant: Option<Uuid>,
    provider: Option<Provider>,
    headers: Vec<(String, String)>,
    received_at: DateTime<Utc>,
    /// Label of the metrics: `None` until the source is known.
    known_source: Option<String>,
}

impl Intake<'_> {
    /// Stores the delivery as rejected, counts it and answers the caller.
    async fn reject(self, why: DeliveryRejection, message: String, body: Vec<u8>) -> Response {
        let provider = self.provider.map(|p| {
            serde_json::to_value(p)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default()
        });
        let rejection = NewWebhookRejection {
            stored_id: Uuid::now_v7(),
            tenant: self.tenant,
            namespace: self.namespace.to_owned(),
            source: self.source.to_owned(),
            provider,
            reason: why.as_str().to_owned(),
            message,
            headers: self.headers,
            body,
            received_at: self.received_at,
            node: self.state.node.clone(),
        };
        if let Err(err) = self.state.store.record_webhook_rejection(&rejection).await {
            // Not stored: the provider must retry, so say unavailable.
            tracing::error!(error = %err, source = %self.source, "cannot store a rejected webhook delivery");
            return ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "UNAVAILABLE",
                "the delivery cannot be recorded now; retry it",
            )
            .into_response();
        }
        let outcome = if why == DeliveryRejection::Unmatched {
            "ignored"
        } else {
            "rejected"
        };
        self.state.ingestor.metrics().count_delivery(
            self.known_source.as_deref(),
            outcome,
            why.as_str(),
        );
        if matches!(
            why,
            DeliveryRejection::SecretUnavailable | DeliveryRejection::SourceInvalid
        ) {
            tracing::error!(
                namespace = %self.namespace,
                source = %self.source,
                "a webhook delivery could not be verified: {}",
                rejection.message
            );
        }
        why.answer()
    }
}

async fn receive(
    State(state): State<WebhookState>,
    Path((namespace, source)): Path<(String, String)>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let mut intake = Intake {
        state: &state,
        namespace: &namespace,
        source: &source,
        tenant: None,
        provider: None,
        headers: header_pairs(&headers),
        received_at: state.clock.now(),
        known_source: None,
    };
    let body = match bounded_body(body, state.max_body_bytes).await {
        Ok(body) => body,
        Err((prefix, message)) => {
            return intake
                .reject(DeliveryRejection::BodyTooLarge, message, prefix)
                .await;
        }
    };
    let tenant: Tenant = match state.store.tenant_by_name(&namespace).await {
        Ok(Some(tenant)) => tenant,
        Ok(None) => {
            let message = format!("no tenant is named {namespace:?}");
            return intake
                .reject(DeliveryRejection::UnknownSource, message, body)
                .await;
        }
        Err(err) => return ApiError::from(err).into_response(),
    };
    intake.tenant = Some(tenant.id);
    let catalog = match state.catalog.latest(tenant.id).await {
        Ok(catalog) => catalog,
        Err(err) => return ApiError::from(err).into_response(),
    };
    let Some((hash, spec)) = catalog.as_deref().and_then(|c| {
        c.snapshot
            .webhook_sources
            .get(&source)
            .map(|spec| (c.content_hash.clone(), spec.clone()))
    }) else {
        let message = format!("the catalog in force has no WebhookSource {source:?}");
        return intake
            .reject(DeliveryRejection::UnknownSource, message, body)
            .await;
    };
    intake.provider = Some(spec.provider);
    intake.known_source = Some(format!("{namespace}/{source}"));

    let secret = match state
        .secrets
        .read(&namespace, &spec.secret_ref.name, &spec.secret_ref.key)
    {
        Ok(secret) => secret,
        Err(message) => {
            return intake
                .reject(DeliveryRejection::SecretUnavailable, message, body)
                .await;
        }
    };
    // The catalog was validated with the same grammar, so this fails only
    // for a catalog stored by something else; the delivery is then kept for
    // review, never verified against a tolerance nobody declared.
    let tolerance = match aforo_crds::duration::parse(&spec.tolerance)
        .map_err(|e| format!("spec.tolerance: {e}"))
        .and_then(|d| {
            chrono::Duration::from_std(d).map_err(|_| "spec.tolerance is too long".to_owned())
        }) {
        Ok(tolerance) => tolerance,
        Err(message) => {
            return intake
                .reject(DeliveryRejection::SourceInvalid, message, body)
                .await;
        }
    };
    let scheme = Scheme {
        provider: spec.provider,
        secret: &secret,
        tolerance,
        signature_header: spec.signature_header.as_deref().map(str::trim),
        base64: spec.signature_encoding.as_deref() == Some("base64"),
    };
    let lowercase_header = scheme.signature_header.map(str::to_ascii_lowercase);
    let scheme = Scheme {
        signature_header: lowercase_header.as_deref(),
        ..scheme
    };
    let url = called_url(&spec, &uri, &intake.headers);
    let delivery = Delivery {
        headers: &intake.headers,
        body: &body,
        url: &url,
    };
    let verified = match verify::verify(&scheme, &delivery, intake.received_at) {
        Ok(verified) => verified,
        Err(err) => {
            let why = DeliveryRejection::of(&err);
            return intake.reject(why, err.to_string(), body).await;
        }
    };
    drop(secret);

    let json = match mapping::body_as_json(&body, is_form(&intake.headers)) {
        Ok(json) => json,
        Err(message) => {
            return intake
                .reject(DeliveryRejection::Unmappable, message, body)
                .await;
        }
    };
    let mappings = state.mappings(tenant.id, &hash, &source, &spec);
    let mappings = match mappings.as_ref() {
        Ok(m) => m,
        Err(message) => {
            let message = format!("the source's mappings do not compile: {message}");
            return intake
                .reject(DeliveryRejection::Unmappable, message, body)
                .await;
        }
    };
    let delivery_id = verified
        .delivery_id
        .clone()
        .or_else(|| body_delivery_id(spec.provider, &json));
    let event_source = format!("webhooks/{source}");
    let facts = DeliveryFacts {
        source: &event_source,
        source_name: &source,
        delivery_id: delivery_id.as_deref(),
        time: verified.timestamp.unwrap_or(intake.received_at),
    };
    let candidates = match mapping::map(mappings, &json, &facts) {
        Mapped::Events(candidates) => candidates,
        Mapped::Unmatched => {
            let message = "no mapping's filter selects the delivery".to_owned();
            return intake
                .reject(DeliveryRejection::Unmatched, message, body)
                .await;
        }
        Mapped::Unmappable(message) => {
            return intake
                .reject(DeliveryRejection::Unmappable, message, body)
                .await;
        }
    };
    let raw = String::from_utf8_lossy(&body).into_owned();
    let outcome = match state
        .ingestor
        .ingest(&tenant, Tier::Webhook, candidates, &|_| raw.clone())
        .await
    {
        Ok(outcome) => outcome,
        Err(e) => {
            return ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "UNAVAILABLE",
                format!("the delivery's events were not stored ({e}); retry it"),
            )
            .into_response();
        }
    };
    let label = if outcome.accepted > 0 {
        "accepted"
    } else if outcome.duplicates > 0 {
        "duplicate"
    } else {
        "rejected"
    };
    state.ingestor.metrics().count_delivery(
        intake.known_source.as_deref(),
        label,
        if label == "rejected" { "GATES" } else { "" },
    );
    Json(Delivered {
        outcome: crate::rest::outcome(&outcome),
        delivery_id,
    })
    .into_response()
}

/// What a delivery became: a result per event, and the provider's delivery id.
#[derive(serde::Serialize)]
struct Delivered {
    #[serde(flatten)]
    outcome: aforo_api::v1::events::IngestResponse,
    delivery_id: Option<String>,
}

async fn list_rejections(
    State(state): State<WebhookState>,
    headers: HeaderMap,
    Query(raw): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let tenant = crate::rest::authenticate(&state.auth, &headers).await?;
    let p = Params::new(raw, &["source", "reason", "after", "limit"])?;
    let query = WebhookRejectionQuery {
        source: p.text("source"),
        reason: p.text("reason").map(|r| r.to_ascii_uppercase()),
        after: p.cursor()?,
        limit: p.limit()?,
    };
    let page = state
        .store
        .list_webhook_rejections(tenant.id, &query)
        .await?;
    let items: Vec<Value> = page
        .items
        .iter()
        .map(|stored| {
            let r = &stored.rejection;
            json!({
                "stored_id": r.stored_id.to_string(),
                "cursor": stored.seq.to_string(),
                "namespace": r.namespace,
                "source": r.source,
                "provider": r.provider,
                "reason": r.reason,
                "message": r.message,
                "headers": r.headers,
                "body": std::str::from_utf8(&r.body).ok(),
                "body_base64": base64::engine::general_purpose::STANDARD.encode(&r.body),
                "received_at": format_time(&r.received_at),
                "node": r.node,
            })
        })
        .collect();
    Ok(Json(json!({
        "rejections": items,
        "next_cursor": page.next_after.map(|c| c.to_string()),
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(public_url: Option<&str>) -> WebhookSourceSpec {
        serde_json::from_value(json!({
            "provider": "twilio",
            "secretRef": {"name": "s", "key": "k"},
            "publicUrl": public_url,
            "mappings": [{"customer": "$.c", "type": "t"}]
        }))
        .unwrap()
    }

    #[test]
    fn the_called_url_is_the_public_url_with_the_query_or_the_forwarded_one() {
        let uri: axum::http::Uri = "/v1/webhooks/default/sms?bodySHA256=ab".parse().unwrap();
        let headers = vec![
            ("host".to_owned(), "127.0.0.1:8470".to_owned()),
            ("x-forwarded-proto".to_owned(), "https".to_owned()),
        ];
        assert_eq!(
            called_url(&spec(Some("https://hooks.example.com/sms")), &uri, &headers),
            "https://hooks.example.com/sms?bodySHA256=ab"
        );
        assert_eq!(
            called_url(&spec(None), &uri, &headers),
            "https://127.0.0.1:8470/v1/webhooks/default/sms?bodySHA256=ab"
        );
    }

    #[test]
    fn rejections_tell_the_caller_nothing_specific() {
        for why in [
            DeliveryRejection::UnknownSource,
            DeliveryRejection::SecretUnavailable,
            DeliveryRejection::SourceInvalid,
            DeliveryRejection::SignatureMissing,
            DeliveryRejection::SignatureInvalid,
            DeliveryRejection::TimestampStale,
        ] {
            assert_eq!(why.answer().status(), StatusCode::UNAUTHORIZED, "{why:?}");
        }
        assert_eq!(
            DeliveryRejection::Unmappable.answer().status(),
            StatusCode::UNPROCESSABLE_ENTITY
        );
        assert_eq!(
            DeliveryRejection::Unmatched.answer().status(),
            StatusCode::OK
        );
    }
}
