"""The DSO's audit reads of the capacity contract: bands as written, metered power vs bands,
branch loading from the metered data, and bands whose inputs no longer match the chain.

Everything comes from the contract's events, so anyone can repeat it from the chain alone:

* ``BandsWritten(interval, inputsHash, updatedAt, bands)``: one 20-byte record per device
  (``struct.iter_unpack(">Iqq", bands)``: device id, P_min W, P_max W), with the hash of the
  oracle's inputs and the block (and transaction) it was written in;
* ``ReadingsPosted(meter, count, packed)``: 24-byte meter records decoded by
  :func:`oracle.ingest.decode_readings` (P W and Q var, consumption positive; V micro-pu and
  theta micro-rad of the device's bus);
* ``DeviceRegistered`` / ``RatedRangeSet`` / ``DeviceMeterSet``: the device registry as of any
  block (``registry_at``), so no historical state is needed.

**Compliance**: every reading of a device whose interval (``timestamp // intervalSeconds``) has
a band for that device is compared with the band; a reading with ``P < P_min`` or ``P > P_max``
is a violation, its excess in W is the distance to the nearer limit. Readings of devices or
intervals without a band are counted, not judged.

**Loading** (:meth:`CapacityAudit.loading`): per metered minute, a load flow of the metered
injections (HELM, ``capacity.helm.solve``, all minutes of the range in one vectorised solve)
with the transformer meter's voltage as the slack, then ``capacity.loading``'s branch currents
(pandapower's ``loading_percent``) against ``max_line_loading_pct`` / ``max_trafo_loading_pct``.
Why a load flow and not currents from the metered voltages: the feeders have unmetered junction
buses (10 of 32 on heimschuh-like), so a branch next to one has no metered voltage at that end,
while their injection is known (zero); and the voltage drop across an LV cable section (about
1e-3 pu) is the order of a class 0.5 meter's voltage error, so currents from metered voltage
differences would mostly measure meter error, where P/Q of class 1 meters give the current to
about 1 %. The metered V and theta check the model instead: ``max_voltage_mismatch_pu`` is the
largest |V_flow - V_meter| (complex, pu) at a metered bus. Only readings the oracle would accept
count (``oracle.registry`` rules, first reading per device and minute). A minute is computed
only when every registered load and flexibility meter and the transformer meter have a reading
for it and every bus with load in the feeder model has a load meter; otherwise the interval's
row says what is missing (``missing_readings``, ``unmetered_buses``) instead of guessing.

**Stale bands** (:meth:`CapacityAudit.check_bands`): the oracle's canonical inputs of a band's
interval are recomputed with the oracle's own code (``oracle.service.Oracle.build_inputs``) from
the readings the oracle would have accepted in the blocks before the band's block, the registry
as of that block and the audit's oracle settings (``OracleConfig``: OCM, NR, forecast seed,
reading window; they must be the oracle's). A band whose on-chain ``inputsHash`` differs is
``stale``: its readings changed on the chain (a reorg that kept the band's transaction but not
the readings it was computed from), or the settings differ. The result depends only on the
band's block hash (the readings and registry before it), so it is cached per block hash. The
battery reserve written with the bands (``ReserveWritten``, the market keeps it) must be the
recomputed inputs' ``battery.reserve_wh`` (none when they have no battery part), or the band is
``stale`` too.
"""

from __future__ import annotations

import dataclasses
import struct
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np

from gridshare.chain.events import DEFAULT_WINDOW_BLOCKS, EventReader
from gridshare.units import micro_pu_to_pu, micro_rad_to_rad, var_to_kvar, w_to_kw
from oracle.ingest import READING_DTYPE, decode_readings
from oracle.registry import (
    SECONDS_PER_MINUTE,
    DeviceRegistry,
    ReadingWindow,
    rejection_codes,
)
from oracle.sessions import session_rows
from oracle.store import SESSION_COLUMNS

BAND_RECORD = struct.Struct(">Iqq")
MAX_LISTED_VIOLATIONS = 1000
#: How the audit's loading figures are computed (the API says it with every report).
LOADING_BASIS = ("load flow (HELM) of the metered P and Q of every load and flexibility meter "
                 "per minute, slack voltage from the transformer meter; branch currents as "
                 "pandapower's loading_percent, percent of the rating")
REGISTRY_EVENTS = ("DeviceRegistered", "RatedRangeSet", "DeviceMeterSet")
#: Readings' timestamps are uint32 unix seconds: none lies at or after this.
MAX_READING_S = 2**32
#: Accepted-readings tables kept (one per registry state and readings seen).
METERED_CACHE = 4


@dataclass(frozen=True)
class BandRecord:
    """One device's band for one interval, as written on-chain (W, unix s); ``stale`` None:
    not checked (see :meth:`CapacityAudit.check_bands`)."""

    interval: int
    device_id: int
    p_min_w: int
    p_max_w: int
    inputs_hash: str
    updated_at_unix_s: int
    block_number: int
    tx_hash: str
    stale: bool | None = None
    stale_reason: str | None = None


@dataclass
class ComplianceReport:
    """Metered power against bands over ``[from_interval, to_interval]``."""

    from_interval: int
    to_interval: int
    rows: list[dict[str, Any]] = field(default_factory=list)
    violations: list[dict[str, Any]] = field(default_factory=list)
    n_violations: int = 0
    n_readings_checked: int = 0
    n_readings_without_band: int = 0


@dataclass
class LoadingReport:
    """Branch loading from the metered data over ``[from_interval, to_interval]``: one row per
    interval, one violation per interval and branch above its limit (percent)."""

    from_interval: int
    to_interval: int
    max_line_loading_pct: float
    max_trafo_loading_pct: float
    rows: list[dict[str, Any]] = field(default_factory=list)
    violations: list[dict[str, Any]] = field(default_factory=list)
    n_violations: int = 0
    unmetered_buses: list[int] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        """Every minute of every interval computed."""
        return all(r["complete"] for r in self.rows)

    @property
    def within_limits(self) -> bool | None:
        """False with a violation, True when complete without one, else None (unknown)."""
        if self.n_violations:
            return False
        return True if self.complete else None


@dataclass(frozen=True)
class MeteredReadings:
    """The readings the oracle would accept, in chain order: ``records`` (``READING_DTYPE``
    fields) and per record its block number."""

    records: np.ndarray
    block_number: np.ndarray

    def upto(self, block: int) -> MeteredReadings:
        """Those in blocks ``<= block``."""
        keep = self.block_number <= block
        return MeteredReadings(self.records[keep], self.block_number[keep])

    @cached_property
    def by_time(self) -> tuple[np.ndarray, np.ndarray]:
        """(positions sorted by timestamp, the sorted timestamps), computed once."""
        ts = self.records["timestamp"].astype(np.int64)
        order = np.argsort(ts, kind="stable")
        return order, ts[order]

    @cached_property
    def first_s(self) -> dict[int, int]:
        """Per device, its earliest reading's timestamp (unix s)."""
        order, ts = self.by_time
        dev, first = np.unique(self.records["device_id"][order], return_index=True)
        return dict(zip(dev.tolist(), ts[first].tolist(), strict=True))


# ----------------------------------------------------------------------------- registry
def registry_at(logs: list[Any], feeder: Any, to_block: int | None = None,
                names: dict[int, str] | None = None) -> DeviceRegistry:
    """The device registry after the registry events of ``logs`` (chain order) up to
    ``to_block`` (None: all)."""
    records: dict[int, dict[str, Any]] = {}
    for e in logs:
        if e["event"] not in REGISTRY_EVENTS or (to_block is not None
                                                 and int(e["blockNumber"]) > to_block):
            continue
        a = e["args"]
        dev = int(a["deviceId"])
        if e["event"] == "DeviceRegistered":
            records[dev] = {"device_id": dev, "index": int(a["index"]), "bus": int(a["bus"]),
                            "kind": int(a["kind"]), "meter": str(a["meter"]),
                            "p_min_rated_w": int(a["pMinRatedW"]),
                            "p_max_rated_w": int(a["pMaxRatedW"])}
        elif dev in records and e["event"] == "RatedRangeSet":
            records[dev].update(p_min_rated_w=int(a["pMinRatedW"]),
                                p_max_rated_w=int(a["pMaxRatedW"]))
        elif dev in records:
            records[dev]["meter"] = str(a["meter"])
    return DeviceRegistry.from_records(list(records.values()), feeder, names)


def accepted_readings(logs: list[Any], registry: DeviceRegistry,
                      block_time_s: dict[int, int], window: ReadingWindow) -> MeteredReadings:
    """The readings of the ``ReadingsPosted`` logs the oracle's ingestion would accept: none
    broken of the ``oracle.registry`` rules (with the block's time and the event's meter), the
    first reading per (device, minute) in chain order. ``block_time_s``: per block number."""
    events = [e for e in logs if e["event"] == "ReadingsPosted"]
    if not events:
        return MeteredReadings(np.zeros(0, dtype=READING_DTYPE), np.zeros(0, dtype=np.int64))
    blobs = [decode_readings(bytes(e["args"]["packed"])) for e in events]
    sizes = [len(b) for b in blobs]
    records = np.concatenate(blobs)
    block = np.repeat([int(e["blockNumber"]) for e in events], sizes).astype(np.int64)
    meters = np.repeat(np.array([str(e["args"]["meter"]) for e in events], dtype=object), sizes)
    times = np.repeat([block_time_s[int(e["blockNumber"])] for e in events], sizes).astype(
        np.int64)
    ok = rejection_codes(records, registry, block_time_s=times, meters=meters,
                         window=window) == 0
    key = (records["device_id"].astype(np.int64) << 32) | records["timestamp"].astype(np.int64)
    idx = np.flatnonzero(ok)
    _, first = np.unique(key[idx], return_index=True)
    keep = np.sort(idx[first])
    return MeteredReadings(records[keep], block[keep])


# ----------------------------------------------------------------------------- loading
@dataclass(frozen=True)
class _Grid:
    """The metered minutes of a range: per minute slot (I intervals x M minutes) and injecting
    device (loads, then flexibilities) P (W), Q (var) and whether it was read; the slack
    voltage (pu) and angle (rad) of the transformer meter; metered V (complex pu) per device."""

    first_s: int
    p_w: np.ndarray
    q_var: np.ndarray
    seen: np.ndarray
    v_slack_pu: np.ndarray
    slack_seen: np.ndarray
    v_meter: np.ndarray
    v_seen: np.ndarray


def _metered_grid(readings: np.ndarray, device_ids: list[int], slack_id: int | None,
                  first_s: int, n_slots: int) -> _Grid:
    """Scatter ``readings`` onto the minute slots from ``first_s`` (unix s) (vectorised)."""
    ids = np.array([*device_ids, -1 if slack_id is None else slack_id], dtype=np.int64)
    n_dev = len(device_ids)
    order = np.argsort(ids)
    dev = readings["device_id"].astype(np.int64)
    col = order[np.clip(np.searchsorted(ids[order], dev), 0, ids.size - 1)]
    ts = readings["timestamp"].astype(np.int64)
    # readings carry uint32 times: a range starting later (interval ids up to 2**64 - 1) has none
    slot = (ts - first_s) // SECONDS_PER_MINUTE if first_s < MAX_READING_S else ts * 0 - 1
    use = (ids[col] == dev) & (slot >= 0) & (slot < n_slots)
    col, slot, r = col[use], slot[use], readings[use]
    shape = (n_slots, n_dev + 1)
    p, q, seen = np.zeros(shape), np.zeros(shape), np.zeros(shape, dtype=bool)
    v = np.full(shape, np.nan + 0j)
    p[slot, col], q[slot, col], seen[slot, col] = r["p_w"], r["q_var"], True
    v[slot, col] = micro_pu_to_pu(r["v_micro_pu"].astype(np.int64)) * np.exp(
        1j * micro_rad_to_rad(r["theta_micro_rad"].astype(np.int64)))
    return _Grid(first_s=first_s,
                 p_w=p[:, :n_dev], q_var=q[:, :n_dev], seen=seen[:, :n_dev],
                 v_slack_pu=np.abs(v[:, n_dev]), slack_seen=seen[:, n_dev],
                 v_meter=v[:, :n_dev], v_seen=seen[:, :n_dev])


def unmetered_load_buses(feeder: Any, registry: DeviceRegistry) -> list[int]:
    """Buses with load in the feeder model (base case P or Q nonzero; slack excluded) without a
    registered load meter: their consumption is unknown, so no load flow can be trusted."""
    metered = {d.bus for d in registry.of_role("load")}
    loaded = (feeder.p_kw != 0) | (feeder.q_kvar != 0)
    return [int(b) for b, has in zip(feeder.bus_ids.tolist(), loaded.tolist(), strict=True)
            if has and int(b) not in metered and int(b) != int(feeder.slack.bus_id)]


def _solve_slots(feeder: Any, grid: _Grid, bus_cols: np.ndarray, ok: np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """HELM of the slots ``ok``: (loading (S, n_branch) percent, NaN where not computed;
    converged (S,); |V_flow - V_meter| (S,) pu, largest over the metered buses)."""
    from capacity.helm import solve

    n_slots, n_bus = grid.p_w.shape[0], feeder.n_bus
    incidence = np.zeros((bus_cols.size, n_bus))
    incidence[np.arange(bus_cols.size), bus_cols] = 1.0
    n_branch = len(feeder.lines) + len(feeder.trafos)
    loading = np.full((n_slots, n_branch), np.nan)
    converged = np.zeros(n_slots, dtype=bool)
    mismatch = np.full(n_slots, np.nan)
    rows = np.flatnonzero(ok)
    if rows.size == 0:
        return loading, converged, mismatch
    res = solve(feeder, p_kw=w_to_kw(grid.p_w[rows] @ incidence),
                q_kvar=var_to_kvar(grid.q_var[rows] @ incidence),
                v_slack_pu=grid.v_slack_pu[rows])
    converged[rows] = res.converged
    loading[rows] = res.branch_loading_pct
    diff = np.abs(res.v_pu[:, bus_cols] - grid.v_meter[rows])
    diff[~grid.v_seen[rows]] = np.nan
    with np.errstate(all="ignore"):
        mismatch[rows] = np.where(np.isnan(diff).all(axis=1), np.nan,
                                  np.nanmax(np.where(np.isnan(diff), -np.inf, diff), axis=1))
    return loading, converged, mismatch


def _worst(loading: np.ndarray, start_s: int, ids: np.ndarray, prefix: str
           ) -> dict[str, Any]:
    """Highest loading of one interval's (M, n) block from ``start_s`` (unix s): value
    (percent), branch id, minute."""
    keys = (f"max_{prefix}_loading_pct", f"max_{prefix}_id", f"max_{prefix}_timestamp_unix_s")
    finite = np.where(np.isfinite(loading), loading, -np.inf)
    if finite.size == 0 or not np.isfinite(finite).any():
        return dict.fromkeys(keys)
    m, j = np.unravel_index(int(np.argmax(finite)), finite.shape)
    return dict(zip(keys, (float(finite[m, j]), int(ids[j]),
                           start_s + SECONDS_PER_MINUTE * int(m)), strict=True))


def _loading_violations(loading: np.ndarray, limits: np.ndarray, from_interval: int,
                        interval_s: int, kinds: np.ndarray, ids: np.ndarray
                        ) -> tuple[list[dict[str, Any]], int]:
    """One entry per interval and branch above its limit ((I, M, n) loading from interval
    ``from_interval``): the minutes above, the worst loading and its minute; and how many there
    are in all."""
    above = np.nan_to_num(loading, nan=-np.inf) > limits
    count = above.sum(axis=1)
    worst = np.nanmax(np.where(above, loading, -np.inf), axis=1)
    at = np.argmax(np.where(above, loading, -np.inf), axis=1)
    hit_i, hit_j = np.nonzero(count)
    out = [{"interval": from_interval + i, "branch": str(kinds[j]), "branch_id": int(ids[j]),
            "loading_pct": float(worst[i, j]), "limit_pct": float(limits[j]),
            "n_minutes_above": int(count[i, j]),
            "timestamp_unix_s": (from_interval + i) * interval_s
            + SECONDS_PER_MINUTE * int(at[i, j])}
           for i, j in zip(hit_i[:MAX_LISTED_VIOLATIONS].tolist(),
                           hit_j[:MAX_LISTED_VIOLATIONS].tolist(), strict=True)]
    return out, int(hit_i.size)


def metered_loading(feeder: Any, registry: DeviceRegistry, readings: np.ndarray,
                    interval_s: int, from_interval: int, to_interval: int,
                    limits_pct: tuple[float, float]) -> LoadingReport:
    """Branch loading of ``[from_interval, to_interval]`` from accepted ``readings`` (module
    docstring); ``limits_pct``: (line, transformer) limits, percent of the rating."""
    report = LoadingReport(from_interval, to_interval, *limits_pct)
    n_min = interval_s // SECONDS_PER_MINUTE
    n_int = to_interval - from_interval + 1
    devices = [*registry.of_role("load"), *registry.of_role("flexibility")]
    slack = registry.of_role("transformer")
    grid = _metered_grid(readings, [d.device_id for d in devices],
                         slack[0].device_id if slack else None,
                         from_interval * interval_s, n_int * n_min)
    report.unmetered_buses = unmetered_load_buses(feeder, registry)
    ok = grid.seen.all(axis=1) & grid.slack_seen & (not report.unmetered_buses)
    loading, converged, mismatch = _solve_slots(
        feeder, grid, feeder.bus_positions([d.bus for d in devices]), ok)
    n_line = len(feeder.lines)
    ids = np.concatenate([feeder.line_ids, feeder.trafo_ids]).astype(np.int64)
    kinds = np.array(["line"] * n_line + ["trafo"] * len(feeder.trafos))
    limits = np.where(kinds == "line", limits_pct[0], limits_pct[1])
    shape = (n_int, n_min, ids.size)
    report.violations, report.n_violations = _loading_violations(
        loading.reshape(shape), limits, from_interval, interval_s, kinds, ids)
    missing = ~grid.seen.reshape(n_int, n_min, -1)
    for i in range(n_int):  # one row per interval (the response's size)
        s = slice(i * n_min, (i + 1) * n_min)
        block, start_s = loading[s], (from_interval + i) * interval_s
        gaps = missing[i].sum(axis=0)
        report.rows.append({
            "interval": from_interval + i, "n_minutes": n_min,
            "n_minutes_computed": int(converged[s].sum()),
            "complete": bool(converged[s].all()),
            "missing_readings": {str(d.device_id): int(g) for d, g in
                                 zip(devices, gaps.tolist(), strict=True) if g},
            "missing_transformer_readings": (int((~grid.slack_seen[s]).sum()) if slack
                                             else n_min),
            "n_minutes_not_converged": int((ok[s] & ~converged[s]).sum()),
            **_worst(block[:, :n_line], start_s, ids[:n_line], "line"),
            **_worst(block[:, n_line:], start_s, ids[n_line:], "trafo"),
            "max_voltage_mismatch_pu": (None if np.isnan(mismatch[s]).all()
                                        else float(np.nanmax(mismatch[s]))),
        })
    return report


# ----------------------------------------------------------------------------- the audit
class _OracleView:
    """What ``Oracle.build_inputs`` reads (config, registry, feeder, forecast, and a store's
    ``readings_between`` / ``last_readings_before``), from the chain's accepted readings in
    blocks up to ``to_block`` instead of the oracle's store: the audit runs the oracle's own code
    on them. Lookups go through the time-sorted index, not over every reading."""

    def __init__(self, audit: CapacityAudit, registry: DeviceRegistry,
                 readings: MeteredReadings, to_block: int) -> None:
        self.chain, self.capacity, self.deployment = audit.chain, audit.capacity, audit.deployment
        self.config, self.interval_s, self.feeder = audit.config, audit.interval_s, audit.feeder
        self.registry = registry
        self.forecast = audit.forecast()
        self.deploy_interval = audit.deploy_interval
        self.store = self
        self._m = readings
        self._to_block = to_block
        self._audit = audit

    def sessions_between(self, start_s: int, end_s: int, max_session_s: int
                         ) -> list[dict[str, int]]:
        """Accepted session declarations arriving in ``(start_s - max_session_s, end_s)`` in
        blocks up to ``to_block`` (as ``Store.sessions_between``), from the chain's logs."""
        rows = self._audit.declared_sessions(self.registry, self._to_block)
        return [r for r in rows
                if r["rule"] is None and start_s - max_session_s < r["arrive_s"] < end_s]

    def _rows(self, positions: np.ndarray) -> list[dict[str, int]]:
        keep = positions[self._m.block_number[positions] <= self._to_block]
        return [dict(zip(READING_DTYPE.names, (int(x) for x in r), strict=True))
                for r in self._m.records[keep].tolist()]

    def readings_between(self, start_s: int, end_s: int) -> list[dict[str, int]]:
        """Readings with ``start_s <= timestamp < end_s``, by device then time (as ``Store``)."""
        order, ts = self._m.by_time
        lo, hi = np.searchsorted(ts, [start_s, end_s], side="left")
        return sorted(self._rows(order[lo:hi]), key=lambda r: (r["device_id"], r["timestamp"]))

    def power_sums(self, device_id: int, start_s: int, end_s: int, interval_s: int
                   ) -> dict[int, int]:
        """Per interval, the sum of ``device_id``'s P readings (W) in ``[start_s, end_s)``
        (as ``Store``)."""
        order, ts = self._m.by_time
        lo, hi = np.searchsorted(ts, [start_s, end_s], side="left")
        pos = order[lo:hi]
        rec = self._m.records[pos]
        keep = (rec["device_id"] == device_id) & (self._m.block_number[pos] <= self._to_block)
        k = rec["timestamp"][keep].astype(np.int64) // int(interval_s)
        keys, inverse = np.unique(k, return_inverse=True)
        sums = np.bincount(inverse, weights=rec["p_w"][keep].astype(np.float64),
                           minlength=keys.size)
        return {int(a): round(b) for a, b in zip(keys.tolist(), sums.tolist(), strict=True)}

    def last_readings_before(self, start_s: int) -> dict[int, dict[str, int]]:
        """Per device, its latest reading with ``timestamp < start_s`` (as ``Store``): back
        from ``start_s`` in doubling windows until every device read before then is found."""
        order, ts = self._m.by_time
        dev = self._m.records["device_id"]
        need = {d for d, first in self._m.first_s.items() if first < start_s}
        found: dict[int, int] = {}
        hi, step = int(np.searchsorted(ts, start_s, side="left")), 4096
        while hi > 0 and not need <= found.keys():
            lo = max(0, hi - step)
            pos = order[lo:hi][::-1]  # newest first
            pos = pos[self._m.block_number[pos] <= self._to_block]
            ids, first = np.unique(dev[pos], return_index=True)
            for d, k in zip(ids.tolist(), first.tolist(), strict=True):
                found.setdefault(d, int(pos[k]))
            hi, step = lo, 2 * step
        rows = self._rows(np.array(sorted(found.values()), dtype=np.int64))
        return {r["device_id"]: r for r in rows}


class CapacityAudit:
    """Event reads of one GridCapacity contract through a reorg-aware ``EventReader`` (which
    keeps the logs read so far and is safe for several threads).

    ``deployment`` (its feeder) is needed for loading and for the stale check; ``config``: the
    oracle's settings (``oracle.service.OracleConfig``; default the oracle's defaults): the
    loading limits (``config.ocm.max_line_loading_pct`` / ``max_trafo_loading_pct``) and the
    settings hashed into the band inputs.
    """

    def __init__(self, chain: Any, capacity: Any, start_block: int, interval_s: int,
                 max_range_blocks: int = DEFAULT_WINDOW_BLOCKS, *, deployment: Any = None,
                 config: Any = None, feeder: Any = None) -> None:
        from oracle.service import OracleConfig

        self.chain = chain
        self.capacity = capacity
        self.start_block = int(start_block)
        self.interval_s = int(interval_s)
        self.deployment = deployment
        self.config = config if config is not None else OracleConfig()
        self._feeder = feeder
        self.reader = EventReader(chain, capacity, self.start_block,
                                  window_blocks=max_range_blocks)
        self._lock = threading.Lock()
        self._cache: dict[Any, Any] = {}
        self._metered: OrderedDict[Any, tuple[DeviceRegistry, MeteredReadings]] = OrderedDict()

    @classmethod
    def for_deployment(cls, chain: Any, deployment: Any, capacity: Any,
                       config: Any = None) -> CapacityAudit:
        """The audit of ``deployment``'s capacity contract (``config``: the oracle's)."""
        return cls(chain, capacity, deployment.deploy_block, deployment.interval_s,
                   deployment=deployment, config=config)

    def configure(self, config: Any) -> None:
        """Use the oracle settings ``config`` (``OracleConfig``) from now on."""
        with self._lock:
            self.config = config
            self._cache.clear()
            self._metered.clear()

    @cached_property
    def deploy_interval(self) -> int:
        """The interval of the deployment block's time (as ``Oracle.deploy_interval``)."""
        block = self.chain.w3.eth.get_block(self.start_block)
        return int(block["timestamp"]) // self.interval_s

    @property
    def limits_pct(self) -> tuple[float, float]:
        """(line, transformer) loading limits, percent of the rating."""
        return (self.config.ocm.max_line_loading_pct, self.config.ocm.max_trafo_loading_pct)

    @property
    def feeder(self) -> Any:
        """The deployment's feeder model (None without a deployment or feeder)."""
        if self._feeder is None and self.deployment is not None:
            from oracle.state import feeder_model

            self._feeder = feeder_model(self.deployment.feeder)
        return self._feeder

    def forecast(self) -> Any:
        """The oracle's profile forecast of the feeder (``oracle.service.oracle_forecast``)."""
        from oracle.service import oracle_forecast

        return oracle_forecast(self.deployment.feeder, self.config)

    def _logs(self, event: str) -> list[Any]:
        """The contract's ``event`` logs, in chain order (one reader stream per event)."""
        return self.reader.logs(event)

    def _registry_logs(self, to_block: int | None) -> list[Any]:
        """The registry events up to ``to_block`` (None: all), in chain order."""
        logs = [e for name in REGISTRY_EVENTS for e in self._logs(name)
                if to_block is None or int(e["blockNumber"]) <= to_block]
        return sorted(logs, key=lambda e: (int(e["blockNumber"]), int(e["logIndex"])))

    def bands(self, from_interval: int, to_interval: int,
              device_id: int | None = None) -> list[BandRecord]:
        """Bands written for intervals in ``[from_interval, to_interval]`` (one device or all)."""
        out = []
        for e in self._logs("BandsWritten"):
            a = e["args"]
            interval = int(a["interval"])
            if not from_interval <= interval <= to_interval:
                continue
            for dev, p_min_w, p_max_w in BAND_RECORD.iter_unpack(bytes(a["bands"])):
                if device_id is not None and dev != device_id:
                    continue
                out.append(BandRecord(
                    interval=interval, device_id=int(dev), p_min_w=int(p_min_w),
                    p_max_w=int(p_max_w), inputs_hash="0x" + bytes(a["inputsHash"]).hex(),
                    updated_at_unix_s=int(a["updatedAt"]), block_number=int(e["blockNumber"]),
                    tx_hash=e["transactionHash"].to_0x_hex()))
        return out

    def readings(self, from_interval: int, to_interval: int) -> np.ndarray:
        """Decoded readings whose interval lies in ``[from_interval, to_interval]``."""
        blobs = [decode_readings(bytes(e["args"]["packed"]))
                 for e in self._logs("ReadingsPosted")]
        if not blobs:
            return decode_readings(b"\0" * 24)[:0]
        arr = np.concatenate(blobs)
        interval = arr["timestamp"].astype(np.int64) // self.interval_s
        return arr[(interval >= from_interval) & (interval <= to_interval)]

    def compliance(self, from_interval: int, to_interval: int) -> ComplianceReport:
        """Per device and interval: readings vs band, violations listed (module docstring)."""
        report = ComplianceReport(from_interval, to_interval)
        bands = self.bands(from_interval, to_interval)
        readings = self.readings(from_interval, to_interval)
        dev = readings["device_id"].astype(np.int64)
        ts = readings["timestamp"].astype(np.int64)
        p_w = readings["p_w"].astype(np.int64)
        interval = ts // self.interval_s
        key = (interval << 32) | dev
        if not bands:
            report.n_readings_without_band = len(readings)
            return report
        band_key = np.array([(b.interval << 32) | b.device_id for b in bands], dtype=np.int64)
        order = np.argsort(band_key, kind="stable")
        band_key = band_key[order]
        lo = np.array([b.p_min_w for b in bands], dtype=np.int64)[order]
        hi = np.array([b.p_max_w for b in bands], dtype=np.int64)[order]
        pos = np.clip(np.searchsorted(band_key, key), 0, len(band_key) - 1)
        has_band = band_key[pos] == key if len(key) else np.zeros(0, dtype=bool)
        report.n_readings_without_band = int((~has_band).sum())
        report.n_readings_checked = int(has_band.sum())
        below = has_band & (p_w < lo[pos])
        above = has_band & (p_w > hi[pos])
        excess = np.where(below, lo[pos] - p_w, np.where(above, p_w - hi[pos], 0))
        bad = below | above
        report.n_violations = int(bad.sum())
        for i in np.flatnonzero(bad)[:MAX_LISTED_VIOLATIONS]:
            report.violations.append({
                "device_id": int(dev[i]), "interval": int(interval[i]),
                "timestamp_unix_s": int(ts[i]), "p_w": int(p_w[i]),
                "band_p_min_w": int(lo[pos[i]]), "band_p_max_w": int(hi[pos[i]]),
                "excess_w": int(excess[i]),
            })
        # one row per band: counts and metered range of its readings
        n = len(band_key)
        idx = pos[has_band]
        count = np.bincount(idx, minlength=n)
        n_bad = np.bincount(idx, weights=bad[has_band], minlength=n).astype(np.int64)
        p_sum = np.bincount(idx, weights=p_w[has_band], minlength=n)
        p_min = np.full(n, np.iinfo(np.int64).max)
        p_max = np.full(n, np.iinfo(np.int64).min)
        np.minimum.at(p_min, idx, p_w[has_band])
        np.maximum.at(p_max, idx, p_w[has_band])
        worst = np.zeros(n, dtype=np.int64)
        np.maximum.at(worst, idx, excess[has_band])
        for j in range(n):
            b = bands[int(order[j])]
            seen = int(count[j])
            report.rows.append({
                "device_id": b.device_id, "interval": b.interval,
                "band_p_min_w": b.p_min_w, "band_p_max_w": b.p_max_w,
                "n_readings": seen,
                "metered_p_min_w": int(p_min[j]) if seen else None,
                "metered_p_max_w": int(p_max[j]) if seen else None,
                "metered_p_mean_w": float(p_sum[j] / seen) if seen else None,
                "n_violations": int(n_bad[j]), "worst_excess_w": int(worst[j]),
                "compliant": bool(n_bad[j] == 0),
            })
        return report

    # ---- accepted readings, registry, block times (cached by what they depend on)
    def _block_times(self, logs: list[Any]) -> dict[int, int]:
        """Per block number of ``logs``, its time (unix s); cached per block hash."""
        out = {}
        for e in logs:
            key = ("time", bytes(e["blockHash"]))
            if key not in self._cache:
                self._cache[key] = int(self.chain.w3.eth.get_block(e["blockHash"])["timestamp"])
            out[int(e["blockNumber"])] = self._cache[key]
        return out

    def declared_sessions(self, registry: DeviceRegistry, to_block: int
                          ) -> list[dict[str, Any]]:
        """The vehicle sessions declared in blocks up to ``to_block``, validated with
        ``registry`` as the oracle validates them (``oracle.sessions.session_rows``), as
        ``SESSION_COLUMNS`` dicts (``rule`` None: accepted)."""
        logs = [e for e in self._logs("SessionsDeclared") if int(e["blockNumber"]) <= to_block]
        return [dict(zip(SESSION_COLUMNS, r, strict=True)) for r in session_rows(
            logs, registry, self._block_times(logs), self.config.window)]

    def metered(self, to_block: int | None = None, cut: bool = True
                ) -> tuple[DeviceRegistry, MeteredReadings]:
        """The registry as of ``to_block`` (None: the confirmed head) and the readings the
        oracle would accept with it, in blocks up to ``to_block`` (``cut`` False: in all
        blocks, for the caller to cut). Acceptance is per reading
        (its block's time and meter) plus the first reading per device and minute in chain
        order, so it is computed once over all readings per registry and cut at the block."""
        reg_logs = self._registry_logs(to_block)
        posts = self._logs("ReadingsPosted")
        key = (tuple((bytes(e["blockHash"]), int(e["logIndex"])) for e in reg_logs), len(posts),
               (bytes(posts[-1]["blockHash"]), int(posts[-1]["logIndex"])) if posts else None)
        with self._lock:
            found = self._metered.pop(key, None)
            if found is None:
                registry = registry_at(reg_logs, self.feeder)
                found = (registry, accepted_readings(posts, registry, self._block_times(posts),
                                                     self.config.window))
            self._metered[key] = found
            while len(self._metered) > METERED_CACHE:
                self._metered.popitem(last=False)
        registry, accepted = found
        return registry, accepted if to_block is None or not cut else accepted.upto(to_block)

    # ---- loading
    def loading(self, from_interval: int, to_interval: int) -> LoadingReport | None:
        """Branch loading of ``[from_interval, to_interval]`` from the metered data (module
        docstring); None without a feeder model (no deployment given)."""
        if self.feeder is None:
            return None
        registry, metered = self.metered()
        ts = metered.records["timestamp"].astype(np.int64)
        lo, hi = (min(x * self.interval_s, MAX_READING_S) for x in (from_interval, to_interval + 1))
        span = (ts >= lo) & (ts < hi)
        return metered_loading(self.feeder, registry, metered.records[span], self.interval_s,
                               from_interval, to_interval, self.limits_pct)

    # ---- stale bands
    def check_bands(self, bands: list[BandRecord]) -> list[BandRecord]:
        """``bands`` with ``stale`` and ``stale_reason`` set (module docstring): one inputs
        recomputation per interval, cached per block hash of its band."""
        logs = {int(e["args"]["interval"]): e for e in self._logs("BandsWritten")}
        verdict: dict[int, tuple[bool | None, str | None]] = {}
        for interval in sorted({b.interval for b in bands}):
            e = logs.get(interval)
            if e is None:
                verdict[interval] = (None, "no BandsWritten log for the interval")
                continue
            key = ("stale", interval, bytes(e["blockHash"]), bytes(e["args"]["inputsHash"]),
                   self.config)
            if key not in self._cache:
                self._cache[key] = self._stale(interval, e)
            verdict[interval] = self._cache[key]
        return [dataclasses.replace(b, stale=verdict[b.interval][0],
                                    stale_reason=verdict[b.interval][1]) for b in bands]

    def _reserve_mismatch(self, interval: int, battery: Any) -> tuple[bool, str | None]:
        """(stale, reason) of the battery reserve written with the bands of ``interval``
        (``ReserveWritten``) against the recomputed inputs' ``battery.reserve_wh``: the market
        keeps what is on chain, so it must be what the inputs hashed say."""
        logs = [e for e in self._logs("ReserveWritten") if int(e["args"]["interval"]) == interval]
        written = int(logs[0]["args"]["reserveWh"]) if logs else None
        expected = None if battery is None else int(battery["reserve_wh"])
        if written == expected:
            return False, None
        return True, (f"battery reserve {written} Wh on chain, but the oracle's inputs say "
                      f"{expected} Wh: the market keeps the reserve on chain; do not trust it")

    def _stale(self, interval: int, band_log: Any) -> tuple[bool | None, str | None]:
        """(stale, reason) of the band of ``interval`` written by ``band_log``."""
        from oracle.service import Oracle, inputs_hash

        if self.deployment is None:
            return None, "not checked: the audit has no deployment (feeder, oracle settings)"
        block = int(band_log["blockNumber"])
        on_chain = "0x" + bytes(band_log["args"]["inputsHash"]).hex()
        try:
            registry, metered = self.metered(block - 1, cut=False)
            view = _OracleView(self, registry, metered, block - 1)
            inputs, _ = Oracle.build_inputs(view, interval)  # type: ignore[arg-type]
        except Exception as exc:  # the oracle's own refusal (e.g. no flexibility registered)
            return None, f"not checked: {type(exc).__name__}: {exc}"
        now = "0x" + inputs_hash(inputs).hex()
        if now == on_chain:
            return self._reserve_mismatch(interval, inputs.get("battery"))
        return True, (
            f"inputs hash {on_chain} on chain, but the oracle's inputs recomputed from the "
            f"readings of interval {interval - 1} now on chain before block {block} hash to "
            f"{now}: those readings changed after the band was computed (a reorg that kept "
            "the band's transaction), or this audit's oracle settings (OCM, NR, forecast seed, "
            "reading window) are not the oracle's. The contract takes one write per interval: "
            "the band stays on chain; do not trust it")
