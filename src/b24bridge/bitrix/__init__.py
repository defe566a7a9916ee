"""The async Bitrix24 client: limit-aware, batching, never losing an error.

Knows no database and no web framework: persistence comes in through callbacks (``on_tokens``, ``load_tokens``,
``on_auth_lost``), and callers observe their calls through ``observer``.
"""

from .answers import Answer, CallObserver, CallRecord, CommandResult
from .auth import OAuthAuth, TokenPair, WebhookAuth
from .client import BitrixClient
from .errors import BitrixError, Retry
from .limiter import Limits, MemoryLimiter
from .policy import BatchSettings, RetryPolicy, is_idempotent
from .portal import Portal

__all__ = [
    "Answer",
    "BatchSettings",
    "BitrixClient",
    "BitrixError",
    "CallObserver",
    "CallRecord",
    "CommandResult",
    "Limits",
    "MemoryLimiter",
    "OAuthAuth",
    "Portal",
    "Retry",
    "RetryPolicy",
    "TokenPair",
    "WebhookAuth",
    "is_idempotent",
]
