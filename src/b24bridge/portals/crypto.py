"""Secrets at rest: AES-GCM for portal tokens, HMACs for application tokens and OAuth ``state``.

Every output names the key that made it (``kid:...``), so keys rotate: the first configured key encrypts and signs,
any configured key decrypts and verifies. Keys come from ``B24BRIDGE_ENCRYPTION_KEYS``; in development, without one,
a key is generated once into ``DATA_DIR/secret.key``. In production a missing key stops the service at start-up:
a generated key silently living on one machine's disk would make the database unreadable anywhere else.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import re
import secrets
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from b24bridge.observability import get_logger
from b24bridge.settings import Settings, SettingsError

log = get_logger(__name__)

KEY_FILE = "secret.key"
_KID = re.compile(r"^[A-Za-z0-9_.-]{1,32}$")
_NONCE = 12


class KeyConfigError(SettingsError):
    """No usable encryption key: an operator problem, reported like any other settings error (one line)."""

    def __init__(self, message: str) -> None:
        super().__init__([f"B24BRIDGE_ENCRYPTION_KEYS: {message}"])


class DecryptError(Exception):
    """A stored secret cannot be decrypted (unknown key id, wrong key, tampered data). Never carries the data."""


def _b64decode(text: str) -> bytes:
    # validate=True: stray characters are an error, not silently dropped (a mangled key must not half-work).
    return base64.b64decode(text + "=" * (-len(text) % 4), altchars=b"-_", validate=True)


def _b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def new_key() -> str:
    """A fresh key in the configuration format's value part (url-safe base64 of 32 random bytes)."""
    return _b64encode(secrets.token_bytes(32))


def parse_keys(text: str) -> list[tuple[str, bytes]]:
    """``kid:key,kid2:key2`` -> [(kid, 32 bytes)]; errors name the key id, never the key."""
    keys: list[tuple[str, bytes]] = []
    for index, item in enumerate(part.strip() for part in text.split(",") if part.strip()):
        kid, sep, encoded = item.partition(":")
        kid = kid.strip()
        if not sep or not _KID.match(kid):
            raise KeyConfigError(f"entry {index + 1} must look like kid:base64url-key (kid: letters, digits, _.-)")
        try:
            key = _b64decode(encoded.strip())
        except (binascii.Error, ValueError):
            raise KeyConfigError(f"key {kid!r} is not url-safe base64") from None
        if len(key) != 32:
            raise KeyConfigError(f"key {kid!r} must be 32 bytes, got {len(key)}")
        if any(k == kid for k, _ in keys):
            raise KeyConfigError(f"key id {kid!r} appears twice")
        keys.append((kid, key))
    if not keys:
        raise KeyConfigError("no keys given")
    return keys


@dataclass(frozen=True)
class Keyring:
    keys: tuple[tuple[str, bytes], ...]

    @property
    def current_kid(self) -> str:
        return self.keys[0][0]

    def _key(self, kid: str) -> bytes | None:
        return next((key for k, key in self.keys if k == kid), None)

    def _derived(self, kid: str, purpose: str) -> bytes | None:
        # One key per purpose, so a MAC of one kind can never stand in for another or for the cipher key.
        key = self._key(kid)
        return None if key is None else hmac.new(key, f"b24bridge:{purpose}".encode(), hashlib.sha256).digest()

    # --- encryption --------------------------------------------------------------------------------------------

    def encrypt(self, plaintext: str, context: str = "") -> str:
        """``kid:base64(nonce + ciphertext)``; ``context`` (e.g. member id + field) is bound as associated data."""
        kid, key = self.keys[0]
        nonce = os.urandom(_NONCE)
        sealed = AESGCM(key).encrypt(nonce, plaintext.encode(), context.encode() or None)
        return f"{kid}:{_b64encode(nonce + sealed)}"

    def decrypt(self, ciphertext: str, context: str = "") -> str:
        kid, sep, body = ciphertext.partition(":")
        key = self._key(kid) if sep else None
        if key is None:
            raise DecryptError(f"secret was encrypted with key {kid!r}, which is not configured")
        try:
            raw = _b64decode(body)
            return AESGCM(key).decrypt(raw[:_NONCE], raw[_NONCE:], context.encode() or None).decode()
        except (InvalidTag, ValueError, binascii.Error):
            raise DecryptError(f"secret under key {kid!r} does not decrypt (wrong key or damaged data)") from None

    def needs_rotation(self, ciphertext: str) -> bool:
        return not ciphertext.startswith(f"{self.current_kid}:")

    # --- MACs --------------------------------------------------------------------------------------------------

    def mac(self, purpose: str, data: str) -> str:
        kid = self.current_kid
        key = self._derived(kid, purpose)
        assert key is not None
        return f"{kid}:{hmac.new(key, data.encode(), hashlib.sha256).hexdigest()}"

    def check_mac(self, purpose: str, data: str, stored: str) -> bool:
        """Constant-time comparison against a MAC made by any configured key."""
        kid, sep, digest = stored.partition(":")
        key = self._derived(kid, purpose) if sep else None
        # An unknown key id (and the placeholder of "no such portal") still costs a derivation and a MAC, so
        # timing does not tell it from a wrong token.
        expected = hmac.new(key or self._derived(self.current_kid, purpose) or b"", data.encode(), hashlib.sha256)
        matched = hmac.compare_digest(expected.hexdigest().encode(), digest.encode())
        return matched and key is not None


def _key_file(settings: Settings) -> str:
    path = Path(settings.data_dir) / KEY_FILE
    if path.exists():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    text = f"local:{new_key()}"
    # O_EXCL: two processes starting at once must not each write a different key.
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_text().strip()
    with os.fdopen(fd, "w") as handle:
        handle.write(text + "\n")
    log.warning(
        "generated an encryption key for portal tokens; back it up or set B24BRIDGE_ENCRYPTION_KEYS",
        path=str(path),
    )
    return text


def keyring(settings: Settings) -> Keyring:
    """The keyring for ``settings``; raises :class:`KeyConfigError` if there is none."""
    configured = settings.encryption_keys.get_secret_value() if settings.encryption_keys else ""
    if not configured.strip():
        if settings.environment == "production":
            raise KeyConfigError(
                "is required in production (portal tokens are encrypted with it); "
                "set it to k1:<32 random bytes in url-safe base64>"
            )
        configured = _key_file(settings)
    return Keyring(tuple(parse_keys(configured)))


# --- OAuth state --------------------------------------------------------------------------------------------------

STATE_PURPOSE = "oauth_state"
STATE_TTL = 600.0


@dataclass(frozen=True)
class OAuthState:
    """What a valid ``state`` says: the portal the flow started for, its one-time nonce, its expiry (epoch
    seconds), and the digest of the secret of the browser that started it (the cookie ``/oauth/start`` set)."""

    domain: str
    nonce: str
    expires: int
    browser_digest: str

    def started_by(self, browser_secret: str) -> bool:
        """Whether ``browser_secret`` (the callback's cookie) is the one the flow was started with."""
        return hmac.compare_digest(self.browser_digest, _browser_digest(browser_secret))


def new_browser_secret() -> str:
    return secrets.token_urlsafe(24)


def _browser_digest(secret: str) -> str:
    # Only a digest travels in the state (which passes through the portal and browser history), never the secret.
    return hashlib.sha256(f"b24bridge:oauth-browser:{secret}".encode()).hexdigest()[:32]


def make_state(ring: Keyring, domain: str, now: float, browser_secret: str) -> str:
    """``domain|nonce|expiry|browser`` (base64) + ``.`` + MAC: ties the callback to the portal the flow started for
    and to the browser that started it; the nonce makes it single-use."""
    fields = [domain, secrets.token_urlsafe(12), str(int(now + STATE_TTL)), _browser_digest(browser_secret)]
    payload = _b64encode("|".join(fields).encode())
    return f"{payload}.{ring.mac(STATE_PURPOSE, payload)}"


def read_state(ring: Keyring, state: str, now: float) -> OAuthState | None:
    """What a valid, unexpired ``state`` says; None if it is forged, altered or expired."""
    payload, sep, mac = state.partition(".")
    if not sep or not ring.check_mac(STATE_PURPOSE, payload, mac):
        return None
    try:
        domain, nonce, expires, browser = _b64decode(payload).decode().split("|")
        if int(expires) < now:
            return None
    except (ValueError, binascii.Error):
        return None
    return OAuthState(domain, nonce, int(expires), browser)
