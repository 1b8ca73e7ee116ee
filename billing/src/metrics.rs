//! The bill run's metrics, registered in the process's one registry as
//! `aforo_billing_*` and observed after every run, scheduled or asked for.
//! docs/billing.md ("Watching runs") lists them.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::billrun::runner::RunReport;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PhaseLabels {
    phase: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StageLabels {
    stage: String,
}

fn seconds() -> Histogram {
    // 1 ms … ~4.5 min
    Histogram::new(exponential_buckets(0.001, 2.0, 19))
}

#[derive(Debug)]
pub struct BillRunMetrics {
    runs: Family<OutcomeLabels, Counter>,
    duration: Histogram,
    phases: Family<PhaseLabels, Histogram, fn() -> Histogram>,
    stages: Family<StageLabels, Histogram, fn() -> Histogram>,
    invoices: Counter,
    already_invoiced: Counter,
    failed: Family<StageLabels, Counter>,
    events_read: Counter,
    differences: Counter,
}

impl BillRunMetrics {
    /// The bill-run metrics, registered in `registry` as `aforo_billing_*`.
    pub fn register(registry: &mut Registry) -> Self {
        let registry = registry.sub_registry_with_prefix("aforo_billing");
        let metrics = BillRunMetrics {
            runs: Family::default(),
            duration: seconds(),
            phases: Family::new_with_constructor(seconds),
            stages: Family::new_with_constructor(seconds),
            invoices: Counter::default(),
            already_invoiced: Counter::default(),
            failed: Family::default(),
            events_read: Counter::default(),
            differences: Counter::default(),
        };
        registry.register(
            "bill_runs",
            "Bill runs, by outcome: ok, or error (the run stopped; what it settled stands)",
            metrics.runs.clone(),
        );
        registry.register(
            "bill_run_duration_seconds",
            "Wall time of a bill run",
            metrics.duration.clone(),
        );
        registry.register(
            "bill_run_phase_seconds",
            "Wall time of the phases of a bill run with something due: load, read_wait, resolve, \
             stages, settle, reconcile",
            metrics.phases.clone(),
        );
        registry.register(
            "bill_run_stage_seconds",
            "Time a bill run with something due spent in each of the ten stages, summed over its \
             subscriptions",
            metrics.stages.clone(),
        );
        registry.register(
            "bill_run_invoices",
            "Invoices written by bill runs",
            metrics.invoices.clone(),
        );
        registry.register(
            "bill_run_already_invoiced",
            "Periods a bill run found invoiced by another run first",
            metrics.already_invoiced.clone(),
        );
        registry.register(
            "bill_run_subscriptions_failed",
            "Subscription periods a bill run could not bill, by the stage that refused them \
             (LOAD: their inputs could not be built)",
            metrics.failed.clone(),
        );
        registry.register(
            "bill_run_events_read",
            "Events read by bill runs",
            metrics.events_read.clone(),
        );
        registry.register(
            "bill_run_reconciliation_differences",
            "Lines whose aggregate differs from the revenue estimator's running total",
            metrics.differences.clone(),
        );
        metrics
    }

    /// Counts a run that finished, with what its report says.
    pub fn finished(&self, report: &RunReport, took: Duration) {
        self.runs
            .get_or_create(&OutcomeLabels { outcome: "ok" })
            .inc();
        self.duration.observe(took.as_secs_f64());
        self.invoices.inc_by(report.invoiced.len() as u64);
        self.already_invoiced.inc_by(report.already_invoiced);
        self.events_read.inc_by(report.events_read);
        self.differences.inc_by(report.differences.len() as u64);
        for failure in &report.failures {
            self.failed
                .get_or_create(&StageLabels {
                    stage: failure.stage.clone(),
                })
                .inc();
        }
        let due = !report.invoiced.is_empty()
            || !report.failures.is_empty()
            || report.already_invoiced > 0;
        if !due {
            // The scheduler's many runs with nothing due would only drown
            // the phases' histograms in zeros.
            return;
        }
        let t = &report.timings;
        for (phase, ms) in [
            ("load", t.load),
            ("read_wait", t.read_wait),
            ("resolve", t.resolve),
            ("stages", t.stages),
            ("settle", t.settle),
            ("reconcile", t.reconcile),
        ] {
            self.phases
                .get_or_create(&PhaseLabels { phase })
                .observe(ms as f64 / 1e3);
        }
        for (stage, micros) in &t.stage_micros {
            self.stages
                .get_or_create(&StageLabels {
                    stage: stage.clone(),
                })
                .observe(*micros as f64 / 1e6);
        }
    }

    /// Counts a run that stopped on an error.
    pub fn failed(&self, took: Duration) {
        self.runs
            .get_or_create(&OutcomeLabels { outcome: "error" })
            .inc();
        self.duration.observe(took.as_secs_f64());
    }
}
