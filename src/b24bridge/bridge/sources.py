"""The source adapters: a portal's record (read in one round trip with what the route uses of it) and a record your
own system POSTed (``POST /api/inbound/{route}``, nothing to read)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from b24bridge.bitrix import CallObserver, CommandResult, Portal

from .adapters import SourceRecord
from .connections import Endpoint
from .mapping import reads_tax_number
from .route_model import INBOUND, TAX_NUMBER, Route
from .writer import record_id as _id


@dataclass(frozen=True)
class PortalSource:
    endpoint: Endpoint

    @property
    def key(self) -> str:
        return self.endpoint.key

    @property
    def portal(self) -> Portal:
        return self.endpoint.portal

    def view(self) -> dict[str, str]:
        return self.endpoint.view()

    def url(self, route: Route, record_id: int) -> str:
        return route.source_entity.url(self.endpoint.web_url, record_id)

    async def read(self, route: Route, record_id: int, observer: CallObserver) -> SourceRecord:
        """One round trip: the deal, its rows, and its contact, company and requisites (only what the route uses),
        found through the deal's own CONTACT_ID and COMPANY_ID (``$result[deal][...]``). The related records are read
        by list filters and checked against the deal's ids here: a deal without a contact (an empty reference) reads
        nothing wrong, whatever the portal makes of an empty filter value. The reads may fail one by one, so the chain
        asks for no halt."""
        kind = route.source_entity
        chain: list[tuple[str, str, dict[str, Any]]] = [("deal", *kind.get(record_id))]
        if route.products and kind.has_products:
            chain.append(("rows", kind.method("productrows.get"), {"id": record_id}))
        if route.contact:
            chain.append(("contact", "crm.contact.list", _by_id(kind.ref("deal", "CONTACT_ID"))))
        if route.company:
            chain.append(("company", "crm.company.list", _by_id(kind.ref("deal", "COMPANY_ID"))))
        if reads_tax_number(route):
            flt = {"ENTITY_TYPE_ID": 4, "ENTITY_ID": kind.ref("deal", "COMPANY_ID")}
            chain.append(("requisites", "crm.requisite.list", {"filter": flt, "select": _REQUISITE, "start": -1}))
        got = await self.endpoint.portal.chain(chain, observer=observer, halt=False)
        deal = kind.record(got["deal"].unwrap())
        rows = [row for row in (got["rows"].unwrap() if "rows" in got else None) or [] if isinstance(row, dict)]
        contact_id, company_id = _id(deal.get("CONTACT_ID")), _id(deal.get("COMPANY_ID"))
        contact = _record(got.get("contact"), contact_id)
        company = _record(got.get("company"), company_id)
        if company is not None and "requisites" in got:
            requisites = [r for r in got["requisites"].unwrap() or [] if _id(r.get("ENTITY_ID")) == company_id]
            inn = next((str(r["RQ_INN"]) for r in requisites if r.get("RQ_INN")), None)
            company = {**company, TAX_NUMBER: inn}
        return SourceRecord(deal, contact, company, rows)


@dataclass(frozen=True)
class PostedSource:
    """A record your system POSTed: it is what the delivery starts from."""

    record: SourceRecord
    key: str = INBOUND
    portal: None = None

    def view(self) -> dict[str, str]:
        return {"name": INBOUND, "domain": "", "member_id": ""}

    def url(self, route: Route, record_id: int) -> str:
        return ""

    async def read(self, route: Route, record_id: int, observer: CallObserver) -> SourceRecord:
        return self.record


# Everything a contact or company has: plain and user fields, and the multi-fields that "*" leaves out.
_PARTY_SELECT = ["*", "UF_*", "PHONE", "EMAIL", "WEB", "IM"]
_REQUISITE = ["ID", "ENTITY_ID", "RQ_INN"]


def _by_id(reference: str) -> dict[str, Any]:
    # start=-1: no COUNT(*) for a lookup that finds one record (REFERENCE 2.3).
    return {"filter": {"ID": reference}, "select": _PARTY_SELECT, "start": -1}


def _record(result: CommandResult | None, wanted: int) -> dict[str, Any] | None:
    """The record with id ``wanted`` from a list read, or None when the deal has none; a failed read of a record
    the deal does have is raised."""
    if result is None or not wanted:
        return None
    found = result.unwrap()
    return next((r for r in found or [] if isinstance(r, dict) and _id(r.get("ID")) == wanted), None)
