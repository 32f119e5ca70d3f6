"""Seeded variants of the built-in feeders: a synthetic fleet of any size (docs/fleet.md).

Variant ``i`` of fleet seed ``K`` is built-in feeder ``FEEDER_NAMES[i % 3]`` (paper-test-feeder,
heimschuh-like, cigre-lv in turn), named ``<built-in>-<i:05d>``, with its own random stream
``SeedSequence([K, i])``. It does not depend on how many feeders the fleet has, so a larger run
repeats the smaller one's feeders. Drawn in this order:

* every line's length x U(0.8, 1.2) (cables of the same type, other distances);
* every customer's annual energy x U(0.8, 1.2) and, where it has PV, its kWp x U(0.5, 1.5)
  (rounded to 0.1 kWp);
* every charging station's rating 11 or 22 kW (equally likely); batteries stay as built;
* the seed of the day profile (``capacity.profiles.build_day_profiles``: loads, PV, clouds) on the
  built-in's default day.

Topology, cable types, transformers, buses of customers and flexibilities, and the slack voltage
are the built-in's.
"""

from __future__ import annotations

import copy
import dataclasses
import functools

import numpy as np
import pandapower as pp

from capacity.feeders import FEEDER_NAMES, feeder_case
from capacity.flexibility import Flexibility, FlexibilityKind
from capacity.grid import Feeder
from capacity.profiles import Customer, build_day_profiles
from gridshare.fleet.model import FeederModel, make_model

LINE_LENGTH_FACTOR = (0.8, 1.2)
ENERGY_FACTOR = (0.8, 1.2)
PV_FACTOR = (0.5, 1.5)
STATION_RATINGS_KW = (11.0, 22.0)
PROFILE_SEED_LIMIT = 2**31 - 1


def variant_name(index: int) -> str:
    """The name of variant ``index`` (e.g. ``heimschuh-like-00004``)."""
    if index < 0:
        raise ValueError(f"variant index must be >= 0, got {index}")
    return f"{FEEDER_NAMES[index % len(FEEDER_NAMES)]}-{index:05d}"


@functools.cache
def _built_net(name: str) -> pp.pandapowerNet:
    """The built-in's pandapower net, built once per process (building takes 0.3..0.5 s, a
    copy 0.02 s); never modified: variants work on copies."""
    return feeder_case(name).build()


def _customers(customers: tuple[Customer, ...], rng: np.random.Generator
               ) -> tuple[Customer, ...]:
    """Customers with scaled annual energy and PV (see module docstring)."""
    energy = rng.uniform(*ENERGY_FACTOR, size=len(customers))
    pv = rng.uniform(*PV_FACTOR, size=len(customers))
    return tuple(
        dataclasses.replace(c, annual_kwh=c.annual_kwh * e, pv_kwp=round(c.pv_kwp * f, 1))
        for c, e, f in zip(customers, energy, pv, strict=True)
    )


def _flexibilities(flexes: tuple[Flexibility, ...], rng: np.random.Generator
                   ) -> tuple[Flexibility, ...]:
    """Charging stations at a drawn rating (11 or 22 kW); other flexibilities unchanged."""
    ratings = rng.choice(STATION_RATINGS_KW, size=len(flexes))
    return tuple(
        dataclasses.replace(f, p_high_kw=float(r)) if f.kind == FlexibilityKind.CHARGING_STATION
        else f
        for f, r in zip(flexes, ratings, strict=True)
    )


def build_variant(index: int, seed: int) -> FeederModel:
    """Variant ``index`` of the fleet with seed ``seed`` (see module docstring)."""
    name = variant_name(index)
    case = feeder_case(FEEDER_NAMES[index % len(FEEDER_NAMES)])
    rng = np.random.default_rng(np.random.SeedSequence([seed, index]))
    net = copy.deepcopy(_built_net(case.name))
    lengths = net.line["length_km"].to_numpy(dtype=float)
    net.line["length_km"] = lengths * rng.uniform(*LINE_LENGTH_FACTOR, size=lengths.size)
    customers = _customers(case.customers, rng)
    flexes = _flexibilities(case.flexibilities, rng)
    profile_seed = int(rng.integers(PROFILE_SEED_LIMIT))
    feeder = Feeder.from_pandapower(net, name=name).with_flexibilities(flexes)
    profiles = build_day_profiles(customers, feeder.bus_ids, date=case.default_date,
                                  seed=profile_seed, site=case.site)
    return make_model(name, feeder, profiles)
