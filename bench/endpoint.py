"""The bridge's HTTPS target: deals handed over to your own system, beside the same receiver taking bare POSTs.

    .venv/bin/python bench/endpoint.py [--deals 2000] [--rounds 3] [--database-url URL] [--json]

Separate processes: a sandbox portal (``b24bridge sandbox``, its request limits off), the receiver (``python -m
b24bridge.sandbox.receiver``: checks every Standard Webhooks signature, applies each ``webhook-id`` once, answers
with its record's id), and ``b24bridge serve`` on its defaults (only what it needs to connect, plus
``B24BRIDGE_ENDPOINT_ALLOW_NETWORKS=127.0.0.1``, without which it refuses a loopback endpoint). The route names the
portal an enterprise one: b24bridge's own limiter then allows a burst of 250 requests of 50 commands, so the
source's two commands a delivery (the read, the id written back) do not bind and what is measured is the hand-over.
(On the cloud plan the source's limits bound a 4,000-deal run at 73 deliveries/s; it measured 69.4.) Each round,
interleaved:

* **bridge**: ``--deals`` deals in the portal, each triggered through the route's hook; deliveries/s = deals / (first
  trigger sent -> every run succeeded). Each delivery reads the deal in the portal, maps it, checks dedupe and the
  id map, POSTs it signed, keeps the receiver's id and writes it back to the deal (``status_back``), all in
  b24bridge's run log. Also printed: a run's time queued and working (p50) and its calls' durations (p50).
* **bare**: a fresh receiver takes as many signed POSTs with the same kind of body straight from an httpx client,
  one at a time (the fastest for httpx here): the most the receiver and loopback HTTP allow on this machine.

Printed: each round's figures, the medians, and bridge / bare.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import datetime as dt
import json
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

from _common import ROOT, Bridge, Sandbox, drop_database, free_port, make_database, postgres_admin, stop_process

SECRET = "whsec_" + base64.b64encode(b"bench-endpoint-secret-0123456789").decode()
HOOK_SECRET = "bench-hook-secret-0123456789"
ROUTES = """\
portals:
  shop: {webhook: "%(webhook)s", plan: enterprise}
  erp: {endpoint: "%(endpoint)s", secret: "%(secret)s"}
routes:
  to-erp:
    source: shop
    target: erp
    triggers: {hook: {secret: %(hook)s}}
    deal:
      TITLE: "{{ deal.TITLE }}"
      AMOUNT: {from: OPPORTUNITY, type: money}
    status_back:
      fields: {UF_CRM_ERP_ID: "{{ target.ID }}"}
"""


class Receiver:
    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        cmd = [sys.executable, "-m", "b24bridge.sandbox.receiver", "--port", str(self.port), "--secret", SECRET]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT)
        for _ in range(400):
            try:
                self.summary()
                return
            except httpx.HTTPError:
                time.sleep(0.05)
        raise RuntimeError("the receiver did not start")

    def summary(self) -> dict[str, Any]:
        answer = httpx.get(f"{self.url}/_receiver/", timeout=10)
        answer.raise_for_status()
        result: dict[str, Any] = answer.json()
        return result

    def stop(self) -> None:
        stop_process(self.proc, 5)


def bare_round(deals: int) -> float:
    """Signed POSTs straight to a fresh receiver, one after another on one connection: POSTs/s (the fastest way:
    the receiver is one asyncio process, and httpx's pool costs more per request the more connections it holds;
    measured here: 1,315 POSTs/s with 1 in flight, 752 with 10, 163 with 100)."""
    from b24bridge.bridge.receivers import signature_headers

    receiver = Receiver()
    try:

        async def send_all() -> float:
            async with httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=1)) as http:
                gate = asyncio.Semaphore(1)

                async def one(n: int) -> None:
                    body = json.dumps({"type": "b24bridge.handover", "route": "to-erp",
                                       "source": {"entity": "deal", "id": n, "stage": "NEW"},
                                       "record": {"TITLE": f"Order {n}", "AMOUNT": "10.00"}}).encode()  # fmt: skip
                    headers = signature_headers((SECRET,), f"msg_bare_{n}", body, dt.datetime.now(dt.UTC))
                    async with gate:
                        (await http.post(f"{receiver.url}/hook", content=body, headers=headers)).raise_for_status()

                started = time.monotonic()
                await asyncio.gather(*(one(n) for n in range(deals)))
                return time.monotonic() - started

        took = asyncio.run(send_all())
        assert receiver.summary()["applied"] == deals
        return deals / took
    finally:
        receiver.stop()


def bridge_round(deals: int, admin_url: str, extra: dict[str, str] | None = None) -> dict[str, float]:
    sandbox, receiver = Sandbox(), Receiver()
    database = make_database(admin_url)
    bridge: Bridge | None = None
    try:
        sandbox.control("POST", "/_sandbox/config", {"limits_enabled": False})
        sandbox.rest("crm.deal.userfield.add", {"fields": {"FIELD_NAME": "ERP_ID", "USER_TYPE_ID": "string"}})
        data_dir = Path(tempfile.mkdtemp(prefix="b24bench-endpoint-"))
        routes = data_dir / "routes.yaml"
        webhook = sandbox.info["webhooks"][0]["url"]
        routes.write_text(ROUTES % {"webhook": webhook, "endpoint": f"{receiver.url}/b24/orders",
                                    "secret": SECRET, "hook": HOOK_SECRET})  # fmt: skip
        port = free_port()
        bridge = Bridge({"data_dir": str(data_dir), "port": str(port), "database_url": database,
                         "routes": str(routes), "endpoint_allow_networks": "127.0.0.1", "log_format": "json",
                         **(extra or {})})  # fmt: skip
        ids = _deals(sandbox, deals)
        hook = f"http://127.0.0.1:{port}/bridge/hooks/to-erp"
        with httpx.Client(timeout=30) as http, ThreadPoolExecutor(16) as pool:

            def trigger(deal: int) -> None:
                http.get(hook, params={"secret": HOOK_SECRET, "deal": str(deal)}).raise_for_status()

            started = time.monotonic()
            list(pool.map(trigger, ids))
            accepted = time.monotonic()
        done = _runs_finished(database, deals, timeout=600)
        summary = receiver.summary()
        assert summary["applied"] == deals and summary["refused_signatures"] == 0, summary
        last = sandbox.rest("crm.deal.get", {"id": ids[-1]})["result"]
        assert last.get("UF_CRM_ERP_ID"), "the receiver's id did not come back"
        return {"deliveries_per_s": deals / (done - started), "accepted_per_s": deals / (accepted - started),
                **_run_times(database)}  # fmt: skip
    finally:
        if bridge is not None:
            bridge.stop()
        receiver.stop()
        sandbox.stop()
        drop_database(admin_url, database)


def _runs_finished(database: str, count: int, timeout: float) -> float:
    """When ``count`` runs have succeeded (a run ends after the receiver's id is written back); dead ones raise."""
    import psycopg

    deadline = time.monotonic() + timeout
    with psycopg.connect(database, autocommit=True) as conn:
        while time.monotonic() < deadline:
            row = conn.execute(
                "SELECT count(*) FILTER (WHERE status = 'succeeded'), count(*) FILTER (WHERE status = 'dead') FROM runs"
            ).fetchone()
            assert row is not None
            if row[1]:
                raise RuntimeError(f"{row[1]} runs dead")
            if row[0] >= count:
                return time.monotonic()
            time.sleep(0.05)
    raise RuntimeError(f"fewer than {count} runs finished after {timeout:.0f} s")


def _run_times(database: str) -> dict[str, float]:
    """Medians from the run log: queued (stored -> started) and working (started -> finished), in ms."""
    import psycopg

    with psycopg.connect(database, autocommit=True) as conn:
        row = conn.execute(
            "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM started_at - created_at)),"
            " percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM finished_at - started_at)) FROM runs"
        ).fetchone()
        calls = conn.execute(
            "SELECT method, percentile_cont(0.5) WITHIN GROUP (ORDER BY duration) FROM run_calls GROUP BY method"
        ).fetchall()
    assert row is not None
    print("  calls, p50 ms:", ", ".join(f"{method} {float(p50) * 1000:,.0f}" for method, p50 in calls))
    return {"queued_p50_ms": float(row[0]) * 1000, "working_p50_ms": float(row[1]) * 1000}


def _deals(sandbox: Sandbox, count: int) -> list[int]:
    ids: list[int] = []
    for start in range(0, count, 50):
        commands = {f"d{n}": f"crm.deal.add?fields[TITLE]=Order+{n}&fields[OPPORTUNITY]={10 + n}"
                    for n in range(start, min(count, start + 50))}  # fmt: skip
        made = sandbox.rest("batch", {"halt": 1, "cmd": commands})["result"]["result"]
        ids += [int(made[k]) for k in commands]
    return ids


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--deals", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--database-url", default=None, help="an external database (default: an embedded one)")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE", help="a setting (experiments)")
    args = parser.parse_args()
    extra = dict(item.split("=", 1) for item in args.set)
    admin_url, release = postgres_admin(args.database_url)
    rounds: list[dict[str, float]] = []
    try:
        for index in range(args.rounds):
            bare = bare_round(args.deals)
            measured = bridge_round(args.deals, admin_url, extra)
            rounds.append({"bare_posts_per_s": bare, **measured})
            print(f"round {index + 1}: bare receiver {bare:,.0f} POSTs/s; bridge {measured['deliveries_per_s']:,.1f}"
                  f" deliveries/s (triggers accepted at {measured['accepted_per_s']:,.0f}/s; a run queued"
                  f" {measured['queued_p50_ms']:,.0f} ms, working {measured['working_p50_ms']:,.0f} ms, p50)",
                  flush=True)  # fmt: skip
    finally:
        release()
    bare = statistics.median(r["bare_posts_per_s"] for r in rounds)
    bridge = statistics.median(r["deliveries_per_s"] for r in rounds)
    if args.json:
        print(json.dumps({"rounds": rounds, "bare": bare, "bridge": bridge, "ratio": bridge / bare}))
    print(f"medians over {len(rounds)} rounds of {args.deals} deals: bridge {bridge:,.1f} deliveries/s,"
          f" bare receiver {bare:,.0f} POSTs/s, bridge / bare {bridge / bare:.3f}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    sys.exit(main())
