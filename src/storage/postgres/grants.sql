-- What the role nodes run as needs, once the schema exists (docs/operations.md). Replace
-- countersign with the role's name. The ledger and checkpoints get no UPDATE or DELETE.
GRANT SELECT, INSERT ON ledger, checkpoints, cosignatures, images TO countersign;
GRANT USAGE ON SEQUENCE cosignatures_stored_seq TO countersign;
GRANT SELECT, INSERT, UPDATE ON requests, idempotency TO countersign;
GRANT SELECT, UPDATE ON projection_state, countersign_lease TO countersign;
GRANT SELECT ON countersign_schema TO countersign;
