-- Invoices. A settled invoice is immutable: its document (canonical JSON,
-- hashed) and its lineage are never updated or deleted (triggers refuse).
-- Numbers are gapless per tenant, drawn under the counter row's lock.
CREATE TABLE invoice_counters (
    tenant_id  UUID PRIMARY KEY,
    next       BIGINT NOT NULL
);

CREATE TABLE invoices (
    id               UUID PRIMARY KEY,
    tenant_id        UUID NOT NULL,
    number           TEXT NOT NULL,
    subscription_id  UUID NOT NULL,
    customer         TEXT NOT NULL,
    period_start     TIMESTAMPTZ NOT NULL,
    period_end       TIMESTAMPTZ NOT NULL,
    cutoff           TIMESTAMPTZ NOT NULL,
    currency         TEXT NOT NULL,
    total            NUMERIC NOT NULL,
    bill_run_id      UUID NOT NULL,
    document         TEXT NOT NULL,
    document_hash    TEXT NOT NULL,
    settled_at       TIMESTAMPTZ NOT NULL,
    UNIQUE (tenant_id, number),
    -- A period is invoiced once: running a bill run twice creates nothing.
    UNIQUE (subscription_id, period_start)
);
CREATE INDEX invoices_customer ON invoices (tenant_id, customer, period_start);

-- Lineage: the events behind each invoice line, as their 16-byte ids
-- concatenated in line order (one row per line rather than per event: a
-- bill run over 10 M events writes tens of thousands of rows, not 10 M).
CREATE TABLE bill_run_event_index (
    invoice_id   UUID NOT NULL REFERENCES invoices (id),
    line_no      INTEGER NOT NULL,
    event_count  INTEGER NOT NULL,
    event_ids    BYTEA NOT NULL,
    PRIMARY KEY (invoice_id, line_no)
);

CREATE FUNCTION aforo_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% is immutable: settled invoices are never changed', TG_TABLE_NAME;
END $$;
CREATE TRIGGER invoices_immutable BEFORE UPDATE OR DELETE ON invoices
    FOR EACH ROW EXECUTE FUNCTION aforo_refuse_change();
CREATE TRIGGER bill_run_event_index_immutable BEFORE UPDATE OR DELETE ON bill_run_event_index
    FOR EACH ROW EXECUTE FUNCTION aforo_refuse_change();

-- The outbox of invoice deliveries (webhook, exports), written with the
-- invoice, delivered after it.
CREATE TABLE invoice_deliveries (
    id               UUID PRIMARY KEY,
    tenant_id        UUID NOT NULL,
    invoice_id       UUID NOT NULL REFERENCES invoices (id),
    route            TEXT NOT NULL,
    attempts         INTEGER NOT NULL DEFAULT 0,
    last_error       TEXT,
    next_attempt_at  TIMESTAMPTZ NOT NULL,
    delivered_at     TIMESTAMPTZ
);
CREATE INDEX invoice_deliveries_pending ON invoice_deliveries (next_attempt_at)
    WHERE delivered_at IS NULL;

-- Bill runs and what they reported (failures, reconciliation differences).
CREATE TABLE bill_runs (
    id           UUID PRIMARY KEY,
    tenant_id    UUID NOT NULL,
    as_of        TIMESTAMPTZ NOT NULL,
    cutoff       TIMESTAMPTZ NOT NULL,
    started_at   TIMESTAMPTZ NOT NULL,
    finished_at  TIMESTAMPTZ NOT NULL,
    invoiced     INTEGER NOT NULL,
    failed       INTEGER NOT NULL,
    report       TEXT NOT NULL
);
CREATE INDEX bill_runs_tenant ON bill_runs (tenant_id, started_at);

-- Discounts granted to one subscription.
CREATE TABLE subscription_discounts (
    id               UUID PRIMARY KEY,
    tenant_id        UUID NOT NULL,
    subscription_id  UUID NOT NULL REFERENCES subscriptions (id),
    percent          NUMERIC,
    amount           NUMERIC,
    valid_from       TIMESTAMPTZ,
    valid_until      TIMESTAMPTZ,
    created_at       TIMESTAMPTZ NOT NULL,
    CHECK ((percent IS NULL) <> (amount IS NULL))
);
CREATE INDEX subscription_discounts_tenant ON subscription_discounts (tenant_id);
