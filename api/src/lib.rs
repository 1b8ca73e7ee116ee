//! aforo's API edge: what every HTTP and gRPC handler of every role shares.
//!
//! A request meets the edge before it meets a handler. [`Authed`] reads the
//! `authorization: Bearer <key>` header and resolves the tenant before any
//! body is read, and [`GrpcAuth`] does the same for every gRPC service
//! before its message is decoded (the handler takes the tenant with
//! [`grpc_tenant`]), so a caller without a valid key learns nothing about
//! the shape of the API and costs no parsing. Every failure — a bad key, a
//! malformed body, query or path, a store that is away, a domain rule — is
//! one [`ApiError`], answered over HTTP as one JSON envelope,
//! `{"error": {"code", "message", "details"?}}`, and over gRPC as the
//! matching [`tonic::Status`]. The extractors [`ApiJson`], [`MaybeJson`],
//! [`ApiText`], [`ApiQuery`] and [`ApiPath`] wrap axum's own, so that their
//! rejections use the envelope too instead of axum's plain text.

mod error;
mod extract;
mod grpc;
pub mod host;
pub mod openapi;
pub mod serve;
pub mod v1;

pub use error::ApiError;
pub use extract::{ApiJson, ApiPath, ApiQuery, ApiText, Authed, MaybeJson, authenticate};
pub use grpc::{GrpcAuth, grpc_tenant};
