"""The one event reader (gridshare.chain.events) on the embedded chain and on anvil: windows,
incremental reads, reorgs by snapshot/revert and by ``anvil_reorg``, the depth limit,
confirmations, a read the chain changed under, threads.

Uses the ``Probe`` contract of ``data/probe.json`` (event ``Stored(by, value)``).
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from gridshare.chain.client import Artifact, Chain
from gridshare.chain.events import EventReader, ReorgTooDeepError, block_windows

PROBE = Artifact.load(Path(__file__).parent / "data" / "probe.json")


@pytest.fixture
def probe(chain: Chain):
    contract, receipt = chain.deploy(PROBE, "deployer")
    return contract, int(receipt["blockNumber"])


def store(chain: Chain, contract, *values: int) -> None:
    for value in values:
        chain.transact(contract.functions.store(value), "oracle")


def values(logs) -> list[int]:
    return [int(e["args"]["value"]) for e in logs]


def spy_get_logs(chain: Chain, monkeypatch) -> list[tuple[int, int]]:
    """Record (fromBlock, toBlock) of every eth_getLogs call made through ``chain.w3``."""
    calls: list[tuple[int, int]] = []
    real = chain.w3.eth.get_logs

    def spy(params):
        calls.append((int(params["fromBlock"]), int(params["toBlock"])))
        return real(params)

    monkeypatch.setattr(chain.w3.eth, "get_logs", spy)
    return calls


def test_block_windows_cover_the_range_in_bounded_pieces() -> None:
    assert list(block_windows(5, 11, 3)) == [(5, 7), (8, 10), (11, 11)]
    assert list(block_windows(5, 5, 50)) == [(5, 5)]
    assert list(block_windows(6, 5, 3)) == []


def test_windows_never_wider_than_asked_and_reads_are_incremental(chain: Chain, probe,
                                                                  monkeypatch) -> None:
    contract, deploy_block = probe
    store(chain, contract, 1, 2, 3, 4, 5, 6, 7)
    calls = spy_get_logs(chain, monkeypatch)
    reader = EventReader(chain, contract, deploy_block, window_blocks=2)
    assert values(reader.logs("Stored")) == [1, 2, 3, 4, 5, 6, 7]
    assert calls and all(0 <= hi - lo < 2 for lo, hi in calls)
    first_head = reader.position("Stored")[0]
    covered = sorted(b for lo, hi in calls for b in range(lo, hi + 1))
    assert covered == list(range(deploy_block, first_head + 1))  # each block read once
    calls.clear()
    store(chain, contract, 8)
    assert values(reader.logs("Stored")) == list(range(1, 9))
    assert calls and min(lo for lo, _ in calls) == first_head + 1  # only the new blocks
    assert all(0 <= hi - lo < 2 for lo, hi in calls)
    # a past block bounds the answer without reading anything before it again
    third = reader.logs("Stored")[2]
    assert values(reader.logs("Stored", to_block=int(third["blockNumber"]))) == [1, 2, 3]
    # the all-logs stream is separate and decodes the same events
    assert values(reader.logs()) == list(range(1, 9))


def test_reorg_replacing_logs_reports_the_dropped_ones(chain: Chain, probe) -> None:
    contract, deploy_block = probe
    store(chain, contract, 1, 2)
    reader = EventReader(chain, contract, deploy_block, window_blocks=3)
    assert values(reader.logs("Stored")) == [1, 2]
    snapshot = chain.snapshot()
    store(chain, contract, 5, 6)  # dropped by the revert below
    assert values(reader.logs("Stored")) == [1, 2, 5, 6]
    old_head = reader.position("Stored")[0]
    chain.revert(snapshot)
    store(chain, contract, 7)  # the new branch
    result = reader.read("Stored")
    assert result.reorg is not None and not result.retry
    assert values(result.reorg.dropped) == [5, 6]
    assert result.reorg.old_head_block == old_head
    assert result.reorg.depth == old_head - result.reorg.ancestor_block > 0
    assert values(result.logs) == [7]
    assert values(reader.logs("Stored")) == [1, 2, 7]
    assert reader.position("Stored")[1] == chain.w3.eth.get_block(
        reader.position("Stored")[0])["hash"].to_0x_hex()


def test_rollback_below_the_scanned_head(chain: Chain, probe) -> None:
    """The chain goes back below the block the reader had scanned (on the embedded chain that
    block no longer exists at all): the logs above the fork are gone, the rest stay."""
    contract, deploy_block = probe
    store(chain, contract, 1)
    snapshot = chain.snapshot()
    fork = chain.block_number
    store(chain, contract, 2, 3, 4)
    reader = EventReader(chain, contract, deploy_block)
    assert values(reader.logs("Stored")) == [1, 2, 3, 4]
    chain.revert(snapshot)
    reorg = reader.check("Stored")
    assert reorg is not None and values(reorg.dropped) == [2, 3, 4]
    assert deploy_block <= reorg.ancestor_block <= fork
    assert values(reader.logs("Stored")) == [1]
    assert reader.check("Stored") is None  # nothing changed since


def test_reorg_deeper_than_the_limit_raises(chain: Chain, probe) -> None:
    contract, deploy_block = probe
    snapshot = chain.snapshot()
    store(chain, contract, 1, 2, 3, 4)  # one block each
    reader = EventReader(chain, contract, deploy_block, window_blocks=1, max_reorg_depth=2)
    assert values(reader.logs("Stored")) == [1, 2, 3, 4]
    chain.revert(snapshot)
    store(chain, contract, 9)
    with pytest.raises(ReorgTooDeepError, match="within 2 blocks"):
        reader.logs("Stored")
    assert values(reader.logs("Stored")) == [9]  # the stream started over


def test_seek_resumes_from_a_callers_record_and_checks_it(chain: Chain, probe) -> None:
    contract, deploy_block = probe
    store(chain, contract, 1, 2)
    first = EventReader(chain, contract, deploy_block, keep_logs=False)
    done = first.read()
    assert values(done.logs) == [1, 2] and done.to_hash == done.block_hashes[done.to_block]
    snapshot = chain.snapshot()
    store(chain, contract, 3)
    resumed = EventReader(chain, contract, deploy_block, keep_logs=False)
    resumed.seek(done.to_block, done.block_hashes)
    assert values(resumed.read().logs) == [3]
    chain.revert(snapshot)
    store(chain, contract, 4)
    resumed.seek(done.to_block + 1, {**done.block_hashes, done.to_block + 1: "0x" + "00" * 32})
    result = resumed.read()
    assert result.reorg is not None and result.reorg.ancestor_block == done.to_block
    assert result.reorg.dropped == ()  # keep_logs=False: nothing kept, nothing to list
    assert values(result.logs) == [4]
    with pytest.raises(ValueError, match="keep_logs"):
        resumed.logs()
    with pytest.raises(ValueError, match="hash of block"):
        resumed.seek(done.to_block, {})


@pytest.mark.anvil
def test_anvil_reorg_replaces_the_last_blocks(anvil) -> None:
    from gridshare.chain.client import connect
    from gridshare.chain.config import ChainConfig

    chain = connect(ChainConfig(chain=anvil.url, receipt_timeout_s=20.0))
    contract, receipt = chain.deploy(PROBE, "deployer")
    store(chain, contract, 1)
    reader = EventReader(chain, contract, int(receipt["blockNumber"]))
    assert values(reader.logs("Stored")) == [1]
    store(chain, contract, 2, 3)
    assert values(reader.logs("Stored")) == [1, 2, 3]
    first_dropped = reader.logs("Stored")[1]["blockNumber"]
    chain._rpc("anvil_reorg", [chain.block_number - int(first_dropped) + 1, []])
    chain.nonces.resync()
    result = reader.read("Stored")
    assert result.reorg is not None and values(result.reorg.dropped) == [2, 3]
    assert values(reader.logs("Stored")) == [1]
    store(chain, contract, 4)
    assert values(reader.logs("Stored")) == [1, 4]


def test_confirmations_hold_back_the_newest_blocks(embedded_chain: Chain) -> None:
    chain = embedded_chain
    contract, receipt = chain.deploy(PROBE, "deployer")
    store(chain, contract, 1, 2, 3)  # one block each on the embedded chain
    reader = EventReader(chain, contract, int(receipt["blockNumber"]), confirmations=2)
    assert values(reader.logs("Stored")) == [1]
    assert reader.position("Stored")[0] == chain.block_number - 2
    chain.advance_time(1)
    assert values(reader.logs("Stored")) == [1, 2]


def test_read_the_chain_changed_under_is_not_taken(embedded_chain: Chain, monkeypatch) -> None:
    chain = embedded_chain
    contract, receipt = chain.deploy(PROBE, "deployer")
    snapshot = chain.snapshot()
    store(chain, contract, 1, 2)
    real = chain.w3.eth.get_logs
    switched: list[bool] = []

    def switch_branch_during_the_read(params):
        out = real(params)
        if not switched:  # the first window's logs come from the branch about to vanish
            switched.append(True)
            chain.revert(snapshot)
            store(chain, contract, 7, 8)
        return out

    monkeypatch.setattr(chain.w3.eth, "get_logs", switch_branch_during_the_read)
    reader = EventReader(chain, contract, int(receipt["blockNumber"]), window_blocks=1)
    result = reader.read("Stored")
    assert result.retry and not result.advanced and result.logs == ()
    assert reader.position("Stored") == (int(receipt["blockNumber"]) - 1, None)
    assert values(reader.logs("Stored")) == [7, 8]


def test_threads_share_one_reader(embedded_chain: Chain) -> None:
    chain = embedded_chain
    contract, receipt = chain.deploy(PROBE, "deployer")
    reader = EventReader(chain, contract, int(receipt["blockNumber"]), window_blocks=2)
    seen: list[list[int]] = []
    errors: list[BaseException] = []

    def read_repeatedly() -> None:
        try:
            for _ in range(20):
                seen.append(values(reader.logs("Stored")))
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=read_repeatedly) for _ in range(4)]
    for t in threads:
        t.start()
    store(chain, contract, *range(1, 11))
    for t in threads:
        t.join()
    assert not errors
    assert all(s == list(range(1, len(s) + 1)) for s in seen)  # prefixes, no duplicates
    assert values(reader.logs("Stored")) == list(range(1, 11))
