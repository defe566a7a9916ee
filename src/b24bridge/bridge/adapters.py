"""The delivery pipeline's two narrow interfaces: a source adapter reads a record, a target adapter writes it.

One delivery (:class:`~.delivery.Deliverer`) is: ``source.read`` -> the id map -> the route's mapping -> dedupe ->
``target.write``. The sources are a portal's record (:class:`~.sources.PortalSource`) and a record your system
POSTed (:class:`~.sources.PostedSource`); the targets are a portal (:class:`~.portal_target.PortalTarget`) and your
system's HTTPS endpoint (:class:`~.endpoint_target.EndpointTarget`). A new kind of either is one adapter.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from b24bridge.bitrix import CallObserver, Portal

from .repository import Link
from .route_model import Route
from .schemas import DeliveryResult


@dataclass
class SourceRecord:
    """What a delivery starts from: the source record (read from the portal, or POSTed), its contact, company and
    product rows."""

    deal: dict[str, Any]
    contact: dict[str, Any] | None
    company: dict[str, Any] | None
    rows: list[dict[str, Any]]


@dataclass(frozen=True)
class Mapped:
    """One delivery's mapped values: the record, its contact and company (None: none), its product rows."""

    record: dict[str, Any]
    contact: dict[str, Any] | None
    company: dict[str, Any] | None
    rows: list[dict[str, Any]] | None


@dataclass(frozen=True)
class Handover:
    """One delivery as a target adapter gets it: what was read, what it maps to, what the id map knows."""

    route: Route
    source_key: str
    source_view: Mapping[str, str]
    source_url: str  # the source record's page ("" when your system sent it)
    record_id: int
    found: SourceRecord
    mapped: Mapped
    links: Mapping[tuple[str, int], Link]
    run_id: int
    repeated: bool  # a retry or a replay: look the record up before creating it again
    observer: CallObserver

    @property
    def link(self) -> Link | None:
        return self.links.get((self.route.source_entity.entity, self.record_id))


class SourceAdapter(Protocol):
    @property
    def key(self) -> str:
        """The source's name in the id map and the run log (a member_id, a webhook's host, ``inbound``)."""
        ...

    @property
    def portal(self) -> Portal | None:
        """The portal, when the source is one (users are matched between two portals)."""
        ...

    def view(self) -> dict[str, str]: ...

    def url(self, route: Route, record_id: int) -> str: ...

    async def read(self, route: Route, record_id: int, observer: CallObserver) -> SourceRecord: ...


class TargetAdapter(Protocol):
    @property
    def key(self) -> str: ...

    @property
    def portal(self) -> Portal | None: ...

    def view(self) -> dict[str, str]: ...

    def linked(self, route: Route, link: Link | None) -> DeliveryResult:
        """What a delivery that writes nothing reports of the record ``link`` stands for (``skipped`` by the
        caller)."""
        ...

    async def write(self, handover: Handover) -> DeliveryResult: ...
