"""DEAP adapter: record one generation of a genetic algorithm.

::

    import loopwatch, loopwatch.deap

    for generation in range(NGEN):
        with loopwatch.iteration() as it:
            offspring = algorithms.varAnd(population, toolbox, cxpb, mutpb)
            ...evaluate, select...
            hof.update(population)
            loopwatch.deap.record(it, population, hof)

Each individual with a valid fitness is a success carrying its first fitness value (or
``fitness_index``) as the score; one without is a failure ("invalid fitness"). The
population's diversity is the mean pairwise distance of the genomes, gene by gene,
bounded to [0, 1]: genes that are equal count 0, others their difference over the
span of gene values (``bounds``, or the population's own span), so bit strings give
the normalised Hamming distance and a population of clones reads 0. The champion is
the hall of fame's best (else the fittest individual). Large populations are sampled
(``max_pairs``) so that recording stays cheap.

Each individual's evaluation, as it runs (in the loop's process or in a pool's
worker, through ``toolbox.map``), is reported once the toolbox's ``evaluate`` is
wrapped::

    toolbox.register("evaluate", evaluate)
    loopwatch.deap.evaluations(toolbox)    # each call an evaluation: ok, or failed
"""

from __future__ import annotations

import hashlib
import random
from typing import Any, Optional, Sequence, Tuple

import loopwatch
from loopwatch._evaluation import _Evaluated

__all__ = ["evaluations", "genome_diversity", "record"]


def _genes(individual: Any) -> Tuple[Any, ...]:
    return tuple(individual)


def _numeric(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, complex)


def genome_diversity(
    population: Sequence[Any],
    bounds: Optional[Tuple[float, float]] = None,
    max_pairs: int = 5000,
    seed: int = 0,
) -> float:
    """Mean pairwise gene-wise distance of the genomes, in [0, 1]."""
    genomes = [_genes(ind) for ind in population]
    if len(genomes) < 2:
        return 0.0
    if bounds is not None:
        span = float(bounds[1]) - float(bounds[0])
    else:
        numbers = [g for genome in genomes for g in genome if _numeric(g)]
        span = (max(numbers) - min(numbers)) if numbers else 0.0
    n = len(genomes)
    all_pairs = n * (n - 1) // 2
    if all_pairs <= max_pairs:
        pairs = [(i, j) for i in range(n) for j in range(i + 1, n)]
    else:
        rng = random.Random(seed)
        pairs = []
        for _ in range(max_pairs):
            i, j = rng.sample(range(n), 2)
            pairs.append((i, j))
    total = 0.0
    for i, j in pairs:
        a, b = genomes[i], genomes[j]
        length = max(len(a), len(b))
        if length == 0:
            continue
        distance = float(abs(len(a) - len(b)))
        for x, y in zip(a, b):
            if x == y:
                continue
            if _numeric(x) and _numeric(y) and span > 0:
                distance += min(abs(float(x) - float(y)) / span, 1.0)
            else:
                distance += 1.0
        total += distance / length
    return min(max(total / len(pairs), 0.0), 1.0)


def _name(individual: Any) -> str:
    digest = hashlib.blake2b(repr(_genes(individual)).encode(), digest_size=6).hexdigest()
    return "ind-" + digest


def record(
    it: "loopwatch.Iteration",
    population: Sequence[Any],
    halloffame: Optional[Sequence[Any]] = None,
    fitness_index: int = 0,
    bounds: Optional[Tuple[float, float]] = None,
) -> None:
    """Records a generation's outcomes and population into an open iteration."""
    try:
        for individual in population:
            fitness = getattr(individual, "fitness", None)
            if fitness is not None and fitness.valid:
                it.success(sharpe=fitness.values[fitness_index])
            else:
                it.failure("invalid fitness")
        unique = len({_genes(ind) for ind in population})
        champion = None
        if halloffame is not None and len(halloffame) > 0:
            champion = _name(halloffame[0])
        else:
            valid = [ind for ind in population if ind.fitness.valid]
            if valid:
                champion = _name(max(valid, key=lambda ind: ind.fitness))
        it.population(
            size=len(population),
            unique=unique,
            diversity=genome_diversity(population, bounds),
            champion=champion,
        )
    except Exception:  # noqa: BLE001 - monitoring never breaks the algorithm
        pass


def evaluations(toolbox: Any, alias: str = "evaluate") -> None:
    """Wraps the toolbox's ``evaluate`` (or ``alias``) so that each individual's
    evaluation is reported while it runs (``loopwatch.evaluated``: ``ok`` when it
    returns, ``failed`` with the exception's type when it raises; the id
    ``evaluate-<pid>-<n>``), in this process or in a pool's worker. Wrapping twice
    wraps once; a toolbox without it is left as it is."""
    try:
        function = getattr(toolbox, alias, None)
        if function is None or isinstance(function, _Evaluated):
            return
        setattr(toolbox, alias, loopwatch.evaluated(function))
    except Exception:  # noqa: BLE001 - monitoring never breaks the algorithm
        pass
