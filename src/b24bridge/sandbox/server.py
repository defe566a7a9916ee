"""Starting a sandbox portal from the command line: ``b24bridge sandbox``."""

from __future__ import annotations

from pathlib import Path

import uvicorn

from .app import create_app
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
) -> None:
    config = SandboxConfig(
        host=host,
        port=port,
        state_path=state_path,
        plan=plan,
        limits_enabled=limits,
        seed=seed,
        public_url=public_url,
    )
    sandbox = Sandbox(config)
    hook, app = sandbox.bootstrap()
    print(banner(sandbox, hook, app), flush=True)
    uvicorn.run(create_app(sandbox=sandbox), host=host, port=port, log_level="warning", access_log=False)
