//! Embedded schema migrations, applied in order at start-up.
//!
//! Each backend has its own SQL files under `migrations/<backend>/`; a
//! migration runs once, inside a transaction, and is recorded in
//! `aforo_migrations`. On PostgreSQL an advisory lock serializes replicas
//! that start together.

pub(crate) struct Migration {
    pub version: i64,
    pub name: &'static str,
    pub sql: &'static str,
}

pub(crate) const POSTGRES: &[Migration] = &[
    Migration {
        version: 1,
        name: "events",
        sql: include_str!("../migrations/postgres/0001_events.sql"),
    },
    Migration {
        version: 2,
        name: "catalog",
        sql: include_str!("../migrations/postgres/0002_catalog.sql"),
    },
    Migration {
        version: 3,
        name: "enrichment",
        sql: include_str!("../migrations/postgres/0003_enrichment.sql"),
    },
    Migration {
        version: 4,
        name: "billing",
        sql: include_str!("../migrations/postgres/0004_billing.sql"),
    },
    Migration {
        version: 5,
        name: "webhook_rejections",
        sql: include_str!("../migrations/postgres/0005_webhook_rejections.sql"),
    },
    Migration {
        version: 6,
        name: "batches",
        sql: include_str!("../migrations/postgres/0006_batches.sql"),
    },
    Migration {
        version: 7,
        name: "enrichment_log",
        sql: include_str!("../migrations/postgres/0007_enrichment_log.sql"),
    },
    Migration {
        version: 8,
        name: "trace_parent",
        sql: include_str!("../migrations/postgres/0008_trace_parent.sql"),
    },
];

pub(crate) const SQLITE: &[Migration] = &[
    Migration {
        version: 1,
        name: "events",
        sql: include_str!("../migrations/sqlite/0001_events.sql"),
    },
    Migration {
        version: 2,
        name: "catalog",
        sql: include_str!("../migrations/sqlite/0002_catalog.sql"),
    },
    Migration {
        version: 3,
        name: "enrichment",
        sql: include_str!("../migrations/sqlite/0003_enrichment.sql"),
    },
    Migration {
        version: 4,
        name: "billing",
        sql: include_str!("../migrations/sqlite/0004_billing.sql"),
    },
    Migration {
        version: 5,
        name: "webhook_rejections",
        sql: include_str!("../migrations/sqlite/0005_webhook_rejections.sql"),
    },
    Migration {
        version: 6,
        name: "batches",
        sql: include_str!("../migrations/sqlite/0006_batches.sql"),
    },
    Migration {
        version: 7,
        name: "enrichment_log",
        sql: include_str!("../migrations/sqlite/0007_enrichment_log.sql"),
    },
    Migration {
        version: 8,
        name: "trace_parent",
        sql: include_str!("../migrations/sqlite/0008_trace_parent.sql"),
    },
];

/// Arbitrary constant: the advisory lock that serializes migrations.
pub(crate) const PG_LOCK_KEY: i64 = 0x0af0_0001;
