"""The project's own feeder file format (JSON or YAML), documented in docs/feeder-format.md.

``save_feeder(feeder, path)`` writes, ``read_feeder(path)`` reads; the format follows the file
suffix (``.json``, ``.yaml`` / ``.yml``). ``feeder_to_dict`` / ``feeder_from_dict`` convert to and
from plain data. Floats are written with their shortest exact representation, so a round trip
gives an identical feeder (and identical load-flow results). Unknown or missing keys are errors
that name the offending entry.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from capacity.flexibility import Flexibility, FlexibilityKind
from capacity.grid import Feeder, LineTable, ShuntTable, Slack, TrafoTable

FORMAT_NAME = "gridshare-feeder"
FORMAT_VERSION = 1

_BUS_KEYS = {"id": None, "vn_kv": None, "name": "", "p_kw": 0.0, "q_kvar": 0.0}
_LINE_KEYS = {
    "id": None, "name": "", "from_bus": None, "to_bus": None, "length_km": None,
    "r_ohm_per_km": None, "x_ohm_per_km": None, "c_nf_per_km": 0.0, "g_us_per_km": 0.0,
    "parallel": 1, "max_i_ka": math.nan, "df": 1.0,
}
_TRAFO_KEYS = {
    "id": None, "name": "", "hv_bus": None, "lv_bus": None, "sn_mva": None, "vn_hv_kv": None,
    "vn_lv_kv": None, "vk_percent": None, "vkr_percent": None, "pfe_kw": 0.0,
    "i0_percent": 0.0, "shift_degree": 0.0, "parallel": 1,
    "leakage_resistance_ratio_hv": 0.5, "leakage_reactance_ratio_hv": 0.5, "df": 1.0,
    "tap": None,
}
_TAP_KEYS = {
    "side": None, "changer_type": "ratio", "pos": None, "neutral": 0.0,
    "step_percent": None, "step_degree": None,
}
_SHUNT_KEYS = {"bus": None, "p_kw": 0.0, "q_kvar": 0.0}
_SLACK_KEYS = {"bus": None, "vm_pu": 1.0, "va_degree": 0.0}
_FLEX_KEYS = {"name": None, "bus": None, "p_low_kw": None, "p_high_kw": None, "kind": "other"}
_OPTIONAL_WITHOUT_DEFAULT = ("id", "tap", "step_percent", "step_degree")
"""Keys whose default None means 'not given' rather than 'required'."""
_TOP_KEYS = {
    "format", "version", "name", "f_hz", "buses", "slack", "lines", "trafos", "shunts",
    "bus_links", "flexibilities",
}


def _num(x: float) -> float | None:
    """A float for the file; NaN ('not set') becomes null."""
    x = float(x)
    return None if math.isnan(x) else x


def _int_or_float(x: float) -> int | float:
    return int(x) if float(x).is_integer() else float(x)


def feeder_to_dict(feeder: Feeder) -> dict[str, Any]:
    """Plain-data form of ``feeder`` (the file content)."""
    buses = [
        {"id": int(b), "vn_kv": float(v), "name": n, "p_kw": float(p), "q_kvar": float(q)}
        for b, v, n, p, q in zip(
            feeder.bus_ids, feeder.bus_vn_kv, feeder.bus_names, feeder.p_kw, feeder.q_kvar,
            strict=True,
        )
    ]
    ln = feeder.lines
    lines = [
        {
            "id": int(ln.ids[i]), "name": ln.names[i], "from_bus": int(ln.from_bus[i]),
            "to_bus": int(ln.to_bus[i]), "length_km": float(ln.length_km[i]),
            "r_ohm_per_km": float(ln.r_ohm_per_km[i]), "x_ohm_per_km": float(ln.x_ohm_per_km[i]),
            "c_nf_per_km": float(ln.c_nf_per_km[i]), "g_us_per_km": float(ln.g_us_per_km[i]),
            "parallel": int(ln.parallel[i]), "max_i_ka": _num(ln.max_i_ka[i]),
            "df": float(ln.df[i]),
        }
        for i in range(len(ln))
    ]
    tr = feeder.trafos
    trafos = []
    for i in range(len(tr)):
        entry: dict[str, Any] = {
            "id": int(tr.ids[i]), "name": tr.names[i], "hv_bus": int(tr.hv_bus[i]),
            "lv_bus": int(tr.lv_bus[i]),
            "sn_mva": float(tr.sn_mva[i]), "vn_hv_kv": float(tr.vn_hv_kv[i]),
            "vn_lv_kv": float(tr.vn_lv_kv[i]), "vk_percent": float(tr.vk_percent[i]),
            "vkr_percent": float(tr.vkr_percent[i]), "pfe_kw": float(tr.pfe_kw[i]),
            "i0_percent": float(tr.i0_percent[i]), "shift_degree": float(tr.shift_degree[i]),
            "parallel": int(tr.parallel[i]),
            "leakage_resistance_ratio_hv": float(tr.leakage_resistance_ratio_hv[i]),
            "leakage_reactance_ratio_hv": float(tr.leakage_reactance_ratio_hv[i]),
            "df": float(tr.df[i]),
        }
        if tr.tap_side[i] and tr.tap_changer_type[i] and not math.isnan(tr.tap_pos[i]):
            entry["tap"] = {
                "side": tr.tap_side[i], "changer_type": tr.tap_changer_type[i],
                "pos": _int_or_float(tr.tap_pos[i]),
                "neutral": _num(tr.tap_neutral[i]),
                "step_percent": _num(tr.tap_step_percent[i]),
                "step_degree": _num(tr.tap_step_degree[i]),
            }
        trafos.append(entry)
    sh = feeder.shunts
    shunts = [
        {"bus": int(sh.bus[i]), "p_kw": float(sh.p_kw[i]), "q_kvar": float(sh.q_kvar[i])}
        for i in range(len(sh))
    ]
    flexibilities = [
        {"name": f.name, "bus": int(f.bus_id), "p_low_kw": float(f.p_low_kw),
         "p_high_kw": float(f.p_high_kw), "kind": FlexibilityKind(f.kind).value}
        for f in feeder.flexibilities
    ]
    return {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        "name": feeder.name,
        "f_hz": float(feeder.f_hz),
        "slack": {
            "bus": int(feeder.slack.bus_id), "vm_pu": float(feeder.slack.vm_pu),
            "va_degree": float(feeder.slack.va_degree),
        },
        "buses": buses,
        "lines": lines,
        "trafos": trafos,
        "shunts": shunts,
        "bus_links": [[int(a), int(b)] for a, b in feeder.bus_links.tolist()],
        "flexibilities": flexibilities,
    }


def _entries(data: Mapping[str, Any], key: str) -> list[Any]:
    value = data.get(key, [])
    if value is None:
        return []
    if not isinstance(value, list):
        raise ValueError(f"feeder file: {key!r} must be a list")
    return value


def _record(entry: Any, spec: Mapping[str, Any], where: str) -> dict[str, Any]:
    """Fill defaults, reject unknown keys, require keys without default (None)."""
    if not isinstance(entry, Mapping):
        raise ValueError(f"feeder file: {where} must be a mapping, got {type(entry).__name__}")
    unknown = sorted(set(entry) - set(spec))
    if unknown:
        raise ValueError(f"feeder file: {where} has unknown key(s) {unknown}")
    out = {}
    for k, default in spec.items():
        if k in entry:
            out[k] = entry[k]
        elif default is None and k not in _OPTIONAL_WITHOUT_DEFAULT:
            raise ValueError(f"feeder file: {where} misses required key {k!r}")
        else:
            out[k] = default
    return out


def _float(value: Any, where: str) -> float:
    if value is None:
        return math.nan
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"feeder file: {where} must be a number, got {value!r}")
    return float(value)


def _column(records: list[dict[str, Any]], key: str, where: str) -> np.ndarray:
    return np.array([_float(r[key], f"{where}[{i}].{key}") for i, r in enumerate(records)])


def _check_header(data: Any) -> None:
    """Top level: a mapping with the right format, version and only known keys."""
    if not isinstance(data, Mapping):
        raise ValueError("feeder file: top level must be a mapping")
    if data.get("format") != FORMAT_NAME:
        raise ValueError(f"feeder file: 'format' must be {FORMAT_NAME!r}")
    if data.get("version") != FORMAT_VERSION:
        raise ValueError(f"feeder file: unsupported version {data.get('version')!r}")
    unknown = sorted(set(data) - _TOP_KEYS)
    if unknown:
        raise ValueError(f"feeder file: unknown top-level key(s) {unknown}")


def _records(data: Mapping[str, Any], key: str, spec: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The entries of list ``key``, each checked against ``spec`` (defaults filled in)."""
    return [_record(x, spec, f"{key}[{i}]") for i, x in enumerate(_entries(data, key))]


def _ids(records: list[dict[str, Any]], where: str) -> np.ndarray:
    """Element ids: the ``id`` key, default the entry's position in the list."""
    return np.array([
        i if r["id"] is None else _float(r["id"], f"{where}[{i}].id")
        for i, r in enumerate(records)
    ])


def _line_table(lines: list[dict[str, Any]]) -> LineTable:
    if not lines:
        return LineTable.empty()
    return LineTable(
        from_bus=_column(lines, "from_bus", "lines"), to_bus=_column(lines, "to_bus", "lines"),
        length_km=_column(lines, "length_km", "lines"),
        r_ohm_per_km=_column(lines, "r_ohm_per_km", "lines"),
        x_ohm_per_km=_column(lines, "x_ohm_per_km", "lines"),
        c_nf_per_km=_column(lines, "c_nf_per_km", "lines"),
        g_us_per_km=_column(lines, "g_us_per_km", "lines"),
        parallel=_column(lines, "parallel", "lines"),
        names=tuple(str(x["name"]) for x in lines),
        max_i_ka=_column(lines, "max_i_ka", "lines"),
        df=_column(lines, "df", "lines"),
        ids=_ids(lines, "lines"),
    )


def _trafo_table(trafos: list[dict[str, Any]]) -> TrafoTable:
    if not trafos:
        return TrafoTable.empty()
    taps = [
        _record(t["tap"], _TAP_KEYS, f"trafos[{i}].tap") if t["tap"] is not None else None
        for i, t in enumerate(trafos)
    ]

    def tap_value(key: str, default: float) -> np.ndarray:
        return np.array(
            [default if t is None else _float(t[key], f"trafos[{i}].tap.{key}")
             for i, t in enumerate(taps)]
        )

    return TrafoTable(
        hv_bus=_column(trafos, "hv_bus", "trafos"), lv_bus=_column(trafos, "lv_bus", "trafos"),
        sn_mva=_column(trafos, "sn_mva", "trafos"),
        vn_hv_kv=_column(trafos, "vn_hv_kv", "trafos"),
        vn_lv_kv=_column(trafos, "vn_lv_kv", "trafos"),
        vk_percent=_column(trafos, "vk_percent", "trafos"),
        vkr_percent=_column(trafos, "vkr_percent", "trafos"),
        pfe_kw=_column(trafos, "pfe_kw", "trafos"),
        i0_percent=_column(trafos, "i0_percent", "trafos"),
        shift_degree=_column(trafos, "shift_degree", "trafos"),
        tap_side=tuple("" if t is None else str(t["side"]) for t in taps),
        tap_changer_type=tuple("" if t is None else str(t["changer_type"]) for t in taps),
        tap_pos=tap_value("pos", math.nan),
        tap_neutral=tap_value("neutral", math.nan),
        tap_step_percent=tap_value("step_percent", math.nan),
        tap_step_degree=tap_value("step_degree", math.nan),
        parallel=_column(trafos, "parallel", "trafos"),
        leakage_resistance_ratio_hv=_column(trafos, "leakage_resistance_ratio_hv", "trafos"),
        leakage_reactance_ratio_hv=_column(trafos, "leakage_reactance_ratio_hv", "trafos"),
        names=tuple(str(x["name"]) for x in trafos),
        df=_column(trafos, "df", "trafos"),
        ids=_ids(trafos, "trafos"),
    )


def _shunt_table(shunts: list[dict[str, Any]]) -> ShuntTable:
    if not shunts:
        return ShuntTable.empty()
    return ShuntTable(
        bus=_column(shunts, "bus", "shunts"), p_kw=_column(shunts, "p_kw", "shunts"),
        q_kvar=_column(shunts, "q_kvar", "shunts"),
    )


def _bus_links(data: Mapping[str, Any]) -> np.ndarray:
    links = data.get("bus_links") or []
    if not isinstance(links, list) or any(
        not isinstance(x, list | tuple) or len(x) != 2 for x in links
    ):
        raise ValueError("feeder file: 'bus_links' must be a list of [bus, bus] pairs")
    return np.array(links, dtype=float).reshape(-1, 2)


def _flexibilities(flexes: list[dict[str, Any]]) -> tuple[Flexibility, ...]:
    return tuple(
        Flexibility(
            name=str(f["name"]), bus_id=int(_float(f["bus"], f"flexibilities[{i}].bus")),
            p_low_kw=_float(f["p_low_kw"], f"flexibilities[{i}].p_low_kw"),
            p_high_kw=_float(f["p_high_kw"], f"flexibilities[{i}].p_high_kw"),
            kind=FlexibilityKind(f["kind"]),
        )
        for i, f in enumerate(flexes)
    )


def feeder_from_dict(data: Mapping[str, Any]) -> Feeder:
    """Build a ``Feeder`` from the plain-data form (see docs/feeder-format.md)."""
    _check_header(data)
    buses = _records(data, "buses", _BUS_KEYS)
    if not buses:
        raise ValueError("feeder file: 'buses' must list at least one bus")
    if "slack" not in data:
        raise ValueError("no slack: feeder file has no 'slack' entry")
    slack_rec = _record(data["slack"], _SLACK_KEYS, "slack")
    lines = _line_table(_records(data, "lines", _LINE_KEYS))
    trafos = _trafo_table(_records(data, "trafos", _TRAFO_KEYS))
    shunts = _shunt_table(_records(data, "shunts", _SHUNT_KEYS))
    flexibilities = _flexibilities(_records(data, "flexibilities", _FLEX_KEYS))
    return Feeder(
        name=str(data.get("name", "")),
        bus_ids=_column(buses, "id", "buses"),
        bus_vn_kv=_column(buses, "vn_kv", "buses"),
        bus_names=tuple(str(b["name"]) for b in buses),
        slack=Slack(
            bus_id=int(_float(slack_rec["bus"], "slack.bus")),
            vm_pu=_float(slack_rec["vm_pu"], "slack.vm_pu"),
            va_degree=_float(slack_rec["va_degree"], "slack.va_degree"),
        ),
        lines=lines,
        trafos=trafos,
        shunts=shunts,
        p_kw=_column(buses, "p_kw", "buses"),
        q_kvar=_column(buses, "q_kvar", "buses"),
        bus_links=_bus_links(data),
        flexibilities=flexibilities,
        f_hz=_float(data.get("f_hz", 50.0), "f_hz"),
    )


def _file_kind(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix == ".json":
        return "json"
    if suffix in (".yaml", ".yml"):
        return "yaml"
    raise ValueError(f"feeder file {str(path)!r}: suffix must be .json, .yaml or .yml")


def save_feeder(feeder: Feeder, path: str | Path) -> Path:
    """Write ``feeder`` to ``path`` (JSON or YAML by suffix); returns the path."""
    path = Path(path)
    data = feeder_to_dict(feeder)
    if _file_kind(path) == "json":
        text = json.dumps(data, indent=1, allow_nan=False) + "\n"
    else:
        text = yaml.safe_dump(data, sort_keys=False, default_flow_style=None, width=100)
    path.write_text(text, encoding="utf-8")
    return path


def read_feeder(path: str | Path) -> Feeder:
    """Read a feeder file (JSON or YAML by suffix)."""
    path = Path(path)
    kind = _file_kind(path)
    text = path.read_text(encoding="utf-8")
    try:
        data = json.loads(text) if kind == "json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise ValueError(f"feeder file {str(path)!r} is not valid {kind}: {exc}") from exc
    return feeder_from_dict(data)
