//! Stage 7, Discount: the plan's discount and the subscription's own,
//! each applied when valid for the period (valid from at or before the
//! period's start, valid until after it). Percentages apply first, to the
//! period's charges (usage, recurring fees, commitment true-up); fixed
//! amounts after, never taking the period's charges below zero.
//! Adjustments of earlier periods are not discounted again.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use super::{Draft, Inputs, Line, LineKind, decimal};
use crate::pricing::rounding::round_line;

/// A discount, from the plan or granted to a subscription.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DiscountTerm {
    /// "plan" or "subscription".
    pub source: String,
    pub percent: Option<Decimal>,
    pub amount: Option<Decimal>,
    pub valid_from: Option<DateTime<Utc>>,
    pub valid_until: Option<DateTime<Utc>>,
}

impl DiscountTerm {
    pub fn valid_at(&self, t: DateTime<Utc>) -> bool {
        self.valid_from.is_none_or(|f| f <= t) && self.valid_until.is_none_or(|u| t < u)
    }
}

fn plan_term(inputs: &Inputs) -> Result<Option<DiscountTerm>, String> {
    let Some(d) = &inputs.plan.discount else {
        return Ok(None);
    };
    let time = |field: &str, v: &Option<String>| {
        v.as_deref()
            .map(|s| {
                DateTime::parse_from_rfc3339(s)
                    .map(|t| t.with_timezone(&Utc))
                    .map_err(|_| format!("discount.{field} {s:?} is not an RFC 3339 time"))
            })
            .transpose()
    };
    Ok(Some(DiscountTerm {
        source: "plan".into(),
        percent: d
            .percent
            .as_ref()
            .map(|p| decimal("discount.percent", p.as_str()))
            .transpose()?,
        amount: d
            .amount
            .as_ref()
            .map(|a| decimal("discount.amount", a.as_str()))
            .transpose()?,
        valid_from: time("validFrom", &d.valid_from)?,
        valid_until: time("validUntil", &d.valid_until)?,
    }))
}

pub fn run(draft: &mut Draft, inputs: &Inputs) -> Result<(), String> {
    let currency = &inputs.plan.currency;
    let round = |a: Decimal| {
        round_line(a, currency)
            .ok_or_else(|| format!("currency {currency:?} has no known minor units"))
    };
    let mut terms: Vec<DiscountTerm> = plan_term(inputs)?.into_iter().collect();
    terms.extend(inputs.subscription_discounts.iter().cloned());
    terms.retain(|t| t.valid_at(inputs.period.start));
    terms.sort_by_key(|t| t.percent.is_none());
    let base: Decimal = draft
        .lines
        .iter()
        .filter(|l| {
            matches!(
                l.kind,
                LineKind::Usage | LineKind::Recurring | LineKind::Commitment
            )
        })
        .map(|l| l.amount)
        .sum();
    let mut left = base.max(Decimal::ZERO);
    for term in terms {
        let (unrounded, description) = match (term.percent, term.amount) {
            (Some(p), _) => (
                base * p / Decimal::ONE_HUNDRED,
                format!("{p}% discount ({})", term.source),
            ),
            (None, Some(a)) => (a, format!("{a} {currency} discount ({})", term.source)),
            (None, None) => continue,
        };
        let rounded = round(unrounded)?;
        let amount = rounded.min(left);
        let unrounded = if rounded > left { amount } else { unrounded };
        if amount <= Decimal::ZERO {
            continue;
        }
        left -= amount;
        draft.lines.push(Line {
            number: 0,
            kind: LineKind::Discount,
            description,
            key: None,
            rate_plan: Some(inputs.rate_plan.clone()),
            catalog_version: Some(inputs.catalog_version),
            period: inputs.period,
            quantity: Decimal::ONE,
            included: Decimal::ZERO,
            hard_limit: None,
            amount_unrounded: -unrounded,
            amount: -amount,
            flags: Vec::new(),
            event_count: 0,
            merkle_root: None,
            events: Vec::new(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::*;
    use super::*;
    use aforo_crds::catalog::{DecimalString, Discount};
    use rust_decimal_macros::dec;

    #[test]
    fn percent_then_fixed_never_below_zero() {
        let mut plan = plan_per_unit("1", None);
        plan.discount = Some(Discount {
            percent: Some(DecimalString::from("10")),
            amount: None,
            valid_from: None,
            valid_until: None,
        });
        let mut inputs = inputs_with(plan, vec![]);
        inputs.subscription_discounts.push(DiscountTerm {
            source: "subscription".into(),
            percent: None,
            amount: Some(dec!(500)),
            valid_from: None,
            valid_until: None,
        });
        let mut draft = Draft::new();
        draft.lines.push(usage_line(dec!(200)));
        run(&mut draft, &inputs).unwrap();
        let amounts: Vec<_> = draft.lines.iter().map(|l| l.amount).collect();
        assert_eq!(amounts, vec![dec!(200), dec!(-20), dec!(-180)]);
        assert_eq!(draft.total(), dec!(0));
    }

    #[test]
    fn expired_and_future_discounts_do_not_apply() {
        let mut inputs = inputs_with(plan_per_unit("1", None), vec![]);
        for (from, until) in [(None, Some(month_start(3))), (Some(month_start(4)), None)] {
            inputs.subscription_discounts.push(DiscountTerm {
                source: "subscription".into(),
                percent: Some(dec!(50)),
                amount: None,
                valid_from: from,
                valid_until: until,
            });
        }
        let mut draft = Draft::new();
        draft.lines.push(usage_line(dec!(200)));
        run(&mut draft, &inputs).unwrap();
        assert_eq!(draft.lines.len(), 1);
    }
}
