"""The ``b24bridge`` command line (the only module that knows typer).

Exit codes: 0 done; 1 nothing found (``show``) or a partial failure (``robots sync``); 2 invalid configuration or
arguments; 3 the environment refused (database unreachable or its schema outdated, port already in use).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime
import errno
import importlib
import json
import signal
import socket
import sys
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, NoReturn, TypeVar

import typer
from rich.console import Console

from b24bridge import __version__
from b24bridge.settings import Settings, SettingsError, load_settings

T = TypeVar("T")

app = typer.Typer(name="b24bridge", help="Self-hosted Bitrix24 integration service.", no_args_is_help=True)
db_app = typer.Typer(help="Database maintenance.", no_args_is_help=True)
app.add_typer(db_app, name="db")

err = Console(stderr=True)
EXIT_CONFIG = 2
EXIT_ENVIRONMENT = 3


class Plan(StrEnum):
    cloud = "cloud"
    enterprise = "enterprise"


class StartupError(Exception):
    """The environment refused something the command needs; the message is one line for the operator."""


def _fail(message: str, code: int = EXIT_CONFIG) -> NoReturn:
    # Plain output without rich markup: messages contain brackets (``auth[...]``) and are meant to be
    # copied into a shell or a ticket as they are.
    err.print(message, markup=False, highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def _settings(**overrides: Any) -> Settings:
    try:
        settings = load_settings(**overrides)
    except SettingsError as exc:
        _fail(str(exc))
    from b24bridge.observability import configure_logging

    configure_logging(settings.log_level, settings.log_format)
    return settings


def _encryption_keys(settings: Settings) -> None:
    # Checked before anything starts: portal tokens cannot be stored or read without a key (production needs one).
    from b24bridge.portals.crypto import keyring

    try:
        keyring(settings)
    except SettingsError as exc:  # KeyConfigError: one line naming B24BRIDGE_ENCRYPTION_KEYS
        _fail(str(exc))


def _routes(settings: Settings) -> Any:
    # A bad route file stops start-up with every problem, one line each, naming file, line and field.
    from b24bridge.bridge.routes import RoutesError
    from b24bridge.composition import route_file

    try:
        return route_file(settings)
    except RoutesError as exc:
        _fail(str(exc))


def _run(job: Coroutine[Any, Any, T]) -> T:
    """Run ``job`` to completion; what the environment refused becomes one line and exit code 3."""
    from b24bridge.composition import SchemaOutdated
    from b24bridge.db import DatabaseUnavailable

    try:
        return asyncio.run(job)
    except (StartupError, SchemaOutdated) as exc:
        _fail(str(exc), EXIT_ENVIRONMENT)
    except DatabaseUnavailable as exc:
        reason = " ".join(str(exc).split())  # libpq's message spans lines; the operator gets one
        _fail(f"B24BRIDGE_DATABASE_URL: the database cannot be reached ({reason})", EXIT_ENVIRONMENT)


def _stdout() -> Console:
    """Where results go (logs go to stderr). Piped into a file or another program, tables are not cut to a
    terminal's width: a wide virtual width keeps every column whole."""
    return Console() if sys.stdout.isatty() else Console(width=10_000)


def _emit(table: object, data: object, as_json: bool) -> None:
    """A table for people, or (``--json``) the same records as one JSON document for scripts."""
    if as_json:
        typer.echo(json.dumps(_plain(data), ensure_ascii=False, indent=1, default=str))
    else:
        _stdout().print(table)


def _plain(value: object) -> object:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {k: _plain(v) for k, v in dataclasses.asdict(value).items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return value


def _print_found(found: object | None, missing: str) -> None:
    """Print what a ``show`` command found; exit 1 with ``missing`` when there is nothing."""
    if found is None:
        _fail(missing, 1)
    _stdout().print(found)


JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON (for scripts) instead of a table")]


@asynccontextmanager
async def _reachable_database(settings: Settings) -> AsyncIterator[Any]:
    """The service's database, started (embedded) or checked (external) before anything else relies on it."""
    from b24bridge.db import Database

    async with Database(settings) as database:
        await database.ping()
        yield database


def _bind(host: str, port: int) -> socket.socket:
    """The listening socket, taken before anything else starts: a port in use fails fast and touches nothing."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP spelt out: asyncio turns Nagle off (TCP_NODELAY) only on connections whose socket says so, and
    # accepted connections inherit it. With proto 0 every answer on a kept-alive connection waited ~40 ms for the
    # client's delayed ACK (/healthz: 1,430 req/s instead of thousands).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        reason = "it is already in use" if exc.errno == errno.EADDRINUSE else exc.strerror
        _fail(f"B24BRIDGE_PORT: cannot listen on {host}:{port}: {reason}", EXIT_ENVIRONMENT)
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Listen address [default: B24BRIDGE_HOST]")] = None,
    port: Annotated[int | None, typer.Option(help="Listen port [default: B24BRIDGE_PORT]")] = None,
) -> None:
    """Run the HTTP service and an in-process job worker (applies database migrations first)."""
    overrides: dict[str, Any] = {}
    if host is not None:
        overrides["host"] = host
    if port is not None:
        overrides["port"] = port
    settings = _settings(**overrides)
    _encryption_keys(settings)
    _routes(settings)
    sock = _bind(settings.host, settings.port)

    import uvicorn

    from b24bridge.app import create_service
    from b24bridge.server import server_options

    async def run() -> None:
        async with _reachable_database(settings) as database:
            # log_config=None keeps uvicorn from replacing our handlers, so its logs are redacted JSON too.
            config = uvicorn.Config(
                create_service(settings, database),
                **server_options(settings.body_read_timeout),
                log_config=None,
                proxy_headers=True,
                forwarded_allow_ips=settings.forwarded_allow_ips,
            )
            server = uvicorn.Server(config)
            await server.serve(sockets=[sock])
            if not server.started:
                raise StartupError("the service did not start (see the log above)")

    try:
        _run(run())
    finally:
        sock.close()


@app.command()
def worker(
    concurrency: Annotated[
        int | None, typer.Option(help="Jobs run at once [default: B24BRIDGE_WORKER_CONCURRENCY]")
    ] = None,
) -> None:
    """Run job workers only (robot calls, deliveries), so a deployment can scale them apart from the API."""
    overrides: dict[str, Any] = {} if concurrency is None else {"worker_concurrency": concurrency}
    settings = _settings(**overrides)
    _encryption_keys(settings)
    _routes(settings)

    from b24bridge.composition import open_services

    async def run() -> None:
        async with _reachable_database(settings) as database, open_services(settings, database) as services:
            task = asyncio.current_task()
            assert task is not None
            loop = asyncio.get_running_loop()
            for signum in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(signum, task.cancel)
            from b24bridge import gauges

            _serve_metrics(settings.host, settings.metrics_port)
            sampler = asyncio.get_running_loop().create_task(gauges.sample_forever(services.database.pool))
            # Asked to stop: running jobs were given their graceful timeout and are retried if cut short.
            try:
                with contextlib.suppress(asyncio.CancelledError):
                    await services.worker("worker").run()
            finally:
                sampler.cancel()

    _run(run())


def _serve_metrics(host: str, port: int) -> None:
    """A worker's /metrics (its calls to portals are counted here, not in the API): a port already taken (another
    worker on this host) is said and skipped, the worker works on."""
    if not port:
        return
    from prometheus_client import start_http_server

    from b24bridge.observability import get_logger

    try:
        start_http_server(port, addr=host)
    except OSError as exc:
        get_logger(__name__).warning("worker metrics not served", port=port, error=exc.strerror)


@db_app.command("upgrade")
def db_upgrade(revision: Annotated[str, typer.Argument(help="Target revision")] = "head") -> None:
    """Apply database migrations (a no-op when the schema is current)."""
    settings = _settings()

    from b24bridge import migrations

    async def run() -> str | None:
        async with _reachable_database(settings) as database:
            await asyncio.to_thread(migrations.upgrade, database.url, revision)
            return await asyncio.to_thread(migrations.current_revision, database.url)

    typer.echo(f"database at revision {_run(run())}")


keys_app = typer.Typer(help="Encryption keys for portal tokens (B24BRIDGE_ENCRYPTION_KEYS).", no_args_is_help=True)
app.add_typer(keys_app, name="keys")


@keys_app.command("generate")
def keys_generate(kid: Annotated[str, typer.Option(help="The key's id, kept with what it encrypts")] = "k1") -> None:
    """Print a new key as B24BRIDGE_ENCRYPTION_KEYS takes it (kid:key). To rotate, put the new one first and keep
    the old ones after it: the first encrypts, every one decrypts."""
    from b24bridge.portals.crypto import KeyConfigError, new_key, parse_keys

    entry = f"{kid}:{new_key()}"
    try:
        parse_keys(entry)
    except KeyConfigError as exc:
        _fail(str(exc))
    typer.echo(entry)


@app.command()
def version() -> None:
    """Print the version."""
    typer.echo(__version__)


@app.command()
def sandbox(
    host: Annotated[str, typer.Option(help="Listen address")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Listen port")] = 8090,
    state: Annotated[Path | None, typer.Option(help="JSON file to load the portal from and save it to on exit")] = None,
    plan: Annotated[Plan, typer.Option(help="Bitrix24 plan whose limits are emulated")] = Plan.cloud,
    limits: Annotated[bool, typer.Option("--limits/--no-limits", help="Enforce rate and time limits")] = True,
    seed: Annotated[int, typer.Option(help="Random seed for generated data and faults")] = 0,
    portals: Annotated[
        int, typer.Option(min=1, max=20, help="Portals side by side on ports PORT.. sharing one OAuth server")
    ] = 1,
) -> None:
    """Run a local Bitrix24 emulator for development and tests."""
    server: Any = importlib.import_module("b24bridge.sandbox.server")
    server.run(host=host, port=port, state_path=state, plan=plan.value, limits=limits, seed=seed, portals=portals)


@app.command()
def demo(
    port: Annotated[int, typer.Option(help="b24bridge's listen port")] = 8000,
    sandbox_port: Annotated[int, typer.Option(help="The sandbox portals' ports: this one and the next")] = 8090,
    data_dir: Annotated[
        Path | None, typer.Option(help="Demo state (wiped on each run) [default: B24BRIDGE_DATA_DIR/demo]")
    ] = None,
    wait: Annotated[bool, typer.Option("--wait/--no-wait", help="Keep serving until Ctrl-C after the story")] = True,
) -> None:
    """Start two sandbox portals and b24bridge between them, hand a few deals over, create a contact by robot, and
    show what arrived (then keep running until Ctrl-C)."""
    settings = _settings(log_level="WARNING")  # the story is the output; warnings and errors still show
    from b24bridge import demo as story

    options = story.DemoOptions(data_dir or settings.data_dir / "demo", port, sandbox_port, wait)
    try:
        _run(story.run(options, Console(highlight=False)))
    except story.DemoError as exc:
        _fail(str(exc), EXIT_ENVIRONMENT)
    except KeyboardInterrupt:
        pass  # stopped by Ctrl-C, after everything was shut down


# --- read-only views: the database alone, no migrations -----------------------------------------------------------

Reader = Callable[[Any], Coroutine[Any, Any, T]]


def _read(read: Callable[[Any], Coroutine[Any, Any, T]]) -> T:
    """``read(database)`` on the service's database, opened for reading only (no migrations)."""
    settings = _settings()

    from b24bridge.composition import open_reader

    async def run() -> T:
        async with open_reader(settings) as database:
            return await read(database)

    return _run(run())


portals_app = typer.Typer(help="Portals that installed b24bridge.", no_args_is_help=True)
app.add_typer(portals_app, name="portals")


@portals_app.command("list")
def portals_list(
    status: Annotated[
        str | None, typer.Option(help="Only portals in this status (active, uninstalled, auth_lost)")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """List installed portals (no secrets are shown)."""
    from b24bridge.portals import repository, views

    async def read(database: Any) -> Any:
        async with database.pool.connection() as conn:
            return await repository.list_all(conn, status)

    rows = _read(read)
    _emit(views.portals_table(rows), [views.public(row) for row in rows], as_json)


@portals_app.command("show")
def portals_show(
    member_id: Annotated[str, typer.Argument(help="The portal's member_id")], as_json: JsonOption = False
) -> None:
    """Show one portal and its recent history (no secrets are shown)."""
    from b24bridge.portals import repository, views

    async def read(database: Any) -> Any:
        async with database.pool.connection() as conn:
            row = await repository.get(conn, member_id)
            return None if row is None else (row, await repository.events(conn, member_id))

    found = _read(read)
    if found is None:
        _fail(f"no portal {member_id}", 1)
    row, history = found
    _emit(views.portal_detail(row, history), {**views.public(row), "history": history}, as_json)


runs_app = typer.Typer(help="The run log: every robot call, its outbound calls and outcome.", no_args_is_help=True)
app.add_typer(runs_app, name="runs")


@runs_app.command("list")
def runs_list(
    portal: Annotated[str | None, typer.Option(help="Only runs of this portal (member_id)")] = None,
    status: Annotated[
        str | None,
        typer.Option(help="Only runs in this status (queued, running, succeeded, failed, uncertain, dead)"),
    ] = None,
    kind: Annotated[str | None, typer.Option(help="Only runs of this kind (robot, bridge)")] = None,
    route: Annotated[str | None, typer.Option(help="Only runs of this bridge route")] = None,
    limit: Annotated[int, typer.Option(help="At most this many, newest first")] = 50,
    as_json: JsonOption = False,
) -> None:
    """List runs (robot calls and bridge deliveries), newest first."""
    from b24bridge.runs import views
    from b24bridge.runs.schemas import STATUSES, RunFilter
    from b24bridge.runs.service import RunLog

    if status is not None and status not in STATUSES:
        _fail(f"--status must be one of {', '.join(STATUSES)}")

    async def read(database: Any) -> Any:
        where = RunFilter(member_id=portal, status=status, kind=kind, route=route)
        return await RunLog(database.pool).list_runs(where, limit)

    runs = _read(read)
    _emit(views.runs_table(runs), runs, as_json)


@runs_app.command("show")
def runs_show(run_id: Annotated[int, typer.Argument(help="The run's id")], as_json: JsonOption = False) -> None:
    """Show one run: inputs (without secrets), every outbound call, outcome and timestamps."""
    from b24bridge.runs import views
    from b24bridge.runs.service import RunLog

    async def read(database: Any) -> Any:
        return await RunLog(database.pool).show(run_id)

    found = _read(read)
    if found is None:
        _fail(f"no run {run_id}", 1)
    run, calls = found
    _emit(views.run_detail(run, calls), {**_plain(run), "calls": calls}, as_json)  # type: ignore[dict-item]


@runs_app.command("answer")
def runs_answer(run_ids: Annotated[list[int], typer.Argument(help="Ids of dead runs")]) -> None:
    """Answer dead robot runs again: each workflow gets the run's result (or its error) by a new job."""
    revived = _with_services(lambda services: services.replay(run_ids))
    skipped = sorted(set(run_ids) - set(revived))
    typer.echo(f"queued again: {', '.join(map(str, revived)) or 'none'}")
    if skipped:
        _fail(f"not dead (left alone): {', '.join(map(str, skipped))}", 1)


@runs_app.command("replay")
def runs_replay(
    run_ids: Annotated[list[int] | None, typer.Argument(help="Ids of dead runs")] = None,
    status: Annotated[str | None, typer.Option(help="Every run in this status: dead")] = None,
    route: Annotated[str | None, typer.Option(help="Only runs of this route")] = None,
    portal: Annotated[str | None, typer.Option(help="Only runs of this portal (member_id or domain key)")] = None,
    since: Annotated[
        datetime.datetime | None, typer.Option(help="Only runs created since (e.g. 2026-11-26 or 2026-11-26T10:00)")
    ] = None,
) -> None:
    """Take dead runs back in: robot runs are answered again, bridge runs delivered again (safe to repeat: only
    dead runs are taken, and a delivery finds what an earlier attempt wrote)."""
    from rich.progress import Progress

    from b24bridge.runs.schemas import RunFilter

    if bool(run_ids) == (status is not None):
        _fail("give run ids, or --status dead (with --route, --portal, --since to narrow it)")
    if status is not None and status != "dead":
        _fail("--status: only dead runs can be replayed")

    async def use(services: Any) -> tuple[list[int], list[int]]:
        wanted = list(run_ids or [])
        if not wanted:
            when = since.astimezone() if since is not None else None
            where = RunFilter(member_id=portal, status="dead", route=route, since=when)
            wanted = [run.id for run in await services.runs.list_runs(where, limit=1_000_000)]
        replayed: list[int] = []
        with Progress(console=err, transient=True) as progress:
            bar = progress.add_task("replaying", total=len(wanted))
            for start in range(0, len(wanted), 100):
                chunk = wanted[start : start + 100]
                replayed += await services.replay(chunk)
                progress.advance(bar, len(chunk))
        return wanted, replayed

    wanted, replayed = _with_services(use)
    typer.echo(f"replayed {len(replayed)} of {len(wanted)} run(s): {', '.join(map(str, replayed)) or 'none'}")
    skipped = sorted(set(wanted) - set(replayed))
    if skipped:
        _fail(f"not dead (left alone): {', '.join(map(str, skipped))}", 1)


# --- the bridge's routes ----------------------------------------------------------------------------------------

routes_app = typer.Typer(help="The bridge's routes (B24BRIDGE_ROUTES).", no_args_is_help=True)
app.add_typer(routes_app, name="routes")


@routes_app.command("check")
def routes_check() -> None:
    """Check the route file against both portals' real field and stage lists; print the hook URLs."""
    from b24bridge.bridge import views
    from b24bridge.bridge.check import check_routes, fetch_schema

    async def use(services: Any) -> tuple[list[str], Any]:
        schemas, problems = {}, []
        for name, ref in services.routes.portals.items():
            try:
                endpoint = await services.bridge_connections.open(ref)
                schemas[name] = await fetch_schema(endpoint.portal)
            except Exception as exc:  # a portal that cannot be reached is a finding, not a crash
                problems.append(f"{services.routes.path}:{ref.line}: portals.{name}: cannot read its fields ({exc})")
        return problems + check_routes(services.routes, schemas), services

    problems, services = _with_services(use)
    _stdout().print(views.hooks_table(services.routes, services.settings.public_url or "", services.keys))
    for problem in problems:
        typer.echo(problem)
    if problems:
        raise typer.Exit(1)
    typer.echo(f"{len(services.routes.routes)} route(s) OK")


# --- robots: talk to portals, so the full service (without migrations) ---------------------------------------------

robots_app = typer.Typer(help="Robots declared by b24bridge and registered in portals.", no_args_is_help=True)
app.add_typer(robots_app, name="robots")


def _with_services(use: Callable[[Any], Coroutine[Any, Any, T]]) -> T:
    settings = _settings()
    _encryption_keys(settings)
    _routes(settings)

    from b24bridge.composition import open_services

    async def run() -> T:
        async with (
            _reachable_database(settings) as database,
            open_services(settings, database, migrate=False) as services,
        ):
            return await use(services)

    return _run(run())


@robots_app.command("sync")
def robots_sync(
    portal: Annotated[str | None, typer.Option(help="Only this portal (member_id) [default: every active one]")] = None,
) -> None:
    """Register declared robots in portals: add missing, update changed, delete undeclared (idempotent)."""
    from b24bridge.robots import views

    reports = _with_services(lambda services: services.robot_sync.sync_all(portal))
    _stdout().print(views.sync_table(reports))
    if any(report.error is not None for report in reports):
        raise typer.Exit(1)


@robots_app.command("list")
def robots_list(
    portal: Annotated[str | None, typer.Option(help="Only this portal (member_id) [default: every active one]")] = None,
    as_json: JsonOption = False,
) -> None:
    """Declared robots versus those registered in each portal."""
    from b24bridge.robots import views

    states = _with_services(lambda services: services.robot_sync.states(portal))
    _emit(views.states_table(states), states, as_json)


def main() -> None:
    if sys.platform == "win32":
        # psycopg's async mode cannot run on Windows' default (proactor) event loop.
        asyncio.set_event_loop_policy(asyncio.WindowsSelectorEventLoopPolicy())
    try:
        app()
    except SettingsError as exc:  # raised outside a command, e.g. by a plugin; same contract
        err.print(str(exc), markup=False, highlight=False)
        sys.exit(EXIT_CONFIG)


if __name__ == "__main__":
    main()
