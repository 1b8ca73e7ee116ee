//! How the billing services' errors reach API callers: each becomes one
//! [`ApiError`], which answers over HTTP (the JSON envelope) and gRPC (the
//! matching status) alike, so REST and gRPC never map one error two ways.

use aforo_api::ApiError;
use axum::http::StatusCode;

use crate::catalog::ApplyError;
use crate::customers::AdminError;
use crate::invoices::InvoiceError;

impl From<AdminError> for ApiError {
    fn from(e: AdminError) -> Self {
        match e {
            AdminError::Invalid(m) => ApiError::invalid(m),
            AdminError::Store(s) => s.into(),
        }
    }
}

impl From<ApplyError> for ApiError {
    fn from(e: ApplyError) -> Self {
        match e {
            ApplyError::Invalid(errors) => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "INVALID_CATALOG",
                format!(
                    "{} errors; nothing was applied:\n{}",
                    errors.len(),
                    errors
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join("\n")
                ),
            )
            .with_details(serde_json::to_value(&errors).unwrap_or_default()),
            ApplyError::Store(s) => s.into(),
        }
    }
}

impl From<InvoiceError> for ApiError {
    fn from(e: InvoiceError) -> Self {
        match e {
            InvoiceError::Invalid(m) => ApiError::invalid(m),
            InvoiceError::NotFound(m) => ApiError::not_found(m),
            InvoiceError::Store(s) => s.into(),
            InvoiceError::Run(m) => {
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "BILL_RUN_FAILED", m)
            }
        }
    }
}
