#!/usr/bin/env bash
# `make test-containers`: builds every image with podman + runc, starts the compose stack
# (host network, ports of its own so it never meets `make up`), and runs the quick-start
# check against the containers: curl /rates, a person's SSO psql through the proxy, the audit
# chain verified in the proxy's volume and again from the shipper's copy in the (emulated) S3
# bucket after the proxy stopped, so nothing was lost on the way.
#
# The service containers run as Fargate runs them (docs/operations.md, "make
# test-containers"): scripts/deploy/fargate_tasks.py renders the ECS task definitions from
# the Terraform (a mock apply of environments/$FARGATE_ENV, default production), and
# compose_run.py runs each task container with its user, a read-only root, its volumes made
# as Fargate makes bind mounts (the image's VOLUME content, or an empty root:root 0755
# directory) and its container health check, which must pass. Negative checks run rates-api
# and the proxy with one mount made as if the image lacked that VOLUME: each must fail.
#
# compose.yaml is resolved by docker-compose v1 (Debian) and started by compose_run.py with
# podman (Debian's podman-compose cannot run host-network services).
# No image registry is reachable here, so the base images are made locally:
#   docker.io/library/debian:bookworm-slim   debootstrap --variant=minbase bookworm
#   localhost/dbgw-node-base                 that + this machine's Node.js (NODE_IMAGE)
#   localhost/dbgw-postgres-base             that + Debian's PostgreSQL 15 (POSTGRES_IMAGE;
#                                            the official 13.5 image cannot be had here)
# and the Rust binaries are the host's build (PREBUILT=1; same glibc as bookworm),
# so the images cost no second compilation. With a registry (Docker as users have it), the
# Dockerfiles' defaults build from the official rust, node and postgres:13.5 images instead.
set -euo pipefail
cd "$(dirname "$0")/../.."
START=$(date +%s)
fail() { echo "test-containers: FAIL: $*" >&2; exit 1; }
step() { echo "== $* ($(( $(date +%s) - START ))s)"; }

DEV=.dev/containers
mkdir -p "$DEV"
export CONTAINERS_CONF=$PWD/$DEV/containers.conf
cat >"$CONTAINERS_CONF" <<'CONF'
[containers]
default_ulimits = []
[engine]
cgroup_manager = "cgroupfs"
runtime = "runc"
CONF
PODMAN=(podman --runtime runc)
PROJECT=dbgwct
# Ports of this stack (the local stack's plus 10000).
export STACK_PG_PORT=15433 STACK_PROXY_PORT=16432 STACK_PROXY_ADMIN_PORT=19187 STACK_RATES_PORT=13000 \
  STACK_APPROVALS_PORT=18080 STACK_IDP_PORT=19000 STACK_MOTO_PORT=15000 STACK_TAG=ct

need=()
for tool in podman runc debootstrap docker-compose; do command -v "$tool" >/dev/null || need+=("$tool"); done
if [ ${#need[@]} -gt 0 ]; then
  echo "apt-get install ${need[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" fuse-overlayfs uidmap >/dev/null
fi

export PODMAN_CMD="${PODMAN[*]}"
compose() { python3 scripts/deploy/compose_run.py "$1" "$PROJECT" "${@:2}"; }
logs() { "${PODMAN[@]}" logs "${PROJECT}_$1_1" 2>&1 | tail -n 30; }
cleanup() {
  if [ "${KEEP:-0}" != 1 ]; then
    compose down >/dev/null 2>&1 || true
  fi
}
trap cleanup EXIT
cleanup

# The task definitions, rendered by Terraform while the images build (~15 s).
FARGATE_ENV=${FARGATE_ENV:-production}
python3 scripts/deploy/fargate_tasks.py "$DEV/fargate-tasks.json" "$FARGATE_ENV" >"$DEV/fargate-tasks.log" 2>&1 &
TASKS_PID=$!

step "base images"
if ! "${PODMAN[@]}" image exists docker.io/library/debian:bookworm-slim; then
  rm -rf "$DEV/rootfs"
  debootstrap --variant=minbase bookworm "$DEV/rootfs" http://deb.debian.org/debian >"$DEV/debootstrap.log" 2>&1 ||
    { tail -n 20 "$DEV/debootstrap.log"; fail "debootstrap"; }
  tar -C "$DEV/rootfs" -c . | "${PODMAN[@]}" import - docker.io/library/debian:bookworm-slim >/dev/null
  rm -rf "$DEV/rootfs"
fi
# RUN steps see this machine's CA bundle (package registries are reached through a TLS
# proxy here) through read-only mounts that are not part of any image; npm and pip are told
# to use it the same way.
printf 'cafile=/run/host-ca.crt\n' >"$DEV/npmrc"
printf '[global]\ncert = /run/host-ca.crt\n' >"$DEV/pip.conf"
BUILD=("${PODMAN[@]}" build -q --format docker --pull=never --network=host
  -v /etc/ssl/certs/ca-certificates.crt:/run/host-ca.crt:ro
  -v "$PWD/$DEV/npmrc:/usr/local/etc/npmrc:ro" -v "$PWD/$DEV/pip.conf:/etc/pip.conf:ro")
build() { # tag, dockerfile, build args...
  local tag=$1 file=$2
  shift 2
  "${BUILD[@]}" -f "$file" -t "$tag" "$@" . >"$DEV/build.log" 2>&1 || { tail -n 30 "$DEV/build.log"; fail "building $tag from $file"; }
}
if ! "${PODMAN[@]}" image exists localhost/dbgw-node-base; then
  rm -rf "$DEV/node" && mkdir -p "$DEV/node/bin" "$DEV/node/lib"
  cp "$(readlink -f "$(command -v node)")" "$DEV/node/bin/node"
  cp -a /usr/lib/node_modules "$DEV/node/lib/"
  printf 'FROM docker.io/library/debian:bookworm-slim\nCOPY bin/node /usr/local/bin/node\nCOPY lib/node_modules /usr/local/lib/node_modules\nRUN ln -s ../lib/node_modules/npm/bin/npm-cli.js /usr/local/bin/npm\n' >"$DEV/node/Dockerfile"
  "${BUILD[@]}" -t localhost/dbgw-node-base "$DEV/node" >/dev/null || fail "node base image"
  rm -rf "$DEV/node"
fi
if ! "${PODMAN[@]}" image exists localhost/dbgw-postgres-base; then
  printf 'FROM docker.io/library/debian:bookworm-slim\nRUN apt-get update && apt-get install -y --no-install-recommends postgresql-15 && rm -rf /var/lib/apt/lists/*\n' |
    "${BUILD[@]}" -t localhost/dbgw-postgres-base -f - "$DEV" >/dev/null ||
    fail "postgres base image"
fi
echo "NOTE: PostgreSQL here is Debian's 15 (localhost/dbgw-postgres-base); the official 13.5 image the task names needs a registry, and is compose.yaml's default elsewhere."

# The host's build, release by default; CI passes STACK_PROFILE=debug to reuse what
# `make test` has just built instead of compiling everything a second time.
PROFILE=${STACK_PROFILE:-release}
step "host $PROFILE build (reused by the images)"
# The same package set as scripts/dev.sh's (rotation included): cargo picks dependency
# features per set of packages, so another set would compile the AWS SDK a third time.
if [ "$PROFILE" = release ]; then
  cargo build --release --locked -q -p dbgw-db -p proxy -p rates-api -p dbgw -p approvals -p rotation
else
  cargo build --locked -q -p dbgw-db -p proxy -p rates-api -p dbgw -p approvals -p rotation
fi
BIN=target/$PROFILE

step "images"
# The build stages are left as dangling images: the ones this run makes are removed after it.
dangling() { "${PODMAN[@]}" images -q --no-trunc --filter dangling=true | sort; }
dangling >"$DEV/dangling.before"
rust_args=(--build-arg PREBUILT=1 --build-arg PROFILE="$PROFILE" --build-arg RUST_IMAGE=docker.io/library/debian:bookworm-slim)
build "dbgw/proxy:$STACK_TAG" proxy/Dockerfile "${rust_args[@]}"
build "dbgw/rates-api:$STACK_TAG" rates-api/Dockerfile "${rust_args[@]}"
build "dbgw/approvals:$STACK_TAG" approvals/Dockerfile "${rust_args[@]}"
build "dbgw/dbgw-db:$STACK_TAG" db/Dockerfile "${rust_args[@]}"
build "dbgw/postgres:$STACK_TAG" deploy/postgres/Dockerfile "${rust_args[@]}" --build-arg POSTGRES_IMAGE=localhost/dbgw-postgres-base
build "dbgw/idp:$STACK_TAG" idp/Dockerfile --build-arg NODE_IMAGE=localhost/dbgw-node-base
build "dbgw/moto:$STACK_TAG" deploy/moto/Dockerfile
build "dbgw/audit-shipper:$STACK_TAG" deploy/audit-shipper/Dockerfile
"${PODMAN[@]}" images --format '{{.Repository}}:{{.Tag}} {{.Size}}' | grep ":$STACK_TAG " | sed 's/^/  /'

comm -13 "$DEV/dangling.before" <(dangling) | xargs -r "${PODMAN[@]}" rmi >/dev/null 2>&1 || true

# Images are non-root and carry no secret: check what they say about themselves.
for img in proxy rates-api approvals dbgw-db postgres idp moto audit-shipper; do
  user=$("${PODMAN[@]}" image inspect --format '{{.Config.User}}' "dbgw/$img:$STACK_TAG")
  case "$user" in ""|root|0|0:*) fail "image $img runs as root" ;; esac
done

# No key, certificate, secret store, audit file or local state inside any image (the build
# mounts leave empty mount points, hence -size +0).
for img in proxy rates-api approvals dbgw-db postgres idp audit-shipper; do
  found=$("${PODMAN[@]}" run --rm --network none --entrypoint /bin/sh "dbgw/$img:$STACK_TAG" -c \
    'find / -xdev -type f -size +0 \( -name "*.key" -o -name "*.pem" -o -name "*.crt" -o -path "*/secrets/*" -o -path "*/.dev/*" -o -name "*.jsonl" \) \
       -not -path "/etc/ssl/*" -not -path "/etc/postgresql-common/*" -not -path "/usr/share/*" -not -path "/usr/lib/*" -not -path "/usr/local/lib/*" -not -path "/opt/*" 2>/dev/null; true' 2>>"$DEV/podman.log")
  [ -z "$found" ] || fail "image $img carries key or secret material: $found"
done
# The entrypoint hands PEM values over as files and removes them from the environment.
out=$("${PODMAN[@]}" run --rm --network none -e TLS_CERT_PEM=test-cert -e TLS_KEY_PEM=test-key \
  --entrypoint /usr/local/bin/dbgw-entrypoint "dbgw/proxy:$STACK_TAG" \
  sh -c 'env | grep -c _PEM; cat /run/dbgw/tls.crt /run/dbgw/tls.key; stat -c %a /run/dbgw/tls.key' 2>>"$DEV/podman.log" || true)
[ "$out" = "$(printf '0\ntest-cert\ntest-key\n600')" ] || fail "the entrypoint left PEM values in the environment or wrote them wrongly: $out"
echo "images: non-root, no key or secret inside; the entrypoint moves PEM values from the environment to mode-600 files"

step "task definitions of environments/$FARGATE_ENV (terraform test, mock apply)"
wait "$TASKS_PID" || { cat "$DEV/fargate-tasks.log"; fail "rendering the task definitions from the Terraform"; }
cat "$DEV/fargate-tasks.log"
export FARGATE_TASKS=$PWD/$DEV/fargate-tasks.json
# What the tasks get from AWS, handed over from the stack's state volume, as PEM values the
# images' entrypoint writes to /run/dbgw: the CA of the database rates-api reaches (there, the
# private CA's certificate in CA_PEM), and the proxy's certificate. The proxy-cert container
# does export one from moto's ACM into the same volume first, but moto signs it with a key
# no client can verify, so the proxy's entrypoint writes the stack's own over it.
export FARGATE_FILE_ENV='{"proxy": {"TLS_CERT_PEM": "state:proxy/proxy.crt", "TLS_KEY_PEM": "state:proxy/proxy.key"},
  "rates-api": {"CA_PEM": "state:pg/ca.crt"}}'

step "compose up (service containers with their Fargate settings)"
compose up moto >"$DEV/compose-up.log" 2>&1 || { cat "$DEV/compose-up.log"; fail "compose up moto"; }
wait_http() { # name, url
  for _ in $(seq 1 150); do
    curl -fsS -o /dev/null "$2" 2>/dev/null && return 0
    sleep 0.4
  done
  logs "$1"
  fail "$1 did not become ready at $2"
}
wait_http moto "http://127.0.0.1:$STACK_MOTO_PORT/moto-api/"
# The audit bucket as Terraform makes it: Object Lock, compliance mode; and the proxy's
# private certificate in ACM (issued by an ACM Private CA), which the proxy task's proxy-cert
# container exports at start (deploy/proxy-cert/fetch.sh).
cert_arn=$(python3 - <<PY
import boto3
kw = dict(endpoint_url="http://127.0.0.1:$STACK_MOTO_PORT", region_name="eu-west-1",
          aws_access_key_id="moto", aws_secret_access_key="moto")
ca = boto3.client("acm-pca", **kw).create_certificate_authority(
    CertificateAuthorityConfiguration={"KeyAlgorithm": "RSA_2048", "SigningAlgorithm": "SHA256WITHRSA",
                                       "Subject": {"CommonName": "dbgw test-containers"}},
    CertificateAuthorityType="ROOT")["CertificateAuthorityArn"]
print(boto3.client("acm", **kw).request_certificate(DomainName="proxy.dbgw.internal",
                                                     CertificateAuthorityArn=ca)["CertificateArn"])
s3 = boto3.client("s3", endpoint_url="http://127.0.0.1:$STACK_MOTO_PORT", region_name="eu-west-1",
                  aws_access_key_id="moto", aws_secret_access_key="moto")
s3.create_bucket(Bucket="dbgw-audit", ObjectLockEnabledForBucket=True,
                 CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
s3.put_object_lock_configuration(Bucket="dbgw-audit", ObjectLockConfiguration={
    "ObjectLockEnabled": "Enabled", "Rule": {"DefaultRetention": {"Mode": "COMPLIANCE", "Days": 1}}})
PY
) || fail "creating the audit bucket and the proxy's certificate in moto"
# The proxy-cert container (defined only in the task definition) talks to moto's ACM.
# The db-admin task's dbgw-db reads the file secret store (the stand-in of Secrets Manager).
# The metrics-agent container reads the proxy's metrics on the local stack's admin port.
FARGATE_LOCAL_ENV=$(python3 -c 'import json, sys; print(json.dumps({"proxy-cert": {
  "ACM_CERTIFICATE_ARN": sys.argv[1], "ACM_ENDPOINT_URL": sys.argv[2],
  "AWS_ACCESS_KEY_ID": "moto", "AWS_SECRET_ACCESS_KEY": "moto", "AWS_DEFAULT_REGION": "eu-west-1"},
  "dbgw-db": {"DBGW_SECRETS_BACKEND": "file", "DBGW_SECRETS_DIR": "/var/lib/dbgw/secrets"},
  "metrics-agent": {"METRICS_URL": sys.argv[3], "METRICS_INTERVAL_SECS": "2"}}))' \
  "$cert_arn" "http://127.0.0.1:$STACK_MOTO_PORT" "http://127.0.0.1:$STACK_PROXY_ADMIN_PORT/metrics")
export FARGATE_LOCAL_ENV
compose up >>"$DEV/compose-up.log" 2>&1 || { cat "$DEV/compose-up.log"; fail "compose up: $(grep -m1 -E "did not become healthy|exited [0-9]+" "$DEV/compose-up.log" || echo "see above")"; }
sed -n '/^Fargate settings/,$p' "$DEV/compose-up.log"
wait_http idp "http://127.0.0.1:$STACK_IDP_PORT/healthz"
wait_http proxy "http://127.0.0.1:$STACK_PROXY_ADMIN_PORT/health/ready"
wait_http rates-api "http://127.0.0.1:$STACK_RATES_PORT/health/ready"
STATE=$("${PODMAN[@]}" volume inspect --format '{{.Mountpoint}}' "${PROJECT}_state")
vol() { python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$DEV/fargate/volumes.json" "$1"; }
AUDIT=$(vol proxy/audit) SHIPPER=$(vol proxy/shipper-state) PROXY_RUN=$(vol proxy/run) RATES_RUN=$(vol rates-api/run)

step "what the containers wrote in their task volumes (user 10001, read-only root)"
owned() { # path: exists, owned by 10001
  [ -e "$1" ] && [ "$(stat -c %u "$1")" = 10001 ] || fail "$1: missing, or not written by uid 10001 ($(ls -la "$(dirname "$1")" 2>&1))"
}
owned "$PROXY_RUN/tls.crt"
owned "$PROXY_RUN/tls.key"
[ "$(stat -c %a "$PROXY_RUN/tls.key")" = 600 ] || fail "the proxy's key is not mode 600 in its run volume"
owned "$RATES_RUN/ca.pem"
for _ in $(seq 1 50); do [ -e "$SHIPPER/heartbeat" ] && break; sleep 0.2; done
owned "$SHIPPER/heartbeat"
code=$("${PODMAN[@]}" inspect --format '{{.State.ExitCode}}' "${PROJECT}_proxy-cert_1")
[ "$code" = 0 ] || { logs proxy-cert; fail "proxy-cert exited $code"; }
"${PODMAN[@]}" logs "${PROJECT}_proxy-cert_1" 2>&1 | grep -q "wrote the certificate of $cert_arn" ||
  { logs proxy-cert; fail "proxy-cert did not write the certificate it exported from ACM"; }
echo "proxy-cert: exported the certificate from (moto's) ACM into the run volume and exited 0; the proxy started after it"
echo "proxy: tls.crt, tls.key (600) in /run/dbgw; rates-api: ca.pem in /run/dbgw; shipper: its state in /var/lib/audit-shipper"

step "quick start against the containers"
rates=$(curl -fsS "http://127.0.0.1:$STACK_RATES_PORT/rates?date_from=2021-01-01&date_to=2021-01-31&orig_code=CNGGZ&dest_code=EETLL")
echo "$rates" | python3 -c '
import json, sys
rates = json.load(sys.stdin)["rates"]
assert len(rates) == 31, len(rates)
day5 = next(r for r in rates if r["day"] == "2021-01-05")
assert day5["count"] == 3 and day5["price"] == 1154.0, day5
' || fail "rates-api did not answer as the spec says: $rates"
echo "rates-api: /rates answers as the spec says"

"${PODMAN[@]}" exec "${PROJECT}_proxy_1" proxy grant add --email alice@example.com --role rates_reader \
  --days 1 --by test-containers >/dev/null || fail "proxy grant add in the container"
export DBGW_CACHE_DIR=$DEV/dbgw-cache BROWSER="node idp/dev-browser.js" DEV_BROWSER_EMAIL=alice@example.com \
  DBGW_ISSUER=http://127.0.0.1:$STACK_IDP_PORT DBGW_PROXY_PORT=$STACK_PROXY_PORT DBGW_CA_FILE=$STATE/pg/ca.crt
rm -rf "$DBGW_CACHE_DIR"
# alice logs in as her own role (session_user) and runs as her grant's role (current_user).
who=$("$BIN"/dbgw psql -- -X -A -t -c "SELECT session_user" -c "SELECT current_user" -c "SELECT count(*) FROM prices" 2>"$DEV/psql.err") ||
  { cat "$DEV/psql.err"; fail "SSO psql through the proxy container"; }
[[ "$(echo "$who" | head -1)" == p_alice_example_com_* ]] || fail "psql did not run as alice's own role: $who"
[ "$(echo "$who" | sed -n 2p)" = rates_reader ] || fail "psql did not run as the grant's role: $who"
[ "$(echo "$who" | tail -1)" = 56689 ] || fail "unexpected count: $who"
echo "psql through the proxy container as alice: $(echo "$who" | head -1), 56689 prices"

# The metrics-agent container (task definition only; user 10001, read-only root) publishes the
# proxy's metrics as CloudWatch embedded metric format: alice's connection must be counted.
metrics_ok() {
  "${PODMAN[@]}" logs "${PROJECT}_metrics-agent_1" 2>/dev/null | python3 -c '
import json, sys
names, ns = sys.argv[1].split(","), sys.argv[2]
lines = [json.loads(l) for l in sys.stdin if l.startswith("{\"_aws\"")]
assert lines, "no EMF line"
for l in lines:
    d = l["_aws"]["CloudWatchMetrics"][0]
    assert d["Namespace"] == ns and d["Dimensions"] == [["job"]] and l["job"] == "proxy", l
    assert {m["Name"] for m in d["Metrics"]} <= set(names), l
assert sum(l.get("dbgw_proxy_connections_total", 0) for l in lines) >= 1, "no connection counted"
print(f"metrics-agent: {len(lines)} EMF lines in {ns}, connections counted")
' "$(python3 -c 'import json, sys; t = json.load(open(sys.argv[1]))["tasks"]["proxy"]["containers"]; c = next(c for c in t if c["name"] == "metrics-agent"); print(c["environment"]["METRICS_NAMES"])' "$FARGATE_TASKS")" "dbgw/$FARGATE_ENV"
}
for _ in $(seq 1 20); do metrics_ok >/dev/null 2>&1 && break; sleep 0.5; done
metrics_ok || { logs metrics-agent; fail "the metrics-agent container published no EMF line counting alice's connection"; }

sleep 0.3
# -a: the live file ends in the zeros the writer reserves ahead in fsync durability.
grep -ah '"type":"statement"' "$AUDIT"/audit-*.jsonl | grep '"email":"alice@example.com"' | grep -q 'SELECT session_user' ||
  fail "the audit log does not name alice on her statement"
owned "$(compgen -G "$AUDIT/audit-*.jsonl" | head -1)"
echo "proxy: its audit in the task's audit volume (/var/lib/dbgw-audit), written by uid 10001"

if [ -f "$AUDIT/head.json" ] && ! grep -q head.json <<<"$(ls "$SHIPPER")"; then
  fail "head.json is in the volume but was not shipped"
fi

step "the task definitions' container health checks, in the containers"
compose health || fail "a container health check of the task definitions fails in its container"
compose files || fail "a task definition names a file its image does not have"

step "the db-admin task: dbgw-db setup as its task definition runs it (docs/operations.md, Deploy step 4)"
# Its user, read-only root and no volume, its command on the running (already set-up)
# database: setup must work there and be safe to run again. The options that name AWS (the RDS
# address, the RDS bundle, secret ARNs) get the local stack's values; compose_run.py fails if
# the task's command lacks one of them, or adopts another number of logins.
FARGATE_LOCAL_ARGS=$(python3 -c 'import json, sys; print(json.dumps({"dbgw-db": {
  "--host": "127.0.0.1", "--port": sys.argv[1], "--ca": "/var/lib/dbgw/pg/ca.crt",
  "--admin-secret": "dbgw/postgres-admin", "--adopt": ["dbgw/approvals-db", "dbgw/proxy-control", "dbgw/rates-api"]}}))' \
  "$STACK_PG_PORT")
FARGATE_LOCAL_ARGS=$FARGATE_LOCAL_ARGS compose task db-admin 120 >"$DEV/db-admin.log" 2>&1 ||
  { tail -n 20 "$DEV/db-admin.log"; fail "the db-admin task (dbgw-db setup) failed with its task definition's settings"; }
grep -q "database rates is set up" "$DEV/db-admin.log" && [ "$(grep -c "now logs in with" "$DEV/db-admin.log")" = 3 ] ||
  { cat "$DEV/db-admin.log"; fail "the db-admin task did not set up the database and adopt its 3 logins"; }
python3 - "$FARGATE_TASKS" <<'PY'
import json, sys
c = json.load(open(sys.argv[1]))["tasks"]["db-admin"]["containers"][0]
root = "read-only root" if c["readonly"] else "writable root"
print(f"db-admin: {c['name']} as user {c['user']}, {root}, {len(c['mounts'])} volume(s): "
      "set up the (already set-up) database and adopted its 3 logins")
PY

step "stop the proxy (drains, syncs its log), then the shipper (ships the rest)"
# (podman's complaints about systemd health-check timers go to the log, not the console)
{
  "${PODMAN[@]}" stop -t 60 "${PROJECT}_rates-api_1" >/dev/null
  "${PODMAN[@]}" stop -t 60 "${PROJECT}_proxy_1" >/dev/null
  "${PODMAN[@]}" stop -t 90 "${PROJECT}_audit-shipper_1" >/dev/null
} 2>>"$DEV/podman.log"
code=$("${PODMAN[@]}" inspect --format '{{.State.ExitCode}}' "${PROJECT}_audit-shipper_1")
[ "$code" = 0 ] || { logs audit-shipper; fail "the shipper exited $code"; }
local_report=$("$BIN"/proxy audit verify "$AUDIT") || fail "the audit chain in the volume does not verify"
echo "volume: $local_report"

rm -rf "$DEV/shipped" && mkdir -p "$DEV/shipped"
python3 - "$DEV/shipped" <<PY || fail "reading the shipped audit from the bucket"
import sys, boto3
s3 = boto3.client("s3", endpoint_url="http://127.0.0.1:$STACK_MOTO_PORT", region_name="eu-west-1",
                  aws_access_key_id="moto", aws_secret_access_key="moto")
lock = s3.get_object_lock_configuration(Bucket="dbgw-audit")["ObjectLockConfiguration"]
assert lock["Rule"]["DefaultRetention"]["Mode"] == "COMPLIANCE", lock
n = 0
for page in s3.get_paginator("list_objects_v2").paginate(Bucket="dbgw-audit", Prefix="local/proxy-1/"):
    for o in page.get("Contents", []):
        name = o["Key"].rsplit("/", 1)[1]
        if name.startswith("audit-"):
            s3.download_file("dbgw-audit", o["Key"], sys.argv[1] + "/" + name); n += 1
assert n > 0, "no audit file in the bucket"
print(f"{n} audit file(s) in s3://dbgw-audit/local/proxy-1/")
PY
shipped_report=$("$BIN"/proxy audit verify "$DEV/shipped") || fail "the shipped audit chain does not verify"
echo "bucket: $shipped_report"
[ "${shipped_report##*head }" = "${local_report##*head }" ] || fail "the bucket's chain head differs from the proxy's: records lost in shipping"


step "negative checks: a task volume whose path the image does not declare as VOLUME"
# Fargate gives such a mount as an empty root:root 0755 directory: uid 10001 on a read-only root
# cannot write there, and the container must exit non-zero (124: it kept running). The same
# code path as the run above, with one VOLUME declaration taken away; the database is still up.
probe() { # service, path, what it cannot write
  local code
  set +e
  FARGATE_PRETEND_NO_VOLUME="$1:$2" compose probe "$1" 30 >"$DEV/probe-$1.log" 2>&1
  code=$?
  set -e
  [ "$code" != 0 ] && [ "$code" != 124 ] ||
    { tail -n 20 "$DEV/probe-$1.log"; fail "$1 ran with a root-owned $2 (exit $code): the emulation does not bite"; }
  grep -qiE "permission denied|os error 13" "$DEV/probe-$1.log" ||
    { tail -n 20 "$DEV/probe-$1.log"; fail "$1 failed (exit $code), but not for the root-owned $2"; }
  echo "$1 without VOLUME $2: exit $code, cannot write $3 ($(grep -m1 -oiE "[^\"]{0,80}permission denied" "$DEV/probe-$1.log"))"
}
probe rates-api /run/dbgw "its CA file"
probe proxy /var/lib/dbgw-audit "its audit log"

trap - EXIT
cleanup
echo "test-containers: OK in $(( $(date +%s) - START ))s (8 images built, service containers run with the task definitions' user, read-only root, volumes and health checks; /rates, SSO psql, audit verified in the volume and in the bucket, same head; the db-admin task's setup; a missing VOLUME fails)"
