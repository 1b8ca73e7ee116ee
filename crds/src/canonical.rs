//! Canonical JSON: one byte string per JSON value, whatever order its object
//! keys arrived in and whichever serde_json features the build unifies.
//!
//! Properties are stored in this form and hashed in this form, so recomputing
//! a validation hash from a stored event gives the same bytes it was sealed
//! with. Keys are sorted by their UTF-8 bytes; numbers are written as
//! serde_json writes them (integers exactly, floats in their shortest
//! round-tripping form); strings use JSON's minimal escaping.

use serde_json::Value;

/// Writes `value` canonically.
pub fn to_string(value: &Value) -> String {
    let mut out = String::new();
    write(value, &mut out);
    out
}

/// Writes a JSON object canonically, without wrapping it in a `Value`.
pub fn object_to_string(map: &serde_json::Map<String, Value>) -> String {
    let mut out = String::new();
    write_object(map, &mut out);
    out
}

/// Appends a JSON string literal.
pub fn write_str(text: &str, out: &mut String) {
    // serde_json's escaping is JSON's minimal one; writing to a String cannot fail.
    if let Ok(quoted) = serde_json::to_string(text) {
        out.push_str(&quoted);
    }
}

/// Appends `value` canonically.
pub fn write(value: &Value, out: &mut String) {
    match value {
        Value::Null | Value::Bool(_) | Value::Number(_) | Value::String(_) => {
            // serde_json's own writer is canonical for scalars.
            out.push_str(&value.to_string());
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write(item, out);
            }
            out.push(']');
        }
        Value::Object(map) => write_object(map, out),
    }
}

fn write_object(map: &serde_json::Map<String, Value>, out: &mut String) {
    let mut entries: Vec<(&String, &Value)> = map.iter().collect();
    entries.sort_unstable_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    out.push('{');
    for (i, (key, item)) in entries.into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        write_str(key, out);
        out.push(':');
        write(item, out);
    }
    out.push('}');
}

/// Depth of nesting of a JSON value: a scalar is 0, `{}` and `[]` are 1.
pub fn depth(value: &Value) -> usize {
    match value {
        Value::Array(items) => 1 + items.iter().map(depth).max().unwrap_or(0),
        Value::Object(map) => 1 + map.values().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn key_order_does_not_change_the_encoding() {
        let a: Value = serde_json::from_str(r#"{"b":1,"a":{"y":[1,2],"x":"é\n"}}"#).unwrap();
        let b: Value = serde_json::from_str(r#"{"a":{"x":"é\n","y":[1,2]},"b":1}"#).unwrap();
        assert_eq!(to_string(&a), to_string(&b));
        assert_eq!(to_string(&a), r#"{"a":{"x":"é\n","y":[1,2]},"b":1}"#);
    }

    #[test]
    fn canonical_text_round_trips_to_itself() {
        let v = json!({"tokens": 1234, "ratio": 0.1, "big": 12345678901234567u64, "neg": -3.5e-7});
        let once = to_string(&v);
        let again = to_string(&serde_json::from_str(&once).unwrap());
        assert_eq!(once, again);
    }

    #[test]
    fn depth_counts_containers() {
        assert_eq!(depth(&json!(1)), 0);
        assert_eq!(depth(&json!({})), 1);
        assert_eq!(depth(&json!({"a": [{"b": 1}]})), 3);
    }
}
