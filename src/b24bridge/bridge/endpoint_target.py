"""The target adapter for your own systems: a mapped record handed over to an HTTPS endpoint (see :mod:`.receivers`
for the wire), and its row in the id map.

The message carries the mapped record, its contact, company and product rows, the source's ids, and the id the
endpoint gave the record last time (``previous_id``), so a receiver may update what it has. What the endpoint was
last given is kept as a fingerprint: the same mapped content again is ``unchanged`` and not sent.
"""

from __future__ import annotations

from typing import Any

from psycopg_pool import AsyncConnectionPool

from . import repository
from .adapters import Handover
from .mapping import fingerprint
from .receivers import Receiver, ReceiverClient, message_id
from .repository import ENDPOINT_RECORD, Link
from .route_model import Route
from .schemas import DeliveryResult

MESSAGE_TYPE = "b24bridge.handover"
FINGERPRINT_KEY = "__message__"


def message(handover: Handover) -> dict[str, Any]:
    route, link, mapped = handover.route, handover.link, handover.mapped
    return {
        "type": MESSAGE_TYPE,
        "route": route.name,
        "source": {
            "portal": dict(handover.source_view),
            "entity": route.source_entity.name,
            "id": handover.record_id,
            "stage": str(handover.found.deal.get(route.source_entity.stage_field) or ""),
            "url": handover.source_url,
        },
        "record": mapped.record,
        "contact": mapped.contact,
        "company": mapped.company,
        "products": mapped.rows,
        "previous_id": link.target_ref if link is not None else None,
    }


class EndpointTarget:
    def __init__(self, pool: AsyncConnectionPool, client: ReceiverClient, receiver: Receiver) -> None:
        self.pool = pool
        self.client = client
        self.receiver = receiver

    @property
    def key(self) -> str:
        return self.receiver.key

    @property
    def portal(self) -> None:
        return None

    def view(self) -> dict[str, str]:
        return self.receiver.view()

    def linked(self, route: Route, link: Link | None) -> DeliveryResult:
        return DeliveryResult(None, None, "skipped", target_ref=link.target_ref if link is not None else None)

    async def write(self, handover: Handover) -> DeliveryResult:
        """POST the record (unless the endpoint has this very content already); what it did, with its answer."""
        route, link = handover.route, handover.link
        body = message(handover)
        content = fingerprint({k: v for k, v in body.items() if k != "previous_id"})
        if link is not None and link.delivered.get(FINGERPRINT_KEY) == content:
            return DeliveryResult(None, None, "unchanged", target_ref=link.target_ref)
        msg_id = message_id(handover.source_key, route.name, handover.run_id)
        answer = await self.client.post(self.receiver, msg_id, body, handover.observer)
        ref = answer.id or (link.target_ref if link is not None else None)
        modified = handover.found.deal.get("DATE_MODIFY")
        saved = Link(
            handover.source_key,
            self.receiver.key,
            route.source_entity.entity,
            handover.record_id,
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
        changed = sorted(handover.mapped.record)
        note = f"message {msg_id}"
        return DeliveryResult(None, None, action, changed, target_ref=ref, note=note, answer=dict(answer.body))
