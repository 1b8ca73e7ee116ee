//! From a verified delivery to event candidates, by the source's mappings.
//!
//! Each mapping is compiled once (its JSONPaths parsed, RFC 9535) and then
//! applied to the delivery's JSON (a form-encoded body is read as an object
//! of its fields):
//!
//! - `filter` decides whether the mapping applies. It is evaluated against
//!   a one-element array holding the delivery, so `$[?@.type == 'invoice.paid']`
//!   tests the delivery itself; the mapping applies when it selects anything.
//!   No filter: the mapping applies to every delivery.
//! - `forEach` selects the items that become one event each; without it the
//!   delivery is one event. With it, each field's path reads the item first
//!   and, when it selects nothing there, the whole delivery: per-item fields
//!   come from the item, delivery-wide ones (the customer, say) from the delivery.
//! - `id`, `customer`, `time`, `value` and each property must select one
//!   value. `id` defaults to the provider's delivery id (with `#N` per item
//!   under forEach), `time` to the signed timestamp or the arrival time.
//!   `type` is a literal, or a path when it starts with `$`.
//!
//! A delivery no mapping applies to is UNMATCHED; a mapping that applies but
//! cannot extract a field makes the delivery UNMAPPABLE. Both are stored.

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};
use serde_json_path::JsonPath;

use aforo_crds::Tier;
use aforo_crds::catalog::WebhookMapping;

use crate::gates::EventCandidate;

/// A mapping with its paths parsed.
#[derive(Debug)]
pub struct CompiledMapping {
    filter: Option<JsonPath>,
    for_each: Option<JsonPath>,
    id: Option<JsonPath>,
    customer: JsonPath,
    event_type: TypeOf,
    time: Option<JsonPath>,
    value: Option<JsonPath>,
    properties: Vec<(String, JsonPath)>,
}

#[derive(Debug)]
enum TypeOf {
    Literal(String),
    Path(JsonPath),
}

fn parse(field: &str, path: &str) -> Result<JsonPath, String> {
    JsonPath::parse(path).map_err(|e| format!("{field} {path:?} is not a JSONPath: {e}"))
}

impl CompiledMapping {
    pub fn compile(m: &WebhookMapping) -> Result<Self, String> {
        let opt =
            |field: &str, p: &Option<String>| p.as_deref().map(|p| parse(field, p)).transpose();
        Ok(CompiledMapping {
            filter: opt("filter", &m.filter)?,
            for_each: opt("forEach", &m.for_each)?,
            id: opt("id", &m.id)?,
            customer: parse("customer", &m.customer)?,
            event_type: if m.event_type.starts_with('$') {
                TypeOf::Path(parse("type", &m.event_type)?)
            } else {
                TypeOf::Literal(m.event_type.clone())
            },
            time: opt("time", &m.time)?,
            value: opt("value", &m.value)?,
            properties: m
                .properties
                .iter()
                .map(|(name, p)| Ok((name.clone(), parse(&format!("properties.{name}"), p)?)))
                .collect::<Result<_, String>>()?,
        })
    }

    fn applies_to(&self, delivery: &Value) -> bool {
        match &self.filter {
            None => true,
            Some(filter) => {
                let wrapped = Value::Array(vec![delivery.clone()]);
                !filter.query(&wrapped).is_empty()
            }
        }
    }
}

/// What the receiver knows of a delivery besides its body.
pub struct DeliveryFacts<'a> {
    /// `webhooks/<source>`: the events' `source`, part of their idempotency key.
    pub source: &'a str,
    /// The WebhookSource's name, the events' `tier_detail`.
    pub source_name: &'a str,
    pub delivery_id: Option<&'a str>,
    /// The signed timestamp, or the arrival time.
    pub time: DateTime<Utc>,
}

/// The outcome of mapping one delivery.
#[derive(Debug, PartialEq)]
pub enum Mapped {
    /// One candidate per event, in mapping then item order.
    Events(Vec<EventCandidate>),
    /// No mapping's filter selected the delivery.
    Unmatched,
    /// A mapping applied but a field could not be read.
    Unmappable(String),
}

/// The body as JSON: JSON itself, or a form's fields as an object (a field
/// sent several times becomes an array of its values).
pub fn body_as_json(body: &[u8], form: bool) -> Result<Value, String> {
    if form {
        let pairs: Vec<(String, String)> = serde_urlencoded::from_bytes(body)
            .map_err(|e| format!("the form body cannot be decoded: {e}"))?;
        let mut object = Map::new();
        for (name, value) in pairs {
            match object.get_mut(&name) {
                None => {
                    object.insert(name, Value::String(value));
                }
                Some(Value::Array(values)) => values.push(Value::String(value)),
                Some(first) => {
                    let first = first.take();
                    object.insert(name, Value::Array(vec![first, Value::String(value)]));
                }
            }
        }
        Ok(Value::Object(object))
    } else {
        serde_json::from_slice(body).map_err(|e| format!("the body is not JSON: {e}"))
    }
}

/// The single value `path` selects in `item`, or else in `delivery`.
fn one<'a>(
    field: &str,
    path: &JsonPath,
    item: &'a Value,
    delivery: &'a Value,
) -> Result<Option<&'a Value>, String> {
    for doc in [item, delivery] {
        let nodes = path.query(doc).all();
        match nodes.len() {
            0 => continue,
            1 => return Ok(Some(nodes[0])),
            n => return Err(format!("{field} selects {n} values, not one")),
        }
    }
    Ok(None)
}

fn text(field: &str, value: &Value) -> Result<String, String> {
    match value {
        Value::String(s) => Ok(s.clone()),
        Value::Number(n) => Ok(n.to_string()),
        other => Err(format!(
            "{field} is {}, not a string or number",
            crate::gates::schema::json_kind(other)
        )),
    }
}

fn time_of(value: &Value) -> Result<DateTime<Utc>, String> {
    match value {
        Value::String(s) => DateTime::parse_from_rfc3339(s)
            .map(|t| t.with_timezone(&Utc))
            .or_else(|_| s.parse::<i64>().map_err(|_| ()).and_then(unix))
            .map_err(|_| format!("time {s:?} is neither RFC 3339 nor Unix seconds")),
        Value::Number(n) => n
            .as_i64()
            .ok_or(())
            .and_then(unix)
            .map_err(|_| format!("time {n} is not whole Unix seconds")),
        other => Err(format!(
            "time is {}, not a timestamp",
            crate::gates::schema::json_kind(other)
        )),
    }
}

fn unix(seconds: i64) -> Result<DateTime<Utc>, ()> {
    DateTime::from_timestamp(seconds, 0).ok_or(())
}

/// Maps a delivery's JSON to events.
pub fn map(mappings: &[CompiledMapping], delivery: &Value, facts: &DeliveryFacts<'_>) -> Mapped {
    let mut events = Vec::new();
    let mut matched = false;
    for (m, mapping) in mappings.iter().enumerate() {
        if !mapping.applies_to(delivery) {
            continue;
        }
        matched = true;
        let items: Vec<&Value> = match &mapping.for_each {
            None => vec![delivery],
            Some(path) => path.query(delivery).all(),
        };
        let several = mapping.for_each.is_some();
        for (i, item) in items.into_iter().enumerate() {
            match event(mapping, item, delivery, facts, several.then_some(i)) {
                Ok(candidate) => events.push(candidate),
                Err(problem) => {
                    let at = if several {
                        format!("mapping {m}, item {i}")
                    } else {
                        format!("mapping {m}")
                    };
                    return Mapped::Unmappable(format!("{at}: {problem}"));
                }
            }
        }
    }
    if !matched {
        return Mapped::Unmatched;
    }
    if events.is_empty() {
        return Mapped::Unmappable("forEach selected no items".into());
    }
    Mapped::Events(events)
}

fn event(
    mapping: &CompiledMapping,
    item: &Value,
    delivery: &Value,
    facts: &DeliveryFacts<'_>,
    index: Option<usize>,
) -> Result<EventCandidate, String> {
    let id = match &mapping.id {
        Some(path) => text(
            "id",
            one("id", path, item, delivery)?.ok_or("id selects nothing")?,
        )?,
        None => {
            let delivery_id = facts
                .delivery_id
                .ok_or("the provider names no delivery id and the mapping sets no `id` path")?;
            match index {
                Some(i) => format!("{delivery_id}#{i}"),
                None => delivery_id.to_owned(),
            }
        }
    };
    let customer = text(
        "customer",
        one("customer", &mapping.customer, item, delivery)?.ok_or("customer selects nothing")?,
    )?;
    let event_type = match &mapping.event_type {
        TypeOf::Literal(t) => t.clone(),
        TypeOf::Path(path) => text(
            "type",
            one("type", path, item, delivery)?.ok_or("type selects nothing")?,
        )?,
    };
    let time = match &mapping.time {
        Some(path) => time_of(one("time", path, item, delivery)?.ok_or("time selects nothing")?)?,
        None => facts.time,
    };
    let mut properties = Map::new();
    if let Some(path) = &mapping.value {
        let value = one("value", path, item, delivery)?.ok_or("value selects nothing")?;
        if !(value.is_number() || value.is_string()) {
            return Err(format!(
                "value is {}, not a number or string",
                crate::gates::schema::json_kind(value)
            ));
        }
        properties.insert("value".into(), value.clone());
    }
    for (name, path) in &mapping.properties {
        if let Some(value) = one(&format!("properties.{name}"), path, item, delivery)? {
            properties.insert(name.clone(), value.clone());
        }
    }
    Ok(EventCandidate {
        id: Some(id),
        source: Some(facts.source.to_owned()),
        event_type: Some(event_type),
        customer: Some(customer),
        time: Some(Ok(time)),
        properties: Some(Value::Object(properties)),
        tier: Some(Ok(Tier::Webhook)),
        tier_detail: Some(facts.source_name.to_owned()),
        malformed: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn mapping(value: Value) -> CompiledMapping {
        CompiledMapping::compile(&serde_json::from_value(value).unwrap()).unwrap()
    }

    fn facts(delivery_id: Option<&str>) -> DeliveryFacts<'_> {
        DeliveryFacts {
            source: "webhooks/stripe",
            source_name: "stripe",
            delivery_id,
            time: DateTime::from_timestamp(1_700_000_000, 0).unwrap(),
        }
    }

    fn stripe_invoice(kind: &str) -> Value {
        json!({
            "id": "evt_1", "type": kind, "created": 1_700_000_100,
            "data": {"object": {"customer": "cus_9", "amount_paid": 1250, "currency": "usd",
                "lines": {"data": [{"id": "il_1", "quantity": 3}, {"id": "il_2", "quantity": 4}]}}}
        })
    }

    fn invoice_paid() -> CompiledMapping {
        mapping(json!({
            "filter": "$[?@.type == 'invoice.paid']",
            "id": "$.id", "customer": "$.data.object.customer", "type": "payment.succeeded",
            "time": "$.created", "value": "$.data.object.amount_paid",
            "properties": {"currency": "$.data.object.currency"}
        }))
    }

    #[test]
    fn a_matching_delivery_becomes_its_event() {
        let Mapped::Events(events) = map(
            &[invoice_paid()],
            &stripe_invoice("invoice.paid"),
            &facts(None),
        ) else {
            panic!("not mapped");
        };
        assert_eq!(events.len(), 1);
        let e = &events[0];
        assert_eq!(e.id.as_deref(), Some("evt_1"));
        assert_eq!(e.customer.as_deref(), Some("cus_9"));
        assert_eq!(e.event_type.as_deref(), Some("payment.succeeded"));
        assert_eq!(
            e.time,
            Some(Ok(DateTime::from_timestamp(1_700_000_100, 0).unwrap()))
        );
        assert_eq!(
            e.properties,
            Some(json!({"value": 1250, "currency": "usd"}))
        );
        assert_eq!(e.tier, Some(Ok(Tier::Webhook)));
        assert_eq!(e.source.as_deref(), Some("webhooks/stripe"));
    }

    #[test]
    fn a_delivery_no_filter_selects_is_unmatched() {
        assert_eq!(
            map(
                &[invoice_paid()],
                &stripe_invoice("customer.created"),
                &facts(None)
            ),
            Mapped::Unmatched
        );
    }

    #[test]
    fn for_each_yields_one_event_per_item_reading_the_delivery_for_shared_fields() {
        let lines = mapping(json!({
            "forEach": "$.data.object.lines.data[*]",
            "id": "$.id", "customer": "$.data.object.customer", "type": "invoice.line",
            "value": "$.quantity"
        }));
        let Mapped::Events(events) = map(&[lines], &stripe_invoice("invoice.paid"), &facts(None))
        else {
            panic!("not mapped");
        };
        let got: Vec<_> = events
            .iter()
            .map(|e| {
                (
                    e.id.clone().unwrap(),
                    e.customer.clone().unwrap(),
                    e.properties.clone().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                ("il_1".to_owned(), "cus_9".to_owned(), json!({"value": 3})),
                ("il_2".to_owned(), "cus_9".to_owned(), json!({"value": 4})),
            ]
        );
    }

    #[test]
    fn ids_default_to_the_delivery_id_numbered_per_item() {
        let m = mapping(json!({"forEach": "$[*]", "customer": "$.c", "type": "t"}));
        let Mapped::Events(events) =
            map(&[m], &json!([{"c": "a"}, {"c": "b"}]), &facts(Some("d-7")))
        else {
            panic!("not mapped");
        };
        let ids: Vec<_> = events.iter().map(|e| e.id.clone().unwrap()).collect();
        assert_eq!(ids, ["d-7#0", "d-7#1"]);
        let m = mapping(json!({"customer": "$.c", "type": "$.kind"}));
        assert_eq!(
            map(&[m], &json!({"c": "a", "kind": "k"}), &facts(None)),
            Mapped::Unmappable(
                "mapping 0: the provider names no delivery id and the mapping sets no `id` path"
                    .into()
            )
        );
    }

    #[test]
    fn missing_or_ambiguous_fields_make_the_delivery_unmappable() {
        let m = mapping(json!({"id": "$.id", "customer": "$.who", "type": "t"}));
        let Mapped::Unmappable(why) = map(&[m], &json!({"id": "1"}), &facts(None)) else {
            panic!("mapped");
        };
        assert_eq!(why, "mapping 0: customer selects nothing");
        let m = mapping(json!({"id": "$.id", "customer": "$.who[*]", "type": "t"}));
        let Mapped::Unmappable(why) =
            map(&[m], &json!({"id": "1", "who": ["a", "b"]}), &facts(None))
        else {
            panic!("mapped");
        };
        assert_eq!(why, "mapping 0: customer selects 2 values, not one");
        let m = mapping(json!({"id": "$.id", "customer": "$.c", "type": "t", "time": "$.at"}));
        let Mapped::Unmappable(why) = map(
            &[m],
            &json!({"id": "1", "c": "x", "at": "yesterday"}),
            &facts(None),
        ) else {
            panic!("mapped");
        };
        assert!(why.contains("neither RFC 3339 nor Unix seconds"), "{why}");
    }

    #[test]
    fn form_bodies_read_as_objects_of_their_fields() {
        let v = body_as_json(b"From=%2B1555&Body=hi&Tag=a&Tag=b", true).unwrap();
        assert_eq!(v, json!({"From": "+1555", "Body": "hi", "Tag": ["a", "b"]}));
        assert!(body_as_json(b"{not json", false).is_err());
    }
}
