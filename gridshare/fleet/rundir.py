"""The output directory of a fleet run: band files as feeders finish, resume, the summary.

``DIR/run.json`` holds the run's parameters (hours, seed, feeder kind, OCM settings); a run into
a directory with other parameters is refused, so a resumed run never mixes settings. A feeder is
finished when ``DIR/bands/<feeder>.csv`` exists: band files are written to a temporary name and
renamed, so a file is complete or absent. ``DIR/summary.csv`` (one row per feeder: status,
reason of a failure, counts, compute time) and ``DIR/summary.json`` (totals) are written at the
end of every run, resumed feeders included.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from gridshare.fleet.bandfile import STAT_KEYS, band_stats, band_text
from gridshare.fleet.compute import HourBands

RUN_FORMAT = "gridshare-fleet-run/1"


class RunDir:
    """Paths and files of one output directory (see module docstring)."""

    def __init__(self, out: Path) -> None:
        self.out = Path(out)
        self.bands = self.out / "bands"

    def band_path(self, name: str) -> Path:
        return self.bands / f"{name}.csv"

    def prepare(self, params: Mapping[str, Any]) -> set[str]:
        """Create the directory, check or write ``run.json``; the names of finished feeders."""
        self.bands.mkdir(parents=True, exist_ok=True)
        run_file = self.out / "run.json"
        wanted = {"format": RUN_FORMAT, **params}
        if run_file.exists():
            found = json.loads(run_file.read_text(encoding="utf-8"))
            if found != json.loads(json.dumps(wanted)):
                raise ValueError(
                    f"{str(self.out)!r} holds a run with other parameters ({run_file}): "
                    "resume with the same ones or choose another --out")
        else:
            run_file.write_text(json.dumps(wanted, indent=1) + "\n", encoding="utf-8")
        return {p.stem for p in self.bands.glob("*.csv")}

    def write_bands(self, name: str, hours: Sequence[HourBands]) -> Path:
        """Write one feeder's band file atomically (temporary name, then rename)."""
        path = self.band_path(name)
        tmp = self.bands / f".{name}.csv.tmp"
        tmp.write_text(band_text(hours[0].devices, hours), encoding="utf-8")
        os.replace(tmp, path)
        return path

    def write_summary(self, rows: Sequence[dict[str, Any]], totals: Mapping[str, Any]) -> Path:
        """``summary.csv`` (``rows``) and ``summary.json`` (``totals`` plus the counts)."""
        columns = ["feeder", "status", "source", *STAT_KEYS, "compute_s", "reason"]
        with (self.out / "summary.csv").open("w", encoding="utf-8", newline="") as fh:
            writer = csv.DictWriter(fh, columns, lineterminator="\n")
            writer.writeheader()
            writer.writerows(rows)
        sums = {k: sum(int(r.get(k) or 0) for r in rows) for k in STAT_KEYS}
        path = self.out / "summary.json"
        path.write_text(json.dumps({**totals, **sums}, indent=1) + "\n", encoding="utf-8")
        return path

    def feeder_row(self, name: str, source: str, status: str, compute_s: float | None,
                   reason: str = "") -> dict[str, Any]:
        """One summary row; the counts come from the band file when there is one."""
        path = self.band_path(name)
        counts = band_stats(path) if status != "failed" and path.exists() else {}
        return {"feeder": name, "status": status, "source": source, **counts,
                "compute_s": "" if compute_s is None else f"{compute_s:.3f}", "reason": reason}
