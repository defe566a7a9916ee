"""The target adapter for your own systems: a mapped record handed over to an HTTPS endpoint (see :mod:`.receivers`
for the wire), and its row in the id map.

The message carries the mapped record, its contact, company and product rows, the source's ids, and the id the
endpoint gave the record last time (``previous_id``), so a receiver may update what it has. What the endpoint was
last given is kept as a fingerprint: the same mapped content again is ``unchanged`` and not sent.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from psycopg_pool import AsyncConnectionPool

from b24bridge.bitrix import CallObserver

from . import repository
from .connections import Endpoint
from .mapping import fingerprint
from .receivers import Receiver, ReceiverClient, message_id
from .repository import ENDPOINT_RECORD, Link
from .route_model import Route
from .schemas import DeliveryResult

MESSAGE_TYPE = "b24bridge.handover"
FINGERPRINT_KEY = "__message__"


@dataclass(frozen=True)
class Mapped:
    """One delivery's mapped values: the record, its contact and company (None: none), its product rows."""

    record: dict[str, Any]
    contact: dict[str, Any] | None
    company: dict[str, Any] | None
    rows: list[dict[str, Any]] | None


def message(
    route: Route, source: Endpoint, source_id: int, stage: str, mapped: Mapped, link: Link | None
) -> dict[str, Any]:
    kind = route.source_entity
    return {
        "type": MESSAGE_TYPE,
        "route": route.name,
        "source": {
            "portal": source.view(),
            "entity": kind.name,
            "id": source_id,
            "stage": stage,
            "url": kind.url(source.web_url, source_id),
        },
        "record": mapped.record,
        "contact": mapped.contact,
        "company": mapped.company,
        "products": mapped.rows,
        "previous_id": link.target_ref if link is not None else None,
    }


class EndpointTarget:
    def __init__(self, pool: AsyncConnectionPool, client: ReceiverClient) -> None:
        self.pool = pool
        self.client = client

    async def write(
        self,
        route: Route,
        source: Endpoint,
        receiver: Receiver,
        source_id: int,
        source_record: Mapping[str, Any],
        mapped: Mapped,
        link: Link | None,
        *,
        run_id: int,
        observer: CallObserver,
    ) -> DeliveryResult:
        """POST the record (unless the endpoint has this very content already); the result and the endpoint's answer."""
        stage = str(source_record.get(route.source_entity.stage_field) or "")
        body = message(route, source, source_id, stage, mapped, link)
        content = fingerprint({k: v for k, v in body.items() if k != "previous_id"})
        if link is not None and link.delivered.get(FINGERPRINT_KEY) == content:
            return DeliveryResult(None, None, "unchanged", target_ref=link.target_ref)
        msg_id = message_id(source.key, route.name, run_id)
        answer = await self.client.post(receiver, msg_id, body, observer)
        ref = answer.id or (link.target_ref if link is not None else None)
        modified = source_record.get("DATE_MODIFY")
        saved = Link(
            source.key,
            receiver.key,
            route.source_entity.entity,
            source_id,
            ENDPOINT_RECORD,
            route.name,
            {FINGERPRINT_KEY: content},
            str(modified) if modified else None,
            link.returned if link is not None else {},
            None,
            ref,
        )
        async with self.pool.connection() as conn:
            await repository.save_links(conn, [saved])
        action = "created" if link is None else "updated"
        note = f"message {msg_id}"
        changed = sorted(mapped.record)
        return DeliveryResult(None, None, action, changed, target_ref=ref, note=note, answer=dict(answer.body))
