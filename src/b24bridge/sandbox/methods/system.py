"""Application and user methods: ``app.info``, ``profile``, ``user.*``, ``scope``, ``methods``."""

from __future__ import annotations

from typing import Any

from ..crm_fields import FieldDef
from ..crm_query import matcher, page_of, parse_filter, sort_rows, split_key
from ..registry import METHODS, Call, Page, rest_method
from ..state import User


def _user_view(user: User) -> dict[str, Any]:
    return {
        "ID": str(user.id),
        "ACTIVE": user.active,
        "NAME": user.name,
        "LAST_NAME": user.last_name,
        "SECOND_NAME": "",
        "EMAIL": user.email,
        "IS_ONLINE": "N",
        "UF_DEPARTMENT": [1],
        "USER_TYPE": "employee",
    }


@rest_method("app.info")
def app_info(call: Call) -> Any:
    client_id = call.caller.client_id
    if client_id is None:
        # Webhooks are not applications; the portal answers with the scope-only view.
        return {"SCOPE": sorted(call.caller.scopes), "LICENSE": "ru_project", "INSTALLED": True}
    app = call.world.apps[client_id]
    return {
        "ID": abs(hash(app.client_id)) % 1000,
        "CODE": app.client_id,
        "VERSION": app.version,
        "STATUS": app.status,
        "INSTALLED": app.installed,
        "PAYMENT_EXPIRED": "N",
        "DAYS": None,
        "LANGUAGE_ID": "en",
        "LICENSE": "en_project",
        "LICENSE_TYPE": "project",
        "LICENSE_FAMILY": "project",
    }


@rest_method("profile")
def profile(call: Call) -> Any:
    user = call.world.users[call.caller.user_id]
    return {
        "ID": str(user.id),
        "ADMIN": user.admin,
        "NAME": user.name,
        "LAST_NAME": user.last_name,
        "PERSONAL_GENDER": "",
        "TIME_ZONE": "",
        "TIME_ZONE_OFFSET": 0,
    }


@rest_method("user.current")
def user_current(call: Call) -> Any:
    return _user_view(call.world.users[call.caller.user_id])


# user.get filters by any user.add field with the list-method prefixes (docs user-get.md); how each compares.
_USER_FILTER_FIELDS = {
    name: FieldDef(name, kind, name)
    for name, kind in (("ID", "integer"), ("NAME", "string"), ("LAST_NAME", "string"), ("SECOND_NAME", "string"),
                       ("EMAIL", "string"), ("USER_TYPE", "string"), ("IS_ONLINE", "char"))
}  # fmt: skip
_TOP_LEVEL_FILTERS = ("id", "active", "email", "name", "last_name", "user_type")


@rest_method("user.get", "user")
def user_get(call: Call) -> Any:
    flt = call.param("filter") or {}
    if not isinstance(flt, dict):
        flt = {}
    flt = dict(flt)
    # user.get accepts filter fields both inside FILTER and at the top level.
    for key in _TOP_LEVEL_FILTERS:
        if key in call.params and key.upper() not in flt:
            flt[key.upper()] = call.params[key]
    active = next((flt.pop(k) for k in list(flt) if split_key(str(k))[1] == "ACTIVE"), None)
    # docs: ACTIVE true excludes terminated users; [inferred] a false value keeps only them
    wanted_active = None if active is None else str(active).strip().upper() in ("Y", "1", "TRUE")
    test = matcher(_USER_FILTER_FIELDS, parse_filter(flt), call.sandbox.tz)
    rows = [
        {**_user_view(user), "ID": user.id}  # a numeric ID, so that ID filters and sorting compare numbers
        for user in call.world.users.values()
        if wanted_active is None or user.active == wanted_active
    ]
    rows = sort_rows([row for row in rows if test(row)], _user_order(call))
    page, total, nxt = page_of(rows, call.param("start"))
    return Page([{**row, "ID": str(row["ID"])} for row in page], total, nxt)


def _user_order(call: Call) -> dict[str, str]:
    """``sort`` names a field and ``order`` its direction (docs); ID ascending otherwise."""
    field = call.param("sort")
    return {str(field).upper(): str(call.param("order") or "ASC")} if field else {}


@rest_method("scope")
def scope(call: Call) -> Any:
    if str(call.param("full", "")).lower() in ("1", "true", "y"):
        return sorted({m.scope for m in METHODS.values() if m.scope})
    return sorted(call.caller.scopes)


@rest_method("methods")
def methods(call: Call) -> Any:
    wanted = call.param("scope")
    full = str(call.param("full", "")).lower() in ("1", "true", "y")
    names = []
    for spec in METHODS.values():
        if wanted is not None and (spec.scope or "") != str(wanted):
            continue
        if not full and wanted is None and spec.scope is not None and spec.scope not in call.caller.scopes:
            continue
        names.append(spec.name)
    return sorted([*names, "batch"]) if wanted is None or wanted == "" else sorted(names)
