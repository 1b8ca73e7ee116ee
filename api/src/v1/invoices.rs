//! `/v1/invoices`: the summary every listing shows. An invoice's lines,
//! audit export and proofs are the billing domain's types.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct InvoiceSummary {
    pub id: Uuid,
    /// `INV-000001`, gapless per tenant in settlement order.
    pub number: String,
    pub subscription: Uuid,
    pub customer: String,
    #[serde(with = "super::time")]
    pub period_start: DateTime<Utc>,
    #[serde(with = "super::time")]
    pub period_end: DateTime<Utc>,
    /// Events stored after this instant wait for a later invoice.
    #[serde(with = "super::time")]
    pub cutoff: DateTime<Utc>,
    pub currency: String,
    #[serde(with = "super::money")]
    #[schema(value_type = String)]
    pub total: Decimal,
    #[serde(with = "super::time")]
    pub settled_at: DateTime<Utc>,
    /// SHA-256 of the stored document.
    pub document_hash: String,
}

impl From<&aforo_store::billing::StoredInvoice> for InvoiceSummary {
    fn from(i: &aforo_store::billing::StoredInvoice) -> Self {
        InvoiceSummary {
            id: i.id,
            number: i.number.clone(),
            subscription: i.subscription,
            customer: i.customer.clone(),
            period_start: i.period_start,
            period_end: i.period_end,
            cutoff: i.cutoff,
            currency: i.currency.clone(),
            total: i.total,
            settled_at: i.settled_at,
            document_hash: i.document_hash.clone(),
        }
    }
}
