//! The catalog compiler and semantic validation, on the example catalog and
//! on broken variants of it.

use aforo_crds::catalog::{Resource, yaml_documents};
use aforo_crds::compile::compile;
use aforo_crds::validate::{CatalogError, validate};
use serde_json::{Value, json};

fn examples() -> Vec<Resource> {
    let dir = format!(
        "{}/../examples",
        std::env::var("CARGO_MANIFEST_DIR")
            .expect("CARGO_MANIFEST_DIR: run by cargo test, or by scripts/hard-days.sh")
    );
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .expect("examples/")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    let mut out = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).expect("read");
        for (origin, value) in yaml_documents(&text, &file.display().to_string()).expect("YAML") {
            out.push(Resource::from_value(value, &origin).expect("a resource"));
        }
    }
    out
}

/// The examples with one document's JSON changed by `edit`.
fn edited(kind: &str, name: &str, edit: impl Fn(&mut Value)) -> Vec<Resource> {
    examples()
        .into_iter()
        .map(|r| {
            if r.kind() == kind && r.name() == name {
                let mut value = r.to_value();
                edit(&mut value);
                Resource::from_value(value, "test").expect("still a resource")
            } else {
                r
            }
        })
        .collect()
}

fn errors_of(resources: &[Resource]) -> Vec<String> {
    validate(resources)
        .iter()
        .map(CatalogError::to_string)
        .collect()
}

fn assert_error(resources: &[Resource], expected: &str) {
    let errors = errors_of(resources);
    assert!(
        errors.iter().any(|e| e.contains(expected)),
        "no {expected:?} in {errors:#?}"
    );
}

#[test]
fn the_examples_compile() {
    let compiled = compile(&examples(), None).unwrap_or_else(|e| panic!("{e:#?}"));
    assert_eq!(compiled.snapshot.meters.len(), 4);
    assert_eq!(compiled.snapshot.rate_plans.len(), 2);
    assert_eq!(compiled.skipped, ["MeteringPipeline/aforo"]);
    assert!(compiled.content_hash.starts_with("sha256:"));
    assert_eq!(
        compiled.effective_from.unwrap().to_rfc3339(),
        "2026-01-01T00:00:00+00:00"
    );
}

#[test]
fn the_hash_depends_on_content_not_order() {
    let forward = compile(&examples(), None).unwrap();
    let mut reversed = examples();
    reversed.reverse();
    let backward = compile(&reversed, None).unwrap();
    assert_eq!(forward.content_hash, backward.content_hash);
    assert_eq!(forward.canonical_json, backward.canonical_json);

    let cheaper = edited("RatePlan", "translation-pro", |v| {
        v["spec"]["charges"][0]["graduated"][0]["unitPrice"] = json!("0.000019");
        v["spec"]["effectiveFrom"] = json!("2026-12-01T00:00:00Z");
    });
    let changed = compile(&cheaper, Some(&forward.snapshot)).unwrap();
    assert_ne!(changed.content_hash, forward.content_hash);
    assert_eq!(
        changed.effective_from.unwrap().to_rfc3339(),
        "2026-12-01T00:00:00+00:00"
    );
}

#[test]
fn a_price_change_cannot_take_effect_before_the_price_it_replaces() {
    let previous = compile(&examples(), None).unwrap().snapshot;
    let rewritten = edited("RatePlan", "translation-pro", |v| {
        v["spec"]["charges"][0]["graduated"][0]["unitPrice"] = json!("0.00001");
    });
    let errors = compile(&rewritten, Some(&previous)).unwrap_err();
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0].field, "spec.effectiveFrom");
    assert!(errors[0].message.contains("cannot rewrite the past"));
}

#[test]
fn references_must_resolve() {
    assert_error(
        &edited("Product", "ai-agents", |v| {
            v["spec"]["meters"][1] = json!("mcp-calls")
        }),
        r#"Product/ai-agents: spec.meters[1]: no Meter named "mcp-calls""#,
    );
    assert_error(
        &edited("RatePlan", "translation-pro", |v| {
            v["spec"]["productRef"] = json!("translator")
        }),
        r#"RatePlan/translation-pro: spec.productRef: no Product named "translator""#,
    );
    assert_error(
        &edited("RatePlan", "translation-pro", |v| {
            v["spec"]["charges"][0]["meter"] = json!("llm-tokens")
        }),
        r#"spec.charges[0].meter: Meter "llm-tokens" is not one of Product "translation-api"'s meters"#,
    );
    assert_error(
        &edited("UsageAlert", "translation-quota-pacing", |v| {
            v["spec"]["selector"]["meters"][0] = json!("x")
        }),
        r#"UsageAlert/translation-quota-pacing: spec.selector.meters[0]: no Meter named "x""#,
    );
}

#[test]
fn an_anchor_day_is_a_day_of_the_month() {
    for day in [0, 32] {
        assert_error(
            &edited("RatePlan", "translation-pro", |v| {
                v["spec"]["billingAnchorDay"] = json!(day)
            }),
            &format!(
                "RatePlan/translation-pro: spec.billingAnchorDay: {day} is not a day of the month (1–31)"
            ),
        );
    }
    for day in [1, 29, 31] {
        let errors = errors_of(&edited("RatePlan", "translation-pro", |v| {
            v["spec"]["billingAnchorDay"] = json!(day)
        }));
        assert!(errors.is_empty(), "day {day}: {errors:#?}");
    }
}

#[test]
fn currencies_must_be_known() {
    assert_error(
        &edited("RatePlan", "translation-pro", |v| {
            v["spec"]["currency"] = json!("EUX")
        }),
        r#"spec.currency: "EUX" is not a known ISO 4217 currency"#,
    );
    assert_error(
        &edited("Meter", "llm-tokens", |v| {
            v["spec"]["costCurrency"] = json!("usd")
        }),
        r#"Meter/llm-tokens: spec.costCurrency: "usd" is not a known ISO 4217 currency"#,
    );
}

#[test]
fn decimals_must_parse_and_not_be_negative() {
    assert_error(
        &edited("RatePlan", "translation-pro", |v| {
            v["spec"]["charges"][0]["graduated"][1]["unitPrice"] = json!("0,5")
        }),
        r#"spec.charges[0].graduated[1].unitPrice: "0,5" is not a decimal number"#,
    );
    assert_error(
        &edited("RatePlan", "ai-agents-usage", |v| {
            v["spec"]["minimumCommitment"] = json!("-5")
        }),
        r#"spec.minimumCommitment: "-5" is negative"#,
    );
}

#[test]
fn tier_bounds_must_increase_strictly() {
    assert_error(
        &edited("RatePlan", "ai-agents-usage", |v| {
            v["spec"]["charges"][2]["volume"] = json!([
                {"upTo": "500", "unitPrice": "1"}, {"upTo": "500.0", "unitPrice": "1"}, {"unitPrice": "1"}
            ]);
        }),
        "spec.charges[2].volume[1].upTo: 500.0 does not exceed the previous tier's 500",
    );
}

#[test]
fn cel_rules_run_without_an_apiserver() {
    assert_error(
        &edited("Meter", "agent-sessions", |v| {
            v["spec"]["valueProperty"] = json!("$.n")
        }),
        "Meter/agent-sessions",
    );
    assert_error(
        &edited("RatePlan", "ai-agents-usage", |v| {
            v["spec"]["charges"][0]["flat"] = json!({"amount": "1"})
        }),
        "a charge has exactly one of flat",
    );
}

#[test]
fn other_semantic_rules() {
    assert_error(
        &edited("Meter", "translation-characters", |v| {
            v["spec"]["valueProperty"] = json!("characters")
        }),
        "spec.valueProperty: \"characters\" is not a JSONPath",
    );
    assert_error(
        &edited("Meter", "llm-tokens", |v| {
            v["spec"]
                .as_object_mut()
                .unwrap()
                .remove("costCurrency")
                .map(|_| ())
                .unwrap_or(())
        }),
        "Meter/llm-tokens: spec.costCurrency: is required with unitCost",
    );
    assert_error(
        &edited("RatePlan", "ai-agents-usage", |v| {
            v["spec"]["discount"]["validUntil"] = json!("2025-01-01T00:00:00Z")
        }),
        "spec.discount.validUntil: must be after validFrom",
    );
    assert_error(
        &edited("RatePlan", "ai-agents-usage", |v| {
            v["spec"]["discount"]["percent"] = json!("120")
        }),
        "spec.discount.percent: must not exceed 100",
    );
    assert_error(
        &edited("RatePlan", "translation-pro", |v| {
            v["spec"]["effectiveFrom"] = json!("next monday")
        }),
        "spec.effectiveFrom: \"next monday\" is not an RFC 3339 time",
    );
    assert_error(
        &edited("RatePlan", "ai-agents-usage", |v| {
            v["spec"]["charges"][1]["perUnit"]["byDimension"]["dimension"] = json!("colour")
        }),
        "spec.charges[1].perUnit.byDimension.dimension: \"colour\" is not a groupBy dimension",
    );
    let mut twice = examples();
    twice.push(examples().remove(0));
    assert_error(&twice, "metadata.name: is declared twice");
}

#[test]
fn every_error_of_a_broken_set_is_reported_at_once() {
    let broken = edited("RatePlan", "translation-pro", |v| {
        v["spec"]["currency"] = json!("EUX");
        v["spec"]["productRef"] = json!("nope");
        v["spec"]["recurringFees"][0]["amount"] = json!("forty");
    });
    let errors = compile(&broken, None).unwrap_err();
    let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
    for field in [
        "spec.currency",
        "spec.productRef",
        "spec.recurringFees[0].amount",
    ] {
        assert!(fields.contains(&field), "{field} missing from {fields:?}");
    }
}

#[test]
fn manifests_name_what_they_cannot_read() {
    let wrong_kind = Resource::from_value(
        json!({"apiVersion": "aforo.io/v1alpha1", "kind": "Metre", "metadata": {"name": "x"}, "spec": {}}),
        "m.yaml, document 2",
    )
    .unwrap_err();
    assert!(
        wrong_kind
            .to_string()
            .contains("\"Metre\" is not an aforo kind"),
        "{wrong_kind}"
    );
    assert!(wrong_kind.to_string().contains("m.yaml, document 2"));
    let wrong_version = Resource::from_value(
        json!({"apiVersion": "aforo.io/v1", "kind": "Meter", "metadata": {"name": "x"}}),
        "m.yaml, document 1",
    )
    .unwrap_err();
    assert_eq!(wrong_version.field, "apiVersion");
    let bad_yaml = yaml_documents("kind: [unclosed", "bad.yaml").unwrap_err();
    assert!(bad_yaml.message.contains("not YAML"));
}

#[test]
fn webhook_mappings_must_be_rfc_9535_jsonpaths() {
    let broken = edited("WebhookSource", "stripe-payments", |v| {
        v["spec"]["mappings"][0]["customer"] = json!("$.data[");
        v["spec"]["mappings"][0]["type"] = json!("$..[?");
    });
    assert_error(&broken, "spec.mappings[0].customer");
    assert_error(&broken, "spec.mappings[0].type");
    assert_error(&broken, "is not an RFC 9535 JSONPath");
}

#[test]
fn a_tolerance_is_read_with_the_one_duration_grammar() {
    for (tolerance, reason) in [
        ("1h30m", "unknown unit"),
        ("5", "no unit"),
        (" 5m", "whole number"),
    ] {
        let broken = edited("WebhookSource", "stripe-payments", |v| {
            v["spec"]["tolerance"] = json!(tolerance)
        });
        assert_error(&broken, "WebhookSource/stripe-payments: spec.tolerance: ");
        assert_error(&broken, reason);
    }
    for tolerance in ["300s", "5m", "1h", "2d", "1500ms"] {
        let errors = errors_of(&edited("WebhookSource", "stripe-payments", |v| {
            v["spec"]["tolerance"] = json!(tolerance)
        }));
        assert!(errors.is_empty(), "{tolerance}: {errors:#?}");
    }
}

#[test]
fn an_hmac_source_names_its_signature_header() {
    let broken = edited("WebhookSource", "stripe-payments", |v| {
        v["spec"]["provider"] = json!("hmac");
        v["spec"]["publicUrl"] = json!("ftp://example.com/hook");
    });
    assert_error(&broken, "spec.signatureHeader");
    assert_error(&broken, "is not an http:// or https:// URL");
}
