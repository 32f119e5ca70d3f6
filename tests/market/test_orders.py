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
    assert len(classes) == 9
    assert len({c.code for c in classes}) == len(classes)


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
