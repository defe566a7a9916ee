"""Bitrix24 REST errors as the portal reports them: a code, a description and an HTTP status."""

from __future__ import annotations

from typing import Any


class RestError(Exception):
    """An error answered as ``{"error": code, "error_description": description}`` with ``status``.

    ``code`` may be the empty string: legacy ``crm.*`` methods answer most of their errors that way.
    """

    def __init__(self, code: str | int, description: str, status: int = 400, **extra: Any) -> None:
        super().__init__(f"{code}: {description}")
        self.code = code
        self.description = description
        self.status = status
        self.extra = extra

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"error": self.code, "error_description": self.description}
        body.update(self.extra)
        return body


def method_not_found() -> RestError:
    return RestError("ERROR_METHOD_NOT_FOUND", "Method not found!", 404)


def no_auth() -> RestError:
    return RestError("NO_AUTH_FOUND", "Wrong authorization data", 401)


def expired_token() -> RestError:
    return RestError("expired_token", "The access token provided has expired", 401)


def invalid_token() -> RestError:
    return RestError("invalid_token", "The access token provided is invalid", 401)


def insufficient_scope() -> RestError:
    return RestError(
        "insufficient_scope", "The request requires higher privileges than provided by the webhook token", 403
    )


def wrong_auth_type() -> RestError:
    return RestError("WRONG_AUTH_TYPE", "Current authorization type is denied for this method", 403)


def access_denied(detail: str = "") -> RestError:
    return RestError("ACCESS_DENIED", "Access denied!" + (f" {detail}" if detail else ""), 403)


def query_limit_exceeded() -> RestError:
    return RestError("QUERY_LIMIT_EXCEEDED", "Too many requests", 503)


def operation_time_limit() -> RestError:
    return RestError("OPERATION_TIME_LIMIT", "Method is blocked due to operation time limit.", 429)


def internal_error() -> RestError:
    return RestError("INTERNAL_SERVER_ERROR", "Internal server error", 500)


def legacy(description: str, status: int = 400) -> RestError:
    """A legacy CRM error: empty ``error`` code, the text in ``error_description``."""
    return RestError("", description, status)
