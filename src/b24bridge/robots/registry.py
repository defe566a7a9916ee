"""Robots declared in code: their properties, how they register in a portal, how their inputs are validated.

A robot is a :class:`Robot` value built in ``robots/definitions/``, whose ``ROBOTS`` is the declared set that
the sync makes true in every portal (REFERENCE 5.2). The same declaration validates the values a portal sends
when the robot runs, so what the automation designer shows and what the handler accepts never drift apart.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

PropertyType = Literal["string", "text", "int", "double", "bool", "date", "datetime", "select", "user"]

# Document types of CRM entities (REFERENCE 5.2 DOCUMENT_TYPE).
DEAL = ("crm", "CCrmDocumentDeal", "DEAL")
LEAD = ("crm", "CCrmDocumentLead", "LEAD")
CONTACT = ("crm", "CCrmDocumentContact", "CONTACT")
COMPANY = ("crm", "CCrmDocumentCompany", "COMPANY")
# Every smart process's items (a robot's FILTER names the module and class; the type is DYNAMIC_<entityTypeId>).
SMART_PROCESS = ("crm", "Bitrix\\Crm\\Integration\\BizProc\\Document\\Dynamic", "DYNAMIC")

_CODE = re.compile(r"^[a-z0-9.\-_]+$")
_KEY = re.compile(r"^[a-z][a-z0-9_]*$")
# ASCII digits only (Python's ``\d`` and ``int()`` take any script's digits) and few enough to stay a 64-bit integer.
_USER = re.compile(r"(?:user_)?([0-9]{1,18})")
_INT = re.compile(r"[-+]?[0-9]{1,18}")


class InvalidInput(ValueError):
    """A property value that does not fit the robot's declaration; the message is shown in the workflow log."""


class RunContext(Protocol):
    """What a robot's work sees of its run: recorded portal calls and the run's stable identity."""

    @property
    def origin_id(self) -> str:
        """A key unique to this run and stable across its attempts (e.g. for ORIGIN_ID)."""
        ...

    @property
    def repeated(self) -> bool:
        """True when an earlier attempt may have written something (a retry, or a stalled worker's run)."""
        ...

    async def call(self, method: str, params: dict[str, Any] | None = None) -> Any: ...


class WriteResult:
    """Stands in a robot's return values for the result of its final write, known only once the write ran."""

    def __repr__(self) -> str:
        return "WRITE_RESULT"


WRITE_RESULT = WriteResult()


@dataclass(frozen=True)
class FinalWrite:
    """A robot's last write, which the runtime sends in one request with the workflow's answer.

    The answer refers to the write's result (``$result[...]``) and the request halts on a failed write, so a
    workflow never hears of a success that did not happen, and a run costs one round trip instead of two.
    """

    method: str
    params: dict[str, Any]


@dataclass(frozen=True)
class Outcome:
    """A robot's result: the return values for ``bizproc.event.send`` and a line for the workflow log.

    With ``write``, the work ends with that write: values equal to :data:`WRITE_RESULT` become its result.
    """

    values: dict[str, Any]
    message: str
    write: FinalWrite | None = None

    def completed(self, result: Any) -> Outcome:
        """The outcome once the final write returned ``result``."""
        values = {key: result if value is WRITE_RESULT else value for key, value in self.values.items()}
        return Outcome(values, self.message)


Perform = Callable[[RunContext, dict[str, Any]], Awaitable[Outcome]]


@dataclass(frozen=True)
class Property:
    name_en: str
    name_ru: str
    type: PropertyType = "string"
    required: bool = False
    description: str = ""
    options: Mapping[str, str] = field(default_factory=dict)  # select: value -> title
    default: str | None = None

    def to_bitrix(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "Name": {"en": self.name_en, "ru": self.name_ru},
            "Type": self.type,
            "Required": "Y" if self.required else "N",
            "Multiple": "N",
        }
        if self.description:
            data["Description"] = self.description
        if self.options:
            data["Options"] = dict(self.options)
        if self.default is not None:
            data["Default"] = self.default
        return data

    def parse(self, key: str, raw: Any) -> Any:
        """The typed value of ``raw`` as the portal sent it (a string; "" for empty), or ``InvalidInput``."""
        if isinstance(raw, list):  # we declare no Multiple properties; a portal sending one is taken at its first
            raw = raw[0] if raw else ""
        text = "" if raw is None else str(raw).strip()
        if text == "":
            if self.required:
                raise InvalidInput(f"{self.name_en} ({key}) is required")
            return None
        try:
            return _PARSERS[self.type](self, text)
        except (ValueError, TypeError):
            raise InvalidInput(f"{self.name_en} ({key}): {text!r} is not a valid {self.type}") from None


def _select(prop: Property, text: str) -> str:
    if text not in prop.options:
        raise ValueError(text)
    return text


def _bool(prop: Property, text: str) -> bool:
    lowered = text.lower()
    if lowered in ("y", "yes", "1", "true"):
        return True
    if lowered in ("n", "no", "0", "false"):
        return False
    raise ValueError(text)


def _date(prop: Property, text: str) -> str:
    # Portals print dates in the site format (dd.mm.yyyy) or ISO; both are accepted, ISO is stored.
    for fmt in ("%Y-%m-%d", "%d.%m.%Y"):
        try:
            return dt.datetime.strptime(text[:10], fmt).date().isoformat()
        except ValueError:
            continue
    raise ValueError(text)


def _datetime(prop: Property, text: str) -> str:
    for fmt in ("%d.%m.%Y %H:%M:%S", "%d.%m.%Y %H:%M"):
        try:
            return dt.datetime.strptime(text, fmt).isoformat()
        except ValueError:
            continue
    return dt.datetime.fromisoformat(text).isoformat()


def _user(prop: Property, text: str) -> int:
    match = _USER.fullmatch(text)
    if match is None:
        raise ValueError(text)
    return int(match.group(1))


def _int(prop: Property, text: str) -> int:
    if not _INT.fullmatch(text):
        raise ValueError(text)
    return int(text)


def _double(prop: Property, text: str) -> float:
    # "inf" and "nan" parse as floats but are no numbers a portal means, and JSON (the run's inputs) has none.
    number = float(text.replace(",", "."))
    if not math.isfinite(number):
        raise ValueError(text)
    return number


_PARSERS: dict[str, Any] = {
    "string": lambda prop, text: text,
    "text": lambda prop, text: text,
    "int": _int,
    "double": _double,
    "bool": _bool,
    "date": _date,
    "datetime": _datetime,
    "select": _select,
    "user": _user,
}


@dataclass(frozen=True)
class Robot:
    code: str
    name_en: str
    name_ru: str
    description_en: str = ""
    description_ru: str = ""
    properties: Mapping[str, Property] = field(default_factory=dict)
    return_properties: Mapping[str, Property] = field(default_factory=dict)
    document_types: tuple[tuple[str, str, str], ...] = (DEAL, LEAD, CONTACT, COMPANY)
    # Whether the workflow waits for ``bizproc.event.send`` (USE_SUBSCRIPTION); robots with results must.
    waits_for_answer: bool = True
    auth_user_id: int = 1
    # Where the portal calls it, under the public URL; a domain that runs its own robot (the bridge) sets its own.
    handler_path: str | None = None
    # Rules across properties (normalisation, "one of these is required"); raises InvalidInput.
    check: Callable[[dict[str, Any]], dict[str, Any]] | None = field(default=None, compare=False)
    # The work itself, run by a job with the validated inputs.
    perform: Perform | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if not _CODE.match(self.code):
            raise ValueError(f"robot code {self.code!r} must match {_CODE.pattern}")
        for key in [*self.properties, *self.return_properties]:
            if not _KEY.match(key):
                raise ValueError(f"property key {key!r} of robot {self.code} must match {_KEY.pattern}")

    def handler(self, public_url: str) -> str:
        return f"{public_url.rstrip('/')}{self.handler_path or f'/robots/{self.code}'}"

    def to_bitrix(self, public_url: str) -> dict[str, Any]:
        """``bizproc.robot.add`` parameters (REFERENCE 5.2); ``update`` takes the same minus CODE as FIELDS."""
        return {
            "CODE": self.code,
            "HANDLER": self.handler(public_url),
            "AUTH_USER_ID": self.auth_user_id,
            "USE_SUBSCRIPTION": "Y" if self.waits_for_answer else "N",
            "NAME": {"en": self.name_en, "ru": self.name_ru},
            "DESCRIPTION": {"en": self.description_en, "ru": self.description_ru},
            "PROPERTIES": {key: prop.to_bitrix() for key, prop in self.properties.items()},
            "RETURN_PROPERTIES": {key: prop.to_bitrix() for key, prop in self.return_properties.items()},
            # A robot is registered for one document type at most in the API; FILTER says where it may appear.
            "FILTER": {"INCLUDE": [list(t[:2]) for t in self.document_types]},
        }

    def definition_hash(self, public_url: str) -> str:
        """Fingerprint of what we register: a changed handler URL or property means ``bizproc.robot.update``."""
        canonical = json.dumps(self.to_bitrix(public_url), sort_keys=True, ensure_ascii=False)
        return hashlib.sha256(canonical.encode()).hexdigest()

    def validate(self, raw: Mapping[str, Any]) -> dict[str, Any]:
        """Typed inputs from the ``properties[...]`` of a call; every problem is reported at once."""
        values: dict[str, Any] = {}
        problems: list[str] = []
        lowered = {str(k).lower(): v for k, v in raw.items()}
        for key, prop in self.properties.items():
            try:
                values[key] = prop.parse(key, lowered.get(key.lower()))
            except InvalidInput as exc:
                problems.append(str(exc))
        if problems:
            raise InvalidInput("; ".join(problems))
        return self.check(values) if self.check is not None else values
