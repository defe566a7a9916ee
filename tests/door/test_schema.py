"""schemathesis against the OpenAPI schema of every endpoint of a running, installed b24bridge.

Positive and negative cases of each operation, sent as generated and again with the portal's real
``auth[member_id]``/``auth[application_token]`` put in, so that the robot and event handlers are driven past
the token check to validation and the database. No answer may be a 5xx and every 4xx must be a JSON error
(``{"error": ..., "field"?: ...}``). A short run here with a fixed seed; ``-m slow`` runs a long, randomized one that
keeps what fails for the short one to replay (tests/fuzzing.py).
"""

from __future__ import annotations

from typing import Any

import pytest
import schemathesis
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import content_type_conformance, status_code_conformance

from b24bridge.app import create_app
from b24bridge.settings import Settings
from tests.door.conftest import Portal
from tests.fuzzing import fuzz_operation

SHORT, LONG = 15, 400


@schemathesis.check
def four_xx_is_a_json_error(ctx: schemathesis.CheckContext, response: schemathesis.Response, case: Any) -> None:
    if 400 <= response.status_code < 500:
        assert response.headers.get("content-type", [""])[0].startswith("application/json"), "a 4xx that is not JSON"
        body = response.json()
        assert isinstance(body, dict) and isinstance(body.get("error"), str), f"a 4xx without an error: {body!r}"


REQUIRED = [not_a_server_error, four_xx_is_a_json_error]
# An operation that documents its refusals (apidoc.error_responses) must document every status and type it gives.
DOCUMENTED = [*REQUIRED, status_code_conformance, content_type_conformance]


def _checks(operation: Any) -> list[Any]:
    statuses = {str(status) for status in operation.definition.raw.get("responses", {})}
    return DOCUMENTED if any(status.startswith("4") and status != "422" for status in statuses) else REQUIRED


# The schema the app publishes at /openapi.json, read at collection to parametrize by operation; the cases go to
# the running server.
SCHEMA = schemathesis.openapi.from_dict(create_app(Settings()).openapi())
OPERATIONS = [result.ok() for result in SCHEMA.get_all_operations()]  # type: ignore[union-attr]


def _exercise(case: Any, portal: Portal) -> None:
    checks = _checks(case.operation)
    case.call_and_validate(base_url=portal.bridge.base_url, checks=checks)
    if isinstance(case.body, dict) and case.path in ("/robots/{code}", "/events"):
        case.body = {
            **case.body,
            "auth[member_id]": portal.member_id,
            "auth[application_token]": portal.application_token,
        }
        case.call_and_validate(base_url=portal.bridge.base_url, checks=checks)


def _run(operation: Any, portal: Portal, examples: int, *, explore: bool = False) -> None:
    fuzz_operation(operation, lambda case: _exercise(case, portal), examples=examples, explore=explore)


def test_the_schema_covers_every_endpoint() -> None:
    paths = {operation.path for operation in OPERATIONS}
    assert {"/robots/{code}", "/events", "/install", "/install/page", "/oauth/start", "/oauth/callback"} <= paths
    robot = next(op for op in OPERATIONS if op.path == "/robots/{code}")
    form = robot.definition.raw["requestBody"]["content"]["application/x-www-form-urlencoded"]["schema"]
    assert {"workflow_id", "event_token", "auth[member_id]", "properties[KEY]"} & set(form["properties"]) >= {
        "workflow_id",
        "auth[member_id]",
    }


@pytest.mark.parametrize("operation", OPERATIONS, ids=lambda op: f"{op.method.upper()} {op.path}")
def test_no_5xx_and_every_4xx_a_json_error(operation: Any, portal: Portal) -> None:
    _run(operation, portal, SHORT)


@pytest.mark.slow
@pytest.mark.parametrize("operation", OPERATIONS, ids=lambda op: f"{op.method.upper()} {op.path}")
def test_no_5xx_and_every_4xx_a_json_error_long(operation: Any, portal: Portal) -> None:
    _run(operation, portal, LONG, explore=True)
