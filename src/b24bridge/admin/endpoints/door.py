"""Who gets into the admin API and page, as FastAPI dependencies: the API's bearer token, the page's session cookie
and its CSRF check on every POST; and how the page answers (HTML with a strict policy, or a redirect for htmx)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, cast

from fastapi import Depends, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from b24bridge.forms import FormError, optional_text, read_form
from b24bridge.observability import get_logger

from ..access import CSRF_FIELD, CSRF_HEADER, SESSION_COOKIE, SESSION_TTL, AdminGate, Refusal, Session
from ..service import AdminService
from ..views import CONTENT_SECURITY_POLICY, query, render

log = get_logger(__name__)

HOME = "/admin/runs"
LOGIN = "/admin/login"
PAGE_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",  # pages show operational data: not for shared caches or the back button
}


def gate_of(request: Request) -> AdminGate:
    return cast(AdminGate, request.state.admin_gate)


async def _service(request: Request) -> AdminService:
    return cast(AdminService, request.state.admin)


def client_of(request: Request) -> str | None:
    return request.client.host if request.client is not None else None


def refusal_of(request: Request) -> Refusal | None:
    return gate_of(request).refusal(client_of(request), request.headers.get("host"))


ServiceDep = Annotated[AdminService, Depends(_service)]

# --- the API -----------------------------------------------------------------------------------------------------

bearer = HTTPBearer(auto_error=False, description="B24BRIDGE_ADMIN_TOKEN (none configured: loopback only)")


async def api_caller(
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]
) -> None:
    """Let an API request in, or refuse it (JSON, like every 4xx of the app)."""
    refusal = refusal_of(request)
    if refusal is not None:
        raise HTTPException(refusal.status, refusal.message)
    gate = gate_of(request)
    if gate.token_required and not gate.token_matches(credentials.credentials if credentials else None):
        raise HTTPException(
            401, "send the admin token: Authorization: Bearer <B24BRIDGE_ADMIN_TOKEN>", {"WWW-Authenticate": "Bearer"}
        )


# --- the page ----------------------------------------------------------------------------------------------------


class PageRefused(Exception):
    """A page request stopped before its handler (not let in, not logged in, a bad form): its answer."""

    def __init__(self, response: Response) -> None:
        super().__init__(response.status_code)
        self.response = response


@dataclass(frozen=True)
class Viewer:
    session: Session
    csrf: str
    can_log_out: bool
    new_cookie: str | None  # a session opened here (loopback without a token): set it on the answer


@dataclass(frozen=True)
class Posted:
    viewer: Viewer
    form: dict[str, Any]


def html(text: str, status: int = 200) -> HTMLResponse:
    return HTMLResponse(text, status_code=status, headers=PAGE_HEADERS)


def message(request: Request, status: int, title: str, text: str, *, login: bool = False) -> Response:
    if request.headers.get("HX-Request"):
        # A fragment's request (polling, a button): the whole page goes where the person can act on it.
        return Response(status_code=status, headers={"HX-Redirect": LOGIN if login else HOME})
    return html(render("message.html", title=title, message=text, login=login, csrf="", section=""), status)


def refused(request: Request, refusal: Refusal) -> Response:
    return message(request, refusal.status, "The admin page is not available here", refusal.message)


def set_session(request: Request, response: Response, cookie: str) -> None:
    secure = gate_of(request).secure_cookie(request.url.scheme, request.headers.get("host"))
    # Strict: the browser never sends it along with a request another site started, links included.
    response.set_cookie(
        SESSION_COOKIE, cookie, max_age=SESSION_TTL, path="/admin", secure=secure, httponly=True, samesite="strict"
    )


async def _viewer(request: Request) -> Viewer:
    refusal = refusal_of(request)
    if refusal is not None:
        raise PageRefused(refused(request, refusal))
    gate = gate_of(request)
    session = gate.session(request.cookies.get(SESSION_COOKIE))
    if session is not None:
        return Viewer(session, gate.csrf_token(session), gate.token_required, None)
    if gate.token_required:
        if request.method == "GET" and not request.headers.get("HX-Request"):
            wanted = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            raise PageRefused(RedirectResponse(f"{LOGIN}?{query(next=wanted)}", 303))
        raise PageRefused(message(request, 401, "Log in first", "Your session has ended.", login=True))
    # Loopback without a token: a session all the same, so that every form carries a CSRF token that a page of
    # another site (which can make this browser post to 127.0.0.1) cannot know.
    cookie = gate.new_session()
    opened = gate.session(cookie)
    assert opened is not None
    return Viewer(opened, gate.csrf_token(opened), False, cookie)


ViewerDep = Annotated[Viewer, Depends(_viewer)]


async def _posted(request: Request, viewer: ViewerDep) -> Posted:
    try:
        form = await read_form(await request.body())
        presented = request.headers.get(CSRF_HEADER) or optional_text(form, CSRF_FIELD, max_len=256)
    except FormError as exc:
        raise PageRefused(message(request, 400, "Refused", exc.payload()["error"])) from None
    if not gate_of(request).csrf_matches(viewer.session, presented):
        log.warning("admin.csrf_refused", path=request.url.path, client=client_of(request))
        text = "The form's CSRF token is missing or wrong. Reload the page and try again."
        raise PageRefused(message(request, 403, "Refused", text))
    return Posted(viewer, form)


PostedDep = Annotated[Posted, Depends(_posted)]


def page(request: Request, viewer: Viewer, template: str, status: int = 200, **context: Any) -> HTMLResponse:
    response = html(render(template, csrf=viewer.csrf, logout=viewer.can_log_out, **context), status)
    if viewer.new_cookie is not None:
        set_session(request, response, viewer.new_cookie)
    return response
