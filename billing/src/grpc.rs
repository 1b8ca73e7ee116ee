//! The gRPC catalog API: `aforo.v1.CatalogService`.

use aforo_proto::v1 as pb;
use aforo_proto::v1::catalog_service_server::CatalogService;
use aforo_store::auth::{AuthError, Authenticator};
use aforo_store::{CatalogVersion, StoreError};
use chrono::{DateTime, Utc};
use tonic::{Request, Response, Status};

use crate::catalog::{ApplyError, CatalogApi};

#[derive(Clone)]
pub struct CatalogGrpc {
    catalog: CatalogApi,
    auth: Authenticator,
}

impl CatalogGrpc {
    pub fn new(catalog: CatalogApi, auth: Authenticator) -> Self {
        CatalogGrpc { catalog, auth }
    }

    async fn tenant<T>(&self, request: &Request<T>) -> Result<uuid::Uuid, Status> {
        let header = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok());
        match self.auth.authenticate(header).await {
            Ok(t) => Ok(t.id),
            Err(AuthError::Store(e)) => Err(store_status(e)),
            Err(e) => Err(Status::unauthenticated(e.to_string())),
        }
    }
}

fn store_status(e: StoreError) -> Status {
    match e {
        StoreError::NotFound(m) => Status::not_found(m),
        StoreError::Invalid(m) => Status::invalid_argument(m),
        other => Status::unavailable(other.to_string()),
    }
}

fn timestamp(t: &DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: t.timestamp(),
        nanos: t.timestamp_subsec_nanos() as i32,
    }
}

fn version(v: &CatalogVersion, with_snapshot: bool) -> pb::CatalogVersion {
    pb::CatalogVersion {
        version: v.version,
        content_hash: v.content_hash.clone(),
        effective_from: v.effective_from.as_ref().map(timestamp),
        applied_at: Some(timestamp(&v.applied_at)),
        snapshot_json: if with_snapshot {
            v.snapshot.clone()
        } else {
            String::new()
        },
    }
}

#[tonic::async_trait]
impl CatalogService for CatalogGrpc {
    async fn apply(
        &self,
        request: Request<pb::ApplyCatalogRequest>,
    ) -> Result<Response<pb::ApplyCatalogResponse>, Status> {
        let tenant = self.tenant(&request).await?;
        let mut values = Vec::new();
        for (i, text) in request.into_inner().resources_json.iter().enumerate() {
            let value = serde_json::from_str(text).map_err(|e| {
                Status::invalid_argument(format!("resource {} is not JSON: {e}", i + 1))
            })?;
            values.push((format!("resource {}", i + 1), value));
        }
        let outcome = match CatalogApi::parse(values) {
            Ok(resources) => self.catalog.apply(tenant, &resources).await,
            Err(e) => Err(e),
        };
        match outcome {
            Ok(applied) => Ok(Response::new(pb::ApplyCatalogResponse {
                version: Some(version(&applied.catalog.version, false)),
                created: applied.catalog.created,
                errors: vec![],
                skipped: applied.skipped,
            })),
            Err(ApplyError::Invalid(errors)) => Ok(Response::new(pb::ApplyCatalogResponse {
                version: None,
                created: false,
                errors: errors
                    .into_iter()
                    .map(|e| pb::CatalogError {
                        kind: e.kind,
                        name: e.name,
                        field: e.field,
                        message: e.message,
                    })
                    .collect(),
                skipped: vec![],
            })),
            Err(ApplyError::Store(e)) => Err(store_status(e)),
        }
    }

    async fn get(
        &self,
        request: Request<pb::GetCatalogRequest>,
    ) -> Result<Response<pb::CatalogVersion>, Status> {
        let tenant = self.tenant(&request).await?;
        let n = request.into_inner().version;
        let wanted = (n > 0).then_some(n);
        let v = self
            .catalog
            .get(tenant, wanted)
            .await
            .map_err(store_status)?
            .ok_or_else(|| {
                Status::not_found(if n > 0 {
                    format!("no catalog version {n}")
                } else {
                    "no catalog has been applied yet".into()
                })
            })?;
        Ok(Response::new(version(&v, true)))
    }

    async fn list(
        &self,
        request: Request<pb::ListCatalogVersionsRequest>,
    ) -> Result<Response<pb::ListCatalogVersionsResponse>, Status> {
        let tenant = self.tenant(&request).await?;
        let all = self.catalog.list(tenant).await.map_err(store_status)?;
        Ok(Response::new(pb::ListCatalogVersionsResponse {
            versions: all.iter().map(|v| version(v, false)).collect(),
        }))
    }
}
