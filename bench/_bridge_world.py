"""The bridge benchmark's world: two sandbox portals, b24bridge between them, the deals set up, and what is
observed while they are fired (bench/bridge_e2e.py)."""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from _common import ROOT, Bridge, drop_database, free_port, install_and_await_robot, make_database, stop_process
from _measure import CpuWindow

BURST, DRAIN, MAX_BATCH = 50, 2.0, 50  # cloud plan (REFERENCE 2.1), per portal
STAGE = "PREPARATION"
ROUTE = "partner-to-acme"
ROBOT_CODE = "b24bridge_bridge_deal"
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
        stop_process(self.proc, 30)


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
        install_and_await_robot(source.control, app["client_id"], database_url, ROBOT_CODE, bridge.log_tail)
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
