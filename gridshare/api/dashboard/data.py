"""What the dashboard shows, read through the API's own readers and cached per block.

Sources (no reader of its own): the capacity contract's logs through the audit's
``EventReader`` (``CapacityAudit.reader``: ``DeviceRegistered``, ``BandsWritten``,
``ReadingsPosted``) and ``CapacityAudit.compliance``; the market's logs through
``MarketChain`` (``settlements``, its reader's ``OrderPlaced`` and ``DeviationsSettled``,
``replay``); the order gateway's health (relay backlog, SQLite); the oracle's SQLite store,
read-only, when one is found (``GRIDSHARE_ORACLE_DB``, else ``oracle.sqlite`` next to the order
store, where ``gridshare simulate`` leaves it).

Caching: a snapshot is computed at most once per (head block, window). Each refresh reads the
new blocks of the two readers' all-logs streams (``reader.logs()``: one stream per contract)
and counts the logs per event; everything derived from an event (decoded readings, bands,
settlements, the compliance report) is recomputed only when its count changes (or a reorg took
logs away), so a new block without events costs about ten RPC calls. Replays of settled
intervals (``MarketChain.replay``, tens of contract calls each) run in a background thread and
are remembered per settlement transaction; until then an interval's ``replay_equal`` is None.
The same thread runs the audit's costlier checks for the window last shown,
``CapacityAudit.loading`` (branch loading from a load flow of the metered data) and
``CapacityAudit.check_bands`` (stale bands): the snapshot carries the latest result in
``audit_checks`` (``current`` False while it is for an older window or older events).

Units: W, Wh, micro-euro per kWh, per-unit voltage, unix s; interval ids as in the API.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from market.settlement import GRID_ADDRESS
from oracle.ingest import decode_readings

from .feeder import feeder_graph

log = logging.getLogger(__name__)

#: Environment variable naming the oracle's SQLite store (read-only) for the health panel.
ENV_ORACLE_DB = "GRIDSHARE_ORACLE_DB"
#: Most hours of history one snapshot may ask for.
MAX_HOURS = 24.0
#: Seconds the oracle store's status is reused (it is a few SQLite aggregates).
ORACLE_STATUS_TTL_S = 5.0
#: Replays per snapshot on the embedded chain (elsewhere a background thread does them all).
INLINE_REPLAYS = 2
MICRO = 1_000_000


@dataclass
class _Readings:
    """Decoded ``ReadingsPosted`` records so far, with the index of their log's tx hash."""

    n_logs: int = 0
    parts: list[np.ndarray] = field(default_factory=list)
    tx_of_part: list[int] = field(default_factory=list)
    tx_hashes: list[str] = field(default_factory=list)
    array: np.ndarray | None = None
    tx_index: np.ndarray | None = None


class DashboardData:
    """Builds the dashboard's snapshot from an :class:`~gridshare.api.app.ApiState`."""

    def __init__(self, api: Any, clock: Callable[[], float] = time.time) -> None:
        self.api = api
        self.clock = clock
        self._lock = threading.Lock()
        self._readings = _Readings()
        self._bands_key = -1
        self._bands: dict[int, dict[int, Any]] = {}  # interval -> device -> BandRecord
        self._settle_key: tuple[int, ...] = (-1, -1, -1, -1)
        self._intervals_all: dict[int, dict[str, Any]] = {}
        self._devices_key = -1
        self._device_bus: dict[int, int] = {}
        self._compliance: tuple[Any, dict[str, Any]] | None = None
        self._snapshot: tuple[Any, dict[str, Any]] | None = None
        self._oracle_status: tuple[float, dict[str, Any] | None] = (-1e9, None)
        self.replays: dict[tuple[int, str], dict[str, Any]] = {}
        self._replay_thread: threading.Thread | None = None
        self._marks: dict[str, tuple[int, Any]] = {}
        self._logs: dict[str, list[Any]] = {}
        self._derived: tuple[Any, dict[str, Any]] | None = None
        self._extras_wanted: Any = None
        self._extras: tuple[Any, dict[str, Any]] | None = None
        self._stop = threading.Event()

    # ---------------------------------------------------------------- public
    def snapshot(self, hours: float) -> dict[str, Any]:
        """Everything the page shows for the last ``hours`` and the next interval."""
        hours = min(max(float(hours), 0.25), MAX_HOURS)
        self._start_replays()
        head = self.api.chain.w3.eth.get_block("latest")
        key = (int(head["number"]), head["hash"], hours)
        with self._lock:
            if self._snapshot is not None and self._snapshot[0] == key:
                out = dict(self._snapshot[1])
            else:
                out = self._build(head, hours)
                self._snapshot = (key, out)
                out = dict(out)
        out["health"] = {**out["health"], "relay": self._relay()}
        out["generated_unix_s"] = round(self.clock(), 3)
        return out

    def stop(self) -> None:
        """Stop the replay thread (tests)."""
        self._stop.set()

    # ---------------------------------------------------------------- building
    def _build(self, head: Any, hours: float) -> dict[str, Any]:
        api = self.api
        interval_s = int(api.interval_s)
        head_ts = int(head["timestamp"])
        current = head_ts // interval_s
        first = current - max(1, round(hours * 3600 / interval_s)) + 1
        last = current + 1
        self._sync()
        self._update_devices()
        self._update_readings()
        self._update_bands()
        self._update_settlements()
        key = (first, last, self._count(*_EVENTS["capacity"], *_EVENTS["market"]))
        if self._derived is None or self._derived[0] != key:  # new events or another window
            self._derived = (key, {"buses": self._bus_voltages(),
                                   "flexibilities": self._flexibilities(first, last),
                                   "compliance": self._compliance_of(first, last)})
        self._extras_wanted = key
        extras = None if self._extras is None else {
            **self._extras[1], "current": self._extras[0] == key}
        return {
            "deployment": self._deployment(),
            "audit_checks": extras,
            "window": {"from_interval": first, "to_interval": last,
                       "current_interval": current, "interval_s": interval_s,
                       "hours": hours},
            "health": {"chain": self._chain(head), "oracle": self._oracle(current)},
            **self._derived[1],
            "intervals": self._intervals(first, last),
        }

    def _deployment(self) -> dict[str, Any]:
        d = self.api.deployment
        return {"feeder": d.feeder, "chain_id": int(self.api.chain.chain_id),
                "market": d.contracts.get("GridMarket"),
                "capacity": d.contracts.get("GridCapacity"),
                "interval_s": int(self.api.interval_s),
                "battery_device_id": d.battery_device_id}

    # ---------------------------------------------------------------- log streams
    def _sync(self) -> None:
        """Read the new blocks of both contracts' all-logs streams; group the new logs by event.

        A stream that got shorter, or whose log at a remembered position changed, was
        reorganised: the derived state is then rebuilt from scratch (both streams)."""
        while not self._sync_once():
            pass

    def _sync_once(self) -> bool:
        """One pass of :meth:`_sync`; False when it found a reorg and reset everything."""
        for name, reader in (("capacity", self.api.audit.reader), ("market", self.api.mc.reader)):
            logs = reader.logs()
            mark = self._marks.get(name)
            if mark is not None and (len(logs) < mark[0] or (
                    mark[0] and _log_id(logs[mark[0] - 1]) != mark[1])):
                self._reset()
                return False
            for e in logs[0 if mark is None else mark[0]:]:  # only the new logs
                self._logs.setdefault(str(e["event"]), []).append(e)
            self._marks[name] = (len(logs), _log_id(logs[-1]) if logs else None)
            for event in _EVENTS[name]:
                self._logs.setdefault(event, [])
        return True

    def _reset(self) -> None:
        """Forget everything derived from logs (after a reorg)."""
        self._readings = _Readings()
        self._bands_key = self._devices_key = -1
        self._settle_key = (-1, -1, -1, -1)
        self._compliance = None
        self._derived = None
        self._logs = {}
        self._marks = {}

    def _count(self, *events: str) -> tuple[int, ...]:
        return tuple(len(self._logs.get(e, ())) for e in events)

    # ---------------------------------------------------------------- capacity logs
    def _update_devices(self) -> None:
        """Bus of every registered device (flexibilities, customers, transformer)."""
        logs = self._logs["DeviceRegistered"]
        if len(logs) == self._devices_key:
            return
        self._device_bus = {int(e["args"]["deviceId"]): int(e["args"]["bus"]) for e in logs}
        self._devices_key = len(logs)

    def _update_readings(self) -> None:
        """Decode the ``ReadingsPosted`` logs not decoded yet (kept with their tx hash)."""
        r = self._readings
        logs = self._logs["ReadingsPosted"]
        if len(logs) == r.n_logs and r.array is not None:
            return
        for e in logs[r.n_logs:]:
            r.parts.append(decode_readings(bytes(e["args"]["packed"])))
            r.tx_hashes.append(e["transactionHash"].to_0x_hex())
            r.tx_of_part.append(len(r.tx_hashes) - 1)
        r.n_logs = len(logs)
        if r.parts:
            r.array = np.concatenate(r.parts)
            r.tx_index = np.repeat(np.array(r.tx_of_part), [len(p) for p in r.parts])
        else:
            r.array = decode_readings(b"\0" * 24)[:0]
            r.tx_index = np.zeros(0, dtype=np.int64)

    def _update_bands(self) -> None:
        """Bands by interval and device, from ``CapacityAudit.bands`` (re-read when written)."""
        n = len(self._logs["BandsWritten"])
        if n == self._bands_key:
            return
        bands: dict[int, dict[int, Any]] = {}
        for b in self.api.audit.bands(0, 2**64 - 1):
            bands.setdefault(b.interval, {})[b.device_id] = b
        self._bands, self._bands_key = bands, n

    def _bus_voltages(self) -> dict[str, dict[str, Any]]:
        """Latest metered voltage per bus (pu) with its time and the device it came from."""
        arr = self._readings.array
        out: dict[str, dict[str, Any]] = {}
        if arr is None or not len(arr):
            return out
        ts = arr["timestamp"].astype(np.int64)
        dev = arr["device_id"].astype(np.int64)
        order = np.lexsort((ts, dev))
        last_of_dev = order[np.r_[dev[order][1:] != dev[order][:-1], True]]
        for i in last_of_dev:
            bus = self._device_bus.get(int(dev[i]))
            if bus is None:
                continue
            prev = out.get(str(bus))
            if prev is None or int(ts[i]) > prev["at_unix_s"]:
                out[str(bus)] = {"v_pu": round(int(arr["v_micro_pu"][i]) / MICRO, 5),
                                 "at_unix_s": int(ts[i]), "device_id": int(dev[i])}
        return out

    def _readings_tx(self, first: int, last: int) -> dict[tuple[int, int], list[str]]:
        """Tx hashes of the readings per (interval, device) in ``[first, last]``."""
        r = self._readings
        if r.array is None or not len(r.array):
            return {}
        interval = r.array["timestamp"].astype(np.int64) // int(self.api.interval_s)
        sel = np.flatnonzero((interval >= first) & (interval <= last))
        out: dict[tuple[int, int], set[int]] = {}
        for i in sel:
            key = (int(interval[i]), int(r.array["device_id"][i]))
            out.setdefault(key, set()).add(int(r.tx_index[i]))  # type: ignore[index]
        return {k: [r.tx_hashes[j] for j in sorted(v)] for k, v in out.items()}

    def _flexibilities(self, first: int, last: int) -> list[dict[str, Any]]:
        """Per flexibility: bands of the window with their metered power (per minute)."""
        names = {f["name"]: f for f in feeder_graph(self.api.deployment.feeder)["flexibilities"]}
        arr = self._readings.array
        interval_s = int(self.api.interval_s)
        out = []
        for d in self.api.deployment.devices:
            device_id = int(d["device_id"])
            bands = [{"interval": i, "p_min_w": b.p_min_w, "p_max_w": b.p_max_w,
                      "tx_hash": b.tx_hash, "block_number": b.block_number}
                     for i in range(first, last + 1)
                     if (b := self._bands.get(i, {}).get(device_id)) is not None]
            minutes: list[list[int]] = []
            if arr is not None and len(arr):
                sel = (arr["device_id"] == device_id) & (
                    arr["timestamp"] >= first * interval_s) & (
                    arr["timestamp"] < (last + 1) * interval_s)
                ts, p = arr["timestamp"][sel].astype(np.int64), arr["p_w"][sel].astype(np.int64)
                order = np.argsort(ts, kind="stable")
                minutes = np.stack([ts[order], p[order]], axis=1).tolist()
            flex = names.get(d["name"], {})
            out.append({"name": d["name"], "device_id": device_id, "kind": d["kind"],
                        "bus": int(d["bus"]), "p_min_rated_w": int(d["p_min_rated_w"]),
                        "p_max_rated_w": int(d["p_max_rated_w"]), "in_feeder": bool(flex),
                        "bands": bands, "readings": minutes,
                        "latest_p_w": minutes[-1][1] if minutes else None,
                        "latest_at_unix_s": minutes[-1][0] if minutes else None})
        return out

    def _compliance_of(self, first: int, last: int) -> dict[str, Any]:
        """``CapacityAudit.compliance`` over the window (the API's own check), rows joined with
        the band's and the readings' transactions; extra fields of the report passed on."""
        key = (first, last, self._bands_key, self._readings.n_logs)
        if self._compliance is not None and self._compliance[0] == key:
            return self._compliance[1]
        rep = self.api.audit.compliance(first, last)
        tx = self._readings_tx(first, last)
        rows = []
        for row in rep.rows:
            band = self._bands.get(int(row["interval"]), {}).get(int(row["device_id"]))
            rows.append({**row, "band_tx_hash": band.tx_hash if band else None,
                         "readings_tx_hashes": tx.get((int(row["interval"]),
                                                       int(row["device_id"])), [])})
        known = {"from_interval", "to_interval", "rows", "violations", "n_violations",
                 "n_readings_checked", "n_readings_without_band"}
        extras = {k: _jsonable(v) for k, v in vars(rep).items() if k not in known}
        out = {"from_interval": first, "to_interval": last,
               "compliant": rep.n_violations == 0, "n_violations": int(rep.n_violations),
               "n_readings_checked": int(rep.n_readings_checked),
               "n_readings_without_band": int(rep.n_readings_without_band),
               "rows": rows, "violations": [_jsonable(v) for v in rep.violations[:200]],
               "stale": _jsonable(getattr(rep, "stale", None)), "extras": extras}
        self._compliance = (key, out)
        return out

    # ---------------------------------------------------------------- market logs
    def _update_settlements(self) -> None:
        """Every settled interval with price, energies, battery power and SoC after it."""
        mc = self.api.mc
        key = self._count("IntervalSettled", "OrderPlaced", "DeviationsSettled",
                          "MeterTotalsWritten")
        if key == self._settle_key:
            return
        orders: dict[int, int] = {}
        for e in self._logs["OrderPlaced"]:
            i = int(e["args"]["interval"])
            orders[i] = orders.get(i, 0) + 1
        deviations = {int(e["args"]["interval"]) for e in self._logs["DeviationsSettled"]}
        b = mc.battery
        settled = mc.settlements()
        energies = mc.battery_energies_wh(settled, self.api.interval_s)  # metered where written
        soc_after = dict(zip(energies, b.storage.soc_path_wh(energies.values()), strict=True))
        rows: dict[int, dict[str, Any]] = {}
        for s in settled:
            soc = soc_after[s.interval]
            rows[s.interval] = {
                "interval": s.interval, "settled": True,
                "clearing_price_micro_eur_per_kwh": s.clearing_price_micro_eur_per_kwh,
                "traded_wh": sum(t.energy_wh for t in s.trades),
                "local_wh": sum(t.energy_wh for t in s.trades
                                if GRID_ADDRESS not in (t.buyer, t.seller)
                                and b.account not in (t.buyer, t.seller)),
                "battery_power_w": s.battery_power_w, "soc_after_wh": int(soc),
                "soc_after_pct": round(100.0 * soc / b.capacity_wh, 1) if b.capacity_wh else None,
                "settlement_tx": s.tx_hash, "settlement_block": s.block_number}
        for i, n in orders.items():
            rows.setdefault(i, {"interval": i, "settled": False})["orders_on_chain"] = n
        for i, row in rows.items():
            row.setdefault("orders_on_chain", 0)
            row["deviations_settled"] = i in deviations
        self._intervals_all, self._settle_key = rows, key

    def _intervals(self, first: int, last: int) -> list[dict[str, Any]]:
        """Rows of the intervals table, newest first: every interval of the window with a
        band, an order or a settlement."""
        ids = {i for i in self._intervals_all if first <= i <= last}
        ids |= {i for i in self._bands if first <= i <= last}
        out = []
        for i in sorted(ids, reverse=True):
            row = dict(self._intervals_all.get(i, {"interval": i, "settled": False,
                                                   "orders_on_chain": 0,
                                                   "deviations_settled": False}))
            row["start_unix_s"] = i * int(self.api.interval_s)
            row["has_bands"] = i in self._bands
            replay = self.replays.get((i, row.get("settlement_tx") or ""))
            row["replay_equal"] = None if replay is None else replay["equal"]
            row["replay_differences"] = [] if replay is None else replay["differences"]
            out.append(row)
        return out

    # ---------------------------------------------------------------- replays
    def _start_replays(self) -> None:
        """Replay in a background thread; on the embedded chain (not for concurrent callers)
        a few replays per snapshot, in the request's thread instead."""
        if self.api.chain.is_embedded:
            self._replay_some(INLINE_REPLAYS)
            return
        if self._replay_thread is None or not self._replay_thread.is_alive():
            self._replay_thread = threading.Thread(target=self._replay_loop, daemon=True,
                                                   name="dashboard-replay")
            self._replay_thread.start()

    def _replay_loop(self) -> None:
        """Replay every settled interval once (newest first) and bring the audit's loading and
        stale-band checks up to the window last shown; then wait for new work."""
        while not self._stop.is_set():
            self._replay_some(None)
            self._audit_checks()
            self._stop.wait(1.0)

    def _audit_checks(self) -> None:
        """``CapacityAudit.loading`` and ``check_bands`` of the window last shown (seconds on
        a cold start, so never in a request): loading per interval, branches above their limit,
        stale bands by interval."""
        wanted = self._extras_wanted
        if wanted is None or (self._extras is not None and self._extras[0] == wanted):
            return
        first, last = wanted[0], wanted[1]
        audit = self.api.audit
        out: dict[str, Any] = {"from_interval": first, "to_interval": last}
        try:
            rep = audit.loading(first, last)
            out["loading"] = None if rep is None else {
                "limits_pct": {"line": rep.max_line_loading_pct,
                               "trafo": rep.max_trafo_loading_pct},
                "complete": rep.complete, "unmetered_buses": list(rep.unmetered_buses),
                "rows": _jsonable(rep.rows), "violations": _jsonable(rep.violations[:200]),
                "n_violations": int(rep.n_violations)}
            checked = audit.check_bands(audit.bands(first, last))
            out["stale"] = {str(b.interval): {"stale": b.stale, "reason": b.stale_reason}
                            for b in checked}
        except Exception as exc:  # reported on the page, retried with the next window
            log.warning("dashboard: audit checks of %d..%d failed: %s", first, last, exc)
            out["error"] = f"{type(exc).__name__}: {exc}"
        self._extras = (wanted, out)

    def _replay_some(self, limit: int | None) -> None:
        """Replay up to ``limit`` (None: all) settled intervals not replayed yet, newest first;
        a failure (a node hiccup) leaves the rest for the next round."""
        todo = [(i, r["settlement_tx"]) for i, r in sorted(
            self._intervals_all.items(), reverse=True)
            if r.get("settled") and (i, r["settlement_tx"]) not in self.replays]
        for interval, tx in todo[:limit]:
            if self._stop.is_set():
                return
            try:
                rep = self.api.mc.replay(interval)
            except Exception as exc:
                log.warning("dashboard: replay of interval %d failed: %s", interval, exc)
                return
            self.replays[(interval, tx)] = {"equal": bool(rep.equal),
                                            "differences": list(rep.differences)}

    # ---------------------------------------------------------------- health
    def _chain(self, head: Any) -> dict[str, Any]:
        ts = int(head["timestamp"])
        watch = self.api.gateway.watch
        return {"chain_id": int(self.api.chain.chain_id), "head_block": int(head["number"]),
                "head_timestamp_unix_s": ts, "head_age_s": round(self.clock() - ts, 1),
                "state": watch.state, "detail": watch.reset_reason or watch.last_error}

    def _oracle(self, current: int) -> dict[str, Any]:
        """Last banded interval, how far ahead of its start it was written, lag, and the
        oracle store's counts (rejected readings, median latency) when a store is found."""
        last = max(self._bands, default=None)
        out: dict[str, Any] = {"last_band_interval": last, "lag_intervals": None,
                               "band_written_before_start_s": None, "band_tx_hash": None}
        if last is not None:
            rec = next(iter(self._bands[last].values()))
            out.update(lag_intervals=current - last, band_tx_hash=rec.tx_hash,
                       band_written_before_start_s=last * int(self.api.interval_s)
                       - rec.updated_at_unix_s)
        out["store"] = self._oracle_store()
        return out

    def _oracle_store(self) -> dict[str, Any] | None:
        at, status = self._oracle_status
        if self.clock() - at < ORACLE_STATUS_TTL_S:
            return status
        path = oracle_store_path(self.api)
        status = None
        if path is not None:
            from oracle.status import store_status
            from oracle.store import Store

            try:
                store = Store(path, read_only=True)
                try:
                    s = store_status(store, int(self.api.interval_s))
                finally:
                    store.db.close()
                status = {"path": str(path), "processed_block": s["processed_block"],
                          "intervals_written": s["intervals_written"],
                          "median_latency_s": s["median_latency_s"],
                          "readings": s["readings"], "rejected": s["rejected"],
                          "rejected_by_rule": s["rejected_by_rule"], "late": s["late"],
                          "tx_failures": s["tx_failures"]}
            except Exception as exc:  # another deployment's or an old store: say so
                status = {"path": str(path), "error": f"{type(exc).__name__}: {exc}"}
        self._oracle_status = (self.clock(), status)
        return status

    def _relay(self) -> dict[str, Any]:
        """The gateway's health: backlog, oldest waiting order, relay state, problems."""
        h = self.api.gateway.health()
        relay = h.relay
        return {"orders_waiting": int(h.waiting),
                "oldest_waiting_age_s": None if h.oldest_waiting_age_s is None
                else round(h.oldest_waiting_age_s, 1),
                "state": None if relay is None else relay.state,
                "detail": None if relay is None else relay.detail,
                "heartbeat_age_s": None if h.relay_heartbeat_age_s is None
                else round(h.relay_heartbeat_age_s, 1),
                "problems": list(h.problems)}


_EVENTS = {"capacity": ("DeviceRegistered", "ReadingsPosted", "BandsWritten",
                        "MeterTotalsWritten"),
           "market": ("IntervalSettled", "OrderPlaced", "DeviationsSettled")}


def _log_id(entry: Any) -> tuple[str, int]:
    """(block hash, log index) of a log: what changes when a reorg replaces it."""
    return (bytes(entry["blockHash"]).hex(), int(entry["logIndex"]))


def oracle_store_path(api: Any) -> Path | None:
    """The oracle store to report on: ``$GRIDSHARE_ORACLE_DB``, else ``oracle.sqlite`` next to
    the order store (None when there is none)."""
    env = os.environ.get(ENV_ORACLE_DB)
    if env:
        return Path(env)
    store_path = str(api.gateway.store.path)
    if store_path == ":memory:" or not store_path:
        return None
    candidate = Path(store_path).resolve().parent / "oracle.sqlite"
    return candidate if candidate.is_file() else None


def _jsonable(value: Any) -> Any:
    """``value`` with numpy scalars and dataclasses turned into JSON types."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if hasattr(value, "__dataclass_fields__"):
        return _jsonable(vars(value))
    return value
