//! The CEL rules of the CRDs, evaluated locally with kube's CEL interpreter:
//! what admission rejects, and what it lets through.

use aforo_crds::catalog::*;
use kube::core::ObjectMeta;
use serde_json::json;

fn meter(spec: serde_json::Value) -> Meter {
    Meter {
        metadata: ObjectMeta {
            name: Some("m".into()),
            namespace: Some("default".into()),
            ..Default::default()
        },
        spec: serde_json::from_value(spec).expect("a MeterSpec"),
        status: None,
    }
}

fn rate_plan(charges: serde_json::Value) -> RatePlan {
    RatePlan {
        metadata: ObjectMeta {
            name: Some("rp".into()),
            namespace: Some("default".into()),
            ..Default::default()
        },
        spec: serde_json::from_value(json!({
            "productRef": "p", "currency": "EUR", "billingPeriod": "MONTHLY",
            "effectiveFrom": "2026-01-01T00:00:00Z", "charges": charges
        }))
        .expect("a RatePlanSpec"),
        status: None,
    }
}

fn message(result: Result<(), kube::core::cel::ValidationErrors>) -> String {
    match result {
        Ok(()) => String::new(),
        Err(errors) => format!("{errors:?}"),
    }
}

#[test]
fn value_property_is_required_except_for_count() {
    let ok = meter(json!({"eventType": "t", "aggregation": "SUM", "valueProperty": "$.n"}));
    assert_eq!(message(ok.validate_cel()), "");
    let count = meter(json!({"eventType": "t", "aggregation": "COUNT"}));
    assert_eq!(message(count.validate_cel()), "");
    let missing = meter(json!({"eventType": "t", "aggregation": "SUM"}));
    assert!(message(missing.validate_cel()).contains("valueProperty is required"));
    let forbidden =
        meter(json!({"eventType": "t", "aggregation": "COUNT", "valueProperty": "$.n"}));
    assert!(message(forbidden.validate_cel()).contains("forbidden for COUNT"));
}

#[test]
fn event_type_and_aggregation_are_immutable() {
    let old = meter(json!({"eventType": "t", "aggregation": "SUM", "valueProperty": "$.n"}));
    let renamed = meter(json!({"eventType": "u", "aggregation": "SUM", "valueProperty": "$.n"}));
    assert!(message(renamed.validate_cel_update(&old)).contains("eventType is immutable"));
    let reaggregated =
        meter(json!({"eventType": "t", "aggregation": "MAX", "valueProperty": "$.n"}));
    assert!(message(reaggregated.validate_cel_update(&old)).contains("aggregation is immutable"));
    let retyped_unit =
        meter(json!({"eventType": "t", "aggregation": "SUM", "valueProperty": "$.m"}));
    assert_eq!(message(retyped_unit.validate_cel_update(&old)), "");
}

#[test]
fn tiers_must_increase_strictly_and_end_unbounded() {
    let ok = rate_plan(json!([{"meter": "m", "graduated": [
        {"upTo": "1000", "unitPrice": "0"}, {"upTo": "10000", "unitPrice": "0.002"}, {"unitPrice": "0.001"}
    ]}]));
    assert_eq!(message(ok.validate_cel()), "");
    let unsorted = rate_plan(json!([{"meter": "m", "volume": [
        {"upTo": "10000", "unitPrice": "1"}, {"upTo": "1000", "unitPrice": "2"}, {"unitPrice": "0.5"}
    ]}]));
    assert!(message(unsorted.validate_cel()).contains("increasing order"));
    let repeated = rate_plan(json!([{"meter": "m", "graduated": [
        {"upTo": "100", "unitPrice": "1"}, {"upTo": "100", "unitPrice": "2"}, {"unitPrice": "0.5"}
    ]}]));
    assert!(message(repeated.validate_cel()).contains("distinct"));
    let bounded_last = rate_plan(json!([{"meter": "m", "graduated": [
        {"upTo": "100", "unitPrice": "1"}
    ]}]));
    assert!(message(bounded_last.validate_cel()).contains("unbounded last tier"));
}

#[test]
fn a_charge_has_exactly_one_model() {
    let none = rate_plan(json!([{"meter": "m"}]));
    assert!(message(none.validate_cel()).contains("exactly one of flat"));
    let two =
        rate_plan(json!([{"meter": "m", "flat": {"amount": "5"}, "perUnit": {"unitPrice": "1"}}]));
    assert!(message(two.validate_cel()).contains("exactly one of flat"));
    let twice = rate_plan(json!([
        {"meter": "m", "flat": {"amount": "5"}}, {"meter": "m", "perUnit": {"unitPrice": "1"}}
    ]));
    assert!(message(twice.validate_cel()).contains("charged once per plan"));
}

#[test]
fn percentage_min_must_not_exceed_max() {
    let ok = rate_plan(json!([{"meter": "m", "percentage":
        {"percent": "2.9", "amountProperty": "amount", "fixedFee": "0.30", "min": "0.5", "max": "10"}}]));
    assert_eq!(message(ok.validate_cel()), "");
    let bad = rate_plan(json!([{"meter": "m", "percentage":
        {"percent": "2.9", "amountProperty": "amount", "min": "10", "max": "0.5"}}]));
    assert!(message(bad.validate_cel()).contains("min must not exceed max"));
}

#[test]
fn a_role_has_replicas_or_autoscaling_and_min_at_most_max() {
    let pipeline = |ingest: serde_json::Value| MeteringPipeline {
        metadata: ObjectMeta {
            name: Some("p".into()),
            ..Default::default()
        },
        spec: serde_json::from_value(json!({
            "image": "aforo:dev", "database": {"name": "db", "key": "url"},
            "apiKey": {"name": "tenant", "key": "api-key"}, "ingest": ingest
        }))
        .expect("a MeteringPipelineSpec"),
        status: None,
    };
    assert_eq!(message(pipeline(json!({"replicas": 2})).validate_cel()), "");
    let both =
        pipeline(json!({"replicas": 2, "autoscaling": {"minReplicas": 1, "maxReplicas": 3}}));
    assert!(message(both.validate_cel()).contains("not both"));
    let inverted = pipeline(json!({"autoscaling": {"minReplicas": 5, "maxReplicas": 3}}));
    assert!(message(inverted.validate_cel()).contains("minReplicas must not exceed maxReplicas"));
}
