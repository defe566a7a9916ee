"""The sandbox portal's world: users, applications, credentials, CRM records, robots, workflows.

Everything lives in memory in plain dataclasses and dicts so that a whole world can be written to JSON and read
back (``--state``). CRM records are kept as the portal's own field maps (upper-case keys) because that is what
every CRM method reads and writes.
"""

from __future__ import annotations

import dataclasses
import json
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .crm_statuses import DEFAULT_CATEGORY, LEAD_STATUS_ENTITY, stock_lead_statuses, stock_statuses


def token() -> str:
    """32 lower-case hex characters, the shape of real access/refresh/application tokens."""
    return secrets.token_hex(16)


@dataclass
class User:
    id: int
    name: str
    last_name: str
    email: str
    admin: bool = True
    active: bool = True


@dataclass
class Application:
    client_id: str
    client_secret: str
    name: str
    handler_url: str = ""
    install_url: str = ""
    redirect_url: str = ""
    scopes: list[str] = field(default_factory=lambda: ["crm", "bizproc", "user"])
    version: int = 1
    status: str = "L"
    installed: bool = False
    application_token: str = ""
    installed_by: int = 1
    # "Script only (no user interface)": installed by the ONAPPINSTALL callback, no installFinish (REFERENCE 4.3b).
    api_only: bool = False


@dataclass
class Webhook:
    id: int
    user_id: int
    code: str
    scopes: list[str]
    expires_at: float | None = None
    name: str = ""


@dataclass
class AccessToken:
    token: str
    client_id: str
    user_id: int
    expires_at: float


@dataclass
class RefreshToken:
    token: str
    client_id: str
    user_id: int
    expires_at: float


@dataclass
class AuthCode:
    code: str
    client_id: str
    user_id: int
    expires_at: float


@dataclass
class World:
    member_id: str = field(default_factory=token)
    users: dict[int, User] = field(default_factory=dict)
    apps: dict[str, Application] = field(default_factory=dict)
    webhooks: dict[int, Webhook] = field(default_factory=dict)
    access_tokens: dict[str, AccessToken] = field(default_factory=dict)
    refresh_tokens: dict[str, RefreshToken] = field(default_factory=dict)
    auth_codes: dict[str, AuthCode] = field(default_factory=dict)
    # CRM: entity type ("CONTACT", "COMPANY", "DEAL", "LEAD", "REQUISITE", "DYNAMIC_128") -> id -> field map.
    crm: dict[str, dict[int, dict[str, Any]]] = field(default_factory=dict)
    # Product rows by owner entity ("DEAL", "LEAD") and owner id.
    product_rows: dict[str, dict[int, list[dict[str, Any]]]] = field(default_factory=dict)
    # Reference lists as crm.status.list rows, deal stages of every funnel included; funnels by id (0 = default).
    statuses: list[dict[str, Any]] = field(default_factory=list)
    categories: dict[int, dict[str, Any]] = field(default_factory=dict)
    # Smart processes (crm.type.*) by their type id; their items are ``crm["DYNAMIC_{entityTypeId}"]``, their funnels
    # are in ``categories`` and their stages in ``statuses`` like the deals' (see crm_types).
    spa_types: dict[int, dict[str, Any]] = field(default_factory=dict)
    # User fields by their UF entity ("CRM_DEAL", "CRM_CONTACT", "CRM_COMPANY"), in creation order.
    user_fields: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    counters: dict[str, int] = field(default_factory=dict)
    # Robots and activities registered by applications, keyed "client_id|CODE" (CODE as given: the portal's key
    # is md5(APP_ID@CODE), case-sensitive).
    robots: dict[str, dict[str, Any]] = field(default_factory=dict)
    event_bindings: list[dict[str, Any]] = field(default_factory=list)
    # Queue of offline events (event.bind event_type=offline), read by event.offline.get.
    offline_events: list[dict[str, Any]] = field(default_factory=list)
    automation_rules: list[dict[str, Any]] = field(default_factory=list)
    workflows: dict[str, dict[str, Any]] = field(default_factory=dict)
    handler_calls: list[dict[str, Any]] = field(default_factory=list)
    # Signs bizproc event tokens; part of the world so tokens stay valid across --state save/load.
    bizproc_secret: str = field(default_factory=token)

    def next_id(self, counter: str) -> int:
        value = self.counters.get(counter, 0) + 1
        self.counters[counter] = value
        return value

    def records(self, entity: str) -> dict[int, dict[str, Any]]:
        return self.crm.setdefault(entity, {})

    def rows_of(self, owner: str) -> dict[int, list[dict[str, Any]]]:
        """Product rows of one owner entity ("DEAL", "LEAD") by owner id."""
        return self.product_rows.setdefault(owner, {})

    # --- persistence -------------------------------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> World:
        world = cls(member_id=data["member_id"])
        world.users = {int(k): User(**v) for k, v in data.get("users", {}).items()}
        world.apps = {k: Application(**v) for k, v in data.get("apps", {}).items()}
        world.webhooks = {int(k): Webhook(**v) for k, v in data.get("webhooks", {}).items()}
        world.access_tokens = {k: AccessToken(**v) for k, v in data.get("access_tokens", {}).items()}
        world.refresh_tokens = {k: RefreshToken(**v) for k, v in data.get("refresh_tokens", {}).items()}
        world.auth_codes = {k: AuthCode(**v) for k, v in data.get("auth_codes", {}).items()}
        world.crm = {e: {int(i): r for i, r in recs.items()} for e, recs in data.get("crm", {}).items()}
        rows = data.get("product_rows", {})
        if rows and all(str(k).isdigit() for k in rows):
            rows = {"DEAL": rows}  # saved before leads had product rows: {deal_id: rows}
        world.product_rows = {owner: {int(k): v for k, v in by_id.items()} for owner, by_id in rows.items()}
        world.statuses = list(data.get("statuses", []))
        world.categories = {int(k): v for k, v in data.get("categories", {}).items()}
        world.spa_types = {int(k): v for k, v in data.get("spa_types", {}).items()}
        world.user_fields = {k: list(v) for k, v in data.get("user_fields", {}).items()}
        world.counters = dict(data.get("counters", {}))
        world.robots = dict(data.get("robots", {}))
        world.event_bindings = list(data.get("event_bindings", []))
        world.offline_events = list(data.get("offline_events", []))
        world.automation_rules = list(data.get("automation_rules", []))
        world.workflows = dict(data.get("workflows", {}))
        world.handler_calls = list(data.get("handler_calls", []))
        world.bizproc_secret = data.get("bizproc_secret") or world.bizproc_secret
        return world

    def save(self, path: Path) -> None:
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(json.dumps(self.to_json(), ensure_ascii=False))
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> World:
        return cls.from_json(json.loads(path.read_text()))


def seed_world(world: World) -> None:
    """The portal as it comes out of the box: an administrator, one more employee, the stock reference lists and the
    default deal funnel. A world saved before a part existed gets that part here when it is loaded."""
    if not world.statuses:
        world.statuses = stock_statuses()
    elif not any(row["ENTITY_ID"] == LEAD_STATUS_ENTITY for row in world.statuses):
        # A world saved before the sandbox had leads: its lead stages as a new portal has them.
        world.statuses.extend(stock_lead_statuses(max(int(row["ID"]) for row in world.statuses) + 2))
    if not world.categories:
        world.categories[0] = dict(DEFAULT_CATEGORY)
    if not world.users:
        world.users[1] = User(1, "Admin", "Sandbox", "admin@sandbox.local", admin=True)
        world.users[2] = User(2, "Maria", "Ivanova", "maria@sandbox.local", admin=False)
