"""OpenEvolve: every iteration the controller collects is an iteration of the loop.

OpenEvolve runs each iteration (LLM call, diff, evaluation) in a worker of its process
pool; the results come back to ``ProcessParallelController.run_evolution`` in the
process that owns the search, which takes each one with ``future.result()`` and adds
the child program to the ``ProgramDatabase``. The hooks, all in that process:

* ``ProcessParallelController._submit_iteration``: notes when the iteration was
  submitted and wraps its future's ``result``, so that every result is seen, failed
  ones included (an LLM error, a diff that does not apply, a timed-out worker);
* ``ProgramDatabase.add``: a child program added is the iteration's outcome: a
  success with its ``combined_score`` (else the mean of its numeric metrics, as
  OpenEvolve ranks it), or a failure with the evaluator's error as the reason
  (``error`` or ``timeout`` in its metrics); the population after it: its size,
  distinct programs and diversity (:func:`loopwatch.diversity.code_diversity` over
  every program's code), and the champion (the database's tracked best program);
  when the champion is a program whose score was not reported yet (the initial
  program, better than every child so far), its score is one more success of the
  iteration, so that the best score is always the champion's;
* ``ProcessParallelController.run_evolution``: the run's start and end, and whether
  it ended on a shutdown request (its ``shutdown_event`` set: OpenEvolve's handler of
  SIGINT and SIGTERM sets it);
* ``OpenEvolve.run``: ``done`` when the run returns, unless it was shut down (the
  run was interrupted, not finished: its exit is not the loop's end of work).

An iteration runs from its submission to the pool to its result back in the
controller (with more iterations queued than workers, as OpenEvolve queues, that
includes the wait for a worker). The initial program is not an iteration (OpenEvolve
counts it as iteration 0): it is in the first iteration's population, and its score
is reported (once) in the first iteration whose champion it is.
"""

from __future__ import annotations

import contextvars
import functools
import re
import time
import weakref
from typing import Any, Dict, List, MutableMapping, Optional, Set, Tuple

from . import Patch, hook_point, log, owns_search, safely, stood_down, wrap_method

FRAMEWORK = "openevolve"

#: What OpenEvolve 0.4's workers say when an iteration fails → the failure reason
#: reported (a small vocabulary, as the protocol asks).
ITERATION_ERRORS: Tuple[Tuple[str, str], ...] = (
    ("LLM generation failed", "llm call failed"),
    ("LLM returned None", "llm call failed"),
    ("No valid diffs", "no diff in the response"),
    ("SEARCH block", "diff did not match the parent"),
    ("Diff did not change", "program unchanged"),
    ("identical to the parent", "program unchanged"),
    ("No valid code found", "no code in the response"),
    ("EVOLVE-BLOCK", "edits outside the evolve blocks"),
    ("exceeds maximum length", "program too long"),
    ("changes_description", "changes description not updated"),
)

_trackers: MutableMapping[Any, "Tracker"] = weakref.WeakKeyDictionary()
#: The ``OpenEvolve.run`` in progress in this task: whether its evolution was shut down.
_run_state: "contextvars.ContextVar[Dict[str, bool]]" = contextvars.ContextVar("loopwatch_openevolve_run")
_by_database: MutableMapping[Any, "Tracker"] = weakref.WeakKeyDictionary()


def _short(text: str, limit: int = 80) -> str:
    """One line of ``text`` with its numbers as N: a reason from a small vocabulary."""
    line = next((part.strip() for part in str(text).splitlines() if part.strip()), "")
    return re.sub(r"\d+(\.\d+)?", "N", line)[:limit] or "unknown"


def iteration_reason(error: str) -> str:
    """The failure reason for a worker's error message."""
    for fragment, reason in ITERATION_ERRORS:
        if fragment in error:
            return reason
    return "iteration: " + _short(error)


def evaluator_reason(metrics: Dict[str, Any], artifacts: Optional[Dict[str, Any]]) -> Optional[str]:
    """The evaluator's error as a failure reason, or None for a program it scored."""
    if metrics.get("timeout") is True:
        return "evaluator: timeout"
    if "error" not in metrics:
        return None
    artifacts = artifacts or {}
    error_type = artifacts.get("error_type")
    if isinstance(error_type, str) and error_type:
        return "evaluator: " + _short(error_type, 64)
    traceback_text = artifacts.get("traceback")
    if isinstance(traceback_text, str):
        last = [line for line in traceback_text.splitlines() if line.strip()]
        if last:
            name = last[-1].split(":", 1)[0].strip()
            if re.fullmatch(r"[A-Za-z_][\w.]*", name):
                return "evaluator: " + name.rsplit(".", 1)[-1]
    error = metrics.get("error")
    if isinstance(error, str) and error.strip():
        return "evaluator: " + _short(error, 64)
    return "evaluator: error"


def score(metrics: Dict[str, Any]) -> Optional[float]:
    """``combined_score``, else the mean of the numeric metrics (OpenEvolve's ranking)."""
    value = metrics.get("combined_score")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    numbers = [
        float(v) for k, v in metrics.items() if k != "error" and isinstance(v, (int, float)) and not isinstance(v, bool)
    ]
    return sum(numbers) / len(numbers) if numbers else None


class Tracker:
    """One ``run_evolution`` of one controller, in the process that owns the search."""

    def __init__(self, controller: Any) -> None:
        from loopwatch.diversity import ShingleCache

        self.database = controller.database
        self.submitted: Dict[int, float] = {}
        #: Child program id → (iteration, submitted, collected, artifacts).
        self.pending: Dict[str, Tuple[int, float, float, Any]] = {}
        self.shingles = ShingleCache()
        #: Programs whose score has been reported as a success.
        self.scored: Set[str] = set()
        self.iterations = 0
        self.cost = 0.0

    def _champion(self, it: Any) -> Optional[str]:
        """The database's best program, its score reported with ``it`` if it has not
        been yet (the initial program), so that the best score is the champion's."""
        best = getattr(self.database, "best_program_id", None)
        if best is None:
            return None
        champion = str(best)
        if champion in self.scored:
            return champion
        program = self.database.programs.get(best)
        metrics = dict(getattr(program, "metrics", None) or {})
        value = score(metrics) if evaluator_reason(metrics, None) is None else None
        if value is not None:
            it.success(sharpe=value)
            self.scored.add(champion)
        return champion

    def _report(
        self,
        start: float,
        end: float,
        success: Optional[float],
        reason: Optional[str],
        program_id: Optional[str] = None,
    ) -> None:
        if stood_down(FRAMEWORK):
            return
        import loopwatch
        import loopwatch.diversity as lwd

        began = time.perf_counter()
        it = loopwatch.iteration(start)
        try:
            if reason is None and success is not None:
                it.success(sharpe=success)
                if program_id is not None:
                    self.scored.add(program_id)
            else:
                it.failure(reason or "no score")
            champion = self._champion(it)
            programs = list(self.database.programs.items())
            found = [self.shingles.get(pid, program.code) for pid, program in programs]
            self.shingles.retain(pid for pid, _ in programs)
            it.population(
                size=len(programs),
                unique=lwd.unique_count(fingerprint for _, fingerprint in found),
                diversity=lwd.code_diversity((), shingles=[shingles for shingles, _ in found]),
                champion=champion,
            )
        finally:
            it.end(end)
            self.iterations += 1
            self.cost += time.perf_counter() - began

    def _flush_stale(self) -> None:
        """Results whose program never reached the database (OpenEvolve failed to add it)."""
        for child_id in list(self.pending):
            _, start, end, _ = self.pending.pop(child_id)
            self._report(start, end, None, "not added to the database")

    def returned(self, iteration: int, result: Any) -> None:
        now = time.time()
        self._flush_stale()
        start = self.submitted.pop(iteration, now)
        error = getattr(result, "error", None)
        child = getattr(result, "child_program_dict", None)
        if error:
            self._report(start, now, None, iteration_reason(str(error)))
        elif isinstance(child, dict) and child.get("id"):
            self.pending[str(child["id"])] = (iteration, start, now, getattr(result, "artifacts", None))
        else:
            self._report(start, now, None, "no program in the result")

    def raised(self, iteration: int, error: BaseException) -> None:
        if not isinstance(error, Exception):
            return  # an interrupt: the run is ending, not an iteration failing
        now = time.time()
        self._flush_stale()
        start = self.submitted.pop(iteration, now)
        name = type(error).__name__
        reason = "iteration timed out" if "Timeout" in name else "worker failed: " + name
        self._report(start, now, None, reason)

    def added(self, program: Any, admitted: Any) -> None:
        entry = self.pending.pop(str(getattr(program, "id", "")), None)
        if entry is None:
            return  # the initial program, or one OpenEvolve added by itself
        _, start, end, artifacts = entry
        if admitted is None:
            self._report(start, end, None, "rejected by the database")
            return
        metrics = dict(getattr(program, "metrics", None) or {})
        reason = evaluator_reason(metrics, artifacts if isinstance(artifacts, dict) else None)
        self._report(start, end, score(metrics) if reason is None else None, reason, str(program.id))

    def finish(self) -> None:
        self._flush_stale()
        if self.iterations:
            log.info(
                "loopwatch: openevolve instrumentation: %d iterations reported, %.3f ms added per iteration",
                self.iterations,
                1000.0 * self.cost / self.iterations,
            )


def _started(controller: Any, *args: Any, **kwargs: Any) -> None:
    if not owns_search(FRAMEWORK) or stood_down(FRAMEWORK):
        return
    tracker = Tracker(controller)
    _trackers[controller] = tracker
    _by_database[controller.database] = tracker


def _finished(controller: Any) -> None:
    tracker = _trackers.pop(controller, None)
    if tracker is not None:
        _by_database.pop(tracker.database, None)
        tracker.finish()


def _run_evolution(original: Any) -> Any:
    @functools.wraps(original)
    async def run_evolution(self: Any, *args: Any, **kwargs: Any) -> Any:
        safely(FRAMEWORK, _started, self)
        try:
            return await original(self, *args, **kwargs)
        finally:
            # Read before OpenEvolve's stop() sets the event as part of its cleanup.
            safely(FRAMEWORK, _shut_down, self)
            safely(FRAMEWORK, _finished, self)

    return run_evolution


def _wrap_result(tracker: Tracker, iteration: int, future: Any) -> None:
    original = future.result

    def result(timeout: Optional[float] = None) -> Any:
        try:
            value = original(timeout)
        except BaseException as error:
            safely(FRAMEWORK, tracker.raised, iteration, error)
            raise
        safely(FRAMEWORK, tracker.returned, iteration, value)
        return value

    future.result = result


def _submitted(future: Any, controller: Any, iteration: int, *args: Any, **kwargs: Any) -> None:
    tracker = _trackers.get(controller)
    if tracker is None or future is None:
        return
    tracker.submitted[iteration] = time.time()
    _wrap_result(tracker, iteration, future)


def _added(admitted: Any, database: Any, program: Any, *args: Any, **kwargs: Any) -> None:
    tracker = _by_database.get(database)
    if tracker is not None:
        tracker.added(program, admitted)


def _claim(*args: Any, **kwargs: Any) -> None:
    owns_search(FRAMEWORK)  # before the pool starts: its workers inherit the claim


def _shut_down(controller: Any) -> None:
    """Notes whether the evolution ended on a shutdown request (SIGINT, SIGTERM)."""
    state = _run_state.get(None)
    if state is not None and controller.shutdown_event.is_set():
        state["shut_down"] = True


def _completed(state: Dict[str, bool]) -> None:
    if state.get("shut_down"):
        log.info("loopwatch: openevolve was shut down before its last iteration: no done")
        return
    if owns_search(FRAMEWORK) and not stood_down(FRAMEWORK):
        import loopwatch

        loopwatch.done()


def _run(original: Any) -> Any:
    @functools.wraps(original)
    async def run(self: Any, *args: Any, **kwargs: Any) -> Any:
        safely(FRAMEWORK, _claim)
        state: Dict[str, bool] = {}
        token = _run_state.set(state)
        try:
            best = await original(self, *args, **kwargs)
        finally:
            try:
                _run_state.reset(token)
            except ValueError:  # noqa: BLE001 - a context changed under us: nothing to undo
                pass
        safely(FRAMEWORK, _completed, state)
        return best

    return run


def plan(module: Any) -> List[Patch]:
    """The patches for an imported ``openevolve``."""
    controller = hook_point(module, "controller.OpenEvolve")
    run = hook_point(controller, "run")
    parallel = hook_point(module, "process_parallel.ProcessParallelController")
    run_evolution = hook_point(parallel, "run_evolution")
    submit = hook_point(parallel, "_submit_iteration")
    database = hook_point(module, "database.ProgramDatabase")
    add = hook_point(database, "add")
    return [
        Patch(controller, "run", _run(run)),
        Patch(parallel, "run_evolution", _run_evolution(run_evolution)),
        Patch(parallel, "_submit_iteration", wrap_method(FRAMEWORK, submit, after=_submitted)),
        Patch(database, "add", wrap_method(FRAMEWORK, add, after=_added)),
    ]

