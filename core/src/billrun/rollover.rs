//! Stage 2, Rollover: included units left unused in earlier periods, carried
//! in from the previous invoice. Only meters whose charge (in the plan in
//! force now) has a rollover policy take them; expired buckets are dropped
//! and the total is capped at the policy's `maxUnits`, oldest units kept
//! first (they are used first, too).

use rust_decimal::Decimal;

use super::{Draft, Inputs, RolloverBucket, decimal};

/// Caps buckets (oldest first) at `max` units in all.
pub fn cap(buckets: Vec<RolloverBucket>, max: Option<Decimal>) -> Vec<RolloverBucket> {
    let Some(mut room) = max else {
        return buckets;
    };
    let mut kept = Vec::new();
    for mut bucket in buckets {
        if room <= Decimal::ZERO {
            break;
        }
        bucket.units = bucket.units.min(room);
        room -= bucket.units;
        kept.push(bucket);
    }
    kept
}

pub fn run(draft: &mut Draft, inputs: &Inputs) -> Result<(), String> {
    let Some(previous) = &inputs.previous else {
        return Ok(());
    };
    for charge in &inputs.plan.charges {
        let Some(policy) = &charge.rollover else {
            continue;
        };
        let Some(carried) = previous.rollover.get(&charge.meter) else {
            continue;
        };
        let max = policy
            .max_units
            .as_ref()
            .map(|m| decimal("rollover.maxUnits", m.as_str()))
            .transpose()?;
        let live: Vec<RolloverBucket> = carried
            .iter()
            .filter(|b| b.units > Decimal::ZERO)
            .filter(|b| b.expires.is_none_or(|e| e > inputs.period.start))
            .cloned()
            .collect();
        let live = cap(live, max);
        if !live.is_empty() {
            draft.rollover_in.insert(charge.meter.clone(), live);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::*;
    use super::*;
    use rust_decimal_macros::dec;

    fn bucket(units: Decimal, month: u32, expires: Option<u32>) -> RolloverBucket {
        RolloverBucket {
            units,
            from: month_start(month),
            expires: expires.map(month_start),
        }
    }

    #[test]
    fn live_buckets_carry_in_and_expired_ones_do_not() {
        let mut inputs = inputs_with(plan_with_rollover("100", Some("150"), Some(2)), vec![]);
        let mut previous = invoice_stub();
        previous.rollover.insert(
            "api".into(),
            vec![
                bucket(dec!(40), 1, Some(3)), // expires at this period's start (March)
                bucket(dec!(60), 2, Some(4)),
            ],
        );
        inputs.previous = Some(previous);
        let mut draft = Draft::new();
        run(&mut draft, &inputs).unwrap();
        assert_eq!(draft.rollover_in["api"], vec![bucket(dec!(60), 2, Some(4))]);
    }

    #[test]
    fn the_cap_keeps_the_oldest_units() {
        let capped = cap(
            vec![bucket(dec!(100), 1, None), bucket(dec!(100), 2, None)],
            Some(dec!(150)),
        );
        assert_eq!(
            capped,
            vec![bucket(dec!(100), 1, None), bucket(dec!(50), 2, None)]
        );
    }
}
