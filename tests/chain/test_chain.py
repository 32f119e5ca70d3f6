"""Chain access: signed transactions, nonces, revert decoding, dead nodes, PoA detection.

Uses ``data/probe.json``: a tiny contract compiled from the Solidity source stored in the same
file (solc 0.8.28, cancun) with one custom error per shape, ``Error(string)``, a panic and an
event. Runs on the embedded chain and on anvil (``chain`` fixture in tests/conftest.py).
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from eth_abi import encode as abi_encode
from eth_utils import function_signature_to_4byte_selector, to_checksum_address
from web3.exceptions import Web3RPCError

from gridshare.chain.client import Artifact, Chain, connect, wait_for_chain
from gridshare.chain.config import ChainConfig
from gridshare.chain.devnet import qbft_extra_data
from gridshare.chain.errors import (
    ChainError,
    ChainUnavailable,
    ContractRevert,
    ErrorDecoder,
    TransactionRejected,
    to_chain_error,
)

PROBE = Artifact.load(Path(__file__).parent / "data" / "probe.json")


@pytest.fixture
def probe(chain: Chain):
    contract, _ = chain.deploy(PROBE, "deployer")
    return contract


# ----------------------------------------------------------------------------- happy path
def test_transact_mines_and_emits_event(chain: Chain, probe) -> None:
    receipt = chain.transact(probe.functions.store(42), "oracle")
    assert receipt["status"] == 1
    events = chain.events(receipt, probe, "Stored")
    assert [(e["args"]["by"], e["args"]["value"]) for e in events] == [
        (chain.keys.address("oracle"), 42)
    ]
    assert chain.call(probe.functions.value()) == 42


def test_deploy_sets_constructor_state(chain: Chain, probe) -> None:
    assert chain.call(probe.functions.owner()) == chain.keys.address("deployer")


# ----------------------------------------------------------------------------- reverts
@pytest.mark.parametrize("explicit_gas", [None, 300_000], ids=["estimated", "explicit-gas"])
def test_custom_error_decoded_with_args(chain: Chain, probe, explicit_gas) -> None:
    with pytest.raises(ContractRevert, match=r"TooLarge\(value=101, limit=100\)") as info:
        chain.transact(probe.functions.store(101), "oracle", gas=explicit_gas)
    assert info.value.error_name == "TooLarge"
    assert info.value.error_args == {"value": 101, "limit": 100}
    if explicit_gas is None:
        assert info.value.tx_hash is None  # caught by the estimate, nothing was sent
    else:
        assert info.value.tx_hash is not None  # mined with status 0, reason replayed
        receipt = chain.w3.eth.get_transaction_receipt(info.value.tx_hash)
        assert receipt["status"] == 0
    assert chain.call(probe.functions.value()) == 0


@pytest.mark.parametrize("explicit_gas", [None, 300_000], ids=["estimated", "explicit-gas"])
def test_wrong_caller_custom_error_names_caller(chain: Chain, probe, explicit_gas) -> None:
    with pytest.raises(ContractRevert) as info:
        chain.transact(probe.functions.ownerOnly(), "oracle", gas=explicit_gas)
    assert info.value.error_name == "NotOwner"
    assert info.value.error_args == {"caller": chain.keys.address("oracle")}
    chain.transact(probe.functions.ownerOnly(), "deployer", gas=explicit_gas)
    assert chain.call(probe.functions.value()) == 1


@pytest.mark.parametrize("explicit_gas", [None, 300_000], ids=["estimated", "explicit-gas"])
def test_error_string_and_panic(chain: Chain, probe, explicit_gas) -> None:
    with pytest.raises(ContractRevert) as info:
        chain.transact(probe.functions.fail("no band"), "oracle", gas=explicit_gas)
    assert (info.value.error_name, info.value.reason) == ("Error", "no band")
    with pytest.raises(ContractRevert) as info:
        chain.transact(probe.functions.panic(7), "oracle", gas=explicit_gas)
    assert info.value.error_name == "Panic"
    assert info.value.error_args == {"code": 0x32}


def test_call_revert_is_project_error(chain: Chain, probe) -> None:
    with pytest.raises(ContractRevert) as info:
        chain.call(probe.functions.store(1000))
    assert info.value.error_args == {"value": 1000, "limit": 100}
    assert chain.call(probe.functions.panic(0)) == 0


def test_nonce_not_consumed_by_reverting_estimate(chain: Chain, probe) -> None:
    address = chain.keys.address("settler")
    before = chain.w3.eth.get_transaction_count(address)
    with pytest.raises(ContractRevert):
        chain.transact(probe.functions.store(500), "settler")
    chain.transact(probe.functions.store(5), "settler")
    assert chain.w3.eth.get_transaction_count(address) == before + 1


# ----------------------------------------------------------------------------- nonces
def test_concurrent_sends_get_distinct_consecutive_nonces(chain: Chain, probe) -> None:
    address = chain.keys.address("oracle")
    start = chain.w3.eth.get_transaction_count(address)
    n_threads, per_thread = 6, 3
    receipts: list = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def worker(k: int) -> None:
        try:
            for j in range(per_thread):
                # never 0: a store that finds the slot zeroed by another thread costs 20k gas
                # more than its estimate made before (SSTORE zero -> non-zero), a gas race of
                # concurrent state-dependent sends, not a nonce problem
                value = k * per_thread + j + 1
                receipt = chain.transact(probe.functions.store(value), "oracle")
                with lock:
                    receipts.append(receipt)
        except BaseException as exc:  # collected and asserted below
            with lock:
                errors.append(exc)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert errors == []
    nonces = sorted(
        chain.w3.eth.get_transaction(r["transactionHash"])["nonce"] for r in receipts
    )
    assert nonces == list(range(start, start + n_threads * per_thread))
    assert chain.w3.eth.get_transaction_count(address) == start + n_threads * per_thread


def test_stale_nonce_cache_resyncs_from_node(chain: Chain, probe) -> None:
    chain.transact(probe.functions.store(1), "oracle")  # primes the cache
    other = Chain(chain.w3, chain.config)  # second sender process, same key
    other.transact(probe.functions.store(2), "oracle")
    other.transact(probe.functions.store(3), "oracle")
    receipt = chain.transact(probe.functions.store(4), "oracle")  # cached nonce is too low
    assert receipt["status"] == 1
    assert chain.call(probe.functions.value()) == 4


def test_snapshot_revert_restores_state_and_nonces(chain: Chain, probe) -> None:
    snap = chain.snapshot()
    chain.transact(probe.functions.store(9), "oracle")
    chain.revert(snap)
    assert chain.call(probe.functions.value()) == 0
    chain.transact(probe.functions.store(8), "oracle")
    assert chain.call(probe.functions.value()) == 8


def test_unfunded_sender_is_rejected_not_reverted(chain: Chain, probe) -> None:
    from eth_account import Account

    pauper = Account.create()
    with pytest.raises(TransactionRejected):
        chain.transact(probe.functions.store(1), pauper, gas=100_000)


def test_transfer_and_ensure_funded(chain: Chain) -> None:
    from eth_account import Account

    target = Account.create().address
    assert chain.ensure_funded(target, 10**18, "deployer", 2 * 10**18) is True
    assert chain.w3.eth.get_balance(target) == 2 * 10**18
    assert chain.ensure_funded(target, 10**18, "deployer", 2 * 10**18) is False


# ----------------------------------------------------------------------------- logs
def test_get_logs_in_windows_returns_every_event(chain: Chain, probe) -> None:
    first = chain.block_number + 1
    for value in (1, 2, 3, 4, 5):
        chain.transact(probe.functions.store(value), "oracle")
    last = chain.block_number
    event = probe.events.Stored
    values = [e["args"]["value"] for e in chain.get_logs(event, first, last, max_range=2)]
    assert values == [1, 2, 3, 4, 5]
    with pytest.raises(ValueError, match="from_block"):
        chain.get_logs(event, last, first)
    with pytest.raises(ValueError, match="max_range"):
        chain.get_logs(event, first, last, max_range=0)


def test_advance_time_moves_block_timestamp(chain: Chain) -> None:
    before = chain.w3.eth.get_block("latest")["timestamp"]
    after = chain.advance_time(3600)
    assert after >= before + 3600


# ----------------------------------------------------------------------------- dead node
def test_dead_rpc_node_raises_chain_unavailable(unused_tcp_port: int) -> None:
    url = f"http://127.0.0.1:{unused_tcp_port}"  # nothing listens there
    started = time.monotonic()
    with pytest.raises(ChainUnavailable) as info:
        connect(ChainConfig(chain=url, retries=2, backoff_s=0.01, request_timeout_s=1.0))
    assert info.value.attempts == 3
    assert url in str(info.value)
    assert time.monotonic() - started < 10


def test_wait_for_chain_times_out_cleanly(unused_tcp_port: int) -> None:
    config = ChainConfig(chain=f"http://127.0.0.1:{unused_tcp_port}", retries=0)
    started = time.monotonic()
    with pytest.raises(ChainUnavailable, match="wait timed out"):
        wait_for_chain(config, timeout_s=0.6, poll_s=0.2)
    assert 0.4 < time.monotonic() - started < 10


@pytest.mark.anvil
def test_wait_for_chain_returns_once_blocks_exist(anvil) -> None:
    chain = wait_for_chain(ChainConfig(chain=anvil.url), timeout_s=10, min_block=1, poll_s=0.2)
    assert chain.block_number >= 1


class _StubRPC(BaseHTTPRequestHandler):
    """A QBFT-like node: fails the first ``fail_first`` requests with HTTP 503."""

    fail_first = 0
    fail_status = 503
    seen = 0
    extra_data = "0x"

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        cls = type(self)
        cls.seen += 1
        if cls.seen <= cls.fail_first:
            self.send_response(cls.fail_status)
            self.end_headers()
            return
        method = body["method"]
        if method == "eth_chainId":
            result: object = "0x14663a"
        elif method == "eth_getBlockByNumber":
            result = {
                "number": "0x0", "hash": "0x" + "11" * 32, "parentHash": "0x" + "00" * 32,
                "extraData": cls.extra_data, "gasLimit": "0x1c9c380", "gasUsed": "0x0",
                "timestamp": "0x0", "miner": "0x" + "00" * 20, "difficulty": "0x1",
                "baseFeePerGas": "0x0", "transactions": [], "uncles": [],
                "nonce": "0x0000000000000000", "sha3Uncles": "0x" + "00" * 32,
                "logsBloom": "0x" + "00" * 256, "transactionsRoot": "0x" + "00" * 32,
                "stateRoot": "0x" + "00" * 32, "receiptsRoot": "0x" + "00" * 32,
                "mixHash": "0x" + "00" * 32, "size": "0x0", "totalDifficulty": "0x1",
            }
        else:
            result = None
        payload = json.dumps({"jsonrpc": "2.0", "id": body["id"], "result": result}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args: object) -> None:
        return


@pytest.fixture
def stub_rpc() -> Iterator[tuple[str, type[_StubRPC]]]:
    handler = type("Handler", (_StubRPC,), {"seen": 0, "fail_first": 0, "fail_status": 503,
                                            "extra_data": "0x"})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", handler
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_connection_errors_are_retried(stub_rpc) -> None:
    url, handler = stub_rpc
    handler.fail_first = 2
    chain = connect(ChainConfig(chain=url, retries=3, backoff_s=0.01, poa=False))
    assert chain.chain_id == 0x14663A
    assert handler.seen >= 3


def test_too_many_failures_is_unavailable(stub_rpc) -> None:
    url, handler = stub_rpc
    handler.fail_first = 100
    with pytest.raises(ChainUnavailable, match="503"):
        connect(ChainConfig(chain=url, retries=1, backoff_s=0.01, poa=False))


def test_client_errors_are_not_retried(stub_rpc) -> None:
    url, handler = stub_rpc
    handler.fail_first, handler.fail_status = 100, 401
    with pytest.raises(ChainError, match="401") as info:
        connect(ChainConfig(chain=url, retries=3, backoff_s=0.01, poa=False))
    assert not isinstance(info.value, ChainUnavailable)
    assert handler.seen == 1


def test_qbft_extra_data_gets_poa_middleware(stub_rpc) -> None:
    url, handler = stub_rpc
    validators = ["0x" + f"{i:040x}" for i in (1, 2, 3, 4)]
    handler.extra_data = qbft_extra_data(validators)
    chain = connect(ChainConfig(chain=url, retries=0))
    block = chain.w3.eth.get_block(0)
    assert bytes(block["proofOfAuthorityData"]).hex() == handler.extra_data[2:]
    # without the middleware web3's validation rejects the >32-byte extraData
    plain = connect(ChainConfig(chain=url, retries=0, poa=False))
    with pytest.raises(Exception, match="extraData"):
        plain.w3.eth.get_block(0)


# ----------------------------------------------------------------------------- decoding
ABI_WITH_TUPLE = [
    {"type": "error", "name": "BadTrade", "inputs": [
        {"name": "trade", "type": "tuple", "components": [
            {"name": "buyer", "type": "address"}, {"name": "energyWh", "type": "uint64"}]},
        {"name": "", "type": "int64"}]},
    {"type": "function", "name": "f", "inputs": [], "outputs": []},
]


def test_decoder_handles_tuples_and_unnamed_args() -> None:
    decoder = ErrorDecoder([ABI_WITH_TUPLE])
    selector = function_signature_to_4byte_selector("BadTrade((address,uint64),int64)")
    buyer = "0x" + "ab" * 20  # decoded back checksummed
    data = selector + abi_encode(["(address,uint64)", "int64"], [(buyer, 7), -3])
    revert = decoder.decode(data)
    assert revert.error_name == "BadTrade"
    assert revert.error_args == {"trade": (to_checksum_address(buyer), 7), "arg1": -3}
    assert decoder.error_names == {"BadTrade"}


def test_decoder_unknown_and_garbage_data() -> None:
    decoder = ErrorDecoder([ABI_WITH_TUPLE])
    unknown = decoder.decode(bytes.fromhex("deadbeef"))
    assert unknown.error_name is None and "deadbeef" in str(unknown)
    selector = function_signature_to_4byte_selector("BadTrade((address,uint64),int64)")
    garbage = decoder.decode(selector + b"\x01")
    assert garbage.error_name is None and "undecodable" in str(garbage)
    assert decoder.decode(b"").error_name is None


def test_besu_style_rpc_error_with_revert_data() -> None:
    decoder = ErrorDecoder([PROBE.abi])
    data = function_signature_to_4byte_selector("TooLarge(uint256,uint256)") + abi_encode(
        ["uint256", "uint256"], [500, 100]
    )
    exc = Web3RPCError(
        "Execution reverted",
        rpc_response={"jsonrpc": "2.0", "id": 1, "error": {
            "code": -32000, "message": "Execution reverted", "data": "0x" + data.hex()}},
    )
    revert = to_chain_error(exc, decoder)
    assert isinstance(revert, ContractRevert)
    assert revert.error_args == {"value": 500, "limit": 100}
    not_revert = Web3RPCError("x", rpc_response={"error": {"code": -32003, "message": "nonce"}})
    assert to_chain_error(not_revert, decoder) is None


# ----------------------------------------------------------------------------- fixtures
def _conftest():
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "conftest.py"
    spec = importlib.util.spec_from_file_location("gridshare_tests_conftest", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve their module while executing
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def test_missing_tool_skips_locally_and_fails_in_ci(monkeypatch) -> None:
    conftest = _conftest()
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception):
        conftest.missing_tool("anvil not installed")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI must install"):
        conftest.missing_tool("anvil not installed")


def test_find_anvil_honours_override(monkeypatch, tmp_path: Path) -> None:
    conftest = _conftest()
    monkeypatch.setenv("GRIDSHARE_ANVIL", str(tmp_path / "no-such-anvil"))
    assert conftest.find_anvil() is None
    fake = tmp_path / "anvil"
    fake.write_text("#!/bin/sh\n")
    fake.chmod(0o755)
    monkeypatch.setenv("GRIDSHARE_ANVIL", str(fake))
    assert conftest.find_anvil() == fake
