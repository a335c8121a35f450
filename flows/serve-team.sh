#!/usr/bin/env bash
# The team's Prefect server with API authentication: every request must carry the auth string.
#   PREFECT_SERVER_API_AUTH_STRING  required, "user:password" (no default; from the environment only)
#   PREFECT_HOST / PREFECT_PORT     default 127.0.0.1 / 4200
# Workers and CLI clients: PREFECT_API_URL=http://host:port/api PREFECT_API_AUTH_STRING=user:password
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
if [[ "${PREFECT_SERVER_API_AUTH_STRING:-}" != *:* ]]; then
  echo "flows/serve-team.sh: set PREFECT_SERVER_API_AUTH_STRING=user:password (no default)" >&2
  exit 2
fi
export PREFECT_SERVER_ANALYTICS_ENABLED=false DO_NOT_TRACK=1
# the run-key locks' leases on disk (PREFECT_HOME/concurrency_leases), not in the server's memory:
# after a restart the in-memory store has forgotten every lease, so no lease ever expires and a
# slot taken before the restart is never freed — every later holder of that key waits forever
export PREFECT_SERVER_CONCURRENCY_LEASE_STORAGE="${PREFECT_SERVER_CONCURRENCY_LEASE_STORAGE:-prefect.server.concurrency.lease_storage.filesystem}"
exec "${PREFECT_BIN:-$root/.venv/bin/prefect}" server start \
  --host "${PREFECT_HOST:-127.0.0.1}" --port "${PREFECT_PORT:-4200}" "$@"
