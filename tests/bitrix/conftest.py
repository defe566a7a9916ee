"""The client is tested against a real sandbox portal over HTTP on loopback."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from b24bridge.bitrix import BitrixClient, Portal, WebhookAuth
from tests.sandbox.conftest import LiveSandbox, _shared_sandbox, sandbox, sandbox_factory  # noqa: F401


@pytest.fixture
async def client() -> AsyncIterator[BitrixClient]:
    async with BitrixClient(seed=1) as bitrix:
        yield bitrix


@pytest.fixture
def portal(client: BitrixClient, sandbox: LiveSandbox) -> Portal:  # noqa: F811
    return client.portal(WebhookAuth(sandbox.webhook_url))
