"""The ``b24bridge`` command line."""

from __future__ import annotations

import asyncio
import importlib
import sys
from collections.abc import Callable, Coroutine
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


class Plan(StrEnum):
    cloud = "cloud"
    enterprise = "enterprise"


def _fail(message: str, code: int = 2) -> NoReturn:
    # Plain output without rich markup: messages contain brackets (``auth[...]``) and are meant to be
    # copied into a shell or a ticket as they are.
    err.print(message, markup=False, highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def _settings(**overrides: Any) -> Settings:
    try:
        return load_settings(**overrides)
    except SettingsError as exc:
        _fail(str(exc))


def _logging(settings: Settings) -> None:
    from b24bridge.observability import configure_logging

    configure_logging(settings.log_level, settings.log_format)


def _run(job: Callable[[Settings], Coroutine[Any, Any, T]]) -> T:
    """Load the settings, set up logging, and run ``job(settings)`` to completion."""
    settings = _settings()
    _logging(settings)
    return asyncio.run(job(settings))


def _print_found(found: object | None, missing: str) -> None:
    """Print what a ``show`` command found; exit 1 with ``missing`` when there is nothing."""
    if found is None:
        _fail(missing, 1)
    Console().print(found)


def _encryption_keys(settings: Settings) -> None:
    # Checked before anything starts: portal tokens cannot be stored or read without a key (production needs one).
    from b24bridge.portals.crypto import keyring

    try:
        keyring(settings)
    except SettingsError as exc:  # KeyConfigError: one line naming B24BRIDGE_ENCRYPTION_KEYS
        _fail(str(exc))


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Listen address [default: B24BRIDGE_HOST]")] = None,
    port: Annotated[int | None, typer.Option(help="Listen port [default: B24BRIDGE_PORT]")] = None,
) -> None:
    """Run the HTTP service (applies database migrations first)."""
    overrides: dict[str, Any] = {}
    if host is not None:
        overrides["host"] = host
    if port is not None:
        overrides["port"] = port
    settings = _settings(**overrides)
    _logging(settings)
    _encryption_keys(settings)

    import uvicorn

    from b24bridge.app import create_app

    # log_config=None keeps uvicorn from replacing our handlers, so its logs are redacted JSON too.
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_config=None,
        proxy_headers=True,
        forwarded_allow_ips="127.0.0.1",
    )


@app.command()
def worker(
    concurrency: Annotated[
        int | None, typer.Option(help="Jobs run at once [default: B24BRIDGE_WORKER_CONCURRENCY]")
    ] = None,
) -> None:
    """Run job workers only (robot calls, deliveries), so a deployment can scale them apart from the API."""
    overrides: dict[str, Any] = {} if concurrency is None else {"worker_concurrency": concurrency}
    settings = _settings(**overrides)
    _logging(settings)
    _encryption_keys(settings)

    from b24bridge.context import open_context

    async def run() -> None:
        async with open_context(settings) as context:
            await context.jobs.run_worker_async(concurrency=settings.worker_concurrency, name="worker")

    asyncio.run(run())


@db_app.command("upgrade")
def db_upgrade(
    revision: Annotated[str, typer.Argument(help="Target revision")] = "head",
) -> None:
    """Apply database migrations (a no-op when the schema is current)."""
    settings = _settings()
    _logging(settings)

    from b24bridge import migrations
    from b24bridge.db import Database

    async def run() -> str | None:
        async with Database(settings, min_size=0, max_size=1) as database:
            await asyncio.to_thread(migrations.upgrade, database.url, revision)
            return await asyncio.to_thread(migrations.current_revision, database.url)

    current = asyncio.run(run())
    typer.echo(f"database at revision {current}")


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
) -> None:
    """Run a local Bitrix24 emulator for development and tests."""
    server: Any = importlib.import_module("b24bridge.sandbox.server")
    server.run(host=host, port=port, state_path=state, plan=plan.value, limits=limits, seed=seed)


# --- portals ------------------------------------------------------------------------------------------------------

portals_app = typer.Typer(help="Portals that installed b24bridge.", no_args_is_help=True)
app.add_typer(portals_app, name="portals")


@portals_app.command("list")
def portals_list(
    status: Annotated[
        str | None, typer.Option(help="Only portals in this status (active, uninstalled, auth_lost)")
    ] = None,
) -> None:
    """List installed portals (no secrets are shown)."""
    from b24bridge.portals import cli as portals_cli

    Console().print(_run(lambda settings: portals_cli.table(settings, status)))


@portals_app.command("show")
def portals_show(member_id: Annotated[str, typer.Argument(help="The portal's member_id")]) -> None:
    """Show one portal and its recent history (no secrets are shown)."""
    from b24bridge.portals import cli as portals_cli

    _print_found(_run(lambda settings: portals_cli.detail(settings, member_id)), f"no portal {member_id}")


# --- robots and runs ----------------------------------------------------------------------------------------------

robots_app = typer.Typer(help="Robots declared by b24bridge and registered in portals.", no_args_is_help=True)
app.add_typer(robots_app, name="robots")
runs_app = typer.Typer(help="The run log: every robot call, its outbound calls and outcome.", no_args_is_help=True)
app.add_typer(runs_app, name="runs")


@robots_app.command("sync")
def robots_sync(
    portal: Annotated[str | None, typer.Option(help="Only this portal (member_id) [default: every active one]")] = None,
) -> None:
    """Register declared robots in portals: add missing, update changed, delete undeclared (idempotent)."""
    from b24bridge.robots import cli as robots_cli

    report, ok = _run(lambda settings: robots_cli.sync(settings, portal))
    Console().print(report)
    if not ok:
        raise typer.Exit(1)


@robots_app.command("list")
def robots_list(
    portal: Annotated[str | None, typer.Option(help="Only this portal (member_id) [default: every active one]")] = None,
) -> None:
    """Declared robots versus those registered in each portal."""
    from b24bridge.robots import cli as robots_cli

    Console().print(_run(lambda settings: robots_cli.states(settings, portal)))


@runs_app.command("list")
def runs_list(
    portal: Annotated[str | None, typer.Option(help="Only runs of this portal (member_id)")] = None,
    status: Annotated[
        str | None, typer.Option(help="Only runs in this status (queued, running, succeeded, failed, uncertain)")
    ] = None,
    limit: Annotated[int, typer.Option(help="At most this many, newest first")] = 50,
) -> None:
    """List robot runs, newest first."""
    from b24bridge.runs import cli as runs_cli
    from b24bridge.runs.schemas import STATUSES

    if status is not None and status not in STATUSES:
        _fail(f"--status must be one of {', '.join(STATUSES)}")
    Console().print(_run(lambda settings: runs_cli.table(settings, portal, status, limit)))


@runs_app.command("show")
def runs_show(run_id: Annotated[int, typer.Argument(help="The run's id")]) -> None:
    """Show one run: inputs (without secrets), every outbound call, outcome and timestamps."""
    from b24bridge.runs import cli as runs_cli

    _print_found(_run(lambda settings: runs_cli.detail(settings, run_id)), f"no run {run_id}")


def main() -> None:
    try:
        app()
    except SettingsError as exc:  # raised outside a command, e.g. by a plugin; same contract
        err.print(str(exc), markup=False, highlight=False)
        sys.exit(2)


if __name__ == "__main__":
    main()
