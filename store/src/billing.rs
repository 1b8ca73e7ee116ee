//! What the bill run hands the store and reads back: settled invoices with
//! their lineage and deliveries, bill-run records, subscription discounts.
//! The store keeps an invoice's document as given (canonical JSON) and
//! never changes it.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use uuid::Uuid;

/// What a bill run reads of a stored event: only what resolution, the
/// cut-off and lineage need (decoding whole events was most of a run's CPU).
#[derive(Clone, Debug, PartialEq)]
pub struct BillEvent {
    pub stored_id: Uuid,
    pub event_type: String,
    pub customer: String,
    pub time: DateTime<Utc>,
    pub properties: serde_json::Map<String, serde_json::Value>,
    pub validation_hash: String,
    pub received_at: DateTime<Utc>,
}

/// An invoice to settle: numbered by the store, written with its lineage
/// and deliveries in one transaction.
#[derive(Clone, Debug)]
pub struct NewInvoice {
    pub id: Uuid,
    pub subscription: Uuid,
    pub customer: String,
    pub period_start: DateTime<Utc>,
    pub period_end: DateTime<Utc>,
    pub cutoff: DateTime<Utc>,
    pub currency: String,
    pub total: Decimal,
    pub bill_run: Uuid,
    /// Canonical JSON; the number is not part of it.
    pub document: String,
    pub document_hash: String,
    /// (line number, the line's events in line order).
    pub lineage: Vec<(u32, Vec<Uuid>)>,
    /// One delivery per external route (JSON of the route).
    pub deliveries: Vec<String>,
}

/// What settling one invoice did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SettleOutcome {
    /// Written, with this number.
    Settled { number: String },
    /// The period was already invoiced (by an earlier or concurrent run).
    AlreadyInvoiced { number: String },
}

#[derive(Clone, Debug, PartialEq)]
pub struct StoredInvoice {
    pub id: Uuid,
    pub number: String,
    pub subscription: Uuid,
    pub customer: String,
    pub period_start: DateTime<Utc>,
    pub period_end: DateTime<Utc>,
    pub cutoff: DateTime<Utc>,
    pub currency: String,
    pub total: Decimal,
    pub bill_run: Uuid,
    pub document: String,
    pub document_hash: String,
    pub settled_at: DateTime<Utc>,
}

#[derive(Clone, Debug, Default)]
pub struct InvoiceQuery {
    pub customer: Option<String>,
    pub subscription: Option<Uuid>,
    /// Invoices numbered after this one.
    pub after: Option<String>,
    pub limit: u32,
}

/// A bill run as recorded: counts and its report (JSON: failures and
/// reconciliation differences).
#[derive(Clone, Debug, PartialEq)]
pub struct BillRunRecord {
    pub id: Uuid,
    pub tenant: Uuid,
    pub as_of: DateTime<Utc>,
    pub cutoff: DateTime<Utc>,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    pub invoiced: i64,
    pub failed: i64,
    pub report: String,
}

#[derive(Clone, Debug, PartialEq)]
pub struct SubscriptionDiscount {
    pub id: Uuid,
    pub subscription: Uuid,
    pub percent: Option<Decimal>,
    pub amount: Option<Decimal>,
    pub valid_from: Option<DateTime<Utc>>,
    pub valid_until: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
}

/// A delivery due: an invoice and one of its routes.
#[derive(Clone, Debug, PartialEq)]
pub struct Delivery {
    pub id: Uuid,
    pub tenant: Uuid,
    pub invoice: Uuid,
    pub route: String,
    pub attempts: i32,
}

/// Packs event ids for the lineage index: 16 bytes each, in order.
pub fn pack_ids(ids: &[Uuid]) -> Vec<u8> {
    let mut out = Vec::with_capacity(ids.len() * 16);
    for id in ids {
        out.extend_from_slice(id.as_bytes());
    }
    out
}

/// Unpacks [`pack_ids`]; `None` when the length is not a multiple of 16.
pub fn unpack_ids(bytes: &[u8]) -> Option<Vec<Uuid>> {
    if !bytes.len().is_multiple_of(16) {
        return None;
    }
    Some(
        bytes
            .chunks_exact(16)
            .map(|c| Uuid::from_bytes(c.try_into().unwrap_or([0; 16])))
            .collect(),
    )
}

/// The number of a tenant's `n`th invoice.
pub fn invoice_number(n: i64) -> String {
    format!("INV-{n:06}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_pack_and_unpack() {
        let ids = vec![Uuid::now_v7(), Uuid::now_v7()];
        assert_eq!(unpack_ids(&pack_ids(&ids)), Some(ids));
        assert_eq!(unpack_ids(&[0; 17]), None);
        assert_eq!(invoice_number(42), "INV-000042");
    }
}
