//! The RevenueEstimator's arithmetic: one running total per subscription,
//! meter, dimension value, period and plan terms; each event's revenue is
//! what it adds to the priced total, `price(after) − price(before)`, so the
//! revenues of a period's events telescope to the price of its total. The
//! enricher folds with [`fold`] (both stores lock the totals and write what
//! it computes); the bill run's Aggregate stage, the property tests and the
//! pricing benchmark call the very same function.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use uuid::Uuid;

/// `price(q)` of the charge an intent is priced by.
pub type PriceFn = Arc<dyn Fn(Decimal) -> Decimal + Send + Sync>;

/// One running total: per subscription, meter, dimension value, billing
/// period and plan terms (a hash of the rate plan's charge), so that a
/// mid-period price change starts a new total instead of mixing two prices.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TotalKey {
    pub tenant: Uuid,
    pub subscription: Uuid,
    pub meter: String,
    pub dimension: String,
    pub period_start: DateTime<Utc>,
    pub plan_terms: String,
}

/// What one event contributes to a running total, by aggregation.
#[derive(Clone, Debug, PartialEq)]
pub enum AggregationInput {
    Sum(Decimal),
    Count,
    Max(Decimal),
    /// The value, canonically encoded.
    UniqueCount(String),
    Latest(Decimal),
}

/// One (event, meter) the enricher priced.
#[derive(Clone)]
pub struct LedgerIntent {
    pub key: TotalKey,
    pub input: AggregationInput,
    pub price: PriceFn,
    pub customer: String,
    pub rate_plan: String,
    pub catalog_version: i64,
    pub currency: String,
    /// COGS of this event for this meter.
    pub cost: Decimal,
    pub cost_currency: Option<String>,
}

impl std::fmt::Debug for LedgerIntent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LedgerIntent")
            .field("key", &self.key)
            .field("input", &self.input)
            .field("rate_plan", &self.rate_plan)
            .finish_non_exhaustive()
    }
}

/// The enrichment mark of an event.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EnrichmentState {
    Enriched,
    /// No customer, or no subscription in force at the event's time.
    Unattributed,
    /// No meter takes the event's type in the catalog in force at its time.
    Unmetered,
}

impl EnrichmentState {
    pub fn as_str(self) -> &'static str {
        match self {
            EnrichmentState::Enriched => "ENRICHED",
            EnrichmentState::Unattributed => "UNATTRIBUTED",
            EnrichmentState::Unmetered => "UNMETERED",
        }
    }
}

/// The enricher's verdict on one claimed event.
#[derive(Clone, Debug)]
pub struct EnrichmentOutcome {
    pub event: Uuid,
    pub event_time: DateTime<Utc>,
    pub state: EnrichmentState,
    pub intents: Vec<LedgerIntent>,
}

/// A running total as loaded under lock.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct TotalState {
    pub quantity: Decimal,
    pub price: Decimal,
    pub latest_time: Option<DateTime<Utc>>,
}

/// Folds one event into a running total; returns (quantity delta, revenue).
/// `unique_is_new` says whether a UNIQUE_COUNT value was not counted before.
pub fn fold(
    state: &mut TotalState,
    intent: &LedgerIntent,
    event_time: DateTime<Utc>,
    unique_is_new: bool,
) -> (Decimal, Decimal) {
    fold_input(
        state,
        &intent.input,
        &*intent.price,
        event_time,
        unique_is_new,
    )
}

/// The RevenueEstimator's one fold, what [`fold`] does for an intent: the
/// new total by aggregation, priced, and the event's revenue
/// `price(after) − price(before)`. The telescoping property tests and the
/// pricing benchmark call this very function.
pub fn fold_input(
    state: &mut TotalState,
    input: &AggregationInput,
    price: &dyn Fn(Decimal) -> Decimal,
    event_time: DateTime<Utc>,
    unique_is_new: bool,
) -> (Decimal, Decimal) {
    let before = state.quantity;
    let after = match input {
        AggregationInput::Sum(v) => before + v,
        AggregationInput::Count => before + Decimal::ONE,
        AggregationInput::Max(v) => before.max(*v),
        AggregationInput::UniqueCount(_) if unique_is_new => before + Decimal::ONE,
        AggregationInput::UniqueCount(_) => before,
        AggregationInput::Latest(v) => {
            if state.latest_time.is_none_or(|t| event_time >= t) {
                state.latest_time = Some(event_time);
                *v
            } else {
                before
            }
        }
    };
    let price = price(after);
    let revenue = price - state.price;
    state.quantity = after;
    state.price = price;
    (after - before, revenue)
}

/// What one event adds to one running total: a row of the ledger.
#[derive(Clone, Copy, Debug)]
pub struct Contribution<'a> {
    pub outcome: &'a EnrichmentOutcome,
    pub intent: &'a LedgerIntent,
    /// The running total's change.
    pub quantity: Decimal,
    /// `price(after) − price(before)`.
    pub revenue: Decimal,
}

/// A claim's completion, the same for every store: each event's intents
/// folded, in order, into the running totals the store loaded under lock
/// (`totals`, keys missing from it start at zero). A UNIQUE_COUNT value
/// counts once, the first time it appears while in `new_values` (the
/// values this completion's insert found new, which it uses up). Returns
/// every contribution, in order, and the events by the mark they get.
pub fn complete<'a>(
    outcomes: &'a [EnrichmentOutcome],
    totals: &mut BTreeMap<TotalKey, TotalState>,
    new_values: &mut HashSet<(TotalKey, String)>,
) -> (Vec<Contribution<'a>>, HashMap<EnrichmentState, Vec<Uuid>>) {
    let mut contributions = Vec::new();
    let mut marks: HashMap<EnrichmentState, Vec<Uuid>> = HashMap::new();
    for outcome in outcomes {
        marks.entry(outcome.state).or_default().push(outcome.event);
        for intent in &outcome.intents {
            let unique_is_new = match &intent.input {
                AggregationInput::UniqueCount(v) => {
                    new_values.remove(&(intent.key.clone(), v.clone()))
                }
                _ => false,
            };
            let state = totals.entry(intent.key.clone()).or_default();
            let (quantity, revenue) = fold(state, intent, outcome.event_time, unique_is_new);
            contributions.push(Contribution {
                outcome,
                intent,
                quantity,
                revenue,
            });
        }
    }
    (contributions, marks)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rust_decimal_macros::dec;

    fn intent(input: AggregationInput) -> LedgerIntent {
        LedgerIntent {
            key: TotalKey {
                tenant: Uuid::nil(),
                subscription: Uuid::nil(),
                meter: "m".into(),
                dimension: String::new(),
                period_start: DateTime::UNIX_EPOCH,
                plan_terms: "t".into(),
            },
            input,
            price: Arc::new(|q| q * dec!(2)),
            customer: "c".into(),
            rate_plan: "p".into(),
            catalog_version: 1,
            currency: "EUR".into(),
            cost: Decimal::ZERO,
            cost_currency: None,
        }
    }

    #[test]
    fn each_aggregation_keeps_its_own_running_state() {
        let t = |s: i64| DateTime::from_timestamp(s, 0).unwrap();
        let mut s = TotalState::default();
        assert_eq!(
            fold(&mut s, &intent(AggregationInput::Sum(dec!(3))), t(1), false),
            (dec!(3), dec!(6))
        );
        assert_eq!(
            fold(&mut s, &intent(AggregationInput::Count), t(2), false),
            (dec!(1), dec!(2))
        );

        let mut max = TotalState::default();
        fold(
            &mut max,
            &intent(AggregationInput::Max(dec!(5))),
            t(1),
            false,
        );
        assert_eq!(
            fold(
                &mut max,
                &intent(AggregationInput::Max(dec!(4))),
                t(2),
                false
            ),
            (dec!(0), dec!(0))
        );
        assert_eq!(max.quantity, dec!(5));

        let mut unique = TotalState::default();
        fold(
            &mut unique,
            &intent(AggregationInput::UniqueCount("a".into())),
            t(1),
            true,
        );
        fold(
            &mut unique,
            &intent(AggregationInput::UniqueCount("a".into())),
            t(2),
            false,
        );
        assert_eq!(unique.quantity, dec!(1));

        let mut latest = TotalState::default();
        fold(
            &mut latest,
            &intent(AggregationInput::Latest(dec!(7))),
            t(10),
            false,
        );
        // An older value arriving late does not replace the newer one.
        assert_eq!(
            fold(
                &mut latest,
                &intent(AggregationInput::Latest(dec!(9))),
                t(5),
                false
            ),
            (dec!(0), dec!(0))
        );
        fold(
            &mut latest,
            &intent(AggregationInput::Latest(dec!(2))),
            t(11),
            false,
        );
        assert_eq!((latest.quantity, latest.price), (dec!(2), dec!(4)));
    }

    #[test]
    fn a_completion_folds_in_order_and_counts_a_new_unique_value_once() {
        let event = |state, inputs: Vec<AggregationInput>| EnrichmentOutcome {
            event: Uuid::now_v7(),
            event_time: DateTime::UNIX_EPOCH,
            state,
            intents: inputs.into_iter().map(intent).collect(),
        };
        let unique = |v: &str| AggregationInput::UniqueCount(v.into());
        let outcomes = vec![
            event(EnrichmentState::Enriched, vec![unique("a")]),
            event(EnrichmentState::Enriched, vec![unique("a")]),
            event(EnrichmentState::Enriched, vec![unique("b")]),
            event(EnrichmentState::Unmetered, vec![]),
        ];
        let key = intent(unique("a")).key;
        // Loaded under lock: 5 counted already; "a" is new, "b" was seen.
        let mut totals = BTreeMap::from([(
            key.clone(),
            TotalState {
                quantity: dec!(5),
                price: dec!(10),
                latest_time: None,
            },
        )]);
        let mut new_values = HashSet::from([(key.clone(), "a".to_owned())]);
        let (contributions, marks) = complete(&outcomes, &mut totals, &mut new_values);
        let added: Vec<(Decimal, Decimal)> = contributions
            .iter()
            .map(|c| (c.quantity, c.revenue))
            .collect();
        assert_eq!(
            added,
            [(dec!(1), dec!(2)), (dec!(0), dec!(0)), (dec!(0), dec!(0))]
        );
        assert_eq!(totals[&key].quantity, dec!(6));
        assert_eq!(totals[&key].price, dec!(12));
        assert!(new_values.is_empty());
        assert_eq!(marks[&EnrichmentState::Enriched].len(), 3);
        assert_eq!(marks[&EnrichmentState::Unmetered], [outcomes[3].event]);
    }
}
