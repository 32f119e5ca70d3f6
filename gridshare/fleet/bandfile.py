"""The band file of one feeder (``DIR/bands/<feeder>.csv``): one row per 15-min interval.

Columns: ``interval`` (unix s // 900, the oracle's interval id), ``start`` (local HH:MM),
``steps`` and ``infeasible_steps`` (OCM steps of the interval), ``empty`` (1 when the step bands
of a device did not overlap and the last step's band stands), ``upper``/``lower`` (what limits
that side: rated, infeasible, v_low, v_high, line <id>, trafo <id>), ``v_min_at_max_pu`` /
``v_max_at_min_pu`` (worst voltages with every flexibility at its P_max / P_min, 6 decimals),
then per flexibility ``<name>_p_min_w`` and ``<name>_p_max_w`` (W, integers, as
``GridCapacity.writeBands`` takes them). Nothing in the file depends on the run (no times), so
the same inputs give the same bytes.
"""

from __future__ import annotations

import csv
import io
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from gridshare.fleet.compute import HourBands, IntervalBands

FIXED_COLUMNS = ("interval", "start", "steps", "infeasible_steps", "empty", "upper", "lower",
                 "v_min_at_max_pu", "v_max_at_min_pu")
LIMIT_KINDS = ("rated", "v_low", "v_high", "thermal", "infeasible")
"""What limits a side of a band, counted by kind ("thermal": any "line <id>" or "trafo <id>")."""
STAT_KEYS = ("intervals", "steps", "infeasible_steps",
             *(f"{side}_{kind}" for side in ("upper", "lower") for kind in LIMIT_KINDS))


def limit_kind(limit: str) -> str:
    """The kind of a band file's ``upper``/``lower`` value (``LIMIT_KINDS``)."""
    return "thermal" if limit.startswith(("line ", "trafo ")) else limit


def _row(iv: IntervalBands) -> list[str]:
    bands = [str(w) for pair in zip(iv.p_min_w, iv.p_max_w, strict=True) for w in pair]
    return [str(iv.interval), iv.start, str(iv.steps), str(iv.infeasible_steps),
            str(int(iv.empty)), iv.upper, iv.lower, f"{iv.v_min_at_max_pu:.6f}",
            f"{iv.v_max_at_min_pu:.6f}", *bands]


def band_text(devices: Sequence[str], hours: Sequence[HourBands]) -> str:
    """The band file of one feeder from its hours' results (any order)."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow([*FIXED_COLUMNS, *(f"{d}_{side}" for d in devices
                                       for side in ("p_min_w", "p_max_w"))])
    for hour in sorted(hours, key=lambda h: h.hour):
        writer.writerows(_row(iv) for iv in hour.intervals)
    return buf.getvalue()


def band_stats(path: Path) -> dict[str, int]:
    """Counts of one band file: intervals, steps, infeasible steps and per side the intervals
    of each limit (``upper_v_low``, ``lower_v_high``, ...)."""
    with path.open(encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh))
    stats = {"intervals": len(rows), "steps": sum(int(r["steps"]) for r in rows),
             "infeasible_steps": sum(int(r["infeasible_steps"]) for r in rows)}
    for side in ("upper", "lower"):
        counts = Counter(limit_kind(r[side]) for r in rows)
        stats.update({f"{side}_{kind}": counts[kind] for kind in LIMIT_KINDS})
    return stats
