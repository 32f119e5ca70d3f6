"""``gridshare oracle status``: what the oracle did, from its store and the chain, read-only.

:func:`store_status` needs only the store (opened read-only: it works next to a running oracle,
with the node down or reset); :func:`oracle_status` adds the chain's side. A chain that cannot
be read leaves its fields ``None`` and says why in ``chain`` ("ok", "unavailable: ...",
"reset: ..."): status never fails because of the chain.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

import numpy as np

from gridshare.chain.errors import ChainError
from gridshare.chain.identity import ChainResetError
from oracle.store import Store

if TYPE_CHECKING:
    from oracle.service import Oracle

#: The chain's fields of the status (None when the chain cannot be read).
CHAIN_FIELDS = ("head_block", "lag_blocks", "last_interval_on_chain", "next_interval")


def store_status(store: Store, interval_s: int) -> dict[str, Any]:
    """Everything the store knows: processed block, intervals, readings, checks, failures."""
    cursor = store.cursor()
    rows = store.intervals()
    written = [r for r in rows if r.status == "written"]
    filled: dict[str, int] = {}
    for r in written:
        for dev, how in json.loads(r.missing_json or "{}").items():
            filled[dev] = filled.get(dev, 0) + sum(how.values())
    latencies = [r.latency_s for r in written if r.latency_s is not None]
    checked = [r for r in rows if r.nr_points]
    return {
        "store": store.path,
        "processed_block": None if cursor is None else cursor.block_number,
        "intervals_written": len(written),
        "intervals_skipped": [r.interval for r in rows if r.status == "skipped"],
        "infeasible_steps": sum(r.infeasible_steps for r in written),
        "filled_meter_minutes": filled,
        "tx_failures": len(store.failures()),
        "median_latency_s": float(np.median(latencies)) if latencies else None,
        **store.counts(interval_s),
        "nr_check": {
            "points": sum(r.nr_points for r in checked),
            "failed_points": sum(r.nr_failed for r in checked),
            "bands_narrowed": sum(1 for r in checked if r.nr_narrowed),
            "bands_not_written": [r.interval for r in checked if r.status == "skipped"],
        },
        "stale_bands": {str(r.interval): r.stale_reason for r in written if r.stale_reason},
    }


def oracle_status(oracle: Oracle) -> dict[str, Any]:
    """The store's status plus the chain's side (see the module docstring)."""
    out: dict[str, Any] = {
        "chain_id": int(oracle.chain.chain_id), "capacity": oracle.capacity.address,
        "feeder": oracle.deployment.feeder, "interval_s": oracle.interval_s,
        "deployment_interval": oracle.deploy_interval, "confirmations": oracle.confirmations,
        "reading_window_s": asdict(oracle.config.window),
        **store_status(oracle.store, oracle.interval_s),
        "ocm": asdict(oracle.config.ocm), "nr": asdict(oracle.config.nr),
        **dict.fromkeys(CHAIN_FIELDS),
    }
    try:
        oracle.check_chain()
        head = int(oracle.chain.w3.eth.block_number)
        out["head_block"] = head
        if out["processed_block"] is not None:
            out["lag_blocks"] = head - out["processed_block"]
        oracle._last_cache = None
        out["last_interval_on_chain"] = oracle.chain_last_interval()
        out["next_interval"] = oracle.next_target()
        out["chain"] = "ok"
    except ChainError as exc:
        out["chain"] = chain_problem(exc)
    return out


def chain_problem(exc: ChainError) -> str:
    """The ``chain`` field for a chain that cannot be read."""
    return f"{'reset' if isinstance(exc, ChainResetError) else 'unavailable'}: {exc}"
