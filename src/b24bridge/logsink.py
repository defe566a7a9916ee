"""Where log lines go: off the event loop's thread at once, written by a thread of their own.

A write to stderr blocks when whatever reads it (a pipe to a log shipper, a terminal, a full disk's page cache) is
slow, and a blocked write in the event loop stops every request. So a line is appended to a bounded queue (a
``deque.append``, which takes no lock the loop could wait on) and a writer thread writes what has gathered, many
lines per ``write``. When the writer cannot keep up and the queue is full, new lines are dropped and counted
(``b24bridge_log_lines_dropped_total``) rather than held in memory without bound or blocking the loop.

Lines still queued when the process ends are written at exit (``atexit``); a process killed with SIGKILL loses at
most the last few milliseconds of lines.
"""

from __future__ import annotations

import atexit
import contextlib
import sys
import threading
from collections import deque
from collections.abc import Callable
from typing import TextIO

from prometheus_client import Counter

__all__ = ["DROPPED", "LineSink"]

DROPPED = Counter("b24bridge_log_lines_dropped", "Log lines dropped because the log's reader did not keep up")
MAX_QUEUED = 100_000


class LineSink:
    def __init__(self, stream: Callable[[], TextIO] = lambda: sys.stderr, max_queued: int = MAX_QUEUED) -> None:
        # The stream is looked up at every write, so output follows whoever replaced sys.stderr (pytest's capture).
        self._stream = stream
        self._max_queued = max_queued
        self._lines: deque[str] = deque()
        self._wake = threading.Event()
        self._idle = threading.Event()
        self._idle.set()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="b24bridge-log-writer", daemon=True)
        self._thread.start()
        atexit.register(self.close)

    def write(self, line: str) -> None:
        """Queue one line (ending in a newline); never blocks."""
        if len(self._lines) >= self._max_queued:
            DROPPED.inc()
            return
        self._lines.append(line)
        if not self._wake.is_set():
            self._idle.clear()
            self._wake.set()

    def flush(self, timeout: float = 2.0) -> None:
        """Wait until every line queued so far has been written (tests, shutdown)."""
        if self._lines:
            self._idle.clear()
            self._wake.set()
        self._idle.wait(timeout)

    def close(self) -> None:
        if self._closed:
            return
        self.flush()
        self._closed = True
        self._wake.set()

    def _run(self) -> None:
        while not self._closed:
            self._wake.wait()
            self._wake.clear()
            self._write_queued()
            if not self._lines:
                self._idle.set()

    def _write_queued(self) -> None:
        lines = self._lines
        while lines:
            batch = []
            with contextlib.suppress(IndexError):  # popleft races only with itself: one writer
                for _ in range(min(len(lines), 4096)):
                    batch.append(lines.popleft())
            try:
                stream = self._stream()
                stream.write("".join(batch))
                stream.flush()
            except (OSError, ValueError):  # a closed or broken stream: nothing better to do with the lines
                DROPPED.inc(len(batch))
