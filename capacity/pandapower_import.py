"""Import of a pandapower network into the arguments of ``capacity.grid.Feeder``.

Reproduces what ``pandapower.runpp`` builds by default (pandapower 3.5): loads, sgens and
storages as constant PQ (``p_mw * scaling``, ``q_mvar * scaling``; sgen negative), shunts as
constant admittance (``step`` and ``(vn_bus / vn_shunt)^2``), closed bus-bus switches fuse their
buses, open line switches disconnect that end of the line (the open-ended line stays energised
from the other end, as pandapower's auxiliary bus does; it is kept as the equivalent shunt).
Out-of-service buses and elements are ignored.

One function per element type, in the order of pandapower's converter (``_pd2ppc``): buses and
switches, lines, transformers, PQ elements (loads, sgens, storages), shunts, the slack.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from capacity.tables import LineTable, ShuntTable, Slack, TrafoTable

SUPPORTED_PANDAPOWER_ELEMENTS = frozenset(
    {"bus", "line", "trafo", "ext_grid", "load", "sgen", "storage", "shunt", "switch"}
)
"""pandapower element tables imported by ``Feeder.from_pandapower``; any other table with
in-service rows is rejected (``controller`` is ignored: ``runpp`` does not run controllers)."""

_IGNORED_PANDAPOWER_TABLES = frozenset({"controller"})


def _col(df: pd.DataFrame, name: str, default: float) -> np.ndarray:
    if name not in df.columns:
        return np.full(len(df), default, dtype=float)
    return pd.to_numeric(df[name], errors="coerce").to_numpy(dtype=float, na_value=np.nan)


def _check_unsupported(net: Any) -> None:
    for key in net:
        if key.startswith("_") or key.startswith("res_"):
            continue
        table = net[key]
        if not isinstance(table, pd.DataFrame) or "in_service" not in table.columns:
            continue
        if key in SUPPORTED_PANDAPOWER_ELEMENTS or key in _IGNORED_PANDAPOWER_TABLES:
            continue
        n_active = int(table["in_service"].fillna(False).astype(bool).sum())
        if n_active:
            raise ValueError(
                f"pandapower element {key!r} has {n_active} in-service row(s); not supported "
                f"(supported: {', '.join(sorted(SUPPORTED_PANDAPOWER_ELEMENTS))})"
            )


def feeder_kwargs_from_pandapower(net: Any) -> dict[str, Any]:
    """Keyword arguments of ``Feeder`` (all but ``name``) for a pandapower network."""
    _check_unsupported(net)
    bus = net.bus[net.bus["in_service"].astype(bool)]
    bus_ids = bus.index.to_numpy(dtype=np.int64)
    live = set(bus_ids.tolist())
    vn_of = dict(zip(bus_ids.tolist(), bus["vn_kv"].to_numpy(dtype=float).tolist(), strict=True))
    f_hz = float(getattr(net, "f_hz", 50.0))
    switch = net.switch if "switch" in net else pd.DataFrame()
    closed = switch["closed"].astype(bool) if len(switch) else pd.Series(dtype=bool)
    links = _bus_links(net, switch, closed, live)
    lines, stubs = _lines(net, switch, closed, live, vn_of, f_hz)
    p_kw, q_kvar = _pq_elements(net, bus_ids, live)
    names = tuple("" if n is None else str(n) for n in bus["name"]) if "name" in bus.columns \
        else ()
    return {
        "bus_ids": bus_ids,
        "bus_vn_kv": bus["vn_kv"].to_numpy(dtype=float),
        "slack": _slack(net, live),
        "lines": lines,
        "trafos": _trafos(net, live),
        "shunts": _shunts(net, live, vn_of, stubs),
        "p_kw": p_kw,
        "q_kvar": q_kvar,
        "bus_links": np.array(links, dtype=np.int64).reshape(-1, 2),
        "bus_names": names,
        "f_hz": f_hz,
    }


def _bus_links(
    net: Any, switch: pd.DataFrame, closed: pd.Series, live: set[int]
) -> list[tuple[int, int]]:
    """Closed bus-bus switches between live buses (ValueError for z_ohm > 0 or an open
    transformer switch)."""
    links: list[tuple[int, int]] = []
    if not len(switch):
        return links
    bb = switch[(switch["et"] == "b") & closed]
    for a, b, z in zip(bb["bus"], bb["element"], _col(bb, "z_ohm", 0.0), strict=True):
        if int(a) in live and int(b) in live:
            if z > 0:
                raise ValueError(
                    f"closed bus-bus switch {int(a)}-{int(b)} with z_ohm={z} > 0 not supported"
                )
            links.append((int(a), int(b)))
    open_t = switch[(switch["et"] == "t") & ~closed]
    for tid in open_t["element"]:
        if int(tid) in net.trafo.index and bool(net.trafo.at[int(tid), "in_service"]):
            raise ValueError(f"open switch at transformer {int(tid)} not supported")
    return links


def _open_line_ends(switch: pd.DataFrame, closed: pd.Series) -> dict[int, set[int]]:
    """Line index -> buses at which an open line switch disconnects it."""
    open_ends: dict[int, set[int]] = {}
    if len(switch):
        ls = switch[(switch["et"] == "l") & ~closed]
        for b, e in zip(ls["bus"], ls["element"], strict=True):
            open_ends.setdefault(int(e), set()).add(int(b))
    return open_ends


def _stub_admittance(row: pd.Series, vn_kv: float, f_hz: float) -> complex:
    """Equivalent shunt (pu on 1 MVA) of a line open at its far end: the pi section's y_c/2
    at the closed end plus its series impedance in series with y_c/2 (0 without charging)."""
    base_z = vn_kv**2
    length, par = float(row["length_km"]), float(row["parallel"])
    z = (float(row["r_ohm_per_km"]) + 1j * float(row["x_ohm_per_km"])) * length / base_z / par
    g_us = float(row.get("g_us_per_km", 0.0) or 0.0)
    y_c = (g_us * 1e-6 + 1j * 2 * math.pi * f_hz * float(row["c_nf_per_km"]) * 1e-9)
    y_c *= base_z * length * par
    if y_c == 0:
        return 0j
    return y_c / 2 + 1.0 / (z + 2.0 / y_c)


def _lines(
    net: Any, switch: pd.DataFrame, closed: pd.Series, live: set[int],
    vn_of: dict[int, float], f_hz: float,
) -> tuple[LineTable, list[tuple[int, complex]]]:
    """In-service lines between live buses, with their ratings (``max_i_ka``, ``df``) and
    indices; lines with an open switch at one end become equivalent shunts at the other
    (returned as (bus, admittance pu) pairs), so they have no loading here."""
    line = net.line[
        net.line["in_service"].astype(bool)
        & net.line["from_bus"].isin(live)
        & net.line["to_bus"].isin(live)
    ]
    open_ends = _open_line_ends(switch, closed)
    keep = np.ones(len(line), dtype=bool)
    stubs: list[tuple[int, complex]] = []
    for k, (lid, row) in enumerate(line.iterrows()):  # loop over lines with open switches only
        ends = open_ends.get(int(lid))
        if not ends:
            continue
        keep[k] = False
        fb, tb = int(row["from_bus"]), int(row["to_bus"])
        if fb in ends and tb in ends:
            continue
        y_eq = _stub_admittance(row, vn_of[fb], f_hz)
        if y_eq != 0:
            stubs.append((tb if fb in ends else fb, y_eq))
    line = line[keep]
    table = LineTable(
        from_bus=line["from_bus"].to_numpy(),
        to_bus=line["to_bus"].to_numpy(),
        length_km=line["length_km"].to_numpy(dtype=float),
        r_ohm_per_km=line["r_ohm_per_km"].to_numpy(dtype=float),
        x_ohm_per_km=line["x_ohm_per_km"].to_numpy(dtype=float),
        c_nf_per_km=np.nan_to_num(_col(line, "c_nf_per_km", 0.0)),
        g_us_per_km=np.nan_to_num(_col(line, "g_us_per_km", 0.0)),
        parallel=_col(line, "parallel", 1.0),
        names=_element_names(line, "line"),
        max_i_ka=_col(line, "max_i_ka", math.nan),
        df=np.nan_to_num(_col(line, "df", 1.0), nan=1.0),
        ids=line.index.to_numpy(dtype=np.int64),
    )
    return table, stubs


def _element_names(df: pd.DataFrame, prefix: str) -> tuple[str, ...]:
    """The ``name`` column as strings (``"<prefix> <index>"`` where it is None)."""
    names = df["name"] if "name" in df.columns else [None] * len(df)
    return tuple(str(n) if n is not None else f"{prefix} {i}"
                 for i, n in zip(df.index, names, strict=True))


def _strings(df: pd.DataFrame, col: str) -> tuple[str, ...]:
    """A text column with None/NaN/NA as ''."""
    if col not in df.columns:
        return ("",) * len(df)
    return tuple("" if (v is None or (isinstance(v, float) and math.isnan(v)) or v is pd.NA)
                 else str(v) for v in df[col])


def _check_trafo_features(trafo: pd.DataFrame) -> None:
    """Reject tap-dependency tables, second tap changers and tap-dependent impedances."""
    if "tap_dependency_table" in trafo.columns and bool(
        trafo["tap_dependency_table"].fillna(False).astype(bool).any()
    ):
        raise ValueError("transformers with tap_dependency_table=True are not supported")
    if "tap2_pos" in trafo.columns and bool(trafo["tap2_pos"].notna().any()):
        raise ValueError("transformers with a second tap changer (tap2_*) are not supported")
    if "tap_dependent_impedance" in trafo.columns and bool(
        trafo["tap_dependent_impedance"].fillna(False).astype(bool).any()
    ):
        raise ValueError("transformers with tap_dependent_impedance are not supported")


def _trafos(net: Any, live: set[int]) -> TrafoTable:
    """In-service two-winding transformers between live buses."""
    trafo = net.trafo[
        net.trafo["in_service"].astype(bool)
        & net.trafo["hv_bus"].isin(live)
        & net.trafo["lv_bus"].isin(live)
    ]
    _check_trafo_features(trafo)
    return TrafoTable(
        hv_bus=trafo["hv_bus"].to_numpy(),
        lv_bus=trafo["lv_bus"].to_numpy(),
        sn_mva=_col(trafo, "sn_mva", math.nan),
        vn_hv_kv=_col(trafo, "vn_hv_kv", math.nan),
        vn_lv_kv=_col(trafo, "vn_lv_kv", math.nan),
        vk_percent=_col(trafo, "vk_percent", math.nan),
        vkr_percent=_col(trafo, "vkr_percent", math.nan),
        pfe_kw=np.nan_to_num(_col(trafo, "pfe_kw", 0.0)),
        i0_percent=np.nan_to_num(_col(trafo, "i0_percent", 0.0)),
        shift_degree=np.nan_to_num(_col(trafo, "shift_degree", 0.0)),
        tap_side=_strings(trafo, "tap_side"),
        tap_changer_type=_strings(trafo, "tap_changer_type"),
        tap_pos=_col(trafo, "tap_pos", math.nan),
        tap_neutral=_col(trafo, "tap_neutral", math.nan),
        tap_step_percent=_col(trafo, "tap_step_percent", math.nan),
        tap_step_degree=_col(trafo, "tap_step_degree", math.nan),
        parallel=_col(trafo, "parallel", 1.0),
        leakage_resistance_ratio_hv=np.nan_to_num(
            _col(trafo, "leakage_resistance_ratio_hv", 0.5), nan=0.5),
        leakage_reactance_ratio_hv=np.nan_to_num(
            _col(trafo, "leakage_reactance_ratio_hv", 0.5), nan=0.5),
        names=_element_names(trafo, "trafo"),
        df=np.nan_to_num(_col(trafo, "df", 1.0), nan=1.0),
        ids=trafo.index.to_numpy(dtype=np.int64),
    )


def _pq_elements(net: Any, bus_ids: np.ndarray, live: set[int]) -> tuple[np.ndarray, np.ndarray]:
    """Loads, static generators (negative) and storages as net consumption per bus (kW, kvar)."""
    pos = {b: i for i, b in enumerate(bus_ids.tolist())}
    p_kw = np.zeros(len(bus_ids))
    q_kvar = np.zeros(len(bus_ids))
    for table, sign in (("load", 1.0), ("sgen", -1.0), ("storage", 1.0)):
        if table not in net or not len(net[table]):
            continue
        df = net[table]
        df = df[df["in_service"].astype(bool) & df["bus"].isin(live)]
        if not len(df):
            continue
        scaling = np.nan_to_num(_col(df, "scaling", 1.0), nan=1.0)
        p = _col(df, "p_mw", 0.0) * scaling * 1e3 * sign
        q = _col(df, "q_mvar", 0.0) * scaling * 1e3 * sign
        if not (np.all(np.isfinite(p)) and np.all(np.isfinite(q))):
            raise ValueError(f"pandapower {table} has NaN or infinite p_mw / q_mvar")
        idx = np.array([pos[int(b)] for b in df["bus"]], dtype=np.int64)
        np.add.at(p_kw, idx, p)
        np.add.at(q_kvar, idx, q)
    return p_kw, q_kvar


def _shunts(
    net: Any, live: set[int], vn_of: dict[int, float], stubs: list[tuple[int, complex]]
) -> ShuntTable:
    """Shunts (``step`` and ``(vn_bus / vn_shunt)^2`` folded in) and open-ended line stubs as
    constant admittances, kW / kvar at 1 pu."""
    sh_bus: list[int] = [b for b, _ in stubs]
    sh_p: list[float] = [float((y * 1e3).real) for _, y in stubs]
    sh_q: list[float] = [float(-(y * 1e3).imag) for _, y in stubs]
    if "shunt" in net and len(net.shunt):
        sh = net.shunt[net.shunt["in_service"].astype(bool) & net.shunt["bus"].isin(live)]
        if "step_dependency_table" in sh.columns and bool(
            sh["step_dependency_table"].fillna(False).astype(bool).any()
        ):
            raise ValueError("shunts with step_dependency_table=True are not supported")
        for _, row in sh.iterrows():
            b = int(row["bus"])
            vn_sh = float(row["vn_kv"]) if pd.notna(row.get("vn_kv")) else vn_of[b]
            factor = float(row.get("step", 1) or 0) * (vn_of[b] / vn_sh) ** 2 * 1e3
            sh_bus.append(b)
            sh_p.append(float(row["p_mw"]) * factor)
            sh_q.append(float(row["q_mvar"]) * factor)
    return ShuntTable(bus=np.array(sh_bus, dtype=np.int64), p_kw=np.array(sh_p),
                      q_kvar=np.array(sh_q))


def _slack(net: Any, live: set[int]) -> Slack:
    """The one in-service ext_grid (ValueError for none or several)."""
    ext = net.ext_grid[net.ext_grid["in_service"].astype(bool) & net.ext_grid["bus"].isin(live)]
    if len(ext) == 0:
        raise ValueError("no slack: the network has no in-service ext_grid")
    if len(ext) > 1:
        raise ValueError(f"{len(ext)} in-service ext_grids; exactly one slack is supported")
    row = ext.iloc[0]
    va = float(row["va_degree"]) if "va_degree" in ext.columns else 0.0
    return Slack(bus_id=int(row["bus"]), vm_pu=float(row["vm_pu"]), va_degree=va)
