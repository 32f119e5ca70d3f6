"""EIP-712 orders: digest against eth_account, signing, recovery and every validation error."""

from __future__ import annotations

import dataclasses

import pytest
from eth_account.messages import _hash_eip191_message, encode_typed_data
from hypothesis import given, settings
from hypothesis import strategies as st

from market import orders as mo
from market.orders import MarketDomain, Order, Side, ValidationContext, sign_order, validate_order

NOW = 1_700_000_000
LO, HI = 80_000, 300_000


def _ctx(domain, accounts, **over) -> ValidationContext:
    base = dict(
        domain=domain,
        now_unix_s=NOW,
        registered={a.address for a in accounts[:5]},
        next_nonce={accounts[0].address: 3},
        interval_open=lambda i: i >= 10,
        min_price_micro_eur_per_kwh=LO,
        max_price_micro_eur_per_kwh=HI,
        max_energy_wh=1_000_000,
    )
    base.update(over)
    return ValidationContext(**base)


def _order(accounts, **over) -> Order:
    base = dict(prosumer=accounts[0].address, interval=12, side=Side.SELL, energy_wh=1500,
                price_micro_eur_per_kwh=120_000, nonce=3, deadline_unix_s=NOW + 60)
    base.update(over)
    return Order(**base)


@settings(max_examples=25, deadline=None)
@given(
    interval=st.integers(0, 2**64 - 1),
    side=st.sampled_from(list(Side)),
    energy=st.integers(0, 2**64 - 1),
    price=st.integers(0, 2**64 - 1),
    nonce=st.integers(0, 2**64 - 1),
    deadline=st.integers(0, 2**64 - 1),
    chain_id=st.integers(1, 2**32),
)
def test_digest_matches_eth_account(interval, side, energy, price, nonce, deadline, chain_id):
    domain = MarketDomain(chain_id, "0x" + "cd" * 20)
    order = Order("0x" + "12" * 20, interval, side, energy, price, nonce, deadline)
    expected = _hash_eip191_message(encode_typed_data(full_message=domain.typed_data(order)))
    assert domain.digest(order) == bytes(expected)


def test_digest_depends_on_domain_and_every_field(domain, accounts):
    order = _order(accounts)
    seen = {domain.digest(order)}
    for name, value in [("interval", 13), ("side", Side.BUY), ("energy_wh", 1501),
                        ("price_micro_eur_per_kwh", 120_001), ("nonce", 4),
                        ("deadline_unix_s", NOW + 61), ("prosumer", accounts[1].address)]:
        seen.add(domain.digest(dataclasses.replace(order, **{name: value})))
    seen.add(MarketDomain(domain.chain_id + 1, domain.verifying_contract).digest(order))
    seen.add(MarketDomain(domain.chain_id, "0x" + "01" * 20).digest(order))
    assert len(seen) == 10


def test_sign_and_recover_roundtrip(domain, accounts):
    order = _order(accounts)
    signature = sign_order(order, domain, accounts[0].key)
    assert len(signature) == 65
    assert mo.recover_signer(order, domain, signature) == accounts[0].address
    assert validate_order(order, signature, _ctx(domain, accounts)) == domain.digest(order)


def test_message_roundtrip_and_missing_field(accounts):
    order = _order(accounts)
    assert Order.from_message(order.message()) == order
    msg = order.message()
    del msg["nonce"]
    with pytest.raises(ValueError, match="nonce"):
        Order.from_message(msg)


@pytest.mark.parametrize(
    ("field", "value", "match"),
    [("energy_wh", 1.5, "must be an int"), ("nonce", -1, "uint64"),
     ("interval", 2**64, "uint64"), ("price_micro_eur_per_kwh", True, "must be an int")],
)
def test_order_field_type_errors(accounts, field, value, match):
    with pytest.raises(ValueError, match=match):
        _order(accounts, **{field: value})


def _signed(domain, accounts, key_index=0, **over):
    order = _order(accounts, **over)
    return order, sign_order(order, domain, accounts[key_index].key)


@pytest.mark.parametrize(
    ("over", "ctx_over", "error", "match"),
    [
        ({}, {"next_nonce": {}}, mo.BadNonceError, "out of sequence"),
        ({"nonce": 2}, {}, mo.BadNonceError, "replayed"),
        ({"deadline_unix_s": NOW - 1}, {}, mo.OrderExpiredError, "deadline"),
        ({"interval": 9}, {}, mo.IntervalClosedError, "interval 9"),
        ({"energy_wh": 0}, {}, mo.NonPositiveEnergyError, "positive"),
        ({"energy_wh": 1_000_001}, {}, mo.EnergyTooLargeError, "maximum"),
        ({"price_micro_eur_per_kwh": LO - 1}, {}, mo.PriceOutOfBoundsError, "bounds"),
        ({"price_micro_eur_per_kwh": HI + 1}, {}, mo.PriceOutOfBoundsError, "bounds"),
        ({"interval": 6}, {"window": (7, 10)}, mo.IntervalOutOfWindowError, "past"),
        ({"interval": 11}, {"window": (7, 10)}, mo.IntervalOutOfWindowError, "too far ahead"),
        ({"interval": 2**64 - 1}, {"window": (7, 10)}, mo.IntervalOutOfWindowError, "window"),
    ],
)
def test_validation_errors(domain, accounts, over, ctx_over, error, match):
    order, sig = _signed(domain, accounts, **over)
    with pytest.raises(error, match=match) as info:
        validate_order(order, sig, _ctx(domain, accounts, **ctx_over))
    assert isinstance(info.value, mo.OrderError)
    assert info.value.code != mo.OrderError.code


def test_bounds_are_inclusive(domain, accounts):
    ctx = _ctx(domain, accounts)
    for price in (LO, HI):
        order, sig = _signed(domain, accounts, price_micro_eur_per_kwh=price)
        assert validate_order(order, sig, ctx) == domain.digest(order)


def test_forged_signature_by_another_key(domain, accounts):
    order, sig = _signed(domain, accounts, key_index=1)
    with pytest.raises(mo.InvalidSignatureError, match="signed by"):
        validate_order(order, sig, _ctx(domain, accounts))


def test_signature_for_another_domain_is_rejected(domain, accounts):
    order = _order(accounts)
    other = MarketDomain(domain.chain_id, "0x" + "99" * 20)
    sig = sign_order(order, other, accounts[0].key)
    with pytest.raises(mo.InvalidSignatureError):
        validate_order(order, sig, _ctx(domain, accounts))


def test_tampered_order_is_rejected(domain, accounts):
    order, sig = _signed(domain, accounts)
    tampered = dataclasses.replace(order, energy_wh=order.energy_wh + 1)
    with pytest.raises(mo.InvalidSignatureError):
        validate_order(tampered, sig, _ctx(domain, accounts))


@pytest.mark.parametrize("sig", [b"", b"\x01" * 64, b"\x00" * 65])
def test_malformed_signature(domain, accounts, sig):
    with pytest.raises(mo.InvalidSignatureError):
        validate_order(_order(accounts), sig, _ctx(domain, accounts))


def test_unknown_prosumer(domain, accounts):
    order = _order(accounts, prosumer=accounts[7].address, nonce=0)
    sig = sign_order(order, domain, accounts[7].key)
    with pytest.raises(mo.UnknownProsumerError, match=accounts[7].address):
        validate_order(order, sig, _ctx(domain, accounts))


def test_error_codes_are_distinct():
    classes = [c for c in vars(mo).values()
               if isinstance(c, type) and issubclass(c, mo.OrderError) and c is not mo.OrderError]
    assert len(classes) == 10
    assert len({c.code for c in classes}) == len(classes)
    # every refusal names the request field it is about (the API's 422 "field")
    assert {c.field for c in classes} == {"signature", "nonce", "deadline_unix_s", "prosumer",
                                          "interval", "energy_wh", "price_micro_eur_per_kwh"}


def test_chain_seq_orders_by_block_then_log():
    assert mo.chain_seq(5, 2**20) < mo.chain_seq(6, 0) < mo.chain_seq(6, 1)


def test_negative_energy_cannot_be_signed_or_validated(domain, accounts):
    """A negative energy has no uint64 encoding: no digest, hence no valid signature."""
    order = _order(accounts, energy_wh=-5)
    with pytest.raises(ValueError, match="negative energy cannot be encoded"):
        domain.digest(order)
    good_sig = sign_order(_order(accounts), domain, accounts[0].key)
    with pytest.raises(mo.NonPositiveEnergyError, match="-5 Wh"):
        validate_order(order, good_sig, _ctx(domain, accounts))


# ---- one canonical signature: what the API accepts, the contract's ECDSA check accepts
def _parts(sig: bytes) -> tuple[int, int, int]:
    return int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:64], "big"), sig[64]


def _join(r: int, s: int, v: int) -> bytes:
    return r.to_bytes(32, "big") + s.to_bytes(32, "big") + bytes([v])


def test_canonical_signature_normalises_v_and_the_high_s_twin(domain, accounts):
    order, sig = _signed(domain, accounts)
    r, s, v = _parts(sig)
    assert v in (27, 28) and s <= mo.SECP256K1_HALF_N  # eth_account signs canonically
    assert mo.canonical_signature(sig) == sig
    v01 = _join(r, s, v - 27)
    twin = _join(r, mo.SECP256K1_N - s, 55 - v)  # same signer, s in the upper half
    twin01 = _join(r, mo.SECP256K1_N - s, 28 - v)
    for form in (v01, twin, twin01):
        assert mo.recover_signer(order, domain, form) == accounts[0].address
        assert mo.canonical_signature(form) == sig
        assert validate_order(order, form, _ctx(domain, accounts)) == domain.digest(order)


@pytest.mark.parametrize("bad", [
    "r0", "s0", "rn", "sn", "v2", "v26", "v29", "v255", "short", "long"])
def test_signatures_no_contract_accepts_are_refused(domain, accounts, bad):
    order, sig = _signed(domain, accounts)
    r, s, v = _parts(sig)
    n = mo.SECP256K1_N
    forms = {"r0": _join(0, s, v), "s0": _join(r, 0, v), "rn": _join(n, s, v),
             "sn": _join(r, n, v), "v2": _join(r, s, 2), "v26": _join(r, s, 26),
             "v29": _join(r, s, 29), "v255": _join(r, s, 255), "short": sig[:64],
             "long": sig + b"\0"}
    with pytest.raises(mo.InvalidSignatureError) as info:
        mo.canonical_signature(forms[bad])
    assert info.value.field == "signature"
    with pytest.raises(mo.InvalidSignatureError):
        validate_order(order, forms[bad], _ctx(domain, accounts))


@settings(max_examples=30, deadline=None)
@given(r=st.integers(0, 2**256 - 1), s=st.integers(0, 2**256 - 1), v=st.integers(0, 255))
def test_canonical_signature_of_any_65_bytes(r, s, v):
    """Any 65 bytes: refused, or canonical (low s, v 27/28) and a fixed point."""
    try:
        out = mo.canonical_signature(_join(r, s, v))
    except mo.InvalidSignatureError:
        return
    cr, cs, cv = _parts(out)
    assert cr == r and 0 < cs <= mo.SECP256K1_HALF_N and cv in (27, 28)
    assert mo.canonical_signature(out) == out


def test_deadline_before_the_interval_starts_is_refused(domain, accounts):
    """With the interval length known, an order whose deadline lies before its interval's
    start is refused (field deadline_unix_s); at the start it is taken."""
    ctx = _ctx(domain, accounts, interval_s=900, now_unix_s=0)
    start = 12 * 900
    order, sig = _signed(domain, accounts, deadline_unix_s=start - 1)
    with pytest.raises(mo.DeadlineBeforeIntervalError, match="before interval 12 starts") as e:
        validate_order(order, sig, ctx)
    assert e.value.field == "deadline_unix_s"
    order, sig = _signed(domain, accounts, deadline_unix_s=start)
    assert validate_order(order, sig, ctx) == domain.digest(order)
    top, sig = _signed(domain, accounts, deadline_unix_s=2**64 - 1)  # "never expires"
    assert validate_order(top, sig, ctx) == domain.digest(top)


def test_fast_recovery_equals_eth_account():
    """recover_digest_signer (coincurve for v 27/28) names the same signer as eth_account, and
    refuses what eth_account cannot read."""
    from eth_account import Account

    for i in range(20):
        account = Account.from_key((i + 1).to_bytes(32, "big"))
        digest = bytes(range(i, i + 32))
        sig = bytes(Account.unsafe_sign_hash(digest, account.key).signature)
        assert mo.recover_digest_signer(digest, sig) == account.address
        assert mo.recover_digest_signer(digest, sig[:64] + bytes([sig[64] - 27])) == \
            account.address  # eth_keys' path
    with pytest.raises(mo.InvalidSignatureError):
        mo.recover_digest_signer(b"\x01" * 32, b"\x00" * 64 + b"\x1b")
