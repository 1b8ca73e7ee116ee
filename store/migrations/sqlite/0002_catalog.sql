CREATE TABLE catalog_versions (
    tenant_id       TEXT NOT NULL REFERENCES tenants (id),
    version         INTEGER NOT NULL,
    content_hash    TEXT NOT NULL,
    effective_from  INTEGER,
    snapshot        TEXT NOT NULL,
    applied_at      INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, version)
);

CREATE TABLE customers (
    id           TEXT PRIMARY KEY,
    tenant_id    TEXT NOT NULL REFERENCES tenants (id),
    external_id  TEXT NOT NULL,
    name         TEXT NOT NULL,
    currency     TEXT,
    tax_region   TEXT,
    metadata     TEXT NOT NULL,
    created_at   INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL,
    UNIQUE (tenant_id, external_id)
);

CREATE TABLE subscriptions (
    id                  TEXT PRIMARY KEY,
    tenant_id           TEXT NOT NULL REFERENCES tenants (id),
    customer_id         TEXT NOT NULL REFERENCES customers (id),
    starts_at           INTEGER NOT NULL,
    ends_at             INTEGER,
    billing_anchor_day  INTEGER,
    created_at          INTEGER NOT NULL
);
CREATE INDEX subscriptions_customer ON subscriptions (tenant_id, customer_id);

CREATE TABLE subscription_phases (
    subscription_id  TEXT NOT NULL REFERENCES subscriptions (id),
    starts_at        INTEGER NOT NULL,
    ends_at          INTEGER,
    rate_plan        TEXT NOT NULL,
    recorded_at      INTEGER NOT NULL,
    PRIMARY KEY (subscription_id, starts_at)
);
