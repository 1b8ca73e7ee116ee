//! Stage 4, Allowance: the included units each usage line gets. Every line
//! has its charge's `includedUnits` (as the RevenueEstimator prices it);
//! units rolled over from earlier periods are used next, oldest first, by
//! the meter's lines in order. What stays unused rolls out, when the charge
//! has a rollover policy: the remaining carried buckets plus this period's
//! unused included units, expiring `expiresAfterPeriods` later, capped at
//! `maxUnits`.

use rust_decimal::Decimal;

use super::rollover::cap;
use super::{Draft, Inputs, RolloverBucket, decimal};

pub fn run(draft: &mut Draft, inputs: &Inputs) -> Result<(), String> {
    for agg in &mut draft.aggregated {
        agg.included = agg.function.included();
    }
    for charge in &inputs.plan.charges {
        let meter = &charge.meter;
        let mut buckets = draft.rollover_in.get(meter).cloned().unwrap_or_default();
        let base = charge
            .included_units
            .as_ref()
            .map(|u| decimal("includedUnits", u.as_str()))
            .transpose()?
            .unwrap_or_default();
        let mut unused = base;
        let mut any_line = false;
        for agg in draft
            .aggregated
            .iter_mut()
            .filter(|a| &a.key.meter == meter)
        {
            if !any_line {
                unused = Decimal::ZERO;
                any_line = true;
            }
            let base = agg.function.included();
            unused += (base - agg.quantity).max(Decimal::ZERO);
            let mut beyond = (agg.quantity - base).max(Decimal::ZERO);
            for bucket in buckets.iter_mut() {
                if beyond <= Decimal::ZERO {
                    break;
                }
                let used = bucket.units.min(beyond);
                bucket.units -= used;
                beyond -= used;
                agg.included += used;
            }
        }
        let Some(policy) = &charge.rollover else {
            continue;
        };
        let next = inputs.period.end;
        let mut out: Vec<RolloverBucket> = buckets
            .into_iter()
            .filter(|b| b.units > Decimal::ZERO && b.expires.is_none_or(|e| e > next))
            .collect();
        if unused > Decimal::ZERO {
            let expires = policy
                .expires_after_periods
                .map(|n| {
                    inputs
                        .calendar
                        .periods_after(inputs.period.start, n + 1)
                        .ok_or_else(|| "rollover expiry is out of range".to_owned())
                })
                .transpose()?;
            out.push(RolloverBucket {
                units: unused,
                from: inputs.period.start,
                expires,
            });
        }
        let max = policy
            .max_units
            .as_ref()
            .map(|m| decimal("rollover.maxUnits", m.as_str()))
            .transpose()?;
        let out = cap(out, max);
        if !out.is_empty() {
            draft.rollover_out.insert(meter.clone(), out);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::*;
    use super::*;
    use rust_decimal_macros::dec;

    fn billed(inputs: &Inputs, rollover_in: Vec<RolloverBucket>) -> Draft {
        let mut draft = Draft::new();
        super::super::aggregate::run(&mut draft, inputs).unwrap();
        if !rollover_in.is_empty() {
            draft.rollover_in.insert("api".into(), rollover_in);
        }
        run(&mut draft, inputs).unwrap();
        draft
    }

    #[test]
    fn rolled_over_units_extend_the_allowance_oldest_first() {
        let items = vec![sum_item(1, "api", dec!(130))];
        let inputs = inputs_with(plan_with_rollover("100", None, Some(2)), items);
        let draft = billed(
            &inputs,
            vec![
                RolloverBucket {
                    units: dec!(20),
                    from: month_start(1),
                    expires: Some(month_start(4)),
                },
                RolloverBucket {
                    units: dec!(50),
                    from: month_start(2),
                    expires: Some(month_start(5)),
                },
            ],
        );
        assert_eq!(draft.aggregated[0].included, dec!(130));
        // 30 beyond the plan's 100: January's 20, then 10 of February's 50.
        // 40 of February's are left; March used all of its own.
        assert_eq!(
            draft.rollover_out["api"],
            vec![RolloverBucket {
                units: dec!(40),
                from: month_start(2),
                expires: Some(month_start(5)),
            }]
        );
    }

    #[test]
    fn unused_included_units_roll_out_with_their_expiry() {
        let items = vec![sum_item(1, "api", dec!(30))];
        let inputs = inputs_with(plan_with_rollover("100", Some("50"), Some(1)), items);
        let draft = billed(&inputs, vec![]);
        assert_eq!(draft.aggregated[0].included, dec!(100));
        assert_eq!(
            draft.rollover_out["api"],
            vec![RolloverBucket {
                units: dec!(50),
                from: month_start(3),
                expires: Some(month_start(5)),
            }]
        );
    }

    #[test]
    fn a_meter_without_usage_rolls_out_its_whole_allowance() {
        let inputs = inputs_with(plan_with_rollover("100", None, None), vec![]);
        let draft = billed(&inputs, vec![]);
        assert_eq!(draft.rollover_out["api"][0].units, dec!(100));
        assert_eq!(draft.rollover_out["api"][0].expires, None);
    }
}
