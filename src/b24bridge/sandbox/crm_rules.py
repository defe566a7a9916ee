"""What the portal fills in by itself when a legacy CRM record is created or changed, per entity type."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from . import crm_categories as funnels
from .crm_statuses import LEAD_STATUS_ENTITY, find_status, first_status
from .registry import Call


def today(call: Call, days: int = 0) -> str:
    return (datetime.fromtimestamp(call.sandbox.now(), call.sandbox.tz) + timedelta(days=days)).date().isoformat()


def common_defaults(call: Call, record: dict[str, Any], record_id: int) -> None:
    """Defaults shared by contacts, companies, deals and leads (docs crm-*-add.md)."""
    now, user = call.sandbox.now(), call.caller.user_id
    record["ID"] = record_id
    if record.get("OPENED") is None:
        record["OPENED"] = "Y"
    if record.get("ASSIGNED_BY_ID") is None:
        record["ASSIGNED_BY_ID"] = user
    record.update(CREATED_BY_ID=user, MODIFY_BY_ID=user, DATE_CREATE=now, DATE_MODIFY=now)
    # The docs' get examples show a fresh record's last activity = its creation.
    record.update(LAST_ACTIVITY_TIME=now, LAST_ACTIVITY_BY=user)


def touch(call: Call, record: dict[str, Any]) -> None:
    record.update(MODIFY_BY_ID=call.caller.user_id, DATE_MODIFY=call.sandbox.now())


def _has_flags(record: dict[str, Any]) -> None:
    record["HAS_PHONE"] = "Y" if record.get("PHONE") else "N"
    record["HAS_EMAIL"] = "Y" if record.get("EMAIL") else "N"
    # [inferred] HAS_IMOL is about open-line IM entries (VALUE_TYPE IMOL / OPENLINE).
    imol = [v for v in record.get("IM") or [] if v["VALUE_TYPE"] in ("IMOL", "OPENLINE")]
    record["HAS_IMOL"] = "Y" if imol else "N"


def primary_with_set(record: dict[str, Any], changed: dict[str, Any], one: str, many: str) -> None:
    """``X_ID`` (deprecated single link) and ``X_IDS`` (the set) stay consistent: the first of the set is primary."""
    if many in changed:
        record[one] = record[many][0] if record.get(many) else None
    elif one in changed:
        ids = [i for i in record.get(many) or [] if i != record[one]]
        record[many] = ([record[one]] if record[one] else []) + ids


def contact_rules(call: Call, before: dict[str, Any] | None, record: dict[str, Any], changed: dict[str, Any]) -> None:
    if before is None:
        record.setdefault("EXPORT", "Y")
        for name, entity_id in (("TYPE_ID", "CONTACT_TYPE"), ("SOURCE_ID", "SOURCE")):
            if not record.get(name):
                record[name] = first_status(call.world.statuses, entity_id)
    primary_with_set(record, changed, "COMPANY_ID", "COMPANY_IDS")
    _has_flags(record)


def company_rules(call: Call, before: dict[str, Any] | None, record: dict[str, Any], changed: dict[str, Any]) -> None:
    if before is None:
        record.setdefault("IS_MY_COMPANY", "N")
        if not record.get("COMPANY_TYPE"):
            record["COMPANY_TYPE"] = first_status(call.world.statuses, "COMPANY_TYPE")
    _has_flags(record)


def deal_rules(call: Call, before: dict[str, Any] | None, record: dict[str, Any], changed: dict[str, Any]) -> None:
    now, user = call.sandbox.now(), call.caller.user_id
    world = call.world
    if before is None:
        record["CATEGORY_ID"] = funnels.existing_category(world, record.get("CATEGORY_ID"))
        if not record.get("TITLE"):
            record["TITLE"] = f"Deal #{record['ID']}"  # docs: template "Deal #{id}"
        for name in ("IS_RECURRING", "IS_RETURN_CUSTOMER", "IS_REPEATED_APPROACH", "IS_MANUAL_OPPORTUNITY"):
            record.setdefault(name, "N")
        record.setdefault("OPPORTUNITY", 0.0)
        record.setdefault("TAX_VALUE", 0.0)
        # [inferred] an unset currency becomes the portal's base currency.
        record["CURRENCY_ID"] = record.get("CURRENCY_ID") or "USD"
        record["BEGINDATE"] = record.get("BEGINDATE") or today(call)
        record["CLOSEDATE"] = record.get("CLOSEDATE") or today(call, 7)
        for name, entity_id in (("TYPE_ID", "DEAL_TYPE"), ("SOURCE_ID", "SOURCE")):
            if not record.get(name):
                record[name] = first_status(world.statuses, entity_id)
    category = int(record["CATEGORY_ID"])
    current = before["STAGE_ID"] if before else None
    record["STAGE_ID"] = funnels.resolve_stage(world, category, record.get("STAGE_ID") or current, current)
    stage = funnels.find_stage(world, category, str(record["STAGE_ID"]))
    semantic = funnels.semantics(stage)
    record["STAGE_SEMANTIC_ID"] = semantic
    if before is None or before.get("STAGE_ID") != record["STAGE_ID"]:
        record.update(MOVED_BY_ID=user, MOVED_TIME=now)
        # A final stage (S/F) closes the deal, as the portal's kanban does.
        record["CLOSED"] = "N" if semantic == "P" else "Y"
    record.setdefault("CLOSED", "N")
    record["IS_NEW"] = "Y" if record["STAGE_ID"] == funnels.start_stage(world, category) else "N"
    primary_with_set(record, changed, "CONTACT_ID", "CONTACT_IDS")


def lead_rules(call: Call, before: dict[str, Any] | None, record: dict[str, Any], changed: dict[str, Any]) -> None:
    now, user = call.sandbox.now(), call.caller.user_id
    statuses = call.world.statuses
    if before is None:
        if not record.get("TITLE"):
            # [inferred] the template "Lead #{id}": the docs' crm.item.list example has "Lead #253" for lead 253.
            record["TITLE"] = f"Lead #{record['ID']}"
        record.setdefault("IS_MANUAL_OPPORTUNITY", "N")
        record.setdefault("OPPORTUNITY", 0.0)
        # [inferred] an unset currency becomes the portal's base currency, as for deals.
        record["CURRENCY_ID"] = record.get("CURRENCY_ID") or "USD"
        if not record.get("SOURCE_ID"):
            record["SOURCE_ID"] = first_status(statuses, "SOURCE")
    # [inferred] a stage that is not in the STATUS list: a new lead starts in the first stage, an update keeps it.
    if find_status(statuses, LEAD_STATUS_ENTITY, record.get("STATUS_ID")) is None:
        record["STATUS_ID"] = before["STATUS_ID"] if before else first_status(statuses, LEAD_STATUS_ENTITY)
    row = find_status(statuses, LEAD_STATUS_ENTITY, record["STATUS_ID"])
    semantic = str(row.get("SEMANTICS") or "P") if row else "P"  # docs crm-lead-get.md: P, S or F
    record["STATUS_SEMANTIC_ID"] = semantic
    if before is None or before.get("STATUS_ID") != record["STATUS_ID"]:
        record.update(MOVED_BY_ID=user, MOVED_TIME=now)
        # [inferred] DATE_CLOSED: the moment the lead reached a final stage (S/F); empty while in progress.
        record["DATE_CLOSED"] = None if semantic == "P" else now
    # docs crm-lead-add.md / crm-lead-update.md: IS_RETURN_CUSTOMER cannot be set; it becomes Y when COMPANY_ID or
    # CONTACT_ID is given. [inferred] it follows whether the lead has a company or contact at all.
    primary_with_set(record, changed, "CONTACT_ID", "CONTACT_IDS")
    record["IS_RETURN_CUSTOMER"] = "Y" if record.get("COMPANY_ID") or record.get("CONTACT_ID") else "N"
    _has_flags(record)


RULES = {"CONTACT": contact_rules, "COMPANY": company_rules, "DEAL": deal_rules, "LEAD": lead_rules}
