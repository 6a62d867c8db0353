"""Properties of referendum_core.merkle against the naive reference in merkle_reference."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from referendum_core import merkle
from referendum_core.errors import MerkleError

from .merkle_reference import (
    mth,
    path,
    proof,
    ref_consistency_ok,
    ref_inclusion_ok,
    ref_leaf_hash,
)

SETTINGS = settings(max_examples=50, deadline=None)


def entries(n: int) -> list[bytes]:
    return [f"e{i}".encode() for i in range(n)]


def leaves(n: int) -> list[bytes]:
    return [merkle.leaf_hash(e) for e in entries(n)]


def test_hash_definitions_known_answers() -> None:
    """Leaf, node and empty hashes are SHA-256 with the 0x00/0x01 prefixes of RFC 9162."""
    # Derived by hand from the definitions with hashlib, independent of the module.
    assert hashlib.sha256(b"").digest() == merkle.EMPTY_ROOT
    assert merkle.leaf_hash(b"ab") == hashlib.sha256(b"\x00ab").digest()
    a, b = bytes(32), bytes([1]) * 32
    assert merkle.node_hash(a, b) == hashlib.sha256(b"\x01" + a + b).digest()
    # RFC 9162 empty-tree root, the well-known e3b0c442... constant.
    assert merkle.EMPTY_ROOT.hex().startswith("e3b0c44298fc1c14")


@SETTINGS
@given(st.integers(min_value=0, max_value=300))
def test_root_matches_reference(n: int) -> None:
    """The fast root and the accumulator root equal the recursive MTH for every size."""
    es = entries(n)
    want = mth(es)
    assert merkle.root_from_leaf_hashes([ref_leaf_hash(e) for e in es]) == want
    acc = merkle.CompactRange()
    acc.extend([ref_leaf_hash(e) for e in es])
    assert acc.root() == want


def test_root_over_chunk_boundary_matches_accumulator() -> None:
    """Above the 2^16 chunk the chunked root still equals the one-by-one accumulator root."""
    ls = leaves((1 << 16) + 3)
    acc = merkle.CompactRange()
    acc.extend(ls, min_level=99)
    assert merkle.root_from_leaf_hashes(ls) == acc.root()


def test_accumulator_root_at_every_size() -> None:
    """Appending one by one, the accumulator root equals the batch root after every append."""
    ls = leaves(70)
    acc = merkle.CompactRange()
    for n, leaf in enumerate(ls, start=1):
        acc.append(leaf)
        assert acc.size == n
        assert acc.root() == merkle.root_from_leaf_hashes(ls[:n])


@SETTINGS
@given(st.lists(st.integers(min_value=0, max_value=20), max_size=8))
def test_accumulator_extend_in_any_batches(batches: list[int]) -> None:
    """Extending in arbitrary batch sizes, with a serialisation round trip between batches,
    gives the batch root each time."""
    total = sum(batches)
    ls = leaves(total)
    acc = merkle.CompactRange()
    done = 0
    for k in batches:
        acc = merkle.CompactRange.from_bytes(acc.to_bytes())
        acc.extend(ls[done : done + k])
        done += k
        assert acc.root() == merkle.root_from_leaf_hashes(ls[:done])


def test_accumulator_reports_every_perfect_subtree_once() -> None:
    """extend reports each perfect subtree exactly once with its true hash."""
    ls = leaves(37)
    acc = merkle.CompactRange()
    reported = acc.extend(ls[:10]) + acc.extend(ls[10:])
    ids = [(s.level, s.position) for s in reported]
    assert len(ids) == len(set(ids))
    want = {(lvl, pos) for lvl in range(6) for pos in range(37 >> lvl)}
    assert set(ids) == want
    for s in reported:
        begin = s.position << s.level
        assert s.hash == merkle.root_from_leaf_hashes(ls[begin : begin + (1 << s.level)])


def test_accumulator_min_level_skips_low_levels() -> None:
    """min_level=1 leaves out leaf hashes but keeps every parent."""
    acc = merkle.CompactRange()
    reported = acc.extend(leaves(8), min_level=1)
    assert sorted((s.level, s.position) for s in reported) == [
        (1, 0),
        (1, 1),
        (1, 2),
        (1, 3),
        (2, 0),
        (2, 1),
        (3, 0),
    ]


def test_accumulator_rejects_bad_state_and_leaves() -> None:
    """Bad serialisations and non-32-byte leaves raise MerkleError, state left intact."""
    acc = merkle.CompactRange()
    acc.extend(leaves(3))
    blob = acc.to_bytes()
    for bad in (blob[:-1], blob + b"x", b"nope" + blob[4:], b""):
        with pytest.raises(MerkleError):
            merkle.CompactRange.from_bytes(bad)
    with pytest.raises(MerkleError):
        merkle.CompactRange(3, [bytes(32)])
    with pytest.raises(MerkleError):
        acc.extend([bytes(32), b"short"])
    assert acc.size == 4
    assert acc.root() == merkle.root_from_leaf_hashes([*leaves(3), bytes(32)])


@SETTINGS
@given(
    st.integers(min_value=1, max_value=80).flatmap(
        lambda n: st.tuples(st.just(n), st.integers(min_value=0, max_value=n - 1))
    )
)
def test_inclusion_proofs_match_reference_and_verify(case: tuple[int, int]) -> None:
    """Inclusion proofs equal PATH, verify, and the stored-node plan rebuilds them."""
    n, i = case
    es = entries(n)
    ls = [ref_leaf_hash(e) for e in es]
    p = merkle.inclusion_proof(ls, i)
    assert p == path(i, es)
    merkle.verify_inclusion(ls[i], i, n, p, mth(es))
    acc = merkle.CompactRange()
    stored = {(s.level, s.position): s.hash for s in acc.extend(ls)}
    plan = merkle.inclusion_proof_nodes(i, n)
    assert merkle.proof_from_nodes(plan, merkle.node_lookup(stored)) == p


@SETTINGS
@given(
    st.integers(min_value=1, max_value=80).flatmap(
        lambda n: st.tuples(st.integers(min_value=1, max_value=n), st.just(n))
    )
)
def test_consistency_proofs_match_reference_and_verify(case: tuple[int, int]) -> None:
    """Consistency proofs equal PROOF, verify, and the stored-node plan rebuilds them."""
    m, n = case
    es = entries(n)
    ls = [ref_leaf_hash(e) for e in es]
    p = merkle.consistency_proof(ls, m)
    assert p == proof(m, es)
    merkle.verify_consistency(m, n, p, mth(es[:m]), mth(es))
    acc = merkle.CompactRange()
    stored = {(s.level, s.position): s.hash for s in acc.extend(ls)}
    plan = merkle.consistency_proof_nodes(m, n)
    assert merkle.proof_from_nodes(plan, merkle.node_lookup(stored)) == p


def _mutate(data: st.DataObject, p: list[bytes]) -> list[bytes]:
    kind = data.draw(st.sampled_from(["flip", "drop", "add", "insert", "shorten"]))
    q = list(p)
    if kind == "add" or not q:
        q.append(data.draw(st.binary(min_size=32, max_size=32)))
        return q
    k = data.draw(st.integers(min_value=0, max_value=len(q) - 1))
    if kind == "flip":
        bit = data.draw(st.integers(min_value=0, max_value=255))
        b = bytearray(q[k])
        b[bit // 8] ^= 1 << (bit % 8)
        q[k] = bytes(b)
    elif kind == "drop":
        del q[k]
    elif kind == "insert":
        q.insert(k, q[k])
    else:
        q[k] = q[k][:31]
    return q


@SETTINGS
@given(st.data())
def test_mutated_inclusion_agrees_with_reference(data: st.DataObject) -> None:
    """Any mutation of proof, index, size, leaf or root is judged as the naive verifier does
    (and a changed proof never verifies)."""
    n = data.draw(st.integers(min_value=1, max_value=40))
    i = data.draw(st.integers(min_value=0, max_value=n - 1))
    es = entries(n)
    ls = [ref_leaf_hash(e) for e in es]
    p, root, leaf = merkle.inclusion_proof(ls, i), mth(es), ls[i]
    what = data.draw(st.sampled_from(["proof", "index", "size", "leaf", "root"]))
    if what == "proof":
        p = _mutate(data, p)
    elif what == "index":
        i = data.draw(st.integers(min_value=-2, max_value=n + 2).filter(lambda j: j != i))
    elif what == "size":
        n = data.draw(st.integers(min_value=0, max_value=2 * n + 2).filter(lambda m: m != n))
    elif what == "leaf":
        leaf = data.draw(st.binary(min_size=31, max_size=33).filter(lambda x: x != leaf))
    else:
        root = data.draw(st.binary(min_size=31, max_size=33).filter(lambda x: x != root))
    want_ok = ref_inclusion_ok(leaf, i, n, p, root)
    if what in ("proof", "leaf", "root"):
        assert not want_ok
    try:
        merkle.verify_inclusion(leaf, i, n, p, root)
        ok = True
    except MerkleError:
        ok = False
    assert ok == want_ok


@SETTINGS
@given(st.data())
def test_mutated_consistency_agrees_with_reference(data: st.DataObject) -> None:
    """Any mutation of a consistency proof, sizes or roots is judged as the naive verifier
    does (and a changed proof or root never verifies)."""
    n = data.draw(st.integers(min_value=2, max_value=40))
    m = data.draw(st.integers(min_value=1, max_value=n - 1))
    es = entries(n)
    ls = [ref_leaf_hash(e) for e in es]
    p, r1, r2 = merkle.consistency_proof(ls, m), mth(es[:m]), mth(es)
    what = data.draw(st.sampled_from(["proof", "size1", "size2", "root1", "root2", "swap"]))
    if what == "proof":
        p = _mutate(data, p)
    elif what == "size1":
        m = data.draw(st.integers(min_value=-1, max_value=n + 1).filter(lambda j: j != m))
    elif what == "size2":
        n = data.draw(st.integers(min_value=0, max_value=2 * n).filter(lambda j: j != n))
    elif what == "root1":
        r1 = data.draw(st.binary(min_size=32, max_size=32).filter(lambda x: x != r1))
    elif what == "root2":
        r2 = data.draw(st.binary(min_size=32, max_size=32).filter(lambda x: x != r2))
    else:
        r1, r2 = r2, r1
    want_ok = ref_consistency_ok(m, n, p, r1, r2)
    if what in ("proof", "root1", "root2", "swap"):
        assert not want_ok
    try:
        merkle.verify_consistency(m, n, p, r1, r2)
        ok = True
    except MerkleError:
        ok = False
    assert ok == want_ok


@pytest.mark.parametrize(("index", "size"), [(0, 0), (3, 3), (-1, 5), (True, 2), (1.0, 2)])
def test_inclusion_rejects_impossible_positions(index: object, size: object) -> None:
    """An index outside the tree (or not an int) is a MalformedProof, never IndexError."""
    with pytest.raises(merkle.MalformedProof) as err:
        merkle.verify_inclusion(bytes(32), index, size, [], bytes(32))  # type: ignore[arg-type]
    assert err.value.check == "inclusion.index"


def test_inclusion_rejects_non_hash_elements() -> None:
    """Proof elements, leaf or root that are not 32 bytes are rejected before hashing."""
    ls = leaves(4)
    root = merkle.root_from_leaf_hashes(ls)
    p = merkle.inclusion_proof(ls, 1)
    with pytest.raises(merkle.MalformedProof):
        merkle.verify_inclusion(ls[1], 1, 4, [p[0] + b"\x00", p[1]], root)
    with pytest.raises(merkle.MalformedProof):
        merkle.verify_inclusion(ls[1], 1, 4, ["00" * 32, p[1]], root)  # type: ignore[list-item]
    with pytest.raises(merkle.MalformedProof):
        merkle.verify_inclusion(ls[1][:31], 1, 4, p, root)


def test_inclusion_names_length_errors() -> None:
    """A trailing extra element and a missing element are named as length errors."""
    ls = leaves(5)
    root = merkle.root_from_leaf_hashes(ls)
    p = merkle.inclusion_proof(ls, 4)
    with pytest.raises(merkle.MalformedProof) as err:
        merkle.verify_inclusion(ls[4], 4, 5, [*p, p[0]], root)
    assert err.value.check == "inclusion.length"
    with pytest.raises(merkle.MalformedProof) as err:
        merkle.verify_inclusion(ls[0], 0, 5, merkle.inclusion_proof(ls, 0)[:-1], root)
    assert err.value.check == "inclusion.length"
    with pytest.raises(merkle.RootMismatch):
        merkle.verify_inclusion(ls[3], 4, 5, p, root)


def test_consistency_edge_sizes() -> None:
    """Size 0 is refused, equal sizes need an empty proof, size1 > size2 is refused."""
    ls = leaves(4)
    r = merkle.root_from_leaf_hashes(ls)
    merkle.verify_consistency(4, 4, [], r, r)
    assert merkle.consistency_proof(ls, 4) == []
    with pytest.raises(merkle.MalformedProof):
        merkle.verify_consistency(4, 4, [r], r, r)
    with pytest.raises(merkle.MalformedProof):
        merkle.verify_consistency(0, 4, [], merkle.EMPTY_ROOT, r)
    with pytest.raises(merkle.MalformedProof):
        merkle.verify_consistency(4, 3, [], r, r)
    with pytest.raises(merkle.InvalidTreeSize):
        merkle.consistency_proof(ls, 0)
    with pytest.raises(merkle.InvalidTreeSize):
        merkle.consistency_proof(ls, 5)
    with pytest.raises(merkle.InvalidTreeSize):
        merkle.inclusion_proof(ls, 4)


def test_node_plan_is_logarithmic_for_ten_million() -> None:
    """Proofs in a 10,000,000-leaf tree need O(log n) stored nodes, none beyond the size."""
    n = 10_000_000
    for i in (0, 1, 4_999_999, 9_999_998, n - 1):
        plan = merkle.inclusion_proof_nodes(i, n)
        ids = [node for element in plan for node in element]
        assert len(ids) <= 2 * n.bit_length() + 1
        assert all((pos + 1) << lvl <= n for lvl, pos in ids)
        assert [len(e) == 1 for e in plan].count(False) <= 1
    for m in (1, 3, 1 << 20, 9_999_999):
        ids = [node for e in merkle.consistency_proof_nodes(m, n) for node in e]
        assert len(ids) <= 3 * n.bit_length()
        assert all((pos + 1) << lvl <= n for lvl, pos in ids)


def test_missing_stored_node_is_named() -> None:
    """Assembling a proof without one of its nodes raises a typed error naming the node."""
    ls = leaves(6)
    acc = merkle.CompactRange()
    stored = {(s.level, s.position): s.hash for s in acc.extend(ls)}
    del stored[(1, 2)]
    with pytest.raises(merkle.InvalidTreeSize) as err:
        merkle.proof_from_nodes(merkle.inclusion_proof_nodes(0, 6), merkle.node_lookup(stored))
    assert "(1, 2)" in str(err.value)


def test_root_of_past_size_from_stored_nodes() -> None:
    """root_nodes + subtree_hash_from_nodes give the root of every earlier size."""
    ls = leaves(23)
    acc = merkle.CompactRange()
    stored = {(s.level, s.position): s.hash for s in acc.extend(ls)}
    for n in range(1, 24):
        hashes = [stored[node] for node in merkle.root_nodes(n)]
        assert merkle.subtree_hash_from_nodes(hashes) == merkle.root_from_leaf_hashes(ls[:n])


@pytest.mark.parametrize(
    "module",
    [
        "merkle.hashing",
        "merkle.proof",
        "merkle.verify",
        "merkle.compact",
        "merkle.stored",
        "merkle.tiles",
        "checkpoint",
        "block",
    ],
)
def test_documented_examples_run(module: str) -> None:
    """The >>> examples in the log core's docstrings run and give the output shown."""
    import doctest
    import importlib

    mod = importlib.import_module(f"referendum_core.{module}")
    result = doctest.testmod(mod, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0
    assert result.failed == 0
