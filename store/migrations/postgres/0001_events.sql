-- Tenants own everything; every other table is keyed by tenant_id.
CREATE TABLE tenants (
    id          UUID PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    -- Key of the per-tenant validation HMAC.
    hmac_key    BYTEA NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL
);

-- API keys are stored as SHA-256 hashes; the prefix identifies a key in logs.
CREATE TABLE api_keys (
    key_hash    TEXT PRIMARY KEY,
    tenant_id   UUID NOT NULL REFERENCES tenants (id),
    prefix      TEXT NOT NULL,
    label       TEXT NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL
);

-- Accepted Source Events with their provenance. dedup_key is the idempotency
-- key ((source, id) by default); its uniqueness per tenant is what makes
-- dedup exact and permanent. tenant_id has no foreign key on purpose: only
-- the server sets it, from an authenticated key, and a per-row RI check is
-- a measurable share of the hottest write path.
CREATE TABLE events (
    id               UUID PRIMARY KEY,
    seq              BIGINT GENERATED ALWAYS AS IDENTITY,
    tenant_id        UUID NOT NULL,
    dedup_key        TEXT NOT NULL,
    event_id         TEXT NOT NULL,
    source           TEXT NOT NULL,
    type             TEXT NOT NULL,
    customer         TEXT NOT NULL,
    time             TIMESTAMPTZ NOT NULL,
    -- json, not jsonb: the canonical text is kept byte for byte, as hashed.
    properties       JSON NOT NULL,
    tier             TEXT NOT NULL,
    tier_detail      TEXT NOT NULL,
    status           TEXT NOT NULL,
    flags            SMALLINT NOT NULL,
    gates            TEXT NOT NULL,
    validation_hash  TEXT NOT NULL,
    received_at      TIMESTAMPTZ NOT NULL,
    node             TEXT NOT NULL,
    UNIQUE (tenant_id, dedup_key)
);
CREATE INDEX events_tenant_seq ON events (tenant_id, seq);
CREATE INDEX events_tenant_customer_time ON events (tenant_id, customer, time);

-- Every rejected event, with the raw payload it arrived as.
CREATE TABLE rejections (
    id           UUID PRIMARY KEY,
    seq          BIGINT GENERATED ALWAYS AS IDENTITY,
    tenant_id    UUID NOT NULL,
    event_id     TEXT,
    source       TEXT,
    type         TEXT,
    customer     TEXT,
    reason       TEXT NOT NULL,
    message      TEXT NOT NULL,
    gates        TEXT NOT NULL,
    payload      TEXT NOT NULL,
    tier         TEXT NOT NULL,
    tier_detail  TEXT NOT NULL,
    received_at  TIMESTAMPTZ NOT NULL,
    node         TEXT NOT NULL
);
CREATE INDEX rejections_tenant_seq ON rejections (tenant_id, seq);
