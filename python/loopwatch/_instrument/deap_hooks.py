"""DEAP: every ``Logbook.record`` is a generation, so an iteration.

Inside the ``algorithms.ea*`` helpers (``eaSimple``, ``eaMuPlusLambda``,
``eaMuCommaLambda``, ``eaGenerateUpdate``) the generation carries its population's
outcomes, diversity and champion, as :func:`loopwatch.deap.record` reports them (the
helpers update the caller's population list in place before they record; the
hall of fame, when given, names the champion). ``eaGenerateUpdate`` keeps its
population to itself: its generations carry their time only (a population reported
empty would read as a diversity collapse).

In a loop written by hand, a record is a generation with its time (from the
previous record of the same logbook, the first from the logbook's creation) and no
outcomes. It is sent when the next record comes (or at exit), so that a loop that
reports its own iterations (``loopwatch.iteration()`` after its generation-0 record)
is seen before anything is counted twice.
"""

from __future__ import annotations

import atexit
import functools
import threading
import time
from typing import Any, Dict, List, Optional, Tuple

from . import Patch, hook_point, owns_search, safely, stood_down, wrap_method

FRAMEWORK = "deap"

#: The helpers and the positions of their population and hall of fame parameters.
HELPERS: Dict[str, Tuple[Optional[int], int]] = {
    "eaSimple": (0, 6),
    "eaMuPlusLambda": (0, 8),
    "eaMuCommaLambda": (0, 8),
    "eaGenerateUpdate": (None, 2),
}

_local = threading.local()
_lock = threading.Lock()
#: Logbook id → when its last generation ended (or it was created).
_marks: Dict[int, float] = {}
#: A hand-written loop's last generation, not sent yet: (start, end).
_pending: Optional[Tuple[float, float]] = None


def _reporting() -> bool:
    return not stood_down(FRAMEWORK) and owns_search(FRAMEWORK)


def _send_generation(start: float, end: float, population: Any = None, halloffame: Any = None) -> None:
    import loopwatch
    import loopwatch.deap

    it = loopwatch.iteration(start)
    try:
        if population is not None:
            loopwatch.deap.record(it, population, halloffame)
    finally:
        it.end(end)


def _flush_pending() -> None:
    global _pending
    with _lock:
        pending, _pending = _pending, None
    if pending is not None and _reporting():
        _send_generation(*pending)


def _helper_started(name: str, args: Tuple[Any, ...], kwargs: Dict[str, Any]) -> None:
    owns_search(FRAMEWORK)  # before the first evaluation: what it starts inherits the claim
    _flush_pending()
    population_at, halloffame_at = HELPERS[name]
    population = None
    if population_at is not None:
        population = args[population_at] if len(args) > population_at else kwargs.get("population")
    halloffame = args[halloffame_at] if len(args) > halloffame_at else kwargs.get("halloffame")
    stack: List[Dict[str, Any]] = getattr(_local, "helpers", None) or []
    stack.append({"population": population, "halloffame": halloffame, "last": time.time()})
    _local.helpers = stack


def _helper(name: str, original: Any) -> Any:
    def before(*args: Any, **kwargs: Any) -> None:
        _helper_started(name, args, kwargs)

    wrapped = wrap_method(FRAMEWORK, original, before=before)

    @functools.wraps(original)
    def helper(*args: Any, **kwargs: Any) -> Any:
        depth = len(getattr(_local, "helpers", None) or ())
        try:
            return wrapped(*args, **kwargs)
        finally:
            stack = getattr(_local, "helpers", None)
            if stack is not None:
                del stack[depth:]

    return helper


def _recorded(_result: Any, logbook: Any, **infos: Any) -> None:
    global _pending
    now = time.time()
    stack = getattr(_local, "helpers", None)
    if stack:
        context = stack[-1]
        start, context["last"] = context["last"], now
        if _reporting():
            _send_generation(start, now, context["population"], context["halloffame"])
        return
    with _lock:
        start = _marks.get(id(logbook), now)
        _marks[id(logbook)] = now
        pending, _pending = _pending, (start, now)
    if pending is not None and _reporting():
        _send_generation(*pending)


def _created(_result: Any, logbook: Any, *args: Any, **kwargs: Any) -> None:
    with _lock:
        _marks[id(logbook)] = time.time()


def plan_tools(module: Any) -> List[Patch]:
    """The patches for an imported ``deap.tools``: ``Logbook.record`` and ``__init__``."""
    logbook = hook_point(module, "Logbook")
    record = hook_point(logbook, "record")
    init = hook_point(logbook, "__init__")
    import loopwatch  # noqa: F401 - its exit handler first, so that ours runs before it

    atexit.register(lambda: safely(FRAMEWORK, _flush_pending))
    return [
        Patch(logbook, "record", wrap_method(FRAMEWORK, record, after=_recorded)),
        Patch(logbook, "__init__", wrap_method(FRAMEWORK, init, after=_created)),
    ]


def plan_algorithms(module: Any) -> List[Patch]:
    """The patches for an imported ``deap.algorithms``: the ``ea*`` helpers."""
    found = {name: hook_point(module, name) for name in HELPERS}
    return [Patch(module, name, _helper(name, original)) for name, original in found.items()]
