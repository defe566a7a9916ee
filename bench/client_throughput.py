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
import os
import platform
import time
from typing import Any

from _client_world import (
    BURST,
    DRAIN,
    DRAIN_TIMEOUT,
    OPERATING_LIMIT,
    OPERATING_WINDOW,
    WRITE_COST,
    Server,
    Tally,
    bound_lines,
    calls_per_window,
    created,
    item,
    operating_calls,
    start_sandbox,
)
from _peers import peer_windows

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


def full_run(args: argparse.Namespace, bound: float) -> None:
    """1. ``--calls`` concurrent calls through our client to a fresh sandbox: the figures and the target."""
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


def fixed_window(args: argparse.Namespace) -> None:
    """2. ``--window`` seconds of our client alone, then the four peers side by side on four fresh sandboxes."""
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

    rows += peer_windows(window, args.peer_concurrency)

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=5000)
    parser.add_argument("--window", type=float, default=60.0)
    parser.add_argument("--our-concurrency", type=int, default=250, help="our calls in flight in the window")
    parser.add_argument("--peer-concurrency", type=int, default=50, help="concurrent callers of a -conc peer")
    parser.add_argument("--bucket-margin", type=int, help="override Limits.bucket_margin (default: the client's 2)")
    parser.add_argument("--skip-window", action="store_true", help="only the full run")
    args = parser.parse_args()

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

    full_run(args, bound)
    if args.skip_window:
        return
    fixed_window(args)
    print(f"\ntotal bench time {time.monotonic() - began:.0f} s")


if __name__ == "__main__":
    main()
