"""Your own systems as a bridge target: each hand-over POSTed as JSON to an HTTPS endpoint, signed as the Standard
Webhooks specification says (``webhook-id``, ``webhook-timestamp``, ``webhook-signature``; the spec's own package
signs).

A run is one message: its retries and replays carry the same ``webhook-id``, so a receiver that keeps the ids it has
processed applies each hand-over once however often it arrives. Two secrets sign at once while one is rotated (the
header carries both signatures; a receiver checks with either). A 2xx answer may carry ``{"id": ...}``: the record's
id in the receiving system, kept in the id map and offered to ``status_back`` as ``target.ID``.

What an answer means: 2xx delivered; 408, 425, 429, 5xx, a timeout or a dropped connection are temporary (the run's
retry schedule; "uncertain" when the request may have arrived, which the ``webhook-id`` makes harmless); any other
answer, a redirect included (none is followed), is permanent and the run is dead with the status and the start of
the body. Addresses are checked before each request: a public address always passes; loopback, private, link-local
and other special ones only when ``B24BRIDGE_ENDPOINT_ALLOW_NETWORKS`` lists them.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import datetime as dt
import hashlib
import ipaddress
import socket
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpx
import orjson
from standardwebhooks import Webhook

from b24bridge.bitrix import CallObserver, CallRecord

from .schemas import BridgeConfigError

# At most this much of an answer is read: an id and a little more, never a memory spike from a broken endpoint.
MAX_ANSWER_BYTES = 64 * 1024
TEMPORARY_STATUSES = frozenset({408, 425, 429})
# How long an endpoint host's addresses are trusted once checked (each request would otherwise resolve it again).
RESOLVED_FOR = 60.0

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(text: str) -> tuple[Network, ...]:
    """``"127.0.0.1, 10.0.0.0/8"`` -> networks (a bare address is a network of one)."""
    return tuple(ipaddress.ip_network(part.strip(), strict=False) for part in text.split(",") if part.strip())


def endpoint_key(url: str) -> str:
    """The endpoint as the id map and run log name it: scheme, host, port and path (a query may hold a secret)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2].lower()}{parts.path}"


@dataclass(frozen=True)
class Receiver:
    """An endpoint ready to POST to: its URL, its key in the id map, and its signing secrets (the first is new)."""

    name: str
    url: str
    secrets: tuple[str, ...] = field(repr=False)

    @property
    def key(self) -> str:
        return endpoint_key(self.url)

    @property
    def host(self) -> str:
        return (urlsplit(self.url).hostname or "").lower()

    def view(self) -> dict[str, str]:
        """The endpoint as a template sees it (``target_portal``): never a secret."""
        return {"name": self.name, "domain": self.host, "member_id": ""}


@dataclass(frozen=True)
class Answer:
    """A 2xx answer: the record's id in the receiving system (when it gave one) and the JSON object it sent."""

    id: str | None
    body: Mapping[str, Any]


class ReceiverError(Exception):
    """The endpoint did not take the message; ``retryable`` and ``uncertain`` as :class:`~b24bridge.bitrix.BitrixError`
    has them, so the runner treats both alike."""

    def __init__(self, message: str, *, retryable: bool, uncertain: bool = False, status: int | None = None) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.uncertain = uncertain
        self.status = status


def message_id(source_key: str, route: str, run_id: int) -> str:
    """The ``webhook-id`` of a run's message: the same for every attempt of the run, unique across installations."""
    digest = hashlib.sha256(f"{source_key}\n{route}\n{run_id}".encode()).hexdigest()
    return f"msg_{digest[:32]}"


def signature_headers(secrets: tuple[str, ...], msg_id: str, body: bytes, now: dt.datetime) -> dict[str, str]:
    """The Standard Webhooks headers of ``body``: one ``v1`` signature per secret, space-separated."""
    signatures = " ".join(Webhook(secret).sign(msg_id, now, body) for secret in secrets)
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": signatures,
        "content-type": "application/json",
    }


class AddressPolicy:
    """Which addresses an endpoint may resolve to: public ones, and the special ones the operator listed."""

    def __init__(
        self,
        allowed: tuple[Network, ...],
        resolve: Callable[[str, int], Any] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.allowed = allowed
        self._resolve = resolve
        self._clock = clock
        self._checked: dict[tuple[str, int], float] = {}

    def permits(self, address: str) -> bool:
        ip = ipaddress.ip_address(address)
        if any(ip in network for network in self.allowed):
            return True
        return ip.is_global and not ip.is_multicast

    async def check(self, url: str) -> None:
        """Raise :class:`BridgeConfigError` when ``url``'s host resolves to an address outside the policy."""
        parts = urlsplit(url)
        host, port = parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80)
        if self._checked.get((host, port), -RESOLVED_FOR) > self._clock() - RESOLVED_FOR:
            return
        addresses = await self._addresses(host, port)
        refused = [address for address in addresses if not self.permits(address)]
        if refused:
            raise BridgeConfigError(
                f"endpoint {host} resolves to {refused[0]}, a non-public address: list it in"
                " B24BRIDGE_ENDPOINT_ALLOW_NETWORKS to allow it"
            )
        if parts.scheme != "https" and not all(
            any(ipaddress.ip_address(a) in network for network in self.allowed) for a in addresses
        ):
            hint = "plain http only to addresses B24BRIDGE_ENDPOINT_ALLOW_NETWORKS lists"
            raise BridgeConfigError(f"endpoint {host}: {hint}")
        self._checked[(host, port)] = self._clock()

    async def _addresses(self, host: str, port: int) -> list[str]:
        try:
            ipaddress.ip_address(host)
            return [host]
        except ValueError:
            pass
        try:
            if self._resolve is not None:
                infos = await self._resolve(host, port)
            else:
                infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except OSError as exc:
            raise ReceiverError(f"endpoint {host} could not be resolved: {exc}", retryable=True) from None
        return sorted({str(info[4][0]) for info in infos})


class ReceiverClient:
    """POSTs messages to endpoints: address check, signature, the answer read (bounded) and classified."""

    def __init__(
        self, http: httpx.AsyncClient, policy: AddressPolicy, clock: Callable[[], dt.datetime] | None = None
    ) -> None:
        self.http = http
        self.policy = policy
        self._now = clock or (lambda: dt.datetime.now(dt.UTC))

    async def post(self, receiver: Receiver, msg_id: str, payload: Mapping[str, Any], observer: CallObserver) -> Answer:
        await self.policy.check(receiver.url)
        body = orjson.dumps(payload)
        headers = signature_headers(receiver.secrets, msg_id, body, self._now())
        method = f"POST {receiver.name}"
        started = time.monotonic()
        try:
            answer = await self._send(receiver, body, headers)
        except ReceiverError as exc:
            took = time.monotonic() - started
            await observer(CallRecord(method, "uncertain" if exc.uncertain else "error", took, str(exc)))
            raise
        await observer(CallRecord(method, "ok", time.monotonic() - started))
        return answer

    async def _send(self, receiver: Receiver, body: bytes, headers: dict[str, str]) -> Answer:
        name = receiver.name
        try:
            async with self.http.stream("POST", receiver.url, content=body, headers=headers) as response:
                data = await _read_capped(response)
        except httpx.ConnectError as exc:
            raise ReceiverError(f"endpoint {name} unreachable: {type(exc).__name__}", retryable=True) from None
        except httpx.TransportError as exc:  # sent, maybe received: the webhook-id makes the next attempt harmless
            message = f"endpoint {name}: no answer ({type(exc).__name__})"
            raise ReceiverError(message, retryable=True, uncertain=True) from None
        status = response.status_code
        if 200 <= status < 300:
            return _answer(data)
        excerpt = data[:200].decode("utf-8", "replace").strip()
        message = f"endpoint {name} answered {status}" + (f": {excerpt}" if excerpt else "")
        temporary = status >= 500 or status in TEMPORARY_STATUSES
        raise ReceiverError(message, retryable=temporary, uncertain=temporary and status >= 500, status=status)


async def _read_capped(response: httpx.Response) -> bytes:
    chunks, size = [], 0
    async for chunk in response.aiter_bytes():
        size += len(chunk)
        if size > MAX_ANSWER_BYTES:
            break
        chunks.append(chunk)
    return b"".join(chunks)


def _answer(data: bytes) -> Answer:
    """A 2xx body: an object with an ``id`` (text or number) is taken; anything else is a delivery without one."""
    try:
        parsed = orjson.loads(data) if data.strip() else None
    except orjson.JSONDecodeError:
        parsed = None
    if not isinstance(parsed, dict):
        return Answer(None, {})
    given = parsed.get("id")
    valid = isinstance(given, str | int) and not isinstance(given, bool) and 0 < len(str(given)) <= 200
    return Answer(str(given) if valid else None, parsed)


def endpoint_problem(url: str) -> str | None:
    """Why ``url`` cannot be an endpoint (the URL itself is never quoted: its query may hold a secret)."""
    try:
        parts = urlsplit(url)
        host = parts.hostname
    except ValueError:
        return "not an URL"
    if parts.scheme not in ("https", "http") or not host:
        return "not an https URL"
    if "@" in parts.netloc or parts.fragment:
        return "no user, password or fragment in an endpoint URL"
    return None


def secret_problem(secret: str) -> str | None:
    """Why ``secret`` cannot sign: the spec's form is ``whsec_`` and 24 to 64 bytes in base64."""
    if not secret.startswith("whsec_"):
        return "not a Standard Webhooks secret"
    try:
        raw = base64.b64decode(secret[len("whsec_") :], validate=True)
    except (ValueError, binascii.Error):
        return "not a Standard Webhooks secret"
    return None if 24 <= len(raw) <= 64 else "a secret must be 24 to 64 bytes"
