"""How b24bridge is served: the uvicorn options ``serve`` and the test servers share, and a request-head guard.

uvicorn's fast parser (httptools) has no limit on the size of a request head (a 100 MB header grew the process by
200 MB) and uvicorn no deadline for a head to arrive: a connection that drips header bytes, or sends none, is held
for as long as the client likes (its keep-alive timer runs only between requests). h11 caps the size but not the
time, and measured with bench/ingest.py it accepted 7-20 % fewer robot calls and answered /healthz at half the rate
(docs/benchmarks.md). So b24bridge keeps httptools and adds both limits in :class:`HeadGuardedHttpTools`: a head
larger than ``MAX_HEAD_BYTES`` is answered ``431``, one that has not arrived ``head_timeout`` seconds after the
connection opened or after its first byte is answered ``408``; both close the connection. The body's own limits
are :mod:`b24bridge.bodylimit`'s.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import gc
import json
import signal
import socket
import threading
from collections.abc import Iterator
from typing import Any

import uvicorn
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

__all__ = [
    "KEEP_ALIVE_SECONDS",
    "MAX_HEAD_BYTES",
    "GracefulServer",
    "HeadGuardedHttpTools",
    "PortUnavailable",
    "listening_socket",
    "server_options",
    "settle_heap",
]

# nginx's default for a whole request head is 4 buffers of 8 KB; a Bitrix24 call's head is well under 2 KB.
MAX_HEAD_BYTES = 32 * 1024
# How long an idle kept-alive connection stays open. Longer than the clients' and proxies' own idle timeouts (httpx
# 5 s, nginx's upstream keepalive 60 s, cloud load balancers 60 s), so that it is always the client that closes an
# idle connection: a server closing one as the client sends on it (uvicorn's default, 5 s, equals httpx's) loses that
# request with "Server disconnected", and a portal never sends it again. The 30-minute soak lost 4 of 36,000 calls so.
KEEP_ALIVE_SECONDS = 75


class _HeadTooLarge(Exception):
    """Raised from a parser callback to stop parsing; httptools hands it to uvicorn as a parser error."""


class HeadGuardedHttpTools(HttpToolsProtocol):
    """uvicorn's httptools protocol with a cap on the request head's size and a deadline for it to arrive."""

    head_timeout = 10.0  # set per server by :func:`server_options` (a subclass per configuration)

    def __init__(self, config: Config, server_state: ServerState, app_state: dict[str, Any], **kwargs: Any) -> None:
        super().__init__(config, server_state, app_state, **kwargs)
        # Whether the bytes coming in belong to a request head: from a message's first byte to its last header.
        # (Between requests the connection is idle, which uvicorn's keep-alive timer guards.)
        self._reading_head = True
        self._head_bytes = 0  # bytes received while the head was incomplete (a head split across reads)
        self._head_parsed = 0  # the head's request line and headers parsed so far (a head within one read)
        self._head_too_large = False
        self._head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_head_timer()  # a connection that never sends a byte is a head that never arrives

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_head_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        # Counted after parsing: if the head is still incomplete, every byte of this chunk was part of it.
        if self._reading_head and not self.transport.is_closing():
            self._head_bytes += len(data)
            if self._head_bytes > MAX_HEAD_BYTES:
                self._refuse(431, f"request head larger than {MAX_HEAD_BYTES} bytes")

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._reading_head, self._head_bytes, self._head_parsed = True, 0, 0
        if self._head_timer is None:
            self._arm_head_timer()

    # A whole head that arrives in one read completes before data_received can count it: count it as it is parsed.
    def on_url(self, url: bytes) -> None:
        self._parsed(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._parsed(len(name) + len(value) + 4)  # ": " and CRLF
        super().on_header(name, value)

    def _parsed(self, size: int) -> None:
        self._head_parsed += size
        if self._head_parsed > MAX_HEAD_BYTES:
            self._head_too_large = True
            raise _HeadTooLarge

    def send_400_response(self, msg: str) -> None:
        # uvicorn answers a parser error, ours included, with a 400: ours deserves its own status.
        if self._head_too_large:
            self._refuse(431, f"request head larger than {MAX_HEAD_BYTES} bytes")
        else:
            super().send_400_response(msg)

    def on_headers_complete(self) -> None:
        self._reading_head = False
        self._disarm_head_timer()
        super().on_headers_complete()

    def _arm_head_timer(self) -> None:
        self._disarm_head_timer()
        self._head_timer = self.loop.call_later(self.head_timeout, self._head_too_slow)

    def _disarm_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_too_slow(self) -> None:
        self._head_timer = None
        if self._reading_head and not self.transport.is_closing():
            self._refuse(408, f"request head not received within {self.head_timeout:g} seconds")

    def _refuse(self, status: int, error: str) -> None:
        self._disarm_head_timer()
        if self.cycle is not None and not self.cycle.response_complete:
            self.transport.close()  # an answer is being written: a second one would corrupt it
            return
        body = json.dumps({"error": error}).encode()
        reason = {408: b"Request Timeout", 431: b"Request Header Fields Too Large"}[status]
        self.transport.write(
            b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\nconnection: close\r\n\r\n%s"
            % (status, reason, len(body), body)
        )
        self.transport.close()


def server_options(read_timeout: float) -> dict[str, Any]:
    """uvicorn.Config keyword arguments for the service (``serve`` and the test servers use the same);
    ``read_timeout`` (``B24BRIDGE_BODY_READ_TIMEOUT``) is the time a request head may take, as a body may."""
    protocol = type("HeadGuardedHttpTools", (HeadGuardedHttpTools,), {"head_timeout": read_timeout})
    # uvicorn's own access log is off: b24bridge.accesslog writes one line per request, with its correlation id.
    return {"http": protocol, "timeout_keep_alive": KEEP_ALIVE_SECONDS, "access_log": False}


# Allocations between young-generation collections (CPython's default is 700): a request allocates a few hundred.
GC_YOUNG_THRESHOLD = 20_000


def settle_heap() -> None:
    """Once started: what was built so far (modules, the app, its services) leaves the collector's care, and young
    collections run less often.

    Calls waiting for their commit live long enough to reach the oldest generation, and each full collection then
    walked every object of the process, the imported libraries' included: under bench/ingest.py 13 of them in 15 s
    took up to 103 ms each (a robot call's p99 was that pause), a second of CPU in all. Frozen, the startup objects
    are never walked again.
    """
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, middle, old)


class GracefulServer(uvicorn.Server):
    """uvicorn as ``serve`` runs it: SIGTERM (``docker stop``, systemd, a supervisor) shuts the server down as
    SIGINT does, and then ``serve()`` returns instead of raising the signal again. uvicorn re-raises it once its
    handlers are restored, and SIGTERM's default action ended the process there: its embedded PostgreSQL was left
    running (and its pool, spool and worker unreleased). SIGINT is still raised again (the ``KeyboardInterrupt``
    unwinds the same way)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        signals = (signal.SIGINT, signal.SIGTERM)
        original = {sig: signal.signal(sig, self.handle_exit) for sig in signals}
        try:
            yield
        finally:
            for sig, handler in original.items():
                signal.signal(sig, handler)
        if signal.SIGINT in self._captured_signals:
            signal.raise_signal(signal.SIGINT)


class PortUnavailable(Exception):
    """The address cannot be listened on; the message says which and why, for the person who chose it."""


def listening_socket(host: str, port: int) -> socket.socket:
    """The listening socket, taken before anything else starts: a port in use fails fast and touches nothing."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP spelt out: asyncio turns Nagle off (TCP_NODELAY) only on connections whose socket says so, and
    # accepted connections inherit it. With proto 0 every answer on a kept-alive connection waited ~40 ms for the
    # client's delayed ACK (/healthz: 1,430 req/s instead of thousands).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        reason = "it is already in use" if exc.errno == errno.EADDRINUSE else exc.strerror
        raise PortUnavailable(f"cannot listen on {host}:{port}: {reason}") from None
    sock.listen(2048)
    return sock
