"""End to end: a few simulated hours on the embedded chain (and a short run on anvil)."""

from __future__ import annotations

import csv
import json
import re

import numpy as np
import pytest

from gridshare.units import kw_to_w, w_to_kw

from .simulate_helpers import CONFIG, noon_run


@pytest.fixture(scope="module")
def run():
    return noon_run()


def test_every_interval_settles_and_replays_equal(run):
    sim, result, _ = run
    n_traded = round(CONFIG.hours * 60) // sim.n_min - 1
    assert len(result.intervals) == n_traded
    assert all(r.settled for r in result.intervals), [r.note for r in result.intervals]
    assert all(r.replay_equal for r in result.intervals)
    assert all(r.deviations_settled for r in result.intervals), [r.note for r in result.intervals]
    assert result.summary["replay"] == {"replayed": n_traded, "equal": n_traded, "differing": [],
                                        "deviations_replayed": n_traded}
    # the settlement on-chain is the one recorded
    for r in result.intervals:
        state = sim.mc.interval_state(r.interval)
        assert state["settled"] and state["batteryPowerW"] == r.battery_power_w
        assert state["clearingPriceMicroEurPerKwh"] == r.clearing_price_micro_eur_per_kwh


def test_orders_went_through_the_api_gateway(run):
    sim, result, _ = run
    rows = [row for r in result.intervals for row in sim.gateway.store.of_interval(r.interval)]
    assert len(rows) == result.summary["orders"] > 0
    assert {row.status for row in rows} == {"relayed"}
    placed = sum(len(sim.mc.placed_orders(r.interval)) for r in result.intervals)
    assert placed == len(rows)


def test_battery_inside_band_and_energy_money_balance(run):
    sim, result, _ = run
    for r in result.intervals:
        lo, hi = r.band_w[sim.battery_name]
        assert lo <= r.battery_power_w <= hi
        for name in sim.flex_names:
            assert r.band_w[name][0] <= r.flex_p_w[name] <= r.band_w[name][1]
    # noon: PV surplus is traded locally and the battery charges
    assert result.summary["energy_traded_locally_kwh"] > 0
    assert result.summary["battery_charge_kwh"] > 0
    # balances: the members' and the battery's sum equals the grid exchange of the market
    market = sim.mc.market
    total = sum(int(sim.chain.call(market.functions.balanceOf(a)))
                for a in [*sim.members, sim.mc.battery.account])
    assert total == int(sim.chain.call(market.functions.gridExchangeNanoEur()))
    # members order from a forecast, so their meters deviate and the deviations are settled
    assert result.summary["deviation_bought_kwh"] + result.summary["deviation_sold_kwh"] > 0
    assert result.summary["metered_members_import_kwh"] > 0
    nets = {s["member"]: s["net_nano_eur"] for s in result.statements}
    for s in result.statements:
        assert s["balance_nano_eur"] == nets[s["member"]]


def test_dso_audit_finds_every_reading_inside_its_band(run):
    sim, result, _ = run
    audit = result.audit
    assert audit["readings_checked"] >= audit["readings_expected"] > 0
    assert audit["n_violations"] == 0 and audit["violations"] == []
    # the metered range per band equals what the simulation executed minute by minute: the
    # stations their traded power, the battery its set point or less (it follows the feeder)
    for r in result.intervals:
        minutes = np.arange(r.first_minute, r.first_minute + sim.n_min)
        for k, name in enumerate(sim.flex_names):
            executed = np.asarray(kw_to_w(sim.flex_kw[minutes, k]))
            assert audit["metered_range_w"][f"{r.interval}:{name}"] == [
                int(executed.min()), int(executed.max())]
            assert int(executed.max()) == r.flex_p_w[name]


def test_newton_raphson_sees_no_voltage_violation(run):
    _, result, _ = run
    nr = result.nr_check
    assert len({s["interval"] for s in nr["steps"]}) == CONFIG.nr_steps
    assert nr["n_runs"] == len(nr["steps"]) * (CONFIG.nr_random_points + 2)
    assert nr["n_violations"] == 0
    for step in nr["steps"]:
        assert 0.95 - 1e-4 <= step["v_min_pu"] <= step["v_max_pu"] <= 1.05 + 1e-4
        assert 0 < step["max_line_loading_pct"] <= nr["max_line_loading_pct"] + 1e-2
        assert 0 < step["max_trafo_loading_pct"] <= nr["max_trafo_loading_pct"] + 1e-2
    assert result.summary["nr_max_loading_pct"] == max(
        max(s["max_line_loading_pct"], s["max_trafo_loading_pct"]) for s in nr["steps"])
    # the day as operated is checked too (reported: persistence-forecast error)
    operated = result.nr_operated
    assert len(operated["steps"]) == CONFIG.nr_steps
    assert result.summary["nr_operated_violations"] == operated["n_violations"]


def test_nr_check_flags_operation_outside_the_bands(run, monkeypatch):
    """The check can fail: with every flexibility operated far beyond its band it must."""
    import dataclasses

    from gridshare.sim.verify import nr_check

    sim, result, _ = run
    # every flexibility operated at 80 kW consumption (far above the bands), bands widened
    monkeypatch.setattr(sim, "flex_kw", np.full_like(sim.flex_kw, 80.0))
    forced = [dataclasses.replace(r, band_w=dict.fromkeys(sim.flex_names, (80_000, 80_000)))
              for r in result.intervals]
    out = nr_check(sim, forced, n_steps=2, n_random=0)
    assert out["n_violations"] > 0
    assert min(s["operated_v_min_pu"] for s in out["steps"]) < 0.95


def test_nr_check_flags_a_branch_above_its_loading_limit(run, monkeypatch):
    """Loading counts as well as voltage: with a line limit below what the operated day
    reaches, the same points that pass on voltage fail."""
    import dataclasses

    from gridshare.sim.verify import nr_check

    sim, result, _ = run
    default = nr_check(sim, result.intervals, n_steps=CONFIG.nr_steps, n_random=0)
    peak = max(s["operated_max_loading_pct"] for s in default["steps"])
    tight = dataclasses.replace(sim.config.ocm, max_line_loading_pct=peak / 2,
                                max_trafo_loading_pct=peak / 2)
    monkeypatch.setattr(sim, "config", dataclasses.replace(sim.config, ocm=tight))
    out = nr_check(sim, result.intervals, n_steps=CONFIG.nr_steps, n_random=0)
    assert out["max_line_loading_pct"] == peak / 2
    assert [s["minute"] for s in out["steps"]] == [s["minute"] for s in default["steps"]]
    assert out["n_violations"] > default["n_violations"]


def test_bands_on_chain_equal_recomputed_ocm(run):
    _, result, _ = run
    assert result.summary["recomputed_band_mismatches"] == 0
    assert result.band_steps is not None and result.band_steps.n_steps >= len(result.intervals)


def test_aggregator_planned_each_hour_inside_the_bands(run):
    sim, result, _ = run
    hours = [a["hour"] for a in result.aggregator]
    assert hours == sorted(set(hours)) and len(hours) == 2  # 11:45 (hour 11) and 12:00
    assert any(a["bounded_by_bands"] for a in result.aggregator)
    for a in result.aggregator:
        if not a["bounded_by_bands"]:
            continue
        lo_w, hi_w = a["bands_w"][sim.battery_name]
        plan = np.array(a["plan_kw"][sim.battery_name])
        assert np.all(plan >= float(w_to_kw(lo_w)) - 1e-6)
        assert np.all(plan <= float(w_to_kw(hi_w)) + 1e-6)


def test_summary_matches_the_interval_data(run):
    _, result, index = run
    s = result.summary
    rows = list(csv.DictReader((index.parent / "intervals.csv").open()))
    assert len(rows) == len(result.intervals)
    assert sum(int(r["local_wh"]) for r in rows) / 1000 == pytest.approx(
        s["energy_traded_locally_kwh"])
    assert sum(int(r["battery_charge_wh"]) + int(r["battery_discharge_wh"])
               for r in rows) / 1000 == pytest.approx(s["battery_throughput_kwh"])
    assert s["gas_used_total"] >= s["gas_used_orders"] + s["gas_used_settlement"] \
        + s["gas_used_readings"] > 0
    saved = json.loads((index.parent / "summary.json").read_text())
    assert saved["ok"] is True and saved["orders"] == s["orders"]


def test_report_page_references_every_figure(run):
    _, _, index = run
    page = index.read_text()
    images = re.findall(r"<img src='([^']+)'", page)
    assert len(images) == 10  # the figures of report._FIGURES (loading included)
    for name in images:
        assert (index.parent / name).stat().st_size > 5000
    assert "Per-member statements" in page and page.count("<tr>") > 20


@pytest.mark.anvil
def test_the_command_runs_on_anvil(anvil, tmp_path, capsys):
    from gridshare.cli import main

    out = tmp_path / "out"
    code = main(["simulate", "--chain", anvil.url, "--hours", "0.5", "--start-hour", "12",
                 "--nr-steps", "2", "--nr-points", "3", "--no-progress", "--out", str(out)])
    printed = capsys.readouterr().out
    assert code == 0, printed
    summary = json.loads((out / "summary.json").read_text())
    assert summary["chain_id"] == 31337 and summary["ok"] is True
    assert summary["intervals_settled"] == 1 and summary["audit_violations"] == 0
    assert "report:" in printed and (out / "index.html").is_file()


def test_cli_exits_3_when_a_check_fails(run, tmp_path, monkeypatch, capsys):
    """The command's exit code says whether every check held (here a replay differs)."""
    import dataclasses

    from gridshare.cli import main
    from gridshare.sim import Simulation

    _, result, _ = run
    summary = {**result.summary, "ok": False,
               "replay": {**result.summary["replay"], "equal": 0}}
    failed = dataclasses.replace(result, summary=summary, timings_s=dict(result.timings_s))
    monkeypatch.setattr(Simulation, "run", lambda self: failed)
    code = main(["simulate", "--hours", "1", "--no-progress", "--out", str(tmp_path)])
    captured = capsys.readouterr()
    assert code == 3
    assert "some check failed" in captured.err
    assert "FAIL" in (tmp_path / "index.html").read_text()


def test_station_sessions_are_opt_in_on_the_command_line(run, tmp_path, monkeypatch):
    """``gridshare simulate`` runs the oracle without sessions unless ``--station-sessions``."""
    import dataclasses

    from gridshare.cli import main
    from gridshare.sim import Simulation

    _, result, _ = run
    seen = []

    def fake_run(self):
        seen.append(self.config.ocm.station_sessions)
        return dataclasses.replace(result, timings_s=dict(result.timings_s))

    monkeypatch.setattr(Simulation, "run", fake_run)
    for n, extra in enumerate(([], ["--station-sessions"])):
        main(["simulate", "--hours", "1", "--no-progress", "--out", str(tmp_path / str(n)),
              *extra])
    assert seen == [False, True]


def test_a_device_without_a_band_on_chain_stays_at_rest(run):
    """An interval the oracle skipped has no band: the simulation runs the flexibilities at
    rest there and reports the interval unsettled, instead of ending the day."""
    sim, result, _ = run
    future = result.intervals[-1].interval + 50
    assert sim.band_w(future) == {name: (0, 0) for name in sim.flex_names}


def test_every_band_keeps_the_battery_reserve_the_oracle_published(run):
    """The simulation's oracle is battery-aware: each traded interval's band came with a
    reserve, and where it kept the reserve the battery's charge after the interval holds it."""
    _, result, index = run
    assert all(r.reserve_wh is not None for r in result.intervals)
    for r in result.intervals:
        if r.reserve_kept and r.soc_after_wh < r.reserve_wh:
            # below its reserve the band may only have charged it
            assert r.battery_power_w >= 0, (r.interval, r.soc_after_wh, r.reserve_wh)
    with (index.parent / "intervals.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [int(x["battery_reserve_wh"]) for x in rows] == [r.reserve_wh
                                                           for r in result.intervals]


def test_a_following_battery_gives_what_the_feeder_needs_minute_by_minute(run):
    """``Simulation.followed_battery_kw``: the set point where the feeder holds, else the
    highest power keeping every bus at v_low (tight to the bisection), never below P_min."""
    from capacity.helm import solve
    from capacity.reserve import BISECTION_STEPS

    sim, _, _ = run
    assert sim.config.ocm.battery_follows
    prof, feeder, b = sim.profiles, sim.feeder, sim.battery_col
    rest = np.abs(solve(feeder, p_kw=prof.p_kw, q_kvar=prof.q_kvar).v_pu).min(axis=1)
    minutes = np.r_[720, np.argsort(rest)[:4]]
    flex = np.zeros((minutes.size, len(sim.flex)))
    flex[:, [sim.flex_names.index(n) for n in sim.station_names]] = 11.0
    flex[:, b] = 2.0  # the market's set point: charging
    got = sim.followed_battery_kw(minutes, flex, -50.0)
    assert got[0] == 2.0 and np.all(got[1:] < 0)

    def v_min(battery_kw):
        operated = flex.copy()
        operated[:, b] = battery_kw
        p = prof.p_kw[minutes] + operated @ sim.flex_incidence
        return np.abs(solve(feeder, p_kw=p, q_kvar=prof.q_kvar[minutes]).v_pu).min(axis=1)

    v_low = sim.config.ocm.v_low_pu + sim.config.ocm.margin_pu
    step_kw = 52.0 / 2**BISECTION_STEPS
    assert np.all(v_min(got) >= v_low)
    assert np.all(v_min(got + 2 * step_kw)[1:] < v_low)
    floor = sim.followed_battery_kw(minutes, flex, -1.0)  # P_min -1 kW: no further
    assert floor[0] == 2.0 and np.all(floor[1:] == -1.0)
