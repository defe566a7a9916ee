"""Starting a sandbox portal from the command line: ``b24bridge sandbox``."""

from __future__ import annotations

import socket
from pathlib import Path

import uvicorn

from .app import create_app
from .cloud import Cloud
from .config import Plan, SandboxConfig
from .runtime import Sandbox
from .state import Application, Webhook


def banner(sandbox: Sandbox, hook: Webhook, app: Application) -> str:
    base = sandbox.config.base_url
    limits = (
        f"{sandbox.config.plan}: burst {sandbox.config.bucket_burst}, drain {sandbox.config.bucket_drain}/s, "
        f"operating {sandbox.config.operating_limit:g}s per {sandbox.config.operating_window:g}s"
        if sandbox.config.limits_enabled
        else "off"
    )
    return "\n".join(
        [
            f"Bitrix24 sandbox portal at {base}  (member_id {sandbox.world.member_id})",
            f"  incoming webhook : {base}/rest/{hook.user_id}/{hook.code}/",
            f"  local application: client_id={app.client_id}",
            f"                     client_secret={app.client_secret}",
            f"  OAuth server     : {base}/oauth/authorize/  {base}/oauth/token/  REST {sandbox.server_endpoint}",
            f"  control API      : {base}/_sandbox/",
            f"  limits           : {limits}",
        ]
    )


def run(
    host: str = "127.0.0.1",
    port: int = 8090,
    state_path: Path | None = None,
    plan: Plan = "cloud",
    limits: bool = True,
    seed: int = 0,
    public_url: str | None = None,
    portals: int = 1,
) -> None:
    """Serve the sandbox until interrupted: one portal on ``port``, or ``portals`` portals on ``port`` ..
    ``port + portals - 1`` sharing one OAuth server (with ``--state FILE``, portal n > 1 keeps ``FILE.n.json``)."""
    config = SandboxConfig(
        host=host,
        port=port,
        state_path=state_path,
        plan=plan,
        limits_enabled=limits,
        seed=seed,
        public_url=public_url,
    )
    if portals == 1:
        sandbox = Sandbox(config)
        hook, app = sandbox.bootstrap()
        print(banner(sandbox, hook, app), flush=True)
        uvicorn.run(create_app(sandbox=sandbox), host=host, port=port, log_level="warning", access_log=False)
        return
    if public_url is not None:
        raise ValueError("public_url names one portal; it cannot be combined with portals > 1")
    cloud = Cloud.on_ports(config, portals)
    print(f"Bitrix24 sandbox cloud: {portals} portals sharing one OAuth server", flush=True)
    for member in cloud.portals:
        print(banner(member, *member.bootstrap()), flush=True)
    sockets = [_listen(host, member.config.port) for member in cloud.portals]
    server = uvicorn.Server(uvicorn.Config(cloud.asgi(), log_level="warning", access_log=False))
    try:
        server.run(sockets=sockets)
    except KeyboardInterrupt:
        pass  # uvicorn re-raises the Ctrl-C it handled; uvicorn.run swallows it the same way
    finally:
        for sock in sockets:
            sock.close()


def _listen(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    return sock
