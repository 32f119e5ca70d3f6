"""``gridshare ocm``: files written, their content consistent, clear errors."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from capacity.ocm_cli import step_means, step_windows
from gridshare.cli import main


def test_ocm_command_writes_csv_json_and_figures(tmp_path, capsys):
    out = tmp_path / "ocm"
    code = main(["ocm", "--feeder", "paper-test-feeder", "--start-hour", "18", "--hours", "1",
                 "--step-min", "15", "--n-random", "50", "--out", str(out)])
    assert code == 0
    assert "4 steps of 15 min" in capsys.readouterr().out
    with (out / "bands.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert [r["time"] for r in rows] == ["18:00", "18:15", "18:30", "18:45"]
    for r in rows:
        for name in ("CS01", "CS02"):
            assert 0.0 <= float(r[f"{name}_p_min_kw"]) <= float(r[f"{name}_p_max_kw"]) <= 22.0
        if r["feasible"] == "True":
            assert float(r["v_min_at_max_pu"]) >= 0.95
        else:
            assert float(r["violation_pu"]) > 0
    doc = json.loads((out / "bands.json").read_text())
    assert doc["feeder"] == "paper-test-feeder" and doc["step_min"] == 15
    assert [f["name"] for f in doc["flexibilities"]] == ["CS01", "CS02"]
    assert len(doc["steps"]) == 4
    for png in ("bands.png", "voltages.png", "voltage_boxplots.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert doc["max_line_loading_pct"] == 100.0
    assert {r["binding_max"] for r in rows} <= {"v_low", "rating"}  # voltage binds here
    assert all(float(r["max_loading_pct"]) <= 100.0 for r in rows)


def test_ocm_command_with_a_line_loading_limit(tmp_path):
    out = tmp_path / "ocm"
    code = main(["ocm", "--feeder", "paper-test-feeder", "--start-hour", "12", "--hours", "0.5",
                 "--step-min", "15", "--n-random", "20", "--max-line-loading-pct", "30",
                 "--out", str(out), "--no-figures"])
    assert code == 0
    rows = list(csv.DictReader((out / "bands.csv").open()))
    assert [r["binding_max"] for r in rows] == ["line 0", "line 0"]
    assert all(29.9 <= float(r["max_loading_pct"]) <= 30.0 for r in rows)


@pytest.mark.parametrize(
    "argv",
    [
        ["--feeder", "no-such-feeder"],
        ["--feeder", "paper-test-feeder", "--start-hour", "23", "--hours", "2"],
        ["--feeder", "paper-test-feeder", "--step-min", "0"],
        ["--feeder", "paper-test-feeder", "--hours", "1", "--v-low", "1.05", "--v-high", "0.95"],
    ],
)
def test_ocm_command_reports_bad_input(tmp_path, capsys, argv):
    assert main(["ocm", *argv, "--n-random", "10", "--out", str(tmp_path)]) == 1
    assert "gridshare ocm: error:" in capsys.readouterr().err


def test_steps_average_their_minutes():
    starts = step_windows(1.0, 0.5, 15)
    np.testing.assert_array_equal(starts, [60, 75])
    values = np.arange(1440.0)[:, None] * np.ones((1, 2))
    np.testing.assert_allclose(step_means(values, starts, 15), [[67.0, 67.0], [82.0, 82.0]])


def test_ocm_command_with_the_band_policy_forces_no_station(tmp_path):
    out = tmp_path / "ocm"
    code = main(["ocm", "--feeder", "heimschuh-like", "--start-hour", "12", "--hours", "0.5",
                 "--step-min", "15", "--n-random", "20", "--band-policy", "--out", str(out),
                 "--no-figures"])
    assert code == 0
    doc = json.loads((out / "bands.json").read_text())
    assert doc["objective"] == "fair" and doc["band_policy"]["guaranteed_min_kw"] == 4.2
    rows = list(csv.DictReader((out / "bands.csv").open()))
    station_p_min = [float(v) for r in rows for k, v in r.items()
                     if k.startswith("CS") and k.endswith("_p_min_kw")]
    assert len(station_p_min) >= 2 * len(rows) and max(station_p_min) == 0.0


def test_ocm_command_refuses_the_band_policy_with_another_objective(tmp_path, capsys):
    assert main(["ocm", "--feeder", "heimschuh-like", "--hours", "0.25", "--band-policy",
                 "--objective", "sum", "--n-random", "10", "--out", str(tmp_path)]) == 1
    assert "needs objective='fair'" in capsys.readouterr().err
