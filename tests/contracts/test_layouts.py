"""The byte layouts and digests documented in docs/interfaces.md, checked on the embedded chain.

Readings: 24-byte ``struct.pack(">IIiiIi", ...)`` records; vehicle sessions: 16-byte
``struct.pack(">IIII", ...)`` records; BandsWritten: 20-byte
``struct.pack(">Iqq", ...)`` records; meter totals: 12-byte ``struct.pack(">Iq", ...)``
records; the market's ``hashOrder`` equals the EIP-712 digest that ``eth_account`` computes for
the documented domain and type; its ``bookHash`` equals ``market.orders.book_hash``.
"""

from __future__ import annotations

import struct
from typing import Any

import pytest
from eth_account.messages import _hash_eip191_message, encode_typed_data
from eth_utils import keccak
from web3 import EthereumTesterProvider, Web3
from web3.contract import Contract

from gridshare.chain.artifacts import load_artifact
from gridshare.chain.metering import decode_totals, encode_totals
from market.orders import Side, book_hash
from oracle.sessions import decode_sessions, encode_sessions

ORDER_TYPES = {
    "Order": [
        {"name": "prosumer", "type": "address"},
        {"name": "interval", "type": "uint64"},
        {"name": "side", "type": "uint8"},
        {"name": "energyWh", "type": "uint64"},
        {"name": "priceMicroEurPerKwh", "type": "uint64"},
        {"name": "nonce", "type": "uint64"},
        {"name": "deadline", "type": "uint64"},
    ]
}


@pytest.fixture(scope="module")
def deployed() -> dict[str, Any]:
    w3 = Web3(EthereumTesterProvider())
    dso, meter, battery, oracle = w3.eth.accounts[:4]

    def deploy(name: str, *args: Any) -> Contract:
        art = load_artifact(name)
        factory = w3.eth.contract(abi=art["abi"], bytecode=art["bytecode"])
        receipt = w3.eth.wait_for_transaction_receipt(factory.constructor(*args).transact())
        return w3.eth.contract(address=receipt.contractAddress, abi=art["abi"])

    cap = deploy("GridCapacity", dso, 86_400, 900, 3600, 96)
    cap.functions.registerDevice(5, 1, 0, battery, meter, -50_000, 50_000).transact({"from": dso})
    cap.functions.registerDevice(6, 2, 1, dso, meter, 0, 11_000).transact({"from": dso})
    cap.functions.grantRole(cap.functions.ORACLE_ROLE().call(), oracle).transact({"from": dso})
    market = deploy("GridMarket", dso, 86_400, cap.address, 5, battery,
                    (300_000, 80_000, 350_000, 50_000), (50_000, 400_000, 1_000_000))
    return {"w3": w3, "cap": cap, "market": market, "dso": dso, "meter": meter,
            "oracle": oracle}


def _now_interval(deployed: dict[str, Any]) -> int:
    return int(deployed["w3"].eth.get_block("latest")["timestamp"]) // 900


def test_readings_blob_round_trips_through_the_event(deployed: dict[str, Any]) -> None:
    records = [
        (5, 1_800_000_000, -4_500, 300, 1_012_345, -12_000),
        (6, 1_800_000_060, 11_000, -2_147_483_648, 4_294_967_295, 2_147_483_647),
    ]
    packed = b"".join(struct.pack(">IIiiIi", *r) for r in records)
    assert len(packed) == 24 * len(records)
    tx = deployed["cap"].functions.postReadings(packed).transact({"from": deployed["meter"]})
    receipt = deployed["w3"].eth.wait_for_transaction_receipt(tx)
    (event,) = deployed["cap"].events.ReadingsPosted().process_receipt(receipt)
    assert event["args"]["meter"] == deployed["meter"]
    assert event["args"]["count"] == len(records)
    assert list(struct.iter_unpack(">IIiiIi", event["args"]["packed"])) == records


def test_sessions_blob_round_trips_through_the_event(deployed: dict[str, Any]) -> None:
    records = [(6, 1_800_000_000, 1_800_028_800, 35_340),
               (0, 0, 4_294_967_295, 4_294_967_295)]
    packed = b"".join(struct.pack(">IIII", *r) for r in records)
    assert packed == encode_sessions(records)  # the oracle's encoder writes the same bytes
    tx = deployed["cap"].functions.declareSessions(packed).transact({"from": deployed["meter"]})
    receipt = deployed["w3"].eth.wait_for_transaction_receipt(tx)
    (event,) = deployed["cap"].events.SessionsDeclared().process_receipt(receipt)
    assert (event["args"]["meter"], event["args"]["count"]) == (deployed["meter"], 2)
    assert list(struct.iter_unpack(">IIII", event["args"]["packed"])) == records
    assert [tuple(int(v) for v in r) for r in decode_sessions(event["args"]["packed"]).tolist()
            ] == records


def test_bands_event_records_unpack_as_documented(deployed: dict[str, Any]) -> None:
    bands = [(5, -50_000, 12_345), (6, 0, 7_400)]  # ascending registration index
    ids, lo, hi = (list(col) for col in zip(*bands, strict=True))
    interval = _now_interval(deployed) + 1
    tx = (
        deployed["cap"]
        .functions.writeBands(interval, b"\x07" * 32, ids, lo, hi)
        .transact({"from": deployed["oracle"]})
    )
    receipt = deployed["w3"].eth.wait_for_transaction_receipt(tx)
    (event,) = deployed["cap"].events.BandsWritten().process_receipt(receipt)
    assert event["args"]["interval"] == interval
    assert list(struct.iter_unpack(">Iqq", event["args"]["bands"])) == bands
    assert deployed["cap"].functions.bandOf(5, interval).call()[:2] == [-50_000, 12_345]


def test_meter_totals_records_unpack_as_documented(deployed: dict[str, Any]) -> None:
    totals = {5: -2**63, 6: 2**63 - 1}
    blob = encode_totals(totals)
    assert list(struct.iter_unpack(">Iq", blob)) == sorted(totals.items())
    interval = _now_interval(deployed) - 1
    tx = deployed["cap"].functions.writeMeterTotals(interval, blob).transact(
        {"from": deployed["oracle"]})
    receipt = deployed["w3"].eth.wait_for_transaction_receipt(tx)
    (event,) = deployed["cap"].events.MeterTotalsWritten().process_receipt(receipt)
    assert decode_totals(event["args"]["totals"]) == totals
    assert deployed["cap"].functions.meterTotalsHash(interval).call() == keccak(blob)


def test_book_hash_equals_the_python_hash_chain(deployed: dict[str, Any]) -> None:
    market, w3 = deployed["market"], deployed["w3"]
    member = w3.eth.accounts[5]
    market.functions.registerProsumer(member, 6).transact({"from": deployed["dso"]})
    interval = _now_interval(deployed) + 2
    entries = []
    for nonce, (side, energy, price) in enumerate([(Side.BUY, 1_000, 200_000),
                                                   (Side.SELL, 2**19, 50_000)]):
        order = (member, interval, int(side), energy, price, nonce, 2**63)
        w3.eth.wait_for_transaction_receipt(
            market.functions.submitOrder(order).transact({"from": member}))
        entries.append((member, int(side), energy, price))
    assert market.functions.intervalState(interval).call()[0] == book_hash(entries)


def test_hash_order_equals_eth_account_eip712_digest(deployed: dict[str, Any]) -> None:
    market = deployed["market"]
    order = {
        "prosumer": deployed["meter"],
        "interval": 2_000_000,
        "side": 1,
        "energyWh": 1_234,
        "priceMicroEurPerKwh": 123_456,
        "nonce": 3,
        "deadline": 1_900_000_000,
    }
    domain = {
        "name": "gridshare-market",
        "version": "1",
        "chainId": deployed["w3"].eth.chain_id,
        "verifyingContract": market.address,
    }
    expected = _hash_eip191_message(encode_typed_data(domain, ORDER_TYPES, order))
    assert market.functions.hashOrder(order).call() == expected
    order["nonce"] = 4
    assert market.functions.hashOrder(order).call() != expected
