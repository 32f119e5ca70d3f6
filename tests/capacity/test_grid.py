"""Feeder model: pandapower import (every supported element checked against NR) and errors."""

from __future__ import annotations

import copy
import warnings

import numpy as np
import pandapower as pp
import pandapower.networks as pn
import pytest

from capacity.flexibility import Flexibility
from capacity.grid import Feeder, LineTable, Slack
from capacity.helm import solve


def runpp_voltages(net, bus_ids: np.ndarray) -> np.ndarray:
    net = copy.deepcopy(net)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pp.runpp(net, tolerance_mva=1e-11, max_iteration=50, numba=False)
    res = net.res_bus.loc[bus_ids]
    return res.vm_pu.to_numpy() * np.exp(1j * np.deg2rad(res.va_degree.to_numpy()))


def assert_close_to_nr(feeder: Feeder, net) -> None:
    result = solve(feeder)
    assert result.converged.all()
    v_nr = runpp_voltages(net, feeder.bus_ids)
    assert np.max(np.abs(np.abs(result.v_pu[0]) - np.abs(v_nr))) <= 1e-7
    assert np.max(np.abs(np.angle(result.v_pu[0] / v_nr))) <= 1e-6


@pytest.mark.parametrize(
    ("tap_side", "changer", "step_degree"),
    [("hv", "Ratio", 0.0), ("lv", "Ratio", 0.0), ("hv", "Symmetrical", 30.0),
     ("lv", "Ideal", 1.5)],
)
def test_mixed_network_matches_nr(mixed_network, tap_side, changer, step_degree) -> None:
    net = mixed_network(tap_side, changer, step_degree)
    if changer == "Ideal":
        net.trafo["tap_step_percent"] = np.nan
    feeder = Feeder.from_pandapower(net)
    assert_close_to_nr(feeder, net)


def test_import_bus_ids_loads_and_links(mixed_network) -> None:
    net = mixed_network()
    feeder = Feeder.from_pandapower(net, name="mixed")
    assert feeder.name == "mixed"
    assert feeder.bus_ids.tolist() == net.bus.index.tolist()
    lv = {name: i for i, name in zip(net.bus.index, net.bus.name, strict=True)}
    p = dict(zip(feeder.bus_ids.tolist(), feeder.p_kw.tolist(), strict=True))
    assert p[lv["LV2"]] == pytest.approx(45.0)
    assert p[lv["LV3"]] == pytest.approx(-12.0)  # sgen 15 kW x 0.8
    assert p[lv["LV5"]] == pytest.approx(10.0)  # out-of-service load ignored
    assert p[lv["LV1"]] == pytest.approx(10.0)  # storage charging
    assert feeder.bus_links.shape == (2, 2)
    adm = feeder.admittance
    assert adm.n_node == feeder.n_bus - 2
    result = solve(feeder)
    pos = {b: i for i, b in enumerate(feeder.bus_ids.tolist())}
    v = result.v_pu[0]
    assert v[pos[lv["LV3"]]] == v[pos[lv["LV4"]]] == v[pos[lv["LV6"]]]


def test_line_switch_open_at_both_ends_takes_line_out(mixed_network) -> None:
    net = mixed_network()
    feeder = Feeder.from_pandapower(net)
    assert len(feeder.lines) == len(net.line) - 2  # stub -> shunt, dead line -> gone
    assert len(feeder.shunts) == 2  # the shunt and the open-ended stub


def test_out_of_service_elements_and_buses_are_ignored() -> None:
    net = pn.create_kerber_landnetz_kabel_2()
    extra = pp.create_bus(net, 0.4, in_service=False)
    pp.create_gen(net, extra, p_mw=0.1, in_service=False)
    pp.create_load(net, extra, p_mw=0.1)
    feeder = Feeder.from_pandapower(net)
    assert extra not in feeder.bus_ids
    assert_close_to_nr(feeder, net)


@pytest.mark.parametrize("element", ["gen", "trafo3w", "impedance", "ward", "xward", "dcline"])
def test_unsupported_element_is_named(element) -> None:
    net = pn.create_kerber_landnetz_kabel_2()
    b0, b1 = int(net.bus.index[1]), int(net.bus.index[2])
    if element == "gen":
        pp.create_gen(net, b1, p_mw=0.01)
    elif element == "trafo3w":
        mv = pp.create_bus(net, 10.0)
        pp.create_transformer3w(net, mv, b0, b1, std_type="63/25/38 MVA 110/20/10 kV")
    elif element == "impedance":
        pp.create_impedance(net, b0, b1, rft_pu=0.01, xft_pu=0.01, sn_mva=1.0)
    elif element == "ward":
        pp.create_ward(net, b1, ps_mw=0.01, qs_mvar=0.0, pz_mw=0.0, qz_mvar=0.0)
    elif element == "xward":
        pp.create_xward(net, b1, 0.01, 0.0, 0.0, 0.0, 0.01, 0.01, 1.0)
    elif element == "dcline":
        pp.create_dcline(net, b0, b1, p_mw=0.01, loss_percent=1, loss_mw=0, vm_from_pu=1,
                         vm_to_pu=1)
    with pytest.raises(ValueError, match=repr(element)):
        Feeder.from_pandapower(net)


def test_islanded_bus_is_an_error() -> None:
    net = pn.create_kerber_landnetz_kabel_2()
    lonely = pp.create_bus(net, 0.4, name="lonely")
    with pytest.raises(ValueError, match=rf"islanded bus.*{lonely}"):
        Feeder.from_pandapower(net)


def test_open_switch_islanding_is_an_error() -> None:
    net = pn.create_kerber_landnetz_kabel_2()
    line = int(net.line.index[-1])
    pp.create_switch(net, int(net.line.at[line, "to_bus"]), line, et="l", closed=False)
    with pytest.raises(ValueError, match="islanded"):
        Feeder.from_pandapower(net)


def test_no_slack_is_an_error() -> None:
    net = pn.create_kerber_landnetz_kabel_2()
    net.ext_grid["in_service"] = False
    with pytest.raises(ValueError, match="no slack"):
        Feeder.from_pandapower(net)


def test_two_slacks_are_an_error() -> None:
    net = pn.create_kerber_landnetz_kabel_2()
    pp.create_ext_grid(net, int(net.bus.index[3]))
    with pytest.raises(ValueError, match="exactly one slack"):
        Feeder.from_pandapower(net)


def test_zero_impedance_line_is_an_error() -> None:
    net = pn.create_kerber_landnetz_kabel_2()
    net.line.loc[net.line.index[2], "length_km"] = 0.0
    with pytest.raises(ValueError, match="zero-impedance line"):
        Feeder.from_pandapower(net)


def test_nan_load_is_an_error() -> None:
    net = pn.create_kerber_landnetz_kabel_2()
    net.load.loc[net.load.index[0], "p_mw"] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        Feeder.from_pandapower(net)


def small_feeder(**overrides) -> Feeder:
    kwargs = dict(
        name="small",
        bus_ids=[10, 11, 12],
        bus_vn_kv=[0.4, 0.4, 0.4],
        slack=Slack(10, 1.0, 0.0),
        lines=LineTable(
            from_bus=[10, 11], to_bus=[11, 12], length_km=[0.1, 0.1],
            r_ohm_per_km=[0.2, 0.2], x_ohm_per_km=[0.08, 0.08], c_nf_per_km=[0, 0],
            g_us_per_km=[0, 0], parallel=[1, 1],
        ),
        p_kw=[0.0, 5.0, 5.0],
        q_kvar=[0.0, 1.0, 1.0],
    )
    kwargs.update(overrides)
    return Feeder(**kwargs)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"slack": Slack(99)}, "no slack"),
        ({"bus_ids": [10, 10, 12]}, "unique"),
        ({"p_kw": [0.0, np.nan, 1.0]}, "NaN"),
        ({"q_kvar": [0.0, np.inf, 1.0]}, "NaN"),
        ({"p_kw": [0.0, 1.0]}, "3 entries"),
        ({"bus_vn_kv": [0.4, 0.0, 0.4]}, "bus_vn_kv"),
        ({"bus_links": [[11, 99]]}, "unknown bus"),
        ({"flexibilities": (Flexibility("cs", 99, 0.0, 11.0),)}, "unknown bus"),
        ({"bus_ids": [10, 11, 12, 13], "bus_vn_kv": [0.4] * 4, "p_kw": None, "q_kvar": None},
         "islanded"),
    ],
)
def test_feeder_validation(overrides, message) -> None:
    with pytest.raises(ValueError, match=message):
        small_feeder(**overrides)


def test_with_loads_shares_network_cache_and_checks_input() -> None:
    feeder = small_feeder()
    solve(feeder)
    other = feeder.with_loads(np.array([0.0, 1.0, 2.0]), np.zeros(3))
    assert other.admittance is feeder.admittance
    assert other.p_kw.tolist() == [0.0, 1.0, 2.0]
    assert feeder.p_kw.tolist() == [0.0, 5.0, 5.0]
    with pytest.raises(ValueError, match="NaN"):
        feeder.with_loads([0.0, np.nan, 0.0], np.zeros(3))
    assert feeder.bus_position(12) == 2
    with pytest.raises(ValueError, match="unknown bus"):
        feeder.bus_position(99)


def test_t_model_leakage_split_and_parallel_trafos_match_nr(mixed_network) -> None:
    net = mixed_network("lv", "Ratio", 0.0)
    net.trafo["leakage_resistance_ratio_hv"] = 0.3
    net.trafo["leakage_reactance_ratio_hv"] = 0.7
    feeder = Feeder.from_pandapower(net)
    assert feeder.trafos.leakage_resistance_ratio_hv.tolist() == [0.3]
    assert_close_to_nr(feeder, net)
