-- Immutable catalog versions: one row per applied content change.
CREATE TABLE catalog_versions (
    tenant_id       UUID NOT NULL REFERENCES tenants (id),
    version         BIGINT NOT NULL,
    content_hash    TEXT NOT NULL,
    effective_from  TIMESTAMPTZ,
    -- Canonical JSON of the compiled snapshot, byte for byte as hashed.
    snapshot        TEXT NOT NULL,
    applied_at      TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (tenant_id, version)
);

-- Customers are business data: created by API, CLI or CSV import.
CREATE TABLE customers (
    id           UUID PRIMARY KEY,
    tenant_id    UUID NOT NULL REFERENCES tenants (id),
    external_id  TEXT NOT NULL,
    name         TEXT NOT NULL,
    currency     TEXT,
    tax_region   TEXT,
    metadata     TEXT NOT NULL,
    created_at   TIMESTAMPTZ NOT NULL,
    updated_at   TIMESTAMPTZ NOT NULL,
    UNIQUE (tenant_id, external_id)
);

CREATE TABLE subscriptions (
    id                  UUID PRIMARY KEY,
    tenant_id           UUID NOT NULL REFERENCES tenants (id),
    customer_id         UUID NOT NULL REFERENCES customers (id),
    starts_at           TIMESTAMPTZ NOT NULL,
    ends_at             TIMESTAMPTZ,
    billing_anchor_day  SMALLINT,
    created_at          TIMESTAMPTZ NOT NULL
);
CREATE INDEX subscriptions_customer ON subscriptions (tenant_id, customer_id);

-- Which rate plan a subscription is on, over time. A plan change closes one
-- phase and opens the next at its effective time; phases are never edited
-- otherwise, so the past is never rewritten.
CREATE TABLE subscription_phases (
    subscription_id  UUID NOT NULL REFERENCES subscriptions (id),
    starts_at        TIMESTAMPTZ NOT NULL,
    ends_at          TIMESTAMPTZ,
    rate_plan        TEXT NOT NULL,
    recorded_at      TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (subscription_id, starts_at)
);
