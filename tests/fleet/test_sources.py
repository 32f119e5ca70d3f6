"""Fleet feeders: seeded built-in variants and feeder files (project format, pandapower JSON)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandapower as pp
import pytest

from capacity.feeder_io import save_feeder
from capacity.feeders import FEEDER_NAMES, feeder_case, load_feeder, load_pandapower_net
from capacity.flexibility import FlexibilityKind
from gridshare.fleet.files import build_from_file
from gridshare.fleet.sources import file_sources, variant_sources
from gridshare.fleet.variants import build_variant, variant_name


def test_variants_are_seeded_and_do_not_depend_on_the_fleet_size() -> None:
    assert [s.name for s in variant_sources(4)] == [
        "paper-test-feeder-00000", "heimschuh-like-00001", "cigre-lv-00002",
        "paper-test-feeder-00003"]
    assert variant_sources(2) == variant_sources(5)[:2]
    a, b, other = build_variant(4, 7), build_variant(4, 7), build_variant(4, 8)
    assert a.feeder_data == b.feeder_data
    assert np.array_equal(a.forecast.p_w, b.forecast.p_w)
    assert a.feeder_data != other.feeder_data
    assert not np.array_equal(a.forecast.p_w, other.forecast.p_w)


@pytest.mark.parametrize("index", [0, 1, 2])
def test_variants_perturb_lines_and_stations_within_the_documented_ranges(index: int) -> None:
    model = build_variant(index, 0)
    case = feeder_case(FEEDER_NAMES[index])
    base = load_feeder(case.name)
    ratio = model.feeder.lines.length_km / base.lines.length_km
    assert np.all((ratio >= 0.8) & (ratio <= 1.2)) and np.ptp(ratio) > 0.05
    assert np.array_equal(model.feeder.bus_ids, base.bus_ids)
    for flex, built in zip(model.feeder.flexibilities, case.flexibilities, strict=True):
        assert (flex.name, flex.bus_id, flex.p_low_kw) == (built.name, built.bus_id,
                                                           built.p_low_kw)
        if flex.kind == FlexibilityKind.CHARGING_STATION:
            assert flex.p_high_kw in (11.0, 22.0)
        else:
            assert flex.p_high_kw == built.p_high_kw
    assert model.name == variant_name(index)


def test_a_project_feeder_file_keeps_its_network_and_flexibilities(tmp_path: Path) -> None:
    feeder = load_feeder("heimschuh-like")
    save_feeder(feeder, tmp_path / "street.yaml")
    [source] = file_sources(tmp_path)
    model = build_from_file(source.name, source.filename, source.text, seed=0)
    assert model.name == "street"
    assert model.feeder.flexibilities == feeder.flexibilities
    assert np.array_equal(model.feeder.bus_ids, feeder.bus_ids)
    loaded = np.flatnonzero(feeder.p_kw > 0)
    assert np.all(model.forecast.p_w[:, loaded].mean(axis=0) > 0)
    assert np.all(model.forecast.p_w[:, feeder.p_kw <= 0] == 0)


def test_pandapower_json_flexibilities_are_its_controllable_loads_and_storages() -> None:
    net = load_pandapower_net("cigre-lv")
    cb = net.load.index[net.load.name == "CB"][0]
    bus = int(net.load.at[cb, "bus"])
    net.load = net.load.drop(index=cb)
    net.load["controllable"] = net.load["name"].str.startswith("CS")
    net.load["min_p_mw"], net.load["max_p_mw"] = 0.0, 0.011
    pp.create_storage(net, bus, p_mw=0.01, max_e_mwh=0.1, min_p_mw=-0.05, max_p_mw=0.05,
                      controllable=True, name="CB")
    model = build_from_file("pp", "pp.json", pp.to_json(net), seed=0)
    flexes = {f.name: f for f in model.feeder.flexibilities}
    assert sorted(flexes) == ["CB", "CS01", "CS02", "CS03"]
    assert (flexes["CB"].kind, flexes["CB"].p_low_kw, flexes["CB"].bus_id) == (
        FlexibilityKind.COMMUNITY_BATTERY, -50.0, bus)
    assert (flexes["CS02"].kind, flexes["CS02"].p_high_kw) == (
        FlexibilityKind.CHARGING_STATION, 11.0)
    assert model.feeder.p_kw[model.feeder.bus_position(bus)] == pytest.approx(
        sum(net.load.p_mw[net.load.bus == bus]) * 1e3)  # the storage's 10 kW left the base case


def test_feeder_file_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"'x\.json' is not valid json"):
        build_from_file("x", "x.json", '{"format": "gridshare-feeder", ', seed=0)
    net = load_pandapower_net("paper-test-feeder")
    with pytest.raises(ValueError, match="has no flexibilities"):
        build_from_file("plain", "plain.json", pp.to_json(net), seed=0)
    (tmp_path / "a.json").write_text("{}")
    (tmp_path / "a.yaml").write_text("{}")
    with pytest.raises(ValueError, match="share a name"):
        file_sources(tmp_path)
    with pytest.raises(ValueError, match="not a directory"):
        file_sources(tmp_path / "a.json")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no feeder files"):
        file_sources(tmp_path / "empty")
