"""After the day: replay every settlement, the DSO audit, Newton-Raphson checks, statements.

* Replay: ``MarketChain.replay`` re-runs each settled interval's clearing from chain data only and
  compares it with the settlement (interval, root, price, battery power, trades).
* DSO audit: every accepted meter reading of a flexibility (read back from the chain by the
  oracle's ingestion) against that device's band of the reading's interval, read with
  ``GridCapacity.bandOf``. A reading outside ``[P_min, P_max]`` W is a violation.
* Newton-Raphson (pandapower ``runpp`` via ``capacity.nr_check``), the acceptance check
  ``nr_steps`` traded intervals, at every OCM step the interval's band was certified for (the
  oracle's stored inputs), the band's corners and ``nr_random_points`` random points inside it
  (a battery that follows the feeder at most its step's bound, ``battery_step_max_w``);
  every bus must stay in ``[v_low - 1e-4, v_high + 1e-4]`` pu and every line and transformer
  within its loading limit (``OcmSettings.max_line_loading_pct`` / ``max_trafo_loading_pct``,
  + 0.01 percentage points), pandapower's ``loading_percent`` of the feeder's own ratings.
* Newton-Raphson on the day as it happened (``nr_check``, reported, not a pass/fail check): at
  ``nr_steps`` minutes, the feeder as operated (that minute's profiles, flexibilities at their
  metered power) and random points inside the bands (a battery that follows the feeder at what
  it would give with the others there, ``Simulation.followed_battery_kw``). The bands of
  interval k are computed from the readings of k-1 (the oracle's persistence forecast), so a
  fast change of PV or load inside k can put the realised feeder outside the limits: this
  measures that forecast error.
* The OCM steps behind every band are recomputed from the oracle's stored canonical inputs
  (``oracle.service.compute_from_inputs``) for the report's figures; the recomputed bands must
  equal those on-chain.
"""

from __future__ import annotations

import dataclasses
import json
import time
from typing import TYPE_CHECKING, Any

import numpy as np

from gridshare.units import micro_pu_to_pu, nano_eur_to_eur, var_to_kvar, w_to_kw, wh_to_kwh
from market.statements import member_statement
from oracle.service import certified_steps

if TYPE_CHECKING:
    from gridshare.sim.run import IntervalRecord, Simulation, SimulationResult

NR_TOLERANCE_PU = 1e-4
NR_LOADING_TOLERANCE_PCT = 1e-2


def replay_all(sim: Simulation, records: list[IntervalRecord]) -> dict[str, Any]:
    """Replay every settled interval and every settlement of deviations (meter totals from the
    readings, deviations from the settlement); returns counts and the differing intervals."""
    differing = []
    for rec in records:
        differences = []
        if rec.settled:
            report = sim.mc.replay(rec.interval)
            differences += list(report.differences)
        if rec.deviations_settled:
            differences += sim.mc.replay_deviations(rec.interval)
        rec.replay_equal = not differences
        if differences:
            differing.append({"interval": rec.interval, "differences": differences})
    n = sum(1 for r in records if r.settled or r.deviations_settled)
    return {"replayed": n, "equal": n - len(differing), "differing": differing,
            "deviations_replayed": sum(1 for r in records if r.deviations_settled)}


def _band_events(sim: Simulation) -> list[Any]:
    """``BandsWritten`` of every band transaction of the run's oracle, rebuilt from the
    contract's storage (``intervalRecord``: inputs hash, time, band count; ``bandOf`` per
    device: the limits), which holds exactly what the event carried: an interval is written once.
    The block and transaction come from the oracle's store. An interval whose on-chain band
    count differs from the oracle's devices falls back to the transaction's receipt.

    A receipt by hash on the embedded chain (eth-tester's py-evm backend) scans back from the
    head, hashing every transaction on the way (0.28 ms per block measured; a log read of one
    block asks for the receipt of each of its transactions, so it costs the same): for the
    ~100 band transactions of a day over tens of thousands of blocks that took minutes. The
    calls cost a few ms each whatever the chain's length."""
    from hexbytes import HexBytes

    from gridshare.chain.errors import ContractRevert
    from oracle.audit import BAND_RECORD

    capacity, chain = sim.mc.capacity, sim.chain
    events = []
    for row in sim.oracle.store.intervals("written"):
        if not row.tx_hash:
            continue
        inputs_h, updated_at, count = chain.call(capacity.functions.intervalRecord(row.interval))
        ids = [int(d) for d in row.bands.get("device_ids", [])]
        try:
            packed = b"".join(BAND_RECORD.pack(d, *map(int, chain.call(
                capacity.functions.bandOf(d, row.interval))[:2])) for d in ids)
        except ContractRevert:
            packed = None
        if packed is None or len(ids) != int(count) or row.block_number is None:
            receipt = chain.w3.eth.get_transaction_receipt(row.tx_hash)
            events += chain.events(receipt, capacity, "BandsWritten")
            continue
        events.append({"args": {"interval": row.interval, "inputsHash": bytes(inputs_h),
                                "updatedAt": int(updated_at), "bands": packed},
                       "blockNumber": int(row.block_number), "logIndex": 0,
                       "transactionHash": HexBytes(row.tx_hash)})
    return events


def audit(sim: Simulation, records: list[IntervalRecord]) -> dict[str, Any]:
    """The DSO audit of the REST API (``oracle.audit.CapacityAudit.compliance``): every
    metered reading of a device with a band (``ReadingsPosted``) against its band
    (``BandsWritten``), over the traded intervals.

    The events are the run's own instead of a ``get_logs`` scan of the whole chain (which on the
    embedded chain reads every receipt of every block: minutes for a day): the readings from
    the receipts the meters' posts returned, the bands rebuilt from the contract's storage
    (``_band_events``); the compliance rule is the API's, unchanged.
    """
    from oracle.audit import CapacityAudit

    if not records:
        return {"readings_checked": 0, "violations": [], "n_violations": 0,
                "metered_range_w": {}}
    capacity = sim.mc.capacity
    chain = sim.chain
    events = {
        "ReadingsPosted": [e for r in sim.readings_receipts
                           for e in chain.events(r, capacity, "ReadingsPosted")],
        "BandsWritten": _band_events(sim),
    }

    class ReceiptAudit(CapacityAudit):
        def _logs(self, event: str) -> list[Any]:
            return sorted(events[event], key=lambda e: (e["blockNumber"], e["logIndex"]))

    auditor = ReceiptAudit(chain, capacity, sim.deployment.deploy_block, sim.config.interval_s)
    report = auditor.compliance(records[0].interval, records[-1].interval)
    names = {v: k for k, v in sim.flex_ids.items()}
    violations = [{"interval": v["interval"], "device": names.get(v["device_id"],
                                                                  str(v["device_id"])),
                   "timestamp": v["timestamp_unix_s"], "p_w": v["p_w"],
                   "p_min_w": v["band_p_min_w"], "p_max_w": v["band_p_max_w"]}
                  for v in report.violations]
    metered = {f"{r['interval']}:{names.get(r['device_id'], r['device_id'])}":
               [r["metered_p_min_w"], r["metered_p_max_w"]] for r in report.rows
               if r["n_readings"]}
    expected = len(records) * sim.n_min * len(sim.flex_names)
    return {"readings_checked": report.n_readings_checked, "readings_expected": expected,
            "readings_without_band": report.n_readings_without_band,
            "bands_audited": len(report.rows), "band_transactions": len(events["BandsWritten"]),
            "violations": violations, "n_violations": report.n_violations,
            "metered_range_w": metered}


def _nr_reference(sim: Simulation) -> Any:
    """The one Newton-Raphson reference (``capacity.nr_check``) on the feeder's pandapower net
    (its own line and transformer ratings), one load per bus."""
    from capacity.feeders import load_pandapower_net
    from capacity.nr_check import NewtonRaphson

    return NewtonRaphson(sim.feeder, net=load_pandapower_net(sim.config.feeder))


def _loading_limits_pct(sim: Simulation) -> np.ndarray:
    """Loading limit of every branch (lines, then transformers), percent."""
    ocm = sim.config.ocm
    return np.concatenate([np.full(len(sim.feeder.lines), ocm.max_line_loading_pct),
                           np.full(len(sim.feeder.trafos), ocm.max_trafo_loading_pct)])


def _violating(res: Any, v_low: float, v_high: float, limits_pct: np.ndarray) -> np.ndarray:
    """Points (rows) with a bus outside the voltage limits, a branch above its loading limit,
    or no load-flow solution (no operable state)."""
    vm = res.vm_pu
    volts = (np.min(vm, axis=1) < v_low - NR_TOLERANCE_PU) \
        | (np.max(vm, axis=1) > v_high + NR_TOLERANCE_PU)
    over = np.nan_to_num(res.branch_loading_pct, nan=0.0) > limits_pct + NR_LOADING_TOLERANCE_PCT
    return ~res.converged | volts | np.any(over, axis=1)


def _step_row(res: Any, bad: np.ndarray) -> dict[str, Any]:
    """Voltage and loading figures of one checked step's points."""
    vm = res.vm_pu[res.converged]
    line = res.line_loading_pct[res.converged]
    trafo = res.trafo_loading_pct[res.converged]
    return {
        "n_points": len(bad), "n_violating_points": int(np.count_nonzero(bad)),
        "v_min_pu": float(np.min(vm)) if vm.size else float("nan"),
        "v_max_pu": float(np.max(vm)) if vm.size else float("nan"),
        "v_stats_pu": [float(x) for x in np.percentile(vm, [0, 25, 50, 75, 100])]
        if vm.size else [float("nan")] * 5,
        "max_line_loading_pct": float(np.nanmax(line, initial=0.0)),
        "max_trafo_loading_pct": float(np.nanmax(trafo, initial=0.0)),
        "line_loading_max_pct": [float(x) for x in np.nanmax(line, axis=0, initial=0.0)]
        if line.size else [],
    }


def _nr_summary(steps: list[dict[str, Any]], n_runs: int, sim: Simulation) -> dict[str, Any]:
    """The totals of a Newton-Raphson check and the limits it used."""
    ocm = sim.config.ocm
    return {"steps": steps, "n_violations": sum(s["n_violating_points"] for s in steps),
            "n_runs": n_runs, "v_low_pu": ocm.v_low_pu, "v_high_pu": ocm.v_high_pu,
            "max_line_loading_pct": ocm.max_line_loading_pct,
            "max_trafo_loading_pct": ocm.max_trafo_loading_pct,
            "line_ids": [int(x) for x in sim.feeder.line_ids],
            "tolerance_pu": NR_TOLERANCE_PU, "tolerance_loading_pct": NR_LOADING_TOLERANCE_PCT}


def nr_check(sim: Simulation, records: list[IntervalRecord], n_steps: int,
             n_random: int) -> dict[str, Any]:
    """Newton-Raphson voltages and loadings of the operated feeder and of random points inside
    the bands, at ``n_steps`` minutes spread over the run."""
    if not records or n_steps == 0:
        return _nr_summary([], 0, sim)
    rng = np.random.default_rng(np.random.SeedSequence([sim.config.seed, 9_090]))
    minutes = np.unique(np.linspace(records[0].first_minute,
                                    records[-1].first_minute + sim.n_min - 1,
                                    n_steps).astype(int))
    by_first = {r.first_minute: r for r in records}
    nr, incidence, limits = _nr_reference(sim), sim.flex_incidence, _loading_limits_pct(sim)
    steps = []
    for minute in minutes:
        rec = by_first[int(minute) - int(minute) % sim.n_min]
        lo, hi = _band_kw(sim, rec)
        points = np.vstack([sim.flex_kw[int(minute)][None, :],
                            rng.uniform(lo, hi, (n_random, len(lo)))])
        if sim.config.ocm.battery_follows:  # a random point's battery follows the feeder too
            b = sim.battery_col
            points[1:, b] = sim.followed_battery_kw(np.full(n_random, int(minute)), points[1:],
                                                    lo[b])
        p_kw = sim.profiles.p_kw[int(minute)][None, :] + points @ incidence
        q_kvar = np.broadcast_to(sim.profiles.q_kvar[int(minute)], p_kw.shape)
        res = nr.run(p_kw, q_kvar)
        bad = _violating(res, sim.config.ocm.v_low_pu, sim.config.ocm.v_high_pu, limits)
        row = _step_row(res, bad)
        vm = res.vm_pu
        row.update({
            "minute": int(minute), "interval": rec.interval,
            "operated_v_min_pu": float(np.min(vm[0])), "operated_v_max_pu": float(np.max(vm[0])),
            "random_v_min_pu": float(np.min(vm[1:])) if n_random else None,
            "random_v_max_pu": float(np.max(vm[1:])) if n_random else None,
            "operated_max_loading_pct": float(np.nanmax(res.branch_loading_pct[0], initial=0)),
        })
        steps.append(row)
    return _nr_summary(steps, nr.n_runs, sim)


def _band_kw(sim: Simulation, rec: IntervalRecord) -> tuple[np.ndarray, np.ndarray]:
    """The published band of every flexibility in ``rec``'s interval, kW."""
    band_w = np.array([rec.band_w[n] for n in sim.flex_names], dtype=float).reshape(-1, 2)
    return w_to_kw(band_w[:, 0]), w_to_kw(band_w[:, 1])


def _battery_step_max_kw(sim: Simulation, bands: dict[str, Any], n_steps: int,
                         lo_kw: np.ndarray) -> np.ndarray:
    """(steps, n_flex) kW: the most each flexibility takes at each OCM step: ``inf`` but a
    following battery's stored upper bound of the step (``oracle.service.follow_battery``),
    not below its ``P_min``."""
    out = np.full((n_steps, len(sim.flex)), np.inf)
    step_max_w = bands.get("battery_step_max_w")
    if step_max_w is not None:
        b = sim.battery_col
        out[:, b] = np.maximum(w_to_kw(np.asarray(step_max_w, dtype=float)), lo_kw[b])
    return out


def nr_check_steps(sim: Simulation, records: list[IntervalRecord], n_intervals: int,
                   n_random: int) -> dict[str, Any]:
    """Newton-Raphson at the OCM steps the bands were certified for.

    For ``n_intervals`` traded intervals spread over the run: every OCM step of the interval's
    stored oracle inputs that its band was certified at (``oracle.service.certified_steps``;
    per-bus uncontrollable P/Q and slack voltage in on-chain units), with
    the flexibilities at the all-min and all-max corners of the published band and at
    ``n_random`` random points inside it: bus voltages and line/transformer loadings.
    """
    if not records or n_intervals == 0:
        return _nr_summary([], 0, sim)
    rng = np.random.default_rng(np.random.SeedSequence([sim.config.seed, 9_191]))
    nr, incidence, limits = _nr_reference(sim), sim.flex_incidence, _loading_limits_pct(sim)
    picks = np.unique(np.linspace(0, len(records) - 1, n_intervals).astype(int))
    steps = []
    for k in picks:
        rec = records[int(k)]
        row = sim.oracle.store.interval(rec.interval)
        if row is None or not row.inputs_json:
            continue
        inputs = certified_steps(row.inputs, np.asarray(row.bands.get("empty", []), dtype=bool))
        lo, hi = _band_kw(sim, rec)
        points = np.vstack([lo, hi, rng.uniform(lo, hi, (n_random, len(lo)))])
        bus_pos = sim.feeder.bus_positions(inputs["bus_ids"])
        p_ul_kw = np.zeros((len(inputs["steps_unix_s"]), len(sim.feeder.bus_ids)))
        q_ul_kvar = np.zeros_like(p_ul_kw)
        p_ul_kw[:, bus_pos] = w_to_kw(np.asarray(inputs["p_w"], dtype=float))
        q_ul_kvar[:, bus_pos] = var_to_kvar(np.asarray(inputs["q_var"], dtype=float))
        v_slack = micro_pu_to_pu(np.asarray(inputs["v_slack_micro_pu"], dtype=float))
        step_max_kw = _battery_step_max_kw(sim, row.bands, len(inputs["steps_unix_s"]), lo)
        for j, t_s in enumerate(inputs["steps_unix_s"]):
            p_kw = p_ul_kw[j][None, :] + np.minimum(points, step_max_kw[j]) @ incidence
            res = nr.run(p_kw, np.broadcast_to(q_ul_kvar[j], p_kw.shape), float(v_slack[j]))
            bad = _violating(res, sim.config.ocm.v_low_pu, sim.config.ocm.v_high_pu, limits)
            steps.append({"minute": (int(t_s) - sim.day_start_s) // 60,
                          "interval": rec.interval, **_step_row(res, bad)})
    return _nr_summary(steps, nr.n_runs, sim)


def recompute_bands(sim: Simulation, records: list[IntervalRecord]
                    ) -> tuple[Any, np.ndarray, np.ndarray, np.ndarray, int]:
    """The OCM steps behind the traded intervals' bands, recomputed from the stored inputs.

    Returns (concatenated BandResult, hour of day per step, summed uncontrollable net load per
    step in kW, first minute of the interval each step's band governs, number of intervals
    whose recomputed bands differ from the chain).
    """
    from capacity.ocm import BandResult
    from oracle.service import compute_from_inputs, flexibilities_of

    parts, hours, ul_kw, governs, mismatches = [], [], [], [], 0
    registered = None  # the devices as registered (a step's may be narrowed: battery, no vehicle)
    for rec in records:
        row = sim.oracle.store.interval(rec.interval)
        if row is None or not row.inputs_json:
            continue
        inputs = row.inputs
        out = compute_from_inputs(sim.feeder, inputs)
        written = row.bands
        if out["p_min_w"] != written.get("p_min_w") or out["p_max_w"] != written.get("p_max_w"):
            mismatches += 1
        parts.append(out["result"])
        registered = registered or flexibilities_of(inputs)
        hours.extend((np.asarray(inputs["steps_unix_s"]) - sim.day_start_s) / 3600.0)
        ul_kw.extend(w_to_kw(np.asarray(inputs["p_w"], dtype=np.int64).sum(axis=1)))
        governs.extend([rec.first_minute] * len(inputs["steps_unix_s"]))
    if not parts:
        return None, np.zeros(0), np.zeros(0), np.zeros(0, dtype=int), mismatches
    first = parts[0]
    arrays = {}
    for name in ("p_min_kw", "p_max_kw", "feasible", "violation_pu", "v_at_min_pu", "v_at_max_pu",
                 "v_random_stats_pu", "argmin_kw", "argmax_kw", "certified_points", "shrinks",
                 "n_evaluations", "seconds", "loading_at_min_pct", "loading_at_max_pct",
                 "loading_box_max_pct"):
        arrays[name] = np.concatenate([np.asarray(getattr(p, name)) for p in parts])
    for name in ("binding_min", "binding_max"):
        arrays[name] = [b for p in parts for b in getattr(p, name)]
    by_id = {f"device-{v}": k for k, v in sim.flex_ids.items()}
    named = tuple(dataclasses.replace(f, name=by_id.get(f.name, f.name))
                  for f in registered)
    merged = BandResult(flexibilities=named, objective=first.objective,
                        v_low_pu=first.v_low_pu, v_high_pu=first.v_high_pu,
                        line_ids=first.line_ids, trafo_ids=first.trafo_ids,
                        max_loading_pct=first.max_loading_pct,
                        notes=[n for p in parts for n in p.notes], **arrays)
    return merged, np.asarray(hours), np.asarray(ul_kw), np.asarray(governs, dtype=int), mismatches


def statements(sim: Simulation) -> list[dict[str, Any]]:
    """Per-member statements over every settled interval (from the chain's events)."""
    settled = [(s.interval, s.trades) for s in sim.mc.settlements()]
    deviations = sim.mc.deviations()
    out = []
    market = sim.mc.market
    for name, address in zip(sim.member_names, sim.members, strict=True):
        st = member_statement(address, settled, sim.mc.battery.account, sim.mc.battery.shares_bps,
                              deviations)
        row = {"name": name, **st.to_dict()}
        row.pop("intervals", None)
        row["balance_nano_eur"] = int(sim.chain.call(market.functions.balanceOf(address)))
        row["net_eur"] = float(nano_eur_to_eur(st.net_nano_eur))
        out.append(row)
    return out


def total_gas(sim: Simulation) -> int:
    """Gas used by every block since the deployment (all transactions of the run)."""
    w3 = sim.chain.w3
    return sum(int(w3.eth.get_block(n)["gasUsed"])
               for n in range(sim.deployment.deploy_block - 1, sim.chain.block_number + 1))


@dataclasses.dataclass
class _Checks:
    """The results of the checks after the day (see module docstring)."""

    replay: dict[str, Any]
    audit: dict[str, Any]
    nr: dict[str, Any]
    nr_operated: dict[str, Any]
    band_steps: Any
    band_hours: np.ndarray
    band_ul_kw: np.ndarray
    band_governs_min: np.ndarray
    band_mismatches: int


def _run_checks(sim: Simulation, records: list[IntervalRecord]) -> _Checks:
    """Replay, DSO audit, Newton-Raphson and the recomputed bands, each timed into
    ``sim.timings`` (s)."""
    t0 = time.perf_counter()
    replay = replay_all(sim, records)
    sim.timings["replay"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    dso = audit(sim, records)
    sim.timings["audit"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    nr = nr_check_steps(sim, records, sim.config.nr_steps, sim.config.nr_random_points)
    nr_operated = nr_check(sim, records, sim.config.nr_steps, sim.config.nr_random_points)
    sim.timings["newton_raphson"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    band_steps, band_hours, band_ul_kw, governs, band_mismatch = recompute_bands(sim, records)
    sim.timings["recompute_bands"] = time.perf_counter() - t0
    return _Checks(replay, dso, nr, nr_operated, band_steps, band_hours, band_ul_kw, governs,
                   band_mismatch)


def held_back_by(p_max_kw: np.ndarray, rating_kw: float, minutes: np.ndarray,
                 binding: list[str], arrive_min: int, depart_min: int) -> str:
    """Why a station's vehicle got less than it asked for, as far as the bands say: the band
    steps governing its stay (``minutes``: the first minute each step's band governs) whose
    P_max (kW) was below the station's rating, grouped into runs of one binding constraint
    (``BandResult.binding_max``: the constraint at the band's all-max corner), e.g.
    ``"v_low 18:15-19:45 (7 steps); line 3 20:00 (1 step)"``; "" when no band limited it."""
    stay = (minutes >= arrive_min) & (minutes < depart_min) & (p_max_kw < rating_kw - 0.01)
    runs: list[tuple[str, int, int, int]] = []  # (binding, first minute, last minute, steps)
    for k in np.flatnonzero(stay):
        minute = int(minutes[k])
        if runs and runs[-1][0] == binding[k] and minute - runs[-1][2] <= 15:
            runs[-1] = (binding[k], runs[-1][1], minute, runs[-1][3] + 1)
        else:
            runs.append((binding[k], minute, minute, 1))
    return "; ".join(
        f"{what} {clock_of_minute(a)}{'' if a == b else '-' + clock_of_minute(b)} "
        f"({n} step{'s' * (n > 1)})" for what, a, b, n in runs)


def _why_step(binding: str, reserve_kept: bool | None, connected: set[int] | None,
              device_id: int) -> str:
    """What held a station's band at one step: no vehicle declared for the interval (with
    ``station_sessions``, ``connected`` the stations that had one; None: the setting is off), else
    the band's binding constraint, naming the battery's charge where it held the band: below
    the reserve (``reserve_kept`` False) the battery gives only the discharge the grid and the
    guarantees need (``oracle.battery.BELOW_RESERVE_TIERS``)."""
    if connected is not None and device_id not in connected:
        return "no vehicle declared"
    return f"{binding} + battery reserve" if reserve_kept is False else binding


def _connected(sim: Simulation, interval: int) -> set[int] | None:
    """The stations with a declared vehicle in the inputs of ``interval``'s band (None: the
    oracle does not use sessions, or no band was computed)."""
    row = sim.oracle.store.interval(interval)
    connected = None if row is None else row.inputs.get("connected")
    return None if connected is None else {int(d) for d in connected}


def _tightest_step_per_interval(governs_min: np.ndarray, p_max_kw: np.ndarray) -> np.ndarray:
    """Per governed interval (in time order), the index of its step with the lowest ``P_max``:
    the step that set the published band's ``P_max`` (the bands of the steps are intersected)."""
    order = np.lexsort((p_max_kw, governs_min))
    first = np.diff(governs_min[order], prepend=np.iinfo(np.int64).min) != 0
    return order[first]


def clock_of_minute(minute: int) -> str:
    """``HH:MM`` of a minute of the day."""
    return f"{minute // 60:02d}:{minute % 60:02d}"


def _charging_sessions(sim: Simulation, records: list[IntervalRecord],
                       checks: _Checks) -> list[dict[str, Any]]:
    """The charging sessions that arrived before the end of the run (energy in kWh, minutes of
    the day); for a vehicle that left short, ``held_back_by`` (see :func:`held_back_by`)."""
    ev = []
    end_minute = records[-1].first_minute + sim.n_min if records else 0
    steps = checks.band_steps
    minutes = checks.band_governs_min
    names = [] if steps is None else [f.name for f in steps.flexibilities]
    kept = {r.first_minute: r.reserve_kept for r in records}
    declared = {r.first_minute: _connected(sim, r.interval) for r in records}
    for name, station in sim.stations.items():
        for s, left, got in zip(station.sessions, station.remaining_kwh, station.delivered_kwh,
                                strict=True):
            if s.arrive_min >= end_minute:
                continue
            why = ""
            if left > 0.01 and name in names:
                i = names.index(name)
                tightest = _tightest_step_per_interval(minutes, steps.p_max_kw[:, i])
                why = held_back_by(steps.p_max_kw[tightest, i], steps.flexibilities[i].p_high_kw,
                                   minutes[tightest],
                                   [_why_step(steps.binding_max[k], kept.get(first), declared.get(
                                       first), sim.flex_ids[name])
                                    for k in tightest
                                    for first in [int(minutes[k]) // sim.n_min * sim.n_min]],
                                   s.arrive_min, s.depart_min)
            ev.append({"station": name, "arrive_min": s.arrive_min, "depart_min": s.depart_min,
                       "energy_needed_kwh": s.energy_kwh, "delivered_kwh": float(got),
                       "missing_kwh": float(left),
                       "departed": bool(s.depart_min <= end_minute), "held_back_by": why})
    return ev


def _transformer_p_w(sim: Simulation, records: list[IntervalRecord]) -> np.ndarray:
    """The transformer meter's P readings over the traded intervals (W, one per minute)."""
    transformer = [d.device_id for d in sim.meter_setup.devices if d.role == "transformer"]
    start_s = sim.meters.timestamp(records[0].first_minute) if records else 0
    end_s = sim.meters.timestamp(records[-1].first_minute + sim.n_min) if records else 0
    return np.array([int(r["p_w"]) for r in sim.oracle.store.readings_between(start_s, end_s)
                     if int(r["device_id"]) in transformer], dtype=float)


def _run_summary(sim: Simulation, records: list[IntervalRecord]) -> dict[str, Any]:
    """What ran: feeder, chain, hours, interval (s), intervals and orders."""
    return {
        "feeder": sim.config.feeder,
        "chain": sim.config.chain,
        "chain_id": sim.chain.chain_id,
        "hours": sim.config.hours,
        "interval_s": sim.config.interval_s,
        "intervals_traded": len(records),
        "intervals_settled": sum(1 for r in records if r.settled),
        "intervals_not_settled": [r.interval for r in records if not r.settled],
        "intervals_deviations_settled": sum(1 for r in records if r.deviations_settled),
        "orders": sum(r.n_orders for r in records),
        "orders_refused": sum(r.n_rejected_orders for r in records),
    }


def _energy_summary(records: list[IntervalRecord], p_tr_w: np.ndarray,
                    ev: list[dict[str, Any]]) -> dict[str, Any]:
    """Energy in kWh: settled in the market, metered at the transformer (minute readings
    ``p_tr_w`` in W), delivered to and missing from the vehicles."""
    return {
        "energy_traded_locally_kwh": wh_to_kwh(sum(r.local_wh for r in records)),
        "battery_charge_kwh": wh_to_kwh(sum(r.battery_charge_wh for r in records)),
        "battery_discharge_kwh": wh_to_kwh(sum(r.battery_discharge_wh for r in records)),
        "battery_throughput_kwh": wh_to_kwh(sum(r.battery_charge_wh + r.battery_discharge_wh
                                                for r in records)),
        "market_grid_import_kwh": wh_to_kwh(sum(r.grid_import_wh for r in records)),
        "market_grid_export_kwh": wh_to_kwh(sum(r.grid_export_wh for r in records)),
        "metered_members_import_kwh": wh_to_kwh(sum(r.metered_import_wh for r in records)),
        "metered_members_export_kwh": wh_to_kwh(sum(r.metered_export_wh for r in records)),
        "deviation_bought_kwh": wh_to_kwh(sum(r.deviation_buy_wh for r in records)),
        "deviation_sold_kwh": wh_to_kwh(sum(r.deviation_sell_wh for r in records)),
        "deviation_paid_eur": float(nano_eur_to_eur(sum(r.deviation_paid_nano_eur
                                                        for r in records))),
        "metered_transformer_import_kwh": wh_to_kwh(np.clip(p_tr_w, 0, None).sum() / 60),
        "metered_transformer_export_kwh": wh_to_kwh(np.clip(-p_tr_w, 0, None).sum() / 60),
        "ev_energy_delivered_kwh": float(sum(e["delivered_kwh"] for e in ev)),
        "ev_energy_missing_at_departure_kwh": float(sum(e["missing_kwh"] for e in ev
                                                        if e["departed"])),
    }


def _checks_summary(checks: _Checks, status: dict[str, Any]) -> dict[str, Any]:
    """The counts of the oracle (``status``) and of the checks."""
    nr, nr_operated = checks.nr, checks.nr_operated
    return {
        "infeasible_ocm_steps": int(status.get("infeasible_steps", 0)),
        "band_intervals_written": int(status.get("intervals_written", 0)),
        "replay": checks.replay,
        "audit_violations": checks.audit["n_violations"],
        "audit_readings_checked": checks.audit["readings_checked"],
        "nr_steps_checked": len(nr["steps"]),
        "nr_runs": nr["n_runs"],
        "nr_violations": nr["n_violations"],
        "nr_max_loading_pct": _max_loading_pct(nr),
        "nr_operated_max_loading_pct": _max_loading_pct(nr_operated),
        "nr_operated_minutes_checked": len(nr_operated["steps"]),
        "nr_operated_runs": nr_operated["n_runs"],
        "nr_operated_violations": nr_operated["n_violations"],
        "nr_operated_violating_minutes": [s["minute"] for s in nr_operated["steps"]
                                          if s["n_violating_points"]],
        "recomputed_band_mismatches": checks.band_mismatches,
    }


def _max_loading_pct(nr: dict[str, Any]) -> float:
    """The highest line or transformer loading of a Newton-Raphson check, percent."""
    return max((max(s["max_line_loading_pct"], s["max_trafo_loading_pct"]) for s in nr["steps"]),
               default=0.0)


def _aggregator_gas_summary(sim: Simulation, records: list[IntervalRecord],
                            gas: int) -> dict[str, Any]:
    """Aggregator hours (and those planned without band bounds) and gas used."""
    return {
        "aggregator_hours": len(sim.aggregator_log),
        "aggregator_hours_unbounded": sum(1 for a in sim.aggregator_log
                                          if not a.get("bounded_by_bands", True)),
        "gas_used_total": gas,
        "gas_used_orders": sum(r.gas_orders for r in records),
        "gas_used_settlement": sum(r.gas_settle for r in records),
        "gas_used_deviations": sum(r.gas_deviations for r in records),
        "gas_used_readings": sum(r.gas_readings for r in records),
    }


def finish(sim: Simulation, records: list[IntervalRecord]) -> SimulationResult:
    """Run the checks and assemble the result (summary included)."""
    from gridshare.sim.run import SimulationResult

    checks = _run_checks(sim, records)
    stmts = statements(sim)
    status = sim.oracle.status()
    t0 = time.perf_counter()
    gas = total_gas(sim)
    sim.timings["gas_scan"] = time.perf_counter() - t0
    ev = _charging_sessions(sim, records, checks)
    summary = {**_run_summary(sim, records),
               **_energy_summary(records, _transformer_p_w(sim, records), ev),
               **_checks_summary(checks, status), **_aggregator_gas_summary(sim, records, gas)}
    replay = checks.replay
    summary["ok"] = bool(replay["equal"] == replay["replayed"]
                         and checks.audit["n_violations"] == 0
                         and checks.nr["n_violations"] == 0 and checks.band_mismatches == 0
                         and summary["intervals_settled"] == len(records)
                         and summary["intervals_deviations_settled"] == len(records))
    sim.timings["verify"] = sum(sim.timings.get(k, 0.0) for k in
                                ("replay", "audit", "newton_raphson", "recompute_bands"))
    return SimulationResult(
        config=sim.config, deployment=sim.deployment, chain_id=sim.chain.chain_id,
        day_start_s=sim.day_start_s, minutes_per_interval=sim.n_min, flex_names=sim.flex_names,
        intervals=records, aggregator=sim.aggregator_log, statements=stmts, audit=checks.audit,
        nr_check=checks.nr, nr_operated=checks.nr_operated,
        oracle_status=json.loads(json.dumps(status, default=str)), ev=ev,
        summary=summary, band_steps=checks.band_steps, band_step_hours=checks.band_hours,
        band_step_ul_kw=checks.band_ul_kw,
        timings_s=dict(sim.timings))
