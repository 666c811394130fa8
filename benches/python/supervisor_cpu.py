"""CPU of `loopwatch run` itself while its child reports 100 iterations per second
(each a start, 20 outcomes, the population and an end, which the client sends as four
lines, gathered into a write every 50 ms), read from
/proc/<supervisor>/stat over the steady part of the run.

    loopwatch run --listen 127.0.0.1:0 --output-dir /tmp -- python benches/python/supervisor_cpu.py
"""

from __future__ import annotations

import os
import sys
import time

import loopwatch

RATE = float(os.environ.get("BENCH_RATE", "100"))
SECONDS = float(os.environ.get("BENCH_SECONDS", "30"))
TICKS_PER_SECOND = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS_PER_SECOND


def main() -> None:
    if not loopwatch.enabled():
        sys.exit("run this under `loopwatch run` (see the docstring)")
    supervisor = os.getppid()
    period = 1.0 / RATE
    start = time.monotonic()
    measured_from = None
    iterations = 0
    next_at = start
    while time.monotonic() - start < SECONDS:
        with loopwatch.iteration() as it:
            for i in range(16):
                it.success(sharpe=0.1 * i, drawdown=0.01 * i)
            for _ in range(4):
                it.failure("too few trades")
            it.population(size=20, unique=17, diversity=0.62, champion="ma-10-50")
        iterations += 1
        if measured_from is None and time.monotonic() - start >= 3.0:
            # After start-up (the first sweeps and samples): the steady state.
            measured_from = (time.monotonic(), cpu_seconds(supervisor), iterations)
        next_at += period
        time.sleep(max(0.0, next_at - time.monotonic()))
    loopwatch.flush()
    assert measured_from is not None
    wall = time.monotonic() - measured_from[0]
    cpu = cpu_seconds(supervisor) - measured_from[1]
    rate = (iterations - measured_from[2]) / wall
    print(
        "supervisor-cpu iterations_per_second=%.1f loopwatch_run_cpu_percent_of_one_core=%.2f"
        % (rate, cpu / wall * 100)
    )
    loopwatch.done()


if __name__ == "__main__":
    main()
