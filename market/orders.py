"""Market orders: the EIP-712 ``Order`` of docs/interfaces.md, signing, recovery and validation.

Units: energy in Wh (int), prices in micro-euro per kWh (int), times in unix seconds (int).
The digest is ``keccak256(0x1901 ++ domainSeparator ++ hashStruct(order))`` (EIP-712); it is
computed here with plain ABI encoding (all fields are static 32-byte words) because the clearing
hashes thousands of orders; ``tests/market/test_orders.py`` checks it against ``eth_account``.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from enum import IntEnum
from functools import lru_cache
from typing import Any

import coincurve
from eth_account import Account
from eth_account.messages import encode_typed_data
from eth_utils import keccak, to_checksum_address

DOMAIN_NAME = "gridshare-market"
DOMAIN_VERSION = "1"
ORDER_TYPE = (
    "Order(address prosumer,uint64 interval,uint8 side,uint64 energyWh,"
    "uint64 priceMicroEurPerKwh,uint64 nonce,uint64 deadline)"
)
DOMAIN_TYPE = (
    "EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)"
)
ORDER_TYPEHASH = keccak(text=ORDER_TYPE)
DOMAIN_TYPEHASH = keccak(text=DOMAIN_TYPE)

#: EIP-712 ``types`` for wallets (``eth_signTypedData_v4``) and ``eth_account``.
EIP712_TYPES: dict[str, list[dict[str, str]]] = {
    "EIP712Domain": [
        {"name": "name", "type": "string"},
        {"name": "version", "type": "string"},
        {"name": "chainId", "type": "uint256"},
        {"name": "verifyingContract", "type": "address"},
    ],
    "Order": [
        {"name": "prosumer", "type": "address"},
        {"name": "interval", "type": "uint64"},
        {"name": "side", "type": "uint8"},
        {"name": "energyWh", "type": "uint64"},
        {"name": "priceMicroEurPerKwh", "type": "uint64"},
        {"name": "nonce", "type": "uint64"},
        {"name": "deadline", "type": "uint64"},
    ],
}

UINT64_MAX = 2**64 - 1
#: Order of the secp256k1 group: r and s lie in 1..n-1; the contract takes s <= n/2 only.
SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
SECP256K1_HALF_N = SECP256K1_N // 2


def _keccak_impl() -> Callable[[bytes], bytes]:
    """keccak256 without eth_utils' per-call checks (a book hash takes one per order).

    ``sha3.keccak_256`` (PyPI ``safe-pysha3``, about 3x faster) when installed, else
    pycryptodome's (always present: eth-account depends on it). Both are keccak256.
    """
    try:
        from sha3 import keccak_256  # type: ignore[import-not-found]

        return lambda data: keccak_256(data).digest()
    except ImportError:
        from Crypto.Hash import keccak as _k

        return lambda data: _k.new(digest_bits=256, data=data).digest()


_fast_keccak = _keccak_impl()


@lru_cache(maxsize=65536)
def checksum(address: str) -> str:
    """``to_checksum_address``, remembered (a keccak per call; members send many orders)."""
    return to_checksum_address(address)


class Side(IntEnum):
    """Order side as encoded on-chain (``uint8``)."""

    BUY = 0
    SELL = 1


@dataclass(frozen=True, slots=True)
class Order:
    """One limit order of one prosumer for one interval (the signed EIP-712 struct).

    ``energy_wh`` is the most energy to trade; ``price_micro_eur_per_kwh`` is the limit: the
    highest price a buyer pays, the lowest a seller accepts. ``deadline_unix_s`` is the last
    second at which the order may be placed.
    """

    prosumer: str
    interval: int
    side: Side
    energy_wh: int
    price_micro_eur_per_kwh: int
    nonce: int
    deadline_unix_s: int

    def __post_init__(self) -> None:
        object.__setattr__(self, "prosumer", checksum(self.prosumer))
        object.__setattr__(self, "side", Side(int(self.side)))
        for name in ("interval", "energy_wh", "price_micro_eur_per_kwh", "nonce",
                     "deadline_unix_s"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"order field {name} must be an int, got {value!r}")
            # Negative energies are a validation error (NonPositiveEnergyError); anything else
            # outside uint64 cannot be encoded at all.
            low = -UINT64_MAX if name == "energy_wh" else 0
            if not low <= value <= UINT64_MAX:
                raise ValueError(f"order field {name}={value} does not fit in a uint64")

    def message(self) -> dict[str, Any]:
        """The EIP-712 ``message`` (on-chain field names)."""
        return {
            "prosumer": self.prosumer,
            "interval": self.interval,
            "side": int(self.side),
            "energyWh": self.energy_wh,
            "priceMicroEurPerKwh": self.price_micro_eur_per_kwh,
            "nonce": self.nonce,
            "deadline": self.deadline_unix_s,
        }

    def as_abi_tuple(self) -> tuple[str, int, int, int, int, int, int]:
        """The ``GridMarket.Order`` struct as an ABI tuple (web3 argument)."""
        return (self.prosumer, self.interval, int(self.side), self.energy_wh,
                self.price_micro_eur_per_kwh, self.nonce, self.deadline_unix_s)

    @classmethod
    def from_message(cls, message: Mapping[str, Any]) -> Order:
        """Inverse of :meth:`message` (also accepts the tuple fields of an event)."""
        try:
            return cls(
                prosumer=message["prosumer"],
                interval=int(message["interval"]),
                side=Side(int(message["side"])),
                energy_wh=int(message["energyWh"]),
                price_micro_eur_per_kwh=int(message["priceMicroEurPerKwh"]),
                nonce=int(message["nonce"]),
                deadline_unix_s=int(message["deadline"]),
            )
        except KeyError as exc:
            raise ValueError(f"order message lacks field {exc.args[0]!r}") from None

    def struct_hash(self) -> bytes:
        """``hashStruct(order)`` (32 bytes)."""
        if self.energy_wh < 0:
            raise ValueError("a negative energy cannot be encoded as uint64")
        words = (
            ORDER_TYPEHASH
            + bytes.fromhex(self.prosumer[2:]).rjust(32, b"\0")
            + b"".join(
                v.to_bytes(32, "big")
                for v in (self.interval, int(self.side), self.energy_wh,
                          self.price_micro_eur_per_kwh, self.nonce, self.deadline_unix_s)
            )
        )
        return keccak(words)


@dataclass(frozen=True, slots=True)
class MarketDomain:
    """The EIP-712 domain of one market contract deployment."""

    chain_id: int
    verifying_contract: str
    name: str = DOMAIN_NAME
    version: str = DOMAIN_VERSION
    separator: bytes = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "verifying_contract",
                           to_checksum_address(self.verifying_contract))
        sep = keccak(
            DOMAIN_TYPEHASH
            + keccak(text=self.name)
            + keccak(text=self.version)
            + int(self.chain_id).to_bytes(32, "big")
            + bytes.fromhex(self.verifying_contract[2:]).rjust(32, b"\0")
        )
        object.__setattr__(self, "separator", sep)

    def as_dict(self) -> dict[str, Any]:
        """The EIP-712 ``domain`` object."""
        return {
            "name": self.name,
            "version": self.version,
            "chainId": self.chain_id,
            "verifyingContract": self.verifying_contract,
        }

    def digest(self, order: Order) -> bytes:
        """The 32-byte EIP-712 digest that is signed (a tie-breaker of the clearing)."""
        return keccak(b"\x19\x01" + self.separator + order.struct_hash())

    def typed_data(self, order: Order) -> dict[str, Any]:
        """The full typed-data document (for wallets and ``eth_account``)."""
        return {
            "types": EIP712_TYPES,
            "primaryType": "Order",
            "domain": self.as_dict(),
            "message": order.message(),
        }


def sign_order(order: Order, domain: MarketDomain, private_key: bytes | str) -> bytes:
    """The 65-byte signature ``r ++ s ++ v`` of ``order`` by ``private_key``."""
    signable = encode_typed_data(full_message=domain.typed_data(order))
    return bytes(Account.sign_message(signable, private_key).signature)


def canonical_signature(signature: bytes) -> bytes:
    """The one form of a 65-byte ``r ++ s ++ v`` signature that ``GridMarket`` (OpenZeppelin's
    ECDSA) accepts: ``s`` in the lower half of the group order and ``v`` 27 or 28. A high-s
    signature is replaced by its twin ``(r, n - s)`` with the other ``v`` (same signer), and
    ``v`` 0/1 becomes 27/28; both sign the same order. Raises InvalidSignatureError for any other
    length, for ``r`` or ``s`` outside 1..n-1 and for another ``v``."""
    signature = bytes(signature)
    if len(signature) != 65:
        raise InvalidSignatureError(f"a signature has 65 bytes (r ++ s ++ v), got "
                                    f"{len(signature)}")
    r = int.from_bytes(signature[:32], "big")
    s = int.from_bytes(signature[32:64], "big")
    v = signature[64] + 27 if signature[64] in (0, 1) else signature[64]
    if not (0 < r < SECP256K1_N and 0 < s < SECP256K1_N) or v not in (27, 28):
        raise InvalidSignatureError("signature r and s must lie in 1..n-1 and v be 0, 1, 27 or "
                                    f"28 (got v {signature[64]})")
    if s > SECP256K1_HALF_N:
        s, v = SECP256K1_N - s, 55 - v  # 27 <-> 28
    return signature[:32] + s.to_bytes(32, "big") + bytes([v])


def recover_signer(order: Order, domain: MarketDomain, signature: bytes) -> str:
    """The checksum address that signed ``order`` (raises InvalidSignatureError if unreadable)."""
    return recover_digest_signer(domain.digest(order), signature)


def recover_digest_signer(digest: bytes, signature: bytes) -> str:
    """The checksum address that signed the 32-byte ``digest``: coincurve directly for a
    canonical signature (v 27/28), eth_keys for any other form (InvalidSignatureError if
    unreadable)."""
    signature = bytes(signature)
    try:
        if len(signature) == 65 and signature[64] in (27, 28):
            key = coincurve.PublicKey.from_signature_and_message(
                signature[:64] + bytes([signature[64] - 27]), digest, hasher=None)
            return _address_of(key.format(compressed=False)[1:])
        return Account._recover_hash(digest, signature=signature)
    except Exception as exc:  # both libraries raise several types for a malformed signature
        raise InvalidSignatureError(f"signature cannot be recovered: {exc}") from None


def _address_of(public_key: bytes) -> str:
    """The checksum address of a 64-byte uncompressed public key."""
    return checksum("0x" + keccak(public_key)[-20:].hex())


# --------------------------------------------------------------------------- validation


class OrderError(ValueError):
    """An order refused by validation; ``code`` names the reason and ``field`` the request
    field it is about (the REST API's names; None: the order as a whole)."""

    code = "invalid_order"
    field: str | None = None


class InvalidSignatureError(OrderError):
    """Signature malformed or made by another key than the order's prosumer."""

    code = "invalid_signature"
    field = "signature"


class BadNonceError(OrderError):
    """Nonce is not the prosumer's next expected nonce (replayed or skipped)."""

    code = "bad_nonce"
    field = "nonce"


class OrderExpiredError(OrderError):
    """The order's deadline has passed."""

    code = "expired"
    field = "deadline_unix_s"


class DeadlineBeforeIntervalError(OrderError):
    """The deadline lies before the interval starts: the order could not stand for it."""

    code = "deadline_before_interval"
    field = "deadline_unix_s"


class UnknownProsumerError(OrderError):
    """The prosumer is not registered with the market."""

    code = "unknown_prosumer"
    field = "prosumer"


class IntervalClosedError(OrderError):
    """The interval is settled or no longer open for orders."""

    code = "interval_closed"
    field = "interval"


class NonPositiveEnergyError(OrderError):
    """Energy is zero or negative."""

    code = "non_positive_energy"
    field = "energy_wh"


class EnergyTooLargeError(OrderError):
    """Energy above the market's per-order maximum."""

    code = "energy_too_large"
    field = "energy_wh"


class PriceOutOfBoundsError(OrderError):
    """Limit price outside the market's price bounds."""

    code = "price_out_of_bounds"
    field = "price_micro_eur_per_kwh"


class IntervalOutOfWindowError(OrderError):
    """Interval before the current one or beyond the market's window ahead."""

    code = "interval_out_of_window"
    field = "interval"


@dataclass(frozen=True)
class ValidationContext:
    """What an order is checked against (read from the market contract or its mirror).

    ``next_nonce`` maps a prosumer to its next expected nonce (missing = 0); ``interval_open``
    says whether orders are still accepted for an interval; prices in micro-euro per kWh;
    ``max_energy_wh`` the contract's ``maxOrderEnergyWh``; ``window`` the first and last interval
    the contract accepts now (``currentInterval``, ``+ maxIntervalsAhead``), None: not checked.
    """

    domain: MarketDomain
    now_unix_s: int
    registered: Collection[str]
    next_nonce: Mapping[str, int]
    interval_open: Callable[[int], bool]
    min_price_micro_eur_per_kwh: int
    max_price_micro_eur_per_kwh: int
    max_energy_wh: int = 10_000_000
    window: tuple[int, int] | None = None
    interval_s: int | None = None


def validate_order(order: Order, signature: bytes, ctx: ValidationContext,
                   signer: str | None = None, digest: bytes | None = None) -> bytes:
    """Check one signed order; return its digest or raise the matching :class:`OrderError`.

    Order of checks as in ``GridMarket.submitOrderSigned``: signature, registered prosumer,
    nonce, deadline, energy, price, interval window, open interval (the first failing check is
    reported); a negative energy is reported first, as it has no uint64 encoding to check a
    signature against. With ``ctx.interval_s`` a deadline before the interval's start is
    refused too (an off-chain rule: such an order could never stand for its interval).
    ``signer``: the signature's signer when the caller recovered it already (canonical form);
    ``digest``: the order's digest when the caller computed it already.
    """
    if order.energy_wh < 0:
        raise NonPositiveEnergyError(f"order energy must be positive, got {order.energy_wh} Wh")
    if signer is None:
        signer = recover_signer(order, ctx.domain, canonical_signature(signature))
    if signer != order.prosumer:
        raise InvalidSignatureError(
            f"order of {order.prosumer} is signed by {signer}, not by the prosumer"
        )
    if order.prosumer not in ctx.registered:
        raise UnknownProsumerError(f"prosumer {order.prosumer} is not registered with the market")
    expected = int(ctx.next_nonce.get(order.prosumer, 0))
    if order.nonce != expected:
        what = "replayed (already used)" if order.nonce < expected else "out of sequence"
        raise BadNonceError(
            f"nonce {order.nonce} of {order.prosumer} is {what}; expected {expected}"
        )
    if order.deadline_unix_s < ctx.now_unix_s:
        raise OrderExpiredError(
            f"order deadline {order.deadline_unix_s} is before now ({ctx.now_unix_s})"
        )
    if order.energy_wh <= 0:
        raise NonPositiveEnergyError(f"order energy must be positive, got {order.energy_wh} Wh")
    if order.energy_wh > ctx.max_energy_wh:
        raise EnergyTooLargeError(
            f"order energy {order.energy_wh} Wh exceeds the maximum {ctx.max_energy_wh} Wh"
        )
    lo, hi = ctx.min_price_micro_eur_per_kwh, ctx.max_price_micro_eur_per_kwh
    if not lo <= order.price_micro_eur_per_kwh <= hi:
        raise PriceOutOfBoundsError(
            f"limit price {order.price_micro_eur_per_kwh} micro-EUR/kWh is outside the "
            f"market's bounds [{lo}, {hi}]"
        )
    if ctx.window is not None and not ctx.window[0] <= order.interval <= ctx.window[1]:
        where = "is in the past" if order.interval < ctx.window[0] else "is too far ahead"
        raise IntervalOutOfWindowError(
            f"interval {order.interval} {where}: the market's window takes intervals "
            f"{ctx.window[0]} (the current one) to {ctx.window[1]}"
        )
    if ctx.interval_s is not None and \
            order.deadline_unix_s < order.interval * ctx.interval_s:
        raise DeadlineBeforeIntervalError(
            f"deadline {order.deadline_unix_s} is before interval {order.interval} starts "
            f"({order.interval * ctx.interval_s}): the order could not stand for it"
        )
    if not ctx.interval_open(order.interval):
        raise IntervalClosedError(f"interval {order.interval} is not open for orders")
    return digest if digest is not None else ctx.domain.digest(order)


@dataclass(frozen=True, slots=True)
class PlacedOrder:
    """An accepted order with its digest and its place in time.

    ``placed_seq`` orders placements in time (on-chain: ``chain_seq(block, log_index)``);
    it is the second tie-breaker of the clearing after the price.
    """

    order: Order
    digest: bytes
    placed_seq: int


def chain_seq(block_number: int, log_index: int) -> int:
    """Time key of an on-chain placement: block number, then log index within the block."""
    return (int(block_number) << 32) | int(log_index)


#: ``GridMarket.BookOrder``: (prosumer, side, energyWh, priceMicroEurPerKwh).
BookEntry = tuple[str, int, int, int]


def book_entry(order: Order) -> BookEntry:
    """The order as a settlement's book names it (the fields of ``OrderPlaced``)."""
    return (order.prosumer, int(order.side), order.energy_wh, order.price_micro_eur_per_kwh)


def book_hash(entries: Iterable[BookEntry]) -> bytes:
    """The market contract's commitment to an interval's book: a hash chain over its orders
    in placement order, ``h = keccak256(abi.encode(h, prosumer, side, energyWh, price))`` from
    ``h = 0`` (32 zero bytes for no orders)."""
    h = bytes(32)
    for prosumer, side, energy_wh, price in entries:  # abi.encode: five 32-byte words
        h = _fast_keccak(h + bytes.fromhex(prosumer[2:]).rjust(32, b"\0")
                   + int(side).to_bytes(32, "big") + int(energy_wh).to_bytes(32, "big")
                   + int(price).to_bytes(32, "big"))
    return h
