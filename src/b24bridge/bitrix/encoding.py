"""Parameters as Bitrix24 reads them from a query string: PHP ``http_build_query`` with bracket nesting.

JSON bodies carry nested parameters as they are; only batch commands (``"method?query"``) need this encoding.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import quote


def _flatten(value: Any, name: str, out: list[tuple[str, str]]) -> None:
    if isinstance(value, Mapping):
        for key, item in value.items():
            _flatten(item, f"{name}[{key}]", out)
    elif isinstance(value, Sequence) and not isinstance(value, str | bytes):
        for index, item in enumerate(value):
            _flatten(item, f"{name}[{index}]", out)
    elif value is None:
        return  # PHP drops nulls; send "" to clear a field
    elif isinstance(value, bool):
        out.append((name, "1" if value else "0"))
    else:
        out.append((name, str(value)))


def php_query(params: Mapping[str, Any]) -> str:
    """``{"fields": {"NAME": "Ann"}}`` → ``fields%5BNAME%5D=Ann``, every key and value percent-encoded."""
    pairs: list[tuple[str, str]] = []
    for key, value in params.items():
        _flatten(value, str(key), pairs)
    return "&".join(f"{quote(k, safe='')}={quote(v, safe='')}" for k, v in pairs)


def batch_command(method: str, params: Mapping[str, Any] | None) -> str:
    """One ``cmd`` entry of a batch. ``$result[...]`` references may be encoded: the portal decodes first."""
    if not params:
        return method
    return f"{method}?{php_query(params)}"
