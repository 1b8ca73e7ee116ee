use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::common::CatalogStatus;

/// What is sold: a named set of meters that rate plans price.
#[derive(CustomResource, KubeSchema, Clone, Debug, PartialEq, Serialize, Deserialize)]
#[kube(
    group = "aforo.io",
    version = "v1alpha1",
    kind = "Product",
    namespaced,
    status = "CatalogStatus",
    shortname = "prod",
    category = "aforo",
    cel,
    doc = "A Product is what is sold: a set of meters that rate plans price.",
    printcolumn(
        name = "Display Name",
        type_ = "string",
        json_path = ".spec.displayName"
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
pub struct ProductSpec {
    #[schemars(length(min = 1, max = 128))]
    pub display_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Names of the Meters (in this namespace) this product bills.
    // The apiserver refuses a CEL rule whose estimated cost is over budget;
    // comparing every pair of names is affordable only with both the list
    // and each name (an object name, at most 253 characters) bounded.
    #[x_kube(validation = Rule::new("self.all(m, self.exists_one(n, n == m))").message("meters must not repeat"))]
    #[schemars(length(min = 1, max = 64), inner(length(min = 1, max = 253)))]
    pub meters: Vec<String>,
}
