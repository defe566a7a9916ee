"""The "Outbound webhook" automation rule: a POST to a URL the administrator typed, no application involved.

What the portal does, from the bizproc activity behind the rule (``CBPWebHookActivity``, class ``WebHookActivity``,
read in public copies of the bizproc module; REFERENCE 7.5):

* its one property, ``Handler``, is a URL; document fields in it (``{=Document:ID}``) are filled in when the rule
  runs, like any bizproc property;
* the URL must be http or https with a dotted host (``localhost`` fails); otherwise nothing is sent and the rule
  closes without a word;
* the request goes through the portal's queue server like robot calls: form-encoded POST, sent once, never retried,
  with ``document_id[0..2]`` (``crm``, ``CCrmDocumentDeal``, ``DEAL_123``) as its only data and no ``auth`` at all
  (``sendAuth`` false): the receiver authenticates it by a secret it put into the URL itself.

The URL's path and query are percent-encoded where they hold characters a URL cannot carry (``CHTTP::urnEncode``).
[inferred] the exact set of characters that encoding leaves alone; and that ``document_type`` and ``ts`` are absent
(the activity passes only ``document_id``).
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import quote, urlsplit

from . import outbound
from .bizproc_runtime import document_type, render_text
from .runtime import Sandbox

log = logging.getLogger("b24bridge.sandbox")

KIND = "webhook"  # the handler-calls kind of these requests
_URL_SAFE = ":/?#[]@!$&'()*+,;=%~"


def handler_problem(url: str) -> str | None:
    """Why the activity would refuse ``url`` (``WebHookActivity::Execute``), or None when it would send.

    A host still holding a ``{=Document:...}`` template is taken as fine: only the filled-in URL can tell.
    """
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.scheme not in ("http", "https"):
        return "the URL must be http or https"
    if "{=" not in parts.netloc and host.find(".") <= 0:
        return "the URL's host must contain a dot (the portal refuses hosts like localhost)"
    return None


def target_url(template: str, record: dict[str, Any]) -> str:
    """The handler with the document's fields filled in, encoded as the portal encodes it."""
    return quote(render_text(template, record), safe=_URL_SAFE)


def send(sandbox: Sandbox, rule: dict[str, Any], entity: str, record_id: int, record: dict[str, Any]) -> None:
    """Run the rule for one document: queue the POST, or nothing when the filled-in URL is not acceptable."""
    url = target_url(str(rule["handler"]), record)
    problem = handler_problem(url)
    if problem is not None:
        log.info("outbound webhook rule %s sends nothing: %s (%s)", rule["id"], problem, url)
        return
    module, document_class, type_name = document_type(entity)
    document_id = [module, document_class, f"{type_name}_{record_id}"]
    meta = {"rule_id": rule["id"], "document_id": document_id}
    sandbox.spawn(outbound.post_form(sandbox, KIND, url, {"document_id": document_id}, **meta))
