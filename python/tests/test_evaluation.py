"""Evaluations (``loopwatch.evaluation``, ``@loopwatch.evaluated``) against a real Unix
socket, from the loop's process and from the workers of real process pools (fork and
spawn)."""

from __future__ import annotations

import asyncio
import inspect
import multiprocessing
import os
import pathlib
import pickle
import signal
import subprocess
import sys
import tempfile
import threading
import time
import unittest
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from typing import Any, Dict, List, Tuple

import loopwatch
import loopwatch.deap
import loopwatch.optuna
from loopwatch import _api
from test_client import Server, fresh_client


# The evaluators the pools run: module-level, so that a spawned worker imports them.
@loopwatch.evaluated
def evaluate_program(program_path: str, timeout: float = 10.0) -> Dict[str, Any]:
    """An evaluator as OpenEvolve and ShinkaEvolve call it."""
    if "bad" in program_path:
        raise ValueError("does not compile")
    return {"pid": os.getpid(), "combined_score": float(len(program_path))}


def score_individual(individual: List[int]) -> Tuple[float, int]:
    """A DEAP-style fitness, wrapped where it is registered, not where it is defined."""
    return float(sum(individual)), os.getpid()


def gauge_and_return() -> int:
    """A worker's last event, gathered when its pool ends it right after."""
    loopwatch.gauge("worker_last", 1.0)
    return os.getpid()


def evaluate_without_a_supervisor() -> Tuple[Dict[str, Any], bool]:
    return evaluate_program("gen_1/main.py"), _api._client is None


@loopwatch.evaluated
def evaluate_forever(marker: str) -> None:
    """An evaluation that never ends by itself: it says its pid in ``marker``, then
    computes on (no sleep for a signal to cut short)."""
    with open(marker + ".tmp", "w") as f:
        f.write(str(os.getpid()))
    os.rename(marker + ".tmp", marker)
    n = 0
    while True:
        n = (n + 1) % 1000


#: The evaluator a worker loaded (:func:`load_evaluator`).
_loaded: Any = None


def load_evaluator() -> None:
    """A pool's initializer, as OpenEvolve's loads the evaluator's module in each
    worker: the decorator runs in the worker's main thread."""
    global _loaded
    _loaded = loopwatch.evaluated(evaluate_forever.__wrapped__)


def evaluate_forever_in_a_thread(marker: str) -> None:
    """As OpenEvolve's pool workers run their evaluator: in a thread of the worker,
    while its main thread waits."""
    with ThreadPoolExecutor(max_workers=1) as threads:
        threads.submit(_loaded, marker).result()


def interrupt_outside_an_evaluation() -> int:
    """SIGUSR2 to this worker while no evaluation is in progress: nothing happens."""
    os.kill(os.getpid(), signal.SIGUSR2)
    for _ in range(1000):
        pass  # the handler has run by now, between these bytecodes
    return os.getpid()


def wait_for_pid(marker: str, timeout: float = 30.0) -> int:
    """The pid an evaluation wrote to ``marker``, once it has."""
    deadline = time.monotonic() + timeout
    while not os.path.exists(marker):
        if time.monotonic() > deadline:
            raise AssertionError("no evaluation started")
        time.sleep(0.01)
    with open(marker) as f:
        return int(f.read())


class EvaluationTest(unittest.TestCase):
    def setUp(self) -> None:
        self.path = os.path.join(tempfile.mkdtemp(), "socket")
        self.server = Server(self.path)
        fresh_client(self.path)

    def tearDown(self) -> None:
        fresh_client(None)
        self.server.close()

    def lines(self, ends: int) -> List[Dict[str, Any]]:
        """The lines once ``ends`` evaluations have ended."""
        loopwatch.flush()
        self.server.wait_until(lambda types: types.count("evaluation_end") >= ends)
        with self.server.lock:
            return [dict(line) for line in self.server.lines]

    def test_a_block_ends_ok_failed_or_timeout_and_re_raises(self) -> None:
        with loopwatch.evaluation("prog-1", worker="w1") as e:
            self.assertEqual(e.id, "prog-1")
        with self.assertRaises(KeyError):
            with loopwatch.evaluation(pathlib.Path("gen_2") / "main.py"):
                raise KeyError("x")
        with self.assertRaises(TimeoutError):
            with loopwatch.evaluation("prog-3"):
                raise TimeoutError()
        lines = self.lines(3)
        starts = [l for l in lines if l["type"] == "evaluation_start"]
        ends = [l for l in lines if l["type"] == "evaluation_end"]
        self.assertEqual([s["id"] for s in starts], ["prog-1", os.path.join("gen_2", "main.py"), "prog-3"])
        self.assertEqual([e["id"] for e in ends], [s["id"] for s in starts])
        self.assertTrue(all(l["pid"] == os.getpid() for l in starts + ends))
        self.assertEqual((starts[0]["worker"], ends[0]["worker"]), ("w1", "w1"))
        self.assertNotIn("worker", starts[1])
        self.assertEqual([(e["outcome"], e.get("reason")) for e in ends],
                         [("ok", None), ("failed", "KeyError"), ("timeout", None)])
        self.assertTrue(all(s["t_ns"] <= e["t_ns"] for s, e in zip(starts, ends)))

    def test_an_outcome_set_in_the_block_ends_it_once(self) -> None:
        with loopwatch.evaluation("a") as e:
            e.timeout()
            e.ok()
        with loopwatch.evaluation("b") as e:
            e.failed("no score")
        with self.assertRaises(RuntimeError):
            with loopwatch.evaluation("c") as e:
                e.ok()
                raise RuntimeError()
        unended = loopwatch.evaluation("d")
        del unended  # garbage: ended as failed, as a dropped guard is
        ended = loopwatch.evaluation("e")
        ended.ok()  # without a block
        ends = [l for l in self.lines(5) if l["type"] == "evaluation_end"]
        self.assertEqual(
            [(e["id"], e["outcome"], e.get("reason")) for e in ends],
            [("a", "timeout", None), ("b", "failed", "no score"), ("c", "ok", None),
             ("d", "failed", "not ended"), ("e", "ok", None)],
        )

    def test_the_queued_time_is_sent_and_never_after_the_start(self) -> None:
        now = time.time()
        with loopwatch.evaluation("waited", queued=now - 5.0):
            pass
        with loopwatch.evaluation("a moment later", queued=now + 0.5):
            pass
        with loopwatch.evaluation("a clock mixed up", queued=now + 3600.0):
            pass
        with loopwatch.evaluation("not a time", queued="soon"):  # type: ignore[arg-type]
            pass
        starts = {l["id"]: l for l in self.lines(4) if l["type"] == "evaluation_start"}
        self.assertEqual(starts["waited"]["queued"], now - 5.0)
        self.assertEqual(starts["a moment later"]["queued_ns"], starts["a moment later"]["t_ns"])
        for ident in ("a clock mixed up", "not a time"):
            self.assertFalse({"queued", "queued_ns"} & set(starts[ident]), ident)

    def test_the_decorator_keeps_the_function(self) -> None:
        def plain(program_path: str, timeout: float = 10.0) -> Dict[str, Any]:
            """An evaluator as OpenEvolve and ShinkaEvolve call it."""
            return {}

        self.assertEqual(inspect.signature(evaluate_program), inspect.signature(plain))
        self.assertEqual(evaluate_program.__name__, "evaluate_program")
        self.assertEqual(evaluate_program.__doc__, plain.__doc__)
        marker: Dict[str, Any] = {}

        @loopwatch.evaluated
        def identity(value: Any) -> Any:
            return value

        self.assertIs(identity(marker), marker)
        error = ValueError("bad")

        @loopwatch.evaluated
        def raising(program_path: str) -> None:
            raise error

        with self.assertRaises(ValueError) as raised:
            raising("gen_3/main.py")
        self.assertIs(raised.exception, error)
        ends = {l["id"]: l for l in self.lines(2) if l["type"] == "evaluation_end"}
        self.assertEqual((ends["gen_3/main.py"]["outcome"], ends["gen_3/main.py"]["reason"]), ("failed", "ValueError"))
        counted = [i for i in ends if i != "gen_3/main.py"]
        self.assertEqual(len(counted), 1)
        self.assertRegex(counted[0], r"^identity-%d-[0-9]+$" % os.getpid())

    def test_ids_and_workers_from_the_arguments(self) -> None:
        @loopwatch.evaluated(id=lambda trial, **k: "trial-%d" % trial, worker=lambda trial, **k: "w%d" % (trial % 2))
        def objective(trial: int, scale: float = 1.0) -> float:
            return trial * scale

        self.assertEqual(objective(3, scale=2.0), 6.0)

        @loopwatch.evaluated(id=lambda *a: 1 / 0, worker="pool-1")
        def broken_id(program_path: str) -> str:
            return program_path

        self.assertEqual(broken_id("p"), "p")

        class Evaluator:
            @loopwatch.evaluated
            def evaluate(self, program_path: str) -> str:
                return program_path

        self.assertEqual(Evaluator().evaluate("gen_4/main.py"), "gen_4/main.py")

        @loopwatch.evaluated
        async def evaluate_async(program_path: str) -> str:
            await asyncio.sleep(0)
            return program_path

        self.assertTrue(inspect.iscoroutinefunction(evaluate_async))
        self.assertEqual(asyncio.run(evaluate_async("gen_5/main.py")), "gen_5/main.py")
        starts = [l for l in self.lines(4) if l["type"] == "evaluation_start"]
        self.assertEqual((starts[0]["id"], starts[0]["worker"]), ("trial-3", "w1"))
        # An id function that raises falls back to a counted id.
        self.assertTrue(starts[1]["id"].startswith("broken_id-%d-" % os.getpid()), starts[1])
        self.assertEqual(starts[1]["worker"], "pool-1")
        self.assertEqual([s["id"] for s in starts[2:]], ["gen_4/main.py", "gen_5/main.py"])

    def test_long_ids_sharing_a_start_stay_apart_and_end_their_own_evaluation(self) -> None:
        deep = "/runs/" + "gen/" * 80
        with loopwatch.evaluation(deep + "a.py"):
            with loopwatch.evaluation(deep + "b.py"):
                pass
        lines = self.lines(2)
        starts = [l["id"] for l in lines if l["type"] == "evaluation_start"]
        ends = [l["id"] for l in lines if l["type"] == "evaluation_end"]
        self.assertEqual(len(set(starts)), 2, starts)
        self.assertTrue(all(len(i) <= 256 for i in starts), starts)
        self.assertEqual(sorted(starts), sorted(ends))

    def test_a_forked_child_leaving_the_block_does_not_end_the_parents_evaluation(self) -> None:
        with loopwatch.evaluation("parent's") as e:
            pid = os.fork()
            if pid == 0:
                e.__exit__(None, None, None)
                loopwatch.gauge("child_done", 1.0)
                os._exit(0 if loopwatch.flush(5) else 1)
            _, status = os.waitpid(pid, 0)
            self.assertEqual(os.waitstatus_to_exitcode(status), 0)
        loopwatch.flush()
        self.server.wait_until(lambda types: "metric" in types and "evaluation_end" in types)
        ends = [l for l in self.lines(1) if l["type"] == "evaluation_end"]
        self.assertEqual([(e["id"], e["pid"]) for e in ends], [("parent's", os.getpid())])

    def test_pool_workers_report_their_own_evaluations(self) -> None:
        for method in ("fork", "spawn"):
            with self.subTest(method):
                self.pool_workers_report_their_own_evaluations(method)

    def pool_workers_report_their_own_evaluations(self, method: str) -> None:
        fresh_client(self.path)
        with self.server.lock:
            self.server.lines.clear()
        paths = ["%s/gen_%d/main.py" % (method, i) for i in range(6)]
        scorer = loopwatch.evaluated(score_individual)
        # Sent to the pool by value: it is not what its module holds under its name.
        self.assertIsNot(pickle.loads(pickle.dumps(scorer)), scorer)
        self.assertIs(pickle.loads(pickle.dumps(evaluate_program)), evaluate_program)
        with loopwatch.evaluation("%s-parent" % method):
            with ProcessPoolExecutor(max_workers=2, mp_context=multiprocessing.get_context(method)) as pool:
                results = list(pool.map(evaluate_program, paths))
                with self.assertRaises(ValueError):
                    pool.submit(evaluate_program, "%s/gen_bad/main.py" % method).result()
                score, scorer_pid = pool.submit(scorer, [1, 2, 3]).result()
                last_pid = pool.submit(gauge_and_return).result()
            # Leaving the block ended the workers: what they had gathered was drained.
        self.assertEqual(score, 6.0)
        self.server.wait_until(lambda types: "metric" in types)
        lines = self.lines(len(paths) + 3)
        starts = {l["id"]: l for l in lines if l["type"] == "evaluation_start"}
        ends = {l["id"]: l for l in lines if l["type"] == "evaluation_end"}
        self.assertEqual(len(starts), len(paths) + 3)
        self.assertEqual(set(starts), set(ends))
        parent = os.getpid()
        self.assertEqual((starts["%s-parent" % method]["pid"], ends["%s-parent" % method]["pid"]), (parent, parent))
        for path, result in zip(paths, results):
            self.assertEqual((starts[path]["pid"], ends[path]["pid"]), (result["pid"], result["pid"]))
            self.assertEqual(ends[path]["outcome"], "ok")
        self.assertEqual((ends["%s/gen_bad/main.py" % method]["outcome"], ends["%s/gen_bad/main.py" % method]["reason"]),
                         ("failed", "ValueError"))
        counted = [i for i in starts if i.startswith("score_individual-")]
        self.assertEqual(counted, [c for c in counted if c.startswith("score_individual-%d-" % scorer_pid)])
        self.assertEqual(len(counted), 1)
        workers = {l["pid"] for l in lines if l["type"].startswith("evaluation") and l["id"] != "%s-parent" % method}
        self.assertNotIn(parent, workers)
        self.assertLessEqual(len(workers), 2)
        metric = [l for l in lines if l["type"] == "metric"]
        self.assertEqual([m["name"] for m in metric], ["worker_last"])
        self.assertNotEqual(last_pid, parent)

    def test_without_a_socket_nothing_is_written_in_the_loop_or_its_workers(self) -> None:
        fresh_client(None)
        with loopwatch.evaluation("x") as e:
            e.failed("y")
        self.assertEqual(e.id, "")
        self.assertEqual(evaluate_program("gen_1/main.py")["pid"], os.getpid())
        with self.assertRaises(ValueError):
            evaluate_program("bad")
        with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("fork")) as pool:
            result, nothing = pool.submit(evaluate_without_a_supervisor).result()
        self.assertTrue(nothing)
        self.assertNotEqual(result["pid"], os.getpid())
        self.assertIsNone(_api._client)
        self.assertEqual(self.server.connections, 0)


def _sigusr2_after_an_evaluation() -> str:
    """In a pool worker: one evaluation, then what SIGUSR2's handler is."""
    with loopwatch.evaluation("prog-plain"):
        pass
    loopwatch.flush()
    return "default" if signal.getsignal(signal.SIGUSR2) == signal.SIG_DFL else "set"


class InterruptTest(unittest.TestCase):
    """A hung evaluation interrupted by ``SIGUSR2`` (what ``loopwatch run
    --on-hung-evaluation kill`` sends first), in the workers of real process pools."""

    def setUp(self) -> None:
        self.dir = tempfile.mkdtemp()
        self.path = os.path.join(self.dir, "socket")
        self.server = Server(self.path)
        # What `loopwatch run --on-hung-evaluation kill` gives its child.
        os.environ["LOOPWATCH_ON_HUNG_EVALUATION"] = "kill"
        fresh_client(self.path)

    def tearDown(self) -> None:
        os.environ.pop("LOOPWATCH_ON_HUNG_EVALUATION", None)
        fresh_client(None)
        self.server.close()

    def test_an_interrupt_goes_only_to_the_thread_an_evaluation_started_in(self) -> None:
        from loopwatch import _evaluation

        class Started:
            def __init__(self) -> None:
                self._thread = threading.get_ident()
                self._runner = threading.current_thread()

        ended: List[Started] = []
        gone = threading.Thread(target=lambda: ended.append(Started()))
        gone.start()
        gone.join()
        self.assertFalse(_evaluation._still_runs(ended[0]), "its thread has ended")  # type: ignore[arg-type]
        release = threading.Event()
        running: List[Started] = []

        def run() -> None:
            running.append(Started())
            release.wait(30)

        alive = threading.Thread(target=run)
        alive.start()
        while not running:
            time.sleep(0.01)
        self.assertTrue(_evaluation._still_runs(running[0]))  # type: ignore[arg-type]
        # A thread that took an ended thread's id is not the evaluation's.
        impostor = Started()
        impostor._runner = gone
        self.assertFalse(_evaluation._still_runs(impostor))  # type: ignore[arg-type]
        release.set()
        alive.join()

    def test_without_kill_nothing_is_interruptible_and_no_handler_is_installed(self) -> None:
        os.environ.pop("LOOPWATCH_ON_HUNG_EVALUATION", None)
        with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
            handler = pool.submit(_sigusr2_after_an_evaluation).result()
        self.assertEqual(handler, "default")
        starts = [l for l in self.evaluation_lines(1) if l["type"] == "evaluation_start"]
        self.assertNotIn("interruptible", starts[0])

    def evaluation_lines(self, ends: int) -> List[Dict[str, Any]]:
        loopwatch.flush()
        self.server.wait_until(lambda types: types.count("evaluation_end") >= ends)
        with self.server.lock:
            return [dict(line) for line in self.server.lines if str(line["type"]).startswith("evaluation")]

    def test_a_hung_evaluation_in_a_pool_worker_is_interrupted_and_the_pool_goes_on(self) -> None:
        for method in ("fork", "spawn"):
            for target in (evaluate_forever, evaluate_forever_in_a_thread):
                with self.subTest(method=method, thread=target is evaluate_forever_in_a_thread):
                    self.interrupted_in_a_pool(method, target)

    def interrupted_in_a_pool(self, method: str, target: Any) -> None:
        fresh_client(self.path)
        with self.server.lock:
            self.server.lines.clear()
        marker = os.path.join(self.dir, "%s-%s" % (method, target.__name__))
        context = multiprocessing.get_context(method)
        # In the main thread the first evaluation installs the handler; a thread needs
        # it installed before, by the decorator in the main thread.
        initializer = load_evaluator if target is evaluate_forever_in_a_thread else None
        with ProcessPoolExecutor(max_workers=1, mp_context=context, initializer=initializer) as pool:
            hung = pool.submit(target, marker)
            worker = wait_for_pid(marker)
            os.kill(worker, signal.SIGUSR2)
            with self.assertRaises(loopwatch.EvaluationInterrupted):
                hung.result(timeout=30)
            # The same worker goes on: outside an evaluation the signal does nothing,
            # and its next evaluations run as any.
            self.assertEqual(pool.submit(interrupt_outside_an_evaluation).result(timeout=30), worker)
            result = pool.submit(evaluate_program, "gen_9/main.py").result(timeout=30)
            self.assertEqual(result["pid"], worker)
        lines = self.evaluation_lines(2)
        starts = {l["id"]: l for l in lines if l["type"] == "evaluation_start"}
        ends = {l["id"]: l for l in lines if l["type"] == "evaluation_end"}
        self.assertEqual((starts[marker]["pid"], starts[marker]["interruptible"]), (worker, True))
        self.assertEqual(ends[marker]["outcome"], "timeout")
        self.assertEqual(ends["gen_9/main.py"]["outcome"], "ok")

    def test_the_signal_outside_an_evaluation_raises_nothing_in_this_process(self) -> None:
        with loopwatch.evaluation("installs the handler"):
            pass
        self.assertIs(signal.getsignal(signal.SIGUSR2), _evaluation_handler())
        os.kill(os.getpid(), signal.SIGUSR2)
        for _ in range(1000):
            pass
        with self.assertRaises(loopwatch.EvaluationInterrupted):
            with loopwatch.evaluation("interrupted here"):
                os.kill(os.getpid(), signal.SIGUSR2)
                while True:
                    pass
        ends = [l for l in self.evaluation_lines(2) if l["type"] == "evaluation_end"]
        self.assertEqual([(e["id"], e["outcome"]) for e in ends],
                         [("installs the handler", "ok"), ("interrupted here", "timeout")])

    def test_a_handler_of_the_programs_own_is_never_replaced(self) -> None:
        program = (
            "import signal, loopwatch\n"
            "def own(signum, frame):\n"
            "    print('own handler')\n"
            "signal.signal(signal.SIGUSR2, own)\n"
            "@loopwatch.evaluated\n"
            "def evaluate(path):\n"
            "    return path\n"
            "with loopwatch.evaluation('own-handler'):\n"
            "    evaluate('decorated')\n"
            "    signal.raise_signal(signal.SIGUSR2)\n"
            "print(signal.getsignal(signal.SIGUSR2) is own)\n"
            "loopwatch.flush(5)\n"
        )
        env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(loopwatch.__file__)))
        env[loopwatch.ENV_SOCKET] = self.path
        run = subprocess.run([sys.executable, "-c", program], env=env, capture_output=True, text=True, timeout=60)
        self.assertEqual((run.returncode, run.stdout), (0, "own handler\nTrue\n"), run.stderr)
        lines = self.evaluation_lines(2)
        starts = [l for l in lines if l["type"] == "evaluation_start"]
        self.assertEqual([s["id"] for s in starts], ["own-handler", "decorated"])
        self.assertTrue(all("interruptible" not in s for s in starts), starts)
        self.assertEqual([l["outcome"] for l in lines if l["type"] == "evaluation_end"], ["ok", "ok"])

    def test_an_evaluation_of_a_coroutine_is_never_interruptible(self) -> None:
        @loopwatch.evaluated
        async def evaluate_async(program_path: str) -> str:
            return program_path

        self.assertEqual(asyncio.run(evaluate_async("async")), "async")
        with loopwatch.evaluation("sync"):
            pass
        starts = {l["id"]: l for l in self.evaluation_lines(2) if l["type"] == "evaluation_start"}
        self.assertNotIn("interruptible", starts["async"])
        self.assertTrue(starts["sync"]["interruptible"])


def _evaluation_handler() -> Any:
    from loopwatch import _evaluation

    return _evaluation._on_interrupt


class AdapterEvaluationTest(unittest.TestCase):
    """The Optuna and DEAP adapters' evaluations, against the real libraries."""

    def setUp(self) -> None:
        self.server = Server(os.path.join(tempfile.mkdtemp(), "socket"))
        fresh_client(self.server.path)

    def tearDown(self) -> None:
        fresh_client(None)
        self.server.close()

    def ends(self, count: int) -> List[Dict[str, Any]]:
        loopwatch.flush()
        self.server.wait_until(lambda types: types.count("evaluation_end") >= count)
        with self.server.lock:
            return [dict(line) for line in self.server.lines if str(line["type"]).startswith("evaluation")]

    def study(self, wrapped: bool) -> Any:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.ERROR)

        def objective(trial: "optuna.Trial") -> float:
            x = trial.suggest_float("x", -10, 10)
            if x > 6:
                raise optuna.TrialPruned()
            if x < -6:
                raise RuntimeError("diverged")
            return (x - 2) ** 2

        study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=3))
        study.optimize(
            loopwatch.optuna.objective(objective) if wrapped else objective,
            n_trials=30,
            callbacks=[loopwatch.optuna.Callback()],
            catch=(RuntimeError,),
        )
        return study

    def test_each_finished_trial_is_an_evaluation_with_its_own_times(self) -> None:
        study = self.study(wrapped=False)
        lines = self.ends(30)
        ends = {l["id"]: l for l in lines if l["type"] == "evaluation_end"}
        starts = {l["id"]: l for l in lines if l["type"] == "evaluation_start"}
        self.assertEqual(len(ends), 30)
        for trial in study.trials:
            ident = "trial-%d" % trial.number
            expected = {"COMPLETE": ("ok", None), "PRUNED": ("failed", "pruned"), "FAIL": ("failed", "fail")}
            self.assertEqual((ends[ident]["outcome"], ends[ident].get("reason")), expected[trial.state.name])
            self.assertEqual(starts[ident]["t"], trial.datetime_start.timestamp())
            self.assertEqual(ends[ident]["t"], trial.datetime_complete.timestamp())
        self.assertEqual({t.state.name for t in study.trials}, {"COMPLETE", "PRUNED", "FAIL"})

    def test_a_wrapped_objective_reports_each_trial_while_it_runs_and_once(self) -> None:
        study = self.study(wrapped=True)
        lines = self.ends(30)
        self.assertEqual([l["type"] for l in lines], ["evaluation_start", "evaluation_end"] * 30)
        self.assertEqual([l["id"] for l in lines[::2]], ["trial-%d" % t.number for t in study.trials])
        reasons = {"COMPLETE": None, "PRUNED": "TrialPruned", "FAIL": "RuntimeError"}
        self.assertEqual([l.get("reason") for l in lines[1::2]], [reasons[t.state.name] for t in study.trials])
        self.assertTrue(all("t_ns" in l and l["pid"] == os.getpid() for l in lines))

    def test_each_individual_the_toolbox_evaluates_is_an_evaluation(self) -> None:
        from deap import algorithms, base, creator, tools

        if not hasattr(creator, "LwEvalFitness"):
            creator.create("LwEvalFitness", base.Fitness, weights=(1.0,))
            creator.create("LwEvalIndividual", list, fitness=creator.LwEvalFitness)
        import random

        random.seed(7)
        toolbox = base.Toolbox()
        toolbox.register("bit", random.randint, 0, 1)
        toolbox.register("individual", tools.initRepeat, creator.LwEvalIndividual, toolbox.bit, 12)
        toolbox.register("population", tools.initRepeat, list, toolbox.individual)
        toolbox.register("evaluate", lambda ind: (float(sum(ind)),))
        toolbox.register("mate", tools.cxTwoPoint)
        toolbox.register("mutate", tools.mutFlipBit, indpb=0.05)
        toolbox.register("select", tools.selTournament, tournsize=3)
        loopwatch.deap.evaluations(toolbox)
        loopwatch.deap.evaluations(toolbox)  # once
        stats = tools.Statistics(lambda ind: ind.fitness.values)
        stats.register("max", max)
        _, logbook = algorithms.eaSimple(
            toolbox.population(n=20), toolbox, cxpb=0.5, mutpb=0.2, ngen=4, stats=stats, verbose=False
        )
        evaluated = sum(logbook.select("nevals"))
        lines = self.ends(evaluated)
        self.assertEqual(sum(1 for l in lines if l["type"] == "evaluation_end"), evaluated)
        ends = [l for l in lines if l["type"] == "evaluation_end"]
        self.assertTrue(all(l["outcome"] == "ok" and l["pid"] == os.getpid() for l in ends))
        self.assertEqual(len({l["id"] for l in ends}), evaluated)


if __name__ == "__main__":
    unittest.main()
