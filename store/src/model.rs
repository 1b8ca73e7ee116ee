//! The values that cross the storage interface.

use aforo_crds::{EventFlags, GateResults, SourceEvent, Tier};
use chrono::{DateTime, Utc};
use uuid::Uuid;

/// The domain's own types, defined in `aforo-core` (pure code reads them).
pub use aforo_core::model::{CatalogVersion, StoredEvent, Subscription, SubscriptionPhase};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tenant {
    pub id: Uuid,
    pub name: String,
    /// Key of the tenant's validation HMAC.
    pub hmac_key: Vec<u8>,
    pub created_at: DateTime<Utc>,
}

/// An event that passed the schema and timestamp gates, ready to be claimed
/// and written. `validation_hash` was computed over `stored_id`, so the
/// stored row is sealed the moment it is written.
#[derive(Clone, Debug)]
pub struct NewEvent {
    pub tenant: Uuid,
    pub stored_id: Uuid,
    pub dedup_key: String,
    pub event: SourceEvent,
    /// Canonical JSON of `event.properties`, stored byte for byte.
    pub properties_json: String,
    pub flags: EventFlags,
    pub gates: GateResults,
    pub validation_hash: String,
    pub received_at: DateTime<Utc>,
    pub node: String,
    /// The W3C traceparent of the request that stored it, when traced; not
    /// part of the event or its hash.
    pub trace_parent: Option<String>,
}

/// An event a gate rejected, kept with the payload it arrived as.
#[derive(Clone, Debug)]
pub struct NewRejection {
    pub tenant: Uuid,
    pub stored_id: Uuid,
    pub event_id: Option<String>,
    pub source: Option<String>,
    pub event_type: Option<String>,
    pub customer: Option<String>,
    pub reason: String,
    pub message: String,
    pub gates: GateResults,
    pub payload: String,
    pub tier: Tier,
    pub tier_detail: String,
    pub received_at: DateTime<Utc>,
    pub node: String,
}

/// What one transaction writes.
#[derive(Clone, Debug, Default)]
pub struct CommitBatch {
    pub events: Vec<NewEvent>,
    pub rejections: Vec<NewRejection>,
}

/// The fate of one [`NewEvent`] in a commit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CommitOutcome {
    /// Stored under the event's own `stored_id`.
    Inserted,
    /// The key was claimed before (by an earlier commit, or by an earlier
    /// event in this one); `original` is the stored id that holds it.
    Duplicate { original: Uuid },
}

#[derive(Clone, Debug, PartialEq)]
pub struct StoredRejection {
    pub stored_id: Uuid,
    pub seq: i64,
    pub event_id: Option<String>,
    pub source: Option<String>,
    pub event_type: Option<String>,
    pub customer: Option<String>,
    pub reason: String,
    pub message: String,
    pub gates: GateResults,
    pub payload: String,
    pub tier: Tier,
    pub tier_detail: String,
    pub received_at: DateTime<Utc>,
    pub node: String,
}

/// Filters for listing events. Every filter is optional; results come in
/// storage order (`seq`), after the cursor.
#[derive(Clone, Debug, Default)]
pub struct EventQuery {
    pub customer: Option<String>,
    pub event_type: Option<String>,
    /// Event time, inclusive.
    pub from: Option<DateTime<Utc>>,
    /// Event time, exclusive.
    pub to: Option<DateTime<Utc>>,
    pub status: Option<String>,
    pub flags: EventFlags,
    /// The cursor: only events after this `seq` in the chosen order.
    pub after: Option<i64>,
    /// Newest first (the cursor then counts down).
    pub descending: bool,
    pub limit: u32,
}

#[derive(Clone, Debug, Default)]
pub struct RejectionQuery {
    pub reason: Option<String>,
    pub after: Option<i64>,
    pub limit: u32,
}

/// One page of a list, and where the next one starts.
#[derive(Clone, Debug)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// The `seq` to pass as `after` for the next page; `None` when this page
    /// was not full.
    pub next_after: Option<i64>,
}

impl<T> Page<T> {
    pub(crate) fn new(items: Vec<T>, limit: u32, seq: impl Fn(&T) -> i64) -> Self {
        let next_after = if items.len() as u32 >= limit {
            items.last().map(&seq)
        } else {
            None
        };
        Page { items, next_after }
    }
}

pub(crate) fn clamp_limit(limit: u32) -> u32 {
    match limit {
        0 => 100,
        n => n.min(crate::MAX_PAGE_SIZE),
    }
}

/// A stored event as a backend reads it, before the shared decoding.
pub(crate) struct EventRow {
    pub stored_id: Uuid,
    pub seq: i64,
    pub tenant: Uuid,
    pub event_id: String,
    pub source: String,
    pub event_type: String,
    pub customer: String,
    pub time: DateTime<Utc>,
    pub properties_json: String,
    pub tier: String,
    pub tier_detail: String,
    pub status: String,
    pub flags: i64,
    pub gates: String,
    pub validation_hash: String,
    pub received_at: DateTime<Utc>,
    pub node: String,
    pub enrichment: Option<String>,
    pub trace_parent: Option<String>,
}

impl EventRow {
    pub fn decode(self) -> Result<StoredEvent, crate::StoreError> {
        let corrupt =
            |what: String| crate::StoreError::Corrupt(format!("event {}: {what}", self.stored_id));
        let properties = match serde_json::from_str(&self.properties_json) {
            Ok(serde_json::Value::Object(map)) => map,
            _ => return Err(corrupt("properties are not a JSON object".into())),
        };
        let tier = self
            .tier
            .parse::<Tier>()
            .map_err(|e| corrupt(e.to_string()))?;
        let gates = GateResults::from_json(&self.gates).map_err(|e| corrupt(e.to_string()))?;
        let flags =
            u8::try_from(self.flags).map_err(|_| corrupt(format!("flags {}", self.flags)))?;
        Ok(StoredEvent {
            stored_id: self.stored_id,
            seq: self.seq,
            tenant: self.tenant,
            event: SourceEvent {
                id: self.event_id,
                source: self.source,
                event_type: self.event_type,
                customer: self.customer,
                time: self.time,
                properties,
                tier,
                tier_detail: self.tier_detail,
            },
            properties_json: self.properties_json,
            status: self.status,
            flags: EventFlags::from_bits(flags),
            gates,
            validation_hash: self.validation_hash,
            received_at: self.received_at,
            node: self.node,
            enrichment: self.enrichment,
            trace_parent: self.trace_parent,
        })
    }
}

/// A stored rejection as a backend reads it.
pub(crate) struct RejectionRow {
    pub stored_id: Uuid,
    pub seq: i64,
    pub event_id: Option<String>,
    pub source: Option<String>,
    pub event_type: Option<String>,
    pub customer: Option<String>,
    pub reason: String,
    pub message: String,
    pub gates: String,
    pub payload: String,
    pub tier: String,
    pub tier_detail: String,
    pub received_at: DateTime<Utc>,
    pub node: String,
}

impl RejectionRow {
    pub fn decode(self) -> Result<StoredRejection, crate::StoreError> {
        let corrupt = |what: String| {
            crate::StoreError::Corrupt(format!("rejection {}: {what}", self.stored_id))
        };
        let tier = self
            .tier
            .parse::<Tier>()
            .map_err(|e| corrupt(e.to_string()))?;
        let gates = GateResults::from_json(&self.gates).map_err(|e| corrupt(e.to_string()))?;
        Ok(StoredRejection {
            stored_id: self.stored_id,
            seq: self.seq,
            event_id: self.event_id,
            source: self.source,
            event_type: self.event_type,
            customer: self.customer,
            reason: self.reason,
            message: self.message,
            gates,
            payload: self.payload,
            tier,
            tier_detail: self.tier_detail,
            received_at: self.received_at,
            node: self.node,
        })
    }
}

/// Where a commit inserts its events: sorted by (tenant, key) so that
/// concurrent transactions take unique-index locks in one order and cannot
/// deadlock on each other.
pub(crate) fn insertion_order(events: &[NewEvent]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..events.len()).collect();
    order.sort_by(|&a, &b| {
        (events[a].tenant, &events[a].dedup_key).cmp(&(events[b].tenant, &events[b].dedup_key))
    });
    order
}

/// What `apply_catalog` stores when the content is new.
#[derive(Clone, Debug)]
pub struct NewCatalogVersion {
    pub content_hash: String,
    pub effective_from: Option<DateTime<Utc>>,
    pub snapshot: String,
}

/// The version in force after an apply, and whether the apply created it.
#[derive(Clone, Debug, PartialEq)]
pub struct AppliedCatalog {
    pub version: CatalogVersion,
    pub created: bool,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Customer {
    pub id: Uuid,
    pub external_id: String,
    pub name: String,
    pub currency: Option<String>,
    pub tax_region: Option<String>,
    pub metadata: serde_json::Map<String, serde_json::Value>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A customer as created or updated, keyed by its external id.
#[derive(Clone, Debug, Default)]
pub struct CustomerInput {
    pub external_id: String,
    pub name: String,
    pub currency: Option<String>,
    pub tax_region: Option<String>,
    pub metadata: serde_json::Map<String, serde_json::Value>,
}

#[derive(Clone, Debug)]
pub struct SubscriptionInput {
    /// The customer's external id.
    pub customer: String,
    pub rate_plan: String,
    pub starts_at: DateTime<Utc>,
    pub ends_at: Option<DateTime<Utc>>,
    pub billing_anchor_day: Option<u8>,
}

/// Checks a plan change against a subscription's phases: it must take
/// effect after the open phase began and before the subscription ends.
pub(crate) fn check_plan_change(
    sub: &Subscription,
    at: DateTime<Utc>,
) -> Result<(), crate::StoreError> {
    let open = sub
        .phases
        .last()
        .filter(|p| p.ends_at.is_none() || p.ends_at == sub.ends_at)
        .ok_or_else(|| crate::StoreError::Invalid(format!("subscription {} has ended", sub.id)))?;
    if at <= open.starts_at {
        return Err(crate::StoreError::Invalid(format!(
            "a plan change must take effect after the current plan began ({}); the past is not rewritten",
            open.starts_at.to_rfc3339()
        )));
    }
    if sub.ends_at.is_some_and(|end| at >= end) {
        return Err(crate::StoreError::Invalid(format!(
            "the subscription ends before {}",
            at.to_rfc3339()
        )));
    }
    Ok(())
}
