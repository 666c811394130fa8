"""The public API: what a loop calls (``iteration()``, ``gauge``, ``labels``,
``done`` …), re-exported by :mod:`loopwatch`.

Every call builds an event tuple and hands it to this process's
:class:`loopwatch._writer.Client`, made on first use; without ``LOOPWATCH_SOCKET``
every call is a no-op, and no call raises into the loop.
"""

from __future__ import annotations

import atexit
import json
import os
import sys
import threading
import time
from types import TracebackType
from typing import Any, Dict, Iterable, List, Literal, Mapping, Optional, Tuple, Type

from . import _role
from ._encoding import Event
from ._writer import Client

#: The supervisor's socket, set by ``loopwatch run``: without it every call is a no-op.
ENV_SOCKET = "LOOPWATCH_SOCKET"
#: The supervising run's id (:func:`run_id`).
ENV_RUN_ID = "LOOPWATCH_RUN_ID"
#: The run's container ownership labels, a JSON object (:func:`labels`).
ENV_LABELS = "LOOPWATCH_LABELS"

#: Longest wait for the buffer to drain at ``done()``, at ``flush()`` without a
#: timeout and at interpreter exit; read as ``loopwatch.DRAIN_TIMEOUT_SECONDS`` holds it
#: when it is used.
DRAIN_TIMEOUT_SECONDS = 2.0

#: The package, whose ``DRAIN_TIMEOUT_SECONDS`` is the one used (see :mod:`loopwatch._writer`).
_settings = sys.modules[__name__.rpartition(".")[0]]

#: Event times read by the client itself are whole nanoseconds (an int, sent as
#: ``t_ns``: formatting an int costs a third of a float's); times a loop passes in are
#: Unix seconds (a float, sent as ``t``).
_now_ns = time.time_ns

_lock = threading.Lock()
_client: Optional[Client] = None
#: Set once this process has looked for the socket and found none.
_disabled = False


def _reset_after_fork() -> None:
    # The parent's writer thread and connection do not exist in the child: a fresh
    # client (and lock, which the writer may have held at the fork) is made on first use.
    global _client, _lock, _disabled
    _client = None
    _disabled = False
    _lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_after_fork)


def _get() -> Optional[Client]:
    global _client, _disabled
    client = _client
    if client is not None and client.pid == os.getpid():
        return client
    path = os.environ.get(ENV_SOCKET)
    if not path:
        _disabled = True
        return None
    with _lock:
        if _client is None or _client.pid != os.getpid():
            _client = Client(path)
            _watch_pool_worker(_client)
        return _client


def _watch_pool_worker(client: Client) -> None:
    """In a worker of a multiprocessing pool (fork, spawn or forkserver, as
    concurrent.futures' process pools are): drains the buffer when the worker ends,
    which it does through ``os._exit`` after multiprocessing's own finalizers, never
    through ``atexit``, and sends evaluations' ends at once (its pool may end it as
    soon as its results are back). Nothing is imported for this: a worker has
    multiprocessing loaded already."""
    multiprocessing = sys.modules.get("multiprocessing")
    util = sys.modules.get("multiprocessing.util")
    if multiprocessing is None or util is None:
        return
    try:
        if multiprocessing.parent_process() is None:
            return
        client.prompt = True
        util.Finalize(None, _drain_at_exit, exitpriority=10)
    except Exception:  # noqa: BLE001 - reporting never raises into the loop
        pass


def _put(event: Event) -> None:
    # The fast path: a client made in this process (a fork resets it), no syscalls.
    try:
        client = _client
        if client is None:
            if _disabled:
                return
            client = _get()
            if client is None:
                return
        client.put(event)
    except Exception:  # noqa: BLE001 - reporting never raises into the loop
        pass


def _put_soon(event: Event) -> None:
    """As :func:`_put`, for an event a pool worker sends at once (an evaluation's end)."""
    try:
        client = _client
        if client is None:
            if _disabled:
                return
            client = _get()
            if client is None:
                return
        client.put_soon(event)
    except Exception:  # noqa: BLE001 - reporting never raises into the loop
        pass


def _reporting() -> bool:
    """Whether this process reports to a supervisor (its client made on first use)."""
    if _client is not None:
        return True
    if _disabled:
        return False
    try:
        return _get() is not None
    except Exception:  # noqa: BLE001 - reporting never raises into the loop
        return False


def enabled() -> bool:
    """Whether this process reports to a ``loopwatch run`` supervisor."""
    return bool(os.environ.get(ENV_SOCKET))


def run_id() -> Optional[str]:
    """The supervising run's id, or None outside ``loopwatch run``."""
    return os.environ.get(ENV_RUN_ID)


def labels() -> Dict[str, str]:
    """The container ownership labels of this run, for docker-py's ``labels=``.

    Containers carrying them are sampled by loopwatch, removed when the run ends and
    swept after a crash. Empty outside ``loopwatch run``.
    """
    try:
        parsed = json.loads(os.environ.get(ENV_LABELS, "{}"))
        return {str(k): str(v) for k, v in parsed.items()} if isinstance(parsed, dict) else {}
    except (ValueError, AttributeError):
        return {}


class Iteration:
    """An iteration in progress: report outcomes and the population, then end it.

    Use it as a context manager (``with loopwatch.iteration() as it:``); an exception
    inside is recorded as a failure with the exception's type as the reason, and
    re-raised.

    Outcomes and the population are kept on the iteration and sent with its end, as
    one event: a loop pays a list append per outcome (or one call for all of them,
    :meth:`outcomes`), and the writer thread summarises and encodes them.
    """

    __slots__ = ("_ended", "_sharpes", "_drawdowns", "_failures", "_population")

    def __init__(self, started_at: Optional[float] = None) -> None:
        self._ended = False
        self._sharpes: List[Any] = []
        self._drawdowns: List[Any] = []
        self._failures: Dict[str, int] = {}
        self._population: Optional[Tuple[int, int, Any, Optional[str]]] = None
        try:
            at = _now_ns() if started_at is None else float(started_at)
        except (TypeError, ValueError):
            at = _now_ns()
        _put(("iteration_start", at))

    def success(self, sharpe: float, drawdown: Optional[float] = None) -> None:
        """A strategy that completed: its Sharpe ratio (or score, higher is better) and
        its max drawdown as a positive fraction of peak equity, if measured."""
        self._sharpes.append(sharpe)
        if drawdown is not None:
            self._drawdowns.append(drawdown)

    def failure(self, reason: str) -> None:
        """A strategy that failed, with a short reason from a fixed vocabulary."""
        try:
            key = reason if type(reason) is str else str(reason)
            failures = self._failures
            failures[key] = failures.get(key, 0) + 1
        except Exception:  # noqa: BLE001 - a reason that cannot be a string
            pass

    def outcomes(
        self,
        sharpes: Iterable[float] = (),
        drawdowns: Iterable[float] = (),
        failures: Optional[Mapping[str, int]] = None,
    ) -> None:
        """Many outcomes at once: a success per Sharpe ratio in ``sharpes`` (with the
        max drawdowns measured, in ``drawdowns``), and ``failures`` as a count per
        reason. The same as a ``success`` or ``failure`` call for each, in one call.

        ``it.outcomes(sharpes=[1.2, 0.4], drawdowns=[0.1, 0.3], failures={"no trades": 2})``
        """
        try:
            self._sharpes.extend(sharpes)
            self._drawdowns.extend(drawdowns)
            if failures:
                tally = self._failures
                for reason, count in failures.items():
                    key = reason if type(reason) is str else str(reason)
                    tally[key] = tally.get(key, 0) + int(count)
        except Exception:  # noqa: BLE001 - reporting never raises into the loop
            pass

    def population(
        self,
        size: int,
        unique: int,
        diversity: float,
        champion: Optional[str] = None,
    ) -> None:
        """The population now: its size, distinct members, diversity (0-1), champion."""
        try:
            self._population = (int(size), int(unique), diversity, champion)
        except (TypeError, ValueError):
            pass

    def end(self, at: Optional[float] = None) -> None:
        """Ends the iteration (the context manager does this). ``at`` is when, in Unix
        seconds, for an iteration reported after the fact; default now."""
        if not self._ended:
            self._ended = True
            _put(
                (
                    "iteration_end",
                    _now_ns() if at is None else _float_or_now(at),
                    self._sharpes,
                    self._drawdowns,
                    self._failures,
                    self._population,
                )
            )

    def __enter__(self) -> "Iteration":
        return self

    def __exit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> Literal[False]:
        if exc_type is not None and issubclass(exc_type, Exception):
            self.failure("exception: " + exc_type.__name__)
        self.end()
        return False


def _float_or_now(at: Any) -> Any:
    """A time a loop passed in, in Unix seconds; now (in nanoseconds) if it is none."""
    try:
        return float(at)
    except (TypeError, ValueError):
        return _now_ns()


def iteration(started_at: Optional[float] = None) -> Iteration:
    """Starts an iteration; use it with ``with``. ``started_at`` (Unix seconds) is for
    an iteration reported after the fact; default now."""
    return Iteration(started_at)


def gauge(name: str, value: float, unit: str = "", description: str = "") -> None:
    """Sets the loop's own gauge ``name`` (a Prometheus name, not loopwatch's own)."""
    _put(("metric", name, "gauge", value, unit, description))


def counter(name: str, increment: float = 1.0, unit: str = "", description: str = "") -> None:
    """Adds to the loop's own counter ``name`` (end it in ``_total``)."""
    _put(("metric", name, "counter", increment, unit, description))


def llm_call(
    model: str,
    input_tokens: Optional[int] = None,
    output_tokens: Optional[int] = None,
    seconds: float = 0.0,
    error: Any = None,
    cost_usd: Optional[float] = None,
    provider: Optional[str] = None,
    *,
    cached_input_tokens: Optional[int] = None,
    operation: str = "chat",
    role: Optional[str] = None,
) -> None:
    """Records an LLM call the loop made other than through ``loopwatch run
    --llm-proxy``: its model, tokens, time in seconds and outcome. ``error`` is an
    HTTP status (``429``), ``"timeout"``, ``"connection"``, or the exception the SDK
    raised (its status code is used when it has one). ``cost_usd`` is the call's cost
    when the loop knows it; otherwise loopwatch prices the tokens from
    ``[llm.prices]`` in loopwatch.toml. ``role`` is the call's role; by default the one
    :func:`loopwatch.llm_role` set for this thread or task, if any."""
    try:
        _put(
            (
                "llm_call",
                str(model)[:256],
                input_tokens,
                output_tokens,
                seconds,
                _llm_error(error),
                cost_usd,
                None if provider is None else str(provider)[:64],
                cached_input_tokens,
                operation,
                _role.current() if role is None else _role.header_value(role),
            )
        )
    except Exception:  # noqa: BLE001 - reporting never raises into the loop
        pass


def _llm_error(error: Any) -> Optional[str]:
    """An LLM call's failure as the protocol's ``error``: a status code from an SDK
    exception that carries one (openai's and anthropic's do), ``timeout`` or
    ``connection`` from the exception's name, a string as given."""
    if error is None:
        return None
    if isinstance(error, BaseException):
        status = getattr(error, "status_code", None)
        if isinstance(status, int):
            return str(status)
        name = type(error).__name__.lower()
        if "timeout" in name:
            return "timeout"
        if "connection" in name:
            return "connection"
        return "other"
    return str(error)[:64]


def flush(timeout: Optional[float] = None) -> bool:
    """Waits up to ``timeout`` seconds (``loopwatch.DRAIN_TIMEOUT_SECONDS`` when not
    given) for buffered events to be written."""
    try:
        client = _get()
        if client is None:
            return True
        return client.drain(_settings.DRAIN_TIMEOUT_SECONDS if timeout is None else timeout)
    except Exception:  # noqa: BLE001
        return False


def done() -> None:
    """Says the loop has finished its work: an exit from now on is expected, and
    waiting is no stall. Waits briefly for buffered events to be written."""
    _put(("done",))
    flush()


@atexit.register
def _drain_at_exit() -> None:
    client = _client
    if client is not None and client.pid == os.getpid():
        try:
            client.drain(_settings.DRAIN_TIMEOUT_SECONDS)
        except Exception:  # noqa: BLE001
            pass
