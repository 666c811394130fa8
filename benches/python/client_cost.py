"""Cost of recording one iteration from Python: the loopwatch client against
prometheus_client doing the same recording in-process, in one run, side by side;
and the cost of one evaluation (``with loopwatch.evaluation(id):``, its start and
its end) with the client's writer.

One iteration is what an evolutionary loop reports: a start, 20 strategy outcomes
(16 successes with a Sharpe ratio and a drawdown, 4 failures with a reason), the
population (size, distinct members, diversity, champion) and an end. prometheus_client
records it as the original requirements' stack does: counters for outcomes, gauges for
the iteration's number, time, mean Sharpe and drawdown and the population, a labelled
counter for failure reasons.

The cost is the process's CPU time (all threads: the loopwatch client's writer thread
encodes and sends on its own thread, and that counts) per iteration. Run it under
`loopwatch run` so the client has a socket to write to:

    loopwatch run --listen 127.0.0.1:0 --output-dir /tmp -- python benches/python/client_cost.py
"""

from __future__ import annotations

import os
import statistics
import sys
import time

import prometheus_client as pc

import loopwatch
from loopwatch import _api

ITERATIONS = int(os.environ.get("BENCH_ITERATIONS", "20000"))
ROUNDS = 5

SHARPES = [0.1 * i for i in range(16)]
DRAWDOWNS = [0.01 * i for i in range(16)]


def with_loopwatch(n: int) -> None:
    """A call per outcome, as a loop that evaluates strategies one by one reports."""
    for g in range(n):
        with loopwatch.iteration() as it:
            for i in range(16):
                it.success(sharpe=SHARPES[i], drawdown=DRAWDOWNS[i])
            for _ in range(4):
                it.failure("too few trades")
            it.population(size=20, unique=17, diversity=0.62, champion="ma-10-50")
        if g % 100 == 99:
            # Far faster than any real loop: let the writer catch up so that nothing is
            # merged and every event's encoding and sending is paid for and counted.
            loopwatch.flush(30)
    loopwatch.flush(30)


FAILURES = {"too few trades": 4}


def with_loopwatch_bulk(n: int) -> None:
    """One call for the iteration's outcomes, as a loop that evaluates a generation
    at once (DEAP's map, a process pool) reports."""
    for g in range(n):
        with loopwatch.iteration() as it:
            it.outcomes(sharpes=SHARPES, drawdowns=DRAWDOWNS, failures=FAILURES)
            it.population(size=20, unique=17, diversity=0.62, champion="ma-10-50")
        if g % 100 == 99:
            loopwatch.flush(30)
    loopwatch.flush(30)


def with_evaluations(n: int) -> None:
    """One evaluation per candidate, as an evaluator decorated or wrapped by the
    client reports it: its start and its end, with this process's pid."""
    for g in range(n):
        with loopwatch.evaluation("prog-%d" % g, worker="worker-1"):
            pass
        if g % 100 == 99:
            loopwatch.flush(30)
    loopwatch.flush(30)


registry = pc.CollectorRegistry()
successes = pc.Counter("strategy_success", "Successful strategies", registry=registry)
failures = pc.Counter("strategy_failure", "Failed strategies", registry=registry)
reasons = pc.Counter("strategy_failure_reasons", "Failures by reason", ["reason"], registry=registry)
iteration_number = pc.Gauge("iteration_number", "Iteration", registry=registry)
execution_time = pc.Gauge("execution_time_seconds", "Iteration time", registry=registry)
sharpe_ratio = pc.Gauge("sharpe_ratio", "Mean Sharpe", registry=registry)
max_drawdown = pc.Gauge("max_drawdown", "Mean drawdown", registry=registry)
size = pc.Gauge("population_size", "Population", registry=registry)
unique = pc.Gauge("unique_strategy_count", "Distinct", registry=registry)
diversity = pc.Gauge("population_diversity", "Diversity", registry=registry)
champion = pc.Info("champion", "Champion", registry=registry)


def with_prometheus_client(n: int) -> None:
    for g in range(n):
        started = time.perf_counter()
        iteration_number.set(g + 1)
        sharpe_sum = drawdown_sum = 0.0
        for i in range(16):
            successes.inc()
            sharpe_sum += SHARPES[i]
            drawdown_sum += DRAWDOWNS[i]
        for _ in range(4):
            failures.inc()
            reasons.labels("too few trades").inc()
        sharpe_ratio.set(sharpe_sum / 16)
        max_drawdown.set(drawdown_sum / 16)
        size.set(20)
        unique.set(17)
        diversity.set(0.62)
        champion.info({"id": "ma-10-50"})
        execution_time.set(time.perf_counter() - started)


def cpu_per_iteration(run, n: int) -> float:
    start = time.process_time()
    run(n)
    return (time.process_time() - start) / n


def main() -> None:
    if not loopwatch.enabled():
        sys.exit("run this under `loopwatch run` (see the docstring)")
    with_loopwatch(200)  # warm up: connection, writer thread
    with_loopwatch_bulk(200)
    with_prometheus_client(200)
    with_evaluations(200)
    ours, bulk, theirs, evaluations = [], [], [], []
    for _ in range(ROUNDS):
        ours.append(cpu_per_iteration(with_loopwatch, ITERATIONS))
        bulk.append(cpu_per_iteration(with_loopwatch_bulk, ITERATIONS))
        theirs.append(cpu_per_iteration(with_prometheus_client, ITERATIONS))
        evaluations.append(cpu_per_iteration(with_evaluations, ITERATIONS))
    client = _api._client
    assert client is not None and client.dropped == 0 and client.lost == 0, "events were dropped"
    a, c, b = statistics.median(ours), statistics.median(bulk), statistics.median(theirs)
    e = statistics.median(evaluations)
    print(
        "python-client-cost iterations=%d rounds=%d loopwatch_us=%.1f loopwatch_bulk_us=%.1f "
        "prometheus_client_us=%.1f ratio=%.2f ratio_bulk=%.2f evaluation_us=%.1f"
        % (ITERATIONS, ROUNDS, a * 1e6, c * 1e6, b * 1e6, b / a, b / c, e * 1e6)
    )
    loopwatch.done()


if __name__ == "__main__":
    main()
