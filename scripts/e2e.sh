#!/usr/bin/env bash
# The quick start, end to end, as a newcomer would run it: `make up`; the rates API answers
# through the proxy; a person asks for access in the approvals app and an approver approves
# (through its API, with real tokens); the person signs in (a stand-in browser plays the
# person), runs psql through the proxy as their own role; the audit log names them, the
# request and the approver, and its chain verifies; secrets rotate (rates-api's and the
# person's) and the stack follows, across `make down` and `make up` too; `make down` leaves
# no process behind.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=target/debug
fail() { echo "e2e: FAIL: $*" >&2; exit 1; }
cleanup() { make -s down >/dev/null 2>&1 || true; }
trap cleanup EXIT

make -s up

rates=$(curl -fsS "http://127.0.0.1:3000/rates?date_from=2021-01-01&date_to=2021-01-31&orig_code=CNGGZ&dest_code=EETLL")
echo "$rates" | python3 -c '
import json, sys
rates = json.load(sys.stdin)["rates"]
assert len(rates) == 31, len(rates)
day5 = next(r for r in rates if r["day"] == "2021-01-05")
assert day5["count"] == 3 and day5["price"] == 1154.0, day5
' || fail "rates-api did not answer as the spec says: $rates"

curl -fsS http://127.0.0.1:8080/ | grep -q "Sign in" || fail "the approvals app does not serve its page"
json() { python3 -c "import json, sys; print(json.load(sys.stdin)$1)"; }
# The API takes access tokens issued to the approvals app (not the CLI's ID token).
alice=$(node idp/token.js --client dbgw-approvals --access-token --email alice@example.com)
request=$(curl -fsS -H "Authorization: Bearer $alice" -H 'content-type: application/json' \
  -d '{"database":"rates","level":"read-only","justification":"e2e","duration_secs":3600}' \
  http://127.0.0.1:8080/api/v1/requests | json '["id"]') || fail "requesting access failed"
dana=$(node idp/token.js --client dbgw-approvals --access-token --email dana@example.com)
status=$(curl -fsS -H "Authorization: Bearer $dana" -H 'content-type: application/json' \
  -d '{"decision":"approve","comment":"e2e"}' \
  "http://127.0.0.1:8080/api/v1/requests/$request/decide" | json '["status"]') || fail "approving failed"
[ "$status" = active ] || fail "request $request is $status after the approval, not active"

export DBGW_CACHE_DIR=.dev/e2e-dbgw BROWSER="node idp/dev-browser.js" DEV_BROWSER_EMAIL=alice@example.com
rm -rf "$DBGW_CACHE_DIR"
# psql logs in as her grant's own role (session_user: one login role per grant, named
# after her email and the request) and runs as the grant's group role (current_user): the
# session holds exactly what the grant gives.
who=$($BIN/dbgw psql -- -X -A -t -c "SELECT session_user" -c "SELECT current_user" -c "SELECT count(*) FROM prices" 2>/dev/null) \
  || fail "dbgw psql failed"
[ "$(echo "$who" | head -1)" = "$(python3 -c '
import hashlib, sys
e, key = "alice@example.com", "r" + sys.argv[1]
print("p_" + "".join(c if c.isalnum() else "_" for c in e) + "_" + key + "_"
      + hashlib.sha256((e + "\n" + key).encode()).hexdigest()[:16])' "$request")" ] \
  || fail "psql did not run as the role of alice's grant (request $request): $who"
[ "$(echo "$who" | sed -n 2p)" = rates_reader ] || fail "psql did not run as the read-only grant's role: $who"
[ "$(echo "$who" | tail -1)" = 56689 ] || fail "unexpected count: $who"

# The buffered audit writer flushes within its interval: look for a few seconds.
eventually() { for _ in $(seq 50); do "$@" && return 0; sleep 0.1; done; return 1; }
alice_statement() {
  grep -h '"type":"statement"' .dev/audit/*.jsonl | grep '"email":"alice@example.com"' \
    | grep "\"request_id\":$request,\"approved_by\":\[\"dana@example.com\"\]" | grep -q "$1"
}
eventually alice_statement 'SELECT session_user' \
  || fail "the audit log does not name alice, the request and its approver on her statement"
$BIN/proxy audit verify .dev/audit >/dev/null || fail "the audit chain does not verify"

# The README's commands for the local stack, as written, each in a fresh shell: only PATH
# and HOME (no AWS variables: the local configuration must name its own Secrets Manager).
# The writer publishes its head (head.json) every audit.head_interval_secs (10 s).
for _ in $(seq 150); do [ -f .dev/audit/head.json ] && break; sleep 0.1; done
sleep 0.3  # the server's log collector writes pgaudit's lines for the crosscheck
# The shipper copies .dev/audit to moto's S3 every 5 s; the README reads alice's session there.
s3() { AWS_ENDPOINT_URL_S3=http://127.0.0.1:5000 "$BIN/proxy" audit "$@"; }
shipped() { s3 sessions s3://dbgw-audit/audit --email alice@example.com 2>/dev/null | grep -q "request $request "; }
for _ in $(seq 60); do shipped && break; sleep 0.5; done
shipped || fail "alice's session did not reach the audit bucket in moto's S3 within 30 s (the shipper's log: .dev/logs/shipper.log)"
while IFS= read -r command; do
  env -i PATH="$PATH" HOME="$HOME" bash -euo pipefail -c "$command" >.dev/logs/e2e-readme.log 2>&1 \
    || { tail -5 .dev/logs/e2e-readme.log >&2; fail "the README command failed as written: $command"; }
  if grep -qi "imds\|metadata" .dev/logs/e2e-readme.log; then
    fail "a README command reached for the instance metadata service: $command"
  fi
done < <(python3 scripts/readme_commands.py README.md "### Query the rates API" "### Read and verify the audit log")
# What those commands showed: the shipped copy gives alice's session as the local files do,
# and the evidence bundle (over the stack after the quick start) is clean and names her access.
session=$($BIN/proxy audit sessions .dev/audit --email alice@example.com | grep "request $request " | head -1 | awk '{print $4}')
s3 session "$session" s3://dbgw-audit/audit >.dev/logs/e2e-s3-session.txt \
  || fail "proxy audit session $session did not read from S3: $(tail -3 .dev/logs/e2e-s3-session.txt)"
grep -q 'SELECT session_user' .dev/logs/e2e-s3-session.txt && grep -q "request $request" .dev/logs/e2e-s3-session.txt \
  || fail "the transcript read from S3 lacks alice's statement or her request: $(head -5 .dev/logs/e2e-s3-session.txt)"
grep -q 'Overall: <span class=ok>OK</span>' .dev/evidence/index.html \
  || fail "the evidence bundle is not clean: $(grep -o 'Overall: [^.]*' .dev/evidence/index.html)"
grep -q "<tr><th>Request</th><td>$request</td></tr>" .dev/evidence/index.html \
  || fail "the evidence bundle does not show alice's access (request $request)"

# Rotation in the local stack (moto as Secrets Manager): rates-api's secret (alternating
# users) and alice's (single user; the approvals app turned rotation on) rotate now, as the
# schedule would. Alice's next psql works at once; then make down saves moto's secrets and
# make up loads them, and rates-api comes back as the other user.
role=$(echo "$who" | head -1)
: >.dev/logs/e2e-rotate.log
rotate() { make -s rotate "SECRET=$1" >>.dev/logs/e2e-rotate.log 2>&1 || { tail -5 .dev/logs/e2e-rotate.log >&2; fail "rotating $1 failed"; }; }
rotate dbgw/rates-api
rotate "dbgw/person/$role"
# The proxy rereads a secret after a refused login only if its copy is older than
# secrets.min_refresh_ms (1 s), so that failing logins cannot flood Secrets Manager.
sleep 1
[ "$($BIN/dbgw psql -- -X -A -t -c "SELECT session_user" 2>/dev/null)" = "$role" ] \
  || fail "alice's psql failed after her role's password rotated"
make -s down >/dev/null
make -s up >/dev/null
curl -fsS "http://127.0.0.1:3000/rates?date_from=2021-01-01&date_to=2021-01-02&orig_code=CNGGZ&dest_code=EETLL" \
  | grep -q '"price":' || fail "rates-api does not answer after the rotation and a restart"
clone_login() { grep -h '"type":"auth"' .dev/audit/*.jsonl | grep '"name":"rates_api"' | grep -q '"db_user":"rates_api_clone"'; }
eventually clone_login \
  || fail "rates-api did not log in as rates_api_clone after the rotation"
[ "$($BIN/dbgw psql -- -X -A -t -c "SELECT session_user" 2>/dev/null)" = "$role" ] \
  || fail "alice's psql failed after make down and make up"

# The rest of the stack's secrets rotate too (the proxy's control-plane login and the
# approvals app's); the stack goes on. Then every rotation's test login (the rotation
# function's own, straight to the server by design) is recognised from the function's log,
# and the crosscheck finds no difference and no statement that bypassed the proxy.
rotate dbgw/proxy-control
rotate dbgw/approvals-db
sleep 1
[ "$($BIN/dbgw psql -- -X -A -t -c "SELECT session_user" 2>/dev/null)" = "$role" ] \
  || fail "alice's psql failed after the proxy's control-plane login rotated"
curl -fsS http://127.0.0.1:8080/health/ready >/dev/null \
  || fail "the approvals app is not ready after its login rotated"
sleep 0.3  # the server's log collector writes pgaudit's lines
$BIN/proxy audit crosscheck .dev/audit --pgaudit .dev/pg/pgaudit-log \
  --rotation-log .dev/logs --rotation-source 127.0.0.1/32 >.dev/logs/e2e-crosscheck.txt \
  || { tail -5 .dev/logs/e2e-crosscheck.txt >&2; fail "the crosscheck after rotating every secret found differences"; }
grep -q "[1-9][0-9]* rotation test login(s)" .dev/logs/e2e-crosscheck.txt \
  || fail "the crosscheck recognised no rotation test login: $(tail -1 .dev/logs/e2e-crosscheck.txt)"

pids=$(cat .dev/run/*.pid 2>/dev/null || true)
make -s down
for pid in $pids; do
  kill -0 "$pid" 2>/dev/null && fail "process $pid still runs after make down"
done
pgrep -f "$(pwd)/.dev/pg/data" >/dev/null && fail "postgres still runs after make down"
trap - EXIT
echo "e2e: OK (make up, rates-api through the proxy, access approved in the approvals app, SSO psql as a person, audit verified, rotations followed across make down and make up, make down)"
