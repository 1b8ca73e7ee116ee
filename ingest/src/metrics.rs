//! Prometheus metrics of the ingest role, served on `/metrics`.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::pipeline::BatchOutcome;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EventLabels {
    status: &'static str,
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DoorLabels {
    front_door: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DeliveryLabels {
    /// `namespace/name`, or `(unknown)` for a URL that names no source (so
    /// that random URLs cannot grow the label set).
    source: String,
    outcome: &'static str,
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BatchLabels {
    status: &'static str,
}

fn latency_histogram() -> Histogram {
    // 100 µs … ~3.3 s
    Histogram::new(exponential_buckets(0.0001, 2.0, 16))
}

fn size_histogram() -> Histogram {
    // 1 … 16384 events
    Histogram::new(exponential_buckets(1.0, 2.0, 15))
}

pub struct Metrics {
    registry: Registry,
    /// The enrichment context cache of this process, when it enriches.
    context: std::sync::OnceLock<std::sync::Arc<aforo_store::context::ContextCache>>,
    events: Family<EventLabels, Counter>,
    request_seconds: Family<DoorLabels, Histogram, fn() -> Histogram>,
    request_events: Family<DoorLabels, Histogram, fn() -> Histogram>,
    commit_seconds: Family<OutcomeLabels, Histogram, fn() -> Histogram>,
    commit_group_events: Histogram,
    deliveries: Family<DeliveryLabels, Counter>,
    batch_rows: Family<BatchLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("aforo_ingest");
        let events = Family::<EventLabels, Counter>::default();
        registry.register(
            "events",
            "Events answered, by status and rejection reason",
            events.clone(),
        );
        let request_seconds =
            Family::<DoorLabels, Histogram, fn() -> Histogram>::new_with_constructor(
                latency_histogram,
            );
        registry.register(
            "request_duration_seconds",
            "Time from a batch's arrival to its answer, by front door",
            request_seconds.clone(),
        );
        let request_events =
            Family::<DoorLabels, Histogram, fn() -> Histogram>::new_with_constructor(
                size_histogram,
            );
        registry.register(
            "batch_events",
            "Events per request, by front door",
            request_events.clone(),
        );
        let commit_seconds =
            Family::<OutcomeLabels, Histogram, fn() -> Histogram>::new_with_constructor(
                latency_histogram,
            );
        registry.register(
            "commit_duration_seconds",
            "Duration of one group-commit transaction, by outcome",
            commit_seconds.clone(),
        );
        let commit_group_events = size_histogram();
        registry.register(
            "commit_group_events",
            "Events and rejections written per group-commit transaction",
            commit_group_events.clone(),
        );
        let deliveries = Family::<DeliveryLabels, Counter>::default();
        registry.register(
            "webhook_deliveries",
            "Webhook deliveries, by source, outcome (accepted, ignored, rejected) and reason",
            deliveries.clone(),
        );
        let batch_rows = Family::<BatchLabels, Counter>::default();
        registry.register(
            "batch_rows",
            "Rows of batch uploads, by status",
            batch_rows.clone(),
        );
        Metrics {
            registry,
            deliveries,
            batch_rows,
            context: std::sync::OnceLock::new(),
            events,
            request_seconds,
            request_events,
            commit_seconds,
            commit_group_events,
        }
    }

    /// Counts a batch's results: one counter update per status (and per
    /// rejection reason), not one per event.
    pub fn count_batch(&self, batch: &BatchOutcome) {
        let add = |status: &'static str, reason: &'static str, n: u64| {
            if n > 0 {
                self.events
                    .get_or_create(&EventLabels { status, reason })
                    .inc_by(n);
            }
        };
        add("ACCEPTED", "", u64::from(batch.accepted));
        add("DUPLICATE", "", u64::from(batch.duplicates));
        for result in &batch.results {
            if let Some(reason) = result.reason {
                add("REJECTED", reason.as_str(), 1);
            }
        }
    }

    /// Counts one webhook delivery. `source` is `None` when the URL named
    /// no known source.
    pub fn count_delivery(
        &self,
        source: Option<&str>,
        outcome: &'static str,
        reason: &'static str,
    ) {
        self.deliveries
            .get_or_create(&DeliveryLabels {
                source: source.unwrap_or("(unknown)").to_owned(),
                outcome,
                reason,
            })
            .inc();
    }

    /// Counts the rows of a batch chunk by status.
    pub fn count_batch_rows(&self, accepted: u64, duplicates: u64, rejected: u64) {
        for (status, n) in [
            ("ACCEPTED", accepted),
            ("DUPLICATE", duplicates),
            ("REJECTED", rejected),
        ] {
            if n > 0 {
                self.batch_rows
                    .get_or_create(&BatchLabels { status })
                    .inc_by(n);
            }
        }
    }

    pub fn observe_request(&self, front_door: &'static str, events: usize, elapsed: Duration) {
        let labels = DoorLabels { front_door };
        self.request_seconds
            .get_or_create(&labels)
            .observe(elapsed.as_secs_f64());
        self.request_events
            .get_or_create(&labels)
            .observe(events as f64);
    }

    pub fn observe_commit(&self, size: usize, elapsed: Duration, ok: bool) {
        let outcome = if ok { "ok" } else { "error" };
        self.commit_seconds
            .get_or_create(&OutcomeLabels { outcome })
            .observe(elapsed.as_secs_f64());
        self.commit_group_events.observe(size as f64);
    }

    /// Reports the enrichment context cache's hits, misses and fallbacks.
    pub fn watch_context_cache(&self, cache: std::sync::Arc<aforo_store::context::ContextCache>) {
        let _ = self.context.set(cache);
    }

    /// The OpenMetrics text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        if let Some(cache) = self.context.get() {
            // The cache counts in its own atomics.
            out = before_eof(out, &context_cache_exposition(cache.stats()));
        }
        out
    }
}

/// Puts `families` (OpenMetrics text without `# EOF`) at the end of an
/// exposition, before its closing `# EOF`.
pub fn before_eof(exposition: String, families: &str) -> String {
    let body = exposition.strip_suffix("# EOF\n").unwrap_or(&exposition);
    format!("{body}{families}# EOF\n")
}

/// The context cache's counters in OpenMetrics text (without `# EOF`).
pub fn context_cache_exposition(stats: aforo_store::context::CacheStats) -> String {
    format!(
        "# HELP aforo_enrich_context_cache_lookups Enrichment context lookups, by result (fallback: the cache was unreachable and the store answered).\n\
         # TYPE aforo_enrich_context_cache_lookups counter\n\
         aforo_enrich_context_cache_lookups_total{{result=\"hit\"}} {}\n\
         aforo_enrich_context_cache_lookups_total{{result=\"miss\"}} {}\n\
         aforo_enrich_context_cache_lookups_total{{result=\"fallback\"}} {}\n",
        stats.hits, stats.misses, stats.fallbacks
    )
}

/// The enrichment backlog gauge: events ready for enrichment and not yet
/// enriched, in every tenant. Whether enrichment keeps up with ingest is
/// whether this stays flat.
pub fn enrichment_backlog_exposition(events: u64) -> String {
    format!(
        "# HELP aforo_enrichment_backlog_events Events stored and ready for enrichment but not yet enriched (parked events not included).\n\
         # TYPE aforo_enrichment_backlog_events gauge\n\
         aforo_enrichment_backlog_events {events}\n"
    )
}
