-- The schema, as one baseline (the history before 0.1.0 squashed: nothing was deployed).
-- A migration once committed is never edited: change the schema in a new file numbered after
-- the last one (see README.md here).
--
-- In order: referendums and the voter roll with its commitment, operator keys and the audit
-- log; ballots; the public log (heads, blocks, stored Merkle nodes, the sealing queue and the
-- log entries); the tally (running sum, supersessions, decryption shares, result).

-- ==============================================================================================
-- Foundation: referendums, the voter roll and its commitment, operator keys, the audit log.
-- ==============================================================================================

CREATE TABLE referendums (
    id                  text        PRIMARY KEY CHECK (id ~ '^[a-z0-9-]{1,64}$'),
    question            text        NOT NULL,
    options             jsonb       NOT NULL,          -- JSON array of distinct strings
    min_selections      integer     NOT NULL CHECK (min_selections >= 0),
    max_selections      integer     NOT NULL CHECK (max_selections >= min_selections),
    opens_at            timestamptz NOT NULL,
    closes_at           timestamptz NOT NULL CHECK (closes_at > opens_at),
    revote_policy       text        NOT NULL CHECK (revote_policy IN ('forbid', 'last_counts')),
    threshold_k         integer     NOT NULL CHECK (threshold_k >= 1),
    trustees_n          integer     NOT NULL CHECK (trustees_n >= threshold_k),
    state               text        NOT NULL DEFAULT 'draft'
                        CHECK (state IN ('draft', 'open', 'closed', 'tallied', 'published')),
    -- 33-byte compressed secp256k1 point; required before the referendum can open
    election_public_key bytea       CHECK (octet_length(election_public_key) = 33),
    roll_root           bytea       CHECK (octet_length(roll_root) = 32),   -- set at open
    roll_size           bigint      NOT NULL DEFAULT 0,                      -- voters imported
    created_at          timestamptz NOT NULL DEFAULT now(),
    opened_at           timestamptz,
    closed_at           timestamptz,
    tallied_at          timestamptz,
    published_at        timestamptz
);

-- The roll. voter_id uses the "C" collation so the primary-key index orders voters by their
-- bytes: the order of the roll commitment, walked without a sort.
-- Costs measured for 10-million-row imports decide two details: no foreign key to referendums
-- (its per-row check doubles the insert time; imports lock the referendum row and referendums
-- are never deleted), and the character check is a negated class (an anchored, counted regex
-- costs ~17 µs a row).
CREATE TABLE voters (
    referendum_id text  NOT NULL,
    voter_id      text  COLLATE "C" NOT NULL
                  CHECK (octet_length(voter_id) BETWEEN 1 AND 128
                         AND voter_id !~ '[^A-Za-z0-9._:@-]'),
    public_key    bytea NOT NULL CHECK (octet_length(public_key) = 32),   -- Ed25519
    PRIMARY KEY (referendum_id, voter_id)
);

-- The roll commitment, stored so a voter's inclusion proof needs one chunk, not the roll:
-- the sorted roll cut into aligned chunks of 1024 leaves; ``root`` is the RFC 9162 subtree
-- hash over the chunk's leaves, ``first_voter_id`` its first voter.
CREATE TABLE roll_chunks (
    referendum_id  text    NOT NULL REFERENCES referendums (id),
    chunk_index    integer NOT NULL CHECK (chunk_index >= 0),
    first_voter_id text    COLLATE "C" NOT NULL,
    leaf_count     integer NOT NULL CHECK (leaf_count BETWEEN 1 AND 1024),
    root           bytea   NOT NULL CHECK (octet_length(root) = 32),
    PRIMARY KEY (referendum_id, chunk_index)
);
CREATE UNIQUE INDEX roll_chunks_first_voter ON roll_chunks (referendum_id, first_voter_id);

-- Operator API keys: only the SHA-256 of the bearer token is stored.
CREATE TABLE api_keys (
    id         bigserial   PRIMARY KEY,
    name       text        NOT NULL UNIQUE CHECK (length(name) BETWEEN 1 AND 128),
    key_hash   bytea       NOT NULL UNIQUE CHECK (octet_length(key_hash) = 32),
    created_at timestamptz NOT NULL DEFAULT now(),
    revoked_at timestamptz
);

-- Every state-changing operator action (who, when, what). Append-only: a trigger refuses
-- UPDATE and DELETE, and TRUNCATE is refused too.
CREATE TABLE audit_log (
    id            bigserial   PRIMARY KEY,
    at            timestamptz NOT NULL DEFAULT now(),
    actor         text        NOT NULL,
    action        text        NOT NULL,
    referendum_id text,
    details       jsonb       NOT NULL DEFAULT '{}'::jsonb
);
CREATE INDEX audit_log_referendum ON audit_log (referendum_id, id);

CREATE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_log is append-only' USING ERRCODE = 'insufficient_privilege';
END;
$$;

CREATE TRIGGER audit_log_no_update_delete
    BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_append_only();
CREATE TRIGGER audit_log_no_truncate
    BEFORE TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION audit_log_append_only();

-- ==============================================================================================
-- Ballots.
-- ==============================================================================================

-- Accepted ballots. Written by the ingestion servers (group commit), never updated: sealing
-- queues and sequences them in log_pending and log_entries (below), so ballots is insert-only.
CREATE TABLE ballots (
    id            bigserial PRIMARY KEY,
    referendum_id text        NOT NULL REFERENCES referendums (id),
    voter_id      text        NOT NULL,
    ballot_hash   bytea       NOT NULL CHECK (octet_length(ballot_hash) = 32),
    body          bytea       NOT NULL,            -- canonical ballot bytes: the log leaf input
    receipt       bytea       NOT NULL,            -- the signed receipt as served (JSON bytes)
    accepted_at   timestamptz NOT NULL DEFAULT now(),
    -- voter_id under the 'forbid' policy, NULL under 'last_counts' (NULLs never collide),
    -- so PostgreSQL itself keeps one ballot per voter where re-voting is forbidden.
    revote_key    text,
    UNIQUE (referendum_id, ballot_hash),
    UNIQUE (referendum_id, revote_key)
);
CREATE INDEX ballots_voter ON ballots (referendum_id, voter_id);

-- ==============================================================================================
-- The public log: blocks, the stored Merkle nodes that serve proofs, and each log's head.
-- Written by the batcher only, in one transaction per block (see docs/log.md, "Server storage").
-- ==============================================================================================

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

-- Sealing never updates ballots (issue #5). A round that set a log index on the ballot row
-- was never a HOT update (the index column is in two indexes), so every sealed ballot wrote a
-- new copy of its wide row (body + receipt) and new entries in every index of ballots, and
-- left a dead row behind. Instead:
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
-- Settings.pending_vacuum_every sealed ballots; autovacuum, where it runs, should too
-- (the defaults wait for 20% of the table to be dead, and until then each round's index scan
-- steps over every dead entry before the first waiting ballot).
ALTER TABLE log_pending SET (autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 100000);

-- No foreign keys on these two tables: a key check would lock (and so write) the ballot row
-- it references, the very write this design avoids. Ballot ids are global (bigserial), so
-- ballot_id alone is unique: a ballot is sequenced at most once, in one referendum.
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

-- ballots is insert-only, and the database says so: the queued leaf hash is the hash of a
-- body that can no longer change, and a sealed ballot can no longer disappear from under its
-- log entry.
CREATE TRIGGER ballots_append_only BEFORE UPDATE OR DELETE ON ballots
    FOR EACH ROW EXECUTE FUNCTION log_append_only();
CREATE TRIGGER ballots_no_truncate BEFORE TRUNCATE ON ballots
    FOR EACH STATEMENT EXECUTE FUNCTION log_append_only();

-- ==============================================================================================
-- Tally: the running encrypted tally, the public list of superseded ballots, trustees'
-- decryption shares and the published result. Written by batcher.tally (folding) and
-- server.tally_api (shares, result); see docs/record.md.
-- ==============================================================================================

-- One row per referendum, updated in the same transaction that folds a block, so a crash
-- resumes at the first block not yet folded and nothing is counted twice.
CREATE TABLE tallies (
    referendum_id   text        PRIMARY KEY REFERENCES referendums (id),
    folded_height   bigint      NOT NULL DEFAULT 0 CHECK (folded_height >= 0),  -- 0: none yet
    folded_size     bigint      NOT NULL DEFAULT 0 CHECK (folded_size >= 0),    -- tree size then
    ballots_counted bigint      NOT NULL DEFAULT 0 CHECK (ballots_counted >= 0), -- voters counted
    -- per option one exponential-ElGamal ciphertext, 130 bytes (a ‖ b uncompressed), concatenated
    ciphertexts     bytea       NOT NULL CHECK (octet_length(ciphertexts) % 130 = 0),
    updated_at      timestamptz NOT NULL DEFAULT now()
);

-- Under 'last_counts' a voter's later ballot (higher log index) supersedes the earlier one.
-- Public: the record lists every row, and the auditor recomputes them from the log.
CREATE TABLE supersessions (
    referendum_id     text   NOT NULL REFERENCES referendums (id),
    superseded_index  bigint NOT NULL,
    superseded_hash   bytea  NOT NULL CHECK (octet_length(superseded_hash) = 32),
    superseding_index bigint NOT NULL CHECK (superseding_index > superseded_index),
    superseding_hash  bytea  NOT NULL CHECK (octet_length(superseding_hash) = 32),
    block_height      bigint NOT NULL,          -- the block of the superseding ballot
    PRIMARY KEY (referendum_id, superseded_index)
);

-- Decryption shares as uploaded by trustees, stored only once their proofs verified against
-- the encrypted tally whose SHA-256 is tally_hash.
CREATE TABLE decryption_shares (
    referendum_id text        NOT NULL REFERENCES referendums (id),
    trustee_index integer     NOT NULL CHECK (trustee_index >= 1),
    tally_hash    bytea       NOT NULL CHECK (octet_length(tally_hash) = 32),
    share         jsonb       NOT NULL,
    received_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (referendum_id, trustee_index)
);

-- The combined, decoded result with everything needed to check it (the JSON served as is).
CREATE TABLE results (
    referendum_id text        PRIMARY KEY REFERENCES referendums (id),
    counts        jsonb       NOT NULL,
    document      bytea       NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now()
);

-- The trustees' public commitments (the document the trustee tools publish), stored by the
-- operator before the referendum opens; decryption shares are checked against it.
CREATE TABLE trustee_commitments (
    referendum_id text        PRIMARY KEY REFERENCES referendums (id),
    document      jsonb       NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now()
);
