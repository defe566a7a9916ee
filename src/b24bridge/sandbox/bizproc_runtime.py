"""Running an application robot inside a workflow: the call to HANDLER, event tokens, waiting and timeouts.

What the portal does (REFERENCE 5.4-5.5, ``CBPRestActivity``): it queues one form-encoded POST to the robot's
HANDLER carrying a signed ``event_token`` and an OAuth token pair of the acting user, then, if the robot subscribes,
waits for ``bizproc.event.send``; with ``timeout_duration > 0`` it closes the robot with ``IsTimeout = 1`` and the
return values left at their defaults.

Behaviour choices, each an inference where the docs are silent:
* Delivery goes through the queue server, which never retries and whose outcome the workflow never sees. So a
  failing handler (non-2xx, refused connection) is only recorded in ``workflow["handler"]``: a subscribing robot keeps
  waiting (until its timeout, or forever without one) and a non-subscribing robot is complete either way.
* A robot with ``USE_SUBSCRIPTION=N`` closes as soon as its call is queued, not when the call is answered.
* A robot that cannot run (deleted robot, uninstalled application, unknown user) makes the workflow ``failed`` with a
  ``reason``; nothing is sent.
* ``bizproc.event.send``/``bizproc.activity.log`` with a correctly signed token for a robot that is no longer waiting
  (already answered, timed out, unknown) answer ``true`` and change nothing.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import random
import re
import secrets
import string
from typing import Any

from . import outbound, tokens
from .bizproc_defs import key_of
from .runtime import Sandbox
from .state import World

# Document ids the CRM bizproc documents use: entity -> (module, document class, type). REFERENCE 5.4.
DOCUMENT_TYPES: dict[str, tuple[str, str, str]] = {
    "DEAL": ("crm", "CCrmDocumentDeal", "DEAL"),
    "LEAD": ("crm", "CCrmDocumentLead", "LEAD"),
    "CONTACT": ("crm", "CCrmDocumentContact", "CONTACT"),
    "COMPANY": ("crm", "CCrmDocumentCompany", "COMPANY"),
}
# A smart process's documents (REFERENCE 5.2, 5.4): ["crm", this class, "DYNAMIC_128"], ids "DYNAMIC_128_5".
DYNAMIC_DOCUMENT = "Bitrix\\Crm\\Integration\\BizProc\\Document\\Dynamic"


def document_type(entity: str) -> tuple[str, str, str]:
    """(module, document class, type) of a CRM entity's documents: ``DEAL``, ``LEAD``, ... or ``DYNAMIC_{n}``."""
    if entity.startswith("DYNAMIC_"):
        return ("crm", DYNAMIC_DOCUMENT, entity)
    return DOCUMENT_TYPES[entity]


DEFAULT_AUTH_USER = 1
DEFAULT_LOG_MESSAGE = "Received response from the application."  # docs bizproc-event-send.md
TIMEOUT_LOG_MESSAGE = "The application did not respond in time."  # [inferred] wording
_SIGN_SALT = "bizproc"  # the portal signs event tokens with salt "bizproc" (REFERENCE 5.4)
_EXPRESSION = re.compile(r"\{=Document:([A-Za-z0-9_]+)\}")
_rng = random.SystemRandom()


# --- identifiers and tokens ---------------------------------------------------------------------------------


def new_workflow_id(now: float) -> str:
    """PHP ``uniqid('', true)``: 8 hex seconds, 5 hex microseconds, then ``lcg_value()*10`` as ``%.8F``."""
    seconds, micro = int(now), int((now % 1) * 1_000_000)
    return f"{seconds:08x}{micro:05x}{_rng.randint(0, 9)}.{_rng.randint(0, 99_999_999):08d}"


def new_activity_name() -> str:
    """Robot names in an automation template look like ``A51601_82584_96831_81132``."""
    return "A" + "_".join(str(_rng.randint(10_000, 99_999)) for _ in range(4))


def _new_event_id() -> str:
    alphabet = string.ascii_letters + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(32))


def _signature(world: World, value: str) -> str:
    return hmac.new(world.bizproc_secret.encode(), f"{_SIGN_SALT}:{value}".encode(), hashlib.sha256).hexdigest()


def make_event_token(world: World, workflow_id: str, activity_name: str, event_id: str) -> str:
    value = f"{workflow_id}|{activity_name}|{event_id}"
    return f"{value}.{_signature(world, value)}"


def open_event_token(world: World, event_token: Any) -> tuple[str, str, str] | None:
    """``CBPRestActivity::extractToken``: the three parts, or None when the signature does not verify."""
    if not isinstance(event_token, str):
        return None
    # The workflow id has a dot of its own, so the signature is whatever follows the last one.
    value, _, signature = event_token.rpartition(".")
    # Bytes, not str: compare_digest raises on non-ASCII text, and a garbled token must answer 403, not 500.
    if not value or not hmac.compare_digest(signature.lower().encode(), _signature(world, value).encode()):
        return None
    parts = value.split("|")
    if len(parts) != 3:
        return None
    return parts[0], parts[1], parts[2]


# --- property templates ---------------------------------------------------------------------------------------


def printable(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "Y" if value else "N"
    if isinstance(value, list):
        return ", ".join(printable(v) for v in value)
    if isinstance(value, dict):
        # Multi-fields ({"VALUE": ..., "VALUE_TYPE": ...}) print their value.
        return printable(value.get("VALUE", ""))
    return str(value)


def substitute(template: Any, record: dict[str, Any]) -> Any:
    """Resolve ``{=Document:FIELD}``; a template that is one expression keeps the field's value whole (lists)."""
    if isinstance(template, list):
        return [substitute(t, record) for t in template]
    if not isinstance(template, str):
        return template
    whole = _EXPRESSION.fullmatch(template.strip())
    if whole:
        return record.get(whole.group(1))
    return render_text(template, record)


def render_text(template: str, record: dict[str, Any]) -> str:
    """``{=Document:FIELD}`` replaced by the field's printed value, everywhere in a text."""
    return _EXPRESSION.sub(lambda m: printable(record.get(m.group(1))), template)


def _user_refs(value: Any, record: dict[str, Any]) -> list[str]:
    """[inferred from bizproc conventions] users go out as ``user_N``; ``Author`` is the responsible person."""
    refs: list[str] = []
    for item in value if isinstance(value, list) else [value]:
        for part in re.split(r"[;,]", printable(item)):
            part = part.strip()
            if not part:
                continue
            if part.lower() == "author":
                part = printable(record.get("ASSIGNED_BY_ID"))
            refs.append(f"user_{part}" if part.isdigit() else part)
    return refs


def externalize(prop: dict[str, Any], value: Any, record: dict[str, Any]) -> str | list[str]:
    """One property as it goes on the wire: null -> "", Multiple -> a list (``properties[KEY][0]=...``)."""
    multiple = prop.get("MULTIPLE") == "Y"
    if str(prop.get("TYPE", "string")).lower() == "user":
        refs = _user_refs(value, record)
        return refs if multiple else (refs[0] if refs else "")
    if multiple:
        items = value if isinstance(value, list) else [value]
        return [printable(v) for v in items if v is not None and v != ""]
    return printable(value)


def robot_properties(robot: dict[str, Any], templates: dict[str, Any], record: dict[str, Any]) -> dict[str, Any]:
    """Only the robot's declared properties are sent; a property the rule leaves out takes its Default."""
    declared = robot.get("PROPERTIES") or {}
    if not isinstance(declared, dict):
        return {}
    given = {str(k).lower(): v for k, v in templates.items()}
    values: dict[str, Any] = {}
    for key, prop in declared.items():
        prop = prop if isinstance(prop, dict) else {}
        template = given[key.lower()] if key.lower() in given else prop.get("DEFAULT")
        values[key] = externalize(prop, substitute(template, record), record)
    return values


# --- workflows --------------------------------------------------------------------------------------------------


def _log(sandbox: Sandbox, wf: dict[str, Any], source: str, message: str) -> None:
    wf["log"].append({"at": sandbox.now(), "source": source, "message": message})


def _finish(sandbox: Sandbox, wf: dict[str, Any], status: str) -> None:
    wf["status"] = status
    wf["finished_at"] = sandbox.now()


def _fail(sandbox: Sandbox, wf: dict[str, Any], reason: str) -> dict[str, Any]:
    wf["reason"] = reason
    _log(sandbox, wf, "system", reason)
    _finish(sandbox, wf, "failed")
    return wf


def start_robot(
    sandbox: Sandbox, rule: dict[str, Any], entity: str, record_id: int, record: dict[str, Any]
) -> dict[str, Any]:
    """Start a workflow that runs ``rule``'s robot on a CRM document; returns the workflow record."""
    world = sandbox.world
    now = sandbox.now()
    module, document_class, type_name = document_type(entity)
    client_id, code = rule["client_id"], rule["robot_code"]
    wf: dict[str, Any] = {
        "id": new_workflow_id(now),
        "rule_id": rule["id"],
        "client_id": client_id,
        "robot_code": code,
        "activity_name": rule["activity_name"],
        "document_id": [module, document_class, f"{type_name}_{record_id}"],
        "document_type": [module, document_class, type_name],
        "status": "running",
        "reason": None,
        "use_subscription": None,
        "timeout_duration": int(rule.get("timeout_duration") or 0),
        "deadline": None,
        "auth_user_id": None,
        "event_token": None,
        "properties": {},
        "return_values": {},
        "log": [],
        "handler": None,
        "started_at": now,
        "finished_at": None,
    }
    world.workflows[wf["id"]] = wf
    robot = world.robots.get(key_of(client_id, code))
    if robot is None or robot["IS_ROBOT"] != "Y":
        return _fail(sandbox, wf, f"robot {code!r} of application {client_id} is not registered")
    app = world.apps.get(client_id)
    if app is None or not app.installed:
        return _fail(sandbox, wf, f"application {client_id} is not installed")
    user_id = int(rule.get("auth_user_id") or robot.get("AUTH_USER_ID") or DEFAULT_AUTH_USER)
    user = world.users.get(user_id)
    if user is None or not user.active:
        return _fail(sandbox, wf, f"user {user_id} does not exist or is inactive")

    # A robot registered with an empty USE_SUBSCRIPTION lets the rule decide (the UI's "wait for response"); the
    # docs read empty as "wait" (REFERENCE 5.2).
    subscribe = robot.get("USE_SUBSCRIPTION") or rule.get("use_subscription") or "Y"
    subscribe = "Y" if subscribe == "Y" else "N"
    return_props = robot.get("RETURN_PROPERTIES") or {}
    event_id = _new_event_id()
    wf.update(
        use_subscription=subscribe,
        auth_user_id=user_id,
        event_id=event_id,
        event_token=make_event_token(world, wf["id"], wf["activity_name"], event_id),
        properties=robot_properties(robot, rule.get("properties") or {}, record),
        return_properties=list(return_props) if isinstance(return_props, dict) else [],
        return_values={
            **{k: (p.get("DEFAULT") if isinstance(p, dict) else None) for k, p in _items(return_props)},
            "IsTimeout": 0,
        },
    )
    pair = tokens.issue(sandbox, app, user_id)
    payload: dict[str, Any] = {
        "workflow_id": wf["id"],
        "code": robot["CODE"],
        "document_id": wf["document_id"],
        "document_type": wf["document_type"],
        "event_token": wf["event_token"],
        "properties": wf["properties"],
        "use_subscription": subscribe,
        "timeout_duration": wf["timeout_duration"],
        "ts": int(now),
        "auth": tokens.auth_block(sandbox, app, pair, user_id),
    }
    if subscribe == "N":
        _finish(sandbox, wf, "completed")
    elif wf["timeout_duration"] > 0:
        wf["deadline"] = now + wf["timeout_duration"]
        _arm_timeout(sandbox, world, wf["id"], wf["timeout_duration"])
    sandbox.spawn(_deliver(sandbox, world, wf["id"], robot["HANDLER"], payload))
    return wf


def _items(props: Any) -> list[tuple[str, Any]]:
    return list(props.items()) if isinstance(props, dict) else []


async def _deliver(sandbox: Sandbox, world: World, wf_id: str, url: str, payload: dict[str, Any]) -> None:
    call = await outbound.post_form(sandbox, "robot", url, payload, workflow_id=wf_id, code=payload["code"])
    # ``world`` is the one the workflow started in: a reset in between must not leak into the new world.
    wf = world.workflows.get(wf_id)
    if wf is None:
        return
    wf["handler"] = {
        "call_id": call["id"],
        "status": call["status"],
        "ok": call["ok"],
        "duration": call["duration"],
        "error": call.get("error"),
    }
    if not call["ok"]:
        # Recorded only: the queue server does not retry and the workflow does not notice (see module docstring).
        wf["log"].append({"at": sandbox.now(), "source": "system", "message": f"robot call failed: {call['error']}"})


def _arm_timeout(sandbox: Sandbox, world: World, wf_id: str, delay: float) -> None:
    # A timer, not a task: ``Sandbox.drain`` waits for tasks and must not wait out a robot's timeout.
    asyncio.get_running_loop().call_later(max(delay, 0.01), _on_timer, sandbox, world, wf_id)


def _on_timer(sandbox: Sandbox, world: World, wf_id: str) -> None:
    wf = world.workflows.get(wf_id)
    if wf is None or wf["status"] != "running" or wf["deadline"] is None:
        return
    remaining = wf["deadline"] - sandbox.now()
    if remaining > 0:
        _arm_timeout(sandbox, world, wf_id, remaining)
    else:
        _time_out(sandbox, wf)


def _time_out(sandbox: Sandbox, wf: dict[str, Any]) -> None:
    wf["return_values"]["IsTimeout"] = 1
    _log(sandbox, wf, "system", TIMEOUT_LOG_MESSAGE)
    _finish(sandbox, wf, "timeout")
    # The robot closes at its deadline, not when we happened to notice.
    wf["finished_at"] = wf["deadline"]


def sweep(sandbox: Sandbox) -> None:
    """Close robots whose deadline passed; needed when the control API moves the clock ahead of the timers."""
    now = sandbox.now()
    for wf in sandbox.world.workflows.values():
        if wf["status"] == "running" and wf["deadline"] is not None and wf["deadline"] <= now:
            _time_out(sandbox, wf)


def _waiting(sandbox: Sandbox, parts: tuple[str, str, str]) -> dict[str, Any] | None:
    workflow_id, activity_name, event_id = parts
    wf = sandbox.world.workflows.get(workflow_id)
    if wf is None:
        return None
    if wf["status"] == "running" and wf["deadline"] is not None and wf["deadline"] <= sandbox.now():
        _time_out(sandbox, wf)
    if wf["status"] != "running" or wf["activity_name"] != activity_name or wf.get("event_id") != event_id:
        return None
    return wf


def receive_event(sandbox: Sandbox, parts: tuple[str, str, str], values: dict[str, Any], message: str) -> None:
    """``bizproc.event.send``: fill return values (keys case-insensitive, unknown ignored) and close the robot."""
    wf = _waiting(sandbox, parts)
    if wf is None:
        return
    known = {key.lower(): key for key in wf["return_properties"]}
    for key, value in values.items():
        name = known.get(str(key).lower())
        if name is not None:
            wf["return_values"][name] = value
    _log(sandbox, wf, "bizproc.event.send", message or DEFAULT_LOG_MESSAGE)
    _finish(sandbox, wf, "completed")


def write_log(sandbox: Sandbox, parts: tuple[str, str, str], message: str) -> None:
    """``bizproc.activity.log``: a log line; the robot keeps waiting."""
    wf = _waiting(sandbox, parts)
    if wf is not None:
        _log(sandbox, wf, "bizproc.activity.log", message)
