"""A ``Feeder`` as a pandapower network (the inverse of ``capacity.pandapower_import``).

Buses, lines and transformers keep their ids as pandapower indices (so ``res_bus``, ``res_line``
and ``res_trafo`` rows are ``feeder.bus_ids``, ``feeder.line_ids``, ``feeder.trafo_ids``), with
their ratings (``max_i_ka``, ``df``, ``sn_mva``); shunts become pandapower shunts, bus links
closed bus-bus switches, the slack an ``ext_grid``, and every bus gets one load named
``"bus <id>"`` holding the feeder's base case (kW / kvar). ``runpp`` on the result reproduces
the feeder's load flow (tested against the nets the built-in feeders are imported from).
"""

from __future__ import annotations

import math
from typing import Any

import pandapower as pp

from capacity.grid import Feeder

_TAP_CHANGER_NAMES = {"ratio": "Ratio", "symmetrical": "Symmetrical", "ideal": "Ideal"}


def pandapower_net(feeder: Feeder) -> pp.pandapowerNet:
    """A new pandapower net of ``feeder`` with one load per bus (see module docstring)."""
    net = pp.create_empty_network(name=feeder.name, f_hz=feeder.f_hz, sn_mva=1.0)
    for b, vn, name in zip(feeder.bus_ids, feeder.bus_vn_kv, feeder.bus_names, strict=True):
        pp.create_bus(net, vn_kv=float(vn), name=name, index=int(b))
    slack = feeder.slack
    pp.create_ext_grid(net, slack.bus_id, vm_pu=slack.vm_pu, va_degree=slack.va_degree)
    _add_lines(net, feeder)
    for i in range(len(feeder.trafos)):
        _add_trafo(net, feeder, i)
    sh = feeder.shunts
    for b, p_kw, q_kvar in zip(sh.bus, sh.p_kw, sh.q_kvar, strict=True):
        pp.create_shunt(net, int(b), q_mvar=float(q_kvar) / 1e3, p_mw=float(p_kw) / 1e3)
    for a, b in feeder.bus_links.tolist():
        pp.create_switch(net, int(a), int(b), et="b", closed=True)
    for b, p_kw, q_kvar in zip(feeder.bus_ids, feeder.p_kw, feeder.q_kvar, strict=True):
        pp.create_load(net, int(b), p_mw=float(p_kw) / 1e3, q_mvar=float(q_kvar) / 1e3,
                       name=f"bus {int(b)}")
    return net


def _add_lines(net: pp.pandapowerNet, feeder: Feeder) -> None:
    ln = feeder.lines
    for i in range(len(ln)):
        pp.create_line_from_parameters(
            net, int(ln.from_bus[i]), int(ln.to_bus[i]), float(ln.length_km[i]),
            float(ln.r_ohm_per_km[i]), float(ln.x_ohm_per_km[i]), float(ln.c_nf_per_km[i]),
            float(ln.max_i_ka[i]), name=ln.names[i], index=int(ln.ids[i]), df=float(ln.df[i]),
            parallel=int(ln.parallel[i]), g_us_per_km=float(ln.g_us_per_km[i]),
        )


def _add_trafo(net: pp.pandapowerNet, feeder: Feeder, i: int) -> None:
    tr = feeder.trafos
    tap: dict[str, Any] = {}
    if tr.tap_side[i] and tr.tap_changer_type[i] and math.isfinite(tr.tap_pos[i]):
        tap = {
            "tap_side": tr.tap_side[i],
            "tap_changer_type": _TAP_CHANGER_NAMES[tr.tap_changer_type[i]],
            "tap_pos": float(tr.tap_pos[i]),
            "tap_neutral": float(tr.tap_neutral[i]),
            "tap_step_percent": float(tr.tap_step_percent[i]),
            "tap_step_degree": float(tr.tap_step_degree[i]),
        }
    pp.create_transformer_from_parameters(
        net, int(tr.hv_bus[i]), int(tr.lv_bus[i]), sn_mva=float(tr.sn_mva[i]),
        vn_hv_kv=float(tr.vn_hv_kv[i]), vn_lv_kv=float(tr.vn_lv_kv[i]),
        vkr_percent=float(tr.vkr_percent[i]), vk_percent=float(tr.vk_percent[i]),
        pfe_kw=float(tr.pfe_kw[i]), i0_percent=float(tr.i0_percent[i]),
        shift_degree=float(tr.shift_degree[i]), name=tr.names[i], index=int(tr.ids[i]),
        parallel=int(tr.parallel[i]), df=float(tr.df[i]),
        leakage_resistance_ratio_hv=float(tr.leakage_resistance_ratio_hv[i]),
        leakage_reactance_ratio_hv=float(tr.leakage_reactance_ratio_hv[i]),
        **tap,
    )
