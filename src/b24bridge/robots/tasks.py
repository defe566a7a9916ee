"""Jobs that run robot calls (filled in by the robots issue)."""

from __future__ import annotations

import procrastinate

blueprint = procrastinate.Blueprint()
