-- Sealing without updating ballots (issue #5). Until 021 a sealing round set
-- ballots.log_index/block_height: never a HOT update (log_index is in two indexes), so every
-- sealed ballot wrote a new copy of its wide row (body + receipt) and new entries in every
-- index of ballots, and left a dead row behind. Now:
--   * log_pending: the ballots waiting to be sequenced, one narrow row each (ballot id and
--     leaf hash), queued by a trigger in the statement (and so the transaction) that inserts
--     the ballot, whatever inserts it; a sealing round deletes the rows it takes, in its own
--     transaction, and never reads ballots;
--   * log_entries: one append-only row per sequenced ballot (its log index and block),
--     written by the round that sequences it. ballots is insert-only.
-- See docs/log.md, "Server storage".

CREATE TABLE log_pending (
    referendum_id text   NOT NULL,
    ballot_id     bigint NOT NULL,
    leaf_hash     bytea  NOT NULL CHECK (octet_length(leaf_hash) = 32),  -- SHA-256(0x00 ‖ body)
    PRIMARY KEY (referendum_id, ballot_id)
);
-- A queue: every row is deleted soon after it is inserted. The leader VACUUMs it every
-- batcher.service.PENDING_VACUUM_EVERY sealed ballots; autovacuum, where it runs, should too
-- (the defaults wait for 20% of the table to be dead, and until then each round's index scan
-- steps over every dead entry before the first waiting ballot).
ALTER TABLE log_pending SET (autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 100000);

-- No foreign keys on these two tables: a key check would lock (and so write) the ballot row
-- it references, the very write this migration removes. Ballot ids are global (bigserial),
-- so ballot_id alone is unique: a ballot is sequenced at most once, in one referendum.
CREATE TABLE log_entries (
    referendum_id text   NOT NULL,
    log_index     bigint NOT NULL CHECK (log_index >= 0),
    ballot_id     bigint NOT NULL,
    block_height  bigint NOT NULL CHECK (block_height >= 1),
    leaf_hash     bytea  NOT NULL CHECK (octet_length(leaf_hash) = 32),  -- SHA-256(0x00 ‖ body)
    PRIMARY KEY (referendum_id, log_index)
);
CREATE UNIQUE INDEX log_entries_ballot ON log_entries (ballot_id);

CREATE TRIGGER log_entries_append_only BEFORE UPDATE OR DELETE ON log_entries
    FOR EACH ROW EXECUTE FUNCTION log_append_only();
CREATE TRIGGER log_entries_no_truncate BEFORE TRUNCATE ON log_entries
    FOR EACH STATEMENT EXECUTE FUNCTION log_append_only();

-- Every inserted ballot is queued by the inserting statement itself (INSERT, INSERT … ON
-- CONFLICT: only the rows actually inserted; COPY), so no write path can store a ballot the
-- batcher never sees. One statement-level insert per statement, not one per row. The leaf
-- hash is taken here, from the row just written, so sealing reads no ballot body.
CREATE FUNCTION ballots_enqueue() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO log_pending (referendum_id, ballot_id, leaf_hash)
        SELECT n.referendum_id, n.id, sha256('\x00'::bytea || n.body) FROM new_ballots AS n;
    RETURN NULL;
END;
$$;
CREATE TRIGGER ballots_enqueue AFTER INSERT ON ballots
    REFERENCING NEW TABLE AS new_ballots
    FOR EACH STATEMENT EXECUTE FUNCTION ballots_enqueue();

-- ballots is insert-only from now on, and the database says so: the queued leaf hash is the
-- hash of a body that can no longer change, and a sealed ballot can no longer disappear from
-- under its log entry.
CREATE TRIGGER ballots_append_only BEFORE UPDATE OR DELETE ON ballots
    FOR EACH ROW EXECUTE FUNCTION log_append_only();
CREATE TRIGGER ballots_no_truncate BEFORE TRUNCATE ON ballots
    FOR EACH STATEMENT EXECUTE FUNCTION log_append_only();

-- Existing logs move over as they are.
INSERT INTO log_entries (referendum_id, log_index, ballot_id, block_height, leaf_hash)
    SELECT referendum_id, log_index, id, block_height, sha256('\x00'::bytea || body)
    FROM ballots WHERE log_index IS NOT NULL;
INSERT INTO log_pending (referendum_id, ballot_id, leaf_hash)
    SELECT referendum_id, id, sha256('\x00'::bytea || body) FROM ballots WHERE log_index IS NULL;

DROP INDEX ballots_unsequenced;
DROP INDEX ballots_log_index;
ALTER TABLE ballots DROP COLUMN log_index, DROP COLUMN block_height;

-- Proofs are served from server.log_proofs (a per-process node cache and one shared query
-- reading the leaf hashes above), no longer by 021's plpgsql function.
DROP FUNCTION log_inclusion_rows(text, bytea, bigint);
