"""HTTP endpoints of the bridge: the bridge robot's handler and the outbound-webhook hooks (deal in, status back)."""

from __future__ import annotations

from typing import Annotated, Any, cast

from fastapi import APIRouter, Depends, Header, Path, Request
from fastapi.responses import JSONResponse

from b24bridge import apidoc
from b24bridge.apidoc import error_responses
from b24bridge.forms import FormError, mapping, parse_form, read_form, text
from b24bridge.portals.directory import UNKNOWN, PortalDirectory
from b24bridge.portals.schemas import Check

from .inbound import InboundAnswer, InboundService
from .intake import BridgeIntake
from .schemas import Accepted, InboundRecord

router = APIRouter(tags=["bridge"])


async def _intake(request: Request) -> BridgeIntake:
    return cast(BridgeIntake, request.state.bridge_intake)


async def _inbound(request: Request) -> InboundService:
    return cast(InboundService, request.state.bridge_inbound)


IntakeDep = Annotated[BridgeIntake, Depends(_intake)]
InboundDep = Annotated[InboundService, Depends(_inbound)]


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


@router.post(
    "/bridge/robot",
    openapi_extra=apidoc.robot_call_body("document_id[n]: the deal the workflow runs on; auth[...] as sent"),
    responses=error_responses(400, 401, 413, 503),
)
@apidoc.served_raw
async def bridge_robot(request: Request) -> JSONResponse:
    """The bridge robot ran in a source's workflow: accept it now, deliver in a job, answer the workflow after."""
    intake = cast(BridgeIntake, request.state.bridge_intake)
    directory = cast(PortalDirectory, request.state.portal_directory)
    try:
        form = await read_form(await request.body())
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


_HOOK_DOC: dict[str, Any] = {
    "openapi_extra": apidoc.path_parameters("route"),
    "responses": error_responses(400, 401, 404, 413, 503),
}


@router.get("/bridge/hooks/{route}", operation_id="bridge_hook_get", **_HOOK_DOC)
@router.post("/bridge/hooks/{route}", operation_id="bridge_hook_post", **_HOOK_DOC)
@apidoc.served_raw
async def bridge_hook(request: Request) -> JSONResponse:
    """The source's outbound-webhook rule: ``{PUBLIC_URL}/bridge/hooks/{route}?secret=...&deal={=Document:ID}``."""
    intake = cast(BridgeIntake, request.state.bridge_intake)
    try:
        form = await _form(request)
    except FormError as exc:
        return JSONResponse(exc.payload(), status_code=exc.status)
    route, secret = request.path_params["route"], request.query_params.get("secret", "")
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


_INBOUND_ANSWERS: dict[int | str, dict[str, Any]] = {
    200: {"description": "delivered: the target record's id and page (``id``, ``url``), the run's id and action"},
    202: {"description": "accepted, still waiting (for the portal's limits, say): ``run_id``; ask ``Location``"},
    **error_responses(
        400,
        401,
        404,
        422,
        503,
        described={
            400: "no Idempotency-Key, or a body that is not a record (the error names the field)",
            401: "no bearer token, or not the route's (Authorization: Bearer ...)",
            404: "no inbound route of this name, or no such run of it",
            422: "the key was used with another body, or the delivery failed for good (its error)",
        },
    ),
}


def _bearer(authorization: str | None) -> str:
    scheme, _, token = (authorization or "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


def _inbound_answer(answer: InboundAnswer) -> JSONResponse:
    return JSONResponse(answer.body, status_code=answer.status, headers=answer.headers or None)


@router.post("/api/inbound/{route}", tags=["inbound"], responses=_INBOUND_ANSWERS, status_code=200)
async def inbound_record(
    route: Annotated[str, Path(max_length=64)],
    body: InboundRecord,
    request: Request,
    inbound: InboundDep,
    authorization: Annotated[str | None, Header(description="Bearer <the route's inbound token>")] = None,
    idempotency_key: Annotated[
        str | None, Header(alias="Idempotency-Key", description="one key per record to create; at most 255 ASCII")
    ] = None,
) -> JSONResponse:
    """Your system hands a record to a portal: created (or, with the same ``id``, updated) through the route's
    mapping, exactly once per ``Idempotency-Key``."""
    payload = body.model_dump(exclude_unset=True)
    answer = await inbound.submit(route, _bearer(authorization), idempotency_key, payload, _correlation(request))
    return _inbound_answer(answer)


@router.get("/api/inbound/{route}/runs/{run_id}", tags=["inbound"], responses=_INBOUND_ANSWERS)
async def inbound_run(
    route: Annotated[str, Path(max_length=64)],
    run_id: Annotated[int, Path(ge=1, le=2**63 - 1)],
    inbound: InboundDep,
    authorization: Annotated[str | None, Header(description="Bearer <the route's inbound token>")] = None,
) -> JSONResponse:
    """How an inbound POST's delivery went (what a 202 pointed to)."""
    return _inbound_answer(await inbound.status(route, _bearer(authorization), run_id))
