"""The H-ERM model: size, the matrices as a solver-independent artefact, the solve path."""

from __future__ import annotations

import dataclasses

import highspy
import numpy as np
import pytest
import scipy.sparse as sp
from scipy.optimize import milp

from market.aggregator import (
    ModelOptions,
    SolverOptions,
    schedule_hour,
    synthetic_case,
    synthetic_data,
)
from market.aggregator.case import Case
from market.aggregator.synthetic import with_local_premium


def highs_objective(model: dict) -> float:
    """Solve the matrices of ``result.milp`` with highspy directly (not through scipy)."""
    a = sp.csc_matrix(model["constraints"].A)
    lp = highspy.HighsLp()
    lp.num_col_ = a.shape[1]
    lp.num_row_ = a.shape[0]
    lp.col_cost_ = np.asarray(model["c"], dtype=float)
    lp.col_lower_ = np.asarray(model["bounds"].lb, dtype=float)
    lp.col_upper_ = np.asarray(model["bounds"].ub, dtype=float)
    lp.row_lower_ = np.asarray(model["constraints"].lb, dtype=float)
    lp.row_upper_ = np.asarray(model["constraints"].ub, dtype=float)
    lp.a_matrix_.format_ = highspy.MatrixFormat.kColwise
    lp.a_matrix_.start_ = a.indptr
    lp.a_matrix_.index_ = a.indices
    lp.a_matrix_.value_ = a.data
    lp.integrality_ = [highspy.HighsVarType.kInteger if i else highspy.HighsVarType.kContinuous
                       for i in model["integrality"]]
    h = highspy.Highs()
    h.setOptionValue("output_flag", False)
    h.setOptionValue("mip_rel_gap", 1e-10)
    h.setOptionValue("presolve", "off")
    h.passModel(lp)
    h.run()
    assert h.getModelStatus() == highspy.HighsModelStatus.kOptimal
    return float(h.getInfo().objective_function_value)


def negative_price_case(case: Case) -> Case:
    """Wholesale prices below zero in hours 4-5 with a large purchase cap: with full storage
    the LP relaxation absorbs more paid-for energy by charging and discharging at once (the
    losses), so only the MILP gives an admissible schedule."""
    price = np.array(case.wm_price_eur_per_kwh)
    price[16:24] = -0.3
    return dataclasses.replace(case, wm_price_eur_per_kwh=price, wm_buy_max_kw=50_000.0)


def full_storage(case: Case, hour: int) -> dict[str, np.ndarray]:
    """Initial energies of ``hour``: ESS as full as their later limits allow, CS as planned."""
    first = hour * case.slots_per_hour
    return {"ess": np.array(case.ess_e_cap_kwh[:, first]),
            "cs": np.array(case.day_ahead.cs_e_kwh[:, first])}


def test_paper_size_counts() -> None:
    """Per slot: 116 DG + 90 DR + 90 NSD + supplier + 12 x 5 storage + 2 x 3 market variables;
    26 binaries; rows 1 + 12 x 4 + 2 x 2 + 2 (one direction across the markets). One fixed
    variable carries Eq. 1's constant."""
    case = synthetic_case(0)
    result = schedule_hour(case, 10)
    n_dg = case.dg_p_max_kw.size + case.res_cost_eur_per_kwh.size
    assert n_dg == 116 and case.ess.n_units == 7 and case.cs.n_units == 5
    assert case.load_kw.shape[0] == 90
    per_slot = 116 + 2 * 90 + 1 + 5 * (7 + 5) + 2 * 3
    assert result.stats["n_vars"] == 4 * per_slot + 1 + (7 + 5)   # + constant, + two-piece value
    assert result.stats["n_binaries"] == 104                         # paper: 104
    assert result.stats["n_constraints"] == 4 * (1 + 4 * 12 + 2 * 2 + 2)  # 220; paper: 208
    assert np.count_nonzero(result.milp["integrality"]) == 104
    assert sp.issparse(result.milp["constraints"].A)


def test_milp_dict_resolves_to_the_same_cost() -> None:
    case = synthetic_case(0)
    for hour in (2, 19):
        result = schedule_hour(case, hour)
        res = milp(**result.milp)
        assert res.status == 0
        assert res.fun == pytest.approx(result.cost, rel=1e-6)
        assert result.solve_time_s > 0


@pytest.mark.parametrize("variant", ["plain", "caps", "lookahead", "milp-path"])
def test_highspy_gives_the_same_optimal_cost(variant: str) -> None:
    case = synthetic_case(3).with_disturbance(demand_pct=10.0)
    options = ModelOptions()
    hours = (0, 9, 18)
    if variant == "caps":
        options = ModelOptions(ess_cap_frac=0.10, cs_cap_frac=0.05)
    elif variant == "lookahead":
        options = ModelOptions(lookahead_h=2)
    elif variant == "milp-path":
        case = negative_price_case(case)
        hours = (4, 5)
    for hour in hours:
        e_init = full_storage(case, hour) if variant == "milp-path" else None
        result = schedule_hour(case, hour, options, e_init_kwh=e_init)
        if variant == "milp-path":
            assert result.stats["method"] == "milp"
        assert highs_objective(result.milp) == pytest.approx(result.cost, rel=1e-6)


def test_lp_first_path_matches_the_milp() -> None:
    case = synthetic_case(1)
    for hour in (1, 8, 20):
        fast = schedule_hour(case, hour)
        full = schedule_hour(case, hour, solver=SolverOptions(lp_first=False))
        assert fast.stats["method"] == "lp-integral"
        assert full.stats["method"] == "milp"
        assert fast.cost == pytest.approx(full.cost, rel=1e-6)


def test_milp_fallback_when_the_relaxation_is_not_integral() -> None:
    case = negative_price_case(synthetic_case(0))
    result = schedule_hour(case, 4, e_init_kwh=full_storage(case, 4))
    assert result.stats["lp_violations"] > 0
    assert result.stats["method"] == "milp"
    assert result.stats["status"] == 0
    assert result.stats["mip_gap"] <= SolverOptions().mip_rel_gap + 1e-12
    # the LP bound is below the MILP optimum: the relaxation was really not admissible
    assert result.stats["lp_objective_eur"] < result.cost - 1e-6
    for key in ("ess", "cs"):
        assert np.all(np.minimum(result.p_kw[f"{key}_ch"], result.p_kw[f"{key}_dis"]) <= 1e-6)


def test_no_buying_on_one_market_while_selling_on_the_other() -> None:
    """A local market paying 2 ct/kWh above wholesale: the relaxation buys wholesale and resells
    locally in the same slot (arbitrage); the MILP path keeps one direction per slot and costs
    more than the relaxation's bound."""
    case = with_local_premium(synthetic_case(0), 0.02)
    result = schedule_hour(case, 12)
    p = result.p_kw
    assert result.stats["lp_violations"] > 0
    assert result.stats["method"] == "milp" and result.stats["status"] == 0
    assert result.stats["lp_objective_eur"] < result.cost - 1e-6
    assert np.all(np.minimum(p["wm_buy"], p["lem_sell"]) <= 1e-6)
    assert np.all(np.minimum(p["lem_buy"], p["wm_sell"]) <= 1e-6)
    assert highs_objective(result.milp) == pytest.approx(result.cost, rel=1e-6)
    # without the premium the same hour is LP-integral: the rows cost nothing there
    assert schedule_hour(synthetic_case(0), 12).stats["method"] == "lp-integral"


def test_cost_breakdown_adds_up() -> None:
    case = synthetic_case(0).with_disturbance(demand_pct=20.0)
    result = schedule_hour(case, 19, ModelOptions(ess_cap_frac=0.1, cs_cap_frac=0.05))
    total = result.operating_cost_eur + result.cap_penalty_eur - result.storage_value_eur
    assert total == pytest.approx(result.cost, rel=1e-9, abs=1e-6)
    assert set(result.cost_breakdown_eur) >= {"dg", "supplier", "dr", "nsd", "ess_discharge",
                                             "cs_discharge", "wholesale", "local_market",
                                             "curtailment", "res_energy"}
    assert result.e_kwh["ess"].shape == (7, 5)
    assert result.p_kw["dg"].shape == (36, 4)


def test_synthetic_case_is_deterministic() -> None:
    a, b = synthetic_data(5), synthetic_data(5)
    np.testing.assert_array_equal(a.load_kw, b.load_kw)
    np.testing.assert_array_equal(a.cs.flow_kwh, b.cs.flow_kwh)
    assert not np.array_equal(a.load_kw, synthetic_data(6).load_kw)
    assert synthetic_case(0).day_ahead.cost_eur == pytest.approx(
        synthetic_case.__wrapped__(0).day_ahead.cost_eur, rel=1e-9)
