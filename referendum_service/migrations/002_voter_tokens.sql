-- The per-voter rate limit of ballot submissions, shared by every server process (on one
-- machine or many): one token bucket per (referendum, voter), read and updated by one batched
-- statement per group of submissions (referendum_service.store.ballots.admit_ballots).
--
-- ``tokens`` is the bucket's level at ``updated_at`` (the database's clock, so every process
-- refills it alike); it may go below zero when a ballot that failed its proofs is charged its
-- verification cost. ``granted`` is how many submissions the last statement admitted: the
-- statement computes it from the row as it was, and RETURNING can only read the row as it
-- becomes.
--
-- UNLOGGED: writing it costs no WAL on the honest path, and a crash empties it, which only
-- gives every voter a full bucket again. No foreign key: rows are written only for voters the
-- same statement found on the roll, and referendums are never deleted.
CREATE UNLOGGED TABLE voter_tokens (
    referendum_id text             NOT NULL,
    voter_id      text             COLLATE "C" NOT NULL,
    tokens        double precision NOT NULL,
    updated_at    timestamptz      NOT NULL,
    granted       integer          NOT NULL CHECK (granted >= 0),
    PRIMARY KEY (referendum_id, voter_id)
);
