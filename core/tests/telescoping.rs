//! The RevenueEstimator's invariant, per charge model: for any sequence of
//! events, the per-event revenues `price(after) − price(before)` add up to
//! exactly `price(final total)` — the number the bill run's Rate stage
//! computes with the same function. Exactly: decimals, no tolerance.

use aforo_core::pricing::{RatingFunction, Tier};
use aforo_core::revenue::{AggregationInput, TotalState, fold_input};
use chrono::{DateTime, Utc};
use proptest::prelude::*;
use rust_decimal::Decimal;

/// A non-negative quantity with up to 4 decimal places, below 10 million.
fn quantity() -> impl Strategy<Value = Decimal> {
    (0u32..=4).prop_flat_map(|scale| {
        (0i64..10_000_000 * 10i64.pow(scale)).prop_map(move |m| Decimal::new(m, scale))
    })
}

/// A price with up to 6 decimal places, below 100.
fn price() -> impl Strategy<Value = Decimal> {
    (0u64..100_000_000).prop_map(|m| Decimal::new(m as i64, 6))
}

/// 1 to 5 tiers with strictly increasing bounds, the last unbounded.
fn tiers() -> impl Strategy<Value = Vec<Tier>> {
    prop::collection::vec((1u64..2_000_000, price(), price()), 1..5).prop_map(|raw| {
        let mut bound = 0u64;
        let n = raw.len();
        raw.into_iter()
            .enumerate()
            .map(|(i, (step, unit_price, flat_fee))| {
                bound += step;
                Tier {
                    up_to: (i + 1 < n).then(|| Decimal::from(bound)),
                    unit_price,
                    flat_fee,
                }
            })
            .collect()
    })
}

/// Maybe some included units.
fn included() -> impl Strategy<Value = Decimal> {
    prop_oneof![
        Just(Decimal::ZERO),
        (0u64..1_000_000).prop_map(Decimal::from)
    ]
}

fn events() -> impl Strategy<Value = Vec<Decimal>> {
    prop::collection::vec(quantity(), 0..60)
}

fn telescopes(f: &RatingFunction, events: &[Decimal]) -> Result<(), TestCaseError> {
    let mut total = Decimal::ZERO;
    let mut revenue = Decimal::ZERO;
    for q in events {
        let after = total + q;
        revenue += f.marginal(total, after);
        total = after;
    }
    prop_assert_eq!(revenue, f.price(total), "{:?} over {:?}", f, events);
    // The enricher's own fold gives the same revenues, event by event.
    let mut running = TotalState::default();
    let mut before = Decimal::ZERO;
    let price = |q| f.price(q);
    for q in events {
        let (added, revenue) = fold_input(
            &mut running,
            &AggregationInput::Sum(*q),
            &price,
            DateTime::<Utc>::UNIX_EPOCH,
            false,
        );
        prop_assert_eq!(added, *q);
        prop_assert_eq!(revenue, f.marginal(before, before + q));
        before += q;
    }
    prop_assert_eq!(running.price, f.price(total));
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn flat_revenue_telescopes(amount in price(), inc in included(), events in events()) {
        telescopes(&RatingFunction::flat(amount).with_included(inc), &events)?;
    }

    #[test]
    fn per_unit_revenue_telescopes(unit in price(), inc in included(), events in events()) {
        telescopes(&RatingFunction::per_unit(unit).with_included(inc), &events)?;
    }

    #[test]
    fn package_revenue_telescopes(size in 1u64..10_000, p in price(), inc in included(), events in events()) {
        telescopes(&RatingFunction::package(Decimal::from(size), p).with_included(inc), &events)?;
    }

    #[test]
    fn graduated_revenue_telescopes(tiers in tiers(), inc in included(), events in events()) {
        telescopes(&RatingFunction::graduated(tiers).with_included(inc), &events)?;
    }

    #[test]
    fn volume_revenue_telescopes_even_when_a_marginal_is_negative(
        tiers in tiers(), inc in included(), events in events(),
    ) {
        telescopes(&RatingFunction::volume(tiers).with_included(inc), &events)?;
    }

    #[test]
    fn percentage_revenue_telescopes(inc in included(), events in events()) {
        // A percentage charge's quantity is the sum of its per-event charges.
        telescopes(&RatingFunction::identity().with_included(inc), &events)?;
    }

    #[test]
    fn grouping_events_into_batches_changes_nothing(
        tiers in tiers(),
        events in prop::collection::vec(quantity(), 1..40),
        cut in 0usize..40,
    ) {
        // One running-total update per batch (as the enricher does) gives the
        // same revenue as one per event.
        for f in [RatingFunction::volume(tiers.clone()), RatingFunction::graduated(tiers)] {
            let cut = cut.min(events.len());
            let (a, b) = events.split_at(cut);
            let sum = |xs: &[Decimal]| xs.iter().copied().sum::<Decimal>();
            let per_batch = f.marginal(Decimal::ZERO, sum(a)) + f.marginal(sum(a), sum(a) + sum(b));
            prop_assert_eq!(per_batch, f.price(sum(&events)));
        }
    }

    #[test]
    fn graduated_and_per_unit_prices_never_fall(
        tiers in tiers(),
        unit in price(),
        q in quantity(),
        more in quantity(),
    ) {
        for f in [RatingFunction::graduated(tiers.clone()), RatingFunction::per_unit(unit)] {
            prop_assert!(f.price(q + more) >= f.price(q));
        }
    }
}
