//! From the store's records to the wire.

use aforo_store as store;

use super::catalog::CatalogVersion;
use super::customers::Customer;
use super::events::{Gates, Rejection, StoredEvent};
use super::subscriptions::{Discount, Phase, Subscription};
use super::usage::{Hour, RevenueLine, RevenueRow};

impl CatalogVersion {
    /// A version without its snapshot (listings).
    pub fn summary(v: &store::CatalogVersion) -> Self {
        CatalogVersion {
            version: v.version,
            content_hash: v.content_hash.clone(),
            effective_from: v.effective_from,
            applied_at: v.applied_at,
            snapshot: None,
        }
    }

    /// A version with its compiled snapshot.
    pub fn full(v: &store::CatalogVersion) -> Result<Self, serde_json::Error> {
        Ok(CatalogVersion {
            snapshot: Some(serde_json::from_str(&v.snapshot)?),
            ..CatalogVersion::summary(v)
        })
    }
}

impl From<&store::Customer> for Customer {
    fn from(c: &store::Customer) -> Self {
        Customer {
            id: c.external_id.clone(),
            name: c.name.clone(),
            currency: c.currency.clone(),
            tax_region: c.tax_region.clone(),
            metadata: c.metadata.clone(),
            created_at: c.created_at,
            updated_at: c.updated_at,
        }
    }
}

impl From<&store::Subscription> for Subscription {
    fn from(s: &store::Subscription) -> Self {
        Subscription {
            id: s.id,
            customer: s.customer.clone(),
            starts_at: s.starts_at,
            ends_at: s.ends_at,
            billing_anchor_day: s.billing_anchor_day,
            phases: s
                .phases
                .iter()
                .map(|p| Phase {
                    rate_plan: p.rate_plan.clone(),
                    starts_at: p.starts_at,
                    ends_at: p.ends_at,
                    recorded_at: p.recorded_at,
                })
                .collect(),
        }
    }
}

impl From<&store::billing::SubscriptionDiscount> for Discount {
    fn from(d: &store::billing::SubscriptionDiscount) -> Self {
        Discount {
            id: d.id,
            subscription: d.subscription,
            percent: d.percent,
            amount: d.amount,
            valid_from: d.valid_from,
            valid_until: d.valid_until,
        }
    }
}

impl From<&store::RevenueRow> for RevenueRow {
    fn from(r: &store::RevenueRow) -> Self {
        RevenueRow {
            customer: r.customer.clone(),
            meter: r.meter.clone(),
            currency: r.currency.clone(),
            quantity: r.quantity,
            revenue: r.revenue,
            cost: r.cost,
            margin: r.revenue - r.cost,
            events: r.events,
        }
    }
}

impl From<&store::LedgerLine> for RevenueLine {
    fn from(l: &store::LedgerLine) -> Self {
        RevenueLine {
            meter: l.meter.clone(),
            subscription: l.subscription,
            rate_plan: l.rate_plan.clone(),
            catalog_version: l.catalog_version,
            quantity: l.quantity,
            revenue: l.revenue,
            currency: l.currency.clone(),
            cost: l.cost,
        }
    }
}

impl From<&store::HourRow> for Hour {
    fn from(h: &store::HourRow) -> Self {
        Hour {
            hour: h.hour,
            currency: h.currency.clone(),
            revenue: h.revenue,
            cost: h.cost,
            margin: h.revenue - h.cost,
            events: h.events,
        }
    }
}

impl From<&aforo_crds::GateResults> for Gates {
    fn from(g: &aforo_crds::GateResults) -> Self {
        Gates {
            schema: g.schema.code().into_owned(),
            timestamp: g.timestamp.code().into_owned(),
            idempotency: g.idempotency.code().into_owned(),
            late_arrival: g.late_arrival.code().into_owned(),
        }
    }
}

impl StoredEvent {
    /// A stored event with what each meter made of it.
    pub fn new(e: &store::StoredEvent, revenue: Vec<RevenueLine>) -> Self {
        StoredEvent {
            stored_event_id: e.stored_id,
            cursor: e.seq.to_string(),
            id: e.event.id.clone(),
            source: e.event.source.clone(),
            event_type: e.event.event_type.clone(),
            customer: e.event.customer.clone(),
            time: e.event.time,
            properties: e.event.properties.clone(),
            tier: e.event.tier.as_str().to_owned(),
            tier_detail: e.event.tier_detail.clone(),
            status: e.status.clone(),
            flags: e.flags.iter().map(|f| f.as_str().to_owned()).collect(),
            gates: (&e.gates).into(),
            validation_hash: e.validation_hash.clone(),
            received_at: e.received_at,
            node: e.node.clone(),
            enrichment: e.enrichment.clone().unwrap_or_else(|| "PENDING".into()),
            revenue,
        }
    }
}

impl From<&store::StoredRejection> for Rejection {
    fn from(r: &store::StoredRejection) -> Self {
        Rejection {
            stored_event_id: r.stored_id,
            cursor: r.seq.to_string(),
            id: r.event_id.clone(),
            source: r.source.clone(),
            event_type: r.event_type.clone(),
            customer: r.customer.clone(),
            reason: r.reason.clone(),
            message: r.message.clone(),
            gates: (&r.gates).into(),
            payload: r.payload.clone(),
            tier: r.tier.as_str().to_owned(),
            tier_detail: r.tier_detail.clone(),
            received_at: r.received_at,
            node: r.node.clone(),
        }
    }
}
