"""HTTP endpoints of the robots domain: the handler every registered robot calls."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from . import service

router = APIRouter()


@router.post("/robots/{code}")
async def robot_call(code: str, request: Request) -> JSONResponse:
    """A robot ran in a portal's workflow: accept it now (the portal waits for no one), do the work in a job."""
    body = (await request.body()).decode("utf-8", errors="replace")
    answer = await service.accept_call(code, body)
    content: dict[str, object] = {"status": answer.detail}
    if answer.run_id is not None:
        content["run_id"] = answer.run_id
    return JSONResponse(content, status_code=answer.http_status)
