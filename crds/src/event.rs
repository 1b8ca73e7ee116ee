//! The Source Event and what the gates concluded about it.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, SecondsFormat, Utc};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::Sha256;

use crate::canonical;

/// The front door an event came through.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Tier {
    Gateway,
    Sdk,
    Rest,
    Webhook,
    Batch,
    Mcp,
}

impl Tier {
    pub const ALL: [Tier; 6] = [
        Tier::Gateway,
        Tier::Sdk,
        Tier::Rest,
        Tier::Webhook,
        Tier::Batch,
        Tier::Mcp,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Tier::Gateway => "GATEWAY",
            Tier::Sdk => "SDK",
            Tier::Rest => "REST",
            Tier::Webhook => "WEBHOOK",
            Tier::Batch => "BATCH",
            Tier::Mcp => "MCP",
        }
    }
}

impl fmt::Display for Tier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A name that is not one of the enum's spellings.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {kind} {value:?}")]
pub struct UnknownName {
    pub kind: &'static str,
    pub value: String,
}

impl FromStr for Tier {
    type Err = UnknownName;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Tier::ALL
            .into_iter()
            .find(|t| t.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| UnknownName {
                kind: "tier",
                value: s.to_owned(),
            })
    }
}

/// A billable fact that passed the schema gate: every field present and well
/// formed. `time` is held at microsecond precision, the precision the stores
/// keep, so what is hashed is what is stored.
#[derive(Clone, Debug, PartialEq)]
pub struct SourceEvent {
    pub id: String,
    pub source: String,
    pub event_type: String,
    pub customer: String,
    pub time: DateTime<Utc>,
    pub properties: Map<String, Value>,
    pub tier: Tier,
    pub tier_detail: String,
}

impl SourceEvent {
    /// The properties in their canonical JSON form, as stored and hashed.
    pub fn canonical_properties(&self) -> String {
        canonical::object_to_string(&self.properties)
    }
}

/// Formats a time the one way aforo writes times: RFC 3339, UTC, microseconds.
pub fn format_time(time: &DateTime<Utc>) -> String {
    time.to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// A mark on an accepted event that asks for attention later.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum EventFlag {
    /// Older than the late-arrival bound; reconciled against closed periods.
    Late,
    /// No meter takes the event's type.
    Unmetered,
    /// The customer is not known.
    Unattributed,
}

impl EventFlag {
    pub const ALL: [EventFlag; 3] = [
        EventFlag::Late,
        EventFlag::Unmetered,
        EventFlag::Unattributed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventFlag::Late => "LATE",
            EventFlag::Unmetered => "UNMETERED",
            EventFlag::Unattributed => "UNATTRIBUTED",
        }
    }

    fn bit(self) -> u8 {
        match self {
            EventFlag::Late => 1,
            EventFlag::Unmetered => 2,
            EventFlag::Unattributed => 4,
        }
    }
}

impl FromStr for EventFlag {
    type Err = UnknownName;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        EventFlag::ALL
            .into_iter()
            .find(|f| f.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| UnknownName {
                kind: "flag",
                value: s.to_owned(),
            })
    }
}

/// A set of [`EventFlag`]s, stored as a small integer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct EventFlags(u8);

impl EventFlags {
    pub fn from_bits(bits: u8) -> Self {
        EventFlags(bits & 0b111)
    }
    pub fn bits(self) -> u8 {
        self.0
    }
    pub fn with(mut self, flag: EventFlag) -> Self {
        self.0 |= flag.bit();
        self
    }
    pub fn contains(self, flag: EventFlag) -> bool {
        self.0 & flag.bit() != 0
    }
    pub fn iter(self) -> impl Iterator<Item = EventFlag> {
        EventFlag::ALL
            .into_iter()
            .filter(move |f| self.contains(*f))
    }
}

/// Why an event was rejected. The code (`as_str`) is part of the API: clients
/// branch on it, so codes are only ever added, never renamed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RejectReason {
    SchemaMissingId,
    SchemaMissingSource,
    SchemaMissingType,
    SchemaMissingCustomer,
    SchemaMissingTime,
    SchemaInvalidTime,
    SchemaInvalidTier,
    SchemaFieldTooLong,
    SchemaInvalidCharacters,
    SchemaPropertiesNotObject,
    SchemaPropertiesTooDeep,
    SchemaPropertiesTooLarge,
    SchemaMalformed,
    SchemaMissingProperty,
    SchemaPropertyType,
    TimestampInFuture,
    TimestampTooOld,
}

impl RejectReason {
    pub const ALL: [RejectReason; 17] = [
        RejectReason::SchemaMissingId,
        RejectReason::SchemaMissingSource,
        RejectReason::SchemaMissingType,
        RejectReason::SchemaMissingCustomer,
        RejectReason::SchemaMissingTime,
        RejectReason::SchemaInvalidTime,
        RejectReason::SchemaInvalidTier,
        RejectReason::SchemaFieldTooLong,
        RejectReason::SchemaInvalidCharacters,
        RejectReason::SchemaPropertiesNotObject,
        RejectReason::SchemaPropertiesTooDeep,
        RejectReason::SchemaPropertiesTooLarge,
        RejectReason::SchemaMalformed,
        RejectReason::SchemaMissingProperty,
        RejectReason::SchemaPropertyType,
        RejectReason::TimestampInFuture,
        RejectReason::TimestampTooOld,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RejectReason::SchemaMissingId => "SCHEMA_MISSING_ID",
            RejectReason::SchemaMissingSource => "SCHEMA_MISSING_SOURCE",
            RejectReason::SchemaMissingType => "SCHEMA_MISSING_TYPE",
            RejectReason::SchemaMissingCustomer => "SCHEMA_MISSING_CUSTOMER",
            RejectReason::SchemaMissingTime => "SCHEMA_MISSING_TIME",
            RejectReason::SchemaInvalidTime => "SCHEMA_INVALID_TIME",
            RejectReason::SchemaInvalidTier => "SCHEMA_INVALID_TIER",
            RejectReason::SchemaFieldTooLong => "SCHEMA_FIELD_TOO_LONG",
            RejectReason::SchemaInvalidCharacters => "SCHEMA_INVALID_CHARACTERS",
            RejectReason::SchemaPropertiesNotObject => "SCHEMA_PROPERTIES_NOT_OBJECT",
            RejectReason::SchemaPropertiesTooDeep => "SCHEMA_PROPERTIES_TOO_DEEP",
            RejectReason::SchemaPropertiesTooLarge => "SCHEMA_PROPERTIES_TOO_LARGE",
            RejectReason::SchemaMalformed => "SCHEMA_MALFORMED",
            RejectReason::SchemaMissingProperty => "SCHEMA_MISSING_PROPERTY",
            RejectReason::SchemaPropertyType => "SCHEMA_PROPERTY_TYPE",
            RejectReason::TimestampInFuture => "TIMESTAMP_IN_FUTURE",
            RejectReason::TimestampTooOld => "TIMESTAMP_TOO_OLD",
        }
    }

    /// The gate that gives this reason.
    pub fn gate(self) -> Gate {
        match self {
            RejectReason::TimestampInFuture | RejectReason::TimestampTooOld => Gate::Timestamp,
            _ => Gate::Schema,
        }
    }
}

impl fmt::Display for RejectReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for RejectReason {
    type Err = UnknownName;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        RejectReason::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| UnknownName {
                kind: "reject reason",
                value: s.to_owned(),
            })
    }
}

/// The four gates, in the order they run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Gate {
    Schema,
    Timestamp,
    Idempotency,
    LateArrival,
}

/// What one gate concluded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GateVerdict {
    Pass,
    Fail(RejectReason),
    /// An earlier gate rejected the event.
    NotRun,
    /// Idempotency: the key was not seen before.
    New,
    /// Idempotency: the key was seen before.
    Duplicate,
    /// Late arrival: within the bound.
    OnTime,
    /// Late arrival: older than the bound; accepted and flagged.
    Late,
}

impl GateVerdict {
    pub fn code(self) -> std::borrow::Cow<'static, str> {
        use std::borrow::Cow::Borrowed;
        match self {
            GateVerdict::Pass => Borrowed("PASS"),
            GateVerdict::Fail(reason) => format!("FAIL:{reason}").into(),
            GateVerdict::NotRun => Borrowed("NOT_RUN"),
            GateVerdict::New => Borrowed("NEW"),
            GateVerdict::Duplicate => Borrowed("DUPLICATE"),
            GateVerdict::OnTime => Borrowed("ON_TIME"),
            GateVerdict::Late => Borrowed("LATE"),
        }
    }
}

impl FromStr for GateVerdict {
    type Err = UnknownName;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "PASS" => GateVerdict::Pass,
            "NOT_RUN" => GateVerdict::NotRun,
            "NEW" => GateVerdict::New,
            "DUPLICATE" => GateVerdict::Duplicate,
            "ON_TIME" => GateVerdict::OnTime,
            "LATE" => GateVerdict::Late,
            other => match other.strip_prefix("FAIL:") {
                Some(reason) => GateVerdict::Fail(reason.parse()?),
                None => {
                    return Err(UnknownName {
                        kind: "gate verdict",
                        value: s.to_owned(),
                    });
                }
            },
        })
    }
}

/// The verdict of every gate for one event: its provenance record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GateResults {
    pub schema: GateVerdict,
    pub timestamp: GateVerdict,
    pub idempotency: GateVerdict,
    pub late_arrival: GateVerdict,
}

impl GateResults {
    /// The results of an event that was rejected by `reason`'s gate.
    pub fn rejected(reason: RejectReason) -> Self {
        let fail = GateVerdict::Fail(reason);
        match reason.gate() {
            Gate::Schema => GateResults {
                schema: fail,
                timestamp: GateVerdict::NotRun,
                idempotency: GateVerdict::NotRun,
                late_arrival: GateVerdict::NotRun,
            },
            _ => GateResults {
                schema: GateVerdict::Pass,
                timestamp: fail,
                idempotency: GateVerdict::NotRun,
                late_arrival: GateVerdict::NotRun,
            },
        }
    }

    /// The results of an event stored for the first time.
    pub fn accepted(late: bool) -> Self {
        GateResults {
            schema: GateVerdict::Pass,
            timestamp: GateVerdict::Pass,
            idempotency: GateVerdict::New,
            late_arrival: if late {
                GateVerdict::Late
            } else {
                GateVerdict::OnTime
            },
        }
    }

    /// The stored form: a JSON object with the gates in order.
    pub fn to_json(&self) -> String {
        format!(
            r#"{{"schema":"{}","timestamp":"{}","idempotency":"{}","late_arrival":"{}"}}"#,
            self.schema.code(),
            self.timestamp.code(),
            self.idempotency.code(),
            self.late_arrival.code()
        )
    }

    pub fn from_json(text: &str) -> Result<Self, UnknownName> {
        let bad = || UnknownName {
            kind: "gate results",
            value: text.to_owned(),
        };
        let value: Value = serde_json::from_str(text).map_err(|_| bad())?;
        let get = |name: &str| -> Result<GateVerdict, UnknownName> {
            value
                .get(name)
                .and_then(Value::as_str)
                .ok_or_else(bad)?
                .parse()
        };
        Ok(GateResults {
            schema: get("schema")?,
            timestamp: get("timestamp")?,
            idempotency: get("idempotency")?,
            late_arrival: get("late_arrival")?,
        })
    }
}

type HmacSha256 = Hmac<Sha256>;

/// The bytes a validation hash is computed over: a canonical JSON array of
/// the tenant, the stored id, every field of the event and the gate results.
/// Changing this encoding invalidates every stored hash; version it instead.
pub fn canonical_encoding(
    tenant: &str,
    stored_id: &str,
    event: &SourceEvent,
    properties_json: &str,
    gates: &GateResults,
) -> Vec<u8> {
    let mut out = String::with_capacity(256);
    out.push('[');
    let strings = [
        "aforo.event.v1",
        tenant,
        stored_id,
        &event.id,
        &event.source,
        &event.event_type,
        &event.customer,
        &format_time(&event.time),
    ];
    for (i, s) in strings.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        canonical::write_str(s, &mut out);
    }
    out.push(',');
    out.push_str(properties_json);
    for s in [event.tier.as_str(), &event.tier_detail, &gates.to_json()] {
        out.push(',');
        canonical::write_str(s, &mut out);
    }
    out.push(']');
    out.into_bytes()
}

/// HMAC-SHA256, under the tenant's key, of the event's canonical encoding,
/// as lowercase hex. Audit exports carry it; `aforo audit verify` recomputes it.
/// `properties_json` is the event's canonical properties
/// ([`SourceEvent::canonical_properties`]), as stored: a verifier hashes the
/// stored bytes, so a stored event that was altered cannot verify.
pub fn validation_hash(
    key: &[u8],
    tenant: &str,
    stored_id: &str,
    event: &SourceEvent,
    properties_json: &str,
    gates: &GateResults,
) -> String {
    // HMAC takes keys of any length; new_from_slice cannot fail for it.
    let mut mac = match HmacSha256::new_from_slice(key) {
        Ok(mac) => mac,
        Err(_) => unreachable!("HMAC accepts keys of every length"),
    };
    mac.update(&canonical_encoding(
        tenant,
        stored_id,
        event,
        properties_json,
        gates,
    ));
    hex::encode(mac.finalize().into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use serde_json::json;

    fn event() -> SourceEvent {
        SourceEvent {
            id: "evt-1".into(),
            source: "api".into(),
            event_type: "tokens".into(),
            customer: "acme".into(),
            time: Utc.with_ymd_and_hms(2026, 11, 1, 12, 0, 0).unwrap(),
            properties: json!({"b": 2, "a": 1}).as_object().unwrap().clone(),
            tier: Tier::Rest,
            tier_detail: "POST /v1/events".into(),
        }
    }

    #[test]
    fn validation_hash_changes_when_any_field_changes() {
        let gates = GateResults::accepted(false);
        let hash = |key: &[u8], e: &SourceEvent, g: &GateResults| {
            validation_hash(key, "t", "s", e, &e.canonical_properties(), g)
        };
        let base = hash(b"k", &event(), &gates);
        assert_eq!(base.len(), 64);
        let mut other = event();
        other.properties.insert("a".into(), json!(2));
        assert_ne!(base, hash(b"k", &other, &gates));
        let mut other = event();
        other.customer = "globex".into();
        assert_ne!(base, hash(b"k", &other, &gates));
        assert_ne!(base, hash(b"k2", &event(), &gates));
        assert_ne!(base, hash(b"k", &event(), &GateResults::accepted(true)));
        assert_eq!(base, hash(b"k", &event(), &gates));
    }

    #[test]
    fn the_encoding_is_a_canonical_json_array() {
        let e = event();
        let bytes = canonical_encoding(
            "t",
            "s",
            &e,
            &e.canonical_properties(),
            &GateResults::accepted(false),
        );
        let text = String::from_utf8(bytes).unwrap();
        assert_eq!(
            text,
            concat!(
                r#"["aforo.event.v1","t","s","evt-1","api","tokens","acme","2026-11-01T12:00:00.000000Z","#,
                r#"{"a":1,"b":2},"REST","POST /v1/events","#,
                r#""{\"schema\":\"PASS\",\"timestamp\":\"PASS\",\"idempotency\":\"NEW\",\"late_arrival\":\"ON_TIME\"}"]"#
            )
        );
        let parsed: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(canonical::to_string(&parsed), text);
    }

    #[test]
    fn gate_results_round_trip_through_their_stored_form() {
        for results in [
            GateResults::accepted(true),
            GateResults::accepted(false),
            GateResults::rejected(RejectReason::SchemaMissingId),
            GateResults::rejected(RejectReason::TimestampTooOld),
        ] {
            assert_eq!(GateResults::from_json(&results.to_json()).unwrap(), results);
        }
    }

    #[test]
    fn reason_codes_parse_back() {
        for reason in RejectReason::ALL {
            assert_eq!(reason.as_str().parse::<RejectReason>().unwrap(), reason);
        }
    }

    #[test]
    fn flags_are_a_set() {
        let flags = EventFlags::default()
            .with(EventFlag::Late)
            .with(EventFlag::Late);
        assert_eq!(flags.iter().collect::<Vec<_>>(), vec![EventFlag::Late]);
        assert_eq!(EventFlags::from_bits(flags.bits()), flags);
    }
}
