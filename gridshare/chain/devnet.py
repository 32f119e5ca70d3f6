"""Files of the Besu QBFT devnet run by ``docker-compose.yml``.

``generate(out_dir)`` writes:

* ``genesis.json``: QBFT (``blockperiodseconds`` 2), every fork up to Cancun active at genesis
  (``shanghaiTime``/``cancunTime`` 0), ``zeroBaseFee``, the well-known devnet accounts of
  ``config`` prefunded, and ``extraData = RLP([32-byte vanity, [validators], [], 0, []])``
  (vanity, validator addresses, no vote, round 0, no seals);
* ``validator-<i>/key`` (node private key, hex), ``key.pub``, ``address`` for each validator, and
  ``rpc/key`` for the RPC node;
* ``static-nodes.json`` (enode URLs of the validators at the fixed compose IPs) and
  ``bootnodes.txt`` (the same, comma-separated);
* ``devnet.json``: a summary (chain id, validators, enodes, RPC URL, funded dev accounts).

Node keys are random, or derived from ``seed`` (reproducible). The IP layout must match the
``gridshare`` network of docker-compose.yml (``tests/chain/test_devnet.py`` checks it).
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import rlp
from eth_keys import keys
from eth_utils import keccak, to_bytes, to_checksum_address

from gridshare.chain.config import (
    DEVNET_BALANCE_WEI,
    GRIDSHARE_DEVNET_CHAIN_ID,
    devnet_account,
    devnet_funded_indices,
)

VALIDATOR_COUNT = 4
SUBNET = "172.30.42.0/24"
VALIDATOR_IP_BASE = "172.30.42.1"  # validator i (1-based) at 172.30.42.1<i>
RPC_IP = "172.30.42.20"
P2P_PORT = 30303
RPC_PORT = 8545
BLOCK_PERIOD_S = 2
EPOCH_LENGTH = 30_000
REQUEST_TIMEOUT_S = 4
GAS_LIMIT = 50_000_000
VANITY = b"\x00" * 32
#: IBFT/QBFT genesis mixHash ("Istanbul digest", required by Besu's BFT protocols).
BFT_MIX_HASH = "0x63746963616c2062797a616e74696e65206661756c7420746f6c6572616e6365"
_SECP256K1_N = int("FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141", 16)
GENESIS_FILES = ("genesis.json", "static-nodes.json", "bootnodes.txt", "devnet.json")


@dataclass(frozen=True)
class Node:
    """One Besu node: name, private key, address, enode URL."""

    name: str
    private_key: bytes
    ip: str

    @property
    def public_key_hex(self) -> str:
        """Uncompressed public key, 128 hex characters (no 0x, no 04 prefix)."""
        return keys.PrivateKey(self.private_key).public_key.to_hex()[2:]

    @property
    def address(self) -> str:
        return keys.PrivateKey(self.private_key).public_key.to_checksum_address()

    @property
    def enode(self) -> str:
        return f"enode://{self.public_key_hex}@{self.ip}:{P2P_PORT}"


def validator_ip(index: int) -> str:
    """Fixed compose IP of validator ``index`` (1-based)."""
    if not 1 <= index <= 9:
        raise ValueError(f"validator index must be in 1..9, got {index}")
    return f"{VALIDATOR_IP_BASE}{index}"


def qbft_extra_data(validators: Sequence[str], vanity: bytes = VANITY) -> str:
    """QBFT genesis extraData: hex of RLP([vanity(32), [validators], [] (no vote), 0, []])."""
    if len(vanity) != 32:
        raise ValueError(f"vanity must be 32 bytes, got {len(vanity)}")
    if not validators:
        raise ValueError("QBFT needs at least one validator")
    addresses = [to_bytes(hexstr=v) for v in validators]
    bad = [v for v, a in zip(validators, addresses, strict=True) if len(a) != 20]
    if bad:
        raise ValueError(f"validator addresses must be 20 bytes: {bad}")
    return "0x" + rlp.encode([vanity, addresses, [], 0, []]).hex()


def decode_qbft_extra_data(extra_data: str) -> list[str]:
    """Validator addresses (checksummed) in a QBFT extraData; checks the 5-field layout."""
    fields = rlp.decode(to_bytes(hexstr=extra_data))
    if not isinstance(fields, list) or len(fields) != 5:
        raise ValueError("QBFT extraData must be an RLP list of 5 fields")
    vanity, validators, vote, round_number, seals = fields
    if len(vanity) != 32:
        raise ValueError(f"QBFT vanity must be 32 bytes, got {len(vanity)}")
    if vote != [] or seals != [] or round_number not in (b"", b"\x00"):
        raise ValueError("genesis QBFT extraData must have no vote, round 0 and no seals")
    return [to_checksum_address(v) for v in validators]


def _node_key(seed: int | None, label: str) -> bytes:
    if seed is None:
        while True:
            key = secrets.token_bytes(32)
            if 0 < int.from_bytes(key, "big") < _SECP256K1_N:
                return key
    counter = 0
    while True:
        key = keccak(text=f"gridshare-devnet/{seed}/{label}/{counter}")
        if 0 < int.from_bytes(key, "big") < _SECP256K1_N:
            return key
        counter += 1


def make_nodes(n_validators: int = VALIDATOR_COUNT, seed: int | None = None) -> list[Node]:
    """``n_validators`` validator nodes plus the RPC node (last)."""
    if not 1 <= n_validators <= 9:
        raise ValueError(f"n_validators must be in 1..9, got {n_validators}")
    nodes = [
        Node(f"validator-{i}", _node_key(seed, f"validator-{i}"), validator_ip(i))
        for i in range(1, n_validators + 1)
    ]
    nodes.append(Node("rpc", _node_key(seed, "rpc"), RPC_IP))
    return nodes


def genesis(
    validators: Sequence[str],
    chain_id: int = GRIDSHARE_DEVNET_CHAIN_ID,
    funded: Sequence[str] | None = None,
    balance_wei: int = DEVNET_BALANCE_WEI,
    gas_limit: int = GAS_LIMIT,
) -> dict:
    """The Besu QBFT genesis document (see module docstring)."""
    if chain_id <= 0:
        raise ValueError(f"chain_id must be positive, got {chain_id}")
    if funded is None:
        funded = [devnet_account(i).address for i in devnet_funded_indices()]
    forks = ["homesteadBlock", "eip150Block", "eip155Block", "eip158Block", "byzantiumBlock",
             "constantinopleBlock", "petersburgBlock", "istanbulBlock", "muirGlacierBlock",
             "berlinBlock", "londonBlock"]
    config: dict = {"chainId": int(chain_id), **{fork: 0 for fork in forks},
                    "shanghaiTime": 0, "cancunTime": 0, "zeroBaseFee": True,
                    "qbft": {"blockperiodseconds": BLOCK_PERIOD_S, "epochlength": EPOCH_LENGTH,
                             "requesttimeoutseconds": REQUEST_TIMEOUT_S}}
    return {
        "config": config,
        "nonce": "0x0",
        "timestamp": "0x0",
        "gasLimit": hex(gas_limit),
        "difficulty": "0x1",
        "mixHash": BFT_MIX_HASH,
        "coinbase": "0x" + "00" * 20,
        "extraData": qbft_extra_data(validators),
        "alloc": {a[2:].lower(): {"balance": hex(balance_wei)} for a in funded},
    }


def generate(
    out_dir: Path,
    n_validators: int = VALIDATOR_COUNT,
    chain_id: int = GRIDSHARE_DEVNET_CHAIN_ID,
    seed: int | None = None,
    force: bool = False,
) -> dict:
    """Write the devnet files into ``out_dir``; returns the summary (also in devnet.json).

    Refuses to overwrite an existing devnet (its node keys) unless ``force``.
    """
    out_dir = Path(out_dir)
    if (out_dir / "genesis.json").exists() and not force:
        raise FileExistsError(f"{out_dir / 'genesis.json'} exists (use --force to replace)")
    nodes = make_nodes(n_validators, seed)
    validators, rpc_node = nodes[:-1], nodes[-1]
    out_dir.mkdir(parents=True, exist_ok=True)
    for node in nodes:
        node_dir = out_dir / node.name
        node_dir.mkdir(exist_ok=True)
        (node_dir / "key").write_text("0x" + node.private_key.hex())
        (node_dir / "key").chmod(0o600)
        (node_dir / "key.pub").write_text("0x" + node.public_key_hex)
        (node_dir / "address").write_text(node.address)
    doc = genesis([v.address for v in validators], chain_id)
    (out_dir / "genesis.json").write_text(json.dumps(doc, indent=2) + "\n")
    enodes = [v.enode for v in validators]
    (out_dir / "static-nodes.json").write_text(json.dumps(enodes, indent=2) + "\n")
    (out_dir / "bootnodes.txt").write_text(",".join(enodes) + "\n")
    summary = {
        "chain_id": chain_id,
        "consensus": "qbft",
        "block_period_s": BLOCK_PERIOD_S,
        "validators": [{"name": v.name, "address": v.address, "enode": v.enode, "ip": v.ip}
                       for v in validators],
        "rpc": {"name": rpc_node.name, "enode": rpc_node.enode, "ip": rpc_node.ip,
                "url_on_host": f"http://127.0.0.1:{RPC_PORT}",
                "url_in_compose": f"http://rpc:{RPC_PORT}"},
        "funded_accounts": [to_checksum_address("0x" + a) for a in doc["alloc"]],
        "note": "funded accounts use the public development mnemonic: devnet only",
    }
    (out_dir / "devnet.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary
