"""Field definitions of the legacy CRM entities (contact, company, deal, lead), kept as data.

Every entity method (add/get/list/update/fields) works off these tables, so adding a field is one line here.
Names, types, flags and titles follow docs:`api-reference/crm/{contacts,companies,deals,leads}/crm-*-fields.md` and
the field lists of the ``*.get`` pages.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

# Field types that hold a record id or a user id: stored as int, rendered as a string.
INT_TYPES = frozenset(
    {"integer", "user", "crm_company", "crm_contact", "crm_lead", "crm_quote", "crm_category", "crm_entity"}
)
MULTI_TYPES = ("PHONE", "EMAIL", "WEB", "IM", "LINK")

# VALUE_TYPE sets per multi-field type (REFERENCE 6.1, docs crm/data-types.md#crm_multifield).
VALUE_TYPES: dict[str, tuple[str, ...]] = {
    "PHONE": ("WORK", "MOBILE", "FAX", "HOME", "PAGER", "MAILING", "OTHER"),
    "EMAIL": ("WORK", "HOME", "MAILING", "OTHER"),
    "WEB": ("WORK", "HOME", "VK", "LIVEJOURNAL", "TWITTER", "OTHER"),
    "IM": ("TELEGRAM", "VK", "SKYPE", "VIBER", "BITRIX24", "OPENLINE", "IMOL", "ICQ", "MSN", "JABBER", "OTHER"),
    "LINK": ("USER",),
}  # fmt: skip

# Human names used in the portal's e-mail validation message ("The field `Work e-mail` contains ...").
EMAIL_TITLES = {
    "WORK": "Work e-mail",
    "HOME": "Personal e-mail",
    "MAILING": "Newsletter e-mail",
    "OTHER": "Other e-mail",
}
MULTI_TITLES = {"PHONE": "Phone", "EMAIL": "E-mail", "WEB": "Website", "IM": "Messenger", "LINK": "Link"}


@dataclass(frozen=True)
class FieldDef:
    name: str
    type: str
    title: str
    required: bool = False
    read_only: bool = False
    immutable: bool = False
    multiple: bool = False
    status_type: str | None = None
    # Shown by crm.*.fields and accepted on write, but not returned by get / the "*" select
    # (e.g. deal CONTACT_IDS: docs say it is neither selectable nor filterable in crm.deal.list).
    hidden: bool = False
    # Read back as "" rather than null while unset (lead BIRTHDATE / DATE_CLOSED in the crm.lead.get example).
    empty_text: bool = False

    def describe(self) -> dict[str, Any]:
        view: dict[str, Any] = {
            "type": self.type,
            "isRequired": self.required,
            "isReadOnly": self.read_only,
            "isImmutable": self.immutable,
            "isMultiple": self.multiple,
            "isDynamic": False,
        }
        if self.status_type:
            view["statusType"] = self.status_type
        view["title"] = self.title
        return view


def _f(name: str, type_: str, title: str, flags: str = "", status: str | None = None) -> FieldDef:
    """Compact table rows: flags R=required, O=read-only, I=immutable, M=multiple, H=hidden from get,
    E=an unset value reads back as ``""``."""
    return FieldDef(
        name, type_, title, "R" in flags, "O" in flags, "I" in flags, "M" in flags, status, "H" in flags, "E" in flags
    )


_UTM = [
    _f("UTM_SOURCE", "string", "Advertising System"),
    _f("UTM_MEDIUM", "string", "Traffic Type"),
    _f("UTM_CAMPAIGN", "string", "Campaign Identifier"),
    _f("UTM_CONTENT", "string", "Campaign Content"),
    _f("UTM_TERM", "string", "Campaign Search Term"),
]
_AUDIT = [
    _f("ASSIGNED_BY_ID", "user", "Responsible Person"),
    _f("CREATED_BY_ID", "user", "Created By", "O"),
    _f("MODIFY_BY_ID", "user", "Modified By", "O"),
    _f("DATE_CREATE", "datetime", "Creation Date", "O"),
    _f("DATE_MODIFY", "datetime", "Modification Date", "O"),
]
_ACTIVITY = [
    _f("LAST_ACTIVITY_TIME", "datetime", "Last Activity", "O"),
    _f("LAST_ACTIVITY_BY", "user", "Last Activity By", "O"),
]
_HAS = [
    _f("HAS_PHONE", "char", "Phone Set", "O"),
    _f("HAS_EMAIL", "char", "E-mail Set", "O"),
    _f("HAS_IMOL", "char", "Open Line Set", "O"),
]
_ORIGIN = [
    _f("ORIGINATOR_ID", "string", "External Source"),
    _f("ORIGIN_ID", "string", "Identifier in External Source"),
    _f("ORIGIN_VERSION", "string", "Original Version"),
]
_MULTI = [_f(code, "crm_multifield", MULTI_TITLES[code], "M") for code in MULTI_TYPES]


def _address(prefix: str, title: str) -> list[FieldDef]:
    parts = [("", "Address"), ("_2", "Address (line 2)"), ("_CITY", "City"), ("_POSTAL_CODE", "Postal Code"),
             ("_REGION", "Region"), ("_PROVINCE", "Province"), ("_COUNTRY", "Country"),
             ("_COUNTRY_CODE", "Country Code")]  # fmt: skip
    fields = [_f(f"{prefix}{suffix}", "string", f"{title}{name}".strip()) for suffix, name in parts]
    return [*fields, _f(f"{prefix}_LOC_ADDR_ID", "integer", f"{title}Location Address ID".strip())]


CONTACT: list[FieldDef] = [
    _f("ID", "integer", "ID", "O"),
    _f("HONORIFIC", "crm_status", "Salutation", "", "HONORIFIC"),
    _f("NAME", "string", "First Name"),
    _f("SECOND_NAME", "string", "Middle Name"),
    _f("LAST_NAME", "string", "Last Name"),
    _f("PHOTO", "file", "Photo"),
    _f("BIRTHDATE", "date", "Date of Birth"),
    _f("TYPE_ID", "crm_status", "Contact Type", "", "CONTACT_TYPE"),
    _f("SOURCE_ID", "crm_status", "Source", "", "SOURCE"),
    _f("SOURCE_DESCRIPTION", "string", "Source Information"),
    _f("POST", "string", "Position"),
    *_address("ADDRESS", ""),
    _f("COMMENTS", "string", "Comment"),
    _f("OPENED", "char", "Available to Everyone"),
    _f("EXPORT", "char", "Included in Export"),
    *_HAS,
    *_AUDIT,
    _f("COMPANY_ID", "crm_company", "Company"),
    _f("COMPANY_IDS", "crm_company", "Company", "MH"),
    _f("LEAD_ID", "crm_lead", "Lead", "O"),
    *_ORIGIN,
    _f("FACE_ID", "integer", "Face ID", "O"),
    *_UTM,
    *_ACTIVITY,
    *_MULTI,
]

COMPANY: list[FieldDef] = [
    _f("ID", "integer", "ID", "O"),
    _f("TITLE", "string", "Company Name", "R"),
    _f("COMPANY_TYPE", "crm_status", "Company Type", "", "COMPANY_TYPE"),
    _f("LOGO", "file", "Logo"),
    *_address("ADDRESS", ""),
    _f("ADDRESS_LEGAL", "string", "Legal Address"),
    *_address("REG_ADDRESS", "Legal "),
    _f("BANKING_DETAILS", "string", "Banking Details"),
    _f("INDUSTRY", "crm_status", "Industry", "", "INDUSTRY"),
    _f("EMPLOYEES", "crm_status", "Number of Employees", "", "EMPLOYEES"),
    _f("CURRENCY_ID", "crm_currency", "Currency"),
    _f("REVENUE", "double", "Annual Revenue"),
    _f("OPENED", "char", "Available to Everyone"),
    _f("COMMENTS", "string", "Comment"),
    *_HAS,
    _f("IS_MY_COMPANY", "char", "My Company"),
    *_AUDIT,
    _f("CONTACT_ID", "crm_contact", "Contact", "MH"),
    _f("LEAD_ID", "crm_lead", "Lead", "O"),
    *_ORIGIN,
    *_UTM,
    *_ACTIVITY,
    *_MULTI,
]

DEAL: list[FieldDef] = [
    _f("ID", "integer", "ID", "O"),
    _f("TITLE", "string", "Name"),
    _f("TYPE_ID", "crm_status", "Type", "", "DEAL_TYPE"),
    _f("CATEGORY_ID", "crm_category", "Pipeline", "I"),
    _f("STAGE_ID", "crm_status", "Deal Stage", "", "DEAL_STAGE"),
    _f("STAGE_SEMANTIC_ID", "string", "Stage Group", "O"),
    _f("IS_NEW", "char", "New Deal", "O"),
    _f("IS_RECURRING", "char", "Recurring Deal"),
    _f("IS_RETURN_CUSTOMER", "char", "Repeat Deal"),
    _f("IS_REPEATED_APPROACH", "char", "Repeat Inquiry"),
    _f("PROBABILITY", "integer", "Probability"),
    _f("CURRENCY_ID", "crm_currency", "Currency"),
    _f("OPPORTUNITY", "double", "Total"),
    _f("IS_MANUAL_OPPORTUNITY", "char", "Manual Total"),
    _f("TAX_VALUE", "double", "Tax Rate"),
    _f("COMPANY_ID", "crm_company", "Company"),
    _f("CONTACT_ID", "crm_contact", "Contact"),
    _f("CONTACT_IDS", "crm_contact", "Contacts", "MH"),
    _f("QUOTE_ID", "crm_quote", "Quote", "O"),
    _f("BEGINDATE", "date", "Start Date"),
    _f("CLOSEDATE", "date", "End Date"),
    _f("OPENED", "char", "Available to Everyone"),
    _f("CLOSED", "char", "Closed"),
    _f("COMMENTS", "string", "Comment"),
    *_AUDIT,
    _f("MOVED_BY_ID", "user", "Stage Changed By", "O"),
    _f("MOVED_TIME", "datetime", "Stage Change Date", "O"),
    _f("SOURCE_ID", "crm_status", "Source", "", "SOURCE"),
    _f("SOURCE_DESCRIPTION", "string", "Source Information"),
    _f("LEAD_ID", "crm_lead", "Lead", "O"),
    _f("ADDITIONAL_INFO", "string", "Additional Information"),
    _f("LOCATION_ID", "location", "Location"),
    _f("ORIGINATOR_ID", "string", "External Source"),
    _f("ORIGIN_ID", "string", "Identifier in External Source"),
    *_UTM,
    _f("TRACE", "string", "Sales Intelligence", "H"),
    *_ACTIVITY,
]
CONTACT.append(_f("TRACE", "string", "Sales Intelligence", "H"))

# docs crm-lead-fields.md, in its order; titles are the docs' own (some are the bare code, e.g. MOVED_TIME).
LEAD: list[FieldDef] = [
    _f("ID", "integer", "ID", "O"),
    _f("TITLE", "string", "Lead Title"),
    _f("HONORIFIC", "crm_status", "Salutation", "", "HONORIFIC"),
    _f("NAME", "string", "First Name"),
    _f("SECOND_NAME", "string", "Middle Name"),
    _f("LAST_NAME", "string", "Last Name"),
    _f("BIRTHDATE", "date", "Birthdate", "E"),
    _f("COMPANY_TITLE", "string", "Company Name"),
    _f("SOURCE_ID", "crm_status", "Source", "", "SOURCE"),
    _f("SOURCE_DESCRIPTION", "string", "Source Description"),
    _f("STATUS_ID", "crm_status", "Stage", "", "STATUS"),
    _f("STATUS_DESCRIPTION", "string", "Stage Description"),
    _f("STATUS_SEMANTIC_ID", "string", "Status Semantic", "O"),
    _f("POST", "string", "Position"),
    *[replace(f, title="Address (Line 2)") if f.name == "ADDRESS_2" else f for f in _address("ADDRESS", "")],
    _f("CURRENCY_ID", "crm_currency", "Currency"),
    _f("OPPORTUNITY", "double", "Amount"),
    _f("IS_MANUAL_OPPORTUNITY", "char", "IS_MANUAL_OPPORTUNITY"),
    _f("OPENED", "char", "Available to All"),
    _f("COMMENTS", "string", "Comments"),
    _f("HAS_PHONE", "char", "Phone Provided", "O"),
    _f("HAS_EMAIL", "char", "Email Provided", "O"),
    _f("HAS_IMOL", "char", "Open Line Assigned", "O"),
    _f("ASSIGNED_BY_ID", "user", "Responsible User"),
    _f("CREATED_BY_ID", "user", "Created By", "O"),
    _f("MODIFY_BY_ID", "user", "Modified By", "O"),
    _f("MOVED_BY_ID", "user", "MOVED_BY_ID", "O"),
    _f("DATE_CREATE", "datetime", "Creation Date", "O"),
    _f("DATE_MODIFY", "datetime", "Modification Date", "O"),
    _f("MOVED_TIME", "datetime", "MOVED_TIME", "O"),
    _f("COMPANY_ID", "crm_company", "Company"),
    _f("CONTACT_ID", "crm_contact", "Contact"),
    # Not in the crm.lead.get example, so [inferred] not returned by get / "*", like deal CONTACT_IDS.
    _f("CONTACT_IDS", "crm_contact", "CONTACT_IDS", "MH"),
    _f("IS_RETURN_CUSTOMER", "char", "Returning Lead", "O"),
    _f("DATE_CLOSED", "datetime", "Closing Date", "OE"),
    _f("ORIGINATOR_ID", "string", "External Source"),
    _f("ORIGIN_ID", "string", "Identifier in External Source"),
    *_UTM,
    _f("LAST_ACTIVITY_TIME", "datetime", "LAST_ACTIVITY_TIME", "O"),
    _f("LAST_ACTIVITY_BY", "user", "LAST_ACTIVITY_BY", "O"),
    *[_f(code, "crm_multifield", "LINK" if code == "LINK" else MULTI_TITLES[code], "M") for code in MULTI_TYPES],
]


@dataclass(frozen=True)
class EntityDef:
    """One legacy CRM entity type: its name in state, its fields and its own error texts."""

    entity: str  # "CONTACT" / "COMPANY" / "DEAL" / "LEAD": the key in World.crm and for crm_changed
    method: str  # "contact" -> crm.contact.*
    fields: tuple[FieldDef, ...]
    update_missing: str  # docs: crm-*-update.md error for an unknown id
    delete_missing: tuple[str, str]  # (error code, description) from crm-*-delete.md

    @property
    def by_name(self) -> dict[str, FieldDef]:
        return _INDEX[self.entity]


CONTACT_DEF = EntityDef(
    "CONTACT", "contact", tuple(CONTACT), "Contact is not found", ("ERROR_CORE", "Element not found")
)
# [inferred] company update's missing-id text follows the contact pattern; company delete's is from the docs.
COMPANY_DEF = EntityDef("COMPANY", "company", tuple(COMPANY), "Company is not found", ("", "Company is not found"))
DEAL_DEF = EntityDef("DEAL", "deal", tuple(DEAL), "Not found", ("", "Not found"))
# docs crm-lead-update.md / crm-lead-delete.md: "Not found", empty error code (legacy).
LEAD_DEF = EntityDef("LEAD", "lead", tuple(LEAD), "Not found", ("", "Not found"))
ENTITIES = (CONTACT_DEF, COMPANY_DEF, DEAL_DEF, LEAD_DEF)
BY_ENTITY = {e.entity: e for e in ENTITIES}
_INDEX = {e.entity: {f.name: f for f in e.fields} for e in ENTITIES}


def is_user_field(name: str) -> bool:
    """UF_CRM_* user fields and PARENT_ID_{entityTypeId} relation fields are stored as given."""
    return name.startswith("UF_") or (name.startswith("PARENT_ID_") and name[10:].isdigit())
