"""``referendum trustee``: one trustee's side of the key ceremony and of the tally.

File-based, JSON everywhere, so trustees can work offline and exchange files by any channel:

1. ``keygen``: create my secret polynomial and transport key; writes
   ``trustee-I.secret.json`` (keep private) and ``trustee-I.public.json`` (publish).
2. ``commitments``: from everyone's public files, publish my Feldman commitments, proof of
   knowledge and one sealed share per trustee (``trustee-I.commitments.json``).
3. ``check``: check everyone's commitments and open and check my shares; writes my key
   share ``trustee-I.share.json`` (private) and prints the election public key.
4. ``decrypt``: my proven partial decryption of an encrypted tally file.
5. ``combine`` (anyone): verify k partial decryptions and print the counts.

Formats are in ``docs/crypto.md`` §7.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import click
import orjson
from nacl.public import PrivateKey

from referendum_core.elgamal import Ciphertext
from referendum_core.errors import CoreError, EncodingError
from referendum_core.group import scalar_from_bytes, scalar_to_bytes
from referendum_core.trustee import (
    DealerCommitment,
    DealerSecret,
    DecryptionShare,
    TrusteeParams,
    combine_decryption,
    dealer_commitment,
    decrypt_share,
    election_public_key,
    new_dealer,
    open_share,
    seal_share,
    share_for,
    trustee_share,
    verification_key,
)

__all__ = ["trustee"]


def _read(path: Path) -> dict[str, Any]:
    try:
        data = orjson.loads(path.read_bytes())
    except (OSError, orjson.JSONDecodeError) as exc:
        raise click.ClickException(f"{path}: {exc}") from exc
    if not isinstance(data, dict):
        raise click.ClickException(f"{path}: expected a JSON object")
    return data


def _write(path: Path, data: dict[str, Any], *, secret: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = orjson.dumps(data, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS)
    if secret:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(payload)
    else:
        path.write_bytes(payload)
    click.echo(f"wrote {path}")


def _params(data: dict[str, Any]) -> TrusteeParams:
    try:
        params = TrusteeParams(
            str(data["referendum"]), int(data["threshold"]), int(data["trustees"])
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise EncodingError("missing referendum/threshold/trustees", check="params") from exc
    params.check()
    return params


def _same_ceremony(params: TrusteeParams, data: dict[str, Any], path: Path) -> None:
    if _params(data) != params:
        raise click.ClickException(f"{path}: belongs to another ceremony")


def _load_commitments(
    params: TrusteeParams, paths: tuple[Path, ...]
) -> tuple[list[DealerCommitment], list[dict[str, Any]]]:
    raw = [_read(p) for p in paths]
    for data, path in zip(raw, paths, strict=True):
        _same_ceremony(params, data, path)
    return [DealerCommitment.from_json(d) for d in raw], raw


def _hex32(value: Any, check: str) -> bytes:
    if not isinstance(value, str) or len(value) != 64:
        raise EncodingError(f"{check} must be 32-byte hex", check=check)
    try:
        return bytes.fromhex(value)
    except ValueError as exc:
        raise EncodingError(f"{check} is not hex", check=check) from exc


class _CoreErrors(click.Group):
    """Renders core errors as one-line failures naming the check, exit status 1."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except CoreError as exc:
            raise click.ClickException(f"{exc.check}: {exc}") from exc


@click.group(cls=_CoreErrors)
def trustee() -> None:
    """A trustee's key ceremony and partial decryption (file-based JSON)."""


@trustee.command()
@click.option("--referendum", required=True, help="Referendum id.")
@click.option("--index", type=int, required=True, help="My trustee index, 1..n.")
@click.option("--threshold", type=int, required=True, help="k: trustees needed to decrypt.")
@click.option("--trustees", type=int, required=True, help="n: trustees in the ceremony.")
@click.option("--out-dir", type=click.Path(path_type=Path), default=Path("."), show_default=True)
def keygen(referendum: str, index: int, threshold: int, trustees: int, out_dir: Path) -> None:
    """Create my secret polynomial and transport key."""
    params = TrusteeParams(referendum, threshold, trustees)
    dealer = new_dealer(params, index)
    transport = PrivateKey.generate()
    head = {"referendum": referendum, "threshold": threshold, "trustees": trustees, "index": index}
    _write(
        out_dir / f"trustee-{index}.secret.json",
        {
            **head,
            "coefficients": [scalar_to_bytes(a).hex() for a in dealer.coefficients],
            "transport_secret": bytes(transport).hex(),
        },
        secret=True,
    )
    _write(
        out_dir / f"trustee-{index}.public.json",
        {**head, "transport_key": bytes(transport.public_key).hex()},
    )


def _load_secret(path: Path) -> tuple[TrusteeParams, DealerSecret, bytes]:
    data = _read(path)
    params = _params(data)
    index = params.index(data.get("index"))
    coefficients = data.get("coefficients")
    if not isinstance(coefficients, list) or len(coefficients) != params.threshold:
        raise EncodingError("coefficients missing or wrong count", check="secret")
    secret = DealerSecret(
        index, tuple(scalar_from_bytes(_hex32(c, "coefficient")) for c in coefficients)
    )
    return params, secret, _hex32(data.get("transport_secret"), "transport_secret")


@trustee.command()
@click.option(
    "--secret",
    "secret_path",
    type=click.Path(path_type=Path, exists=True),
    required=True,
    help="My trustee-I.secret.json.",
)
@click.option(
    "--roster",
    type=click.Path(path_type=Path, exists=True),
    multiple=True,
    required=True,
    help="Every trustee's public.json (repeat).",
)
@click.option("--out", type=click.Path(path_type=Path), required=True)
def commitments(secret_path: Path, roster: tuple[Path, ...], out: Path) -> None:
    """Publish my commitments, proof of knowledge and sealed shares for every trustee."""
    params, secret, _ = _load_secret(secret_path)
    keys: dict[int, bytes] = {}
    for path in roster:
        data = _read(path)
        _same_ceremony(params, data, path)
        keys[params.index(data.get("index"))] = _hex32(data.get("transport_key"), "transport_key")
    if sorted(keys) != list(range(1, params.trustees + 1)):
        raise click.ClickException(f"roster must hold trustees 1..{params.trustees}")
    published = dealer_commitment(params, secret)
    _write(
        out,
        {
            "referendum": params.referendum_id,
            "threshold": params.threshold,
            "trustees": params.trustees,
            **published.to_json(),
            "sealed_shares": {
                str(j): seal_share(key, share_for(secret, j)).hex()
                for j, key in sorted(keys.items())
            },
        },
    )


@trustee.command()
@click.option(
    "--secret",
    "secret_path",
    type=click.Path(path_type=Path, exists=True),
    required=True,
    help="My trustee-I.secret.json.",
)
@click.option(
    "--commitments",
    "commitment_paths",
    type=click.Path(path_type=Path, exists=True),
    multiple=True,
    required=True,
    help="Every trustee's commitments.json (repeat).",
)
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    required=True,
    help="Where to write my key share (private).",
)
def check(secret_path: Path, commitment_paths: tuple[Path, ...], out: Path) -> None:
    """Check the others' commitments and my shares; keep my key share."""
    params, secret, transport_secret = _load_secret(secret_path)
    published, raw = _load_commitments(params, commitment_paths)
    shares: dict[int, int] = {}
    for dealer, data in zip(published, raw, strict=True):
        sealed = data.get("sealed_shares")
        box = sealed.get(str(secret.index)) if isinstance(sealed, dict) else None
        if not isinstance(box, str):
            raise click.ClickException(f"trustee {dealer.index} sent me no share")
        try:
            box_bytes = bytes.fromhex(box)
        except ValueError as exc:
            raise click.ClickException(f"trustee {dealer.index}'s share is not hex") from exc
        shares[dealer.index] = open_share(transport_secret, box_bytes, dealer.index)
    x = trustee_share(params, published, secret.index, shares)
    pk = election_public_key(params, published)
    _write(
        out,
        {
            "referendum": params.referendum_id,
            "threshold": params.threshold,
            "trustees": params.trustees,
            "index": secret.index,
            "share": scalar_to_bytes(x).hex(),
            "verification_key": verification_key(published, secret.index).to_compressed().hex(),
            "election_public_key": pk.to_compressed().hex(),
        },
        secret=True,
    )
    click.echo(f"all {params.trustees} trustees check out")
    click.echo(f"election public key: {pk.to_compressed().hex()}")


@trustee.command(name="election-key")
@click.option(
    "--commitments",
    "commitment_paths",
    type=click.Path(path_type=Path, exists=True),
    multiple=True,
    required=True,
)
def election_key(commitment_paths: tuple[Path, ...]) -> None:
    """Print the election public key from every trustee's commitments (anyone can run it)."""
    params = _params(_read(commitment_paths[0]))
    published, _ = _load_commitments(params, commitment_paths)
    click.echo(election_public_key(params, published).to_compressed().hex())


def _load_tally(path: Path, params: TrusteeParams) -> list[Ciphertext]:
    data = _read(path)
    if data.get("referendum") != params.referendum_id:
        raise click.ClickException(f"{path}: tally of another referendum")
    items = data.get("ciphertexts")
    if not isinstance(items, list):
        raise EncodingError("tally needs a ciphertexts list", check="tally")
    cts = []
    for i, item in enumerate(items):
        if not isinstance(item, str):
            raise EncodingError("ciphertext must be hex", check=f"tally[{i}]")
        try:
            raw = bytes.fromhex(item)
        except ValueError as exc:
            raise EncodingError("ciphertext must be hex", check=f"tally[{i}]") from exc
        cts.append(Ciphertext.from_bytes(raw, check=f"tally[{i}]"))
    return cts


@trustee.command()
@click.option(
    "--share",
    "share_path",
    type=click.Path(path_type=Path, exists=True),
    required=True,
    help="My trustee-I.share.json from `check`.",
)
@click.option(
    "--tally",
    "tally_path",
    type=click.Path(path_type=Path, exists=True),
    required=True,
    help='{"referendum": ..., "ciphertexts": [hex130, ...]}',
)
@click.option("--out", type=click.Path(path_type=Path), required=True)
def decrypt(share_path: Path, tally_path: Path, out: Path) -> None:
    """Write my partial decryption of the tally, with a proof for each ciphertext."""
    data = _read(share_path)
    params = _params(data)
    index = params.index(data.get("index"))
    x = scalar_from_bytes(_hex32(data.get("share"), "share"), check="share")
    tally = _load_tally(tally_path, params)
    partial = decrypt_share(params, index, x, tally)
    _write(
        out,
        {
            "referendum": params.referendum_id,
            "threshold": params.threshold,
            "trustees": params.trustees,
            **partial.to_json(),
        },
    )


@trustee.command()
@click.option(
    "--commitments",
    "commitment_paths",
    type=click.Path(path_type=Path, exists=True),
    multiple=True,
    required=True,
)
@click.option("--tally", "tally_path", type=click.Path(path_type=Path, exists=True), required=True)
@click.option(
    "--partial",
    "partial_paths",
    type=click.Path(path_type=Path, exists=True),
    multiple=True,
    required=True,
    help="Partial decryptions (at least k).",
)
@click.option("--bound", type=int, required=True, help="Largest possible count (voters).")
def combine(
    commitment_paths: tuple[Path, ...],
    tally_path: Path,
    partial_paths: tuple[Path, ...],
    bound: int,
) -> None:
    """Verify partial decryptions, combine k of them and print the counts as JSON."""
    params = _params(_read(commitment_paths[0]))
    published, _ = _load_commitments(params, commitment_paths)
    tally = _load_tally(tally_path, params)
    partials = []
    for path in partial_paths:
        data = _read(path)
        _same_ceremony(params, data, path)
        partials.append(DecryptionShare.from_json(data))
    counts = combine_decryption(params, published, tally, partials, bound)
    click.echo(orjson.dumps({"referendum": params.referendum_id, "counts": counts}).decode())
