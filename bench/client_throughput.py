"""Throughput of our Bitrix24 client under cloud limits, against the theoretical bound and against two peers.

    .venv/bin/python bench/client_throughput.py [--calls 5000] [--window 60] [--peer-concurrency 50]

1. **Full run.** ``--calls`` independent concurrent ``crm.contact.add`` calls through ``portal.call()`` (auto-batching,
   client-side limiter) to a fresh sandbox with cloud limits (burst 50, drain 2/s, 480 s of operating time per
   method per 600 s; the sandbox's default cost of a write is 0.05 s). Prints calls/s, the theoretical bound, their
   ratio, and the limit errors seen by the sandbox (``/_sandbox/limits``) and by our client's metrics.
2. **Fixed window.** The same stream of independent calls for ``--window`` seconds, each client against its own
   fresh sandbox with the same limits: our client (one process, ``--our-concurrency`` calls in flight), and the
   peers called once per item — fast_bitrix24 ``call("crm.contact.add", item)`` and b24pysdk
   ``client.crm.contact.add(fields)`` — each both from one sequential caller and from ``--peer-concurrency``
   concurrent callers sharing one client (tasks for fast_bitrix24's ``BitrixAsync``, threads for b24pysdk). Each
   peer runs in a subprocess of its own; the four peer windows run at the same time on four sandboxes (they are
   bound by the portal's limits, not by CPU). What counts is what the sandbox created
   (``GET /_sandbox/crm/counts``), snapshotted at the end of the window and again after the callers stopped.

Everything runs on 127.0.0.1; every sandbox is a uvicorn subprocess stopped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import math
import os
import platform
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from typing import Any

from _common import ServerProcess, free_port, wait_serving

WRITE_COST = 0.05  # the sandbox's default operating-time cost of a write (SandboxConfig.cost_of)
BURST, DRAIN = 50, 2.0  # cloud plan (REFERENCE 2.1)
OPERATING_LIMIT, OPERATING_WINDOW = 480.0, 600.0
MAX_BATCH = 50
DRAIN_TIMEOUT = 30.0  # how long callers still in flight at the end of a window may take to finish

PEERS = ("fb24-seq", "fb24-conc", "b24pysdk-seq", "b24pysdk-conc")


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
    process = subprocess.Popen([sys.executable, __file__, "--serve", "--port", str(port)])

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


# --- our client ------------------------------------------------------------------------------------------------


def our_metrics(key: str) -> dict[str, float]:
    from prometheus_client import REGISTRY

    totals: dict[str, float] = collections.defaultdict(float)
    for metric in REGISTRY.collect():
        if not metric.name.startswith("b24bridge_bitrix_"):
            continue
        for sample in metric.samples:
            if sample.labels.get("portal") != key:
                continue
            if sample.name == "b24bridge_bitrix_errors_total":
                totals[f"error {sample.labels['code']}"] += sample.value
            elif sample.name == "b24bridge_bitrix_retries_total":
                totals[f"retry {sample.labels['reason']}"] += sample.value
            elif sample.name == "b24bridge_bitrix_requests_total":
                totals["requests"] += sample.value
            elif sample.name in ("b24bridge_bitrix_batch_size_sum", "b24bridge_bitrix_batch_size_count"):
                totals[sample.name.rsplit("_", 1)[-1] + " batch"] += sample.value
            elif sample.name == "b24bridge_bitrix_limiter_wait_seconds_sum":
                totals["limiter wait s"] += sample.value
    return dict(totals)


LIMIT_CODES = ("QUERY_LIMIT_EXCEEDED", "OPERATION_TIME_LIMIT")


def limit_figures(metrics: dict[str, float]) -> tuple[int, int]:
    """(limit errors answered to whole requests, calls or requests sent again because of a limit)."""
    answered = sum(metrics.get(f"error {code}", 0) for code in LIMIT_CODES)
    retried = sum(metrics.get(f"retry {code}", 0) for code in LIMIT_CODES)
    return int(answered), int(retried)


def our_limits(margin: int | None) -> Any:
    from b24bridge.bitrix import Limits

    return Limits() if margin is None else Limits(bucket_margin=margin)


async def add_contact(portal: Any, tally: Tally, i: int) -> None:
    """One ``crm.contact.add`` through our client, counted in ``tally``."""
    tally.begin()
    try:
        value = await portal.call("crm.contact.add", {"fields": item(i)})
    except Exception as exc:
        tally.outcome(exc=exc)
    else:
        tally.outcome(value)


async def our_full_run(url: str, calls: int, margin: int | None) -> tuple[float, Tally, dict[str, float]]:
    from b24bridge.bitrix import BitrixClient, WebhookAuth

    tally = Tally()
    async with BitrixClient() as client:
        portal = client.portal(WebhookAuth(url), limits=our_limits(margin))
        began = time.perf_counter()
        await asyncio.gather(*(add_contact(portal, tally, i) for i in range(calls)))
        elapsed = time.perf_counter() - began
    return elapsed, tally, our_metrics(portal.key)


async def our_window(server: Server, window: float, concurrency: int, margin: int | None) -> dict[str, Any]:
    from b24bridge.bitrix import BitrixClient, WebhookAuth

    tally = Tally()
    numbers = iter(range(10**9))

    async def worker(deadline: float) -> None:
        while time.monotonic() < deadline:
            await add_contact(portal, tally, next(numbers))

    async with BitrixClient() as client:
        portal = client.portal(WebhookAuth(server.webhook), limits=our_limits(margin))
        began = time.monotonic()
        deadline = began + window
        workers = [asyncio.create_task(worker(deadline)) for _ in range(concurrency)]
        await asyncio.sleep(max(0.0, deadline - time.monotonic()))
        at_deadline = (await client.http.get(f"{server.base}/_sandbox/crm/counts")).json()["counts"].get("CONTACT", 0)
        _, pending = await asyncio.wait(workers, timeout=DRAIN_TIMEOUT)
        for task in pending:
            task.cancel()
        drained = time.monotonic() - deadline
    return {
        "tally": tally.as_dict(),
        "at_deadline": at_deadline,
        "drain_s": drained,
        "metrics": our_metrics(portal.key),
    }


# --- peers (each in a subprocess of its own) -------------------------------------------------------------------


def run_peer(name: str, base: str, url: str, window: float, concurrency: int) -> dict[str, Any]:
    """One peer for ``window`` seconds; returns what its callers were told and the count at the deadline."""
    tally = Tally()
    numbers = iter(range(10**9))
    lock = threading.Lock()

    def next_item() -> int:
        with lock:
            return next(numbers)

    began = time.monotonic()
    deadline = began + window
    snapshot: dict[str, Any] = {}

    def take_snapshot() -> None:
        time.sleep(max(0.0, deadline - time.monotonic()))
        snapshot["at_deadline"] = created(base)

    snapper = threading.Thread(target=take_snapshot, daemon=True)
    snapper.start()

    if name.startswith("fb24"):
        from fast_bitrix24 import Bitrix, BitrixAsync

        if name == "fb24-seq":
            bx = Bitrix(url, verbose=False)
            while time.monotonic() < deadline:
                i = next_item()
                tally.begin()
                try:
                    tally.outcome(bx.call("crm.contact.add", {"fields": item(i)}))
                except Exception as exc:
                    tally.outcome(exc=exc)
        else:

            async def one(bx: Any, i: int) -> None:
                tally.begin()
                try:
                    tally.outcome(await bx.call("crm.contact.add", {"fields": item(i)}))
                except Exception as exc:
                    tally.outcome(exc=exc)

            async def main() -> None:
                # As its users do: a wave of items gathered at once, each item called once; then the next wave.
                bx = BitrixAsync(url, verbose=False)
                while time.monotonic() < deadline:
                    wave = [one(bx, next_item()) for _ in range(concurrency)]
                    try:
                        await asyncio.wait_for(asyncio.gather(*wave), deadline + DRAIN_TIMEOUT - time.monotonic())
                    except TimeoutError:
                        return  # the stuck calls stay started-but-unfinished in the tally

            asyncio.run(main())
    else:
        from b24pysdk import BitrixWebhook
        from b24pysdk.api.callers.call_method import _MethodCaller

        # b24pysdk hard-codes https://{domain}/rest; point it at the loopback sandbox (bench only, as in tests/peers).
        _MethodCaller._base_url = property(lambda self: f"http://{self._domain}/rest")
        domain = base.removeprefix("http://")
        token = url.split("/rest/", 1)[1].strip("/")
        sdk = BitrixWebhook(domain=domain, webhook_token=token).get_client()

        def loop() -> None:
            while time.monotonic() < deadline:
                i = next_item()
                tally.begin()
                try:
                    tally.outcome(sdk.crm.contact.add(item(i)).result)
                except Exception as exc:
                    tally.outcome(exc=exc)

        threads = [
            threading.Thread(target=loop, daemon=True) for _ in range(1 if name.endswith("seq") else concurrency)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(max(0.1, deadline + DRAIN_TIMEOUT - time.monotonic()))
    snapper.join(max(0.1, deadline + 5 - time.monotonic()))
    return {
        "tally": tally.as_dict(),
        "at_deadline": snapshot.get("at_deadline"),
        "drain_s": time.monotonic() - deadline,
        "cpu_s": time.process_time(),
    }


def peer_main(args: argparse.Namespace) -> None:
    import logging

    logging.disable(logging.CRITICAL)  # fast_bitrix24 logs every retry; the counts say it all
    result = run_peer(args.peer, args.base, args.url, args.window, args.peer_concurrency)
    print(json.dumps(result), flush=True)
    os._exit(0)  # callers still stuck after the drain timeout are counted as unfinished, not waited for


# --- orchestration ---------------------------------------------------------------------------------------------


def pct(part: float, whole: float) -> str:
    return f"{100 * part / whole:.2f} %" if whole else "-"


def table(headers: list[str], rows: list[list[Any]]) -> str:
    cells = [[str(c) for c in row] for row in [headers, *rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    fmt = "  ".join(f"{{:<{w}}}" if i == 0 else f"{{:>{w}}}" for i, w in enumerate(widths))
    lines = [fmt.format(*cells[0]), "  ".join("-" * w for w in widths)]
    lines += [fmt.format(*row) for row in cells[1:]]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=5000)
    parser.add_argument("--window", type=float, default=60.0)
    parser.add_argument("--our-concurrency", type=int, default=250, help="our calls in flight in the window")
    parser.add_argument("--peer-concurrency", type=int, default=50, help="concurrent callers of a -conc peer")
    parser.add_argument("--bucket-margin", type=int, help="override Limits.bucket_margin (default: the client's 2)")
    parser.add_argument("--skip-window", action="store_true", help="only the full run")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--peer", choices=PEERS, help=argparse.SUPPRESS)
    parser.add_argument("--base", help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.port)
        return
    if args.peer:
        peer_main(args)
        return

    from b24bridge.observability import configure_logging

    configure_logging("WARNING", "json")  # production pipeline; retries and errors still show on stderr
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass

    began = time.monotonic()
    bound, lines = bound_lines(args.calls, args.window)
    print(f"Limits: cloud burst {BURST}, drain {DRAIN:g}/s, operating {OPERATING_LIMIT:g} s / {OPERATING_WINDOW:g} s,")
    machine = f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}"
    print(f"cost {WRITE_COST} s per crm.contact.add; {machine}")
    print("\n".join(lines))

    # 1. the full run
    server = start_sandbox()
    try:
        elapsed, tally, metrics = asyncio.run(our_full_run(server.webhook, args.calls, args.bucket_margin))
        time.sleep(0.2)
        made, (refused_503, refused_429) = created(server.base), server.refused()
    finally:
        server.stop()
    rate = args.calls / elapsed
    answered, retried = limit_figures(metrics)
    refused = refused_503 + refused_429
    requests = int(metrics.get("requests", 0))
    lost = args.calls - tally.finished
    mean_batch = metrics.get("sum batch", 0) / max(1.0, metrics.get("count batch", 0))
    margin = our_limits(args.bucket_margin).bucket_margin
    print(f"\n== Full run: {args.calls} concurrent crm.contact.add through b24bridge (bucket_margin {margin}) ==")
    print(
        table(
            ["figure", "value"],
            [
                ["elapsed", f"{elapsed:.2f} s"],
                ["achieved", f"{rate:.1f} calls/s"],
                ["bound", f"{bound:.1f} calls/s"],
                ["ratio to bound", f"{rate / bound:.3f}"],
                ["HTTP requests (mean batch)", f"{requests} ({mean_batch:.1f} calls)"],
                ["limit errors (sandbox: 503 + 429)", f"{refused_503} + {refused_429} = {pct(refused, args.calls)}"],
                ["limit errors (client errors_total)", f"{answered} = {pct(answered, args.calls)}"],
                ["limit retries (client retries_total)", f"{retried} = {pct(retried, args.calls)}"],
                ["returned id / raised / None / other", f"{tally.ok} / {tally.raised} / {tally.none} / {tally.other}"],
                ["unaccounted (no id, no error)", lost],
                ["sandbox created", f"{made} ({'=' if made == tally.ok else '!='} reported ok)"],
            ],
        )
    )
    if tally.errors:
        print(f"errors: {dict(tally.errors)}")
    worst = max(refused, answered, retried)
    met = rate >= 0.95 * bound and worst <= 0.005 * args.calls and lost == 0 and made == tally.ok
    print(f"target (>= 95 % of bound, <= 0.5 % limit errors, none lost, created == ok): {'MET' if met else 'MISSED'}")
    if args.skip_window:
        return

    # 2. the fixed window: ours alone, then the four peers side by side on four fresh sandboxes
    window = args.window
    print(f"\n== {window:g} s window, fresh sandboxes with the same limits ==")
    rows: list[dict[str, Any]] = []
    server = start_sandbox()
    try:
        ours = asyncio.run(our_window(server, window, args.our_concurrency, args.bucket_margin))
        time.sleep(0.2)
        ours |= {"created": created(server.base), "refused": server.refused()}
    finally:
        server.stop()
    rows.append({"client": f"b24bridge ({args.our_concurrency} in flight)", **ours})

    servers = {name: start_sandbox() for name in PEERS}
    try:
        procs = {
            name: subprocess.Popen(
                [
                    *(sys.executable, __file__, "--peer", name, "--base", srv.base, "--url", srv.webhook),
                    *("--window", str(window), "--peer-concurrency", str(args.peer_concurrency)),
                ],
                stdout=subprocess.PIPE,
            )
            for name, srv in servers.items()
        }
        for name, proc in procs.items():
            try:
                out, _ = proc.communicate(timeout=window + DRAIN_TIMEOUT + 30)
            except subprocess.TimeoutExpired:
                proc.kill()
                out, _ = proc.communicate()
            lines_out = out.decode().strip().splitlines()
            result = json.loads(lines_out[-1]) if lines_out else {"tally": {}, "at_deadline": None}
            srv = servers[name]
            time.sleep(0.2)
            result |= {"created": created(srv.base), "refused": srv.refused()}
            label = {
                "fb24-seq": "fast_bitrix24 call(), 1 caller",
                "fb24-conc": f"fast_bitrix24 call(), {args.peer_concurrency} tasks",
                "b24pysdk-seq": "b24pysdk add(), 1 caller",
                "b24pysdk-conc": f"b24pysdk add(), {args.peer_concurrency} threads",
            }[name]
            rows.append({"client": label, **result})
    finally:
        for srv in servers.values():
            srv.stop()

    ours_rate = rows[0]["at_deadline"] / window
    table_rows = []
    for row in rows:
        t = row["tally"]
        at = row["at_deadline"]
        rate_w = (at or 0) / window
        unfinished = t.get("started", 0) - sum(t.get(k, 0) for k in ("ok", "raised", "none", "other"))
        table_rows.append(
            [
                row["client"],
                at,
                f"{rate_w:.2f}",
                row["created"],
                t.get("ok"),
                t.get("raised"),
                t.get("none"),
                t.get("other"),
                unfinished,
                row["created"] - t.get("ok", 0),
                f"{row['refused'][0]} / {row['refused'][1]}",
                f"{ours_rate / rate_w:.1f}x" if rate_w else "-",
            ]
        )
    print(
        table(
            [
                "client",
                f"created@{window:g}s",
                "calls/s",
                "created",
                "ok",
                "raised",
                "None",
                "other",
                "unfinished",
                "created-ok",
                "503 / 429",
                "ours / it",
            ],
            table_rows,
        )
    )
    for row in rows:
        if row["tally"].get("errors"):
            print(f"{row['client']}: raised {row['tally']['errors']}")
    our_bound = min(calls_per_window(window), operating_calls()) / window
    print(f"b24bridge window: {ours_rate:.1f} calls/s = {ours_rate / our_bound:.3f} of the {window:g} s bound")
    print(f"(created@{window:g}s: sandbox count at the end of the window; created: after the callers stopped)")
    print(f"\ntotal bench time {time.monotonic() - began:.0f} s")


if __name__ == "__main__":
    main()
