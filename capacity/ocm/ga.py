"""The DEAP genetic algorithm of OCM (paper Eq. 2-3): extremise the summed flexible power.

The decision vector lives in the box ``lower_kw <= x <= upper_kw`` (paper Eq. 4); dimensions with
``lower == upper`` are held fixed and are not genes. Genes are normalised to [0, 1]. Every
generation's new individuals are evaluated in ONE batched load-flow call.

Constraint handling (Deb's feasibility rules as a single fitness): a feasible individual scores its
objective ``sense * sum(x)``; an infeasible one scores ``floor - 1 - 1e6 * violation``, where
``floor`` is the lowest objective any point of the box can reach. Hence no infeasible individual
ever beats a feasible one, and among infeasible ones the smaller violation wins.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
from deap import base, creator, tools
from deap.tools import crossover, mutation, selection

from capacity.ocm.policy import snap_to_operating_set
from capacity.ocm.problem import StepProblem

if not hasattr(creator, "OcmFitness"):
    creator.create("OcmFitness", base.Fitness, weights=(1.0,))
    creator.create("OcmIndividual", list, fitness=creator.OcmFitness)



class _ThreadRandom:
    """Stands in for the ``random`` module inside DEAP's operator modules: while a GA runs in a
    thread (:meth:`seeded`), their draws come from that thread's own ``random.Random(seed)``;
    otherwise from the ``random`` module as before. DEAP's operators draw from the module's one
    global generator, so any other thread drawing meanwhile (Dask's worker event loop picks
    peers with ``random.choice``) changed the GA's sequence and, through near-ties between
    flexibilities, the bands. ``Random(seed)`` gives the very sequence ``random.seed(seed)``
    gave, so undisturbed results are unchanged."""

    def __init__(self) -> None:
        self._local = threading.local()

    def __getattr__(self, name: str) -> Any:
        rng = getattr(self._local, "rng", None)
        return getattr(random if rng is None else rng, name)

    @contextmanager
    def seeded(self, seed: int) -> Iterator[random.Random]:
        previous = getattr(self._local, "rng", None)
        self._local.rng = random.Random(seed)
        try:
            yield self._local.rng
        finally:
            self._local.rng = previous


_RANDOM = _ThreadRandom()
for _module in (selection, crossover, mutation):
    _module.random = _RANDOM  # type: ignore[attr-defined]

#: Fitness weight of one pu of voltage violation for infeasible individuals.
_VIOLATION_WEIGHT = 1e6


@dataclass(frozen=True)
class GaSettings:
    """GA parameters: small population, warm start and early stop keep a step cheap.

    ``patience``: stop after this many generations whose best improved by less than
    ``tolerance_kw``.
    """

    population: int = 16
    max_generations: int = 10
    patience: int = 2
    crossover_prob: float = 0.9
    mutation_prob: float = 0.5
    eta_crossover: float = 15.0
    eta_mutation: float = 20.0
    n_elite: int = 2
    tolerance_kw: float = 1e-3

    def __post_init__(self) -> None:
        if self.population < 4:
            raise ValueError(f"GA population must be >= 4, got {self.population}")
        if self.max_generations < 0 or self.patience < 1:
            raise ValueError("GA max_generations must be >= 0 and patience >= 1")
        if not 0 <= self.n_elite < self.population:
            raise ValueError("GA n_elite must lie in [0, population)")


@dataclass
class Extreme:
    """Best setting found for one sense: powers (n_flex,) kW, its violation (pu, 0 = feasible)."""

    x_kw: np.ndarray
    violation_pu: float
    generations: int = 0

    @property
    def feasible(self) -> bool:
        return self.violation_pu <= 0.0


def _fitness(sense: float, x_kw: np.ndarray, viol: np.ndarray, floor: float) -> np.ndarray:
    objective = sense * x_kw.sum(axis=1)
    return np.where(viol <= 0.0, objective, floor - 1.0 - _VIOLATION_WEIGHT * viol)


def run_ga(
    problem: StepProblem,
    sense: float,
    lower_kw: np.ndarray,
    upper_kw: np.ndarray,
    seeds_kw: list[np.ndarray],
    settings: GaSettings,
    seed: int,
    margin_pu: float = 0.0,
    on_kw: np.ndarray | None = None,
) -> Extreme:
    """Maximise (``sense=+1``) or minimise (``-1``) ``sum(x)`` over the box s.t. voltage limits.

    ``seeds_kw``: warm-start settings (clipped into the box) placed in the first population,
    e.g. the previous step's solution. ``on_kw`` (n_flex,): chargers' minimum-current powers;
    every individual is snapped into ``{0} u [on, upper]`` before its load flow
    (``capacity.ocm.policy.snap_to_operating_set``). Deterministic for a given ``seed``.
    """
    lower_kw = np.asarray(lower_kw, dtype=float)
    upper_kw = np.asarray(upper_kw, dtype=float)
    free = upper_kw - lower_kw > 1e-9
    n_free = int(free.sum())
    span = (upper_kw - lower_kw)[free]
    floor = min(sense * lower_kw.sum(), sense * upper_kw.sum())

    def to_kw(genes: np.ndarray) -> np.ndarray:
        x = np.tile(lower_kw, (genes.shape[0], 1))
        x[:, free] = lower_kw[free] + np.clip(genes, 0.0, 1.0) * span
        return x if on_kw is None else snap_to_operating_set(x, on_kw, upper_kw)

    if n_free == 0:
        viol, _ = problem.evaluate(lower_kw[None, :], margin_pu)
        return Extreme(lower_kw.copy(), float(viol[0]), 0)

    genes0 = _initial_genes(lower_kw, upper_kw, free, seeds_kw, settings.population, seed)

    with _RANDOM.seeded(seed):
        pop = [creator.OcmIndividual(g.tolist()) for g in genes0]
        best_x, best_viol, best_fit = _evaluate(problem, pop, to_kw, sense, floor, margin_pu)
        stall, generations = 0, 0
        for generation in range(1, settings.max_generations + 1):
            generations = generation
            elites, offspring = _next_generation(pop, settings, n_free)
            fresh = [ind for ind in offspring if not ind.fitness.valid]
            if not fresh:
                stall += 1
                pop = elites + offspring
                if stall >= settings.patience:
                    break
                continue
            x, viol, fit = _evaluate(problem, fresh, to_kw, sense, floor, margin_pu)
            pop = elites + offspring
            if fit > best_fit + settings.tolerance_kw:
                stall = 0
            else:
                stall += 1
            if fit > best_fit:
                best_x, best_viol, best_fit = x, viol, fit
            if stall >= settings.patience:
                break
    return Extreme(best_x, best_viol, generations)


def _initial_genes(
    lower_kw: np.ndarray,
    upper_kw: np.ndarray,
    free: np.ndarray,
    seeds_kw: list[np.ndarray],
    population: int,
    seed: int,
) -> np.ndarray:
    """First population (population, n_free) in [0, 1]: the all-low and all-high corners, the
    warm-start settings (clipped into the box), then uniform random individuals."""
    n_free = int(free.sum())
    span = (upper_kw - lower_kw)[free]
    rng = np.random.default_rng(seed)
    starts = [np.zeros(n_free), np.ones(n_free)]
    for s in seeds_kw:
        s = np.clip(np.asarray(s, dtype=float), lower_kw, upper_kw)
        starts.append((s[free] - lower_kw[free]) / span)
    starts = starts[:population]
    n_random = population - len(starts)
    return np.vstack([np.array(starts), rng.random((n_random, n_free))])


def _next_generation(pop: list, settings: GaSettings, n_free: int) -> tuple[list, list]:
    """(elites, offspring): the best ``n_elite`` kept, the rest by binary tournament, SBX
    crossover and polynomial mutation (fitness deleted where genes changed)."""
    elites = [_clone(ind) for ind in tools.selBest(pop, settings.n_elite)]
    offspring = [
        _clone(ind) for ind in tools.selTournament(pop, len(pop) - settings.n_elite, tournsize=2)
    ]
    for c1, c2 in zip(offspring[::2], offspring[1::2], strict=False):
        if _RANDOM.random() < settings.crossover_prob:
            tools.cxSimulatedBinaryBounded(c1, c2, settings.eta_crossover, 0.0, 1.0)
            del c1.fitness.values, c2.fitness.values
    for ind in offspring:
        if _RANDOM.random() < settings.mutation_prob:
            tools.mutPolynomialBounded(
                ind, settings.eta_mutation, 0.0, 1.0, indpb=max(1.0 / n_free, 0.25)
            )
            del ind.fitness.values
    return elites, offspring


def _clone(ind: list) -> list:
    """A copy of an individual with its fitness (cheaper than copy.deepcopy)."""
    new = creator.OcmIndividual(ind)
    if ind.fitness.valid:
        new.fitness.values = ind.fitness.values
    return new


def _evaluate(
    problem: StepProblem,
    individuals: list,
    to_kw: Callable[[np.ndarray], np.ndarray],
    sense: float,
    floor: float,
    margin_pu: float,
) -> tuple[np.ndarray, float, float]:
    """Evaluate individuals in one batched call; set fitness; return the batch's best."""
    x_kw = to_kw(np.array(individuals, dtype=float))
    viol, _ = problem.evaluate(x_kw, margin_pu)
    fit = _fitness(sense, x_kw, viol, floor)
    for ind, f in zip(individuals, fit, strict=True):
        ind.fitness.values = (float(f),)
    i = int(np.argmax(fit))
    return x_kw[i].copy(), float(viol[i]), float(fit[i])
