use std::collections::BTreeMap;

use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::common::{CatalogStatus, DecimalString};

/// How a meter turns events into a quantity.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Aggregation {
    /// Sum of the value.
    Sum,
    /// Number of events.
    Count,
    /// Largest value.
    Max,
    /// Number of distinct values.
    UniqueCount,
    /// The last value (by event time).
    Latest,
}

/// The JSON type a property must have.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum PropertyType {
    String,
    Number,
    Boolean,
    Object,
    Array,
}

/// A property every event of the meter's type must carry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RequiredProperty {
    /// Top-level property name.
    #[schemars(length(min = 1, max = 128))]
    pub name: String,
    #[serde(rename = "type")]
    pub property_type: PropertyType,
}

/// Which events count, and how they aggregate into a quantity.
#[derive(CustomResource, KubeSchema, Clone, Debug, PartialEq, Serialize, Deserialize)]
#[kube(
    group = "aforo.io",
    version = "v1alpha1",
    kind = "Meter",
    namespaced,
    status = "CatalogStatus",
    shortname = "mtr",
    category = "aforo",
    cel,
    doc = "A Meter declares which events count and how they aggregate into a billable quantity.",
    printcolumn(name = "Event Type", type_ = "string", json_path = ".spec.eventType"),
    printcolumn(
        name = "Aggregation",
        type_ = "string",
        json_path = ".spec.aggregation"
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
#[x_kube(validation = Rule::new("self.aggregation == 'COUNT' ? !has(self.valueProperty) : has(self.valueProperty)").message("valueProperty is required for SUM, MAX, UNIQUE_COUNT and LATEST, and forbidden for COUNT").field_path(".valueProperty"))]
#[serde(rename_all = "camelCase")]
pub struct MeterSpec {
    /// The event `type` this meter takes.
    #[x_kube(validation = Rule::new("self == oldSelf").message("eventType is immutable; create a new Meter"))]
    #[schemars(length(min = 1, max = 256))]
    pub event_type: String,
    /// How values aggregate over a billing period.
    #[x_kube(validation = Rule::new("self == oldSelf").message("aggregation is immutable; create a new Meter"))]
    pub aggregation: Aggregation,
    /// JSONPath (RFC 9535) into the event's properties, e.g. `$.characters`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 2, max = 256))]
    pub value_property: Option<String>,
    /// Dimensions: a name for each JSONPath whose value splits the usage.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub group_by: BTreeMap<String, String>,
    /// Properties every event of this type must carry; the schema gate checks them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub required_properties: Vec<RequiredProperty>,
    /// An expression over the event that replaces (source, id) as its idempotency key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
    /// The cost of one unit to us (COGS), in `costCurrency`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit_cost: Option<DecimalString>,
    /// ISO 4217 currency of `unitCost`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[A-Z]{3}$"))]
    pub cost_currency: Option<String>,
    /// What one unit is, for people: "character", "token", "call".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
}
