"""Reading whole lists: offset pages (``start``) and the fast export mode (``start=-1`` with ``>ID``)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Any, Protocol

from .answers import Answer, CommandResult, unwrap_items
from .policy import MAX_BATCH

PAGE = 50

Commands = Mapping[str, tuple[str, Mapping[str, Any] | None]]


class PageSource(Protocol):
    """What reading a list needs: one request of its own, and explicit batches."""

    async def request(self, method: str, params: Mapping[str, Any] | None = None) -> Answer: ...

    async def batch(self, commands: Commands, *, halt: bool = False) -> dict[str, CommandResult]: ...


async def iterate_pages(portal: PageSource, method: str, params: dict[str, Any]) -> AsyncIterator[Any]:
    """First page alone (it tells the total), then the remaining pages 50 per batch request."""
    params.pop("start", None)
    first = await portal.request(method, {**params, "start": 0})
    for row in unwrap_items(first.result):
        yield row
    if first.next is None:
        return
    starts = list(range(int(first.next), int(first.total or 0), PAGE))
    for offset in range(0, len(starts), MAX_BATCH):
        chunk = starts[offset : offset + MAX_BATCH]
        results = await portal.batch({f"p{s}": (method, {**params, "start": s}) for s in chunk})
        for start in chunk:
            for row in unwrap_items(results[f"p{start}"].unwrap()):
                yield row


def _filter_key(params: dict[str, Any]) -> str:
    return next((k for k in params if k.lower() == "filter"), "filter")


async def export_rows(portal: PageSource, method: str, params: dict[str, Any], id_field: str) -> AsyncIterator[Any]:
    """Walk a large set by ID without counting it: each command asks for rows after the previous page's last ID.

    Pages are chained inside one batch with ``$result[prev][49][ID]``; the chain doubles while pages come back
    full. A page shorter than 50 is the end: later commands of that batch are ignored.
    """
    params.pop("start", None)
    filter_key = _filter_key(params)
    base_filter = dict(params.pop(filter_key, None) or {})
    select = params.get("select")
    if isinstance(select, list) and "*" not in select and id_field not in select:
        params["select"] = [*select, id_field]
    params["order"] = {id_field: "ASC"}
    last_id = 0
    chain = 1
    while True:
        commands: dict[str, tuple[str, dict[str, Any]]] = {}
        for i in range(chain):
            after: Any = last_id if i == 0 else f"$result[e{i - 1}][{PAGE - 1}][{id_field}]"
            commands[f"e{i}"] = (method, {**params, filter_key: {**base_filter, f">{id_field}": after}, "start": -1})
        results = await portal.batch(commands)
        for i in range(chain):
            rows = unwrap_items(results[f"e{i}"].unwrap())
            fresh = [r for r in rows if int(r[id_field]) > last_id]
            for row in fresh:
                yield row
            if fresh:
                last_id = int(fresh[-1][id_field])
            if len(rows) < PAGE:
                return
        chain = min(MAX_BATCH, chain * 2)
