"""The one rule for text from outside: what PostgreSQL, a Bitrix24 call and a log line can all hold.

PostgreSQL refuses a NUL in ``text`` and ``jsonb`` (psycopg raises ``DataError``), and a lone surrogate (what
``json.loads`` makes of ``"\\ud800"``, what Python makes of undecodable bytes in ``argv``) cannot even be encoded
to send; either used to surface as a 500 or a traceback. So every way in applies this rule where the text arrives:

* the request target (path and query string) of every HTTP request, at the door (:mod:`.bodylimit`), before any
  route runs: :func:`target_refusal`;
* form fields (:mod:`.forms`), JSON fields (:data:`StoredText`), CLI arguments and route files (:func:`refusal`).

A refusal names where the text was and never shows the text itself (it may be a token).

What b24bridge records of what happened (a run's outcome, an error a portal worded) is not refused but kept with
the offending characters replaced (:func:`storable`): a record of a run must be written whatever a portal said.
"""

from __future__ import annotations

import re
from codecs import escape_decode
from typing import Annotated, Any

from pydantic import AfterValidator

__all__ = [
    "NOT_UTF8",
    "NUL",
    "StoredText",
    "TextRefused",
    "decode",
    "percent_decode",
    "refusal",
    "shown_name",
    "storable",
    "target_refusal",
]

NUL = "contains a NUL character, which cannot be stored"
NOT_UTF8 = "is not valid UTF-8 text"
SURROGATE = "contains a lone surrogate, which is not text"
MALFORMED = "has a malformed %-escape"
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
REPLACEMENT = "\ufffd"
_SHOWN_NAME = 64


class TextRefused(ValueError):
    """Text that cannot be taken: ``field`` says where (a parameter's name, ``path``), ``reason`` what is wrong."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason

    def payload(self) -> dict[str, str]:
        return {"error": str(self), "field": self.field}


def refusal(text: str) -> str | None:
    """Why ``text`` cannot be stored, or None when it can."""
    found = _UNSTORABLE.search(text)
    if found is None:
        return None
    return NUL if found.group() == "\x00" else SURROGATE


def storable(value: Any) -> Any:
    """``value`` (text, or JSON-like data holding text) with every NUL and lone surrogate replaced by U+FFFD."""
    if isinstance(value, str):
        return _UNSTORABLE.sub(REPLACEMENT, value)
    if isinstance(value, dict):
        return {storable(key): storable(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [storable(item) for item in value]
    return value


def _stored(text: str) -> str:
    reason = refusal(text)
    if reason is not None:
        raise ValueError(reason)
    return text


StoredText = Annotated[str, AfterValidator(_stored)]
"""A JSON (pydantic) string field under the rule: a NUL or a lone surrogate is a 400 naming the field."""


def percent_decode(raw: bytes) -> bytes | None:
    """``+`` and ``%XX`` decoded; None for a malformed escape (``%zz``, a lone ``%``), which no browser nor PHP's
    ``http_build_query`` produces."""
    raw = raw.replace(b"+", b" ")
    if b"%" not in raw:
        return raw
    # The stdlib's unquote_to_bytes decodes in a Python loop (110 ms for a 1 MB value of escapes here). Every %XX
    # written as \xXX, after doubling the backslashes already there, lets the C escape decoder do it in 6 ms.
    try:
        return escape_decode(raw.replace(b"\\", b"\\\\").replace(b"%", b"\\x"))[0]
    except ValueError:
        return None


def decode(raw: bytes) -> str:
    """Percent-encoded bytes as text under the rule, or ``ValueError`` saying what is wrong (never the text)."""
    decoded = percent_decode(raw)
    if decoded is None:
        raise ValueError(MALFORMED)
    if b"\x00" in decoded:
        raise ValueError(NUL)
    try:
        # Strict UTF-8 refuses encoded surrogates (%ED%A0%80) too.
        return decoded.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError(NOT_UTF8) from None


def shown_name(name: str) -> str:
    """A field's name as it may appear in a refusal: printable, truncated."""
    printable = "".join(char if char.isprintable() and not 0xD800 <= ord(char) <= 0xDFFF else " " for char in name)
    return printable[:_SHOWN_NAME] or "?"


def _escaped(raw: bytes) -> bool:
    return b"%" in raw or not raw.isascii() or b"\x00" in raw


def target_refusal(raw_path: bytes, query: bytes) -> TextRefused | None:
    """The first part of a request target that breaks the rule: a query parameter (named by its key) or the path.

    Cheap when nothing is escaped (the usual case): only ``%`` escapes, raw non-ASCII bytes and a raw NUL (which
    servers refuse in the request line, but an ASGI caller may pass) need decoding.
    """
    if _escaped(raw_path):
        decoded = percent_decode(raw_path.replace(b"+", b"%2B"))  # ``+`` is a plus in a path, not a space
        if decoded is None or b"\x00" in decoded:
            return TextRefused("path", MALFORMED if decoded is None else NUL)
        try:
            decoded.decode("utf-8")
        except UnicodeDecodeError:
            return TextRefused("path", NOT_UTF8)
    if not query or not _escaped(query):
        return None
    for part in query.split(b"&"):
        key, _, value = part.partition(b"=")
        try:
            name = decode(key)
        except ValueError as exc:
            raw_name = (percent_decode(key) or key).decode("utf-8", "replace")
            return TextRefused(shown_name(raw_name), f"the name {exc}")
        try:
            decode(value)
        except ValueError as exc:
            return TextRefused(shown_name(name), str(exc))
    return None
