"""Transactions signed once: the fast signer equals eth_account byte for byte, a retried send
that already took its nonce is never signed again, and ``Chain.resend`` keeps the nonce."""

from __future__ import annotations

import random

import coincurve
from eth_account import Account
from eth_utils import to_checksum_address

from gridshare.chain.client import bumped_fees, sign_transaction_fast


def _random_tx(rng: random.Random) -> dict:
    tx = {"nonce": rng.choice([0, 1, 127, 128, 2**64 - 1, rng.randrange(2**40)]),
          "gas": rng.randrange(21_000, 30_000_000), "value": rng.choice([0, 1, 10**18, 2**200]),
          "chainId": rng.choice([1, 31337, 131277322940537, 1337042]),
          "data": "0x" + rng.randbytes(rng.choice([0, 1, 55, 56, 300, 5000])).hex()}
    if rng.random() < 0.8:  # else a deployment
        tx["to"] = to_checksum_address("0x" + rng.randbytes(20).hex())
    if rng.random() < 0.5:
        tx["maxFeePerGas"] = rng.choice([0, 10**9, 2**100])
        tx["maxPriorityFeePerGas"] = rng.choice([0, 1, tx["maxFeePerGas"]])
    else:
        tx["gasPrice"] = rng.choice([0, 1, 10**9])
    return tx


def test_fast_signer_equals_eth_account():
    rng = random.Random(19)
    for _ in range(60):
        key = rng.randbytes(32)
        tx = _random_tx(rng)
        expected = Account.from_key(key).sign_transaction(tx)
        raw, tx_hash = sign_transaction_fast(coincurve.PrivateKey(key), tx)
        assert raw == bytes(expected.raw_transaction), tx
        assert tx_hash == bytes(expected.hash)


def test_bumped_fees_replace_by_at_least_the_factor():
    old = {"maxFeePerGas": 100, "maxPriorityFeePerGas": 10}
    assert bumped_fees(old, {"maxFeePerGas": 50, "maxPriorityFeePerGas": 1}, 1.25) == {
        "maxFeePerGas": 126, "maxPriorityFeePerGas": 13}
    assert bumped_fees(old, {"maxFeePerGas": 900, "maxPriorityFeePerGas": 50}, 1.25) == {
        "maxFeePerGas": 900, "maxPriorityFeePerGas": 50}
    assert bumped_fees({"gasPrice": 8}, {"gasPrice": 1}, 1.25) == {"gasPrice": 11}


def test_a_retried_send_that_took_its_nonce_is_not_sent_twice(chain, monkeypatch):
    """The known case: eth_sendRawTransaction timed out after the node took the transaction,
    web3 retried it and the node answered "nonce too low". Chain.send must recognise its own
    transaction by hash and not sign the payload again with a new nonce."""
    sender = chain.keys.account("battery")
    real = chain._send_raw

    def reached_node_then_nonce_too_low(raw, tx_hash):
        real(raw, tx_hash)  # the first attempt got through ...
        raise ValueError("{'code': -32003, 'message': 'nonce too low'}")  # ... the retry not

    before = chain.w3.eth.get_transaction_count(sender.address)
    monkeypatch.setattr(chain, "_send_raw", reached_node_then_nonce_too_low)
    tx_hash, full = chain.send({"to": sender.address, "value": 1, "gas": 21_000}, sender)
    monkeypatch.undo()
    chain.wait(tx_hash, full)
    assert full["nonce"] == before
    assert chain.w3.eth.get_transaction_count(sender.address) == before + 1
    # a real clash (another transaction took the nonce) is still resynced and sent once more
    chain.nonces._next[sender.address] = before  # stale cache: that nonce is taken now
    tx_hash, full = chain.send({"to": sender.address, "value": 2, "gas": 21_000}, sender)
    chain.wait(tx_hash, full)
    assert full["nonce"] == before + 1


def test_resend_keeps_the_nonce_and_reports_a_taken_one(chain):
    sender = chain.keys.account("battery")
    tx_hash, full = chain.send({"to": sender.address, "value": 3, "gas": 21_000}, sender)
    chain.wait(tx_hash, full)
    assert chain.resend(full, sender) is None  # mined: the nonce is taken
    assert chain.resend(full, sender, bumped_fees(full, chain._fees(), 1.25)) is None
