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
INSERT INTO log_entries (referendum_id, log_index, ballot_id, block_height)
    SELECT referendum_id, log_index, id, block_height FROM ballots WHERE log_index IS NOT NULL;
INSERT INTO log_pending (referendum_id, ballot_id, leaf_hash)
    SELECT referendum_id, id, sha256('\x00'::bytea || body) FROM ballots WHERE log_index IS NULL;

DROP INDEX ballots_unsequenced;
DROP INDEX ballots_log_index;
ALTER TABLE ballots DROP COLUMN log_index, DROP COLUMN block_height;

-- 021's function, reading the ballot's index and the chunks through log_entries. Each chunk
-- is still one range scan whose bounds are plpgsql values (see 021), on log_entries' primary
-- key, joined to ballots by id for the bodies.
CREATE OR REPLACE FUNCTION log_inclusion_rows(p_rid text, p_hash bytea, p_size bigint)
RETURNS TABLE (kind integer, a bigint, b bigint, data bytea, note text)
LANGUAGE plpgsql STABLE AS $$
DECLARE
    v_index  bigint;
    v_body   bytea;
    v_size   bigint;
    v_note   text;
    lo       bigint;
    hi       bigint;
    k        bigint;
    rb       bigint;
    re       bigint;
    s        bigint;
    lvl      integer;
    levels   smallint[] := '{}';
    posns    bigint[] := '{}';
    chunks   bigint[] := '{}';
    c        bigint;
BEGIN
    PERFORM 1 FROM referendums WHERE id = p_rid;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    SELECT e.log_index, bl.body INTO v_index, v_body
      FROM ballots AS bl LEFT JOIN log_entries AS e ON e.ballot_id = bl.id
     WHERE bl.referendum_id = p_rid AND bl.ballot_hash = p_hash;
    IF p_size IS NULL THEN
        SELECT blk.tree_size, blk.checkpoint INTO v_size, v_note
          FROM blocks AS blk WHERE blk.referendum_id = p_rid ORDER BY blk.height DESC LIMIT 1;
    ELSE
        SELECT blk.tree_size, blk.checkpoint INTO v_size, v_note
          FROM blocks AS blk WHERE blk.referendum_id = p_rid AND blk.tree_size = p_size
          ORDER BY blk.height LIMIT 1;
    END IF;
    kind := 0; a := v_index; b := v_size; data := v_body; note := v_note;
    RETURN NEXT;
    IF v_index IS NULL OR v_size IS NULL OR v_index >= v_size THEN
        RETURN;
    END IF;
    lo := 0;
    hi := v_size;
    WHILE hi - lo > 1 LOOP
        k := 1;                                   -- largest power of two below hi - lo
        WHILE k * 2 < hi - lo LOOP
            k := k * 2;
        END LOOP;
        IF v_index < lo + k THEN
            rb := lo + k; re := hi; hi := lo + k;
        ELSE
            rb := lo; re := lo + k; lo := lo + k;
        END IF;
        WHILE rb < re LOOP                        -- the perfect subtrees covering [rb, re)
            s := 1; lvl := 0;
            WHILE s * 2 <= re - rb AND rb % (s * 2) = 0 LOOP
                s := s * 2; lvl := lvl + 1;
            END LOOP;
            IF lvl >= 4 THEN
                levels := levels || lvl::smallint;
                posns := posns || (rb >> lvl);
            ELSE
                c := rb >> 4;
                IF NOT c = ANY(chunks) THEN
                    chunks := chunks || c;
                END IF;
            END IF;
            rb := rb + s;
        END LOOP;
    END LOOP;
    RETURN QUERY
        SELECT 1, n.level::bigint, n.position, n.hash, NULL::text
          FROM unnest(levels, posns) AS u(l, p)
          JOIN log_nodes AS n ON n.referendum_id = p_rid AND n.level = u.l AND n.position = u.p;
    FOREACH c IN ARRAY chunks LOOP
        RETURN QUERY
            SELECT 2, e.log_index, NULL::bigint, bl.body, NULL::text
              FROM log_entries AS e JOIN ballots AS bl ON bl.id = e.ballot_id
             WHERE e.referendum_id = p_rid
               AND e.log_index >= c * 16 AND e.log_index < least(c * 16 + 16, v_size);
    END LOOP;
END;
$$;
