"""Small LV feeders where a transformer or a cable, not a voltage, limits the flexibilities.

``build_thermal_net(case)``: 20 kV slack, one Dyn5 transformer (150 deg phase shift), a strong
trunk of two parallel NAYY 4x150 SE cables to cabinet K1, 60 m of NAYY 4x150 SE to K2 and a
20 m NAYY 4x50 SE service cable to house H. Station CS01 (0..22 kW) at K1, station CS02
(0..22 kW) and a battery CB (-50..50 kW) at H; households at K1, K2 and H, PV at H.

* ``"trafo"``: a 100 kVA transformer: the stations and the battery charging overload it at the
  all-max corner, the battery discharging into the PV export at the all-min corner, long before
  any voltage leaves 0.95..1.05 pu (the cables are short and strong);
* ``"cable"``: a 400 kVA transformer and the service cable derated to ``df = 0.7`` (99 A): CB
  and CS02 overload it importing, CB and the PV exporting, while CS01 upstream lowers its
  voltage (the mixed corner of its reverse current).
"""

from __future__ import annotations

import numpy as np
import pandapower as pp

from capacity.flexibility import Flexibility, FlexibilityKind

MV, LV, K1, K2, H = 0, 1, 2, 3, 4
FLEXIBILITIES = (
    Flexibility("CS01", K1, 0.0, 22.0, FlexibilityKind.CHARGING_STATION),
    Flexibility("CS02", H, 0.0, 22.0, FlexibilityKind.CHARGING_STATION),
    Flexibility("CB", H, -50.0, 50.0, FlexibilityKind.COMMUNITY_BATTERY),
)
TRAFO_MVA = {"trafo": 0.1, "cable": 0.4}
SERVICE_TYPE = {"trafo": "NAYY 4x150 SE", "cable": "NAYY 4x50 SE"}
SERVICE_DF = {"trafo": 1.0, "cable": 0.7}


def build_thermal_net(case: str) -> pp.pandapowerNet:
    """The feeder of ``case`` ("trafo" or "cable"), loads at their base values (kW)."""
    net = pp.create_empty_network(name=f"thermal-{case}")
    pp.create_bus(net, 20.0, name="MV", index=MV)
    for b, name in ((LV, "LV"), (K1, "K1"), (K2, "K2"), (H, "H")):
        pp.create_bus(net, 0.4, name=name, index=b)
    pp.create_ext_grid(net, MV, vm_pu=1.02)
    pp.create_transformer_from_parameters(
        net, MV, LV, sn_mva=TRAFO_MVA[case], vn_hv_kv=20.0, vn_lv_kv=0.4, vk_percent=4.0,
        vkr_percent=1.2, pfe_kw=0.3, i0_percent=0.3, shift_degree=150.0, name="T1",
    )
    pp.create_line(net, LV, K1, 0.05, "NAYY 4x150 SE", name="trunk", parallel=2)
    pp.create_line(net, K1, K2, 0.06, "NAYY 4x150 SE", name="K1-K2")
    service = pp.create_line(net, K2, H, 0.02, SERVICE_TYPE[case], name="service")
    net.line.at[service, "df"] = SERVICE_DF[case]
    for b, p_kw in ((K1, 15.0), (K2, 10.0), (H, 10.0)):
        pp.create_load(net, b, p_mw=p_kw / 1e3, q_mvar=0.33 * p_kw / 1e3, name=f"load {b}")
    pp.create_sgen(net, H, p_mw=0.0, name="PV H")
    return net


def base_step(net: pp.pandapowerNet, bus_ids: np.ndarray, pv_kw: float = 0.0
              ) -> tuple[np.ndarray, np.ndarray]:
    """Per-bus net consumption (kW, kvar) of the base loads with ``pv_kw`` of PV at H."""
    p = np.zeros(len(bus_ids))
    q = np.zeros(len(bus_ids))
    pos = {int(b): i for i, b in enumerate(bus_ids)}
    for b, pl, ql in zip(net.load.bus, net.load.p_mw, net.load.q_mvar, strict=True):
        p[pos[int(b)]] += pl * 1e3
        q[pos[int(b)]] += ql * 1e3
    p[pos[H]] -= pv_kw
    return p, q
