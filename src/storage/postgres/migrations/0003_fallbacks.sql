-- Countersign schema, version 3: a registered fallback (an authorization given on site while
-- the centre could not be used) keeps its on-site supervisor and decision time in the
-- projection, for the auditors' statistics. Both are null for every other request.
ALTER TABLE requests ADD COLUMN on_site_supervisor text, ADD COLUMN on_site_at_ms bigint;
