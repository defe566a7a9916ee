"""HTTP endpoints of the robots domain: the handler every registered robot calls."""

from __future__ import annotations

from typing import cast

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from b24bridge import apidoc, forms

from .intake import RobotIntake

router = APIRouter(tags=["robots"])


@router.post(
    "/robots/{code}",
    openapi_extra=apidoc.robot_call_body(
        "properties[KEY] (and properties[KEY][n] for a Multiple property): the robot's input values"
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
