"""Report a loop's iterations to ``loopwatch run``.

Run the loop as ``loopwatch run -- python loop.py``; loopwatch starts it with
``LOOPWATCH_SOCKET`` in its environment, and this package writes what the loop reports
to that socket, one JSON line per event (docs/protocol.md)::

    import loopwatch

    for generation in range(100):
        with loopwatch.iteration() as it:
            it.success(sharpe=1.3, drawdown=0.18)   # or it.failure("too few trades")
            it.population(size=50, unique=41, diversity=0.62, champion="ma-10-50")
    loopwatch.gauge("llm_tokens", 1234, unit="{token}", description="Tokens used")
    loopwatch.done()

Each candidate's evaluation, in the loop or in a worker of a process pool (which
inherits ``LOOPWATCH_SOCKET`` and reports its own pid)::

    with loopwatch.evaluation(program_path) as e:   # ok, or failed with the exception's type
        run(program_path)                           # e.timeout() / e.failed("reason") / e.ok()

    @loopwatch.evaluated                             # every call an evaluation, its id the path
    def evaluate(program_path): ...

Without ``LOOPWATCH_SOCKET`` every call is a no-op. No call raises into the loop or
blocks it: events go into a bounded buffer that a background thread encodes and
writes out, reconnecting while the socket is away. When the buffer reaches
``MAX_BUFFERED`` events (a loop faster than the socket, or the socket away), they are
merged, not dropped: the complete iterations in it become one ``iterations`` event
(exact counts, time, outcomes, failure reasons, the last population, the champions)
and each metric's updates one (a gauge's last value, a counter's sum), so nothing
they report is lost. Events that cannot be merged (LLM calls, the events of an
iteration that has not ended) are kept until the buffer holds about twice its bound,
then dropped. Dropped events, and those a broken connection failed to write, are
counted, and the count is reported once the socket is back. A process forked from a
reporting one (a worker pool) opens its own connection. Standard library only,
Python 3.9 or later.

The tunables are set on the package and read when they are used:
``loopwatch.MAX_BUFFERED`` (the buffer's bound), ``loopwatch.COALESCE_SECONDS`` (how
long the writer gathers events before a write) and ``loopwatch.DRAIN_TIMEOUT_SECONDS``
(the wait of ``flush()``, ``done()`` and the exit). ``MAX_TEXT_CHARS``,
``MAX_REASONS_PER_LINE`` and ``MAX_LISTED_REJECTIONS`` are the protocol's limits, for
reading only.

The role of the LLM calls a block makes through ``loopwatch run --llm-proxy``, for
spend by role (the proxy's ``role`` label)::

    with loopwatch.llm_role("mutation"):
        client.chat.completions.create(...)

The modules: :mod:`loopwatch._api` (the calls below), :mod:`loopwatch._evaluation`
(evaluations), :mod:`loopwatch._role` (LLM call roles), :mod:`loopwatch._writer` (the
buffer and the writer thread), :mod:`loopwatch._merging` (what a full buffer folds
into one event) and :mod:`loopwatch._encoding` (the protocol's lines).
"""

from ._api import DRAIN_TIMEOUT_SECONDS as DRAIN_TIMEOUT_SECONDS
from ._api import ENV_LABELS as ENV_LABELS
from ._api import ENV_RUN_ID as ENV_RUN_ID
from ._api import ENV_SOCKET as ENV_SOCKET
from ._api import Iteration as Iteration
from ._api import _reset_after_fork as _reset_after_fork
from ._api import counter as counter
from ._api import done as done
from ._api import enabled as enabled
from ._api import flush as flush
from ._api import gauge as gauge
from ._api import iteration as iteration
from ._api import labels as labels
from ._api import llm_call as llm_call
from ._api import run_id as run_id
from ._encoding import MAX_REASONS_PER_LINE as MAX_REASONS_PER_LINE
from ._encoding import MAX_TEXT_CHARS as MAX_TEXT_CHARS
from ._encoding import Event as Event
from ._evaluation import Evaluation as Evaluation
from ._evaluation import EvaluationInterrupted as EvaluationInterrupted
from ._evaluation import evaluated as evaluated
from ._evaluation import evaluation as evaluation
from ._merging import MAX_LISTED_REJECTIONS as MAX_LISTED_REJECTIONS
from ._role import llm_role as llm_role
from ._writer import COALESCE_SECONDS as COALESCE_SECONDS
from ._writer import MAX_BUFFERED as MAX_BUFFERED

#: The version of this package (the ``loopwatch`` command's it ships with).
__version__ = "0.1.0"

__all__ = [
    "Evaluation",
    "EvaluationInterrupted",
    "Iteration",
    "counter",
    "done",
    "enabled",
    "evaluated",
    "evaluation",
    "flush",
    "gauge",
    "iteration",
    "labels",
    "llm_call",
    "llm_role",
    "run_id",
]
