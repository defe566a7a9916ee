"""Robot and activity definitions: validation and storage as bizproc's ``RestService`` does it.

Source of truth: REFERENCE 5.1-5.3, 5.6 and the docs pages ``bizproc-robot-{add,update,delete,list}.md``; where the
docs only name an error, the order of checks and PHP details follow the bizproc ``RestService`` source quoted there
(``prepareActivityData``, ``validateRobot``, ``validateActivityProperties``, ``updateActivityInternal``).

Robots and activities live in one table on the portal (``IS_ROBOT`` Y/N); so they do here, in ``world.robots``.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

from .errors import RestError
from .state import World

VALIDATION = "ERROR_ACTIVITY_VALIDATION_FAILURE"
NOT_FOUND_TEXT = "Activity or Robot not found!"

# Portal regexes are PCRE with ``$``, which also matches before a trailing newline; Python's ``re.match`` with
# ``$`` behaves the same way, so the quirk is kept on purpose.
_CODE = re.compile(r"^[a-z0-9.\-_]+$", re.IGNORECASE)
_PROPERTY_KEY = re.compile(r"^[a-z][a-z0-9_]*$", re.IGNORECASE)

# prepareActivityData upper-cases every key except those directly inside these maps (property ids, option values).
_KEEP_CASE = {"PROPERTIES", "RETURN_PROPERTIES", "OPTIONS"}

UPDATABLE = (
    "HANDLER",
    "AUTH_USER_ID",
    "USE_SUBSCRIPTION",
    "USE_PLACEMENT",
    "NAME",
    "DESCRIPTION",
    "PROPERTIES",
    "RETURN_PROPERTIES",
    "DOCUMENT_TYPE",
    "FILTER",
)


def invalid(message: str) -> RestError:
    return RestError(VALIDATION, message, 400)


def not_found() -> RestError:
    return RestError("ERROR_ACTIVITY_NOT_FOUND", NOT_FOUND_TEXT, 400)


def php_empty(value: Any) -> bool:
    """PHP ``empty()``: null, false, "", "0", 0, 0.0 and empty arrays."""
    if value is None or value is False:
        return True
    if isinstance(value, str):
        return value in ("", "0")
    if isinstance(value, int | float) and not isinstance(value, bool):
        return value == 0
    if isinstance(value, dict | list):
        return not value
    return False


def php_int(value: Any) -> int:
    """PHP ``(int)`` cast: leading digits of a string, 0 otherwise."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return int(value)
    match = re.match(r"\s*([+-]?\d+)", str(value)) if isinstance(value, str) else None
    return int(match.group(1)) if match else 0


def prepare(data: Any, keep_case: bool = False) -> Any:
    """``prepareActivityData``: upper-case keys recursively, except directly inside PROPERTIES/OPTIONS maps."""
    if isinstance(data, dict):
        prepared: dict[str, Any] = {}
        for key, value in data.items():
            name = str(key) if keep_case else str(key).upper()
            prepared[name] = prepare(value, name in _KEEP_CASE)
        return prepared
    if isinstance(data, list):
        # A JSON array is a PHP array with integer keys: changing case is a no-op and no key names a kept map.
        return [prepare(value) for value in data]
    return data


def check_code(code: Any) -> str:
    if php_empty(code):
        raise invalid("Empty activity code!")
    if not isinstance(code, str) or not _CODE.match(code):
        raise invalid("Wrong activity code!")
    return code


def check_handler(url: Any) -> str:
    """``HandlerHelper::checkCallback``: a host with a dot (not first), then the http/https scheme.

    The older source also demanded the app's own host (ERROR_HANDLER_URL_MATCH); the newer helper dropped that and
    the current cloud behaviour is unconfirmed (REFERENCE 5.2), so the sandbox does not enforce it.
    """
    if not isinstance(url, str):
        raise RestError("ERROR_WRONG_HANDLER_URL", "Wrong handler URL", 400)
    try:
        parts = urlsplit(url)
        host, has_scheme = parts.hostname or "", bool(parts.scheme)
    except ValueError:
        host, has_scheme = "", False
    if host.find(".") <= 0:
        raise RestError("ERROR_WRONG_HANDLER_URL", "Wrong handler URL", 400)
    # parse_url keeps the scheme's case and the portal compares it literally.
    scheme = url.split(":", 1)[0] if has_scheme else ""
    if scheme not in ("http", "https"):
        raise RestError("ERROR_UNSUPPORTED_PROTOCOL", "Unsupported handler protocol", 400)
    return url


def check_properties(properties: Any) -> None:
    if not isinstance(properties, dict | list):
        raise invalid("Wrong properties array!")
    items = properties.items() if isinstance(properties, dict) else enumerate(properties)
    for key, prop in items:
        # A JSON list has integer keys 0..n, which fail the key pattern exactly as on the portal.
        if not isinstance(key, str) or not _PROPERTY_KEY.match(key):
            raise invalid(f"Wrong property key ({key})!")
        # empty($property['NAME']) is also true when the property is not an array at all.
        if php_empty(prop.get("NAME") if isinstance(prop, dict) else None):
            raise invalid(f"Empty property NAME ({key})!")


def check_document_type(document_type: Any) -> None:
    """``CBPHelper::parseDocumentId`` throws for a missing entity or type; the module part may be empty.

    [inferred] any three-part type with a non-empty entity and type passes; the portal would further reject
    unknown entity classes with a different, undocumented error.
    """
    if not isinstance(document_type, list) or len(document_type) < 3:
        raise invalid("Wrong activity DOCUMENT_TYPE!")
    if any(part is None or part == "" for part in document_type[1:3]):
        raise invalid("Wrong activity DOCUMENT_TYPE!")


def validate_new(data: dict[str, Any]) -> None:
    """``validateRobot`` / ``validateActivity`` in the portal's order."""
    if not data:
        raise invalid("Empty data!")
    check_code(data.get("CODE"))
    check_handler(data.get("HANDLER"))
    if php_empty(data.get("NAME")):
        raise invalid("Empty activity NAME!")
    if data.get("PROPERTIES") is not None:
        check_properties(data["PROPERTIES"])
    if data.get("RETURN_PROPERTIES") is not None:
        check_properties(data["RETURN_PROPERTIES"])
    # The newest source checks DOCUMENT_TYPE only for activities, but the robot.add docs list the error, and the
    # docs win (REFERENCE 5.2): checked for both.
    if data.get("DOCUMENT_TYPE") is not None:
        check_document_type(data["DOCUMENT_TYPE"])
    if data.get("FILTER") is not None and not isinstance(data["FILTER"], dict | list):
        raise invalid("Wrong activity FILTER!")


def key_of(client_id: str, code: str) -> str:
    # The portal's uniqueness key is md5(APP_ID@CODE): case-sensitive in CODE, so the key keeps CODE's case.
    return f"{client_id}|{code}"


def find(world: World, client_id: str, code: str, is_robot: bool) -> dict[str, Any] | None:
    """update/delete filter by IS_ROBOT too: a robot's code is "not found" to ``bizproc.activity.update``."""
    record = world.robots.get(key_of(client_id, code))
    if record is None or record["IS_ROBOT"] != ("Y" if is_robot else "N"):
        return None
    return record


def codes(world: World, client_id: str, is_robot: bool) -> list[str]:
    flag = "Y" if is_robot else "N"
    return [r["CODE"] for r in world.robots.values() if r["APP_ID"] == client_id and r["IS_ROBOT"] == flag]


def bind_placement(world: World, client_id: str, code: str, handler: str) -> None:
    """Each robot needs its own settings URL within an app (robot-update docs: ERROR_CORE "already binded")."""
    for record in world.robots.values():
        same_app = record["APP_ID"] == client_id and record["CODE"] != code
        if same_app and record.get("USE_PLACEMENT") == "Y" and record.get("PLACEMENT_HANDLER") == handler:
            raise RestError("ERROR_CORE", "Unable to set placement handler: Handler already binded", 400)


def build_record(data: dict[str, Any], client_id: str, is_robot: bool, now: float) -> dict[str, Any]:
    """The stored row: what ``addActivityInternal`` writes, normalised the same way."""
    use_placement = "Y" if data.get("USE_PLACEMENT") == "Y" else "N"
    return {
        "APP_ID": client_id,
        "CODE": data["CODE"],
        "IS_ROBOT": "Y" if is_robot else "N",
        "HANDLER": data["HANDLER"],
        # Stored as 0 when absent; the robot call then falls back to a default user (see bizproc_runtime).
        "AUTH_USER_ID": php_int(data["AUTH_USER_ID"]) if data.get("AUTH_USER_ID") is not None else 0,
        "USE_SUBSCRIPTION": str(data.get("USE_SUBSCRIPTION") or ""),
        "NAME": data["NAME"],
        "DESCRIPTION": data.get("DESCRIPTION"),
        "PROPERTIES": data.get("PROPERTIES") or {},
        "RETURN_PROPERTIES": data.get("RETURN_PROPERTIES") or {},
        "DOCUMENT_TYPE": data.get("DOCUMENT_TYPE"),
        "FILTER": data.get("FILTER") if isinstance(data.get("FILTER"), dict | list) else None,
        "USE_PLACEMENT": use_placement,
        "PLACEMENT_HANDLER": data.get("PLACEMENT_HANDLER") if use_placement == "Y" else None,
        "CREATED_AT": now,
    }


def changes_for_update(fields: dict[str, Any]) -> dict[str, Any]:
    """``updateActivityInternal``: only known keys count; nothing is written unless every given key is valid."""
    changes: dict[str, Any] = {}
    if fields.get("HANDLER") is not None:
        changes["HANDLER"] = check_handler(fields["HANDLER"])
    if fields.get("AUTH_USER_ID") is not None:
        changes["AUTH_USER_ID"] = php_int(fields["AUTH_USER_ID"])
    if fields.get("USE_SUBSCRIPTION") is not None:
        changes["USE_SUBSCRIPTION"] = str(fields["USE_SUBSCRIPTION"])
    if fields.get("USE_PLACEMENT") is not None:
        changes["USE_PLACEMENT"] = "Y" if fields["USE_PLACEMENT"] == "Y" else "N"
    if not php_empty(fields.get("NAME")):
        # An empty NAME is silently skipped on update (no "Empty activity NAME!").
        changes["NAME"] = fields["NAME"]
    if fields.get("DESCRIPTION") is not None:
        changes["DESCRIPTION"] = fields["DESCRIPTION"]
    for key in ("PROPERTIES", "RETURN_PROPERTIES"):
        if fields.get(key) is not None:
            check_properties(fields[key])
            changes[key] = fields[key]
    if fields.get("DOCUMENT_TYPE") is not None:
        if php_empty(fields["DOCUMENT_TYPE"]):
            changes["DOCUMENT_TYPE"] = None
        else:
            check_document_type(fields["DOCUMENT_TYPE"])
            changes["DOCUMENT_TYPE"] = fields["DOCUMENT_TYPE"]
    if fields.get("FILTER") is not None:
        if php_empty(fields["FILTER"]):
            changes["FILTER"] = None
        elif not isinstance(fields["FILTER"], dict | list):
            raise invalid("Wrong activity FILTER!")
        else:
            changes["FILTER"] = fields["FILTER"]
    return changes
