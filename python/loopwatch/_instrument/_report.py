"""The instrumentation's own protocol messages, on a connection of their own.

The client sends a loop's iterations; these rare lines say which framework was
instrumented (and at which version) and how many errors an instrumentation caught.
They go only to a supervisor that asked for instrumentation (``LOOPWATCH_INSTRUMENT``
in the environment, which ``loopwatch run --instrument`` sets), so an older one never
sees a type it does not know. A background thread writes them; the loop's thread only
appends to a list. Standard library only.
"""

from __future__ import annotations

import atexit
import json
import os
import socket
import threading
from typing import Any, Dict, List, Optional

#: The environment variable whose presence says the supervisor reads these messages.
ENV_INSTRUMENT = "LOOPWATCH_INSTRUMENT"
ENV_SOCKET = "LOOPWATCH_SOCKET"

#: Longest wait for unsent messages at interpreter exit, in seconds.
EXIT_TIMEOUT_SECONDS = 1.0


class _Writer:
    def __init__(self, path: str) -> None:
        self.path = path
        self.pid = os.getpid()
        self.lines: List[str] = []
        self.errors: Dict[str, int] = {}
        self.lock = threading.Lock()
        self.wake = threading.Event()
        self.idle = threading.Event()
        self.idle.set()
        self.thread: Optional[threading.Thread] = None

    def put(self, line: Optional[str], error_of: Optional[str] = None) -> None:
        with self.lock:
            if line is not None:
                self.lines.append(line)
            if error_of is not None:
                self.errors[error_of] = self.errors.get(error_of, 0) + 1
            self.idle.clear()
            if self.thread is None:
                self.thread = threading.Thread(target=self._run, name="loopwatch-instrument", daemon=True)
                self.thread.start()
        self.wake.set()

    def _take(self) -> str:
        with self.lock:
            lines, self.lines = self.lines, []
            errors, self.errors = self.errors, {}
        for framework, count in errors.items():
            lines.append(_encode({"type": "instrumentation_error", "framework": framework, "count": count}))
        return "".join(lines)

    def _run(self) -> None:
        while True:
            self.wake.wait()
            self.wake.clear()
            payload = self._take()
            if payload:
                try:
                    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                        sock.settimeout(2.0)
                        sock.connect(self.path)
                        sock.sendall(payload.encode("utf-8", "replace"))
                except OSError:
                    pass  # the supervisor is away: these are status lines, not data
            with self.lock:
                if not self.lines and not self.errors:
                    self.idle.set()

    def drain(self, timeout: float) -> bool:
        return self.idle.wait(timeout)


def _encode(fields: Dict[str, Any]) -> str:
    return json.dumps(dict({"v": 1}, **fields), separators=(",", ":")) + "\n"


_lock = threading.Lock()
_writer: Optional[_Writer] = None


def _get() -> Optional[_Writer]:
    global _writer
    if ENV_INSTRUMENT not in os.environ:
        return None
    path = os.environ.get(ENV_SOCKET)
    if not path:
        return None
    with _lock:
        if _writer is None or _writer.pid != os.getpid():
            _writer = _Writer(path)
        return _writer


def instrumented(framework: str, version: str, state: str, reason: Optional[str] = None) -> None:
    """Says that ``framework`` at ``version`` was instrumented (``state`` ``active``)
    or left alone (``skipped``, with the ``reason``)."""
    writer = _get()
    if writer is None:
        return
    fields: Dict[str, Any] = {"type": "instrumentation", "framework": framework, "version": version[:64], "state": state}
    if reason is not None:
        fields["reason"] = reason[:256]
    writer.put(_encode(fields))


def error(framework: str) -> None:
    """Counts one error caught inside ``framework``'s instrumentation."""
    writer = _get()
    if writer is not None:
        writer.put(None, framework)


def flush(timeout: float = EXIT_TIMEOUT_SECONDS) -> bool:
    """Waits up to ``timeout`` seconds until the messages are written."""
    writer = _writer
    if writer is None or writer.pid != os.getpid():
        return True
    return writer.drain(timeout)


def _reset_after_fork() -> None:
    global _lock, _writer
    _lock = threading.Lock()
    _writer = None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_after_fork)


@atexit.register
def _at_exit() -> None:
    try:
        flush()
    except Exception:  # noqa: BLE001
        pass
