"""``gridshare aggregator``: runs a Table 1 case and writes Fig. 4-7 style PNGs and a table."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from gridshare import cli
from market import aggregator_cli

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command")
    aggregator_cli.add_commands(sub)
    args = parser.parse_args(argv)
    return args.func(args)


def test_registered_in_the_gridshare_command() -> None:
    assert "market.aggregator_cli" in cli.COMMAND_MODULES


def test_case3_single_disturbance(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["aggregator", "--case", "3", "--disturbance", "10", "--out", str(tmp_path)]) == 0
    for name in ("fig5_cases3_4.png", "fig6_cases3_4.png", "fig7_case3_+10pct.png"):
        data = (tmp_path / name).read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 10_000
    table = json.loads((tmp_path / "table1_case3.json").read_text())
    assert set(table) == {"3", "4"}
    row = table["3"][0]
    assert row["disturbance_pct"] == 10.0 and row["difference_pct"] < 0  # more RES, cheaper
    assert "case 3:" in capsys.readouterr().out


def test_case5_energy_figure(tmp_path: Path) -> None:
    assert run(["aggregator", "--case", "5", "--out", str(tmp_path)]) == 0
    assert (tmp_path / "fig7_case5.png").read_bytes().startswith(PNG_MAGIC)
    summary = json.loads((tmp_path / "case5.json").read_text())
    assert summary["energy_mwh"]["supplier"] > 0 and summary["energy_mwh"]["nsd"] >= 0


def test_bad_case_number_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(SystemExit):
        run(["aggregator", "--case", "6", "--out", str(tmp_path)])
    with pytest.raises(ValueError, match="lookahead"):
        run(["aggregator", "--case", "5", "--lookahead", "-1", "--out", str(tmp_path)])
