"""``loopwatch.llm_role``: the role header on the requests the real httpx client (or its
fork httpx2, which the openai and anthropic SDKs of the test environment use) sends to
the metering proxy's address, here a plain HTTP server on loopback that records what
it receives."""

from __future__ import annotations

import asyncio
import contextvars
import importlib
import os
import tempfile
import threading
import unittest
from email.message import Message
from typing import Any, Dict, List, Optional, Tuple

import loopwatch
from loopwatch import _role

from loopback_http import JsonServer
from test_client import Server, fresh_client


def _httpx() -> Any:
    for name in ("httpx", "httpx2"):
        try:
            return importlib.import_module(name)
        except ImportError:
            continue
    return None


httpx = _httpx()


class Recorder:
    """An HTTP server on loopback keeping each request's role header (None without)."""

    def __init__(self) -> None:
        self.roles: List[Tuple[str, Optional[str]]] = []

        def answer(path: str, headers: Message) -> bytes:
            self.roles.append((path, headers.get("x-loopwatch-role")))
            return b"{}"

        self.server = JsonServer(answer)

    def url(self, host: str = "127.0.0.1") -> str:
        return "http://%s:%d" % (host, self.server.port)

    def close(self) -> None:
        self.server.close()


@unittest.skipIf(httpx is None, "neither httpx nor httpx2 is installed")
class LlmRoleTest(unittest.TestCase):
    def setUp(self) -> None:
        self.proxy = Recorder()
        self.other = Recorder()
        self.saved = os.environ.get(_role.ENV_LLM_PROXY)
        os.environ[_role.ENV_LLM_PROXY] = self.proxy.url()

    def tearDown(self) -> None:
        self.proxy.close()
        self.other.close()
        if self.saved is None:
            os.environ.pop(_role.ENV_LLM_PROXY, None)
        else:
            os.environ[_role.ENV_LLM_PROXY] = self.saved

    def post(self, client: Any, url: str, path: str, headers: Optional[Dict[str, str]] = None) -> None:
        client.post(url + path, content=b"{}", headers=headers or {})

    def test_requests_to_the_proxy_carry_the_role_of_their_block_only(self) -> None:
        with httpx.Client() as client:
            self.post(client, self.proxy.url(), "/before")
            with loopwatch.llm_role("mutation"):
                self.post(client, self.proxy.url(), "/mutation")
                with loopwatch.llm_role("judge"):
                    self.post(client, self.proxy.url("localhost"), "/judge")
                self.post(client, self.proxy.url(), "/mutation-again")
                self.post(client, self.proxy.url(), "/own", {"X-Loopwatch-Role": "meta"})
                self.post(client, self.other.url(), "/elsewhere")
            self.post(client, self.proxy.url(), "/after")
        self.assertEqual(
            self.proxy.roles,
            [
                ("/before", None),
                ("/mutation", "mutation"),
                ("/judge", "judge"),
                ("/mutation-again", "mutation"),
                ("/own", "meta"),
                ("/after", None),
            ],
        )
        self.assertEqual(self.other.roles, [("/elsewhere", None)], "only the proxy's address gets it")

    def test_another_thread_has_no_role_and_its_own_block_its_own(self) -> None:
        def call(role: Optional[str], path: str) -> None:
            with httpx.Client() as client:
                if role is None:
                    self.post(client, self.proxy.url(), path)
                else:
                    with loopwatch.llm_role(role):
                        self.post(client, self.proxy.url(), path)

        with loopwatch.llm_role("mutation"):
            threads = [
                threading.Thread(target=call, args=(None, "/plain")),
                threading.Thread(target=call, args=("novelty", "/novelty")),
            ]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
        self.assertEqual(sorted(self.proxy.roles), [("/novelty", "novelty"), ("/plain", None)])

    def test_concurrent_asyncio_tasks_keep_their_own_roles(self) -> None:
        async def call(client: Any, role: str, n: int) -> None:
            with loopwatch.llm_role(role):
                for i in range(n):
                    await client.post(self.proxy.url() + "/%s/%d" % (role, i), content=b"{}")
                    await asyncio.sleep(0)

        async def main() -> None:
            async with httpx.AsyncClient() as client:
                await asyncio.gather(call(client, "mutation", 5), call(client, "embedding", 5))

        asyncio.run(main())
        self.assertEqual(len(self.proxy.roles), 10)
        for path, role in self.proxy.roles:
            self.assertEqual(path.split("/")[1], role)

    def test_names_a_header_cannot_carry_are_sent_mangled_never_raised(self) -> None:
        with httpx.Client() as client:
            for name in ["müt\nation", "", "x" * 500, 42]:
                with loopwatch.llm_role(name):  # type: ignore[arg-type]
                    self.post(client, self.proxy.url(), "/odd")
        self.assertEqual(
            [role for _, role in self.proxy.roles],
            ["m?t?ation", "", "x" * 65, "42"],
        )

    def test_llm_call_reports_the_role_of_its_block(self) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "s.sock")
            server = Server(path)
            fresh_client(path)
            try:
                loopwatch.llm_call("m", 1, 2, 0.1)
                with loopwatch.llm_role("judge"):
                    loopwatch.llm_call("m", 1, 2, 0.1)
                    loopwatch.llm_call("m", 1, 2, 0.1, role="meta")
                loopwatch.flush()
                server.wait_for(3)
                calls = [line for line in server.lines if line["type"] == "llm_call"]
                self.assertEqual([c.get("role") for c in calls], [None, "judge", "meta"])
            finally:
                server.close()
                fresh_client(None)


class WithoutProxyTest(unittest.TestCase):
    def test_one_instance_shared_by_two_tasks_restores_each_tasks_own_role(self) -> None:
        judge = loopwatch.llm_role("judge")
        seen: Dict[str, List[Optional[str]]] = {"a": [], "b": []}

        async def task(name: str, entered: asyncio.Event, go: asyncio.Event, done: asyncio.Event) -> None:
            with loopwatch.llm_role("outer-" + name):
                with judge:
                    entered.set()
                    await go.wait()
                    seen[name].append(_role.current())
                seen[name].append(_role.current())
                done.set()

        async def main() -> None:
            a_in, b_in, a_go, b_go, a_done, b_done = (asyncio.Event() for _ in range(6))
            a = asyncio.ensure_future(task("a", a_in, a_go, a_done))
            b = asyncio.ensure_future(task("b", b_in, b_go, b_done))
            # Both inside `judge`, then `a` leaves first, then `b`.
            await a_in.wait()
            await b_in.wait()
            a_go.set()
            await a_done.wait()
            b_go.set()
            await asyncio.gather(a, b)

        asyncio.run(main())
        self.assertEqual(seen, {"a": ["judge", "outer-a"], "b": ["judge", "outer-b"]})
        self.assertIsNone(_role.current())

    def test_a_block_left_in_another_context_leaves_that_contexts_role_alone(self) -> None:
        role = loopwatch.llm_role("judge")
        entered = contextvars.copy_context()
        entered.run(role.__enter__)
        self.assertEqual(entered.run(_role.current), "judge")
        other = contextvars.copy_context()
        other.run(_role._role.set, "mutation")
        other.run(role.__exit__, None, None, None)
        self.assertEqual(other.run(_role.current), "mutation")
        # A context copied inside the block ends it there.
        inside = entered.copy()
        inside.run(role.__exit__, None, None, None)
        self.assertIsNone(inside.run(_role.current))
        entered.run(role.__exit__, None, None, None)
        self.assertIsNone(entered.run(_role.current))

    def test_a_role_is_kept_without_a_proxy_and_nothing_is_patched_for_it(self) -> None:
        saved = os.environ.pop(_role.ENV_LLM_PROXY, None)
        try:
            self.assertIsNone(_role.current())
            with loopwatch.llm_role("mutation") as role:
                self.assertEqual(_role.current(), "mutation")
                self.assertIs(type(role), _role.LlmRole)
            self.assertIsNone(_role.current())
        finally:
            if saved is not None:
                os.environ[_role.ENV_LLM_PROXY] = saved


if __name__ == "__main__":
    unittest.main()
