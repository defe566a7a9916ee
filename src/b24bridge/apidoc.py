"""OpenAPI fragments for handlers that read their PHP-style forms themselves (b24bridge.forms), so that the
published schema (``/openapi.json``) describes the real wire fields and the JSON errors every refusal is: what
schemathesis drives the endpoints with (tests/door/test_schema.py)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["error_responses", "form_body"]

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
