"""The voter roll: streamed import (:mod:`.import_`) and the commitment with voters' inclusion
proofs (:mod:`.commitment`)."""

from server.roll.commitment import (
    CHUNK_LEAVES,
    ChunkTreeCache,
    InclusionProof,
    commit_roll,
    roll_digest,
    roll_inclusion_proof,
    voter_lookup,
)
from server.roll.import_ import MAX_REPORTED_ERRORS, RollFormat, RollParser, import_roll

__all__ = [
    "CHUNK_LEAVES",
    "MAX_REPORTED_ERRORS",
    "ChunkTreeCache",
    "InclusionProof",
    "RollFormat",
    "RollParser",
    "commit_roll",
    "import_roll",
    "roll_digest",
    "roll_inclusion_proof",
    "voter_lookup",
]
