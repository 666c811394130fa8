"""Optuna adapter: every finished trial is one loopwatch iteration.

::

    import optuna
    import loopwatch.optuna

    study = optuna.create_study(direction="maximize")
    study.optimize(objective, n_trials=200, callbacks=[loopwatch.optuna.Callback()])
    loopwatch.done()

A COMPLETE trial is a success carrying its objective value as the score (negated for a
study that minimises, so that higher is better everywhere loopwatch draws it); FAIL and
PRUNED trials are failures with the state as the reason. The population is the last
``window`` finished trials: its diversity is the mean pairwise distance of their
parameters (each scaled to its distribution's range, categorical ones 0 or 1), so a
sampler that has converged on one corner of the space reads near 0; the champion is
the best trial. This module imports nothing from Optuna: it reads the objects Optuna
passes to callbacks.
"""

from __future__ import annotations

import itertools
import math
from typing import Any, Dict, List, Optional

import loopwatch

__all__ = ["Callback", "parameter_diversity"]


def _span(distribution: Any) -> Optional[float]:
    """The numeric range of an Optuna distribution, or None for a categorical one."""
    low = getattr(distribution, "low", None)
    high = getattr(distribution, "high", None)
    if low is None or high is None:
        return None
    if getattr(distribution, "log", False) and low > 0 and high > 0:
        return math.log(high) - math.log(low)
    return float(high) - float(low)


def _distance(a: Dict[str, Any], b: Dict[str, Any], distributions: Dict[str, Any]) -> float:
    names = set(a) | set(b)
    if not names:
        return 0.0
    total = 0.0
    for name in names:
        if name not in a or name not in b:
            total += 1.0
            continue
        distribution = distributions.get(name)
        span = _span(distribution) if distribution is not None else None
        if span is None or span <= 0:
            total += 0.0 if a[name] == b[name] else 1.0
            continue
        x, y = float(a[name]), float(b[name])
        if getattr(distribution, "log", False) and x > 0 and y > 0:
            x, y = math.log(x), math.log(y)
        total += min(abs(x - y) / span, 1.0)
    return total / len(names)


def parameter_diversity(trials: List[Any]) -> float:
    """Mean pairwise distance of the trials' parameters, each scaled to [0, 1]."""
    if len(trials) < 2:
        return 0.0
    pairs = list(itertools.combinations(trials, 2))
    total = sum(
        _distance(a.params, b.params, {**a.distributions, **b.distributions}) for a, b in pairs
    )
    return min(max(total / len(pairs), 0.0), 1.0)


class Callback:
    """An Optuna callback reporting each finished trial as an iteration."""

    def __init__(self, window: int = 20) -> None:
        self.window = max(2, int(window))
        self._recent: List[Any] = []

    def __call__(self, study: Any, trial: Any) -> None:
        try:
            self._record(study, trial)
        except Exception:  # noqa: BLE001 - monitoring never breaks the study
            pass

    def _record(self, study: Any, trial: Any) -> None:
        state = getattr(trial.state, "name", str(trial.state))
        # The trial is the iteration: its own start and end times, not the callback's.
        started = getattr(trial, "datetime_start", None)
        ended = getattr(trial, "datetime_complete", None)
        it = loopwatch.iteration(started.timestamp() if started is not None else None)
        try:
            if state == "COMPLETE" and trial.value is not None:
                it.success(sharpe=self._score(study, trial.value))
            else:
                it.failure(state.lower())
            if state == "COMPLETE":
                self._recent.append(trial)
                del self._recent[: -self.window]
            if self._recent:
                keys = {tuple(sorted((k, repr(v)) for k, v in t.params.items())) for t in self._recent}
                it.population(
                    size=len(self._recent),
                    unique=len(keys),
                    diversity=parameter_diversity(self._recent),
                    champion=self._champion(study),
                )
        finally:
            it.end(ended.timestamp() if ended is not None else None)

    @staticmethod
    def _score(study: Any, value: float) -> float:
        direction = getattr(getattr(study, "direction", None), "name", "MAXIMIZE")
        return -value if direction == "MINIMIZE" else value

    @staticmethod
    def _champion(study: Any) -> Optional[str]:
        try:
            return "trial-%d" % study.best_trial.number
        except (ValueError, RuntimeError, AttributeError):
            return None
