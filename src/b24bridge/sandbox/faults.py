"""Seeded, reproducible fault injection: the same seed and the same requests give the same faults."""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

FaultKind = Literal["error_500", "error_503", "drop_before", "drop_after", "outage"]


@dataclass
class FaultSpec:
    error_500_rate: float = 0.0
    error_503_rate: float = 0.0
    drop_rate: float = 0.0
    # "before": the connection drops before the method runs; "after": it runs, then the answer is lost
    # (the write happened but the client cannot know); "random": either, half and half.
    drop_phase: Literal["before", "after", "random"] = "random"
    latency_ms: float = 0.0
    latency_jitter_ms: float = 0.0
    outage_start: float | None = None
    outage_end: float | None = None
    # Only these methods are affected (lower-case names); empty means every REST request.
    methods: list[str] = field(default_factory=list)

    def validate(self) -> None:
        numbers = ("error_500_rate", "error_503_rate", "drop_rate", "latency_ms", "latency_jitter_ms")
        for name in (*numbers, "outage_start", "outage_end"):
            value = getattr(self, name)
            if (value is not None or name in numbers) and (
                isinstance(value, bool) or not isinstance(value, int | float)
            ):
                raise ValueError(f"{name} must be a number, got {value!r}")
        if not isinstance(self.methods, list) or not all(isinstance(m, str) for m in self.methods):
            raise ValueError(f"methods must be a list of method names, got {self.methods!r}")
        for name in ("error_500_rate", "error_503_rate", "drop_rate"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1, got {value}")
        if self.error_500_rate + self.error_503_rate + self.drop_rate > 1.0:
            raise ValueError("error_500_rate + error_503_rate + drop_rate must not exceed 1")
        if self.latency_ms < 0 or self.latency_jitter_ms < 0:
            raise ValueError("latency_ms and latency_jitter_ms must not be negative")
        if self.drop_phase not in ("before", "after", "random"):
            raise ValueError("drop_phase must be one of before, after, random")


@dataclass
class Decision:
    latency: float = 0.0
    kind: FaultKind | None = None


class FaultInjector:
    def __init__(self, seed: int = 0) -> None:
        self.seed = seed
        self.spec = FaultSpec()
        self._rng = random.Random(seed)
        self.injected: dict[str, int] = {}

    def configure(self, spec: FaultSpec, seed: int | None = None) -> None:
        spec.validate()
        spec.methods = [m.lower() for m in spec.methods]  # method names are case-insensitive on the portal
        self.spec = spec
        if seed is not None:
            self.seed = seed
        self._rng = random.Random(self.seed)
        self.injected = {}

    def reset(self) -> None:
        self.configure(FaultSpec())

    @property
    def active(self) -> bool:
        s = self.spec
        return bool(s.error_500_rate or s.error_503_rate or s.drop_rate or s.latency_ms or s.outage_start is not None)

    def decide(self, method: str, now: float) -> Decision:
        s = self.spec
        if s.methods and method not in s.methods:
            return Decision()
        latency = (s.latency_ms + self._rng.random() * s.latency_jitter_ms) / 1000.0
        kind: FaultKind | None = None
        if s.outage_start is not None and s.outage_start <= now < (s.outage_end or float("inf")):
            kind = "outage"
        else:
            roll = self._rng.random()
            if roll < s.error_500_rate:
                kind = "error_500"
            elif roll < s.error_500_rate + s.error_503_rate:
                kind = "error_503"
            elif roll < s.error_500_rate + s.error_503_rate + s.drop_rate:
                phase = s.drop_phase
                if phase == "random":
                    phase = "before" if self._rng.random() < 0.5 else "after"
                kind = "drop_before" if phase == "before" else "drop_after"
        if kind is not None:
            self.injected[kind] = self.injected.get(kind, 0) + 1
        return Decision(latency, kind)

    def describe(self) -> dict[str, Any]:
        return {"seed": self.seed, "spec": asdict(self.spec), "injected": dict(self.injected)}
