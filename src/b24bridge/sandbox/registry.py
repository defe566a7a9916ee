"""REST methods of the sandbox portal: how they are declared and what they receive."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from .errors import RestError

if TYPE_CHECKING:
    from .runtime import Sandbox
    from .state import World

AuthRule = Literal["any", "app", "app_bizproc"]


@dataclass(frozen=True)
class Caller:
    """Who is calling: an incoming webhook or an OAuth application acting for a user."""

    kind: Literal["webhook", "oauth"]
    user_id: int
    scopes: frozenset[str]
    client_id: str | None = None
    webhook_id: int | None = None
    access_token: str | None = None

    @property
    def budget_key(self) -> str:
        """The operating-time budget is kept per application or per webhook."""
        return f"app:{self.client_id}" if self.kind == "oauth" else f"hook:{self.webhook_id}"


@dataclass
class Page:
    """An answer with ``total`` (and ``next`` while more follow) beside ``result``, as list methods answer.

    ``result`` is what goes under ``result``: usually the page's list of records, but any value the method answers
    (``crm.category.list`` answers ``{"categories": [...]}`` with a ``total``). The portal builds the same envelope
    from a result array that holds ``next``/``total`` keys (REFERENCE 1.3); in ``batch`` the three go to
    ``result``/``result_total``/``result_next``.
    """

    result: Any
    total: int
    next: int | None = None


@dataclass
class Call:
    sandbox: Sandbox
    caller: Caller
    method: str
    params: dict[str, Any]

    @property
    def world(self) -> World:
        return self.sandbox.world

    def param(self, name: str, default: Any = None) -> Any:
        return self.params.get(name, default)

    def map_param(self, name: str) -> dict[str, Any] | None:
        """A parameter holding a map; PHP's empty array arrives as ``[]`` and is an empty map. None: not a map."""
        value = self.params.get(name)
        if isinstance(value, list) and not value:
            return {}
        return value if isinstance(value, dict) else None

    def require_admin(self) -> None:
        user = self.world.users.get(self.caller.user_id)
        if user is None or not user.admin:
            raise RestError("ACCESS_DENIED", "Access denied!", 403)


Handler = Callable[[Call], Any] | Callable[[Call], Awaitable[Any]]


@dataclass(frozen=True)
class MethodSpec:
    name: str
    handler: Handler
    scope: str | None
    batchable: bool
    auth: AuthRule
    is_async: bool


METHODS: dict[str, MethodSpec] = {}


def rest_method(
    name: str, scope: str | None = None, *, batchable: bool = True, auth: AuthRule = "any"
) -> Callable[[Handler], Handler]:
    """Register a method. ``scope`` None means the ``basic`` scope every caller has."""

    def register(handler: Handler) -> Handler:
        METHODS[name.lower()] = MethodSpec(
            name.lower(), handler, scope, batchable, auth, inspect.iscoroutinefunction(handler)
        )
        return handler

    return register
