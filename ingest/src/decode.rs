//! From the wire to [`EventCandidate`]s: aforo's own JSON, CloudEvents 1.0
//! (structured and batch) and the protobuf `aforo.v1.Event`.
//!
//! Decoding never rejects an event: it records what it found, and what was
//! wrong with it, for the schema gate to judge. So one bad event in a batch
//! gets its own result and the others go on. The raw payload is not copied
//! here: the front door keeps its items and renders one only when it is
//! rejected (see `Ingestor::ingest`).

use aforo_crds::Tier;
use aforo_proto::v1 as pb;
use chrono::{DateTime, Utc};
use serde_json::{Map, Number, Value};

use crate::gates::EventCandidate;
use crate::gates::schema::json_kind;

/// Reads an optional string field, noting a wrong JSON type as malformed.
fn string_field(
    object: &Map<String, Value>,
    name: &str,
    malformed: &mut Vec<String>,
) -> Option<String> {
    match object.get(name) {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(other) => {
            malformed.push(format!(
                "`{name}` must be a string, not {}",
                json_kind(other)
            ));
            None
        }
    }
}

fn parse_time(text: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| text.to_owned())
}

fn finish(mut candidate: EventCandidate, malformed: Vec<String>) -> EventCandidate {
    if !malformed.is_empty() {
        candidate.malformed = Some(malformed.join("; "));
    }
    candidate
}

/// aforo's JSON event: `{id, source, type, customer, time, properties, tier?, tier_detail?}`.
pub fn from_json(value: &Value) -> EventCandidate {
    let Some(object) = value.as_object() else {
        return EventCandidate {
            malformed: Some(format!(
                "an event must be a JSON object, not {}",
                json_kind(value)
            )),
            ..Default::default()
        };
    };
    let mut malformed = Vec::new();
    let candidate = EventCandidate {
        id: string_field(object, "id", &mut malformed),
        source: string_field(object, "source", &mut malformed),
        event_type: string_field(object, "type", &mut malformed),
        customer: string_field(object, "customer", &mut malformed),
        time: string_field(object, "time", &mut malformed).map(|t| parse_time(&t)),
        properties: object.get("properties").cloned(),
        tier: string_field(object, "tier", &mut malformed).map(|t| t.parse().map_err(|_| t)),
        tier_detail: string_field(object, "tier_detail", &mut malformed),
        malformed: None,
    };
    finish(candidate, malformed)
}

/// A CloudEvents 1.0 event in structured JSON mode: `subject` is the
/// customer and `data` the properties (the shape OpenMeter accepts).
pub fn from_cloudevent(value: &Value) -> EventCandidate {
    let Some(object) = value.as_object() else {
        return EventCandidate {
            malformed: Some(format!(
                "a CloudEvent must be a JSON object, not {}",
                json_kind(value)
            )),
            ..Default::default()
        };
    };
    let mut malformed = Vec::new();
    match string_field(object, "specversion", &mut malformed).as_deref() {
        Some("1.0") => {}
        Some(other) => malformed.push(format!(
            "`specversion` {other:?} is not supported; use \"1.0\""
        )),
        None => malformed.push("`specversion` is required for a CloudEvent".into()),
    }
    if let Some(content_type) = string_field(object, "datacontenttype", &mut malformed) {
        let json = content_type.starts_with("application/json") || content_type.ends_with("+json");
        if !json {
            malformed.push(format!("`datacontenttype` {content_type:?} is not JSON"));
        }
    }
    if object.contains_key("data_base64") {
        malformed.push("`data_base64` is not supported; send `data` as a JSON object".into());
    }
    let candidate = EventCandidate {
        id: string_field(object, "id", &mut malformed),
        source: string_field(object, "source", &mut malformed),
        event_type: string_field(object, "type", &mut malformed),
        customer: string_field(object, "subject", &mut malformed),
        time: string_field(object, "time", &mut malformed).map(|t| parse_time(&t)),
        properties: object.get("data").cloned(),
        tier: None,
        tier_detail: None,
        malformed: None,
    };
    finish(candidate, malformed)
}

/// The protobuf event of the gRPC front door. Empty strings count as missing
/// (proto3 cannot tell them apart); `TIER_UNSPECIFIED` means the front door's tier.
pub fn from_proto(event: &pb::Event) -> EventCandidate {
    let mut malformed = Vec::new();
    let text = |s: &str| (!s.is_empty()).then(|| s.to_owned());
    let time = event.time.as_ref().map(|t| {
        u32::try_from(t.nanos)
            .ok()
            .and_then(|nanos| DateTime::from_timestamp(t.seconds, nanos))
            .ok_or_else(|| format!("{}s {}ns", t.seconds, t.nanos))
    });
    let properties = event.properties.as_ref().map(|s| {
        let mut object = Map::new();
        for (key, value) in &s.fields {
            match struct_value_to_json(value) {
                Ok(json) => {
                    object.insert(key.clone(), json);
                }
                Err(problem) => malformed.push(format!("`properties.{key}`: {problem}")),
            }
        }
        Value::Object(object)
    });
    let tier = match pb::Tier::try_from(event.tier) {
        Ok(pb::Tier::Unspecified) => None,
        Ok(tier) => Some(Ok(tier_from_proto(tier))),
        Err(_) => Some(Err(format!("tier number {}", event.tier))),
    };
    let candidate = EventCandidate {
        id: text(&event.id),
        source: text(&event.source),
        event_type: text(&event.r#type),
        customer: text(&event.customer),
        time,
        properties,
        tier,
        tier_detail: text(&event.tier_detail),
        malformed: None,
    };
    finish(candidate, malformed)
}

fn tier_from_proto(tier: pb::Tier) -> Tier {
    match tier {
        pb::Tier::Gateway => Tier::Gateway,
        pb::Tier::Sdk | pb::Tier::Unspecified => Tier::Sdk,
        pb::Tier::Rest => Tier::Rest,
        pb::Tier::Webhook => Tier::Webhook,
        pb::Tier::Batch => Tier::Batch,
        pb::Tier::Mcp => Tier::Mcp,
    }
}

/// The protobuf tier of a domain tier.
pub fn tier_to_proto(tier: Tier) -> pb::Tier {
    match tier {
        Tier::Gateway => pb::Tier::Gateway,
        Tier::Sdk => pb::Tier::Sdk,
        Tier::Rest => pb::Tier::Rest,
        Tier::Webhook => pb::Tier::Webhook,
        Tier::Batch => pb::Tier::Batch,
        Tier::Mcp => pb::Tier::Mcp,
    }
}

/// A protobuf `Value` as JSON. Protobuf numbers are doubles; NaN and
/// infinities have no JSON form and are refused.
pub fn struct_value_to_json(value: &prost_types::Value) -> Result<Value, String> {
    use prost_types::value::Kind;
    Ok(match &value.kind {
        None | Some(Kind::NullValue(_)) => Value::Null,
        Some(Kind::BoolValue(b)) => Value::Bool(*b),
        Some(Kind::StringValue(s)) => Value::String(s.clone()),
        Some(Kind::NumberValue(n)) => {
            if n.fract() == 0.0 && n.abs() < 9.007_199_254_740_992e15 {
                // Whole numbers stay integers, as a JSON client would send them.
                Value::Number(Number::from(*n as i64))
            } else {
                Value::Number(
                    Number::from_f64(*n).ok_or_else(|| format!("{n} is not a JSON number"))?,
                )
            }
        }
        Some(Kind::ListValue(list)) => Value::Array(
            list.values
                .iter()
                .map(struct_value_to_json)
                .collect::<Result<_, _>>()?,
        ),
        Some(Kind::StructValue(s)) => {
            let mut object = Map::new();
            for (k, v) in &s.fields {
                object.insert(k.clone(), struct_value_to_json(v)?);
            }
            Value::Object(object)
        }
    })
}

/// JSON as a protobuf `Value`.
pub fn json_to_struct_value(value: &Value) -> prost_types::Value {
    use prost_types::value::Kind;
    let kind = match value {
        Value::Null => Kind::NullValue(0),
        Value::Bool(b) => Kind::BoolValue(*b),
        Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or(f64::NAN)),
        Value::String(s) => Kind::StringValue(s.clone()),
        Value::Array(items) => Kind::ListValue(prost_types::ListValue {
            values: items.iter().map(json_to_struct_value).collect(),
        }),
        Value::Object(map) => Kind::StructValue(json_to_struct(map)),
    };
    prost_types::Value { kind: Some(kind) }
}

pub fn json_to_struct(map: &Map<String, Value>) -> prost_types::Struct {
    prost_types::Struct {
        fields: map
            .iter()
            .map(|(k, v)| (k.clone(), json_to_struct_value(v)))
            .collect(),
    }
}

/// A readable JSON rendering of a protobuf event, kept with its rejection.
pub fn proto_payload(event: &pb::Event) -> String {
    let mut object = Map::new();
    let mut put = |k: &str, v: Value| {
        object.insert(k.to_owned(), v);
    };
    put("id", Value::String(event.id.clone()));
    put("source", Value::String(event.source.clone()));
    put("type", Value::String(event.r#type.clone()));
    put("customer", Value::String(event.customer.clone()));
    put(
        "time",
        match &event.time {
            Some(t) => serde_json::json!({"seconds": t.seconds, "nanos": t.nanos}),
            None => Value::Null,
        },
    );
    let properties = event
        .properties
        .as_ref()
        .map(|s| {
            let mut map = Map::new();
            for (k, v) in &s.fields {
                map.insert(k.clone(), struct_value_to_json(v).unwrap_or(Value::Null));
            }
            Value::Object(map)
        })
        .unwrap_or(Value::Null);
    put("properties", properties);
    put("tier", Value::Number(event.tier.into()));
    put("tier_detail", Value::String(event.tier_detail.clone()));
    Value::Object(object).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn aforo_json_maps_field_by_field() {
        let c = from_json(&json!({
            "id": "e1", "source": "api", "type": "tokens", "customer": "acme",
            "time": "2026-11-29T12:00:00.5+01:00", "properties": {"n": 1},
            "tier": "gateway", "tier_detail": "GET /x"
        }));
        assert_eq!(c.id.as_deref(), Some("e1"));
        assert_eq!(c.customer.as_deref(), Some("acme"));
        assert_eq!(
            c.time.unwrap().unwrap().to_rfc3339(),
            "2026-11-29T11:00:00.500+00:00"
        );
        assert_eq!(c.tier, Some(Ok(Tier::Gateway)));
        assert!(c.malformed.is_none());
    }

    #[test]
    fn wrong_json_types_are_named_not_guessed() {
        let c = from_json(&json!({"id": 7, "source": ["a"]}));
        let problem = c.malformed.unwrap();
        assert!(
            problem.contains("`id` must be a string, not a number"),
            "{problem}"
        );
        assert!(
            problem.contains("`source` must be a string, not an array"),
            "{problem}"
        );
        assert!(from_json(&json!("hello")).malformed.is_some());
    }

    #[test]
    fn cloudevents_subject_is_the_customer_and_data_the_properties() {
        let c = from_cloudevent(&json!({
            "specversion": "1.0", "id": "e1", "source": "//svc", "type": "api.call",
            "subject": "acme", "time": "2026-11-29T12:00:00Z",
            "datacontenttype": "application/json", "data": {"ms": 12}
        }));
        assert!(c.malformed.is_none());
        assert_eq!(c.customer.as_deref(), Some("acme"));
        assert_eq!(c.properties, Some(json!({"ms": 12})));
    }

    #[test]
    fn cloudevents_need_spec_version_one() {
        let c = from_cloudevent(&json!({"specversion": "0.3", "id": "e1"}));
        assert!(c.malformed.unwrap().contains("specversion"));
        let c = from_cloudevent(&json!({"specversion": "1.0", "data_base64": "AA=="}));
        assert!(c.malformed.unwrap().contains("data_base64"));
    }

    #[test]
    fn proto_numbers_keep_integers_whole() {
        let v = json!({"tokens": 1234, "ratio": 0.25, "list": [1, "a", null], "o": {"x": true}});
        let back = struct_value_to_json(&json_to_struct_value(&v)).unwrap();
        assert_eq!(back, v);
    }
}
