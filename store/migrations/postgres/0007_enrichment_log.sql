-- Enrichment reads events as a log instead of through a queue row per event.
--
-- A queue row per event cost every event three more writes (the row and two
-- index entries at ingest, a delete when enriched) and the vacuuming of all
-- of them. Now each event records the shard it belongs to (a hash of tenant
-- and customer, so enrichers do not contend for one customer's running
-- totals) and the id of the transaction that stored
-- it; each shard has a cursor, the last (transaction, event) enriched,
-- advanced in the same transaction as the ledger rows.
--
-- An enricher reads a shard's events past its cursor whose transaction ids
-- are below the xmin of its snapshot: every transaction that old has ended,
-- so no event can still appear behind the cursor. A long-running writing
-- transaction anywhere in the database therefore delays enrichment (it
-- never loses events).
--
-- enrichment_queue keeps what does not fit a log: events parked as
-- UNATTRIBUTED or UNMETERED, ready again once requeued, and the events
-- queued before this migration (their enrich_xid is NULL).
ALTER TABLE events ADD COLUMN enrich_shard SMALLINT, ADD COLUMN enrich_xid XID8;
CREATE INDEX events_enrich_log ON events (enrich_shard, enrich_xid, id)
    WHERE enrich_xid IS NOT NULL;

CREATE TABLE enrichment_cursors (
    shard     SMALLINT PRIMARY KEY,
    xid       XID8 NOT NULL,
    event_id  UUID NOT NULL
);
