//! Stage 5, Rate: every usage line priced by the rating function the
//! RevenueEstimator prices its events with — `price(quantity)` with the
//! line's allowance, at most the hard quota — then rounded once to the
//! currency's minor units ([`crate::pricing::rounding`]). The plan's
//! recurring fees follow, then one adjustment line per line key of each
//! closed period that received late events: the price of its new total
//! minus what was billed for it, never an edit of the closed invoice.

use std::collections::BTreeMap;

use rust_decimal::Decimal;

use super::aggregate::fold_all;
use super::{Draft, Inputs, LatePeriod, Line, LineKey, LineKind, decimal};
use crate::pricing::rounding::round_line;

fn round(amount: Decimal, currency: &str) -> Result<Decimal, String> {
    round_line(amount, currency)
        .ok_or_else(|| format!("currency {currency:?} has no known minor units"))
}

fn describe(key: &LineKey) -> String {
    if key.dimension.is_empty() {
        key.meter.clone()
    } else {
        format!("{} ({})", key.meter, key.dimension)
    }
}

pub fn run(draft: &mut Draft, inputs: &Inputs) -> Result<(), String> {
    let currency = inputs.plan.currency.as_str();
    let mut hard_left: BTreeMap<String, Decimal> = draft
        .quotas
        .iter()
        .filter_map(|(m, q)| q.hard.map(|h| (m.clone(), h)))
        .collect();
    let mut lines = Vec::new();
    for agg in &mut draft.aggregated {
        let mut flags = Vec::new();
        let quota = draft.quotas.get(&agg.key.meter);
        if quota.is_some_and(|q| q.soft_exceeded()) {
            flags.push("SOFT_QUOTA_EXCEEDED".to_owned());
        }
        let mut priced = agg.quantity;
        let mut hard_limit = None;
        if let Some(left) = hard_left.get_mut(&agg.key.meter) {
            if quota.is_some_and(|q| q.hard_exceeded()) {
                flags.push("HARD_QUOTA_EXCEEDED".to_owned());
            }
            hard_limit = Some(*left);
            priced = priced.min(*left);
            *left -= priced;
        }
        let unrounded = agg.function.clone_with_included(agg.included).price(priced);
        lines.push(Line {
            number: 0,
            kind: LineKind::Usage,
            description: describe(&agg.key),
            key: Some(agg.key.clone()),
            rate_plan: Some(agg.rate_plan.clone()),
            catalog_version: Some(agg.catalog_version),
            period: inputs.period,
            quantity: agg.quantity,
            included: agg.included,
            hard_limit,
            amount_unrounded: unrounded,
            amount: round(unrounded, currency)?,
            flags,
            event_count: agg.events.len() as u64,
            merkle_root: None,
            // The line takes the events; the aggregate keeps its totals.
            events: std::mem::take(&mut agg.events),
        });
    }
    for fee in &inputs.plan.recurring_fees {
        let amount = decimal(
            &format!("recurring fee {:?}", fee.name),
            fee.amount.as_str(),
        )?;
        lines.push(Line {
            number: 0,
            kind: LineKind::Recurring,
            description: fee.name.clone(),
            key: None,
            rate_plan: Some(inputs.rate_plan.clone()),
            catalog_version: Some(inputs.catalog_version),
            period: inputs.period,
            quantity: Decimal::ONE,
            included: Decimal::ZERO,
            hard_limit: None,
            amount_unrounded: amount,
            amount: round(amount, currency)?,
            flags: Vec::new(),
            event_count: 0,
            merkle_root: None,
            events: Vec::new(),
        });
    }
    for late in &inputs.late {
        lines.extend(adjustments(late, currency)?);
    }
    draft.lines = lines;
    Ok(())
}

/// The adjustment lines of one closed period.
pub fn adjustments(late: &LatePeriod, currency: &str) -> Result<Vec<Line>, String> {
    let mut lines = Vec::new();
    for agg in fold_all(&late.items) {
        let billed: Vec<&Line> = late
            .billed
            .iter()
            .filter(|l| l.key.as_ref() == Some(&agg.key))
            .collect();
        let original = billed.first();
        let included = original.map_or(agg.function.included(), |l| l.included);
        let hard_limit = original.and_then(|l| l.hard_limit);
        let priced = hard_limit.map_or(agg.quantity, |h| agg.quantity.min(h));
        let total = agg.function.clone_with_included(included).price(priced);
        let already: Decimal = billed.iter().map(|l| l.amount_unrounded).sum();
        let events: Vec<_> = agg
            .events
            .iter()
            .filter(|(id, _)| late.late.contains(id))
            .cloned()
            .collect();
        if events.is_empty() && total == already {
            continue;
        }
        let unrounded = total - already;
        let quantity_before: Decimal = billed.iter().map(|l| l.quantity).max().unwrap_or_default();
        lines.push(Line {
            number: 0,
            kind: LineKind::Adjustment,
            description: format!(
                "{}: late usage for the period from {}",
                describe(&agg.key),
                late.period.start.format("%Y-%m-%d")
            ),
            key: Some(agg.key.clone()),
            rate_plan: Some(agg.rate_plan.clone()),
            catalog_version: Some(agg.catalog_version),
            period: late.period,
            quantity: agg.quantity - quantity_before,
            included,
            hard_limit,
            amount_unrounded: unrounded,
            amount: round(unrounded, currency)?,
            flags: vec!["LATE_EVENTS".to_owned()],
            event_count: events.len() as u64,
            merkle_root: None,
            events,
        });
    }
    Ok(lines)
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::*;
    use super::*;
    use rust_decimal_macros::dec;

    fn rated(inputs: &Inputs) -> Draft {
        let mut draft = Draft::new();
        for stage in [
            super::super::Stage::QuotaCheck,
            super::super::Stage::Rollover,
            super::super::Stage::Aggregate,
            super::super::Stage::Allowance,
            super::super::Stage::Rate,
        ] {
            stage.apply(&mut draft, inputs).unwrap();
        }
        draft
    }

    #[test]
    fn usage_lines_equal_the_sum_of_estimates_before_rounding() {
        let items = (1..=7).map(|i| sum_item(i, "api", dec!(0.333))).collect();
        let inputs = inputs_with(plan_per_unit("0.015", None), items);
        let draft = rated(&inputs);
        let line = &draft.lines[0];
        assert_eq!(line.amount_unrounded, draft.aggregated[0].estimate);
        assert_eq!(line.amount_unrounded, dec!(0.034965));
        assert_eq!(line.amount, dec!(0.03));
    }

    #[test]
    fn lines_round_to_the_invoice_currency_minor_units() {
        for (currency, expected) in [("EUR", dec!(1.17)), ("JPY", dec!(1)), ("KWD", dec!(1.166))] {
            let mut plan = plan_per_unit("0.333", None);
            plan.currency = currency.into();
            let mut inputs = inputs_with(plan, vec![sum_item(1, "api", dec!(3.5))]);
            for item in &mut inputs.usage {
                item.intent.currency = currency.into();
            }
            let line = &rated(&inputs).lines[0];
            assert_eq!(line.amount_unrounded, dec!(1.1655), "{currency}");
            assert_eq!(line.amount, expected, "{currency}");
        }
    }

    #[test]
    fn a_hard_quota_caps_the_priced_quantity_and_flags_the_line() {
        let items = (1..=20).map(|i| sum_item(i, "api", dec!(1))).collect();
        let inputs = inputs_with(plan_per_unit("1", Some(("10", "15"))), items);
        let line = &rated(&inputs).lines[0];
        assert_eq!(line.quantity, dec!(20));
        assert_eq!(line.amount, dec!(15));
        assert_eq!(
            line.flags,
            vec!["SOFT_QUOTA_EXCEEDED", "HARD_QUOTA_EXCEEDED"]
        );
    }

    #[test]
    fn late_events_become_an_adjustment_for_their_period() {
        let closed = period(2);
        let items: Vec<_> = (1..=3)
            .map(|i| at_period(sum_item(i, "api", dec!(10)), closed))
            .collect();
        let plan = plan_per_unit("0.5", None);
        let items = inputs_with(plan.clone(), items).usage;
        let billed_line = Line {
            number: 1,
            kind: LineKind::Usage,
            description: "api".into(),
            key: Some(LineKey::of(&items[0].intent)),
            rate_plan: Some("standard".into()),
            catalog_version: Some(1),
            period: closed,
            quantity: dec!(20),
            included: dec!(0),
            hard_limit: None,
            amount_unrounded: dec!(10),
            amount: dec!(10),
            flags: vec![],
            event_count: 2,
            merkle_root: None,
            events: vec![],
        };
        let late = LatePeriod {
            period: closed,
            items: items.clone(),
            late: [items[2].event].into_iter().collect(),
            billed: vec![billed_line],
        };
        let lines = adjustments(&late, &plan.currency).unwrap();
        assert_eq!(lines.len(), 1);
        assert_eq!(lines[0].kind, LineKind::Adjustment);
        assert_eq!(lines[0].amount, dec!(5));
        assert_eq!(lines[0].quantity, dec!(10));
        assert_eq!(lines[0].period, closed);
        assert_eq!(
            lines[0].events,
            vec![(items[2].event, items[2].validation_hash.clone())]
        );
    }
}
