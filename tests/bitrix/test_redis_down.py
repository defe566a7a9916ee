"""Redis is optional and may fail: calls to portals go on with each process's own state, and the sharing comes
back when Redis does."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest
from redis.asyncio import Redis

from b24bridge.bitrix import BitrixClient, WebhookAuth, metrics
from b24bridge.bitrix.redis_state import RedisLimiter, RedisRefreshLock
from b24bridge.composition import open_redis
from tests.bitrix.test_oauth import Store, counter, install, oauth
from tests.livehttp import free_socket
from tests.sandbox.conftest import LiveSandbox


def _unavailable(use: str) -> float:
    value: float = metrics.REDIS_UNAVAILABLE.labels(use)._value.get()
    return value


def _dead_url() -> str:
    sock = free_socket()  # bound, never listening: connections are refused at once
    port = sock.getsockname()[1]
    sock.close()
    return f"redis://127.0.0.1:{port}/0"


async def test_with_redis_down_calls_go_on_and_its_failure_is_counted_once_per_pause(sandbox: LiveSandbox) -> None:
    redis = open_redis(_dead_url())
    before = _unavailable("limiter"), _unavailable("refresh_lock")
    tokens = install(sandbox)
    store = Store()
    try:
        async with BitrixClient(limiter=RedisLimiter(redis), refresh_lock=RedisRefreshLock(redis)) as client:
            webhook = client.portal(WebhookAuth(sandbox.webhook_url))
            found = await asyncio.gather(*(webhook.call("crm.contact.list", {"select": ["ID"]}) for _ in range(40)))
            assert len(found) == 40
            # A refresh needs the lock; with Redis down the fallback lock serves.
            store.auth = auth = oauth(sandbox, tokens)
            app = client.portal(auth, key="oauth", on_tokens=store.save, load_tokens=store.load)
            sandbox.control("POST", "/_sandbox/tokens/expire", {"client_id": sandbox.client_id})
            await asyncio.gather(*(app.call("profile") for _ in range(10)))
    finally:
        await redis.aclose()
    assert counter(sandbox, "oauth_requests:refresh_token") == 1
    # Redis is left alone for a while after a failure: a failure or two (operations already under way when the
    # first failed) counted, not one per call.
    assert 1 <= _unavailable("limiter") - before[0] <= 2 and _unavailable("refresh_lock") - before[1] == 1


class CuttableProxy:
    """A TCP proxy in front of the real Redis that can be cut (every connection dropped, new ones refused) and
    mended on the same port."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        sock = free_socket()
        self.port = sock.getsockname()[1]
        sock.close()
        self.server: asyncio.Server | None = None
        self.writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", self.port, reuse_address=True)

    async def cut(self) -> None:
        assert self.server is not None
        self.server.close()
        for writer in list(self.writers):
            writer.transport.abort()
        await self.server.wait_closed()
        self.server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        self.writers |= {writer, up_writer}

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError, asyncio.IncompleteReadError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.transport.abort()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        self.writers -= {writer, up_writer}


@pytest.fixture
async def proxy(redis_url: str) -> AsyncIterator[CuttableProxy]:
    from urllib.parse import urlsplit

    parts = urlsplit(redis_url)
    found = CuttableProxy((parts.hostname or "127.0.0.1", parts.port or 6379))
    await found.start()
    yield found
    if found.server is not None:
        await found.cut()


@pytest.mark.redis
async def test_a_redis_that_fails_and_comes_back_is_shared_again(sandbox: LiveSandbox, proxy: CuttableProxy) -> None:
    direct = Redis(port=proxy.upstream[1], host=proxy.upstream[0])
    redis = open_redis(f"redis://127.0.0.1:{proxy.port}/0")
    prefix = f"t-down-{proxy.port}"

    async def shared_level() -> Any:
        return await direct.hget(f"{prefix}:bucket:{sandbox.webhook_url}", "level")

    try:
        # The pause outlasts the five calls by far (CI saw a half-second stall between two of them, and a second
        # failure counted once the pause had run out); the sleep below outlasts the pause.
        async with BitrixClient(limiter=RedisLimiter(redis, prefix=prefix, retry_after=1.5)) as client:
            portal = client.portal(WebhookAuth(sandbox.webhook_url), key=sandbox.webhook_url)
            await portal.call("user.current")
            assert await shared_level() is not None  # the budget lives in Redis
            await direct.delete(f"{prefix}:bucket:{sandbox.webhook_url}")
            await proxy.cut()
            before = _unavailable("limiter")
            for _ in range(5):
                await portal.call("user.current")  # answered, with this process's own budget
            assert await shared_level() is None and _unavailable("limiter") == before + 1
            await proxy.start()
            await asyncio.sleep(1.6)  # the pause after a failure
            await portal.call("user.current")
            assert await shared_level() is not None  # shared again
    finally:
        await redis.aclose()
        await direct.aclose()
