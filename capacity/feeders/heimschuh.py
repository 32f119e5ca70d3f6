"""``heimschuh-like``: a SYNTHETIC feeder inspired by the Heimschuh pilot site (OCM paper, sec. 4).

It is not the real Heimschuh grid (whose data are not public): the topology, cables, customers
and PV sizes are invented to reproduce the situation the paper describes: 21 customers with about
200 kWp of PV on one LV feeder at its capacity limit, a 100 kWh community battery (CB, -50..+50
kW) and two charging stations (CS01, CS02, 0..22 kW), transformer voltage reference 1.01 pu.

Topology (bus indices in brackets)::

    MV [0] 20 kV slack 1.01 pu
     | 0.25 MVA 20/0.4 kV (pandapower std type, Yzn5, vk 6 %, vkr 1.44 %)
    LV busbar [1]
     |-- farm branch: 80 m NAYY 4x150 SE to cabinet KA [2]; three farms with 45 kWp barn roofs
     |   on NAYY 4x50 SE service lines [3..5]
     `-- village street: cabinets K1..K8 [6..13] every 100 m (K1..K4 NAYY 4x150 SE, K5..K8 an
         older NAYY 4x50 SE section); 18 customers (single-family, two-family and blocks of flats,
         56 households, 66 kWp) on 15..40 m NAYY 4x50 SE service lines [14..31].
         CS01 at K3 [8], CB at K5 [10], CS02 at the street end K8 [13].

Why the properties of the paper's Fig. 10/11 appear: at midday the farms' and the street's PV
lift the street end close to 1.05 pu, so the battery may not inject its full 50 kW there (its
P_min binds at 1.05 pu); in the evening the flats at the weak end of the street pull it to about
0.95 pu, so the stations can only charge if the battery discharges, and at the evening peak the
battery must discharge even with the stations off (the highlighted region of Fig. 11).
"""

from __future__ import annotations

import pandapower as pp

from capacity.feeders._case import FeederCase, add_customer, add_flexibility
from capacity.flexibility import Flexibility, FlexibilityKind
from capacity.profiles import LOAD_POWER_FACTOR, Customer

NAME = "heimschuh-like"
V_SLACK_PU = 1.01
TRAFO_TYPE = "0.25 MVA 20/0.4 kV"
MAINS_STRONG = "NAYY 4x150 SE"
MAINS_WEAK = "NAYY 4x50 SE"
SERVICE = "NAYY 4x50 SE"
HOUSEHOLD_KWH = 4000.0
FARM_BRANCH_M = 80.0
STREET_SECTION_M = (100.0,) * 8
"""LV busbar-K1, K1-K2, ..., K7-K8."""
STREET_STRONG_SECTIONS = 4
"""The first sections are NAYY 4x150 SE, the rest NAYY 4x50 SE."""

MV, LV, KA = 0, 1, 2
FARM_BUSES = (3, 4, 5)
K = {i: 5 + i for i in range(1, 9)}  # cabinets K1..K8 -> buses 6..13

# (name, cabinet or "KA", service length m, households, kWp)
_CUSTOMER_TABLE: tuple[tuple[str, str | int, float, int, float], ...] = (
    ("H01", 1, 20.0, 1, 5.0),
    ("H02", 1, 35.0, 2, 4.0),
    ("H03", 2, 15.0, 1, 3.0),
    ("H04", 2, 30.0, 6, 0.0),
    ("H05", 3, 25.0, 1, 5.0),
    ("H06", 3, 40.0, 2, 4.0),
    ("H07", 4, 20.0, 1, 3.0),
    ("H08", 4, 30.0, 12, 6.0),
    ("H09", 5, 15.0, 1, 4.0),
    ("H10", 5, 35.0, 1, 3.0),
    ("H11", 6, 20.0, 2, 5.0),
    ("H12", 6, 25.0, 10, 0.0),
    ("H13", 7, 15.0, 1, 4.0),
    ("H14", 7, 30.0, 1, 5.0),
    ("H15", 7, 40.0, 2, 3.0),
    ("H16", 8, 20.0, 1, 4.0),
    ("H17", 8, 25.0, 12, 5.0),
    ("H18", 8, 35.0, 1, 3.0),
    ("Farm1", "KA", 30.0, 2, 45.0),
    ("Farm2", "KA", 50.0, 2, 45.0),
    ("Farm3", "KA", 60.0, 2, 45.0),
)
_FIRST_STREET_CUSTOMER_BUS = 14


def _customer_buses() -> list[int]:
    buses, street_bus = [], _FIRST_STREET_CUSTOMER_BUS
    farm_iter = iter(FARM_BUSES)
    for _, cabinet, _, _, _ in _CUSTOMER_TABLE:
        if cabinet == "KA":
            buses.append(next(farm_iter))
        else:
            buses.append(street_bus)
            street_bus += 1
    return buses


CUSTOMERS = tuple(
    Customer(name, bus, annual_kwh=n * HOUSEHOLD_KWH, pv_kwp=kwp, n_households=n)
    for (name, _, _, n, kwp), bus in zip(_CUSTOMER_TABLE, _customer_buses(), strict=True)
)
FLEXIBILITIES = (
    Flexibility("CB", K[5], -50.0, 50.0, FlexibilityKind.COMMUNITY_BATTERY),
    Flexibility("CS01", K[3], 0.0, 22.0, FlexibilityKind.CHARGING_STATION),
    Flexibility("CS02", K[8], 0.0, 22.0, FlexibilityKind.CHARGING_STATION),
)
BATTERY_ENERGY_KWH = 100.0
"""Usable energy of the community battery (kWh); the feeder model itself only needs its power."""


def build_net() -> pp.pandapowerNet:
    """The synthetic heimschuh-like pandapower net (bus indices as in the module docstring)."""
    net = pp.create_empty_network(name=NAME)
    pp.create_bus(net, vn_kv=20.0, name="MV", index=MV)
    pp.create_bus(net, vn_kv=0.4, name="LV busbar", index=LV)
    pp.create_bus(net, vn_kv=0.4, name="KA", index=KA)
    pp.create_ext_grid(net, MV, vm_pu=V_SLACK_PU, va_degree=0.0, name="MV grid")
    pp.create_transformer(net, MV, LV, std_type=TRAFO_TYPE, name="T1")
    pp.create_line(net, LV, KA, FARM_BRANCH_M / 1000.0, MAINS_STRONG, name="LV-KA")
    for i in range(1, 9):
        pp.create_bus(net, vn_kv=0.4, name=f"K{i}", index=K[i])
    previous = LV
    for i, length_m in enumerate(STREET_SECTION_M, start=1):
        cable = MAINS_STRONG if i <= STREET_STRONG_SECTIONS else MAINS_WEAK
        pp.create_line(net, previous, K[i], length_m / 1000.0, cable, name=f"street {i}")
        previous = K[i]
    for (name, cabinet, length_m, _, _), customer in zip(_CUSTOMER_TABLE, CUSTOMERS, strict=True):
        pp.create_bus(net, vn_kv=0.4, name=name, index=customer.bus_id)
        parent = KA if cabinet == "KA" else K[int(cabinet)]
        pp.create_line(net, parent, customer.bus_id, length_m / 1000.0, SERVICE, name=f"{name} svc")
    for customer in CUSTOMERS:
        add_customer(net, customer, LOAD_POWER_FACTOR)
    for flex in FLEXIBILITIES:
        add_flexibility(net, flex)
    return net


CASE = FeederCase(
    name=NAME,
    description="synthetic Heimschuh-like feeder: 21 customers, 201 kWp PV, 100 kWh CB, 2 CS",
    build=build_net,
    v_slack_pu=V_SLACK_PU,
    flexibilities=FLEXIBILITIES,
    customers=CUSTOMERS,
    default_date="2026-03-18",
    storage_energy_kwh={"CB": BATTERY_ENERGY_KWH},
)
