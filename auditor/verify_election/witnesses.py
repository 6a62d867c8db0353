"""The witness check of ``verify-election``: the record's final checkpoint is witnessed.

The record holds the log's own signed checkpoints; the cosignatures come beside it, as the
note ``GET .../log/checkpoint?witnessed=true`` served once the log was final (the log's signed
checkpoint followed by the witnesses' cosignature lines). With a pinned witness policy the
note must be the final block's checkpoint (same signed text, so the log's signature checked
with the blocks covers it) and be cosigned by ``threshold`` of the policy's witnesses.
"""

from __future__ import annotations

from pathlib import Path

from auditor.verify_election.report import ElectionReport
from referendum_core.block import Block
from referendum_core.checkpoint import parse_note
from referendum_core.errors import CoreError
from referendum_core.witness import WitnessPolicy

__all__ = ["check_witnessed"]


def check_witnessed(
    report: ElectionReport, blocks: list[Block], policy: WitnessPolicy, note_file: Path | None
) -> None:
    """Fail ``witness`` unless ``note_file`` is the final checkpoint cosigned per ``policy``."""
    if note_file is None:
        report.fail("witness", "a witness policy needs --cosigned-checkpoint")
        return
    if not blocks:
        report.fail("witness", "the record has no block to be witnessed")
        return
    try:
        note = note_file.read_text(encoding="utf-8")
        cosigned, _ = parse_note(note)
        final, _ = parse_note(blocks[-1].checkpoint)
        if cosigned != final:
            report.fail(
                "witness",
                f"the cosigned checkpoint (size {cosigned.size}) is not the final one "
                f"(size {final.size})",
            )
            return
        names = policy.check(note)
    except (OSError, UnicodeDecodeError) as exc:
        report.fail("witness", f"cannot read {note_file}: {exc}")
        return
    except CoreError as exc:
        report.fail("witness", f"{exc.check}: {exc}")
        return
    report.witnessed_by = names
