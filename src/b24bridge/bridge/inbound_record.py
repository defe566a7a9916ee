"""An inbound POST's body as the source record of a delivery, and the ids its records have on the inbound side of
the id map."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

from .adapters import SourceRecord
from .mapping import canonical_json


def source_id(scope: str, external_id: str | None, key: str) -> int:
    """A record's id on the inbound side of the id map: from your system's id (so a later POST updates what the first
    created), else from the key (each key its own record). 60 bits of SHA-256: positive in a bigint, and no
    collision in practice."""
    basis = f"{scope}\nid:{external_id}" if external_id is not None else f"{scope}\nkey:{key}"
    return int(hashlib.sha256(basis.encode()).hexdigest()[:15], 16)


def inbound_record(body: Mapping[str, Any], record_id: int, route: str) -> SourceRecord:
    """The POSTed record with its inbound id; its contact and company with ids from their own ``id`` (else from
    their content), so one sent with many records is created once."""

    def party(value: Any, entity: str) -> dict[str, Any] | None:
        if not isinstance(value, dict):
            return None
        given = value.get("id")
        return {
            **value,
            "ID": source_id(f"{route}:{entity}", str(given) if given is not None else canonical_json(value), ""),
        }

    rows = [dict(row) for row in body.get("products") or [] if isinstance(row, dict)]
    record = {**body["record"], "ID": record_id}
    return SourceRecord(record, party(body.get("contact"), "CONTACT"), party(body.get("company"), "COMPANY"), rows)
