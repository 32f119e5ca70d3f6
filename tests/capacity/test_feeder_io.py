"""Feeder file format: round trips (JSON and YAML) give identical feeders and load flows."""

from __future__ import annotations

import json

import numpy as np
import pandapower.networks as pn
import pytest

from capacity.feeder_io import feeder_from_dict, feeder_to_dict, read_feeder, save_feeder
from capacity.flexibility import Flexibility, FlexibilityKind
from capacity.grid import Feeder
from capacity.helm import solve


def cigre_with_flexibilities() -> Feeder:
    cigre = Feeder.from_pandapower(pn.create_cigre_network_lv(), name="cigre")
    flex = (
        Flexibility("CS01", int(cigre.bus_ids[5]), 0.0, 22.0, FlexibilityKind.CHARGING_STATION),
        Flexibility("CB", int(cigre.bus_ids[7]), -50.0, 50.0, FlexibilityKind.COMMUNITY_BATTERY),
    )
    return cigre.with_flexibilities(flex)


def make_feeder(name: str, mixed_network) -> Feeder:
    if name == "cigre":
        return cigre_with_flexibilities()
    if name == "mixed":
        return Feeder.from_pandapower(mixed_network("lv", "Ratio", 0.0), name="mixed")
    if name == "symmetrical":
        return Feeder.from_pandapower(mixed_network("hv", "Symmetrical", 20.0))
    return Feeder.from_pandapower(pn.create_kerber_dorfnetz(), name="dorf")


@pytest.mark.parametrize("suffix", [".json", ".yaml"])
@pytest.mark.parametrize("name", ["cigre", "mixed", "symmetrical", "dorf"])
def test_round_trip_gives_identical_solve(tmp_path, mixed_network, name, suffix) -> None:
    feeder = make_feeder(name, mixed_network)
    path = save_feeder(feeder, tmp_path / f"{name}{suffix}")
    again = read_feeder(path)
    assert feeder_to_dict(again) == feeder_to_dict(feeder)
    assert again.flexibilities == feeder.flexibilities
    np.testing.assert_array_equal(again.bus_ids, feeder.bus_ids)
    rng = np.random.default_rng(3)
    factors = rng.uniform(0.0, 2.0, size=(5, feeder.n_bus))
    r1 = solve(feeder, factors * feeder.p_kw, factors * feeder.q_kvar)
    r2 = solve(again, factors * again.p_kw, factors * again.q_kvar)
    assert r1.converged.all()
    np.testing.assert_array_equal(r1.v_pu, r2.v_pu)
    np.testing.assert_array_equal(again.line_ids, feeder.line_ids)
    np.testing.assert_array_equal(again.trafo_ids, feeder.trafo_ids)
    np.testing.assert_array_equal(r1.branch_loading_pct, r2.branch_loading_pct)
    assert np.isfinite(r1.branch_loading_pct).all()  # pandapower's lines carry their ratings


def test_json_file_is_plain_and_readable(tmp_path, mixed_network) -> None:
    path = save_feeder(make_feeder("mixed", mixed_network), tmp_path / "f.json")
    data = json.loads(path.read_text())
    assert data["format"] == "gridshare-feeder"
    assert data["version"] == 1
    assert {"buses", "lines", "trafos", "shunts", "slack", "bus_links"} <= set(data)
    assert data["trafos"][0]["tap"]["side"] == "lv"


def minimal() -> dict:
    return {
        "format": "gridshare-feeder",
        "version": 1,
        "name": "two buses",
        "slack": {"bus": 1},
        "buses": [{"id": 1, "vn_kv": 0.4}, {"id": 2, "vn_kv": 0.4, "p_kw": 10.0}],
        "lines": [{"from_bus": 1, "to_bus": 2, "length_km": 0.2, "r_ohm_per_km": 0.2,
                   "x_ohm_per_km": 0.08}],
    }


def test_minimal_file_with_defaults() -> None:
    feeder = feeder_from_dict(minimal())
    assert feeder.p_kw.tolist() == [0.0, 10.0]
    assert feeder.slack.vm_pu == 1.0
    result = solve(feeder)
    assert result.converged.all()
    assert result.vm_pu[0, 1] < 1.0
    assert feeder.line_ids.tolist() == [0]  # ids default to the position in the list
    assert np.isnan(result.line_loading_pct).all()  # no max_i_ka: unrated, no loading


def test_ratings_in_the_file() -> None:
    data = minimal()
    data["lines"][0].update(id=7, max_i_ka=0.1, df=0.5)
    feeder = feeder_from_dict(data)
    assert feeder.line_ids.tolist() == [7]
    np.testing.assert_allclose(feeder.lines.ampacity_ka, [0.05])
    result = solve(feeder)
    i_ka = 10.0 / (np.sqrt(3) * 0.4 * result.vm_pu[0, 1]) / 1e3  # unity power factor
    np.testing.assert_allclose(result.line_loading_pct[0, 0], 100 * i_ka / 0.05, rtol=1e-3)
    assert feeder_to_dict(feeder)["lines"][0]["max_i_ka"] == 0.1


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d.pop("slack"), "no slack"),
        (lambda d: d.update(format="other"), "format"),
        (lambda d: d.update(version=2), "version"),
        (lambda d: d.update(colour="red"), "unknown top-level"),
        (lambda d: d["buses"][1].update(volts=1), r"buses\[1\] has unknown key"),
        (lambda d: d["lines"][0].pop("r_ohm_per_km"), "misses required key 'r_ohm_per_km'"),
        (lambda d: d["lines"][0].update(length_km="long"), "must be a number"),
        (lambda d: d["lines"][0].update(length_km=0.0), "zero-impedance line"),
        (lambda d: d["buses"][1].update(p_kw=None), "NaN"),
        (lambda d: d["lines"][0].update(to_bus=7), "unknown bus"),
        (lambda d: d.update(bus_links=[[1]]), "bus_links"),
        (lambda d: d["buses"].append({"id": 3, "vn_kv": 0.4}), "islanded"),
        (lambda d: d["lines"][0].update(max_i_ka=0.0), "max_i_ka must be"),
        (lambda d: d["lines"][0].update(df=-1.0), "df"),
        (lambda d: d["lines"].append(dict(d["lines"][0], id=0)), "line ids must be unique"),
    ],
)
def test_bad_files_raise(mutate, message) -> None:
    data = minimal()
    mutate(data)
    with pytest.raises(ValueError, match=message):
        feeder_from_dict(data)


def test_bad_suffix_and_bad_syntax(tmp_path) -> None:
    with pytest.raises(ValueError, match="suffix"):
        read_feeder(tmp_path / "feeder.txt")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="not valid json"):
        read_feeder(bad)


def test_documented_example_loads_and_solves() -> None:
    """The YAML example in docs/feeder-format.md is a valid feeder."""
    import re
    from pathlib import Path

    import yaml

    doc = (Path(__file__).resolve().parents[2] / "docs" / "feeder-format.md").read_text()
    block = re.search(r"```yaml\n(.*?)```", doc, re.S)
    assert block is not None
    feeder = feeder_from_dict(yaml.safe_load(block.group(1)))
    assert feeder.bus_ids.tolist() == [0, 1, 2]
    assert feeder.flexibilities[0].name == "CS01"
    result = solve(feeder)
    assert result.converged.all()
    assert 0.9 < result.vm_pu[0, 2] < result.vm_pu[0, 1] < 1.0
