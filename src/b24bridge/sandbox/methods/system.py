"""Application and user methods: ``app.info``, ``profile``, ``user.*``, ``scope``, ``methods``."""

from __future__ import annotations

from typing import Any

from ..errors import RestError
from ..registry import METHODS, Call, Page, rest_method
from ..state import User
from ..wire import as_list


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


@rest_method("user.get", "user")
def user_get(call: Call) -> Any:
    flt = call.param("filter") or {}
    if not isinstance(flt, dict):
        flt = {}
    # user.get accepts filter fields both inside FILTER and at the top level.
    for key in ("id", "active", "email", "name", "last_name"):
        if key in call.params and key.upper() not in flt:
            flt[key.upper()] = call.params[key]
    users = sorted(call.world.users.values(), key=lambda u: u.id)
    wanted_ids = {str(v) for v in as_list(flt.get("ID"))}
    if wanted_ids:
        users = [u for u in users if str(u.id) in wanted_ids]
    if "ACTIVE" in flt:
        active = str(flt["ACTIVE"]).upper() in ("Y", "1", "TRUE")
        users = [u for u in users if u.active == active]
    if "EMAIL" in flt:
        users = [u for u in users if u.email == flt["EMAIL"]]
    try:
        start = int(call.param("start", 0) or 0)
    except ValueError as exc:
        raise RestError("", "Parameter 'start' must be integer.") from exc
    page = users[max(start, 0) : max(start, 0) + 50]
    nxt = start + len(page) if start + len(page) < len(users) else None
    return Page([_user_view(u) for u in page], len(users), nxt)


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
