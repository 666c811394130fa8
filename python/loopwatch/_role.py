"""The role of a loop's LLM calls: ``loopwatch.llm_role("mutation")``.

Under ``loopwatch run --llm-proxy`` the metering proxy books each call under the role
its request names in the ``X-Loopwatch-Role`` header (then strips the header: it never
reaches the provider), so that spend, tokens and calls can be told apart by what the
loop asked for (mutation, meta, novelty, embedding, judge …)::

    with loopwatch.llm_role("mutation"):
        client.chat.completions.create(...)       # booked under role="mutation"

The role is a :mod:`contextvars` variable: it holds for the calls made from the thread
or asyncio task that entered the block (and the tasks it creates inside it, and what
``asyncio.to_thread`` runs from it), never for another thread's.

The openai and anthropic SDKs (and LiteLLM, and anything else on httpx) send their
requests through ``httpx`` (or its fork ``httpx2``), whose default headers are fixed
when a client is made and cannot follow a context. So the first ``llm_role`` of a
process whose loop has the proxy (``LOOPWATCH_LLM_PROXY`` set by ``loopwatch run``)
wraps ``Client.send`` and ``AsyncClient.send`` of each of those modules that is
installed, once: a request to the proxy's address sent while a role is set gets the
header, unless it carries one already (a client made with
``default_headers={"X-Loopwatch-Role": ...}`` keeps its own). Requests to any other
address are left as they are. As in the zero-code instrumentation, what the wrapper
adds never raises into the loop: a failure is counted
(``loopwatch_instrumentation_errors_total{framework="other"}``, under ``loopwatch run
--instrument``) and logged once, and
the request goes on without the header. Another HTTP client sets the header itself.

A role name is 1 to 64 ASCII letters, digits and ``_ - . : /``; the proxy books
anything else under ``invalid`` (and counts it), never refuses the call. Characters a
header cannot carry are sent as ``?``.
"""

from __future__ import annotations

import contextvars
import functools
import os
import sys
import threading
from types import TracebackType
from typing import Any, Callable, Optional, Tuple, Type

#: The metering proxy's base URL (``http://127.0.0.1:PORT``), set by ``loopwatch run
#: --llm-proxy`` for the loop.
ENV_LLM_PROXY = "LOOPWATCH_LLM_PROXY"
#: The request header the proxy reads a call's role from.
ROLE_HEADER = "X-Loopwatch-Role"
#: The HTTP client modules whose ``Client.send`` and ``AsyncClient.send`` add the header.
CLIENT_MODULES = ("httpx", "httpx2")
#: Longest role name the proxy takes; a longer one is sent cut to one more character,
#: so that it stays too long (booked as ``invalid``).
MAX_ROLE_CHARS = 64

#: Marks a ``send`` this module wrapped, so that it is wrapped once.
_MARK = "__loopwatch_llm_role__"

_role: contextvars.ContextVar[Optional[str]] = contextvars.ContextVar("loopwatch_llm_role", default=None)
#: The blocks entered and not yet left in this context, innermost last, each with the
#: token that restores the role before it.
_entries: contextvars.ContextVar[Tuple[Tuple["LlmRole", contextvars.Token[Optional[str]]], ...]] = (
    contextvars.ContextVar("loopwatch_llm_role_entries", default=())
)

_lock = threading.Lock()
#: ``LOOPWATCH_LLM_PROXY`` as last read, and the address it names.
_proxy: Optional[str] = None
_target: Optional[Tuple[str, int]] = None

_LOOPBACK = ("127.0.0.1", "localhost", "::1")


def current() -> Optional[str]:
    """The role set for this thread or task (as the header sends it), or None."""
    return _role.get()


def header_value(name: Any) -> str:
    """``name`` as the header carries it: text, at most one character more than a role
    name may have, every character outside printable ASCII made ``?``."""
    text = name if isinstance(name, str) else str(name)
    text = text[: MAX_ROLE_CHARS + 1]
    if text.isascii() and text.isprintable():
        return text
    return "".join(c if " " <= c <= "~" else "?" for c in text)


class LlmRole:
    """The context of :func:`llm_role`: sets the role on entry, restores the one before
    on exit. Usable again, nested, in ``async`` code (a plain ``with``), and shared by
    threads and tasks: what each entry restores is kept in the context it was entered
    in, not on the object."""

    def __init__(self, name: str) -> None:
        try:
            self.name = header_value(name)
        except Exception:  # noqa: BLE001 - a name whose str() raises
            self.name = "?"

    def __enter__(self) -> "LlmRole":
        try:
            _install()
        except Exception as error:  # noqa: BLE001 - never into the loop
            _failed(error)
        token = _role.set(self.name)
        _entries.set(_entries.get() + ((self, token),))
        return self

    def __exit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        entries = _entries.get()
        for i in range(len(entries) - 1, -1, -1):
            if entries[i][0] is self:
                break
        else:
            # Not entered in this context nor in one it was copied from (a generator
            # resumed in another task): this context's role is not this block's.
            return
        token = entries[i][1]
        _entries.set(entries[:i] + entries[i + 1 :])
        try:
            _role.reset(token)
        except ValueError:
            # Entered in the context this one was copied from (a task started in the
            # block), whose token this context cannot reset: the role of the block
            # ends here all the same.
            old = token.old_value
            _role.set(None if old is contextvars.Token.MISSING else old)


def llm_role(name: str) -> LlmRole:
    """Names the role of the LLM calls made in a ``with`` block from this thread or
    asyncio task: the metering proxy books their calls, tokens and cost under
    ``role=name``. ``name`` is 1 to 64 ASCII letters, digits and ``_ - . : /``
    (``mutation``, ``judge``); other names are booked as ``invalid``. Never raises."""
    return LlmRole(name)


def _address(url: str) -> Optional[Tuple[str, int]]:
    """The host and port of ``http://host:port``, or None."""
    from urllib.parse import urlsplit

    parts = urlsplit(url.strip())
    if parts.scheme != "http" or not parts.hostname or parts.port is None:
        return None
    return parts.hostname.lower(), parts.port


def _install() -> None:
    """Reads ``LOOPWATCH_LLM_PROXY`` and wraps the HTTP clients' ``send`` (each once)."""
    global _proxy, _target
    proxy = os.environ.get(ENV_LLM_PROXY)
    if proxy == _proxy:
        return
    with _lock:
        if proxy == _proxy:
            return
        _target = _address(proxy) if proxy else None
        if _target is None:
            _proxy = proxy
            return
        try:
            _wrap_clients()
        finally:
            # Read as done only once tried: another thread's first block waits above,
            # and a client that cannot be imported is not tried again.
            _proxy = proxy


def _wrap_clients() -> None:
    """Wraps ``send`` of ``Client`` and ``AsyncClient`` of each installed HTTP client
    module of :data:`CLIENT_MODULES`, once."""
    import importlib
    import importlib.util

    for name in CLIENT_MODULES:
        module = sys.modules.get(name)
        if module is None:
            try:
                if importlib.util.find_spec(name) is None:
                    continue
            except (ImportError, ValueError):
                continue
            module = importlib.import_module(name)
        for cls_name, asynchronous in (("Client", False), ("AsyncClient", True)):
            cls = getattr(module, cls_name, None)
            send = getattr(cls, "send", None)
            if send is None or getattr(send, _MARK, False):
                continue
            wrapped = _wrap_async(send) if asynchronous else _wrap(send)
            setattr(wrapped, _MARK, True)
            setattr(cls, "send", wrapped)

def _to_proxy(url: Any) -> bool:
    """Whether a request's URL is the proxy's address."""
    target = _target
    if target is None:
        return False
    host = str(url.host).lower()
    if url.port != target[1]:
        return False
    return host == target[0] or (host in _LOOPBACK and target[0] in _LOOPBACK)


def _mark(request: Any) -> None:
    """Adds the role header to a request for the proxy, when a role is set and the
    request has none; a failure is counted and the request goes on without it."""
    role = _role.get()
    if role is None:
        return
    try:
        if _to_proxy(request.url) and ROLE_HEADER not in request.headers:
            request.headers[ROLE_HEADER] = role
    except Exception as error:  # noqa: BLE001 - never into the loop
        _failed(error)


def _wrap(send: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(send)
    def wrapped(self: Any, request: Any, *args: Any, **kwargs: Any) -> Any:
        _mark(request)
        return send(self, request, *args, **kwargs)

    return wrapped


def _wrap_async(send: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(send)
    async def wrapped(self: Any, request: Any, *args: Any, **kwargs: Any) -> Any:
        _mark(request)
        return await send(self, request, *args, **kwargs)

    return wrapped


def _failed(error: BaseException) -> None:
    """Counts and logs (the first) failure, as the instrumentation does its own."""
    try:
        from ._instrument import failed

        failed("llm_role", error)
    except Exception:  # noqa: BLE001
        pass
