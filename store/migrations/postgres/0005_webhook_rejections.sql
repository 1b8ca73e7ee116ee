-- Webhook deliveries that did not become events: bad or missing signature,
-- stale timestamp, unknown source, no mapping matched, unmappable. Kept with
-- the headers and the raw body bytes as they arrived, for review and replay.
-- tenant_id is NULL when the URL named no known tenant.
CREATE TABLE webhook_rejections (
    id           UUID PRIMARY KEY,
    seq          BIGINT GENERATED ALWAYS AS IDENTITY,
    tenant_id    UUID,
    namespace    TEXT NOT NULL,
    source       TEXT NOT NULL,
    provider     TEXT,
    reason       TEXT NOT NULL,
    message      TEXT NOT NULL,
    -- JSON array of [name, value] pairs, in arrival order.
    headers      TEXT NOT NULL,
    body         BYTEA NOT NULL,
    received_at  TIMESTAMPTZ NOT NULL,
    node         TEXT NOT NULL
);
CREATE INDEX webhook_rejections_tenant_seq ON webhook_rejections (tenant_id, seq);
