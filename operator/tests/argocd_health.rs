//! The Argo CD health check the chart ships (charts/aforo/files/argocd-health.lua),
//! run in a real Lua 5.1 (the language of Argo CD's gopher-lua) over
//! objects shaped as the operator writes them.

use mlua::{Lua, LuaSerdeExt, Table};
use serde_json::{Value, json};

const SCRIPT: &str = include_str!("../../charts/aforo/files/argocd-health.lua");

/// Argo CD's verdict: (status, message).
fn health(object: Value) -> (String, String) {
    let lua = Lua::new();
    let obj = lua.to_value(&object).expect("the object as a Lua table");
    lua.globals().set("obj", obj).expect("set obj");
    let verdict: Table = lua.load(SCRIPT).eval().expect("the script runs");
    (
        verdict.get("status").expect("a status"),
        verdict.get("message").expect("a message"),
    )
}

fn pipeline(generation: i64, observed: i64, conditions: Value) -> Value {
    json!({
        "apiVersion": "aforo.io/v1alpha1", "kind": "MeteringPipeline",
        "metadata": {"name": "shop", "generation": generation},
        "spec": {},
        "status": {"observedGeneration": observed, "conditions": conditions},
    })
}

fn condition(type_: &str, status: &str, reason: &str, message: &str) -> Value {
    json!({"type": type_, "status": status, "reason": reason, "message": message,
           "observedGeneration": 1, "lastTransitionTime": "2026-11-29T00:00:00Z"})
}

#[test]
fn a_ready_pipeline_whose_generation_is_observed_is_healthy() {
    let (status, message) = health(pipeline(
        3,
        3,
        json!([
            condition(
                "Ready",
                "True",
                "Ready",
                "the data plane is available and its catalog is in force"
            ),
            condition(
                "Available",
                "True",
                "DeploymentsAvailable",
                "ingest, enrich and billing are available"
            ),
        ]),
    ));
    assert_eq!(status, "Healthy");
    assert_eq!(
        message,
        "Ready: the data plane is available and its catalog is in force"
    );
}

#[test]
fn an_object_without_status_or_with_an_unobserved_generation_is_progressing() {
    let (status, _) = health(json!({"metadata": {"name": "shop", "generation": 1}, "spec": {}}));
    assert_eq!(status, "Progressing");
    let (status, message) = health(pipeline(
        4,
        3,
        json!([condition("Ready", "True", "Ready", "ok")]),
    ));
    assert_eq!(status, "Progressing");
    assert!(message.contains("generation 4"), "{message}");
}

#[test]
fn a_stalled_rate_plan_is_degraded_with_the_field_in_the_message() {
    let (status, message) = health(pipeline(
        1,
        1,
        json!([
            condition(
                "Ready",
                "False",
                "Invalid",
                "spec.currency: \"EUX\" is not a known ISO 4217 currency"
            ),
            condition(
                "Stalled",
                "True",
                "Invalid",
                "spec.currency: \"EUX\" is not a known ISO 4217 currency"
            ),
        ]),
    ));
    assert_eq!(status, "Degraded");
    assert_eq!(
        message,
        "Invalid: spec.currency: \"EUX\" is not a known ISO 4217 currency"
    );
}

#[test]
fn a_paused_pipeline_is_suspended_and_one_rolling_out_is_progressing() {
    let (status, _) = health(pipeline(
        2,
        1,
        json!([
            condition(
                "Paused",
                "True",
                "ReconciliationPaused",
                "aforo.io/paused=true"
            ),
            condition("Ready", "True", "Ready", "ok"),
        ]),
    ));
    assert_eq!(status, "Suspended");
    let (status, message) = health(pipeline(
        1,
        1,
        json!([
            condition(
                "Ready",
                "False",
                "DeploymentsUnavailable",
                "waiting for ingest to become available"
            ),
            condition(
                "Reconciling",
                "True",
                "DeploymentsRollingOut",
                "waiting for ingest to become available"
            ),
        ]),
    ));
    assert_eq!(status, "Progressing");
    assert_eq!(
        message,
        "DeploymentsUnavailable: waiting for ingest to become available"
    );
}
