"""``cigre-lv``: pandapower's CIGRE LV benchmark network (``create_cigre_network_lv``), unchanged
in topology, lines, transformers and switches, with flexibilities and PV added for OCM.

- 44 buses: MV bus 0 with three closed bus-bus switches to the three MV/LV transformers' HV
  buses (residential R0, industrial I0, commercial C0; the switches are kept,
  ``Feeder.from_pandapower`` fuses the buses they join).
- Slack voltage 1.02 pu instead of CIGRE's 1.0 pu (DSOs run the MV side a little high to give
  LV feeders headroom): with the day profiles below, the uncontrollable loads alone then keep
  every bus within 0.95..1.05 pu all day, so OCM bands on this feeder are limited by the
  flexibilities (three stations at 22 kW break 0.95 pu in the evening) and not by loads in the
  commercial subnetwork that no flexibility can relieve.
- The 15 CIGRE loads become customers with their CIGRE peak power as the net's base case
  (renamed "R1", "R11", ..., "C20"). For the day profiles their annual energy is
  ``peak kW * 8760 h * load factor`` (0.45 residential, BDEW H25, one household per 4 MWh/a;
  0.30 industrial/commercial, BDEW G25, one unit per 20 MWh/a).
- Added: rooftop PV on the residential customers R11, R15..R18 (115 kWp), a community battery
  CB (-50..+50 kW, 100 kWh) at R6 and three charging stations (0..22 kW) at R11, R15 and R18,
  so that OCM can be benchmarked with four flexibilities.
- Line ratings: pandapower gives every CIGRE line type ``max_i_ka = 1.0`` (a placeholder).
  Each type gets the rating of the pandapower standard type of the same construction (NAYY
  cable, AL1/ST1A overhead conductor) with the nearest resistance per km (``LINE_RATINGS``),
  scaled to the CIGRE conductor's cross-section: ampacity ~ cross-section^0.585 (the exponent
  of pandapower's NAYY 4x50 and 4x150 SE types, 142 and 270 A) and cross-section ~ 1 / r.
  The transformers keep CIGRE's ratings (0.5, 0.15 and 0.3 MVA).
"""

from __future__ import annotations

import pandapower as pp
import pandapower.networks as pn

from capacity.feeders._case import FeederCase, add_flexibility, add_pv
from capacity.flexibility import Flexibility, FlexibilityKind
from capacity.profiles import Customer

NAME = "cigre-lv"
V_SLACK_PU = 1.02
RESIDENTIAL_LOAD_FACTOR = 0.45
COMMERCIAL_LOAD_FACTOR = 0.30
HOUSEHOLD_KWH = 4000.0
COMMERCIAL_UNIT_KWH = 20000.0
PV_KWP = {"R11": 10.0, "R15": 30.0, "R16": 30.0, "R17": 20.0, "R18": 25.0}

LINE_RATINGS = {
    "UG1": "NAYY 4x150 SE",  # 0.162 ohm/km vs 0.208 ohm/km, 270 A -> 312 A
    "UG2": "NAYY 4x120 SE",  # 0.2647 vs 0.225, 242 A -> 220 A
    "UG3": "NAYY 4x50 SE",  # 0.822 vs 0.642, 142 A -> 123 A
    "OH1": "48-AL1/8-ST1A 0.4",  # 0.4917 vs 0.5939, 210 A -> 235 A
    "OH2": "24-AL1/4-ST1A 0.4",  # 1.3207 vs 1.2012, 140 A -> 132 A
    "OH3": "15-AL1/3-ST1A 0.4",  # 2.0167 vs 1.8769, 105 A -> 101 A
}
"""CIGRE line type -> the pandapower standard type its rating is scaled from."""
AMPACITY_EXPONENT = 0.585
"""ln(270 / 142) / ln(150 / 50): ampacity vs cross-section of pandapower's NAYY SE types."""

# CIGRE LV bus indices (pandapower 2.x/3.x ordering: "Bus R6" = 7, "Bus R11" = 12, ...)
_BUS = {"R6": 7, "R11": 12, "R15": 16, "R18": 19}

FLEXIBILITIES = (
    Flexibility("CB", _BUS["R6"], -50.0, 50.0, FlexibilityKind.COMMUNITY_BATTERY),
    Flexibility("CS01", _BUS["R11"], 0.0, 22.0, FlexibilityKind.CHARGING_STATION),
    Flexibility("CS02", _BUS["R15"], 0.0, 22.0, FlexibilityKind.CHARGING_STATION),
    Flexibility("CS03", _BUS["R18"], 0.0, 22.0, FlexibilityKind.CHARGING_STATION),
)


def _cigre_net() -> pp.pandapowerNet:
    net = pn.create_cigre_network_lv()
    net.load["name"] = net.load["name"].str.replace("Load ", "", regex=False)
    for cigre_type, std_type in LINE_RATINGS.items():
        ref = pp.load_std_type(net, std_type, "line")
        r_cigre = pp.load_std_type(net, cigre_type, "line")["r_ohm_per_km"]
        rating = ref["max_i_ka"] * (ref["r_ohm_per_km"] / r_cigre) ** AMPACITY_EXPONENT
        net.line.loc[net.line.std_type == cigre_type, "max_i_ka"] = rating
    for key, bus in _BUS.items():
        if net.bus.at[bus, "name"] != f"Bus {key}":
            raise ValueError(
                f"pandapower's CIGRE LV network changed: bus {bus} is "
                f"{net.bus.at[bus, 'name']!r}, expected 'Bus {key}'"
            )
    return net


def _customers() -> tuple[Customer, ...]:
    net = _cigre_net()
    customers = []
    for name, bus, p_mw in zip(net.load.name, net.load.bus, net.load.p_mw, strict=True):
        peak_kw = float(p_mw) * 1000.0
        if name.startswith("R"):
            annual = peak_kw * 8760.0 * RESIDENTIAL_LOAD_FACTOR
            units = max(1, round(annual / HOUSEHOLD_KWH))
            profile = "household"
        else:
            annual = peak_kw * 8760.0 * COMMERCIAL_LOAD_FACTOR
            units = max(1, round(annual / COMMERCIAL_UNIT_KWH))
            profile = "commercial"
        customers.append(
            Customer(
                str(name),
                int(bus),
                annual_kwh=annual,
                pv_kwp=PV_KWP.get(name, 0.0),
                n_households=units,
                profile=profile,
            )
        )
    return tuple(customers)


CUSTOMERS = _customers()


def build_net() -> pp.pandapowerNet:
    """CIGRE LV with renamed loads, PV sgens (0 kW in the base case) and flexibility loads."""
    net = _cigre_net()
    for customer in CUSTOMERS:
        add_pv(net, customer)
    for flex in FLEXIBILITIES:
        add_flexibility(net, flex)
    net.ext_grid["vm_pu"] = V_SLACK_PU
    return net


CASE = FeederCase(
    name=NAME,
    description="CIGRE LV benchmark (pandapower), 115 kWp PV, a battery and 3 charging stations",
    build=build_net,
    v_slack_pu=V_SLACK_PU,
    flexibilities=FLEXIBILITIES,
    customers=CUSTOMERS,
    default_date="2026-03-18",
    storage_energy_kwh={"CB": 100.0},
)
