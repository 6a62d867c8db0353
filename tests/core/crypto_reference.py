"""A naive, independent secp256k1 and ballot verifier written from ``docs/crypto.md`` alone.

Test oracle only: affine arithmetic on Python ints (slow, not constant time), no coincurve.
It checks the known-answer vectors the fast core produces, so a mistake shared by the core and
its own tests cannot hide. ``None`` is the identity.
"""

from __future__ import annotations

import hashlib
import struct

from tests.core import ed25519_reference as ed

P = 2**256 - 2**32 - 977
N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
G = (
    0x79BE667EF9DCBBAC55A06295CE870B07029BFCDB2DCE28D959F2815B16F81798,
    0x483ADA7726A3C4655DA4FBFC0E1108A8FD17B448A68554199C47D08FFB10D4B8,
)
Pt = tuple[int, int] | None


def add(p: Pt, q: Pt) -> Pt:
    """Affine point addition."""
    if p is None:
        return q
    if q is None:
        return p
    if p[0] == q[0] and (p[1] + q[1]) % P == 0:
        return None
    if p == q:
        lam = 3 * p[0] * p[0] * pow(2 * p[1], -1, P) % P
    else:
        lam = (q[1] - p[1]) * pow(q[0] - p[0], -1, P) % P
    x = (lam * lam - p[0] - q[0]) % P
    return x, (lam * (p[0] - x) - p[1]) % P


def mul(k: int, p: Pt) -> Pt:
    """Double-and-add scalar multiplication."""
    k %= N
    acc: Pt = None
    while k:
        if k & 1:
            acc = add(acc, p)
        p = add(p, p)
        k >>= 1
    return acc


def neg(p: Pt) -> Pt:
    """Point negation."""
    return None if p is None else (p[0], (-p[1]) % P)


def on_curve(p: tuple[int, int]) -> bool:
    """y² = x³ + 7 with coordinates below p."""
    x, y = p
    return x < P and y < P and (y * y - x * x * x - 7) % P == 0


def enc33(p: Pt) -> bytes:
    """Compressed encoding; 33 zero bytes for the identity."""
    if p is None:
        return bytes(33)
    return bytes([2 + (p[1] & 1)]) + p[0].to_bytes(32, "big")


def enc65(p: Pt) -> bytes:
    """Uncompressed encoding; 65 zero bytes for the identity."""
    if p is None:
        return bytes(65)
    return b"\x04" + p[0].to_bytes(32, "big") + p[1].to_bytes(32, "big")


def dec65(data: bytes) -> tuple[int, int]:
    """Decode a non-identity uncompressed point, or raise ValueError."""
    if len(data) != 65 or data[0] != 4:
        raise ValueError("bad uncompressed point")
    p = (int.from_bytes(data[1:33], "big"), int.from_bytes(data[33:], "big"))
    if not on_curve(p):
        raise ValueError("not on curve")
    return p


def dec33(data: bytes) -> tuple[int, int]:
    """Decode a non-identity compressed point, or raise ValueError."""
    if len(data) != 33 or data[0] not in (2, 3):
        raise ValueError("bad compressed point")
    x = int.from_bytes(data[1:], "big")
    if x >= P:
        raise ValueError("x >= p")
    y = pow((x**3 + 7) % P, (P + 1) // 4, P)
    if (y * y - x**3 - 7) % P:
        raise ValueError("not on curve")
    if y & 1 != data[0] & 1:
        y = P - y
    return x, y


def scalar(data: bytes) -> int:
    """Decode a canonical scalar, or raise ValueError."""
    k = int.from_bytes(data, "big")
    if len(data) != 32 or k >= N:
        raise ValueError("bad scalar")
    return k


def transcript(tag: bytes, *parts: bytes) -> bytes:
    """u16 tag length ‖ tag ‖ (u32 length ‖ part)*."""
    out = struct.pack(">H", len(tag)) + tag
    for part in parts:
        out += struct.pack(">I", len(part)) + part
    return out


def h(tag: bytes, *parts: bytes) -> int:
    """Hash to scalar: SHA-256 of the transcript, big-endian, mod n."""
    return int.from_bytes(hashlib.sha256(transcript(tag, *parts)).digest(), "big") % N


def verify_range(
    tag: bytes, context: bytes, label: bytes, pk: Pt, a: Pt, b: Pt, lo: int, hi: int, proof: bytes
) -> bool:
    """The disjunctive Chaum–Pedersen check of docs/crypto.md §4.1 (commitments carried).

    Layout: 2·count uncompressed commitments (a_v, b_v), then count challenges, then count
    responses. Raises ValueError on a bad encoding; False if the proof does not verify.
    """
    count = hi - lo + 1
    if len(proof) != 194 * count:
        raise ValueError("proof length")
    points = [dec65(proof[65 * i : 65 * (i + 1)]) for i in range(2 * count)]
    if any(q is None for q in points):
        raise ValueError("identity commitment")
    base = 130 * count
    ks = [scalar(proof[base + 32 * i : base + 32 * (i + 1)]) for i in range(2 * count)]
    cs, ss = ks[:count], ks[count:]
    parts = [enc33(q) for q in points]
    c = h(tag, context, label + struct.pack(">II", lo, hi), enc65(a), enc65(b), *parts)
    if sum(cs) % N != c:
        return False
    for i, v in enumerate(range(lo, hi + 1)):
        bv = add(b, neg(mul(v, G)))
        # s·G = a_v + c·A  and  s·PK = b_v + c·(B − v·G)
        if mul(ss[i], G) != add(points[2 * i], mul(cs[i], a)):
            return False
        if mul(ss[i], pk) != add(points[2 * i + 1], mul(cs[i], bv)):
            return False
    return True


SIGNING_PREFIX = b"referendum/v1/ballot-signature\x00"


def ed25519_verify(key: bytes, message: bytes, signature: bytes) -> bool:
    """RFC 8032 §5.1.7 (cofactorless): [S]B = R + [SHA-512(R ‖ A ‖ M)]A, canonical S."""
    base_y = 4 * pow(5, -1, ed.P) % ed.P
    base = ed.decode(base_y.to_bytes(32, "little"))
    a, r = ed.decode(key), ed.decode(signature[:32])
    s = int.from_bytes(signature[32:], "little")
    if base is None or a is None or r is None or s >= ed.L or len(signature) != 64:
        return False
    k = int.from_bytes(hashlib.sha512(signature[:32] + key + message).digest(), "little") % ed.L
    return ed.encode(ed.mul(s, base)) == ed.encode(ed.add(r, ed.mul(k, a)))


def verify_ballot(
    canonical: bytes,
    rid: str,
    k: int,
    lo: int,
    hi: int,
    epk33: bytes,
    imply_last: bool = True,
) -> tuple[bytes, list[Pt]]:
    """Parse and check a version-2 canonical ballot: its signature under the credential it
    names, and its proofs; return the credential and the a_i, b_i pairs.

    Raises ValueError on any failure.
    """
    pk = dec33(epk33)
    if canonical[:5] != b"RBAL\x02":
        raise ValueError("magic")
    n = canonical[5]
    if canonical[6 : 6 + n] != rid.encode():
        raise ValueError("referendum")
    pos = 6 + n
    credential = canonical[pos : pos + 32]
    pos += 32
    count = canonical[pos]
    pos += 1
    implied = imply_last and lo == hi == 1 and k >= 2
    explicit = k - 1 if implied else k
    if count != explicit:
        raise ValueError("count")
    cts_raw = [canonical[pos + 130 * i : pos + 130 * (i + 1)] for i in range(count)]
    pos += 130 * count
    proofs = [canonical[pos + 388 * i : pos + 388 * (i + 1)] for i in range(count)]
    pos += 388 * count
    branches = canonical[pos]
    pos += 1
    sum_proof = canonical[pos : pos + 194 * branches]
    pos += 194 * branches
    if len(canonical) != pos + 64:
        raise ValueError("length")
    if not ed25519_verify(credential, SIGNING_PREFIX + canonical[:pos], canonical[pos:]):
        raise ValueError("signature")
    context = hashlib.sha256(
        transcript(
            b"referendum/v1/ballot-context",
            rid.encode(),
            epk33,
            credential,
            b"".join(cts_raw),
        )
    ).digest()
    cts = [(dec65(c[:65]), dec65(c[65:])) for c in cts_raw]
    for i, (a, b) in enumerate(cts):
        if not verify_range(
            b"referendum/v1/proof01", context, struct.pack(">I", i), pk, a, b, 0, 1, proofs[i]
        ):
            raise ValueError(f"option {i} proof")
    rlo, rhi = (0, 1) if implied else (lo, hi)
    rhi = min(rhi, explicit)
    total_a: Pt = None
    total_b: Pt = None
    for a, b in cts:
        total_a, total_b = add(total_a, a), add(total_b, b)
    if rlo == 0 and rhi == explicit:
        if branches:
            raise ValueError("unexpected sum proof")
    elif branches != rhi - rlo + 1 or not verify_range(
        b"referendum/v1/proof-sum", context, b"", pk, total_a, total_b, rlo, rhi, sum_proof
    ):
        raise ValueError("sum proof")
    out: list[Pt] = [p for ct in cts for p in ct]
    if implied:
        out += [neg(total_a), add(G, neg(total_b))]
    return credential, out


def did_key(credential: bytes) -> str:
    """W3C did:key of an Ed25519 key: "did:key:z" + base58btc(multicodec 0xed 0x01 ‖ key)."""
    alphabet = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
    data = b"\xed\x01" + credential
    digits = []
    n = int.from_bytes(data, "big")
    while n > 0:
        digits.append(alphabet[n % 58])
        n //= 58
    return "did:key:z" + "".join(reversed(digits))  # data starts 0xed: no leading-zero "1"s
