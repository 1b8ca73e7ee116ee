-- Enrichment reads events as a log instead of through a queue row per event
-- (see the PostgreSQL migration of the same number). SQLite has one writer at
-- a time, so an event's seq (its rowid) is also the order in which events
-- became visible: one cursor, the last seq enriched, advanced in the same
-- transaction as the ledger rows, is all the enricher needs.
--
-- enrichment_queue keeps what does not fit a log: events parked as
-- UNATTRIBUTED or UNMETERED, ready again once requeued, and the events queued
-- before this migration (the cursor starts after them).
CREATE TABLE enrichment_cursor (
    id   INTEGER PRIMARY KEY CHECK (id = 1),
    seq  INTEGER NOT NULL
);
INSERT INTO enrichment_cursor (id, seq) SELECT 1, coalesce(max(seq), 0) FROM events;
