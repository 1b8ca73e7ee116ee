-- The W3C traceparent of the request that stored an event, when traces were
-- exported: enrichment continues that trace. Not part of the event, its
-- validation hash or any export; NULL when the request was not traced.
ALTER TABLE events ADD COLUMN trace_parent TEXT;
