-- Numbers are decimal strings; times are INTEGER microseconds. See the
-- PostgreSQL migration for what each table is.
CREATE TABLE invoice_counters (
    tenant_id  TEXT PRIMARY KEY,
    next       INTEGER NOT NULL
);

CREATE TABLE invoices (
    id               TEXT PRIMARY KEY,
    tenant_id        TEXT NOT NULL,
    number           TEXT NOT NULL,
    subscription_id  TEXT NOT NULL,
    customer         TEXT NOT NULL,
    period_start     INTEGER NOT NULL,
    period_end       INTEGER NOT NULL,
    cutoff           INTEGER NOT NULL,
    currency         TEXT NOT NULL,
    total            TEXT NOT NULL,
    bill_run_id      TEXT NOT NULL,
    document         TEXT NOT NULL,
    document_hash    TEXT NOT NULL,
    settled_at       INTEGER NOT NULL,
    UNIQUE (tenant_id, number),
    UNIQUE (subscription_id, period_start)
);
CREATE INDEX invoices_customer ON invoices (tenant_id, customer, period_start);

CREATE TABLE bill_run_event_index (
    invoice_id   TEXT NOT NULL REFERENCES invoices (id),
    line_no      INTEGER NOT NULL,
    event_count  INTEGER NOT NULL,
    event_ids    BLOB NOT NULL,
    PRIMARY KEY (invoice_id, line_no)
);

CREATE TRIGGER invoices_no_update BEFORE UPDATE ON invoices
BEGIN SELECT RAISE(ABORT, 'invoices is immutable: settled invoices are never changed'); END;
CREATE TRIGGER invoices_no_delete BEFORE DELETE ON invoices
BEGIN SELECT RAISE(ABORT, 'invoices is immutable: settled invoices are never changed'); END;
CREATE TRIGGER lineage_no_update BEFORE UPDATE ON bill_run_event_index
BEGIN SELECT RAISE(ABORT, 'bill_run_event_index is immutable: settled invoices are never changed'); END;
CREATE TRIGGER lineage_no_delete BEFORE DELETE ON bill_run_event_index
BEGIN SELECT RAISE(ABORT, 'bill_run_event_index is immutable: settled invoices are never changed'); END;

CREATE TABLE invoice_deliveries (
    id               TEXT PRIMARY KEY,
    tenant_id        TEXT NOT NULL,
    invoice_id       TEXT NOT NULL REFERENCES invoices (id),
    route            TEXT NOT NULL,
    attempts         INTEGER NOT NULL DEFAULT 0,
    last_error       TEXT,
    next_attempt_at  INTEGER NOT NULL,
    delivered_at     INTEGER
);
CREATE INDEX invoice_deliveries_pending ON invoice_deliveries (next_attempt_at)
    WHERE delivered_at IS NULL;

CREATE TABLE bill_runs (
    id           TEXT PRIMARY KEY,
    tenant_id    TEXT NOT NULL,
    as_of        INTEGER NOT NULL,
    cutoff       INTEGER NOT NULL,
    started_at   INTEGER NOT NULL,
    finished_at  INTEGER NOT NULL,
    invoiced     INTEGER NOT NULL,
    failed       INTEGER NOT NULL,
    report       TEXT NOT NULL
);
CREATE INDEX bill_runs_tenant ON bill_runs (tenant_id, started_at);

CREATE TABLE subscription_discounts (
    id               TEXT PRIMARY KEY,
    tenant_id        TEXT NOT NULL,
    subscription_id  TEXT NOT NULL REFERENCES subscriptions (id),
    percent          TEXT,
    amount           TEXT,
    valid_from       INTEGER,
    valid_until      INTEGER,
    created_at       INTEGER NOT NULL,
    CHECK ((percent IS NULL) <> (amount IS NULL))
);
CREATE INDEX subscription_discounts_tenant ON subscription_discounts (tenant_id);
