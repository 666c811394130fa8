"""Report a loop's iterations to ``loopwatch run``.

Run the loop as ``loopwatch run -- python loop.py``; loopwatch starts it with
``LOOPWATCH_SOCKET`` in its environment, and this module writes what the loop reports
to that socket, one JSON line per event (docs/protocol.md)::

    import loopwatch

    for generation in range(100):
        with loopwatch.iteration() as it:
            it.success(sharpe=1.3, drawdown=0.18)   # or it.failure("too few trades")
            it.population(size=50, unique=41, diversity=0.62, champion="ma-10-50")
    loopwatch.gauge("llm_tokens", 1234, unit="{token}", description="Tokens used")
    loopwatch.done()

Without ``LOOPWATCH_SOCKET`` every call is a no-op. No call raises into the loop or
blocks it: events go into a bounded buffer that a background thread writes out; when
the buffer is full or the socket is away, events are dropped, counted, and the count
is reported once the socket is back. A process forked from a reporting one (a worker
pool) opens its own connection. Standard library only, Python 3.9 or later.
"""

from __future__ import annotations

import atexit
import collections
import json
import math
import os
import socket
import threading
import time
from types import TracebackType
from typing import Any, Deque, Dict, Iterable, List, Literal, Mapping, Optional, Tuple, Type

__all__ = [
    "Iteration",
    "counter",
    "done",
    "enabled",
    "flush",
    "gauge",
    "iteration",
    "labels",
    "llm_call",
    "run_id",
]

ENV_SOCKET = "LOOPWATCH_SOCKET"
ENV_RUN_ID = "LOOPWATCH_RUN_ID"
ENV_LABELS = "LOOPWATCH_LABELS"

#: Events buffered before the complete iterations among them are merged into one
#: (``iterations``: exact counts, time and outcomes), so that a loop faster than the
#: socket loses nothing. Only an event that finds the buffer full of one unfinished
#: iteration is dropped (and counted).
MAX_BUFFERED = 10_000
#: Rejected drawdowns a merged line lists one by one; the rest are counted.
MAX_LISTED_REJECTIONS = 64
#: Longest wait for the buffer to drain at ``done()`` and at interpreter exit.
DRAIN_TIMEOUT_SECONDS = 2.0
#: How long the writer gathers events after the first before it sends them: one write
#: (and one wake-up of the supervisor) for many iterations of a fast loop. Far below
#: any stall limit; ``flush()`` and ``done()`` send at once.
COALESCE_SECONDS = 0.05

_encode_string = json.encoder.encode_basestring

#: Longest failure reason, champion id or metric description sent, in characters:
#: longer ones are cut, so that no line passes the supervisor's 64 KiB limit (a line
#: over it is rejected whole).
MAX_TEXT_CHARS = 256
#: Most distinct failure reasons in one iteration's line; the rest are sent as
#: ``other`` (the supervisor names the run's first 32 reasons, the rest ``other``).
MAX_REASONS_PER_LINE = 32

# An event is a tuple whose first item says how to encode the rest; encoding happens
# on the writer thread, so the loop pays only for building a tuple.
Event = Tuple[Any, ...]


#: Event times read by the client itself are whole nanoseconds (an int, sent as
#: ``t_ns``: formatting an int costs a third of a float's); times a loop passes in are
#: Unix seconds (a float, sent as ``t``).
_now_ns = time.time_ns


def _seconds(at: Any) -> float:
    """An event's time in Unix seconds."""
    return at / 1e9 if type(at) is int else float(at)


def _moment(at: Any) -> str:
    """An event's time as its JSON field."""
    if type(at) is int:
        return '"t_ns":%d' % at
    return '"t":%r' % (at,)


def _number(value: Any) -> str:
    """A JSON number, or null for NaN, infinities and non-numbers."""
    if type(value) is float and value - value == 0.0:
        return repr(value)  # the common case: a finite float
    try:
        number = float(value)
    except (TypeError, ValueError):
        return "null"
    if math.isfinite(number):
        return repr(number)
    return "null"


def _text(value: Any) -> str:
    text = value if type(value) is str else str(value)
    if len(text) > MAX_TEXT_CHARS:
        text = text[:MAX_TEXT_CHARS]
    return _encode_string(text)


def _bounded_reasons(failures: Dict[str, int]) -> Dict[str, int]:
    """The failure tally with each reason cut to ``MAX_TEXT_CHARS`` and at most
    ``MAX_REASONS_PER_LINE`` reasons, the rest counted as ``other``."""
    if len(failures) <= MAX_REASONS_PER_LINE and all(
        len(reason) <= MAX_TEXT_CHARS for reason in failures
    ):
        return failures
    bounded: Dict[str, int] = {}
    for reason, count in failures.items():
        key = reason[:MAX_TEXT_CHARS]
        if key not in bounded and len(bounded) >= MAX_REASONS_PER_LINE - 1:
            key = "other"
        bounded[key] = bounded.get(key, 0) + count
    return bounded


_isfinite = math.isfinite
_fsum = math.fsum
_encode_json = json.JSONEncoder(separators=(",", ":"), allow_nan=False).encode


def _finite_or_none(value: Any) -> Optional[float]:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _summarise_sharpes(values: List[Any]) -> Tuple[int, float, Optional[float], int]:
    """(count, sum, max) of the finite values, and how many were not finite."""
    if not values:
        return 0, 0.0, None, 0
    try:
        # The common case, at C speed: every value a finite number, which the exact
        # sum being finite shows (a NaN or an infinity makes it not finite).
        total = _fsum(values)
        if total - total == 0.0:
            return len(values), total, float(max(values)), 0
    except (TypeError, ValueError, OverflowError):
        pass
    finite = [v for v in map(_finite_or_none, values) if v is not None]
    rejected = len(values) - len(finite)
    return len(finite), _fsum(finite), (max(finite) if finite else None), rejected


def _summarise_drawdowns(values: List[Any]) -> Tuple[int, float, List[Optional[float]]]:
    """(count, sum) of the valid drawdowns (finite, not negative), and the others."""
    if not values:
        return 0, 0.0, []
    try:
        total = _fsum(values)
        if total - total == 0.0 and min(values) >= 0:
            return len(values), total, []
    except (TypeError, ValueError, OverflowError):
        pass
    valid: List[float] = []
    rejected: List[Optional[float]] = []
    for value in values:
        number = _finite_or_none(value)
        if number is None:
            rejected.append(None)
        elif number < 0:
            rejected.append(number)
        else:
            valid.append(number)
    return len(valid), _fsum(valid), rejected


def _encode_population(size: int, unique: int, diversity: Any, champion: Optional[str]) -> str:
    champion_field = "" if champion is None else ',"champion":%s' % _text(champion)
    return '{"v":1,"type":"population","size":%d,"unique":%d,"diversity":%s%s}\n' % (
        int(size),
        int(unique),
        _number(diversity),
        champion_field,
    )


def _encode_reasons(failures: Dict[str, int]) -> str:
    """The failure tally as a JSON object, built directly (the JSON encoder's own
    machinery costs more than the few reasons of an iteration)."""
    if not failures:
        return "{}"
    if len(failures) == 1:
        for reason, count in failures.items():
            if len(reason) <= MAX_TEXT_CHARS:
                return "{%s:%d}" % (_encode_string(reason), count)
    return "{%s}" % ",".join(
        "%s:%d" % (_encode_string(reason), count) for reason, count in _bounded_reasons(failures).items()
    )


def _encode_outcomes(sharpes: List[Any], drawdowns: List[Any], failures: Dict[str, int]) -> str:
    """One `outcomes` line: the counts and sums loopwatch keeps, not every value, so
    that a batch costs the same to send whatever its size."""
    n, total, best, rejected_sharpe = _summarise_sharpes(sharpes)
    dn, dtotal, rejected_drawdown = _summarise_drawdowns(drawdowns)
    return (
        '{"v":1,"type":"outcomes","successes":%d,"sharpe":[%d,%r,%s],"drawdown":[%d,%r],'
        '"rejected_sharpe":%d,"rejected_drawdown":%s,"failures":%s}\n'
        % (
            len(sharpes),
            n,
            total,
            "null" if best is None else repr(best),
            dn,
            dtotal,
            rejected_sharpe,
            _encode_json(rejected_drawdown) if rejected_drawdown else "[]",
            _encode_reasons(failures),
        )
    )


class _Merged:
    """Complete iterations merged while the buffer was full: what the monitor keeps of
    them, exactly (counts, time, outcomes, the last population, the champions)."""

    __slots__ = (
        "count", "seconds", "successes", "sharpe_n", "sharpe_sum", "sharpe_max",
        "rejected_sharpe", "drawdown_n", "drawdown_sum", "rejected_drawdown",
        "rejected_more", "failures", "population", "first_champion", "first_at",
        "last_champion", "changes", "last_change_at",
    )

    def __init__(self) -> None:
        self.count = 0
        self.seconds = 0.0
        self.successes = 0
        self.sharpe_n = 0
        self.sharpe_sum = 0.0
        self.sharpe_max: Optional[float] = None
        self.rejected_sharpe = 0
        self.drawdown_n = 0
        self.drawdown_sum = 0.0
        self.rejected_drawdown: List[Optional[float]] = []
        self.rejected_more = [0, 0]
        self.failures: Dict[str, int] = {}
        self.population: Optional[Tuple[int, int, Any]] = None
        self.first_champion: Optional[str] = None
        self.first_at = 0
        self.last_champion: Optional[str] = None
        self.changes = 0
        self.last_change_at: Optional[int] = None

    def add_outcomes(self, sharpes: List[Any], drawdowns: List[Any], failures: Dict[str, int]) -> None:
        n, total, best, rejected = _summarise_sharpes(sharpes)
        self.successes += len(sharpes)
        self.sharpe_n += n
        self.sharpe_sum += total
        if best is not None and (self.sharpe_max is None or best > self.sharpe_max):
            self.sharpe_max = best
        self.rejected_sharpe += rejected
        dn, dtotal, rejected_drawdown = _summarise_drawdowns(drawdowns)
        self.drawdown_n += dn
        self.drawdown_sum += dtotal
        for value in rejected_drawdown:
            if len(self.rejected_drawdown) < MAX_LISTED_REJECTIONS:
                self.rejected_drawdown.append(value)
            else:
                self.rejected_more[0 if value is None else 1] += 1
        merged = self.failures
        for reason, count in failures.items():
            merged[reason] = merged.get(reason, 0) + count

    def add_population(self, size: int, unique: int, diversity: Any, champion: Optional[str]) -> None:
        self.population = (size, unique, diversity)
        if champion is None:
            return
        champion = champion if type(champion) is str else str(champion)
        if self.first_champion is None:
            self.first_champion = champion
            self.first_at = self.count
        elif champion != self.last_champion:
            self.changes += 1
            self.last_change_at = self.count
        self.last_champion = champion

    def absorb(self, other: "_Merged") -> None:
        """Appends the iterations of ``other``, which came after these."""
        offset = self.count
        self.count += other.count
        self.seconds += other.seconds
        self.successes += other.successes
        self.sharpe_n += other.sharpe_n
        self.sharpe_sum += other.sharpe_sum
        if other.sharpe_max is not None and (self.sharpe_max is None or other.sharpe_max > self.sharpe_max):
            self.sharpe_max = other.sharpe_max
        self.rejected_sharpe += other.rejected_sharpe
        self.drawdown_n += other.drawdown_n
        self.drawdown_sum += other.drawdown_sum
        for value in other.rejected_drawdown:
            if len(self.rejected_drawdown) < MAX_LISTED_REJECTIONS:
                self.rejected_drawdown.append(value)
            else:
                self.rejected_more[0 if value is None else 1] += 1
        self.rejected_more[0] += other.rejected_more[0]
        self.rejected_more[1] += other.rejected_more[1]
        for reason, count in other.failures.items():
            self.failures[reason] = self.failures.get(reason, 0) + count
        if other.population is not None:
            self.population = other.population
        if other.first_champion is not None:
            if self.first_champion is None:
                self.first_champion = other.first_champion
                self.first_at = offset + other.first_at
            elif other.first_champion != self.last_champion:
                self.changes += 1
                self.last_change_at = offset + other.first_at
            self.changes += other.changes
            if other.last_change_at is not None:
                self.last_change_at = offset + other.last_change_at
            self.last_champion = other.last_champion

    def encode(self) -> str:
        population = ""
        if self.population is not None:
            size, unique, diversity = self.population
            population = ',"population":{"size":%d,"unique":%d,"diversity":%s}' % (
                size, unique, _number(diversity)
            )
        champions = ""
        if self.first_champion is not None:
            champions = ',"champions":{"first":%s,"first_at":%d,"last":%s,"changes":%d%s}' % (
                _text(self.first_champion),
                self.first_at,
                _text(self.last_champion),
                self.changes,
                "" if self.last_change_at is None else ',"last_change_at":%d' % self.last_change_at,
            )
        return (
            '{"v":1,"type":"iterations","count":%d,"seconds":%r,"successes":%d,'
            '"sharpe":[%d,%r,%s],"drawdown":[%d,%r],"rejected_sharpe":%d,'
            '"rejected_drawdown":%s,"rejected_drawdown_more":[%d,%d],"failures":%s%s%s}\n'
            % (
                self.count,
                max(self.seconds, 0.0),
                self.successes,
                self.sharpe_n,
                self.sharpe_sum,
                "null" if self.sharpe_max is None else repr(self.sharpe_max),
                self.drawdown_n,
                self.drawdown_sum,
                self.rejected_sharpe,
                _encode_json(self.rejected_drawdown),
                self.rejected_more[0],
                self.rejected_more[1],
                _encode_json(_bounded_reasons(self.failures)),
                population,
                champions,
            )
        )


def _merge(events: List[Event]) -> List[Event]:
    """The events with every run of complete iterations (and the merged events among
    them) folded into one ``iterations`` event, and every run of metrics into one
    event per metric (a gauge its last value, a counter its summed increments, after
    the iterations of the run); an unfinished iteration, and everything else, stays as
    it is."""
    out: List[Event] = []
    merged: Optional[_Merged] = None
    gauges: Dict[str, Event] = {}
    counters: Dict[str, List[Any]] = {}
    # Events of merged iterations that are not folded into them (LLM calls): sent
    # after the run, each as it was.
    kept: List[Event] = []

    def close_run() -> None:
        nonlocal merged
        if merged is not None:
            out.append(("iterations", merged))
            merged = None
        out.extend(kept)
        kept.clear()
        out.extend(gauges.values())
        out.extend(("metric", name, "counter", total[0], total[1], total[2]) for name, total in counters.items())
        gauges.clear()
        counters.clear()

    i = 0
    n = len(events)
    while i < n:
        event = events[i]
        kind = event[0]
        if kind == "iterations":
            if merged is None:
                merged = _Merged()
            merged.absorb(event[1])
            i += 1
            continue
        if kind != "iteration_start":
            if kind == "metric":
                _fold_metric(event, gauges, counters)
            else:
                close_run()
                out.append(event)
            i += 1
            continue
        # An iteration: find its end; an unfinished one stays as it is.
        j = i + 1
        while j < n and events[j][0] not in ("iteration_end", "iteration_start", "iterations", "done"):
            j += 1
        if j >= n or events[j][0] != "iteration_end":
            close_run()
            out.extend(events[i:j])
            i = j
            continue
        if merged is None:
            merged = _Merged()
        for inner in events[i + 1:j]:
            inner_kind = inner[0]
            if inner_kind == "outcomes":
                merged.add_outcomes(inner[1], inner[2], inner[3])
            elif inner_kind == "population":
                merged.add_population(inner[1], inner[2], inner[3], inner[4])
            elif inner_kind == "metric":
                _fold_metric(inner, gauges, counters)
            elif inner_kind == "llm_call":
                kept.append(inner)
        end = events[j]
        if len(end) > 2:
            # An end that carries its iteration's outcomes and population.
            _, _, sharpes, drawdowns, failures, population = end
            if sharpes or drawdowns or failures:
                merged.add_outcomes(sharpes, drawdowns, failures)
            if population is not None:
                merged.add_population(*population)
        try:
            merged.seconds += _seconds(events[j][1]) - _seconds(event[1])
        except (TypeError, ValueError):
            pass
        merged.count += 1
        i = j + 1
    close_run()
    return out


def _fold_metric(event: Event, gauges: Dict[str, Event], counters: Dict[str, List[Any]]) -> None:
    name, kind = event[1], event[2]
    if kind == "counter":
        total = counters.get(name)
        try:
            if total is None:
                counters[name] = [float(event[3]), event[4], event[5]]
            else:
                total[0] += float(event[3])
        except (TypeError, ValueError):
            pass
    else:
        gauges[name] = event


def _count(value: Any) -> str:
    """A token count as JSON: a whole number, or null."""
    return "null" if value is None else "%d" % int(value)


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


def _encode(event: Event) -> str:
    kind = event[0]
    if kind == "iteration_start":
        # The loop's own clock: the iteration's time does not depend on when the
        # writer thread got to send it.
        return '{"v":1,"type":"iteration_start",%s}\n' % _moment(event[1])
    if kind == "iteration_end" and len(event) > 2:
        # An end carrying its iteration's population and outcomes: their lines, then
        # its own.
        _, at, sharpes, drawdowns, failures, population = event
        lines = ""
        if population is not None:
            lines = _encode_population(*population)
        if sharpes or drawdowns or failures:
            lines += _encode_outcomes(sharpes, drawdowns, failures)
        return '%s{"v":1,"type":"iteration_end",%s}\n' % (lines, _moment(at))
    if kind == "outcomes":
        return _encode_outcomes(event[1], event[2], event[3])
    if kind == "iterations":
        merged: _Merged = event[1]
        return merged.encode()
    if kind == "population":
        return _encode_population(*event[1:])
    if kind == "metric":
        name, metric_kind, value, unit, description = event[1:]
        return (
            '{"v":1,"type":"metric","name":%s,"kind":"%s","value":%s,"unit":%s,"description":%s}\n'
            % (_text(name), metric_kind, _number(value), _text(unit), _text(description))
        )
    if kind == "dropped":
        return '{"v":1,"type":"dropped","count":%d}\n' % event[1]
    if kind == "llm_call":
        _, model, input_tokens, output_tokens, seconds, error, cost, provider, cached, operation = event
        return (
            '{"v":1,"type":"llm_call","model":%s,"provider":%s,"operation":%s,"input_tokens":%s,'
            '"output_tokens":%s,"cached_input_tokens":%s,"seconds":%s,"error":%s,"cost_usd":%s}\n'
            % (
                _text(model),
                "null" if provider is None else _text(provider),
                _text(operation),
                _count(input_tokens),
                _count(output_tokens),
                _count(cached),
                _number(seconds),
                "null" if error is None else _text(error),
                "null" if cost is None else _number(cost),
            )
        )
    if kind in ("iteration_start", "iteration_end"):
        # The loop's own clock: the iteration's time does not depend on when the
        # writer thread got to send it.
        return '{"v":1,"type":"%s",%s}\n' % (kind, _moment(event[1]))
    return '{"v":1,"type":"%s"}\n' % kind


class _Client:
    """One process's connection: a bounded buffer and the thread that writes it."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.pid = os.getpid()
        self.buffer: Deque[Event] = collections.deque()
        # The buffer's length at which the next merge happens (at least MAX_BUFFERED).
        self.merge_at = 0
        # Held by the writer while it takes events, and by a merge while it rewrites
        # the buffer's older part; appending never takes it.
        self.lock = threading.Lock()
        # Each counter has one writer, so no update is lost between threads: events the
        # loop's thread turned away, events the writer lost, and the total reported.
        self.dropped = 0
        self.lost = 0
        self.reported = 0
        self.wake = threading.Event()
        self.urgent = False
        self.sending = False
        self.closed = False
        self.thread: Optional[threading.Thread] = None

    def put(self, event: Event) -> None:
        buffered = len(self.buffer)
        if buffered >= MAX_BUFFERED and buffered >= self.merge_at:
            if buffered >= 2 * MAX_BUFFERED:
                # Nothing left to merge (one iteration of endless events): drop.
                self.dropped += 1
                return
            self._merge()
            buffered = len(self.buffer)
            # The next merge once a quarter of the limit has come in: merging stays
            # amortised to a constant per event.
            self.merge_at = max(MAX_BUFFERED, buffered + MAX_BUFFERED // 4)
        self.buffer.append(event)
        if self.thread is None:
            self._start()
        if buffered == 0:
            # The writer sleeps only on an empty buffer: wake it for the first event.
            self.wake.set()

    def _merge(self) -> None:
        """Folds the complete iterations buffered into one event each run (on the
        loop's thread, once per ``MAX_BUFFERED`` events at most)."""
        with self.lock:
            count = len(self.buffer)
            popleft = self.buffer.popleft
            events = [popleft() for _ in range(count)]
            self.buffer.extendleft(reversed(_merge(events)))

    def _start(self) -> None:
        thread = threading.Thread(target=self._run, name="loopwatch-writer", daemon=True)
        self.thread = thread
        thread.start()

    def _connect(self) -> Optional[socket.socket]:
        try:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(2.0)
            sock.connect(self.path)
            return sock
        except OSError:
            return None

    def _run(self) -> None:
        sock: Optional[socket.socket] = None
        backoff = 0.05
        while not self.closed:
            self.wake.wait(0.5)
            self.wake.clear()
            if self.buffer and not self.urgent:
                time.sleep(COALESCE_SECONDS)
            while self.buffer and not self.closed:
                if sock is None:
                    sock = self._connect()
                    if sock is None:
                        # The socket is away: keep buffering (bounded) and retry.
                        time.sleep(backoff)
                        backoff = min(backoff * 2, 1.0)
                        continue
                    backoff = 0.05
                self.sending = True
                batch: List[Event] = []
                with self.lock:
                    while self.buffer and len(batch) < 512:
                        batch.append(self.buffer.popleft())
                unreported = self.dropped + self.lost - self.reported
                if unreported > 0:
                    self.reported += unreported
                    batch.append(("dropped", unreported))
                lines = []
                for event in batch:
                    try:
                        lines.append(_encode(event))
                    except (TypeError, ValueError, OverflowError):
                        self.lost += 1  # a value that cannot be written at all
                try:
                    sock.sendall("".join(lines).encode("utf-8", "replace"))
                except OSError:
                    try:
                        sock.close()
                    except OSError:
                        pass
                    sock = None
                    for event in batch:
                        if event[0] == "dropped":
                            self.reported -= event[1]
                        else:
                            self.lost += 1
                finally:
                    self.sending = False
            if not self.buffer:
                self.urgent = False
        if sock is not None:
            try:
                sock.close()
            except OSError:
                pass

    def drain(self, timeout: float) -> bool:
        """Waits up to ``timeout`` seconds until everything buffered is written."""
        deadline = time.monotonic() + timeout
        self.urgent = True
        self.wake.set()
        while (self.buffer or self.sending) and time.monotonic() < deadline:
            time.sleep(0.002)
        return not (self.buffer or self.sending)


_lock = threading.Lock()
_client: Optional[_Client] = None
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


def _get() -> Optional[_Client]:
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
            _client = _Client(path)
        return _client


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
) -> None:
    """Records an LLM call the loop made other than through ``loopwatch run
    --llm-proxy``: its model, tokens, time in seconds and outcome. ``error`` is an
    HTTP status (``429``), ``"timeout"``, ``"connection"``, or the exception the SDK
    raised (its status code is used when it has one). ``cost_usd`` is the call's cost
    when the loop knows it; otherwise loopwatch prices the tokens from
    ``[llm.prices]`` in loopwatch.toml."""
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
            )
        )
    except Exception:  # noqa: BLE001 - reporting never raises into the loop
        pass


def flush(timeout: float = DRAIN_TIMEOUT_SECONDS) -> bool:
    """Waits up to ``timeout`` seconds for buffered events to be written."""
    try:
        client = _get()
        return True if client is None else client.drain(timeout)
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
            client.drain(DRAIN_TIMEOUT_SECONDS)
        except Exception:  # noqa: BLE001
            pass
