"""HTTP endpoints of the robots domain: the handler every registered robot calls."""

from __future__ import annotations

from typing import Annotated, cast

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from .intake import RobotIntake

router = APIRouter(tags=["robots"])


def _intake(request: Request) -> RobotIntake:
    return cast(RobotIntake, request.state.robot_intake)


@router.post("/robots/{code}")
async def robot_call(code: str, request: Request, intake: Annotated[RobotIntake, Depends(_intake)]) -> JSONResponse:
    """A robot ran in a portal's workflow: accept it now (the portal waits for no one), do the work in a job."""
    body = (await request.body()).decode("utf-8", errors="replace")
    answer = await intake.accept(code, body)
    content: dict[str, object] = {"status": answer.detail}
    if answer.run_id is not None:
        content["run_id"] = answer.run_id
    return JSONResponse(content, status_code=answer.http_status)
