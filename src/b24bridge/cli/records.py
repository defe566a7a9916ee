"""Commands that show and act on records: portals, runs (list, show, answer, replay), routes and robots."""

from __future__ import annotations

import datetime
from typing import Annotated, Any

import typer

from .common import JsonOption, emit, err, fail, plain, read_records, stdout, with_services

portals_app = typer.Typer(help="Portals that installed b24bridge.", no_args_is_help=True)


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

    rows = read_records(read)
    emit(views.portals_table(rows), [views.public(row) for row in rows], as_json)


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

    found = read_records(read)
    if found is None:
        fail(f"no portal {member_id}", 1)
    row, history = found
    emit(views.portal_detail(row, history), {**views.public(row), "history": history}, as_json)


runs_app = typer.Typer(help="The run log: every robot call, its outbound calls and outcome.", no_args_is_help=True)


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
        fail(f"--status must be one of {', '.join(STATUSES)}")

    async def read(database: Any) -> Any:
        where = RunFilter(member_id=portal, status=status, kind=kind, route=route)
        return await RunLog(database.pool).list_runs(where, limit)

    runs = read_records(read)
    emit(views.runs_table(runs), runs, as_json)


@runs_app.command("show")
def runs_show(run_id: Annotated[int, typer.Argument(help="The run's id")], as_json: JsonOption = False) -> None:
    """Show one run: inputs (without secrets), every outbound call, outcome and timestamps."""
    from b24bridge.runs import views
    from b24bridge.runs.service import RunLog

    async def read(database: Any) -> Any:
        return await RunLog(database.pool).show(run_id)

    found = read_records(read)
    if found is None:
        fail(f"no run {run_id}", 1)
    run, calls = found
    emit(views.run_detail(run, calls), {**plain(run), "calls": calls}, as_json)  # type: ignore[dict-item]


@runs_app.command("answer")
def runs_answer(run_ids: Annotated[list[int], typer.Argument(help="Ids of dead runs")]) -> None:
    """Answer dead robot runs again: each workflow gets the run's result (or its error) by a new job."""
    revived = with_services(lambda services: services.replay(run_ids))
    skipped = sorted(set(run_ids) - set(revived))
    typer.echo(f"queued again: {', '.join(map(str, revived)) or 'none'}")
    if skipped:
        fail(f"not dead (left alone): {', '.join(map(str, skipped))}", 1)


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
        fail("give run ids, or --status dead (with --route, --portal, --since to narrow it)")
    if status is not None and status != "dead":
        fail("--status: only dead runs can be replayed")

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

    wanted, replayed = with_services(use)
    typer.echo(f"replayed {len(replayed)} of {len(wanted)} run(s): {', '.join(map(str, replayed)) or 'none'}")
    skipped = sorted(set(wanted) - set(replayed))
    if skipped:
        fail(f"not dead (left alone): {', '.join(map(str, skipped))}", 1)


# --- the bridge's routes ----------------------------------------------------------------------------------------

routes_app = typer.Typer(help="The bridge's routes (B24BRIDGE_ROUTES).", no_args_is_help=True)


@routes_app.command("check")
def routes_check() -> None:
    """Check the route file against both portals' real field and stage lists; print the hook URLs."""
    from b24bridge.bridge import views
    from b24bridge.bridge.check import check_routes, fetch_schema

    async def use(services: Any) -> tuple[list[str], Any]:
        schemas, problems = {}, []
        for name, ref in services.routes.portals.items():
            if not ref.is_portal:  # an endpoint publishes no field lists: what it takes is its own business
                continue
            try:
                endpoint = await services.bridge_connections.open(ref)
                schemas[name] = await fetch_schema(endpoint.portal)
            except Exception as exc:  # a portal that cannot be reached is a finding, not a crash
                problems.append(f"{services.routes.path}:{ref.line}: portals.{name}: cannot read its fields ({exc})")
        return problems + check_routes(services.routes, schemas), services

    problems, services = with_services(use)
    stdout().print(views.hooks_table(services.routes, services.settings.public_url or "", services.keys))
    for problem in problems:
        typer.echo(problem)
    if problems:
        raise typer.Exit(1)
    typer.echo(f"{len(services.routes.routes)} route(s) OK")


# --- robots: talk to portals, so the full service (without migrations) ---------------------------------------------

robots_app = typer.Typer(help="Robots declared by b24bridge and registered in portals.", no_args_is_help=True)


@robots_app.command("sync")
def robots_sync(
    portal: Annotated[str | None, typer.Option(help="Only this portal (member_id) [default: every active one]")] = None,
) -> None:
    """Register declared robots in portals: add missing, update changed, delete undeclared (idempotent)."""
    from b24bridge.robots import views

    reports = with_services(lambda services: services.robot_sync.sync_all(portal))
    stdout().print(views.sync_table(reports))
    if any(report.error is not None for report in reports):
        raise typer.Exit(1)


@robots_app.command("list")
def robots_list(
    portal: Annotated[str | None, typer.Option(help="Only this portal (member_id) [default: every active one]")] = None,
    as_json: JsonOption = False,
) -> None:
    """Declared robots versus those registered in each portal."""
    from b24bridge.robots import views

    states = with_services(lambda services: services.robot_sync.states(portal))
    emit(views.states_table(states), states, as_json)
