//! Semantic validation of a set of catalog resources: what needs the other
//! resources, or exact decimals, and so cannot be a CEL rule. Shared by the
//! operator (as conditions) and by `aforo apply` (as errors).
//!
//! Every error names its resource and the field path, e.g.
//! `RatePlan/translation-pro: spec.charges[0].graduated[1].unitPrice: "0,5" is not a decimal`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::str::FromStr;

use chrono::DateTime;
use kube::Resource as _;
use rust_decimal::Decimal;

use crate::catalog::*;
use crate::currency;

/// One thing wrong with one resource.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CatalogError {
    pub kind: String,
    pub name: String,
    /// Path of the offending field, e.g. `spec.charges[0].meter`.
    pub field: String,
    pub message: String,
}

impl fmt::Display for CatalogError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.field.is_empty() {
            write!(f, "{}/{}: {}", self.kind, self.name, self.message)
        } else {
            write!(
                f,
                "{}/{}: {}: {}",
                self.kind, self.name, self.field, self.message
            )
        }
    }
}

/// Collects the errors of one resource.
struct Report<'a> {
    kind: &'static str,
    name: &'a str,
    errors: &'a mut Vec<CatalogError>,
}

impl Report<'_> {
    fn error(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.errors.push(CatalogError {
            kind: self.kind.to_owned(),
            name: self.name.to_owned(),
            field: field.into(),
            message: message.into(),
        });
    }

    fn decimal(&mut self, field: &str, value: &DecimalString) -> Option<Decimal> {
        match Decimal::from_str(value.as_str()) {
            Ok(d) if d.is_sign_negative() => {
                self.error(field, format!("{:?} is negative", value.as_str()));
                None
            }
            Ok(d) => Some(d),
            Err(_) => {
                self.error(
                    field,
                    format!("{:?} is not a decimal number", value.as_str()),
                );
                None
            }
        }
    }

    fn json_path(&mut self, field: &str, path: &str) {
        if !path.starts_with('$') {
            self.error(
                field,
                format!("{path:?} is not a JSONPath (it must start with `$`)"),
            );
        }
    }

    /// A JSONPath the webhook receiver evaluates: the full RFC 9535 grammar.
    fn rfc9535_path(&mut self, field: &str, path: &str) {
        if let Err(e) = serde_json_path::JsonPath::parse(path) {
            self.error(field, format!("{path:?} is not an RFC 9535 JSONPath: {e}"));
        }
    }

    fn time(&mut self, field: &str, text: &str) {
        if DateTime::parse_from_rfc3339(text).is_err() {
            self.error(
                field,
                format!("{text:?} is not an RFC 3339 time, e.g. 2026-12-01T00:00:00Z"),
            );
        }
    }
}

/// Runs a resource's CEL rules locally: standalone has no apiserver to run
/// them at admission, and the operator wants them as conditions too.
fn cel(resource: &Resource, report: &mut Report<'_>) {
    let result = match resource {
        Resource::Meter(r) => r.validate_cel(),
        Resource::Product(r) => r.validate_cel(),
        Resource::RatePlan(r) => r.validate_cel(),
        Resource::WebhookSource(r) => r.validate_cel(),
        Resource::UsageAlert(r) => r.validate_cel(),
        Resource::MeteringPipeline(r) => r.validate_cel(),
    };
    if let Err(errors) = result {
        for e in errors.into_vec() {
            report.error(e.field_path, e.message);
        }
    }
}

/// Validates a whole set of resources; returns every error found.
pub fn validate(resources: &[Resource]) -> Vec<CatalogError> {
    let mut errors = Vec::new();
    let mut seen: BTreeSet<(&str, &str)> = BTreeSet::new();
    let mut meters: BTreeMap<&str, &MeterSpec> = BTreeMap::new();
    let mut products: BTreeMap<&str, &ProductSpec> = BTreeMap::new();
    for resource in resources {
        if !seen.insert((resource.kind(), resource.name())) {
            errors.push(CatalogError {
                kind: resource.kind().into(),
                name: resource.name().into(),
                field: "metadata.name".into(),
                message: "is declared twice".into(),
            });
        }
        match resource {
            Resource::Meter(m) => {
                meters.insert(resource.name(), &m.spec);
            }
            Resource::Product(p) => {
                products.insert(resource.name(), &p.spec);
            }
            _ => {}
        }
    }

    for resource in resources {
        let mut report = Report {
            kind: resource.kind(),
            name: resource.name(),
            errors: &mut errors,
        };
        cel(resource, &mut report);
        match resource {
            Resource::Meter(m) => meter(&m.spec, &mut report),
            Resource::Product(p) => {
                for (i, name) in p.spec.meters.iter().enumerate() {
                    if !meters.contains_key(name.as_str()) {
                        report.error(
                            format!("spec.meters[{i}]"),
                            format!("no Meter named {name:?}"),
                        );
                    }
                }
            }
            Resource::RatePlan(r) => rate_plan(&r.spec, &meters, &products, &mut report),
            Resource::WebhookSource(w) => webhook_source(&w.spec, &mut report),
            Resource::UsageAlert(a) => {
                for (i, name) in a.spec.selector.meters.iter().enumerate() {
                    if !meters.contains_key(name.as_str()) {
                        report.error(
                            format!("spec.selector.meters[{i}]"),
                            format!("no Meter named {name:?}"),
                        );
                    }
                }
                for (i, name) in a.spec.selector.products.iter().enumerate() {
                    if !products.contains_key(name.as_str()) {
                        report.error(
                            format!("spec.selector.products[{i}]"),
                            format!("no Product named {name:?}"),
                        );
                    }
                }
                for (i, t) in a.spec.thresholds.iter().enumerate() {
                    report.decimal(&format!("spec.thresholds[{i}]"), t);
                }
            }
            Resource::MeteringPipeline(p) => {
                if p.meta().namespace.is_none() && p.spec.image.is_empty() {
                    report.error("spec.image", "is required");
                }
            }
        }
    }
    errors
}

fn meter(spec: &MeterSpec, report: &mut Report<'_>) {
    if let Some(path) = &spec.value_property {
        report.json_path("spec.valueProperty", path);
    }
    for (name, path) in &spec.group_by {
        report.json_path(&format!("spec.groupBy.{name}"), path);
    }
    let mut names = BTreeSet::new();
    for (i, p) in spec.required_properties.iter().enumerate() {
        if !names.insert(p.name.as_str()) {
            report.error(
                format!("spec.requiredProperties[{i}].name"),
                format!("{:?} is listed twice", p.name),
            );
        }
    }
    if let Some(cost) = &spec.unit_cost {
        report.decimal("spec.unitCost", cost);
        match spec.cost_currency.as_deref() {
            None => report.error("spec.costCurrency", "is required with unitCost"),
            Some(code) if currency::minor_units(code).is_none() => report.error(
                "spec.costCurrency",
                format!("{code:?} is not a known ISO 4217 currency"),
            ),
            Some(_) => {}
        }
    }
}

fn tiers(field: &str, tiers: &[Tier], report: &mut Report<'_>) {
    let mut previous: Option<Decimal> = None;
    for (i, tier) in tiers.iter().enumerate() {
        report.decimal(&format!("{field}[{i}].unitPrice"), &tier.unit_price);
        if let Some(fee) = &tier.flat_fee {
            report.decimal(&format!("{field}[{i}].flatFee"), fee);
        }
        if let Some(up_to) = &tier.up_to {
            let Some(bound) = report.decimal(&format!("{field}[{i}].upTo"), up_to) else {
                continue;
            };
            if bound.is_zero() {
                report.error(format!("{field}[{i}].upTo"), "must be greater than 0");
            }
            if let Some(p) = previous.filter(|p| bound <= *p) {
                report.error(
                    format!("{field}[{i}].upTo"),
                    format!("{bound} does not exceed the previous tier's {p}; tiers must increase strictly"),
                );
            }
            previous = Some(bound);
        }
    }
}

fn rate_plan(
    spec: &RatePlanSpec,
    meters: &BTreeMap<&str, &MeterSpec>,
    products: &BTreeMap<&str, &ProductSpec>,
    report: &mut Report<'_>,
) {
    let product = products.get(spec.product_ref.as_str());
    if product.is_none() {
        report.error(
            "spec.productRef",
            format!("no Product named {:?}", spec.product_ref),
        );
    }
    if currency::minor_units(&spec.currency).is_none() {
        report.error(
            "spec.currency",
            format!("{:?} is not a known ISO 4217 currency", spec.currency),
        );
    }
    if let Some(day) = spec.billing_anchor_day
        && !(1..=31).contains(&day)
    {
        report.error(
            "spec.billingAnchorDay",
            format!("{day} is not a day of the month (1–31)"),
        );
    }
    report.time("spec.effectiveFrom", &spec.effective_from);
    for (i, fee) in spec.recurring_fees.iter().enumerate() {
        report.decimal(&format!("spec.recurringFees[{i}].amount"), &fee.amount);
    }
    if let Some(minimum) = &spec.minimum_commitment {
        report.decimal("spec.minimumCommitment", minimum);
    }
    if let Some(discount) = &spec.discount {
        if let Some(percent) = &discount.percent
            && report
                .decimal("spec.discount.percent", percent)
                .is_some_and(|p| p > Decimal::ONE_HUNDRED)
        {
            report.error("spec.discount.percent", "must not exceed 100");
        }
        if let Some(amount) = &discount.amount {
            report.decimal("spec.discount.amount", amount);
        }
        let from = discount.valid_from.as_deref();
        let until = discount.valid_until.as_deref();
        if let Some(t) = from {
            report.time("spec.discount.validFrom", t);
        }
        if let Some(t) = until {
            report.time("spec.discount.validUntil", t);
        }
        if let (Some(Ok(a)), Some(Ok(b))) = (
            from.map(DateTime::parse_from_rfc3339),
            until.map(DateTime::parse_from_rfc3339),
        ) && a >= b
        {
            report.error("spec.discount.validUntil", "must be after validFrom");
        }
    }
    for (i, charge) in spec.charges.iter().enumerate() {
        let at = format!("spec.charges[{i}]");
        if !meters.contains_key(charge.meter.as_str()) {
            report.error(
                format!("{at}.meter"),
                format!("no Meter named {:?}", charge.meter),
            );
        } else if let Some(p) = product
            && !p.meters.contains(&charge.meter)
        {
            report.error(
                format!("{at}.meter"),
                format!(
                    "Meter {:?} is not one of Product {:?}'s meters",
                    charge.meter, spec.product_ref
                ),
            );
        }
        if let Some(flat) = &charge.flat {
            report.decimal(&format!("{at}.flat.amount"), &flat.amount);
        }
        if let Some(per_unit) = &charge.per_unit {
            report.decimal(&format!("{at}.perUnit.unitPrice"), &per_unit.unit_price);
            if let Some(by) = &per_unit.by_dimension {
                let dimensions = meters.get(charge.meter.as_str()).map(|m| &m.group_by);
                if dimensions.is_some_and(|d| !d.contains_key(&by.dimension)) {
                    report.error(
                        format!("{at}.perUnit.byDimension.dimension"),
                        format!(
                            "{:?} is not a groupBy dimension of Meter {:?}",
                            by.dimension, charge.meter
                        ),
                    );
                }
                for (value, price) in &by.prices {
                    report.decimal(&format!("{at}.perUnit.byDimension.prices.{value}"), price);
                }
            }
        }
        if let Some(package) = &charge.package {
            if report
                .decimal(&format!("{at}.package.size"), &package.size)
                .is_some_and(|s| s.is_zero())
            {
                report.error(format!("{at}.package.size"), "must be greater than 0");
            }
            report.decimal(&format!("{at}.package.price"), &package.price);
        }
        if let Some(graduated) = &charge.graduated {
            tiers(&format!("{at}.graduated"), graduated, report);
        }
        if let Some(volume) = &charge.volume {
            tiers(&format!("{at}.volume"), volume, report);
        }
        if let Some(pct) = &charge.percentage {
            if report
                .decimal(&format!("{at}.percentage.percent"), &pct.percent)
                .is_some_and(|p| p > Decimal::ONE_HUNDRED)
            {
                report.error(format!("{at}.percentage.percent"), "must not exceed 100");
            }
            let min = pct
                .min
                .as_ref()
                .and_then(|m| report.decimal(&format!("{at}.percentage.min"), m));
            let max = pct
                .max
                .as_ref()
                .and_then(|m| report.decimal(&format!("{at}.percentage.max"), m));
            if let Some(fee) = &pct.fixed_fee {
                report.decimal(&format!("{at}.percentage.fixedFee"), fee);
            }
            if let (Some(min), Some(max)) = (min, max)
                && min > max
            {
                report.error(
                    format!("{at}.percentage.min"),
                    format!("{min} exceeds max {max}"),
                );
            }
        }
        if let Some(included) = &charge.included_units {
            report.decimal(&format!("{at}.includedUnits"), included);
        }
        if let Some(rollover) = &charge.rollover
            && let Some(max) = &rollover.max_units
        {
            report.decimal(&format!("{at}.rollover.maxUnits"), max);
        }
        if let Some(quota) = &charge.quota {
            let soft = quota
                .soft
                .as_ref()
                .and_then(|q| report.decimal(&format!("{at}.quota.soft"), q));
            let hard = quota
                .hard
                .as_ref()
                .and_then(|q| report.decimal(&format!("{at}.quota.hard"), q));
            if let (Some(soft), Some(hard)) = (soft, hard)
                && soft > hard
            {
                report.error(
                    format!("{at}.quota.soft"),
                    format!("{soft} exceeds the hard quota {hard}"),
                );
            }
        }
    }
}

fn webhook_source(spec: &WebhookSourceSpec, report: &mut Report<'_>) {
    if spec.provider == Provider::Hmac && spec.signature_header.is_none() {
        report.error(
            "spec.signatureHeader",
            "the hmac provider needs the name of the header that carries the signature",
        );
    }
    if let Some(url) = &spec.public_url
        && !(url.starts_with("https://") || url.starts_with("http://"))
    {
        report.error(
            "spec.publicUrl",
            format!("{url:?} is not an http:// or https:// URL"),
        );
    }
    if let Err(reason) = crate::duration::parse(&spec.tolerance) {
        report.error("spec.tolerance", reason);
    }
    for (i, m) in spec.mappings.iter().enumerate() {
        let at = format!("spec.mappings[{i}]");
        for (field, path) in [
            ("filter", m.filter.as_deref()),
            ("forEach", m.for_each.as_deref()),
            ("id", m.id.as_deref()),
            ("customer", Some(m.customer.as_str())),
            ("time", m.time.as_deref()),
            ("value", m.value.as_deref()),
            (
                "type",
                Some(m.event_type.as_str()).filter(|t| t.starts_with('$')),
            ),
        ] {
            if let Some(path) = path {
                report.rfc9535_path(&format!("{at}.{field}"), path);
            }
        }
        for (name, path) in &m.properties {
            report.rfc9535_path(&format!("{at}.properties.{name}"), path);
        }
    }
}
