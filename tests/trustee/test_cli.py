"""``referendum trustee``: a whole 2-of-3 ceremony and tally through the command line."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from click.testing import CliRunner

from referendum_core.elgamal import aggregate, encrypt
from referendum_core.group import Point, seeded_scalars
from trustee.cli import trustee

RID = "cli-ref"


def run(args: list[str], ok: bool = True) -> str:
    """Invoke the trustee group; assert success (or failure) and return its output."""
    result = CliRunner().invoke(trustee, args, catch_exceptions=False)
    assert (result.exit_code == 0) is ok, result.output
    return result.output


@pytest.fixture
def ceremony(tmp_path: Path) -> Path:
    """Three trustees run keygen, commitments and check; returns the folder."""
    for i in (1, 2, 3):
        run(
            [
                "keygen",
                "--referendum",
                RID,
                "--index",
                str(i),
                "--threshold",
                "2",
                "--trustees",
                "3",
                "--out-dir",
                str(tmp_path),
            ]
        )
    roster = [
        a for i in (1, 2, 3) for a in ("--roster", str(tmp_path / f"trustee-{i}.public.json"))
    ]
    for i in (1, 2, 3):
        run(
            [
                "commitments",
                "--secret",
                str(tmp_path / f"trustee-{i}.secret.json"),
                *roster,
                "--out",
                str(tmp_path / f"trustee-{i}.commitments.json"),
            ]
        )
    for i in (1, 2, 3):
        out = run(
            [
                "check",
                "--secret",
                str(tmp_path / f"trustee-{i}.secret.json"),
                *commitment_args(tmp_path),
                "--out",
                str(tmp_path / f"trustee-{i}.share.json"),
            ]
        )
        assert "election public key" in out
    return tmp_path


def commitment_args(folder: Path) -> list[str]:
    """``--commitments F`` for each trustee's published file."""
    return [
        a
        for i in (1, 2, 3)
        for a in ("--commitments", str(folder / f"trustee-{i}.commitments.json"))
    ]


def write_tally(folder: Path, counts: list[int]) -> Path:
    """An encrypted tally file for ``counts`` under the ceremony's election key."""
    key_hex = run(["election-key", *commitment_args(folder)]).strip()
    pk = Point.decode_compressed(bytes.fromhex(key_hex))
    rng = seeded_scalars(b"cli-tally")
    cts = [
        aggregate([encrypt(pk, 1, rng()) for _ in range(c)] + [encrypt(pk, 0, rng())])
        for c in counts
    ]
    path = folder / "tally.json"
    path.write_bytes(
        orjson.dumps({"referendum": RID, "ciphertexts": [ct.to_bytes().hex() for ct in cts]})
    )
    return path


def test_ceremony_and_tally_through_cli(ceremony: Path) -> None:
    """Every trustee derives the same key; any 2 partial decryptions give the counts."""
    keys = {
        orjson.loads((ceremony / f"trustee-{i}.share.json").read_bytes())["election_public_key"]
        for i in (1, 2, 3)
    }
    assert len(keys) == 1
    secret_mode = (ceremony / "trustee-1.secret.json").stat().st_mode & 0o777
    assert secret_mode == 0o600
    tally = write_tally(ceremony, [5, 2])
    for i in (1, 2, 3):
        run(
            [
                "decrypt",
                "--share",
                str(ceremony / f"trustee-{i}.share.json"),
                "--tally",
                str(tally),
                "--out",
                str(ceremony / f"partial-{i}.json"),
            ]
        )
    for pair in ((1, 2), (2, 3), (1, 3)):
        partials = [a for i in pair for a in ("--partial", str(ceremony / f"partial-{i}.json"))]
        out = run(
            [
                "combine",
                *commitment_args(ceremony),
                "--tally",
                str(tally),
                *partials,
                "--bound",
                "1000",
            ]
        )
        assert orjson.loads(out)["counts"] == [5, 2]
    out = run(
        [
            "combine",
            *commitment_args(ceremony),
            "--tally",
            str(tally),
            "--partial",
            str(ceremony / "partial-1.json"),
            "--bound",
            "1000",
        ],
        ok=False,
    )
    assert "threshold" in out


def test_tampered_partial_is_named(ceremony: Path) -> None:
    """A partial decryption with a changed share fails and the output names the trustee."""
    tally = write_tally(ceremony, [1])
    for i in (1, 2):
        run(
            [
                "decrypt",
                "--share",
                str(ceremony / f"trustee-{i}.share.json"),
                "--tally",
                str(tally),
                "--out",
                str(ceremony / f"partial-{i}.json"),
            ]
        )
    path = ceremony / "partial-2.json"
    data = orjson.loads(path.read_bytes())
    point = Point.decode_compressed(bytes.fromhex(data["shares"][0]), allow_identity=True)
    data["shares"][0] = (point + Point.base_mul(1)).to_compressed().hex()
    path.write_bytes(orjson.dumps(data))
    out = run(
        [
            "combine",
            *commitment_args(ceremony),
            "--tally",
            str(tally),
            "--partial",
            str(ceremony / "partial-1.json"),
            "--partial",
            str(path),
            "--bound",
            "10",
        ],
        ok=False,
    )
    assert "trustee[2]" in out


def test_tampered_commitments_are_named(ceremony: Path) -> None:
    """A trustee whose published commitments change after dealing is named by `check`."""
    path = ceremony / "trustee-3.commitments.json"
    data = orjson.loads(path.read_bytes())
    data["commitments"][1] = Point.base_mul(12345).to_compressed().hex()
    path.write_bytes(orjson.dumps(data))
    out = run(
        [
            "check",
            "--secret",
            str(ceremony / "trustee-1.secret.json"),
            *commitment_args(ceremony),
            "--out",
            str(ceremony / "again.json"),
        ],
        ok=False,
    )
    assert "trustee[3]" in out
