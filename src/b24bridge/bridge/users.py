"""Responsible users matched by e-mail between portals, remembered for a while (users change rarely)."""

from __future__ import annotations

import time
from collections.abc import Iterable

from b24bridge.bitrix import CallObserver, Portal

# How long a user's e-mail, or the target user behind an e-mail, is trusted before it is read again.
USER_TTL = 600.0


class UserDirectory:
    def __init__(self, ttl: float = USER_TTL) -> None:
        self.ttl = ttl
        self._emails: dict[tuple[str, int], tuple[float, str | None]] = {}
        self._by_email: dict[tuple[str, str], tuple[float, int | None]] = {}

    async def match(
        self, source: Portal, target: Portal, user_ids: Iterable[int], observer: CallObserver | None = None
    ) -> dict[int, int]:
        """Source user id -> the active target user with the same e-mail, for those that have one."""
        matched: dict[int, int] = {}
        for user_id in user_ids:
            email = await self._email(source, user_id, observer)
            if email is None:
                continue
            target_id = await self._user_by_email(target, email, observer)
            if target_id is not None:
                matched[user_id] = target_id
        return matched

    async def _email(self, portal: Portal, user_id: int, observer: CallObserver | None) -> str | None:
        key = (portal.key, user_id)
        cached = self._emails.get(key)
        if cached is not None and cached[0] > time.monotonic():
            return cached[1]
        found = await portal.call("user.get", {"FILTER": {"ID": user_id}}, observer=observer)
        email = None
        if isinstance(found, list) and found and isinstance(found[0], dict):
            email = str(found[0].get("EMAIL") or "").strip().lower() or None
        self._emails[key] = (time.monotonic() + self.ttl, email)
        return email

    async def _user_by_email(self, portal: Portal, email: str, observer: CallObserver | None) -> int | None:
        key = (portal.key, email)
        cached = self._by_email.get(key)
        if cached is not None and cached[0] > time.monotonic():
            return cached[1]
        found = await portal.call("user.get", {"FILTER": {"EMAIL": email, "ACTIVE": True}}, observer=observer)
        user_id = int(found[0]["ID"]) if isinstance(found, list) and found else None
        self._by_email[key] = (time.monotonic() + self.ttl, user_id)
        return user_id
