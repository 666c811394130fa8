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
the best trial. A multi-objective study's trial is scored by its first objective
(signed by that objective's direction), and its champion is the trial best at that
objective so far (one of the Pareto front). This module imports nothing from Optuna:
it reads the objects Optuna passes to callbacks.

Each finished trial is also an evaluation (``trial-<number>``, with the trial's own
start and end): ``ok`` when COMPLETE, ``failed`` with ``pruned`` or ``fail`` as the
reason otherwise. The callback runs once a trial has finished, so a trial that hangs
is seen only when the objective is wrapped, which reports each trial as it starts
(the callback then adds no second one)::

    study.optimize(loopwatch.optuna.objective(objective), n_trials=200,
                   callbacks=[loopwatch.optuna.Callback()])
"""

from __future__ import annotations

import collections
import functools
import itertools
import math
from typing import Any, Callable, Dict, List, Optional, Tuple, TypeVar

import loopwatch
from loopwatch._evaluation import _reported

__all__ = ["Callback", "objective", "parameter_diversity"]

F = TypeVar("F", bound=Callable[..., Any])

#: Trials the wrapped objective reported while they ran, until the callback sees
#: them end (at most this many kept: an objective wrapped without the callback).
_MAX_LIVE = 4096
_live: "collections.OrderedDict[Any, None]" = collections.OrderedDict()


def _trial_key(trial: Any) -> Any:
    """A trial's key in its storage (its number within one study, else)."""
    return getattr(trial, "_trial_id", None), getattr(trial, "number", None)


def _trial_id(trial: Any, *args: Any, **kwargs: Any) -> str:
    return "trial-%d" % trial.number


def objective(func: F) -> F:
    """The objective ``func``, each trial reported as an evaluation while it runs
    (``trial-<number>``: ``ok`` when it returns, ``failed`` with the exception's type
    when it raises, ``TrialPruned`` included), so that one that hangs is seen."""
    evaluated = loopwatch.evaluated(func, id=_trial_id)

    @functools.wraps(func)
    def run(trial: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            _live[_trial_key(trial)] = None
            while len(_live) > _MAX_LIVE:
                _live.popitem(last=False)
        except Exception:  # noqa: BLE001 - monitoring never breaks the study
            pass
        return evaluated(trial, *args, **kwargs)

    return run  # type: ignore[return-value]


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
        #: The best score so far and its trial's number (a multi-objective study's
        #: champion: Optuna has no single best trial there).
        self._best: Optional[Tuple[float, int]] = None

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
            score = self._score(study, trial) if state == "COMPLETE" else None
            if score is not None:
                it.success(sharpe=score)
                if self._best is None or score > self._best[0]:
                    self._best = (score, trial.number)
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
        key = _trial_key(trial)
        reported_live = key in _live
        _live.pop(key, None)
        if not reported_live:
            # Not reported while it ran: reported now, with its own times.
            _reported(
                "trial-%d" % trial.number,
                started.timestamp() if started is not None else None,
                ended.timestamp() if ended is not None else None,
                "ok" if state == "COMPLETE" else "failed",
                None if state == "COMPLETE" else state.lower(),
            )

    @staticmethod
    def _score(study: Any, trial: Any) -> Optional[float]:
        """The trial's (first) objective value, negated when that objective is
        minimised; None without one. ``values`` and ``directions``, which a
        multi-objective study has (``value`` and ``direction`` raise there)."""
        values = getattr(trial, "values", None)
        if not values or values[0] is None:
            return None
        value = float(values[0])
        directions = getattr(study, "directions", None) or ()
        direction = getattr(directions[0], "name", "MAXIMIZE") if directions else "MAXIMIZE"
        return -value if direction == "MINIMIZE" else value

    def _champion(self, study: Any) -> Optional[str]:
        if len(getattr(study, "directions", None) or ()) > 1:
            return None if self._best is None else "trial-%d" % self._best[1]
        try:
            return "trial-%d" % study.best_trial.number
        except (ValueError, RuntimeError, AttributeError):
            return None
