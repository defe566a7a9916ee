"""The client benchmark's world: a sandbox with cloud limits (a subprocess running this file), the theoretical
bound those limits set, and a tally of what callers were told (bench/client_throughput.py).

    python bench/_client_world.py --port PORT     # the sandbox alone, as start_sandbox() runs it
"""

from __future__ import annotations

import argparse
import collections
import json
import math
import subprocess
import sys
import threading
import urllib.request
from dataclasses import dataclass, field
from typing import Any

from _common import ServerProcess, free_port, wait_serving

WRITE_COST = 0.05  # the sandbox's default operating-time cost of a write (SandboxConfig.cost_of)
BURST, DRAIN = 50, 2.0  # cloud plan (REFERENCE 2.1)
OPERATING_LIMIT, OPERATING_WINDOW = 480.0, 600.0
MAX_BATCH = 50
DRAIN_TIMEOUT = 30.0  # how long callers still in flight at the end of a window may take to finish


# --- the sandbox (subprocess) ----------------------------------------------------------------------------------


def serve(port: int) -> None:
    import uvicorn

    from b24bridge.sandbox.app import create_app
    from b24bridge.sandbox.config import SandboxConfig
    from b24bridge.sandbox.runtime import Sandbox

    portal = Sandbox(SandboxConfig(port=port, plan="cloud", limits_enabled=True))
    portal.bootstrap()
    uvicorn.run(create_app(sandbox=portal), host="127.0.0.1", port=port, log_level="warning", access_log=False)


def control(base: str, path: str) -> Any:
    with urllib.request.urlopen(f"{base}{path}", timeout=10) as response:
        return json.loads(response.read())


def created(base: str) -> int:
    return int(control(base, "/_sandbox/crm/counts")["counts"].get("CONTACT", 0))


class Server(ServerProcess):
    @property
    def webhook(self) -> str:
        return str(control(self.base, "/_sandbox/")["webhooks"][0]["url"])

    def check_limits(self) -> None:
        config = control(self.base, "/_sandbox/")["config"]
        expected = {"limits_enabled": True, "burst": BURST, "drain_per_second": DRAIN}
        expected |= {"operating_limit": OPERATING_LIMIT, "operating_window": OPERATING_WINDOW}
        actual = {key: config[key] for key in expected}
        if actual != expected or config["method_costs"]:
            raise RuntimeError(f"sandbox limits are not the cloud defaults: {config}")

    def refused(self) -> tuple[int, int]:
        limits = control(self.base, "/_sandbox/limits")
        return int(limits["refused_requests"]), int(limits["refused_operating"])


def start_sandbox() -> Server:
    port = free_port()
    process = subprocess.Popen([sys.executable, __file__, "--port", str(port)])

    def ready() -> Server:
        server = Server(port, process)
        server.check_limits()
        return server

    return wait_serving(process, port, "sandbox", ready)


# --- outcomes --------------------------------------------------------------------------------------------------


@dataclass
class Tally:
    """What callers were told: an id, an exception, ``None``, or something else."""

    started: int = 0
    ok: int = 0
    raised: int = 0
    none: int = 0
    other: int = 0
    errors: collections.Counter[str] = field(default_factory=collections.Counter)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def begin(self) -> None:
        with self.lock:
            self.started += 1

    def outcome(self, value: Any = None, exc: BaseException | None = None) -> None:
        with self.lock:
            if exc is not None:
                self.raised += 1
                code = getattr(exc, "code", "") or ""
                self.errors[f"{type(exc).__name__}{f' {code}' if code else ''}"] += 1
            elif value is None:
                self.none += 1
            elif isinstance(value, int | str) and str(value).isdigit() and int(value) > 0:
                self.ok += 1
            else:
                self.other += 1

    @property
    def finished(self) -> int:
        return self.ok + self.raised + self.none + self.other

    def as_dict(self) -> dict[str, Any]:
        data = {k: getattr(self, k) for k in ("started", "ok", "raised", "none", "other")}
        return {**data, "errors": dict(self.errors.most_common(4))}


def item(i: int) -> dict[str, Any]:
    return {"NAME": f"Bench{i}", "LAST_NAME": "Throughput"}


# --- the theoretical bound -------------------------------------------------------------------------------------


def request_time(requests: int) -> float:
    """Seconds until the last of ``requests`` is admitted: a burst of BURST at t=0, then one per 1/DRAIN s."""
    return max(0.0, (requests - BURST) / DRAIN)


def calls_per_window(seconds: float) -> int:
    """Calls the request bucket admits within ``seconds`` from an empty bucket (at most 50 per request)."""
    return (BURST + math.floor(seconds * DRAIN)) * MAX_BATCH


def operating_calls() -> int:
    """Calls of one method per operating window: the portal checks ``used > limit`` *before* a call."""
    return math.floor(OPERATING_LIMIT / WRITE_COST) + 1


def operating_time(calls: int) -> float:
    """Seconds before the last of ``calls`` may start under the operating budget (whole windows must expire)."""
    return math.floor((calls - 1) / operating_calls()) * OPERATING_WINDOW


def bound_lines(calls: int, window: float) -> tuple[float, list[str]]:
    requests = math.ceil(calls / MAX_BATCH)
    t_req, t_op = request_time(requests), operating_time(calls)
    t_bound = max(t_req, t_op)
    lines = [
        f"request bucket : T_req(N) = (ceil(N/{MAX_BATCH}) - burst) / drain = ({requests} - {BURST}) / {DRAIN:g}"
        f" = {t_req:.1f} s  ->  {calls / t_req if t_req else math.inf:.1f} calls/s",
        f"operating time : {OPERATING_LIMIT:g} s / {WRITE_COST} s per call = {operating_calls()} calls per"
        f" {OPERATING_WINDOW:g} s window (sustained {OPERATING_LIMIT / WRITE_COST / OPERATING_WINDOW:g} calls/s);"
        f" T_op(N) = floor((N-1)/{operating_calls()}) x {OPERATING_WINDOW:g} s = {t_op:.0f} s",
        f"bound          : max(T_req, T_op) = {t_bound:.1f} s for N = {calls}  ->"
        f" {calls / t_bound if t_bound else math.inf:.1f} calls/s"
        f" ({'request bucket' if t_req >= t_op else 'operating time'} binds)",
        f"{window:g} s window  : min((burst + floor(drain x T)) x {MAX_BATCH}, {operating_calls()}) ="
        f" {min(calls_per_window(window), operating_calls())} calls ->"
        f" {min(calls_per_window(window), operating_calls()) / window:.1f} calls/s;"
        f" one call per request: burst + drain x T = {BURST + math.floor(window * DRAIN)} calls ->"
        f" {(BURST + math.floor(window * DRAIN)) / window:.2f} calls/s",
    ]
    return (calls / t_bound if t_bound else math.inf), lines


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, required=True)
    serve(parser.parse_args().port)
