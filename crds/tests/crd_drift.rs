//! The committed CRD YAML (what the Helm chart installs) must be exactly what
//! the Rust types generate.

fn committed() -> String {
    format!(
        "{}/../charts/aforo/crds/aforo.io.yaml",
        std::env::var("CARGO_MANIFEST_DIR")
            .expect("CARGO_MANIFEST_DIR: run by cargo test, or by scripts/hard-days.sh")
    )
}

#[test]
fn committed_crds_match_the_rust_types() {
    let generated = aforo_crds::catalog::crds_yaml().expect("CRDs serialize to YAML");
    if std::env::var_os("AFORO_UPDATE_CRDS").is_some() {
        std::fs::write(committed(), &generated).expect("write the CRD YAML");
    }
    let committed = std::fs::read_to_string(committed()).unwrap_or_default();
    assert!(
        committed == generated,
        "charts/aforo/crds/aforo.io.yaml is out of date with crds/src/catalog/.\n\
         Regenerate it: `aforo crd print > charts/aforo/crds/aforo.io.yaml`\n\
         (or AFORO_UPDATE_CRDS=1 cargo test -p aforo-crds --test crd_drift)"
    );
}

#[test]
fn every_kind_is_namespaced_in_the_aforo_category_with_status_and_ready_column() {
    for crd in aforo_crds::catalog::crds() {
        let kind = &crd.spec.names.kind;
        assert_eq!(crd.spec.group, "aforo.io", "{kind}");
        assert_eq!(crd.spec.scope, "Namespaced", "{kind}");
        assert_eq!(
            crd.spec.names.categories.as_deref(),
            Some(&["aforo".to_owned()][..]),
            "{kind}"
        );
        assert!(
            crd.spec
                .names
                .short_names
                .as_ref()
                .is_some_and(|s| !s.is_empty()),
            "{kind}"
        );
        let version = &crd.spec.versions[0];
        assert_eq!(version.name, "v1alpha1");
        assert!(
            version
                .subresources
                .as_ref()
                .and_then(|s| s.status.as_ref())
                .is_some(),
            "{kind}"
        );
        let columns: Vec<&str> = version
            .additional_printer_columns
            .iter()
            .flatten()
            .map(|c| c.name.as_str())
            .collect();
        for needed in ["Ready", "Reason", "Age"] {
            assert!(
                columns.contains(&needed),
                "{kind} lacks the {needed} column: {columns:?}"
            );
        }
    }
}
