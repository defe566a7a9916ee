"""Commands that run something: the service, workers, the sandbox and the demo; database upgrades and keys."""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import signal
import socket
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from b24bridge import __version__

from .common import (
    EXIT_ENVIRONMENT,
    StartupError,
    check_encryption_keys,
    check_routes_file,
    fail,
    reachable_database,
    read_settings,
    run_async,
)

db_app = typer.Typer(help="Database maintenance.", no_args_is_help=True)


class Plan(StrEnum):
    cloud = "cloud"
    enterprise = "enterprise"


def _bind(host: str, port: int) -> socket.socket:
    from b24bridge.server import PortUnavailable, listening_socket

    try:
        sock = listening_socket(host, port)
    except PortUnavailable as exc:
        fail(f"B24BRIDGE_PORT: {exc}", EXIT_ENVIRONMENT)
    return sock


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
    settings = read_settings(**overrides)
    check_encryption_keys(settings)
    check_routes_file(settings)
    sock = _bind(settings.host, settings.port)

    import uvicorn

    from b24bridge.app import create_service
    from b24bridge.server import GracefulServer, server_options

    async def run() -> None:
        async with reachable_database(settings) as database:
            # log_config=None keeps uvicorn from replacing our handlers, so its logs are redacted JSON too.
            config = uvicorn.Config(
                create_service(settings, database),
                **server_options(settings.body_read_timeout),
                log_config=None,
                proxy_headers=True,
                forwarded_allow_ips=settings.forwarded_allow_ips,
            )
            server = GracefulServer(config)
            await server.serve(sockets=[sock])
            if not server.started:
                raise StartupError("the service did not start (see the log above)")

    try:
        run_async(run())
    finally:
        sock.close()


def worker(
    concurrency: Annotated[
        int | None, typer.Option(help="Jobs run at once [default: B24BRIDGE_WORKER_CONCURRENCY]")
    ] = None,
) -> None:
    """Run job workers only (robot calls, deliveries), so a deployment can scale them apart from the API."""
    overrides: dict[str, Any] = {} if concurrency is None else {"worker_concurrency": concurrency}
    settings = read_settings(**overrides)
    check_encryption_keys(settings)
    check_routes_file(settings)

    from b24bridge.composition import open_services

    async def run() -> None:
        async with reachable_database(settings) as database, open_services(settings, database) as services:
            task = asyncio.current_task()
            assert task is not None
            loop = asyncio.get_running_loop()
            for signum in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(signum, task.cancel)
            from b24bridge import gauges
            from b24bridge.server import settle_heap

            _serve_metrics(settings.host, settings.metrics_port)
            settle_heap()
            sampler = asyncio.get_running_loop().create_task(gauges.sample_forever(services.database.pool))
            # Asked to stop: running jobs were given their graceful timeout and are retried if cut short.
            try:
                with contextlib.suppress(asyncio.CancelledError):
                    await services.worker("worker").run()
            finally:
                sampler.cancel()

    run_async(run())


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
    settings = read_settings()

    from b24bridge import migrations

    async def run() -> str | None:
        async with reachable_database(settings) as database:
            await asyncio.to_thread(migrations.upgrade, database.url, revision)
            return await asyncio.to_thread(migrations.current_revision, database.url)

    typer.echo(f"database at revision {run_async(run())}")


keys_app = typer.Typer(help="Encryption keys for portal tokens (B24BRIDGE_ENCRYPTION_KEYS).", no_args_is_help=True)


@keys_app.command("generate")
def keys_generate(kid: Annotated[str, typer.Option(help="The key's id, kept with what it encrypts")] = "k1") -> None:
    """Print a new key as B24BRIDGE_ENCRYPTION_KEYS takes it (kid:key). To rotate, put the new one first and keep
    the old ones after it: the first encrypts, every one decrypts."""
    from b24bridge.portals.crypto import KeyConfigError, new_key, parse_keys

    entry = f"{kid}:{new_key()}"
    try:
        parse_keys(entry)
    except KeyConfigError as exc:
        fail(str(exc))
    typer.echo(entry)


def version() -> None:
    """Print the version."""
    typer.echo(__version__)


def sandbox(
    host: Annotated[str, typer.Option(help="Listen address")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Listen port")] = 8090,
    state: Annotated[Path | None, typer.Option(help="JSON file to load the portal from and save it to on exit")] = None,
    plan: Annotated[Plan, typer.Option(help="Bitrix24 plan whose limits are emulated")] = Plan.cloud,
    limits: Annotated[bool, typer.Option("--limits/--no-limits", help="Enforce rate and time limits")] = True,
    seed: Annotated[int, typer.Option(help="Random seed for generated data and faults")] = 0,
    portals: Annotated[
        int, typer.Option(min=1, max=100, help="Portals side by side on ports PORT.. sharing one OAuth server")
    ] = 1,
) -> None:
    """Run a local Bitrix24 emulator for development and tests."""
    server: Any = importlib.import_module("b24bridge.sandbox.server")
    server.run(host=host, port=port, state_path=state, plan=plan.value, limits=limits, seed=seed, portals=portals)


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
    settings = read_settings(log_level="WARNING")  # the story is the output; warnings and errors still show
    from b24bridge import demo as story

    options = story.DemoOptions(data_dir or settings.data_dir / "demo", port, sandbox_port, wait)
    try:
        run_async(story.run(options, Console(highlight=False)))
    except story.DemoError as exc:
        fail(str(exc), EXIT_ENVIRONMENT)
    except KeyboardInterrupt:
        pass  # stopped by Ctrl-C, after everything was shut down
