"""``referendum audit verify-election RECORD``: re-verify a whole election from its record alone.

The record is the folder ``referendum record export`` writes (format: ``docs/record.md``).
Nothing here talks to a server; it imports only the pure core, the standard library, click and
tqdm. Every check that fails is reported by name, and verification goes on, so one run lists
everything that is wrong. Every member of every file is checked against what it must be
(``docs/record.md`` lists them field by field): a JSON object with a member missing, an unknown
member or a member twice fails the check of its file.

=====================  ======================================================================
check                  what is recomputed
=====================  ======================================================================
``manifest``           every file's SHA-256 and size against ``manifest.json`` (and the
                       manifest's own hash when ``--manifest-sha256`` pins it); nothing
                       else in the folder; the referendum it names
``definition``         ``referendum.json`` parses into a ballot spec; ids, timestamps,
                       policy, k of n, state, roll commitment well formed
``roll``               the roll's RFC 9162 root and size equal the published commitment;
                       every key is a valid credential key, none twice; the file is
                       canonical (sorted, lower-case hex, each did:key the credential's)
``log.blocks``         every block parses, its hash matches, heights and index ranges chain,
                       ``prev_hash`` links, exactly the last block is final
``log.checkpoint``     every checkpoint's Ed25519 signature by the log key, its origin
                       (``<key name>/<referendum>``), and that it states the block's size
                       and root; ``log_key.txt`` is one key
``log.tree``           the Merkle root recomputed from the ballots after every block
``log.coverage``       the blocks cover exactly the ballots in the record
``ballot``             every ballot: its credential on the roll, its signature under that
                       credential, every proof (``verify_canonical``), no ballot twice
``revote``             the re-vote policy: which ballot is the last of each credential,
                       recomputed from log order, against ``supersessions.jsonl``
``tally``              the homomorphic sum of the ballots that count (one per credential)
                       against ``tally.json``, and its referendum, options, final block,
                       count and hash
``shares``             ``trustees.json`` is this referendum's k-of-n ceremony; every
                       decryption share's Chaum–Pedersen proof against the tally and the
                       trustee's public key share derived from ``trustees.json``
``result``             the Lagrange combination of the shares, and each count ``c`` of
                       ``result.json`` satisfying ``c·G = combined`` for its option; the
                       trustees combined, ballots counted, block, tally hash it states
=====================  ======================================================================

Ballots are verified in parallel (``ProcessPoolExecutor`` over chunks of the ballot file;
``--jobs`` defaults to every core) with a progress bar. Exit status 0 only when every check
holds, 1 otherwise, 2 for bad usage.

One module per check group: :mod:`.record` (manifest, definition, roll), :mod:`.log` (blocks,
checkpoints, tree, coverage), :mod:`.ballots` (the parallel pass), :mod:`.tally` (re-votes
and the tally), :mod:`auditor.verify_decryption` (shares, result); :mod:`.election` runs them
in order and :mod:`.report` collects what failed.
"""

from auditor.verify_election.election import verify_election, verify_election_command
from auditor.verify_election.record import read_roll
from auditor.verify_election.report import ElectionReport, Failure
from referendum_core.record import RECORD_FILES, RECORD_FORMAT

__all__ = [
    "RECORD_FILES",
    "RECORD_FORMAT",
    "ElectionReport",
    "Failure",
    "read_roll",
    "verify_election",
    "verify_election_command",
]
