"""Application tokens checked from memory (issue 17): every process's directory hears of an install and an uninstall
within a second, a listener that lost its connection stops trusting its memory after a second and asks the
database, and a database that cannot answer makes a check say it cannot tell (the door then spools the call)."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import AsyncIterator, Callable

import httpx
import psycopg
import pytest
from psycopg_pool import AsyncConnectionPool

from b24bridge.bitrix import BitrixClient
from b24bridge.bitrix.auth import TokenPair
from b24bridge.portals import crypto
from b24bridge.portals.directory import APP_TOKEN_PURPOSE, STALE_AFTER, UNKNOWN, PortalDirectory
from b24bridge.portals.install import Installer
from b24bridge.portals.schemas import InstallClaim
from b24bridge.portals.service import PortalRegistry
from tests.portals.conftest import KEY
from tests.tcpproxy import TcpProxy

MEMBER = "0123456789abcdef0123456789abcdef"
TOKEN = "application-token-of-the-portal"


def _install(url: str, keys: crypto.Keyring, member: str = MEMBER) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO portals (member_id, domain, client_endpoint, scope, status, application_token_hash)"
            " VALUES (%s, 'p.bitrix24.com', 'https://p.bitrix24.com/rest/', 'crm', 'active', %s)"
            " ON CONFLICT (member_id) DO UPDATE SET status = 'active',"
            " application_token_hash = EXCLUDED.application_token_hash",
            (member, keys.mac(APP_TOKEN_PURPOSE, TOKEN)),
        )


def _uninstall(url: str, member: str = MEMBER) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("UPDATE portals SET status = 'uninstalled', application_token_hash = NULL WHERE member_id = %s",
                     (member,))  # fmt: skip


async def _until(check: Callable[[], object], expected: object, within: float) -> float:
    started = time.monotonic()
    while (value := await check()) != expected:  # type: ignore[misc]
        assert time.monotonic() - started < within, f"still {value!r} after {within} s"
        await asyncio.sleep(0.01)
    return time.monotonic() - started


class Process:
    """What one b24bridge process holds: a pool and a directory with its listener running."""

    def __init__(self, url: str, keys: crypto.Keyring) -> None:
        self.pool = AsyncConnectionPool(url, min_size=1, max_size=2, open=False)
        self.directory = PortalDirectory(url, self.pool, keys)
        self.task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.pool.open(wait=True)
        self.task = asyncio.get_running_loop().create_task(self.directory.run())
        await asyncio.wait_for(self.directory.listening.wait(), 10)

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)
        await self.pool.close()

    async def verdict(self) -> object:
        record = await self.directory.check(MEMBER, TOKEN)
        return record if record in (None, UNKNOWN) else "ok"


@pytest.fixture
async def url(make_migrated_database: Callable[[], str]) -> AsyncIterator[str]:
    yield make_migrated_database()


async def test_every_process_hears_of_an_install_and_an_uninstall_within_a_second(url: str) -> None:
    keys = crypto.Keyring(tuple(crypto.parse_keys(KEY)))
    one, two = Process(url, keys), Process(url, keys)
    await one.start()
    await two.start()
    try:
        assert await one.verdict() is None and await two.verdict() is None  # not installed
        _install(url, keys)
        heard = [await _until(p.verdict, "ok", within=1.0) for p in (one, two)]
        _uninstall(url)
        gone = [await _until(p.verdict, None, within=1.0) for p in (one, two)]
        print(f"install heard after {max(heard) * 1000:.0f} ms, uninstall after {max(gone) * 1000:.0f} ms")
        assert (await one.directory.check(MEMBER, "another-token")) is None
    finally:
        await one.stop()
        await two.stop()


async def test_a_lost_listener_stops_trusting_memory_and_a_lost_database_cannot_tell(url: str) -> None:
    keys = crypto.Keyring(tuple(crypto.parse_keys(KEY)))
    _install(url, keys)
    listener_proxy = TcpProxy.to_postgres(url)
    process = Process(url, keys)
    process.directory.url = listener_proxy.url_for(url)  # only the listener goes through the proxy
    await process.start()
    try:
        assert await process.verdict() == "ok"
        listener_proxy.cut()  # the listener loses its connection; it cannot hear of the uninstall now
        _uninstall(url)
        await asyncio.sleep(STALE_AFTER + 0.2)
        # Memory is no longer trusted: the check asks the database, which knows of the uninstall.
        assert await process.verdict() is None
        # And with the database away as well, a portal it has never seen is "cannot tell", not "refused".
        await process.pool.close()
        process.pool = AsyncConnectionPool(listener_proxy.url_for(url), min_size=0, max_size=1, open=False)
        await process.pool.open(wait=False)
        process.directory.pool = process.pool
        unseen = await process.directory.check("ffffffffffffffffffffffffffffffff", TOKEN)
        assert unseen is UNKNOWN
    finally:
        listener_proxy.stop()
        await process.stop()


async def test_this_process_knows_its_own_install_and_uninstall_before_their_notification(url: str) -> None:
    """The portal may call the moment its install is answered: the process that stored the install must not refuse
    that call while its listener has yet to hear the notification (a `make test` run once saw the 401)."""
    keys = crypto.Keyring(tuple(crypto.parse_keys(KEY)))
    process = Process(url, keys)
    await process.start()
    assert process.task is not None
    process.task.cancel()  # memory stays current but hears nothing more: a notification that has not come back yet
    await asyncio.gather(process.task, return_exceptions=True)
    try:
        async with BitrixClient() as bitrix, httpx.AsyncClient() as http:
            registry = PortalRegistry(process.pool, keys, bitrix, None)
            installer = Installer(process.pool, keys, registry, http, None, None, directory=process.directory)
            claim = InstallClaim(via="event", member_id=MEMBER, domain="p.bitrix24.com", refresh_token="r",
                                 application_token=TOKEN)  # fmt: skip
            pair = TokenPair(access_token="a", refresh_token="r")
            await installer.apply_kept_install({"claim": claim.model_dump(), "pair": dataclasses.asdict(pair)})
            assert await process.verdict() == "ok"
            await installer.apply_kept_uninstall({"member_id": MEMBER, "application_token": TOKEN, "clean": False})
            assert await process.verdict() is None
    finally:
        await process.stop()
