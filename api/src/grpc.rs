//! gRPC's side of the edge: [`GrpcAuth`] authenticates every call of a
//! service from its `authorization: Bearer <key>` metadata before the
//! service reads its message, as [`crate::Authed`] does for HTTP; the
//! handler takes the tenant with [`grpc_tenant`].

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use aforo_store::Tenant;
use aforo_store::auth::Authenticator;
use axum::http::header;
use tonic::body::Body;
use tonic::codegen::Service;
use tonic::codegen::http::{Request, Response};
use tonic::server::NamedService;

/// A gRPC service whose calls are authenticated first: a call without a
/// valid key is answered `UNAUTHENTICATED` (with the same message as over
/// HTTP) and its message is never decoded; a call with one reaches the
/// service with its [`Tenant`] in the request's extensions.
#[derive(Clone)]
pub struct GrpcAuth<S> {
    inner: S,
    auth: Authenticator,
}

impl<S> GrpcAuth<S> {
    pub fn new(inner: S, auth: Authenticator) -> Self {
        GrpcAuth { inner, auth }
    }
}

impl<S: NamedService> NamedService for GrpcAuth<S> {
    const NAME: &'static str = S::NAME;
}

impl<S> Service<Request<Body>> for GrpcAuth<S>
where
    S: Service<Request<Body>, Response = Response<Body>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<Body>) -> Self::Future {
        // The clone that was made ready serves this call (tower's rule).
        let ready = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, ready);
        let auth = self.auth.clone();
        Box::pin(async move {
            let header = request
                .headers()
                .get(header::AUTHORIZATION)
                .map(|v| v.to_str().ok());
            match crate::extract::tenant_of(&auth, header).await {
                Ok(tenant) => {
                    request.extensions_mut().insert(tenant);
                    inner.call(request).await
                }
                Err(e) => Ok(tonic::Status::from(e).into_http()),
            }
        })
    }
}

/// The tenant [`GrpcAuth`] authenticated. A service not behind it has none:
/// that is a wiring mistake, answered `INTERNAL`, never a way in.
pub fn grpc_tenant<T>(request: &tonic::Request<T>) -> Result<Tenant, tonic::Status> {
    request
        .extensions()
        .get::<Tenant>()
        .cloned()
        .ok_or_else(|| {
            tracing::error!("a gRPC service was called without the authentication layer");
            tonic::Status::internal("the call was not authenticated")
        })
}
