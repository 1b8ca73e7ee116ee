//! Stage 8, Tax: one tax line at the rate configured for the plan's tax
//! class in the customer's tax region (or the class's `*` fallback), on
//! everything the invoice charges so far. A plan without a tax class is not
//! taxed; a class with no rate for the region fails the subscription (with
//! the class and region named) instead of guessing zero. Without any tax
//! configuration, taxed plans are invoiced without tax and the invoice is
//! flagged UNTAXED.
//!
//! The configuration is a YAML (or JSON) file:
//!
//! ```yaml
//! rates:
//!   - class: digital-services
//!     region: DE
//!     percent: "19"
//!   - class: digital-services
//!     region: "*"
//!     percent: "0"
//! ```

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use super::{Draft, Inputs, Line, LineKind};
use crate::pricing::rounding::round_line;

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaxTable {
    #[serde(default)]
    pub rates: Vec<TaxRate>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaxRate {
    pub class: String,
    /// A customer tax region (e.g. "DE", "US-CA"), or "*" for any.
    pub region: String,
    /// Percent, as a decimal string: "19", "7.25".
    #[serde(with = "rust_decimal::serde::str")]
    pub percent: Decimal,
}

impl TaxTable {
    /// Parses a tax configuration, checking that rates are sane and unique.
    pub fn parse(text: &str) -> Result<Self, String> {
        let table: TaxTable = serde_yaml_ng::from_str(text)
            .map_err(|e| format!("the tax configuration is not valid: {e}"))?;
        let mut seen = std::collections::BTreeSet::new();
        for rate in &table.rates {
            if rate.percent < Decimal::ZERO || rate.percent > Decimal::ONE_HUNDRED {
                return Err(format!(
                    "tax rate for class {:?} in region {:?} is {}%; it must be between 0 and 100",
                    rate.class, rate.region, rate.percent
                ));
            }
            if !seen.insert((rate.class.as_str(), rate.region.as_str())) {
                return Err(format!(
                    "class {:?} has two rates for region {:?}",
                    rate.class, rate.region
                ));
            }
        }
        Ok(table)
    }

    /// The rate for a class in a region, falling back to the class's "*".
    pub fn rate(&self, class: &str, region: Option<&str>) -> Option<&TaxRate> {
        let exact = region.and_then(|r| {
            self.rates
                .iter()
                .find(|t| t.class == class && t.region == r)
        });
        exact.or_else(|| {
            self.rates
                .iter()
                .find(|t| t.class == class && t.region == "*")
        })
    }
}

pub fn run(draft: &mut Draft, inputs: &Inputs) -> Result<(), String> {
    let Some(class) = &inputs.plan.tax_class else {
        return Ok(());
    };
    let Some(table) = &inputs.tax else {
        draft.flags.push("UNTAXED".to_owned());
        return Ok(());
    };
    let region = inputs.tax_region.as_deref();
    let rate = table.rate(class, region).ok_or_else(|| {
        format!(
            "no tax rate for class {class:?} in region {} and no \"*\" fallback; add one to the tax configuration",
            region.map_or("(none: the customer has no tax region)".to_owned(), |r| format!("{r:?}"))
        )
    })?;
    let base: Decimal = draft.lines.iter().map(|l| l.amount).sum();
    let unrounded = base * rate.percent / Decimal::ONE_HUNDRED;
    let currency = &inputs.plan.currency;
    let amount = round_line(unrounded, currency)
        .ok_or_else(|| format!("currency {currency:?} has no known minor units"))?;
    draft.lines.push(Line {
        number: 0,
        kind: LineKind::Tax,
        description: format!("tax {}% ({class}, {})", rate.percent, rate.region),
        key: None,
        rate_plan: None,
        catalog_version: None,
        period: inputs.period,
        quantity: base,
        included: Decimal::ZERO,
        hard_limit: None,
        amount_unrounded: unrounded,
        amount,
        flags: Vec::new(),
        event_count: 0,
        merkle_root: None,
        events: Vec::new(),
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::*;
    use super::*;
    use rust_decimal_macros::dec;
    use std::sync::Arc;

    const TABLE: &str = "rates:\n  - {class: digital, region: DE, percent: \"19\"}\n  - {class: digital, region: \"*\", percent: \"0\"}\n";

    fn taxed(region: Option<&str>, table: &str) -> Result<Draft, String> {
        let mut plan = plan_per_unit("1", None);
        plan.tax_class = Some("digital".into());
        let mut inputs = inputs_with(plan, vec![]);
        inputs.tax_region = region.map(str::to_owned);
        inputs.tax = Some(Arc::new(TaxTable::parse(table)?));
        let mut draft = Draft::new();
        draft.lines.push(usage_line(dec!(100.05)));
        run(&mut draft, &inputs)?;
        Ok(draft)
    }

    #[test]
    fn the_region_rate_applies_and_rounds_once() {
        let draft = taxed(Some("DE"), TABLE).unwrap();
        assert_eq!(draft.lines[1].amount_unrounded, dec!(19.0095));
        assert_eq!(draft.lines[1].amount, dec!(19.01));
    }

    #[test]
    fn other_regions_take_the_fallback() {
        let draft = taxed(Some("FR"), TABLE).unwrap();
        assert_eq!(draft.lines[1].amount, dec!(0));
    }

    #[test]
    fn a_missing_rate_fails_with_class_and_region() {
        let err = taxed(
            Some("FR"),
            "rates:\n  - {class: digital, region: DE, percent: \"19\"}\n",
        )
        .unwrap_err();
        assert!(
            err.contains("\"digital\"") && err.contains("\"FR\""),
            "{err}"
        );
    }

    #[test]
    fn without_a_configuration_taxed_plans_are_flagged_untaxed() {
        let mut plan = plan_per_unit("1", None);
        plan.tax_class = Some("digital".into());
        let inputs = inputs_with(plan, vec![]);
        let mut draft = Draft::new();
        run(&mut draft, &inputs).unwrap();
        assert!(draft.lines.is_empty());
        assert_eq!(draft.flags, vec!["UNTAXED"]);
    }

    #[test]
    fn bad_configurations_are_refused() {
        assert!(TaxTable::parse("rates:\n  - {class: a, region: DE, percent: \"120\"}\n").is_err());
        assert!(TaxTable::parse("rates:\n  - {class: a, region: DE, percent: \"1\"}\n  - {class: a, region: DE, percent: \"2\"}\n").is_err());
        assert!(TaxTable::parse("rate: []\n").is_err());
    }
}
