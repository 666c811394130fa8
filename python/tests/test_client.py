"""The Python client against a real Unix socket, and its adapters against the real
Optuna and DEAP (installed into the test virtual environment by scripts/test)."""

from __future__ import annotations

import json
import math
import os
import socket
import tempfile
import threading
import time
import unittest
from typing import Any, Callable, Dict, List, Optional

import loopwatch
import loopwatch.deap
import loopwatch.optuna
from loopwatch import _api, _encoding, _merging
from loopwatch._encoding import Event


class Server:
    """A Unix socket reading JSON lines, as `loopwatch run` does."""

    def __init__(self, path: str, read: bool = True) -> None:
        self.path = path
        self.lines: List[Dict[str, object]] = []
        self.raw: List[bytes] = []
        self.connections = 0
        self.lock = threading.Lock()
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(path)
        self.sock.listen(16)
        self.read = read
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with self.lock:
                self.connections += 1
            if self.read:
                threading.Thread(target=self._read, args=(conn,), daemon=True).start()

    def _read(self, conn: socket.socket) -> None:
        with conn, conn.makefile("rb") as stream:
            for line in stream:
                with self.lock:
                    self.raw.append(line)
                    self.lines.append(json.loads(line))

    def types(self) -> List[object]:
        with self.lock:
            return [line["type"] for line in self.lines]

    def wait_for(self, count: int, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if len(self.lines) >= count:
                    return
            time.sleep(0.01)
        raise AssertionError("only %d of %d lines arrived: %r" % (len(self.lines), count, self.types()))

    def wait_until(self, condition: Callable[[List[object]], bool], timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while not condition(self.types()):
            if time.monotonic() > deadline:
                raise AssertionError("lines never satisfied the condition: %r" % self.types())
            time.sleep(0.01)

    def close(self) -> None:
        self.sock.close()


def fresh_client(path: Optional[str]) -> None:
    """Points the module at a socket (or none), as a new process would start."""
    if path is None:
        os.environ.pop(loopwatch.ENV_SOCKET, None)
    else:
        os.environ[loopwatch.ENV_SOCKET] = path
    loopwatch._reset_after_fork()


class ClientTest(unittest.TestCase):
    def setUp(self) -> None:
        self.dir = tempfile.mkdtemp()
        self.path = os.path.join(self.dir, "socket")

    def tearDown(self) -> None:
        fresh_client(None)

    def test_without_a_socket_every_call_is_a_silent_no_op(self) -> None:
        fresh_client(None)
        self.assertFalse(loopwatch.enabled())
        with loopwatch.iteration() as it:
            it.success(sharpe=float("nan"), drawdown=None)
            it.failure(object())  # type: ignore[arg-type]
            it.population(size="x", unique=None, diversity=2)  # type: ignore[arg-type]
        loopwatch.gauge("x", 1)
        loopwatch.counter("y")
        loopwatch.done()
        self.assertEqual(loopwatch.labels(), {})
        self.assertIsNone(_api._client)
        self.assertTrue(loopwatch.flush(0.1))

    def test_events_arrive_in_order_as_protocol_lines(self) -> None:
        server = Server(self.path)
        fresh_client(self.path)
        with loopwatch.iteration() as it:
            it.success(sharpe=1.5, drawdown=0.25)
            it.success(sharpe=float("inf"))
            it.failure('too "few" trades')
            it.population(size=10, unique=7, diversity=0.4, champion="ma-1")
            it.failure('too "few" trades')
        loopwatch.gauge("llm_tokens", 12, unit="{token}", description="Tokens")
        loopwatch.done()
        server.wait_for(6)
        self.assertEqual(
            server.types(),
            ["iteration_start", "population", "outcomes", "iteration_end", "metric", "done"][: len(server.lines)],
        )
        lines = server.lines
        self.assertTrue(all(line["v"] == 1 for line in lines))
        # Outcomes travel as one line per iteration, summarised; a non-finite Sharpe
        # is counted for the monitor to reject.
        outcomes = lines[2]
        self.assertEqual(outcomes["successes"], 2)
        self.assertEqual(outcomes["sharpe"], [1, 1.5, 1.5])
        self.assertEqual(outcomes["drawdown"], [1, 0.25])
        self.assertEqual(outcomes["rejected_sharpe"], 1)
        self.assertEqual(outcomes["failures"], {'too "few" trades': 2})
        self.assertEqual(lines[1]["champion"], "ma-1")
        self.assertLessEqual(lines[0]["t_ns"], lines[3]["t_ns"])
        self.assertEqual(lines[4]["name"], "llm_tokens")
        server.close()

    def test_outcomes_at_once_are_the_same_as_one_call_each(self) -> None:
        server = Server(self.path)
        fresh_client(self.path)
        sharpes, drawdowns = [1.5, float("nan"), 0.25, 3.0], [0.1, -0.2, 0.3]
        with loopwatch.iteration() as it:
            for i, sharpe in enumerate(sharpes):
                it.success(sharpe, drawdowns[i] if i < len(drawdowns) else None)
            for reason in ["no trades", "no trades", "timeout"]:
                it.failure(reason)
            it.population(8, 5, 0.5, champion="c")
        with loopwatch.iteration() as it:
            it.outcomes(sharpes=sharpes, drawdowns=drawdowns, failures={"no trades": 2, "timeout": 1})
            it.population(8, 5, 0.5, champion="c")
        with loopwatch.iteration() as it:
            it.outcomes(sharpes=iter([2.0]), failures={"x": "many"})  # type: ignore[dict-item]
        loopwatch.done()
        server.wait_for(11)
        outcomes = [line for line in server.lines if line["type"] == "outcomes"]
        self.assertEqual(outcomes[0], outcomes[1])
        self.assertEqual(outcomes[0]["failures"], {"no trades": 2, "timeout": 1})
        self.assertEqual(outcomes[0]["rejected_drawdown"], [-0.2])
        # A bad failure count is dropped, never raised; the values before it are kept.
        self.assertEqual(outcomes[2]["sharpe"], [1, 2.0, 2.0])
        self.assertEqual(
            server.types(),
            ["iteration_start", "population", "outcomes", "iteration_end"] * 2
            + ["iteration_start", "outcomes", "iteration_end", "done"],
        )
        server.close()

    def test_llm_calls_are_written_and_kept_when_iterations_are_merged(self) -> None:
        class RateLimitError(Exception):
            status_code = 429

        class APITimeoutError(Exception):
            pass

        server = Server(self.path)
        fresh_client(self.path)
        loopwatch.llm_call("gpt-4o", 1200, 300, 0.9, provider="openai", cached_input_tokens=1000)
        loopwatch.llm_call("gpt-4o", seconds=2.0, error=RateLimitError("slow down"))
        loopwatch.llm_call("gpt-4o", seconds=30.0, error=APITimeoutError())
        loopwatch.llm_call("m", input_tokens="many", seconds=1.0)  # type: ignore[arg-type]
        loopwatch.done()
        server.wait_for(4)
        calls = [line for line in server.lines if line["type"] == "llm_call"]
        self.assertEqual(len(calls), 3, "a call that cannot be written is lost, not raised")
        self.assertEqual(
            (calls[0]["input_tokens"], calls[0]["output_tokens"], calls[0]["cached_input_tokens"]),
            (1200, 300, 1000),
        )
        self.assertEqual([c["error"] for c in calls], [None, "429", "timeout"])
        server.close()
        # A call inside iterations that are merged is sent after them, as it was.
        start, end = ("iteration_start", 1.0), ("iteration_end", 2.0)
        call = ("llm_call", "m", 1, 2, 0.5, None, None, None, None, "chat")
        merged = _merging.merge([start, call, end, start, end])
        self.assertEqual([e[0] for e in merged], ["iterations", "llm_call"])
        self.assertEqual(merged[1], call)

    def test_evaluations_are_never_merged_away(self) -> None:
        start, end = ("iteration_start", 1.0), ("iteration_end", 2.0)

        def evaluation(ident: str) -> List[Event]:
            return [
                ("evaluation_start", ident, 4242, None, None, 1.25),
                ("evaluation_end", ident, 4242, None, "ok", None, 1.5),
            ]

        a, b = evaluation("a"), evaluation("b")
        events = [start, a[0], end, start, a[1], b[0], end, b[1], start, end]
        merged = _merging.merge(events)
        # Each evaluation event is written as it was, in its order; the iterations
        # around them are merged.
        self.assertEqual([e for e in merged if e[0].startswith("evaluation")], a + b)
        self.assertEqual(sum(e[1].count for e in merged if e[0] == "iterations"), 3)
        self.assertEqual(
            [e[0] for e in merged],
            ["iterations", "evaluation_start", "evaluation_end", "evaluation_start", "evaluation_end", "iterations"],
        )

    def test_evaluations_inside_merged_iterations_all_arrive(self) -> None:
        fresh_client(self.path)  # nothing listens yet
        limit = loopwatch.MAX_BUFFERED
        loopwatch.MAX_BUFFERED = 50
        try:
            for i in range(40):
                with loopwatch.iteration() as it:
                    with loopwatch.evaluation("prog-%d" % i):
                        it.success(float(i))
            server = Server(self.path)
            self.assertTrue(loopwatch.flush(10))
            server.wait_until(lambda types: types.count("evaluation_end") == 40)
            lines = list(server.lines)
            self.assertTrue([l for l in lines if l["type"] == "iterations"], "iterations were merged")
            self.assertFalse([l for l in lines if l["type"] == "dropped"], "nothing dropped")
            starts = [l["id"] for l in lines if l["type"] == "evaluation_start"]
            ends = [l["id"] for l in lines if l["type"] == "evaluation_end"]
            self.assertEqual(starts, ["prog-%d" % i for i in range(40)])
            self.assertEqual(ends, starts)
            counted = sum(int(l["count"]) for l in lines if l["type"] == "iterations")
            self.assertEqual(counted + sum(1 for l in lines if l["type"] == "iteration_end"), 40)
            server.close()
        finally:
            loopwatch.MAX_BUFFERED = limit

    def test_odd_values_are_summarised_for_the_monitor_to_reject(self) -> None:
        line = json.loads(
            _encoding.encode(
                ("outcomes", [1.0, float("nan"), "x", 2, float("-inf")], [0.1, -0.5, float("inf"), None], {})
            )
        )
        self.assertEqual(line["successes"], 5)
        self.assertEqual(line["sharpe"], [2, 3.0, 2.0])
        self.assertEqual(line["rejected_sharpe"], 3)
        self.assertEqual(line["drawdown"], [1, 0.1])
        self.assertEqual(line["rejected_drawdown"], [-0.5, None, None])

    def test_an_exception_in_an_iteration_is_recorded_and_re_raised(self) -> None:
        server = Server(self.path)
        fresh_client(self.path)
        with self.assertRaises(KeyError):
            with loopwatch.iteration():
                raise KeyError("boom")
        loopwatch.flush()
        server.wait_for(3)
        self.assertEqual(server.types()[:3], ["iteration_start", "outcomes", "iteration_end"])
        self.assertEqual(server.lines[1]["failures"], {"exception: KeyError": 1})
        server.close()

    def test_a_forked_worker_reports_on_its_own_connection(self) -> None:
        server = Server(self.path)
        fresh_client(self.path)
        loopwatch.gauge("parent", 1)
        loopwatch.flush()
        pid = os.fork()
        if pid == 0:
            loopwatch.counter("child_total", 1)
            ok = loopwatch.flush(5)
            os._exit(0 if ok else 1)
        _, status = os.waitpid(pid, 0)
        self.assertEqual(os.waitstatus_to_exitcode(status), 0)
        server.wait_for(2)
        self.assertEqual(sorted(line["name"] for line in server.lines), ["child_total", "parent"])
        self.assertEqual(server.connections, 2)
        server.close()

    def test_events_while_the_socket_is_away_are_merged_not_lost(self) -> None:
        fresh_client(self.path)  # nothing listens yet
        limit = loopwatch.MAX_BUFFERED
        loopwatch.MAX_BUFFERED = 50
        try:
            started = time.monotonic()
            for i in range(500):
                loopwatch.counter("work_total", 1)
                with loopwatch.iteration() as it:
                    it.success(1.0 + i, 0.1)
                    it.success(float("nan"))
                    it.failure("too few trades")
                    it.population(4, 2, 0.5, champion="c%d" % (i // 100))
            # Never blocks: 500 iterations against a missing socket return at once.
            self.assertLess(time.monotonic() - started, 5.0)
            client = _api._client
            assert client is not None
            self.assertLessEqual(len(client.buffer), 2 * loopwatch.MAX_BUFFERED)
            server = Server(self.path)
            loopwatch.counter("after_total", 1)
            self.assertTrue(loopwatch.flush(10))
            server.wait_for(1)
            deadline = time.monotonic() + 10
            while not any(l.get("name") == "after_total" for l in server.lines) and time.monotonic() < deadline:
                time.sleep(0.01)
            lines = list(server.lines)
            self.assertFalse([l for l in lines if l["type"] == "dropped"], "nothing dropped")
            work = sum(float(l["value"]) for l in lines if l.get("name") == "work_total")
            self.assertEqual(work, 500.0)
            merged = [l for l in lines if l["type"] == "iterations"]
            self.assertTrue(merged, "iterations were merged")
            single = sum(1 for l in lines if l["type"] == "iteration_end")
            self.assertEqual(sum(int(l["count"]) for l in merged) + single, 500)
            successes = sum(int(l["successes"]) for l in merged) + sum(
                int(l["successes"]) for l in lines if l["type"] == "outcomes"
            )
            self.assertEqual(successes, 1000)
            rejected = sum(int(l["rejected_sharpe"]) for l in lines if l["type"] in ("iterations", "outcomes"))
            self.assertEqual(rejected, 500)
            failures = sum(int(l["failures"].get("too few trades", 0)) for l in lines if "failures" in l)
            self.assertEqual(failures, 500)
            best = max(l["sharpe"][2] for l in merged + [l for l in lines if l["type"] == "outcomes"])
            self.assertEqual(best, 500.0)
            server.close()
        finally:
            loopwatch.MAX_BUFFERED = limit

    def test_events_that_cannot_be_merged_are_dropped_at_twice_the_bound_and_reported(self) -> None:
        fresh_client(self.path)  # nothing listens yet
        limit = loopwatch.MAX_BUFFERED
        loopwatch.MAX_BUFFERED = 50
        try:
            # LLM calls are never merged: each is kept as it was until the buffer holds
            # twice the bound (checked at each merge, every quarter of the bound).
            for i in range(300):
                loopwatch.llm_call("m", 1, 2, 0.5)
            client = _api._client
            assert client is not None
            kept = len(client.buffer)
            self.assertGreaterEqual(kept, 2 * loopwatch.MAX_BUFFERED)
            self.assertLess(kept, 2 * loopwatch.MAX_BUFFERED + loopwatch.MAX_BUFFERED // 4)
            self.assertEqual(client.dropped, 300 - kept)
            server = Server(self.path)
            self.assertTrue(loopwatch.flush(10))
            server.wait_until(lambda types: "dropped" in types)
            server.wait_for(kept + 1)
            lines = list(server.lines)
            calls = sum(1 for line in lines if line["type"] == "llm_call")
            dropped = [int(line["count"]) for line in lines if line["type"] == "dropped"]
            self.assertEqual(calls, kept)
            self.assertEqual(dropped, [300 - kept])
            server.close()
        finally:
            loopwatch.MAX_BUFFERED = limit

    def test_the_package_tunables_change_the_client_when_assigned(self) -> None:
        # Assigning the package's tunables changes the client, as it did before the
        # client became a package: MAX_BUFFERED bounds the buffer, DRAIN_TIMEOUT_SECONDS
        # the wait of flush() (and done()) without a timeout.
        fresh_client(self.path)  # nothing listens
        defaults = (loopwatch.MAX_BUFFERED, loopwatch.DRAIN_TIMEOUT_SECONDS)
        loopwatch.MAX_BUFFERED = 20
        loopwatch.DRAIN_TIMEOUT_SECONDS = 0.01
        try:
            for _ in range(100):
                loopwatch.llm_call("m", 1, 2, 0.5)
            client = _api._client
            assert client is not None
            kept = len(client.buffer)
            self.assertGreaterEqual(kept, 2 * 20)
            self.assertLess(kept, 2 * 20 + 20 // 4)
            self.assertEqual(client.dropped, 100 - kept)
            started = time.monotonic()
            self.assertFalse(loopwatch.flush())  # the socket is away: 0.01 s, not 2 s
            self.assertLess(time.monotonic() - started, 1.0)
        finally:
            loopwatch.MAX_BUFFERED, loopwatch.DRAIN_TIMEOUT_SECONDS = defaults

    def test_a_reader_that_stops_reading_does_not_block_the_loop(self) -> None:
        server = Server(self.path, read=False)
        fresh_client(self.path)
        started = time.monotonic()
        for i in range(50_000):
            loopwatch.gauge("g", i, description="x" * 200)
        self.assertLess(time.monotonic() - started, 30.0)
        client = _api._client
        assert client is not None
        self.assertLessEqual(len(client.buffer), 2 * loopwatch.MAX_BUFFERED)
        server.close()

    def test_labels_come_from_the_environment(self) -> None:
        os.environ[loopwatch.ENV_LABELS] = json.dumps({"loopwatch.managed": "true", "loopwatch.run_id": "r"})
        try:
            self.assertEqual(loopwatch.labels()["loopwatch.run_id"], "r")
            os.environ[loopwatch.ENV_LABELS] = "not json"
            self.assertEqual(loopwatch.labels(), {})
        finally:
            del os.environ[loopwatch.ENV_LABELS]


VECTORS = os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "..", "..", "tests", "data", "protocol"
)
MAX_LINE_BYTES = 64 * 1024


def _vectors(name: str) -> List[Dict[str, Any]]:
    with open(os.path.join(VECTORS, name), encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def _padded(value: Any, pad: int) -> Any:
    """A vector's event with every "{pad}" replaced by that many x's."""
    if isinstance(value, str):
        return value.replace("{pad}", "x" * pad)
    if isinstance(value, list):
        return [_padded(v, pad) for v in value]
    if isinstance(value, dict):
        return {_padded(k, pad): _padded(v, pad) for k, v in value.items()}
    return value


class PublicNamesTest(unittest.TestCase):
    """The package's names: what a loop and the adapters use stays where it was."""

    NAMES = {
        "COALESCE_SECONDS", "DRAIN_TIMEOUT_SECONDS", "ENV_LABELS", "ENV_RUN_ID", "ENV_SOCKET",
        "Evaluation", "EvaluationInterrupted", "Event", "Iteration", "MAX_BUFFERED", "MAX_LISTED_REJECTIONS",
        "MAX_REASONS_PER_LINE", "MAX_TEXT_CHARS", "counter", "done", "enabled", "evaluated",
        "evaluation", "flush", "gauge", "iteration", "labels", "llm_call", "llm_role", "run_id",
    }

    def test_every_public_name_is_still_there(self) -> None:
        self.assertEqual(
            loopwatch.__all__,
            ["Evaluation", "EvaluationInterrupted", "Iteration", "counter", "done", "enabled", "evaluated", "evaluation",
             "flush", "gauge", "iteration", "labels", "llm_call", "llm_role", "run_id"],
        )
        missing = [name for name in sorted(self.NAMES) if not hasattr(loopwatch, name)]
        self.assertEqual(missing, [])
        self.assertEqual((loopwatch.ENV_SOCKET, loopwatch.ENV_RUN_ID, loopwatch.ENV_LABELS),
                         ("LOOPWATCH_SOCKET", "LOOPWATCH_RUN_ID", "LOOPWATCH_LABELS"))
        self.assertEqual((loopwatch.MAX_BUFFERED, loopwatch.MAX_TEXT_CHARS, loopwatch.MAX_REASONS_PER_LINE),
                         (10_000, 256, 32))

    def test_the_package_adds_no_public_name_of_its_own(self) -> None:
        import types

        public = {
            name
            for name in dir(loopwatch)
            if not name.startswith("_") and not isinstance(getattr(loopwatch, name), types.ModuleType)
        }
        self.assertEqual(public, self.NAMES)


class ProtocolVectorTest(unittest.TestCase):
    """The test vectors the Rust parser's tests read too (tests/data/protocol)."""

    def test_the_client_writes_exactly_the_valid_lines(self) -> None:
        vectors = [v for v in _vectors("valid.jsonl") if "event" in v]
        self.assertGreaterEqual(len(vectors), 10)
        for vector in vectors:
            with self.subTest(vector["name"]):
                encoded = _encoding.encode(tuple(vector["event"]))
                self.assertEqual(encoded, vector["line"] + "\n")

    def test_merged_events_are_written_as_the_valid_lines(self) -> None:
        vectors = [v for v in _vectors("valid.jsonl") if "events" in v]
        self.assertGreaterEqual(len(vectors), 1)
        for vector in vectors:
            with self.subTest(vector["name"]):
                merged = _merging.merge([tuple(e) for e in vector["events"]])
                self.assertEqual("".join(map(_encoding.encode, merged)), vector["line"] + "\n")

    def test_merged_runs_close_at_the_most_iterations_a_line_may_merge(self) -> None:
        # Two merged runs whose counts together pass the monitor's bound (10^9, a
        # loop far faster than its socket for hours) stay two lines, each accepted.
        big = _merging.Merged()
        big.count = _merging.MAX_MERGED_ITERATIONS - 1
        more = _merging.Merged()
        more.count = 2
        iteration = [("iteration_start", 1.0), ("iteration_end", 2.0)]
        merged = _merging.merge([("iterations", big), *iteration, ("iterations", more)])
        counts = [event[1].count for event in merged if event[0] == "iterations"]
        self.assertEqual(counts, [_merging.MAX_MERGED_ITERATIONS, 2])
        self.assertTrue(all(c <= _merging.MAX_MERGED_ITERATIONS for c in counts))

    def test_inputs_that_would_make_a_line_too_long_are_cut(self) -> None:
        vectors = [v for v in _vectors("invalid.jsonl") if "event" in v and v["error"] == "too_long"]
        self.assertGreaterEqual(len(vectors), 3)
        for vector in vectors:
            with self.subTest(vector["name"]):
                event = tuple(_padded(vector["event"], vector["pad"]))
                encoded = _encoding.encode(event)
                self.assertLess(len(encoded.encode("utf-8")), MAX_LINE_BYTES)
                line = json.loads(encoded)
                self.assertEqual(line["v"], 1)

    def test_texts_past_the_monitors_bound_are_cut_to_it(self) -> None:
        # The monitor rejects an evaluation whose id, worker or reason is over 256
        # characters: the client writes the first 256 of a worker or reason, and an
        # id's start with a hash of the whole, where the vector's line has them all.
        vectors = [v for v in _vectors("invalid.jsonl") if "event" in v and v["error"] == "malformed"]
        self.assertGreaterEqual(len(vectors), 3)
        for vector in vectors:
            with self.subTest(vector["name"]):
                encoded = _encoding.encode(tuple(_padded(vector["event"], vector["pad"])))
                self.assertGreater(vector["pad"], loopwatch.MAX_TEXT_CHARS)
                prefix = vector["line_prefix"]
                self.assertTrue(encoded.startswith(prefix), encoded)
                sent = encoded[len(prefix):]
                if prefix.endswith('"id":"'):
                    sent_id = json.loads(encoded)["id"]
                    self.assertEqual(len(sent_id), loopwatch.MAX_TEXT_CHARS, encoded)
                    self.assertEqual(sent_id, _encoding.evaluation_id("x" * vector["pad"]))
                else:
                    self.assertTrue(sent.startswith("x" * loopwatch.MAX_TEXT_CHARS + '"'), encoded)
                self.assertEqual(json.loads(encoded)["v"], 1)

    def test_many_distinct_reasons_fold_into_other(self) -> None:
        failures = {"reason %d" % i: 2 for i in range(100)}
        line = json.loads(_encoding.encode(("outcomes", [], [], failures)))
        self.assertEqual(len(line["failures"]), loopwatch.MAX_REASONS_PER_LINE)
        self.assertEqual(sum(line["failures"].values()), 200)
        self.assertEqual(line["failures"]["other"], 2 * (100 - loopwatch.MAX_REASONS_PER_LINE + 1))


class DeapTest(unittest.TestCase):
    def test_genome_diversity_is_bounded_and_reads_zero_for_clones(self) -> None:
        self.assertEqual(loopwatch.deap.genome_diversity([[1, 0, 1]] * 10), 0.0)
        self.assertEqual(loopwatch.deap.genome_diversity([[0] * 8, [1] * 8]), 1.0)
        half = loopwatch.deap.genome_diversity([[0, 0, 0, 0], [1, 1, 0, 0]])
        self.assertAlmostEqual(half, 0.5)
        reals = loopwatch.deap.genome_diversity([[0.0, 5.0], [10.0, 5.0]], bounds=(0.0, 10.0))
        self.assertAlmostEqual(reals, 0.5)
        big = [[i % 2] * 20 for i in range(500)]
        self.assertTrue(0.0 <= loopwatch.deap.genome_diversity(big) <= 1.0)

    def test_a_real_deap_population_is_recorded(self) -> None:
        from deap import base, creator, tools

        if not hasattr(creator, "LwFitness"):
            creator.create("LwFitness", base.Fitness, weights=(1.0,))
            creator.create("LwIndividual", list, fitness=creator.LwFitness)
        population = [creator.LwIndividual([i % 2, 1, 0]) for i in range(6)]
        for individual in population[:5]:
            individual.fitness.values = (sum(individual),)
        hof = tools.HallOfFame(1)
        hof.update(population[:5])
        server = Server(os.path.join(tempfile.mkdtemp(), "socket"))
        fresh_client(server.path)
        try:
            with loopwatch.iteration() as it:
                loopwatch.deap.record(it, population, hof)
            loopwatch.flush()
            server.wait_for(4)
            outcomes = next(line for line in server.lines if line["type"] == "outcomes")
            self.assertEqual(outcomes["successes"], 5)
            self.assertEqual(outcomes["sharpe"][0], 5)
            self.assertEqual(outcomes["failures"], {"invalid fitness": 1})
            population_line = next(line for line in server.lines if line["type"] == "population")
            self.assertEqual(population_line["size"], 6)
            self.assertEqual(population_line["unique"], 2)
            self.assertTrue(str(population_line["champion"]).startswith("ind-"))
        finally:
            fresh_client(None)
            server.close()


class OptunaTest(unittest.TestCase):
    def test_a_real_study_reports_each_trial_as_an_iteration(self) -> None:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        server = Server(os.path.join(tempfile.mkdtemp(), "socket"))
        fresh_client(server.path)
        try:
            def objective(trial: "optuna.Trial") -> float:
                x = trial.suggest_float("x", -10, 10)
                if x > 8:
                    raise optuna.TrialPruned()
                if x < -8:
                    raise RuntimeError("diverged")
                time.sleep(0.002)
                return (x - 2) ** 2

            study = optuna.create_study(direction="minimize", sampler=optuna.samplers.RandomSampler(seed=5))
            study.optimize(objective, n_trials=40, callbacks=[loopwatch.optuna.Callback()], catch=(RuntimeError,))
            loopwatch.flush()
            server.wait_until(lambda types: types.count("iteration_end") == 40)
            types = server.types()
            self.assertEqual(types.count("iteration_start"), 40)
            self.assertEqual(types.count("iteration_end"), 40)
            states = {t.state.name for t in study.trials}
            outcomes = [line for line in server.lines if line["type"] == "outcomes"]
            reasons = {reason for line in outcomes for reason in line["failures"]}
            self.assertEqual(reasons, {s.lower() for s in states} - {"complete"})
            best = [line["sharpe"][2] for line in outcomes if line["successes"]]
            # Minimised objective, reported so that higher is better.
            self.assertTrue(all(isinstance(s, float) and s <= 0 for s in best))
            populations = [line for line in server.lines if line["type"] == "population"]
            self.assertEqual(populations[-1]["champion"], "trial-%d" % study.best_trial.number)
            self.assertTrue(all(0.0 <= float(p["diversity"]) <= 1.0 for p in populations))
            starts = [line["t"] for line in server.lines if line["type"] == "iteration_start"]
            ends = [line["t"] for line in server.lines if line["type"] == "iteration_end"]
            self.assertTrue(all(end >= start for start, end in zip(starts, ends)))
            self.assertFalse(any(math.isnan(float(s)) for s in best))
        finally:
            fresh_client(None)
            server.close()


if __name__ == "__main__":
    unittest.main()
