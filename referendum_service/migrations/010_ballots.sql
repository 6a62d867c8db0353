-- Accepted ballots. Written by the ingestion servers (group commit), sequenced by the batcher.
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
    log_index     bigint,                          -- set once by the batcher
    block_height  bigint,
    UNIQUE (referendum_id, ballot_hash),
    UNIQUE (referendum_id, revote_key)
);

-- The batcher picks unsequenced rows through this index, never "id > last done": a ballot
-- committed late with a lower id must still be sequenced.
CREATE INDEX ballots_unsequenced ON ballots (referendum_id, id) WHERE log_index IS NULL;
CREATE UNIQUE INDEX ballots_log_index ON ballots (referendum_id, log_index)
    WHERE log_index IS NOT NULL;
CREATE INDEX ballots_voter ON ballots (referendum_id, voter_id);
