"""The packaging files (docker-compose.yml, the Dockerfile and its healthcheck, .env.example, the CI workflow)
against each other.

Compose (``docker compose config``) is run where it is installed and skipped, with the reason, where it is not. No
Docker engine is needed; building and running the images is deploy/smoke-test.sh's job (CI runs it on GitHub).
"""

from __future__ import annotations

import http.server
import re
import shutil
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import yaml

from tests.deploy.conftest import COMPOSE, DOCKERFILE, HEALTHCHECK, ROOT, _compose, _env, _run

ENV = {
    "B24BRIDGE_PUBLIC_URL": "https://b24bridge.example.com",
    "B24BRIDGE_ENCRYPTION_KEYS": "k1:oQjpVLdiELb9gMRXTsWZO9wjGSM14A6ArAPrZpJfNx0",
    "POSTGRES_PASSWORD": "0123456789abcdef",
    "GRAFANA_ADMIN_PASSWORD": "secret",
}


# --- Compose -----------------------------------------------------------------------------------------------------


def test_compose_has_every_service_with_a_healthcheck() -> None:
    services = _compose()["services"]
    assert {"postgres", "redis", "api", "worker", "prometheus", "grafana"} <= set(services)
    for name in ("postgres", "redis", "prometheus", "grafana"):
        assert services[name]["healthcheck"]["test"], name
    assert "pg_isready" in " ".join(services["postgres"]["healthcheck"]["test"])
    # api and worker use the image's HEALTHCHECK (it knows both roles); Compose must not switch it off.
    for name in ("api", "worker"):
        assert not services[name].get("healthcheck", {}).get("disable"), name
    assert re.search(r"^HEALTHCHECK .*CMD", DOCKERFILE.read_text(), re.M)
    # Containers start in order of health, not merely of creation.
    for name in ("api", "worker"):
        depends = services[name]["depends_on"]
        assert depends["postgres"]["condition"] == depends["redis"]["condition"] == "service_healthy", name


def test_compose_api_and_workers_are_a_scaled_production_deployment() -> None:
    services = _compose()["services"]
    api, worker = services["api"], services["worker"]
    assert api["command"] == ["serve"] and worker["command"] == ["worker"]
    # A fixed name or host port would make `--scale worker=3` fail on the second container.
    assert "container_name" not in worker and "ports" not in worker
    for service in (api, worker):
        env = _env(service)
        assert env["B24BRIDGE_WORKER_IN_PROCESS"] == "false"
        assert env["B24BRIDGE_HOST"] == "0.0.0.0"
        assert env["B24BRIDGE_REDIS_URL"].startswith("redis://redis:")
        assert "@postgres:5432/" in env["B24BRIDGE_DATABASE_URL"]
        assert env["B24BRIDGE_ENVIRONMENT"].endswith("production}")
        # Production refuses to start without these: Compose says so first, with a message naming the fix.
        for required in ("B24BRIDGE_ENCRYPTION_KEYS", "B24BRIDGE_PUBLIC_URL"):
            assert re.fullmatch(rf"\$\{{{required}:\?.+\}}", env[required]), required
        assert any(str(volume).endswith(":/etc/b24bridge:ro") for volume in service["volumes"])
    # Published ports are for the host's proxy and operators only.
    for name, service in services.items():
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} on every interface"


def test_every_variable_compose_needs_is_in_env_example() -> None:
    text = COMPOSE.read_text()
    example = (ROOT / ".env.example").read_text()
    required = set(re.findall(r"\$\{([A-Z0-9_]+):\?", text))
    optional = set(re.findall(r"\$\{([A-Z0-9_]+):-", text))
    assert {"B24BRIDGE_ENCRYPTION_KEYS", "B24BRIDGE_PUBLIC_URL", "POSTGRES_PASSWORD"} <= required
    for name in required:
        assert re.search(rf"^{name}=", example, re.M), f"{name} is required: .env.example must list it"
    for name in optional:
        assert re.search(rf"^#? ?{name}=", example, re.M), f".env.example should mention {name}"
    assert "keys generate" in example


# --- the image ---------------------------------------------------------------------------------------------------


def _instructions() -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line else "") for line in lines]


def test_dockerfile_builds_in_stages_and_runs_as_a_user_with_a_healthcheck() -> None:
    instructions = _instructions()
    stages = [arg for op, arg in instructions if op == "FROM"]
    assert len(stages) >= 2 and stages[0].endswith(" AS build"), stages
    assert "python:3.11" in DOCKERFILE.read_text()
    users = [arg for op, arg in instructions if op == "USER"]
    assert users and users[-1].split(":")[0] not in {"root", "0"}
    exposed = {port for op, arg in instructions if op == "EXPOSE" for port in arg.split()}
    assert {"8000", "9100"} <= exposed
    assert ("ENTRYPOINT", '["b24bridge"]') in instructions
    assert dict(instructions)["CMD"].startswith('["serve"')
    # What the image copies from the context is let through .dockerignore (which excludes everything else).
    let_through = {
        line[1:].strip().removeprefix("./").rstrip("/")
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.startswith("!")
    }
    for op, arg in instructions:
        if op == "COPY" and "--from" not in arg:
            for source in [word for word in arg.split() if not word.startswith("--")][:-1]:
                assert (ROOT / source).exists(), source
                assert source.removeprefix("./").rstrip("/") in let_through, f"{source} is excluded by .dockerignore"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class _Answer(http.server.BaseHTTPRequestHandler):
    status = 200

    def do_GET(self) -> None:
        self.send_response(self.status)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args: object) -> None:
        pass


def _serve(status: int) -> tuple[http.server.HTTPServer, int]:
    handler = type("Handler", (_Answer,), {"status": status})
    server = http.server.HTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, int(server.server_address[1])


def _healthcheck(port: int, metrics_port: int) -> subprocess.CompletedProcess[str]:
    env = {"B24BRIDGE_HOST": "0.0.0.0", "B24BRIDGE_PORT": str(port), "B24BRIDGE_METRICS_PORT": str(metrics_port)}
    return subprocess.run([sys.executable, str(HEALTHCHECK)], env=env, capture_output=True, text=True, timeout=30)


def test_the_image_healthcheck_knows_the_api_and_the_worker() -> None:
    closed = _free_port()
    api, api_port = _serve(200)
    sick, sick_port = _serve(503)
    worker, worker_port = _serve(200)
    try:
        assert _healthcheck(api_port, closed).returncode == 0  # serve: /healthz answers
        assert _healthcheck(closed, worker_port).returncode == 0  # worker: nothing on 8000, /metrics answers
        refused = _healthcheck(closed, _free_port())
        assert refused.returncode == 1 and "nothing listens" in refused.stdout
        answered = _healthcheck(sick_port, worker_port)  # an API that answers 503 is sick, whatever else runs
        assert answered.returncode == 1 and "HTTP 503" in answered.stdout
    finally:
        for server in (api, sick, worker):
            server.shutdown()
            server.server_close()


# --- CI ----------------------------------------------------------------------------------------------------------


def test_the_github_workflow_runs_make_test_with_postgres_and_redis() -> None:
    workflow = yaml.safe_load((ROOT / ".github" / "workflows" / "ci.yml").read_text())
    triggers = workflow.get("on", workflow.get(True))  # YAML 1.1 reads a bare `on` as true
    assert {"push", "pull_request"} <= set(triggers)
    job = workflow["jobs"]["test"]
    assert {"postgres", "redis"} <= set(job["services"])
    assert job["services"]["postgres"]["env"]["POSTGRES_DB"] == "test"
    steps = job["steps"]
    assert any(step.get("with", {}).get("python-version") == "3.11" for step in steps)
    assert any(step.get("run", "").strip() in {"bash .ci/run", "make test"} for step in steps)
    compose_job = workflow["jobs"]["compose"]
    assert any("deploy/smoke-test.sh" in step.get("run", "") for step in compose_job["steps"])


# --- docker compose, where installed -------------------------------------------------------------------------------


def _compose_command() -> list[str]:
    """Compose v2 as a docker plugin, else a standalone docker-compose (v1 reads this file the same way)."""
    docker = shutil.which("docker")
    if docker is not None and _run([docker, "compose", "version"], ROOT).returncode == 0:
        return [docker, "compose"]
    standalone = shutil.which("docker-compose")
    if standalone is not None:
        return [standalone]
    reason = "the docker client has no compose plugin" if docker else "docker is not installed"
    pytest.skip(f"{reason} and there is no docker-compose: cannot run `docker compose config`")


def _project(tmp_path: Path, env: dict[str, str]) -> Path:
    # A copy, so the test never reads or writes the checkout's own .env.
    shutil.copy(COMPOSE, tmp_path / COMPOSE.name)
    shutil.copytree(ROOT / "deploy", tmp_path / "deploy")
    (tmp_path / ".env").write_text("".join(f"{key}={value}\n" for key, value in env.items()))
    return tmp_path


def test_docker_compose_config_accepts_the_file(tmp_path: Path) -> None:
    command = _compose_command()
    example = (ROOT / ".env.example").read_text()
    filled = re.sub(r"^([A-Z0-9_]+)=$", lambda m: f"{m[1]}={ENV.get(m[1], '')}", example, flags=re.M)
    project = _project(tmp_path, {})
    (project / ".env").write_text(filled)
    result = _run([*command, "config"], project)
    assert result.returncode == 0, result.stderr
    config = yaml.safe_load(result.stdout)
    assert {"postgres", "redis", "api", "worker", "prometheus", "grafana"} <= set(config["services"])
    api_env = config["services"]["api"]["environment"]
    assert (
        api_env["B24BRIDGE_DATABASE_URL"]
        == f"postgresql://b24bridge:{ENV['POSTGRES_PASSWORD']}@postgres:5432/b24bridge"
    )
    assert api_env["B24BRIDGE_PUBLIC_URL"] == ENV["B24BRIDGE_PUBLIC_URL"]

    # With the proxy overlay too (it needs the certificate paths).
    with (project / ".env").open("a") as env:
        env.write("TLS_CERT=/etc/ssl/fullchain.pem\nTLS_KEY=/etc/ssl/privkey.pem\n")
    overlay = _run([*command, "-f", "docker-compose.yml", "-f", "deploy/nginx/compose.proxy.yml", "config"], project)
    assert overlay.returncode == 0, overlay.stderr
    assert yaml.safe_load(overlay.stdout)["services"]["proxy"]["network_mode"] == "service:api"


def test_docker_compose_names_the_missing_secret(tmp_path: Path) -> None:
    command = _compose_command()
    project = _project(tmp_path, {key: value for key, value in ENV.items() if key != "B24BRIDGE_ENCRYPTION_KEYS"})
    result = _run([*command, "config"], project)
    assert result.returncode != 0
    assert "set B24BRIDGE_ENCRYPTION_KEYS in .env" in result.stdout + result.stderr
