"""HTTP endpoints of the bridge: the bridge robot's handler and the outbound-webhook hooks (deal in, status back)."""

from __future__ import annotations

from typing import Annotated, Any, cast

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from b24bridge.forms import FormError, mapping, parse_form, text
from b24bridge.portals.directory import UNKNOWN, PortalDirectory
from b24bridge.portals.schemas import Check

from .intake import BridgeIntake
from .schemas import Accepted

router = APIRouter(tags=["bridge"])


async def _intake(request: Request) -> BridgeIntake:
    return cast(BridgeIntake, request.state.bridge_intake)


async def _directory(request: Request) -> PortalDirectory:
    return cast(PortalDirectory, request.state.portal_directory)


IntakeDep = Annotated[BridgeIntake, Depends(_intake)]


def _answer(answer: Accepted) -> JSONResponse:
    if answer.http_status >= 400:
        return JSONResponse({"error": answer.detail}, status_code=answer.http_status)
    content: dict[str, Any] = {"status": answer.detail}
    if answer.run_id is not None:
        content["run_id"] = answer.run_id
    if answer.spooled:
        content["spooled"] = True
    return JSONResponse(content, status_code=answer.http_status)


async def _form(request: Request) -> dict[str, Any]:
    return parse_form(await request.body()) if request.method == "POST" else {}


@router.post("/bridge/robot")
async def bridge_robot(
    request: Request, intake: IntakeDep, directory: Annotated[PortalDirectory, Depends(_directory)]
) -> JSONResponse:
    """The bridge robot ran in a source's workflow: accept it now, deliver in a job, answer the workflow after."""
    try:
        form = await _form(request)
        auth = mapping(form, "auth")
        member_id = text(form, "auth", "member_id", max_len=64)
        token = text(form, "auth", "application_token", max_len=128)
        text(form, "workflow_id", max_len=128)
        text(form, "event_token", max_len=512)
    except FormError as exc:
        return JSONResponse(exc.payload(), status_code=exc.status)
    verdict = await directory.check(member_id, token)
    if verdict is None:
        return JSONResponse({"error": "unknown portal or wrong application_token"}, status_code=401)
    check = Check(member_id, token) if verdict is UNKNOWN else None  # checked when drained from the spool
    return _answer(await intake.from_robot(member_id, form, auth, _correlation(request), check))


def _correlation(request: Request) -> str | None:
    return getattr(request.state, "correlation_id", None)


def _hook_fields(request: Request) -> dict[str, str]:
    # What the rule's URL carries besides the secret and the deal: part of the trigger's identity (dedupe key).
    return {k: v for k, v in request.query_params.items() if k not in ("secret", "deal")}


def _deal(request: Request, form: dict[str, Any]) -> Any:
    return request.query_params.get("deal") or form.get("document_id")


@router.get("/bridge/hooks/{route}", operation_id="bridge_hook_get")
@router.post("/bridge/hooks/{route}", operation_id="bridge_hook_post")
async def bridge_hook(route: str, request: Request, intake: IntakeDep) -> JSONResponse:
    """The source's outbound-webhook rule: ``{PUBLIC_URL}/bridge/hooks/{route}?secret=...&deal={=Document:ID}``."""
    try:
        form = await _form(request)
    except FormError as exc:
        return JSONResponse(exc.payload(), status_code=exc.status)
    secret = request.query_params.get("secret", "")
    answer = await intake.from_hook(route, secret, _deal(request, form), _hook_fields(request), _correlation(request))
    return _answer(answer)


@router.get("/bridge/hooks/{route}/status", operation_id="bridge_status_hook_get")
@router.post("/bridge/hooks/{route}/status", operation_id="bridge_status_hook_post")
async def bridge_status_hook(route: str, request: Request, intake: IntakeDep) -> JSONResponse:
    """The target's outbound-webhook rule on the stages that go back to the source."""
    try:
        form = await _form(request)
    except FormError as exc:
        return JSONResponse(exc.payload(), status_code=exc.status)
    secret = request.query_params.get("secret", "")
    return _answer(await intake.from_status_hook(route, secret, _deal(request, form), _correlation(request)))
