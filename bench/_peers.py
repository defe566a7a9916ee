"""The client benchmark's peers (bench/client_throughput.py): fast_bitrix24 and b24pysdk called once per item for a
fixed window, each peer in a subprocess of its own (this file) against a fresh sandbox of its own.

    python bench/_peers.py --peer NAME --base SANDBOX --url WEBHOOK --window S --peer-concurrency N

prints one JSON line: what the peer's callers were told, the sandbox's count at the deadline, the drain time and
the process's CPU time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from _client_world import DRAIN_TIMEOUT, Tally, created, item, start_sandbox

PEERS = ("fb24-seq", "fb24-conc", "b24pysdk-seq", "b24pysdk-conc")


# --- the peer windows, side by side ----------------------------------------------------------------------------


def label(name: str, concurrency: int) -> str:
    return {
        "fb24-seq": "fast_bitrix24 call(), 1 caller",
        "fb24-conc": f"fast_bitrix24 call(), {concurrency} tasks",
        "b24pysdk-seq": "b24pysdk add(), 1 caller",
        "b24pysdk-conc": f"b24pysdk add(), {concurrency} threads",
    }[name]


def peer_windows(window: float, concurrency: int) -> list[dict[str, Any]]:
    """The four peers for ``window`` seconds at the same time, each on a fresh sandbox; a row per peer: its label,
    what its callers were told, the count at the deadline and after the callers stopped, the sandbox's refusals."""
    rows: list[dict[str, Any]] = []
    servers = {name: start_sandbox() for name in PEERS}
    try:
        procs = {
            name: subprocess.Popen(
                [
                    *(sys.executable, __file__, "--peer", name, "--base", srv.base, "--url", srv.webhook),
                    *("--window", str(window), "--peer-concurrency", str(concurrency)),
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
            rows.append({"client": label(name, concurrency), **result})
    finally:
        for srv in servers.values():
            srv.stop()
    return rows


# --- one peer (in its subprocess) ------------------------------------------------------------------------------


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

    callers = fast_bitrix24 if name.startswith("fb24") else b24pysdk
    callers(name, base, url, deadline, concurrency, tally, next_item)
    snapper.join(max(0.1, deadline + 5 - time.monotonic()))
    return {
        "tally": tally.as_dict(),
        "at_deadline": snapshot.get("at_deadline"),
        "drain_s": time.monotonic() - deadline,
        "cpu_s": time.process_time(),
    }


def fast_bitrix24(
    name: str, base: str, url: str, deadline: float, concurrency: int, tally: Tally, next_item: Callable[[], int]
) -> None:
    """fast_bitrix24 ``call("crm.contact.add", item)`` until ``deadline``: one sequential caller (``Bitrix``) or
    waves of ``concurrency`` tasks sharing one ``BitrixAsync``."""
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


def b24pysdk(
    name: str, base: str, url: str, deadline: float, concurrency: int, tally: Tally, next_item: Callable[[], int]
) -> None:
    """b24pysdk ``client.crm.contact.add(fields)`` until ``deadline``: one caller or ``concurrency`` threads sharing
    one client."""
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

    threads = [threading.Thread(target=loop, daemon=True) for _ in range(1 if name.endswith("seq") else concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(max(0.1, deadline + DRAIN_TIMEOUT - time.monotonic()))


def peer_main() -> None:
    import logging

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--peer", choices=PEERS, required=True)
    parser.add_argument("--base", required=True, help="the sandbox's base URL")
    parser.add_argument("--url", required=True, help="the sandbox's webhook")
    parser.add_argument("--window", type=float, required=True)
    parser.add_argument("--peer-concurrency", type=int, required=True, help="concurrent callers of a -conc peer")
    args = parser.parse_args()
    logging.disable(logging.CRITICAL)  # fast_bitrix24 logs every retry; the counts say it all
    result = run_peer(args.peer, args.base, args.url, args.window, args.peer_concurrency)
    print(json.dumps(result), flush=True)
    os._exit(0)  # callers still stuck after the drain timeout are counted as unfinished, not waited for


if __name__ == "__main__":
    peer_main()
