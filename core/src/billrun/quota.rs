//! Stage 1, QuotaCheck: each charged meter's soft and hard quota against
//! the period's usage. Exceeding a soft quota flags the line; exceeding a
//! hard quota flags it and caps the quantity Rate prices (the overage is
//! recorded, not billed).

use std::collections::BTreeMap;

use rust_decimal::Decimal;

use super::aggregate::fold_all;
use super::{Draft, Inputs, QuotaState, decimal};

pub fn run(draft: &mut Draft, inputs: &Inputs) -> Result<(), String> {
    let with_quota: Vec<_> = inputs
        .plan
        .charges
        .iter()
        .filter_map(|c| c.quota.as_ref().map(|q| (c.meter.as_str(), q)))
        .collect();
    if with_quota.is_empty() {
        return Ok(());
    }
    let mut used: BTreeMap<&str, Decimal> = BTreeMap::new();
    for agg in fold_all(&inputs.usage) {
        if let Some(meter) = with_quota.iter().find(|(m, _)| *m == agg.key.meter) {
            *used.entry(meter.0).or_default() += agg.quantity;
        }
    }
    for (meter, quota) in with_quota {
        let at = |field: &str| {
            format!(
                "rate plan {:?} meter {meter:?} quota.{field}",
                inputs.rate_plan
            )
        };
        let state = QuotaState {
            soft: quota
                .soft
                .as_ref()
                .map(|q| decimal(&at("soft"), q.as_str()))
                .transpose()?,
            hard: quota
                .hard
                .as_ref()
                .map(|q| decimal(&at("hard"), q.as_str()))
                .transpose()?,
            used: used.get(meter).copied().unwrap_or_default(),
        };
        draft.quotas.insert(meter.to_owned(), state);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::*;
    use super::*;
    use rust_decimal_macros::dec;

    #[test]
    fn usage_is_checked_against_soft_and_hard_quotas() {
        let plan = plan_per_unit("1", Some(("10", "15")));
        let items = (1..=12).map(|i| sum_item(i, "api", dec!(1))).collect();
        let mut draft = Draft::new();
        run(&mut draft, &inputs_with(plan, items)).unwrap();
        let q = &draft.quotas["api"];
        assert_eq!(q.used, dec!(12));
        assert!(q.soft_exceeded());
        assert!(!q.hard_exceeded());
    }

    #[test]
    fn meters_without_quotas_are_not_checked() {
        let mut draft = Draft::new();
        run(
            &mut draft,
            &inputs_with(plan_per_unit("1", None), vec![sum_item(1, "api", dec!(1))]),
        )
        .unwrap();
        assert!(draft.quotas.is_empty());
    }
}
