"""Figures in the style of the H-ERM paper's Fig. 4-7 (matplotlib, Agg backend, PNG)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from market.aggregator.experiments import Table1Row
from market.aggregator.rolling import DayResult


def _cost_panel(ax: plt.Axes, rows: Sequence[Table1Row], title: str, xlabel: str) -> None:
    pct = np.array([r.disturbance_pct for r in rows])
    da = np.array([r.day_ahead_cost_eur for r in rows]) / 1000
    ha = np.array([r.hour_ahead_cost_eur for r in rows]) / 1000
    x = np.arange(pct.size)
    ax.bar(x - 0.2, da, 0.4, label="day-ahead", color="#4c72b0")
    ax.bar(x + 0.2, ha, 0.4, label="hour-ahead (H-ERM)", color="#dd8452")
    ax.set_xticks(x, [f"{p:+g}%" for p in pct])
    ax.set_xlabel(xlabel)
    ax.set_ylabel("objective function (k EUR)")
    ax.set_title(title)
    twin = ax.twinx()
    twin.plot(x, [r.difference_pct for r in rows], "k.-", label="variation")
    twin.set_ylabel("variation to day-ahead (%)")
    handles = ax.get_legend_handles_labels()
    extra = twin.get_legend_handles_labels()
    ax.legend(handles[0] + extra[0], handles[1] + extra[1], loc="upper left", fontsize=8)


def cost_comparison(constrained: Sequence[Table1Row], unconstrained: Sequence[Table1Row],
                    disturbed: str, numbers: tuple[int, int], path: Path) -> Path:
    """Fig. 4 (demand) / Fig. 5 (RES): day-ahead vs hour-ahead objective per disturbance."""
    label = "demand" if disturbed == "demand" else "non-dispatchable RES"
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.5))
    _cost_panel(axes[0], constrained, f"(a) Case {numbers[0]}: constrained ESS/CS",
                f"{label} disturbance")
    _cost_panel(axes[1], unconstrained, f"(b) Case {numbers[1]}: not constrained",
                f"{label} disturbance")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def constrained_vs_not(pairs: dict[str, tuple[Sequence[Table1Row], Sequence[Table1Row]]],
                       path: Path) -> Path:
    """Fig. 6: objective (with cap penalties) of constrained minus not constrained, in %."""
    fig, ax = plt.subplots(figsize=(8, 4.5))
    width = 0.8 / max(len(pairs), 1)
    for i, (label, (cons, free)) in enumerate(pairs.items()):
        pct = [r.disturbance_pct for r in cons]
        diff = [100 * ((c.hour_ahead_cost_eur + c.cap_penalty_eur) - f.hour_ahead_cost_eur)
                / abs(f.hour_ahead_cost_eur) for c, f in zip(cons, free, strict=True)]
        x = np.arange(len(pct))
        ax.bar(x + (i - (len(pairs) - 1) / 2) * width, diff, width, label=label)
        ax.set_xticks(x, [f"{p:+g}%" for p in pct])
    ax.axhline(0, color="k", lw=0.8)
    ax.set_xlabel("forecast disturbance")
    ax.set_ylabel("constrained - not constrained (% of objective)")
    ax.set_title("ESS and CS constrained to the day-ahead vs not constrained")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def energy_per_resource(day: DayResult, slot_h: float, path: Path) -> Path:
    """Fig. 7: hourly energy per resource, (a) generation side, (b) consumption side (MWh)."""
    p = day.p_kw
    sph = round(1 / slot_h)

    def hourly(arr: np.ndarray) -> np.ndarray:
        total = np.atleast_2d(arr).sum(axis=0) * slot_h / 1000.0
        return total.reshape(-1, sph).sum(axis=1)

    gen = {
        "external supplier": hourly(p["supplier"]), "PV + wind": hourly(p["res"]),
        "dispatchable DG": hourly(p["dg"]), "ESS discharge": hourly(p["ess_dis"]),
        "EV discharge": hourly(p["cs_dis"]), "demand response": hourly(p["dr"]),
        "non-supplied": hourly(p["nsd"]), "wholesale buy": hourly(p["wm_buy"]),
        "local market buy": hourly(p["lem_buy"]),
    }
    load = sum(gen.values()) - (hourly(p["ess_ch"]) + hourly(p["cs_ch"]) + hourly(p["wm_sell"])
                                + hourly(p["lem_sell"]))
    cons = {
        "load (after DR, NSD)": load - gen["demand response"] - gen["non-supplied"],
        "ESS charge": hourly(p["ess_ch"]), "EV charge": hourly(p["cs_ch"]),
        "wholesale sell": hourly(p["wm_sell"]), "local market sell": hourly(p["lem_sell"]),
    }
    fig, axes = plt.subplots(2, 1, figsize=(11, 8), sharex=True)
    hours = np.arange(load.size) + 1
    for ax, parts, title in ((axes[0], gen, "(a) generation"), (axes[1], cons,
                                                                 "(b) consumption")):
        bottom = np.zeros(hours.size)
        for label, values in parts.items():
            ax.bar(hours, values, bottom=bottom, label=label)
            bottom = bottom + values
        ax.set_ylabel("energy (MWh)")
        ax.set_title(f"Energy resource management, hour-ahead: {title}")
        ax.legend(fontsize=7, ncol=3)
    axes[1].set_xlabel("hour")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
