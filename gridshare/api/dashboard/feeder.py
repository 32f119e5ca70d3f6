"""The feeder as a graph for the dashboard: buses, lines, transformers and bus-bus switches, laid
out as a tree from the slack bus (the built-in feeders carry no geodata).

Layout: breadth-first from the slack over every branch; a bus's ``x`` is its depth (branches
from the slack), its ``y`` its position among the leaves of the tree (a parent sits at the
middle of its children). Coordinates are in abstract units (0..1 on both axes); the page scales
them into its SVG. Computed once per feeder name.
"""

from __future__ import annotations

import functools
from collections import deque
from typing import Any

from oracle.state import feeder_model


def _branches(feeder: Any) -> list[dict[str, Any]]:
    """Lines, transformers and closed bus-bus switches as ``{kind, id, name, from, to}``."""
    out: list[dict[str, Any]] = []
    lines, trafos = feeder.lines, feeder.trafos
    for k, (a, b) in enumerate(zip(lines.from_bus, lines.to_bus, strict=True)):
        name = lines.names[k] if k < len(lines.names) else f"line {k}"
        out.append({"kind": "line", "id": int(feeder.line_ids[k]), "name": str(name),
                    "from": int(a), "to": int(b),
                    "length_km": float(lines.length_km[k])})
    for k, (a, b) in enumerate(zip(trafos.hv_bus, trafos.lv_bus, strict=True)):
        name = trafos.names[k] if k < len(trafos.names) else f"trafo {k}"
        out.append({"kind": "trafo", "id": int(feeder.trafo_ids[k]), "name": str(name),
                    "from": int(a), "to": int(b), "sn_kva": float(trafos.sn_mva[k]) * 1000.0})
    links = feeder.bus_links if feeder.bus_links is not None else []
    for k, (a, b) in enumerate(links):
        out.append({"kind": "switch", "id": k, "name": f"switch {int(a)}-{int(b)}",
                    "from": int(a), "to": int(b)})
    return out


def _tree_layout(bus_ids: list[int], root: int, edges: list[tuple[int, int]]
                 ) -> tuple[dict[int, tuple[float, float]], int]:
    """(x, y) in 0..1 per bus (depth from ``root`` and leaf order, module docstring) and the
    number of leaves."""
    adj: dict[int, list[int]] = {b: [] for b in bus_ids}
    for a, b in edges:
        adj.setdefault(a, []).append(b)
        adj.setdefault(b, []).append(a)
    depth = {root: 0}
    children: dict[int, list[int]] = {b: [] for b in adj}
    queue = deque([root])
    while queue:
        u = queue.popleft()
        for v in sorted(adj[u]):
            if v not in depth:
                depth[v] = depth[u] + 1
                children[u].append(v)
                queue.append(v)
    for b in adj:  # islands (none on a valid feeder): hang them below the root
        if b not in depth:
            depth[b] = 1
            children[root].append(b)
    y: dict[int, float] = {}
    leaves = 0

    def place(u: int) -> None:
        nonlocal leaves
        for v in children[u]:
            place(v)
        if children[u]:
            y[u] = (y[children[u][0]] + y[children[u][-1]]) / 2
        else:
            y[u] = float(leaves)
            leaves += 1

    place(root)
    max_depth = max(depth.values()) or 1
    span = max(leaves - 1, 1)
    return {b: (depth[b] / max_depth, y[b] / span) for b in adj}, leaves


@functools.lru_cache(maxsize=8)
def feeder_graph(name: str) -> dict[str, Any]:
    """The feeder ``name`` as ``{name, slack_bus, buses: [{id, name, vn_kv, x, y, flex}],
    branches: [...], flexibilities: [{name, bus, kind, p_min_kw, p_max_kw}]}`` (kV, kW, kVA)."""
    feeder = feeder_model(name)
    bus_ids = [int(b) for b in feeder.bus_ids]
    branches = _branches(feeder)
    pos, n_leaves = _tree_layout(bus_ids, int(feeder.slack.bus_id),
                       [(b["from"], b["to"]) for b in branches])
    flex_at: dict[int, list[str]] = {}
    for f in feeder.flexibilities:
        flex_at.setdefault(int(f.bus_id), []).append(f.name)
    names = list(feeder.bus_names) or [f"bus {b}" for b in bus_ids]
    buses = [{"id": b, "name": str(names[i]), "vn_kv": float(feeder.bus_vn_kv[i]),
              "x": round(pos[b][0], 4), "y": round(pos[b][1], 4), "flex": flex_at.get(b, [])}
             for i, b in enumerate(bus_ids)]
    flex = [{"name": f.name, "bus": int(f.bus_id), "kind": f.kind.value,
             "p_min_kw": float(f.p_low_kw), "p_max_kw": float(f.p_high_kw)}
            for f in feeder.flexibilities]
    return {"name": name, "slack_bus": int(feeder.slack.bus_id), "n_leaves": n_leaves,
            "buses": buses,
            "branches": branches, "flexibilities": flex}
