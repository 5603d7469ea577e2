#!/usr/bin/env bash
# A team's MLflow tracking server that strangers cannot read or delete from: MLflow's basic-auth app, with its
# users, their permissions and the form-signing key kept in FOLDER.
#
#   MLFLOW_AUTH_ADMIN_PASSWORD=... scripts/team_server.sh FOLDER [mlflow server options]
#
# MLFLOW_AUTH_ADMIN_PASSWORD (and optionally MLFLOW_AUTH_ADMIN_USERNAME, default admin) creates the admin account
# on the first start; later starts keep the existing accounts and need no password (change it through the
# REST API, see README). PYTHON names the interpreter with mlflow[auth] (default: python3 on PATH).
set -euo pipefail
if [ $# -lt 1 ] || [ "${1#-}" != "$1" ]; then
  echo "usage: MLFLOW_AUTH_ADMIN_PASSWORD=... $0 FOLDER [mlflow server options]" >&2
  exit 2
fi
mkdir -p "$1"
folder="$(cd "$1" && pwd)"
shift
if [ ! -e "$folder/basic_auth.db" ] && [ "$(printf %s "${MLFLOW_AUTH_ADMIN_PASSWORD:-}" | wc -m)" -lt 12 ]; then
  echo "error: $folder holds no accounts yet: set MLFLOW_AUTH_ADMIN_PASSWORD to the password of the admin account" \
    "to create, 12 characters or more (MLflow's rule)." >&2
  exit 1
fi
chmod 700 "$folder"
# Every worker signs and checks the UI's forms with this key, so it is made once and kept.
if [ ! -s "$folder/secret_key" ]; then
  (umask 077 && od -An -N32 -tx1 /dev/urandom | tr -d ' \n' > "$folder/secret_key")
fi
# EDIT: every signed-in user can read all experiments and log runs into shared ones (vae_sweep); only an
# experiment's creator and the admin can delete it or its runs. Anonymous requests are refused (401).
# Every request carries the password, and checking it against its scrypt hash costs ~0.13 s of a core: a sweep's jobs
# make hundreds of requests, so a good login is remembered for MLFLOW_AUTH_CACHE_TTL_SECONDS (default 60; 0: never).
# A password changed or an account deleted through the API is forgotten at once by the worker that handled it, by
# other workers within that time.
# Only this user may read it: it holds the admin's first password (MLflow releases before the
# MLFLOW_AUTH_ADMIN_PASSWORD variable read it from here alone, and fall back to a public default without it).
(umask 077 && cat > "$folder/basic_auth.ini" <<INI
[mlflow]
default_permission = EDIT
database_uri = sqlite:///$folder/basic_auth.db
admin_username = ${MLFLOW_AUTH_ADMIN_USERNAME:-admin}
admin_password = ${MLFLOW_AUTH_ADMIN_PASSWORD:-}
authorization_function = mlflow.server.auth:authenticate_request_basic_auth
auth_cache_ttl_seconds = ${MLFLOW_AUTH_CACHE_TTL_SECONDS:-60}
INI
)
export MLFLOW_AUTH_CONFIG_PATH="$folder/basic_auth.ini"
MLFLOW_FLASK_SERVER_SECRET_KEY="$(cat "$folder/secret_key")"
export MLFLOW_FLASK_SERVER_SECRET_KEY
exec "${PYTHON:-python3}" -m mlflow server --app-name basic-auth "$@"
