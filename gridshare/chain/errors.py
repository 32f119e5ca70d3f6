"""The project's chain errors: one type per failure a caller can act on.

A contract revert reaches Python in different shapes depending on the chain:

* embedded chain (eth-tester + py-evm): ``eth_tester.exceptions.TransactionFailed`` whose message
  is ``"execution reverted: b'<raw revert data>'"`` for a custom error or a panic, and
  ``"execution reverted: <reason>"`` for ``revert("reason")``; web3 itself raises
  ``ContractPanicError`` for panics on ``eth_call``;
* JSON-RPC node (anvil, Besu): web3's ``ContractCustomError`` (``.data`` is the hex revert data),
  ``ContractPanicError`` or ``ContractLogicError`` (``Error(string)``).

``to_chain_error`` turns all of them into one ``ContractRevert`` with the custom error's name and
arguments decoded from the contracts' ABIs, so tests and callers match on
``ContractRevert.error_name`` whatever the chain.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from eth_abi import decode as abi_decode
from eth_abi.exceptions import DecodingError
from eth_utils import function_signature_to_4byte_selector, to_checksum_address
from hexbytes import HexBytes

ERROR_STRING_SELECTOR = function_signature_to_4byte_selector("Error(string)")
PANIC_SELECTOR = function_signature_to_4byte_selector("Panic(uint256)")
_REVERT_PREFIX = "execution reverted"

# Solidity panic codes (docs: "Panic via assert and error via require").
PANIC_REASONS: dict[int, str] = {
    0x00: "generic compiler panic",
    0x01: "assert(false)",
    0x11: "arithmetic overflow or underflow",
    0x12: "division or modulo by zero",
    0x21: "invalid enum value",
    0x22: "invalid storage byte array encoding",
    0x31: "pop() on an empty array",
    0x32: "array index out of bounds",
    0x41: "out of memory",
    0x51: "call to a zero-initialised internal function",
}


class ChainError(RuntimeError):
    """Base class of every error raised by the chain layer (``gridshare.chain.client``)."""


class ChainUnavailable(ChainError):  # noqa: N818 (names fixed by the brief)
    """The chain node is down: the project's one error for it (the REST API answers 503).

    Raised for a dead RPC node, a refused connection or timeouts after the retries
    (``attempts`` requests failed), by callers that know the node is down from a recent failure
    and do not ask it again (``attempts == KNOWN_DOWN``), and by ``wait_for_chain`` when its
    wait ran out (``attempts == WAIT_TIMED_OUT``). ``cause`` is the underlying failure.
    """

    KNOWN_DOWN = 0
    WAIT_TIMED_OUT = -1

    def __init__(self, url: str, attempts: int, cause: BaseException | None = None) -> None:
        self.url = url
        self.attempts = attempts
        self.cause = cause
        detail = f": {type(cause).__name__}: {cause}" if cause is not None else ""
        if attempts > 0:
            tries = f"after {attempts} attempt(s)"
        elif attempts == self.KNOWN_DOWN:
            tries = "(known down from a recent failure)"
        else:
            tries = "(wait timed out)"
        super().__init__(f"chain RPC node at {url} is unavailable {tries}{detail}")


class TransactionRejected(ChainError):  # noqa: N818 (names fixed by the brief)
    """The node refused a transaction before executing it (nonce, funds, fee, size...)."""


class TransactionTimeout(ChainError):  # noqa: N818 (names fixed by the brief)
    """A sent transaction was not mined within the receipt timeout."""


class ContractRevert(ChainError):  # noqa: N818 (names fixed by the brief)
    """A contract call or transaction reverted.

    ``error_name`` is the custom error's name (``"InvalidBand"``), ``"Error"`` for
    ``revert("reason")``/``require(..., "reason")``, ``"Panic"`` for a Solidity panic, or ``None``
    when the revert carried no data the decoder knows. ``error_args`` maps the error's ABI
    parameter names (``arg0``, ``arg1``... when unnamed) to decoded values.
    """

    def __init__(
        self,
        error_name: str | None,
        error_args: Mapping[str, Any] | None = None,
        *,
        data: bytes = b"",
        reason: str | None = None,
        tx_hash: str | None = None,
    ) -> None:
        self.error_name = error_name
        self.error_args: dict[str, Any] = dict(error_args or {})
        self.data = bytes(data)
        self.reason = reason
        self.tx_hash = tx_hash
        super().__init__(self._describe())

    def _describe(self) -> str:
        if self.error_name is None:
            text = f"reverted ({self.reason})" if self.reason else "reverted without reason data"
            if self.data:
                text += f" data=0x{self.data.hex()}"
        else:
            shown = ", ".join(f"{k}={_short(v)}" for k, v in self.error_args.items())
            text = f"{self.error_name}({shown})"
            if self.reason and self.error_name in ("Error", "Panic"):
                text += f": {self.reason}"
        if self.tx_hash:
            text += f" [tx {self.tx_hash}]"
        return text


def _short(value: Any) -> str:
    if isinstance(value, bytes | bytearray):
        return "0x" + bytes(value).hex()
    return repr(value) if isinstance(value, str) else str(value)


def _checksum(value: Any) -> Any:
    """Checksum every address string inside a decoded value (eth_abi returns lowercase)."""
    if isinstance(value, str) and len(value) == 42 and value.startswith("0x"):
        return to_checksum_address(value)
    if isinstance(value, tuple | list):
        return type(value)(_checksum(v) for v in value)
    return value


def _canonical_type(param: Mapping[str, Any]) -> str:
    """ABI type string of a parameter, tuples expanded: ``(address,uint64)[]``."""
    abi_type = str(param["type"])
    if abi_type.startswith("tuple"):
        inner = ",".join(_canonical_type(c) for c in param.get("components", []))
        return f"({inner}){abi_type[len('tuple'):]}"
    return abi_type


class ErrorDecoder:
    """Maps 4-byte selectors to the custom errors declared in one or more contract ABIs."""

    def __init__(self, abis: Iterable[Sequence[Mapping[str, Any]]] = ()) -> None:
        self._errors: dict[bytes, tuple[str, list[str], list[str]]] = {}
        for abi in abis:
            self.add_abi(abi)

    def add_abi(self, abi: Sequence[Mapping[str, Any]]) -> None:
        """Register every ``type: error`` entry of ``abi`` (duplicates across ABIs are fine)."""
        for entry in abi:
            if entry.get("type") != "error":
                continue
            inputs = list(entry.get("inputs", []))
            types = [_canonical_type(p) for p in inputs]
            names = [p.get("name") or f"arg{i}" for i, p in enumerate(inputs)]
            signature = f"{entry['name']}({','.join(types)})"
            self._errors[function_signature_to_4byte_selector(signature)] = (
                str(entry["name"]),
                types,
                names,
            )

    @property
    def error_names(self) -> set[str]:
        """Names of all registered custom errors."""
        return {name for name, _, _ in self._errors.values()}

    def decode(self, data: bytes, tx_hash: str | None = None) -> ContractRevert:
        """Decode raw revert data into a ``ContractRevert`` (never raises on odd data)."""
        data = bytes(data)
        selector, payload = data[:4], data[4:]
        try:
            if selector == ERROR_STRING_SELECTOR:
                (reason,) = abi_decode(["string"], payload)
                return ContractRevert(
                    "Error", {"reason": reason}, data=data, reason=reason, tx_hash=tx_hash
                )
            if selector == PANIC_SELECTOR:
                (code,) = abi_decode(["uint256"], payload)
                return ContractRevert(
                    "Panic",
                    {"code": code},
                    data=data,
                    reason=PANIC_REASONS.get(code, f"panic code {code:#x}"),
                    tx_hash=tx_hash,
                )
            if selector in self._errors:
                name, types, names = self._errors[selector]
                values = [_checksum(v) if "address" in t else v
                          for t, v in zip(types, abi_decode(types, payload), strict=True)]
                return ContractRevert(name, dict(zip(names, values, strict=True)), data=data,
                                      tx_hash=tx_hash)
        except DecodingError as exc:
            return ContractRevert(None, data=data, reason=f"undecodable revert data: {exc}",
                                  tx_hash=tx_hash)
        reason = f"unknown error selector 0x{selector.hex()}" if data else None
        return ContractRevert(None, data=data, reason=reason, tx_hash=tx_hash)


def _hex_to_bytes(value: Any) -> bytes | None:
    if isinstance(value, bytes | bytearray):
        return bytes(value)
    if isinstance(value, str) and value.startswith("0x"):
        try:
            return bytes(HexBytes(value))
        except ValueError:
            return None
    if isinstance(value, Mapping):  # some nodes nest it: {"data": "0x..."} or {"message", "data"}
        return _hex_to_bytes(value.get("data"))
    return None


def _revert_from_message(
    message: str, decoder: ErrorDecoder, tx_hash: str | None
) -> ContractRevert:
    """Parse eth-tester's ``"execution reverted: ..."`` message."""
    text = message.strip()
    if text.lower().startswith(_REVERT_PREFIX):
        text = text[len(_REVERT_PREFIX):].lstrip(": ").strip()
    if text.startswith(("b'", 'b"')):
        try:
            raw = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            raw = None
        if isinstance(raw, bytes):
            return decoder.decode(raw, tx_hash)
    if not text:
        return ContractRevert(None, tx_hash=tx_hash)
    return ContractRevert("Error", {"reason": text}, reason=text, tx_hash=tx_hash)


def to_chain_error(
    exc: BaseException, decoder: ErrorDecoder, tx_hash: str | None = None
) -> ChainError | None:
    """The project error for a web3/eth-tester exception, or None when ``exc`` is not a revert.

    Handles eth-tester's ``TransactionFailed``, web3's ``ContractLogicError`` family (custom,
    panic, ``Error(string)``) and RPC errors that carry revert data.
    """
    if isinstance(exc, ChainError):
        return exc
    from eth_tester.exceptions import TransactionFailed
    from web3.exceptions import ContractLogicError, Web3RPCError

    if isinstance(exc, ContractLogicError):
        data = _hex_to_bytes(exc.data)
        if data is not None:
            return decoder.decode(data, tx_hash)
        return _revert_from_message(str(exc.message or ""), decoder, tx_hash)
    if isinstance(exc, TransactionFailed):
        first = exc.args[0] if exc.args else ""
        if isinstance(first, bytes | bytearray):
            return decoder.decode(bytes(first), tx_hash)
        if isinstance(first, BaseException) and first.args:
            first = first.args[0]
            if isinstance(first, bytes | bytearray):
                return decoder.decode(bytes(first), tx_hash)
        return _revert_from_message(str(first), decoder, tx_hash)
    if isinstance(exc, Web3RPCError):
        error = (exc.rpc_response or {}).get("error") if exc.rpc_response else None
        if isinstance(error, Mapping):
            data = _hex_to_bytes(error.get("data"))
            message = str(error.get("message", ""))
            if data is not None and _REVERT_PREFIX in message.lower():
                return decoder.decode(data, tx_hash)
            if _REVERT_PREFIX in message.lower():
                return _revert_from_message(message, decoder, tx_hash)
    return None
