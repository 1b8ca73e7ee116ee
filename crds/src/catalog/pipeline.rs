use k8s_openapi::api::core::v1::ResourceRequirements;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::common::SecretKeyRef;

/// Horizontal autoscaling of one role (autoscaling/v2, on CPU).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[x_kube(validation = Rule::new("self.minReplicas <= self.maxReplicas").message("minReplicas must not exceed maxReplicas").field_path(".minReplicas"))]
#[serde(rename_all = "camelCase")]
pub struct Autoscaling {
    #[schemars(range(min = 1))]
    pub min_replicas: i32,
    #[schemars(range(min = 1))]
    pub max_replicas: i32,
    /// Target average CPU utilization, percent of the request.
    #[serde(default = "default_cpu")]
    #[schemars(range(min = 1, max = 100))]
    pub target_cpu_utilization: i32,
}

fn default_cpu() -> i32 {
    70
}

/// One role of the data plane (ingest, enrich, billing).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[x_kube(validation = Rule::new("!(has(self.replicas) && has(self.autoscaling))").message("set replicas or autoscaling, not both"))]
#[serde(rename_all = "camelCase")]
pub struct RoleSpec {
    /// Fixed replica count (default 1 when autoscaling is not set).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub replicas: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoscaling: Option<Autoscaling>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
}

/// The data plane: ingest, enrich and billing Deployments on one database.
#[derive(CustomResource, KubeSchema, Clone, Debug, PartialEq, Serialize, Deserialize)]
#[kube(
    group = "aforo.io",
    version = "v1alpha1",
    kind = "MeteringPipeline",
    namespaced,
    status = "MeteringPipelineStatus",
    shortname = "mp",
    category = "aforo",
    cel,
    doc = "A MeteringPipeline runs aforo's data plane: ingest, enrich and billing.",
    printcolumn(
        name = "Image",
        type_ = "string",
        json_path = ".spec.image",
        priority = 1
    ),
    printcolumn(
        name = "Catalog",
        type_ = "integer",
        json_path = ".status.catalogVersion"
    ),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Reason",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].reason"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct MeteringPipelineSpec {
    /// The aforo container image.
    #[schemars(length(min = 1))]
    pub image: String,
    /// Secret key holding the PostgreSQL URL.
    pub database: SecretKeyRef,
    /// Secret key holding the Redis URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redis: Option<SecretKeyRef>,
    /// Secret key holding the API key of the tenant whose catalog this
    /// namespace declares: the operator applies the catalog with it.
    pub api_key: SecretKeyRef,
    #[serde(default)]
    pub ingest: RoleSpec,
    #[serde(default)]
    pub enrich: RoleSpec,
    #[serde(default)]
    pub billing: RoleSpec,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MeteringPipelineStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The catalog version applied to this pipeline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub catalog_version: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub catalog_hash: Option<String>,
}
