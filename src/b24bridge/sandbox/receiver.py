"""A receiving endpoint for the bridge's HTTPS targets, as a user's own system would run one: it checks every Standard
Webhooks signature (the spec's package), applies each ``webhook-id`` once, keeps one record per source record and
answers with that record's id (``{"id": "ERP-17"}``).

Faults are seeded, so a test that uses them is reproducible: a share of requests answered 503 before anything is
applied, and a share applied but answered too late for the sender (``slow_seconds``: its timeout fires, it cannot
know whether the message arrived, and sends it again with the same id).

``python -m b24bridge.sandbox.receiver --port 8099 --secret whsec_...`` serves one; ``GET /_receiver/`` shows what
it holds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
from dataclasses import dataclass, field
from typing import Any

from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route


@dataclass
class ReceiverState:
    secrets: list[str] = field(repr=False)
    error_rate: float = 0.0  # answered 503, nothing applied
    slow_rate: float = 0.0  # applied, answered after slow_seconds
    slow_seconds: float = 2.0
    seed: int = 0
    refuse_status: int | None = None  # answered to every signed request (with an error body), nothing applied
    records: dict[str, dict[str, Any]] = field(default_factory=dict)  # source record key -> record
    applied: dict[str, str] = field(default_factory=dict)  # webhook-id -> record id
    requests: int = 0
    refused_signatures: int = 0
    errors_sent: int = 0
    slow_sent: int = 0

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)

    def summary(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "applied": len(self.applied),
            "records": len(self.records),
            "refused_signatures": self.refused_signatures,
            "errors_sent": self.errors_sent,
            "slow_sent": self.slow_sent,
        }


def create_receiver_app(state: ReceiverState) -> Starlette:
    hooks = [Webhook(secret) for secret in state.secrets]

    async def receive(request: Request) -> Response:
        state.requests += 1
        body = await request.body()
        headers = dict(request.headers)
        payload = None
        for hook in hooks:
            try:
                payload = hook.verify(body, headers)
                break
            except WebhookVerificationError:
                continue
        if not isinstance(payload, dict):
            state.refused_signatures += 1
            return JSONResponse({"error": "signature"}, status_code=401)
        if state.refuse_status is not None:
            return JSONResponse({"error": "record refused: TITLE is required"}, status_code=state.refuse_status)
        draw = state.rng.random()
        if draw < state.error_rate:
            state.errors_sent += 1
            return JSONResponse({"error": "busy"}, status_code=503)
        msg_id = headers["webhook-id"]
        record_id = state.applied.get(msg_id)
        if record_id is None:
            record_id = _apply(state, payload)
            state.applied[msg_id] = record_id
        if draw < state.error_rate + state.slow_rate:
            state.slow_sent += 1
            await asyncio.sleep(state.slow_seconds)
        return JSONResponse({"id": record_id, "status": "stored"})

    async def show(request: Request) -> Response:
        wanted = request.query_params.get("records")
        summary = state.summary()
        if wanted:
            summary["by_source"] = state.records
        return JSONResponse(summary)

    return Starlette(routes=[Route("/_receiver/", show), Route("/{path:path}", receive, methods=["POST"])])


def _apply(state: ReceiverState, payload: dict[str, Any]) -> str:
    source = payload.get("source") or {}
    key = f"{payload.get('route')}:{source.get('entity')}:{source.get('id')}"
    record = state.records.get(key)
    if record is None:
        record = state.records[key] = {"id": f"ERP-{len(state.records) + 1}", "versions": 0}
    record["versions"] += 1
    record["last"] = payload
    return str(record["id"])


def main() -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--port", type=int, default=8099)
    parser.add_argument("--secret", action="append", required=True)
    parser.add_argument("--error-rate", type=float, default=0.0)
    parser.add_argument("--slow-rate", type=float, default=0.0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    state = ReceiverState(args.secret, args.error_rate, args.slow_rate, seed=args.seed)
    uvicorn.run(create_receiver_app(state), host="127.0.0.1", port=args.port, log_level="warning", access_log=False)
    print(json.dumps(state.summary()))


if __name__ == "__main__":
    main()
