"""HTTP endpoints of the robots domain: the handler every registered robot calls."""

from __future__ import annotations

from typing import cast

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from b24bridge import apidoc, forms

from .intake import RobotIntake

router = APIRouter(tags=["robots"])

# The wire fields of a robot call (REFERENCE 5.4), for the OpenAPI schema; the handler reads the form itself.
_AUTH = {
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
    **{f"auth[{name}]": text for name, text in _AUTH.items()},
}


@router.post(
    "/robots/{code}",
    openapi_extra=apidoc.form_body(
        ROBOT_CALL_FIELDS,
        required=["workflow_id", "event_token", "auth[member_id]", "auth[application_token]"],
        more="properties[KEY] (and properties[KEY][n] for a Multiple property): the robot's input values",
    )
    | apidoc.path_parameters("code"),
    responses=apidoc.error_responses(400, 401, 408, 413, 503),
)
@apidoc.served_raw
async def robot_call(request: Request) -> JSONResponse:
    """A robot ran in a portal's workflow: accept it now (the portal waits for no one), do the work in a job."""
    intake = cast(RobotIntake, request.state.robot_intake)
    form = await forms.read_form(await request.body())
    answer = await intake.accept(request.path_params["code"], form, getattr(request.state, "correlation_id", None))
    content: dict[str, object] = {"status": answer.detail}
    if answer.run_id is not None:
        content["run_id"] = answer.run_id
    if answer.spooled:
        content["spooled"] = True
    if answer.http_status >= 400:
        content = {"error": answer.detail}
    return JSONResponse(content, answer.http_status)
