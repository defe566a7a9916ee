"""``b24bridge demo``: two sandbox portals, b24bridge between them, a scripted story, and what arrived.

Everything runs in this process, on loopback, in one event loop: the sandbox cloud (a partner's portal, the source,
and Acme's portal, the target, sharing one OAuth server) and b24bridge's service (API and in-process worker), each
served by uvicorn, with the embedded PostgreSQL under the demo's own data folder. The story uses them only as a user
would: the sandbox's control API and REST (through b24bridge's own client), b24bridge over HTTP; the run log is read
from the database for the timings. What it sets up is printed, so the same can be done by hand afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
import string
import time
from collections.abc import Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.text import Text

from b24bridge.app import create_service
from b24bridge.bitrix import BitrixClient
from b24bridge.bridge.robot import BRIDGE_ROBOT
from b24bridge.db import Database
from b24bridge.demo.plumbing import HOST, SandboxPortal, eventually, listen, serving
from b24bridge.demo.report import Delivered, Report, Request
from b24bridge.portals import crypto
from b24bridge.robots.definitions.create_contact import CODE as CREATE_CONTACT
from b24bridge.runs.schemas import Run, RunFilter
from b24bridge.runs.service import RunLog
from b24bridge.sandbox.cloud import Cloud
from b24bridge.sandbox.config import SandboxConfig
from b24bridge.server import server_options
from b24bridge.settings import load_settings

ROUTE = "partner-to-acme"
HANDOVER_STAGE, NEXT_STAGE = "PREPARATION", "EXECUTING"

ROUTES = string.Template("""\
# Written by `b24bridge demo`: deals of the partner's portal handed to Acme's portal by the bridge robot.
portals:
  partner:
    app: $source_domain          # b24bridge is installed there: its robots run in the portal's automation
  acme:
    webhook: $target_webhook     # Acme's incoming webhook
routes:
  $route:
    source: partner
    target: acme
    triggers:
      robot: true                # the bridge robot, placed on a stage with its property route = $route
    deal:
      TITLE: "{{ deal.TITLE }}"
      STAGE_ID: {from: STAGE_ID, map: {PREPARATION: NEW, EXECUTING: PREPAYMENT_INVOICE}}
      COMMENTS: "partner deal {{ deal.ID }}"
    contact:
      match: [phone]             # found in Acme's portal by phone, else created
      fields: {NAME: {from: NAME}, LAST_NAME: {from: LAST_NAME}, PHONE: {from: PHONE}, EMAIL: {from: EMAIL}}
    products: true               # the product rows go along
""")

# The partner's deals: title, its contact (first name, last name, phone, e-mail), product rows (name, price, qty).
DEALS: list[tuple[str, tuple[str, str, str, str], list[tuple[str, float, int]]]] = [
    ("Website redesign", ("Olivia", "Brown", "+15550100001", "olivia@northwind.test"),
     [("Design sprint", 1200.0, 2), ("Hosting, 12 months", 15.0, 12)]),
    ("CRM rollout", ("Liam", "Chen", "+15550100002", "liam@contoso.test"), [("CRM licence", 49.0, 10)]),
    ("Support plan", ("Emma", "Novak", "+15550100003", "emma@fabrikam.test"), [("Support hours", 80.0, 5)]),
]  # fmt: skip
# A website request: its fields feed the create-contact robot through {=Document:...} properties.
REQUEST_FIELDS = {"FIRST_NAME": "Ann", "LAST_NAME": "Lee", "PHONE": "+1 (555) 123-4567", "EMAIL": "ann.lee@example.com"}
CONTACT_PROPERTIES = {
    **{key.lower(): f"{{=Document:UF_CRM_{key}}}" for key in REQUEST_FIELDS},
    "source": "WEB",
    "reuse_existing": "Y",
}


@dataclass(frozen=True)
class DemoOptions:
    data_dir: Path
    port: int = 8000
    sandbox_port: int = 8090
    wait: bool = True


@dataclass(frozen=True)
class Stage:
    """What the story plays on once everything is up."""

    source: SandboxPortal
    target: SandboxPortal
    client_id: str
    runs: RunLog
    bridge_url: str
    routes: Path


async def run(options: DemoOptions, console: Console) -> Report | None:
    """Start everything, play the story, print what arrived; then serve until Ctrl-C (unless ``wait`` is off).

    Ctrl-C (or SIGTERM) at any point stops everything in order (b24bridge, its database, the sandbox) and returns None.
    """
    started = time.monotonic()
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    stopping = False

    def stop() -> None:
        # Once: a second Ctrl-C must not cut short the shutdown of the embedded PostgreSQL.
        nonlocal stopping
        if not stopping:
            stopping = True
            task.cancel()

    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):  # Windows: Ctrl-C arrives as KeyboardInterrupt instead
            loop.add_signal_handler(signum, stop)
    try:
        async with AsyncExitStack() as stack:
            report = await _play(options, stack, lambda text: _step(console, started, text))
            report.seconds = time.monotonic() - started
            report.print(console, waiting=options.wait)
            if options.wait:
                await asyncio.Event().wait()
            return report
    except asyncio.CancelledError:
        if not stopping:
            raise
        console.print("demo stopped: b24bridge, its database and the sandbox portals are down")
        return None
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError):
                loop.remove_signal_handler(signum)


def _step(console: Console, started: float, text: str) -> None:
    console.print(Text.assemble((f"{time.monotonic() - started:5.1f}s", "dim"), "  ", text))


async def _play(options: DemoOptions, stack: AsyncExitStack, step: Callable[[str], None]) -> Report:
    bridge_socket = listen(options.port, "--port")
    sandbox_sockets = [listen(options.sandbox_port + i, "--sandbox-port") for i in range(2)]
    for sock in [bridge_socket, *sandbox_sockets]:
        stack.callback(sock.close)
    source, target = await _sandbox(options, stack, sandbox_sockets)
    step(f"sandbox portals up: partner {source.base_url}, acme {target.base_url}")
    stage = await _bridge(options, stack, bridge_socket, source, target)
    step(f"b24bridge up at {stage.bridge_url} (embedded PostgreSQL in {options.data_dir / 'pg'})")

    # Installed in the partner's portal, b24bridge registers its robots there (the install hook).
    installed = await source.control("POST", f"/apps/{stage.client_id}/install")
    codes = await _robots(source, installed["tokens"]["access_token"], {CREATE_CONTACT, BRIDGE_ROBOT.code})
    step(f"installed in the partner's portal; robots registered: {', '.join(sorted(codes))}")
    category = await _automation(stage)
    step(f"automation: the bridge robot on {HANDOVER_STAGE} and {NEXT_STAGE} (route {ROUTE}), "
         f"the create-contact robot on C{category}:NEW")  # fmt: skip

    # The partner's deals, each with its contact and product rows, handed over; the first one then moves on.
    deal_ids = await asyncio.gather(*(_new_deal(source, *deal) for deal in DEALS))
    workflows: dict[int, list[str]] = {deal_id: [] for deal_id in deal_ids}
    for deal_id in deal_ids:
        workflows[deal_id] += await _move(source, deal_id, HANDOVER_STAGE)
    request_id = int(await source.call(
        "crm.deal.add",
        {"fields": {"TITLE": "Callback request from the website", "CATEGORY_ID": category,
                    **{f"UF_CRM_{key}": value for key, value in REQUEST_FIELDS.items()}}},
    ))  # fmt: skip
    step(f"{len(deal_ids)} deals moved to {HANDOVER_STAGE}; website request deal {request_id} added")
    first = deal_ids[0]
    await source.workflow(workflows[first][-1])  # handed over first, so that the move on is an update
    workflows[first] += await _move(source, first, NEXT_STAGE)
    step(f"deal {first} moved on to {NEXT_STAGE}")

    [request_workflow] = (await source.control("GET", f"/workflows?document_id=DEAL_{request_id}"))["workflows"]
    ended = {
        w: await source.workflow(w) for w in [*(w for ws in workflows.values() for w in ws), request_workflow["id"]]
    }
    runs = await _answered_runs(stage.runs, set(ended))
    step(f"{len(ended)} workflows answered, {len(runs)} runs in the run log")

    delivered = [await _delivered(stage, deal_id, [ended[w] for w in ws], runs) for deal_id, ws in workflows.items()]
    contact_id = int(ended[request_workflow["id"]]["return_values"].get("contact_id") or 0)
    contact = await source.call("crm.contact.get", {"id": contact_id}) if contact_id else {}
    return Report(
        route=ROUTE,
        delivered=delivered,
        request=Request(request_id, contact, runs[request_workflow["id"]]),
        properties=CONTACT_PROPERTIES,
        bridge_url=stage.bridge_url,
        portals={"partner": source.base_url, "acme": target.base_url},
        data_dir=options.data_dir,
        routes=stage.routes,
    )


async def _sandbox(
    options: DemoOptions, stack: AsyncExitStack, sockets: list[socket.socket]
) -> tuple[SandboxPortal, SandboxPortal]:
    """Two portals sharing one OAuth server, with the cloud's limits, as ``b24bridge sandbox --portals 2``."""
    cloud = Cloud.on_ports(SandboxConfig(host=HOST, port=options.sandbox_port), len(sockets))
    for member in cloud.portals:
        member.bootstrap()
    await stack.enter_async_context(serving(cloud.asgi(), sockets, "the sandbox"))
    http = await stack.enter_async_context(httpx.AsyncClient(timeout=30))
    bitrix = await stack.enter_async_context(BitrixClient())
    source, target = (SandboxPortal(name, member.config.base_url, http) for name, member in zip(
        ("partner", "acme"), cloud.portals, strict=True))  # fmt: skip
    return await source.open(bitrix), await target.open(bitrix)


async def _bridge(
    options: DemoOptions, stack: AsyncExitStack, sock: socket.socket, source: SandboxPortal, target: SandboxPortal
) -> Stage:
    """b24bridge as an application registered in the partner's portal, on embedded defaults in the demo's folder."""
    bridge_url = f"http://{HOST}:{options.port}"
    app = await source.control(
        "POST",
        "/apps",
        {"name": "b24bridge demo", "scopes": ["crm", "bizproc", "user"], "install_url": f"{bridge_url}/install",
         "api_only": True},
    )  # fmt: skip
    options.data_dir.mkdir(parents=True, exist_ok=True)
    routes = options.data_dir / "routes.yaml"
    routes.write_text(
        ROUTES.substitute(source_domain=source.info["domain"], target_webhook=target.webhook_url, route=ROUTE)
    )
    settings = load_settings(
        data_dir=options.data_dir,
        database_url=None,  # never the operator's database: the embedded one in the demo's folder
        redis_url=None,
        environment="development",
        host=HOST,
        port=options.port,
        public_url=bridge_url,
        app_client_id=app["client_id"],
        app_client_secret=app["client_secret"],
        oauth_server=source.base_url,
        # The database starts empty on every run, so a key of the run's own is enough (and no key file to keep).
        encryption_keys="demo:" + crypto.new_key(),
        routes=routes,
        worker_in_process=True,
    )
    database = await stack.enter_async_context(Database(settings))
    await database.ping()
    await _empty(database)
    service = create_service(settings, database)
    await stack.enter_async_context(serving(service, [sock], "b24bridge", **server_options(settings.body_read_timeout)))
    return Stage(source, target, app["client_id"], RunLog(database.pool), bridge_url, routes)


async def _empty(database: Database) -> None:
    """Start from an empty database: the sandbox portals are new on every run, so an earlier run's id map and dedupe
    rows would point at deals that no longer exist. The service's migrations then build the schema again."""
    async with database.pool.connection() as conn:
        await conn.execute("DROP SCHEMA public CASCADE")
        await conn.execute("CREATE SCHEMA public")


async def _robots(source: SandboxPortal, token: str, wanted: set[str]) -> set[str]:
    """The robots registered in the portal once ``wanted`` are among them (as the application sees them)."""

    async def registered() -> set[str] | None:
        answer = await source.http.post(f"{source.base_url}/rest/bizproc.robot.list", json={"auth": token})
        codes = set(answer.json().get("result") or []) if answer.status_code == 200 else set()
        return codes if wanted <= codes else None

    return await eventually(registered, f"the install to register the robots {', '.join(sorted(wanted))}")


async def _automation(stage: Stage) -> int:
    """The bridge robot on two stages of the main funnel; the create-contact robot on a funnel of website requests
    whose deals carry the visitor's details in user fields. Returns that funnel's id."""
    source = stage.source
    funnel = await source.call("crm.category.add", {"entityTypeId": 2, "fields": {"name": "Website requests"}})
    category = int(funnel["category"]["id"])
    await asyncio.gather(*(
        source.call("crm.deal.userfield.add", {"fields": {"FIELD_NAME": key, "USER_TYPE_ID": "string"}})
        for key in REQUEST_FIELDS
    ))  # fmt: skip
    robot = {"client_id": stage.client_id, "timeout_duration": 120}
    for stage_id in (HANDOVER_STAGE, NEXT_STAGE):
        rule = {"stage_id": stage_id, "robot_code": BRIDGE_ROBOT.code, "properties": {"route": ROUTE}, **robot}
        await source.control("POST", "/automation/rules", rule)
    await source.control(
        "POST",
        "/automation/rules",
        {"stage_id": f"C{category}:NEW", "category_id": category, "robot_code": CREATE_CONTACT,
         "properties": CONTACT_PROPERTIES, **robot},
    )  # fmt: skip
    return category


async def _new_deal(
    portal: SandboxPortal, title: str, person: tuple[str, str, str, str], rows: list[tuple[str, float, int]]
) -> int:
    name, last_name, phone, email = person
    contact = {"NAME": name, "LAST_NAME": last_name, "PHONE": [{"VALUE": phone, "VALUE_TYPE": "WORK"}],
               "EMAIL": [{"VALUE": email, "VALUE_TYPE": "WORK"}]}  # fmt: skip
    contact_id = await portal.call("crm.contact.add", {"fields": contact})
    deal_id = int(await portal.call("crm.deal.add", {"fields": {"TITLE": title, "CONTACT_ID": contact_id}}))
    products = [{"PRODUCT_NAME": n, "PRICE": price, "QUANTITY": quantity} for n, price, quantity in rows]
    await portal.call("crm.deal.productrows.set", {"id": deal_id, "rows": products})
    return deal_id


async def _move(portal: SandboxPortal, deal_id: int, stage_id: str) -> list[str]:
    """Move the deal into ``stage_id``; the ids of the workflows its automation started."""
    moved = await portal.control("POST", f"/deals/{deal_id}/stage", {"stage_id": stage_id})
    return [str(workflow) for workflow in moved["workflows"]]


async def _answered_runs(runs: RunLog, workflow_ids: set[str]) -> dict[str, Run]:
    """The run of each workflow, once it is answered (the workflow may learn of it a moment before the log does)."""

    async def answered() -> dict[str, Run] | None:
        found = {run.workflow_id: run for run in await runs.list_runs(RunFilter(), limit=100) if run.workflow_id}
        done = {wf: run for wf, run in found.items() if wf in workflow_ids and run.answered_at is not None}
        return done if len(done) == len(workflow_ids) else None

    return await eventually(answered, f"the runs of {len(workflow_ids)} workflows to be answered")


async def _delivered(stage: Stage, deal_id: int, workflows: list[dict[str, Any]], runs: dict[str, Run]) -> Delivered:
    """The partner's deal and its counterpart as Acme's portal has it now (the last workflow names it)."""
    values = workflows[-1]["return_values"]
    target_id = int(values.get("target_deal_id") or 0)
    source_deal, deal, rows = await asyncio.gather(
        stage.source.call("crm.deal.get", {"id": deal_id}),
        stage.target.call("crm.deal.get", {"id": target_id}),
        stage.target.call("crm.deal.productrows.get", {"id": target_id}),
    )
    contact = await stage.target.call("crm.contact.get", {"id": deal["CONTACT_ID"]}) if deal.get("CONTACT_ID") else {}
    return Delivered(
        source_id=deal_id,
        source_title=source_deal["TITLE"],
        deal=deal,
        contact=contact,
        rows=rows,
        runs=[runs[workflow["id"]] for workflow in workflows],
        url=str(values.get("target_deal_url") or ""),
    )
