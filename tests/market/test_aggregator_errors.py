"""Clear errors for inconsistent aggregator input."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from market.aggregator import (
    ModelOptions,
    SolverOptions,
    schedule_hour,
    synthetic_case,
    synthetic_data,
)


@pytest.fixture(scope="module")
def data():
    return synthetic_data(0)


def test_negative_capacities(data) -> None:
    with pytest.raises(ValueError, match="supplier_p_max_kw must be a non-negative capacity"):
        dataclasses.replace(data, supplier_p_max_kw=-1.0)
    with pytest.raises(ValueError, match="dg_p_max_kw must be non-negative"):
        dataclasses.replace(data, dg_p_max_kw=-np.array(data.dg_p_max_kw))
    with pytest.raises(ValueError, match="lem_sell_max_kw"):
        dataclasses.replace(data, lem_sell_max_kw=-5.0)
    e_max = np.array(data.ess.e_max_kwh)
    e_max[2, 10] = -1.0
    with pytest.raises(ValueError, match=r"ess\.e_max_kwh must be non-negative"):
        dataclasses.replace(data.ess, e_max_kwh=e_max)
    with pytest.raises(ValueError, match="p_charge_max_kw must be non-negative"):
        dataclasses.replace(data.cs, p_charge_max_kw=-np.array(data.cs.p_charge_max_kw))
    with pytest.raises(ValueError, match="dg_p_min_kw exceeds"):
        dataclasses.replace(data, dg_p_min_kw=np.array(data.dg_p_max_kw) + 1.0)


def test_energy_targets_no_charging_power_can_reach(data) -> None:
    cs = data.cs
    need = np.array(cs.e_min_kwh)
    t = int(np.argmax(need[0]))
    need[0, t] = cs.e_max_kwh[0, t]  # full at the departure ...
    slow = np.array(cs.p_charge_max_kw) * 0.05  # ... with chargers far too weak
    with pytest.raises(ValueError, match="cannot be reached by any charging power"):
        dataclasses.replace(data, cs=dataclasses.replace(cs, e_min_kwh=need,
                                                         p_charge_max_kw=slow))
    # the DSO band can also make a target unreachable
    with pytest.raises(ValueError, match="cannot be reached by any charging power"):
        data.with_bands(cs_p_min_kw=np.zeros_like(cs.p_charge_max_kw),
                        cs_p_max_kw=np.zeros_like(cs.p_charge_max_kw))
    # a target above the capacity
    need = np.array(cs.e_min_kwh)
    need[1, 40] = cs.e_max_kwh[1, 40] + 10.0
    with pytest.raises(ValueError, match="exceeds e_max_kwh"):
        dataclasses.replace(cs, e_min_kwh=need)


def test_mismatched_slot_counts(data) -> None:
    with pytest.raises(ValueError, match=r"load_kw has shape \(90, 95\), expected \(90, 96\)"):
        dataclasses.replace(data, load_kw=np.array(data.load_kw)[:, :95])
    with pytest.raises(ValueError, match="ess has 92 slots, the case has 96"):
        ess = data.ess
        short = dataclasses.replace(
            ess, e_min_kwh=ess.e_min_kwh[:, :92], e_max_kwh=ess.e_max_kwh[:, :92],
            flow_kwh=ess.flow_kwh[:, :92], p_charge_max_kw=ess.p_charge_max_kw[:, :92],
            p_discharge_max_kw=ess.p_discharge_max_kw[:, :92])
        dataclasses.replace(data, ess=short)
    with pytest.raises(ValueError, match="flow_kwh has shape"):
        dataclasses.replace(data.cs, flow_kwh=np.array(data.cs.flow_kwh)[:, :50])
    with pytest.raises(ValueError, match="not a whole number of hours"):
        cut = {name: np.array(getattr(data, name))[..., :94] for name in (
            "res_da_kw", "res_kw", "supplier_price_eur_per_kwh", "load_da_kw", "load_kw",
            "wm_price_eur_per_kwh", "lem_buy_price_eur_per_kwh", "lem_sell_price_eur_per_kwh")}
        dataclasses.replace(data, **cut)
    band = np.zeros((7, 90))
    with pytest.raises(ValueError, match="ess_band_p_min_kw has shape"):
        data.with_bands(ess_p_min_kw=band, ess_p_max_kw=band)
    with pytest.raises(ValueError, match="24 hourly values"):
        data.with_disturbance(demand_pct=np.zeros(23))


def test_other_inconsistent_input(data) -> None:
    with pytest.raises(ValueError, match="same in the slots of an hour"):
        price = np.array(data.wm_price_eur_per_kwh)
        price[1] += 0.01
        dataclasses.replace(data, wm_price_eur_per_kwh=price)
    lo = np.array(data.ess.p_charge_max_kw) * 0.5
    with pytest.raises(ValueError, match="p_min_kw exceeds p_max_kw"):
        data.with_bands(ess_p_min_kw=lo, ess_p_max_kw=lo - 1.0)
    with pytest.raises(ValueError, match="needs both"):
        data.with_bands(ess_p_min_kw=lo)
    with pytest.raises(ValueError, match="supplier_price_eur_per_kwh has non-finite entries"):
        price = np.array(data.supplier_price_eur_per_kwh)
        price[7] = np.nan
        dataclasses.replace(data, supplier_price_eur_per_kwh=price)
    with pytest.raises(ValueError, match="efficiencies"):
        dataclasses.replace(data.ess, eff_charge=np.full(7, 1.2))
    case = synthetic_case(0)
    with pytest.raises(ValueError, match=r"hour 24 outside 0\.\.23"):
        schedule_hour(case, 24)
    with pytest.raises(ValueError, match=r"initial ess energy has shape \(3,\)"):
        schedule_hour(case, 5, e_init_kwh={"ess": np.zeros(3), "cs": case.cs.e_init_kwh})
    with pytest.raises(ValueError, match=r"cs unit \d+: initial energy .* lies outside"):
        schedule_hour(case, 6, e_init_kwh={"ess": case.day_ahead.ess_e_kwh[:, 24],
                                           "cs": np.zeros(5)})
    with pytest.raises(ValueError, match="needs the case's day-ahead plan"):
        schedule_hour(data, 0)
    with pytest.raises(ValueError, match="ess_cap_frac must be a non-negative"):
        ModelOptions(ess_cap_frac=-0.1)
    with pytest.raises(ValueError, match="storage_value"):
        ModelOptions(storage_value="water")
    with pytest.raises(ValueError, match="mip_rel_gap"):
        SolverOptions(mip_rel_gap=-1.0)
    with pytest.raises(ValueError, match="time_limit_s"):
        SolverOptions(time_limit_s=0.0)
    with pytest.raises(ValueError, match="deviation cap needs a day-ahead plan"):
        schedule_hour(data, 0, ModelOptions(storage_value="none", ess_cap_frac=0.1))
