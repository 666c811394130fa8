"""Evaluations: ``with loopwatch.evaluation(id)`` and ``@loopwatch.evaluated``.

An evaluation is one candidate's run (a program's evaluator, an individual's
back-test), often in a worker of a process pool; each reports its own start and end
(``evaluation_start``, ``evaluation_end``) with the pid of the process that runs it.
A worker inherits ``LOOPWATCH_SOCKET`` and opens its own connection (a forked one
drops its parent's, :func:`loopwatch._api._reset_after_fork`). Without the socket
nothing is written and a decorated function is called as it is.

Under ``loopwatch run --on-hung-evaluation kill`` a hung evaluation is interrupted
before its process is ended: the first evaluation started in a process's main thread,
or the first function decorated there, installs a handler for ``SIGUSR2`` (only where
``SIGUSR2`` has its default action: a handler of the program's own is never
replaced). Each evaluation then says ``interruptible`` when it starts, and on
``SIGUSR2`` the oldest evaluation of the process in progress raises
:class:`EvaluationInterrupted` (a ``TimeoutError``) where it runs: in the main
thread, from the handler; in another thread, as an asynchronous exception (CPython's
``PyThreadState_SetAsyncExc``, where the thread next runs Python code). The
evaluation ends ``timeout``, the evaluator raises as after the loop's own timeout,
and the process (a pool's worker) goes on. Without an evaluation in progress the
signal does nothing; nothing is ever raised outside one.
"""

from __future__ import annotations

import functools
import itertools
import math
import os
import signal
import sys
import threading
import weakref
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


class EvaluationInterrupted(TimeoutError):
    """Raised in an evaluation that ``loopwatch run --on-hung-evaluation kill``
    interrupted because it hung (``SIGUSR2`` to its process).

    A ``TimeoutError``: the evaluation ends ``timeout`` (loopwatch counts it as killed),
    and a loop that handles its own evaluations' timeouts (OpenEvolve's
    ``asyncio.TimeoutError`` is a ``TimeoutError`` since Python 3.11) goes on as after
    one of them.
    """


#: The signal a supervisor interrupts a hung evaluation with (none on Windows).
INTERRUPT_SIGNAL: Optional[signal.Signals] = getattr(signal, "SIGUSR2", None)
#: A signal's handler, as ``_signal`` (in C) reads it: ``signal.getsignal`` wraps it in
#: an enum, at a hundred times the cost of the read, for every evaluation's start.
_getsignal: Callable[[int], Any] = getattr(sys.modules.get("_signal"), "getsignal", signal.getsignal)
#: Its number, 0 where there is none.
_SIGNUM = 0 if INTERRUPT_SIGNAL is None else int(INTERRUPT_SIGNAL)

#: How long the handler waits for an evaluation of another thread that is ending
#: (holding the lock for a moment) before it lets the signal go.
_LOCK_SECONDS = 0.2

#: This process's evaluations that can be interrupted, by ``id()``, in the order they
#: started. Weak: one left unended is still garbage (and ended ``failed`` then).
_interruptible: "Dict[int, weakref.ReferenceType[Evaluation]]" = {}
#: ``id()``, where an argument named ``id`` hides it.
_key = id
#: Held while an interrupt is sent to another thread, and while an evaluation of
#: another thread than the main one ends: none is raised in one that has ended.
_interrupt_lock = threading.Lock()
#: Whether this process tried to install the handler (once; a forked child inherits
#: the handler and this with it).
_handler_tried = False
#: Raises an exception in another thread, or clears one not raised yet (None): looked
#: up on first use; False where it cannot be (not CPython, no ctypes).
_thread_interrupter: Any = None
#: The main thread's id: the one the handler runs in.
_main_thread = threading.main_thread().ident
#: ``asyncio``'s running loop of this thread, once ``asyncio`` is imported.
_running_loop: Any = None


def _reset_after_fork() -> None:
    # The parent's evaluations are not the child's to interrupt; the lock may have
    # been held by a thread that does not exist in the child, whose main thread is
    # the one that forked.
    global _interrupt_lock, _main_thread
    _interruptible.clear()
    _interrupt_lock = threading.Lock()
    _main_thread = threading.get_ident()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_after_fork)


def _interrupts_wanted() -> bool:
    """Whether ``loopwatch run`` acts on hung evaluations (``--on-hung-evaluation
    kill`` sets ``LOOPWATCH_ON_HUNG_EVALUATION=kill``): only then is the handler
    installed and an evaluation said to be interruptible."""
    return os.environ.get("LOOPWATCH_ON_HUNG_EVALUATION") == "kill"


def _install_handler() -> None:
    """In the main thread: installs the handler, once per process, when ``SIGUSR2``
    has its default action and ``loopwatch run`` acts on hung evaluations. Never
    raises."""
    global _handler_tried
    if _handler_tried or INTERRUPT_SIGNAL is None or not _interrupts_wanted():
        return
    _handler_tried = True
    try:
        if _getsignal(INTERRUPT_SIGNAL) == signal.SIG_DFL:
            signal.signal(INTERRUPT_SIGNAL, _on_interrupt)
    except (ValueError, OSError, RuntimeError, TypeError):
        pass  # not the main interpreter's main thread, or no such signal here


def _interrupter() -> Any:
    """The function raising an exception in another thread (None clears it), once it
    is looked up; False where there is none."""
    global _thread_interrupter
    if _thread_interrupter is None:
        try:
            if sys.implementation.name != "cpython":
                raise ImportError
            import ctypes

            # A function object of its own (not pythonapi's shared attribute, whose
            # argtypes others may set); None is passed as NULL.
            set_async_exc = ctypes.pythonapi["PyThreadState_SetAsyncExc"]
            set_async_exc.restype = ctypes.c_int

            def interrupt(thread: int, exception: Optional[type]) -> int:
                raised = None if exception is None else ctypes.py_object(exception)
                return int(set_async_exc(ctypes.c_ulong(thread), raised))

            _thread_interrupter = interrupt
        except Exception:  # noqa: BLE001 - no interrupting threads here
            _thread_interrupter = False
    return _thread_interrupter


def _can_interrupt(thread: int) -> bool:
    """Whether an evaluation starting now in ``thread`` (this one) can be interrupted:
    the handler is this module's (installed now, in the main thread, if it was never
    tried), no event loop runs in this thread (whose other tasks the exception would
    reach), and, outside the main thread, exceptions can be raised in another thread.
    Never raises."""
    global _running_loop
    if not _SIGNUM or not _interrupts_wanted():
        return False
    try:
        main = thread == _main_thread
        if main and not _handler_tried:
            _install_handler()
        if _getsignal(_SIGNUM) is not _on_interrupt:
            return False
        running = _running_loop
        if running is None:
            asyncio = sys.modules.get("asyncio")
            if asyncio is not None:
                running = _running_loop = asyncio.events._get_running_loop
        if running is not None and running() is not None:
            return False
        return main or bool(_interrupter())
    except Exception:  # noqa: BLE001 - reporting never raises into the loop
        return False


def _still_runs(evaluation: "Evaluation") -> bool:
    """Whether the thread an evaluation started in still runs, as the same thread (a
    new thread may have taken its id)."""
    try:
        active = getattr(threading, "_active", None)
        current = active.get(evaluation._thread) if active is not None else None
        return current is not None and current is evaluation._runner and current.is_alive()
    except Exception:  # noqa: BLE001 - when in doubt, interrupt nothing
        return False


def _on_interrupt(signum: int, frame: Any) -> None:
    """``SIGUSR2``: the oldest evaluation of this process in progress raises
    :class:`EvaluationInterrupted` in its thread. Nothing without one."""
    if not _interrupt_lock.acquire(timeout=_LOCK_SECONDS):
        return
    here = False
    try:
        pid = os.getpid()
        for ref in list(_interruptible.values()):
            evaluation = ref()
            if evaluation is None or evaluation._ended or evaluation._pid != pid:
                continue
            if evaluation._interrupted:
                break  # interrupted already: the next signal is not for a younger one
            if evaluation._thread == threading.get_ident():
                here = evaluation._interrupted = True
            elif not _still_runs(evaluation):
                continue  # its thread ended without ending it: nothing to interrupt
            else:
                interrupt = _interrupter()
                if interrupt and interrupt(evaluation._thread, EvaluationInterrupted) == 1:
                    evaluation._interrupted = True
            break
    finally:
        _interrupt_lock.release()
    if here:
        raise EvaluationInterrupted("the evaluation hung; loopwatch interrupted it")


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
    leaving the block writes nothing. Interrupted by ``loopwatch run
    --on-hung-evaluation kill``, the block raises :class:`EvaluationInterrupted` (see
    the module's doc) and the evaluation ends ``timeout``.
    """

    __slots__ = ("_id", "_pid", "_worker", "_ended", "_thread", "_runner", "_interrupted", "__weakref__")

    def __init__(self, id: Any, worker: Optional[str] = None, queued: Optional[float] = None) -> None:
        self._ended = True
        self._id = ""
        self._pid = 0
        self._worker: Optional[str] = None
        #: The thread it started in, when it can be interrupted (0: it cannot).
        self._thread = 0
        #: The thread object it started in: an interrupt goes to that thread only
        #: while it still runs (a thread id is reused once its thread has ended).
        self._runner: Any = None
        self._interrupted = False
        if not _api._reporting():
            return
        try:
            ident = _path_id(id)
            if ident is None and id is not None:
                ident = str(id) or None
            self._id = ident if ident is not None else _counted_id("evaluation")
            self._worker = None if worker is None else (str(worker) or None)
            self._pid = os.getpid()
            thread = threading.get_ident()
            interruptible = _can_interrupt(thread)
            at = _api._now_ns()
            self._ended = False
            _api._put(
                ("evaluation_start", self._id, self._pid, self._worker, _queued_time(queued, at), at, interruptible)
            )
            if interruptible:
                self._thread = thread
                self._runner = threading.current_thread()
                _interruptible[_key(self)] = weakref.ref(self)
        except EvaluationInterrupted:
            # An evaluation this one is nested in was interrupted as this one started:
            # this one ends with it.
            self._end("timeout", None)
            raise
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
            if self._thread:
                _interruptible.pop(_key(self), None)
                if self._thread != _main_thread:
                    self._end_under_lock()
            self._ended = True
            _api._put_soon(("evaluation_end", self._id, self._pid, self._worker, outcome, reason, _api._now_ns()))
        except EvaluationInterrupted:
            raise  # interrupted before it ended: it still runs, and ends as interrupted
        except Exception:  # noqa: BLE001 - reporting never raises into the loop
            pass

    def _end_under_lock(self) -> None:
        """Ends one started in another thread than the main one for the handler: under
        the lock it holds while it interrupts, so that no interrupt raises in it from
        now on, one sent but not raised yet taken back. (One of the main thread needs
        no lock: the handler runs in that thread, never meanwhile.)"""
        with _interrupt_lock:
            if self._interrupted:
                interrupt = _interrupter()
                if interrupt:
                    interrupt(self._thread, None)
            self._ended = True

    def __enter__(self) -> "Evaluation":
        return self

    def __exit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> Literal[False]:
        try:
            if self._ended:
                return False
            if exc_type is None:
                self.ok()
            elif _is_timeout(exc_type):
                self.timeout()
            else:
                self.failed(exc_type.__name__)
        except EvaluationInterrupted:
            # Interrupted as it was ending: it ends timed out, and the block raises as
            # it would have a moment earlier.
            self.timeout()
            raise
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
        _api._put(("evaluation_start", ident, pid, None, None, _seconds_or_now(started), False))
        _api._put(("evaluation_end", ident, pid, None, outcome, reason, _seconds_or_now(ended)))
    except Exception:  # noqa: BLE001 - reporting never raises into the loop
        pass


def evaluation(id: Any, worker: Optional[str] = None, queued: Optional[float] = None) -> Evaluation:
    """Starts an evaluation; use it with ``with``.

    ``id`` names it, unique among the evaluations in flight: a program's path, a
    trial's number (a path is sent as its str; one longer than 256 characters is sent
    as its start and a hash of the whole).
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
    sent to a process pool. Decorating a function in a process's main thread under
    ``loopwatch run`` installs the ``SIGUSR2`` handler (see the module's doc), so that
    its calls in other threads of that process can be interrupted too; a coroutine
    function's calls never are (the exception would reach its event loop's other
    tasks).
    """

    def decorate(target: Callable[..., Any]) -> Any:
        import inspect  # only where a function is decorated

        if inspect.iscoroutinefunction(target):
            return _evaluated_async(target, id, worker)
        if _api.enabled() and threading.current_thread() is threading.main_thread():
            # Its calls may run in other threads (OpenEvolve's evaluator runs in a
            # thread of its pool's worker), where no handler can be installed.
            _install_handler()
        return _Evaluated(target, id, worker)

    if func is None:
        return decorate
    return decorate(func)
