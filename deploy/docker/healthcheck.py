#!/usr/bin/env python3
"""The container's health check: exit 0 when the b24bridge process in this container answers, 1 otherwise.

One image runs both roles. ``b24bridge serve`` answers ``/healthz`` on ``B24BRIDGE_PORT``; ``b24bridge worker`` has no
HTTP API, only its ``/metrics`` on ``B24BRIDGE_METRICS_PORT``. So the check asks the first and, when nothing listens
there (connection refused: this is a worker), the second. A port that accepts but answers badly or too slowly is a
failure at once: that process is there and sick. Standard library only: it runs every few seconds in the image.
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request

TIMEOUT = 3.0


def _host() -> str:
    # The processes listen on B24BRIDGE_HOST; a wildcard address is reached over loopback from inside the container.
    host = os.environ.get("B24BRIDGE_HOST", "").strip() or "127.0.0.1"
    if host in ("0.0.0.0", "::"):
        host = "127.0.0.1" if host == "0.0.0.0" else "::1"
    return f"[{host}]" if ":" in host else host


def _probes() -> list[str]:
    host = _host()
    probes = [f"http://{host}:{os.environ.get('B24BRIDGE_PORT', '').strip() or '8000'}/healthz"]
    metrics_port = os.environ.get("B24BRIDGE_METRICS_PORT", "").strip() or "9100"
    if metrics_port != "0":
        probes.append(f"http://{host}:{metrics_port}/metrics")
    return probes


def check() -> tuple[bool, str]:
    refused = []
    for url in _probes():
        try:
            with urllib.request.urlopen(url, timeout=TIMEOUT) as response:
                return True, f"{url}: {response.status}"
        except urllib.error.HTTPError as exc:
            return False, f"{url}: HTTP {exc.code}"
        except urllib.error.URLError as exc:
            if isinstance(exc.reason, ConnectionRefusedError):
                refused.append(url)
                continue
            return False, f"{url}: {exc.reason}"
        except OSError as exc:  # a timeout while reading, a reset
            return False, f"{url}: {exc}"
    return False, "nothing listens: " + ", ".join(refused)


def main() -> int:
    healthy, detail = check()
    # Docker keeps the last lines printed by a check: `docker inspect --format '{{json .State.Health}}' CONTAINER`.
    print(("healthy: " if healthy else "unhealthy: ") + detail)
    return 0 if healthy else 1


if __name__ == "__main__":
    sys.exit(main())
