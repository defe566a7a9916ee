"""A deal's contacts: ``crm.deal.contact.items.{get,set,delete}``, ``crm.deal.contact.{add,delete,fields}``
(docs api-reference/crm/deals/contacts/*.md).

The set is the deal's ``CONTACT_IDS`` (the primary contact first, also ``CONTACT_ID``); a binding's SORT defaults to
``(i + 1) * 10`` by position (docs items-set) and other values are kept in the record's ``CONTACT_SORTS``.
[inferred] a change of the set is a deal update like any other: DATE_MODIFY moves and ONCRMDEALUPDATE goes out.
"""

from __future__ import annotations

import copy
from typing import Any

from ..crm_rules import touch
from ..errors import legacy
from ..registry import Call, rest_method
from ..wire import as_list

_FIELDS = {  # docs crm-deal-contact-fields.md
    "CONTACT_ID": {"type": "integer", "isRequired": True, "isReadOnly": False, "isImmutable": False,
                   "isMultiple": False, "isDynamic": False, "title": "Contact ID"},
    "SORT": {"type": "integer", "isRequired": False, "isReadOnly": False, "isImmutable": False,
             "isMultiple": False, "isDynamic": False, "title": "Sort index"},
    "ROLE_ID": {"type": "integer", "isRequired": False, "isReadOnly": False, "isImmutable": False,
                "isMultiple": False, "isDynamic": False, "title": "Role ID (reserved)"},
    "IS_PRIMARY": {"type": "char", "isRequired": False, "isReadOnly": False, "isImmutable": False,
                   "isMultiple": False, "isDynamic": False, "title": "Primary contact flag"},
}  # fmt: skip


def _deal(call: Call) -> dict[str, Any]:
    try:
        deal_id = int(str(call.param("id")).strip())
    except ValueError:
        deal_id = 0
    if deal_id <= 0:
        raise legacy("The parameter ownerEntityID is invalid or not defined.")
    deal = call.world.records("DEAL").get(deal_id)
    if deal is None:
        raise legacy("Not found.")
    return deal


def bindings(deal: dict[str, Any]) -> list[dict[str, Any]]:
    sorts = deal.get("CONTACT_SORTS") or {}
    ids = deal.get("CONTACT_IDS") or []
    rows = [
        {"CONTACT_ID": contact_id, "SORT": int(sorts.get(str(contact_id), (i + 1) * 10)), "ROLE_ID": 0,
         "IS_PRIMARY": "Y" if i == 0 else "N"}
        for i, contact_id in enumerate(ids)
    ]  # fmt: skip
    return sorted(rows, key=lambda row: row["SORT"])


def _store(call: Call, deal: dict[str, Any], rows: list[dict[str, Any]]) -> None:
    """Write the binding set (the first IS_PRIMARY=Y, else the first row, is primary) as a deal update."""
    before = copy.deepcopy(deal)
    primary = next((row for row in rows if str(row.get("IS_PRIMARY", "")).upper() == "Y"), rows[0] if rows else None)
    ordered = ([primary] if primary else []) + [row for row in rows if row is not primary]
    deal["CONTACT_IDS"] = [int(row["CONTACT_ID"]) for row in ordered]
    deal["CONTACT_ID"] = deal["CONTACT_IDS"][0] if ordered else None
    deal["CONTACT_SORTS"] = {str(int(row["CONTACT_ID"])): int(row["SORT"]) for row in ordered}
    touch(call, deal)
    call.sandbox.crm_changed("DEAL", "UPDATE", deal["ID"], before, dict(deal), actor_user_id=call.caller.user_id)


def _rows(raw: Any) -> list[dict[str, Any]]:
    rows = []
    for index, item in enumerate(entry for entry in as_list(raw) if isinstance(entry, dict)):
        item = {str(k).upper(): v for k, v in item.items()}
        if str(item.get("CONTACT_ID", "")).strip().isdigit() and int(item["CONTACT_ID"]) > 0:
            rows.append({**item, "SORT": int(item.get("SORT") or (index + 1) * 10)})
    return rows


@rest_method("crm.deal.contact.items.get", "crm")
def items_get(call: Call) -> Any:
    return bindings(_deal(call))


@rest_method("crm.deal.contact.items.set", "crm")
def items_set(call: Call) -> Any:
    deal = _deal(call)
    raw = call.param("items")
    if not isinstance(raw, list | dict):
        raise legacy("The parameter items must be array.")
    _store(call, deal, _rows(raw))
    return True


@rest_method("crm.deal.contact.items.delete", "crm")
def items_delete(call: Call) -> Any:
    _store(call, _deal(call), [])
    return True


def _one(call: Call) -> dict[str, Any]:
    fields = call.param("fields")
    rows = _rows([fields]) if isinstance(fields, dict) else []
    if not rows:
        raise legacy("The parameter fields is not defined or invalid.")  # [inferred] text
    return rows[0]


@rest_method("crm.deal.contact.add", "crm")
def contact_add(call: Call) -> Any:
    deal = _deal(call)
    row = _one(call)
    current = [r for r in bindings(deal) if r["CONTACT_ID"] != int(row["CONTACT_ID"])]
    if str(row.get("IS_PRIMARY", "")).upper() == "Y":
        current = [{**r, "IS_PRIMARY": "N"} for r in current]
    _store(call, deal, [*current, row] if current and row.get("IS_PRIMARY") != "Y" else [row, *current])
    return True


@rest_method("crm.deal.contact.delete", "crm")
def contact_delete(call: Call) -> Any:
    deal = _deal(call)
    contact_id = int(_one(call)["CONTACT_ID"])
    _store(call, deal, [r for r in bindings(deal) if r["CONTACT_ID"] != contact_id])
    return True


@rest_method("crm.deal.contact.fields", "crm")
def contact_fields(call: Call) -> Any:
    return _FIELDS
