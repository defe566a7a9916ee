"""How a sandbox portal is configured: plan limits, simulated costs, token lifetimes."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

Plan = Literal["cloud", "enterprise"]

# Bitrix24 cloud request-rate limits per plan: (burst threshold, drain per second). REFERENCE 2.1.
PLAN_LIMITS: dict[str, tuple[int, float]] = {"cloud": (50, 2.0), "enterprise": (250, 5.0)}

# Writes cost the portal more server time than reads; the operating-time budget is fed from these.
DEFAULT_READ_COST = 0.01
DEFAULT_WRITE_COST = 0.05
_WRITE_SUFFIXES = (".add", ".update", ".delete", ".set", ".send")


@dataclass
class SandboxConfig:
    host: str = "127.0.0.1"
    port: int = 8090
    public_url: str | None = None
    plan: Plan = "cloud"
    limits_enabled: bool = True
    burst: int | None = None
    drain_per_second: float | None = None
    operating_limit: float = 480.0
    operating_window: float = 600.0
    method_costs: dict[str, float] = field(default_factory=dict)
    access_token_ttl: int = 3600
    refresh_token_ttl: int = 180 * 24 * 3600
    auth_code_ttl: int = 30
    timezone: str = "+03:00"
    seed: int = 0
    state_path: Path | None = None
    handler_timeout: float = 10.0

    @property
    def base_url(self) -> str:
        return (self.public_url or f"http://{self.host}:{self.port}").rstrip("/")

    @property
    def bucket_burst(self) -> int:
        return self.burst if self.burst is not None else PLAN_LIMITS[self.plan][0]

    @property
    def bucket_drain(self) -> float:
        return self.drain_per_second if self.drain_per_second is not None else PLAN_LIMITS[self.plan][1]

    def cost_of(self, method: str) -> float:
        cost = self.method_costs.get(method)
        if cost is not None:
            return cost
        return DEFAULT_WRITE_COST if method.endswith(_WRITE_SUFFIXES) else DEFAULT_READ_COST
