"""One process's connection: a bounded buffer and the thread that writes it.

The loop's thread appends an event tuple and returns; the writer thread gathers
events for ``COALESCE_SECONDS``, encodes them and sends them in one write, and
reconnects (with backoff) when the socket is away. When the buffer reaches
``MAX_BUFFERED`` events, the loop's thread merges the complete iterations and the
metric updates in it (:mod:`loopwatch._merging`), so a loop faster than the socket
loses none of them. Events that cannot be merged (LLM calls, the events of an
iteration that has not ended) are kept until the buffer holds about twice that bound,
then dropped. Dropped events, and those a broken connection failed to write, are
counted and reported in a ``dropped`` line once the socket takes writes again.
"""

from __future__ import annotations

import collections
import os
import socket
import sys
import threading
import time
from typing import Deque, List, Optional

from ._encoding import Event, encode
from ._merging import merge

# The tunables below are the defaults the package re-exports; the writer reads them
# through the package when it uses them, so that assigning ``loopwatch.MAX_BUFFERED``
# or ``loopwatch.COALESCE_SECONDS`` changes the writer (the package is in
# ``sys.modules`` before this module is imported).
_settings = sys.modules[__name__.rpartition(".")[0]]

#: Events buffered before the complete iterations among them are merged into one
#: (``iterations``: exact counts, time and outcomes) and each metric's updates into
#: one, so that a loop faster than the socket loses nothing; the buffer is merged again
#: each time a quarter of this many events have come in since. Events that cannot be
#: merged (LLM calls, an unfinished iteration's) are dropped, and counted, once a merge
#: is due and the buffer holds twice this many.
MAX_BUFFERED = 10_000
#: How long the writer gathers events after the first before it sends them: one write
#: (and one wake-up of the supervisor) for many iterations of a fast loop. Far below
#: any stall limit; ``flush()`` and ``done()`` send at once.
COALESCE_SECONDS = 0.05
#: Most events encoded and sent in one write.
BATCH_EVENTS = 512


class Client:
    """One process's connection: a bounded buffer and the thread that writes it."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.pid = os.getpid()
        self.buffer: Deque[Event] = collections.deque()
        # The buffer's length at which the next merge happens (at least MAX_BUFFERED).
        self.merge_at = 0
        # Held by the writer while it takes events, and by a merge while it rewrites
        # the buffer's older part; appending never takes it.
        self.lock = threading.Lock()
        # Each counter has one writer, so no update is lost between threads: events the
        # loop's thread turned away, events the writer lost, and the total reported.
        self.dropped = 0
        self.lost = 0
        self.reported = 0
        self.wake = threading.Event()
        self.urgent = False
        # Whether an evaluation's end is sent at once rather than gathered for
        # COALESCE_SECONDS: set in a pool worker, which its pool may end (or kill) as
        # soon as the result is back, before a gathered write would go out.
        self.prompt = False
        self.sending = False
        self.closed = False
        self.thread: Optional[threading.Thread] = None

    def put(self, event: Event) -> None:
        """Buffers an event (on the loop's thread): never blocks, never raises."""
        buffered = len(self.buffer)
        # Read as the package holds it now (one module attribute: the loop's thread
        # pays next to nothing for it).
        limit: int = _settings.MAX_BUFFERED
        if buffered >= limit and buffered >= self.merge_at:
            if buffered >= 2 * limit:
                # Nothing left to merge (LLM calls, one iteration of endless
                # events): drop, and count.
                self.dropped += 1
                return
            self._merge()
            buffered = len(self.buffer)
            # The next merge once a quarter of the limit has come in: merging stays
            # amortised to a constant per event.
            self.merge_at = max(limit, buffered + limit // 4)
        self.buffer.append(event)
        if self.thread is None:
            self._start()
        if buffered == 0:
            # The writer sleeps only on an empty buffer: wake it for the first event.
            self.wake.set()

    def put_soon(self, event: Event) -> None:
        """Buffers an event that is sent at once when ``prompt`` is set (on the loop's
        thread): never blocks, never raises."""
        if self.prompt:
            # Before the event goes in, so that the writer it wakes does not wait.
            self.urgent = True
            self.put(event)
            self.wake.set()
        else:
            self.put(event)

    def _merge(self) -> None:
        """Folds the complete iterations buffered into one event each run (on the
        loop's thread, once per ``MAX_BUFFERED`` events at most)."""
        with self.lock:
            count = len(self.buffer)
            popleft = self.buffer.popleft
            events = [popleft() for _ in range(count)]
            self.buffer.extendleft(reversed(merge(events)))

    def _start(self) -> None:
        thread = threading.Thread(target=self._run, name="loopwatch-writer", daemon=True)
        self.thread = thread
        thread.start()

    def _connect(self) -> Optional[socket.socket]:
        try:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(2.0)
            sock.connect(self.path)
            return sock
        except OSError:
            return None

    def _run(self) -> None:
        sock: Optional[socket.socket] = None
        backoff = 0.05
        while not self.closed:
            self.wake.wait(0.5)
            self.wake.clear()
            if self.buffer and not self.urgent:
                time.sleep(_settings.COALESCE_SECONDS)
            while self.buffer and not self.closed:
                if sock is None:
                    sock = self._connect()
                    if sock is None:
                        # The socket is away: keep buffering (bounded) and retry.
                        time.sleep(backoff)
                        backoff = min(backoff * 2, 1.0)
                        continue
                    backoff = 0.05
                self.sending = True
                batch: List[Event] = []
                with self.lock:
                    while self.buffer and len(batch) < BATCH_EVENTS:
                        batch.append(self.buffer.popleft())
                unreported = self.dropped + self.lost - self.reported
                if unreported > 0:
                    self.reported += unreported
                    batch.append(("dropped", unreported))
                lines = []
                for event in batch:
                    try:
                        lines.append(encode(event))
                    except (TypeError, ValueError, OverflowError):
                        self.lost += 1  # a value that cannot be written at all
                try:
                    sock.sendall("".join(lines).encode("utf-8", "replace"))
                except OSError:
                    try:
                        sock.close()
                    except OSError:
                        pass
                    sock = None
                    for event in batch:
                        if event[0] == "dropped":
                            self.reported -= event[1]
                        else:
                            self.lost += 1
                finally:
                    self.sending = False
            if not self.buffer:
                self.urgent = False
        if sock is not None:
            try:
                sock.close()
            except OSError:
                pass

    def drain(self, timeout: float) -> bool:
        """Waits up to ``timeout`` seconds until everything buffered is written."""
        deadline = time.monotonic() + timeout
        self.urgent = True
        self.wake.set()
        while (self.buffer or self.sending) and time.monotonic() < deadline:
            time.sleep(0.002)
        return not (self.buffer or self.sending)
