"""The async Bitrix24 client: limit-aware, batching, never losing an error.

Knows no database and no web framework: persistence comes in through callbacks (``on_tokens``, ``load_tokens``).
"""

from .auth import OAuthAuth, TokenPair, WebhookAuth
from .client import BatchSettings, BitrixClient, RetryPolicy, is_idempotent
from .errors import BitrixError, Retry
from .limiter import Limits, MemoryLimiter
from .portal import Answer, CommandResult, Portal

__all__ = [
    "Answer",
    "BatchSettings",
    "BitrixClient",
    "BitrixError",
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
