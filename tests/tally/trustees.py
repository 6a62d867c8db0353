"""Trustees for the tally tests: a k-of-n ceremony and decryptions run by the trustee CLI."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from click.testing import CliRunner

from referendum_core.group import Point
from trustee.cli import trustee as trustee_cli

__all__ = ["TrusteeBoard"]


def _run(*args: str) -> None:
    result = CliRunner().invoke(trustee_cli, list(args))
    assert result.exit_code == 0, result.output


@dataclass
class TrusteeBoard:
    """``n`` trustees who ran ``referendum trustee keygen/commitments/check`` in ``folder``."""

    folder: Path
    referendum_id: str
    k: int
    n: int
    election_public_key: bytes

    @classmethod
    def create(cls, referendum_id: str, k: int, n: int) -> TrusteeBoard:
        """Run the whole ceremony through the trustee command line."""
        folder = Path(tempfile.mkdtemp(prefix="trustees-"))
        common = ["--referendum", referendum_id, "--threshold", str(k), "--trustees", str(n)]
        for i in range(1, n + 1):
            _run("keygen", *common, "--index", str(i), "--out-dir", str(folder))
        roster = [
            a
            for i in range(1, n + 1)
            for a in ("--roster", str(folder / f"trustee-{i}.public.json"))
        ]
        for i in range(1, n + 1):
            _run(
                "commitments",
                "--secret",
                str(folder / f"trustee-{i}.secret.json"),
                *roster,
                "--out",
                str(folder / f"trustee-{i}.commitments.json"),
            )
        published = [
            a
            for i in range(1, n + 1)
            for a in ("--commitments", str(folder / f"trustee-{i}.commitments.json"))
        ]
        for i in range(1, n + 1):
            _run(
                "check",
                "--secret",
                str(folder / f"trustee-{i}.secret.json"),
                *published,
                "--out",
                str(folder / f"trustee-{i}.share.json"),
            )
        key = orjson.loads((folder / "trustee-1.share.json").read_bytes())["election_public_key"]
        return cls(folder, referendum_id, k, n, bytes.fromhex(key))

    def commitments(self) -> dict[str, Any]:
        """The body of ``PUT /v1/referendums/{rid}/trustees``: every commitments file."""
        return {
            "commitments": [
                orjson.loads((self.folder / f"trustee-{i}.commitments.json").read_bytes())
                for i in range(1, self.n + 1)
            ]
        }

    def decrypt(self, index: int, encrypted_tally: dict[str, Any]) -> dict[str, Any]:
        """Trustee ``index``'s share of the served tally, by ``referendum trustee decrypt``."""
        tally = self.folder / f"tally-{index}.json"
        tally.write_bytes(orjson.dumps(encrypted_tally))
        out = self.folder / f"partial-{index}.json"
        _run(
            "decrypt",
            "--share",
            str(self.folder / f"trustee-{index}.share.json"),
            "--tally",
            str(tally),
            "--out",
            str(out),
        )
        share: dict[str, Any] = orjson.loads(out.read_bytes())
        return share

    def forge(self, index: int, encrypted_tally: dict[str, Any]) -> dict[str, Any]:
        """Trustee ``index``'s share with its first partial decryption replaced."""
        share = self.decrypt(index, encrypted_tally)
        self.alter_share_value(share)
        return share

    @staticmethod
    def alter_share_value(share: dict[str, Any]) -> None:
        """Replace the first partial decryption ``D`` by ``D + G`` (its proof then fails)."""
        d = Point.decode_compressed(bytes.fromhex(share["shares"][0]), allow_identity=True)
        share["shares"][0] = (d + Point.base_mul(1)).to_compressed().hex()

    @staticmethod
    def alter_share_proof(share: dict[str, Any]) -> None:
        """Change the response scalar of the first proof."""
        proof = bytearray(bytes.fromhex(share["proofs"][0]))
        proof[40] ^= 1
        share["proofs"][0] = proof.hex()
