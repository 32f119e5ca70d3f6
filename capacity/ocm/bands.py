"""Band formation per objective: the paper's sum (Eq. 2-3), two-step (Eq. 15-16) and fair share.

Every objective yields two feasible settings, ``argmin`` (the lowest summed power) and
``argmax`` (the highest), and from them a band box ``lo <= hi`` per device plus a feasible
``anchor`` inside the box (used if certification has to shrink the box).

Band formation. On a radial LV feeder every bus voltage falls when any consumption rises, so the
box ``[lo, hi]`` is safe when its all-max corner meets ``v_low`` and its all-min corner meets
``v_high``; certification checks this instead of assuming it. ``lo = argmin``, ``hi = argmax``
is then safe. The paper's two vectors need not be ordered per device (forcing a charging station
up can let a battery inject more); then the box is split at ``s = b + theta (a - b)``:
``hi = argmax over s <= x <= p_high``, ``lo = argmin over p_low <= x <= s`` (so lo <= s <= hi).
``theta = 0`` keeps ``hi = argmax`` and ``theta = 1`` keeps ``lo = argmin`` (both restricted
problems contain the kept vector, so they are feasible); a third split balances the two losses
against the paper's sums, and the candidate with the smallest worse-side loss is kept.

Thermal limits. A branch's current is not monotone in every device. On a radial feeder the flow
through a branch is the net consumption beyond it (plus losses): increasing in every device
beyond it, independent of the others; its current is ``|S| / |V|`` with ``|S| = sqrt(P^2 +
Q^2)`` convex in ``P``, and ``|V|`` falls when any device consumes more. Over the box, the
import of a branch is largest at the all-max corner, where its voltage is lowest too: the
argmax, feasible by construction. Its export is largest with the devices beyond it low, and its
current then highest with the other devices high (lowest voltage): a mixed corner that the
optimiser never evaluated. ``solve_step`` therefore checks the box's corners (all of them up to
six devices, else the mixed corners of ``problem.corner_masks``) and, where one overloads a
branch, re-optimises with that branch's limit scaled by the ratio of its loading at the
optimised corners to its worst corner. Certification checks every corner and random interior
points against the true limits again.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from capacity.flexibility import Flexibility, FlexibilityKind
from capacity.ocm.certify import box_points
from capacity.ocm.ga import Extreme, GaSettings, run_ga
from capacity.ocm.policy import PolicyVectors
from capacity.ocm.polish import polish
from capacity.ocm.problem import StepProblem

OBJECTIVES = ("sum", "two-step", "fair")
_ORDER_TOL_KW = 1e-9
_FAIR_GRID = 16
_FAIR_ROUNDS = 3
_THERMAL_ROUNDS = 3


@dataclass
class StepSolution:
    """Result of the optimisation of one step, before certification (powers in kW, (n_flex,))."""

    argmin_kw: np.ndarray
    argmax_kw: np.ndarray
    lo_kw: np.ndarray
    hi_kw: np.ndarray
    anchor_kw: np.ndarray
    feasible: bool
    violation_pu: float = 0.0
    note: str = ""


class BandSolver:
    """Solves one step for the configured objective; stateless apart from the settings."""

    def __init__(
        self,
        flexibilities: Sequence[Flexibility],
        objective: str = "sum",
        ga: GaSettings | None = None,
        margin_pu: float = 1e-5,
        use_polish: bool = True,
        policy: PolicyVectors | None = None,
    ) -> None:
        if objective not in OBJECTIVES:
            raise ValueError(f"unknown objective {objective!r}; choose one of {OBJECTIVES}")
        self.objective = objective
        self.ga = ga or GaSettings()
        self.margin_pu = margin_pu
        self.use_polish = use_polish
        self.policy = policy
        self.p_low_kw = np.array([f.p_low_kw for f in flexibilities], dtype=float)
        self.p_high_kw = np.array([f.p_high_kw for f in flexibilities], dtype=float)
        self.rest_kw = np.clip(0.0, self.p_low_kw, self.p_high_kw)
        self.battery = np.array(
            [f.kind == FlexibilityKind.COMMUNITY_BATTERY for f in flexibilities], dtype=bool
        )

    # ------------------------------------------------------------------ building blocks
    def extreme(
        self,
        problem: StepProblem,
        sense: float,
        lower_kw: np.ndarray,
        upper_kw: np.ndarray,
        seeds_kw: list[np.ndarray],
        seed: int,
        on_kw: np.ndarray | None = None,
    ) -> Extreme:
        """GA (one batched load flow per generation) then SLP polish of its best if feasible.

        ``on_kw``: chargers' minimum-current powers: the GA works in their operating sets
        ``{0} u [on, upper]`` and the polish within the on/off pattern of the GA's best."""
        best = run_ga(problem, sense, lower_kw, upper_kw, seeds_kw, self.ga, seed, self.margin_pu,
                      on_kw)
        if best.feasible and self.use_polish:
            if on_kw is not None:
                off = (on_kw > 0) & (best.x_kw < on_kw)
                lower_kw = np.where((on_kw > 0) & ~off, np.maximum(lower_kw, on_kw), lower_kw)
                upper_kw = np.where(off, best.x_kw, upper_kw)
            x, _ = polish(problem, sense, lower_kw, upper_kw, best.x_kw, self.margin_pu)
            best = Extreme(x, 0.0, best.generations)
        return best

    def _pair(
        self,
        problem: StepProblem,
        lower: np.ndarray,
        upper: np.ndarray,
        warm: StepSolution | None,
        seed: int,
    ) -> tuple[Extreme, Extreme]:
        """argmax and argmin over one box; each seeds the other so both find the feasible set."""
        warm_max = [] if warm is None else [warm.argmax_kw]
        warm_min = [] if warm is None else [warm.argmin_kw]
        b = self.extreme(problem, +1.0, lower, upper, [*warm_max, self.rest_kw], seed)
        seeds_a = [*warm_min, self.rest_kw] + ([b.x_kw] if b.feasible else [])
        a = self.extreme(problem, -1.0, lower, upper, seeds_a, seed + 1)
        if a.feasible and not b.feasible:
            b = self.extreme(problem, +1.0, lower, upper, [a.x_kw, *warm_max], seed + 2)
        return a, b

    def _order(
        self, problem: StepProblem, a: np.ndarray, b: np.ndarray, free: np.ndarray, seed: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, str]:
        """Form the box ``lo <= hi`` from argmin ``a`` and argmax ``b`` (see module docstring)."""
        inverted = free & (a > b + _ORDER_TOL_KW)
        if not inverted.any():
            return np.minimum(a, b), np.maximum(a, b), a, ""
        total_kw = max(float(b.sum() - a.sum()), 1e-9)

        def split(theta: float, seed_off: int):
            """Split at ``s = b + theta (a - b)``: hi = max over x >= s, lo = min over x <= s."""
            s = b + theta * (a - b)
            lo, hi = a, b
            if theta > 0.0:
                lower = np.where(free, s, b)
                upper = np.where(free, self.p_high_kw, b)
                ext = self.extreme(problem, +1.0, lower, upper, [lower, b], seed + seed_off)
                if not ext.feasible:
                    return None
                hi = ext.x_kw
            if theta < 1.0:
                lower = np.where(free, self.p_low_kw, a)
                upper = np.where(free, s, a)
                ext = self.extreme(problem, -1.0, lower, upper, [upper, a], seed + seed_off + 1)
                if not ext.feasible:
                    return None
                lo = ext.x_kw
            if not np.all(lo <= hi + _ORDER_TOL_KW):
                return None
            loss_max = float(b.sum() - hi.sum()) / total_kw
            loss_min = float(lo.sum() - a.sum()) / total_kw
            return (max(loss_max, loss_min), -float(np.sum(hi - lo)), loss_min, loss_max, lo, hi)

        keep_b, keep_a = split(0.0, 3), split(1.0, 5)
        options = [o for o in (keep_b, keep_a) if o is not None]
        if keep_b is not None and keep_a is not None and keep_b[2] + keep_a[3] > 0:
            theta = keep_b[2] / (keep_b[2] + keep_a[3])  # where the two losses cross (linear)
            if 0.0 < theta < 1.0:
                mid = split(theta, 7)
                if mid is not None:
                    options.append(mid)
        if not options:  # cannot happen for sum objective; keep b as a point on the free devices
            lo = np.where(free, b, np.minimum(a, b))
            return lo, np.maximum(lo, b), b, "order-fallback"
        _, _, _, _, lo, hi = min(options, key=lambda o: (o[0], o[1]))
        return np.minimum(lo, hi), np.maximum(lo, hi), lo, "reordered"

    def _infeasible(self, problem: StepProblem, candidates: list[np.ndarray],
                    corners: list[np.ndarray] | None = None) -> StepSolution:
        """The least-violating candidate (ties: the first of ``corners``, by default every
        device at p_low, then the rest point and every device at p_high)."""
        corners = [self.p_low_kw, self.rest_kw, self.p_high_kw] if corners is None else corners
        pts = np.vstack([*corners, *candidates])
        viol, _ = problem.evaluate(pts, 0.0)
        i = int(np.argmin(viol))
        x = pts[i]
        return StepSolution(x, x, x, x, x, False, float(viol[i]), "infeasible")

    # ------------------------------------------------------------------ thermal corners
    def solve_step(
        self, problem: StepProblem, warm: StepSolution | None, seed: int
    ) -> StepSolution:
        """Optimise one step; ``warm`` is the previous step's solution (warm start).

        With thermal limits the box's corners are checked (every corner up to six devices,
        else ``problem.corner_masks``): a branch's current is not monotone in every device (see
        the module docstring), so a mixed corner can overload a branch that the optimised
        corners do not. Then the step is re-optimised with that branch's limit scaled by the
        ratio of its loading at the optimised corners to its worst corner (at most
        ``_THERMAL_ROUNDS`` times; note ``thermal-corners``); certification has the last word.
        """
        sol = self._solve_objective(problem, warm, seed)
        true_limits = problem.max_loading_pct
        try:
            for _ in range(_THERMAL_ROUNDS if problem.limited.size else 0):
                tighter = self._tightened_limits(problem, sol, true_limits)
                if tighter is None:
                    break
                problem.max_loading_pct = tighter
                sol = self._solve_objective(problem, sol if sol.feasible else warm, seed)
                sol.note = (sol.note + " thermal-corners").strip()
        finally:
            problem.max_loading_pct = true_limits
        return sol

    def _tightened_limits(
        self, problem: StepProblem, sol: StepSolution, true_limits: np.ndarray
    ) -> np.ndarray | None:
        """Loading limits for a re-optimisation when a corner of the box overloads a branch
        (None when every corner is within the true limits or nothing can be learnt)."""
        if not sol.feasible:
            return None
        corners, _ = box_points(sol.lo_kw, sol.hi_kw, 0, np.random.default_rng(0),
                                problem.corner_masks)
        flows = problem.flows(corners)
        lim = problem.limited
        load = flows.loading_pct[:, lim]
        worst = load.max(axis=0)
        ends = np.maximum(load[0], load[1])  # the optimised corners (all-min, all-max)
        cap = true_limits[lim] - 100.0 * self.margin_pu
        over = (worst > cap) & (ends < worst)
        if not (flows.converged.all() and over.any()):
            return None
        new = problem.max_loading_pct.copy()
        scaled = cap[over] * ends[over] / worst[over] + 100.0 * self.margin_pu
        new[lim[over]] = np.minimum(new[lim[over]], scaled)
        return new

    # ------------------------------------------------------------------ objectives
    def _solve_objective(
        self, problem: StepProblem, warm: StepSolution | None, seed: int
    ) -> StepSolution:
        """Optimise one step for the configured objective (the band policy if one is set)."""
        if self.policy is not None:
            return self._policy(problem, warm, seed)
        if self.objective == "two-step" and self.battery.any() and not self.battery.all():
            return self._two_step(problem, warm, seed)
        if self.objective == "fair":
            sol = self._fair(problem, warm, seed)
            if sol is not None:
                return sol
        return self._sum(problem, warm, seed)

    def _sum(self, problem: StepProblem, warm: StepSolution | None, seed: int) -> StepSolution:
        """Paper Eq. 2-3: argmax and argmin of the summed flexible power."""
        a, b = self._pair(problem, self.p_low_kw, self.p_high_kw, warm, seed)
        if not (a.feasible and b.feasible):
            return self._infeasible(problem, [a.x_kw, b.x_kw])
        free = np.ones(a.x_kw.size, dtype=bool)
        lo, hi, anchor, note = self._order(problem, a.x_kw, b.x_kw, free, seed)
        return StepSolution(a.x_kw, b.x_kw, lo, hi, anchor, True, 0.0, note)

    def _two_step(
        self, problem: StepProblem, warm: StepSolution | None, seed: int
    ) -> StepSolution:
        """Paper Eq. 15-16: battery band first (others at rest), then the others around it."""
        cb = self.battery
        lower1 = np.where(cb, self.p_low_kw, self.rest_kw)
        upper1 = np.where(cb, self.p_high_kw, self.rest_kw)
        a1, b1 = self._pair(problem, lower1, upper1, warm, seed)
        if not (a1.feasible and b1.feasible):
            return self._infeasible(problem, [a1.x_kw, b1.x_kw])
        cb_lo, cb_hi, _, _ = self._order(problem, a1.x_kw, b1.x_kw, cb, seed)
        warm_max = [] if warm is None else [warm.argmax_kw]
        warm_min = [] if warm is None else [warm.argmin_kw]
        lower_b = np.where(cb, cb_hi, self.p_low_kw)
        upper_b = np.where(cb, cb_hi, self.p_high_kw)
        b = self.extreme(problem, +1.0, lower_b, upper_b, [*warm_max, b1.x_kw], seed + 5)
        lower_a = np.where(cb, cb_lo, self.p_low_kw)
        upper_a = np.where(cb, cb_lo, self.p_high_kw)
        a = self.extreme(problem, -1.0, lower_a, upper_a, [*warm_min, a1.x_kw], seed + 6)
        if not (a.feasible and b.feasible):  # the stage-1 corners with others at rest are feasible
            return self._infeasible(problem, [a.x_kw, b.x_kw, a1.x_kw, b1.x_kw])
        lo, hi, anchor, note = self._order(problem, a.x_kw, b.x_kw, ~cb, seed)
        return StepSolution(a.x_kw, b.x_kw, lo, hi, anchor, True, 0.0, note)

    def _fair(
        self, problem: StepProblem, warm: StepSolution | None, seed: int
    ) -> StepSolution | None:
        """Max-min fair share, then efficiency: returns None when the rest point is infeasible.

        Up: the largest common fraction ``lam`` with ``x = rest + lam (p_high - rest)`` feasible
        (max-min of ``(P_max_c - rest_c) / (p_high_c - rest_c)``, i.e. ``P_max_c / p_high_c`` for
        a station), then argmax of the sum with every device guaranteed its fair share. Down: the
        same with ``rest - mu (rest - p_low)`` and the argmin.
        """
        viol, _ = problem.evaluate(self.rest_kw[None, :], self.margin_pu)
        if viol[0] > 0:
            return None
        up = self.p_high_kw - self.rest_kw
        down = self.rest_kw - self.p_low_kw
        lam = self._largest_fraction(problem, up)
        mu = self._largest_fraction(problem, -down)
        floor_kw = self.rest_kw + lam * up
        ceil_kw = self.rest_kw - mu * down
        warm_max = [] if warm is None else [warm.argmax_kw]
        warm_min = [] if warm is None else [warm.argmin_kw]
        b = self.extreme(problem, +1.0, floor_kw, self.p_high_kw, [floor_kw, *warm_max], seed)
        a = self.extreme(problem, -1.0, self.p_low_kw, ceil_kw, [ceil_kw, *warm_min], seed + 1)
        if not (a.feasible and b.feasible):
            return None
        return StepSolution(a.x_kw, b.x_kw, a.x_kw, b.x_kw, a.x_kw, True, 0.0, "fair")

    def _largest_fraction(self, problem: StepProblem, direction_kw: np.ndarray,
                          base_kw: np.ndarray | None = None) -> float:
        """Largest s in [0, 1] with base + s * direction feasible (batched grid refinement;
        base: the rest point unless given). 0 for a zero direction."""
        lo_s, hi_s = 0.0, 1.0
        base_kw = self.rest_kw if base_kw is None else base_kw
        if not np.any(direction_kw):
            return 0.0
        for _ in range(_FAIR_ROUNDS):
            grid = np.linspace(lo_s, hi_s, _FAIR_GRID + 1)[1:]
            pts = base_kw[None, :] + grid[:, None] * direction_kw[None, :]
            viol, _ = problem.evaluate(pts, self.margin_pu)
            bad = np.flatnonzero(viol > 0)
            if bad.size == 0:
                return hi_s if hi_s == 1.0 else grid[-1]
            k = int(bad[0])
            if k > 0:
                lo_s = float(grid[k - 1])
            hi_s = float(grid[k])
        return lo_s

    # ------------------------------------------------------------------ band policy (issue 16)
    def _policy(self, problem: StepProblem, warm: StepSolution | None, seed: int) -> StepSolution:
        """``capacity.ocm.policy``: the argmin with every station at its committed minimum, then
        the guaranteed minimum, the fair share of the headroom and the argmax of the sum."""
        pv = self.policy
        assert pv is not None
        st = pv.station
        lower_a = np.where(st, pv.floor_kw, self.p_low_kw)
        upper_a = np.where(st, pv.floor_kw, self.p_high_kw)
        rest_a = np.clip(self.rest_kw, lower_a, upper_a)
        warm_min = [] if warm is None else [warm.argmin_kw]
        a = self.extreme(problem, -1.0, lower_a, upper_a, [*warm_min, rest_a], seed + 1)
        if not a.feasible:
            return self._infeasible(problem, [a.x_kw], [lower_a, rest_a, upper_a])
        lower_b, upper_b, note = self._policy_floors(problem, a.x_kw, seed)
        feasible_b = np.where(st, lower_b, np.clip(a.x_kw, lower_b, upper_b))
        warm_max = [] if warm is None else [warm.argmax_kw]
        b = self.extreme(problem, +1.0, lower_b, upper_b, [feasible_b, *warm_max], seed)
        b_kw = b.x_kw if b.feasible else feasible_b
        lo, hi, anchor, order_note = self._order(problem, a.x_kw, b_kw, ~st, seed)
        return StepSolution(a.x_kw, b_kw, lo, hi, anchor, True, 0.0,
                            f"{note} {order_note}".strip())

    def _policy_floors(self, problem: StepProblem, argmin_kw: np.ndarray, seed: int
                       ) -> tuple[np.ndarray, np.ndarray, str]:
        """The argmax's box (lower, upper) and note. ``base``: stations at their committed
        minimum, the other devices at rest (none is forced to make room for a station). The
        guarantee from ``base``; if it does not fit, from the argmin (the battery discharging:
        note ``battery-for-guarantee``, or ``forced`` when the rest point itself breaks a
        limit); if it does not fit there either, the GA's operable choice (``_operable_share``).
        Only from ``base`` do the max-min fair share of the headroom of the active stations and
        the other devices (the battery's charging is shared like a station's) and the argmax
        follow; otherwise the stations stay at their guarantee and the argmax moves only
        the other devices (the battery discharges no more than the load and guarantees need),
        unless the policy's ``battery_shares``: then the stations' fair share is taken with
        the battery at the argmin's discharge (note ``battery-shares``), then the argmax."""
        pv = self.policy
        assert pv is not None
        st = pv.station
        to_guarantee = np.where(st, pv.guarantee_kw - pv.floor_kw, 0.0)
        base = np.where(st, pv.floor_kw, np.maximum(argmin_kw, self.rest_kw))
        from_rest = bool(problem.evaluate(base[None, :], self.margin_pu)[0][0] <= 0)

        def fits(at_kw: np.ndarray) -> bool:
            return (not to_guarantee.any()
                    or self._largest_fraction(problem, to_guarantee, at_kw) >= 1.0)

        guaranteed = from_rest and fits(base)
        note = "policy" if from_rest else "policy forced"
        if from_rest and not guaranteed and np.any(~st & (argmin_kw != base)):
            from_rest, note = False, note + " battery-for-guarantee"
        if not from_rest:
            base = argmin_kw
            guaranteed = fits(base)
        if guaranteed:
            start, active = base + to_guarantee, st
        else:
            start = self._operable_share(problem, base, seed)
            active, note = st & (start > 0), note + " partial-guarantee"
        shares = from_rest or (guaranteed and pv.battery_shares)
        headroom = np.where(active | (~st & from_rest), self.p_high_kw - start, 0.0)
        lam = self._largest_fraction(problem, headroom, start) if shares else 0.0
        lower = start + lam * headroom if from_rest \
            else np.where(st, start + lam * headroom, self.p_low_kw)
        upper = np.where(st & (~active | (not shares)), start, self.p_high_kw)
        return lower, upper, note + (" battery-shares" if shares and not from_rest else "")

    def _operable_share(self, problem: StepProblem, base_kw: np.ndarray, seed: int) -> np.ndarray:
        """When not every station can have its guarantee: the GA picks which stations get an
        operable share (``{0} u [on, guarantee]``, the other devices at ``base_kw``) maximising
        the served power; returns that setting (kW)."""
        pv = self.policy
        assert pv is not None
        st = pv.station
        lower = np.where(st, pv.floor_kw, base_kw)
        upper = np.where(st, pv.guarantee_kw, base_kw)
        alone = np.where(np.eye(st.size, dtype=bool)[st], upper, lower)  # one station on each
        ext = self.extreme(problem, +1.0, lower, upper, [lower, *alone], seed + 11, on_kw=pv.on_kw)
        return ext.x_kw if ext.feasible else lower
