//! Stage 6, Commit: when the period's own charges (usage and recurring
//! fees, rounded) fall short of the plan's minimum commitment, a true-up
//! line makes up the difference. Adjustments for earlier periods do not
//! count towards this period's commitment.

use rust_decimal::Decimal;

use super::{Draft, Inputs, Line, LineKind, decimal};
use crate::pricing::rounding::round_line;

pub fn run(draft: &mut Draft, inputs: &Inputs) -> Result<(), String> {
    let Some(minimum) = &inputs.plan.minimum_commitment else {
        return Ok(());
    };
    let currency = &inputs.plan.currency;
    let minimum = decimal("minimumCommitment", minimum.as_str())?;
    let minimum = round_line(minimum, currency)
        .ok_or_else(|| format!("currency {currency:?} has no known minor units"))?;
    let charged: Decimal = draft
        .lines
        .iter()
        .filter(|l| matches!(l.kind, LineKind::Usage | LineKind::Recurring))
        .map(|l| l.amount)
        .sum();
    if charged >= minimum {
        return Ok(());
    }
    let shortfall = minimum - charged;
    draft.lines.push(Line {
        number: 0,
        kind: LineKind::Commitment,
        description: format!("minimum commitment true-up ({minimum} {currency})"),
        key: None,
        rate_plan: Some(inputs.rate_plan.clone()),
        catalog_version: Some(inputs.catalog_version),
        period: inputs.period,
        quantity: Decimal::ONE,
        included: Decimal::ZERO,
        hard_limit: None,
        amount_unrounded: shortfall,
        amount: shortfall,
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
    use aforo_crds::catalog::DecimalString;
    use rust_decimal_macros::dec;

    #[test]
    fn a_shortfall_becomes_a_true_up_line() {
        let mut plan = plan_per_unit("1", None);
        plan.minimum_commitment = Some(DecimalString::from("100"));
        let inputs = inputs_with(plan, vec![]);
        let mut draft = Draft::new();
        draft.lines.push(usage_line(dec!(62.5)));
        run(&mut draft, &inputs).unwrap();
        assert_eq!(draft.lines[1].kind, LineKind::Commitment);
        assert_eq!(draft.lines[1].amount, dec!(37.5));
        assert_eq!(draft.total(), dec!(100));
    }

    #[test]
    fn no_true_up_when_the_commitment_is_met() {
        let mut plan = plan_per_unit("1", None);
        plan.minimum_commitment = Some(DecimalString::from("100"));
        let mut draft = Draft::new();
        draft.lines.push(usage_line(dec!(100)));
        run(&mut draft, &inputs_with(plan, vec![])).unwrap();
        assert_eq!(draft.lines.len(), 1);
    }
}
