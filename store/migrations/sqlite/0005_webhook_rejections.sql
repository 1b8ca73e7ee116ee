-- See the PostgreSQL migration. Times are INTEGER microseconds.
CREATE TABLE webhook_rejections (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    id           TEXT NOT NULL UNIQUE,
    tenant_id    TEXT,
    namespace    TEXT NOT NULL,
    source       TEXT NOT NULL,
    provider     TEXT,
    reason       TEXT NOT NULL,
    message      TEXT NOT NULL,
    headers      TEXT NOT NULL,
    body         BLOB NOT NULL,
    received_at  INTEGER NOT NULL,
    node         TEXT NOT NULL
);
CREATE INDEX webhook_rejections_tenant_seq ON webhook_rejections (tenant_id, seq);
