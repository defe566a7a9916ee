"""OpenAPI fragments for handlers that read their PHP-style forms themselves (b24bridge.forms), so that the
published schema (``/openapi.json``) describes the real wire fields and the JSON errors every refusal is: what
schemathesis drives the endpoints with (tests/door/test_schema.py)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

__all__ = ["SERVED_RAW", "error_responses", "form_body", "path_parameters", "served_raw"]

F = TypeVar("F", bound=Callable[..., Any])
SERVED_RAW = "__b24bridge_served_raw__"


def served_raw(endpoint: F) -> F:
    """Mark a handler of the door that takes only the request and reads it itself: the app serves it as a plain
    Starlette route, ahead of FastAPI's own (which then only documents it). The calls a portal makes by the
    thousand skip the framework's dependency solving and response building, measured (py-spy, bench/ingest.py) as a
    third of what a robot call cost."""
    setattr(endpoint, SERVED_RAW, True)
    return endpoint


def path_parameters(*names: str) -> dict[str, Any]:
    """``openapi_extra`` for the path parameters a raw handler reads itself (``request.path_params``)."""
    return {
        "parameters": [{"name": name, "in": "path", "required": True, "schema": {"type": "string"}} for name in names]
    }


_ERROR_SCHEMA = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {"type": "string", "description": "what was refused; names the field, never echoes a value"},
        "field": {"type": "string", "description": "the offending field's wire name, when one is to blame"},
    },
}
_REFUSALS = {
    400: "malformed or missing fields",
    401: "unknown portal or wrong application_token",
    404: "no such resource",
    408: "the request body did not arrive in time",
    413: "request body over this endpoint's cap",
    429: "too many unconfirmed installations from this address or for this portal",
    503: "nothing was stored: the database or the OAuth server is unavailable",
}


def form_body(fields: Mapping[str, str], *, required: Sequence[str] = (), more: str | None = None) -> dict[str, Any]:
    """``openapi_extra`` for a handler that reads a PHP-style form itself: the wire names (``auth[member_id]``) as
    string properties with their descriptions; ``more`` describes further fields of free names, if any."""
    schema: dict[str, Any] = {
        "type": "object",
        "properties": {name: {"type": "string", "description": text} for name, text in fields.items()},
        "additionalProperties": {"type": "string", "description": more} if more else False,
    }
    if required:
        schema["required"] = list(required)
    return {
        "requestBody": {
            "required": True,
            "content": {"application/x-www-form-urlencoded": {"schema": schema}},
        }
    }


def error_responses(*statuses: int, described: Mapping[int, str] | None = None) -> dict[int | str, dict[str, Any]]:
    """``responses`` for a handler: each refusal it may give, as the JSON error every refusal is; ``described``
    says what a status means for this handler where the general wording does not fit."""
    texts = {**_REFUSALS, **(described or {})}
    return {
        status: {"description": texts[status], "content": {"application/json": {"schema": _ERROR_SCHEMA}}}
        for status in statuses
    }


# The wire fields of a robot call (REFERENCE 5.4), for the OpenAPI schema of the handlers that read
# the form themselves (the robots' and the bridge robot's).
_ROBOT_CALL_AUTH = {
    "access_token": "the acting user's access token",
    "expires": "unix time the access token expires",
    "expires_in": "seconds the access token lives",
    "scope": "the application's scopes, comma-separated",
    "domain": "the portal's host",
    "server_endpoint": "the OAuth server's REST endpoint",
    "status": "the application's status (L, F, D, T, P)",
    "client_endpoint": "the portal's REST endpoint",
    "member_id": "the portal's id",
    "user_id": "the acting user's id",
    "refresh_token": "the acting user's refresh token",
    "application_token": "the portal's proof of origin, given at installation",
}
ROBOT_CALL_FIELDS = {
    "workflow_id": "the workflow instance",
    "code": "the robot's CODE",
    **{f"document_id[{i}]": f"document id part {i} (module, entity, id)" for i in range(3)},
    **{f"document_type[{i}]": f"document type part {i} (module, entity, type)" for i in range(3)},
    "event_token": "the token bizproc.event.send answers with",
    "use_subscription": "Y: the workflow waits for the answer; N: it does not",
    "timeout_duration": "seconds the workflow waits (0: no limit)",
    "ts": "unix time the portal sent the call",
    **{f"auth[{name}]": text for name, text in _ROBOT_CALL_AUTH.items()},
}


def robot_call_body(more: str) -> dict[str, Any]:
    """``openapi_extra`` for a handler of robot calls: the call's wire fields, the four it cannot go without, and
    ``more`` describing the fields of free names its robot adds."""
    required = ["workflow_id", "event_token", "auth[member_id]", "auth[application_token]"]
    return form_body(ROBOT_CALL_FIELDS, required=required, more=more)
