#!/bin/sh
# The audit shipper, a sidecar of every proxy task. It copies the proxy's audit files
# (audit-<first seq>-<time>.jsonl) and the chain's head checkpoint (head.json) to the
# write-once bucket (S3 Object Lock, compliance mode), without loss:
#  - every SHIP_INTERVAL_SECS, each file that changed since its last upload is uploaded
#    whole again (a new object version: Object Lock keeps every version), so a task lost
#    abruptly loses at most one interval, and the hash chain shows any gap;
#  - on SIGTERM it keeps shipping until the proxy has stopped (its admin port no longer
#    answers; the proxy drains its sessions and syncs its log first), then ships everything
#    once more and exits 0 only if every upload succeeded.
# Objects: s3://$AUDIT_BUCKET/$AUDIT_PREFIX/<task>/<file>; head checkpoints also under
# .../<task>/head/<unix time>.json so each one is kept.
# With SHIP_APPROVALS_HEAD_FILE (a file a scheduler refreshes with `approvals events head`), the
# approvals history's head is shipped beside the audit's the same way:
# s3://$AUDIT_BUCKET/$AUDIT_PREFIX/approvals/head.json and .../approvals/head/<unix time>.json.
set -eu
: "${AUDIT_DIR:?}" "${AUDIT_BUCKET:?}"
AUDIT_PREFIX=${AUDIT_PREFIX:-audit}
SHIP_INTERVAL_SECS=${SHIP_INTERVAL_SECS:-15}
SHIP_PROXY_ADMIN_URL=${SHIP_PROXY_ADMIN_URL:-http://127.0.0.1:9187}
STATE_DIR=${STATE_DIR:-/var/lib/audit-shipper}
STOP_DEADLINE_SECS=${STOP_DEADLINE_SECS:-110}
mkdir -p "$STATE_DIR"

log() { printf '{"level":"%s","msg":"%s"}\n' "$1" "$2" >&2; }

# The task id (ECS metadata) names this proxy's chain; a fixed name elsewhere.
task_id() {
  if [ -n "${ECS_CONTAINER_METADATA_URI_V4:-}" ]; then
    curl -fsS "$ECS_CONTAINER_METADATA_URI_V4/task" | sed -n 's/.*"TaskARN":"[^"]*\/\([^"/]*\)".*/\1/p'
  else
    echo "${TASK_ID:-$(hostname)}"
  fi
}
TASK=$(task_id)
[ -n "$TASK" ] || { log error "no task id"; exit 1; }

put() { # file, key
  set -- "$1" "$2"
  endpoint=""
  [ -z "${S3_ENDPOINT_URL:-}" ] || endpoint="--endpoint-url=$S3_ENDPOINT_URL"
  kms=""
  [ -z "${AUDIT_KMS_KEY_ID:-}" ] || kms="--server-side-encryption=aws:kms --ssekms-key-id=$AUDIT_KMS_KEY_ID"
  # shellcheck disable=SC2086
  aws s3api put-object $endpoint --bucket "$AUDIT_BUCKET" --key "$2" --body "$1" \
    --content-md5 "$(openssl dgst -md5 -binary "$1" | openssl base64)" $kms >/dev/null
}

# Ships each file whose size or time changed since it was last shipped. Returns 1 if any
# upload failed (it is retried next round).
ship() {
  failed=0
  for f in "$AUDIT_DIR"/audit-*.jsonl "$AUDIT_DIR"/head.json; do
    [ -f "$f" ] || continue
    name=$(basename "$f")
    stamp=$(stat -c '%s-%Y' "$f")
    [ "$(cat "$STATE_DIR/$name" 2>/dev/null || true)" = "$stamp" ] && continue
    if [ "$name" = head.json ]; then
      key="$AUDIT_PREFIX/$TASK/head/$(date +%s).json"
    else
      key="$AUDIT_PREFIX/$TASK/$name"
    fi
    if put "$f" "$key"; then
      echo "$stamp" >"$STATE_DIR/$name"
      [ "$name" = head.json ] && put "$f" "$AUDIT_PREFIX/$TASK/head.json" || true
    else
      log error "upload of $name failed; retrying next round"
      failed=1
    fi
  done
  ship_approvals_head || failed=1
  return $failed
}

# The approvals history's head, when this shipper is given one; 1 if its upload failed.
ship_approvals_head() {
  f=${SHIP_APPROVALS_HEAD_FILE:-}
  if [ -z "$f" ] || [ ! -s "$f" ]; then return 0; fi
  stamp=$(stat -c '%s-%Y' "$f")
  [ "$(cat "$STATE_DIR/approvals-head" 2>/dev/null || true)" = "$stamp" ] && return 0
  if put "$f" "$AUDIT_PREFIX/approvals/head/$(date +%s).json" &&
    put "$f" "$AUDIT_PREFIX/approvals/head.json"; then
    echo "$stamp" >"$STATE_DIR/approvals-head"
  else
    log error "upload of the approvals head failed; retrying next round"
    return 1
  fi
}

stopping=0
trap 'stopping=1' TERM INT
log info "shipping $AUDIT_DIR to s3://$AUDIT_BUCKET/$AUDIT_PREFIX/$TASK every ${SHIP_INTERVAL_SECS}s"
while [ $stopping = 0 ]; do
  ship || true
  touch "$STATE_DIR/heartbeat"
  i=0
  while [ $stopping = 0 ] && [ $i -lt "$SHIP_INTERVAL_SECS" ]; do sleep 1; i=$((i + 1)); done
done

log info "stopping: waiting for the proxy to finish"
waited=0
while curl -fsS -o /dev/null "$SHIP_PROXY_ADMIN_URL/health/live" 2>/dev/null && [ $waited -lt "$STOP_DEADLINE_SECS" ]; do
  ship || true
  sleep 2
  waited=$((waited + 2))
done
tries=0
until ship; do
  tries=$((tries + 1))
  [ $tries -lt 5 ] || { log error "final shipping failed"; exit 1; }
  sleep 2
done
log info "all audit files shipped"
