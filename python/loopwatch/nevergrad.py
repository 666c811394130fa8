"""Nevergrad adapter: every ``tell`` is one loopwatch iteration.

::

    import nevergrad as ng
    import loopwatch, loopwatch.nevergrad

    optimizer = ng.optimizers.NGOpt(parametrization=ng.p.Array(shape=(4,)), budget=200)
    optimizer.register_callback("tell", loopwatch.nevergrad.Callback())
    optimizer.minimize(loss)
    loopwatch.done()

A told candidate with a finite loss is a success carrying the negated loss as its
score (Nevergrad minimises; loopwatch draws higher as better); a loss that is not
finite (NaN, infinity, or clipped by Nevergrad as too large) is a failure. For a
multi-objective optimisation the loss is the one Nevergrad passes to its callbacks
(its hypervolume-based scalar). The population is the last ``window`` told
candidates: their diversity is the mean pairwise distance of their standardized data
(:func:`loopwatch.deap.genome_diversity`, scaled by their own span), so an optimiser
that has converged on one point reads near 0; the champion is the candidate with the
lowest loss told so far. An iteration runs from the previous tell (the first from the
callback's creation) to this one. This module imports nothing from Nevergrad: it
reads the objects Nevergrad passes to callbacks.
"""

from __future__ import annotations

import math
import time
from typing import Any, List, Optional, Tuple

import loopwatch
import loopwatch.deap

__all__ = ["Callback"]

#: Nevergrad clips losses at this value ("rescale the cost function?"): a clipped
#: loss is a failure, not a score.
CLIPPED_LOSS = 5.0e20


def _vector(candidate: Any, optimizer: Any) -> Tuple[float, ...]:
    """The candidate's standardized data (Nevergrad's own normalised coordinates)."""
    try:
        data = candidate.get_standardized_data(reference=optimizer.parametrization)
    except Exception:  # noqa: BLE001 - a parametrization without standardized data
        return (hash(repr(getattr(candidate, "value", candidate))) % 1_000_003,)
    return tuple(float(x) for x in data.ravel())


class Callback:
    """A Nevergrad ``tell`` callback reporting each tell as an iteration.

    Register it with ``optimizer.register_callback("tell", Callback())``.
    """

    def __init__(self, window: int = 20) -> None:
        self.window = max(2, int(window))
        self._recent: List[Tuple[float, ...]] = []
        self._best: Optional[Tuple[float, str]] = None
        self._last = time.time()

    def __call__(self, optimizer: Any, candidate: Any, loss: Any) -> None:
        try:
            self.record(optimizer, candidate, loss)
        except Exception:  # noqa: BLE001 - monitoring never breaks the optimisation
            pass

    def record(self, optimizer: Any, candidate: Any, loss: Any, started_at: Optional[float] = None) -> None:
        """Reports one told candidate (what ``__call__`` does; exceptions are the
        caller's). ``started_at`` (Unix seconds) is when it was asked, if known."""
        now = time.time()
        start = self._last if started_at is None else min(float(started_at), now)
        self._last = now
        it = loopwatch.iteration(start)
        try:
            value = float(loss)
            if math.isfinite(value) and abs(value) < CLIPPED_LOSS:
                it.success(sharpe=-value)
                uid = str(getattr(candidate, "uid", ""))
                if self._best is None or value < self._best[0]:
                    self._best = (value, uid)
            else:
                it.failure("loss not finite")
            self._recent.append(_vector(candidate, optimizer))
            del self._recent[: -self.window]
            it.population(
                size=len(self._recent),
                unique=len(set(self._recent)),
                diversity=loopwatch.deap.genome_diversity(self._recent),
                champion=None if self._best is None else "cand-" + self._best[1][:32],
            )
        finally:
            it.end(now)
