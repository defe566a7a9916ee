"""The control API under ``/_sandbox/``: not part of the Bitrix24 surface.

Tests and integrators use it to shape the portal (users, webhooks, applications, automation rules, limits,
faults, the clock) and to observe what it did (workflow outcomes, every call made to a handler).
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from .faults import FaultSpec
from .runtime import Sandbox
from .state import User, Webhook, token
from .wire import dumps

Endpoint = Callable[[Request], Awaitable[Response]]


class ControlError(Exception):
    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def reply(body: Any, status: int = 200) -> Response:
    return Response(dumps(body), status, media_type="application/json")


def portal(request: Request) -> Sandbox:
    sandbox: Sandbox = request.app.state.sandbox
    return sandbox


async def body_of(request: Request) -> dict[str, Any]:
    raw = await request.body()
    if not raw.strip():
        return {}
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise ControlError(f"body must be a JSON object: {exc}") from exc
    if not isinstance(data, dict):
        raise ControlError("body must be a JSON object")
    return data


def control(handler: Endpoint) -> Endpoint:
    """Turn ``ControlError`` and bad arguments into a 4xx with a readable message."""

    async def wrapped(request: Request) -> Response:
        try:
            return await handler(request)
        except ControlError as exc:
            return reply({"error": str(exc)}, exc.status)
        except (TypeError, ValueError, KeyError, ArithmeticError) as exc:
            return reply({"error": f"bad request: {exc}"}, 400)

    return wrapped


def webhook_view(sandbox: Sandbox, hook: Webhook) -> dict[str, Any]:
    return {**dataclasses.asdict(hook), "url": f"{sandbox.config.base_url}/rest/{hook.user_id}/{hook.code}/"}


@control
async def info(request: Request) -> Response:
    sandbox = portal(request)
    world = sandbox.world
    cfg = sandbox.config
    return reply(
        {
            "base_url": cfg.base_url,
            "domain": sandbox.domain,
            "member_id": world.member_id,
            "client_endpoint": sandbox.client_endpoint,
            "server_endpoint": sandbox.server_endpoint,
            "webhooks": [webhook_view(sandbox, h) for h in world.webhooks.values()],
            "apps": [dataclasses.asdict(a) for a in world.apps.values()],
            "users": [dataclasses.asdict(u) for u in world.users.values()],
            "counters": dict(world.counters),
            "config": {
                "plan": cfg.plan,
                "limits_enabled": sandbox.limiter.enabled,
                "burst": sandbox.limiter.burst,
                "drain_per_second": sandbox.limiter.drain,
                "operating_limit": sandbox.limiter.operating_limit,
                "operating_window": sandbox.limiter.operating_window,
                "method_costs": cfg.method_costs,
                "access_token_ttl": cfg.access_token_ttl,
                "auth_code_ttl": cfg.auth_code_ttl,
            },
        }
    )


@control
async def cloud(request: Request) -> Response:
    """The portals sharing this portal's OAuth server (itself included, marked ``this``)."""
    sandbox = portal(request)
    portals = [
        {
            "base_url": p.config.base_url,
            "domain": p.domain,
            "member_id": p.world.member_id,
            "client_endpoint": p.client_endpoint,
            "this": p is sandbox,
        }
        for p in sandbox.cloud
    ]
    return reply({"portals": portals})


@control
async def reset(request: Request) -> Response:
    sandbox = portal(request)
    await sandbox.drain()
    sandbox.reset()
    sandbox.bootstrap()
    return await info(request)


@control
async def configure(request: Request) -> Response:
    """Change limits and lifetimes of a running portal; only the keys given change, and nothing on a 400."""
    sandbox = portal(request)
    data = await body_of(request)
    cfg, limiter = sandbox.config, sandbox.limiter
    staged = dataclasses.replace(cfg, method_costs=dict(cfg.method_costs))
    if "plan" in data:
        if data["plan"] not in ("cloud", "enterprise"):
            raise ControlError("plan must be cloud or enterprise")
        staged.plan = data["plan"]
        staged.burst = staged.drain_per_second = None
    for key in ("burst", "drain_per_second", "operating_limit", "operating_window"):
        if key in data:
            if _number(data, key) <= 0:
                raise ControlError(f"{key} must be positive")
            setattr(staged, key, int(data[key]) if key == "burst" else float(data[key]))
    for key in ("access_token_ttl", "auth_code_ttl", "refresh_token_ttl"):
        if key in data:
            if _number(data, key) < 1:
                raise ControlError(f"{key} must be at least 1 second")
            setattr(staged, key, int(data[key]))
    if "handler_timeout" in data:
        staged.handler_timeout = _number(data, "handler_timeout")
    if "method_costs" in data:
        costs = data["method_costs"]
        if not isinstance(costs, dict):
            raise ControlError("method_costs must be a map of method name to seconds")
        staged.method_costs = {str(k).lower(): _number(costs, k) for k in costs}
    if "limits_enabled" in data:
        if not isinstance(data["limits_enabled"], bool):
            raise ControlError("limits_enabled must be true or false")
        staged.limits_enabled = data["limits_enabled"]
    for f in dataclasses.fields(staged):
        setattr(cfg, f.name, getattr(staged, f.name))
    limiter.enabled = cfg.limits_enabled
    limiter.burst, limiter.drain = cfg.bucket_burst, cfg.bucket_drain
    limiter.operating_limit, limiter.operating_window = cfg.operating_limit, cfg.operating_window
    limiter.reset()
    return await info(request)


def _number(data: dict[str, Any], key: str) -> float:
    value = data[key]
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ControlError(f"{key} must be a finite number, got {value!r}")
    return float(value)


@control
async def limits_state(request: Request) -> Response:
    sandbox = portal(request)
    now = sandbox.now()
    limiter = sandbox.limiter
    return reply(
        {
            "enabled": limiter.enabled,
            "refused_requests": limiter.refused_requests,
            "admitted_requests": limiter.admitted_requests,
            "refused_operating": limiter.refused_operating,
            "buckets": {
                ip: {"level": max(0.0, b.level - (now - b.updated) * b.drain), "burst": b.burst}
                for ip, b in limiter.buckets.items()
            },
            "operating": [
                {"caller": caller, "method": method, "used": b.used(), "reset_at": b.reset_at()}
                for (caller, method), b in limiter.budgets.items()
            ],
        }
    )


@control
async def crm_counts(request: Request) -> Response:
    """How many records of each CRM entity the portal holds: what was really created, free of any limit."""
    crm = portal(request).world.crm
    return reply({"counts": {entity: len(records) for entity, records in crm.items()}})


@control
async def create_user(request: Request) -> Response:
    sandbox = portal(request)
    data = await body_of(request)
    user = User(
        sandbox.world.next_id("user_extra") + 100,
        str(data.get("name", "User")),
        str(data.get("last_name", "")),
        str(data.get("email", "")),
        admin=bool(data.get("admin", False)),
        active=bool(data.get("active", True)),
    )
    sandbox.world.users[user.id] = user
    return reply(dataclasses.asdict(user), 201)


@control
async def create_webhook(request: Request) -> Response:
    sandbox = portal(request)
    data = await body_of(request)
    user_id = int(data.get("user_id", 1))
    if user_id not in sandbox.world.users:
        raise ControlError(f"no user {user_id}")
    scopes = data.get("scopes", ["crm", "user"])
    if not isinstance(scopes, list) or not all(isinstance(s, str) for s in scopes):
        raise ControlError("scopes must be a list of strings")
    expires = data.get("expires_at")
    hook = Webhook(
        sandbox.world.next_id("webhook"),
        user_id,
        token()[:16],
        scopes,
        None if expires is None else float(expires),
        str(data.get("name", "")),
    )
    sandbox.world.webhooks[hook.id] = hook
    return reply(webhook_view(sandbox, hook), 201)


@control
async def faults(request: Request) -> Response:
    sandbox = portal(request)
    if request.method == "POST":
        data = await body_of(request)
        seed = data.pop("seed", None)
        fields = {f.name for f in dataclasses.fields(FaultSpec)}
        unknown = sorted(set(data) - fields)
        if unknown:
            raise ControlError(f"unknown fault settings {unknown}; allowed: {sorted(fields)}")
        spec = FaultSpec(**data)
        if spec.outage_start is None and "outage_seconds" in request.query_params:
            spec.outage_start = sandbox.now()
            spec.outage_end = sandbox.now() + float(request.query_params["outage_seconds"])
        sandbox.faults.configure(spec, None if seed is None else int(seed))
    elif request.method == "DELETE":
        sandbox.faults.reset()
    return reply(sandbox.faults.describe())


@control
async def expire_tokens(request: Request) -> Response:
    """Force access tokens to expire now: all, one app's, or one token."""
    sandbox = portal(request)
    data = await body_of(request)
    now = sandbox.now()
    count = 0
    for record in sandbox.world.access_tokens.values():
        if data.get("access_token") not in (None, record.token):
            continue
        if data.get("client_id") not in (None, record.client_id):
            continue
        record.expires_at = min(record.expires_at, now)
        count += 1
    return reply({"expired": count})


@control
async def clock(request: Request) -> Response:
    sandbox = portal(request)
    data = await body_of(request)
    sandbox.clock_offset += _number({"advance": 0, **data}, "advance")
    return reply({"now": sandbox.now(), "offset": sandbox.clock_offset})


@control
async def handler_calls(request: Request) -> Response:
    sandbox = portal(request)
    if request.query_params.get("settle") not in (None, "0", "false"):
        await sandbox.drain()
    kind = request.query_params.get("kind")
    calls = [c for c in sandbox.world.handler_calls if kind is None or c["kind"] == kind]
    return reply({"calls": calls, "total": len(calls)})


@control
async def settle(request: Request) -> Response:
    """Wait until every call to a handler in flight has finished."""
    await portal(request).drain()
    return reply({"settled": True})


@control
async def save_state(request: Request) -> Response:
    sandbox = portal(request)
    if sandbox.config.state_path is None:
        raise ControlError("the sandbox was started without --state")
    sandbox.save()
    return reply({"saved": str(sandbox.config.state_path)})


routes: list[BaseRoute] = [
    Route("/_sandbox/", info, methods=["GET"]),
    Route("/_sandbox/cloud", cloud, methods=["GET"]),
    Route("/_sandbox/reset", reset, methods=["POST"]),
    Route("/_sandbox/config", configure, methods=["POST"]),
    Route("/_sandbox/limits", limits_state, methods=["GET"]),
    Route("/_sandbox/crm/counts", crm_counts, methods=["GET"]),
    Route("/_sandbox/users", create_user, methods=["POST"]),
    Route("/_sandbox/webhooks", create_webhook, methods=["POST"]),
    Route("/_sandbox/faults", faults, methods=["GET", "POST", "DELETE"]),
    Route("/_sandbox/tokens/expire", expire_tokens, methods=["POST"]),
    Route("/_sandbox/clock", clock, methods=["POST"]),
    Route("/_sandbox/handler-calls", handler_calls, methods=["GET"]),
    Route("/_sandbox/settle", settle, methods=["POST"]),
    Route("/_sandbox/state/save", save_state, methods=["POST"]),
]
