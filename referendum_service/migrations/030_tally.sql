-- Tally (030-039): the running encrypted tally, the public list of superseded ballots,
-- trustees' decryption shares and the published result. Written by batcher.tally (folding)
-- and server.tally_api (shares, result); see docs/record.md.

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
