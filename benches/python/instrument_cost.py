"""What the zero-code instrumentation (python/loopwatch/_auto) costs.

1. Start-up: ``python -c pass`` with the instrumentation directory on ``PYTHONPATH``
   (and ``LOOPWATCH_SOCKET`` set, so that the import hook is installed) against the
   same without it; the median of alternating runs, and the same with the directory's
   bytecode absent (``PYTHONDONTWRITEBYTECODE``, as on this machine's CI: Python then
   compiles ``sitecustomize.py`` at every start).
2. OpenEvolve: the CPU time (the process's, all threads) the hooks add to one iteration, by the size of the program
   database: a real ``openevolve.database.ProgramDatabase`` holding N real programs,
   and an iteration's result taken and its child added the way OpenEvolve's controller
   does (``future.result()`` then ``ProgramDatabase.add``), with and without the hooks.

Usage (the test environment made by scripts/test):

    target/venv/bin/python benches/python/instrument_cost.py
"""

from __future__ import annotations

import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import Future
from typing import Any, Callable, Dict, List

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PYTHON_DIR = os.path.join(ROOT, "python")
AUTO = os.path.join(PYTHON_DIR, "loopwatch", "_auto")
RUNS = int(os.environ.get("RUNS", "200"))


def startup() -> None:
    base = {k: v for k, v in os.environ.items() if k != "PYTHONPATH" and not k.startswith("LOOPWATCH_")}
    for bytecode in (True, False):
        env = dict(base)
        if bytecode:
            env.pop("PYTHONDONTWRITEBYTECODE", None)
            subprocess.run([sys.executable, "-m", "compileall", "-q", AUTO], env=env, check=True, stdout=subprocess.DEVNULL)
        else:
            env["PYTHONDONTWRITEBYTECODE"] = "1"
            subprocess.run(["rm", "-rf", os.path.join(AUTO, "__pycache__")], check=True)
        instrumented = dict(env, PYTHONPATH=AUTO, LOOPWATCH_SOCKET="/nonexistent/socket", LOOPWATCH_INSTRUMENT="auto")
        times: Dict[str, List[float]] = {"plain": [], "instrumented": []}
        for _ in range(RUNS):
            for name, child_env in (("plain", env), ("instrumented", instrumented)):
                started = time.perf_counter()
                subprocess.run([sys.executable, "-c", "pass"], env=child_env, check=True)
                times[name].append(time.perf_counter() - started)
        plain, inst = statistics.median(times["plain"]), statistics.median(times["instrumented"])
        print(
            "start-up (%s): python -c pass %.2f ms, instrumented %.2f ms: %+.2f ms"
            % ("bytecode cached" if bytecode else "no bytecode", 1e3 * plain, 1e3 * inst, 1e3 * (inst - plain))
        )
    subprocess.run(["rm", "-rf", os.path.join(AUTO, "__pycache__")], check=True)


def openevolve_iteration(size: int, hooked: bool, iterations: int = 200) -> "tuple[float, float]":
    """CPU seconds of the process for the first iteration (the hooks tokenise every
    program once) and the mean of the others, taking a result and adding its program
    (the client's writer thread included)."""
    from openevolve.config import DatabaseConfig
    from openevolve.database import Program, ProgramDatabase
    from openevolve.process_parallel import SerializableResult

    from loopwatch._instrument import openevolve_hooks

    config = DatabaseConfig(population_size=size, archive_size=min(size, 100), num_islands=2)
    database = ProgramDatabase(config)
    template = open(os.path.join(PYTHON_DIR, "loopwatch", "optuna.py"), encoding="utf-8").read()

    def program(i: int) -> Any:
        code = template.replace("window: int = 20", "window: int = %d" % i)
        return Program(id="p%d" % i, code=code, metrics={"combined_score": float(i % 97)}, iteration_found=i)

    for i in range(size):
        database.add(program(i))

    class Controller:
        pass

    controller = Controller()
    controller.database = database  # type: ignore[attr-defined]
    tracker = openevolve_hooks.Tracker(controller) if hooked else None
    add: Callable[..., Any] = database.add
    total = 0.0
    first = 0.0
    cpu = 0.0
    for n in range(iterations + 1):
        child = program(size + n)
        future: Future = Future()  # type: ignore[type-arg]
        future.set_result(SerializableResult(child_program_dict=child.to_dict(), iteration=n))
        if tracker is not None:
            tracker.submitted[n] = time.time()
            openevolve_hooks._wrap_result(tracker, n, future)
        started = time.process_time()
        result = future.result(timeout=1)
        admitted = add(Program(**result.child_program_dict), iteration=n)
        if tracker is not None:
            tracker.added(child, admitted)
        if n == 0:
            first = time.process_time() - started
        else:
            total += time.process_time() - started
    return first, total / iterations


def main() -> None:
    startup()
    # A socket that reads what the client writes, as loopwatch run does.
    directory = tempfile.mkdtemp()
    path = os.path.join(directory, "socket")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(4)

    def drain() -> None:
        while True:
            conn, _ = server.accept()
            threading.Thread(target=lambda c=conn: [None for _ in iter(lambda: c.recv(65536), b"")], daemon=True).start()

    threading.Thread(target=drain, daemon=True).start()
    os.environ["LOOPWATCH_SOCKET"] = path
    sys.path.insert(0, PYTHON_DIR)
    import logging

    logging.disable(logging.WARNING)
    for size in (10, 100, 1000):
        plain_first, plain = openevolve_iteration(size, hooked=False)
        hooked_first, hooked = openevolve_iteration(size, hooked=True)
        print(
            "openevolve, %4d programs: %.3f ms per iteration, hooked %.3f ms: %+.3f ms "
            "(first iteration %+.1f ms)"
            % (size, 1e3 * plain, 1e3 * hooked, 1e3 * (hooked - plain), 1e3 * (hooked_first - plain_first))
        )


if __name__ == "__main__":
    main()
