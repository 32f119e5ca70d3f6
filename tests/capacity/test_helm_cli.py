"""``gridshare loadflow`` on feeder files (built-in names belong to capacity.feeders)."""

from __future__ import annotations

import csv
import json

import numpy as np
import pandapower.networks as pn
import pytest

from capacity.feeder_io import save_feeder
from capacity.grid import Feeder
from capacity.helm import solve
from gridshare.cli import main


@pytest.fixture(scope="module")
def feeder_file(tmp_path_factory):
    feeder = Feeder.from_pandapower(pn.create_kerber_landnetz_kabel_2(), name="land2")
    return feeder, save_feeder(feeder, tmp_path_factory.mktemp("f") / "land2.yaml")


def test_loadflow_prints_table_and_writes_csv(feeder_file, tmp_path, capsys) -> None:
    feeder, path = feeder_file
    out = tmp_path / "v.csv"
    assert main(["loadflow", "--feeder", str(path), "--scale", "2", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "converged: True" in text and "min |V|" in text
    rows = list(csv.DictReader(out.open()))
    assert [int(r["bus_id"]) for r in rows] == feeder.bus_ids.tolist()
    expected = solve(feeder, 2 * feeder.p_kw, 2 * feeder.q_kvar).vm_pu[0]
    np.testing.assert_allclose([float(r["vm_pu"]) for r in rows], expected, rtol=1e-12)


def test_loadflow_collapse_exit_code_and_json(feeder_file, tmp_path, capsys) -> None:
    _, path = feeder_file
    out = tmp_path / "v.json"
    assert main(["loadflow", "--feeder", str(path), "--scale", "50", "--out", str(out)]) == 3
    assert "voltage collapse" in capsys.readouterr().out
    data = json.loads(out.read_text().replace("NaN", "null"))
    assert data["converged"] is False


def test_loadflow_errors(tmp_path, capsys) -> None:
    assert main(["loadflow", "--feeder", str(tmp_path / "missing.json")]) == 1
    assert "not found" in capsys.readouterr().err
    bad = tmp_path / "bad.yaml"
    bad.write_text("format: gridshare-feeder\nversion: 1\nbuses: []\n")
    assert main(["loadflow", "--feeder", str(bad)]) == 1
    assert "at least one bus" in capsys.readouterr().err


def test_loadflow_builtin_feeder_by_name(capsys) -> None:
    assert main(["loadflow", "--feeder", "paper-test-feeder"]) == 0
    out = capsys.readouterr().out
    assert "converged: True" in out and "paper" in out
    # the most loaded branch first: the 450 m first section carries every load
    most = out.split("most loaded branches (of 4):")[1].splitlines()
    assert most[1].split()[:3] == ["line", "0", "L01"] and most[1].endswith("%")


def test_loadflow_json_lists_branch_loadings(feeder_file, tmp_path) -> None:
    feeder, path = feeder_file
    out = tmp_path / "v.json"
    assert main(["loadflow", "--feeder", str(path), "--out", str(out)]) == 0
    branches = json.loads(out.read_text())["branches"]
    assert [b["id"] for b in branches if b["kind"] == "line"] == feeder.line_ids.tolist()
    expected = solve(feeder).branch_loading_pct[0]
    np.testing.assert_allclose([b["loading_pct"] for b in branches], expected, rtol=1e-12)


def test_loadflow_unknown_feeder_name(capsys) -> None:
    assert main(["loadflow", "--feeder", "no-such-feeder"]) == 1
    assert "unknown feeder" in capsys.readouterr().err
