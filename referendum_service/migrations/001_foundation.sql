-- Foundation: referendums, the voter roll and its commitment, operator keys, the audit log.

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
