"""Certification of a band box (paper Eq. 14, Fig. 8/11) and shrinking until it certifies.

The box ``[lo_kw, hi_kw]`` is re-checked with the load flow at its corners (all ``2**n`` corners
for ``n <= 6`` flexibilities, else the all-min and all-max corners and the thermal corners of
``StepProblem.corner_masks``) and at ``n_random`` uniform
random points inside it, all in ONE batched call. A box is certified only with zero violations
against the true limits: voltages in ``[v_low, v_high]`` and branch loadings at most their limit.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from capacity.ocm.problem import StepProblem

#: Up to this many flexibilities every corner of the band box is checked.
MAX_FULL_CORNER_FLEXIBILITIES = 6
#: Box scale factors tried, in order, when a box fails (toward a known-feasible anchor).
SHRINK_FACTORS = (0.9, 0.75, 0.5, 0.25, 0.1, 0.0)


@dataclass
class Certificate:
    """Outcome of checking one box: worst violation (pu), voltages at the corners and statistics.

    ``v_stats_pu``: (min, q25, median, q75, max) of every bus voltage over the random points
    (over the corners when there are none), for the paper's Fig. 8/11 boxplots.
    ``loading_at_lo_pct`` / ``loading_at_hi_pct`` (n_branch,): loadings at the all-min and
    all-max corners; ``loading_max_pct``: the largest loading of each branch over every point
    checked (NaN for branches without a rating).
    """

    violation_pu: float
    v_at_lo_pu: np.ndarray
    v_at_hi_pu: np.ndarray
    v_stats_pu: np.ndarray
    n_points: int
    loading_at_lo_pct: np.ndarray
    loading_at_hi_pct: np.ndarray
    loading_max_pct: np.ndarray

    @property
    def ok(self) -> bool:
        return self.violation_pu <= 0.0


def box_points(
    lo_kw: np.ndarray,
    hi_kw: np.ndarray,
    n_random: int,
    rng: np.random.Generator,
    corner_masks: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Check points: corners (K, n_flex), row 0 = all-min, row 1 = all-max, then every other
    corner for up to ``MAX_FULL_CORNER_FLEXIBILITIES`` devices, else the ``corner_masks``
    corners (True: low value); and ``n_random`` uniform random points inside the box."""
    n = lo_kw.size
    if n <= MAX_FULL_CORNER_FLEXIBILITIES:
        bits = (np.arange(2**n)[:, None] >> np.arange(n)[None, :]) & 1
        corners = np.where(bits.astype(bool), hi_kw, lo_kw)
        corners = np.vstack([corners[:1], corners[-1:], corners[1:-1]])
    else:
        masks = np.zeros((0, n), dtype=bool) if corner_masks is None else corner_masks
        corners = np.vstack([lo_kw, hi_kw, np.where(masks, lo_kw, hi_kw)])
    random_pts = lo_kw + rng.random((n_random, n)) * (hi_kw - lo_kw)
    return corners, random_pts


def certify(
    problem: StepProblem,
    lo_kw: np.ndarray,
    hi_kw: np.ndarray,
    n_random: int,
    rng: np.random.Generator,
) -> Certificate:
    """Check the box at its corners and ``n_random`` random points (one batched call)."""
    corners, random_pts = box_points(lo_kw, hi_kw, n_random, rng, problem.corner_masks)
    viol, flows = problem.evaluate_flows(np.vstack([corners, random_pts]), 0.0)
    v_abs, loading = flows.v_abs_pu, flows.loading_pct
    sample = v_abs[corners.shape[0] :] if n_random > 0 else v_abs[: corners.shape[0]]
    stats = np.quantile(sample, [0.0, 0.25, 0.5, 0.75, 1.0])
    highest = np.max(np.where(np.isnan(loading), -np.inf, loading), axis=0)
    return Certificate(
        float(viol.max()), v_abs[0], v_abs[1], stats, int(viol.size), loading[0], loading[1],
        np.where(np.isneginf(highest), np.nan, highest),
    )


def certify_or_shrink(
    problem: StepProblem,
    lo_kw: np.ndarray,
    hi_kw: np.ndarray,
    anchor_kw: np.ndarray,
    n_random: int,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray, Certificate, int]:
    """Certify the box; if it fails, scale it toward the feasible ``anchor_kw`` until it passes.

    Returns (lo, hi, certificate, number of shrinks). With factor 0 the box is the anchor point
    itself; if even that fails the last (failed) certificate is returned.
    """
    cert = certify(problem, lo_kw, hi_kw, n_random, rng)
    shrinks = 0
    lo, hi = lo_kw, hi_kw
    for factor in SHRINK_FACTORS:
        if cert.ok:
            break
        shrinks += 1
        lo = anchor_kw + factor * (lo_kw - anchor_kw)
        hi = anchor_kw + factor * (hi_kw - anchor_kw)
        cert = certify(problem, lo, hi, n_random if factor > 0 else 0, rng)
    return lo, hi, cert, shrinks
