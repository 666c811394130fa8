"""Nevergrad: every ``Optimizer.tell`` the loop makes is an iteration, reported by
:class:`loopwatch.nevergrad.Callback` once the tell has returned (a tell that raises is
the loop's, and reports nothing). Optimizers that delegate to others (``NGOpt``,
portfolios, chains) tell their inner optimizers from inside their own ``tell``: only
the outermost call counts. An iteration runs from the candidate's ``ask`` to its
``tell``. An optimizer with the adapter registered by hand is left to it."""

from __future__ import annotations

import functools
import threading
import time
import weakref
from typing import Any, Dict, List, MutableMapping, Tuple

from . import Patch, hook_point, owns_search, safely, stood_down

FRAMEWORK = "nevergrad"
#: Most asked candidates whose ask time is kept per optimizer.
MAX_ASKED = 4096

_local = threading.local()
_states: MutableMapping[Any, Tuple[Any, Dict[str, float]]] = weakref.WeakKeyDictionary()
_lock = threading.Lock()


def _state(optimizer: Any) -> Tuple[Any, Dict[str, float]]:
    with _lock:
        found = _states.get(optimizer)
        if found is None:
            import loopwatch.nevergrad

            found = (loopwatch.nevergrad.Callback(), {})
            _states[optimizer] = found
        return found


def _has_adapter(optimizer: Any) -> bool:
    import loopwatch.nevergrad

    callbacks = getattr(optimizer, "_callbacks", None) or {}
    return any(isinstance(c, loopwatch.nevergrad.Callback) for c in callbacks.get("tell", ()))


def _asked(optimizer: Any, candidate: Any) -> None:
    if not owns_search(FRAMEWORK) or _has_adapter(optimizer):
        return  # (claimed before the candidate is evaluated: what that starts inherits it)
    _, asked = _state(optimizer)
    if len(asked) >= MAX_ASKED:
        del asked[next(iter(asked))]
    asked[str(candidate.uid)] = time.time()


def _told(optimizer: Any, candidate: Any) -> None:
    if stood_down(FRAMEWORK) or not owns_search(FRAMEWORK) or _has_adapter(optimizer):
        return
    loss = getattr(candidate, "loss", None)
    if loss is None:
        return  # a multi-objective reference point, not an evaluation
    adapter, asked = _state(optimizer)
    adapter.record(optimizer, candidate, loss, asked.pop(str(candidate.uid), None))


def _outermost(name: str, original: Any, after: Any) -> Any:
    @functools.wraps(original)
    def method(self: Any, *args: Any, **kwargs: Any) -> Any:
        # One depth for both: an optimizer that asks or tells others (a portfolio's
        # members, a metamodel's inner optimizer) does it inside its own ask or tell.
        depth = getattr(_local, "depth", 0)
        _local.depth = depth + 1
        try:
            result = original(self, *args, **kwargs)
        finally:
            _local.depth = depth
        if depth == 0:
            if name == "tell":
                candidate = args[0] if args else kwargs.get("candidate")
            else:
                candidate = result
            safely(FRAMEWORK, after, self, candidate)
        return result

    return method


def plan(module: Any) -> List[Patch]:
    """The patches for an imported ``nevergrad``: ``Optimizer.ask`` and ``tell``."""
    optimizer = hook_point(module, "optimization.base.Optimizer")
    tell = hook_point(optimizer, "tell")
    ask = hook_point(optimizer, "ask")
    hook_point(optimizer, "register_callback")
    return [
        Patch(optimizer, "tell", _outermost("tell", tell, _told)),
        Patch(optimizer, "ask", _outermost("ask", ask, _asked)),
    ]
