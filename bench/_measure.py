"""Measuring helpers the latency benchmarks share (``robot_latency.py``, ``bridge_e2e.py``): quantiles, rounded
figures, targets met, and how busy the machine was during a window."""

from __future__ import annotations

import math
import os
import platform
import time
from pathlib import Path
from typing import Any


def machine_info() -> dict[str, Any]:
    """Where a benchmark ran, and the load average before it (the caller adds ``loadavg_after``)."""
    return {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "loadavg_before": [round(v, 2) for v in os.getloadavg()],
    }


# --- figures ---------------------------------------------------------------------------------------------------


def quantile(values: list[float], q: float) -> float:
    """Nearest rank: the smallest value with at least ``q`` of the values at or below it (``inf`` allowed)."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def rounded(value: float, places: int = 4) -> float | None:
    """``value`` rounded, or ``None`` for infinity (a run never answered)."""
    return None if math.isinf(value) else round(value, places)


def met(value: float | None, target: float) -> bool:
    return value is not None and value <= target


# --- how busy the machine was ----------------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a process so far (Linux /proc; None elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_ticks() -> tuple[int, int] | None:
    """(busy, total) CPU ticks of the whole machine so far, to tell how much else ran during a window."""
    try:
        values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    except (OSError, ValueError, IndexError):
        return None
    idle = values[3] + (values[4] if len(values) > 4 else 0)
    return sum(values) - idle, sum(values)


class CpuWindow:
    def __init__(self, sandbox_pid: int, bridge_pid: int) -> None:
        self.pids = {"sandbox": sandbox_pid, "b24bridge": bridge_pid}
        self.began = time.monotonic()
        self.start = {name: cpu_seconds(pid) for name, pid in self.pids.items()}
        self.machine = machine_ticks()

    def result(self) -> dict[str, Any]:
        elapsed = time.monotonic() - self.began
        out: dict[str, Any] = {"window_s": round(elapsed, 1), "cpus": os.cpu_count()}
        for name, pid in self.pids.items():
            now, then = cpu_seconds(pid), self.start[name]
            out[f"{name}_cpu_s"] = round(now - then, 1) if now is not None and then is not None else None
        end = machine_ticks()
        if end is not None and self.machine is not None and end[1] > self.machine[1]:
            out["machine_busy"] = round((end[0] - self.machine[0]) / (end[1] - self.machine[1]), 2)
        return out
