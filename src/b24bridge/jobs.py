"""The job engine: one procrastinate App carrying every domain's tasks, and a worker that outlives outages.

procrastinate's worker stops for good when one of its side tasks fails (the LISTEN connection dropped because the
database went away, say) or when fetching a job raises. :class:`SupervisedWorker` starts it again with a growing
pause until it runs, so a database outage delays jobs instead of ending them; ``/readyz`` reports a worker that is
not running.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from typing import Any

import procrastinate

from b24bridge.db import Database
from b24bridge.observability import get_logger
from b24bridge.robots import tasks as robot_tasks

log = get_logger(__name__)

# Restart pauses after a worker stopped by itself: quick at first, at most half a minute.
RESTART_FIRST = 0.5
RESTART_MAX = 30.0


def build_app(database: Database) -> procrastinate.App:
    """The App with every domain's tasks, under its namespace; opened by the caller."""
    app = database.procrastinate_app(worker_defaults=dict(robot_tasks.WORKER_DEFAULTS))
    app.add_tasks_from(robot_tasks.build_blueprint(), namespace=robot_tasks.NAMESPACE)
    return app


class SupervisedWorker:
    def __init__(self, app: procrastinate.App, *, concurrency: int, name: str, context: Mapping[str, Any]) -> None:
        self.app = app
        self.concurrency = concurrency
        self.name = name
        self.context = dict(context)
        self.running = False
        self.restarts = 0
        self.last_error: str | None = None
        self.stopped_at: float | None = None

    async def run(self) -> None:
        """Run the worker until cancelled, starting it again whenever it stops by itself."""
        pause = RESTART_FIRST
        while True:
            started = time.monotonic()
            self.running = True
            try:
                await self.app.run_worker_async(
                    concurrency=self.concurrency,
                    name=self.name,
                    install_signal_handlers=False,
                    additional_context=self.context,
                )
                self.last_error = "the worker stopped (a side task failed)"
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.last_error = f"{type(exc).__name__}: {exc}"
            finally:
                self.running = False
                self.stopped_at = time.time()
            if time.monotonic() - started > 60:
                pause = RESTART_FIRST  # it ran for a while: this is a new outage, not the same one
            self.restarts += 1
            log.error("job worker stopped; starting it again", worker=self.name, error=self.last_error, pause=pause)
            await asyncio.sleep(pause)
            pause = min(RESTART_MAX, pause * 2)

    def health(self) -> str | None:
        """None while running (or about to start); otherwise why not, for ``/readyz``."""
        if self.running or self.stopped_at is None:
            return None
        return f"job worker {self.name!r} is not running ({self.last_error or 'not started'})"
