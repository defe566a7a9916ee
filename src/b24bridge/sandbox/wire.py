"""The wire format of a Bitrix24 portal: PHP-style parameters in, PHP-style JSON out.

Portals run on PHP, so request parameters arrive through ``parse_str`` (bracket nesting, ``a[]`` appends) and
answers leave through ``json_encode`` (a sequential array becomes a JSON list, any other array an object, and an
empty array is always ``[]``). Emulating both here keeps every method free of wire concerns.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta, timezone
from typing import Any
from urllib.parse import parse_qsl
from xml.sax.saxutils import escape

_BRACKETS = re.compile(r"\[([^\]]*)\]")


def parse_php_pairs(pairs: Iterable[tuple[str, str]]) -> dict[str, Any]:
    """Build nested parameters from ``key=value`` pairs the way PHP's ``parse_str`` does."""
    root: dict[str, Any] = {}
    for raw_key, value in pairs:
        head, _, rest = raw_key.partition("[")
        if not head:
            continue
        path = [head]
        if rest:
            path.extend(_BRACKETS.findall("[" + rest))
        _assign(root, path, value)
    # Top-level names are never numeric in practice, so the root stays a map.
    return {k: _listify(v) for k, v in root.items()}


def parse_php_query(query: str) -> dict[str, Any]:
    return parse_php_pairs(parse_qsl(query, keep_blank_values=True))


def _assign(node: dict[str, Any], path: list[str], value: Any) -> None:
    for i, key in enumerate(path):
        last = i == len(path) - 1
        if key == "":
            key = str(_next_index(node))
        if last:
            node[key] = value
            return
        child = node.get(key)
        if not isinstance(child, dict):
            child = {}
            node[key] = child
        node = child


def _next_index(node: Mapping[str, Any]) -> int:
    ints = [int(k) for k in node if k.lstrip("-").isdigit()]
    return max(ints) + 1 if ints else 0


def _listify(value: Any) -> Any:
    """Turn dicts keyed ``"0".."n-1"`` in order into lists, as ``json_encode`` would show them."""
    if isinstance(value, dict):
        converted = {k: _listify(v) for k, v in value.items()}
        if converted and all(k == str(i) for i, k in enumerate(converted)):
            return list(converted.values())
        return converted
    if isinstance(value, list):
        return [_listify(v) for v in value]
    return value


def as_list(value: Any) -> list[Any]:
    """PHP ``array_values``: a list from a list, a map's values, or a single scalar."""
    if value is None or value == "":
        return []
    if isinstance(value, list):
        return value
    if isinstance(value, dict):
        return list(value.values())
    return [value]


def lower_keys(params: Mapping[str, Any]) -> dict[str, Any]:
    """Top-level parameter names are case-insensitive on the portal (``fields`` == ``FIELDS``)."""
    return {str(k).lower(): v for k, v in params.items()}


def php_json(value: Any) -> Any:
    """Apply PHP's array rules before encoding: empty maps and maps keyed 0..n-1 become lists."""
    if isinstance(value, dict):
        if not value:
            return []
        if all(str(k) == str(i) for i, k in enumerate(value)):
            return [php_json(v) for v in value.values()]
        return {str(k): php_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [php_json(v) for v in value]
    return value


def dumps(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()


_XML_NAME = re.compile(r"[^A-Za-z0-9_.-]")
_XML_UNSAFE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f]")  # not allowed in XML 1.0 text, even escaped


def dumps_xml(value: Any) -> bytes:
    """The ``.xml`` answer format (REFERENCE 1.1): the envelope under a ``<response>`` root, list items as ``<item>``.

    ``value`` is what ``dumps`` would encode (after ``php_json``). Map keys become element names; a key that is not a
    valid name (numeric, or with characters outside ``[A-Za-z0-9_.-]``) is written as ``item`` or with those
    characters replaced by ``_``. Scalars print as PHP prints them: ``true`` as ``1``, ``false`` and ``null`` as
    nothing. [inferred: the docs name only the root and the list items]
    """
    parts: list[str] = ['<?xml version="1.0" encoding="utf-8"?>', "<response>"]
    _xml_into(parts, value)
    parts.append("</response>")
    return "".join(parts).encode()


def _xml_name(key: Any) -> str:
    name = _XML_NAME.sub("_", str(key))
    if not name or not (name[0].isalpha() or name[0] == "_"):
        return "item"
    return name


def _xml_into(parts: list[str], value: Any) -> None:
    if isinstance(value, dict):
        for key, item in value.items():
            name = _xml_name(key)
            parts.append(f"<{name}>")
            _xml_into(parts, item)
            parts.append(f"</{name}>")
    elif isinstance(value, list | tuple):
        for item in value:
            parts.append("<item>")
            _xml_into(parts, item)
            parts.append("</item>")
    elif isinstance(value, bool):
        parts.append("1" if value else "")
    elif value is not None:
        parts.append(escape(_XML_UNSAFE.sub("", str(value))))


def iso(ts: float, tz: timezone) -> str:
    """``date('c')``: ISO 8601 with the portal's UTC offset and whole seconds."""
    return datetime.fromtimestamp(ts, tz).isoformat(timespec="seconds")


def time_block(start: float, finish: float, processing: float, tz: timezone) -> dict[str, Any]:
    return {
        "start": start,
        "finish": finish,
        "duration": finish - start,
        "processing": processing,
        "date_start": iso(start, tz),
        "date_finish": iso(finish, tz),
    }


def parse_tz(offset: str) -> timezone:
    """``+03:00`` → a fixed offset; the sandbox portal lives in one timezone, like a real one."""
    match = re.fullmatch(r"([+-])(\d{2}):(\d{2})", offset)
    if not match:
        raise ValueError(f"timezone offset must look like +03:00, got {offset!r}")
    sign = 1 if match.group(1) == "+" else -1
    return timezone(sign * timedelta(hours=int(match.group(2)), minutes=int(match.group(3))))


def php_pairs(params: Mapping[str, Any], prefix: str = "") -> list[tuple[str, str]]:
    """Flatten nested parameters into ``key[sub][0]=value`` pairs, as PHP's ``http_build_query`` does."""
    pairs: list[tuple[str, str]] = []
    for key, value in params.items():
        name = f"{prefix}[{key}]" if prefix else str(key)
        if isinstance(value, Mapping):
            pairs.extend(php_pairs(value, name))
        elif isinstance(value, list | tuple):
            pairs.extend(php_pairs({str(i): v for i, v in enumerate(value)}, name))
        elif value is None:
            continue  # http_build_query skips nulls
        elif isinstance(value, bool):
            pairs.append((name, "1" if value else "0"))
        else:
            pairs.append((name, str(value)))
    return pairs
