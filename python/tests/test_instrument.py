"""Zero-code instrumentation (python/loopwatch/_auto) against the real frameworks.

Every loop here is a child Python process started as ``loopwatch run --instrument``
will start it: the instrumentation directory on ``PYTHONPATH``, ``LOOPWATCH_SOCKET``
pointing at a Unix socket this test listens on, and no loopwatch import in the loop
itself. The frameworks are the real ones installed by scripts/lib/services.sh
(``ensure_python_env``), at the versions pinned there (ShinkaEvolve in an environment
of its own); OpenEvolve and ShinkaEvolve talk to a stand-in OpenAI-compatible server
on loopback.
"""

from __future__ import annotations

import json
import os
import re
import socket
import sqlite3
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import unittest
from collections import Counter
from email.message import Message
from typing import Any, Callable, Dict, List, Optional, Tuple

from loopback_http import JsonServer

PYTHON_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
AUTO = os.path.join(PYTHON_DIR, "loopwatch", "_auto")
#: A real Optuna older than the tested range, installed apart by ensure_python_env.
OUTSIDE_RANGE = os.environ.get("LOOPWATCH_OUTSIDE_RANGE_DIR") or os.path.join(sys.prefix, "outside-range")
#: ShinkaEvolve's own environment (it pins an openai older than the other tests use).
SHINKA_PYTHON = os.environ.get("LOOPWATCH_SHINKA_PYTHON") or os.path.join(
    os.path.dirname(PYTHON_DIR), "target", "venv-shinka", "bin", "python"
)
#: Longest a child may take; the loops here take a few seconds at most.
CHILD_TIMEOUT = 300.0


SENTINEL = {"sentinel": "the test's own last connection"}


class Listener:
    """A Unix socket reading JSON lines, as ``loopwatch run`` does, that knows when
    every connection it accepted has ended."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.lines: List[Dict[str, Any]] = []
        self.opened = 0
        self.closed = 0
        self.sentinel = False
        self.lock = threading.Lock()
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(path)
        self.sock.listen(64)
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with self.lock:
                self.opened += 1
            threading.Thread(target=self._read, args=(conn,), daemon=True).start()

    def _read(self, conn: socket.socket) -> None:
        try:
            with conn, conn.makefile("rb") as stream:
                for line in stream:
                    value = json.loads(line)
                    with self.lock:
                        if value == SENTINEL:
                            self.sentinel = True
                        else:
                            self.lines.append(value)
        finally:
            with self.lock:
                self.closed += 1

    def drained(self, timeout: float = 30.0) -> List[Dict[str, Any]]:
        """Every line, once every connection has ended (call it after the child has
        exited). Connections are accepted in the order they were made: once a last
        one of our own has been read, every one of the child's has been accepted."""
        self.sentinel = False
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as last:
            last.connect(self.path)
            last.sendall(json.dumps(SENTINEL).encode() + b"\n")
        deadline = time.monotonic() + timeout
        while True:
            with self.lock:
                if self.sentinel and self.closed == self.opened:
                    return list(self.lines)
            if time.monotonic() > deadline:
                raise AssertionError("connections still open: %d of %d" % (self.opened - self.closed, self.opened))
            time.sleep(0.01)

    def close(self) -> None:
        self.sock.close()


class Run:
    """What a child reported, and what it printed."""

    def __init__(self, lines: List[Dict[str, Any]], result: "subprocess.CompletedProcess[str]") -> None:
        self.lines = lines
        self.result = result
        self.stdout = result.stdout
        self.stderr = result.stderr

    def of(self, kind: str) -> List[Dict[str, Any]]:
        return [line for line in self.lines if line["type"] == kind]

    def count(self, kind: str) -> int:
        return len(self.of(kind))

    def printed(self) -> Dict[str, Any]:
        """The JSON object the child printed last (what the framework itself says)."""
        last = [line for line in self.stdout.splitlines() if line.startswith("{")]
        assert last, "the child printed no summary: %s\n%s" % (self.stdout, self.stderr)
        value: Dict[str, Any] = json.loads(last[-1])
        return value

    def outcomes(self) -> Tuple[int, Counter]:  # type: ignore[type-arg]
        successes = sum(int(line["successes"]) for line in self.of("outcomes"))
        failures: Counter = Counter()  # type: ignore[type-arg]
        for line in self.of("outcomes"):
            failures.update(line["failures"])
        return successes, failures

    def errors(self) -> int:
        return sum(int(line["count"]) for line in self.of("instrumentation_error"))


def run_child(
    test: unittest.TestCase,
    script: str,
    args: Tuple[str, ...] = (),
    instrument: Optional[str] = "auto",
    pythonpath: Tuple[str, ...] = (AUTO,),
    cwd: Optional[str] = None,
    socket_set: bool = True,
    extra_env: Optional[Dict[str, str]] = None,
    python: str = sys.executable,
) -> Run:
    """Runs ``script`` (Python source) as a child of a supervisor that listens."""
    directory = tempfile.mkdtemp(prefix="lw-instrument-")
    path = os.path.join(directory, "socket")
    listener = Listener(path)
    test.addCleanup(listener.close)
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOOPWATCH_") and k != "PYTHONPATH"}
    env["PYTHONPATH"] = os.pathsep.join(pythonpath)
    if socket_set:
        env["LOOPWATCH_SOCKET"] = path
    if instrument is not None:
        env["LOOPWATCH_INSTRUMENT"] = instrument
    env.update(extra_env or {})
    script_path = os.path.join(directory, "loop.py")
    with open(script_path, "w", encoding="utf-8") as f:
        f.write(textwrap.dedent(script))
    result = subprocess.run(
        [python, script_path, *args],
        env=env,
        cwd=cwd or directory,
        capture_output=True,
        text=True,
        timeout=CHILD_TIMEOUT,
    )
    test.assertEqual(result.returncode, 0, "the loop failed:\n%s\n%s" % (result.stdout, result.stderr[-4000:]))
    return Run(listener.drained(), result)


OPTUNA_LOOP = """
    import json, optuna
    optuna.logging.set_verbosity(optuna.logging.WARNING)

    def objective(trial):
        x = trial.suggest_float("x", -10, 10)
        if x > 7:
            raise optuna.TrialPruned()
        if x < -7:
            raise RuntimeError("diverged")
        return (x - 2) ** 2

    study = optuna.create_study(direction="minimize", sampler=optuna.samplers.RandomSampler(seed=3))
    study.optimize(objective, n_trials=40, catch=(RuntimeError,))
    states = [t.state.name for t in study.trials]
    print(json.dumps({"trials": len(study.trials), "states": states, "best": study.best_trial.number,
                      "version": optuna.__version__}))
"""


class OptunaTest(unittest.TestCase):
    def test_a_study_written_without_loopwatch_reports_each_trial(self) -> None:
        run = run_child(self, OPTUNA_LOOP)
        study = run.printed()
        self.assertEqual(run.count("iteration_start"), study["trials"])
        self.assertEqual(run.count("iteration_end"), study["trials"])
        successes, failures = run.outcomes()
        states = Counter(study["states"])
        self.assertEqual(successes, states["COMPLETE"])
        self.assertEqual(dict(failures), {s.lower(): n for s, n in states.items() if s != "COMPLETE"})
        self.assertEqual(run.of("population")[-1]["champion"], "trial-%d" % study["best"])
        self.assertEqual(
            run.of("instrumentation"),
            [{"v": 1, "type": "instrumentation", "framework": "optuna", "version": study["version"], "state": "active"}],
        )
        self.assertEqual(run.errors(), 0)
        self.assertEqual(run.count("done"), 0, "a study may be followed by more work: no done")

    def test_a_multi_objective_study_is_scored_by_its_first_objective(self) -> None:
        run = run_child(
            self,
            """
    import json, optuna
    optuna.logging.set_verbosity(optuna.logging.WARNING)

    def objective(trial):
        x = trial.suggest_float("x", -10, 10)
        if x < -7:
            raise RuntimeError("diverged")
        return (x - 2) ** 2, x

    study = optuna.create_study(directions=["minimize", "maximize"], sampler=optuna.samplers.RandomSampler(seed=3))
    study.optimize(objective, n_trials=30, catch=(RuntimeError,))
    complete = [t for t in study.trials if t.state.name == "COMPLETE"]
    best = min(complete, key=lambda t: t.values[0])
    print(json.dumps({"trials": len(study.trials), "complete": len(complete), "best": best.number,
                      "best_value": best.values[0], "pareto": [t.number for t in study.best_trials]}))
""",
        )
        study = run.printed()
        self.assertEqual(run.errors(), 0, run.stderr)
        self.assertEqual(run.count("iteration_end"), study["trials"])
        successes, failures = run.outcomes()
        self.assertEqual(successes, study["complete"])
        self.assertEqual(dict(failures), {"fail": study["trials"] - study["complete"]} if failures else {})
        best_score = max(line["sharpe"][2] for line in run.of("outcomes") if line["sharpe"][0])
        self.assertEqual(best_score, -study["best_value"], "the first objective, minimised")
        champion = run.of("population")[-1]["champion"]
        self.assertEqual(champion, "trial-%d" % study["best"])
        self.assertIn(study["best"], study["pareto"])

    def test_a_loop_that_reports_by_hand_is_not_counted_twice(self) -> None:
        by_hand = OPTUNA_LOOP.replace(
            "def objective(trial):\n",
            "import loopwatch\n    def objective(trial):\n        with loopwatch.iteration():\n            return inner(trial)\n\n    def inner(trial):\n",
        )
        run = run_child(self, by_hand)
        # Each trial is the loop's own iteration (pruned and failed ones end it by
        # an exception), and nothing more.
        self.assertEqual(run.count("iteration_end"), run.printed()["trials"])
        self.assertEqual(run.count("population"), 0, "the instrumentation reported nothing")

        adapter = OPTUNA_LOOP.replace(
            "study.optimize(objective, n_trials=40, catch=(RuntimeError,))",
            "import loopwatch.optuna\n    study.optimize(objective, n_trials=40, catch=(RuntimeError,), callbacks=[loopwatch.optuna.Callback()])",
        )
        run = run_child(self, adapter)
        self.assertEqual(run.count("iteration_end"), run.printed()["trials"])

    def test_a_loop_reporting_in_another_process_of_the_run_is_not_counted_twice(self) -> None:
        # A helper process reports an iteration by hand before the study runs: the
        # study's process, which owns the search, stands down.
        script = OPTUNA_LOOP.replace(
            "study = optuna.create_study(",
            "import subprocess, sys\n"
            "    subprocess.run([sys.executable, '-c', 'import loopwatch\\nwith loopwatch.iteration(): pass'], check=True)\n"
            "    study = optuna.create_study(",
        )
        run = run_child(self, script)
        self.assertEqual(run.count("iteration_end"), 1)

    def test_a_study_run_inside_an_objective_reports_nothing(self) -> None:
        # Each trial's objective runs a program that runs its own small study: that
        # process does not own the search, and its trials are not the loop's.
        script = OPTUNA_LOOP.replace(
            "    def objective(trial):\n",
            "    import subprocess, sys\n"
            "    INNER = 'import optuna\\noptuna.logging.set_verbosity(optuna.logging.WARNING)\\n'"
            " + 'optuna.create_study().optimize(lambda t: t.suggest_float(\"y\", 0, 1), n_trials=3)'\n"
            "    def objective(trial):\n"
            "        subprocess.run([sys.executable, '-c', INNER], check=True)\n",
        ).replace("n_trials=40", "n_trials=6")
        run = run_child(self, script)
        self.assertEqual(run.count("iteration_end"), run.printed()["trials"])
        self.assertEqual(run.count("instrumentation"), 1, "the inner studies were not announced either")

    def test_an_instrumentation_that_raises_is_counted_and_the_loop_finishes(self) -> None:
        # A fault no real framework shows at a tested version: the adapter's diversity
        # function is replaced by one that raises.
        script = OPTUNA_LOOP.replace(
            "import json, optuna\n",
            "import json, optuna, loopwatch.optuna\n"
            "    def broken(trials):\n        raise ZeroDivisionError('broken diversity')\n"
            "    loopwatch.optuna.parameter_diversity = broken\n",
        )
        run = run_child(self, script)
        study = run.printed()
        self.assertEqual(len(study["states"]), 40, "the study ran to its end")
        # The adapter reports a population from the first completed trial on: each of
        # those trials met the fault once.
        with_population = 40 - study["states"].index("COMPLETE")
        self.assertEqual(run.errors(), with_population)
        self.assertEqual(run.count("iteration_end"), 40, "the iterations were still reported")
        warnings = [line for line in run.stderr.splitlines() if "optuna instrumentation failed" in line]
        self.assertEqual(len(warnings), 1, run.stderr)
        self.assertIn("ZeroDivisionError: broken diversity", warnings[0])

    def test_a_version_outside_the_tested_range_is_left_alone_with_one_log_line(self) -> None:
        if not os.path.isdir(os.path.join(OUTSIDE_RANGE, "optuna")):
            self.fail(
                "no Optuna outside the tested range at %s: run "
                "`bash -c 'source scripts/lib/services.sh; ensure_python_env'`" % OUTSIDE_RANGE
            )
        # Workers started after the decision import it too: they say nothing more.
        script = OPTUNA_LOOP.replace(
            "study = optuna.create_study(",
            "import subprocess, sys\n"
            "    for _ in range(2):\n"
            "        subprocess.run([sys.executable, '-c', 'import optuna'], check=True)\n"
            "    study = optuna.create_study(",
        )
        run = run_child(self, script, pythonpath=(AUTO, OUTSIDE_RANGE))
        study = run.printed()
        self.assertTrue(study["version"].startswith("3."), study["version"])
        self.assertEqual(run.count("iteration_start"), 0)
        lines = [line for line in run.stderr.splitlines() if "loopwatch" in line]
        self.assertEqual(len(lines), 1, run.stderr)
        self.assertIn("optuna %s is not instrumented" % study["version"], lines[0])
        self.assertEqual(run.count("instrumentation"), 1)
        self.assertEqual(run.of("instrumentation")[0]["state"], "skipped")
        self.assertEqual(run.of("instrumentation")[0]["version"], study["version"])


DEAP_SETUP = """
    import json, random
    from deap import base, creator, tools, algorithms
    creator.create("FitnessMax", base.Fitness, weights=(1.0,))
    creator.create("Individual", list, fitness=creator.FitnessMax)
    toolbox = base.Toolbox()
    toolbox.register("bit", random.randint, 0, 1)
    toolbox.register("individual", tools.initRepeat, creator.Individual, toolbox.bit, 16)
    toolbox.register("population", tools.initRepeat, list, toolbox.individual)
    toolbox.register("evaluate", lambda ind: (sum(ind),))
    toolbox.register("mate", tools.cxTwoPoint)
    toolbox.register("mutate", tools.mutFlipBit, indpb=0.05)
    toolbox.register("select", tools.selTournament, tournsize=3)
    random.seed(4)
"""


class DeapTest(unittest.TestCase):
    def test_the_ea_helpers_report_each_generation_with_its_population(self) -> None:
        run = run_child(
            self,
            DEAP_SETUP
            + """
    population = toolbox.population(n=24)
    hof = tools.HallOfFame(1)
    population, logbook = algorithms.eaSimple(population, toolbox, 0.5, 0.2, 6, halloffame=hof, verbose=False)
    print(json.dumps({"generations": len(logbook), "nevals": [r["nevals"] for r in logbook],
                      "size": len(population), "unique": len({tuple(i) for i in population})}))
""",
        )
        deap = run.printed()
        self.assertEqual(run.count("iteration_end"), deap["generations"])
        populations = run.of("population")
        self.assertEqual(len(populations), deap["generations"])
        self.assertEqual(populations[-1]["size"], deap["size"])
        self.assertEqual(populations[-1]["unique"], deap["unique"])
        self.assertTrue(all(0.0 <= p["diversity"] <= 1.0 for p in populations))
        self.assertTrue(str(populations[-1]["champion"]).startswith("ind-"))
        successes, failures = run.outcomes()
        self.assertEqual(successes, deap["size"] * deap["generations"])
        self.assertEqual(sum(failures.values()), 0)

    def test_deap_imported_from_its_algorithms_first_is_instrumented(self) -> None:
        # deap.algorithms imports deap.tools while it runs: the two are patched once
        # the first has run too.
        run = run_child(
            self,
            "import deap.algorithms\n"
            + textwrap.dedent(DEAP_SETUP)
            + textwrap.dedent(
                """
    population = toolbox.population(n=12)
    population, logbook = algorithms.eaSimple(population, toolbox, 0.5, 0.2, 3, verbose=False)
    print(json.dumps({"generations": len(logbook)}))
"""
            ),
        )
        self.assertEqual(run.count("iteration_end"), run.printed()["generations"])
        self.assertEqual(run.count("population"), run.printed()["generations"])
        self.assertEqual(run.of("instrumentation")[0]["state"], "active")

    def test_a_hand_written_loop_reports_each_logbook_record(self) -> None:
        run = run_child(
            self,
            DEAP_SETUP
            + """
    population = toolbox.population(n=10)
    logbook = tools.Logbook()
    for generation in range(5):
        for individual in population:
            individual.fitness.values = toolbox.evaluate(individual)
        logbook.record(gen=generation, best=max(sum(i) for i in population))
        population = [toolbox.clone(i) for i in toolbox.select(population, len(population))]
    print(json.dumps({"records": len(logbook)}))
""",
        )
        self.assertEqual(run.count("iteration_end"), run.printed()["records"])
        self.assertEqual(run.count("outcomes"), 0, "a bare record carries no outcomes")

    def test_a_hand_written_loop_that_reports_by_hand_is_not_counted_twice(self) -> None:
        run = run_child(
            self,
            DEAP_SETUP
            + """
    import loopwatch, loopwatch.deap
    population = toolbox.population(n=10)
    logbook = tools.Logbook()
    for individual in population:
        individual.fitness.values = toolbox.evaluate(individual)
    logbook.record(gen=0)
    for generation in range(1, 5):
        with loopwatch.iteration() as it:
            population = [toolbox.clone(i) for i in toolbox.select(population, len(population))]
            for individual in population:
                individual.fitness.values = toolbox.evaluate(individual)
            loopwatch.deap.record(it, population)
            logbook.record(gen=generation)
    print(json.dumps({"records": len(logbook)}))
""",
        )
        self.assertEqual(run.printed()["records"], 5)
        self.assertEqual(run.count("iteration_end"), 4, "the loop's own four iterations, nothing more")


NEVERGRAD_LOOP = """
    import json, math
    import nevergrad as ng

    def loss(x):
        if x[0] > 1.5:
            return float("nan")
        return float(sum((x - 0.5) ** 2))

    # A portfolio tells its member optimizers from inside its own tell.
    optimizer = ng.optimizers.Portfolio(parametrization=ng.p.Array(shape=(3,)), budget=40)
    optimizer.parametrization.random_state.seed(2)
    recommendation = optimizer.minimize(loss)
    print(json.dumps({"tells": optimizer.num_tell, "version": ng.__version__}))
"""


class NevergradTest(unittest.TestCase):
    def test_an_optimisation_reports_each_tell(self) -> None:
        run = run_child(self, NEVERGRAD_LOOP)
        ng = run.printed()
        self.assertEqual(run.count("iteration_end"), ng["tells"])
        successes, failures = run.outcomes()
        self.assertEqual(successes + sum(failures.values()), ng["tells"])
        self.assertEqual(set(failures), {"loss not finite"} if failures else set())
        populations = run.of("population")
        self.assertTrue(all(0.0 <= p["diversity"] <= 1.0 for p in populations))
        self.assertTrue(str(populations[-1]["champion"]).startswith("cand-"))
        self.assertEqual(run.of("instrumentation")[0]["version"], ng["version"])

    def test_an_optimiser_with_the_adapter_registered_by_hand_is_left_to_it(self) -> None:
        script = NEVERGRAD_LOOP.replace(
            "recommendation = optimizer.minimize(loss)",
            "import loopwatch.nevergrad\n"
            "    optimizer.register_callback('tell', loopwatch.nevergrad.Callback())\n"
            "    recommendation = optimizer.minimize(loss)",
        )
        run = run_child(self, script)
        self.assertEqual(run.count("iteration_end"), run.printed()["tells"])


class SelectionTest(unittest.TestCase):
    def test_none_instruments_nothing_and_a_list_only_what_it_names(self) -> None:
        run = run_child(self, OPTUNA_LOOP, instrument="none")
        self.assertEqual(run.lines, [])
        run = run_child(self, OPTUNA_LOOP, instrument="deap,nevergrad")
        self.assertEqual(run.lines, [])
        run = run_child(self, OPTUNA_LOOP, instrument="optuna,sklearn")
        self.assertEqual(run.count("iteration_end"), run.printed()["trials"])
        self.assertIn("LOOPWATCH_INSTRUMENT names no known framework: sklearn", run.stderr)

    def test_messages_of_the_instrumentation_go_only_to_a_supervisor_that_asked(self) -> None:
        # The directory put on PYTHONPATH by hand, under a supervisor that does not
        # know the instrumentation messages: iterations only.
        run = run_child(self, OPTUNA_LOOP, instrument=None)
        self.assertEqual(run.count("iteration_end"), run.printed()["trials"])
        self.assertEqual(run.count("instrumentation"), 0)

    def test_an_existing_sitecustomize_still_runs(self) -> None:
        site = tempfile.mkdtemp(prefix="lw-site-")
        with open(os.path.join(site, "sitecustomize.py"), "w", encoding="utf-8") as f:
            f.write("import builtins\nbuiltins.SITE_CUSTOMIZED = 'yes'\n")
        script = OPTUNA_LOOP.replace(
            "print(json.dumps({",
            "print(json.dumps({'customized': SITE_CUSTOMIZED, ",
        )
        run = run_child(self, script, pythonpath=(AUTO, site))
        self.assertEqual(run.printed()["customized"], "yes")
        self.assertEqual(run.count("iteration_end"), run.printed()["trials"])
        # And without a supervisor, where the instrumentation installs nothing.
        run = run_child(self, script, pythonpath=(AUTO, site), socket_set=False)
        self.assertEqual(run.printed()["customized"], "yes")

    def test_a_nested_run_instruments_once(self) -> None:
        # An outer run's instrumentation directory (another copy of the package)
        # behind this one's on PYTHONPATH, and a site's sitecustomize behind both.
        import shutil

        outer = tempfile.mkdtemp(prefix="lw-outer-")
        shutil.copytree(
            os.path.join(PYTHON_DIR, "loopwatch"),
            os.path.join(outer, "loopwatch"),
            ignore=shutil.ignore_patterns("__pycache__"),
        )
        site = tempfile.mkdtemp(prefix="lw-site-")
        with open(os.path.join(site, "sitecustomize.py"), "w", encoding="utf-8") as f:
            f.write("import builtins\nbuiltins.SITE_CUSTOMIZED = 'yes'\n")
        script = OPTUNA_LOOP.replace(
            "print(json.dumps({",
            "import sys\n    hooks = sum(bool(getattr(f, 'loopwatch_instrumentation', False)) for f in sys.meta_path)\n"
            "    print(json.dumps({'customized': SITE_CUSTOMIZED, 'hooks': hooks, ",
        )
        run = run_child(self, script, pythonpath=(AUTO, os.path.join(outer, "loopwatch", "_auto"), site))
        study = run.printed()
        self.assertEqual(study["customized"], "yes")
        self.assertEqual(study["hooks"], 1)
        self.assertEqual(run.count("iteration_end"), study["trials"])
        self.assertEqual(run.count("instrumentation"), 1)

    def test_a_process_that_replaces_its_pythonpath_is_not_instrumented(self) -> None:
        # What docs/frameworks.md says: the directory reaches a process through
        # PYTHONPATH only; extended, it stays; replaced, it is gone.
        inner = "import optuna; optuna.logging.set_verbosity(optuna.logging.WARNING); " \
            "optuna.create_study().optimize(lambda t: t.suggest_float('x', 0, 1), n_trials=%d)"
        script = (
            "import json, os, subprocess, sys\n"
            "extended = dict(os.environ, PYTHONPATH='/nonexistent' + os.pathsep + os.environ['PYTHONPATH'])\n"
            "replaced = dict(os.environ, PYTHONPATH='/nonexistent')\n"
            "subprocess.run([sys.executable, '-c', %r], env=extended, check=True)\n"
            "subprocess.run([sys.executable, '-c', %r], env=replaced, check=True)\n"
            "print(json.dumps({}))\n" % (inner % 3, inner % 5)
        )
        run = run_child(self, script)
        self.assertEqual(run.count("iteration_end"), 3, "the trials of the process that kept the directory")

    def test_a_child_that_imports_no_framework_loads_nothing_more(self) -> None:
        script = "import json, sys\nprint(json.dumps({'modules': sorted(sys.modules)}))\n"
        plain = set(run_child(self, script, pythonpath=()).printed()["modules"])
        instrumented = set(run_child(self, script).printed()["modules"])
        self.assertEqual(instrumented - plain, {"sitecustomize"} - plain)

    def test_a_child_imports_the_client_the_directory_ships_in(self) -> None:
        # Even one whose Python has no loopwatch installed (site-packages taken off
        # its path): the client that matches the supervisor is the directory's own.
        script = (
            "import sys, json\nsys.path[:] = [p for p in sys.path if 'site-packages' not in p]\n"
            "import loopwatch\nwith loopwatch.iteration() as it:\n    it.success(1.0)\n"
            "print(json.dumps({'file': loopwatch.__file__}))\n"
        )
        run = run_child(self, script)
        self.assertTrue(run.printed()["file"].startswith(os.path.join(PYTHON_DIR, "loopwatch")))
        self.assertEqual(run.count("iteration_end"), 1)


    def test_a_childs_own_loopwatch_of_another_version_is_not_shadowed(self) -> None:
        import loopwatch

        own = tempfile.mkdtemp(prefix="lw-own-")
        os.mkdir(os.path.join(own, "loopwatch"))
        init = os.path.join(own, "loopwatch", "__init__.py")
        with open(init, "w", encoding="utf-8") as f:
            f.write("__version__ = '0.0.1'\nOWN = True\n")
        script = (
            "import json, loopwatch\n"
            "print(json.dumps({'file': loopwatch.__file__, 'own': getattr(loopwatch, 'OWN', False)}))\n"
        )
        run = run_child(self, script, pythonpath=(AUTO, own))
        self.assertEqual(run.printed(), {"file": init, "own": True})
        # A framework imported then is not instrumented by the directory's package
        # behind the child's loopwatch: one line says so.
        run = run_child(self, OPTUNA_LOOP, pythonpath=(AUTO, own))
        self.assertEqual(run.count("iteration_end"), 0)
        lines = [line for line in run.stderr.splitlines() if "loopwatch" in line]
        self.assertEqual(len(lines), 1, run.stderr)
        self.assertIn("the loopwatch package imported (%s) has no instrumentation" % init, lines[0])

        # One of the same version is the directory's own: it matches the supervisor.
        with open(init, "w", encoding="utf-8") as f:
            f.write("__version__ = %r\nOWN = True\n" % loopwatch.__version__)
        run = run_child(self, script, pythonpath=(AUTO, own))
        self.assertEqual(run.printed()["own"], False)
        self.assertTrue(run.printed()["file"].startswith(os.path.join(PYTHON_DIR, "loopwatch")))


# --- OpenEvolve and ShinkaEvolve, with a stand-in LLM -------------------------------------


class StandIn:
    """An OpenAI-compatible chat completions server: answer ``n`` (0-based) is a full
    program whose score is ``10 + n``, except every fifth (``n % 5 == 3``), which is
    ``bad`` (an answer without code, or a program too long), and the one after it,
    whose program raises when evaluated."""

    def __init__(self, bad: str) -> None:
        self.bad = bad
        self.requests = 0
        self.lock = threading.Lock()

        def answer(path: str, headers: Message) -> bytes:
            with self.lock:
                n = self.requests
                self.requests += 1
            return json.dumps(
                {
                    "id": "chat-%d" % n,
                    "object": "chat.completion",
                    "created": 0,
                    "model": "stand-in",
                    "choices": [
                        {"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": self.answer(n)}}
                    ],
                    "usage": {"prompt_tokens": 100, "completion_tokens": 20, "total_tokens": 120},
                }
            ).encode()

        self.server = JsonServer(answer)
        self.url = "http://127.0.0.1:%d/v1" % self.server.port

    def answer(self, n: int) -> str:
        if n % 5 == 3 and self.bad == "no code":
            return "I would rather not change anything."
        if n % 5 == 3 and self.bad == "too long":
            return "```python\n# EVOLVE-BLOCK-START\ndef score():\n    return 0  # %s\n# EVOLVE-BLOCK-END\n```\n" % ("x" * 400)
        if n % 5 == 4:
            body = "def score():\n    raise ValueError('bad program %d')\n" % n
        else:
            body = "def score():\n    return %d\n" % (10 + n)
        return "```python\n# EVOLVE-BLOCK-START\n%s# EVOLVE-BLOCK-END\n```\n" % body

    def close(self) -> None:
        self.server.close()


INITIAL_PROGRAM = "# EVOLVE-BLOCK-START\ndef score():\n    return 1\n# EVOLVE-BLOCK-END\n"


def _write(directory: str, name: str, text: str) -> str:
    path = os.path.join(directory, name)
    with open(path, "w", encoding="utf-8") as f:
        f.write(textwrap.dedent(text))
    return path


class OpenEvolveTest(unittest.TestCase):
    ITERATIONS = 12

    def openevolve(
        self, iterations: int, initial: str = INITIAL_PROGRAM, on_evaluate: str = ""
    ) -> Tuple[Run, Dict[str, Any], str]:
        """A real OpenEvolve run of ``iterations`` from ``initial`` against the stand-in:
        what was reported, OpenEvolve's best_program_info.json, and its log.
        ``on_evaluate`` is code the evaluator runs with the program's ``score``."""
        stand_in = StandIn(bad="too long")
        self.addCleanup(stand_in.close)
        work = tempfile.mkdtemp(prefix="lw-openevolve-")
        _write(work, "initial_program.py", initial)
        _write(
            work,
            "evaluator.py",
            """
            import importlib.util, os

            def evaluate(program_path):
                spec = importlib.util.spec_from_file_location("candidate", program_path)
                module = importlib.util.module_from_spec(spec)
                spec.loader.exec_module(module)
                score = float(module.score())
                %s
                return {"combined_score": score}
            """
            % on_evaluate,
        )
        _write(
            work,
            "config.yaml",
            """
            max_iterations: %d
            max_code_length: 300
            checkpoint_interval: 1000
            random_seed: 7
            diff_based_evolution: false
            llm:
              api_base: %s
              api_key: stand-in
              models:
                - name: stand-in
                  weight: 1.0
              timeout: 30
              retries: 0
            evaluator:
              timeout: 60
              max_retries: 0
              cascade_evaluation: false
              parallel_evaluations: 2
            database:
              population_size: 50
              num_islands: 2
            """
            % (iterations, stand_in.url),
        )
        run = run_child(
            self,
            "import os, sys\nfrom openevolve.cli import main\nos.environ['LOOP_PID'] = str(os.getpid())\nsys.exit(main())\n",
            args=("initial_program.py", "evaluator.py", "--config", "config.yaml", "--output", "out"),
            cwd=work,
        )
        out = os.path.join(work, "out")
        with open(os.path.join(out, "best", "best_program_info.json"), encoding="utf-8") as f:
            best = json.load(f)
        log_files = sorted(os.listdir(os.path.join(out, "logs")))
        with open(os.path.join(out, "logs", log_files[-1]), encoding="utf-8") as f:
            log = f.read()
        return run, best, log

    def test_a_real_run_reports_what_openevolve_itself_says(self) -> None:
        run, best, log = self.openevolve(self.ITERATIONS)
        # OpenEvolve's own account, from its log: every iteration it collected, the
        # programs it evaluated, and those whose evaluation failed.
        evaluated = set(int(n) for n in re.findall(r"Iteration (\d+): Program ", log))
        failed_iterations = set(int(n) for n in re.findall(r"Iteration (\d+) error", log))
        evaluation_failures = len(re.findall(r"All evaluation attempts failed", log))
        iterations = evaluated | failed_iterations
        self.assertEqual(len(iterations), self.ITERATIONS)
        children = set(re.findall(r"Iteration \d+: Program (\S+) ", log))

        self.assertEqual(run.count("iteration_start"), len(iterations))
        self.assertEqual(run.count("iteration_end"), len(iterations))
        populations = run.of("population")
        # The initial program's score is one more success when it was the champion
        # of an iteration (the first ones failed).
        seed = int(any(p["champion"] not in children for p in populations))
        successes, failures = run.outcomes()
        self.assertEqual(successes - seed + sum(failures.values()), len(iterations))
        self.assertEqual(successes - seed, len(evaluated) - evaluation_failures)
        evaluator_failures = sum(n for reason, n in failures.items() if reason.startswith("evaluator: "))
        self.assertEqual(successes - seed + evaluator_failures, len(evaluated), failures)
        self.assertIn("evaluator: ValueError", failures)
        self.assertIn("program too long", failures)

        self.assertEqual(populations[-1]["champion"], best["id"])
        best_score = max(line["sharpe"][2] for line in run.of("outcomes") if line["sharpe"][0])
        self.assertEqual(best_score, best["metrics"]["combined_score"])
        self.assertTrue(all(0.0 <= p["diversity"] <= 1.0 for p in populations))
        self.assertTrue(all(p["unique"] <= p["size"] for p in populations))
        self.assertGreater(populations[-1]["diversity"], 0.0)

        self.assertEqual(run.count("done"), 1)
        self.assertEqual(run.lines[-1]["type"], "done", "done comes after the last iteration")
        self.assertEqual(run.of("instrumentation")[0]["framework"], "openevolve")
        self.assertEqual(run.errors(), 0)
        cost = re.search(r"openevolve instrumentation: (\d+) iterations reported, ([\d.]+) ms", log)
        assert cost is not None, "the run's log gives the instrumentation's cost"
        self.assertEqual(int(cost.group(1)), len(iterations))
        print("\nOpenEvolve: %s ms added per iteration" % cost.group(2), file=sys.stderr)

    def test_a_run_shut_down_by_sigterm_is_not_done(self) -> None:
        # The evaluation of the third answer's program (in a worker of OpenEvolve's
        # pool) sends the loop SIGTERM, as an operator would: OpenEvolve shuts down
        # gracefully and its run returns.
        run, _, log = self.openevolve(
            self.ITERATIONS,
            on_evaluate="if score == 12: import signal; os.kill(int(os.environ['LOOP_PID']), signal.SIGTERM)",
        )
        self.assertIn("Evolution completed - Shutdown requested", log)
        collected = len(re.findall(r"Iteration \d+: Program |Iteration \d+ error", log))
        self.assertLess(collected, self.ITERATIONS)
        self.assertEqual(run.count("iteration_end"), collected)
        self.assertEqual(run.count("done"), 0, "an interrupted run is not done")

    def test_an_initial_program_better_than_every_child_is_champion_with_its_score(self) -> None:
        # Every child scores 10 + n; the initial program 1000.
        run, best, log = self.openevolve(4, INITIAL_PROGRAM.replace("return 1", "return 1000"))
        self.assertEqual(best["metrics"]["combined_score"], 1000.0, "OpenEvolve's best is the initial program")
        children = set(re.findall(r"Iteration \d+: Program (\S+) ", log))
        self.assertNotIn(best["id"], children)
        populations = run.of("population")
        self.assertEqual({p["champion"] for p in populations}, {best["id"]})
        best_score = max(line["sharpe"][2] for line in run.of("outcomes") if line["sharpe"][0])
        self.assertEqual(best_score, 1000.0)
        # Reported once, with the first iteration.
        self.assertEqual(run.of("outcomes")[0]["sharpe"][2], 1000.0)
        self.assertEqual(sum(1 for line in run.of("outcomes") if line["sharpe"][0] and line["sharpe"][2] == 1000.0), 1)
        self.assertEqual(run.count("iteration_end"), 4)


class ShinkaEvolveTest(unittest.TestCase):
    GENERATIONS = 6

    def shinka(
        self, generations: int, initial: str = INITIAL_PROGRAM
    ) -> Tuple[Run, List[Tuple[str, int, int, float]], str, int]:
        """A real ShinkaEvolve run of ``generations`` from ``initial`` against the
        stand-in: what was reported, and ShinkaEvolve's database: its programs (id,
        generation, correct, combined_score), its best program and its failed
        proposals."""
        stand_in = StandIn(bad="no code")
        self.addCleanup(stand_in.close)
        work = tempfile.mkdtemp(prefix="lw-shinka-")
        _write(work, "initial.py", initial)
        # The evaluation job writes the two files ShinkaEvolve reads (what its
        # run_shinka_eval writes), with the standard library only.
        _write(
            work,
            "evaluate.py",
            """
            import argparse, importlib.util, json, os
            parser = argparse.ArgumentParser()
            parser.add_argument("--program_path")
            parser.add_argument("--results_dir")
            args = parser.parse_args()
            os.makedirs(args.results_dir, exist_ok=True)
            try:
                spec = importlib.util.spec_from_file_location("candidate", args.program_path)
                module = importlib.util.module_from_spec(spec)
                spec.loader.exec_module(module)
                score, correct = float(module.score()), {"correct": True, "error": None}
            except Exception as error:
                score, correct = 0.0, {"correct": False, "error": "%s: %s" % (type(error).__name__, error)}
            with open(os.path.join(args.results_dir, "metrics.json"), "w") as f:
                json.dump({"combined_score": score, "public": {}, "private": {}}, f)
            with open(os.path.join(args.results_dir, "correct.json"), "w") as f:
                json.dump(correct, f)
            """,
        )
        script = """
            from shinka.core import ShinkaEvolveRunner, EvolutionConfig
            from shinka.launch import LocalJobConfig
            from shinka.database import DatabaseConfig

            evo = EvolutionConfig(
                num_generations=%d, patch_types=["full"], patch_type_probs=[1.0], max_patch_resamples=1, max_novelty_attempts=1,
                llm_models=["local/stand-in@%s"], llm_dynamic_selection=None, meta_rec_interval=None,
                embedding_model=None, init_program_path="initial.py", results_dir="results",
                llm_kwargs=dict(temperatures=[0.0], max_tokens=512),
            )
            ShinkaEvolveRunner(
                evo_config=evo,
                job_config=LocalJobConfig(eval_program_path="evaluate.py"),
                db_config=DatabaseConfig(db_path="evolution_db.sqlite", num_islands=1, archive_size=20),
                max_evaluation_jobs=2, max_proposal_jobs=2, verbose=False,
            ).run()
        """ % (generations, stand_in.url)
        if not os.access(SHINKA_PYTHON, os.X_OK):
            self.fail(
                "no ShinkaEvolve environment at %s: run "
                "`bash -c 'source scripts/lib/services.sh; ensure_python_env'`" % SHINKA_PYTHON
            )
        run = run_child(self, script, cwd=work, python=SHINKA_PYTHON)
        db = sqlite3.connect(os.path.join(work, "results", "programs.sqlite"))
        self.addCleanup(db.close)
        programs = db.execute("SELECT id, generation, correct, combined_score FROM programs").fetchall()
        best_id = db.execute("SELECT value FROM metadata_store WHERE key = 'best_program_id'").fetchone()[0]
        failed = db.execute("SELECT COUNT(*) FROM attempt_log WHERE status = 'failed'").fetchone()[0]
        return run, programs, best_id, failed

    def test_a_real_run_reports_what_shinkaevolve_itself_says(self) -> None:
        run, programs, best_id, failed = self.shinka(self.GENERATIONS)
        evolved = [p for p in programs if p[1] > 0]
        populations = run.of("population")
        # The initial program's score is one more success when it was the champion
        # of an iteration (the first ones failed).
        seed = int(any(p["champion"] in {q[0] for q in programs if q[1] == 0} for p in populations))

        self.assertEqual(run.count("iteration_end"), len(evolved) + failed)
        successes, failures = run.outcomes()
        self.assertEqual(successes - seed, sum(1 for p in evolved if p[2]))
        self.assertEqual(sum(failures.values()), sum(1 for p in evolved if not p[2]) + failed)
        self.assertIn("evaluation: ValueError", failures)
        self.assertIn("proposal: llm_output_invalid", failures)
        self.assertEqual(populations[-1]["champion"], best_id)
        self.assertEqual(populations[-1]["size"], len(programs))
        best_score = max(line["sharpe"][2] for line in run.of("outcomes") if line["sharpe"][0])
        self.assertEqual(best_score, max(p[3] for p in programs if p[2]))
        self.assertTrue(all(0.0 <= p["diversity"] <= 1.0 for p in populations))
        self.assertEqual(run.count("done"), 1)
        self.assertEqual(run.errors(), 0)

    def test_an_initial_program_better_than_every_child_is_champion_with_its_score(self) -> None:
        # Every child scores 10 + n; the initial program 1000.
        run, programs, best_id, _ = self.shinka(3, INITIAL_PROGRAM.replace("return 1", "return 1000"))
        seed = [p for p in programs if p[1] == 0]
        self.assertEqual([(p[0], p[3]) for p in seed], [(best_id, 1000.0)], "ShinkaEvolve's best is the initial program")
        populations = run.of("population")
        self.assertEqual({p["champion"] for p in populations}, {best_id})
        best_score = max(line["sharpe"][2] for line in run.of("outcomes") if line["sharpe"][0])
        self.assertEqual(best_score, 1000.0)
        # Reported once, with the first iteration.
        self.assertEqual(run.of("outcomes")[0]["sharpe"][2], 1000.0)
        self.assertEqual(sum(1 for line in run.of("outcomes") if line["sharpe"][0] and line["sharpe"][2] == 1000.0), 1)


# --- the parts, without a child ---------------------------------------------------------


class TablesTest(unittest.TestCase):
    def test_every_trigger_has_a_hook_plan_and_every_framework_a_range(self) -> None:
        from loopwatch import _instrument
        from loopwatch._auto import sitecustomize

        self.assertEqual(set(sitecustomize.TRIGGERS), set(_instrument.HOOKS.keys()))
        self.assertEqual(set(sitecustomize.FRAMEWORKS), set(_instrument.FRAMEWORKS))
        self.assertEqual(set(sitecustomize.TRIGGERS.values()), set(_instrument.FRAMEWORKS))

    def test_versions_and_ranges(self) -> None:
        from loopwatch._instrument import FRAMEWORKS, in_range, parse_version

        self.assertEqual(parse_version("1.4.4rc1"), (1, 4, 4))
        self.assertEqual(parse_version("v0.4"), (0, 4))
        self.assertIsNone(parse_version("dev"))
        openevolve = FRAMEWORKS["openevolve"]
        self.assertTrue(in_range(openevolve, (0, 4, 1)))
        self.assertTrue(in_range(openevolve, (0, 4, 1, 1)))
        self.assertFalse(in_range(openevolve, (0, 4, 2)))
        self.assertFalse(in_range(openevolve, (0, 4)))
        self.assertTrue(in_range(FRAMEWORKS["deap"], (1, 4)))
        self.assertFalse(in_range(FRAMEWORKS["optuna"], (3, 6, 1)))
        self.assertTrue(in_range(FRAMEWORKS["optuna"], (5, 1, 0)))
        self.assertFalse(in_range(FRAMEWORKS["optuna"], (5, 2)))
        self.assertFalse(in_range(FRAMEWORKS["nevergrad"], (1, 1)))

    def test_each_range_is_the_tested_minor_version_as_pinned_and_documented(self) -> None:
        from loopwatch._instrument import FRAMEWORKS, in_range, parse_version

        root = os.path.dirname(PYTHON_DIR)
        with open(os.path.join(root, "scripts", "lib", "services.sh"), encoding="utf-8") as f:
            lines = [line for line in f if line.startswith(("PYTHON_FRAMEWORK_PINS=", "SHINKA_PIN="))]
        pins = dict(re.findall(r"([a-z-]+)==([\d.]+)", "".join(lines)))
        with open(os.path.join(root, "docs", "frameworks.md"), encoding="utf-8") as f:
            docs = f.read()
        for framework in FRAMEWORKS.values():
            with self.subTest(framework.name):
                self.assertEqual(pins[framework.distribution], framework.tested)
                tested = parse_version(framework.tested)
                assert tested is not None
                # The minor version; for a 0.x version, the patch version.
                minor = tested[:3] if tested[0] == 0 else tested[:2]
                self.assertTrue(in_range(framework, tested))
                self.assertEqual(framework.below, minor[:-1] + (minor[-1] + 1,))
                self.assertLessEqual(framework.minimum, tested)
                self.assertIn("| %s | `%s` |" % (framework.tested, framework.range_text()), docs)

    def test_selection(self) -> None:
        from loopwatch._auto.sitecustomize import selection

        self.assertEqual(selection(None), (True, frozenset(), ()))
        self.assertEqual(selection(" None "), (False, frozenset(), ()))
        self.assertEqual(selection("optuna, deap"), (False, frozenset({"optuna", "deap"}), ()))
        self.assertEqual(selection("auto,shinka,foo"), (True, frozenset({"shinka"}), ("foo",)))

    def test_the_version_of_another_loopwatch(self) -> None:
        from loopwatch._auto import sitecustomize

        site = tempfile.mkdtemp(prefix="lw-site-")
        os.mkdir(os.path.join(site, "loopwatch"))
        init = os.path.join(site, "loopwatch", "__init__.py")
        with open(init, "w", encoding="utf-8") as f:
            f.write('"""A loopwatch without __version__, installed by pip."""\n')
        self.assertIsNone(sitecustomize.package_version(init))
        os.mkdir(os.path.join(site, "loopwatch-9.9.dist-info"))
        with open(os.path.join(site, "loopwatch-9.9.dist-info", "METADATA"), "w", encoding="utf-8") as f:
            f.write("Metadata-Version: 2.4\nName: loopwatch\nVersion: 9.9\n\nVersion: 1.0 in the description\n")
        self.assertEqual(sitecustomize.package_version(init), "9.9")
        self.assertFalse(sitecustomize.embedded([site]))
        self.assertTrue(sitecustomize.embedded([tempfile.mkdtemp(prefix="lw-empty-")]))

    def test_one_import_hook_per_process(self) -> None:
        from loopwatch._auto import sitecustomize

        class Installed:
            """Another copy's import hook, as install() recognises it."""

            loopwatch_instrumentation = True

            def find_spec(self, *args: Any) -> None:
                return None

        installed = Installed()
        sys.meta_path.append(installed)
        self.addCleanup(sys.meta_path.remove, installed)
        environ = {"LOOPWATCH_SOCKET": "/nonexistent/socket", "LOOPWATCH_INSTRUMENT": "auto"}
        self.assertIsNone(sitecustomize.install(environ))
        self.assertEqual(sys.meta_path.count(installed), 1)
        self.assertFalse(any(isinstance(f, sitecustomize._Finder) for f in sys.meta_path))

    def test_a_trigger_module_is_patched_once(self) -> None:
        # As two import hooks in one process (two copies of the package) would call it.
        import deap.tools

        from loopwatch import _instrument

        original = deap.tools.Logbook.record
        self.addCleanup(_instrument.undo)
        _instrument.loaded("deap", "deap.tools", deap.tools, True, False)
        patched = deap.tools.Logbook.record
        self.assertIsNot(patched, original)
        _instrument.loaded("deap", "deap.tools", deap.tools, True, False)
        self.assertIs(deap.tools.Logbook.record, patched, "not wrapped twice")
        self.assertEqual(_instrument.state()["deap"][0], True)
        _instrument.undo()
        self.assertIs(deap.tools.Logbook.record, original)
        self.assertFalse(hasattr(deap.tools, _instrument.PATCHED))

    def test_deap_is_decided_for_both_its_modules_before_either_is_patched(self) -> None:
        # A fault no tested version shows: deap.algorithms without one of its helpers.
        import deap.algorithms
        import deap.tools

        from loopwatch import _instrument

        helper = deap.algorithms.eaGenerateUpdate
        del deap.algorithms.eaGenerateUpdate
        self.addCleanup(setattr, deap.algorithms, "eaGenerateUpdate", helper)
        self.addCleanup(_instrument.undo)
        record = deap.tools.Logbook.record
        with self.assertLogs("loopwatch.instrument", "WARNING") as logs:
            _instrument.loaded("deap", "deap.tools", deap.tools, True, False)
        self.assertIn("hook point eaGenerateUpdate is missing", logs.output[0])
        self.assertIs(deap.tools.Logbook.record, record, "deap.tools left alone too")
        self.assertEqual(_instrument.state()["deap"][0], False)

    def test_the_deap_helpers_parameter_positions(self) -> None:
        import inspect

        import deap.algorithms

        from loopwatch._instrument.deap_hooks import HELPERS

        for name, (population_at, halloffame_at) in HELPERS.items():
            with self.subTest(name):
                parameters = list(inspect.signature(getattr(deap.algorithms, name)).parameters)
                self.assertEqual(parameters[halloffame_at], "halloffame")
                if population_at is None:
                    self.assertNotIn("population", parameters)
                else:
                    self.assertEqual(parameters[population_at], "population")

    def test_the_docs_say_how_to_turn_each_framework_off_and_the_labels_as_parsed(self) -> None:
        from loopwatch._instrument import FRAMEWORKS

        root = os.path.dirname(PYTHON_DIR)
        with open(os.path.join(root, "docs", "frameworks.md"), encoding="utf-8") as f:
            docs = f.read()
        headings = {"openevolve": "OpenEvolve", "shinka": "ShinkaEvolve", "optuna": "Optuna", "deap": "DEAP", "nevergrad": "Nevergrad"}
        for name, heading in headings.items():
            with self.subTest(name):
                section = docs.split("\n### %s\n" % heading, 1)[1].split("\n#", 1)[0]
                others = ",".join(n for n in FRAMEWORKS if n != name)
                self.assertIn("`loopwatch run --instrument none`", section)
                self.assertIn("`LOOPWATCH_INSTRUMENT=none`", section)
                self.assertIn("`--instrument %s`" % others, section)
        # The framework label's values: what the protocol's Framework::parse accepts,
        # and other.
        with open(os.path.join(root, "src", "protocol.rs"), encoding="utf-8") as f:
            parsed = re.findall(r'Framework::\w+ => "(\w+)",', f.read())
        self.assertEqual(set(parsed), set(FRAMEWORKS) | {"other"})
        sentence = docs.split("`framework` is one of", 1)[1].split("`instrumentation_error`'s", 1)[0]
        listed = re.findall(r"`(\w+)`", sentence.split("exactly as written", 1)[0])
        self.assertEqual(listed, [n for n in parsed if n != "other"])
        self.assertIn("is read as `other`", sentence)

    def test_a_missing_hook_point_leaves_the_framework_alone(self) -> None:
        # A fault no tested version shows: a module object without Optuna's hook point.
        from types import ModuleType

        from loopwatch import _instrument

        fake = ModuleType("optuna")
        self.addCleanup(_instrument.undo)
        with self.assertLogs("loopwatch.instrument", "WARNING") as logs:
            _instrument.loaded("optuna", "optuna", fake, True, False)
        self.assertEqual(len(logs.output), 1)
        self.assertIn("hook point study.Study is missing", logs.output[0])
        self.assertEqual(_instrument.state()["optuna"][0], False)


class DiversityTest(unittest.TestCase):
    def test_code_diversity_reads_zero_for_clones_and_one_for_strangers(self) -> None:
        from loopwatch import diversity

        a = "def f(x):\n    # add one\n    return x + 1\n"
        self.assertEqual(diversity.code_diversity([a, a.replace("# add one", "# plus")]), 0.0)
        self.assertEqual(diversity.code_diversity([a, "import os\nprint(os.getcwd())\n"]), 1.0)
        edited = a.replace("x + 1", "x + 2")
        self.assertTrue(0.0 < diversity.code_diversity([a, edited]) < 0.5)
        many = [a.replace("1", str(i)) for i in range(60)]
        self.assertTrue(0.0 <= diversity.code_diversity(many) <= 1.0)
        self.assertEqual(diversity.code_fingerprint(a), diversity.code_fingerprint(a + "\n\n"))
        self.assertEqual(diversity.distinct_fraction(["a", "a", "b"]), 0.5)
        self.assertEqual(diversity.unique_count(["a", "b", "a"]), 2)
        # Code that Python cannot tokenise is split plainly.
        self.assertEqual(diversity.code_diversity(["int main() { return 0; }", "int main() { return 0; }"]), 0.0)


class NevergradAdapterTest(unittest.TestCase):
    def test_the_adapter_registered_by_hand_reports_each_tell(self) -> None:
        import nevergrad as ng

        import loopwatch
        import loopwatch.nevergrad

        directory = tempfile.mkdtemp(prefix="lw-ng-")
        listener = Listener(os.path.join(directory, "socket"))
        self.addCleanup(listener.close)
        os.environ["LOOPWATCH_SOCKET"] = listener.path
        loopwatch._reset_after_fork()

        def restore() -> None:
            os.environ.pop("LOOPWATCH_SOCKET", None)
            loopwatch._reset_after_fork()

        self.addCleanup(restore)
        optimizer = ng.optimizers.OnePlusOne(parametrization=ng.p.Array(shape=(2,)), budget=15)
        optimizer.register_callback("tell", loopwatch.nevergrad.Callback())
        optimizer.minimize(lambda x: float(sum(x**2)) if x[0] < 2 else float("inf"))
        self.assertTrue(loopwatch.flush(10))
        deadline = time.monotonic() + 10
        while sum(1 for line in listener.lines if line["type"] == "iteration_end") < 15:
            self.assertLess(time.monotonic(), deadline, listener.lines)
            time.sleep(0.01)
        best = min(line["sharpe"][2] for line in listener.lines if line["type"] == "outcomes" and line["sharpe"][0])
        self.assertLessEqual(best, 0.0, "scores are negated losses")


if __name__ == "__main__":
    unittest.main()
