"""PHP-style form decoding (``auth[member_id]=...&document_id[0]=crm``), as the portal sends robot calls.

Own small parser on purpose: the sandbox has one too, but it must stay standalone and we must not depend on it.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import parse_qsl

_KEY = re.compile(r"^([^\[\]]+)((?:\[[^\[\]]*\])*)$")
_PART = re.compile(r"\[([^\[\]]*)\]")
MAX_DEPTH = 5


def parse_form(body: str) -> dict[str, Any]:
    """Nested dicts for bracketed keys; ``x[]=a&x[]=b`` and keys 0..n-1 both become lists."""
    root: dict[str, Any] = {}
    for raw_key, value in parse_qsl(body, keep_blank_values=True):
        match = _KEY.match(raw_key)
        if match is None:
            root[raw_key] = value
            continue
        path = [match.group(1), *_PART.findall(match.group(2))][: MAX_DEPTH + 1]
        node = root
        for i, part in enumerate(path[:-1]):
            if part == "":
                part = str(len(node))
            child = node.get(part)
            if not isinstance(child, dict):
                child = {}
                node[part] = child
            node = child
            if i >= MAX_DEPTH:
                break
        last = path[-1] if path[-1] != "" else str(len(node))
        node[last] = value
    return {k: _listify(v) for k, v in root.items()}


def _listify(value: Any) -> Any:
    if not isinstance(value, dict):
        return value
    items = {k: _listify(v) for k, v in value.items()}
    if items and all(k.isdigit() for k in items) and sorted(int(k) for k in items) == list(range(len(items))):
        return [items[str(i)] for i in range(len(items))]
    return items
