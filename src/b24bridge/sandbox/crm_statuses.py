"""Reference lists (``crm.status.list``) and the default funnel (``crm.category.list``) of a new portal.

DEAL_STAGE rows (ids, names, sort, colours, semantics) are the docs' crm-status-list.md example verbatim.
[inferred] The other lists are the stock English-portal entries (first entry = the default the add methods use);
their ids and colours are not documented and are numbered here after the deal stages. Lead stages (``STATUS``) come
last, so the ids of the older lists did not move when they were added.
"""

from __future__ import annotations

from typing import Any

_DEAL_STAGES = [
    ("NEW", "New", "#39A8EF", None, "process", True),
    ("PREPARATION", "Document preparation", "#2FC6F6", None, "process", False),
    ("PREPAYMENT_INVOICE", "Prepayment invoice", "#55D0E0", None, "process", False),
    ("EXECUTING", "In progress", "#47E4C2", None, "process", False),
    ("FINAL_INVOICE", "Final invoice", "#FFA900", None, "process", False),
    ("WON", "Deal successful", "#7BD500", "S", "success", True),
    ("LOSE", "Deal failed", "#FF5752", "F", "failure", True),
    ("APOLOGY", "Failure reason analysis", "#FF5752", "F", "apology", False),
]

_SIMPLE: dict[str, list[tuple[str, str]]] = {
    "SOURCE": [("CALL", "Call"), ("EMAIL", "E-Mail"), ("WEB", "Website"), ("ADVERTISING", "Advertising"),
               ("PARTNER", "Existing client"), ("RECOMMENDATION", "By recommendation"),
               ("TRADE_SHOW", "Show/Exhibition"),
               ("WEBFORM", "CRM form"), ("CALLBACK", "Callback"), ("RC_GENERATOR", "Sales boost"),
               ("STORE", "Online Store"), ("OTHER", "Other")],
    "CONTACT_TYPE": [("CLIENT", "Clients"), ("SUPPLIER", "Suppliers"), ("PARTNER", "Partners"), ("OTHER", "Other")],
    "COMPANY_TYPE": [("CUSTOMER", "Client"), ("SUPPLIER", "Supplier"), ("COMPETITOR", "Competitor"),
                     ("PARTNER", "Partner"), ("OTHER", "Other")],
    "DEAL_TYPE": [("SALE", "Sales"), ("COMPLEX", "Integrated sale"), ("GOODS", "Merchandise sales"),
                  ("SERVICES", "Service sales"), ("SERVICE", "After-sales service")],
    "INDUSTRY": [("IT", "Information Technology"), ("TELECOM", "Telecommunication and communication"),
                 ("MANUFACTURING", "Manufacturing"), ("BANKING", "Banking services"), ("CONSULTING", "Consulting"),
                 ("FINANCE", "Finance"), ("GOVERNMENT", "Government"), ("DELIVERY", "Delivery"),
                 ("ENTERTAINMENT", "Entertainment"), ("NOTPROFIT", "Non-profit"), ("OTHER", "Other")],
    "EMPLOYEES": [("EMPLOYEES_1", "fewer than 50"), ("EMPLOYEES_2", "50-250"), ("EMPLOYEES_3", "250-500"),
                  ("EMPLOYEES_4", "over 500")],
    "HONORIFIC": [("HNR_EN_1", "Mr."), ("HNR_EN_2", "Mrs."), ("HNR_EN_3", "Ms."), ("HNR_EN_4", "Dr.")],
}  # fmt: skip


# Lead stages, ENTITY_ID "STATUS" (docs crm/status/index.md). The five codes are crm-lead-add.md's default stages;
# NAME, SORT, COLOR, SYSTEM and SEMANTICS of NEW, CONVERTED and JUNK are the crm.status.list answer in
# tutorials/crm/how-to-get-lists/how-to-get-stages-with-semantics.md, and crm-status-entity-types.md names NEW the
# start, CONVERTED the final success and JUNK the final failure. [inferred] IN_PROCESS / PROCESSED: names from
# crm-lead-add.md, sorts 20 / 30, colours, and SYSTEM "N" (only start and final stages are system, as for deals).
LEAD_STATUS_ENTITY = "STATUS"
_LEAD_STATUSES = [
    ("NEW", "Not processed", 10, "#00FFFF", None, "process", True),
    ("IN_PROCESS", "In process", 20, "#47E4C2", None, "process", False),
    ("PROCESSED", "Processed", 30, "#FFA900", None, "process", False),
    ("CONVERTED", "Converted", 50, "#37B44A", "S", "success", True),
    ("JUNK", "Low-quality lead", 60, "#F54819", "F", "failure", True),
]


def stock_lead_statuses(first_id: int) -> list[dict[str, Any]]:
    """The lead stages of a new portal, row ids from ``first_id`` in steps of 2 (as the docs' ids step)."""
    return [
        {
            "ID": str(first_id + 2 * n), "ENTITY_ID": LEAD_STATUS_ENTITY, "STATUS_ID": status_id, "NAME": name,
            "NAME_INIT": name if system else "", "SORT": str(sort), "SYSTEM": "Y" if system else "N",
            "CATEGORY_ID": None, "COLOR": color, "SEMANTICS": semantics,
            "EXTRA": {"SEMANTICS": extra, "COLOR": color},
        }
        for n, (status_id, name, sort, color, semantics, extra, system) in enumerate(_LEAD_STATUSES)
    ]  # fmt: skip


def stock_statuses() -> list[dict[str, Any]]:
    """The reference lists of a new portal, as ``crm.status.list`` rows (fresh copies: a world changes its own)."""
    rows: list[dict[str, Any]] = []
    next_id = 101
    for status_id, name, color, semantics, extra, system in _DEAL_STAGES:
        rows.append({
            "ID": str(next_id), "ENTITY_ID": "DEAL_STAGE", "STATUS_ID": status_id, "NAME": name,
            "NAME_INIT": name if system else "", "SORT": str(10 * (len(rows) + 1)), "SYSTEM": "Y" if system else "N",
            "CATEGORY_ID": None, "COLOR": color, "SEMANTICS": semantics,
            "EXTRA": {"SEMANTICS": extra, "COLOR": color},
        })  # fmt: skip
        next_id += 2  # the docs example numbers the stages 101, 103, 105 ...
    for entity_id, entries in _SIMPLE.items():
        for sort, (status_id, name) in enumerate(entries, start=1):
            rows.append({
                "ID": str(next_id), "ENTITY_ID": entity_id, "STATUS_ID": status_id, "NAME": name,
                "NAME_INIT": name, "SORT": str(10 * sort), "SYSTEM": "Y" if status_id == "OTHER" else "N",
                "CATEGORY_ID": None, "COLOR": None, "SEMANTICS": None,
            })  # fmt: skip
            next_id += 1
    rows.extend(stock_lead_statuses(next_id + 1))
    return rows


def find_status(rows: list[dict[str, Any]], entity_id: str, status_id: Any) -> dict[str, Any] | None:
    return next((r for r in rows if r["ENTITY_ID"] == entity_id and r["STATUS_ID"] == status_id), None)


def first_status(rows: list[dict[str, Any]], entity_id: str) -> str | None:
    """docs: TYPE_ID / SOURCE_ID default to "the first available" entry of their list."""
    entries = [row for row in rows if row["ENTITY_ID"] == entity_id]
    entries.sort(key=lambda row: (int(row["SORT"]), int(row["ID"])))
    return str(entries[0]["STATUS_ID"]) if entries else None


# Stages of a new smart-process funnel: codes, names, sorts, colours, SYSTEM and SEMANTICS as the docs show them
# (tutorials how-to-add-category-to-spa.md, how-to-get-stages-with-semantics.md). Their rows carry no EXTRA and
# NAME_INIT is the name for every stage, system or not (both tutorials' crm.status.list answers).
_SPA_STAGES = [
    ("NEW", "Start", "#22B9FF", None, True),
    ("PREPARATION", "Preparation", "#88B9FF", None, False),
    ("CLIENT", "Approval", "#10e5fc", None, False),
    ("SUCCESS", "Success", "#00ff00", "S", True),
    ("FAIL", "Failure", "#ff0000", "F", True),
]


def stock_spa_stages() -> list[dict[str, Any]]:
    """The stages a smart-process funnel is created with, as ``crm_categories.add_stage`` takes them (no prefix)."""
    return [
        {"STATUS_ID": status_id, "NAME": name, "NAME_INIT": name, "SORT": 10 * position,
         "SYSTEM": "Y" if system else "N", "COLOR": color, "SEMANTICS": semantics}
        for position, (status_id, name, color, semantics, system) in enumerate(_SPA_STAGES, start=1)
    ]  # fmt: skip


# The default funnel as crm.category.list shows it (docs example: no originId/originatorId on the default one).
DEFAULT_CATEGORY: dict[str, Any] = {"id": 0, "name": "General", "sort": 300, "entityTypeId": 2, "isDefault": "Y"}
