"""One task of the fleet: the certified bands of one feeder over one hour (four 15-min intervals).

Every interval goes through the oracle's own code path, so the fleet's bands are the oracle's:
the feeder state of the interval when no meter has reported (``oracle.state.build_state``: every
bus on the day profile forecast, the slack at its nominal voltage, integers in W / var /
micro-pu), the oracle's choice of OCM steps (``oracle.forecast.forecast_steps``), its canonical
inputs with its ``OcmSettings`` and per-interval seed (``oracle.service.ocm_inputs``), and
``oracle.service.compute_from_inputs`` (``capacity.ocm.compute_bands`` with the oracle's
arguments, every other ``compute_bands`` setting, thermal limits included, at its default, then
the intersection of the step bands). Bands are in W, as
``GridCapacity.writeBands`` takes them. Unlike the oracle, which forecasts interval t+1 by
persistence of interval t, a planning run knows the profile of interval t itself and uses it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from gridshare.fleet.model import FeederModel
from gridshare.units import kw_to_w
from oracle.forecast import forecast_steps
from oracle.registry import DeviceRegistry
from oracle.service import OcmSettings, compute_from_inputs, ocm_inputs
from oracle.state import build_state

INTERVAL_S = 900
"""The band interval (s): the contracts' default ``intervalSeconds``."""
INTERVALS_PER_HOUR = 3600 // INTERVAL_S
INPUTS_FORMAT = "gridshare-fleet-inputs/1"


@dataclass(frozen=True)
class IntervalBands:
    """The bands of one interval (W, in the feeder's flexibility order) and what limits them.

    ``interval``: unix s // 900 (the oracle's interval id); ``start``: local "HH:MM";
    ``upper``/``lower``: what limits that side of the band: "rated" (nothing: it is the rated
    range), "infeasible" (a step has no safe setting; the band is the safest one), else
    ``compute_bands``' binding constraint of the tightest step on that side: "v_low",
    "v_high", "line <id>" or "trafo <id>" (a thermal limit).
    """

    interval: int
    start: str
    steps: int
    infeasible_steps: int
    empty: bool
    p_min_w: tuple[int, ...]
    p_max_w: tuple[int, ...]
    v_min_at_max_pu: float
    v_max_at_min_pu: float
    upper: str
    lower: str


@dataclass(frozen=True)
class HourBands:
    """One task's result: the feeder's intervals of one hour, its flexibilities' names (the
    order of the bands) and the compute time (s)."""

    devices: tuple[str, ...]
    hour: int
    intervals: tuple[IntervalBands, ...]
    seconds: float


def registry_of(model: FeederModel) -> DeviceRegistry:
    """The feeder's flexibilities as the oracle's device registry (device ids 1..n)."""
    records = [{"device_id": k + 1, "index": k, "bus": f.bus_id, "kind": f.kind.value,
                "p_min_rated_w": int(kw_to_w(f.p_low_kw)),
                "p_max_rated_w": int(kw_to_w(f.p_high_kw))}
               for k, f in enumerate(model.feeder.flexibilities)]
    return DeviceRegistry.from_records(records, model.feeder,
                                       {k + 1: f.name for k, f in
                                        enumerate(model.feeder.flexibilities)})


def interval_inputs(model: FeederModel, registry: DeviceRegistry, interval: int,
                    settings: OcmSettings) -> dict[str, Any]:
    """Canonical OCM inputs of ``interval`` from the profile forecast (oracle format)."""
    state = build_state(interval, INTERVAL_S, registry, model.feeder, [], {}, model.forecast)
    steps = forecast_steps(state, settings.forecast)
    return {
        "format": INPUTS_FORMAT, "feeder": model.name, "interval": int(interval),
        "source_interval": int(interval), "interval_s": INTERVAL_S,
        "bus_ids": [int(b) for b in state.bus_ids],
        "steps_unix_s": [int(x) for x in state.timestamps[steps]],
        "p_w": state.p_w[steps].tolist(), "q_var": state.q_var[steps].tolist(),
        "v_slack_micro_pu": state.v_slack_micro_pu[steps].tolist(),
        "devices": [[d.device_id, d.bus, d.p_min_rated_w, d.p_max_rated_w, d.kind]
                    for d in registry.of_role("flexibility")],
        "ocm": ocm_inputs(settings, interval),
    }


def _limit(at_rated: bool, infeasible: bool, step_sums_kw: np.ndarray, bindings: list[str]
           ) -> str:
    """What limits one side of a band (see ``IntervalBands``): ``step_sums_kw`` (T,) is each
    step's summed band on that side, signed so that the tightest step has the smallest."""
    if at_rated:
        return "rated"
    if infeasible:
        return "infeasible"
    return bindings[int(np.argmin(step_sums_kw))]


def interval_bands(model: FeederModel, registry: DeviceRegistry, interval: int,
                   settings: OcmSettings) -> IntervalBands:
    """The oracle's bands of one interval (see module docstring)."""
    inputs = interval_inputs(model, registry, interval, settings)
    out = compute_from_inputs(model.feeder, inputs)
    result = out["result"]
    rated_min = np.array([d[2] for d in inputs["devices"]])
    rated_max = np.array([d[3] for d in inputs["devices"]])
    v_min = float(result.v_min_at_max_pu.min())
    v_max = float(result.v_max_at_min_pu.max())
    infeasible = int(np.count_nonzero(~result.feasible))
    minute = (interval * INTERVAL_S - model.forecast.day_start_s) // 60 % 1440
    return IntervalBands(
        interval=int(interval), start=f"{minute // 60:02d}:{minute % 60:02d}",
        steps=int(result.n_steps), infeasible_steps=infeasible,
        empty=bool(np.any(out["empty"])),
        p_min_w=tuple(out["p_min_w"]), p_max_w=tuple(out["p_max_w"]),
        v_min_at_max_pu=v_min, v_max_at_min_pu=v_max,
        upper=_limit(bool(np.all(np.array(out["p_max_w"]) == rated_max)), infeasible > 0,
                     result.p_max_kw.sum(axis=1), result.binding_max),
        lower=_limit(bool(np.all(np.array(out["p_min_w"]) == rated_min)), infeasible > 0,
                     -result.p_min_kw.sum(axis=1), result.binding_min),
    )


def hour_intervals(model: FeederModel, hour: int) -> np.ndarray:
    """The oracle interval ids of local hour ``hour`` (0..23) of the model's day."""
    if not 0 <= hour < 24:
        raise ValueError(f"hour must be in 0..23, got {hour}")
    first = (model.forecast.day_start_s + hour * 3600) // INTERVAL_S
    return first + np.arange(INTERVALS_PER_HOUR)


def feeder_hour(model: FeederModel, hour: int, settings: OcmSettings) -> HourBands:
    """The task: bands of the feeder's four intervals of local hour ``hour``."""
    t0 = time.perf_counter()
    registry = registry_of(model)
    intervals = tuple(interval_bands(model, registry, int(i), settings)
                      for i in hour_intervals(model, hour))
    devices = tuple(f.name for f in model.feeder.flexibilities)
    return HourBands(devices, hour, intervals, time.perf_counter() - t0)
