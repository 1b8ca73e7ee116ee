use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::common::{CatalogStatus, DecimalString};

/// How often a subscription is billed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum BillingPeriod {
    Monthly,
    Quarterly,
    Yearly,
}

/// A fee charged every period whatever the usage.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RecurringFee {
    #[schemars(length(min = 1, max = 128))]
    pub name: String,
    pub amount: DecimalString,
}

/// A fixed amount per period once the meter has any usage.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FlatCharge {
    pub amount: DecimalString,
}

/// A price per unit; optionally a different price per value of one of the
/// meter's `groupBy` dimensions (e.g. per MCP tool), `unitPrice` for the rest.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PerUnitCharge {
    pub unit_price: DecimalString,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by_dimension: Option<DimensionPrices>,
}

/// Unit prices by the value of one dimension.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DimensionPrices {
    /// A `groupBy` name of the charged meter.
    pub dimension: String,
    /// Dimension value → unit price.
    pub prices: std::collections::BTreeMap<String, DecimalString>,
}

/// A price per started package of `size` units.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PackageCharge {
    pub size: DecimalString,
    pub price: DecimalString,
}

/// One tier of a graduated or volume charge. The last tier has no `upTo`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Tier {
    /// Upper bound (inclusive) of the tier's quantity; absent on the last tier.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub up_to: Option<DecimalString>,
    pub unit_price: DecimalString,
    /// A fixed fee for reaching this tier.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flat_fee: Option<DecimalString>,
}

/// A percentage of an amount carried by each event, e.g. a payment fee.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[x_kube(validation = Rule::new("!has(self.min) || !has(self.max) || double(self.min) <= double(self.max)").message("min must not exceed max").field_path(".min"))]
#[serde(rename_all = "camelCase")]
pub struct PercentageCharge {
    /// The percentage, e.g. "2.9" for 2.9 %.
    pub percent: DecimalString,
    /// Top-level property holding each event's amount.
    #[schemars(length(min = 1, max = 128))]
    pub amount_property: String,
    /// A fixed fee added to every event, e.g. "0.30".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fixed_fee: Option<DecimalString>,
    /// Least charged per event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<DecimalString>,
    /// Most charged per event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<DecimalString>,
}

/// Unused included units carried into the next period.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Rollover {
    /// The most units carried over.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_units: Option<DecimalString>,
    /// Carried units expire after this many periods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 36))]
    pub expires_after_periods: Option<u32>,
}

/// Limits on one meter's usage per period.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[x_kube(validation = Rule::new("!has(self.soft) || !has(self.hard) || double(self.soft) <= double(self.hard)").message("the soft quota must not exceed the hard quota").field_path(".soft"))]
#[x_kube(validation = Rule::new("has(self.soft) || has(self.hard)").message("a quota needs soft, hard or both"))]
#[serde(rename_all = "camelCase")]
pub struct Quota {
    /// Usage beyond it is billed and flagged on the invoice line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub soft: Option<DecimalString>,
    /// Usage beyond it is not billed: the bill run prices at most this
    /// quantity and flags the overage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hard: Option<DecimalString>,
}

/// How one meter is priced: exactly one model.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[x_kube(validation = Rule::new("[has(self.flat), has(self.perUnit), has(self.package), has(self.graduated), has(self.volume), has(self.percentage)].filter(x, x).size() == 1").message("a charge has exactly one of flat, perUnit, package, graduated, volume, percentage"))]
#[x_kube(validation = Rule::new("!has(self.rollover) || has(self.includedUnits)").message("rollover needs includedUnits").field_path(".rollover"))]
#[serde(rename_all = "camelCase")]
pub struct Charge {
    /// Name of the Meter priced.
    #[schemars(length(min = 1, max = 253))]
    pub meter: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flat: Option<FlatCharge>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_unit: Option<PerUnitCharge>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub package: Option<PackageCharge>,
    /// Each unit priced by the tier it falls in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.size() > 0 && !has(self[self.size() - 1].upTo) && self.filter(t, !has(t.upTo)).size() == 1").message("tiers need an unbounded last tier (no upTo) and only that one"))]
    #[x_kube(validation = Rule::new("self.all(a, !has(a.upTo) || self.exists_one(b, has(b.upTo) && double(b.upTo) == double(a.upTo)))").message("tier bounds must be distinct"))]
    #[x_kube(validation = Rule::new("self.filter(t, has(t.upTo)).map(t, double(t.upTo)).isSorted()").message("tiers must be in increasing order of upTo"))]
    #[schemars(length(max = 16))]
    pub graduated: Option<Vec<Tier>>,
    /// All units priced by the tier the total falls in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.size() > 0 && !has(self[self.size() - 1].upTo) && self.filter(t, !has(t.upTo)).size() == 1").message("tiers need an unbounded last tier (no upTo) and only that one"))]
    #[x_kube(validation = Rule::new("self.all(a, !has(a.upTo) || self.exists_one(b, has(b.upTo) && double(b.upTo) == double(a.upTo)))").message("tier bounds must be distinct"))]
    #[x_kube(validation = Rule::new("self.filter(t, has(t.upTo)).map(t, double(t.upTo)).isSorted()").message("tiers must be in increasing order of upTo"))]
    #[schemars(length(max = 16))]
    pub volume: Option<Vec<Tier>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percentage: Option<PercentageCharge>,
    /// Units each period includes before the price applies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub included_units: Option<DecimalString>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollover: Option<Rollover>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quota: Option<Quota>,
}

/// A discount on the plan's invoice total.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[x_kube(validation = Rule::new("has(self.percent) != has(self.amount)").message("a discount has exactly one of percent and amount"))]
#[serde(rename_all = "camelCase")]
pub struct Discount {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percent: Option<DecimalString>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub amount: Option<DecimalString>,
    /// RFC 3339; the discount applies to periods starting at or after it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub valid_from: Option<String>,
    /// RFC 3339; the discount applies to periods starting before it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub valid_until: Option<String>,
}

/// How a product is priced, from a moment on.
#[derive(CustomResource, KubeSchema, Clone, Debug, PartialEq, Serialize, Deserialize)]
#[kube(
    group = "aforo.io",
    version = "v1alpha1",
    kind = "RatePlan",
    namespaced,
    status = "CatalogStatus",
    shortname = "rp",
    category = "aforo",
    cel,
    doc = "A RatePlan prices a Product's meters in one currency, from effectiveFrom on.",
    printcolumn(name = "Product", type_ = "string", json_path = ".spec.productRef"),
    printcolumn(name = "Currency", type_ = "string", json_path = ".spec.currency"),
    printcolumn(
        name = "Effective From",
        type_ = "string",
        json_path = ".spec.effectiveFrom"
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
pub struct RatePlanSpec {
    /// Name of the Product priced.
    #[schemars(length(min = 1, max = 253))]
    pub product_ref: String,
    /// ISO 4217 code, e.g. EUR.
    #[schemars(regex(pattern = r"^[A-Z]{3}$"))]
    pub currency: String,
    pub billing_period: BillingPeriod,
    /// Day of the month periods start on (1–31; months shorter than it start
    /// their period on their last day), for subscriptions that set none;
    /// default: the subscription's start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 31))]
    pub billing_anchor_day: Option<u8>,
    /// RFC 3339 time from which this plan prices events.
    #[schemars(length(min = 1, max = 64))]
    pub effective_from: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub recurring_fees: Vec<RecurringFee>,
    #[x_kube(validation = Rule::new("self.all(c, self.exists_one(d, d.meter == c.meter))").message("each meter is charged once per plan"))]
    #[schemars(length(max = 64))]
    pub charges: Vec<Charge>,
    /// The least billed per period; a shortfall becomes a true-up line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub minimum_commitment: Option<DecimalString>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub discount: Option<Discount>,
    /// Tax class looked up in the tax configuration, e.g. "digital-services".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tax_class: Option<String>,
}
