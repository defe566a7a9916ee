"""One exception hierarchy for everything that can go wrong talking to a Bitrix24 portal.

Every error carries what the portal said (code, description, HTTP status, raw body) and the method, and is
classified by what the caller may do about it:

* ``RETRYABLE`` - the portal did not execute the request (limits, gateway faults, refused connections); sending it
  again is safe.
* ``PERMANENT`` - sending it again gives the same answer (bad parameters, missing scope, not found).
* ``UNCERTAIN`` - the request may have been executed (a timeout or a dropped connection after it was sent, or a
  server error on a write). Writes are never blindly retried; the caller must check (for example by ORIGIN_ID).
"""

from __future__ import annotations

import enum
import json
from typing import Any


class Retry(enum.Enum):
    RETRYABLE = "retryable"
    PERMANENT = "permanent"
    UNCERTAIN = "uncertain"


class BitrixError(Exception):
    """Base of every error raised by the client."""

    retry: Retry = Retry.PERMANENT

    def __init__(
        self,
        message: str,
        *,
        method: str | None = None,
        code: str = "",
        description: str = "",
        status: int | None = None,
        body: str | None = None,
        portal: str | None = None,
    ) -> None:
        super().__init__(message)
        self.method = method
        self.code = code
        self.description = description
        self.status = status
        self.body = body
        self.portal = portal

    @property
    def retryable(self) -> bool:
        return self.retry is Retry.RETRYABLE

    @property
    def uncertain(self) -> bool:
        return self.retry is Retry.UNCERTAIN

    def __str__(self) -> str:
        where = f"{self.method}: " if self.method else ""
        status = f" (HTTP {self.status})" if self.status is not None else ""
        return f"{where}{self.args[0]}{status}"


# --- configuration and auth -------------------------------------------------------------------------------


class ConfigurationError(BitrixError):
    """The connection is set up wrongly (e.g. plain http to a non-loopback host)."""


class AuthLostError(BitrixError):
    """The portal's refresh token was rejected (``invalid_grant``): a new installation or authorisation is needed.

    Calls fail fast with this error until new tokens are set; nothing loops on a dead refresh token.
    """


class TokenRefreshError(BitrixError):
    """The OAuth server could not be reached or answered unexpectedly while refreshing."""

    retry = Retry.RETRYABLE


# --- answers from the portal -------------------------------------------------------------------------------


class APIError(BitrixError):
    """The portal answered with an error envelope ``{error, error_description}``."""


class AuthenticationError(APIError):
    """401: wrong webhook code, unknown token (``NO_AUTH_FOUND``, ``invalid_token``)."""


class ExpiredTokenError(AuthenticationError):
    """401 ``expired_token``: the client refreshes and repeats the call by itself; seen only if that fails."""

    retry = Retry.RETRYABLE


class AccessDeniedError(APIError):
    """403: ``insufficient_scope``, ``ACCESS_DENIED``, ``WRONG_AUTH_TYPE`` and friends."""


class MethodNotFoundError(APIError):
    """404 ``ERROR_METHOD_NOT_FOUND``."""


class LimitError(APIError):
    """A portal limit refused the request before it ran: it is safe to send again later."""

    retry = Retry.RETRYABLE


class QueryLimitError(LimitError):
    """503 ``QUERY_LIMIT_EXCEEDED``: the request-rate bucket is full."""


class OperationTimeLimitError(LimitError):
    """429 ``OPERATION_TIME_LIMIT``: this method's server-time budget is spent (until the reset time earlier
    answers reported in ``time.operating_reset_at``; the refusal itself carries none)."""


class OverloadError(APIError):
    """503 without a limit code (gateway, ``OVERLOAD_LIMIT``): the portal did not run the request."""

    retry = Retry.RETRYABLE


class ServerError(APIError):
    """500 and other 5xx: the portal may have run the request. Retryable for reads, uncertain for writes."""

    retry = Retry.UNCERTAIN


class BadRequestError(APIError):
    """400 and other 4xx method errors: parameters, validation, not found (code often empty on legacy CRM)."""


class BatchLengthError(BadRequestError):
    """400 ``ERROR_BATCH_LENGTH_EXCEEDED``."""


class NotExecutedError(APIError):
    """A command of a ``halt`` batch that never ran because an earlier one failed: safe to send again."""

    retry = Retry.RETRYABLE


# --- no answer -----------------------------------------------------------------------------------------------


class TransportError(BitrixError):
    """No complete answer came back."""


class ConnectError(TransportError):
    """The connection could not be made: nothing was sent."""

    retry = Retry.RETRYABLE


class UncertainError(TransportError):
    """The request was sent but no answer arrived (timeout, dropped connection): it may have been executed."""

    retry = Retry.UNCERTAIN


_BY_CODE: dict[str, type[APIError]] = {
    "expired_token": ExpiredTokenError,
    "NO_AUTH_FOUND": AuthenticationError,
    "invalid_token": AuthenticationError,
    "insufficient_scope": AccessDeniedError,
    "ACCESS_DENIED": AccessDeniedError,
    "INVALID_CREDENTIALS": AccessDeniedError,
    "user_access_error": AccessDeniedError,
    "WRONG_AUTH_TYPE": AccessDeniedError,
    "ERROR_METHOD_NOT_FOUND": MethodNotFoundError,
    "QUERY_LIMIT_EXCEEDED": QueryLimitError,
    "OPERATION_TIME_LIMIT": OperationTimeLimitError,
    "OVERLOAD_LIMIT": OverloadError,
    "ERROR_BATCH_LENGTH_EXCEEDED": BatchLengthError,
    "INTERNAL_SERVER_ERROR": ServerError,
}


def from_answer(
    status: int, body: Any, raw: str, *, method: str | None, portal: str | None = None, idempotent: bool = False
) -> APIError:
    """Build the error for an error answer (an envelope with ``error``, or any non-2xx)."""
    code = ""
    description = ""
    if isinstance(body, dict):
        code = str(body.get("error") or "")
        description = str(body.get("error_description") or "")
    cls = _BY_CODE.get(code)
    if cls is None:
        if status == 401:
            cls = AuthenticationError
        elif status == 403:
            cls = AccessDeniedError
        elif status == 404:
            cls = MethodNotFoundError
        elif status in (502, 503):
            cls = OverloadError
        elif status >= 500:
            cls = ServerError
        else:
            cls = BadRequestError
    text = ": ".join(part for part in (code, description) if part) or f"HTTP {status}"
    error = cls(text, method=method, code=code, description=description, status=status, body=raw, portal=portal)
    if isinstance(error, ServerError) and idempotent:
        error.retry = Retry.RETRYABLE
    return error


def command_error(method: str, body: Any, *, portal: str | None = None, idempotent: bool = False) -> APIError:
    """The error of one command inside a batch (``result_error[key]``); the batch itself answered 200."""
    code = str(body.get("error") or "") if isinstance(body, dict) else ""
    status = _STATUS_OF.get(code, 400)
    raw = json.dumps(body, ensure_ascii=False)
    return from_answer(status, body, raw, method=method, portal=portal, idempotent=idempotent)


_STATUS_OF = {
    "expired_token": 401,
    "NO_AUTH_FOUND": 401,
    "invalid_token": 401,
    "insufficient_scope": 403,
    "ACCESS_DENIED": 403,
    "WRONG_AUTH_TYPE": 403,
    "ERROR_METHOD_NOT_FOUND": 404,
    "ERROR_BATCH_METHOD_NOT_ALLOWED": 405,
    "OPERATION_TIME_LIMIT": 429,
    "INTERNAL_SERVER_ERROR": 500,
    "QUERY_LIMIT_EXCEEDED": 503,
}
