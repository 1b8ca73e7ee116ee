-- See the PostgreSQL migration. Times are INTEGER microseconds.
CREATE TABLE batches (
    id           TEXT PRIMARY KEY,
    tenant_id    TEXT NOT NULL,
    format       TEXT NOT NULL,
    status       TEXT NOT NULL,
    row_count    INTEGER NOT NULL,
    accepted     INTEGER NOT NULL,
    duplicates   INTEGER NOT NULL,
    rejected     INTEGER NOT NULL,
    error        TEXT,
    created_at   INTEGER NOT NULL,
    finished_at  INTEGER
);
CREATE INDEX batches_tenant_created ON batches (tenant_id, created_at);

CREATE TABLE batch_results (
    batch_id   TEXT NOT NULL REFERENCES batches (id),
    chunk      INTEGER NOT NULL,
    first_row  INTEGER NOT NULL,
    row_count  INTEGER NOT NULL,
    accepted   INTEGER NOT NULL,
    duplicates INTEGER NOT NULL,
    rejected   INTEGER NOT NULL,
    results    TEXT NOT NULL,
    PRIMARY KEY (batch_id, chunk)
);
