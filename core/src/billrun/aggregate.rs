//! Stage 3, Aggregate: the period's stored events (up to the cut-off)
//! folded into one quantity per (meter, dimension value, plan terms) — the
//! keys of the RevenueEstimator's running totals — with the estimator's own
//! fold, so SUM, COUNT, MAX, UNIQUE_COUNT and LATEST mean the same here as
//! at ingest time. Each line also keeps what the per-event estimates add up
//! to, for reconciliation.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use crate::revenue::{AggregationInput, TotalState, fold};

use super::{Aggregated, Draft, Inputs, LineKey, UsageItem};

/// Folds usage items (in stored order) into one aggregate per line key, in
/// the order the keys first appear.
pub fn fold_all(items: &[UsageItem]) -> Vec<Aggregated> {
    // Keys borrow from the items: no allocation per event.
    let mut index: HashMap<(&str, &str, &str), usize> = HashMap::new();
    let mut out: Vec<Aggregated> = Vec::new();
    let mut states: Vec<TotalState> = Vec::new();
    let mut seen: Vec<HashSet<&str>> = Vec::new();
    for item in items {
        let k = &item.intent.key;
        let key = (
            k.meter.as_str(),
            k.dimension.as_str(),
            k.plan_terms.as_str(),
        );
        let i = *index.entry(key).or_insert_with(|| {
            out.push(Aggregated {
                key: LineKey::of(&item.intent),
                rate_plan: item.intent.rate_plan.clone(),
                catalog_version: item.intent.catalog_version,
                quantity: Default::default(),
                estimate: Default::default(),
                function: item.function.clone(),
                events: Vec::new(),
                included: item.function.included(),
            });
            states.push(TotalState::default());
            seen.push(HashSet::new());
            out.len() - 1
        });
        let unique_is_new = match &item.intent.input {
            AggregationInput::UniqueCount(value) => seen[i].insert(value.as_str()),
            _ => false,
        };
        fold(&mut states[i], &item.intent, item.time, unique_is_new);
        out[i]
            .events
            .push((item.event, Arc::clone(&item.validation_hash)));
    }
    for (agg, state) in out.iter_mut().zip(states) {
        agg.quantity = state.quantity;
        agg.estimate = state.price;
    }
    out
}

pub fn run(draft: &mut Draft, inputs: &Inputs) -> Result<(), String> {
    if let Some(item) = inputs
        .usage
        .iter()
        .find(|i| i.intent.currency != inputs.plan.currency)
    {
        return Err(format!(
            "event {} is priced in {} by plan {:?}, but the invoice is in {} (plan {:?} at the period's start)",
            item.event,
            item.intent.currency,
            item.intent.rate_plan,
            inputs.plan.currency,
            inputs.rate_plan
        ));
    }
    draft.aggregated = fold_all(&inputs.usage);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::*;
    use super::*;
    use rust_decimal_macros::dec;

    #[test]
    fn each_key_gets_its_quantity_and_its_events_in_stored_order() {
        let inputs = inputs_with(
            plan_per_unit("0.10", None),
            vec![
                sum_item(1, "api", dec!(3)),
                sum_item(2, "api", dec!(4)),
                sum_item(3, "api", dec!(5)),
            ],
        );
        let mut draft = Draft::new();
        run(&mut draft, &inputs).unwrap();
        assert_eq!(draft.aggregated.len(), 1);
        let agg = &draft.aggregated[0];
        assert_eq!(agg.quantity, dec!(12));
        assert_eq!(agg.estimate, dec!(1.2));
        let ids: Vec<_> = agg.events.iter().map(|(id, _)| *id).collect();
        assert_eq!(ids, vec![event_id(1), event_id(2), event_id(3)]);
    }

    #[test]
    fn unique_counts_count_each_value_once() {
        let mut items = vec![
            unique_item(1, "u1"),
            unique_item(2, "u2"),
            unique_item(3, "u1"),
        ];
        items.push(unique_item(4, "u3"));
        let aggs = fold_all(&items);
        assert_eq!(aggs[0].quantity, dec!(3));
        assert_eq!(aggs[0].events.len(), 4);
    }

    #[test]
    fn a_foreign_currency_fails_the_stage() {
        let mut item = sum_item(1, "api", dec!(1));
        item.intent.currency = "USD".into();
        let inputs = inputs_with(plan_per_unit("1", None), vec![item]);
        let err = run(&mut Draft::new(), &inputs).unwrap_err();
        assert!(err.contains("priced in USD"), "{err}");
    }
}
