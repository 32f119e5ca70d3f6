"""The description of a built-in feeder: network builder, customers, flexibilities, slack."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import pandapower as pp

from capacity.flexibility import Flexibility
from capacity.profiles import DEFAULT_SITE, Customer, Site

PV_SUFFIX = " PV"
"""A customer's PV is the pandapower sgen named ``customer.name + PV_SUFFIX``."""


@dataclass(frozen=True)
class FeederCase:
    """A built-in feeder: how to build its pandapower net and what is connected where.

    In the net, every customer is one ``load`` named after it (base case: its annual mean power
    at cos phi 0.95), its PV one ``sgen`` named ``"<name> PV"`` (base case 0 kW) and every
    flexibility one ``load`` named after it (base case 0 kW). ``v_slack_pu`` is the slack
    (ext_grid) voltage magnitude, also set in the net. ``storage_energy_kwh`` gives the usable
    energy (kWh) of every flexibility that stores energy (the community battery), by name.
    """

    name: str
    description: str
    build: Callable[[], pp.pandapowerNet]
    v_slack_pu: float
    flexibilities: tuple[Flexibility, ...]
    customers: tuple[Customer, ...]
    default_date: str
    site: Site = DEFAULT_SITE
    storage_energy_kwh: Mapping[str, float] = field(default_factory=dict)


def add_customer(net: pp.pandapowerNet, customer: Customer, pf: float) -> None:
    """Add a customer's load (annual mean power) and PV sgen (0 kW) to ``net``."""
    p_mw = customer.annual_kwh / 8760.0 / 1000.0
    q_mvar = p_mw * ((1.0 / pf**2) - 1.0) ** 0.5
    pp.create_load(net, customer.bus_id, p_mw=p_mw, q_mvar=q_mvar, name=customer.name)
    add_pv(net, customer)


def add_pv(net: pp.pandapowerNet, customer: Customer) -> None:
    """Add a customer's PV as an sgen (0 kW in the base case, rated ``pv_kwp``), if it has PV."""
    if customer.pv_kwp > 0:
        pp.create_sgen(
            net,
            customer.bus_id,
            p_mw=0.0,
            q_mvar=0.0,
            sn_mva=customer.pv_kwp / 1000.0,
            name=customer.name + PV_SUFFIX,
            type="PV",
        )


def add_flexibility(net: pp.pandapowerNet, flex: Flexibility) -> None:
    """Add a flexibility as a ``load`` at 0 kW (set its power to operate it)."""
    pp.create_load(net, flex.bus_id, p_mw=0.0, q_mvar=0.0, name=flex.name)
