"""``paper-test-feeder``: the OCM paper's Fig. 6 test feeder (Rao et al. 2021, section 3).

Five 0.4 kV buses on one radial branch of NAYY 4x150 SE cable::

    Bus00 (slack, 1.0 pu) --450 m-- Bus01 UL01 --100 m-- Bus02 CS01 --100 m-- Bus03 CS02
          --100 m-- Bus04 UL02

Only loads, no PV (as in the paper). UL01 lumps a residential street of 100 households
(400 MWh/a), UL02 a group of 6 households (24 MWh/a); the charging stations CS01 (nearer the
transformer) and CS02 are rated 0..22 kW. The long first section makes UL01's evening peak alone
(even with UL02 off) pull the far end below 0.95 pu (the paper's highlighted region of Fig. 7),
while during the day the feeder holds 0.95 pu with both stations off but not with both at 22 kW,
so the stations' bands bind at 0.95 pu. The transformer is ideal: Bus00 is the LV busbar held
at 1.0 pu.
"""

from __future__ import annotations

import pandapower as pp

from capacity.feeders._case import FeederCase, add_customer, add_flexibility
from capacity.flexibility import Flexibility, FlexibilityKind
from capacity.profiles import LOAD_POWER_FACTOR, Customer

NAME = "paper-test-feeder"
V_SLACK_PU = 1.0
CABLE = "NAYY 4x150 SE"
SECTION_LENGTHS_M = (450.0, 100.0, 100.0, 100.0)
"""Bus00-Bus01, Bus01-Bus02, Bus02-Bus03, Bus03-Bus04."""
HOUSEHOLD_KWH = 4000.0

CUSTOMERS = (
    Customer("UL01", 1, annual_kwh=100 * HOUSEHOLD_KWH, n_households=100),
    Customer("UL02", 4, annual_kwh=6 * HOUSEHOLD_KWH, n_households=6),
)
FLEXIBILITIES = (
    Flexibility("CS01", 2, 0.0, 22.0, FlexibilityKind.CHARGING_STATION),
    Flexibility("CS02", 3, 0.0, 22.0, FlexibilityKind.CHARGING_STATION),
)


def build_net() -> pp.pandapowerNet:
    """The pandapower net of Fig. 6 (bus indices 0..4 = Bus00..Bus04)."""
    net = pp.create_empty_network(name=NAME)
    for i in range(5):
        pp.create_bus(net, vn_kv=0.4, name=f"Bus{i:02d}", index=i)
    pp.create_ext_grid(net, 0, vm_pu=V_SLACK_PU, va_degree=0.0, name="transformer LV busbar")
    for i, length_m in enumerate(SECTION_LENGTHS_M):
        pp.create_line(net, i, i + 1, length_m / 1000.0, CABLE, name=f"L{i}{i + 1}")
    for customer in CUSTOMERS:
        add_customer(net, customer, LOAD_POWER_FACTOR)
    for flex in FLEXIBILITIES:
        add_flexibility(net, flex)
    return net


CASE = FeederCase(
    name=NAME,
    description="OCM paper Fig. 6: 5 buses on one branch, UL01, CS01, CS02, UL02 (loads only)",
    build=build_net,
    v_slack_pu=V_SLACK_PU,
    flexibilities=FLEXIBILITIES,
    customers=CUSTOMERS,
    default_date="2026-03-18",
)
