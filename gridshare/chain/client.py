"""Connection to the chain and signed transactions.

``connect(ChainConfig)`` returns a ``Chain`` for the embedded chain (eth-tester + py-evm, Cancun
rules, devnet accounts prefunded) or for any JSON-RPC URL (anvil, Besu: one code path). Every
transaction is signed locally with a private key and sent raw:

* nonces come from a per-address ``NonceManager`` (thread-safe; resyncs from the node's pending
  count after any failed send); ``Chain.resend`` signs a sent transaction again with its nonce
  (re-broadcast, or replacement with ``bumped_fees``);
* gas is estimated first, so a revert surfaces before a nonce is used; with an explicit ``gas`` a
  reverted transaction is mined with status 0, which ``Chain.transact`` turns into the same
  ``ContractRevert`` by replaying the call with ``eth_call`` on the state before its block;
* failed requests are retried by web3's own ``ExceptionRetryConfiguration`` (exponential
  backoff, ``http_provider``); a dead node raises ``ChainUnavailable``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import coincurve
import requests
from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_utils import keccak, to_checksum_address
from hexbytes import HexBytes
from web3 import EthereumTesterProvider, Web3
from web3.contract import Contract
from web3.exceptions import TimeExhausted, TransactionNotFound, Web3RPCError
from web3.logs import DISCARD
from web3.middleware import ExtraDataToPOAMiddleware
from web3.providers.rpc import HTTPProvider
from web3.providers.rpc.utils import (
    REQUEST_RETRY_ALLOWLIST,
    ExceptionRetryConfiguration,
    check_if_retry_on_failure,
)
from web3.types import RPCEndpoint, RPCResponse, TxReceipt

from gridshare.chain.backoff import Backoff, sleep
from gridshare.chain.config import (
    DEVNET_BALANCE_WEI,
    ChainConfig,
    KeyRing,
    devnet_funded_indices,
    devnet_private_key,
)
from gridshare.chain.errors import (
    ChainError,
    ChainUnavailable,
    ContractRevert,
    ErrorDecoder,
    TransactionRejected,
    TransactionTimeout,
    to_chain_error,
)
from gridshare.chain.events import block_windows

log = logging.getLogger(__name__)

GAS_BUFFER = 1.2
GAS_EXTRA = 5_000
MAX_SEND_ATTEMPTS = 2
#: Gas limit of every embedded-chain transaction (one transaction per block there).
EMBEDDED_TX_GAS = 25_000_000
EXTRA_DATA_PLAIN_BYTES = 32
#: Failures web3 retries: no connection, a timeout, HTTP 5xx (4xx never gets that far).
RETRIED_ERRORS = (requests.ConnectionError, requests.Timeout, requests.HTTPError)
#: Methods web3 retries (a prefix such as "evm" covers its namespace).
RETRY_METHODS = (*REQUEST_RETRY_ALLOWLIST, "eth_feeHistory")

Sender = LocalAccount | str


# --------------------------------------------------------------------------- providers
def _refuse_client_errors(response: requests.Response, *_args: Any, **_kwargs: Any) -> None:
    """``requests`` response hook: an HTTP 4xx answer raises ``ChainError`` at once (a wrong URL
    or credentials do not heal by retrying); 5xx is left to web3's retries."""
    if 400 <= response.status_code < 500:
        body = response.text[:500]
        response.close()
        raise ChainError(f"RPC node at {response.url} answered HTTP {response.status_code} "
                         f"{response.reason}: {body}")


class ChainHTTPProvider(HTTPProvider):
    """web3's ``HTTPProvider`` with its own ``ExceptionRetryConfiguration``; a request that still
    fails after the retries raises ``ChainUnavailable`` (see :func:`http_provider`)."""

    def make_request(self, method: RPCEndpoint, params: Any) -> RPCResponse:
        try:
            return super().make_request(method, params)
        except RETRIED_ERRORS as exc:
            raise ChainUnavailable(str(self.endpoint_uri), self.attempts(method), exc) from exc

    def attempts(self, method: RPCEndpoint) -> int:
        """How many times ``method`` is sent before giving up (1 outside the allow-list)."""
        retry = self.exception_retry_configuration
        if not check_if_retry_on_failure(method, retry.method_allowlist):
            return 1
        return int(retry.retries)


def http_provider(config: ChainConfig) -> ChainHTTPProvider:
    """The JSON-RPC provider of ``config``: web3 retries a failed request (refused, timed out,
    HTTP 5xx) ``config.retries`` times after ``backoff_s * 2**i`` seconds, each attempt with the
    ``request_timeout_s`` connect/read timeout, then ``ChainUnavailable``; HTTP 4xx is a
    ``ChainError`` at once.

    Retried methods: web3's allow-list (reads, ``evm_*`` and ``eth_sendRawTransaction``, which is
    idempotent: the same signed bytes have the same hash and ``Chain.send`` takes "already known"
    as success) plus ``eth_feeHistory``; any other method is sent once.
    """
    retry = ExceptionRetryConfiguration(
        errors=RETRIED_ERRORS, retries=config.retries + 1, backoff_factor=config.backoff_s,
        method_allowlist=RETRY_METHODS,
    )
    return ChainHTTPProvider(
        config.chain,
        request_kwargs={"timeout": config.request_timeout_s,
                        "hooks": {"response": [_refuse_client_errors]}},
        exception_retry_configuration=retry,
    )


# --------------------------------------------------------------------------- fast signing
def _rlp(item: int | bytes | list[Any]) -> bytes:
    """RLP encoding of an int (big-endian, no leading zeros), bytes or a list of them."""
    if isinstance(item, list):
        body = b"".join(_rlp(x) for x in item)
        return _rlp_length(len(body), 0xC0) + body
    if isinstance(item, int):
        item = item.to_bytes((item.bit_length() + 7) // 8, "big")
    if len(item) == 1 and item[0] < 0x80:
        return bytes(item)
    return _rlp_length(len(item), 0x80) + bytes(item)


def _rlp_length(n: int, offset: int) -> bytes:
    if n < 56:
        return bytes([offset + n])
    size = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([offset + 55 + len(size)]) + size


def sign_transaction_fast(key: coincurve.PrivateKey, tx: Mapping[str, Any]) -> tuple[bytes, bytes]:
    """(raw transaction, hash) of ``tx`` signed by ``key``: byte for byte what
    ``eth_account``'s ``sign_transaction`` gives (RFC 6979 signatures, tested), about five
    times faster. EIP-1559 (``maxFeePerGas``) or EIP-155 legacy (``gasPrice``) transactions
    without access lists; ``to`` absent or empty deploys."""
    to = bytes(HexBytes(tx.get("to") or b""))
    data = bytes(HexBytes(tx.get("data") or b""))
    if "maxFeePerGas" in tx:
        fields: list[Any] = [int(tx["chainId"]), int(tx["nonce"]),
                             int(tx["maxPriorityFeePerGas"]), int(tx["maxFeePerGas"]),
                             int(tx["gas"]), to, int(tx.get("value", 0)), data, []]
        signature = key.sign_recoverable(keccak(b"\x02" + _rlp(fields)), hasher=None)
        v = signature[64]
        prefix = b"\x02"
    else:
        fields = [int(tx["nonce"]), int(tx["gasPrice"]), int(tx["gas"]), to,
                  int(tx.get("value", 0)), data]
        signature = key.sign_recoverable(
            keccak(_rlp([*fields, int(tx["chainId"]), 0, 0])), hasher=None)
        v = signature[64] + 35 + 2 * int(tx["chainId"])
        prefix = b""
    raw = prefix + _rlp([*fields, v, int.from_bytes(signature[:32], "big"),
                         int.from_bytes(signature[32:64], "big")])
    return raw, keccak(raw)


_ETH_TESTER_NONCE = re.compile(r"invalid transaction nonce: expected (\d+), but got (\d+)")


def nonce_taken(message: str) -> bool:
    """True when a node's refusal says the transaction's nonce is used already (geth/anvil
    "nonce too low", Besu NONCE_TOO_LOW, eth-tester "Expected n, but got m" with m < n)."""
    text = message.lower()
    if any(p in text for p in ("nonce too low", "nonce is too low", "nonce_too_low")):
        return True
    found = _ETH_TESTER_NONCE.search(text)
    return found is not None and int(found.group(2)) < int(found.group(1))


def bumped_fees(old: Mapping[str, Any], fresh: Mapping[str, int], factor: float) -> dict[str, int]:
    """Fees for a replacement of a transaction with fees ``old``: each fee field ``factor``
    times the old one (nodes want >= 10 % more to replace), or the ``fresh`` quote when that is
    higher. Wei."""
    out = {}
    for key in ("gasPrice", "maxFeePerGas", "maxPriorityFeePerGas"):
        if key in old:
            out[key] = max(int(int(old[key]) * factor) + 1, int(fresh.get(key, 0)))
    if "maxFeePerGas" in out:
        out["maxFeePerGas"] = max(out["maxFeePerGas"], out["maxPriorityFeePerGas"])
    return out


class LockedEthereumTesterProvider(EthereumTesterProvider):
    """eth-tester provider made safe for concurrent senders (one request at a time)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._request_lock = threading.RLock()

    def make_request(self, method: RPCEndpoint, params: Any) -> Any:
        with self._request_lock:
            return super().make_request(method, params)


def embedded_web3() -> Web3:
    """A fresh in-process chain: py-evm with Cancun rules, devnet accounts prefunded."""
    from eth.vm.forks import CancunVM
    from eth_tester import EthereumTester, PyEVMBackend
    from eth_tester.backends.pyevm.main import get_default_account_state

    from gridshare.chain import pyevm_index

    pyevm_index.install()  # receipts and logs by hash without a scan of the whole chain
    state = {
        Account.from_key(devnet_private_key(i)).address: get_default_account_state(
            {"balance": DEVNET_BALANCE_WEI}
        )
        for i in devnet_funded_indices()
    }
    genesis_state = {bytes(HexBytes(address)): account for address, account in state.items()}
    backend = PyEVMBackend(genesis_state=genesis_state, vm_configuration=((0, CancunVM),))
    w3 = Web3(LockedEthereumTesterProvider(EthereumTester(backend)))
    # eth_call without "from" would use eth-tester's own (here unfunded) default account
    w3.eth.default_account = Account.from_key(devnet_private_key(0)).address
    return w3


def needs_poa_middleware(w3: Web3) -> bool:
    """True when the genesis block's extraData is longer than 32 bytes (QBFT, IBFT, clique)."""
    response = w3.provider.make_request(RPCEndpoint("eth_getBlockByNumber"), ["0x0", False])
    block = response.get("result") or {}
    extra = HexBytes(block.get("extraData") or "0x")
    return len(extra) > EXTRA_DATA_PLAIN_BYTES


# --------------------------------------------------------------------------- nonces
class NonceManager:
    """Hands out consecutive nonces per address; safe for concurrent senders.

    ``reserve(address)`` holds the address's lock while the transaction is signed and sent, so
    nonces leave in order. A failed send (any exception inside the block) forgets the cached
    value: the next reservation re-reads the node's pending transaction count.
    """

    def __init__(self, fetch_pending: Callable[[str], int]) -> None:
        self._fetch = fetch_pending
        self._next: dict[str, int] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    def _lock(self, address: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(address, threading.Lock())

    @contextlib.contextmanager
    def reserve(self, address: str) -> Iterator[int]:
        """Yield the next nonce of ``address``; it is consumed only if the block succeeds."""
        with self._lock(address):
            if address not in self._next:
                self._next[address] = int(self._fetch(address))
            nonce = self._next[address]
            try:
                yield nonce
            except BaseException:
                self._next.pop(address, None)
                raise
            self._next[address] = nonce + 1

    def resync(self, address: str | None = None) -> None:
        """Forget cached nonces (of one address, or all) so they are re-read from the node."""
        with self._guard:
            if address is None:
                self._next.clear()
            else:
                self._next.pop(address, None)


# --------------------------------------------------------------------------- artifacts
@dataclass(frozen=True)
class Artifact:
    """ABI and creation bytecode of one compiled contract."""

    name: str
    abi: list[dict[str, Any]]
    bytecode: str

    @classmethod
    def from_json(cls, data: Mapping[str, Any], name: str | None = None) -> Artifact:
        """Accepts ``{"abi", "bytecode"}`` (hex string or ``{"object": hex}``) and solc's
        ``{"abi", "evm": {"bytecode": {"object"}}}``."""
        bytecode: Any = data.get("bytecode")
        if bytecode is None and "evm" in data:
            bytecode = data["evm"]["bytecode"]
        if isinstance(bytecode, Mapping):
            bytecode = bytecode.get("object")
        if not isinstance(bytecode, str) or "abi" not in data:
            raise ValueError(f"artifact {name or data.get('contractName')!r} has no abi/bytecode")
        if not bytecode.startswith("0x"):
            bytecode = "0x" + bytecode
        return cls(
            name=str(name or data.get("contractName") or data.get("name") or "contract"),
            abi=list(data["abi"]),
            bytecode=bytecode,
        )

    @classmethod
    def load(cls, path: Path) -> Artifact:
        """Read an artifact JSON file."""
        return cls.from_json(json.loads(Path(path).read_text()), name=Path(path).stem)


# --------------------------------------------------------------------------- chain
class Chain:
    """A connected chain: web3 instance, keys, nonces, error decoding, signed transactions."""

    def __init__(self, w3: Web3, config: ChainConfig, keys: KeyRing | None = None) -> None:
        self.w3 = w3
        self.config = config
        self.chain_id: int = int(w3.eth.chain_id)
        self.keys = keys if keys is not None else KeyRing(self.chain_id)
        self.decoder = ErrorDecoder()
        self.nonces = NonceManager(
            lambda address: self.w3.eth.get_transaction_count(address, "pending")
        )
        self._poll_s = 0.01 if config.is_embedded else 0.1
        self._signing_keys: dict[str, coincurve.PrivateKey] = {}
        self._senders: ThreadPoolExecutor | None = None

    # ---- basics
    @property
    def is_embedded(self) -> bool:
        return self.config.is_embedded

    @property
    def block_number(self) -> int:
        return int(self.w3.eth.block_number)

    def account(self, sender: Sender) -> LocalAccount:
        """A ``LocalAccount`` as is, or the account of a role name via the key ring."""
        return self.keys.account(sender) if isinstance(sender, str) else sender

    def contract(self, address: str, abi: Sequence[Mapping[str, Any]]) -> Contract:
        """A contract handle whose custom errors become decodable."""
        self.decoder.add_abi(abi)
        return self.w3.eth.contract(address=to_checksum_address(address), abi=list(abi))

    def register_abi(self, abi: Sequence[Mapping[str, Any]]) -> None:
        """Make the custom errors of ``abi`` decodable (e.g. a library's errors)."""
        self.decoder.add_abi(abi)

    def _wrap(self, exc: BaseException, tx_hash: str | None = None) -> ChainError:
        mapped = to_chain_error(exc, self.decoder, tx_hash)
        if mapped is not None:
            return mapped
        return TransactionRejected(f"{type(exc).__name__}: {exc}")

    # ---- reads
    def call(self, fn: Any, sender: str | None = None, block: int | str = "latest") -> Any:
        """``fn.call`` with reverts mapped to ``ContractRevert``."""
        params: dict[str, Any] = {"from": sender} if sender else {}
        try:
            return fn.call(params, block_identifier=block)
        except ChainError:
            raise
        except Exception as exc:
            mapped = to_chain_error(exc, self.decoder)
            if mapped is None:
                raise
            raise mapped from exc

    # ---- transactions
    def _fees(self) -> dict[str, int]:
        latest = self.w3.eth.get_block("latest")
        base_fee = latest.get("baseFeePerGas")
        if base_fee is None:
            return {"gasPrice": int(self.w3.eth.gas_price)}
        try:
            tip = int(self.w3.eth.max_priority_fee)
        except ChainUnavailable:
            raise
        except Exception:  # nodes without eth_maxPriorityFeePerGas
            tip = 0
        return {"maxPriorityFeePerGas": tip, "maxFeePerGas": 2 * int(base_fee) + tip}

    def _estimate(self, tx: dict[str, Any]) -> int:
        """Gas limit for ``tx``; a revert raises ``ContractRevert`` before anything is sent.

        RPC: ``eth_estimateGas`` plus a margin. Embedded: py-evm's estimate is a binary search
        (~13 executions), so one ``eth_call`` checks for a revert and the transaction gets
        ``EMBEDDED_TX_GAS`` (receipts still report the gas actually used).
        """
        probe = {k: tx[k] for k in ("from", "to", "data", "value") if k in tx}
        try:
            if self.is_embedded:
                self.w3.eth.call(probe)  # type: ignore[arg-type]
                return EMBEDDED_TX_GAS
            estimate = int(self.w3.eth.estimate_gas(probe))  # type: ignore[arg-type]
        except ChainError:
            raise
        except Exception as exc:
            raise self._wrap(exc) from exc
        limit = int(self.w3.eth.get_block("latest")["gasLimit"])
        return min(int(estimate * GAS_BUFFER) + GAS_EXTRA, limit)

    def send(self, tx: Mapping[str, Any], sender: Sender) -> tuple[HexBytes, dict[str, Any]]:
        """Sign and send ``tx`` (to/data/value/gas optional); returns (hash, full tx).

        Estimates gas when ``tx`` has none (a revert raises ``ContractRevert`` here, before a
        nonce is used), fills fees and the managed nonce, retries once after a nonce clash.
        A "nonce too low" answer for a transaction the node already knows (a retried request
        whose first attempt got through) returns that transaction: it is never signed twice.
        """
        account = self.account(sender)
        full: dict[str, Any] = {"value": 0, **tx, "from": account.address,
                                "chainId": self.chain_id}
        if "gas" not in full:
            full["gas"] = self._estimate(full)
        if "gasPrice" not in full and "maxFeePerGas" not in full:
            full.update(self._fees())
        signed_hash: HexBytes | None = None
        for attempt in range(1, MAX_SEND_ATTEMPTS + 1):
            try:
                with self.nonces.reserve(account.address) as nonce:
                    full["nonce"] = nonce
                    raw, signed_hash = self.sign(account, full)
                    tx_hash = self._send_raw(raw, signed_hash)
                return tx_hash, full
            except ChainError:
                raise
            except Exception as exc:
                text = str(exc).lower()
                if "nonce" in text and signed_hash is not None and self.tx_known(signed_hash):
                    # a retried request whose first attempt reached the node: "nonce too low"
                    # because this very transaction took the nonce; never sign it again
                    return signed_hash, full
                if attempt < MAX_SEND_ATTEMPTS and "nonce" in text:
                    log.warning("nonce clash for %s (%s); resynced from node", account.address, exc)
                    continue
                raise self._wrap(exc) from exc
        raise AssertionError("unreachable")  # pragma: no cover

    def sign(self, account: LocalAccount, tx: Mapping[str, Any]) -> tuple[bytes, HexBytes]:
        """(raw transaction, hash) of ``tx`` signed by ``account``
        (:func:`sign_transaction_fast`)."""
        key = self._signing_keys.get(account.address)
        if key is None:
            key = self._signing_keys.setdefault(account.address,
                                                coincurve.PrivateKey(bytes(account.key)))
        raw, tx_hash = sign_transaction_fast(key, tx)
        return raw, HexBytes(tx_hash)

    def sign_next(self, tx: Mapping[str, Any], sender: Sender
                  ) -> tuple[dict[str, Any], bytes, HexBytes]:
        """(full transaction, raw, hash): ``tx`` (with gas and fees) filled with the sender,
        chain id and the sender's next managed nonce, and signed; nothing is sent and the nonce
        counts as used (:meth:`broadcast` sends it, :meth:`resend` again)."""
        account = self.account(sender)
        full: dict[str, Any] = {"value": 0, **tx, "from": account.address,
                                "chainId": self.chain_id}
        with self.nonces.reserve(account.address) as nonce:
            full["nonce"] = nonce
            raw, tx_hash = self.sign(account, full)
        return full, raw, tx_hash

    def broadcast(self, signed: Sequence[tuple[bytes, HexBytes]], workers: int = 4
                  ) -> list[BaseException | None]:
        """Send signed transactions: over up to ``workers`` connections at once on an RPC node
        (a node queues a nonce that arrives before its predecessor), in order on the embedded
        chain. Per transaction None (the node has it, or mined it) or the error."""

        def one(item: tuple[bytes, HexBytes]) -> BaseException | None:
            try:
                self._send_raw(*item)
            except ChainError as exc:
                return exc
            except Exception as exc:
                if nonce_taken(str(exc)) and self.tx_known(item[1]):
                    return None
                return self._wrap(exc)
            return None

        if self.is_embedded or workers <= 1 or len(signed) < 2:
            return [one(item) for item in signed]
        if self._senders is None:
            self._senders = ThreadPoolExecutor(workers, thread_name_prefix="tx-broadcast")
        return list(self._senders.map(one, signed))

    def tx_known(self, tx_hash: HexBytes) -> bool:
        """True when the node knows the transaction (in its pool or mined)."""
        try:
            return self.w3.eth.get_transaction(tx_hash) is not None
        except TransactionNotFound:
            return False

    def resend(self, full: Mapping[str, Any], sender: Sender,
               fees: Mapping[str, int] | None = None) -> HexBytes | None:
        """Sign ``full`` (a transaction returned by :meth:`send`, its nonce kept) again, with
        ``fees`` replacing its fee fields when given, and send it: the same bytes re-broadcast a
        transaction a node lost; higher fees replace a stalled one. Returns its hash, or None
        when the nonce is already taken on-chain (this or another transaction with it was
        mined)."""
        account = self.account(sender)
        tx = dict(full)
        if fees is not None:
            for key in ("gasPrice", "maxFeePerGas", "maxPriorityFeePerGas"):
                tx.pop(key, None)
            tx.update(fees)
        raw, tx_hash = self.sign(account, tx)
        try:
            return self._send_raw(raw, tx_hash)
        except ChainError:
            raise
        except Exception as exc:
            if nonce_taken(str(exc)):
                return None
            raise self._wrap(exc) from exc

    def _send_raw(self, raw: bytes, tx_hash: HexBytes) -> HexBytes:
        try:
            if self.is_embedded:
                return HexBytes(self.w3.eth.send_raw_transaction(raw))
            # the provider directly (its retries and errors kept): web3's method layer costs
            # more CPU than the request itself when the relay sends hundreds per second
            answer = self.w3.provider.make_request(RPCEndpoint("eth_sendRawTransaction"),
                                                   ["0x" + bytes(raw).hex()])
            if "error" in answer:
                raise Web3RPCError(str(answer["error"]), rpc_response=answer)
            return HexBytes(answer["result"])
        except ChainError:
            raise
        except Exception as exc:
            text = str(exc).lower()
            if "already known" in text or "known transaction" in text or "already imported" in text:
                return tx_hash  # a retried request that had reached the node the first time
            raise

    def wait(self, tx_hash: HexBytes, tx: Mapping[str, Any] | None = None) -> TxReceipt:
        """Wait for the receipt; status 0 raises ``ContractRevert`` (reason replayed)."""
        try:
            receipt = self.w3.eth.wait_for_transaction_receipt(
                tx_hash, timeout=self.config.receipt_timeout_s, poll_latency=self._poll_s
            )
        except TimeExhausted as exc:
            if tx is not None and "from" in tx:
                self.nonces.resync(tx["from"])  # e.g. a nonce gap after a chain reset
            raise TransactionTimeout(
                f"transaction {tx_hash.to_0x_hex()} not mined within "
                f"{self.config.receipt_timeout_s} s"
            ) from exc
        if receipt["status"] != 1:
            raise self._revert_of_failed(receipt, tx)
        return receipt

    def _revert_of_failed(self, receipt: TxReceipt, tx: Mapping[str, Any] | None) -> ChainError:
        """Re-run a failed transaction with eth_call on the state before its block."""
        tx_hash = HexBytes(receipt["transactionHash"]).to_0x_hex()
        if tx is None:
            tx = self.w3.eth.get_transaction(receipt["transactionHash"])
        call = {k: tx[k] for k in ("from", "to", "data", "value", "gas") if tx.get(k) is not None}
        if "input" in tx and "data" not in call:
            call["data"] = tx["input"]
        block = max(int(receipt["blockNumber"]) - 1, 0)
        try:
            self.w3.eth.call(call, block_identifier=block)  # type: ignore[arg-type]
        except ChainUnavailable:
            raise
        except Exception as exc:
            mapped = to_chain_error(exc, self.decoder, tx_hash)
            if mapped is not None:
                return mapped
            return ContractRevert(None, reason=f"replay failed: {exc}", tx_hash=tx_hash)
        out_of_gas = int(receipt["gasUsed"]) >= int(call.get("gas", 0) or 0) > 0
        reason = "out of gas" if out_of_gas else "replay at the parent block did not revert"
        return ContractRevert(None, reason=reason, tx_hash=tx_hash)

    def transact(
        self,
        fn: Any,
        sender: Sender,
        *,
        gas: int | None = None,
        value: int = 0,
    ) -> TxReceipt:
        """Sign, send and mine a contract function call; returns the successful receipt."""
        tx: dict[str, Any] = {"to": fn.address, "data": fn._encode_transaction_data(),
                              "value": value}
        if gas is not None:
            tx["gas"] = int(gas)
        tx_hash, full = self.send(tx, sender)
        return self.wait(tx_hash, full)

    def deploy(
        self, artifact: Artifact, sender: Sender, *args: Any, gas: int | None = None
    ) -> tuple[Contract, TxReceipt]:
        """Deploy ``artifact`` with constructor ``args``; returns (contract, receipt)."""
        self.decoder.add_abi(artifact.abi)
        factory = self.w3.eth.contract(abi=artifact.abi, bytecode=artifact.bytecode)
        data = factory.constructor(*args).data_in_transaction
        tx: dict[str, Any] = {"data": data}
        if gas is not None:
            tx["gas"] = int(gas)
        tx_hash, full = self.send(tx, sender)
        receipt = self.wait(tx_hash, full)
        address = receipt["contractAddress"]
        if not address:
            raise ChainError(f"deployment of {artifact.name} returned no contract address")
        return self.contract(address, artifact.abi), receipt

    def transfer(self, to: str, amount_wei: int, sender: Sender) -> TxReceipt:
        """Plain value transfer."""
        tx_hash, full = self.send(
            {"to": to_checksum_address(to), "value": int(amount_wei), "gas": 21_000}, sender
        )
        return self.wait(tx_hash, full)

    def ensure_funded(self, address: str, min_wei: int, sender: Sender, top_up_wei: int) -> bool:
        """Send ``top_up_wei`` from ``sender`` when ``address`` holds less than ``min_wei``."""
        if int(self.w3.eth.get_balance(to_checksum_address(address))) >= min_wei:
            return False
        self.transfer(address, top_up_wei, sender)
        return True

    # ---- events
    def events(self, receipt: TxReceipt, contract: Contract, name: str) -> list[Any]:
        """Decoded ``name`` events emitted by ``contract`` in ``receipt`` (others ignored)."""
        event = contract.events[name]()
        return [
            log_entry
            for log_entry in event.process_receipt(receipt, errors=DISCARD)
            if log_entry["address"] == contract.address
        ]

    def get_logs(
        self, event: Any, from_block: int, to_block: int, max_range: int = 500,
        argument_filters: Mapping[str, Any] | None = None,
    ) -> list[Any]:
        """Logs of a contract event over [from_block, to_block] in windows of ``max_range``
        blocks (eth-tester slows sharply over wide ranges; RPC nodes cap ranges). A one-off
        read without reorg checks: repeated reads go through ``gridshare.chain.events``."""
        if from_block > to_block:
            raise ValueError(f"from_block {from_block} > to_block {to_block}")
        if max_range < 1:
            raise ValueError(f"max_range must be >= 1, got {max_range}")
        out: list[Any] = []
        for start, end in block_windows(from_block, to_block, max_range):
            out.extend(event.get_logs(from_block=start, to_block=end,
                                      argument_filters=dict(argument_filters or {})))
        return out

    # ---- devnet helpers (embedded and anvil; Besu has no time travel)
    def snapshot(self) -> Any:
        """Snapshot the chain state (embedded or anvil)."""
        if self.is_embedded:
            return self.w3.provider.ethereum_tester.take_snapshot()  # type: ignore[attr-defined]
        return self._rpc("evm_snapshot", [])

    def revert(self, snapshot_id: Any) -> None:
        """Return to a snapshot; cached nonces are dropped."""
        if self.is_embedded:
            self.w3.provider.ethereum_tester.revert_to_snapshot(snapshot_id)  # type: ignore[attr-defined]
        elif not self._rpc("evm_revert", [snapshot_id]):
            raise ChainError(f"evm_revert({snapshot_id!r}) failed")
        self.nonces.resync()

    def advance_time(self, seconds: int) -> int:
        """Mine a block ``seconds`` after the latest one; returns its timestamp."""
        latest = int(self.w3.eth.get_block("latest")["timestamp"])
        target = latest + int(seconds)
        if self.is_embedded:
            tester = self.w3.provider.ethereum_tester  # type: ignore[attr-defined]
            # py-evm mines the travel block at (to_timestamp - 1): aim one second later
            tester.time_travel(target + 1)
        else:
            self._rpc("evm_setNextBlockTimestamp", [target])
            self._rpc("evm_mine", [])
        return int(self.w3.eth.get_block("latest")["timestamp"])

    def _rpc(self, method: str, params: list[Any]) -> Any:
        response = self.w3.provider.make_request(RPCEndpoint(method), params)
        if "error" in response:
            raise ChainError(f"{method} failed: {response['error']}")
        return response.get("result")


def connect(config: ChainConfig | None = None, keys: KeyRing | None = None) -> Chain:
    """Connect to the configured chain (embedded by default)."""
    config = config or ChainConfig()
    if config.is_embedded:
        return Chain(embedded_web3(), config, keys)
    w3 = Web3(http_provider(config))
    # web3's "validation" middleware asks the node for eth_chainId before every eth_call and
    # eth_estimateGas (one extra round trip each); transactions are signed here with the chain
    # id and the node's identity is checked by the services (market.gateway.watch.ChainWatch)
    w3.middleware_onion.remove("validation")
    poa = config.poa if config.poa is not None else needs_poa_middleware(w3)
    if poa:
        w3.middleware_onion.inject(ExtraDataToPOAMiddleware, layer=0)
    return Chain(w3, config, keys)


def wait_for_chain(
    config: ChainConfig, timeout_s: float, min_block: int = 1, poll_s: float = 1.0,
    keys: KeyRing | None = None,
) -> Chain:
    """Connect, retrying until the node answers and has produced block ``min_block``.

    For services started next to their node (docker compose): a QBFT RPC node answers before
    its validators produce blocks. Raises ``ChainUnavailable`` after ``timeout_s`` seconds.
    """
    deadline = time.monotonic() + timeout_s
    polls = Backoff(poll_s, factor=1.0)
    while True:
        problem: BaseException
        try:
            chain = connect(config, keys)
            if chain.is_embedded or chain.block_number >= min_block:
                return chain
            problem = ChainError(f"block {chain.block_number} < {min_block}: no blocks yet")
        except ChainUnavailable as exc:
            problem = exc.cause or exc
        delay_s = polls.next_delay_s()
        if time.monotonic() + delay_s > deadline:
            raise ChainUnavailable(config.chain, ChainUnavailable.WAIT_TIMED_OUT, problem)
        sleep(delay_s)
