"""Optuna: ``Study.optimize`` gets :class:`loopwatch.optuna.Callback` among its
callbacks, so every finished trial is an iteration (as the adapter documents),
unless the loop passes one itself."""

from __future__ import annotations

from typing import Any, Dict, List, Tuple

from . import Patch, hook_point, owns_search, safely, stood_down, wrap_method

FRAMEWORK = "optuna"
#: ``Study.optimize``'s positional parameters after ``self``, up to ``callbacks``.
_CALLBACKS_POSITION = 5  # func, n_trials, timeout, n_jobs, catch, callbacks


class AutoCallback:
    """The adapter's callback as the instrumentation runs it: its errors counted,
    nothing reported by a process that does not own the search or once the loop
    reports by itself."""

    def __init__(self) -> None:
        import loopwatch.optuna

        self.adapter = loopwatch.optuna.Callback()

    def __call__(self, study: Any, trial: Any) -> None:
        if stood_down(FRAMEWORK) or not owns_search(FRAMEWORK):
            return
        safely(FRAMEWORK, self.adapter._record, study, trial)


def _is_ours(callback: Any) -> bool:
    import loopwatch.optuna

    return isinstance(callback, (AutoCallback, loopwatch.optuna.Callback))


def _with_callback(*args: Any, **kwargs: Any) -> Tuple[Tuple[Any, ...], Dict[str, Any]]:
    """``optimize``'s arguments with the callback added (self is ``args[0]``)."""
    owns_search(FRAMEWORK)  # before the first trial: what its objective starts inherits the claim
    position = 1 + _CALLBACKS_POSITION
    if len(args) > position:
        callbacks = args[position]
    else:
        callbacks = kwargs.get("callbacks")
    listed = list(callbacks) if callbacks is not None else []
    if any(_is_ours(c) for c in listed):
        return args, kwargs  # the loop reports through the adapter itself
    listed.append(AutoCallback())
    if len(args) > position:
        args = args[:position] + (listed,) + args[position + 1 :]
    else:
        kwargs = dict(kwargs, callbacks=listed)
    return args, kwargs


def plan(module: Any) -> List[Patch]:
    """The patches for an imported ``optuna``."""
    study = hook_point(module, "study.Study")
    optimize = hook_point(study, "optimize")
    code = getattr(optimize, "__code__", None)
    names = code.co_varnames[: code.co_argcount] if code is not None else ()
    if names[: 2 + _CALLBACKS_POSITION][-1:] != ("callbacks",):
        from . import MissingHookPoint

        raise MissingHookPoint("Study.optimize(callbacks=...) as its 6th parameter")
    return [Patch(study, "optimize", wrap_method(FRAMEWORK, optimize, before=_with_callback))]
