"""Feeders from files (``--feeder-dir``): the project's format or pandapower JSON (docs/fleet.md).

* ``*.json`` with ``"format": "gridshare-feeder"``, ``*.yaml``, ``*.yml``: the project's feeder
  format (docs/feeder-format.md), flexibilities included.
* ``*.json`` written by ``pandapower.to_json``: the network via ``Feeder.from_pandapower``; the
  flexibilities are the in-service loads (charging stations) and storages (community batteries)
  whose ``controllable`` column is true, rated ``min_p_mw..max_p_mw``; they are set to 0 kW in the
  base case.

A file gives the network and a base case but no day: every bus whose base-case net consumption
``p_kw`` is positive becomes a household customer with ``p_kw x 8760 h`` per year (one household
per 4000 kWh, at least one), and the day profile (BDEW H25, ``capacity.profiles``) of
``FILE_DAY`` is drawn from ``SeedSequence([fleet seed, crc32(name)])``. A file carries no PV
data, so file feeders have no PV profile.

The client reads the files and ships their text (``FeederSource.text``): workers need no shared
file system.
"""

from __future__ import annotations

import json
import zlib
from pathlib import Path

import numpy as np
import pandapower as pp
import pandas as pd
import yaml

from capacity.feeder_io import feeder_from_dict
from capacity.flexibility import Flexibility, FlexibilityKind
from capacity.grid import Feeder
from capacity.profiles import Customer, build_day_profiles
from gridshare.fleet.model import FeederModel, make_model
from gridshare.units import mw_to_kw

FEEDER_SUFFIXES = (".json", ".yaml", ".yml")
HOUSEHOLD_KWH = 4000.0
HOURS_PER_YEAR = 8760.0
FILE_DAY = "2026-03-18"
"""The day of file feeders' profiles (the built-in feeders' default day)."""


def feeder_files(directory: Path) -> list[Path]:
    """The feeder files of ``directory`` by name (ValueError if none, or two share a name)."""
    if not directory.is_dir():
        raise ValueError(f"--feeder-dir {str(directory)!r} is not a directory")
    files = sorted(p for p in directory.iterdir() if p.suffix.lower() in FEEDER_SUFFIXES)
    if not files:
        raise ValueError(f"no feeder files ({', '.join(FEEDER_SUFFIXES)}) in {str(directory)!r}")
    stems = [p.stem for p in files]
    twice = sorted({s for s in stems if stems.count(s) > 1})
    if twice:
        raise ValueError(f"feeder files share a name: {twice}")
    return files


def _controllable(table: pd.DataFrame) -> pd.DataFrame:
    """In-service rows whose ``controllable`` column is true (none without that column)."""
    if "controllable" not in table.columns:
        return table.iloc[:0]
    mask = table["controllable"].fillna(False).astype(bool) & table["in_service"].astype(bool)
    return table[mask]


def _pandapower_feeder(text: str, name: str) -> Feeder:
    """A pandapower JSON net with its controllable loads and storages as flexibilities."""
    net = pp.from_json_string(text)
    flexes: list[Flexibility] = []
    for element, kind in (("load", FlexibilityKind.CHARGING_STATION),
                          ("storage", FlexibilityKind.COMMUNITY_BATTERY)):
        rows = _controllable(net[element])
        missing = {"min_p_mw", "max_p_mw"} - set(rows.columns)
        if len(rows) and missing:
            raise ValueError(f"controllable {element}s need {sorted(missing)} (rated range)")
        flexes += [Flexibility(str(r["name"] or f"{element}{i}"), int(r["bus"]),
                               mw_to_kw(float(r["min_p_mw"])), mw_to_kw(float(r["max_p_mw"])), kind)
                   for i, r in rows.iterrows()]
        net[element].loc[rows.index, ["p_mw", "q_mvar"]] = 0.0
    return Feeder.from_pandapower(net, name=name).with_flexibilities(flexes)


def parse_feeder(filename: str, text: str, name: str) -> Feeder:
    """The feeder of one file (ValueError naming the file when it cannot be read)."""
    suffix = Path(filename).suffix.lower()
    try:
        data = yaml.safe_load(text) if suffix in (".yaml", ".yml") else json.loads(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise ValueError(f"feeder file {filename!r} is not valid {suffix[1:]}: {exc}") from exc
    if isinstance(data, dict) and data.get("_class") == "pandapowerNet":
        return _pandapower_feeder(text, name)
    return feeder_from_dict(data)


def bus_customers(feeder: Feeder) -> tuple[Customer, ...]:
    """One household customer per bus with positive base-case consumption (module docstring)."""
    buses = np.flatnonzero(feeder.p_kw > 0)
    annual = feeder.p_kw[buses] * HOURS_PER_YEAR
    households = np.maximum(1, np.rint(annual / HOUSEHOLD_KWH)).astype(int)
    return tuple(Customer(f"bus-{int(feeder.bus_ids[i])}", int(feeder.bus_ids[i]), float(a),
                          n_households=int(n))
                 for i, a, n in zip(buses, annual, households, strict=True))


def build_from_file(name: str, filename: str, text: str, seed: int) -> FeederModel:
    """The fleet model of one feeder file (see module docstring)."""
    feeder = parse_feeder(filename, text, name)
    profile_seed = int(np.random.SeedSequence([seed, zlib.crc32(name.encode())])
                       .generate_state(1)[0])
    profiles = build_day_profiles(bus_customers(feeder), feeder.bus_ids, date=FILE_DAY,
                                  seed=profile_seed)
    return make_model(name, feeder, profiles)
