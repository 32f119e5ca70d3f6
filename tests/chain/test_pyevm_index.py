"""Indexed transaction lookups on the embedded chain (gridshare/chain/pyevm_index.py) answer
exactly as eth-tester's scan from the head does, including across a snapshot revert."""

from __future__ import annotations

import pytest
from eth_account import Account
from web3.exceptions import TransactionNotFound

from gridshare.chain import pyevm_index
from gridshare.chain.client import Chain, connect


def _backend_chain(chain: Chain):
    return chain.w3.provider.ethereum_tester.backend.chain


def _transfer(chain: Chain, to: str) -> bytes:
    tx_hash, _ = chain.send({"to": to, "value": 1, "gas": 21_000}, "deployer")
    return bytes(tx_hash)


@pytest.fixture
def chain() -> Chain:
    return connect()


def test_every_lookup_equals_the_scan(chain: Chain) -> None:
    to = Account.create().address
    hashes = [_transfer(chain, to) for _ in range(30)]
    evm = _backend_chain(chain)
    for tx_hash in hashes:
        block, tx, index = pyevm_index.indexed_transaction_by_hash(evm, tx_hash)
        s_block, s_tx, s_index = pyevm_index._scan(evm, tx_hash)
        assert (block.hash, tx.hash, index) == (s_block.hash, s_tx.hash, s_index)
        receipt = chain.w3.eth.get_transaction_receipt(tx_hash)
        assert receipt["blockNumber"] == block.number and receipt["transactionIndex"] == index


def test_a_reverted_transaction_is_gone_and_its_replacement_found(chain: Chain) -> None:
    to = Account.create().address
    _transfer(chain, to)
    snapshot = chain.snapshot()
    dropped = _transfer(chain, to)
    dropped_block = chain.w3.eth.get_transaction_receipt(dropped)["blockNumber"]
    chain.revert(snapshot)
    # py-evm keeps the dropped transaction's index entry; the lookup must not believe it
    with pytest.raises(TransactionNotFound):
        chain.w3.eth.get_transaction_receipt(dropped)
    replacement = _transfer(chain, Account.create().address)
    receipt = chain.w3.eth.get_transaction_receipt(replacement)
    assert receipt["blockNumber"] == dropped_block
    assert bytes(receipt["transactionHash"]) == replacement
    with pytest.raises(TransactionNotFound):
        chain.w3.eth.get_transaction_receipt(dropped)


def test_an_unknown_hash_is_not_found(chain: Chain) -> None:
    _transfer(chain, Account.create().address)
    with pytest.raises(TransactionNotFound):
        chain.w3.eth.get_transaction_receipt(b"\x01" * 32)
