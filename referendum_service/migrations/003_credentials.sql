-- Privacy by design (issue 13): the roll, the ballots and the rate limit name voters by their
-- credential (the 32-byte Ed25519 public key), never by their voter id; the voter id is kept
-- only as an HMAC under the operator's voter-id key (docs/ingest.md, "Privacy").
--
-- The ballots' canonical bytes (version 2) carry the credential where version 1 carried the
-- voter id, and the voter signed them, so a version-1 ballot cannot be rewritten: this
-- migration refuses a database that already holds voters or ballots. Nothing was deployed
-- under version 1; a test database is re-created.

DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM voters) OR EXISTS (SELECT 1 FROM ballots) THEN
        RAISE EXCEPTION 'migration 003 needs an empty roll and no ballots: version-1 ballots '
            'name voter ids and cannot be converted; create a fresh database'
            USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
END;
$$;

-- Which voter-id key the roll was imported under (its public key id, 16 hex digits), so a
-- lookup and a later roll part use the same key after the current one was rotated.
ALTER TABLE referendums ADD COLUMN voter_key_id text CHECK (voter_key_id ~ '^[0-9a-f]{16}$');

-- The roll: one row per credential, partitioned by referendum. In each partition two unique
-- indexes, on the credential (its order is the roll commitment's, walked without a sort) and
-- on the voter hash: a credential is on a roll once and a voter has one credential.
--
-- Both keys are random (a public key, an HMAC), so keeping the two indexes up to date row by
-- row costs a descent of each per row: measured, a quarter of the rate of loading the rows
-- and building the indexes after. So a roll's first part is loaded into a table of its own
-- with no index, whose indexes are then built in one pass and which is attached as the
-- referendum's partition, all in the import's transaction (server.roll.partition). The
-- indexes leave referendum_id out (constant in a partition; with it the builds take three
-- times as long), which is why the parent declares no key. Later parts go into the
-- partition, index by index. Rows of a referendum without a partition of its own (written
-- straight to the table, as tests do) land in the default partition, keyed by referendum.
DROP TABLE voters;
CREATE TABLE voters (
    referendum_id text  COLLATE "C" NOT NULL,
    credential    bytea NOT NULL CHECK (octet_length(credential) = 32),   -- Ed25519 public key
    voter_hash    bytea NOT NULL CHECK (octet_length(voter_hash) = 32)    -- HMAC of the voter id
) PARTITION BY LIST (referendum_id);
CREATE TABLE voters_default PARTITION OF voters (
    PRIMARY KEY (referendum_id, credential),
    UNIQUE (referendum_id, voter_hash)
) DEFAULT;

DROP INDEX roll_chunks_first_voter;
ALTER TABLE roll_chunks DROP COLUMN first_voter_id;
ALTER TABLE roll_chunks ADD COLUMN first_credential bytea NOT NULL
    CHECK (octet_length(first_credential) = 32);
CREATE UNIQUE INDEX roll_chunks_first_credential ON roll_chunks (referendum_id, first_credential);

-- A ballot's signer is its credential; under 'forbid' the revote key is the credential too.
DROP INDEX ballots_voter;
ALTER TABLE ballots DROP COLUMN voter_id;
ALTER TABLE ballots ADD COLUMN credential bytea NOT NULL CHECK (octet_length(credential) = 32);
ALTER TABLE ballots ALTER COLUMN revote_key TYPE bytea USING NULL;
ALTER TABLE ballots ADD CONSTRAINT ballots_revote_key_length
    CHECK (revote_key IS NULL OR octet_length(revote_key) = 32);
CREATE INDEX ballots_credential ON ballots (referendum_id, credential);

-- The rate limit's buckets, one per credential.
DROP TABLE voter_tokens;
CREATE UNLOGGED TABLE voter_tokens (
    referendum_id text             NOT NULL,
    credential    bytea            NOT NULL,
    tokens        double precision NOT NULL,
    updated_at    timestamptz      NOT NULL,
    granted       integer          NOT NULL CHECK (granted >= 0),
    PRIMARY KEY (referendum_id, credential)
);
