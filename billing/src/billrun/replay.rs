//! Replay: a closed period recomputed from the raw events and the catalog
//! versions, subscription phases and discounts known at its invoice's
//! cut-off, then compared with the stored invoice. The stages are pure and
//! their inputs are rebuilt exactly, so a replay reproduces the stored
//! document byte for byte unless something underneath changed (an event
//! altered, a rate changed in the tax configuration); what differs is named.
//! Routes are delivery configuration, not billing content: the replay keeps
//! the stored ones.

use std::collections::HashMap;

use aforo_store::Store;
use aforo_store::billing::InvoiceQuery;
use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::runner::{
    BillRunConfig, RunContext, RunError, parse_invoice, period_from, usage_by_period,
};
use super::{Invoice, Line, LineKind, bill_with_aggregates};

/// One usage line's amount beside what its events' revenue estimates add up to.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct EstimateCheck {
    pub line: u32,
    pub amount_unrounded: Decimal,
    /// The sum of the per-event revenue the RevenueEstimator recorded for
    /// the line's events (`None` when some were never enriched).
    pub estimates: Option<Decimal>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ReplayResult {
    pub invoice: Uuid,
    pub number: String,
    pub subscription: Uuid,
    pub customer: String,
    pub period_start: DateTime<Utc>,
    /// The recomputed document equals the stored one, byte for byte.
    pub identical: bool,
    pub differences: Vec<String>,
    pub estimates: Vec<EstimateCheck>,
}

fn line_diff(stored: &Line, replayed: &Line, out: &mut Vec<String>) {
    let n = stored.number;
    let mut field = |name: &str, a: String, b: String| {
        if a != b {
            out.push(format!("line {n} {name}: stored {a}, replayed {b}"));
        }
    };
    field(
        "kind",
        format!("{:?}", stored.kind),
        format!("{:?}", replayed.kind),
    );
    field(
        "description",
        stored.description.clone(),
        replayed.description.clone(),
    );
    field(
        "quantity",
        stored.quantity.to_string(),
        replayed.quantity.to_string(),
    );
    field(
        "included",
        stored.included.to_string(),
        replayed.included.to_string(),
    );
    field(
        "amount_unrounded",
        stored.amount_unrounded.to_string(),
        replayed.amount_unrounded.to_string(),
    );
    field(
        "amount",
        stored.amount.to_string(),
        replayed.amount.to_string(),
    );
    field(
        "event_count",
        stored.event_count.to_string(),
        replayed.event_count.to_string(),
    );
    field(
        "merkle_root",
        format!("{:?}", stored.merkle_root),
        format!("{:?}", replayed.merkle_root),
    );
}

/// What differs between a stored invoice and its replay.
pub fn diff(stored: &Invoice, replayed: &Invoice) -> Vec<String> {
    let mut out = Vec::new();
    for (name, a, b) in [
        ("subtotal", stored.subtotal, replayed.subtotal),
        ("discount", stored.discount, replayed.discount),
        ("tax", stored.tax, replayed.tax),
        ("total", stored.total, replayed.total),
    ] {
        if a != b {
            out.push(format!("{name}: stored {a}, replayed {b}"));
        }
    }
    if stored.lines.len() != replayed.lines.len() {
        out.push(format!(
            "lines: stored {}, replayed {}",
            stored.lines.len(),
            replayed.lines.len()
        ));
    }
    for (a, b) in stored.lines.iter().zip(&replayed.lines) {
        line_diff(a, b, &mut out);
    }
    if out.is_empty() && stored.document() != replayed.document() {
        let a = serde_json::to_value(stored).unwrap_or_default();
        let b = serde_json::to_value(replayed).unwrap_or_default();
        let fields: Vec<String> = a
            .as_object()
            .into_iter()
            .flatten()
            .filter(|(k, v)| b.get(k.as_str()) != Some(*v))
            .map(|(k, _)| k.clone())
            .collect();
        out.push(format!("the documents differ in {}", fields.join(", ")));
    }
    out
}

/// Replays the invoices of periods starting at `period_start` (of one
/// subscription, or all).
pub async fn replay(
    store: &dyn Store,
    config: &BillRunConfig,
    tenant: Uuid,
    period_start: DateTime<Utc>,
    subscription: Option<Uuid>,
) -> Result<Vec<ReplayResult>, RunError> {
    let query = InvoiceQuery {
        subscription,
        ..Default::default()
    };
    let mut contexts: HashMap<DateTime<Utc>, RunContext> = HashMap::new();
    let mut results = Vec::new();
    for stored in store.invoices(tenant, &query).await? {
        if stored.period_start != period_start {
            continue;
        }
        let original = parse_invoice(&stored)?;
        if let std::collections::hash_map::Entry::Vacant(slot) = contexts.entry(original.cutoff) {
            slot.insert(RunContext::load(store, tenant, original.cutoff, None).await?);
        }
        let rc = &contexts[&original.cutoff];
        let mut differences = Vec::new();
        let sub = rc
            .ctx
            .subscriptions
            .get(&original.customer)
            .and_then(|subs| subs.iter().find(|s| s.id == original.subscription));
        let replayed = match sub.map(|s| (s, period_from(s, &rc.ctx, stored.period_start))) {
            None => Err("the subscription is not known at the invoice's cut-off".to_owned()),
            Some((_, Err(e))) => Err(e),
            Some((_, Ok(None))) => Err("no plan was in force at the period's start".to_owned()),
            Some((sub, Ok(Some((period, plan_name, catalog))))) => {
                let events = store
                    .bill_events(
                        tenant,
                        std::slice::from_ref(&original.customer),
                        period.start - config.late_window,
                        period.end,
                        original.cutoff,
                    )
                    .await?;
                let mut events = events;
                events.sort_unstable_by_key(|e| e.stored_id);
                let mut usage = usage_by_period(tenant, &events, &rc.ctx);
                let earlier: Vec<Invoice> = rc
                    .invoices
                    .get(&sub.id)
                    .map(|l| {
                        l.iter()
                            .filter(|i| i.period.start < period.start)
                            .cloned()
                            .collect()
                    })
                    .unwrap_or_default();
                rc.inputs(
                    tenant,
                    sub,
                    period,
                    &plan_name,
                    &catalog,
                    original.cutoff,
                    &earlier,
                    &mut usage,
                    config,
                )
                .and_then(|inputs| {
                    bill_with_aggregates(&inputs, stored.id)
                        .map(|b| b.invoice)
                        .map_err(|f| f.to_string())
                })
            }
        };
        let identical = match replayed {
            Ok(mut replayed) => {
                replayed.number = original.number.clone();
                replayed.routes = original.routes.clone();
                differences.extend(diff(&original, &replayed));
                replayed.document() == stored.document
            }
            Err(reason) => {
                differences.push(format!("the period cannot be recomputed: {reason}"));
                false
            }
        };
        let mut estimates = Vec::new();
        for line in original.lines.iter().filter(|l| l.kind == LineKind::Usage) {
            let ids = store
                .line_events(tenant, original.id, line.number)
                .await?
                .unwrap_or_default();
            let ledger = store.ledger_of(tenant, &ids).await?;
            let meter = line.key.as_ref().map(|k| k.meter.as_str());
            let rows: Vec<_> = ledger
                .iter()
                .filter(|l| Some(l.meter.as_str()) == meter)
                .collect();
            estimates.push(EstimateCheck {
                line: line.number,
                amount_unrounded: line.amount_unrounded,
                estimates: (rows.len() == ids.len()).then(|| rows.iter().map(|r| r.revenue).sum()),
            });
        }
        results.push(ReplayResult {
            invoice: stored.id,
            number: stored.number.clone(),
            subscription: stored.subscription,
            customer: stored.customer.clone(),
            period_start: stored.period_start,
            identical,
            differences,
            estimates,
        });
    }
    Ok(results)
}
