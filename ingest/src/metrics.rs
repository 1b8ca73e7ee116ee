//! Prometheus metrics of the ingest role, and the enrichment context
//! cache's counters: registered in the process's one registry and served on
//! its `/metrics` ([`aforo_api::serve`]).

use std::sync::Arc;
use std::time::Duration;

use aforo_store::context::ContextCache;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;

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
    events: Family<EventLabels, Counter>,
    request_seconds: Family<DoorLabels, Histogram, fn() -> Histogram>,
    request_events: Family<DoorLabels, Histogram, fn() -> Histogram>,
    commit_seconds: Family<OutcomeLabels, Histogram, fn() -> Histogram>,
    commit_group_events: Histogram,
    deliveries: Family<DeliveryLabels, Counter>,
    batch_rows: Family<BatchLabels, Counter>,
}

impl Metrics {
    /// The ingest metrics, registered in `registry` as `aforo_ingest_*`.
    pub fn register(registry: &mut Registry) -> Self {
        let registry = registry.sub_registry_with_prefix("aforo_ingest");
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
            deliveries,
            batch_rows,
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
}

/// The enrichment context cache's lookups by result, read from the cache's
/// own counters at each scrape.
pub struct ContextCacheLookups(pub Arc<ContextCache>);

impl std::fmt::Debug for ContextCacheLookups {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("ContextCacheLookups")
            .field(&self.0.stats())
            .finish()
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
}

impl ContextCacheLookups {
    /// Registers the lookups of `cache` as
    /// `aforo_enrich_context_cache_lookups_total`.
    pub fn register(registry: &mut Registry, cache: Arc<ContextCache>) {
        registry.register_collector(Box::new(ContextCacheLookups(cache)));
    }
}

impl Collector for ContextCacheLookups {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let stats = self.0.stats();
        let mut family = encoder.encode_descriptor(
            "aforo_enrich_context_cache_lookups",
            "Enrichment context lookups, by result (fallback: the cache was unreachable and the store answered)",
            None,
            MetricType::Counter,
        )?;
        for (result, n) in [
            ("hit", stats.hits),
            ("miss", stats.misses),
            ("fallback", stats.fallbacks),
        ] {
            ConstCounter::new(n).encode(family.encode_family(&ResultLabels { result })?)?;
        }
        Ok(())
    }
}
