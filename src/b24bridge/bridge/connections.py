"""The portals a route file names, as client connections and as stable keys for the id map.

An installed b24bridge is reached through the portal registry (OAuth, tokens kept fresh) and keyed by its
member_id; an incoming webhook is reached directly and keyed by its domain. The keys name a portal in the id map and
in the run log, so they must not change when a secret (the webhook's code) is rotated.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

from b24bridge.bitrix import BitrixClient, Limits, Portal, WebhookAuth
from b24bridge.portals.directory import PortalDirectory
from b24bridge.portals.service import PortalRegistry

from .receivers import Receiver, endpoint_key
from .route_model import INBOUND, PortalRef
from .schemas import BridgeConfigError


@dataclass(frozen=True)
class Endpoint:
    """A portal ready to talk to: its connection, its key, and what templates may show of it."""

    portal: Portal
    key: str
    name: str
    domain: str
    web_url: str  # scheme and host, for links into the portal's UI

    def view(self) -> dict[str, str]:
        """The portal as a template sees it (``source`` / ``target_portal``): never a secret."""
        return {"name": self.name, "domain": self.domain, "member_id": self.key if "." not in self.key else ""}


class Connections:
    def __init__(self, registry: PortalRegistry, directory: PortalDirectory, bitrix: BitrixClient) -> None:
        self.registry = registry
        self.directory = directory
        self.bitrix = bitrix
        self._webhooks: dict[str, Portal] = {}

    def receiver(self, ref: PortalRef) -> Receiver:
        """Your own system's endpoint (a route target that is no portal)."""
        if ref.endpoint is None:
            raise BridgeConfigError(f"{ref.name!r} is a portal, not an endpoint")
        return Receiver(ref.name, ref.endpoint, ref.secrets)

    async def target(self, ref: PortalRef) -> Endpoint | Receiver:
        return self.receiver(ref) if ref.endpoint is not None else await self.open(ref)

    async def open(self, ref: PortalRef) -> Endpoint:
        if not ref.is_portal:
            raise BridgeConfigError(f"{ref.name!r} is your own system, not a portal")
        if ref.webhook is not None:
            domain = urlsplit(ref.webhook).netloc.lower()
            portal = self._webhooks.get(ref.webhook)
            if portal is None:
                limits = Limits.enterprise() if ref.plan == "enterprise" else Limits()
                portal = self._webhooks[ref.webhook] = self.bitrix.portal(
                    WebhookAuth(ref.webhook), key=domain, limits=limits
                )
            parts = urlsplit(ref.webhook)
            return Endpoint(portal, domain, ref.name, domain, f"{parts.scheme}://{parts.netloc}")
        assert ref.app is not None
        # From the directory in memory (kept current by the portals' notifications), as ``key`` does: the
        # registry's lookup by domain read every portal's row, twice a delivery (a fifth of a delivery's cost with
        # 50 portals, and growing with each one installed).
        record = await self.directory.find(ref.app)
        if record is None:
            raise BridgeConfigError(f"portal {ref.name!r} ({ref.app}) has not installed b24bridge")
        portal = await self.registry.connect(record.member_id)
        parts = urlsplit(record.client_endpoint)
        return Endpoint(portal, record.member_id, ref.name, record.domain, f"{parts.scheme}://{parts.netloc}")

    async def key(self, ref: PortalRef) -> str | None:
        """The portal's key without connecting (None: an app portal that is not installed), from memory: the door
        asks this for every trigger, the database away or not."""
        if ref.endpoint is not None:
            return endpoint_key(ref.endpoint)
        if ref.inbound:
            return INBOUND
        if ref.webhook is not None:
            return urlsplit(ref.webhook).netloc.lower()
        assert ref.app is not None
        record = await self.directory.find(ref.app)
        return None if record is None else record.member_id
