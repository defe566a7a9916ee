"""CRM automation rules: a robot or an outbound webhook placed on a deal stage (or a lead stage) runs when a deal
(a lead) enters that stage.

On a real portal an administrator drags an application robot (or the built-in "Outbound webhook" rule) onto a stage
in the automation designer; the sandbox has no UI, so rules are created through the control API:

* ``POST /_sandbox/automation/rules`` ``{type: "robot", entity, category_id, stage_id, client_id, robot_code,
  properties, timeout_duration, auth_user_id, use_subscription}`` or ``{type: "webhook", entity, category_id,
  stage_id, handler}`` (see ``webhook_rule``); ``GET`` lists them; ``DELETE .../rules/{id}`` removes one.
  ``entity`` is ``DEAL`` (default) or ``LEAD``; a lead rule's ``stage_id`` is a lead STATUS_ID (``STATUS`` list) and
  its ``category_id`` 0, leads having no funnels. The workflow's document is then ``["crm", "CCrmDocumentLead",
  "LEAD_{id}"]``. ``entity`` ``DYNAMIC_{entityTypeId}`` places the rule on a smart process's stage (``STAGE_ID`` like
  ``DT128_1:PREPARATION``; ``category_id`` one of its funnels, its default funnel when not given; the type needs
  ``isAutomationEnabled``); the document is ``["crm", "Bitrix\\Crm\\Integration\\BizProc\\Document\\Dynamic",
  "DYNAMIC_{entityTypeId}_{id}"]`` (REFERENCE 5.4).
* ``POST /_sandbox/deals/{id}/stage`` ``{stage_id, user_id?}`` moves a deal within its funnel (the stage must be
  one of the funnel's): with ``user_id`` as that user would in the kanban; without it as automation does (a robot
  or workflow changing the stage), so the events it causes carry no tokens (REFERENCE 7.2).
* ``POST /_sandbox/deals/move`` ``{deal_ids, stage_id, over_seconds?, user_id?}`` moves many deals, spread evenly
  over ``over_seconds`` (answers 202 at once): load generated inside the portal, as a busy sales team would.
* ``GET /_sandbox/workflows[?status=&rule_id=&document_id=&settle=1]`` and ``GET /_sandbox/workflows/{id}``.

A rule fires when a document *enters* its stage: created in it, or updated with a changed STAGE_ID (a lead: STATUS_ID)
(REFERENCE 5, CRM automation semantics); the category must match too. Each matching robot rule starts its own workflow
(see ``bizproc_runtime`` for what a workflow does and records); each webhook rule sends its one request.
"""

from __future__ import annotations

import asyncio
import copy
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from . import bizproc_runtime as robots
from . import crm_categories as funnels
from . import crm_items, webhook_rule
from . import crm_types as types
from .bizproc_defs import key_of
from .control import ControlError, body_of, control, portal, reply
from .crm_fields import ENTITIES
from .crm_rules import deal_rules
from .crm_values import render, render_loose
from .registry import Call, Caller
from .runtime import DEFAULT_APP_ID, CrmAction, Sandbox
from .state import World

# The entities with stage automation and the field that holds their stage; smart processes (``DYNAMIC_{n}``) keep
# theirs in STAGE_ID too.
STAGE_FIELDS = {"DEAL": "STAGE_ID", "LEAD": "STATUS_ID"}
SUPPORTED_ENTITIES = set(STAGE_FIELDS)
WORKFLOW_STATUSES = {"running", "completed", "timeout", "failed"}
# "robot": an application's robot (a workflow calls its handler); "webhook": the built-in outbound webhook rule.
RULE_TYPES = {"robot", "webhook"}


def install(sandbox: Sandbox) -> None:
    """Subscribe the automation engine to CRM changes of ``sandbox`` (called once from ``create_app``)."""
    if on_crm_change not in sandbox.crm_listeners:
        sandbox.crm_listeners.append(on_crm_change)


def _category(value: Any) -> int:
    try:
        return int(value or 0)
    except (TypeError, ValueError):
        return 0


def on_crm_change(
    sandbox: Sandbox,
    entity: str,
    action: CrmAction,
    record_id: int,
    before: dict[str, Any] | None,
    after: dict[str, Any] | None,
) -> None:
    stage_field = STAGE_FIELDS.get(entity) or ("STAGE_ID" if funnels.dynamic_type_id(entity) is not None else None)
    if stage_field is None or after is None or action == "DELETE":
        return
    stage = after.get(stage_field)
    if stage is None or (action == "UPDATE" and before is not None and before.get(stage_field) == stage):
        return
    category = _category(after.get("CATEGORY_ID"))  # leads: none, so 0
    rules = [
        rule
        for rule in sandbox.world.automation_rules
        if rule["entity"] == entity and rule["stage_id"] == stage and rule["category_id"] == category
    ]
    fields = document_fields(sandbox, entity, after) if rules else {}
    for rule in rules:
        if rule.get("type") == "webhook":
            webhook_rule.send(sandbox, rule, entity, record_id, fields)
        else:
            robots.start_robot(sandbox, rule, entity, record_id, fields)


def document_fields(sandbox: Sandbox, entity: str, record: dict[str, Any]) -> dict[str, Any]:
    """The document's field values for ``{=Document:FIELD}``, rendered as the REST ``get`` shows them.

    [inferred] the portal's bizproc document prints some types differently (dates in the site format); REST
    rendering is the closest documented form. Also a snapshot: later edits do not change a started workflow.
    """
    definition = next((e for e in ENTITIES if e.entity == entity), None)
    by_name = definition.by_name if definition is not None else {}
    spa = types.by_entity_type(sandbox.world, funnels.dynamic_type_id(entity) or 0)
    if spa is not None:
        by_name = {f.name: f for f in crm_items.fields_of(sandbox.world, spa)}
    values: dict[str, Any] = {}
    for name, value in record.items():
        field = by_name.get(name)
        values[name] = render(field, value, sandbox.tz) if field is not None else render_loose(value)
    return values


# --- control API ----------------------------------------------------------------------------------------------


def _int_field(data: dict[str, Any], key: str, default: int) -> int:
    value = data.get(key, default)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | str) or not str(value).strip().lstrip("-").isdigit():
        raise ControlError(f"{key} must be an integer")
    return int(value)


@control
async def add_rule(request: Request) -> Response:
    sandbox = portal(request)
    world = sandbox.world
    data = await body_of(request)
    entity = str(data.get("entity", "DEAL")).upper()
    spa = types.by_entity_type(world, funnels.dynamic_type_id(entity) or 0)
    if entity not in SUPPORTED_ENTITIES and spa is None:
        raise ControlError(f"entity must be one of {sorted(SUPPORTED_ENTITIES)} or DYNAMIC_{{entityTypeId}}")
    stage_id = data.get("stage_id")
    if not isinstance(stage_id, str) or not stage_id:
        raise ControlError("stage_id is required (e.g. NEW, or C1:NEW in funnel 1)")
    kind = data.get("type", "robot")
    if kind not in RULE_TYPES:
        raise ControlError(f"type must be one of {sorted(RULE_TYPES)}")
    category_id = _int_field(data, "category_id", 0)
    if entity == "LEAD" and category_id != 0:
        raise ControlError("leads have no funnels: category_id must be 0")
    if spa is not None:
        category_id = _spa_category(world, spa, data)
    specific = _webhook_rule_fields(data) if kind == "webhook" else _robot_rule_fields(sandbox, data)
    rule = {
        "id": world.next_id("automation_rule"),
        "type": kind,
        "entity": entity,
        "category_id": category_id,
        "stage_id": stage_id,
        **specific,
        "created_at": sandbox.now(),
    }
    world.automation_rules.append(rule)
    return reply(rule, 201)


def _spa_category(world: World, spa: dict[str, Any], data: dict[str, Any]) -> int:
    """A smart process's rule sits in one of its funnels (the default one unless ``category_id`` names another);
    its designer needs ``isAutomationEnabled`` (docs crm-type-add.md)."""
    if not types.enabled(spa, "isAutomationEnabled"):
        raise ControlError(f"smart process {spa['entityTypeId']} has isAutomationEnabled N: no automation rules")
    entity_type_id = int(spa["entityTypeId"])
    default = funnels.default_category(world, entity_type_id)
    category_id = _int_field(data, "category_id", default if default is not None else 0)
    if funnels.entity_type_of(world, category_id) != entity_type_id or category_id not in world.categories:
        raise ControlError(f"smart process {entity_type_id} has no funnel {category_id}")
    return category_id


def _robot_rule_fields(sandbox: Sandbox, data: dict[str, Any]) -> dict[str, Any]:
    """An application robot placed on the stage."""
    world = sandbox.world
    client_id = str(data.get("client_id") or DEFAULT_APP_ID)
    code = data.get("robot_code")
    if not isinstance(code, str) or not code:
        raise ControlError("robot_code is required")
    robot = world.robots.get(key_of(client_id, code))
    if robot is None or robot["IS_ROBOT"] != "Y":
        raise ControlError(f"application {client_id} has no robot {code!r} (register it with bizproc.robot.add)")
    properties = data.get("properties") or {}
    if not isinstance(properties, dict):
        raise ControlError("properties must be an object {key: template}")
    timeout = _int_field(data, "timeout_duration", 0)
    if timeout < 0:
        raise ControlError("timeout_duration must be 0 (none) or a number of seconds")
    auth_user_id = data.get("auth_user_id")
    if auth_user_id is not None and _int_field(data, "auth_user_id", 0) not in world.users:
        raise ControlError(f"no user {auth_user_id}")
    use_subscription = data.get("use_subscription")
    if use_subscription not in (None, "Y", "N"):
        raise ControlError("use_subscription must be Y or N")
    return {
        "client_id": client_id,
        "robot_code": code,
        "properties": properties,
        "timeout_duration": timeout,
        "auth_user_id": None if auth_user_id is None else int(auth_user_id),
        "use_subscription": use_subscription,
        # Fixed per placed robot, as in a real automation template.
        "activity_name": robots.new_activity_name(),
    }


def _webhook_rule_fields(data: dict[str, Any]) -> dict[str, Any]:
    """The "Outbound webhook" rule: its URL template, checked now although the portal would only skip it later."""
    handler = data.get("handler")
    if not isinstance(handler, str) or not handler.strip():
        raise ControlError("handler is required: the URL to POST to, e.g. https://example.com/hook?deal={=Document:ID}")
    problem = webhook_rule.handler_problem(handler.strip())
    if problem is not None:
        raise ControlError(f"handler: {problem}; the portal would send nothing")
    return {"handler": handler.strip()}


@control
async def list_rules(request: Request) -> Response:
    rules = portal(request).world.automation_rules
    return reply({"rules": rules, "total": len(rules)})


@control
async def delete_rule(request: Request) -> Response:
    world = portal(request).world
    rule_id = int(request.path_params["rule_id"])
    kept = [r for r in world.automation_rules if r["id"] != rule_id]
    if len(kept) == len(world.automation_rules):
        raise ControlError(f"no automation rule {rule_id}", 404)
    world.automation_rules[:] = kept
    return reply({"deleted": rule_id})


@control
async def move_deal(request: Request) -> Response:
    """Move a deal to another stage: the change is reported like any update.

    ``user_id`` names the user who drags it in the kanban (events carry that user's tokens); without it the move is
    made by automation (no user, no tokens in events). The record's ``MOVED_BY_ID``/``MODIFY_BY_ID`` then name the
    administrator, user 1. [inferred]
    """
    sandbox = portal(request)
    deal_id = int(request.path_params["deal_id"])
    data = await body_of(request)
    stage_id, actor = _move_args(sandbox, data)
    record = sandbox.world.records("DEAL").get(deal_id)
    if record is None:
        raise ControlError(f"no deal {deal_id}", 404)
    _check_stage(sandbox, [record], stage_id)
    known = set(sandbox.world.workflows)
    _move(sandbox, deal_id, stage_id, actor)
    started = [wf_id for wf_id in sandbox.world.workflows if wf_id not in known]
    return reply({"deal": record, "workflows": started})


@control
async def move_deals(request: Request) -> Response:
    """Move many deals into a stage, spread evenly over ``over_seconds`` (a load generator inside the portal).

    ``{deal_ids: [...], stage_id, over_seconds?: 0, user_id?}``; answers at once with what was scheduled.
    """
    sandbox = portal(request)
    data = await body_of(request)
    stage_id, actor = _move_args(sandbox, data)
    ids = data.get("deal_ids")
    if not isinstance(ids, list) or not all(isinstance(i, int) for i in ids):
        raise ControlError("deal_ids must be a list of deal ids")
    missing = [i for i in ids if i not in sandbox.world.records("DEAL")]
    if missing:
        raise ControlError(f"no deals {missing[:10]}", 404)
    _check_stage(sandbox, [sandbox.world.records("DEAL")[i] for i in ids], stage_id)
    over = float(data.get("over_seconds", 0))
    if over < 0:
        raise ControlError("over_seconds must not be negative")

    async def run() -> None:
        loop = asyncio.get_running_loop()
        start, step = loop.time(), over / max(1, len(ids))
        for index, deal_id in enumerate(ids):
            await asyncio.sleep(max(0.0, start + index * step - loop.time()))
            _move(sandbox, deal_id, stage_id, actor)

    sandbox.spawn(run())
    return reply({"scheduled": len(ids), "over_seconds": over}, 202)


def _check_stage(sandbox: Sandbox, deals: list[dict[str, Any]], stage_id: str) -> None:
    """A deal moves only within its own funnel, as in the kanban: the stage must be one of that funnel's."""
    for deal in deals:
        category = _category(deal.get("CATEGORY_ID"))
        if funnels.find_stage(sandbox.world, category, stage_id) is None:
            known = [row["STATUS_ID"] for row in funnels.stages(sandbox.world, category)]
            raise ControlError(f"deal {deal['ID']} is in funnel {category}, which has no stage {stage_id!r}; {known}")


def _move_args(sandbox: Sandbox, data: dict[str, Any]) -> tuple[str, int | None]:
    stage_id = data.get("stage_id")
    if not isinstance(stage_id, str) or not stage_id:
        raise ControlError("stage_id is required")
    actor = None if data.get("user_id") is None else _int_field(data, "user_id", 1)
    if actor is not None and actor not in sandbox.world.users:
        raise ControlError(f"no user {actor}")
    return stage_id, actor


def _move(sandbox: Sandbox, deal_id: int, stage_id: str, actor: int | None) -> None:
    record = sandbox.world.records("DEAL").get(deal_id)
    if record is None or record.get("STAGE_ID") == stage_id:
        return
    before = copy.deepcopy(record)
    _apply_move(sandbox, record, before, stage_id, 1 if actor is None else actor)
    sandbox.crm_changed("DEAL", "UPDATE", deal_id, before, copy.deepcopy(record), actor_user_id=actor)


def _apply_move(sandbox: Sandbox, record: dict[str, Any], before: dict[str, Any], stage: str, user_id: int) -> None:
    now = sandbox.now()
    record.update(STAGE_ID=stage, MOVED_BY_ID=user_id, MOVED_TIME=now, MODIFY_BY_ID=user_id, DATE_MODIFY=now)
    # The CRM module's own bookkeeping keeps STAGE_SEMANTIC_ID, CLOSED and IS_NEW consistent with the stage.
    call = Call(sandbox, Caller("webhook", user_id, frozenset()), "crm.deal.update", {})
    deal_rules(call, before, record, {"STAGE_ID": stage})


@control
async def list_workflows(request: Request) -> Response:
    sandbox = portal(request)
    query = request.query_params
    if query.get("settle") not in (None, "0", "false"):
        await sandbox.drain()
    robots.sweep(sandbox)
    status = query.get("status")
    if status is not None and status not in WORKFLOW_STATUSES:
        raise ControlError(f"status must be one of {sorted(WORKFLOW_STATUSES)}")
    found = []
    for wf in sandbox.world.workflows.values():
        if status is not None and wf["status"] != status:
            continue
        if "rule_id" in query and str(wf["rule_id"]) != query["rule_id"]:
            continue
        if "document_id" in query and wf["document_id"][2] != query["document_id"]:
            continue
        found.append(wf)
    return reply({"workflows": found, "total": len(found)})


@control
async def get_workflow(request: Request) -> Response:
    sandbox = portal(request)
    robots.sweep(sandbox)
    wf = sandbox.world.workflows.get(request.path_params["workflow_id"])
    if wf is None:
        raise ControlError(f"no workflow {request.path_params['workflow_id']}", 404)
    return reply(wf)


control_routes: list[BaseRoute] = [
    Route("/_sandbox/automation/rules", add_rule, methods=["POST"]),
    Route("/_sandbox/automation/rules", list_rules, methods=["GET"]),
    Route("/_sandbox/automation/rules/{rule_id:int}", delete_rule, methods=["DELETE"]),
    Route("/_sandbox/deals/{deal_id:int}/stage", move_deal, methods=["POST"]),
    Route("/_sandbox/deals/move", move_deals, methods=["POST"]),
    Route("/_sandbox/workflows", list_workflows, methods=["GET"]),
    Route("/_sandbox/workflows/{workflow_id}", get_workflow, methods=["GET"]),
]
