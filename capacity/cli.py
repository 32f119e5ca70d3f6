"""``gridshare loadflow``: HELM load flow of a built-in feeder or a feeder file, as a table.

Prints the bus voltages and the most loaded branches (loading as pandapower's
``loading_percent``: lines in percent of ``max_i_ka * df * parallel``, transformers of
``sn_mva * df * parallel``)."""

from __future__ import annotations

import argparse
import csv
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from capacity.feeder_io import read_feeder, save_feeder
from capacity.grid import Feeder
from capacity.helm import DEFAULT_MAX_COEFFICIENTS, DEFAULT_TOL_PU, HelmResult, solve

_FILE_SUFFIXES = (".json", ".yaml", ".yml")
MOST_LOADED = 5
"""Branches listed by ``format_table``."""


def resolve_feeder(spec: str) -> Feeder:
    """A feeder file path (.json/.yaml/.yml) or the name of a built-in feeder."""
    path = Path(spec)
    if path.suffix.lower() in _FILE_SUFFIXES or path.exists():
        if not path.exists():
            raise FileNotFoundError(f"feeder file {spec!r} not found")
        return read_feeder(path)
    try:
        from capacity.feeders import load_feeder
    except ImportError as exc:  # built-in feeders not available in this installation
        raise ValueError(f"unknown feeder {spec!r} (no built-in feeders: {exc})") from exc
    feeder = load_feeder(spec)
    return feeder


def voltage_rows(feeder: Feeder, result: HelmResult, scale: float) -> list[dict[str, Any]]:
    """One row per bus: id, name, nominal kV, load (kW/kvar), |V| (pu), angle (degree)."""
    v = result.v_pu[0]
    return [
        {
            "bus_id": int(b),
            "name": name,
            "vn_kv": float(vn),
            "p_kw": float(p) * scale,
            "q_kvar": float(q) * scale,
            "vm_pu": float(abs(x)),
            "va_degree": float(np.angle(x, deg=True)),
        }
        for b, name, vn, p, q, x in zip(
            feeder.bus_ids, feeder.bus_names, feeder.bus_vn_kv, feeder.p_kw, feeder.q_kvar, v,
            strict=True,
        )
    ]


def branch_rows(feeder: Feeder, result: HelmResult) -> list[dict[str, Any]]:
    """One row per line, then per transformer: kind, id, name, buses, loading (percent; NaN
    for unrated lines and without a solution)."""
    ln, tr = feeder.lines, feeder.trafos
    loading = result.branch_loading_pct[0]
    kinds = ["line"] * len(ln) + ["trafo"] * len(tr)
    ids = np.concatenate([ln.ids, tr.ids])
    names = ln.names + tr.names
    ends = zip(np.concatenate([ln.from_bus, tr.hv_bus]), np.concatenate([ln.to_bus, tr.lv_bus]),
               strict=True)
    return [
        {"kind": k, "id": int(i), "name": n, "from_bus": int(a), "to_bus": int(b),
         "loading_pct": float(x)}
        for k, i, n, (a, b), x in zip(kinds, ids, names, ends, loading, strict=True)
    ]


def format_most_loaded(rows: list[dict[str, Any]], n: int = MOST_LOADED) -> list[str]:
    """Lines of text: the ``n`` most loaded branches (rated ones, highest first)."""
    rated = sorted((r for r in rows if np.isfinite(r["loading_pct"])),
                   key=lambda r: -r["loading_pct"])[:n]
    if not rated:
        return []
    name_w = max(4, *(len(r["name"]) for r in rated))
    out = [f"most loaded branches (of {len(rows)}):"]
    for r in rated:
        out.append(
            f"  {r['kind']:<5} {r['id']:>5}  {r['name']:<{name_w}}  {r['from_bus']:>6} -> "
            f"{r['to_bus']:<6} {r['loading_pct']:>8.2f} %"
        )
    return out


def format_table(feeder: Feeder, result: HelmResult, scale: float, elapsed_s: float) -> str:
    """Readable table of bus voltages plus a summary (min/max, convergence, coefficients)."""
    rows = voltage_rows(feeder, result, scale)
    name_w = max([4] + [len(r["name"]) for r in rows])
    head = (
        f"{'bus':>6}  {'name':<{name_w}}  {'vn_kv':>7}  {'p_kw':>9}  {'q_kvar':>9}  "
        f"{'|V| pu':>9}  {'angle deg':>10}"
    )
    lines = [
        f"feeder {feeder.name!r}: {feeder.n_bus} buses, {len(feeder.lines)} lines, "
        f"{len(feeder.trafos)} trafos, loads x{scale:g}",
        head,
        "-" * len(head),
    ]
    for r in rows:
        lines.append(
            f"{r['bus_id']:>6}  {r['name']:<{name_w}}  {r['vn_kv']:>7.3f}  {r['p_kw']:>9.3f}  "
            f"{r['q_kvar']:>9.3f}  {r['vm_pu']:>9.6f}  {r['va_degree']:>10.4f}"
        )
    lines.append("-" * len(head))
    converged = bool(result.converged[0])
    if converged:
        vm = result.vm_pu[0]
        i_min, i_max = int(np.argmin(vm)), int(np.argmax(vm))
        lines.append(
            f"min |V| = {vm[i_min]:.6f} pu at bus {feeder.bus_ids[i_min]}, "
            f"max |V| = {vm[i_max]:.6f} pu at bus {feeder.bus_ids[i_max]}"
        )
        lines += format_most_loaded(branch_rows(feeder, result))
    else:
        lines.append("no operable solution (voltage collapse): voltages are NaN")
    lines.append(
        f"converged: {converged}, coefficients used: {result.n_coefficients}, "
        f"solve time: {elapsed_s * 1e3:.2f} ms"
    )
    return "\n".join(lines)


def write_rows(
    path: Path, rows: list[dict[str, Any]], meta: dict[str, Any],
    branches: list[dict[str, Any]] | None = None,
) -> None:
    """CSV (one row per bus) or JSON ({meta, buses, branches}) by suffix."""
    if path.suffix.lower() == ".json":
        doc = {**meta, "buses": rows, "branches": branches or []}
        path.write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
        return
    if path.suffix.lower() != ".csv":
        raise ValueError(f"--out {str(path)!r}: suffix must be .csv or .json")
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def _run_loadflow(args: argparse.Namespace) -> int:
    if not (np.isfinite(args.scale) and args.scale >= 0):
        raise ValueError(f"--scale must be a finite number >= 0, got {args.scale}")
    feeder = resolve_feeder(args.feeder)
    p, q = feeder.p_kw * args.scale, feeder.q_kvar * args.scale
    solve(feeder, p, q, tol_pu=args.tol, max_coefficients=args.max_coefficients)  # warm caches
    start = time.perf_counter()
    result = solve(feeder, p, q, tol_pu=args.tol, max_coefficients=args.max_coefficients)
    elapsed = time.perf_counter() - start
    print(format_table(feeder, result, args.scale, elapsed))
    if args.out:
        meta = {
            "feeder": feeder.name,
            "scale": args.scale,
            "converged": bool(result.converged[0]),
            "n_coefficients": result.n_coefficients,
        }
        write_rows(Path(args.out), voltage_rows(feeder, result, args.scale), meta,
                   branch_rows(feeder, result))
        print(f"wrote {args.out}")
    if args.save_feeder:
        save_feeder(feeder, args.save_feeder)
        print(f"wrote feeder file {args.save_feeder}")
    return 0 if result.converged[0] else 3


def add_commands(subparsers: Any) -> None:
    """Register ``loadflow`` with the ``gridshare`` command."""
    parser = subparsers.add_parser(
        "loadflow",
        help="HELM load flow of a feeder: bus voltages and branch loadings as a table",
        description=(
            "Solve the load flow of a built-in feeder (by name) or a feeder file (.json/.yaml, "
            "see docs/feeder-format.md) with HELM and print the bus voltages and the most "
            "loaded branches. Exit code 3 when there is no operable solution (voltage collapse)."
        ),
    )
    parser.add_argument("--feeder", required=True, help="built-in feeder name or feeder file")
    parser.add_argument(
        "--scale", type=float, default=1.0, help="factor on every bus load (default 1)"
    )
    parser.add_argument("--out", help="write the voltages to FILE (.csv or .json)")
    parser.add_argument("--save-feeder", help="also write the feeder to FILE (.json/.yaml)")
    parser.add_argument(
        "--tol", type=float, default=DEFAULT_TOL_PU, help="convergence tolerance, pu"
    )
    parser.add_argument(
        "--max-coefficients", type=int, default=DEFAULT_MAX_COEFFICIENTS,
        help="series coefficients before declaring voltage collapse",
    )
    parser.set_defaults(func=_run_loadflow)
