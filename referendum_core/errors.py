"""Typed errors of the pure core.

Every check in the core fails by raising one of these, never by returning ``None`` or
``False`` and never by letting another exception escape. The tree::

    CoreError
    ├── EncodingError              bytes or JSON that are not the one canonical form
    ├── GroupError                 a group element or scalar that is not acceptable
    │   ├── InvalidPoint           not on the curve, not canonical, or the identity where forbidden
    │   └── InvalidScalar          not below the group order
    ├── SignatureError             a voter, server or log signature that does not verify
    ├── ProofError                 a zero-knowledge proof that does not verify
    ├── BallotError                a ballot whose structure does not fit its referendum
    ├── TrusteeError               a key share, commitment or decryption share that fails its check
    ├── DecodingError              a plaintext outside the search bound
    ├── MerkleError                an inclusion or consistency proof that does not verify
    │   ├── merkle.MalformedProof  a proof, hash, index or size no valid proof can have
    │   ├── merkle.RootMismatch    a well-formed proof that leads to another root
    │   └── merkle.InvalidTreeSize a proof asked for outside the tree
    ├── CheckpointError            a signed note that does not parse or verify
    │   ├── checkpoint.NoteFormatError    the note or its checkpoint does not parse
    │   ├── checkpoint.UnknownKeyError    no signature line is by the expected key
    │   ├── checkpoint.SignatureMismatch  the expected key's signature does not verify
    │   ├── witness.CosignatureError      a cosignature line or cosigner key that fails
    │   ├── witness.RequestFormatError    an add-checkpoint body that does not parse
    │   └── witness.PolicyError           a malformed witness policy, or one not met
    └── block.BlockError           a block that is malformed, unlike its checkpoint, or unlinked

The subclasses named with a module live in that module (:mod:`referendum_core.merkle`,
:mod:`referendum_core.checkpoint`, :mod:`referendum_core.witness`,
:mod:`referendum_core.block`), next to the checks that raise them.

Each error carries ``check``: a short, stable name of the check that failed, so a report
can name it (for example ``"option[2].proof"``).
"""

from __future__ import annotations

__all__ = [
    "BallotError",
    "CheckpointError",
    "CoreError",
    "DecodingError",
    "EncodingError",
    "GroupError",
    "InvalidPoint",
    "InvalidScalar",
    "MerkleError",
    "ProofError",
    "SignatureError",
    "TrusteeError",
]


class CoreError(Exception):
    """Base of every error the pure core raises."""

    def __init__(self, message: str, *, check: str = "") -> None:
        super().__init__(message)
        self.check = check or type(self).__name__


class EncodingError(CoreError):
    """Input is not in the one canonical encoding."""


class GroupError(CoreError):
    """A group element or scalar is not acceptable."""


class InvalidPoint(GroupError):
    """A point is off the curve, not canonical, or the identity where it is forbidden."""


class InvalidScalar(GroupError):
    """A scalar is not below the group order (or is zero where zero is forbidden)."""


class SignatureError(CoreError):
    """A signature does not verify."""


class ProofError(CoreError):
    """A zero-knowledge proof does not verify."""


class BallotError(CoreError):
    """A ballot does not fit the structure of its referendum."""


class TrusteeError(CoreError):
    """A trustee's key share, commitment or decryption share fails its check."""


class DecodingError(CoreError):
    """A discrete logarithm lies outside the search bound."""


class MerkleError(CoreError):
    """An inclusion or consistency proof does not verify."""


class CheckpointError(CoreError):
    """A checkpoint note does not parse, or its signature does not verify."""
