"""The CRM records a route hands over, and what differs between them: methods, the stage field, document ids, events.

A route's source and target are each one of these (``source_entity:`` / ``target_entity:``, deal by default); the
delivery, the status back, the triggers and ``routes check`` take every name that differs from here, so a new
legacy-style entity is one value below (REFERENCE 6: deals and leads share ``crm.<entity>.*`` and product rows).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType


@dataclass(frozen=True)
class RecordKind:
    name: str  # "deal": the route file's word, the template variable and the method prefix crm.deal.*
    entity: str  # "DEAL": the id map's entity, ORIGIN_ID's middle part, document ids DEAL_<id>
    entity_type_id: int  # REFERENCE 6.7: 1 lead, 2 deal
    stage_field: str  # where the record's stage is: STAGE_ID (deal), STATUS_ID (lead)
    document_class: str  # the workflow document type's entity: CCrmDocumentDeal
    status_list: str = ""  # crm.status.list ENTITY_ID of its stages when they are one list (a lead's STATUS)

    def method(self, action: str) -> str:
        return f"crm.{self.name}.{action}"

    def url(self, web_url: str, record_id: int) -> str:
        return f"{web_url}/crm/{self.name}/details/{record_id}/"

    @property
    def document_type(self) -> tuple[str, str, str]:
        return ("crm", self.document_class, self.entity)

    def document_id(self, record_id: int) -> list[str]:
        return ["crm", self.document_class, f"{self.entity}_{record_id}"]

    @property
    def events(self) -> tuple[str, str]:
        """The portal events of a record added and changed (docs crm/*/events)."""
        return (f"ONCRM{self.entity}ADD", f"ONCRM{self.entity}UPDATE")


DEAL = RecordKind("deal", "DEAL", 2, "STAGE_ID", "CCrmDocumentDeal")
LEAD = RecordKind("lead", "LEAD", 1, "STATUS_ID", "CCrmDocumentLead", "STATUS")
KINDS: Mapping[str, RecordKind] = MappingProxyType({kind.name: kind for kind in (DEAL, LEAD)})


def kind_of_event(event: str) -> RecordKind | None:
    """``ONCRMLEADUPDATE`` -> LEAD."""
    return next((kind for kind in KINDS.values() if event.upper() in kind.events), None)


def record_id_of(document_id: object, bare: RecordKind = DEAL) -> tuple[RecordKind, int] | None:
    """``DEAL_123``, ``LEAD_7`` or ``["crm", "CCrmDocumentLead", "LEAD_7"]`` -> kind, id; a bare id is ``bare``'s."""
    text = document_id[-1] if isinstance(document_id, list) and document_id else document_id
    if not isinstance(text, str):
        return None
    kind = next((k for k in KINDS.values() if text.startswith(f"{k.entity}_")), bare)
    digits = text.removeprefix(f"{kind.entity}_")
    if not (digits.isascii() and digits.isdigit() and 0 < len(digits) <= 12) or int(digits) == 0:
        return None  # a record id is positive: DEAL_0 names no record
    return kind, int(digits)


def id_of(kind: RecordKind, document_id: object) -> int | None:
    """The id of a ``kind`` record (``LEAD_7``, or a bare ``7``); None for another kind's or no id."""
    found = record_id_of(document_id, kind)
    return found[1] if found is not None and found[0] == kind else None
