-- Streamed batch uploads (POST /v1/batches). The rows themselves become
-- events and rejections like any others; a batch keeps its counters and the
-- per-row results, as NDJSON in chunks written as the upload goes, so a
-- result file of millions of rows is never one value.
CREATE TABLE batches (
    id           UUID PRIMARY KEY,
    tenant_id    UUID NOT NULL,
    format       TEXT NOT NULL,
    status       TEXT NOT NULL,
    row_count    BIGINT NOT NULL,
    accepted     BIGINT NOT NULL,
    duplicates   BIGINT NOT NULL,
    rejected     BIGINT NOT NULL,
    error        TEXT,
    created_at   TIMESTAMPTZ NOT NULL,
    finished_at  TIMESTAMPTZ
);
CREATE INDEX batches_tenant_created ON batches (tenant_id, created_at);

CREATE TABLE batch_results (
    batch_id   UUID NOT NULL REFERENCES batches (id),
    chunk      BIGINT NOT NULL,
    first_row  BIGINT NOT NULL,
    row_count  BIGINT NOT NULL,
    accepted   BIGINT NOT NULL,
    duplicates BIGINT NOT NULL,
    rejected   BIGINT NOT NULL,
    results    TEXT NOT NULL,
    PRIMARY KEY (batch_id, chunk)
);
