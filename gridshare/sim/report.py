"""The simulation report: a static HTML page with figures (PNG) and the data as CSV/JSON.

``write_report(result, out_dir)`` writes into ``out_dir``:

* ``index.html``: summary, checks, the paper's figures (OCM bands per flexibility with the
  uncontrollable load, Fig. 7/10; V_min/V_max at the band corners, Fig. 7b/11d; bus voltages of
  random operation inside the bands, Fig. 8/11, from the certification and from pandapower's
  Newton-Raphson), operation inside the bands (the DSO audit), battery power and state of charge,
  clearing prices and energy flows, the aggregator's schedule, per-member statements;
* ``summary.json``, ``result.json`` (everything below in one file), ``intervals.csv``,
  ``bands.csv``, ``statements.csv``, ``aggregator.csv``, ``nr_check.csv``, ``ev_sessions.csv``,
  ``audit_violations.csv``.

The OCM figures are ``capacity.ocm_figures``; the others are drawn here (matplotlib, Agg).
"""

from __future__ import annotations

import csv
import html
import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from gridshare.sim.verify import clock_of_minute
from gridshare.units import kw_to_w, price_to_eur_per_kwh, w_to_kw, wh_to_kwh

if TYPE_CHECKING:
    from gridshare.sim.run import SimulationResult

DPI = 100


# ----------------------------------------------------------------------------- data files
def _write_csv(path: Path, header: Sequence[str], rows: Iterable[Sequence[Any]]) -> Path:
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows(rows)
    return path


def _write_intervals_csv(result: SimulationResult, out: Path) -> Path:
    """``intervals.csv``: one row per traded interval (on-chain units: W, Wh, micro-EUR/kWh)."""
    return _write_csv(
        out / "intervals.csv",
        ["interval", "start_unix_s", "hour", "settled", "orders", "orders_refused",
         "clearing_price_micro_eur_per_kwh", "battery_power_w", "battery_soc_after_wh",
         "battery_reserve_wh", "reserve_kept", "battery_tier", "local_wh", "battery_charge_wh",
         "battery_discharge_wh", "grid_import_wh", "grid_export_wh", "metered_import_wh",
         "metered_export_wh", "deviation_buy_wh", "deviation_sell_wh",
         "deviation_paid_nano_eur", "replay_equal", "settle_tx", "gas_orders", "gas_settle",
         "gas_deviations", "gas_readings", "note"],
        ([r.interval, r.interval * result.config.interval_s, r.first_minute / 60, r.settled,
          r.n_orders, r.n_rejected_orders, r.clearing_price_micro_eur_per_kwh, r.battery_power_w,
          r.soc_after_wh, r.reserve_wh, r.reserve_kept, r.battery_tier, r.local_wh,
          r.battery_charge_wh, r.battery_discharge_wh, r.grid_import_wh, r.grid_export_wh,
          r.metered_import_wh, r.metered_export_wh, r.deviation_buy_wh, r.deviation_sell_wh,
          r.deviation_paid_nano_eur, r.replay_equal, r.settle_tx, r.gas_orders, r.gas_settle,
          r.gas_deviations, r.gas_readings, r.note]
         for r in result.intervals))


def _write_bands_csv(result: SimulationResult, out: Path) -> Path:
    """``bands.csv``: per interval and flexibility its band, executed power and plan (W) and the
    metered range of the DSO audit (W)."""
    metered = result.audit.get("metered_range_w", {})
    return _write_csv(
        out / "bands.csv",
        ["interval", "device", "p_min_w", "p_max_w", "executed_w", "plan_w",
         "metered_min_w", "metered_max_w"],
        ([r.interval, n, r.band_w[n][0], r.band_w[n][1], r.flex_p_w.get(n),
          kw_to_w(r.plan_kw[n]) if n in r.plan_kw else "",
          *(metered.get(f"{r.interval}:{n}", ["", ""]))]
         for r in result.intervals for n in result.flex_names))


def _write_aggregator_csv(result: SimulationResult, out: Path) -> Path:
    """``aggregator.csv``: one row per planned hour, flexibility and slot (plan in kW)."""
    return _write_csv(
        out / "aggregator.csv",
        ["hour", "interval", "soc_kwh", "bounded_by_bands", "cost_eur", "solve_time_s", "device",
         "slot", "plan_kw"],
        ([a["hour"], a["interval"], a["soc_kwh"], a.get("bounded_by_bands"), a["cost_eur"],
          a["solve_time_s"], dev, k, p]
         for a in result.aggregator for dev, plan in a["plan_kw"].items()
         for k, p in enumerate(plan)))


def _write_nr_csvs(result: SimulationResult, out: Path) -> list[Path]:
    """``nr_check.csv`` (OCM steps) and ``nr_operated.csv`` (the day as operated), voltages in
    pu."""
    return [
        _write_csv(
            out / "nr_check.csv",
            ["minute", "interval", "v_min_pu", "v_max_pu", "max_line_loading_pct",
             "max_trafo_loading_pct", "n_points", "n_violating_points"],
            ([s["minute"], s["interval"], s["v_min_pu"], s["v_max_pu"],
              s["max_line_loading_pct"], s["max_trafo_loading_pct"], s["n_points"],
              s["n_violating_points"]] for s in result.nr_check.get("steps", []))),
        _write_csv(
            out / "nr_operated.csv",
            ["minute", "interval", "operated_v_min_pu", "operated_v_max_pu", "random_v_min_pu",
             "random_v_max_pu", "operated_max_loading_pct", "max_line_loading_pct",
             "max_trafo_loading_pct", "n_points", "n_violating_points"],
            ([s["minute"], s["interval"], s["operated_v_min_pu"], s["operated_v_max_pu"],
              s["random_v_min_pu"], s["random_v_max_pu"], s["operated_max_loading_pct"],
              s["max_line_loading_pct"], s["max_trafo_loading_pct"], s["n_points"],
              s["n_violating_points"]] for s in result.nr_operated.get("steps", []))),
    ]


def _write_dict_rows_csv(path: Path, rows: Sequence[Mapping[str, Any]]) -> list[Path]:
    """``rows`` as CSV with the first row's keys as header; nothing written without rows."""
    if not rows:
        return []
    keys = list(rows[0])
    return [_write_csv(path, keys, ([row[k] for k in keys] for row in rows))]


def _write_audit_violations_csv(result: SimulationResult, out: Path) -> Path:
    """``audit_violations.csv``: readings outside their band (W)."""
    return _write_csv(out / "audit_violations.csv",
                      ["interval", "device", "timestamp", "p_w", "p_min_w", "p_max_w"],
                      ([v["interval"], v["device"], v["timestamp"], v["p_w"], v["p_min_w"],
                        v["p_max_w"]] for v in result.audit.get("violations", [])))


def _write_json(result: SimulationResult, out: Path) -> list[Path]:
    """``summary.json`` (the summary with the timings) and ``result.json`` (everything)."""
    summary = {**result.summary, "timings_s": result.timings_s}
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    full = {
        "summary": summary,
        "config": {k: getattr(result.config, k) for k in result.config.__dataclass_fields__
                   if k != "ocm"} | {"ocm": vars(result.config.ocm)},
        "contracts": result.deployment.contracts if result.deployment is not None else {},
        "intervals": [vars(r) for r in result.intervals],
        "aggregator": result.aggregator,
        "statements": result.statements,
        "audit": {k: v for k, v in result.audit.items() if k != "metered_range_w"},
        "nr_check": result.nr_check,
        "nr_operated": result.nr_operated,
        "ev_sessions": result.ev,
        "oracle_status": result.oracle_status,
    }
    (out / "result.json").write_text(json.dumps(full, indent=1, default=str) + "\n")
    return [out / "summary.json", out / "result.json"]


def write_data(result: SimulationResult, out: Path) -> list[Path]:
    """The CSV and JSON files (see module docstring)."""
    return [
        _write_intervals_csv(result, out),
        _write_bands_csv(result, out),
        *_write_dict_rows_csv(out / "statements.csv", result.statements),
        _write_aggregator_csv(result, out),
        *_write_nr_csvs(result, out),
        *_write_dict_rows_csv(out / "ev_sessions.csv", result.ev),
        _write_audit_violations_csv(result, out),
        *_write_json(result, out),
    ]


# ----------------------------------------------------------------------------- figures
def _save(fig: Any, path: Path) -> Path:
    """Lay out, write ``fig`` as PNG to ``path``, free it; returns ``path``."""
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def _step_x(result: SimulationResult) -> np.ndarray:
    """Interval start hours plus the end of the last interval (for step plots)."""
    n = result.minutes_per_interval
    starts = [r.first_minute for r in result.intervals]
    return np.asarray([*starts, starts[-1] + n], dtype=float) / 60.0


def _stairs(values: Sequence[float]) -> np.ndarray:
    return np.asarray(list(values), dtype=float)


def fig_operation_in_bands(result: SimulationResult, path: Path) -> Path:
    """Per flexibility: the band of every interval (on-chain) and the executed power."""
    names = result.flex_names
    x = _step_x(result)
    fig, axes = plt.subplots(len(names), 1, figsize=(10, 2.3 * len(names)), sharex=True)
    for ax, name in zip(np.atleast_1d(axes), names, strict=True):
        lo = _stairs(w_to_kw(r.band_w[name][0]) for r in result.intervals)
        hi = _stairs(w_to_kw(r.band_w[name][1]) for r in result.intervals)
        p = _stairs(w_to_kw(r.flex_p_w[name]) for r in result.intervals)
        ax.stairs(hi, x, baseline=lo, fill=True, alpha=0.3, label=f"{name} band (on-chain)")
        ax.stairs(p, x, color="black", lw=1.3, label="metered power")
        if any(name in r.plan_kw for r in result.intervals):
            plan = _stairs(r.plan_kw.get(name, np.nan) for r in result.intervals)
            ax.stairs(plan, x, color="tab:orange", lw=0.9, ls="--", label="aggregator plan")
        ax.set_ylabel("kW")
        ax.legend(loc="upper left", fontsize=7, ncol=3)
        ax.set_title(f"{name}: operation inside its band", fontsize=9)
    np.atleast_1d(axes)[-1].set_xlabel("hour of day")
    return _save(fig, path)


def fig_battery(result: SimulationResult, path: Path) -> Path:
    """Community battery power (settled) and state of charge after each interval, with the
    reserve the oracle's bands keep."""
    x = _step_x(result)
    name = result.flex_names[0]
    for n in result.flex_names:
        if n.upper().startswith("CB"):
            name = n
    p = _stairs(w_to_kw(r.battery_power_w) for r in result.intervals)
    lo = _stairs(w_to_kw(r.band_w[name][0]) for r in result.intervals)
    hi = _stairs(w_to_kw(r.band_w[name][1]) for r in result.intervals)
    soc = wh_to_kwh(np.asarray([r.soc_after_wh for r in result.intervals]))
    fig, (a1, a2) = plt.subplots(2, 1, figsize=(10, 5), sharex=True)
    a1.stairs(hi, x, baseline=lo, fill=True, alpha=0.25, label="band")
    a1.stairs(p, x, color="tab:blue", lw=1.4, label="battery power (settled), charging > 0")
    a1.axhline(0, color="grey", lw=0.6)
    a1.set_ylabel("kW")
    a1.legend(loc="upper left", fontsize=8)
    a2.plot(x[1:], soc, marker=".", color="tab:green", label="state of charge after interval")
    if any(r.reserve_wh is not None for r in result.intervals):
        reserve = _stairs(np.nan if r.reserve_wh is None else wh_to_kwh(r.reserve_wh)
                          for r in result.intervals)
        a2.stairs(reserve, x, color="tab:red", lw=1.0, ls="--",
                  label="reserve the band keeps (oracle)")
    a2.set_ylabel("kWh")
    a2.set_xlabel("hour of day")
    a2.legend(loc="upper left", fontsize=8)
    return _save(fig, path)


def fig_prices(result: SimulationResult, path: Path, retail: float, feed_in: float) -> Path:
    """Clearing price per interval and where the energy went (local, battery, grid)."""
    x = _step_x(result)
    price = _stairs(np.nan if r.clearing_price_micro_eur_per_kwh is None
                    else price_to_eur_per_kwh(r.clearing_price_micro_eur_per_kwh)
                    for r in result.intervals)
    fig, (a1, a2) = plt.subplots(2, 1, figsize=(10, 5.5), sharex=True)
    a1.stairs(price, x, color="tab:purple", lw=1.5, label="clearing price")
    a1.axhline(retail, color="tab:red", ls="--", lw=0.8, label=f"retail {retail:.2f}")
    a1.axhline(feed_in, color="tab:green", ls="--", lw=0.8, label=f"feed-in {feed_in:.2f}")
    a1.set_ylabel("EUR/kWh")
    a1.legend(loc="upper left", fontsize=8, ncol=3)
    mid = 0.5 * (x[:-1] + x[1:])
    width = np.diff(x) * 0.9
    local = wh_to_kwh(np.array([r.local_wh for r in result.intervals]))
    ch = wh_to_kwh(np.array([r.battery_charge_wh for r in result.intervals]))
    dis = wh_to_kwh(np.array([r.battery_discharge_wh for r in result.intervals]))
    imp = wh_to_kwh(np.array([r.grid_import_wh for r in result.intervals]))
    exp = wh_to_kwh(np.array([r.grid_export_wh for r in result.intervals]))
    a2.bar(mid, local, width, label="traded locally", color="tab:purple")
    a2.bar(mid, dis, width, bottom=local, label="from battery", color="tab:blue")
    a2.bar(mid, imp, width, bottom=local + dis, label="from grid", color="tab:red")
    a2.bar(mid, -ch, width, label="to battery", color="tab:cyan")
    a2.bar(mid, -exp, width, bottom=-ch, label="to grid", color="tab:green")
    a2.axhline(0, color="grey", lw=0.6)
    a2.set_ylabel("kWh per interval")
    a2.set_xlabel("hour of day")
    a2.legend(loc="upper left", fontsize=7, ncol=5)
    return _save(fig, path)


def fig_aggregator(result: SimulationResult, path: Path) -> Path:
    """The aggregator's hour-ahead plan (kW per 15-min slot) for every flexibility."""
    fig, ax = plt.subplots(figsize=(10, 3.6))
    for dev in result.flex_names:
        xs, ys = [], []
        for a in result.aggregator:
            plan = a["plan_kw"].get(dev)
            if plan is None:
                continue
            for k, p in enumerate(plan):
                xs.append(a["hour"] + 0.25 * k)
                ys.append(p)
        if xs:
            ax.step(xs, ys, where="post", label=f"{dev} plan")
    bad = [a["hour"] for a in result.aggregator if not a.get("bounded_by_bands", True)]
    for h in bad:
        ax.axvspan(h, h + 1, color="tab:red", alpha=0.1, lw=0)
    ax.axhline(0, color="grey", lw=0.6)
    ax.set_xlabel("hour of day (shaded: hour planned without the bands as bounds)")
    ax.set_ylabel("kW (charging > 0)")
    ax.set_title("Hour-ahead aggregator schedule (H-ERM MILP, bands as bounds)")
    ax.legend(loc="upper left", fontsize=8)
    return _save(fig, path)


def fig_nr_boxplots(result: SimulationResult, path: Path, which: str = "steps") -> Path:
    """Newton-Raphson bus voltages (Fig. 8/11 style, whiskers = min/max): at the OCM steps
    (``which="steps"``, band corners and random points) or at sampled minutes of the day as
    operated (``which="operated"``)."""
    nr = result.nr_check if which == "steps" else result.nr_operated
    steps = nr.get("steps", [])
    fig, ax = plt.subplots(figsize=(10, 3.6))
    if steps:
        stats = [{"whislo": s["v_stats_pu"][0], "q1": s["v_stats_pu"][1],
                  "med": s["v_stats_pu"][2], "q3": s["v_stats_pu"][3],
                  "whishi": s["v_stats_pu"][4], "fliers": [],
                  "label": f"{s['minute'] // 60:02d}:{s['minute'] % 60:02d}"} for s in steps]
        ax.bxp(stats, showfliers=False, patch_artist=True)
        ax.axhline(nr.get("v_low_pu", 0.95), color="tab:red", ls="--", lw=0.8)
        ax.axhline(nr.get("v_high_pu", 1.05), color="tab:red", ls="--", lw=0.8)
    ax.set_ylabel("|V| (pu)")
    ax.set_xlabel("minute of day")
    ax.set_title("pandapower Newton-Raphson, all bus voltages: " + (
        "OCM steps, band corners and random points inside the bands" if which == "steps"
        else "the day as operated, and random points inside the bands"), fontsize=10)
    return _save(fig, path)


def fig_loading(result: SimulationResult, path: Path, n_labelled: int = 6) -> Path:
    """Line and transformer loading over the day (like the voltage figures): per OCM step, each
    branch's largest loading over the band's certification points (corners and random points),
    percent of its rating; the most loaded branches labelled, the limits dashed."""
    from capacity.ocm.result import branch_names

    steps = result.band_steps
    fig, ax = plt.subplots(figsize=(10, 3.6))
    if steps is not None and steps.n_steps and steps.loading_box_max_pct.size:
        hours = np.asarray(result.band_step_hours, dtype=float)
        loading = np.asarray(steps.loading_box_max_pct, dtype=float)
        names = branch_names(steps.line_ids, steps.trafo_ids)
        peak = np.nan_to_num(np.nanmax(loading, axis=0, initial=0.0))
        order = np.argsort(-peak)
        for rank, col in enumerate(order):
            label = f"{names[col]} (max {peak[col]:.0f} %)" if rank < n_labelled else None
            ax.step(hours, loading[:, col], where="post", lw=1.2 if label else 0.5,
                    color=None if label else "0.75", label=label)
        for limit in np.unique(steps.max_loading_pct[np.isfinite(steps.max_loading_pct)]):
            ax.axhline(limit, color="tab:red", ls="--", lw=0.8)
        ax.legend(loc="best", fontsize=7)
    ax.set_xlabel("hour of day")
    ax.set_ylabel("loading (% of rating)")
    ax.set_title("Branch loading inside the published bands (largest over the certification "
                 "points of each OCM step)", fontsize=10)
    return _save(fig, path)


def write_figures(result: SimulationResult, out: Path, retail: float, feed_in: float
                  ) -> dict[str, Path]:
    """Every figure as PNG; keys are the figure ids used by the HTML page."""
    from capacity.ocm_figures import plot_bands, plot_voltage_boxplots, plot_voltages

    figs: dict[str, Path] = {}
    if result.band_steps is not None and result.band_steps.n_steps:
        hours = np.asarray(result.band_step_hours, dtype=float)
        ul_kw = result.band_step_ul_kw if result.band_step_ul_kw is not None \
            else np.zeros_like(hours)
        figs["ocm_bands"] = plot_bands(result.band_steps, hours, np.asarray(ul_kw),
                                       out / "fig_ocm_bands.png")
        figs["ocm_voltages"] = plot_voltages(result.band_steps, hours,
                                             out / "fig_ocm_voltages.png")
        figs["ocm_boxplots"] = plot_voltage_boxplots(result.band_steps, hours,
                                                     out / "fig_ocm_voltage_boxplots.png")
        figs["loading"] = fig_loading(result, out / "fig_loading.png")
    if result.intervals:
        figs["operation"] = fig_operation_in_bands(result, out / "fig_operation_in_bands.png")
        figs["battery"] = fig_battery(result, out / "fig_battery.png")
        figs["prices"] = fig_prices(result, out / "fig_prices.png", retail, feed_in)
    figs["aggregator"] = fig_aggregator(result, out / "fig_aggregator.png")
    figs["nr"] = fig_nr_boxplots(result, out / "fig_nr_voltages.png")
    figs["nr_operated"] = fig_nr_boxplots(result, out / "fig_nr_operated.png", "operated")
    return figs


# ----------------------------------------------------------------------------- HTML
_CSS = """
body{font-family:system-ui,sans-serif;max-width:1100px;margin:1.5em auto;color:#222}
table{border-collapse:collapse;font-size:0.85em;margin:0.5em 0 1.5em}
th,td{border:1px solid #ccc;padding:3px 7px;text-align:right}
th{background:#f2f2f2} td.l,th.l{text-align:left}
.ok{color:#0a0;font-weight:bold} .bad{color:#c00;font-weight:bold}
figure{margin:1em 0} figcaption{font-size:0.85em;color:#555} img{max-width:100%}
"""

_FIGURES = (
    ("ocm_bands", "OCM bands per flexibility (paper Fig. 7/10)",
     "P_min..P_max of every OCM step behind the published bands, with the summed uncontrollable "
     "net load; shaded: infeasible steps (safest setting)."),
    ("ocm_voltages", "V_min and V_max at the band corners (paper Fig. 7b/11d)",
     "Lowest bus voltage with every flexibility at P_max, highest at P_min, per OCM step."),
    ("ocm_boxplots", "Bus voltages for random operation inside the bands (paper Fig. 8/11)",
     "From the oracle's certification (HELM) of every step."),
    ("loading", "Line and transformer loading inside the bands",
     "Per OCM step, each branch's largest loading over the band's certification points, percent "
     "of its rating; the most loaded branches labelled; dashed: the loading limits."),
    ("nr", "Newton-Raphson check of operation inside the bands",
     "pandapower runpp at the OCM steps of sampled intervals (the conditions each band was "
     "certified for): the band's corners and random points inside it; dashed: voltage limits. "
     "Every point's line and transformer loading is checked too (nr_check.csv)."),
    ("nr_operated", "Newton-Raphson on the day as it happened",
     "pandapower runpp at sampled minutes with the realised loads and PV: the operated point and "
     "random points inside that interval's bands. Bands come from the previous interval's "
     "readings (persistence forecast), so a fast change inside an interval shows here."),
    ("operation", "DSO audit: metered power of each flexibility inside its on-chain band",
     "Bands as written by the oracle for each interval, metered power and the aggregator's plan."),
    ("battery", "Community battery: power and state of charge", "Settled battery power "
     "(inside its band by construction, checked by the contract) and SoC after each interval."),
    ("prices", "Clearing prices and energy flows", "Uniform clearing price per interval and the "
     "settled energy: local trades, battery, grid."),
    ("aggregator", "The aggregator's hour-ahead schedule", "H-ERM MILP per hour, four 15-min "
     "slots, the latest bands as bounds."),
)


def _table(header: Sequence[str], rows: Iterable[Sequence[Any]], left: int = 1) -> str:
    head = "".join(f'<th class="{"l" if i < left else ""}">{html.escape(str(h))}</th>'
                   for i, h in enumerate(header))
    body = []
    for row in rows:
        cells = "".join(f'<td class="{"l" if i < left else ""}">{html.escape(str(v))}</td>'
                        for i, v in enumerate(row))
        body.append(f"<tr>{cells}</tr>")
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


def _check(ok: bool, text: str) -> str:
    cls, word = ("ok", "PASS") if ok else ("bad", "FAIL")
    return f'<li><span class="{cls}">{word}</span> {html.escape(text)}</li>'


def _checks_html(s: Mapping[str, Any]) -> str:
    """The pass/fail checks of the summary ``s`` and the as-operated information, as list
    items."""
    rep = s["replay"]
    checks = "".join([
        _check(s["intervals_settled"] == s["intervals_traded"],
               f"{s['intervals_settled']} of {s['intervals_traded']} traded intervals settled "
               "on-chain"),
        _check(rep["equal"] == rep["replayed"],
               f"market replay equals settlement in {rep['equal']} of {rep['replayed']} "
               "intervals"),
        _check(s["audit_violations"] == 0,
               f"DSO audit: {s['audit_readings_checked']} metered flexibility readings, "
               f"{s['audit_violations']} outside their band"),
        _check(s["nr_violations"] == 0,
               f"Newton-Raphson: {s['nr_runs']} load flows at {s['nr_steps_checked']} OCM steps "
               f"(band corners and random points inside the bands), {s['nr_violations']} with a "
               "bus outside the voltage limits or a line or transformer above its loading "
               f"limit (highest loading {s['nr_max_loading_pct']:.1f} %)"),
        _check(s["recomputed_band_mismatches"] == 0,
               f"bands on-chain equal OCM recomputed from the oracle's inputs "
               f"({s['recomputed_band_mismatches']} mismatches)"),
    ])
    return checks + ("<li><em>information</em> Newton-Raphson on the day as operated: "
                     f"{s['nr_operated_runs']} load flows at {s['nr_operated_minutes_checked']} "
                     f"minutes, {s['nr_operated_violations']} outside the limits "
                     "(persistence-forecast error; see the figure)</li>")


def _summary_rows(result: SimulationResult) -> list[tuple[str, Any]]:
    """(quantity, value) rows of the summary table (kWh, gas, s)."""
    s = result.summary
    return [
        ("energy traded locally", f"{s['energy_traded_locally_kwh']:.2f} kWh"),
        ("battery throughput (charge + discharge)",
         f"{s['battery_throughput_kwh']:.2f} kWh ({s['battery_charge_kwh']:.2f} + "
         f"{s['battery_discharge_kwh']:.2f})"),
        ("grid exchange in the market (import / export)",
         f"{s['market_grid_import_kwh']:.2f} / {s['market_grid_export_kwh']:.2f} kWh"),
        ("metered at the transformer (import / export)",
         f"{s['metered_transformer_import_kwh']:.2f} / "
         f"{s['metered_transformer_export_kwh']:.2f} kWh"),
        ("EV energy delivered / missing at departure",
         f"{s['ev_energy_delivered_kwh']:.2f} / {s['ev_energy_missing_at_departure_kwh']:.2f} "
         "kWh"),
        ("orders placed (refused by validation)", f"{s['orders']} ({s['orders_refused']})"),
        ("infeasible OCM steps", s["infeasible_ocm_steps"]),
        ("band intervals written by the oracle", s["band_intervals_written"]),
        ("aggregator hours (planned without band bounds)",
         f"{s['aggregator_hours']} ({s['aggregator_hours_unbounded']})"),
        ("gas used: total (orders, settlement, readings)",
         f"{s['gas_used_total']:,} ({s['gas_used_orders']:,}, {s['gas_used_settlement']:,}, "
         f"{s['gas_used_readings']:,})"),
        ("wall-clock time", f"{result.timings_s.get('total', float('nan')):.0f} s"),
    ]


def _head_html(result: SimulationResult) -> list[str]:
    """The page's head, title, checks and summary table."""
    s = result.summary
    return [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>gridshare simulation: {html.escape(s['feeder'])}</title>",
        f"<style>{_CSS}</style></head><body>",
        f"<h1>gridshare: a community day on {html.escape(s['feeder'])}</h1>",
        f"<p>{s['hours']:g} simulated hours, {s['interval_s'] // 60}-minute market and band "
        f"intervals with minute meter readings, chain {html.escape(str(s['chain']))} "
        f"(id {s['chain_id']}), seed {result.config.seed}.</p>",
        f"<h2>Checks</h2><ul>{_checks_html(s)}</ul>",
        "<h2>Summary</h2>", _table(["quantity", "value"], _summary_rows(result)),
    ]


def _figures_html(figs: Mapping[str, Path]) -> list[str]:
    """One ``<figure>`` per figure of ``_FIGURES`` that was drawn."""
    return [f"<figure id='fig-{key}'><h3>{html.escape(title)}</h3>"
            f"<img src='{html.escape(figs[key].name)}' alt='{html.escape(title)}'>"
            f"<figcaption>{html.escape(caption)}</figcaption></figure>"
            for key, title, caption in _FIGURES if key in figs]


def _statements_table(statements: Sequence[Mapping[str, Any]]) -> str:
    """Per-member statements (energy in kWh, money in EUR, battery share in %)."""
    member_rows = [
        [st["name"], st["member"][:10] + "...", f"{wh_to_kwh(st['bought_local_wh']):.2f}",
         f"{wh_to_kwh(st['sold_local_wh']):.2f}", f"{wh_to_kwh(st['from_battery_wh']):.2f}",
         f"{wh_to_kwh(st['to_battery_wh']):.2f}", f"{wh_to_kwh(st['from_grid_wh']):.2f}",
         f"{wh_to_kwh(st['to_grid_wh']):.2f}", f"{st['net_eur']:+.3f}",
         f"{st['battery_share_bps'] / 100:.2f}"] for st in statements]
    return _table(
        ["member", "address", "bought local kWh", "sold local kWh", "from battery kWh",
         "to battery kWh", "from grid kWh", "to grid kWh", "net EUR", "battery share %"],
        member_rows, left=2)


def _ev_table(ev: Sequence[Mapping[str, Any]]) -> str:
    """Charging sessions (clock times, energy in kWh)."""
    ev_rows = [[e["station"], clock_of_minute(e["arrive_min"]), clock_of_minute(e["depart_min"]),
                f"{e['energy_needed_kwh']:.2f}", f"{e['delivered_kwh']:.2f}",
                f"{e['missing_kwh']:.2f}", e.get("held_back_by", "")] for e in ev]
    return _table(["station", "arrives", "departs", "needs kWh", "delivered kWh",
                   "missing kWh", "held back by (band below the rating: binding constraint, "
                   "when)"], ev_rows)


def _tail_html(result: SimulationResult) -> list[str]:
    """Contracts, links to the data files and the timings (s), closing the page."""
    parts = []
    if result.deployment is not None:
        parts.append("<h2>Contracts</h2>")
        parts.append(_table(["contract", "address"], result.deployment.contracts.items()))
    parts.append("<h2>Data</h2><ul>" + "".join(
        f"<li><a href='{f}'>{f}</a></li>" for f in
        ("summary.json", "result.json", "intervals.csv", "bands.csv", "statements.csv",
         "aggregator.csv", "nr_check.csv", "nr_operated.csv", "ev_sessions.csv",
         "audit_violations.csv", "deployment.json")) + "</ul>")
    timings = ", ".join(f"{k} {v:.1f} s" for k, v in result.timings_s.items())
    parts.append(f"<p><small>timings: {html.escape(timings)}</small></p></body></html>")
    return parts


def render_html(result: SimulationResult, figs: Mapping[str, Path]) -> str:
    """The report page (figures referenced by relative file name)."""
    parts = [*_head_html(result), *_figures_html(figs), "<h2>Per-member statements</h2>",
             _statements_table(result.statements)]
    if result.ev:
        parts += ["<h2>Charging sessions</h2>", _ev_table(result.ev)]
    return "\n".join([*parts, *_tail_html(result)])


def write_report(result: SimulationResult, out_dir: Path) -> Path:
    """Write figures, data and ``index.html`` into ``out_dir``; returns the page's path."""

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    prices = (result.deployment.prices_micro_eur_per_kwh if result.deployment is not None
              else {"retail": 300_000, "feed_in": 80_000})
    figs = write_figures(result, out, float(price_to_eur_per_kwh(prices["retail"])),
                         float(price_to_eur_per_kwh(prices["feed_in"])))
    write_data(result, out)
    index = out / "index.html"
    index.write_text(render_html(result, figs))
    return index


def _vehicles_line(s: dict[str, Any]) -> str:
    """The vehicles' energy against what they asked of the run's minutes (kWh, %)."""
    delivered = s["ev_energy_delivered_kwh"]
    asked = delivered + s["ev_energy_missing_at_departure_kwh"]
    share = f" ({100.0 * delivered / asked:.1f} %)" if asked > 0 else ""
    return f"  vehicles charged        {delivered:10.2f} kWh of {asked:.2f} asked{share}"


def format_summary(result: SimulationResult) -> str:
    """The end-of-run summary for the terminal."""
    s = result.summary
    rep = s["replay"]
    lines = [
        f"simulated {s['hours']:g} h of {s['feeder']} on {s['chain']} "
        f"({s['intervals_traded']} intervals of {s['interval_s'] // 60} min, "
        f"{result.timings_s.get('total', float('nan')):.0f} s)",
        f"  energy traded locally   {s['energy_traded_locally_kwh']:10.2f} kWh",
        f"  battery throughput      {s['battery_throughput_kwh']:10.2f} kWh "
        f"(charge {s['battery_charge_kwh']:.2f}, discharge {s['battery_discharge_kwh']:.2f})",
        f"  grid exchange (market)  {s['market_grid_import_kwh']:10.2f} kWh import, "
        f"{s['market_grid_export_kwh']:.2f} kWh export",
        f"  grid exchange (metered) {s['metered_transformer_import_kwh']:10.2f} kWh import, "
        f"{s['metered_transformer_export_kwh']:.2f} kWh export",
        f"  members metered         {s['metered_members_import_kwh']:10.2f} kWh consumed, "
        f"{s['metered_members_export_kwh']:.2f} kWh injected",
        f"  deviations settled      {s['deviation_bought_kwh']:10.2f} kWh bought, "
        f"{s['deviation_sold_kwh']:.2f} kWh sold at imbalance tariffs "
        f"({s['deviation_paid_eur']:+.2f} EUR paid; {s['intervals_deviations_settled']} "
        "intervals)",
        _vehicles_line(s),
        f"  infeasible OCM steps    {s['infeasible_ocm_steps']:10d}",
        f"  audit violations        {s['audit_violations']:10d} "
        f"({s['audit_readings_checked']} readings checked)",
        f"  NR V/loading violations {s['nr_violations']:10d} ({s['nr_runs']} load flows at "
        f"OCM steps; as operated: {s['nr_operated_violations']} of {s['nr_operated_runs']})",
        f"  NR highest loading      {s['nr_max_loading_pct']:10.1f} % (as operated "
        f"{s['nr_operated_max_loading_pct']:.1f} %)",
        f"  replay == settlement    {rep['equal']:10d} of {rep['replayed']} (trades; "
        f"meter totals and deviations of {rep['deviations_replayed']})",
        f"  gas used                {s['gas_used_total']:10,d}",
    ]
    return "\n".join(lines)
