"""ShinkaEvolve: every generation the runner completes is an iteration of the loop.

``ShinkaEvolveRunner`` proposes programs (LLM calls) and evaluates each one in a job of
its own (a subprocess for local jobs); the results come back to the runner's event
loop, in the process that owns the search. The hooks, all in that process:

* ``ShinkaEvolveRunner._persist_completed_job``: an evaluated program, once it is in
  the database, is the iteration's outcome: a success with its ``combined_score`` when
  the evaluation found it correct, else a failure with the evaluation's error
  (``correct.json``) as the reason;
* ``ShinkaEvolveRunner._record_terminal_failed_proposal``: a generation that produced
  no program to evaluate (the LLM's output unusable, a patch that does not apply, a
  program rejected as not novel) is a failure, with ShinkaEvolve's own class of it;
* ``ShinkaEvolveRunner.run_async``: the run's start, and ``done`` when it returns.

The population is every program of the run's database (read once, then followed as
the runner adds programs): its size, distinct programs and diversity
(:func:`loopwatch.diversity.code_diversity`), and the champion: the correct program
with the highest ``combined_score``, as ShinkaEvolve ranks its best; when the champion
is a program whose score was not reported yet (the initial program, better than every
child so far), its score is one more success of the iteration, so that the best score
is always the champion's. An iteration runs from the start of its proposal to its
program's results (or its proposal's failure). The initial program is not an
iteration (ShinkaEvolve's generation 0): it is in the first iteration's population.
"""

from __future__ import annotations

import functools
import json
import os
import re
import time
import weakref
from typing import Any, Dict, List, MutableMapping, Optional, Set, Tuple

from . import Patch, hook_point, log, owns_search, safely, stood_down

FRAMEWORK = "shinka"

_trackers: MutableMapping[Any, "Tracker"] = weakref.WeakKeyDictionary()


def _short(text: str, limit: int = 64) -> str:
    line = next((part.strip() for part in str(text).splitlines() if part.strip()), "")
    return re.sub(r"\d+(\.\d+)?", "N", line)[:limit] or "unknown"


def evaluation_reason(results_dir: Optional[str]) -> str:
    """The reason an evaluated program is not correct, from its ``correct.json``."""
    if results_dir:
        try:
            with open(os.path.join(results_dir, "correct.json"), encoding="utf-8") as f:
                error = json.load(f).get("error")
        except (OSError, ValueError, AttributeError):
            return "evaluation: no results"
        if isinstance(error, str) and error.strip():
            name = re.match(r"\s*([A-Za-z_][\w.]*(?:Error|Exception|Exit|Interrupt))\b", error)
            return "evaluation: " + (name.group(1).rsplit(".", 1)[-1] if name else _short(error))
    return "evaluation: incorrect"


class Tracker:
    """One run of one ``ShinkaEvolveRunner``."""

    def __init__(self, runner: Any) -> None:
        from loopwatch.diversity import ShingleCache

        self.runner = runner
        self.loaded = False
        #: Program id → code, for every program of the run's database.
        self.codes: Dict[str, str] = {}
        self.best: Optional[Tuple[float, str]] = None
        #: Programs whose score has been reported as a success.
        self.scored: Set[str] = set()
        self.shingles = ShingleCache()
        self.iterations = 0
        self.cost = 0.0

    def _program(self, program_id: str, code: str, correct: bool, score: Any) -> None:
        self.codes[program_id] = code
        if correct and isinstance(score, (int, float)) and not isinstance(score, bool):
            if self.best is None or float(score) > self.best[0]:
                self.best = (float(score), program_id)

    def _load(self) -> None:
        """The programs already in the database (the initial one, a resumed run's)."""
        self.loaded = True
        db = getattr(self.runner, "db", None)
        if db is None:
            return
        for program in db.get_all_programs():
            self._program(str(program.id), program.code or "", bool(program.correct), program.combined_score)

    def report(self, start: float, end: float, program: Any, reason: Optional[str]) -> None:
        if stood_down(FRAMEWORK):
            return
        import loopwatch
        import loopwatch.diversity as lwd

        began = time.perf_counter()
        if not self.loaded:
            self._load()
        it = loopwatch.iteration(start)
        try:
            if program is not None:
                self._program(str(program.id), program.code or "", bool(program.correct), program.combined_score)
            if reason is None and program is not None:
                it.success(sharpe=float(program.combined_score or 0.0))
                self.scored.add(str(program.id))
            else:
                it.failure(reason or "incorrect")
            if self.best is not None and self.best[1] not in self.scored:
                # The champion's score, not reported yet (the initial program's).
                it.success(sharpe=self.best[0])
                self.scored.add(self.best[1])
            found = [self.shingles.get(pid, code) for pid, code in self.codes.items()]
            it.population(
                size=len(found),
                unique=lwd.unique_count(fingerprint for _, fingerprint in found),
                diversity=lwd.code_diversity((), shingles=[shingles for shingles, _ in found]),
                champion=None if self.best is None else self.best[1],
            )
        finally:
            it.end(end)
            self.iterations += 1
            self.cost += time.perf_counter() - began

    def finish(self) -> None:
        if self.iterations:
            log.info(
                "loopwatch: shinka instrumentation: %d iterations reported, %.3f ms added per iteration",
                self.iterations,
                1000.0 * self.cost / self.iterations,
            )


def _started(runner: Any) -> bool:
    if not owns_search(FRAMEWORK) or stood_down(FRAMEWORK):
        return False
    _trackers[runner] = Tracker(runner)
    return True


def _finished(runner: Any, completed: bool) -> None:
    tracker = _trackers.pop(runner, None)
    if tracker is not None:
        tracker.finish()
        if completed and not stood_down(FRAMEWORK):
            import loopwatch

            loopwatch.done()


def _run_async(original: Any) -> Any:
    @functools.wraps(original)
    async def run_async(self: Any, *args: Any, **kwargs: Any) -> Any:
        safely(FRAMEWORK, _started, self)
        completed = False
        try:
            result = await original(self, *args, **kwargs)
            completed = True
            return result
        finally:
            safely(FRAMEWORK, _finished, self, completed)

    return run_async


def _persisted(runner: Any, job: Any, result: Any) -> None:
    tracker = _trackers.get(runner)
    event = getattr(result, "persisted_event", None)
    if tracker is None or not getattr(result, "success", False) or event is None:
        return  # not persisted yet: ShinkaEvolve retries it, and reports it then
    program = event.program
    start = float(getattr(job, "proposal_started_at", None) or getattr(job, "start_time", None) or time.time())
    end = float(getattr(event, "evaluation_finished_at", None) or time.time())
    reason = None if program.correct else evaluation_reason(getattr(job, "results_dir", None))
    tracker.report(start, end, program, reason)


def _persist_completed_job(original: Any) -> Any:
    @functools.wraps(original)
    async def persist_completed_job(self: Any, job: Any, *args: Any, **kwargs: Any) -> Any:
        result = await original(self, job, *args, **kwargs)
        safely(FRAMEWORK, _persisted, self, job, result)
        return result

    return persist_completed_job


def _failed_proposal(runner: Any, kwargs: Dict[str, Any]) -> None:
    tracker = _trackers.get(runner)
    if tracker is None:
        return
    stage = str(kwargs.get("failure_stage") or "proposal")
    try:
        kind = runner._classify_failed_proposal(
            failure_stage=stage,
            failure_reason=str(kwargs.get("failure_reason") or ""),
            meta_patch_data=kwargs.get("meta_patch_data"),
        )
    except Exception:  # noqa: BLE001 - an older runner without the classification
        kind = stage
    start = float(kwargs.get("proposal_started_at") or time.time())
    tracker.report(start, time.time(), None, "proposal: " + _short(str(kind)))


def _record_terminal_failed_proposal(original: Any) -> Any:
    @functools.wraps(original)
    async def record_terminal_failed_proposal(self: Any, *args: Any, **kwargs: Any) -> Any:
        result = await original(self, *args, **kwargs)
        safely(FRAMEWORK, _failed_proposal, self, kwargs)
        return result

    return record_terminal_failed_proposal


def plan(module: Any) -> List[Patch]:
    """The patches for an imported ``shinka.core``."""
    runner = hook_point(module, "async_runner.ShinkaEvolveRunner")
    run_async = hook_point(runner, "run_async")
    persist = hook_point(runner, "_persist_completed_job")
    failed = hook_point(runner, "_record_terminal_failed_proposal")
    return [
        Patch(runner, "run_async", _run_async(run_async)),
        Patch(runner, "_persist_completed_job", _persist_completed_job(persist)),
        Patch(runner, "_record_terminal_failed_proposal", _record_terminal_failed_proposal(failed)),
    ]
