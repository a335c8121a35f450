#!/usr/bin/env bash
# Start an MLflow tracking server on the local store (SQLite + artifacts under this folder).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(dirname "$here")"
export MLFLOW_DISABLE_TELEMETRY=true
exec "${root}/.venv/bin/mlflow" server \
  --backend-store-uri "sqlite:///${here}/mlflow.db" \
  --artifacts-destination "${here}/artifacts" \
  --host "${MLFLOW_HOST:-127.0.0.1}" --port "${MLFLOW_PORT:-5000}" "$@"
