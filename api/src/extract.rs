//! Extractors whose every rejection is an [`ApiError`].

use aforo_store::Tenant;
use aforo_store::auth::{AuthError, Authenticator};
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRef, FromRequest, FromRequestParts, Request};
use axum::http::header;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use crate::ApiError;

/// The tenant of the request's API key (`authorization: Bearer <key>`).
///
/// It reads headers only: put it before the body extractor, and a request
/// without a valid key is answered 401 before its body is read.
#[derive(Clone, Debug)]
pub struct Authed(pub Tenant);

impl<S> FromRequestParts<S> for Authed
where
    Authenticator: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let auth = Authenticator::from_ref(state);
        authenticate(&auth, &parts.headers).await.map(Authed)
    }
}

/// The tenant of the API key in `headers`.
pub async fn authenticate(
    auth: &Authenticator,
    headers: &axum::http::HeaderMap,
) -> Result<Tenant, ApiError> {
    let header = headers.get(header::AUTHORIZATION).map(|v| v.to_str().ok());
    tenant_of(auth, header).await
}

/// The tenant of an `authorization` value: absent, not text (`None`
/// inside), or a key to check.
pub(crate) async fn tenant_of(
    auth: &Authenticator,
    header: Option<Option<&str>>,
) -> Result<Tenant, ApiError> {
    let header = header.map(|v| v.ok_or(AuthError::Malformed)).transpose()?;
    Ok(auth.authenticate(header).await?)
}

/// A JSON body; a wrong content type (415), unreadable JSON (400) or JSON
/// of the wrong shape (422) is answered in the envelope, naming the field.
#[derive(Clone, Copy, Debug, Default)]
pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(value)) => Ok(ApiJson(value)),
            Err(rejection) => Err(json_rejection(rejection)),
        }
    }
}

fn json_rejection(rejection: JsonRejection) -> ApiError {
    let code = match &rejection {
        JsonRejection::MissingJsonContentType(_) => "UNSUPPORTED_MEDIA_TYPE",
        JsonRejection::JsonDataError(_) => "INVALID_BODY",
        _ => "MALFORMED_BODY",
    };
    ApiError::new(rejection.status(), code, rejection.body_text())
}

/// A JSON body that may be left out: no body at all is `None`; a body that
/// is there must be JSON of the right shape, answered like [`ApiJson`]'s
/// otherwise (never taken for "no body").
#[derive(Clone, Copy, Debug, Default)]
pub struct MaybeJson<T>(pub Option<T>);

impl<S, T> FromRequest<S> for MaybeJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = body_bytes(req, state).await?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(MaybeJson(None));
        }
        serde_json::from_slice(&bytes)
            .map(|value| MaybeJson(Some(value)))
            .map_err(|e| match e.classify() {
                serde_json::error::Category::Data => ApiError::new(
                    axum::http::StatusCode::UNPROCESSABLE_ENTITY,
                    "INVALID_BODY",
                    format!("the body is not of the expected shape: {e}"),
                ),
                _ => ApiError::new(
                    axum::http::StatusCode::BAD_REQUEST,
                    "MALFORMED_BODY",
                    format!("the body is not JSON: {e}"),
                ),
            })
    }
}

/// The whole body (axum's size limit applies), or why not, in the envelope.
async fn body_bytes<S: Send + Sync>(
    req: Request,
    state: &S,
) -> Result<axum::body::Bytes, ApiError> {
    axum::body::Bytes::from_request(req, state)
        .await
        .map_err(|e| ApiError::new(e.status(), "MALFORMED_BODY", e.body_text()))
}

/// A text body (CSV, for one); one too large or not UTF-8 is answered in
/// the envelope.
#[derive(Clone, Debug, Default)]
pub struct ApiText(pub String);

impl<S> FromRequest<S> for ApiText
where
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = body_bytes(req, state).await?;
        String::from_utf8(bytes.to_vec()).map(ApiText).map_err(|e| {
            ApiError::new(
                axum::http::StatusCode::BAD_REQUEST,
                "MALFORMED_BODY",
                format!("the body is not UTF-8 text: {e}"),
            )
        })
    }
}

/// Query parameters; a missing or malformed one is a 400 naming it.
#[derive(Clone, Copy, Debug, Default)]
pub struct ApiQuery<T>(pub T);

impl<S, T> FromRequestParts<S> for ApiQuery<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(value)) => Ok(ApiQuery(value)),
            Err(rejection) => Err(query_rejection(rejection)),
        }
    }
}

fn query_rejection(rejection: QueryRejection) -> ApiError {
    ApiError::bad_query(rejection.body_text())
}

/// Path parameters; one of the wrong type is a 400 naming it.
#[derive(Clone, Copy, Debug, Default)]
pub struct ApiPath<T>(pub T);

impl<S, T> FromRequestParts<S> for ApiPath<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(value)) => Ok(ApiPath(value)),
            Err(rejection) => Err(path_rejection(rejection)),
        }
    }
}

fn path_rejection(rejection: PathRejection) -> ApiError {
    let status = rejection.status();
    if status.is_server_error() {
        ApiError::new(status, "INTERNAL", rejection.body_text())
    } else {
        ApiError::bad_path(rejection.body_text())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::Router;
    use axum::body::Body;
    use axum::http::StatusCode;
    use axum::response::IntoResponse;
    use axum::routing::post;
    use http_body_util::BodyExt;
    use serde::Deserialize;
    use serde_json::Value;
    use tower::ServiceExt;

    #[derive(Deserialize)]
    struct Body1 {
        #[allow(dead_code)]
        amount: u32,
    }

    #[derive(Deserialize)]
    struct Page {
        #[allow(dead_code)]
        limit: u32,
    }

    async fn handler(
        ApiPath(_id): ApiPath<u32>,
        ApiQuery(_q): ApiQuery<Page>,
        ApiJson(_b): ApiJson<Body1>,
    ) -> impl IntoResponse {
        "ok"
    }

    async fn call(uri: &str, content_type: &str, body: &str) -> (StatusCode, Value) {
        let app = Router::new().route("/things/{id}", post(handler));
        let request = Request::builder()
            .method("POST")
            .uri(uri)
            .header("content-type", content_type)
            .body(Body::from(body.to_owned()))
            .unwrap();
        let response = app.oneshot(request).await.unwrap();
        let status = response.status();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        let json = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        (status, json)
    }

    async fn maybe(body: &str) -> (StatusCode, String) {
        async fn handler(MaybeJson(b): MaybeJson<Page>) -> String {
            match b {
                Some(p) => format!("limit {}", p.limit),
                None => "none".into(),
            }
        }
        let app = Router::new().route("/run", post(handler));
        let request = Request::builder()
            .method("POST")
            .uri("/run")
            .body(Body::from(body.to_owned()))
            .unwrap();
        let response = app.oneshot(request).await.unwrap();
        let status = response.status();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8_lossy(&bytes).into_owned())
    }

    #[tokio::test]
    async fn an_optional_body_left_out_is_none_and_a_bad_one_is_refused() {
        assert_eq!(maybe("").await, (StatusCode::OK, "none".into()));
        assert_eq!(maybe(" \n").await, (StatusCode::OK, "none".into()));
        assert_eq!(
            maybe(r#"{"limit":3}"#).await,
            (StatusCode::OK, "limit 3".into())
        );
        let (status, text) = maybe(r#"{"limit":"#).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{text}");
        assert!(text.contains("MALFORMED_BODY"), "{text}");
        let (status, text) = maybe(r#"{"limit":"three"}"#).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{text}");
        assert!(text.contains("INVALID_BODY"), "{text}");
    }

    #[tokio::test]
    async fn a_well_formed_request_reaches_the_handler() {
        let (status, _) = call("/things/1?limit=2", "application/json", r#"{"amount":3}"#).await;
        assert_eq!(status, StatusCode::OK);
    }

    #[tokio::test]
    async fn each_kind_of_malformed_input_is_answered_in_the_envelope() {
        for (uri, content_type, body, status, code) in [
            (
                "/things/x?limit=2",
                "application/json",
                r#"{"amount":3}"#,
                400,
                "INVALID_PATH",
            ),
            (
                "/things/1?limit=-2",
                "application/json",
                r#"{"amount":3}"#,
                400,
                "INVALID_QUERY",
            ),
            (
                "/things/1?limit=2",
                "application/json",
                r#"{"amount":"#,
                400,
                "MALFORMED_BODY",
            ),
            (
                "/things/1?limit=2",
                "application/json",
                r#"{"amount":-3}"#,
                422,
                "INVALID_BODY",
            ),
            (
                "/things/1?limit=2",
                "text/plain",
                r#"{"amount":3}"#,
                415,
                "UNSUPPORTED_MEDIA_TYPE",
            ),
        ] {
            let (got, json) = call(uri, content_type, body).await;
            assert_eq!(got.as_u16(), status, "{uri} {body}: {json}");
            assert_eq!(json["error"]["code"], code, "{uri} {body}: {json}");
            assert!(
                json["error"]["message"]
                    .as_str()
                    .is_some_and(|m| !m.is_empty()),
                "{json}"
            );
        }
    }
}
