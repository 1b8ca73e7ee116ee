//! Test fixtures for the stages: a monthly EUR plan with one meter, "api",
//! billed for March 2026, and usage items resolved the way the enricher
//! resolves them.

use std::sync::Arc;

use crate::revenue::{AggregationInput, LedgerIntent, PriceFn, TotalKey};
use aforo_crds::catalog::{
    BillingPeriod, Charge, DecimalString, PerUnitCharge, Quota, RatePlanSpec, Rollover,
};
use chrono::{DateTime, TimeZone, Utc};
use rust_decimal::Decimal;
use uuid::Uuid;

use super::*;
use crate::pricing::ChargeRating;

pub fn month_start(month: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, month, 1, 0, 0, 0).unwrap()
}

pub fn period(month: u32) -> Period {
    Period {
        start: month_start(month),
        end: month_start(month + 1),
    }
}

pub fn event_id(i: u64) -> Uuid {
    Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0000 + u128::from(i))
}

fn charge(price: &str) -> Charge {
    Charge {
        meter: "api".into(),
        flat: None,
        per_unit: Some(PerUnitCharge {
            unit_price: DecimalString::from(price),
            by_dimension: None,
        }),
        package: None,
        graduated: None,
        volume: None,
        percentage: None,
        included_units: None,
        rollover: None,
        quota: None,
    }
}

fn plan(charge: Charge) -> RatePlanSpec {
    RatePlanSpec {
        product_ref: "api".into(),
        currency: "EUR".into(),
        billing_period: BillingPeriod::Monthly,
        billing_anchor_day: Some(1),
        effective_from: "2026-01-01T00:00:00Z".into(),
        recurring_fees: vec![],
        charges: vec![charge],
        minimum_commitment: None,
        discount: None,
        tax_class: None,
    }
}

pub fn plan_per_unit(price: &str, quota: Option<(&str, &str)>) -> RatePlanSpec {
    let mut c = charge(price);
    c.quota = quota.map(|(soft, hard)| Quota {
        soft: Some(DecimalString::from(soft)),
        hard: Some(DecimalString::from(hard)),
    });
    plan(c)
}

pub fn plan_with_rollover(included: &str, max: Option<&str>, expires: Option<u32>) -> RatePlanSpec {
    let mut c = charge("1");
    c.included_units = Some(DecimalString::from(included));
    c.rollover = Some(Rollover {
        max_units: max.map(DecimalString::from),
        expires_after_periods: expires,
    });
    plan(c)
}

fn item(i: u64, input: AggregationInput, plan: &RatePlanSpec) -> UsageItem {
    let rating = ChargeRating::from_charge(&plan.charges[0]).unwrap();
    let function = Arc::new(rating.function.clone());
    let priced = Arc::clone(&function);
    let price: PriceFn = Arc::new(move |q| priced.price(q));
    UsageItem {
        event: event_id(i),
        validation_hash: format!("{:064x}", i).into(),
        time: month_start(3) + chrono::Duration::minutes(i as i64),
        stored_at: month_start(3) + chrono::Duration::minutes(i as i64),
        intent: LedgerIntent {
            key: TotalKey {
                tenant: Uuid::nil(),
                subscription: Uuid::from_u128(1),
                meter: "api".into(),
                dimension: String::new(),
                period_start: month_start(3),
                plan_terms: "terms".into(),
            },
            input,
            price,
            customer: "acme".into(),
            rate_plan: "standard".into(),
            catalog_version: 1,
            currency: "EUR".into(),
            cost: Decimal::ZERO,
            cost_currency: None,
        },
        function,
    }
}

pub fn sum_item(i: u64, _meter: &str, quantity: Decimal) -> UsageItem {
    item(
        i,
        AggregationInput::Sum(quantity),
        &plan_per_unit("1", None),
    )
}

pub fn unique_item(i: u64, value: &str) -> UsageItem {
    item(
        i,
        AggregationInput::UniqueCount(value.to_owned()),
        &plan_per_unit("1", None),
    )
}

/// Moves an item into another period.
pub fn at_period(mut item: UsageItem, period: Period) -> UsageItem {
    item.time = period.start + (item.time - month_start(3));
    item.stored_at = item.time;
    item.intent.key.period_start = period.start;
    item
}

/// Inputs for March 2026 on `plan`; the items are re-bound to the plan's
/// rating function, as resolution would have bound them.
pub fn inputs_with(plan: RatePlanSpec, items: Vec<UsageItem>) -> Inputs {
    let rating = ChargeRating::from_charge(&plan.charges[0]).unwrap();
    let function = Arc::new(rating.function.clone());
    let usage = items
        .into_iter()
        .map(|mut it| {
            let priced = Arc::clone(&function);
            it.intent.price = Arc::new(move |q| priced.price(q));
            it.function = Arc::clone(&function);
            it
        })
        .collect();
    Inputs {
        tenant: Uuid::nil(),
        subscription: Uuid::from_u128(1),
        customer: "acme".into(),
        tax_region: None,
        period: period(3),
        calendar: Calendar::new(plan.billing_period, month_start(1), Some(1)),
        cutoff: month_start(4),
        rate_plan: "standard".into(),
        plan,
        catalog_version: 1,
        usage,
        late: vec![],
        previous: None,
        subscription_discounts: vec![],
        tax: None,
        routing: Arc::new(RoutingConfig::default()),
    }
}

pub fn invoice_stub() -> Invoice {
    Invoice {
        id: Uuid::nil(),
        number: "INV-1".into(),
        tenant: Uuid::nil(),
        subscription: Uuid::from_u128(1),
        customer: "acme".into(),
        rate_plan: "standard".into(),
        catalog_version: 1,
        currency: "EUR".into(),
        period: period(2),
        cutoff: month_start(3),
        lines: vec![],
        subtotal: Decimal::ZERO,
        discount: Decimal::ZERO,
        tax: Decimal::ZERO,
        total: Decimal::ZERO,
        flags: vec![],
        quotas: Default::default(),
        rollover: Default::default(),
        routes: vec![],
    }
}

pub fn usage_line(amount: Decimal) -> Line {
    Line {
        number: 0,
        kind: LineKind::Usage,
        description: "api".into(),
        key: None,
        rate_plan: None,
        catalog_version: None,
        period: period(3),
        quantity: amount,
        included: Decimal::ZERO,
        hard_limit: None,
        amount_unrounded: amount,
        amount,
        flags: vec![],
        event_count: 0,
        merkle_root: None,
        events: vec![],
    }
}
