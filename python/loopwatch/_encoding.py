"""The protocol's lines (docs/protocol.md): an event tuple in, one JSON line out.

The loop's thread only builds tuples; the writer thread encodes them here. Lines are
formatted directly rather than through :mod:`json`, with fast paths for the common
case (every value a finite number, one failure reason): the JSON encoder's own
machinery costs more than the few fields of a line.
"""

from __future__ import annotations

import hashlib

import json
import math
from typing import Any, Dict, List, Optional, Tuple

#: Longest failure reason, champion id or metric description sent, in characters:
#: longer ones are cut, so that no line passes the supervisor's 64 KiB limit (a line
#: over it is rejected whole).
MAX_TEXT_CHARS = 256
#: Most distinct failure reasons in one iteration's line; the rest are sent as
#: ``other`` (the supervisor names the run's first 32 reasons, the rest ``other``).
MAX_REASONS_PER_LINE = 32

# An event is a tuple whose first item says how to encode the rest; encoding happens
# on the writer thread, so the loop pays only for building a tuple. An evaluation's are
# ("evaluation_start", id, pid, worker, queued, t, interruptible) and
# ("evaluation_end", id, pid, worker, outcome, reason, t), None for what is not known
# (a start without its last item is not interruptible); a time is Unix seconds (a
# float) or whole nanoseconds (an int), as for iterations.
Event = Tuple[Any, ...]

_encode_string = json.encoder.encode_basestring
_fsum = math.fsum
#: Compact JSON for the rare values without a fast path (rejected drawdowns, a merged
#: failure tally); refuses NaN, which the callers have turned into null.
encode_json = json.JSONEncoder(separators=(",", ":"), allow_nan=False).encode


def seconds(at: Any) -> float:
    """An event's time in Unix seconds.

    Event times read by the client itself are whole nanoseconds (an int, sent as
    ``t_ns``: formatting an int costs a third of a float's); times a loop passes in are
    Unix seconds (a float, sent as ``t``).
    """
    return at / 1e9 if type(at) is int else float(at)


def _moment(at: Any) -> str:
    """An event's time as its JSON field."""
    if type(at) is int:
        return '"t_ns":%d' % at
    return '"t":%r' % (at,)


def _time_field(name: str, at: Any) -> str:
    """A time as the field ``name`` (whole nanoseconds as ``name_ns``), after a comma;
    nothing for None."""
    if at is None:
        return ""
    if type(at) is int:
        return ',"%s_ns":%d' % (name, at)
    return ',"%s":%s' % (name, number(at))


def number(value: Any) -> str:
    """A JSON number, or null for NaN, infinities and non-numbers."""
    if type(value) is float and value - value == 0.0:
        return repr(value)  # the common case: a finite float
    try:
        parsed = float(value)
    except (TypeError, ValueError):
        return "null"
    if math.isfinite(parsed):
        return repr(parsed)
    return "null"


def text(value: Any) -> str:
    """A JSON string of at most ``MAX_TEXT_CHARS`` characters."""
    string = value if type(value) is str else str(value)
    if len(string) > MAX_TEXT_CHARS:
        string = string[:MAX_TEXT_CHARS]
    return _encode_string(string)


def bounded_reasons(failures: Dict[str, int]) -> Dict[str, int]:
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


def _finite_or_none(value: Any) -> Optional[float]:
    try:
        parsed = float(value)
    except (TypeError, ValueError):
        return None
    return parsed if math.isfinite(parsed) else None


def summarise_sharpes(values: List[Any]) -> Tuple[int, float, Optional[float], int]:
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


def summarise_drawdowns(values: List[Any]) -> Tuple[int, float, List[Optional[float]]]:
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
        parsed = _finite_or_none(value)
        if parsed is None:
            rejected.append(None)
        elif parsed < 0:
            rejected.append(parsed)
        else:
            valid.append(parsed)
    return len(valid), _fsum(valid), rejected


def _encode_population(size: int, unique: int, diversity: Any, champion: Optional[str]) -> str:
    champion_field = "" if champion is None else ',"champion":%s' % text(champion)
    return '{"v":1,"type":"population","size":%d,"unique":%d,"diversity":%s%s}\n' % (
        int(size),
        int(unique),
        number(diversity),
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
        "%s:%d" % (_encode_string(reason), count) for reason, count in bounded_reasons(failures).items()
    )


def _encode_outcomes(sharpes: List[Any], drawdowns: List[Any], failures: Dict[str, int]) -> str:
    """One `outcomes` line: the counts and sums loopwatch keeps, not every value, so
    that a batch costs the same to send whatever its size."""
    n, total, best, rejected_sharpe = summarise_sharpes(sharpes)
    dn, dtotal, rejected_drawdown = summarise_drawdowns(drawdowns)
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
            encode_json(rejected_drawdown) if rejected_drawdown else "[]",
            _encode_reasons(failures),
        )
    )


def _count(value: Any) -> str:
    """A token count as JSON: a whole number, or null."""
    return "null" if value is None else "%d" % int(value)


def evaluation_id(ident: Any) -> str:
    """An evaluation's id as sent: its str, and for one longer than
    ``MAX_TEXT_CHARS`` its start with a hash of the whole in place of the rest, so
    that long ids sharing a start (paths in one deep directory) stay apart.

    >>> evaluation_id("prog-17")
    'prog-17'
    >>> a, b = evaluation_id("/x" * 200 + "/a.py"), evaluation_id("/x" * 200 + "/b.py")
    >>> len(a) == MAX_TEXT_CHARS and a != b
    True
    """
    string = ident if type(ident) is str else str(ident)
    if len(string) <= MAX_TEXT_CHARS:
        return string
    digest = hashlib.blake2b(string.encode("utf-8", "surrogatepass"), digest_size=8).hexdigest()
    return string[: MAX_TEXT_CHARS - len(digest) - 1] + "#" + digest


def _evaluation_fields(ident: Any, pid: Any, worker: Any) -> str:
    """The fields an evaluation's start and end share: its id (see
    :func:`evaluation_id`), and the pid and worker that run it when known (a pid out of
    range, or an empty worker, is left out)."""
    fields = '"id":%s' % _encode_string(evaluation_id(ident))
    if pid is not None and 0 < pid < 1 << 32:
        fields += ',"pid":%d' % pid
    if worker is not None and worker != "":
        fields += ',"worker":%s' % text(worker)
    return fields


def _encode_evaluation_start(ident: Any, pid: Any, worker: Any, queued: Any, at: Any, interruptible: Any = False) -> str:
    return '{"v":1,"type":"evaluation_start",%s%s%s%s}\n' % (
        _evaluation_fields(ident, pid, worker),
        _time_field("queued", queued),
        _time_field("t", at),
        ',"interruptible":true' if interruptible is True else "",
    )


def _encode_evaluation_end(ident: Any, pid: Any, worker: Any, outcome: str, reason: Any, at: Any) -> str:
    # A reason goes only with `failed` (the monitor rejects it on another outcome).
    because = ',"reason":%s' % text(reason) if reason is not None and outcome == "failed" else ""
    return '{"v":1,"type":"evaluation_end",%s,"outcome":"%s"%s%s}\n' % (
        _evaluation_fields(ident, pid, worker),
        outcome,
        because,
        _time_field("t", at),
    )


def encode(event: Event) -> str:
    """The protocol line(s) of one event, each ending in a newline.

    Raises ``TypeError``, ``ValueError`` or ``OverflowError`` for a value that cannot
    be written at all (the writer counts the event as lost).
    """
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
        # Merged iterations (loopwatch._merging.Merged) write their own line.
        line: str = event[1].encode()
        return line
    if kind == "population":
        return _encode_population(*event[1:])
    if kind == "metric":
        name, metric_kind, value, unit, description = event[1:]
        return (
            '{"v":1,"type":"metric","name":%s,"kind":"%s","value":%s,"unit":%s,"description":%s}\n'
            % (text(name), metric_kind, number(value), text(unit), text(description))
        )
    if kind == "dropped":
        return '{"v":1,"type":"dropped","count":%d}\n' % event[1]
    if kind == "llm_call":
        _, model, input_tokens, output_tokens, elapsed, error, cost, provider, cached, operation, role = event
        return (
            '{"v":1,"type":"llm_call","model":%s,"provider":%s,"operation":%s,"input_tokens":%s,'
            '"output_tokens":%s,"cached_input_tokens":%s,"seconds":%s,"error":%s,"cost_usd":%s%s}\n'
            % (
                text(model),
                "null" if provider is None else text(provider),
                text(operation),
                _count(input_tokens),
                _count(output_tokens),
                _count(cached),
                number(elapsed),
                "null" if error is None else text(error),
                "null" if cost is None else number(cost),
                "" if role is None else ',"role":%s' % text(role),
            )
        )
    if kind == "evaluation_start":
        return _encode_evaluation_start(*event[1:])
    if kind == "evaluation_end":
        return _encode_evaluation_end(*event[1:])
    if kind == "iteration_end":
        return '{"v":1,"type":"iteration_end",%s}\n' % _moment(event[1])
    return '{"v":1,"type":"%s"}\n' % kind
