"""What every command shares: settings read or one clear line and an exit code, the event loop, output as a table
or JSON, and the ways to reach the database (read-only, or with the services built)."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import sys
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from typing import Annotated, Any, NoReturn, TypeVar

import typer
from rich.console import Console

from b24bridge.settings import Settings, SettingsError, load_settings

T = TypeVar("T")

err = Console(stderr=True)
EXIT_CONFIG = 2
EXIT_ENVIRONMENT = 3


class StartupError(Exception):
    """The environment refused something the command needs; the message is one line for the operator."""


def fail(message: str, code: int = EXIT_CONFIG) -> NoReturn:
    # Plain output without rich markup: messages contain brackets (``auth[...]``) and are meant to be
    # copied into a shell or a ticket as they are.
    err.print(message, markup=False, highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def read_settings(**overrides: Any) -> Settings:
    try:
        settings = load_settings(**overrides)
    except SettingsError as exc:
        fail(str(exc))
    from b24bridge.observability import configure_logging

    configure_logging(settings.log_level, settings.log_format)
    return settings


def check_encryption_keys(settings: Settings) -> None:
    # Checked before anything starts: portal tokens cannot be stored or read without a key (production needs one).
    from b24bridge.portals.crypto import keyring

    try:
        keyring(settings)
    except SettingsError as exc:  # KeyConfigError: one line naming B24BRIDGE_ENCRYPTION_KEYS
        fail(str(exc))


def check_routes_file(settings: Settings) -> Any:
    # A bad route file stops start-up with every problem, one line each, naming file, line and field.
    from b24bridge.bridge.routes import RoutesError
    from b24bridge.composition import route_file

    try:
        return route_file(settings)
    except RoutesError as exc:
        fail(str(exc))


def event_loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop where it is installed (uvicorn[standard] brings it, except on Windows): measured with bench/ingest.py
    it serves the same requests with markedly less CPU than asyncio's own loop. None: asyncio's default."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def run_async(job: Coroutine[Any, Any, T]) -> T:
    """Run ``job`` to completion; what the environment refused becomes one line and exit code 3."""
    from b24bridge.composition import SchemaOutdated
    from b24bridge.db import DatabaseUnavailable

    try:
        with asyncio.Runner(loop_factory=event_loop_factory()) as runner:
            return runner.run(job)
    except (StartupError, SchemaOutdated) as exc:
        fail(str(exc), EXIT_ENVIRONMENT)
    except DatabaseUnavailable as exc:
        reason = " ".join(str(exc).split())  # libpq's message spans lines; the operator gets one
        fail(f"B24BRIDGE_DATABASE_URL: the database cannot be reached ({reason})", EXIT_ENVIRONMENT)


def stdout() -> Console:
    """Where results go (logs go to stderr). Piped into a file or another program, tables are not cut to a
    terminal's width: a wide virtual width keeps every column whole."""
    return Console() if sys.stdout.isatty() else Console(width=10_000)


def emit(table: object, data: object, as_json: bool) -> None:
    """A table for people, or (``--json``) the same records as one JSON document for scripts."""
    if as_json:
        typer.echo(json.dumps(plain(data), ensure_ascii=False, indent=1, default=str))
    else:
        stdout().print(table)


def plain(value: object) -> object:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {k: plain(v) for k, v in dataclasses.asdict(value).items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    return value


JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON (for scripts) instead of a table")]


@asynccontextmanager
async def reachable_database(settings: Settings) -> AsyncIterator[Any]:
    """The service's database, started (embedded) or checked (external) before anything else relies on it."""
    from b24bridge.db import Database

    async with Database(settings) as database:
        await database.ping()
        yield database


Reader = Callable[[Any], Coroutine[Any, Any, T]]


def read_records(read: Callable[[Any], Coroutine[Any, Any, T]]) -> T:
    """``read(database)`` on the service's database, opened for reading only (no migrations)."""
    settings = read_settings()

    from b24bridge.composition import open_reader

    async def run() -> T:
        async with open_reader(settings) as database:
            return await read(database)

    return run_async(run())


def with_services(use: Callable[[Any], Coroutine[Any, Any, T]]) -> T:
    settings = read_settings()
    check_encryption_keys(settings)
    check_routes_file(settings)

    from b24bridge.composition import open_services

    async def run() -> T:
        async with (
            reachable_database(settings) as database,
            open_services(settings, database, migrate=False) as services,
        ):
            return await use(services)

    return run_async(run())
