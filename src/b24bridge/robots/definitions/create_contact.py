"""The create-contact robot: a CRM contact from values in the workflow, found again rather than duplicated."""

from __future__ import annotations

import re
from typing import Any

from ..registry import WRITE_RESULT, FinalWrite, InvalidInput, Outcome, Property, Robot, RunContext

CODE = "b24bridge_create_contact"
ORIGINATOR_ID = "b24bridge"

_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_EMAIL = re.compile(rf"^[A-Za-z0-9.!#$%&'*+/=?^_`{{|}}~-]+@{_LABEL}(?:\.{_LABEL})+$")
_PHONE_JUNK = re.compile(r"[\s\-().]")


def normalise_phone(raw: str) -> str:
    """``+`` and 8-15 digits (E.164 length); national formats with a leading 8 (RU/KZ) become +7."""
    text = _PHONE_JUNK.sub("", raw)
    if text.startswith("00"):
        text = "+" + text[2:]
    digits = text[1:] if text.startswith("+") else text
    if not digits.isdigit():
        raise InvalidInput(f"phone {raw!r} is not a phone number")
    if not text.startswith("+") and len(digits) == 11 and digits.startswith("8"):
        digits = "7" + digits[1:]
    if not 8 <= len(digits) <= 15 or digits.startswith("0"):
        raise InvalidInput(f"phone {raw!r} is not a phone number in international format")
    return "+" + digits


def normalise_email(raw: str) -> str:
    text = raw.strip()
    if len(text) > 254 or not _EMAIL.match(text):
        raise InvalidInput(f"e-mail {raw!r} is not a valid address")
    local, _, domain = text.rpartition("@")
    return f"{local}@{domain.lower()}"


def _check(values: dict[str, Any]) -> dict[str, Any]:
    problems: list[str] = []
    for key, normalise in (("phone", normalise_phone), ("email", normalise_email)):
        if values.get(key):
            try:
                values[key] = normalise(values[key])
            except InvalidInput as exc:
                problems.append(str(exc))
    if not (values.get("first_name") or values.get("last_name")):
        problems.append("a first or last name is required")
    if not (values.get("phone") or values.get("email")) and not problems:
        problems.append("a phone or an e-mail is required")
    if problems:
        raise InvalidInput("; ".join(problems))
    values["reuse_existing"] = bool(values.get("reuse_existing"))
    return values


async def perform(run: RunContext, inputs: dict[str, Any]) -> Outcome:
    if run.repeated:
        # An earlier attempt may have created the contact before dying or losing the answer: find it by the
        # run's own key instead of creating a second one.
        found = await run.call(
            "crm.contact.list",
            {"filter": {"ORIGINATOR_ID": ORIGINATOR_ID, "ORIGIN_ID": run.origin_id}, "select": ["ID"]},
        )
        if isinstance(found, list) and found:
            contact_id = int(found[0]["ID"])
            return Outcome({"contact_id": contact_id, "is_new": "Y"}, f"Contact {contact_id} created")
    if inputs.get("reuse_existing"):
        for kind, value in (("PHONE", inputs.get("phone")), ("EMAIL", inputs.get("email"))):
            if not value:
                continue
            hits = await run.call(
                "crm.duplicate.findbycomm", {"type": kind, "values": [value], "entity_type": "CONTACT"}
            )
            # No hits come back as an empty list, hits as {"CONTACT": [ids]} (REFERENCE 6.6).
            ids = hits.get("CONTACT") if isinstance(hits, dict) else None
            if ids:
                contact_id = int(ids[0])
                return Outcome(
                    {"contact_id": contact_id, "is_new": "N"},
                    f"Existing contact {contact_id} found by {kind.lower()} {value}",
                )
    fields: dict[str, Any] = {
        "NAME": inputs.get("first_name") or "",
        "LAST_NAME": inputs.get("last_name") or "",
        "SECOND_NAME": inputs.get("middle_name") or "",
        "ORIGINATOR_ID": ORIGINATOR_ID,
        "ORIGIN_ID": run.origin_id,
    }
    if inputs.get("phone"):
        fields["PHONE"] = [{"VALUE": inputs["phone"], "VALUE_TYPE": "WORK"}]
    if inputs.get("email"):
        fields["EMAIL"] = [{"VALUE": inputs["email"], "VALUE_TYPE": "WORK"}]
    if inputs.get("responsible"):
        fields["ASSIGNED_BY_ID"] = inputs["responsible"]
    if inputs.get("source"):
        fields["SOURCE_ID"] = inputs["source"]
    add = FinalWrite("crm.contact.add", {"fields": fields, "params": {"REGISTER_SONET_EVENT": "N"}})
    return Outcome({"contact_id": WRITE_RESULT, "is_new": "Y"}, "Contact created", write=add)


CREATE_CONTACT = Robot(
    code=CODE,
    name_en="Create contact (b24bridge)",
    name_ru="Создать контакт (b24bridge)",
    description_en="Creates a CRM contact, or finds the one with the same phone or e-mail.",
    description_ru="Создаёт контакт CRM или находит существующий с тем же телефоном или e-mail.",
    properties={
        "last_name": Property("Last name", "Фамилия"),
        "first_name": Property("First name", "Имя"),
        "middle_name": Property("Middle name", "Отчество"),
        "phone": Property("Phone", "Телефон"),
        "email": Property("E-mail", "E-mail"),
        "responsible": Property("Responsible", "Ответственный", type="user"),
        "source": Property("Source", "Источник", description="SOURCE_ID, e.g. WEB, CALL, ADVERTISING"),
        "reuse_existing": Property(
            "Reuse a contact with the same phone or e-mail",
            "Использовать существующий контакт с тем же телефоном или e-mail",
            type="bool",
            default="N",
        ),
    },
    return_properties={
        "contact_id": Property("Contact ID", "ID контакта", type="int"),
        "is_new": Property("Contact created", "Контакт создан", type="bool"),
    },
    check=_check,
    perform=perform,
)
