"""Delivering bound events to applications, like the portal's queue server.

Payload shape (REFERENCE 7.2, docs ``api-reference/events/index.md``): form-encoded
``event, event_handler_id, data[...], ts, auth[...]``; one POST per handler and per object, never retried,
each recorded in ``world.handler_calls`` (kind ``event``). Events reach only installed applications
(``installFinish`` done, docs ``installation-finish.md``).

Whose tokens go into ``auth``: the binding's ``auth_type`` user when set; otherwise the user whose hit made the change
(``actor_user_id`` of ``Sandbox.crm_changed``: the REST caller, or the user a control call names). When the change
can't be tied to a user (automation, a workflow, the system: ``actor_user_id=None``) no tokens are sent and ``auth``
holds only ``domain, client_endpoint, server_endpoint, member_id, application_token`` (REFERENCE 7.2). A binding's
explicit ``auth_type`` still gets its user's tokens then. [inferred]
"""

from __future__ import annotations

import logging
from typing import Any

from . import outbound, tokens
from .crm_categories import dynamic_type_id
from .runtime import CrmAction, Sandbox
from .state import Application, World, token

log = logging.getLogger("b24bridge.sandbox")

# Event name -> scope the application needs to bind it (None: the global/basic scope).
KNOWN_EVENTS: dict[str, str | None] = {
    "ONAPPINSTALL": None,
    "ONAPPUNINSTALL": None,
    "ONAPPUPDATE": None,
    "ONAPPTEST": None,
    "ONOFFLINEEVENT": None,
    **{
        f"ONCRM{entity}{action}": "crm"
        for entity in ("DEAL", "CONTACT", "COMPANY", "LEAD")
        for action in ("ADD", "UPDATE", "DELETE")
    },
    # Smart-process items, every type alike (docs crm/universal/events/on-crm-dynamic-item-*.md).
    **{f"ONCRMDYNAMICITEM{action}": "crm" for action in ("ADD", "UPDATE", "DELETE")},
}
# Only these events carry ``refresh_token`` (REFERENCE 4.3: registered with sendRefreshToken=true).
REFRESH_EVENTS = {"ONAPPINSTALL", "ONAPPUPDATE", "ONOFFLINEEVENT"}
LANGUAGE_ID = "en"


def new_handler_id(world: World) -> int:
    return world.next_id("event_handler")


def bare_auth(sandbox: Sandbox, app: Application) -> dict[str, Any]:
    """``auth`` of an event without tokens (ONAPPUNINSTALL, changes without a user): docs on-app-uninstall.md."""
    return {
        "domain": sandbox.domain,
        "server_endpoint": sandbox.server_endpoint,
        "client_endpoint": sandbox.client_endpoint,
        "member_id": sandbox.world.member_id,
        "application_token": app.application_token,
    }


def user_auth(sandbox: Sandbox, app: Application, user_id: int, *, refresh: bool) -> dict[str, Any]:
    """``auth`` with a fresh access token of ``user_id``; ``refresh_token`` only where the event carries one."""
    pair = tokens.issue(sandbox, app, user_id)
    block = tokens.auth_block(sandbox, app, pair, user_id)
    if not refresh:
        # Not sent, so not kept: a refresh token nobody received would only grow the world.
        block.pop("refresh_token", None)
        sandbox.world.refresh_tokens.pop(pair.refresh.token, None)
    return block


def payload(sandbox: Sandbox, event: str, handler_id: int, data: Any, auth: dict[str, Any]) -> dict[str, Any]:
    return {
        "event": event,
        "event_handler_id": str(handler_id),
        "data": data,
        "ts": str(int(sandbox.now())),
        "auth": auth,
    }


def online_bindings(world: World, client_id: str, event: str) -> list[dict[str, Any]]:
    return [
        b for b in world.event_bindings if b["client_id"] == client_id and b["event"] == event and not b.get("offline")
    ]


def prepare(
    sandbox: Sandbox, app: Application, event: str, data: Any, user_id: int | None
) -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    """(url, payload, meta) for every online handler of ``event`` in ``app``; tokens are issued here, now."""
    calls = []
    for binding in online_bindings(sandbox.world, app.client_id, event):
        acting = int(binding.get("auth_type") or 0) or user_id
        if acting is not None and acting in sandbox.world.users:
            auth = user_auth(sandbox, app, acting, refresh=event in REFRESH_EVENTS)
        else:
            auth = bare_auth(sandbox, app)
        body = payload(sandbox, event, int(binding["id"]), data, auth)
        meta = {"event": event, "client_id": app.client_id, "event_handler_id": binding["id"]}
        calls.append((str(binding["handler"]), body, meta))
    return calls


async def deliver_now(
    sandbox: Sandbox, app: Application, event: str, data: Any, user_id: int | None
) -> list[dict[str, Any]]:
    """Send ``event`` to the app's handlers and wait for the answers (install/uninstall/update use this)."""
    records = []
    for url, body, meta in prepare(sandbox, app, event, data, user_id):
        records.append(await outbound.post_form(sandbox, "event", url, body, **meta))
    return records


def deliver_later(sandbox: Sandbox, app: Application, event: str, data: Any, user_id: int | None) -> int:
    """Queue ``event`` for the app's handlers without holding up the REST answer; returns how many."""
    calls = prepare(sandbox, app, event, data, user_id)
    for url, body, meta in calls:
        sandbox.spawn(outbound.post_form(sandbox, "event", url, body, **meta))
    return len(calls)


# --- offline events --------------------------------------------------------------------------------------


def queue_offline(sandbox: Sandbox, app: Application, event: str, data: Any, user_id: int | None) -> None:
    """One queue record per object and event, the latest change wins (REFERENCE 7.3)."""
    world = sandbox.world
    subscribed = any(
        b["client_id"] == app.client_id and b["event"] == event and b.get("offline") for b in world.event_bindings
    )
    if not subscribed:
        return
    fields = data.get("FIELDS", {}) if isinstance(data, dict) else {}
    # One record per object: a smart-process item is known by its type and id together.
    object_id = ":".join(str(fields[k]) for k in ("ENTITY_TYPE_ID", "ID") if k in fields)
    for record in list(world.offline_events):
        same = record["client_id"] == app.client_id and record["EVENT_NAME"] == event
        if same and record["object_id"] == object_id and not record.get("process_id"):
            world.offline_events.remove(record)
    world.offline_events.append(
        {
            "ID": str(world.next_id("offline_event")),
            "TIMESTAMP_X": sandbox.now(),
            "EVENT_NAME": event,
            "EVENT_DATA": data,
            # [inferred] the docs show EVENT_ADDITIONAL as an object or false; the acting user is what it holds.
            "EVENT_ADDITIONAL": {"user_id": str(user_id)} if user_id else False,
            "MESSAGE_ID": token(),
            "client_id": app.client_id,
            "object_id": object_id,
            "process_id": None,
            "error": 0,
        }
    )
    # ONOFFLINEEVENT pings bound handlers that the queue has entries; ``data`` is empty (docs on-offline-event.md).
    deliver_later(sandbox, app, "ONOFFLINEEVENT", [], user_id)


# --- the CRM listener ------------------------------------------------------------------------------------


def crm_event(entity: str, action: CrmAction, record_id: int) -> tuple[str, dict[str, Any]]:
    """The event a CRM change raises and its ``data``: ``ONCRMDEALUPDATE`` with ``{FIELDS: {ID}}``, or for a
    smart-process item (entity ``DYNAMIC_{entityTypeId}``) ``ONCRMDYNAMICITEMUPDATE`` with ``{FIELDS: {ID,
    ENTITY_TYPE_ID}}``, both as strings (docs on-crm-dynamic-item-update.md)."""
    entity_type_id = dynamic_type_id(entity)
    if entity_type_id is not None:
        return f"ONCRMDYNAMICITEM{action}", {"FIELDS": {"ID": str(record_id), "ENTITY_TYPE_ID": str(entity_type_id)}}
    return f"ONCRM{entity.upper()}{action}", {"FIELDS": {"ID": str(record_id)}}


def on_crm_change(
    sandbox: Sandbox,
    entity: str,
    action: CrmAction,
    record_id: int,
    before: dict[str, Any] | None,
    after: dict[str, Any] | None,
    *,
    actor_user_id: int | None = None,
) -> None:
    event, data = crm_event(entity, action, record_id)
    if event not in KNOWN_EVENTS:
        return
    for app in list(sandbox.world.apps.values()):
        if not app.installed or "crm" not in app.scopes:
            continue
        user_id = actor_user_id if actor_user_id in sandbox.world.users else None
        try:
            deliver_later(sandbox, app, event, data, user_id)
            queue_offline(sandbox, app, event, data, user_id)
        except RuntimeError:
            # Called outside the portal's event loop: nothing can be sent from here.
            log.warning("event %s for %s not delivered: no running event loop", event, app.client_id)


def attach(sandbox: Sandbox) -> None:
    """Subscribe event delivery to the portal's CRM changes (once per portal)."""
    if on_crm_change not in sandbox.crm_listeners:
        sandbox.crm_listeners.append(on_crm_change)
