//! Pricing math throughput: marginal-revenue computations per second on one
//! core, per charge model, the way the enricher computes them (a running
//! total per key, one `price()` per event). Target: ≥ 5 M/s per core.
//!
//! `bench/run.sh pricing`

use std::hint::black_box;
use std::time::Instant;

use aforo_core::pricing::{RatingFunction, Tier};
use aforo_core::revenue::{AggregationInput, TotalState, fold_input};
use chrono::{DateTime, Utc};
use rust_decimal::Decimal;

const EVENTS: usize = 5_000_000;

fn tiers() -> Vec<Tier> {
    let t = |up_to: Option<i64>, price: &str, fee: &str| Tier {
        up_to: up_to.map(Decimal::from),
        unit_price: price.parse().unwrap_or_default(),
        flat_fee: fee.parse().unwrap_or_default(),
    };
    vec![
        t(Some(1_000_000), "0.00002", "0"),
        t(Some(10_000_000), "0.000015", "5"),
        t(None, "0.00001", "10"),
    ]
}

fn main() {
    // Quantities like real events: 1 to 5000 characters, some fractional.
    let quantities: Vec<Decimal> = (0..1024u32)
        .map(|i| Decimal::new(i64::from((i * 7919) % 5000 + 1) * 10 + i64::from(i % 3), 1))
        .collect();
    let models = [
        ("per unit", RatingFunction::per_unit(Decimal::new(2, 5))),
        (
            "package",
            RatingFunction::package(Decimal::from(100), Decimal::new(20, 2)),
        ),
        (
            "graduated, 3 tiers",
            RatingFunction::graduated(tiers()).with_included(Decimal::from(100_000)),
        ),
        ("volume, 3 tiers", RatingFunction::volume(tiers())),
    ];
    println!("marginal revenue computations per second, one core, {EVENTS} events each");
    let mut slowest = f64::MAX;
    for (name, function) in &models {
        // Many running totals, as for many subscriptions: totals wrap often
        // enough to cross tiers.
        // The enricher's own fold, with the price closure it uses.
        let price = |q| function.price(q);
        let mut totals = vec![TotalState::default(); 1000];
        let started = Instant::now();
        let mut revenue = Decimal::ZERO;
        for i in 0..EVENTS {
            let total = &mut totals[i % 1000];
            let input = AggregationInput::Sum(quantities[i % quantities.len()]);
            revenue += fold_input(total, &input, &price, DateTime::<Utc>::UNIX_EPOCH, false).1;
        }
        black_box(revenue);
        let rate = EVENTS as f64 / started.elapsed().as_secs_f64();
        slowest = slowest.min(rate);
        println!("  {name:<20} {:>6.2} M/s", rate / 1e6);
    }
    println!(
        "slowest model: {:.2} M/s per core (target 5 M/s): {}",
        slowest / 1e6,
        if slowest >= 5e6 { "met" } else { "not met" }
    );
}
