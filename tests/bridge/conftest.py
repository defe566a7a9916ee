"""Route files for the bridge tests: the documented example, and a helper that returns a file's problems."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest

from b24bridge.bridge.routes import RouteFile, RoutesError, parse_routes

DOCS = Path(__file__).resolve().parents[2] / "docs" / "routes.md"
WEBHOOK = "https://acme.bitrix24.com/rest/1/s3cretcode42/"
SECRET = "hook-secret-0123456789"
ENV = {"ACME_WEBHOOK_URL": WEBHOOK, "PARTNER_HOOK_SECRET": SECRET}


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
