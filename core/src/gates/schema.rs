//! Gate 1: the schema. Required fields present, well formed and bounded.

use aforo_crds::catalog::PropertyType;
use aforo_crds::compile::CatalogSnapshot;
use aforo_crds::{RejectReason, SourceEvent, Tier, canonical};
use chrono::{DateTime, SubsecRound, Utc};
use serde_json::{Map, Value};

use super::{EventCandidate, Rejected};

/// Bounds on what one event may carry.
#[derive(Clone, Debug)]
pub struct SchemaLimits {
    /// id, source, type and customer, in bytes.
    pub max_field_bytes: usize,
    pub max_tier_detail_bytes: usize,
    /// Nesting depth of the properties object (`{}` is 1).
    pub max_properties_depth: usize,
    /// Size of the properties in canonical JSON.
    pub max_properties_bytes: usize,
}

impl Default for SchemaLimits {
    fn default() -> Self {
        SchemaLimits {
            max_field_bytes: 256,
            max_tier_detail_bytes: 512,
            max_properties_depth: 8,
            max_properties_bytes: 32 * 1024,
        }
    }
}

fn reject(reason: RejectReason, message: impl Into<String>) -> Rejected {
    Rejected {
        reason,
        message: message.into(),
    }
}

/// Checks one required identifying field.
fn required<'a>(
    value: &'a Option<String>,
    name: &str,
    missing: RejectReason,
    limits: &SchemaLimits,
) -> Result<&'a str, Rejected> {
    let value = match value.as_deref().map(str::trim) {
        Some(v) if !v.is_empty() => value.as_deref().unwrap_or(v),
        _ => return Err(reject(missing, format!("`{name}` is required"))),
    };
    if value.len() > limits.max_field_bytes {
        return Err(reject(
            RejectReason::SchemaFieldTooLong,
            format!(
                "`{name}` is {} bytes; the limit is {}",
                value.len(),
                limits.max_field_bytes
            ),
        ));
    }
    if value.chars().any(char::is_control) {
        return Err(reject(
            RejectReason::SchemaInvalidCharacters,
            format!("`{name}` contains control characters"),
        ));
    }
    Ok(value)
}

/// Runs the schema gate. On success returns the event (time truncated to
/// microseconds, the precision stored) and its canonical properties.
pub fn check(
    candidate: &EventCandidate,
    front_door: Tier,
    limits: &SchemaLimits,
) -> Result<(SourceEvent, String), Rejected> {
    if let Some(problem) = &candidate.malformed {
        return Err(reject(RejectReason::SchemaMalformed, problem.clone()));
    }
    let id = required(&candidate.id, "id", RejectReason::SchemaMissingId, limits)?;
    let source = required(
        &candidate.source,
        "source",
        RejectReason::SchemaMissingSource,
        limits,
    )?;
    let event_type = required(
        &candidate.event_type,
        "type",
        RejectReason::SchemaMissingType,
        limits,
    )?;
    let customer = required(
        &candidate.customer,
        "customer",
        RejectReason::SchemaMissingCustomer,
        limits,
    )?;
    let time = match &candidate.time {
        None => {
            return Err(reject(
                RejectReason::SchemaMissingTime,
                "`time` is required",
            ));
        }
        Some(Err(text)) => {
            return Err(reject(
                RejectReason::SchemaInvalidTime,
                format!("`time` {text:?} is not an RFC 3339 timestamp"),
            ));
        }
        Some(Ok(time)) => truncate_to_micros(*time),
    };
    let tier = match &candidate.tier {
        None => front_door,
        Some(Ok(tier)) => *tier,
        Some(Err(name)) => {
            return Err(reject(
                RejectReason::SchemaInvalidTier,
                format!("`tier` {name:?} is not one of GATEWAY, SDK, REST, WEBHOOK, BATCH, MCP"),
            ));
        }
    };
    let tier_detail = candidate.tier_detail.clone().unwrap_or_default();
    if tier_detail.len() > limits.max_tier_detail_bytes {
        return Err(reject(
            RejectReason::SchemaFieldTooLong,
            format!(
                "`tier_detail` is {} bytes; the limit is {}",
                tier_detail.len(),
                limits.max_tier_detail_bytes
            ),
        ));
    }
    let properties = match &candidate.properties {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(map)) => map.clone(),
        Some(other) => {
            return Err(reject(
                RejectReason::SchemaPropertiesNotObject,
                format!(
                    "`properties` must be a JSON object, not {}",
                    json_kind(other)
                ),
            ));
        }
    };
    let object = Value::Object(properties);
    let depth = canonical::depth(&object);
    if depth > limits.max_properties_depth {
        return Err(reject(
            RejectReason::SchemaPropertiesTooDeep,
            format!(
                "`properties` nest {depth} levels deep; the limit is {}",
                limits.max_properties_depth
            ),
        ));
    }
    let properties_json = canonical::to_string(&object);
    if properties_json.len() > limits.max_properties_bytes {
        return Err(reject(
            RejectReason::SchemaPropertiesTooLarge,
            format!(
                "`properties` are {} bytes; the limit is {}",
                properties_json.len(),
                limits.max_properties_bytes
            ),
        ));
    }
    let Value::Object(properties) = object else {
        unreachable!("built as an object above")
    };
    Ok((
        SourceEvent {
            id: id.to_owned(),
            source: source.to_owned(),
            event_type: event_type.to_owned(),
            customer: customer.to_owned(),
            time,
            properties,
            tier,
            tier_detail,
        },
        properties_json,
    ))
}

/// The catalog half of the schema gate: every meter that takes the event's
/// type names properties the event must carry, with their JSON types.
/// Returns whether any meter takes the event (false: UNMETERED).
pub fn check_meters(event: &SourceEvent, catalog: &CatalogSnapshot) -> Result<bool, Rejected> {
    let mut metered = false;
    for (name, meter) in catalog.meters_for(&event.event_type) {
        metered = true;
        for required in &meter.required_properties {
            let Some(value) = event.properties.get(&required.name) else {
                return Err(reject(
                    RejectReason::SchemaMissingProperty,
                    format!(
                        "meter {name:?} needs property `{}` on {:?} events",
                        required.name, event.event_type
                    ),
                ));
            };
            let fits = match required.property_type {
                PropertyType::String => value.is_string(),
                PropertyType::Number => value.is_number(),
                PropertyType::Boolean => value.is_boolean(),
                PropertyType::Object => value.is_object(),
                PropertyType::Array => value.is_array(),
            };
            if !fits {
                return Err(reject(
                    RejectReason::SchemaPropertyType,
                    format!(
                        "meter {name:?} needs property `{}` to be {:?}, not {}",
                        required.name,
                        required.property_type,
                        json_kind(value)
                    ),
                ));
            }
        }
    }
    Ok(metered)
}

fn truncate_to_micros(time: DateTime<Utc>) -> DateTime<Utc> {
    time.trunc_subsecs(6)
}

/// The JSON type of a value, for error messages.
pub fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use serde_json::json;

    fn good() -> EventCandidate {
        EventCandidate {
            id: Some("e1".into()),
            source: Some("api".into()),
            event_type: Some("tokens".into()),
            customer: Some("acme".into()),
            time: Some(Ok(Utc.with_ymd_and_hms(2026, 11, 29, 12, 0, 0).unwrap())),
            properties: Some(json!({"tokens": 5})),
            ..Default::default()
        }
    }

    fn reason(c: &EventCandidate) -> RejectReason {
        check(c, Tier::Rest, &SchemaLimits::default())
            .unwrap_err()
            .reason
    }

    #[test]
    fn each_missing_field_has_its_own_reason() {
        type Breakage = fn(&mut EventCandidate);
        let cases: [(Breakage, RejectReason); 5] = [
            (|c| c.id = None, RejectReason::SchemaMissingId),
            (
                |c| c.source = Some("  ".into()),
                RejectReason::SchemaMissingSource,
            ),
            (|c| c.event_type = None, RejectReason::SchemaMissingType),
            (
                |c| c.customer = Some(String::new()),
                RejectReason::SchemaMissingCustomer,
            ),
            (|c| c.time = None, RejectReason::SchemaMissingTime),
        ];
        for (break_it, expected) in cases {
            let mut c = good();
            break_it(&mut c);
            assert_eq!(reason(&c), expected);
        }
    }

    #[test]
    fn field_length_is_bounded_exactly() {
        let limits = SchemaLimits::default();
        let mut c = good();
        c.id = Some("x".repeat(limits.max_field_bytes));
        assert!(check(&c, Tier::Rest, &limits).is_ok());
        c.id = Some("x".repeat(limits.max_field_bytes + 1));
        assert_eq!(reason(&c), RejectReason::SchemaFieldTooLong);
    }

    #[test]
    fn control_characters_cannot_forge_a_dedup_key() {
        let mut c = good();
        c.source = Some("api\nother".into());
        assert_eq!(reason(&c), RejectReason::SchemaInvalidCharacters);
    }

    #[test]
    fn properties_must_be_a_bounded_object() {
        let mut c = good();
        c.properties = Some(json!([1, 2]));
        assert_eq!(reason(&c), RejectReason::SchemaPropertiesNotObject);

        // Depth 8 passes, depth 9 does not.
        let mut nested = json!(1);
        for _ in 0..8 {
            nested = json!({ "a": nested });
        }
        c.properties = Some(nested.clone());
        assert!(check(&c, Tier::Rest, &SchemaLimits::default()).is_ok());
        c.properties = Some(json!({ "a": nested }));
        assert_eq!(reason(&c), RejectReason::SchemaPropertiesTooDeep);

        c.properties = Some(json!({ "blob": "x".repeat(40_000) }));
        assert_eq!(reason(&c), RejectReason::SchemaPropertiesTooLarge);
    }

    #[test]
    fn missing_properties_are_an_empty_object() {
        let mut c = good();
        c.properties = None;
        let (event, json) = check(&c, Tier::Rest, &SchemaLimits::default()).unwrap();
        assert!(event.properties.is_empty());
        assert_eq!(json, "{}");
    }

    #[test]
    fn bad_time_and_tier_are_named() {
        let mut c = good();
        c.time = Some(Err("yesterday".into()));
        assert_eq!(reason(&c), RejectReason::SchemaInvalidTime);
        let mut c = good();
        c.tier = Some(Err("CARRIER_PIGEON".into()));
        assert_eq!(reason(&c), RejectReason::SchemaInvalidTier);
        let mut c = good();
        c.malformed = Some("`id` must be a string".into());
        assert_eq!(reason(&c), RejectReason::SchemaMalformed);
    }

    #[test]
    fn time_is_kept_at_microsecond_precision() {
        let mut c = good();
        let t = Utc.timestamp_opt(1_800_000_000, 123_456_789).unwrap();
        c.time = Some(Ok(t));
        let (event, _) = check(&c, Tier::Rest, &SchemaLimits::default()).unwrap();
        assert_eq!(event.time.timestamp_subsec_nanos(), 123_456_000);
    }

    #[test]
    fn the_front_door_names_the_tier_unless_the_event_does() {
        let (event, _) = check(&good(), Tier::Sdk, &SchemaLimits::default()).unwrap();
        assert_eq!(event.tier, Tier::Sdk);
        let mut c = good();
        c.tier = Some(Ok(Tier::Gateway));
        let (event, _) = check(&c, Tier::Sdk, &SchemaLimits::default()).unwrap();
        assert_eq!(event.tier, Tier::Gateway);
    }
}
