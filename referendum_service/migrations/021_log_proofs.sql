-- One round trip per inclusion proof: the read API calls this function, which finds the
-- ballot and the checkpoint, walks the RFC 9162 proof path (as referendum_core.merkle's
-- inclusion_proof_ranges and subtree_nodes do) and returns the stored nodes (level >= 4) and
-- the ballot bodies of the 16-leaf chunks below them. The caller rebuilds the same plan in
-- Python and assembles the proof; a node missing here makes that fail loudly, never silently.
--
-- Rows: kind 0 (always first, none at all for an unknown referendum): a = log_index or NULL,
-- b = tree size of the checkpoint or NULL, data = ballot body, note = checkpoint note;
-- kind 1: a stored node, a = level, b = position, data = hash;
-- kind 2: a ballot of a needed chunk, a = log_index, data = body.
--
-- Each 16-leaf chunk is read as one range whose bounds are plpgsql values, never as
-- `log_index = ANY(array)`: with statistics taken before the ballots were sequenced (the
-- normal state while voting runs: autoanalyze lags the batcher), PostgreSQL 15 planned the
-- array form as a filter over the referendum's whole ballots_log_index range (0.3 s a proof on
-- a 200,000-ballot log, over 1 s on 1,000,000).
CREATE FUNCTION log_inclusion_rows(p_rid text, p_hash bytea, p_size bigint)
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
    SELECT bl.log_index, bl.body INTO v_index, v_body
      FROM ballots AS bl WHERE bl.referendum_id = p_rid AND bl.ballot_hash = p_hash;
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
            SELECT 2, bl.log_index, NULL::bigint, bl.body, NULL::text
              FROM ballots AS bl
             WHERE bl.referendum_id = p_rid
               AND bl.log_index >= c * 16 AND bl.log_index < least(c * 16 + 16, v_size);
    END LOOP;
END;
$$;
