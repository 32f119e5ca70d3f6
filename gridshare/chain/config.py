"""Chain selection and signing keys.

One setting chooses the chain: ``embedded`` (eth-tester with py-evm, in process; the default) or a
JSON-RPC URL (anvil, Besu). It comes from ``--rpc`` or the environment variable
``GRIDSHARE_CHAIN``.

Keys are looked up per role (``deployer``, ``oracle``, ``settler``, ``battery``, ``meter_<i>``,
``prosumer_<i>``), first match wins:

1. ``GRIDSHARE_KEY_<ROLE>`` (hex private key), e.g. ``GRIDSHARE_KEY_ORACLE``,
   ``GRIDSHARE_KEY_METER_3``;
2. a keystore file ``$GRIDSHARE_KEYSTORE_DIR/<role>.json`` decrypted with
   ``GRIDSHARE_KEYSTORE_PASSWORD`` or the first line of ``GRIDSHARE_KEYSTORE_PASSWORD_FILE``;
3. on a devnet only, the well-known development key of the role derived from the public
   mnemonic ``DEVNET_MNEMONIC`` (the one anvil and Hardhat use).

A devnet is recognised by its chain id: ``DEVNET_CHAIN_IDS`` (embedded, anvil/Hardhat, geth/Besu
dev mode, the project's Besu devnet) plus the ids listed in ``GRIDSHARE_DEVNET_CHAIN_IDS``. On
any other chain a well-known key is refused, even when given explicitly.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from eth_account import Account
from eth_account.hdaccount import key_from_seed, seed_from_mnemonic
from eth_account.hdaccount.deterministic import Node, derive_child_key
from eth_account.signers.local import LocalAccount
from eth_keys import keys

EMBEDDED = "embedded"
ENV_CHAIN = "GRIDSHARE_CHAIN"
ENV_DEPLOYMENT = "GRIDSHARE_DEPLOYMENT"
ENV_KEY_PREFIX = "GRIDSHARE_KEY_"
ENV_KEYSTORE_DIR = "GRIDSHARE_KEYSTORE_DIR"
ENV_KEYSTORE_PASSWORD = "GRIDSHARE_KEYSTORE_PASSWORD"
ENV_KEYSTORE_PASSWORD_FILE = "GRIDSHARE_KEYSTORE_PASSWORD_FILE"
ENV_DEVNET_CHAIN_IDS = "GRIDSHARE_DEVNET_CHAIN_IDS"
DEFAULT_DEPLOYMENT_FILE = "deployment.json"
#: Built-in feeder registered by ``gridshare deploy`` (it has a community battery).
DEFAULT_FEEDER = "heimschuh-like"
#: How the project runs anvil (the tests, ``bench/api.py``, README "Other chains"): Cancun rules,
#: automine plus a block every second, so a transaction the automine did not mine (it arrived
#: ahead of its nonce, or a pool refill) is still mined within a second. Add ``--state FILE`` to
#: keep the chain across restarts.
ANVIL_ARGS: tuple[str, ...] = ("--hardfork", "cancun", "--mixed-mining", "--block-time", "1")

#: The public development mnemonic of anvil and Hardhat: its keys are known to everyone.
DEVNET_MNEMONIC = "test test test test test test test test test test test junk"
DEVNET_HD_PATH = "m/44'/60'/0'/0"
#: Chain id of eth-tester's py-evm chain (fixed by eth-tester).
EMBEDDED_CHAIN_ID = 131277322940537
#: Chain id of the project's Besu QBFT devnet (gridshare/chain/devnet.py, docker-compose.yml).
GRIDSHARE_DEVNET_CHAIN_ID = 1_337_042
DEVNET_CHAIN_IDS: Mapping[int, str] = {
    EMBEDDED_CHAIN_ID: "embedded eth-tester chain",
    31337: "anvil / Hardhat",
    1337: "geth --dev / Besu dev / Ganache",
    GRIDSHARE_DEVNET_CHAIN_ID: "gridshare Besu QBFT devnet",
}

#: Devnet account index (in ``DEVNET_HD_PATH``) of each fixed role.
DEVNET_ROLE_INDEX: Mapping[str, int] = {"deployer": 0, "oracle": 1, "settler": 2, "battery": 3}
METER_BASE_INDEX = 10
PROSUMER_BASE_INDEX = 100
#: How many meter and prosumer accounts the devnets prefund (genesis of embedded and Besu).
DEVNET_FUNDED_PER_GROUP = 40
DEVNET_BALANCE_WEI = 10**24  # 1,000,000 ether

_SECP256K1_N = int("FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141", 16)
_ROLE_RE = re.compile(r"^(deployer|oracle|settler|battery|meter_\d+|prosumer_\d+)$")


class ConfigError(ValueError):
    """A missing or unusable setting (names the environment variable or file to fix)."""


@dataclass(frozen=True)
class ChainConfig:
    """How to reach the chain.

    ``chain`` is ``"embedded"`` or an ``http(s)://`` JSON-RPC URL. Times in seconds.
    ``poa`` forces (True) or disables (False) web3's ``ExtraDataToPOAMiddleware``; ``None``
    detects it from the genesis block's extraData (longer than 32 bytes on QBFT/clique chains).

    JSON-RPC requests (``gridshare.chain.client.http_provider``, web3's own
    ``ExceptionRetryConfiguration``): each attempt has ``request_timeout_s`` to connect and to
    answer; a refused, timed-out or HTTP 5xx request is sent again up to ``retries`` times, after
    ``backoff_s``, ``2 * backoff_s``, ``4 * backoff_s``... seconds; then ``ChainUnavailable``.
    """

    chain: str = EMBEDDED
    poa: bool | None = None
    request_timeout_s: float = 10.0
    retries: int = 4
    backoff_s: float = 0.25
    receipt_timeout_s: float = 60.0

    def __post_init__(self) -> None:
        if self.chain != EMBEDDED and not self.chain.startswith(("http://", "https://")):
            raise ConfigError(
                f"chain must be {EMBEDDED!r} or an http(s):// JSON-RPC URL, got {self.chain!r}"
            )
        if self.retries < 0 or self.backoff_s < 0 or self.request_timeout_s <= 0:
            raise ConfigError("retries, backoff_s must be >= 0 and request_timeout_s > 0")

    @property
    def is_embedded(self) -> bool:
        return self.chain == EMBEDDED

    @classmethod
    def from_env(
        cls, rpc: str | None = None, env: Mapping[str, str] | None = None, **kwargs: object
    ) -> ChainConfig:
        """``--rpc`` if given, else ``$GRIDSHARE_CHAIN``, else the embedded chain."""
        env = os.environ if env is None else env
        chain = rpc or env.get(ENV_CHAIN) or EMBEDDED
        return cls(chain=chain, **kwargs)  # type: ignore[arg-type]


def devnet_chain_ids(env: Mapping[str, str] | None = None) -> set[int]:
    """The chain ids treated as devnets (built-in list plus ``$GRIDSHARE_DEVNET_CHAIN_IDS``)."""
    env = os.environ if env is None else env
    ids = set(DEVNET_CHAIN_IDS)
    extra = env.get(ENV_DEVNET_CHAIN_IDS, "").strip()
    for part in filter(None, (p.strip() for p in extra.split(","))):
        try:
            ids.add(int(part, 0))
        except ValueError as exc:
            raise ConfigError(
                f"{ENV_DEVNET_CHAIN_IDS} must be a comma-separated list of integers, got {part!r}"
            ) from exc
    return ids


def is_devnet(chain_id: int, env: Mapping[str, str] | None = None) -> bool:
    """True when ``chain_id`` is a development chain where well-known keys are acceptable."""
    return int(chain_id) in devnet_chain_ids(env)


@functools.cache
def _devnet_seed() -> bytes:
    return seed_from_mnemonic(DEVNET_MNEMONIC, "")


@functools.cache
def _devnet_parent() -> tuple[int, bytes, bytes]:
    """BIP32 node at ``DEVNET_HD_PATH``: (private key, chain code, compressed public key)."""
    main = hmac.new(b"Bitcoin seed", _devnet_seed(), hashlib.sha512).digest()
    key, chain_code = main[:32], main[32:]
    for part in DEVNET_HD_PATH.split("/")[1:]:
        key, chain_code = derive_child_key(key, chain_code, Node.decode(part))
    point = keys.PrivateKey(key).public_key.to_compressed_bytes()
    return int.from_bytes(key, "big"), chain_code, point


@functools.cache
def devnet_private_key(index: int) -> bytes:
    """The well-known private key at ``DEVNET_HD_PATH/index`` of ``DEVNET_MNEMONIC``.

    One BIP32 soft-child step from the cached parent node (same result as
    ``eth_account``'s full-path ``key_from_seed``, about 100 times faster).
    """
    if not 0 <= index < 2**31:
        raise ValueError(f"devnet account index must be in 0..2**31-1, got {index}")
    parent_key, chain_code, point = _devnet_parent()
    digest = hmac.new(chain_code, point + index.to_bytes(4, "big"), hashlib.sha512).digest()
    child = (int.from_bytes(digest[:32], "big") + parent_key) % _SECP256K1_N
    if int.from_bytes(digest[:32], "big") >= _SECP256K1_N or child == 0:  # p < 2**-127
        return key_from_seed(_devnet_seed(), f"{DEVNET_HD_PATH}/{index}")
    return child.to_bytes(32, "big")


def devnet_account(index: int) -> LocalAccount:
    """The well-known devnet account at ``index``."""
    return Account.from_key(devnet_private_key(index))


def devnet_role_index(role: str) -> int:
    """Devnet account index of a role name (``oracle``, ``meter_3``, ``prosumer_0``...)."""
    check_role(role)
    if role in DEVNET_ROLE_INDEX:
        return DEVNET_ROLE_INDEX[role]
    group, _, number = role.partition("_")
    base = METER_BASE_INDEX if group == "meter" else PROSUMER_BASE_INDEX
    return base + int(number)


def devnet_funded_indices() -> list[int]:
    """Account indices prefunded by the embedded chain and the Besu devnet genesis."""
    return (
        list(range(METER_BASE_INDEX))
        + list(range(METER_BASE_INDEX, METER_BASE_INDEX + DEVNET_FUNDED_PER_GROUP))
        + list(range(PROSUMER_BASE_INDEX, PROSUMER_BASE_INDEX + DEVNET_FUNDED_PER_GROUP))
    )


@functools.cache
def _well_known_addresses(count: int = 200) -> frozenset[str]:
    """Addresses of the first ``count`` devnet indices (to refuse them off devnets)."""
    return frozenset(devnet_account(i).address for i in range(count))


def is_well_known(address: str) -> bool:
    """True when ``address`` belongs to a well-known devnet key (indices 0..199)."""
    return address in _well_known_addresses()


def check_role(role: str) -> str:
    """Validate a role name; returns it."""
    if not _ROLE_RE.match(role):
        raise ConfigError(
            f"unknown role {role!r}: expected deployer, oracle, settler, battery, meter_<i> "
            "or prosumer_<i>"
        )
    return role


def role_env_var(role: str) -> str:
    """Environment variable holding the hex private key of ``role``."""
    return ENV_KEY_PREFIX + check_role(role).upper()


def _keystore_password(env: Mapping[str, str]) -> str:
    if ENV_KEYSTORE_PASSWORD in env:
        return env[ENV_KEYSTORE_PASSWORD]
    if ENV_KEYSTORE_PASSWORD_FILE in env:
        path = Path(env[ENV_KEYSTORE_PASSWORD_FILE])
        try:
            text = path.read_text()
        except OSError as exc:
            raise ConfigError(f"{ENV_KEYSTORE_PASSWORD_FILE}: cannot read {path}: {exc}") from exc
        return text.splitlines()[0] if text else ""
    raise ConfigError(
        f"a keystore needs {ENV_KEYSTORE_PASSWORD} or {ENV_KEYSTORE_PASSWORD_FILE} to be set"
    )


class KeyRing:
    """Resolves the signing account of each role for one chain (see module docstring)."""

    def __init__(self, chain_id: int, env: Mapping[str, str] | None = None) -> None:
        self.chain_id = int(chain_id)
        self._env = dict(os.environ if env is None else env)
        self.devnet = is_devnet(self.chain_id, self._env)
        self._cache: dict[str, LocalAccount] = {}

    def account(self, role: str) -> LocalAccount:
        """The account signing for ``role``; raises ``ConfigError`` naming what to set."""
        check_role(role)
        if role not in self._cache:
            account, source = self._resolve(role)
            if not self.devnet and is_well_known(account.address):
                raise ConfigError(
                    f"{source} holds a well-known development key ({account.address}); it is "
                    f"refused on chain id {self.chain_id}, which is not a devnet "
                    f"(add it to {ENV_DEVNET_CHAIN_IDS} only if it really is one)"
                )
            self._cache[role] = account
        return self._cache[role]

    def address(self, role: str) -> str:
        """Checksum address of ``role``."""
        return self.account(role).address

    def _resolve(self, role: str) -> tuple[LocalAccount, str]:
        var = role_env_var(role)
        if self._env.get(var):
            try:
                return Account.from_key(self._env[var].strip()), var
            except (ValueError, TypeError) as exc:
                raise ConfigError(f"{var} is not a valid hex private key: {exc}") from exc
        keystore_dir = self._env.get(ENV_KEYSTORE_DIR)
        if keystore_dir:
            path = Path(keystore_dir) / f"{role}.json"
            if path.exists():
                try:
                    keyfile = json.loads(path.read_text())
                    key = Account.decrypt(keyfile, _keystore_password(self._env))
                except (ValueError, OSError) as exc:
                    raise ConfigError(f"keystore {path}: cannot decrypt: {exc}") from exc
                return Account.from_key(key), str(path)
        if self.devnet:
            return devnet_account(devnet_role_index(role)), f"devnet key of {role}"
        where = f" or {Path(keystore_dir) / (role + '.json')}" if keystore_dir else ""
        raise ConfigError(
            f"no key for role {role!r} on chain id {self.chain_id} (not a devnet): set {var}"
            f"{where} (or {ENV_KEYSTORE_DIR} with {role}.json)"
        )


def write_keystore(
    path: Path, private_key: bytes | str, password: str, kdf: str | None = None,
    iterations: int | None = None,
) -> Path:
    """Write an encrypted V3 keystore file (default: eth_account's scrypt parameters)."""
    keyfile = Account.encrypt(private_key, password, kdf=kdf, iterations=iterations)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(keyfile))
    return path
