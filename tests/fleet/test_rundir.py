"""The output directory: band files, resume bookkeeping, summary counts."""

from __future__ import annotations

from pathlib import Path

import pytest

from gridshare.fleet.bandfile import band_stats
from gridshare.fleet.compute import HourBands, IntervalBands
from gridshare.fleet.rundir import RunDir


def _interval(interval: int, upper: str, infeasible: int = 0) -> IntervalBands:
    return IntervalBands(interval=interval, start=f"{interval % 96 // 4:02d}:00", steps=3,
                         infeasible_steps=infeasible, empty=False, p_min_w=(-50000, 0),
                         p_max_w=(-12345, 22000), v_min_at_max_pu=0.9500100001,
                         v_max_at_min_pu=1.0123456789, upper=upper, lower="rated")


def _hour(hour: int, uppers: list[str]) -> HourBands:
    ivs = tuple(_interval(100 + 4 * hour + k, u, int(u == "infeasible"))
                for k, u in enumerate(uppers))
    return HourBands(("CB", "CS01"), hour, ivs, seconds=1.5)


def test_band_file_rows_follow_the_intervals_whatever_order_the_hours_finished(
        tmp_path: Path) -> None:
    run_dir = RunDir(tmp_path)
    run_dir.prepare({"seed": 0})
    path = run_dir.write_bands("f", [_hour(1, ["v_low"] * 4), _hour(0, ["rated"] * 4)])
    lines = path.read_text().splitlines()
    assert lines[0] == ("interval,start,steps,infeasible_steps,empty,upper,lower,"
                        "v_min_at_max_pu,v_max_at_min_pu,CB_p_min_w,CB_p_max_w,CS01_p_min_w,"
                        "CS01_p_max_w")
    assert [int(line.split(",")[0]) for line in lines[1:]] == list(range(100, 108))
    assert lines[1].endswith(",rated,rated,0.950010,1.012346,-50000,-12345,0,22000")
    assert [p.name for p in (tmp_path / "bands").iterdir()] == ["f.csv"]  # no temporary left


def test_band_stats_count_steps_and_limits(tmp_path: Path) -> None:
    run_dir = RunDir(tmp_path)
    run_dir.prepare({})
    path = run_dir.write_bands("f", [_hour(5, ["v_low", "line 12", "infeasible", "rated"])])
    stats = band_stats(path)
    assert (stats["intervals"], stats["steps"], stats["infeasible_steps"]) == (4, 12, 1)
    assert (stats["upper_v_low"], stats["upper_thermal"], stats["upper_infeasible"],
            stats["upper_rated"], stats["upper_v_high"], stats["lower_rated"]) == (
        1, 1, 1, 1, 0, 4)
    assert ",line 12,rated," in path.read_text()


def test_a_directory_resumes_only_the_same_run(tmp_path: Path) -> None:
    run_dir = RunDir(tmp_path)
    assert run_dir.prepare({"seed": 1, "ocm": {"n_random": 30}}) == set()
    run_dir.write_bands("done-feeder", [_hour(0, ["rated"] * 4)])
    (run_dir.bands / ".half-written.csv.tmp").write_text("interval\n")
    assert run_dir.prepare({"seed": 1, "ocm": {"n_random": 30}}) == {"done-feeder"}
    with pytest.raises(ValueError, match="other parameters"):
        run_dir.prepare({"seed": 1, "ocm": {"n_random": 200}})


def test_summary_rows_take_their_counts_from_the_band_files(tmp_path: Path) -> None:
    run_dir = RunDir(tmp_path)
    run_dir.prepare({})
    run_dir.write_bands("a", [_hour(0, ["v_low"] * 4)])
    rows = [run_dir.feeder_row("a", "variant 0", "done", 2.0),
            run_dir.feeder_row("b", "b.json", "failed", None, "ValueError: broken")]
    summary = run_dir.write_summary(rows, {"feeders": 2})
    text = (tmp_path / "summary.csv").read_text().splitlines()
    assert text[0].startswith("feeder,status,source,intervals,steps,infeasible_steps,upper_rated,"
                              "upper_v_low,upper_v_high,upper_thermal,upper_infeasible,")
    assert text[1].startswith("a,done,variant 0,4,12,0,0,4,0,0,0,4,0,0,0,0,")
    failed = text[2].split(",")
    assert failed[:3] == ["b", "failed", "b.json"] and failed[-1] == "ValueError: broken"
    assert failed[3:-1] == [""] * (len(text[0].split(",")) - 4)  # no counts, no time
    assert '"upper_v_low": 4' in summary.read_text()
