//! Audit: an invoice exported with everything behind it, and a verifier
//! that trusts none of it.
//!
//! `export` writes invoice → lines → events: each event with its source,
//! tier, gate results, stored properties (the exact canonical bytes that
//! were hashed), enrichment context (the ledger rows the RevenueEstimator
//! wrote), validation hash and the Merkle proof from its leaf to its line's
//! root. `verify` recomputes every event's validation hash under the
//! tenant's key, every leaf, proof and root, and the document's hash, and
//! names each thing that does not match: an event altered in the store, a
//! line whose events changed, a document edited after settling.

use std::collections::BTreeMap;

use aforo_crds::event::format_time;
use aforo_crds::{GateResults, SourceEvent, Tier, validation_hash};
use aforo_store::{Store, StoredEvent, Tenant};
use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::merkle::{self, Proof};
use super::runner::{RunError, parse_invoice};
use super::{Invoice, Line};

pub const FORMAT: &str = "aforo.audit.v1";

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AuditExport {
    pub format: String,
    pub tenant: String,
    pub invoice_number: String,
    /// The invoice document exactly as stored and hashed.
    pub document: String,
    pub document_hash: String,
    pub lines: Vec<AuditLine>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AuditLine {
    pub number: u32,
    pub kind: String,
    pub description: String,
    pub amount: Decimal,
    pub merkle_root: Option<String>,
    pub events: Vec<AuditEvent>,
}

/// The ledger row the RevenueEstimator wrote for the event and this meter.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Enrichment {
    pub subscription: Uuid,
    pub meter: String,
    pub rate_plan: String,
    pub catalog_version: i64,
    pub quantity: Decimal,
    pub revenue: Decimal,
    pub currency: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AuditEvent {
    pub stored_id: Uuid,
    pub id: String,
    pub source: String,
    #[serde(rename = "type")]
    pub event_type: String,
    pub customer: String,
    pub time: String,
    /// Canonical JSON, as stored and hashed.
    pub properties: String,
    pub tier: String,
    pub tier_detail: String,
    pub gates: String,
    pub received_at: DateTime<Utc>,
    pub validation_hash: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enrichment: Option<Enrichment>,
    pub proof: Proof,
}

impl AuditEvent {
    fn of(e: &StoredEvent, enrichment: Option<Enrichment>, proof: Proof) -> Self {
        AuditEvent {
            stored_id: e.stored_id,
            id: e.event.id.clone(),
            source: e.event.source.clone(),
            event_type: e.event.event_type.clone(),
            customer: e.event.customer.clone(),
            time: format_time(&e.event.time),
            properties: e.properties_json.clone(),
            tier: e.event.tier.as_str().to_owned(),
            tier_detail: e.event.tier_detail.clone(),
            gates: e.gates.to_json(),
            received_at: e.received_at,
            validation_hash: e.validation_hash.clone(),
            enrichment,
            proof,
        }
    }

    /// The validation hash of the exported content under `key`.
    fn recompute(&self, key: &[u8], tenant: &str) -> Result<String, String> {
        let time = DateTime::parse_from_rfc3339(&self.time)
            .map_err(|_| format!("time {:?} is not RFC 3339", self.time))?
            .with_timezone(&Utc);
        let properties = serde_json::from_str(&self.properties)
            .map_err(|_| "properties are not a JSON object".to_owned())?;
        let tier: Tier = self
            .tier
            .parse()
            .map_err(|_| format!("tier {:?} is unknown", self.tier))?;
        let gates = GateResults::from_json(&self.gates).map_err(|e| e.to_string())?;
        let event = SourceEvent {
            id: self.id.clone(),
            source: self.source.clone(),
            event_type: self.event_type.clone(),
            customer: self.customer.clone(),
            time,
            properties,
            tier,
            tier_detail: self.tier_detail.clone(),
        };
        Ok(validation_hash(
            key,
            tenant,
            &self.stored_id.to_string(),
            &event,
            &self.properties,
            &gates,
        ))
    }
}

/// An invoice line's events as stored and the Merkle leaves of their
/// stored validation hashes, in line order.
pub struct LineLeaves {
    pub ids: Vec<Uuid>,
    pub events: BTreeMap<Uuid, StoredEvent>,
    pub leaves: Vec<merkle::Hash>,
}

/// Reads a line's lineage and events and computes its leaves; a missing
/// event keeps its place with an empty hash, so verification names it.
pub async fn line_leaves(
    store: &dyn Store,
    tenant: Uuid,
    invoice: Uuid,
    line: u32,
) -> Result<LineLeaves, RunError> {
    let ids = store
        .line_events(tenant, invoice, line)
        .await?
        .unwrap_or_default();
    let mut events: BTreeMap<Uuid, StoredEvent> = BTreeMap::new();
    for chunk in ids.chunks(5000) {
        for e in store.events_by_ids(tenant, chunk).await? {
            events.insert(e.stored_id, e);
        }
    }
    let leaves = ids
        .iter()
        .map(|id| {
            merkle::leaf(
                *id,
                events.get(id).map_or("", |e| e.validation_hash.as_str()),
            )
        })
        .collect();
    Ok(LineLeaves {
        ids,
        events,
        leaves,
    })
}

/// Exports an invoice (by id or number) of `tenant`.
pub async fn export(
    store: &dyn Store,
    tenant: &Tenant,
    invoice: &str,
) -> Result<Option<AuditExport>, RunError> {
    let Some(stored) = store.invoice(tenant.id, invoice).await? else {
        return Ok(None);
    };
    let doc = parse_invoice(&stored)?;
    let mut lines = Vec::new();
    for line in &doc.lines {
        let LineLeaves {
            ids,
            events,
            leaves,
        } = line_leaves(store, tenant.id, stored.id, line.number).await?;
        let mut ledger = BTreeMap::new();
        for chunk in ids.chunks(5000) {
            for l in store.ledger_of(tenant.id, chunk).await? {
                if line.key.as_ref().is_some_and(|k| k.meter == l.meter) {
                    ledger.insert(l.event, l);
                }
            }
        }
        let mut audit_events = Vec::with_capacity(ids.len());
        for (i, id) in ids.iter().enumerate() {
            let Some(e) = events.get(id) else { continue };
            let enrichment = ledger.get(id).map(|l| Enrichment {
                subscription: l.subscription,
                meter: l.meter.clone(),
                rate_plan: l.rate_plan.clone(),
                catalog_version: l.catalog_version,
                quantity: l.quantity,
                revenue: l.revenue,
                currency: l.currency.clone(),
            });
            let proof = merkle::proof(&leaves, i).unwrap_or(Proof {
                index: i,
                size: leaves.len(),
                path: vec![],
            });
            audit_events.push(AuditEvent::of(e, enrichment, proof));
        }
        lines.push(AuditLine {
            number: line.number,
            kind: line.kind.as_str().to_owned(),
            description: line.description.clone(),
            amount: line.amount,
            merkle_root: line.merkle_root.clone(),
            events: audit_events,
        });
    }
    Ok(Some(AuditExport {
        format: FORMAT.into(),
        tenant: tenant.name.clone(),
        invoice_number: stored.number.clone(),
        document: stored.document.clone(),
        document_hash: stored.document_hash.clone(),
        lines,
    }))
}

/// What `verify` found.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Verification {
    pub events_checked: u64,
    pub lines_checked: u64,
    pub problems: Vec<String>,
}

impl Verification {
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Verifies an export under the tenant's validation key.
pub fn verify(export: &AuditExport, key: &[u8]) -> Verification {
    let mut v = Verification::default();
    if export.format != FORMAT {
        v.problems
            .push(format!("format {:?} is not {FORMAT}", export.format));
        return v;
    }
    if Invoice::document_hash(&export.document) != export.document_hash {
        v.problems.push(format!(
            "invoice {}: the document does not match its hash",
            export.invoice_number
        ));
    }
    let doc: Option<Invoice> = serde_json::from_str(&export.document).ok();
    if doc.is_none() {
        v.problems
            .push("the invoice document is not readable".into());
    }
    for line in &export.lines {
        v.lines_checked += 1;
        let stored_line: Option<&Line> = doc
            .as_ref()
            .and_then(|d| d.lines.iter().find(|l| l.number == line.number));
        let root = stored_line.and_then(|l| l.merkle_root.clone());
        if stored_line.is_some_and(|l| l.event_count != line.events.len() as u64) {
            v.problems.push(format!(
                "line {}: the invoice counts {} events, the export has {}",
                line.number,
                stored_line.map_or(0, |l| l.event_count),
                line.events.len()
            ));
        }
        if root != line.merkle_root {
            v.problems.push(format!(
                "line {}: the exported Merkle root is not the invoice's",
                line.number
            ));
        }
        for e in &line.events {
            v.events_checked += 1;
            let name = format!("line {} event {} (id {:?})", line.number, e.stored_id, e.id);
            match e.recompute(key, &export.tenant) {
                Ok(hash) if hash == e.validation_hash => {}
                Ok(_) => v.problems.push(format!(
                    "{name}: its content does not match its validation hash"
                )),
                Err(reason) => v.problems.push(format!("{name}: {reason}")),
            }
            let leaf = merkle::leaf(e.stored_id, &e.validation_hash);
            if merkle::root_from_proof(leaf, &e.proof).as_deref() != root.as_deref() {
                v.problems.push(format!(
                    "{name}: its proof does not lead to the line's Merkle root"
                ));
            }
        }
        let recomputed = merkle::root(
            line.events
                .iter()
                .map(|e| (&e.stored_id, e.validation_hash.as_str())),
        );
        if recomputed != root {
            v.problems.push(format!(
                "line {}: the events' Merkle root does not match the invoice's",
                line.number
            ));
        }
    }
    v
}

/// The export as CSV: one row per (line, event), every field verify needs
/// except the document.
pub fn to_csv(export: &AuditExport) -> Result<Vec<u8>, String> {
    let mut w = csv::Writer::from_writer(Vec::new());
    let e = |e: csv::Error| e.to_string();
    w.write_record([
        "tenant",
        "invoice",
        "line",
        "line_kind",
        "line_amount",
        "merkle_root",
        "stored_id",
        "event_id",
        "source",
        "type",
        "customer",
        "time",
        "tier",
        "tier_detail",
        "gates",
        "properties",
        "received_at",
        "validation_hash",
        "rate_plan",
        "catalog_version",
        "revenue",
        "proof",
    ])
    .map_err(e)?;
    for line in &export.lines {
        for ev in &line.events {
            let proof = serde_json::to_string(&ev.proof).map_err(|e| e.to_string())?;
            let en = ev.enrichment.as_ref();
            w.write_record([
                export.tenant.as_str(),
                &export.invoice_number,
                &line.number.to_string(),
                &line.kind,
                &line.amount.to_string(),
                line.merkle_root.as_deref().unwrap_or(""),
                &ev.stored_id.to_string(),
                &ev.id,
                &ev.source,
                &ev.event_type,
                &ev.customer,
                &ev.time,
                &ev.tier,
                &ev.tier_detail,
                &ev.gates,
                &ev.properties,
                &format_time(&ev.received_at),
                &ev.validation_hash,
                en.map_or("", |e| e.rate_plan.as_str()),
                &en.map_or(String::new(), |e| e.catalog_version.to_string()),
                &en.map_or(String::new(), |e| e.revenue.to_string()),
                &proof,
            ])
            .map_err(e)?;
        }
    }
    w.into_inner().map_err(|e| e.to_string())
}
