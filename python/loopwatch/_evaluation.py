"""Evaluations: ``with loopwatch.evaluation(id)`` and ``@loopwatch.evaluated``.

An evaluation is one candidate's run (a program's evaluator, an individual's
back-test), often in a worker of a process pool; each reports its own start and end
(``evaluation_start``, ``evaluation_end``) with the pid of the process that runs it.
A worker inherits ``LOOPWATCH_SOCKET`` and opens its own connection (a forked one
drops its parent's, :func:`loopwatch._api._reset_after_fork`). Without the socket
nothing is written and a decorated function is called as it is.
"""

from __future__ import annotations

import functools
import itertools
import math
import os
import sys
from types import TracebackType
from typing import Any, Callable, Dict, Literal, Optional, Tuple, Type, TypeVar, Union, overload

from . import _api

F = TypeVar("F", bound=Callable[..., Any])

#: Numbers the evaluations that have no id of their own (``<name>-<pid>-<n>``).
_counter = itertools.count(1)

#: How far past its start an evaluation's queued time may be and still be taken as
#: its start (clocks read a moment apart, rounding); a later one is left out.
_QUEUED_SLACK_SECONDS = 1.0


def _path_id(value: Any) -> Optional[str]:
    """A str as it is and a path as its str; None for anything else, or empty."""
    if type(value) is str:
        return value or None
    if isinstance(value, (str, os.PathLike)):
        path = os.fspath(value)
        return (path if isinstance(path, str) else os.fsdecode(path)) or None
    return None


def _counted_id(name: str) -> str:
    """An id unique in the run: the name, this process's pid and a number."""
    return "%s-%d-%d" % (name, os.getpid(), next(_counter))


def _queued_time(queued: Any, started_ns: int) -> Any:
    """The time an evaluation was queued, as the protocol takes it: Unix seconds no
    later than its start (a moment later is its start, in nanoseconds); None when it
    is not a time, or is well after the start."""
    if queued is None:
        return None
    try:
        at = float(queued)
    except (TypeError, ValueError, OverflowError):
        return None
    if not math.isfinite(at) or at < 0:
        return None
    started = started_ns / 1e9
    if at >= started:
        return started_ns if at - started <= _QUEUED_SLACK_SECONDS else None
    return at


def _is_timeout(exc_type: Type[BaseException]) -> bool:
    """Whether an exception says the evaluation ran out of time: a ``TimeoutError``
    (asyncio's and concurrent.futures' are one since Python 3.11) or
    ``subprocess.TimeoutExpired``."""
    if issubclass(exc_type, TimeoutError):
        return True
    subprocess = sys.modules.get("subprocess")
    expired = getattr(subprocess, "TimeoutExpired", None)
    return isinstance(expired, type) and issubclass(exc_type, expired)


class Evaluation:
    """An evaluation in progress, reported with the pid of the process running it.

    Use it as a context manager (``with loopwatch.evaluation(program_path) as e:``):
    it ends ``ok`` when the block completes; ``timeout`` on a ``TimeoutError`` (or
    ``subprocess.TimeoutExpired``); ``failed`` with the exception's type name as the
    reason on any other exception, which is re-raised. :meth:`ok`, :meth:`failed` and
    :meth:`timeout` end it at once with that outcome; the block's end then adds
    nothing. One left unended is ended ``failed`` (reason ``not ended``) when it is
    garbage-collected. Only the process that started it ends it: a forked child
    leaving the block writes nothing.
    """

    __slots__ = ("_id", "_pid", "_worker", "_ended")

    def __init__(self, id: Any, worker: Optional[str] = None, queued: Optional[float] = None) -> None:
        self._ended = True
        self._id = ""
        self._pid = 0
        self._worker: Optional[str] = None
        if not _api._reporting():
            return
        try:
            ident = _path_id(id)
            if ident is None and id is not None:
                ident = str(id) or None
            self._id = ident if ident is not None else _counted_id("evaluation")
            self._worker = None if worker is None else (str(worker) or None)
            self._pid = os.getpid()
            at = _api._now_ns()
            self._ended = False
            _api._put(("evaluation_start", self._id, self._pid, self._worker, _queued_time(queued, at), at))
        except Exception:  # noqa: BLE001 - reporting never raises into the loop
            pass

    @property
    def id(self) -> str:
        """The id it is reported under (empty when this process does not report)."""
        return self._id

    def ok(self) -> None:
        """Ends the evaluation: it completed, whatever its candidate scored."""
        self._end("ok", None)

    def failed(self, reason: Optional[str] = None) -> None:
        """Ends the evaluation as failed (the candidate could not run), with a short
        reason from a fixed vocabulary (at most 256 characters are sent)."""
        self._end("failed", reason)

    def timeout(self) -> None:
        """Ends the evaluation as timed out."""
        self._end("timeout", None)

    def _end(self, outcome: str, reason: Optional[str]) -> None:
        if self._ended:
            return
        try:
            if os.getpid() != self._pid:
                return  # a forked child: the evaluation is its parent's to end
            self._ended = True
            _api._put_soon(("evaluation_end", self._id, self._pid, self._worker, outcome, reason, _api._now_ns()))
        except Exception:  # noqa: BLE001 - reporting never raises into the loop
            pass

    def __enter__(self) -> "Evaluation":
        return self

    def __exit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> Literal[False]:
        if self._ended:
            return False
        if exc_type is None:
            self.ok()
        elif _is_timeout(exc_type):
            self.timeout()
        else:
            self.failed(exc_type.__name__)
        return False

    def __del__(self) -> None:
        if not self._ended:
            self.failed("not ended")


def _seconds_or_now(at: Any) -> Any:
    """A time passed in, in Unix seconds (finite, not before the epoch); now, in
    nanoseconds, for anything else."""
    try:
        seconds = float(at)
        if math.isfinite(seconds) and seconds >= 0:
            return seconds
    except (TypeError, ValueError, OverflowError):
        pass
    return _api._now_ns()


def _reported(ident: str, started: Any, ended: Any, outcome: str, reason: Optional[str] = None) -> None:
    """An evaluation this process ran, reported once it has ended, with its own start
    and end in Unix seconds (an adapter's: a finished Optuna trial). Never raises."""
    try:
        if not _api._reporting():
            return
        pid = os.getpid()
        _api._put(("evaluation_start", ident, pid, None, None, _seconds_or_now(started)))
        _api._put(("evaluation_end", ident, pid, None, outcome, reason, _seconds_or_now(ended)))
    except Exception:  # noqa: BLE001 - reporting never raises into the loop
        pass


def evaluation(id: Any, worker: Optional[str] = None, queued: Optional[float] = None) -> Evaluation:
    """Starts an evaluation; use it with ``with``.

    ``id`` names it, unique among the evaluations in flight: a program's path, a
    trial's number (a path is sent as its str; at most 256 characters are sent).
    ``worker`` names what runs it (a pool worker, a thread); ``queued`` is when it
    was queued, in Unix seconds (``time.time()``), for the time it waited. The pid
    sent is this process's.
    """
    return Evaluation(id, worker, queued)


Naming = Union[str, Callable[..., Any], None]


class _Evaluated:
    """A function whose every call is an evaluation (``@loopwatch.evaluated``)."""

    def __init__(self, func: Callable[..., Any], id: Optional[Callable[..., Any]], worker: Naming) -> None:
        self._func = func
        self._name_id = id
        self._worker = worker
        self._name = str(getattr(func, "__name__", "evaluation"))
        functools.update_wrapper(self, func)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if _api._client is None and _api._disabled:
            return self._func(*args, **kwargs)  # not reporting: the call as it is
        return self._call(0, *args, **kwargs)

    def _call(self, skip: int, *args: Any, **kwargs: Any) -> Any:
        if _api._client is None and _api._disabled:
            return self._func(*args, **kwargs)  # not reporting: the call as it is
        ident, worker = _names(self._name, self._name_id, self._worker, skip, args, kwargs)
        with Evaluation(ident, worker):
            return self._func(*args, **kwargs)

    def __get__(self, instance: Any, owner: Optional[type] = None) -> Any:
        # A method: bound as a function would be; its id is the argument after self.
        if instance is None:
            return self
        bound = functools.partial(self._call, 1, instance)
        functools.update_wrapper(bound, self._func)
        return bound

    def __reduce__(self) -> Union[str, Tuple[Any, ...]]:
        # Pickled by name when it is what its module holds under its name (the
        # decorator on a module's function), as a function is; else by value, so that
        # ``loopwatch.evaluated(f)`` goes to a process pool too.
        module = sys.modules.get(str(getattr(self, "__module__", "")))
        target: Any = module
        for part in str(getattr(self, "__qualname__", "")).split("."):
            target = getattr(target, part, None)
        if target is self:
            return str(getattr(self, "__qualname__"))
        return (_Evaluated, (self._func, self._name_id, self._worker))


def _names(
    name: str, ident: Optional[Callable[..., Any]], worker: Naming, skip: int, args: Tuple[Any, ...], kwargs: Dict[str, Any]
) -> Tuple[Any, Optional[str]]:
    """A call's evaluation id and worker: those the decorator's callables give, else
    the first argument when it is a str or a path, else a counted id. Never raises."""
    found: Any = None
    if ident is not None:
        try:
            found = ident(*args, **kwargs)
        except Exception:  # noqa: BLE001 - reporting never raises into the loop
            found = None
    elif len(args) > skip:
        found = _path_id(args[skip])
    if found is None or found == "":
        found = _counted_id(name)
    named: Optional[str] = None
    if worker is not None:
        try:
            named = str(worker(*args, **kwargs) if callable(worker) else worker)
        except Exception:  # noqa: BLE001
            named = None
    return found, named


def _evaluated_async(func: Callable[..., Any], ident: Optional[Callable[..., Any]], worker: Naming) -> Callable[..., Any]:
    """A coroutine function whose every call is an evaluation."""
    name = str(getattr(func, "__name__", "evaluation"))

    @functools.wraps(func)
    async def evaluated(*args: Any, **kwargs: Any) -> Any:
        if _api._client is None and _api._disabled:
            return await func(*args, **kwargs)
        found, named = _names(name, ident, worker, 0, args, kwargs)
        with Evaluation(found, named):
            return await func(*args, **kwargs)

    return evaluated


@overload
def evaluated(func: F, *, id: Optional[Callable[..., Any]] = None, worker: Naming = None) -> F: ...


@overload
def evaluated(
    func: None = None, *, id: Optional[Callable[..., Any]] = None, worker: Naming = None
) -> Callable[[F], F]: ...


def evaluated(
    func: Optional[Callable[..., Any]] = None,
    *,
    id: Optional[Callable[..., Any]] = None,
    worker: Naming = None,
) -> Any:
    """Reports every call of an evaluator function as an evaluation (as
    :func:`evaluation` does), keeping its return value, exceptions and signature.

    Bare (``@loopwatch.evaluated``) or with arguments
    (``@loopwatch.evaluated(id=lambda trial: "trial-%d" % trial.number)``). A call's
    id is what ``id`` returns for the call's arguments, else its first argument when
    that is a str or a path (``evaluate(program_path)``), else ``<name>-<pid>-<n>``.
    ``worker`` is a name, or a function of the call's arguments that returns one.
    Coroutine functions and methods work too; a decorated module-level function, or
    ``loopwatch.evaluated(f, id=…)`` (an ``id`` and ``worker`` that pickle), can be
    sent to a process pool.
    """

    def decorate(target: Callable[..., Any]) -> Any:
        import inspect  # only where a function is decorated

        if inspect.iscoroutinefunction(target):
            return _evaluated_async(target, id, worker)
        return _Evaluated(target, id, worker)

    if func is None:
        return decorate
    return decorate(func)
