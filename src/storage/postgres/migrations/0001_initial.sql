-- Countersign schema, version 1: the leader's lease, the append-only ledger and checkpoints,
-- content-addressed images, and the audit projection rebuilt from the ledger.

-- The one leader's lease. `term` only grows: every ledger, checkpoint and projection write
-- checks it in its own transaction, so a node whose lease was taken over can never write.
CREATE TABLE countersign_lease (
    id smallint PRIMARY KEY CHECK (id = 1),
    term bigint NOT NULL CHECK (term >= 0),
    holder text NOT NULL,
    advertise text NOT NULL,
    expires_at timestamptz NOT NULL
);
INSERT INTO countersign_lease VALUES (1, 0, '', '', '-infinity');

-- Every record, by index: the exact bytes that are hashed, their RFC 6962 leaf hash, and the
-- term of the leader that wrote it.
CREATE TABLE ledger (
    idx bigint PRIMARY KEY CHECK (idx >= 0),
    term bigint NOT NULL,
    leaf_hash bytea NOT NULL CHECK (length(leaf_hash) = 32),
    record bytea NOT NULL
);

-- Signed checkpoints (C2SP signed notes), in the order they were signed.
CREATE TABLE checkpoints (
    seq bigint PRIMARY KEY CHECK (seq >= 0),
    term bigint NOT NULL,
    note text NOT NULL
);

-- Append-only inside the database too, whoever connects: the runtime role is granted only
-- INSERT and SELECT on these tables (docs/operations.md), and this refuses the rest.
CREATE FUNCTION countersign_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'countersign: % on % refused: the table is append-only', TG_OP, TG_TABLE_NAME
        USING ERRCODE = 'insufficient_privilege';
END
$$;
CREATE TRIGGER ledger_append_only BEFORE UPDATE OR DELETE ON ledger
    FOR EACH ROW EXECUTE FUNCTION countersign_append_only();
CREATE TRIGGER ledger_no_truncate BEFORE TRUNCATE ON ledger
    FOR EACH STATEMENT EXECUTE FUNCTION countersign_append_only();
CREATE TRIGGER checkpoints_append_only BEFORE UPDATE OR DELETE ON checkpoints
    FOR EACH ROW EXECUTE FUNCTION countersign_append_only();
CREATE TRIGGER checkpoints_no_truncate BEFORE TRUNCATE ON checkpoints
    FOR EACH STATEMENT EXECUTE FUNCTION countersign_append_only();

-- Scanned vouchers and ID images, by SHA-256. EXTERNAL: kept out of line and uncompressed
-- (they are JPEG and PDF already), and checked against the hash on every read.
CREATE TABLE images (
    hash bytea PRIMARY KEY CHECK (length(hash) = 32),
    bytes bytea NOT NULL
);
ALTER TABLE images ALTER COLUMN bytes SET STORAGE EXTERNAL;

-- The audit projection: derived from the ledger, never the sole copy of a fact. `applied`
-- is how many ledger records it reflects, written in the same transaction as the rows.
CREATE TABLE projection_state (
    id smallint PRIMARY KEY CHECK (id = 1),
    applied bigint NOT NULL CHECK (applied >= 0)
);
INSERT INTO projection_state VALUES (1, 0);

-- One row per request: its state, the ledger indexes of its records, and what audit search
-- shows and filters on.
CREATE TABLE requests (
    id text PRIMARY KEY,
    state text NOT NULL,
    -- Not yet in a final state (approved, rejected, cancelled, expired).
    open boolean NOT NULL,
    records bigint[] NOT NULL,
    teller text NOT NULL,
    branch text NOT NULL,
    code text NOT NULL,
    minor_units bigint NOT NULL,
    currency text NOT NULL,
    submitted_at_ms bigint NOT NULL,
    updated_at_ms bigint NOT NULL,
    deciders text[] NOT NULL,
    final_decider text,
    first_accepted_at_ms bigint,
    finished_at_ms bigint
);
-- Audit search walks these newest submission first.
CREATE INDEX requests_by_submitted ON requests (submitted_at_ms DESC, id);
CREATE INDEX requests_by_teller ON requests (teller, submitted_at_ms DESC, id);
CREATE INDEX requests_by_branch ON requests (branch, submitted_at_ms DESC, id);
CREATE INDEX requests_by_code ON requests (code, submitted_at_ms DESC, id);
CREATE INDEX requests_by_state ON requests (state, submitted_at_ms DESC, id);
CREATE INDEX requests_by_decider ON requests USING gin (deciders);
-- Recovery reads every request not yet final.
CREATE INDEX requests_open ON requests (id) WHERE open;

-- (teller, serial) -> the request it submitted and the submission's fingerprint: a retried
-- Submit finds its first answer.
CREATE TABLE idempotency (
    teller text NOT NULL,
    serial text NOT NULL,
    request text NOT NULL,
    fingerprint bytea NOT NULL CHECK (length(fingerprint) = 32),
    PRIMARY KEY (teller, serial)
);
