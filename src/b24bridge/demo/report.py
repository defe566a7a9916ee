"""What the demo shows at the end: the deals that arrived in Acme's portal, the contact the robot created, where to
look next."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from b24bridge.runs.schemas import Run


@dataclass(frozen=True)
class Delivered:
    """A partner's deal and its counterpart in Acme's portal (as read back from there), with the runs that did it."""

    source_id: int
    source_title: str
    deal: dict[str, Any]
    contact: dict[str, Any]
    rows: list[dict[str, Any]]
    runs: list[Run]
    url: str


@dataclass(frozen=True)
class Request:
    """The website request deal and the contact the create-contact robot made of it."""

    deal_id: int
    contact: dict[str, Any]
    run: Run


@dataclass
class Report:
    route: str
    delivered: list[Delivered]
    request: Request
    properties: dict[str, str]
    bridge_url: str
    portals: dict[str, str]
    data_dir: Path
    routes: Path
    seconds: float = 0.0  # the scripted part's time, from the start to this report

    def print(self, console: Console, *, waiting: bool) -> None:
        console.print()
        console.print(self.deals_table())
        console.print(self.contact_table())
        console.print(
            "  create-contact robot properties: "
            + ", ".join(f"{key}={value}" for key, value in self.properties.items()),
            highlight=False,
            markup=False,
            soft_wrap=True,
        )
        console.print()
        lines = [f"admin page: {self.bridge_url}/"]
        lines += [f"{name} portal: {url}  (control API {url}/_sandbox/)" for name, url in self.portals.items()]
        lines += [
            f"route file: {self.routes}",
            f"run log: B24BRIDGE_DATA_DIR={self.data_dir} b24bridge runs list",
            f"scripted part done in {self.seconds:.1f} s",
        ]
        for line in lines:
            console.print(line, highlight=False, markup=False, soft_wrap=True)
        if waiting:
            console.print("running until Ctrl-C", style="bold")

    def deals_table(self) -> Table:
        table = Table(title=f"Deals handed to Acme by the bridge robot (route {self.route})", title_justify="left")
        for column in ("partner deal", "acme deal", "stage", "contact", "product rows", "runs"):
            table.add_column(column)
        for item in self.delivered:
            deal = item.deal
            total = sum(float(row.get("PRICE") or 0) * float(row.get("QUANTITY") or 0) for row in item.rows)
            table.add_row(
                f"{item.source_id} {item.source_title}",
                f"{deal.get('ID')} {deal.get('TITLE')}",
                str(deal.get("STAGE_ID")),
                _person(item.contact),
                f"{len(item.rows)} row{'s' * (len(item.rows) != 1)}, {total:,.2f}",
                ", ".join(_took(run) for run in item.runs),
            )
        return table

    def contact_table(self) -> Table:
        table = Table(title="Contact created by the create-contact robot", title_justify="left")
        for column in ("request deal", "contact", "name", "phone", "e-mail", "run"):
            table.add_column(column)
        contact = self.request.contact
        name = " ".join(part for part in (contact.get("NAME"), contact.get("LAST_NAME")) if part)
        table.add_row(
            str(self.request.deal_id),
            str(contact.get("ID", "none")),
            name,
            _first(contact, "PHONE"),
            _first(contact, "EMAIL"),
            _took(self.request.run),
        )
        return table


def _first(record: dict[str, Any], field: str) -> str:
    values = record.get(field) or []
    return str(values[0].get("VALUE", "")) if values else ""


def _person(contact: dict[str, Any]) -> str:
    name = " ".join(part for part in (contact.get("NAME"), contact.get("LAST_NAME")) if part)
    return ", ".join(part for part in (name, _first(contact, "PHONE")) if part) or "none"


def _took(run: Run) -> str:
    end = run.answered_at or run.finished_at
    seconds = (end - run.created_at).total_seconds() if end is not None else None
    took = f"{seconds:.2f}s" if seconds is not None else "?"
    # Only what went wrong is spelt out: the run's error is in `b24bridge runs show`.
    return f"run {run.id}: {took}" if run.status == "succeeded" else f"run {run.id}: {run.status} {took}"
