"""Bounded decoding of the PHP-style forms Bitrix24 posts (``auth[member_id]=..&document_id[0]=crm``).

Every request that reaches the install, event and robot endpoints comes from the Internet, so the parser
refuses, with a :class:`FormError` whose text names the field and is safe to show, anything that could hurt
later: too many fields, long keys, deep brackets, malformed brackets, bytes that are not UTF-8 and NUL
characters (PostgreSQL refuses them, which used to surface as a 500). Values are never echoed in messages:
they may be tokens.

Cost: linear in the body size (one regex scan for fields, one C-speed percent-decode per key and value, one walk of
the result), and the field cap ends the scan early however big the body. Measured on a shared 2-core machine: a
robot call (640 B) 0.1 ms; 1,000 short fields 2.5 ms; 1,000 fields of 1 KB (1 MB) 8.5 ms; 1,000 fields five
levels deep 14 ms (the slowest shape found); a 1 MB value of ``%XX`` escapes 12 ms; 200 MB of ``k=v&`` refused at
field 1,001 in 2.3 ms. Within the 1 MB cap that is cheap enough to run inline on the event loop.
"""

from __future__ import annotations

import asyncio
import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from . import safetext

__all__ = [
    "DEFAULT_LIMITS",
    "FormError",
    "FormLimits",
    "choice",
    "field_name",
    "flatten",
    "integer",
    "mapping",
    "optional_integer",
    "optional_text",
    "parse_form",
    "read_form",
    "shown",
    "text",
    "text_list",
]

_FIELD = re.compile(rb"[^&]+")  # empty segments (``a=1&&b=2``, a trailing ``&``) are skipped, as PHP does
_BRACKETS = re.compile(r"(?:\[[^\[\]]*\])*")
_SEGMENT = re.compile(r"\[([^\[\]]*)\]")
# Only canonical ASCII decimals become list positions, as PHP does: ``'²'.isdigit()`` and ``'٣'.isdigit()`` are
# True in Python, and ``01`` is a string key in PHP. 18 digits keep ``int()`` cheap and inside PHP's integers.
_INDEX = re.compile(r"0|[1-9][0-9]{0,17}")
_INTEGER = re.compile(r"-?[0-9]{1,19}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_DIGITS = frozenset("0123456789")
_SHOWN_NAME = 64


@dataclass(frozen=True)
class FormLimits:
    """Caps applied before any field is used; the defaults fit every form Bitrix24 sends with room to spare."""

    max_body_bytes: int = 1024 * 1024
    max_fields: int = 1000
    max_key_length: int = 256  # decoded characters, brackets included
    max_depth: int = 5  # bracket levels below the top-level name: ``a[1][2][3][4][5]``
    max_value_length: int = 1024 * 1024  # decoded characters; the body cap bounds it as well


DEFAULT_LIMITS = FormLimits()


class FormError(ValueError):
    """A form that cannot be accepted. The text names the field (truncated) and never contains a value.

    ``status`` is the HTTP answer (400, or 413 for a body over the size cap); ``field`` the offending field's
    name as sent, if one field is to blame.
    """

    def __init__(self, message: str, *, field: str | None = None, status: int = 400) -> None:
        super().__init__(message)
        self.field = field
        self.status = status

    def payload(self) -> dict[str, str]:
        """The JSON body of the 4xx answer."""
        body = {"error": str(self)}
        if self.field is not None:
            body["field"] = self.field
        return body


def shown(name: str) -> str:
    """A field name fit for an error message: printable and at most 64 characters."""
    printable = "".join(char if char.isprintable() else "?" for char in name[: _SHOWN_NAME + 1])
    return printable if len(printable) <= _SHOWN_NAME else printable[:_SHOWN_NAME] + "…"


def _error(name: str, problem: str, status: int = 400) -> FormError:
    field = shown(name)
    return FormError(f"field {field}: {problem}", field=field, status=status)


class _Group(dict[str, Any]):
    """A bracketed group while parsing; ``next_index`` is where PHP puts the next ``[]`` value."""

    __slots__ = ("next_index",)

    def __init__(self) -> None:
        super().__init__()
        self.next_index = 0

    def put_key(self, key: str) -> str:
        if key == "":
            key = str(self.next_index)
            self.next_index += 1
        elif key[0] in _DIGITS and _INDEX.fullmatch(key):  # most keys are names: no regex for them
            self.next_index = max(self.next_index, int(key) + 1)
        return key


# --- parsing ----------------------------------------------------------------------------------------------


def parse_form(body: bytes, limits: FormLimits = DEFAULT_LIMITS) -> dict[str, Any]:
    """Nested dicts for bracketed keys; ``x[]=a&x[]=b`` and keys ``0..n-1`` become lists. Raises :class:`FormError`.

    A later field replaces an earlier one of the same name (PHP's rule); a name used both as a value and as a
    group (``a=1&a[b]=2``) is refused, whatever the order, rather than silently losing one of them.
    """
    if len(body) > limits.max_body_bytes:
        raise FormError(f"form body larger than {limits.max_body_bytes} bytes", status=413)
    root: dict[str, Any] = {}
    for count, match in enumerate(_FIELD.finditer(body), start=1):
        if count > limits.max_fields:
            raise FormError(f"form has more than {limits.max_fields} fields")
        raw_key, _, raw_value = match.group().partition(b"=")
        if len(raw_key) <= _CACHED_KEY_BYTES:
            key, name, path = _known_key(raw_key, limits.max_key_length, limits.max_depth)
        else:
            key = _decode_key(raw_key, limits)
            name, path = _split_key(key, limits)
        _store(root, key, name, path, _decode_value(raw_value, key, limits))
    return {name: _listify(value) for name, value in root.items()}


# Portals send the same few dozen names in every call: decoding and splitting a name is remembered (short names
# only, so the cache stays small whatever names a client makes up: 4,096 x 64 bytes at most).
_CACHED_KEY_BYTES = 64


@functools.lru_cache(maxsize=4096)
def _known_key(raw: bytes, max_key_length: int, max_depth: int) -> tuple[str, str, tuple[str, ...]]:
    limits = FormLimits(max_key_length=max_key_length, max_depth=max_depth)
    key = _decode_key(raw, limits)
    name, path = _split_key(key, limits)
    return key, name, path


# Up to here parsing takes well under a millisecond (a robot call is ~1 KB), less than a hop to a thread costs.
_INLINE_BYTES = 64 * 1024


async def read_form(body: bytes, limits: FormLimits = DEFAULT_LIMITS) -> dict[str, Any]:
    """:func:`parse_form` for a request handler: a large body is parsed in a worker thread, so a flood of them
    (up to 14 ms each at the 1 MB cap) does not hold the event loop, which then keeps every other request going."""
    if len(body) <= _INLINE_BYTES:
        return parse_form(body, limits)
    return await asyncio.to_thread(parse_form, body, limits)


def _decode_key(raw: bytes, limits: FormLimits) -> str:
    # Percent-encoded UTF-8 takes at most 12 bytes per character (4 bytes, each as %XX): refuse longer encoded
    # names before decoding them.
    if len(raw) > 12 * limits.max_key_length:
        raise FormError(f"a field name is longer than {limits.max_key_length} characters")
    decoded = safetext.percent_decode(raw)
    if decoded is None:
        raise _error(raw.decode("utf-8", "replace"), "malformed %-escape in the name")
    try:
        key = decoded.decode("utf-8")
    except UnicodeDecodeError:
        raise _error(decoded.decode("utf-8", "replace"), "name is not valid UTF-8") from None
    if not key:
        raise FormError("a field has an empty name")
    if len(key) > limits.max_key_length:
        raise _error(key, f"name is longer than {limits.max_key_length} characters")
    if _CONTROL.search(key):
        raise _error(key, "name contains control characters")
    return key


# Most values of a portal's calls repeat from call to call (its member_id and domain, document ids, scopes, a
# robot's constant properties): short ones are decoded once (4,096 x 64 bytes at most, whatever a client sends).
_CACHED_VALUE_BYTES = 64
_decode_short = functools.lru_cache(maxsize=4096)(safetext.decode)


def _decode_value(raw: bytes, key: str, limits: FormLimits) -> str:
    try:
        value = _decode_short(raw) if len(raw) <= _CACHED_VALUE_BYTES else safetext.decode(raw)
    except ValueError as exc:
        raise _error(key, f"value {exc}") from None
    if len(value) > limits.max_value_length:
        raise _error(key, f"value is longer than {limits.max_value_length} characters")
    return value


def _split_key(key: str, limits: FormLimits) -> tuple[str, tuple[str, ...]]:
    """``a[b][]`` -> ``('a', ('b', ''))``; anything that is not ``name`` followed by ``[...]`` groups is refused."""
    opening = key.find("[")
    name, rest = (key, "") if opening < 0 else (key[:opening], key[opening:])
    if not name or "]" in name:
        raise _error(key, "malformed brackets in the name")
    if not rest:
        return name, ()
    if not _BRACKETS.fullmatch(rest):
        raise _error(key, "malformed brackets in the name")
    path = tuple(_SEGMENT.findall(rest))
    if len(path) > limits.max_depth:
        raise _error(key, f"nested deeper than {limits.max_depth} levels")
    return name, path


def _store(root: dict[str, Any], key: str, name: str, path: tuple[str, ...], value: str) -> None:
    if not path:
        if isinstance(root.get(name), _Group):
            raise _error(key, "both a value and a group of fields")
        root[name] = value
        return
    node = root.get(name)
    if node is None:
        node = root[name] = _Group()
    elif not isinstance(node, _Group):
        raise _error(key, "both a value and a group of fields")
    for part in path[:-1]:
        part = node.put_key(part)
        child = node.get(part)
        if child is None:
            child = node[part] = _Group()
        elif not isinstance(child, _Group):
            raise _error(key, "both a value and a group of fields")
        node = child
    last = node.put_key(path[-1])
    if isinstance(node.get(last), _Group):
        raise _error(key, "both a value and a group of fields")
    node[last] = value


def _listify(value: Any) -> Any:
    if not isinstance(value, _Group):
        return value
    items = {key: _listify(child) for key, child in value.items()}
    # A group is a list when its keys are exactly "0".."n-1" (in any order); set membership never calls int().
    if items and all(str(index) in items for index in range(len(items))):
        return [items[str(index)] for index in range(len(items))]
    return items


def flatten(form: Mapping[str, Any]) -> dict[str, str]:
    """The parsed form back as PHP-style names (``{'auth[member_id]': ..}``), for code written against flat forms."""
    flat: dict[str, str] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, Mapping):
            for key, child in value.items():
                walk(f"{prefix}[{key}]", child)
        elif isinstance(value, list):
            for index, child in enumerate(value):
                walk(f"{prefix}[{index}]", child)
        else:
            flat[prefix] = str(value)

    for name, value in form.items():
        walk(name, value)
    return flat


# --- typed fields -----------------------------------------------------------------------------------------

PathPart = str | int


def field_name(*path: PathPart) -> str:
    """``('auth', 'member_id')`` -> ``'auth[member_id]'``: how the field is named on the wire and in errors."""
    head, *rest = path
    return str(head) + "".join(f"[{part}]" for part in rest)


def _lookup(form: Mapping[str, Any], path: tuple[PathPart, ...]) -> Any:
    """The value at ``path``, or None when absent; a value where a group is expected is refused."""
    node: Any = form
    for depth, part in enumerate(path):
        if isinstance(node, (dict, Mapping)):  # dict first: a parsed form's groups are, and that check is cheap
            node = node.get(str(part))
        elif isinstance(node, list):
            index = part if isinstance(part, int) else int(part) if _INDEX.fullmatch(part) else -1
            node = node[index] if 0 <= index < len(node) else None
        else:
            group = field_name(*path[:depth])
            raise _error(group, f"expected a group of fields ({shown(group)}[...])")
        if node is None:
            return None
    return node


def optional_text(form: Mapping[str, Any], *path: PathPart, max_len: int = 1024) -> str | None:
    """The string at ``path``; None when it is absent or empty."""
    value = _lookup(form, path)
    if value is None or value == "":
        return None
    name = field_name(*path)
    if not isinstance(value, str):
        raise _error(name, "expected a single value, got a group of fields")
    if len(value) > max_len:
        raise _error(name, f"longer than {max_len} characters")
    return value


def text(form: Mapping[str, Any], *path: PathPart, max_len: int = 1024) -> str:
    """The non-empty string at ``path``, or a :class:`FormError` naming the field."""
    value = optional_text(form, *path, max_len=max_len)
    if value is None:
        raise _error(field_name(*path), "required")
    return value


def choice(form: Mapping[str, Any], *path: PathPart, allowed: tuple[str, ...], default: str | None = None) -> str:
    """One of ``allowed`` (``use_subscription``: ``('Y', 'N')``); ``default`` when absent, if given."""
    value = optional_text(form, *path)
    if value is None and default is not None:
        return default
    if value not in allowed:
        raise _error(field_name(*path), "must be one of " + ", ".join(allowed))
    return value


def optional_integer(form: Mapping[str, Any], *path: PathPart, lo: int, hi: int) -> int | None:
    """A whole number in ``[lo, hi]``; None when absent or empty. Only ASCII decimals are read, and huge ones
    (``10**20``) are refused before ``int()`` sees them."""
    value = optional_text(form, *path, max_len=DEFAULT_LIMITS.max_value_length)
    if value is None:
        return None
    number = int(value) if _INTEGER.fullmatch(value) else None
    if number is None or not lo <= number <= hi:
        raise _error(field_name(*path), f"must be a whole number from {lo} to {hi}")
    return number


def integer(form: Mapping[str, Any], *path: PathPart, lo: int, hi: int, default: int | None = None) -> int:
    """Like :func:`optional_integer`, but absent is ``default`` or, without one, an error."""
    number = optional_integer(form, *path, lo=lo, hi=hi)
    if number is not None:
        return number
    if default is None:
        raise _error(field_name(*path), "required")
    return default


def mapping(form: Mapping[str, Any], *path: PathPart) -> dict[str, Any]:
    """The group at ``path`` (``properties``); empty when absent. A list is keyed by position as strings."""
    value = _lookup(form, path)
    if value is None:
        return {}
    if isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, list):
        return {str(index): item for index, item in enumerate(value)}
    name = field_name(*path)
    raise _error(name, f"expected a group of fields ({shown(name)}[...])")


def text_list(form: Mapping[str, Any], *path: PathPart, max_items: int = 16, max_len: int = 1024) -> list[str]:
    """The values ``x[0]..x[n-1]`` at ``path`` (``document_id``); empty when absent."""
    value = _lookup(form, path)
    if value is None:
        return []
    name = field_name(*path)
    if not isinstance(value, list):
        raise _error(name, f"expected a list ({shown(name)}[0], {shown(name)}[1], ...)")
    if len(value) > max_items:
        raise _error(name, f"more than {max_items} items")
    for index, item in enumerate(value):
        if not isinstance(item, str):
            raise _error(field_name(*path, index), "expected a single value, got a group of fields")
        if len(item) > max_len:
            raise _error(field_name(*path, index), f"longer than {max_len} characters")
    return list(value)
