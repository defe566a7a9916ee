"""Route files for the bridge tests: the documented example and a helper that returns a file's problems; and the
records, and the context around them, that the mapping tests map."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path
from typing import Any

import pytest

from b24bridge.bridge.mapping import MappingContext
from b24bridge.bridge.route_model import FieldRule, Route
from b24bridge.bridge.routes import RouteFile, RoutesError, parse_routes

DOCS = Path(__file__).resolve().parents[2] / "docs" / "routes.md"
WEBHOOK = "https://acme.bitrix24.com/rest/1/s3cretcode42/"
SECRET = "hook-secret-0123456789"
ENV = {"ACME_WEBHOOK_URL": WEBHOOK, "PARTNER_HOOK_SECRET": SECRET}
SOURCE = {"name": "partner", "domain": "partner.bitrix24.com", "member_id": "a" * 32}
DEAL = {
    "ID": "42",
    "TITLE": "Boilers",
    "OPPORTUNITY": "1500.5",
    "CURRENCY_ID": "RUR",
    "STAGE_ID": "C1:PREPARATION",
    "BEGINDATE": "2024-08-15T00:00:00+03:00",
    "ASSIGNED_BY_ID": "5",
    "UF_CRM_TAGS": False,  # Bitrix24's empty multiple field
}
CONTACT = {
    "NAME": "Ann",
    "LAST_NAME": "Lee",
    "PHONE": [{"ID": "156", "VALUE_TYPE": "WORK", "VALUE": "+15551234567", "TYPE_ID": "PHONE"}],
    "EMAIL": [{"ID": "157", "VALUE_TYPE": "HOME", "VALUE": "ann@example.com", "TYPE_ID": "EMAIL"}],
}
COMPANY = {"TITLE": "Lee & Co", "tax_number": "7701234567"}


def documented_example() -> str:
    """The first YAML block of docs/routes.md: the example every operator starts from."""
    match = re.search(r"```yaml\n(.*?)```", DOCS.read_text(encoding="utf-8"), re.S)
    assert match, "docs/routes.md has no yaml example"
    return match.group(1)


def load(text: str, env: dict[str, str] | None = None) -> RouteFile:
    return parse_routes(textwrap.dedent(text), "routes.yaml", ENV if env is None else env)


def problems(text: str, env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(RoutesError) as caught:
        load(text, env)
    assert str(caught.value) == "\n".join(caught.value.problems)
    return caught.value.problems


def example_route() -> Route:
    return load(documented_example()).routes["partner-to-acme"]


def context(**changes: Any) -> MappingContext:
    values: dict[str, Any] = {
        "deal": DEAL,
        "contact": CONTACT,
        "company": COMPANY,
        "source": SOURCE,
        "route": "partner-to-acme",
        "users": {5: 9},
    }
    return MappingContext(**{**values, **changes})


def rules(**items: FieldRule) -> dict[str, FieldRule]:
    return dict(items)
