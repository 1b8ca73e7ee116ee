//! One error for every API answer.

use aforo_store::StoreError;
use aforo_store::auth::AuthError;
use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

/// An API error: an HTTP status, a stable machine-readable code, a message
/// for people, and optional structured details.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    details: Option<Value>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            details: None,
        }
    }

    /// 422 `INVALID`: the request is well-formed and breaks a rule.
    pub fn invalid(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "INVALID", message)
    }

    /// 400 `INVALID_QUERY`.
    pub fn bad_query(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, "INVALID_QUERY", message)
    }

    /// 400 `INVALID_PATH`.
    pub fn bad_path(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, "INVALID_PATH", message)
    }

    /// 404 `NOT_FOUND`.
    pub fn not_found(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::NOT_FOUND, "NOT_FOUND", message)
    }

    pub fn with_details(mut self, details: Value) -> Self {
        self.details = Some(details);
        self
    }

    pub fn status(&self) -> StatusCode {
        self.status
    }

    pub fn code(&self) -> &'static str {
        self.code
    }

    pub fn message(&self) -> &str {
        &self.message
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for ApiError {}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut error = json!({"code": self.code, "message": self.message});
        if let Some(details) = self.details {
            error["details"] = details;
        }
        let mut response = (self.status, Json(json!({ "error": error }))).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

/// The same error over gRPC: the status code that means what the HTTP one
/// means, and the same message.
impl From<ApiError> for tonic::Status {
    fn from(e: ApiError) -> Self {
        use tonic::Code;
        let code = match e.status {
            StatusCode::BAD_REQUEST | StatusCode::UNPROCESSABLE_ENTITY => Code::InvalidArgument,
            StatusCode::UNAUTHORIZED => Code::Unauthenticated,
            StatusCode::FORBIDDEN => Code::PermissionDenied,
            StatusCode::NOT_FOUND => Code::NotFound,
            StatusCode::CONFLICT => Code::AlreadyExists,
            StatusCode::PAYLOAD_TOO_LARGE | StatusCode::TOO_MANY_REQUESTS => {
                Code::ResourceExhausted
            }
            StatusCode::SERVICE_UNAVAILABLE => Code::Unavailable,
            StatusCode::UNSUPPORTED_MEDIA_TYPE => Code::InvalidArgument,
            _ => Code::Internal,
        };
        tonic::Status::new(code, e.message)
    }
}

/// Not found is 404, a broken rule 422, a conflict 409; a store that is
/// away (or lost a race) is 503, worth a retry; data the store cannot read
/// back is 500, not worth one.
impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(m) => ApiError::not_found(m),
            StoreError::Invalid(m) => ApiError::invalid(m),
            StoreError::Conflict(m) => ApiError::new(StatusCode::CONFLICT, "CONFLICT", m),
            e if e.is_retryable() => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "UNAVAILABLE",
                format!("{e}; retry"),
            ),
            e => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL", e.to_string()),
        }
    }
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> Self {
        match e {
            AuthError::Store(e) => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "UNAVAILABLE",
                format!("cannot check the API key now; retry: {e}"),
            ),
            other => ApiError::new(
                StatusCode::UNAUTHORIZED,
                "UNAUTHENTICATED",
                other.to_string(),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    async fn body(e: ApiError) -> (StatusCode, Value, Option<String>) {
        let response = e.into_response();
        let status = response.status();
        let challenge = response
            .headers()
            .get(header::WWW_AUTHENTICATE)
            .map(|v| v.to_str().unwrap().to_owned());
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        (status, serde_json::from_slice(&bytes).unwrap(), challenge)
    }

    #[tokio::test]
    async fn every_error_is_one_json_envelope() {
        let (status, json, _) =
            body(ApiError::invalid("no").with_details(json!({"field": "x"}))).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(
            json,
            json!({"error": {"code": "INVALID", "message": "no", "details": {"field": "x"}}})
        );
    }

    #[tokio::test]
    async fn unauthenticated_answers_carry_the_bearer_challenge() {
        let (status, json, challenge) = body(AuthError::Unknown.into()).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(json["error"]["code"], "UNAUTHENTICATED");
        assert_eq!(challenge.as_deref(), Some("Bearer"));
    }

    #[test]
    fn a_missing_thing_is_not_found_over_http_and_grpc_alike() {
        let e: ApiError = StoreError::NotFound("no customer \"x\"".into()).into();
        assert_eq!(e.status(), StatusCode::NOT_FOUND);
        let status: tonic::Status = e.into();
        assert_eq!(status.code(), tonic::Code::NotFound);
        assert_eq!(status.message(), "no customer \"x\"");
    }

    #[test]
    fn unreadable_stored_data_is_an_internal_error_not_a_retry() {
        let e: ApiError = StoreError::Corrupt("bad row".into()).into();
        assert_eq!(e.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let status: tonic::Status = e.into();
        assert_eq!(status.code(), tonic::Code::Internal);
    }

    #[test]
    fn a_broken_rule_is_invalid_argument_over_grpc() {
        let status: tonic::Status = ApiError::invalid("ends_at must be after starts_at").into();
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
    }
}
