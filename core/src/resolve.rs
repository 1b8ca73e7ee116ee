//! Resolution, pure: an event and its tenant's context → the enrichment
//! outcome. customer → subscription in force at the event's time → catalog
//! version in force at that time → the plan's charge for each meter that
//! takes the event → what the event adds to each running total.

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::{Arc, Mutex};

use crate::model::{StoredEvent, Subscription};
use crate::period::Calendar;
use crate::pricing::{ChargeRating, RatingFunction};
use crate::revenue::{
    AggregationInput, EnrichmentOutcome, EnrichmentState, LedgerIntent, PriceFn, TotalKey,
};
use aforo_crds::canonical;
use aforo_crds::catalog::{Aggregation, MeterSpec, RatePlanSpec};
use aforo_crds::compile::CatalogSnapshot;
use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use uuid::Uuid;

/// One stored catalog version, parsed, with the charges it has prepared.
/// Versions never change, so an enricher keeps them for good.
#[derive(Debug)]
pub struct CatalogAt {
    pub version: i64,
    pub effective_from: Option<DateTime<Utc>>,
    pub snapshot: CatalogSnapshot,
    /// Rate plan name → meter name → its charge, prepared (or none).
    prepared: Mutex<HashMap<String, PlanCharges>>,
    /// Event type → the names of the meters that take it.
    by_type: HashMap<String, Vec<String>>,
}

/// Meter name → the plan's charge for it, prepared (or none).
type PlanCharges = HashMap<String, Option<Arc<Prepared>>>;

/// A rating function and the price closure over it, shared by every
/// intent it prices (nothing is cloned per event).
#[derive(Clone)]
struct Priced {
    function: Arc<RatingFunction>,
    price: PriceFn,
}

impl Priced {
    fn new(function: RatingFunction) -> Self {
        let function = Arc::new(function);
        let f = Arc::clone(&function);
        Priced {
            function,
            price: Arc::new(move |q| f.price(q)),
        }
    }
}

impl std::fmt::Debug for Priced {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.function.fmt(f)
    }
}

/// A plan's charge for one meter, ready to price with.
#[derive(Debug)]
struct Prepared {
    rating: ChargeRating,
    terms: String,
    default: Priced,
    by_dimension: HashMap<String, Priced>,
    unit_cost: Decimal,
}

impl Prepared {
    fn priced(&self, dimension_value: Option<&str>) -> &Priced {
        dimension_value
            .and_then(|v| self.by_dimension.get(v))
            .unwrap_or(&self.default)
    }
}

impl CatalogAt {
    pub fn new(
        version: i64,
        effective_from: Option<DateTime<Utc>>,
        snapshot: CatalogSnapshot,
    ) -> Self {
        let mut by_type: HashMap<String, Vec<String>> = HashMap::new();
        for (name, meter) in &snapshot.meters {
            by_type
                .entry(meter.event_type.clone())
                .or_default()
                .push(name.clone());
        }
        CatalogAt {
            version,
            effective_from,
            snapshot,
            prepared: Mutex::default(),
            by_type,
        }
    }

    /// The names of the meters that take events of `event_type`.
    pub fn meters_for(&self, event_type: &str) -> &[String] {
        self.by_type.get(event_type).map_or(&[], Vec::as_slice)
    }

    /// The rating and terms of `plan`'s charge for `meter`, parsed once.
    fn prepared(
        &self,
        plan_name: &str,
        plan: &RatePlanSpec,
        meter_name: &str,
        meter: &MeterSpec,
    ) -> Option<Arc<Prepared>> {
        let mut memo = self.prepared.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(found) = memo.get(plan_name).and_then(|m| m.get(meter_name)) {
            return found.clone();
        }
        let prepared = plan
            .charges
            .iter()
            .find(|c| c.meter == meter_name)
            .and_then(|charge| ChargeRating::from_charge(charge).ok())
            .map(|rating| {
                let by_dimension = rating
                    .by_dimension
                    .iter()
                    .flat_map(|(_, prices)| prices.iter())
                    .map(|(value, f)| (value.clone(), Priced::new(f.clone())))
                    .collect();
                Arc::new(Prepared {
                    default: Priced::new(rating.function.clone()),
                    by_dimension,
                    terms: plan_terms(plan, meter_name),
                    unit_cost: meter
                        .unit_cost
                        .as_ref()
                        .and_then(|c| Decimal::from_str(c.as_str()).ok())
                        .unwrap_or_default(),
                    rating,
                })
            });
        memo.entry(plan_name.to_owned())
            .or_default()
            .insert(meter_name.to_owned(), prepared.clone());
        prepared
    }
}

/// What resolution needs of one tenant.
#[derive(Debug, Default)]
pub struct TenantContext {
    /// Newest first.
    pub catalogs: Vec<Arc<CatalogAt>>,
    /// By customer external id.
    pub subscriptions: HashMap<String, Vec<Subscription>>,
}

impl TenantContext {
    /// The catalog version in force at `t`: the newest whose effective time
    /// has come.
    pub fn catalog_at(&self, t: DateTime<Utc>) -> Option<&CatalogAt> {
        self.catalogs
            .iter()
            .find(|c| c.effective_from.is_none_or(|from| from <= t))
            .map(Arc::as_ref)
    }
}

/// Reads `$.a.b` (dot-separated member names) from the properties.
pub fn read_path<'a>(properties: &'a Map<String, Value>, path: &str) -> Option<&'a Value> {
    let rest = path.strip_prefix("$.")?;
    let mut parts = rest.split('.');
    let mut current = properties.get(parts.next()?)?;
    for part in parts {
        current = current.get(part)?;
    }
    Some(current)
}

/// A JSON number or decimal string as an exact decimal.
pub fn as_decimal(value: &Value) -> Option<Decimal> {
    match value {
        // Integers (most quantities) without going through text.
        Value::Number(n) if n.is_i64() => n.as_i64().map(Decimal::from),
        Value::Number(n) if n.is_u64() => n.as_u64().map(Decimal::from),
        Value::Number(n) => Decimal::from_str(&n.to_string())
            .or_else(|_| Decimal::from_scientific(&n.to_string()))
            .ok(),
        Value::String(s) => Decimal::from_str(s.trim()).ok(),
        _ => None,
    }
}

/// A short hash of a plan's terms for one meter: events priced by the same
/// terms share a running total, a price change starts a new one.
pub fn plan_terms(plan: &RatePlanSpec, meter: &str) -> String {
    let charge = plan.charges.iter().find(|c| c.meter == meter);
    let terms = serde_json::json!([plan.currency, plan.billing_period, charge]);
    let digest = Sha256::digest(canonical::to_string(&terms));
    hex::encode(&digest[..12])
}

fn input(
    meter: &MeterSpec,
    properties: &Map<String, Value>,
) -> Option<(AggregationInput, Decimal)> {
    let value = || {
        meter
            .value_property
            .as_deref()
            .and_then(|p| read_path(properties, p))
    };
    Some(match meter.aggregation {
        Aggregation::Count => (AggregationInput::Count, Decimal::ONE),
        Aggregation::Sum => {
            let v = as_decimal(value()?)?;
            (AggregationInput::Sum(v), v)
        }
        Aggregation::Max => {
            let v = as_decimal(value()?)?;
            (AggregationInput::Max(v), v)
        }
        Aggregation::Latest => {
            let v = as_decimal(value()?)?;
            (AggregationInput::Latest(v), v)
        }
        Aggregation::UniqueCount => (
            AggregationInput::UniqueCount(canonical::to_string(value()?)),
            Decimal::ONE,
        ),
    })
}

fn outcome(
    event: &StoredEvent,
    state: EnrichmentState,
    intents: Vec<LedgerIntent>,
) -> EnrichmentOutcome {
    EnrichmentOutcome {
        event: event.stored_id,
        event_time: event.event.time,
        state,
        intents,
    }
}

/// Resolves one event.
pub fn resolve(event: &StoredEvent, ctx: &TenantContext) -> EnrichmentOutcome {
    let (state, priced) = resolve_priced(event, ctx);
    outcome(
        event,
        state,
        priced.into_iter().map(|(intent, _)| intent).collect(),
    )
}

/// An intent and the rating function its price closure applies: the bill
/// run reprices with it when its allowance differs from the plan's.
pub type PricedIntent = (LedgerIntent, Arc<RatingFunction>);

/// What resolution reads of an event.
#[derive(Clone, Copy, Debug)]
pub struct EventView<'a> {
    pub tenant: Uuid,
    pub event_type: &'a str,
    pub customer: &'a str,
    pub time: DateTime<Utc>,
    pub properties: &'a Map<String, Value>,
}

impl<'a> EventView<'a> {
    pub fn of(event: &'a StoredEvent) -> Self {
        EventView {
            tenant: event.tenant,
            event_type: &event.event.event_type,
            customer: &event.event.customer,
            time: event.event.time,
            properties: &event.event.properties,
        }
    }
}

/// Resolves one event, keeping each intent's rating function.
pub fn resolve_priced(
    event: &StoredEvent,
    ctx: &TenantContext,
) -> (EnrichmentState, Vec<PricedIntent>) {
    resolve_view(EventView::of(event), ctx)
}

/// Resolves what the bill run reads of an event.
pub fn resolve_view(e: EventView<'_>, ctx: &TenantContext) -> (EnrichmentState, Vec<PricedIntent>) {
    let Some(catalog) = ctx.catalog_at(e.time) else {
        return (EnrichmentState::Unmetered, vec![]);
    };
    let meters = catalog.meters_for(e.event_type);
    if meters.is_empty() {
        return (EnrichmentState::Unmetered, vec![]);
    }
    let in_force = ctx
        .subscriptions
        .get(e.customer)
        .into_iter()
        .flatten()
        .find_map(|s| s.plan_at(e.time).map(|plan| (s, plan)));
    let Some((subscription, plan_name)) = in_force else {
        return (EnrichmentState::Unattributed, vec![]);
    };
    let Some(plan) = catalog.snapshot.rate_plans.get(plan_name) else {
        return (EnrichmentState::Unattributed, vec![]);
    };
    let Some(period) = Calendar::of(subscription, plan).period_of(e.time) else {
        return (EnrichmentState::Unattributed, vec![]);
    };
    let period = period.start;
    let mut intents = Vec::new();
    for name in meters {
        let Some(meter) = catalog.snapshot.meters.get(name) else {
            continue;
        };
        let Some(prepared) = catalog.prepared(plan_name, plan, name, meter) else {
            continue;
        };
        let rating = &prepared.rating;
        let (aggregation, contribution) = match &rating.percentage {
            // A percentage charge's quantity is money: the event's own charge.
            Some(rule) => {
                let Some(amount) = read_path(e.properties, &format!("$.{}", rule.amount_property))
                    .and_then(as_decimal)
                else {
                    continue;
                };
                let charge = rule.event_charge(amount);
                (AggregationInput::Sum(charge), Decimal::ONE)
            }
            None => match input(meter, e.properties) {
                Some(found) => found,
                None => continue,
            },
        };
        let dimension = rating
            .by_dimension
            .as_ref()
            .and_then(|(d, _)| meter.group_by.get(d))
            .and_then(|path| read_path(e.properties, path))
            .map(|v| {
                v.as_str()
                    .map(str::to_owned)
                    .unwrap_or_else(|| v.to_string())
            });
        let priced = prepared.priced(dimension.as_deref());
        let function = Arc::clone(&priced.function);
        let price = Arc::clone(&priced.price);
        let unit_cost = prepared.unit_cost;
        let carried = e
            .properties
            .get("cost")
            .and_then(as_decimal)
            .unwrap_or_default();
        intents.push((
            LedgerIntent {
                key: TotalKey {
                    tenant: e.tenant,
                    subscription: subscription.id,
                    meter: name.clone(),
                    dimension: dimension.unwrap_or_default(),
                    period_start: period,
                    plan_terms: prepared.terms.clone(),
                },
                input: aggregation,
                price,
                customer: e.customer.to_owned(),
                rate_plan: plan_name.to_owned(),
                catalog_version: catalog.version,
                currency: plan.currency.clone(),
                cost: unit_cost * contribution + carried,
                cost_currency: meter.cost_currency.clone(),
            },
            function,
        ));
    }
    (EnrichmentState::Enriched, intents)
}
