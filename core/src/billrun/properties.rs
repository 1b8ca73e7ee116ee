//! Property tests of the bill run's invariants: for random usage, in any
//! arrival order, the per-event revenue estimates add up to the invoice's
//! unrounded usage line, which is `price(total)`; and billing the same
//! inputs again (a replay) gives the same document byte for byte.

use std::sync::Arc;

use aforo_crds::catalog::{DecimalString, Tier};
use proptest::prelude::*;
use rust_decimal::Decimal;
use uuid::Uuid;

use super::fixtures::{inputs_with, plan_per_unit, sum_item};
use super::{LineKind, bill};

fn tiers() -> Vec<Tier> {
    let t = |up_to: Option<&str>, price: &str, fee: Option<&str>| Tier {
        up_to: up_to.map(DecimalString::from),
        unit_price: DecimalString::from(price),
        flat_fee: fee.map(DecimalString::from),
    };
    vec![
        t(Some("100"), "0.05", None),
        t(Some("1000"), "0.03", Some("2")),
        t(None, "0.01", Some("5")),
    ]
}

fn plan(model: u8, included: u32) -> aforo_crds::catalog::RatePlanSpec {
    let mut plan = plan_per_unit("0.007", None);
    let charge = &mut plan.charges[0];
    match model {
        0 => {}
        1 => {
            charge.per_unit = None;
            charge.graduated = Some(tiers());
        }
        _ => {
            charge.per_unit = None;
            charge.volume = Some(tiers());
        }
    }
    if included > 0 {
        charge.included_units = Some(DecimalString(included.to_string()));
    }
    plan
}

proptest! {
    #[test]
    fn estimates_telescope_to_the_invoice_line_and_replays_are_identical(
        model in 0u8..3,
        included in prop_oneof![Just(0u32), 1u32..500],
        quantities in prop::collection::vec(1u32..400, 1..60),
        shuffle in any::<u64>(),
    ) {
        let items = quantities
            .iter()
            .enumerate()
            // Quantities as events carry them: finite decimals (here with
            // three places). rust_decimal is exact for these; a quantity like
            // 1/7 is not representable, and sums of such in different orders
            // differ in the 28th digit.
            .map(|(i, q)| sum_item(i as u64 + 1, "api", Decimal::new(i64::from(*q) * 7 + 3, 3)))
            .collect();
        let inputs = inputs_with(plan(model, included), items);
        let invoice = bill(&inputs, Uuid::nil()).unwrap();
        let usage = invoice.lines.iter().find(|l| l.kind == LineKind::Usage).unwrap();

        // The estimator's order is the enricher's, not necessarily stored
        // order: fold in a shuffled order.
        let mut order: Vec<usize> = (0..inputs.usage.len()).collect();
        let mut state = shuffle;
        for i in (1..order.len()).rev() {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            order.swap(i, (state >> 33) as usize % (i + 1));
        }
        let function = Arc::clone(&inputs.usage[0].function);
        // The enricher's own fold, as it runs in production.
        let mut total = crate::revenue::TotalState::default();
        let mut estimates = Decimal::ZERO;
        for i in order {
            let super::UsageItem { intent, time, .. } = &inputs.usage[i];
            let (_, revenue) = crate::revenue::fold_input(
                &mut total,
                &intent.input,
                &|q| function.price(q),
                *time,
                false,
            );
            estimates += revenue;
        }
        prop_assert_eq!(estimates, usage.amount_unrounded);
        prop_assert_eq!(function.price(usage.quantity), usage.amount_unrounded);

        // A replay of the same inputs is the same document.
        let again = bill(&inputs, Uuid::nil()).unwrap();
        prop_assert_eq!(invoice.document(), again.document());
    }
}
