"""Element tables of the feeder model: lines, two-winding transformers, shunts and the slack.

Engineering data as in pandapower (ohm per km, percent on the rated power, kW), validated on
construction. ``capacity.grid.Feeder`` holds them; ``capacity.pandapower_import`` and
``capacity.feeder_io`` build them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

TAP_CHANGER_TYPES = ("", "ratio", "symmetrical", "ideal")
"""Supported tap changer types ('' = no tap changer), as pandapower's ``tap_changer_type``."""


def as_float_array(values: Any, name: str, n: int | None = None) -> np.ndarray:
    arr = np.array(values, dtype=float).reshape(-1)
    if n is not None and arr.shape != (n,):
        raise ValueError(f"{name} must have {n} entries, got {arr.shape[0]}")
    return arr


def as_int_array(values: Any, name: str, n: int | None = None) -> np.ndarray:
    arr = np.array(values).reshape(-1)
    if arr.size and not np.all(np.isfinite(arr.astype(float))):
        raise ValueError(f"{name} must be integers, got non-finite values")
    if arr.size and np.any(arr.astype(float) != np.round(arr.astype(float))):
        raise ValueError(f"{name} must be integers")
    arr = arr.astype(np.int64)
    if n is not None and arr.shape != (n,):
        raise ValueError(f"{name} must have {n} entries, got {arr.shape[0]}")
    return arr


def element_names(values: Sequence[Any] | None, n: int, prefix: str) -> tuple[str, ...]:
    if values is None:
        return tuple(f"{prefix} {i}" for i in range(n))
    names = tuple("" if v is None else str(v) for v in values)
    if len(names) != n:
        raise ValueError(f"{prefix} names must have {n} entries, got {len(names)}")
    return names


def _set_df_and_ids(table: Any, kind: str, n: int) -> None:
    """Validate and set ``df`` (derating factor, default 1, > 0) and ``ids`` (default 0..n-1,
    unique) of a frozen element table."""
    df = np.ones(n) if table.df is None else as_float_array(table.df, f"{kind} df", n)
    if not np.all(np.isfinite(df) & (df > 0)):
        raise ValueError(f"{kind} df (derating factor) must be finite and > 0")
    ids = np.arange(n) if table.ids is None else as_int_array(table.ids, f"{kind} ids", n)
    if np.unique(ids).shape[0] != n:
        raise ValueError(f"{kind} ids must be unique")
    object.__setattr__(table, "df", df)
    object.__setattr__(table, "ids", ids)


@dataclass(frozen=True, eq=False)
class LineTable:
    """Lines (cables or overhead lines) as pi sections; per-km data times length / parallel.

    ``r_ohm_per_km``, ``x_ohm_per_km`` series impedance; ``c_nf_per_km`` shunt capacitance and
    ``g_us_per_km`` shunt conductance (both split half to each end); ``parallel`` identical
    systems in parallel. Thermal rating as pandapower's: ``max_i_ka`` per system (NaN: unrated,
    no loading limit) times the derating factor ``df``; ``ampacity_ka`` is
    ``max_i_ka * df * parallel``. ``ids``: the lines' ids (pandapower's ``net.line.index`` when
    imported; default 0..n-1), unique.
    """

    from_bus: np.ndarray
    to_bus: np.ndarray
    length_km: np.ndarray
    r_ohm_per_km: np.ndarray
    x_ohm_per_km: np.ndarray
    c_nf_per_km: np.ndarray
    g_us_per_km: np.ndarray
    parallel: np.ndarray
    names: tuple[str, ...] = ()
    max_i_ka: np.ndarray | None = None
    df: np.ndarray | None = None
    ids: np.ndarray | None = None

    def __post_init__(self) -> None:
        n = np.asarray(self.from_bus).reshape(-1).shape[0]
        set_ = object.__setattr__
        _set_df_and_ids(self, "line", n)
        i_max = np.full(n, np.nan) if self.max_i_ka is None else as_float_array(
            self.max_i_ka, "line max_i_ka", n)
        if np.any(i_max <= 0) or np.any(np.isinf(i_max)):
            raise ValueError("line max_i_ka must be finite and > 0 (or NaN: unrated)")
        set_(self, "max_i_ka", i_max)
        set_(self, "from_bus", as_int_array(self.from_bus, "line from_bus", n))
        set_(self, "to_bus", as_int_array(self.to_bus, "line to_bus", n))
        for col in ("length_km", "r_ohm_per_km", "x_ohm_per_km", "c_nf_per_km", "g_us_per_km"):
            arr = as_float_array(getattr(self, col), f"line {col}", n)
            if not np.all(np.isfinite(arr)):
                raise ValueError(f"line {col} must be finite")
            set_(self, col, arr)
        set_(self, "parallel", as_int_array(self.parallel, "line parallel", n))
        set_(self, "names", element_names(self.names or None, n, "line"))
        if np.any(self.parallel < 1):
            raise ValueError("line parallel must be >= 1")
        if np.any(self.length_km < 0):
            raise ValueError("line length_km must be >= 0")

    def __len__(self) -> int:
        return int(self.from_bus.shape[0])

    @property
    def ampacity_ka(self) -> np.ndarray:
        """Thermal current limit per line (all parallel systems), kA; NaN where unrated."""
        return self.max_i_ka * self.df * self.parallel

    @classmethod
    def empty(cls) -> LineTable:
        z = np.zeros(0)
        return cls(z, z, z, z, z, z, z, z)


@dataclass(frozen=True, eq=False)
class TrafoTable:
    """Two-winding transformers with pandapower's parameters (percent on the rated power).

    ``tap_side`` is 'hv', 'lv' or '' (no tap changer), ``tap_changer_type`` one of
    ``TAP_CHANGER_TYPES``. ``shift_degree`` is the vector group's phase shift (LV lags HV).
    Thermal rating as pandapower's: ``sn_mva`` times the derating factor ``df`` (default 1) per
    transformer. ``ids``: pandapower's ``net.trafo.index`` when imported (default 0..n-1).
    """

    hv_bus: np.ndarray
    lv_bus: np.ndarray
    sn_mva: np.ndarray
    vn_hv_kv: np.ndarray
    vn_lv_kv: np.ndarray
    vk_percent: np.ndarray
    vkr_percent: np.ndarray
    pfe_kw: np.ndarray
    i0_percent: np.ndarray
    shift_degree: np.ndarray
    tap_side: tuple[str, ...]
    tap_changer_type: tuple[str, ...]
    tap_pos: np.ndarray
    tap_neutral: np.ndarray
    tap_step_percent: np.ndarray
    tap_step_degree: np.ndarray
    parallel: np.ndarray
    leakage_resistance_ratio_hv: np.ndarray
    leakage_reactance_ratio_hv: np.ndarray
    names: tuple[str, ...] = ()
    df: np.ndarray | None = None
    ids: np.ndarray | None = None

    def __post_init__(self) -> None:
        n = np.asarray(self.hv_bus).reshape(-1).shape[0]
        set_ = object.__setattr__
        _set_df_and_ids(self, "trafo", n)
        set_(self, "hv_bus", as_int_array(self.hv_bus, "trafo hv_bus", n))
        set_(self, "lv_bus", as_int_array(self.lv_bus, "trafo lv_bus", n))
        for col in (
            "sn_mva", "vn_hv_kv", "vn_lv_kv", "vk_percent", "vkr_percent", "pfe_kw",
            "i0_percent", "shift_degree", "leakage_resistance_ratio_hv",
            "leakage_reactance_ratio_hv",
        ):
            arr = as_float_array(getattr(self, col), f"trafo {col}", n)
            if not np.all(np.isfinite(arr)):
                raise ValueError(f"trafo {col} must be finite")
            set_(self, col, arr)
        for col in ("tap_pos", "tap_neutral", "tap_step_percent", "tap_step_degree"):
            # NaN means "not set", as in pandapower
            set_(self, col, as_float_array(getattr(self, col), f"trafo {col}", n))
        set_(self, "parallel", as_int_array(self.parallel, "trafo parallel", n))
        sides = tuple("" if s is None else str(s).lower() for s in self.tap_side)
        types = tuple("" if t is None else str(t).lower() for t in self.tap_changer_type)
        if len(sides) != n or len(types) != n:
            raise ValueError(f"trafo tap_side and tap_changer_type must have {n} entries")
        for s in sides:
            if s not in ("", "hv", "lv"):
                raise ValueError(f"trafo tap_side must be 'hv', 'lv' or empty, got {s!r}")
        for t in types:
            if t not in TAP_CHANGER_TYPES:
                raise ValueError(
                    f"trafo tap_changer_type {t!r} not supported (one of {TAP_CHANGER_TYPES})"
                )
        set_(self, "tap_side", sides)
        set_(self, "tap_changer_type", types)
        set_(self, "names", element_names(self.names or None, n, "trafo"))
        if np.any(self.parallel < 1):
            raise ValueError("trafo parallel must be >= 1")
        if np.any(self.sn_mva <= 0) or np.any(self.vn_hv_kv <= 0) or np.any(self.vn_lv_kv <= 0):
            raise ValueError("trafo sn_mva, vn_hv_kv and vn_lv_kv must be > 0")
        if np.any(self.vk_percent <= 0):
            raise ValueError("trafo vk_percent must be > 0 (zero-impedance transformer)")
        if np.any(self.vkr_percent < 0) or np.any(self.vkr_percent > self.vk_percent):
            raise ValueError("trafo vkr_percent must lie in [0, vk_percent]")

    def __len__(self) -> int:
        return int(self.hv_bus.shape[0])

    @classmethod
    def empty(cls) -> TrafoTable:
        z = np.zeros(0)
        return cls(z, z, z, z, z, z, z, z, z, z, (), (), z, z, z, z, z, z, z)


@dataclass(frozen=True, eq=False)
class ShuntTable:
    """Constant-admittance shunts: ``p_kw`` / ``q_kvar`` consumed at 1 pu voltage."""

    bus: np.ndarray
    p_kw: np.ndarray
    q_kvar: np.ndarray

    def __post_init__(self) -> None:
        n = np.asarray(self.bus).reshape(-1).shape[0]
        object.__setattr__(self, "bus", as_int_array(self.bus, "shunt bus", n))
        for col in ("p_kw", "q_kvar"):
            arr = as_float_array(getattr(self, col), f"shunt {col}", n)
            if not np.all(np.isfinite(arr)):
                raise ValueError(f"shunt {col} must be finite")
            object.__setattr__(self, col, arr)

    def __len__(self) -> int:
        return int(self.bus.shape[0])

    @classmethod
    def empty(cls) -> ShuntTable:
        z = np.zeros(0)
        return cls(z, z, z)


@dataclass(frozen=True)
class Slack:
    """The slack (external grid / transformer reference) bus and its voltage phasor."""

    bus_id: int
    vm_pu: float = 1.0
    va_degree: float = 0.0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.vm_pu) and self.vm_pu > 0 and math.isfinite(self.va_degree)):
            raise ValueError(f"slack voltage must be finite and > 0, got {self.vm_pu} pu")
