-- Witnesses (issue 14): the log side and the node side, in the one migration set.
--
-- Log side (the operator's database):
--   witness_policies        a referendum's witness policy (k of w cosigners), part of its public
--                           definition: set while draft, frozen from open on (trigger below);
--   checkpoint_cosignatures the cosignature lines the batcher's publisher collected, one per
--                           (referendum, tree size, witness), appended to the served checkpoint.
-- Node side (the database of a `referendum node`, a stakeholder's own PostgreSQL, migrated
-- with the same files; the log-side tables stay empty there):
--   witness_latest          the latest cosigned checkpoint per origin, moved only by a
--                           conditional UPDATE that names the row as it was read (C2SP
--                           tlog-witness: check and persist atomically, no rollback race);
--   witness_evidence        log-signed checkpoints refused as a fork (conclusive) or with a
--                           consistency proof that did not verify (suspect), with the latest
--                           cosigned checkpoint they contradict; append-only.

CREATE TABLE witness_policies (
    referendum_id text        PRIMARY KEY REFERENCES referendums (id),
    threshold     integer     NOT NULL CHECK (threshold >= 1),
    policy        jsonb       NOT NULL,          -- referendum_core.witness.WitnessPolicy.to_json()
    set_at        timestamptz NOT NULL DEFAULT now()
);

CREATE FUNCTION witness_policies_draft_only() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    rid   text := CASE WHEN TG_OP = 'DELETE' THEN OLD.referendum_id ELSE NEW.referendum_id END;
    state text;
BEGIN
    SELECT r.state INTO state FROM referendums AS r WHERE r.id = rid FOR SHARE;
    IF state IS DISTINCT FROM 'draft' THEN
        RAISE EXCEPTION 'the witness policy of % is fixed once it opened', rid
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF TG_OP = 'UPDATE' AND NEW.referendum_id <> OLD.referendum_id THEN
        RAISE EXCEPTION 'a witness policy stays with its referendum'
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN CASE WHEN TG_OP = 'DELETE' THEN OLD ELSE NEW END;
END $$;

CREATE TRIGGER witness_policies_draft_only
    BEFORE INSERT OR UPDATE OR DELETE ON witness_policies
    FOR EACH ROW EXECUTE FUNCTION witness_policies_draft_only();

CREATE TABLE checkpoint_cosignatures (
    referendum_id text        NOT NULL REFERENCES referendums (id),
    tree_size     bigint      NOT NULL CHECK (tree_size >= 0),
    witness       text        NOT NULL,       -- the cosigner's key name
    line          text        NOT NULL CHECK (line LIKE '— %'),
    cosigned_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (referendum_id, tree_size, witness)
);

CREATE TABLE witness_latest (
    origin     text        PRIMARY KEY,
    tree_size  bigint      NOT NULL CHECK (tree_size >= 0),
    root       bytea       NOT NULL CHECK (length(root) = 32),
    note       text        NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE witness_evidence (
    id          bigserial   PRIMARY KEY,
    origin      text        NOT NULL,
    kind        text        NOT NULL CHECK (kind IN ('fork', 'bad_proof')),
    digest      bytea       NOT NULL CHECK (length(digest) = 32),  -- of kind, both notes
    tree_size   bigint      NOT NULL,
    note        text        NOT NULL,                              -- the refused checkpoint
    latest_note text        NOT NULL,                              -- what it contradicts
    old_size    bigint      NOT NULL,
    proof       bytea[]     NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (origin, digest)
);

CREATE TRIGGER witness_evidence_append_only
    BEFORE UPDATE OR DELETE ON witness_evidence
    FOR EACH ROW EXECUTE FUNCTION log_append_only();
