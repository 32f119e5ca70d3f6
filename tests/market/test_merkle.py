"""The order commitment: hand-computed roots, proofs for every leaf, order independence."""

from __future__ import annotations

import random

import pytest
from eth_utils import keccak
from hypothesis import given, settings
from hypothesis import strategies as st

from market.merkle import EMPTY_ROOT, hash_pair, merkle_proof, merkle_root, verify_proof


def _leaf(i: int) -> bytes:
    return keccak(i.to_bytes(32, "big"))


def test_empty_single_and_pair_by_hand():
    a, b = sorted([_leaf(1), _leaf(2)])
    assert merkle_root([]) == EMPTY_ROOT == b"\0" * 32
    assert merkle_root([a]) == a
    assert merkle_root([b, a]) == keccak(a + b)


def test_three_leaves_carry_the_odd_one_up():
    a, b, c = sorted(_leaf(i) for i in range(3))
    assert merkle_root([c, a, b]) == hash_pair(keccak(a + b), c)


def test_five_leaves_by_hand():
    a, b, c, d, e = sorted(_leaf(i) for i in range(5))
    ab, cd = hash_pair(a, b), hash_pair(c, d)
    assert merkle_root([e, d, c, b, a]) == hash_pair(hash_pair(ab, cd), e)


def test_hash_pair_is_commutative():
    assert hash_pair(_leaf(1), _leaf(2)) == hash_pair(_leaf(2), _leaf(1))


@settings(max_examples=30, deadline=None)
@given(n=st.integers(1, 40), seed=st.integers(0, 2**32))
def test_every_leaf_has_a_valid_proof_and_order_is_irrelevant(n, seed):
    leaves = [_leaf(seed * 1000 + i) for i in range(n)]
    root = merkle_root(leaves)
    shuffled = leaves[:]
    random.Random(seed).shuffle(shuffled)
    assert merkle_root(shuffled) == root
    for leaf in leaves:
        assert verify_proof(merkle_proof(leaves, leaf), root, leaf)
    assert not verify_proof(merkle_proof(leaves, leaves[0]), root, _leaf(-1 % 2**32 + seed))


def test_changing_a_leaf_changes_the_root():
    leaves = [_leaf(i) for i in range(6)]
    assert merkle_root(leaves) != merkle_root([*leaves[:5], _leaf(99)])
    assert merkle_root(leaves) != merkle_root(leaves[:5])


def test_bad_leaves_are_refused():
    with pytest.raises(ValueError, match="32 bytes"):
        merkle_root([b"\x01" * 31])
    with pytest.raises(ValueError, match="duplicate"):
        merkle_root([_leaf(1), _leaf(1)])
    with pytest.raises(ValueError, match="not among"):
        merkle_proof([_leaf(1)], _leaf(2))


def test_both_keccak_backends_agree_with_eth_utils(monkeypatch):
    import sys

    from market import merkle

    data = b"gridshare" * 7
    assert merkle.keccak(data) == keccak(data)
    monkeypatch.setitem(sys.modules, "sha3", None)  # force the pycryptodome fallback
    assert merkle._keccak_impl()(data) == keccak(data)
