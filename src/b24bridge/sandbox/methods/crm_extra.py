"""Deal and lead product rows (one implementation, by owner entity) and duplicate search by phone/e-mail."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from ..crm_fields import BY_ENTITY
from ..crm_values import php_number as _n
from ..errors import RestError, legacy
from ..registry import Call, rest_method
from ..wire import as_list
from .crm import record_id

ROW_COUNTER = "CRM_PRODUCT_ROW"  # one sequence for the rows of every owner, as the portal's one table
# Owner entity -> OWNER_TYPE of its rows (docs crm-deal-productrows-get.md "D", crm-lead-productrows-get.md "L").
OWNER_TYPES = {"DEAL": "D", "LEAD": "L"}
_E_RATE = "Discount Rate (DISCOUNT_RATE) is required if Percentage Discount Type (DISCOUNT_TYPE_ID) is defined.<br>"
_E_SUM_100 = (
    "Discount Sum (DISCOUNT_SUM) is required if Percentage Discount Type (DISCOUNT_TYPE_ID) is defined "
    "and Discount Rate (DISCOUNT_RATE) is 100%<br>"
)
_E_SUM = "Discount Sum (DISCOUNT_SUM) is required if Monetary Discount Type (DISCOUNT_TYPE_ID) is defined.<br>"


def _num(value: Any, default: float | None = 0.0) -> float | None:
    if value is None or value == "":
        return default
    try:
        return float(str(value).replace(",", "."))
    except ValueError:
        return default


def _row(raw: dict[str, Any], owner_type: str, owner_id: int, row_id: int) -> dict[str, Any]:
    """One row as crm.{deal,lead}.productrows.get show it (docs: natives except ID/OWNER_ID/PRICE_ACCOUNT strings).

    [inferred] The portal's price chain: PRICE (final, per unit, with tax) → PRICE_EXCLUSIVE (without tax) →
    PRICE_NETTO (before discount) → PRICE_BRUTTO (before discount, with tax); it matches the docs example
    (PRICE_NETTO 999, 10 % → DISCOUNT_SUM 99.9, PRICE 899.1).
    """
    r = {str(k).upper(): v for k, v in raw.items()}
    price = _num(r.get("PRICE")) or 0.0
    quantity = _num(r.get("QUANTITY"), 1.0)
    tax_rate = _num(r.get("TAX_RATE"), None)
    discount_type = int(_num(r.get("DISCOUNT_TYPE_ID"), 2) or 2)
    if discount_type == 2 and "DISCOUNT_TYPE_ID" in r and "DISCOUNT_RATE" not in r:
        raise RestError("ERROR_CORE", _E_RATE)
    rate = _num(r.get("DISCOUNT_RATE")) or 0.0
    if discount_type == 2 and rate >= 100 and "DISCOUNT_SUM" not in r:
        raise RestError("ERROR_CORE", _E_SUM_100)
    if discount_type == 1 and "DISCOUNT_SUM" not in r:
        raise RestError("ERROR_CORE", _E_SUM)
    exclusive = price / (1 + tax_rate / 100) if tax_rate else price
    if discount_type == 2 and rate < 100:
        netto = exclusive / (1 - rate / 100)
        discount = netto - exclusive
    else:
        discount = _num(r.get("DISCOUNT_SUM")) or 0.0
        netto = exclusive + discount
        rate = discount / netto * 100 if netto else 0.0
    brutto = netto * (1 + (tax_rate or 0) / 100)
    name = str(r.get("PRODUCT_NAME") or f"[{row_id}]")  # docs: no name and no product → "[{rowId}]"
    return {
        "ID": str(row_id), "OWNER_ID": str(owner_id), "OWNER_TYPE": owner_type,
        "PRODUCT_ID": int(_num(r.get("PRODUCT_ID")) or 0), "PRODUCT_NAME": name, "ORIGINAL_PRODUCT_NAME": name,
        "PRODUCT_DESCRIPTION": r.get("PRODUCT_DESCRIPTION"), "PRICE": _n(price), "PRICE_EXCLUSIVE": _n(exclusive),
        "PRICE_NETTO": _n(netto), "PRICE_BRUTTO": _n(brutto), "PRICE_ACCOUNT": f"{price:.2f}", "QUANTITY": _n(quantity),
        "DISCOUNT_TYPE_ID": discount_type, "DISCOUNT_RATE": _n(rate), "DISCOUNT_SUM": _n(discount),
        "TAX_RATE": _n(tax_rate) if tax_rate is not None else None,
        "TAX_INCLUDED": "Y" if str(r.get("TAX_INCLUDED", "N")).upper() == "Y" else "N", "CUSTOMIZED": "Y",
        "MEASURE_CODE": int(_num(r.get("MEASURE_CODE")) or 0), "MEASURE_NAME": str(r.get("MEASURE_NAME") or ""),
        "SORT": int(_num(r.get("SORT")) or 0), "XML_ID": None, "TYPE": 1, "STORE_ID": None, "RESERVE_ID": None,
        "DATE_RESERVE_END": None, "RESERVE_QUANTITY": None,
    }  # fmt: skip


def _owner(call: Call, entity: str) -> tuple[int, dict[str, Any]]:
    owner_id = record_id(call, "The parameter id is invalid or not defined.")
    owner = call.world.records(entity).get(owner_id)
    if owner is None:
        raise legacy("Not found")
    return owner_id, owner


def _rows_param(call: Call) -> list[dict[str, Any]]:
    raw = call.param("rows")
    # docs crm-lead-productrows-set.md: "The parameter rows must be array." [inferred] a missing or empty ``rows``
    # (what a form encoder sends for an empty list) means no rows, so only a scalar value is refused.
    if raw not in (None, "") and not isinstance(raw, list | dict):
        raise legacy("The parameter rows must be array.")
    return [r for r in as_list(raw) if isinstance(r, dict)]


def make_productrows(entity: str) -> dict[str, Callable[[Call], Any]]:
    """``crm.{deal,lead}.productrows.{get,set}`` for one owner entity."""
    owner_type = OWNER_TYPES[entity]
    has_tax = "TAX_VALUE" in BY_ENTITY[entity].by_name  # deals keep a tax total, leads have no such field

    def get(call: Call) -> Any:
        owner_id, _ = _owner(call, entity)
        return sorted(call.world.rows_of(entity).get(owner_id, []), key=lambda r: (r["SORT"], int(r["ID"])))

    def set_(call: Call) -> Any:
        owner_id, owner = _owner(call, entity)
        raw_rows = _rows_param(call)
        # Build every row before storing any, so a discount error leaves the old rows in place.
        counter = call.world.counters.get(ROW_COUNTER, 0)
        rows = [_row(raw, owner_type, owner_id, counter + i + 1) for i, raw in enumerate(raw_rows)]
        call.world.counters[ROW_COUNTER] = counter + len(rows)
        call.world.rows_of(entity)[owner_id] = rows  # docs: replaces all rows; rows not passed are deleted
        if owner.get("IS_MANUAL_OPPORTUNITY") != "Y":
            # The portal keeps an automatic total in step with the rows (docs crm-deal-add.md IS_MANUAL_OPPORTUNITY).
            before = dict(owner)
            owner["OPPORTUNITY"] = round(sum(float(r["PRICE"]) * float(r["QUANTITY"]) for r in rows), 2)
            if has_tax:
                owner["TAX_VALUE"] = round(
                    sum((float(r["PRICE"]) - float(r["PRICE_EXCLUSIVE"])) * float(r["QUANTITY"]) for r in rows), 2
                )
            if before != owner:
                owner.update(MODIFY_BY_ID=call.caller.user_id, DATE_MODIFY=call.sandbox.now())
                actor = call.caller.user_id
                call.sandbox.crm_changed(entity, "UPDATE", owner_id, before, dict(owner), actor_user_id=actor)
        return True

    return {"get": get, "set": set_}


for _entity in OWNER_TYPES:
    for _action, _handler in make_productrows(_entity).items():
        rest_method(f"crm.{_entity.lower()}.productrows.{_action}", "crm")(_handler)


# --- crm.duplicate.findbycomm ------------------------------------------------------------------------------

_EXTENSION = re.compile(r"(?i)\s*(?:ext\.?|extension|доб\.?|#|x)\s*\d+\s*$")


def _phone_key(value: str) -> str:
    """docs: the search ignores the extension; [inferred] numbers compare by their digits only."""
    return re.sub(r"\D", "", _EXTENSION.sub("", value))


@rest_method("crm.duplicate.findbycomm", "crm")
def duplicate_findbycomm(call: Call) -> Any:
    comm = str(call.param("type") or "").strip().upper()
    if comm not in ("EMAIL", "PHONE"):
        if not comm:
            raise RestError("Communication type is not defined", "Parameter 'type' is required.")
        # [inferred] description: the docs give only the code text for this error.
        raise RestError(
            f"Communication type '{comm}' is not supported in current context", "Parameter 'type' is invalid."
        )
    values = call.param("values")
    if not isinstance(values, list | dict) or not values:
        # description seen in a real portal answer quoted by a client test; the code text is the docs'.
        raise RestError("Communication values is not defined", "Parameter 'values' is required.")
    key = _phone_key if comm == "PHONE" else (lambda v: v.strip().lower())
    # [src] portal source: empty / non-string values are skipped, duplicates collapse, at most 20 are used.
    wanted = list(dict.fromkeys(key(str(v)) for v in as_list(values) if isinstance(v, str | int) and str(v)))
    wanted = [w for w in wanted if w][:20]
    entity = str(call.param("entity_type") or "").upper()
    types = [entity] if entity in ("LEAD", "CONTACT", "COMPANY") else ["LEAD", "CONTACT", "COMPANY"]
    result: dict[str, list[int]] = {}
    for type_name in types:
        hits = [rid for rid, rec in sorted(call.world.records(type_name).items())
                if any(key(str(v["VALUE"])) in wanted for v in rec.get(comm) or [])]  # fmt: skip
        if hits:
            result[type_name] = hits
        if len(hits) >= 20:
            break  # docs: 20+ duplicates of one type → the later types are not returned
    return result  # an empty dict goes out as [] (PHP), which is the documented no-hit answer
