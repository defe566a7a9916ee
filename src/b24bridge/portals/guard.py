"""What an unconfirmed installation may cost: forged installs must not make b24bridge flood the OAuth server.

Every installation that arrives by a POST anyone could forge (the ONAPPINSTALL event, the install page) or by an
OAuth callback is confirmed by one request to the OAuth server carrying our client secret. Unchecked, 50 forged
installs were 50 such requests: an amplifier pointed at the OAuth server, which may well block our application for
it. So each attempt takes a token from two buckets, one per client address (an IPv6 address counts by its /64,
what one host usually holds) and one per claimed member_id; a confirmed installation gives both back, so only
refused or failed attempts use the allowance up. A token the OAuth server refused is remembered for an hour and
refused again at once. All state is in this process, bounded in size (the least recently used entries go first).
"""

from __future__ import annotations

import hashlib
import ipaddress
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from .schemas import InstallError

REFUSED_MEMORY = 3600.0  # seconds a refused token is refused without asking
MAX_ENTRIES = 10_000  # per table: buckets by address, by member_id, refused tokens


def address_key(address: str | None) -> str:
    """The bucket of a client address: the address itself, or its /64 for IPv6."""
    try:
        ip = ipaddress.ip_address(address or "")
    except ValueError:
        return address or "unknown"
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is None:
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip.ipv4_mapped if isinstance(ip, ipaddress.IPv6Address) else ip)


class _Buckets:
    """Token buckets by key: ``capacity`` attempts at once, refilled at ``capacity`` per ``period`` seconds."""

    def __init__(self, capacity: int, period: float, clock: Callable[[], float]) -> None:
        self.capacity = float(capacity)
        self.rate = capacity / period
        self.clock = clock
        self._levels: OrderedDict[str, tuple[float, float]] = OrderedDict()  # key -> (tokens, at)

    def _level(self, key: str) -> float:
        tokens, at = self._levels.get(key, (self.capacity, self.clock()))
        return min(self.capacity, tokens + (self.clock() - at) * self.rate)

    def _set(self, key: str, tokens: float) -> None:
        self._levels[key] = (tokens, self.clock())
        self._levels.move_to_end(key)
        while len(self._levels) > MAX_ENTRIES:
            self._levels.popitem(last=False)  # the least recently used: refilled, or the oldest flood

    def take(self, key: str) -> bool:
        tokens = self._level(key)
        if tokens < 1.0:
            return False
        self._set(key, tokens - 1.0)
        return True

    def give_back(self, key: str) -> None:
        self._set(key, min(self.capacity, self._level(key) + 1.0))


@dataclass(frozen=True)
class Attempt:
    """One admitted attempt; tell the guard how it ended."""

    address: str
    member_id: str
    secret_digest: str


class InstallGuard:
    """``InstallGuard(per_address=(10, 600.0), per_portal=(5, 600.0))``: admits attempts within both allowances."""

    def __init__(
        self,
        per_address: tuple[int, float],
        per_portal: tuple[int, float],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.clock = clock
        self.by_address = _Buckets(*per_address, clock)
        self.by_portal = _Buckets(*per_portal, clock)
        self._refused: OrderedDict[str, float] = OrderedDict()  # token digest -> until

    def admit(self, address: str | None, member_id: str, secret: str) -> Attempt:
        """An attempt to confirm ``secret`` (a refresh token or code), or :class:`InstallError` 401/429."""
        digest = hashlib.sha256(secret.encode()).hexdigest()
        until = self._refused.get(digest)
        if until is not None and until > self.clock():
            raise InstallError("the OAuth server refused the authorisation (invalid_grant)", 401)
        attempt = Attempt(address_key(address), member_id, digest)
        if not self.by_address.take(attempt.address):
            raise InstallError("too many unconfirmed installations from this address; try again later", 429)
        if not self.by_portal.take(member_id):
            self.by_address.give_back(attempt.address)
            raise InstallError("too many unconfirmed installations for this portal; try again later", 429)
        return attempt

    def confirmed(self, attempt: Attempt) -> None:
        self.by_address.give_back(attempt.address)
        self.by_portal.give_back(attempt.member_id)

    def refused(self, attempt: Attempt) -> None:
        """The OAuth server said no: the attempt stays counted and its token is refused at once from now on."""
        self._refused[attempt.secret_digest] = self.clock() + REFUSED_MEMORY
        self._refused.move_to_end(attempt.secret_digest)
        while len(self._refused) > MAX_ENTRIES:
            self._refused.popitem(last=False)
