"""Transaction lookups by hash on the embedded chain in constant time instead of a scan.

eth-tester 0.14's py-evm backend finds a transaction (``eth_getTransactionByHash``,
``eth_getTransactionReceipt``) by walking back from the head block and hashing every
transaction on the way, and ``eth_getLogs`` asks for the receipt of every transaction in its
range. A receipt therefore costs time proportional to the chain's length and a log scan over a
day of blocks (the DSO audit after ``gridshare simulate``) grows with its square: minutes for
one day. py-evm already keeps a hash -> (block number, index) table of the canonical chain
(``ChainDB.get_transaction_index``); :func:`install` makes eth-tester's lookup use it.

The answer is the one eth-tester's scan gives: the pending block is searched first as before; an
indexed hit is used only when its block is canonical, not above the head, and holds that very
transaction at that index. Anything else (a transaction of a block a snapshot revert dropped,
whose index entry py-evm keeps) falls back to eth-tester's own scan.
"""

from __future__ import annotations

from typing import Any

from eth.exceptions import BlockNotFound
from eth.exceptions import TransactionNotFound as EvmTransactionNotFound
from eth_tester.backends.pyevm import main as pyevm_main

_scan = pyevm_main._get_transaction_by_hash


def indexed_transaction_by_hash(chain: Any, transaction_hash: bytes) -> tuple[Any, Any, int]:
    """(block, transaction, index) of ``transaction_hash``, as eth-tester's scan returns it."""
    head = chain.get_block()  # the pending block: not in py-evm's table yet
    for index, transaction in enumerate(head.transactions):
        if transaction.hash == transaction_hash:
            return head, transaction, index
    try:
        number, index = chain.chaindb.get_transaction_index(transaction_hash)
        if number < head.number:
            block = chain.get_canonical_block_by_number(number)
            if index < len(block.transactions) and \
                    block.transactions[index].hash == transaction_hash:
                return block, block.transactions[index], index
    except (EvmTransactionNotFound, BlockNotFound):
        pass
    return _scan(chain, transaction_hash)


def install() -> None:
    """Make eth-tester's py-evm backend look transactions up through py-evm's index (idempotent;
    affects only eth-tester in this process)."""
    pyevm_main._get_transaction_by_hash = indexed_transaction_by_hash
