//! The operator's Prometheus metrics, served on `/metrics` beside
//! `/healthz` and `/readyz`.
//!
//! `aforo_operator_writes_total` counts every write the controllers send to
//! the apiserver (applies, deletes, status patches, finalizers, events), by
//! kind and verb; the leader Lease's renewals are counted apart, under
//! `aforo_operator_lease_writes_total`. A steady cluster shows no growth of
//! the first.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReconcileLabels {
    controller: &'static str,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ControllerLabels {
    controller: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WriteLabels {
    kind: String,
    verb: &'static str,
}

fn duration_histogram() -> Histogram {
    // 1 ms … ~33 s
    Histogram::new(exponential_buckets(0.001, 2.0, 16))
}

pub struct Metrics {
    registry: Registry,
    reconciliations: Family<ReconcileLabels, Counter>,
    duration: Family<ControllerLabels, Histogram, fn() -> Histogram>,
    writes: Family<WriteLabels, Counter>,
    writes_total: AtomicU64,
    lease_writes: Counter,
    leader: Gauge,
    ready: AtomicBool,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("aforo_operator");
        let reconciliations = Family::<ReconcileLabels, Counter>::default();
        registry.register(
            "reconciliations",
            "Reconciles run, by controller and result (ok, error)",
            reconciliations.clone(),
        );
        let duration =
            Family::<ControllerLabels, Histogram, fn() -> Histogram>::new_with_constructor(
                duration_histogram,
            );
        registry.register(
            "reconcile_duration_seconds",
            "How long reconciles took, by controller",
            duration.clone(),
        );
        let writes = Family::<WriteLabels, Counter>::default();
        registry.register(
            "writes",
            "Writes sent to the apiserver, by kind and verb (apply, delete, status, finalizer, event)",
            writes.clone(),
        );
        let lease_writes = Counter::default();
        registry.register(
            "lease_writes",
            "Writes of the leader-election Lease (acquire, renew, release)",
            lease_writes.clone(),
        );
        let leader = Gauge::default();
        registry.register(
            "leader",
            "1 while this process holds the leader Lease",
            leader.clone(),
        );
        Metrics {
            registry,
            reconciliations,
            duration,
            writes,
            writes_total: AtomicU64::new(0),
            lease_writes,
            leader,
            ready: AtomicBool::new(false),
        }
    }

    pub fn reconciled(&self, controller: &'static str, ok: bool, took: Duration) {
        self.reconciliations
            .get_or_create(&ReconcileLabels {
                controller,
                result: if ok { "ok" } else { "error" },
            })
            .inc();
        self.duration
            .get_or_create(&ControllerLabels { controller })
            .observe(took.as_secs_f64());
    }

    pub fn write(&self, kind: &str, verb: &'static str) {
        self.writes
            .get_or_create(&WriteLabels {
                kind: kind.to_owned(),
                verb,
            })
            .inc();
        self.writes_total.fetch_add(1, Ordering::Relaxed);
    }

    pub fn lease_write(&self) {
        self.lease_writes.inc();
    }

    pub fn set_leader(&self, leader: bool) {
        self.leader.set(i64::from(leader));
    }

    /// Marks the operator ready (leader, controllers running) or not.
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Relaxed);
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }

    /// Reconciles of `controller` that ended with `result` ("ok", "error").
    pub fn reconciliations(&self, controller: &'static str, result: &'static str) -> u64 {
        self.reconciliations
            .get_or_create(&ReconcileLabels { controller, result })
            .get()
    }

    /// Every write sent, the Lease's excepted.
    pub fn writes_total(&self) -> u64 {
        self.writes_total.load(Ordering::Relaxed)
    }

    /// The OpenMetrics exposition.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        match prometheus_client::encoding::text::encode(&mut text, &self.registry) {
            Ok(()) => text,
            Err(e) => format!("# encoding failed: {e}\n# EOF\n"),
        }
    }
}

/// `/metrics`, `/healthz` (the process runs) and `/readyz` (it leads and
/// its controllers run).
pub fn router(metrics: Arc<Metrics>) -> axum::Router {
    use axum::http::{StatusCode, header};
    use axum::routing::get;
    let ready = metrics.clone();
    axum::Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(move || {
                let ready = ready.is_ready();
                async move {
                    if ready {
                        (StatusCode::OK, "ok")
                    } else {
                        (StatusCode::SERVICE_UNAVAILABLE, "not leading")
                    }
                }
            }),
        )
        .route(
            "/metrics",
            get(move || {
                let text = metrics.encode();
                async move {
                    (
                        [(
                            header::CONTENT_TYPE,
                            "application/openmetrics-text; version=1.0.0; charset=utf-8",
                        )],
                        text,
                    )
                }
            }),
        )
}

#[cfg(test)]
mod tests {
    use super::Metrics;

    #[test]
    fn writes_are_summed_over_kinds_and_verbs_without_the_lease() {
        let metrics = Metrics::new();
        assert_eq!(metrics.writes_total(), 0);
        metrics.write("Deployment", "apply");
        metrics.write("Deployment", "apply");
        metrics.write("MeteringPipeline", "status");
        metrics.lease_write();
        assert_eq!(metrics.writes_total(), 3);
        let text = metrics.encode();
        assert!(
            text.contains(r#"aforo_operator_writes_total{kind="Deployment",verb="apply"} 2"#),
            "{text}"
        );
        assert!(
            text.contains("aforo_operator_lease_writes_total 1"),
            "{text}"
        );
    }
}
