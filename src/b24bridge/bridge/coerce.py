"""Type coercion of mapped values (``type:`` of a rule): what Bitrix24 sends in, what a target field takes.

Every function raises ``ValueError`` with a short message that quotes at most the first 40 characters of the value.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from datetime import date, datetime
from decimal import ROUND_HALF_UP, Context, Decimal, InvalidOperation
from typing import Any

_CENT = Decimal("0.01")
_MONEY_CONTEXT = Context(prec=60, rounding=ROUND_HALF_UP, traps=[InvalidOperation])
_INTEGER = re.compile(r"[+-]?\d+(\.0*)?")
_MONEY = re.compile(r"\s*([^|]*?)\s*(?:\|\s*([A-Za-z]{3})\s*)?")  # "1500.5" or a money user field "100|USD"
_ISO_DATE = re.compile(r"(\d{4}-\d{2}-\d{2})(?:[T ].*)?")
_RU_DATE = re.compile(r"(\d{1,2})\.(\d{1,2})\.(\d{4})(?:\s+(\d{1,2}):(\d{2})(?::(\d{2}))?)?")
_TRUE = frozenset({"y", "yes", "true", "1", "on"})
_FALSE = frozenset({"n", "no", "false", "0", "off"})


def quote(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def to_string(value: Any) -> str:
    if isinstance(value, bool):
        return "Y" if value else "N"
    if isinstance(value, float):
        return format(Decimal(repr(to_float(value))), "f")  # 1e20 reads as 100000000000000000000, not 1e+20
    if isinstance(value, str | int):
        return str(value)
    raise ValueError(f"{type(value).__name__} value is not text")


def to_int(value: Any) -> int:
    if isinstance(value, bool):
        raise ValueError(f"{quote(value)} is not a whole number")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and _INTEGER.fullmatch(value.strip()):
        return int(value.strip().split(".")[0])
    raise ValueError(f"{quote(value)} is not a whole number")


def to_float(value: Any) -> float:
    number: float | None = None
    if isinstance(value, int | float) and not isinstance(value, bool):
        number = float(value)
    elif isinstance(value, str):
        text = value.strip()
        if "," in text and "." not in text:  # a decimal comma ("1500,5"), as some portals' locales write it
            text = text.replace(",", ".")
        try:
            number = float(text)
        except ValueError:
            number = None
    if number is None or not math.isfinite(number):
        raise ValueError(f"{quote(value)} is not a number")
    return number


def to_money(value: Any) -> str:
    """``"1500.5"`` -> ``"1500.50"``; a money user field's ``"100|usd"`` keeps its currency: ``"100.00|USD"``."""
    match = _MONEY.fullmatch(str(value)) if isinstance(value, str | int | float) else None
    if match is None or isinstance(value, bool):
        raise ValueError(f"{quote(value)} is not an amount")
    amount_text, currency = match.groups()
    if "," in amount_text and "." not in amount_text:
        amount_text = amount_text.replace(",", ".")
    try:
        amount = _MONEY_CONTEXT.quantize(Decimal(amount_text), _CENT)  # inf and 1e999 raise InvalidOperation
    except InvalidOperation:
        amount = Decimal("NaN")
    if not amount.is_finite():
        raise ValueError(f"{quote(value)} is not an amount")
    text = format(amount, "f")
    return f"{text}|{currency.upper()}" if currency else text


def to_date(value: Any) -> str:
    """ISO ``2024-08-15`` from ISO (a datetime's date as written, no timezone shift) or ``15.08.2024``."""
    text = value.strip() if isinstance(value, str) else ""
    try:
        if iso := _ISO_DATE.fullmatch(text):
            if len(text) > len(iso.group(1)):  # a datetime: all of it must be valid, not just its date
                datetime.fromisoformat(text.replace("Z", "+00:00"))
            return date.fromisoformat(iso.group(1)).isoformat()
        if ru := _RU_DATE.fullmatch(text):
            return date(int(ru.group(3)), int(ru.group(2)), int(ru.group(1))).isoformat()
    except ValueError:
        pass
    raise ValueError(f"{quote(value)} is not a date")


def to_datetime(value: Any) -> str:
    """ISO 8601 as given (its offset kept); a bare date is its midnight; ``15.08.2024 10:30`` is portal time."""
    text = value.strip() if isinstance(value, str) else ""
    try:
        if ru := _RU_DATE.fullmatch(text):
            day, month, year, hour, minute, second = (int(part or 0) for part in ru.groups())
            return datetime(year, month, day, hour, minute, second).isoformat()
        if _ISO_DATE.fullmatch(text):
            return datetime.fromisoformat(text.replace("Z", "+00:00")).isoformat()
    except ValueError:
        pass
    raise ValueError(f"{quote(value)} is not a date and time")


def to_bool(value: Any) -> str:
    """Bitrix24's ``"Y"``/``"N"`` from Y/N, yes/no, true/false, on/off, 1/0 (any case)."""
    text = str(value).strip().lower() if isinstance(value, str | int | bool) else None
    if isinstance(value, bool):
        text = "y" if value else "n"
    if text in _TRUE:
        return "Y"
    if text in _FALSE:
        return "N"
    raise ValueError(f"{quote(value)} is not a yes/no value")


_COERCERS: Mapping[str, Callable[[Any], Any]] = {
    "string": to_string,
    "int": to_int,
    "float": to_float,
    "money": to_money,
    "date": to_date,
    "datetime": to_datetime,
    "bool": to_bool,
}


def coerce(value: Any, type_name: str) -> Any:
    """``type_name`` applied to ``value``; a list is coerced item by item, except by ``list`` which makes one."""
    if type_name == "list":
        return list(value) if isinstance(value, list | tuple) else [value]
    convert = _COERCERS[type_name]
    if isinstance(value, list | tuple):
        return [convert(item) for item in value]
    return convert(value)
