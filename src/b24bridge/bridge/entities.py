"""The CRM records a route hands over, and what differs between them: methods, field names, the stage field,
document ids, events.

A route's source and target are each one of these (``source_entity:`` / ``target_entity:``, deal by default): a deal
or a lead through the legacy ``crm.<entity>.*`` methods (REFERENCE 6), or a smart-process item through ``crm.item.*``
(REFERENCE 6.7: camelCase names, native values, ``{"item": ...}`` answers). The bridge itself always speaks the legacy
names (``STAGE_ID``, ``CONTACT_ID``, ``UF_CRM_...``); a kind turns them into calls and reads the answers back, so the
delivery, the status back, the triggers and ``routes check`` never branch on the kind.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

ITEM = "item"  # the route file's word (and template variable) for a smart-process item
ITEM_DOCUMENT_CLASS = "Bitrix\\Crm\\Integration\\BizProc\\Document\\Dynamic"  # REFERENCE 4 (robots)
FIRST_PROCESS_TYPE_ID = 128  # REFERENCE 6.7: smart processes are 128 and up
# docs crm/universal/events: their data[FIELDS] has the item's ID and its ENTITY_TYPE_ID
ITEM_EVENTS = ("ONCRMDYNAMICITEMADD", "ONCRMDYNAMICITEMUPDATE")
_DYNAMIC_DOCUMENT = re.compile(r"DYNAMIC_(\d{3,9})_(\d{1,12})")
_CAMEL_BREAK = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Za-z])(?=[0-9])")
Call = tuple[str, dict[str, Any]]


def legacy_name(name: str) -> str:
    """``stageId`` -> ``STAGE_ID``, ``parentId1220`` -> ``PARENT_ID_1220``; legacy names stay as they are."""
    if name.upper() == name:
        return name
    return _CAMEL_BREAK.sub("_", name).upper()


def item_name(name: str) -> str:
    """``STAGE_ID`` -> ``stageId``, ``PARENT_ID_1220`` -> ``parentId1220``; ``UF_CRM_...`` stays (the calls ask for the
    original user field names) and so does a name already written in camelCase."""
    if name.startswith("UF_") or name.upper() != name:
        return name
    first, *rest = name.lower().split("_")
    return first + "".join(part.capitalize() for part in rest)


@dataclass(frozen=True)
class RecordKind:
    name: str  # "deal": the route file's word, the template variable; "item" for every smart process
    entity: str  # "DEAL", "DYNAMIC_128": the id map's entity, ORIGIN_ID's middle part, document ids DEAL_<id>
    entity_type_id: int  # REFERENCE 6.7: 1 lead, 2 deal, 128+ a smart process (0: named, not yet resolved)
    stage_field: str  # where the record's stage is, by its legacy name: STAGE_ID (deal, item), STATUS_ID (lead)
    document_class: str  # the workflow document type's entity: CCrmDocumentDeal
    status_list: str = ""  # crm.status.list ENTITY_ID of its stages when they are one list (a lead's STATUS)
    process: str = ""  # a smart process the route names by its title, resolved through crm.type.list

    @property
    def is_item(self) -> bool:
        return self.name == ITEM

    @property
    def label(self) -> str:
        """How messages name it: ``deal``, ``smart-process item (128)``."""
        if not self.is_item:
            return self.name
        known = [part for part in (self.process, str(self.entity_type_id or "")) if part]
        return f"smart-process item ({', '.join(known)})"

    @property
    def has_products(self) -> bool:
        # A smart process's product rows are crm.item.productrow.* (only where the process enables them): not yet.
        return not self.is_item

    # --- calls -------------------------------------------------------------------------------------------------

    def method(self, action: str) -> str:
        return f"crm.item.{action}" if self.is_item else f"crm.{self.name}.{action}"

    def _params(self, **params: Any) -> dict[str, Any]:
        if not self.is_item:
            return params
        if "fields" in params:
            params["fields"] = {item_name(k): v for k, v in params["fields"].items()}
        params.pop("params", None)  # crm.item.* has no REGISTER_SONET_EVENT
        return {"entityTypeId": self.entity_type_id, **params, "useOriginalUfNames": "Y"}

    def get(self, record_id: int | str) -> Call:
        return self.method("get"), self._params(id=record_id)

    def add(self, fields: Mapping[str, Any]) -> Call:
        return self.method("add"), self._params(fields=dict(fields), params={"REGISTER_SONET_EVENT": "N"})

    def update(self, record_id: int | str, fields: Mapping[str, Any]) -> Call:
        params = self._params(id=record_id, fields=dict(fields), params={"REGISTER_SONET_EVENT": "N"})
        return self.method("update"), params

    def find(self, flt: Mapping[str, Any]) -> Call:
        """A lookup of a few records by a filter of legacy names (ids only, no count)."""
        if self.is_item:
            return self.method("list"), self._params(filter={item_name(k): v for k, v in flt.items()}, select=["id"])
        return self.method("list"), {"filter": dict(flt), "select": ["ID"], "start": -1}

    def fields(self) -> Call:
        return self.method("fields"), self._params()

    # --- answers -----------------------------------------------------------------------------------------------

    def record(self, value: Any) -> dict[str, Any]:
        """A ``get`` answer as a record of legacy names (an item's ``updatedTime`` is also its ``DATE_MODIFY``)."""
        if not self.is_item:
            return dict(value) if isinstance(value, dict) else {}
        item = value.get("item") if isinstance(value, dict) else None
        record = {legacy_name(k): v for k, v in (item or {}).items()}
        if "UPDATED_TIME" in record:
            record.setdefault("DATE_MODIFY", record["UPDATED_TIME"])
        return record

    def records(self, value: Any) -> list[dict[str, Any]]:
        """A ``list`` answer as records of legacy names."""
        rows = value.get("items") if self.is_item and isinstance(value, dict) else value
        found = [row for row in rows or [] if isinstance(row, dict)] if isinstance(rows, list) else []
        return [self.record({"item": row}) for row in found] if self.is_item else found

    def field_map(self, value: Any) -> dict[str, Any]:
        """A ``fields`` answer keyed by legacy names."""
        described = value.get("fields") if self.is_item and isinstance(value, dict) else value
        return {legacy_name(k): v for k, v in (described or {}).items()} if isinstance(described, dict) else {}

    def new_id(self, value: Any) -> int:
        if self.is_item:
            value = (value.get("item") or {}).get("id") if isinstance(value, dict) else None
        try:
            return int(value or 0)
        except (TypeError, ValueError):
            return 0

    def ref(self, step: str, field: str | None = None) -> str:
        """A batch reference to a field of an earlier command's answer (the new id when ``field`` is None)."""
        if self.is_item:
            return f"$result[{step}][item][{item_name(field) if field else 'id'}]"
        return f"$result[{step}][{field}]" if field else f"$result[{step}]"

    def origin(self, originator: str, origin_id: str) -> dict[str, str]:
        """The fields that say which bridge record this is (a smart process has no ORIGIN_ID: its external code)."""
        if self.is_item:
            return {"XML_ID": f"{originator}:{origin_id}"}
        return {"ORIGINATOR_ID": originator, "ORIGIN_ID": origin_id}

    # --- names ---------------------------------------------------------------------------------------------------

    def url(self, web_url: str, record_id: int) -> str:
        if self.is_item:
            return f"{web_url}/crm/type/{self.entity_type_id}/details/{record_id}/"
        return f"{web_url}/crm/{self.name}/details/{record_id}/"

    def stage_list(self, category: int) -> str:
        """crm.status.list ENTITY_ID of one pipeline's stages."""
        if self.is_item:
            return f"DYNAMIC_{self.entity_type_id}_STAGE_{category}"
        return self.status_list or ("DEAL_STAGE" if category == 0 else f"DEAL_STAGE_{category}")

    @property
    def document_type(self) -> tuple[str, str, str]:
        return ("crm", self.document_class, self.entity)

    def document_id(self, record_id: int) -> list[str]:
        return ["crm", self.document_class, f"{self.entity}_{record_id}"]

    @property
    def events(self) -> tuple[str, str]:
        """The portal events of a record added and changed (docs crm/*/events)."""
        if self.is_item:
            return ITEM_EVENTS
        return (f"ONCRM{self.entity}ADD", f"ONCRM{self.entity}UPDATE")

    def takes(self, other: RecordKind) -> bool:
        """Records of ``other`` are this kind's: the same, or items of the same process, or of any process while this
        one's title is still to be resolved."""
        if not (self.is_item and other.is_item):
            return self == other
        return self.entity_type_id in (0, other.entity_type_id)


DEAL = RecordKind("deal", "DEAL", 2, "STAGE_ID", "CCrmDocumentDeal")
LEAD = RecordKind("lead", "LEAD", 1, "STATUS_ID", "CCrmDocumentLead", "STATUS")
KINDS: Mapping[str, RecordKind] = MappingProxyType({kind.name: kind for kind in (DEAL, LEAD)})
# A record's contact and company: legacy records whatever the record's own kind.
PARTIES: Mapping[str, RecordKind] = MappingProxyType(
    {
        "CONTACT": RecordKind("contact", "CONTACT", 3, "", "CCrmDocumentContact"),
        "COMPANY": RecordKind("company", "COMPANY", 4, "", "CCrmDocumentCompany"),
    }
)


def process_type_id(entity: str) -> int | None:
    """``DYNAMIC_128`` -> 128; None for a legacy entity's name."""
    digits = entity.removeprefix("DYNAMIC_")
    return int(digits) if digits != entity and digits.isascii() and digits.isdigit() else None


def process_titles(types: Any) -> dict[int, str]:
    """``crm.type.list``'s rows as entityTypeId -> title."""
    titles: dict[int, str] = {}
    for row in types if isinstance(types, list) else []:
        text = str(row.get("entityTypeId") or "") if isinstance(row, dict) else ""
        if text.isascii() and text.isdigit():
            titles[int(text)] = str(row.get("title") or "")
    return titles


def process_titled(titles: Mapping[int, str], title: str) -> int | None:
    """The entityTypeId of the process ``title`` names (case aside) among ``titles`` (entityTypeId -> title)."""
    wanted = title.casefold()
    return next((type_id for type_id, named in sorted(titles.items()) if named.casefold() == wanted), None)


def smart_process(entity_type_id: int = 0, title: str = "") -> RecordKind:
    """A smart process's items: by its ``entityTypeId``, or by its title (resolved later, ``entity_type_id`` 0)."""
    entity = f"DYNAMIC_{entity_type_id}" if entity_type_id else "DYNAMIC"
    return RecordKind(ITEM, entity, entity_type_id, "STAGE_ID", ITEM_DOCUMENT_CLASS, process=title)


def kind_of_event(event: str, entity_type_id: Any = None) -> RecordKind | None:
    """``ONCRMLEADUPDATE`` -> LEAD; ``ONCRMDYNAMICITEMUPDATE`` with its ``ENTITY_TYPE_ID`` -> that process's kind."""
    if event.upper() in ITEM_EVENTS:
        text = str(entity_type_id or "")
        valid = text.isascii() and text.isdigit() and len(text) <= 9 and int(text) >= FIRST_PROCESS_TYPE_ID
        return smart_process(int(text)) if valid else None
    return next((kind for kind in KINDS.values() if event.upper() in kind.events), None)


def record_id_of(document_id: object, bare: RecordKind = DEAL) -> tuple[RecordKind, int] | None:
    """``DEAL_123``, ``LEAD_7``, ``DYNAMIC_128_5`` or ``["crm", "CCrmDocumentLead", "LEAD_7"]`` -> kind, id; a bare
    id is ``bare``'s."""
    text = document_id[-1] if isinstance(document_id, list) and document_id else document_id
    if not isinstance(text, str):
        return None
    dynamic = _DYNAMIC_DOCUMENT.fullmatch(text)
    if dynamic is not None:
        kind, digits = smart_process(int(dynamic[1])), dynamic[2]
    else:
        kind = next((k for k in KINDS.values() if text.startswith(f"{k.entity}_")), bare)
        digits = text.removeprefix(f"{kind.entity}_")
    if not (digits.isascii() and digits.isdigit() and 0 < len(digits) <= 12) or int(digits) == 0:
        return None  # a record id is positive: DEAL_0 names no record
    return kind, int(digits)


def id_of(kind: RecordKind, document_id: object) -> int | None:
    """The id of a ``kind`` record (``LEAD_7``, or a bare ``7``); None for another kind's or no id."""
    found = record_id_of(document_id, kind)
    return found[1] if found is not None and kind.takes(found[0]) else None
