"""The baseline of bench/ingest.py: a bare Starlette app (one JSON route) on the server stack ``serve`` runs on (the
same uvicorn options, protocol class and event loop), so that the ratio to it is what b24bridge's own layers cost.

    python bench/_bare_app.py PORT
"""

from __future__ import annotations

import asyncio
import sys

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from b24bridge.cli.common import event_loop_factory
from b24bridge.server import listening_socket, server_options


async def healthz(request: Request) -> JSONResponse:
    return JSONResponse({"status": "ok"})


def main() -> None:
    port = int(sys.argv[1])
    app = Starlette(routes=[Route("/healthz", healthz)])
    config = uvicorn.Config(app, **server_options(10.0), log_config=None, proxy_headers=True)
    sock = listening_socket("127.0.0.1", port)
    with asyncio.Runner(loop_factory=event_loop_factory()) as runner:
        runner.run(uvicorn.Server(config).serve(sockets=[sock]))


if __name__ == "__main__":
    main()
