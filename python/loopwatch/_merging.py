"""Merging: what keeps a full buffer from losing a loop's iterations.

When the buffer fills (a loop faster than the socket, or the socket away), the
complete iterations in it are folded into one ``iterations`` event that carries
exactly what the monitor keeps of them (counts, time, outcomes, failure reasons, the
last population, the champions), and each metric's updates into one (a gauge's last
value, a counter's summed increments). Pure functions over event tuples: no locks,
no I/O.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple

from ._encoding import (
    Event,
    bounded_reasons,
    encode_json,
    number,
    seconds,
    summarise_drawdowns,
    summarise_sharpes,
    text,
)

#: Rejected drawdowns a merged line lists one by one; the rest are counted.
MAX_LISTED_REJECTIONS = 64
# The most iterations one ``iterations`` line may merge (the monitor refuses more).
MAX_MERGED_ITERATIONS = 10**9


class Merged:
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
        """Adds one iteration's outcomes."""
        n, total, best, rejected = summarise_sharpes(sharpes)
        self.successes += len(sharpes)
        self.sharpe_n += n
        self.sharpe_sum += total
        if best is not None and (self.sharpe_max is None or best > self.sharpe_max):
            self.sharpe_max = best
        self.rejected_sharpe += rejected
        dn, dtotal, rejected_drawdown = summarise_drawdowns(drawdowns)
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
        """Adds the population the iteration being merged reported."""
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

    def absorb(self, other: "Merged") -> None:
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
        """The ``iterations`` line."""
        population = ""
        if self.population is not None:
            size, unique, diversity = self.population
            population = ',"population":{"size":%d,"unique":%d,"diversity":%s}' % (
                size, unique, number(diversity)
            )
        champions = ""
        if self.first_champion is not None:
            champions = ',"champions":{"first":%s,"first_at":%d,"last":%s,"changes":%d%s}' % (
                text(self.first_champion),
                self.first_at,
                text(self.last_champion),
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
                encode_json(self.rejected_drawdown),
                self.rejected_more[0],
                self.rejected_more[1],
                encode_json(bounded_reasons(self.failures)),
                population,
                champions,
            )
        )


def merge(events: List[Event]) -> List[Event]:
    """The events with every run of complete iterations (and the merged events among
    them) folded into one ``iterations`` event, and every run of metrics into one
    event per metric (a gauge its last value, a counter its summed increments, after
    the iterations of the run); an unfinished iteration, and everything else (LLM
    calls, evaluations' starts and ends, ``done``), stays as it is: each one written,
    in its order among its kind."""
    out: List[Event] = []
    merged: Optional[Merged] = None
    gauges: Dict[str, Event] = {}
    counters: Dict[str, List[Any]] = {}
    # Events of merged iterations that are not folded into them (LLM calls,
    # evaluations): sent after the run, each as it was.
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
            if merged is not None and merged.count + event[1].count > MAX_MERGED_ITERATIONS:
                close_run()
            if merged is None:
                merged = Merged()
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
        if merged is not None and merged.count >= MAX_MERGED_ITERATIONS:
            close_run()
        if merged is None:
            merged = Merged()
        for inner in events[i + 1:j]:
            inner_kind = inner[0]
            if inner_kind == "outcomes":
                merged.add_outcomes(inner[1], inner[2], inner[3])
            elif inner_kind == "population":
                merged.add_population(inner[1], inner[2], inner[3], inner[4])
            elif inner_kind == "metric":
                _fold_metric(inner, gauges, counters)
            else:
                # Everything else (LLM calls, evaluations' starts and ends) is sent
                # after the run, each as it was and in its order.
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
            merged.seconds += seconds(events[j][1]) - seconds(event[1])
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
