"""What ``b24bridge routes check`` prints: each route, its triggers and the URLs to give the portals."""

from __future__ import annotations

from rich.table import Table

from b24bridge.portals.crypto import Keyring

from .intake import status_secret
from .route_model import RouteFile


def hooks_table(routes: RouteFile, public_url: str, keys: Keyring) -> Table:
    """Routes with the URLs their portals' rules call. The status-back URL carries its (derived) secret: it is for
    the target's administrator; the source hook's secret stays where the operator keeps it (``***``)."""
    out = Table("route", "source -> target", "triggers", "URLs for the portals' automation rules", title="routes")
    base = public_url.rstrip("/")
    for name, route in routes.routes.items():
        triggers = [kind for kind, on in (("robot", route.triggers.robot), ("hook", route.triggers.hook_secret),
                                          ("events", route.triggers.event_stages)) if on]  # fmt: skip
        urls = []
        if route.triggers.hook_secret:
            urls.append(f"deal in:  {base}/bridge/hooks/{name}?secret=***&deal={{=Document:ID}}")
        if route.status_back is not None:
            secret = status_secret(keys, name)
            urls.append(f"status:   {base}/bridge/hooks/{name}/status?secret={secret}&deal={{=Document:ID}}")
        out.add_row(name, f"{route.source} -> {route.target}", ", ".join(triggers), "\n".join(urls))
    return out
