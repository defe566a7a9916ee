"""Event methods: ``event.bind/unbind/get/test``, ``events``, ``event.offline.*`` (REFERENCE 7.1, 7.3).

All are application-only: a webhook gets 403 WRONG_AUTH_TYPE. Parameter names are matched case-insensitively
(the portal runs ``array_change_key_case``). Validation and texts follow the rest module's ``Api\\Event`` and
``HandlerHelper::checkCallback``; newer portals let non-admins bind for themselves (docs event-bind.md).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from .. import errors
from ..errors import RestError
from ..eventbus import KNOWN_EVENTS, LANGUAGE_ID, deliver_later, new_handler_id
from ..registry import Call, rest_method
from ..state import Application
from ..wire import as_list, iso

_TRUE = {"1", "y", "true", "yes"}


def _app(call: Call) -> Application:
    assert call.caller.client_id is not None  # auth="app" guarantees an application caller
    return call.world.apps[call.caller.client_id]


def _is_admin(call: Call) -> bool:
    user = call.world.users.get(call.caller.user_id)
    return user is not None and user.admin


def _argument_null(name: str) -> RestError:
    return RestError("ERROR_ARGUMENT", f"Argument '{name}' is null or empty", 400, argument=name)


def _text(call: Call, name: str) -> str:
    value = call.param(name)
    return value.strip() if isinstance(value, str) else "" if value is None else str(value)


def _check_handler(url: str) -> None:
    """``HandlerHelper::checkCallback``: a host with a dot (not first), then http/https."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if not host or host.find(".") <= 0:
        raise RestError("ERROR_WRONG_HANDLER_URL", "Wrong handler URL", 400)
    if parts.scheme not in ("http", "https"):
        raise RestError("ERROR_UNSUPPORTED_PROTOCOL", "Unsupported handler protocol", 400)


def _check_event(call: Call, event: str) -> None:
    # Events of scopes the application lacks are as unknown as misspelled ones (Api\Event::eventBind).
    if event not in KNOWN_EVENTS:
        raise RestError("ERROR_EVENT_NOT_FOUND", "Event not found", 400)
    scope = KNOWN_EVENTS[event]
    if scope is not None and scope not in call.caller.scopes:
        raise RestError("ERROR_EVENT_NOT_FOUND", "Event not found", 400)


def _auth_type(call: Call) -> int:
    """Whose tokens the handler gets: 0 = the user who caused the event. Non-admins only bind for themselves."""
    raw = call.param("auth_type")
    try:
        wanted = int(raw) if raw not in (None, "") else None
    except (TypeError, ValueError):
        wanted = 0  # PHP intval of garbage
    if _is_admin(call):
        return wanted or 0
    if wanted not in (None, call.caller.user_id):
        raise errors.access_denied("Event binding with AUTH_TYPE requires administrator access rights")
    return call.caller.user_id


@rest_method("event.bind", auth="app")
def event_bind(call: Call) -> Any:
    app = _app(call)
    event = _text(call, "event").upper()
    if not event:
        raise _argument_null("EVENT")
    offline = _text(call, "event_type").lower() == "offline"
    handler = _text(call, "handler")
    if offline:
        if not _is_admin(call):
            # [inferred text] docs: "Offline events are not available; attempting to set them will raise an exception".
            raise errors.access_denied("Offline events require administrator access rights")
        auth_type = 0
    else:
        if not handler:
            raise _argument_null("HANDLER")
        _check_handler(handler)
        auth_type = _auth_type(call)
    _check_event(call, event)
    connector = _text(call, "auth_connector")
    for binding in call.world.event_bindings:
        same = binding["client_id"] == app.client_id and binding["event"] == event
        if same and bool(binding.get("offline")) == offline:
            if offline and binding.get("connector_id", "") == connector:
                raise RestError("ERROR_CORE", "Unable to set event handler: Handler already binded", 400)
            if not offline and binding["handler"] == handler and int(binding["auth_type"]) == auth_type:
                # The EventTable uniqueness check, wrapped by eventBind (seen in client code handling it). [src]
                raise RestError("ERROR_CORE", "Unable to set event handler: Handler already binded", 400)
    options = call.param("options")
    call.world.event_bindings.append(
        {
            "id": new_handler_id(call.world),
            "client_id": app.client_id,
            "event": event,
            "handler": "" if offline else handler,
            "auth_type": auth_type,
            "offline": 1 if offline else 0,
            "connector_id": connector,
            "options": options if isinstance(options, dict) else {},
            "bound_by": call.caller.user_id,
        }
    )
    return True


def _visible(call: Call, binding: dict[str, Any]) -> bool:
    if binding["client_id"] != call.caller.client_id:
        return False
    # Non-admins see and remove only handlers bound with their own user (REFERENCE 7.1).
    return _is_admin(call) or int(binding["auth_type"]) == call.caller.user_id


@rest_method("event.unbind", auth="app")
def event_unbind(call: Call) -> Any:
    event = _text(call, "event").upper()
    if not event:
        raise _argument_null("EVENT")
    offline = _text(call, "event_type").lower() == "offline"
    handler = _text(call, "handler")
    if not offline and not handler:
        raise _argument_null("HANDLER")
    auth_type = call.param("auth_type")
    kept, count = [], 0
    for binding in call.world.event_bindings:
        match = (
            _visible(call, binding)
            and binding["event"] == event
            and bool(binding.get("offline")) == offline
            and (offline or binding["handler"] == handler)
            and (auth_type in (None, "") or offline or int(binding["auth_type"]) == _int(auth_type))
        )
        if match:
            count += 1
        else:
            kept.append(binding)
    call.world.event_bindings[:] = kept
    return {"count": count}


def _int(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


@rest_method("event.get", auth="app")
def event_get(call: Call) -> Any:
    result: list[dict[str, Any]] = []
    for binding in sorted(call.world.event_bindings, key=lambda b: int(b["id"])):
        if not _visible(call, binding):
            continue
        if binding.get("offline"):
            result.append({"event": binding["event"], "connector_id": binding.get("connector_id", ""), "offline": 1})
        else:
            result.append(
                {
                    "event": binding["event"],
                    "handler": binding["handler"],
                    "auth_type": str(binding["auth_type"]),
                    "offline": 0,
                }
            )
    return result


@rest_method("events", auth="app")
def events(call: Call) -> Any:
    """Events the application may bind: its scopes plus the global ones; ``FULL`` lists all, ``SCOPE`` one scope."""
    full = str(call.param("full", "")).lower() in _TRUE
    wanted = call.param("scope")
    names = []
    for name, scope in KNOWN_EVENTS.items():
        if wanted not in (None, ""):
            if (scope or "") != str(wanted):
                continue
        elif not full and scope is not None and scope not in call.caller.scopes:
            continue
        names.append(name)
    return names


@rest_method("event.test", auth="app")
def event_test(call: Call) -> Any:
    """Fire ONAPPTEST at the app's handlers with the call's own parameters (docs test-handler.md)."""
    app = _app(call)
    if app.installed:
        data = {"QUERY": dict(call.params), "LANGUAGE_ID": LANGUAGE_ID}
        deliver_later(call.sandbox, app, "ONAPPTEST", data, call.caller.user_id)
    return 1


# --- offline events (REFERENCE 7.3) ----------------------------------------------------------------------


def _offline_rows(call: Call) -> list[dict[str, Any]]:
    call.require_admin()
    rows = [r for r in call.world.offline_events if r["client_id"] == call.caller.client_id]
    flt = call.param("filter")
    if isinstance(flt, dict):
        for key, value in flt.items():
            field = str(key).lstrip("=").upper()
            if field in ("ID", "EVENT_NAME", "MESSAGE_ID"):
                rows = [r for r in rows if str(r[field]) == str(value)]
    return sorted(rows, key=lambda r: (r["TIMESTAMP_X"], int(r["ID"])))


def _row_view(call: Call, row: dict[str, Any]) -> dict[str, Any]:
    view = {k: row[k] for k in ("ID", "EVENT_NAME", "EVENT_DATA", "EVENT_ADDITIONAL", "MESSAGE_ID")}
    view["TIMESTAMP_X"] = iso(float(row["TIMESTAMP_X"]), call.sandbox.tz)
    return {"ID": view.pop("ID"), "TIMESTAMP_X": view.pop("TIMESTAMP_X"), **view}


def _limit(call: Call) -> int:
    return max(1, min(_int(call.param("limit", 50)) or 50, 1000))


@rest_method("event.offline.get", auth="app")
def event_offline_get(call: Call) -> Any:
    rows = _offline_rows(call)
    process_id = _text(call, "process_id") or None
    want_errors = str(call.param("error", "0")).lower() in _TRUE
    if process_id:
        rows = [r for r in rows if r.get("process_id") in (None, process_id)]
    else:
        rows = [r for r in rows if r.get("process_id") is None]  # parallel readers get disjoint sets
    rows = [r for r in rows if bool(r.get("error")) == want_errors][: _limit(call)]
    clear = str(call.param("clear", "1")).lower() in _TRUE
    if clear:
        taken = {id(r) for r in rows}
        call.world.offline_events[:] = [r for r in call.world.offline_events if id(r) not in taken]
        process_id = None
    else:
        process_id = process_id or call.sandbox.world.member_id[:8] + str(call.world.next_id("offline_process"))
        for row in rows:
            row["process_id"] = process_id
    return {"process_id": process_id, "events": [_row_view(call, r) for r in rows]}


@rest_method("event.offline.list", auth="app")
def event_offline_list(call: Call) -> Any:
    return [_row_view(call, r) for r in _offline_rows(call)[: _limit(call)]]


def _process_and_messages(call: Call) -> tuple[str, set[str]]:
    """``process_id`` (required) and the set of ``message_id`` values of an offline-queue write."""
    process_id = _text(call, "process_id")
    if not process_id:
        raise _argument_null("PROCESS_ID")
    return process_id, {str(m) for m in as_list(call.param("message_id"))}


@rest_method("event.offline.clear", auth="app")
def event_offline_clear(call: Call) -> Any:
    process_id, messages = _process_and_messages(call)
    own = {id(r) for r in _offline_rows(call)}
    call.world.offline_events[:] = [
        r
        for r in call.world.offline_events
        if not (id(r) in own and r.get("process_id") == process_id and (not messages or r["MESSAGE_ID"] in messages))
    ]
    return True


@rest_method("event.offline.error", auth="app")
def event_offline_error(call: Call) -> Any:
    process_id, messages = _process_and_messages(call)
    for row in _offline_rows(call):
        if row.get("process_id") == process_id and row["MESSAGE_ID"] in messages:
            row["error"], row["process_id"] = 1, None
    return True
