-- Same shape as the PostgreSQL schema. Times are INTEGER microseconds since
-- the Unix epoch (UTC); UUIDs are their hyphenated text.
CREATE TABLE tenants (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    hmac_key    BLOB NOT NULL,
    created_at  INTEGER NOT NULL
);

CREATE TABLE api_keys (
    key_hash    TEXT PRIMARY KEY,
    tenant_id   TEXT NOT NULL REFERENCES tenants (id),
    prefix      TEXT NOT NULL,
    label       TEXT NOT NULL,
    created_at  INTEGER NOT NULL
);

CREATE TABLE events (
    seq              INTEGER PRIMARY KEY AUTOINCREMENT,
    id               TEXT NOT NULL UNIQUE,
    tenant_id        TEXT NOT NULL,
    dedup_key        TEXT NOT NULL,
    event_id         TEXT NOT NULL,
    source           TEXT NOT NULL,
    type             TEXT NOT NULL,
    customer         TEXT NOT NULL,
    time             INTEGER NOT NULL,
    properties       TEXT NOT NULL,
    tier             TEXT NOT NULL,
    tier_detail      TEXT NOT NULL,
    status           TEXT NOT NULL,
    flags            INTEGER NOT NULL,
    gates            TEXT NOT NULL,
    validation_hash  TEXT NOT NULL,
    received_at      INTEGER NOT NULL,
    node             TEXT NOT NULL,
    UNIQUE (tenant_id, dedup_key)
);
CREATE INDEX events_tenant_seq ON events (tenant_id, seq);
CREATE INDEX events_tenant_customer_time ON events (tenant_id, customer, time);

CREATE TABLE rejections (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    id           TEXT NOT NULL UNIQUE,
    tenant_id    TEXT NOT NULL,
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
    received_at  INTEGER NOT NULL,
    node         TEXT NOT NULL
);
CREATE INDEX rejections_tenant_seq ON rejections (tenant_id, seq);
