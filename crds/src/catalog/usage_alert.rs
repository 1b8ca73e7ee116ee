use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::common::{CatalogStatus, DecimalString, SecretKeyRef};

/// What an alert watches for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum AlertKind {
    /// Projected end-of-period usage against the included quantity.
    QuotaPacing,
    /// An hour 2σ away from the customer's rolling baseline.
    AnomalyHourly,
    /// A week-over-week drop of 50 % or more.
    AnomalyWeekly,
    /// Usage crossing fixed quantities.
    Threshold,
}

/// Which usage an alert watches; empty lists mean all.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AlertSelector {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub meters: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub products: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub customers: Vec<String>,
}

/// Where alerts go: a webhook, signed with the referenced secret.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AlertSink {
    #[schemars(regex(pattern = r"^https?://"))]
    pub url: String,
    pub secret_ref: SecretKeyRef,
}

/// When to warn, and whom.
#[derive(CustomResource, KubeSchema, Clone, Debug, PartialEq, Serialize, Deserialize)]
#[kube(
    group = "aforo.io",
    version = "v1alpha1",
    kind = "UsageAlert",
    namespaced,
    status = "CatalogStatus",
    shortname = "ua",
    category = "aforo",
    cel,
    doc = "A UsageAlert warns before quota runs out, or when usage looks wrong.",
    printcolumn(name = "Kind", type_ = "string", json_path = ".spec.kind"),
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
#[x_kube(validation = Rule::new("self.kind in ['quotaPacing', 'threshold'] ? size(self.thresholds) > 0 : size(self.thresholds) == 0").message("quotaPacing and threshold alerts need thresholds; anomaly alerts take none").field_path(".thresholds"))]
#[serde(rename_all = "camelCase")]
pub struct UsageAlertSpec {
    pub kind: AlertKind,
    #[serde(default)]
    pub selector: AlertSelector,
    /// quotaPacing: percentages of the included quantity ("80", "100", "120");
    /// threshold: quantities.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 8))]
    pub thresholds: Vec<DecimalString>,
    pub sink: AlertSink,
}
