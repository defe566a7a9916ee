"""``bizproc.robot.*``, ``bizproc.activity.*``, ``bizproc.event.send`` and ``bizproc.activity.log``.

REFERENCE 5.1-5.6. Robots and activities share one implementation (the portal's ``addActivityInternal`` and
friends with ``IS_ROBOT``); the order of checks follows the bizproc ``RestService`` source so that a request with
several problems gets the same error as on a real portal.
"""

from __future__ import annotations

from typing import Any

from .. import bizproc_defs as defs
from .. import bizproc_runtime as workflows
from ..errors import RestError
from ..registry import Call, rest_method


def _client_id(call: Call) -> str:
    # auth="app_bizproc" already refused webhooks; an OAuth caller always carries its application.
    client_id = call.caller.client_id
    assert client_id is not None
    return client_id


def _add(call: Call, is_robot: bool) -> bool:
    call.require_admin()
    data = defs.prepare(call.params)
    defs.validate_new(data)
    client_id = _client_id(call)
    key = defs.key_of(client_id, data["CODE"])
    # Uniqueness spans robots and activities: both live in one table keyed by md5(APP_ID@CODE).
    if key in call.world.robots:
        raise RestError("ERROR_ACTIVITY_ALREADY_INSTALLED", "Activity or Robot already installed!", 400)
    record = defs.build_record(data, client_id, is_robot, call.sandbox.now())
    if record["USE_PLACEMENT"] == "Y":
        defs.check_handler(data.get("PLACEMENT_HANDLER"))
        defs.bind_placement(call.world, client_id, record["CODE"], record["PLACEMENT_HANDLER"])
    call.world.robots[key] = record
    return True


def _update(call: Call, is_robot: bool) -> bool:
    data = defs.prepare(call.params)
    call.require_admin()
    client_id = _client_id(call)
    code = defs.check_code(data.get("CODE"))
    record = defs.find(call.world, client_id, code, is_robot)
    if record is None:
        raise defs.not_found()
    fields = data.get("FIELDS")
    if not isinstance(fields, dict) or not fields:
        raise defs.invalid("No fields to update")
    changes = defs.changes_for_update(fields)
    if not changes:
        # PLACEMENT_HANDLER alone does not count: the portal checks it only after this test.
        raise defs.invalid("No fields to update")
    if fields.get("PLACEMENT_HANDLER") is not None:
        defs.check_handler(fields["PLACEMENT_HANDLER"])
        defs.bind_placement(call.world, client_id, code, fields["PLACEMENT_HANDLER"])
        changes["PLACEMENT_HANDLER"] = fields["PLACEMENT_HANDLER"]
    if changes.get("USE_PLACEMENT") == "N":
        changes["PLACEMENT_HANDLER"] = None
    record.update(changes)
    return True


def _delete(call: Call, is_robot: bool) -> bool:
    call.require_admin()
    client_id = _client_id(call)
    code = defs.check_code(defs.prepare(call.params).get("CODE"))
    if defs.find(call.world, client_id, code, is_robot) is None:
        raise defs.not_found()
    del call.world.robots[defs.key_of(client_id, code)]
    return True


def _list(call: Call, is_robot: bool) -> list[str]:
    call.require_admin()
    return defs.codes(call.world, _client_id(call), is_robot)


@rest_method("bizproc.robot.add", "bizproc", auth="app_bizproc")
def robot_add(call: Call) -> Any:
    return _add(call, True)


@rest_method("bizproc.robot.update", "bizproc", auth="app_bizproc")
def robot_update(call: Call) -> Any:
    return _update(call, True)


@rest_method("bizproc.robot.delete", "bizproc", auth="app_bizproc")
def robot_delete(call: Call) -> Any:
    return _delete(call, True)


@rest_method("bizproc.robot.list", "bizproc", auth="app_bizproc")
def robot_list(call: Call) -> Any:
    return _list(call, True)


@rest_method("bizproc.activity.add", "bizproc", auth="app_bizproc")
def activity_add(call: Call) -> Any:
    return _add(call, False)


@rest_method("bizproc.activity.update", "bizproc", auth="app_bizproc")
def activity_update(call: Call) -> Any:
    return _update(call, False)


@rest_method("bizproc.activity.delete", "bizproc", auth="app_bizproc")
def activity_delete(call: Call) -> Any:
    return _delete(call, False)


@rest_method("bizproc.activity.list", "bizproc", auth="app_bizproc")
def activity_list(call: Call) -> Any:
    return _list(call, False)


@rest_method("bizproc.event.send", "bizproc")
def event_send(call: Call) -> Any:
    # "Who can execute the method: any user" (docs): no admin or application check, only a valid signed token.
    parts = workflows.open_event_token(call.world, call.param("event_token"))
    if parts is None:
        raise RestError("ACCESS_DENIED", "Access denied!", 403)
    values = call.param("return_values")
    message = call.param("log_message")
    workflows.receive_event(
        call.sandbox,
        parts,
        values if isinstance(values, dict) else {},
        message if isinstance(message, str) else "",
    )
    return True


@rest_method("bizproc.activity.log", "bizproc")
def activity_log(call: Call) -> Any:
    # The docs say "administrator", but the source checks only the token; a token is proof enough (as event.send).
    parts = workflows.open_event_token(call.world, call.param("event_token"))
    if parts is None:
        raise RestError("ACCESS_DENIED", "Access denied!", 403)
    message = call.param("log_message")
    if defs.php_empty(message):
        raise RestError("ERROR_EMPTY_LOG_MESSAGE", "Empty log message!", 400)
    workflows.write_log(call.sandbox, parts, message if isinstance(message, str) else str(message))
    return True
