"""The bridge end to end on b24bridge's default settings: deals from portal 1 to portal 2, cloud limits on both.

    .venv/bin/python bench/bridge_e2e.py [--deals 1000] [--fire-seconds 1] [--seconds 60] [--rates 1,10]
                                         [--only throughput|latency] [--contacts 40] [--companies 10]
                                         [--timeout 300] [--database-url URL] [--log-level ERROR] [--keep]
                                         [--json] [--dump FILE] [--set NAME=VALUE ...]

Everything runs as a separate process: ``b24bridge sandbox --portals 2`` (two portals in one server sharing one
OAuth server, cloud plan, limits on: burst 50 requests, drain 2 requests/s, per portal) and ``b24bridge serve`` (API
and in-process worker) on its DEFAULT settings: it gets only what it needs to connect (database URL, data
directory, port, public URL, application credentials, OAuth server, encryption key, the route file, log level and
format); inherited ``B24BRIDGE_*`` variables are dropped and it runs where no ``.env`` is. ``--set`` changes a
setting for an experiment; recorded figures use none.

The route (as in tests/bridge_flows/volume.py, with cloud limits on both sides): source = portal 1, where
b24bridge is installed as an application and its bridge robot sits on the stage PREPARATION; target = portal 2
through its incoming webhook. The deal's contact is matched by phone, its company by tax number (requisite
RQ_INN), both shared between deals (``--contacts``, ``--companies``); two product rows per deal; the responsible
user matched by e-mail. The robot trigger rather than the outbound-webhook rule: it is what an installed partner
uses, it makes the source an OAuth portal keyed by member_id, and it adds the answer to the workflow
(``bizproc.event.send``: one more command and one more round trip on the source per deal), so it is the heavier
and richer case; the webhook rule runs the same delivery minus the answer.

Each workload gets a fresh world (``POST /_sandbox/reset`` on both portals) and a fresh database (dropped after):
b24bridge installed, the world built with limits off, one warm-up deal (not counted), b24bridge's own copy of the
buckets drained, limits on, then the sandbox moves the deals into the stage itself (``POST /_sandbox/deals/move``):

* throughput: ``--deals`` deals over ``--fire-seconds``. Deals/s = deals / (first move -> last workflow answered):
  with the robot a hand-over is done when its workflow has the target deal's id, and every command counted was
  sent inside that window (first move -> last target deal created is printed too). Commands and HTTP requests per
  portal come from b24bridge's /metrics (``b24bridge_bitrix_batch_size_count``/``_sum`` by ``portal``: the source
  is labelled by its member_id, the target by its domain). The bound, per portal: over a window of T s the bucket
  admits burst + drain * T requests of at most 50 commands, so it allows (burst + drain * T) * 50 / c deals, c
  being the commands per deal measured on that portal; bound = that / T, T the measured window; the tighter portal
  binds; ratio = measured / bound. Also shown: the least time the limits allow for these deals (T_min, requests
  ceil(N c / 50) beyond the burst at drain/s) and the steady-state bound drain * 50 / c.
* latency: ``rate`` deals/s for ``--seconds`` (move i at i/rate s). Per deal: stage change -> target deal created.
  Both ends are read from the sandbox, one process, one clock (``time.time()``, microseconds): the stage change is
  the workflow's ``started_at`` (the robot's workflow starts inside the move); the creation is the target deal's
  ``DATE_CREATE`` as the portal stores it (REST shows it to the second only, so it is read from the target's saved
  world, ``POST /_sandbox/state/save``). A deal not delivered counts as infinitely late. Also shown: stage change
  -> workflow answered, requests per deal, and where the time goes (steps below).

Steps of a deal (p50 / p99 each), joining the sandbox's records with b24bridge's run log (same machine clock):
dispatch = move -> robot call sent; accept = -> run stored (runs.created_at); queue = -> job started
(runs.started_at); read1 = -> crm.deal.get done (run_calls.at); read2 = -> contact/company read done; write = ->
target deal created; finish = -> run finished (runs.finished_at); answer = -> workflow answered. ``--dump FILE``
writes these times for every deal; ``--log-level INFO --keep`` keeps b24bridge's request log (one JSON line per HTTP
request to a portal: portal, method, commands, duration) for a closer look.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from _common import ROOT, Bridge, drop_database, free_port, make_database
from robot_latency import CpuWindow, quantile

BURST, DRAIN, MAX_BATCH = 50, 2.0, 50  # cloud plan (REFERENCE 2.1), per portal
STAGE = "PREPARATION"
ROUTE = "partner-to-acme"
ROBOT_CODE = "b24bridge_bridge_deal"
QUANTILES = (0.5, 0.9, 0.99)
THROUGHPUT_TARGET = 0.90  # measured / bound
# deals/s -> {quantile: seconds}, stage change -> target deal (issue 10).
LATENCY_TARGETS: dict[float, dict[float, float]] = {1.0: {0.5: 0.150}, 10.0: {0.5: 1.2, 0.99: 2.5}}
STEPS = ("dispatch", "accept", "queue", "read1", "read2", "write", "finish", "answer")

ROUTES = """\
portals:
  partner:
    app: "{source_domain}"
  acme:
    webhook: "{target_webhook}"
routes:
  {route}:
    source: partner
    target: acme
    triggers:
      robot: true
    deal:
      TITLE: "{{{{ deal.TITLE }}}}"
      STAGE_ID: {{from: STAGE_ID, map: {{PREPARATION: NEW}}}}
      ASSIGNED_BY_ID: {{user: ASSIGNED_BY_ID, default: 1}}
      COMMENTS: "partner deal {{{{ deal.ID }}}}"
    contact:
      match: [phone, email]
      fields:
        NAME: {{from: NAME}}
        LAST_NAME: {{from: LAST_NAME}}
        PHONE: {{from: PHONE}}
        EMAIL: {{from: EMAIL}}
    company:
      match: [tax_number]
      fields:
        TITLE: {{from: TITLE}}
        tax_number: {{from: tax_number}}
    products: true
"""
USERS = ("anna@partner.test", "boris@partner.test", "clara@partner.test")


# --- the two portals -------------------------------------------------------------------------------------------


class PortalHandle:
    """One portal of the cloud: its control API and its incoming webhook (used with limits off only)."""

    def __init__(self, url: str) -> None:
        import httpx

        self.url = url
        self.http = httpx.Client(base_url=url, timeout=120)
        self.info: dict[str, Any] = {}

    def control(self, method: str, path: str, body: Any = None) -> Any:
        answer = self.http.request(method, path, json=body)
        if answer.status_code >= 400:
            raise RuntimeError(f"{method} {path}: {answer.status_code} {answer.text[:500]}")
        return answer.json()

    def batch(self, commands: dict[str, str]) -> dict[str, Any]:
        answer = self.http.post(f"{self.info['webhooks'][0]['url']}batch", json={"halt": 1, "cmd": commands})
        answer.raise_for_status()
        body: dict[str, Any] = answer.json()["result"]
        if body["result_error"]:
            raise RuntimeError(f"setup batch failed: {body['result_error']}")
        return body["result"]  # type: ignore[no-any-return]

    @property
    def domain(self) -> str:
        return str(self.info["domain"])

    @property
    def member_id(self) -> str:
        return str(self.info["member_id"])


class Cloud:
    """``b24bridge sandbox --portals 2`` (cloud plan, limits on) as its own process; ``--state`` lets the bench
    read the target's records as stored (``DATE_CREATE`` to the microsecond)."""

    def __init__(self, work: Path) -> None:
        port = _two_free_ports()
        self.state = work / "world.json"
        self.log = work / "sandbox.log"
        cmd = [sys.executable, "-m", "b24bridge.cli", "sandbox", "--port", str(port), "--portals", "2",
               "--plan", "cloud", "--state", str(self.state)]  # fmt: skip
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
        self.portals = [PortalHandle(f"http://127.0.0.1:{port + i}") for i in range(2)]
        for portal in self.portals:
            for _ in range(400):
                try:
                    portal.info = portal.control("GET", "/_sandbox/")
                    break
                except Exception:
                    if self.proc.poll() is not None:
                        raise RuntimeError(f"sandbox exited: {self.log.read_text()[-2000:]}") from None
                    time.sleep(0.05)
            else:
                raise RuntimeError("sandbox did not start")

    @property
    def source(self) -> PortalHandle:
        return self.portals[0]

    @property
    def target(self) -> PortalHandle:
        return self.portals[1]

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def _two_free_ports() -> int:
    for _ in range(100):
        port = free_port()
        try:
            with socket.socket() as sock:
                sock.bind(("127.0.0.1", port + 1))
            return port
        except OSError:
            continue
    raise RuntimeError("no two consecutive free ports")


# --- setup -----------------------------------------------------------------------------------------------------


@dataclass
class Setup:
    bridge: Bridge
    public: str
    database_url: str
    data_dir: Path
    deal_ids: list[int]
    warm_up_s: float = 0.0
    notes: dict[str, Any] = field(default_factory=dict)


def _ids(result: dict[str, Any], prefix: str) -> list[int]:
    keys = sorted((k for k in result if k.startswith(prefix)), key=lambda k: int(k[len(prefix) :]))
    return [int(result[k]) for k in keys]


def build_world(cloud: Cloud, deals: int, contacts: int, companies: int) -> tuple[list[int], int]:
    """Users with the same e-mails in both portals (different ids); ``contacts`` contacts (phones) and ``companies``
    companies (requisite RQ_INN) shared by ``deals`` deals in NEW, two product rows each, assigned round the
    partner's users and the admin; plus one warm-up deal with a contact and a company of its own. Limits off."""
    source, target = cloud.source, cloud.target
    source_users = [source.control("POST", "/_sandbox/users", {"name": e, "email": e})["id"] for e in USERS]
    target.control("POST", "/_sandbox/users", {"name": "padding", "email": "other@acme.test"})
    for e in USERS:
        target.control("POST", "/_sandbox/users", {"name": e, "email": e})
    contact_ids: list[int] = []
    for start in range(0, contacts + 1, 50):
        chunk = range(start, min(contacts + 1, start + 50))
        contact_ids += _ids(source.batch({
            f"c{i}": f"crm.contact.add?fields[NAME]=N{i}&fields[LAST_NAME]=L{i}"
                     f"&fields[PHONE][0][VALUE]=%2B1555{i:07d}&fields[PHONE][0][VALUE_TYPE]=WORK"
            for i in chunk}), "c")  # fmt: skip
    company_ids: list[int] = []
    for start in range(0, companies + 1, 25):
        chunk = range(start, min(companies + 1, start + 25))
        commands: dict[str, str] = {}
        for i in chunk:
            commands[f"c{i}"] = f"crm.company.add?fields[TITLE]=Co{i}"
            commands[f"r{i}"] = (
                f"crm.requisite.add?fields[ENTITY_TYPE_ID]=4&fields[ENTITY_ID]=$result[c{i}]&fields[PRESET_ID]=1"
                f"&fields[NAME]=Co{i}&fields[RQ_INN]=77{i:08d}"
            )
        company_ids += _ids(source.batch(commands), "c")
    assignees = [*source_users, 1]
    # The warm-up deal (index ``deals``) has the extra contact and company, so it shares nothing with the rest.
    deal_ids: list[int] = []
    for start in range(0, deals + 1, 25):
        chunk = range(start, min(deals + 1, start + 25))
        commands = {}
        for i in chunk:
            contact = contact_ids[contacts] if i == deals else contact_ids[i % contacts]
            company = company_ids[companies] if i == deals else company_ids[i % companies]
            commands[f"d{i}"] = (
                f"crm.deal.add?fields[TITLE]=Deal {i}&fields[STAGE_ID]=NEW&fields[CONTACT_ID]={contact}"
                f"&fields[COMPANY_ID]={company}&fields[ASSIGNED_BY_ID]={assignees[i % len(assignees)]}"
            )
            commands[f"p{i}"] = (
                f"crm.deal.productrows.set?id=$result[d{i}]&rows[0][PRODUCT_NAME]=Widget&rows[0][PRICE]=10"
                f"&rows[0][QUANTITY]={1 + i % 3}&rows[1][PRODUCT_NAME]=Service&rows[1][PRICE]=99.5"
            )
        deal_ids += _ids(cloud.source.batch(commands), "d")
    return deal_ids[:deals], deal_ids[deals]


def prepare(cloud: Cloud, admin_url: str, deals: int, args: argparse.Namespace) -> Setup:
    """Fresh world and database, b24bridge on its defaults (``--set`` aside) with the route, installed, its robot on
    the stage, the world built, one warm-up deal handed over, b24bridge's buckets drained, limits on."""
    import psycopg

    from b24bridge.portals import crypto

    for portal in cloud.portals:
        portal.control("POST", "/_sandbox/reset")
        portal.control("POST", "/_sandbox/config", {"limits_enabled": False})
        portal.info = portal.control("GET", "/_sandbox/")  # a reset issues a new webhook
    source, target = cloud.source, cloud.target
    port = free_port()
    public = f"http://127.0.0.1:{port}"
    app = source.control(
        "POST",
        "/_sandbox/apps",
        {"name": "b24bridge", "scopes": ["crm", "bizproc", "user"], "install_url": f"{public}/install",
         "api_only": True},
    )  # fmt: skip
    data_dir = Path(tempfile.mkdtemp(prefix="b24bench-bridge-"))
    routes = data_dir / "routes.yaml"
    routes.write_text(
        ROUTES.format(source_domain=source.domain, target_webhook=target.info["webhooks"][0]["url"], route=ROUTE)
    )
    database_url = make_database(admin_url)
    connect = {
        "database_url": database_url,
        "data_dir": str(data_dir),
        "port": str(port),
        "public_url": public,
        "app_client_id": app["client_id"],
        "app_client_secret": app["client_secret"],
        "oauth_server": source.url,
        "encryption_keys": "k1:" + crypto.new_key(),
        "routes": str(routes),
        "log_level": args.log_level,
        "log_format": "json",
    }
    try:
        bridge = Bridge({**connect, **args.changed})
    except BaseException:
        drop_database(admin_url, database_url)
        raise
    try:
        source.control("POST", f"/_sandbox/apps/{app['client_id']}/install")
        with psycopg.connect(database_url, autocommit=True) as conn:
            for _ in range(400):
                if conn.execute("SELECT 1 FROM robot_registrations WHERE code = %s", (ROBOT_CODE,)).fetchone():
                    break
                time.sleep(0.05)
            else:
                raise RuntimeError(f"the bridge robot was not registered after install:\n{bridge.log_tail()}")
        deal_ids, warm = build_world(cloud, deals, args.contacts, args.companies)
        source.control(
            "POST",
            "/_sandbox/automation/rules",
            {
                "stage_id": STAGE,
                "client_id": app["client_id"],
                "robot_code": ROBOT_CODE,
                "properties": {"route": ROUTE},
            },
        )
        # The first hand-over pays one-offs (connections, tokens, the route's first lookups): reported, not counted.
        source.control("POST", f"/_sandbox/deals/{warm}/stage", {"stage_id": STAGE})
        for _ in range(600):
            found = source.control("GET", f"/_sandbox/workflows?document_id=DEAL_{warm}&status=completed")
            if found["total"]:
                wf = found["workflows"][0]
                if not wf["return_values"].get("target_deal_id"):
                    raise RuntimeError(f"the warm-up deal was not handed over: {wf['log']}\n{bridge.log_tail()}")
                warm_up = wf["finished_at"] - wf["started_at"]
                break
            time.sleep(0.1)
        else:
            raise RuntimeError(f"the warm-up deal was not answered within 60 s:\n{bridge.log_tail()}")
        # b24bridge's client counted its setup requests in its own copy of each bucket; a partly full bucket widens
        # its batching window, so let that drain before measuring.
        setup_requests = max(v["requests"] for v in scrape_portals(public).values())
        time.sleep(max(2.0, setup_requests / DRAIN + 1.0))
        for portal in cloud.portals:  # also empties the portals' buckets
            portal.info = portal.control("POST", "/_sandbox/config", {"limits_enabled": True})
    except BaseException:
        bridge.stop()
        drop_database(admin_url, database_url)
        raise
    return Setup(bridge, public, database_url, data_dir, deal_ids, warm_up)


# --- observing -------------------------------------------------------------------------------------------------


def scrape_portals(public: str) -> dict[str, dict[str, Any]]:
    """Per ``portal`` label: HTTP requests and commands (batch_size count/sum), commands by method (calls_total),
    time waited for the limits and spent on requests (limiter_wait / request_seconds sum and count), batch sizes."""
    import httpx

    out: dict[str, dict[str, Any]] = {}
    for line in httpx.get(f"{public}/metrics", timeout=10).text.splitlines():
        if not line.startswith("b24bridge_bitrix_") or "{" not in line:
            continue
        name, rest = line.split("{", 1)
        labels_text, value_text = rest.rsplit("} ", 1)
        labels = dict(part.split("=", 1) for part in _split_labels(labels_text))
        labels = {k: v.strip('"') for k, v in labels.items()}
        portal = labels.get("portal")
        if portal is None:
            continue
        value = float(value_text)
        entry = out.setdefault(portal, {"requests": 0.0, "commands": 0.0, "methods": {}, "sizes": {}})
        if name == "b24bridge_bitrix_batch_size_count":
            entry["requests"] += value
        elif name == "b24bridge_bitrix_batch_size_sum":
            entry["commands"] += value
        elif name == "b24bridge_bitrix_batch_size_bucket":
            entry["sizes"][labels["le"]] = value
        elif name == "b24bridge_bitrix_calls_total":
            key = f"{labels['method']}" + ("" if labels.get("outcome") == "ok" else f" ({labels.get('outcome')})")
            entry["methods"][key] = entry["methods"].get(key, 0.0) + value
        elif name in ("b24bridge_bitrix_limiter_wait_seconds_sum", "b24bridge_bitrix_limiter_wait_seconds_count",
                      "b24bridge_bitrix_request_seconds_sum", "b24bridge_bitrix_request_seconds_count",
                      "b24bridge_bitrix_retries_total", "b24bridge_bitrix_errors_total"):  # fmt: skip
            short = name.removeprefix("b24bridge_bitrix_")
            entry[short] = entry.get(short, 0.0) + value
    return out


def _split_labels(text: str) -> list[str]:
    parts, current, quoted = [], "", False
    for char in text:
        if char == '"':
            quoted = not quoted
        if char == "," and not quoted:
            parts.append(current)
            current = ""
        else:
            current += char
    if current:
        parts.append(current)
    return parts


def _delta(after: dict[str, Any], before: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in after.items():
        if isinstance(value, dict):
            out[key] = {k: v - before.get(key, {}).get(k, 0.0) for k, v in value.items()}
            out[key] = {k: v for k, v in out[key].items() if v}
        else:
            out[key] = value - before.get(key, 0.0)
    return out


def fire_and_wait(cloud: Cloud, setup: Setup, over_seconds: float, timeout: float) -> dict[str, Any]:
    """Have the sandbox move the deals, wait for every workflow to end (or ``timeout`` s after the last move),
    collect the sandbox's records, the target's stored deals, b24bridge's metrics and run log."""
    import psycopg

    source, target = cloud.source, cloud.target
    before = scrape_portals(setup.public)
    cpu = CpuWindow(cloud.proc.pid, setup.bridge.proc.pid)
    load_before = os.getloadavg()
    source.control("POST", "/_sandbox/deals/move", {"deal_ids": setup.deal_ids, "stage_id": STAGE,
                                                      "over_seconds": over_seconds})  # fmt: skip
    time.sleep(over_seconds)  # polling meanwhile would only load the portals being measured
    last = f"/_sandbox/workflows?document_id=DEAL_{setup.deal_ids[-1]}"
    deadline = time.monotonic() + timeout
    timed_out = True
    while time.monotonic() < deadline:
        if (
            source.control("GET", last)["total"]
            and not source.control("GET", "/_sandbox/workflows?status=running")["total"]
        ):
            timed_out = False
            break
        time.sleep(0.5)
    after = scrape_portals(setup.public)
    cpu_used = cpu.result()
    fired = {f"DEAL_{deal_id}" for deal_id in setup.deal_ids}
    workflows = [
        wf for wf in source.control("GET", "/_sandbox/workflows")["workflows"] if wf["document_id"][2] in fired
    ]
    wf_ids = {wf["id"] for wf in workflows}
    calls = [c for c in source.control("GET", "/_sandbox/handler-calls?kind=robot")["calls"]
             if c.get("workflow_id") in wf_ids]  # fmt: skip
    limits = {name: portal.control("GET", "/_sandbox/limits") for name, portal in (("source", source),
                                                                                    ("target", target))}  # fmt: skip
    saved = Path(target.control("POST", "/_sandbox/state/save")["saved"])
    world = json.loads(saved.read_text())
    target_deals = list(world.get("crm", {}).get("DEAL", {}).values())
    with psycopg.connect(setup.database_url, autocommit=True) as conn:
        rows = conn.execute(
            """
            SELECT r.workflow_id, r.status, r.attempts, extract(epoch FROM r.created_at),
                   extract(epoch FROM r.started_at), extract(epoch FROM r.finished_at),
                   extract(epoch FROM r.answered_at),
                   (SELECT coalesce(json_agg(json_build_array(c.method, extract(epoch FROM c.at), c.status)
                                             ORDER BY c.id), '[]'::json)
                      FROM run_calls c WHERE c.run_id = r.id)
              FROM runs r WHERE r.kind = 'bridge'
            """
        ).fetchall()
    runs = {
        r[0]: {"status": r[1], "attempts": r[2], "created": _f(r[3]), "started": _f(r[4]), "finished": _f(r[5]),
               "answered": _f(r[6]), "calls": r[7]}
        for r in rows
    }  # fmt: skip
    return {
        "workflows": workflows,
        "calls": calls,
        "target_deals": target_deals,
        "runs": runs,
        "limits": limits,
        "metrics": {label: _delta(after[label], before.get(label, {})) for label in after},
        "cpu": cpu_used,
        "loadavg": [round(v, 2) for v in load_before] + [round(v, 2) for v in os.getloadavg()],
        "timed_out": timed_out,
    }


def _f(value: Any) -> float | None:
    return None if value is None else float(value)


# --- per deal --------------------------------------------------------------------------------------------------


def deals_of(cloud: Cloud, seen: dict[str, Any]) -> list[dict[str, Any]]:
    """Per fired deal: its stage change, robot call, run-log times, target deal creation and workflow answer."""
    member = cloud.source.member_id
    created: dict[int, list[float]] = {}
    for deal in seen["target_deals"]:
        origin = str(deal.get("ORIGIN_ID") or "")
        if origin.startswith(f"{member}:DEAL:"):
            created.setdefault(int(origin.rsplit(":", 1)[1]), []).append(float(deal["DATE_CREATE"]))
    sent = {c["workflow_id"]: c["at"] for c in seen["calls"]}
    out = []
    for wf in seen["workflows"]:
        deal_id = int(wf["document_id"][2].removeprefix("DEAL_"))
        run = seen["runs"].get(wf["id"], {})
        calls = run.get("calls") or []
        methods = [c[0] for c in calls]
        read1 = next((c[1] for c in calls if c[0] == "crm.deal.get"), None)
        read2 = max((c[1] for c in calls if c[0] in ("crm.contact.get", "crm.company.get")), default=None)
        answered = wf["status"] == "completed" and bool(wf["return_values"].get("target_deal_id"))
        times = created.get(deal_id, [])
        out.append(
            {
                "deal_id": deal_id,
                "moved": wf["started_at"],
                "sent": sent.get(wf["id"]),
                "accepted": run.get("created"),
                "started": run.get("started"),
                "read1": read1,
                "read2": read2,
                "created": min(times) if times else None,
                "copies": len(times),
                "finished": run.get("finished"),
                "answered": wf["finished_at"] if answered else None,
                "attempts": run.get("attempts"),
                "new_party": any(m in ("crm.contact.add", "crm.company.add") for m in methods),
            }
        )
    return out


def step_table(deals: list[dict[str, Any]]) -> dict[str, dict[str, float | None]]:
    order = ("moved", "sent", "accepted", "started", "read1", "read2", "created", "finished", "answered")
    table: dict[str, dict[str, float | None]] = {}
    for step, (a, b) in zip(STEPS, itertools.pairwise(order), strict=True):
        values = [d[b] - d[a] for d in deals if d[a] is not None and d[b] is not None]
        table[step] = {"p50": _r(quantile(values, 0.5)) if values else None,
                       "p99": _r(quantile(values, 0.99)) if values else None}  # fmt: skip
    return table


def latencies(deals: list[dict[str, Any]], fired: int, end: str) -> list[float]:
    values = [d[end] - d["moved"] if d[end] is not None else math.inf for d in deals]
    return values + [math.inf] * (fired - len(deals))  # moves that never started a workflow


def _r(value: float, places: int = 4) -> float | None:
    return None if math.isinf(value) else round(value, places)


def portal_figures(cloud: Cloud, seen: dict[str, Any], fired: int) -> dict[str, dict[str, Any]]:
    """Requests, commands and what they were, per portal, from b24bridge's /metrics (labels checked)."""
    labels = {"source": cloud.source.member_id, "target": cloud.target.domain.lower()}
    unknown = sorted(set(seen["metrics"]) - set(labels.values()))
    out: dict[str, dict[str, Any]] = {}
    for name, label in labels.items():
        m = seen["metrics"].get(label, {})
        requests, commands = m.get("requests", 0.0), m.get("commands", 0.0)
        waits = m.get("limiter_wait_seconds_count", 0.0)
        durations = m.get("request_seconds_count", 0.0)
        limits = seen["limits"][name]
        out[name] = {
            "label": label,
            "requests": int(requests),
            "commands": int(commands),
            "requests_per_deal": round(requests / fired, 3) if fired else None,
            "commands_per_deal": round(commands / fired, 3) if fired else None,
            "commands_per_request": round(commands / requests, 1) if requests else None,
            "small_requests_le10": int(m.get("sizes", {}).get("10.0", 0.0)),
            # Requests beyond what the commands needed at 50 a request: bucket slots spent on partial batches.
            "requests_beyond_full": int(requests - math.ceil(commands / MAX_BATCH)),
            "by_method_per_deal": {k: round(v / fired, 3) for k, v in sorted(m.get("methods", {}).items())},
            "limiter_wait_mean_s": round(m.get("limiter_wait_seconds_sum", 0.0) / waits, 3) if waits else None,
            "request_mean_s": round(m.get("request_seconds_sum", 0.0) / durations, 4) if durations else None,
            "retries": int(m.get("retries_total", 0.0)),
            "errors": int(m.get("errors_total", 0.0)),
            "refused_503": limits["refused_requests"],
            "refused_429": limits["refused_operating"],
        }
    if unknown:
        out["unknown_labels"] = {"labels": unknown}
    return out


def common(cloud: Cloud, seen: dict[str, Any], setup: Setup, fired: int) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    deals = deals_of(cloud, seen)
    result: dict[str, Any] = {
        "fired": fired,
        "workflows": len(deals),
        "delivered": sum(1 for d in deals if d["created"] is not None),
        "delivered_twice": sum(1 for d in deals if d["copies"] > 1),
        "answered": sum(1 for d in deals if d["answered"] is not None),
        "retried_runs": sum(1 for d in deals if (d["attempts"] or 0) > 1),
        "robot_calls_failed": sum(1 for c in seen["calls"] if not c.get("ok")),
        "timed_out": seen["timed_out"],
        "portals": portal_figures(cloud, seen, fired),
        "steps_s": step_table(deals),
        "warm_up_s": round(setup.warm_up_s, 3),
        "cpu": seen["cpu"],
        "loadavg_before_after": seen["loadavg"],
    }
    if DUMP is not None:
        DUMP.append(deals)
    return result, deals


DUMP: list[list[dict[str, Any]]] | None = None  # every workload's deals, for --dump


# --- workloads -------------------------------------------------------------------------------------------------


def bound(deals: int, commands_per_deal: float, window: float) -> dict[str, float | None]:
    """What one portal's bucket allows for ``deals`` deals of ``commands_per_deal`` commands each."""
    if commands_per_deal <= 0 or window <= 0:
        return {"deals_per_s": None, "t_min_s": None, "steady_deals_per_s": None}
    allowed = (BURST + DRAIN * window) * MAX_BATCH / commands_per_deal  # deals within the window
    requests = math.ceil(deals * commands_per_deal / MAX_BATCH)
    return {
        "deals_per_s": round(allowed / window, 2),
        "t_min_s": round(max(0.0, (requests - BURST) / DRAIN), 2),
        "steady_deals_per_s": round(DRAIN * MAX_BATCH / commands_per_deal, 2),
    }


def throughput(cloud: Cloud, admin_url: str, args: argparse.Namespace) -> dict[str, Any]:
    setup = prepare(cloud, admin_url, args.deals, args)
    try:
        seen = fire_and_wait(cloud, setup, args.fire_seconds, args.timeout)
    finally:
        finish(setup, admin_url, args)
    fired = len(setup.deal_ids)
    result, deals = common(cloud, seen, setup, fired)
    result |= {"workload": "throughput", "fire_seconds": args.fire_seconds}
    first = min(d["moved"] for d in deals)
    complete = result["answered"] == fired
    last_answer = max((d["answered"] for d in deals if d["answered"] is not None), default=None)
    last_created = max((d["created"] for d in deals if d["created"] is not None), default=None)
    window = last_answer - first if last_answer is not None and complete else None
    result["window_s"] = _r(window) if window is not None else None
    result["created_window_s"] = _r(last_created - first) if last_created is not None else None
    result["deals_per_s"] = round(fired / window, 2) if window else None
    result["created_per_s"] = (
        round(result["delivered"] / (last_created - first), 2) if last_created is not None else None
    )
    bounds = {}
    for name in ("source", "target"):
        cpd = result["portals"][name]["commands_per_deal"] or 0.0
        bounds[name] = bound(fired, cpd, window or 0.0)
    result["bounds"] = bounds
    known = {k: v for k, v in bounds.items() if v["deals_per_s"] is not None}
    if known and result["deals_per_s"]:
        binding = min(known, key=lambda k: known[k]["deals_per_s"] or math.inf)
        result["binding"] = binding
        result["bound_deals_per_s"] = known[binding]["deals_per_s"]
        result["ratio"] = round(result["deals_per_s"] / known[binding]["deals_per_s"], 3)
        t_min = max(v["t_min_s"] or 0.0 for v in known.values())
        result["ratio_t_min"] = round(t_min / window, 3) if window else None
    else:
        result["binding"], result["bound_deals_per_s"], result["ratio"], result["ratio_t_min"] = None, None, None, None
    result["target"] = {"ratio": THROUGHPUT_TARGET, "ok": result["ratio"] is not None and complete
                        and result["ratio"] >= THROUGHPUT_TARGET}  # fmt: skip
    return result


def steady(cloud: Cloud, admin_url: str, rate: float, args: argparse.Namespace) -> dict[str, Any]:
    fired = max(1, round(rate * args.seconds))
    setup = prepare(cloud, admin_url, fired, args)
    try:
        seen = fire_and_wait(cloud, setup, fired / rate, args.timeout)
    finally:
        finish(setup, admin_url, args)
    result, deals = common(cloud, seen, setup, fired)
    result |= {"workload": "latency", "rate": rate, "seconds": fired / rate}
    to_target = latencies(deals, fired, "created")
    to_answer = latencies(deals, fired, "answered")
    result["latency_s"] = {f"p{round(q * 100)}": _r(quantile(to_target, q)) for q in QUANTILES} | {
        "max": _r(max(to_target, default=math.inf))
    }
    result["answer_latency_s"] = {f"p{round(q * 100)}": _r(quantile(to_answer, q)) for q in QUANTILES} | {
        "max": _r(max(to_answer, default=math.inf))
    }
    # Deals whose contact or company had to be created in the target (first deals of each) against the rest.
    for name, group in (("new_party", [d for d in deals if d["new_party"]]),
                        ("linked_party", [d for d in deals if not d["new_party"]])):  # fmt: skip
        values = latencies(group, len(group), "created")
        result[f"{name}_deals"] = len(group)
        result[f"{name}_p50_s"] = _r(quantile(values, 0.5)) if values else None
    # Stage change -> target deal over the run: whether latency grows as the buckets fill.
    ordered = sorted(deals, key=lambda d: d["moved"])
    thirds = [ordered[i * len(ordered) // 3 : (i + 1) * len(ordered) // 3] for i in range(3)]
    result["p50_by_third_s"] = [_r(quantile(latencies(t, len(t), "created"), 0.5)) if t else None for t in thirds]
    # Above the drain rate the portal's bucket (and b24bridge's copy of it) fills, and the batcher holds calls longer.
    result["requests_per_s"] = {
        name: round(result["portals"][name]["requests"] / result["seconds"], 2) for name in ("source", "target")
    }
    result["targets"] = {
        f"p{round(q * 100)}": {"target_s": t, "ok": _met(result["latency_s"][f"p{round(q * 100)}"], t)}
        for q, t in LATENCY_TARGETS.get(rate, {}).items()
    }
    return result


def _met(value: float | None, target: float) -> bool:
    return value is not None and value <= target


def finish(setup: Setup, admin_url: str, args: argparse.Namespace) -> None:
    setup.bridge.stop()
    drop_database(admin_url, setup.database_url)
    if args.keep:
        print(f"  (kept b24bridge's data directory and log: {setup.data_dir})", flush=True)
    else:
        shutil.rmtree(setup.data_dir, ignore_errors=True)


# --- output ----------------------------------------------------------------------------------------------------


def _ms(value: float | None) -> str:
    if value is None:
        return "n/a"
    return f"{value * 1000:.0f} ms" if value < 1 else f"{value:.3f} s" if value < 10 else f"{value:.1f} s"


def _ok(ok: bool) -> str:
    return "OK" if ok else "MISSED"


def _portal_lines(result: dict[str, Any]) -> list[str]:
    lines = []
    for name in ("source", "target"):
        p = result["portals"][name]
        methods = ", ".join(f"{k} {v:g}" for k, v in p["by_method_per_deal"].items())
        lines.append(
            f"  {name} ({p['label']}): {p['requests']} requests, {p['commands']} commands = {p['commands_per_deal']}"
            f" commands and {p['requests_per_deal']} requests per deal, {p['commands_per_request']} per request"
            f" ({p['small_requests_le10']} requests of <= 10, {p['requests_beyond_full']} beyond full batches);"
            f" mean limiter wait {_ms(p['limiter_wait_mean_s'])},"
            f" mean request {_ms(p['request_mean_s'])}; retries {p['retries']}, errors {p['errors']},"
            f" refused 503/429 {p['refused_503']}/{p['refused_429']}"
        )
        lines.append(f"    per deal: {methods}")
    if "unknown_labels" in result["portals"]:
        lines.append(f"  metrics for other portal labels: {result['portals']['unknown_labels']['labels']}")
    return lines


def _tail(result: dict[str, Any]) -> list[str]:
    steps = result["steps_s"]
    cpu = result["cpu"]
    return [
        "  steps p50/p99: " + ", ".join(f"{s} {_ms(steps[s]['p50'])}/{_ms(steps[s]['p99'])}" for s in STEPS),
        f"  check: {result['delivered']}/{result['fired']} delivered ({result['delivered_twice']} twice),"
        f" {result['answered']} answered, {result['retried_runs']} runs retried, {result['robot_calls_failed']}"
        f" robot calls failed{', TIMED OUT' if result['timed_out'] else ''}; warm-up (not counted)"
        f" {_ms(result['warm_up_s'])}",
        f"  machine: CPU over {cpu['window_s']} s: b24bridge {cpu.get('b24bridge_cpu_s')} s, sandbox"
        f" {cpu.get('sandbox_cpu_s')} s, machine {cpu.get('machine_busy', 0) * 100:.0f}% busy of {cpu['cpus']} CPUs;"
        f" load average before/after {result['loadavg_before_after'][0]}/{result['loadavg_before_after'][3]}",
    ]


def report(result: dict[str, Any]) -> list[str]:
    if result["workload"] == "throughput":
        b = result["bounds"]
        lines = [
            f"throughput: {result['fired']} deals moved over {result['fire_seconds']:g} s:"
            f" {result['deals_per_s']} deals/s (first move -> last workflow answered {_ms(result['window_s'])});"
            f" target deals created {result['created_per_s']}/s (last at {_ms(result['created_window_s'])})",
            "  bound over that window, (burst + drain x T) x 50 / commands per deal / T: "
            + "; ".join(
                f"{n} {b[n]['deals_per_s']} deals/s (T_min {b[n]['t_min_s']} s, steady {b[n]['steady_deals_per_s']}/s)"
                for n in ("source", "target")
            ),
            f"  binding: {result['binding']}; measured / bound = {result['ratio']}"
            f" (T_min / T = {result['ratio_t_min']}); target >= {THROUGHPUT_TARGET:g}"
            f" {_ok(result['target']['ok'])}",
        ]
    else:
        lat, ans = result["latency_s"], result["answer_latency_s"]
        lines = [
            f"latency {result['rate']:g} deals/s for {result['seconds']:g} s: stage change -> target deal p50"
            f" {_ms(lat['p50'])}, p90 {_ms(lat['p90'])}, p99 {_ms(lat['p99'])} (max {_ms(lat['max'])});"
            f" -> workflow answered p50 {_ms(ans['p50'])}, p99 {_ms(ans['p99'])}",
            f"  deals creating a contact/company: {result['new_party_deals']} (p50 {_ms(result['new_party_p50_s'])}),"
            f" the rest {result['linked_party_deals']} (p50 {_ms(result['linked_party_p50_s'])}); p50 by third of the"
            f" run: {' / '.join(_ms(v) for v in result['p50_by_third_s'])}; requests/s: source"
            f" {result['requests_per_s']['source']}, target {result['requests_per_s']['target']} (drain {DRAIN:g}/s"
            " each)",
        ]
        if result["targets"]:
            lines.append(
                "  targets: "
                + ", ".join(
                    f"{k} <= {_ms(t['target_s'])} {_ok(t['ok'])} ({_ms(lat[k])})" for k, t in result["targets"].items()
                )
            )
    return [*lines, *_portal_lines(result), *_tail(result)]


def paste_block(results: list[dict[str, Any]], machine: dict[str, Any], command: str) -> list[str]:
    """The figures as docs/benchmarks.md shows them."""
    lines = ["", "--- for docs/benchmarks.md ---", f"command: {command}", "",
             "| workload | figure | bound / target | result |", "|---|---|---|---|"]  # fmt: skip
    for r in results:
        s, t = r["portals"]["source"], r["portals"]["target"]
        per_deal = (
            f"source {s['commands_per_deal']} cmds / {s['requests_per_deal']} req per deal,"
            f" target {t['commands_per_deal']} / {t['requests_per_deal']}"
        )
        if r["workload"] == "throughput":
            lines.append(
                f"| throughput, {r['fired']} deals | **{r['deals_per_s']} deals/s** ({_ms(r['window_s'])}; {per_deal})"
                f" | bound {r['bound_deals_per_s']} deals/s ({r['binding']} binds); ratio **{r['ratio']}** >= 0.9"
                f" | {_ok(r['target']['ok'])} |"
            )
        else:
            lat = r["latency_s"]
            wanted = ", ".join(f"{k} <= {_ms(v['target_s'])}" for k, v in r["targets"].items()) or "-"
            ok = all(v["ok"] for v in r["targets"].values())
            lines.append(
                f"| steady {r['rate']:g} deal/s x {r['seconds']:g} s | stage change -> target deal p50"
                f" **{_ms(lat['p50'])}**, p99 **{_ms(lat['p99'])}** ({per_deal}) | {wanted}"
                f" | {_ok(ok) if r['targets'] else '-'} |"
            )
    lines.append("")
    lines.append(
        f"b24bridge from {machine['b24bridge']}; machine: {machine['platform']}, python {machine['python']},"
        f" {machine['cpus']} CPUs; load average"
        f" before {machine['loadavg_before']}, after {machine['loadavg_after']}; "
        + "; ".join(
            f"{r['workload']}{' ' + format(r['rate'], 'g') if 'rate' in r else ''}: machine"
            f" {r['cpu'].get('machine_busy', 0) * 100:.0f}% busy (b24bridge {r['cpu'].get('b24bridge_cpu_s')} s,"
            f" sandbox {r['cpu'].get('sandbox_cpu_s')} s CPU in {r['cpu']['window_s']} s)"
            for r in results
        )
    )
    return lines


# --- main ------------------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--deals", type=int, default=1000, help="deals of the throughput workload")
    parser.add_argument("--fire-seconds", type=float, default=1.0, help="the throughput workload's moves take this")
    parser.add_argument("--seconds", type=float, default=60.0, help="length of each latency workload")
    parser.add_argument("--rates", default="1,10", help="latency workloads' rates in deals/s, comma-separated")
    parser.add_argument("--only", choices=("throughput", "latency"), help="run one kind of workload only")
    parser.add_argument("--contacts", type=int, default=40, help="source contacts the deals share")
    parser.add_argument("--companies", type=int, default=10, help="source companies the deals share")
    parser.add_argument("--timeout", type=float, default=300.0, help="wait this long after the last move")
    parser.add_argument("--database-url", default=os.environ.get("B24BRIDGE_TEST_DATABASE_URL"))
    parser.add_argument("--log-level", default="ERROR", help="b24bridge's log level (INFO logs every request)")
    parser.add_argument("--keep", action="store_true", help="keep b24bridge's data directories (serve.log)")
    parser.add_argument("--json", action="store_true", help="print one JSON document instead of the report")
    parser.add_argument("--dump", type=Path, help="write every deal's timeline (per workload) to this JSON file")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="experiments only: change a b24bridge setting (e.g. worker_concurrency=200); recorded figures use none",
    )
    args = parser.parse_args()
    args.changed = dict(item.split("=", 1) for item in args.set)
    rates = [float(r) for r in args.rates.split(",") if r.strip()]
    if any(r <= 0 for r in rates) or args.seconds <= 0 or args.deals < 1 or args.fire_seconds < 0:
        parser.error("--rates, --seconds and --deals must be positive, --fire-seconds not negative")
    if args.contacts < 1 or args.companies < 1:
        parser.error("--contacts and --companies must be at least 1")

    import b24bridge
    from b24bridge.db import EmbeddedPostgres, libpq_url
    from b24bridge.observability import configure_logging

    configure_logging("ERROR", "json")
    embedded = None
    if args.database_url:
        admin_url = libpq_url(args.database_url)
    else:
        embedded = EmbeddedPostgres(Path(tempfile.mkdtemp(prefix="b24bench-pg-")) / "pg")
        admin_url = embedded.start()
    machine: dict[str, Any] = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "loadavg_before": [round(v, 2) for v in os.getloadavg()],
        "b24bridge": str(Path(b24bridge.__file__).parent),
    }
    global DUMP
    DUMP = [] if args.dump else None
    work = Path(tempfile.mkdtemp(prefix="b24bench-cloud-"))
    results: list[dict[str, Any]] = []
    cloud = Cloud(work)
    try:
        workloads: list[Callable[[], dict[str, Any]]] = []
        if args.only in (None, "throughput"):
            workloads.append(lambda: throughput(cloud, admin_url, args))
        if args.only in (None, "latency"):
            workloads += [lambda rate=rate: steady(cloud, admin_url, rate, args) for rate in rates]
        for workload in workloads:
            results.append(workload())
            if not args.json:
                print("\n".join(report(results[-1])), flush=True)
    finally:
        cloud.stop()
        shutil.rmtree(work, ignore_errors=True)
        if embedded is not None:
            embedded.stop()
    machine["loadavg_after"] = [round(v, 2) for v in os.getloadavg()]
    if args.dump and DUMP is not None:
        args.dump.write_text(json.dumps([{"workload": r["workload"], "rate": r.get("rate"), "deals": d}
                                         for r, d in zip(results, DUMP, strict=False)]))  # fmt: skip
    command = " ".join(["bench/bridge_e2e.py", *sys.argv[1:]])
    if args.json:
        json.dump({"machine": machine, "limits": {"burst": BURST, "drain_per_s": DRAIN}, "results": results},
                  sys.stdout)  # fmt: skip
        print()
    else:
        print("\n".join(paste_block(results, machine, command)))


if __name__ == "__main__":
    main()
