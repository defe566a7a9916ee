"""The ``b24bridge`` command line (the only package that knows typer): this module puts the commands together.

Exit codes: 0 done; 1 nothing found (``show``) or a partial failure (``robots sync``); 2 invalid configuration or
arguments; 3 the environment refused (database unreachable or its schema outdated, port already in use).
"""

from __future__ import annotations

import asyncio
import sys

import typer

from b24bridge.safetext import NOT_UTF8, refusal
from b24bridge.settings import SettingsError

from . import records, service
from .common import EXIT_CONFIG, err

app = typer.Typer(name="b24bridge", help="Self-hosted Bitrix24 integration service.", no_args_is_help=True)
for command in (service.serve, service.worker, service.version, service.sandbox, service.demo):
    app.command()(command)
app.add_typer(service.db_app, name="db")
app.add_typer(service.keys_app, name="keys")
app.add_typer(records.portals_app, name="portals")
app.add_typer(records.runs_app, name="runs")
app.add_typer(records.routes_app, name="routes")
app.add_typer(records.robots_app, name="robots")


def main() -> None:
    if sys.platform == "win32":
        # psycopg's async mode cannot run on Windows' default (proactor) event loop.
        asyncio.set_event_loop_policy(asyncio.WindowsSelectorEventLoopPolicy())
    for position, argument in enumerate(sys.argv[1:], 1):
        # Bytes that are not UTF-8 reach Python as lone surrogates, which no database query or log line can carry.
        if refusal(argument) is not None:
            err.print(f"argument {position} {NOT_UTF8}", markup=False, highlight=False)
            sys.exit(EXIT_CONFIG)
    try:
        app()
    except SettingsError as exc:  # raised outside a command, e.g. by a plugin; same contract
        err.print(str(exc), markup=False, highlight=False)
        sys.exit(EXIT_CONFIG)
