"""The composition root: the one place that builds what a process runs on and wires it together.

``serve`` (through :func:`b24bridge.app.create_app`), ``worker`` and the CLI open :func:`open_services`; read-only
commands open :func:`open_reader` (the database only, no migrations). Everything below receives what it needs as
arguments: HTTP handlers through FastAPI dependencies fed from the lifespan state (:meth:`Services.web_state`), jobs
through procrastinate's job context (:meth:`Services.job_context`), services and repositories as constructor and
function arguments. Hooks between domains (after an installation, register the robots) are wired here too.

A new domain (the bridge) plugs in here: build its services from the ones below, add its routes to the app, its
blueprint to :func:`b24bridge.jobs.build_app` and its entries to ``web_state``/``job_context``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import procrastinate
from psycopg_pool import AsyncConnectionPool
from redis.asyncio import Redis

from b24bridge import gauges, jobs, lanes, migrations
from b24bridge.admin.access import AdminGate
from b24bridge.admin.service import AdminService
from b24bridge.bitrix import BatchSettings, BitrixClient, RetryPolicy
from b24bridge.bitrix.redis_state import RedisLimiter, RedisRefreshLock
from b24bridge.bridge import tasks as bridge_tasks
from b24bridge.bridge.connections import Connections
from b24bridge.bridge.dedupe import Dedupe
from b24bridge.bridge.delivery import Deliverer
from b24bridge.bridge.inbound import InboundService
from b24bridge.bridge.intake import BridgeIntake, run_lock
from b24bridge.bridge.kinds import ProcessTypes
from b24bridge.bridge.receivers import AddressPolicy, ReceiverClient, parse_networks
from b24bridge.bridge.robot import BRIDGE_ROBOT
from b24bridge.bridge.route_model import RouteFile
from b24bridge.bridge.routes import load_routes
from b24bridge.bridge.runner import BridgeRunner
from b24bridge.bridge.status import StatusBackRunner
from b24bridge.bridge.users import UserDirectory
from b24bridge.db import Database
from b24bridge.intake.committer import GroupCommit
from b24bridge.intake.service import Intake
from b24bridge.intake.spool import Spool
from b24bridge.portals import crypto
from b24bridge.portals.directory import UNKNOWN, PortalDirectory
from b24bridge.portals.guard import InstallGuard
from b24bridge.portals.install import INSTALL_RECORD, UNINSTALL_RECORD, Installer
from b24bridge.portals.oauth import OAuthFlow, PortalDomains
from b24bridge.portals.refresh_lock import DatabaseRefreshLock
from b24bridge.portals.schemas import AppCredentials, Check
from b24bridge.portals.service import PortalRegistry
from b24bridge.robots import tasks as robot_tasks
from b24bridge.robots.definitions import declared
from b24bridge.robots.intake import RobotIntake
from b24bridge.robots.runner import RobotRunner
from b24bridge.robots.sync import RobotSync
from b24bridge.runs.schemas import RetrySchedule
from b24bridge.runs.service import RunLog
from b24bridge.settings import Settings, parse_rate


class SchemaOutdated(Exception):
    """The database is not at the schema this version needs; the message says what to run."""


@dataclass
class Services:
    settings: Settings
    database: Database
    job_app: procrastinate.App
    bitrix: BitrixClient
    redis: Redis | None
    keys: crypto.Keyring
    portals: PortalRegistry
    installer: Installer
    oauth: OAuthFlow
    runs: RunLog
    robot_intake: RobotIntake
    robot_runner: RobotRunner
    robot_sync: RobotSync
    routes: RouteFile
    bridge_connections: Connections
    bridge_intake: BridgeIntake
    bridge_runner: BridgeRunner
    directory: PortalDirectory
    intake: Intake

    def web_state(self) -> dict[str, Any]:
        """What HTTP handlers may depend on, by the names their ``endpoints`` modules read."""
        return {
            "database": self.database,
            "portal_registry": self.portals,
            "portal_directory": self.directory,
            "installer": self.installer,
            "oauth_flow": self.oauth,
            "robot_intake": self.robot_intake,
            "bridge_intake": self.bridge_intake,
            "bridge_inbound": InboundService(self.routes, self.bridge_intake, self.runs),
            "admin": AdminService(
                self.portals,
                self.runs,
                self.routes,
                self.robot_sync,
                self.bridge_connections,
                self.bitrix.limiter,
                self.replay,
            ),
            "admin_gate": AdminGate(self.settings, self.keys),
            "event_handlers": {
                "ONCRMDEALADD": self.bridge_intake.on_deal_event,
                "ONCRMDEALUPDATE": self.bridge_intake.on_deal_event,
                "ONCRMLEADADD": self.bridge_intake.on_deal_event,
                "ONCRMLEADUPDATE": self.bridge_intake.on_deal_event,
                "ONCRMDYNAMICITEMADD": self.bridge_intake.on_deal_event,
                "ONCRMDYNAMICITEMUPDATE": self.bridge_intake.on_deal_event,
            },
        }

    def job_context(self) -> dict[str, Any]:
        """What jobs may depend on, by the keys their ``tasks`` modules read."""
        return {robot_tasks.RUNNER: self.robot_runner, bridge_tasks.RUNNER: self.bridge_runner}

    async def replay(self, run_ids: list[int]) -> list[int]:
        """Take dead runs back in (robots: answered again; the bridge: delivered again), each with a new job in the
        same transaction; the ids that were dead, others are left alone. Safe by construction: only a dead run is
        revived, and a delivery finds what an earlier attempt wrote (the id map, ORIGIN_ID)."""
        async with self.database.pool.connection() as conn, conn.transaction():
            revived = await self.runs.revive(conn, run_ids)
            await lanes.defer(
                conn,
                [
                    bridge_tasks.job(
                        run.id,
                        run.member_id,
                        lock=run_lock(run.member_id, run.document_id, int(run.inputs.get("deal_id") or 0)),
                    )
                    if run.kind == "bridge"
                    else robot_tasks.job(run.id, run.member_id)
                    for run in revived
                ],
            )
        return [run.id for run in revived]

    async def run_door(self) -> None:
        """What an API process keeps doing beside requests: the portal directory current, the spool drained."""
        await asyncio.gather(self.directory.run(), self.intake.drain_forever())

    def worker(self, name: str, concurrency: int | None = None) -> jobs.SupervisedWorker:
        return jobs.SupervisedWorker(
            self.job_app,
            concurrency=concurrency or self.settings.worker_concurrency,
            name=name,
            context=self.job_context(),
        )


def open_intake(
    settings: Settings, pool: AsyncConnectionPool, keys: crypto.Keyring, directory: PortalDirectory
) -> Intake:
    """The door's intake: group commit into the database, the spool in the data folder when it is away."""
    spool = Spool(
        settings.data_dir / "spool",
        max_bytes=settings.spool_max_mb * 1024 * 1024,
        seal=lambda data: keys.encrypt(data.decode(), SPOOL_CONTEXT).encode(),
        unseal=lambda blob: _unsealed(keys, blob),
    )

    async def verify(check: Check) -> bool:
        return await directory.check(check.member_id, check.application_token) not in (None, UNKNOWN)

    async def probe() -> None:
        async with pool.connection(timeout=1.0) as conn:
            await conn.execute("SELECT 1")

    return Intake(GroupCommit(pool), spool, verify=verify, probe=probe)


SPOOL_CONTEXT = "spool"


def _unsealed(keys: crypto.Keyring, blob: bytes) -> bytes:
    try:
        return keys.decrypt(blob.decode(), SPOOL_CONTEXT).encode()
    except (crypto.DecryptError, UnicodeDecodeError) as exc:
        raise ValueError(str(exc)) from None


def route_file(settings: Settings) -> RouteFile:
    """The bridge's routes: none when the file is absent at the default place; raises ``RoutesError`` (every problem,
    one line each, naming file and line) for a bad one, so a bad file stops start-up."""
    if not settings.routes.exists() and "routes" not in settings.model_fields_set:
        return RouteFile(path=str(settings.routes), portals={}, routes={})
    return load_routes(settings.routes)


@asynccontextmanager
async def open_receivers(settings: Settings) -> AsyncIterator[ReceiverClient]:
    """The client of routes' HTTPS endpoints: its own connection pool (never a portal's), no redirects followed."""
    timeout = httpx.Timeout(settings.endpoint_timeout, connect=min(5.0, settings.endpoint_timeout))
    limits = httpx.Limits(max_connections=50, max_keepalive_connections=50)
    async with httpx.AsyncClient(timeout=timeout, limits=limits, follow_redirects=False, trust_env=False) as http:
        yield ReceiverClient(http, AddressPolicy(parse_networks(settings.endpoint_allow_networks)))


def open_redis(url: str) -> Redis:
    """A client that gives up within a second: a Redis that does not answer must cost the hot path a short
    timeout (then the fallback), never a hang."""
    return Redis.from_url(url, socket_connect_timeout=1.0, socket_timeout=1.0)


def app_credentials(settings: Settings) -> AppCredentials | None:
    if not settings.app_client_id or settings.app_client_secret is None:
        return None
    return AppCredentials(settings.app_client_id, settings.app_client_secret.get_secret_value(), settings.oauth_server)


def install_guard(settings: Settings) -> InstallGuard:
    return InstallGuard(parse_rate(settings.install_limit_per_address), parse_rate(settings.install_limit_per_portal))


def portal_domains(settings: Settings) -> PortalDomains:
    # The local sandbox is a portal on loopback, spoken to over http: development only.
    return PortalDomains(settings.portal_domain_patterns, loopback=settings.environment == "development")


@asynccontextmanager
async def _database(settings: Settings, database: Database | None, **pool: int) -> AsyncIterator[Database]:
    """The given database as it is, or one of our own, started here (and checked to answer) and stopped after."""
    if database is not None:
        yield database
        return
    async with Database(settings, **pool) as own:
        await own.ping()
        yield own


async def check_schema(database: Database) -> None:
    current = await asyncio.to_thread(migrations.current_revision, database.url)
    head = migrations.head_revision()
    if current != head:
        raise SchemaOutdated(
            f"the database schema is at revision {current or 'none'}, this b24bridge needs {head}: "
            "run `b24bridge db upgrade` (or start `b24bridge serve`, which upgrades it)"
        )


@asynccontextmanager
async def open_reader(settings: Settings) -> AsyncIterator[Database]:
    """The database alone, for commands that only read: no migrations, no clients, a small pool."""
    async with _database(settings, None, min_size=0, max_size=2) as database:
        await check_schema(database)
        yield database


@asynccontextmanager
async def open_services(
    settings: Settings, database: Database | None = None, *, migrate: bool = True
) -> AsyncIterator[Services]:
    """Start what the service needs (the database unless one is given, migrations, clients) and stop it after."""
    keys = crypto.keyring(settings)
    routes = route_file(settings)
    async with AsyncExitStack() as stack:
        database = await stack.enter_async_context(_database(settings, database))
        if migrate:
            await asyncio.to_thread(migrations.upgrade, database.url)
        else:
            await check_schema(database)
        redis: Redis | None = None
        refresh_lock = DatabaseRefreshLock(database.pool)
        bitrix_options: dict[str, Any] = {"refresh_lock": refresh_lock}
        if settings.redis_url:
            redis = open_redis(settings.redis_url)
            stack.push_async_callback(redis.aclose)
            bitrix_options = {
                "limiter": RedisLimiter(redis, sharers=gauges.workers_alive),
                "refresh_lock": RedisRefreshLock(redis, fallback=refresh_lock),
            }
        # Each portal's lane, as this process's worker counts it: the client keeps requests full for a portal with
        # jobs queued (b24bridge.bitrix.batching).
        backlog = lanes.LaneBacklog()
        bitrix = BitrixClient(
            batching=BatchSettings(enabled=settings.bitrix_autobatch),
            retry=RetryPolicy(max_attempts=settings.bitrix_retry_attempts),
            backlog=backlog.of,
            **bitrix_options,
        )
        stack.push_async_callback(bitrix.aclose)
        job_app = jobs.build_app(database, settings.worker_portal_slots, workers=gauges.workers_alive, backlog=backlog)
        await stack.enter_async_context(job_app.open_async())

        pool, app = database.pool, app_credentials(settings)
        robots = declared()
        if any(route.triggers.robot for route in routes.routes.values()):
            robots[BRIDGE_ROBOT.code] = BRIDGE_ROBOT
        portals = PortalRegistry(pool, keys, bitrix, app)
        directory = PortalDirectory(database.url, pool, keys)
        runs = RunLog(pool)
        schedule = RetrySchedule(settings.retry_delays)
        connections = Connections(portals, directory, bitrix)
        intake = open_intake(settings, pool, keys, directory)
        stack.callback(intake.spool.close)
        committer = intake.committer
        stack.push_async_callback(committer.aclose)
        deliverer = Deliverer(
            pool,
            UserDirectory(),
            Dedupe(pool, redis, settings.bridge_dedupe_window),
            await stack.enter_async_context(open_receivers(settings)),
        )
        robot_sync = RobotSync(pool, portals, robots, settings.public_url)
        bridge_intake = BridgeIntake(routes, portals, connections, intake, keys, settings.public_url)
        installer = Installer(
            pool,
            keys,
            portals,
            bitrix.http,
            app,
            settings.public_url,
            after_install=[robot_sync.on_portal_installed, bridge_intake.bind_events],
            guard=install_guard(settings),
            directory=directory,
            keep=intake.keep,
        )
        intake.handle(INSTALL_RECORD, installer.apply_kept_install)
        intake.handle(UNINSTALL_RECORD, installer.apply_kept_uninstall)
        stack.push_async_callback(installer.wait_idle)
        yield Services(
            settings=settings,
            database=database,
            job_app=job_app,
            bitrix=bitrix,
            redis=redis,
            keys=keys,
            portals=portals,
            installer=installer,
            oauth=OAuthFlow(pool, keys, app, installer, portal_domains(settings)),
            runs=runs,
            robot_intake=RobotIntake(directory, intake, robots),
            robot_runner=RobotRunner(portals, runs, robots, schedule),
            robot_sync=robot_sync,
            routes=routes,
            bridge_connections=connections,
            bridge_intake=bridge_intake,
            bridge_runner=BridgeRunner(
                routes, connections, deliverer, StatusBackRunner(pool), runs, schedule, ProcessTypes()
            ),
            directory=directory,
            intake=intake,
        )
