"""A TCP proxy on loopback that a test can cut and restore: the network between b24bridge and its PostgreSQL (or
Redis) failing as a network does, connections reset and new ones refused, while the server itself runs on."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from urllib.parse import parse_qs, parse_qsl, urlencode, urlsplit, urlunsplit

from tests.livehttp import free_socket


def _bound(port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    return sock


class TcpProxy:
    """``TcpProxy(("127.0.0.1", 5432))``, or ``TcpProxy("/run/postgresql/.s.PGSQL.5432")`` for a Unix socket;
    ``TcpProxy([a, b])`` hands connections to the targets in turn (a load balancer of API processes)."""

    def __init__(self, target: tuple[str, int] | str | list[tuple[str, int]], port: int = 0) -> None:
        self.targets = target if isinstance(target, list) else [target]
        self._turn = 0
        self._listener = free_socket() if not port else _bound(port)
        self._listener.listen(128)
        self.port: int = self._listener.getsockname()[1]
        self._open = True
        self._lock = threading.Lock()
        self._pairs: list[tuple[socket.socket, socket.socket]] = []
        self._stopped = False
        threading.Thread(target=self._accept, daemon=True).start()

    @classmethod
    def to_postgres(cls, url: str) -> TcpProxy:
        """A proxy to the server of ``url`` (TCP, or the Unix socket its ``host=`` query names)."""
        parts = urlsplit(url)
        socket_dir = parse_qs(parts.query).get("host", [None])[0]
        if socket_dir:
            return cls(f"{socket_dir}/.s.PGSQL.{parts.port or 5432}")
        return cls((parts.hostname or "127.0.0.1", parts.port or 5432))

    def url_for(self, url: str) -> str:
        """``url`` (``postgresql://user@host:port/db``, perhaps with ``?host=/socket/dir``) through this proxy."""
        parts = urlsplit(url)
        user = f"{parts.username}@" if parts.username else ""
        query = urlencode([(k, v) for k, v in parse_qsl(parts.query) if k != "host"])
        return urlunsplit(parts._replace(netloc=f"{user}127.0.0.1:{self.port}", query=query))

    def cut(self) -> None:
        """Reset every connection and refuse new ones until :meth:`restore`."""
        with self._lock:
            self._open = False
            pairs, self._pairs = self._pairs, []
        for a, b in pairs:
            for sock in (a, b):
                with suppress(OSError):
                    # A reset, as a dropped network gives: linger 0, and shutdown() first, which wakes the pipe
                    # thread blocked in recv() (a plain close() would wait for it and send nothing).
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                    sock.shutdown(socket.SHUT_RDWR)
                with suppress(OSError):
                    sock.close()

    def restore(self) -> None:
        with self._lock:
            self._open = True

    @contextmanager
    def outage(self) -> Iterator[None]:
        self.cut()
        try:
            yield
        finally:
            self.restore()

    def stop(self) -> None:
        self._stopped = True
        self.cut()
        with suppress(OSError):
            self._listener.close()

    def _accept(self) -> None:
        while not self._stopped:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                accepting = self._open
            if not accepting:
                client.close()
                continue
            upstream = self._connect()
            if upstream is None:  # no target answers: the client sees its connection closed
                client.close()
                continue
            upstream.settimeout(None)
            with self._lock:
                self._pairs.append((client, upstream))
            threading.Thread(target=self._pipe, args=(client, upstream), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client), daemon=True).start()

    def _connect(self) -> socket.socket | None:
        """The next target in turn that takes the connection (as nginx tries the next upstream on an error)."""
        with self._lock:
            first = self._turn
            self._turn += 1
        for offset in range(len(self.targets)):
            target = self.targets[(first + offset) % len(self.targets)]
            try:
                if isinstance(target, str):
                    upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                    try:
                        upstream.connect(target)
                    except OSError:
                        upstream.close()
                        raise
                else:
                    upstream = socket.create_connection(target, timeout=5)
            except OSError:
                continue
            return upstream
        return None

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                with suppress(OSError):
                    sock.close()


def main() -> None:
    """``python -m tests.tcpproxy LISTEN_PORT HOST:PORT [HOST:PORT ...]``: a front of its own process (so a heavy
    test's load balancer does not share an interpreter lock with the test)."""
    import sys

    port, *targets = sys.argv[1:]
    proxy = TcpProxy([(host, int(p)) for host, p in (t.rsplit(":", 1) for t in targets)], port=int(port))
    print(f"listening {proxy.port}", flush=True)
    threading.Event().wait()


if __name__ == "__main__":
    main()
