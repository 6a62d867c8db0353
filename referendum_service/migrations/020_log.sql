-- The public log: blocks, the stored Merkle nodes that serve proofs, and each log's head.
-- Written by the batcher only, in one transaction per block (see docs/log.md, "Server storage").

-- The head of each referendum's log: the last block and the compact range (right edge of the
-- Merkle tree) the next block extends. A sealing round locks this row FOR UPDATE first, so two
-- batchers that both believe they lead take turns instead of forking the log.
CREATE TABLE log_heads (
    referendum_id text    PRIMARY KEY REFERENCES referendums (id),
    height        bigint  NOT NULL DEFAULT 0 CHECK (height >= 0),      -- 0: no block yet
    tree_size     bigint  NOT NULL DEFAULT 0 CHECK (tree_size >= 0),
    block_hash    bytea   NOT NULL DEFAULT '\x0000000000000000000000000000000000000000000000000000000000000000'
                          CHECK (octet_length(block_hash) = 32),       -- zeros before block 1
    compact_range bytea   NOT NULL,                                      -- CompactRange.to_bytes()
    final         boolean NOT NULL DEFAULT false
);

-- Sealed blocks, append-only. Heights start at 1; block 1's prev_hash is 32 zero bytes.
CREATE TABLE blocks (
    referendum_id text        NOT NULL REFERENCES referendums (id),
    height        bigint      NOT NULL CHECK (height >= 1),
    first_index   bigint      NOT NULL CHECK (first_index >= 0),
    end_index     bigint      NOT NULL CHECK (end_index >= first_index),
    tree_size     bigint      NOT NULL CHECK (tree_size = end_index),
    root          bytea       NOT NULL CHECK (octet_length(root) = 32),
    prev_hash     bytea       NOT NULL CHECK (octet_length(prev_hash) = 32),
    block_hash    bytea       NOT NULL CHECK (octet_length(block_hash) = 32),
    sealed_at     bigint      NOT NULL,                      -- Unix time in milliseconds
    checkpoint    text        NOT NULL,                      -- the signed C2SP note
    final         boolean     NOT NULL DEFAULT false,        -- the log's last block
    PRIMARY KEY (referendum_id, height)
);
-- Proofs "against tree size N" find the block of that size (an empty final block may repeat
-- its predecessor's size, hence not unique).
CREATE INDEX blocks_tree_size ON blocks (referendum_id, tree_size);

-- Fencing at the database level: a block must extend the chain exactly (next height, next index
-- range, prev_hash = the previous block's hash) and nothing may follow a final block. Two
-- writers racing for one height: the primary key refuses the second; a writer working from a
-- stale head: this trigger refuses it.
CREATE FUNCTION blocks_extend_chain() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    prev blocks%ROWTYPE;
BEGIN
    IF NEW.height = 1 THEN
        IF NEW.first_index <> 0 OR NEW.prev_hash <> '\x0000000000000000000000000000000000000000000000000000000000000000'::bytea THEN
            RAISE EXCEPTION 'block 1 must start the log' USING ERRCODE = 'integrity_constraint_violation';
        END IF;
        RETURN NEW;
    END IF;
    SELECT * INTO prev FROM blocks WHERE referendum_id = NEW.referendum_id AND height = NEW.height - 1;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'block % has no predecessor', NEW.height USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    IF prev.final THEN
        RAISE EXCEPTION 'the log is final at block %', prev.height USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    IF prev.block_hash <> NEW.prev_hash OR prev.end_index <> NEW.first_index THEN
        RAISE EXCEPTION 'block % does not extend block %', NEW.height, prev.height
            USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    RETURN NEW;
END;
$$;
CREATE TRIGGER blocks_extend_chain BEFORE INSERT ON blocks
    FOR EACH ROW EXECUTE FUNCTION blocks_extend_chain();

-- Completed perfect subtrees of the Merkle tree at levels >= 4 (node (level, position) covers
-- leaves [position·2^level, (position+1)·2^level)). Levels 0..3 are recomputed from at most 16
-- ballot bodies per chunk, so a proof costs O(log n) row reads and sealing stores n/8 rows.
CREATE TABLE log_nodes (
    referendum_id text     NOT NULL REFERENCES referendums (id),
    level         smallint NOT NULL CHECK (level BETWEEN 4 AND 63),
    position      bigint   NOT NULL CHECK (position >= 0),
    hash          bytea    NOT NULL CHECK (octet_length(hash) = 32),
    PRIMARY KEY (referendum_id, level, position)
);

-- Blocks and nodes are append-only: sealed data never changes.
CREATE FUNCTION log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% is append-only', TG_TABLE_NAME USING ERRCODE = 'insufficient_privilege';
END;
$$;
CREATE TRIGGER blocks_append_only BEFORE UPDATE OR DELETE ON blocks
    FOR EACH ROW EXECUTE FUNCTION log_append_only();
CREATE TRIGGER blocks_no_truncate BEFORE TRUNCATE ON blocks
    FOR EACH STATEMENT EXECUTE FUNCTION log_append_only();
CREATE TRIGGER log_nodes_append_only BEFORE UPDATE OR DELETE ON log_nodes
    FOR EACH ROW EXECUTE FUNCTION log_append_only();
CREATE TRIGGER log_nodes_no_truncate BEFORE TRUNCATE ON log_nodes
    FOR EACH STATEMENT EXECUTE FUNCTION log_append_only();
