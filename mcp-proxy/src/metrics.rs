//! Prometheus metrics of the proxy, served on `/metrics` of `--metrics-addr`.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

pub struct Metrics {
    registry: Registry,
    tool_calls: Family<OutcomeLabels, Counter>,
    pub events_spooled: Counter,
    pub events_delivered: Counter,
    pub events_rejected: Counter,
    pub events_dropped: Counter,
    pub ingest_failures: Counter,
    pub spool_records: Gauge<u64, AtomicU64>,
    pub spool_bytes: Gauge<u64, AtomicU64>,
    pub sessions: Gauge<u64, AtomicU64>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("aforo_mcp");
        let metrics = Metrics {
            tool_calls: Family::default(),
            events_spooled: Counter::default(),
            events_delivered: Counter::default(),
            events_rejected: Counter::default(),
            events_dropped: Counter::default(),
            ingest_failures: Counter::default(),
            spool_records: Gauge::default(),
            spool_bytes: Gauge::default(),
            sessions: Gauge::default(),
            registry: Registry::default(),
        };
        registry.register(
            "tool_calls",
            "tools/call requests metered, by outcome",
            metrics.tool_calls.clone(),
        );
        registry.register(
            "events_spooled",
            "Events written to the spool",
            metrics.events_spooled.clone(),
        );
        registry.register(
            "events_delivered",
            "Events ingest answered ACCEPTED or DUPLICATE for",
            metrics.events_delivered.clone(),
        );
        registry.register(
            "events_rejected",
            "Events ingest answered REJECTED for (stored there with their reason)",
            metrics.events_rejected.clone(),
        );
        registry.register(
            "events_dropped",
            "Events lost because the spool was full",
            metrics.events_dropped.clone(),
        );
        registry.register(
            "ingest_failures",
            "Ingest requests that failed and will be retried",
            metrics.ingest_failures.clone(),
        );
        registry.register(
            "spool_records",
            "Events in the spool not yet acknowledged by ingest",
            metrics.spool_records.clone(),
        );
        registry.register(
            "spool_bytes",
            "Bytes in the spool not yet acknowledged by ingest",
            metrics.spool_bytes.clone(),
        );
        registry.register("sessions", "MCP sessions open", metrics.sessions.clone());
        Metrics {
            registry,
            ..metrics
        }
    }

    pub fn tool_call(&self, outcome: &'static str) {
        self.tool_calls
            .get_or_create(&OutcomeLabels { outcome })
            .inc();
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
