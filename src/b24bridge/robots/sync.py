"""Registering the declared robots in portals: add missing, update changed, delete undeclared (idempotent)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from psycopg_pool import AsyncConnectionPool

from b24bridge.bitrix import BitrixError, Portal
from b24bridge.observability import get_logger
from b24bridge.portals.service import PortalRegistry

from . import repository
from .registry import Robot
from .schemas import RobotState, SyncReport

log = get_logger(__name__)


class RobotSync:
    def __init__(
        self, pool: AsyncConnectionPool, registry: PortalRegistry, robots: Mapping[str, Robot], public_url: str | None
    ) -> None:
        self.pool = pool
        self.registry = registry
        self.robots = robots
        self.public_url = public_url

    async def sync_portal(self, member_id: str, robots: Mapping[str, Robot] | None = None) -> SyncReport:
        """Make the declared robots true in one portal: add missing, update changed, delete undeclared ones.

        ``bizproc.robot.list`` says what is there (only this application's codes); the stored hash of what we
        registered says whether a present robot is current. Running it twice changes nothing the second time.
        """
        robots = self.robots if robots is None else robots
        if not self.public_url:
            raise RuntimeError("B24BRIDGE_PUBLIC_URL is not set: robots need a handler URL the portal can reach")
        report = SyncReport(member_id)
        portal = await self.registry.connect(member_id)
        present = await _registered(portal)
        async with self.pool.connection() as conn:
            stored = await repository.registrations(conn, member_id)
        for code, robot in robots.items():
            params = robot.to_bitrix(self.public_url)
            digest = robot.definition_hash(self.public_url)
            if code not in present:
                try:
                    await portal.call("bizproc.robot.add", params)
                except BitrixError as exc:
                    # Listed a moment ago as absent, present now: another sync won the race; make it ours.
                    if exc.code != "ERROR_ACTIVITY_ALREADY_INSTALLED":
                        raise
                    await portal.call("bizproc.robot.update", {"CODE": code, "FIELDS": _fields(params)})
                report.added.append(code)
            elif stored.get(code) != digest:
                await portal.call("bizproc.robot.update", {"CODE": code, "FIELDS": _fields(params)})
                report.updated.append(code)
            else:
                report.unchanged.append(code)
            async with self.pool.connection() as conn:
                await repository.save(conn, member_id, code, digest)
        for code in sorted(present - set(robots)):
            try:
                await portal.call("bizproc.robot.delete", {"CODE": code})
            except BitrixError as exc:
                if exc.code != "ERROR_ACTIVITY_NOT_FOUND":
                    raise
            report.deleted.append(code)
        async with self.pool.connection() as conn:
            await repository.forget(conn, member_id, [code for code in stored if code not in robots])
        log.info(
            "robots.synced", member_id=member_id, added=report.added, updated=report.updated, deleted=report.deleted
        )
        return report

    async def sync_all(self, member_id: str | None = None) -> list[SyncReport]:
        """Sync one portal or every active one; a failing portal is reported and does not stop the others."""
        reports = []
        for target in await self._targets(member_id):
            try:
                reports.append(await self.sync_portal(target))
            except Exception as exc:
                log.warning("robots.sync_failed", member_id=target, error=f"{type(exc).__name__}: {exc}")
                reports.append(SyncReport(target, error=f"{type(exc).__name__}: {exc}"))
        return reports

    async def states(self, member_id: str | None = None) -> list[RobotState]:
        """Declared versus registered, per portal (what ``b24bridge robots list`` shows)."""
        public_url = self.public_url or ""
        states: list[RobotState] = []
        for target in await self._targets(member_id):
            present = await _registered(await self.registry.connect(target))
            async with self.pool.connection() as conn:
                stored = await repository.registrations(conn, target)
            for code in sorted(set(self.robots) | present):
                robot = self.robots.get(code)
                current_hash = robot.definition_hash(public_url) if robot is not None else None
                states.append(
                    RobotState(target, code, robot is not None, code in present, stored.get(code) == current_hash)
                )
        return states

    async def registered(self) -> dict[str, list[str]]:
        """Member id -> codes of the robots registered there, as last synced (no portal is asked)."""
        async with self.pool.connection() as conn:
            return await repository.registered_codes(conn)

    async def on_portal_installed(self, member_id: str) -> None:
        """Install hook: a new or re-installed portal gets the robots (an app update removes them, REFERENCE 5.1)."""
        try:
            await self.sync_portal(member_id)
        except Exception as exc:  # the installation itself stands; ``b24bridge robots sync`` can finish the job
            log.warning("robots.install_sync_failed", member_id=member_id, error=f"{type(exc).__name__}: {exc}")

    async def _targets(self, member_id: str | None) -> list[str]:
        if member_id is not None:
            return [member_id]
        return [p.member_id for p in await self.registry.list_portals(status="active")]


async def _registered(portal: Portal) -> set[str]:
    listed = await portal.call("bizproc.robot.list")
    return {str(code) for code in listed} if isinstance(listed, list) else set()


def _fields(params: Mapping[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in params.items() if key != "CODE"}
