-- Countersign schema, version 2: witnesses' cosignatures (c2sp.org/tlog-cosignature) of the
-- signed checkpoints, each a note signature line, kept beside the checkpoint it cosigns.
-- Append-only like the checkpoints: a cosignature once stored is evidence.
CREATE TABLE cosignatures (
    -- The checkpoint's seq (no foreign key: it would let TRUNCATE fail for another reason
    -- than the trigger's; verification checks that the checkpoint exists).
    seq bigint NOT NULL CHECK (seq >= 0),
    line text NOT NULL,
    term bigint NOT NULL,
    stored bigserial,
    PRIMARY KEY (seq, line)
);
CREATE TRIGGER cosignatures_append_only BEFORE UPDATE OR DELETE ON cosignatures
    FOR EACH ROW EXECUTE FUNCTION countersign_append_only();
CREATE TRIGGER cosignatures_no_truncate BEFORE TRUNCATE ON cosignatures
    FOR EACH STATEMENT EXECUTE FUNCTION countersign_append_only();
