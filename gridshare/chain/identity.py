"""Is this still the chain we deployed to? Chain id, genesis hash and contract code.

A node that restarted empty (anvil without its state, a devnet wiped and started again) answers
on the same URL with the same chain id, but it is another chain: its blocks, and with them every
cursor, block hash and transaction a service recorded, are gone, and the contracts are gone or
are others. A service that keeps state about the chain (the oracle's store, the order relay)
records a :class:`ChainIdentity` once and compares the node with it before it trusts anything it
reads (:func:`check_identity`): a different chain id or genesis hash, or a contract whose code is
missing or changed, raises :class:`ChainResetError` with one line that says what differs and
what to do. Nothing is deleted: the caller stops and keeps its state for inspection.

The genesis hash alone does not tell a devnet wiped and started again from the same genesis file
(Besu QBFT from ``docker compose down -v``), where the deployer redeploys to the same addresses
the same code: the identity therefore also records the hash of an *anchor* block, the
deployment's block, which differs on a new chain (its timestamp does). A check costs three
requests (chain id, the genesis and the anchor block; ``eth_getCode`` per contract only without
an anchor).

:func:`client_name` tells which node answers (``web3_clientVersion``): callers choose defaults by
it (confirmations, whether the clock can be moved).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from eth_utils import keccak, to_checksum_address
from hexbytes import HexBytes
from web3.exceptions import BlockNotFound

from gridshare.chain.errors import ChainError

NO_CODE = "none"
"""``code_hashes`` value of an address without contract code."""


class ChainResetError(ChainError):
    """The node is not the chain a service recorded (reset, wiped, or another chain)."""


@dataclass(frozen=True)
class ChainIdentity:
    """What identifies a deployment's chain: chain id, genesis block hash (0x hex) and the
    keccak-256 of each contract's runtime code (0x hex, or ``NO_CODE``), by address."""

    chain_id: int
    genesis_hash: str
    code_hashes: Mapping[str, str]
    anchor_block: int = 0
    anchor_hash: str = ""

    def as_meta(self) -> dict[str, str]:
        """Flat string key/values for a store's ``meta`` table."""
        out = {"chain_id": str(self.chain_id), "genesis_hash": self.genesis_hash,
               "anchor_block": str(self.anchor_block), "anchor_hash": self.anchor_hash}
        out.update({f"code_hash:{a}": h for a, h in sorted(self.code_hashes.items())})
        return out

    @classmethod
    def from_meta(cls, meta: Mapping[str, str]) -> ChainIdentity | None:
        """The identity recorded by :meth:`as_meta` (None if none was recorded)."""
        if "genesis_hash" not in meta or "chain_id" not in meta:
            return None
        codes = {k.split(":", 1)[1]: v for k, v in meta.items() if k.startswith("code_hash:")}
        return cls(int(meta["chain_id"]), str(meta["genesis_hash"]), codes,
                   int(meta.get("anchor_block", 0)), str(meta.get("anchor_hash", "")))


def code_hash(chain: Any, address: str) -> str:
    """keccak-256 of the runtime code at ``address`` (0x hex), ``NO_CODE`` when it has none."""
    code = bytes(chain.w3.eth.get_code(to_checksum_address(address)))
    return NO_CODE if not code else "0x" + keccak(code).hex()


def block_hash(chain: Any, number: int) -> str:
    """Hash of block ``number`` (0x hex), "" when the chain has no such block."""
    try:
        return HexBytes(chain.w3.eth.get_block(int(number))["hash"]).to_0x_hex()
    except BlockNotFound:
        return ""


def read_identity(chain: Any, addresses: list[str], anchor_block: int = 0) -> ChainIdentity:
    """The node's identity now, with the code hashes of ``addresses`` and the hash of block
    ``anchor_block`` (the deployment's block)."""
    return ChainIdentity(int(chain.w3.eth.chain_id), block_hash(chain, 0),
                         {to_checksum_address(a): code_hash(chain, a) for a in addresses},
                         int(anchor_block), block_hash(chain, anchor_block))


def identity_problems(expected: ChainIdentity, found: ChainIdentity,
                      check_code: bool = True) -> list[str]:
    """What differs between a recorded identity and the node's (empty: the same chain); the
    contracts' code only with ``check_code``."""
    problems = []
    if found.chain_id != expected.chain_id:
        problems.append(f"chain id {found.chain_id}, recorded {expected.chain_id}")
    if found.genesis_hash != expected.genesis_hash:
        problems.append(f"genesis block {found.genesis_hash[:10]}, recorded "
                        f"{expected.genesis_hash[:10]}")
    elif expected.anchor_hash and found.anchor_hash != expected.anchor_hash:
        problems.append(f"block {expected.anchor_block} is "
                        f"{found.anchor_hash[:10] or 'missing'}, recorded "
                        f"{expected.anchor_hash[:10]}")
    for address, recorded in expected.code_hashes.items() if check_code else ():
        now = found.code_hashes.get(address, NO_CODE)
        if now == NO_CODE:
            problems.append(f"no contract code at {address}")
        elif now != recorded:
            problems.append(f"other contract code at {address}")
    return problems


def check_identity(chain: Any, expected: ChainIdentity, store_hint: str = "") -> None:
    """Raise :class:`ChainResetError` (one line) unless the node is the ``expected`` chain.

    With an anchor block recorded, its unchanged hash implies the unchanged contracts created
    up to it (their code cannot change later), so only the chain id and the two block hashes are
    read; without one, the code hashes too. ``store_hint`` names what the caller keeps (e.g.
    "the oracle store x.sqlite is kept").
    """
    found = ChainIdentity(int(chain.w3.eth.chain_id), block_hash(chain, 0), {},
                          expected.anchor_block, block_hash(chain, expected.anchor_block))
    problems = identity_problems(expected, found, check_code=False)
    if not problems and not expected.anchor_hash:
        found = read_identity(chain, list(expected.code_hashes), expected.anchor_block)
        problems = identity_problems(expected, found)
    if problems:
        hint = f"; {store_hint}" if store_hint else ""
        raise ChainResetError(
            f"chain reset: the node at {chain_url(chain)} is not the deployment's chain "
            f"({'; '.join(problems)}): it restarted empty or is another chain; deploy again "
            f"and start with a new store{hint}")


def chain_url(chain: Any) -> str:
    """The node's URL, or "embedded"."""
    return "embedded" if chain.is_embedded else str(chain.config.chain)


def client_name(chain: Any) -> str:
    """The node's client, lower case: "embedded", "anvil", "hardhat", "besu", "geth", ... (the
    first word of ``web3_clientVersion``; "unknown" when the node does not say)."""
    if chain.is_embedded:
        return "embedded"
    response = chain.w3.provider.make_request("web3_clientVersion", [])
    version = str(response.get("result") or "unknown")
    return version.split("/", 1)[0].split(" ", 1)[0].lower()
