#!/usr/bin/env bash
# End-to-end check of the Compose deployment, for a machine with a Docker engine and Compose v2 (CI runs it on
# GitHub's runners): builds the image, starts everything with WORKERS workers and a throwaway settings file on
# unusual ports, checks what an operator relies on, then removes it all, volumes included.
#   deploy/smoke-test.sh [WORKERS]     (default 2)
# It never reads or writes your .env: its settings go to a temporary file (B24BRIDGE_ENV_FILE).
set -euo pipefail
cd "$(dirname "$0")/.."

workers=${1:-2}
project="b24bridge-smoke-$$"
api_port=18000 prometheus_port=19090 grafana_port=13000
envfile=$(mktemp)
grafana_password=$(python3 -c 'import secrets; print(secrets.token_hex(12))')
cat > "$envfile" <<ENV
B24BRIDGE_PUBLIC_URL=https://b24bridge.example.com
B24BRIDGE_ENCRYPTION_KEYS=k1:$(python3 -c 'import base64,secrets; print(base64.urlsafe_b64encode(secrets.token_bytes(32)).rstrip(b"=").decode())')
POSTGRES_PASSWORD=$(python3 -c 'import secrets; print(secrets.token_hex(16))')
GRAFANA_ADMIN_PASSWORD=$grafana_password
B24BRIDGE_API_PORT=$api_port
PROMETHEUS_PORT=$prometheus_port
GRAFANA_PORT=$grafana_port
B24BRIDGE_IMAGE=b24bridge:smoke
B24BRIDGE_ENV_FILE=$envfile
ENV

compose() { B24BRIDGE_ENV_FILE="$envfile" docker compose --project-name "$project" --env-file "$envfile" "$@"; }

finish() {
    status=$?
    if [ "$status" -ne 0 ]; then
        echo "smoke: FAILED; the last log lines of each service:" >&2
        compose ps -a >&2 || true
        compose logs --no-color --tail 60 >&2 || true
    fi
    compose down --volumes --remove-orphans >/dev/null 2>&1 || true
    rm -f "$envfile"
    exit "$status"
}
trap finish EXIT

step() { echo "smoke: $*"; }

# Retries a check until it passes or the time runs out; prints the last failure.
eventually() {
    local seconds=$1; shift
    local deadline=$((SECONDS + seconds))
    until "$@"; do
        if [ "$SECONDS" -ge "$deadline" ]; then
            echo "smoke: gave up after ${seconds}s: $*" >&2
            return 1
        fi
        sleep 3
    done
}

# PromQL instant query; prints the first value (or nothing).
promql() {
    curl -fsS --get "http://127.0.0.1:$prometheus_port/api/v1/query" --data-urlencode "query=$1" |
        python3 -c 'import json,sys; r=json.load(sys.stdin)["data"]["result"]; print(r[0]["value"][1] if r else "")'
}
promql_is() { [ "$(promql "$1")" = "$2" ]; }
promql_at_least() { python3 -c 'import sys; sys.exit(0 if sys.argv[1] and float(sys.argv[1]) >= float(sys.argv[2]) else 1)' "$(promql "$1")" "$2"; }

step "docker compose config"
compose config --quiet

step "build and start with $workers workers (waiting for every healthcheck)"
compose up -d --build --wait --wait-timeout 300 --scale "worker=$workers"

step "the API answers /healthz, /readyz and /metrics on 127.0.0.1:$api_port"
curl -fsS "http://127.0.0.1:$api_port/healthz" | grep -q '"ok"'
eventually 60 sh -c "curl -fsS http://127.0.0.1:$api_port/readyz | grep -q ready"
curl -fsS "http://127.0.0.1:$api_port/metrics" | grep -q '^b24bridge_workers_alive'

step "the processes run as a non-root user"
for service in api worker; do
    uid=$(compose exec -T "$service" id -u)
    [ "$uid" != "0" ] || { echo "smoke: $service runs as root" >&2; exit 1; }
done

step "every container is healthy"
for id in $(compose ps -q); do
    health=$(docker inspect --format '{{if .State.Health}}{{.State.Health.Status}}{{else}}none{{end}}' "$id")
    [ "$health" = "healthy" ] || { echo "smoke: container $id is $health" >&2; exit 1; }
done

step "Prometheus scrapes the API and all $workers workers, and sees them alive"
eventually 120 promql_is 'count(up{job="b24bridge-api"} == 1)' 1
eventually 120 promql_is 'count(up{job="b24bridge-worker"} == 1)' "$workers"
eventually 120 promql_at_least 'max(b24bridge_workers_alive)' "$workers"

step "Prometheus loaded the alert rules, and none fires"
curl -fsS "http://127.0.0.1:$prometheus_port/api/v1/rules" | grep -q B24BridgeNoWorkerHeartbeat
eventually 60 promql_is 'count(ALERTS{alertstate="firing", alertname=~"B24Bridge.*"}) or vector(0)' 0

step "Grafana has the data source and the dashboard"
grafana="http://admin:$grafana_password@127.0.0.1:$grafana_port"
eventually 60 sh -c "curl -fsS '$grafana/api/datasources/uid/prometheus/health' | grep -q OK"
curl -fsS "$grafana/api/dashboards/uid/b24bridge" | grep -q '"title":"b24bridge"'

step "one more worker is found by DNS discovery"
compose up -d --wait --wait-timeout 120 --scale "worker=$((workers + 1))"
eventually 120 promql_is 'count(up{job="b24bridge-worker"} == 1)' "$((workers + 1))"

step "OK"
