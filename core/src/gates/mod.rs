//! The four gates every event passes, in order:
//!
//! 1. [`schema`]: required fields present and well formed → `SCHEMA_*`.
//! 2. [`timestamp`]: not too far in the future, not too old → `TIMESTAMP_*`.
//! 3. [`idempotency`]: the event's key; the claim itself is made by the
//!    store in the same transaction as the write, so it is exact.
//! 4. [`late_arrival`]: older than the late bound → accepted, flagged LATE.
//!
//! Gates are pure functions of the candidate, the catalog, the configuration
//! and `now`.
//! [`evaluate`] runs gates 1, 2 and 4 and computes the key for gate 3; the
//! late verdict only matters for an event that gate 3 finds new.

pub mod idempotency;
pub mod late_arrival;
pub mod schema;
pub mod timestamp;

use aforo_crds::compile::CatalogSnapshot;
use aforo_crds::{RejectReason, SourceEvent, Tier};
use chrono::{DateTime, Duration, Utc};
use serde_json::Value;

pub use schema::SchemaLimits;

/// The bounds of the gates. Defaults follow DESIGN §4.
#[derive(Clone, Debug)]
pub struct GateConfig {
    /// How far ahead of `now` an event may be dated.
    pub max_future: Duration,
    /// How far behind `now` an event may be dated; also how long dedup is
    /// guaranteed (keys are in fact kept for as long as the events are).
    pub max_age: Duration,
    /// Older than this, an accepted event is flagged LATE.
    pub late_after: Duration,
    pub schema: SchemaLimits,
}

impl Default for GateConfig {
    fn default() -> Self {
        GateConfig {
            max_future: Duration::minutes(5),
            max_age: Duration::days(90),
            late_after: Duration::hours(24),
            schema: SchemaLimits::default(),
        }
    }
}

/// An event as it arrived, before any gate: every field may be missing or
/// malformed. Front doors build candidates; only the gates judge them.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct EventCandidate {
    pub id: Option<String>,
    pub source: Option<String>,
    pub event_type: Option<String>,
    pub customer: Option<String>,
    /// `Err` carries the unparseable text.
    pub time: Option<Result<DateTime<Utc>, String>>,
    pub properties: Option<Value>,
    /// `None`: the front door's own tier. `Err` carries the unknown name.
    pub tier: Option<Result<Tier, String>>,
    pub tier_detail: Option<String>,
    /// A structural problem the front door found while reading the payload
    /// (a field of the wrong JSON type, say).
    pub malformed: Option<String>,
}

/// An event that passed the gates it can pass alone.
#[derive(Clone, Debug)]
pub struct Admitted {
    pub event: SourceEvent,
    pub properties_json: String,
    pub dedup_key: String,
    pub late: bool,
    /// A catalog exists and no meter takes this event's type.
    pub unmetered: bool,
}

/// Why an event was turned away.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejected {
    pub reason: RejectReason,
    pub message: String,
}

#[derive(Clone, Debug)]
pub enum GateDecision {
    Admit(Admitted),
    Reject(Rejected),
}

/// Runs the gates over one candidate. `catalog` is the tenant's catalog in
/// force, `None` before the first one is applied (then no event is flagged
/// UNMETERED: there is nothing yet to be metered by).
pub fn evaluate(
    candidate: &EventCandidate,
    front_door: Tier,
    config: &GateConfig,
    catalog: Option<&CatalogSnapshot>,
    now: DateTime<Utc>,
) -> GateDecision {
    let (event, properties_json) = match schema::check(candidate, front_door, &config.schema) {
        Ok(checked) => checked,
        Err(rejected) => return GateDecision::Reject(rejected),
    };
    let unmetered = match catalog.map(|c| schema::check_meters(&event, c)) {
        None => false,
        Some(Ok(metered)) => !metered,
        Some(Err(rejected)) => return GateDecision::Reject(rejected),
    };
    if let Err(rejected) = timestamp::check(event.time, now, config) {
        return GateDecision::Reject(rejected);
    }
    let late = late_arrival::is_late(event.time, now, config);
    let dedup_key = idempotency::key(&event);
    GateDecision::Admit(Admitted {
        event,
        properties_json,
        dedup_key,
        late,
        unmetered,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use serde_json::json;

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 29, 12, 0, 0).unwrap()
    }

    fn candidate(id: Option<&str>, time: DateTime<Utc>) -> EventCandidate {
        EventCandidate {
            id: id.map(str::to_owned),
            source: Some("api".into()),
            event_type: Some("tokens".into()),
            customer: Some("acme".into()),
            time: Some(Ok(time)),
            properties: Some(json!({"tokens": 5})),
            ..Default::default()
        }
    }

    fn verdict(c: &EventCandidate) -> Result<bool, RejectReason> {
        match evaluate(c, Tier::Rest, &GateConfig::default(), None, now()) {
            GateDecision::Admit(a) => Ok(a.late),
            GateDecision::Reject(r) => Err(r.reason),
        }
    }

    /// The batch of the acceptance criteria, one event per gate outcome.
    #[test]
    fn the_mixed_batch_gets_one_verdict_per_gate() {
        let valid = candidate(Some("a"), now());
        let future = candidate(Some("b"), now() + Duration::minutes(6));
        let ancient = candidate(Some("c"), now() - Duration::days(91));
        let late = candidate(Some("d"), now() - Duration::days(2));
        let no_id = candidate(None, now());
        assert_eq!(verdict(&valid), Ok(false));
        assert_eq!(verdict(&future), Err(RejectReason::TimestampInFuture));
        assert_eq!(verdict(&ancient), Err(RejectReason::TimestampTooOld));
        assert_eq!(verdict(&late), Ok(true));
        assert_eq!(verdict(&no_id), Err(RejectReason::SchemaMissingId));
    }

    fn catalog() -> CatalogSnapshot {
        serde_json::from_value(json!({
            "meters": {"tokens": {
                "eventType": "tokens", "aggregation": "SUM", "valueProperty": "$.tokens",
                "requiredProperties": [{"name": "tokens", "type": "number"}]
            }},
            "products": {}, "ratePlans": {}, "webhookSources": {}, "usageAlerts": {}
        }))
        .unwrap()
    }

    fn with_catalog(c: &EventCandidate) -> Result<bool, RejectReason> {
        match evaluate(
            c,
            Tier::Rest,
            &GateConfig::default(),
            Some(&catalog()),
            now(),
        ) {
            GateDecision::Admit(a) => Ok(a.unmetered),
            GateDecision::Reject(r) => Err(r.reason),
        }
    }

    #[test]
    fn meters_name_the_properties_their_events_must_carry() {
        let ok = candidate(Some("a"), now());
        assert_eq!(with_catalog(&ok), Ok(false));
        let mut missing = candidate(Some("b"), now());
        missing.properties = Some(json!({"chars": 5}));
        assert_eq!(
            with_catalog(&missing),
            Err(RejectReason::SchemaMissingProperty)
        );
        let mut text = candidate(Some("c"), now());
        text.properties = Some(json!({"tokens": "5"}));
        assert_eq!(with_catalog(&text), Err(RejectReason::SchemaPropertyType));
    }

    #[test]
    fn an_event_no_meter_takes_is_accepted_and_flagged_unmetered() {
        let mut other = candidate(Some("d"), now());
        other.event_type = Some("calls".into());
        assert_eq!(with_catalog(&other), Ok(true));
        // Before any catalog there is nothing to be unmetered by.
        assert_eq!(verdict(&other), Ok(false));
    }

    #[test]
    fn the_schema_gate_runs_before_the_timestamp_gate() {
        let c = candidate(None, now() + Duration::days(1));
        assert_eq!(verdict(&c), Err(RejectReason::SchemaMissingId));
    }
}
