"""Built-in feeders, loadable by name, with their flexibilities and minute day profiles.

``load_feeder(name)`` converts the built-in pandapower net with ``Feeder.from_pandapower``;
``load_pandapower_net(name)`` gives the net itself (a fresh copy on every call) for comparisons
with ``pandapower.runpp``; ``day_profiles(name, seed)`` the uncontrollable net consumption per bus
for one day at 1-minute resolution (see ``capacity.profiles``); ``apply_minute`` writes one
minute (and optionally the flexibilities' powers) into a net. Details: docs/feeders.md.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import cache
from typing import TYPE_CHECKING

import pandapower as pp

from capacity.feeders import cigre_lv, heimschuh, paper_test
from capacity.feeders._case import PV_SUFFIX, FeederCase
from capacity.profiles import DayProfiles, build_day_profiles

if TYPE_CHECKING:
    from capacity.grid import Feeder

__all__ = [
    "FEEDER_NAMES",
    "FeederCase",
    "apply_minute",
    "day_profiles",
    "feeder_case",
    "load_feeder",
    "load_pandapower_net",
]

_CASES: dict[str, FeederCase] = {
    case.name: case for case in (paper_test.CASE, heimschuh.CASE, cigre_lv.CASE)
}
FEEDER_NAMES: tuple[str, ...] = tuple(_CASES)
"""The names ``load_feeder`` accepts."""


def feeder_case(name: str) -> FeederCase:
    """The description of built-in feeder ``name`` (customers, flexibilities, slack voltage)."""
    try:
        return _CASES[name]
    except (KeyError, TypeError):
        raise ValueError(
            f"unknown feeder {name!r}; known feeders: {', '.join(FEEDER_NAMES)}"
        ) from None


def load_pandapower_net(name: str) -> pp.pandapowerNet:
    """A fresh pandapower net of built-in feeder ``name`` (base case, see ``FeederCase``)."""
    return feeder_case(name).build()


def load_feeder(name: str) -> Feeder:
    """Built-in feeder ``name`` as the project's ``Feeder`` (``Feeder.from_pandapower``), with
    the case's flexibilities attached (``feeder.flexibilities``)."""
    from capacity.grid import Feeder  # imported late: the grid model is a sibling module

    case = feeder_case(name)
    return Feeder.from_pandapower(case.build()).with_flexibilities(case.flexibilities)


@cache
def _bus_ids(name: str) -> tuple[int, ...]:
    """``net.bus.index`` of a built-in feeder (= ``feeder.bus_ids``), built once per name."""
    return tuple(int(b) for b in feeder_case(name).build().bus.index)


def day_profiles(
    name: str,
    seed: int = 0,
    date: str | None = None,
    cloud_cover: float | None = None,
) -> DayProfiles:
    """One day of minute profiles (1440, n_bus) of feeder ``name``, in ``feeder.bus_ids`` order.

    ``p_kw``/``q_kvar`` are the uncontrollable net consumption per bus (load minus PV, kW/kvar,
    flexibilities not included). ``date`` defaults to the feeder's ``default_date``;
    ``cloud_cover`` in [0, 1], default drawn from the seed. Deterministic from ``seed``.
    """
    case = feeder_case(name)
    return build_day_profiles(
        case.customers,
        _bus_ids(case.name),
        date=case.default_date if date is None else date,
        seed=seed,
        cloud_cover=cloud_cover,
        site=case.site,
    )


def apply_minute(
    net: pp.pandapowerNet,
    profiles: DayProfiles,
    minute: int,
    flex_p_kw: Mapping[str, float] | None = None,
) -> pp.pandapowerNet:
    """Write minute ``minute`` of ``profiles`` into ``net`` (in place, returned for chaining).

    Customer loads (``load`` named after the customer) get ``load_kw``/``load_kvar``, PV sgens
    (``"<name> PV"``) get ``pv_kw`` at unity power factor, and every flexibility named in
    ``flex_p_kw`` gets that power (kW, consumption positive) at unity power factor.
    """
    if not 0 <= minute < profiles.p_kw.shape[0]:
        raise ValueError(f"minute {minute} outside 0..{profiles.p_kw.shape[0] - 1}")
    load_row = {name: i for i, name in zip(net.load.index, net.load.name, strict=True)}
    sgen_row = {name: i for i, name in zip(net.sgen.index, net.sgen.name, strict=True)}
    for j, customer in enumerate(profiles.customers):
        if customer.name not in load_row:
            raise ValueError(f"net has no load named {customer.name!r}")
        row = load_row[customer.name]
        net.load.at[row, "p_mw"] = profiles.load_kw[minute, j] / 1000.0
        net.load.at[row, "q_mvar"] = profiles.load_kvar[minute, j] / 1000.0
        pv_name = customer.name + PV_SUFFIX
        if customer.pv_kwp > 0:
            if pv_name not in sgen_row:
                raise ValueError(f"net has no sgen named {pv_name!r}")
            net.sgen.at[sgen_row[pv_name], "p_mw"] = profiles.pv_kw[minute, j] / 1000.0
            net.sgen.at[sgen_row[pv_name], "q_mvar"] = 0.0
    for flex_name, p_kw in (flex_p_kw or {}).items():
        if flex_name not in load_row:
            raise ValueError(f"net has no flexibility load named {flex_name!r}")
        net.load.at[load_row[flex_name], "p_mw"] = float(p_kw) / 1000.0
        net.load.at[load_row[flex_name], "q_mvar"] = 0.0
    return net
