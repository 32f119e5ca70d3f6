"""The order commitment of an interval (docs/interfaces.md, "Order commitment").

Leaves are the orders' 32-byte EIP-712 digests sorted ascending; a parent is
``keccak256(min(a, b) ++ max(a, b))`` (OpenZeppelin ``MerkleProof`` commutative hashing); an odd
node at the end of a level is carried up unchanged; the root of no orders is 32 zero bytes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

EMPTY_ROOT = b"\0" * 32


def _keccak_impl() -> Callable[[bytes], bytes]:
    """keccak256 without eth_utils' per-call checks (a commitment hashes ~n leaves).

    ``sha3.keccak_256`` (PyPI ``safe-pysha3``, about 3x faster) when installed, else
    pycryptodome's (always present: eth-account depends on it). Both are keccak256.
    """
    try:
        from sha3 import keccak_256  # type: ignore[import-not-found]

        return lambda data: keccak_256(data).digest()
    except ImportError:
        from Crypto.Hash import keccak as _k

        return lambda data: _k.new(digest_bits=256, data=data).digest()


keccak = _keccak_impl()


def _check_leaves(leaves: Iterable[bytes]) -> list[bytes]:
    out = [bytes(leaf) for leaf in leaves]
    for leaf in out:
        if len(leaf) != 32:
            raise ValueError(f"a Merkle leaf must be 32 bytes, got {len(leaf)}")
    if len(set(out)) != len(out):
        raise ValueError("duplicate order digest among the Merkle leaves")
    return sorted(out)


def hash_pair(a: bytes, b: bytes) -> bytes:
    """Commutative parent hash ``keccak256(min ++ max)``."""
    return keccak(a + b if a <= b else b + a)


def _levels(leaves: list[bytes]) -> list[list[bytes]]:
    levels = [leaves]
    while len(levels[-1]) > 1:
        level = levels[-1]
        parent = [hash_pair(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            parent.append(level[-1])
        levels.append(parent)
    return levels


def merkle_root(digests: Iterable[bytes]) -> bytes:
    """Root of the commitment over ``digests`` (order irrelevant; duplicates rejected)."""
    leaves = _check_leaves(digests)
    if not leaves:
        return EMPTY_ROOT
    return _levels(leaves)[-1][0]


def merkle_proof(digests: Iterable[bytes], leaf: bytes) -> list[bytes]:
    """Sibling path proving ``leaf`` is in the commitment (OpenZeppelin ``verify`` format)."""
    leaves = _check_leaves(digests)
    if leaf not in leaves:
        raise ValueError("leaf is not among the committed digests")
    index = leaves.index(leaf)
    proof: list[bytes] = []
    for level in _levels(leaves)[:-1]:
        sibling = index ^ 1
        if sibling < len(level):
            proof.append(level[sibling])
        index //= 2
    return proof


def verify_proof(proof: Iterable[bytes], root: bytes, leaf: bytes) -> bool:
    """OpenZeppelin ``MerkleProof.verify``: fold the proof into the leaf and compare."""
    node = bytes(leaf)
    for sibling in proof:
        node = hash_pair(node, bytes(sibling))
    return node == bytes(root)
