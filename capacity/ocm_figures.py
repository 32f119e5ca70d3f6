"""The OCM paper's figures from a ``BandResult`` (PNG, matplotlib Agg).

- ``plot_bands``: P_min..P_max per flexibility with the summed uncontrollable load (Fig. 7a/10),
  infeasible steps shaded (the paper's highlighted regions).
- ``plot_voltages``: V_min with every flexibility at P_max and V_max at P_min per step, with the
  limits (Fig. 7b/11d).
- ``plot_voltage_boxplots``: bus voltages for random operation inside the bands, one box per
  step (Fig. 8/11), drawn from the certification statistics (whiskers = min/max).
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from capacity.ocm import BandResult

MAX_BOXES = 48


def _shade_infeasible(ax, hours: np.ndarray, feasible: np.ndarray, step_h: float) -> None:
    for h in hours[~feasible]:
        ax.axvspan(h, h + step_h, color="tab:red", alpha=0.15, lw=0)


def plot_bands(result: BandResult, hours: np.ndarray, ul_sum_kw: np.ndarray, path: Path) -> Path:
    """Bands per flexibility (kW) over the hour of day, with the summed UL (Fig. 7a/10)."""
    n_flex = len(result.flexibilities)
    step_h = float(np.median(np.diff(hours))) if hours.size > 1 else 1 / 60
    fig, axes = plt.subplots(n_flex + 1, 1, figsize=(10, 2.2 * (n_flex + 1)), sharex=True)
    for i, (ax, flex) in enumerate(zip(axes, result.flexibilities, strict=False)):
        ax.fill_between(hours, result.p_min_kw[:, i], result.p_max_kw[:, i], step="post",
                        alpha=0.35, label=f"{flex.name} band")
        ax.step(hours, result.p_max_kw[:, i], where="post", lw=1, label="P_max")
        ax.step(hours, result.p_min_kw[:, i], where="post", lw=1, label="P_min")
        ax.axhline(flex.p_high_kw, color="grey", ls=":", lw=0.8)
        ax.axhline(flex.p_low_kw, color="grey", ls=":", lw=0.8)
        _shade_infeasible(ax, hours, result.feasible, step_h)
        ax.set_ylabel("kW")
        ax.set_title(f"{flex.name} (bus {flex.bus_id}, {flex.p_low_kw:g}..{flex.p_high_kw:g} kW)",
                     fontsize=9)
        ax.legend(loc="upper right", fontsize=7)
    ax = axes[-1]
    ax.step(hours, ul_sum_kw, where="post", color="black", lw=1, label="sum of UL (net)")
    _shade_infeasible(ax, hours, result.feasible, step_h)
    ax.set_ylabel("kW")
    ax.set_xlabel("hour of day")
    ax.legend(loc="upper right", fontsize=7)
    fig.suptitle(f"OCM bands ({result.objective}); shaded: infeasible steps")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_voltages(result: BandResult, hours: np.ndarray, path: Path) -> Path:
    """V_min at P_max and V_max at P_min per step (Fig. 7b/11d)."""
    step_h = float(np.median(np.diff(hours))) if hours.size > 1 else 1 / 60
    fig, ax = plt.subplots(figsize=(10, 3.5))
    ax.step(hours, result.v_min_at_max_pu, where="post", label="V_min, all at P_max")
    ax.step(hours, result.v_max_at_min_pu, where="post", label="V_max, all at P_min")
    ax.axhline(result.v_low_pu, color="tab:red", ls="--", lw=0.8)
    ax.axhline(result.v_high_pu, color="tab:red", ls="--", lw=0.8)
    _shade_infeasible(ax, hours, result.feasible, step_h)
    ax.set_xlabel("hour of day")
    ax.set_ylabel("|V| (pu)")
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_voltage_boxplots(result: BandResult, hours: np.ndarray, path: Path) -> Path:
    """Boxplots of bus voltages under random operation inside the bands (Fig. 8/11)."""
    idx = np.unique(np.linspace(0, result.n_steps - 1, min(result.n_steps, MAX_BOXES)).astype(int))
    stats = []
    for k in idx:
        lo, q1, med, q3, hi = result.v_random_stats_pu[k]
        stats.append({"whislo": lo, "q1": q1, "med": med, "q3": q3, "whishi": hi, "fliers": [],
                      "label": f"{hours[k]:.1f}"})
    fig, ax = plt.subplots(figsize=(11, 3.8))
    boxes = ax.bxp(stats, showfliers=False, patch_artist=True)
    for box, k in zip(boxes["boxes"], idx, strict=True):
        box.set_facecolor("tab:blue" if result.feasible[k] else "tab:red")
        box.set_alpha(0.5)
    ax.axhline(result.v_low_pu, color="tab:red", ls="--", lw=0.8)
    ax.axhline(result.v_high_pu, color="tab:red", ls="--", lw=0.8)
    ax.set_xlabel("hour of day (red: infeasible step, safest setting)")
    ax.set_ylabel("|V| (pu)")
    ax.tick_params(axis="x", labelsize=6, rotation=90)
    ax.set_title("Bus voltages for random operation inside the bands")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
