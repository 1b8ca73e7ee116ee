//! What the enricher hands the store, and the running-total arithmetic
//! both backends share.
//!
//! The enricher claims a batch of pending events (a transaction that holds
//! them: on PostgreSQL a queue shard under an advisory lock, so several
//! enrichers share the queue and no event is processed twice), resolves each to ledger
//! intents, and completes the claim: running totals are locked once per key,
//! folded event by event, and the ledger rows, the totals and the queue
//! (enriched events leave it, the others are parked with their reason) are
//! written in the same transaction. Events are never rewritten.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use uuid::Uuid;

use crate::{Result, StoredEvent};

/// Shards of the enrichment log. Stored with every event (PostgreSQL): never
/// change it on a database that has events.
pub const ENRICH_SHARDS: u32 = 16;

/// The enrichment shard of a customer's events: FNV-1a (64-bit) over the
/// tenant id and the customer, finished with MurmurHash3's `fmix64` (FNV's
/// low bits depend only on the low bits of each byte: without the finisher
/// "x1", "xA" and "xa" share a shard), so that a customer's events are read
/// by one enricher at a time. Stable across platforms and releases, since it
/// is stored.
pub fn enrich_shard(tenant: Uuid, customer: &str) -> i16 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in tenant.as_bytes().iter().chain(customer.as_bytes()) {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash ^= hash >> 33;
    hash = hash.wrapping_mul(0xff51_afd7_ed55_8ccd);
    hash ^= hash >> 33;
    hash = hash.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    hash ^= hash >> 33;
    (hash % u64::from(ENRICH_SHARDS)) as i16
}

pub use aforo_core::revenue::{
    AggregationInput, Contribution, EnrichmentOutcome, EnrichmentState, LedgerIntent, PriceFn,
    TotalKey, TotalState, complete, fold, fold_input,
};

/// A batch of pending events held by one enricher until it completes.
#[async_trait]
pub trait EnrichmentClaim: Send {
    fn events(&self) -> &[StoredEvent];
    /// Writes the outcomes (one per claimed event) and releases the claim.
    /// Returns the number of ledger rows written.
    async fn complete(self: Box<Self>, outcomes: Vec<EnrichmentOutcome>) -> Result<usize>;
}

/// A claim completes with exactly one outcome per claimed event: an event
/// left without one would be passed by the cursor unenriched.
pub(crate) fn check_outcomes(events: &[StoredEvent], outcomes: &[EnrichmentOutcome]) -> Result<()> {
    let claimed: std::collections::HashSet<Uuid> = events.iter().map(|e| e.stored_id).collect();
    let answered: std::collections::HashSet<Uuid> = outcomes.iter().map(|o| o.event).collect();
    if outcomes.len() != events.len() || claimed != answered {
        return Err(crate::StoreError::Invalid(format!(
            "a claim of {} events was completed with {} outcomes for {} of them; nothing was written",
            events.len(),
            outcomes.len(),
            claimed.intersection(&answered).count()
        )));
    }
    Ok(())
}

/// Revenue, cost and margin of one (customer, meter, currency).
#[derive(Clone, Debug, PartialEq)]
pub struct RevenueRow {
    pub customer: String,
    pub meter: String,
    pub currency: String,
    pub quantity: Decimal,
    pub revenue: Decimal,
    pub cost: Decimal,
    pub events: i64,
}

/// One ledger row of an event: what one meter made of it.
#[derive(Clone, Debug, PartialEq)]
pub struct LedgerLine {
    pub event: Uuid,
    pub subscription: Uuid,
    pub meter: String,
    pub rate_plan: String,
    pub catalog_version: i64,
    pub quantity: Decimal,
    pub revenue: Decimal,
    pub currency: String,
    pub cost: Decimal,
}

/// Revenue and cost of one hour of event time, in one currency.
#[derive(Clone, Debug, PartialEq)]
pub struct HourRow {
    pub hour: DateTime<Utc>,
    pub currency: String,
    pub revenue: Decimal,
    pub cost: Decimal,
    pub events: i64,
}

#[derive(Clone, Debug, Default)]
pub struct RevenueQuery {
    pub customer: Option<String>,
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_are_stable_and_spread() {
        let tenant = Uuid::from_u128(0x0193_0000_0000_7000_8000_0000_0000_0001);
        // Stored with every event: these values must never change.
        let pinned: Vec<i16> = ["", "a", "customer-0", "customer-1", "x1", "xA", "xa"]
            .iter()
            .map(|c| enrich_shard(tenant, c))
            .collect();
        assert_eq!(pinned, [14, 3, 0, 15, 15, 5, 12]);
        let mut per_shard = [0u32; ENRICH_SHARDS as usize];
        for i in 0..16_000 {
            per_shard[enrich_shard(tenant, &format!("customer-{i}")) as usize] += 1;
        }
        // 1000 expected per shard: within a few percent (955–1043 here).
        assert!(
            per_shard.iter().all(|&n| (900..1100).contains(&n)),
            "{per_shard:?}"
        );
    }
}
