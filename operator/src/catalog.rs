//! A namespace's catalog: its Meters, Products, RatePlans, WebhookSources
//! and UsageAlerts, read from the cluster, compiled as `aforo apply` would,
//! and applied through a pipeline's catalog API
//! (`POST /v1/catalog/apply`, Bearer the tenant's API key).

use std::time::Duration;

use aforo_crds::catalog::{Meter, Product, RatePlan, Resource, UsageAlert, WebhookSource};
use aforo_crds::compile::{Compiled, compile};
use aforo_crds::validate::CatalogError;
use kube::Client;
use kube::api::{Api, ListParams};
use serde_json::{Value, json};

use crate::Error;

/// Every catalog resource of `namespace`, in a stable order (by kind, then
/// name, as the apiserver lists them).
///
/// Kinds are listed one request at a time, so the result is no snapshot.
/// Referrers are listed before what they refer to (UsageAlerts and
/// RatePlans, then Products, then Meters): an object created after the one it
/// names is then never seen without it, and a reference found missing was
/// missing when its referrer was already there — never an artefact of the
/// order of the reads.
pub async fn resources(client: &Client, namespace: &str) -> Result<Vec<Resource>, Error> {
    let list = ListParams::default();
    let alerts = Api::<UsageAlert>::namespaced(client.clone(), namespace)
        .list(&list)
        .await?;
    let plans = Api::<RatePlan>::namespaced(client.clone(), namespace)
        .list(&list)
        .await?;
    let sources = Api::<WebhookSource>::namespaced(client.clone(), namespace)
        .list(&list)
        .await?;
    let products = Api::<Product>::namespaced(client.clone(), namespace)
        .list(&list)
        .await?;
    let meters = Api::<Meter>::namespaced(client.clone(), namespace)
        .list(&list)
        .await?;
    let mut out: Vec<Resource> = meters.into_iter().map(Resource::Meter).collect();
    out.extend(products.into_iter().map(Resource::Product));
    out.extend(plans.into_iter().map(Resource::RatePlan));
    out.extend(sources.into_iter().map(Resource::WebhookSource));
    out.extend(alerts.into_iter().map(Resource::UsageAlert));
    // Resources being deleted are leaving the catalog already.
    out.retain(|r| r.meta().deletion_timestamp.is_none());
    Ok(out)
}

/// Validates and compiles a namespace's resources. There is no previous
/// version here: the catalog API checks a changed plan's `effectiveFrom`
/// against the version in force.
pub fn compile_namespace(resources: &[Resource]) -> Result<Compiled, Vec<CatalogError>> {
    compile(resources, None)
}

/// What the catalog API answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppliedVersion {
    pub version: i64,
    pub content_hash: String,
    /// False when identical content was already in force (nothing written).
    pub created: bool,
}

/// Why a catalog did not apply.
#[derive(Debug, thiserror::Error)]
pub enum ApplyFailure {
    /// 422: the catalog API refused the catalog; every error is listed.
    #[error("the catalog API rejected the catalog: {}", list(.0))]
    Rejected(Vec<CatalogError>),
    /// 401: the API key is not valid for the pipeline.
    #[error("the catalog API refused the API key: {0}")]
    Unauthorized(String),
    /// Not reachable, or an unexpected answer: worth a retry.
    #[error("the catalog API at {endpoint} is unavailable: {message}")]
    Unavailable { endpoint: String, message: String },
}

fn list(errors: &[CatalogError]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// A client of pipelines' catalog APIs.
#[derive(Clone)]
pub struct CatalogClient {
    http: reqwest::Client,
}

impl CatalogClient {
    pub fn new() -> Result<CatalogClient, Error> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| Error::Internal(format!("cannot build an HTTP client: {e}")))?;
        Ok(CatalogClient { http })
    }

    /// POSTs the resources to `endpoint`'s `/v1/catalog/apply`.
    pub async fn apply(
        &self,
        endpoint: &str,
        api_key: &str,
        resources: &[Resource],
    ) -> Result<AppliedVersion, ApplyFailure> {
        let url = format!("{}/v1/catalog/apply", endpoint.trim_end_matches('/'));
        let unavailable = |message: String| ApplyFailure::Unavailable {
            endpoint: endpoint.to_owned(),
            message,
        };
        let body = json!({"resources": resources.iter().map(lean).collect::<Vec<_>>()});
        let response = self
            .http
            .post(&url)
            .bearer_auth(api_key)
            .json(&body)
            .send()
            .await
            .map_err(|e| unavailable(error_chain(&e)))?;
        let status = response.status();
        let answer: Value = response
            .json()
            .await
            .map_err(|e| unavailable(format!("HTTP {status}, not JSON: {e}")))?;
        let message = || answer["error"]["message"].as_str().unwrap_or("").to_owned();
        match status.as_u16() {
            200 => Ok(AppliedVersion {
                version: answer["version"]
                    .as_i64()
                    .ok_or_else(|| unavailable(format!("no version in {answer}")))?,
                content_hash: answer["content_hash"]
                    .as_str()
                    .ok_or_else(|| unavailable(format!("no content_hash in {answer}")))?
                    .to_owned(),
                created: answer["created"].as_bool().unwrap_or(false),
            }),
            422 => match serde_json::from_value::<Vec<CatalogError>>(
                answer["error"]["details"].clone(),
            ) {
                Ok(errors) if !errors.is_empty() => Err(ApplyFailure::Rejected(errors)),
                _ => Err(ApplyFailure::Rejected(vec![CatalogError {
                    kind: "Catalog".into(),
                    name: String::new(),
                    field: String::new(),
                    message: message(),
                }])),
            },
            401 | 403 => Err(ApplyFailure::Unauthorized(message())),
            _ => Err(unavailable(format!("HTTP {status}: {}", message()))),
        }
    }
}

/// A resource as the catalog API needs it: no status, no server metadata.
fn lean(resource: &Resource) -> Value {
    let full = resource.to_value();
    json!({
        "apiVersion": full["apiVersion"],
        "kind": full["kind"],
        "metadata": {"name": full["metadata"]["name"], "namespace": full["metadata"]["namespace"]},
        "spec": full["spec"],
    })
}

/// An error and its causes, e.g. "error sending request: connection refused".
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
