-- Countersign schema, version 4: how many times each request was returned to its teller, for
-- the return rate by branch in the statistics. Rows written before this read 0 until the
-- projection is rebuilt from the ledger.
ALTER TABLE requests ADD COLUMN returns integer NOT NULL DEFAULT 0;
