"""The ``/rest/`` surface: one HTTP request in, one portal answer out."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from typing import Any

from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import Response

from . import errors
from .auth import oauth_caller, webhook_caller
from .dispatch import envelope, run_batch, run_method
from .errors import RestError
from .runtime import Sandbox
from .wire import dumps, dumps_xml, lower_keys, parse_php_pairs, php_json, time_block

log = logging.getLogger("b24bridge.sandbox")

JSON_TYPE = "application/json; charset=utf-8"
XML_TYPE = "text/xml; charset=utf-8"
_GATEWAY_503 = (
    b"<html><head><title>503 Service Temporarily Unavailable</title></head><body>"
    b"<center><h1>503 Service Temporarily Unavailable</h1></center><hr><center>nginx</center></body></html>"
)


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(dumps(php_json(body)), status, headers=headers, media_type=JSON_TYPE)


def xml_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(dumps_xml(php_json(body)), status, headers=headers, media_type=XML_TYPE)


def error_response(exc: RestError, xml: bool = False) -> Response:
    return xml_response(exc.body(), exc.status) if xml else json_response(exc.body(), exc.status)


async def read_params(request: Request) -> dict[str, Any]:
    """Query string and body merged like PHP's ``$_REQUEST`` (body wins), JSON bodies merged on top."""
    pairs: list[tuple[str, str]] = list(request.query_params.multi_items())
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    json_body: Any = None
    if request.method == "POST":
        if content_type in ("application/x-www-form-urlencoded", "multipart/form-data"):
            form = await request.form()
            for key, value in form.multi_items():
                pairs.append((key, value.filename or "" if isinstance(value, UploadFile) else value))
        else:
            raw = await request.body()
            if raw.strip():
                try:
                    json_body = json.loads(raw)
                except ValueError:
                    # PHP's json_decode yields null on bad input and the portal carries on without parameters.
                    json_body = None
                if _SURROGATE_ESCAPE.search(raw) and _has_lone_surrogate(json_body):
                    # So does a lone UTF-16 surrogate escape (PHP's JSON_ERROR_UTF16), which Python accepts.
                    json_body = None
    params = parse_php_pairs(pairs)
    if isinstance(json_body, dict):
        params.update(json_body)
    return lower_keys(params)


_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


def _has_lone_surrogate(value: Any) -> bool:
    if isinstance(value, str):
        return any(0xD800 <= ord(char) <= 0xDFFF for char in value)
    if isinstance(value, dict):
        return any(_has_lone_surrogate(k) or _has_lone_surrogate(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_lone_surrogate(item) for item in value)
    return False


def _drop(request: Request) -> Response:
    """Close the client's connection without an answer, like a network failure."""
    transport = request.scope.get("sandbox.transport")
    if transport is not None:
        transport.abort()
        return Response(status_code=200)
    raise ConnectionAbortedError("sandbox fault: dropped connection")


async def rest_endpoint(request: Request) -> Response:
    sandbox: Sandbox = request.app.state.sandbox
    started = sandbox.now()
    parts = [p for p in request.path_params["path"].split("/") if p]
    method = parts[-1].lower() if parts else ""
    # ``.json`` (the default) or ``.xml`` picks the answer format (REFERENCE 1.1).
    xml = method.endswith(".xml")
    method = method.removesuffix(".xml") if xml else method.removesuffix(".json")
    respond = xml_response if xml else json_response
    decision = sandbox.faults.decide(method, started) if sandbox.faults.active else None
    if decision is not None:
        if decision.latency:
            await asyncio.sleep(decision.latency)
        if decision.kind == "error_500":
            return error_response(errors.internal_error(), xml)
        if decision.kind in ("error_503", "outage"):
            return Response(_GATEWAY_503, 503, media_type="text/html")
        if decision.kind == "drop_before":
            return _drop(request)
    client_ip = request.client.host if request.client else "?"
    if not sandbox.limiter.admit_request(client_ip, sandbox.now()):
        return error_response(errors.query_limit_exceeded(), xml)
    try:
        params = await read_params(request)
        auth = params.pop("auth", None)
        if len(parts) == 3:
            caller = webhook_caller(sandbox.world, parts[0], parts[1], sandbox.now())
        elif len(parts) == 1:
            caller = oauth_caller(sandbox.world, auth if isinstance(auth, str) else None, sandbox.now())
        else:
            raise errors.method_not_found()
        if method == "batch":
            began = time.perf_counter()
            result = await run_batch(sandbox, caller, params)
            body = {
                "result": result,
                "time": time_block(started, sandbox.now(), time.perf_counter() - began, sandbox.tz),
            }
        else:
            body = envelope(await run_method(sandbox, caller, method, params))
    except RestError as exc:
        return error_response(exc, xml)
    except Exception:
        log.exception("sandbox method %s failed", method)
        return error_response(errors.internal_error(), xml)
    if decision is not None and decision.kind == "drop_after":
        return _drop(request)
    headers = {"X-Bitrix-Rest-Application": caller.client_id} if caller.client_id else None
    return respond(body, headers=headers)
