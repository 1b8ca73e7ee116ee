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

use std::sync::Arc;

use aforo_api::v1::webhooks::{Delivered, Ignored, WebhookAnswer, WebhookRejection};
use aforo_api::v1::{ErrorBody, Page};
use aforo_api::{ApiQuery, Authed};

use aforo_crds::Tier;
use aforo_crds::catalog::{Provider, WebhookSourceSpec};
use aforo_store::cache::CatalogCache;
use aforo_store::{NewWebhookRejection, Store, Tenant, WebhookRejectionQuery};
use axum::body::Body;
use axum::extract::{FromRef, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use base64::Engine;
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::Value;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::clock::Clock;
use crate::pipeline::Ingestor;
use crate::rest::ApiError;
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
                return Json(Ignored {
                    status: "IGNORED".to_owned(),
                })
                .into_response();
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
        ApiError::new(status, code, message).into_response()
    }
}

/// Sources whose compiled mappings are kept.
const COMPILED_SOURCES: u64 = 10_000;

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
    /// By (tenant, catalog content hash, source name): a catalog version
    /// never changes; a new one has another hash.
    compiled: moka::sync::Cache<CompiledKey, Compiled>,
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
            compiled: moka::sync::Cache::new(COMPILED_SOURCES),
        }
    }

    fn mappings(&self, tenant: Uuid, hash: &str, name: &str, spec: &WebhookSourceSpec) -> Compiled {
        let key = (tenant, hash.to_owned(), name.to_owned());
        self.compiled.get_with(key, || {
            Arc::new(
                spec.mappings
                    .iter()
                    .map(CompiledMapping::compile)
                    .collect::<Result<Vec<_>, _>>(),
            )
        })
    }
}

/// The documented routes with their OpenAPI operations.
fn routes() -> OpenApiRouter<WebhookState> {
    OpenApiRouter::new()
        .routes(routes!(list_rejections))
        .routes(routes!(receive))
}

pub fn router(state: WebhookState) -> Router {
    routes().split_for_parts().0.with_state(state)
}

/// The webhook routes' operations.
pub fn openapi() -> utoipa::openapi::OpenApi {
    routes().split_for_parts().1
}

impl FromRef<WebhookState> for Authenticator {
    fn from_ref(state: &WebhookState) -> Authenticator {
        state.auth.clone()
    }
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

/// Receive a provider's delivery for the WebhookSource `source` of the
/// tenant `namespace`.
///
/// Authenticated by the provider's signature over the raw body (Stripe,
/// GitHub, Slack, Twilio, SendGrid, Standard Webhooks), not by an API key.
/// Each event the source's mappings make of the delivery gets a result;
/// the provider's delivery id is the idempotency key, so a redelivery
/// answers `DUPLICATE`. A delivery that goes no further is stored for
/// review at `/v1/webhooks/rejections`, and the caller learns only 401,
/// 413 or 422 — never which check failed.
#[utoipa::path(operation_id = "receive_webhook", post, path = "/v1/webhooks/{namespace}/{source}", tag = "webhooks",
    params(
        ("namespace" = String, Path, description = "The tenant's name"),
        ("source" = String, Path, description = "The WebhookSource's name"),
    ),
    request_body(description = "The provider's body, as it signed it", content(
        (Object = "application/json"),
        (String = "application/x-www-form-urlencoded"),
    )),
    security(()),
    responses(
        (status = 200, description = "Verified and mapped: a result per event (`Delivered`); or \
            verified but selected by no mapping: stored, and `IGNORED` so the provider does not retry", body = WebhookAnswer),
        (status = 401, description = "Not authentic (or no such source)", body = ErrorBody),
        (status = 413, description = "Larger than the endpoint accepts", body = ErrorBody),
        (status = 422, description = "Authentic but not mappable", body = ErrorBody),
        (status = 503, description = "Not stored; retry", body = ErrorBody),
    ))]
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

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct WebhookRejectionsQuery {
    /// A WebhookSource's name.
    source: Option<String>,
    /// A reason code, e.g. `WEBHOOK_SIGNATURE_INVALID`.
    reason: Option<String>,
    /// `next_cursor` of the previous page.
    after: Option<String>,
    /// 1 to 1000; 100 when absent.
    limit: Option<String>,
}

/// The tenant's deliveries that did not become events, with what arrived
/// and exactly why.
#[utoipa::path(operation_id = "list_webhook_rejections", get, path = "/v1/webhooks/rejections", tag = "webhooks",
    params(WebhookRejectionsQuery),
    responses((status = 200, body = Page<WebhookRejection>)))]
async fn list_rejections(
    State(state): State<WebhookState>,
    Authed(tenant): Authed,
    ApiQuery(q): ApiQuery<WebhookRejectionsQuery>,
) -> Result<Json<Page<WebhookRejection>>, ApiError> {
    let query = WebhookRejectionQuery {
        source: q.source.filter(|s| !s.is_empty()),
        reason: q
            .reason
            .filter(|s| !s.is_empty())
            .map(|r| r.to_ascii_uppercase()),
        after: crate::rest::query_cursor(q.after)?,
        limit: crate::rest::query_limit(q.limit)?,
    };
    let page = state
        .store
        .list_webhook_rejections(tenant.id, &query)
        .await?;
    let items = page
        .items
        .into_iter()
        .map(|stored| {
            let r = stored.rejection;
            WebhookRejection {
                stored_id: r.stored_id,
                cursor: stored.seq.to_string(),
                namespace: r.namespace,
                source: r.source,
                provider: r.provider,
                reason: r.reason,
                message: r.message,
                headers: r.headers,
                body: std::str::from_utf8(&r.body).ok().map(str::to_owned),
                body_base64: base64::engine::general_purpose::STANDARD.encode(&r.body),
                received_at: r.received_at,
                node: r.node,
            }
        })
        .collect();
    Ok(Json(Page {
        items,
        next_cursor: page.next_after.map(|c| c.to_string()),
        total: None,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

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
