//! aforo's Kubernetes operator: `aforo operator`.
//!
//! Two controllers, run by whichever replica holds the leader Lease
//! ([`lease`]):
//!
//! - **pipelines** ([`pipeline`]): each `MeteringPipeline` is reconciled as
//!   dereference → validate → build → apply → status. [`build`] is pure: the
//!   pipeline in, its ServiceAccount, Deployments, Services, HPAs and
//!   PodDisruptionBudgets out. [`children`] applies them by server-side apply
//!   under one field manager, writing only what differs, and deletes by
//!   label what is no longer built. The namespace's catalog resources are
//!   compiled and applied through the pipeline's catalog API ([`catalog`]);
//!   the version and hash in force land in the pipeline's status.
//! - **catalog status** ([`catalog_status`]): each Meter, Product, RatePlan,
//!   WebhookSource and UsageAlert gets `Valid`, `Applied` and `Ready`
//!   conditions, naming the field of every semantic error, and the catalog
//!   version it is part of.
//!
//! Status follows the API conventions ([`conditions`]): a `Ready` summary,
//! `observedGeneration`, CamelCase reasons, kstatus's `Reconciling` and
//! `Stalled`. Nothing is written when nothing changed, so a restarted
//! operator over a steady cluster sends no write; [`metrics`] counts every
//! write to show it.

// Kubernetes errors are large; they are returned rarely.
#![allow(clippy::result_large_err)]

pub mod build;
pub mod catalog;
pub mod catalog_status;
pub mod children;
pub mod conditions;
mod config;
pub mod lease;
pub mod metrics;
pub mod pipeline;
mod run;

pub use config::OperatorConfig;
pub use run::Operator;

/// Marks a pipeline or catalog resource the operator leaves alone.
pub const PAUSE_ANNOTATION: &str = "aforo.io/paused";
/// Holds a pipeline until the operator has deleted its children.
pub const FINALIZER: &str = "aforo.io/cleanup";

/// What can go wrong talking to the cluster.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("cannot encode an object: {0}")]
    Json(#[from] serde_json::Error),
    #[error(
        "the aforo CRDs are not installed (install charts/aforo/crds/, or `aforo crd print | kubectl apply -f -`): {0}"
    )]
    CrdsMissing(kube::Error),
    #[error("the finalizer: {0}")]
    Finalizer(String),
    #[error("cannot serve {addr}: {source}")]
    Bind {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("lost the leader Lease; stopping so that another replica leads")]
    LeaseLost,
    #[error("{0}")]
    Internal(String),
}

/// Whether `meta` carries the pause annotation set to "true".
pub fn paused(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> bool {
    meta.annotations
        .as_ref()
        .and_then(|a| a.get(PAUSE_ANNOTATION))
        .is_some_and(|v| v == "true")
}
