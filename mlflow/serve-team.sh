#!/usr/bin/env bash
# The team's MLflow tracking server: MLflow's basic-auth app (every request needs a user), artifacts
# proxied by the server (clients need no storage credentials), any SQLAlchemy backend store.
# Secrets come only from the environment; this script refuses to start without them and never
# writes them to disk or to its command line.
#
#   MLFLOW_AUTH_ADMIN_PASSWORD   required: the admin user's password on first start (no default)
#   MLFLOW_AUTH_ADMIN_USERNAME   default admin
#   MLFLOW_BACKEND_STORE_URI     default sqlite:///<state>/mlflow.db (PostgreSQL: postgresql+psycopg://user@host/db,
#                                password via PGPASSWORD or ~/.pgpass, never in the URI); `mlflow db upgrade`
#                                runs on it first
#   MLFLOW_AUTH_DATABASE_URI     the auth app's user store, default sqlite:///<state>/basic_auth.db (may be the
#                                same PostgreSQL server, another database)
#   MLFLOW_ARTIFACTS_DESTINATION default <state>/artifacts (or s3://bucket/prefix)
#   MLFLOW_STATE_DIR             default mlflow/team (auth config and user store, mode 700)
#   MLFLOW_FLASK_SERVER_SECRET_KEY  the auth app's CSRF key; generated once into the state dir if unset
#                                (set the same value on every server behind one load balancer)
#   MLFLOW_HOST / MLFLOW_PORT    default 127.0.0.1 / 5000 (0.0.0.0 only behind a TLS proxy)
# Clients: MLFLOW_TRACKING_URI=http://host:port MLFLOW_TRACKING_USERNAME=… MLFLOW_TRACKING_PASSWORD=…
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(dirname "$here")"
if [[ -z "${MLFLOW_AUTH_ADMIN_PASSWORD:-}" ]]; then
  echo "serve-team.sh: set MLFLOW_AUTH_ADMIN_PASSWORD (the admin password; there is no default)" >&2
  exit 2
fi
state="${MLFLOW_STATE_DIR:-$here/team}"
umask 077
mkdir -p "$state"
cat > "$state/auth.ini" <<INI
[mlflow]
default_permission = READ
database_uri = ${MLFLOW_AUTH_DATABASE_URI:-sqlite:///$state/basic_auth.db}
admin_username = ${MLFLOW_AUTH_ADMIN_USERNAME:-admin}
authorization_function = mlflow.server.auth:authenticate_request_basic_auth
# a verified password is trusted for 60 s: without it every request pays up to three scrypt checks
# (≈ 0.45 s of CPU), which capped the server near 2 calls/s (bench/tracking_load.py); a changed
# password or deleted user reaches the other server workers within the minute
auth_cache_ttl_seconds = 60
INI
if [[ -z "${MLFLOW_FLASK_SERVER_SECRET_KEY:-}" ]]; then  # CSRF key of the auth app: one per deployment
  [[ -s "$state/flask-secret-key" ]] || od -An -tx1 -N32 /dev/urandom | tr -d ' \n' > "$state/flask-secret-key"
  MLFLOW_FLASK_SERVER_SECRET_KEY="$(cat "$state/flask-secret-key")"
fi
export MLFLOW_AUTH_CONFIG_PATH="$state/auth.ini" MLFLOW_DISABLE_TELEMETRY=true MLFLOW_FLASK_SERVER_SECRET_KEY
mlflow="${MLFLOW_BIN:-$root/.venv/bin/mlflow}"
backend="${MLFLOW_BACKEND_STORE_URI:-sqlite:///$state/mlflow.db}"
# the store's schema to this MLflow's (creates the tables on a fresh database; the server refuses an
# out-of-date schema, so an MLflow upgrade needs this step anyway)
"$mlflow" db upgrade "$backend"
exec "$mlflow" server --app-name basic-auth \
  --backend-store-uri "$backend" \
  --serve-artifacts --artifacts-destination "${MLFLOW_ARTIFACTS_DESTINATION:-$state/artifacts}" \
  --host "${MLFLOW_HOST:-127.0.0.1}" --port "${MLFLOW_PORT:-5000}" "$@"
