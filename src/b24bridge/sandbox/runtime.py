"""One running sandbox portal: its world, limits, faults and the side effects it sends out."""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any, Literal

import httpx

from .config import SandboxConfig
from .faults import FaultInjector
from .limits import Limiter
from .state import Application, Webhook, World, seed_world, token
from .wire import parse_tz

log = logging.getLogger("b24bridge.sandbox")

ALL_SCOPES = ["crm", "bizproc", "user", "placement", "im", "task"]
DEFAULT_APP_ID = "local.sandbox00000001.00000001"

CrmAction = Literal["ADD", "UPDATE", "DELETE"]
# (sandbox, entity "DEAL"/"CONTACT"/"COMPANY"/"LEAD", action, id, record before, record after); a listener that also
# takes the keyword ``actor_user_id`` is told who made the change (None: automation, a workflow, the system).
CrmListener = Callable[..., None]


def _takes_actor(listener: CrmListener) -> bool:
    try:
        params = inspect.signature(listener).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.name == "actor_user_id" or p.kind is inspect.Parameter.VAR_KEYWORD for p in params)


class Sandbox:
    def __init__(self, config: SandboxConfig, world: World | None = None) -> None:
        self.config = config
        # What ``reset`` returns to: the configuration the portal was started with.
        self._initial_config = dataclasses.replace(config, method_costs=dict(config.method_costs))
        if world is None and config.state_path is not None and config.state_path.exists():
            world = World.load(config.state_path)
        self.world = world or World()
        seed_world(self.world)
        self.tz = parse_tz(config.timezone)
        self.limiter = Limiter(
            burst=config.bucket_burst,
            drain=config.bucket_drain,
            operating_limit=config.operating_limit,
            operating_window=config.operating_window,
            enabled=config.limits_enabled,
        )
        self.faults = FaultInjector(seed=config.seed)
        self._tasks: set[asyncio.Task[Any]] = set()
        self._http: httpx.AsyncClient | None = None
        self.clock_offset = 0.0
        # Events and automation subscribe here; CRM methods report every change they make.
        self.crm_listeners: list[CrmListener] = []
        # The portals sharing this portal's OAuth server, itself included (``cloud.Cloud`` links several).
        self.cloud: list[Sandbox] = [self]

    def crm_changed(
        self,
        entity: str,
        action: CrmAction,
        record_id: int,
        before: dict[str, Any] | None,
        after: dict[str, Any] | None,
        *,
        actor_user_id: int | None = None,
    ) -> None:
        """Report a CRM change to every listener.

        ``actor_user_id`` is the user whose hit made the change (the REST caller, a user dragging a deal); None when
        no user can be tied to it (automation, a workflow, the system), so events go out without tokens (REFERENCE 7.2).
        Listeners written with the six positional parameters only keep working; they are not told the actor.
        """
        for listener in self.crm_listeners:
            if _takes_actor(listener):
                listener(self, entity, action, record_id, before, after, actor_user_id=actor_user_id)
            else:
                listener(self, entity, action, record_id, before, after)

    # Time can be moved forward by the control API so that tests need not sleep through token lifetimes.
    def now(self) -> float:
        return time.time() + self.clock_offset

    @property
    def domain(self) -> str:
        return self.config.base_url.split("://", 1)[1]

    @property
    def client_endpoint(self) -> str:
        return f"{self.config.base_url}/rest/"

    @property
    def server_endpoint(self) -> str:
        """The OAuth server's REST (real: ``https://oauth.bitrix.info/rest/``); the sandbox serves it itself."""
        return f"{self.config.base_url}/oauth/rest/"

    @property
    def http(self) -> httpx.AsyncClient:
        """Outbound client for calls to handlers; the portal's queue server does not follow redirects."""
        if self._http is None:
            self._http = httpx.AsyncClient(timeout=self.config.handler_timeout, follow_redirects=False)
        return self._http

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def drain(self) -> None:
        """Wait for every outbound call in flight (tests use this to observe a settled world)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    def reset(self) -> None:
        self.world = World()
        seed_world(self.world)
        self.restore_config()
        self.limiter.reset()
        self.faults.reset()
        self.clock_offset = 0.0

    def restore_config(self) -> None:
        """Undo runtime configuration changes (``POST /_sandbox/config``): limits, costs, lifetimes."""
        for f in dataclasses.fields(self._initial_config):
            value = getattr(self._initial_config, f.name)
            setattr(self.config, f.name, dict(value) if isinstance(value, dict) else value)
        limiter, cfg = self.limiter, self.config
        limiter.enabled = cfg.limits_enabled
        limiter.burst, limiter.drain = cfg.bucket_burst, cfg.bucket_drain
        limiter.operating_limit, limiter.operating_window = cfg.operating_limit, cfg.operating_window

    def bootstrap(self) -> tuple[Webhook, Application]:
        """Give a fresh portal its incoming webhook and its pre-registered local application."""
        world = self.world
        hook = next(iter(world.webhooks.values()), None)
        if hook is None:
            hook = Webhook(world.next_id("webhook"), 1, token()[:16], list(ALL_SCOPES), name="sandbox")
            world.webhooks[hook.id] = hook
        app = world.apps.get(DEFAULT_APP_ID)
        if app is None:
            app = Application(DEFAULT_APP_ID, token() + token()[:18], "Sandbox local application")
            app.scopes = ["crm", "bizproc", "user", "placement"]
            world.apps[app.client_id] = app
        return hook, app

    def save(self) -> None:
        if self.config.state_path is not None:
            self.world.save(self.config.state_path)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*list(self._tasks), return_exceptions=True)
        if self._http is not None:
            await self._http.aclose()
        self.save()
