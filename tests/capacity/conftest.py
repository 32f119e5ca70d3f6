"""Shared fixtures of the grid / HELM tests."""

from __future__ import annotations

from collections.abc import Callable

import pandapower as pp
import pytest


def build_mixed_network(tap_side: str = "hv", changer: str = "Ratio", step_degree: float = 0.0):
    """Every supported element: MV slack, tapped trafo, lines (parallel, charging, g),
    loads with scaling, sgen, storage, shunt, bus-bus switches, open line switches."""
    net = pp.create_empty_network(f_hz=50.0)
    mv = pp.create_bus(net, 10.0, name="MV")
    lv = [pp.create_bus(net, 0.4, name=f"LV{i}") for i in range(7)]
    pp.create_ext_grid(net, mv, vm_pu=1.02, va_degree=5.0)
    pp.create_transformer_from_parameters(
        net, mv, lv[0], sn_mva=0.4, vn_hv_kv=10.0, vn_lv_kv=0.41, vk_percent=4.5,
        vkr_percent=1.2, pfe_kw=1.1, i0_percent=0.3, shift_degree=150.0, tap_side=tap_side,
        tap_neutral=0, tap_min=-3, tap_max=3, tap_step_percent=2.5, tap_pos=2,
        tap_changer_type=changer, tap_step_degree=step_degree, parallel=2,
    )
    kw = dict(r_ohm_per_km=0.206, x_ohm_per_km=0.08, c_nf_per_km=210.0, max_i_ka=0.27)
    pp.create_line_from_parameters(net, lv[0], lv[1], 0.12, parallel=2, **kw)
    pp.create_line_from_parameters(net, lv[1], lv[2], 0.2, g_us_per_km=2.0, **kw)
    pp.create_line_from_parameters(net, lv[2], lv[3], 0.15, **kw)
    stub = pp.create_line_from_parameters(net, lv[1], lv[5], 0.3, **kw)  # open at lv5 end
    dead = pp.create_line_from_parameters(net, lv[3], lv[6], 0.1, **kw)
    pp.create_line_from_parameters(net, lv[6], lv[5], 0.1, **kw)
    pp.create_switch(net, lv[5], stub, et="l", closed=False)
    pp.create_switch(net, lv[3], dead, et="l", closed=False)
    pp.create_switch(net, lv[6], dead, et="l", closed=False)
    pp.create_switch(net, lv[3], lv[4], et="b", closed=True)  # fuses lv3 and lv4
    pp.create_switch(net, lv[4], lv[6], et="b", closed=True)  # fuses lv6 too
    pp.create_load(net, lv[2], p_mw=0.03, q_mvar=0.01, scaling=1.5)
    pp.create_load(net, lv[4], p_mw=0.02, q_mvar=0.004)
    pp.create_load(net, lv[5], p_mw=0.01, q_mvar=0.002)
    pp.create_load(net, lv[5], p_mw=0.5, q_mvar=0.0, in_service=False)
    pp.create_sgen(net, lv[3], p_mw=0.015, q_mvar=-0.002, scaling=0.8)
    pp.create_storage(net, lv[1], p_mw=0.01, max_e_mwh=0.1, q_mvar=0.001)
    pp.create_shunt(net, lv[2], q_mvar=-0.005, p_mw=0.0004, step=2)
    return net


@pytest.fixture
def mixed_network() -> Callable[..., pp.pandapowerNet]:
    """Builder of a small network with every element ``Feeder.from_pandapower`` supports."""
    return build_mixed_network
