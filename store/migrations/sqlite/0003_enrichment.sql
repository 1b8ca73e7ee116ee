-- Numbers are decimal strings; times are INTEGER microseconds.
-- The enrichment queue: see the PostgreSQL migration. `position` keeps the
-- order events were stored in.
CREATE TABLE enrichment_queue (
    position   INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id   TEXT NOT NULL UNIQUE,
    tenant_id  TEXT NOT NULL,
    waiting    TEXT
);
CREATE INDEX enrichment_queue_parked ON enrichment_queue (tenant_id) WHERE waiting IS NOT NULL;

CREATE TABLE running_totals (
    tenant_id        TEXT NOT NULL,
    subscription_id  TEXT NOT NULL,
    meter            TEXT NOT NULL,
    dimension        TEXT NOT NULL,
    period_start     INTEGER NOT NULL,
    plan_terms       TEXT NOT NULL,
    quantity         TEXT NOT NULL,
    price            TEXT NOT NULL,
    latest_time      INTEGER,
    updated_at       INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, subscription_id, meter, dimension, period_start, plan_terms)
);

CREATE TABLE running_unique_values (
    tenant_id        TEXT NOT NULL,
    subscription_id  TEXT NOT NULL,
    meter            TEXT NOT NULL,
    dimension        TEXT NOT NULL,
    period_start     INTEGER NOT NULL,
    plan_terms       TEXT NOT NULL,
    value            TEXT NOT NULL,
    PRIMARY KEY (tenant_id, subscription_id, meter, dimension, period_start, plan_terms, value)
);

CREATE TABLE ledger (
    event_id         TEXT NOT NULL,
    meter            TEXT NOT NULL,
    tenant_id        TEXT NOT NULL,
    customer         TEXT NOT NULL,
    subscription_id  TEXT NOT NULL,
    rate_plan        TEXT NOT NULL,
    catalog_version  INTEGER NOT NULL,
    dimension        TEXT NOT NULL,
    period_start     INTEGER NOT NULL,
    event_time       INTEGER NOT NULL,
    quantity         TEXT NOT NULL,
    revenue          TEXT NOT NULL,
    currency         TEXT NOT NULL,
    cost             TEXT NOT NULL,
    cost_currency    TEXT,
    enriched_at      INTEGER NOT NULL,
    PRIMARY KEY (event_id, meter)
);
CREATE INDEX ledger_customer_time ON ledger (tenant_id, customer, event_time);
