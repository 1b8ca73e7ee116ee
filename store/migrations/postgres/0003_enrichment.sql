-- The enrichment queue. Events stay append-only (what was sealed is never
-- rewritten); their enrichment state lives here: a row per event not yet
-- enriched, `waiting` NULL when it is ready to claim, or the reason it is
-- parked (UNATTRIBUTED, UNMETERED) until a requeue. Enriched events leave.
-- event_id is a UUIDv7, so its order is the order events were stored.
--
-- Claims take a shard (one of 16, from the event id's last byte) under a
-- transaction-scoped advisory lock instead of locking each row: a row lock
-- is a write into the heap, and a claim of 500 events paid for 500 of them.
CREATE TABLE enrichment_queue (
    event_id   UUID PRIMARY KEY,
    tenant_id  UUID NOT NULL,
    shard      SMALLINT NOT NULL,
    waiting    TEXT
);
CREATE INDEX enrichment_queue_ready ON enrichment_queue (shard, event_id) WHERE waiting IS NULL;
CREATE INDEX enrichment_queue_parked ON enrichment_queue (tenant_id) WHERE waiting IS NOT NULL;

-- Running totals per (subscription, meter, dimension, period, plan terms).
CREATE TABLE running_totals (
    tenant_id        UUID NOT NULL,
    subscription_id  UUID NOT NULL,
    meter            TEXT NOT NULL,
    dimension        TEXT NOT NULL,
    period_start     TIMESTAMPTZ NOT NULL,
    plan_terms       TEXT NOT NULL,
    quantity         NUMERIC NOT NULL,
    price            NUMERIC NOT NULL,
    -- LATEST: the time of the value the quantity holds.
    latest_time      TIMESTAMPTZ,
    updated_at       TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (tenant_id, subscription_id, meter, dimension, period_start, plan_terms)
);

-- UNIQUE_COUNT: the values a running total has counted.
CREATE TABLE running_unique_values (
    tenant_id        UUID NOT NULL,
    subscription_id  UUID NOT NULL,
    meter            TEXT NOT NULL,
    dimension        TEXT NOT NULL,
    period_start     TIMESTAMPTZ NOT NULL,
    plan_terms       TEXT NOT NULL,
    value            TEXT NOT NULL,
    PRIMARY KEY (tenant_id, subscription_id, meter, dimension, period_start, plan_terms, value)
);

-- The revenue and cost ledger: one row per (event, meter) an enrichment priced.
CREATE TABLE ledger (
    event_id         UUID NOT NULL,
    meter            TEXT NOT NULL,
    tenant_id        UUID NOT NULL,
    customer         TEXT NOT NULL,
    subscription_id  UUID NOT NULL,
    rate_plan        TEXT NOT NULL,
    catalog_version  BIGINT NOT NULL,
    dimension        TEXT NOT NULL,
    period_start     TIMESTAMPTZ NOT NULL,
    event_time       TIMESTAMPTZ NOT NULL,
    quantity         NUMERIC NOT NULL,
    revenue          NUMERIC NOT NULL,
    currency         TEXT NOT NULL,
    cost             NUMERIC NOT NULL,
    cost_currency    TEXT,
    enriched_at      TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (event_id, meter)
);
CREATE INDEX ledger_customer_time ON ledger (tenant_id, customer, event_time);
