-- Countersign schema, version 3: rulebook controls. A registered fallback (an authorization
-- given on site while the centre could not be used) keeps its on-site supervisor and decision
-- time in the projection, for the auditors' statistics; a request drawn for after-the-fact
-- review keeps the review's status ("pending", "confirmed", "flagged"), which the reviewers'
-- queue is read by. All three are null for other requests.
ALTER TABLE requests ADD COLUMN on_site_supervisor text, ADD COLUMN on_site_at_ms bigint,
    ADD COLUMN review text;
CREATE INDEX requests_by_review ON requests (review, submitted_at_ms DESC, id)
    WHERE review IS NOT NULL;
